"""``voicestream say``: text -> speculative decoding -> streaming codec -> a WAV file.

Prints what a voice-agent developer watches: time to first audio, real-time factor and
accepted tokens per target forward, so the effect of the draft (or ``--no-draft``) shows.
"""
from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path

import numpy as np

from .config import POLICIES, SamplingConfig, SpecConfig
from .voice.lexicon import add_plan_argument

DEFAULT_VOICE_DIR = Path(__file__).parent / "voice" / "default"


def resolve_voice_dirs(
    target: str | Path | None, draft: str | Path | None = None, *, no_draft: bool = False
) -> tuple[Path, Path | str | None]:
    """The checkpoints to load: the given ones, or the built-in voice shipped in the package.

    ``draft`` may also be ``"self:N"`` (self-speculation: the target's first N layers),
    passed through as the string for :func:`voicestream.models.resolve_draft`.
    """
    from .models import parse_self_draft

    if draft and parse_self_draft(str(draft)) is not None:
        draft = str(draft)
    elif draft:
        draft = Path(draft)
    if target:
        return Path(target), (draft if draft and not no_draft else None)
    target_dir, draft_dir = DEFAULT_VOICE_DIR / "target", DEFAULT_VOICE_DIR / "draft"
    if not (target_dir / "config.json").exists():
        raise SystemExit(
            "voicestream: no default voice is installed in this build "
            f"({target_dir} is missing). Pass --target DIR [--draft DIR] with checkpoints from "
            "`python -m voicestream.voice.train` / `python -m voicestream.voice.distill`."
        )
    if draft:
        return target_dir, None if no_draft else draft
    return target_dir, (None if no_draft or not (draft_dir / "config.json").exists() else draft_dir)


def spec_config(args: argparse.Namespace, base: SpecConfig) -> SpecConfig:
    if args.rule in ("greedy", "topk"):
        sampling = SamplingConfig(temperature=0.0)
    else:
        sampling = SamplingConfig(temperature=args.temperature or 1.0, top_k=args.top_k)
    cfg = base.with_(rule=args.rule, sampling=sampling, gamma=args.gamma, gamma_max=max(args.gamma, base.gamma_max),
                     beta=args.beta, seed=args.seed)
    if args.pipelined:  # the cost policy times sequential steps: overlapped drafting adapts by heuristic
        return cfg.with_(pipelined=True, draft_length=args.draft_length or "heuristic")
    return cfg.with_(draft_length=args.draft_length) if args.draft_length else cfg


def write_wav(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
    data = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(data)


def main(args: argparse.Namespace) -> int:
    from .text.normalize import normalize_text
    from .voice.synthesize import Voice

    text = args.text if args.text not in (None, "-") else sys.stdin.read()
    normalize_text(text)  # empty or unspeakable text fails here, before a model loads
    out_dir = Path(args.output).resolve().parent
    if not out_dir.is_dir():
        raise FileNotFoundError(f"no directory {out_dir} to write {args.output} into")
    target, draft = resolve_voice_dirs(args.target, args.draft, no_draft=args.no_draft)
    voice = Voice.load(target, draft, threads=args.threads, greedy_plan=not args.sample_plan,
                       codec_pick=args.codec_pick, weights=args.weights, plan=args.plan)
    cfg = spec_config(args, voice.spec_config)
    stats, parts = speak_segments(voice, text, cfg)
    pcm = np.concatenate([np.zeros(0, np.float32), *parts])
    write_wav(Path(args.output), pcm, voice.sample_rate)
    ttfa = f"{stats.ttfa_s * 1000:.0f} ms" if stats.ttfa_s is not None else "-"
    print(
        f"wrote {args.output}: {stats.audio_s:.2f} s of audio at {voice.sample_rate} Hz"
        f"{f' in {n} segments' if (n := stats.generation['segments']) > 1 else ''} | "
        f"time to first audio {ttfa} | RTF {stats.rtf:.3f} | "
        f"accepted tokens per target forward {stats.accepted_per_target_forward:.2f} "
        f"({'no draft' if draft is None else 'draft ' + str(draft)}; {voice.weights} weights)"
    )
    unknown = voice.unknown_words(text) if voice.lexicon is not None else []
    if unknown:  # said from their letters by the LM: the likeliest words to come out wrong
        print(f"not in the pronunciation lexicon (the model guesses them from their letters): {', '.join(unknown)}")
    return 0


def speak_segments(voice, text: str, cfg) -> tuple["SynthesisStats", list[np.ndarray]]:
    """Speak ``text`` a segment at a time, cut as the server cuts it (sentences, long
    clauses: :class:`~voicestream.text.SentenceSegmenter`): the voice learned single
    sentences, and a paragraph as one prompt ran past what it can hold together.
    Returns the PCM chunks and stats over the whole text (TTFA: the first segment's)."""
    import time

    from .text import SentenceSegmenter
    from .voice.synthesize import SynthesisStats

    seg = SentenceSegmenter()
    segments = [s for s in seg.push(text) + seg.flush() if s.strip()] or [text]
    total, parts, forwards = SynthesisStats(text=text), [], 0
    t0 = time.perf_counter()
    for piece in segments:
        st = SynthesisStats()
        parts += voice.stream(piece, cfg.with_(max_new_tokens=min(cfg.max_new_tokens, voice.max_new_tokens_for(piece))),
                              stats=st)
        if total.ttfa_s is None and st.ttfa_s is not None:
            total.ttfa_s = time.perf_counter() - t0 - st.wall_s + st.ttfa_s
        for name in ("prompt_tokens", "lm_tokens", "codec_tokens", "frames", "audio_s"):
            setattr(total, name, getattr(total, name) + getattr(st, name))
        forwards += int(st.generation.get("target_forwards", 0))
        total.finish_reason = st.finish_reason
    total.wall_s = time.perf_counter() - t0
    total.generation = {"segments": len(segments), "target_forwards": forwards,
                        "mean_accepted_per_target_forward": total.lm_tokens / forwards if forwards else 0.0}
    return total, parts


def add_weights_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", choices=["fp32", "int8", "auto"], default="auto",
                   help="weight format of the LM forward on CPU (default auto: int8 where supported). int8 decoded "
                        "the built-in voice 1.34x faster than float32 on an AVX2 EPYC, ~2x on an AVX512-VNNI one; "
                        "speculative greedy output then may differ from plain greedy at near-ties (fp32 keeps "
                        "them identical)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", help="text to speak; '-' or nothing reads standard input")
    p.add_argument("-o", "--output", required=True, help="WAV file to write")
    p.add_argument("--target", help="target checkpoint directory (default: the built-in voice)")
    p.add_argument("--draft", help="draft checkpoint directory, or self:N (the target's first N layers as the draft)")
    p.add_argument("--no-draft", action="store_true", help="plain target decoding (the baseline)")
    p.add_argument("--rule", choices=["greedy", "topk", "sampling", "ssd"], default="greedy")
    p.add_argument("--gamma", type=int, default=4, help="initial draft length")
    p.add_argument("--draft-length", choices=list(POLICIES), default=None,
                   help="draft-length policy (default: the voice's, 'cost': draft only where it pays)")
    p.add_argument("--pipelined", action="store_true",
                   help="overlap drafting with verification: the draft drafts ahead on its own thread (CUDA stream) "
                        "while the target verifies; pays where a target forward costs many draft steps (a GPU), "
                        "not on a 2-core CPU")
    p.add_argument("--beta", type=float, default=0.0, help="ssd tolerance")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-plan", action="store_true",
                   help="phones voices: sample the phone list and durations too (default: greedy, only the sound is sampled)")
    p.add_argument("--codec-pick", choices=["model", "median"], default="model",
                   help="median: each codec token is the field-wise median of the model's distribution "
                        "(deterministic; ordinal codecs such as the built-in Codec2) instead of --rule's choice")
    p.add_argument("--threads", type=int, default=None)
    add_plan_argument(p)
    add_weights_argument(p)
