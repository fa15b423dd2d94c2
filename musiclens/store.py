"""Sharded activation store: safetensors shards + one `manifest.json`.

Why this shape: SAE training reads hundreds of millions of rows, so the store
must (1) grow append-only while a long extraction runs, (2) survive being
killed at any instant without losing or duplicating a clip, (3) be read
memory-mapped, batch by batch, without loading it into RAM, and (4) carry
enough to recompute any row (the exact decoder input ids per clip).

Layout of a store directory::

    manifest.json                   format version, model name + weights hash, layers,
                                    d_model, dtype, rows, clip table, shard list
                                    (file, rank, rows, sha256, bytes), complete flag
    shard-r<rank>-<n>.safetensors   `layer.<i>` [rows, d_model] per layer, `clip` and
                                    `frame` [rows] int64, `input_ids.<j>` [K, T] int64
                                    for the j-th clip of the shard (+ optional
                                    `<name>.<j>` extras, e.g. generated `codes.<j>`)
    skipped.json                    inputs that were skipped, with the reason
    manifest-r<rank>.json           per-rank partial manifests (multi-process runs,
                                    only until rank 0 merges them)

A shard only ever holds whole clips, so a clip's rows never straddle a shard
boundary. Commit order is: shard bytes -> temp file -> fsync -> rename, then
the manifest is rewritten the same way. A clip is stored once it appears in a
manifest; a shard file that no manifest lists (killed between the two renames)
is deleted on `resume`, and its clips are redone.

Clip indices: every clip carries an integer `index` (the `clip` column of each
row). The extractor uses the input's position in the sorted input list, so
indices are identical whatever the number of processes; inputs that were
skipped leave gaps. Look clips up with `ActivationStore.clip_info(index)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from .errors import MusiclensError
from .io import _fsync_dir, atomic_path, write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SKIPPED = "skipped.json"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_ST_DTYPES = {"F16": ("float16", np.float16), "BF16": ("bfloat16", np.uint16), "F32": ("float32", np.float32),
              "I64": ("int64", np.int64), "I32": ("int32", np.int32)}
_SHARD_RE = re.compile(r"^shard-r(\d+)-(\d+)\.safetensors$")
_PARTIAL_RE = re.compile(r"^manifest-r(\d+)\.json$")

# Test hook (used by tests/test_store.py and the resume tests): kill this process
# with SIGKILL right after the N-th shard of this process is renamed into place,
# either before ("shard:N") or after ("commit:N") the manifest that lists it is written.
_KILL_ENV = "MUSICLENS_TEST_KILL"


def _dist_rank_world() -> tuple[int, int]:
    """(rank, world_size) of an initialised torch.distributed group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MusiclensError(f"{path} is not valid JSON ({e}); the store is damaged")


def _maybe_kill(stage: str, count: int) -> None:
    spec = os.environ.get(_KILL_ENV, "")
    if spec and spec == f"{stage}:{count}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _manifest_sources(path: Path) -> list[dict]:
    """The merged manifest (if any) and every per-rank partial manifest in `path`."""
    out = []
    if (path / MANIFEST).exists():
        out.append(_read_json(path / MANIFEST))
    for p in sorted(path.iterdir()):
        if _PARTIAL_RE.match(p.name):
            out.append(_read_json(p))
    return out


def _union(sources: list[dict]) -> tuple[list[dict], list[dict], dict[str, dict]]:
    """Union of shards, clips and skipped inputs over several manifests (deduplicated)."""
    shards: dict[str, dict] = {}
    clips: dict[int, dict] = {}
    skipped: dict[str, dict] = {}
    for m in sources:
        for s in m.get("shards", []):
            shards[s["file"]] = s
        for c in m.get("clips", []):
            old = clips.get(c["index"])
            if old is not None and old["shard"] != c["shard"]:
                raise MusiclensError(f"store is damaged: clip {c['index']} is listed in two shards "
                                     f"({old['shard']}, {c['shard']})")
            clips[c["index"]] = c
        for s in m.get("skipped", []):
            skipped[s["path"]] = s
    shard_list = sorted(shards.values(), key=lambda s: (s["rank"], s["seq"]))
    clip_list = sorted(clips.values(), key=lambda c: c["index"])
    return shard_list, clip_list, skipped


class StoreWriter:
    """Append clips to a store, committing whole clips shard by shard.

    Use as a context manager. Shards are written by one background thread
    (`background=False` writes inline). Under torch.distributed (e.g. `torchrun`), every
    rank writes its own shards and partial manifest; on exit rank 0 merges them
    into `manifest.json` after a barrier. Pass the same arguments on every rank.
    """

    def __init__(self, path: str | os.PathLike, *, model_name: str, weights_hash: str, layers: Sequence[int],
                 d_model: int, dtype: str = "float16", resume: bool = False, meta: dict | None = None,
                 shard_rows: int = 16384, rank: int | None = None, world_size: int | None = None,
                 background: bool = True):
        if dtype not in DTYPES:
            raise MusiclensError(f"unknown store dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        if shard_rows < 1:
            raise MusiclensError("shard rows must be >= 1")
        self.path = Path(path)
        self.layers = [int(x) for x in layers]
        self.d_model = int(d_model)
        self.dtype = dtype
        self.torch_dtype = DTYPES[dtype]
        self.shard_rows = int(shard_rows)
        drank, dworld = _dist_rank_world()
        self.rank = drank if rank is None else int(rank)
        self.world_size = dworld if world_size is None else int(world_size)
        self.header = {"format_version": FORMAT_VERSION, "model_name": model_name, "weights_hash": weights_hash,
                       "layers": self.layers, "d_model": self.d_model, "dtype": dtype, "meta": dict(meta or {})}
        if self.path.exists() and not self.path.is_dir():
            raise MusiclensError(f"output path exists and is not a directory: {self.path}")
        exists = self.path.is_dir() and any(self.path.iterdir())  # an empty directory counts as new
        if exists and not resume:
            raise MusiclensError(f"output exists: {self.path} (pass --resume to continue it, or choose a new path)")
        # Every rank has checked before anyone creates anything.
        _barrier()
        self.path.mkdir(parents=True, exist_ok=True)

        sources = _manifest_sources(self.path) if exists else []
        if exists and not sources:
            raise MusiclensError(f"cannot resume {self.path}: it is not an activation store (no manifest)")
        for m in sources:
            self._check_compatible(m)
        all_shards, all_clips, skipped = _union(sources)
        # Everything this writer will list in its own manifest file.
        if self.world_size == 1:
            self._shards = list(all_shards)
            self._clips = list(all_clips)
        else:
            self._shards = [s for s in all_shards if s["rank"] == self.rank]
            mine = {s["file"] for s in self._shards}
            self._clips = [c for c in all_clips if c["shard"] in mine]
        self._skipped = {p: s for p, s in skipped.items() if s.get("rank", 0) == self.rank or self.world_size == 1}
        self._done_ids = {c["id"] for c in all_clips}
        self._used_index = {c["index"] for c in all_clips}
        listed = {s["file"] for s in all_shards}
        # Remove orphans (shards renamed in but never listed) and temp files: this rank's own, or
        # every rank's when a single process takes over the store.
        for p in self.path.iterdir():
            m = _SHARD_RE.match(p.name) or re.match(r"^\.shard-r(\d+)-.*\.tmp$", p.name)
            if m and (self.world_size == 1 or int(m.group(1)) == self.rank) and p.name not in listed:
                p.unlink(missing_ok=True)
        self._seq = 1 + max([s["seq"] for s in all_shards if s["rank"] == self.rank], default=-1)
        self._buf: list[dict] = []
        self._buf_rows = 0
        self._committed_here = 0
        self._closed = False
        self._background = bool(background)
        self._lock = threading.Lock()  # `skip` (caller thread) vs manifest writes (writer thread)
        self._pool = None
        self._pending = None
        self._inflight_rows = 0
        self._write_manifest(complete=False)

    # ------------------------------------------------------------------ API
    def done_clips(self) -> set[str]:
        """Ids of clips already committed (by any rank) or buffered here."""
        return set(self._done_ids)

    def add_clip(self, clip_id: str, acts: dict[int, torch.Tensor], frames: torch.Tensor, input_ids: torch.Tensor,
                 meta: dict | None = None, index: int | None = None, extra: dict[str, torch.Tensor] | None = None
                 ) -> None:
        """Buffer one clip: `acts[layer]` is [F, d_model] for every store layer, `frames` [F].

        `index` is the clip's integer id (the `clip` column); by default the next
        unused integer (pass it explicitly in multi-process runs).
        """
        clip_id = str(clip_id)
        if clip_id in self._done_ids:
            raise ValueError(f"clip {clip_id!r} is already in the store")
        if set(acts) != set(self.layers):
            raise ValueError(f"acts has layers {sorted(acts)}, store has {self.layers}")
        frames = torch.as_tensor(frames, dtype=torch.int64).reshape(-1)
        n = int(frames.numel())
        for layer, a in acts.items():
            if tuple(a.shape) != (n, self.d_model):
                raise ValueError(f"layer {layer}: expected [{n}, {self.d_model}], got {list(a.shape)}")
        if index is None:
            if self.world_size > 1:
                raise ValueError("pass an explicit clip index in multi-process runs")
            index = 1 + max(self._used_index, default=-1)
        index = int(index)
        if index in self._used_index:
            raise ValueError(f"clip index {index} is already in the store")
        self._used_index.add(index)
        self._done_ids.add(clip_id)
        self._buf.append({
            "id": clip_id, "index": index, "frames": frames,
            # own copies: callers often pass views of a whole batch, which must neither stay alive
            # in the buffer nor change under the writer thread
            "acts": {int(k): v.detach().to("cpu", self.torch_dtype, copy=True) for k, v in acts.items()},
            "input_ids": torch.as_tensor(input_ids).detach().to("cpu", torch.int64, copy=True).contiguous(),
            "extra": {k: v.detach().to("cpu", copy=True).contiguous() for k, v in (extra or {}).items()},
            "meta": dict(meta or {}),
        })
        self._buf_rows += n
        if self._buf_rows >= self.shard_rows:
            self.flush()

    def skip(self, path: str, reason: str) -> None:
        """Record an input that was not stored, and why (written to skipped.json)."""
        with self._lock:
            self._skipped[str(path)] = {"path": str(path), "reason": reason, "rank": self.rank}

    @property
    def rows(self) -> int:
        self._wait()
        return sum(s["rows"] for s in self._shards) + self._buf_rows

    @property
    def skipped(self) -> list[dict]:
        with self._lock:
            return list(self._skipped.values())

    def flush(self) -> None:
        """Hand all buffered clips to the writer thread as one shard (committed in order).

        Serialising, hashing and fsyncing a shard runs in one background thread so
        the model keeps computing; at most one shard is in flight (the next flush
        waits for it), which bounds memory to two shards' worth of rows.
        """
        if not self._buf:
            return
        self._wait()
        clips, self._buf = self._buf, []
        rows, self._buf_rows = self._buf_rows, 0
        seq, self._seq = self._seq, self._seq + 1
        self._inflight_rows = rows
        if self._background:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
            self._pending = self._pool.submit(self._commit, clips, seq)
        else:
            self._commit(clips, seq)
            self._inflight_rows = 0

    def _wait(self) -> None:
        """Wait for the shard in flight; re-raise its error in the caller's thread."""
        if self._pending is not None:
            fut, self._pending = self._pending, None
            fut.result()
            self._inflight_rows = 0

    def _commit(self, buf: list[dict], seq: int) -> None:
        from safetensors.torch import save

        name = f"shard-r{self.rank}-{seq:05d}.safetensors"
        tensors: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            tensors[f"layer.{layer}"] = torch.cat([c["acts"][layer] for c in buf]).contiguous()
        tensors["clip"] = torch.cat([torch.full((c["frames"].numel(),), c["index"], dtype=torch.int64)
                                     for c in buf])
        tensors["frame"] = torch.cat([c["frames"] for c in buf])
        clips, start = [], 0
        for j, c in enumerate(buf):
            tensors[f"input_ids.{j}"] = c["input_ids"]
            for k, v in c["extra"].items():
                tensors[f"{k}.{j}"] = v
            n = int(c["frames"].numel())
            clips.append({"index": c["index"], "id": c["id"], "shard": name, "pos": j, "start": start, "rows": n,
                          "extra": sorted(c["extra"]), "meta": c["meta"]})
            start += n
        data = save(tensors, metadata={"musiclens_store": str(FORMAT_VERSION)})
        digest = hashlib.sha256(data).hexdigest()
        with atomic_path(self.path / name) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
        self._committed_here += 1
        _maybe_kill("shard", self._committed_here)
        self._shards.append({"file": name, "rank": self.rank, "seq": seq, "rows": start,
                             "sha256": digest, "bytes": len(data), "clips": [c["index"] for c in clips]})
        self._clips.extend(clips)
        self._write_manifest(complete=False)
        _maybe_kill("commit", self._committed_here)

    def close(self) -> None:
        """Flush, mark complete, and (multi-process) merge the per-rank manifests."""
        if self._closed:
            return
        self.flush()
        self._wait()
        self._shutdown()
        self._write_manifest(complete=True)
        _barrier()
        if self.rank == 0 and self.world_size > 1:
            merge_manifests(self.path)
        _barrier()
        self._closed = True

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            # Whole clips already buffered are still valid: keep them, so a resume redoes less.
            try:
                self.flush()
                self._wait()
            except Exception:  # pragma: no cover - never mask the original error
                pass
            finally:
                self._shutdown()

    # ------------------------------------------------------------ internals
    def _manifest_name(self) -> str:
        return MANIFEST if self.world_size == 1 else f"manifest-r{self.rank}.json"

    def _write_manifest(self, complete: bool) -> None:
        m = dict(self.header)
        m["complete"] = bool(complete)
        if self.world_size > 1:
            m["rank"], m["world_size"] = self.rank, self.world_size
        m["rows"] = sum(s["rows"] for s in self._shards)
        m["n_clips"] = len(self._clips)
        m["shards"] = self._shards
        m["clips"] = sorted(self._clips, key=lambda c: c["index"])
        with self._lock:
            m["skipped"] = list(self._skipped.values())
        write_json(self.path / self._manifest_name(), m)
        if self.world_size == 1 and complete:
            write_json(self.path / SKIPPED, m["skipped"])
            for p in self.path.iterdir():  # partials of an earlier multi-process run are now merged
                if _PARTIAL_RE.match(p.name):
                    p.unlink()

    def _check_compatible(self, m: dict) -> None:
        if m.get("format_version") != FORMAT_VERSION:
            raise MusiclensError(f"cannot resume {self.path}: store format {m.get('format_version')}, "
                                 f"this musiclens writes {FORMAT_VERSION}")
        for key in ("weights_hash", "layers", "d_model", "dtype"):
            if m.get(key) != self.header[key]:
                raise MusiclensError(f"cannot resume {self.path}: it was written with {key}={m.get(key)!r}, "
                                     f"this run has {self.header[key]!r}")


def merge_manifests(path: str | os.PathLike) -> dict:
    """Merge `manifest.json` and all `manifest-r*.json` into one `manifest.json`.

    Complete only if every partial is complete. The partials are removed once the
    merged manifest is on disk.
    """
    path = Path(path)
    sources = _manifest_sources(path)
    if not sources:
        raise MusiclensError(f"{path}: no manifests to merge")
    partials = [p for p in path.iterdir() if _PARTIAL_RE.match(p.name)]
    shards, clips, skipped = _union(sources)
    base = dict(sources[-1])
    for k in ("rank", "world_size"):
        base.pop(k, None)
    base["complete"] = all(m.get("complete", False) for m in sources if "rank" in m) if partials else \
        bool(base.get("complete"))
    base["rows"] = sum(s["rows"] for s in shards)
    base["n_clips"] = len(clips)
    base["shards"], base["clips"], base["skipped"] = shards, clips, list(skipped.values())
    write_json(path / MANIFEST, base)
    write_json(path / SKIPPED, base["skipped"])
    for p in partials:
        p.unlink()
    _fsync_dir(path)
    return base


# ---------------------------------------------------------------------- reading
class _Shard:
    """Memory-mapped view of one safetensors file (header parsed once, numpy memmap per tensor)."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            self.header = json.loads(f.read(n))
        self.data_start = 8 + n
        self.header.pop("__metadata__", None)
        self._maps: dict[str, tuple[np.memmap, str]] = {}

    def keys(self) -> list[str]:
        return list(self.header)

    def array(self, key: str) -> tuple[np.ndarray, str]:
        if key not in self._maps:
            info = self.header[key]
            name, np_dtype = _ST_DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            if end == begin:
                arr = np.zeros(shape, dtype=np_dtype)
            else:
                arr = np.memmap(self.path, dtype=np_dtype, mode="r", offset=self.data_start + begin, shape=shape)
            self._maps[key] = (arr, name)
        return self._maps[key]

    def read(self, key: str, index: Any = slice(None)) -> torch.Tensor:
        arr, name = self.array(key)
        out = arr[index]
        # A slice of a memmap is a read-only view of the file: copy it so callers own their tensor.
        out = np.array(out) if isinstance(index, slice) else np.ascontiguousarray(out)
        t = torch.from_numpy(out)
        return t.view(torch.bfloat16) if name == "bfloat16" else t


class ActivationStore:
    """Read a store written by `StoreWriter`, memory-mapped.

    Rows are numbered globally in manifest shard order. `iter_batches` streams
    shuffled batches of one layer with bounded memory (see its docstring for
    how well it shuffles).
    """

    def __init__(self, path: str | os.PathLike, allow_incomplete: bool = False):
        self.path = Path(path)
        if not self.path.is_dir():
            raise MusiclensError(f"activation store not found: {self.path}")
        mpath = self.path / MANIFEST
        if not mpath.exists():
            if any(_PARTIAL_RE.match(p.name) for p in self.path.iterdir()):
                raise MusiclensError(f"{self.path}: multi-process extraction did not finish (no merged manifest); "
                                     "rerun it with --resume")
            raise MusiclensError(f"{self.path} is not an activation store (no {MANIFEST})")
        self.manifest = _read_json(mpath)
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise MusiclensError(f"{self.path}: unsupported store format {self.manifest.get('format_version')}")
        if not self.manifest.get("complete") and not allow_incomplete:
            raise MusiclensError(f"{self.path}: extraction was interrupted (store incomplete); rerun it with --resume")
        self.layers: list[int] = list(self.manifest["layers"])
        self.d_model: int = int(self.manifest["d_model"])
        self.dtype: str = self.manifest["dtype"]
        self.shards: list[dict] = self.manifest["shards"]
        self.clips: list[dict] = self.manifest["clips"]
        self.rows: int = int(sum(s["rows"] for s in self.shards))
        self.model_name: str = self.manifest.get("model_name", "")
        self.meta: dict = self.manifest.get("meta", {})
        self._offsets = np.cumsum([0] + [s["rows"] for s in self.shards])
        self._shard_pos = {s["file"]: i for i, s in enumerate(self.shards)}
        self._clip_by_index = {c["index"]: c for c in self.clips}
        self._open: dict[int, _Shard] = {}

    def __len__(self) -> int:
        return self.rows

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, rows={self.rows}, clips={len(self.clips)}, "
                f"layers={self.layers}, d_model={self.d_model}, dtype={self.dtype})")

    def _shard(self, i: int) -> _Shard:
        if i not in self._open:
            p = self.path / self.shards[i]["file"]
            if not p.exists():
                raise MusiclensError(f"{self.path}: shard missing: {p.name} (run `musiclens store verify`)")
            self._open[i] = _Shard(p)
        return self._open[i]

    def _key(self, layer: int) -> str:
        if int(layer) not in self.layers:
            raise MusiclensError(f"layer {layer} is not in this store (layers: {self.layers})")
        return f"layer.{int(layer)}"

    def clip_info(self, index: int) -> dict:
        """Clip table entry (id, shard, rows, meta, ...) of the clip with this index."""
        try:
            return self._clip_by_index[int(index)]
        except KeyError:
            raise MusiclensError(f"no clip with index {index} in {self.path}")

    def clip_rows(self, index: int) -> range:
        """Global row numbers of one clip."""
        c = self.clip_info(index)
        start = int(self._offsets[self._shard_pos[c["shard"]]]) + int(c["start"])
        return range(start, start + int(c["rows"]))

    def input_ids(self, index: int) -> torch.Tensor:
        """The exact decoder input ids [K, T] the clip's rows were computed from."""
        c = self.clip_info(index)
        return self._shard(self._shard_pos[c["shard"]]).read(f"input_ids.{c['pos']}")

    def extra(self, index: int, name: str) -> torch.Tensor:
        """An extra per-clip tensor stored with the clip (e.g. generated `codes`)."""
        c = self.clip_info(index)
        if name not in c.get("extra", []):
            raise MusiclensError(f"clip {index} has no {name!r} tensor")
        return self._shard(self._shard_pos[c["shard"]]).read(f"{name}.{c['pos']}")

    def _read_column(self, key: str, rows: Any) -> torch.Tensor:
        if isinstance(rows, slice):
            rows = range(*rows.indices(self.rows))
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.rows):
            raise IndexError(f"row out of range [0, {self.rows})")
        shard_of = np.searchsorted(self._offsets, idx, side="right") - 1
        parts, order = [], []
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            local = idx[sel] - self._offsets[s]
            if local.size and np.all(np.diff(local) == 1):
                parts.append(self._shard(int(s)).read(key, slice(int(local[0]), int(local[-1]) + 1)))
            else:
                parts.append(self._shard(int(s)).read(key, local))
            order.append(sel)
        if not parts:
            sample = self._shard(0).read(key, slice(0, 0)) if self.shards else torch.empty(0)
            return sample
        out = torch.cat(parts)
        perm = np.concatenate(order)
        if np.any(perm != np.arange(perm.size)):
            inv = np.empty_like(perm)
            inv[perm] = np.arange(perm.size)
            out = out[torch.from_numpy(inv)]
        return out

    def read(self, layer: int, rows: Any) -> torch.Tensor:
        """Activations [len(rows), d_model] of `layer` (rows: slice, range, ints, array), in stored dtype."""
        return self._read_column(self._key(layer), rows)

    def clip_column(self, rows: Any) -> torch.Tensor:
        """The `clip` index of each row."""
        return self._read_column("clip", rows)

    def frame_column(self, rows: Any) -> torch.Tensor:
        """The frame (position) of each row within its clip."""
        return self._read_column("frame", rows)

    def iter_batches(self, layer: int, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                     world_size: int = 1, drop_last: bool = False, chunk_rows: int = 256,
                     buffer_rows: int = 65536, dtype: torch.dtype | None = None) -> Iterator[torch.Tensor]:
        """Stream one pass over `layer` as [b, d_model] batches with bounded memory.

        Shuffling: the store is cut into chunks of `chunk_rows` consecutive rows;
        the chunk order is a seeded random permutation of all chunks in the store;
        chunks are read into a buffer of up to `buffer_rows` rows, whose rows are
        permuted before batches are cut from it. So a batch draws its rows from
        about `buffer_rows / chunk_rows` chunks spread uniformly over the whole
        store (256 chunks with the defaults), and a store that fits in the buffer
        is shuffled exactly. Memory: `buffer_rows x d_model` values. Ranks split
        the chunk permutation (rank::world_size), so with the same seed they see
        disjoint rows; use `seed=epoch` for a new order each epoch.
        Without `shuffle`, rows come in store order (batch b goes to rank b % world_size).

        With `world_size > 1` every rank yields the same number of full batches
        (the smallest rank share // batch_size; the uneven tail is dropped), so
        data-parallel training stays in lockstep.
        """
        key = self._key(layer)
        if batch_size < 1:
            raise MusiclensError("batch size must be >= 1")
        if not 0 <= rank < world_size:
            raise MusiclensError(f"rank {rank} out of range for world size {world_size}")
        cast = (lambda t: t) if dtype is None else (lambda t: t.to(dtype))
        if not shuffle:
            n_full = self.rows // batch_size
            limit = n_full // world_size if world_size > 1 else None
            b = mine = 0
            for start in range(0, self.rows, batch_size):
                stop = min(start + batch_size, self.rows)
                if (drop_last or world_size > 1) and stop - start < batch_size:
                    break
                if b % world_size == rank:
                    if limit is not None and mine >= limit:
                        break
                    yield cast(self._read_column(key, slice(start, stop)))
                    mine += 1
                b += 1
            return
        chunks = []
        for i, s in enumerate(self.shards):
            for a in range(0, s["rows"], chunk_rows):
                chunks.append((i, a, min(a + chunk_rows, s["rows"])))
        rng = np.random.default_rng(seed)
        full_perm = rng.permutation(len(chunks))
        perm = full_perm[rank::world_size]
        limit = None
        if world_size > 1:  # same permutation on every rank: each can count every rank's share
            sizes = np.array([z - a for _, a, z in chunks])
            limit = min(int(sizes[full_perm[r::world_size]].sum()) // batch_size for r in range(world_size))
        row_rng = np.random.default_rng([seed, rank])
        buf: list[torch.Tensor] = []
        buf_n = 0
        carry: torch.Tensor | None = None
        emitted = 0

        def drain(final: bool) -> Iterator[torch.Tensor]:
            nonlocal carry, emitted
            pool = torch.cat(([carry] if carry is not None else []) + buf)
            pool = pool[torch.from_numpy(row_rng.permutation(pool.shape[0]))]
            n_full = pool.shape[0] // batch_size
            for j in range(n_full):
                if limit is not None and emitted >= limit:
                    return
                emitted += 1
                yield cast(pool[j * batch_size:(j + 1) * batch_size])
            rest = pool[n_full * batch_size:]
            carry = rest if rest.shape[0] else None
            if final and carry is not None and not drop_last and limit is None:
                yield cast(carry)
                carry = None

        for ci in perm:
            if limit is not None and emitted >= limit:
                return
            i, a, z = chunks[ci]
            buf.append(self._shard(i).read(key, slice(a, z)))
            buf_n += z - a
            if buf_n >= buffer_rows:
                yield from drain(False)
                buf, buf_n = [], 0
        if buf or carry is not None:
            yield from drain(True)


def verify_store(path: str | os.PathLike) -> list[str]:
    """Check a store: manifest, every shard's sha256, row counts, shapes, dtypes, clip table.

    Returns a list of one-line problems (empty = the store is sound).
    """
    path = Path(path)
    problems: list[str] = []
    if not path.is_dir():
        return [f"{path}: not a directory"]
    mpath = path / MANIFEST
    if not mpath.exists():
        if any(_PARTIAL_RE.match(p.name) for p in path.iterdir()):
            return [f"{path}: multi-process extraction did not finish (no merged manifest); rerun with --resume"]
        return [f"{path}: no {MANIFEST}"]
    try:
        m = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        return [f"{mpath}: not valid JSON ({e})"]
    if m.get("format_version") != FORMAT_VERSION:
        problems.append(f"unsupported format_version {m.get('format_version')}")
        return problems
    if not m.get("complete"):
        problems.append("store incomplete: the extraction was interrupted (rerun it with --resume)")
    layers, d = m.get("layers", []), m.get("d_model")
    st_dtype = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}.get(m.get("dtype"))
    clips_by_shard: dict[str, list[dict]] = {}
    seen_index: set[int] = set()
    for c in m.get("clips", []):
        if c["index"] in seen_index:
            problems.append(f"clip index {c['index']} listed twice")
        seen_index.add(c["index"])
        clips_by_shard.setdefault(c["shard"], []).append(c)
    total = 0
    listed = set()
    for s in m.get("shards", []):
        name = s["file"]
        listed.add(name)
        p = path / name
        if not p.exists():
            problems.append(f"{name}: missing")
            continue
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        if h.hexdigest() != s["sha256"]:
            problems.append(f"{name}: sha256 mismatch (file is corrupted or was modified)")
            continue
        try:
            sh = _Shard(p)
        except Exception as e:  # a matching hash makes this unlikely; report, don't crash
            problems.append(f"{name}: unreadable safetensors header ({e})")
            continue
        rows = s["rows"]
        total += rows
        for layer in layers:
            info = sh.header.get(f"layer.{layer}")
            if info is None:
                problems.append(f"{name}: no tensor layer.{layer}")
            elif info["shape"] != [rows, d] or info["dtype"] != st_dtype:
                problems.append(f"{name}: layer.{layer} is {info['dtype']} {info['shape']}, manifest says "
                                f"{st_dtype} [{rows}, {d}]")
        for col in ("clip", "frame"):
            info = sh.header.get(col)
            if info is None or info["shape"] != [rows]:
                problems.append(f"{name}: column {col} missing or not {rows} rows")
        cl = sorted(clips_by_shard.get(name, []), key=lambda c: c["start"])
        if sum(c["rows"] for c in cl) != rows:
            problems.append(f"{name}: clip table covers {sum(c['rows'] for c in cl)} rows, shard has {rows}")
        elif "clip" in sh.header and sh.header["clip"]["shape"] == [rows]:
            col = sh.read("clip")
            for c in cl:
                seg = col[c["start"]:c["start"] + c["rows"]]
                if seg.numel() != c["rows"] or not bool((seg == c["index"]).all()):
                    problems.append(f"{name}: rows of clip {c['index']} do not match the clip table")
                if f"input_ids.{c['pos']}" not in sh.header:
                    problems.append(f"{name}: input ids of clip {c['index']} missing")
    for c_shard in clips_by_shard:
        if c_shard not in listed:
            problems.append(f"clip table refers to unlisted shard {c_shard}")
    if total != m.get("rows") and not any("missing" in p or "sha256" in p for p in problems):
        problems.append(f"manifest says {m.get('rows')} rows, shards hold {total}")
    for p in path.iterdir():
        if _SHARD_RE.match(p.name) and p.name not in listed:
            problems.append(f"{p.name}: shard file not listed in the manifest")
    return problems


def store_summary(path: str | os.PathLike) -> dict:
    """What `musiclens store info` prints: one dict, no shard reading."""
    path = Path(path)
    if not (path / MANIFEST).exists():
        ActivationStore(path)  # raises the right one-line error
    m = _read_json(path / MANIFEST)
    n_bytes = sum(s.get("bytes", 0) for s in m.get("shards", []))
    return {
        "path": str(path), "format_version": m.get("format_version"), "complete": m.get("complete"),
        "model_name": m.get("model_name"), "weights_hash": m.get("weights_hash"), "layers": m.get("layers"),
        "d_model": m.get("d_model"), "dtype": m.get("dtype"), "rows": m.get("rows"),
        "clips": len(m.get("clips", [])), "shards": len(m.get("shards", [])), "bytes": n_bytes,
        "skipped": len(m.get("skipped", [])), "meta": m.get("meta", {}),
    }


def iter_clip_rows(store: ActivationStore, layer: int, indices: Iterable[int] | None = None
                   ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (clip index, [rows, d_model]) clip by clip, in clip-index order."""
    for c in store.clips if indices is None else [store.clip_info(i) for i in indices]:
        yield c["index"], store.read(layer, store.clip_rows(c["index"]))
