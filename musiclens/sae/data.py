"""Where SAE training rows come from: the activation store (or any tensor), with bad rows filtered.

Why a separate module: the trainer only needs "an iterator of [b, d_in]
float batches for epoch e"; keeping the store, the NaN/Inf policy and the
up-front validation here lets tests and benchmarks feed plain tensors through
exactly the same training code.

NaN/Inf policy: a row with any non-finite value is dropped and counted; if
the dropped fraction exceeds `max_bad_fraction` (after at least
`min_rows_before_check` rows, so one early bad row does not abort a run) the
run stops with a one-line error. Extraction bugs (a NaN-producing layer,
float16 overflow) then surface instead of silently poisoning the SAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..errors import MusiclensError

BatchFn = Callable[[int], Iterator[torch.Tensor]]   # epoch -> batches


@dataclass
class BadRowCounter:
    """Counts rows seen and rows dropped for non-finite values."""

    max_bad_fraction: float = 0.001
    min_rows_before_check: int = 1000
    seen: int = 0
    bad: int = 0

    def filter(self, x: torch.Tensor) -> torch.Tensor:
        """Drop non-finite rows; raise once too many were bad."""
        self.seen += x.shape[0]
        ok = torch.isfinite(x).all(dim=-1)
        n_bad = int(x.shape[0] - ok.sum())
        if n_bad:
            self.bad += n_bad
            x = x[ok]
        if self.bad and self.seen >= self.min_rows_before_check and self.bad > self.max_bad_fraction * self.seen:
            raise MusiclensError(f"{self.bad} of {self.seen} activation rows contain NaN/Inf "
                                 f"(more than {self.max_bad_fraction:.3%}); the store is damaged or the "
                                 "extraction overflowed (try --store-dtype float32 when extracting)")
        return x

    def state_dict(self) -> dict:
        return {"seen": self.seen, "bad": self.bad}

    def load_state_dict(self, d: dict) -> None:
        self.seen, self.bad = int(d["seen"]), int(d["bad"])


def open_store(path: str, layer: int):
    """Open a store and check the layer exists and it has rows (one-line errors otherwise)."""
    from ..store import ActivationStore

    store = ActivationStore(path)
    if int(layer) not in store.layers:
        raise MusiclensError(f"layer {layer} is not in store {path} (layers: {store.layers})")
    if store.rows == 0:
        raise MusiclensError(f"store {path} is empty (0 rows)")
    return store


def store_batches(store, layer: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                  device: str | torch.device = "cpu") -> BatchFn:
    """Epoch e -> shuffled float32 batches of `layer` (seed + e, this rank's share, full batches only)."""
    def fn(epoch: int) -> Iterator[torch.Tensor]:
        for x in store.iter_batches(layer, batch_size, shuffle=True, seed=seed + epoch, rank=rank,
                                    world_size=world_size, drop_last=True):
            yield x.to(device=device, dtype=torch.float32, non_blocking=True)
    return fn


def tensor_batches(data: torch.Tensor, batch_size: int, seed: int = 0, rank: int = 0,
                   world_size: int = 1) -> BatchFn:
    """Epoch e -> shuffled batches of an in-memory tensor; ranks take disjoint slices of each global batch.

    Global batch g of epoch e is rows perm_e[g·B·W : (g+1)·B·W]; rank r takes its
    r-th slice of B rows, so W processes see exactly the rows one process sees
    with batch B·W (what the DDP test relies on).
    """
    def fn(epoch: int) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(seed + epoch)
        perm = torch.randperm(data.shape[0], generator=g)
        gb = batch_size * world_size
        for start in range(0, data.shape[0] - gb + 1, gb):
            rows = perm[start + rank * batch_size:start + (rank + 1) * batch_size]
            yield data[rows].float()
    return fn


def sample_rows(batches: BatchFn, n: int, counter: BadRowCounter | None = None) -> torch.Tensor:
    """Up to `n` finite rows from the start of `batches(0)` (for initialisation and evaluation)."""
    got, total = [], 0
    for x in batches(0):
        if counter is not None:
            x = counter.filter(x)
        else:
            x = x[torch.isfinite(x).all(-1)]
        got.append(x)
        total += x.shape[0]
        if total >= n:
            break
    if not got or total == 0:
        raise MusiclensError("no finite activation rows to sample (empty store or every row is NaN/Inf)")
    return torch.cat(got)[:n]
