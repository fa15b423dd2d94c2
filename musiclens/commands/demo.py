"""`musiclens demo`: the whole pipeline on the organism, end to end, in a few minutes.

render a small corpus -> extract residual activations -> train a TopK SAE ->
feature statistics + labelled HTML catalogue -> DiffMean "fast vs slow" vector ->
steered generation (λ = -L, 0, +L) -> measurements -> one index.html to
listen to and read. Every step is the same CLI command a user would run
(printed as it goes), so the demo doubles as a worked example.
"""

from __future__ import annotations

import html
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import add_arguments, from_args, option, save_config
from ..errors import MusiclensError

INSTRUMENTS = ["piano", "organ", "flute", "trumpet", "violin", "marimba", "nylon guitar", "string ensemble",
               "square lead", "acoustic bass"]


@dataclass
class DemoConfig:
    model: str = option("organism", help="model (falls back to tiny-random while the organism is not trained)")
    out: str = option("demo_out", help="output folder")
    clips: int = option(48, help="corpus clips to render", ge=6)
    seconds: float = option(5.0, help="clip length for the corpus and for generations", gt=0)
    layers: str = option("25%,50%,75%", help="layers to extract")
    sae_steps: int = option(400, help="SAE training steps", ge=1)
    expansion: int = option(4, help="SAE expansion factor", ge=1)
    k: int = option(32, help="SAE active latents", ge=1)
    lam: float = option(0.25, help="steering strength λ for the fast/slow DiffMean vector (its norms are 3-10 per "
                                   "layer on the shipped organism; in bench/steering.py λ = ±0.25 moved the onset "
                                   "rate by +44 % / -48 %, and λ = -1 gives near-silent clips)")
    steer_layer: str = option("50%", help="source layer of the One-to-All DiffMean injection")
    min_fraction: float = option(0.2, help="catalogue: a track counts for a feature when it fires in at least this "
                                           "share of the track's frames (0 = anywhere, the SAE paper's rule, under "
                                           "which the organism's x4 SAEs keep 0-1 features: docs/discovery.md)", ge=0, le=1)
    max_rate: float = option(0.5, help="catalogue: features counting in more tracks are too common (the paper: "
                                       "0.25; here most factor values cover a third of the tracks)", gt=0, le=1)
    overwrite: bool = option(False, help="replace an existing output folder")


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the organism and write demo_out/index.html")
    add_arguments(p, DemoConfig)
    p.set_defaults(func=run)


def _step(title: str, argv: list[str]) -> None:
    from ..cli import main

    print(f"\n== {title}\n$ musiclens {' '.join(shlex.quote(a) for a in argv)}", flush=True)
    t = time.time()
    rc = main(argv)
    if rc != 0:
        raise MusiclensError(f"demo step failed ({title}), exit code {rc}")
    print(f"   ({time.time() - t:.0f} s)", flush=True)


def _pick_model(name: str) -> str:
    from ..models import load_model

    try:
        load_model(name)
        return name
    except MusiclensError as e:
        if name != "organism":
            raise
        print(f"note: {e}\nnote: running the demo on tiny-random instead (random weights: the numbers mean nothing)")
        return "tiny-random"


def run(args) -> int:
    import shutil

    cfg = from_args(DemoConfig, args)  # (bounds: --clips, --seconds, --expansion, --k, ... and a finite --lam)
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output folder exists: {out} (use --overwrite)")
    model = _pick_model(cfg.model)
    from ..models import load_model

    m = load_model(model)  # model and layers are checked before anything is written
    layer = m.parse_layers(cfg.steer_layer)[0]
    sae_layer = m.parse_layers(cfg.layers)[len(m.parse_layers(cfg.layers)) // 2]
    from ..sae.train import make_combos

    make_combos("topk", [cfg.expansion], [cfg.k], [], m.d_model)  # train-sae's own check of k vs the SAE's width
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_config(cfg, out / "config.json")

    _step("render a corpus with known factors",
          ["corpus", "render", "--out", str(out / "corpus"), "--clips", str(cfg.clips), "--seed", "7",
           "--seconds", str(cfg.seconds)])
    _step("extract residual activations (teacher-forced)",
          ["extract", "--model", model, "--audio", str(out / "corpus" / "audio"), "--layers", cfg.layers,
           "--seconds", str(cfg.seconds), "--captions", str(out / "corpus" / "metadata.jsonl"),
           "--out", str(out / "store")])
    _step("train a TopK SAE",
          ["train-sae", "--store", str(out / "store"), "--layer", str(sae_layer), "--arch", "topk",
           "--expansion", str(cfg.expansion), "--k", str(cfg.k), "--steps", str(cfg.sae_steps),
           "--out", str(out / "sae")])
    _step("feature statistics, filtering, top clips, HTML catalogue",
          ["features", "--sae", str(out / "sae"), "--store", str(out / "store"), "--out", str(out / "features"),
           "--max-clip-features", "12", "--min-fraction", str(cfg.min_fraction), "--max-rate", str(cfg.max_rate)])
    valid = sum(r["valid"] for r in json.loads((out / "features" / "summary.json").read_text())["table"])
    if valid:
        _step("label the catalogue's features from their top clips (tagger, mini-CLAP)",
              ["annotate", "--features", str(out / "features"), "--strategies", "tagger,clap"])
    else:
        print("\nnote: no valid features under this firing rule, so nothing to label (try --min-fraction 0.2 "
              "--max-rate 0.5)", flush=True)

    prompts = out / "prompts"
    prompts.mkdir()
    (prompts / "fast.txt").write_text("".join(f"a fast {i} tune\nan energetic, quick {i} melody\n" for i in INSTRUMENTS))
    (prompts / "slow.txt").write_text("".join(f"a slow {i} tune\na calm, leisurely {i} melody\n" for i in INSTRUMENTS))
    neutral = ["a piano melody", "an organ tune", "a flute melody", "a marimba tune"]
    (prompts / "neutral.txt").write_text("\n".join(neutral) + "\n")
    _step("DiffMean vector: fast vs slow prompts",
          ["diffmean", "--model", model, "--pos", str(prompts / "fast.txt"), "--neg", str(prompts / "slow.txt"),
           "--layers", "all", "--out", str(out / "vectors" / "tempo")])

    runs = {}
    for tag, lam in (("slower", -cfg.lam), ("baseline", 0.0), ("faster", cfg.lam)):
        d = out / "steer" / tag
        _step(f"steer λ = {lam:+g} (One-to-All from layer {layer})",
              ["steer", "--model", model, "--prompts", str(prompts / "neutral.txt"), "--seconds", str(cfg.seconds),
               "--seed", "0", "--vector", str(out / "vectors" / "tempo"), "--lam", str(lam),
               "--strategy", "one-to-all", "--layer", str(layer), "--out", str(d)])
        _step(f"measure {tag}",
              ["measure", "--audio", str(d), "--metrics", "bpm,onset_rate,centroid,loudness",
               "--out", str(out / "steer" / f"{tag}.json")])
        runs[tag] = (lam, d, json.loads((out / "steer" / f"{tag}.json").read_text()))

    _write_index(out, model, runs)
    print(f"\nDone. Open {out / 'index.html'} in a browser (features catalogue: {out / 'features'}).")
    return 0


def _mean_metric(report: dict, name: str) -> float | None:
    """Mean of a metric over clips from a `musiclens measure` report (tolerant of its layout)."""
    report = report.get("audio", report)
    summary = report.get("summary") or {}
    if name in summary:
        s = summary[name]
        return s.get("mean") if isinstance(s, dict) else s
    clips = report.get("clips") or []
    vals = [c[name] for c in clips if isinstance(c, dict) and isinstance(c.get(name), (int, float))]
    return sum(vals) / len(vals) if vals else None


def _write_index(out: Path, model: str, runs: dict) -> None:
    from ..io import write_text

    rows, players = [], []
    for tag, (lam, d, rep) in runs.items():
        vals = [_mean_metric(rep, k) for k in ("onset_rate", "bpm", "centroid", "loudness")]
        cells = "".join(f"<td>{v:.2f}</td>" if isinstance(v, (int, float)) else "<td>–</td>" for v in vals)
        rows.append(f"<tr><td>{html.escape(tag)}</td><td>{lam:+g}</td>{cells}</tr>")
        for wav in sorted(d.glob("*.wav")):
            rel = wav.relative_to(out)
            players.append(f"<div><b>{html.escape(tag)}</b> {html.escape(wav.stem)}<br>"
                           f"<audio controls preload=none src='{html.escape(str(rel))}'></audio></div>")
    feat = next((f"features/{n}" for n in ("report.html", "index.html") if (out / "features" / n).exists()), None)
    page = f"""<!doctype html><meta charset=utf-8><title>musiclens demo</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.2em .8em}}
div{{display:inline-block;margin:.4em}}</style>
<h1>musiclens demo on <code>{html.escape(model)}</code></h1>
<p>A DiffMean vector (fast minus slow prompts) injected One-to-All into neutral prompts.
Negative λ steers toward the slow set.</p>
<table border=1><tr><th>run</th><th>λ</th><th>onset rate (/s)</th><th>BPM</th><th>centroid (Hz)</th><th>loudness (dB)</th></tr>
{''.join(rows)}</table>
<h2>Listen</h2>{''.join(players)}
{f"<h2>Concept catalogue</h2><p><a href='{feat}'>SAE features: statistics, top clips, labels</a></p>" if feat else ""}
"""
    write_text(out / "index.html", page)
