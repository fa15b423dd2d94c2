"""Synthetic data with known sparse directions, shared by the SAE tests."""

from __future__ import annotations

import pytest
import torch


def sparse_directions_data(n: int, d: int = 32, n_feat: int = 64, active: int = 3, noise: float = 0.01,
                           offset: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows = sum of `active` random unit directions (of `n_feat`) with magnitudes in [0.5, 2.5) + offset + noise.

    Returns (rows [n, d], directions [n_feat, d]).
    """
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_feat, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(n_feat, generator=g)[:active] for _ in range(n)])
    mag = torch.rand(n, active, generator=g) * 2 + 0.5
    X = torch.zeros(n, d).index_add_(0, torch.arange(n).repeat_interleave(active),
                                      mag.reshape(-1, 1) * D[idx.reshape(-1)])
    X += noise * torch.randn(n, d, generator=g) + offset
    return X, D


@pytest.fixture(scope="module")
def synthetic():
    return sparse_directions_data(12000)


@pytest.fixture(autouse=True)
def _one_thread():
    """These SAEs are tiny (d 16-32): one thread is faster than two, which spend their time synchronising
    (and much slower still when the two cores are shared with other jobs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
