"""Batched (optionally steered) generation to audio files, and reading clip folders back.

Steered and unsteered audio must differ *only* by the steering: both go
through `MusicModel.generate` with the same batches and seeds, so λ = 0
reproduces the plain generation bit for bit (tested). Each batch of
`batch_size` prompts is generated with seed `seed + batch_index`: the very
function `musiclens generate` uses does the batching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import MusiclensError
from .inject import steering

AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3")


def generate_batched(model, prompts: Sequence[str], seconds: float, seed: int = 0, batch_size: int = 8,
                     guidance_scale: float = 3.0, specs: Sequence = (), branch: str = "both",
                     steps: tuple[int, int] | None = None, temperature: float = 1.0, top_k: int = 250,
                     audio_prompt=None) -> np.ndarray:
    """Audio [n, T] float32 for `prompts`, steered by `specs` (none = plain generation).

    Calls `musiclens generate`'s own batching function inside the steering
    context, so seeds, batches and sampling settings cannot drift apart.
    `audio_prompt` (mono samples at the model's rate) is continued by every
    prompt; steps count from the prefill over it (step 0).
    """
    from ..commands.generate import GenerateConfig
    from ..commands.generate import generate_batched as plain_generate

    prompts = list(prompts)
    if not prompts:
        raise MusiclensError("no prompts given")
    if batch_size < 1:
        raise MusiclensError("--batch-size must be >= 1")
    gcfg = GenerateConfig(model=model.name, seconds=seconds, seed=seed, guidance_scale=guidance_scale,
                          temperature=temperature, top_k=top_k, batch_size=batch_size)
    if specs:
        with steering(model, list(specs), branch=branch, steps=steps):
            audios = plain_generate(model, prompts, gcfg, audio_prompt)
    else:
        audios = plain_generate(model, prompts, gcfg, audio_prompt)
    audio = torch.stack([a.float().cpu() for a in audios]).numpy()
    if not np.isfinite(audio).all():
        raise MusiclensError("generation produced non-finite audio (steering strength too large?)")
    return audio


def write_clips(out_dir: str | Path, audio: np.ndarray, sr: int, prompts: Sequence[str]) -> list[str]:
    """Write clips exactly as `musiclens generate` does (same names, 16-bit WAV, atomic)."""
    from ..audio import clip_names, write_wav

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = clip_names(prompts)
    for name, y in zip(names, audio):
        write_wav(out_dir / name, y, sr)
    return names


def list_audio(folder: str | Path) -> list[Path]:
    """Audio files directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MusiclensError(f"audio folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXT and p.is_file())
    if not files:
        raise MusiclensError(f"no audio files ({', '.join(AUDIO_EXT)}) in {folder}")
    return files


def read_audio(path: str | Path, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 audio (resampled to `sr` when given)."""
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():  # librosa warns twice (soundfile failed, audioread deprecated) on the way
            warnings.simplefilter("ignore")
            y, file_sr = librosa.load(str(path), sr=sr, mono=True)
    except Exception as e:  # decoder errors come in many types
        why = str(e).splitlines()[0] if str(e) else f"not a readable audio file ({type(e).__name__})"
        raise MusiclensError(f"cannot read audio {path}: {why}")
    return y.astype(np.float32), int(file_sr)
