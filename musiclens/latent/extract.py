"""Audio -> autoencoder latents (+ raw frame measurements) in the activation store format.

Why the residual-stream store: SAE training, statistics and verification
already read it, so latents are just another "model" there. A latent store is
an ordinary `musiclens.store` directory where

* store layer `i` holds site `meta["sites"][str(i)]` (`0` = `latent.encoder`,
  the continuous encoder output; `k+1` = `latent.q<k>`, codebook k's quantised
  embedding), one row per latent frame;
* `input_ids` of a clip are the codec's codes `[K, F]` (empty `[0, F]` for a VAE),
  the analogue of the decoder input ids: they recompute the quantised rows;
* extra tensor `frame_values` `[F, 4]` per clip holds the raw measurements of
  `labels.frame_values` in column order `VALUE_KEYS`, measured on the same
  audio and aligned to the frames. Class bins are fitted later, on the training
  split only, so the store itself never depends on a split.
* clip meta has `caption`, `split` (from a corpus `metadata.jsonl` when there is
  one, else a stable hash split), `source`.

Frames that only saw zero padding (a clip shorter than `seconds`) are dropped.
Extraction is resumable (`--resume` skips clips already stored).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import check_values, option
from ..errors import MusiclensError
from .autoencoders import ENCODER_SITE, load_autoencoder
from .labels import frame_values

VALUE_KEYS = ("pitch_hz", "periodicity", "rms_db", "centroid_hz")
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class LatentExtractConfig:
    """`musiclens latent extract`: audio -> latent frames + frame measurements."""

    audio: str = option(help="audio input: a folder (e.g. a rendered corpus), a list file, or a datasets folder")
    out: str = option(help="output store directory")
    autoencoder: str = option("organism", help="organism, tiny-encodec, tiny-dac, tiny-oobleck, a folder or a hub id")
    sites: list[str] = option(default_factory=lambda: [ENCODER_SITE],
                              help="sites to store: latent.encoder and/or latent.q<k> (per codebook), or 'all'")
    seconds: float = option(10.0, help="seconds of audio per clip (longer clips are cut, shorter are padded)", gt=0)
    metadata: str | None = option(None, help="corpus metadata.jsonl giving split and caption per clip "
                                             "(default: the one inside --audio when it is a folder)")
    max_clips: int | None = option(None, help="use at most this many clips (spread evenly over the input)", ge=1)
    labels: bool = option(True, help="measure pitch/loudness/timbre per frame (CREPE is the slow part)")
    crepe_model: str = option("tiny", help="CREPE capacity for pitch labels", choices=["tiny", "full"])
    batch_size: int = option(8, help="clips encoded together", ge=1)
    dtype: str = option("float32", help="store dtype", choices=["float32", "float16", "bfloat16"])
    label_cache: str | None = option(None, help="folder caching frame measurements by audio content (CREPE is "
                                                "slow; labels do not depend on the autoencoder, only on audio and hop)")
    resume: bool = option(False, help="continue an interrupted extraction in --out")
    device: str = option("cpu", help="torch device")


def corpus_table(folder: Path, name: str = "metadata.jsonl") -> dict[str, dict]:
    """metadata.jsonl rows of a rendered corpus, keyed by every name a clip goes by."""
    meta = folder / name
    table: dict[str, dict] = {}
    if not meta.exists():
        return table
    for line in meta.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MusiclensError(f"{meta}: invalid JSON line ({e})")
        for key in ("path", "id", "file_name"):
            v = row.get(key)
            if v is not None and str(v):
                table[str(v)] = row
                table[Path(str(v)).name] = row
                table[Path(str(v)).stem] = row
    return table


def hash_split(clip_id: str, test_fraction: float = 0.2) -> str:
    """Stable train/test split for inputs without a corpus split."""
    h = int(hashlib.sha256(clip_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "train"


def resolve_sites(ae, sites: list[str]) -> list[str]:
    if not sites or sites == ["all"]:
        return list(ae.sites)
    bad = [s for s in sites if s not in ae.sites]
    if bad:
        raise MusiclensError(f"{ae.name} has no site(s) {bad}; available: {', '.join(ae.sites)}, all")
    return [s for s in ae.sites if s in sites]


def extract(cfg: LatentExtractConfig, progress: bool = True) -> dict:
    """Run the extraction (see module doc); returns a summary dict."""
    from ..extract.audio import Skip, discover, load_clip
    from ..store import StoreWriter

    check_values(cfg)  # the options' bounds, also for a config built in Python
    items = discover(cfg.audio)
    if cfg.max_clips is not None and len(items) > cfg.max_clips:
        pick = np.linspace(0, len(items) - 1, cfg.max_clips).round().astype(int)
        items = [items[i] for i in sorted(set(pick.tolist()))]
    ae = load_autoencoder(cfg.autoencoder, cfg.device)
    sites = resolve_sites(ae, cfg.sites)
    layer_of = {s: ae.sites.index(s) for s in sites}
    audio_path = Path(cfg.audio)
    if cfg.metadata:
        if not Path(cfg.metadata).is_file():
            raise MusiclensError(f"metadata file not found: {cfg.metadata}")
        table = corpus_table(Path(cfg.metadata).parent, Path(cfg.metadata).name)
    else:
        table = corpus_table(audio_path) if audio_path.is_dir() else {}
    meta = {"kind": "latent", "autoencoder": ae.name, "autoencoder_kind": ae.kind,
            "sites": {str(layer_of[s]): s for s in sites}, "sample_rate": ae.sample_rate,
            "frame_rate": ae.frame_rate, "hop": ae.hop, "n_codebooks": ae.n_codebooks,
            "value_keys": list(VALUE_KEYS) if cfg.labels else [], "crepe_model": cfg.crepe_model,
            "seconds": cfg.seconds}
    n_done = n_skip = 0
    with StoreWriter(cfg.out, model_name=ae.name, weights_hash=ae.weights_hash, layers=sorted(layer_of.values()),
                     d_model=ae.dim, dtype=cfg.dtype, resume=cfg.resume, meta=meta) as w:
        done = w.done_clips()
        todo = [it for it in items if it.id not in done]
        bar = tqdm(total=len(todo), desc="latent extract", unit="clip", disable=None if progress else True)
        for b in range(0, len(todo), cfg.batch_size):
            clips = []
            for it in todo[b:b + cfg.batch_size]:
                try:
                    clips.append(load_clip(it, ae.sample_rate, cfg.seconds))
                except Skip as e:
                    w.skip(it.source, str(e))
                    n_skip += 1
                    bar.update(1)
            if not clips:
                continue
            wav = torch.from_numpy(np.stack([c.audio for c in clips]))
            acts = ae.encode(wav, sites)
            codes = None
            if ae.n_codebooks:
                z = acts[ENCODER_SITE] if ENCODER_SITE in acts else ae.latents(wav)
                codes = _codes(ae, z)
            for j, c in enumerate(clips):
                n_frames = min(c.n_valid // ae.hop, acts[sites[0]].shape[1])
                if n_frames < 1:
                    w.skip(c.item.source, "shorter than one latent frame")
                    n_skip += 1
                    bar.update(1)
                    continue
                row = table.get(c.item.id) or table.get(Path(c.item.id).name) or table.get(Path(c.item.id).stem) or {}
                split = row.get("split") or c.item.meta.get("split") or hash_split(c.item.id)
                extra = {}
                if cfg.labels:
                    v = cached_frame_values(c.audio, ae.sample_rate, ae.hop, n_frames, cfg.crepe_model, cfg.label_cache)
                    extra["frame_values"] = torch.from_numpy(np.stack([v[k] for k in VALUE_KEYS], axis=1))
                ids = codes[j, :, :n_frames] if codes is not None else torch.zeros(0, n_frames, dtype=torch.int64)
                w.add_clip(c.item.id, {layer_of[s]: acts[s][j, :n_frames] for s in sites},
                           frames=torch.arange(n_frames), input_ids=ids, index=c.item.index, extra=extra,
                           meta={"source": c.item.source, "caption": c.item.caption or row.get("caption"),
                                 "split": split, **{k: row[k] for k in ("instrument", "brightness", "register",
                                                                       "dynamics", "bpm") if k in row}})
                n_done += 1
                bar.update(1)
        bar.close()
        rows = w.rows
    return {"out": cfg.out, "clips": n_done, "skipped": n_skip, "rows": rows, "sites": sites,
            "autoencoder": ae.name, "frame_rate": ae.frame_rate}


def cached_frame_values(y: np.ndarray, sr: int, hop: int, n_frames: int, crepe_model: str,
                        cache: str | None) -> dict[str, np.ndarray]:
    """`frame_values`, memoised on disk by a hash of the audio samples and every parameter."""
    if not cache:
        return frame_values(y, sr, hop, n_frames, crepe_model)
    from ..io import atomic_path

    h = hashlib.sha256(np.ascontiguousarray(y, dtype=np.float32).tobytes())
    # v2: pitch read through exact CREPE bin centres (measure.pitch), not a per-process dithered table
    h.update(f"{sr}/{hop}/{n_frames}/{crepe_model}/v2".encode())
    path = Path(cache) / f"{h.hexdigest()[:32]}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in VALUE_KEYS}
        except Exception:  # a damaged cache entry is recomputed
            pass
    v = frame_values(y, sr, hop, n_frames, crepe_model)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **v)
    return v


@torch.no_grad()
def _codes(ae, z: torch.Tensor) -> torch.Tensor:
    """Codes [B, K, F] of continuous latents z [B, F, D]."""
    zt = z.transpose(1, 2)
    if ae.kind == "encodec":
        return ae.model.quantizer.encode(zt, ae.bandwidth).transpose(0, 1).contiguous()
    return ae.model.quantizer(zt)[1]
