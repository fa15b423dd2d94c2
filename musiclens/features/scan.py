"""The streaming pass: read a store once, encode with every SAE, accumulate statistics.

Why one pass for all SAEs: reading the store is the expensive part (memory-
mapped fp16 shards), so each chunk of whole clips is read once per layer and
encoded by every SAE trained on that layer. Chunks hold whole clips (clips
never straddle shards), so per-track statistics need no cross-chunk state.
Progress is checkpointed every `checkpoint_every` clips so a killed run can
resume from its last checkpoint with identical results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from ..errors import MusiclensError
from ..io import atomic_path
from .stats import FeatureStats, FiringRule, StatsAccumulator


@dataclass
class SAEInfo:
    """An SAE as the features stage sees it."""

    name: str
    path: Path
    sae: object
    layer: int
    d_in: int
    d_sae: int
    k: int | None
    architecture: str
    extra: dict = field(default_factory=dict)

    @property
    def expansion(self) -> float:
        e = self.d_sae / self.d_in
        return int(e) if float(e).is_integer() else round(e, 3)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x)

    @property
    def W_dec(self) -> torch.Tensor:
        return self.sae.W_dec


def _cfg_get(cfg, key, default=None):
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def layer_of_hook(hook: str) -> int:
    try:
        return int(str(hook).rsplit(".", 1)[1])
    except (IndexError, ValueError):
        raise MusiclensError(f"SAE hook name {hook!r} is not of the form layer.<i>")


def qualified_name(path: str | Path) -> str:
    """An SAE's catalogue name when its folder name repeats in a run: "<parent>_<folder>" (L4_topk_x4_k32)."""
    p = Path(path)
    return f"{p.parent.name}_{p.name}"


def load_saes(paths: list[str | Path]) -> list[SAEInfo]:
    """Load SAEs (SAELens layout) and give each a unique, readable name."""
    try:
        from ..sae import load_sae
    except ImportError:  # the package __init__ re-exports it; io.py is where it lives
        from ..sae.io import load_sae

    out, names = [], set()
    paths = [Path(p) for p in paths]
    base = [p.name or "sae" for p in paths]
    # sweeps write one folder per setting (topk_x4_k32, ...) under one folder per layer: qualify repeats
    base = [qualified_name(p) if base.count(b) > 1 and p.parent.name else b for p, b in zip(paths, base)]
    for p, name in zip(paths, base):
        sae = load_sae(p)
        sae.eval() if hasattr(sae, "eval") else None
        cfg = sae.cfg
        hook = _cfg_get(cfg, "hook_name", "")
        layer = layer_of_hook(hook)
        d_in, d_sae = int(_cfg_get(cfg, "d_in")), int(_cfg_get(cfg, "d_sae"))
        k = _cfg_get(cfg, "k")
        n = 2
        while name in names:
            name, n = f"{name.rsplit('~', 1)[0]}~{n}", n + 1
        names.add(name)
        out.append(SAEInfo(name=name, path=p, sae=sae, layer=layer, d_in=d_in, d_sae=d_sae,
                           k=int(k) if k is not None else None, architecture=str(_cfg_get(cfg, "architecture", "")),
                           extra={"model_name": _cfg_get(cfg, "model_name", "")}))
    return out


def clip_chunks(store, rows_per_chunk: int, start_clip: int = 0) -> Iterator[list[dict]]:
    """Consecutive whole clips (in row order) totalling about `rows_per_chunk` rows."""
    clips = sorted(store.clips, key=lambda c: store.clip_rows(c["index"]).start)
    chunk, n = [], 0
    for c in clips[start_clip:]:
        chunk.append(c)
        n += int(c["rows"])
        if n >= rows_per_chunk:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


def _rows_of(store, chunk: list[dict]) -> list[int] | range:
    ranges = [store.clip_rows(c["index"]) for c in chunk]
    if all(ranges[i].stop == ranges[i + 1].start for i in range(len(ranges) - 1)):
        return range(ranges[0].start, ranges[-1].stop)
    return [r for rg in ranges for r in rg]


@torch.no_grad()
def encode_batched(sae: SAEInfo, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    outs = [sae.encode(x[i:i + batch_size]).float() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0, sae.d_sae)


def check_compatible(store, saes: list[SAEInfo]) -> None:
    for s in saes:
        if s.layer not in store.layers:
            raise MusiclensError(f"SAE {s.name} reads layer {s.layer}, the store has layers {store.layers}")
        if s.d_in != store.d_model:
            raise MusiclensError(f"SAE {s.name} has d_in {s.d_in}, the store has d_model {store.d_model}")


def scan_store(store, saes: list[SAEInfo], rule: FiringRule, top_n: int = 10, rows_per_chunk: int = 8192,
               batch_size: int = 4096, checkpoint: Path | None = None, checkpoint_every: int = 2000,
               resume: bool = False, device: str = "cpu") -> dict[str, FeatureStats]:
    """Statistics of every SAE's features over every clip of `store` (one pass)."""
    check_compatible(store, saes)
    accs = {s.name: StatsAccumulator(s.d_sae, top_n=top_n, rule=rule) for s in saes}
    done = 0
    if resume and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        if set(state["accs"]) != set(accs) or state.get("rule") != [rule.threshold, rule.min_frames,
                                                                    rule.min_fraction, rule.span_gap]:
            raise MusiclensError(f"checkpoint {checkpoint} was made with other SAEs or rules; use --overwrite")
        for k, a in accs.items():
            a.load_state_dict(state["accs"][k])
        done = int(state["clips_done"])
    for s in saes:
        if hasattr(s.sae, "to"):
            s.sae.to(device)
    layers = sorted({s.layer for s in saes})
    total = len(store.clips)
    bar = tqdm(total=total, initial=done, unit="clip", desc="features", disable=None)
    since = 0
    for chunk in clip_chunks(store, rows_per_chunk, start_clip=done):
        rows = _rows_of(store, chunk)
        lengths = [int(c["rows"]) for c in chunk]
        ids = [int(c["index"]) for c in chunk]
        frames = store.frame_column(rows)
        for layer in layers:
            x = store.read(layer, rows).to(device=device, dtype=torch.float32)
            for s in saes:
                if s.layer == layer:
                    accs[s.name].update(encode_batched(s, x, batch_size).cpu(), ids, lengths, frames)
        done += len(chunk)
        since += len(chunk)
        bar.update(len(chunk))
        if checkpoint is not None and since >= checkpoint_every and done < total:
            _save_checkpoint(checkpoint, accs, done, rule)
            since = 0
    bar.close()
    return {k: a.result() for k, a in accs.items()}


def _save_checkpoint(path: Path, accs: dict, done: int, rule: FiringRule) -> None:
    state = {"accs": {k: a.state_dict() for k, a in accs.items()}, "clips_done": done,
             "rule": [rule.threshold, rule.min_frames, rule.min_fraction, rule.span_gap]}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
