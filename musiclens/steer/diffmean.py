"""DiffMean steering vectors (arXiv 2504.04479): Δ(l) = mean_A h_l − mean_B h_l.

Two prompt sets that differ in one concept ("fast ..." vs "slow ...") are
captured prompt-side (`musiclens.extract.prompt`), and the difference of the
per-layer means is the direction that moves the residual stream from B to A.
Adding λ·Δ during generation steers toward A; λ < 0 toward B.

A vector directory holds everything needed to reuse, audit and re-derive Δ:

    vectors.safetensors   delta.<l>, mu_pos.<l>, mu_neg.<l>  [d_model]
                          pos.<l>, neg.<l>  [n, d_model]  (per-prompt vectors:
                          PCA plots and prompt-count ablations need no recapture)
    meta.json             model name + weights hash, d_model, n_layers, layers,
                          prompt counts and texts, capture rule, |Δ| per layer
    config.json           the DiffMeanConfig that was run (CLI)
    cosine.png            cosine similarity of Δ(l) across layers
    pca_layer<l>.png      2-D PCA of the two prompt sets at one layer (+ KDE contours)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import MusiclensError
from ..io import atomic_path, write_json

FORMAT = "musiclens-diffmean/1"


@dataclass
class DiffMeanVectors:
    """Per-layer DiffMean result. `pos[l]`, `neg[l]`: [n, d] prompt vectors."""

    pos: dict[int, torch.Tensor]
    neg: dict[int, torch.Tensor]
    meta: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.pos)

    @property
    def d_model(self) -> int:
        return int(next(iter(self.pos.values())).shape[1])

    def mu_pos(self, layer: int) -> torch.Tensor:
        return self.pos[self._check(layer)].mean(dim=0)

    def mu_neg(self, layer: int) -> torch.Tensor:
        return self.neg[self._check(layer)].mean(dim=0)

    def delta(self, layer: int) -> torch.Tensor:
        """Δ(l) = μ_A(l) − μ_B(l) (float32, [d_model])."""
        return self.mu_pos(layer) - self.mu_neg(layer)

    def subset(self, n: int, seed: int = 0) -> "DiffMeanVectors":
        """The same vectors from `n` prompts per set (random, reproducible): prompt-count ablations."""
        n_pos, n_neg = next(iter(self.pos.values())).shape[0], next(iter(self.neg.values())).shape[0]
        if n < 2 or n > min(n_pos, n_neg):
            raise MusiclensError(f"prompt subset size {n} must be in 2..{min(n_pos, n_neg)}")
        g = torch.Generator().manual_seed(seed)
        ip = torch.randperm(n_pos, generator=g)[:n]
        ineg = torch.randperm(n_neg, generator=g)[:n]
        meta = dict(self.meta, n_pos=n, n_neg=n, subset_of=[n_pos, n_neg])
        return DiffMeanVectors({l: v[ip] for l, v in self.pos.items()}, {l: v[ineg] for l, v in self.neg.items()}, meta)

    def _check(self, layer: int) -> int:
        if layer not in self.pos:
            raise MusiclensError(f"layer {layer} not in this vector set (layers {self.layers})")
        return layer

    def cosine_matrix(self) -> np.ndarray:
        """cos(Δ(i), Δ(j)) over the stored layers."""
        d = torch.stack([self.delta(l) for l in self.layers]).double()
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (d @ d.T).numpy()

    # ---- io -------------------------------------------------------------------------------------
    def save(self, out: str | Path) -> None:
        """Write `vectors.safetensors` + `meta.json` into directory `out` (atomically per file)."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for l in self.layers:
            tensors[f"pos.{l}"] = self.pos[l].float().contiguous()
            tensors[f"neg.{l}"] = self.neg[l].float().contiguous()
            tensors[f"mu_pos.{l}"] = self.mu_pos(l).contiguous()
            tensors[f"mu_neg.{l}"] = self.mu_neg(l).contiguous()
            tensors[f"delta.{l}"] = self.delta(l).contiguous()
        with atomic_path(out / "vectors.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
        meta = dict(self.meta, format=FORMAT, layers=self.layers, d_model=self.d_model,
                    n_pos=int(self.pos[self.layers[0]].shape[0]), n_neg=int(self.neg[self.layers[0]].shape[0]),
                    delta_norm={str(l): float(self.delta(l).norm()) for l in self.layers})
        write_json(out / "meta.json", meta)

    @classmethod
    def load(cls, path: str | Path) -> "DiffMeanVectors":
        """Read a vector directory written by `save` (or `musiclens diffmean`)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "vectors.safetensors").is_file() or not (path / "meta.json").is_file():
            raise MusiclensError(f"not a DiffMean vector directory (needs vectors.safetensors + meta.json): {path}")
        try:
            meta = json.loads((path / "meta.json").read_text())
            tensors = load_file(str(path / "vectors.safetensors"))
        except (json.JSONDecodeError, SafetensorError, OSError) as e:
            raise MusiclensError(f"cannot read vector directory {path}: {e}")
        if meta.get("format") != FORMAT:
            raise MusiclensError(f"{path}: unsupported vector format {meta.get('format')!r}")
        layers = sorted(int(k.split(".")[1]) for k in tensors if k.startswith("pos."))
        if not layers:
            raise MusiclensError(f"{path}: no layers in vectors.safetensors")
        return cls({l: tensors[f"pos.{l}"] for l in layers}, {l: tensors[f"neg.{l}"] for l in layers}, meta)

    def check_model(self, model) -> None:
        """Refuse vectors made for another model (width, layer count, or weights)."""
        if self.d_model != model.d_model:
            raise MusiclensError(f"vector width {self.d_model} does not match the model's d_model {model.d_model}")
        if max(self.layers) >= model.n_layers:
            raise MusiclensError(f"vectors have layer {max(self.layers)} but the model has only {model.n_layers} layers")
        h = self.meta.get("weights_hash")
        if h and getattr(model, "weights_hash", None) and h != model.weights_hash:
            raise MusiclensError(f"vectors were computed on another model ({self.meta.get('model')}, weights "
                                 f"{h[:12]}) than {model.name} ({model.weights_hash[:12]})")


def compute_diffmean(model, pos_prompts: Sequence[str], neg_prompts: Sequence[str], layers: Sequence[int] | None = None,
                     rule: str = "auto", batch_size: int = 8, seconds: float = 1.0, seed: int = 0,
                     guidance_scale: float = 3.0, progress: bool = True) -> DiffMeanVectors:
    """Capture both prompt sets and return their per-layer DiffMean vectors."""
    from ..extract.prompt import capture_prompts

    for name, ps in (("positive", pos_prompts), ("negative", neg_prompts)):
        if len(ps) < 2:
            raise MusiclensError(f"the {name} prompt set has {len(ps)} prompt(s); DiffMean needs at least 2 per set")
    kw = dict(layers=layers, rule=rule, batch_size=batch_size, seconds=seconds, seed=seed,
              guidance_scale=guidance_scale, progress=progress)
    cap_pos = capture_prompts(model, pos_prompts, **kw)
    cap_neg = capture_prompts(model, neg_prompts, **kw)
    meta = {"model": model.name, "weights_hash": getattr(model, "weights_hash", None), "kind": model.kind,
            "n_layers": model.n_layers, "capture": cap_pos.describe(),
            "pos_prompts": list(pos_prompts), "neg_prompts": list(neg_prompts)}
    return DiffMeanVectors(cap_pos.acts, cap_neg.acts, meta)


# ---- plots ----------------------------------------------------------------------------------------
def plot_cosine(vecs: DiffMeanVectors, path: str | Path, title: str = "") -> None:
    """Heat map of cos(Δ(i), Δ(j)) across layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = vecs.cosine_matrix()
    layers = vecs.layers
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.imshow(c, vmin=-1, vmax=1, cmap="RdBu_r")
    ticks = list(range(len(layers)))
    step = max(1, len(layers) // 12)
    ax.set_xticks(ticks[::step], [str(l) for l in layers][::step])
    ax.set_yticks(ticks[::step], [str(l) for l in layers][::step])
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    ax.set_title(title or "cosine similarity of Δ(l) across layers")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_pca(vecs: DiffMeanVectors, layer: int, path: str | Path, labels: tuple[str, str] = ("A (pos)", "B (neg)")) -> None:
    """Both prompt sets projected on the first two principal components at `layer`, with KDE contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde
    from sklearn.decomposition import PCA

    a = vecs.pos[vecs._check(layer)].double().numpy()
    b = vecs.neg[layer].double().numpy()
    x = np.concatenate([a, b])
    n_comp = min(2, x.shape[0], x.shape[1])
    z = PCA(n_components=n_comp).fit_transform(x)
    if z.shape[1] < 2:
        z = np.concatenate([z, np.zeros((z.shape[0], 2 - z.shape[1]))], axis=1)
    za, zb = z[: len(a)], z[len(a):]
    fig, ax = plt.subplots(figsize=(5, 4.4))
    for pts, col, lab in ((za, "tab:red", labels[0]), (zb, "tab:blue", labels[1])):
        ax.scatter(pts[:, 0], pts[:, 1], s=14, c=col, alpha=0.75, label=f"{lab} (n={len(pts)})")
        if len(pts) > 3:
            try:
                kde = gaussian_kde(pts.T)
                gx, gy = np.meshgrid(np.linspace(z[:, 0].min(), z[:, 0].max(), 60),
                                     np.linspace(z[:, 1].min(), z[:, 1].max(), 60))
                dens = kde(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
                ax.contour(gx, gy, dens, levels=4, colors=col, alpha=0.45, linewidths=0.8)
            except (np.linalg.LinAlgError, ValueError):
                pass  # degenerate cloud (e.g. identical prompts): scatter only
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_title(f"prompt vectors at layer {layer}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
