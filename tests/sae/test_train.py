"""SAE training on synthetic data with known directions: recovery, constraints, AuxK, resume."""

from __future__ import annotations

import math

import pytest
import torch

from musiclens.errors import MusiclensError
from musiclens.sae import kernels
from musiclens.sae.data import BadRowCounter, tensor_batches
from musiclens.sae.train import (MultiTrainer, TrainOptions, compute_init, geometric_median, lr_factor,
                                 make_combos, run_steps)


def _train(X, arch, steps, k=3, l1=0.02, expansion=4, opts=None, seed=0):
    d = X.shape[1]
    combos = make_combos(arch, [expansion], [k], [l1], d)
    inits = {"scale": compute_init(X[:4096], "topk"), "rms": compute_init(X[:4096], "rmsnorm_l1")}
    opts = opts or TrainOptions(batch_size=256, lr=3e-3, warmup_steps=50, dead_tokens=20000, seed=seed)
    tr = MultiTrainer(combos, d, inits, opts, total_steps=steps)
    run_steps(tr, tensor_batches(X, opts.batch_size, seed=seed), BadRowCounter())
    return tr


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "rmsnorm_l1"])
def test_recovers_known_directions(synthetic, arch):
    X, D = synthetic
    tr = _train(X, arch, steps=500)
    sae = tr.folded_sae(0)
    W = sae.W_dec.detach()
    # decoder rows stay unit norm through training
    assert torch.allclose(W.norm(dim=1), torch.ones(W.shape[0]), atol=1e-4)
    cos = (D @ (W / W.norm(dim=1, keepdim=True)).T).max(1).values
    assert (cos >= 0.9).float().mean() >= 0.9, f"{arch}: only {(cos >= 0.9).float().mean():.2f} recovered"
    latents, recon = sae(X[:2000])
    fvu = ((X[:2000] - recon) ** 2).sum() / ((X[:2000] - X[:2000].mean(0)) ** 2).sum()
    assert fvu < 0.3
    if arch == "topk":
        assert ((latents > 0).sum(-1) <= 3).all()
    if arch == "batchtopk":
        # inference uses the learned threshold: L0 close to k on average, not exactly k per row
        assert float(sae.threshold.min()) > 0
        assert 1.5 < float((latents > 0).sum(-1).float().mean()) < 6


def test_auxk_revives_dead_latents(synthetic):
    """Half the latents start with tiny encoder rows: never in the top k, so dead. AuxK (top-k of the dead
    latents reconstructing the residual) gives them gradient and they fire again; without it they stay dead."""
    X, _ = synthetic
    d = X.shape[1]

    def run(alpha):
        combos = make_combos("topk", [4], [3], [], d)
        inits = {"scale": compute_init(X[:4096], "topk")}
        opts = TrainOptions(batch_size=256, lr=3e-3, warmup_steps=10, dead_tokens=2560, auxk_alpha=alpha)
        tr = MultiTrainer(combos, d, inits, opts, total_steps=300)
        with torch.no_grad():
            tr.slots[0].sae.enc_weight[: 2 * d] *= 0.01     # 64 of 128 latents never make the top-k
        run_steps(tr, tensor_batches(X, 256), BadRowCounter())
        s = tr.slots[0]
        return float((s.since_fired[: 2 * d] >= opts.dead_tokens).float().mean())

    dead_without = run(0.0)
    dead_with = run(1 / 32)
    assert dead_without > 0.8
    assert dead_with < 0.3


def test_folded_scale_gives_same_reconstruction(synthetic):
    X, _ = synthetic
    tr = _train(X, "topk", steps=30)
    s = tr.slots[0]
    assert abs(s.init.scale - 1.0) > 0.05        # the fold is not trivially the identity
    x = X[:500]
    with torch.no_grad():
        h_train, r_train = s.sae(x * s.init.scale)
        h_fold, r_fold = tr.folded_sae(0)(x)
    assert torch.allclose(r_train / s.init.scale, r_fold, atol=1e-4)
    assert torch.allclose(h_train / s.init.scale, h_fold, atol=1e-4)


def test_resume_equals_uninterrupted(synthetic):
    X, _ = synthetic
    X = X[:2560]                    # 10 batches per epoch, so the run crosses an epoch boundary
    d = X.shape[1]
    inits = {"scale": compute_init(X, "topk")}
    opts = TrainOptions(batch_size=256, lr=3e-3, warmup_steps=3)
    combos = make_combos("topk", [2], [3], [], d)
    batches = tensor_batches(X, 256)
    full = MultiTrainer(combos, d, inits, opts, total_steps=16)
    run_steps(full, batches, BadRowCounter())
    first = MultiTrainer(combos, d, inits, opts, total_steps=16)
    epoch, used = run_steps(first, batches, BadRowCounter(), until=7)
    state = first.state_dict()
    second = MultiTrainer(combos, d, inits, opts, total_steps=16)
    second.load_state_dict(state)
    run_steps(second, batches, BadRowCounter(), start_epoch=epoch, skip_in_epoch=used)
    for a, b in zip(full.slots[0].sae.parameters(), second.slots[0].sae.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_sparse_kernels_match_dense_gradients():
    torch.manual_seed(0)
    B, d, S, k = 16, 8, 40, 5
    x = torch.randn(B, d)
    We = torch.randn(S, d, requires_grad=True)
    be = torch.randn(S, requires_grad=True)
    bd = torch.randn(d, requires_grad=True)
    Wd = torch.randn(S, d, requires_grad=True)
    # dense reference
    pre = (x - bd) @ We.T + be
    vals, idx = pre.topk(k, dim=-1)
    h = torch.zeros(B, S).scatter(-1, idx, vals.relu())
    loss_ref = ((h @ Wd + bd - x) ** 2).sum()
    g_ref = torch.autograd.grad(loss_ref, [We, be, bd, Wd])
    # sparse path
    with torch.no_grad():
        x_c = x - bd
        pre2 = x_c @ We.T + be
    acts = kernels.gather_preacts(pre2, x_c, idx, We, be, bd).relu()
    loss = ((kernels.sparse_decode(idx, acts, Wd) + bd - x) ** 2).sum()
    g = torch.autograd.grad(loss, [We, be, bd, Wd])
    assert torch.allclose(loss, loss_ref, atol=1e-4)
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-4)


def test_schedule_and_geometric_median():
    assert lr_factor(0, 100, 10, 0.2) == pytest.approx(0.1)
    assert lr_factor(50, 100, 10, 0.2) == 1.0
    assert lr_factor(90, 100, 10, 0.2) == pytest.approx(0.5)
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    gm = geometric_median(pts)
    assert gm.norm() < 1.0            # robust to the outlier, unlike the mean (~25, 25)
    assert math.isfinite(float(gm.sum()))


def test_bad_sweep_values():
    with pytest.raises(MusiclensError, match="smaller than the number of latents"):
        make_combos("topk", [1], [32], [], 32)
    with pytest.raises(MusiclensError):
        make_combos("rmsnorm_l1", [2], [], [-1.0], 32)
    with pytest.raises(MusiclensError):
        make_combos("gated", [2], [4], [], 32)


def test_nan_rows_are_skipped_then_fail():
    c = BadRowCounter(max_bad_fraction=0.01, min_rows_before_check=100)
    x = torch.randn(1000, 4)
    x[:5, 0] = float("nan")
    assert c.filter(x).shape[0] == 995 and c.bad == 5
    y = torch.randn(100, 4)
    y[:, 1] = float("inf")
    with pytest.raises(MusiclensError, match="NaN/Inf"):
        c.filter(y)


@pytest.mark.parametrize("arch", ["topk", "rmsnorm_l1"])
def test_bf16_autocast_trains(synthetic, arch):
    """The bf16 path (the default on CUDA; here forced on CPU) trains: finite and improving."""
    X, _ = synthetic
    opts = TrainOptions(batch_size=256, lr=3e-3, warmup_steps=5, autocast="bf16")
    tr = _train(X, arch, steps=40, opts=opts)
    tr2 = _train(X, arch, steps=1, opts=TrainOptions(batch_size=256, lr=3e-3, warmup_steps=5, autocast="bf16"))
    first_fvu = tr2.slots[0].last["fvu"]
    last = tr.slots[0].last
    assert math.isfinite(last["fvu"]) and last["fvu"] < first_fvu
    assert tr.slots[0].sae.W_dec.dtype == torch.float32
