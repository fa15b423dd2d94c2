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


def test_clock_by_steps_and_by_minutes(monkeypatch):
    import musiclens.organism.schedule as S

    now = [1000.0]
    monkeypatch.setattr(S.time, "time", lambda: now[0])
    steps = S.Clock(steps=10)
    assert not steps.timed and steps.total() == 10 and not steps.done(9) and steps.done(10)
    assert steps.lr(1.0, 10) == pytest.approx(0.1)

    clock = S.Clock(steps=10, budget_minutes=2.0, trained_seconds=30.0)  # a resumed run: 30 s trained before
    clock.start()
    assert clock.timed and clock.total() is None
    assert not clock.done(10_000)                         # the step count no longer decides
    assert clock.lr(1.0, 5, warmup=3) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + S.math.cos(S.math.pi * 0.25)))
    assert clock.lr(1.0, 0, warmup=3) == pytest.approx(1 / 3)  # warm-up still counts steps
    now[0] += 30.0                                        # halfway through the 120 s
    assert clock.seconds() == pytest.approx(60.0) and clock.lr(1.0, 5) == pytest.approx(0.55)
    now[0] += 60.0
    assert clock.done(0) and clock.lr(1.0, 5) == pytest.approx(0.1)
    now[0] += 600.0
    assert clock.lr(1.0, 5) == pytest.approx(0.1)        # past the budget: the floor
