"""The factors a corpus clip is built from, and how they are sampled.

Every factor is drawn independently per clip from a generator seeded with
(seed, clip index), so clip i is the same whatever the corpus size (a larger
corpus extends a smaller one) and resuming never changes a clip.
Mode is drawn first (uniformly) and a piece of that mode picked second, so
major and minor are balanced even though folk tunes are mostly major.
"""

from __future__ import annotations

import hashlib

import numpy as np

# GM programs (0-based) spanning families and brightness.
INSTRUMENTS: dict[str, int] = {
    "piano": 0,
    "marimba": 12,
    "organ": 19,            # church organ
    "nylon guitar": 24,
    "acoustic bass": 32,
    "violin": 40,
    "string ensemble": 48,
    "trumpet": 56,
    "flute": 73,
    "square lead": 80,
}
REGISTERS = ["low", "mid", "high"]
# Target median MIDI pitch per register; the octave shift brings a piece's median
# within +-6 semitones of it, so the three registers never overlap.
REGISTER_TARGET = {"low": 45, "mid": 62, "high": 79}
DYNAMICS = ["soft", "medium", "loud"]
VELOCITY = {"soft": (32, 46), "medium": (66, 80), "loud": (104, 118)}
DRUMS = ["none", "rock", "light"]
MODES = ["major", "minor"]
BRIGHTNESS = ["dark", "neutral", "bright"]
BPM_RANGE = (60.0, 180.0)
SPLITS = {"train": 0.8, "valid": 0.1, "test": 0.1}

# Categorical heads (the tagger's targets) and their label order.
HEADS: dict[str, list[str]] = {
    "instrument": list(INSTRUMENTS),
    "drums": DRUMS,
    "brightness": BRIGHTNESS,
    "register": REGISTERS,
    "mode": MODES,
    "dynamics": DYNAMICS,
}


def tempo_word(bpm: float) -> str:
    """slow / moderate / fast: thirds of the BPM range."""
    lo, hi = BPM_RANGE
    third = (hi - lo) / 3
    return "slow" if bpm < lo + third else ("moderate" if bpm < lo + 2 * third else "fast")


def _hash01(text: str) -> float:
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / float(16 ** 12)


def assign_splits(pieces: list) -> dict[str, str]:
    """source -> split, ~80/10/10, within each mode so every split has both modes.

    Pieces are ordered by a hash of their source id (stable, seed-independent),
    so whole pieces land in one split: no melody is shared between train and test.
    """
    out: dict[str, str] = {}
    for mode in MODES:
        group = sorted((p.source for p in pieces if p.mode == mode), key=_hash01)
        n = len(group)
        n_valid = max(1, round(n * SPLITS["valid"])) if n >= 3 else 0
        n_test = max(1, round(n * SPLITS["test"])) if n >= 3 else 0
        for i, src in enumerate(group):
            out[src] = "test" if i < n_test else ("valid" if i < n_test + n_valid else "train")
    return out


def sample_clip(index: int, seed: int, pieces: list, seconds: float) -> dict:
    """Draw all factors of clip `index` (a plain dict: the clip's plan)."""
    rng = np.random.default_rng([seed, index])
    mode = MODES[rng.integers(len(MODES))]
    group = [p for p in pieces if p.mode == mode] or pieces
    piece = group[rng.integers(len(group))]
    instrument = list(INSTRUMENTS)[rng.integers(len(INSTRUMENTS))]
    bpm = round(float(rng.uniform(*BPM_RANGE)), 2)
    register = REGISTERS[rng.integers(3)]
    dynamics = DYNAMICS[rng.integers(3)]
    lo, hi = VELOCITY[dynamics]
    velocity = int(rng.integers(lo, hi + 1))
    drums = DRUMS[rng.integers(len(DRUMS))]
    brightness = BRIGHTNESS[rng.integers(3)]
    octave_shift = int(round((REGISTER_TARGET[register] - piece.median_midi) / 12.0))
    # start somewhere in the first 60 % of the tune, on a note
    n_start = max(1, int(len(piece.notes) * 0.6))
    start_note = int(rng.integers(n_start))
    caption_seed = int(rng.integers(2 ** 31))
    return {
        "index": index, "source": piece.source, "collection": piece.collection, "key": piece.key,
        "mode": piece.mode, "instrument": instrument, "program": INSTRUMENTS[instrument], "bpm": bpm,
        "register": register, "octave_shift": octave_shift, "dynamics": dynamics, "velocity": velocity,
        "drums": drums, "brightness": brightness, "start_note": start_note, "seconds": float(seconds),
        "caption_seed": caption_seed,
    }
