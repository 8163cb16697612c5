"""One session's decoding state inside a batch: what :class:`_Generation` keeps for a
single sequence, minus the caches (those live in slots of the shared :class:`SlotModel`).

Every per-token decision -- logits processing, constraint masks, draft sampling,
acceptance, commit -- is made here with the same functions and the same keyed
randomness as the single-session decoder, so a session gets the same tokens batched or
alone; only where the forwards happen differs.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import torch

from ..config import SpecConfig
from ..spec.acceptance import VerifyInput, verify
from ..spec.constraint import TokenConstraint, constrain, masks_along, walk
from ..spec.decoder import Progress, TokenChunk, append_forced
from ..spec.draft_length import DraftLength
from ..spec.logits import SeenTokens, process_logits, to_probs
from ..spec.randomness import DRAFT, RESAMPLE, Randomness
from ..spec.stats import GenerationStats

__all__ = ["Request", "SessionState"]


@dataclass
class Request:
    """A generation waiting to join the batch, and where its chunks go."""

    prompt: list[int]
    cfg: SpecConfig
    constraint: TokenConstraint | None
    cancel: threading.Event | None
    stats: GenerationStats
    out: "queue.SimpleQueue[TokenChunk | BaseException]" = field(default_factory=queue.SimpleQueue)
    closed: threading.Event = field(default_factory=threading.Event)  # the consumer went away

    @property
    def abandoned(self) -> bool:
        return self.closed.is_set() or (self.cancel is not None and self.cancel.is_set())


class SessionState(Progress):
    """Committed tokens, sampling state and cache bookkeeping of one batched session.

    Cache invariants between ticks: the target slot holds ``seq[:target_len]`` (the last
    committed token, and any forced after it, are fed with the next chunk, so every
    verify is one forward), and
    ``draft_tokens`` lists what the draft slot holds (a prefix of some drafted sequence;
    the common prefix with ``seq`` is kept, the rest rolled back).
    """

    def __init__(self, req: Request, vocab_size: int, device: torch.device, stop_ids: frozenset[int],
                 has_draft: bool) -> None:
        self.req = req
        cfg = self.cfg = req.cfg
        self.seq = list(req.prompt)
        self.n_prompt = len(self.seq)
        self.stop = frozenset(cfg.stop_ids) if cfg.stop_ids else stop_ids
        self.rng = Randomness(cfg.seed)
        self.length = DraftLength(cfg)
        self.vocab_size, self.device = vocab_size, device
        self.seen = SeenTokens(vocab_size, cfg.sampling.repetition_penalty, device)
        self.seen.add(self.seq)
        self.constraint = req.constraint
        self.cstate = walk(self.constraint, self.seq, self.constraint.initial()) if self.constraint else None
        self.epoch = 0
        self.has_draft = has_draft
        self.draft_tokens: list[int] = []
        self.target_forwards = 0
        self.draft_forwards = 0
        self.slot = -1  # index in the scheduler's active list = slot in both slot models
        self.finished = False
        self.stats = req.stats
        self.stats.prompt_tokens = self.n_prompt
        # this tick's draft
        self.cands: list[int] = []
        self.free: list[bool] = []  # per candidate: drafted (True) or forced by the constraint
        self.probs: list[torch.Tensor] = []
        self.target_len = 0  # tokens the target slot holds (a prefix of seq)
        self._dstate = None
        self._dseen: SeenTokens | None = None
        self._dwant = 0

    @property
    def speculates(self) -> bool:
        return self.has_draft and self.remaining > 0

    # --- draft ----------------------------------------------------------------------
    def draft_catch_up(self, cap: int | None = None) -> tuple[int, list[int]]:
        """Start this tick's draft, of at most ``cap`` tokens: (how much of the draft slot to
        keep, what to feed it)."""
        toks, seq = self.draft_tokens, self.seq
        keep = 0
        n = min(len(toks), len(seq) - 1)
        while keep < n and toks[keep] == seq[keep]:
            keep += 1
        del toks[keep:]
        fresh = seq[keep:]
        toks.extend(fresh)
        self._dwant = min(self.length.gamma, self.remaining, cap or self.remaining)
        self._dstate = self.cstate
        self._dseen = SeenTokens(self.vocab_size, self.cfg.sampling.repetition_penalty, self.device)
        self._dseen.add(self.seq)
        return keep, fresh

    def draft_pick(self, logits: torch.Tensor) -> list[int] | None:
        """Choose the next drafted token from the draft's logits, plus what the constraint
        forces after it (as the single-session draft does); returns the tokens to feed the
        draft when it should keep going, None when the chunk is done."""
        cfg, scfg = self.cfg, self.cfg.sampling
        logits = constrain(logits, self.constraint, self._dstate)
        x = process_logits(logits, scfg, self._dseen.mask)
        pos = len(self.seq) + len(self.cands)
        if scfg.greedy:
            token = int(x.argmax())
            confidence = float(x.softmax(-1)[token]) if self.length.stops_on_low_confidence else 1.0
        else:
            q = x.softmax(-1)
            token = self.rng.sample(q, DRAFT, pos, self.epoch)
            self.probs.append(q)
            confidence = float(q[token])
        self.cands.append(token)
        self.free.append(True)
        if self.constraint is not None:
            self._dstate = self.constraint.step(self._dstate, token)
        fed = [token]
        if token not in self.stop and cfg.jump_forward and self.constraint is not None:
            forced, self._dstate = append_forced(self.constraint, self._dstate, self.stop,
                                                 self.remaining - len(self.cands), self.cands, self.free,
                                                 None if scfg.greedy else self.probs, logits)
            fed += forced
            if forced and forced[-1] in self.stop:
                return None
        if (
            sum(self.free) >= self._dwant
            or token in self.stop
            or len(self.cands) >= self.remaining
            or (self.length.stops_on_low_confidence and confidence < cfg.confidence_threshold)
        ):
            return None
        self._dseen.add(fed)
        self.draft_tokens.extend(fed)
        return fed

    # --- verify ---------------------------------------------------------------------
    def verify_input(self) -> list[int]:
        """What the target is fed this tick: the committed tokens it lacks (the last one, and
        any the constraint forced after it), then the candidates."""
        return self.seq[self.target_len :] + self.cands

    def accept(self, rows: torch.Tensor) -> tuple[TokenChunk, int]:
        """Judge this tick's candidates with the target's logits (k+1, V).

        Returns the committed chunk and how many fed positions the target slot keeps.
        """
        cands = self.cands
        k = len(cands)
        base = len(self.seq)
        rows = rows[-(k + 1) :]  # the rows after the last committed token and each candidate
        if k == 0:
            token = self._plain_pick(rows[0])
            self.stats.record_step(0, 0, 1)
            self.target_len = base
            return self._commit([token]), base
        legal = masks_along(self.constraint, self.cstate, cands)
        probs = torch.stack(self.probs) if self.probs else None
        inp = VerifyInput(cands, probs, rows, self.seen.rows(cands), base, self.epoch, True,
                          allowed=legal.allowed, picks=legal.picks)
        verdict = verify(inp, self.cfg, self.rng)
        n, token = verdict.accepted, verdict.token
        if n < k:
            self.epoch += 1
        if any(self.free):
            self.length.update(sum(self.free[:n]), sum(self.free))
        new = cands[:n] + ([token] if token is not None else [])
        self.stats.record_step(k, n, len(new), self.free)
        # the slot keeps everything committed before + the accepted candidates
        self.target_len = base + n
        return self._commit(new), base + n

    def _plain_pick(self, logits: torch.Tensor) -> int:
        """The single-session plain step's choice (same processing, same randomness key)."""
        seen = self.seen.mask if self.seen.active else None
        logits = constrain(logits, self.constraint, self.cstate)
        if self.cfg.sampling.greedy:
            return int(process_logits(logits, self.cfg.sampling, seen).argmax())
        return self.rng.sample(to_probs(logits, self.cfg.sampling, seen), RESAMPLE, len(self.seq), 0)

    def _commit(self, tokens: list[int]) -> TokenChunk:
        self.stats.target_forwards = self.target_forwards
        self.stats.draft_forwards = self.draft_forwards
        chunk = super()._commit(tokens)
        self.finished = chunk.finish_reason is not None
        return chunk
