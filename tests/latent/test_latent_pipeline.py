"""End to end on tiny random autoencoders: extract -> store -> SAE grid + probes -> edit -> trajectories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclens.cli import main
from musiclens.errors import MusiclensError
from musiclens.latent.extract import VALUE_KEYS, LatentExtractConfig, extract
from musiclens.latent.grid import LatentTrainConfig, train_grid
from musiclens.latent.labels import frame_values


@pytest.fixture(scope="module")
def label_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("label-cache"))


@pytest.fixture(scope="module")
def enc_store(synth_corpus, tmp_path_factory, label_cache):
    out = tmp_path_factory.mktemp("lat") / "store"
    r = extract(LatentExtractConfig(audio=str(synth_corpus), out=str(out), autoencoder="tiny-encodec",
                                    sites=["all"], seconds=1.0, batch_size=3, label_cache=label_cache),
                progress=False)
    return out, r


@pytest.fixture(scope="module")
def enc_grid(enc_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "grid"
    r = train_grid(LatentTrainConfig(store=str(enc_store[0]), out=str(out), expansions=[4, 8], l1=[0.01, 0.1],
                                     steps=60, batch_size=128, probe_epochs=2, probe_min_steps=150),
                   progress=False)
    return out, r


def test_extract_writes_a_sound_store_with_aligned_labels(enc_store, synth_corpus):
    from musiclens.latent.data import load_frames
    from musiclens.store import ActivationStore, verify_store

    out, r = enc_store
    assert r["clips"] == 8 and r["rows"] == 8 * 50
    assert verify_store(out) == []
    st = ActivationStore(out)
    assert st.meta["sites"] == {"0": "latent.encoder", "1": "latent.q0", "2": "latent.q1", "3": "latent.q2",
                                "4": "latent.q3"}
    assert st.input_ids(0).shape == (4, 50)  # the codes of the clip
    fr = load_frames(out)
    assert sorted(set(fr.split.tolist())) == ["test", "train"] and (fr.split == "test").sum() == 100
    # stored frame values are exactly the per-frame measurements of that clip's audio
    y, sr = sf.read(synth_corpus / "audio" / "003.wav", dtype="float32")
    direct = frame_values(y, sr, 320, 50)
    rows = fr.clip == 3
    for k in VALUE_KEYS:
        np.testing.assert_allclose(fr.values[k][rows], direct[k], rtol=1e-4, atol=1e-3)


def test_extract_resume_and_bad_input(enc_store, synth_corpus, tmp_path):
    out, r = enc_store
    with pytest.raises(MusiclensError, match="output exists"):
        extract(LatentExtractConfig(audio=str(synth_corpus), out=str(out), autoencoder="tiny-encodec"), progress=False)
    again = extract(LatentExtractConfig(audio=str(synth_corpus), out=str(out), autoencoder="tiny-encodec",
                                        sites=["all"], seconds=1.0, resume=True), progress=False)
    assert again["clips"] == 0 and again["rows"] == r["rows"]
    # CLI: one-line error, exit 2, nothing written
    bad = tmp_path / "never"
    assert main(["latent", "extract", "--audio", str(tmp_path / "missing"), "--out", str(bad),
                 "--autoencoder", "tiny-dac"]) == 2
    assert main(["latent", "extract", "--audio", str(synth_corpus), "--out", str(bad),
                 "--autoencoder", "tiny-dac", "--sites", "latent.q9"]) == 2
    assert not bad.exists()


def test_grid_cells_metrics_and_probes(enc_grid):
    from musiclens.latent.probes import Probes
    from musiclens.sae.io import load_sae

    out, r = enc_grid
    names = [c["name"] for c in r["cells"]]
    assert names[0] == "latent" and len(names) == 5
    grid = json.loads((out / "grid.json").read_text())
    assert grid["d_latent"] == 16 and grid["test_frames"] == 100
    assert (out / "grid.png").stat().st_size > 1000
    for c in r["cells"][1:]:
        assert 0.0 <= c["sparsity"] <= 1.0 and c["fvu"] >= 0
        sae = load_sae(out / "cells" / c["name"])
        assert sae.cfg.architecture == "rmsnorm_l1" and sae.d_sae == c["expansion"] * 16
    # a larger L1 coefficient gives sparser features at the same width
    by = {(c["expansion"], c["l1"]): c["sparsity"] for c in r["cells"][1:]}
    assert by[(4, 0.1)] > by[(4, 0.01)] and by[(8, 0.1)] > by[(8, 0.01)]
    pr = Probes.load(out / "cells" / names[1])
    assert pr.weight["pitch"].shape == (66, 64) and pr.weight["loudness"].shape == (20, 64)
    info = pr.info["attributes"]["pitch"]
    assert 0 <= info["test_accuracy"] <= 1 and info["top_features"]
    # the saved probes reproduce the reported held-out accuracy
    from musiclens.latent.data import load_frames
    from musiclens.latent.probes import evaluate

    fr = load_frames(r["store"])
    _, test = fr.train_test()
    sae = load_sae(out / "cells" / names[1])
    acc = evaluate(pr, sae.encode, test.x, pr.bins.classes(test.values))["accuracy"]
    assert abs(acc["pitch"] - info["test_accuracy"]) < 1e-6


def test_probes_beat_chance_on_raw_latents(enc_grid):
    # loud vs soft tones: even a random EnCodec's latents separate their level linearly
    _, r = enc_grid
    latent = r["cells"][0]
    assert latent["loudness_accuracy"] > r["chance_accuracy"]["loudness"]


def test_control_vector_edit_and_cli(enc_grid, synth_corpus, tmp_path):
    from musiclens.latent.control import edit_latents, load_control, target_class

    out, r = enc_grid
    cell = out / "cells" / r["cells"][1]["name"]
    cm = load_control(cell)
    y, _ = sf.read(synth_corpus / "audio" / "004.wav", dtype="float32")
    x = cm.ae.latents(torch.from_numpy(y)[None])[0]
    k = target_class(cm.bins, "pitch", "C5")
    torch.testing.assert_close(edit_latents(cm, x, "pitch", k, 0.0), x)
    e10, e30 = edit_latents(cm, x, "pitch", k, 10.0), edit_latents(cm, x, "pitch", k, 30.0)
    assert (e30 - x).norm() > (e10 - x).norm() > 0
    # in SAE feature space the edit raises the probe's logit for the target class
    f0, f1 = cm.sae.encode(x), (cm.sae.encode(x) + 30.0 * cm.probes.weight["pitch"][k] /
                                cm.probes.weight["pitch"][k].norm()).relu()
    assert (cm.probes.logits(f1, "pitch")[:, k] > cm.probes.logits(f0, "pitch")[:, k]).all()
    wav = tmp_path / "edited.wav"
    assert main(["latent-edit", "--audio", str(synth_corpus / "audio" / "004.wav"), "--cell", str(cell),
                 "--attribute", "pitch", "--to", "C5", "--alpha", "20", "--out", str(wav), "--no-measure"]) == 0
    z, sr = sf.read(wav)
    assert sr == 16000 and len(z) == 16000
    for bad in (["--to", "Q7"], ["--attribute", "loudness", "--to", "99"]):
        args = ["latent-edit", "--audio", str(synth_corpus / "audio" / "004.wav"), "--cell", str(cell),
                "--out", str(tmp_path / "bad.wav")] + bad
        assert main(args) == 2
    assert not (tmp_path / "bad.wav").exists()


def test_edit_sweep_reports_isolation(enc_grid, enc_store, tmp_path):
    out, r = enc_grid
    cell = out / "cells" / r["cells"][1]["name"]
    dest = tmp_path / "sweep"
    assert main(["latent", "edit", "--cell", str(cell), "--store", str(enc_store[0]), "--to=-10dB",
                 "--attribute", "loudness", "--alphas", "0,30", "--clips", "1", "--seconds", "1",
                 "--out", str(dest)]) == 0
    rep = json.loads((dest / "edit.json").read_text())
    assert [row["alpha"] for row in rep["alphas"]] == [0.0, 30.0]
    zero = rep["alphas"][0]
    # alpha 0 is the unedited decode: nothing changes
    assert zero["others"]["pitch"]["changed_fraction"] == 0.0 and zero["others"]["timbre"]["changed_fraction"] == 0.0
    assert (dest / "alpha30.wav").exists() and (dest / "edit.png").exists()


def test_flow_and_stable_audio_trajectories(enc_store, enc_grid, synth_corpus, tmp_path, label_cache):
    from musiclens.latent.flow import FlowTrainConfig, load_flow, train_flow
    from musiclens.latent.probes import Probes
    from musiclens.latent.trajectory import build_tiny_stable_audio, flow_trajectory, stable_audio_trajectory
    from musiclens.sae.io import load_sae

    out, r = enc_grid
    cell = out / "cells" / r["cells"][1]["name"]
    sae, probes = load_sae(cell), Probes.load(cell)
    info = train_flow(FlowTrainConfig(store=str(enc_store[0]), out=str(tmp_path / "flow"), minutes=1.0,
                                      max_steps=15, batch_size=4, crop_frames=32, channels=16, blocks=2),
                      progress=False)
    assert info["steps"] == 15 and info["train_clips"] == 6
    # the codec that made the store is loadable: its latent fingerprint is saved with the flow
    assert (tmp_path / "flow" / "codec_fingerprint.safetensors").exists()
    flow = load_flow(tmp_path / "flow")
    res, final = flow_trajectory(flow, sae, probes, ["soft dark note", "loud bright note"], seconds=0.5, steps=6)
    assert final.shape == (2, 25, 16) and res["steps"] == 6
    for a in ("pitch", "loudness", "timbre"):
        s = res["s"][a]
        assert len(s) == 6 and s[-1] == 0.0 and abs(s[0] - 1.0) < 1e-6
        assert 1 <= res["convergence_step"][a] <= 6
    # diffusers StableAudioPipeline from tiny configs, probes on its Oobleck latent space
    pipe = build_tiny_stable_audio()
    st = tmp_path / "oob"
    extract(LatentExtractConfig(audio=str(synth_corpus), out=str(st), autoencoder="tiny-oobleck", seconds=1.0,
                                label_cache=label_cache), progress=False)
    g = train_grid(LatentTrainConfig(store=str(st), out=str(tmp_path / "g2"), expansions=[4], l1=[0.02],
                                     steps=30, batch_size=128, probe_epochs=1, probe_min_steps=50), progress=False)
    c2 = tmp_path / "g2" / "cells" / g["cells"][1]["name"]
    res2 = stable_audio_trajectory(pipe, load_sae(c2), Probes.load(c2), ["a piano"], seconds=1.0, steps=5)
    assert res2["steps"] == 5 and all(res2["s"][a][-1] == 0.0 for a in res2["s"])
    with pytest.raises(MusiclensError, match="SAE expects width"):
        stable_audio_trajectory(pipe, sae, probes, ["x"], seconds=1.0, steps=2)


def test_musicgen_trajectories_over_layers_and_steps(enc_grid, tiny_model, tmp_path):
    from musiclens.latent.probes import Probes
    from musiclens.latent.trajectory import musicgen_trajectories
    from musiclens.sae.io import load_sae

    out, r = enc_grid
    cell = out / "cells" / r["cells"][1]["name"]  # tiny-random's codec latent is 16 wide, like tiny-encodec's
    res = musicgen_trajectories(tiny_model, load_sae(cell), Probes.load(cell), ["a piano", "drums"], seconds=0.4)
    lay, st = res["layers"], res["generated_steps"]
    assert lay["steps"] == tiny_model.n_layers and st["steps"] == 20
    for a in ("pitch", "loudness", "timbre"):
        assert lay["s"][a][-1] == 0.0 and st["s"][a][-1] == 0.0
        assert 1 <= lay["convergence_step"][a] <= tiny_model.n_layers
    # the CLI writes both plots; a cell of the wrong width is a one-line error
    assert main(["latent", "trajectory", "--cell", str(cell), "--out", str(tmp_path / "t"), "--generator",
                 "musicgen:tiny-random", "--seconds", "0.3", "--prompts", "a,b"]) == 0
    assert (tmp_path / "t" / "trajectory_steps.png").exists()
    assert main(["latent", "trajectory", "--out", str(tmp_path / "t2"), "--generator", "tiny-stable-audio"]) == 2
    assert not (tmp_path / "t2").exists()


def test_probe_command_on_a_given_sae(enc_store, enc_grid, tmp_path):
    out, r = enc_grid
    cell = out / "cells" / r["cells"][1]["name"]
    dest = tmp_path / "probe"
    assert main(["latent", "probe", "--store", str(enc_store[0]), "--sae", str(cell), "--out", str(dest),
                 "--epochs", "1"]) == 0
    info = json.loads((dest / "probes.json").read_text())
    assert set(info["attributes"]) == {"pitch", "loudness", "timbre"} and (dest / "cfg.json").exists()
    # a store site that does not exist, and an SAE of the wrong width: exit 2, nothing written
    assert main(["latent", "probe", "--store", str(enc_store[0]), "--site", "latent.q7",
                 "--out", str(tmp_path / "p2")]) == 2
    assert not (tmp_path / "p2").exists()
