"""voicestream: speech speculative decoding for streaming autoregressive TTS."""
from .config import SamplingConfig, SpecConfig
from .engine import SpeculativeEngine, TokenStream
from .spec import GenerationStats, IncompatibleModelsError, SpeculativeDecoder, TokenChunk

__version__ = "0.1.0"
__all__ = [
    "SamplingConfig",
    "SpecConfig",
    "SpeculativeEngine",
    "TokenStream",
    "SpeculativeDecoder",
    "TokenChunk",
    "GenerationStats",
    "IncompatibleModelsError",
]
