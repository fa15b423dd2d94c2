"""The renderer: every factor is really present in the audio, determinism, splits, resume, errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from musiclens.cli import main
from musiclens.corpus import CorpusConfig, load_metadata, plan_corpus, render_corpus
from musiclens.corpus.captions import caption
from musiclens.corpus.factors import REGISTER_TARGET, sample_clip
from musiclens.corpus.sources import load_pool
from musiclens.corpus.synth import Renderer
from musiclens.errors import MusiclensError
from musiclens.measure import centroid, loudness, onset_rate, pitch

SECONDS = 4.0


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scores")


@pytest.fixture(scope="module")
def pool(cache):
    return load_pool(6, cache, workers=1, progress=False)


@pytest.fixture(scope="module")
def renderer():
    return Renderer(16000)


def _plan(pool, **kw):
    p = sample_clip(3, 0, pool, SECONDS)
    p.update(kw)
    src = next(x for x in pool if x.source == p["source"])
    if "register" in kw:
        p["octave_shift"] = int(round((REGISTER_TARGET[kw["register"]] - src.median_midi) / 12))
    return p, src


def test_pool_is_monophonic_and_has_both_sources(pool):
    assert len(pool) == 6
    assert {p.collection for p in pool} == {"chorale", "folksong"}
    for p in pool:
        onsets = [n[0] for n in p.notes]
        assert onsets == sorted(onsets) and len(set(onsets)) == len(onsets)
        assert all(on + d <= nxt + 1e-6 for (on, d, _), nxt in zip(p.notes, onsets[1:]))
        assert p.mode in ("major", "minor")


def test_brightness_filter_moves_centroid(pool, renderer):
    c = {}
    for b in ("dark", "neutral", "bright"):
        plan, src = _plan(pool, brightness=b, program=0, drums="none", velocity=90)
        c[b] = centroid(renderer.render(plan, src), 16000)
    assert c["dark"] < 0.6 * c["neutral"] and c["neutral"] < 0.75 * c["bright"], c


def test_dynamics_change_rms_but_brightness_does_not(pool, renderer):
    lv = {}
    for dyn, vel in (("soft", 36), ("loud", 112)):
        plan, src = _plan(pool, velocity=vel, program=56, drums="none", brightness="neutral")
        lv[dyn] = loudness(renderer.render(plan, src), 16000)
    assert lv["loud"] - lv["soft"] > 10.0, lv
    for b in ("dark", "bright"):
        plan, src = _plan(pool, velocity=112, program=56, drums="none", brightness=b)
        assert abs(loudness(renderer.render(plan, src), 16000) - lv["loud"]) < 1.5


def test_register_shifts_pitch(pool, renderer):
    med = {}
    for reg in ("low", "high"):
        plan, src = _plan(pool, register=reg, program=73, drums="none", brightness="neutral", velocity=90)
        med[reg] = pitch(renderer.render(plan, src), 16000)["median_midi"]
    assert med["high"] - med["low"] > 18, med


def test_drums_add_onsets(pool, renderer):
    plan, src = _plan(pool, drums="none", program=19, bpm=150.0)
    plan_d = dict(plan, drums="rock")
    assert onset_rate(renderer.render(plan_d, src), 16000) > 1.25 * onset_rate(renderer.render(plan, src), 16000)


def test_plan_is_deterministic_and_split_by_piece(pool, tmp_path):
    cfg = CorpusConfig(out=str(tmp_path / "x"), clips=150, seed=5, pieces=6, seconds=SECONDS)
    recs, _ = plan_corpus(cfg, pieces=pool)
    again, _ = plan_corpus(CorpusConfig(out="y", clips=20, seed=5, pieces=6, seconds=SECONDS), pieces=pool)
    assert [r for r, _ in recs[:20]] == [r for r, _ in again]       # clip i does not depend on --clips
    other, _ = plan_corpus(CorpusConfig(out="y", clips=20, seed=6, pieces=6, seconds=SECONDS), pieces=pool)
    assert [r for r, _ in recs[:20]] != [r for r, _ in other]
    split_of = {}
    for r, _ in recs:
        assert split_of.setdefault(r["source"], r["split"]) == r["split"]
    assert set(split_of.values()) == {"train", "valid", "test"}
    assert {r["mode"] for r, _ in recs} == {"major", "minor"}
    assert all(60 <= r["bpm"] <= 180 for r, _ in recs)


def test_captions_vary_and_name_factors(pool):
    plans = [sample_clip(i, 0, pool, SECONDS) for i in range(60)]
    caps = [caption(p) for p in plans]
    assert caps == [caption(p) for p in plans]
    assert len(set(caps)) == len(caps)
    from musiclens.corpus.captions import INSTRUMENT_WORDS
    named = [any(w in c.lower() for w in INSTRUMENT_WORDS[p["instrument"]]) for p, c in zip(plans, caps)]
    assert 0.7 < np.mean(named) < 1.0       # most, but not all, captions name the instrument
    assert min(len(c.split()) for c in caps) < 6 < max(len(c.split()) for c in caps)


def test_render_cli_deterministic_resumable(cache, tmp_path):
    common = ["--clips", "4", "--seed", "2", "--seconds", "2", "--pieces", "6", "--workers", "2",
              "--cache-dir", str(cache)]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["corpus", "render", "--out", str(a)] + common) == 0
    assert main(["corpus", "render", "--out", str(b)] + common) == 0
    meta = load_metadata(a)
    assert len(meta) == 4 and meta == load_metadata(b)
    for r in meta:
        ya, sr = sf.read(a / r["path"], dtype="int16")
        yb, _ = sf.read(b / r["path"], dtype="int16")
        assert sr == 16000 and len(ya) == 32000 and np.array_equal(ya, yb) and np.abs(ya).max() > 100
    keys = {"id", "path", "split", "source", "seconds", "sample_rate", "instrument", "program", "bpm", "register",
            "octave_shift", "dynamics", "velocity", "drums", "mode", "brightness", "caption"}
    assert keys <= set(meta[0])
    # existing output: error without --resume; --resume re-renders only what is missing
    assert main(["corpus", "render", "--out", str(a)] + common) == 2
    (a / meta[1]["path"]).unlink()
    (a / "metadata.jsonl").unlink()
    with pytest.raises(MusiclensError, match="incomplete"):
        load_metadata(a)
    assert main(["corpus", "render", "--out", str(a), "--resume"] + common) == 0
    assert np.array_equal(sf.read(a / meta[1]["path"], dtype="int16")[0], sf.read(b / meta[1]["path"], dtype="int16")[0])
    assert main(["corpus", "render", "--out", str(a), "--resume", "--seed", "3"] + common[:2] + common[4:]) == 2
    assert main(["corpus", "info", str(a), "--json"]) == 0


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["corpus", "render", "--out", str(tmp_path / "z"), "--clips", "0"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["corpus", "info", str(tmp_path / "missing")]) == 2
    (tmp_path / "f").write_text("x")
    with pytest.raises(MusiclensError):
        render_corpus(CorpusConfig(out=str(tmp_path / "f"), clips=1))
    for bad_cfg, msg in ((dict(pieces=2), "--pieces must be >= 3"), (dict(sample_rate=8000), "--sample-rate must be one of"),
                         (dict(seconds=0.5), "--seconds must be >= 1 and <= 60")):  # a config built in Python
        with pytest.raises(MusiclensError, match=msg):
            render_corpus(CorpusConfig(out=str(tmp_path / "c"), clips=1, **bad_cfg))
    assert not (tmp_path / "c").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metadata.jsonl").write_text("{not json\n")
    with pytest.raises(MusiclensError, match="invalid JSON"):
        load_metadata(bad)


def test_corrupt_metadata_is_a_one_line_error(tmp_path):
    """A record missing a key every reader indexes, or a binary file, is named here, not met as a KeyError later."""
    import json

    import pytest

    from musiclens.corpus import load_metadata
    from musiclens.errors import MusiclensError

    meta = tmp_path / "metadata.jsonl"
    meta.write_text(json.dumps({"id": 0, "path": "audio/0.wav", "caption": "x"}) + "\n")
    with pytest.raises(MusiclensError, match=r"metadata.jsonl:1: a clip record without split"):
        load_metadata(tmp_path)
    meta.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(MusiclensError, match="is not a text file"):
        load_metadata(tmp_path)
