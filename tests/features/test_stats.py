"""Streaming statistics equal a brute-force computation (no store needed here)."""

from __future__ import annotations

import numpy as np
import torch

from musiclens.features.filtering import FilterRule, classify, summary_row
from musiclens.features.stats import HIST_EDGES, FiringRule, StatsAccumulator


def _clips(seed=0, n=13, F=12):
    g = torch.Generator().manual_seed(seed)
    clips = []
    for i in range(n):
        T = int(torch.randint(5, 40, (1,), generator=g))
        a = torch.rand(T, F, generator=g) * 3
        a[torch.rand(T, F, generator=g) < 0.8] = 0          # sparse
        a[:, 0] = 0                                         # dead feature
        a[:, 1] = 0.5 + 0.1 * i                             # fires everywhere, ranking by clip
        clips.append(a)
    return clips


def _spans_ref(col: np.ndarray, thr: float, gap: int):
    peak = int(col.argmax())
    fr = np.nonzero(col > thr)[0]
    groups = np.split(fr, np.nonzero(np.diff(fr) > gap + 1)[0] + 1)
    g = next(g for g in groups if peak in g)
    return peak, int(g[0]), int(g[-1])


def test_streaming_equals_brute_force():
    rule = FiringRule(threshold=0.2, min_frames=2, min_fraction=0.1, span_gap=2)
    clips = _clips()
    F, N = clips[0].shape[1], 4
    acc = StatsAccumulator(F, top_n=N, rule=rule)
    for chunk in (range(0, 5), range(5, 6), range(6, 13)):        # uneven batches
        acc.update(torch.cat([clips[i] for i in chunk]), list(chunk), [len(clips[i]) for i in chunk])
    st = acc.result()

    allf = torch.cat(clips).numpy()
    fire = allf > rule.threshold
    assert st.n_tracks == len(clips) and st.n_frames == allf.shape[0]
    np.testing.assert_array_equal(st.frame_count, fire.sum(0))
    np.testing.assert_allclose(st.max_act, allf.max(0), rtol=1e-6)
    np.testing.assert_allclose(st.sum_active, np.where(fire, allf, 0).sum(0), rtol=1e-5)
    tf = np.array([[(c.numpy() > rule.threshold)[:, j].sum() >= max(rule.min_frames, rule.min_fraction * len(c) - 1e-6)
                    for j in range(F)] for c in clips])
    np.testing.assert_array_equal(st.track_count, tf.sum(0))
    assert st.track_count[0] == 0 and st.activation_rate[1] == 1.0
    for j in range(F):
        vals = allf[fire[:, j], j]
        ref = np.bincount(np.searchsorted(HIST_EDGES, vals, side="right"), minlength=len(HIST_EDGES) + 1)
        np.testing.assert_array_equal(st.hist[j], ref)
        np.testing.assert_allclose(st.mean_active[j], vals.mean() if len(vals) else 0.0, rtol=1e-5)
        peaks = np.array([c[:, j].max().item() if tf[i, j] else -np.inf for i, c in enumerate(clips)])
        order = np.argsort(-peaks, kind="stable")[:N]
        order = [i for i in order if np.isfinite(peaks[i])]
        np.testing.assert_allclose(st.top_score[j, :len(order)], peaks[order], rtol=1e-6)
        assert set(st.top_clip[j, :len(order)]) == set(order)
        assert (st.top_clip[j, len(order):] == -1).all()
        for slot in range(len(order)):
            c = int(st.top_clip[j, slot])
            peak, s, e = _spans_ref(clips[c][:, j].numpy(), rule.threshold, rule.span_gap)
            assert clips[c][st.top_peak[j, slot], j] == clips[c][:, j].max()
            assert (st.top_start[j, slot], st.top_end[j, slot]) == (s, e), (j, c)
    # feature 1 ranks clips by index
    assert list(st.top_clip[1]) == [12, 11, 10, 9]


def test_save_load_roundtrip(tmp_path):
    acc = StatsAccumulator(12, top_n=3)
    clips = _clips(1, n=4)
    acc.update(torch.cat(clips), [0, 1, 2, 3], [len(c) for c in clips])
    st = acc.result()
    st.save(tmp_path / "s.npz")
    from musiclens.features.stats import FeatureStats
    st2 = FeatureStats.load(tmp_path / "s.npz")
    assert st2.n_tracks == 4
    np.testing.assert_array_equal(st2.top_clip, st.top_clip)
    np.testing.assert_array_equal(st2.hist, st.hist)


def test_filter_counts():
    rate = np.array([0.0, 0.005, 0.01, 0.1, 0.25, 0.2501, 1.0, 0.0])
    status = classify(rate, FilterRule())
    assert list(status) == ["dead", "too_rare", "valid", "valid", "valid", "too_common", "too_common", "dead"]
    row = summary_row(status, layer=3, expansion=4, k=32)
    assert (row["dead"], row["too_rare"], row["valid"], row["too_common"]) == (2, 1, 3, 2)
    status2 = classify(rate, FilterRule(min_rate=0.0, max_rate=1.0))
    assert (status2 == "valid").sum() == 6
