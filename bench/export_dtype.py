"""What storing the organism's codec in float16 changes: codes that flip, and how far the decoded audio moves.

    python bench/export_dtype.py [--codec DIR] [--n 60] [--seconds 4]

`musiclens organism export` ships the weights in float16 by default (half the
size; they load into float32). An LM trained on a GPU in float16 loses nothing
by it, but the codec was trained in float32 on CPU, so rounding its weights is
a real change. This measures it on the first N test clips of the corpus: the
fraction of codes the rounded encoder + codebooks assign differently, and the
power of (fp32 decode - rounded decode) of the same codes relative to the fp32
decode, in dB. Writes bench/results/export_dtype.json.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="", help="codec or organism HF folder (default: the shipped organism's codec)")
    ap.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    ap.add_argument("--n", type=int, default=60, help="first N test clips")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of each clip")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import numpy as np
    import soundfile as sf
    import torch
    from tqdm.auto import tqdm

    from musiclens.errors import MusiclensError
    from musiclens.latent.autoencoders import organism_codec
    from musiclens.organism.codec import load_codec
    from musiclens.organism.data import read_metadata

    torch.set_num_threads(a.threads)
    try:
        full = load_codec(a.codec) if a.codec else organism_codec()
        rounded = load_codec(a.codec) if a.codec else organism_codec()
        test = [m for m in read_metadata(a.corpus) if m["split"] == "test"][: a.n]
    except (MusiclensError, OSError) as e:
        sys.exit(f"error: {e}")
    full.eval(), rounded.eval()
    changed = 0
    with torch.no_grad():
        for t in list(rounded.parameters()) + list(rounded.buffers()):
            if t.is_floating_point():
                r = t.half().float()
                changed += int(not torch.equal(r, t))
                t.copy_(r)
    if changed == 0:  # e.g. the shipped codec, already stored in float16: measure the float32 one it came from
        print("note: these weights are already float16 values; rounding them changes nothing", file=sys.stderr)
    flips = total = 0
    rel_db = []
    for m in tqdm(test, desc="clips", disable=None):
        x, sr = sf.read(a.corpus / m["path"], dtype="float32")
        x = torch.from_numpy(x[: int(a.seconds * sr)])[None, None]
        with torch.no_grad():
            c_full, c_round = full.encode(x).audio_codes, rounded.encode(x).audio_codes
            y_full = full.decode(c_full, [None]).audio_values
            y_round = rounded.decode(c_full, [None]).audio_values
        flips += int((c_full != c_round).sum())
        total += c_full.numel()
        err = float((y_full - y_round).pow(2).mean() / y_full.pow(2).mean().clamp_min(1e-12))
        rel_db.append(10 * math.log10(max(err, 1e-20)))
    figures = {"codec": a.codec or "shipped", "num_filters": full.config.num_filters, "tensors_rounded": changed,
               "n_clips": len(test),
               "seconds": a.seconds, "codes": total, "codes_flipped": flips,
               "codes_flipped_fraction": flips / max(1, total),
               "decode_error_db": {"median": float(np.median(rel_db)), "max": float(np.max(rel_db))}}
    print(figures)
    write_result("export_dtype", figures, "python bench/export_dtype.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
