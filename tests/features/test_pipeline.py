"""`musiclens features` on a small store: brute-force statistics, filtering, top clips, resume, report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from musiclens.cli import main
from musiclens.features.filtering import FilterRule, classify
from musiclens.features.pipeline import FeaturesConfig, run_features
from musiclens.features.scan import load_saes, scan_store
from musiclens.features.stats import FeatureStats, FiringRule
from musiclens.store import ActivationStore

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from small_fixtures import make_sae, make_store  # noqa: E402


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    store = make_store(root, subset=True)
    saes = [make_sae(root / "sae_l1_x4_k4", 1, 64, 4, 1), make_sae(root / "sae_l2_x2_k3", 2, 32, 3, 2)]
    return root, store, saes


def _brute(store, sae_path):
    from musiclens.sae.io import load_sae

    sae = load_sae(sae_path)
    layer = int(sae.cfg.hook_name.split(".")[1])
    per_clip = {}
    with torch.no_grad():
        for c in store.clips:
            rows = store.clip_rows(c["index"])
            per_clip[c["index"]] = (sae.encode(store.read(layer, rows).float()).numpy(),
                                    store.frame_column(rows).numpy())
    return per_clip


def test_stream_equals_brute_force_on_store_and_resume(small, tmp_path):
    root, store_dir, sae_dirs = small
    store = ActivationStore(store_dir)
    saes = load_saes(sae_dirs)
    rule = FiringRule(threshold=0.05, min_frames=3)
    ck = tmp_path / "ck.pt"
    stats = scan_store(store, saes, rule, top_n=3, rows_per_chunk=100, batch_size=37, checkpoint=ck,
                       checkpoint_every=1)
    assert ck.exists()       # the last checkpoint (before the final chunk) is left for resume
    resumed = scan_store(store, saes, rule, top_n=3, rows_per_chunk=100, batch_size=37, checkpoint=ck, resume=True)
    for s, path in zip(saes, sae_dirs):
        st, st2 = stats[s.name], resumed[s.name]
        for f in ("track_count", "frame_count", "max_act", "hist", "top_clip", "top_peak", "top_start", "top_end"):
            np.testing.assert_array_equal(getattr(st, f), getattr(st2, f))
        pc = _brute(store, path)
        allz = np.concatenate([z for z, _ in pc.values()])
        fire = allz > rule.threshold
        assert st.n_frames == len(allz) and st.n_tracks == len(pc)
        np.testing.assert_array_equal(st.frame_count, fire.sum(0))
        np.testing.assert_allclose(st.max_act, allz.max(0), rtol=1e-5)
        np.testing.assert_allclose(st.mean_active, np.where(fire.sum(0) > 0, (allz * fire).sum(0) /
                                                            np.maximum(fire.sum(0), 1), 0), rtol=1e-4)
        tfire = np.array([((z > rule.threshold).sum(0) >= 3) for z, _ in pc.values()])
        np.testing.assert_array_equal(st.track_count, tfire.sum(0))
        idx = list(pc)
        for j in range(s.d_sae):
            peaks = np.array([pc[c][0][:, j].max() if tfire[i, j] else -np.inf for i, c in enumerate(idx)])
            n = min(3, int(np.isfinite(peaks).sum()))
            best = [idx[i] for i in np.argsort(-peaks)[:n]]
            assert sorted(st.top_clip[j, :n]) == sorted(best)
            if n:   # peak is reported as a frame number (the store keeps a subset of frames)
                z, fr = pc[int(st.top_clip[j, 0])]
                assert st.top_peak[j, 0] == fr[z[:, j].argmax()]
                assert fr[0] <= st.top_start[j, 0] <= st.top_peak[j, 0] <= st.top_end[j, 0] <= fr[-1]


def test_features_command_outputs(small, tmp_path):
    root, store_dir, sae_dirs = small
    out = tmp_path / "feat"
    rc = main(["features", "--store", str(store_dir), "--sae", ",".join(map(str, sae_dirs)), "--out", str(out),
               "--top-n", "4", "--min-rate", "0.1", "--max-rate", "0.6", "--max-clip-features", "5",
               "--rows-per-chunk", "150", "--min-seconds", "0.3"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    cat = pd.read_parquet(out / "catalogue.parquet")
    for row in summary["table"]:
        st = FeatureStats.load(out / "stats" / f"{row['sae']}.npz")
        status = classify(st.activation_rate, FilterRule(0.1, 0.6))
        assert row["valid"] == int((status == "valid").sum()) and row["features"] == st.d_sae
        assert row["dead"] + row["too_rare"] + row["too_common"] + row["valid"] == row["features"]
        sub = cat[cat.sae == row["sae"]]
        assert (sub.status == "valid").sum() == row["valid"]
    assert summary["table"][0]["expansion"] == 4 and summary["table"][0]["k"] == 4
    assert summary["layer_prediction"]["layers"] == [1, 2] and summary["layer_prediction"]["chance"] == 0.5
    assert sum(r["valid"] for r in summary["table"]) > 0

    # top clips contain the feature's top activation: the WAV equals the source audio around the peak
    store = ActivationStore(store_dir)
    valid = cat[(cat.status == "valid") & cat.concat.notna()]
    assert len(valid) == sum(min(5, r["valid"]) for r in summary["table"])
    checked = 0
    for _, r in valid.head(6).iterrows():
        src_clip = int(r.top_clips[0])
        y, sr = sf.read(out / r.clip_dir / r.clip_files[0], dtype="float32")
        src, _ = sf.read(store.clip_info(src_clip)["meta"]["source"], dtype="float32")
        a = int(round(r.top_start_s[0] * sr))
        a = max(0, min(a, int(round(r.top_peak_s[0] * sr - 0.15 * sr))))    # padded to >= 0.3 s around the peak
        # locate the cut inside its source by exact match of the first samples
        hits = [i for i in range(len(src) - len(y) + 1) if np.allclose(src[i:i + 64], y[:64], atol=1e-4)]
        assert len(hits) == 1
        start_s, end_s = hits[0] / sr, (hits[0] + len(y)) / sr
        assert start_s <= r.top_peak_s[0] <= end_s
        assert start_s <= r.top_start_s[0] + 1e-3 or end_s - start_s >= 0.3 - 1e-3
        concat, _ = sf.read(out / r.clip_dir / r.concat, dtype="float32")
        assert len(concat) >= len(y)
        checked += 1
    assert checked > 0
    html = (out / "report.html").read_text()
    assert "<audio" in html and "plots/density.png" in html and (out / "plots" / "density.png").exists()
    # existing output without --overwrite: one-line error, exit 2
    assert main(["features", "--store", str(store_dir), "--sae", str(sae_dirs[0]), "--out", str(out)]) == 2


def test_features_command_notes_a_filter_that_drops_most_features(small, tmp_path, capsys):
    root, store_dir, sae_dirs = small
    args = ["features", "--store", str(store_dir), "--sae", str(sae_dirs[0]), "--no-clips", "--no-report"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    row = summary["table"][0]
    printed = capsys.readouterr().out
    assert (row["too_common"] > row["features"] / 2) == ("--min-fraction 0.2 --max-rate 0.5" in printed)
    assert row["too_common"] > row["features"] / 2     # random TopK features fire somewhere in most tracks
    assert main(args + ["--out", str(tmp_path / "b"), "--min-fraction", "0.2"]) == 0
    assert "--min-fraction 0.2" not in capsys.readouterr().out   # a sustained-firing rule is already chosen


def test_bad_inputs(small, tmp_path, capsys):
    root, store_dir, sae_dirs = small
    assert main(["features", "--store", str(tmp_path / "nope"), "--sae", str(sae_dirs[0]),
                 "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err
    wrong = make_sae(tmp_path / "wrong", 5, 32, 2, 0)
    assert main(["features", "--store", str(store_dir), "--sae", str(wrong), "--out", str(tmp_path / "o")]) == 2
    assert "layer 5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(Exception):
        run_features(FeaturesConfig(store=str(store_dir), sae=[], out=str(tmp_path / "o2")))
