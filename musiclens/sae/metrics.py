"""Reconstruction and sparsity metrics of an SAE on activation rows, and the latent-density plot.

What each figure means (all over the evaluated rows, in raw activation units):
- `l0`: mean number of non-zero latents per row.
- `fvu`: Σ‖x − x̂‖² / Σ‖x − x̄‖² (fraction of variance unexplained);
  `explained_variance` = 1 − fvu.
- `mse`: mean squared error per element.
- `cosine`: mean cosine similarity between x and x̂.
- `relative_norm`: mean ‖x̂‖ / ‖x‖ (shrinkage shows as < 1).
- `dead_fraction`: latents that never fired on these rows.
- `dense_fraction`: latents firing on more than `dense_threshold` of rows.
Accumulation is in float64 batch by batch, so any number of rows fits.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..io import atomic_path
from .model import SAE


@torch.no_grad()
def reconstruction_metrics(sae: SAE, rows: torch.Tensor, batch_size: int = 1024,
                           dense_threshold: float = 0.1) -> tuple[dict, torch.Tensor]:
    """(metrics dict, per-latent firing frequency [d_sae]) of `sae` on `rows` [n, d_in]."""
    dev = sae.W_dec.device
    n = 0
    sse = sum_cos = sum_rel = sum_l0 = 0.0
    sx = torch.zeros(sae.d_in, dtype=torch.float64)
    sxx = 0.0
    fires = torch.zeros(sae.d_sae, dtype=torch.float64)
    for start in range(0, rows.shape[0], batch_size):
        x = rows[start:start + batch_size].to(dev, torch.float32)
        x = x[torch.isfinite(x).all(-1)]
        if x.shape[0] == 0:
            continue
        if sae.cfg.activation == "topk":           # sparse path: no dense [b, d_sae] latents in memory
            vals, idx, stats = sae.encode_topk(x)
            r = sae.decode_sparse(idx, vals, stats).float()
            on = vals > 0
            n_active = float(on.sum())
            fired = torch.zeros(sae.d_sae, dtype=torch.float64, device=dev).index_add_(
                0, idx[on], torch.ones(int(n_active), dtype=torch.float64, device=dev))
        else:
            h, r = sae(x)
            r = r.float()
            active = h > 0
            n_active = float(active.sum())
            fired = active.sum(0).double()
        e = x - r
        sse += float(e.double().pow(2).sum())
        xn = x.norm(dim=-1)
        rn = r.norm(dim=-1)
        sum_cos += float(((x * r).sum(-1) / (xn * rn).clamp_min(1e-12)).double().sum())
        sum_rel += float((rn / xn.clamp_min(1e-12)).double().sum())
        sum_l0 += n_active
        fires += fired.cpu()
        sx += x.double().sum(0).cpu()
        sxx += float(x.double().pow(2).sum())
        n += x.shape[0]
    if n == 0:
        raise ValueError("no finite rows to evaluate")
    total_var = sxx - float((sx * sx).sum()) / n
    fvu = sse / total_var if total_var > 0 else float("nan")
    freq = (fires / n).float()
    metrics = {
        "rows": n,
        "l0": sum_l0 / n,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "mse": sse / (n * sae.d_in),
        "cosine": sum_cos / n,
        "relative_norm": sum_rel / n,
        "dead_fraction": float((freq == 0).float().mean()),
        "dense_fraction": float((freq > dense_threshold).float().mean()),
        "dense_threshold": dense_threshold,
        "d_sae": sae.d_sae,
    }
    return metrics, freq


def density_histogram(freq: torch.Tensor, path: str | Path, title: str = "") -> None:
    """Histogram of log10 firing frequency of the latents that fired (PNG), dead count in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alive = freq[freq > 0].double()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if alive.numel():
        vals = alive.log10().numpy()
        lo = math.floor(float(vals.min()))
        ax.hist(vals, bins=60, range=(min(lo, -1), 0), color="#3b6ea8")
    ax.set_xlabel("log10 firing frequency")
    ax.set_ylabel("latents")
    dead = int((freq == 0).sum())
    ax.set_title((title + "\n" if title else "") + f"{freq.numel()} latents, {dead} never fired "
                 f"({100 * dead / max(1, freq.numel()):.1f}%)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def format_metrics(name: str, m: dict) -> str:
    """One printed line per SAE."""
    parts = [f"{name}: L0 {m['l0']:.1f}", f"FVU {m['fvu']:.4f}", f"cos {m['cosine']:.3f}", f"MSE {m['mse']:.4g}",
             f"dead {100 * m['dead_fraction']:.1f}%", f"dense {100 * m['dense_fraction']:.1f}%"]
    sp = m.get("spliced")
    if sp:
        parts.append(f"CE clean/spliced/zero {sp['ce_clean']:.3f}/{sp['ce_spliced']:.3f}/{sp['ce_zero']:.3f}")
        parts.append(f"CE recovered {100 * sp['ce_loss_recovered']:.1f}%")
        parts.append(f"KL {sp['kl_spliced']:.4f}")
    return ", ".join(parts)
