"""`render_corpus`: plan every clip, render the missing ones in parallel, write metadata last.

Resumable by construction: a clip's plan depends only on (seed, index, piece
pool), each wav is written atomically, and a rerun with `resume=True` skips
clips whose wav exists. `metadata.jsonl` is written (atomically) only once
every clip is rendered, so its presence means the corpus is complete.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from ..config import check_values, load_config, option, save_config, to_dict
from ..errors import MusiclensError
from ..io import atomic_path, write_text
from .captions import caption
from .factors import assign_splits, sample_clip
from .sources import default_cache_dir, load_pool
from .synth import DEFAULT_SOUNDFONT, Renderer, clip_notes


@dataclasses.dataclass
class CorpusConfig:
    """Options of `musiclens corpus render` (saved as DIR/config.json)."""

    out: str = option(help="output corpus directory")
    clips: int = option(1000, help="number of clips to render", ge=1)
    seed: int = option(0, help="random seed (clip i is the same for any --clips)")
    seconds: float = option(10.0, help="clip length in seconds", ge=1, le=60)
    sample_rate: int = option(16000, help="sample rate in Hz (16 kHz: the concepts live below 8 kHz)",
                              choices=[16000, 22050, 24000, 32000, 44100, 48000])
    pieces: int = option(600, help="number of source melodies (music21 chorales + Essen folksongs; one split each at least)",
                         ge=3)
    soundfont: str = option(DEFAULT_SOUNDFONT, help="General MIDI soundfont (.sf2)")
    workers: int = option(2, help="rendering processes", ge=1)
    cache_dir: str = option("", help="parsed-score cache (default: $MUSICLENS_CACHE/scores or ~/.cache/musiclens/scores)")
    resume: bool = option(False, help="continue an interrupted render in --out")
    overwrite: bool = option(False, help="replace an existing corpus in --out")


# fields that may change between a run and its resumption
_RUNTIME_FIELDS = {"out", "clips", "workers", "cache_dir", "resume", "overwrite"}


def clip_id(index: int) -> str:
    return f"{index:06d}"


def _check_config(cfg: CorpusConfig) -> None:
    check_values(cfg)  # the options' bounds and choices (render_corpus is also called from Python)
    if not Path(cfg.soundfont).is_file():
        raise MusiclensError(f"soundfont not found: {cfg.soundfont} (Debian: apt-get install fluid-soundfont-gm)")
    with open(cfg.soundfont, "rb") as f:  # RIFF....sfbk: FluidSynth would fail only inside a worker
        head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise MusiclensError(f"not a SoundFont 2 file: {cfg.soundfont}")
    try:
        import fluidsynth  # noqa: F401
    except ImportError as e:
        raise MusiclensError(f"FluidSynth is not usable ({e}); install libfluidsynth3 and pyfluidsynth")


def _prepare_out(cfg: CorpusConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise MusiclensError(f"--out exists and is not a directory: {out}")
    existing = out / "config.json"
    if out.exists() and any(out.iterdir()):
        if cfg.overwrite:
            import shutil

            if not existing.exists():
                raise MusiclensError(f"refusing to overwrite {out}: it is not a musiclens corpus")
            shutil.rmtree(out)
        elif cfg.resume:
            if not existing.exists():
                raise MusiclensError(f"cannot resume: {existing} is missing")
            old = to_dict(load_config(CorpusConfig, existing))
            new = to_dict(cfg)
            diff = [k for k in new if k not in _RUNTIME_FIELDS and old.get(k) != new[k]]
            if diff:
                raise MusiclensError(f"cannot resume {out}: options differ from the original run: {', '.join(diff)}")
        else:
            raise MusiclensError(f"{out} already exists and is not empty (use --resume or --overwrite)")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    save_config(cfg, existing)
    return out


_WORKER: dict = {}


def _init_worker(sample_rate: int, soundfont: str, pieces: dict) -> None:
    _WORKER["renderer"] = Renderer(sample_rate, soundfont)
    _WORKER["pieces"] = pieces


def _render_one(job: tuple[dict, str]) -> tuple[str, float]:
    plan, path = job
    import soundfile as sf

    y = _WORKER["renderer"].render(plan, _WORKER["pieces"][plan["source"]])
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), y, _WORKER["renderer"].sr, subtype="PCM_16")
    return path, float(np.abs(y).max())


def plan_corpus(cfg: CorpusConfig, pieces: list | None = None) -> tuple[list[dict], dict]:
    """Every clip's metadata record (without rendering) and the piece table."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    if pieces is None:
        pieces = load_pool(cfg.pieces, cache, workers=cfg.workers)
    if len(pieces) < 3:
        raise MusiclensError(f"only {len(pieces)} usable source pieces found in music21's corpus")
    splits = assign_splits(pieces)
    by_source = {p.source: p for p in pieces}
    records = []
    for i in range(cfg.clips):
        plan = sample_clip(i, cfg.seed, pieces, cfg.seconds)
        piece = by_source[plan["source"]]
        notes = clip_notes(plan, piece)
        cid = clip_id(i)
        rec = {
            "id": cid, "path": f"audio/{cid}.wav", "split": splits[plan["source"]], "source": plan["source"],
            "seconds": cfg.seconds, "sample_rate": cfg.sample_rate,
            "instrument": plan["instrument"], "program": plan["program"], "bpm": plan["bpm"],
            "register": plan["register"], "octave_shift": plan["octave_shift"],
            "dynamics": plan["dynamics"], "velocity": plan["velocity"], "drums": plan["drums"],
            "mode": plan["mode"], "brightness": plan["brightness"], "caption": caption(plan),
            # extra ground truth for validating estimators
            "collection": plan["collection"], "key": plan["key"], "start_note": plan["start_note"],
            "n_notes": len(notes), "note_rate": round(len(notes) / cfg.seconds, 3),
            "median_midi": float(np.median([n[2] for n in notes])) if notes else None,
        }
        records.append((rec, plan))
    return records, by_source


def render_corpus(cfg: CorpusConfig, progress: bool = True) -> dict:
    """Render the corpus described by `cfg`; returns a summary with render speed."""
    from tqdm import tqdm

    _check_config(cfg)
    out = _prepare_out(cfg)
    t0 = time.time()
    records, by_source = plan_corpus(cfg)
    t_plan = time.time() - t0
    jobs = [(plan, str(out / rec["path"])) for rec, plan in records if not (out / rec["path"]).exists()]
    t1 = time.time()
    peaks = []
    if jobs:
        args = (cfg.sample_rate, cfg.soundfont, by_source)
        bar = tqdm(total=len(jobs), desc="render", unit="clip", disable=None if progress else True)
        if cfg.workers > 1 and len(jobs) > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(min(cfg.workers, len(jobs)), initializer=_init_worker,
                                              initargs=args) as pool:
                for _, peak in pool.imap_unordered(_render_one, jobs, chunksize=4):
                    peaks.append(peak)
                    bar.update(1)
        else:
            _init_worker(*args)
            for job in jobs:
                peaks.append(_render_one(job)[1])
                bar.update(1)
        bar.close()
    t_render = time.time() - t1
    lines = "".join(json.dumps(rec) + "\n" for rec, _ in records)
    write_text(out / "metadata.jsonl", lines)
    n = len(jobs)
    return {
        "clips": len(records), "rendered": n, "skipped": len(records) - n,
        "plan_s": round(t_plan, 2), "render_s": round(t_render, 2),
        "clips_per_s": round(n / t_render, 3) if n and t_render > 0 else None,
        "audio_s_per_s": round(n * cfg.seconds / t_render, 2) if n and t_render > 0 else None,
        "peak_max": round(max(peaks), 4) if peaks else None,
        "limited_share": round(float(np.mean([p > 0.89 for p in peaks])), 4) if peaks else None,
    }


REQUIRED_KEYS = ("id", "path", "split", "caption")


def load_metadata(corpus_dir: str | Path) -> list[dict]:
    """The clip records of a rendered corpus (`DIR/metadata.jsonl`), in id order."""
    d = Path(corpus_dir)
    meta = d / "metadata.jsonl"
    if not d.is_dir():
        raise MusiclensError(f"corpus directory not found: {d}")
    if not meta.exists():
        if (d / "config.json").exists():
            raise MusiclensError(f"corpus {d} is incomplete (no metadata.jsonl): run `musiclens corpus render --resume`")
        raise MusiclensError(f"not a musiclens corpus (no metadata.jsonl): {d}")
    out = []
    try:
        text = meta.read_text()
    except UnicodeDecodeError:
        raise MusiclensError(f"{meta} is not a text file")
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise MusiclensError(f"{meta}:{i + 1}: invalid JSON: {e}")
        missing = [k for k in REQUIRED_KEYS if not isinstance(rec, dict) or k not in rec]
        if missing:  # every reader indexes these; say so here rather than with a KeyError there
            raise MusiclensError(f"{meta}:{i + 1}: a clip record without {', '.join(missing)}")
        out.append(rec)
    return out
