"""A feature-level draft (EAGLE-style): one layer that extrapolates the target's hidden states.

Why: a separate small LM has to rediscover from tokens alone what the target already
knows -- for a speech LM, where in the phone plan and in the pitch contour it is. The
target computes that state for every verified position anyway. This draft takes the
target's final (normed) hidden state at position ``j-1`` together with the embedding of
token ``j``, runs one transformer layer over them, and predicts the target's hidden state
at ``j``; the target's own LM head turns it into next-token logits. Drafting further ahead
feeds its own predicted states back in. One layer of the target's width costs a fraction
of a target forward, and it starts every chunk from the target's exact state.

The draft owns only its layer (saved in Hugging Face layout, ``from_pretrained``-loadable);
token embeddings and LM head are the target's, bound at run time and never copied.
Reference: Li et al., "EAGLE: Speculative Sampling Requires Rethinking Feature Uncertainty"
(2024). Decoding with it: :class:`voicestream.spec.feature_runner.FeatureDraftRunner`.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .compat import IncompatibleModelsError, output_vocab_size
from .lean_runner import apply_rope, rms_norm

MODEL_TYPE = "voicestream_feature_draft"
# drafts saved before drafts could have several layers kept their one layer's weights at the top level
LEGACY_KEYS = {r"^(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|input_norm|post_norm)\b": r"layers.0.\1"}


class FeatureDraftConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(
        self,
        hidden_size: int = 64,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        intermediate_size: int = 128,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        vocab_size: int = 256,
        max_position_embeddings: int = 4096,
        num_hidden_layers: int = 1,
        **kwargs,
    ) -> None:
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.intermediate_size = intermediate_size
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.vocab_size = vocab_size  # the target's output vocabulary (checked when bound)
        self.max_position_embeddings = max_position_embeddings
        self.num_hidden_layers = num_hidden_layers
        super().__init__(**kwargs)

    @classmethod
    def for_target(cls, target: torch.nn.Module, **overrides) -> "FeatureDraftConfig":
        """Same width, heads and RoPE as ``target`` (a Llama-family causal LM)."""
        tc = target.config
        rope = getattr(tc, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(tc, "rope_theta", 10000.0)) if isinstance(rope, dict) else 10000.0
        kw = dict(
            hidden_size=tc.hidden_size,
            num_attention_heads=tc.num_attention_heads,
            num_key_value_heads=getattr(tc, "num_key_value_heads", None) or tc.num_attention_heads,
            head_dim=getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads,
            intermediate_size=tc.intermediate_size,
            rms_norm_eps=tc.rms_norm_eps,
            rope_theta=float(theta),
            vocab_size=output_vocab_size(target),
            max_position_embeddings=getattr(tc, "max_position_embeddings", 4096),
        )
        kw.update(overrides)
        return cls(**kw)


class FeatureLayer(nn.Module):
    """One pre-norm attention + SwiGLU block, split where the attention goes (training
    attends over its own layouts of cached entries, decoding over a KV cache)."""

    def __init__(self, config: FeatureDraftConfig) -> None:
        super().__init__()
        h = config.hidden_size
        nq, nkv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
        self.config = config
        self.q_proj = nn.Linear(h, nq, bias=False)
        self.k_proj = nn.Linear(h, nkv, bias=False)
        self.v_proj = nn.Linear(h, nkv, bias=False)
        self.o_proj = nn.Linear(nq, h, bias=False)
        self.gate_proj = nn.Linear(h, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(h, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, h, bias=False)
        self.input_norm = nn.Parameter(torch.ones(h))
        self.post_norm = nn.Parameter(torch.ones(h))

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """RoPE'd queries, keys and values (B, heads, T, hd) of residual stream ``x`` (B, T, H)."""
        cfg = self.config
        b, t, _ = x.shape
        hd = cfg.head_dim
        h = rms_norm(x, self.input_norm, cfg.rms_norm_eps)
        q = self.q_proj(h).view(b, t, cfg.num_attention_heads, hd).transpose(1, 2)
        k = self.k_proj(h).view(b, t, cfg.num_key_value_heads, hd).transpose(1, 2)
        v = self.v_proj(h).view(b, t, cfg.num_key_value_heads, hd).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def finish(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        """Attention output (B, heads, T, hd) -> o_proj and SwiGLU added to the residual ``x``."""
        b, _, t, _ = att.shape
        x = x + self.o_proj(att.transpose(1, 2).reshape(b, t, -1))
        h = rms_norm(x, self.post_norm, self.config.rms_norm_eps)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class FeatureDraft(PreTrainedModel):
    """fc([feature_{j-1}; embed(token_j)]) -> ``num_hidden_layers`` pre-norm attention +
    SwiGLU layers (one by default, as EAGLE) -> norm."""

    config_class = FeatureDraftConfig
    base_model_prefix = "feature_draft"
    _no_split_modules: list[str] = []

    def __init__(self, config: FeatureDraftConfig) -> None:
        super().__init__(config)
        h = config.hidden_size
        self.fc = nn.Linear(2 * h, h, bias=False)
        self.layers = nn.ModuleList(FeatureLayer(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.Parameter(torch.ones(h))
        self._rope_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "FeatureDraft":
        kwargs.setdefault("key_mapping", LEGACY_KEYS)  # one-layer drafts saved before ``layers`` existed
        return super().from_pretrained(*args, **kwargs)

    def grown(self, layers: int) -> "FeatureDraft":
        """A copy with ``layers`` layers computing exactly what this one does: the new layers
        go on top with zero output projections (each adds nothing to the residual stream until
        trained), so a deeper draft starts from a trained one's acceptance, not from scratch."""
        if layers < len(self.layers):
            raise ValueError(f"cannot grow a {len(self.layers)}-layer feature draft to {layers} layers")
        cfg = copy.deepcopy(self.config)
        cfg.num_hidden_layers = layers
        bigger = FeatureDraft(cfg).to(self.fc.weight.dtype)
        bigger.load_state_dict(self.state_dict(), strict=False)  # all but the new layers
        with torch.no_grad():
            for layer in bigger.layers[len(self.layers):]:
                layer.o_proj.weight.zero_()
                layer.down_proj.weight.zero_()
        return bigger

    # --- pieces shared by training and decoding ------------------------------------------
    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin at ``positions`` (B, T) -> (B, 1, T, head_dim) each (HF Llama convention)."""
        n = int(positions.max()) + 1
        if self._rope_cache is None or self._rope_cache[0].shape[0] < n or self._rope_cache[0].device != positions.device:
            size = max(n, 1024)
            hd = self.config.head_dim
            inv = 1.0 / (self.config.rope_theta ** (torch.arange(0, hd, 2, device=positions.device).float() / hd))
            freqs = torch.outer(torch.arange(size, device=positions.device).float(), inv)
            emb = torch.cat([freqs, freqs], -1)
            self._rope_cache = (emb.cos(), emb.sin())
        cos, sin = self._rope_cache
        dtype = self.fc.weight.dtype
        return cos[positions][:, None].to(dtype), sin[positions][:, None].to(dtype)

    def forward(self, features: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        """Training: ``features[:, j]`` is the target's state at j-1 (zeros at 0), ``token_embeds[:, j]``
        the embedding of token j; returns the predicted target states at every j."""
        return self.unroll(features, token_embeds, 1)[0][1]

    def unroll(
        self, features: torch.Tensor, token_embeds: torch.Tensor, steps: int, anchors: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Predicted states for drafting depths 1..``steps`` (training-time test): per depth,
        ``(positions (n,), states (B, n, H))``.

        Depth 1 is :meth:`forward`, at every position: each entry is built on the target's
        state. At depth s an entry j is what decoding builds for the s-th drafted token: its
        state input is the depth s-1 prediction at j-1, and it attends, exactly as the draft's
        cache holds them then, to the entries ``<= j-s+1`` built on the target's states, to
        one entry of each depth 2..s-1 (at j-s+2..j-1) and to itself. Training on deeper
        depths teaches the draft to draft on its own errors (Li et al., EAGLE-3, 2025).

        Depths >= 2 are computed along diagonals ending at ``anchors`` (sorted positions
        ``>= steps-1``; default: all): depth s at ``anchors - (steps - s)``. A random subset of
        anchors trains the deep depths at a fraction of the cost of all positions.
        """
        b, t, _ = features.shape
        dev = features.device
        gqa = self.config.num_key_value_heads != self.config.num_attention_heads
        every = torch.arange(t, device=dev)
        cos, sin = self.rope(every[None].expand(b, t))
        x = self.fc(torch.cat([features, token_embeds], -1))
        firsts: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: the depth-1 keys and values
        for layer in self.layers:
            q, k, v = layer.qkv(x, cos, sin)
            firsts.append((k, v))
            x = layer.finish(x, F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa))
        out = [(every, self._norm(x))]
        if steps == 1:
            return out
        anchors = every[steps - 1 :] if anchors is None else anchors.to(dev)
        deeper: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = [([], []) for _ in self.layers]
        prev = out[0][1][:, anchors - steps + 1]  # depth 1 at the position before depth 2's entries
        for s in range(2, steps + 1):
            pos = anchors - (steps - s)
            cos, sin = self.rope(pos[None].expand(b, -1))
            visible = every[None, :] <= pos[:, None] - (s - 1)  # depth-1 entries in the cache then
            x = self.fc(torch.cat([prev, token_embeds[:, pos]], -1))
            for layer, (k1, v1), (keys, values) in zip(self.layers, firsts, deeper):
                q, k, v = layer.qkv(x, cos, sin)
                keys.append(k)
                values.append(v)
                x = layer.finish(x, _unrolled_attention(q, k1, v1, visible, keys, values))
            prev = self._norm(x)
            out.append((pos, prev))
        return out

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.final_norm, self.config.rms_norm_eps)


def random_anchors(length: int, steps: int, fraction: float, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """A sorted random ``fraction`` of the anchors a sequence of ``length`` allows for
    :meth:`FeatureDraft.unroll` (positions ``steps-1 .. length-2``: each deepest entry must
    predict a token inside the sequence); None when ``steps`` is 1 (nothing to unroll)."""
    if steps <= 1:
        return None
    span = max(1, length - steps)
    n = max(1, round(fraction * span))
    return (torch.randperm(span)[:n].sort().values + steps - 1).to(device)


def _unrolled_attention(q: torch.Tensor, k1: torch.Tensor, v1: torch.Tensor, visible: torch.Tensor,
                        keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """Attention of depth-s queries ``q`` (B, heads, n, hd): over the depth-1 entries ``k1``/``v1``
    (B, kv_heads, T, hd) under ``visible`` (n, T), and over one entry per deeper depth
    (``keys``/``values``, each (B, kv_heads, n, hd), aligned with the queries; the last is
    the query's own) -- one dot product per query each, so one n x T score matrix in all."""
    rep = q.shape[1] // k1.shape[1]
    if rep > 1:
        k1, v1 = k1.repeat_interleave(rep, 1), v1.repeat_interleave(rep, 1)
        keys = [k.repeat_interleave(rep, 1) for k in keys]
        values = [v.repeat_interleave(rep, 1) for v in values]
    scale = q.shape[-1] ** -0.5
    n_full = k1.shape[2]
    scores = [(q @ k1.transpose(-1, -2) * scale).masked_fill(~visible, float("-inf"))]
    scores += [((q * k).sum(-1, keepdim=True) * scale) for k in keys]
    p = torch.softmax(torch.cat(scores, -1), -1)
    out = p[..., :n_full] @ v1
    for d, v in enumerate(values):
        out = out + p[..., n_full + d, None] * v
    return out


def shift_features(target_states: torch.Tensor) -> torch.Tensor:
    """The draft's feature input: the target's state one position back (zeros at 0)."""
    return torch.cat([torch.zeros_like(target_states[:, :1]), target_states[:, :-1]], 1)


@torch.no_grad()
def draft_inputs(
    target: torch.nn.Module, ids: torch.Tensor, target_states: torch.Tensor, noise: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training inputs of a feature draft for ``ids`` (B, T): the target's states one position
    back, plus uniform noise of ``noise`` times their RMS (so the draft tolerates its own
    imperfect states when it drafts ahead), and the token embeddings."""
    feats = shift_features(target_states)
    if noise > 0:
        feats = feats + (torch.rand_like(feats) * 2 - 1) * noise * feats.pow(2).mean().sqrt()
    return feats, target.get_input_embeddings()(ids)


def is_feature_draft(model: object) -> bool:
    return isinstance(model, FeatureDraft)


def with_depth(draft: torch.nn.Module, layers: int | None, *, resumed: bool) -> torch.nn.Module:
    """``draft`` with the requested ``layers`` (None: as it is). A new run grows a shallower
    feature draft (:meth:`FeatureDraft.grown`); any other disagreement is refused rather than
    trained at another depth than asked: a resumed run continues its saved draft as it is,
    and only a feature draft can be grown."""
    if layers is None:
        return draft
    have = len(draft.layers) if is_feature_draft(draft) else draft.config.num_hidden_layers
    if layers == have:
        return draft
    if is_feature_draft(draft) and not resumed:
        return draft.grown(layers)
    how = ("a resumed run continues the saved draft; grow it with --init-from into a new --out" if resumed
           else "only a feature draft can be grown")
    raise ValueError(f"--layers {layers}, but the draft has {have} layers: {how}")


def is_feature_draft_dir(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    return cfg.exists() and json.loads(cfg.read_text()).get("model_type") == MODEL_TYPE


def load_feature_draft(
    path: str | Path, target: torch.nn.Module, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> FeatureDraft:
    """A saved feature draft (local directory only), checked against the ``target`` it will serve."""
    draft = FeatureDraft.from_pretrained(str(path), local_files_only=True)
    check_feature_draft(target, draft)
    return draft.to(device=device, dtype=dtype or next(target.parameters()).dtype).eval()


def check_feature_draft(target: torch.nn.Module, draft: FeatureDraft) -> None:
    """A feature draft fits only a target of its width and vocabulary."""
    tv = output_vocab_size(target)
    if draft.config.hidden_size != target.config.hidden_size or draft.config.vocab_size != tv:
        raise IncompatibleModelsError(
            f"feature draft (hidden {draft.config.hidden_size}, vocab {draft.config.vocab_size}) does not fit a "
            f"target with hidden {target.config.hidden_size}, vocab {tv}: it was trained for another target"
        )
