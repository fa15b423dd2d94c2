"""Training the organism's audio codec (an HF `EncodecModel`).

Phases, all in one resumable loop:
1. data-dependent init of the encoder (`init_latent_scale`), so its latent
   varies with the audio instead of sitting on a bias-made constant;
2. optionally a plain autoencoder for `warmup_steps` (default 0: not needed
   after step 1), then k-means initialisation of the 4 residual codebooks on
   encoder outputs of a few batches;
3. VQ training: straight-through residual quantisation with EMA codebooks,
   commitment loss, dead-code restarts every step.
Losses: waveform L1 + multi-scale mel (4-128 ms windows) + onset envelope
(see `losses.py`), and optionally (off in the shipped codec) a
linear-frequency log-STFT loss (`w_stft`) and an STFT discriminator from
`disc_start` on (`w_adv`, `w_feat`; `discriminator.py`).
Checkpoints (model, optimiser, step, RNG) are written atomically every few
minutes, and the current codec is also exported as a standard HF folder
(`codec/hf`) that `encode`/`decode` and MusicGen can use.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..bench_utils import machine
from ..config import check_values, option, save_config, to_dict
from ..errors import MusiclensError
from ..io import atomic_path, write_json
from ..models import organism as O
from . import quantizer as Q
from .data import ClipSet, load_clips
from .discriminator import Adversary
from .losses import MultiResolutionSTFT, MultiScaleMel, reconstruction_loss
from .resume import load_checkpoint, load_weights, restore_rng, rng_state
from .schedule import Clock


@dataclass
class CodecTrainConfig:
    """Codec training options (saved as RUN/codec/config.json)."""

    steps: int = option(14000, "total optimiser steps (the LR schedule spans these; --minutes may stop earlier)", ge=1)
    budget_minutes: float = option(0.0, "span the LR schedule over this many minutes of training instead of `steps`, "
                                        "and stop when they are spent (0 = by steps): for a machine whose speed is "
                                        "not known in advance, such as one lent GPU call", ge=0)
    warmup_steps: int = option(0, "plain-autoencoder steps before k-means codebook init (0: k-means right after "
                                  "the data-dependent init)", ge=0)
    warmup_noise: float = option(0.1, "std of Gaussian noise added to the latent during warm-up (spreads it for "
                                      "k-means)", ge=0)
    batch_size: int = option(8, "crops per step", ge=1)
    crop_seconds: float = option(0.5, "crop length in seconds", gt=0)
    lr: float = option(6e-4, "peak AdamW learning rate (cosine decay to 10%)", gt=0)
    codebook_size: int = option(O.CODEBOOK_SIZE, "codes per codebook", ge=2)
    num_filters: int = option(16, "EnCodec num_filters (width)", ge=1)
    hidden_size: int = option(128, "EnCodec latent / codebook dimension", ge=1)
    causal: bool = option(False, "causal convolutions (left padding only), so no frame's codes carry the "
                                 "audio after it (shipped: non-causal, as MusicGen's codec; see "
                                 "models.organism.codec_config)")
    w_wave: float = option(0.1, "weight of the waveform L1 loss", ge=0)
    w_onset: float = option(1.0, "weight of the onset-envelope loss", ge=0)
    w_stft: float = option(0.0, "weight of the linear-frequency log-STFT loss (0 = off, as shipped; see losses.py)",
                           ge=0)
    w_commit: float = option(0.05, "weight of the commitment loss (1.0 made the encoder collapse onto a few codes)",
                             ge=0)
    ema_decay: float = option(0.95, "EMA decay of the codebooks (fast: 200-frame batches, drifting encoder)",
                              ge=0, lt=1)
    dead_threshold: float = option(0.3, "a code is restarted when its EMA usage falls below this fraction of "
                                        "uniform usage", ge=0)
    restart_every: int = option(1, "steps between dead-code restarts", ge=1)
    w_adv: float = option(0.0, "weight of the adversarial hinge loss from a multi-scale STFT discriminator (0 = off, "
                               "the shipped codec; see discriminator.py)", ge=0)
    w_feat: float = option(0.0, "weight of the discriminator feature-matching loss (0 = off)", ge=0)
    disc_start: int = option(1000, "step from which the discriminator trains and its losses count (after the "
                                   "codebooks have settled)", ge=0)
    disc_channels: int = option(16, "channels of each STFT discriminator", ge=1)
    kmeans_batches: int = option(24, "batches of encoder output for k-means init", ge=1)
    checkpoint_minutes: float = option(4.0, "minutes between checkpoints", gt=0)
    seed: int = option(0, "random seed")


def new_codec(cfg: CodecTrainConfig):
    from transformers import EncodecModel

    torch.manual_seed(cfg.seed)
    return EncodecModel(O.codec_config(cfg.codebook_size, cfg.num_filters, cfg.hidden_size, cfg.causal))


def codec_forward(codec, x: torch.Tensor, quantise: bool, train: bool, decay: float = 0.99, noise: float = 0.0):
    """x [B, T] -> (reconstruction [B, T], commitment loss, codes or None, residual inputs).

    Without quantisation (warm-up) Gaussian noise of std `noise` is added to the
    latent: a plain autoencoder is free to squeeze its latent into a tiny,
    nearly constant region (measured: per-dimension std 0.0007 around a mean of
    norm 0.18), on which k-means and EMA codebooks collapse to one or two codes;
    noise makes only a spread-out latent useful to the decoder.
    """
    z = codec.encoder(x[:, None])
    if quantise:
        zq, codes, commit, inputs = Q.quantize(codec, z, train=train, decay=decay)
    else:
        zq = z + noise * torch.randn_like(z) if (train and noise > 0) else z
        codes, commit, inputs = None, torch.zeros((), device=x.device), []
    y = codec.decoder(zq)[:, 0, : x.shape[-1]]
    return y, commit, codes, inputs


@torch.no_grad()
def init_latent_scale(codec, x: torch.Tensor) -> dict:
    """Data-dependent (LSUV-style) init: scale every encoder conv so its output has unit std.

    Corpus audio is quiet (about -35 dBFS) and a fresh encoder is nearly
    linear, so its latent varies by ~0.002 around a bias-made constant. Left
    alone, the decoder learns to ignore it and k-means on it collapses;
    rescaling only the last layer amplifies the constant's drift instead (both
    measured on this corpus). Scaling each conv's gain in turn, input to
    output, and centring it, makes the signal, not the biases, dominate every
    layer.
    """
    from transformers.models.encodec.modeling_encodec import EncodecConv1d

    convs = [m for m in codec.encoder.modules() if isinstance(m, EncodecConv1d)]
    before = float(codec.encoder(x[:, None]).std(dim=(0, 2)).mean())
    for conv in convs:
        out = {}
        h = conv.register_forward_hook(lambda mod, inp, o: out.__setitem__("y", o))
        codec.encoder(x[:, None])
        h.remove()
        mean, std = out["y"].mean(dim=(0, 2)), out["y"].std(dim=(0, 2)).clamp(min=1e-6)
        inner = conv.conv
        g = inner.parametrizations.weight.original0
        g.div_(std.view(-1, *([1] * (g.dim() - 1))))
        if inner.bias is not None:
            inner.bias.sub_(mean).div_(std)
    z = codec.encoder(x[:, None])
    return {"std_before": before, "std_after": float(z.std(dim=(0, 2)).mean()),
            "mean_norm_after": float(z.mean(dim=(0, 2)).norm())}


def _save(path: Path, codec, opt, step: int, rng, cfg, clock: Clock, log_extra: dict) -> None:
    state = {"model": codec.state_dict(), "opt": opt.state_dict(), "step": step,
             "trained_seconds": clock.seconds(), **rng_state(rng), "config": to_dict(cfg),
             **log_extra}
    with atomic_path(path / "ckpt.pt") as tmp:
        torch.save(state, tmp)


def export_codec(codec, out: Path) -> None:
    """Write the codec as a standard HF folder (atomically replaced)."""
    from ..io import atomic_dir
    from ..models.organism import quiet_loading

    with atomic_dir(out, overwrite=True) as tmp, quiet_loading():
        codec.save_pretrained(tmp)


def load_codec(folder: str | Path, device: str = "cpu"):
    from transformers import EncodecModel

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise MusiclensError(f"no trained codec in {folder}: run the codec stage first "
                             "(`musiclens organism train --stage codec`)")
    from ..models.organism import quiet_loading

    with quiet_loading():
        return EncodecModel.from_pretrained(folder).to(device).eval()


@torch.no_grad()
def heldout_mel(codec, mel: MultiScaleMel, clips: ClipSet, device: str, quantise: bool, n: int = 8) -> float:
    """Mean multi-scale log-mel L1 on the first n held-out clips (cheap progress signal)."""
    codec.eval()
    losses = []
    for i in range(min(n, len(clips))):
        x = torch.tensor(clips.wav(i)[None], device=device)
        x = x[:, : (x.shape[1] // 320) * 320]
        y, *_ = codec_forward(codec, x, quantise=quantise, train=False)
        losses.append(float(reconstruction_loss(mel, x, y)["mel"]))
    codec.train()
    return float(np.mean(losses)) if losses else float("nan")


def training_audio(corpus: Path, crop_seconds: float, device: str
                   ) -> tuple[ClipSet, ClipSet, MultiScaleMel, MultiResolutionSTFT, int]:
    """What codec and decoder training read: train clips, 16 valid clips, the mel and linear-STFT loss modules,
    crop length (whole frames)."""
    sr = O.SAMPLE_RATE
    train = load_clips(corpus, ("train",), sr)
    valid = load_clips(corpus, ("valid",), sr, limit=16)
    if len(train) == 0:
        raise MusiclensError(f"no train clips in {corpus}")
    return (train, valid, MultiScaleMel(sr).to(device), MultiResolutionSTFT().to(device),
            int(round(crop_seconds * sr / 320)) * 320)


def train_codec(cfg: CodecTrainConfig, corpus: Path, out: Path, minutes: float | None, resume: bool,
                device: str = "cpu") -> dict:
    """Train (or continue) the codec in `out/codec`; returns a summary dict."""
    check_values(cfg)
    cdir = out / "codec"
    ckpt = cdir / "ckpt.pt"
    if ckpt.exists() and not resume:
        raise MusiclensError(f"{cdir} already has a checkpoint: pass --resume to continue or choose another --out")
    cdir.mkdir(parents=True, exist_ok=True)
    codec = new_codec(cfg).to(device)
    opt = torch.optim.AdamW(codec.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    adversary = Adversary(cfg.disc_channels, cfg.lr, device) if (cfg.w_adv > 0 or cfg.w_feat > 0) else None
    step, trained = 0, 0.0
    if resume and ckpt.exists():
        state = load_checkpoint(ckpt, device)
        saved = state.get("config", {}).get("causal", False)
        if saved != cfg.causal:  # same weights, other padding: it would resume as a different codec
            raise MusiclensError(f"{cdir} holds a {'causal' if saved else 'non-causal'} codec: resume it with "
                                 f"{'--codec-causal' if saved else '--no-codec-causal'}")
        trained = state.get("trained_seconds", 0.0)
        load_weights(codec, state["model"], ckpt, "codec")
        opt.load_state_dict(state["opt"])
        if adversary is not None and "disc" in state:
            adversary.load_state_dict(state)
        step = state["step"]
        restore_rng(state, rng)
    save_config(cfg, cdir / "config.json")
    clock = Clock(cfg.steps, cfg.budget_minutes, trained)
    if clock.done(step) and (cdir / "hf" / "config.json").exists():
        return {"step": step, "steps": cfg.steps, "done": True, "minutes_this_sitting": 0.0, "last": {}}

    train, valid, mel, stft, crop = training_audio(corpus, cfg.crop_seconds, device)
    log_path = cdir / "log.jsonl"
    t0 = time.time()
    last_ckpt = t0
    codec.train()
    bar = tqdm(total=clock.total(), initial=step, desc="codec", disable=None, dynamic_ncols=True)
    stats: dict = {}
    if step == 0:
        stats0 = init_latent_scale(codec, torch.tensor(train.random_crops(rng, 32, crop), device=device))
        tqdm.write(f"latent init: {stats0}")
    clock.start()
    while not clock.done(step):
        if minutes is not None and time.time() - t0 > minutes * 60:
            break
        if step == cfg.warmup_steps:
            zs = []
            with torch.no_grad():
                for _ in range(cfg.kmeans_batches):
                    xb = torch.tensor(train.random_crops(rng, cfg.batch_size, crop), device=device)
                    z = codec.encoder(xb[:, None])
                    zs.append(z.permute(0, 2, 1).reshape(-1, z.shape[1]))
            z_all = torch.cat(zs)
            if len(z_all) < cfg.codebook_size:
                raise MusiclensError(f"k-means needs at least {cfg.codebook_size} latent frames, got {len(z_all)} "
                                     f"({cfg.kmeans_batches} batches x {cfg.batch_size} crops x {zs[0].shape[0] // cfg.batch_size} "
                                     f"frames): raise --codec-batch-size")
            used = Q.kmeans_init(codec, z_all, seed=cfg.seed, count_scale=1.0 / cfg.kmeans_batches)
            tqdm.write(f"k-means init: codes used per codebook {used}")
        quantise = step >= cfg.warmup_steps
        lr = clock.lr(cfg.lr, step, warmup=200)
        for g in opt.param_groups:
            g["lr"] = lr
        x = torch.tensor(train.random_crops(rng, cfg.batch_size, crop), device=device)
        y, commit, codes, inputs = codec_forward(codec, x, quantise=quantise, train=True, decay=cfg.ema_decay,
                                                 noise=cfg.warmup_noise)
        losses = reconstruction_loss(mel, x, y, w_wave=cfg.w_wave, w_onset=cfg.w_onset, w_stft=cfg.w_stft, stft=stft)
        loss = losses["total"] + cfg.w_commit * commit
        adv = feat = d_loss = 0.0
        if adversary is not None and step >= cfg.disc_start:
            adversary.set_lr(lr)
            d_loss = adversary.step(x, y)
            adv_t, feat_t = adversary.losses(x, y)
            loss = loss + cfg.w_adv * adv_t + cfg.w_feat * feat_t
            adv, feat = float(adv_t.detach()), float(torch.as_tensor(feat_t).detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        opt.step()
        step += 1
        restarted = 0
        if quantise and step % cfg.restart_every == 0:
            uniform = x.shape[0] * (crop // 320) / cfg.codebook_size  # expected uses per code per batch
            restarted = Q.restart_dead(codec, inputs, cfg.dead_threshold * uniform, rng)
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(mel=f"{float(losses['mel']):.3f}", onset=f"{float(losses['onset']):.3f}",
                            commit=f"{float(commit.detach()):.3f}", vq=int(quantise))
        if step % 100 == 0 or step == cfg.steps:
            stats = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "quantised": quantise, "lr": lr,
                     "train_mel": float(losses["mel"]), "train_onset": float(losses["onset"]),
                     "train_wave": float(losses["wave"]), "commit": float(commit.detach()), "restarted": restarted,
                     "heldout_mel": heldout_mel(codec, mel, valid, device, quantise)}
            if adversary is not None:
                stats.update(adv=adv, feat=feat, disc=d_loss)
            if codes is not None:
                stats["codes_used"] = Q.usage(codec, codes)
            with open(log_path, "a") as f:
                f.write(json.dumps(stats) + "\n")
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            _save(cdir, codec, opt, step, rng, cfg, clock, adversary.state_dict() if adversary else {})
            if step > cfg.warmup_steps:
                export_codec(codec, cdir / "hf")
            last_ckpt = time.time()
    bar.close()
    _save(cdir, codec, opt, step, rng, cfg, clock, adversary.state_dict() if adversary else {})
    if step > cfg.warmup_steps:
        export_codec(codec, cdir / "hf")
    summary = {"step": step, "steps": cfg.steps, "done": clock.done(step),
               "trained_minutes": round(clock.seconds() / 60, 2),
               "device": device, "machine": machine(),
               "minutes_this_sitting": round((time.time() - t0) / 60, 2), "last": stats}
    write_json(cdir / "progress.json", summary)
    return summary


@torch.no_grad()
def lookahead_frames(codec, seconds: float = 2.0) -> int:
    """How many frames ahead the codec's encoder reads: the earliest latent frame that moves when only
    the audio from the middle on is replaced (0 for a causal encoder, 4 for the shipped one)."""
    g = torch.Generator().manual_seed(0)
    n = int(seconds * O.SAMPLE_RATE)
    half = n // 2
    x = 0.3 * torch.randn(1, 1, n, generator=g)
    y = x.clone()
    y[..., half:] = 0.3 * torch.randn(1, 1, n - half, generator=g)
    p = next(codec.parameters())
    a, b = codec.encoder(x.to(p)), codec.encoder(y.to(p))
    moved = ((a - b).abs().amax(dim=1)[0] > 1e-6).nonzero().flatten()
    return int(half // (O.SAMPLE_RATE // O.FRAME_RATE) - moved[0]) if len(moved) else 0
