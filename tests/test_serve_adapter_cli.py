"""`voicestream serve --adapter orpheus --target PATH --draft self:1` loads a family synthesizer."""
import numpy as np
import pytest

pytest.importorskip("snac")

import threading

from voicestream.adapters.families.random_checkpoints import random_orpheus_checkpoint
from voicestream.cli import build_parser
from voicestream.server.cli import load_voices
from voicestream.server.synth import SegmentStats, SynthesisOptions, Synthesizer


def test_serve_mounts_an_orpheus_family_with_a_self_draft(tmp_path):
    ckpt = random_orpheus_checkpoint(tmp_path / "orpheus")
    args = build_parser().parse_args(
        ["serve", "--adapter", "orpheus", "--target", str(ckpt), "--draft", "self:1", "--codec", "random",
         "--adapter-name", "tara"]
    )
    (voice,) = load_voices(args)
    assert isinstance(voice, Synthesizer) and voice.name == "tara" and voice.sample_rate == 24000
    stats = SegmentStats()
    pcm = list(voice.stream("Hi.", SynthesisOptions(), threading.Event(), stats))
    audio = np.concatenate(pcm) if pcm else np.zeros(0)
    assert audio.dtype == np.float32 and stats.target_forwards > 0
    assert audio.size == stats.audio_samples
