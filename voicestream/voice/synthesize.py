"""Text -> streaming 8 kHz PCM with the built-in voice (library API; no CLI here).

Pipeline: text -> :meth:`VoiceVocab.prompt_for` -> :class:`SpeculativeDecoder` over
grammar-masked target (+ optional draft) -> codec tokens (copied unit text and markers
dropped) -> the codec's streaming decoder -> float32 PCM chunks as frames complete.

Why a grammar: :class:`Voice` hands its grammar to the decoder as a token constraint
(:mod:`voicestream.spec.constraint`), which masks draft and target logits alike; every
token the decoder can produce is then legal for its slot, and the codec decoder never
sees a malformed frame.  By default the grammar is
:class:`~voicestream.voice.masking.TextFollowing`: in the words layout the model can only
copy the prompt's next characters, so it cannot skip or repeat words and always stops
once the text is spoken (``follow_text=False`` leaves only the slot grammar).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import SamplingConfig, SpecConfig
from ..models import compute_dtype, load_causal_lm, resolve_draft
from ..spec.lean_runner import set_lean_weights
from ..batch import make_decoder
from ..spec.decoder import TokenChunk
from ..spec.stats import GenerationStats
from .lexicon import TRAILING, Lexicon, resolve_plan
from .masking import SlotOnly, TextFollowing
from .vocab import VoiceVocab

__all__ = ["SynthesisResult", "SynthesisStats", "Voice", "stream_pcm"]


@dataclass
class SynthesisStats:
    """Latency and throughput of one utterance.

    ``ttfa_s``: call -> first non-empty PCM chunk.  ``rtf``: wall time / audio duration
    (below 1 is faster than real time).  ``accepted_per_target_forward``: new tokens per
    target forward (1.0 without a draft).
    """

    text: str = ""
    prompt_tokens: int = 0
    lm_tokens: int = 0  # everything the LM generated (codec + copied text + markers)
    codec_tokens: int = 0
    frames: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    ttfa_s: float | None = None
    finish_reason: str | None = None
    generation: dict = field(default_factory=dict)
    tokens: list[int] | None = None  # pass [] to keep the generated LM tokens themselves

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s > 0 else float("inf")

    @property
    def accepted_per_target_forward(self) -> float:
        return float(self.generation.get("mean_accepted_per_target_forward", 0.0))

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "lm_tokens": self.lm_tokens,
            "codec_tokens": self.codec_tokens,
            "frames": self.frames,
            "audio_s": round(self.audio_s, 3),
            "wall_s": round(self.wall_s, 3),
            "ttfa_s": None if self.ttfa_s is None else round(self.ttfa_s, 4),
            "rtf": round(self.rtf, 4) if self.audio_s > 0 else None,
            "accepted_per_target_forward": round(self.accepted_per_target_forward, 3),
            "finish_reason": self.finish_reason,
        }


@dataclass
class SynthesisResult:
    audio: np.ndarray  # float32 PCM at ``sample_rate``
    sample_rate: int
    stats: SynthesisStats

    @classmethod
    def collect(cls, chunks: Iterator[np.ndarray], sample_rate: int, stats: SynthesisStats) -> "SynthesisResult":
        """A whole utterance from a PCM stream that fills ``stats`` as it runs."""
        parts = list(chunks)
        audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return cls(audio.astype(np.float32), sample_rate, stats)


def stream_pcm(
    generate: Callable[[GenerationStats], Iterator[TokenChunk]],
    *,
    is_audio: Callable[[int], bool],
    push: Callable[[list[int]], np.ndarray],
    flush: Callable[[], np.ndarray],
    stats: SynthesisStats,
    t0: float,
    sample_rate: int,
    tokens_per_frame: int,
    cancel: threading.Event | None = None,
) -> Iterator[np.ndarray]:
    """Accepted LM tokens -> streaming codec decoder -> PCM chunks, filling ``stats``.

    Shared by :class:`Voice` and the model-family synthesizers: ``generate`` runs the
    decoder (filling the given :class:`GenerationStats`), ``is_audio`` picks the codec
    tokens out of each chunk, ``push`` turns them into PCM (possibly empty) and ``flush``
    drains the decoder at the end of a finished (not cancelled) utterance.
    """
    gen_stats = GenerationStats()
    samples = 0
    try:
        for chunk in generate(gen_stats):
            stats.lm_tokens += len(chunk.tokens)
            if stats.tokens is not None:
                stats.tokens.extend(chunk.tokens)
            audio = [t for t in chunk.tokens if is_audio(t)]
            if audio:
                stats.codec_tokens += len(audio)
                pcm = push(audio)
                if pcm.size:
                    if stats.ttfa_s is None:
                        stats.ttfa_s = time.perf_counter() - t0
                    samples += pcm.size
                    yield pcm
            if chunk.finish_reason is not None:
                stats.finish_reason = chunk.finish_reason
        if not (cancel is not None and cancel.is_set()):
            tail = flush()
            if tail.size:
                if stats.ttfa_s is None:
                    stats.ttfa_s = time.perf_counter() - t0
                samples += tail.size
                yield tail
    finally:
        stats.frames = stats.codec_tokens // tokens_per_frame
        stats.audio_s = samples / sample_rate
        stats.wall_s = time.perf_counter() - t0
        stats.generation = gen_stats.as_dict()
        if stats.finish_reason is None:
            stats.finish_reason = gen_stats.finish_reason


# LM tokens per codec token, with room to spare: copied unit text adds about one token
# per 4 frames (28 codec tokens); the phones layout adds three per phone (~2.5 frames)
_NON_AUDIO_ROOM = 1.3


CODEC_PICKS = ("model", "median")


def _slot_fields(spec, codec_pick: str) -> tuple[tuple[int, ...], ...] | None:
    """``codec_pick``: ``model`` - codec tokens follow the request (argmax or sampling);
    ``median`` - each is the field-wise median of the model's distribution (ordinal codecs)."""
    if codec_pick not in CODEC_PICKS:
        raise ValueError(f"codec_pick must be one of {CODEC_PICKS}, got {codec_pick!r}")
    if codec_pick == "model":
        return None
    if not spec.ordinal_fields:
        raise ValueError(f"codec_pick='median' needs a codec with ordinal fields; {spec.name} has none")
    return tuple(spec.ordinal_fields[c] for c in spec.slot_codebooks)


class Voice:
    """A loaded voice: target (+ draft) LMs, vocabulary, codec.

    Thread-safe for concurrent utterances (each generation owns its caches and its own
    streaming decoder).
    """

    def __init__(
        self,
        target: torch.nn.Module,
        draft: torch.nn.Module | None = None,
        *,
        vocab: VoiceVocab | None = None,
        codec=None,
        spec_config: SpecConfig | None = None,
        draft_cpu_threads: int | None = None,
        follow_text: bool = True,
        max_unit_frames: int = 150,
        greedy_plan: bool = True,
        codec_pick: str = "model",
        lexicon: Lexicon | None = None,
        lexicon_durations: bool = False,
        batch=None,
        weights: str = "fp32",
    ) -> None:
        if vocab is None:
            raw = getattr(target.config, "voicestream_vocab", None)
            vocab = VoiceVocab.from_dict(raw) if raw else VoiceVocab()
        if codec is None:
            from ..codec import default_codec

            codec = default_codec()
        if codec.spec.vocab_size != vocab.codec_vocab_size or codec.spec.tokens_per_frame != vocab.tokens_per_frame:
            raise ValueError("codec and voice vocabulary disagree on the codec token layout")
        self.vocab = vocab
        self.codec = codec
        self.codec_pick = codec_pick
        self.grammar = (
            TextFollowing(vocab, max_unit_frames=max_unit_frames, greedy_plan=greedy_plan,
                          slot_fields=_slot_fields(codec.spec, codec_pick), lexicon=lexicon,
                          lexicon_durations=lexicon_durations)
            if follow_text else SlotOnly(vocab)
        )
        if codec_pick != "model" and not follow_text:
            raise ValueError("codec_pick needs follow_text=True (the TextFollowing grammar)")
        if lexicon is not None and not follow_text:
            raise ValueError("a lexicon needs follow_text=True (the TextFollowing grammar)")
        self.lexicon = lexicon
        # the grammar goes to the decoder as a token constraint: it masks draft and target
        # alike, and the models stay plain (so the draft can take the lean forward path)
        self.target = target.eval()
        self.draft = draft.eval() if draft is not None else None
        # weights: the lean forward's format (fp32 | int8 | auto); int8 ran plain decoding
        # 1.34x faster on an AVX2 CPU, but verifying a chunk quantises its rows together, so
        # greedy speculative output is no longer bit-identical to plain (see spec/quant.py)
        self.weights = set_lean_weights(self.target, weights)
        if self.draft is not None:
            set_lean_weights(self.draft, weights)
        # batch (a BatchConfig): all utterances share one batched decoder (voicestream.batch)
        # lean_target: our own Llama voice LMs take the lean forward (the batched decoder
        # already does); plain and speculative decoding share it, so they stay identical
        self.decoder = make_decoder(self.target, self.draft, batch=batch, draft_cpu_threads=draft_cpu_threads,
                                    lean_target=True,
                                    realtime_tokens_per_s=codec.spec.tokens_per_second)
        self.spec_config = spec_config or self.default_spec_config()

    @classmethod
    def load(
        cls, target_dir: str | Path, draft_dir: str | Path | None = None, *, threads: int | None = None,
        dtype: torch.dtype | None = None, plan: str = "auto", **kwargs
    ) -> Voice:
        """Load HF-layout checkpoints (e.g. ``runs/target/model``) from disk.

        ``plan``: who writes a phones voice's phone list and durations
        (:func:`~voicestream.voice.lexicon.resolve_plan`; ``auto`` uses the ``lexicon.json``
        shipped beside the target when there is one).

        ``dtype`` defaults to :func:`~voicestream.models.compute_dtype`: float32 on a CPU
        (the shipped bf16 weights are upcast), bf16 on a GPU that has it.
        """
        if threads:
            torch.set_num_threads(threads)
        dtype = dtype or compute_dtype("cpu")
        target = load_causal_lm(target_dir, dtype=dtype)
        draft = resolve_draft(target, draft_dir)  # a checkpoint, or "self:N" (self-speculation)
        lexicon, durations = resolve_plan(plan, target_dir)
        return cls(target, draft, lexicon=lexicon, lexicon_durations=durations, **kwargs)

    @property
    def sample_rate(self) -> int:
        return self.codec.spec.sample_rate

    def default_spec_config(self, *, max_seconds: float = 20.0) -> SpecConfig:
        """Greedy speculative decoding, stopping at ``<audio_end>`` or ``max_seconds`` of audio.

        The token cap leaves room for what the LM writes besides codec tokens. Draft length:
        the ``cost`` policy, which drafts only as far as the measured step times and
        acceptance say pays -- on a 2-core CPU the built-in voice's target is too small for
        drafting to pay most of the time, and speculation then costs next to nothing.
        """
        max_tokens = int(max_seconds * self.codec.spec.tokens_per_second * _NON_AUDIO_ROOM) + 64
        return SpecConfig(
            rule="greedy", sampling=SamplingConfig(temperature=0.0), max_new_tokens=max_tokens,
            stop_ids=(self.vocab.audio_end_id,), gamma=4, draft_length="cost",
        )

    def max_new_tokens_for(self, text: str, *, seconds_per_char: float = 0.25, floor_s: float = 2.0) -> int:
        """A generous length cap from the text length (stops runaway generations)."""
        n = len(self.vocab.text_ids(text))
        seconds = floor_s + seconds_per_char * n
        return int(seconds * self.codec.spec.tokens_per_second * _NON_AUDIO_ROOM) + 64

    # ----- synthesis ---------------------------------------------------------------
    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` (normalised) whose pronunciation the LM has to guess from
        their letters: none of the lexicon's units or word table holds them (all of them
        without a lexicon): the likeliest to come out wrong, e.g. for agent code to respell."""
        v = self.vocab
        words = v.text_from_ids(v.prompt_for(text)[1:-2]).split()
        if self.lexicon is None:
            return [w.rstrip(TRAILING) for w in words]
        unknown, i = [], 0
        while i < len(words):  # longest lexicon unit first, as multi-word keys ("of the") join words
            n = next((n for n in range(min(4, len(words) - i), 0, -1)
                      if self.lexicon.variants(" ".join(words[i:i + n]), i == 0, i + n == len(words))), 0)
            if not n:
                unknown.append(words[i].rstrip(TRAILING))
            i += max(n, 1)
        return unknown

    def stream(
        self, text: str, cfg: SpecConfig | None = None, *, stats: SynthesisStats | None = None, cancel=None
    ) -> Iterator[np.ndarray]:
        """Yield float32 PCM chunks as tokens are verified; fills ``stats`` when done."""
        t0 = time.perf_counter()
        st = stats if stats is not None else SynthesisStats()
        st.text = text
        prompt = self.vocab.prompt_for(text)
        st.prompt_tokens = len(prompt)
        if cfg is None:
            cfg = self.spec_config.with_(max_new_tokens=min(self.spec_config.max_new_tokens, self.max_new_tokens_for(text)))
        dec = self.codec.streaming_decoder()
        yield from stream_pcm(
            lambda gen_stats: self.decoder.generate(
                prompt, cfg, cancel=cancel, stats=gen_stats, constraint=self.grammar
            ),
            is_audio=self.vocab.is_codec,
            push=dec.push,
            flush=dec.flush,
            stats=st,
            t0=t0,
            sample_rate=self.sample_rate,
            tokens_per_frame=self.codec.spec.tokens_per_frame,
            cancel=cancel,
        )

    def synthesize(self, text: str, cfg: SpecConfig | None = None) -> SynthesisResult:
        """Whole utterance: concatenated PCM and its stats."""
        stats = SynthesisStats()
        return SynthesisResult.collect(self.stream(text, cfg, stats=stats), self.sample_rate, stats)

    def close(self) -> None:
        self.decoder.close()
