"""Steering experiments as commands: scan-layers, sweep, ablate-prompts, evaluate, feature-steering.

Each writes `<name>.json` + `<name>.png` + `<name>.md` (a markdown table) and
`config.json` into `--out`, and caches every generated condition under
`--out/cache` (a rerun with `--resume` reuses it; the baseline is generated
once). Held-out prompts: `--prompts FILE`, or `--n-prompts` built-in neutral
prompts that name no steered concept.

    musiclens scan-layers --model organism --vector vec/tempo --lam 2 --metric onset_rate --out runs/scan
    musiclens sweep --model organism --vector vec/tempo --layer 3 --grid 0,0.5,1,2,3,5 --metric onset_rate --out runs/sweep
    musiclens ablate-prompts --model organism --vector vec/tempo --layer 3 --lam 2 --sizes 10,25,50,100 --out runs/ablate
    musiclens evaluate --model organism --vector vec/tempo,vec/bright --metric onset_rate,centroid --layer 3 --lam 2 --out runs/eval
    musiclens feature-steering --model organism --sae saes/l3 --features-dir feats/ --out runs/fs
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import add_arguments, check_values, from_args, option, save_config
from ..errors import MusiclensError


@dataclass(kw_only=True)
class CommonConfig:
    out: str = option(help="output directory")
    model: str = option("organism", help="model name (organism, tiny-random, a folder, a hub id)")
    prompts: str | None = option(None, help="held-out prompt file (default: --n-prompts built-in neutral prompts)")
    n_prompts: int = option(50, help="number of built-in neutral prompts when --prompts is not given", ge=2)
    seconds: float = option(5.0, help="seconds generated per prompt", gt=0)
    seed: int = option(0, help="generation seed (batch b uses seed + b)")
    batch_size: int = option(8, help="prompts per generation batch", ge=1)
    guidance_scale: float = option(3.0, help="classifier-free guidance scale")
    branch: str = option("both", help="CFG branch to steer", choices=["both", "cond", "uncond"])
    metric: list[str] = option(default_factory=lambda: ["onset_rate"],
                               help="metric(s); the first is the primary one (see `musiclens measure`)")
    embedder: str = option("auto", help="FAD embedder: auto, tagger, clap, mel", choices=["auto", "tagger", "clap", "mel"])
    reference: str | None = option(None, help="folder of real clips as the FAD reference "
                                              "(default: an independent unsteered generation)")
    fad: bool = option(True, help="compute FAD against the reference (--no-fad skips it, and the embedder load)")
    clap: str | None = option(None, help="CLAP model folder for clap:<text> metrics (default: shipped mini-CLAP)")
    cache: str | None = option(None, help="audio cache folder (default: OUT/cache); experiments that share one "
                                          "on the same prompts and seeds generate the baseline only once")
    device: str = option("cpu", help="torch device")
    resume: bool = option(False, help="reuse the cache of an earlier run in --out")
    overwrite: bool = option(False, help="start over in an existing --out")


@dataclass(kw_only=True)
class VectorConfig(CommonConfig):
    vector: str = option(help="DiffMean vector directory (`musiclens diffmean`)")
    strategy: str = option("one-to-all", help="injection strategy", choices=["one-to-all", "all-to-all", "single"])
    layer: int | None = option(None, help="source layer l_best (one-to-all, single)")


@dataclass(kw_only=True)
class ScanConfig(CommonConfig):
    vector: str = option(help="DiffMean vector directory")
    lam: float = option(2.0, help="λ used at every layer")
    layers: list[int] = option(default_factory=list, help="layers to scan (default: all in the vector set)")
    strategy: str = option("single", help="single: Δ(l) into layer l only; one-to-all: Δ(l) into every layer",
                           choices=["single", "one-to-all"])
    expect: str = option("any", help="direction the metric should move for +λ (picks l_best)",
                         choices=["up", "down", "any"])


@dataclass(kw_only=True)
class SweepConfig(CommonConfig):
    vector: str | None = option(None, help="DiffMean vector directory (sweep λ)")
    strategy: str = option("one-to-all", help="injection strategy", choices=["one-to-all", "all-to-all", "single"])
    layer: int | None = option(None, help="source layer l_best (one-to-all, single)")
    sae: str | None = option(None, help="SAE directory (sweep α of --feature instead)")
    feature: list[int] = option(default_factory=list, help="SAE feature(s) for an α sweep")
    beta: list[float] = option(default_factory=list, help="β per feature (default: from --catalogue)")
    catalogue: str | None = option(None, help="`musiclens features` output (β = max_act)")
    grid: list[float] = option(default_factory=lambda: [0, 0.5, 1, 1.5, 2, 3, 4, 5],
                               help="strengths (λ or α); negative λ steers toward the other set")


@dataclass(kw_only=True)
class AblateConfig(VectorConfig):
    lam: float = option(2.0, help="λ")
    sizes: list[int] = option(default_factory=lambda: [10, 20, 50, 100], help="prompts per set used for Δ", ge=1)
    repeats: int = option(1, help="random subsets per size (mean ± std)", ge=1)


@dataclass(kw_only=True)
class EvaluateConfig(CommonConfig):
    vector: list[str] = option(help="DiffMean vector directories, comma-separated (one concept each)")
    lam: list[float] = option(default_factory=lambda: [2.0], help="λ per vector (one = all); each vector is "
                                                                   "evaluated at +λ (toward --pos) and −λ")
    layer: list[int] = option(default_factory=list, help="l_best per vector (one = all)")
    strategy: str = option("one-to-all", help="injection strategy", choices=["one-to-all", "all-to-all", "single"])


@dataclass(kw_only=True)
class FeatureSteeringConfig(CommonConfig):
    sae: str = option(help="SAE directory")
    features_dir: str | None = option(None, help="`musiclens features` output (valid features, max_act, annotations)")
    feature: list[int] = option(default_factory=list, help="features to test (default: valid features with a label)")
    labels: str | None = option(None, help="JSON {feature: label} (default: annotations.json of --features-dir)")
    label_strategy: str = option("any", help="annotation strategy whose labels to use (any = clap, llm, tagger)",
                                 choices=["any", "clap", "llm", "tagger"])
    beta: list[float] = option(default_factory=list, help="β per feature (default: max_act from --features-dir)")
    limit: int = option(32, help="test at most this many features (0 = all)", ge=0)
    prompt: str = option("Simple melody", help="neutral prompt")
    n_samples: int = option(8, help="generations per condition (same prompt, different samples)", ge=2)
    alpha: float = option(1.0, help="α of the steered condition (baseline α = 0)")
    concept_check: bool = option(True, help="for labels that name corpus concept values, also measure the value "
                                            "itself: the tagger's probability of it and its estimator (centroid, "
                                            "pitch, loudness, onset rate)")


# ---- shared setup ----------------------------------------------------------------------------------
def _prepare_out(cfg) -> Path:
    import shutil

    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if cfg.overwrite:
            shutil.rmtree(out)
        elif not cfg.resume:
            raise MusiclensError(f"output exists: {out} (use --resume to reuse its cache or --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_common(cfg) -> None:
    from ..steer.metrics import check_metric

    check_values(cfg)  # the options' bounds (--seconds, --batch-size, ...), also for a config built in Python
    if not cfg.metric:
        raise MusiclensError("--metric needs at least one metric")
    for m in cfg.metric:
        check_metric(m)


def _runner(cfg, model, metrics: list[str] | None = None, prompts: list[str] | None = None):
    """(--out, ready; the Runner that generates, caches and measures) after every input is checked."""
    from ..audio import read_prompts
    from ..measure.fad import load_embedder
    from ..steer.experiments import Runner
    from ..steer.generation import list_audio, read_audio
    from ..steer.metrics import MeasureContext
    from ..steer.prompts import neutral_prompts

    if prompts is None:
        if cfg.prompts:
            prompts = read_prompts(cfg.prompts, min_count=2)
        else:
            prompts = neutral_prompts(cfg.n_prompts)  # (>= 2: the option's bound, checked by every caller)
    ref, given = None, False
    if cfg.reference and cfg.fad:
        ref = [read_audio(f, model.sample_rate)[0] for f in list_audio(cfg.reference)]
        if len(ref) < 2:
            raise MusiclensError("--reference needs at least 2 clips")
        given = True
    emb = load_embedder(cfg.embedder) if cfg.fad else None
    if cfg.cache and Path(cfg.cache).exists() and not Path(cfg.cache).is_dir():
        raise MusiclensError(f"--cache is a file, not a folder: {cfg.cache}")
    out = _prepare_out(cfg)  # only now: every input above is checked, so a bad one leaves no --out behind
    return out, Runner(model, prompts, cfg.seconds, metrics=list(metrics if metrics is not None else cfg.metric),
                  seed=cfg.seed, batch_size=cfg.batch_size, guidance_scale=cfg.guidance_scale, branch=cfg.branch,
                  cache_dir=Path(cfg.cache) if cfg.cache else Path(cfg.out) / "cache", embedder=emb, reference_audio=ref, reference_given=given,
                  ctx=MeasureContext(clap_path=cfg.clap))


def _load_vectors(path: str, model):
    from ..steer.diffmean import DiffMeanVectors

    v = DiffMeanVectors.load(path)
    v.check_model(model)
    return v


def _finish(cfg, res: dict, runner, out: Path, name: str) -> dict:
    from ..steer.experiments import write_outputs

    if runner is not None:
        res["setup"] = runner.describe()
    save_config(cfg, out / "config.json")
    write_outputs(res, out, name)
    return res


def _model(cfg):
    from .. import load_model

    return load_model(cfg.model, device=cfg.device)


# ---- commands ------------------------------------------------------------------------------------
def run_scan(cfg: ScanConfig) -> dict:
    from ..steer.experiments import scan_layers
    from ..steer.inject import check_strength

    _check_common(cfg)
    lam = check_strength(cfg.lam, "--lam")
    model = _model(cfg)
    vecs = _load_vectors(cfg.vector, model)
    bad = [l for l in cfg.layers if l not in vecs.layers]
    if bad:
        raise MusiclensError(f"--layers {bad} not in the vector set (layers {vecs.layers})")
    out, runner = _runner(cfg, model)
    res = scan_layers(runner, vecs, lam, cfg.layers or None, cfg.strategy, cfg.expect)
    return _finish(cfg, res, runner, out, "scan_layers")


def _sweep_specs(cfg: SweepConfig, model):
    from ..steer.inject import DiffMeanSteer
    from ..steer.sae_steer import feature_steer

    if bool(cfg.vector) == bool(cfg.sae):
        raise MusiclensError("give exactly one of --vector (λ sweep) and --sae (α sweep)")
    if cfg.vector:
        vecs = _load_vectors(cfg.vector, model)
        DiffMeanSteer(vecs, 1.0, cfg.strategy, layer=cfg.layer).sites(model)   # validate now
        return "lam", lambda s: [DiffMeanSteer(vecs, s, cfg.strategy, layer=cfg.layer)]
    if not cfg.feature:
        raise MusiclensError("--sae needs --feature")
    base = feature_steer(model, cfg.sae, cfg.feature, alpha=1.0, beta=list(cfg.beta) or None, catalogue=cfg.catalogue)

    def make(a: float):
        from dataclasses import replace

        return [replace(base, alpha=a)]

    return "alpha", make


def run_sweep(cfg: SweepConfig) -> dict:
    from ..steer.experiments import sweep
    from ..steer.inject import check_strength

    _check_common(cfg)
    grid = [check_strength(g, "--grid") for g in cfg.grid]
    if not grid:
        raise MusiclensError("--grid is empty")
    model = _model(cfg)
    name, make = _sweep_specs(cfg, model)
    out, runner = _runner(cfg, model)
    res = sweep(runner, grid, make, name)
    return _finish(cfg, res, runner, out, "sweep")


def run_ablate(cfg: AblateConfig) -> dict:
    from ..steer.experiments import ablate_prompts, check_sizes
    from ..steer.inject import DiffMeanSteer, check_strength

    _check_common(cfg)
    lam = check_strength(cfg.lam, "--lam")
    if cfg.repeats < 1:
        raise MusiclensError("--repeats must be >= 1")
    model = _model(cfg)
    vecs = _load_vectors(cfg.vector, model)
    DiffMeanSteer(vecs, lam, cfg.strategy, layer=cfg.layer).sites(model)
    check_sizes(vecs, cfg.sizes)
    out, runner = _runner(cfg, model)
    res = ablate_prompts(runner, vecs, cfg.sizes, lam, cfg.strategy, cfg.layer, repeats=cfg.repeats, seed=cfg.seed)
    return _finish(cfg, res, runner, out, "ablate_prompts")


def directions_for(vectors: list, names: list[tuple[str, str]], metrics: list[str], lams: list[float],
                   layers: list[int | None], strategy: str) -> list[dict]:
    """+λ (toward the pos set) and −λ (toward the neg set) for each concept vector."""
    from ..steer.inject import DiffMeanSteer

    out = []
    for v, (pos, neg), m, lam, l in zip(vectors, names, metrics, lams, layers):
        out.append({"name": f"{pos} (+λ)", "metric": m, "strength": lam, "specs": [DiffMeanSteer(v, lam, strategy, layer=l)]})
        out.append({"name": f"{neg} (−λ)", "metric": m, "strength": -lam,
                    "specs": [DiffMeanSteer(v, -lam, strategy, layer=l)]})
    return out


def concept_names(vecs, path: str) -> tuple[str, str]:
    pos = vecs.meta.get("pos_name") or Path(vecs.meta.get("pos_file") or "pos").stem
    neg = vecs.meta.get("neg_name") or Path(vecs.meta.get("neg_file") or "neg").stem
    return (pos, neg) if pos != neg else (f"{Path(path).name}+", f"{Path(path).name}-")


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from ..steer.experiments import evaluate
    from ..steer.inject import DiffMeanSteer, check_strength

    _check_common(cfg)
    n = len(cfg.vector)
    if n == 0:
        raise MusiclensError("--vector needs at least one directory")

    def per(vals, name):
        vals = list(vals)
        if len(vals) == 1:
            return vals * n
        if len(vals) != n:
            raise MusiclensError(f"--{name}: give 1 or {n} values (one per vector), got {len(vals)}")
        return vals

    metrics = per(cfg.metric, "metric")
    lams = [check_strength(x, "--lam") for x in per(cfg.lam, "lam")]
    layers = per(cfg.layer, "layer") if cfg.layer else [None] * n
    model = _model(cfg)
    vecs = [_load_vectors(p, model) for p in cfg.vector]
    for v, l, lam in zip(vecs, layers, lams):
        DiffMeanSteer(v, lam, cfg.strategy, layer=l).sites(model)
    dirs = directions_for(vecs, [concept_names(v, p) for v, p in zip(vecs, cfg.vector)], metrics, lams, layers,
                          cfg.strategy)
    out, runner = _runner(cfg, model, metrics=list(dict.fromkeys(metrics)))
    res = evaluate(runner, dirs)
    return _finish(cfg, res, runner, out, "evaluate")


def load_labels(cfg: FeatureSteeringConfig, sae_names: set[str]) -> tuple[dict[int, str], dict[int, list[str]]]:
    """{feature: label} from --labels or the features dir's annotations.json, and {feature: concept values the
    label names} (the annotation's own list, else the corpus keywords the label text contains)."""
    import json

    from ..features.concepts import match_label

    def named(label: str) -> list[str]:
        return [v.name for v in match_label(label)]

    if cfg.labels:
        p = Path(cfg.labels)
        if not p.exists():
            raise MusiclensError(f"labels file not found: {p}")
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise MusiclensError(f"{p} is not valid JSON: {e}")
        try:
            labels = {int(k): str(v) for k, v in raw.items() if v}
        except (AttributeError, ValueError):
            raise MusiclensError(f"{p} must be a JSON object {{feature number: label}}, e.g. {{\"17\": \"piano\"}}")
        return labels, {j: named(t) for j, t in labels.items()}
    if not cfg.features_dir:
        raise MusiclensError("feature-steering needs labels: --labels FILE.json or --features-dir with annotations.json")
    p = Path(cfg.features_dir) / "annotations.json"
    if not p.exists():
        raise MusiclensError(f"{p} not found (run `musiclens annotate` first, or pass --labels)")
    data = json.loads(p.read_text()).get("features", {})
    order = ["clap", "llm", "tagger"] if cfg.label_strategy == "any" else [cfg.label_strategy]
    labels, concepts = {}, {}
    for key, by in data.items():
        sae, _, j = key.rpartition("/")
        if sae not in sae_names:
            continue
        for s in order:
            if by.get(s, {}).get("label"):
                labels[int(j)] = str(by[s]["label"])
                concepts[int(j)] = list(by[s].get("concepts") or named(str(by[s]["label"])))
                break
    return labels, concepts


def run_feature_steering(cfg: FeatureSteeringConfig) -> dict:
    from ..steer.experiments import feature_steering
    from ..steer.inject import check_strength
    from ..steer.metrics import MeasureContext
    from ..steer.sae_steer import (betas_from_catalogue, catalogue_names, catalogue_rows_for, feature_steer,
                                   load_sae_checked)
    from ..steer.inject import sae_layer

    check_values(cfg)  # bounds: --seconds, --n-samples, ... (bench/steering.py builds this config in Python)
    alpha = check_strength(cfg.alpha, "--alpha")
    model = _model(cfg)
    sae = load_sae_checked(cfg.sae, model)
    layer = sae_layer(sae)
    labels, concepts = load_labels(cfg, catalogue_names(cfg.sae))
    feats = list(cfg.feature)
    if not feats:
        if not cfg.features_dir:
            raise MusiclensError("give --feature or --features-dir (valid features are read from its catalogue)")
        valid = {int(r["feature"]) for r in catalogue_rows_for(cfg.features_dir, cfg.sae, layer)
                 if r.get("status") == "valid"}
        feats = sorted(j for j in valid if j in labels)
        if cfg.limit:
            feats = feats[: cfg.limit]
    missing = [j for j in feats if j not in labels]
    if missing:
        raise MusiclensError(f"no label for feature(s) {missing[:5]}")
    if not feats:
        raise MusiclensError("no labelled valid features to test")
    if cfg.beta:
        if len(cfg.beta) not in (1, len(feats)):
            raise MusiclensError(f"--beta: give 1 or {len(feats)} values")
        betas = dict(zip(feats, [check_strength(b, "--beta") for b in (list(cfg.beta) * len(feats))[: len(feats)]]))
    else:
        if not cfg.features_dir:
            raise MusiclensError("β needed: --beta or --features-dir")
        betas = dict(zip(feats, betas_from_catalogue(cfg.features_dir, cfg.sae, layer, feats)))
    base = feature_steer(model, cfg.sae, feats, alpha=1.0, beta=[betas[j] for j in feats])  # checks every feature
    out = _prepare_out(cfg)

    def spec(j: int, a: float):
        from dataclasses import replace

        return [replace(base, features=[j], alpha=a, beta=betas[j])]

    res = feature_steering(model, spec, feats, labels, cfg.prompt, cfg.n_samples, cfg.seconds, cfg.seed,
                           cfg.batch_size, cfg.guidance_scale, MeasureContext(clap_path=cfg.clap), alpha=alpha,
                           cache_dir=Path(cfg.cache) if cfg.cache else out / "cache",
                           concepts=concepts if cfg.concept_check else None)
    res["sae"] = str(cfg.sae)
    res["layer"] = layer
    return _finish(cfg, res, None, out, "feature_steering")


def _wrap(cls, fn):
    def main(args) -> int:
        cfg = from_args(cls, args)
        res = fn(cfg)
        from ..steer.experiments import markdown

        print(markdown(res), end="")
        print(f"wrote {cfg.out}")
        return 0

    return main


def register(sub) -> None:
    specs = [
        ("scan-layers", ScanConfig, run_scan, "inject each layer's DiffMean vector; metric shift per layer; l_best"),
        ("sweep", SweepConfig, run_sweep, "metric and FAD vs steering strength (λ or SAE α)"),
        ("ablate-prompts", AblateConfig, run_ablate, "steering effect vs number of prompts used for Δ"),
        ("evaluate", EvaluateConfig, run_evaluate,
         "the papers' Table 1: per direction mean ± std, relative change vs baseline, FAD"),
        ("feature-steering", FeatureSteeringConfig, run_feature_steering,
         "per valid SAE feature: CLAP(label) at α=1 minus α=0 on a neutral prompt; share positive"),
    ]
    for name, cls, fn, help_text in specs:
        p = sub.add_parser(name, help=help_text, description=help_text + ". Writes JSON + PNG + markdown table.")
        add_arguments(p, cls)
        p.set_defaults(func=_wrap(cls, fn))
