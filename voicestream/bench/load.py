"""Load benchmark for ``voicestream serve``: N concurrent websocket sessions, each streaming
LLM-like text word by word at a realistic pace, measured from the client side.

    python -m voicestream.bench.load                     # spawns a local test-voice server
    python -m voicestream.bench.load --sessions 1 4 16 --words-per-second 25
    python -m voicestream.bench.load --url http://127.0.0.1:8080 --voice default

For each N it reports TTFA percentiles (client clock: first text fragment of an utterance
sent -> first frame with an audible sample received, so network and queueing count),
the server-reported RTF and accepted tokens per target forward, and frame integrity:
lost frames (gaps in seq or in an utterance's sample offsets) and duplicated frames.
Both must be 0.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ANSWER = (
    "Sure, I can help with that. Your order shipped this morning and should arrive on Thursday. "
    "If you are not home, the courier will leave it with a neighbour or at the nearest pickup point. "
    "Would you like me to send the tracking link by text message?"
)


@dataclass
class SessionResult:
    ttfa_s: list[float] = field(default_factory=list)
    server_ttfa_ms: list[float] = field(default_factory=list)
    rtf: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    audio_s: float = 0.0
    frames: int = 0
    lost: int = 0
    duplicated: int = 0
    errors: list[str] = field(default_factory=list)


async def run_session(url: str, args: argparse.Namespace, headers: dict) -> SessionResult:
    import aiohttp

    from ..server.audio import AUDIBLE_THRESHOLD, decode
    from ..server.protocol import unpack_frame

    res = SessionResult()
    seen: set[int] = set()
    expected_seq = 0
    offsets: dict[int, int] = {}
    first_text_at: dict[int, float] = {}
    heard: set[int] = set()
    dones = 0
    words = ANSWER.split(" ")
    delay = 1.0 / args.words_per_second
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.ws_connect(url.rstrip("/") + "/v1/stream", max_msg_size=0) as ws:
            start = {"type": "start", "encoding": args.encoding, "sample_rate": args.sample_rate}
            if args.voice:
                start["voice"] = args.voice
            await ws.send_json(start)

            async def writer() -> None:
                for u in range(1, args.utterances + 1):
                    first_text_at[u] = time.perf_counter()
                    for i, w in enumerate(words):
                        await ws.send_json({"type": "text", "text": w + (" " if i < len(words) - 1 else "")})
                        await asyncio.sleep(delay)
                    await ws.send_json({"type": "flush"})
                    while dones < u:  # the next answer comes after this one was spoken
                        await asyncio.sleep(0.01)
                await ws.send_json({"type": "close"})

            task = asyncio.create_task(writer())
            bps = 2 if args.encoding == "pcm_s16le" else 1
            async for msg in ws:
                now = time.perf_counter()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    h, payload = unpack_frame(msg.data)
                    res.frames += 1
                    if h.seq in seen:
                        res.duplicated += 1
                        continue
                    seen.add(h.seq)
                    if h.seq != expected_seq:
                        res.lost += max(0, h.seq - expected_seq)
                    expected_seq = max(expected_seq, h.seq + 1)
                    if h.sample_offset != offsets.get(h.utterance, 0):
                        res.lost += 1
                    offsets[h.utterance] = h.sample_offset + len(payload) // bps
                    res.audio_s += len(payload) / bps / args.sample_rate
                    if h.utterance not in heard and np.abs(decode(payload, args.encoding)).max() > AUDIBLE_THRESHOLD:
                        heard.add(h.utterance)
                        res.ttfa_s.append(now - first_text_at[h.utterance])
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    ev = json.loads(msg.data)
                    if ev["type"] == "done":
                        dones += 1
                        st = ev["stats"]
                        if st["ttfa_ms"] is not None:
                            res.server_ttfa_ms.append(st["ttfa_ms"])
                        if st["rtf"] is not None:
                            res.rtf.append(st["rtf"])
                        if st["accepted_per_target_forward"] is not None:
                            res.accepted.append(st["accepted_per_target_forward"])
                    elif ev["type"] == "error":
                        res.errors.append(ev["code"])
            await task
    return res


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run_level(url: str, n: int, args: argparse.Namespace, headers: dict) -> dict:
    t0 = time.perf_counter()
    results = await asyncio.gather(*[run_session(url, args, headers) for _ in range(n)], return_exceptions=True)
    wall = time.perf_counter() - t0
    ok = [r for r in results if isinstance(r, SessionResult)]
    failed = [repr(r) for r in results if not isinstance(r, SessionResult)]
    ttfa = [t * 1000 for r in ok for t in r.ttfa_s]
    rtf = [x for r in ok for x in r.rtf]
    return {
        "sessions": n,
        "utterances": len(ttfa),
        "ttfa_ms_p50": pct(ttfa, 50),
        "ttfa_ms_p95": pct(ttfa, 95),
        "ttfa_ms_p99": pct(ttfa, 99),
        "server_ttfa_ms_p50": pct([t for r in ok for t in r.server_ttfa_ms], 50),
        "rtf_mean": statistics.fmean(rtf) if rtf else float("nan"),
        "rtf_max": max(rtf) if rtf else float("nan"),
        "accepted_per_target_forward": statistics.fmean([a for r in ok for a in r.accepted]) if ok else float("nan"),
        "audio_s": sum(r.audio_s for r in ok),
        "frames": sum(r.frames for r in ok),
        "lost_frames": sum(r.lost for r in ok),
        "duplicated_frames": sum(r.duplicated for r in ok),
        "errors": [e for r in ok for e in r.errors] + failed,
        "wall_s": wall,
    }


async def spawn_server(args: argparse.Namespace):
    """A local ``voicestream serve --test-voice`` on a free port (separate process: the
    benchmark's clients must not share the server's event loop)."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        sys.executable, "-m", "voicestream.cli", "serve", "--test-voice", "--port", "0",
        "--test-voice-pace", str(args.pace), "--max-sessions", str(max(args.sessions) + 4),
        "--torch-threads", str(args.torch_threads or ((os.cpu_count() or 1) if args.batch else 1)),
    ]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 120)).decode()
        if not line:
            raise RuntimeError("server exited before it was ready")
        m = re.search(r"serving on ([\d.]+):(\d+)", line)
        if m:
            asyncio.create_task(_drain(proc.stderr))
            return proc, f"http://{m.group(1)}:{m.group(2)}"


async def _drain(stream) -> None:
    while await stream.readline():
        pass


def print_table(rows: list[dict]) -> None:
    cols = [
        ("N", "sessions", "{:>3d}"), ("utts", "utterances", "{:>4d}"),
        ("TTFA p50", "ttfa_ms_p50", "{:>8.0f}"), ("p95", "ttfa_ms_p95", "{:>6.0f}"), ("p99", "ttfa_ms_p99", "{:>6.0f}"),
        ("srv p50", "server_ttfa_ms_p50", "{:>7.0f}"), ("RTF mean", "rtf_mean", "{:>8.3f}"), ("max", "rtf_max", "{:>6.3f}"),
        ("acc/fwd", "accepted_per_target_forward", "{:>7.2f}"), ("audio s", "audio_s", "{:>7.1f}"),
        ("lost", "lost_frames", "{:>4d}"), ("dup", "duplicated_frames", "{:>3d}"), ("err", "errors", "{:>3}"),
    ]
    print("  ".join(f"{h:>{len(f.format(0 if 'd' in f else 0.0))}}" for h, _, f in cols))
    for r in rows:
        cells = []
        for _, k, f in cols:
            v = len(r[k]) if k == "errors" else r[k]
            cells.append(f.format(v))
        print("  ".join(cells))
    print("(TTFA in ms, client clock: first text fragment sent -> first audible frame received)")


async def main_async(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    proc = None
    url = args.url
    if url is None:
        proc, url = await spawn_server(args)
    rows = []
    try:
        for n in args.sessions:
            rows.append(await run_level(url, n, args, headers))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    bad = any(r["lost_frames"] or r["duplicated_frames"] or r["errors"] for r in rows)
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m voicestream.bench.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server (default: spawn a local test-voice server)")
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels N")
    p.add_argument("--utterances", type=int, default=2, help="answers per session")
    p.add_argument("--words-per-second", type=float, default=20.0, help="text pace (an LLM streaming tokens)")
    p.add_argument("--voice", default=None)
    p.add_argument("--encoding", default="pcm_s16le", choices=("pcm_s16le", "mulaw"))
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--pace", type=float, default=0.0, help="spawned test voice: min wall s per audio s")
    p.add_argument("--torch-threads", type=int, default=None, help="spawned server (default: as `serve` picks)")
    p.add_argument("--batch", type=int, default=0, metavar="N", help="spawned server: `serve --batch N`")
    p.add_argument("--api-key", default=os.environ.get("VOICESTREAM_API_KEY"))
    p.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
