"""NeuTTS through voicestream: phonemes + reference voice -> speculative decoding -> NeuCodec.

    python examples/family_neutts.py "Hello there." -o neutts.wav            # random weights
    python examples/family_neutts.py "Hello there." -o neutts.wav \\
        --target models/neutts-air --codec models/neucodec --voice neutts/samples/dave \\
        --draft self:6 --device cuda --dtype bf16

``--voice STEM`` reads NeuTTS' reference files ``STEM.pt`` (codes) and ``STEM.txt``.
Without ``--target`` a random-weight Qwen2 with NeuTTS' tokens and a random-weight
NeuCodec stand in; phonemes come from espeak-ng when installed, else the plain text.
"""
import argparse
import tempfile
import warnings

from voicestream.adapters.families import load_family_synthesizer
from voicestream.adapters.families.neutts import EspeakPhonemizer, NeuTTSVoice
from voicestream.adapters.families.random_checkpoints import random_neutts_checkpoint

from voicestream.say import write_wav

warnings.filterwarnings("ignore", category=FutureWarning)


def phonemizer_or_plain():
    espeak = EspeakPhonemizer()
    try:
        espeak("test")
        return espeak
    except (ImportError, RuntimeError):
        print("espeak-ng/phonemizer not available: using the plain text as 'phonemes'")
        return lambda text: " ".join(text.split())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text", nargs="?", default="Hello there, this is NeuTTS speaking.")
    p.add_argument("-o", "--output", default="neutts.wav")
    p.add_argument("--target", help="NeuTTS checkpoint directory (default: random weights)")
    p.add_argument("--codec", help="transformers NeuCodec directory (required with --target)")
    p.add_argument("--voice", help="reference stem: STEM.pt + STEM.txt")
    p.add_argument("--draft", default="self:1", help="draft checkpoint, 'self:N' or 'none'")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--max-frames", type=int, default=None, help="cap the utterance (20 ms frames)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        target, codec = args.target, args.codec
        voice = NeuTTSVoice.from_files(args.voice) if args.voice else None
        if target is None:
            target, codec = random_neutts_checkpoint(tmp), codec or "random"
            voice = voice or NeuTTSVoice(tuple(range(100, 150)), "A short reference clip.")
        synth = load_family_synthesizer(
            "neutts", target, args.draft, args.device, args.dtype, codec=codec, voice=voice,
            phonemize=phonemizer_or_plain(),
        )
        cfg = synth.config_for(args.text)
        if args.max_frames:
            cfg = cfg.with_(max_new_tokens=min(cfg.max_new_tokens, args.max_frames))
        result = synth.synthesize(args.text, cfg)
        synth.close()
    write_wav(args.output, result.audio, result.sample_rate)
    stats = result.stats.as_dict()
    print(f"wrote {args.output}: {stats['audio_s']} s at {result.sample_rate} Hz | TTFA {stats['ttfa_s']} s | "
          f"RTF {stats['rtf']} | accepted per target forward {stats['accepted_per_target_forward']}")
    return stats


if __name__ == "__main__":
    main()
