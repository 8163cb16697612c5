"""Continuous batching for speculative decoding: every live session advances together.

One scheduler thread owns the models' slot caches. Each *tick* it

1. admits waiting sessions (up to ``max_batch`` live ones) and prefills their prompts in
   one ragged target forward;
2. drafts for every session at once -- one batched draft forward per drafted position,
   sessions dropping out as their own chunk ends (own draft length, stop token, low
   confidence);
3. verifies every session's chunk in **one** batched target forward, then judges each
   row with that session's own rule, sampling settings and randomness
   (:class:`~voicestream.batch.session.SessionState`), commits, rolls slots back, and
   hands each session its chunk.

Sessions join and leave between ticks without stalling the others. Latency first: a
session that has not yet produced ``warmup_tokens`` (its first audio) gets *priority
ticks* -- ticks over the newcomers only, interleaved with the full ticks -- so a new
caller's first audio does not wait behind the whole batch; everybody else already has
audio buffered.

:class:`BatchedDecoder` has the same ``generate()`` as
:class:`~voicestream.spec.decoder.SpeculativeDecoder`, so a voice or the server can swap
one for the other.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..config import SpecConfig
from ..spec.compat import check_compatible, output_vocab_size
from ..spec.constraint import TokenConstraint
from ..spec.decoder import TokenChunk, default_stop_ids, validate_prompt
from ..spec.stats import GenerationStats
from .session import Request, SessionState
from .slots import SlotModel, UnsupportedModelError

__all__ = ["BatchConfig", "BatchedDecoder"]

log = logging.getLogger("voicestream.batch")


@dataclass(frozen=True)
class BatchConfig:
    """How the scheduler batches.

    ``max_batch`` caps the live sessions in one forward (more wait to join: the cap bounds
    every session's tick time, hence its latency). ``warmup_tokens``: a session with fewer
    generated tokens than this gets priority ticks (set it to what the first audio chunk
    needs); up to ``priority_burst`` of them run back to back before the next full tick,
    so warm sessions are delayed by a few small ticks at most. ``priority`` turns priority
    ticks off for plain round-robin batching.

    ``realtime_tokens_per_s`` (tokens per second of audio; a voice fills it in from its
    codec) makes priority *lead-aware*: a speaking session played back in real time from
    its first token has ``generated / rate - elapsed`` seconds of audio in hand, and
    priority ticks go on past ``priority_burst`` while every speaking session keeps at
    least ``min_lead_s`` of it. Newcomers then reach their first audio without waiting
    for full ticks whenever the others can afford it, and never at the cost of an
    audible gap (under overload the burst count is still guaranteed to newcomers).

    ``tick_token_budget`` caps each session's draft in a tick at
    ``budget // rows - 1`` tokens (at least 1), so the verify forward stays near that many
    tokens however many sessions are live. A newcomer first waits for the tick in flight,
    and on a compute-bound device a 16-session tick of 12-token drafts is long; at high
    batch sizes long drafts also buy little, since a rejected tail costs every row's
    share of a full forward. Measured here (2-core CPU, 16 sessions): 48 raised batched
    throughput from 460 to 700 tokens/s. ``None`` picks 48 on a CPU and no cap on an
    accelerator (where verifying more tokens per forward is nearly free); ``0``: no cap.
    """

    max_batch: int = 32
    warmup_tokens: int = 16
    priority: bool = True
    priority_burst: int = 4
    realtime_tokens_per_s: float | None = None
    min_lead_s: float = 0.3
    tick_token_budget: int | None = None  # None: 48 on a CPU, unlimited on an accelerator; 0: unlimited
    idle_poll_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if self.warmup_tokens < 0 or self.priority_burst < 1:
            raise ValueError("warmup_tokens must be >= 0 and priority_burst >= 1")
        if self.realtime_tokens_per_s is not None and self.realtime_tokens_per_s <= 0:
            raise ValueError("realtime_tokens_per_s must be positive")
        if self.min_lead_s < 0:
            raise ValueError("min_lead_s must be >= 0")
        if self.tick_token_budget is not None and self.tick_token_budget != 0 and self.tick_token_budget < 2:
            raise ValueError("tick_token_budget must be 0 (no cap) or at least 2")


class BatchedDecoder:
    """Speculative decoding for many concurrent sessions over shared slot caches.

    ``generate`` may be called from any number of threads at once; each call blocks its
    caller and yields that session's :class:`TokenChunk` s as the shared ticks produce
    them. Needs Llama/Qwen2/Mistral-family models (the lean forward of
    :mod:`voicestream.spec.lean_runner`).
    """

    def __init__(
        self,
        target: torch.nn.Module,
        draft: torch.nn.Module | None = None,
        *,
        config: BatchConfig | None = None,
        check: bool = True,
        autostart: bool = True,
    ) -> None:
        if draft is not None and check:
            check_compatible(target, draft)
        from ..spec.feature_draft import is_feature_draft

        if is_feature_draft(draft):
            raise UnsupportedModelError(
                "a feature draft reads the target's hidden states, which the batched decoder does not keep; "
                "use it with the per-session decoder (no --batch), or give the batch a draft LM"
            )
        self.config = config or BatchConfig()
        self.target_model, self.draft_model = target.eval(), (draft.eval() if draft is not None else None)
        self.vocab_size = output_vocab_size(target)
        self.stop_ids = frozenset(default_stop_ids(target))
        self.target = SlotModel(target, slots=self.config.max_batch)
        self.draft = SlotModel(draft, slots=self.config.max_batch) if draft is not None else None
        self.device = self.target.device
        budget = self.config.tick_token_budget
        self.tick_token_budget = (48 if self.device.type == "cpu" else 0) if budget is None else budget
        self.active: list[SessionState] = []  # active[i] owns slot i in both models
        self.waiting: deque[Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._burst = 0  # priority ticks since the last full tick
        self.ticks = 0
        self.priority_ticks = 0
        self.rows_run = 0  # session-rows verified, summed over ticks (batch work done)
        self._autostart = autostart
        self._thread: threading.Thread | None = None

    # --- the public face --------------------------------------------------------------
    def submit(
        self,
        prompt: Sequence[int],
        cfg: SpecConfig | None = None,
        *,
        cancel: threading.Event | None = None,
        stats: GenerationStats | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Request:
        """Queue a generation; it joins the batch at the next tick."""
        prompt = validate_prompt(prompt, self.vocab_size)
        cfg = cfg or SpecConfig()
        if cfg.draft_length == "cost":  # a batch forward is shared: its time says nothing of one session's draft
            cfg = cfg.with_(draft_length="heuristic")
        req = Request(prompt, cfg, constraint, cancel, stats or GenerationStats())
        with self._cond:
            if self._closed:
                raise RuntimeError("the batched decoder is closed")
            self.waiting.append(req)
            self._cond.notify()
        if self._autostart:
            self._ensure_thread()
        return req

    def generate(
        self,
        prompt: Sequence[int],
        cfg: SpecConfig | None = None,
        *,
        cancel: threading.Event | None = None,
        stats: GenerationStats | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[TokenChunk]:
        """Yield chunks of accepted tokens until a stop id, ``max_new_tokens`` or ``cancel``."""
        req = self.submit(prompt, cfg, cancel=cancel, stats=stats, constraint=constraint)
        try:
            while True:
                try:
                    item = req.out.get(timeout=self.config.idle_poll_s)
                except queue.Empty:
                    if self._thread is not None and not self._thread.is_alive() and not self._closed:
                        raise RuntimeError("the batch scheduler thread died") from None
                    if self._closed:
                        return
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            req.closed.set()  # a consumer that leaves early frees its slot at the next tick
            with self._cond:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- the scheduler thread ---------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="voicestream-batch", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self.waiting and not self.active:
                    self._cond.wait()
                if self._closed:
                    break
            try:
                self.step()
            except Exception as exc:  # a failed forward fails the sessions in it, not the server
                log.exception("batch tick failed; failing %d live sessions", len(self.active))
                self._fail_all(exc)
        self._fail_all(RuntimeError("the batched decoder was closed"), waiting_too=True)

    def _fail_all(self, exc: BaseException, *, waiting_too: bool = False) -> None:
        for s in self.active:
            s.req.stats.finish("error")
            s.req.out.put(exc)
        self.active.clear()
        self.target.clear()
        if self.draft is not None:
            self.draft.clear()
        if waiting_too:
            with self._cond:
                while self.waiting:
                    self.waiting.popleft().out.put(exc)

    # --- one tick ---------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> bool:
        """Admit, drop, then run one tick; False when there was nothing to do."""
        self._drop_abandoned()
        self._admit()
        if not self.active:
            return False
        warm = [s for s in self.active if s.generated < self.config.warmup_tokens]
        cfg = self.config
        if cfg.priority and warm and len(warm) < len(self.active) and self._may_prioritise():
            rows = warm
            self._burst += 1
            self.priority_ticks += 1
        else:
            rows, self._burst = list(self.active), 0
        self.ticks += 1
        self.rows_run += len(rows)
        self._tick(rows)
        return True

    def _may_prioritise(self) -> bool:
        """Another priority tick: within the guaranteed burst, or while every speaking
        session keeps ``min_lead_s`` of audio ahead of real-time playback."""
        cfg = self.config
        if self._burst < cfg.priority_burst:
            return True
        if cfg.realtime_tokens_per_s is None:
            return False
        now = time.perf_counter()
        for s in self.active:
            t0 = s.stats.first_token_at
            if s.generated >= cfg.warmup_tokens and t0 is not None:
                if s.generated / cfg.realtime_tokens_per_s - (now - t0) < cfg.min_lead_s:
                    return False
        return True

    def _admit(self) -> None:
        new: list[SessionState] = []
        with self._cond:
            while self.waiting and len(self.active) < self.config.max_batch:
                req = self.waiting.popleft()
                if req.abandoned:
                    self._finish_abandoned(req)
                    continue
                state = SessionState(req, self.vocab_size, self.device, self.stop_ids, self.draft is not None)
                jumped = state.jump_start()  # forced tokens after the prompt join its prefill
                if jumped is not None:
                    req.out.put(jumped)
                    if jumped.finish_reason is not None:
                        continue
                state.slot = self.target.add()
                if self.draft is not None:
                    self.draft.add()
                self.active.append(state)
                new.append(state)
        feeds = [s.seq[:-1] for s in new]
        for s, f in zip(new, feeds):
            s.target_len = len(f)
        if any(feeds):  # the target slot holds seq[:-1]; the last token goes with the first chunk
            self.target.forward([s.slot for s in new], feeds, last_only=True)
            for s, f in zip(new, feeds):
                s.target_forwards += bool(f)

    def _drop_abandoned(self) -> None:
        for s in [s for s in self.active if s.req.abandoned]:
            self._finish_abandoned(s.req, s)
            self._remove(s)

    @staticmethod
    def _finish_abandoned(req: Request, state: SessionState | None = None) -> None:
        if req.cancel is not None and req.cancel.is_set():
            req.stats.finish("cancelled")
            req.out.put(TokenChunk([], state.generated if state else 0, "cancelled"))
        elif req.stats.finish_reason is None:
            req.stats.finish("closed")

    def _remove(self, state: SessionState) -> None:
        slot = state.slot
        self.target.remove(slot)
        if self.draft is not None:
            self.draft.remove(slot)
        last = self.active.pop()
        if last is not state:
            self.active[slot] = last
            last.slot = slot

    def _tick(self, rows: list[SessionState]) -> None:
        failed: list[SessionState] = []
        if self.draft is not None:
            self._draft(rows, failed)
        rows = [s for s in rows if s not in failed]
        feeds = [s.verify_input() for s in rows]
        logits = self.target.forward([s.slot for s in rows], feeds)
        done = failed
        for s, lg in zip(rows, logits):
            s.target_forwards += 1
            try:
                chunk, keep = s.accept(lg)
            except Exception as exc:
                self._fail(s, exc, done)
                continue
            self.target.truncate(s.slot, keep)
            s.req.out.put(chunk)
            if chunk.finish_reason is not None:
                done.append(s)
        for s in done:
            self._remove(s)

    @staticmethod
    def _fail(state: SessionState, exc: Exception, failed: list[SessionState]) -> None:
        """One session's own step failed (its constraint, its settings): end it alone."""
        log.warning("batched session failed: %r", exc)
        state.req.stats.finish("error")
        state.req.out.put(exc)
        failed.append(state)

    def _draft(self, rows: list[SessionState], failed: list[SessionState]) -> None:
        going, feeds = [], []
        budget = self.tick_token_budget
        cap = max(1, budget // len(rows) - 1) if budget else None
        for s in rows:
            s.cands, s.probs, s.free = [], [], []
            if s.speculates:
                keep, fresh = s.draft_catch_up(cap)
                self.draft.truncate(s.slot, keep)
                going.append(s)
                feeds.append(fresh)
        while going:
            logits = self.draft.forward([s.slot for s in going], feeds, last_only=True)
            nxt, feeds = [], []
            for s, lg in zip(going, logits):
                s.draft_forwards += 1
                try:
                    fed = s.draft_pick(lg)
                except Exception as exc:
                    self._fail(s, exc, failed)
                    continue
                if fed is not None:
                    nxt.append(s)
                    feeds.append(fed)
            going = nxt
