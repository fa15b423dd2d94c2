"""Reading the rendered corpus for organism training.

Training reads every clip many times, so clips are decoded once into memory
as int16 (10 s at 16 kHz = 320 kB a clip; 4000 clips ~ 1.3 GB) and random
crops are cut from that. The reader tolerates a corpus that is still being
rendered: it skips a half-written last metadata line and clips whose audio is
not there yet, so codec training can start on what exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MusiclensError


def read_metadata(corpus: str | Path) -> list[dict]:
    """Clips of a corpus directory whose audio exists (partial corpora allowed)."""
    corpus = Path(corpus)
    meta = corpus / "metadata.jsonl"
    if not meta.exists():
        if (corpus / "config.json").exists():
            return _planned_rows(corpus)
        raise MusiclensError(f"not a corpus directory (no metadata.jsonl): {corpus}")
    rows = []
    for line in meta.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written
        if isinstance(row, dict) and "path" in row and (corpus / row["path"]).exists():
            rows.append(row)
    if not rows:
        raise MusiclensError(f"the corpus has no clips yet: {corpus}")
    return rows


def _planned_rows(corpus: Path) -> list[dict]:
    """Records of a corpus still being rendered: its plan is deterministic, so recompute it.

    `musiclens corpus render` writes metadata.jsonl only at the end; every
    clip's record depends only on the saved config, so the rendered subset can
    be used (e.g. to start codec training) before the corpus is complete.
    """
    from ..config import load_config
    from ..corpus import CorpusConfig, plan_corpus

    try:
        cfg = load_config(CorpusConfig, corpus / "config.json")
    except MusiclensError as e:  # another tool's folder (a store, a run) also has a config.json
        raise MusiclensError(f"not a corpus directory (no metadata.jsonl, and its config.json is not a "
                             f"`musiclens corpus render` config): {corpus}") from e
    records, _ = plan_corpus(cfg)
    rows = [rec for rec, _ in records if (corpus / rec["path"]).exists()]
    if not rows:
        raise MusiclensError(f"the corpus has no clips yet: {corpus}")
    return rows


@dataclass
class ClipSet:
    """Clips of one split held in memory: int16 audio, metadata rows."""

    rows: list[dict]
    audio: list[np.ndarray]  # int16, one array per clip
    sample_rate: int

    def __len__(self) -> int:
        return len(self.rows)

    def wav(self, i: int) -> np.ndarray:
        """Clip i as float32 in [-1, 1]."""
        return self.audio[i].astype(np.float32) / 32768.0

    def random_crops(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
        """`batch` random crops of `length` samples (float32 [batch, length]); short clips are zero-padded."""
        out = np.zeros((batch, length), dtype=np.float32)
        idx = rng.integers(0, len(self.audio), size=batch)
        for b, i in enumerate(idx):
            a = self.audio[i]
            if len(a) <= length:
                out[b, : len(a)] = a / 32768.0
            else:
                s = int(rng.integers(0, len(a) - length + 1))
                out[b] = a[s: s + length] / 32768.0
        return out


def load_clips(corpus: str | Path, splits: tuple[str, ...], sample_rate: int, limit: int | None = None,
               rows: list[dict] | None = None) -> ClipSet:
    """Decode the clips of `splits` (16-bit PCM wav) into memory."""
    import soundfile as sf

    corpus = Path(corpus)
    rows = rows if rows is not None else read_metadata(corpus)
    rows = [r for r in rows if r.get("split") in splits]
    if limit is not None:
        rows = rows[:limit]
    audio = []
    kept = []
    for r in rows:
        try:
            a, sr = sf.read(corpus / r["path"], dtype="int16", always_2d=True)
        except Exception:
            continue  # still being written
        if sr != sample_rate:
            raise MusiclensError(f"{r['path']}: sample rate {sr}, the organism needs {sample_rate}")
        audio.append(np.ascontiguousarray(a.mean(axis=1).astype(np.int16) if a.shape[1] > 1 else a[:, 0]))
        kept.append(r)
    return ClipSet(kept, audio, sample_rate)
