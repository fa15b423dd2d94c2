"""The benches' shared helpers: result files, and the organisms a bench compares (folders, or past commits)."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from musiclens.bench_utils import add_organism_model_args, organism_models, shipped_at
from musiclens.errors import MusiclensError


def test_model_args_default_to_the_shipped_organism_and_check_folders(tmp_path):
    ap = argparse.ArgumentParser()
    add_organism_model_args(ap)
    a = ap.parse_args([])
    with organism_models(a.model, a.rev) as models:
        assert models == [("shipped organism", None)]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    a = ap.parse_args(["--model", "shipped", "--model", str(tmp_path / "mine")])
    with organism_models(a.model, a.rev) as models:
        assert [m for _, m in models] == [None, tmp_path / "mine"]
    with pytest.raises(MusiclensError, match="no organism folder"):
        with organism_models([str(tmp_path / "missing")], []):
            pass


IN_GIT = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True).returncode == 0


@pytest.mark.skipif(not IN_GIT, reason="a checkout without git history has no past commits to read")
def test_a_past_commit_is_read_from_git_history_into_a_folder_that_lives_with_the_context(tmp_path):
    with organism_models([], ["HEAD"]) as models:
        name, folder = models[-1]
        assert name == "shipped at HEAD" and json.loads((folder / "config.json").read_text())["model_type"]
        assert (folder / "model.safetensors").stat().st_size > 1_000_000
    assert not folder.exists()
    with pytest.raises(MusiclensError, match="no shipped organism at"):
        shipped_at("0000000000000000000000000000000000000000", tmp_path / "x")


def test_feature_steering_bench_pools_concept_checks_and_rejects_bad_input(tmp_path):
    import importlib.util
    import subprocess
    import sys

    path = Path(__file__).resolve().parent.parent / "bench" / "feature_steering.py"
    spec = importlib.util.spec_from_file_location("bench_feature_steering", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    per_sae = [{"features": [
        {"improvement": 0.1, "concept_checks": [{"concept": "brightness=dark", "tagger_rises": True,
                                                 "moved_as_expected": True}]},
        {"improvement": -0.2, "concept_checks": [{"concept": "brightness=neutral", "tagger_rises": False},
                                                  {"concept": "drums=rock", "tagger_rises": True}]}]},
        {"features": [{"improvement": 0.3}]}]
    s = mod.summarise(per_sae)
    assert (s["features"], s["saes_tested"], s["concept_pairs"], s["estimator_pairs"]) == (3, 2, 3, 1)
    assert s["clap_share_positive"] == 2 / 3 and s["tagger_rises_share"] == 2 / 3
    assert s["estimator_as_expected_share"] == 1.0
    assert s["estimator_as_expected_p"] == 0.5 and s["tagger_rises_p"] == 0.5    # 1 of 1; 2 of 3
    assert s["by_head"]["brightness"] == {"pairs": 2, "tagger_rises_share": 0.5, "estimator_pairs": 1,
                                          "estimator_as_expected_share": 1.0, "tagger_pairs": 2,
                                          "tagger_rises_p": 0.75, "estimator_as_expected_p": 0.5}
    r = subprocess.run([sys.executable, str(path), "--features-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not an annotated" in r.stderr
