"""Does the organism's LM know where the beat is? A linear probe on its last hidden state.

    python bench/beat_phase_probe.py --run RUN [--model DIR ...] [--rev COMMIT ...] [--n-train 480] [--n-valid 128]
                                     [--crop 300] [--name beat_phase_probe]

RUN is a run folder with precomputed codes of the rendered corpus (`musiclens
organism train --stage codes`), whose rows name the score and start note each
clip was rendered from: the beat grid of every frame is then known
(organism/beatphase.py). For each --model (default `shipped`), a ridge probe is
fitted from the LM's last hidden state (the state its codebook heads read) to
the cos/sin of the beat phase, on the openings of the first --n-train train
clips, and scored on the first --n-valid valid clips as the median angle error
in degrees: about 90 for a state with no phase in it, 0 for a perfect one. With
the splice test (bench/beat_splice.py) and the generations' pulse clarity
(bench/tempo_pulse.py) it separates "the LM does not know the phase" from "it
knows it and does not place its hits on it".

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
    ap.add_argument("--n-train", type=int, default=480, help="train clips the probe is fitted on (a seeded draw)")
    ap.add_argument("--n-valid", type=int, default=128, help="first N valid clips it is scored on")
    ap.add_argument("--crop", type=int, default=300, help="opening frames of each clip (50 frames = 1 s)")
    ap.add_argument("--ridge", type=float, default=1.0, help="ridge penalty of the probe")
    ap.add_argument("--name", default="beat_phase_probe")
    a = ap.parse_args(argv)

    import numpy as np

    from musiclens.errors import MusiclensError
    from musiclens.models import organism as O
    from musiclens.organism.beatphase import probe_phase
    from musiclens.organism.lm import CodeData

    try:
        if a.n_train < 1 or a.n_valid < 1 or a.crop < 8 or not a.ridge > 0:
            raise MusiclensError("--n-train and --n-valid must be >= 1, --crop >= 8 and --ridge > 0")
        data = CodeData(Path(a.run))
        train, valid = data.indices("train"), data.indices("valid")[: a.n_valid]
        if len(train) == 0 or len(valid) == 0:
            raise MusiclensError(f"{a.run} needs train and valid codes (organism train --stage codes)")
        train = np.sort(np.random.default_rng(0).choice(train, min(a.n_train, len(train)), replace=False))
        res = {}
        with organism_models(a.model, a.rev) as models:
            for name, folder in models:
                model, _ = O.load_organism_hf("cpu", folder)
                t = time.time()
                r = probe_phase(model, data, train, valid, a.crop, a.ridge)
                r["seconds"] = round(time.time() - t, 1)
                res[name] = r
                print(name, {k: v for k, v in r.items() if "error" in k})
    except MusiclensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_result(a.name, {"run": a.run, "n_train": a.n_train, "n_valid": a.n_valid, "crop": a.crop,
                          "ridge": a.ridge, "models": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
