"""A deep-feature ("perceptual") loss for the decoder stage, read from a frozen attribute tagger.

Why: the codes the organism's LM samples hold the requested instrument about
as often as real clips' codes do, yet the decoder renders most of them as
something a timbre classifier hears as violin or strings (docs/organism.md,
"Where instrument is lost"). Mel and STFT losses weigh every bin alike, so
the small spectral-envelope details that tell a flute from a violin barely
move them. A loss on the inner feature maps of a network trained to tell
instruments apart weighs exactly those details, as perceptual losses do for
image and speech decoders.

Which network: not the shipped tagger, which is the judge of every figure
(a decoder trained against the judge could learn to please it rather than to
sound right). `musiclens organism train --decoder-tagger DIR` takes any tagger
folder; the session-14 run used one trained on the 12k corpus with another
seed (docs/organism.md, "A tagger-feature loss for the decoder"), and its
effect is checked by the shipped tagger and by an MFCC classifier that shares
nothing with either network (`bench/codec_timbre.py`).

The log-mel here is the tagger's own (`measure.tagger.log_mel`: 1024-point
Hann STFT, 320-sample hop, 64 Slaney mel bands to 8 kHz, natural log of
power), written in torch so gradients reach the decoder; a test checks that
it matches the librosa version.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import torch
from torch import nn

from ..measure import tagger as T


class TaggerFeatureLoss(nn.Module):
    """L1 between the conv feature maps of a frozen tagger on original and reconstructed audio.

    Each conv block's map is compared after its ReLU, scaled by the mean
    magnitude of the original's map (so every block counts about equally),
    and the blocks are averaged. Input audio must be at the tagger's 16 kHz.
    """

    def __init__(self, tagger_dir: str | Path):
        super().__init__()
        tagger = T.Tagger.load(tagger_dir)
        self.conv = tagger.net.conv.eval()
        for p in self.conv.parameters():
            p.requires_grad_(False)
        self.mean, self.std = tagger.mel_mean, tagger.mel_std
        fb = librosa.filters.mel(sr=T.SR, n_fft=T.N_FFT, n_mels=tagger.n_mels, fmax=T.FMAX)
        self.register_buffer("fb", torch.tensor(fb, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(T.N_FFT), persistent=False)

    def train(self, mode: bool = True) -> "TaggerFeatureLoss":
        """The tagger stays in eval mode (its BatchNorm statistics are the trained ones)."""
        super().train(mode)
        self.conv.eval()
        return self

    def log_mel(self, y: torch.Tensor) -> torch.Tensor:
        """[B, T] audio -> [B, n_mels, frames] natural-log mel power, as `measure.tagger.log_mel`."""
        spec = torch.stft(y, n_fft=T.N_FFT, hop_length=T.HOP, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        return torch.log(self.fb @ (spec.real ** 2 + spec.imag ** 2) + 1e-8)

    def feature_maps(self, y: torch.Tensor) -> list[torch.Tensor]:
        h = ((self.log_mel(y) - self.mean) / self.std)[:, None]
        maps = []
        for layer in self.conv:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                maps.append(h)
        return maps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x original, y reconstruction, both [B, T] at 16 kHz -> scalar loss."""
        with torch.no_grad():
            target = self.feature_maps(x)
        total = 0.0
        for fx, fy in zip(target, self.feature_maps(y)):
            total = total + (fy - fx).abs().mean() / fx.abs().mean().clamp(min=1e-5)
        return total / len(target)
