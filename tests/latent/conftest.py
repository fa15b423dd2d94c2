"""Fixtures for the latent-space tests: a small synthetic corpus generated in the test.

Clips are 1 s of harmonic tones with a known pitch (one of four notes), level
(quiet / loud) and brightness (1 vs 6 harmonics), so every attribute has a
ground truth; the corpus `metadata.jsonl` gives each clip a split, as a
rendered musiclens corpus does.
"""

from __future__ import annotations

import json

import pytest
import soundfile as sf
from latent_synth import NOTES, SR, tone


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent_corpus")
    (root / "audio").mkdir()
    rows = []
    i = 0
    for rep in range(2):
        for n, midi in enumerate(NOTES):
            amp, harm = (0.6, 6) if (n + rep) % 2 else (0.08, 1)
            y = tone(midi, amp, harm)
            p = f"audio/{i:03d}.wav"
            sf.write(root / p, y, SR)
            rows.append({"id": f"{i:03d}", "path": p, "split": "test" if rep == 1 and n < 2 else "train",
                         "caption": f"{'loud bright' if amp > 0.3 else 'soft dark'} note {midi}"})
            i += 1
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
