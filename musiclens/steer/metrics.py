"""What steering experiments and `musiclens measure` measure on a set of clips.

Each metric maps one mono clip to one number (NaN when undefined, e.g. pitch
of an unvoiced clip), computed by the shared estimators in
`musiclens.measure` (nothing is re-implemented here):

    bpm          tempo with octave errors resolved (`measure.tempo`)
    bpm_raw      the raw estimator's BPM (may be doubled/halved)
    onset_rate   onsets per second: tempo without octave ambiguity
    pulse_clarity  how steady the beat is: the onset envelope's strongest
                 recurrence at a 60-180 BPM period (0 = no pulse to read)
    centroid     energy-weighted spectral centroid, Hz (brightness)
    loudness     RMS level, dBFS (dynamics)
    pitch        median CREPE f0 over voiced frames, MIDI number (register)
    clap:<text>  CLAP cosine similarity between the clip and <text>
    tag:<head>=<label>  tagger probability of <label> for head <head>
    beat_this_bpm  Beat This! tempo (needs its package + a local checkpoint)

Tagger labels (the argmax per head) are reported as label counts by
`measure_set`, separately from the numeric metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import MusiclensError

BASIC = ("bpm", "onset_rate", "centroid", "loudness", "pitch")
UNITS = {"bpm": "BPM", "bpm_raw": "BPM", "onset_rate": "1/s", "centroid": "Hz", "loudness": "dBFS",
         "pitch": "MIDI", "beat_this_bpm": "BPM", "pulse_clarity": ""}


@dataclass
class MeasureContext:
    """Lazily loaded heavy measurement models, shared across a whole experiment."""

    clap_path: str | None = None
    tagger_path: str | None = None
    beat_this: str | None = None
    _clap: object = None
    _tagger: object = None
    _beat: object = None

    def clap(self):
        if self._clap is None:
            from ..measure.clap import load_clap

            self._clap = load_clap(self.clap_path)
        return self._clap

    def tagger(self):
        if self._tagger is None:
            try:
                from ..measure.tagger import Tagger
            except ImportError as e:
                raise MusiclensError(f"the tagger is not available ({e})")
            self._tagger = Tagger.load(self.tagger_path) if self.tagger_path else Tagger.load()
        return self._tagger

    def beat_this_model(self):
        if self._beat is None:
            if not self.beat_this:
                raise MusiclensError("beat_this_bpm needs --beat-this CHECKPOINT (a local Beat This! checkpoint)")
            try:
                from beat_this.inference import Audio2Beats
            except ImportError as e:
                raise MusiclensError(f"Beat This! is not installed (pip install beat_this): {e}")
            self._beat = Audio2Beats(checkpoint_path=self.beat_this, device="cpu", dbn=False)
        return self._beat


def _tempo(y, sr) -> dict:
    try:
        from ..measure.tempo import tempo
    except ImportError as e:
        raise MusiclensError(f"the tempo estimator is not available ({e})")
    return tempo(y, sr)


def _scalar(name: str, ctx: MeasureContext) -> Callable[[np.ndarray, int], float]:
    if name == "bpm":
        return lambda y, sr: float(_tempo(y, sr)["bpm"])
    if name == "bpm_raw":
        return lambda y, sr: float(_tempo(y, sr)["bpm_raw"])
    if name == "onset_rate":
        from ..measure.spectral import onset_rate

        return onset_rate
    if name == "pulse_clarity":
        from ..measure.tempo import pulse_clarity

        return lambda y, sr: float(pulse_clarity(y, sr)["clarity"])
    if name == "centroid":
        from ..measure.spectral import centroid

        return centroid
    if name == "loudness":
        from ..measure.spectral import loudness

        return loudness
    if name == "pitch":
        from ..measure.pitch import pitch

        return lambda y, sr: float(pitch(y, sr)["median_midi"])
    if name == "beat_this_bpm":
        def bt(y, sr):
            beats, _ = ctx.beat_this_model()(np.asarray(y, dtype=np.float32), sr)
            beats = np.asarray(beats, dtype=np.float64)
            if len(beats) < 3:
                return float("nan")
            return float(60.0 / np.median(np.diff(beats)))

        return bt
    if name.startswith("tag:"):
        head, _, label = name[4:].partition("=")
        if not head or not label:
            raise MusiclensError(f"metric {name!r}: use tag:<head>=<label>")
        return None      # batched in measure_clips
    raise MusiclensError(f"unknown metric {name!r} (choose {', '.join(BASIC)}, bpm_raw, pulse_clarity, beat_this_bpm, "
                         "clap:<text>, tag:<head>=<label>)")


def check_metric(name: str) -> str:
    """Validate a metric name early (before minutes of generation)."""
    if name.startswith("clap:"):
        if not name[5:].strip():
            raise MusiclensError("metric clap:<text> needs a text")
        return name
    _scalar(name, MeasureContext())
    return name


def measure_clips(ys: Sequence[np.ndarray], sr: int, metrics: Sequence[str], ctx: MeasureContext | None = None,
                  skip_unavailable: bool = False) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """{metric: values [n]} for every clip, plus {metric: reason} for metrics skipped as unavailable."""
    ctx = ctx or MeasureContext()
    out: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    ys = [np.asarray(y, dtype=np.float32) for y in ys]
    clap_texts = [m[5:] for m in metrics if m.startswith("clap:")]
    if clap_texts:
        try:
            from ..measure.clap import clap_similarity

            sim = clap_similarity(ctx.clap(), ys, sr, clap_texts).cpu().numpy()
            for i, t in enumerate(clap_texts):
                out[f"clap:{t}"] = sim[:, i].astype(np.float64)
        except MusiclensError as e:
            if not skip_unavailable:
                raise
            for t in clap_texts:
                skipped[f"clap:{t}"] = str(e)
    tag_metrics = [m for m in metrics if m.startswith("tag:")]
    if tag_metrics:
        try:
            tagger = ctx.tagger()
            probs = tagger.predict_proba(ys, sr)
            for m in tag_metrics:
                head, _, label = m[4:].partition("=")
                if head not in tagger.heads or label not in tagger.heads[head]:
                    raise MusiclensError(f"the tagger has no label {label!r} for head {head!r} "
                                         f"(heads: {', '.join(f'{h}={v}' for h, v in tagger.heads.items())})")
                out[m] = probs[head][:, tagger.heads[head].index(label)].astype(np.float64)
        except MusiclensError as e:
            if not skip_unavailable:
                raise
            for m in tag_metrics:
                skipped[m] = str(e)
    for name in metrics:
        if name.startswith(("clap:", "tag:")):
            continue
        try:
            fn = _scalar(name, ctx)
            vals = []
            for y in ys:
                if y.size == 0 or not np.isfinite(y).all() or float(np.abs(y).max()) == 0.0:
                    vals.append(float("nan"))      # silent/broken clip: undefined, never a crash
                else:
                    vals.append(float(fn(y, sr)))
            out[name] = np.asarray(vals, dtype=np.float64)
        except MusiclensError as e:
            if not skip_unavailable:
                raise
            skipped[name] = str(e)
    return out, skipped


def summary(values: np.ndarray) -> dict:
    """mean ± std over finite values, and how many were finite."""
    v = np.asarray(values, dtype=np.float64)
    f = v[np.isfinite(v)]
    if len(f) == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(f.mean()), "std": float(f.std(ddof=1)) if len(f) > 1 else 0.0, "n": int(len(f))}


def relative_change(steered_mean: float, base_mean: float) -> float:
    """(steered − baseline) / |baseline| (NaN when the baseline is 0 or undefined)."""
    if not (math.isfinite(steered_mean) and math.isfinite(base_mean)) or base_mean == 0:
        return float("nan")
    return (steered_mean - base_mean) / abs(base_mean)


def tag_labels(ys: Sequence[np.ndarray], sr: int, ctx: MeasureContext) -> dict:
    """{head: {label: count}} of the tagger's argmax labels over the clips."""
    tagger = ctx.tagger()
    counts: dict[str, dict[str, int]] = {}
    for pred in tagger.predict_batch([np.asarray(y, dtype=np.float32) for y in ys], sr):
        for head, label in pred.items():
            counts.setdefault(head, {})
            counts[head][str(label)] = counts[head].get(str(label), 0) + 1
    return counts
