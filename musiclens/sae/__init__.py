"""Sparse autoencoders on residual activations: TopK, BatchTopK, RMSNorm-L1; SAELens layout.

    from musiclens.sae import load_sae
    sae = load_sae("runs/sae_l12")            # ours or a SAELens TopK / JumpReLU / standard SAE
    latents, recon = sae(x)                   # x [..., d_in] raw residual activations
    sae.W_dec[j]                              # feature j's (unit) direction

Modules: `model` (the SAE class), `kernels` (sparse decode / encoder backward),
`train` (multi-SAE trainer), `data` (store batches, NaN policy), `metrics`,
`splice` (spliced evaluation through the model), `io` (SAELens format),
`pipeline` (`musiclens train-sae`).
"""

from .io import load_sae, normalize_hook_name, read_cfg, write_sae_files
from .model import ARCHITECTURES, SAE, SAEConfig

__all__ = ["SAE", "SAEConfig", "ARCHITECTURES", "load_sae", "read_cfg", "write_sae_files", "normalize_hook_name"]
