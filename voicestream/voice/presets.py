"""Model and optimisation presets for the built-in voice's target and draft LMs.

Sizes follow the issue: target ~10-20M parameters, draft ~1-3M.  Both are
``LlamaForCausalLM`` (what the decoder and the HF tooling know best).  The joint
vocabulary (5440 ids) costs ``2 * 5440 * hidden`` parameters in embeddings + head, so
the draft ties them to stay small; the target keeps them untied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from .vocab import VoiceVocab

__all__ = ["PRESETS", "ModelPreset", "TrainPreset", "build_model", "count_parameters", "warm_start"]


@dataclass(frozen=True)
class ModelPreset:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    kv_heads: int | None = None
    tie_embeddings: bool = False
    max_positions: int = 4096
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class TrainPreset:
    """Optimisation defaults; every field can be overridden from the CLI."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    total_steps: int = 20000  # cosine length; a time-budgeted run may stop earlier and resume
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    batch_tokens: int = 8192
    text_weight: float = 0.05


PRESETS: dict[str, tuple[ModelPreset, TrainPreset]] = {
    # ~10M parameters (6.5M in the decoder layers).  Sized for what this project can
    # train on a 2-core CPU in a couple of hours (the shipped voice) and for real-time
    # decoding there.  Multi-query attention (1 KV head): a 3 s utterance is ~1100 tokens
    # and per-token decode cost on CPU is memory traffic - weights plus the whole KV cache.
    "target": (
        ModelPreset(hidden=320, layers=6, heads=5, kv_heads=1, intermediate=864),
        TrainPreset(lr=1.5e-3, total_steps=3000),
    ),
    # the earlier, larger target (~16.8M): for longer runs on a GPU
    "target-large": (ModelPreset(hidden=384, layers=8, heads=6, kv_heads=2, intermediate=1024), TrainPreset(lr=1e-3)),
    # ~1.5M parameters (tied embeddings: 0.87M)
    "draft": (
        ModelPreset(hidden=160, layers=2, heads=5, kv_heads=1, intermediate=448, tie_embeddings=True),
        TrainPreset(lr=2e-3, warmup_steps=50),
    ),
    # for tests: a few hundred thousand parameters
    "tiny": (
        ModelPreset(hidden=32, layers=2, heads=2, intermediate=64, max_positions=2048),
        TrainPreset(lr=3e-3, warmup_steps=2, total_steps=100, batch_tokens=2048),
    ),
}


def build_model(preset: ModelPreset, vocab: VoiceVocab, *, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised LM for ``vocab``; its config carries the vocab layout."""
    import torch

    cfg = LlamaConfig(
        vocab_size=vocab.vocab_size,
        hidden_size=preset.hidden,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.kv_heads or preset.heads,
        intermediate_size=preset.intermediate,
        max_position_embeddings=preset.max_positions,
        rope_theta=preset.rope_theta,
        bos_token_id=vocab.bos_id,
        eos_token_id=vocab.audio_end_id,
        pad_token_id=vocab.pad_id,
        tie_word_embeddings=preset.tie_embeddings,
        attention_dropout=0.0,
    )
    cfg.voicestream_vocab = vocab.to_dict()
    cfg.voicestream_preset = asdict(preset)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(
        bos_token_id=vocab.bos_id, eos_token_id=vocab.audio_end_id, pad_token_id=vocab.pad_id
    )
    return model


def warm_start(model: LlamaForCausalLM, vocab: VoiceVocab, *, seed: int = 0) -> LlamaForCausalLM:
    """Re-target a trained voice LM to ``vocab`` (another layout of the same ids) in place.

    Why: a new layout (e.g. adding phone tokens) should not throw away what an LM has
    already learned about the codec's frames - hours of CPU training.  The shared ids
    (codec, characters, specials) keep their rows; the embedding and head grow to the new
    size, and each new row (phones, ``<phones_end>``) starts from the mean character
    embedding (input) and the ``<word>`` marker's head row (output: phones are decided
    where ``<word>`` is), plus a little noise so they are distinguishable.
    """
    import torch

    raw = getattr(model.config, "voicestream_vocab", None)
    if not raw:
        raise ValueError("warm start needs a voice LM (its config has no voicestream_vocab)")
    old = VoiceVocab.from_dict(raw)
    if (old.codec_vocab_size, old.slot_ranges, old.pad_id) != (vocab.codec_vocab_size, vocab.slot_ranges, vocab.pad_id):
        raise ValueError("the checkpoint's vocabulary does not share ids with the new one")
    if old.phones and old.phones != vocab.phones[: len(old.phones)]:
        raise ValueError("the new phone list must extend the checkpoint's")
    if model.config.vocab_size != vocab.vocab_size:
        model.resize_token_embeddings(vocab.vocab_size, mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    trained = set(range(vocab.pad_id + 1))  # codec, characters, specials
    if old.layout == "phones":  # the checkpoint's own phone (and list-end) rows
        trained.update(range(old.phone_range[0], old.phone_range[1] + 1))
        trained.update(range(*old.duration_range) if raw.get("durations") else ())
    new = torch.tensor([i for i in range(vocab.used_size) if i not in trained], dtype=torch.long)
    if new.numel():
        with torch.no_grad():
            clo, chi = vocab.char_range
            chars = emb[clo:chi]
            noise = torch.randn(new.numel(), emb.shape[1], generator=gen).to(emb.dtype)
            emb[new] = chars.mean(0) + chars.std(0) * noise
            if head.data_ptr() != emb.data_ptr():
                row = head[vocab.word_id]
                noise = torch.randn(new.numel(), head.shape[1], generator=gen).to(head.dtype)
                head[new] = row + 0.02 * row.abs().mean() * noise
    model.config.voicestream_vocab = vocab.to_dict()
    model.config.vocab_size = vocab.vocab_size
    return model


def start_model(
    mp: ModelPreset, vocab: VoiceVocab, *, seed: int = 0, init_from: str | Path | None = None
) -> LlamaForCausalLM:
    """A fresh model of preset ``mp``, or the voice LM at ``init_from`` warm-started into
    ``vocab`` (how a run changes layout, or a draft starts from an older draft, without
    starting over)."""
    if init_from is None:
        return build_model(mp, vocab, seed=seed)
    import torch

    from ..models import load_causal_lm

    return warm_start(load_causal_lm(init_from, dtype=torch.float32), vocab, seed=seed)


def count_parameters(model) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def preset(name: str, **overrides) -> tuple[ModelPreset, TrainPreset]:
    """A named preset with optional TrainPreset field overrides (None values ignored)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    m, t = PRESETS[name]
    return m, replace(t, **{k: v for k, v in overrides.items() if v is not None})


__all__.append("preset")
