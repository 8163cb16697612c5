"""Build the built-in voice in one command: corpus -> target -> draft -> package -> acceptance.

Run: ``python -m voicestream.voice.recipe --out runs/voice --device cuda --train-minutes 8 --distill-minutes 2``

Why one command: training the voice to intelligibility takes days of a 2-core CPU but
minutes of one GPU, and a borrowed GPU comes with a short, fixed time budget and a
bare machine.  Everything that can run on a CPU beforehand does (the Piper corpus:
``--corpus`` points at one built here and carried along; it is rebuilt only if
missing), and each stage is time-budgeted, checkpointed and resumable, so a second
call continues where the first one stopped.  The last stage installs the weights as the
built-in voice (``--install``) and writes ``summary.json`` with the losses and the
measured acceptance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .loop import BEST_DIR, MODEL_DIR, add_bf16_arguments, bf16_of

__all__ = ["main", "run_recipe"]


def _stage(name: str) -> float:
    print(f"== {name}", flush=True)
    return time.perf_counter()


def _chosen(run_dir: Path) -> Path:
    """The checkpoint a stage hands on: its best held-out one when kept, else its last."""
    return run_dir / BEST_DIR if (run_dir / BEST_DIR / "config.json").exists() else run_dir / MODEL_DIR


def run_recipe(args: argparse.Namespace) -> dict:
    from .corpus import CorpusConfig, build_corpus
    from .distill import make_distiller, measure_acceptance
    from .lexicon import build_for_target
    from .package import DEFAULT_VOICE_DIR, package_model
    from .shards import MANIFEST, Corpus
    from .train import make_trainer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus_dir = Path(args.corpus) if args.corpus else out / "corpus"
    summary: dict = {"device": args.device, "bf16": args.bf16}
    common = {"device": args.device, "bf16": args.bf16, "threads": args.threads or torch.get_num_threads(),
              "progress": not args.no_progress, "ckpt_minutes": args.ckpt_minutes, "max_steps": args.max_steps,
              "anneal": args.anneal, "keep_best": args.keep_best}
    if args.batch_tokens:
        common["batch_tokens"] = args.batch_tokens

    t0 = _stage("corpus")
    if not (corpus_dir / MANIFEST).exists():
        wide = str(args.words) if args.words and args.wide_share > 0 else None
        build_corpus(corpus_dir, CorpusConfig(n=args.sentences, heldout=args.heldout, seed=args.seed,
                                              wide_words=wide, wide_share=args.wide_share),
                     threads=args.threads or 1, progress=not args.no_progress)
    summary["corpus"] = {"dir": str(corpus_dir), "seconds": round(time.perf_counter() - t0, 1),
                         "utterances": sum(s["n"] for s in Corpus(corpus_dir).manifest["shards"])}

    t0 = _stage("target")
    resume = (out / "target" / MODEL_DIR).exists()
    trainer, info = make_trainer(corpus_dir, out / "target", preset_name=args.target_preset, resume=resume,
                                 layout=args.layout, input_noise=args.input_noise,
                                 init_from=None if resume else args.init_from,
                                 loop_overrides={**common, "minutes": args.train_minutes,
                                                 "total_steps": args.train_steps}, seed=args.seed)
    summary["target"] = {**info, **trainer.run(), "seconds": round(time.perf_counter() - t0, 1)}
    del trainer
    target_dir = _chosen(out / "target")
    summary["target"]["handed_on"] = str(target_dir)
    lexicon = None
    if args.layout == "phones":  # the pronunciation lexicon travels with the target (voice/lexicon.py)
        lexicon, _, summary["lexicon"] = build_for_target(corpus_dir, target_dir, words=args.words,
                                                          progress=not args.no_progress)

    t0 = _stage("draft")
    resume = (out / "draft" / MODEL_DIR).exists()
    trainer, target, vocab, info = make_distiller(
        target_dir, corpus_dir, out / "draft", preset_name=args.draft_preset, resume=resume,
        loop_overrides={**common, "minutes": args.distill_minutes, "total_steps": args.distill_steps}, seed=args.seed,
        init_from=None if resume else args.draft_init_from,
    )
    summary["draft"] = {**info, **trainer.run(), "seconds": round(time.perf_counter() - t0, 1)}

    _stage("acceptance")
    texts = [u.norm for u in Corpus(corpus_dir).utterances("heldout")[: args.eval_prompts]]
    from ..models import resolve_draft

    target = target.eval()
    draft_dir = _chosen(out / "draft")
    draft = trainer.model.eval() if draft_dir.name == MODEL_DIR else resolve_draft(target, draft_dir).eval()
    summary["draft"]["handed_on"] = str(draft_dir)
    with torch.inference_mode():
        summary["acceptance"] = measure_acceptance(target, draft, vocab, texts, max_new_tokens=args.eval_max_tokens,
                                                   lexicon=lexicon)  # decoded as say decodes

    if args.install:
        _stage("install")
        dst = Path(args.install_dir) if args.install_dir else DEFAULT_VOICE_DIR
        summary["installed"] = [package_model(target_dir, dst / "target"),
                                package_model(draft_dir, dst / "draft")]
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", type=Path, required=True, help="run directory (corpus, target, draft, summary.json)")
    ap.add_argument("--corpus", type=Path, default=None, help="a corpus built beforehand (default: OUT/corpus)")
    ap.add_argument("--sentences", type=int, default=4000, help="corpus size when it has to be built")
    ap.add_argument("--heldout", type=int, default=40)
    ap.add_argument("--wide-share", type=float, default=0.0,
                    help="when the corpus is built: odds that a content-word slot draws from --words "
                         "(voice/wide_vocab.py; 0.5 took agent-sentence WER from 30.6 to 16.7 %%)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_bf16_arguments(ap)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--target-preset", default="target")
    ap.add_argument("--layout", default="phones", choices=["phones", "words", "plain"],
                    help="sequence layout of the target (see voicestream.voice.vocab and voice/phones.py)")
    ap.add_argument("--words", type=Path, default=None,
                    help="phones layout: a word list (one a line, e.g. /usr/share/dict/american-english) whose "
                         "teacher pronunciations join the lexicon, for words the corpus never said")
    ap.add_argument("--input-noise", type=float, default=0.0,
                    help="target: probability of a random codec input token (see voicestream.voice.input_noise)")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="warm-start the target from a trained voice LM (e.g. the checkpoint in checkpoints/)")
    ap.add_argument("--draft-preset", default="draft")
    ap.add_argument("--draft-init-from", type=Path, default=None, help="warm-start the draft from a trained draft")
    ap.add_argument("--train-minutes", type=float, default=8.0)
    ap.add_argument("--train-steps", type=int, default=None, help="cosine schedule length (default: the preset's)")
    ap.add_argument("--distill-minutes", type=float, default=2.0)
    ap.add_argument("--distill-steps", type=int, default=None)
    ap.add_argument("--batch-tokens", type=int, default=None, help="tokens per step (GPUs: 65536 or more)")
    ap.add_argument("--ckpt-minutes", type=float, default=2.0, help="also how often the held-out loss is scored")
    ap.add_argument("--anneal", choices=["steps", "time"], default="time",
                    help="time (default): each stage's cosine spans its --*-minutes; steps: its --*-steps")
    ap.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=True,
                    help="hand on (and install) each stage's lowest held-out checkpoint rather than its last")
    ap.add_argument("--max-steps", type=int, default=None, help="stop each stage at this global step (smoke runs)")
    ap.add_argument("--eval-prompts", type=int, default=4)
    ap.add_argument("--eval-max-tokens", type=int, default=400)
    ap.add_argument("--install", action="store_true", help="install the result as the built-in voice")
    ap.add_argument("--install-dir", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    if args.wide_share > 0 and args.words is None:
        ap.error("--wide-share draws from the --words list: pass --words too")
    args.bf16 = bf16_of(args, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = run_recipe(args)
    print(json.dumps({k: v for k, v in summary.items() if k != "installed"} | {"installed": bool(args.install)},
                     indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
