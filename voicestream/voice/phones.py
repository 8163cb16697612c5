"""Phone tokens for the "phones" layout: the teacher's phoneme timing, placed between frames.

Why: in the words layout a unit's frames must find their sounds by looking back at the
unit's *letters* - English spelling to sound plus "how far into the word am I", learned
implicitly by a 10M-parameter LM from a few thousand sentences.  After 3.3 CPU epochs
that model spoke English-like babble whose first words were sometimes right; forcing
the teacher's exact unit durations barely helped (WER 132% -> 111%), so timing was not
the problem, the letter-to-sound mapping was.  The phones layout makes it local: the LM
writes each phone (from the teacher's espeak/Piper alignment at training time) right
before the frames where that phone starts.  At synthesis the LM writes the phones
itself from the unit's letters - a learned grapheme-to-phoneme step - so nothing GPL
(espeak) runs at runtime; the phone symbols are only data.

A unit's token run is ``<word> letters  p1 d3 p2 d2 p3 d1 <phones_end>  p1 f f f  p2 f f  p3 f``:
the phone list with each phone's duration in frames (the G2P and duration steps, written
by the model at synthesis), then the audio, each phone placed before its first frame
(several may share a boundary: 0-frame phones).  At synthesis the list fixes the audio's
schedule, so only codec tokens are left to the model there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["PHONES", "phone_durations", "phone_inventory", "teacher_sample_rate", "unit_phones"]

# The symbols Piper's en_US "joe" voice emits (espeak-ng IPA, stress and length marks,
# punctuation, ``^``/``$`` sentence start/end, ``" "`` between words), by frequency in
# the 4,000-sentence training corpus.  The order fixes token ids: append, never reorder.
PHONES: tuple[str, ...] = (
    " ", "ˈ", "ɪ", "n", "t", "ː", "ɹ", "ə", "d", "s", "l", "i", "ɛ", "^", "$", "z", "k", "ʊ", ".", "ð",
    "w", "m", "p", "ʌ", "ɚ", "æ", "a", "f", "ɔ", "e", "ˌ", "ɑ", "b", "v", "o", "ɐ", "u", "ᵻ", "ɾ", "ʃ",
    "ʲ", "h", ",", "θ", "ɜ", "ɡ", "ʒ", "j", "?", "!", "ŋ", ":", ";", "ʔ", "\u0329",
)

_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


def phone_inventory(alignments: Iterable[Sequence[tuple[str, int]]], base: Sequence[str] = PHONES) -> tuple[str, ...]:
    """``base`` plus any other symbol the alignments use (sorted), so ids stay stable."""
    seen = {p for a in alignments for p, _ in a}
    return (*base, *sorted(seen.difference(base)))


def teacher_sample_rate(alignment: Sequence[tuple[str, int]], audio_s: float) -> int:
    """The rate the alignment's sample counts are at (they sum to the teacher's audio)."""
    total = sum(int(n) for _, n in alignment)
    if audio_s <= 0 or total <= 0:
        raise ValueError("empty alignment or audio")
    return min(_RATES, key=lambda r: abs(r - total / audio_s))


def unit_phones(
    alignment: Sequence[tuple[str, int]], sample_rate: int, frame_rate: float, unit_frames: Sequence[int]
) -> list[list[tuple[str, int]]]:
    """Per unit, ``[(phone, frame offset in the unit)]`` in time order.

    A phone starts at its rounded start frame (the same rounding that cut the units,
    :func:`~voicestream.voice.align.units_to_frames`, so unit edges fall on phone edges)
    and belongs to the unit holding that frame; a phone starting after the last frame
    goes to the last unit's end.  Every unit opens with a phone at offset 0 - where the
    rounding left none, the phone still sounding there is repeated - so the grammar can
    require "letters, then a phone".
    """
    edges = [0]
    for f in unit_frames:
        edges.append(edges[-1] + int(f))
    total = edges[-1]
    out: list[list[tuple[str, int]]] = [[] for _ in unit_frames]
    acc = 0
    starts: list[tuple[str, int]] = []
    for p, n in alignment:
        starts.append((p, min(round(acc / sample_rate * frame_rate), total)))
        acc += int(n)
    u = 0
    for p, f in starts:
        while u + 1 < len(out) and f >= edges[u + 1]:
            u += 1
        out[u].append((p, f - edges[u]))
    sounding: str | None = None
    for u, run in enumerate(out):
        if (not run or run[0][1] > 0) and sounding is not None:
            run.insert(0, (sounding, 0))
        if run:
            sounding = run[-1][0]
    return out


def phone_durations(phones: Sequence[tuple[str, int]], frames: int) -> list[int]:
    """Frames each of one unit's placed ``(phone, offset)`` lasts (the unit has ``frames``)."""
    ends = [off for _, off in phones[1:]] + [frames]
    return [e - off for (_, off), e in zip(phones, ends)]


def utterance_phones(utt, frame_rate: float = 50.0) -> list[list[tuple[str, int]]] | None:
    """Per unit of a corpus utterance, its placed ``(phone, frame offset)`` list
    (:func:`unit_phones` on the teacher's alignment), or None without an alignment or units."""
    alignment = utt.meta.get("phonemes")
    if not alignment or not utt.has_units:
        return None
    sr = teacher_sample_rate(alignment, float(utt.meta["audio_s"]))
    return unit_phones(alignment, sr, frame_rate, utt.unit_frames)
