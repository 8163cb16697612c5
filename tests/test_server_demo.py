"""The demo page in headless Chromium: it streams over the websocket, receives audio frames,
shows a TTFA, and its stop button cancels.  Skipped cleanly without chromium/playwright."""
import math
import shutil

import pytest
from server_util import running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)"),
    pytest.mark.usefixtures("one_torch_thread"),
]


async def test_demo_page_streams_audio_and_shows_ttfa(formant_voice, paced_voice):
    playwright_api = pytest.importorskip("playwright.async_api")
    async with running_server([formant_voice, paced_voice]) as (server, url):
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
            )
            try:
                page = await browser.new_page()
                await page.goto(url + "/")
                await page.wait_for_function("document.querySelectorAll('#voice option').length == 2")
                await page.fill("#text", "Hello from the browser. This is streamed word by word.")
                await page.fill("#wps", "50")
                await page.click("#speak")
                await page.wait_for_function("window.voicestream.events.some(e => e.type === 'done')", timeout=20000)
                state = await page.evaluate("window.voicestream")
                assert state["frames"] > 10 and state["bytes"] > 24000  # more than half a second of 24 kHz audio
                assert state["seqErrors"] == 0
                assert state["ttfaMs"] is not None and state["ttfaMs"] > 0
                shown = await page.inner_text("#ttfa")
                # the page rounds with toFixed(0): halves go up (Python's round() takes them to even)
                assert shown.endswith("ms") and float(shown.split()[0]) == math.floor(state["ttfaMs"] + 0.5)
                assert (await page.inner_text("#accept")) != "\u2013"  # acceptance displayed

                # stop: the slow voice is still speaking when the button sends cancel
                await page.select_option("#voice", "paced")
                await page.evaluate("ws && ws.close()")  # the voice is chosen at start: new connection
                await page.wait_for_function("ws === null")
                await page.fill("#text", "A long answer that the stop button will cut short. " * 6)
                await page.click("#speak")
                await page.wait_for_function("window.voicestream.events.filter(e => e.type === 'audio_start').length == 2")
                await page.click("#stop")
                await page.wait_for_function("window.voicestream.events.some(e => e.type === 'interrupted')")
                assert (await page.inner_text("#status")).startswith("interrupted")
            finally:
                await browser.close()
    assert server.metrics.utterances.get("interrupted") == 1
