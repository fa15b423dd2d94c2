"""Plots for the discovery report (matplotlib, Agg backend, PNG files).

Why PNG files next to the HTML rather than an interactive library: the
report must open offline in any browser with no JavaScript dependencies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def density_plot(path: Path, rates: dict[str, np.ndarray], min_rate: float, max_rate: float) -> None:
    """Histogram of log10 activation rate per SAE, with the filtering thresholds and dead counts."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.linspace(-4, 0, 41)
    for name, r in rates.items():
        r = np.asarray(r, dtype=float)
        dead = int((r <= 0).sum())
        ax.hist(np.log10(r[r > 0]), bins=bins, histtype="step", linewidth=1.5, label=f"{name} ({dead} dead)")
    for x in (min_rate, max_rate):
        if x > 0:
            ax.axvline(np.log10(x), color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("log10 activation rate (share of tracks where the feature fires)")
    ax.set_ylabel("features")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def histogram_plot(path: Path, hist: np.ndarray, edges: np.ndarray) -> None:
    """Small bar plot of one feature's activation histogram (log-spaced bins)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3, 1.4))
    nz = np.nonzero(hist)[0]
    if len(nz):
        lo, hi = max(nz.min(), 1), min(nz.max(), len(edges) - 1)
        x = edges[lo - 1:hi]
        ax.bar(np.log10(x), hist[lo:hi + 1][:len(x)], width=0.09, color="#4a7ab0")
    ax.set_xlabel("log10 activation", fontsize=6)
    ax.tick_params(labelsize=6)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def recovery_plot(path: Path, rows: list[dict]) -> None:
    """Layer-wise share of concepts recovered (AUROC >= 0.9) per SAE setting and baseline."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        series.setdefault(r["method"], []).append((r["layer"], r["recovered"]))
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("concepts recovered (AUROC >= 0.9)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
