"""Acceptance rules: given drafted tokens and the target's logits, how many survive.

Each rule sees the same inputs: k candidates, the draft's processed probabilities for
them (None under argmax rules), and target logits rows where row i predicts candidate i
(an optional extra row k predicts the token after the chunk). A rule returns how many
candidates it accepts and, when it stops early or may add a bonus, the target's own token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..config import SpecConfig
from .constraint import apply_mask
from .logits import process_logits
from .randomness import ACCEPT, RESAMPLE, Randomness


@dataclass(frozen=True)
class Verdict:
    accepted: int
    token: int | None  # correction after a rejection, or bonus after full acceptance


@dataclass
class VerifyInput:
    candidates: Sequence[int]
    draft_probs: torch.Tensor | None  # (k, V) processed draft probabilities, sampling rules only
    target_logits: torch.Tensor  # (k or k+1, V) raw target logits
    seen: torch.Tensor | None  # (k+1, V) repetition-penalty masks, or None
    position: int  # absolute sequence position of candidates[0]
    epoch: int  # rejection count so far (keys the randomness)
    emit_bonus: bool
    allowed: torch.Tensor | None = None  # (k+1, V) constraint masks, or None
    picks: Sequence | None = None  # (k+1,) per row: the constraint's pick rule or None (Rows.picks)


Rule = Callable[[VerifyInput, SpecConfig, Randomness], Verdict]


def _rows(inp: VerifyInput, cfg: SpecConfig) -> torch.Tensor:
    n = inp.target_logits.shape[0]
    seen = inp.seen[:n] if inp.seen is not None else None
    allowed = inp.allowed[:n] if inp.allowed is not None else None
    picks = inp.picks[:n] if inp.picks is not None else None
    return process_logits(apply_mask(inp.target_logits, allowed, picks), cfg.sampling, seen)


def _argmax_verdict(inp: VerifyInput, accepted: int, argmax: list[int]) -> Verdict:
    k = len(inp.candidates)
    if accepted < k:
        return Verdict(accepted, argmax[accepted])
    if inp.emit_bonus and len(argmax) > k:
        return Verdict(k, argmax[k])
    return Verdict(k, None)


def greedy_rule(inp: VerifyInput, cfg: SpecConfig, rng: Randomness) -> Verdict:
    """Accept while the drafted token is the target's argmax; exact greedy decoding."""
    argmax = _rows(inp, cfg).argmax(-1).tolist()
    n = 0
    for cand, best in zip(inp.candidates, argmax):
        if cand != best:
            break
        n += 1
    return _argmax_verdict(inp, n, argmax)


def topk_rule(inp: VerifyInput, cfg: SpecConfig, rng: Randomness) -> Verdict:
    """Accept a drafted token inside the target's top-k (VADUSA-style tolerance)."""
    x = _rows(inp, cfg)
    k = len(inp.candidates)
    kk = min(cfg.topk_tolerance, x.shape[-1])
    top = x[:k].topk(kk, dim=-1).indices
    cands = torch.as_tensor(list(inp.candidates), device=x.device)
    ok = (top == cands[:, None]).any(-1).tolist()
    n = 0
    for flag in ok:
        if not flag:
            break
        n += 1
    return _argmax_verdict(inp, n, x.argmax(-1).tolist())


def _speculative_sampling(inp: VerifyInput, cfg: SpecConfig, rng: Randomness, beta: float) -> Verdict:
    p = _rows(inp, cfg).softmax(-1)
    q = inp.draft_probs.to(p.device)
    k = len(inp.candidates)
    idx = torch.arange(k, device=p.device)
    cands = torch.as_tensor(list(inp.candidates), device=p.device)
    ratios = (p[idx, cands] / q[idx, cands]).clamp(max=1.0).tolist()
    n = 0
    for i, ratio in enumerate(ratios):
        if rng.uniform(ACCEPT, inp.position + i, inp.epoch) >= ratio + beta:
            break
        n += 1
    if n < k:
        residual = (p[n] - q[n]).clamp(min=0.0)
        if float(residual.sum()) <= 1e-12:  # p == q: the residual is empty, p itself is exact
            residual = p[n]
        return Verdict(n, rng.sample(residual, RESAMPLE, inp.position + n, inp.epoch))
    if inp.emit_bonus and p.shape[0] > k:
        return Verdict(k, rng.sample(p[k], RESAMPLE, inp.position + k, inp.epoch))
    return Verdict(k, None)


def sampling_rule(inp: VerifyInput, cfg: SpecConfig, rng: Randomness) -> Verdict:
    """Lossless speculative sampling: accept x with prob min(1, p(x)/q(x))."""
    return _speculative_sampling(inp, cfg, rng, beta=0.0)


def ssd_rule(inp: VerifyInput, cfg: SpecConfig, rng: Randomness) -> Verdict:
    """SSD tolerance (arXiv 2505.15380): accept when r < min(1, p/q) + beta."""
    return _speculative_sampling(inp, cfg, rng, beta=cfg.beta)


RULES: dict[str, Rule] = {
    "greedy": greedy_rule,
    "topk": topk_rule,
    "sampling": sampling_rule,
    "ssd": ssd_rule,
}


def verify(inp: VerifyInput, cfg: SpecConfig, rng: Randomness) -> Verdict:
    return RULES[cfg.rule](inp, cfg, rng)
