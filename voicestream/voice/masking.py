"""Slot-grammar logit masking for decoding, without touching the speculative decoder.

Two ways to use the grammar at decode time:

* :func:`verify_masks` - the pure function a future logits hook in
  :mod:`voicestream.spec` would call: given the committed sequence and a drafted chunk
  it returns the ``(k + 1, V)`` masks for the target's verify rows (row ``i`` masks the
  distribution that decides ``chunk[i]``; the last row decides the bonus token).
* :class:`GrammarMaskedLM` - wraps a causal LM so every logits row it returns is already
  masked.  The decoder calls models through ``ModelRunner`` with a KV cache and only the
  *new* ids, so the wrapper recovers each row's grammar state from the cache length and
  a per-cache token history (rollbacks are cache crops; the history is cut to match).

Why masking matters for a tiny model: within a frame only one of 7 codebooks is legal,
so masking turns a 5440-way choice into a 128- or 1024-way one and removes a whole class
of errors (a token from the wrong codebook would derail the codec decoder).  Draft and
target are masked identically, so speculative sampling stays lossless with respect to
the masked target.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Sequence

import torch

from .vocab import VoiceVocab, mask_logits

__all__ = ["GrammarMaskedLM", "verify_masks"]


def verify_masks(vocab: VoiceVocab, committed: Sequence[int], chunk: Sequence[int]) -> torch.Tensor:
    """``(len(chunk) + 1, V)`` legal-id masks for verifying ``chunk`` after ``committed``.

    Row 0 constrains the token after ``committed`` (the first candidate), row ``i`` the
    token after ``chunk[:i]``.  Candidates are not required to be legal: rows after an
    illegal candidate are never used because verification stops at its rejection, so
    the grammar is stepped non-strictly past it.
    """
    g = vocab.grammar
    state = g.run(committed, strict=False)
    rows = [state]
    for t in chunk:
        state = g.step(state, t, strict=False)
        rows.append(state)
    return g.allowed[torch.tensor(rows, dtype=torch.long)]


class _History:
    """Tokens a cache holds and the grammar state after each (kept in step with crops)."""

    __slots__ = ("states",)

    def __init__(self) -> None:
        self.states: list[int] = []


class GrammarMaskedLM(torch.nn.Module):
    """A causal LM whose output logits are masked by the voice's slot grammar.

    Looks like the wrapped HF model to :class:`~voicestream.spec.SpeculativeDecoder`
    (same forward arguments, config, generation config, output embeddings, parameters).
    Safe for concurrent generations: histories are keyed by KV-cache object.
    """

    def __init__(self, model: torch.nn.Module, vocab: VoiceVocab) -> None:
        super().__init__()
        self.model = model
        self.vocab = vocab
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._histories: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    # ----- HF look-alike -------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def generation_config(self):
        return getattr(self.model, "generation_config", None)

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    # ----- forward ---------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        cache=None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
        **kwargs,
    ):
        if input_ids.shape[0] != 1:
            raise ValueError("GrammarMaskedLM decodes one sequence at a time")
        kwargs[self._cache_arg] = cache if cache is not None else kwargs.pop("past_key_values", None)
        cache_in = kwargs[self._cache_arg]
        past = int(cache_in.get_seq_length()) if cache_in is not None else 0
        out = self.model(input_ids=input_ids, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
        cache_out = out.cache if hasattr(out, "cache") else out.past_key_values
        g = self.vocab.grammar
        with self._lock:
            hist = self._histories.get(cache_in) if cache_in is not None else None
            if hist is None:
                hist = _History()
                if past:
                    raise RuntimeError("GrammarMaskedLM got a KV cache it did not create; cannot recover states")
            del hist.states[past:]
            state = hist.states[-1] if hist.states else g.start
            for t in input_ids[0].tolist():
                state = g.step(state, t, strict=False)
                hist.states.append(state)
            if cache_out is not None:
                self._histories[cache_out] = hist
            n_rows = out.logits.shape[1]
            rows = torch.tensor(hist.states[-n_rows:], dtype=torch.long)
        allowed = g.allowed[rows]  # (n_rows, V_vocab)
        logits = out.logits
        if logits.shape[-1] != allowed.shape[-1]:
            raise ValueError(f"model head size {logits.shape[-1]} != vocab size {allowed.shape[-1]}")
        out.logits = mask_logits(logits, allowed[None])
        return out
