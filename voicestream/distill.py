"""``voicestream distill``: build and train a small draft for any target, on the target's
own generations.

Most users have a target and no draft. Speculative decoding accepts a drafted token when
it agrees with the *target*, so the draft learns the target's distribution (KL on its
logits over sequences the target itself generated), not the data the target came from.
Resumable: generated data, draft weights and optimizer state live in ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import SamplingConfig, SpecConfig
from .malloc import keep_freed_memory, release_freed_memory
from .models import load_causal_lm, padding_mask, resolve_draft
from .spec import SpeculativeDecoder
from .spec.measure import measure_acceptance
from .voice.loop import LoopConfig, add_bf16_arguments, bf16_of, lr_at
from .voice.lexicon import add_plan_argument


def draft_config(target_config, layers: int, hidden: int | None):
    """The target's architecture, shrunk: same vocabulary and special ids."""
    cfg = copy.deepcopy(target_config)
    if hidden:
        heads = max(1, min(cfg.num_attention_heads // 4, hidden // 32))
        cfg.hidden_size = hidden
        cfg.intermediate_size = 4 * hidden
        cfg.num_attention_heads = heads
        cfg.num_key_value_heads = heads
        if getattr(cfg, "head_dim", None):
            cfg.head_dim = hidden // heads
    cfg.num_hidden_layers = layers
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = list(cfg.layer_types)[:layers]
    return cfg


def voice_of(target, target_dir: str | Path | None = None, plan: str = "auto"):
    """``(vocab, constraint)`` when ``target`` is a voicestream voice LM, else ``(None, None)``.

    A voice's prompts are text, and its generations must follow the slot grammar (and the
    prompt's text), exactly as :class:`~voicestream.voice.Voice` decodes: the draft learns
    and is measured on what it will really be asked to draft -- with the pronunciation
    lexicon shipped beside ``target_dir`` too, under the same ``plan`` as ``say``.
    """
    raw = getattr(target.config, "voicestream_vocab", None)
    if not raw:
        return None, None
    from .voice.lexicon import resolve_plan
    from .voice.masking import TextFollowing
    from .voice.vocab import VoiceVocab

    vocab = VoiceVocab.from_dict(raw)
    lexicon, durations = resolve_plan(plan, target_dir) if target_dir is not None and vocab.layout == "phones" \
        else (None, False)
    return vocab, TextFollowing(vocab, lexicon=lexicon, lexicon_durations=durations)


def prompts_from_file(path: str | Path, target_dir: str | Path, voice=None) -> list[list[int]]:
    """One prompt per line: text for a voice or a target with a tokenizer, else token ids."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path} holds no prompts")
    if voice is not None:
        return [voice.prompt_for(ln) for ln in lines]
    try:
        return [[int(t) for t in ln.replace(",", " ").split()] for ln in lines]
    except ValueError:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(target_dir, local_files_only=True)
        return [tok(ln)["input_ids"] for ln in lines]


def read_prompts(args: argparse.Namespace, vocab: int, voice=None) -> list[list[int]]:
    """Prompts from a file (:func:`prompts_from_file`) or a seeded default set: sentences
    for a voice, random token prompts otherwise."""
    if args.prompts:
        return prompts_from_file(args.prompts, args.target, voice)
    if voice is not None:
        from .voice.sentences import sentences

        # a seed of its own, so the default prompts are not the voice corpus's sentences
        return [voice.prompt_for(t) for t in sentences(args.n_prompts, seed=10_000 + args.seed)]
    rng = random.Random(args.seed)
    return [[rng.randrange(vocab) for _ in range(8)] for _ in range(args.n_prompts)]


def generate_data(target, prompts: list[list[int]], n_tokens: int, seed: int, constraint=None,
                  batch: int = 16, temperature: float = 1.0) -> list[list[int]]:
    """The target's own continuations (what the draft must learn to predict): sampled at
    ``temperature``, or greedy at 0 -- the contexts a greedy decoder will draft in.

    Generated ``batch`` at a time by the batched decoder (continuous batching; each prompt
    keeps its own seeded randomness), or one by one for architectures it does not support.
    """
    from .batch import BatchConfig, BatchedDecoder, UnsupportedModelError

    cfg = SpecConfig(rule="greedy" if temperature == 0 else "sampling", sampling=SamplingConfig(temperature=temperature),
                     max_new_tokens=n_tokens)
    bar = tqdm(total=len(prompts), desc="target generations")
    try:
        dec = BatchedDecoder(target, None, config=BatchConfig(max_batch=batch, priority=False, tick_token_budget=0))
    except UnsupportedModelError:
        dec = SpeculativeDecoder(target)
        out = []
        for i, p in enumerate(prompts):
            out.append(p + [t for c in dec.generate(p, cfg.with_(seed=seed + i), constraint=constraint) for t in c.tokens])
            bar.update()
        bar.close()
        return out
    try:
        reqs = [dec.submit(p, cfg.with_(seed=seed + i), constraint=constraint) for i, p in enumerate(prompts)]
        out = []
        for p, req in zip(prompts, reqs):
            toks: list[int] = []
            while True:
                item = req.out.get()
                if isinstance(item, BaseException):
                    raise item
                toks += item.tokens
                if item.finish_reason is not None:
                    break
            out.append(p + toks)
            bar.update()
    finally:
        dec.close()
        bar.close()
    return out


def padded_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their attention mask (generations of a voice end at different lengths)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def kl_weights(seqs: list[list[int]], prompt_lens: list[int], width: int) -> torch.Tensor:
    """(B, width) 1 where a position predicts a *generated* token: the draft never drafts the
    prompt, so matching the target there would spend its capacity on nothing."""
    w = torch.zeros(len(seqs), width)
    for i, (s, n) in enumerate(zip(seqs, prompt_lens)):
        w[i, max(n - 1, 0) : len(s) - 1] = 1.0
    return w


def grammar_states(voice, seqs: list[list[int]], width: int) -> torch.Tensor:
    """(B, width) the voice's slot-grammar state after each position.

    Positions that predict padding (a generation cut at its token budget mid-frame, and
    the padding itself) get DONE, all ids legal: their weight is 0, but their pad label
    must still index the logits they are given.
    """
    from .voice.vocab import GrammarState

    g = voice.grammar
    states = torch.full((len(seqs), width), int(GrammarState.DONE), dtype=torch.long)
    for i, s in enumerate(seqs):
        states[i, : len(s) - 1] = torch.from_numpy(g.states(s[:-1], strict=False).astype("int64"))
    return states


def _feature_kl(target, draft, batch: torch.Tensor, weights: torch.Tensor,
                t_hidden: torch.Tensor, *, unroll: int = 1, depth_decay: float = 0.8,
                anchor_fraction: float = 0.25, feature_noise: float = 0.1) -> torch.Tensor:
    """A feature draft on a plain LM: KL(target || draft) plus the smooth-L1 distance of its
    predicted states to the target's, per drafting depth (weighted as in
    :func:`voicestream.voice.distill.feature_distill_loss`, the voice version). No padding
    mask: batches are right-padded, so causal attention already keeps every real position
    from seeing a pad, and pad positions weigh 0."""
    from .spec.feature_draft import draft_inputs, random_anchors

    head = target.get_output_embeddings()
    anchors = random_anchors(batch.shape[1], unroll, anchor_fraction)
    total = 0.0
    for s, (pos, d_hidden) in enumerate(draft.unroll(*draft_inputs(target, batch, t_hidden, feature_noise), unroll, anchors)):
        with torch.no_grad():
            t_logp = F.log_softmax(head(t_hidden[:, pos]).float(), -1)
        d_logp = F.log_softmax(head(d_hidden).float(), -1)
        per = (t_logp.exp() * (t_logp - d_logp)).sum(-1) + F.smooth_l1_loss(d_hidden, t_hidden[:, pos], reduction="none").mean(-1)
        w = weights[:, pos]
        total = total + depth_decay**s * (per * w).sum() / w.sum().clamp(min=1.0)
    return total / sum(depth_decay**s for s in range(unroll))


class TargetStates:
    """The frozen target's final hidden states per training sequence, computed once each:
    a feature draft's inputs and targets never change, and the target's forward is most of
    a step's cost.

    They live in one buffer allocated up front, not one tensor per sequence: states cached
    while training would otherwise be long-lived blocks scattered through the heap the steps'
    activations are freed into, splitting its free space (see :mod:`voicestream.malloc`)."""

    def __init__(self, target, seqs: list[list[int]], bf16: bool = False) -> None:
        self.target = target
        self.seqs = seqs
        self.bf16 = bf16
        lengths = torch.tensor([len(s) for s in seqs])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]).tolist()
        self.buffer = torch.zeros(self.offsets[-1], target.config.hidden_size)
        self.cached = [False] * len(seqs)

    @torch.no_grad()
    def batch(self, picks: list[int], pad_id: int) -> torch.Tensor:
        """(B, T, H) states of sequences ``picks``, zero-padded like :func:`padded_batch`."""
        todo = sorted({i for i in picks if not self.cached[i]})
        if todo:
            ids, mask = padded_batch([self.seqs[i] for i in todo], pad_id)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                hidden = self.target.get_decoder()(input_ids=ids, attention_mask=padding_mask(mask)).last_hidden_state
            for j, i in enumerate(todo):
                self.buffer[self.offsets[i] : self.offsets[i + 1]] = hidden[j, : len(self.seqs[i])].float()
                self.cached[i] = True
        t = max(len(self.seqs[i]) for i in picks)
        out = self.buffer.new_zeros(len(picks), t, self.buffer.shape[1])
        for row, i in enumerate(picks):
            out[row, : len(self.seqs[i])] = self.buffer[self.offsets[i] : self.offsets[i + 1]]
        return out


def kl_loss(target, draft, voice, batch: torch.Tensor, mask: torch.Tensor, seqs: list[list[int]],
            weights: torch.Tensor, *, t_hidden: torch.Tensor | None = None, unroll: int = 1) -> torch.Tensor:
    """Mean KL(target || draft) over the ``weights`` positions.

    For a voice the two distributions are taken over each position's legal ids only, as
    decoding compares them (a voice LM's logits for illegal ids were never trained and never
    matter), through the voice trainer's slot-restricted projection
    (:func:`voicestream.voice.distill.distill_loss`): in-frame positions project onto their
    codebook's head rows only (six of every seven audio positions skip ~85 % of the head's
    matmul and never build full-vocabulary logits). A feature draft adds the distance of its
    predicted hidden states to the target's, at drafting depths 1..``unroll``, from the
    target's states ``t_hidden`` when given.
    """
    from .spec.feature_draft import is_feature_draft

    feature = is_feature_draft(draft)
    if voice is not None:
        from .voice.distill import distill_loss, feature_distill_loss

        states = grammar_states(voice, seqs, batch.shape[1])
        shifted = torch.zeros_like(weights)
        shifted[:, 1:] = weights[:, :-1]  # the voice loss weighs the token predicted, not the position
        make = (lambda t, v: feature_distill_loss(t, v, unroll=unroll)) if feature else distill_loss
        inputs = {"input_ids": batch, "attention_mask": mask, "states": states, "weights": shifted}
        if t_hidden is not None:
            inputs["target_hidden"] = t_hidden
        loss, _ = make(target, voice)(draft, inputs)
        return loss
    if feature:
        if t_hidden is None:
            with torch.no_grad():
                t_hidden = target.get_decoder()(input_ids=batch, attention_mask=padding_mask(mask)).last_hidden_state
        return _feature_kl(target, draft, batch, weights, t_hidden, unroll=unroll)
    mask = padding_mask(mask)
    with torch.no_grad():
        t_logp = F.log_softmax(target(batch, attention_mask=mask).logits.float(), -1)
    d_logp = F.log_softmax(draft(batch, attention_mask=mask).logits.float(), -1)
    kl = (t_logp.exp() * (t_logp - d_logp)).sum(-1)  # per position
    return (kl * weights).sum() / weights.sum().clamp(min=1.0)


def distill(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = load_causal_lm(args.target, dtype=torch.float32)  # bf16 checkpoints too: see voice.distill
    vocab = target.config.vocab_size
    voice, constraint = voice_of(target, args.target, args.plan)
    pad_id = target.config.pad_token_id if target.config.pad_token_id is not None else 0
    data_path, state_path, draft_dir = out / "data.pt", out / "state.pt", out / "draft"
    if data_path.exists():
        data = torch.load(data_path)
    else:
        prompts = read_prompts(args, vocab, voice)
        data = {"train": generate_data(target, prompts, args.gen_tokens, args.seed, constraint,
                                       temperature=args.data_temperature),
                "prompt_lens": [len(p) for p in prompts]}
        torch.save(data, data_path)
    train, lens = data["train"], data.get("prompt_lens")
    n_held = max(1, len(train) // 10)
    # the first tenth of the prompts is held out: acceptance is measured on prompts never trained on
    held = [s[:n] for s, n in zip(train[:n_held], lens or [8] * n_held)]
    lens = lens or [1] * len(train)
    keep = slice(n_held, None) if len(train) > n_held else slice(None)  # a single prompt: train on it too
    seqs, prompt_lens = train[keep], lens[keep]
    from .spec.feature_draft import FeatureDraft, FeatureDraftConfig, is_feature_draft, with_depth

    if args.resume and state_path.exists():
        draft = resolve_draft(target, draft_dir)  # an LM or a feature draft, by its config
        draft = with_depth(draft, args.layers, resumed=True)
        state = torch.load(state_path)
    elif args.init_from:  # continue from an existing draft (its kind decides; --kind is ignored)
        # a shallower feature draft is grown: deeper, starting from what the given draft computes
        draft = with_depth(resolve_draft(target, args.init_from), args.layers, resumed=False)
        state = None
    elif args.kind == "feature":
        draft = FeatureDraft(FeatureDraftConfig.for_target(target, num_hidden_layers=args.layers or 1))
        state = None
    else:
        from transformers import AutoModelForCausalLM

        draft = AutoModelForCausalLM.from_config(draft_config(target.config, args.layers or 2, args.hidden))
        state = None
    before = measure_acceptance(target, draft.eval(), held, max_new_tokens=args.eval_tokens, constraint=constraint)
    opt = torch.optim.AdamW(draft.parameters(), lr=args.lr)
    step = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    draft.train()
    bf16 = bf16_of(args)
    states = TargetStates(target, seqs, bf16) if is_feature_draft(draft) else None
    keep_freed_memory()  # a step's freed activations are reused, not faulted in again (~1.25x here)
    deadline = time.monotonic() + 60 * args.minutes
    rng = random.Random(args.seed + step)
    bar = tqdm(total=args.steps, initial=step, desc="distill")
    loss_val = first_loss = float("nan")
    # warmup, then cosine decay to min_lr_ratio * lr when --steps or this run's --minutes runs
    # out, whichever comes first: the last steps at a small learning rate are where held-out
    # acceptance settles (a resumed run with a new time budget anneals again: a warm restart)
    schedule = LoopConfig(lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup, total_steps=args.steps)
    started = time.monotonic()
    while step < args.steps and time.monotonic() < deadline:
        spent = (time.monotonic() - started) / max(deadline - started, 1e-9)
        for g in opt.param_groups:
            g["lr"] = lr_at(max(step, int(spent * args.steps)), schedule)
        pick = [rng.randrange(len(seqs)) for _ in range(args.batch)]
        rows = [seqs[i] for i in pick]
        batch, mask = padded_batch(rows, pad_id)
        weights = kl_weights(rows, [prompt_lens[i] for i in pick], batch.shape[1])
        t_hidden = states.batch(pick, pad_id) if states is not None else None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = kl_loss(target, draft, voice, batch, mask, rows, weights, t_hidden=t_hidden, unroll=args.unroll)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        release_freed_memory(step)  # every so often the heap's holes go back; it would otherwise only grow
        loss_val = float(loss.detach())
        if first_loss != first_loss:  # nan: the first step of this run
            first_loss = loss_val
        bar.update(1)
        bar.set_postfix(kl=f"{loss_val:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        if step % args.save_every == 0 or step == args.steps:
            draft.save_pretrained(draft_dir)
            torch.save({"optimizer": opt.state_dict(), "step": step}, state_path)
    bar.close()
    draft.save_pretrained(draft_dir)
    torch.save({"optimizer": opt.state_dict(), "step": step}, state_path)
    after = measure_acceptance(target, draft.eval(), held, max_new_tokens=args.eval_tokens, constraint=constraint)
    report = {"step": step, "bf16": bf16, "lr": opt.param_groups[0]["lr"], "kl_first": first_loss, "kl": loss_val, "acceptance_before": before, "acceptance_after": after,
              "draft_params": sum(p.numel() for p in draft.parameters()), "draft_dir": str(draft_dir)}
    (out / "acceptance.json").write_text(json.dumps(report, indent=2))
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, help="target checkpoint directory")
    p.add_argument("--out", required=True, help="output directory (data, draft/, state, acceptance.json)")
    p.add_argument("--prompts", help="file of prompts, one per line (text, or token ids; text for a voice)")
    p.add_argument("--n-prompts", type=int, default=200, help="default prompt set size")
    p.add_argument("--gen-tokens", type=int, default=128, help="target tokens generated per prompt")
    p.add_argument("--kind", choices=["lm", "feature"], default="lm",
                   help="lm: a small LM of the target's architecture; feature: --layers (default 1) that extrapolate "
                        "the target's hidden states (EAGLE-style; needs a Llama/Qwen2/Mistral target)")
    p.add_argument("--unroll", type=int, default=3,
                   help="--kind feature: also train drafting depths 2..N on the draft's own predicted states, "
                        "as decoding drafts them (1: teacher forcing only)")
    p.add_argument("--init-from", help="start from this draft directory (LM or feature draft) instead of a fresh one")
    p.add_argument("--data-temperature", type=float, default=1.0,
                   help="the target's generations are sampled at this temperature; 0: greedy (train for a greedy decoder)")
    p.add_argument("--layers", type=int, default=None,
                   help="draft layers (default: 2 for --kind lm, 1 for --kind feature); with --init-from a "
                        "feature draft of fewer layers, the new ones go on top and start as no-ops")
    p.add_argument("--hidden", type=int, default=None, help="draft hidden size (default: the target's)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=20, help="linear warmup steps")
    p.add_argument("--min-lr-ratio", type=float, default=0.1,
                   help="cosine decay to this fraction of --lr by the end of --steps or --minutes, "
                        "whichever ends first (1: constant)")
    p.add_argument("--minutes", type=float, default=60.0, help="time budget of this run")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--eval-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    add_plan_argument(p)  # a voice target's generations follow the plan say decodes with
    add_bf16_arguments(p)


def main(args: argparse.Namespace) -> int:
    report = distill(args)
    print(json.dumps(report, indent=2))
    return 0
