"""`musiclens features`: store + SAEs -> statistics, filtering, catalogue, top clips, report.

Output directory (built under a temporary name and renamed when complete)::

    config.json            the FeaturesConfig that was run
    saes.json              name, path, layer, expansion, k of every SAE
    summary.json           valid features per (layer, expansion, k), and the rules used
    stats/<sae>.npz        the raw per-feature statistics (FeatureStats)
    catalogue.parquet      one row per feature of every SAE (all statuses)
    catalogue.json         the valid features only (same columns)
    clips/<sae>/<j>/       top<r>.wav (firing span of the r-th track) and concat.wav
    clips.json             clip table used (index -> id, path, caption)
    report.html + plots/   the static report (see musiclens.report)

The checkpoint of the streaming pass lives next to the output
(`.<name>.features-ckpt.pt`) so that `--resume` survives a killed run; it is
deleted once the output is complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import option, save_config
from ..errors import MusiclensError
from ..io import atomic_dir, write_json
from .filtering import FilterRule, classify, summary_row
from .stats import FeatureStats, FiringRule


@dataclass
class FeaturesConfig:
    """Options of `musiclens features`."""

    sae: list[str] = option(help="SAE directories (SAELens layout), comma-separated")
    out: str = option(help="output directory")
    store: Optional[str] = option(None, help="activation store directory (or use --audio)")
    audio: Optional[str] = option(None, help="instead of a store: audio folder / list, activations extracted on "
                                            "the fly (nothing stored)")
    model: Optional[str] = option(None, help="with --audio: the model (default: the SAEs' model_name, else organism)")
    seconds: float = option(10.0, help="with --audio: clip length (audio is cut to it)", gt=0)
    extract_batch: int = option(8, help="with --audio: clips per model forward pass", ge=1)
    top_n: int = option(10, help="top tracks kept per feature", ge=1)
    threshold: float = option(0.0, help="a frame fires when the activation exceeds this", ge=0)
    min_frames: int = option(1, help="a track fires when at least this many frames fire ...", ge=1)
    min_fraction: float = option(0.0, help="... and at least this fraction of its frames fire", ge=0, le=1)
    span_gap: int = option(5, help="non-firing frames that do not break a firing span", ge=0)
    min_rate: float = option(0.01, help="filtering: features firing in fewer tracks are too rare", ge=0, le=1)
    max_rate: float = option(0.25, help="filtering: features firing in more tracks are too common", ge=0, le=1)
    clips: bool = option(True, help="write top clips (audio) for valid features")
    max_clip_features: int = option(64, help="features per SAE that get top clips (a seeded random sample of the "
                                              "valid ones; 0 = all valid)", ge=0)
    min_seconds: float = option(1.0, help="top clips are padded to at least this length around the peak", ge=0)
    max_seconds: float = option(4.0, help="top clips are cut to at most this length around the peak", gt=0)
    audio_root: Optional[str] = option(None, help="folder that the clip table's relative audio paths are under "
                                                  "(default: from the store's metadata)")
    frame_rate: Optional[float] = option(None, help="activation frames per second (default: the store's model)", gt=0)
    batch_size: int = option(4096, help="rows per SAE encode call", ge=1)
    rows_per_chunk: int = option(4096, help="rows read from the store at once (whole clips); the dense latents "
                                            "of a chunk take rows x d_sae x 4 bytes", ge=1)
    checkpoint_every: int = option(2000, help="clips between resume checkpoints", ge=1)
    device: str = option("cpu", help="torch device for encoding")
    seed: int = option(0, help="seed for choosing which features get clips")
    layer_prediction: bool = option(True, help="train an MLP to predict each feature's layer from its decoder "
                                               "vector (needs SAEs at two or more layers)")
    report: bool = option(True, help="write report.html")
    resume: bool = option(False, help="continue an interrupted run from its checkpoint")
    overwrite: bool = option(False, help="replace an existing output directory")


def _store_frame_rate(store, override: float | None) -> float:
    if override:
        return float(override)
    for key in ("frame_rate", "frames_per_second"):
        if store.meta.get(key):
            return float(store.meta[key])
    try:
        from .. import load_model

        return float(load_model(store.model_name).frame_rate)
    except MusiclensError:
        raise
    except Exception as e:
        raise MusiclensError(f"cannot tell the store's frame rate (model {store.model_name!r}: {e}); "
                             "pass --frame-rate")


def audio_resolver(store, audio_root: str | None):
    """clip index -> source audio path (or None), trying the usual roots for relative paths."""
    roots = []
    if audio_root:
        roots.append(Path(audio_root))
    for key in ("audio_root", "corpus", "input", "audio_dir", "source_dir"):
        v = store.meta.get(key)
        if isinstance(v, str) and v:
            roots.append(Path(v))
    roots += [store.path, store.path.parent, Path.cwd()]

    def resolve(index: int) -> Path | None:
        meta = store.clip_info(index).get("meta", {})
        cands = [Path(str(meta[k])) for k in ("source", "path", "audio") if meta.get(k)]
        if not cands:
            return None
        for p in cands:
            if p.is_absolute():
                if p.exists():
                    return p
                continue
            for r in roots:
                if (r / p).exists():
                    return r / p
        p = cands[0]
        return p if p.is_absolute() else roots[0] / p
    return resolve


def catalogue_rows(sae, stats: FeatureStats, status: np.ndarray, frame_rate: float, clip_ids: dict[int, str],
                   clip_files: dict[int, dict]) -> list[dict]:
    """One catalogue row per feature."""
    rate, frate, mean = stats.activation_rate, stats.frame_rate, stats.mean_active
    rows = []
    for j in range(stats.d_sae):
        n = int((stats.top_clip[j] >= 0).sum())
        tc = stats.top_clip[j, :n]
        files = clip_files.get(j, {})
        rows.append({
            "sae": sae.name, "layer": sae.layer, "expansion": sae.expansion, "k": sae.k,
            "architecture": sae.architecture, "feature": j, "status": str(status[j]),
            "activation_rate": float(rate[j]), "frame_rate": float(frate[j]),
            "max_act": float(stats.max_act[j]), "mean_active": float(mean[j]),
            "track_count": int(stats.track_count[j]), "frame_count": int(stats.frame_count[j]),
            "top_clips": [int(c) for c in tc], "top_ids": [clip_ids.get(int(c), str(c)) for c in tc],
            "top_scores": [float(x) for x in stats.top_score[j, :n]],
            "top_start_s": [float(x) / frame_rate for x in stats.top_start[j, :n]],
            "top_end_s": [float(x + 1) / frame_rate for x in stats.top_end[j, :n]],
            "top_peak_s": [float(x + 0.5) / frame_rate for x in stats.top_peak[j, :n]],
            "clip_dir": files.get("dir"), "clip_files": files.get("clips", []), "concat": files.get("concat"),
        })
    return rows


def choose_clip_features(status: np.ndarray, limit: int, seed: int) -> list[int]:
    valid = np.nonzero(status == "valid")[0]
    if limit and len(valid) > limit:
        valid = np.sort(np.random.default_rng(seed).choice(valid, size=limit, replace=False))
    return [int(j) for j in valid]


def write_catalogue(out: Path, rows: list[dict]) -> None:
    import pandas as pd

    from ..io import atomic_path

    df = pd.DataFrame(rows)
    with atomic_path(out / "catalogue.parquet", suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    write_json(out / "catalogue.json", [r for r in rows if r["status"] == "valid"])


def read_catalogue(features_dir: str | Path):
    import pandas as pd

    p = Path(features_dir) / "catalogue.parquet"
    if not p.exists():
        raise MusiclensError(f"{features_dir} is not a `musiclens features` output (no catalogue.parquet)")
    return pd.read_parquet(p)


def run_features(cfg: FeaturesConfig) -> dict:
    """Run the whole stage; returns the summary dict."""
    from ..store import ActivationStore
    from .scan import load_saes, scan_store
    from .topclips import AudioCache, specs_for_feature, write_feature_clips

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite and not cfg.resume:
        raise MusiclensError(f"output exists: {out} (pass --overwrite to replace it)")
    if not cfg.sae:
        raise MusiclensError("pass at least one --sae")
    if (cfg.store is None) == (cfg.audio is None):
        raise MusiclensError("pass exactly one of --store and --audio")
    if cfg.min_seconds > cfg.max_seconds:
        raise MusiclensError(f"--min-seconds {cfg.min_seconds:g} is above --max-seconds {cfg.max_seconds:g}")
    if cfg.min_rate > cfg.max_rate:
        raise MusiclensError(f"--min-rate {cfg.min_rate:g} is above --max-rate {cfg.max_rate:g}")
    if cfg.audio_root and not Path(cfg.audio_root).is_dir():
        raise MusiclensError(f"--audio-root folder not found: {cfg.audio_root}")
    rule = FiringRule(cfg.threshold, cfg.min_frames, cfg.min_fraction, cfg.span_gap)
    frule = FilterRule(cfg.min_rate, cfg.max_rate)
    saes = load_saes(cfg.sae)
    if cfg.store is not None:
        store = ActivationStore(cfg.store)
        if not store.clips:
            raise MusiclensError(f"store {cfg.store} holds no clips")
    else:
        from .. import load_model
        from .audio_source import AudioActivations

        name = cfg.model or next((s.extra.get("model_name") for s in saes if s.extra.get("model_name")), "organism")
        store = AudioActivations(cfg.audio, load_model(name, device=cfg.device), sorted({s.layer for s in saes}),
                                 seconds=cfg.seconds, batch_size=cfg.extract_batch)
    frame_rate = _store_frame_rate(store, cfg.frame_rate)
    ckpt = out.parent / f".{out.name}.features-ckpt.pt"
    t_scan, c_scan = time.time(), time.process_time()
    all_stats = scan_store(store, saes, rule, top_n=cfg.top_n, rows_per_chunk=cfg.rows_per_chunk,
                           batch_size=cfg.batch_size, checkpoint=ckpt, checkpoint_every=cfg.checkpoint_every,
                           resume=cfg.resume, device=cfg.device)
    t_scan, c_scan = time.time() - t_scan, time.process_time() - c_scan
    t_clips = time.time()

    clip_ids = {int(c["index"]): str(c["id"]) for c in store.clips}
    durations = {int(c["index"]): float(c.get("meta", {}).get("orig_seconds") or
                                         c.get("meta", {}).get("n_frames", c["rows"]) / frame_rate)
                 for c in store.clips}
    resolve = audio_resolver(store, cfg.audio_root)
    summary_rows, catalogue, sae_table = [], [], []
    with atomic_dir(out, overwrite=True) as tmp:
        save_config(cfg, tmp / "config.json")
        audio = AudioCache(resolve)
        missing_audio = 0
        for s in saes:
            st = all_stats[s.name]
            st.save(tmp / "stats" / f"{s.name}.npz")
            status = classify(st.activation_rate, frule)
            summary_rows.append(summary_row(status, sae=s.name, layer=s.layer, expansion=s.expansion, k=s.k,
                                            architecture=s.architecture))
            files: dict[int, dict] = {}
            if cfg.clips:
                from tqdm import tqdm

                for j in tqdm(choose_clip_features(status, cfg.max_clip_features, cfg.seed), desc=f"clips {s.name}",
                              unit="feature", disable=None):
                    specs = specs_for_feature(st, j, frame_rate, durations, cfg.min_seconds, cfg.max_seconds)
                    rel = Path("clips") / s.name / str(j)
                    try:
                        res = write_feature_clips(tmp / rel, specs, audio)
                    except MusiclensError:
                        missing_audio += 1
                        continue
                    files[j] = {"dir": str(rel), "clips": res["clips"], "concat": res["concat"]}
                if missing_audio and not any(files.values()) and cfg.clips:
                    raise MusiclensError(f"no source audio found for the store's clips (e.g. "
                                         f"{resolve(store.clips[0]['index'])}); pass --audio-root or --no-clips")
            catalogue += catalogue_rows(s, st, status, frame_rate, clip_ids, files)
            sae_table.append({"name": s.name, "path": str(s.path), "layer": s.layer, "d_in": s.d_in, "d_sae": s.d_sae,
                              "expansion": s.expansion, "k": s.k, "architecture": s.architecture})
        write_json(tmp / "saes.json", sae_table)
        write_json(tmp / "clips.json", [{"index": int(c["index"]), "id": str(c["id"]),
                                         "path": str(resolve(int(c["index"])) or ""),
                                         "caption": c.get("meta", {}).get("caption", "")} for c in store.clips])
        summary = {"store": str(cfg.store or cfg.audio), "model": store.model_name, "tracks": len(store.clips),
                   "frames": int(store.rows), "frame_rate": frame_rate,
                   "firing_rule": {"threshold": rule.threshold, "min_frames": rule.min_frames,
                                   "min_fraction": rule.min_fraction, "span_gap": rule.span_gap},
                   "filter": {"min_rate": frule.min_rate, "max_rate": frule.max_rate},
                   "table": summary_rows, "features_without_audio": missing_audio,
                   "timings": {"scan_seconds": round(t_scan, 2),
                               "scan_seconds_per_1000_tracks": round(1000 * t_scan / len(store.clips), 2),
                               "scan_cpu_seconds": round(c_scan, 2),
                               "scan_cpu_seconds_per_1000_tracks": round(1000 * c_scan / len(store.clips), 2),
                               "clips_seconds": round(time.time() - t_clips, 2),
                               "resumed": bool(cfg.resume)}}
        if cfg.layer_prediction and len({s.layer for s in saes}) >= 2:
            from .layerpred import layer_prediction

            try:
                summary["layer_prediction"] = layer_prediction(
                    [(s.layer, s.W_dec.detach().float().cpu().numpy()) for s in saes], seed=cfg.seed)
            except MusiclensError as e:
                summary["layer_prediction"] = {"error": str(e)}
        write_json(tmp / "summary.json", summary)
        write_catalogue(tmp, catalogue)
        if cfg.report:
            from ..report.html import build_report

            build_report(tmp)
    ckpt.unlink(missing_ok=True)
    return summary


def load_summary(features_dir: str | Path) -> dict:
    p = Path(features_dir) / "summary.json"
    if not p.exists():
        raise MusiclensError(f"{features_dir} is not a `musiclens features` output (no summary.json)")
    return json.loads(p.read_text())
