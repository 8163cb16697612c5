"""Loading and building causal LMs: local checkpoints (safetensors or GGUF), small random
models for tests and benchmarks, and layer-truncated drafts (self-speculation)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively (fast), not by emulation.

    Why it matters: on a CPU without AVX512-BF16 or AMX (e.g. AVX2-only), bf16 matmuls are
    emulated and a training step runs ~13x *slower* than in float32 (measured here on an
    AVX2 EPYC); with them, bf16 is ~2-3x faster.  Training and the built-in voice pick their
    compute dtype from this instead of assuming one machine.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def compute_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The dtype to *decode* in: bfloat16 on a GPU that has it, float32 on a CPU.

    Decoding multiplies one to a few rows at a time, where a CPU's float32 kernels are as
    fast as its bf16 ones even with AVX512-BF16 (the built-in voice, plain decoding on a
    2-core EPYC that has it: 394 tok/s float32, 350 bf16), and float32 results do not
    depend on how many rows a forward holds -- so greedy speculative output stays token
    for token the plain output. (Training, many rows per step, does use bf16 where native.)
    """
    device = torch.device(device)
    return torch.bfloat16 if device.type == "cuda" and native_bf16(device) else torch.float32


def right_padded(attention_mask: torch.Tensor) -> bool:
    """True when every row of ``attention_mask`` (B, T) is ones then zeros."""
    lengths = attention_mask.sum(-1, keepdim=True)
    return bool((attention_mask == (torch.arange(attention_mask.shape[-1], device=lengths.device) < lengths)).all())


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The padding mask a training forward over a padded batch needs: None when the batch
    is right-padded. Under the causal mask no real position can see a pad (pads come
    after it), so real positions get the same states without it, and attention takes its
    causal path -- it skips the upper triangle and builds no (B, 1, T, T) mask, which made
    attention ~45 % of a CPU training step. Pad positions' states are then meaningless;
    callers must give them no weight."""
    return None if right_padded(attention_mask) else attention_mask


def load_causal_lm(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """Load a causal LM from a local directory: HF layout, or a directory with one .gguf file.

    Never touches the network (``local_files_only``): voice agents run air-gapped too.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist")
    kwargs: dict = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if path.is_file() and path.suffix == ".gguf":
        path, kwargs["gguf_file"] = path.parent, path.name
    elif path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            kwargs["gguf_file"] = ggufs[0].name
        elif ggufs:
            raise ValueError(f"{path} holds several .gguf files; pass the file itself: {[g.name for g in ggufs]}")
        else:
            raise FileNotFoundError(f"{path} has neither config.json nor a .gguf file")
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    return model.to(device).eval()


def random_llama(
    *,
    vocab_size: int = 256,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_positions: int = 2048,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama (the architecture most codec-token TTS LMs use)."""
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_positions,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def truncated_copy(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """The first ``num_layers`` decoder layers with the model's own embeddings, norm and head.

    This is the early-exit draft of self-speculation: no extra training, same vocabulary.
    """
    total = model.config.num_hidden_layers
    if not 1 <= num_layers <= total:
        raise ValueError(f"num_layers must be in [1, {total}], got {num_layers}")
    cfg = copy.deepcopy(model.config)
    cfg.num_hidden_layers = num_layers
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = list(cfg.layer_types)[:num_layers]
    draft = type(model)(cfg)
    state = model.state_dict()
    keep = {}
    for name, tensor in state.items():
        parts = name.split(".")
        if "layers" in parts:
            idx = int(parts[parts.index("layers") + 1])
            if idx >= num_layers:
                continue
        keep[name] = tensor
    missing, unexpected = draft.load_state_dict(keep, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(f"could not truncate {type(model).__name__}: missing={missing} unexpected={unexpected}")
    return draft.to(next(model.parameters()).device, next(model.parameters()).dtype).eval()


def refined_pair(
    *,
    draft_layers: int = 1,
    refine_scale: float = 0.02,
    logit_scale: float = 2.0,
    **llama_kwargs,
) -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """A (target, draft) pair with controllable agreement, for tests and benchmarks.

    Trained LMs settle most tokens in their early layers and refine in the later ones;
    a random model does not. This builds a random Llama whose layers past
    ``draft_layers`` write only ``refine_scale`` of their usual update to the residual
    stream, and takes its first ``draft_layers`` as the draft (an early-exit copy).
    ``refine_scale`` sets how often the two disagree; ``logit_scale`` sharpens the
    output distribution towards a trained model's entropy.
    """
    target = random_llama(**llama_kwargs)
    with torch.no_grad():
        for i, layer in enumerate(target.model.layers):
            if i >= draft_layers:
                layer.self_attn.o_proj.weight.mul_(refine_scale)
                layer.mlp.down_proj.weight.mul_(refine_scale)
        target.lm_head.weight.mul_(logit_scale)
    return target, truncated_copy(target, draft_layers)


# --- choosing a draft: none, a checkpoint, or the target's own first layers ("self:N") ---
def parse_self_draft(spec: str) -> int | None:
    """``"self:N"`` -> ``N``; any other string -> ``None``."""
    if not spec.startswith("self:"):
        return None
    value = spec[len("self:") :]
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"self-speculation draft must be 'self:N' with N >= 1 layers, got {spec!r}")
    return int(value)


def resolve_draft(
    target: torch.nn.Module,
    draft: torch.nn.Module | str | Path | None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.nn.Module | None:
    """A draft model from ``None``/``"none"``, ``"self:N"``, a checkpoint path (a draft LM or a
    feature draft), or a model.

    Checkpoint drafts load on ``device`` and in ``dtype`` (defaults: the target's).
    """
    if draft is None or isinstance(draft, torch.nn.Module):
        return draft
    spec = str(draft)
    if spec.lower() in ("", "none"):
        return None
    layers = parse_self_draft(spec)
    if layers is not None:
        total = int(target.config.num_hidden_layers)
        if layers >= total:
            raise ValueError(f"self:{layers} keeps every layer of a {total}-layer target; use fewer layers")
        return truncated_copy(target, layers)
    param = next(target.parameters())
    from .spec.feature_draft import is_feature_draft_dir, load_feature_draft

    if is_feature_draft_dir(spec):  # EAGLE-style: extrapolates the target's hidden states
        return load_feature_draft(spec, target, device=device or param.device, dtype=dtype or param.dtype)
    return load_causal_lm(Path(spec), device=device or param.device, dtype=dtype or param.dtype)
