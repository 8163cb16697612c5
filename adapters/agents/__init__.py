"""Agent-framework plugins: Pipecat (:mod:`.pipecat`) and LiveKit Agents (:mod:`.livekit`).

Both speak through one of two :mod:`.backends`: a synthesizer loaded in this process
(lowest latency, one process per model) or a remote ``voicestream serve`` over the
websocket protocol (one GPU box shared by many agents).  The framework modules import
their framework; this package and :mod:`.backends` do not, so importing
``voicestream.adapters.agents`` never requires pipecat or livekit.
"""
from .backends import LocalBackend, RemoteBackend, SpeechBackend

__all__ = ["LocalBackend", "RemoteBackend", "SpeechBackend"]
