"""Static, offline HTML report of a `musiclens features` directory.

Why plain HTML: a researcher should be able to open the catalogue in any
browser, with no server and no network. Audio players point at the WAV files
of the top clips (relative paths), plots are PNGs in `plots/`, and every
number shown comes from summary.json / catalogue.parquet / annotations.json /
benchmark.json in the same directory.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from ..io import write_text
from . import plots

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.lab{display:inline-block;background:#e8f0fb;border-radius:4px;padding:1px 5px;margin:1px;font-size:12px}
.unl{color:#999;font-size:12px}details{margin:2px 0}audio{height:28px;vertical-align:middle}
h2{border-bottom:1px solid #ddd;padding-bottom:3px}.small{font-size:12px;color:#555}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _num(x, fmt="{:.3g}") -> str:
    try:
        return fmt.format(float(x))
    except (TypeError, ValueError):
        return _e(x)


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cls = ' class="num"' if isinstance(v, (int, float, np.integer, np.floating)) else ""
            cells.append(f"<td{cls}>{_num(v) if isinstance(v, float) else '' if v is None else _e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _labels_html(ann: dict | None) -> str:
    if not ann:
        return '<span class="unl">not annotated</span>'
    out = []
    for strategy, a in sorted(ann.items()):
        if a.get("label"):
            title = _e(a.get("provenance", "")) + (" | " + _e(a["description"]) if a.get("description") else "")
            out.append(f'<span class="lab" title="{title}">{_e(strategy)}: <b>{_e(a["label"])}</b> '
                       f'({_num(a.get("confidence", float("nan")), "{:.2f}")})</span>')
        else:
            out.append(f'<span class="unl">{_e(strategy)}: unlabelled ({_e(a.get("error", ""))[:60]})</span>')
    return " ".join(out)


def build_report(features_dir: str | Path, max_features: int = 300) -> Path:
    """Write `report.html` (and `plots/`) into a features directory; returns the HTML path."""
    import pandas as pd

    d = Path(features_dir)
    summary = json.loads((d / "summary.json").read_text())
    cat = pd.read_parquet(d / "catalogue.parquet")
    ann_path = d / "annotations.json"
    annotations = json.loads(ann_path.read_text()) if ann_path.exists() else {}
    bench_path = d / "benchmark.json"
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else None
    clips_path = d / "clips.json"
    captions = {c["index"]: c.get("caption", "") for c in json.loads(clips_path.read_text())} if clips_path.exists() else {}

    rates = {name: g["activation_rate"].to_numpy() for name, g in cat.groupby("sae", sort=False)}
    plots.density_plot(d / "plots" / "density.png", rates, summary["filter"]["min_rate"], summary["filter"]["max_rate"])

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>musiclens features</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>musiclens feature catalogue</h1>",
             f"<p class='small'>store {_e(summary['store'])} &middot; model {_e(summary['model'])} &middot; "
             f"{summary['tracks']} tracks, {summary['frames']} frames at {_num(summary['frame_rate'])} frames/s "
             f"&middot; a track fires when &ge; {summary['firing_rule']['min_frames']} frames "
             f"(and &ge; {summary['firing_rule']['min_fraction']:.0%} of frames) exceed "
             f"{summary['firing_rule']['threshold']} &middot; valid: {summary['filter']['min_rate']} &le; r &le; "
             f"{summary['filter']['max_rate']}</p>",
             "<h2>Valid features per SAE</h2>",
             _table(summary["table"], ["sae", "layer", "expansion", "k", "features", "dead", "too_rare",
                                       "too_common", "valid", "valid_share"]),
             "<h2>Feature density</h2><img src='plots/density.png' alt='density'>"]
    lp = summary.get("layer_prediction")
    if lp and "accuracy" in lp:
        parts.append(f"<h2>Layer prediction</h2><p>An MLP predicts a feature's layer from its decoder vector with "
                     f"accuracy {lp['accuracy']:.3f} on {lp['test']} held-out features (chance {lp['chance']:.3f}, "
                     f"layers {_e(lp['layers'])}).</p>")
    if annotations.get("summary"):
        parts.append("<h2>Annotation</h2>")
        parts.append(_table(annotations["summary"], ["strategy", "features", "labelled", "provenance"]))
    if bench:
        parts.append(_bench_html(d, bench))

    ann_by = annotations.get("features", {})
    for name, g in cat.groupby("sae", sort=False):
        g = g[g["status"] == "valid"]
        with_clips = g[g["concat"].notna()]
        shown = with_clips if len(with_clips) else g
        shown = shown.head(max_features)
        parts.append(f"<h2>{_e(name)}: {len(g)} valid features ({len(shown)} shown)</h2>")
        parts.append("<table><tr><th>feature</th><th>rate</th><th>max</th><th>mean active</th>"
                     "<th>labels</th><th>top 10 (concatenated)</th><th>top tracks</th></tr>")
        for _, r in shown.iterrows():
            key = f"{name}/{int(r['feature'])}"
            a = ann_by.get(key)
            audio = ""
            if r["concat"]:
                audio = f"<audio controls preload='none' src='{_e(r['clip_dir'])}/{_e(r['concat'])}'></audio>"
            tops = []
            files = list(r["clip_files"]) if r["clip_files"] is not None else []
            for i, c in enumerate(list(r["top_clips"])):
                span = f"{r['top_start_s'][i]:.2f}-{r['top_end_s'][i]:.2f}s"
                player = (f"<audio controls preload='none' src='{_e(r['clip_dir'])}/{_e(files[i])}'></audio>"
                          if i < len(files) and r["clip_dir"] else "")
                tops.append(f"<div>{i + 1}. {_e(r['top_ids'][i])} [{span}] act {_num(r['top_scores'][i])} "
                            f"{player} <span class='small'>{_e(captions.get(int(c), ''))}</span></div>")
            parts.append(
                f"<tr><td>{int(r['feature'])}</td><td class='num'>{_num(r['activation_rate'])}</td>"
                f"<td class='num'>{_num(r['max_act'])}</td><td class='num'>{_num(r['mean_active'])}</td>"
                f"<td>{_labels_html(a)}</td><td>{audio}</td>"
                f"<td><details><summary>{len(tops)} tracks</summary>{''.join(tops)}</details></td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    out = d / "report.html"
    write_text(out, "\n".join(parts))
    return out


def _bench_html(d: Path, bench: dict) -> str:
    parts = ["<h2>Ground-truth benchmark</h2>",
             f"<p class='small'>{_e(bench.get('description', ''))}</p>"]
    if bench.get("recovery"):
        plots.recovery_plot(d / "plots" / "recovery.png", bench["recovery"])
        parts.append("<img src='plots/recovery.png' alt='layer-wise recovery'>")
        parts.append(_table(bench["recovery"], ["method", "layer", "expansion", "k", "recovered",
                                                 "mean_auroc", "probe_accuracy"]))
    if bench.get("concepts"):
        parts.append("<details><summary>per concept</summary>")
        parts.append(_table(bench["concepts"], ["method", "layer", "concept", "auroc", "feature"]))
        parts.append("</details>")
    if bench.get("label_precision"):
        parts.append("<h3>Label precision of annotation strategies</h3>")
        parts.append("<p class='small'>matched: held-out AUROC of a named value at least the threshold. Shares: "
                     "clips carrying a named value among the feature's top held-out clips, and among the top clips "
                     "the annotator heard, each next to its base rate.</p>")
        parts.append(_table(bench["label_precision"], ["strategy", "labelled", "matched", "precision",
                                                        "heldout_top_share", "heldout_base_rate", "source_share",
                                                        "source_base_rate"]))
    fa = bench.get("filter_audit")
    if fa:
        parts.append("<h3>Does the filter keep the features that detect concepts?</h3>")
        parts.append(f"<p class='small'>best single feature per concept value; filter {_e(str(fa['filter']))}</p>")
        parts.append(_table(fa["best"], ["concept", "sae", "feature", "auroc", "track_rate", "status"]))
    return "".join(parts)
