"""Steering specs -> residual-stream interventions, and the `steering(...)` context manager.

A *spec* says what to add and where; `plan()` turns any number of specs into
one vector per site, which `musiclens.hooks.inject` adds to the output of
that decoder layer (h <- h + v) on the chosen CFG branch and generation steps.
Mounting and unmounting is the hook engine's job (its context manager removes
the hooks also on exceptions), in the style of steer-audio's Controller.

Strategies for DiffMean vectors (arXiv 2504.04479):
* `all-to-all`: Δ(l) into layer l, for every layer of the vector set
  (or of `layers`);
* `one-to-all`: Δ(l_best) (the `layer` argument) into every layer (or `layers`);
* `single`:     Δ(l) into layer l only (`layer`): what the layer scan uses.

SAE features (arXiv 2505.18186): h <- h + α·β_j·W_dec[j] at the SAE's layer,
β_j the feature's maximum activation, so α = 1 adds the feature at the
strength it reaches on real data.

Several specs compose by addition ("fast but dark" = tempo spec + brightness
spec); vectors meant for the same site are summed first, so composition costs
no extra hook.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..errors import MusiclensError
from .diffmean import DiffMeanVectors

STRATEGIES = ("one-to-all", "all-to-all", "single")
BRANCHES = ("both", "cond", "uncond")


def check_strength(value: float, name: str = "strength") -> float:
    """A finite float (NaN/inf strengths are input errors)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MusiclensError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(v):
        raise MusiclensError(f"{name} must be finite, got {value}")
    return v


@dataclass
class DiffMeanSteer:
    """λ·Δ with a strategy. `layer` = source layer (one-to-all, single); `layers` = target layers."""

    vectors: DiffMeanVectors
    lam: float
    strategy: str = "one-to-all"
    layer: int | None = None
    layers: Sequence[int] | None = None

    def sites(self, model) -> dict[int, torch.Tensor]:
        lam = check_strength(self.lam, "lambda")
        if self.strategy not in STRATEGIES:
            raise MusiclensError(f"unknown strategy {self.strategy!r} (choose {', '.join(STRATEGIES)})")
        self.vectors.check_model(model)
        targets = _targets(model, self.layers)          # all layers unless restricted
        if self.strategy == "all-to-all":
            # every target layer gets its own Δ(l); unrestricted = every layer the vector set has
            return {l: lam * self.vectors.delta(l) for l in (targets if self.layers else self.vectors.layers)}
        if self.layer is None:
            raise MusiclensError(f"strategy {self.strategy} needs a source layer (--layer)")
        src = _check_layer(model, self.layer)
        delta = self.vectors.delta(src)
        if self.strategy == "single":
            return {src: lam * delta}
        return {l: lam * delta for l in targets}       # one-to-all


@dataclass
class FeatureSteer:
    """α·β_j·W_dec[j] for each feature j, at the SAE's layer."""

    sae: object
    features: Sequence[int]
    alpha: float | Sequence[float] = 1.0
    beta: float | Sequence[float] | None = None
    layer: int | None = None   # the SAE's layer; read from its cfg when None

    def sites(self, model) -> dict[int, torch.Tensor]:
        W = _sae_decoder(self.sae)
        layer = self.layer if self.layer is not None else sae_layer(self.sae)
        _check_layer(model, layer)
        if W.shape[1] != model.d_model:
            raise MusiclensError(f"SAE width d_in={W.shape[1]} does not match the model's d_model {model.d_model}")
        feats = [int(j) for j in self.features]
        if not feats:
            raise MusiclensError("no SAE features given")
        bad = [j for j in feats if j < 0 or j >= W.shape[0]]
        if bad:
            raise MusiclensError(f"feature(s) {bad} out of range: the SAE has {W.shape[0]} features")
        alphas = _broadcast(self.alpha, len(feats), "alpha")
        if self.beta is None:
            raise MusiclensError("SAE steering needs the features' max activations β (--beta or --features-catalogue)")
        betas = _broadcast(self.beta, len(feats), "beta")
        v = torch.zeros(W.shape[1], dtype=torch.float32)
        for j, a, b in zip(feats, alphas, betas):
            v += a * b * W[j].float()
        return {layer: v}


def _broadcast(x, n: int, name: str) -> list[float]:
    xs = [x] * n if isinstance(x, (int, float)) else list(x)
    if len(xs) == 1:
        xs = xs * n
    if len(xs) != n:
        raise MusiclensError(f"{name}: expected 1 or {n} values, got {len(xs)}")
    return [check_strength(v, name) for v in xs]


def _sae_decoder(sae) -> torch.Tensor:
    W = getattr(sae, "W_dec", None)
    if W is None:
        raise MusiclensError("SAE has no W_dec")
    return W.detach().cpu() if isinstance(W, torch.Tensor) else torch.as_tensor(W)


def sae_layer(sae) -> int:
    """Layer index from the SAE cfg's `hook_name` (`layer.<i>`)."""
    cfg = getattr(sae, "cfg", None)
    hook = getattr(cfg, "hook_name", None) if cfg is not None and not isinstance(cfg, dict) else (cfg or {}).get("hook_name")
    if not hook or not str(hook).startswith("layer."):
        raise MusiclensError(f"cannot tell the SAE's layer from its hook_name {hook!r}; pass --layer")
    try:
        return int(str(hook).split(".")[1])
    except ValueError:
        raise MusiclensError(f"cannot parse the SAE's hook_name {hook!r}")


def _check_layer(model, layer: int) -> int:
    layer = int(layer)
    if layer < 0 or layer >= model.n_layers:
        raise MusiclensError(f"layer {layer} out of range: the model has layers 0..{model.n_layers - 1}")
    return layer


def _targets(model, layers: Sequence[int] | None) -> list[int]:
    if not layers:
        return list(range(model.n_layers))
    return sorted(set(_check_layer(model, l) for l in layers))


def plan(model, specs: Sequence) -> dict[int, torch.Tensor]:
    """Sum every spec's per-layer vectors: {layer: vector [d_model]} (composition)."""
    total: dict[int, torch.Tensor] = {}
    for spec in specs:
        for l, v in spec.sites(model).items():
            v = v.detach().float().cpu()
            total[l] = total[l] + v if l in total else v.clone()
    return total


def interventions(model, specs: Sequence) -> list:
    """The `hooks.Intervention` list for `specs` (one additive intervention per touched layer)."""
    from .. import hooks

    return [hooks.Intervention(f"layer.{l}", v.to(device=model.device, dtype=model.dtype), coef=1.0, mode="add")
            for l, v in sorted(plan(model, specs).items())]


@contextlib.contextmanager
def steering(model, specs, branch: str = "both", steps: tuple[int, int] | None = None) -> Iterator[list]:
    """Steer every generation inside the block.

        with steering(m, [DiffMeanSteer(vecs, lam=1.25, strategy="one-to-all", layer=3)]):
            m.generate(["a piano piece"], seconds=4, seed=0)

    `branch`: CFG half to steer (both, cond, uncond); `steps`: (start, stop)
    generated steps, None = all. Yields the intervention list.
    """
    if branch not in BRANCHES:
        raise MusiclensError(f"unknown branch {branch!r} (choose {', '.join(BRANCHES)})")
    if steps is not None:
        if len(steps) != 2 or steps[0] < 0 or steps[1] <= steps[0]:
            raise MusiclensError(f"bad step range {steps}: need 0 <= start < stop")
    if not isinstance(specs, (list, tuple)):
        specs = [specs]
    from .. import hooks

    ivs = interventions(model, specs)
    with hooks.inject(model, ivs, branch=branch, steps=steps):
        yield ivs
