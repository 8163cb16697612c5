"""Random-weight checkpoints of the real architectures, for examples, tests and CI.

Nothing here downloads anything: a family's LM is a randomly initialised model of its
real architecture and vocabulary size, with a byte-level tokenizer that knows the family's
special tokens by name, *saved to a directory* -- so examples and tests go through the
same local loading path (:func:`voicestream.models.load_causal_lm`, ``AutoTokenizer``)
as real weights.  Audio from these models is noise; lengths, rates, layouts and timing
paths are real.
"""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["byte_tokenizer", "random_neutts_checkpoint", "random_orpheus_checkpoint", "save_random_lm"]


def _byte_chars() -> dict[int, str]:
    """Byte -> the printable character byte-level BPE uses for it (GPT-2's convention:
    printable Latin-1 bytes stand for themselves, the rest map to code points from 256)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer(extra_tokens: dict[str, int] | None = None, *, bos: tuple[str, int] | None = None, eos=None):
    """A tokenizer with one id per UTF-8 byte (ids 0..255) plus named entries at given ids.

    ``bos=(token, id)`` is prepended by default, as Llama-3's tokenizer does with
    ``<|begin_of_text|>``; ``eos=(token, id)`` is only declared.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in _byte_chars().items()}
    named = dict(extra_tokens or {})
    for pair in (bos, eos):
        if pair is not None:
            named[pair[0]] = pair[1]
    clash = [t for t, i in named.items() if i < 256]
    if clash:
        raise ValueError(f"ids 0..255 are the byte tokens; move {clash[:3]}")
    vocab.update(named)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    kwargs = {}
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B", special_tokens=[(bos[0], bos[1])]
        )
        kwargs["bos_token"] = bos[0]
    if eos is not None:
        kwargs["eos_token"] = eos[0]
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def save_random_lm(
    path: str | Path,
    *,
    arch: str = "llama",
    vocab_size: int,
    tokenizer=None,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int | None = None,
    max_positions: int = 4096,
    tie_word_embeddings: bool = False,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    seed: int = 0,
) -> Path:
    """Save a random ``llama`` or ``qwen2`` causal LM (and ``tokenizer``) to ``path``."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    cfg = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # random init leaves logits nearly flat; sharpen them like a trained head
        model.get_output_embeddings().weight.mul_(4.0)
    path = Path(path)
    model.save_pretrained(str(path))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


def random_orpheus_checkpoint(path: str | Path, *, num_layers: int = 2, hidden_size: int = 32, seed: int = 0) -> Path:
    """A random Llama with Orpheus' vocabulary (156940) and special-token ids."""
    from .orpheus import ORPHEUS_VOCAB_SIZE, OrpheusIds

    ids = OrpheusIds()
    names = {
        "<|eot_id|>": ids.end_of_text,
        **{f"<custom_token_{i}>": 128256 + i for i in range(10)},
    }
    tok = byte_tokenizer(names, bos=("<|begin_of_text|>", ids.begin_of_text))
    return save_random_lm(
        path, arch="llama", vocab_size=ORPHEUS_VOCAB_SIZE, tokenizer=tok, hidden_size=hidden_size,
        num_layers=num_layers, bos_token_id=ids.begin_of_text, eos_token_id=ids.end_of_speech, seed=seed,
    )


def random_neutts_checkpoint(path: str | Path, *, num_layers: int = 2, hidden_size: int = 32, seed: int = 0) -> Path:
    """A random Qwen2 (NeuTTS-Air's backbone architecture) with NeuTTS' prompt and speech tokens.

    Ids follow Qwen2.5's vocabulary (151665 entries) with NeuTTS' additions after it; the
    adapter looks every id up by name, so the exact numbers do not matter to it.
    """
    from .neutts import NEUTTS_MARKERS, NEUTTS_SPEECH_TOKENS

    base = 151665
    names = {m: base + k for k, m in enumerate(NEUTTS_MARKERS)}
    first_speech = base + len(NEUTTS_MARKERS)
    names.update({f"<|speech_{i}|>": first_speech + i for i in range(NEUTTS_SPEECH_TOKENS)})
    tok = byte_tokenizer(names, eos=("<|im_end|>", base - 20))
    vocab = first_speech + NEUTTS_SPEECH_TOKENS
    return save_random_lm(
        path, arch="qwen2", vocab_size=vocab, tokenizer=tok, hidden_size=hidden_size, num_layers=num_layers,
        tie_word_embeddings=True, eos_token_id=base - 20, seed=seed,
    )
