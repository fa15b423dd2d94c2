"""Codes-stage benchmark: how fast the organism's codec encodes corpus clips, and how much memory that takes.

    python bench/codes.py [--corpus data/corpus] [--split valid] [--seconds 6.4] [--compare runs/organism]

Runs `musiclens.organism.codes.precompute` (the `organism train --stage codes`
work) with the shipped organism's codec on one split, in a temporary run
directory, and writes bench/results/codes.json: clips, encode seconds, clips/s
and the process's peak RSS (which, with streaming, is the model plus one chunk
of clips rather than the corpus). With --compare RUN, also whether the codes equal
those RUN/codes holds for the same clips (e.g. encoded by an older version).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import peak_rss_mb, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    ap.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    ap.add_argument("--seconds", type=float, default=6.4, help="encode each clip's first S seconds (codes_seconds)")
    ap.add_argument("--compare", default="", help="a run directory whose codes/ holds these clips: are the codes equal?")
    a = ap.parse_args()

    from musiclens.models.organism import load_organism_hf
    from musiclens.organism.codes import load_codes, precompute

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        # the shipped organism's codec, saved as a run's codec stage
        model, _ = load_organism_hf()
        model.audio_encoder.save_pretrained(run / "codec" / "hf")
        del model
        t0 = time.time()
        s = precompute(Path(a.corpus), run, max_seconds=a.seconds, splits=(a.split,))
        wall = time.time() - t0
        same = None
        if a.compare:
            import torch

            (new, _, rows), (old, _, old_rows) = load_codes(run, text=False), load_codes(Path(a.compare), text=False)
            pos = {r["id"]: i for i, r in enumerate(old_rows)}
            idx = [pos.get(r["id"]) for r in rows]
            if None not in idx:
                f = new["codes"].shape[2]
                same = bool(torch.equal(new["codes"], old["codes"][idx][:, :, :f])
                            and torch.equal(new["lengths"], old["lengths"][idx]))
    figures = {"corpus": a.corpus, "split": a.split, "seconds_per_clip": a.seconds, "clips": s["clips"],
               "encode_seconds": s["encode_seconds"], "clips_per_s": round(s["clips"] / s["encode_seconds"], 2),
               "wall_seconds_with_captions": round(wall, 1),
               "peak_rss_mb": peak_rss_mb(),
               "codes_equal_to": {a.compare: same} if a.compare else None}
    path = write_result("codes", figures)
    print(figures)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
