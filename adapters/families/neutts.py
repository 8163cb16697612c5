"""NeuTTS (Neuphonic; NeuTTS-Air: Qwen2.5-0.5B backbone, NeuCodec 50 Hz / 24 kHz codec).

Format (from NeuTTS' public inference code): the text is phonemised with espeak (en-us,
punctuation and stress kept, whitespace collapsed), and the prompt is::

    user: Convert the text to speech:<|TEXT_PROMPT_START|>{ref phones} {phones}<|TEXT_PROMPT_END|>
    assistant:<|SPEECH_GENERATION_START|>{reference codes as <|speech_N|>}

after which the model continues with ``<|speech_N|>`` tokens (one NeuCodec code per 20 ms
frame) and ends with ``<|SPEECH_GENERATION_END|>``.  NeuTTS clones the voice of a
reference clip: :class:`NeuTTSVoice` holds its codes and transcript.  Every special id is
looked up in the checkpoint's tokenizer by name; the speech ids must be contiguous
(``<|speech_N|>`` = ``<|speech_0|>`` + N), which is checked at load.

Streaming follows NeuTTS' own: 50 frames of look-back, 5 of look-ahead, one frame blended.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicestream.codec.base import Codec
from voicestream.codec.streaming import OverlapConfig

from ..codecs.registry import resolve_codec
from .base import FamilyAdapter, FamilyDefaults, as_window
from .layout import AudioLayout
from .text import TextEncoder, load_tokenizer

__all__ = [
    "NEUTTS_MARKERS",
    "NEUTTS_SPEECH_TOKENS",
    "EspeakPhonemizer",
    "NeuTTSAdapter",
    "NeuTTSVoice",
]

NEUTTS_MARKERS = (
    "<|TEXT_PROMPT_START|>",
    "<|TEXT_PROMPT_END|>",
    "<|SPEECH_GENERATION_START|>",
    "<|SPEECH_GENERATION_END|>",
)
NEUTTS_SPEECH_TOKENS = 65536  # NeuCodec FSQ: 8 dimensions x 4 levels

# NeuTTS' reference sampling: temperature 1.0, top-k 50; context of 2048 tokens
NEUTTS_DEFAULTS = FamilyDefaults(temperature=1.0, top_k=50, max_seconds=30.0, seconds_per_char=0.1, floor_s=2.0)
NEUTTS_MAX_CONTEXT = 2048


@dataclass(frozen=True)
class NeuTTSVoice:
    """A reference clip for voice cloning: its NeuCodec codes and its transcript."""

    codes: tuple[int, ...]
    text: str
    name: str = "reference"

    def __post_init__(self) -> None:
        codes = tuple(int(c) for c in self.codes)
        if not codes or min(codes) < 0 or max(codes) >= NEUTTS_SPEECH_TOKENS:
            raise ValueError(f"reference codes must be non-empty NeuCodec codes in [0, {NEUTTS_SPEECH_TOKENS})")
        object.__setattr__(self, "codes", codes)

    @classmethod
    def from_files(cls, stem: str | Path, *, text: str | None = None) -> NeuTTSVoice:
        """``stem.pt`` / ``stem.npy`` / ``stem.codes.txt`` (codes) and ``stem.txt`` (transcript).

        NeuTTS' samples ship as ``dave.pt`` + ``dave.txt``, so ``from_files("samples/dave")``.
        """
        stem = Path(stem)
        for suffix in (".pt", ".npy", ".codes.txt"):
            file = stem.with_name(stem.name + suffix)
            if file.exists():
                break
        else:
            raise FileNotFoundError(f"no reference codes at {stem}.pt / .npy / .codes.txt")
        if suffix == ".pt":
            import torch

            codes = np.asarray(torch.load(file, map_location="cpu", weights_only=True)).reshape(-1)
        elif suffix == ".npy":
            codes = np.load(file).reshape(-1)
        else:
            codes = np.asarray(file.read_text().split(), dtype=np.int64)
        if text is None:
            text = stem.with_name(stem.name + ".txt").read_text().strip()
        return cls(tuple(int(c) for c in codes), text, stem.name)


class EspeakPhonemizer:
    """NeuTTS' text front end: espeak-ng via the ``phonemizer`` package (apt: espeak-ng).

    Built on first use; one backend shared under a lock (espeak is not re-entrant).
    """

    def __init__(self, language: str = "en-us") -> None:
        self.language = language
        self._backend = None
        self._lock = threading.Lock()

    def __call__(self, text: str) -> str:
        with self._lock:
            if self._backend is None:
                try:
                    from phonemizer.backend import EspeakBackend
                except ImportError as exc:  # pragma: no cover - depends on the environment
                    raise ImportError(
                        "NeuTTS needs phonemes: pip install 'voicestream[neutts]' and apt-get install espeak-ng "
                        "(or pass phonemize=callable)"
                    ) from exc
                self._backend = EspeakBackend(language=self.language, preserve_punctuation=True, with_stress=True)
            phones = self._backend.phonemize([text])[0]
        return " ".join(phones.split())


class NeuTTSAdapter(FamilyAdapter):
    """NeuTTS prompt format (phonemes + reference clip), NeuCodec layout, NeuTTS streaming.

    ``phonemize``: text -> phoneme string (default :class:`EspeakPhonemizer`); ``voice``:
    the reference clip (without one the prompt has no reference, which NeuTTS was not
    trained for -- fine for random-weight tests, poor for real weights).
    """

    name = "neutts"

    def __init__(
        self,
        tokenizer,
        codec: Codec,
        *,
        voice: NeuTTSVoice | None = None,
        phonemize: Callable[[str], str] | None = None,
        window: dict | OverlapConfig | None = None,
        defaults: FamilyDefaults = NEUTTS_DEFAULTS,
        max_context: int | None = NEUTTS_MAX_CONTEXT,
    ) -> None:
        spec = codec.spec
        if spec.tokens_per_frame != 1 or spec.codebook_sizes != (NEUTTS_SPEECH_TOKENS,):
            raise ValueError(f"NeuTTS needs NeuCodec codes (one 65536-way code per frame), got {spec}")
        self.text = TextEncoder(tokenizer)
        self.codec = codec
        self.window = as_window(window)
        self.defaults = defaults
        self.max_context = max_context
        self.phonemize = phonemize or EspeakPhonemizer()
        self.text_start, self.text_end, self.speech_start, self.speech_end = (
            self.text.token_id(m) for m in NEUTTS_MARKERS
        )
        self.speech_base = self._speech_base()
        self.layout = AudioLayout((self.speech_base,), (NEUTTS_SPEECH_TOKENS,))
        self.start_ids = (self.speech_start,)
        eos = getattr(tokenizer, "eos_token_id", None)
        self.stop_ids = (self.speech_end,) + ((int(eos),) if eos is not None and eos != self.speech_end else ())
        self.voice_clip = voice
        self.voice = voice.name if voice is not None else None
        self._ref_phones = self.phonemize(voice.text) if voice is not None else None
        self._ref_ids = [self.speech_base + c for c in voice.codes] if voice is not None else []
        # the pieces of the template that never change
        self._head = [*self.text.prefix_specials, *self.text.encode("user: Convert the text to speech:")]
        self._assistant = self.text.encode("\nassistant:")

    def _speech_base(self) -> int:
        base = self.text.token_id("<|speech_0|>")
        for code in (1, 4096, NEUTTS_SPEECH_TOKENS // 2, NEUTTS_SPEECH_TOKENS - 1):
            if self.text.token_id(f"<|speech_{code}|>") != base + code:
                raise ValueError("this tokenizer's <|speech_N|> ids are not contiguous; NeuTTS layout unsupported")
        return base

    def build_prompt(self, text: str) -> list[int]:
        phones = self.phonemize(text)
        if self._ref_phones is not None:
            phones = f"{self._ref_phones} {phones}"
        return [
            *self._head, self.text_start, *self.text.encode(phones), self.text_end,
            *self._assistant, self.speech_start, *self._ref_ids,
        ]

    @classmethod
    def load(
        cls, target_dir, *, tokenizer=None, codec=None, device="cpu", dtype=None, voice=None, **options
    ) -> NeuTTSAdapter:
        """Tokenizer from ``target_dir``; ``codec``: a transformers NeuCodec directory, a Codec,
        or ``"random"``; ``voice``: a :class:`NeuTTSVoice` or a file stem (``samples/dave``)."""
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(Path(target_dir))
        if voice is not None and not isinstance(voice, NeuTTSVoice):
            voice = NeuTTSVoice.from_files(voice)
        hint = " (a transformers-format download of neuphonic/neucodec)"
        codec = resolve_codec(codec, "neucodec", device=device, dtype=dtype, hint=hint)
        return cls(tokenizer, codec, voice=voice, **options)
