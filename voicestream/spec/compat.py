"""Draft/target compatibility: speculative decoding compares their distributions token by
token, so both must share one vocabulary and the same special ids."""
from __future__ import annotations

import torch


class IncompatibleModelsError(ValueError):
    """The draft cannot speculate for this target (different vocabulary or special ids)."""


def output_vocab_size(model: torch.nn.Module) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def _ids(value) -> frozenset[int]:
    if value is None:
        return frozenset()
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(int(v) for v in value)
    return frozenset([int(value)])


def special_ids(model: torch.nn.Module) -> dict[str, frozenset[int]]:
    """bos/eos/pad ids from config and generation_config (either may carry them)."""
    found: dict[str, frozenset[int]] = {}
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        if source is None:
            continue
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            ids = _ids(getattr(source, name, None))
            if ids and name not in found:
                found[name] = ids
    return found


def check_compatible(target: torch.nn.Module, draft: torch.nn.Module) -> None:
    tv, dv = output_vocab_size(target), output_vocab_size(draft)
    if tv != dv:
        raise IncompatibleModelsError(
            f"draft vocabulary size {dv} != target vocabulary size {tv}: the draft must share the "
            "target's tokenizer and output head size"
        )
    ts, ds = special_ids(target), special_ids(draft)
    for name in sorted(set(ts) & set(ds)):
        if ts[name] != ds[name]:
            raise IncompatibleModelsError(
                f"draft {name}={sorted(ds[name])} != target {name}={sorted(ts[name])}: "
                "draft and target must agree on special token ids"
            )
    from .feature_draft import check_feature_draft, is_feature_draft

    if is_feature_draft(draft):
        check_feature_draft(target, draft)
