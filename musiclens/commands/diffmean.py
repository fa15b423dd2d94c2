"""`musiclens diffmean`: DiffMean steering vectors from two prompt files.

    musiclens diffmean --model organism --pos fast.txt --neg slow.txt --out vec/tempo

writes per-layer Δ(l) = μ_A − μ_B (+ the means and per-prompt vectors),
meta.json, config.json, cosine.png and pca_layer<l>.png. See
`musiclens.steer.diffmean` for the directory format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import add_arguments, from_args, option, save_config
from ..errors import MusiclensError


@dataclass
class DiffMeanConfig:
    out: str = option(help="output directory")
    pos: str | None = option(None, help="prompt file of set A (one prompt per line): Δ points toward it")
    neg: str | None = option(None, help="prompt file of set B (one prompt per line)")
    concept: str | None = option(None, help="instead of --pos/--neg: built-in prompt sets in the corpus caption "
                                             "vocabulary: tempo (fast/slow), brightness (bright/dark), dynamics "
                                             "(loud/soft), register (high/low)",
                                 choices=["tempo", "brightness", "dynamics", "register"])
    n_concept_prompts: int = option(40, help="prompts per side with --concept", ge=2)
    model: str = option("organism", help="model name (organism, tiny-random, a folder, a hub id)")
    layers: str = option("all", help="layers to capture: all, 2,6 or early,25%,50%,75%,late")
    capture: str = option("auto", help="prompt-side capture rule: auto (eos for melody, generate otherwise), "
                                       "eos, generate, teacher", choices=["auto", "eos", "generate", "teacher"])
    capture_seconds: float = option(1.0, help="seconds generated / teacher-forced per prompt (generate, teacher)", gt=0)
    seed: int = option(0, help="sampling seed for the capture generation (shared by both sets)")
    guidance_scale: float = option(3.0, help="CFG scale of the capture generation")
    batch_size: int = option(8, help="prompts per forward/generation batch", ge=1)
    plot_layer: int | None = option(None, help="layer of the PCA plot (default: the layer with the largest |Δ|)")
    device: str = option("cpu", help="torch device")
    overwrite: bool = option(False, help="replace an existing output directory")


def run(cfg: DiffMeanConfig) -> dict:
    """Compute, save and plot; returns a short summary."""
    from .. import load_model
    from ..io import atomic_dir
    from ..steer.diffmean import compute_diffmean, plot_cosine, plot_pca
    from ..audio import read_prompts
    from ..steer.prompts import CONCEPTS, concept_prompts

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (use --overwrite)")
    if cfg.concept:
        if cfg.pos or cfg.neg:
            raise MusiclensError("give either --concept or --pos/--neg, not both")
        pos_side, neg_side, _ = CONCEPTS[cfg.concept]
        pos = concept_prompts(cfg.concept, pos_side, cfg.n_concept_prompts)
        neg = concept_prompts(cfg.concept, neg_side, cfg.n_concept_prompts)
        names = (pos_side, neg_side)
    else:
        if not cfg.pos or not cfg.neg:
            raise MusiclensError("give --pos and --neg prompt files (or --concept)")
        pos = read_prompts(cfg.pos, min_count=2)
        neg = read_prompts(cfg.neg, min_count=2)
        names = (Path(cfg.pos).stem, Path(cfg.neg).stem)
    if cfg.batch_size < 1:
        raise MusiclensError("--batch-size must be >= 1")
    model = load_model(cfg.model, device=cfg.device)
    layers = model.parse_layers(cfg.layers)
    if cfg.plot_layer is not None and cfg.plot_layer not in layers:
        raise MusiclensError(f"--plot-layer {cfg.plot_layer} is not among the captured layers {layers}")
    vecs = compute_diffmean(model, pos, neg, layers=layers, rule=cfg.capture, batch_size=cfg.batch_size,
                            seconds=cfg.capture_seconds, seed=cfg.seed, guidance_scale=cfg.guidance_scale)
    vecs.meta.update(pos_file=cfg.pos, neg_file=cfg.neg, pos_name=names[0], neg_name=names[1],
                     concept=cfg.concept)
    norms = {l: float(vecs.delta(l).norm()) for l in vecs.layers}
    plot_layer = cfg.plot_layer if cfg.plot_layer is not None else max(norms, key=norms.get)
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        vecs.save(tmp)
        save_config(cfg, tmp / "config.json")
        from ..io import write_text

        write_text(tmp / "pos.txt", "\n".join(pos) + "\n")     # the exact prompt sets, reusable as files
        write_text(tmp / "neg.txt", "\n".join(neg) + "\n")
        plot_cosine(vecs, tmp / "cosine.png", title=f"cos Δ(l): {names[0]} vs {names[1]}")
        plot_pca(vecs, plot_layer, tmp / f"pca_layer{plot_layer}.png", labels=names)
    return {"out": str(out), "layers": vecs.layers, "n_pos": len(pos), "n_neg": len(neg),
            "rule": vecs.meta["capture"]["rule"], "norms": norms, "plot_layer": plot_layer}


def _main(args) -> int:
    cfg = from_args(DiffMeanConfig, args)
    s = run(cfg)
    print(f"wrote {s['out']}: Δ for {len(s['layers'])} layers from {s['n_pos']} vs {s['n_neg']} prompts "
          f"(capture rule {s['rule']}); largest |Δ| at layer {max(s['norms'], key=s['norms'].get)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("diffmean", help="DiffMean steering vectors from two prompt files",
                       description="Per-layer Δ(l) = mean(A) − mean(B) of prompt-side residual activations for two "
                                   "prompt sets (one prompt per line, >= 2 each), saved with metadata, a cosine "
                                   "matrix across layers and a PCA plot.")
    add_arguments(p, DiffMeanConfig)
    p.set_defaults(func=_main)
