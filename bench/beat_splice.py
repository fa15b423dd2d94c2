"""Has the organism's LM learnt the beat? The teacher-forced splice test, on held-out codes.

    python bench/beat_splice.py --run RUN [--model DIR ...] [--rev COMMIT ...] [--split valid] [--n 400]
                                [--t0 100] [--window 50] [--name beat_splice]

RUN is a run folder with precomputed codes (`musiclens organism train --stage
codes`); each --model (default: `shipped`, the shipped organism) is measured on the same
clips; each --rev is the organism shipped at that commit, read from git
history (its codec's encoder must make the same codes: true since the
14,000-step codec of commit 4c176ba). Per model it reports the LM's mean token loss on the frames after a
cut that keeps the beat's phase, and how much more an off-grid continuation
(a sixteenth or an eighth note off) costs (organism/rhythm.py). A positive,
significant gap means the LM models metre; 0 means it models only local sound,
and its generations cannot keep a beat whatever the caption says.

Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import add_organism_model_args, organism_models, write_result  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run folder with precomputed codes (RUN/codes)")
    add_organism_model_args(ap)
    ap.add_argument("--split", default="valid", choices=["train", "valid", "test"],
                    help="split of RUN's codes (the codes stage encodes train and valid)")
    ap.add_argument("--n", type=int, default=400, help="first N clips of the split (those with drums are used)")
    ap.add_argument("--t0", type=int, default=100, help="frame of the cut (50 frames = 1 s)")
    ap.add_argument("--window", type=int, default=50, help="frames after the cut the loss is read on")
    ap.add_argument("--all-clips", action="store_true", help="also clips without drums")
    ap.add_argument("--name", default="beat_splice")
    a = ap.parse_args(argv)

    from musiclens.errors import MusiclensError
    from musiclens.models import organism as O
    from musiclens.organism.lm import CodeData
    from musiclens.organism.rhythm import beat_splice_gap

    try:
        data = CodeData(Path(a.run))
        idx = data.indices(a.split)[: a.n]
        if len(idx) == 0:
            raise MusiclensError(f"no {a.split} clips among the codes in {a.run}")
        res = {}
        with organism_models(a.model, a.rev) as models:
            for name, folder in models:
                model, _ = O.load_organism_hf("cpu", folder)
                t = time.time()
                r = beat_splice_gap(model, data, idx, a.t0, a.window, drums_only=not a.all_clips)
                r["seconds"] = round(time.time() - t, 1)
                res[name] = r
                print(name, {k: (round(v["gap"], 4), v["p_sign"]) for k, v in r.items() if isinstance(v, dict)
                             and "gap" in v})
    except MusiclensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_result(a.name, {"run": a.run, "split": a.split, "n_first": a.n, "drums_only": not a.all_clips,
                          "models": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
