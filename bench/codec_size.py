"""What a wider organism codec would weigh: parameters and size per width, and the shipped folder it implies.

    python bench/codec_size.py [--widths 16,24,32]

Builds an untrained HF `EncodecModel` with the shipped codec's config at each
`num_filters` (size does not depend on training), in float32 and float16
(`organism export --dtype`), and adds the shipped
organism's non-codec tensors (decoder + projection, read from its
safetensors header) to give the organism folder that width would ship. Also
reports the tracked tree that would result, because a device call carries at
most 64 MiB of it (docs/organism.md). Writes bench/results/codec_size.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402

MIB = 2 ** 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="16,24,32", help="comma-separated num_filters")
    a = ap.parse_args()

    import math

    from safetensors import safe_open
    from transformers import EncodecModel

    from musiclens.models.organism import load_organism_hf, organism_path

    weights = organism_path() / "model.safetensors"
    codec_cfg = load_organism_hf()[0].audio_encoder.config
    with safe_open(str(weights), "pt") as f:
        other = sum(math.prod(f.get_slice(k).get_shape()) * 4 for k in f.keys() if not k.startswith("audio_encoder."))
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    tracked = sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())
    shipped_mib = weights.stat().st_size / MIB
    figures = {"shipped_num_filters": codec_cfg.num_filters, "shipped_organism_mib": round(shipped_mib, 2),
               "tracked_tree_mib": round(tracked / MIB, 2), "lm_and_projection_mib": round(other / MIB, 2),
               "widths": {}}
    for w in (int(x) for x in a.widths.split(",")):
        codec = EncodecModel(type(codec_cfg)(**{**codec_cfg.to_dict(), "num_filters": w}))
        params = sum(p.numel() for p in codec.parameters())
        size = 4 * (params + sum(b.numel() for b in codec.buffers()))
        organism = (size + other) / MIB
        figures["widths"][w] = {"codec_parameters_m": round(params / 1e6, 2), "codec_mib_fp32": round(size / MIB, 1),
                                "organism_mib_fp32": round(organism, 1),
                                "tracked_tree_mib": round(tracked / MIB - shipped_mib + organism, 1),
                                # `organism export --dtype float16` (the default since session 12) halves both
                                "organism_mib_fp16": round(organism / 2, 1),
                                "tracked_tree_mib_fp16": round(tracked / MIB - shipped_mib + organism / 2, 1)}
        print(w, figures["widths"][w], flush=True)
    write_result("codec_size", figures, "python bench/codec_size.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
