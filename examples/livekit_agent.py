"""The voicestream LiveKit plugin, streamed token by token into a WAV (no LiveKit server needed).

    pip install 'voicestream[livekit]'
    python examples/livekit_agent.py "Hello there. This arrives token by token." -o out.wav
    python examples/livekit_agent.py "Hello." --url http://127.0.0.1:8080 -o out.wav

In a real agent hand the same object to an ``AgentSession``::

    from livekit.agents import AgentSession
    session = AgentSession(stt=..., llm=..., vad=...,
                           tts=VoiceStreamTTS(client=VoiceStreamClient("http://gpu:8080")))

and run it with ``livekit.agents.cli`` against your LiveKit server; the session drives
``stream()`` exactly as this script does (``push_text`` per LLM token, ``end_input``,
``aclose`` on an interruption).  Without ``--url`` the formant test voice runs in-process.
"""
from __future__ import annotations

import argparse
import asyncio
import time
import wave

from voicestream.adapters.agents.livekit import VoiceStreamTTS
from voicestream.client import VoiceStreamClient


def make_tts(url: str | None, api_key: str | None, sample_rate: int) -> VoiceStreamTTS:
    if url:
        return VoiceStreamTTS(client=VoiceStreamClient(url, api_key=api_key), sample_rate=sample_rate)
    from voicestream.server.formant import default_test_synthesizer

    return VoiceStreamTTS(synthesizer=default_test_synthesizer(), sample_rate=sample_rate)


async def run(args: argparse.Namespace) -> dict:
    engine = make_tts(args.url, args.api_key, args.sample_rate)
    stream = engine.stream()
    t0 = time.perf_counter()

    async def feed() -> None:
        for word in args.text.split(" "):
            stream.push_text(word + " ")
            await asyncio.sleep(args.token_delay)  # as an LLM would produce it
        stream.end_input()

    feeder = asyncio.create_task(feed())
    pcm, first_audio_s = bytearray(), None
    async for event in stream:
        if first_audio_s is None:
            first_audio_s = time.perf_counter() - t0
        pcm += bytes(event.frame.data)
    await feeder
    await stream.aclose()
    await engine.aclose()
    with wave.open(args.output, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(args.sample_rate)
        w.writeframes(bytes(pcm))
    return {"samples": len(pcm) // 2, "sample_rate": args.sample_rate, "first_audio_s": first_audio_s}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text")
    p.add_argument("-o", "--output", default="livekit_agent.wav")
    p.add_argument("--url", help="a running `voicestream serve` (default: in-process test voice)")
    p.add_argument("--api-key")
    p.add_argument("--sample-rate", type=int, default=24000)
    p.add_argument("--token-delay", type=float, default=0.02)
    stats = asyncio.run(run(p.parse_args(argv)))
    print(f"wrote {stats['samples'] / stats['sample_rate']:.2f} s of audio; first audio after {stats['first_audio_s']:.3f} s")
    return stats


if __name__ == "__main__":
    main()
