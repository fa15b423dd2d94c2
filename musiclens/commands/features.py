"""`musiclens features`: per-feature statistics, filtering, top clips and report for SAEs over a store."""

from __future__ import annotations

from .. import config


def _run(args) -> int:
    from ..features.pipeline import FeaturesConfig, run_features

    cfg = config.from_args(FeaturesConfig, args)
    s = run_features(cfg)
    print(f"{s['tracks']} tracks, {s['frames']} frames -> {cfg.out}")
    print(f"{'sae':<28} {'layer':>5} {'exp':>5} {'k':>5} {'feats':>6} {'dead':>6} {'rare':>6} {'common':>6} {'valid':>6}")
    for r in s["table"]:
        print(f"{r['sae'][:28]:<28} {r['layer']:>5} {str(r['expansion']):>5} {str(r['k']):>5} {r['features']:>6} "
              f"{r['dead']:>6} {r['too_rare']:>6} {r['too_common']:>6} {r['valid']:>6}")
    lp = s.get("layer_prediction")
    if lp and "accuracy" in lp:
        print(f"layer prediction from decoder vectors: {lp['accuracy']:.3f} (chance {lp['chance']:.3f})")
    n = sum(r["features"] for r in s["table"])
    common = sum(r["too_common"] for r in s["table"])
    if n and common > n / 2 and s["firing_rule"]["min_fraction"] == 0:
        print(f"note: {common} of {n} features fire in more than {s['filter']['max_rate']:.0%} of tracks under the "
              f"'fires anywhere' rule; on the organism this drops every feature that best detects a concept, and "
              f"--min-fraction 0.2 --max-rate 0.5 keeps most of them (docs/discovery.md, 'Which features the filter "
              f"keeps')")
    if s.get("features_without_audio"):
        print(f"warning: {s['features_without_audio']} features got no top clips (source audio not found)")
    return 0


def register(sub) -> None:
    from ..features.pipeline import FeaturesConfig

    p = sub.add_parser("features", help="feature statistics, filtering, top clips and an HTML catalogue",
                       description="One streaming pass over an activation store with one or more SAEs: activation "
                                   "rate, frame rate, max / mean activation, histogram and top tracks per feature; "
                                   "dead / too rare / too common filtering; top clips (audio) of valid features; "
                                   "catalogue.parquet/json and report.html in --out.")
    config.add_arguments(p, FeaturesConfig)
    p.set_defaults(func=_run)
