"""Clip-by-clip comparison of two generation results made from the same captions and seeds.

    python bench/paired.py organism organism_decw32 [--name paired_decw32]

`bench/organism.py` runs of the same LM with the same captions and seeds
sample the same codes, so when only the decoder differs (the decoder stage,
a widened codec) a per-clip sign test says whether the tagger hears the
requested instrument and drum pattern more often, beyond what flipping a
few clips would do. Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import RESULTS, write_result  # noqa: E402
from musiclens.organism.evaluate import paired_tags  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="first result name in bench/results (e.g. organism)")
    ap.add_argument("b", help="second result name (e.g. organism_decw32)")
    ap.add_argument("--name", default=None, help="output name (default: paired_<a>_<b>)")
    args = ap.parse_args()
    runs = {}
    for key in (args.a, args.b):
        path = RESULTS / f"{key}.json"
        if not path.exists():
            print(f"error: no result {path}", file=sys.stderr)
            return 2
        runs[key] = json.loads(path.read_text())["figures"]["per_clip"]
    a, b = runs[args.a], runs[args.b]
    figures = {"a": args.a, "b": args.b, "n_clips": len(a),
               **{f: paired_tags(a, b, f) for f in ("instrument", "drums")},
               "most_tagged_instruments": {k: Counter(r["tag"]["instrument"] for r in v).most_common(4)
                                          for k, v in runs.items()}}
    out = write_result(args.name or f"paired_{args.a}_{args.b}", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "most_tagged_instruments"}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
