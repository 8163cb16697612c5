"""int8 weights for the lean forward on CPU: decoding is bound by reading weights, not math.

One decoding step multiplies a handful of activation rows by every weight matrix of the
model, so on a CPU its cost is streaming the weights through memory. float32 GEMM is also
poorly tuned for the few-row case: on the 2-core AVX2 machine the built-in voice's linears
cost 7.0 ms for one row and 12.5 ms for five. fbgemm's dynamically quantised int8 linear
reads a quarter of the bytes and costs the same for one row or five (2.7 / 2.3 ms). The
second point is what speculative decoding needs on a CPU: verifying a chunk of drafted
tokens then costs about as much as one plain step, as it does on a GPU. (End to end on
the built-in voice, plain decoding ran 1.34x faster; ``voicestream bench voice``.)

Weights are quantised per output channel (symmetric); activations per call, with
``reduce_range`` (7-bit) because fbgemm's AVX2 kernel can saturate its 16-bit
accumulators otherwise. Where the int8 backend is missing, :func:`int8_available` says so
and callers keep float32.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F

WEIGHT_FORMATS = ("fp32", "int8")

Linear = Callable[[torch.Tensor], torch.Tensor]


def int8_available(device: torch.device | str = "cpu") -> bool:
    """True where int8 dynamic linears run: a CPU with an x86/fbgemm quantised engine."""
    if torch.device(device).type != "cpu":
        return False
    engines = set(torch.backends.quantized.supported_engines)
    return bool(engines & {"x86", "fbgemm"}) and hasattr(torch.ops.quantized, "linear_dynamic")


def resolve_weights(weights: str | None, device: torch.device | str = "cpu") -> str:
    """``auto``/None -> int8 where available, else fp32; an explicit choice is checked."""
    if weights in (None, "auto"):
        return "int8" if int8_available(device) else "fp32"
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {('auto',) + WEIGHT_FORMATS}, got {weights!r}")
    if weights == "int8" and not int8_available(device):
        raise ValueError(f"int8 weights need a CPU with the fbgemm/x86 quantised engine (device {device})")
    return weights


class DenseLinear(torch.nn.Module):
    """The plain linear, in the model's own dtype (a module, so a scripted forward can hold it)."""

    __annotations__ = {"bias": Optional[torch.Tensor]}  # evaluated: TorchScript reads the attribute's type

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = weight
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Int8Linear(torch.nn.Module):
    """``weight`` quantised to int8 per output row; takes and gives float32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = (w.abs().amax(1) / 127.0).clamp_min(1e-8).double()
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # torch flags quantised-tensor constructors as deprecated
            warnings.simplefilter("ignore", UserWarning)
            qw = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x.float(), self.packed, True)


def make_linear(
    weights: str, weight: torch.Tensor, bias: torch.Tensor | None = None, *, outlier_inputs: bool = False
) -> Linear:
    """A linear in format ``weights``. ``outlier_inputs`` keeps it float32 under int8: a
    per-tensor activation scale cannot hold inputs with a few huge channels (the MLP's
    SiLU-gated ``down_proj`` input). On the built-in voice, quantising that one projection
    moved the logits three times more than all the others together (greedy argmax agreement
    with float32: 88 % with it in int8, 94 % without; the step costs ~1 ms more)."""
    if weights == "int8":
        if not outlier_inputs:
            return Int8Linear(weight, bias)
        # the int8 forward's activations are float32, whatever dtype the model was loaded in
        return DenseLinear(weight.detach().float(), None if bias is None else bias.detach().float())
    return DenseLinear(weight, bias)
