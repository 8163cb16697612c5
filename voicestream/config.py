"""Configuration dataclasses shared by the decoder, the CLI and (later) the server.

Kept free of torch so transports and CLIs can build and validate configs cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

AcceptanceRule = Literal["greedy", "topk", "sampling", "ssd"]
DraftLengthPolicy = Literal["fixed", "heuristic", "confidence", "cost"]

RULES: tuple[str, ...] = ("greedy", "topk", "sampling", "ssd")
POLICIES: tuple[str, ...] = ("fixed", "heuristic", "confidence", "cost")


@dataclass(frozen=True)
class SamplingConfig:
    """The logits processing TTS models apply before choosing a token.

    Draft and target distributions are both computed *after* this processing, which is
    what makes speculative sampling lossless with respect to the processed target.
    ``temperature == 0`` means argmax (greedy).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class SpecConfig:
    """How one generation is decoded.

    rule:
      * ``greedy``   -- accept while draft == target argmax; output equals greedy decoding.
      * ``topk``     -- greedy with tolerance: accept a drafted token inside the target's
                        top ``topk_tolerance`` (VADUSA-style; not exact).
      * ``sampling`` -- lossless speculative sampling (Leviathan et al.; Chen et al.).
      * ``ssd``      -- SSD tolerance rule (arXiv 2505.15380): accept when
                        r < min(1, p/q) + ``beta``; ``beta = 0`` is exactly ``sampling``.
    gamma is the initial draft length; the draft-length policy moves it inside
    [gamma_min, gamma_max] (``cost``: from measured step times, and down to 0 -- a plain
    target step -- when drafting does not pay; sequential mode only). ``pipelined`` overlaps drafting chunk i+1 with verifying chunk i,
    while the running rate of fully accepted chunks stays >= ``speculate_threshold``
    (0 = always speculate, the right choice when draft and target do not share cores, as
    on a GPU; on a 2-core CPU wasted speculation steals the target's core).
    ``jump_forward``: tokens a constraint forces (see ``spec.constraint.forced_run``) are
    appended without drafting or sampling them; outputs are unchanged, only forwards saved.
    """

    rule: AcceptanceRule = "greedy"
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.0))
    gamma: int = 4
    gamma_min: int = 1
    gamma_max: int = 12
    draft_length: DraftLengthPolicy = "heuristic"
    confidence_threshold: float = 0.3
    beta: float = 0.0
    topk_tolerance: int = 3
    pipelined: bool = False
    speculate_threshold: float = 0.25
    max_new_tokens: int = 256
    stop_ids: Sequence[int] = ()
    seed: int = 0
    jump_forward: bool = True

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown acceptance rule {self.rule!r}; choose one of {RULES}")
        if self.draft_length not in POLICIES:
            raise ValueError(f"unknown draft-length policy {self.draft_length!r}; choose one of {POLICIES}")
        if not 1 <= self.gamma_min <= self.gamma <= self.gamma_max:
            raise ValueError(
                f"need 1 <= gamma_min <= gamma <= gamma_max, got {self.gamma_min}, {self.gamma}, {self.gamma_max}"
            )
        if self.draft_length == "cost" and self.pipelined:
            raise ValueError("draft_length 'cost' times sequential steps; pipelined mode overlaps them (use "
                             "'heuristic' there)")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.topk_tolerance < 1:
            raise ValueError(f"topk_tolerance must be >= 1, got {self.topk_tolerance}")
        if not 0.0 <= self.confidence_threshold < 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1), got {self.confidence_threshold}")
        if not 0.0 <= self.speculate_threshold <= 1.0:
            raise ValueError(f"speculate_threshold must be in [0, 1], got {self.speculate_threshold}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.rule in ("greedy", "topk") and not self.sampling.greedy:
            raise ValueError(f"rule {self.rule!r} decodes by argmax; use temperature=0 or rule 'sampling'/'ssd'")
        if self.rule in ("sampling", "ssd") and self.sampling.greedy:
            raise ValueError(f"rule {self.rule!r} samples; it needs temperature > 0")

    def with_(self, **changes) -> "SpecConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)
