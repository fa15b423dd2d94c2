"""The static report: every audio player and image points at a file that exists; labels are escaped."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from musiclens.report.html import build_report

sys.path.insert(0, str(Path(__file__).parent.parent / "features"))
from small_fixtures import make_sae, make_store  # noqa: E402


def test_report_links_and_escaping(tmp_path):
    from musiclens.features.pipeline import FeaturesConfig, run_features

    store = make_store(tmp_path, n_clips=8, layers=(1,))
    sae = make_sae(tmp_path / "sae", 1, 32, 3, 0)
    feat = tmp_path / "feat"
    run_features(FeaturesConfig(store=str(store), sae=[str(sae)], out=str(feat), max_rate=0.9, max_clip_features=3,
                                report=False))
    cat = json.loads((feat / "catalogue.json").read_text())
    with_clips = [r for r in cat if r["concat"]]
    key = f"{with_clips[0]['sae']}/{with_clips[0]['feature']}"
    (feat / "annotations.json").write_text(json.dumps({
        "summary": [{"strategy": "llm", "features": 1, "labelled": 1, "provenance": "llm:test"}],
        "features": {key: {"llm": {"label": "<script>x</script> trumpet", "confidence": 0.5, "provenance": "p"},
                           "clap": {"label": None, "error": "timeout after 1 s", "provenance": "q"}}}}))
    (feat / "benchmark.json").write_text(json.dumps({
        "description": "d", "recovery": [{"method": "SAE x4 k32", "layer": 1, "expansion": 4, "k": 32, "recovered": 0.5,
                                          "mean_auroc": 0.8, "probe_accuracy": 0.7},
                                         {"method": "SAE x4 k32", "layer": 2, "expansion": 4, "k": 32,
                                          "recovered": 0.7, "mean_auroc": 0.9, "probe_accuracy": 0.8}],
        "concepts": [], "label_precision": [{"strategy": "llm", "labelled": 1, "matched": 0, "precision": 0.0}]}))
    html = build_report(feat).read_text()
    srcs = re.findall(r"src='([^']+)'", html)
    assert any(s.endswith("concat.wav") for s in srcs) and "plots/recovery.png" in srcs
    for s in srcs:
        assert (feat / s).exists(), s
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt; trumpet" in html
    assert "clap: unlabelled (timeout after 1 s)" in html
    assert html.count("<audio") >= 3 * 2          # concat + top clips of 3 features
    assert "Label precision" in html
