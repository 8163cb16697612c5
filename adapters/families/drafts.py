"""Choosing a family synthesizer's draft: none, a checkpoint, or the target's own first layers.

``"self:N"`` is self-speculation: the draft is the target's first ``N`` decoder layers
with the target's embeddings, final norm and head (:func:`voicestream.models.truncated_copy`).
It needs no training and no second checkpoint, shares the vocabulary by construction, and
is the quickest way to get a speed-up on a family nobody has distilled a draft for yet.
"""
from __future__ import annotations

from pathlib import Path

import torch

from voicestream.models import load_causal_lm, truncated_copy

__all__ = ["DraftSpec", "parse_self_draft", "resolve_draft"]

DraftSpec = "torch.nn.Module | str | Path | None"


def parse_self_draft(spec: str) -> int | None:
    """``"self:N"`` -> ``N``; any other string -> ``None``."""
    if not spec.startswith("self:"):
        return None
    value = spec[len("self:") :]
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"self-speculation draft must be 'self:N' with N >= 1 layers, got {spec!r}")
    return int(value)


def resolve_draft(
    target: torch.nn.Module,
    draft: torch.nn.Module | str | Path | None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.nn.Module | None:
    """A draft model from ``None``/``"none"``, ``"self:N"``, a checkpoint path, or a model.

    Checkpoint drafts load on ``device`` and in ``dtype`` (defaults: the target's).
    """
    if draft is None or isinstance(draft, torch.nn.Module):
        return draft
    spec = str(draft)
    if spec.lower() in ("", "none"):
        return None
    layers = parse_self_draft(spec)
    if layers is not None:
        total = int(target.config.num_hidden_layers)
        if layers >= total:
            raise ValueError(f"self:{layers} keeps every layer of a {total}-layer target; use fewer layers")
        return truncated_copy(target, layers)
    param = next(target.parameters())
    return load_causal_lm(Path(spec), device=device or param.device, dtype=dtype or param.dtype)
