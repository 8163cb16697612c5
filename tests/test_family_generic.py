"""Generic family from a config file (tiny Llama + built-in Codec2), and self-speculation."""
import json
import threading

import numpy as np
import pytest
import torch
from voicestream.adapters.families import (
    FamilySynthesizer,
    get_adapter,
    load_family_synthesizer,
    parse_self_draft,
)
from voicestream.adapters.families.generic import GenericAdapter, GenericFamilyConfig
from voicestream.adapters.families.random_checkpoints import (
    byte_tokenizer,
    save_random_lm,
)

from voicestream.codec import default_codec
from voicestream.models import load_causal_lm

START, STOP, AUDIO = 256, 257, 258  # bytes 0..255 are text
CODEC2_VOCAB = default_codec().spec.vocab_size  # 5376 flat Codec2 ids
VOCAB = AUDIO + CODEC2_VOCAB

TOML = """
name = "toy-codec2"
prompt = ["say: {text}", 256]
text_encoding = "bytes"
start_ids = [256]
stop_ids = [257]

[audio]
codec = "codec2"
layout = "codec_flat"
offset = 258

[sampling]
temperature = 0.8
top_k = 20
max_seconds = 5
"""


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy")
    save_random_lm(path, vocab_size=VOCAB, hidden_size=32, num_layers=3, seed=4)
    (path / "voicestream_family.toml").write_text(TOML)
    return path


@pytest.fixture(scope="module")
def toy_adapter(toy_dir):
    return get_adapter("generic").load(toy_dir)


def test_config_file_defines_layout_prompt_and_defaults(toy_adapter):
    a = toy_adapter
    assert a.name == "toy-codec2" and a.sample_rate == 8000
    spec = a.codec.spec
    assert a.layout.slot_offsets == tuple(AUDIO + o for o in spec.codebook_offsets)
    assert a.build_prompt("hi") == [*b"say: hi", START]
    assert (a.defaults.temperature, a.defaults.top_k, a.defaults.max_seconds) == (0.8, 20, 5)


def test_generic_synthesis_of_a_few_frames(toy_dir):
    synth = load_family_synthesizer("generic", toy_dir)
    frames = 5
    result = synth.synthesize("hi", synth.config_for("hi").with_(max_new_tokens=7 * frames))
    synth.close()
    assert result.sample_rate == 8000 and result.audio.shape == (frames * 160,)
    assert result.stats.frames == frames and result.stats.finish_reason == "length"


def test_stop_id_ends_the_utterance(toy_dir, toy_adapter):
    target = load_causal_lm(toy_dir)
    with torch.no_grad():
        target.lm_head.weight[STOP] = 50 * target.lm_head.weight[AUDIO]  # make stopping the best move
    synth = FamilySynthesizer(toy_adapter, target)
    result = synth.synthesize("hi", synth.config_for("hi").with_(stop_ids=()))  # family's stop ids filled in
    st = result.stats
    assert st.finish_reason == "stop" and st.frames < toy_adapter.max_new_tokens_for("hi") // 7
    # the grammar allows the stop id only between frames: nothing torn is left behind
    assert st.codec_tokens == 7 * st.frames and result.audio.size == 160 * st.frames


def test_json_config_with_tokenizer_text_and_named_tokens(tmp_path):
    tok = byte_tokenizer({"<|audio|>": START, "<|end|>": STOP}, bos=("<|bos|>", 300 + CODEC2_VOCAB))
    save_random_lm(tmp_path, vocab_size=VOCAB + 1, tokenizer=tok, hidden_size=16, num_layers=1)
    config = {
        "name": "json-family", "voice": "ann", "prompt": ["{voice}: {text}", {"token": "<|audio|>"}],
        "start_ids": [START], "stop_ids": [STOP],
        "audio": {"codec": "codec2", "layout": "per_slot", "offset": AUDIO, "slot_stride": 1024,
                  "codec_slots": [1, 0, 2, 3, 4, 5, 6]},
    }
    (tmp_path / "fam.json").write_text(json.dumps(config))
    adapter = GenericAdapter.load(tmp_path, config=tmp_path / "fam.json")
    assert adapter.build_prompt("yo") == [300 + CODEC2_VOCAB, *b"ann: yo", START]  # tokenizer's BOS kept
    assert adapter.layout.slot_offsets == tuple(AUDIO + 1024 * p for p in range(7))
    assert adapter.layout.codec_slots == (1, 0, 2, 3, 4, 5, 6)
    renamed = GenericAdapter.load(tmp_path, config=tmp_path / "fam.json", voice="bo")
    assert renamed.build_prompt("yo")[1:6] == list(b"bo: y")
    with pytest.raises(TypeError):
        GenericAdapter.load(tmp_path, config=tmp_path / "fam.json", vioce="typo")


def test_config_errors_are_explicit(tmp_path):
    with pytest.raises(ValueError, match="unknown family config keys"):
        GenericFamilyConfig.from_dict({"codec": "codec2", "start_ids": [1], "stop_ids": [2], "offset": 3, "typo": 1})
    with pytest.raises(ValueError, match="audio ids"):
        GenericFamilyConfig.from_dict({"codec": "codec2", "start_ids": [1], "stop_ids": [2]})
    windowed = GenericFamilyConfig.from_dict(
        {"codec": "codec2", "start_ids": [1], "stop_ids": [2], "audio": {"offset": 3},
         "text_encoding": "bytes", "window": {"context_frames": 1}}
    )
    with pytest.raises(ValueError, match="takes no \\[window\\]"):
        GenericAdapter(windowed, default_codec())
    small = GenericAdapter(GenericFamilyConfig.from_dict(
        {"codec": "codec2", "start_ids": [1], "stop_ids": [2], "offset": 100, "text_encoding": "bytes"}
    ), default_codec())
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        small.constraint(vocab_size=1000)


def test_cli_flags_build_a_family_synthesizer(toy_dir):
    import argparse

    from voicestream.adapters.families.cli import (
        add_family_arguments,
        family_synthesizer_from_args,
    )

    parser = argparse.ArgumentParser()
    add_family_arguments(parser)
    assert family_synthesizer_from_args(parser.parse_args([])) is None
    args = parser.parse_args([
        "--adapter", "generic", "--target", str(toy_dir), "--draft", "self:2", "--adapter-name", "toy",
        "--adapter-option", f"config={toy_dir / 'voicestream_family.toml'}",
    ])
    synth = family_synthesizer_from_args(args)
    assert synth.name == "toy" and synth.draft.config.num_hidden_layers == 2 and synth.sample_rate == 8000
    synth.close()


# ----- self-speculation -------------------------------------------------------------------
def test_self_draft_is_the_targets_first_layers_and_changes_no_greedy_output(toy_dir, toy_adapter):
    target = load_causal_lm(toy_dir)
    plain = FamilySynthesizer(toy_adapter, target)
    spec = FamilySynthesizer(toy_adapter, target, draft="self:1")
    assert spec.draft.config.num_hidden_layers == 1
    assert torch.equal(spec.draft.lm_head.weight, target.lm_head.weight)
    assert torch.equal(spec.draft.model.layers[0].mlp.up_proj.weight, target.model.layers[0].mlp.up_proj.weight)
    cfg = plain.config_for("hello").with_(max_new_tokens=7 * 6)
    a, b = plain.synthesize("hello", cfg), spec.synthesize("hello", cfg)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert b.stats.generation["drafted_tokens"] > 0 and a.stats.generation["drafted_tokens"] == 0
    assert b.stats.generation["target_forwards"] <= a.stats.generation["target_forwards"]


def test_self_draft_spec_parsing(toy_dir, toy_adapter):
    assert parse_self_draft("self:2") == 2 and parse_self_draft("/models/draft") is None
    for bad in ("self:0", "self:x"):
        with pytest.raises(ValueError, match="self:N"):
            parse_self_draft(bad)
    with pytest.raises(ValueError, match="every layer"):
        FamilySynthesizer(toy_adapter, load_causal_lm(toy_dir), draft="self:3")


def test_concurrent_streams_match_sequential(toy_dir, toy_adapter):
    synth = FamilySynthesizer(toy_adapter, load_causal_lm(toy_dir), draft="self:1")
    cfg = synth.config_for("x").with_(max_new_tokens=7 * 4)
    texts = ["one", "two words"]
    alone = [synth.synthesize(t, cfg).audio for t in texts]
    results: dict[int, np.ndarray] = {}

    def run(i):
        results[i] = synth.synthesize(texts[i], cfg).audio

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        np.testing.assert_array_equal(results[i], alone[i])
