"""Speculative decoding: model runners, logits processing, acceptance rules, the decoder."""
from .compat import IncompatibleModelsError, check_compatible
from .decoder import SpeculativeDecoder, TokenChunk
from .stats import GenerationStats

__all__ = ["IncompatibleModelsError", "check_compatible", "SpeculativeDecoder", "TokenChunk", "GenerationStats"]
