"""The learning-rate schedule every organism stage uses: linear warm-up, then cosine down to 10 % of the peak.

Why 10 % and not 0: the stages are often stopped by `--minutes` and resumed
or extended; a floor keeps a resumed run learning instead of restarting near
zero, and the last steps still anneal.
"""

from __future__ import annotations

import math


def warmup_cosine(peak: float, step: int, steps: int, warmup: int = 0) -> float:
    """LR at `step` of `steps`: peak * (step + 1) / warmup during warm-up, then cosine from peak to 0.1 * peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))
