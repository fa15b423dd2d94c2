"""Training-time residual vector quantisation that writes into HF EnCodec's buffers.

HF's `EncodecModel` can encode and decode but has no training path for its
quantiser. Here the codebooks are learned the way EnCodec does it (EMA of
assigned vectors, straight-through gradients, commitment loss) and stored in
the HF buffers `quantizer.layers[i].codebook.{embed, embed_avg, cluster_size,
inited}`, so the standard `encode` / `decode` (and MusicGen) use them as is.

Lessons baked in (DESIGN.md): k-means on an untrained encoder's output
collapsed to a handful of codes in the prototype. The codec stage therefore
rescales the encoder's output to unit spread first (`codec.init_latent_scale`,
so `kmeans_init` can run at step 0), or trains a plain autoencoder for
`CodecTrainConfig.warmup_steps`; codes that fall out of use are restarted on random
current vectors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _codebooks(codec):
    return [layer.codebook for layer in codec.quantizer.layers[: n_quantizers(codec)]]


def n_quantizers(codec) -> int:
    return codec.config.num_quantizers


def _nearest(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(1)[None]
    return dist.argmin(dim=1)


@torch.no_grad()
def kmeans_init(codec, z: torch.Tensor, seed: int = 0, iters: int = 25, count_scale: float = 1.0) -> list[int]:
    """Initialise every codebook by k-means on residuals of `z` [N, D]; returns codes used per layer.

    `count_scale` turns cluster counts into the per-batch usage the EMA
    statistics track (1 / number of batches in `z`), so dead-code detection
    works from the first step.
    """
    import warnings

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    residual = z.detach().float().cpu()
    used = []
    for cb in _codebooks(codec):
        k = cb.embed.shape[0]
        with warnings.catch_warnings():
            # fewer distinct residuals than codes (small corpora, deep codebooks): the codes left empty
            # are what `used` counts, and training restarts dead codes; sklearn's warning says no more
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=k, n_init=1, max_iter=iters, random_state=seed).fit(residual.numpy())
        centers = torch.tensor(km.cluster_centers_, dtype=torch.float32)
        counts = torch.bincount(torch.tensor(km.labels_, dtype=torch.long), minlength=k).float()
        size = (counts * count_scale).clamp(min=1e-3)
        cb.embed.copy_(centers.to(cb.embed))
        cb.embed_avg.copy_((centers * size[:, None]).to(cb.embed))
        cb.cluster_size.copy_(size.to(cb.embed))
        cb.inited.fill_(1)
        used.append(int((counts > 0).sum()))
        residual = residual - centers[torch.tensor(km.labels_, dtype=torch.long)]
    return used


def quantize(codec, z: torch.Tensor, train: bool, decay: float = 0.99, eps: float = 1e-5):
    """Residual-quantise encoder output z [B, D, T].

    Returns (z_q with straight-through gradient [B, D, T], codes [B, K, T],
    commitment loss, residual inputs per layer [N, D] for dead-code restarts).
    With train=True the EMA codebook statistics are updated.
    """
    b, d, t = z.shape
    flat = z.permute(0, 2, 1).reshape(-1, d)
    residual = flat.detach()
    quantized = torch.zeros_like(residual)
    codes, commit, inputs = [], 0.0, []
    for cb in _codebooks(codec):
        idx = _nearest(residual, cb.embed)
        q = cb.embed[idx]
        commit = commit + F.mse_loss(flat - quantized, q)  # pull the encoder towards its codes
        if train:
            with torch.no_grad():
                k = cb.embed.shape[0]
                counts = torch.bincount(idx, minlength=k).to(residual.dtype)
                sums = torch.zeros_like(cb.embed).index_add_(0, idx, residual)
                cb.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
                cb.embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
                n = cb.cluster_size.sum()
                size = (cb.cluster_size + eps) / (n + k * eps) * n
                cb.embed.copy_(cb.embed_avg / size[:, None])
        inputs.append(residual)
        quantized = quantized + q
        residual = residual - q
        codes.append(idx.view(b, t))
    zq = flat + (quantized - flat).detach()
    return zq.view(b, t, d).permute(0, 2, 1), torch.stack(codes, 1), commit, inputs


@torch.no_grad()
def restart_dead(codec, inputs: list[torch.Tensor], threshold: float, rng: np.random.Generator) -> int:
    """Replace codes whose EMA usage fell below `threshold` by random current residual vectors."""
    restarted = 0
    for cb, x in zip(_codebooks(codec), inputs):
        dead = torch.nonzero(cb.cluster_size < threshold).flatten()
        if len(dead) == 0:
            continue
        pick = torch.as_tensor(rng.integers(0, x.shape[0], size=len(dead)), device=x.device)
        new = x[pick] + 1e-3 * torch.randn_like(x[pick])
        size = max(threshold * 2, 1e-3)  # alive, at about the usage a fair code gets
        cb.embed[dead] = new
        cb.embed_avg[dead] = new * size
        cb.cluster_size[dead] = size
        restarted += len(dead)
    return restarted


@torch.no_grad()
def usage(codec, codes: torch.Tensor) -> list[int]:
    """Distinct codes used per codebook in codes [B, K, T]."""
    return [int(torch.unique(codes[:, k]).numel()) for k in range(codes.shape[1])]
