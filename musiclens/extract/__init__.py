"""Residual-stream extraction into an activation store.

Two ways to get activations, one store format (`musiclens.store`):

- `teacher.extract_audio`: teacher-forced passes over real audio, encoded by
  the model's own codec, fed as the exact decoder ids generation would see
  (BOS + delay pattern). Cheap (one forward per batch, stopped after the
  deepest layer) and covers whatever music you have: the default for SAEs.
- `generation.extract_generation`: the per-step residual while the model
  generates from prompts with classifier-free guidance (one CFG branch).
  What the model does on its own outputs, where steering acts.
- `prompt` (separate module): one vector per prompt, for DiffMean.

Row <-> frame mapping (both modes): the row for audio frame f is the output of
layer l at decoder position f + 1 (`MusicModel.frame_positions`): the first
position whose input holds frame f's first-codebook token. With the delay
pattern, that position's input holds codebook k of frame f - k, so the state
has read codebook 0..K-1 of frames up to f, f-1, ..., f-K+1 and predicts the
next tokens (codebook 0 of frame f+1, codebook k of frame f+1-k). In
generation this is step f + 1 (step 0 only sees BOS).

`ExtractConfig` is the one config of this stage; `run_extract(cfg)` runs it
(also under `torchrun`, where each rank takes every N-th batch of inputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..config import check_values, option
from ..errors import MusiclensError

DTYPE_CHOICES = ["float32", "bfloat16", "float16"]


@dataclass
class ExtractConfig:
    """Options of `musiclens extract` (saved as STORE/config.json)."""

    out: str = option(help="output store directory (must not exist unless --resume)", short="-o")
    model: str = option("organism", help="organism, tiny-random, tiny-random-melody, a local HF folder or a hub id")
    audio: Optional[str] = option(None, help="teacher-forced mode: folder of wav/flac/ogg/mp3, a text file "
                                             "listing audio paths, or a Hugging Face datasets folder")
    prompts: Optional[str] = option(None, help="generation mode: text file with one prompt per line")
    layers: str = option("early,25%,50%,75%,late",
                         help="layers to store: indices (2,6), depth names early,25%,50%,75%,late, or all")
    seconds: float = option(10.0, help="clip length: audio is cut/zero-padded to it; generation length", gt=0)
    min_seconds: float = option(1.0, help="skip audio files shorter than this", ge=0)
    batch_size: int = option(8, help="clips (or prompts) per forward pass", ge=1)
    device: str = option("cpu", help="cpu, cuda, cuda:1, ... (under torchrun cuda means cuda:LOCAL_RANK)")
    dtype: str = option("float32", help="model compute dtype", choices=DTYPE_CHOICES)
    store_dtype: str = option("float16", help="dtype of stored activations", choices=DTYPE_CHOICES)
    frames_per_clip: int = option(0, help="store a random subset of this many frames per clip (0 = all); "
                                          "seeded by --seed and the clip index", ge=0)
    captions: Optional[str] = option(None, help="metadata .jsonl/.csv with a caption per clip (path/file_name/id "
                                                "+ caption/text); default: empty text conditioning")
    seed: int = option(0, help="seed for generation and frame subsets")
    branch: str = option("cond", help="generation mode: CFG branch to record", choices=["cond", "uncond"])
    guidance_scale: float = option(3.0, help="generation mode: classifier-free guidance scale")
    shard_rows: int = option(16384, help="rows per store shard (shards hold whole clips)", ge=1)
    workers: int = option(2, help="audio decoding threads", ge=1)
    resume: bool = option(False, help="continue an interrupted extraction into the existing store")


def dist_setup() -> tuple[int, int]:
    """Initialise torch.distributed (gloo) under torchrun; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def resolve_device(device: str, world: int) -> str:
    """`cuda` under torchrun means this process's GPU."""
    if device == "cuda" and world > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def frame_subset(n_frames: int, k: int, seed: int, index: int) -> torch.Tensor:
    """Sorted random subset of k frames out of n (all if k <= 0 or k >= n), seeded per clip."""
    if k <= 0 or k >= n_frames:
        return torch.arange(n_frames)
    rng = np.random.default_rng([seed, index])
    return torch.from_numpy(np.sort(rng.choice(n_frames, size=k, replace=False))).long()


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def run_extract(cfg: ExtractConfig) -> dict:
    """Run teacher-forced (`cfg.audio`) or generation-time (`cfg.prompts`) extraction."""
    if bool(cfg.audio) == bool(cfg.prompts):
        raise MusiclensError("give exactly one of --audio (teacher-forced) or --prompts (generation)")
    check_values(cfg)  # the options' bounds, also for a config built in Python
    try:
        if cfg.audio:
            from .teacher import extract_audio

            return extract_audio(cfg)
        from .generation import extract_generation

        return extract_generation(cfg)
    except torch.OutOfMemoryError:
        # the store keeps every committed clip: a smaller batch can pick up where this one stopped
        raise MusiclensError(f"out of memory at --batch-size {cfg.batch_size}: rerun with a smaller "
                             f"--batch-size and --resume")


__all__ = ["ExtractConfig", "run_extract", "frame_subset"]


# ----------------------------------------------------------------- shared by both modes
def check_output(cfg: ExtractConfig) -> None:
    """Fail fast (before loading a model) when the output exists and --resume was not given."""
    from pathlib import Path

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise MusiclensError(f"output path exists and is not a directory: {out}")
    if out.is_dir() and any(out.iterdir()) and not cfg.resume:
        raise MusiclensError(f"output exists: {out} (pass --resume to continue it, or choose a new path)")


def open_model(cfg: ExtractConfig, world: int):
    """Load the model and resolve --layers (both raise one-line errors)."""
    from .. import load_model

    # float32 is the loader's default: passing None shares its cached model (tests, notebooks)
    dtype = None if cfg.dtype == "float32" else cfg.dtype
    model = load_model(cfg.model, device=resolve_device(cfg.device, world), dtype=dtype)
    layers = model.parse_layers(cfg.layers)
    limit = getattr(model.hf.config.decoder, "max_position_embeddings", None)
    if limit and model.frames_for(cfg.seconds) + model.n_codebooks > limit:
        raise MusiclensError(f"--seconds {cfg.seconds:g} is longer than {model.name}'s context "
                             f"({(limit - model.n_codebooks) / model.frame_rate:.1f} s)")
    return model, layers


def open_writer(cfg: ExtractConfig, model, layers: list[int], meta: dict):
    """Create (or reopen with --resume) the store and record config.json (rank 0)."""
    from pathlib import Path

    from ..config import save_config
    from ..store import StoreWriter

    base = {"kind": model.kind, "sample_rate": model.sample_rate, "frame_rate": model.frame_rate,
            "n_codebooks": model.n_codebooks, "seconds": cfg.seconds, "row_position": "frame + 1",
            "frames_per_clip": cfg.frames_per_clip, "seed": cfg.seed}
    base.update(meta)
    w = StoreWriter(cfg.out, model_name=model.name, weights_hash=model.weights_hash, layers=layers,
                    d_model=model.d_model, dtype=cfg.store_dtype, resume=cfg.resume, meta=base,
                    shard_rows=cfg.shard_rows)
    if w.rank == 0:
        save_config(cfg, Path(cfg.out) / "config.json")
    return w


def fixed_groups(n_items: int, batch_size: int, rank: int, world: int) -> list[tuple[int, range]]:
    """Batches fixed by input index: (group number, item indices) owned by this rank.

    Batches never depend on what is already stored or on the number of
    processes, so a resumed or multi-process run computes every clip in the very
    same batch as an uninterrupted single-process run (bit-identical rows).
    """
    groups = [(g, range(s, min(s + batch_size, n_items))) for g, s in enumerate(range(0, n_items, batch_size))]
    return groups[rank::world]
