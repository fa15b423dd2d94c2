"""A tiny synthetic corpus in the corpus format (clicks at known tempi on tones), made per session."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    (out / "audio").mkdir()
    rng = np.random.default_rng(0)
    sr = 16000
    rows = []
    for i in range(12):
        bpm = [70.0, 160.0][i % 2]
        f0 = [110.0, 440.0][(i // 2) % 2]
        t = np.arange(2 * sr) / sr
        env = np.exp(-(t % (60.0 / bpm)) * 12)
        y = 0.4 * env * np.sin(2 * np.pi * f0 * t) + 0.003 * rng.standard_normal(len(t))
        cid = f"{i:06d}"
        sf.write(out / "audio" / f"{cid}.wav", y.astype(np.float32), sr, subtype="PCM_16")
        rows.append({"id": cid, "path": f"audio/{cid}.wav", "split": ["train", "train", "valid"][i % 3],
                     "source": f"piece{i // 3}", "seconds": 2.0, "sample_rate": sr, "bpm": bpm,
                     "caption": f"a {'fast' if bpm > 100 else 'slow'} {'high' if f0 > 200 else 'low'} tone"})
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out
