"""Small audio helpers shared by every stage: write clips atomically, prompt files.

Audio is float32 mono in [-1, 1] at the model's sample rate everywhere in
musiclens; files are 16-bit PCM WAV unless the user asks otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import MusiclensError
from .io import atomic_path


def write_wav(path: str | Path, audio, sample_rate: int, atomic: bool = True) -> Path:
    """Write mono audio as 16-bit WAV, atomically (temp name, fsync, rename) by default.

    `atomic=False` skips the temp file and fsync (~20 ms per file) for files written inside a
    directory that is itself built under a temporary name (`musiclens.io.atomic_dir`).
    """
    import soundfile as sf

    y = np.asarray(audio.detach().cpu() if hasattr(audio, "detach") else audio, dtype=np.float32).reshape(-1)
    y = np.clip(np.nan_to_num(y), -1.0, 1.0)
    path = Path(path)
    if not atomic:
        sf.write(str(path), y, int(sample_rate), subtype="PCM_16", format="WAV")
        return path
    with atomic_path(path, suffix=path.suffix) as tmp:
        sf.write(str(tmp), y, int(sample_rate), subtype="PCM_16", format="WAV")
    return path


def read_prompts(path: str | Path, min_count: int = 1) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are ignored."""
    p = Path(path)
    if not p.is_file():
        raise MusiclensError(f"prompt file not found: {path}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise MusiclensError(f"prompt file is not UTF-8 text: {path}")
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise MusiclensError(f"no prompts in {path} (need at least {min_count})")
    if len(prompts) < min_count:
        raise MusiclensError(f"{path}: need at least {min_count} prompt(s), found {len(prompts)}")
    return prompts


def slug(text: str, max_len: int = 40) -> str:
    """Filesystem-safe short name for a prompt."""
    s = re.sub(r"[^a-zA-Z0-9]+", "-", text.lower()).strip("-")
    return (s[:max_len].rstrip("-")) or "empty"


def clip_names(prompts: Sequence[str]) -> list[str]:
    """`000-a-slow-organ.wav`, ... : index first so names are unique and sorted."""
    return [f"{i:03d}-{slug(p)}.wav" for i, p in enumerate(prompts)]
