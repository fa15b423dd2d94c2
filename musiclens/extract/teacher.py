"""Teacher-forced extraction: real audio -> codec codes -> decoder ids -> stored residuals.

Why teacher forcing on the model's own codes: the SAE should see the states the
model is in while it *generates*, so the decoder input must be exactly what
`generate` feeds it: BOS, then the codes with the delay pattern
(`MusicModel.decoder_input_ids`), not HF's default teacher-forced path from
`input_values`, which skips both. The pass is capture-only and stops after the
deepest requested layer (`MusicModel.residuals`), so storing an early layer
costs a fraction of a full forward.

Audio decoding runs in threads, a couple of batches ahead of the model, so
disk and resampling overlap with compute. Batches are fixed by input index
(`fixed_groups`): a resumed or multi-process run yields bit-identical rows.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from . import ExtractConfig, check_output, dist_setup, fixed_groups, frame_subset, open_model, open_writer
from .audio import Skip, discover, load_clip


def _decode_group(pool: ThreadPoolExecutor, items, sample_rate: int, cfg: ExtractConfig):
    return [pool.submit(load_clip, it, sample_rate, cfg.seconds, cfg.min_seconds) for it in items]


@torch.no_grad()
def extract_audio(cfg: ExtractConfig) -> dict:
    """Extract frame-level activations of every clip under `cfg.audio` into the store `cfg.out`."""
    check_output(cfg)
    items = discover(cfg.audio, cfg.captions)
    rank, world = dist_setup()
    model, layers = open_model(cfg, world)
    sites = [f"layer.{l}" for l in layers]
    K = model.n_codebooks
    hop = model.sample_rate / model.frame_rate
    with_captions = any(it.caption for it in items)
    meta = {"mode": "teacher", "source": str(cfg.audio), "captions": cfg.captions if cfg.captions else
            ("from the input's metadata" if with_captions else None),
            "conditioning": "captions ('' = null condition)" if with_captions else "empty text (null condition)"}
    with open_writer(cfg, model, layers, meta) as w:
        done = w.done_clips()
        groups = [(g, [items[i] for i in idx]) for g, idx in fixed_groups(len(items), cfg.batch_size, rank, world)]
        groups = [(g, its) for g, its in groups if any(it.id not in done for it in its)]
        n_mine = sum(len(its) for _, its in groups)
        bar = tqdm(total=n_mine, desc=f"extract[{rank}]" if world > 1 else "extract", unit="clip",
                   disable=None, position=rank if world > 1 else None)
        stored = skipped = 0
        with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
            ahead: deque = deque()
            nxt = 0
            while nxt < len(groups) or ahead:
                while nxt < len(groups) and len(ahead) < 3:  # decode up to 2 batches ahead
                    ahead.append((groups[nxt][1], _decode_group(pool, groups[nxt][1], model.sample_rate, cfg)))
                    nxt += 1
                its, futs = ahead.popleft()
                clips = []
                for it, fut in zip(its, futs):
                    try:
                        clips.append(fut.result())
                    except Skip as e:
                        w.skip(it.source, str(e))
                        skipped += 1
                if clips:
                    stored += _run_batch(model, w, clips, sites, layers, K, hop, cfg, with_captions, done)
                bar.update(len(its))
        bar.close()
        rows = w.rows
        n_skipped = len(w.skipped)
    return {"rows": rows, "clips_stored_now": stored, "skipped": n_skipped, "layers": layers, "out": cfg.out,
            "rank": rank, "world_size": world}


def _run_batch(model, w, clips, sites, layers, K, hop, cfg, with_captions, done) -> int:
    wav = torch.from_numpy(np.stack([c.audio for c in clips]))
    codes = model.encode_audio(wav)  # [b, K, F]
    b, _, F = codes.shape
    ids = model.decoder_input_ids(codes)  # [b*K, F+K]
    caps = [c.item.caption or "" for c in clips] if with_captions else None
    res = model.residuals(ids, sites, captions=caps)
    pos = model.frame_positions(F).to(ids.device)
    # one device->host copy per layer and batch (not per clip), already in the store dtype
    per_layer = {l: res[f"layer.{l}"][:, pos].to("cpu", w.torch_dtype) for l in layers}
    ids_b = ids.reshape(b, K, -1).cpu()
    n = 0
    for j, c in enumerate(clips):
        if c.item.id in done:  # recomputed only to keep the batch identical to the first run
            continue
        n_valid = min(F, math.ceil(c.n_valid / hop))
        frames = frame_subset(n_valid, cfg.frames_per_clip, cfg.seed, c.item.index)
        acts = {l: per_layer[l][j, frames] for l in layers}
        meta = {"source": c.item.source, "caption": c.item.caption, "orig_sr": c.orig_sr,
                "orig_seconds": round(c.orig_seconds, 3), "valid_frames": n_valid, "n_frames": F, **c.item.meta}
        w.add_clip(c.item.id, acts, frames, ids_b[j], meta=meta, index=c.item.index)
        n += 1
    return n
