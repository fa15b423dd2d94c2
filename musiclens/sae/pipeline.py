"""`musiclens train-sae`: store -> one or many SAEs (SAELens layout) with metrics, resumable.

Flow: validate everything (store, layer, sweep, output path) before writing
anything; measure initialisation statistics on a sample; train every SAE of
the sweep on one shuffled stream of batches (checkpointing to `OUT.partial/`
every few minutes and on Ctrl-C); then evaluate (reconstruction metrics on a
sample, spliced evaluation on the store's model) and write the final
directory atomically. A run that dies leaves `OUT.partial/` (continue with
`--resume`), never a half-written `OUT/`.

Output: one combination -> OUT is the SAE directory (`cfg.json`,
`sae_weights.safetensors`, `metrics.json`, `density.png`, `config.json`);
several -> `OUT/<arch>_x<expansion>_k<k>/` (or `_l1-<λ>`) per SAE plus
`OUT/sweep.json` and `OUT/config.json`.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..config import check_values, option, save_config, to_dict
from ..errors import MusiclensError
from ..io import atomic_dir, atomic_path, write_json
from . import data as sdata
from .io import write_sae_files
from .metrics import density_histogram, format_metrics, reconstruction_metrics
from .train import (Combo, InitStats, MultiTrainer, TrainOptions, compute_init, dist_info, make_combos, postfix,
                    run_steps)

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainSAEConfig:
    """Options of `musiclens train-sae` (saved as OUT/config.json)."""

    store: str = option(help="activation store directory (musiclens extract)")
    layer: int = option(help="decoder layer whose output to train on (must be in the store)")
    out: str = option(help="output directory (an SAE, or one sub-directory per sweep combination)", short="-o")
    arch: str = option("topk", help="SAE architecture", choices=["topk", "batchtopk", "rmsnorm_l1"])
    expansion: list[int] = option(default_factory=lambda: [32], help="latents per input dimension; a list sweeps")
    k: list[int] = option(default_factory=lambda: [100], help="active latents per row (topk, batchtopk); a list sweeps")
    l1: list[float] = option(default_factory=lambda: [0.05],
                             help="L1 coefficient λ (rmsnorm_l1; the paper uses 0.005-0.15); a list sweeps")
    batch_size: int = option(4096, help="rows per optimizer step (global, split over torchrun processes)", ge=1)
    steps: int = option(0, help="optimizer steps (0 = --epochs passes over the store)", ge=0)
    epochs: float = option(1.0, help="passes over the store when --steps is 0", gt=0)
    lr: float = option(0.0, help="Adam learning rate (0 = 2e-4/sqrt(d_sae/16384), scaled with width)", ge=0)
    warmup_steps: int = option(1000, help="linear warm-up steps (at most 10% of all steps)", ge=0)
    decay_fraction: float = option(0.2, help="final fraction of steps with linear decay to 0", ge=0, lt=1)
    auxk_alpha: float = option(1 / 32, help="weight of the AuxK loss on dead latents (topk, batchtopk)", ge=0)
    dead_tokens: int = option(10_000_000, help="a latent is dead after this many rows without firing "
                                               "(capped at a quarter of the training rows)", gt=0)
    init_rows: int = option(16384, help="rows sampled for input scaling and the geometric-median b_dec", gt=0)
    eval_rows: int = option(16384, help="rows sampled (seeded) for metrics.json", gt=0)
    eval_store: Optional[str] = option(None, help="held-out store for metrics.json and the spliced evaluation "
                                                  "(default: the training store)")
    splice_clips: int = option(8, help="clips replayed through the model for the spliced evaluation (0 = skip)", ge=0)
    model: Optional[str] = option(None, help="model for the spliced evaluation (default: the store's model)")
    device: str = option("auto", help="auto (cuda if available), cpu, cuda, cuda:1 (torchrun: cuda:LOCAL_RANK)")
    autocast: str = option("auto", help="bf16 autocast of the encoder matmul: auto (on CUDA), bf16, none",
                           choices=["auto", "bf16", "none"])
    save_dtype: str = option("float32", help="dtype of the saved weights", choices=["float32", "bfloat16", "float16"])
    max_bad_fraction: float = option(0.001, help="fail if more than this fraction of rows have NaN/Inf", ge=0, lt=1)
    checkpoint_minutes: float = option(10.0, help="minutes between checkpoints in OUT.partial/", gt=0)
    seed: int = option(0, help="seed for initialisation and batch order")
    resume: bool = option(False, help="continue an interrupted run from OUT.partial/")
    overwrite: bool = option(False, help="replace an existing OUT")


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _resolve_device(spec: str) -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        spec = f"cuda:{local}"
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise MusiclensError(f"unknown device {spec!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MusiclensError("--device cuda but no CUDA device is available")
    return dev


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend)
    return dist_info()


def _sigterm_as_interrupt():
    """Treat SIGTERM (schedulers, `kill`) like Ctrl-C so the run checkpoints before it stops."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(old) -> None:
    if old is not None:
        signal.signal(signal.SIGTERM, old)


def _barrier() -> None:
    if dist_info()[1] > 1:
        torch.distributed.barrier()


def _validate(cfg: TrainSAEConfig, out: Path):
    """Everything a user can get wrong, checked before anything is written."""
    check_values(cfg)  # the options' bounds, also for a config built in Python
    store = sdata.open_store(cfg.store, cfg.layer)
    combos = make_combos(cfg.arch, cfg.expansion, cfg.k, cfg.l1, store.d_model)
    if cfg.eval_store:
        ev = sdata.open_store(cfg.eval_store, cfg.layer)
        if ev.d_model != store.d_model:
            raise MusiclensError(f"--eval-store has d_model {ev.d_model}, the training store {store.d_model}")
    part = partial_dir(out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (pass --overwrite to replace it)")
    if part.exists() and not (cfg.resume or cfg.overwrite):
        raise MusiclensError(f"an interrupted run exists at {part}: pass --resume to continue it "
                             "or --overwrite to start over")
    return store, combos


def _checkpoint_compat(cfg: TrainSAEConfig) -> dict:
    """The options a resumed run must share with the interrupted one."""
    d = to_dict(cfg)
    keep = ("store", "layer", "arch", "expansion", "k", "l1", "batch_size", "steps", "epochs", "lr", "seed",
            "warmup_steps", "decay_fraction", "auxk_alpha")
    return {k: d[k] for k in keep}


def run_train_sae(cfg: TrainSAEConfig) -> dict:
    """Train the SAE(s) described by `cfg`; returns {name: metrics} (rank 0; {} on other ranks)."""
    out = Path(cfg.out)
    device = _resolve_device(cfg.device)
    store, combos = _validate(cfg, out)
    rank, world = setup_distributed(device)
    try:
        result = _run(cfg, out, store, combos, device, rank, world)
        # every rank leaves together: a rank that tears its process group down while rank 0 still
        # evaluates can abort in gloo's teardown ("terminate called without an active exception")
        _barrier()
        return result
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def prepare(cfg: TrainSAEConfig, store, combos: list[Combo], device, world: int, ckpt: dict | None = None,
            announce: bool = True) -> tuple[MultiTrainer, dict, int]:
    """The trainer for `cfg` (initialised from a store sample, or from `ckpt`), its init stats, the global batch."""
    if cfg.batch_size % world:
        raise MusiclensError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    batch = cfg.batch_size
    if store.rows < batch:
        batch = max(world, (store.rows // world) * world)
        if announce:
            print(f"note: the store has {store.rows} rows, fewer than one batch; using --batch-size {batch}")
    total_steps = cfg.steps if cfg.steps > 0 else max(1, int(cfg.epochs * (store.rows // batch)))
    opts = TrainOptions(batch_size=batch, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                        decay_fraction=cfg.decay_fraction, auxk_alpha=cfg.auxk_alpha,
                        dead_tokens=max(1, min(cfg.dead_tokens, total_steps * batch // 4)),
                        autocast=cfg.autocast, seed=cfg.seed)
    if ckpt is not None:
        inits = {k: InitStats.from_dict(v) for k, v in ckpt["inits"].items()}
    else:
        n_init = min(cfg.init_rows, store.rows)
        sample = sdata.sample_rows(sdata.store_batches(store, cfg.layer, n_init, seed=cfg.seed + 7919), n_init)
        kinds = {"rms" if c.arch == "rmsnorm_l1" else "scale" for c in combos}
        inits = {k: compute_init(sample, "rmsnorm_l1" if k == "rms" else "topk") for k in kinds}
    trainer = MultiTrainer(combos, store.d_model, inits, opts, total_steps, device=device,
                           hook_name=f"layer.{cfg.layer}", model_name=store.model_name)
    if ckpt is not None:
        trainer.load_state_dict(ckpt["trainer"])
    return trainer, inits, batch


def _run(cfg, out, store, combos, device, rank, world) -> dict:
    part = partial_dir(out)
    counter = sdata.BadRowCounter(max_bad_fraction=cfg.max_bad_fraction)
    ckpt = None
    if cfg.overwrite and not cfg.resume and rank == 0:
        shutil.rmtree(part, ignore_errors=True)
    _barrier()
    if cfg.resume and (part / CHECKPOINT).exists():
        ckpt = torch.load(part / CHECKPOINT, map_location="cpu", weights_only=False)
        if ckpt["compat"] != _checkpoint_compat(cfg):
            diff = sorted(k for k in ckpt["compat"] if ckpt["compat"][k] != _checkpoint_compat(cfg).get(k))
            raise MusiclensError(f"cannot resume {part}: it was started with different {', '.join(diff)}")
    trainer, inits, batch = prepare(cfg, store, combos, device, world, ckpt, announce=rank == 0)
    local_batch = batch // world
    total_steps = trainer.total_steps
    start_epoch = used = 0
    if ckpt is not None:
        counter.load_state_dict(ckpt["counter"])
        start_epoch, used = int(ckpt["epoch"]), int(ckpt["used"])
    if rank == 0:
        part.mkdir(parents=True, exist_ok=True)
        save_config(cfg, part / "config.json")

    def save_checkpoint(epoch: int, used_: int) -> None:
        if rank != 0:
            return
        state = {"compat": _checkpoint_compat(cfg), "trainer": trainer.state_dict(), "epoch": epoch,
                 "used": used_, "counter": counter.state_dict(),
                 "inits": {k: v.to_dict() for k, v in inits.items()}}
        with atomic_path(part / CHECKPOINT) as tmp:
            torch.save(state, tmp)

    last_save = [time.monotonic()]
    pos = [start_epoch, used]

    def on_step(tr: MultiTrainer, epoch: int, used_: int) -> None:
        pos[0], pos[1] = epoch, used_
        if bar is not None:
            bar.set_postfix_str(postfix(tr), refresh=False)
        if time.monotonic() - last_save[0] >= cfg.checkpoint_minutes * 60 and tr.step < tr.total_steps:
            save_checkpoint(epoch, used_)
            last_save[0] = time.monotonic()

    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=trainer.step, desc=f"train-sae {len(combos)} SAE(s)", unit="step",
               disable=None if rank == 0 else True, dynamic_ncols=True)
    batches = sdata.store_batches(store, cfg.layer, local_batch, seed=cfg.seed, rank=rank, world_size=world,
                                  device=device)
    t0 = time.perf_counter()
    rows0 = trainer.rows_seen
    old_term = _sigterm_as_interrupt()
    try:
        run_steps(trainer, batches, counter, start_epoch=start_epoch, skip_in_epoch=used, on_step=on_step,
                  progress=bar)
    except KeyboardInterrupt:
        save_checkpoint(pos[0], pos[1])
        bar.close()
        if rank == 0:
            print(f"interrupted: checkpoint at step {trainer.step} in {part}; continue with --resume",
                  file=sys.stderr)
        raise
    finally:
        _restore_sigterm(old_term)
    bar.close()
    seconds = time.perf_counter() - t0
    _barrier()
    if rank != 0:
        return {}
    save_checkpoint(pos[0], pos[1])   # training is done: a failure in evaluation must not cost it
    train_info = {"steps": trainer.step, "rows_seen": trainer.rows_seen, "seconds_this_run": seconds,
                  "rows_per_second": (trainer.rows_seen - rows0) / max(seconds, 1e-9), "processes": world,
                  "device": str(device), "bad_rows_skipped": counter.bad, "rows_checked": counter.seen,
                  "batch_size": batch}
    return finish(cfg, out, part, store, trainer, train_info)


def finish(cfg: TrainSAEConfig, out: Path, part: Path, store, trainer: MultiTrainer, train_info: dict) -> dict:
    """Evaluate every SAE and write the final output directory atomically."""
    saes = {s.combo.name: trainer.folded_sae(i, "float32") for i, s in enumerate(trainer.slots)}
    ev_store = sdata.open_store(cfg.eval_store, cfg.layer) if cfg.eval_store else store
    n_eval = min(cfg.eval_rows, ev_store.rows)
    eval_rows = sdata.sample_rows(sdata.store_batches(ev_store, cfg.layer, n_eval, seed=cfg.seed + 104729), n_eval)
    results: dict[str, dict] = {}
    freqs = {}
    for (name, sae), slot in zip(saes.items(), trainer.slots):
        m, freq = reconstruction_metrics(sae.to(trainer.device), eval_rows)
        sae.cpu()
        m["eval_rows_source"] = (f"a seeded random sample of the held-out store {cfg.eval_store}" if cfg.eval_store
                                 else "a seeded random sample of the training store's rows (not held out)")
        m["train_dead_fraction"] = float((slot.since_fired >= trainer.opts.dead_tokens).float().mean())
        m["train"] = {**train_info, "lr": slot.lr, "input_scale": slot.init.scale,
                      "dead_tokens": trainer.opts.dead_tokens, "last_batch": slot.last}
        results[name] = m
        freqs[name] = freq
    if cfg.splice_clips > 0:
        from .splice import load_store_model, spliced_evaluation

        try:
            model = load_store_model(ev_store, cfg.model, device=trainer.device)
            sp = spliced_evaluation(model, ev_store, saes, cfg.layer, n_clips=cfg.splice_clips)
        except MusiclensError as e:
            raise MusiclensError(f"spliced evaluation failed: {e} (the trained weights are kept in {part}; rerun "
                                 "with --resume and --model MODEL, or --splice-clips 0 to skip it)")
        for name in saes:
            results[name]["spliced"] = sp[name]
    single = len(saes) == 1
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        for (name, sae), slot in zip(saes.items(), trainer.slots):
            d = tmp if single else tmp / name
            sae_out = trainer.folded_sae(list(saes).index(name), cfg.save_dtype)
            meta = {"dataset_path": str(Path(cfg.store).resolve()), "store_weights_hash":
                    store.manifest.get("weights_hash"), "trained_steps": trainer.step,
                    "trained_rows": trainer.rows_seen, "input_scale_folded": slot.init.scale}
            write_sae_files(sae_out, d, extra_metadata=meta)
            write_json(d / "metrics.json", results[name])
            density_histogram(freqs[name], d / "density.png", title=name)
        save_config(cfg, tmp / "config.json")
        if not single:
            write_json(tmp / "sweep.json", {
                "store": cfg.store, "layer": cfg.layer, "arch": cfg.arch,
                "saes": [{"name": n, "dir": n, **{k: results[n][k] for k in ("l0", "fvu", "cosine", "dead_fraction")},
                          **({"ce_loss_recovered": results[n]["spliced"]["ce_loss_recovered"]}
                             if "spliced" in results[n] else {})} for n in saes]})
    shutil.rmtree(part, ignore_errors=True)
    for name in saes:
        print(format_metrics(name, results[name]))
    return results


__all__ = ["TrainSAEConfig", "run_train_sae", "partial_dir", "Combo"]
