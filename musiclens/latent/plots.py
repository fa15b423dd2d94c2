"""Plots for the latent-space stages (matplotlib, Agg backend, atomic PNG writes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)


def plot_grid(result: dict, path: Path) -> None:
    """Per grid cell: sparsity and held-out probe accuracy of each attribute (dashes: chance)."""
    plt = _plt()
    cells = result["cells"]
    names = [c["name"].replace("rmsnorm_l1_", "") for c in cells]
    attrs = [a for a in ("pitch", "loudness", "timbre") if f"{a}_accuracy" in cells[0]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1.3]})
    x = np.arange(len(cells))
    w = 0.8 / max(1, len(attrs))
    for i, a in enumerate(attrs):
        bars = axes[0].bar(x + i * w - 0.4 + w / 2, [c[f"{a}_accuracy"] for c in cells], w, label=a)
        axes[0].axhline(result["chance_accuracy"][a], color=bars.patches[0].get_facecolor(), ls="--", lw=0.8)
    axes[0].set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    axes[0].set_ylabel("held-out accuracy")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"probes on {result.get('autoencoder')} ({result['site']})")
    sp = [(n, c["sparsity"]) for n, c in zip(names, cells) if c.get("sparsity") is not None]
    axes[1].bar(range(len(sp)), [s for _, s in sp], color="gray")
    axes[1].set_xticks(range(len(sp)), [n for n, _ in sp], rotation=45, ha="right", fontsize=8)
    axes[1].set_ylim(0, 1)
    axes[1].set_title("sparsity (fraction of zero features)")
    _save(fig, path)


def plot_trajectory(traj: dict, path: Path) -> None:
    """s_t per attribute over the sampling steps, with each attribute's convergence step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for a, s in traj["s"].items():
        line, = ax.plot(range(1, len(s) + 1), s, label=a)  # steps are 1-based
        step = traj["convergence_step"].get(a)
        if step is not None:
            ax.axvline(step, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel(traj.get("axis", "sampling step"))
    ax.set_ylabel("s_t (normalised L1 to final)")
    ax.set_title(traj.get("title", "attribute trajectory"))
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_edit(report: dict, path: Path) -> None:
    """Control-vector sweep: target-attribute move and other-attribute change per alpha."""
    plt = _plt()
    rows = report["alphas"]
    al = [r["alpha"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(al, [r["target_hit_rate"] for r in rows], "o-", label=f"{report['attribute']} frames at target")
    for other in report["others"]:
        ax.plot(al, [r["others"][other]["changed_fraction"] for r in rows], "s--", label=f"{other} frames changed")
    ax.set_xlabel("alpha")
    ax.set_ylim(0, 1)
    ax.set_title(f"control vector {report['attribute']} -> {report['target']}")
    ax.legend(fontsize=8)
    _save(fig, path)
