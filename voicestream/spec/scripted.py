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
    """A :class:`LeanLayer` over one sequence's cache tensors (its arithmetic is the layer's own)."""

    def __init__(self, layer: LeanLayer) -> None:
        super().__init__()
        self.layer = layer
        self.gqa = layer.geo.gqa

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Optional[torch.Tensor],
                k_all: torch.Tensor, v_all: torch.Tensor, index: int, start: int, end: int) -> torch.Tensor:
        qq, k, v = self.layer.project(x, cos, sin)
        k_all[index, :, :, start:end] = k
        v_all[index, :, :, start:end] = v
        att = F.scaled_dot_product_attention(qq, k_all[index, :, :, :end], v_all[index, :, :, :end],
                                             attn_mask=mask, enable_gqa=self.gqa)
        return self.layer.finish(x, att)


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
