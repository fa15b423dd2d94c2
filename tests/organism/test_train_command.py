"""`musiclens organism train|export` end to end on a tiny corpus (real classes, tiny step counts)."""

from __future__ import annotations

import json

import pytest
import torch

from musiclens.cli import main
from musiclens.models import organism as O


def test_train_all_stages_then_resume_and_export(tiny_corpus, tmp_path, capsys):
    run, dst = tmp_path / "run", tmp_path / "ship"
    args = ["organism", "train", "--corpus", str(tiny_corpus), "--out", str(run), "--codec-steps", "2",
            "--codec-batch-size", "2", "--decoder-steps", "2", "--lm-steps", "2", "--lm-batch-size", "2", "--lm-layers", "1",
            "--lm-d-model", "32", "--tune-steps", "2", "--codes-seconds", "1.0", "--device", "cpu"]
    assert main(args) == 0
    for f in ("codec/hf/config.json", "decoder/hf/config.json", "codes/codes.safetensors", "lm/hf/model.safetensors", "tune/hf/model.safetensors",
              "config.json"):
        assert (run / f).exists(), f
    assert json.loads((run / "codes" / "index.json").read_text())["summary"]["frames"] == 12 * 50  # train + valid, 1 s each
    assert main(args) == 2  # existing checkpoints without --resume: one-line error
    assert main(args + ["--resume"]) == 0
    # a codec trained further no longer made RUN/codes: resuming the codes stage must refuse, not reuse them
    more = [a if a != "2" or args[i - 1] != "--codec-steps" else "3" for i, a in enumerate(args)]
    assert main(more + ["--resume", "--stage", "codec"]) == 0
    capsys.readouterr()
    assert main(more + ["--resume", "--stage", "codes"]) == 2
    assert "encoded by another codec" in capsys.readouterr().err
    assert main(["organism", "export", "--run", str(run), "--out", str(dst)]) == 0
    assert (dst / "README.md").exists() and (dst / "training" / "lm_log.jsonl").exists()
    assert (dst / "training" / "tune_log.jsonl").exists()  # --lm auto ships the fine-tuned LM
    assert (dst / "training" / "decoder_log.jsonl").exists()
    card = (dst / "README.md").read_text()
    assert "caption-contrast fine-tuning" in card
    assert "decoder stage (the codec's decoder fine-tuned on frozen codes" in card and "--stage decoder" in card
    assert "Not measured in this card" in card  # the shipped model's bench results do not describe this export
    assert "tools/device_lm.sh" not in card and "Machine: CPU, 2 cores" in card  # trained on CPU: the CPU recipe
    model, _ = O.load_organism_hf(path=dst)
    assert model.config.decoder.num_hidden_layers == 1 and model.config.decoder.hidden_size == 32
    # shipped "lossless" by default: float16 only where float16 holds every value (a GPU-trained LM);
    # this CPU-trained run has no such tensor, so it stays float32. --dtype float16 rounds everything.
    from safetensors.torch import load_file

    trained = load_file(str(run / "tune" / "hf" / "model.safetensors"))
    stored = load_file(str(dst / "model.safetensors"))
    assert all(torch.equal(stored[k].float(), trained[k].float()) for k in trained)  # the same values
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    half = tmp_path / "ship16"
    assert main(["organism", "export", "--run", str(run), "--out", str(half), "--dtype", "float16"]) == 0
    stored16 = load_file(str(half / "model.safetensors"))
    assert {v.dtype for v in stored16.values() if v.is_floating_point()} == {torch.float16}
    assert (half / "model.safetensors").stat().st_size < 0.55 * (dst / "model.safetensors").stat().st_size
    model16, _ = O.load_organism_hf(path=half)
    k = "decoder.model.decoder.layers.0.self_attn.q_proj.weight"
    assert dict(model16.named_parameters())[k].dtype == torch.float32
    assert torch.equal(dict(model16.named_parameters())[k], trained[k].half().float())
    # a decoder stage that started from an earlier one's codec: RUN/decoder_init reaches the card as the first stage
    import shutil

    shutil.copytree(run / "decoder", run / "decoder_init")
    assert main(["organism", "export", "--run", str(run), "--out", str(tmp_path / "ship2")]) == 0
    card2 = (tmp_path / "ship2" / "README.md").read_text()
    assert (tmp_path / "ship2" / "training" / "decoder_init_log.jsonl").exists()
    assert "then decoder stage 2, from stage 1's codec" in card2
    assert "cp -r runs/organism/decoder/hf runs/organism-dec2/codec/hf" in card2
    assert "then decoder stage 2" not in card
    # a chain: decoder_init, decoder_init2, then decoder; the last one with a tagger-feature loss, whose tagger's
    # training options reach the card as a command before that stage's
    shutil.copytree(run / "decoder", run / "decoder_init2")
    tagger = tmp_path / "tagger_perc"
    tagger.mkdir()
    (tagger / "train_config.json").write_text(json.dumps({"corpus": "data/corpus12k", "out": "runs/tagger_perc",
                                                          "epochs": 8, "seed": 1, "threads": 1, "resume": False}))
    cfg = json.loads((run / "decoder" / "config.json").read_text())
    (run / "decoder" / "config.json").write_text(json.dumps({**cfg, "w_tagger": 2.0, "tagger": str(tagger),
                                                             "w_onset": 6.0, "crop_seconds": 1.0, "batch_size": 4}))
    assert main(["organism", "export", "--run", str(run), "--out", str(tmp_path / "ship3")]) == 0
    card3 = (tmp_path / "ship3" / "README.md").read_text()
    assert (tmp_path / "ship3" / "training" / "decoder_init2_log.jsonl").exists()
    assert (tmp_path / "ship3" / "training" / "decoder_tagger_train_config.json").exists()
    assert "then decoder stage 3, from stage 2's codec" in card3 and "tagger-feature weight 2.0" in card3
    assert "cp -r runs/organism-dec2/decoder/hf runs/organism-dec3/codec/hf" in card3
    lines = card3.splitlines()
    tagger_cmd = lines.index("musiclens tagger train --corpus data/corpus12k --out runs/tagger_perc --epochs 8 "
                             "--seed 1   # the tagger whose features the next stage's loss reads")
    assert "--out runs/organism-dec3 --stage decoder" in lines[tagger_cmd + 2]  # the tagger comes first
    assert f"--decoder-w-tagger 2.0 --decoder-tagger {tagger}" in lines[tagger_cmd + 2]
    assert "--decoder-w-onset 6.0 --decoder-crop-seconds 1.0 --codec-batch-size 4" in lines[tagger_cmd + 2]
    assert "--decoder-w-onset" not in lines[tagger_cmd - 1]  # stage 2 kept the defaults
    # two stages that read the same tagger: its training command is printed once, before the first of them
    cfg2 = json.loads((run / "decoder_init2" / "config.json").read_text())
    (run / "decoder_init2" / "config.json").write_text(json.dumps({**cfg2, "w_tagger": 6.0, "tagger": str(tagger)}))
    assert main(["organism", "export", "--run", str(run), "--out", str(tmp_path / "ship4")]) == 0
    lines4 = (tmp_path / "ship4" / "README.md").read_text().splitlines()
    assert sum(line.startswith("musiclens tagger train") for line in lines4) == 1
    assert "--out runs/organism-dec2 --stage decoder" in lines4[lines4.index(lines[tagger_cmd]) + 2]


def test_tune_continues_from_another_runs_checkpoint(tiny_corpus, tmp_path, capsys):
    """--tune-init: fine-tune a run's tuned LM again on a new run's codes (e.g. a larger corpus)."""
    import shutil

    from safetensors.torch import load_file

    run, run2 = tmp_path / "run", tmp_path / "run2"
    common = ["--corpus", str(tiny_corpus), "--codec-batch-size", "2", "--lm-batch-size", "2", "--lm-layers", "1",
              "--lm-d-model", "32", "--codes-seconds", "1.0", "--device", "cpu"]
    assert main(["organism", "train", "--out", str(run), "--codec-steps", "2", "--decoder-steps", "2", "--lm-steps", "2",
                 "--tune-steps", "2", *common]) == 0
    run2.mkdir()
    shutil.copytree(run / "codec", run2 / "codec")
    assert main(["organism", "train", "--out", str(run2), "--stage", "codes", *common]) == 0
    missing = ["organism", "train", "--out", str(run2), "--stage", "tune", "--tune-init", str(run / "nope.pt"), *common]
    assert main(missing) == 2 and "--tune-init" in capsys.readouterr().err
    assert not (run2 / "tune").exists()  # nothing written for a bad --tune-init
    # learning rate 0: the continued model must be exactly the checkpoint it started from
    assert main(["organism", "train", "--out", str(run2), "--stage", "tune", "--tune-init", str(run / "tune" / "ckpt.pt"),
                 "--tune-steps", "1", "--tune-lr", "0", "--contrast-flips", "all", "--contrast-concepts", "tempo,brightness",
                 "--contrast-margin", "0.3",
                 *common]) == 0
    a, b = (load_file(str(r / "tune" / "hf" / "model.safetensors")) for r in (run, run2))
    dec = [k for k in a if k.startswith("decoder.")]
    assert dec and all(torch.equal(a[k], b[k]) for k in dec)
    assert not (run2 / "lm").exists()
    # an exported HF folder works as --tune-init too (what a lent GPU returns): lr 0 keeps its weights
    run3 = tmp_path / "run3"
    run3.mkdir()
    for d in ("codec", "codes"):
        shutil.copytree(run2 / d, run3 / d)
    assert main(["organism", "train", "--out", str(run3), "--stage", "tune", "--tune-init", str(run / "tune" / "hf"),
                 "--tune-steps", "1", "--tune-lr", "0", *common]) == 0
    c = load_file(str(run3 / "tune" / "hf" / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in dec)
    # the export shows the whole lineage: the base run's LM and first fine-tuning, then the continuation
    dst = tmp_path / "ship"
    assert main(["organism", "export", "--run", str(run2), "--out", str(dst), "--corpus", str(tiny_corpus)]) == 0
    tr = dst / "training"
    for f in ("codec_log.jsonl", "lm_log.jsonl", "tune_init_log.jsonl", "tune_log.jsonl", "tune_init_codes_summary.json"):
        assert (tr / f).exists(), f
    tcfg = json.loads((tr / "tune_config.json").read_text())
    assert tcfg["lr"] == 0 and tcfg["contrast_flips"] == "all" and tcfg["contrast_concepts"] == "tempo,brightness"
    assert tcfg["contrast_margin"] == 0.3
    card = (dst / "README.md").read_text()
    assert "on the larger corpus" in card and "--tune-init runs/organism/tune/ckpt.pt" in card
    assert "--contrast-concepts tempo,brightness --contrast-flips all" in card  # the continuation's recipe, reproducible


def test_bad_schedule_options_are_one_line_errors(tiny_corpus, tmp_path, capsys):
    cases = (("--schedule-minutes", "-1", "--schedule-minutes must be >= 0"),
             ("--codec-crop-seconds", "0", "--codec-crop-seconds must be > 0"),
             ("--decoder-crop-seconds", "0", "--decoder-crop-seconds must be > 0"),
             ("--decoder-w-onset", "-1", "--decoder-w-onset must be >= 0"),
             ("--beat-margin", "-0.1", "--beat-margin must be >= 0"),
             ("--lm-dropout", "1", "--lm-dropout must be >= 0 and < 1"),
             ("--lm-input-noise", "0.6", "--lm-input-noise must be >= 0 and <= 0.5"),
             ("--lm-input-noise-span", "0", "--lm-input-noise-span must be >= 1 and <= 100"),
             ("--lm-d-model", "100", "--lm-d-model must be a multiple of 32"))
    for flag, value, message in cases:
        out = tmp_path / flag.strip("-")
        assert main(["organism", "train", "--corpus", str(tiny_corpus), "--out", str(out), flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and not out.exists(), err


def test_a_config_built_in_python_is_checked_before_the_run_folder_is_made(tiny_corpus, tmp_path):
    from musiclens.errors import MusiclensError
    from musiclens.organism.pipeline import OrganismTrainConfig, train

    out = tmp_path / "run"
    with pytest.raises(MusiclensError, match="--lm-batch-size must be >= 1, got 0"):
        train(OrganismTrainConfig(corpus=str(tiny_corpus), out=str(out), stage="lm", lm_batch_size=0))
    with pytest.raises(MusiclensError, match="--beat-codebooks must be one of all, first, got second"):
        train(OrganismTrainConfig(corpus=str(tiny_corpus), out=str(out), stage="tune", beat_codebooks="second"))
    assert not out.exists()
    from musiclens.organism.lm import LMTrainConfig, train_lm

    with pytest.raises(MusiclensError, match=r"width \(100\) must be a multiple of its heads \(3\)"):
        train_lm(LMTrainConfig(d_model=100, heads=3), out, None, False)
    assert not out.exists()


def test_a_folder_that_is_not_a_corpus(tmp_path, capsys):
    """Another tool's folder with its own config.json (a store, a run) is named as not a corpus."""
    other = tmp_path / "store"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"layers": "1,2", "model": "tiny-random"}))
    out = tmp_path / "run"
    assert main(["organism", "train", "--corpus", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a corpus directory" in err and not out.exists()


def test_the_lm_options_reach_both_lm_stages():
    from musiclens.organism.pipeline import OrganismTrainConfig, _lm_config

    cfg = OrganismTrainConfig(lm_input_noise=0.2, lm_input_noise_kind="stale", lm_input_noise_span=16, lm_d_model=64,
                              beat_weight=0.5)
    for stage in (dict(steps=10, lr=1e-3), dict(steps=5, lr=5e-4, contrast_weight=1.0)):  # the lm and tune stages
        lcfg = _lm_config(cfg, **stage)
        assert (lcfg.input_noise, lcfg.input_noise_kind, lcfg.input_noise_span) == (0.2, "stale", 16)
        assert (lcfg.d_model, lcfg.heads, lcfg.ffn, lcfg.beat_weight, lcfg.steps) == (64, 2, 256, 0.5, stage["steps"])
