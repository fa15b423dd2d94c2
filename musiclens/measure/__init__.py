"""Measurements of musical attributes, used to check what a model generates.

    tempo(y, sr)     -> {bpm (octave-resolved), bpm_raw, onset_rate, confidence}
    centroid(y, sr)  -> Hz (energy-weighted spectral centroid)
    loudness(y, sr)  -> dB RMS
    onset_rate(y, sr)-> onsets per second
    pulse_clarity(y, sr) -> {clarity, bpm}: how steady the beat is, and at which period
    pitch(y, sr)     -> {median_hz, median_midi, voiced}   (CREPE via torchcrepe)
    Tagger           -> the organism's attribute CNN: predict(y, sr), embed(y, sr)
    fad(emb_a, emb_b)-> Fréchet audio distance

Heavy dependencies (essentia, torchcrepe, the tagger's torch model) load on first use.
"""

from __future__ import annotations

# Functions named like their modules are imported eagerly (the modules are
# light): otherwise `import musiclens.measure.tempo` would rebind
# `musiclens.measure.tempo` to the module.
from .fad import fad
from .pitch import pitch
from .spectral import centroid, loudness, onset_rate
from .tempo import pulse_clarity, tempo

_LAZY = {"Tagger": ("tagger", "Tagger")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{mod}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["centroid", "loudness", "onset_rate", "tempo", "pulse_clarity", "pitch", "Tagger", "fad"]
