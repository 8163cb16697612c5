"""Codec-token input noise for training: the discrete counterpart of Tacotron's pre-net dropout.

Why: under teacher forcing the previous frame is the best single predictor of the next
one, so a small voice LM learns to continue the sound it is making and to ignore the
phone token placed before the new frames.  At synthesis its own, imperfect frames are the
context, and it drifts into babble (measured here: with the teacher's phones and
durations forced, the LM's codec tokens still gave 84 % WER).  Replacing a fraction of the
*input* codec tokens with random codes of the same codebook makes the recent frames
unreliable evidence, so the model has to lean on the phone and text context; the labels
stay the true tokens.  Only codec ids are touched: text, phones, durations and markers
are the plan and stay exact, and the grammar states (hence the loss groups) are
unchanged because a code is only ever swapped within its own slot's range.
"""

from __future__ import annotations

import torch

from .vocab import VoiceVocab

__all__ = ["CodecInputNoise"]


class CodecInputNoise:
    """Swaps each codec input token for a uniform code of its own codebook with probability ``p``."""

    def __init__(self, vocab: VoiceVocab, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"input noise probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.codec_size = int(vocab.codec_vocab_size)
        lo = torch.zeros(self.codec_size, dtype=torch.long)
        size = torch.zeros(self.codec_size, dtype=torch.long)
        for a, b in vocab.slot_ranges:
            lo[a:b], size[a:b] = a, b - a
        if bool((size == 0).any()):
            raise ValueError("the vocabulary's slot ranges do not cover every codec id")
        self._lo, self._size = lo, size

    def __call__(self, input_ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A noised copy of ``input_ids`` (B, T); ``input_ids`` itself is left alone."""
        if self.p == 0.0:
            return input_ids
        codec = input_ids < self.codec_size
        u = torch.rand(input_ids.shape, generator=generator, device="cpu").to(input_ids.device)
        hit = codec & (u < self.p)
        if not bool(hit.any()):
            return input_ids
        ids = input_ids[hit]
        lo, size = self._lo.to(ids.device)[ids], self._size.to(ids.device)[ids]
        r = torch.rand(ids.shape, generator=generator, device="cpu").to(ids.device)
        out = input_ids.clone()
        out[hit] = lo + (r * size).long().clamp_max(size - 1)
        return out
