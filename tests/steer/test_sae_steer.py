"""Which catalogue rows belong to an SAE: the names `musiclens features` gives SAEs."""

import json

import pytest

from musiclens.errors import MusiclensError
from musiclens.steer.sae_steer import catalogue_rows_for


def _catalogue(tmp_path, rows):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "catalogue.json").write_text(json.dumps({"features": rows}))
    return tmp_path / "features"


def test_prefixed_names_of_a_sweep_are_matched(tmp_path):
    # a sweep folder holds several SAEs per layer; `features` names them L4_<dir> when dir names repeat
    rows = [{"sae": "L4_topk_x4_k32", "layer": 4, "feature": 1}, {"sae": "L4_topk_x32_k32", "layer": 4, "feature": 2},
            {"sae": "L2_topk_x32_k32", "layer": 2, "feature": 3}]
    cat = _catalogue(tmp_path, rows)
    got = catalogue_rows_for(cat, tmp_path / "sae" / "L4" / "topk_x32_k32", 4)
    assert [r["feature"] for r in got] == [2]
    assert [r["feature"] for r in catalogue_rows_for(cat, tmp_path / "sae" / "L2" / "topk_x32_k32", 2)] == [3]


def test_plain_name_and_ambiguous_layer(tmp_path):
    rows = [{"sae": "mine", "layer": 4, "feature": 5}, {"sae": "other", "layer": 4, "feature": 6}]
    cat = _catalogue(tmp_path, rows)
    assert [r["feature"] for r in catalogue_rows_for(cat, tmp_path / "mine", 4)] == [5]
    with pytest.raises(MusiclensError, match="several SAEs at layer 4"):
        catalogue_rows_for(cat, tmp_path / "unknown", 4)
