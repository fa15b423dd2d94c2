"""How far ahead each codec's encoder reads (0 = causal): the shipped organism's, and any trained codec folder.

    python bench/codec_lookahead.py [--codec DIR ...] [--name codec_lookahead]

A codec whose frames move with later audio lets its codes announce a hit before it
(docs/organism.md, "Why the LM loses a beat it is given"); `--codec-causal` trains one
that cannot. Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", action="append", default=[], help="a codec HF folder (RUN/codec/hf); repeatable")
    ap.add_argument("--name", default="codec_lookahead")
    a = ap.parse_args(argv)

    from musiclens.errors import MusiclensError
    from musiclens.latent.autoencoders import organism_codec
    from musiclens.organism.codec import load_codec, lookahead_frames

    try:
        res = {"shipped organism": lookahead_frames(organism_codec().eval())}
        for folder in a.codec:
            if not (Path(folder) / "config.json").exists():
                raise MusiclensError(f"no codec folder (config.json) at {folder}")
            res[folder] = lookahead_frames(load_codec(Path(folder), "cpu").eval())
    except MusiclensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(res)
    write_result(a.name, {"lookahead_frames": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
