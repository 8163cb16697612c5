"""Reproducible English sentence generator for the teacher corpus.

Why generate instead of using a text dump: the corpus must rebuild bit-for-bit on any
machine from ``(n, seed)`` with nothing but this file, and a character-level voice needs
broad letter-to-sound coverage (many different words), all punctuation the normaliser
keeps (, . ? ! ; :), numbers in every form the normaliser expands (cardinals, years,
times, money, percentages, ordinals) and a spread of lengths.  Templates with slots
filled from word lists give that at any scale; :func:`sentences` also de-duplicates.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from .wide_vocab import WideVocab

__all__ = ["SentenceGenerator", "sentences"]

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Karen", "Leo", "Maria", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tina", "Victor", "Wendy", "Xavier", "Yara", "Zoe", "Alice", "Bruno", "Chloe", "Daniel", "Elena", "Felix", "Gina", "Hugo", "Ivan", "Julia", "Kevin", "Laura", "Mike", "Nina", "Oscar", "Peter", "Rachel", "Simon", "Tom", "Ursula", "Vera", "Walter", "Amir", "Priya", "Kenji", "Fatima", "Lucas", "Sofia", "Mateo", "Hannah", "Omar", "Lily", "Ethan", "Mia", "Arthur", "Beatrice", "Carlos", "Dora", "Edgar", "Fiona", "George", "Helen"]

PLACES = ["London", "Paris", "Tokyo", "Berlin", "Chicago", "Boston", "Madrid", "Rome", "Sydney", "Toronto", "Dublin", "Oslo", "Cairo", "Lima", "Denver", "Seattle", "Vienna", "Prague", "Lisbon", "Athens", "Nairobi", "Mumbai", "Montreal", "Austin", "Glasgow", "Helsinki", "Warsaw", "Santiago", "Manila", "Phoenix", "Houston", "Atlanta", "Dallas", "Brussels", "Geneva", "Istanbul", "Kyoto", "Melbourne", "Portland"]

NOUNS = ["apple", "bicycle", "garden", "window", "letter", "kitchen", "river", "mountain", "teacher", "doctor", "station", "market", "library", "island", "bridge", "candle", "basket", "forest", "pencil", "camera", "engine", "ticket", "village", "harbor", "castle", "blanket", "bottle", "butter", "carpet", "cookie", "diamond", "dragon", "feather", "guitar", "hammer", "jacket", "ladder", "lemon", "magnet", "mirror", "needle", "orange", "pepper", "pillow", "planet", "pocket", "puzzle", "rabbit", "rocket", "saddle", "shadow", "shovel", "silver", "spider", "spoon", "sugar", "sweater", "table", "tiger", "tunnel", "turtle", "umbrella", "violin", "wagon", "wallet", "whistle", "wizard", "yogurt", "zipper", "airport", "anchor", "apron", "arrow", "balloon", "banana", "barrel", "beach", "bench", "blossom", "bucket", "cabinet", "canyon", "carrot", "cereal", "chimney", "circus", "clock", "cloud", "compass", "cottage", "crayon", "desert", "dolphin", "drawer", "elephant", "envelope", "fence", "festival", "fountain", "frog", "glacier", "globe", "helmet", "hospital", "jungle", "kettle", "kitten", "lantern", "lighthouse", "meadow", "melon", "museum", "notebook", "ocean", "onion", "painting", "parrot", "peanut", "piano", "pigeon", "pilot", "pirate", "potato", "pumpkin", "quilt", "radio", "rainbow", "robot", "sailor", "sandwich", "scarf", "scissors", "skeleton", "snowman", "stadium", "statue", "stove", "sunflower", "tent", "tomato", "tractor", "trumpet", "valley", "volcano", "waterfall", "whale", "windmill", "airplane", "computer", "printer", "keyboard", "message", "question", "answer", "problem", "project", "meeting", "weekend", "holiday", "breakfast", "dinner", "lunch", "coffee", "journey", "story", "picture", "country", "family", "neighbor", "student", "captain", "farmer", "baker", "driver", "singer", "painter", "writer", "dancer", "nurse", "lawyer", "engineer", "scientist", "gardener", "chef"]

ADJECTIVES = ["small", "large", "bright", "dark", "quiet", "noisy", "gentle", "rough", "smooth", "heavy", "light", "ancient", "modern", "strange", "familiar", "curious", "careful", "brave", "clever", "friendly", "lazy", "busy", "happy", "sad", "angry", "calm", "warm", "cold", "fresh", "stale", "sweet", "bitter", "golden", "wooden", "broken", "shiny", "dusty", "muddy", "narrow", "wide", "tall", "short", "young", "old", "empty", "crowded", "hidden", "famous", "lonely", "lucky", "patient", "polite", "proud", "quick", "slow", "simple", "complex", "purple", "yellow", "green", "orange", "silver", "crimson", "tiny", "enormous", "fragile", "sturdy", "wild", "tame", "cheerful", "gloomy", "honest", "mysterious", "peaceful", "rapid", "sleepy", "thirsty", "hungry", "tidy", "messy", "elegant", "plain"]

VERBS_PAST = ["found", "painted", "carried", "opened", "fixed", "cleaned", "watched", "visited", "borrowed", "bought", "sold", "dropped", "lifted", "pushed", "pulled", "packed", "wrapped", "washed", "cooked", "baked", "built", "climbed", "crossed", "followed", "noticed", "remembered", "discovered", "explained", "described", "ordered", "delivered", "collected", "counted", "measured", "repaired", "replaced", "planted", "picked", "tested", "studied"]

VERBS_BASE = ["find", "paint", "carry", "open", "fix", "clean", "watch", "visit", "borrow", "buy", "sell", "drop", "lift", "push", "pull", "pack", "wrap", "wash", "cook", "bake", "build", "climb", "cross", "follow", "notice", "remember", "discover", "explain", "describe", "order", "deliver", "collect", "count", "measure", "repair", "replace", "plant", "pick", "test", "study"]

ADVERBS = ["quickly", "slowly", "carefully", "quietly", "suddenly", "finally", "happily", "gently", "loudly", "rarely", "often", "always", "never", "sometimes", "eagerly", "patiently", "barely", "nearly", "almost"]

TIMES = """yesterday|today|tomorrow|tonight|this morning|last night|next week|on Monday|on Tuesday|
on Wednesday|on Thursday|on Friday|on Saturday|on Sunday|in the spring|in the summer|in the autumn|
in the winter|every evening|at noon|at midnight|before sunrise|after lunch""".replace("\n", "").split("|")

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "gray", "brown", "pink"]
FEELINGS = ["glad", "sorry", "sure", "afraid", "surprised", "proud", "tired", "excited", "worried", "curious"]
EXCLAIM = ["Wow", "Oh no", "Great", "Look", "Watch out", "Hurry up", "Well done", "Listen", "Careful", "Amazing"]


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x", "z")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _a(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


class SentenceGenerator:
    """Template sentences from a seeded RNG (``random.Random``: stable across platforms)."""

    def __init__(self, seed: int = 0, wide: WideVocab | None = None, wide_share: float = 0.5) -> None:
        self.rng = random.Random(seed)
        self.wide, self.wide_share = wide, wide_share
        self.templates: list[Callable[[], str]] = [
            self._statement, self._statement, self._statement, self._question, self._question,
            self._exclamation, self._numbers, self._money, self._clock, self._date, self._percent,
            self._list, self._semicolon, self._colon, self._quote, self._ordinal, self._long,
            self._short, self._comparison, self._request,
        ]

    # ----- helpers -------------------------------------------------------------
    def c(self, xs: list[str]) -> str:
        return self.rng.choice(xs)

    def _slot(self, core: list[str], wide: str) -> str:
        """A core word, or with ``wide_share`` odds one of the wide vocabulary's (same RNG
        draws as before when there is none, so old corpora rebuild bit for bit)."""
        if self.wide is not None and self.rng.random() < self.wide_share:
            return self.c(getattr(self.wide, wide))  # type: ignore[arg-type]
        return self.c(core)

    def noun(self) -> str:
        return self._slot(NOUNS, "nouns")

    def adj(self) -> str:
        return self._slot(ADJECTIVES, "adjectives")

    def adv(self) -> str:
        return self._slot(ADVERBS, "adverbs")

    def vbase(self) -> str:
        return self._slot(VERBS_BASE, "verbs_base")

    def vpast(self) -> str:
        return self._slot(VERBS_PAST, "verbs_past")

    def np(self, det: bool = True) -> str:
        r = self.rng.random()
        noun = self.noun()
        if r < 0.4:
            noun = f"{self.adj()} {noun}"
        if not det:
            return noun
        d = self.rng.random()
        if d < 0.45:
            return f"the {noun}"
        if d < 0.75:
            return _a(noun)
        if d < 0.9:
            return f"{self.c(['my', 'your', 'her', 'his', 'our', 'their'])} {noun}"
        return f"{self.c(['this', 'that', 'every', 'one'])} {noun}"

    def subj(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            return self.c(NAMES)
        if r < 0.7:
            return self.c(["I", "We", "They", "She", "He", "You"])
        return self.np().capitalize()

    def time(self) -> str:
        return self.c(TIMES).strip()

    # ----- templates -----------------------------------------------------------
    def _statement(self) -> str:
        s = f"{self.subj()} {self.vpast()} {self.np()}"
        r = self.rng.random()
        if r < 0.35:
            s += f" {self.time()}"
        elif r < 0.6:
            s += f" in {self.c(PLACES)}"
        elif r < 0.75:
            s += f" {self.adv()}"
        return s + "."

    def _question(self) -> str:
        r = self.rng.random()
        if r < 0.25:
            return f"Did {self.c(NAMES)} {self.vbase()} {self.np()} {self.time()}?"
        if r < 0.5:
            return f"Where is {self.np()}?"
        if r < 0.7:
            return f"Why would anyone {self.vbase()} {self.np()} in {self.c(PLACES)}?"
        if r < 0.85:
            return f"Can you {self.vbase()} {self.np()} for me, please?"
        return f"How many {_plural(self.noun())} are in {self.np()}?"

    def _exclamation(self) -> str:
        return f"{self.c(EXCLAIM).strip()}! {self.np().capitalize()} is so {self.adj()}!"

    def _numbers(self) -> str:
        n = self.rng.choice([self.rng.randint(0, 20), self.rng.randint(21, 999), self.rng.randint(1000, 99999)])
        return f"{self.subj()} {self.vpast()} {n} {_plural(self.noun())} {self.time()}."

    def _money(self) -> str:
        dollars = self.rng.randint(1, 500)
        cents = self.rng.choice([0, 0, self.rng.randint(1, 99)])
        price = f"${dollars}" if not cents else f"${dollars}.{cents:02d}"
        return self.c([
            f"The {self.noun()} costs {price}.",
            f"{self.c(NAMES)} paid {price} for {self.np()}.",
            f"Is {price} too much for {self.np()}?",
        ])

    def _clock(self) -> str:
        h, m = self.rng.randint(1, 12), self.rng.choice([0, 15, 30, 45, self.rng.randint(1, 59)])
        t = f"{h}:{m:02d}" + self.c(["", " am", " pm"])
        return self.c([
            f"The {self.c(['train', 'bus', 'meeting', 'show', 'class', 'flight'])} starts at {t}.",
            f"Meet me at {t} near {self.np()}.",
            f"Does the {self.c(['store', 'museum', 'bank', 'library'])} open at {t}?",
        ])

    def _date(self) -> str:
        year = self.rng.choice([self.rng.randint(1800, 1999), self.rng.randint(2000, 2030)])
        return self.c([
            f"{self.c(NAMES)} was born in {year}.",
            f"In {year}, {self.c(NAMES)} moved to {self.c(PLACES)}.",
            f"The {self.noun()} was built in {self.c(MONTHS)} {year}.",
        ])

    def _percent(self) -> str:
        p = self.rng.randint(1, 100)
        return f"About {p}% of the {_plural(self.noun())} were {self.adj()}."

    def _list(self) -> str:
        items = [_plural(self.noun()) for _ in range(self.rng.randint(3, 4))]
        return f"{self.subj()} {self.vpast()} {', '.join(items[:-1])} and {items[-1]}."

    def _semicolon(self) -> str:
        return f"{self.c(NAMES)} was {self.c(FEELINGS)}; {self.c(NAMES)} was not."

    def _colon(self) -> str:
        return f"There is one rule: never {self.vbase()} {self.np()} {self.adv()}."

    def _quote(self) -> str:
        return f"{self.c(NAMES)} said, \"{self.c(['Yes', 'No', 'Maybe', 'Thank you', 'Hello', 'Goodbye'])}, {self.c(NAMES)}.\""

    def _ordinal(self) -> str:
        n = self.rng.randint(1, 31)
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return self.c([
            f"The party is on the {n}{suffix} of {self.c(MONTHS)}.",
            f"{self.c(NAMES)} finished {n}{suffix} in the race.",
        ])

    def _long(self) -> str:
        return (
            f"When {self.c(NAMES)} {self.vpast()} {self.np()}, {self.subj().lower() if self.rng.random() < 0.3 else self.c(NAMES)} "
            f"{self.vpast()} {self.np()} and {self.vpast()} {self.np()} {self.time()}."
        ).replace(" i ", " I ")

    def _short(self) -> str:
        return self.c([
            f"{self.c(['Yes', 'No', 'Okay', 'Sure', 'Thanks', 'Sorry', 'Hello', 'Goodbye'])}.",
            f"{self.c(['Really', 'Why', 'When', 'Where', 'Who'])}?",
            f"{self.c(NAMES)} is {self.c(FEELINGS)}.",
            f"It is {self.c(COLORS)}.",
        ])

    def _comparison(self) -> str:
        return f"{self.np().capitalize()} is more {self.adj()} than {self.np()}."

    def _request(self) -> str:
        return f"Please {self.vbase()} {self.np()} before {self.c(WEEKDAYS)}."

    def __call__(self) -> str:
        return self.c(self.templates)()  # type: ignore[arg-type]


def sentences(n: int, seed: int = 0, *, exclude: set[str] | None = None,
              wide: WideVocab | None = None, wide_share: float = 0.5) -> Iterator[str]:
    """``n`` distinct sentences for ``seed`` (deterministic order); skips ``exclude``.
    With ``wide``, each content-word slot draws from it with ``wide_share`` odds."""
    gen = SentenceGenerator(seed, wide, wide_share)
    seen = set(exclude or ())
    produced = 0
    tries = 0
    while produced < n:
        s = gen()
        tries += 1
        if tries > 50 * n + 1000:
            raise RuntimeError("sentence generator keeps repeating itself; use a smaller n")
        if s in seen:
            continue
        seen.add(s)
        produced += 1
        yield s
