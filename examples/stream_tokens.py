"""Stream tokens from a target with a draft, asynchronously, and print what each chunk cost.

    python examples/stream_tokens.py                      # built-in refined pair
    python examples/stream_tokens.py TARGET_DIR DRAFT_DIR  # your own pair (same vocabulary)
"""
import asyncio
import sys
import warnings

from voicestream import SamplingConfig, SpecConfig, SpeculativeEngine
from voicestream.models import load_causal_lm, refined_pair

warnings.filterwarnings("ignore", category=FutureWarning)


async def main() -> None:
    if len(sys.argv) == 3:
        target, draft = load_causal_lm(sys.argv[1]), load_causal_lm(sys.argv[2])
    else:
        target, draft = refined_pair(vocab_size=1024, hidden_size=256, num_layers=6, num_heads=4)
    engine = SpeculativeEngine.from_models(target, draft)
    cfg = SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=0.8, top_k=50), max_new_tokens=64, seed=1)
    async with engine.stream([1, 2, 3, 4], cfg) as stream:
        async for chunk in stream:
            print(f"+{len(chunk.tokens)} tokens at {chunk.start}: {chunk.tokens}")
    s = stream.stats
    print(f"{s.new_tokens} tokens, {s.mean_accepted_per_target_forward:.2f} per target forward, "
          f"TTFT {s.time_to_first_token_s * 1000:.0f} ms, {s.tokens_per_s:.0f} tokens/s")
    engine.close()


if __name__ == "__main__":
    asyncio.run(main())
