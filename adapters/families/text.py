"""The text side of a family: loading its tokenizer locally and encoding prompt pieces.

Family prompts mix text with special ids (Orpheus' start-of-human, NeuTTS' text-prompt
markers).  Encoding the text pieces without specials and splicing the special ids in
gives the same ids as tokenizing the reference implementation's prompt string -- added
tokens split the string first -- without depending on how a tokenizer file spells them.
"""
from __future__ import annotations

import threading
from pathlib import Path

__all__ = ["TextEncoder", "load_tokenizer"]


def load_tokenizer(path: str | Path):
    """The tokenizer stored with a checkpoint (HF directory, or a directory/file with one .gguf).

    Local files only, like :func:`voicestream.models.load_causal_lm`.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    kwargs: dict = {"local_files_only": True}
    if path.is_file() and path.suffix == ".gguf":
        path, kwargs["gguf_file"] = path.parent, path.name
    elif path.is_dir() and not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise FileNotFoundError(f"{path} has no tokenizer files (tokenizer.json / tokenizer_config.json)")
        kwargs["gguf_file"] = ggufs[0].name
    return AutoTokenizer.from_pretrained(str(path), **kwargs)


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


class TextEncoder:
    """Thread-safe text -> ids with a Hugging Face tokenizer (no special tokens added).

    ``prefix_specials`` are the ids the tokenizer puts *before* text by default (a BOS for
    Llama-style tokenizers, nothing for Qwen's): a reference implementation that tokenizes
    its whole prompt string once gets exactly these in front.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        plain = self.encode("a")
        with self._lock:
            full = [int(t) for t in tokenizer.encode("a", add_special_tokens=True)]
        at = _find(full, plain)
        self.prefix_specials: tuple[int, ...] = tuple(full[:at]) if at > 0 else ()

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return [int(t) for t in self.tokenizer.encode(text, add_special_tokens=False)]

    def token_id(self, token: str) -> int:
        """Id of one vocabulary entry; raises ``KeyError`` if the tokenizer lacks it."""
        with self._lock:
            vocab_id = self.tokenizer.convert_tokens_to_ids(token)
            unk_id = getattr(self.tokenizer, "unk_token_id", None)
            unk = getattr(self.tokenizer, "unk_token", None)
        if vocab_id is None or (unk_id is not None and vocab_id == unk_id and token != unk):
            raise KeyError(f"tokenizer has no token {token!r}")
        return int(vocab_id)
