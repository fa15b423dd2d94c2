"""Steering: DiffMean and SAE-feature directions, injection strategies, experiments.

    from musiclens.steer import compute_diffmean, DiffMeanSteer, FeatureSteer, steering
    vecs = compute_diffmean(m, fast_prompts, slow_prompts)          # Δ(l) for every layer
    with steering(m, [DiffMeanSteer(vecs, lam=1.25, strategy="one-to-all", layer=3)]):
        m.generate(["a piano tune"], seconds=5, seed=0)

Modules: `diffmean` (vectors, io, plots), `inject` (specs, strategies, the
context manager), `sae_steer` (SAE loading and β), `generation` (batched
steered generation), `metrics` (what experiments measure), `experiments`
(layer scan, strength sweep, prompt ablation, evaluation, feature steering).
"""

from .diffmean import DiffMeanVectors, compute_diffmean
from .inject import DiffMeanSteer, FeatureSteer, plan, steering

__all__ = ["DiffMeanVectors", "compute_diffmean", "DiffMeanSteer", "FeatureSteer", "plan", "steering"]
