"""Shared fixtures. Tests use real tiny HF models (or the organism), never mocks."""

from __future__ import annotations

import os

import pytest
import torch

# Tiny models run many small ops: one thread is faster than two (and CI has only two cores).
torch.set_num_threads(int(os.environ.get("MUSICLENS_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_model():
    """Cross-attention MusicGen with deterministic random weights."""
    from musiclens import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="session")
def tiny_melody():
    """MusicGen-Melody (prepended conditioning) with deterministic random weights."""
    from musiclens import load_model

    return load_model("tiny-random-melody")
