"""Distil the draft LM from the trained target: match its distribution, not the data.

Run: ``python -m voicestream.voice.distill --target runs/target/model --corpus runs/corpus --out runs/draft --minutes 30``
(``--resume`` continues exactly).  At the end it measures speculative acceptance.

Why KL to the target rather than training the draft on the corpus: speculative decoding
accepts a drafted token when it agrees with the *target*, so the draft's job is to
predict the target (errors included), and the soft targets carry far more signal per
position than one-hot labels.  Both distributions are taken under the slot grammar
(softmax over legal ids only), exactly as they are compared at decode time.
Loss = KL(target || draft) at temperature ``--temperature`` on the audio part of
teacher-forced corpus sequences, plus ``--ce-weight`` times the data cross-entropy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models import load_causal_lm
from ..spec.measure import measure_acceptance as measure
from .data import encode_utterances
from .loop import MODEL_DIR, LoopConfig, Trainer, add_loop_arguments, loop_overrides
from .lexicon import Lexicon
from .masking import TextFollowing
from .presets import count_parameters, preset, start_model
from .shards import Corpus
from .slot_logits import group_logits, hidden_and_head, position_groups
from .vocab import VoiceVocab

__all__ = ["distill_loss", "feature_distill_loss", "main", "make_distiller", "measure_acceptance"]


def _frozen(target: torch.nn.Module):
    """``target`` in eval mode without gradients; returns ``states(batch)`` -> (its final
    hidden states, its LM head weight), computed on the batch's device without grad."""
    target.eval()
    moved: list[torch.device] = []
    for p in target.parameters():
        p.requires_grad_(False)

    def states(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        ids = batch["input_ids"]
        if not moved or moved[0] != ids.device:  # the frozen target follows the batches' device
            target.to(ids.device)
            moved[:] = [ids.device]
        with torch.no_grad():
            return hidden_and_head(target, ids, batch["attention_mask"])

    return states


def _match_target(batch: dict, vocab: VoiceVocab, t_hidden, t_head, d_hidden, d_head, temperature: float,
                  ce_weight: float, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """KL(target || draft) over each position's legal ids (+ data CE), on the audio part.

    ``t_hidden`` (B, T, H) holds the target's states at every position; ``d_hidden`` the
    draft's at every position, or at ``positions`` (n,) only (each predicts the token after it)."""
    ids = batch["input_ids"]
    if positions is None:
        positions = torch.arange(ids.shape[1] - 1, device=ids.device)
        d_hidden = d_hidden[:, :-1]
    states = batch["states"][:, positions]
    labels = ids[:, positions + 1].reshape(-1)
    scored = (batch["weights"][:, positions + 1] == 1.0).reshape(-1)  # audio part only: what the draft drafts
    # both models' logits over each position's legal ids, at scored positions only
    where = [(idx[scored[idx]], lo, hi) for idx, lo, hi in position_groups(states, vocab)]
    where = [g for g in where if g[0].numel()]
    with torch.no_grad():
        t_groups = group_logits(t_hidden[:, positions], t_head, states, vocab, where)
    d_groups = group_logits(d_hidden, d_head, states, vocab, where)
    kl = ce = d_hidden.new_zeros(())
    t_ce = agree = 0.0
    for t, d in zip(t_groups, d_groups):
        y = labels[d.index] - d.offset
        t_logp = torch.log_softmax(t.logits / temperature, -1)
        d_logp = torch.log_softmax(d.logits / temperature, -1)
        kl = kl + (t_logp.exp() * (t_logp - d_logp)).sum()
        d_nll = d_logp if temperature == 1.0 else torch.log_softmax(d.logits, -1)
        ce = ce - d_nll.gather(1, y[:, None]).sum()
        with torch.no_grad():
            t_nll = t_logp if temperature == 1.0 else torch.log_softmax(t.logits, -1)
            t_ce -= float(t_nll.gather(1, y[:, None]).sum())
            agree += float((d.logits.argmax(-1) == t.logits.argmax(-1)).sum())
    denom = max(float(scored.sum()), 1.0)
    kl_mean, ce_mean = kl / denom, ce / denom
    loss = kl_mean * temperature**2 + ce_weight * ce_mean
    metrics = {
        "kl": float(kl_mean.detach()),
        "draft_nll": float(ce_mean.detach()),
        "target_nll": t_ce / denom,
        "argmax_agree": agree / denom,
    }
    return loss, metrics


def distill_loss(target: torch.nn.Module, vocab: VoiceVocab, *, temperature: float = 1.0, ce_weight: float = 0.0):
    """Loss function for :class:`Trainer` training a draft LM against a frozen ``target``."""
    target_states = _frozen(target)

    def loss_fn(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        t_hidden, t_head = target_states(batch)
        d_hidden, d_head = hidden_and_head(model, batch["input_ids"], batch["attention_mask"])
        return _match_target(batch, vocab, t_hidden, t_head, d_hidden, d_head, temperature, ce_weight)

    return loss_fn


def feature_distill_loss(target: torch.nn.Module, vocab: VoiceVocab, *, temperature: float = 1.0,
                         ce_weight: float = 0.0, feature_noise: float = 0.1, regression_weight: float = 1.0,
                         unroll: int = 1, depth_decay: float = 0.8, anchor_fraction: float = 0.25):
    """Loss for a :class:`~voicestream.spec.feature_draft.FeatureDraft`: the draft sees the
    target's states one position back (plus uniform noise of ``feature_noise`` times their
    RMS, so it tolerates its own imperfect states when drafting ahead) and is scored on the
    target's next-token distribution (KL, as for a draft LM) plus ``regression_weight`` times
    the smooth-L1 distance of its predicted states to the target's.

    ``unroll`` > 1 also scores drafting depths 2..unroll, where the draft runs on its own
    predicted states exactly as decoding does (:meth:`FeatureDraft.unroll`), on a random
    ``anchor_fraction`` of the positions; depth s weighs ``depth_decay ** (s-1)`` (a deep
    token counts only when every one before it was accepted). A batch may carry the
    target's states (``target_hidden``, (B, T, H)) computed once per sequence: the target is
    frozen, so they never change.
    """
    from ..spec.feature_draft import draft_inputs, random_anchors

    target_states = _frozen(target)

    def loss_fn(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        t_hidden = batch.get("target_hidden")
        if t_hidden is None:
            t_hidden, _ = target_states(batch)
        head = target.get_output_embeddings().weight
        noise = feature_noise if model.training else 0.0
        anchors = random_anchors(t_hidden.shape[1], unroll, anchor_fraction, t_hidden.device)
        depths = model.unroll(*draft_inputs(target, batch["input_ids"], t_hidden, noise), unroll, anchors)
        total = torch.zeros((), device=t_hidden.device)
        metrics: dict = {}
        for s, (pos, d_hidden) in enumerate(depths):
            if s == 0:
                loss, m = _match_target(batch, vocab, t_hidden, head, d_hidden, head, temperature, ce_weight)
                w = (batch["weights"] == 1.0).float()[..., None]
                reg_err = F.smooth_l1_loss(d_hidden, t_hidden, reduction="none")
            else:
                loss, m = _match_target(batch, vocab, t_hidden, head, d_hidden, head, temperature, ce_weight, pos)
                w = (batch["weights"][:, pos] == 1.0).float()[..., None]
                reg_err = F.smooth_l1_loss(d_hidden, t_hidden[:, pos], reduction="none")
            reg = (reg_err * w).sum() / (w.sum() * d_hidden.shape[-1]).clamp_min(1)
            total = total + depth_decay**s * (loss + regression_weight * reg)
            if s == 0:  # the depth-1 figures, comparable with runs that do not unroll
                metrics = {**m, "feature_l1": float(reg.detach())}
            else:
                metrics[f"agree_d{s + 1}"] = m["argmax_agree"]
        return total / sum(depth_decay**s for s in range(len(depths))), metrics

    return loss_fn


def measure_acceptance(target: torch.nn.Module, draft: torch.nn.Module, vocab: VoiceVocab, texts: list[str], *,
                       max_new_tokens: int = 400, rule: str = "greedy", gamma: int = 4, lexicon=None) -> dict:
    """Accepted tokens per target forward over ``texts``, grammar-masked (with ``lexicon``,
    the pronunciation lexicon the voice ships with) and stopped at the audio end like :class:`Voice`."""
    return measure(target, draft, [vocab.prompt_for(t) for t in texts], max_new_tokens=max_new_tokens, rule=rule,
                   gamma=gamma, constraint=TextFollowing(vocab, lexicon=lexicon), stop_ids=(vocab.audio_end_id,))


def make_distiller(
    target_dir: str | Path,
    corpus_dir: str | Path,
    out: str | Path,
    *,
    preset_name: str = "draft",
    resume: bool = False,
    loop_overrides: dict | None = None,
    temperature: float = 1.0,
    ce_weight: float = 0.0,
    seed: int = 0,
    init_from: str | Path | None = None,
    kind: str = "lm",
    unroll: int = 3,
    layers: int | None = None,
) -> tuple[Trainer, torch.nn.Module, VoiceVocab, dict]:
    """Build (or restore) the draft trainer; returns (trainer, target, vocab, summary).

    ``kind``: ``lm`` - a small voice LM (``preset_name``); ``feature`` - a
    :class:`~voicestream.spec.feature_draft.FeatureDraft` (``layers`` layers, default one,
    over the target's hidden states). ``init_from``: start the draft from a trained one of
    the same kind (e.g. the draft of an earlier layout) rather than fresh; a feature draft
    with fewer than ``layers`` layers is grown (:meth:`FeatureDraft.grown`). ``unroll``: a
    feature draft also trains on its drafting depths 2..unroll (:func:`feature_distill_loss`).
    """
    from ..spec.feature_draft import FeatureDraft, FeatureDraftConfig, load_feature_draft, with_depth

    if kind not in ("lm", "feature"):
        raise ValueError(f"kind must be 'lm' or 'feature', got {kind!r}")
    out = Path(out)
    # float32 weights whatever the checkpoint stores: the shipped voice is bf16 on disk, and
    # bf16 matmuls are emulated (~13x slower) on CPUs without native bf16; autocast
    # (LoopConfig.bf16) still computes in bf16 where that is fast
    target = load_causal_lm(target_dir, dtype=torch.float32)
    vocab = VoiceVocab.from_dict(target.config.voicestream_vocab)
    saved = Trainer.saved_config(out) if resume else None
    if resume and saved is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {out / MODEL_DIR}")
    if not resume and (out / MODEL_DIR).exists():
        raise FileExistsError(f"{out / MODEL_DIR} exists; pass --resume to continue or use a new --out")
    if saved is not None:
        cfg = LoopConfig(**{**saved, "betas": tuple(saved["betas"])})
        kind = cfg.extra.get("kind", "lm")
        draft = load_feature_draft(out / MODEL_DIR, target) if kind == "feature" else load_causal_lm(out / MODEL_DIR)
        temperature, ce_weight = cfg.extra["temperature"], cfg.extra["ce_weight"]
        unroll = cfg.extra.get("unroll", 1)
    else:
        mp, tp = preset(preset_name)
        if kind == "feature":
            torch.manual_seed(seed)
            if init_from is None:
                draft = FeatureDraft(FeatureDraftConfig.for_target(target, num_hidden_layers=layers or 1))
            else:
                draft = load_feature_draft(init_from, target)
        else:
            draft = start_model(mp, vocab, seed=seed, init_from=init_from)
        cfg = LoopConfig(
            lr=tp.lr, min_lr_ratio=tp.min_lr_ratio, warmup_steps=tp.warmup_steps, total_steps=tp.total_steps,
            weight_decay=tp.weight_decay, grad_clip=tp.grad_clip, batch_tokens=tp.batch_tokens, seed=seed,
            extra={"job": "distill", "kind": kind, "preset": preset_name, "target": str(target_dir), "corpus": str(corpus_dir),
                   "temperature": temperature, "ce_weight": ce_weight, "unroll": unroll,
                   "init_from": str(init_from) if init_from is not None else None},
        )
    if layers is not None and kind != "feature":
        raise ValueError("layers applies to feature drafts; an LM draft's size is its --preset")
    draft = with_depth(draft, layers, resumed=saved is not None)
    for k, v in (loop_overrides or {}).items():
        if v is not None:
            setattr(cfg, k, v)
    corpus = Corpus(corpus_dir)
    max_len = min(target.config.max_position_embeddings, draft.config.max_position_embeddings)
    train, stats = encode_utterances(vocab, corpus.utterances("train"), max_len=max_len)
    held, _ = encode_utterances(vocab, corpus.utterances("heldout"), max_len=max_len) \
        if "heldout" in corpus.splits else ([], {})
    fields = ("loss", "kl", "draft_nll", "target_nll", "argmax_agree")
    if kind == "feature":
        loss = feature_distill_loss(target, vocab, temperature=temperature, ce_weight=ce_weight, unroll=unroll)
        fields += ("feature_l1",) + tuple(f"agree_d{s}" for s in range(2, unroll + 1))
    else:
        loss = distill_loss(target, vocab, temperature=temperature, ce_weight=ce_weight)
    trainer = Trainer(draft, train, loss, out,
                      cfg, pad_id=vocab.pad_id, heldout=held, log_fields=fields)
    if saved is not None:
        trainer.load_state()
    summary = {
        "draft_parameters": count_parameters(draft),
        "target_parameters": count_parameters(target),
        "layout": vocab.layout,
        "kind": kind,
        "train_examples": stats,
        "resumed_at_step": trainer.step if saved is not None else None,
        "init_from": cfg.extra.get("init_from"),
    }
    return trainer, target, vocab, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Distil the draft LM from the target.")
    ap.add_argument("--target", type=Path, required=True, help="target model dir (HF layout)")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kind", choices=["lm", "feature"], default="lm",
                    help="lm: a small voice LM (--preset); feature: one layer over the target's hidden states "
                         "(EAGLE-style)")
    ap.add_argument("--preset", default="draft", help="--kind lm: the draft's size")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start the draft from this voice LM (e.g. a draft of another layout) instead of the preset")
    ap.add_argument("--unroll", type=int, default=3,
                    help="--kind feature: also train drafting depths 2..N on the draft's own predicted states "
                         "(1: teacher forcing only; the same default as `voicestream distill`)")
    ap.add_argument("--layers", type=int, default=None,
                    help="--kind feature: draft layers (default 1); with --init-from a feature draft of fewer "
                         "layers, the new ones go on top and start as no-ops")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--ce-weight", type=float, default=0.0)
    ap.add_argument("--eval-prompts", type=int, default=4, help="heldout prompts for the acceptance check (0: skip)")
    ap.add_argument("--eval-max-tokens", type=int, default=400)
    add_loop_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = loop_overrides(args)
    trainer, target, vocab, summary = make_distiller(
        args.target, args.corpus, args.out, preset_name=args.preset, resume=args.resume, loop_overrides=overrides,
        temperature=args.temperature, ce_weight=args.ce_weight, seed=args.seed, init_from=args.init_from,
        kind=args.kind, unroll=args.unroll, layers=args.layers,
    )
    print(json.dumps(summary))
    result = trainer.run()
    print(json.dumps(result))
    if args.eval_prompts > 0:
        corpus = Corpus(args.corpus)
        split = "heldout" if "heldout" in corpus.splits else "train"
        texts = [u.norm for u in corpus.utterances(split)[: args.eval_prompts]]
        trainer.model.eval()
        with torch.inference_mode():
            acc = measure_acceptance(target, trainer.model, vocab, texts, max_new_tokens=args.eval_max_tokens,
                                     lexicon=Lexicon.find(args.target))  # decoded as say decodes
        (Path(args.out) / "acceptance.json").write_text(json.dumps(acc, indent=1))
        print(json.dumps({"acceptance": acc}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
