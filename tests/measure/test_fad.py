"""FAD: exact on known Gaussians, agrees with the textbook sqrtm formula, stable when singular."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from musiclens.errors import MusiclensError
from musiclens.measure.fad import MelEmbedder, embed_set, fad, frechet_distance


def test_closed_form_for_diagonal_gaussians():
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    sa, sb = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])       # variances
    want = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(sa) - np.sqrt(sb)) ** 2)
    assert frechet_distance(mu_a, np.diag(sa), mu_b, np.diag(sb)) == pytest.approx(want, rel=1e-10)


def test_matches_scipy_sqrtm_on_full_rank_data():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb)
           - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb).real))
    assert fad(a, b) == pytest.approx(ref, rel=1e-6)
    assert fad(a, b) == pytest.approx(fad(b, a), rel=1e-9)


def test_identical_and_singular_sets():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 40))                     # 5 clips, 40-d: rank-deficient covariance
    assert fad(a, a) == pytest.approx(0.0, abs=1e-8)
    d = fad(a, rng.normal(size=(7, 40)) + 1.0)
    assert np.isfinite(d) and d > 40 * 0.9          # the mean shift alone contributes 40


def test_bad_inputs():
    rng = np.random.default_rng(2)
    with pytest.raises(MusiclensError, match="widths"):
        fad(rng.normal(size=(4, 3)), rng.normal(size=(4, 5)))
    with pytest.raises(MusiclensError, match="NaN"):
        fad(np.full((4, 3), np.nan), rng.normal(size=(4, 3)))
    with pytest.raises(MusiclensError, match="at least 2"):
        fad(rng.normal(size=(1, 3)), rng.normal(size=(4, 3)))


def test_mel_embedder_separates_timbres():
    sr = 16000
    t = np.arange(sr) / sr
    low = [np.sin(2 * np.pi * f * t).astype(np.float32) * 0.3 for f in (200, 220, 240)]
    high = [np.sin(2 * np.pi * f * t).astype(np.float32) * 0.3 for f in (3000, 3300, 3600)]
    low2 = [np.sin(2 * np.pi * f * t).astype(np.float32) * 0.3 for f in (210, 230, 250)]
    emb = MelEmbedder()
    e_low, e_high, e_low2 = (embed_set(emb, s, sr) for s in (low, high, low2))
    assert e_low.shape[1] == emb.n_mels and e_low.shape[0] > 3 * 5   # frame-level rows
    assert fad(e_low, e_low2) < fad(e_low, e_high)
