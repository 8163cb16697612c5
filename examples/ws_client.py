"""Stream text to a running ``voicestream serve`` over the websocket and save the audio.

    voicestream serve --test-voice &
    python examples/ws_client.py "Hello there. This arrives word by word." --out hello.wav

Text is sent one word at a time (as an LLM would produce it), then ``flush`` and
``close``.  Audio frames are checked for gaps by their sequence numbers and written to
a WAV file; events are printed as they arrive.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time
import wave

import aiohttp

HEADER = struct.Struct("<2sBBIII")  # magic "VS", version, flags, seq, utterance, sample offset


def mulaw_to_s16(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        u = ~b & 0xFF
        mag = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)) - 0x84
        out += struct.pack("<h", -mag if u & 0x80 else mag)
    return bytes(out)


async def run(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    pcm = bytearray()
    expected_seq = 0
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.ws_connect(f"{args.url.rstrip('/')}/v1/stream") as ws:
            start = {"type": "start", "encoding": args.encoding, "sample_rate": args.sample_rate}
            if args.voice:
                start["voice"] = args.voice
            await ws.send_json(start)

            async def send_text() -> None:
                for word in args.text.split(" "):
                    await ws.send_json({"type": "text", "text": word + " "})
                    await asyncio.sleep(args.word_delay)
                await ws.send_json({"type": "flush"})
                await ws.send_json({"type": "close"})

            sender = asyncio.create_task(send_text())
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    magic, _version, _flags, seq, _utt, _offset = HEADER.unpack_from(msg.data)
                    assert magic == b"VS", "not a voicestream audio frame"
                    if seq != expected_seq:
                        print(f"frame gap: expected seq {expected_seq}, got {seq}", file=sys.stderr)
                    expected_seq = seq + 1
                    payload = msg.data[HEADER.size :]
                    pcm += payload if args.encoding == "pcm_s16le" else mulaw_to_s16(payload)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(msg.data)
                    print(f"{time.perf_counter() - t0:7.3f}s  {json.dumps(event)}")
            await sender
            print(f"closed with {ws.close_code}; {expected_seq} frames, {len(pcm) / 2 / args.sample_rate:.2f} s of audio")
    with wave.open(args.out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(args.sample_rate)
        w.writeframes(bytes(pcm))
    print(f"wrote {args.out}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--voice", default=None)
    p.add_argument("--encoding", default="pcm_s16le", choices=("pcm_s16le", "mulaw"))
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--word-delay", type=float, default=0.05, help="seconds between words (LLM pace)")
    p.add_argument("--api-key", default=os.environ.get("VOICESTREAM_API_KEY"))
    p.add_argument("--out", default="out.wav")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
