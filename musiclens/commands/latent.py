"""`musiclens latent ...` and `musiclens latent-edit`: interpret and edit audio autoencoder latents.

Sub-commands, in pipeline order (docs/latent.md has examples):

    latent extract     audio -> latent frames + frame measurements (a store)
    latent train       RMSNorm-L1 SAE grid + linear probes per cell
    latent probe       probes for one given SAE (or the raw latents)
    latent edit        control-vector isolation sweep on held-out clips
    latent flow-train  train the small rectified-flow model on a latent store
    latent trajectory  attribute convergence through a generator's sampling steps
    latent-edit        push one audio file's pitch / loudness / timbre toward a class
"""

from __future__ import annotations

import json

from .. import config as C
from ..errors import MusiclensError


def _extract(args) -> int:
    from ..latent.extract import LatentExtractConfig, extract

    cfg = C.from_args(LatentExtractConfig, args)
    r = extract(cfg)
    print(f"{r['clips']} clips, {r['rows']} frames ({r['frame_rate']:g}/s) of {', '.join(r['sites'])} from "
          f"{r['autoencoder']} -> {r['out']} ({r['skipped']} skipped)")
    if r["rows"] == 0:  # as `extract`: an empty store must not pass for a result in a script
        raise MusiclensError(f"every input was skipped, so the store is empty; see {r['out']}/skipped.json")
    return 0


def _train(args) -> int:
    from ..latent.grid import LatentTrainConfig, train_grid

    cfg = C.from_args(LatentTrainConfig, args)
    r = train_grid(cfg)
    print(f"{r['train_frames']} training / {r['test_frames']} held-out frames; chance "
          + ", ".join(f"{a} {v:.2f}" for a, v in r["chance_accuracy"].items()))
    print(f"{'cell':<26} {'sparsity':>8} {'fvu':>6} {'pitch':>6} {'loud':>6} {'timbre':>6}")
    for c in r["cells"]:
        sp = "-" if c["sparsity"] is None else f"{c['sparsity']:.3f}"
        fvu = "-" if c.get("fvu") is None else f"{c['fvu']:.3f}"
        print(f"{c['name']:<26} {sp:>8} {fvu:>6} {c['pitch_accuracy']:>6.3f} {c['loudness_accuracy']:>6.3f} "
              f"{c['timbre_accuracy']:>6.3f}")
    print(f"-> {cfg.out}/grid.json, grid.png")
    return 0


def _probe(args) -> int:
    from ..latent.grid import LatentProbeConfig, probe_only

    cfg = C.from_args(LatentProbeConfig, args)
    r = probe_only(cfg)
    for a, v in r.items():
        print(f"{a:<9} held-out accuracy {v['test_accuracy']:.3f} (chance {v['chance_accuracy']:.3f}, "
              f"train {v['train_accuracy']:.3f})")
    print(f"-> {cfg.out}")
    return 0


def _edit_sweep(args) -> int:
    from ..latent.control import EditSweepConfig, run_sweep

    cfg = C.from_args(EditSweepConfig, args)
    r = run_sweep(cfg)
    others = r["others"]
    print(f"{r['attribute']} -> {r['target']} on {r['clips']} held-out clips")
    print(f"{'alpha':>6} {'at target':>9} {'distance':>9} " + " ".join(f"{o + ' changed':>16}" for o in others))
    for row in r["alphas"]:
        dist = row.get("edited_distance")
        print(f"{row['alpha']:>6g} {row['target_hit_rate']:>9.3f} {('-' if dist is None else f'{dist:.2f}'):>9} "
              + " ".join(f"{row['others'][o]['changed_fraction']:>16.3f}" for o in others))
    print(f"-> {cfg.out}/edit.json, edit.png")
    return 0


def _flow_train(args) -> int:
    from ..latent.flow import FlowTrainConfig, train_flow

    cfg = C.from_args(FlowTrainConfig, args)
    r = train_flow(cfg)
    print(f"{r['steps']} steps in {r['seconds']:.0f} s, final loss {r['final_loss']:.4f}, "
          f"{r['parameters']} parameters -> {cfg.out}")
    return 0


def _trajectory(args) -> int:
    from ..latent.trajectory import TrajectoryConfig, run_trajectory, summarize

    cfg = C.from_args(TrajectoryConfig, args)
    r = run_trajectory(cfg)
    print(summarize(r))
    print(f"-> {cfg.out}/trajectory.json, trajectory.png")
    return 0


def _latent_edit(args) -> int:
    from ..latent.control import LatentEditConfig, run_edit

    cfg = C.from_args(LatentEditConfig, args)
    r = run_edit(cfg)
    print(f"{r['attribute']} -> {r['target']} (alpha {r['alpha']:g}): wrote {r['out']} ({r['seconds']:.1f} s)")
    if "effect" in r:
        print(json.dumps(r["effect"], indent=1))
    return 0


def register(sub) -> None:
    from ..latent.control import EditSweepConfig, LatentEditConfig
    from ..latent.extract import LatentExtractConfig
    from ..latent.flow import FlowTrainConfig
    from ..latent.grid import LatentProbeConfig, LatentTrainConfig
    from ..latent.trajectory import TrajectoryConfig

    p = sub.add_parser("latent", help="SAEs, probes, control vectors and trajectories on audio autoencoder latents",
                       description="Interpret audio autoencoder latent spaces (EnCodec, DAC, Oobleck VAE, the "
                                   "organism's codec): extract latents, train an RMSNorm-L1 SAE grid with pitch/"
                                   "loudness/timbre probes, edit audio with control vectors, follow attributes "
                                   "through a generator's sampling steps.")
    ls = p.add_subparsers(dest="latent_command", metavar="<command>", required=True)
    specs = [
        ("extract", LatentExtractConfig, _extract, "audio -> latent frames + frame measurements (a store)"),
        ("train", LatentTrainConfig, _train, "RMSNorm-L1 SAE grid on a latent store + probes per cell"),
        ("probe", LatentProbeConfig, _probe, "linear probes from one SAE's features (or the raw latents)"),
        ("edit", EditSweepConfig, _edit_sweep, "control-vector isolation sweep on held-out clips"),
        ("flow-train", FlowTrainConfig, _flow_train, "train the small rectified-flow model on latents"),
        ("trajectory", TrajectoryConfig, _trajectory, "attribute convergence through sampling steps"),
    ]
    for name, cls, fn, help_text in specs:
        sp = ls.add_parser(name, help=help_text, description=(cls.__doc__ or help_text).strip())
        C.add_arguments(sp, cls)
        sp.set_defaults(func=fn)
    pe = sub.add_parser("latent-edit", help="push an audio file's pitch/loudness/timbre toward a class",
                        description=(LatentEditConfig.__doc__ or "").strip())
    C.add_arguments(pe, LatentEditConfig)
    pe.set_defaults(func=_latent_edit)
