"""The decoder stage: adversarial fine-tuning of the codec's decoder with the codes frozen."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from musiclens.cli import main
from musiclens.errors import MusiclensError
from musiclens.organism.codec import load_codec
from musiclens.organism.discriminator import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from musiclens.organism.polish import PolishConfig, install_codec, polished_codec_dir, train_decoder


def test_discriminator_shapes_and_losses():
    torch.manual_seed(0)
    d = MultiScaleSTFTDiscriminator(channels=4)
    x = torch.randn(2, 8000) * 0.1
    out = d(x)
    assert len(out) == 3
    for (score, feats), n_fft in zip(out, (256, 512, 1024)):
        assert score.shape[0] == 2 and score.shape[1] == 1
        assert score.shape[-1] == 8000 // (n_fft // 4) + 1  # one score per STFT frame
        assert len(feats) == 5
    adv, feat = generator_losses(out, out)
    assert float(feat.detach()) == 0.0  # identical audio: nothing to match
    _, feat2 = generator_losses(out, d(x + 0.05 * torch.randn_like(x)))
    assert float(feat2.detach()) > 0.01
    # the hinge is zero only when real scores >= 1 and fake scores <= -1
    real = [(torch.full((2, 1, 3, 3), 2.0), [])]
    fake = [(torch.full((2, 1, 3, 3), -2.0), [])]
    assert float(discriminator_loss(real, fake)) == 0.0
    assert float(discriminator_loss(fake, real)) == pytest.approx(6.0)


def _codec_run(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    assert main(["organism", "train", "--corpus", str(tiny_corpus), "--out", str(run), "--stage", "codec",
                 "--codec-steps", "2", "--codec-batch-size", "2", "--device", "cpu"]) == 0
    return run


def test_decoder_stage_keeps_codes_changes_decoder_and_resumes(tiny_corpus, tmp_path):
    run = _codec_run(tiny_corpus, tmp_path)
    assert polished_codec_dir(run) == run / "codec" / "hf"
    cfg = PolishConfig(steps=3, batch_size=2, disc_warmup=1, lr=1e-3, w_adv=0.2, w_feat=0.5)
    s = train_decoder(cfg, tiny_corpus, run, minutes=None, resume=False)
    assert s["done"] and s["step"] == 3
    assert polished_codec_dir(run) == run / "decoder" / "hf"
    log = [json.loads(line) for line in (run / "decoder" / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and log[-1]["step"] == 3 and log[-1]["adv"] > 0  # adversarial loss was on
    old, new = load_codec(run / "codec" / "hf"), load_codec(run / "decoder" / "hf")
    x = torch.randn(2, 1, 16000) * 0.1
    with torch.no_grad():
        c_old, c_new = old.encode(x).audio_codes, new.encode(x).audio_codes
        y_old = old.decode(c_old, [None]).audio_values
        y_new = new.decode(c_new, [None]).audio_values
    assert torch.equal(c_old, c_new)  # encoder and codebooks frozen: the LM's codes stay valid
    assert float((y_old - y_new).abs().max()) > 0  # the decoder did change
    with pytest.raises(MusiclensError, match="--resume"):
        train_decoder(cfg, tiny_corpus, run, minutes=None, resume=False)
    more = train_decoder(PolishConfig(steps=4, batch_size=2, disc_warmup=1, w_adv=0.2, w_feat=0.5), tiny_corpus, run,
                         None, resume=True)
    assert more["step"] == 4  # continued from step 3, not restarted


def test_install_codec_swaps_only_the_audio_encoder(tiny_corpus, tmp_path):
    run = _codec_run(tiny_corpus, tmp_path)
    assert main(["organism", "train", "--corpus", str(tiny_corpus), "--out", str(run), "--stage", "codes",
                 "--codes-seconds", "1.0", "--device", "cpu"]) == 0
    assert main(["organism", "train", "--out", str(run), "--corpus", str(tiny_corpus), "--stage", "lm",
                 "--lm-steps", "1", "--lm-batch-size", "2", "--lm-layers", "1", "--lm-d-model", "32",
                 "--device", "cpu"]) == 0
    before = load_file(str(run / "lm" / "hf" / "model.safetensors"))
    config_before = (run / "lm" / "hf" / "config.json").read_text()
    train_decoder(PolishConfig(steps=2, batch_size=2, disc_warmup=0, lr=1e-3), tiny_corpus, run, None, False)
    assert (run / "lm" / "hf" / "config.json").read_text() == config_before  # same codec shape: config untouched
    after = load_file(str(run / "lm" / "hf" / "model.safetensors"))
    polished = load_file(str(run / "decoder" / "hf" / "model.safetensors"))
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("audio_encoder.decoder.") for k in changed)
    for k in changed:
        assert torch.equal(after[k], polished[k.removeprefix("audio_encoder.")])
    with pytest.raises(MusiclensError, match="does not hold this codec"):
        bad = tmp_path / "bad"
        (bad / "lm" / "hf").mkdir(parents=True)
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(1)}, str(bad / "lm" / "hf" / "model.safetensors"))
        install_codec(bad, run / "decoder" / "hf")


def test_decoder_stage_without_steps_is_a_one_line_error(tiny_corpus, tmp_path, capsys):
    args = ["organism", "train", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "r"), "--stage", "decoder"]
    assert main(args + ["--decoder-steps", "0"]) == 2
    assert "--decoder-steps" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(args) == 2  # the shipped recipe's steps by default, but no codec trained yet
    assert "run the codec stage first" in capsys.readouterr().err


def test_train_command_passes_decoder_loss_weights(tiny_corpus, tmp_path):
    run = _codec_run(tiny_corpus, tmp_path)
    assert main(["organism", "train", "--corpus", str(tiny_corpus), "--out", str(run), "--stage", "decoder",
                 "--decoder-steps", "2", "--codec-batch-size", "2", "--decoder-lr", "3e-4", "--decoder-w-adv", "0",
                 "--decoder-w-feat", "0", "--decoder-w-stft", "2", "--device", "cpu"]) == 0
    cfg = json.loads((run / "decoder" / "config.json").read_text())
    assert cfg["lr"] == 3e-4 and cfg["w_adv"] == 0 and cfg["w_feat"] == 0 and cfg["w_stft"] == 2
    log = [json.loads(line) for line in (run / "decoder" / "log.jsonl").read_text().splitlines()]
    assert all(r.get("adv", 0) == 0 and r.get("disc", 0) == 0 for r in log)  # plain fine-tuning: no discriminator
    assert log[-1]["train_stft"] > 0


def test_decoder_stage_by_minutes_stops_when_spent_and_saves_its_time(tiny_corpus, tmp_path):
    run = _codec_run(tiny_corpus, tmp_path)
    assert main(["organism", "train", "--corpus", str(tiny_corpus), "--out", str(run), "--stage", "decoder",
                 "--decoder-steps", "100000", "--schedule-minutes", "0.02", "--codec-batch-size", "2",
                 "--device", "cpu"]) == 0
    cfg = json.loads((run / "decoder" / "config.json").read_text())
    assert cfg["budget_minutes"] == 0.02
    progress = json.loads((run / "decoder" / "progress.json").read_text())
    assert progress["done"] and 0 < progress["step"] < 100000  # time, not the step count, ended it
    state = torch.load(run / "decoder" / "ckpt.pt", weights_only=False)
    assert state["trained_seconds"] >= 0.02 * 60
    before = progress["step"]
    again = train_decoder(PolishConfig(steps=100000, batch_size=2, budget_minutes=0.02), tiny_corpus, run, None,
                          resume=True)
    assert again["done"] and again["step"] == before  # its budget is spent: a resume adds nothing
