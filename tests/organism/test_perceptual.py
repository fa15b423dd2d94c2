"""The decoder stage's tagger-feature loss (organism/perceptual.py)."""

from __future__ import annotations

import json

import numpy as np
import torch

from musiclens.cli import main
from musiclens.measure import tagger as T
from musiclens.organism.perceptual import TaggerFeatureLoss


def _tone(seconds: float = 1.0, f0: float = 440.0) -> np.ndarray:
    t = np.arange(int(T.SR * seconds)) / T.SR
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_log_mel_is_the_taggers_own():
    loss = TaggerFeatureLoss(T.ASSET_DIR)
    y = _tone()
    ours = loss.log_mel(torch.from_numpy(y)[None])[0].numpy()
    ref = T.log_mel(y)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3  # same STFT, padding, filterbank and log as the librosa version


def test_loss_is_zero_for_the_original_and_trains_only_the_input():
    loss = TaggerFeatureLoss(T.ASSET_DIR).train()
    assert not loss.conv.training  # BatchNorm keeps the tagger's statistics
    x = torch.from_numpy(np.stack([_tone(0.5, 220.0), _tone(0.5, 880.0)]))
    assert float(loss(x, x)) == 0.0
    y = (x + 0.05 * torch.randn_like(x)).requires_grad_()
    value = loss(y=y, x=x)
    value.backward()
    assert float(value.detach()) > 0.05 and float(y.grad.abs().sum()) > 0
    assert all(p.grad is None for p in loss.parameters())  # the tagger is frozen
    swapped = float(loss(x, x.flip(0)))  # an octave apart: far more different than added noise
    assert swapped > float(value.detach())


def test_decoder_stage_with_the_tagger_loss(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["organism", "train", "--corpus", str(tiny_corpus), "--out", str(run), "--stage", "codec",
                 "--codec-steps", "2", "--codec-batch-size", "2", "--device", "cpu"]) == 0
    args = ["organism", "train", "--corpus", str(tiny_corpus), "--out", str(run), "--stage", "decoder",
            "--decoder-steps", "2", "--codec-batch-size", "2", "--decoder-w-tagger", "1", "--device", "cpu"]
    assert main(args) == 2  # a weight without a tagger folder
    assert "--decoder-tagger" in capsys.readouterr().err and not (run / "decoder").exists()
    assert main(args + ["--decoder-tagger", str(tmp_path / "nowhere")]) == 2
    assert "no tagger at" in capsys.readouterr().err
    assert main(args + ["--decoder-tagger", str(T.ASSET_DIR)]) == 0
    cfg = json.loads((run / "decoder" / "config.json").read_text())
    assert cfg["w_tagger"] == 1 and cfg["tagger"] == str(T.ASSET_DIR)
    log = [json.loads(line) for line in (run / "decoder" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["tagger"] > 0
