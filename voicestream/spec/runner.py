"""A causal LM together with its KV cache: prefill, extend by k tokens, roll back.

Speculative decoding constantly moves a model's cache forward by a drafted chunk and
back after a rejection. The runner hides the transformers cache API behind three verbs
and keeps the list of tokens the cache holds, so callers can simply say "bring the cache
to this sequence" (:meth:`ModelRunner.advance_to`) and the runner crops to the common
prefix and feeds only what is new.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):  # the usual case, compared at C speed (called every step)
        return n
    return next(i for i in range(n) if a[i] != b[i])


class ModelRunner:
    """Owns one KV cache for one sequence of one model (the model itself is shared)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.cache = None
        self.tokens: list[int] = []
        self.forwards = 0
        self._last_logits: torch.Tensor | None = None
        params = inspect.signature(model.forward).parameters
        self._has_logits_to_keep = "logits_to_keep" in params
        # transformers >= 5.2x names the cache argument `cache`; older releases `past_key_values`
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # --- the three verbs -------------------------------------------------------------
    def extend(
        self, tokens: Sequence[int], *, last_only: bool = False, span: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Feed ``tokens`` after the cached ones; returns float32 logits, (len, V) or (1, V).

        ``span`` (with ``last_only``): only ids in ``[lo, hi)`` can be chosen next, so a
        runner may compute just those logits and leave the rest ``-inf``
        (:func:`~voicestream.spec.constraint.legal_span`); this one computes them all.
        """
        if not tokens:
            raise ValueError("extend() needs at least one token")
        logits = self._forward(list(tokens), last_only, span if last_only else None)
        self.tokens.extend(int(t) for t in tokens)
        self.forwards += 1
        self._last_logits = logits[-1]
        return logits

    def _forward(self, tokens: list[int], last_only: bool, span: tuple[int, int] | None = None) -> torch.Tensor:
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        kwargs = {}
        if last_only and self._has_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        kwargs[self._cache_arg] = self.cache
        out = self.model(input_ids=ids, use_cache=True, **kwargs)
        self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
        logits = out.logits[0].float()
        return logits[-1:] if last_only else logits

    def rollback(self, length: int) -> None:
        """Forget everything after the first ``length`` tokens."""
        if length < 0 or length > len(self.tokens):
            raise ValueError(f"cannot roll back to {length}; cache holds {len(self.tokens)} tokens")
        drop = len(self.tokens) - length
        if drop == 0:
            return
        self._crop(length, drop)
        del self.tokens[length:]
        self._last_logits = None

    def _crop(self, length: int, drop: int) -> None:
        if length == 0:
            self.cache = None
        else:
            # crop(-n) removes the last n positions in transformers 4.x and 5.x alike
            self.cache.crop(-drop)

    def release(self) -> None:
        """Free the KV cache (the model stays loaded)."""
        self.cache = None
        self.tokens = []
        self._last_logits = None

    # --- convenience ------------------------------------------------------------------
    def prefill(self, prompt: Sequence[int]) -> torch.Tensor:
        """Start a fresh sequence; returns the logits after the prompt, shape (V,)."""
        self.release()
        return self.extend(prompt, last_only=True)[-1]

    def common_prefix(self, seq: Sequence[int]) -> int:
        return common_prefix(self.tokens, seq)

    def advance_to(self, seq: Sequence[int], *, span: tuple[int, int] | None = None) -> torch.Tensor:
        """Make the cache hold exactly ``seq`` and return the next-token logits (V,).

        Crops whatever diverges from ``seq`` and feeds only the new tokens; when the cache
        already holds ``seq`` and its last logits are known, this costs no forward.
        """
        if not seq:
            raise ValueError("advance_to() needs a non-empty sequence")
        keep = self.common_prefix(seq)
        if keep == len(seq) == len(self.tokens) and self._last_logits is not None:
            return self._last_logits
        keep = min(keep, len(seq) - 1)
        self.rollback(keep)
        return self.extend(seq[keep:], last_only=True, span=span)[-1]

    def __len__(self) -> int:
        return len(self.tokens)
