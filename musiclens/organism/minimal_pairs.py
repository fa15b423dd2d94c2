"""Minimal pairs: does changing one caption word move the audio the way the word asks?

The "Prove it" orderings (`evaluate.generation_eval`) compare generations of
*different* captions: the test captions asking for neutral brightness are
not the ones asking for dark, and they differ in instrument, register and
drums too, each of which moves the spectral centroid as much as the filter
does. With 35 neutral captions against 82 dark ones, that mix can hide or
fake an ordering.

Here each held-out caption that names a concept is rewritten once per level
of that concept (`sensitivity.flip_caption`: only that concept's words
change, the synonym at the same index, "at N BPM" too), and every version is
generated with the same seed at the same batch position, so the versions
share everything but the word, including the sampling noise. The measure is
then compared *within* each caption: a one-sided Wilcoxon signed-rank test
per neighbouring pair of levels, the share of captions whose audio moved in
the asked direction, and the median paired change (a ratio for centroid,
BPM and onset rate, a difference in dB or semitones for RMS and pitch).
Where the tagger has a head for the concept, the share of generations it
hears at the asked level is reported too.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import MusiclensError
from ..models import organism as O
from .evaluate import ORDER, _estimators, generate, named_factors
from .sensitivity import flip_caption

# concept -> measures compared within a caption (the first is the concept's headline measure)
MEASURES = {"brightness": ("centroid",), "dynamics": ("loudness",), "register": ("pitch",),
            "tempo": ("bpm", "onset_rate")}
# measures whose paired change is a ratio (positive, scale-like); the others are differences (dB, MIDI)
RATIO = {"centroid", "bpm", "onset_rate"}
# tagger heads that read a concept's level directly
TAGGER_HEADS = {"brightness", "dynamics", "register"}


def pair_captions(rows: list[dict], concept: str, n: int, seed: int = 0, split: str = "test",
                  levels: list[str] | None = None) -> list[tuple[dict, dict[str, str]]]:
    """Up to n (row, {level: caption}) of `split` whose caption names `concept`, one version per level.

    The row's own caption is kept for its own level; the others are `flip_caption` rewrites.
    A row is skipped when a rewrite fails (a caption that names the concept only through a
    word shared with another phrase), so every kept row has all levels.
    """
    if concept not in MEASURES:
        raise MusiclensError(f"minimal pairs measure {', '.join(MEASURES)}, not {concept!r}")
    levels = list(levels or ORDER[concept])
    if len(levels) < 2 or any(lv not in ORDER[concept] for lv in levels):
        raise MusiclensError(f"{concept} levels are {', '.join(ORDER[concept])}; got {', '.join(levels)}")
    pool = [(r, nf[concept]) for r in rows if r["split"] == split and concept in (nf := named_factors(r))]
    order = np.random.default_rng(seed).permutation(len(pool))
    out = []
    for row, own in (pool[i] for i in order):
        versions = {}
        for lv in levels:
            versions[lv] = row["caption"] if lv == own else flip_caption(row["caption"], row, concept, lv)
        if all(versions.values()) and len(set(versions.values())) == len(levels):
            out.append((row, versions))
        if len(out) == n:
            break
    return out


def _paired(a: np.ndarray, b: np.ndarray, ratio: bool) -> dict:
    """b against a, caption by caption: is b larger? (one-sided Wilcoxon signed-rank)."""
    from scipy.stats import wilcoxon

    ok = np.isfinite(a) & np.isfinite(b) & ((a > 0) & (b > 0) if ratio else True)
    a, b = a[ok], b[ok]
    d = np.log(b) - np.log(a) if ratio else b - a
    res = {"n": int(len(d)), "share_in_order": float(np.mean(d > 0)) if len(d) else float("nan")}
    if ratio:
        res["median_ratio"] = float(np.exp(np.median(d))) if len(d) else float("nan")
    else:
        res["median_difference"] = float(np.median(d)) if len(d) else float("nan")
    res["p_one_sided"] = float(wilcoxon(d, alternative="greater").pvalue) if np.count_nonzero(d) >= 2 else 1.0
    return res


def minimal_pair_eval(model, tok, rows: list[dict], concept: str, n: int = 100, seconds: float = 6.0,
                      seed: int = 0, guidance: float = 3.0, tagger=None, split: str = "test",
                      levels: list[str] | None = None, top_k: int | None = None) -> dict:
    """Generate every caption of `pair_captions` at each level and compare the measures within captions."""
    pairs = pair_captions(rows, concept, n, seed, split, levels)
    if not pairs:
        raise MusiclensError(f"no {split}-split caption names {concept}: nothing to rewrite")
    levels = list(pairs[0][1])
    own = [named_factors(r)[concept] for r, _ in pairs]
    est = _estimators()
    measures = [m for m in MEASURES[concept] if m in est]
    if not measures:
        raise MusiclensError(f"the estimator for {concept} ({MEASURES[concept][0]}) is not installed")
    sr = O.SAMPLE_RATE
    values = {lv: {m: np.full(len(pairs), np.nan) for m in measures} for lv in levels}
    heard: dict[str, list] = {}
    t0 = time.time()
    for lv in levels:
        # the same seed for every level: batch position i draws the same noise whatever the word
        audio = generate(model, tok, [v[lv] for _, v in pairs], seconds, seed, guidance, top_k=top_k)
        for i, y in enumerate(audio):
            for m in measures:
                values[lv][m][i] = est[m](y, sr)
        if tagger is not None and concept in TAGGER_HEADS:
            heard[lv] = [t.get(concept) for t in tagger.predict_batch(audio, sr)]
    res: dict = {"concept": concept, "levels": levels, "split": split, "n_captions": len(pairs),
                 "seconds_per_clip": seconds, "guidance_scale": guidance, "seed": seed,
                 "own_level": {lv: own.count(lv) for lv in levels},
                 "generation_seconds": round(time.time() - t0, 1), "measures": {}}
    for m in measures:
        ratio = m in RATIO
        med = {lv: float(np.nanmedian(values[lv][m])) for lv in levels}
        steps = [(a, b) for a, b in zip(levels[:-1], levels[1:])]
        if len(levels) > 2:
            steps.append((levels[0], levels[-1]))
        cmp = {f"{a}<{b}": _paired(values[a][m], values[b][m], ratio) for a, b in steps}
        stacked = np.stack([values[lv][m] for lv in levels], axis=1)
        fin = np.isfinite(stacked).all(axis=1)
        all_order = np.all(np.diff(stacked[fin], axis=1) > 0, axis=1)
        res["measures"][m] = {"median": med, "paired": cmp,
                              "share_all_in_order": float(all_order.mean()) if fin.any() else float("nan"),
                              "ordered": all(c["p_one_sided"] < 0.05 for k, c in cmp.items())}
    if heard:
        res["tagger"] = {lv: float(np.mean([h == lv for h in hs])) for lv, hs in heard.items()}
    res["per_caption"] = [{"caption": {lv: v[lv] for lv in levels}, "own_level": own[i],
                           **{m: {lv: float(values[lv][m][i]) for lv in levels} for m in measures}}
                          for i, (_, v) in enumerate(pairs)]
    return res
