"""Family audio layout, frame assembly and the audio grammar (no models involved)."""
import numpy as np
import pytest
import torch
from voicestream.adapters.codecs import available_codecs, get_codec
from voicestream.adapters.families import (
    PRE_AUDIO,
    AudioConstraint,
    AudioLayout,
    FrameAssembler,
)

from voicestream.codec.base import CodecSpec, TokenLayoutError

SPEC = CodecSpec("toy", 8000, 80, (8, 16), slot_codebooks=(0, 1, 1))  # 3 slots, codebook 1 shared


def test_layout_round_trip_with_interleave():
    # LM writes codec slots in order 2, 0, 1 at ids 100+, 200+, 300+
    layout = AudioLayout.for_codec(SPEC, (100, 200, 300), codec_slots=(2, 0, 1))
    assert layout.slot_sizes == (16, 8, 16)
    codes = np.array([[1, 2, 3], [7, 15, 0]])
    ids = layout.codes_to_ids(codes)
    assert ids.tolist() == [103, 201, 302, 100, 207, 315]
    np.testing.assert_array_equal(layout.ids_to_codes(ids), codes)


def test_layout_rejects_ids_outside_their_position():
    layout = AudioLayout((100, 200), (8, 8))
    with pytest.raises(TokenLayoutError, match="frame 0 position 1"):
        layout.ids_to_codes([101, 108])
    with pytest.raises(TokenLayoutError, match="whole number"):
        layout.ids_to_codes([101])
    with pytest.raises(TokenLayoutError):
        layout.codes_to_ids(np.array([[8, 0]]))
    with pytest.raises(ValueError, match="permutation"):
        AudioLayout((1, 2), (3, 3), codec_slots=(0, 0))


def test_frame_assembler_waits_for_whole_frames():
    layout = AudioLayout((10, 20), (4, 4), codec_slots=(1, 0))
    fa = FrameAssembler(layout)
    assert fa.push([11]).shape == (0, 2) and fa.pending == 1
    np.testing.assert_array_equal(fa.push([23, 12]), [[3, 1]])
    assert fa.pending == 1


def test_constraint_masks_follow_the_frame_and_stop_only_on_boundaries():
    layout = AudioLayout((10, 20), (4, 4))
    c = AudioConstraint(layout, 40, start_ids=[5], stop_ids=[6])
    s = c.initial()
    assert s == PRE_AUDIO
    assert torch.nonzero(c.allowed(s)).flatten().tolist() == [5]
    for tok in [1, 2, 3]:  # text keeps it outside audio
        s = c.step(s, tok)
    assert s == PRE_AUDIO
    s = c.step(s, 5)
    assert s == 0
    assert torch.nonzero(c.allowed(s)).flatten().tolist() == [6, 10, 11, 12, 13]
    s = c.step(s, 12)
    assert s == 1
    assert torch.nonzero(c.allowed(s)).flatten().tolist() == [20, 21, 22, 23]  # no stop mid-frame
    assert c.step(s, 23) == 0
    assert c.step(s, 12) == PRE_AUDIO  # a position-0 id at position 1 is not audio any more
    with pytest.raises(ValueError, match="beyond"):
        AudioConstraint(layout, 23, start_ids=[5], stop_ids=[6])


def test_codec_registry():
    assert {"codec2", "snac", "neucodec"} <= set(available_codecs())
    assert get_codec("codec2").spec.sample_rate == 8000
    with pytest.raises(KeyError, match="unknown codec"):
        get_codec("nope")
    with pytest.raises(ValueError, match="path=DIR"):
        get_codec("snac")
