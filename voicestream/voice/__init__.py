"""The built-in voice: joint vocabulary, teacher corpus, training, distillation, synthesis.

Runtime modules (vocab, masking, synthesize) never import the GPL teacher engine; only
:mod:`voicestream.voice.corpus` does, inside its builder.
"""

from .vocab import LAYOUTS, GrammarError, GrammarState, SlotGrammar, VoiceVocab, mask_logits

__all__ = ["LAYOUTS", "GrammarError", "GrammarState", "SlotGrammar", "VoiceVocab", "mask_logits"]
