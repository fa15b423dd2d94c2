"""Spliced evaluation: how much of the model's next-token behaviour survives the SAE.

Reconstruction error says little about whether an SAE kept what the model
*uses*. So we replay the store's clips through the model the store came from,
teacher-forced on the exact decoder input ids stored per clip (with the
clip's caption, "" = the null condition, as at extraction), three times:

- clean: unmodified;
- spliced: the output of layer L replaced by the SAE's reconstruction at the
  audio positions the store's rows come from (positions 1..F, `frame + 1`);
- zero-ablated: that output replaced by zeros at the same positions.

and report the codebook-token cross-entropy of each (predictions made at the
replaced positions; pad targets excluded), "CE loss recovered" =
(CE_zero − CE_spliced) / (CE_zero − CE_clean) (1 = as good as clean, 0 = as
bad as deleting the layer's output), and the KL divergence of the spliced
(and zero-ablated) next-token distributions from the clean ones.

The replacement is a `musiclens.hooks.inject` intervention in "fn" mode, so
hooks are removed on exit even on errors and tuple / tensor layer outputs both
work. The clean and zero-ablated passes are shared by every SAE of a sweep.
"""

from __future__ import annotations

import torch

from ..errors import MusiclensError
from .model import SAE


def _clip_groups(store, n_clips: int, batch_clips: int) -> list[list[dict]]:
    """The first `n_clips` clips, grouped into batches of equal input length."""
    clips = store.clips[:n_clips] if n_clips > 0 else store.clips
    by_len: dict[int, list[dict]] = {}
    for c in clips:
        T = int(store.input_ids(c["index"]).shape[-1])
        by_len.setdefault(T, []).append(c)
    groups = []
    for _, cs in sorted(by_len.items()):
        for i in range(0, len(cs), batch_clips):
            groups.append(cs[i:i + batch_clips])
    return groups


def check_model_matches(model, store) -> None:
    """The store must have been extracted from these exact weights."""
    want = store.manifest.get("weights_hash")
    if want and model.weights_hash and want != model.weights_hash:
        raise MusiclensError(f"model {model.name!r} has weights hash {model.weights_hash}, but the store was "
                             f"extracted from weights {want}; pass the model the store came from")
    if store.d_model != model.d_model:
        raise MusiclensError(f"store width {store.d_model} != model width {model.d_model}")


@torch.no_grad()
def spliced_evaluation(model, store, saes: dict[str, SAE], layer: int, n_clips: int = 8,
                       batch_clips: int = 2) -> dict[str, dict]:
    """Clean / spliced / zero-ablated cross-entropy and KL for every SAE in `saes` (see module doc)."""
    from ..hooks import Intervention, inject

    check_model_matches(model, store)
    for name, sae in saes.items():
        if sae.d_in != model.d_model:
            raise MusiclensError(f"SAE {name} has d_in {sae.d_in}, model width is {model.d_model}")
    if not 0 <= layer < model.n_layers:
        raise MusiclensError(f"layer {layer} out of range: the model has layers 0..{model.n_layers - 1}")
    if not store.clips:
        raise MusiclensError("the store has no clips to replay")
    site = f"layer.{layer}"
    K, V = model.n_codebooks, model.codebook_size
    acc = {"clean": [0.0, 0], "zero": [0.0, 0], "kl_zero": [0.0, 0]}
    per = {name: {"ce": 0.0, "kl": 0.0} for name in saes}
    tokens = 0
    n_used = 0
    for group in _clip_groups(store, n_clips, batch_clips):
        ids = torch.cat([store.input_ids(c["index"]) for c in group]).long()      # [B*K, T]
        B, T = len(group), ids.shape[-1]
        Fr = T - K
        if Fr < 1:
            continue
        caps = [(c.get("meta") or {}).get("caption") or "" for c in group]
        steps = (1, Fr + 1)                                                       # positions frame + 1
        target = ids.reshape(B, K, T)[:, :, 2:Fr + 2].to(model.device)            # predicted at 1..Fr
        valid = target < V
        n_valid = int(valid.sum())
        if n_valid == 0:
            continue

        def ce_and_logp(logits: torch.Tensor) -> tuple[float, torch.Tensor]:
            lg = logits[:, :, 1:Fr + 1].float()
            logp = lg.log_softmax(-1)
            nll = -logp.gather(-1, target.clamp_max(V - 1)[..., None])[..., 0]
            return float(nll[valid].double().sum()), logp

        ce_c, logp_c = ce_and_logp(model.forward_codes(ids, captions=caps))
        p_c = logp_c.exp()

        def kl_from_clean(logp: torch.Tensor) -> float:
            kl = (p_c * (logp_c - logp)).sum(-1)
            return float(kl[valid].double().sum())

        with inject(model, [Intervention(site, mode="fn", fn=lambda h: torch.zeros_like(h))], steps=steps):
            ce_z, logp_z = ce_and_logp(model.forward_codes(ids, captions=caps))
        acc["clean"][0] += ce_c
        acc["zero"][0] += ce_z
        acc["kl_zero"][0] += kl_from_clean(logp_z)
        del logp_z
        for name, sae in saes.items():
            sae_dev = sae.to(model.device)

            def splice(h: torch.Tensor, s=sae_dev) -> torch.Tensor:
                return s.reconstruct(h)

            with inject(model, [Intervention(site, mode="fn", fn=splice)], steps=steps):
                ce_s, logp_s = ce_and_logp(model.forward_codes(ids, captions=caps))
            per[name]["ce"] += ce_s
            per[name]["kl"] += kl_from_clean(logp_s)
        tokens += n_valid
        n_used += B
    if tokens == 0:
        raise MusiclensError("no clip in the store has a frame to evaluate")
    ce_clean = acc["clean"][0] / tokens
    ce_zero = acc["zero"][0] / tokens
    out = {}
    for name in saes:
        ce_s = per[name]["ce"] / tokens
        denom = ce_zero - ce_clean
        out[name] = {
            "ce_clean": ce_clean, "ce_spliced": ce_s, "ce_zero": ce_zero,
            "ce_loss_recovered": (ce_zero - ce_s) / denom if abs(denom) > 1e-12 else float("nan"),
            "kl_spliced": per[name]["kl"] / tokens, "kl_zero": acc["kl_zero"][0] / tokens,
            "tokens": tokens, "clips": n_used, "layer": layer, "positions": "frame + 1 (all audio frames)",
        }
    return out


def load_store_model(store, model_name: str | None = None, device: str | torch.device = "cpu"):
    """Load the model a store was extracted from (or `model_name`) on `device`, checked against the store."""
    from .. import load_model

    name = model_name or store.model_name
    if not name:
        raise MusiclensError("the store does not record its model; pass --model")
    model = load_model(name, device=device)
    check_model_matches(model, store)
    return model


__all__ = ["spliced_evaluation", "load_store_model", "check_model_matches"]
