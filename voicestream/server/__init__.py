"""The streaming voice server (``voicestream serve``): websocket ``/v1/stream``,
OpenAI-compatible ``POST /v1/audio/speech``, ``/healthz``, ``/metrics`` and a demo page.

Layers, each in its own module: wire format (:mod:`.protocol`), audio plumbing
(:mod:`.audio`), the synthesizer protocol and voices (:mod:`.synth`, :mod:`.formant`),
per-session state machine (:mod:`.session`, :mod:`.outbox`, :mod:`.worker`),
transports (:mod:`.ws`, :mod:`.http`), barge-in (:mod:`.vad`), metrics
(:mod:`.metrics`), assembly and lifecycle (:mod:`.app`).
"""
from .app import VoiceServer, create_app, run_server, serve
from .config import ServerConfig
from .synth import (
    SegmentStats,
    SynthesisOptions,
    Synthesizer,
    VoiceSynthesizer,
    VoiceUnavailableError,
    load_voice_synthesizer,
)
from .vad import VadConfig

__all__ = [
    "SegmentStats",
    "ServerConfig",
    "SynthesisOptions",
    "Synthesizer",
    "VadConfig",
    "VoiceServer",
    "VoiceSynthesizer",
    "VoiceUnavailableError",
    "create_app",
    "load_voice_synthesizer",
    "run_server",
    "serve",
]
