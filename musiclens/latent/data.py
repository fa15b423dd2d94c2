"""Read a latent store back as in-memory arrays (latents, frame values, splits).

Latent stores are small next to residual-stream stores (a codec latent is
64-128 wide at 50 frames/s: an hour of audio is 180k rows, ~90 MB in
float32), so probes and the SAE grid work on whole arrays in memory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..errors import MusiclensError
from .autoencoders import ENCODER_SITE
from .extract import VALUE_KEYS


@dataclasses.dataclass
class LatentFrames:
    """Every row of one site of a latent store, with its clip's split and its frame measurements."""

    x: torch.Tensor            # [N, D] float32 latents
    values: dict | None        # key -> np.ndarray [N] (VALUE_KEYS), None if the store has no labels
    clip: np.ndarray           # [N] clip index
    frame: np.ndarray          # [N] frame within the clip
    split: np.ndarray          # [N] str: train / valid / test
    site: str
    meta: dict                 # the store's meta (autoencoder, frame_rate, ...)
    model_name: str
    weights_hash: str

    def select(self, mask: np.ndarray) -> "LatentFrames":
        m = np.asarray(mask, dtype=bool)
        vals = None if self.values is None else {k: v[m] for k, v in self.values.items()}
        return dataclasses.replace(self, x=self.x[torch.from_numpy(m)], values=vals, clip=self.clip[m],
                                   frame=self.frame[m], split=self.split[m])

    def train_test(self) -> tuple["LatentFrames", "LatentFrames"]:
        """Training rows (split train/valid) and held-out rows (split test); errors if either is empty."""
        test = self.split == "test"
        if not test.any() or test.all():
            raise MusiclensError("the store needs clips in both the training and the test split "
                                 f"(found splits: {sorted(set(self.split.tolist()))})")
        return self.select(~test), self.select(test)


def site_layer(meta: dict, site: str) -> int:
    sites = meta.get("sites") or {}
    for k, v in sites.items():
        if v == site:
            return int(k)
    raise MusiclensError(f"site {site!r} is not in this latent store (sites: {', '.join(sites.values()) or 'none'})")


def load_frames(path: str | Path, site: str = ENCODER_SITE) -> LatentFrames:
    """Load one site of a latent store (written by `latent extract`)."""
    from ..store import ActivationStore

    path = Path(path)
    if not path.is_dir():
        raise MusiclensError(f"latent store not found: {path}")
    store = ActivationStore(path)
    meta = store.meta
    if meta.get("kind") != "latent":
        raise MusiclensError(f"{path} is not a latent store (it was not written by `musiclens latent extract`)")
    layer = site_layer(meta, site)
    if store.rows == 0:
        raise MusiclensError(f"{path} holds no rows")
    x = store.read(layer, slice(0, store.rows)).float()
    clip = store.clip_column(slice(0, store.rows)).numpy()
    frame = store.frame_column(slice(0, store.rows)).numpy()
    split_of = {c["index"]: (c.get("meta") or {}).get("split", "train") for c in store.clips}
    split = np.array([split_of[int(i)] for i in clip])
    values = None
    if meta.get("value_keys"):
        v = np.full((store.rows, len(VALUE_KEYS)), np.nan, dtype=np.float32)
        for c in store.clips:
            r = store.clip_rows(c["index"])
            fv = store.extra(c["index"], "frame_values").numpy()
            if fv.shape[0] != len(r):
                raise MusiclensError(f"{path}: clip {c['index']} has {fv.shape[0]} frame values for {len(r)} rows")
            v[r.start:r.stop] = fv
        values = {k: v[:, i] for i, k in enumerate(VALUE_KEYS)}
    return LatentFrames(x=x, values=values, clip=clip, frame=frame, split=split, site=site, meta=meta,
                        model_name=store.model_name, weights_hash=store.manifest.get("weights_hash", ""))
