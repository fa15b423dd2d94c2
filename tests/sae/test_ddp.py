"""`torchrun --nproc_per_node 2 ... train-sae` (gloo, CPU) gives the weights of one process on the same batches."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from musiclens.sae import load_sae
from musiclens.sae.data import BadRowCounter, store_batches
from musiclens.sae.pipeline import TrainSAEConfig, prepare
from musiclens.sae.train import make_combos, run_steps
from musiclens.store import ActivationStore, StoreWriter


def _random_store(path, clips=24, frames=50, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(48, d, generator=g)
    with StoreWriter(path, model_name="none", weights_hash="synthetic", layers=[0], d_model=d, dtype="float32",
                     shard_rows=300) as w:
        for c in range(clips):
            coef = torch.rand(frames, 48, generator=g) * (torch.rand(frames, 48, generator=g) < 0.08)
            acts = coef @ basis + 0.05 * torch.randn(frames, d, generator=g)
            w.add_clip(f"c{c}", {0: acts}, torch.arange(frames), torch.zeros(1, frames + 1, dtype=torch.long))


def test_two_processes_equal_one(tmp_path):
    store_path = tmp_path / "store"
    _random_store(store_path)
    out = tmp_path / "ddp"
    args = ["--store", str(store_path), "--layer", "0", "--arch", "topk", "--expansion", "4", "--k", "4",
            "--batch-size", "128", "--steps", "12", "--warmup-steps", "2", "--lr", "0.003",
            "--dead-tokens", "512", "--splice-clips", "0", "--eval-rows", "256", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "musiclens", "train-sae", *args, "--out", str(out)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    ddp = load_sae(out)
    assert load_sae(out).cfg.k == 4

    # one process, fed the concatenation of what rank 0 and rank 1 read at every step
    store = ActivationStore(store_path)
    cfg = TrainSAEConfig(store=str(store_path), layer=0, out=str(tmp_path / "unused"), expansion=[4], k=[4],
                         batch_size=128, steps=12, warmup_steps=2, lr=0.003, dead_tokens=512)
    combos = make_combos("topk", [4], [4], [], store.d_model)
    trainer, _, batch = prepare(cfg, store, combos, torch.device("cpu"), world=2, announce=False)
    parts = [store_batches(store, 0, batch // 2, seed=cfg.seed, rank=r, world_size=2) for r in (0, 1)]

    def joined(epoch):
        for a, b in zip(parts[0](epoch), parts[1](epoch)):
            yield torch.cat([a, b])

    run_steps(trainer, joined, BadRowCounter())
    single = trainer.folded_sae(0)
    for name in ("enc_weight", "b_enc", "W_dec", "b_dec"):
        a, b = getattr(ddp, name), getattr(single, name)
        assert torch.allclose(a, b, atol=2e-5), (name, float((a - b).abs().max()))
    # and the training really moved the weights away from their initialisation
    init, _, _ = prepare(cfg, store, combos, torch.device("cpu"), world=2, announce=False)
    assert not torch.allclose(init.folded_sae(0).W_dec, single.W_dec, atol=1e-3)
