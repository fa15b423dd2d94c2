"""`musiclens corpus render|info`: build the ground-truth corpus and summarise one."""

from __future__ import annotations

import collections
import json


def register(sub) -> None:
    from ..config import add_arguments
    from ..corpus import CorpusConfig

    p = sub.add_parser("corpus", help="render or inspect a corpus with known musical factors")
    csub = p.add_subparsers(dest="corpus_command", metavar="<action>")
    r = csub.add_parser("render", help="render clips from music21 melodies with FluidSynth",
                        description="Render N clips (16 kHz mono wav + metadata.jsonl with every factor "
                                    "and a caption). Deterministic for a seed; resumable.")
    add_arguments(r, CorpusConfig)
    r.set_defaults(func=_render)
    i = csub.add_parser("info", help="summarise a rendered corpus")
    i.add_argument("corpus", help="corpus directory")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=_info)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _render(args) -> int:
    from ..config import from_args
    from ..corpus import CorpusConfig, render_corpus

    cfg = from_args(CorpusConfig, args)
    summary = render_corpus(cfg)
    print(f"corpus {cfg.out}: {summary['clips']} clips ({summary['rendered']} rendered, "
          f"{summary['skipped']} already there)")
    if summary["clips_per_s"]:
        print(f"render speed: {summary['clips_per_s']} clips/s = {summary['audio_s_per_s']} audio-s/s "
              f"({cfg.workers} processes); peak {summary['peak_max']}")
    return 0


def summarize(records: list[dict]) -> dict:
    """Counts per split and per factor, total audio, BPM range."""
    from ..corpus import HEADS

    out = {"clips": len(records), "hours": round(sum(r.get("seconds", 0) for r in records) / 3600, 3),
           "sources": len({r["source"] for r in records}),
           "split": dict(collections.Counter(r["split"] for r in records))}
    for head in HEADS:
        out[head] = dict(sorted(collections.Counter(r[head] for r in records).items()))
    bpms = [r["bpm"] for r in records]
    out["bpm"] = {"min": min(bpms), "max": max(bpms)} if bpms else {}
    out["example_captions"] = [r["caption"] for r in records[:5]]
    return out


def _info(args) -> int:
    from ..corpus import load_metadata

    s = summarize(load_metadata(args.corpus))
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{s['clips']} clips, {s['hours']} h of audio, {s['sources']} source pieces, split {s['split']}")
    for k, v in s.items():
        if k in ("clips", "hours", "sources", "split", "example_captions"):
            continue
        print(f"  {k}: {v}")
    print("  captions, e.g.:")
    for c in s["example_captions"]:
        print(f"    {c}")
    return 0
