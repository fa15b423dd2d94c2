"""CLI: diffmean -> steer (λ = 0 == generate) -> measure -> every experiment, end to end on tiny-random; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musiclens.cli import main

FAST = ["fast piano", "energetic organ", "lively strings"]
SLOW = ["slow piano", "calm organ", "leisurely strings"]
COMMON = ["--model", "tiny-random", "--n-prompts", "2", "--seconds", "0.1", "--batch-size", "2",
          "--embedder", "mel", "--metric", "centroid,loudness"]


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("steer")
    (d / "fast.txt").write_text("\n".join(FAST) + "\n")
    (d / "slow.txt").write_text("# comment\n" + "\n".join(SLOW) + "\n\n")
    (d / "neutral.txt").write_text("a piano tune\nan organ hymn\n")
    assert main(["diffmean", "--model", "tiny-random", "--pos", str(d / "fast.txt"), "--neg", str(d / "slow.txt"),
                 "--out", str(d / "vec"), "--capture-seconds", "0.1", "--plot-layer", "2"]) == 0
    return d


def test_diffmean_outputs(work):
    from musiclens.steer import DiffMeanVectors

    v = DiffMeanVectors.load(work / "vec")
    meta = json.loads((work / "vec" / "meta.json").read_text())
    assert meta["n_pos"] == 3 and meta["n_neg"] == 3 and meta["capture"]["rule"] == "generate"
    assert meta["d_model"] == 32 and meta["weights_hash"] and v.layers == list(range(6))
    torch.testing.assert_close(v.delta(2), v.pos[2].mean(0) - v.neg[2].mean(0))
    for f in ("cosine.png", "pca_layer2.png", "config.json", "vectors.safetensors"):
        assert (work / "vec" / f).stat().st_size > 0
    assert (work / "vec" / "neg.txt").read_text().splitlines() == SLOW          # comments/blank lines dropped
    # built-in concept prompt sets (corpus caption vocabulary)
    assert main(["diffmean", "--model", "tiny-random", "--concept", "tempo", "--n-concept-prompts", "2",
                 "--layers", "2", "--capture-seconds", "0.1", "--out", str(work / "vec_tempo")]) == 0
    meta = json.loads((work / "vec_tempo" / "meta.json").read_text())
    assert (meta["pos_name"], meta["neg_name"], meta["layers"]) == ("fast", "slow", [2])
    assert all("slow" in p or "unhurried" in p for p in (work / "vec_tempo" / "neg.txt").read_text().splitlines())


def test_steer_lambda_zero_equals_generate_files(work):
    args = ["--model", "tiny-random", "--prompts", str(work / "neutral.txt"), "--seconds", "0.2", "--seed", "4",
            "--batch-size", "1"]
    assert main(["generate", *args, "--out", str(work / "gen")]) == 0
    assert main(["steer", *args, "--out", str(work / "st0"), "--vector", str(work / "vec"), "--lam", "0",
                 "--strategy", "all-to-all"]) == 0
    assert main(["steer", *args, "--out", str(work / "st2"), "--vector", str(work / "vec,") + str(work / "vec"),
                 "--lam", "40,20", "--layer", "2", "--branch", "cond", "--steps", "0,5"]) == 0
    wavs = sorted(p.name for p in (work / "gen").glob("*.wav"))
    assert len(wavs) == 2 and wavs == sorted(p.name for p in (work / "st0").glob("*.wav"))
    for w in wavs:
        assert (work / "gen" / w).read_bytes() == (work / "st0" / w).read_bytes()
    assert any((work / "gen" / w).read_bytes() != (work / "st2" / w).read_bytes() for w in wavs)


def test_steer_continues_an_audio_prompt(work):
    import soundfile as sf

    t = np.arange(3200) / 16000
    sf.write(work / "take.wav", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    args = ["--model", "tiny-random", "--prompts", str(work / "neutral.txt"), "--seconds", "0.3", "--seed", "1",
            "--audio-prompt", str(work / "take.wav")]
    assert main(["generate", *args, "--out", str(work / "cont_gen")]) == 0
    assert main(["steer", *args, "--out", str(work / "cont0"), "--vector", str(work / "vec"), "--lam", "0",
                 "--layer", "2"]) == 0
    assert main(["steer", *args, "--out", str(work / "cont9"), "--vector", str(work / "vec"), "--lam", "40",
                 "--layer", "2"]) == 0
    wavs = sorted(p.name for p in (work / "cont_gen").glob("*.wav"))
    assert len(wavs) == 2
    for w in wavs:   # λ = 0 is the plain continuation, byte for byte; λ = 40 changes it
        assert (work / "cont_gen" / w).read_bytes() == (work / "cont0" / w).read_bytes()
    assert any((work / "cont_gen" / w).read_bytes() != (work / "cont9" / w).read_bytes() for w in wavs)


def test_measure_with_reference(work):
    out = work / "m.json"
    assert main(["measure", "--audio", str(work / "st2"), "--reference", str(work / "gen"), "--out", str(out),
                 "--metrics", "centroid,loudness,onset_rate,pulse_clarity", "--embedder", "mel", "--no-tags"]) == 0
    r = json.loads(out.read_text())
    assert r["audio"]["n"] == 2 and set(r["audio"]["summary"]) == {"centroid", "loudness", "onset_rate", "pulse_clarity"}
    assert r["fad"]["embedder"] == "mel" and r["fad"]["value"] > 0
    # the metric is the library's estimator on each file, averaged
    import soundfile as sf

    from musiclens.measure import pulse_clarity

    direct = [pulse_clarity(*sf.read(f, dtype="float32"))["clarity"] for f in sorted((work / "st2").glob("*.wav"))]
    assert r["audio"]["summary"]["pulse_clarity"]["mean"] == pytest.approx(np.mean(direct), rel=1e-6)
    assert set(r["relative_change"]) == {"centroid", "loudness", "onset_rate", "pulse_clarity"}


def test_experiments_end_to_end(work):
    vec = str(work / "vec")
    shared = ["--cache", str(work / "shared_cache")]      # one baseline + reference for all four experiments
    runs = {
        "scan_layers": ["scan-layers", *COMMON, "--vector", vec, "--lam", "1000", "--layers", "1,3"],
        "sweep": ["sweep", *COMMON, "--vector", vec, "--layer", "2", "--grid=-1000,0,1000"],
        "ablate_prompts": ["ablate-prompts", *COMMON, "--vector", vec, "--layer", "2", "--lam", "1000", "--sizes", "2"],
        "evaluate": ["evaluate", *COMMON, "--vector", vec, "--layer", "2", "--lam", "1000", "--metric", "centroid"],
    }
    for name, argv in runs.items():
        out = work / f"x_{name}"
        assert main([*argv, *shared, "--out", str(out)]) == 0, name
        res = json.loads((out / f"{name}.json").read_text())
        assert (out / f"{name}.png").stat().st_size > 0 and "|" in (out / f"{name}.md").read_text()
        assert res["setup"]["n_prompts"] == 2
        if name == "scan_layers":
            assert [r["layer"] for r in res["layers"]] == [1, 3]
            moved = [r["layer"] for r in res["layers"] if r["relative_change"]["centroid"] != 0]
            assert res["l_best"] in moved if moved else res["l_best"] is None
        if name == "sweep":
            zero = [r for r in res["rows"] if r["lam"] == 0][0]
            assert zero["relative_change"]["centroid"] == 0.0          # λ = 0 is the baseline itself
            assert zero["fad"] == res["baseline"]["fad"] and res["baseline"]["fad"] > 0
            assert any(r["relative_change"]["centroid"] != 0.0 for r in res["rows"] if r["lam"] != 0)
        if name == "ablate_prompts":
            assert [r["n_prompts"] for r in res["rows"]] == [2, 3]
            assert res["rows"][-1]["cosine_to_full"] == pytest.approx(1.0, abs=1e-5)
        if name == "evaluate":
            assert [r["direction"] for r in res["rows"]] == ["fast (+λ)", "slow (−λ)"]
    # baseline and FAD reference were generated once for all experiments; a resumed run generates nothing new
    before = sorted(p.name for p in (work / "shared_cache").iterdir())
    # audio: reference, baseline (= λ 0), scan layers 1 and 3, sweep ±1000 at layer 2 (= evaluate's ±), ablation n=2
    assert len([n for n in before if ".metric-" not in n]) == 7
    assert main([*runs["sweep"], *shared, "--out", str(work / "x_sweep"), "--resume"]) == 0
    assert sorted(p.name for p in (work / "shared_cache").iterdir()) == before


def _tiny_sae(path, layer=2, d_in=32, model_name="tiny-random"):
    from musiclens.sae import SAE, SAEConfig, write_sae_files

    sae = SAE(SAEConfig(d_in=d_in, d_sae=16, architecture="topk", k=2, hook_name=f"layer.{layer}",
                        model_name=model_name))
    sae.init_weights(torch.Generator().manual_seed(0))
    write_sae_files(sae, path)
    return path


def _tiny_mini_clap(path):
    from safetensors.torch import save_file
    from torch import nn

    from musiclens.io import write_json
    from musiclens.measure.clap import AudioEncoder

    torch.manual_seed(0)
    cfg = {"sample_rate": 16000, "hop": 320, "n_mels": 16, "channels": [4, 8], "dim": 8, "text_dim": 384}
    audio, proj = AudioEncoder(16, (4, 8), 8).eval(), nn.Linear(384, 8)
    state = {f"audio.{k}": v for k, v in audio.state_dict().items()}
    state.update({f"text_proj.{k}": v for k, v in proj.state_dict().items()})
    path.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    write_json(path / "config.json", cfg)
    return path


def test_sae_steering_sweep_and_feature_steering(work, tiny_model):
    from musiclens.steer.sae_steer import feature_steer

    sae = _tiny_sae(work / "sae")
    spec = feature_steer(tiny_model, sae, [1, 3], alpha=[1.0, 0.5], beta=[2.0, 4.0])
    (layer, v), = spec.sites(tiny_model).items()
    W = spec.sae.W_dec.detach()
    assert layer == 2
    torch.testing.assert_close(v, 2.0 * W[1] + 0.5 * 4.0 * W[3])
    # β from a features catalogue (max_act)
    (work / "cat.json").write_text(json.dumps([{"sae": "sae", "layer": 2, "feature": 1, "max_act": 7.5,
                                                "status": "valid"}]))
    spec = feature_steer(tiny_model, sae, [1], alpha=1.0, catalogue=work / "cat.json")
    torch.testing.assert_close(spec.sites(tiny_model)[2], 7.5 * W[1])

    assert main(["steer", "--model", "tiny-random", "--prompt", "a tune", "--seconds", "0.1", "--sae", str(sae),
                 "--feature", "1,3", "--alpha", "1", "--beta", "50", "--out", str(work / "sae_st")]) == 0
    assert main(["sweep", *COMMON, "--sae", str(sae), "--feature", "1", "--beta", "50", "--grid", "0,1",
                 "--out", str(work / "x_sae_sweep")]) == 0
    res = json.loads((work / "x_sae_sweep" / "sweep.json").read_text())
    assert res["strength"] == "alpha" and [r["alpha"] for r in res["rows"]] == [0.0, 1.0]

    clap = _tiny_mini_clap(work / "clap")
    (work / "labels.json").write_text(json.dumps({"1": "piano", "3": "organ"}))
    assert main(["feature-steering", "--model", "tiny-random", "--sae", str(sae), "--feature", "1,3",
                 "--beta", "50", "--labels", str(work / "labels.json"), "--clap", str(clap), "--n-samples", "2",
                 "--seconds", "0.5", "--out", str(work / "x_fs")]) == 0
    res = json.loads((work / "x_fs" / "feature_steering.json").read_text())
    assert [r["feature"] for r in res["features"]] == [1, 3]
    for r in res["features"]:
        assert r["improvement"] == pytest.approx(r["clap_steered"] - r["clap_baseline"])
    assert res["share_positive"] == np.mean([r["improvement"] > 0 for r in res["features"]])
    # the labels name instruments: the concept check reads the tagger's probability of each, no estimator
    for r, inst in zip(res["features"], ("piano", "organ")):
        (c,) = r["concept_checks"]
        assert c["concept"] == f"instrument={inst}" and c["tagger_metric"] == f"tag:instrument={inst}"
        assert c["tagger_rises"] == (c["tagger_steered"] > c["tagger_baseline"]) and "estimator" not in c
    assert res["concept_checks"]["pairs"] == 2 and res["concept_checks"]["estimator_pairs"] == 0

    # an ordered concept: "dark" must lower the centroid; "medium" (a middle level) has no expected direction
    (work / "labels2.json").write_text(json.dumps({"1": "dark", "3": "medium volume"}))
    assert main(["feature-steering", "--model", "tiny-random", "--sae", str(sae), "--feature", "1,3",
                 "--beta", "50", "--labels", str(work / "labels2.json"), "--clap", str(clap), "--n-samples", "2",
                 "--seconds", "0.5", "--out", str(work / "x_fs3"), "--cache", str(work / "x_fs" / "cache")]) == 0
    res = json.loads((work / "x_fs3" / "feature_steering.json").read_text())
    (dark,), (medium,) = [r["concept_checks"] for r in res["features"]]
    assert dark["concept"] == "brightness=dark" and dark["estimator"] == "centroid" and dark["expected"] == -1
    assert dark["moved_as_expected"] == (dark["estimator_steered"] < dark["estimator_baseline"])
    assert medium["concept"] == "dynamics=medium" and "estimator" not in medium
    assert res["concept_checks"]["estimator_pairs"] == 1
    assert main(["feature-steering", "--model", "tiny-random", "--sae", str(sae), "--feature", "1",
                 "--beta", "50", "--labels", str(work / "labels2.json"), "--clap", str(clap), "--n-samples", "2",
                 "--seconds", "0.5", "--out", str(work / "x_fs4"), "--no-concept-check"]) == 0
    res = json.loads((work / "x_fs4" / "feature_steering.json").read_text())
    assert "concept_checks" not in res["features"][0] and res["concept_checks"]["pairs"] == 0

    # defaults from a `musiclens features` + `annotate` directory: valid, labelled features; β = max_act
    fd = work / "feats"
    fd.mkdir()
    (fd / "catalogue.json").write_text(json.dumps([
        {"sae": "sae", "layer": 2, "feature": j, "max_act": m, "status": st}
        for j, m, st in ((1, 30.0, "valid"), (3, 60.0, "valid"), (5, 9.0, "too_rare"))]))
    (fd / "annotations.json").write_text(json.dumps({"features": {
        "sae/1": {"tagger": {"label": "organ"}, "clap": {"label": "piano"}}, "sae/3": {"tagger": {"label": "organ"}},
        "sae/5": {"clap": {"label": "flute"}}, "other/2": {"clap": {"label": "violin"}}}}))
    assert main(["feature-steering", "--model", "tiny-random", "--sae", str(sae), "--features-dir", str(fd),
                 "--clap", str(clap), "--n-samples", "2", "--seconds", "0.5", "--out", str(work / "x_fs2"),
                 "--cache", str(work / "x_fs" / "cache")]) == 0
    res = json.loads((work / "x_fs2" / "feature_steering.json").read_text())
    assert [(r["feature"], r["label"]) for r in res["features"]] == [(1, "piano"), (3, "organ")]


@pytest.mark.parametrize("argv, msg", [
    (["diffmean", "--pos", "{d}/empty.txt", "--neg", "{d}/slow.txt"], "at least 2"),
    (["diffmean", "--pos", "{d}/one.txt", "--neg", "{d}/slow.txt"], "at least 2"),
    (["diffmean", "--concept", "tempo", "--pos", "{d}/slow.txt"], "not both"),
    (["steer", "--prompt", "x", "--vector", "{d}/vec", "--lam", "nan"], "finite"),
    (["steer", "--prompt", "x", "--vector", "{d}/vec", "--lam", "inf"], "finite"),
    (["steer", "--prompt", "x", "--vector", "{d}/vec", "--layer", "6"], "out of range"),
    (["steer", "--prompt", "x", "--vector", "{d}/vec", "--layers", "0,-1"], "out of range"),
    (["steer", "--prompt", "x", "--sae", "{d}/sae_wide", "--feature", "1", "--beta", "1"], "d_in"),
    (["steer", "--prompt", "x", "--sae", "{d}/sae_other", "--feature", "1", "--beta", "1"], "trained on model"),
    (["steer", "--prompt", "x", "--sae", "{d}/sae", "--feature", "99", "--beta", "1"], "out of range"),
    (["steer", "--prompt", "x", "--vector", "{d}/nope"], "not a DiffMean vector directory"),
    (["sweep", "--vector", "{d}/vec", "--layer", "1", "--grid", "0,nan"], "finite"),
    (["scan-layers", "--vector", "{d}/vec", "--layers", "9"], "not in the vector set"),
    # checked before --out is made (these used to leave an empty --out, or fail after the baselines)
    (["scan-layers", "--vector", "{d}/vec", "--prompts", "{d}/nope.txt"], "not found"),
    (["scan-layers", "--vector", "{d}/vec", "--cache", "{d}/one.txt"], "--cache is a file"),
    (["sweep", "--sae", "{d}/sae", "--feature", "99", "--beta", "1", "--grid", "1"], "out of range"),
    (["sweep", "--sae", "{d}/sae", "--feature", "1,2", "--beta", "1,2,3", "--grid", "1"], "one per --feature"),
    (["ablate-prompts", "--vector", "{d}/vec", "--layer", "1", "--sizes", "1000"], "--sizes [1000]"),
    (["ablate-prompts", "--vector", "{d}/vec", "--layer", "1", "--sizes", "2,,3"], "empty item"),
    (["feature-steering", "--sae", "{d}/sae", "--feature", "1", "--labels", "{d}/one.txt", "--beta", "1"],
     "not valid JSON"),
    (["scan-layers", "--vector", "{d}/vec", "--n-prompts", "1"], "--n-prompts must be >= 2"),
])
def test_bad_input_one_line_exit_2(work, capsys, argv, msg):
    (work / "empty.txt").write_text("\n# nothing\n")
    (work / "one.txt").write_text("just one\n")
    if not (work / "sae").exists():
        _tiny_sae(work / "sae")
    if not (work / "sae_wide").exists():
        _tiny_sae(work / "sae_wide", d_in=48)
        _tiny_sae(work / "sae_other", model_name="some-other-model")
    argv = [a.format(d=work) for a in argv] + ["--model", "tiny-random", "--out", str(work / "bad_out")]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors (a malformed list)
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and msg in err[-1], err
    assert len(err) == 1 or "empty item" in msg  # (argparse prints its usage above its error line)
    assert not (work / "bad_out").exists()


def test_no_fad_turns_fad_off():
    """--no-fad once parsed as False either way (a field named no_fad makes --no-fad and --no-no-fad)."""
    from musiclens.cli import build_parser
    from musiclens.commands.experiments import ScanConfig
    from musiclens.config import from_args

    parse = build_parser().parse_args
    base = ["scan-layers", "--vector", "v", "--out", "o"]
    assert from_args(ScanConfig, parse(base)).fad is True
    assert from_args(ScanConfig, parse(base + ["--no-fad"])).fad is False
