"""`musiclens annotate`: label valid features from their top clips (tagger, CLAP, multimodal LLM)."""

from __future__ import annotations

from .. import config


def _run(args) -> int:
    from ..features.annotation import AnnotateConfig, run_annotate

    cfg = config.from_args(AnnotateConfig, args)
    data = run_annotate(cfg)
    for r in data["summary"]:
        print(f"{r['strategy']:<8} {r['labelled']:>5}/{r['features']:<5} labelled  ({r['provenance']})")
    print(f"-> {cfg.features}/annotations.json, annotations.parquet, report.html")
    return 0


def register(sub) -> None:
    from ..features.annotation import AnnotateConfig

    p = sub.add_parser("annotate", help="automatic labels for features (tagger, CLAP, LLM)",
                       description="Label the valid features of a `musiclens features` directory from their top "
                                   "clips: classifier-based (the organism tagger or an HF audio classifier), CLAP "
                                   "text-audio alignment, and a multimodal LLM (OpenAI-compatible or Gemini; "
                                   "skipped when no endpoint is configured).")
    config.add_arguments(p, AnnotateConfig)
    p.set_defaults(func=_run)
