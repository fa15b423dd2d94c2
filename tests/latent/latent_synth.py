"""Synthetic tones with known pitch, level and brightness for the latent tests."""

from __future__ import annotations

import numpy as np

SR = 16000
NOTES = [48, 55, 64, 71]  # C3 G3 E4 B4


def tone(midi: int, amp: float, harmonics: int, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f = 440.0 * 2 ** ((midi - 69) / 12)
    y = sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, harmonics + 1))
    return (amp * y / np.max(np.abs(y))).astype(np.float32)
