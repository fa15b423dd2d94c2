"""Caption flips: exactly one concept's words change, to the opposite value's synonym."""

from __future__ import annotations

from musiclens.organism.sensitivity import flip_caption

ROW = {"instrument": "organ", "bpm": 70.0, "brightness": "dark", "dynamics": "soft", "register": "high",
       "mode": "minor", "drums": "light"}


def test_flip_replaces_only_the_concept():
    cap = "A calm, slow, quiet, muffled, high-pitched organ hymn in a sad minor key, with gentle drums, at 70 BPM"
    t = flip_caption(cap, ROW, "tempo")
    assert t == "A brisk, quiet, muffled, high-pitched organ hymn in a sad minor key, with gentle drums, at 165 BPM"
    assert flip_caption(cap, ROW, "brightness") == cap.replace("muffled", "brilliant")
    assert flip_caption(cap, ROW, "register") == cap.replace("high-pitched", "deep")
    assert flip_caption(cap, ROW, "mode") == cap.replace("in a sad minor key", "in a happy major key")
    assert flip_caption(cap, ROW, "instrument") == cap.replace("organ", "trumpet")
    # "gentle" inside the drum phrase is not dynamics; "quiet" is
    assert flip_caption(cap, ROW, "dynamics") == cap.replace("quiet", "powerful")


def test_flip_none_when_not_named_or_neutral():
    cap = "an organ hymn with light percussion"
    assert flip_caption(cap, ROW, "tempo") is None
    assert flip_caption(cap, ROW, "brightness") is None
    assert flip_caption(cap, {**ROW, "drums": "light"}, "drums") is None  # light has no opposite here
    assert flip_caption("a clear organ hymn", {**ROW, "brightness": "neutral"}, "brightness") is None
    assert flip_caption("a slow tone", {"bpm": 70.0}, "register") is None  # factor missing from the row
    assert flip_caption("Fast organ tune", {**ROW, "bpm": 170.0}, "tempo") == "Slow organ tune"


def test_flip_to_every_other_value_reaches_middle_values():
    """--contrast-flips all: middle values get contrasts too, and extremes are told apart from the middle."""
    from musiclens.organism.sensitivity import flip_pairs

    mid = {**ROW, "bpm": 120.0, "brightness": "neutral", "drums": "light"}
    cap = "A steady, clear organ hymn with gentle drums, at 120 BPM"
    rows = [{**mid, "caption": cap}, {**ROW, "caption": "a muffled organ hymn"}]
    # opposite flips (the shipped tune stage and the measured gaps) skip middle values
    assert flip_pairs(rows, [0, 1], "brightness") == [(1, "a brilliant organ hymn")]
    assert flip_pairs(rows, [0], "drums") == []
    got = flip_pairs(rows, [0, 1], "brightness", every=True)
    assert got == [(0, cap.replace("clear", "muffled")), (0, cap.replace("clear", "brilliant")),
                   (1, "a clear organ hymn"), (1, "a brilliant organ hymn")]  # synonym index kept: muffled -> clear
    tempo = [f for _, f in flip_pairs(rows, [0], "tempo", every=True)]
    assert tempo == ["A leisurely, clear organ hymn with gentle drums, at 75 BPM",
                     "A lively, clear organ hymn with gentle drums, at 165 BPM"]
    drums = [f for _, f in flip_pairs(rows, [0], "drums", every=True)]
    assert drums == [cap.replace("with gentle drums", "solo, no drums"),
                     cap.replace("with gentle drums", "with driving rock drums")]
    assert flip_caption(cap, mid, "brightness", to="neutral") is None  # flipping to its own value is no flip
    import pytest

    with pytest.raises(ValueError, match="no value 'loud'"):
        flip_caption(cap, mid, "brightness", to="loud")
