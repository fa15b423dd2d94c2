"""Ground-truth concept benchmark on a held-out corpus with known factors.

Why: automatic labels can flatter; the organism corpus says exactly which
instrument, tempo, register, dynamics, drums, mode and brightness each clip
has, so we can ask how well *any single SAE feature* detects each concept
value, and compare with supervised baselines on the raw residual stream.

Protocol (per layer, per SAE, per concept value v; clips labelled v vs not):

* clip-level scores: a feature's max (or mean, `pool`) activation over the
  clip's frames; raw activations are averaged over frames;
* the held-out clips are split in half (stratified by instrument, seeded):
  everything is *chosen or fitted on half A and scored on half B*, so the
  best-of-thousands feature selection does not inflate its AUROC;
* best single feature: highest AUROC on A, its AUROC on B reported;
  "concepts recovered" = share of concept values with that AUROC >= 0.9;
* k-sparse probe (Gurnee et al.): the k features with the largest
  standardised mean difference on A, logistic regression on them; balanced
  accuracy and AUROC on B;
* baselines on raw activations (as AxBench): DiffMean (mean of positives
  minus mean of negatives on A, projection scored on B) and an L2 logistic
  probe on standardised activations;
* label precision: an annotation is correct when the feature's AUROC (all
  held-out clips) for a concept value its label names is >= `label_auroc`.
  That judges the feature as much as the label, so two more readings keep
  them apart: the share of the feature's own top clips (the ones the
  annotator heard) that really carry a named value, and the same share among
  its top held-out clips, each next to the named values' base rate;
* filter audit: the best single feature of each concept value, and whether
  the features pass's filter kept it (a concept that covers a third of the
  tracks makes its feature "too common" under the paper's 25 % rule, and
  annotation only sees valid features).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from ..config import option
from ..errors import MusiclensError
from .concepts import clip_concepts, concept_values


@dataclass
class BenchmarkConfig:
    """Options of `musiclens benchmark concepts`."""

    store: str = option(help="activation store of held-out corpus clips (clips must carry corpus metadata, or "
                             "pass --corpus to look them up by id)")
    out: str = option(help="output directory")
    sae: list[str] = option(default_factory=list, help="SAE directories (default: those of --features)")
    corpus: Optional[str] = option(None, help="rendered corpus directory (metadata.jsonl) for clip factors")
    features: Optional[str] = option(None, help="a `musiclens features` directory: its SAEs are used and the "
                                                "label precision of its annotations is measured")
    pool: str = option("max", help="clip-level score of a feature", choices=["max", "mean"])
    k_sparse: int = option(5, help="features in the k-sparse probe", ge=1)
    recovered_auroc: float = option(0.9, help="a concept is recovered when the best feature's AUROC reaches this", ge=0, le=1)
    label_auroc: float = option(0.75, help="an annotation is correct when the feature's AUROC for the named concept "
                                           "value reaches this", ge=0, le=1)
    label_top: int = option(10, help="label precision also reads the share of each labelled feature's top N held-out "
                                     "clips that carry the label", ge=1)
    min_positives: int = option(4, help="concept values with fewer positive clips (per half) are skipped", ge=1)
    seed: int = option(0, help="seed of the A/B split")
    batch_size: int = option(4096, help="rows per SAE encode call", ge=1)
    device: str = option("cpu", help="torch device for encoding")
    overwrite: bool = option(False, help="replace an existing output directory")


def auroc_matrix(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of every column of `scores` [n, m] for binary labels `y` [n] (ties count one half)."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[1], np.nan)
    r = rankdata(scores, axis=0)
    return (r[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@torch.no_grad()
def clip_matrices(store, saes, pool: str = "max", batch_size: int = 4096, device: str = "cpu"
                  ) -> tuple[list[int], dict[int, np.ndarray], dict[str, np.ndarray]]:
    """One pass: clip indices, raw clip-mean activations per layer [C, d], SAE clip scores per SAE [C, F]."""
    from .scan import encode_batched

    layers = sorted({s.layer for s in saes} | set(store.layers))
    clips = sorted(store.clips, key=lambda c: store.clip_rows(c["index"]).start)
    raw = {L: np.zeros((len(clips), store.d_model), dtype=np.float32) for L in layers}
    feat = {s.name: np.zeros((len(clips), s.d_sae), dtype=np.float32) for s in saes}
    for s in saes:
        s.sae.to(device) if hasattr(s.sae, "to") else None
    for i, c in enumerate(tqdm(clips, desc="benchmark pass", unit="clip", disable=None)):
        rows = store.clip_rows(c["index"])
        for L in layers:
            x = store.read(L, rows).to(device=device, dtype=torch.float32)
            raw[L][i] = x.mean(0).cpu().numpy()
            for s in saes:
                if s.layer == L:
                    z = encode_batched(s, x, batch_size)
                    feat[s.name][i] = (z.amax(0) if pool == "max" else z.mean(0)).cpu().numpy()
    return [int(c["index"]) for c in clips], raw, feat


def _corpus_index(corpus: str | None) -> dict[str, dict]:
    """Corpus metadata rows by every key a store or catalogue may name a clip with (id, path, file stem)."""
    by_key: dict[str, dict] = {}
    if corpus:
        from ..corpus import load_metadata

        for m in load_metadata(corpus):
            by_key[str(m["id"])] = m
            by_key[str(m.get("path", ""))] = m
            by_key[Path(str(m.get("path", ""))).stem] = m
    return by_key


def _lookup(by_key: dict[str, dict], keys: list[str]) -> dict | None:
    return next((by_key[k] for k in keys if k and k in by_key), None)


def clip_labels(store, indices: list[int], corpus: str | None) -> list[dict[str, str]]:
    """Concept values per clip, from the store's clip metadata or the corpus metadata (by id)."""
    by_key = _corpus_index(corpus)
    out = []
    for idx in indices:
        info = store.clip_info(idx)
        meta = dict(info.get("meta", {}))
        m = _lookup(by_key, [str(meta.get("id", "")), str(info["id"]), Path(str(info["id"])).stem,
                             Path(str(meta.get("source", ""))).stem])
        if m:
            meta = {**m, **{k: v for k, v in meta.items() if k in m}}
        lab = clip_concepts(meta)
        if not lab:
            raise MusiclensError(f"clip {info['id']} has no corpus factors in the store; pass --corpus")
        out.append(lab)
    return out


def source_labels(features_dir: Path, corpus: str | None) -> dict[int, dict[str, str]]:
    """Concept values of the clips the features pass read, by its clip index ({} when they cannot be known).

    Why: annotators label a feature from its top clips among these; the clips' own factors then say whether
    the label is right about what the annotator heard, apart from whether the feature generalises.
    """
    import json

    from ..store import ActivationStore
    from .pipeline import load_summary

    src = Path(str(load_summary(features_dir).get("store", "")))
    if (src / "manifest.json").exists():
        store = ActivationStore(src)
        idx = [int(c["index"]) for c in store.clips]
        try:
            return dict(zip(idx, clip_labels(store, idx, corpus)))
        except MusiclensError:
            return {}
    clips_file = Path(features_dir) / "clips.json"
    by_key = _corpus_index(corpus)
    if not by_key or not clips_file.exists():
        return {}
    out = {}
    for c in json.loads(clips_file.read_text()):
        m = _lookup(by_key, [str(c["id"]), Path(str(c["id"])).stem, Path(str(c.get("path", ""))).stem])
        lab = clip_concepts(m) if m else {}
        if lab:
            out[int(c["index"])] = lab
    return out


class StatsCache(dict):
    """The features pass's per-SAE statistics (`stats/<sae>.npz`), each read once (None where missing)."""

    def __init__(self, features_dir: Path):
        super().__init__()
        self.dir = Path(features_dir) / "stats"

    def __missing__(self, sae: str):
        from .stats import FeatureStats

        path = self.dir / f"{sae}.npz"
        self[sae] = FeatureStats.load(path) if path.exists() else None
        return self[sae]


def top_clip_indices(stats: StatsCache, keys: list[str]) -> dict[str, list[int]]:
    """Each annotated feature's top clips (indices of the features pass's clips, best first), from its stats."""
    out = {}
    for key in keys:
        sae, j = key.rsplit("/", 1)
        if stats[sae] is not None:
            out[key] = [int(c) for c in stats[sae].top_clip[int(j)] if c >= 0]
    return out


def split_ab(labels: list[dict[str, str]], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half/half split of clip positions, stratified by instrument (else random)."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab.get("instrument", ""), []).append(i)
    a, b = [], []
    for g in groups.values():
        g = list(rng.permutation(g))
        a += g[: (len(g) + 1) // 2]
        b += g[(len(g) + 1) // 2:]
    return np.sort(np.asarray(a, dtype=int)), np.sort(np.asarray(b, dtype=int))


def _balanced_acc(y: np.ndarray, pred: np.ndarray) -> float:
    return float(0.5 * ((pred[y] == 1).mean() + (pred[~y] == 0).mean()))


def _logreg(Xa, ya, Xb, yb, C: float = 1.0) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(Xa)
    clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(sc.transform(Xa), ya)
    p = clf.decision_function(sc.transform(Xb))
    return float(auroc_matrix(p[:, None], yb)[0]), _balanced_acc(yb, (p > 0).astype(int))


def evaluate_sae(scores: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, k: int) -> dict:
    """Best-feature and k-sparse-probe figures for one concept value."""
    au_a = auroc_matrix(scores[a], y[a])
    best = int(np.nanargmax(au_a)) if np.isfinite(au_a).any() else 0
    au_b = float(auroc_matrix(scores[b][:, [best]], y[b])[0])
    mu_p, mu_n = scores[a][y[a]].mean(0), scores[a][~y[a]].mean(0)
    sd = scores[a].std(0) + 1e-6
    top = np.argsort(-np.abs(mu_p - mu_n) / sd)[:k]
    probe_auroc, probe_acc = _logreg(scores[a][:, top], y[a], scores[b][:, top], y[b])
    return {"feature": best, "auroc": au_b, "auroc_select": float(au_a[best]), "probe_auroc": probe_auroc,
            "probe_accuracy": probe_acc, "probe_features": [int(x) for x in top]}


def evaluate_raw(X: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    d = X[a][y[a]].mean(0) - X[a][~y[a]].mean(0)
    dm = float(auroc_matrix((X[b] @ d)[:, None], y[b])[0])
    pr_auroc, pr_acc = _logreg(X[a], y[a], X[b], y[b])
    return {"diffmean_auroc": dm, "probe_auroc": pr_auroc, "probe_accuracy": pr_acc}


def run_benchmark_arrays(indices, labels, raw, feats, saes, cfg: BenchmarkConfig) -> dict:
    """All figures from the clip-level matrices (no store access)."""
    a, b = split_ab(labels, cfg.seed)
    concepts, skipped = [], []
    for v in concept_values():
        y = np.array([lab.get(v.head) == v.value for lab in labels])
        if min(y[a].sum(), y[b].sum()) < cfg.min_positives or min((~y[a]).sum(), (~y[b]).sum()) < cfg.min_positives:
            skipped.append(v.name)
            continue
        concepts.append((v, y))
    if not concepts:
        raise MusiclensError("no concept value has enough positive clips in both halves (need a larger held-out set)")
    per_concept, recovery = [], []
    for L in sorted({s.layer for s in saes} | set(raw)):
        if L not in raw:
            continue
        rows = [(v, evaluate_raw(raw[L], y, a, b)) for v, y in concepts]
        for name, key, acc in (("DiffMean (raw)", "diffmean_auroc", None), ("linear probe (raw)", "probe_auroc",
                                                                          "probe_accuracy")):
            au = np.array([r[key] for _, r in rows])
            recovery.append({"method": name, "sae": None, "layer": L, "expansion": None, "k": None,
                             "recovered": float((au >= cfg.recovered_auroc).mean()), "mean_auroc": float(au.mean()),
                             "probe_accuracy": float(np.mean([r[acc] for _, r in rows])) if acc else None})
            per_concept += [{"method": name, "layer": L, "concept": v.name, "auroc": r[key], "feature": None}
                            for v, r in rows]
    for s in saes:
        rows = [(v, evaluate_sae(feats[s.name], y, a, b, cfg.k_sparse)) for v, y in concepts]
        au = np.array([r["auroc"] for _, r in rows])
        method = f"SAE x{s.expansion} k{s.k}" if s.k is not None else f"SAE {s.name}"
        recovery.append({"method": method, "sae": s.name, "layer": s.layer, "expansion": s.expansion, "k": s.k,
                         "recovered": float((au >= cfg.recovered_auroc).mean()), "mean_auroc": float(au.mean()),
                         "probe_accuracy": float(np.mean([r["probe_accuracy"] for _, r in rows])),
                         "probe_auroc": float(np.mean([r["probe_auroc"] for _, r in rows]))})
        per_concept += [{"method": method, "sae": s.name, "layer": s.layer, "concept": v.name, "auroc": r["auroc"],
                         "auroc_select": r["auroc_select"], "feature": r["feature"], "probe_auroc": r["probe_auroc"],
                         "probe_accuracy": r["probe_accuracy"]} for v, r in rows]
    return {"clips": len(indices), "half_a": int(len(a)), "half_b": int(len(b)),
            "concept_values": [v.name for v, _ in concepts], "skipped_concepts": skipped,
            "recovery": recovery, "concepts": per_concept}


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def label_precision(annotations: dict, feats: dict[str, np.ndarray], labels: list[dict[str, str]],
                    threshold: float, source: dict[int, dict[str, str]] | None = None,
                    source_top: dict[str, list[int]] | None = None, top: int = 10) -> list[dict]:
    """Per strategy: labelled features, those whose label names a concept, and those that are right.

    `matched` counts features whose held-out AUROC for a named value reaches `threshold`. For the same
    mapped features it also gives means of: the share of the feature's top `top` held-out clips (among
    clips where it fires) that carry a named value (`heldout_top_share`, next to `heldout_base_rate`, and
    `heldout_majority`, how many reach one half), and, when `source` and `source_top` say which clips the
    annotator heard and their factors, the share of those (`source_share`, next to `source_base_rate`).
    """
    ys = {v.name: np.array([lab.get(v.head) == v.value for lab in labels]) for v in concept_values()}
    src_all = list((source or {}).values())
    out = []
    strategies = sorted({s for a in annotations.get("features", {}).values() for s in a})
    for s in strategies:
        labelled = mapped = matched = majority = 0
        top_share, base, src_share, src_base = [], [], [], []
        for key, by in annotations["features"].items():
            rec = by.get(s)
            if not rec or not rec.get("label"):
                continue
            labelled += 1
            sae, j = key.rsplit("/", 1)
            named = [c for c in rec.get("concepts", []) if c in ys and 0 < ys[c].sum() < len(ys[c])]
            if not named or sae not in feats:
                continue
            mapped += 1
            col = feats[sae][:, [int(j)]]
            if any(auroc_matrix(col, ys[c])[0] >= threshold for c in named):
                matched += 1
            pos = np.logical_or.reduce([ys[c] for c in named])
            fired = np.flatnonzero(col[:, 0] > 0)
            best = fired[np.argsort(-col[fired, 0], kind="stable")][:top]
            share = float(pos[best].mean()) if len(best) else 0.0
            top_share.append(share)
            base.append(float(pos.mean()))
            majority += share >= 0.5
            heard = [source[c] for c in (source_top or {}).get(key, []) if c in (source or {})]
            if heard:
                def carries(lab: dict[str, str]) -> bool:
                    return any(lab.get(c.split("=", 1)[0]) == c.split("=", 1)[1] for c in named)
                src_share.append(float(np.mean([carries(lab) for lab in heard])))
                src_base.append(float(np.mean([carries(lab) for lab in src_all])))
        out.append({"strategy": s, "labelled": labelled, "mapped": mapped, "matched": matched,
                    "precision": matched / labelled if labelled else None,
                    "precision_mapped": matched / mapped if mapped else None,
                    "heldout_top_n": top, "heldout_top_share": _mean(top_share), "heldout_base_rate": _mean(base),
                    "heldout_majority": int(majority), "source_features": len(src_share),
                    "source_share": _mean(src_share), "source_base_rate": _mean(src_base)})
    return out


def best_per_concept(per_concept: list[dict]) -> dict[str, dict]:
    """The SAE feature with the highest held-out AUROC for each concept value, over all SAEs (its row)."""
    best: dict[str, dict] = {}
    for c in per_concept:
        if c.get("sae") and (c["concept"] not in best or c["auroc"] > best[c["concept"]]["auroc"]):
            best[c["concept"]] = c
    return best


def label_precision_line(row: dict) -> str:
    """One printed line of a label_precision row (the CLI and bench/discovery.py)."""
    def f2(x) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    return (f"label precision {row['strategy']}: {row['matched']}/{row['labelled']} by held-out AUROC; named value "
            f"in the top {row.get('heldout_top_n', '?')} held-out clips {f2(row.get('heldout_top_share'))} (base "
            f"rate {f2(row.get('heldout_base_rate'))}); in the clips it was labelled from "
            f"{f2(row.get('source_share'))} ({f2(row.get('source_base_rate'))})")


def filter_audit(features_dir: Path, per_concept: list[dict], stats: StatsCache | None = None) -> dict | None:
    """The best single SAE feature of each concept value (held-out AUROC) and the filter's verdict on it.

    Why: annotation only looks at valid features. If the filter drops the features that detect concepts,
    the labels can only land on the weak ones; this makes that visible instead of leaving a low label
    precision unexplained.
    """
    from .filtering import FilterRule, classify
    from .pipeline import load_summary

    summary = load_summary(features_dir)
    rule = FilterRule(**summary["filter"])
    best = best_per_concept(per_concept)
    stats = stats if stats is not None else StatsCache(features_dir)
    rows = []
    for concept, c in best.items():
        if stats[c["sae"]] is None:
            continue
        rate = float(stats[c["sae"]].activation_rate[c["feature"]])
        rows.append({"concept": concept, "sae": c["sae"], "feature": int(c["feature"]),
                     "auroc": float(c["auroc"]), "track_rate": rate,
                     "status": str(classify(np.array([rate]), rule)[0])})
    if not rows:
        return None
    counts = {st: sum(r["status"] == st for r in rows) for st in ("valid", "too_common", "too_rare", "dead")}
    return {"filter": summary["filter"], "firing_rule": summary.get("firing_rule"), "counts": counts,
            "best": rows}


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    import json

    from ..config import save_config
    from ..io import atomic_dir, write_json
    from ..store import ActivationStore
    from .scan import check_compatible, load_saes

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (pass --overwrite to replace it)")
    sae_paths = list(cfg.sae)
    annotations = None
    if cfg.features:
        fd = Path(cfg.features)
        if not (fd / "saes.json").exists():
            raise MusiclensError(f"{fd} is not a `musiclens features` output (no saes.json)")
        if not sae_paths:
            sae_paths = [s["path"] for s in json.loads((fd / "saes.json").read_text())]
        if (fd / "annotations.json").exists():
            annotations = json.loads((fd / "annotations.json").read_text())
    if not sae_paths:
        raise MusiclensError("pass --sae or --features")
    store = ActivationStore(cfg.store)
    saes = load_saes(sae_paths)
    check_compatible(store, saes)
    indices, raw, feats = clip_matrices(store, saes, cfg.pool, cfg.batch_size, cfg.device)
    labels = clip_labels(store, indices, cfg.corpus)
    result = run_benchmark_arrays(indices, labels, raw, feats, saes, cfg)
    result["description"] = (f"{len(indices)} held-out clips of {cfg.store}; features chosen on half A "
                             f"({result['half_a']} clips), scored on half B ({result['half_b']}); clip score = "
                             f"{cfg.pool} activation; recovered = AUROC >= {cfg.recovered_auroc}")
    if len({s.layer for s in saes}) >= 2:
        from .layerpred import layer_prediction

        try:
            result["layer_prediction"] = layer_prediction(
                [(s.layer, s.W_dec.detach().float().cpu().numpy()) for s in saes])
        except MusiclensError as e:
            result["layer_prediction"] = {"error": str(e)}
    if cfg.features:
        stats = StatsCache(Path(cfg.features))
        result["filter_audit"] = filter_audit(Path(cfg.features), result["concepts"], stats)
    if annotations:
        result["label_precision"] = label_precision(
            annotations, feats, labels, cfg.label_auroc, source_labels(Path(cfg.features), cfg.corpus),
            top_clip_indices(stats, list(annotations.get("features", {}))), cfg.label_top)
    with atomic_dir(out, overwrite=True) as tmp:
        save_config(cfg, tmp / "config.json")
        write_json(tmp / "benchmark.json", result)
    if cfg.features:
        write_json(Path(cfg.features) / "benchmark.json", result)
        from ..report.html import build_report

        build_report(cfg.features)
    return result
