"""Spectral centroid, RMS loudness and onset rate of a mono clip.

These are the measurements that check brightness, dynamics and tempo of
generated audio. Choices, and why:

* Centroid of the clip's *summed* power spectrum (energy-weighted), not the
  mean of per-frame centroids: silent frames have a noise-dominated, high
  centroid that would otherwise swamp a sparse melody.
* Loudness = RMS over the whole clip in dBFS (20 log10 rms). Plain RMS is
  what the corpus's dynamics factor controls (MIDI velocity, fixed gain).
* Onset rate = detected onsets per second (librosa's spectral-flux onset
  detector). It measures tempo without the octave ambiguity of BPM.
"""

from __future__ import annotations

import numpy as np

N_FFT = 1024
EPS = 1e-10


def as_mono(y, name: str = "audio") -> np.ndarray:
    """float32 1-D array from a numpy array or torch tensor ([T] or [C, T], channels averaged)."""
    from ..errors import MusiclensError

    if hasattr(y, "detach"):
        y = y.detach().float().cpu().numpy()
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise MusiclensError(f"{name}: expected mono audio [T] or [C, T], got shape {y.shape}")
    if y.size == 0:
        raise MusiclensError(f"{name}: empty audio")
    if not np.isfinite(y).all():
        raise MusiclensError(f"{name}: audio contains NaN or inf")
    return y


def centroid(y, sr: int) -> float:
    """Energy-weighted spectral centroid in Hz (nan for digital silence)."""
    y = as_mono(y)
    n_fft = min(N_FFT, 1 << int(np.floor(np.log2(max(len(y), 16)))))
    import librosa

    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=n_fft // 2, center=True)) ** 2
    spec = power.sum(axis=1)
    total = spec.sum()
    if total <= EPS:
        return float("nan")
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    return float((freqs * spec).sum() / total)


def loudness(y, sr: int) -> float:
    """RMS level in dBFS (a full-scale sine is -3 dB; silence is about -200 dB)."""
    y = as_mono(y).astype(np.float64)
    return float(20.0 * np.log10(np.sqrt(np.mean(y ** 2)) + EPS))


def onset_times(y, sr: int) -> np.ndarray:
    """Onset times in seconds (librosa spectral flux, default peak picking)."""
    import librosa

    y = as_mono(y)
    env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=256)
    frames = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=256, units="frames")
    return librosa.frames_to_time(frames, sr=sr, hop_length=256)


def onset_rate(y, sr: int) -> float:
    """Detected onsets per second."""
    y = as_mono(y)
    return float(len(onset_times(y, sr)) / (len(y) / sr))
