"""Feature statistics straight from audio: activations extracted on the fly, never stored.

Why: a store costs rows x d_model x 2 bytes per layer; for a one-off look at
a large collection (or when disk is short) the features pass can run the
model itself. `AudioActivations` offers the part of the `ActivationStore`
reader interface the streaming pass uses (clips, clip_rows, read,
frame_column, meta), computing each chunk's activations when first read,
exactly as `musiclens extract --audio` would (same codec encoding, BOS +
delay pattern, frame f = decoder position f + 1, valid frames only), and
keeping only the current chunk in memory.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import MusiclensError


class AudioActivations:
    """Store-like, read-once view of a model's residual activations over audio files."""

    def __init__(self, audio: str | Path, model, layers: list[int], seconds: float = 10.0, batch_size: int = 8,
                 min_seconds: float = 1.0, captions: str | None = None):
        import soundfile as sf

        from ..extract.audio import discover

        self.model = model
        self.layers = sorted(int(x) for x in layers)
        bad = [x for x in self.layers if not 0 <= x < model.n_layers]
        if bad:
            raise MusiclensError(f"layers {bad} out of range for {model.name} ({model.n_layers} layers)")
        self.d_model = int(model.d_model)
        self.seconds, self.batch_size, self.min_seconds = seconds, batch_size, min_seconds
        self.path = Path(audio)
        self.model_name = model.name
        self.meta = {"frame_rate": model.frame_rate, "sample_rate": model.sample_rate, "source": str(audio),
                     "mode": "on-the-fly"}
        hop = model.sample_rate / model.frame_rate
        self.items = {}
        self.clips = []
        start = 0
        for it in discover(audio, captions):
            try:
                info = sf.info(it.source)
                dur = info.frames / info.samplerate
            except Exception:
                continue            # unreadable: skipped, as extract does
            if dur < min(min_seconds, seconds):
                continue
            n = min(int(round(seconds * model.frame_rate)),
                    math.ceil(min(dur, seconds) * model.sample_rate / hop))
            self.items[it.index] = it
            self.clips.append({"index": it.index, "id": it.id, "rows": n, "start": start,
                               "meta": {"source": it.source, "caption": it.caption, "orig_seconds": dur}})
            start += n
        if not self.clips:
            raise MusiclensError(f"no usable audio in {audio}")
        self.rows = start
        self._by_index = {c["index"]: c for c in self.clips}
        self._cache: dict[int, dict[int, torch.Tensor]] = {}

    def clip_info(self, index: int) -> dict:
        return self._by_index[int(index)]

    def clip_rows(self, index: int) -> range:
        c = self._by_index[int(index)]
        return range(c["start"], c["start"] + c["rows"])

    def _clips_of(self, rows) -> list[dict]:
        rows = np.asarray(list(rows) if not isinstance(rows, range) else [rows.start, rows.stop - 1])
        lo, hi = int(rows.min()), int(rows.max())
        return [c for c in self.clips if c["start"] + c["rows"] > lo and c["start"] <= hi]

    @torch.no_grad()
    def _compute(self, clips: list[dict]) -> None:
        from ..extract.audio import Skip, load_clip

        todo = [c for c in clips if c["index"] not in self._cache]
        self._cache = {k: v for k, v in self._cache.items() if k in {c["index"] for c in clips}}
        m = self.model
        sites = [f"layer.{L}" for L in self.layers]
        for i in range(0, len(todo), self.batch_size):
            group = todo[i:i + self.batch_size]
            wavs = []
            for c in group:
                try:
                    wavs.append(load_clip(self.items[c["index"]], m.sample_rate, self.seconds, self.min_seconds).audio)
                except Skip as e:
                    raise MusiclensError(f"{c['meta']['source']}: {e}")
            codes = m.encode_audio(torch.from_numpy(np.stack(wavs)))
            ids = m.decoder_input_ids(codes)
            res = m.residuals(ids, sites)
            pos = m.frame_positions(codes.shape[-1])
            for j, c in enumerate(group):
                p = pos[: c["rows"]]
                self._cache[c["index"]] = {L: res[f"layer.{L}"][j, p].float().cpu() for L in self.layers}

    def _gather(self, key, rows) -> torch.Tensor:
        clips = self._clips_of(rows)
        self._compute(clips)
        idx = np.asarray(list(rows), dtype=np.int64)
        parts = []
        for c in clips:
            sel = idx[(idx >= c["start"]) & (idx < c["start"] + c["rows"])] - c["start"]
            t = self._cache[c["index"]][key] if key != "frame" else torch.arange(c["rows"])
            parts.append(t[torch.from_numpy(sel)])
        return torch.cat(parts)

    def read(self, layer: int, rows) -> torch.Tensor:
        if int(layer) not in self.layers:
            raise MusiclensError(f"layer {layer} is not extracted (layers: {self.layers})")
        return self._gather(int(layer), rows)

    def frame_column(self, rows) -> torch.Tensor:
        idx = np.asarray(list(rows), dtype=np.int64)
        out = []
        for c in self._clips_of(rows):
            sel = idx[(idx >= c["start"]) & (idx < c["start"] + c["rows"])] - c["start"]
            out.append(torch.from_numpy(sel))
        return torch.cat(out)
