"""Prometheus metrics, written directly in the text exposition format (version 0.0.4).

Why not ``prometheus_client``: the server needs five metric families; a hundred lines
avoid a dependency and its process-global registry (tests build many servers in one
process, each must count on its own).  All updates happen on the event loop thread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Counter", "Gauge", "Histogram", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    x = float(x)
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


@dataclass
class Counter:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if not self.values and not self.labelnames:
            lines.append(f"{self.name} 0")
        for labels, v in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.labelnames, labels)} {_num(v)}")
        return lines


@dataclass
class Gauge:
    name: str
    help: str
    value: float = 0.0

    def set(self, v: float) -> None:
        self.value = v

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {_num(self.value)}"]


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.buckets = tuple(sorted(self.buckets))
        self.counts = [0] * len(self.buckets)

    def observe(self, v: float) -> None:
        self.n += 1
        self.total += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for b, c in zip(self.buckets, self.counts):
            lines.append(f'{self.name}_bucket{{le="{_num(b)}"}} {c}')
        lines += [f'{self.name}_bucket{{le="+Inf"}} {self.n}', f"{self.name}_sum {_num(self.total)}", f"{self.name}_count {self.n}"]
        return lines


class ServerMetrics:
    """Every metric the server exports."""

    def __init__(self) -> None:
        self.sessions = Gauge("voicestream_sessions", "Open websocket sessions.")
        self.generations = Gauge("voicestream_active_generations", "Synthesis calls running on worker threads.")
        self.sessions_total = Counter("voicestream_sessions_total", "Websocket sessions accepted.")
        self.rejected = Counter("voicestream_sessions_rejected_total", "Websocket sessions refused.", ("reason",))
        self.utterances = Counter("voicestream_utterances_total", "Utterances by outcome.", ("outcome",))
        self.errors = Counter("voicestream_errors_total", "Errors reported to clients, by code.", ("code",))
        self.barge_ins = Counter("voicestream_barge_ins_total", "Utterances interrupted by detected speech.")
        self.audio_seconds = Counter("voicestream_audio_seconds_total", "Seconds of audio sent.")
        self.http_requests = Counter("voicestream_http_speech_requests_total", "POST /v1/audio/speech by status.", ("status",))
        self.ttfa = Histogram(
            "voicestream_ttfa_seconds",
            "First text of an utterance to its first audible sample on the wire.",
            (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
        )
        self.rtf = Histogram(
            "voicestream_rtf",
            "Synthesis wall time over audio duration per utterance (below 1 is faster than real time).",
            (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
        )
        self.acceptance = Histogram(
            "voicestream_accepted_per_target_forward",
            "Tokens committed per target forward, per utterance (1.0 = no speculative gain).",
            (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0),
        )

    def render(self) -> str:
        families = [
            self.sessions, self.generations, self.sessions_total, self.rejected, self.utterances, self.errors,
            self.barge_ins, self.audio_seconds, self.http_requests, self.ttfa, self.rtf, self.acceptance,
        ]
        return "\n".join(line for f in families for line in f.render()) + "\n"
