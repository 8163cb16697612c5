"""Codec registry: a codec name (as written in a family config file) -> a built codec.

Factories take keyword options only, so a config file can hold them verbatim
(``codec = "snac"``, ``codec_options = {path = "/models/snac_24khz"}``).
"""
from __future__ import annotations

from collections.abc import Callable

from voicestream.codec.base import Codec

__all__ = ["available_codecs", "get_codec", "register_codec", "resolve_codec"]

CodecFactory = Callable[..., Codec]
_FACTORIES: dict[str, CodecFactory] = {}


def register_codec(name: str, factory: CodecFactory) -> None:
    """Make ``get_codec(name, **options)`` call ``factory(**options)``."""
    _FACTORIES[name] = factory


def available_codecs() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def get_codec(name: str, **options) -> Codec:
    """Build the codec registered as ``name``.

    Built-ins: ``codec2`` (voicestream's Codec2 3200), ``snac`` (``path=DIR`` with the
    SNAC ``config.json`` + weights, or ``random=True`` [+ ``config``] for tests),
    ``neucodec`` (``path=DIR`` of a transformers NeuCodec checkpoint, or ``random=True``).
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; registered: {', '.join(available_codecs())}") from None
    return factory(**options)


def _codec2(*, device=None, dtype=None, **options) -> Codec:
    from voicestream.codec import Codec2Codec

    return Codec2Codec(**options)  # a C library: no device or dtype to place


def _snac(*, path=None, random: bool = False, device="cpu", **options) -> Codec:
    from .snac import SnacCodec

    if path is not None:
        return SnacCodec.load(path, device=device, **options)
    if random:
        return SnacCodec.random(device=device, **options)
    raise ValueError("codec 'snac' needs path=DIR (config.json + weights) or random=True")


def _neucodec(*, path=None, random: bool = False, device="cpu", **options) -> Codec:
    from .neucodec import NeuCodecCodec

    if path is not None:
        return NeuCodecCodec.load(path, device=device, **options)
    if random:
        return NeuCodecCodec.random(device=device, **options)
    raise ValueError("codec 'neucodec' needs path=DIR (a transformers NeuCodec checkpoint) or random=True")


register_codec("codec2", _codec2)
register_codec("snac", _snac)
register_codec("neucodec", _neucodec)


def resolve_codec(codec, name: str, *, device="cpu", dtype=None, hint: str = "") -> Codec:
    """A family's codec from what a caller passed: a :class:`Codec`, ``"random"`` (real
    architecture, random weights: examples and tests), or a local directory of weights."""
    if isinstance(codec, Codec):
        return codec
    if codec is None:
        raise ValueError(f"the {name!r} codec is needed: pass codec=DIR with its weights{hint}")
    if str(codec) == "random":
        return get_codec(name, random=True, device=device)
    options = {"dtype": dtype} if dtype is not None else {}
    return get_codec(name, path=codec, device=device, **options)
