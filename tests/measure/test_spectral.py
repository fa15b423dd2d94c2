"""Centroid, RMS loudness and onset rate on synthetic signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musiclens.errors import MusiclensError
from musiclens.measure import centroid, loudness, onset_rate

SR = 16000


def sine(freq, seconds=2.0, amp=1.0):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def clicks(rate_hz, seconds=6.0):
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    burst = (np.random.default_rng(0).standard_normal(160) * np.hanning(160)).astype(np.float32)
    for t in np.arange(0.25, seconds - 0.1, 1.0 / rate_hz):
        i = int(t * SR)
        y[i:i + 160] += burst
    return y


def test_centroid_tracks_frequency():
    assert centroid(sine(440), SR) == pytest.approx(440, rel=0.05)
    assert centroid(sine(2000), SR) == pytest.approx(2000, rel=0.05)
    # energy weighting: a quiet high tone barely moves the centroid of a loud low one
    assert centroid(sine(300) + sine(4000, amp=0.05), SR) < 320
    assert np.isnan(centroid(np.zeros(SR, np.float32), SR))


def test_loudness_is_rms_db():
    assert loudness(sine(440), SR) == pytest.approx(-3.01, abs=0.05)
    assert loudness(sine(440, amp=0.5), SR) == pytest.approx(-3.01 - 6.02, abs=0.05)
    assert loudness(torch.from_numpy(sine(440))[None], SR) == pytest.approx(-3.01, abs=0.05)  # [1, T] tensor


def test_onset_rate_counts_clicks():
    assert onset_rate(clicks(2.0), SR) == pytest.approx(2.0, abs=0.35)
    assert onset_rate(clicks(6.0), SR) == pytest.approx(6.0, abs=0.5)


def test_bad_audio_is_a_user_error():
    with pytest.raises(MusiclensError):
        loudness(np.zeros((2, 2, 2)), SR)
    with pytest.raises(MusiclensError):
        centroid(np.array([np.nan, 0.0], dtype=np.float32), SR)
    with pytest.raises(MusiclensError):
        onset_rate(np.zeros(0), SR)
