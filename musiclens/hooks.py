"""Capture and inject at residual-stream sites, per CFG branch and step range.

A *site* is named ``layer.<i>``: the output of decoder layer i, i.e. the
residual stream after layer i (``output_hidden_states[i + 1]`` in HF terms,
except for the last layer, whose HF hidden state has the final LayerNorm
applied; ours never does).

Both entry points are context managers that register PyTorch forward hooks
on entry and always remove them on exit, exceptions included, so a failed
experiment can never leave a model silently steered (the mount/unmount idea
of steer-audio's Controller):

    with capture(model, ["layer.2", "layer.5"], branch="cond") as cap:
        model.generate(["a slow organ chorale"], seconds=4)
    cap.stacked("layer.2")            # [B, steps, d]

    with inject(model, [Intervention("layer.3", delta, coef=2.0)], branch="both"):
        model.generate(...)

Branches: during classifier-free-guidance generation the batch is
``[conditional B ; unconditional B]`` and `MusicModel.generate` publishes B in
``model.state.cfg_batch``; ``branch="cond"`` / ``"uncond"`` slice those rows.
Outside CFG generation there is a single branch and `branch` is ignored.

Steps: during generation ``steps=(start, stop)`` restricts a hook to the
decoder calls whose step index (``model.state.step``, 0 = first call) is in
``[start, stop)``; in a teacher-forced pass it restricts to the audio
positions ``[start, stop)`` (prefix positions of MusicGen-Melody excluded).

Layer outputs are tensors in transformers 5.x and tuples in 4.4x; both work.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from .errors import MusiclensError

_SITE = re.compile(r"^layer\.(\d+)$")
BRANCHES = ("both", "cond", "uncond")
MODES = ("add", "ablate", "clamp", "fn")


def site_name(layer: int) -> str:
    return f"layer.{layer}"


def site_layer(site: str) -> int:
    """``"layer.7"`` -> 7 (raises MusiclensError for anything else)."""
    m = _SITE.match(site)
    if not m:
        raise MusiclensError(f"unknown site {site!r}: sites are named layer.<i>")
    return int(m.group(1))


def _module(model, site: str) -> torch.nn.Module:
    i = site_layer(site)
    if not 0 <= i < model.n_layers:
        raise MusiclensError(f"site {site} out of range: {model.name} has layers 0..{model.n_layers - 1}")
    return model.layers[i]


def _get_h(output):
    return output[0] if isinstance(output, tuple) else output


def _set_h(output, h):
    return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h


def _rows(model, n_rows: int, branch: str) -> slice:
    if branch not in BRANCHES:
        raise MusiclensError(f"branch must be one of {BRANCHES}, got {branch!r}")
    B = model.state.cfg_batch
    if branch == "both" or B is None or n_rows != 2 * B:
        return slice(None)
    return slice(0, B) if branch == "cond" else slice(B, 2 * B)


def _positions(model, seq_len: int, steps: tuple[int, int] | None) -> slice | None:
    """Positions of the current call to act on, or None to skip this call."""
    st = model.state
    if steps is None:
        return slice(None)
    start, stop = steps
    if st.generating:
        return slice(None) if start <= st.step < stop else None
    p = st.prefix_len
    lo, hi = p + max(start, 0), min(p + stop, seq_len)
    return slice(lo, hi) if lo < hi else None


# --------------------------------------------------------------------------- capture
class Capture:
    """Activations recorded by `capture`: ``records[site]`` is a list, one tensor per forward call."""

    def __init__(self, sites: Sequence[str]):
        self.records: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
        self.steps: dict[str, list[int]] = {s: [] for s in sites}

    def stacked(self, site: str) -> torch.Tensor:
        """Concatenate all calls along the sequence axis -> [B, T, d]."""
        recs = self.records[site]
        if not recs:
            raise MusiclensError(f"nothing was captured at {site}")
        return torch.cat(recs, dim=1)

    def clear(self) -> None:
        for s in self.records:
            self.records[s].clear()
            self.steps[s].clear()


@contextlib.contextmanager
def capture(model, sites: Sequence[str], branch: str = "both", steps: tuple[int, int] | None = None,
            dtype: torch.dtype | None = None, to_cpu: bool = False) -> Iterator[Capture]:
    """Record the residual stream at `sites` for every forward call inside the block."""
    sites = list(dict.fromkeys(sites))
    cap = Capture(sites)
    handles = []

    def make_hook(site: str) -> Callable:
        def hook(module, args, output):
            if model.state.local_pass:  # context contrast's window forward: not part of the sequence
                return None
            h = _get_h(output)
            pos = _positions(model, h.shape[1], steps)
            if pos is None:
                return None
            x = h[_rows(model, h.shape[0], branch), pos].detach()
            if dtype is not None:
                x = x.to(dtype)
            if to_cpu:
                x = x.cpu()
            cap.records[site].append(x)
            cap.steps[site].append(model.state.step if model.state.generating else -1)
            return None

        hook._musiclens = True
        return hook

    try:
        for s in sites:
            handles.append(_module(model, s).register_forward_hook(make_hook(s)))
        yield cap
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- inject
@dataclass
class Intervention:
    """One edit of the residual stream at one site.

    mode "add":    h <- h + coef * vector
    mode "ablate": h <- h - coef * (h . u) u            (u = vector / |vector|; coef 1 removes it)
    mode "clamp":  h <- h + (coef - h . u) u            (sets the component along u to coef)
    mode "fn":     h <- fn(h)                           (e.g. replace by an SAE reconstruction)
    """

    site: str
    vector: torch.Tensor | None = None
    coef: float = 1.0
    mode: str = "add"
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def validate(self, model) -> None:
        _module(model, self.site)
        if self.mode not in MODES:
            raise MusiclensError(f"intervention mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "fn":
            if self.fn is None:
                raise MusiclensError("mode 'fn' needs fn")
            return
        if self.vector is None:
            raise MusiclensError(f"mode {self.mode!r} needs a vector")
        if self.vector.shape[-1] != model.d_model or self.vector.dim() != 1:
            raise MusiclensError(f"vector for {self.site} has shape {tuple(self.vector.shape)}, "
                                 f"model width is {model.d_model}")
        c = torch.tensor(float(self.coef))
        if not torch.isfinite(c):
            raise MusiclensError(f"strength must be finite, got {self.coef}")
        if not torch.isfinite(self.vector).all():
            raise MusiclensError(f"vector for {self.site} contains NaN or Inf")

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        if self.mode == "fn":
            return self.fn(h)
        if self.mode == "add":
            return h + self.coef * self.vector.to(device=h.device, dtype=h.dtype)
        # projections in float32: in bf16 the clamped component would only be accurate to ~0.4 % of |h|
        u = self.vector.to(device=h.device, dtype=torch.float32)
        u = u / u.norm().clamp_min(1e-12)
        hf = h.float()
        proj = (hf * u).sum(-1, keepdim=True)
        if self.mode == "ablate":
            return (hf - self.coef * proj * u).to(h.dtype)
        return (hf + (self.coef - proj) * u).to(h.dtype)  # clamp


@contextlib.contextmanager
def inject(model, interventions: Sequence[Intervention], branch: str = "both",
           steps: tuple[int, int] | None = None) -> Iterator[None]:
    """Apply `interventions` to every forward call inside the block (hooks removed on exit)."""
    by_site: dict[str, list[Intervention]] = {}
    for iv in interventions:
        iv.validate(model)
        by_site.setdefault(iv.site, []).append(iv)
    if branch not in BRANCHES:
        raise MusiclensError(f"branch must be one of {BRANCHES}, got {branch!r}")
    handles = []

    def make_hook(ivs: list[Intervention]) -> Callable:
        def hook(module, args, output):
            h = _get_h(output)
            pos = _positions(model, h.shape[1], steps)
            if pos is None:
                return None
            rows = _rows(model, h.shape[0], branch)
            if rows == slice(None) and pos == slice(None):
                new = h
                for iv in ivs:
                    new = iv.apply(new)
            else:
                new = h.clone()
                part = new[rows, pos]
                for iv in ivs:
                    part = iv.apply(part)
                new[rows, pos] = part
            return _set_h(output, new)

        hook._musiclens = True
        return hook

    try:
        for site, ivs in by_site.items():
            handles.append(_module(model, site).register_forward_hook(make_hook(ivs)))
        yield
    finally:
        for h in handles:
            h.remove()


def active_hooks(model) -> int:
    """Number of musiclens forward hooks currently registered on the decoder layers (0 when clean)."""
    return sum(1 for layer in model.layers for fn in layer._forward_hooks.values() if getattr(fn, "_musiclens", False))
