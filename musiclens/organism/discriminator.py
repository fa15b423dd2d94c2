"""A multi-scale STFT discriminator and its losses, for the codec's decoder.

Trained on spectral losses alone, a codec decoder renders the average of the
waveforms its codes could stand for: harmonics come out smeared and phase is
arbitrary, which is exactly where instruments differ (the organism's first
codec kept brightness, loudness and pitch but only 30 % of instrument
identity, by the tagger). EnCodec (Défossez et al. 2022) adds an adversarial
loss on complex STFTs at several resolutions, plus a feature-matching loss on
the discriminator's inner layers; this module is a small version of that
discriminator for 16 kHz audio on a CPU budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class STFTDiscriminator(nn.Module):
    """One resolution: complex STFT (real, imaginary as 2 channels) -> 2-D convs -> a score map."""

    def __init__(self, n_fft: int, channels: int = 16, dilations: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in dilations:  # strided in frequency, dilated in time: a wide field at low cost
            layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(2, 1), dilation=(1, d),
                                                padding=(1, 4 * d))))
        layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """y [B, T] -> (score map [B, 1, F', T'], inner feature maps)."""
        spec = torch.stft(y, self.n_fft, hop_length=self.n_fft // 4, window=self.window, return_complex=True)
        h = torch.stack([spec.real, spec.imag], dim=1)  # [B, 2, F, T]
        feats = []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several STFT resolutions (at 16 kHz: 16, 32 and 64 ms windows by default)."""

    def __init__(self, n_ffts: tuple[int, ...] = (256, 512, 1024), channels: int = 16):
        super().__init__()
        self.discs = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, y: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(y) for d in self.discs]


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Hinge loss, averaged over resolutions (fake outputs must come from detached audio)."""
    loss = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake))
    return loss / len(real)


def generator_losses(real: list, fake: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial hinge loss, feature-matching loss), both averaged over resolutions.

    Feature matching compares inner maps of real and generated audio with an L1
    relative to the real map's mean magnitude, so every layer counts alike.
    """
    adv = sum(F.relu(1 - f).mean() for f, _ in fake) / len(fake)
    feat = 0.0
    n = 0
    for (_, fr), (_, ff) in zip(real, fake):
        for a, b in zip(fr, ff):
            feat = feat + F.l1_loss(b, a.detach()) / (a.detach().abs().mean() + 1e-8)
            n += 1
    return adv, feat / max(n, 1)


class Adversary:
    """A discriminator with its optimiser: what codec and decoder training add when adversarial.

    `step(x, y)` trains the discriminator on real x against generated y (detached)
    and returns its loss; `losses(x, y)` gives the generator's (adversarial,
    feature-matching) losses, to be weighted by the caller.
    """

    def __init__(self, channels: int, lr: float, device: str):
        self.disc = MultiScaleSTFTDiscriminator(channels=channels).to(device)
        self.opt = torch.optim.AdamW(self.disc.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0)

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = discriminator_loss(self.disc(x), self.disc(y.detach()))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():  # real audio's maps are targets only: no graph to build or backpropagate
            real = self.disc(x)
        return generator_losses(real, self.disc(y))

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "opt_d": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt_d"])
