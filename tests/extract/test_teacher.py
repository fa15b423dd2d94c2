"""Teacher-forced extraction through the real CLI, checked against plain HF forwards and the codec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclens.cli import main
from musiclens.store import ActivationStore, verify_store

SR = 16000  # tiny-random's codec rate: files at this rate decode unchanged


def _clip(i: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(i)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.4 * np.sin(2 * np.pi * (150 + 90 * i) * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def wav_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wavs")
    for i in range(4):
        sf.write(d / f"clip{i}.wav", _clip(i, 1.0), SR, subtype="FLOAT")
    sf.write(d / "clip4.wav", _clip(4, 0.7), SR, subtype="FLOAT")  # shorter: padded, only 35 frames stored
    sf.write(d / "silent.wav", np.zeros(SR, np.float32), SR)
    sf.write(d / "tiny.wav", _clip(5, 0.1), SR)
    (d / "empty.wav").write_bytes(b"")
    (d / "junk.flac").write_bytes(b"junk" * 100)
    return d


def _audio(path: Path, seconds: float = 1.0) -> torch.Tensor:
    x, sr = sf.read(path, dtype="float32")
    out = np.zeros(int(seconds * SR), np.float32)
    out[: min(len(x), len(out))] = x[: len(out)]
    return torch.from_numpy(out)


def _extract(*args: str) -> int:
    return main(["extract", "--seconds", "1", "--store-dtype", "float32", "--min-seconds", "0.5", *map(str, args)])


def _hf_hidden(model, ids: torch.Tensor, layer: int, **cond) -> torch.Tensor:
    """Plain HF forward with output_hidden_states: the input of layer l+1 = the output of layer l."""
    with torch.no_grad():
        out = model.hf(decoder_input_ids=ids, output_hidden_states=True, use_cache=False, **cond)
    hs = out.decoder_hidden_states if hasattr(out, "decoder_hidden_states") else out.hidden_states
    return hs[layer + 1][:, -ids.shape[-1]:]  # drop MusicGen-Melody's prepended conditioning


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-melody"])
def test_rows_equal_hf_hidden_states_and_ids_follow_the_delay_pattern(name, wav_dir, tmp_path, capsys, request):
    model = request.getfixturevalue("tiny_model" if name == "tiny-random" else "tiny_melody")
    out = tmp_path / "store"
    assert _extract("--model", name, "--audio", wav_dir, "--layers", "1,3", "--out", out,
                    "--batch-size", "2", "--shard-rows", "60") == 0
    printed = capsys.readouterr().out
    assert "skipped 4 input(s)" in printed
    skipped = {Path(s["path"]).name: s["reason"] for s in json.loads((out / "skipped.json").read_text())}
    assert sorted(skipped) == ["empty.wav", "junk.flac", "silent.wav", "tiny.wav"]
    assert "silent" in skipped["silent.wav"] and "too short" in skipped["tiny.wav"]
    assert verify_store(out) == []
    store = ActivationStore(out)
    assert store.layers == [1, 3] and store.d_model == model.d_model and len(store.shards) > 1
    K, bos = model.n_codebooks, model.pad_token_id
    by_id = {c["id"]: c for c in store.clips}
    assert sorted(by_id) == [f"clip{i}.wav" for i in range(5)]
    for cid, c in by_id.items():
        wav = _audio(wav_dir / cid)
        codec = model.hf.audio_encoder
        with torch.no_grad():
            codes = codec.encode(wav[None, None], bandwidth=codec.config.target_bandwidths[-1]).audio_codes[0, 0]
        F = codes.shape[-1]
        ids = store.input_ids(c["index"])
        assert ids.shape == (K, F + K)
        for k in range(K):  # BOS, then codebook k delayed by k steps, pads elsewhere
            assert ids[k, 0] == bos
            assert torch.equal(ids[k, 1 + k: 1 + k + F], codes[k])
            assert (ids[k, 1: 1 + k] == bos).all() and (ids[k, 1 + k + F:] == bos).all()
        rows = store.clip_rows(c["index"])
        n_valid = 35 if cid == "clip4.wav" else F
        assert len(rows) == n_valid
        assert torch.equal(store.frame_column(rows), torch.arange(n_valid))
        cond = model._conditioning(None, 1)
        for layer in (1, 3):
            ref = _hf_hidden(model, ids, layer, **cond)[0, 1: 1 + n_valid]  # frame f = position f + 1
            torch.testing.assert_close(store.read(layer, rows), ref, atol=1e-5, rtol=1e-4)


def test_captions_and_frame_subsets(wav_dir, tmp_path, tiny_model):
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(json.dumps({"path": f"clip{i}.wav", "caption": f"tone number {i}"}) + "\n"
                            for i in range(5)))
    out = tmp_path / "store"
    assert _extract("--model", "tiny-random", "--audio", wav_dir, "--layers", "early", "--out", out,
                    "--captions", meta, "--frames-per-clip", "12", "--seed", "3") == 0
    store = ActivationStore(out)
    assert store.layers == [2]
    for c in store.clips:
        assert c["meta"]["caption"] == f"tone number {c['id'][4]}"
        rows = store.clip_rows(c["index"])
        frames = store.frame_column(rows)
        assert len(rows) == 12 and bool((frames.diff() > 0).all()) and frames.max() < 50
        text = tiny_model.text_inputs([c["meta"]["caption"]])
        ref = _hf_hidden(tiny_model, store.input_ids(c["index"]), 2, **text)[0, frames + 1]
        torch.testing.assert_close(store.read(2, rows), ref, atol=1e-5, rtol=1e-4)
    first = [c for c in store.clips]
    # the subset is seeded by (seed, clip index), independent of batching
    out2 = tmp_path / "store2"
    assert _extract("--model", "tiny-random", "--audio", wav_dir, "--layers", "2", "--out", out2,
                    "--captions", meta, "--frames-per-clip", "12", "--seed", "3", "--batch-size", "1") == 0
    s2 = ActivationStore(out2)
    for c in first:
        assert torch.equal(s2.frame_column(s2.clip_rows(c["index"])), store.frame_column(store.clip_rows(c["index"])))


def test_bad_invocations_exit_2_and_write_nothing(wav_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert _extract("--model", "no/such-model-folder", "--audio", wav_dir, "--out", out) == 2
    assert _extract("--model", "tiny-random", "--audio", wav_dir, "--layers", "2,99", "--out", out) == 2
    (tmp_path / "empty").mkdir()
    assert _extract("--model", "tiny-random", "--audio", tmp_path / "empty", "--out", out) == 2
    assert _extract("--model", "tiny-random", "--audio", tmp_path / "missing", "--out", out) == 2
    assert main(["extract", "--model", "tiny-random", "--audio", str(wav_dir), "--seconds", "100",
                 "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)
    assert "out of range" in err[1] and "no audio files" in err[2] and "context" in err[4]
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert _extract("--model", "tiny-random", "--audio", wav_dir, "--out", out) == 2
    assert "output exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def _content(store: ActivationStore, layer: int) -> dict:
    rows = slice(None)
    keys = zip(store.clip_column(rows).tolist(), store.frame_column(rows).tolist())
    return dict(zip(keys, store.read(layer, rows)))


def test_killed_extraction_resumes_to_the_same_rows(wav_dir, tmp_path):
    args = ["--model", "tiny-random", "--audio", wav_dir, "--layers", "1,4", "--batch-size", "2",
            "--shard-rows", "40"]
    ref = tmp_path / "ref"
    assert _extract(*args, "--out", ref) == 0
    out = tmp_path / "run"
    env = dict(os.environ, MUSICLENS_TEST_KILL="commit:1", OMP_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "musiclens", "extract", "--seconds", "1", "--store-dtype", "float32",
           "--min-seconds", "0.5", *map(str, args), "--out", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == -9, r.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    assert not m["complete"] and 0 < len(m["clips"]) < 5
    assert _extract(*args, "--out", out) == 2  # exists, no --resume
    assert _extract(*args, "--out", out, "--resume") == 0
    assert verify_store(out) == []
    a, b = ActivationStore(out), ActivationStore(ref)
    assert [c["id"] for c in a.clips] == [c["id"] for c in b.clips]
    for layer in (1, 4):
        ca, cb = _content(a, layer), _content(b, layer)
        assert ca.keys() == cb.keys()
        assert all(torch.equal(ca[k], cb[k]) for k in ca)
    assert len(json.loads((out / "skipped.json").read_text())) == 4


def test_torchrun_two_processes_merge_to_the_single_process_rows(wav_dir, tmp_path):
    args = ["--seconds", "1", "--store-dtype", "float32", "--min-seconds", "0.5", "--model", "tiny-random",
            "--audio", str(wav_dir), "--layers", "2", "--batch-size", "2"]
    ref = tmp_path / "ref"
    assert main(["extract", *args, "--out", str(ref)]) == 0
    out = tmp_path / "dist"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "musiclens",
                        "extract", *args, "--out", str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name.split("-")[1] for p in out.glob("shard-*")) == ["r0", "r1"]
    assert not list(out.glob("manifest-r*.json"))
    assert verify_store(out) == []
    a, b = ActivationStore(out), ActivationStore(ref)
    assert a.rows == b.rows and [c["id"] for c in a.clips] == [c["id"] for c in b.clips]
    for c in a.clips:
        assert torch.equal(a.input_ids(c["index"]), b.input_ids(c["index"])), c["id"]
    ca, cb = _content(a, 2), _content(b, 2)
    assert ca.keys() == cb.keys()
    for k in ca:
        torch.testing.assert_close(ca[k], cb[k], atol=1e-6, rtol=1e-5)
    assert len(json.loads((out / "skipped.json").read_text())) == 4
    assert sum(x.shape[0] for x in a.iter_batches(2, 64, seed=1)) == a.rows  # the merged store streams


def test_every_input_skipped_is_an_error(tmp_path, capsys):
    """A store that holds nothing is exit 2 with the first skip reason, not a success a script would build on."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "junk.wav").write_bytes(b"not audio at all")
    out = tmp_path / "store"
    assert _extract("--model", "tiny-random", "--audio", tmp_path / "in", "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: every input was skipped") and "junk.wav" in err[0]
    assert json.loads((out / "skipped.json").read_text())[0]["path"].endswith("junk.wav")
