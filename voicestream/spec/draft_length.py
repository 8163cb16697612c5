"""Adaptive draft length: how many tokens the draft proposes next.

A long draft wastes draft forwards (and target compute) when rejections come early; a
short one leaves acceptance on the table. ``heuristic`` grows after a fully accepted
chunk and shrinks after an early rejection (as transformers' assisted generation does);
``confidence`` drafts up to ``gamma_max`` and lets the draft stop itself once its own
probability for the token it picked drops below ``confidence_threshold``; ``cost`` picks
the length that maximises expected tokens per second from measured step times and the
running acceptance rate -- including length 0, a plain target step, when drafting does
not pay (:class:`CostModel`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import SpecConfig


@dataclass
class CostModel:
    """Measured costs and acceptance of one generation, and the draft length they favour.

    With per-token acceptance ``a`` (the draft's token matches, independently), ``g``
    drafted tokens yield ``(1 - a**(g+1)) / (1 - a)`` tokens per verification (bonus
    included) at a cost of ``g * t_draft + t_step + g * t_row``: ``t_step`` is one target
    step, ``t_row`` what each further verified row adds. Where the target costs many
    draft steps and verifying k rows costs about one (a GPU, a large target), long drafts
    win; where the target is small and a CPU pays per row, often none does, and the
    decoder then steps the target alone -- probing with a short draft after
    ``probe_every`` plain steps, because acceptance runs in bursts (silence, held vowels).
    A probe that finds drafting still does not pay doubles the interval (up to
    ``probe_max``), so on hardware where it never pays the probes cost little: each one
    also makes the draft take in every token since the last, and with probes every 8..64
    plain steps the built-in voice on the 2-core CPU (int8, where drafting never pays) ran
    0.92x plain decoding; every 16..512, 0.97-1.00x (two side-by-side runs, 12 utterances).
    The acceptance estimate is a fast-decaying ratio (``decay``), to follow those bursts.
    """

    decay: float = 0.3
    probe_every: int = 16
    probe_max: int = 512
    t_step: float | None = None
    t_row: float | None = None
    t_draft: float | None = None
    hits: float = 1.0  # decayed accepted drafted tokens (prior: acceptance 1/2)
    trials: float = 2.0  # decayed accepted + first rejected
    plain_run: int = 0
    interval: int = 0  # plain steps before the next probe (0: not yet set)
    probing: bool = False

    @property
    def acceptance(self) -> float:
        return min(max(self.hits / self.trials, 0.01), 0.99)

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.decay * (new - old)

    def observe_plain(self, seconds: float) -> None:
        self.t_step = self._ema(self.t_step, seconds)

    def observe_chunk(self, draft_s: float, drafted: int, verify_s: float, rows: int, accepted: int) -> None:
        if drafted:
            self.t_draft = self._ema(self.t_draft, draft_s / drafted)
            self.hits += self.decay * (accepted - self.hits)
            self.trials += self.decay * (accepted + (accepted < drafted) - self.trials)
        if self.t_step is not None and rows > 1:
            self.t_row = self._ema(self.t_row, max(0.0, (verify_s - self.t_step) / (rows - 1)))

    def rate(self, gamma: int) -> float:
        """Expected tokens per second with ``gamma`` drafted tokens (0: a plain step)."""
        assert self.t_step is not None and self.t_draft is not None
        a = self.acceptance
        tokens = (1 - a ** (gamma + 1)) / (1 - a)
        return tokens / (gamma * (self.t_draft + (self.t_row or 0.0)) + self.t_step)

    def choose(self, gamma_min: int, gamma_max: int) -> int:
        if self.t_step is None:
            return 0  # measure a plain step first
        if self.t_draft is None:
            return gamma_min  # then a draft step
        best = max(range(gamma_max + 1), key=self.rate)
        if best == 0:
            if self.probing:  # the probe did not change the verdict: probe less often
                self.interval = min(2 * self.interval, self.probe_max)
            self.probing = False
            self.interval = self.interval or self.probe_every
            self.plain_run += 1
            if self.plain_run < self.interval:
                return 0
            self.probing = True
            best = gamma_min
        else:
            self.probing, self.interval = False, self.probe_every
        self.plain_run = 0
        return max(best, gamma_min)


class DraftLength:
    def __init__(self, cfg: SpecConfig) -> None:
        self.cfg = cfg
        self.gamma = cfg.gamma_max if cfg.draft_length == "confidence" else cfg.gamma
        self.cost = CostModel() if cfg.draft_length == "cost" else None
        if self.cost is not None:
            self.gamma = self.cost.choose(cfg.gamma_min, cfg.gamma_max)

    @property
    def stops_on_low_confidence(self) -> bool:
        return self.cfg.draft_length == "confidence"

    def _next(self, gamma: int, accepted: int, drafted: int) -> int:
        cfg = self.cfg
        if cfg.draft_length != "heuristic":
            return gamma
        if accepted >= drafted:
            return min(gamma + 2, cfg.gamma_max)
        return max(gamma - 1, cfg.gamma_min)

    def peek_full(self, drafted: int) -> int:
        """The length the next chunk gets if the current one is fully accepted."""
        return self._next(self.gamma, drafted, drafted)

    def update(self, accepted: int, drafted: int) -> None:
        self.gamma = self._next(self.gamma, accepted, drafted)

    # --- the cost policy's measurements (no-ops for the others) -------------------------
    def timed_plain(self, seconds: float) -> None:
        if self.cost is not None:
            self.cost.observe_plain(seconds)
            self.gamma = self.cost.choose(self.cfg.gamma_min, self.cfg.gamma_max)

    def timed_chunk(self, draft_s: float, drafted: int, verify_s: float, rows: int, accepted: int) -> None:
        if self.cost is not None:
            self.cost.observe_chunk(draft_s, drafted, verify_s, rows, accepted)
            self.gamma = self.cost.choose(self.cfg.gamma_min, self.cfg.gamma_max)
