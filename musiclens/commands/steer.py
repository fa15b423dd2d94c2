"""`musiclens steer`: generate with DiffMean vectors and/or SAE features added to the residual stream.

    musiclens steer --model organism --prompt "a piano piece" --seconds 5 --seed 0 \
        --vector vec/tempo --lam 1.25 --strategy one-to-all --layer 3 --out steered/
    musiclens steer ... --sae saes/layer3 --feature 17 --alpha 1 --catalogue features/ --out steered/

Several vectors compose ("fast but dark"): `--vector vec/tempo,vec/bright
--lam 1.5,-1.0`. λ = 0 gives exactly `musiclens generate`'s audio for the
same prompts, seed and batch size; λ < 0 steers toward the other prompt set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import add_arguments, from_args, option, save_config
from ..errors import MusiclensError


@dataclass
class SteerConfig:
    out: str = option(help="output directory (one WAV per prompt + prompts.json + config.json)")
    model: str = option("organism", help="model name (organism, tiny-random, a folder, a hub id)")
    prompt: str | None = option(None, help="a single prompt")
    prompts: str | None = option(None, help="prompt file, one prompt per line")
    seconds: float = option(5.0, help="seconds of audio per prompt", gt=0)
    seed: int = option(0, help="seed (batch b uses seed + b, as `musiclens generate`)")
    batch_size: int = option(8, help="prompts generated per batch", ge=1)
    guidance_scale: float = option(3.0, help="classifier-free guidance scale")
    temperature: float = option(1.0, help="sampling temperature", gt=0)
    top_k: int = option(250, help="top-k sampling (0 keeps every token)", ge=0)
    audio_prompt: str | None = option(None, help="audio file to continue, as `musiclens generate --audio-prompt`")
    prompt_seconds: float | None = option(None, help="use only the first S seconds of --audio-prompt")
    vector: list[str] = option(default_factory=list, help="DiffMean vector director(y/ies), comma-separated to compose")
    lam: list[float] = option(default_factory=lambda: [1.0], help="λ per vector (one value = all); negative steers toward --neg")
    strategy: str = option("one-to-all", help="injection strategy", choices=["one-to-all", "all-to-all", "single"])
    layer: list[int] = option(default_factory=list,
                              help="source layer l_best per vector (one-to-all, single); one value = all")
    layers: list[int] = option(default_factory=list, help="restrict injection to these target layers (default: all)")
    sae: str | None = option(None, help="SAE directory (SAELens layout) for feature steering")
    feature: list[int] = option(default_factory=list, help="SAE feature index(es), comma-separated")
    alpha: list[float] = option(default_factory=lambda: [1.0], help="α per feature (one value = all)")
    beta: list[float] = option(default_factory=list, help="β (max activation) per feature; default from --catalogue")
    catalogue: str | None = option(None, help="`musiclens features` output dir or catalogue file (β = max_act)")
    branch: str = option("both", help="CFG branch to steer", choices=["both", "cond", "uncond"])
    steps: list[int] = option(default_factory=list, help="generated step range START,STOP (default: all steps)")
    device: str = option("cpu", help="torch device")
    overwrite: bool = option(False, help="replace an existing output directory")


def _per(values: list, n: int, name: str) -> list:
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise MusiclensError(f"--{name}: give 1 or {n} values (one per vector), got {len(values)}")
    return values


def build_specs(model, cfg: SteerConfig) -> list:
    """The steering specs described by `cfg` (validated against `model`)."""
    from ..steer.diffmean import DiffMeanVectors
    from ..steer.inject import DiffMeanSteer, check_strength
    from ..steer.sae_steer import feature_steer

    specs = []
    if cfg.vector:
        lams = [check_strength(x, "--lam") for x in _per(list(cfg.lam), len(cfg.vector), "lam")]
        srcs = _per(list(cfg.layer), len(cfg.vector), "layer") if cfg.layer else [None] * len(cfg.vector)
        for path, lam, src in zip(cfg.vector, lams, srcs):
            vecs = DiffMeanVectors.load(path)
            vecs.check_model(model)
            specs.append(DiffMeanSteer(vecs, lam=lam, strategy=cfg.strategy, layer=src,
                                       layers=cfg.layers or None))
    if cfg.sae:
        if not cfg.feature:
            raise MusiclensError("--sae needs --feature")
        alphas = [check_strength(a, "--alpha") for a in _per(list(cfg.alpha), len(cfg.feature), "alpha")]
        specs.append(feature_steer(model, cfg.sae, cfg.feature, alpha=alphas,
                                   beta=list(cfg.beta) or None, catalogue=cfg.catalogue))
    elif cfg.feature:
        raise MusiclensError("--feature needs --sae")
    if not specs:
        raise MusiclensError("nothing to steer with: give --vector DIR or --sae DIR --feature J")
    for s in specs:
        s.sites(model)   # validate layers / widths / strengths now, before any generation
    return specs


def run(cfg: SteerConfig) -> dict:
    from .. import load_model
    from ..io import atomic_dir, write_json
    from ..steer.generation import generate_batched, write_clips
    from ..audio import read_prompts
    from .generate import read_audio_prompt

    if (cfg.prompt is None) == (cfg.prompts is None):
        raise MusiclensError("give exactly one of --prompt and --prompts")
    prompts = [cfg.prompt] if cfg.prompt is not None else read_prompts(cfg.prompts)
    if cfg.prompt is not None and not cfg.prompt.strip():
        raise MusiclensError("--prompt is empty")
    steps = None
    if cfg.steps:
        if len(cfg.steps) != 2 or cfg.steps[0] < 0 or cfg.steps[1] <= cfg.steps[0]:
            raise MusiclensError("--steps needs START,STOP with 0 <= START < STOP")
        steps = (cfg.steps[0], cfg.steps[1])
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (use --overwrite)")
    model = load_model(cfg.model, device=cfg.device)
    specs = build_specs(model, cfg)
    audio = generate_batched(model, prompts, cfg.seconds, seed=cfg.seed, batch_size=cfg.batch_size,
                             guidance_scale=cfg.guidance_scale, specs=specs, branch=cfg.branch, steps=steps,
                             temperature=cfg.temperature, top_k=cfg.top_k,
                             audio_prompt=read_audio_prompt(cfg, model.sample_rate))
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        names = write_clips(tmp, audio, model.sample_rate, prompts)
        write_json(tmp / "prompts.json", [{"file": n, "prompt": p} for n, p in zip(names, prompts)])
        save_config(cfg, tmp / "config.json")
    return {"out": str(out), "n": len(prompts), "sample_rate": model.sample_rate}


def _main(args) -> int:
    s = run(from_args(SteerConfig, args))
    print(f"wrote {s['n']} steered clip(s) to {s['out']} ({s['sample_rate']} Hz)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("steer", help="generate with DiffMean vectors or SAE features injected",
                       description="Generate audio while adding λ·Δ (DiffMean: one-to-all, all-to-all or single) "
                                   "and/or α·β_j·W_dec[j] (SAE features) to the residual stream.")
    add_arguments(p, SteerConfig)
    p.set_defaults(func=_main)
