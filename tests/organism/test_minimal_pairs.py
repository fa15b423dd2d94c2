"""Minimal pairs: caption rewrites per level, the paired statistics, and a short run on the shipped organism."""

from __future__ import annotations

import numpy as np
import pytest

from musiclens.corpus.captions import BRIGHT_WORDS
from musiclens.errors import MusiclensError
from musiclens.organism.minimal_pairs import _paired, minimal_pair_eval, pair_captions

ROW = {"instrument": "organ", "bpm": 70.0, "brightness": "dark", "register": "low", "dynamics": "soft",
       "drums": "none", "mode": "minor", "split": "test"}
CAPTIONS = ["a slow, dark organ chorale in a minor key", "a muffled, quiet pipe organ hymn", "an organ tune"]


def _rows():
    return [dict(ROW, id=f"{i:03d}", caption=c) for i, c in enumerate(CAPTIONS)]


def test_pair_captions_rewrites_only_the_concept_words():
    pairs = pair_captions(_rows(), "brightness", n=10)
    assert len(pairs) == 2  # "an organ tune" names no brightness and is skipped
    for row, versions in pairs:
        assert list(versions) == ["dark", "neutral", "bright"]
        assert versions["dark"] == row["caption"]  # the own level keeps the caption as written
        assert len(set(versions.values())) == 3
        for lv, cap in versions.items():
            # the level's own word is there, and everything else is word for word the caption
            words = {w for ws in BRIGHT_WORDS.values() for p in ws for w in p.replace(",", "").split()}
            assert any(p in cap for p in BRIGHT_WORDS[lv])
            assert ([w for w in cap.replace(",", "").split() if w not in words]
                    == [w for w in row["caption"].replace(",", "").split() if w not in words])
    assert pair_captions(_rows(), "brightness", n=1) == pairs[:1]


def test_pair_captions_tempo_rewrites_the_bpm_and_levels_are_checked():
    rows = [dict(ROW, id="a", caption="a slow organ chorale at 70 BPM")]
    (_, v), = pair_captions(rows, "tempo", n=5, levels=["slow", "fast"])
    assert v == {"slow": "a slow organ chorale at 70 BPM", "fast": "a fast organ chorale at 165 BPM"}
    with pytest.raises(MusiclensError):
        pair_captions(rows, "tempo", n=5, levels=["slow", "quick"])
    with pytest.raises(MusiclensError):
        pair_captions(rows, "instrument", n=5)


def test_paired_statistics():
    a = np.array([100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0])
    up = _paired(a, a * 1.5, ratio=True)
    assert up["share_in_order"] == 1.0 and up["median_ratio"] == pytest.approx(1.5) and up["p_one_sided"] < 0.01
    down = _paired(a, a - 3.0, ratio=False)
    assert down["share_in_order"] == 0.0 and down["median_difference"] == pytest.approx(-3.0)
    assert down["p_one_sided"] > 0.99
    assert _paired(a, np.where(a > 400, np.nan, a * 2), ratio=True)["n"] == 4  # non-finite pairs are dropped


def test_minimal_pairs_on_the_shipped_organism():
    """Two test-style captions at every brightness level: the organism puts bright above dark in both."""
    import musiclens.models.organism as O
    from musiclens.organism.evaluate import load_tagger

    model, tok = O.load_organism_hf()
    res = minimal_pair_eval(model, tok, _rows(), "brightness", n=2, seconds=0.5, seed=0, tagger=load_tagger())
    assert res["n_captions"] == 2 and res["own_level"] == {"dark": 2, "neutral": 0, "bright": 0}
    cen = res["measures"]["centroid"]
    assert cen["paired"]["dark<bright"]["n"] == 2 and cen["paired"]["dark<bright"]["share_in_order"] == 1.0
    assert all(0.0 <= s <= 1.0 for s in res["tagger"].values())
    assert [sorted(p["centroid"]) for p in res["per_caption"]] == [["bright", "dark", "neutral"]] * 2
    # the model card's table row for it
    from musiclens.organism.card import _minimal_pair_lines

    row = next(x for x in _minimal_pair_lines({"brightness": res}) if x.startswith("| brightness"))
    assert row.startswith("| brightness (centroid) | 2 | dark / neutral / bright: ") and "dark<bright: p=" in row
    assert "% in order, x" in row and row.count(" %") >= 3 + 3  # three paired shares, three tagger shares
