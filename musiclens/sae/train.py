"""Training many SAEs in one pass over the data (TopK, BatchTopK, RMSNorm-L1).

Recipe (Gao et al. 2024 "Scaling and evaluating sparse autoencoders", as in
EleutherAI's sparsify, plus the audio-latent paper's RMSNorm-L1 SAE):

- Inputs are scaled by one constant so their mean norm is √d_in (TopK and
  BatchTopK); the constant is folded into the saved weights (`fold_scale`),
  so a saved SAE takes raw activations. RMSNorm-L1 normalises every row
  itself and needs no constant.
- b_dec starts at the geometric median of a sample of (scaled/normalised)
  rows; decoder rows start random unit-norm and W_enc = W_decᵀ.
- Decoder rows stay unit norm: the gradient component parallel to each row is
  removed before the optimizer step and rows are renormalised after it.
- Loss: TopK/BatchTopK ‖x − x̂‖² / Var(x) (a fraction of variance with a fixed
  denominator, so it is the same whether a batch is split over processes)
  + α·AuxK, where AuxK reconstructs the residual x − x̂ from the top k_aux
  (= d_in/2) *dead* latents so they get gradient and come back.
  RMSNorm-L1: mean squared error in normalised units + λ·Σ_j h_j (L1; decoder
  rows are unit norm so this is the norm-weighted L1).
- A latent is dead once it has not fired for `dead_tokens` rows.
- Adam, learning rate 2e-4 / √(d_sae / 2^14) (sparsify's width scaling) unless
  given, linear warm-up, constant, linear decay to 0 over the last
  `decay_fraction` of steps.
- BatchTopK keeps the top k·B activations of the whole batch while training
  and learns the inference threshold θ as an exponential moving average of
  the smallest kept activation (saved as a per-latent `threshold`, JumpReLU).

Speed: TopK and BatchTopK run the encoder matmul once without autograd, then
use `kernels.gather_preacts` / `kernels.sparse_decode` so backward touches only
the selected rows. Every SAE of a sweep trains on the same batch as it is
read. Under torch.distributed each process reads its share of every global
batch and gradients are averaged with one all-reduce per SAE (data-parallel,
like DDP); dead-latent counters are combined the same way, so all ranks hold
identical weights.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import MusiclensError
from . import kernels
from .data import BadRowCounter, BatchFn
from .model import SAE, SAEConfig

TRAINABLE = ("topk", "batchtopk", "rmsnorm_l1")


@dataclass(frozen=True)
class Combo:
    """One SAE of a sweep."""

    arch: str
    expansion: int
    k: int | None = None
    l1: float | None = None

    @property
    def name(self) -> str:
        base = f"{self.arch}_x{self.expansion}"
        if self.arch == "rmsnorm_l1":
            return f"{base}_l1-{self.l1:g}"
        return f"{base}_k{self.k}"


def make_combos(arch: str, expansions: list[int], ks: list[int], l1s: list[float], d_in: int) -> list[Combo]:
    """Every combination of the sweep lists (validated against d_in)."""
    if arch not in TRAINABLE:
        raise MusiclensError(f"--arch must be one of {', '.join(TRAINABLE)}, got {arch!r}")
    if not expansions:
        raise MusiclensError("--expansion needs at least one value")
    out = []
    for e in expansions:
        if e < 1:
            raise MusiclensError(f"expansion must be >= 1, got {e}")
        d_sae = e * d_in
        if arch == "rmsnorm_l1":
            if not l1s:
                raise MusiclensError("--l1 needs at least one value for rmsnorm_l1")
            for lam in l1s:
                if not (lam >= 0 and math.isfinite(lam)):
                    raise MusiclensError(f"--l1 values must be finite and >= 0, got {lam}")
                out.append(Combo(arch, e, None, float(lam)))
        else:
            if not ks:
                raise MusiclensError(f"--k needs at least one value for {arch}")
            for k in ks:
                if k < 1:
                    raise MusiclensError(f"k must be >= 1, got {k}")
                if k >= d_sae:
                    raise MusiclensError(f"k ({k}) must be smaller than the number of latents "
                                         f"(expansion {e} x d_model {d_in} = {d_sae})")
                out.append(Combo(arch, e, int(k), None))
    if len({c.name for c in out}) != len(out):
        raise MusiclensError("the sweep lists contain duplicates")
    return out


# ------------------------------------------------------------------ initialisation
def geometric_median(x: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to the rows of x."""
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        d = (x - y).norm(dim=1).clamp_min(1e-8)
        w = 1.0 / d
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * max(1.0, float(y.norm())):
            y = y_new
            break
        y = y_new
    return y.float()


@dataclass
class InitStats:
    """What initialisation measures on a sample, per input transform."""

    scale: float           # multiply raw rows by this before the SAE (1 for RMSNorm SAEs)
    b_dec: torch.Tensor    # geometric median in the SAE's input units
    total_var: float       # E‖x − E x‖² in the SAE's input units (the loss denominator)
    rows: int
    sample: torch.Tensor | None = None   # a few raw rows for the encoder-scale fit (not checkpointed)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "total_var": self.total_var, "rows": self.rows, "b_dec": self.b_dec.cpu()}

    @classmethod
    def from_dict(cls, d: dict) -> "InitStats":
        return cls(float(d["scale"]), d["b_dec"], float(d["total_var"]), int(d["rows"]))


def compute_init(sample: torch.Tensor, arch: str) -> InitStats:
    """Scale to mean norm √d (or RMS-normalise rows), geometric median, total variance."""
    d = sample.shape[1]
    x = sample.double()
    if arch == "rmsnorm_l1":
        rms = (x.norm(dim=1, keepdim=True) / math.sqrt(d)).clamp_min(1e-12)
        x = x / rms
        scale = 1.0
    else:
        mean_norm = float(x.norm(dim=1).mean())
        if not mean_norm > 0:
            raise MusiclensError("activation rows are all zero; nothing to train on")
        scale = math.sqrt(d) / mean_norm
        x = x * scale
    total_var = float((x - x.mean(0)).pow(2).sum(1).mean())
    if not total_var > 0:
        raise MusiclensError("activation rows have zero variance; nothing to train on")
    return InitStats(scale=scale, b_dec=geometric_median(x), total_var=total_var, rows=x.shape[0],
                     sample=sample[:1024].float().clone())


@torch.no_grad()
def fit_encoder_scale(sae: SAE, x: torch.Tensor) -> float:
    """Scale W_enc so the initial reconstruction is the least-squares best multiple of itself.

    With W_enc = W_decᵀ the k most aligned unit directions over-shoot (their
    overlaps add up), so the first steps would be spent shrinking latents.
    With b_enc = 0 every activation here (TopK, ReLU) is positively
    homogeneous, so scaling W_enc by c scales the reconstruction around b_dec
    by c without changing which latents fire: c* = ⟨x − b_dec, R⟩ / ‖R‖².
    """
    xn, _ = sae.normalize(x)                       # identity unless the SAE normalises rows itself
    e = xn - sae.b_dec
    pre = sae.pre_acts(xn)
    if sae.cfg.k is not None:                      # TopK, and BatchTopK's per-row equivalent
        vals, idx = pre.topk(sae.cfg.k, dim=-1)
        r = kernels.sparse_decode(idx, vals.relu(), sae.W_dec)
    else:
        r = pre.relu() @ sae.W_dec
    c = float((e * r).sum() / (r * r).sum().clamp_min(1e-12))
    if math.isfinite(c) and c > 0:
        sae.enc_weight.mul_(c)
        return c
    return 1.0


# ------------------------------------------------------------------ options
@dataclass
class TrainOptions:
    """The optimisation knobs (a subset of the CLI config, also usable from Python)."""

    batch_size: int = 4096
    lr: float = 0.0                 # 0 = 2e-4 / sqrt(d_sae / 2^14)
    warmup_steps: int = 1000
    decay_fraction: float = 0.2
    auxk_alpha: float = 1 / 32
    dead_tokens: int = 10_000_000
    threshold_lr: float = 0.01
    autocast: str = "auto"          # auto (bf16 on CUDA) | bf16 | none
    seed: int = 0


def width_scaled_lr(d_sae: int) -> float:
    """sparsify's default: 2e-4 at 16384 latents, ∝ 1/√d_sae."""
    return 2e-4 / math.sqrt(d_sae / 2 ** 14)


def lr_factor(step: int, total: int, warmup: int, decay_fraction: float) -> float:
    """Linear warm-up over `warmup` steps, constant, linear decay to 0 over the last fraction."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay_start = int(total * (1 - decay_fraction))
    if decay_fraction > 0 and step >= decay_start and total > decay_start:
        return max(0.0, (total - step) / (total - decay_start))
    return 1.0


# ------------------------------------------------------------------ distributed
def dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_reduce_(tensors: list[torch.Tensor], op=None) -> None:
    """Average (default) or reduce a list of tensors in one flat all-reduce."""
    rank, world = dist_info()
    if world == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    if op is None:
        torch.distributed.all_reduce(flat)
        flat /= world
    else:
        torch.distributed.all_reduce(flat, op=op)
    off = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[off:off + n].view_as(t))
        off += n


# ------------------------------------------------------------------ trainer
@dataclass
class _Slot:
    combo: Combo
    sae: SAE
    opt: torch.optim.Optimizer
    lr: float
    init: InitStats
    since_fired: torch.Tensor
    last: dict = field(default_factory=dict)


class MultiTrainer:
    """Trains a list of SAEs (a sweep) on the same stream of batches."""

    def __init__(self, combos: list[Combo], d_in: int, inits: dict[str, InitStats], opts: TrainOptions,
                 total_steps: int, device: str | torch.device = "cpu", hook_name: str = "layer.0",
                 model_name: str = ""):
        self.combos = combos
        self.d_in = d_in
        self.opts = opts
        self.total_steps = max(1, int(total_steps))
        self.device = torch.device(device)
        self.step = 0
        self.rows_seen = 0
        self.warmup = min(opts.warmup_steps, self.total_steps // 10)
        gen = torch.Generator().manual_seed(opts.seed)
        self.slots: list[_Slot] = []
        for c in combos:
            init = inits["rms" if c.arch == "rmsnorm_l1" else "scale"]
            cfg = SAEConfig(d_in=d_in, d_sae=c.expansion * d_in, architecture=c.arch, k=c.k,
                            hook_name=hook_name, model_name=model_name, l1_coefficient=c.l1)
            sae = SAE(cfg, dtype=torch.float32)
            sae.init_weights(generator=gen, b_dec=init.b_dec)
            if init.sample is not None:
                xs = init.sample if c.arch == "rmsnorm_l1" else init.sample * init.scale
                fit_encoder_scale(sae, xs)
            sae.to(self.device)
            lr = opts.lr if opts.lr > 0 else width_scaled_lr(cfg.d_sae)
            opt = _adam(sae.parameters(), lr)
            self.slots.append(_Slot(c, sae, opt, lr, init,
                                    torch.zeros(cfg.d_sae, dtype=torch.long, device=self.device)))

    # -- one step -------------------------------------------------------------
    def _amp(self):
        mode = self.opts.autocast
        if mode == "none" or (mode == "auto" and self.device.type != "cuda"):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def train_step(self, x_raw: torch.Tensor, global_rows: int | None = None) -> list[dict]:
        """One optimizer step of every SAE on this batch (raw activations [b, d_in])."""
        x_raw = x_raw.to(self.device, torch.float32)
        global_rows = x_raw.shape[0] if global_rows is None else global_rows
        out = []
        for s in self.slots:
            f = lr_factor(self.step, self.total_steps, self.warmup, self.opts.decay_fraction)
            for g in s.opt.param_groups:
                g["lr"] = s.lr * f
            s.opt.zero_grad(set_to_none=True)
            if s.combo.arch == "rmsnorm_l1":
                stats, fired = self._l1_loss(s, x_raw)
            else:
                stats, fired = self._topk_loss(s, x_raw * s.init.scale)
            fired = self._sync(s, fired)
            self._constrain_grad(s.sae)
            s.opt.step()
            s.sae.normalize_decoder()
            s.since_fired += global_rows
            s.since_fired[fired] = 0
            stats["dead"] = float((s.since_fired >= self.opts.dead_tokens).float().mean())
            stats["lr"] = s.lr * f
            s.last = stats
            out.append(stats)
        self.step += 1
        self.rows_seen += global_rows
        return out

    def _dead_mask(self, s: _Slot) -> torch.Tensor:
        return s.since_fired >= self.opts.dead_tokens

    def _topk_loss(self, s: _Slot, x: torch.Tensor) -> tuple[dict, torch.Tensor]:
        sae, k = s.sae, s.combo.k
        B = x.shape[0]
        with torch.no_grad():
            x_c = x - sae.b_dec
            with self._amp():
                pre = torch.addmm(sae.b_enc, x_c, sae.enc_weight.t())
            pre = pre.float()
            if s.combo.arch == "topk":
                _, idx = pre.topk(k, dim=-1, sorted=False)
                offsets = rows = None
            else:                                   # BatchTopK: top k·B of the whole batch
                flat = pre.clamp_min(0).reshape(-1)
                kv, fidx = flat.topk(min(k * B, flat.numel()), sorted=False)
                fidx = fidx[kv > 0]
                fidx, _ = fidx.sort()               # row-major order = grouped by row
                rows = fidx // sae.d_sae
                idx = fidx % sae.d_sae
                counts = torch.bincount(rows, minlength=B)
                offsets = torch.cumsum(counts, 0) - counts
        acts = kernels.gather_preacts(pre, x_c, idx, sae.enc_weight, sae.b_enc, sae.b_dec,
                                      offsets=offsets, rows=rows).relu()
        recon = kernels.sparse_decode(idx, acts, sae.W_dec, offsets) + sae.b_dec
        err = x - recon
        sq = err.pow(2).sum(-1)
        loss = sq.mean() / s.init.total_var
        with torch.no_grad():
            active = acts.detach() > 0
            fired = idx[active]
            l0 = float(active.sum()) / B
            var = float((x - x.mean(0)).pow(2).sum())
            fvu = float(sq.sum()) / max(var, 1e-12)
            if s.combo.arch == "batchtopk" and active.any():
                m = float(acts.detach()[active].min())
                th = sae.threshold
                if self.step == 0 and float(th.max()) == 0.0:
                    th.fill_(m)
                else:
                    th.mul_(1 - self.opts.threshold_lr).add_(self.opts.threshold_lr * m)
        aux = torch.zeros((), device=x.device)
        dead = self._dead_mask(s)
        n_dead = int(dead.sum())
        if n_dead and self.opts.auxk_alpha > 0:
            k_aux = max(1, self.d_in // 2)
            scale = min(n_dead / k_aux, 1.0)
            with torch.no_grad():
                _, aidx = pre.masked_fill(~dead, float("-inf")).topk(min(k_aux, n_dead), dim=-1, sorted=False)
            avals = kernels.gather_preacts(pre, x_c, aidx, sae.enc_weight, sae.b_enc, sae.b_dec).relu()
            e_hat = kernels.sparse_decode(aidx, avals, sae.W_dec)
            aux = scale * (e_hat - err.detach()).pow(2).sum(-1).mean() / s.init.total_var
        (loss + self.opts.auxk_alpha * aux).backward()
        return {"fvu": fvu, "l0": l0, "loss": float(loss.detach()), "auxk": float(aux.detach())}, fired

    def _l1_loss(self, s: _Slot, x_raw: torch.Tensor) -> tuple[dict, torch.Tensor]:
        sae, lam = s.sae, s.combo.l1
        with torch.no_grad():
            xn, _ = sae.normalize(x_raw)
        with self._amp():
            pre = sae.pre_acts(xn)
        h = pre.float().relu()
        recon = h @ sae.W_dec + sae.b_dec
        err = xn - recon
        mse = err.pow(2).mean()
        l1 = h.sum(-1).mean()
        (mse + lam * l1).backward()
        with torch.no_grad():
            active = h > 0
            fired = active.any(0).nonzero().reshape(-1)
            var = float((xn - xn.mean(0)).pow(2).sum())
            fvu = float(err.pow(2).sum()) / max(var, 1e-12)
            l0 = float(active.sum()) / xn.shape[0]
        return {"fvu": fvu, "l0": l0, "loss": float(mse.detach()), "l1": float(l1.detach())}, fired

    def _sync(self, s: _Slot, fired: torch.Tensor) -> torch.Tensor:
        """Average gradients and merge the fired sets across processes; returns the merged fired latents."""
        _, world = dist_info()
        if world == 1:
            return fired
        grads = [p.grad for p in s.sae.parameters() if p.grad is not None]
        _all_reduce_(grads)
        mask = torch.zeros(s.sae.d_sae, device=self.device)
        mask[fired] = 1
        _all_reduce_([mask], op=torch.distributed.ReduceOp.MAX)
        if s.sae.threshold is not None:   # BatchTopK: keep θ identical on every rank
            _all_reduce_([s.sae.threshold])
        return mask.nonzero().reshape(-1)

    @staticmethod
    @torch.no_grad()
    def _constrain_grad(sae: SAE) -> None:
        """Remove the gradient component parallel to each (unit) decoder row."""
        g = sae.W_dec.grad
        if g is None:
            return
        w = sae.W_dec
        g -= (g * w).sum(1, keepdim=True) * w

    # -- saving ---------------------------------------------------------------
    def folded_sae(self, i: int, dtype: str = "float32") -> SAE:
        """A copy of SAE i that takes raw activations (input scale folded into the latents)."""
        s = self.slots[i]
        src = s.sae
        cfg = SAEConfig(**{**src.cfg.to_dict(), "dtype": dtype})
        sae = SAE(cfg, dtype=torch.float32)
        c = 1.0 / s.init.scale
        with torch.no_grad():
            # trained on x' = s·x: pre' = W(s·x − b') + c' = s·[W(x − b'/s) + c'/s], x̂ = x̂'/s.
            # TopK order, ReLU and θ comparisons are unchanged by the positive factor, so with
            # b_enc/s, θ/s, b_dec/s and the same unit-norm W_enc, W_dec the latents are in raw units.
            sae.enc_weight.copy_(src.enc_weight)
            sae.W_dec.copy_(src.W_dec)
            sae.b_enc.copy_(src.b_enc * c)
            sae.b_dec.copy_(src.b_dec * c)
            if src.threshold is not None:
                sae.threshold.copy_(src.threshold * c)
        return sae.to(getattr(torch, dtype)).eval()

    def state_dict(self) -> dict:
        return {"step": self.step, "rows_seen": self.rows_seen, "combos": [c.name for c in self.combos],
                "slots": [{"sae": s.sae.state_dict(), "opt": s.opt.state_dict(), "since_fired": s.since_fired,
                           "init": s.init.to_dict(), "lr": s.lr} for s in self.slots]}

    def load_state_dict(self, d: dict) -> None:
        if d["combos"] != [c.name for c in self.combos]:
            raise MusiclensError(f"checkpoint holds SAEs {d['combos']}, this run asks for "
                                 f"{[c.name for c in self.combos]}")
        self.step, self.rows_seen = int(d["step"]), int(d["rows_seen"])
        for s, sd in zip(self.slots, d["slots"]):
            s.sae.load_state_dict(sd["sae"])
            s.opt.load_state_dict(sd["opt"])
            s.since_fired.copy_(sd["since_fired"])
            s.init = InitStats.from_dict(sd["init"])


def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel for large SAEs (4x faster steps on CPU for 67 M parameters, but its first
    use costs ~5 s of one-time set-up per process), the foreach one for small SAEs."""
    params = list(params)
    if sum(p.numel() for p in params) >= 2_000_000:
        try:
            return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)


def run_steps(trainer: MultiTrainer, batches: BatchFn, counter: BadRowCounter, *, start_epoch: int = 0,
              skip_in_epoch: int = 0, on_step: Callable[[MultiTrainer, int, int], None] | None = None,
              progress: Any = None, until: int | None = None) -> tuple[int, int]:
    """Train until `trainer.total_steps` (or step `until`), cycling epochs; returns (epoch, batches used in it).

    Under torch.distributed every rank must take the same number of steps: each
    step all ranks agree that everyone still has a batch, otherwise all move to
    the next epoch together. `skip_in_epoch` batches are read and dropped first
    (resume).
    """
    rank, world = dist_info()
    epoch, used = start_epoch, skip_in_epoch
    empty_epochs = 0
    stop = trainer.total_steps if until is None else min(until, trainer.total_steps)
    while trainer.step < stop:
        it = batches(epoch)
        for _ in range(used):
            next(it, None)
        took = 0
        while trainer.step < stop:
            x = next(it, None)
            # on the trainer's device: NCCL (multi-GPU) reduces CUDA tensors only
            have = torch.tensor([0.0 if x is None else 1.0], device=trainer.device)
            if world > 1:
                torch.distributed.all_reduce(have, op=torch.distributed.ReduceOp.MIN)
            if float(have) == 0.0:
                break
            x = counter.filter(x)
            local = torch.tensor([float(x.shape[0])], device=trainer.device)
            if world > 1:
                torch.distributed.all_reduce(local)
            if x.shape[0] == 0:
                used += 1
                continue
            trainer.train_step(x, global_rows=int(local))
            used += 1
            took += 1
            if progress is not None:
                progress.update(1)
            if on_step is not None:
                on_step(trainer, epoch, used)
        if trainer.step >= stop:
            break
        empty_epochs = empty_epochs + 1 if took == 0 else 0
        if empty_epochs >= 2:
            raise MusiclensError("the data source yields no usable batches (empty store, or every row is NaN/Inf)")
        epoch, used = epoch + 1, 0
    return epoch, used


def postfix(trainer: MultiTrainer) -> str:
    """Live progress text: FVU / L0 / dead % of the first SAE (and the sweep size)."""
    s = trainer.slots[0].last
    if not s:
        return ""
    txt = f"fvu={s['fvu']:.3f} l0={s['l0']:.0f} dead={100 * s['dead']:.1f}%"
    if len(trainer.slots) > 1:
        txt += f" (+{len(trainer.slots) - 1} SAEs)"
    return txt


__all__ = ["Combo", "make_combos", "geometric_median", "InitStats", "compute_init", "TrainOptions",
           "MultiTrainer", "run_steps", "width_scaled_lr", "lr_factor", "postfix", "dist_info"]

