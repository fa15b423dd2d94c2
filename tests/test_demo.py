"""`musiclens demo` end to end on tiny-random (the organism run is `make demo`): every stage leaves its output."""

from __future__ import annotations

import json

from musiclens.cli import main


def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny-random", "--out", str(out), "--clips", "6", "--seconds", "2",
                 "--sae-steps", "20"]) == 0
    summary = json.loads((out / "features" / "summary.json").read_text())
    # the catalogue's sustained-firing rule, not the paper's "fires anywhere" (which keeps nothing on the organism)
    assert summary["firing_rule"]["min_fraction"] == 0.2 and summary["filter"]["max_rate"] == 0.5
    assert summary["table"][0]["valid"] > 0
    ann = json.loads((out / "features" / "annotations.json").read_text())
    assert ann["features"] and all({"tagger", "clap"} <= set(a) for a in ann["features"].values())
    for tag in ("slower", "baseline", "faster"):
        assert len(list((out / "steer" / tag).glob("*.wav"))) == 4
        assert json.loads((out / "steer" / f"{tag}.json").read_text())
    page = (out / "index.html").read_text()
    assert "features/report.html" in page and page.count("<audio") == 12
    assert json.loads((out / "config.json").read_text())["min_fraction"] == 0.2
    # an existing folder without --overwrite: one-line error, exit 2, nothing touched
    before = sorted(p.name for p in out.iterdir())
    assert main(["demo", "--model", "tiny-random", "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == before


def test_demo_without_valid_features_still_finishes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny-random", "--out", str(out), "--clips", "6", "--seconds", "2",
                 "--sae-steps", "5", "--max-rate", "0.01"]) == 0
    assert "nothing to label" in capsys.readouterr().out
    assert not (out / "features" / "annotations.json").exists() and (out / "index.html").exists()
