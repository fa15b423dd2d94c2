"""Injection strategies, branches, composition, λ = 0 exactness, DiffMean basics."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from musiclens import hooks
from musiclens.errors import MusiclensError
from musiclens.steer import DiffMeanSteer, DiffMeanVectors, compute_diffmean, steering
from musiclens.steer.generation import generate_batched


def _vectors(m, seed=0, n=3) -> DiffMeanVectors:
    g = torch.Generator().manual_seed(seed)
    pos = {l: torch.randn(n, m.d_model, generator=g) for l in range(m.n_layers)}
    neg = {l: torch.randn(n, m.d_model, generator=g) for l in range(m.n_layers)}
    return DiffMeanVectors(pos, neg, {"weights_hash": m.weights_hash, "model": m.name})


@contextlib.contextmanager
def _raw_outputs(m, store):
    """Plain torch hooks recording each layer's output as it leaves the layer (before any steering hook)."""
    hs = [layer.register_forward_hook(lambda mod, a, o, i=i: store.setdefault(i, []).append(
        (o[0] if isinstance(o, tuple) else o).detach().clone())) for i, layer in enumerate(m.layers)]
    try:
        yield
    finally:
        for h in hs:
            h.remove()


def _added(m, specs, branch="both"):
    """Per layer: (steered - raw) output over one short CFG generation, [2B, steps, d]."""
    pre: dict = {}
    with _raw_outputs(m, pre), steering(m, specs, branch=branch):
        with hooks.capture(m, [f"layer.{l}" for l in range(m.n_layers)]) as post:
            m.generate(["a piano tune"], seconds=0.06, seed=0)
    return {l: post.stacked(f"layer.{l}") - torch.cat(pre[l], dim=1) for l in range(m.n_layers)}


def test_strategies_add_the_right_vector_at_each_layer(tiny_model):
    m = tiny_model
    v = _vectors(m)
    lam = 1.7
    a2a = _added(m, [DiffMeanSteer(v, lam, "all-to-all")])
    o2a = _added(m, [DiffMeanSteer(v, lam, "one-to-all", layer=3)])
    single = _added(m, [DiffMeanSteer(v, lam, "single", layer=2)])
    chosen = _added(m, [DiffMeanSteer(v, lam, "one-to-all", layer=3, layers=[1, 4])])
    for l in range(m.n_layers):
        torch.testing.assert_close(a2a[l], (lam * v.delta(l)).expand_as(a2a[l]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(o2a[l], (lam * v.delta(3)).expand_as(o2a[l]), rtol=1e-5, atol=1e-5)
        want = lam * v.delta(2) if l == 2 else torch.zeros(m.d_model)
        torch.testing.assert_close(single[l], want.expand_as(single[l]), rtol=1e-5, atol=1e-5)
        want = lam * v.delta(3) if l in (1, 4) else torch.zeros(m.d_model)
        torch.testing.assert_close(chosen[l], want.expand_as(chosen[l]), rtol=1e-5, atol=1e-5)
    assert hooks.active_hooks(m) == 0


def test_branch_selection_and_composition(tiny_model):
    m = tiny_model
    v1, v2 = _vectors(m, 1), _vectors(m, 2)
    specs = [DiffMeanSteer(v1, 1.0, "single", layer=2), DiffMeanSteer(v2, -0.5, "single", layer=2)]
    want = v1.delta(2) - 0.5 * v2.delta(2)             # "fast but dark": vectors add
    for branch, rows_on, rows_off in (("cond", slice(0, 1), slice(1, 2)), ("uncond", slice(1, 2), slice(0, 1))):
        d = _added(m, specs, branch=branch)[2]
        assert d.shape[0] == 2                         # [cond ; uncond]
        torch.testing.assert_close(d[rows_on], want.expand_as(d[rows_on]), rtol=1e-5, atol=1e-5)
        assert d[rows_off].abs().max() == 0


def test_lambda_zero_reproduces_plain_generation_exactly(tiny_model):
    m = tiny_model
    v = _vectors(m)
    prompts = ["a piano tune", "an organ hymn", "flute"]
    plain = generate_batched(m, prompts, 0.2, seed=5, batch_size=2)
    zero = generate_batched(m, prompts, 0.2, seed=5, batch_size=2, specs=[DiffMeanSteer(v, 0.0, "all-to-all")])
    steered = generate_batched(m, prompts, 0.2, seed=5, batch_size=2, specs=[DiffMeanSteer(v, 3.0, "all-to-all")])
    assert np.array_equal(plain, zero)
    assert not np.allclose(plain, steered)


def test_diffmean_of_identical_sets_is_zero(tiny_model, tiny_melody):
    prompts = ["a piano tune", "an organ hymn", "a flute melody"]
    for m in (tiny_model, tiny_melody):
        v = compute_diffmean(m, prompts, prompts, batch_size=3, seconds=0.1, progress=False)
        for l in v.layers:
            assert v.delta(l).abs().max() == 0
        assert v.pos[0].shape == (3, m.d_model)


def test_bad_strengths_layers_and_widths(tiny_model, tiny_melody):
    m = tiny_model
    v = _vectors(m)
    for spec, msg in ((DiffMeanSteer(v, float("nan")), "finite"), (DiffMeanSteer(v, float("inf")), "finite"),
                      (DiffMeanSteer(v, 1.0, "one-to-all", layer=m.n_layers), "out of range"),
                      (DiffMeanSteer(v, 1.0, "one-to-all", layer=1, layers=[0, 40]), "out of range"),
                      (DiffMeanSteer(v, 1.0, "sideways", layer=1), "strategy")):
        with pytest.raises(MusiclensError, match=msg):
            with steering(m, [spec]):
                pass
    wide = DiffMeanVectors({0: torch.zeros(2, m.d_model + 1)}, {0: torch.zeros(2, m.d_model + 1)}, {})
    with pytest.raises(MusiclensError, match="width"):
        with steering(m, [DiffMeanSteer(wide, 1.0, "all-to-all")]):
            pass
    with pytest.raises(MusiclensError, match="another model"):   # same width, other weights
        with steering(tiny_melody, [DiffMeanSteer(v, 1.0, "all-to-all")]):
            pass
    assert hooks.active_hooks(m) == 0
