"""Tempo of a clip: raw BPM from a beat tracker, an octave-resolved BPM, and the onset rate.

Beat trackers are ambiguous by a factor of two: they often report double the
tempo of slow music and half the tempo of fast music, and both readings fall
inside a 60-180 BPM range (DESIGN.md: raw essentia BPM did not separate slow
from fast clips, onset rate did). So:

1. `bpm_raw`: essentia `RhythmExtractor2013` (librosa's tempo estimate if
   essentia is missing). Essentia assumes 44.1 kHz, so audio is resampled.
2. Candidates are the metrical levels raw/2, raw, 2*raw inside the prior
   tempo range (60-180 BPM by default, the corpus's range).
3. Each candidate predicts an onset density, onsets per beat =
   onset_rate * 60 / bpm. Melodies have a typical density (about one to two
   notes per beat); the candidate whose implied density is closest, in log
   terms, to the typical density `ONSETS_PER_BEAT` wins (maximum likelihood
   under a log-normal density model with a uniform prior on the range).
   `ONSETS_PER_BEAT` was fitted on the corpus train split (bench/corpus.py
   refits and reports it) and the rule is validated on the test split.
"""

from __future__ import annotations

import numpy as np

from .spectral import as_mono, onset_rate

# median onsets-per-beat on the corpus train split (bench/corpus.py: "tempo.fit")
ONSETS_PER_BEAT = 1.456
PRIOR = (60.0, 180.0)
ESSENTIA_SR = 44100


def _has_essentia() -> bool:
    try:
        import essentia.standard  # noqa: F401

        return True
    except Exception:
        return False


def raw_bpm(y, sr: int, method: str = "degara") -> tuple[float, float]:
    """(bpm, confidence) from essentia RhythmExtractor2013, or librosa when essentia is absent.

    `method`: essentia's "degara" (fast) or "multifeature" (slower; also yields a confidence).
    Confidence is nan where the method has none.
    """
    import librosa

    y = as_mono(y)
    if method in ("degara", "multifeature") and _has_essentia():
        import essentia.standard as es

        y44 = librosa.resample(y, orig_sr=sr, target_sr=ESSENTIA_SR) if sr != ESSENTIA_SR else y
        bpm, _, conf, _, _ = es.RhythmExtractor2013(method=method)(np.ascontiguousarray(y44, dtype=np.float32))
        conf = float(conf) if method == "multifeature" else float("nan")
        return float(bpm), conf
    env = librosa.onset.onset_strength(y=y, sr=sr)
    bpm = librosa.feature.tempo(onset_envelope=env, sr=sr)[0]
    return float(bpm), float("nan")


def resolve_octave(bpm_raw: float, rate: float, prior: tuple[float, float] = PRIOR,
                   onsets_per_beat: float = ONSETS_PER_BEAT) -> float:
    """Pick raw/2, raw or 2*raw (inside `prior`) whose implied onsets-per-beat is most typical."""
    if not np.isfinite(bpm_raw) or bpm_raw <= 0:
        return float("nan")
    lo, hi = prior
    cands = [c for c in (bpm_raw / 2, bpm_raw, bpm_raw * 2) if lo * 0.95 <= c <= hi * 1.05]
    if not cands:  # outside the range at every level: the level nearest the range
        cands = [min((bpm_raw / 2, bpm_raw, bpm_raw * 2), key=lambda c: abs(np.log(c / np.sqrt(lo * hi))))]
    if len(cands) == 1 or rate <= 0:
        return float(min(cands, key=lambda c: abs(np.log(c / np.sqrt(lo * hi)))))
    cost = [abs(np.log(rate * 60.0 / c) - np.log(onsets_per_beat)) for c in cands]
    return float(cands[int(np.argmin(cost))])


def tempo(y, sr: int, method: str = "degara", prior: tuple[float, float] = PRIOR) -> dict:
    """{bpm, bpm_raw, onset_rate, confidence}: octave-resolved BPM, tracker BPM, onsets/s."""
    y = as_mono(y)
    bpm_raw, conf = raw_bpm(y, sr, method=method)
    rate = onset_rate(y, sr)
    return {"bpm": resolve_octave(bpm_raw, rate, prior), "bpm_raw": bpm_raw, "onset_rate": rate,
            "confidence": conf}
