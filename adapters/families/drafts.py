"""Choosing a family synthesizer's draft: none, a checkpoint, or the target's own first layers.

``"self:N"`` is self-speculation: the draft is the target's first ``N`` decoder layers
with the target's embeddings, final norm and head (:func:`voicestream.models.truncated_copy`).
It needs no training and no second checkpoint, shares the vocabulary by construction, and
is the quickest way to get a speed-up on a family nobody has distilled a draft for yet.
The resolution itself lives in :mod:`voicestream.models` (the built-in voice uses it too).
"""
from __future__ import annotations

from voicestream.models import parse_self_draft, resolve_draft

__all__ = ["DraftSpec", "parse_self_draft", "resolve_draft"]

DraftSpec = "torch.nn.Module | str | Path | None"
