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
