"""Per-generation statistics: what it cost, what it accepted, how fast it went."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    target_forwards: int = 0
    draft_forwards: int = 0
    drafted_tokens: int = 0
    accepted_drafted: int = 0
    verify_steps: int = 0
    # tokens committed per verify step (accepted drafts + correction/bonus) -> count
    committed_histogram: Counter = field(default_factory=Counter)
    # draft depth d -> verifications that drafted a d-th token / that accepted it (and all before)
    drafted_at_depth: Counter = field(default_factory=Counter)
    accepted_at_depth: Counter = field(default_factory=Counter)
    started_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    finish_reason: str | None = None

    def record_step(self, drafted: int, accepted: int, committed: int, free: Sequence[bool] | None = None) -> None:
        """One verification of ``drafted`` candidates, the first ``accepted`` of them kept.

        ``free`` flags the candidates the draft chose; grammar-forced tokens that joined
        the chunk (False) count in the totals but not as a draft depth, so the per-depth
        figures describe the draft alone and stop at its draft length.
        """
        self.verify_steps += 1
        self.drafted_tokens += drafted
        self.accepted_drafted += accepted
        self.committed_histogram[committed] += 1
        free = [] if free is None else list(free)[:drafted]
        free += [True] * (drafted - len(free))
        depth = 0
        for i, chosen in enumerate(free):
            if chosen:
                depth += 1
                self.drafted_at_depth[depth] += 1
                self.accepted_at_depth[depth] += i < accepted

    def add(self, other: "GenerationStats") -> None:
        """Fold another generation's counts into these (totals over many prompts)."""
        for name in ("prompt_tokens", "new_tokens", "target_forwards", "draft_forwards", "drafted_tokens",
                     "accepted_drafted", "verify_steps"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("committed_histogram", "drafted_at_depth", "accepted_at_depth"):
            getattr(self, name).update(getattr(other, name))

    def accepted_by_depth(self) -> dict[int, float]:
        """Per draft depth d: the share of verifications with a d-th drafted token that
        accepted it (with every token before it)."""
        return {d: self.accepted_at_depth[d] / n for d, n in sorted(self.drafted_at_depth.items())}

    def record_tokens(self, n: int) -> None:
        if n and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.new_tokens += n

    def finish(self, reason: str) -> None:
        self.finish_reason = reason
        self.finished_at = time.perf_counter()

    @property
    def mean_accepted_per_target_forward(self) -> float:
        """New tokens per target forward (prefill included): exactly 1.0 for plain decoding."""
        return self.new_tokens / self.target_forwards if self.target_forwards else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_drafted / self.drafted_tokens if self.drafted_tokens else 0.0

    @property
    def time_to_first_token_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started_at

    @property
    def elapsed_s(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.perf_counter()
        return end - self.started_at

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "target_forwards": self.target_forwards,
            "draft_forwards": self.draft_forwards,
            "drafted_tokens": self.drafted_tokens,
            "accepted_drafted": self.accepted_drafted,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "mean_accepted_per_target_forward": round(self.mean_accepted_per_target_forward, 4),
            "committed_histogram": dict(sorted(self.committed_histogram.items())),
            "accepted_by_depth": {d: round(r, 4) for d, r in self.accepted_by_depth().items()},
            "time_to_first_token_s": self.time_to_first_token_s,
            "elapsed_s": round(self.elapsed_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "finish_reason": self.finish_reason,
        }
