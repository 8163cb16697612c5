"""NeuCodec (NeuTTS' codec) as a voicestream :class:`Codec`, via ``transformers.NeuCodecModel``.

NeuCodec emits one 16-bit FSQ code (levels 4^8 = 65536) per 50 Hz frame and decodes to
24 kHz, i.e. 480 samples per frame.  The model class ships with transformers (>= 5), so no
extra package is needed; the ``neucodec`` PyPI package pins torchaudio, which would drag
in a different torch build.

Why streaming is approximate here: the decoder has a bidirectional transformer over the
whole code sequence, so every output sample depends on every frame.  Like NeuTTS' own
streaming (50 frames look-back, 5 look-ahead, one frame overlap-added), the window below
bounds the work per chunk and relies on the trained attention being mostly local; only a
window spanning the whole utterance reproduces whole-utterance decoding exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from voicestream.codec.base import Codec, CodecSpec
from voicestream.codec.streaming import OverlapConfig, OverlapStreamingDecoder

__all__ = ["NEUTTS_WINDOW", "TINY_NEUCODEC_CONFIG", "NeuCodecCodec"]

# NeuTTS' streaming geometry: look back 50 frames, look ahead 5, blend one frame (480 samples)
NEUTTS_WINDOW = OverlapConfig(context_frames=50, lookahead_frames=5, crossfade_samples=480)

# The real geometry (16 kHz in, 24 kHz out, hop 320 -> 480, FSQ 4^8) with tiny widths:
# random-weight tests and examples, where the 1024-wide, 12-layer decoder and the
# 600M-parameter semantic encoder would only cost time.
TINY_NEUCODEC_CONFIG: dict = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 16,
    "encoder_hidden_size": 8,
    "quantization_dim": 96,  # hidden_size + semantic hidden size
    "semantic_model_config": {
        "model_type": "wav2vec2-bert",
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "output_hidden_size": 32,
    },
}


class NeuCodecCodec(Codec):
    """Decode-only NeuCodec wrapper (a frame is one code; ``(frames, 1)`` code arrays)."""

    def __init__(self, model: torch.nn.Module, *, window: OverlapConfig | None = None) -> None:
        self.model = model.eval()
        cfg = model.config
        self.spec = CodecSpec(
            name="neucodec",
            sample_rate=int(cfg.output_sampling_rate),
            samples_per_frame=int(cfg.hop_length),
            codebook_sizes=(int(np.prod(cfg.quantization_levels)),),
        )
        self.window = window or NEUTTS_WINDOW

    @classmethod
    def random(cls, config: dict | None = None, *, seed: int = 0, device="cpu", **kwargs) -> NeuCodecCodec:
        """Random weights of the real ``NeuCodecModel`` class (``config`` defaults to the tiny one)."""
        from transformers import NeuCodecConfig, NeuCodecModel

        torch.manual_seed(seed)
        model = NeuCodecModel(NeuCodecConfig(**(config or TINY_NEUCODEC_CONFIG)))
        return cls(model.to(device), **kwargs)

    @classmethod
    def load(cls, path: str | Path, *, device="cpu", dtype: torch.dtype | None = None, **kwargs) -> NeuCodecCodec:
        """A local transformers-format NeuCodec directory (e.g. a download of ``neuphonic/neucodec``)."""
        from transformers import NeuCodecModel

        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json; expected a transformers NeuCodec checkpoint")
        extra = {"dtype": dtype} if dtype is not None else {}
        model = NeuCodecModel.from_pretrained(str(path), local_files_only=True, **extra)
        return cls(model.to(device), **kwargs)

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(str(path))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        if codes.size == 0:
            return np.zeros(0, dtype=np.float32)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model.decode(audio_codes=torch.from_numpy(codes).reshape(1, 1, -1).to(device))
        return out.audio_values.reshape(-1).float().cpu().numpy()

    def encode(self, audio: np.ndarray) -> np.ndarray:
        raise NotImplementedError(
            "NeuCodec encoding needs its feature extractor, which requires torchaudio; encode reference "
            "audio where the neucodec package is installed (NeuTTS' encode_reference) and pass the codes"
        )

    def streaming_decoder(self, window: OverlapConfig | None = None) -> OverlapStreamingDecoder:
        return OverlapStreamingDecoder(self.spec, self.decode, window or self.window)
