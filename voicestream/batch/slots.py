"""A batch of sequences in one padded KV cache: each live session owns a slot (a row).

Why slots and not transformers' ``DynamicCache``: speculative decoding rolls every
session back by a different amount after each verification, and sessions join and leave
between steps. A preallocated (layers, slots, kv_heads, capacity, head_dim) tensor with
a length per slot makes both free -- rolling back is lowering a number, leaving is
moving the last slot's rows into the hole -- and one forward serves every slot at once,
each with its own number of new tokens (ragged, right-padded) at its own positions.

Positions past a slot's length hold stale keys; the attention mask never lets a query
see them, and the next write overwrites them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..spec.lean_runner import LeanModel, lean_supported

__all__ = ["SlotModel", "UnsupportedModelError"]


class UnsupportedModelError(ValueError):
    """Batched decoding needs a plain Llama/Qwen2/Mistral causal LM (the lean forward)."""


class _SlotKV:
    """The cache as one forward sees it: writes at each row's positions, reads [0, width)."""

    def __init__(self, model: "SlotModel", slot_ids: torch.Tensor, index: torch.Tensor | slice,
                 positions: torch.Tensor, width: int) -> None:
        self.m, self.index, self.positions, self.width = model, index, positions, width
        self.rows = slot_ids[:, None].expand_as(positions)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        # (B, kvh, q, hd) -> (B, q, kvh, hd) at [slot, :, position]
        self.m.k[layer][self.rows, :, self.positions] = k.transpose(1, 2)
        self.m.v[layer][self.rows, :, self.positions] = v.transpose(1, 2)

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        # a slice of contiguous slots is a view; a tensor of scattered slots gathers a copy
        return self.m.k[layer][self.index, :, : self.width], self.m.v[layer][self.index, :, : self.width]


class SlotModel:
    """One model's weights (shared) and a slot-allocated KV cache for many sequences."""

    def __init__(self, model: torch.nn.Module, *, slots: int = 4, capacity: int = 512) -> None:
        if not lean_supported(model):
            raise UnsupportedModelError(
                f"batched decoding supports plain Llama/Qwen2/Mistral causal LMs; got {type(model).__name__}"
            )
        self.lean = LeanModel.of(model)
        self.device = self.lean.device
        self.lengths: list[int] = []  # per live slot: how many positions hold valid keys
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self._slots = 0
        self._capacity = 0
        self._reserve(slots, capacity)

    # --- storage ------------------------------------------------------------------------
    @property
    def live(self) -> int:
        return len(self.lengths)

    def _reserve(self, slots: int, capacity: int) -> None:
        if self.k is not None and slots <= self._slots and capacity <= self._capacity:
            return
        lm = self.lean
        new_slots = max(slots, self._slots)
        new_cap = max(capacity, 2 * self._capacity if capacity > self._capacity else self._capacity, 256)
        shape = (len(lm.layers), new_slots, lm.kv_heads, new_cap, lm.head_dim)
        k = torch.zeros(shape, dtype=lm.dtype, device=self.device)
        v = torch.zeros(shape, dtype=lm.dtype, device=self.device)
        if self.k is not None and self.lengths:
            n, used = self.live, max(self.lengths)
            k[:, :n, :, :used] = self.k[:, :n, :, :used]
            v[:, :n, :, :used] = self.v[:, :n, :, :used]
        self.k, self.v, self._slots, self._capacity = k, v, new_slots, new_cap

    def add(self) -> int:
        """A new empty slot at the end; returns its index."""
        self._reserve(self.live + 1, self._capacity)
        self.lengths.append(0)
        return self.live - 1

    def remove(self, slot: int) -> int | None:
        """Free ``slot`` by moving the last slot into it; returns the moved slot's old index."""
        last = self.live - 1
        if not 0 <= slot <= last:
            raise IndexError(f"no live slot {slot}")
        moved = None
        if slot != last:
            used = self.lengths[last]
            self.k[:, slot, :, :used] = self.k[:, last, :, :used]
            self.v[:, slot, :, :used] = self.v[:, last, :, :used]
            self.lengths[slot] = used
            moved = last
        self.lengths.pop()
        return moved

    def truncate(self, slot: int, length: int) -> None:
        if not 0 <= length <= self.lengths[slot]:
            raise ValueError(f"slot {slot} holds {self.lengths[slot]} positions; cannot keep {length}")
        self.lengths[slot] = length

    def clear(self) -> None:
        self.lengths.clear()

    # --- the forward --------------------------------------------------------------------
    @torch.no_grad()
    def forward(
        self, slots: Sequence[int], tokens: Sequence[Sequence[int]], *, last_only: bool = False
    ) -> list[torch.Tensor]:
        """Append ``tokens[i]`` to slot ``slots[i]`` (possibly none) in one batched forward.

        Returns per row the float32 logits after each new token, (n_i, V), or with
        ``last_only`` after the last one, (V,) (rows with no new tokens get None).
        """
        if len(slots) != len(tokens):
            raise ValueError("one token list per slot")
        if not slots:
            return []
        counts = [len(t) for t in tokens]
        q = max(max(counts), 1)
        starts = [self.lengths[s] for s in slots]
        width = max(starts) + q
        self._reserve(self._slots, width)
        dev = self.device
        ids = torch.zeros(len(slots), q, dtype=torch.long, device=dev)
        for i, t in enumerate(tokens):
            if t:
                ids[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.long)
        start_t = torch.tensor(starts, device=dev)
        positions = start_t[:, None] + torch.arange(q, device=dev)[None]  # padded queries too
        # query t of row b sees keys [0, start_b + t]: its own prefix and this step's tokens
        mask = torch.arange(width, device=dev)[None, None] <= positions[:, :, None]
        slot_ids = torch.tensor(list(slots), device=dev)
        contiguous = list(slots) == list(range(slots[0], slots[0] + len(slots)))
        index = slice(slots[0], slots[0] + len(slots)) if contiguous else slot_ids
        kv = _SlotKV(self, slot_ids, index, positions, width)
        pick = torch.tensor([max(c, 1) - 1 for c in counts], device=dev) if last_only else None
        logits = self.lean.run(ids, positions, mask[:, None], kv, pick)
        for s, c in zip(slots, counts):
            self.lengths[s] += c
        if last_only:
            return [logits[i] if c else None for i, c in enumerate(counts)]
        return [logits[i, :c] for i, c in enumerate(counts)]
