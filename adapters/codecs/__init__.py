"""Neural codecs of third-party TTS families, behind voicestream's :class:`~voicestream.codec.Codec`.

Each wrapper owns one real model class (SNAC from the ``snac`` package, NeuCodec from
``transformers``) and is imported lazily, so ``voicestream.adapters.codecs`` never needs
those packages until a codec is built.  :func:`get_codec` is the name -> codec registry the
generic family adapter uses (``codec = "snac"`` in its config file).
"""
from __future__ import annotations

from .registry import available_codecs, get_codec, register_codec, resolve_codec

__all__ = ["NeuCodecCodec", "SnacCodec", "available_codecs", "get_codec", "register_codec", "resolve_codec"]


def __getattr__(name: str):
    if name == "SnacCodec":
        from .snac import SnacCodec

        return SnacCodec
    if name == "NeuCodecCodec":
        from .neucodec import NeuCodecCodec

        return NeuCodecCodec
    raise AttributeError(name)
