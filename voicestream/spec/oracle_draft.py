"""A draft that knows the answer: what any draft of a given acceptance could buy on a machine.

Whether speculation pays on a device depends on the device as much as on the draft: a
verification of k+1 rows has to cost far less than k+1 plain steps, and the decoder's own
loop (grammar, masks, picks) runs for every drafted token whatever the draft computes.
:class:`OracleDraft` measures that ceiling. It replays the tokens plain greedy decoding
produced (recorded earlier in the same run, :meth:`OracleDraft.record`) and proposes each
one correctly with probability ``accuracy`` (a fixed draw per position), at no compute
cost. With accuracy 1 its speed is what a perfect, free draft buys; at a real draft's
acceptance, what a free draft of that quality buys (``voicestream bench voice --drafts
oracle:0.5``). Greedy decoding only, and float32 weights: int8 verification can move a
near-tie off the recorded tokens, after which the oracle knows nothing.
"""
from __future__ import annotations

import random
from typing import Sequence

import torch

from .compat import output_vocab_size

ORACLE_PREFIX = "oracle"


def _checked(accuracy: float) -> float:
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"oracle draft accuracy must be in [0, 1], got {accuracy}")
    return accuracy


def parse_oracle(spec: str) -> float | None:
    """``oracle`` or ``oracle:ACC`` -> the accuracy (1.0 by default); None for other specs."""
    name, _, acc = str(spec).partition(":")
    if name != ORACLE_PREFIX:
        return None
    try:
        accuracy = float(acc) if acc else 1.0
    except ValueError:
        raise ValueError(f"oracle draft accuracy must be a number in [0, 1], got {acc!r}") from None
    return _checked(accuracy)


class OracleDraft(torch.nn.Module):
    """Proposes recorded greedy continuations, each token right with probability ``accuracy``."""

    def __init__(self, target: torch.nn.Module, accuracy: float = 1.0, *, seed: int = 0) -> None:
        super().__init__()
        self.config = target.config  # the target's vocabulary and special ids: it passes the compatibility check
        self.generation_config = getattr(target, "generation_config", None)
        self.vocab_size = output_vocab_size(target)
        # no weights; an empty parameter says which device the draft lane serves
        self.anchor = torch.nn.Parameter(torch.zeros(0, device=next(target.parameters()).device), requires_grad=False)
        self.accuracy, self.seed = _checked(accuracy), seed
        self.records: list[list[int]] = []

    def record(self, sequence: Sequence[int]) -> None:
        """A whole greedy sequence (prompt and generated tokens) the oracle may replay."""
        self.records.append([int(t) for t in sequence])

    def next_token(self, seq: Sequence[int]) -> int | None:
        """The recorded token after ``seq``, or None when no record continues it."""
        n = len(seq)
        for rec in self.records:
            if len(rec) > n and rec[:n] == list(seq):
                return rec[n]
        return None

    def right_at(self, position: int) -> bool:
        """Whether the proposal for ``position`` is the recorded token (the same draw every time)."""
        return random.Random(self.seed * 1_000_003 + position).random() < self.accuracy

    def runner_for(self, target_runner) -> "OracleRunner":
        """The per-generation runner the decoder drives (a draft that brings its own)."""
        return OracleRunner(self, target_runner.device)


class OracleRunner:
    """The decoder's draft verbs (``advance_to``, ``extend``, ``rollback``, ``release``) for
    an :class:`OracleDraft`: logits that put the proposal first among the legal ids."""

    def __init__(self, oracle: OracleDraft, device: torch.device) -> None:
        self.oracle = oracle
        self.device = device
        self.tokens: list[int] = []
        self.forwards = 0

    def pin(self, verified: Sequence[int] | None) -> None:
        pass  # it reads no target state

    def release(self) -> None:
        self.tokens = []

    def rollback(self, length: int) -> None:
        if length < 0 or length > len(self.tokens):
            raise ValueError(f"cannot roll back to {length}; the draft holds {len(self.tokens)} tokens")
        del self.tokens[length:]

    def __len__(self) -> int:
        return len(self.tokens)

    def advance_to(self, seq: Sequence[int], *, span: tuple[int, int] | None = None) -> torch.Tensor:
        self.tokens = [int(t) for t in seq]
        return self._logits(span)

    def extend(self, tokens: Sequence[int], *, last_only: bool = False,
               span: tuple[int, int] | None = None) -> torch.Tensor:
        if not tokens:
            raise ValueError("extend() needs at least one token")
        self.tokens.extend(int(t) for t in tokens)
        return self._logits(span)[None]

    def _logits(self, span: tuple[int, int] | None) -> torch.Tensor:
        """Every legal id equal (the grammar picks among them off the record), the proposal
        above them; a wrong proposal is the recorded token's neighbour, the recorded one below."""
        self.forwards += 1
        lo, hi = span if span is not None else (0, self.oracle.vocab_size)
        out = torch.full((self.oracle.vocab_size,), float("-inf"), device=self.device)
        out[lo:hi] = 0.0
        right = self.oracle.next_token(self.tokens)
        if right is not None:
            if self.oracle.right_at(len(self.tokens)):
                out[right] = 1.0
            else:
                wrong = right + 1 if right + 1 < hi else right - 1
                if wrong >= lo:  # with one legal id even a wrong oracle has no other choice
                    out[right], out[wrong] = -1.0, 1.0
        return out
