"""SAE grid on autoencoder latents (RMSNorm-L1) + linear probes per grid cell.

The paper sweeps the SAE's hidden width (4x..256x the latent width) and the
L1 coefficient (0.005..0.15) and reports, per cell, how sparse the features
are and how well linear probes read pitch / loudness / timbre from them. All
SAEs of the grid train together on the same batches through
`musiclens.sae.train.MultiTrainer` (one pass over the data, not one per
cell). Then every cell gets its own probes, and a baseline probe is fitted on
the raw latents (cell `latent`), so one sees what the SAE adds or loses.

Output directory (written atomically as a whole):

    config.json           the LatentTrainConfig
    bins.json             label classes (loudness/timbre edges fitted on the training split)
    grid.json             one entry per cell: expansion, l1, d_sae, sparsity, l0, fvu, probe accuracies
    cells/<name>/         SAE (cfg.json, sae_weights.safetensors, metrics.json) + probes
    cells/latent/         probes on the raw latents (no SAE)
    grid.png              sparsity and probe accuracy per cell
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import check_values, option, save_config
from ..errors import MusiclensError
from ..io import atomic_dir, write_json
from .autoencoders import ENCODER_SITE
from .data import load_frames
from .labels import LabelBins
from .probes import ProbeOptions, fit_probes

PAPER = {"pitch": [0.75, 0.87], "loudness": [0.17, 0.63], "timbre": [0.17, 0.46]}


@dataclasses.dataclass
class LatentTrainConfig:
    """`musiclens latent train`: RMSNorm-L1 SAE grid on a latent store, then probes per cell."""

    store: str = option(help="latent store written by `musiclens latent extract`")
    out: str = option(help="output directory")
    site: str = option(ENCODER_SITE, help="store site to train on (latent.encoder or latent.q<k>)")
    expansions: list[int] = option(default_factory=lambda: [4, 16, 64],
                                   help="SAE widths as multiples of the latent width (the paper: 4..256)", ge=1)
    l1: list[float] = option(default_factory=lambda: [0.005, 0.03, 0.15],
                             help="L1 coefficients (the paper: 0.005..0.15)", ge=0)
    steps: int = option(2000, help="SAE optimizer steps (all cells train on the same batches)", ge=1)
    batch_size: int = option(1024, help="SAE batch size (rows)", ge=1)
    lr: float = option(0.0, help="SAE learning rate (0 = 2e-4/sqrt(d_sae/16384), per cell)", ge=0)
    probe_epochs: int = option(8, help="probe training epochs", ge=1)
    probe_min_steps: int = option(400, help="at least this many probe optimizer steps (small stores)", ge=0)
    probe_lr: float = option(1e-2, help="probe learning rate (Adam, one-cycle)", gt=0)
    max_train_rows: int | None = option(None, help="subsample training frames to at most this many", ge=1)
    seed: int = option(0, help="random seed")
    overwrite: bool = option(False, help="replace an existing --out")


def labels_for(frames, bins: LabelBins) -> dict[str, np.ndarray]:
    if frames.values is None:
        raise MusiclensError("the latent store has no frame values: re-extract without --no-labels")
    return bins.classes(frames.values)


def _feature_fn(sae):
    def f(x: torch.Tensor) -> torch.Tensor:
        return sae.encode(x)
    return f


@torch.no_grad()
def sae_metrics(sae, x: torch.Tensor, batch: int = 4096) -> dict:
    """Sparsity (fraction of zero latents), L0, FVU (normalised and raw units) on rows x."""
    zeros = nz = 0
    err_n = var_n = err_raw = 0.0
    xs_n = []
    n = x.shape[0]
    for s in range(0, n, batch):
        xb = x[s:s + batch]
        xn, stats = sae.normalize(xb)
        h = sae.encode_normalized(xn)
        rec_n = sae.decode(h)
        nz += int((h > 0).sum())
        zeros += int((h <= 0).sum())
        err_n += float((xn - rec_n).pow(2).sum())
        err_raw += float((xb - sae.denormalize(rec_n, stats)).pow(2).sum())
        xs_n.append(xn)
    xn_all = torch.cat(xs_n)
    var_n = float((xn_all - xn_all.mean(0)).pow(2).sum())
    var_raw = float((x - x.mean(0)).pow(2).sum())
    return {"sparsity": zeros / max(1, zeros + nz), "l0": nz / max(1, n),
            "fvu": err_n / max(var_n, 1e-12), "fvu_raw": err_raw / max(var_raw, 1e-12),
            "rel_error": (err_raw / max(float(x.pow(2).sum()), 1e-12)) ** 0.5}


def train_grid(cfg: LatentTrainConfig, progress: bool = True) -> dict:
    """Run the grid (module doc); returns grid.json's content."""
    from ..sae.data import BadRowCounter, tensor_batches
    from ..sae.io import write_sae_files
    from ..sae.train import MultiTrainer, TrainOptions, compute_init, make_combos, run_steps

    check_values(cfg)  # the options' bounds, also for a config built in Python
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (pass --overwrite to replace it)")
    frames = load_frames(cfg.store, cfg.site)
    train, test = frames.train_test()
    if cfg.max_train_rows and train.x.shape[0] > cfg.max_train_rows:
        rng = np.random.default_rng(cfg.seed)
        keep = np.zeros(train.x.shape[0], dtype=bool)
        keep[rng.choice(train.x.shape[0], cfg.max_train_rows, replace=False)] = True
        train = train.select(keep)
    if train.values is None:
        raise MusiclensError("the latent store has no frame values: re-extract it with labels")
    bins = LabelBins.fit(train.values)
    y_tr, y_te = bins.classes(train.values), bins.classes(test.values)
    d_in = frames.x.shape[1]
    combos = make_combos("rmsnorm_l1", cfg.expansions, [], cfg.l1, d_in)
    torch.manual_seed(cfg.seed)
    bs = min(cfg.batch_size, train.x.shape[0])
    batches = tensor_batches(train.x, bs, seed=cfg.seed)
    sample = train.x[torch.randperm(train.x.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:20000]]
    inits = {"rms": compute_init(sample, "rmsnorm_l1")}
    opts = TrainOptions(batch_size=bs, lr=cfg.lr, warmup_steps=min(200, cfg.steps // 10),
                        dead_tokens=max(10 * bs, 50_000), seed=cfg.seed)
    trainer = MultiTrainer(combos, d_in, inits, opts, cfg.steps, hook_name=cfg.site, model_name=frames.model_name)
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc=f"SAE grid ({len(combos)} cells)", unit="step", disable=None if progress else True)
    run_steps(trainer, batches, BadRowCounter(), progress=bar)
    bar.close()
    sae_seconds = time.perf_counter() - t0
    popts = ProbeOptions(epochs=cfg.probe_epochs, lr=cfg.probe_lr, seed=cfg.seed, min_steps=cfg.probe_min_steps)
    cells = []
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        save_config(cfg, tmp / "config.json")
        write_json(tmp / "bins.json", bins.to_dict())
        # baseline: probes on the raw latents
        t1 = time.perf_counter()
        pr = fit_probes(lambda x: x, train.x, y_tr, test.x, y_te, bins, popts, desc="probes latent", progress=progress)
        pr.info.update({"cell": "latent", "store": str(cfg.store), "site": cfg.site})
        pr.save(tmp / "cells" / "latent")
        cells.append({"name": "latent", "expansion": None, "l1": None, "d_sae": None, "sparsity": None,
                      **{f"{a}_accuracy": pr.info["attributes"][a]["test_accuracy"] for a in pr.attributes},
                      "probe_seconds": round(time.perf_counter() - t1, 1)})
        for i, c in enumerate(combos):
            sae = trainer.folded_sae(i)
            m_test = sae_metrics(sae, test.x)
            m_train = sae_metrics(sae, train.x[:20000])
            cdir = tmp / "cells" / c.name
            write_sae_files(sae, cdir, {"latent_store": str(cfg.store), "autoencoder": frames.meta.get("autoencoder"),
                                        "frame_rate": frames.meta.get("frame_rate")})
            write_json(cdir / "metrics.json", {"test": m_test, "train": m_train, "steps": cfg.steps,
                                               "rows_seen": trainer.rows_seen})
            t1 = time.perf_counter()
            pr = fit_probes(_feature_fn(sae), train.x, y_tr, test.x, y_te, bins, popts, desc=f"probes {c.name}",
                            progress=progress)
            pr.info.update({"cell": c.name, "store": str(cfg.store), "site": cfg.site, "sae": c.name})
            pr.save(cdir)
            cells.append({"name": c.name, "expansion": c.expansion, "l1": c.l1, "d_sae": sae.d_sae,
                          "sparsity": m_test["sparsity"], "l0": m_test["l0"], "fvu": m_test["fvu"],
                          "rel_error": m_test["rel_error"],
                          **{f"{a}_accuracy": pr.info["attributes"][a]["test_accuracy"] for a in pr.attributes},
                          "probe_seconds": round(time.perf_counter() - t1, 1)})
        chance = {a: pr.info["attributes"][a]["chance_accuracy"] for a in pr.attributes}
        result = {"store": str(cfg.store), "site": cfg.site, "autoencoder": frames.meta.get("autoencoder"),
                  "d_latent": d_in, "train_frames": int(train.x.shape[0]), "test_frames": int(test.x.shape[0]),
                  "train_clips": int(len(set(train.clip.tolist()))), "test_clips": int(len(set(test.clip.tolist()))),
                  "sae_seconds": round(sae_seconds, 1), "chance_accuracy": chance, "paper_accuracy": PAPER,
                  "cells": cells}
        write_json(tmp / "grid.json", result)
        try:
            from .plots import plot_grid

            plot_grid(result, tmp / "grid.png")
        except ImportError:  # matplotlib missing: the numbers are in grid.json
            pass
    return result


@dataclasses.dataclass
class LatentProbeConfig:
    """`musiclens latent probe`: fit probes from one SAE's features (or the raw latents) on a latent store."""

    store: str = option(help="latent store written by `musiclens latent extract`")
    out: str = option(help="output directory (probes + bins; a copy of the SAE so it is a complete cell)")
    sae: str | None = option(None, help="SAE directory (e.g. from `musiclens train-sae`); omit for raw latents")
    site: str = option(ENCODER_SITE, help="store site")
    epochs: int = option(8, help="probe training epochs", ge=1)
    lr: float = option(1e-2, help="probe learning rate", gt=0)
    seed: int = option(0, help="random seed")
    overwrite: bool = option(False, help="replace an existing --out")


def probe_only(cfg: LatentProbeConfig, progress: bool = True) -> dict:
    import shutil

    from ..sae.io import load_sae

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (pass --overwrite to replace it)")
    frames = load_frames(cfg.store, cfg.site)
    train, test = frames.train_test()
    if train.values is None:
        raise MusiclensError("the latent store has no frame values: re-extract it with labels")
    bins = LabelBins.fit(train.values)
    feat = (lambda x: x)
    sae = None
    if cfg.sae:
        sae = load_sae(cfg.sae, dtype=torch.float32)
        if sae.d_in != frames.x.shape[1]:
            raise MusiclensError(f"the SAE expects width {sae.d_in}, the store's {cfg.site} is {frames.x.shape[1]} wide")
        feat = _feature_fn(sae)
    pr = fit_probes(feat, train.x, bins.classes(train.values), test.x, bins.classes(test.values), bins,
                    ProbeOptions(epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed), progress=progress)
    pr.info.update({"store": str(cfg.store), "site": cfg.site, "sae": cfg.sae})
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        save_config(cfg, tmp / "config.json")
        if cfg.sae:
            for name in ("cfg.json", "sae_weights.safetensors", "metrics.json"):
                if (Path(cfg.sae) / name).exists():
                    shutil.copy2(Path(cfg.sae) / name, tmp / name)
        write_json(tmp / "bins.json", bins.to_dict())
        pr.save(tmp)
    return {a: {k: pr.info["attributes"][a][k] for k in ("test_accuracy", "chance_accuracy", "train_accuracy")}
            for a in pr.attributes}
