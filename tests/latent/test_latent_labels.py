"""Frame labels: alignment to latent frames, pitch classes, loudness and timbre bins."""

from __future__ import annotations

import numpy as np
import pytest

from musiclens.errors import MusiclensError
from musiclens.latent.labels import N_PITCH, LabelBins, frame_values, pitch_class_names, pitch_class_of

from latent_synth import SR, tone


@pytest.fixture(scope="module")
def values():
    # 0.5 s silence | 1 s loud bright A4 | 1 s quiet pure C4  (hop 320 -> frames 0-24 | 25-74 | 75-124)
    y = np.concatenate([np.zeros(SR // 2, np.float32), tone(69, 0.5, 6), tone(60, 0.05, 1)])
    return frame_values(y, SR, 320, len(y) // 320)


def test_pitch_classes_are_documented():
    names = pitch_class_names()
    assert len(names) == N_PITCH == 66
    assert names[0] == "unvoiced" and names[1] == "C2" and names[-1] == "E7"
    assert pitch_class_of("C5") == names.index("C5") == 72 - 36 + 1
    assert pitch_class_of("60") == names.index("C4")
    with pytest.raises(MusiclensError):
        pitch_class_of("H2")


def test_labels_align_to_frames(values):
    bins = LabelBins.fit(values)
    c = bins.classes(values)
    names = pitch_class_names()
    assert len(c["pitch"]) == 125
    # the tone starts at sample 8000 = frame 25 exactly: frames before are unvoiced, after are A4
    assert (c["pitch"][:24] == 0).all()
    assert [names[k] for k in c["pitch"][25:74]] == ["A4"] * 49
    assert [names[k] for k in c["pitch"][76:124]] == ["C4"] * 48
    # loudness: silence is the lowest bin, the loud tone louder than the quiet one
    assert (c["loudness"][:24] == 0).all()
    assert c["loudness"][30:70].min() > c["loudness"][80:120].max()
    # timbre: six harmonics of A4 are brighter than a pure C4 (centroid near 262 Hz)
    assert c["timbre"][30:70].min() > c["timbre"][80:120].max()
    assert abs(np.median(values["centroid_hz"][80:120]) - 261.6) < 15


def test_bins_roundtrip_and_ranges(values):
    bins = LabelBins.fit(values)
    assert bins.n_classes("loudness") == bins.n_classes("timbre") == 20
    again = LabelBins.from_dict(bins.to_dict())
    for a, k in bins.classes(values).items():
        np.testing.assert_array_equal(again.classes(values)[a], k)
        assert k.min() >= 0 and k.max() < bins.n_classes(a)
