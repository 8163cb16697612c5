"""The ``voicestream`` command line."""
from __future__ import annotations

import argparse
import sys
import warnings


def build_parser() -> argparse.ArgumentParser:
    from .bench import decode as bench_decode

    parser = argparse.ArgumentParser(prog="voicestream", description=__doc__)
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="benchmarks (side-by-side ratios in one run)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    dec = bench_sub.add_parser("decode", help="speculative vs plain vs transformers assisted decoding")
    bench_decode.add_arguments(dec)
    dec.set_defaults(func=bench_decode.main)
    from .bench import batch as bench_batch

    bat = bench_sub.add_parser("batch", help="batched vs per-session decoding for N concurrent callers")
    bench_batch.add_arguments(bat)
    bat.set_defaults(func=bench_batch.main)
    from .bench import voice as bench_voice

    bvo = bench_sub.add_parser("voice", help="a voice's speed per weight format and draft (plain vs speculative)")
    bench_voice.add_arguments(bvo)
    bvo.set_defaults(func=bench_voice.main)

    from . import say

    say_p = sub.add_parser("say", help="speak text to a WAV file (speculative decoding on)")
    say.add_arguments(say_p)
    say_p.set_defaults(func=say.main)

    from .voice import evaluate as eval_quality

    ev = sub.add_parser("eval", help="evaluations of a voice")
    ev_sub = ev.add_subparsers(dest="eval", required=True)
    q = ev_sub.add_parser("quality", help="WER, DNSMOS, speaker similarity and speed: plain vs each acceptance rule")
    eval_quality.add_arguments(q)
    q.set_defaults(func=eval_quality.main)
    from . import acceptance

    acc = ev_sub.add_parser("acceptance", help="accepted tokens per target forward of drafts, side by side, "
                                               "on a fixed prompt set")
    acceptance.add_arguments(acc)
    acc.set_defaults(func=acceptance.main)

    from . import distill

    dist = sub.add_parser("distill", help="build and train a draft for any target on its own generations")
    distill.add_arguments(dist)
    dist.set_defaults(func=distill.main)

    from .server import cli as serve_cli

    srv = sub.add_parser("serve", help="streaming voice server (websocket + OpenAI-compatible HTTP)")
    serve_cli.add_arguments(srv)
    srv.set_defaults(func=serve_cli.main)

    # parsing needs no Ray; running serve-ray imports it (and says how to install it)
    from .scale import cli as ray_cli

    ray_p = sub.add_parser(
        "serve-ray", help="the same server on Ray Serve replicas (pip install 'voicestream[ray]'; docs/scaling.md)"
    )
    ray_cli.add_arguments(ray_p)
    ray_p.set_defaults(func=ray_cli.main)
    return parser


# What a user can cause with arguments or input (empty text, a missing model path, a draft
# that does not fit its target): one line on stderr, like argparse's own errors, not a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError)


def _command_name(args: argparse.Namespace) -> str:
    words = [args.command] + [getattr(args, k) for k in ("bench", "eval") if getattr(args, k, None)]
    return " ".join(["voicestream", *words])


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if args.traceback:
            raise
        print(f"{_command_name(args)}: error: {e} (--traceback shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
