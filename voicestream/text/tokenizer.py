"""Character-level tokenizer for the built-in voice.

Why characters: a small TTS LM learns letter-to-sound from data without a
(GPL) phonemiser, and a 37-symbol vocabulary keeps its embedding tiny.

Id layout (stable; models depend on it)::

    0  <pad>   padding for batches
    1  <bos>   start of text
    2  <eos>   end of text
    3  " "     space
    4  "'"     apostrophe
    5-10       , . ? ! ; :
    11-36      a-z

Digits never reach the tokenizer: the normaliser spells them out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .normalize import NormalizerConfig, normalize_text

__all__ = ["ALPHABET", "BOS_ID", "EOS_ID", "PAD_ID", "SPECIAL_TOKENS", "CharTokenizer", "UnknownCharacterError"]

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
ALPHABET = " '" + ",.?!;:" + "abcdefghijklmnopqrstuvwxyz"


class UnknownCharacterError(ValueError):
    """A character outside :data:`ALPHABET` reached :meth:`CharTokenizer.encode` un-normalised."""


@dataclass(frozen=True)
class CharTokenizer:
    """Text <-> ids over :data:`ALPHABET`, normalising first by default."""

    normalizer: NormalizerConfig = field(default_factory=NormalizerConfig)

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_TOKENS) + len(ALPHABET)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    def encode(self, text: str, *, add_special: bool = True, normalize: bool = True) -> list[int]:
        """Text -> ids; ``<bos> ... <eos>`` when ``add_special``.

        With ``normalize=False`` the text must already be in the alphabet
        (raises :class:`UnknownCharacterError` otherwise) - useful when the
        caller normalised once and wants to avoid doing it twice.
        """
        if normalize:
            text = normalize_text(text, self.normalizer)
        ids = []
        for i, ch in enumerate(text):
            idx = _CHAR_TO_ID.get(ch)
            if idx is None:
                raise UnknownCharacterError(f"character {ch!r} at {i} is not in the alphabet")
            ids.append(idx)
        return [BOS_ID, *ids, EOS_ID] if add_special else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; special ids are skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i < len(SPECIAL_TOKENS):
                continue
            if i >= self.vocab_size:
                raise ValueError(f"id {i} outside vocab of size {self.vocab_size}")
            out.append(ALPHABET[i - len(SPECIAL_TOKENS)])
        return "".join(out)


_CHAR_TO_ID = {ch: i + len(SPECIAL_TOKENS) for i, ch in enumerate(ALPHABET)}
