"""``voicestream serve``: argument parsing and start-up (voices loaded once, then served)."""
from __future__ import annotations

import argparse
import logging

from .config import ServerConfig
from .vad import VadConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--voice", action="append", default=[], metavar="NAME=TARGET_DIR[:DRAFT_DIR]",
        help="a trained voice (voicestream.voice checkpoints); repeatable",
    )
    p.add_argument("--test-voice", action="store_true", help="add the built-in formant test voice as 'test'")
    p.add_argument("--test-voice-pace", type=float, default=0.0, help="test voice: min wall s per audio s (mimic a bigger model)")
    p.add_argument("--default-voice", default=None)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $VOICESTREAM_API_KEY)")
    p.add_argument("--allow-origin", action="append", default=None, metavar="ORIGIN",
                   help="browser Origin allowed on /v1/* (repeatable; '*' = any; default: same host only)")
    d = ServerConfig()
    p.add_argument("--max-sessions", type=int, default=d.max_sessions)
    p.add_argument("--max-msg-size", type=int, default=d.max_msg_size, help="bytes per websocket message")
    p.add_argument("--max-text-chars", type=int, default=d.max_text_chars, help="unspoken text per session")
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout_s, help="seconds")
    p.add_argument("--max-queued-audio-ms", type=int, default=d.max_queued_audio_ms)
    p.add_argument("--shutdown-deadline", type=float, default=d.shutdown_deadline_s, help="seconds to finish on SIGTERM")
    v = VadConfig()
    p.add_argument("--vad-aggressiveness", type=int, default=v.aggressiveness, choices=(0, 1, 2, 3))
    p.add_argument("--vad-window", type=int, default=v.window, help="barge-in: frames considered (M)")
    p.add_argument("--vad-min-voiced", type=int, default=v.min_voiced, help="barge-in: voiced frames of the last M (N)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads per generation (default 1: sessions run in parallel threads; "
                        "more threads per tiny model only contend)")
    p.add_argument("--log-level", default="WARNING")
    from voicestream.adapters.families.cli import add_family_arguments

    add_family_arguments(p)  # --adapter orpheus|neutts|generic --target PATH [--draft PATH|self:N] ...


def build_config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        max_sessions=args.max_sessions,
        max_msg_size=args.max_msg_size,
        max_text_chars=args.max_text_chars,
        idle_timeout_s=args.idle_timeout,
        max_queued_audio_ms=args.max_queued_audio_ms,
        shutdown_deadline_s=args.shutdown_deadline,
        api_key=args.api_key or ServerConfig.api_key_from_env(),
        allowed_origins=tuple(o.rstrip("/") for o in args.allow_origin) if args.allow_origin else None,
        vad=VadConfig(aggressiveness=args.vad_aggressiveness, window=args.vad_window, min_voiced=args.vad_min_voiced),
        default_voice=args.default_voice,
    )


def load_voices(args: argparse.Namespace) -> list:
    from .synth import load_voice_synthesizer

    voices = []
    for spec in args.voice:
        name, sep, dirs = spec.partition("=")
        if not sep or not name or not dirs:
            raise SystemExit(f"--voice expects NAME=TARGET_DIR[:DRAFT_DIR], got {spec!r}")
        target, _, draft = dirs.partition(":")
        voices.append(load_voice_synthesizer(target, draft or None, name=name, threads=args.torch_threads))
    if getattr(args, "adapter", None):
        from voicestream.adapters.families.cli import family_synthesizer_from_args

        voices.append(family_synthesizer_from_args(args))
    if args.test_voice:
        from .formant import FormantConfig, FormantSynthesizer

        voices.append(FormantSynthesizer(FormantConfig(pace=args.test_voice_pace)))
    if not voices:
        raise SystemExit(
            "no voice to serve: pass --voice NAME=TARGET_DIR[:DRAFT_DIR], --adapter NAME --target PATH, and/or --test-voice"
        )
    return voices


def main(args: argparse.Namespace) -> int:
    import torch

    from .app import VoiceServer, serve
    from .synth import VoiceUnavailableError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.torch_threads)
    try:
        voices = load_voices(args)
    except VoiceUnavailableError as exc:
        raise SystemExit(str(exc)) from None
    serve(VoiceServer(build_config(args), voices))
    return 0
