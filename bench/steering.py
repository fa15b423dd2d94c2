"""Steering benchmark (issue 6): the DiffMean paper's protocol on the organism.

For each concept pair (tempo fast/slow, brightness bright/dark, dynamics
loud/soft, register high/low):

1. Δ(l) from `--n-diffmean` prompts per side (corpus caption vocabulary);
2. layer scan on `--scan-prompts` neutral prompts: Δ(l) into layer l alone
   at λ = `--scan-lam`; l_best = the largest increase of the concept metric;
3. λ sweep (One-to-All from l_best, both signs) on `--n-prompts` held-out
   neutral prompts (they name no steered concept); FAD vs an independent
   unsteered generation (or `--reference` real clips);
4. per direction, the strongest λ whose FAD stays within 2x the λ = 0 FAD,
   and the relative change of the concept metric there (goal: >= +20 % for
   the positive side, <= -20 % for the negative side).

Also generation time with vs without steering (One-to-All hooks on every
layer; goal <= 5 % overhead) and, when an SAE and a features directory are
given, the feature-steering share of positive CLAP improvement.

    .venv/bin/python bench/steering.py                       # organism, full size (>= 50 prompts)
    .venv/bin/python bench/steering.py --model tiny-random --n-prompts 8 --seconds 2   # smoke size

Writes bench/results/steering.json (+ steering_<concept>.png, steering.md).
Generated audio is cached under --work (default runs/bench_steering), so
an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="organism", help="model (default organism; falls back to tiny-random if "
                                                        "the organism is not shipped yet, and says so)")
    ap.add_argument("--concepts", default="tempo,brightness,dynamics,register")
    ap.add_argument("--n-prompts", type=int, default=50, help="held-out neutral prompts (issue: >= 50)")
    ap.add_argument("--n-diffmean", type=int, default=40, help="prompts per side for Δ")
    ap.add_argument("--scan-prompts", type=int, default=8, help="neutral prompts for the layer scan")
    ap.add_argument("--scan-lam", type=float, default=2.0)
    ap.add_argument("--grid", default="-4,-2,-1,0,1,2,4", help="λ grid (both signs; 0 = baseline)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedder", default="auto", choices=["auto", "tagger", "clap", "mel"])
    ap.add_argument("--reference", default=None,
                    help="FAD reference: a folder of real clips, or a rendered corpus (its test split is used)")
    ap.add_argument("--reference-clips", type=int, default=200,
                    help="at most this many clips of --reference (default 200)")
    ap.add_argument("--fad-factor", type=float, default=2.0)
    ap.add_argument("--time-reps", type=int, default=5)
    ap.add_argument("--sae", default=None, help="SAE directory for the feature-steering share")
    ap.add_argument("--features-dir", default=None, help="`musiclens features` output with annotations.json")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_steering"), help="audio cache (resumable)")
    return ap.parse_args(argv)


def load(name: str):
    from musiclens import load_model
    from musiclens.errors import MusiclensError

    try:
        return load_model(name), True
    except MusiclensError as e:
        if name != "organism":
            raise
        print(f"organism not available ({e}); running on tiny-random instead", file=sys.stderr)
        return load_model("tiny-random"), False


def timing(model, prompts, seconds, batch_size, vecs, layer, reps: int) -> dict:
    """Wall time of plain vs steered (One-to-All: a hook on every layer) generation, min over reps."""
    import torch

    from musiclens.steer.generation import generate_batched
    from musiclens.steer.inject import DiffMeanSteer

    spec = [DiffMeanSteer(vecs, 1.0, "one-to-all", layer=layer)]
    wall = {"plain": [], "steered": []}
    cpu = {"plain": [], "steered": []}
    generate_batched(model, prompts[:1], seconds, seed=123, batch_size=batch_size)   # warm-up
    for _ in range(reps):                      # interleaved, so load changes hit both alike
        for name, specs in (("plain", ()), ("steered", spec)):
            t0, c0 = time.perf_counter(), time.process_time()
            generate_batched(model, prompts, seconds, seed=123, batch_size=batch_size, specs=specs)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    w = {k: min(v) for k, v in wall.items()}
    c = {k: min(v) for k, v in cpu.items()}
    return {"plain_wall_s": round(w["plain"], 3), "steered_wall_s": round(w["steered"], 3),
            "overhead_wall": round(w["steered"] / w["plain"] - 1, 4),
            "plain_cpu_s": round(c["plain"], 3), "steered_cpu_s": round(c["steered"], 3),
            "overhead_cpu": round(c["steered"] / c["plain"] - 1, 4),
            "note": "min over interleaved reps; on a shared, loaded CPU the process CPU time is the robust figure",
            "clips": len(prompts), "seconds_each": seconds, "reps": reps, "torch_threads": torch.get_num_threads(),
            "hooked_layers": model.n_layers, "goal_overhead_max": 0.05}


def reference_paths(reference: str, limit: int) -> list[Path]:
    """Real clips for the FAD reference: a corpus's test split (first `limit`) or a folder's audio files."""
    from musiclens.corpus.render import load_metadata
    from musiclens.steer.generation import list_audio

    ref = Path(reference)
    if (ref / "metadata.jsonl").exists():
        paths = [ref / r["path"] for r in load_metadata(ref) if r.get("split") == "test"]
    else:
        paths = list_audio(ref)
    return paths[:limit]


def reference_audio(reference: str, limit: int, sample_rate: int) -> list:
    from musiclens.steer.generation import read_audio

    return [read_audio(f, sample_rate)[0] for f in reference_paths(reference, limit)]


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from musiclens.bench_utils import RESULTS, peak_rss_mb, write_result
    from musiclens.io import write_text
    from musiclens.measure.fad import load_embedder
    from musiclens.steer.diffmean import compute_diffmean
    from musiclens.steer.experiments import Runner, markdown, pick_strength, plot, scan_layers, sweep
    from musiclens.steer.inject import DiffMeanSteer
    from musiclens.steer.prompts import CONCEPTS, concept_prompts, neutral_prompts

    t_start = time.perf_counter()
    model, organism_ready = load(args.model)
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()]
    grid = sorted({float(x) for x in args.grid.split(",")} | {0.0})
    work = Path(args.work) / model.weights_hash
    emb = load_embedder(args.embedder)
    ref = reference_audio(args.reference, args.reference_clips, model.sample_rate) if args.reference else None
    held_out = neutral_prompts(args.n_prompts)
    scan_prompts = neutral_prompts(args.scan_prompts, offset=args.n_prompts)   # disjoint from the held-out set
    metrics = [CONCEPTS[c][2] for c in concepts]
    main_runner = Runner(model, held_out, args.seconds, metrics=metrics, seed=args.seed, batch_size=args.batch_size,
                         cache_dir=work / "heldout", embedder=emb, reference_audio=ref, reference_given=ref is not None)
    scan_runner = Runner(model, scan_prompts, args.seconds, metrics=metrics, seed=args.seed,
                         batch_size=args.batch_size, cache_dir=work / "scan", embedder=None)
    out_png = RESULTS / "steering"
    results, tables, vec_for_timing = {}, [], None
    for c in concepts:
        pos_side, neg_side, metric = CONCEPTS[c]
        t0 = time.perf_counter()
        vecs = compute_diffmean(model, concept_prompts(c, pos_side, args.n_diffmean),
                                concept_prompts(c, neg_side, args.n_diffmean), batch_size=args.batch_size,
                                seed=args.seed)
        t_dm = time.perf_counter() - t0
        scan_runner.metrics = [metric]
        scan = scan_layers(scan_runner, vecs, args.scan_lam, strategy="single", expect="up")
        l_best = scan["l_best"] if scan["l_best"] is not None else vecs.layers[len(vecs.layers) // 2]
        main_runner.metrics = [metric] + [m for m in metrics if m != metric]
        sw = sweep(main_runner, grid, lambda lam: [DiffMeanSteer(vecs, lam, "one-to-all", layer=l_best)], "lam")
        up = pick_strength(sw, +1, args.fad_factor)
        down = pick_strength(sw, -1, args.fad_factor)

        def at(row):
            if row is None:
                return None
            return {"lam": row["lam"], "relative_change": row["relative_change"][metric], "fad": row["fad"],
                    "mean": row["summary"][metric]["mean"], "std": row["summary"][metric]["std"]}

        a_up, a_down = at(up), at(down)
        goal = (a_up is not None and a_down is not None and a_up["relative_change"] is not None
                and a_down["relative_change"] is not None
                and a_up["relative_change"] >= 0.20 and a_down["relative_change"] <= -0.20)
        results[c] = {
            "positive": pos_side, "negative": neg_side, "metric": metric, "diffmean_s": round(t_dm, 2),
            "capture_rule": vecs.meta["capture"]["rule"],
            "delta_norm": {str(l): round(float(vecs.delta(l).norm()), 5) for l in vecs.layers},
            "scan": {"lam": args.scan_lam, "l_best": l_best,
                     "l_best_source": "scan" if scan["l_best"] is not None else
                     "fallback: middle layer (no layer moved the metric upward in the scan)",
                     "relative_change": {str(r["layer"]): r["relative_change"][metric] for r in scan["layers"]}},
            "baseline": sw["baseline"]["summary"][metric], "fad_lambda0": sw["baseline"]["fad"],
            "sweep": [{"lam": r["lam"], "mean": r["summary"][metric]["mean"], "std": r["summary"][metric]["std"],
                       "relative_change": r["relative_change"][metric], "fad": r["fad"]} for r in sw["rows"]],
            "toward_positive": a_up, "toward_negative": a_down, "goal_20pct_both_directions": bool(goal),
        }
        sw["setup"] = main_runner.describe()
        plot(sw, out_png / f"steering_{c}.png")
        tables.append(f"### {c}: {pos_side} / {neg_side} (metric `{metric}`, l_best = {l_best})\n\n" + markdown(sw))
        vec_for_timing = vec_for_timing or (vecs, l_best)
        print(f"{c}: l_best {l_best}; +: {a_up}; -: {a_down}", file=sys.stderr)

    timing_res = None
    if vec_for_timing is not None:
        timing_res = timing(model, held_out[: args.batch_size], args.seconds, args.batch_size, *vec_for_timing,
                            reps=args.time_reps)

    feature = {"status": "not run: pass --sae and --features-dir (an SAE and `musiclens annotate` output "
                         "for this model)"}
    if args.sae and args.features_dir:
        from musiclens.commands.experiments import FeatureSteeringConfig, run_feature_steering

        fs = run_feature_steering(FeatureSteeringConfig(out=str(work / "feature_steering"), model=model.name,
                                                        sae=args.sae, features_dir=args.features_dir,
                                                        seconds=args.seconds, overwrite=True))
        feature = {"share_positive": fs["share_positive"], "mean_improvement": fs["mean_improvement"],
                   "features": len(fs["features"]), "clap": fs["clap"], "paper_range": [0.15, 0.35]}

    summary_rows = ["| concept | metric | baseline | toward + (λ, change, FAD) | toward − (λ, change, FAD) | goal ±20 % |",
                    "|---|---|---:|---:|---:|:---:|"]
    for c, r in results.items():
        def cell(a):
            if a is None:
                return "no λ within FAD limit"
            ch = "n/a" if a["relative_change"] is None or not np.isfinite(a["relative_change"]) \
                else f"{100 * a['relative_change']:+.1f} %"
            return f"λ={a['lam']:g}, {ch}, FAD {a['fad']:.3g}" if a["fad"] is not None else f"λ={a['lam']:g}, {ch}"
        b = r["baseline"]
        summary_rows.append(f"| {c} ({r['positive']}/{r['negative']}) | {r['metric']} | "
                            f"{b['mean']:.4g} ± {b['std']:.3g} | {cell(r['toward_positive'])} | "
                            f"{cell(r['toward_negative'])} | {'yes' if r['goal_20pct_both_directions'] else 'no'} |")
    header = (f"Model: {model.name} ({'the organism' if organism_ready and model.name == 'organism' else 'NOT the organism'}); "
              f"{args.n_prompts} held-out neutral prompts x {args.seconds:g} s; Δ from {args.n_diffmean} prompts per side; "
              f"FAD embedder {getattr(emb, 'name', None)}; λ chosen as the strongest with FAD <= {args.fad_factor:g} x FAD(λ=0).\n")
    write_text(out_png / "steering.md", header + "\n" + "\n".join(summary_rows) + "\n\n" + "\n".join(tables))
    figures = {
        "model": model.name, "organism_ready": bool(organism_ready and model.name == "organism"),
        "note": None if organism_ready and model.name == "organism" else
        "the organism was not available: these figures come from tiny-random (random weights), so they test the "
        "pipeline only and say nothing about steerability",
        "n_prompts": args.n_prompts, "n_diffmean": args.n_diffmean, "seconds": args.seconds, "grid": grid,
        "fad_embedder": getattr(emb, "name", None),
        "fad_reference": (f"{len(ref)} real clips from {args.reference}" if ref is not None
                          else "independent unsteered generation"),
        "concepts": results, "timing": timing_res, "feature_steering": feature,
        "wall_s": round(time.perf_counter() - t_start, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "tables": "bench/results/steering/steering.md",
    }
    cmd = "python bench/steering.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result("steering", figures, cmd)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
