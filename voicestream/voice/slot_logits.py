"""Training-time logits over only the ids the slot grammar allows, grouped by slot.

Why: inside a frame only one codebook is legal (128 or 1024 of the 5440 ids), and six
of every seven audio positions are such in-frame slots.  Projecting those positions onto
their codebook's rows of the LM head, instead of the whole vocabulary, skips ~85 % of
the head's matmul and never materialises the ``(batch, time, 5440)`` logits tensor that
masking, softmax and their backward passes otherwise stream through memory (45 % of a
step on the 2-core CPU with random 1000-token batches; real corpus batches trained
~1.2x faster).  The loss is the same masked softmax as
:func:`voicestream.voice.data.masked_logits` (there illegal ids get ``-1e4``, i.e. zero
probability), computed exactly over the legal ids; positions in any other state
(frame boundaries, unit text, the prompt) keep full masked logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import padding_mask
from .data import masked_logits
from .vocab import GrammarState, VoiceVocab

__all__ = ["SlotGroup", "group_logits", "hidden_and_head", "position_groups", "scatter"]


@dataclass
class SlotGroup:
    """Positions sharing one legal id range: flat indices, their logits, the range's first id."""

    index: torch.Tensor  # (N,) flat positions into (B * T)
    logits: torch.Tensor  # (N, width) float32
    offset: int  # logits column j is vocabulary id offset + j


def hidden_and_head(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The decoder's last hidden states ``(B, T, H)`` and the LM head weight ``(V, H)``
    (a right-padded batch runs unmasked, :func:`~voicestream.models.padding_mask`; every
    loss here gives pads weight 0)."""
    out = model.get_decoder()(input_ids=input_ids, attention_mask=padding_mask(attention_mask), use_cache=False)
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("slot-restricted logits assume a bias-free LM head")
    return out.last_hidden_state, head.weight


def group_logits(hidden: torch.Tensor, head: torch.Tensor, states: torch.Tensor, vocab: VoiceVocab,
                 index_groups: list[tuple[torch.Tensor, int, int]] | None = None) -> list[SlotGroup]:
    """Logits of every position of ``hidden`` (B, T, H) under the grammar ``states`` (B, T).

    In-frame slot positions get logits over their codebook only; all others full logits
    with illegal ids masked.  ``index_groups`` (from :func:`position_groups`) lets a
    caller reuse the grouping for a second model (the distillation target).
    """
    flat = hidden.reshape(-1, hidden.shape[-1])
    groups = index_groups if index_groups is not None else position_groups(states, vocab)
    allowed = vocab.grammar.allowed
    out = []
    for idx, lo, hi in groups:
        h = flat.index_select(0, idx)
        if lo < 0:  # the "other states" group: full masked logits
            logits = masked_logits((h @ head.T).float(), states.reshape(-1).index_select(0, idx), allowed)
            out.append(SlotGroup(idx, logits, 0))
        else:
            out.append(SlotGroup(idx, (h @ head[lo:hi].T).float(), lo))
    return out


def position_groups(states: torch.Tensor, vocab: VoiceVocab) -> list[tuple[torch.Tensor, int, int]]:
    """``[(flat indices, lo, hi)]``: one group per in-frame slot, and one (``lo = -1``) for the rest."""
    flat = states.reshape(-1)
    groups = []
    rest = torch.ones_like(flat, dtype=torch.bool)
    for k in range(1, vocab.tokens_per_frame):
        sel = flat == int(GrammarState.SLOT) + k
        rest &= ~sel
        idx = sel.nonzero().squeeze(1)
        if idx.numel():
            lo, hi = vocab.slot_ranges[k]
            groups.append((idx, lo, hi))
    idx = rest.nonzero().squeeze(1)
    if idx.numel():
        groups.append((idx, -1, -1))
    return groups


def scatter(groups: list[SlotGroup], values: list[torch.Tensor], n: int) -> torch.Tensor:
    """Per-group per-position values -> one flat ``(n,)`` tensor."""
    out = values[0].new_zeros(n)
    for g, v in zip(groups, values):
        out = out.index_put((g.index,), v)
    return out

