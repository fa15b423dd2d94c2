"""The SAE module: TopK, BatchTopK (JumpReLU at inference), ReLU/L1 and RMSNorm-L1 behind one interface.

Why one class: every consumer (feature statistics, steering, spliced
evaluation) needs only `encode`, `decode` and `forward`, and every
architecture here is the same affine encoder/decoder pair with a different
activation and an optional per-row input normalisation that is undone on
the way out. Keeping them in one module means a SAELens checkpoint, a
BatchTopK SAE and an RMSNorm-L1 SAE load and run through identical code.

Maths (x ∈ R^d_in, SAELens weight layout):

    x_n   = normalise(x)                     (identity | RMSNorm | LayerNorm)
    pre   = (x_n − b_dec) W_enc + b_enc      (W_enc: [d_in, d_sae])
    h     = act(pre)                         (TopK∘ReLU | ReLU·[pre > θ] | ReLU)
    x̂_n   = h W_dec + b_dec                  (W_dec: [d_sae, d_in])
    x̂     = denormalise(x̂_n)                (the stats of *this* x)

Because the normalisation stats come from the input row, editing latents
(adding a feature, clamping one) and decoding with the same stats keeps the
edited row at the original row's scale: "the normalisation is undone on
decode so edits stay in distribution" (the audio-latent SAE paper's
RMSNorm-L1 recipe). `normalize` / `encode_normalized` / `decode(h, stats)`
expose those pieces; `edit(x, fn)` strings them together.

The encoder weight is held as `enc_weight` [d_sae, d_in] (row j = latent j's
encoder direction) so the sparse encoder gradient in `kernels.py` scatters
into contiguous rows; `W_enc` is its transposed view in SAELens layout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..errors import MusiclensError
from . import kernels

# architecture -> (activation, normalisation)
ARCHITECTURES = {
    "topk": ("topk", "none"),
    "batchtopk": ("jumprelu", "none"),   # top k·B over the batch while training, threshold θ after
    "jumprelu": ("jumprelu", "none"),    # SAELens JumpReLU / BatchTopK-at-inference checkpoints
    "standard": ("relu", "none"),        # SAELens "standard" ReLU SAE (L1-trained)
    "relu_l1": ("relu", "none"),
    "rmsnorm_l1": ("relu", "rms"),       # RMSNorm on the input, ReLU, MSE + λ·L1 (audio-latent paper)
}
NORMALISATIONS = ("none", "rms", "layer_norm")
RMS_EPS = 1e-12
LN_EPS = 1e-5


@dataclass
class SAEConfig:
    """What `cfg.json` holds (musiclens names; `io.py` maps to and from SAELens's)."""

    d_in: int
    d_sae: int
    architecture: str = "topk"
    k: int | None = None
    hook_name: str = "layer.0"
    model_name: str = ""
    normalization: str | None = None   # None = the architecture's own (see ARCHITECTURES)
    dtype: str = "float32"
    apply_b_dec_to_input: bool = True
    l1_coefficient: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other keys read from a foreign cfg.json, kept

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise MusiclensError(f"unknown SAE architecture {self.architecture!r} "
                                 f"(known: {', '.join(ARCHITECTURES)})")
        if self.normalization is None:
            self.normalization = ARCHITECTURES[self.architecture][1]
        if self.normalization not in NORMALISATIONS:
            raise MusiclensError(f"unknown SAE normalisation {self.normalization!r} "
                                 f"(known: {', '.join(NORMALISATIONS)})")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise MusiclensError(f"SAE sizes must be positive (d_in {self.d_in}, d_sae {self.d_sae})")
        if self.activation in ("topk",) or self.architecture == "batchtopk":
            if self.k is None or self.k <= 0:
                raise MusiclensError(f"architecture {self.architecture} needs k >= 1")
            if self.k >= self.d_sae:
                raise MusiclensError(f"k ({self.k}) must be smaller than the number of latents d_sae ({self.d_sae})")

    @property
    def activation(self) -> str:
        return ARCHITECTURES[self.architecture][0]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SAE(nn.Module):
    """A sparse autoencoder; see the module docstring for the maths."""

    def __init__(self, cfg: SAEConfig, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.cfg = cfg
        dtype = dtype or getattr(torch, cfg.dtype)
        kw = {"device": device, "dtype": dtype}
        self.enc_weight = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in, **kw))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, **kw))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in, **kw))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, **kw))
        if cfg.activation == "jumprelu":
            self.register_buffer("threshold", torch.zeros(cfg.d_sae, **kw))
        else:
            self.threshold = None

    # -- weights ---------------------------------------------------------------
    @property
    def W_enc(self) -> torch.Tensor:
        """Encoder in SAELens layout [d_in, d_sae] (a view of `enc_weight`)."""
        return self.enc_weight.t()

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None, b_dec: torch.Tensor | None = None) -> None:
        """Random unit-norm decoder rows, W_enc = W_decᵀ, zero encoder bias, b_dec as given."""
        w = torch.randn(self.d_sae, self.d_in, generator=generator, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        self.enc_weight.copy_(w)
        self.b_enc.zero_()
        self.b_dec.zero_() if b_dec is None else self.b_dec.copy_(b_dec)
        if self.threshold is not None:
            self.threshold.zero_()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale every decoder row to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # -- normalisation -----------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        """Per-row input normalisation; returns the normalised rows and the stats to undo it."""
        x = x.to(self.W_dec.dtype)
        norm = self.cfg.normalization
        if norm == "none":
            return x, None
        if norm == "rms":
            # RMS(x) = ‖x‖/√d, as SAELens's "constant_norm_rescale" (x·√d/‖x‖); no gain (it would fold away)
            scale = (x.norm(dim=-1, keepdim=True) / self.d_in ** 0.5).clamp_min(RMS_EPS)
            return x / scale, (None, scale)
        # SAELens "layer_norm": unbiased std, eps added to the std
        mu = x.mean(-1, keepdim=True)
        std = (x - mu).std(dim=-1, keepdim=True) + LN_EPS
        return (x - mu) / std, (mu, std)

    @staticmethod
    def denormalize(y: torch.Tensor, stats: tuple | None) -> torch.Tensor:
        """Undo `normalize` with the stats of the row the latents came from."""
        if stats is None:
            return y
        mu, scale = stats
        y = y * scale
        return y if mu is None else y + mu

    # -- encoder -----------------------------------------------------------------
    def pre_acts(self, xn: torch.Tensor) -> torch.Tensor:
        """Dense encoder pre-activations of already-normalised rows."""
        x_c = xn - self.b_dec if self.cfg.apply_b_dec_to_input else xn
        return torch.addmm(self.b_enc, x_c.reshape(-1, self.d_in), self.enc_weight.t()).reshape(
            *xn.shape[:-1], self.d_sae)

    def encode_normalized(self, xn: torch.Tensor) -> torch.Tensor:
        """Dense latents [..., d_sae] of already-normalised rows."""
        pre = self.pre_acts(xn)
        act = self.cfg.activation
        if act == "topk":
            vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        if act == "jumprelu":
            return pre.relu() * (pre > self.threshold)
        return pre.relu()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents [..., d_sae] of raw rows [..., d_in]."""
        return self.encode_normalized(self.normalize(x)[0])

    def encode_topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
        """Sparse TopK code: values [N, k], latent indices [N, k], normalisation stats (TopK SAEs only)."""
        if self.cfg.activation != "topk":
            raise MusiclensError(f"encode_topk needs a TopK SAE, this one is {self.cfg.architecture}")
        xn, stats = self.normalize(x.reshape(-1, self.d_in))
        vals, idx = self.pre_acts(xn).topk(self.cfg.k, dim=-1, sorted=False)
        return vals.relu(), idx, stats

    # -- decoder -----------------------------------------------------------------
    def decode(self, h: torch.Tensor, stats: tuple | None = None) -> torch.Tensor:
        """Reconstruction from dense latents; `stats` (from `normalize`) undoes the input normalisation.

        Without `stats` an RMS/LayerNorm SAE returns the reconstruction in normalised space.
        """
        y = h.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        return self.denormalize(y, stats)

    def decode_sparse(self, idx: torch.Tensor, vals: torch.Tensor, stats: tuple | None = None) -> torch.Tensor:
        """Reconstruction from a sparse code (gathers only the active decoder rows)."""
        y = kernels.sparse_decode(idx, vals, self.W_dec) + self.b_dec
        return self.denormalize(y, stats)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents [..., d_sae], reconstruction [..., d_in]) of raw rows [..., d_in]."""
        shape = x.shape
        xn, stats = self.normalize(x.reshape(-1, self.d_in))
        if self.cfg.activation == "topk":
            vals, idx = self.pre_acts(xn).topk(self.cfg.k, dim=-1, sorted=False)
            vals = vals.relu()
            recon = self.decode_sparse(idx, vals, stats)
            h = torch.zeros(xn.shape[0], self.d_sae, dtype=vals.dtype, device=vals.device).scatter_(-1, idx, vals)
        else:
            h = self.encode_normalized(xn)
            recon = self.decode(h, stats)
        return h.reshape(*shape[:-1], self.d_sae), recon.reshape(shape)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction only, same shape and dtype as `x` (TopK: never forms dense latents)."""
        if self.cfg.activation == "topk":
            vals, idx, stats = self.encode_topk(x)
            return self.decode_sparse(idx, vals, stats).reshape(x.shape).to(x.dtype)
        return self.forward(x)[1].to(x.dtype)

    def edit(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Encode `x`, apply `fn` to the dense latents, decode at `x`'s own normalisation scale."""
        shape = x.shape
        xn, stats = self.normalize(x.reshape(-1, self.d_in))
        h = fn(self.encode_normalized(xn))
        return self.decode(h, stats).reshape(shape).to(x.dtype)
