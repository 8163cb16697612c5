"""Wire format of the ``/v1/stream`` websocket: client messages, server events, audio frames.

Everything here is pure (no I/O, no asyncio) so the transport, the session state machine
and the tests share one definition of what is valid.  Validation is strict about types
(``"gamma": "4"`` is an error, not a silent coercion) because a voice agent that sends a
wrong type has a bug its developer wants to see, and lenient parsing hides it.

See ``docs/protocol.md`` for the prose version.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Union

from ..config import RULES, SamplingConfig, SpecConfig

PROTOCOL_VERSION = 1
ENCODINGS: tuple[str, ...] = ("pcm_s16le", "mulaw")
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
MIN_FRAME_MS, MAX_FRAME_MS = 10, 1000

# --- binary audio frame header (server -> client) -------------------------------------
#: ``<2sBBIII`` little-endian: magic ``b"VS"``, version, flags, seq, utterance, sample offset.
FRAME_HEADER = struct.Struct("<2sBBIII")
FRAME_MAGIC = b"VS"
FRAME_VERSION = 1
FLAG_UTTERANCE_START = 0x01  # first frame of an utterance (audio_start was just sent)
FLAG_SEGMENT_START = 0x02  # first frame of a text segment (sentence/clause)

# --- websocket close codes ------------------------------------------------------------
CLOSE_NORMAL = 1000  # after ``close``: everything was sent
CLOSE_GOING_AWAY = 1001  # server shutting down
CLOSE_POLICY = 1008  # too many protocol errors
CLOSE_TOO_BIG = 1009  # a message over max_msg_size (closed by aiohttp itself)
CLOSE_INTERNAL = 1011  # synthesizer failure
CLOSE_TRY_AGAIN = 1013  # server full (max_sessions) or draining
CLOSE_IDLE = 4408  # idle timeout
CLOSE_SLOW_CONSUMER = 4429  # the client stopped reading for longer than stalled_client_timeout


# --- error codes (``error`` event ``code`` field) ------------------------------------------
class ErrorCode:
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"  # not an object / missing or non-string type
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"  # wrong type, out of range, unknown field
    NOT_STARTED = "not_started"  # text/flush/audio before start
    ALREADY_STARTED = "already_started"
    UNKNOWN_VOICE = "unknown_voice"
    TEXT_BUFFER_FULL = "text_buffer_full"
    CLOSING = "closing"  # message after close
    UNSUPPORTED_AUDIO = "unsupported_audio"  # binary frame that is not 16 kHz s16 mic audio
    SERVER_BUSY = "server_busy"
    SHUTTING_DOWN = "shutting_down"
    IDLE_TIMEOUT = "idle_timeout"
    TOO_MANY_ERRORS = "too_many_errors"
    SLOW_CONSUMER = "slow_consumer"
    SYNTHESIS_FAILED = "synthesis_failed"
    MESSAGE_TOO_BIG = "message_too_big"


class ProtocolError(ValueError):
    """A client mistake, reported to that client as an ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- client messages ------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    voice: str | None = None
    encoding: str = "pcm_s16le"
    sample_rate: int = 16000
    frame_ms: int = 40
    rule: str = "greedy"
    gamma: int = 4
    temperature: float = 0.0
    seed: int = 0
    speed: float = 1.0
    barge_in: bool = True

    def spec_overrides(self) -> dict[str, Any]:
        """The decoding fields as SpecConfig keyword arguments."""
        return {
            "rule": self.rule,
            "gamma": self.gamma,
            "sampling": SamplingConfig(temperature=self.temperature),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Close:
    pass


ClientMessage = Union[Start, Text, Flush, Cancel, Close]

_START_FIELDS: dict[str, tuple[type, ...]] = {
    "voice": (str,),
    "encoding": (str,),
    "sample_rate": (int,),
    "frame_ms": (int,),
    "rule": (str,),
    "gamma": (int,),
    "temperature": (int, float),
    "seed": (int,),
    "speed": (int, float),
    "barge_in": (bool,),
}
_SIMPLE = {"flush": Flush, "cancel": Cancel, "close": Close}


def _field_type_ok(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int subclass in Python; {"gamma": true} is still a type error
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def parse_client_message(raw: str | bytes, *, max_text_chars: int = 100_000) -> ClientMessage:
    """Parse and validate one JSON text message; raises :class:`ProtocolError`."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, 'message needs a string "type" field')
    fields = {k: v for k, v in obj.items() if k != "type"}
    if kind == "start":
        return _parse_start(fields)
    if kind == "text":
        return _parse_text(fields, max_text_chars)
    if kind in _SIMPLE:
        if fields:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"{kind!r} takes no fields, got {sorted(fields)}")
        return _SIMPLE[kind]()
    raise ProtocolError(
        ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}; expected start, text, flush, cancel or close"
    )


def _parse_text(fields: dict[str, Any], max_text_chars: int) -> Text:
    unknown = set(fields) - {"text"}
    if unknown:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"unknown field(s) for 'text': {sorted(unknown)}")
    text = fields.get("text")
    if not isinstance(text, str):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "'text' needs a string field \"text\"")
    if len(text) > max_text_chars:
        raise ProtocolError(ErrorCode.TEXT_BUFFER_FULL, f"text fragment longer than {max_text_chars} characters")
    # lone surrogates ("\ud800") survive json.loads but cannot be encoded or spoken
    text = text.encode("utf-8", "replace").decode("utf-8")
    return Text(text)


def _parse_start(fields: dict[str, Any]) -> Start:
    unknown = set(fields) - set(_START_FIELDS)
    if unknown:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"unknown field(s) for 'start': {sorted(unknown)}")
    for name, value in fields.items():
        if not _field_type_ok(value, _START_FIELDS[name]):
            expected = " or ".join(t.__name__ for t in _START_FIELDS[name])
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"'start.{name}' must be {expected}, got {type(value).__name__}")
    if "rule" in fields and fields["rule"] in ("sampling", "ssd") and "temperature" not in fields:
        fields["temperature"] = 1.0  # sampling rules need a temperature; 1.0 is the model's own distribution
    start = Start(**fields)
    if start.encoding not in ENCODINGS:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'start.encoding' must be one of {ENCODINGS}")
    if not MIN_SAMPLE_RATE <= start.sample_rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"'start.sample_rate' must be in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]"
        )
    if not MIN_FRAME_MS <= start.frame_ms <= MAX_FRAME_MS:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'start.frame_ms' must be in [{MIN_FRAME_MS}, {MAX_FRAME_MS}]")
    if start.rule not in RULES:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'start.rule' must be one of {RULES}")
    if not math.isfinite(start.temperature) or not math.isfinite(start.speed):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "'start.temperature' and 'start.speed' must be finite")
    if not 0.25 <= start.speed <= 4.0:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "'start.speed' must be in [0.25, 4.0]")
    if not 0 <= start.seed < 2**63:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "'start.seed' must be in [0, 2**63)")
    if not 1 <= start.gamma <= 32:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "'start.gamma' must be in [1, 32]")
    try:  # the decoder's own validation (e.g. greedy with temperature > 0)
        SpecConfig(gamma_max=max(12, start.gamma), **start.spec_overrides())
    except ValueError as exc:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"invalid decoding options: {exc}") from None
    return start


# --- server events --------------------------------------------------------------------------
def event(kind: str, **fields: Any) -> str:
    """A server event as JSON text (``{"type": kind, ...fields}``)."""
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def error_event(code: str, message: str, *, fatal: bool = False) -> str:
    return event("error", code=code, message=message, fatal=fatal)


# --- audio frames ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameHeader:
    seq: int
    utterance: int
    sample_offset: int
    flags: int = 0
    version: int = FRAME_VERSION

    @property
    def utterance_start(self) -> bool:
        return bool(self.flags & FLAG_UTTERANCE_START)

    @property
    def segment_start(self) -> bool:
        return bool(self.flags & FLAG_SEGMENT_START)


def pack_frame(seq: int, utterance: int, sample_offset: int, flags: int, payload: bytes) -> bytes:
    """Header + payload, ready for ``ws.send_bytes``."""
    return FRAME_HEADER.pack(
        FRAME_MAGIC, FRAME_VERSION, flags, seq & 0xFFFFFFFF, utterance & 0xFFFFFFFF, sample_offset & 0xFFFFFFFF
    ) + payload


def unpack_frame(data: bytes) -> tuple[FrameHeader, bytes]:
    """Inverse of :func:`pack_frame` (used by clients and tests)."""
    if len(data) < FRAME_HEADER.size:
        raise ValueError(f"audio frame shorter than its {FRAME_HEADER.size}-byte header")
    magic, version, flags, seq, utt, offset = FRAME_HEADER.unpack_from(data)
    if magic != FRAME_MAGIC:
        raise ValueError(f"bad frame magic {magic!r}")
    return FrameHeader(seq, utt, offset, flags, version), data[FRAME_HEADER.size :]
