"""Train the voice LM (target or draft preset) on a corpus, time-budgeted and resumable.

Run: ``python -m voicestream.voice.train --corpus runs/corpus --out runs/target --preset target --minutes 30``
and later the same with ``--resume`` to continue exactly where the last run stopped.

Sequences are ``<bos> text <text_end> <audio_start> ... <audio_end>`` in the vocabulary's
layout (the CLI's default ``phones``: each word group is re-emitted with its phones and
their durations right before its frames; see :mod:`voicestream.voice.vocab` and
:mod:`voicestream.voice.phones` for why).  The loss is cross-entropy under the slot
grammar (a softmax over only the legal ids at each position, exactly what masked
decoding samples from) on everything after ``<audio_start>``, plus ``--text-weight``
times the loss on the prompt text.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models import load_causal_lm
from .data import encode_utterances
from .input_noise import CodecInputNoise
from .loop import MODEL_DIR, LoopConfig, Trainer, add_loop_arguments, loop_overrides
from .phones import phone_inventory
from .presets import count_parameters, preset, start_model
from .shards import Corpus
from .slot_logits import group_logits, hidden_and_head, scatter
from .vocab import LAYOUTS, VoiceVocab

__all__ = ["grammar_loss", "main", "make_trainer"]


def grammar_loss(vocab: VoiceVocab, *, input_noise: float = 0.0):
    """Loss function for :class:`Trainer`: weighted grammar-masked next-token CE.

    Computed over each position's legal ids only (:mod:`~voicestream.voice.slot_logits`):
    the same value as a softmax over all ids with illegal ones masked, at about half the
    cost of a step on a CPU.  ``input_noise``: probability of swapping each codec *input*
    token for a random code of its codebook while the model is in training mode
    (:mod:`~voicestream.voice.input_noise`); labels and held-out scoring stay clean.
    """
    noise = CodecInputNoise(vocab, input_noise) if input_noise else None

    def loss_fn(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        inputs = noise(batch["input_ids"]) if noise is not None and model.training else batch["input_ids"]
        hidden, head = hidden_and_head(model, inputs, batch["attention_mask"])
        states = batch["states"][:, :-1]
        labels = batch["input_ids"][:, 1:].reshape(-1)
        groups = group_logits(hidden[:, :-1], head, states, vocab)
        nll = scatter(groups, [F.cross_entropy(g.logits, labels[g.index] - g.offset, reduction="none")
                               for g in groups], labels.numel()).view_as(states)
        w = batch["weights"][:, 1:]
        loss = (nll * w).sum() / w.sum().clamp_min(1e-6)
        with torch.no_grad():
            audio = (w == 1.0).float()
            text = ((w > 0) & (w < 1.0)).float()
            metrics = {
                "audio_nll": float((nll * audio).sum() / audio.sum().clamp_min(1)),
                "text_nll": float((nll * text).sum() / text.sum().clamp_min(1)),
            }
        return loss, metrics

    return loss_fn


def _init_phones(init_from: str | Path) -> tuple[str, ...] | None:
    """The phone list of the voice LM at ``init_from`` (None if it has none)."""
    raw = json.loads((Path(init_from) / "config.json").read_text()).get("voicestream_vocab") or {}
    return tuple(raw["phones"]) if raw.get("layout") == "phones" and raw.get("phones") else None


def _with_phones(utts: list, phones) -> list:
    """The utterances whose teacher phones are all in ``phones``."""
    allowed = set(phones)
    return [u for u in utts if {p for p, _ in u.meta.get("phonemes") or ()} <= allowed]


def make_trainer(
    corpus_dir: str | Path,
    out: str | Path,
    *,
    preset_name: str = "target",
    layout: str = "words",
    resume: bool = False,
    init_from: str | Path | None = None,
    loop_overrides: dict | None = None,
    text_weight: float | None = None,
    input_noise: float = 0.0,
    seed: int = 0,
) -> tuple[Trainer, dict]:
    """Build (or restore) a trainer; returns it and a summary of the data/model.

    ``init_from``: start from a trained voice LM's weights (any layout of the same ids,
    see :func:`~voicestream.voice.presets.warm_start`) instead of a fresh ``preset_name``.
    """
    out = Path(out)
    corpus = Corpus(corpus_dir)
    train_utts = corpus.utterances("train")
    saved = Trainer.saved_config(out) if resume else None
    if resume and saved is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {out / MODEL_DIR}")
    if not resume and (out / MODEL_DIR).exists():
        raise FileExistsError(f"{out / MODEL_DIR} exists; pass --resume to continue or use a new --out")
    mp, tp = preset(preset_name)
    if saved is not None:
        extra = saved["extra"]
        model = load_causal_lm(out / MODEL_DIR)
        vocab = VoiceVocab.from_dict(model.config.voicestream_vocab)
        cfg = LoopConfig(**{**saved, "betas": tuple(saved["betas"])})
        text_weight = extra["text_weight"]
        input_noise = float(extra.get("input_noise", 0.0))
    else:
        phones = phone_inventory(u.meta.get("phonemes") or () for u in train_utts) if layout == "phones" else ()
        kept = _init_phones(init_from) if layout == "phones" and init_from is not None else None
        vocab = VoiceVocab(layout=layout, phones=kept or phones)
        model = start_model(mp, vocab, seed=seed, init_from=init_from)
        text_weight = tp.text_weight if text_weight is None else text_weight
        cfg = LoopConfig(
            lr=tp.lr, min_lr_ratio=tp.min_lr_ratio, warmup_steps=tp.warmup_steps, total_steps=tp.total_steps,
            weight_decay=tp.weight_decay, grad_clip=tp.grad_clip, batch_tokens=tp.batch_tokens, seed=seed,
            extra={"job": "train", "preset": preset_name, "text_weight": text_weight, "input_noise": input_noise,
                   "corpus": str(corpus_dir),
                   "init_from": str(init_from) if init_from is not None else None},
        )
    held_utts = corpus.utterances("heldout") if "heldout" in corpus.splits else []
    if vocab.layout == "phones":
        # A continued voice keeps its phone ids (its lexicon, word table and draft use them):
        # the few sentences with a phone it never had are left out instead, held-out ones too.
        fit = _with_phones(train_utts, vocab.phones)
        if len(fit) < len(train_utts):
            used = phone_inventory((u.meta.get("phonemes") or () for u in train_utts), base=())
            lacking = set(used) - set(vocab.phones)
            print(f"train: {len(train_utts) - len(fit)} of {len(train_utts)} sentences use phones the model lacks "
                  f"({' '.join(sorted(lacking))}); left out")
        train_utts, held_utts = fit, _with_phones(held_utts, vocab.phones)
    for k, v in (loop_overrides or {}).items():
        if v is not None:
            setattr(cfg, k, v)
    max_len = model.config.max_position_embeddings
    train, stats = encode_utterances(vocab, train_utts, text_weight=text_weight, max_len=max_len)
    held, _ = encode_utterances(vocab, held_utts, text_weight=text_weight, max_len=max_len) if held_utts else ([], {})
    loss_fn = grammar_loss(vocab, input_noise=input_noise)
    trainer = Trainer(model, train, loss_fn, out, cfg, pad_id=vocab.pad_id, heldout=held,
                      log_fields=("loss", "audio_nll", "text_nll"))
    if saved is not None:
        trainer.load_state()
    summary = {
        "preset": cfg.extra.get("preset", preset_name),
        "layout": vocab.layout,
        "parameters": count_parameters(model),
        "train_examples": stats,
        "heldout_examples": len(held),
        "train_tokens": int(sum(len(e) for e in train)),
        "input_noise": input_noise,
        "init_from": cfg.extra.get("init_from"),
        "resumed_at_step": trainer.step if saved is not None else None,
    }
    return trainer, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train the built-in voice LM.")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="target", help="target | draft | tiny")
    ap.add_argument("--layout", default="phones", choices=list(LAYOUTS),
                    help="phones (default): the teacher's phones and durations in the sequence; words; plain")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from this trained voice LM (e.g. a words-layout checkpoint for a phones run)")
    ap.add_argument("--text-weight", type=float, default=None)
    ap.add_argument("--input-noise", type=float, default=0.0,
                    help="probability of replacing each codec input token by a random code of its codebook "
                         "(against exposure bias; labels stay clean; kept on --resume)")
    add_loop_arguments(ap, warmup=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = loop_overrides(args)
    trainer, summary = make_trainer(
        args.corpus, args.out, preset_name=args.preset, layout=args.layout, resume=args.resume, init_from=args.init_from,
        loop_overrides=overrides, text_weight=args.text_weight, input_noise=args.input_noise, seed=args.seed,
    )
    print(json.dumps(summary))
    result = trainer.run()
    print(json.dumps({"config": {k: v for k, v in asdict(trainer.cfg).items() if k != "extra"}, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
