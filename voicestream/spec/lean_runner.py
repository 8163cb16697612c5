"""A lean forward pass for Llama-family drafts: same weights, a fraction of the overhead.

A draft runs one token at a time, and for a small model the Python and bookkeeping around
each transformers forward (mask building, rotary module, output dataclasses, dynamic cache
concatenation) costs more than its matrix products. This runner reads the model's own
weights (q/k/v and gate/up fused once), keeps a preallocated KV cache, and runs the layer
stack as a short sequence of tensor ops. Any draft is correct for speculative decoding --
the target alone decides what is emitted -- so the draft is where this pays off safely.
Unsupported architectures fall back to :class:`ModelRunner` (see :func:`make_runner`).
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Protocol, Tuple

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from .quant import Linear, make_linear, resolve_weights
from .runner import ModelRunner

_SUPPORTED = {"llama", "qwen2", "mistral"}


def lean_supported(model: torch.nn.Module) -> bool:
    """True for a plain transformers Llama/Qwen2/Mistral causal LM; a wrapper that changes
    what forward() returns (e.g. one that masks logits) must keep its own forward."""
    if not isinstance(model, PreTrainedModel):
        return False
    cfg = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    if cfg is None or inner is None or getattr(cfg, "model_type", None) not in _SUPPORTED:
        return False
    if not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) and cfg.model_type == "mistral":
        return False
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if "dynamic" in str(rope.get("rope_type", rope.get("type", "default"))):
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return False
    layer = inner.layers[0]
    return all(hasattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")) and not hasattr(
        layer.self_attn, "q_norm"
    )


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
    return x * cos + rotated * sin


def _rotated_rows(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rows of a projection whose output is ``rotate_half`` of ``w``'s, head by head: RoPE's
    rotated half then comes out of the same matrix product as q and k themselves."""
    half = head_dim // 2
    heads = w.view(-1, head_dim, *w.shape[1:])
    return torch.cat((-heads[:, half:], heads[:, :half]), 1).reshape(w.shape)


WEIGHTS_ATTR = "voicestream_lean_weights"


def set_lean_weights(model: torch.nn.Module, weights: str | None) -> str:
    """Choose the weight format the lean forward uses for ``model`` (``fp32``, ``int8`` or
    ``auto``: int8 where the CPU supports it). Stored on the model, so every runner built
    for it -- single-sequence and batched alike -- agrees; returns the format chosen."""
    fmt = resolve_weights(weights, next(model.parameters()).device)
    setattr(model, WEIGHTS_ATTR, fmt)
    return fmt


@dataclass(frozen=True)
class Geometry:
    heads: int
    kv_heads: int
    head_dim: int
    eps: float

    @property
    def gqa(self) -> bool:
        return self.kv_heads != self.heads


class LeanLayer(torch.nn.Module):
    """One pre-norm attention + SwiGLU block as four matrix products and a few fused ops.

    Prepared once from the module's weights: the RMSNorm gains are folded into the input
    columns of the projections that follow them, q/k/v, the RoPE-rotated halves of q and
    k, and gate/up are each one matrix, so a decoding step is ~25 tensor ops per layer
    instead of ~45 -- on a small model on a CPU it is the op count, not the FLOPs, that
    sets the speed. The arithmetic around the cache (:meth:`project`, :meth:`finish`) is
    TorchScript-compilable: the eager :meth:`step` and the scripted stack
    (:mod:`.scripted`) share it and differ only in how keys and values are stored.
    """

    def __init__(
        self, geo: Geometry, weights: str, *, q: torch.nn.Linear, k: torch.nn.Linear, v: torch.nn.Linear,
        o: torch.nn.Linear, gate: torch.nn.Linear, up: torch.nn.Linear, down: torch.nn.Linear,
        in_norm: torch.Tensor, post_norm: torch.Tensor,
    ) -> None:
        super().__init__()
        self.geo = geo
        hd = geo.head_dim
        g1, g2 = in_norm.detach()[None], post_norm.detach()[None]
        qk_w = torch.cat([q.weight, k.weight], 0)
        parts = [qk_w, v.weight, _rotated_rows(qk_w, hd)]
        qkv_w = torch.cat(parts, 0) * g1.to(qk_w.dtype)
        qkv_b = None
        if q.bias is not None and k.bias is not None and v.bias is not None:
            qk_b = torch.cat([q.bias, k.bias], 0)
            qkv_b = torch.cat([qk_b, v.bias, _rotated_rows(qk_b, hd)], 0)
        self.qkv: Linear = make_linear(weights, qkv_w, qkv_b)
        self.o: Linear = make_linear(weights, o.weight, o.bias)
        self.gate_up: Linear = make_linear(weights, torch.cat([gate.weight, up.weight], 0) * g2.to(gate.weight.dtype))
        self.down: Linear = make_linear(weights, down.weight, outlier_inputs=True)
        self.heads, self.kv_heads, self.head_dim, self.eps = geo.heads, geo.kv_heads, hd, float(geo.eps)
        self.inter = gate.weight.shape[0]
        self.nqk = (geo.heads + geo.kv_heads) * hd

    @classmethod
    def from_llama(cls, layer: torch.nn.Module, geo: Geometry, weights: str) -> "LeanLayer":
        att, mlp = layer.self_attn, layer.mlp
        return cls(geo, weights, q=att.q_proj, k=att.k_proj, v=att.v_proj, o=att.o_proj, gate=mlp.gate_proj,
                   up=mlp.up_proj, down=mlp.down_proj, in_norm=layer.input_layernorm.weight,
                   post_norm=layer.post_attention_layernorm.weight)

    @torch.jit.export
    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor,
                                                                                       torch.Tensor]:
        """``x`` (B, q, hidden) -> queries (B, heads, q, hd) and this step's keys and values
        (B, kv_heads, q, hd), RoPE applied; ``cos``/``sin`` (B, q, 1, head_dim)."""
        b, q, hidden = x.shape[0], x.shape[1], x.shape[2]
        hd, nqk, kvh = self.head_dim, self.nqk, self.kv_heads
        qkv = self.qkv(torch.rms_norm(x, [hidden], None, self.eps))
        qk = qkv[:, :, :nqk].view(b, q, -1, hd)
        qk = torch.addcmul(qk * cos, qkv[:, :, nqk + kvh * hd :].view(b, q, -1, hd), sin)
        return (qk[:, :, : self.heads].transpose(1, 2), qk[:, :, self.heads :].transpose(1, 2),
                qkv[:, :, nqk : nqk + kvh * hd].view(b, q, kvh, hd).transpose(1, 2))

    @torch.jit.export
    def finish(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        """The attention output (B, heads, q, hd) -> the block's output (B, q, hidden)."""
        b, q = x.shape[0], x.shape[1]
        x = x + self.o(att.transpose(1, 2).reshape(b, q, self.heads * self.head_dim))
        gu = self.gate_up(torch.rms_norm(x, [x.shape[2]], None, self.eps))
        return x + self.down(F.silu(gu[:, :, : self.inter]) * gu[:, :, self.inter :])

    def step(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None, kv: "KVStore",
        index: int,
    ) -> torch.Tensor:
        """``x`` (B, q, hidden) -> the block's output; this step's keys/values go to ``kv``
        (layer ``index``)."""
        qq, k, v = self.project(x, cos, sin)
        kv.write(index, k, v)
        keys, values = kv.read(index)
        att = F.scaled_dot_product_attention(qq, keys, values, attn_mask=mask, enable_gqa=self.geo.gqa)
        return self.finish(x, att)


class KVStore(Protocol):
    """Where a lean forward keeps keys and values: one sequence, or a batch of slots."""

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store this step's (B, kv_heads, q, head_dim) keys and values."""

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All keys and values the step attends to, (B, kv_heads, T, head_dim) each."""


class BuiltPerModel:
    """A derived form of a model's weights, built once per model and shared (``of``);
    rebuilt when the parameters change in place (a draft being trained) or the weight
    format changes (:func:`set_lean_weights`). Each subclass keeps its own cache."""

    _cache: "weakref.WeakKeyDictionary[torch.nn.Module, BuiltPerModel]"
    versions: tuple = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._cache = weakref.WeakKeyDictionary()

    @staticmethod
    def _versions(model: torch.nn.Module) -> tuple:
        return (getattr(model, WEIGHTS_ATTR, "fp32"), *(p._version for p in model.parameters()))

    @classmethod
    def of(cls, model):
        found = cls._cache.get(model)
        versions = cls._versions(model)
        if found is None or found.versions != versions:
            found = cls._cache[model] = cls(model)
            found.versions = versions
        return found


class LeanModel(BuiltPerModel):
    """A Llama-family model as fused weights, geometry and a RoPE table.

    Built once per model and shared by every runner that uses it (single-sequence draft
    runners and the batched slot model alike); rebuilt when the parameters change in
    place (a draft being trained) or the weight format changes (:func:`set_lean_weights`).
    With int8 weights the residual stream and the KV cache are float32.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        cfg, inner = model.config, model.model
        heads = cfg.num_attention_heads
        self.geo = Geometry(heads, getattr(cfg, "num_key_value_heads", None) or heads,
                            getattr(cfg, "head_dim", None) or cfg.hidden_size // heads, cfg.rms_norm_eps)
        self.kv_heads, self.head_dim, self.eps = self.geo.kv_heads, self.geo.head_dim, self.geo.eps
        self.weights = getattr(model, WEIGHTS_ATTR, "fp32")
        self.device = next(model.parameters()).device
        self.dtype = torch.float32 if self.weights == "int8" else next(model.parameters()).dtype
        with torch.no_grad():
            self.layers = [LeanLayer.from_llama(layer, self.geo, self.weights) for layer in inner.layers]
            self._head_w = model.get_output_embeddings().weight
            self.head: Linear = make_linear(self.weights, self._head_w)
        self.vocab_size = self._head_w.shape[0]
        self.stack = _script_stack(self.layers)  # one sequence's forward in one GIL-free call
        self._heads: dict[tuple[int, int], Linear] = {}  # head rows of a legal span, built on first use
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight.to(self.dtype)
        self.rotary = inner.rotary_emb
        self._cos = self._sin = None
        self._lock = threading.Lock()  # guards the shared RoPE table and the span heads

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin at ``positions`` (B, q) -> (B, q, 1, head_dim) each."""
        n = int(positions.max()) + 1
        with self._lock:  # several generations may grow the shared table at once
            if self._cos is None or self._cos.shape[0] < n:
                size = max(n, 2 * (self._cos.shape[0] if self._cos is not None else 0), 512)
                pos = torch.arange(size, device=self.device)[None]
                probe = torch.zeros(1, dtype=self.dtype, device=self.device)
                with torch.no_grad():
                    cos, sin = self.rotary(probe, pos)
                self._cos, self._sin = cos[0], sin[0]
            cos, sin = self._cos, self._sin
        return cos[positions][:, :, None], sin[positions][:, :, None]

    def run(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        kv: KVStore,
        pick: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (float32) for ``ids`` (B, q) at ``positions`` (B, q).

        ``mask`` is a boolean (B or 1, 1, q, T) attention mask or None (one query per
        row, every stored key visible); ``pick`` (B,) selects one query per row, giving
        (B, V) logits instead of (B, q, V).
        """
        x = self.hidden(ids, positions, mask, kv, normed=False)
        if pick is not None:
            x = x[torch.arange(x.shape[0], device=x.device), pick]
        return self.logits(rms_norm(x, self.norm, self.eps))

    def logits(self, normed: torch.Tensor, span: tuple[int, int] | None = None) -> torch.Tensor:
        """LM head over final (normed) hidden states, float32; with ``span`` only rows
        ``[lo, hi)`` of the head are computed and the other logits are ``-inf``."""
        if span is None:
            return self.head(normed).float()
        lo, hi = span
        out = torch.full((*normed.shape[:-1], self.vocab_size), float("-inf"), device=normed.device)
        out[..., lo:hi] = self._head_rows(lo, hi)(normed).float()
        return out

    def _head_rows(self, lo: int, hi: int) -> Linear:
        with self._lock:
            found = self._heads.get((lo, hi))
            if found is None:
                if len(self._heads) > 64:  # a handful of spans (one per codebook) in practice
                    self._heads.clear()
                with torch.no_grad():
                    found = self._heads[(lo, hi)] = make_linear(self.weights, self._head_w[lo:hi].contiguous())
        return found

    def hidden(
        self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, kv: KVStore, *, normed: bool = True
    ) -> torch.Tensor:
        """The layer stack's output (B, q, hidden), after the final norm when ``normed``."""
        x = F.embedding(ids, self.embed).to(self.dtype)  # (B, q, hidden)
        cos, sin = self.rope(positions)
        x = run_layers(self.layers, self.stack, x, cos, sin, mask, kv)
        return rms_norm(x, self.norm, self.eps) if normed else x


class SequenceKV:
    """One sequence's cache: positions [start, end) are written, [0, end) are read."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, start: int, end: int) -> None:
        self.k, self.v, self.start, self.end = k, v, start, end

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k[layer, :, :, self.start : self.end] = k
        self.v[layer, :, :, self.start : self.end] = v

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer, :, :, : self.end], self.v[layer, :, :, : self.end]


def run_layers(layers: list[LeanLayer], stack, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               mask: torch.Tensor | None, kv: KVStore) -> torch.Tensor:
    """The layer stack over ``x``: scripted for one sequence's cache when ``stack`` was
    built (:mod:`.scripted`), the eager layers otherwise (a batch of slots)."""
    if stack is not None and isinstance(kv, SequenceKV):
        return stack(x, cos, sin, mask, kv.k, kv.v, kv.start, kv.end)
    for i, layer in enumerate(layers):
        x = layer.step(x, cos, sin, mask, kv, i)
    return x


def _script_stack(layers: list[LeanLayer]):
    from .scripted import script_stack  # it builds on LeanLayer

    return script_stack(layers)


class LeanLlamaRunner(ModelRunner):
    def __init__(self, model: torch.nn.Module, *, initial_capacity: int = 512) -> None:
        super().__init__(model)
        self.lean = LeanModel.of(model)
        self._capacity = 0
        self._k = self._v = None
        self._features: torch.Tensor | None = None  # final normed hidden state per cached position

    # --- storage ------------------------------------------------------------------------
    def _ensure_cache(self, n: int) -> None:
        if self._k is not None and self._capacity >= n:
            return
        lm = self.lean
        cap = max(n, 2 * self._capacity, 256)
        shape = (len(lm.layers), 1, lm.kv_heads, cap, lm.head_dim)
        k = torch.zeros(shape, dtype=lm.dtype, device=self.device)
        v = torch.zeros(shape, dtype=lm.dtype, device=self.device)
        feats = torch.zeros(cap, lm.embed.shape[1], dtype=lm.dtype, device=self.device)
        if self._k is not None:
            used = len(self.tokens)
            k[:, :, :, :used] = self._k[:, :, :, :used]
            v[:, :, :, :used] = self._v[:, :, :, :used]
            feats[:used] = self._features[:used]
        self._k, self._v, self._features, self._capacity = k, v, feats, cap

    def _crop(self, length: int, drop: int) -> None:
        pass  # positions past len(self.tokens) are simply overwritten later

    def release(self) -> None:
        super().release()
        self._k = self._v = self._features = None
        self._capacity = 0

    def reserve(self, n: int) -> None:
        """Size the cache for ``n`` positions now, so it is never reallocated while another
        thread (an overlapped draft) reads :meth:`features`."""
        self._ensure_cache(n)

    def features(self, end: int, *, checked: bool = True) -> torch.Tensor:
        """The target's final hidden states at positions [0, end) of the cached sequence
        (what a feature-level draft extrapolates from); ``end <= len(self.tokens)`` unless
        the caller knows better (``checked=False``: an overlapped draft reading committed
        positions while this runner, on another thread, moves its token list)."""
        if checked and end > len(self.tokens):
            raise ValueError(f"features up to {end} requested; the cache holds {len(self.tokens)} positions")
        return self._features[:end] if self._features is not None else torch.zeros(0)

    # --- the forward --------------------------------------------------------------------
    def _forward(self, tokens: list[int], last_only: bool, span: tuple[int, int] | None = None) -> torch.Tensor:
        start, k = len(self.tokens), len(tokens)
        end = start + k
        self._ensure_cache(end)
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        positions = torch.arange(start, end, device=self.device)[None]
        mask = None
        if k > 1:
            mask = torch.ones(k, end, dtype=torch.bool, device=self.device).tril(start)
        hidden = self.lean.hidden(ids, positions, mask, SequenceKV(self._k, self._v, start, end))[0]
        self._features[start:end] = hidden
        return self.lean.logits(hidden[-1:], span) if last_only else self.lean.logits(hidden)


def make_runner(model: torch.nn.Module, lean: bool = True) -> ModelRunner:
    """The fastest runner for ``model``: the lean forward where supported (and wanted)."""
    if lean and lean_supported(model):
        return LeanLlamaRunner(model)
    return ModelRunner(model)
