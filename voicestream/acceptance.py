"""``voicestream eval acceptance``: how many tokens per target forward each draft earns, on
one fixed prompt set, side by side.

Accepted tokens per target forward is what a draft is for, and it depends on the prompts
by more than the gain of a typical distillation run (built-in voice: ~0.08 between two sets
of 60-100 sentences, against +0.01-0.02 for a 75-minute run). So drafts are compared on the
same prompts in one run, and the built-in voice ships its own set
(``voice/default/acceptance_prompts.txt``: 100 sentences no distillation run trained on), so
figures from different sessions and machines compare too. A fixed draft length (not the
cost policy) makes the figure a property of draft and target, not of the machine's speed.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from .say import DEFAULT_VOICE_DIR
from .voice.lexicon import add_plan_argument

DEFAULT_PROMPTS = DEFAULT_VOICE_DIR / "acceptance_prompts.txt"


def summarize(name: str, result: dict) -> dict:
    """A draft's row: the overall figure, its standard error over prompts, per-depth rates."""
    per = result.pop("per_prompt")
    n = len(per)
    mean = sum(per) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in per) / (n - 1)) if n > 1 else float("nan")
    return {"draft": name, **result, "per_prompt_sd": round(sd, 3), "standard_error": round(sd / math.sqrt(n), 3)}


def evaluate(target_dir: str | Path, drafts: list[str], prompts_file: str | Path | None, *, n: int | None,
             gamma: int, max_new_tokens: int, rule: str, plan: str = "auto", progress: bool = True) -> dict:
    from tqdm import tqdm

    from .distill import prompts_from_file, voice_of
    from .models import load_causal_lm, resolve_draft
    from .spec.measure import measure_acceptance

    target = load_causal_lm(target_dir, dtype=torch.float32).eval()
    voice, constraint = voice_of(target, target_dir, plan)
    if prompts_file is None:
        if voice is None:
            raise ValueError("--prompts is needed for a target that is not a voicestream voice")
        prompts_file = DEFAULT_PROMPTS
    prompts = prompts_from_file(prompts_file, target_dir, voice)[:n]
    rows = []
    with tqdm(total=len(drafts) * len(prompts), desc="acceptance", unit="prompt", disable=not progress) as bar:
        for d in drafts:
            draft = resolve_draft(target, d).eval()
            r = measure_acceptance(target, draft, prompts, max_new_tokens=max_new_tokens, gamma=gamma, rule=rule,
                                   constraint=constraint, on_prompt=bar.update)  # as distill measures: figures compare
            rows.append(summarize(str(d), r))
    return {"target": str(target_dir), "prompts_file": str(prompts_file), "max_new_tokens": max_new_tokens,
            "drafts": rows}


def format_table(report: dict) -> str:
    depths = sorted({int(k) for r in report["drafts"] for k in r["accepted_by_depth"]})
    head = f"{'draft':<44}{'tok/fwd':>9}{'+/- SE':>8}" + "".join(f"{'d' + str(d):>7}" for d in depths)
    lines = [f"target {report['target']}; {report['drafts'][0]['prompts']} prompts from {report['prompts_file']}, "
             f"{report['max_new_tokens']} new tokens each, {report['drafts'][0]['rule']}, "
             f"gamma {report['drafts'][0]['gamma']}", head, "-" * len(head)]
    for r in report["drafts"]:
        by = {int(k): v for k, v in r["accepted_by_depth"].items()}
        lines.append(f"{r['draft'][-44:]:<44}{r['mean_accepted_per_target_forward']:>9.3f}{r['standard_error']:>8.3f}"
                     + "".join(f"{by[d]:>7.3f}" if d in by else f"{'-':>7}" for d in depths))
    lines.append("d1..dN: share of verifications that accepted the token drafted at that depth")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help="target checkpoint directory (default: the built-in voice)")
    p.add_argument("--draft", nargs="+", help="draft directories or self:N, measured on the same prompts "
                                              "(default: the built-in voice's draft)")
    p.add_argument("--prompts", help="prompt file, one per line (default for the built-in voice: its shipped "
                                     "held-out set)")
    p.add_argument("--n", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--gamma", type=int, default=4, help="fixed draft length")
    p.add_argument("--max-new-tokens", type=int, default=400)
    p.add_argument("--rule", choices=["greedy", "sampling"], default="greedy")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr, beside --json)")
    add_plan_argument(p)  # a voice's prompts are decoded under the plan say uses


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    target = args.target or DEFAULT_VOICE_DIR / "target"
    drafts = args.draft or ([str(DEFAULT_VOICE_DIR / "draft")] if not args.target else None)
    if not drafts:
        raise ValueError("--draft is needed with --target")
    report = evaluate(target, drafts, args.prompts, n=args.n, gamma=args.gamma, max_new_tokens=args.max_new_tokens,
                      rule=args.rule, plan=args.plan, progress=not args.no_progress)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
