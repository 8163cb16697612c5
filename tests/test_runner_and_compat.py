"""KV-cache rollback, save/load through the real loading path, and draft/target compatibility."""
import pytest
import torch

from voicestream.models import load_causal_lm, random_llama, truncated_copy
from voicestream.spec import IncompatibleModelsError, SpeculativeDecoder
from voicestream.spec.runner import ModelRunner


def _fresh_logits(model, seq):
    with torch.no_grad():
        return model(torch.tensor([seq])).logits[0, -1].float()


def test_rollback_then_extend_equals_fresh_prefill(tiny_target):
    r = ModelRunner(tiny_target)
    with torch.inference_mode():
        r.prefill([1, 2, 3, 4])
        r.extend([9, 9, 9, 9, 9])
        assert len(r) == 9 and r.cache.get_seq_length() == 9
        r.rollback(5)
        assert r.tokens == [1, 2, 3, 4, 9] and r.cache.get_seq_length() == 5
        logits = r.extend([7, 8])[-1]
    torch.testing.assert_close(logits, _fresh_logits(tiny_target, [1, 2, 3, 4, 9, 7, 8]), atol=1e-4, rtol=1e-4)


def test_advance_to_feeds_only_the_new_suffix(tiny_target):
    r = ModelRunner(tiny_target)
    with torch.inference_mode():
        r.advance_to([1, 2, 3, 4, 5])
        before = r.forwards
        logits = r.advance_to([1, 2, 3, 6])  # diverges at index 3: crop to 3, feed one token
        assert r.forwards == before + 1 and r.tokens == [1, 2, 3, 6]
        torch.testing.assert_close(logits, _fresh_logits(tiny_target, [1, 2, 3, 6]), atol=1e-4, rtol=1e-4)
        again = r.advance_to([1, 2, 3, 6])  # already there: no forward
        assert r.forwards == before + 1 and torch.equal(again, logits)
    with pytest.raises(ValueError):
        r.rollback(99)


def test_release_frees_the_cache(tiny_target):
    r = ModelRunner(tiny_target)
    with torch.inference_mode():
        r.prefill([1, 2, 3])
    r.release()
    assert r.cache is None and r.tokens == []


def test_vocabulary_mismatch_is_a_clear_error(tiny_target):
    other = random_llama(vocab_size=130, hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(IncompatibleModelsError, match="vocabulary size 130 != target vocabulary size 128"):
        SpeculativeDecoder(tiny_target, other)


def test_special_id_mismatch_is_a_clear_error():
    target = random_llama(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, eos_token_id=3)
    draft = random_llama(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, eos_token_id=4)
    with pytest.raises(IncompatibleModelsError, match="eos_token_id"):
        SpeculativeDecoder(target, draft)
    SpeculativeDecoder(target, truncated_copy(target, 1)).close()  # same ids: fine


def test_prompt_validation(tiny_target, tiny_draft):
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    with pytest.raises(ValueError, match="at least one token"):
        list(dec.generate([]))
    with pytest.raises(ValueError, match="out of range"):
        list(dec.generate([1, 500]))
    dec.close()


def test_models_round_trip_through_from_pretrained(tmp_path, tiny_target, tiny_draft):
    tiny_target.save_pretrained(tmp_path / "target")
    tiny_draft.save_pretrained(tmp_path / "draft")
    assert (tmp_path / "target" / "model.safetensors").exists()
    target, draft = load_causal_lm(tmp_path / "target"), load_causal_lm(tmp_path / "draft")
    dec_a, dec_b = SpeculativeDecoder(tiny_target, tiny_draft), SpeculativeDecoder(target, draft)
    a = [t for c in dec_a.generate([5, 6, 7]) for t in c.tokens]
    b = [t for c in dec_b.generate([5, 6, 7]) for t in c.tokens]
    assert a == b
    with pytest.raises(FileNotFoundError):
        load_causal_lm(tmp_path / "missing")
