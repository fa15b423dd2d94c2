"""Minimal-pair prompt adherence of the organism: one caption word changed, the rest (and the noise) kept.

    python bench/minimal_pairs.py [--concepts brightness,dynamics,register,tempo] [--n 100] [--seconds 6]
                                  [--seed 2] [--model DIR] [--corpus data/corpus] [--name minimal_pairs]

For each concept, up to --n test-split captions that name it are rewritten to
every level of the concept (musiclens/organism/minimal_pairs.py) and
generated with shared seeds; the concept's measure is compared caption by
caption (one-sided Wilcoxon signed-rank per neighbouring level pair, share
in the asked order, median change) and the tagger's reading of the level is
added where it has a head. Writes bench/results/<name>.json, one entry per
concept (per-caption values included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    ap.add_argument("--model", default="", help="organism HF folder (default: the shipped one)")
    ap.add_argument("--concepts", default="brightness,dynamics,register,tempo")
    ap.add_argument("--n", type=int, default=100, help="captions per concept (each generated once per level)")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--split", default="test", choices=["test", "valid"])
    ap.add_argument("--name", default="minimal_pairs")
    a = ap.parse_args()

    import musiclens.models.organism as O
    from musiclens.organism.data import read_metadata
    from musiclens.organism.evaluate import load_tagger
    from musiclens.organism.minimal_pairs import minimal_pair_eval

    folder = a.model or str(O.organism_path())
    # minimal_pairs.json describes the shipped model (the model card reads it): other models name their own file
    if Path(folder).resolve() != O.organism_path().resolve() and a.name == "minimal_pairs":
        sys.exit("error: --model is not the shipped organism: give the result a --name of its own")
    if a.split != "test" and a.name == "minimal_pairs":
        sys.exit("error: the card's minimal pairs are test-split figures: give a --split valid run a --name")
    model, tok = O.load_organism_hf("cpu", folder)
    rows = read_metadata(Path(a.corpus))
    tagger = load_tagger()
    out: dict = {"model": folder, "corpus": a.corpus, "concepts": {}}
    for concept in a.concepts.split(","):
        res = minimal_pair_eval(model, tok, rows, concept, a.n, a.seconds, a.seed, a.guidance, tagger, a.split)
        out["concepts"][concept] = res
        head = res["measures"][next(iter(res["measures"]))]
        print(f"{concept}: n {res['n_captions']}, medians {head['median']}, "
              + ", ".join(f"{k} p {v['p_one_sided']:.2g} ({v['share_in_order']:.0%} in order)"
                          for k, v in head["paired"].items()), flush=True)
        write_result(a.name, out)  # after each concept, so a stopped run keeps what it measured


if __name__ == "__main__":
    main()
