"""Steering experiments: layer scan, strength sweep, prompt-count ablation, evaluation, feature steering.

Every experiment is "generate the same held-out prompts with the same seeds
under several steering conditions, measure, compare with the unsteered
baseline". `Runner` owns that loop once:

* one setup (model, prompts, seconds, seed, batch size, CFG scale, branch,
  steps) shared by all conditions, so conditions differ only by steering;
* every condition's audio (and each metric's per-clip values) is cached on
  disk under a key derived from the setup and the exact per-layer vectors
  added (`cache/<key>.npy`), so the baseline is generated once per
  experiment (and across experiments that share a cache folder), and a
  killed run resumes where it stopped;
* FAD is computed against a *reference* set: real clips (`--reference DIR`,
  e.g. the corpus's held-out audio) or, by default, an independent unsteered
  generation of the same prompts with another seed. So FAD at λ = 0 is the
  sampling floor, and "FAD within 2x of the λ = 0 FAD" (the papers' quality
  criterion) is meaningful.

Results are plain dicts (JSON-able); `write_outputs` adds the PNG and the
markdown table next to the JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import MusiclensError
from ..io import atomic_path, write_json, write_text
from .generation import generate_batched
from .inject import DiffMeanSteer, plan
from .metrics import MeasureContext, measure_clips, relative_change, summary

REFERENCE_SEED_OFFSET = 10007


@dataclass
class Runner:
    """Generates, caches and measures steering conditions on one fixed prompt set."""

    model: object
    prompts: list[str]
    seconds: float
    metrics: list[str]
    seed: int = 0
    batch_size: int = 8
    guidance_scale: float = 3.0
    branch: str = "both"
    steps: tuple[int, int] | None = None
    cache_dir: Path | None = None
    embedder: object = None
    reference_audio: list[np.ndarray] | None = None
    ctx: MeasureContext = field(default_factory=MeasureContext)
    progress: bool = True
    reference_given: bool = False
    timings: dict = field(default_factory=lambda: {"generate_s": 0.0, "clips": 0})
    _emb_cache: dict = field(default_factory=dict)
    _mem: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.prompts) < 2:
            raise MusiclensError(f"experiments need at least 2 held-out prompts, got {len(self.prompts)}")
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir)
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    # ---- generation with caching ---------------------------------------------------------------
    def _key(self, vectors: dict[int, torch.Tensor], seed: int) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.model.name, self.model.weights_hash, self.prompts, self.seconds, seed,
                             self.batch_size, self.guidance_scale, self.branch, self.steps]).encode())
        for l in sorted(vectors):
            h.update(str(l).encode())
            h.update(vectors[l].float().contiguous().numpy().tobytes())
        return h.hexdigest()[:20]

    def audio_key(self, specs: Sequence = (), seed: int | None = None) -> tuple[str, dict]:
        """Cache key of a condition (setup + the exact vectors added) and those vectors."""
        seed = self.seed if seed is None else seed
        vectors = plan(self.model, specs) if specs else {}
        if vectors and all(float(v.abs().max()) == 0.0 for v in vectors.values()):
            vectors = {}   # λ = 0 is the baseline bit for bit (tested), so share its cache entry
        return self._key(vectors, seed), vectors

    def audio(self, specs: Sequence = (), seed: int | None = None) -> np.ndarray:
        """Audio [n, T] of all prompts under `specs` (cached)."""
        import time

        seed = self.seed if seed is None else seed
        key, vectors = self.audio_key(specs, seed)
        if key in self._mem:
            return self._mem[key]
        path = self.cache_dir / f"{key}.npy" if self.cache_dir is not None else None
        if path is not None and path.exists():
            audio = np.load(path)
        else:
            t0 = time.perf_counter()
            audio = generate_batched(self.model, self.prompts, self.seconds, seed=seed, batch_size=self.batch_size,
                                     guidance_scale=self.guidance_scale, specs=list(specs) if vectors else (),
                                     branch=self.branch, steps=self.steps)
            self.timings["generate_s"] += time.perf_counter() - t0
            self.timings["clips"] += len(self.prompts)
            if path is not None:
                with atomic_path(path, suffix=".npy") as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, audio)
        self._mem[key] = audio
        return audio

    # ---- measurement ---------------------------------------------------------------------------
    def _embeddings(self, name: str, ys) -> np.ndarray | None:
        from ..measure.fad import embed_set

        if self.embedder is None:
            return None
        if name not in self._emb_cache:
            self._emb_cache[name] = embed_set(self.embedder, ys, self.model.sample_rate)
        return self._emb_cache[name]

    def reference(self) -> list[np.ndarray]:
        if self.reference_audio is None:
            self.reference_audio = list(self.audio((), seed=self.seed + REFERENCE_SEED_OFFSET))
        return self.reference_audio

    def fad(self, key: str, ys) -> float | None:
        from ..measure.fad import fad

        if self.embedder is None:
            return None
        ref = self._embeddings("__reference__", self.reference())
        return fad(self._embeddings(key, ys), ref)

    def condition(self, name: str, specs: Sequence = ()) -> dict:
        """Generate (or load) and measure one condition: per-metric summary, values, FAD."""
        ys = self.audio(specs)
        key, _ = self.audio_key(specs)
        vals = self._measure(key, ys)
        return {"name": name, "values": {m: v.tolist() for m, v in vals.items()},
                "summary": {m: summary(v) for m, v in vals.items()}, "fad": self.fad(key, ys)}

    def _measure(self, key: str, ys) -> dict[str, np.ndarray]:
        """Metric values per clip, memoised per (audio, metric): conditions shared by experiments are measured once."""
        for m in self.metrics:
            path = self._metric_path(key, m)
            if (key, m) not in self._mem and path is not None and path.exists():
                self._mem[(key, m)] = np.load(path)
        todo = [m for m in self.metrics if (key, m) not in self._mem]
        if todo:
            vals, _ = measure_clips(list(ys), self.model.sample_rate, todo, self.ctx)
            for m, v in vals.items():
                self._mem[(key, m)] = v
                path = self._metric_path(key, m)
                if path is not None:
                    with atomic_path(path, suffix=".npy") as tmp:
                        with open(tmp, "wb") as f:
                            np.save(f, v)
        return {m: self._mem[(key, m)] for m in self.metrics}

    def _metric_path(self, key: str, metric: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{key}.metric-{hashlib.sha1(metric.encode()).hexdigest()[:12]}.npy"

    def baseline(self) -> dict:
        key = ("__baseline__", tuple(self.metrics))      # metrics may change between experiments
        if key not in self._mem:
            self._mem[key] = self.condition("baseline", ())
        return self._mem[key]

    def compare(self, name: str, specs: Sequence) -> dict:
        """A condition plus its relative change vs the baseline for every metric."""
        base = self.baseline()
        res = self.condition(name, specs)
        res["relative_change"] = {m: relative_change(res["summary"][m]["mean"], base["summary"][m]["mean"])
                                  for m in self.metrics}
        return res

    def describe(self) -> dict:
        return {"model": self.model.name, "weights_hash": self.model.weights_hash, "n_prompts": len(self.prompts),
                "prompts": self.prompts, "seconds": self.seconds, "seed": self.seed, "batch_size": self.batch_size,
                "guidance_scale": self.guidance_scale, "branch": self.branch, "steps": self.steps,
                "metrics": self.metrics, "fad_embedder": getattr(self.embedder, "name", None),
                "fad_reference": f"given clips ({len(self.reference_audio)})" if self.reference_given else
                f"independent unsteered generation of the same prompts (seed + {REFERENCE_SEED_OFFSET})",
                "generate_s": round(self.timings["generate_s"], 2), "generated_clips": self.timings["clips"]}


def _score(rel: float, expect: str) -> float:
    if not math.isfinite(rel):
        return float("-inf")
    return rel if expect == "up" else -rel if expect == "down" else abs(rel)


def _slim(res: dict) -> dict:
    """Drop per-clip values from a condition (keeps JSON small for large sweeps)."""
    return {k: v for k, v in res.items() if k != "values"}


# ---- experiments ---------------------------------------------------------------------------------
def scan_layers(runner: Runner, vecs, lam: float, layers: Sequence[int] | None = None, strategy: str = "single",
                expect: str = "any") -> dict:
    """Inject each layer's Δ (at strength λ), one layer at a time; l_best = the largest shift of the primary metric."""
    metric = runner.metrics[0]
    layers = list(layers) if layers else vecs.layers
    base = runner.baseline()
    rows = []
    for l in tqdm(layers, desc="scan layers", unit="layer", disable=None if runner.progress else True):
        spec = DiffMeanSteer(vecs, lam, strategy, layer=l)
        r = runner.compare(f"layer {l}", [spec])
        rows.append({"layer": l, **_slim(r)})
    scores = [_score(r["relative_change"][metric], expect) for r in rows]
    # no l_best when no layer moved the metric in the expected direction (ties at 0 would pick layer 0 blindly)
    best = rows[int(np.argmax(scores))]["layer"] if rows and max(scores) > 0 else None
    return {"experiment": "scan-layers", "metric": metric, "lam": lam, "strategy": strategy, "expect": expect,
            "baseline": _slim(base), "layers": rows, "l_best": best,
            "note": None if best is not None else "no layer moved the metric in the expected direction"}


def sweep(runner: Runner, grid: Sequence[float], make_specs: Callable[[float], list], strength_name: str = "lam") -> dict:
    """Metric and FAD vs steering strength (λ for DiffMean, α for SAE features)."""
    base = runner.baseline()
    rows = []
    for s in tqdm(list(grid), desc=f"sweep {strength_name}", unit="step", disable=None if runner.progress else True):
        r = runner.compare(f"{strength_name}={s:g}", make_specs(float(s)))
        rows.append({strength_name: float(s), **_slim(r)})
    return {"experiment": "sweep", "metric": runner.metrics[0], "strength": strength_name, "baseline": _slim(base),
            "rows": rows}


def pick_strength(sweep_res: dict, sign: int = 1, fad_factor: float = 2.0) -> dict | None:
    """The strongest strength of one sign whose FAD stays within `fad_factor` x the λ=0 FAD."""
    name = sweep_res["strength"]
    fad0 = sweep_res["baseline"].get("fad")
    rows = [r for r in sweep_res["rows"] if r[name] * sign > 0]
    if fad0 is None:
        return None
    ok = [r for r in rows if r.get("fad") is not None and r["fad"] <= fad_factor * fad0]
    if not ok:
        return None
    return max(ok, key=lambda r: abs(r[name]))


def check_sizes(vecs, sizes: Sequence[int]) -> int:
    """Prompts per set in `vecs`; a one-line error for a size it cannot draw (instead of dropping it)."""
    n_avail = min(vecs.pos[vecs.layers[0]].shape[0], vecs.neg[vecs.layers[0]].shape[0])
    bad = [int(n) for n in sizes if not 2 <= int(n) <= n_avail]
    if bad:
        raise MusiclensError(f"--sizes {bad}: each must be between 2 and {n_avail}, the prompts per set "
                             "the vectors were made from")
    return n_avail


def ablate_prompts(runner: Runner, vecs, sizes: Sequence[int], lam: float, strategy: str, layer: int | None,
                   repeats: int = 1, seed: int = 0) -> dict:
    """Steering effect vs the number of prompts per set used to estimate Δ."""
    metric = runner.metrics[0]
    n_avail = check_sizes(vecs, sizes)
    sizes = sorted({int(n) for n in sizes} | {n_avail})
    base = runner.baseline()
    ref_layer = layer if layer is not None else vecs.layers[len(vecs.layers) // 2]
    full = vecs.delta(ref_layer)
    rows = []
    for n in tqdm(sizes, desc="ablate prompts", unit="size", disable=None if runner.progress else True):
        rels, fads, coss = [], [], []
        for r in range(repeats if n < n_avail else 1):
            sub = vecs.subset(n, seed=seed + r) if n < n_avail else vecs
            res = runner.compare(f"n={n} r={r}", [DiffMeanSteer(sub, lam, strategy, layer=layer)])
            rels.append(res["relative_change"][metric])
            fads.append(res["fad"])
            coss.append(float(torch.nn.functional.cosine_similarity(sub.delta(ref_layer), full, dim=0)))
        rows.append({"n_prompts": n, "relative_change": float(np.nanmean(rels)),
                     "relative_change_std": float(np.nanstd(rels)), "repeats": len(rels),
                     "fad": None if fads[0] is None else float(np.mean(fads)),
                     "cosine_to_full": float(np.mean(coss))})
    return {"experiment": "ablate-prompts", "metric": metric, "lam": lam, "strategy": strategy, "layer": layer,
            "available_prompts": n_avail, "baseline": _slim(base), "rows": rows}


def evaluate(runner: Runner, directions: Sequence[dict]) -> dict:
    """The papers' Table 1: per direction, metric mean ± std, relative change vs baseline, FAD.

    `directions`: dicts with `name`, `metric` (one of runner.metrics) and `specs`.
    """
    base = runner.baseline()
    rows = []
    for d in tqdm(list(directions), desc="evaluate", unit="direction", disable=None if runner.progress else True):
        r = runner.compare(d["name"], d["specs"])
        m = d["metric"]
        rows.append({"direction": d["name"], "metric": m, "strength": d.get("strength"),
                     "baseline": base["summary"][m], "steered": r["summary"][m],
                     "relative_change": r["relative_change"][m], "fad": r["fad"],
                     "all_relative_change": r["relative_change"]})
    return {"experiment": "evaluate", "baseline": _slim(base), "rows": rows}


# Ordered concepts and the estimator that reads each (the corpus's factor levels, low to high).
ORDERED_CONCEPTS = {"brightness": ("centroid", ["dark", "neutral", "bright"]),
                    "register": ("pitch", ["low", "mid", "high"]),
                    "dynamics": ("loudness", ["soft", "medium", "loud"]),
                    "tempo": ("onset_rate", ["slow", "moderate", "fast"])}


def concept_metrics(concept: str, tagger_heads: dict[str, list[str]]) -> tuple[str | None, str | None, int]:
    """For a concept value "head=value": the tagger metric that reads it (if the tagger has that label), the
    estimator of an ordered head, and the direction steering toward the value should move it (+1, -1; 0 for a
    middle level, whose estimator has no expected direction)."""
    head, _, value = concept.partition("=")
    tag = f"tag:{head}={value}" if value in tagger_heads.get(head, []) else None
    est, levels = ORDERED_CONCEPTS.get(head, (None, []))
    if value not in levels or value == levels[len(levels) // 2]:
        return tag, None, 0
    return tag, est, (1 if value == levels[-1] else -1)


def _concept_checks(ys, base_ys, sr: int, concepts: Sequence[str], ctx, base_cache: dict) -> list[dict]:
    """Did steering move the label's own concept: the tagger's probability of the value, and its estimator?

    All metrics of one feature are measured in one pass over its steered clips; the baseline's are measured
    once per metric over the whole run (`base_cache`)."""
    try:
        heads = ctx.tagger().heads
    except MusiclensError:
        heads = {}
    plans = [(c, *concept_metrics(c, heads)) for c in concepts]
    plans = [p for p in plans if p[1] or p[2]]
    metrics = list(dict.fromkeys(m for _, tag, est, _ in plans for m in (tag, est) if m))
    if not metrics:
        return []
    missing = [m for m in metrics if m not in base_cache]
    if missing:
        vals, _ = measure_clips(base_ys, sr, missing, ctx, skip_unavailable=True)
        base_cache.update({m: vals.get(m) for m in missing})
    steered, _ = measure_clips(ys, sr, metrics, ctx, skip_unavailable=True)
    rows = []
    for c, tag, est, sign in plans:
        row: dict = {"concept": c}
        if tag and base_cache.get(tag) is not None and tag in steered:
            b, st = float(np.nanmean(base_cache[tag])), float(np.nanmean(steered[tag]))
            row.update(tagger_metric=tag, tagger_baseline=b, tagger_steered=st, tagger_rises=bool(st > b))
        if est and base_cache.get(est) is not None and est in steered:
            b, st = float(np.nanmean(base_cache[est])), float(np.nanmean(steered[est]))
            row.update(estimator=est, expected=sign, estimator_baseline=b, estimator_steered=st,
                       moved_as_expected=bool(np.sign(st - b) == sign) if np.isfinite(st - b) else None)
        rows.append(row)
    return rows


def concept_check_summary(checks: Sequence[dict]) -> dict:
    """Pooled concept checks: how many pairs, the share where the tagger's probability rises and where the
    estimator moves as the value points, each with a one-sided binomial p against one half (approximate:
    the pairs share one baseline)."""
    from scipy.stats import binomtest

    def share_p(flags: list) -> tuple[float | None, float | None]:
        flags = [bool(f) for f in flags if f is not None]
        if not flags:
            return None, None
        return float(np.mean(flags)), float(binomtest(sum(flags), len(flags), 0.5, alternative="greater").pvalue)

    t_share, t_p = share_p([c.get("tagger_rises") for c in checks])
    e_share, e_p = share_p([c.get("moved_as_expected") for c in checks])
    return {"pairs": len(checks), "tagger_pairs": sum("tagger_rises" in c for c in checks),
            "tagger_rises_share": t_share, "tagger_rises_p": t_p,
            "estimator_pairs": sum(c.get("moved_as_expected") is not None for c in checks),
            "estimator_as_expected_share": e_share, "estimator_as_expected_p": e_p}


def feature_steering(model, sae_spec: Callable[[int, float], list], features: Sequence[int],
                     labels: dict[int, str], prompt: str, n_samples: int, seconds: float, seed: int,
                     batch_size: int, guidance_scale: float, ctx: MeasureContext, alpha: float = 1.0,
                     cache_dir: Path | None = None, progress: bool = True,
                     concepts: dict[int, list[str]] | None = None) -> dict:
    """The MusicGen SAE paper's test: CLAP(label, α=1) − CLAP(label, α=0) per valid feature on a neutral prompt.

    When a label names corpus concept values (`concepts`), steering is also checked against the concept itself,
    not only the label's text: whether the tagger's probability of the value rises, and whether the value's
    estimator (centroid, CREPE pitch, loudness, onset rate) moves the way the value points. CLAP alone can
    reward audio that merely sounds more like the words.
    """
    from ..measure.clap import clap_similarity

    runner = Runner(model, [prompt] * n_samples, seconds, metrics=[], seed=seed, batch_size=batch_size,
                    guidance_scale=guidance_scale, cache_dir=cache_dir, ctx=ctx, progress=progress)
    clap = ctx.clap()
    texts = sorted({labels[j] for j in features})
    base_audio = list(runner.audio(()))
    base_sim = clap_similarity(clap, base_audio, model.sample_rate, texts).cpu().numpy()
    base_by_text = {t: base_sim[:, i] for i, t in enumerate(texts)}
    base_cache: dict = {}
    rows = []
    for j in tqdm(list(features), desc="feature steering", unit="feature", disable=None if progress else True):
        ys = runner.audio(sae_spec(j, alpha))
        sim = clap_similarity(clap, list(ys), model.sample_rate, [labels[j]]).cpu().numpy()[:, 0]
        b = base_by_text[labels[j]]
        row = {"feature": int(j), "label": labels[j], "clap_baseline": float(b.mean()),
               "clap_steered": float(sim.mean()), "improvement": float(sim.mean() - b.mean()),
               "improvement_std": float((sim - b).std(ddof=1)) if len(sim) > 1 else 0.0}
        if concepts and concepts.get(j):
            row["concept_checks"] = _concept_checks(list(ys), base_audio, model.sample_rate, concepts[j], ctx,
                                                    base_cache)
        rows.append(row)
    imp = np.array([r["improvement"] for r in rows]) if rows else np.zeros(0)
    checks = [c for r in rows for c in r.get("concept_checks", [])]
    return {"experiment": "feature-steering", "prompt": prompt, "alpha": alpha, "n_samples": n_samples,
            "clap": getattr(clap, "name", "clap"), "features": rows,
            "share_positive": float((imp > 0).mean()) if len(imp) else None,
            "mean_improvement": float(imp.mean()) if len(imp) else None,
            "concept_checks": concept_check_summary(checks),
            "generate_s": runner.timings["generate_s"]}


# ---- outputs: JSON + PNG + markdown ------------------------------------------------------------
def _fmt(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{nd}g}" if abs(x) < 1e4 else f"{x:.4g}"


def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.1f} %"


def _ms(s: dict) -> str:
    return f"{_fmt(s['mean'])} ± {_fmt(s['std'])}"


def markdown(res: dict) -> str:
    """The experiment's markdown table."""
    exp = res["experiment"]
    lines = []
    if exp == "scan-layers":
        m = res["metric"]
        lines += [f"Layer scan: λ = {res['lam']:g} ({res['strategy']}), metric `{m}`; "
                  f"baseline {_ms(res['baseline']['summary'][m])}, FAD {_fmt(res['baseline']['fad'])}; "
                  f"**l_best = {res['l_best']}**", "",
                  f"| layer | {m} mean ± std | relative change | FAD |", "|---:|---:|---:|---:|"]
        for r in res["layers"]:
            lines.append(f"| {r['layer']} | {_ms(r['summary'][m])} | {_pct(r['relative_change'][m])} | {_fmt(r['fad'])} |")
    elif exp == "sweep":
        m, s = res["metric"], res["strength"]
        lines += [f"Strength sweep ({s}), metric `{m}`; baseline {_ms(res['baseline']['summary'][m])}, "
                  f"FAD {_fmt(res['baseline']['fad'])}", "",
                  f"| {s} | {m} mean ± std | relative change | FAD |", "|---:|---:|---:|---:|"]
        for r in res["rows"]:
            lines.append(f"| {r[s]:g} | {_ms(r['summary'][m])} | {_pct(r['relative_change'][m])} | {_fmt(r['fad'])} |")
    elif exp == "ablate-prompts":
        m = res["metric"]
        lines += [f"Prompt-count ablation: λ = {res['lam']:g} ({res['strategy']}, layer {res['layer']}), metric `{m}`",
                  "", "| prompts per set | relative change | FAD | cos(Δ_n, Δ_all) |", "|---:|---:|---:|---:|"]
        for r in res["rows"]:
            lines.append(f"| {r['n_prompts']} | {_pct(r['relative_change'])} | {_fmt(r['fad'])} | "
                         f"{_fmt(r['cosine_to_full'])} |")
    elif exp == "evaluate":
        lines += [f"Evaluation on {res['setup']['n_prompts'] if 'setup' in res else '?'} held-out prompts; "
                  f"baseline FAD {_fmt(res['baseline']['fad'])}", "",
                  "| direction | strength | metric | baseline mean ± std | steered mean ± std | relative change | FAD |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for r in res["rows"]:
            lines.append(f"| {r['direction']} | {_fmt(r['strength'])} | {r['metric']} | {_ms(r['baseline'])} | "
                         f"{_ms(r['steered'])} | {_pct(r['relative_change'])} | {_fmt(r['fad'])} |")
    elif exp == "feature-steering":
        lines += [f"Feature steering on \"{res['prompt']}\" (α = {res['alpha']:g} vs 0, {res['n_samples']} samples, "
                  f"{res['clap']}): **{_pct(res['share_positive']).replace('+', '')} of features improve** "
                  f"(mean improvement {_fmt(res['mean_improvement'])})", "",
                  "| feature | label | CLAP α=0 | CLAP α=1 | improvement |", "|---:|---|---:|---:|---:|"]
        for r in res["features"]:
            lines.append(f"| {r['feature']} | {r['label']} | {_fmt(r['clap_baseline'])} | {_fmt(r['clap_steered'])} | "
                         f"{_fmt(r['improvement'])} |")
        cc = res.get("concept_checks") or {}
        if cc.get("pairs"):
            lines += ["", f"The labels' own concepts ({cc['pairs']} feature-concept pairs): the tagger's probability "
                          f"of the value rises in {_pct(cc['tagger_rises_share']).replace('+', '')} of "
                          f"{cc['tagger_pairs']}; the value's estimator moves the way it points in "
                          f"{_pct(cc['estimator_as_expected_share']).replace('+', '')} of {cc['estimator_pairs']}", "",
                      "| feature | concept | tagger p α=0 | α=1 | estimator | α=0 | α=1 | as expected |",
                      "|---:|---|---:|---:|---|---:|---:|---|"]
            for r in res["features"]:
                for c in r.get("concept_checks", []):
                    lines.append(f"| {r['feature']} | {c['concept']} | {_fmt(c.get('tagger_baseline'))} | "
                                 f"{_fmt(c.get('tagger_steered'))} | {c.get('estimator', '')} | "
                                 f"{_fmt(c.get('estimator_baseline'))} | {_fmt(c.get('estimator_steered'))} | "
                                 f"{'' if c.get('moved_as_expected') is None else c['moved_as_expected']} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exp = res["experiment"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax2 = None
    if exp == "scan-layers":
        m = res["metric"]
        xs = [r["layer"] for r in res["layers"]]
        ys = [100 * (r["relative_change"][m] if r["relative_change"][m] is not None else np.nan) for r in res["layers"]]
        ax.bar(xs, ys, color=["tab:red" if x == res["l_best"] else "tab:gray" for x in xs])
        ax.set_xlabel("injected layer")
        ax.set_ylabel(f"{m}: change vs baseline (%)")
        ax.set_title(f"layer scan (λ = {res['lam']:g}); l_best = {res['l_best']}")
    elif exp in ("sweep", "ablate-prompts"):
        if exp == "sweep":
            s, m = res["strength"], res["metric"]
            xs = [r[s] for r in res["rows"]]
            ys = [100 * _nan(r["relative_change"][m]) for r in res["rows"]]
            ax.set_xlabel("λ" if s == "lam" else "α")
        else:
            m = res["metric"]
            xs = [r["n_prompts"] for r in res["rows"]]
            ys = [100 * _nan(r["relative_change"]) for r in res["rows"]]
            ax.set_xlabel("prompts per set used for Δ")
        ax.plot(xs, ys, "o-", color="tab:red", label=f"{m} change (%)")
        ax.set_ylabel(f"{m}: change vs baseline (%)", color="tab:red")
        fads = [_nan(r.get("fad")) for r in res["rows"]]
        if any(np.isfinite(fads)):
            ax2 = ax.twinx()
            ax2.plot(xs, fads, "s--", color="tab:blue", label="FAD")
            if res["baseline"].get("fad") is not None:
                ax2.axhline(2 * res["baseline"]["fad"], color="tab:blue", lw=0.8, ls=":", label="2 x FAD(0)")
            ax2.set_ylabel("FAD vs reference", color="tab:blue")
        ax.set_title(f"{exp}: {m}")
    elif exp == "evaluate":
        names = [r["direction"] for r in res["rows"]]
        ys = [100 * _nan(r["relative_change"]) for r in res["rows"]]
        ax.barh(names, ys, color=["tab:red" if y >= 0 else "tab:blue" for y in ys])
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("relative change of the direction's metric (%)")
        ax.set_title("steering evaluation")
    elif exp == "feature-steering":
        imp = [r["improvement"] for r in res["features"]]
        ax.hist(imp, bins=max(5, min(30, len(imp))), color="tab:gray")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("CLAP(label, α=1) − CLAP(label, α=0)")
        ax.set_ylabel("features")
        ax.set_title(f"feature steering: {_pct(res['share_positive']).replace('+', '')} positive")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def write_outputs(res: dict, out: Path, name: str) -> None:
    """`<name>.json`, `<name>.png`, `<name>.md` in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", _finite(res))
    plot(res, out / f"{name}.png")
    write_text(out / f"{name}.md", markdown(res))


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
