"""Command-line flags for serving a model family, for ``voicestream serve`` (built elsewhere)
to mount with two calls::

    add_family_arguments(serve_parser)
    synth = family_synthesizer_from_args(args)   # None when --adapter is not given

Flags: ``--adapter NAME --target PATH [--draft PATH|self:N] [--codec PATH] [--device cuda]
[--dtype bf16] [--codec-dtype fp32] [--adapter-name NAME] [--adapter-option KEY=VALUE ...]``.
``--adapter-option`` values are parsed as JSON when they parse (``window="exact"``,
``voice=null``), else kept as strings (``voice=leo``, ``config=family.toml``).
"""
from __future__ import annotations

import argparse
import json

from .base import available_adapters
from .loading import load_family_synthesizer
from .synthesizer import FamilySynthesizer

__all__ = ["add_family_arguments", "family_synthesizer_from_args", "parse_options"]


def add_family_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model family (voicestream.adapters.families)")
    g.add_argument("--adapter", help=f"serve a third-party TTS family: {', '.join(available_adapters())}")
    g.add_argument("--target", help="--adapter: the family's checkpoint directory (LM + tokenizer)")
    g.add_argument("--draft", default=None, help="--adapter: draft checkpoint directory, or self:N (first N layers)")
    g.add_argument("--codec", default=None, help="--adapter: codec weights directory ('random' for a smoke test)")
    g.add_argument("--device", default="cpu", help="--adapter: cpu, cuda, cuda:1, ...")
    g.add_argument("--dtype", default=None, help="--adapter: LM dtype (bf16, fp16, fp32; default: checkpoint's)")
    g.add_argument("--codec-dtype", default=None, help="--adapter: codec dtype (default fp32)")
    g.add_argument("--adapter-name", default=None, help="--adapter: the voice name clients select")
    g.add_argument("--adapter-option", action="append", default=[], metavar="KEY=VALUE",
                   help="--adapter: family option (voice=leo, window=exact, config=FILE); repeatable")


def parse_options(items: list[str]) -> dict:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--adapter-option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def family_synthesizer_from_args(args: argparse.Namespace, batch=None) -> FamilySynthesizer | None:
    if not getattr(args, "adapter", None):
        return None
    if not args.target:
        raise SystemExit("--adapter needs --target PATH (the family's checkpoint directory)")
    return load_family_synthesizer(
        args.adapter, args.target, args.draft, args.device, args.dtype,
        codec=args.codec, codec_dtype=args.codec_dtype, name=args.adapter_name, batch=batch,
        **parse_options(args.adapter_option),
    )
