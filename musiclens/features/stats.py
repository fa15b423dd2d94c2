"""One-pass streaming statistics of SAE features over a collection of tracks.

Why streaming: a store can hold millions of frames, but everything a
researcher needs to browse features (how often each fires, how strongly,
and *where*: its best tracks) can be accumulated clip by clip in memory that
grows with (features x top-N), never with the dataset.

Definitions (per feature j, with a(t) its activation at frame t):

* a frame *fires* when a(t) > `threshold` (default 0: any non-zero TopK latent);
* a track *fires* when at least `min_frames` of its frames fire **and** the
  firing fraction of its frames is at least `min_fraction` (defaults 1 and 0:
  "fires anywhere in the track", the MusicGen paper's rule);
* activation rate r = firing tracks / tracks (what filtering uses);
* frame rate = firing frames / frames;
* max activation = the largest a(t) seen (the beta that steering scales by);
* mean when active = mean of a(t) over firing frames;
* histogram = counts of firing activations in fixed log-spaced bins
  (fixed so that it can be accumulated without a first pass for the range);
* top-N tracks = the N tracks with the largest per-track peak, each with its
  peak frame and firing span: the run of firing rows around the peak, where
  gaps of up to `span_gap` non-firing rows do not end the run (rows are the
  stored frames of a clip; when a store keeps a subset of frames, spans are
  reported in frame numbers but measured over the stored rows).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MusiclensError, require

# 10 bins per decade from 1e-4 to 1e4, plus an underflow and an overflow bin.
HIST_EDGES = np.logspace(-4, 4, 81)


@dataclass
class FiringRule:
    """When a frame and a track count as firing (see the module docstring)."""

    threshold: float = 0.0
    min_frames: int = 1
    min_fraction: float = 0.0
    span_gap: int = 5

    def __post_init__(self) -> None:
        require(self.min_frames >= 1, "min_frames must be >= 1")
        require(0.0 <= self.min_fraction <= 1.0, "min_fraction must be in [0, 1]")
        require(self.threshold >= 0.0, "threshold must be >= 0")
        require(self.span_gap >= 0, "span_gap must be >= 0")


@dataclass
class FeatureStats:
    """Finished statistics for one SAE (numpy arrays indexed by feature)."""

    n_tracks: int
    n_frames: int
    track_count: np.ndarray      # [F] firing tracks
    frame_count: np.ndarray      # [F] firing frames
    max_act: np.ndarray          # [F]
    sum_active: np.ndarray       # [F] sum of activations over firing frames
    hist: np.ndarray             # [F, len(HIST_EDGES)+1] counts (bin 0: below 1e-4)
    top_score: np.ndarray        # [F, N] per-track peak (-inf where empty)
    top_clip: np.ndarray         # [F, N] clip index (-1 where empty)
    top_peak: np.ndarray         # [F, N] peak frame (offset within the clip)
    top_start: np.ndarray        # [F, N] first frame of the firing span (offset within the clip)
    top_end: np.ndarray          # [F, N] last frame of the firing span (inclusive)

    @property
    def d_sae(self) -> int:
        return int(self.track_count.shape[0])

    @property
    def activation_rate(self) -> np.ndarray:
        return self.track_count / max(self.n_tracks, 1)

    @property
    def frame_rate(self) -> np.ndarray:
        return self.frame_count / max(self.n_frames, 1)

    @property
    def mean_active(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.frame_count > 0, self.sum_active / np.maximum(self.frame_count, 1), 0.0)

    def save(self, path: str | Path) -> None:
        """Write all arrays to one .npz (atomically)."""
        from ..io import atomic_path

        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, n_tracks=self.n_tracks, n_frames=self.n_frames,
                     **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                        if f.name not in ("n_tracks", "n_frames")})

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        try:
            z = np.load(path)
        except (OSError, ValueError) as e:
            raise MusiclensError(f"cannot read feature statistics {path}: {e}")
        kw = {f.name: z[f.name] for f in dataclasses.fields(cls)}
        kw["n_tracks"] = int(kw["n_tracks"])
        kw["n_frames"] = int(kw["n_frames"])
        return cls(**kw)


def _segment_ids(lengths: list[int], device: torch.device) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(lengths), device=device),
                                   torch.as_tensor(lengths, device=device))


def firing_spans(acts: torch.Tensor, peaks: torch.Tensor, threshold: float, gap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Span of firing frames around each column's peak.

    acts [T, S] (one clip, S selected features), peaks [S] frame indices.
    Returns (start [S], end [S]) inclusive, both firing frames (or the peak).
    """
    T = acts.shape[0]
    fire = acts > threshold
    if gap > 0:
        # dilate by gap//2 each side (and +1 for odd gaps) so gaps <= gap get bridged
        k = gap + 1
        f = fire.T.float().unsqueeze(1)                  # [S, 1, T]
        left, right = k // 2, k - 1 - k // 2
        f = torch.nn.functional.pad(f, (left, right))
        bridged = torch.nn.functional.max_pool1d(f, kernel_size=k, stride=1).squeeze(1).T > 0
        # erosion back (closing): a frame stays only if covered by a full window
        g = (~bridged).T.float().unsqueeze(1)
        g = torch.nn.functional.pad(g, (right, left))
        bridged = ~(torch.nn.functional.max_pool1d(g, kernel_size=k, stride=1).squeeze(1).T > 0)
        bridged = bridged | fire
    else:
        bridged = fire
    idx = torch.arange(T, device=acts.device).unsqueeze(1)            # [T, 1]
    p = peaks.unsqueeze(0)                                            # [1, S]
    gapmask = ~bridged
    before = torch.where(gapmask & (idx < p), idx, torch.full_like(idx, -1)).amax(0) + 1
    after = torch.where(gapmask & (idx > p), idx, torch.full_like(idx, T)).amin(0) - 1
    # trim the bridged run to actual firing frames
    inside = fire & (idx >= before.unsqueeze(0)) & (idx <= after.unsqueeze(0))
    start = torch.where(inside, idx, torch.full_like(idx, T)).amin(0)
    end = torch.where(inside, idx, torch.full_like(idx, -1)).amax(0)
    start = torch.minimum(start, peaks)
    end = torch.maximum(end, peaks)
    return start, end


class StatsAccumulator:
    """Accumulates `FeatureStats` from latents, a batch of whole clips at a time."""

    def __init__(self, d_sae: int, top_n: int = 10, rule: FiringRule | None = None):
        require(top_n >= 1, "top_n must be >= 1")
        self.d_sae, self.top_n = d_sae, top_n
        self.rule = rule or FiringRule()
        F, N = d_sae, top_n
        self.n_tracks = 0
        self.n_frames = 0
        self.track_count = torch.zeros(F, dtype=torch.int64)
        self.frame_count = torch.zeros(F, dtype=torch.int64)
        self.max_act = torch.zeros(F, dtype=torch.float32)
        self.sum_active = torch.zeros(F, dtype=torch.float64)
        self.edges = torch.as_tensor(HIST_EDGES, dtype=torch.float32)
        self.nbins = len(HIST_EDGES) + 1
        self.hist = torch.zeros(F * self.nbins, dtype=torch.int64)
        self.top_score = torch.full((F, N), float("-inf"))
        self.top_clip = torch.full((F, N), -1, dtype=torch.int64)
        self.top_peak = torch.zeros((F, N), dtype=torch.int64)
        self.top_start = torch.zeros((F, N), dtype=torch.int64)
        self.top_end = torch.zeros((F, N), dtype=torch.int64)

    # -- state for resuming ------------------------------------------------
    _STATE = ("track_count", "frame_count", "max_act", "sum_active", "hist",
              "top_score", "top_clip", "top_peak", "top_start", "top_end")

    def state_dict(self) -> dict:
        d = {k: getattr(self, k).clone() for k in self._STATE}
        d["n_tracks"], d["n_frames"] = self.n_tracks, self.n_frames
        return d

    def load_state_dict(self, d: dict) -> None:
        for k in self._STATE:
            require(tuple(d[k].shape) == tuple(getattr(self, k).shape), "resume state does not match this SAE")
            setattr(self, k, d[k])
        self.n_tracks, self.n_frames = int(d["n_tracks"]), int(d["n_frames"])

    # -- accumulation ----------------------------------------------------------
    @torch.no_grad()
    def update(self, latents: torch.Tensor, clip_ids: list[int], lengths: list[int],
               frames: torch.Tensor | None = None) -> None:
        """Add clips: `latents` [sum(lengths), F] are the clips' rows back to back.

        `frames` [sum(lengths)] gives each row's frame number within its clip (a store may keep a
        subset of frames); peaks and spans are reported in frames. Default: rows are frames 0..T-1.
        """
        require(latents.shape[0] == sum(lengths), "latents rows do not match clip lengths")
        require(latents.shape[1] == self.d_sae, "latent width does not match the accumulator")
        lat = latents.float()
        thr = self.rule.threshold
        C = len(lengths)
        F = self.d_sae
        seg = _segment_ids(lengths, lat.device)
        # everything below works on the (sparse) firing entries, so a chunk costs one dense pass
        rows, cols = (lat > thr).nonzero(as_tuple=True)
        vals = lat[rows, cols]

        self.n_tracks += C
        self.n_frames += int(lat.shape[0])
        fires_per_clip = torch.bincount(seg[rows] * F + cols, minlength=C * F).view(C, F)
        self.frame_count += fires_per_clip.sum(0)
        L = torch.as_tensor(lengths, dtype=torch.float32).unsqueeze(1)
        track_fires = (fires_per_clip >= self.rule.min_frames) & (fires_per_clip >= self.rule.min_fraction * L - 1e-6)
        self.track_count += track_fires.sum(0)
        if lat.shape[0]:
            self.max_act = torch.maximum(self.max_act, lat.amax(0))
        self.sum_active.index_add_(0, cols, vals.double())
        if rows.numel():
            bins = torch.bucketize(vals, self.edges, right=True)     # 0 .. len(edges)
            self.hist += torch.bincount(cols * self.nbins + bins, minlength=F * self.nbins)

        # per-clip peak and peak frame
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
        clip_max = torch.full((C, F), float("-inf"))
        for c in range(C):
            if lengths[c]:
                clip_max[c] = lat[offsets[c]:offsets[c + 1]].amax(0)
        score = torch.where(track_fires, clip_max, torch.full_like(clip_max, float("-inf")))
        N = self.top_n
        ids = torch.as_tensor(clip_ids, dtype=torch.int64)
        all_score = torch.cat([self.top_score, score.T], 1)                  # [F, N+C]
        all_clip = torch.cat([self.top_clip, ids.unsqueeze(0).expand(self.d_sae, C)], 1)
        new_score, pos = all_score.topk(N, dim=1)
        self.top_score = new_score
        self.top_clip = torch.where(torch.isfinite(new_score), torch.gather(all_clip, 1, pos), -1)
        self.top_peak = torch.gather(torch.cat([self.top_peak, torch.zeros(self.d_sae, C, dtype=torch.int64)], 1), 1, pos)
        self.top_start = torch.gather(torch.cat([self.top_start, torch.zeros(self.d_sae, C, dtype=torch.int64)], 1), 1, pos)
        self.top_end = torch.gather(torch.cat([self.top_end, torch.zeros(self.d_sae, C, dtype=torch.int64)], 1), 1, pos)
        entered = (pos >= N) & torch.isfinite(new_score)
        if entered.any():
            feat, slot = entered.nonzero(as_tuple=True)
            which = pos[feat, slot] - N                                       # clip position in batch
            for c in which.unique().tolist():
                m = which == c
                f_c, s_c = feat[m], slot[m]
                a = lat[offsets[c]:offsets[c + 1], f_c]                       # [T, S]
                peaks = a.argmax(0)
                start, end = firing_spans(a, peaks, thr, self.rule.span_gap)
                if frames is not None:
                    fr = torch.as_tensor(frames[offsets[c]:offsets[c + 1]], dtype=torch.int64)
                    peaks, start, end = fr[peaks], fr[start], fr[end]
                self.top_peak[f_c, s_c] = peaks
                self.top_start[f_c, s_c] = start
                self.top_end[f_c, s_c] = end

    def result(self) -> FeatureStats:
        return FeatureStats(
            n_tracks=self.n_tracks, n_frames=self.n_frames,
            track_count=self.track_count.numpy().copy(), frame_count=self.frame_count.numpy().copy(),
            max_act=self.max_act.numpy().copy(), sum_active=self.sum_active.numpy().copy(),
            hist=self.hist.view(self.d_sae, self.nbins).numpy().copy(),
            top_score=self.top_score.numpy().copy(), top_clip=self.top_clip.numpy().copy(),
            top_peak=self.top_peak.numpy().copy(), top_start=self.top_start.numpy().copy(),
            top_end=self.top_end.numpy().copy())
