"""Linear probes from SAE features (or raw latents) to pitch, loudness and timbre classes.

One multiclass logistic regression per attribute (softmax + cross-entropy),
`logits_a = W_a f + b_a`, trained on the training clips' frames and scored on
the held-out clips' frames. The three probes share nothing but the feature
batches, so they are trained together in one pass (the sum of their losses
has independent gradients).

Why torch rather than scikit-learn: the inputs are SAE features computed on
the fly from latents (a 64x SAE on 100k frames would be GBs dense), so the
probe must train from mini-batches of freshly encoded features.

Contributions: `c_{j->k} = W_kj * f_j` is feature j's share of class k's
logit on one frame. `top_features[k]` ranks features by their mean
contribution over the training frames labelled k: the features that make the
probe say k when it is right to.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..errors import MusiclensError
from ..io import atomic_path, write_json
from .labels import ATTRIBUTES, LabelBins

PROBE_WEIGHTS = "probes.safetensors"
PROBE_JSON = "probes.json"


@dataclasses.dataclass
class ProbeOptions:
    epochs: int = 8
    batch_size: int = 1024
    lr: float = 1e-2
    weight_decay: float = 1e-4
    top_k: int = 10
    min_steps: int = 400
    seed: int = 0


class Probes:
    """Weights of the three probes: `weight[a]` [C_a, d_feat], `bias[a]` [C_a]."""

    def __init__(self, weight: dict[str, torch.Tensor], bias: dict[str, torch.Tensor], info: dict):
        self.weight, self.bias, self.info = weight, bias, info

    @property
    def attributes(self) -> list[str]:
        return list(self.weight)

    def logits(self, f: torch.Tensor, attribute: str) -> torch.Tensor:
        return f @ self.weight[attribute].T + self.bias[attribute]

    def predict_proba(self, f: torch.Tensor, attribute: str) -> torch.Tensor:
        return torch.softmax(self.logits(f, attribute), dim=-1)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for a in self.weight:
            tensors[f"{a}.weight"] = self.weight[a].contiguous()
            tensors[f"{a}.bias"] = self.bias[a].contiguous()
        with atomic_path(folder / PROBE_WEIGHTS) as tmp:
            save_file(tensors, str(tmp))
        write_json(folder / PROBE_JSON, self.info)

    @classmethod
    def load(cls, folder: str | Path) -> "Probes":
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / PROBE_JSON).exists() or not (folder / PROBE_WEIGHTS).exists():
            raise MusiclensError(f"{folder} holds no probes ({PROBE_JSON} + {PROBE_WEIGHTS})")
        try:
            info = json.loads((folder / PROBE_JSON).read_text())
        except json.JSONDecodeError as e:
            raise MusiclensError(f"{folder / PROBE_JSON}: invalid JSON ({e})")
        t = load_file(str(folder / PROBE_WEIGHTS))
        attrs = [a for a in ATTRIBUTES if f"{a}.weight" in t]
        return cls({a: t[f"{a}.weight"].float() for a in attrs}, {a: t[f"{a}.bias"].float() for a in attrs}, info)

    @property
    def bins(self) -> LabelBins:
        return LabelBins.from_dict(self.info["bins"])


def _batches(n: int, bs: int, gen: torch.Generator | None):
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for s in range(0, n, bs):
        yield order[s:s + bs]


def fit_probes(features: Callable[[torch.Tensor], torch.Tensor], x_train: torch.Tensor,
               y_train: dict[str, np.ndarray], x_test: torch.Tensor, y_test: dict[str, np.ndarray],
               bins: LabelBins, opts: ProbeOptions | None = None, desc: str = "probes",
               progress: bool = True) -> Probes:
    """Train one probe per attribute on `features(x)`; score on the test rows (see module doc)."""
    opts = opts or ProbeOptions()
    attrs = [a for a in ATTRIBUTES if a in y_train]
    if x_train.shape[0] == 0 or x_test.shape[0] == 0:
        raise MusiclensError("probes need training and test frames")
    gen = torch.Generator().manual_seed(opts.seed)
    with torch.no_grad():
        # Standardise features for a well-conditioned fit (codec latents can be ~1e-2, SAE
        # features ~1e1); the scaling is folded back into W and b at the end, so saved probes
        # act on raw features and c_{j->k} = W_kj * f_j stays in raw feature units.
        ref = features(x_train[torch.randperm(x_train.shape[0], generator=gen)[:20000]])
        mu, sd = ref.mean(0), ref.std(0).clamp_min(1e-6)
        d_feat = ref.shape[1]
        del ref
    ncls = {a: bins.n_classes(a) for a in attrs}
    heads = {a: torch.nn.Linear(d_feat, ncls[a]) for a in attrs}
    for h in heads.values():
        torch.nn.init.zeros_(h.weight)
        torch.nn.init.zeros_(h.bias)
    params = [p for h in heads.values() for p in h.parameters()]
    opt = torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    ytr = {a: torch.from_numpy(np.asarray(y_train[a], dtype=np.int64)) for a in attrs}
    steps_per_epoch = (x_train.shape[0] + opts.batch_size - 1) // opts.batch_size
    epochs = max(opts.epochs, -(-opts.min_steps // steps_per_epoch))  # small data: enough steps anyway
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opts.lr, total_steps=total, pct_start=0.1)
    bar = tqdm(total=total, desc=desc, unit="step", disable=None if progress else True, leave=False)
    for _ in range(epochs):
        for idx in _batches(x_train.shape[0], opts.batch_size, gen):
            with torch.no_grad():
                f = (features(x_train[idx]) - mu) / sd
            loss = sum(torch.nn.functional.cross_entropy(heads[a](f), ytr[a][idx]) for a in attrs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    weight = {a: (heads[a].weight.detach() / sd).clone() for a in attrs}
    bias = {a: (heads[a].bias.detach() - weight[a] @ mu).clone() for a in attrs}
    probes = Probes(weight, bias, {})
    info = {"bins": bins.to_dict(), "d_features": d_feat, "options": dataclasses.asdict(opts), "attributes": {}}
    tr_eval = evaluate(probes, features, x_train, y_train, opts.batch_size, contributions=True)
    te_eval = evaluate(probes, features, x_test, y_test, opts.batch_size)
    for a in attrs:
        names = bins.class_names(a)
        counts_te = np.bincount(np.asarray(y_test[a]), minlength=ncls[a])
        counts_tr = np.bincount(np.asarray(y_train[a]), minlength=ncls[a])
        top = {}
        contrib = tr_eval["contrib"][a]  # [C, d_feat] mean contribution over frames of class k
        for k in range(ncls[a]):
            if counts_tr[k] == 0:
                continue
            order = torch.argsort(contrib[k], descending=True)[:opts.top_k]
            top[names[k]] = [[int(j), round(float(contrib[k, j]), 5)] for j in order]
        info["attributes"][a] = {
            "classes": names, "n_classes": ncls[a],
            "train_accuracy": tr_eval["accuracy"][a], "test_accuracy": te_eval["accuracy"][a],
            "chance_accuracy": float(counts_te.max() / max(1, counts_te.sum())),
            "test_frames": int(counts_te.sum()), "train_frames": int(counts_tr.sum()),
            "classes_in_train": int((counts_tr > 0).sum()), "classes_in_test": int((counts_te > 0).sum()),
            "top_features": top,
        }
    probes.info = info
    return probes


@torch.no_grad()
def evaluate(probes: Probes, features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             y: dict[str, np.ndarray], batch_size: int = 2048, contributions: bool = False) -> dict:
    """Accuracy per attribute (and, optionally, mean contribution per class and feature)."""
    attrs = [a for a in probes.attributes if a in y]
    correct = {a: 0 for a in attrs}
    sums = {a: None for a in attrs}
    counts = {a: None for a in attrs}
    yt = {a: torch.from_numpy(np.asarray(y[a], dtype=np.int64)) for a in attrs}
    for idx in _batches(x.shape[0], batch_size, None):
        f = features(x[idx])
        for a in attrs:
            pred = probes.logits(f, a).argmax(-1)
            correct[a] += int((pred == yt[a][idx]).sum())
            if contributions:
                C = probes.weight[a].shape[0]
                onehot = torch.nn.functional.one_hot(yt[a][idx], C).float()
                s = onehot.T @ f
                sums[a] = s if sums[a] is None else sums[a] + s
                c = onehot.sum(0)
                counts[a] = c if counts[a] is None else counts[a] + c
    out = {"accuracy": {a: correct[a] / max(1, x.shape[0]) for a in attrs}}
    if contributions:
        out["contrib"] = {a: probes.weight[a] * sums[a] / counts[a].clamp_min(1)[:, None] for a in attrs}
    return out
