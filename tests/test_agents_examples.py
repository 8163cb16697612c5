"""examples/pipecat_agent.py and examples/livekit_agent.py run end to end (in-process test voice)."""
import importlib.util
import wave
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "needs"), [("pipecat_agent", "pipecat"), ("livekit_agent", "livekit.agents")])
def test_agent_example_writes_speech(name, needs, tmp_path):
    pytest.importorskip(needs)
    out = tmp_path / "out.wav"
    stats = load_example(name).main(["Hello there. A second sentence.", "-o", str(out), "--sample-rate", "16000"])
    with wave.open(str(out)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        assert w.getnframes() == stats["samples"] > 16000 * 0.5  # two sentences: well over half a second
