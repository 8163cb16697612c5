"""``voicestream bench batch``: batched vs per-session speculative decoding under load.

N concurrent callers each speak ``--utterances`` sentences back to back through the full
voice path (text -> prompt -> speculative decoder -> Codec2 streaming decoder -> PCM),
first with one decoder per session (what ``voicestream serve`` does without
``--batch``: a worker thread per session, 1 intra-op thread each), then with one
:class:`~voicestream.batch.BatchedDecoder` shared by all (one scheduler thread using all
cores). Callers arrive spread over ``--arrival-window`` seconds, as calls do. Both modes
decode the same texts with the same greedy settings, so they do the same work; the
script counts utterances whose audio is bit-identical in both modes (float32 batched
matrix products may round differently and flip a rare near-tie; the tests check exact
equality in float64) and prints, per N: aggregate LM tokens/s, TTFA p50/p95
(call -> first PCM chunk), and the batched/per-session throughput ratio.

Without ``--target`` the voice is the built-in voice's architecture (the ``target``
preset, Codec2 vocabulary and grammar) with synthetic weights: a
refined pair whose draft is the target's first layer (see ``models.refined_pair``), so
acceptance resembles a distilled draft's. Timing depends on the shapes, not on what
the weights say.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..batch import BatchConfig

TEXTS = (
    "Your order shipped this morning and should arrive on Thursday.",
    "I can move your appointment to four thirty, if that works for you.",
    "The weather tomorrow looks dry, with a high of nineteen degrees.",
    "Thanks for waiting. I have found the booking under your name.",
    "Please hold on while I check the last three payments on the account.",
    "Sure, the nearest branch opens at nine and closes at half past five.",
)


@dataclass
class LevelResult:
    mode: str
    sessions: int
    tokens: int = 0
    wall_s: float = 0.0
    ttfa_s: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    outputs: dict[tuple[int, int], str] = field(default_factory=dict)  # audio digest per (caller, utterance)
    errors: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    def ttfa_ms(self, q: float) -> float:
        if not self.ttfa_s:
            return float("nan")
        xs = sorted(self.ttfa_s)
        return 1000 * xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]

    def row(self) -> dict:
        return {
            "mode": self.mode, "sessions": self.sessions, "utterances": len(self.ttfa_s), "tokens": self.tokens,
            "wall_s": round(self.wall_s, 2), "tokens_per_s": round(self.tokens_per_s, 1),
            "ttfa_ms_p50": round(self.ttfa_ms(50), 1), "ttfa_ms_p95": round(self.ttfa_ms(95), 1),
            "accepted_per_target_forward": round(statistics.fmean(self.accepted), 2) if self.accepted else None,
            "errors": self.errors,
        }


def build_models(args: argparse.Namespace):
    from ..models import load_causal_lm, refined_pair
    from ..voice.presets import PRESETS
    from ..voice.vocab import VoiceVocab

    dtype = getattr(torch, args.dtype)
    if args.target:
        target = load_causal_lm(args.target, dtype=dtype)
        draft = load_causal_lm(args.draft, dtype=dtype) if args.draft else None
        return target, draft, f"{args.target} + {args.draft}"
    m, _ = PRESETS["target"]
    target, draft = refined_pair(
        draft_layers=1, refine_scale=args.refine_scale, vocab_size=VoiceVocab().vocab_size, hidden_size=m.hidden,
        num_layers=m.layers, num_heads=m.heads, num_kv_heads=m.kv_heads, intermediate_size=m.intermediate,
        max_positions=m.max_positions, seed=args.seed,
    )
    desc = (f"voice architecture (target preset {m.layers}x{m.hidden}, GQA {m.heads}/{m.kv_heads}, vocab "
            f"{target.config.vocab_size}), synthetic refined pair, draft = first layer, {args.dtype}")
    return target.to(dtype), draft.to(dtype), desc


def run_level(voice, mode: str, n: int, args: argparse.Namespace, cfg_for) -> LevelResult:
    """N callers, each speaking ``args.utterances`` texts back to back."""
    from ..voice.synthesize import SynthesisStats

    res = LevelResult(mode, n)
    lock = threading.Lock()
    rng = random.Random(args.seed + n)
    offsets = sorted(rng.uniform(0, args.arrival_window) for _ in range(n)) if n > 1 else [0.0]
    bar = tqdm(total=n * args.utterances, desc=f"{mode:>11} N={n}", leave=False)
    t0 = time.perf_counter()

    pauses = [[rng.uniform(0, 2 * args.pause) for _ in range(args.utterances)] for _ in range(n)]

    def caller(i: int) -> None:
        time.sleep(offsets[i])
        for u in range(args.utterances):
            if u:
                time.sleep(pauses[i][u])  # the other party speaks between two answers
            text = TEXTS[(i + u) % len(TEXTS)]
            st = SynthesisStats()
            digest = hashlib.sha256()
            try:
                for pcm in voice.stream(text, cfg_for(text), stats=st):
                    digest.update(pcm.tobytes())
            except Exception as exc:  # reported, never hidden
                with lock:
                    res.errors.append(f"caller {i}: {exc!r}")
                return
            with lock:
                res.tokens += st.lm_tokens
                if st.ttfa_s is not None:
                    res.ttfa_s.append(st.ttfa_s)
                res.accepted.append(st.accepted_per_target_forward)
                res.outputs[(i, u)] = digest.hexdigest()
                bar.update()

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.timeout)
    res.wall_s = time.perf_counter() - t0
    bar.close()
    if any(t.is_alive() for t in threads):
        res.errors.append(f"timed out after {args.timeout}s")
    return res


def run_benchmark(args: argparse.Namespace) -> dict:
    from ..voice import Voice

    target, draft, desc = build_models(args)
    per_session = Voice(target, draft)
    batched = Voice(target, draft, batch=BatchConfig(max_batch=args.max_batch, warmup_tokens=args.warmup_tokens,
                                                      priority_burst=args.priority_burst, min_lead_s=args.min_lead_s,
                                                      tick_token_budget=args.tick_token_budget))

    def cfg_for(text: str):
        return per_session.spec_config.with_(max_new_tokens=args.max_new_tokens, gamma=args.gamma,
                                             jump_forward=not args.no_jump_forward)

    cores = torch.get_num_threads() if args.threads is None else args.threads
    report = {"voice": desc, "jump_forward": not args.no_jump_forward, "max_new_tokens": args.max_new_tokens, "utterances": args.utterances,
              "arrival_window_s": args.arrival_window, "pause_s": args.pause, "max_batch": args.max_batch, "threads": cores, "levels": []}
    # warm-up: lazy allocations and first-call costs, both modes
    torch.set_num_threads(1)
    for _ in per_session.stream(TEXTS[0], cfg_for(TEXTS[0]).with_(max_new_tokens=32)):
        pass
    torch.set_num_threads(cores)
    for _ in batched.stream(TEXTS[0], cfg_for(TEXTS[0]).with_(max_new_tokens=32)):
        pass
    for n in args.sessions:
        torch.set_num_threads(1)  # per-session: parallel worker threads, one core's worth each
        a = run_level(per_session, "per-session", n, args, cfg_for)
        torch.set_num_threads(cores)  # batched: one scheduler thread, all cores
        b = run_level(batched, "batched", n, args, cfg_for)
        same = sum(a.outputs.get(k) == v for k, v in b.outputs.items())
        report["levels"].append({
            "sessions": n, "per_session": a.row(), "batched": b.row(),
            "throughput_ratio": round(b.tokens_per_s / a.tokens_per_s, 2) if a.tokens_per_s else None,
            "identical_audio": f"{same}/{len(b.outputs)}",
        })
    per_session.close()
    batched.close()
    single = next((lv for lv in report["levels"] if lv["sessions"] == 1), None)
    if single:
        report["single_session_ttfa_ms_p50"] = single["per_session"]["ttfa_ms_p50"]
        report["single_session_ttfa_ms_p95"] = single["per_session"]["ttfa_ms_p95"]
    return report


def format_table(report: dict) -> str:
    lines = [f"voice: {report['voice']}",
             f"{report['utterances']} utterance(s) per caller, {report['max_new_tokens']} LM tokens each, callers "
             f"arrive over {report['arrival_window_s']} s, pause {report.get('pause_s', 0)} s; batched: max_batch {report['max_batch']}, "
             f"{report['threads']} thread(s)", ""]
    hdr = (f"{'N':>3}  {'per-session tok/s':>17}  {'batched tok/s':>13}  {'ratio':>5}  "
           f"{'TTFA p50/p95 per-session (ms)':>29}  {'TTFA p50/p95 batched (ms)':>25}  {'acc/fwd':>7}  identical audio")
    lines += [hdr, "-" * len(hdr)]
    for lv in report["levels"]:
        a, b = lv["per_session"], lv["batched"]
        lines.append(
            f"{lv['sessions']:>3}  {a['tokens_per_s']:>17.1f}  {b['tokens_per_s']:>13.1f}  {lv['throughput_ratio'] or 0:>5.2f}  "
            f"{a['ttfa_ms_p50']:>14.0f} / {a['ttfa_ms_p95']:<12.0f}  {b['ttfa_ms_p50']:>11.0f} / {b['ttfa_ms_p95']:<11.0f}  "
            f"{b['accepted_per_target_forward'] or 0:>7.2f}  {lv['identical_audio']}"
        )
        for e in a["errors"] + b["errors"]:
            lines.append(f"     error: {e}")
    if "single_session_ttfa_ms_p50" in report:
        lines.append(f"\nsingle-session TTFA p50 / p95: {report['single_session_ttfa_ms_p50']:.0f} / "
                     f"{report.get('single_session_ttfa_ms_p95', float('nan')):.0f} ms "
                     "(the bar: batched p95 within 2x of it)")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16, 64], help="concurrency levels N")
    p.add_argument("--utterances", type=int, default=2, help="sentences per caller, back to back")
    p.add_argument("--max-new-tokens", type=int, default=280, help="LM tokens per utterance (350 = 1 s of audio)")
    p.add_argument("--arrival-window", type=float, default=2.0, help="callers' first requests spread over this many s")
    p.add_argument("--pause", type=float, default=0.0,
                   help="mean pause (uniform 0..2x) between a caller's utterances; 0: back to back, so the callers "
                        "of one batch finish together and start their next answers as one wave (the worst case)")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--warmup-tokens", type=int, default=16)
    p.add_argument("--priority-burst", type=int, default=BatchConfig.priority_burst)
    p.add_argument("--tick-token-budget", type=int, default=None,
                   help="cap the tokens one tick verifies (default: 48 on a CPU; 0: no cap)")
    p.add_argument("--min-lead-s", type=float, default=BatchConfig.min_lead_s,
                   help="lead-aware priority: speaking sessions keep this much audio in hand (inf: off)")
    p.add_argument("--gamma", type=int, default=4)
    p.add_argument("--no-jump-forward", action="store_true",
                   help="draft and verify the characters the voice's grammar forces, as before jump-forward")
    p.add_argument("--threads", type=int, default=None, help="batched mode's intra-op threads (default: all)")
    p.add_argument("--timeout", type=float, default=900.0, help="per level and mode, seconds")
    p.add_argument("--target", help="a trained voice's target directory (default: synthetic voice architecture)")
    p.add_argument("--draft", help="its draft directory")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--refine-scale", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    report = run_benchmark(args)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    bad = any(lv["per_session"]["errors"] or lv["batched"]["errors"] for lv in report["levels"])
    return 1 if bad else 0
