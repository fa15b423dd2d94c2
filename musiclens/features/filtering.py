"""Filtering features as in the MusicGen SAE paper, and the per-SAE summary table.

Why: most SAE features are not worth a listener's time. Features that never
fire are dead; features that fire in a large share of tracks are too generic
to name; features that fire in almost no tracks cannot be characterised from
a handful of clips. The paper keeps 0.01 <= r <= 0.25 (r = share of tracks
in which the feature fires); the thresholds are options here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import require


@dataclass
class FilterRule:
    """Activation-rate thresholds; a feature is valid when min_rate <= r <= max_rate and r > 0."""

    min_rate: float = 0.01
    max_rate: float = 0.25

    def __post_init__(self) -> None:
        require(0.0 <= self.min_rate <= self.max_rate <= 1.0,
                f"need 0 <= min_rate <= max_rate <= 1, got {self.min_rate}, {self.max_rate}")


def classify(rate: np.ndarray, rule: FilterRule) -> np.ndarray:
    """Per-feature status: 'dead', 'too_common', 'too_rare' or 'valid' (dead takes precedence)."""
    rate = np.asarray(rate, dtype=np.float64)
    status = np.full(rate.shape, "valid", dtype=object)
    status[rate > rule.max_rate] = "too_common"
    status[(rate < rule.min_rate) & (rate > 0)] = "too_rare"
    status[rate <= 0] = "dead"
    return status


def summary_row(status: np.ndarray, **keys) -> dict:
    """One row of the summary table: counts per status (keys: layer, expansion, k, ...)."""
    row = dict(keys)
    row["features"] = int(status.shape[0])
    for s in ("dead", "too_common", "too_rare", "valid"):
        row[s] = int((status == s).sum())
    row["valid_share"] = row["valid"] / max(row["features"], 1)
    return row
