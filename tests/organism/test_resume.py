"""Resume helpers: random states survive a checkpoint round trip; shape mismatches are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musiclens.errors import MusiclensError
from musiclens.organism.resume import load_checkpoint, load_weights, restore_rng, rng_state


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    rng.random(5), torch.rand(5)
    torch.save(rng_state(rng), tmp_path / "ckpt.pt")
    want = (rng.random(4), torch.rand(4))
    other = np.random.default_rng(99)
    torch.manual_seed(99)
    restore_rng(load_checkpoint(tmp_path / "ckpt.pt", "cpu"), other)
    assert np.array_equal(other.random(4), want[0]) and torch.equal(torch.rand(4), want[1])


def test_unreadable_checkpoint_and_wrong_shape_are_one_line_errors(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MusiclensError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt", "cpu")
    with pytest.raises(MusiclensError, match="another shape") as e:
        load_weights(torch.nn.Linear(4, 2), torch.nn.Linear(8, 2).state_dict(), tmp_path / "x.pt", "decoder")
    assert "\n" not in str(e.value) and "weight" in str(e.value)
