"""A lean forward pass for Llama-family drafts: same weights, a fraction of the overhead.

A draft runs one token at a time, and for a small model the Python and bookkeeping around
each transformers forward (mask building, rotary module, output dataclasses, dynamic cache
concatenation) costs more than its matrix products. This runner reads the model's own
weights (q/k/v and gate/up fused once), keeps a preallocated KV cache, and runs the layer
stack as a short sequence of tensor ops. Any draft is correct for speculative decoding --
the target alone decides what is emitted -- so the draft is where this pays off safely.
Unsupported architectures fall back to :class:`ModelRunner` (see :func:`make_draft_runner`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import weakref

from .runner import ModelRunner

_SUPPORTED = {"llama", "qwen2", "mistral"}


def lean_supported(model: torch.nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    if cfg is None or inner is None or getattr(cfg, "model_type", None) not in _SUPPORTED:
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) and cfg.model_type == "mistral":
        return False
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if "dynamic" in str(rope.get("rope_type", rope.get("type", "default"))):
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return False
    if not hasattr(inner, "layers"):  # wrappers (e.g. grammar-masked voice LMs) take the generic path
        return False
    layer = inner.layers[0]
    return all(hasattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")) and not hasattr(
        layer.self_attn, "q_norm"
    )


class _Layer:
    def __init__(self, layer: torch.nn.Module) -> None:
        att, mlp = layer.self_attn, layer.mlp
        self.qkv_w = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight], 0)
        biases = [att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]
        self.qkv_b = torch.cat(biases, 0) if all(b is not None for b in biases) else None
        self.o_w, self.o_b = att.o_proj.weight, att.o_proj.bias
        self.gu_w = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], 0)
        self.down_w = mlp.down_proj.weight
        self.in_norm = layer.input_layernorm.weight
        self.post_norm = layer.post_attention_layernorm.weight


class _Weights:
    """Fused per-layer weights of one model, rebuilt when its parameters change in place
    (a draft being trained); shared by every generation that uses the model."""

    _cache: "weakref.WeakKeyDictionary[torch.nn.Module, _Weights]" = weakref.WeakKeyDictionary()

    def __init__(self, model: torch.nn.Module) -> None:
        with torch.no_grad():
            self.layers = [_Layer(layer) for layer in model.model.layers]
        self.versions = self._versions(model)

    @staticmethod
    def _versions(model: torch.nn.Module) -> tuple[int, ...]:
        return tuple(p._version for p in model.parameters())

    @classmethod
    def of(cls, model: torch.nn.Module) -> "_Weights":
        found = cls._cache.get(model)
        if found is None or found.versions != cls._versions(model):
            found = cls._cache[model] = cls(model)
        return found


class LeanLlamaRunner(ModelRunner):
    def __init__(self, model: torch.nn.Module, *, initial_capacity: int = 512) -> None:
        super().__init__(model)
        cfg = model.config
        inner = model.model
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        self.dtype = next(model.parameters()).dtype
        self.layers = _Weights.of(model).layers
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.head = model.get_output_embeddings().weight
        self.rotary = inner.rotary_emb
        self._cos = self._sin = None
        self._capacity = 0
        self._k = self._v = None
        self._ensure_rope(initial_capacity)

    # --- storage ------------------------------------------------------------------------
    def _ensure_rope(self, n: int) -> None:
        if self._cos is not None and self._cos.shape[0] >= n:
            return
        size = max(n, 2 * (self._cos.shape[0] if self._cos is not None else 0), 64)
        pos = torch.arange(size, device=self.device)[None]
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            cos, sin = self.rotary(probe, pos)
        self._cos, self._sin = cos[0], sin[0]

    def _ensure_cache(self, n: int) -> None:
        if self._k is not None and self._capacity >= n:
            return
        cap = max(n, 2 * self._capacity, 256)
        shape = (len(self.layers), 1, self.kv_heads, cap, self.head_dim)
        k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self._k is not None:
            used = len(self.tokens)
            k[:, :, :, :used] = self._k[:, :, :, :used]
            v[:, :, :, :used] = self._v[:, :, :, :used]
        self._k, self._v, self._capacity = k, v, cap

    def _crop(self, length: int, drop: int) -> None:
        pass  # positions past len(self.tokens) are simply overwritten later

    def release(self) -> None:
        super().release()
        self._k = self._v = None
        self._capacity = 0

    # --- the forward --------------------------------------------------------------------
    @staticmethod
    def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
        return x * cos + rotated * sin

    def _forward(self, tokens: list[int], last_only: bool) -> torch.Tensor:
        start, k = len(self.tokens), len(tokens)
        end = start + k
        self._ensure_cache(end)
        self._ensure_rope(end)
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)
        x = F.embedding(ids, self.embed)[None]  # (1, k, hidden)
        cos, sin = self._cos[start:end], self._sin[start:end]
        mask = None
        if k > 1:
            mask = torch.ones(k, end, dtype=torch.bool, device=self.device).tril(start)
        nq, nkv, hd = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.head_dim
        gqa = self.kv_heads != self.heads
        for i, layer in enumerate(self.layers):
            h = self._rms(x, layer.in_norm, self.eps)
            qkv = F.linear(h, layer.qkv_w, layer.qkv_b)
            q = qkv[..., :nq].view(1, k, self.heads, hd).transpose(1, 2)
            kk = qkv[..., nq : nq + nkv].view(1, k, self.kv_heads, hd).transpose(1, 2)
            vv = qkv[..., nq + nkv :].view(1, k, self.kv_heads, hd).transpose(1, 2)
            q, kk = self._rope(q, cos, sin), self._rope(kk, cos, sin)
            self._k[i, :, :, start:end] = kk
            self._v[i, :, :, start:end] = vv
            att = F.scaled_dot_product_attention(
                q, self._k[i, :, :, :end], self._v[i, :, :, :end], attn_mask=mask, scale=self.scale, enable_gqa=gqa
            )
            x = x + F.linear(att.transpose(1, 2).reshape(1, k, nq), layer.o_w, layer.o_b)
            h = self._rms(x, layer.post_norm, self.eps)
            gate, up = F.linear(h, layer.gu_w).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down_w)
        if last_only:
            x = x[:, -1:]
        x = self._rms(x, self.norm, self.eps)
        return F.linear(x, self.head)[0].float()


def make_draft_runner(model: torch.nn.Module, lean: bool = True) -> ModelRunner:
    """The fastest correct runner for a draft model."""
    if lean and lean_supported(model):
        return LeanLlamaRunner(model)
    return ModelRunner(model)
