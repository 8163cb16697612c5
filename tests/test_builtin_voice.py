"""The built-in voice shipped in the package: it loads from the package alone, stays under
the size budget, speaks a sentence to its end, and its speculative greedy output is the
target's own greedy output, token for token, on the real weights."""
import numpy as np
import pytest

from voicestream.say import DEFAULT_VOICE_DIR

pytestmark = pytest.mark.skipif(
    not (DEFAULT_VOICE_DIR / "target" / "config.json").exists(), reason="no built-in voice installed in this build"
)

TEXT = "Can you call me tomorrow, please?"


@pytest.fixture(scope="module")
def voices():
    from voicestream.voice.synthesize import Voice

    spec = Voice.load(DEFAULT_VOICE_DIR / "target", DEFAULT_VOICE_DIR / "draft", threads=2)
    assert spec.lexicon is not None and len(spec.lexicon) > 1000  # the pronunciation lexicon ships beside the target
    plain = Voice(spec.target, None, lexicon=spec.lexicon, lexicon_durations=spec.grammar.lexicon_durations)
    yield plain, spec
    plain.close()
    spec.close()


def test_shipped_weights_are_small_and_in_hf_layout():
    files = [p for p in DEFAULT_VOICE_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 50 * 2**20
    for part in ("target", "draft"):
        assert {"config.json", "model.safetensors"} <= {p.name for p in (DEFAULT_VOICE_DIR / part).iterdir()}


def test_builtin_voice_speaks_to_the_end_and_speculation_is_exact(voices):
    from voicestream.spec.stats import GenerationStats

    plain, spec = voices
    prompt = spec.vocab.prompt_for(TEXT)
    cfg = spec.spec_config.with_(max_new_tokens=spec.max_new_tokens_for(TEXT))
    runs = []
    for v in (plain, spec):
        st = GenerationStats()
        runs.append(([t for c in v.decoder.generate(prompt, cfg, stats=st, constraint=v.grammar) for t in c.tokens], st))
    (ref, st_plain), (out, st_spec) = runs
    assert out == ref and st_plain.finish_reason == st_spec.finish_reason == "stop"
    assert st_spec.target_forwards < st_plain.target_forwards  # the draft's tokens were accepted
    said = spec.vocab.text_from_ids(out).replace(" ", "")
    assert said == spec.vocab.text_from_ids(spec.vocab.text_ids(TEXT)).replace(" ", "")  # every word, once
    res = spec.synthesize(TEXT)
    seconds = res.audio.size / res.sample_rate
    assert 0.8 < seconds < 6.0 and np.abs(res.audio).max() > 0.05  # a sentence of sound, not silence


def test_overlapped_decoding_speaks_the_targets_own_tokens(voices):
    """The draft drafting ahead on its own thread while the target verifies: which tokens are
    verified in which forward depends on timing, the output may not (float32 greedy)."""
    from voicestream.spec.stats import GenerationStats

    plain, spec = voices
    prompt = spec.vocab.prompt_for(TEXT)
    cfg = spec.spec_config.with_(max_new_tokens=spec.max_new_tokens_for(TEXT), draft_length="heuristic",
                                 pipelined=True)
    ref = [t for c in plain.decoder.generate(prompt, cfg, constraint=plain.grammar) for t in c.tokens]
    st = GenerationStats()
    out = [t for c in spec.decoder.generate(prompt, cfg, stats=st, constraint=spec.grammar) for t in c.tokens]
    assert out == ref and st.finish_reason == "stop" and st.draft_forwards > 0
