"""The attribute tagger: training on a tiny generated corpus, shapes, save/load, resume; the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from musiclens.corpus import HEADS, CorpusConfig, load_metadata, render_corpus
from musiclens.errors import MusiclensError
from musiclens.measure.tagger import ASSET_DIR, Tagger, TaggerConfig, train_tagger


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("tagger") / "corpus"
    cache = tmp_path_factory.mktemp("scores")
    render_corpus(CorpusConfig(out=str(d), clips=24, seed=777, seconds=4.0, pieces=6, workers=2,
                               cache_dir=str(cache)), progress=False)
    return d


def _clips(corpus, n):
    recs = load_metadata(corpus)[:n]
    return recs, [sf.read(corpus / r["path"], dtype="float32")[0] for r in recs]


def test_train_save_load_resume(corpus, tmp_path):
    out = tmp_path / "tg"
    cfg = TaggerConfig(corpus=str(corpus), out=str(out), epochs=1, batch_size=4, crop_seconds=1.0,
                       channels=[4, 8], embed_dim=16, chroma_dim=8)
    m = train_tagger(cfg, progress=False)
    assert m["epochs_done"] == 1 and set(m["accuracy"]) == set(HEADS)
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in m["accuracy"].values())
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()

    tagger = Tagger.load(out)
    recs, clips = _clips(corpus, 3)
    preds = tagger.predict_batch(clips, 16000)
    assert all(p[h] in HEADS[h] for p in preds for h in HEADS)
    assert tagger.predict(clips[0], 16000) == preds[0]
    emb = tagger.embed_batch(clips, 16000)
    assert emb.shape == (3, 16) and np.isfinite(emb).all()
    assert np.allclose(tagger.embed(clips[1], 16000), emb[1], atol=1e-5)
    # other sample rates are resampled, not rejected
    import librosa
    assert tagger.embed(librosa.resample(clips[0], orig_sr=16000, target_sr=32000), 32000).shape == (16,)
    # save / load round trip is exact
    tagger.save(tmp_path / "copy")
    assert np.allclose(Tagger.load(tmp_path / "copy").embed_batch(clips, 16000), emb)

    # an existing output needs --resume / --overwrite; resume continues the epochs
    with pytest.raises(MusiclensError, match="already exists"):
        train_tagger(cfg, progress=False)
    cfg.epochs, cfg.resume = 2, True
    m2 = train_tagger(cfg, progress=False)
    assert m2["epochs_done"] == 2 and [h["epoch"] for h in m2["history"]] == [1, 2]


def test_bad_tagger_folder(tmp_path):
    with pytest.raises(MusiclensError, match="no tagger"):
        Tagger.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(MusiclensError):
        Tagger.load(tmp_path)


@pytest.mark.skipif(not (ASSET_DIR / "model.safetensors").exists(), reason="shipped tagger weights not present")
def test_shipped_tagger_beats_chance(corpus):
    tagger = Tagger.load()
    assert set(tagger.heads) == set(HEADS) and tagger.embed_dim == 128
    recs, clips = _clips(corpus, 24)
    preds = tagger.predict_batch(clips, 16000)
    acc = {h: np.mean([p[h] == r[h] for p, r in zip(preds, recs)]) for h in HEADS}
    for h in ("instrument", "drums", "brightness", "dynamics", "register"):
        assert acc[h] > 1.0 / len(HEADS[h]) + 0.25, acc


@pytest.mark.skipif(not (ASSET_DIR / "model.safetensors").exists(), reason="shipped tagger weights not present")
def test_too_short_clip_is_a_clear_error():
    tagger = Tagger.load()
    with pytest.raises(MusiclensError, match="too short for the tagger"):
        tagger.predict(np.zeros(1600, dtype=np.float32), 16000)           # 0.1 s
    assert set(tagger.predict(np.zeros(8000, dtype=np.float32), 16000)) == set(HEADS)   # 0.5 s is enough


def test_eval_command_writes_accuracy_and_confusion(corpus, tmp_path):
    import json

    from musiclens.cli import main

    out = tmp_path / "eval.json"
    split = load_metadata(corpus)[0]["split"]
    assert main(["tagger", "eval", "--corpus", str(corpus), "--split", split, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    recs = [r for r in load_metadata(corpus) if r["split"] == split]
    for head in HEADS:
        conf = res[head]["confusion"]
        assert sum(sum(row.values()) for row in conf.values()) == len(recs) == res[head]["n"]
        hits = sum(row.get(true, 0) for true, row in conf.items())
        assert hits / len(recs) == pytest.approx(res[head]["accuracy"], abs=1e-4)
        assert set(conf) == {str(r[head]) for r in recs}  # rows are the true labels
