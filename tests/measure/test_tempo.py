"""Tempo: raw tracker BPM on click tracks and the octave resolution rule."""

from __future__ import annotations

import numpy as np
import pytest

from musiclens.measure import tempo
from musiclens.measure.tempo import resolve_octave

SR = 16000


def click_track(bpm, seconds=10.0, subdivide=1):
    """Accented beats (and optional softer subdivisions) as short noise bursts."""
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    rng = np.random.default_rng(0)
    burst = (rng.standard_normal(240) * np.hanning(240)).astype(np.float32)
    step = 60.0 / bpm / subdivide
    for k, t in enumerate(np.arange(0.1, seconds - 0.05, step)):
        i = int(t * SR)
        y[i:i + 240] += burst * (1.0 if k % subdivide == 0 else 0.5)
    return y


@pytest.mark.parametrize("bpm", [90.0, 120.0])
def test_essentia_tempo_on_click_tracks(bpm):
    out = tempo(click_track(bpm), SR)
    assert set(out) == {"bpm", "bpm_raw", "onset_rate", "confidence"}
    assert out["bpm_raw"] == pytest.approx(bpm, rel=0.04)
    assert out["bpm"] == pytest.approx(bpm, rel=0.04)
    assert out["onset_rate"] == pytest.approx(bpm / 60, rel=0.15)


def test_librosa_fallback():
    out = tempo(click_track(120.0), SR, method="librosa")
    assert min(abs(out["bpm_raw"] / 120.0 - f) for f in (0.5, 1.0, 2.0)) < 0.05


def test_octave_resolution_uses_onset_density_and_range():
    # a slow tune (65 BPM, ~1 note per beat) that the tracker doubled
    assert resolve_octave(130.0, rate=65 / 60, onsets_per_beat=1.0) == pytest.approx(65.0)
    # a fast tune (170 BPM, ~1 note per beat) that the tracker halved
    assert resolve_octave(85.0, rate=170 / 60, onsets_per_beat=1.0) == pytest.approx(170.0)
    # a correct reading stays
    assert resolve_octave(120.0, rate=2.0, onsets_per_beat=1.0) == pytest.approx(120.0)
    # only levels inside the prior range are candidates
    assert resolve_octave(200.0, rate=10.0, onsets_per_beat=1.0) == pytest.approx(100.0)
    assert resolve_octave(40.0, rate=0.1, onsets_per_beat=1.0) == pytest.approx(80.0)
    assert np.isnan(resolve_octave(0.0, rate=1.0))


def test_beat_salience_breaks_density_ties():
    rate = 1.456 * np.sqrt(65 * 130) / 60          # equally typical density at 65 and 130 BPM
    assert resolve_octave(130.0, rate, {65.0: 0.5, 130.0: 0.1}) == pytest.approx(65.0)
    assert resolve_octave(130.0, rate, {65.0: 0.1, 130.0: 0.5}) == pytest.approx(130.0)
    # a click track's own period recurs; an unrelated period does not
    from musiclens.measure.tempo import beat_salience

    s120, s90 = beat_salience(click_track(120.0), SR, [120.0, 90.0])
    assert s120 > 0.5 and s120 > s90 + 0.3


def test_silence_and_bad_method():
    from musiclens.errors import MusiclensError

    out = tempo(np.zeros(2 * SR, np.float32), SR)
    assert np.isnan(out["bpm"]) and out["onset_rate"] == 0.0
    with pytest.raises(MusiclensError, match="unknown tempo method"):
        tempo(click_track(120.0, seconds=2.0), SR, method="beat-this")


def test_pulse_clarity_separates_a_steady_beat_from_scattered_onsets():
    from musiclens.measure.tempo import pulse_clarity

    steady = pulse_clarity(click_track(120.0), SR)
    assert steady["clarity"] > 0.5 and steady["bpm"] == pytest.approx(120.0, abs=2)
    # the same number of bursts at random times: onsets, but no period to read
    rng = np.random.default_rng(1)
    burst = click_track(120.0)[int(0.1 * SR): int(0.1 * SR) + 240]
    y = np.zeros(10 * SR, np.float32)
    for t in rng.uniform(0.05, 9.9, size=20):
        y[int(t * SR): int(t * SR) + 240] += burst
    scattered = pulse_clarity(y, SR)
    assert scattered["clarity"] < 0.15       # 0.05 here; 0.03-0.07 over other draws
