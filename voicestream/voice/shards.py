"""Corpus storage: utterances in ``.npz`` shards plus a ``manifest.json``.

Why this format: numpy only (no extra dependency at training time), ragged arrays stored
as one concatenated array + offsets (compact and fast to load), and one shard per file
written atomically so an interrupted build resumes by skipping finished shards.

A shard ``{split}-{index:05d}.npz`` holds::

    tokens        int16  all utterances' flat codec tokens, concatenated
    offsets       int64  (n + 1,) token offsets per utterance
    unit_frames   int32  all utterances' frames-per-unit, concatenated (words layout)
    unit_offsets  int64  (n + 1,) offsets into unit_frames (equal = no alignment)
    meta          str    JSON list, one dict per utterance: id, text, norm, units,
                         synth (Piper settings), phonemes ([[phoneme, samples], ...])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MANIFEST", "Corpus", "Utterance", "read_shard", "shard_name", "write_manifest", "write_shard"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class Utterance:
    """One corpus item: normalised text, codec tokens, optional unit alignment."""

    id: str
    text: str  # as generated
    norm: str  # normalised (what the LM sees)
    tokens: np.ndarray  # int16/int64 flat codec ids, whole frames
    units: list[str] | None = None  # words layout: text pieces joined by " " == norm
    unit_frames: list[int] | None = None
    meta: dict = field(default_factory=dict)  # synth settings, phoneme durations, ...

    @property
    def has_units(self) -> bool:
        return bool(self.units) and self.unit_frames is not None and len(self.units) == len(self.unit_frames)


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.npz"


def write_shard(path: str | Path, utts: Sequence[Utterance]) -> None:
    """Write utterances atomically (temp file + rename)."""
    path = Path(path)
    lengths = [int(np.asarray(u.tokens).size) for u in utts]
    tokens = np.concatenate([np.asarray(u.tokens, dtype=np.int16).reshape(-1) for u in utts]) if utts else np.zeros(0, np.int16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    uf = [list(u.unit_frames) if u.has_units else [] for u in utts]
    unit_frames = np.asarray([f for fs in uf for f in fs], dtype=np.int32)
    unit_offsets = np.concatenate([[0], np.cumsum([len(fs) for fs in uf])]).astype(np.int64)
    meta = [
        {"id": u.id, "text": u.text, "norm": u.norm, "units": u.units if u.has_units else None, **u.meta}
        for u in utts
    ]
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        tokens=tokens,
        offsets=offsets,
        unit_frames=unit_frames,
        unit_offsets=unit_offsets,
        meta=np.asarray(json.dumps(meta)),
    )
    os.replace(tmp, path)


def read_shard(path: str | Path) -> list[Utterance]:
    with np.load(path, allow_pickle=False) as z:
        tokens, offsets = z["tokens"], z["offsets"]
        unit_frames, unit_offsets = z["unit_frames"], z["unit_offsets"]
        meta = json.loads(str(z["meta"]))
    out = []
    for i, m in enumerate(meta):
        m = dict(m)
        uid, text, norm, units = m.pop("id"), m.pop("text"), m.pop("norm"), m.pop("units", None)
        uf = unit_frames[unit_offsets[i] : unit_offsets[i + 1]].tolist()
        out.append(
            Utterance(
                id=uid,
                text=text,
                norm=norm,
                tokens=tokens[offsets[i] : offsets[i + 1]].astype(np.int64),
                units=units,
                unit_frames=uf if units else None,
                meta=m,
            )
        )
    return out


def write_manifest(directory: str | Path, manifest: dict) -> None:
    directory = Path(directory)
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, directory / MANIFEST)


class Corpus:
    """Read access to a built corpus directory."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        path = self.dir / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{self.dir} has no {MANIFEST}; build it with python -m voicestream.voice.corpus")
        self.manifest = json.loads(path.read_text())

    @property
    def splits(self) -> list[str]:
        return sorted({s["split"] for s in self.manifest["shards"]})

    def shard_paths(self, split: str) -> list[Path]:
        return [self.dir / s["name"] for s in self.manifest["shards"] if s["split"] == split]

    def utterances(self, split: str = "train") -> list[Utterance]:
        out: list[Utterance] = []
        for p in self.shard_paths(split):
            out.extend(read_shard(p))
        return out
