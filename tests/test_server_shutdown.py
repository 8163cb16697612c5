"""Graceful shutdown: ``voicestream serve`` as a real subprocess, stopped with SIGTERM."""
import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from server_util import ws_client

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


async def start_server(*extra: str):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicestream.cli", "serve", "--test-voice", "--port", "0", *extra,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    end = time.monotonic() + 60
    while time.monotonic() < end:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        if not line:
            break
        log.append(line)
        m = re.search(r"serving on ([\d.]+):(\d+)", line)
        if m:
            return proc, f"http://{m.group(1)}:{m.group(2)}", log
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(log))


async def finish(proc, log, timeout=15):
    rest = await asyncio.wait_for(proc.stderr.read(), timeout)
    code = await asyncio.wait_for(proc.wait(), timeout)
    return code, "".join(log) + rest.decode()


async def test_sigterm_finishes_utterances_then_closes_1001():
    proc, url, log = await start_server("--test-voice-pace", "0.3", "--shutdown-deadline", "8")
    try:
        async with ws_client(url) as c:
            await c.send(type="start")
            await c.send(type="text", text="This answer is still being spoken when the deploy starts. And it ends")
            await c.wait_for("audio_start", timeout=10)
            t_term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            async with aiohttp.ClientSession() as http:  # no new sessions while draining
                with pytest.raises(aiohttp.ClientError):
                    await http.ws_connect(url + "/v1/stream")
            rx = await c.closed(timeout=15)
        assert rx.close_code == 1001
        done = rx.of("done")[0]["stats"]
        assert done["segments"] == 2, "the unfinished text was spoken too, not dropped"
        received_ms = sum(len(p) // 2 for _, p in rx.frames) / 16000 * 1000
        assert abs(received_ms - done["audio_ms"]) < 100, "every frame of the utterance arrived"
        assert rx.seqs() == list(range(len(rx.frames)))
        code, output = await finish(proc, log)
        assert code == 0, output
        assert time.monotonic() - t_term < 8 + 3
        assert "shutdown complete" in output
    finally:
        if proc.returncode is None:
            proc.kill()


async def test_sigterm_deadline_cuts_long_utterances():
    proc, url, log = await start_server("--test-voice-pace", "0.3", "--shutdown-deadline", "0.5")
    try:
        async with ws_client(url) as c:
            await c.send(type="start")
            await c.send(type="text", text="A very long monologue that would take far too long to finish. " * 10)
            await c.send(type="flush")
            await c.wait_for("audio_start", timeout=10)
            t_term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rx = await c.closed(timeout=10)
        assert rx.close_code == 1001
        assert rx.of("error")[-1]["code"] == "shutting_down" and not rx.of("done")
        code, output = await finish(proc, log)
        assert code == 0, output
        assert time.monotonic() - t_term < 5
    finally:
        if proc.returncode is None:
            proc.kill()
