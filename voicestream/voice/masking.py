"""Slot-grammar logit masking for decoding, without touching the speculative decoder.

Two ways to use the grammar at decode time:

* :func:`verify_masks` - the pure function a future logits hook in
  :mod:`voicestream.spec` would call: given the committed sequence and a drafted chunk
  it returns the ``(k + 1, V)`` masks for the target's verify rows (row ``i`` masks the
  distribution that decides ``chunk[i]``; the last row decides the bonus token).
* :class:`GrammarMaskedLM` - wraps a causal LM so every logits row it returns is already
  masked.  The decoder calls models through ``ModelRunner`` with a KV cache and only the
  *new* ids, so the wrapper recovers each row's grammar state from the cache length and
  a per-cache token history (rollbacks are cache crops; the history is cut to match).

Why masking matters for a tiny model: within a frame only one of 7 codebooks is legal,
so masking turns a 5440-way choice into a 128- or 1024-way one and removes a whole class
of errors (a token from the wrong codebook would derail the codec decoder).  Draft and
target are masked identically, so speculative sampling stays lossless with respect to
the masked target.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Hashable, Sequence
from typing import NamedTuple, Protocol

import torch

from ..spec.field_median import FieldMedian
from .lexicon import Lexicon
from .vocab import GrammarState, VoiceVocab, mask_logits

__all__ = ["DecodeGrammar", "GrammarMaskedLM", "SlotOnly", "TextFollowing", "verify_masks"]


class DecodeGrammar(Protocol):
    """A left-to-right constraint on generated ids: hashable states, a mask per state."""

    def initial(self) -> Hashable: ...

    def step(self, state: Hashable, token: int) -> Hashable: ...

    def allowed(self, state: Hashable) -> torch.Tensor: ...


def _only(cache: dict, key: Hashable, mask) -> int | None:
    """The single allowed id of a (cached) mask, or None; ``mask()`` builds it on a miss."""
    if key not in cache:
        m = mask()
        cache[key] = int(m.nonzero()[0, 0]) if int(m.sum()) == 1 else None
    return cache[key]


class SlotOnly:
    """The vocabulary's slot grammar (codebook per slot, markers at frame boundaries)."""

    def __init__(self, vocab: VoiceVocab) -> None:
        self.vocab = vocab
        self.g = vocab.grammar
        self._forced: dict = {}

    def initial(self) -> int:
        return self.g.start

    def step(self, state: int, token: int) -> int:
        return self.g.step(state, token, strict=False)

    def allowed(self, state: int) -> torch.Tensor:
        return self.g.allowed[state]

    def forced(self, state: int) -> int | None:
        return _only(self._forced, state, lambda: self.allowed(state))


class _TFState(NamedTuple):
    g: int  # slot-grammar state
    pos: int  # next prompt character to copy (unit layouts)
    frames: int  # frames since the current unit's text (or since <audio_start>)
    text: tuple[int, ...]  # prompt character ids (LM ids), collected before <audio_start>
    plist: tuple[tuple[int, int], ...] = ()  # phones layout: the unit's (phone id, frames) list
    placed: int = 0  # phones layout: how many of ``plist`` were placed between frames
    since: int = 0  # phones layout: frames since the last placed phone
    ustart: int = 0  # index of the current unit's first prompt character


_MAX_CACHED_UNITS = 50_000  # unit texts whose lexicon variants a grammar keeps at once
_PLAN_STATES = frozenset({GrammarState.UNIT_CHARS, GrammarState.UNIT_PHONES, GrammarState.UNIT_DUR})


class TextFollowing:
    """Slot grammar plus "say exactly the prompt, once" (words and phones layouts).

    In the unit layouts the LM re-emits each unit's text before its frames.  This
    grammar only lets it copy the *next* characters of the prompt: after ``<word>`` the
    next prompt character; inside a unit the next character, and at a word boundary
    also the unit's first frame; ``<word>`` only while text remains, ``<audio_end>``
    only once all of it was copied.  The model still chooses unit boundaries and every
    codec token, but cannot skip, repeat or invent words, and generation always ends
    when the text is spoken.  ``max_unit_frames`` bounds the frames per unit (forcing
    the next ``<word>``/``<audio_end>``), so a poorly trained model cannot babble
    forever; in the plain layout that cap is the only addition.

    Phones layout: the model writes the unit's phone list with a duration per phone (at
    most ``max_unit_phones``) freely - its grapheme-to-phoneme and duration steps - and
    then the audio follows that schedule exactly: each listed phone is placed in order
    and gets exactly its frames, so every phone and marker of the audio part is forced
    (jump-forward) and the model only chooses codec tokens.  Why not let it decide when to
    move on, frame by frame: that choice competes with the codec codes at each frame
    boundary, and an undertrained model (greedy most of all) kept choosing "one more
    frame", holding single sounds for a second.

    ``greedy_plan`` (phones layout): the phone list and its durations are chosen greedily
    even when the codec tokens are sampled (the constraint's ``greedy`` hook). A sampled
    slip in the plan mispronounces a word; sampling is for the sound, not the spelling.

    ``lexicon`` (phones layout, :class:`~voicestream.voice.lexicon.Lexicon`): for a unit
    text the lexicon knows, the phone list may only be one of its variants (the LM picks
    among them), and a unit may end at a word boundary only where the lexicon allows; with
    ``lexicon_durations`` each listed phone's duration is the matching variant's median.
    Units the lexicon lacks are left to the LM, as without one.

    ``slot_fields`` (per frame slot, the bit widths of its codebook's ordinal fields, e.g.
    from ``CodecSpec.ordinal_fields``): codec tokens are decided by a field-wise median of
    the model's distribution (:class:`~voicestream.spec.field_median.FieldMedian`) wherever
    only one codebook is legal, instead of by the request's argmax or sampling.
    """

    def __init__(
        self, vocab: VoiceVocab, *, max_unit_frames: int = 150, max_unit_phones: int = 40, greedy_plan: bool = True,
        slot_fields: Sequence[tuple[int, ...]] | None = None, lexicon: Lexicon | None = None,
        lexicon_durations: bool = False,
    ) -> None:
        self.vocab = vocab
        if slot_fields is not None and len(slot_fields) != vocab.tokens_per_frame:
            raise ValueError("slot_fields needs one entry per frame slot")
        self._medians = tuple(FieldMedian(tuple(b), lo) for b, (lo, _hi) in zip(slot_fields, vocab.slot_ranges)) \
            if slot_fields is not None else None
        self._slot_of: dict[tuple, int | None] = {}
        self.greedy_plan = greedy_plan and vocab.layout == "phones"
        if lexicon is not None and vocab.layout != "phones":
            raise ValueError("a lexicon needs the phones layout")
        self.lexicon = lexicon
        self.lexicon_durations = lexicon_durations and lexicon is not None
        self._variants: dict[tuple[tuple[int, ...], bool, bool], tuple] = {}
        self.g = vocab.grammar
        self.max_unit_frames = max_unit_frames
        self.max_unit_phones = max_unit_phones
        self.space = vocab.text_ids(" ", normalize=False)[0]
        self._rows: dict[tuple, torch.Tensor] = {}
        self._forced: dict[tuple, int | None] = {}

    def initial(self) -> _TFState:
        return _TFState(self.g.start, 0, 0, ())

    def step(self, state: _TFState, token: int) -> _TFState:
        v, t = self.vocab, int(token)
        g = self.g.step(state.g, t, strict=False)
        if state.g == GrammarState.PROMPT:
            text = state.text + (t,) if v.is_char(t) else state.text
            return _TFState(g, 0, 0, text)
        pos, frames, plist, placed, since = state.pos, state.frames, state.plist, state.placed, state.since
        ustart = state.ustart
        if t == v.word_id:
            while pos < len(state.text) and state.text[pos] == self.space:
                pos += 1
            frames, plist, placed, since, ustart = 0, (), 0, 0, pos
        elif v.is_char(t) and state.g in (GrammarState.UNIT_CHAR0, GrammarState.UNIT_CHARS):
            pos += 1
        elif v.is_phone(t):
            if state.g in (GrammarState.UNIT_CHARS, GrammarState.UNIT_PHONES):
                plist += ((t, 0),)
            else:
                placed, since = placed + 1, 0
        elif v.is_duration(t) and plist:
            plist = plist[:-1] + ((plist[-1][0], t - v.duration_range[0]),)
        elif v.is_codec(t) and state.g not in (GrammarState.PROMPT, GrammarState.DONE) and state.g < GrammarState.SLOT:
            frames, since = frames + 1, since + 1  # a frame starts
        return _TFState(g, pos, frames, state.text, plist, placed, since, ustart)

    def _lexicon_variants(self, s: _TFState) -> tuple[tuple[tuple[int, ...], tuple[int, ...] | None], ...] | None:
        """The lexicon's phone lists (LM ids) for the unit from ``s.ustart`` to ``s.pos``,
        ending the sentence or not, each with its frames per phone (or None); None without
        a lexicon or for a unit it lacks."""
        if self.lexicon is None:
            return None
        last = s.pos >= len(s.text)
        # keyed by the unit's characters, not by its place: one grammar serves every sentence
        key = (s.text[s.ustart : s.pos], s.ustart == 0, last)
        if key not in self._variants:
            if len(self._variants) >= _MAX_CACHED_UNITS:  # a long-running server meets ever more texts
                self._variants.clear()
            text = self.vocab.text_from_ids(key[0])
            self._variants[key] = tuple((tuple(self.vocab.phone_id(p) for p in v), f)
                                        for v, f in self.lexicon.timed_variants(text, s.ustart == 0, last))
        return self._variants[key] or None

    def _lexicon_matches(self, s: _TFState) -> list[tuple[tuple[int, ...], tuple[int, ...] | None]]:
        """The lexicon's variants for the current unit that begin with the phones listed so far."""
        done = tuple(p for p, _ in s.plist)
        return [(v, f) for v, f in self._lexicon_variants(s) or () if v[: len(done)] == done]

    def _lexicon_ends_unit(self, s: _TFState) -> bool | None:
        """At a word boundary: True where the unit must end here (a lexicon unit, and no
        longer one runs over the next words of the prompt), False where it must go on (only a
        longer one does), None: the LM decides (both, or neither: words the lexicon lacks).
        Only units that fit the prompt count: a key's mere prefix ("at eleven" of "at eleven
        thirty" before "tonight") would let a unit run on into one the lexicon cannot plan."""
        known, goes_on = self.vocab.text_from_ids(s.text[s.ustart : s.pos]) in self.lexicon, self._longer_unit_fits(s)
        return True if known and not goes_on else False if goes_on and not known else None

    def _longer_unit_fits(self, s: _TFState) -> bool:
        """Some lexicon unit starts where this one does and ends at a later word boundary."""
        end = s.pos
        while end < len(s.text):
            end += 1
            while end < len(s.text) and s.text[end] != self.space:
                end += 1
            longer = self.vocab.text_from_ids(s.text[s.ustart : end])
            if longer in self.lexicon:
                return True
            if not self.lexicon.extends(longer):
                return False
        return False

    def _key(self, s: _TFState) -> tuple:
        """``(state, char, <word> ok, <audio_end> ok, frame ok, phones, <phones_end> ok)``: all a row
        depends on; ``phones`` is None (none legal), -1 (any) or the one legal phone id."""
        v, text = self.vocab, s.text
        remaining = s.pos < len(text)
        phones = v.layout == "phones"
        nxt = text[s.pos] if remaining else -1
        if s.g == GrammarState.UNIT_CHAR0:
            return (s.g, nxt, False, False, False, None, False)
        if s.g == GrammarState.UNIT_CHARS:
            boundary = not remaining or nxt == self.space  # the unit's audio (phones: list) may start here
            if boundary and phones and self.lexicon is not None:
                ends = True if not remaining else self._lexicon_ends_unit(s)
                if ends is False:
                    return (s.g, nxt, False, False, False, None, False)
                variants = self._lexicon_variants(s)
                first = tuple(sorted({v[0] for v, _ in variants if v})) if variants else -1
                return (s.g, -1 if ends else nxt, False, False, False, first, False)
            return (s.g, nxt, False, False, boundary and not phones, -1 if boundary and phones else None, False)
        if s.g == GrammarState.UNIT_DUR and self.lexicon_durations and s.plist:
            n = len(s.plist)
            frames = next((f for _, f in self._lexicon_matches(s) if f is not None), None)
            if frames is not None:  # the most frequent matching variant's median frames
                return (s.g, -1, False, False, False, None, False, min(frames[n - 1], self.vocab.durations - 1))
        if s.g == GrammarState.UNIT_PHONES:
            room = len(s.plist) < self.max_unit_phones
            match = [v for v, _ in self._lexicon_matches(s)] if self.lexicon is not None else []
            if match:  # the lexicon's lists that begin with the phones written so far
                n = len(s.plist)
                nxt_phones = tuple(sorted({v[n] for v in match if len(v) > n}))
                return (s.g, -1, False, False, False, nxt_phones if room and nxt_phones else None,
                        any(len(v) == n for v in match) or not nxt_phones or not room)
            return (s.g, -1, False, False, False, -1 if room else None, True)
        if s.g in (GrammarState.UNIT_AUDIO, GrammarState.FRAME) and phones:
            todo = s.plist[s.placed][0] if s.placed < len(s.plist) else None
            if s.g == GrammarState.FRAME and s.placed and s.since < s.plist[s.placed - 1][1]:
                return (s.g, -1, False, False, True, None, False)  # the current phone's frames
            done = todo is None
            return (s.g, -1, remaining and done, (not remaining) and done, False, todo, False)
        if s.g == GrammarState.FRAME:
            if v.has_units:
                return (s.g, -1, remaining, not remaining, s.frames < self.max_unit_frames, None, False)
            n_words = 1 + sum(1 for c in text if c == self.space)
            return (s.g, -1, False, True, s.frames < self.max_unit_frames * n_words, None, False)
        return (s.g,)

    def greedy(self, state: _TFState) -> bool:
        """Phones layout with ``greedy_plan``: the phone list and durations (and the first
        phone, chosen at the end of a unit's letters) take the model's best legal id."""
        return self.greedy_plan and state.g in _PLAN_STATES

    def pick(self, state: _TFState) -> FieldMedian | None:
        """With ``slot_fields``: the field-wise median rule where exactly one codebook's ids are legal."""
        if self._medians is None:
            return None
        key = self._key(state)
        if key not in self._slot_of:
            row = self.allowed(state)
            n = int(row.sum())
            self._slot_of[key] = next((k for k, (lo, hi) in enumerate(self.vocab.slot_ranges)
                                       if n == hi - lo and bool(row[lo:hi].all())), None)
        k = self._slot_of[key]
        return self._medians[k] if k is not None else None

    def forced(self, state: _TFState) -> int | None:
        """The only legal id (mid-word characters, the first ``<word>``, the phones layout's
        placed phones and unit ends), else None."""
        return _only(self._forced, self._key(state), lambda: self.allowed(state))

    def allowed(self, state: _TFState) -> torch.Tensor:
        key = self._key(state)
        row = self._rows.get(key)
        if row is None:
            row = self.g.allowed[state.g].clone()
            if len(key) == 8:  # a duration the lexicon decides
                row = torch.zeros_like(row)
                row[self.vocab.duration_id(key[7])] = True
            elif len(key) > 1:
                g, char, word_ok, end_ok, slot0_ok, phone, sep_ok = key
                v = self.vocab
                lo0, hi0 = v.slot_ranges[0]
                plo, phi = v.phone_range
                row[plo:phi] = phone == -1
                if isinstance(phone, tuple):  # the lexicon's choices
                    row[list(phone)] = True
                elif phone is not None and phone >= 0:
                    row[phone] = True
                if v.layout == "phones":
                    row[v.phones_end_id] = sep_ok
                if g in (GrammarState.UNIT_CHAR0, GrammarState.UNIT_CHARS):
                    clo, chi = v.char_range
                    row[clo:chi] = False
                    if char >= 0:
                        row[char] = True
                    row[lo0:hi0] = slot0_ok  # a unit's audio may start only at a word boundary
                elif g == GrammarState.FRAME:
                    row[v.word_id] = word_ok
                    row[v.audio_end_id] = end_ok
                    row[lo0:hi0] = slot0_ok
                if not row.any():  # never leave the model without a legal id
                    row[v.audio_end_id] = True
            self._rows[key] = row
        return row


def verify_masks(
    vocab: VoiceVocab, committed: Sequence[int], chunk: Sequence[int], grammar: DecodeGrammar | None = None
) -> torch.Tensor:
    """``(len(chunk) + 1, V)`` legal-id masks for verifying ``chunk`` after ``committed``.

    ``committed`` starts with the prompt.  Row 0 constrains the token after
    ``committed`` (the first candidate), row ``i`` the token after ``chunk[:i]``.
    Candidates need not be legal: rows after an illegal candidate are never used
    because verification stops at its rejection.  Default grammar: :class:`SlotOnly`.
    """
    grammar = grammar or SlotOnly(vocab)
    state = grammar.initial()
    for t in committed:
        state = grammar.step(state, t)
    rows = [grammar.allowed(state)]
    for t in chunk:
        state = grammar.step(state, t)
        rows.append(grammar.allowed(state))
    return torch.stack(rows)


class _History:
    """Tokens a cache holds and the grammar state after each (kept in step with crops)."""

    __slots__ = ("states",)

    def __init__(self) -> None:
        self.states: list[Hashable] = []


class GrammarMaskedLM(torch.nn.Module):
    """A causal LM whose output logits are masked by the voice's slot grammar.

    Looks like the wrapped HF model to :class:`~voicestream.spec.SpeculativeDecoder`
    (same forward arguments, config, generation config, output embeddings, parameters).
    Safe for concurrent generations: histories are keyed by KV-cache object.
    """

    def __init__(self, model: torch.nn.Module, vocab: VoiceVocab, grammar: DecodeGrammar | None = None) -> None:
        super().__init__()
        self.model = model
        self.vocab = vocab
        self.grammar = grammar or SlotOnly(vocab)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._histories: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    # ----- HF look-alike -------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def generation_config(self):
        return getattr(self.model, "generation_config", None)

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    # ----- forward ---------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        cache=None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
        **kwargs,
    ):
        if input_ids.shape[0] != 1:
            raise ValueError("GrammarMaskedLM decodes one sequence at a time")
        kwargs[self._cache_arg] = cache if cache is not None else kwargs.pop("past_key_values", None)
        cache_in = kwargs[self._cache_arg]
        past = int(cache_in.get_seq_length()) if cache_in is not None else 0
        out = self.model(input_ids=input_ids, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
        cache_out = out.cache if hasattr(out, "cache") else out.past_key_values
        g = self.grammar
        with self._lock:
            hist = self._histories.get(cache_in) if cache_in is not None else None
            if hist is None:
                hist = _History()
                if past:
                    raise RuntimeError("GrammarMaskedLM got a KV cache it did not create; cannot recover states")
            del hist.states[past:]
            state = hist.states[-1] if hist.states else g.initial()
            for t in input_ids[0].tolist():
                state = g.step(state, t)
                hist.states.append(state)
            if cache_out is not None:
                self._histories[cache_out] = hist
            n_rows = out.logits.shape[1]
            allowed = torch.stack([g.allowed(st) for st in hist.states[-n_rows:]])  # (n_rows, V)
        logits = out.logits
        if logits.shape[-1] != allowed.shape[-1]:
            raise ValueError(f"model head size {logits.shape[-1]} != vocab size {allowed.shape[-1]}")
        out.logits = mask_logits(logits, allowed[None])
        return out
