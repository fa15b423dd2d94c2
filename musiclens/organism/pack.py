"""A size-capped, compressed copy of the corpus, to train the codec on a machine that cannot render it.

Why: the GPU machines lent to this project (see docs/organism.md, "Training
the codec on a lent GPU") have no FluidSynth, no soundfont and no network,
and a call there carries at most 64 MiB, of which the repository already
takes about half. The rendered corpus is 1.3 GB of 16-bit wav (FLAC: 80 KiB
per 6.4-s clip). Ogg Opus at compression 0.8 keeps a 6.4-s clip in 45 KiB
and, by the tagger, its instrument (97.8 % of test clips against 98.0 % for
the wav; `bench/pack.py`), so about 550 clips fit one call. The codec needs only audio, not
captions or codes.

The pack is a corpus folder like any other (`audio/` + `metadata.jsonl`,
the same ids, factors and splits), so `musiclens organism train --corpus
PACK --stage codec` reads it unchanged. Train clips are drawn in a seeded
random order, so the subset spans the factors as the whole split does; the
first `--valid` valid clips come along for the held-out loss.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import option, to_dict
from ..errors import MusiclensError

FORMATS = {"opus": ("OGG", "OPUS", ".ogg"), "vorbis": ("OGG", "VORBIS", ".ogg"), "flac": ("FLAC", "PCM_16", ".flac")}


@dataclasses.dataclass
class PackConfig:
    """Options of `musiclens organism pack`."""

    corpus: str = option("data/corpus", "rendered corpus to pack")
    out: str = option("", "output corpus folder (must not exist)")
    max_mb: float = option(24.0, "stop adding clips once the audio reaches this many MiB (24: a first shard "
                                 "travels beside 35 MiB of tracked files and 2.3 MiB of wheels, under 64 MiB)")
    seconds: float = option(6.4, "keep each clip's first S seconds (the length the LM trains on)")
    splits: str = option("train", "comma-separated splits whose clips are packed (in a seeded random order)")
    valid: int = option(16, "also pack the first N valid clips (the codec's held-out loss reads 16)")
    format: str = option("opus", "audio format", choices=sorted(FORMATS))
    compression: float = option(0.8, "libsndfile compression level, 0 (best quality) to 1 (smallest); opus at 0.8: "
                                     "45 KiB a 6.4-s clip, on which the tagger names the instrument of 97.8 % "
                                     "of test clips, against 98.0 % on the wav (docs/organism.md)")
    skip: int = option(0, "skip the first N clips of the order: the next shard of a pack sent in several calls "
                          "(give it --valid 0)")
    seed: int = option(0, "seed of the clip order")


def pack(cfg: PackConfig, progress: bool = True) -> dict:
    """Write the pack; returns its summary (also saved as OUT/pack.json)."""
    import soundfile as sf

    from ..corpus.render import load_metadata
    from ..io import atomic_dir, write_json

    if not cfg.out:
        raise MusiclensError("--out is required")
    if cfg.max_mb <= 0 or cfg.seconds <= 0 or cfg.valid < 0 or cfg.skip < 0 or not 0 <= cfg.compression <= 1:
        raise MusiclensError("--max-mb and --seconds must be positive, --valid and --skip >= 0, --compression in [0, 1]")
    corpus, out = Path(cfg.corpus), Path(cfg.out)
    if out.exists():
        raise MusiclensError(f"output exists: {out}")
    fmt, subtype, ext = FORMATS[cfg.format]
    rows = load_metadata(corpus)
    splits = [s.strip() for s in cfg.splits.split(",") if s.strip()]
    pool = [r for r in rows if r.get("split") in splits]
    if not pool:
        raise MusiclensError(f"no clips of split(s) {splits} in {corpus}")
    order = [pool[i] for i in np.random.default_rng(cfg.seed).permutation(len(pool))][cfg.skip:]
    if not order:
        raise MusiclensError(f"--skip {cfg.skip} leaves no clip of the {len(pool)} in {splits}")
    extra = [r for r in rows if r.get("split") == "valid" and "valid" not in splits][: cfg.valid]
    budget = int(cfg.max_mb * 2**20)
    written, used = [], 0
    with atomic_dir(out) as tmp:
        (tmp / "audio").mkdir()
        bar = tqdm(total=budget, unit="B", unit_scale=True, desc="pack", disable=None if progress else True)
        for r in extra + order:
            y, sr = sf.read(corpus / r["path"], dtype="float32", always_2d=True)
            y = y.mean(axis=1)[: int(round(cfg.seconds * sr))]
            path = f"audio/{r['id']}{ext}"
            sf.write(tmp / path, y, sr, format=fmt, subtype=subtype, compression_level=cfg.compression)
            size = (tmp / path).stat().st_size
            if used + size > budget and r.get("split") in splits:
                (tmp / path).unlink()
                break
            used += size
            bar.update(size)
            written.append({**r, "path": path, "seconds": round(len(y) / sr, 3)})
        bar.close()
        if not any(r.get("split") in splits for r in written):
            raise MusiclensError(f"--max-mb {cfg.max_mb} holds no clip of {splits}")
        (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in written))
        counts = {s: sum(r.get("split") == s for r in written) for s in sorted({r.get("split") for r in written})}
        summary = {"corpus": str(corpus), "clips": len(written), "per_split": counts, "of_pool": len(pool),
                   "mib": round(used / 2**20, 2), "kib_per_clip": round(used / 1024 / len(written), 1),
                   "format": cfg.format, "seconds": cfg.seconds, "config": to_dict(cfg),
                   # where the next shard starts: --skip counts clips of the packed splits only
                   "next_skip": cfg.skip + sum(r.get("split") in splits for r in written)}
        if (corpus / "config.json").exists():  # the render config, for tools that read the factors' levels
            shutil.copy(corpus / "config.json", tmp / "config.json")
        write_json(tmp / "pack.json", summary)
    return summary


def set_export_dtype(folder: str | Path, dtype: str) -> int:
    """Rewrite an HF export's `model.safetensors` with its floating tensors in `dtype` ("float16" or "float32").

    Why: what comes back from a lent GPU call is capped (16 MiB a file, 64 MiB a call), and a
    32-filter codec is 40 MiB of float32. Halved for the trip and widened again here, it is the
    float16-rounded codec from then on: every code and figure is made from the widened copy, so
    nothing downstream sees two versions. Returns the number of tensors converted.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from ..io import atomic_path

    target = {"float16": torch.float16, "float32": torch.float32}.get(dtype)
    if target is None:
        raise MusiclensError(f"dtype must be float16 or float32, not {dtype!r}")
    path = Path(folder) / "model.safetensors"
    if not path.exists():
        raise MusiclensError(f"no model.safetensors in {folder}")
    state = load_file(str(path))
    n = 0
    for k, v in state.items():
        if v.is_floating_point() and v.dtype != target:
            state[k] = v.to(target).contiguous()
            n += 1
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    return n
