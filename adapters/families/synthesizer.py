"""A family adapter + target (+ draft) -> streaming PCM, with TTFA/RTF/acceptance stats.

Pipeline (the same as :class:`voicestream.voice.Voice`, with the family's parts plugged in):
text -> ``adapter.build_prompt`` -> :class:`SpeculativeDecoder` (draft and target masked by
the family's :class:`AudioConstraint`) -> accepted LM ids -> whole frames of codec codes
(:class:`FrameAssembler`) -> the codec's streaming decoder -> float32 PCM chunks.

:class:`FamilySynthesizer` also satisfies the server's ``Synthesizer`` protocol by shape
(``name``, ``sample_rate``, ``supports_speed``, ``stream(text, options, cancel, stats)``)
without importing the server: it is shared by all sessions, every call owns its KV caches,
streaming decoder and frame buffer, and a set ``cancel`` stops it within one decode step.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from voicestream.config import SpecConfig
from voicestream.spec.compat import output_vocab_size
from voicestream.batch import make_decoder
from voicestream.voice.synthesize import SynthesisResult, SynthesisStats, stream_pcm

from .base import FamilyAdapter
from .drafts import resolve_draft
from .layout import FrameAssembler

__all__ = ["FamilySynthesizer"]


class FamilySynthesizer:
    """Streams one family's speech with speculative decoding.

    ``draft``: ``None`` (plain decoding), a model, a checkpoint path, or ``"self:N"``
    (the target's first ``N`` layers; see :mod:`.drafts`).  ``spec_config`` is the base
    decoding config; per-call options (rule, gamma, temperature, seed) override it.
    """

    supports_speed = False

    def __init__(
        self,
        adapter: FamilyAdapter,
        target: torch.nn.Module,
        draft: torch.nn.Module | str | Path | None = None,
        *,
        name: str | None = None,
        spec_config: SpecConfig | None = None,
        draft_cpu_threads: int | None = None,
        lean_draft: bool = True,
        batch=None,
    ) -> None:
        self.adapter = adapter
        self.target = target.eval()
        self.draft = resolve_draft(self.target, draft)
        # batch (a BatchConfig): every session shares one batched decoder (voicestream.batch)
        self.decoder = make_decoder(
            self.target, self.draft, batch=batch, draft_cpu_threads=draft_cpu_threads, lean_draft=lean_draft,
            realtime_tokens_per_s=adapter.frame_rate_hz * adapter.layout.tokens_per_frame,
        )
        self.vocab_size = output_vocab_size(self.target)
        device = next(self.target.parameters()).device
        self.constraint = adapter.constraint(self.vocab_size, device=device)
        self.name = name or (f"{adapter.name}-{adapter.voice}" if adapter.voice else adapter.name)
        self.sample_rate = int(adapter.sample_rate)
        limits = [getattr(self.target.config, "max_position_embeddings", None), adapter.max_context]
        self.max_positions = min((int(x) for x in limits if x), default=None)
        self.spec_config = spec_config or SpecConfig(
            rule="greedy", sampling=adapter.defaults.greedy(), gamma=4, stop_ids=adapter.stop_ids,
            max_new_tokens=adapter.token_budget(adapter.defaults.max_seconds),
        )

    # ----- configs ---------------------------------------------------------------------
    def config_for(self, text: str, options=None) -> SpecConfig:
        """The decoding config for ``text``: base config, server-style options, length cap.

        ``options`` is duck-typed (``rule``, ``gamma``, ``temperature``, ``seed``).  Greedy
        rules decode by argmax whatever the temperature; sampling rules without a
        temperature use the family's.
        """
        cfg = self.spec_config
        if options is not None:
            rule = getattr(options, "rule", cfg.rule)
            temperature = float(getattr(options, "temperature", 0.0) or 0.0)
            d = self.adapter.defaults
            sampling = d.greedy() if rule in ("greedy", "topk") else d.sampling(temperature or None)
            gamma = int(getattr(options, "gamma", cfg.gamma))
            cfg = cfg.with_(
                rule=rule, sampling=sampling, gamma=gamma, gamma_min=min(cfg.gamma_min, gamma),
                gamma_max=max(cfg.gamma_max, gamma), seed=int(getattr(options, "seed", cfg.seed)),
            )
        return cfg.with_(max_new_tokens=min(cfg.max_new_tokens, self.adapter.max_new_tokens_for(text)))

    # ----- library API -------------------------------------------------------------------
    def stream_audio(
        self,
        text: str,
        cfg: SpecConfig | None = None,
        *,
        stats: SynthesisStats | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield float32 PCM at :attr:`sample_rate` as frames are verified; fills ``stats``."""
        t0 = time.perf_counter()
        st = stats if stats is not None else SynthesisStats()
        st.text = text
        prompt = self.adapter.build_prompt(text)
        st.prompt_tokens = len(prompt)
        cfg = cfg or self.config_for(text)
        if not cfg.stop_ids:  # the grammar only lets the family's stop ids through
            cfg = cfg.with_(stop_ids=self.adapter.stop_ids)
        if self.max_positions:
            room = int(self.max_positions) - len(prompt)
            if room < self.adapter.layout.tokens_per_frame:
                raise ValueError(f"prompt of {len(prompt)} tokens leaves no room in {self.max_positions} positions")
            cfg = cfg.with_(max_new_tokens=min(cfg.max_new_tokens, room))
        layout, spec = self.adapter.layout, self.adapter.codec.spec
        frames = FrameAssembler(layout)
        dec = self.adapter.streaming_decoder()

        def push(audio: list[int]) -> np.ndarray:
            codes = frames.push(audio)  # only whole frames reach the codec
            return dec.push(spec.codes_to_tokens(codes)) if len(codes) else np.zeros(0, dtype=np.float32)

        yield from stream_pcm(
            lambda gen_stats: self.decoder.generate(
                prompt, cfg, cancel=cancel, stats=gen_stats, constraint=self.constraint
            ),
            is_audio=layout.is_audio,
            push=push,
            flush=dec.flush,
            stats=st,
            t0=t0,
            sample_rate=self.sample_rate,
            tokens_per_frame=layout.tokens_per_frame,
            cancel=cancel,
        )

    def synthesize(self, text: str, cfg: SpecConfig | None = None) -> SynthesisResult:
        """Whole utterance: concatenated PCM and its stats."""
        stats = SynthesisStats()
        return SynthesisResult.collect(self.stream_audio(text, cfg, stats=stats), self.sample_rate, stats)

    # ----- server protocol ---------------------------------------------------------------
    def stream(self, text: str, options=None, cancel: threading.Event | None = None, stats=None) -> Iterator[np.ndarray]:
        """The server's ``Synthesizer.stream``: PCM chunks; fills a ``SegmentStats``-like ``stats``."""
        vstats = SynthesisStats()
        if stats is not None:
            stats.text = text
        inner = self.stream_audio(text, self.config_for(text, options), stats=vstats, cancel=cancel)
        try:
            for pcm in inner:
                if stats is not None:
                    stats.audio_samples += int(pcm.size)
                yield pcm
        finally:
            inner.close()  # runs the inner generator's bookkeeping before we read it
            if stats is not None:
                absorb = getattr(stats, "absorb_generation", None)
                if absorb is not None:
                    absorb(vstats.generation)
                stats.finish_reason = vstats.finish_reason or getattr(stats, "finish_reason", None)

    def describe(self) -> dict:
        info = self.adapter.describe()
        info.update(
            name=self.name,
            target_layers=int(self.target.config.num_hidden_layers),
            draft_layers=int(self.draft.config.num_hidden_layers) if self.draft is not None else None,
        )
        return info

    def close(self) -> None:
        self.decoder.close()
