"""Ship a trained target (+ draft) as the built-in voice: bf16 safetensors, HF layout.

Run: ``python -m voicestream.voice.package --target runs/target/model --draft runs/draft/model``

Why bf16: the shipped weights must stay well under 50 MB in the repository.  On a CPU
the voice upcasts them to float32 to decode (:func:`voicestream.models.compute_dtype`).  Only
``config.json``, ``generation_config.json``, ``model.safetensors`` and the data files the
voice reads beside them (``lexicon.json``) are written: the optimiser state of a training
checkpoint stays behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from ..models import load_causal_lm
from ..say import DEFAULT_VOICE_DIR
from .lexicon import FILENAME as LEXICON_FILE, WORDS_FILENAME
from .presets import count_parameters

DATA_FILES = (LEXICON_FILE, WORDS_FILENAME, "words.COPYRIGHT")  # the word list's notice travels with it

__all__ = ["DEFAULT_VOICE_DIR", "package_model", "main"]


def package_model(src: str | Path, dst: str | Path, *, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Load ``src`` and save it to ``dst`` in ``dtype``; returns a summary."""
    dst = Path(dst)
    from ..spec.feature_draft import FeatureDraft, is_feature_draft_dir

    if is_feature_draft_dir(src):  # a feature draft has no LM head of its own: not an AutoModelForCausalLM
        model = FeatureDraft.from_pretrained(str(src), local_files_only=True).to(dtype)
    else:
        model = load_causal_lm(src).to(dtype)
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    for name in DATA_FILES:  # data the voice reads beside its weights
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, tmp / name)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    size = sum(p.stat().st_size for p in dst.iterdir())
    return {"source": str(src), "out": str(dst), "parameters": count_parameters(model), "bytes": size,
            "dtype": str(dtype).removeprefix("torch.")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Install trained checkpoints as the built-in voice.")
    ap.add_argument("--target", type=Path, required=True)
    ap.add_argument("--draft", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=DEFAULT_VOICE_DIR)
    args = ap.parse_args(argv)
    out = [package_model(args.target, args.out / "target")]
    if args.draft is not None:
        out.append(package_model(args.draft, args.out / "draft"))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
