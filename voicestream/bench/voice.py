"""``voicestream bench voice``: a voice's decoding speed per (weights, draft), side by side.

Every configuration speaks the same sentences in one process, round-robin per sentence
so machine noise hits them alike. Greedy decoding throughout, so each speculative run is
checked token for token against plain decoding with the same weights (exact in float32;
int8 verification quantises a chunk's rows together, so there a near-tie may differ).
Ratios are against plain float32 decoding. ``--drafts oracle:ACC`` adds the ceiling: a free
draft that replays plain decoding's tokens, each right with probability ACC
(:mod:`voicestream.spec.oracle_draft`; float32 rows only).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..config import POLICIES
from ..spec.oracle_draft import OracleDraft, parse_oracle
from ..voice.lexicon import add_plan_argument

OVERLAPPED = "overlapped"  # not a draft-length policy: pipelined decoding (the draft drafts ahead on its lane)

DEFAULT_SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call me back when you get this message.",
    "It is going to rain tomorrow afternoon, so bring a coat.",
    "Your table for four is ready at seven thirty.",
)


@dataclass
class Run:
    name: str
    weights: str
    draft: str | None
    tokens: int = 0
    seconds: float = 0.0
    audio_s: float = 0.0
    target_forwards: int = 0
    ttfa: list[float] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # a digest of each sentence's PCM

    def row(self, base: "Run") -> dict:
        tps = self.tokens / self.seconds if self.seconds else 0.0
        base_tps = base.tokens / base.seconds if base.seconds else 0.0
        return {
            "name": self.name, "weights": self.weights, "draft": self.draft,
            "tokens_per_s": round(tps, 1), "x_plain_fp32": round(tps / base_tps, 3) if base_tps else 0.0,
            "accepted_per_target_forward": round(self.tokens / max(self.target_forwards, 1), 3),
            "rtf": round(self.seconds / self.audio_s, 3) if self.audio_s else None,
            "ttfa_ms": round(1000 * sorted(self.ttfa)[len(self.ttfa) // 2], 1) if self.ttfa else None,
        }


def _speak(voice, text: str, run: Run, policy: str | None, *, keep_tokens: bool = False):
    """Speak ``text`` into ``run``'s totals; returns the utterance's stats (with its LM
    tokens when ``keep_tokens``)."""
    from ..voice.synthesize import SynthesisStats

    cfg = voice.spec_config.with_(max_new_tokens=voice.max_new_tokens_for(text))
    if policy == OVERLAPPED:
        cfg = cfg.with_(draft_length="heuristic", pipelined=True)
    elif policy is not None:
        cfg = cfg.with_(draft_length=policy)
    st = SynthesisStats(tokens=[] if keep_tokens else None)
    t0 = time.perf_counter()
    pcm = list(voice.stream(text, cfg, stats=st))
    run.seconds += time.perf_counter() - t0
    run.outputs.append(hashlib.sha1(b"".join(p.tobytes() for p in pcm)).hexdigest())
    run.tokens += st.lm_tokens
    run.audio_s += st.audio_s
    run.ttfa.append(st.ttfa_s or 0.0)
    gen = st.generation if isinstance(st.generation, dict) else {}
    run.target_forwards += int(gen.get("target_forwards", 0))
    return st


def bench(args: argparse.Namespace) -> dict:
    from ..models import load_causal_lm, resolve_draft
    from ..say import resolve_voice_dirs
    from ..voice.lexicon import resolve_plan
    from ..voice.synthesize import Voice

    torch.set_num_threads(args.threads)
    target_dir, default_draft = resolve_voice_dirs(args.target, None)
    lexicon, durations = resolve_plan(args.plan, target_dir)  # decode as say does
    drafts = {"none": None}
    for spec in args.drafts:
        if spec == "default" and default_draft is None:
            continue  # --target without a built-in draft: only the drafts named
        drafts[spec] = str(default_draft) if spec == "default" else spec
    if any(parse_oracle(spec) is not None for spec in drafts.values() if spec) and "fp32" not in args.weights:
        raise ValueError("an oracle draft replays plain float32 decoding: add fp32 to --weights")
    runs: list[tuple[Run, Voice, str | None]] = []
    oracles: list[OracleDraft] = []  # they replay what plain float32 decoding says
    for weights in args.weights:
        # one copy per format: the format lives on the model; drafts load on the target's device
        target = load_causal_lm(target_dir, dtype=torch.float32).to(args.device)
        for name, spec in drafts.items():
            accuracy = parse_oracle(spec) if spec else None
            if accuracy is not None:
                if weights != "fp32":
                    continue  # int8 verification may leave the recorded tokens at a near-tie
                draft = OracleDraft(target, accuracy)
                oracles.append(draft)
            else:
                draft = resolve_draft(target, spec) if spec else None
            voice = Voice(target, draft, weights=weights, lexicon=lexicon, lexicon_durations=durations,
                          draft_cpu_threads=args.draft_threads)
            voice.synthesize("Hello.", voice.spec_config.with_(max_new_tokens=40))  # warm-up
            if draft is None:
                runs.append((Run(f"plain-{weights}", weights, None), voice, None))
            for policy in (args.draft_lengths if draft is not None else ()):
                runs.append((Run(f"spec-{weights} [{name}, {policy}]", weights, spec), voice, policy))
    sentences = list(args.sentences or DEFAULT_SENTENCES)[: args.n] * args.repeat
    with torch.inference_mode():
        for text in tqdm(sentences, desc="bench voice", unit="sentence", disable=args.json):
            for run, voice, policy in runs:  # plain rows come first: the oracles record them
                plain_fp32 = run.draft is None and run.weights == "fp32"
                st = _speak(voice, text, run, policy, keep_tokens=plain_fp32 and bool(oracles))
                if plain_fp32 and oracles:
                    recorded = voice.vocab.prompt_for(text) + st.tokens
                    for oracle in oracles:
                        oracle.record(recorded)
    base = next((r for r, _, _ in runs if r.draft is None and r.weights == "fp32"), runs[0][0])
    rows = []
    for r, _, _ in runs:
        row = r.row(base)
        if r.draft is not None:  # same audio as plain decoding with the same weights?
            plain = next(p for p, _, _ in runs if p.draft is None and p.weights == r.weights)
            row["same_audio_as_plain"] = r.outputs == plain.outputs
        rows.append(row)
    return {"target": str(target_dir), "threads": args.threads, "device": args.device, "sentences": len(sentences),
            "runs": rows, "base": base.name}


def format_table(report: dict) -> str:
    lines = [f"target {report['target']}; {report['sentences']} sentences; {report['device']}, "
             f"{report['threads']} threads", ""]
    head = f"{'run':<40} {'tok/s':>7} {'x ' + report['base']:>12} {'tok/fwd':>8} {'RTF':>6} {'TTFA ms':>8} {'= plain':>8}"
    lines += [head, "-" * len(head)]
    for r in report["runs"]:
        lines.append(f"{r['name']:<40} {r['tokens_per_s']:>7.1f} {r['x_plain_fp32']:>11.2f}x "
                     f"{r['accepted_per_target_forward']:>8.2f} {r['rtf'] or 0:>6.2f} {r['ttfa_ms'] or 0:>8.0f} "
                     f"{ {True: 'yes', False: 'NO', None: '-'}[r.get('same_audio_as_plain')]:>8}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help="voice target directory (default: the built-in voice)")
    p.add_argument("--drafts", nargs="*", default=["default"],
                   help="draft directories to compare (LM or feature drafts), 'default' for the built-in draft, "
                        "self:N, or oracle:ACC (a free draft replaying plain float32 decoding, each token right "
                        "with probability ACC: the most a draft that good could buy here); plain decoding always runs")
    p.add_argument("--weights", nargs="*", choices=["fp32", "int8"], default=["fp32", "int8"])
    p.add_argument("--draft-lengths", nargs="*", choices=[*POLICIES, OVERLAPPED], default=["heuristic", "cost"],
                   help="draft-length policies to run each draft with; 'overlapped': pipelined decoding, the draft "
                        "drafting ahead on its own lane (thread or CUDA stream) while the target verifies")
    p.add_argument("--n", type=int, default=4, help="sentences")
    p.add_argument("--repeat", type=int, default=1, help="speak the sentences this many times (less noise)")
    p.add_argument("--sentences", nargs="*", help="sentences to speak (default: four built-in ones)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per forward (the target's)")
    p.add_argument("--draft-threads", type=int, default=1, help="CPU threads of the draft lane (overlapped rows)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (int8 weights are a CPU format: use --weights fp32)")
    p.add_argument("--json", action="store_true")
    add_plan_argument(p)


def main(args: argparse.Namespace) -> int:
    report = bench(args)
    print(json.dumps(report) if args.json else format_table(report))
    return 0
