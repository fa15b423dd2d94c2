"""Reconstruction losses for the organism's codec.

A one-hour prototype trained with long-window mel losses only smeared fast
onsets (8.35 -> 4.05 onsets/s after encode-decode), which erased tempo before
the language model ever saw it. So the multi-scale mel loss here spans windows
from 4 ms to 128 ms (short windows give fine time resolution, long ones fine
frequency resolution), and an onset-envelope term compares the positive
spectral flux (what onset detectors and tempo estimators look at) of the
original and the reconstruction directly.
"""

from __future__ import annotations

import librosa
import torch
import torch.nn.functional as F
from torch import nn


class MultiScaleMel(nn.Module):
    """Log-mel spectrograms at several window sizes, with fixed filterbanks."""

    def __init__(self, sample_rate: int, n_ffts: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)):
        super().__init__()
        self.n_ffts = n_ffts
        for n in n_ffts:
            n_mels = min(80, n // 4)
            fb = librosa.filters.mel(sr=sample_rate, n_fft=n, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2)
            self.register_buffer(f"fb{n}", torch.tensor(fb, dtype=torch.float32), persistent=False)
            self.register_buffer(f"win{n}", torch.hann_window(n), persistent=False)

    def mels(self, y: torch.Tensor) -> dict[int, torch.Tensor]:
        """y [B, T] -> {n_fft: mel magnitude [B, n_mels, frames]}."""
        out = {}
        for n in self.n_ffts:
            spec = torch.stft(y, n_fft=n, hop_length=n // 4, win_length=n, window=getattr(self, f"win{n}"),
                              center=True, return_complex=True).abs()
            out[n] = torch.matmul(getattr(self, f"fb{n}"), spec)
        return out


class MultiResolutionSTFT(nn.Module):
    """Log-magnitude linear-frequency STFTs at several resolutions (hop = n_fft / 4)."""

    def __init__(self, n_ffts: tuple[int, ...] = (512, 1024, 2048), eps: float = 1e-5):
        super().__init__()
        self.n_ffts, self.eps = n_ffts, eps
        for n in n_ffts:
            self.register_buffer(f"win{n}", torch.hann_window(n), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over resolutions of L1(log|Y|, log|X|) + spectral convergence. x, y: [B, T]."""
        total = 0.0
        for n in self.n_ffts:
            kw = dict(n_fft=n, hop_length=n // 4, win_length=n, window=getattr(self, f"win{n}"), center=True,
                      return_complex=True)
            sx, sy = torch.stft(x, **kw).abs(), torch.stft(y, **kw).abs()
            log_l1 = F.l1_loss(torch.log(sy + self.eps), torch.log(sx + self.eps))
            convergence = torch.linalg.norm(sy - sx) / torch.linalg.norm(sx).clamp(min=self.eps)
            total = total + log_l1 + convergence
        return total / len(self.n_ffts)


def onset_envelope(logmel: torch.Tensor) -> torch.Tensor:
    """Positive spectral flux over mel bands [B, frames-1] (librosa's onset strength, differentiable)."""
    return F.relu(logmel[..., 1:] - logmel[..., :-1]).mean(dim=-2)


def reconstruction_loss(mel: MultiScaleMel, x: torch.Tensor, y: torch.Tensor, w_wave: float = 0.1,
                        w_mel: float = 1.0, w_onset: float = 1.0, onset_ffts: tuple[int, ...] = (256, 512),
                        w_stft: float = 0.0, stft: MultiResolutionSTFT | None = None) -> dict:
    """Waveform L1 + multi-scale (linear and log) mel L1 + onset-envelope L1 (+ w_stft x linear STFT). x, y: [B, T]."""
    mx, my = mel.mels(x), mel.mels(y)
    mel_loss = 0.0
    onset = 0.0
    for n in mel.n_ffts:
        lx, ly = torch.log(mx[n] + 1e-5), torch.log(my[n] + 1e-5)
        mel_loss = mel_loss + F.l1_loss(ly, lx) + F.l1_loss(my[n], mx[n])
        if n in onset_ffts:
            onset = onset + F.l1_loss(onset_envelope(ly), onset_envelope(lx))
    mel_loss = mel_loss / len(mel.n_ffts)
    wave = F.l1_loss(y, x)
    total = w_wave * wave + w_mel * mel_loss + w_onset * onset
    spectral = torch.zeros((), device=x.device)
    if w_stft > 0:
        if stft is None:  # built once by the caller (codec.training_audio), not once a step here
            raise ValueError("w_stft > 0 needs the MultiResolutionSTFT module as stft=")
        spectral = stft(x, y)
        total = total + w_stft * spectral
    return {"total": total, "wave": wave.detach(), "mel": mel_loss.detach(), "onset": torch.as_tensor(onset).detach(),
            "stft": spectral.detach()}
