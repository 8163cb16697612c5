"""The built-in voice: joint vocabulary, teacher corpus, training, distillation, synthesis.

Runtime modules (vocab, masking, synthesize) never import the GPL teacher engine; only
:mod:`voicestream.voice.corpus` does, inside its builder.
"""

from .lexicon import Lexicon
from .masking import GrammarMaskedLM, verify_masks
from .synthesize import SynthesisResult, SynthesisStats, Voice
from .vocab import (
    LAYOUTS,
    GrammarError,
    GrammarState,
    SlotGrammar,
    VoiceVocab,
    mask_logits,
)

__all__ = [
    "LAYOUTS",
    "GrammarError",
    "GrammarMaskedLM",
    "GrammarState",
    "Lexicon",
    "SlotGrammar",
    "SynthesisResult",
    "SynthesisStats",
    "Voice",
    "VoiceVocab",
    "mask_logits",
    "verify_masks",
]
