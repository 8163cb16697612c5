"""One websocket session: the state machine from ``start`` to the last frame.

Transport-free: the websocket handler feeds parsed client input in (:meth:`on_text`,
:meth:`on_audio`) and runs :meth:`run_writer` with the socket's send functions; this
class decides what gets synthesised, in which order, and what is dropped on ``cancel``.

Flow::

    text fragments -> SentenceSegmenter -> work queue -> pump: one segment at a time on a
    worker thread (synthesizer -> resample -> encode -> frames) -> Outbox (bounded, ms of
    audio) -> writer: headers with seq numbers -> socket

An *utterance* is the text between the first ``text`` and the next ``flush``/``close``;
it may hold several segments (sentences/clauses), each synthesised as soon as the
segmenter releases it.  TTFA is per utterance: first text arrival -> the frame holding
its first audible sample is handed to the socket.

Cancellation (``cancel`` or a barge-in) marks every undelivered utterance cancelled:
the worker stops within one model step, queued frames and events of those utterances
are purged (the writer also skips any it meets), and ``interrupted`` goes out next.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..text import EmptyTextError, SentenceSegmenter, normalize_text
from . import protocol as P
from .audio import FrameChunk, UtteranceAudio
from .outbox import Outbox, OutboxOverflow, OutItem
from .synth import SegmentStats, SynthesisOptions, Synthesizer
from .vad import BargeInDetector
from ..threaded import ThreadedStream

if TYPE_CHECKING:
    from .app import VoiceServer

log = logging.getLogger("voicestream.server")
_session_ids = itertools.count(1)
_TERMINALS = ".!?\u2026"
_CLOSERS = "\"')]}\u201d\u2019\u00bb"


class SessionClosed(Exception):
    """Raised into the writer when the session must end now (fatal error / abort)."""


@dataclass
class Utterance:
    id: int
    first_text_at: float
    audio: UtteranceAudio
    segments: int = 0
    tokens: int = 0
    target_forwards: int = 0
    drafted: int = 0
    accepted: int = 0
    model_samples: int = 0
    busy_s: float = 0.0
    ttfa_s: float | None = None
    cancelled: bool = False
    failed: bool = False
    finish_reasons: list[str] = field(default_factory=list)

    def absorb(self, stats: SegmentStats, busy_s: float) -> None:
        self.tokens += stats.tokens
        self.target_forwards += stats.target_forwards
        self.drafted += stats.drafted_tokens
        self.accepted += stats.accepted_drafted
        self.model_samples += stats.audio_samples
        self.busy_s += busy_s
        if stats.finish_reason:
            self.finish_reasons.append(stats.finish_reason)

    def summary(self, model_rate: int) -> dict:
        audio_s = self.model_samples / model_rate if model_rate else 0.0
        return {
            "ttfa_ms": None if self.ttfa_s is None else round(self.ttfa_s * 1000, 1),
            "rtf": round(self.busy_s / audio_s, 4) if audio_s > 0 else None,
            "audio_ms": round(audio_s * 1000, 1),
            "segments": self.segments,
            "tokens": self.tokens,
            "target_forwards": self.target_forwards,
            "accepted_per_target_forward": round(self.tokens / self.target_forwards, 3) if self.target_forwards else None,
            "acceptance_rate": round(self.accepted / self.drafted, 4) if self.drafted else None,
        }


# sentinels on the work queue
@dataclass
class _Segment:
    utt: Utterance
    text: str


@dataclass
class _End:
    utt: Utterance | None
    flush: bool  # reply with `flushed`


@dataclass
class _Finish:
    code: int
    reason: str


class Session:
    def __init__(self, server: VoiceServer) -> None:
        self.server = server
        self.cfg = server.config
        self.metrics = server.metrics
        self.id = f"s{next(_session_ids)}"
        self.outbox = Outbox(self.cfg.max_queued_audio_ms)
        self.start: P.Start | None = None
        self.synth: Synthesizer | None = None
        self.options: SynthesisOptions | None = None
        self.segmenter = SentenceSegmenter()
        self.vad: BargeInDetector | None = None
        self.closing = False  # `close` received or server draining: no new input
        self.finished = asyncio.Event()  # the writer has sent the final item
        self.errors = 0
        self.last_input = time.monotonic()
        self._utt: Utterance | None = None  # open utterance (receiving text)
        self._live: dict[int, Utterance] = {}  # utterances whose `done` is not on the wire yet
        self._utt_ids = itertools.count(1)
        self._work: asyncio.Queue = asyncio.Queue()
        self._pending_chars = 0  # text queued for synthesis, not yet spoken
        self._stream: ThreadedStream | None = None
        self._pump_task: asyncio.Task | None = None
        self._stall_handle: asyncio.TimerHandle | None = None
        self._seq = 0
        self._playout_end = 0.0
        self.frames_sent = 0
        self._fatal = False

    # ------------------------------------------------------------------ input
    def on_text(self, raw: str) -> None:
        """A JSON text message from the client."""
        self.last_input = time.monotonic()
        try:
            msg = P.parse_client_message(raw, max_text_chars=self.cfg.max_text_chars)
            self._dispatch(msg)
        except P.ProtocolError as exc:
            self.report(exc.code, exc.message)

    def on_audio(self, data: bytes) -> None:
        """A binary message: microphone audio for barge-in (16 kHz s16le)."""
        self.last_input = time.monotonic()
        if self.start is None:
            self.report(P.ErrorCode.NOT_STARTED, "binary message before 'start'")
            return
        if len(data) % 2:
            self.report(P.ErrorCode.UNSUPPORTED_AUDIO, "mic audio must be 16-bit samples (even byte count)")
            return
        if self.vad is None or self.closing:
            return
        if self.vad.feed(data) and self.speaking:
            self.metrics.barge_ins.inc()
            self.interrupt("barge_in")

    def _dispatch(self, msg: P.ClientMessage) -> None:
        if isinstance(msg, P.Start):
            self._on_start(msg)
            return
        if self.start is None:
            raise P.ProtocolError(P.ErrorCode.NOT_STARTED, f"send 'start' before '{type(msg).__name__.lower()}'")
        if isinstance(msg, P.Cancel):
            self.interrupt("cancel")
            return
        if self.closing:
            raise P.ProtocolError(P.ErrorCode.CLOSING, "session is closing; no more input accepted")
        if isinstance(msg, P.Text):
            self._on_text(msg.text)
        elif isinstance(msg, P.Flush):
            self._end_utterance(flush=True)
        elif isinstance(msg, P.Close):
            self.begin_close(P.CLOSE_NORMAL, "done")

    def _on_start(self, msg: P.Start) -> None:
        if self.start is not None:
            raise P.ProtocolError(P.ErrorCode.ALREADY_STARTED, "'start' was already received")
        synth = self.server.voice(msg.voice)
        if synth is None:
            raise P.ProtocolError(
                P.ErrorCode.UNKNOWN_VOICE, f"unknown voice {msg.voice!r}; available: {sorted(self.server.voices)}"
            )
        if msg.speed != 1.0 and not synth.supports_speed:
            raise P.ProtocolError(P.ErrorCode.INVALID_FIELD, f"voice {synth.name!r} does not support speed != 1")
        self.start, self.synth = msg, synth
        self.options = SynthesisOptions(msg.rule, msg.gamma, msg.temperature, msg.seed, msg.speed)
        if msg.barge_in:
            self.vad = BargeInDetector(self.cfg.vad)
        self._pump_task = asyncio.get_running_loop().create_task(self._pump(), name=f"{self.id}-pump")
        self.emit(
            "started",
            session=self.id,
            protocol=P.PROTOCOL_VERSION,
            voice=synth.name,
            encoding=msg.encoding,
            sample_rate=msg.sample_rate,
            model_sample_rate=synth.sample_rate,
            frame_ms=msg.frame_ms,
            header_bytes=P.FRAME_HEADER.size,
            barge_in={"enabled": msg.barge_in, "sample_rate": 16000, "encoding": "pcm_s16le"},
            limits={"max_msg_size": self.cfg.max_msg_size, "max_text_chars": self.cfg.max_text_chars},
        )

    def _on_text(self, fragment: str) -> None:
        if not fragment:
            return
        buffered = len(self.segmenter.buffered) + self._pending_chars
        if buffered + len(fragment) > self.cfg.max_text_chars:
            raise P.ProtocolError(
                P.ErrorCode.TEXT_BUFFER_FULL,
                f"{buffered} characters are waiting to be spoken; the limit is {self.cfg.max_text_chars} "
                "(fragment dropped; send it again later)",
            )
        if self._utt is None:
            if not fragment.strip():
                return
            self._utt = self._new_utterance()
        for seg in self.segmenter.push(fragment):
            self._queue_segment(seg)
        self._arm_stall_release()

    def _new_utterance(self) -> Utterance:
        assert self.start is not None and self.synth is not None
        s = self.start
        audio = UtteranceAudio(
            self.synth.sample_rate, s.sample_rate, s.encoding, s.frame_ms,
            trim_leading_silence=self.cfg.trim_leading_silence, preroll_ms=self.cfg.preroll_ms,
        )
        utt = Utterance(next(self._utt_ids), time.perf_counter(), audio)
        self._live[utt.id] = utt
        return utt

    def _queue_segment(self, text: str) -> None:
        assert self._utt is not None
        self._pending_chars += len(text)
        self._work.put_nowait(_Segment(self._utt, text))

    def _arm_stall_release(self) -> None:
        """Text stopped arriving mid-sentence: speak its finished words rather than wait.

        An LLM that stalls (tool call, slow token) would otherwise leave complete words
        unspoken until the next punctuation mark.
        """
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        if self.cfg.text_stall_release_ms > 0 and self.segmenter.buffered.strip():
            loop = asyncio.get_running_loop()
            self._stall_handle = loop.call_later(self.cfg.text_stall_release_ms / 1000, self._stall_release)

    def _stall_release(self) -> None:
        self._stall_handle = None
        buf = self.segmenter.buffered
        if self._utt is None or not buf.strip():
            return
        if buf.rstrip().rstrip(_CLOSERS)[-1:] in _TERMINALS:
            head, rest = buf, ""  # a finished sentence waiting only for a possible "3." + "5"
        else:
            cut = max(buf.rfind(" "), buf.rfind("\t"), buf.rfind("\n"))
            if cut <= 0:
                return  # one unfinished word: nothing is certain yet
            head, rest = buf[:cut], buf[cut:].lstrip()
        self.segmenter.reset()
        if head.strip():
            self._queue_segment(head.strip())
        if rest:
            for seg in self.segmenter.push(rest):
                self._queue_segment(seg)

    def _end_utterance(self, *, flush: bool) -> None:
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        if self._utt is not None:
            for seg in self.segmenter.flush():
                self._queue_segment(seg)
        else:
            self.segmenter.reset()
        self._work.put_nowait(_End(self._utt, flush))
        self._utt = None

    def begin_close(self, code: int, reason: str) -> None:
        """Finish everything received so far, then close with ``code`` (``close``, shutdown)."""
        if self.closing:
            return
        self.closing = True
        if self._utt is not None or self.segmenter.buffered.strip():
            self._end_utterance(flush=False)
        if self.start is None:  # nothing was ever started: close right away
            self.outbox.put(OutItem("close", (code, reason)))
        else:
            self._work.put_nowait(_Finish(code, reason))

    # ------------------------------------------------------------------ control
    @property
    def speaking(self) -> bool:
        """Audio is being generated, queued, or (by our estimate) still playing at the client."""
        return bool(self._live) or time.monotonic() < self._playout_end

    @property
    def idle(self) -> bool:
        return not self._live and len(self.outbox) == 0 and self._work.empty() and self._stream is None

    def interrupt(self, reason: str) -> None:
        """Stop at once: cancel synthesis, drop queued audio and queued text."""
        ids = sorted(self._live)
        for utt in self._live.values():
            utt.cancelled = True
            self.metrics.utterances.inc(1, "interrupted")
        self._live.clear()
        self._utt = None
        self.segmenter.reset()
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        while not self._work.empty():
            item = self._work.get_nowait()
            if isinstance(item, _Finish):  # a pending close still happens
                self._work.put_nowait(item)
                break
        self._pending_chars = 0
        if self._stream is not None:
            self._stream.cancel()
        dropped_ms = self.outbox.purge(lambda it: it.utt is not None and it.utt.cancelled)
        self._playout_end = 0.0
        if self.vad is not None:
            self.vad.reset()
        self.emit("interrupted", reason=reason, utterances=ids, dropped_audio_ms=round(dropped_ms, 1), seq=self._seq)

    def emit(self, kind: str, **fields) -> None:
        try:
            self.outbox.put(OutItem("event", P.event(kind, **fields)))
        except OutboxOverflow as exc:
            self.fatal(P.ErrorCode.SLOW_CONSUMER, str(exc), P.CLOSE_SLOW_CONSUMER)

    def report(self, code: str, message: str) -> None:
        """A non-fatal client error; too many of them end the session."""
        self.errors += 1
        self.metrics.errors.inc(1, code)
        if self.errors > self.cfg.max_errors:
            self.fatal(P.ErrorCode.TOO_MANY_ERRORS, f"more than {self.cfg.max_errors} errors", P.CLOSE_POLICY)
            return
        self.emit("error", code=code, message=message, fatal=False)

    def fatal(self, code: str, message: str, close_code: int) -> None:
        """End the session now: drop everything queued, send the error, close."""
        if self._fatal:
            return
        self._fatal = True
        self.metrics.errors.inc(1, code)
        self.closing = True
        for utt in self._live.values():
            utt.cancelled = True
        self._live.clear()
        if self._stream is not None:
            self._stream.cancel()
        self.outbox.purge(lambda it: True)
        self.outbox.put_front(OutItem("close", (close_code, code)))
        self.outbox.put_front(OutItem("event", P.error_event(code, message, fatal=True)))

    # ------------------------------------------------------------------ synthesis
    async def _pump(self) -> None:
        """Work items in order: synthesise segments, end utterances, finish the session."""
        try:
            await self._pump_items()
        except OutboxOverflow as exc:  # a client flooding requests without reading replies
            self.fatal(P.ErrorCode.SLOW_CONSUMER, str(exc), P.CLOSE_SLOW_CONSUMER)

    async def _pump_items(self) -> None:
        while True:
            item = await self._work.get()
            if isinstance(item, _Segment):
                try:
                    await self._synthesize(item.utt, item.text)
                finally:
                    self._pending_chars = max(0, self._pending_chars - len(item.text))
            elif isinstance(item, _End):
                await self._finish_utterance(item)
            elif isinstance(item, _Finish):
                self.outbox.put(OutItem("close", (item.code, item.reason)))
                return

    async def _synthesize(self, utt: Utterance, text: str) -> None:
        if utt.cancelled:
            return
        try:
            normalize_text(text)
        except EmptyTextError:
            return  # nothing speakable ("...", emoji): skip quietly
        assert self.synth is not None and self.options is not None
        synth, options, audio = self.synth, self.options, utt.audio
        stats = SegmentStats()
        utt.segments += 1
        audio.begin_segment()

        def produce(cancel):
            for pcm in synth.stream(text, options, cancel, stats):
                chunk = audio.push(pcm)  # resample + encode on the worker thread, off the loop
                if chunk is not None:
                    yield chunk

        self.metrics.generations.inc()
        stream = ThreadedStream(produce, max_ahead=self.cfg.worker_chunks, on_exit=self.metrics.generations.dec)
        self._stream = stream
        try:
            async for chunk in stream:
                if utt.cancelled:
                    break
                await self._enqueue(utt, chunk)
        except Exception as exc:  # the synthesizer failed: this utterance is lost, the session lives
            log.exception("synthesis failed in %s", self.id)
            utt.failed = True
            self.report(P.ErrorCode.SYNTHESIS_FAILED, f"synthesis failed: {type(exc).__name__}: {exc}")
        finally:
            await stream.aclose()
            self._stream = None
            utt.absorb(stats, stream.busy_s)

    async def _enqueue(self, utt: Utterance, chunk: FrameChunk) -> None:
        offset = chunk.sample_offset
        rate = utt.audio.sample_rate
        for i, (payload, n) in enumerate(zip(chunk.payloads, chunk.samples)):
            flags = 0
            if offset == 0:
                flags |= P.FLAG_UTTERANCE_START
            if i == 0 and chunk.segment_start:
                flags |= P.FLAG_SEGMENT_START
            item = OutItem("frame", payload, utt, 1000.0 * n / rate, offset, flags, audible=chunk.audible and i == 0)
            await self.outbox.put_audio(item)
            if utt.cancelled:
                return
            offset += n

    async def _finish_utterance(self, end: _End) -> None:
        utt = end.utt
        if utt is not None and not utt.cancelled:
            tail = utt.audio.finish()
            if tail is not None:
                await self._enqueue(utt, tail)
            if not utt.cancelled:
                self.outbox.put(OutItem("done", None, utt))
        if end.flush and (utt is None or not utt.cancelled):
            self.outbox.put(OutItem("event", P.event("flushed", utterance=None if utt is None else utt.id), utt))

    # ------------------------------------------------------------------ output
    async def run_writer(
        self,
        send_bytes: Callable[[bytes], Awaitable[None]],
        send_str: Callable[[str], Awaitable[None]],
    ) -> tuple[int, str]:
        """Drain the outbox onto the socket until a close item; returns (code, reason)."""
        timeout = self.cfg.stalled_client_timeout_s
        try:
            while True:
                item = await self.outbox.get()
                if item.utt is not None and item.utt.cancelled:
                    continue
                if item.kind == "frame":
                    await self._send_frame(item, send_bytes, send_str, timeout)
                elif item.kind == "event":
                    await asyncio.wait_for(send_str(item.data), timeout)
                elif item.kind == "done":
                    await asyncio.wait_for(send_str(self._done_event(item.utt)), timeout)
                elif item.kind == "close":
                    return item.data
        except asyncio.TimeoutError:
            self.metrics.errors.inc(1, P.ErrorCode.SLOW_CONSUMER)
            return P.CLOSE_SLOW_CONSUMER, P.ErrorCode.SLOW_CONSUMER
        finally:
            self.finished.set()

    async def _send_frame(self, item: OutItem, send_bytes, send_str, timeout: float) -> None:
        utt: Utterance = item.utt
        if item.audible and utt.ttfa_s is None:
            utt.ttfa_s = time.perf_counter() - utt.first_text_at
            self.metrics.ttfa.observe(utt.ttfa_s)
            await asyncio.wait_for(
                send_str(P.event("audio_start", utterance=utt.id, seq=self._seq, ttfa_ms=round(utt.ttfa_s * 1000, 1))),
                timeout,
            )
        frame = P.pack_frame(self._seq, utt.id, item.sample_offset, item.flags, item.data)
        await asyncio.wait_for(send_bytes(frame), timeout)
        self._seq += 1
        self.frames_sent += 1
        now = time.monotonic()
        self._playout_end = max(now, self._playout_end) + item.ms / 1000.0
        self.metrics.audio_seconds.inc(item.ms / 1000.0)

    def _done_event(self, utt: Utterance) -> str:
        self._live.pop(utt.id, None)
        assert self.synth is not None
        summary = utt.summary(self.synth.sample_rate)
        self.metrics.utterances.inc(1, "failed" if utt.failed else "completed")
        if summary["rtf"] is not None:
            self.metrics.rtf.observe(summary["rtf"])
        if summary["accepted_per_target_forward"] is not None:
            self.metrics.acceptance.observe(summary["accepted_per_target_forward"])
        return P.event("done", utterance=utt.id, stats=summary)

    # ------------------------------------------------------------------ teardown
    async def shutdown(self) -> None:
        """Free everything: cancel synthesis, wait for the worker thread, stop tasks."""
        for utt in self._live.values():
            utt.cancelled = True
        self._live.clear()
        if self._stall_handle is not None:
            self._stall_handle.cancel()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        if self._pump_task is not None and not self._pump_task.done():
            self._pump_task.cancel()
            try:
                await self._pump_task
            except (asyncio.CancelledError, Exception):
                pass
        if stream is not None:
            await stream.aclose(timeout=10)
