"""Generation time with vs without DiffMean steering, alone (bench/steering.py's timing(), more repetitions).

    python bench/steering_overhead.py [--model organism] [--concept tempo] [--layer 2] [--reps 7]

The full steering bench times plain vs steered generation once, at its end,
with a few repetitions; on a shared 2-core machine one such figure moves by
about ±12 %. This runs only that measurement (One-to-All: a hook on every
layer; 25 clips x 5 s, interleaved repetitions, min over them) so it can be
repeated cheaply. Writes bench/results/steering_overhead.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from musiclens.bench_utils import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="organism")
    ap.add_argument("--concept", default="tempo", help="whose Δ is injected (the value does not change the work)")
    ap.add_argument("--layer", type=int, default=2, help="One-to-All source layer of Δ")
    ap.add_argument("--n-diffmean", type=int, default=40)
    ap.add_argument("--clips", type=int, default=25)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()

    from steering import load, timing

    from musiclens.steer.diffmean import compute_diffmean
    from musiclens.steer.prompts import CONCEPTS, concept_prompts, neutral_prompts

    if a.concept not in CONCEPTS:
        sys.exit(f"error: --concept is one of {', '.join(CONCEPTS)}, not {a.concept!r}")
    model, _ = load(a.model)
    pos, neg, _ = CONCEPTS[a.concept]
    vecs = compute_diffmean(model, concept_prompts(a.concept, pos, a.n_diffmean),
                            concept_prompts(a.concept, neg, a.n_diffmean), batch_size=a.clips, seed=0)
    if a.layer not in vecs.layers:
        sys.exit(f"error: --layer must be one of {vecs.layers[0]}..{vecs.layers[-1]}")
    res = timing(model, neutral_prompts(a.clips), a.seconds, a.clips, vecs, a.layer, a.reps)
    write_result("steering_overhead", {"model": a.model, "concept": a.concept, "layer": a.layer, **res})
    print(f"overhead: CPU {100 * res['overhead_cpu']:+.1f} %, wall {100 * res['overhead_wall']:+.1f} %")


if __name__ == "__main__":
    main()
