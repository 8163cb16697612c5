"""Training data: corpus utterances -> LM sequences with grammar states and loss weights,
and a deterministic token-budget batch plan (so a resumed run sees the same batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .phones import phone_durations, utterance_phones
from .shards import Utterance
from .vocab import GrammarState, VoiceVocab

__all__ = ["BatchPlan", "Example", "collate", "encode_utterance", "encode_utterances", "masked_logits"]

TRAIN_MASK_FILL = -1e4  # finite: keeps KL/CE gradients free of inf - inf


@dataclass
class Example:
    """One sequence: ids, the grammar state after each id, loss weight of each id as a label."""

    id: str
    ids: np.ndarray  # int64 (T,)
    states: np.ndarray  # int8 (T,)
    weights: np.ndarray  # float32 (T,): weight of predicting ids[i] (0 for ids[0])

    def __len__(self) -> int:
        return int(self.ids.size)


def encode_utterance(
    vocab: VoiceVocab, utt: Utterance, *, text_weight: float = 0.0, frame_rate: float = 50.0
) -> Example | None:
    """Sequence in ``vocab.layout``; ``None`` if the layout needs units (or, for phones, the
    teacher's phoneme alignment, with no phone longer than its durations) the utterance lacks.  ``frame_rate``: codec frames per second.

    Weights: 1 for every token after ``<audio_start>`` (codec tokens, copied unit text,
    markers and ``<audio_end>``: the model generates all of them), ``text_weight`` for
    the prompt text (an optional auxiliary loss), 0 for ``<bos>``.
    """
    if vocab.has_units and not utt.has_units:
        return None
    phones = None
    if vocab.layout == "phones":
        phones = utterance_phones(utt, frame_rate)
        if phones is None:
            return None
        if max(max(phone_durations(p, n), default=0) for p, n in zip(phones, utt.unit_frames)) >= vocab.durations:
            return None  # a phone longer than the vocabulary's durations (a long pause)
    ids = np.asarray(
        vocab.sequence(utt.norm, utt.tokens, utt.unit_frames, utt.units, phones, normalize=False), dtype=np.int64
    )
    states = vocab.grammar.states(ids.tolist())
    start = int(np.nonzero(ids == vocab.audio_start_id)[0][0])
    weights = np.zeros(ids.size, dtype=np.float32)
    weights[1 : start + 1] = text_weight
    weights[start + 1 :] = 1.0
    return Example(utt.id, ids, states, weights)


def encode_utterances(
    vocab: VoiceVocab, utts: Sequence[Utterance], *, text_weight: float = 0.0, max_len: int = 4096,
    frame_rate: float = 50.0,
) -> tuple[list[Example], dict]:
    """Encode many; returns (examples, counts of what was skipped and why)."""
    out, no_units, too_long = [], 0, 0
    for u in utts:
        ex = encode_utterance(vocab, u, text_weight=text_weight, frame_rate=frame_rate)
        if ex is None:
            no_units += 1
        elif len(ex) > max_len:
            too_long += 1
        else:
            out.append(ex)
    return out, {"kept": len(out), "skipped_no_units": no_units, "skipped_too_long": too_long}


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, states, weights (all (B, T))."""
    T = max(len(e) for e in examples)
    B = len(examples)
    ids = np.full((B, T), pad_id, dtype=np.int64)
    states = np.full((B, T), int(GrammarState.DONE), dtype=np.int64)
    weights = np.zeros((B, T), dtype=np.float32)
    attn = np.zeros((B, T), dtype=np.int64)
    for b, e in enumerate(examples):
        n = len(e)
        ids[b, :n], states[b, :n], weights[b, :n], attn[b, :n] = e.ids, e.states, e.weights, 1
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(attn),
        "states": torch.from_numpy(states),
        "weights": torch.from_numpy(weights),
    }


def masked_logits(logits: torch.Tensor, states: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Grammar-mask ``logits`` (B, T, V) by the state at each position (finite fill)."""
    if allowed.device != logits.device:
        allowed = allowed.to(logits.device)
    return logits.masked_fill(~allowed[states], TRAIN_MASK_FILL)


class BatchPlan:
    """Deterministic batches per epoch under a token budget (padding included).

    Epoch ``e`` shuffles with ``(seed, e)``, sorts windows of ``window`` examples by
    length (less padding), cuts batches of at most ``batch_tokens`` padded tokens and
    shuffles the batch order.  Position ``(epoch, index)`` fully identifies a batch.
    """

    def __init__(self, lengths: Sequence[int], batch_tokens: int, seed: int = 0, window: int = 64) -> None:
        if not lengths:
            raise ValueError("no examples to batch")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_tokens = int(batch_tokens)
        self.seed = int(seed)
        self.window = window
        self._cache: dict[int, list[list[int]]] = {}

    def epoch(self, e: int) -> list[list[int]]:
        if e not in self._cache:
            rng = np.random.default_rng([self.seed, e])
            perm = rng.permutation(self.lengths.size)
            batches: list[list[int]] = []
            for w in range(0, perm.size, self.window):
                chunk = sorted(perm[w : w + self.window].tolist(), key=lambda i: self.lengths[i])
                cur: list[int] = []
                for i in chunk:
                    longest = max([self.lengths[j] for j in cur] + [self.lengths[i]])
                    if cur and longest * (len(cur) + 1) > self.batch_tokens:
                        batches.append(cur)
                        cur = []
                    cur.append(i)
                if cur:
                    batches.append(cur)
            order = rng.permutation(len(batches))
            self._cache = {e: [batches[i] for i in order]}
        return self._cache[e]

    def at(self, epoch: int, index: int) -> tuple[list[int], tuple[int, int]]:
        """Batch at a position and the position after it."""
        batches = self.epoch(epoch)
        while index >= len(batches):
            epoch, index = epoch + 1, 0
            batches = self.epoch(epoch)
        return batches[index], (epoch, index + 1)
