"""SAELens-layout save and load: `cfg.json` + `sae_weights.safetensors`.

Why SAELens's layout: it is what published SAEs (including MusicGen ones)
use and what users' tools read, so our SAEs load in `sae_lens` and theirs load
here. We write the SAELens 6 config (`architecture`, `d_in`, `d_sae`, `dtype`,
`apply_b_dec_to_input`, `normalize_activations`, `k`, `metadata{model_name,
hook_name, ...}`) plus top-level `hook_name`, `model_name` and `musiclens`
keys for humans; SAELens ignores keys it does not know.

Architecture mapping (ours -> SAELens):
- topk        -> "topk"      (TopK then ReLU, identical maths)
- batchtopk   -> "jumprelu"  (as SAELens saves BatchTopK: ReLU·[pre > θ], θ per latent)
- rmsnorm_l1  -> "standard" with normalize_activations "constant_norm_rescale"
                 (x·√d/‖x‖ in, undone out: exactly RMSNorm without a gain)
- standard / relu_l1 -> "standard"

We also read SAELens < 6 configs (`activation_fn_str: "topk"`,
`activation_fn_kwargs.k`, `hook_point`), fold `rescale_acts_by_decoder_norm`
and a given `norm_scaling_factor`, and map hook names such as
`hook_layers.<i>` (the published MusicGen SAEs) or `blocks.<i>.hook_resid_post`
to our `layer.<i>`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import MusiclensError
from ..io import atomic_path, write_json
from .model import SAE, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"   # the config layout we write (SAELens >= 6 reads it as-is)

_TO_SAELENS_ARCH = {"topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu",
                    "standard": "standard", "relu_l1": "standard", "rmsnorm_l1": "standard"}
_TO_SAELENS_NORM = {"none": "none", "rms": "constant_norm_rescale", "layer_norm": "layer_norm"}
_FROM_SAELENS_NORM = {v: k for k, v in _TO_SAELENS_NORM.items()}

_HOOK_PATTERNS = [
    re.compile(r"^(?:hook_)?layers?[._](\d+)$"),                       # hook_layers.3, layer.3
    re.compile(r"^(?:model\.)?(?:decoder\.)*layers\.(\d+)(?:\.hook_resid_post|\.output)?$"),
    re.compile(r"^blocks\.(\d+)\.hook_resid_post$"),                   # TransformerLens residual after block i
]


def normalize_hook_name(name: str | None) -> str:
    """Map SAELens / HF hook names onto musiclens site names (`layer.<i>`); others are kept."""
    if not name:
        return "layer.0"
    for pat in _HOOK_PATTERNS:
        m = pat.match(name)
        if m:
            return f"layer.{int(m.group(1))}"
    return name


def layer_index(hook_name: str) -> int:
    """The decoder layer index of a `layer.<i>` site."""
    m = re.fullmatch(r"layer\.(\d+)", normalize_hook_name(hook_name))
    if not m:
        raise MusiclensError(f"SAE hook {hook_name!r} is not a decoder layer output (layer.<i>)")
    return int(m.group(1))


def _dtype(name: str) -> torch.dtype:
    name = str(name).replace("torch.", "")
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise MusiclensError(f"unknown dtype {name!r} in SAE config")
    return dt


def saelens_cfg(sae: SAE, extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cfg.json dictionary for `sae`."""
    c = sae.cfg
    meta = {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None,
            "model_name": c.model_name, "hook_name": c.hook_name, "hook_head_index": None,
            "prepend_bos": False, "context_size": None, "dataset_path": None,
            "musiclens_version": __version__, "musiclens_architecture": c.architecture}
    if c.l1_coefficient is not None:
        meta["l1_coefficient"] = c.l1_coefficient
    meta.update(extra_metadata or {})
    cfg: dict[str, Any] = {
        "architecture": _TO_SAELENS_ARCH[c.architecture],
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": c.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": _TO_SAELENS_NORM[c.normalization],
        "reshape_activations": "none",
    }
    if c.k is not None:
        cfg["k"] = c.k
    if c.architecture == "topk":
        cfg["rescale_acts_by_decoder_norm"] = False
    cfg["hook_name"] = c.hook_name
    cfg["model_name"] = c.model_name
    cfg["metadata"] = meta
    return cfg


def state_dict_for_saving(sae: SAE, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """SAELens tensor names and layouts (W_enc [d_in, d_sae], W_dec [d_sae, d_in])."""
    dtype = dtype or _dtype(sae.cfg.dtype)
    out = {
        "W_enc": sae.enc_weight.detach().t().contiguous(),
        "b_enc": sae.b_enc.detach(),
        "W_dec": sae.W_dec.detach(),
        "b_dec": sae.b_dec.detach(),
    }
    if sae.threshold is not None:
        out["threshold"] = sae.threshold.detach()
    return {k: v.to("cpu", dtype).contiguous() for k, v in out.items()}


def write_sae_files(sae: SAE, directory: str | Path, extra_metadata: dict[str, Any] | None = None) -> None:
    """Write cfg.json and sae_weights.safetensors into an existing directory (each atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state_dict_for_saving(sae), str(tmp), metadata={"format": "pt"})
    write_json(directory / CFG_FILE, saelens_cfg(sae, extra_metadata))


def _parse_cfg(raw: dict[str, Any], path: Path) -> tuple[SAEConfig, dict[str, Any]]:
    """SAELens (any version) or musiclens cfg.json -> (SAEConfig, fold instructions)."""
    meta = raw.get("metadata") or {}
    if not isinstance(meta, dict):
        meta = {}
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise MusiclensError(f"{path}: cfg.json lacks integer d_in / d_sae")
    act_fn = raw.get("activation_fn_str", raw.get("activation_fn"))
    kwargs = raw.get("activation_fn_kwargs") or {}
    arch = raw.get("architecture", "standard")
    k = raw.get("k", kwargs.get("k"))
    if act_fn == "topk" and arch == "standard":
        arch = "topk"                               # SAELens < 6 TopK
    ours = meta.get("musiclens_architecture") or raw.get("musiclens_architecture")
    norm_raw = raw.get("normalize_activations", "none")
    if isinstance(norm_raw, bool) or norm_raw is None:
        norm_raw = "expected_average_only_in" if norm_raw else "none"
    fold: dict[str, Any] = {"rescale_by_decoder_norm": bool(raw.get("rescale_acts_by_decoder_norm", False)),
                            "norm_scaling_factor": None, "topk_threshold": False}
    if norm_raw == "expected_average_only_in":
        s = raw.get("norm_scaling_factor", meta.get("norm_scaling_factor"))
        if s is None:
            raise MusiclensError(f"{path}: normalize_activations 'expected_average_only_in' without a "
                                 "norm_scaling_factor; fold it into the weights first")
        fold["norm_scaling_factor"] = float(s)
        norm_raw = "none"
    if norm_raw not in _FROM_SAELENS_NORM:
        raise MusiclensError(f"{path}: unsupported normalize_activations {norm_raw!r}")
    norm = _FROM_SAELENS_NORM[norm_raw]
    if arch == "topk":
        architecture = "topk"
    elif arch in ("jumprelu",):
        architecture = "batchtopk" if ours == "batchtopk" else "jumprelu"
    elif arch == "batchtopk":                       # a SAELens training checkpoint
        architecture, fold["topk_threshold"] = "batchtopk", True
    elif arch == "standard":
        if act_fn not in (None, "relu"):
            raise MusiclensError(f"{path}: unsupported activation {act_fn!r} for a standard SAE")
        architecture = ours if ours in ("rmsnorm_l1", "relu_l1") else ("rmsnorm_l1" if norm == "rms" else "standard")
    else:
        raise MusiclensError(f"{path}: unsupported SAE architecture {arch!r} (supported: topk, jumprelu, "
                             "batchtopk, standard)")
    if architecture != "batchtopk" and architecture != "topk":
        k = None if architecture != "jumprelu" else k
    hook = raw.get("hook_name") or meta.get("hook_name") or raw.get("hook_point")
    model_name = raw.get("model_name") or meta.get("model_name") or ""
    known = {"architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
             "reshape_activations", "k", "rescale_acts_by_decoder_norm", "hook_name", "model_name", "metadata",
             "activation_fn_str", "activation_fn", "activation_fn_kwargs", "hook_point"}
    extra = {k2: v for k2, v in raw.items() if k2 not in known}
    if meta:
        extra["metadata"] = meta
    if raw.get("reshape_activations", "none") not in ("none", None):
        raise MusiclensError(f"{path}: reshape_activations {raw['reshape_activations']!r} is not supported")
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture=architecture,
                    k=int(k) if k is not None and architecture in ("topk", "batchtopk") else None,
                    hook_name=normalize_hook_name(hook), model_name=str(model_name), normalization=norm,
                    dtype=str(raw.get("dtype", "float32")).replace("torch.", ""),
                    apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
                    l1_coefficient=meta.get("l1_coefficient", raw.get("l1_coefficient")), extra=extra)
    return cfg, fold


def read_cfg(directory: str | Path) -> SAEConfig:
    """Only the config of an SAE directory."""
    directory = Path(directory)
    try:
        raw = json.loads((directory / CFG_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise MusiclensError(f"not an SAE directory (no {CFG_FILE}): {directory}")
    except json.JSONDecodeError as e:
        raise MusiclensError(f"{directory / CFG_FILE}: invalid JSON: {e}")
    return _parse_cfg(raw, directory / CFG_FILE)[0]


def load_sae(directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None) -> SAE:
    """Load an SAE saved by musiclens or SAELens (TopK, JumpReLU/BatchTopK, standard ReLU)."""
    directory = Path(directory)
    try:
        raw = json.loads((directory / CFG_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise MusiclensError(f"not an SAE directory (no {CFG_FILE}): {directory}")
    except json.JSONDecodeError as e:
        raise MusiclensError(f"{directory / CFG_FILE}: invalid JSON: {e}")
    cfg, fold = _parse_cfg(raw, directory / CFG_FILE)
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except FileNotFoundError:
        raise MusiclensError(f"SAE weights missing: {directory / WEIGHTS_FILE}")
    except SafetensorError as e:
        raise MusiclensError(f"{directory / WEIGHTS_FILE}: unreadable safetensors: {e}")
    if isinstance(dtype, str):
        dtype = _dtype(dtype)
    dtype = dtype or _dtype(cfg.dtype)
    cfg.dtype = str(dtype).replace("torch.", "")
    need = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    for name, shape in need.items():
        if name not in state:
            raise MusiclensError(f"{directory / WEIGHTS_FILE}: tensor {name} missing")
        if tuple(state[name].shape) != shape:
            raise MusiclensError(f"{directory / WEIGHTS_FILE}: {name} has shape {tuple(state[name].shape)}, "
                                 f"cfg.json says {shape}")
    W_enc = state["W_enc"].float()
    b_enc = state["b_enc"].float()
    W_dec = state["W_dec"].float()
    b_dec = state["b_dec"].float()
    threshold = None
    if cfg.activation == "jumprelu":
        if fold["topk_threshold"]:
            if "topk_threshold" not in state:
                raise MusiclensError(f"{directory / WEIGHTS_FILE}: BatchTopK checkpoint without topk_threshold")
            threshold = torch.full((cfg.d_sae,), float(state["topk_threshold"].float().reshape(-1)[0]))
        elif "threshold" in state:
            threshold = state["threshold"].float().reshape(-1)
            if threshold.numel() == 1:
                threshold = threshold.expand(cfg.d_sae).clone()
        else:
            raise MusiclensError(f"{directory / WEIGHTS_FILE}: {cfg.architecture} SAE without a threshold tensor")
    if fold["rescale_by_decoder_norm"]:
        # SAELens: pre·‖W_dec_j‖ ranks/thresholds latents and decodes with W_dec_j/‖W_dec_j‖;
        # folding the norms into the encoder gives the same maths with a unit-norm decoder.
        n = W_dec.norm(dim=1).clamp_min(1e-8)
        W_enc, b_enc, W_dec = W_enc * n, b_enc * n, W_dec / n[:, None]
    if fold["norm_scaling_factor"] is not None:
        s = fold["norm_scaling_factor"]      # SAELens fold_activation_norm_scaling_factor
        W_enc, W_dec, b_dec = W_enc * s, W_dec / s, b_dec / s
    sae = SAE(cfg, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        sae.enc_weight.copy_(W_enc.t())
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.copy_(b_dec)
        if threshold is not None:
            sae.threshold.copy_(threshold)
    try:
        return sae.to(device=device, dtype=dtype).eval()
    except (RuntimeError, AssertionError) as e:
        raise MusiclensError(f"cannot put the SAE on device {device}: {e}")
