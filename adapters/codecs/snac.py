"""SNAC (multi-scale neural audio codec, ``pip install snac``) as a voicestream :class:`Codec`.

SNAC quantises audio with codebooks at several temporal resolutions.  For the 24 kHz model
(Orpheus' codec) the three codebooks run at 12, 23 and 47 Hz, so one *frame* here is one
coarse step: 1 + 2 + 4 = 7 codes covering ``hop_length * vq_strides[0]`` = 2048 samples
(85.3 ms).  Within a frame the slots are in natural order -- codebook 0, then codebook 1's
two steps, then codebook 2's four -- and a family adapter maps its own interleave onto them.

The decoder is a stateless stack of convolutions (no attention at 24 kHz), so streaming
re-decodes a window of frames (:class:`OverlapStreamingDecoder`).  Measured receptive
field of the 24 kHz geometry: 3 frames each side, hence :data:`EXACT_WINDOW_24KHZ`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from voicestream.codec.base import Codec, CodecSpec
from voicestream.codec.streaming import OverlapConfig, OverlapStreamingDecoder

__all__ = ["EXACT_WINDOW_24KHZ", "SNAC_24KHZ_CONFIG", "SnacCodec"]

# hubertsiuzdak/snac_24khz config.json: hop 2*4*8*8 = 512, codebooks of 4096 at strides 4/2/1
SNAC_24KHZ_CONFIG: dict = {
    "sampling_rate": 24000,
    "encoder_dim": 48,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 1024,
    "decoder_rates": [8, 8, 4, 2],
    "attn_window_size": None,
    "codebook_size": 4096,
    "codebook_dim": 8,
    "vq_strides": [4, 2, 1],
    "noise": True,
    "depthwise": True,
}

# chunked decode equals whole decode (to float rounding) with 3 frames of left context and
# 3 of lookahead; fewer frames trade exactness for latency (see the Orpheus adapter)
EXACT_WINDOW_24KHZ = OverlapConfig(context_frames=3, lookahead_frames=3, crossfade_samples=0)


def _snac_class():
    try:
        from snac import SNAC
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the SNAC codec needs the 'snac' package: pip install 'voicestream[orpheus]'") from exc
    return SNAC


class SnacCodec(Codec):
    """A SNAC model (any sampling rate) with a frame = one step of the coarsest codebook.

    ``noise``: SNAC's decoder injects fresh Gaussian noise (``NoiseBlock``) on every call;
    ``noise=False`` skips those blocks, which makes decoding deterministic (tests,
    chunked-vs-whole comparisons).  ``window`` is the default streaming geometry.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        config: dict | None = None,
        window: OverlapConfig | None = None,
        noise: bool = True,
    ) -> None:
        self.model = model.eval()
        self.config = dict(config) if config is not None else None  # SNAC(**config), kept for save()
        strides = [int(s) for s in model.vq_strides]
        if any(strides[0] % s for s in strides):
            raise ValueError(f"vq_strides {strides} must divide the coarsest stride")
        self.steps_per_frame = tuple(strides[0] // s for s in strides)  # codes per codebook per frame
        slots = tuple(cb for cb, k in enumerate(self.steps_per_frame) for _ in range(k))
        self.spec = CodecSpec(
            name=f"snac-{int(model.sampling_rate) // 1000}khz",
            sample_rate=int(model.sampling_rate),
            samples_per_frame=int(model.hop_length) * strides[0],
            codebook_sizes=(int(model.codebook_size),) * len(strides),
            slot_codebooks=slots,
        )
        self.window = window or EXACT_WINDOW_24KHZ
        self.noise = noise
        self._hooks = [] if noise else self._silence_noise()

    # ----- construction ------------------------------------------------------------
    @classmethod
    def random(cls, config: dict | None = None, *, seed: int = 0, device="cpu", **kwargs) -> SnacCodec:
        """Random weights, real architecture (``config`` defaults to the 24 kHz one)."""
        config = dict(config or SNAC_24KHZ_CONFIG)
        torch.manual_seed(seed)
        model = _snac_class()(**config)
        return cls(model.to(device), config=config, **kwargs)

    @classmethod
    def load(cls, path: str | Path, *, device="cpu", dtype: torch.dtype | None = None, **kwargs) -> SnacCodec:
        """A local SNAC directory: ``config.json`` + ``pytorch_model.bin`` (or ``model.safetensors``).

        Local only, like :func:`voicestream.models.load_causal_lm`; fetch it once with
        ``huggingface-cli download hubertsiuzdak/snac_24khz --local-dir DIR``.
        """
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json; expected a SNAC model directory")
        config = json.loads((path / "config.json").read_text())
        model = _snac_class()(**config)
        if (path / "model.safetensors").exists():
            from safetensors.torch import load_file

            state = load_file(str(path / "model.safetensors"))
        elif (path / "pytorch_model.bin").exists():
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"{path} has neither model.safetensors nor pytorch_model.bin")
        model.load_state_dict(state)
        if dtype is not None:
            model = model.to(dtype)
        return cls(model.to(device), config=config, **kwargs)

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` + ``pytorch_model.bin`` (the layout :meth:`load` and SNAC read)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.config is None:
            raise ValueError("this SnacCodec was built from a bare model; pass config= to save it")
        (path / "config.json").write_text(json.dumps(self.config, indent=2))
        torch.save(self.model.state_dict(), path / "pytorch_model.bin")

    def _silence_noise(self) -> list:
        # NoiseBlock(x) = x + randn * linear(x): returning the input skips the random term
        return [
            module.register_forward_hook(lambda _mod, args, _out: args[0])
            for module in self.model.modules()
            if type(module).__name__ == "NoiseBlock"
        ]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ----- frames <-> SNAC's per-codebook tensors ------------------------------------
    def codes_to_snac(self, codes: np.ndarray) -> list[torch.Tensor]:
        """``(frames, 7)`` -> ``[c0 (1, F), c1 (1, 2F), c2 (1, 4F)]`` (24 kHz case)."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != self.spec.tokens_per_frame:
            raise ValueError(f"codes must have shape (frames, {self.spec.tokens_per_frame}), got {codes.shape}")
        out, start = [], 0
        for k in self.steps_per_frame:
            out.append(torch.from_numpy(np.ascontiguousarray(codes[:, start : start + k])).reshape(1, -1))
            start += k
        return [c.to(self.device) for c in out]

    def snac_to_codes(self, per_codebook: list[torch.Tensor]) -> np.ndarray:
        """Inverse of :meth:`codes_to_snac`."""
        frames = int(per_codebook[0].shape[-1])
        cols = [
            c.reshape(-1).cpu().numpy().astype(np.int64)[: frames * k].reshape(frames, k)
            for c, k in zip(per_codebook, self.steps_per_frame)
        ]
        return np.concatenate(cols, axis=1)

    # ----- Codec --------------------------------------------------------------------
    def decode(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if len(codes) == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            audio = self.model.decode(self.codes_to_snac(codes))
        return audio.reshape(-1).float().cpu().numpy()

    def encode(self, audio: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(1, 1, -1)
        param = next(self.model.parameters())
        with torch.inference_mode():
            codes = self.model.encode(x.to(param.device, param.dtype))
        return self.snac_to_codes(codes)

    def streaming_decoder(self, window: OverlapConfig | None = None) -> OverlapStreamingDecoder:
        return OverlapStreamingDecoder(self.spec, self.decode, window or self.window)
