"""Top clips: the audio where a feature fires most, cut to its firing span.

Why: a feature is understood by listening. For each selected feature we cut
each of its top-N tracks to the firing span around the peak (padded to at
least `min_seconds`, at most `max_seconds`, centred on the peak), and join
the best ten with short silences: the single file the MusicGen SAE paper
hands to a multimodal LLM for labelling.

Frames become seconds through the model's frame rate (50 frames/s for both
MusicGen and the organism); a frame f covers [f / rate, (f + 1) / rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import write_wav
from ..errors import MusiclensError


@dataclass
class ClipSpec:
    """One top clip: which track and which seconds of it."""

    feature: int
    rank: int
    clip: int
    start_s: float
    end_s: float
    peak_s: float
    score: float


def clip_window(start: int, end: int, peak: int, frame_rate: float, duration: float | None,
                min_seconds: float, max_seconds: float) -> tuple[float, float]:
    """Seconds [a, b) for a firing span [start, end] (frames), padded/capped around the peak."""
    a, b = start / frame_rate, (end + 1) / frame_rate
    p = (peak + 0.5) / frame_rate
    if b - a > max_seconds:
        a = max(a, p - max_seconds / 2)
        b = min(b, a + max_seconds)
        a = b - max_seconds if b - a < max_seconds else a
    if b - a < min_seconds:
        a, b = p - min_seconds / 2, p + min_seconds / 2
    if duration is not None:
        if b > duration:
            a, b = a - (b - duration), duration
        a = max(0.0, a)
        b = min(b, duration) if duration > 0 else b
    return max(0.0, a), b


def specs_for_feature(stats, feature: int, frame_rate: float, durations: dict[int, float] | None = None,
                      min_seconds: float = 1.0, max_seconds: float = 4.0) -> list[ClipSpec]:
    """Clip specs for one feature's top tracks (best first), from `FeatureStats`."""
    out = []
    for r in range(stats.top_clip.shape[1]):
        c = int(stats.top_clip[feature, r])
        if c < 0:
            break
        a, b = clip_window(int(stats.top_start[feature, r]), int(stats.top_end[feature, r]),
                           int(stats.top_peak[feature, r]), frame_rate,
                           (durations or {}).get(c), min_seconds, max_seconds)
        out.append(ClipSpec(feature, r, c, a, b, (int(stats.top_peak[feature, r]) + 0.5) / frame_rate,
                            float(stats.top_score[feature, r])))
    return out


class AudioCache:
    """Loads source tracks once (mono float32 at their own rate), keeps the last few."""

    def __init__(self, resolve, max_items: int = 64):
        self.resolve = resolve          # clip index -> Path or None
        self.max_items = max_items
        self._cache: dict[int, tuple[np.ndarray, int]] = {}

    def get(self, clip: int) -> tuple[np.ndarray, int]:
        if clip in self._cache:
            return self._cache[clip]
        import soundfile as sf

        path = self.resolve(clip)
        if path is None or not Path(path).exists():
            raise MusiclensError(f"source audio of clip {clip} not found ({path}); pass --audio-root")
        try:
            y, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises several types for bad files
            raise MusiclensError(f"cannot read audio {path}: {e}")
        y = y.mean(1)
        if len(self._cache) >= self.max_items:
            self._cache.pop(next(iter(self._cache)))
        self._cache[clip] = (y, sr)
        return y, sr

    def cut(self, spec: ClipSpec) -> tuple[np.ndarray, int]:
        y, sr = self.get(spec.clip)
        a, b = int(round(spec.start_s * sr)), int(round(spec.end_s * sr))
        if b > len(y):      # the stored duration was longer than the file: keep the window length
            a, b = max(0, a - (b - len(y))), len(y)
        return y[a:max(b, a + 1)], sr


def concatenate(pieces: list[np.ndarray], sr: int, silence: float = 0.25) -> np.ndarray:
    """Join clips with `silence` seconds between them (each faded 10 ms to avoid clicks)."""
    gap = np.zeros(int(silence * sr), dtype=np.float32)
    fade = max(1, int(0.01 * sr))
    out = []
    for i, p in enumerate(pieces):
        p = p.astype(np.float32).copy()
        n = min(fade, len(p) // 2)
        if n > 0:
            ramp = np.linspace(0, 1, n, dtype=np.float32)
            p[:n] *= ramp
            p[-n:] *= ramp[::-1]
        if i:
            out.append(gap)
        out.append(p)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def write_feature_clips(out_dir: Path, specs: list[ClipSpec], audio: AudioCache, concat_n: int = 10) -> dict:
    """Write top<r>.wav per spec and concat.wav of the first `concat_n`; return relative paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files, pieces, sr0 = [], [], None
    for s in specs:
        y, sr = audio.cut(s)
        if sr0 is None:
            sr0 = sr
        elif sr != sr0:
            import librosa

            y = librosa.resample(y, orig_sr=sr, target_sr=sr0)
        write_wav(out_dir / f"top{s.rank}.wav", y, sr0, atomic=False)
        files.append(f"top{s.rank}.wav")
        if len(pieces) < concat_n:
            pieces.append(y)
    result = {"clips": files, "concat": None}
    if pieces:
        write_wav(out_dir / "concat.wav", concatenate(pieces, sr0), sr0, atomic=False)
        result["concat"] = "concat.wav"
    return result
