"""The lean layer stack as TorchScript: one call, no Python between the ops, GIL released.

Overlapped decoding runs the draft and the target on two threads of one process. In eager
mode every tensor op goes back through the Python interpreter, and with two threads doing
that at once they spend their time handing the GIL to each other: measured on the 2-core
CPU, a target step went from 1.0 to 3.2 ms and a draft step from 0.35 to 0.95 ms when both
ran together. A scripted stack executes its ~150 ops inside one C++ call that releases the
GIL, so the two threads really run side by side. It is built from a :class:`LeanLayer`
list (same fused weights, float32 or int8) for one sequence's cache (:class:`SequenceKV`);
the batched slot cache keeps the eager path.
"""
from __future__ import annotations

import threading
import warnings
from typing import Optional

import torch
import torch.nn.functional as F

from .lean_runner import LeanLayer


class _ScriptLayer(torch.nn.Module):
    def __init__(self, layer: LeanLayer) -> None:
        super().__init__()
        geo = layer.geo
        self.qkv, self.o, self.gate_up, self.down = layer.qkv, layer.o, layer.gate_up, layer.down
        self.heads, self.kv_heads, self.head_dim, self.eps = geo.heads, geo.kv_heads, geo.head_dim, float(geo.eps)
        self.inter, self.nqk, self.gqa = layer.inter, layer.nqk, geo.gqa

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Optional[torch.Tensor],
                k_all: torch.Tensor, v_all: torch.Tensor, index: int, start: int, end: int) -> torch.Tensor:
        b, q, hidden = x.shape[0], x.shape[1], x.shape[2]
        hd, nqk, kvh = self.head_dim, self.nqk, self.kv_heads
        qkv = self.qkv(torch.rms_norm(x, [hidden], None, self.eps))
        qk = qkv[:, :, :nqk].view(b, q, -1, hd)
        qk = torch.addcmul(qk * cos, qkv[:, :, nqk + kvh * hd:].view(b, q, -1, hd), sin)
        qq = qk[:, :, : self.heads].transpose(1, 2)
        k_all[index, :, :, start:end] = qk[:, :, self.heads:].transpose(1, 2)
        v_all[index, :, :, start:end] = qkv[:, :, nqk: nqk + kvh * hd].view(b, q, kvh, hd).transpose(1, 2)
        att = F.scaled_dot_product_attention(qq, k_all[index, :, :, :end], v_all[index, :, :, :end],
                                             attn_mask=mask, enable_gqa=self.gqa)
        x = x + self.o(att.transpose(1, 2).reshape(b, q, self.heads * hd))
        gu = self.gate_up(torch.rms_norm(x, [hidden], None, self.eps))
        return x + self.down(F.silu(gu[:, :, : self.inter]) * gu[:, :, self.inter:])


class _ScriptStack(torch.nn.Module):
    def __init__(self, layers: list[LeanLayer]) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([_ScriptLayer(layer) for layer in layers])

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Optional[torch.Tensor],
                k_all: torch.Tensor, v_all: torch.Tensor, start: int, end: int) -> torch.Tensor:
        i = 0
        for layer in self.layers:
            x = layer(x, cos, sin, mask, k_all, v_all, i, start, end)
            i += 1
        return x


_lock = threading.Lock()


def script_stack(layers: list[LeanLayer]):
    """The scripted stack for ``layers`` (call it as ``stack(x, cos, sin, mask, k, v, start,
    end)``), or None where TorchScript cannot compile it (the eager layers stay in use)."""
    try:
        with _lock, warnings.catch_warnings():  # torch.jit warns that TorchScript is in maintenance
            warnings.simplefilter("ignore")
            return torch.jit.script(_ScriptStack(layers))
    except Exception as exc:  # an unsupported op or torch build: eager is correct, only slower
        warnings.warn(f"the lean forward stays eager: TorchScript could not compile it ({exc})", RuntimeWarning)
        return None
