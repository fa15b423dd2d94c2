"""What every training stage saves and restores to resume exactly where it stopped.

Why a module of its own: the codec, decoder and LM stages all checkpoint the
same random states and hit the same traps on resume:

* `torch.load(map_location="cuda")` moves *every* tensor to the GPU,
  including the CPU generator's state, which `torch.set_rng_state` only takes
  as a CPU ByteTensor; so states are moved back before they are restored;
* on a GPU the noise and dead-code restarts draw from the CUDA generator,
  which `torch.get_rng_state` does not cover, so it is saved too;
* resuming with another model shape (a changed `--codec-filters`,
  `--lm-d-model`) must say so in one line, not in a state-dict traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import MusiclensError


def rng_state(rng: np.random.Generator) -> dict:
    """The numpy, torch CPU and (when present) CUDA generator states, for a checkpoint."""
    state = {"rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, rng: np.random.Generator) -> None:
    """Restore what `rng_state` saved, whichever device `torch.load` mapped it to."""
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"].cpu())
    cuda = state.get("cuda_rng")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def load_checkpoint(path: Path, device: str) -> dict:
    """A stage checkpoint (our own pickles, hence weights_only=False), with a one-line error if unreadable."""
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise MusiclensError(f"cannot read checkpoint {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def load_weights(module: torch.nn.Module, weights: dict, path: Path, what: str) -> None:
    """`module.load_state_dict(weights)`, or a one-line error naming the checkpoint and the first mismatch."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e).splitlines()[0])
        raise MusiclensError(f"{path} holds a {what} of another shape than the options ask for "
                             f"(resume with the options it was trained with): {detail}")
