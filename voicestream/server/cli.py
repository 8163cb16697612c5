"""``voicestream serve``: argument parsing and start-up (voices loaded once, then served)."""
from __future__ import annotations

import argparse
import logging
import os

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
    p.add_argument("--batch", type=int, default=0, metavar="N",
                   help="decode up to N sessions per voice together in one batched forward (continuous "
                        "batching, voicestream.batch); 0 = one decoder per session (default)")
    p.add_argument("--batch-warmup-tokens", type=int, default=16,
                   help="with --batch: sessions with fewer generated tokens get priority ticks (first audio)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="intra-op threads (default: 1 per session without --batch, since sessions run in "
                        "parallel threads; all cores with --batch, since one thread runs the batch)")
    p.add_argument("--codec-pick", choices=["model", "median"], default="model",
                   help="trained voices: codec tokens by the request's rule (model) or the field-wise median (median)")
    from voicestream.say import add_weights_argument

    add_weights_argument(p)  # trained voices' LM forward: fp32 | int8 | auto
    from voicestream.voice.lexicon import add_plan_argument

    add_plan_argument(p)  # trained phones voices: who writes the phone list (auto | model | lexicon | ...)
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


def batch_config(args: argparse.Namespace):
    """The BatchConfig ``--batch`` asks for, or None for per-session decoding."""
    if not getattr(args, "batch", 0):
        return None
    if args.batch < 0:
        raise SystemExit("--batch expects N >= 0")
    from voicestream.batch import BatchConfig

    return BatchConfig(max_batch=args.batch, warmup_tokens=args.batch_warmup_tokens)


def torch_threads(args: argparse.Namespace) -> int:
    if args.torch_threads is not None:
        return args.torch_threads
    return (os.cpu_count() or 1) if getattr(args, "batch", 0) else 1


def load_voices(args: argparse.Namespace) -> list:
    from .synth import load_voice_synthesizer

    batch = batch_config(args)
    voices = []
    for spec in args.voice:
        name, sep, dirs = spec.partition("=")
        if not sep or not name or not dirs:
            raise SystemExit(f"--voice expects NAME=TARGET_DIR[:DRAFT_DIR], got {spec!r}")
        target, _, draft = dirs.partition(":")
        voices.append(load_voice_synthesizer(target, draft or None, name=name, threads=torch_threads(args), batch=batch,
                                             codec_pick=args.codec_pick, weights=args.weights, plan=args.plan))
    if getattr(args, "adapter", None):
        from voicestream.adapters.families.cli import family_synthesizer_from_args

        voices.append(family_synthesizer_from_args(args, batch=batch))
    if args.test_voice:
        from .formant import FormantConfig, FormantSynthesizer

        voices.append(FormantSynthesizer(FormantConfig(pace=args.test_voice_pace), batch=batch))
    if not voices:
        from voicestream import say

        if not (say.DEFAULT_VOICE_DIR / "target" / "config.json").exists():
            raise SystemExit(
                "no voice to serve: this build has no built-in voice; pass --voice NAME=TARGET_DIR[:DRAFT_DIR], "
                "--adapter NAME --target PATH, and/or --test-voice"
            )
        target, draft = say.resolve_voice_dirs(None)  # the built-in voice, served as "default"
        voices.append(load_voice_synthesizer(target, draft, name="default", threads=torch_threads(args), batch=batch,
                                             codec_pick=args.codec_pick, weights=args.weights, plan=args.plan))
    return voices


def main(args: argparse.Namespace) -> int:
    import torch

    from .app import VoiceServer, serve
    from .synth import VoiceUnavailableError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(torch_threads(args))
    try:
        voices = load_voices(args)
    except VoiceUnavailableError as exc:
        raise SystemExit(str(exc)) from None
    serve(VoiceServer(build_config(args), voices))
    return 0
