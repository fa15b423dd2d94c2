"""`musiclens measure`: tempo, centroid, RMS, pitch, tagger labels, CLAP and FAD of a folder of clips.

    musiclens measure --audio steered/ --reference baseline/ --out steered.json

Per clip and as mean ± std per metric; with `--reference`, the same for the
reference folder, the relative change of each mean, and the FAD between the
two sets (embedder recorded). See `musiclens.steer.metrics` for the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import add_arguments, from_args, option
from ..errors import MusiclensError


@dataclass
class MeasureConfig:
    audio: str = option(help="folder of audio clips to measure")
    out: str = option(help="output JSON file")
    reference: str | None = option(None, help="reference folder: relative change of each metric and FAD vs it")
    metrics: list[str] = option(default_factory=lambda: ["bpm", "onset_rate", "centroid", "loudness", "pitch"],
                                help="metrics (bpm, bpm_raw, onset_rate, pulse_clarity, centroid, loudness, pitch, beat_this_bpm, "
                                     "clap:<text>, tag:<head>=<label>); unavailable default ones are skipped")
    clap_text: list[str] = option(default_factory=list, help="texts to score with CLAP (adds clap:<text> metrics)")
    clap: str | None = option(None, help="CLAP model: local HF ClapModel folder (default: the shipped mini-CLAP)")
    tags: bool = option(True, help="report the tagger's label counts (skipped when no tagger is available)")
    tagger: str | None = option(None, help="tagger checkpoint (default: the shipped one)")
    embedder: str = option("auto", help="FAD embedding: auto (tagger if available, else mel), tagger, clap, mel",
                           choices=["auto", "tagger", "clap", "mel"])
    beat_this: str | None = option(None, help="local Beat This! checkpoint (adds beat_this_bpm; needs `pip install beat_this`)")
    sample_rate: int | None = option(None, help="resample clips to this rate before measuring (default: file rate)", ge=4000)
    overwrite: bool = option(False, help="replace an existing output file")


def measure_folder(folder: str, cfg: MeasureConfig, ctx, metrics: list[str], explicit: set[str]) -> tuple:
    """(result dict, clips, sample rate) for one folder."""
    from ..steer.generation import list_audio, read_audio
    from ..steer.metrics import measure_clips, summary, tag_labels

    files = list_audio(folder)
    ys, srs = [], set()
    for f in files:
        y, sr = read_audio(f, cfg.sample_rate)
        ys.append(y)
        srs.add(sr)
    if len(srs) != 1:
        raise MusiclensError(f"{folder}: clips have different sample rates {sorted(srs)}; pass --sample-rate")
    sr = srs.pop()
    vals, skipped = measure_clips(ys, sr, metrics, ctx, skip_unavailable=True)
    bad = [m for m in skipped if m in explicit]
    if bad:
        raise MusiclensError(f"metric {bad[0]} unavailable: {skipped[bad[0]]}")
    per_clip = [{"file": f.name, **{m: float(v[i]) for m, v in vals.items()}} for i, f in enumerate(files)]
    res = {"folder": str(folder), "n": len(files), "sample_rate": sr,
           "summary": {m: summary(v) for m, v in vals.items()}, "per_clip": per_clip, "skipped": skipped}
    if cfg.tags:
        try:
            res["tags"] = tag_labels(ys, sr, ctx)
        except MusiclensError as e:
            res["skipped"]["tags"] = str(e)
    return res, ys, sr


def run(cfg: MeasureConfig) -> dict:
    import math

    from ..io import write_json
    from ..measure.fad import embed_set, fad, load_embedder
    from ..steer.metrics import BASIC, MeasureContext, check_metric, relative_change

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (use --overwrite)")
    metrics = list(dict.fromkeys(list(cfg.metrics) + [f"clap:{t}" for t in cfg.clap_text]
                                 + (["beat_this_bpm"] if cfg.beat_this else [])))
    if not metrics and not cfg.tags:
        raise MusiclensError("nothing to measure: give --metrics, --clap-text, --beat-this or --tags")
    for m in metrics:
        check_metric(m)
    if cfg.tagger and not Path(cfg.tagger).exists():  # a named tagger that is missing must not be skipped quietly
        raise MusiclensError(f"tagger folder not found: {cfg.tagger}")
    explicit = {m for m in metrics if m not in BASIC}
    ctx = MeasureContext(clap_path=cfg.clap, tagger_path=cfg.tagger, beat_this=cfg.beat_this)
    res, ys, sr = measure_folder(cfg.audio, cfg, ctx, metrics, explicit)
    result = {"audio": res}
    if cfg.reference:
        ref, ys_ref, sr_ref = measure_folder(cfg.reference, cfg, ctx, metrics, explicit)
        result["reference"] = ref
        result["relative_change"] = {m: relative_change(res["summary"][m]["mean"], ref["summary"][m]["mean"])
                                     for m in res["summary"] if m in ref["summary"]}
        if sr_ref != sr:
            raise MusiclensError(f"--audio is {sr} Hz but --reference is {sr_ref} Hz; pass --sample-rate")
        emb = load_embedder(cfg.embedder, cfg.tagger if cfg.embedder in ("tagger", "auto") else cfg.clap)
        result["fad"] = {"value": fad(embed_set(emb, ys, sr), embed_set(emb, ys_ref, sr)), "embedder": emb.name,
                         "n_audio": len(ys), "n_reference": len(ys_ref)}
    result = _finite(result, math)
    write_json(out, result)
    return result


def _finite(obj, math):
    """NaN/inf -> None so the JSON is standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v, math) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v, math) for v in obj]
    return obj


def _main(args) -> int:
    cfg = from_args(MeasureConfig, args)
    r = run(cfg)
    a = r["audio"]
    parts = [f"{m} {s['mean']:.4g}±{s['std']:.3g}" for m, s in a["summary"].items() if s["mean"] is not None]
    print(f"{a['n']} clips: " + ", ".join(parts))
    if "fad" in r:
        print(f"FAD vs reference ({r['fad']['embedder']}): {r['fad']['value']:.4g}")
    print(f"wrote {cfg.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("measure", help="measure tempo, brightness, loudness, pitch, tags, CLAP and FAD of clips",
                       description="Measure a folder of clips (optionally against a reference folder: relative "
                                   "change per metric and FAD) and write JSON.")
    add_arguments(p, MeasureConfig)
    p.set_defaults(func=_main)
