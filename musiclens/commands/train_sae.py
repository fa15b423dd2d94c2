"""`musiclens train-sae` (train SAEs on a store) and `musiclens sae eval|info` (inspect and evaluate one).

    musiclens train-sae --store acts --layer 12 --arch topk --expansion 32 --k 100 --out runs/sae_l12
    musiclens train-sae --store acts --layer 12 --expansion 4,32 --k 32,100 --out runs/sweep   # 4 SAEs, one pass
    torchrun --nproc_per_node 2 $(which musiclens) train-sae ...                               # data-parallel
    musiclens sae info runs/sae_l12
    musiclens sae eval runs/sae_l12 --store acts_heldout --out heldout_metrics.json
"""

from __future__ import annotations

import json

from ..config import add_arguments, from_args
from ..errors import MusiclensError


def _train(args) -> int:
    from ..sae.pipeline import TrainSAEConfig, run_train_sae

    run_train_sae(from_args(TrainSAEConfig, args))
    return 0


def _info(args) -> int:
    from ..sae.io import load_sae

    sae = load_sae(args.sae)
    c = sae.cfg
    info = {"dir": args.sae, "architecture": c.architecture, "d_in": c.d_in, "d_sae": c.d_sae, "k": c.k,
            "hook_name": c.hook_name, "model_name": c.model_name, "normalization": c.normalization,
            "dtype": c.dtype, "l1_coefficient": c.l1_coefficient}
    from pathlib import Path

    mpath = Path(args.sae) / "metrics.json"
    if mpath.exists():
        m = json.loads(mpath.read_text())
        info["metrics"] = {k: m[k] for k in ("l0", "fvu", "cosine", "dead_fraction") if k in m}
        if "spliced" in m:
            info["metrics"]["ce_loss_recovered"] = m["spliced"]["ce_loss_recovered"]
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:<15} {v}")
    return 0


def _eval(args) -> int:
    from pathlib import Path

    from ..io import write_json
    from ..sae import data as sdata
    from ..sae.io import layer_index, load_sae
    from ..sae.metrics import density_histogram, format_metrics, reconstruction_metrics

    sae = load_sae(args.sae, device=args.device)
    layer = args.layer if args.layer is not None else layer_index(sae.cfg.hook_name)
    store = sdata.open_store(args.store, layer)
    if store.d_model != sae.d_in:
        raise MusiclensError(f"SAE d_in {sae.d_in} does not match the store's d_model {store.d_model}")
    if args.eval_rows < 1:
        raise MusiclensError("--eval-rows must be >= 1")
    n = min(args.eval_rows, store.rows)
    rows = sdata.sample_rows(sdata.store_batches(store, layer, n, seed=args.seed), n)
    m, freq = reconstruction_metrics(sae, rows)
    m["store"], m["layer"] = args.store, layer
    if args.splice_clips > 0:
        from ..sae.splice import load_store_model, spliced_evaluation

        model = load_store_model(store, args.model, device=args.device)
        m["spliced"] = spliced_evaluation(model, store, {"sae": sae}, layer, n_clips=args.splice_clips)["sae"]
    print(format_metrics(Path(args.sae).name, m))
    if args.out:
        write_json(args.out, m)
        density_histogram(freq, Path(args.out).with_suffix(".png"), title=Path(args.sae).name)
    return 0


def register(sub) -> None:
    from ..sae.pipeline import TrainSAEConfig

    p = sub.add_parser("train-sae", help="train TopK / BatchTopK / RMSNorm-L1 SAEs on an activation store",
                       description="Train one SAE, or a sweep over --expansion/--k/--l1 lists in one pass over "
                                   "the data, on one layer of an activation store. Writes SAELens-layout "
                                   "directories with metrics.json (incl. the spliced evaluation). Resumable "
                                   "(--resume); runs data-parallel under torchrun.")
    add_arguments(p, TrainSAEConfig)
    p.set_defaults(func=_train)

    s = sub.add_parser("sae", help="inspect or evaluate a trained (or SAELens) SAE",
                       description="info: print an SAE's config and headline metrics; eval: metrics on a store "
                                   "(reconstruction + spliced evaluation).")
    ssub = s.add_subparsers(dest="sae_command", metavar="<info|eval>", required=True)
    pi = ssub.add_parser("info", help="print an SAE's configuration", description="Print an SAE's configuration.")
    pi.add_argument("sae", help="SAE directory (cfg.json + sae_weights.safetensors)")
    pi.add_argument("--json", action="store_true", help="print JSON")
    pi.set_defaults(func=_info)
    pe = ssub.add_parser("eval", help="metrics of an SAE on a store",
                         description="Reconstruction metrics on a seeded sample of a store's rows and the spliced "
                                     "evaluation (clean / spliced / zero-ablated CE, CE loss recovered, KL).")
    pe.add_argument("sae", help="SAE directory")
    pe.add_argument("--store", required=True, help="activation store (e.g. one extracted from held-out audio)")
    pe.add_argument("--layer", type=int, default=None, help="store layer (default: from the SAE's hook name)")
    pe.add_argument("--eval-rows", type=int, default=16384, help="rows sampled for the metrics (default: 16384)")
    pe.add_argument("--splice-clips", type=int, default=8, help="clips for the spliced evaluation, 0 = skip "
                                                                "(default: 8)")
    pe.add_argument("--model", default=None, help="model for the spliced evaluation (default: the store's)")
    pe.add_argument("--seed", type=int, default=1, help="sampling seed (default: 1)")
    pe.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default: cpu)")
    pe.add_argument("--out", default=None, help="write the metrics here (JSON) and the density plot next to it")
    pe.set_defaults(func=_eval)
