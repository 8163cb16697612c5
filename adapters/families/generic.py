"""Any Hugging Face causal LM + any registered codec, described by a small config file.

For a codec-token TTS model without a dedicated adapter: say where its audio ids are,
how its prompt looks and which ids start/stop audio, and it runs with speculative
decoding, the audio grammar and streaming decode like the built-in families.

Config (TOML or JSON; the same keys)::

    name = "my-tts"
    prompt = [{token = "<|bos|>"}, "{voice}: {text}", 50261]   # text pieces, ids, named tokens
    text_encoding = "tokenizer"      # or "bytes": UTF-8 byte b -> id byte_offset + b
    start_ids = [50261]              # audio-start marker(s); the prompt should end with one
    stop_ids = [50262]               # end of speech (allowed at frame boundaries)

    [audio]
    codec = "snac"                   # a name from voicestream.adapters.codecs
    codec_options = {path = "snac_24khz"}   # relative paths: from the config file
    layout = "per_slot"              # position p: offset + p * slot_stride + code
    offset = 50263
    # slot_stride = 4096             # default: the largest codebook
    # layout = "codec_flat"          # offset + the codec's own flat id (shared codebooks share ids)
    # slot_offsets = [...]           # or every position's offset explicitly
    # codec_slots = [0, 1, 3, 4, 2, 5, 6]   # LM position -> codec slot (interleaves)

    [sampling]                       # defaults for the sampling rules, and the length budget
    temperature = 0.7
    top_p = 0.9
    repetition_penalty = 1.1
    max_seconds = 20

    [window]                         # streaming geometry, for windowed (neural) codecs
    context_frames = 2
    lookahead_frames = 2
"""
from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicestream.codec.base import Codec
from voicestream.codec.streaming import OverlapConfig

from ..codecs.registry import get_codec, resolve_codec
from .base import FamilyAdapter, FamilyDefaults, ensure_ids_fit
from .layout import AudioLayout
from .text import TextEncoder, load_tokenizer

__all__ = ["CONFIG_NAMES", "GenericAdapter", "GenericFamilyConfig"]

CONFIG_NAMES = ("voicestream_family.toml", "voicestream_family.json")  # looked up in the target dir


@dataclass(frozen=True)
class GenericFamilyConfig:
    """A codec-token TTS family in data (see the module docstring for the file format)."""

    codec: str
    start_ids: tuple[int, ...]
    stop_ids: tuple[int, ...]
    prompt: tuple[Any, ...] = ("{text}",)
    name: str = "generic"
    voice: str | None = None
    text_encoding: str = "tokenizer"
    byte_offset: int = 0
    codec_options: dict = field(default_factory=dict)
    layout: str = "per_slot"
    offset: int | None = None
    slot_stride: int | None = None
    slot_offsets: tuple[int, ...] = ()
    codec_slots: tuple[int, ...] = ()
    tokens_per_frame: int | None = None
    defaults: FamilyDefaults = field(default_factory=FamilyDefaults)
    window: OverlapConfig | None = None
    max_context: int | None = None

    def __post_init__(self) -> None:
        if self.text_encoding not in ("tokenizer", "bytes"):
            raise ValueError(f"text_encoding must be 'tokenizer' or 'bytes', got {self.text_encoding!r}")
        if self.layout not in ("per_slot", "codec_flat"):
            raise ValueError(f"layout must be 'per_slot' or 'codec_flat', got {self.layout!r}")
        if not self.slot_offsets and self.offset is None:
            raise ValueError("give the audio ids: [audio] offset (with layout) or slot_offsets")
        if not self.start_ids:
            raise ValueError("start_ids must name the audio-start marker(s)")
        for item in self.prompt:
            if not (isinstance(item, (int, str)) or (isinstance(item, dict) and set(item) == {"token"})):
                raise ValueError(f"prompt items are text, ids or {{token = NAME}}; got {item!r}")

    # ----- files -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, *, base_dir: Path | None = None) -> GenericFamilyConfig:
        data = dict(data)
        audio = dict(data.pop("audio", {}))
        sampling = dict(data.pop("sampling", {}))
        window = data.pop("window", None)
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {**data, **audio}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown family config keys: {unknown}")
        options = dict(kwargs.get("codec_options", {}))
        if base_dir is not None and isinstance(options.get("path"), str) and not Path(options["path"]).is_absolute():
            options["path"] = str(base_dir / options["path"])
        kwargs["codec_options"] = options
        for key in ("start_ids", "stop_ids", "prompt", "slot_offsets", "codec_slots"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        kwargs["defaults"] = FamilyDefaults(**sampling)
        kwargs["window"] = OverlapConfig(**window) if window else None
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> GenericFamilyConfig:
        path = Path(path)
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        else:
            raise ValueError(f"family config must be .toml or .json, got {path.name}")
        return cls.from_dict(data, base_dir=path.parent)

    # ----- derived ---------------------------------------------------------------------
    def audio_layout(self, codec: Codec) -> AudioLayout:
        spec = codec.spec
        slots = self.codec_slots or tuple(range(spec.tokens_per_frame))
        if self.tokens_per_frame is not None and self.tokens_per_frame != spec.tokens_per_frame:
            raise ValueError(f"tokens_per_frame={self.tokens_per_frame} but codec {spec.name} has {spec.tokens_per_frame}")
        if self.slot_offsets:
            offsets = self.slot_offsets
        elif self.layout == "codec_flat":
            offsets = tuple(self.offset + spec.codebook_offsets[spec.slot_codebooks[s]] for s in slots)
        else:
            stride = self.slot_stride or max(spec.codebook_sizes)
            offsets = tuple(self.offset + p * stride for p in range(len(slots)))
        return AudioLayout.for_codec(spec, offsets, slots)


class GenericAdapter(FamilyAdapter):
    """A family from a :class:`GenericFamilyConfig`."""

    name = "generic"

    def __init__(self, config: GenericFamilyConfig, codec: Codec, tokenizer=None) -> None:
        self.config = config
        self.name = config.name  # type: ignore[misc]  # per-instance family name
        self.codec = codec
        self.layout = config.audio_layout(codec)
        self.start_ids = tuple(int(t) for t in config.start_ids)
        self.stop_ids = tuple(int(t) for t in config.stop_ids)
        self.defaults = config.defaults
        self.voice = config.voice
        self.max_context = config.max_context
        self.window = config.window
        if self.window is not None and "window" not in inspect.signature(codec.streaming_decoder).parameters:
            raise ValueError(f"codec {codec.spec.name} streams frame by frame; it takes no [window]")
        self._encode, self._token_id, prefix = self._text_side(config, tokenizer)
        self._pieces: list[Any] = list(prefix)
        for item in config.prompt:
            self._pieces.append(self._token_id(item["token"]) if isinstance(item, dict) else item)

    @staticmethod
    def _text_side(config: GenericFamilyConfig, tokenizer) -> tuple[Callable, Callable, tuple[int, ...]]:
        if config.text_encoding == "bytes":
            def no_names(name: str) -> int:
                raise ValueError(f"prompt names token {name!r}, but text_encoding='bytes' has no vocabulary")

            return (lambda s: [config.byte_offset + b for b in s.encode("utf-8")]), no_names, ()
        if tokenizer is None:
            raise ValueError("text_encoding='tokenizer' needs the checkpoint's tokenizer")
        enc = TextEncoder(tokenizer)
        return enc.encode, enc.token_id, enc.prefix_specials

    def build_prompt(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._pieces:
            if isinstance(piece, int):
                ids.append(piece)
            else:
                ids.extend(self._encode(piece.format(text=text, voice=self.voice or "")))
        return ids

    def constraint(self, vocab_size: int, device="cpu"):
        ensure_ids_fit([self.layout.max_id, *self.start_ids, *self.stop_ids], vocab_size, f"family {self.name!r}")
        return super().constraint(vocab_size, device)

    @classmethod
    def load(
        cls, target_dir, *, tokenizer=None, codec=None, device="cpu", dtype=None, config=None, **overrides
    ) -> GenericAdapter:
        """``config``: a :class:`GenericFamilyConfig`, a file, or ``None`` for the target dir's
        ``voicestream_family.toml``/``.json``; ``codec`` overrides the config's codec weights;
        ``overrides`` replace config fields (``voice="bob"``; unknown names raise)."""
        target_dir = Path(target_dir)
        if config is None:
            found = [target_dir / n for n in CONFIG_NAMES if (target_dir / n).exists()]
            if not found:
                raise FileNotFoundError(f"no family config: pass config=FILE or add {CONFIG_NAMES[0]} to {target_dir}")
            config = found[0]
        if not isinstance(config, GenericFamilyConfig):
            config = GenericFamilyConfig.from_file(config)
        if overrides:
            config = dataclasses.replace(config, **overrides)
        if codec is not None:
            built = resolve_codec(codec, config.codec, device=device, dtype=dtype)
        else:
            options = dict(config.codec_options)
            options.setdefault("device", device)
            if dtype is not None:
                options.setdefault("dtype", dtype)
            built = get_codec(config.codec, **options)
        if tokenizer is None and config.text_encoding == "tokenizer":
            tokenizer = load_tokenizer(target_dir)
        return cls(config, built, tokenizer)
