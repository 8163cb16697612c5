"""Text front end: normalisation, character tokenizer, streaming segmentation."""

from .normalize import EmptyTextError, NormalizerConfig, normalize_text
from .segment import SegmenterConfig, SentenceSegmenter
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, CharTokenizer, UnknownCharacterError

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "CharTokenizer",
    "EmptyTextError",
    "NormalizerConfig",
    "SegmenterConfig",
    "SentenceSegmenter",
    "UnknownCharacterError",
    "normalize_text",
]
