"""The tempo figure read two ways: against the source clip's BPM, and against the BPM the caption asks for.

    python bench/tempo_request.py --result organism --corpus data/corpus12k --split test

Why: the issue's figure (Spearman of requested against estimated BPM) pairs each generation with
its source clip's BPM. Most captions only say "slow", "moderate" or "fast" (15 % add "at N BPM"),
so a model can know that BPM only to within a third of the range. `evaluate.caption_bpm` reads
instead the BPM the caption itself names or implies. If the generations scored far higher that
way, the miss would come from the definition; if not, from the generations. The script reads the per-clip records of a
`bench/organism.py` result (no generation), and from the corpus metadata the ceiling of each
reading: a perfect model with a perfect tempo estimator.
Writes bench/results/<name>.json (default tempo_request).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import RESULTS, write_result  # noqa: E402
from musiclens.errors import MusiclensError  # noqa: E402


def _spearman(a, b) -> dict:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    rho, p = spearmanr(a[ok], b[ok])
    return {"rho": float(rho), "p": float(p), "n": int(ok.sum())}


def figures(per_clip: list[dict], rows: list[dict]) -> dict:
    """Both readings on the generations, and the ceiling of each on the corpus split's own captions."""
    from musiclens.organism.evaluate import NAMED_BPM, caption_bpm, named_factors

    gen = [r for r in per_clip if "tempo" in r["named"]]
    if len(gen) < 3:
        raise MusiclensError("the result holds fewer than 3 generations whose caption names a tempo")
    est = [r.get("bpm", np.nan) for r in gen]
    out = {"generations": {
        "against_source_clip_bpm": _spearman([r["bpm_requested"] for r in gen], est),
        "against_caption_bpm": _spearman([caption_bpm(r["caption"], r["named"]["tempo"]) for r in gen], est),
        "names_a_bpm": float(np.mean([bool(NAMED_BPM.search(r["caption"])) for r in gen]))}}
    named = [(r, nf["tempo"]) for r in rows if "tempo" in (nf := named_factors(r))]
    true = np.array([r["bpm"] for r, _ in named])
    asked = np.array([caption_bpm(r["caption"], w) for r, w in named])
    # a perfect word-follower: the named BPM where the caption gives one, else a BPM drawn at random
    # within the word's third (100 draws, seed 0), measured by a perfect estimator
    from musiclens.corpus.factors import BPM_RANGE

    third = (BPM_RANGE[1] - BPM_RANGE[0]) / 3
    exact = np.array([bool(NAMED_BPM.search(r["caption"])) for r, _ in named])
    rng = np.random.default_rng(0)
    draws = [np.where(exact, asked, asked + rng.uniform(-third / 2, third / 2, len(asked))) for _ in range(100)]
    out["ceiling"] = {
        "n": len(named),
        "exact_caption_bpm": {"against_source_clip_bpm": _spearman(asked, true)["rho"]},
        "random_within_the_named_third": {
            "against_source_clip_bpm": float(np.mean([_spearman(true, d)["rho"] for d in draws])),
            "against_caption_bpm": float(np.mean([_spearman(asked, d)["rho"] for d in draws]))},
        "note": "perfect tempo estimator; split captions that name a tempo (bench/corpus.py gives the "
                "source-clip ceiling through the real estimator and codec)"}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--result", default="organism", help="a bench/organism.py result: a name in bench/results "
                                                         "or a .json path (default organism, the shipped figures)")
    ap.add_argument("--corpus", default="data/corpus12k", help="the corpus its captions came from")
    ap.add_argument("--split", default="test", help="the split its captions came from")
    ap.add_argument("--name", default="tempo_request", help="output name in bench/results")
    args = ap.parse_args()
    from musiclens.corpus.render import load_metadata

    path = Path(args.result) if args.result.endswith(".json") else RESULTS / f"{args.result}.json"
    try:
        if not path.exists():
            raise MusiclensError(f"no result {path}")
        per_clip = json.loads(path.read_text())["figures"].get("per_clip")
        if not per_clip:
            raise MusiclensError(f"{path} holds no per-clip records: run bench/organism.py --what generation")
        rows = [r for r in load_metadata(args.corpus) if r["split"] == args.split]
        if not rows:
            raise MusiclensError(f"no {args.split!r} clips in {args.corpus}")
        figs = {"result": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                "corpus": args.corpus, "split": args.split, **figures(per_clip, rows)}
    except MusiclensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = write_result(args.name, figs)
    print(json.dumps(figs, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
