"""Field-wise median decoding for codebooks whose codes pack ordinal quantiser indices.

Why: a scalar-quantised codec field (Codec2's pitch, energy and LSP-delta indices) is
ordinal - index 12 sits between 11 and 13 - but a small LM's distribution over it is
often broad or two-humped.  Argmax then jumps between humps from frame to frame, and
sampling adds noise to every field; both smear formants.  The median of the model's
distribution is its minimum-expected-absolute-error choice along that axis (what a
regression model would output), deterministic like argmax, so greedy speculation stays
exact and a sampled request stays lossless (the row is one-hot for draft and target).

A codebook packing several fields (most significant first, e.g. two 5-bit indices in a
1024-way code) is decided field by field: the median of the first field's marginal,
then the median of the next field given that value, and so on.
"""

from __future__ import annotations

import torch

__all__ = ["FieldMedian"]


class FieldMedian:
    """A pick rule (``spec.constraint.Pick``) for one codebook whose legal ids are the
    contiguous range ``[offset, offset + 2**sum(bits))`` of the logits row."""

    def __init__(self, bits: tuple[int, ...], offset: int) -> None:
        if not bits or any(b <= 0 for b in bits):
            raise ValueError(f"field bit widths must be positive, got {bits}")
        self.bits = tuple(int(b) for b in bits)
        self.offset = int(offset)
        self.size = 1 << sum(self.bits)

    def __call__(self, row: torch.Tensor) -> int:
        p = torch.softmax(row[self.offset : self.offset + self.size].double(), -1)
        code = 0
        rest = self.size
        for b in self.bits:
            rest >>= b
            q = p.view(1 << b, rest)
            cdf = torch.cumsum(q.sum(1), 0)
            value = min(int((cdf < 0.5 * cdf[-1]).sum()), (1 << b) - 1)
            code = (code << b) | value
            p = q[value]
        return self.offset + code

    def __repr__(self) -> str:
        return f"FieldMedian(bits={self.bits}, offset={self.offset})"
