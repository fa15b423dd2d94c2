"""Shared fixtures. Tests use real tiny HF models (or the organism), never mocks."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores in CI: keep torch from oversubscribing when pytest runs many small ops.
torch.set_num_threads(int(os.environ.get("MUSICLENS_TEST_THREADS", "2")))


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
