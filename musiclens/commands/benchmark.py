"""`musiclens benchmark concepts`: how well SAE features (and raw-activation baselines) detect known concepts."""

from __future__ import annotations

from .. import config


def _concepts(args) -> int:
    from ..features.benchmark import BenchmarkConfig, label_precision_line, run_benchmark

    cfg = config.from_args(BenchmarkConfig, args)
    r = run_benchmark(cfg)
    print(r["description"])
    print(f"{'method':<24} {'layer':>5} {'recovered':>9} {'mean AUROC':>10} {'probe acc':>9}")
    for row in r["recovery"]:
        acc = "" if row["probe_accuracy"] is None else f"{row['probe_accuracy']:.3f}"
        print(f"{row['method']:<24} {row['layer']:>5} {row['recovered']:>9.2f} {row['mean_auroc']:>10.3f} {acc:>9}")
    lp = r.get("layer_prediction")
    if lp and "accuracy" in lp:
        print(f"layer prediction: {lp['accuracy']:.3f} (chance {lp['chance']:.3f}) over layers {lp['layers']}")
    fa = r.get("filter_audit")
    if fa:
        kept = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in fa["counts"].items() if n)
        print(f"best feature per concept value vs the features filter: {kept}")
    for row in r.get("label_precision", []):
        print(label_precision_line(row))
    print(f"-> {cfg.out}/benchmark.json")
    return 0


def register(sub) -> None:
    from ..features.benchmark import BenchmarkConfig

    p = sub.add_parser("benchmark", help="ground-truth benchmarks",
                       description="Benchmarks against known ground truth.")
    bsub = p.add_subparsers(dest="benchmark_command", metavar="<concepts>", required=True)
    c = bsub.add_parser("concepts", help="concept detection by SAE features vs DiffMean / linear probes",
                        description="On a held-out store of corpus clips with known factors: per concept value, "
                                    "the best single feature's AUROC (chosen on half A, scored on half B), concepts "
                                    "recovered (AUROC >= 0.9), k-sparse probe accuracy, DiffMean and linear-probe "
                                    "baselines on raw activations, layer prediction, and label precision of "
                                    "annotations.")
    config.add_arguments(c, BenchmarkConfig)
    c.set_defaults(func=_concepts)
