"""voicestream: speech speculative decoding for streaming autoregressive TTS.

Names are imported lazily, so light users (``voicestream.client``, the protocol, configs)
do not pay for importing torch and transformers.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SamplingConfig": "voicestream.config",
    "SpecConfig": "voicestream.config",
    "SpeculativeEngine": "voicestream.engine",
    "TokenStream": "voicestream.engine",
    "SpeculativeDecoder": "voicestream.spec",
    "TokenChunk": "voicestream.spec",
    "GenerationStats": "voicestream.spec",
    "IncompatibleModelsError": "voicestream.spec",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voicestream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
