"""The joint vocabulary of the built-in voice LM: codec tokens, text characters, specials.

Why one flat vocabulary: the speculative decoder compares draft and target token by
token, so text, audio and control tokens must live in one id space shared by both.

Id layout (stable: trained checkpoints depend on it; stored in the model config)::

    [0, 5376)            codec tokens, *identical* to the codec's flat ids
                         (so ``CodecSpec.slot_token_range`` applies to LM ids as is)
    [5376, 5413)         text: 5376 + CharTokenizer id (37 ids; tokenizer pad/bos/eos
                         ids are never emitted, only the 34 characters are used)
    5413  <bos>          start of sequence
    5414  <text_end>     end of the text prompt
    5415  <audio_start>  start of the audio part (last prompt token)
    5416  <audio_end>    end of audio = the LM's EOS (generation stops on it)
    5417  <word>         unit marker in the interleaved ("words") layout
    5418  <pad>          batch padding (never predicted)
    [5419, 5419 + P)     phones layout only: the P phone symbols (``VoiceVocab.phones``)
    5419 + P <phones_end> phones layout only: end of a unit's phone list
    then D ids           phones layout only: durations 0 .. D-1 frames (``VoiceVocab.durations``)
    then                 unused padding up to a multiple of 64 (always masked)

Sequence layouts (``VoiceVocab.layout``)::

    plain:  <bos> text <text_end> <audio_start> f1 f2 ... fn <audio_end>
    words:  <bos> text <text_end> <audio_start>
                <word> unit1-chars  frames(unit1)
                <word> unit2-chars  frames(unit2) ... <audio_end>
    phones: as words, but each unit's letters are followed by its phones, each with its
            duration in frames, then <phones_end>, then the phones again, each right before
            its frames:
                <word> unit1-chars  p1 d2 p2 d3 p3 d1 <phones_end>  p1 f f  p2 f f f  p3 f  <word> ...

where each frame ``f`` is ``tokens_per_frame`` codec ids in slot order.  The prompt
(up to and including ``<audio_start>``) is the same in both layouts, so
:meth:`VoiceVocab.prompt_for` does not depend on the layout.

Why the "words" layout exists: a 10-30M-parameter LM trained for hours on a CPU has
to learn a monotonic text->audio alignment from very few examples.  Re-emitting each
word (or espeak word group) right before its frames makes the alignment *local*: the
audio for a unit only needs to attend to the few characters just before it, and the
copy step ("which unit comes next?") is a plain induction pattern small transformers
learn early.  It also needs no change to the decoder: the model emits the copied
characters itself, and :meth:`VoiceVocab.codec_tokens_from_lm` drops them.

Slot grammar: given the tokens so far, the set of legal next ids is fixed (inside a
frame only one codebook is legal; at a frame boundary: slot-0 codebook, ``<audio_end>``
and, in the words layouts, ``<word>``; phones at frame boundaries and after a unit's
letters in the phones layout, see :mod:`voicestream.voice.phones` for why).  :class:`SlotGrammar` tracks that state and
gives per-position boolean masks, for training (masked softmax) and for decoding
(a logits hook; see :mod:`voicestream.voice.masking`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from functools import cached_property

import numpy as np
import torch

from ..codec.base import CodecSpec
from ..text.normalize import PUNCTUATION
from ..text.tokenizer import ALPHABET, SPECIAL_TOKENS, CharTokenizer
from .phones import phone_durations

__all__ = [
    "LAYOUTS",
    "GrammarError",
    "GrammarState",
    "SlotGrammar",
    "VoiceVocab",
    "codec2_spec",
]

LAYOUTS = ("plain", "words", "phones")
UNIT_LAYOUTS = ("words", "phones")  # layouts that re-emit unit text before its audio
_N_CHAR_IDS = len(SPECIAL_TOKENS) + len(ALPHABET)  # 37: the CharTokenizer id space


def codec2_spec() -> CodecSpec:
    """The built-in codec's spec, without needing pycodec2 (layout JSON only)."""
    from ..codec.codec2 import load_layout

    return load_layout().spec()


class GrammarError(ValueError):
    """A token is not legal at its position under the slot grammar."""


class GrammarState(IntEnum):
    """Where a sequence is, for "which ids may come next"."""

    PROMPT = 0  # before <audio_start>: anything (prompt tokens are given, not generated)
    UNIT_START = 1  # words layout, right after <audio_start>: only <word>
    UNIT_CHAR0 = 2  # after <word>: a character
    UNIT_CHARS = 3  # after a unit character: more characters or the unit's first frame (phones: phone)
    FRAME = 4  # frame boundary: slot-0 codes, <audio_end> (and <word> / phones in the unit layouts)
    DONE = 5  # after <audio_end>: nothing is legal; allow all so masks never go empty
    UNIT_PHONES = 6  # phones layout, in a unit's phone list after a duration: a phone or <phones_end>
    UNIT_AUDIO = 7  # phones layout, after <phones_end>: the unit's first placed phone
    UNIT_DUR = 8  # phones layout, after a listed phone: its duration
    SLOT = 9  # SLOT + k (k = 1..tokens_per_frame-1): inside a frame, before slot k


@dataclass(frozen=True)
class VoiceVocab:
    """Offsets and helpers for the joint vocabulary (see module doc for the layout)."""

    codec_vocab_size: int = 5376
    tokens_per_frame: int = 7
    slot_ranges: tuple[tuple[int, int], ...] = ()  # per slot, half-open codec id range
    layout: str = "words"
    pad_to_multiple: int = 64
    phones: tuple[str, ...] = ()  # phones layout: the phone symbols (default: phones.PHONES)
    durations: int = 0  # phones layout: duration ids 0 .. durations-1 frames (default 40)
    tokenizer: CharTokenizer = field(default_factory=CharTokenizer, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not self.slot_ranges:
            spec = codec2_spec()
            object.__setattr__(self, "codec_vocab_size", spec.vocab_size)
            object.__setattr__(self, "tokens_per_frame", spec.tokens_per_frame)
            object.__setattr__(
                self, "slot_ranges", tuple(spec.slot_token_range(k) for k in range(spec.tokens_per_frame))
            )
        if self.layout == "phones" and not self.phones:
            from .phones import PHONES

            object.__setattr__(self, "phones", PHONES)
        object.__setattr__(self, "phones", tuple(self.phones))
        if self.layout == "phones" and not self.durations:
            object.__setattr__(self, "durations", 40)
        if (self.phones or self.durations) and self.layout != "phones":
            raise ValueError("phones and durations are only used by the phones layout")
        ranges = tuple(tuple(int(x) for x in r) for r in self.slot_ranges)
        object.__setattr__(self, "slot_ranges", ranges)
        if len(ranges) != self.tokens_per_frame:
            raise ValueError("slot_ranges must have one range per slot")
        if any(not 0 <= lo < hi <= self.codec_vocab_size for lo, hi in ranges):
            raise ValueError("slot ranges must lie inside the codec vocabulary")

    @classmethod
    def for_codec(cls, spec: CodecSpec, layout: str = "words", phones: Sequence[str] = ()) -> VoiceVocab:
        """Vocabulary for any codec spec (tests use toy specs)."""
        return cls(
            codec_vocab_size=spec.vocab_size,
            tokens_per_frame=spec.tokens_per_frame,
            slot_ranges=tuple(spec.slot_token_range(k) for k in range(spec.tokens_per_frame)),
            layout=layout,
            phones=tuple(phones),
        )

    # ----- serialisation (stored in the model's config.json) ---------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("tokenizer", None)
        d["slot_ranges"] = [list(r) for r in self.slot_ranges]
        d["phones"] = list(self.phones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VoiceVocab:
        d = dict(d)
        d["slot_ranges"] = tuple(tuple(r) for r in d.get("slot_ranges", ()))
        d["phones"] = tuple(d.get("phones", ()))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "tokenizer"})

    # ----- offsets ---------------------------------------------------------
    @property
    def text_offset(self) -> int:
        return self.codec_vocab_size

    @property
    def bos_id(self) -> int:
        return self.text_offset + _N_CHAR_IDS

    @property
    def text_end_id(self) -> int:
        return self.bos_id + 1

    @property
    def audio_start_id(self) -> int:
        return self.bos_id + 2

    @property
    def audio_end_id(self) -> int:
        """The LM's EOS: generation stops here."""
        return self.bos_id + 3

    @property
    def word_id(self) -> int:
        return self.bos_id + 4

    @property
    def pad_id(self) -> int:
        return self.bos_id + 5

    @property
    def phone_range(self) -> tuple[int, int]:
        """Half-open LM id range of the phone symbols (empty outside the phones layout)."""
        return self.pad_id + 1, self.pad_id + 1 + len(self.phones)

    @property
    def phones_end_id(self) -> int:
        """Phones layout: ends a unit's phone list (its audio follows)."""
        if self.layout != "phones":
            raise AttributeError("<phones_end> exists only in the phones layout")
        return self.phone_range[1]

    @property
    def duration_range(self) -> tuple[int, int]:
        """Half-open LM id range of the duration tokens (empty outside the phones layout)."""
        lo = self.phone_range[1] + (self.layout == "phones")
        return lo, lo + self.durations

    def is_duration(self, token: int) -> bool:
        lo, hi = self.duration_range
        return lo <= token < hi

    def duration_id(self, frames: int) -> int:
        if not 0 <= frames < self.durations:
            raise ValueError(f"duration {frames} is outside 0..{self.durations - 1} frames")
        return self.duration_range[0] + frames

    @property
    def used_size(self) -> int:
        return self.duration_range[1]

    @property
    def has_units(self) -> bool:
        """Whether sequences re-emit each unit's text before its audio (words, phones)."""
        return self.layout in UNIT_LAYOUTS

    @property
    def vocab_size(self) -> int:
        """Embedding / head size: used ids padded to ``pad_to_multiple``."""
        m = max(self.pad_to_multiple, 1)
        return -(-self.used_size // m) * m

    @property
    def char_range(self) -> tuple[int, int]:
        """Half-open LM id range of the 34 real characters (tokenizer specials excluded)."""
        return self.text_offset + len(SPECIAL_TOKENS), self.text_offset + _N_CHAR_IDS

    def is_codec(self, token: int) -> bool:
        return 0 <= token < self.codec_vocab_size

    def is_char(self, token: int) -> bool:
        lo, hi = self.char_range
        return lo <= token < hi

    def is_phone(self, token: int) -> bool:
        lo, hi = self.phone_range
        return lo <= token < hi

    def phone_id(self, symbol: str) -> int:
        try:
            return self.phone_range[0] + self.phones.index(symbol)
        except ValueError:
            raise ValueError(f"phone {symbol!r} is not in this vocabulary") from None

    # ----- text ------------------------------------------------------------
    def text_ids(self, text: str, *, normalize: bool = True) -> list[int]:
        """Text -> LM character ids (normalised first unless ``normalize=False``)."""
        return [self.text_offset + i for i in self.tokenizer.encode(text, add_special=False, normalize=normalize)]

    def text_from_ids(self, ids: Iterable[int]) -> str:
        """LM ids -> the characters among them (other ids skipped)."""
        return self.tokenizer.decode(int(i) - self.text_offset for i in ids if self.is_char(int(i)))

    def prompt_for(self, text: str, *, normalize: bool = True) -> list[int]:
        """``<bos> text <text_end> <audio_start>``: what generation starts from.

        With ``normalize``, text that does not end in punctuation gets a final ``.``: the
        voice learned from whole sentences, and an unterminated one ("Hello there", an
        LLM's last fragment) came out clipped and rushed.
        """
        ids = self.text_ids(text, normalize=normalize)
        if normalize and ids and self.text_from_ids(ids[-1:]) not in PUNCTUATION:  # the marks normalisation keeps
            ids += self.text_ids(".", normalize=False)
        return [self.bos_id, *ids, self.text_end_id, self.audio_start_id]

    # ----- full sequences ----------------------------------------------------
    def sequence(
        self,
        text: str,
        codec_tokens: Sequence[int] | np.ndarray,
        unit_frames: Sequence[int] | None = None,
        units: Sequence[str] | None = None,
        unit_phones: Sequence[Sequence[tuple[str, int]]] | None = None,
        *,
        normalize: bool = False,
    ) -> list[int]:
        """A whole training sequence in this vocab's layout (prompt + audio part + EOS).

        ``text`` is normalised text (``normalize=False`` by default: corpora store it
        normalised).  The words layouts need ``units`` (text pieces whose concatenation
        with single spaces is ``text``) and ``unit_frames`` (frames per unit, each >= 1,
        summing to the number of frames); the phones layout also ``unit_phones`` (per
        unit, ``(phone, frame offset)`` pairs in order, the first at offset 0; see
        :func:`voicestream.voice.phones.unit_phones`): written once as a list with
        durations after the unit's letters, then once more between the frames.
        """
        toks = np.asarray(codec_tokens, dtype=np.int64).reshape(-1)
        k = self.tokens_per_frame
        if toks.size % k:
            raise ValueError(f"{toks.size} codec tokens is not a whole number of {k}-token frames")
        out = self.prompt_for(text, normalize=normalize)
        if self.layout == "plain":
            out.extend(int(t) for t in toks)
        else:
            if units is None or unit_frames is None:
                raise ValueError(f"the {self.layout} layout needs units and unit_frames")
            if self.layout == "phones" and (unit_phones is None or len(unit_phones) != len(units)):
                raise ValueError("the phones layout needs unit_phones, one list per unit")
            if len(units) != len(unit_frames):
                raise ValueError("units and unit_frames differ in length")
            frames = [int(f) for f in unit_frames]
            if any(f < 1 for f in frames) or sum(frames) * k != toks.size:
                raise ValueError(f"unit_frames {frames} must be >= 1 and sum to {toks.size // k} frames")
            pos = 0
            for u, (unit, nf) in enumerate(zip(units, frames)):
                out.append(self.word_id)
                out.extend(self.text_ids(unit, normalize=normalize))
                if self.layout == "words":
                    out.extend(int(t) for t in toks[pos : pos + nf * k])
                else:
                    phones = list(unit_phones[u])
                    offsets = [off for _, off in phones]
                    if not phones or offsets[0] != 0 or offsets != sorted(offsets) or offsets[-1] > nf:
                        raise ValueError(f"unit {u}: phones {phones} must start at offset 0, in order, within {nf} frames")
                    for (p, _), frames_of_p in zip(phones, phone_durations(phones, nf)):
                        out += [self.phone_id(p), self.duration_id(frames_of_p)]
                    out.append(self.phones_end_id)
                    i = 0
                    for f in range(nf + 1):
                        while i < len(phones) and phones[i][1] == f:
                            out.append(self.phone_id(phones[i][0]))
                            i += 1
                        if f < nf:
                            out.extend(int(t) for t in toks[pos + f * k : pos + (f + 1) * k])
                pos += nf * k
        out.append(self.audio_end_id)
        return out

    def audio_start_index(self, ids: Sequence[int]) -> int:
        """Index of the first ``<audio_start>`` (raises if absent)."""
        for i, t in enumerate(ids):
            if int(t) == self.audio_start_id:
                return i
        raise ValueError("sequence has no <audio_start>")

    def codec_tokens_from_lm(self, ids: Iterable[int]) -> list[int]:
        """The codec tokens among generated (or whole-sequence) LM ids, in order.

        Everything before an ``<audio_start>`` (if the prompt is included) and every
        non-codec id (copied unit text, markers, ``<audio_end>``) is dropped, and nothing
        after ``<audio_end>`` is kept.
        """
        ids = [int(t) for t in ids]
        try:
            ids = ids[self.audio_start_index(ids) + 1 :]
        except ValueError:
            pass
        out: list[int] = []
        for t in ids:
            if t == self.audio_end_id:
                break
            if self.is_codec(t):
                out.append(t)
        return out

    def split_sequence(self, ids: Sequence[int]) -> tuple[str, list[int]]:
        """Whole sequence -> (prompt text, codec tokens): inverse of :meth:`sequence`."""
        start = self.audio_start_index(ids)
        return self.text_from_ids(ids[:start]), self.codec_tokens_from_lm(ids[start + 1 :])

    # ----- slot grammar ------------------------------------------------------
    @cached_property
    def grammar(self) -> SlotGrammar:
        return SlotGrammar(self)

    def slot_mask(self, generated_or_full: Sequence[int]) -> torch.Tensor:
        """(V,) bool: ids legal after ``generated_or_full`` (a sequence including the prompt)."""
        g = self.grammar
        return g.allowed[g.run(generated_or_full)]


class SlotGrammar:
    """Finite-state view of the layout: state after each token -> legal next ids.

    States are small ints (:class:`GrammarState`, with ``SLOT + k`` for "before slot k of
    a frame"); :attr:`allowed` is a ``(n_states, V)`` bool table so a whole sequence of
    masks is one gather.
    """

    def __init__(self, vocab: VoiceVocab) -> None:
        self.vocab = vocab
        v, k = vocab, vocab.tokens_per_frame
        self.n_states = int(GrammarState.SLOT) + k
        allowed = torch.zeros(self.n_states, v.vocab_size, dtype=torch.bool)
        allowed[GrammarState.PROMPT, : v.used_size] = True
        allowed[GrammarState.DONE, : v.used_size] = True
        allowed[GrammarState.UNIT_START, v.word_id] = True
        clo, chi = v.char_range
        allowed[GrammarState.UNIT_CHAR0, clo:chi] = True
        allowed[GrammarState.UNIT_CHARS, clo:chi] = True
        lo0, hi0 = v.slot_ranges[0]
        plo, phi = v.phone_range
        if v.layout == "phones":  # letters, phone list, <phones_end>, phones at frame boundaries
            allowed[GrammarState.UNIT_CHARS, plo:phi] = True
            allowed[GrammarState.UNIT_PHONES, plo:phi] = True
            allowed[GrammarState.UNIT_PHONES, v.phones_end_id] = True
            dlo, dhi = v.duration_range
            allowed[GrammarState.UNIT_DUR, dlo:dhi] = True
            allowed[GrammarState.UNIT_AUDIO, plo:phi] = True
            allowed[GrammarState.FRAME, plo:phi] = True
        else:
            allowed[GrammarState.UNIT_CHARS, lo0:hi0] = True
        allowed[GrammarState.FRAME, lo0:hi0] = True
        allowed[GrammarState.FRAME, v.audio_end_id] = True
        if v.has_units:
            allowed[GrammarState.FRAME, v.word_id] = True
        for s in range(1, k):
            lo, hi = v.slot_ranges[s]
            allowed[GrammarState.SLOT + s, lo:hi] = True
        allowed[:, v.pad_id] = False
        self.allowed = allowed
        self._slot0 = (lo0, hi0)
        self._allowed_rows = allowed.tolist()
        self._build_transitions()

    def _build_transitions(self) -> None:
        """``_next[state][class]`` from :meth:`_transition`, one representative token per class
        of tokens the rules tell apart (each special id alone; chars, phones, durations, codec
        codes; everything else)."""
        v = self.vocab
        cls = [0] * v.vocab_size  # 0: no rule of its own
        reps = [v.pad_id]
        groups = [range(*v.char_range), range(*v.phone_range), range(*v.duration_range), range(v.codec_vocab_size)]
        singles = [v.audio_start_id, v.audio_end_id, v.word_id] + ([v.phones_end_id] if v.layout == "phones" else [])
        for group in groups + [[t] for t in singles]:
            if len(group):
                reps.append(group[0])
                for t in group:
                    cls[t] = len(reps) - 1
        self._token_class = cls
        self._next = [[self._transition(s, r) for r in reps] for s in range(self.n_states)]

    @property
    def start(self) -> int:
        return int(GrammarState.PROMPT)

    def _transition(self, state: int, token: int) -> int:
        """The layout's rules for one token (no legality check); :meth:`step` reads them from
        the table built from this at construction."""
        v, t = self.vocab, int(token)
        if state == GrammarState.PROMPT:
            if t == v.audio_start_id:
                return int(GrammarState.UNIT_START if v.has_units else GrammarState.FRAME)
            return state
        if state == GrammarState.DONE or t == v.audio_end_id:
            return int(GrammarState.DONE)
        if t == v.word_id:
            return int(GrammarState.UNIT_CHAR0)
        if v.is_char(t):
            return int(GrammarState.UNIT_CHARS)
        if v.is_phone(t):
            in_list = state in (GrammarState.UNIT_CHARS, GrammarState.UNIT_PHONES)
            return int(GrammarState.UNIT_DUR if in_list else GrammarState.FRAME)
        if v.is_duration(t):
            return int(GrammarState.UNIT_PHONES)
        if v.layout == "phones" and t == v.phones_end_id:
            return int(GrammarState.UNIT_AUDIO)
        if v.is_codec(t):
            if state >= GrammarState.SLOT:
                nxt = state + 1
                return int(GrammarState.FRAME) if nxt - GrammarState.SLOT >= v.tokens_per_frame else nxt
            return int(GrammarState.SLOT + 1) if v.tokens_per_frame > 1 else int(GrammarState.FRAME)
        return state

    def step(self, state: int, token: int, *, strict: bool = True) -> int:
        """State after ``token`` is appended in ``state``.

        ``strict`` raises :class:`GrammarError` on an illegal token; otherwise the
        grammar resynchronises as well as it can (used only for diagnostics).
        Table lookups (the rules depend on a token only through its class): encoding a
        corpus walks millions of tokens through here.
        """
        t = int(token)
        if not 0 <= t < len(self._token_class):
            if strict and state != GrammarState.PROMPT:
                raise GrammarError(f"token {t} is outside the vocabulary (0..{len(self._token_class) - 1})")
            return self._transition(state, t)
        if strict and state != GrammarState.PROMPT and not self._allowed_rows[state][t]:
            raise GrammarError(f"token {t} is not legal in state {self.describe(state)}")
        return self._next[state][self._token_class[t]]

    def run(self, ids: Iterable[int], state: int | None = None, *, strict: bool = True) -> int:
        """State after all of ``ids``."""
        s = self.start if state is None else state
        for t in ids:
            s = self.step(s, t, strict=strict)
        return s

    def states(self, ids: Sequence[int], state: int | None = None, *, strict: bool = True) -> np.ndarray:
        """int8 state *after* each token: ``states[i]`` decides what may follow ``ids[i]``."""
        s = self.start if state is None else state
        out = np.empty(len(ids), dtype=np.int8)
        for i, t in enumerate(ids):
            s = self.step(s, t, strict=strict)
            out[i] = s
        return out

    def masks(self, ids: Sequence[int], state: int | None = None) -> torch.Tensor:
        """(len(ids), V) bool: row i = ids legal right after ``ids[i]``."""
        return self.allowed[torch.from_numpy(self.states(ids, state).astype(np.int64))]

    def describe(self, state: int) -> str:
        if state >= GrammarState.SLOT:
            return f"SLOT{state - GrammarState.SLOT}"
        return GrammarState(state).name


def mask_logits(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Illegal ids -> -inf (``allowed`` broadcastable to ``logits``; extra logit columns
    beyond ``allowed``'s width stay as they are only if ``allowed`` is widened by the caller)."""
    return logits.masked_fill(~allowed.to(logits.device), float("-inf"))


__all__.append("mask_logits")
