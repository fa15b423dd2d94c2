"""Ground-truth benchmark on a small labelled store: planted concept directions must be found."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from musiclens.features.benchmark import auroc_matrix, label_precision
from musiclens.features.layerpred import layer_prediction

sys.path.insert(0, str(Path(__file__).parent))
from small_fixtures import D, make_sae, make_store  # noqa: E402


def test_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(50) < 0.3
    s = rng.standard_normal((50, 4))
    s[:, 1] = y + 0.1 * rng.standard_normal(50)
    s[:, 2] = np.round(s[:, 2])          # ties
    ref = [roc_auc_score(y, s[:, j]) for j in range(4)]
    np.testing.assert_allclose(auroc_matrix(s, y), ref)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(1)
    labels = [{"instrument": ["piano", "flute"][i % 2], "drums": ["none", "rock"][int(rng.integers(2))]}
              for i in range(40)]
    store = make_store(root, n_clips=40, layers=(1, 2), labels=labels, shard_rows=400)
    dirs = torch.load(root / "dirs.pt")
    names = sorted(dirs)
    from musiclens.sae.io import load_sae, write_sae_files

    saes = []
    for L in (1, 2):
        path = make_sae(root / f"sae{L}", L, 32, 6, L)
        sae = load_sae(path)
        with torch.no_grad():     # features 0..3 read the planted directions
            for j, n in enumerate(names):
                u = dirs[n] / dirs[n].norm()
                sae.enc_weight[j] = u
                sae.W_dec[j] = u
        write_sae_files(sae, path)
        saes.append(path)
    return root, store, saes, names


def test_benchmark_finds_planted_concepts(labelled, tmp_path):
    from musiclens.cli import main

    root, store, saes, names = labelled
    feat = tmp_path / "feat"
    assert main(["features", "--store", str(store), "--sae", ",".join(map(str, saes)), "--out", str(feat),
                 "--no-clips", "--max-rate", "1.0"]) == 0
    # annotations to score: feature 0 labelled right, feature 1 labelled with a wrong concept, one unmapped
    sae0 = json.loads((feat / "saes.json").read_text())[0]["name"]
    ann = {"features": {f"{sae0}/0": {"llm": {"label": names[0].split("=")[1], "concepts": [names[0]]}},
                        f"{sae0}/1": {"llm": {"label": "x", "concepts": [names[2]]}},
                        f"{sae0}/5": {"llm": {"label": "melodic", "concepts": []}}}, "summary": []}
    (feat / "annotations.json").write_text(json.dumps(ann))
    out = tmp_path / "bench"
    assert main(["benchmark", "concepts", "--store", str(store), "--features", str(feat), "--out", str(out)]) == 0
    r = json.loads((out / "benchmark.json").read_text())
    assert sorted(r["concept_values"]) == names and r["half_a"] + r["half_b"] == 40
    assert "instrument=trumpet" in r["skipped_concepts"]
    rec = {(x["method"].split(" ")[0], x["layer"]): x for x in r["recovery"]}
    for L in (1, 2):
        assert rec[("SAE", L)]["recovered"] == 1.0
        assert rec[("DiffMean", L)]["mean_auroc"] > 0.95 and rec[("linear", L)]["mean_auroc"] > 0.9
    for c in r["concepts"]:
        if c["method"].startswith("SAE"):
            assert c["feature"] == names.index(c["concept"]) and c["auroc"] >= 0.9
    lp = {x["strategy"]: x for x in r["label_precision"]}["llm"]
    assert (lp["labelled"], lp["mapped"], lp["matched"]) == (3, 2, 1)
    # the features pass read the same labelled store, so the clips each label was read from are known
    assert lp["source_features"] == 2 and lp["source_base_rate"] is not None
    fa = r["filter_audit"]
    assert fa["filter"]["max_rate"] == 1.0 and {b["concept"] for b in fa["best"]} == set(names)
    assert all(b["status"] == "valid" and 0 < b["track_rate"] <= 1 for b in fa["best"])
    assert fa["counts"]["valid"] == len(names)
    assert "layer_prediction" in r and r["layer_prediction"]["chance"] == 0.5
    html = (feat / "report.html").read_text()
    assert "Ground-truth benchmark" in html and (feat / "plots" / "recovery.png").exists()
    assert main(["benchmark", "concepts", "--store", str(store), "--out", str(tmp_path / "b2")]) == 2  # no SAEs


def test_label_precision_counts():
    labels = [{"instrument": "piano"}, {"instrument": "flute"}] * 5
    feats = {"s": np.array([[1.0, 0.0], [0.0, 1.0]] * 5)}
    ann = {"features": {"s/0": {"t": {"label": "p", "concepts": ["instrument=piano"]}},
                        "s/1": {"t": {"label": "p", "concepts": ["instrument=piano"]}},
                        "s/2": {"t": {"label": None}}}}
    (row,) = label_precision(ann, feats, labels, 0.75)
    assert (row["labelled"], row["mapped"], row["matched"], row["precision"]) == (2, 2, 1, 0.5)
    # top held-out clips: feature 0 fires only on piano clips (share 1), feature 1 only on flute clips (share 0)
    assert row["heldout_top_share"] == 0.5 and row["heldout_base_rate"] == 0.5 and row["heldout_majority"] == 1
    assert row["source_share"] is None and row["source_features"] == 0


def test_label_precision_reads_the_clips_the_label_came_from():
    """A label right about the clips it was read from, on a feature that does not generalise."""
    labels = [{"instrument": "piano"}, {"instrument": "flute"}] * 5
    rng = np.random.default_rng(0)
    feats = {"s": rng.random((10, 1))}                      # held out: unrelated to the label
    ann = {"features": {"s/0": {"t": {"label": "piano", "concepts": ["instrument=piano"]}}}}
    source = {i: {"instrument": "piano" if i < 3 else "flute"} for i in range(12)}
    (row,) = label_precision(ann, feats, labels, 0.99, source, {"s/0": [0, 1, 2, 5]}, top=4)
    assert row["matched"] == 0 and row["source_features"] == 1
    assert row["source_share"] == 0.75 and row["source_base_rate"] == 0.25
    # top 4 held-out clips by score, of which a share carry "piano"
    best = np.argsort(-feats["s"][:, 0])[:4]
    assert row["heldout_top_share"] == np.mean([labels[i]["instrument"] == "piano" for i in best])
    # a feature that never fires on held-out clips has no top clips: share 0, not undefined
    (row,) = label_precision(ann, {"s": np.zeros((10, 1))}, labels, 0.75, top=4)
    assert row["heldout_top_share"] == 0.0 and row["heldout_majority"] == 0


def test_layer_prediction_separable():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(D), rng.standard_normal(D)
    dec = [(1, a + 0.3 * rng.standard_normal((200, D))), (5, b + 0.3 * rng.standard_normal((150, D)))]
    r = layer_prediction(dec, hidden=16)
    assert r["features_per_layer"] == 150 and r["chance"] == 0.5 and r["accuracy"] > 0.95
    dec = [(1, rng.standard_normal((200, D))), (5, rng.standard_normal((200, D)))]
    assert layer_prediction(dec, hidden=16)["accuracy"] < 0.75


def test_source_labels_from_audio_features_via_the_corpus(tmp_path):
    """A features pass over audio files (no store): the clips it read are found in the corpus by file name."""
    from musiclens.features.benchmark import source_labels

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{"id": i, "path": f"audio/{i:06d}.wav", "split": "train", "caption": "", "instrument": inst,
             "bpm": bpm, "register": "mid", "dynamics": "loud", "drums": "none", "mode": "major",
             "brightness": "dark"} for i, (inst, bpm) in enumerate([("flute", 70.0), ("organ", 170.0)])]
    (corpus / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    feat = tmp_path / "feat"
    feat.mkdir()
    (feat / "summary.json").write_text(json.dumps({"store": str(tmp_path / "list.txt")}))
    (feat / "clips.json").write_text(json.dumps([
        {"index": 0, "id": "/elsewhere/audio/000001.wav", "path": "/elsewhere/audio/000001.wav"},
        {"index": 1, "id": "/elsewhere/audio/000000.wav", "path": "/elsewhere/audio/000000.wav"},
        {"index": 2, "id": "/elsewhere/other.wav", "path": "/elsewhere/other.wav"}]))
    got = source_labels(feat, str(corpus))
    assert set(got) == {0, 1}                                  # the clip the corpus does not hold is left out
    assert got[0]["instrument"] == "organ" and got[0]["tempo"] == "fast"
    assert got[1]["instrument"] == "flute" and got[1]["tempo"] == "slow"
    assert source_labels(feat, None) == {}                     # nothing to look the clips up in
