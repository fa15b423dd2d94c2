"""Frame labels aligned to latent frames: pitch, loudness and timbre classes.

The probes need one label per latent frame, measured on the *audio* that
frame encodes. Latent frame i of an autoencoder with hop h covers samples
`[i*h, (i+1)*h)`; every measurement below uses a window centred on that
span's centre `(i + 0.5) * h`, so labels and latents line up by construction
whatever the frame rate (50 frames/s for EnCodec-16k, 21.5 for Oobleck-44.1k).

Raw per-frame values (`frame_values`):
* pitch: CREPE (torchcrepe, model "tiny" by default) on one 1024-sample window
  at 16 kHz per frame, weighted-argmax decoding; `periodicity` is CREPE's
  confidence. CREPE's range ends at 2006 Hz (about B6).
* loudness: RMS over a window of 2 hops, in dBFS (floor -100 dB).
* timbre: spectral centroid (Hz) of a Hann-windowed frame of max(2 hops, 1024) samples.

Classes (`LabelBins`):
* pitch, 66 classes: class 0 = unvoiced (CREPE periodicity below
  `voicing_threshold`, or RMS below `silence_db`); classes 1..65 = the 65
  equal-tempered semitones C2 (MIDI 36) ... E7 (MIDI 100), A4 = 440 Hz,
  pitch rounded to the nearest semitone and clipped into that range.
* loudness, 20 classes: equal-width bins of RMS dB between the 0.5th and
  99.5th percentiles of the *training* frames (outside values go to the end bins).
* timbre, 20 classes: equal-width bins of spectral centroid (Hz), fitted the same way.
The fitted edges are saved with the probes (`bins.json`) and reused on held-out audio.
"""

from __future__ import annotations

import dataclasses
import sys
import types

import numpy as np
import torch

from ..errors import MusiclensError

ATTRIBUTES = ("pitch", "loudness", "timbre")
PITCH_LOW_MIDI = 36   # C2
PITCH_HIGH_MIDI = 100  # E7
N_PITCH = PITCH_HIGH_MIDI - PITCH_LOW_MIDI + 2  # 65 semitones + unvoiced = 66
N_BINS = 20
CREPE_SR = 16000
CREPE_WINDOW = 1024
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def import_torchcrepe():
    """Import torchcrepe without torchaudio (DESIGN.md: torchaudio must stay uninstalled).

    torchcrepe uses torchaudio only in `load.audio` (file loading), which we never
    call; a stub module stands in during the import and is removed afterwards so
    that transformers' own torchaudio detection is not fooled.
    """
    if "torchcrepe" in sys.modules:
        return sys.modules["torchcrepe"]
    had = "torchaudio" in sys.modules
    if not had:
        try:
            import torchaudio  # noqa: F401  (a working install is fine too)
            had = True
        except Exception:
            sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        import torchcrepe
    except ImportError as e:
        raise MusiclensError(f"torchcrepe is not installed (pip install --no-deps torchcrepe): {e}")
    finally:
        if not had:
            sys.modules.pop("torchaudio", None)
    return torchcrepe


def midi_name(midi: int) -> str:
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def pitch_class_names() -> list[str]:
    return ["unvoiced"] + [midi_name(m) for m in range(PITCH_LOW_MIDI, PITCH_HIGH_MIDI + 1)]


def pitch_class_of(name: str) -> int:
    """'C5' / 'c#4' / 'unvoiced' / MIDI number -> pitch class index."""
    names = [n.lower() for n in pitch_class_names()]
    key = str(name).strip().lower()
    if key in names:
        return names.index(key)
    if key.isdigit() and PITCH_LOW_MIDI <= int(key) <= PITCH_HIGH_MIDI:
        return int(key) - PITCH_LOW_MIDI + 1
    raise MusiclensError(f"unknown pitch class {name!r}: use a note C2..E7 (e.g. C5, F#3), a MIDI number "
                         f"{PITCH_LOW_MIDI}..{PITCH_HIGH_MIDI}, or 'unvoiced'")


def _centred_windows(y: np.ndarray, centres: np.ndarray, width: int) -> np.ndarray:
    """[n, width] windows of `y` centred on sample positions `centres` (zero padded)."""
    pad = width // 2 + 1
    yp = np.pad(y, (pad, pad))
    start = np.round(centres).astype(np.int64) - width // 2 + pad
    idx = start[:, None] + np.arange(width)[None, :]
    return yp[idx]


@torch.no_grad()
def frame_values(y: np.ndarray, sr: int, hop: int, n_frames: int, crepe_model: str = "tiny",
                 batch: int = 2048) -> dict[str, np.ndarray]:
    """Raw per-latent-frame measurements of mono audio `y` (see module doc).

    Returns float32 arrays of length `n_frames`: pitch_hz, periodicity, rms_db, centroid_hz.
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise MusiclensError("frame labels need mono audio")
    centres = (np.arange(n_frames) + 0.5) * hop  # in samples at sr
    # loudness
    w_rms = 2 * hop
    win = _centred_windows(y, centres, w_rms)
    rms = np.sqrt(np.mean(win.astype(np.float64) ** 2, axis=1))
    rms_db = 20 * np.log10(np.maximum(rms, 1e-5))
    # timbre
    w_c = max(2 * hop, 1024)
    win = _centred_windows(y, centres, w_c) * np.hanning(w_c)[None, :]
    mag = np.abs(np.fft.rfft(win, axis=1))
    freqs = np.fft.rfftfreq(w_c, 1.0 / sr)
    tot = mag.sum(axis=1)
    centroid = np.where(tot > 1e-8, (mag * freqs[None, :]).sum(axis=1) / np.maximum(tot, 1e-12), 0.0)
    # pitch
    crepe = import_torchcrepe()
    y16 = y if sr == CREPE_SR else librosa.resample(y, orig_sr=sr, target_sr=CREPE_SR)
    frames = torch.from_numpy(_centred_windows(y16, centres * CREPE_SR / sr, CREPE_WINDOW).astype(np.float32))
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)
    probs = torch.cat([crepe.infer(frames[i:i + batch], model=crepe_model) for i in range(0, len(frames), batch)])
    pitch, periodicity = crepe.postprocess(probs.T[None], fmin=50.0, fmax=crepe.MAX_FMAX,
                                           decoder=crepe.decode.weighted_argmax, return_periodicity=True)
    return {
        "pitch_hz": pitch[0].numpy().astype(np.float32),
        "periodicity": periodicity[0].numpy().astype(np.float32),
        "rms_db": rms_db.astype(np.float32),
        "centroid_hz": centroid.astype(np.float32),
    }


@dataclasses.dataclass
class LabelBins:
    """Class definitions for the three attributes; edges are fitted on training frames."""

    loudness_edges: list[float]
    timbre_edges: list[float]
    voicing_threshold: float = 0.4
    silence_db: float = -60.0
    pitch_low_midi: int = PITCH_LOW_MIDI
    pitch_high_midi: int = PITCH_HIGH_MIDI

    @classmethod
    def fit(cls, values: dict[str, np.ndarray], n_bins: int = N_BINS, voicing_threshold: float = 0.4,
            silence_db: float = -60.0) -> "LabelBins":
        """Equal-width bins between the 0.5th and 99.5th percentiles of the training frames."""
        edges = {}
        for key, attr in (("rms_db", "loudness"), ("centroid_hz", "timbre")):
            v = np.asarray(values[key], dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size < 2:
                raise MusiclensError(f"too few training frames to fit {attr} bins")
            lo, hi = np.percentile(v, [0.5, 99.5])
            if hi <= lo:
                hi = lo + 1e-3
            edges[attr] = np.linspace(lo, hi, n_bins + 1).tolist()
        return cls(edges["loudness"], edges["timbre"], voicing_threshold, silence_db)

    def n_classes(self, attribute: str) -> int:
        if attribute == "pitch":
            return self.pitch_high_midi - self.pitch_low_midi + 2
        return len(self.loudness_edges if attribute == "loudness" else self.timbre_edges) - 1

    def class_names(self, attribute: str) -> list[str]:
        if attribute == "pitch":
            return pitch_class_names()
        if attribute == "loudness":
            e = self.loudness_edges
            return [f"{e[i]:.1f}..{e[i + 1]:.1f} dB" for i in range(len(e) - 1)]
        e = self.timbre_edges
        return [f"{e[i]:.0f}..{e[i + 1]:.0f} Hz" for i in range(len(e) - 1)]

    def classes(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw values -> int64 class per frame for each attribute."""
        hz = np.asarray(values["pitch_hz"], dtype=np.float64)
        voiced = (np.asarray(values["periodicity"]) >= self.voicing_threshold) & \
                 (np.asarray(values["rms_db"]) >= self.silence_db) & (hz > 0)
        midi = 69 + 12 * np.log2(np.maximum(hz, 1e-6) / 440.0)
        k = np.clip(np.round(midi), self.pitch_low_midi, self.pitch_high_midi) - self.pitch_low_midi + 1
        pitch = np.where(voiced, k, 0).astype(np.int64)
        out = {"pitch": pitch}
        for key, attr, edges in (("rms_db", "loudness", self.loudness_edges),
                                 ("centroid_hz", "timbre", self.timbre_edges)):
            inner = np.asarray(edges[1:-1])
            out[attr] = np.searchsorted(inner, np.asarray(values[key], dtype=np.float64), side="right").astype(np.int64)
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["definition"] = {
            "pitch": "class 0 unvoiced (CREPE periodicity < voicing_threshold or RMS < silence_db); "
                     "classes 1..65 = MIDI 36 (C2) .. 100 (E7), nearest semitone, clipped",
            "loudness": "equal-width bins of frame RMS in dBFS between the training 0.5/99.5 percentiles",
            "timbre": "equal-width bins of frame spectral centroid (Hz) between the training 0.5/99.5 percentiles",
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LabelBins":
        d = {k: v for k, v in d.items() if k != "definition"}
        return cls(**d)
