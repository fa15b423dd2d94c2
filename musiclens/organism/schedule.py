"""The learning-rate schedule every organism stage uses: linear warm-up, then cosine down to 10 % of the peak.

Why 10 % and not 0: the stages are often stopped by `--minutes` and resumed
or extended; a floor keeps a resumed run learning instead of restarting near
zero, and the last steps still anneal.

Why a `Clock`: a schedule spanning a step count needs the machine's speed in
advance. On a lent GPU, known only for the minutes of one call, nobody knows
how many steps fit, and a schedule cut short never anneals. With a time budget
the cosine runs over training *time* instead, so the run anneals exactly when
its minutes are spent, however fast the machine is.
"""

from __future__ import annotations

import math
import time


def warmup_cosine(peak: float, step: int, steps: int, warmup: int = 0, fraction: float | None = None) -> float:
    """LR at `step` of `steps`: peak * (step + 1) / warmup during warm-up, then cosine from peak to 0.1 * peak.

    `fraction` (0..1), when given, is the position in the cosine instead of the step count (time budgets).
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    p = fraction if fraction is not None else (step - warmup) / max(1, steps - warmup)
    p = min(1.0, max(0.0, p))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


class Clock:
    """Where a stage stands in its schedule: by optimiser steps, or by training minutes when `budget_minutes` > 0.

    `trained_seconds` is the training time of earlier sittings (saved in the checkpoint as
    `trained_seconds`), so a resumed time-budgeted run continues its cosine where it stopped.
    """

    def __init__(self, steps: int, budget_minutes: float = 0.0, trained_seconds: float = 0.0):
        self.steps, self.budget = steps, budget_minutes * 60.0
        self.before = float(trained_seconds)
        self.t0 = time.time()

    def start(self) -> None:
        """Start counting this sitting's time now (after data loading, which is not training)."""
        self.t0 = time.time()

    @property
    def timed(self) -> bool:
        return self.budget > 0

    def seconds(self) -> float:
        """Training seconds so far, earlier sittings included."""
        return self.before + time.time() - self.t0

    def done(self, step: int) -> bool:
        return self.seconds() >= self.budget if self.timed else step >= self.steps

    def lr(self, peak: float, step: int, warmup: int = 0) -> float:
        frac = self.seconds() / self.budget if self.timed else None
        return warmup_cosine(peak, step, self.steps, warmup, fraction=frac)

    def total(self) -> int | None:
        """Progress-bar total: the step count, or None when time decides."""
        return None if self.timed else self.steps
