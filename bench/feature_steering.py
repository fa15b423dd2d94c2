"""Feature steering over every SAE of a features catalogue, judged by CLAP and by the labelled concept itself.

The MusicGen SAE paper's test adds α·β·W_dec[j] for each labelled valid feature on a neutral prompt and
asks whether CLAP(label) rises. On the organism the labels name corpus concept values, so the steered
audio can also be read with the tagger (its probability of the value) and with the value's estimator
(centroid for brightness, CREPE pitch for register, loudness for dynamics, onset rate for tempo, which
must move down for dark / low / soft / slow and up for bright / high / loud / fast). Every SAE in the
catalogue's saes.json is tested with the labelled valid features of one annotation strategy; one
cache holds the shared unsteered baseline.

    python bench/feature_steering.py --features-dir /tmp/disc29/features_sustained --strategy tagger \
        --name feature_steering_sustained

Writes bench/results/<name>.json. Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402
from musiclens.errors import MusiclensError  # noqa: E402


def summarise(per_sae: list[dict]) -> dict:
    """Pooled figures over every tested feature, and the concept checks per concept head."""
    from musiclens.steer.experiments import concept_check_summary

    feats = [r for s in per_sae for r in s["features"]]
    checks = [c for r in feats for c in r.get("concept_checks", [])]
    heads = sorted({c["concept"].split("=", 1)[0] for c in checks})
    imp = [r["improvement"] for r in feats]
    return {"features": len(feats), "saes_tested": len(per_sae),
            "clap_share_positive": sum(x > 0 for x in imp) / len(imp) if imp else None,
            "clap_mean_improvement": sum(imp) / len(imp) if imp else None,
            **{("concept_pairs" if k == "pairs" else k): v for k, v in concept_check_summary(checks).items()},
            "by_head": {h: concept_check_summary([c for c in checks if c["concept"].startswith(h + "=")])
                        for h in heads}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features-dir", required=True, help="a `musiclens features` + `annotate` output")
    ap.add_argument("--model", default="organism")
    ap.add_argument("--strategy", default="tagger", choices=["any", "clap", "llm", "tagger"],
                    help="annotation strategy whose labels are tested")
    ap.add_argument("--n-samples", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--work", default="/tmp/musiclens-bench-feature-steering")
    ap.add_argument("--name", default="feature_steering")
    args = ap.parse_args()
    fd = Path(args.features_dir)
    try:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
            raise MusiclensError(f"--name {args.name!r}: use letters, digits, '_', '-' and '.' only")
        if args.n_samples < 2 or not args.seconds > 0:
            raise MusiclensError("--n-samples must be at least 2 and --seconds positive")
        if not (fd / "saes.json").exists() or not (fd / "annotations.json").exists():
            raise MusiclensError(f"{fd} is not an annotated `musiclens features` output (saes.json, annotations.json)")
        from musiclens.commands.experiments import FeatureSteeringConfig, run_feature_steering

        work = Path(args.work) / args.name
        t0 = time.time()
        per_sae, skipped = [], {}
        for s in json.loads((fd / "saes.json").read_text()):
            cfg = FeatureSteeringConfig(out=str(work / s["name"]), model=args.model, sae=s["path"],
                                        features_dir=str(fd), label_strategy=args.strategy, limit=0,
                                        n_samples=args.n_samples, seconds=args.seconds, alpha=args.alpha,
                                        cache=str(Path(args.work) / "cache"), overwrite=True)
            try:
                res = run_feature_steering(cfg)
            except MusiclensError as e:
                if "no labelled valid features" not in str(e):
                    raise
                skipped[s["name"]] = str(e)
                continue
            per_sae.append({"sae": s["name"], "layer": res["layer"], "features": res["features"],
                            "share_positive": res["share_positive"], "concept_checks": res["concept_checks"]})
            print(f"{s['name']}: {len(res['features'])} features, CLAP share {res['share_positive']:.2f}, "
                  f"concepts {res['concept_checks']}", flush=True)
    except MusiclensError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    summary = summarise(per_sae)
    summary_firing = json.loads((fd / "summary.json").read_text())
    figures = {"features_dir": str(fd), "model": args.model, "strategy": args.strategy,
               "firing_rule": summary_firing.get("firing_rule"), "filter": summary_firing.get("filter"),
               "prompt": "Simple melody", "n_samples": args.n_samples, "seconds": args.seconds, "alpha": args.alpha,
               "summary": summary, "per_sae": per_sae, "skipped_saes": skipped,
               "seconds_total": round(time.time() - t0, 1)}
    path = write_result(args.name, figures)
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
