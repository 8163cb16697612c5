"""The per-family examples run end to end on random weights and write a WAV of the right rate."""
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


@pytest.mark.parametrize(
    ("name", "rate", "frame_samples", "needs"),
    [("family_orpheus", 24000, 2048, "snac"), ("family_neutts", 24000, 480, None), ("family_generic", 8000, 160, None)],
)
def test_example_runs_on_random_weights(name, rate, frame_samples, needs, tmp_path):
    if needs:
        pytest.importorskip(needs)
    out = tmp_path / "out.wav"
    stats = load_example(name).main(["hi", "-o", str(out), "--max-frames", "2"])
    with wave.open(str(out)) as w:
        assert w.getframerate() == rate and w.getnframes() == 2 * frame_samples
    assert stats["frames"] == 2 and stats["ttfa_s"] is not None
