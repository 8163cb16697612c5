"""Barge-in detection on the client's microphone audio (16 kHz s16le).

webrtcvad alone is not enough: it calls stationary broadband noise (white, pink, fan
hum) speech at every aggressiveness -- measured here, 100% of frames.  A barge-in that
fires on a noisy line would cut the agent off constantly, so each frame must also be
*voiced*: the pre-emphasised normalised autocorrelation must show a pitch peak
(lags for 70-400 Hz) above ``voicing_threshold``.  Noise peaks around 0.2; voiced speech
frames sit between 0.5 and 0.95.  A barge-in fires when at least ``min_voiced`` of the
last ``window`` frames pass both tests (the hangover), so a cough or a click does not.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["BargeInDetector", "VadConfig", "voicing"]

VAD_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class VadConfig:
    aggressiveness: int = 2  # webrtcvad mode 0..3 (3 = most eager to call audio non-speech)
    frame_ms: int = 20  # 10, 20 or 30 (webrtcvad's frame sizes)
    window: int = 10  # M: frames considered
    min_voiced: int = 4  # N: voiced-speech frames among the last M that trigger a barge-in
    voicing_threshold: float = 0.45
    min_rms: float = 0.003  # below this (~ -50 dBFS) a frame is silence whatever its shape

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError("aggressiveness must be 0..3")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30")
        if not 1 <= self.min_voiced <= self.window:
            raise ValueError("need 1 <= min_voiced <= window")

    @property
    def frame_bytes(self) -> int:
        return VAD_SAMPLE_RATE * self.frame_ms // 1000 * 2


def voicing(window: np.ndarray, sample_rate: int = VAD_SAMPLE_RATE) -> float:
    """Max normalised autocorrelation over pitch lags (70-400 Hz) of the pre-emphasised window."""
    x = np.diff(np.asarray(window, dtype=np.float64))
    x -= x.mean()
    n = x.size
    lo, hi = sample_rate // 400, min(sample_rate // 70, n - 1)
    if hi <= lo or np.dot(x, x) < 1e-10:
        return 0.0
    spec = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[: hi + 1]
    sq = np.concatenate([[0.0], np.cumsum(x * x)])
    lags = np.arange(lo, hi + 1)
    head = sq[n - lags]  # energy of x[:n-lag]
    tail = sq[n] - sq[lags]  # energy of x[lag:]
    r = ac[lags] / np.sqrt(np.maximum(head * tail, 1e-20))
    return float(r.max())


class BargeInDetector:
    """Feed mic bytes of any length; :meth:`feed` returns True once speech is established."""

    def __init__(self, config: VadConfig | None = None) -> None:
        import webrtcvad  # a declared dependency; imported here so the server loads without a mic path

        self.config = config or VadConfig()
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        self._pending = b""
        self._prev = np.zeros(0)
        self._recent: deque[bool] = deque(maxlen=self.config.window)
        self.frames_seen = 0
        self.voiced_frames = 0

    def reset(self) -> None:
        self._recent.clear()

    def feed(self, data: bytes) -> bool:
        cfg = self.config
        if len(self._pending) % 2:
            raise ValueError("odd byte count")
        self._pending += data
        fired = False
        while len(self._pending) >= cfg.frame_bytes:
            frame, self._pending = self._pending[: cfg.frame_bytes], self._pending[cfg.frame_bytes :]
            speech = self._is_voiced_speech(frame)
            self._recent.append(speech)
            self.frames_seen += 1
            self.voiced_frames += speech
            if sum(self._recent) >= cfg.min_voiced:
                fired = True
                self._recent.clear()
        return fired

    def _is_voiced_speech(self, frame: bytes) -> bool:
        x = np.frombuffer(frame, dtype="<i2").astype(np.float64) / 32768.0
        # a 40 ms analysis window (this frame + the previous) resolves pitch down to 70 Hz
        win = np.concatenate([self._prev, x])[-max(x.size, VAD_SAMPLE_RATE * 40 // 1000) :]
        self._prev = x
        if np.sqrt(np.mean(x * x)) < self.config.min_rms:
            return False
        if not self._vad.is_speech(frame, VAD_SAMPLE_RATE):
            return False
        return voicing(win) >= self.config.voicing_threshold
