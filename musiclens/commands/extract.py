"""`musiclens extract`: residual-stream activations into an activation store.

Two modes, one command: `--audio PATH` (teacher-forced over real audio) or
`--prompts FILE` (recorded while generating with CFG). Works under
`torchrun --nproc_per_node N musiclens extract ...`: each rank takes every N-th
batch and writes its own shards; rank 0 merges the manifests.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import add_arguments, from_args
from ..errors import MusiclensError

DESCRIPTION = """Store residual-stream activations of a MusicGen-family model in an activation store.
Two modes: --audio PATH (teacher-forced over real audio, encoded with the model's codec and fed
as BOS + delay pattern, exactly as generation sees it) or --prompts FILE (recorded at every step
while generating with classifier-free guidance; also stores the codes and the audio).
Row = one audio frame (frame f = decoder position f+1). See docs/extraction.md."""

EPILOG = """examples:
  musiclens extract --model organism --audio corpus/audio --layers early,50%,late --seconds 5 --out acts
  musiclens extract --model tiny-random --audio files.txt --layers 2,4 --frames-per-clip 64 --out acts
  musiclens extract --model organism --prompts prompts.txt --seconds 4 --seed 0 --branch cond --out gen_acts
  torchrun --nproc_per_node 2 -m musiclens extract --audio big_folder --out acts
  musiclens store info acts ; musiclens store verify acts
"""


def _run(args) -> int:
    from ..extract import ExtractConfig, run_extract

    cfg = from_args(ExtractConfig, args)
    summary = run_extract(cfg)
    if summary["rank"] == 0:
        skipped = summary["skipped"]
        note = f"; skipped {skipped} input(s), see {cfg.out}/skipped.json" if skipped else "; skipped 0 inputs"
        print(f"stored {summary['rows']} rows of layers {','.join(map(str, summary['layers']))} in {cfg.out}"
              f" ({summary['clips_stored_now']} clips this run{note})")
        if summary["rows"] == 0:  # a store that holds nothing must not pass for a result in a script
            first = ""
            try:
                first = json.loads((Path(cfg.out) / "skipped.json").read_text())[0]
                first = f" (first: {first['path']}: {first['reason']})"
            except (OSError, ValueError, IndexError, KeyError):
                pass
            raise MusiclensError(f"every input was skipped, so the store is empty{first}; "
                                 f"see {cfg.out}/skipped.json")
    return 0


def register(sub) -> None:
    import argparse

    from ..extract import ExtractConfig

    p = sub.add_parser("extract", help="store residual activations (teacher-forced from audio, or during generation)",
                       description=DESCRIPTION,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, ExtractConfig)  # escapes the '%' of "25%" for argparse
    p.set_defaults(func=_run)
