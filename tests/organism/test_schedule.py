"""The shared warm-up + cosine learning-rate schedule of the organism's stages."""

from __future__ import annotations

import pytest

from musiclens.organism.schedule import warmup_cosine


def test_warmup_then_cosine_to_a_tenth():
    assert warmup_cosine(1.0, 0, 1000, warmup=100) == pytest.approx(0.01)
    assert warmup_cosine(1.0, 99, 1000, warmup=100) == pytest.approx(1.0)
    assert warmup_cosine(1.0, 100, 1000, warmup=100) == pytest.approx(1.0)   # cosine starts at the peak
    assert warmup_cosine(1.0, 550, 1000, warmup=100) == pytest.approx(0.55)  # halfway: midpoint of 1 and 0.1
    assert warmup_cosine(1.0, 1000, 1000, warmup=100) == pytest.approx(0.1)
    assert warmup_cosine(1.0, 5000, 1000, warmup=100) == pytest.approx(0.1)  # past the end: the floor
    lrs = [warmup_cosine(2e-4, s, 300) for s in range(301)]                 # no warm-up: decreasing from the peak
    assert lrs[0] == pytest.approx(2e-4) and all(a >= b for a, b in zip(lrs, lrs[1:]))
