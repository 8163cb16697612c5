"""Any codec-token LM + a registered codec, described by a config file (docs/adapters.md).

    python examples/family_generic.py "hello" -o generic.wav                  # random weights
    python examples/family_generic.py "hello" -o generic.wav --target DIR --config DIR/voicestream_family.toml

Without ``--target`` this writes a tiny random Llama whose vocabulary is bytes + two
markers + Codec2's 5376 codes, and the config below, to a temporary directory, then loads
both back the way a real model would be loaded.
"""
import argparse
import tempfile
import warnings
from pathlib import Path

from voicestream.adapters.families import load_family_synthesizer
from voicestream.adapters.families.random_checkpoints import save_random_lm

from voicestream.codec import default_codec
from voicestream.say import write_wav

warnings.filterwarnings("ignore", category=FutureWarning)

EXAMPLE_CONFIG = """
name = "bytes-codec2"
prompt = ["{text}", 256]       # the text as UTF-8 bytes, then the audio-start marker
text_encoding = "bytes"
start_ids = [256]
stop_ids = [257]

[audio]
codec = "codec2"
layout = "codec_flat"          # Codec2's flat ids (7 codebooks), shifted past text + markers
offset = 258

[sampling]
temperature = 0.8
top_k = 50
max_seconds = 10
"""


def write_example(directory: Path) -> Path:
    save_random_lm(directory, vocab_size=258 + default_codec().spec.vocab_size, hidden_size=64, num_layers=4)
    (directory / "voicestream_family.toml").write_text(EXAMPLE_CONFIG)
    return directory


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text", nargs="?", default="hello from a generic family")
    p.add_argument("-o", "--output", default="generic.wav")
    p.add_argument("--target", help="checkpoint directory (default: random weights)")
    p.add_argument("--config", help="family config (default: TARGET/voicestream_family.toml)")
    p.add_argument("--draft", default="self:2", help="draft checkpoint, 'self:N' or 'none'")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--max-frames", type=int, default=50, help="cap the utterance (20 ms Codec2 frames)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(args.target) if args.target else write_example(Path(tmp))
        synth = load_family_synthesizer("generic", target, args.draft, args.device, args.dtype, config=args.config)
        cfg = synth.config_for(args.text)
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
