"""Automatic annotation of features from their top clips: tagger, CLAP and LLM strategies.

Every strategy writes, per feature, `label` (None when it cannot name the
feature), `confidence` in [0, 1], `provenance` (which model), the concept
values the label names (`concepts`, e.g. ["instrument=piano"]) for the
ground-truth benchmark, and strategy-specific evidence. Why three:

* **tagger** (classifier-based) is cheap and calibrated on the organism's
  concepts, but can only say what its heads know. A label is kept when at
  least `agreement` of the top clips share it *and* that many sharing it is
  unlikely by chance (one-sided binomial test against the label's rate among
  all tagged clips, p <= `tagger_p`): a label every clip gets says nothing.
  Confidence = the share of top clips with the label.
* **clap** scores label texts against the mean audio embedding of the top
  clips, minus the same score for the mean embedding of all clips (so texts
  that match everything do not win). Confidence = the share of top clips
  whose own best text is the label; below `clap_agreement` the feature stays
  unlabelled (a label most clips do not support is a guess).
* **llm** lets a multimodal model listen to the concatenated top 10 and name
  anything, at the price of a network call; failures leave the feature
  unlabelled with the reason and the run continues.

Output: `annotations.json` in the features directory (resumable: written
every `save_every` features), `annotations.parquet` (one row per feature and
strategy), and the report is rebuilt.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..config import option, save_config
from ..errors import MusiclensError
from ..io import atomic_path, write_json
from .concepts import concept_values, match_label

STRATEGIES = ("tagger", "clap", "llm")


@dataclass
class AnnotateConfig:
    """Options of `musiclens annotate`."""

    features: str = option(help="a `musiclens features` output directory (annotations are added to it)")
    strategies: list[str] = option(default_factory=lambda: ["tagger", "clap", "llm"],
                                   help="strategies to run: tagger, clap, llm (llm is skipped when no endpoint is "
                                        "configured)")
    tagger: str = option("organism", help="'organism' or a local HF audio-classification folder")
    agreement: float = option(0.7, help="tagger: share of top clips that must share a label", ge=0, le=1)
    tagger_p: float = option(0.01, help="tagger: ... and the one-sided binomial p-value of that share, given the "
                                        "label's rate among all tagged clips, must be at most this", gt=0, le=1)
    clap: Optional[str] = option(None, help="local HF ClapModel folder (default: the shipped mini-CLAP)")
    clap_agreement: float = option(0.5, help="clap: share of top clips whose own best text must be the label "
                                             "(else the feature stays unlabelled)", ge=0, le=1)
    labels: Optional[str] = option(None, help="text file of candidate label texts for CLAP, one per line "
                                              "(default: the corpus concepts)")
    llm_provider: Optional[str] = option(None, help="openai or gemini (env MUSICLENS_LLM_PROVIDER)")
    llm_url: Optional[str] = option(None, help="endpoint base URL (env MUSICLENS_LLM_URL / OPENAI_BASE_URL)")
    llm_key: Optional[str] = option(None, help="API key (env MUSICLENS_LLM_KEY / OPENAI_API_KEY / GEMINI_API_KEY)")
    llm_model: Optional[str] = option(None, help="model name (env MUSICLENS_LLM_MODEL)")
    llm_timeout: float = option(60.0, help="seconds per LLM request", gt=0)
    llm_retries: int = option(1, help="retries after a timeout / server error", ge=0)
    save_every: int = option(50, help="features between saves of annotations.json", ge=1)
    resume: bool = option(False, help="keep existing annotations and do only the missing ones")
    overwrite: bool = option(False, help="replace existing annotations")
    report: bool = option(True, help="rebuild report.html")


def _features_with_clips(features_dir: Path) -> list[dict]:
    from .pipeline import read_catalogue

    cat = read_catalogue(features_dir)
    cat = cat[cat["concat"].notna() & (cat["status"] == "valid")]
    out = []
    for _, r in cat.iterrows():
        d = features_dir / r["clip_dir"]
        out.append({"key": f"{r['sae']}/{int(r['feature'])}", "sae": r["sae"], "feature": int(r["feature"]),
                    "clips": [d / f for f in r["clip_files"]], "concat": d / r["concat"],
                    "n": len(r["clip_files"])})
    return out


def _read(path: Path) -> tuple[np.ndarray, int]:
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return y.mean(1), sr


# ------------------------------------------------------------------------------ tagger
def annotate_tagger(feats: list[dict], tagger, agreement: float, progress: bool = True,
                    max_p: float = 0.01) -> dict[str, dict]:
    from scipy.stats import binomtest

    preds: dict[Path, dict[str, str]] = {}
    for f in tqdm(feats, desc="tagger", unit="feature", disable=None if progress else True):
        for c in f["clips"]:
            if c not in preds:
                preds[c] = tagger.predict(*_read(c))
    # prior of each (head, label) over all tagged clips
    prior: dict[tuple[str, str], float] = {}
    heads = sorted({h for p in preds.values() for h in p})
    for h in heads:
        cnt = Counter(p[h] for p in preds.values() if h in p)
        n = sum(cnt.values())
        for lab, k in cnt.items():
            prior[(h, lab)] = k / n
    known = {(v.head, v.value) for v in concept_values_safe()}
    out = {}
    for f in feats:
        kept = []
        for h in heads:
            labs = [preds[c][h] for c in f["clips"] if h in preds[c]]
            if not labs:
                continue
            lab, k = Counter(labs).most_common(1)[0]
            share = k / len(labs)
            p = prior[(h, lab)]
            # one-sided binomial test: could k of these clips share the label by chance, given its prior?
            pval = float(binomtest(k, len(labs), p, alternative="greater").pvalue) if p < 1 else 1.0
            if share >= agreement and pval <= max_p:
                kept.append({"head": h, "value": lab, "share": share, "prior": p, "lift": share / p, "p": pval})
        kept.sort(key=lambda x: -x["lift"])
        if kept:
            out[f["key"]] = {"label": ", ".join(f"{k['head']}={k['value']}" for k in kept),
                             "confidence": float(np.mean([k["share"] for k in kept])),
                             "provenance": tagger.name, "labels": kept,
                             "concepts": [f"{k['head']}={k['value']}" for k in kept if (k["head"], k["value"]) in known]}
        else:
            out[f["key"]] = {"label": None, "confidence": 0.0, "provenance": tagger.name,
                             "error": f"no label shared by >= {agreement:.0%} of the top clips beyond chance "
                                      f"(binomial p <= {max_p:g})", "concepts": []}
    return out


def concept_values_safe():
    try:
        return concept_values()
    except ImportError:
        return []


# ------------------------------------------------------------------------------ clap
def annotate_clap(feats: list[dict], clap, texts: list[str] | None = None, progress: bool = True,
                  agreement: float = 0.0) -> dict[str, dict]:
    import torch

    values = concept_values_safe()
    if texts is None:
        texts = [v.text for v in values]
    by_text = {v.text: v.name for v in values}
    t = clap.embed_text(texts)                                           # [L, D]
    emb: dict[Path, torch.Tensor] = {}
    for f in tqdm(feats, desc="clap", unit="feature", disable=None if progress else True):
        todo = [c for c in f["clips"] if c not in emb]
        if todo:
            ys = [_read(c) for c in todo]
            sr = ys[0][1]
            import librosa

            arrays = [y if s == sr else librosa.resample(y, orig_sr=s, target_sr=sr) for y, s in ys]
            for c, e in zip(todo, clap.embed_audio(arrays, sr)):
                emb[c] = e
    if not emb:
        return {}
    base = torch.nn.functional.normalize(torch.stack(list(emb.values())).mean(0), dim=-1)
    base_score = base @ t.T
    out = {}
    for f in feats:
        e = torch.stack([emb[c] for c in f["clips"]])                     # [n, D]
        mean = torch.nn.functional.normalize(e.mean(0), dim=-1)
        score = mean @ t.T - base_score
        best = int(score.argmax())
        votes = ((e @ t.T - base_score).argmax(1) == best).float().mean()
        top = score.argsort(descending=True)[:3]
        if float(votes) < agreement:
            out[f["key"]] = {"label": None, "confidence": float(votes), "provenance": clap.name,
                             "error": f"clips disagree: best text {texts[best]!r} is the top text of only "
                                      f"{float(votes):.0%} of the clips", "concepts": [],
                             "top3": [{"text": texts[int(i)], "score": float(score[int(i)])} for i in top]}
            continue
        out[f["key"]] = {"label": texts[best], "confidence": float(votes), "provenance": clap.name,
                         "score": float(score[best]),
                         "top3": [{"text": texts[int(i)], "score": float(score[int(i)])} for i in top],
                         "concepts": [by_text[texts[best]]] if texts[best] in by_text else
                         [v.name for v in match_label(texts[best], values)] if values else []}
    return out


# ------------------------------------------------------------------------------ llm
def annotate_llm(feats: list[dict], client, progress: bool = True, done: dict | None = None,
                 on_result=None) -> dict[str, dict]:
    values = concept_values_safe()
    out = {}
    for f in tqdm(feats, desc="llm", unit="feature", disable=None if progress else True):
        if done and f["key"] in done:
            continue
        try:
            y, sr = _read(f["concat"])
            ans = client.label(y, sr, min(f["n"], 10))
            rec = {**ans, "provenance": client.provenance,
                   "concepts": [v.name for v in match_label(ans["label"], values)] if values else []}
        except ValueError as e:
            rec = {"label": None, "confidence": 0.0, "provenance": client.provenance, "error": str(e),
                   "concepts": []}
        out[f["key"]] = rec
        if on_result:
            on_result(f["key"], rec)
    return out


# ------------------------------------------------------------------------------ driver
def _load_annotations(path: Path) -> dict:
    if not path.exists():
        return {"features": {}, "summary": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MusiclensError(f"{path} is damaged ({e}); rerun with --overwrite")


def _summary(data: dict, provenance: dict[str, str]) -> list[dict]:
    rows = []
    for s in sorted({s for a in data["features"].values() for s in a}):
        recs = [a[s] for a in data["features"].values() if s in a]
        rows.append({"strategy": s, "features": len(recs), "labelled": sum(1 for r in recs if r.get("label")),
                     "provenance": provenance.get(s, recs[0].get("provenance", "") if recs else "")})
    return rows


def _write(features_dir: Path, data: dict) -> None:
    write_json(features_dir / "annotations.json", data)


def run_annotate(cfg: AnnotateConfig, log=print) -> dict:
    d = Path(cfg.features)
    if not (d / "catalogue.parquet").exists():
        raise MusiclensError(f"{d} is not a `musiclens features` output (no catalogue.parquet)")
    bad = [s for s in cfg.strategies if s not in STRATEGIES]
    if bad:
        raise MusiclensError(f"unknown strategies {bad}; choose from {', '.join(STRATEGIES)}")
    if not cfg.strategies:
        raise MusiclensError(f"--strategies is empty; choose from {', '.join(STRATEGIES)}")
    if cfg.llm_url and not cfg.llm_url.startswith(("http://", "https://")):
        raise MusiclensError(f"--llm-url must start with http:// or https://, got {cfg.llm_url!r}")
    ann_path = d / "annotations.json"
    if ann_path.exists() and not (cfg.resume or cfg.overwrite):
        raise MusiclensError(f"{ann_path} exists (pass --resume to continue or --overwrite to redo)")
    if not 0 < cfg.agreement <= 1:
        raise MusiclensError("--agreement must be in (0, 1]")
    data = _load_annotations(ann_path) if cfg.resume else {"features": {}, "summary": []}
    feats = _features_with_clips(d)
    if not feats:
        raise MusiclensError(f"{d} has no valid features with top clips (run `musiclens features` with clips)")
    provenance: dict[str, str] = {}

    def store(strategy: str, results: dict) -> None:
        for k, rec in results.items():
            data["features"].setdefault(k, {})[strategy] = rec

    def todo(strategy: str) -> list[dict]:
        return [f for f in feats if strategy not in data["features"].get(f["key"], {})]

    if "tagger" in cfg.strategies and todo("tagger"):
        tagger = _load_tagger(cfg.tagger)
        provenance["tagger"] = tagger.name
        # the prior needs every feature's clips, so the tagger always redoes all features
        store("tagger", annotate_tagger(feats, tagger, cfg.agreement, max_p=cfg.tagger_p))
        _write(d, data)
    if "clap" in cfg.strategies and todo("clap"):
        from ..measure.clap import load_clap

        clap = load_clap(cfg.clap)
        provenance["clap"] = clap.name
        texts = None
        if cfg.labels:
            p = Path(cfg.labels)
            if not p.exists():
                raise MusiclensError(f"labels file not found: {p}")
            texts = [x.strip() for x in p.read_text().splitlines() if x.strip()]
            if not texts:
                raise MusiclensError(f"labels file {p} is empty")
        store("clap", annotate_clap(feats, clap, texts, agreement=cfg.clap_agreement))
        _write(d, data)
    if "llm" in cfg.strategies:
        from .llm import LLMClient, LLMConfig

        lc = LLMConfig.from_env(cfg.llm_provider, cfg.llm_url, cfg.llm_key, cfg.llm_model, cfg.llm_timeout,
                                cfg.llm_retries)
        if not lc.enabled:
            log("llm: no endpoint configured (set --llm-url/--llm-key or MUSICLENS_LLM_URL/KEY); skipped")
        else:
            client = LLMClient(lc)
            provenance["llm"] = client.provenance
            count = [0]

            def on_result(key, rec):
                data["features"].setdefault(key, {})["llm"] = rec
                count[0] += 1
                if count[0] % max(1, cfg.save_every) == 0:
                    _write(d, data)

            annotate_llm(todo("llm"), client, on_result=on_result)
    data["summary"] = _summary(data, provenance)
    _write(d, data)
    _write_parquet(d, data)
    save_config(cfg, d / "annotate_config.json")
    if cfg.report:
        from ..report.html import build_report

        build_report(d)
    return data


def _load_tagger(spec: str):
    from .taggers import load_tagger

    return load_tagger(spec)


def _write_parquet(d: Path, data: dict) -> None:
    import pandas as pd

    rows = []
    for key, by in data["features"].items():
        sae, j = key.rsplit("/", 1)
        for s, rec in by.items():
            rows.append({"sae": sae, "feature": int(j), "strategy": s, "label": rec.get("label"),
                         "confidence": rec.get("confidence"), "provenance": rec.get("provenance"),
                         "concepts": list(rec.get("concepts", [])), "error": rec.get("error"),
                         "description": rec.get("description")})
    with atomic_path(d / "annotations.parquet", suffix=".parquet") as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)
