"""Clip-by-clip comparison of two generation results made from the same captions and seeds.

    python bench/paired.py organism organism_decw32 [--name paired_decw32]
    git show e955484:bench/results/organism.json > /tmp/organism_session9.json
    python bench/paired.py /tmp/organism_session9.json organism --name paired_s10_test
    python bench/paired.py --combine paired_valid_s13c_seed2 paired_valid_s13c_seed3 --name paired_valid_s13c

Both `bench/organism.py` runs must use the same captions and seeds. A per-clip
sign test then says whether the tagger hears the requested instrument and
drum pattern more often in one run, beyond what flipping a few clips would
do; for tempo, among the clips whose estimated BPM moved, which run's estimate
is closer to the request. With the same LM the codes are identical too, so only the decoder differs
(the decoder stage, a widened codec). A run is a name in bench/results or a
path to a result file (e.g. an older version taken with `git show`).
Writes bench/results/<name>.json. `--combine` pools earlier paired results
(disjoint draws, e.g. two seeds) into one sign test per factor.
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
from musiclens.errors import MusiclensError  # noqa: E402
from musiclens.organism.evaluate import paired_tags, paired_tempo  # noqa: E402


def combine(names: list[str], name: str | None) -> int:
    """One sign test per factor over several paired results: their clip counts added up."""
    from scipy.stats import binomtest

    parts = []
    for key in names:
        path = Path(key) if key.endswith(".json") else RESULTS / f"{key}.json"
        if not path.exists():
            print(f"error: no result {path}", file=sys.stderr)
            return 2
        parts.append(json.loads(path.read_text())["figures"])
    figures: dict = {"combined": [Path(k).stem for k in names]}
    for f in ("instrument", "drums"):
        c = {k: sum(p[f][k] for p in parts) for k in ("n", "both_right", "a_only", "b_only", "neither")}
        flips = c["a_only"] + c["b_only"]
        figures[f] = {**c, "accuracy_a": (c["both_right"] + c["a_only"]) / c["n"],
                      "accuracy_b": (c["both_right"] + c["b_only"]) / c["n"],
                      "p_sign_test": binomtest(c["b_only"], flips).pvalue if flips else 1.0}
    if all("tempo" in p for p in parts):
        c = {k: sum(p["tempo"][k] for p in parts) for k in ("n", "moved", "a_closer", "b_closer")}
        won = c["a_closer"] + c["b_closer"]
        figures["tempo"] = {**c, "p_sign_test": binomtest(c["b_closer"], won).pvalue if won else 1.0}
    out = write_result(name or "paired_combined", figures)
    print(json.dumps(figures, indent=1))
    print(f"wrote {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", nargs="?", help="first result: a name in bench/results (e.g. organism) or a .json path")
    ap.add_argument("b", nargs="?", help="second result (e.g. organism_decw32)")
    ap.add_argument("--combine", nargs="+", metavar="PAIRED", help="pool these paired results instead")
    ap.add_argument("--name", default=None, help="output name (default: paired_<a>_<b>)")
    args = ap.parse_args()
    if args.combine:
        return combine(args.combine, args.name)
    if not (args.a and args.b):
        print("error: give two results to compare, or --combine PAIRED...", file=sys.stderr)
        return 2
    runs = {}  # label (the file's stem) -> per-clip records
    for key in (args.a, args.b):
        path = Path(key) if key.endswith(".json") else RESULTS / f"{key}.json"
        if not path.exists():
            print(f"error: no result {path}", file=sys.stderr)
            return 2
        runs[path.stem] = json.loads(path.read_text())["figures"]["per_clip"]
    if len(runs) < 2:
        print("error: give two different results", file=sys.stderr)
        return 2
    (la, a), (lb, b) = runs.items()
    try:
        tags = {f: paired_tags(a, b, f) for f in ("instrument", "drums")}
        tags["tempo"] = paired_tempo(a, b)
    except MusiclensError as e:  # e.g. the runs used other captions
        print(f"error: {e}", file=sys.stderr)
        return 2
    figures = {"a": la, "b": lb, "n_clips": len(a), **tags,
               "most_tagged_instruments": {k: Counter(r["tag"]["instrument"] for r in v).most_common(4)
                                          for k, v in runs.items()}}
    out = write_result(args.name or f"paired_{la}_{lb}", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "most_tagged_instruments"}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
