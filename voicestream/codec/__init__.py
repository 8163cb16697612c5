"""Audio codecs and their flat-token view for the codec-token LMs."""

from .base import Codec, CodecSpec, StreamingDecoder, TokenLayoutError
from .resample import ResamplerConfig, resample
from .streaming import OverlapConfig, OverlapStreamingDecoder, measure_receptive_field

__all__ = [
    "Codec",
    "Codec2Codec",
    "CodecSpec",
    "OverlapConfig",
    "OverlapStreamingDecoder",
    "ResamplerConfig",
    "StreamingDecoder",
    "TokenLayoutError",
    "default_codec",
    "measure_receptive_field",
    "resample",
]


def __getattr__(name: str):
    # Codec2 is imported on first use so `import voicestream.codec` never needs pycodec2.
    if name == "Codec2Codec":
        from .codec2 import Codec2Codec

        return Codec2Codec
    raise AttributeError(name)


def default_codec():
    """The built-in voice's codec (Codec2 3200, 7 tokens per 20 ms frame)."""
    from .codec2 import Codec2Codec

    return Codec2Codec()
