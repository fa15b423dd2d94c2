"""What `musiclens organism pack`'s lossy formats cost: size per clip and the tagger's accuracy on the packed audio.

    python bench/pack.py [--corpus data/corpus] [--formats flac,opus:0.8,opus:0.85,opus:0.9]

Packs the first 6.4 s of every test-split clip in each format (into a
temporary folder, through `musiclens.organism.pack`), asks the shipped tagger
about each packed clip, and writes bench/results/pack.json: KiB per clip and
accuracy per head for each format. The lossless FLAC row is the reference a
lossy format must stay close to before a codec is trained on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from musiclens.bench_utils import write_result  # noqa: E402

HEADS = ("instrument", "drums", "brightness", "register", "dynamics", "mode")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    ap.add_argument("--formats", default="flac,opus:0.8,opus:0.85,opus:0.9",
                    help="comma-separated FORMAT[:COMPRESSION] (formats of `organism pack --format`)")
    a = ap.parse_args()

    import soundfile as sf

    from musiclens.measure.tagger import load_tagger
    from musiclens.organism.pack import PackConfig, pack

    tagger = load_tagger()
    figures = {"split": "test", "seconds": 6.4, "formats": {}}
    for spec in a.formats.split(","):
        fmt, _, level = spec.partition(":")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "pack"
            s = pack(PackConfig(corpus=a.corpus, out=str(out), splits="test", valid=0, max_mb=1e6, format=fmt,
                                compression=float(level or 0.8)), progress=False)
            rows = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
            clips, sr = [], None
            for r in rows:
                y, sr = sf.read(out / r["path"], dtype="float32")
                clips.append(y)
            pred = tagger.predict_batch(clips, sr)
        figures["formats"][spec] = {"clips": s["clips"], "kib_per_clip": s["kib_per_clip"],
                                    **{h: round(float(np.mean([p[h] == r[h] for p, r in zip(pred, rows)])), 4)
                                       for h in HEADS}}
        print(spec, figures["formats"][spec], flush=True)
    write_result("pack", figures, "python bench/pack.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
