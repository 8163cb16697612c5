"""Loading a family synthesizer from checkpoint paths: the function ``voicestream serve
--adapter NAME --target PATH --draft PATH`` calls.

Everything is local (``local_files_only``): the target directory holds the LM and its
tokenizer; the codec's weights come from ``codec=DIR`` (or ``"random"`` for a smoke test);
the draft is a second checkpoint, ``"self:N"`` (the target's first N layers) or nothing.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from voicestream.models import load_causal_lm

from .base import FamilyAdapter, get_adapter
from .synthesizer import FamilySynthesizer

__all__ = ["load_family_synthesizer", "parse_dtype"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/... or a torch dtype; ``None``/``"auto"`` keeps the checkpoint's."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto'") from None


def load_family_synthesizer(
    adapter: str | type[FamilyAdapter] | FamilyAdapter,
    target: str | Path,
    draft: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    *,
    codec=None,
    codec_dtype: str | torch.dtype | None = None,
    name: str | None = None,
    draft_cpu_threads: int | None = None,
    batch=None,
    **adapter_options,
) -> FamilySynthesizer:
    """Load target (+ draft) and the family's adapter; return a server-ready synthesizer.

    ``adapter``: a registered family name (``orpheus``, ``neutts``, ``generic``), a class or
    an instance.  ``draft``: checkpoint path, ``"self:N"``, or ``None``.  ``dtype`` applies
    to the LMs (bf16 is the usual choice on a GPU); the codec runs in ``codec_dtype``
    (default float32: codec decoders are small and some are fragile in half precision).
    ``batch`` (a :class:`voicestream.batch.BatchConfig`) batches all sessions together.
    ``adapter_options`` go to the family (``voice=``, ``window=``, ``config=`` for generic).
    """
    t0 = time.perf_counter()
    lm_dtype = parse_dtype(dtype)
    target_model = load_causal_lm(target, device=device, dtype=lm_dtype)
    if isinstance(adapter, FamilyAdapter):
        family = adapter
    else:
        cls = get_adapter(adapter) if isinstance(adapter, str) else adapter
        family = cls.load(Path(target), codec=codec, device=device, dtype=parse_dtype(codec_dtype), **adapter_options)
    draft_arg = draft
    if draft is not None and not str(draft).startswith("self:") and str(draft).lower() != "none":
        draft_arg = load_causal_lm(draft, device=device, dtype=lm_dtype)
    synth = FamilySynthesizer(family, target_model, draft_arg, name=name, draft_cpu_threads=draft_cpu_threads, batch=batch)
    synth.load_seconds = time.perf_counter() - t0
    return synth
