import warnings

import pytest
import torch

from voicestream.models import refined_pair

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_pair():
    """A 4-layer random Llama target and its 1-layer early-exit draft (high, not full, agreement)."""
    return refined_pair(
        draft_layers=1, refine_scale=0.1, vocab_size=128, hidden_size=64, num_layers=4, num_heads=4, seed=1
    )


@pytest.fixture(scope="session")
def tiny_target(tiny_pair):
    return tiny_pair[0]


@pytest.fixture(scope="session")
def tiny_draft(tiny_pair):
    return tiny_pair[1]


def hf_greedy(model, prompt, max_new_tokens, **kwargs):
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **kwargs,
        )
    return out[0, len(prompt) :].tolist()


def collect(decoder, prompt, cfg, **kwargs):
    """Run a generation; returns (tokens incl. a final stop id, chunks)."""
    chunks = list(decoder.generate(prompt, cfg, **kwargs))
    tokens = [t for c in chunks for t in c.tokens]
    if chunks and chunks[-1].stop_token is not None:
        tokens.append(chunks[-1].stop_token)
    return tokens, chunks


@pytest.fixture(scope="session")
def formant_voice():
    """The server's formant test voice over a tiny speculative decoder pair (shared, thread-safe)."""
    from voicestream.server.formant import FormantSynthesizer

    synth = FormantSynthesizer()
    yield synth
    synth.close()


@pytest.fixture(scope="session")
def paced_voice():
    """The same voice held to 0.3 s of wall per s of audio, so generation is still running
    when a test cancels it, disconnects, or stops reading."""
    from voicestream.server.formant import FormantConfig, FormantSynthesizer

    synth = FormantSynthesizer(FormantConfig(pace=0.3), name="paced")
    yield synth
    synth.close()


@pytest.fixture
def one_torch_thread():
    """Server tests run many generations in parallel threads; one intra-op thread each (as
    `voicestream serve` does) avoids OpenMP spin contention on a small shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_global_grad_side_effects():
    """Library code must not switch autograd off process-wide (training code relies on it)."""
    yield
    assert torch.is_grad_enabled(), "a test or library call left torch.set_grad_enabled(False) behind"
