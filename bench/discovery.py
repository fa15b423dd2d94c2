"""Concept-discovery benchmark: stores -> SAE sweep -> features -> annotation -> ground-truth benchmark.

Writes bench/results/discovery.json with, per (layer, expansion, k): valid
features, concepts recovered (best single feature AUROC >= 0.9 on held-out
clips), mean AUROC, k-sparse probe accuracy; the DiffMean and linear-probe
baselines on raw activations; layer prediction; label precision of the
annotators (with the shares of their labels' values among each feature's top
clips, heard and held out), whether the filter kept each concept's best
feature; the streaming pass time per 1000 tracks and its peak memory.

Model: the organism when its weights are installed (musiclens/assets/organism/musicgen),
else `tiny-random` (random weights: the pipeline runs end to end, but the
numbers say nothing about what a trained model learned). Audio: the rendered
corpus (data/corpus, `musiclens corpus render`), train split for the SAEs and
the features pass, test split for the benchmark. Conditioning: empty text, so
concepts can only come from the audio. Layers: the MusicGen SAE paper's
positions (early, 25 %, 50 %, 75 %, late); SAE settings: expansion 4 / 32 x k 32 / 100.

    python bench/discovery.py [--model auto] [--train-clips 96] [--test-clips 120] [--steps 200]
    python bench/discovery.py ... --min-fraction 0.2 --name discovery_minfrac02   # another firing rule
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402


def child(argv: list[str]) -> dict:
    """Run `musiclens argv` in a child process; its wall time and its own peak RSS."""
    code = ("import sys, resource; from musiclens.cli import main; rc = main(sys.argv[1:]); "
            "print('__PEAK_MB__', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True); "
            "sys.exit(rc)")
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"musiclens {' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    peak = [float(line.split()[1]) for line in p.stdout.splitlines() if line.startswith("__PEAK_MB__")]
    return {"seconds": round(wall, 1), "peak_mb": round(peak[0], 1) if peak else None, "stdout": p.stdout}


def organism_available() -> bool:
    from musiclens.models.organism import organism_path

    return (organism_path() / "config.json").exists()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="auto", help="auto (organism if installed, else tiny-random), or a name")
    ap.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    ap.add_argument("--train-clips", type=int, default=96)
    ap.add_argument("--test-clips", type=int, default=120)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--layers", default="early,25%,50%,75%,late")
    ap.add_argument("--expansion", default="4,32")
    ap.add_argument("--k", default="32,100")
    ap.add_argument("--steps", type=int, default=200, help="SAE optimizer steps per layer sweep")
    ap.add_argument("--sae-batch", type=int, default=1024)
    ap.add_argument("--min-fraction", type=float, default=0.0,
                    help="firing rule: share of a track's frames that must fire (0 = any frame, the paper's rule)")
    ap.add_argument("--max-rate", type=float, default=0.25,
                    help="filter: features firing in more than this share of tracks are 'too common' (the paper: 0.25)")
    ap.add_argument("--name", default="discovery", help="result file name (bench/results/NAME.json)")
    ap.add_argument("--work", default="/tmp/musiclens-bench-discovery")
    ap.add_argument("--fresh", action="store_true", help="delete the work directory first")
    args = ap.parse_args()
    if not 0 <= args.min_fraction <= 1 or not 0 < args.max_rate <= 1:
        print("error: --min-fraction must lie in [0, 1] and --max-rate in (0, 1]", file=sys.stderr)
        sys.exit(2)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        print(f"error: --name {args.name!r}: use letters, digits, '_', '-' and '.' only", file=sys.stderr)
        sys.exit(2)

    from musiclens.corpus import load_metadata
    from musiclens.features.benchmark import best_per_concept, label_precision_line

    model = args.model
    if model == "auto":
        model = "organism" if organism_available() else "tiny-random"
    work = Path(args.work) / model
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus)
    meta = load_metadata(corpus)
    split = {s: [m for m in meta if m["split"] == s] for s in ("train", "test")}
    lists = {}
    for s, n in (("train", args.train_clips), ("test", args.test_clips)):
        rows = split[s][:n]
        lists[s] = work / f"{s}.txt"
        lists[s].write_text("\n".join(str((corpus / m["path"]).resolve()) for m in rows) + "\n")
    # stage times survive reruns that reuse cached stores and SAEs (they are measured once)
    times_file = work / "stage_times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    for key in ("tagger_unavailable", "annotate_skipped", "annotate_seconds", "benchmark_seconds"):
        times.pop(key, None)

    stores = {}
    for s in ("train", "test"):
        stores[s] = work / f"store_{s}"
        if not (stores[s] / "manifest.json").exists() or not json.loads(
                (stores[s] / "manifest.json").read_text()).get("complete"):
            r = child(["extract", "--model", model, "--audio", str(lists[s]), "--out", str(stores[s]),
                       "--layers", args.layers, "--seconds", str(args.seconds), "--batch-size", "4"]
                      + (["--resume"] if stores[s].exists() else []))
            times[f"extract_{s}_seconds"] = r["seconds"]
    from musiclens.store import ActivationStore

    store_layers = ActivationStore(stores["train"]).layers

    sae_dirs = []
    for L in store_layers:
        out = work / "sae" / f"L{L}"
        if not (out / "sweep.json").exists():
            r = child(["train-sae", "--store", str(stores["train"]), "--layer", str(L), "--out", str(out),
                       "--expansion", args.expansion, "--k", args.k, "--steps", str(args.steps),
                       "--batch-size", str(args.sae_batch), "--splice-clips", "0", "--device", "cpu",
                       "--init-rows", "4096", "--eval-rows", "4096", "--overwrite"])
            times[f"train_sae_L{L}_seconds"] = r["seconds"]
        sae_dirs += sorted(p for p in out.iterdir() if (p / "cfg.json").exists())

    feat = work / "features"
    if feat.exists():
        shutil.rmtree(feat)
    fr = child(["features", "--store", str(stores["train"]), "--sae", ",".join(map(str, sae_dirs)),
                "--out", str(feat), "--max-clip-features", "24", "--min-fraction", str(args.min_fraction),
                "--max-rate", str(args.max_rate)])
    summary = json.loads((feat / "summary.json").read_text())

    strategies = []
    try:
        from musiclens.features.taggers import load_tagger

        load_tagger("organism")
        strategies.append("tagger")
    except Exception as e:  # the organism tagger is optional here
        times["tagger_unavailable"] = str(e)[:200]
    from musiclens.measure.clap import ASSET_DIR

    if (ASSET_DIR / "model.safetensors").exists():
        strategies.append("clap")
    strategies.append("llm")      # skipped inside when no endpoint is configured
    n_clipped = sum(min(r["valid"], 24) for r in summary["table"])
    if n_clipped:
        ar = child(["annotate", "--features", str(feat), "--strategies", ",".join(strategies), "--overwrite"])
        times["annotate_seconds"] = ar["seconds"]
    else:
        times["annotate_skipped"] = "no valid features under this firing rule"

    bench_out = work / "benchmark"
    br = child(["benchmark", "concepts", "--store", str(stores["test"]), "--features", str(feat),
                "--corpus", str(corpus), "--out", str(bench_out), "--overwrite"])
    times["benchmark_seconds"] = br["seconds"]
    bench = json.loads((bench_out / "benchmark.json").read_text())
    ann = json.loads((feat / "annotations.json").read_text()) if (feat / "annotations.json").exists() else {}

    valid = {r["sae"]: r for r in summary["table"]}
    table = []
    for r in bench["recovery"]:
        row = {k: r.get(k) for k in ("method", "layer", "expansion", "k", "recovered", "mean_auroc",
                                     "probe_accuracy", "probe_auroc")}
        if r.get("sae") in valid:
            v = valid[r["sae"]]
            row.update(features=v["features"], valid=v["valid"], dead=v["dead"], too_rare=v["too_rare"],
                       too_common=v["too_common"])
        table.append(row)
    best = {k: {"auroc": round(c["auroc"], 3), "layer": c["layer"], "sae": c.get("sae"), "feature": c["feature"]}
            for k, c in best_per_concept(bench["concepts"]).items()}
    times_file.write_text(json.dumps(times, indent=1))
    figures = {
        "model": model,
        "trained_model": model == "organism",
        "note": None if model == "organism" else
        "tiny-random has random weights: these figures test the pipeline end to end; organism numbers are pending",
        "corpus": str(corpus), "train_clips": args.train_clips, "test_clips": args.test_clips,
        "seconds_per_clip": args.seconds, "layers": store_layers, "sae_steps": args.steps,
        "firing_rule": summary["firing_rule"], "filter": summary["filter"],
        "conditioning": "empty text (null condition)",
        "table": table,
        "best_feature_per_concept": best,
        "skipped_concepts": bench["skipped_concepts"],
        "layer_prediction": bench.get("layer_prediction"),
        "label_precision": bench.get("label_precision"),
        "filter_audit": bench.get("filter_audit"),
        "annotation_summary": ann.get("summary"),
        "features_pass": {"tracks": summary["tracks"], "frames": summary["frames"], "saes": len(sae_dirs),
                          "scan_seconds": summary["timings"]["scan_seconds"],
                          "scan_seconds_per_1000_tracks": summary["timings"]["scan_seconds_per_1000_tracks"],
                          "scan_cpu_seconds": summary["timings"].get("scan_cpu_seconds"),
                          "scan_cpu_seconds_per_1000_tracks": summary["timings"].get("scan_cpu_seconds_per_1000_tracks"),
                          "torch_threads": 1 if os.environ.get("OMP_NUM_THREADS") == "1" else None,
                          "load_average_1min_at_end": os.getloadavg()[0],
                          "clips_seconds": summary["timings"]["clips_seconds"],
                          "command_seconds": fr["seconds"], "peak_rss_mb": fr["peak_mb"]},
        "stage_seconds": times,
    }
    path = write_result(args.name, figures, command=" ".join(["python", "bench/discovery.py"] + sys.argv[1:]))
    print(f"wrote {path}")
    print(f"{'method':<22} {'layer':>5} {'valid':>6} {'recovered':>9} {'AUROC':>6} {'probe':>6}")
    for r in table:
        pa = "" if r["probe_accuracy"] is None else f"{r['probe_accuracy']:.3f}"
        print(f"{r['method']:<22} {r['layer']:>5} {str(r.get('valid', '')):>6} {r['recovered']:>9.2f} "
              f"{r['mean_auroc']:>6.3f} {pa:>6}")
    fa = bench.get("filter_audit")
    if fa:
        print("best feature per concept value, filter verdict:", fa["counts"])
    for r in bench.get("label_precision") or []:
        print(label_precision_line(r))


if __name__ == "__main__":
    main()
