"""Orpheus through voicestream: speculative decoding + SNAC streaming, to a WAV file.

    python examples/family_orpheus.py "Hello there." -o orpheus.wav          # random weights
    python examples/family_orpheus.py "Hello there." -o orpheus.wav \\
        --target models/orpheus-3b-0.1-ft --codec models/snac_24khz --draft self:8 --device cuda --dtype bf16

Without ``--target`` it builds a random-weight Llama with Orpheus' vocabulary (saved to a
temporary directory and loaded back) and a random-weight SNAC 24 kHz: the audio is noise,
the pipeline, lengths and timings are real.
"""
import argparse
import tempfile
import warnings

from voicestream.adapters.families import load_family_synthesizer
from voicestream.adapters.families.random_checkpoints import random_orpheus_checkpoint

from voicestream.say import write_wav

warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text", nargs="?", default="Hello there, this is Orpheus speaking.")
    p.add_argument("-o", "--output", default="orpheus.wav")
    p.add_argument("--target", help="Orpheus checkpoint directory (default: random weights)")
    p.add_argument("--codec", help="SNAC 24 kHz directory (default with --target: required)")
    p.add_argument("--draft", default="self:1", help="draft checkpoint, 'self:N' or 'none'")
    p.add_argument("--voice", default="tara")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="bf16 / fp16 / fp32 for the LMs")
    p.add_argument("--max-frames", type=int, default=None, help="cap the utterance (85 ms frames)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        target, codec = args.target, args.codec
        if target is None:
            target, codec = random_orpheus_checkpoint(tmp), codec or "random"
        synth = load_family_synthesizer(
            "orpheus", target, args.draft, args.device, args.dtype, codec=codec, voice=args.voice
        )
        cfg = synth.config_for(args.text)
        if args.max_frames:
            cfg = cfg.with_(max_new_tokens=min(cfg.max_new_tokens, 7 * args.max_frames))
        result = synth.synthesize(args.text, cfg)
        synth.close()
    write_wav(args.output, result.audio, result.sample_rate)
    stats = result.stats.as_dict()
    print(f"wrote {args.output}: {stats['audio_s']} s at {result.sample_rate} Hz | TTFA {stats['ttfa_s']} s | "
          f"RTF {stats['rtf']} | accepted per target forward {stats['accepted_per_target_forward']}")
    return stats


if __name__ == "__main__":
    main()
