"""`musiclens train-sae` / `sae eval` end to end on a store extracted from `tiny-random`.

The store's clips are sampled from the clean model itself (guidance 1, caption
kept), so the expected clean cross-entropy is the entropy and every other
run's expected excess is its KL from clean (>= 0): CE(clean) <= CE(spliced) <=
CE(zero-ablated) is what a useful SAE must show.
"""

from __future__ import annotations

import json

import pytest
import torch

from musiclens.cli import main
from musiclens.sae import load_sae

CAPTIONS = ["a slow organ chorale", "fast drums", "bright piano", "dark strings"]
LAYERS = (1, 3)


def _write_store(model, path, n_clips=32, frames=100, nan_rows=0, empty=False):
    from musiclens.store import StoreWriter

    with StoreWriter(path, model_name="tiny-random", weights_hash=model.weights_hash, layers=list(LAYERS),
                     d_model=model.d_model, dtype="float32") as w:
        if empty:
            return
        for s in range(0, n_clips, 16):
            prompts = [CAPTIONS[(s + j) % 4] for j in range(16)]
            codes = model.generate(prompts, seed=s, guidance_scale=1.0, n_frames=frames).codes
            ids = model.decoder_input_ids(codes)
            res = model.residuals(ids, [f"layer.{i}" for i in LAYERS], captions=prompts)
            pos = model.frame_positions(frames)
            for j in range(16):
                acts = {i: res[f"layer.{i}"][j, pos].clone() for i in LAYERS}
                if nan_rows and s + j == 0:
                    for i in LAYERS:
                        acts[i][:nan_rows] = float("nan")
                w.add_clip(f"c{s + j}", acts, torch.arange(frames), ids.reshape(16, model.n_codebooks, -1)[j],
                           meta={"caption": prompts[j]})


@pytest.fixture(scope="module")
def store(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("sae_store") / "acts"
    before = torch.get_num_threads()
    torch.set_num_threads(1)        # a tiny model: one thread is faster (see conftest._one_thread)
    try:
        _write_store(tiny_model, path)
    finally:
        torch.set_num_threads(before)
    return path


def test_train_sae_with_spliced_evaluation(store, tmp_path):
    out = tmp_path / "sae"
    rc = main(["train-sae", "--store", str(store), "--layer", "3", "--expansion", "2", "--k", "1",
               "--batch-size", "256", "--epochs", "8", "--splice-clips", "32", "--out", str(out)])
    assert rc == 0
    for f in ("cfg.json", "sae_weights.safetensors", "metrics.json", "density.png", "config.json"):
        assert (out / f).is_file(), f
    assert not (tmp_path / "sae.partial").exists()
    m = json.loads((out / "metrics.json").read_text())
    assert m["l0"] <= 1.0 and 0 <= m["fvu"] < 0.5 and m["cosine"] > 0.8
    sp = m["spliced"]
    assert sp["ce_clean"] <= sp["ce_spliced"] <= sp["ce_zero"], sp
    assert sp["kl_spliced"] < sp["kl_zero"] and sp["ce_loss_recovered"] > 0.5
    assert sp["tokens"] > 10000
    sae = load_sae(out)
    assert sae.cfg.hook_name == "layer.3" and sae.cfg.model_name == "tiny-random" and sae.d_sae == 64
    # `sae eval` reproduces the reconstruction metrics on the same sample
    rc = main(["sae", "eval", str(out), "--store", str(store), "--splice-clips", "0", "--seed", "104729",
               "--out", str(tmp_path / "eval.json")])
    assert rc == 0
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["fvu"] == pytest.approx(m["fvu"], rel=1e-4)


def test_sweep_trains_every_combination(store, tmp_path):
    out = tmp_path / "sweep"
    rc = main(["train-sae", "--store", str(store), "--layer", "1", "--expansion", "1,2", "--k", "2,4",
               "--steps", "20", "--batch-size", "128", "--splice-clips", "0", "--eval-store", str(store),
               "--out", str(out)])
    assert rc == 0
    sweep = json.loads((out / "sweep.json").read_text())
    names = sorted(s["name"] for s in sweep["saes"])
    assert names == ["topk_x1_k2", "topk_x1_k4", "topk_x2_k2", "topk_x2_k4"]
    for n in names:
        m = json.loads((out / n / "metrics.json").read_text())
        assert m["train"]["rows_seen"] == 20 * 128          # every SAE saw the same batches
        assert "held-out store" in m["eval_rows_source"]
        assert load_sae(out / n).cfg.k == int(n[-1])


def test_failed_evaluation_keeps_training_and_resumes(store, tmp_path):
    out = tmp_path / "r"
    args = ["train-sae", "--store", str(store), "--layer", "3", "--arch", "rmsnorm_l1", "--expansion", "2",
            "--l1", "0.02", "--steps", "15", "--batch-size", "128", "--out", str(out)]
    assert main(args + ["--model", "no/such-model-here"]) == 2
    assert not out.exists() and (tmp_path / "r.partial" / "checkpoint.pt").exists()
    assert main(args + ["--splice-clips", "0"]) == 2                # partial exists: needs --resume
    assert main(args + ["--splice-clips", "0", "--resume"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["steps"] == 15 and m["train"]["seconds_this_run"] < 5
    assert load_sae(out).cfg.architecture == "rmsnorm_l1"


def test_bad_inputs_exit_2_without_output(tiny_model, store, tmp_path, capsys):
    base = ["train-sae", "--store", str(store), "--steps", "3", "--batch-size", "64", "--splice-clips", "0"]
    cases = [
        (["--layer", "2", "--out", str(tmp_path / "a")], "layer 2 is not in"),
        (["--layer", "1", "--expansion", "1", "--k", "32", "--out", str(tmp_path / "b")], "smaller than"),
        (["--layer", "1", "--out", str(tmp_path / "c"), "--store", str(tmp_path / "nope")], "not found"),
        (["--layer", "1", "--out", str(tmp_path / "c2"), "--eval-store", str(tmp_path / "nope")], "not found"),
        (["--layer", "1", "--out", str(tmp_path / "e"), "--lr", "-1"], "--lr must be >= 0"),
        (["--layer", "1", "--out", str(tmp_path / "f"), "--eval-rows", "0"], "--eval-rows must be > 0"),
    ]
    for extra, msg in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
        assert not (tmp_path / extra[extra.index("--out") + 1].split("/")[-1]).exists()
    empty = tmp_path / "empty"
    _write_store(tiny_model, empty, empty=True)
    assert main(["train-sae", "--store", str(empty), "--layer", "1", "--out", str(tmp_path / "d")]) == 2
    assert "empty" in capsys.readouterr().err and not (tmp_path / "d").exists()
    nan = tmp_path / "nan"
    _write_store(tiny_model, nan, n_clips=16, frames=100, nan_rows=60)     # 60 of 1600 rows, > 1%
    assert main(["train-sae", "--store", str(nan), "--layer", "1", "--max-bad-fraction", "0.01", "--steps", "10",
                 "--batch-size", "400", "--splice-clips", "0", "--out", str(tmp_path / "e")]) == 2
    assert "NaN/Inf" in capsys.readouterr().err and not (tmp_path / "e").exists()
    # a few bad rows are skipped and counted
    assert main(["train-sae", "--store", str(nan), "--layer", "1", "--max-bad-fraction", "0.1", "--steps", "4",
                 "--batch-size", "400", "--splice-clips", "0", "--out", str(tmp_path / "f")]) == 0
    assert json.loads((tmp_path / "f" / "metrics.json").read_text())["train"]["bad_rows_skipped"] > 0
    # an SAE of another width on this store
    from musiclens.sae import SAE, SAEConfig, write_sae_files

    write_sae_files(SAE(SAEConfig(d_in=16, d_sae=64, k=4, hook_name="layer.1")), tmp_path / "w16")
    assert main(["sae", "eval", str(tmp_path / "w16"), "--store", str(store), "--splice-clips", "0"]) == 2
    assert "does not match" in capsys.readouterr().err
    # existing output
    (tmp_path / "g").mkdir()
    assert main(base + ["--layer", "1", "--out", str(tmp_path / "g")]) == 2
    assert "exists" in capsys.readouterr().err
