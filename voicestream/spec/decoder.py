"""The speculative decoder: draft proposes a chunk, target verifies it in one forward.

Data flow of one generation (``_Generation``)::

    prompt -> target prefill ------------------------------> pending target logits
           -> draft chunk (gamma tokens + draft probs) ----> verify (one target forward)
                                                              -> accepted tokens (+ target token)
                                                              -> roll caches back, adapt gamma

Sequential mode drafts, then verifies, and emits a bonus token from the target when the
whole chunk is accepted. Pipelined mode drafts chunk i+1 on the draft lane *while* the
target verifies chunk i, assuming chunk i will be accepted; the bonus is then replaced by
checking the next chunk's first token against the target logits already in hand (same
distribution, no wasted forward), and a rejection discards the speculation.
Under greedy rules both modes produce exactly the target's greedy tokens.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from ..config import SpecConfig
from .acceptance import VerifyInput, verify
from .ahead import Ahead
from .compat import IncompatibleModelsError, check_compatible, output_vocab_size, special_ids
from .constraint import TokenConstraint, constrain, forced_run, legal_span, masks_along, walk
from .draft_length import DraftLength
from .lanes import Lane
from .feature_draft import is_feature_draft
from .feature_runner import FeatureDraftRunner
from .lean_runner import lean_supported, make_runner
from .logits import SeenTokens, one_hot, process_logits, to_probs
from .randomness import DRAFT, RESAMPLE, Randomness
from .stats import GenerationStats


@dataclass
class TokenChunk:
    """A run of newly accepted tokens, streamed as soon as it is verified."""

    tokens: list[int]
    start: int  # index of tokens[0] among the generated tokens
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" on the last chunk
    stop_token: int | None = None  # the stop id that ended generation (not in ``tokens``)


@dataclass
class DraftChunk:
    tokens: list[int]
    probs: torch.Tensor | None  # (k, V) processed draft probabilities (sampling rules)
    ready: object | None = None  # CUDA event after the draft's work, None on CPU
    end_state: object = None  # constraint state after the chunk (speculation continues from it)
    free: list[bool] = field(default_factory=list)  # per token: drafted (True) or forced (False)
    confidence: list[float] = field(default_factory=list)  # per token: the draft's probability of it

    def drafted(self, upto: int | None = None) -> int:
        """How many of the first ``upto`` tokens the draft chose (forced ones excluded)."""
        return sum(self.free[:upto])


def append_forced(
    constraint: TokenConstraint, state: object, stop: frozenset[int], limit: int,
    tokens: list[int], free: list[bool], rows: list[torch.Tensor] | None, like: torch.Tensor,
) -> tuple[list[int], object]:
    """Add the run the constraint forces after ``state`` to a draft chunk: its tokens,
    their flags (forced, not drafted) and, when sampling (``rows`` given), one-hot draft
    rows; returns the run and the state after it. Shared by single and batched drafting."""
    forced, state = forced_run(constraint, state, stop, limit)
    tokens += forced
    free += [False] * len(forced)
    if rows is not None:
        rows += [one_hot(t, like) for t in forced]
    return forced, state


def validate_prompt(prompt: Sequence[int], vocab_size: int) -> list[int]:
    """The prompt as a list of ints, or a clear error for an empty or out-of-range one."""
    if not prompt:
        raise ValueError("prompt must contain at least one token")
    bad = [t for t in prompt if not 0 <= int(t) < vocab_size]
    if bad:
        raise ValueError(f"prompt token ids out of range [0, {vocab_size}): {bad[:5]}")
    return list(map(int, prompt))


def cut_at_stop(
    tokens: Sequence[int], stop: frozenset[int], generated: int, max_new_tokens: int
) -> tuple[list[int], str | None, int | None]:
    """Verified tokens up to a stop id or the token budget: (kept, finish reason, stop id)."""
    out: list[int] = []
    for t in tokens:
        if t in stop:
            return out, "stop", t
        out.append(t)
        if generated + len(out) >= max_new_tokens:
            return out, "length", None
    return out, None, None


def default_stop_ids(model: torch.nn.Module) -> tuple[int, ...]:
    return tuple(sorted(special_ids(model).get("eos_token_id", frozenset())))


_RATE_DECAY = 0.25  # weight of the newest chunk in the running full-acceptance rate


class SpeculativeDecoder:
    """Streams tokens from ``target``, sped up by ``draft`` (or plain decoding without one).

    The models are shared and read-only; every :meth:`generate` call owns its own KV
    caches, so concurrent generations on different threads are safe. ``lean_draft`` runs
    Llama-family drafts through :mod:`.lean_runner` (same weights, less overhead).
    ``lean_target`` does the same for the target (off by default: its float32 rounding
    differs from the transformers forward, so a near-tie could flip a greedy token
    against HF ``generate``; plain and speculative decoding still agree with each other,
    as both use it). The built-in voice turns it on: ~25 % less per target forward on CPU.
    """

    def __init__(
        self,
        target: torch.nn.Module,
        draft: torch.nn.Module | None = None,
        *,
        check: bool = True,
        draft_cpu_threads: int | None = None,
        lean_draft: bool = True,
        lean_target: bool = False,
    ) -> None:
        if draft is not None and check:
            check_compatible(target, draft)
        # a feature draft extrapolates the target's hidden states: the target must take the
        # lean forward (which keeps them), and drafting stays sequential (it reads them)
        self.feature_draft = is_feature_draft(draft)
        if self.feature_draft and not lean_supported(target):
            raise IncompatibleModelsError(
                f"a feature draft needs a Llama/Qwen2/Mistral target (the lean forward); got {type(target).__name__}"
            )
        self.target = target.eval()
        self.draft = draft.eval() if draft is not None else None
        self.vocab_size = output_vocab_size(target)
        self.device = next(target.parameters()).device
        self.stop_ids = default_stop_ids(target)
        self.lean_draft = lean_draft
        self.lean_target = lean_target
        self.target_lane = Lane("target", self.device, thread=False)
        self.draft_lane = (
            Lane("draft", next(draft.parameters()).device, thread=True, cpu_threads=draft_cpu_threads)
            if draft is not None
            else None
        )

    def generate(
        self,
        prompt: Sequence[int],
        cfg: SpecConfig | None = None,
        *,
        cancel: threading.Event | None = None,
        stats: GenerationStats | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[TokenChunk]:
        """Yield chunks of accepted tokens until a stop id, ``max_new_tokens`` or ``cancel``.

        ``constraint`` (optional) masks draft and target logits alike with a token grammar.
        """
        cfg = cfg or SpecConfig()
        prompt = validate_prompt(prompt, self.vocab_size)
        gen = _Generation(self, prompt, cfg, cancel, stats or GenerationStats(), constraint)
        try:
            while True:
                with self.target_lane.active():
                    chunk = gen.step()
                if chunk is not None:
                    yield chunk
                    if chunk.finish_reason is not None:
                        return
        finally:
            gen.close()

    def close(self) -> None:
        if self.draft_lane is not None:
            self.draft_lane.close()


class Progress:
    """Committed tokens and their accounting, shared by single-session and batched generations."""

    seq: list[int]
    n_prompt: int
    cfg: SpecConfig
    stop: frozenset[int]
    seen: SeenTokens
    constraint: TokenConstraint | None
    cstate: object
    stats: GenerationStats

    def _commit(self, tokens: list[int]) -> TokenChunk:
        """Append verified tokens (and what the constraint forces after them), cutting at a
        stop id or the token budget."""
        start = self.generated
        state = walk(self.constraint, tokens, self.cstate) if self.constraint is not None else None
        forced, state = self._forced_after(tokens, state)
        tokens = tokens + forced
        out, reason, stop_token = cut_at_stop(tokens, self.stop, start, self.cfg.max_new_tokens)
        self.seq.extend(out)
        self.seen.add(out)
        if self.constraint is not None:  # a cut (stop id, budget) ends the generation before `state`
            self.cstate = state if len(out) == len(tokens) else walk(self.constraint, out, self.cstate)
        self.stats.record_tokens(len(out))
        if reason is not None:
            self.stats.finish(reason)
        return TokenChunk(out, start, reason, stop_token)

    def _forced_after(self, tokens: list[int], state: object) -> tuple[list[int], object]:
        """Jump-forward: what the constraint forces after ``seq + tokens`` (``state``: the
        constraint state there; nothing after a stop), and the state after it."""
        if not self.cfg.jump_forward or self.constraint is None or (tokens and tokens[-1] in self.stop):
            return [], state
        return forced_run(self.constraint, state, self.stop, self.remaining - len(tokens))

    def jump_start(self) -> TokenChunk | None:
        """Before the first forward: commit what the constraint forces right after the prompt
        (so the prefill covers it), as a chunk of its own; None when nothing is forced."""
        chunk = self._commit([])
        return chunk if chunk.tokens or chunk.finish_reason is not None else None

    @property
    def generated(self) -> int:
        return len(self.seq) - self.n_prompt

    @property
    def remaining(self) -> int:
        return self.cfg.max_new_tokens - self.generated


class _Generation(Progress):
    """State of one generation: committed tokens, both caches, randomness, stats."""

    def __init__(
        self,
        dec: SpeculativeDecoder,
        prompt: list[int],
        cfg: SpecConfig,
        cancel: threading.Event | None,
        stats: GenerationStats,
        constraint: TokenConstraint | None = None,
    ) -> None:
        self.dec = dec
        self.constraint = constraint
        # constraint state after everything in seq
        self.cstate = walk(constraint, prompt, constraint.initial()) if constraint is not None else None
        self.cfg = cfg
        self.cancel = cancel
        self.stats = stats
        self.stats.prompt_tokens = len(prompt)
        self.seq = prompt
        self.n_prompt = len(prompt)
        self.stop = frozenset(cfg.stop_ids) if cfg.stop_ids else frozenset(dec.stop_ids)
        self.rng = Randomness(cfg.seed)
        self.length = DraftLength(cfg)
        self.target = make_runner(dec.target, dec.lean_target or dec.feature_draft)
        if dec.feature_draft:
            self.draft = FeatureDraftRunner(dec.draft, self.target)
        elif hasattr(dec.draft, "runner_for"):  # a draft that brings its own runner (spec.oracle_draft)
            self.draft = dec.draft.runner_for(self.target)
        else:
            self.draft = make_runner(dec.draft, dec.lean_draft) if dec.draft is not None else None
        self.seen = SeenTokens(dec.vocab_size, cfg.sampling.repetition_penalty, dec.device)
        self.seen.add(prompt)
        self.epoch = 0
        self.pending_logits: torch.Tensor | None = None  # target's next-token logits for all of seq
        self.started = False
        self.jumped = False  # the forced tokens right after the prompt are committed
        self.chunk: DraftChunk | None = None  # pipelined: the chunk to verify next
        self.spec: tuple[Future, threading.Event] | None = None  # pipelined: speculative draft in flight
        self.full_accept_rate = 1.0  # pipelined: running rate of fully accepted chunks
        self.ahead: Ahead | None = None  # overlapped: what the draft has drafted so far
        self.ahead_job: Future | None = None
        self.last_accepted = 0

    # --- bookkeeping ------------------------------------------------------------------
    def _sync_stats(self) -> None:
        self.stats.target_forwards = self.target.forwards
        self.stats.draft_forwards = self.draft.forwards if self.draft is not None else 0

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.abort()
            try:
                self.ahead_job.result()
            except Exception:  # the generation is over; a failed draft changes nothing
                pass
            self.ahead = None
        if self.spec is not None:
            fut, abort = self.spec
            abort.set()
            try:
                fut.result()
            except Exception:  # the generation is over; a failed speculation changes nothing
                pass
            self.spec = None
        if self.stats.finish_reason is None:
            self.stats.finish("cancelled" if self.cancel is not None and self.cancel.is_set() else "closed")
        self._sync_stats()
        self.target.release()
        if self.draft is not None:
            self.draft.release()

    # --- one step ---------------------------------------------------------------------
    def step(self) -> TokenChunk | None:
        if self.cancel is not None and self.cancel.is_set():
            self.stats.finish("cancelled")
            return TokenChunk([], self.generated, "cancelled")
        if not self.jumped:
            self.jumped = True
            chunk = self.jump_start()
            if chunk is not None:
                return chunk
        if self.draft is None:
            chunk = self._plain_step()
        elif self.cfg.pipelined:
            chunk = self._overlapped_step() if self.dec.feature_draft else self._pipelined_step()
        else:
            chunk = self._sequential_step()
        self._sync_stats()
        return chunk

    def _plain_step(self) -> TokenChunk:
        """Plain autoregressive decoding with the same processing (the baseline)."""
        if not self.started:
            self.started = True
            self.pending_logits = self.target.prefill(self.seq)
        return self._target_step()

    def _target_step(self) -> TokenChunk:
        """One token from the target alone, chosen as plain decoding chooses it; logits
        already in hand (the prefill's, or the last verification's) spare the forward."""
        logits = self.pending_logits
        if logits is None:
            span = legal_span(self.constraint, self.cstate)
            logits = self.target.extend(self.seq[len(self.target.tokens) :], last_only=True, span=span)[-1]
        self.pending_logits = None  # the target has not seen the token chosen now
        seen = self.seen.mask if self.seen.active else None
        logits = constrain(logits, self.constraint, self.cstate)
        if self.cfg.sampling.greedy:
            token = int(process_logits(logits, self.cfg.sampling, seen).argmax())
        else:
            token = self.rng.sample(to_probs(logits, self.cfg.sampling, seen), RESAMPLE, len(self.seq), 0)
        self.stats.record_step(0, 0, 1)
        return self._commit([token])

    def _sequential_step(self) -> TokenChunk:
        if not self.started:
            self.started = True
            self.pending_logits = self.target.prefill(self.seq)
        if self.length.gamma == 0:  # the cost policy found drafting does not pay here
            t0 = time.perf_counter()
            out = self._target_step()
            self.length.timed_plain(time.perf_counter() - t0)
            return out
        t0 = time.perf_counter()
        chunk = self.draft_chunk(list(self.seq), min(self.length.gamma, self.remaining), self.epoch, None, self.cstate)
        t1 = time.perf_counter()
        fresh = 0 if self.pending_logits is not None else len(self.seq) - len(self.target.tokens)
        out = self._verify_and_commit(chunk, emit_bonus=True)
        self.length.timed_chunk(t1 - t0, chunk.drafted(), time.perf_counter() - t1, fresh + len(chunk.tokens),
                                chunk.drafted(self.last_accepted))
        return out


    def _pipelined_step(self) -> TokenChunk:
        lane = self.dec.draft_lane
        if not self.started:
            self.started = True
            # the draft's first chunk overlaps the target's prefill
            first = lane.submit(
                self.draft_chunk, list(self.seq), self._pipelined_len(self.length.gamma), self.epoch, None, self.cstate
            )
            self.pending_logits = self.target.prefill(self.seq)
            self.chunk = first.result()
        chunk = self.chunk
        assert chunk is not None
        k = len(chunk.tokens)
        after = self.remaining - k
        # speculate: draft the next chunk as if this one will be fully accepted -- but only
        # while full acceptance is common enough for the overlap to beat the wasted drafts
        spec = None
        if after > 0 and chunk.tokens[-1] not in self.stop and self.full_accept_rate >= self.cfg.speculate_threshold:
            abort = threading.Event()
            n_next = min(self._pipelined_len(self.length.peek_full(chunk.drafted())), after)
            context = self.seq + chunk.tokens
            job = lane.submit(self.draft_chunk, context, n_next, self.epoch, abort, chunk.end_state)
            spec = self.spec = (job, abort)
        out = self._verify_and_commit(chunk, emit_bonus=spec is None)
        self.spec = None
        fully_accepted = self.pending_logits is not None
        self.full_accept_rate += _RATE_DECAY * (float(self.last_accepted == k) - self.full_accept_rate)
        if spec is not None and (out.finish_reason is not None or not fully_accepted):
            spec[1].set()  # the speculation built on a rejected token (or is not needed): stop it
            spec[0].result()
            spec = None
        if out.finish_reason is not None:
            return out
        if spec is not None:
            self.chunk = spec[0].result()
        else:
            self.chunk = lane.submit(
                self.draft_chunk, list(self.seq), self._pipelined_len(self.length.gamma), self.epoch, None, self.cstate
            ).result()
        return out

    # --- overlapped (a feature draft, pipelined) ----------------------------------------
    def _overlapped_step(self) -> TokenChunk:
        """The draft drafts ahead on its lane without pause (:class:`Ahead`) while the target
        verifies whatever follows the committed tokens when it is ready: on a CPU each runs
        on its own core. The target never waits for the draft -- with nothing drafted yet it
        takes a plain step, and a drafted token that agrees with that step still stands."""
        if not self.started:
            self.started = True
            self.target.reserve(len(self.seq) + self.remaining + self.cfg.gamma_max + 2)
            self.pending_logits = self.target.prefill(self.seq)
            self._start_ahead()
        threshold = self.cfg.confidence_threshold if self.length.stops_on_low_confidence else 0.0
        cands, rows, free, ready = self.ahead.after(self.seq, self.length.gamma + 1, threshold)
        if cands:
            probs = None if self.cfg.sampling.greedy else torch.stack(rows)
            out = self._verify_and_commit(DraftChunk(cands, probs, ready, None, free), emit_bonus=True)
        else:
            out = self._target_step()
        if out.finish_reason is None:
            if self.ahead.follows(self.seq):
                self.ahead.move_horizon(len(self.seq) + self.cfg.gamma_max)
            else:
                self._start_ahead()
        return out

    def _start_ahead(self) -> None:
        """Draft afresh from the committed tokens; the job before (if any) stops after its
        current token (the lane runs one job at a time, so the new one starts then)."""
        if self.ahead is not None:
            self.ahead.abort()
            if self.ahead_job.done() and self.ahead_job.exception() is not None:
                raise self.ahead_job.exception()
        verified = self.seq[: self.target.common_prefix(self.seq)]
        self.ahead = Ahead(self.seq, len(self.seq) + self.cfg.gamma_max)
        self.ahead_job = self.dec.draft_lane.submit(
            self._draft_ahead, self.ahead, verified, self.epoch, self.cstate, self.dec.target_lane.mark())

    def _draft_ahead(self, ahead: Ahead, verified: list[int], epoch: int, state: object, target_ready) -> None:
        """The overlapped draft's job (on the draft lane): one drafted token (and the run the
        constraint forces after it) at a time into ``ahead``, until the horizon stops it for
        good (aborted), a stop id or the token budget."""
        try:
            self.dec.draft_lane.wait(target_ready)  # CUDA: the target's states are written
            self.draft.pin(verified)
            ctx = list(ahead.context)
            end = self.n_prompt + self.cfg.max_new_tokens
            while ahead.room(len(ctx)):
                chunk = self.draft_chunk(ctx, 1, epoch, None, state)
                if not chunk.tokens:
                    break
                rows = list(chunk.probs) if chunk.probs is not None else [None] * len(chunk.tokens)
                ahead.append(chunk.tokens, rows, chunk.free, chunk.confidence, chunk.ready)
                ctx += chunk.tokens
                state = chunk.end_state
                if chunk.tokens[-1] in self.stop or len(ctx) >= end:
                    break
        finally:
            ahead.finish()

    def _pipelined_len(self, gamma: int) -> int:
        # no bonus token in pipelined mode: the draft fills that slot, so a chunk is gamma + 1
        # long and each target forward verifies as many positions as in sequential mode
        return min(gamma + 1, self.remaining)

    # --- draft ------------------------------------------------------------------------
    def draft_chunk(
        self, context: list[int], n: int, epoch: int, abort: threading.Event | None, state: object = None
    ) -> DraftChunk:
        """Propose up to ``n`` drafted tokens after ``context`` (runs on the draft lane).

        ``state`` is the constraint state after ``context`` (ignored without a constraint).
        Tokens the constraint forces go into the chunk as well, without a draft forward of
        their own and not counted in ``n``; the chunk never ends where a token is forced
        (unless at a stop id or the token budget), so a speculation built on it lines up
        with what a commit appends.
        """
        assert self.draft is not None
        scfg = self.cfg.sampling
        greedy = scfg.greedy
        seen = SeenTokens(self.dec.vocab_size, scfg.repetition_penalty, self.draft.device)
        seen.add(context)
        logits = self.draft.advance_to(context, span=legal_span(self.constraint, state))
        jump = self.cfg.jump_forward and self.constraint is not None
        limit = max(self.cfg.max_new_tokens - (len(context) - self.n_prompt), 1)
        tokens: list[int] = []
        free: list[bool] = []
        rows: list[torch.Tensor] = []
        pos = len(context)
        constraint = self.constraint
        feed: list[int] = []  # chosen but not yet fed to the draft
        drafted = 0
        confident: list[float] = []  # per drafted token
        want_conf = self.length.stops_on_low_confidence or self.cfg.pipelined
        while True:
            if jump and not (tokens and tokens[-1] in self.stop):
                forced, state = append_forced(constraint, state, self.stop, limit - len(tokens), tokens, free,
                                              None if greedy else rows, logits)
                feed += forced
                if forced and (forced[-1] in self.stop or len(tokens) >= limit):
                    break
            if (
                drafted >= max(n, 1)
                or len(tokens) >= limit
                or (tokens and tokens[-1] in self.stop)
                or (abort is not None and abort.is_set() and drafted)
            ):
                break
            if feed:
                seen.add(feed)
                logits = self.draft.extend(feed, last_only=True, span=legal_span(constraint, state))[-1]
                feed = []
            logits = constrain(logits, constraint, state)
            x = process_logits(logits, scfg, seen.mask)
            if greedy:
                token = int(x.argmax())
                confidence = float(x.softmax(-1)[token]) if want_conf else 1.0
            else:
                q = x.softmax(-1)
                token = self.rng.sample(q, DRAFT, pos + len(tokens), epoch)
                rows.append(q)
                confidence = float(q[token])
            tokens.append(token)
            free.append(True)
            confident.append(confidence)
            drafted += 1
            feed = [token]
            if constraint is not None:
                state = constraint.step(state, token)
            if self.length.stops_on_low_confidence and confidence < self.cfg.confidence_threshold:
                n = drafted  # stop drafting; a forced run after it still joins the chunk
        probs = torch.stack(rows) if rows else None
        it = iter(confident)
        confidence = [next(it) if f else 1.0 for f in free]
        return DraftChunk(tokens, probs, self.dec.draft_lane.mark() if self.cfg.pipelined else None, state, free,
                          confidence)

    # --- verify -----------------------------------------------------------------------
    def _verify_and_commit(self, chunk: DraftChunk, emit_bonus: bool) -> TokenChunk:
        cands = chunk.tokens
        k = len(cands)
        base = len(self.seq)
        self.dec.target_lane.wait(chunk.ready, chunk.probs)
        seen_rows = self.seen.rows(cands)
        legal = masks_along(self.constraint, self.cstate, cands)

        def inputs(logits: torch.Tensor, n_cands: int, bonus: bool) -> VerifyInput:
            probs = chunk.probs[:n_cands] if chunk.probs is not None else None
            return VerifyInput(cands[:n_cands], probs, logits, seen_rows, base, self.epoch, bonus,
                               allowed=legal.allowed, picks=legal.picks)

        verdict = None
        if self.pending_logits is not None:
            # the first candidate can be checked with logits already in hand: if it fails,
            # the target's token comes free of any forward
            first = verify(inputs(self.pending_logits[None], 1, False), self.cfg, self.rng)
            if first.accepted == 0:
                verdict = first
            else:
                rows = torch.cat([self.pending_logits[None], self.target.extend(cands)], 0)
        else:
            # the target has not seen the last committed token yet: feed it with the chunk
            fresh = self.seq[len(self.target.tokens) :]
            assert fresh, "no pending logits and no unseen token: the target cache is out of step"
            rows = self.target.extend(fresh + cands)[len(fresh) - 1 :]
        if verdict is None:
            verdict = verify(inputs(rows, k, emit_bonus), self.cfg, self.rng)

        n, token = verdict.accepted, verdict.token
        self.last_accepted = n
        if n == k and token is None:
            self.pending_logits = rows[k]  # the cache holds everything committed
        else:
            self.pending_logits = None
            self.target.rollback(base + n)  # drop rejected candidates; `token` is fed next time
        if n < k:
            self.epoch += 1
        if chunk.drafted():
            self.length.update(chunk.drafted(n), chunk.drafted())
        new = cands[:n] + ([token] if token is not None else [])
        self.stats.record_step(k, n, len(new), chunk.free)
        out = self._commit(new)
        if len(self.seq) != base + len(new):
            self.pending_logits = None  # forced tokens joined after the verified ones: fed next time
        return out
