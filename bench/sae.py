"""Benchmark: musiclens vs SAELens training a TopK SAE on identical activations (CPU by default).

What it measures: both libraries train a TopK SAE of musicgen-small width
(d_in 1024, expansion 32 -> 32768 latents, k 100) for the same number of
steps on the same rows in the same order, each in a fresh process with the
same torch thread count; we report training rows/s (the step loop only) and,
on held-out rows, the FVU / L0 of each SAE after those steps.

Data: synthetic "sparse-plus-noise" activations with realistic structure,
generated here from a seed (no MusicGen-small activation store is available
on this machine): 16384 true unit directions with Zipf-like firing
frequencies (~40 active per row), log-normal per-feature scales and
exponential magnitudes, a shared offset vector, 4 high-variance "massive"
dimensions, and 10 % dense Gaussian noise.

Settings, identical for both unless noted: Adam(0.9, 0.999), constant
learning rate `--lr` (no warm-up or decay, so "after N steps" compares like
with like), float32 on CPU, AuxK on. Each library otherwise uses its own
recipe: musiclens scales inputs to mean norm sqrt(d), starts b_dec at the
geometric median and W_enc = W_decᵀ, keeps unit-norm decoder rows, and uses
its sparse decode / sparse encoder backward; SAELens uses its TopK training
SAE (`normalize_activations="expected_average_only_in"`, its default
decoder init and `rescale_acts_by_decoder_norm`), with
`use_sparse_activations` as given by `--saelens-sparse` (default: its
default, off; with torch 2.13 on CPU its sparse path fails in backward with
"Could not run 'aten::view' with arguments from the 'SparseCPU' backend").
`--bf16` also times musiclens with `--autocast bf16` (bfloat16 encoder
matmul, fast on CPUs with AVX512-BF16 / AMX such as this one).

SAELens runs in the python given by `--saelens-python` (default: this
python if it has `sae_lens`, else $MUSICLENS_SAELENS_PYTHON, else
/tmp/saelens-venv/bin/python), because sae-lens pins packages that
musiclens's environment must not take.

    python bench/sae.py --threads 1 --steps 12 --bf16   # what bench/results/sae.json holds (busy machine)
    python bench/sae.py                                  # the same with 2 threads (a quiet 2-core machine)
    python bench/sae.py --steps 4 --quick                # a smoke run that writes nothing
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------- data
def make_activations(n: int, d: int, seed: int, n_feat: int = 16384, mean_active: float = 40.0) -> torch.Tensor:
    """Synthetic residual-like rows (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_feat, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    p = (torch.arange(n_feat, dtype=torch.float64) + 1) ** -0.8
    p = (p / p.sum() * mean_active).clamp_max(0.5).float()
    feat_scale = torch.exp(0.5 * torch.randn(n_feat, generator=g))
    offset = torch.randn(d, generator=g) * 0.15
    massive = torch.randperm(d, generator=g)[:4]
    out = torch.empty(n, d)
    for s in range(0, n, 2048):
        b = min(2048, n - s)
        on = torch.rand(b, n_feat, generator=g) < p
        rows, cols = on.nonzero(as_tuple=True)
        w = torch.empty(rows.numel()).exponential_(1.0, generator=g) * feat_scale[cols]
        offsets = torch.searchsorted(rows, torch.arange(b))
        x = torch.nn.functional.embedding_bag(cols, D, offsets=offsets, per_sample_weights=w, mode="sum")
        x += offset
        x += 0.1 * x.norm(dim=1, keepdim=True) / math.sqrt(d) * torch.randn(b, d, generator=g)
        x[:, massive] *= 5.0
        out[s:s + b] = x
    return out


def fvu_l0(sae_forward, x: torch.Tensor, batch: int = 1024) -> tuple[float, float]:
    """FVU and mean L0 of a (latents, recon) function on rows x."""
    sse = l0 = 0.0
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            xb = x[s:s + batch]
            h, r = sae_forward(xb)
            sse += float((xb - r).double().pow(2).sum())
            l0 += float((h != 0).sum())
    var = float((x.double() - x.double().mean(0)).pow(2).sum())
    return sse / var, l0 / x.shape[0]


# ----------------------------------------------------------------------------- workers
def worker_musiclens(args, data: dict) -> dict:
    sys.path.insert(0, str(HERE.parent.parent))
    from musiclens.sae.data import BadRowCounter
    from musiclens.sae.train import MultiTrainer, TrainOptions, compute_init, make_combos, run_steps

    x, x_eval = data["train"], data["eval"]
    B, steps, d = args.batch_size, args.steps, x.shape[1]
    t0 = time.perf_counter()
    inits = {"scale": compute_init(x[:min(16384, x.shape[0])], "topk")}
    combos = make_combos("topk", [args.expansion], [args.k], [], d)
    opts = TrainOptions(batch_size=B, lr=args.lr, warmup_steps=0, decay_fraction=0.0,
                        dead_tokens=args.dead_tokens, autocast=args.autocast)
    tr = MultiTrainer(combos, d, inits, opts, total_steps=steps)
    t_init = time.perf_counter() - t0

    def batches(epoch):
        for s in range(0, steps * B, B):
            yield x[s:s + B]

    step_times = []
    t1 = time.perf_counter()

    def on_step(_tr, _e, _u):
        step_times.append(time.perf_counter())

    run_steps(tr, batches, BadRowCounter(), on_step=on_step)
    t_train = time.perf_counter() - t1
    sae = tr.folded_sae(0)
    fvu, l0 = fvu_l0(sae, x_eval)
    return {"library": "musiclens", "autocast": args.autocast, "init_seconds": t_init, "train_seconds": t_train,
            "rows_per_second": steps * B / t_train, "step_seconds": _diffs(t1, step_times),
            "fvu_eval": fvu, "l0_eval": l0, "last_train_fvu": tr.slots[0].last["fvu"],
            "dead_fraction_train": tr.slots[0].last["dead"]}


def worker_saelens(args, data: dict) -> dict:
    import sae_lens
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    x, x_eval = data["train"], data["eval"]
    B, steps, d = args.batch_size, args.steps, x.shape[1]
    t0 = time.perf_counter()
    cfg = TopKTrainingSAEConfig(d_in=d, d_sae=d * args.expansion, k=args.k, dtype="float32", device="cpu",
                                normalize_activations="expected_average_only_in",
                                use_sparse_activations=args.saelens_sparse)
    sae = TopKTrainingSAE(cfg)
    tcfg = SAETrainerConfig(total_training_samples=steps * B, train_batch_size_samples=B, lr=args.lr,
                            lr_end=args.lr, lr_scheduler_name="constant", lr_warm_up_steps=0, device="cpu",
                            autocast=False,
                            dead_feature_window=max(1, args.dead_tokens // B), feature_sampling_window=10 ** 9,
                            n_batches_for_norm_estimate=min(steps, 16))
    n_est = tcfg.n_batches_for_norm_estimate
    step_times: list[float] = []
    t1_holder: list[float] = []

    def provider():
        # the norm estimate reads the first batches; training then starts again from row 0,
        # so the step loop sees exactly the rows musiclens sees
        for s in range(0, n_est * B, B):
            yield x[s:s + B]
        t1_holder.append(time.perf_counter())
        for s in range(0, steps * B, B):
            if s:
                step_times.append(time.perf_counter())
            yield x[s:s + B]
        while True:  # fit() may ask once more after the last step; never used for training
            yield x[:B]

    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=provider())
    t_init = time.perf_counter() - t0
    trainer.fit()
    t_end = time.perf_counter()
    step_times.append(t_end)
    t_train = t_end - t1_holder[0]

    def fwd(xb):
        h = sae.encode(xb)
        return h, sae.decode(h)

    fvu, l0 = fvu_l0(fwd, x_eval)
    return {"library": "sae_lens", "version": sae_lens.__version__, "init_seconds": t_init,
            "train_seconds": t_train, "rows_per_second": steps * B / t_train,
            "step_seconds": _diffs(t1_holder[0], step_times), "fvu_eval": fvu, "l0_eval": l0,
            "use_sparse_activations": args.saelens_sparse}


def _diffs(t0: float, marks: list[float]) -> list[float]:
    out, prev = [], t0
    for m in marks:
        out.append(round(m - prev, 4))
        prev = m
    return out


# ----------------------------------------------------------------------------- driver
def _saelens_python(given: str | None) -> str | None:
    if given:
        return given
    try:
        import sae_lens  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    for p in (os.environ.get("MUSICLENS_SAELENS_PYTHON"), "/tmp/saelens-venv/bin/python"):
        if p and Path(p).exists():
            return p
    return None


def _loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def run_worker(python: str, which: str, data_path: Path, args, autocast: str = "none") -> dict:
    cmd = [python, str(HERE), "--worker", which, "--autocast", autocast, "--data", str(data_path),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--expansion", str(args.expansion),
           "--k", str(args.k),
           "--lr", str(args.lr), "--threads", str(args.threads), "--dead-tokens", str(args.dead_tokens)]
    if args.saelens_sparse:
        cmd.append("--saelens-sparse")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    load0 = _loadavg()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{which} worker failed:\n{res.stderr[-4000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["loadavg_before"], out["loadavg_after"] = load0, _loadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--expansion", type=int, default=32)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--dead-tokens", type=int, default=10_000_000)
    ap.add_argument("--eval-rows", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--saelens-python", default=None)
    ap.add_argument("--saelens-sparse", action="store_true",
                    help="SAELens use_sparse_activations=True (writes bench/results/sae_saelens_sparse.json)")
    ap.add_argument("--only", choices=["musiclens", "sae_lens"], default=None)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also time musiclens with --autocast bf16 (CPUs with AVX512-BF16/AMX, GPUs)")
    ap.add_argument("--autocast", default="none", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="do not write bench/results/sae.json")
    ap.add_argument("--worker", choices=["musiclens", "sae_lens"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        torch.set_num_threads(args.threads)
        data = torch.load(args.data)
        fn = worker_musiclens if args.worker == "musiclens" else worker_saelens
        print(json.dumps(fn(args, data)))
        return

    t0 = time.perf_counter()
    n_train = args.steps * args.batch_size
    x = make_activations(n_train + args.eval_rows, args.d, args.seed)
    data = {"train": x[:n_train].contiguous(), "eval": x[n_train:].contiguous()}
    t_data = time.perf_counter() - t0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acts.pt"
        torch.save(data, path)
        if args.only in (None, "musiclens"):
            results["musiclens"] = run_worker(sys.executable, "musiclens", path, args)
            print("musiclens", json.dumps({k: v for k, v in results["musiclens"].items() if k != "step_seconds"}))
            if args.bf16:
                results["musiclens_bf16"] = run_worker(sys.executable, "musiclens", path, args, autocast="bf16")
                print("musiclens_bf16", json.dumps({k: v for k, v in results["musiclens_bf16"].items()
                                                    if k != "step_seconds"}))
        if args.only in (None, "sae_lens"):
            py = _saelens_python(args.saelens_python)
            if py is None:
                results["sae_lens"] = {"error": "sae_lens not installed (see --saelens-python)"}
            else:
                results["sae_lens"] = run_worker(py, "sae_lens", path, args)
            print("sae_lens", json.dumps({k: v for k, v in results["sae_lens"].items() if k != "step_seconds"}))
    figures = {
        "data": "synthetic sparse-plus-noise activations (see bench/sae.py docstring); no MusicGen store used",
        "d_in": args.d, "expansion": args.expansion, "d_sae": args.d * args.expansion, "k": args.k,
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "eval_rows": args.eval_rows,
        "threads": args.threads, "data_seconds": t_data, **results,
    }
    ml, sl = results.get("musiclens", {}), results.get("sae_lens", {})
    if "rows_per_second" in ml and "rows_per_second" in sl:
        figures["speedup"] = ml["rows_per_second"] / sl["rows_per_second"]
        figures["fvu_musiclens_minus_sae_lens"] = ml["fvu_eval"] - sl["fvu_eval"]
        print(f"speedup {figures['speedup']:.2f}x; FVU musiclens {ml['fvu_eval']:.4f} vs sae_lens {sl['fvu_eval']:.4f}")
        if "musiclens_bf16" in results:
            figures["speedup_bf16"] = results["musiclens_bf16"]["rows_per_second"] / sl["rows_per_second"]
            print(f"speedup with bf16 autocast {figures['speedup_bf16']:.2f}x")
    if not args.quick:
        sys.path.insert(0, str(HERE.parent.parent))
        from musiclens.bench_utils import write_result

        # the SAELens sparse-activation variant is a separate file, so sae.json keeps both libraries' defaults
        print("wrote", write_result("sae_saelens_sparse" if args.saelens_sparse else "sae", figures))


if __name__ == "__main__":
    main()
