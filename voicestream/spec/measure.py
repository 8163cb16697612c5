"""How well a draft suits a target: speculative decoding at a fixed draft length, counted.

Distillation reports this before and after training. A fixed ``gamma`` (not the cost-based
draft-length policy) makes the figure a property of the draft and target, not of the
machine's speed, so runs on different hardware compare.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..config import SamplingConfig, SpecConfig
from .decoder import SpeculativeDecoder
from .stats import GenerationStats


def measure_acceptance(
    target: torch.nn.Module,
    draft: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    gamma: int = 4,
    rule: str = "greedy",
    constraint=None,
    stop_ids: Sequence[int] = (),
    on_prompt: Callable[[], object] | None = None,
) -> dict:
    """Decode each prompt speculatively; report new tokens per target forward over all of
    them, per prompt, and per draft depth the share of verifications that accepted the token
    drafted there (where a draft loses its lead on its own predictions)."""
    sampling = SamplingConfig(temperature=0.0 if rule in ("greedy", "topk") else 1.0)
    cfg = SpecConfig(rule=rule, sampling=sampling, max_new_tokens=max_new_tokens, stop_ids=tuple(stop_ids),
                     gamma=gamma, draft_length="fixed")
    dec = SpeculativeDecoder(target, draft)
    total, per = GenerationStats(), []
    try:
        for p in prompts:
            st = GenerationStats()
            for _ in dec.generate(list(p), cfg, stats=st, constraint=constraint):
                pass
            total.add(st)
            per.append(round(st.mean_accepted_per_target_forward, 3))
            if on_prompt is not None:  # progress: a 100-prompt measurement takes minutes
                on_prompt()
    finally:
        dec.close()
    return {
        "rule": rule,
        "gamma": gamma,
        "prompts": len(per),
        "new_tokens": total.new_tokens,
        "target_forwards": total.target_forwards,
        "mean_accepted_per_target_forward": round(total.mean_accepted_per_target_forward, 3),
        "draft_acceptance_rate": round(total.acceptance_rate, 3),
        "accepted_by_depth": {d: round(r, 3) for d, r in total.accepted_by_depth().items()},
        "per_prompt": per,
    }
