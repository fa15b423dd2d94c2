"""Is the organism's tempo miss an unreadable beat, or a readable beat at the wrong tempo?

    python bench/tempo_pulse.py --corpus data/corpus [--model DIR] [--split valid] [--n-prompts 200]
                                [--seconds 6] [--seed 2] [--top-k K] [--temperature T]
                                [--prompt-seconds P] [--keep 0 --keep 1,2,3 ...]
                                [--contrast-weight G --contrast-window W] [--name tempo_pulse]

The tempo figure of issue 3 (Spearman of requested vs estimated BPM) is low
for generations while the onset rate follows the tempo word. A beat tracker
returns some BPM for any audio, so the figure alone cannot say why. This
bench draws captions that name a tempo (`evaluate.pick_prompts`, the same
draw as bench/organism.py with the same --n-prompts and --seed, restricted to
those captions), generates them, and measures three sets of audio with the
same estimators: the generations, the captions' source clips as rendered, and
those clips through the organism's codec. Per set it reports

* pulse clarity (`measure.tempo.pulse_clarity`): how strongly the onset
  envelope recurs at the best beat period in 60-180 BPM. Low = no steady
  pulse for any tracker to read;
* the tempo Spearman (resolved BPM, as in bench/organism.py) over all clips
  and over the clips whose pulse is at least as clear as the median source
  clip through the codec: if the readable generations follow the request, the
  miss is the unreadable ones;
* the beat salience at the requested BPM (best of its octave levels in range)
  as a share of the clip's clarity: near 1 when the strongest period is the
  requested one (or an octave of it), lower when the pulse sits elsewhere.

With --prompt-seconds P, a fourth set: each caption's generation continued
from the first P seconds of its source clip (MusicGen's audio prompt). Those
begin with the source clip itself, so every set's pulse clarity is measured
on the window after P alone (`window`), and the continuations only there. A
pulse that survives in the continuation means the LM can keep a beat it is
given; one that fades means it cannot hold one either.

With --contrast-weight G, the generations and continuations are sampled
with context contrast (`models.contrast`): each prediction plus G times its
difference from the prediction given only BOS and the last W steps. Set
W below a beat period (17 frames at 180 BPM): if the LM knows the beat from
further back but too weakly for sampling, this brings it out.

Writes bench/results/<name>.json with per-clip values.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402


def measure(audio: list[np.ndarray], requested: list[float], sr: int) -> list[dict]:
    from musiclens.measure.tempo import PRIOR, beat_salience, pulse_clarity, tempo

    out = []
    for y, req in zip(audio, requested):
        t = tempo(y, sr)
        pc = pulse_clarity(y, sr)
        levels = [b for b in (req / 2, req, req * 2) if PRIOR[0] * 0.95 <= b <= PRIOR[1] * 1.05]
        at_req = max(beat_salience(y, sr, levels))
        out.append({"bpm_requested": req, "bpm": t["bpm"], "bpm_raw": t["bpm_raw"], "onset_rate": t["onset_rate"],
                    "clarity": pc["clarity"], "grid_bpm": pc["bpm"], "salience_at_request": float(at_req)})
    return out


def continue_clips(model, tok, captions: list[str], source: list[np.ndarray], prompt_seconds: float,
                   seconds: float, seed: int, guidance: float, top_k: int | None, temperature: float,
                   batch: int = 16, contrast: dict | None = None) -> list[np.ndarray]:
    """Generations that start from the first `prompt_seconds` of each source clip (audio prompt + caption).

    Through `MusicModel.generate(audio_prompt=)`, what `musiclens generate --audio-prompt` runs;
    batch b starts at clip s = 16 b and is seeded seed + s, as `evaluate.generate` seeds its batches.
    """
    from musiclens.models import MusicModel
    from musiclens.models import organism as O

    mm = MusicModel(model, tok, "organism")
    n_prompt = int(prompt_seconds * O.SAMPLE_RATE)
    out = []
    for s in range(0, len(captions), batch):
        res = mm.generate(captions[s: s + batch], seconds=seconds, seed=seed + s, guidance_scale=guidance,
                          temperature=temperature, top_k=top_k or int(model.generation_config.top_k),
                          audio_prompt=np.stack([y[:n_prompt] for y in source[s: s + batch]]), **(contrast or {}))
        out += [a.numpy() for a in res.audio]
    return out


def clarity_stats(clarity: np.ndarray, clear_above: float) -> dict:
    """Median, 10th-90th percentiles and the share at or above `clear_above`."""
    p10, p25, p75, p90 = (float(q) for q in np.percentile(clarity, [10, 25, 75, 90]))
    return {"clarity_median": float(np.median(clarity)), "clarity_p10": p10, "clarity_p25": p25,
            "clarity_p75": p75, "clarity_p90": p90, "share_clear": float(np.mean(clarity >= clear_above))}


def summarise(clips: list[dict], words: list[str], drums: list[bool], clear_above: float) -> dict:
    from scipy.stats import spearmanr

    def rho(sel, key="bpm"):
        c = [(m["bpm_requested"], m[key]) for m, s in zip(clips, sel) if s and np.isfinite(m[key])]
        if len(c) < 5:
            return {"rho": None, "n": len(c)}
        r, p = spearmanr(*zip(*c))
        return {"rho": float(r), "p": float(p), "n": len(c)}

    clarity = np.array([m["clarity"] for m in clips])
    ratio = np.array([m["salience_at_request"] / m["clarity"] if m["clarity"] > 0 else np.nan for m in clips])
    within = np.array([abs(m["bpm"] / m["bpm_requested"] - 1) <= 0.04 for m in clips])
    by_word = {w: float(np.median(clarity[[x == w for x in words]])) for w in ("slow", "moderate", "fast")
               if w in words}
    drums = np.array(drums)
    return {"n": len(clips), **clarity_stats(clarity, clear_above),
            "clarity_median_by_word": by_word,
            "clarity_median_drums_asked": {"median": float(np.median(clarity[drums])) if drums.any() else None,
                                           "n": int(drums.sum())},
            "spearman_bpm": rho([True] * len(clips)),
            "spearman_onset_rate": rho([True] * len(clips), "onset_rate"),  # what the BPM figure reads without a beat
            "spearman_bpm_clear": rho(clarity >= clear_above),
            "spearman_bpm_unclear": rho(clarity < clear_above),
            "within_4pct": float(np.mean(within)),
            "salience_at_request_share_median": float(np.nanmedian(ratio))}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"  # a Spearman needs at least 5 clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    ap.add_argument("--model", default="", help="organism HF folder (default: the shipped one)")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--n-prompts", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--top-k", type=int, default=0, help="0 = the model's generation_config (250 shipped)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--prompt-seconds", type=float, default=0.0,
                    help="also continue each source clip's first P seconds (0 = off); see the module docstring")
    ap.add_argument("--keep", action="append", default=[], metavar="CODEBOOKS",
                    help="also generate with these codebooks (comma-separated, e.g. 0 or 1,2,3) copied from each "
                         "source clip; repeatable; see the module docstring")
    ap.add_argument("--contrast-weight", type=float, default=0.0,
                    help="context contrast for the generations and continuations (0 = off)")
    ap.add_argument("--contrast-window", type=int, default=8, help="steps the local prediction sees")
    ap.add_argument("--name", default="tempo_pulse")
    a = ap.parse_args()
    if a.prompt_seconds and not 0 < a.prompt_seconds <= a.seconds - 2:
        sys.exit("error: --prompt-seconds must leave at least 2 s to continue within --seconds")
    contrast = {"contrast_weight": a.contrast_weight, "contrast_window": a.contrast_window}

    from musiclens.errors import MusiclensError
    from musiclens.models import organism as O
    from musiclens.models.contrast import check_contrast
    from musiclens.models.keep import parse_codebooks
    from musiclens.organism.codes import reconstruct_clips
    from musiclens.organism.data import load_clips, read_metadata
    from musiclens.organism.evaluate import generate, generate_keeping, named_factors, pick_prompts

    try:
        check_contrast(a.contrast_window, a.contrast_weight)
        rows = read_metadata(a.corpus)
        prompts = [r for r in pick_prompts(rows, a.n_prompts, a.seed, a.split) if "tempo" in named_factors(r)]
        if not prompts:
            raise MusiclensError(f"no {a.split}-split captions that name a tempo in this draw")
        model, tok = O.load_organism_hf("cpu", a.model or str(O.organism_path()))
        keeps = [parse_codebooks(spec, int(model.decoder.config.num_codebooks)) for spec in a.keep]
    except MusiclensError as e:
        sys.exit(f"error: {e}")
    sr = O.SAMPLE_RATE
    words = [named_factors(r)["tempo"] for r in prompts]
    req = [float(r["bpm"]) for r in prompts]
    captions = [r["caption"] for r in prompts]
    clips = load_clips(a.corpus, (a.split,), sr, rows=[r for r in rows if r["path"] in {p["path"] for p in prompts}])
    idx = {r["path"]: i for i, r in enumerate(clips.rows)}
    source = [clips.wav(idx[r["path"]])[: int(a.seconds * sr)] for r in prompts]
    sets = {"as_rendered": source, "through_codec": reconstruct_clips(model.audio_encoder, source)}
    timed = {}  # wall seconds of each sampled set
    t0 = time.perf_counter()
    sets["generated"] = generate(model, tok, captions, a.seconds, a.seed, a.guidance,
                                 top_k=a.top_k or None, temperature=a.temperature, **contrast)
    timed["generated"] = time.perf_counter() - t0
    if a.prompt_seconds:
        t0 = time.perf_counter()
        sets["continued"] = continue_clips(model, tok, captions, source, a.prompt_seconds,
                                           a.seconds, a.seed, a.guidance, a.top_k or None, a.temperature,
                                           contrast=contrast)
        timed["continued"] = time.perf_counter() - t0
    for ks in keeps:
        sets["kept_" + "+".join(map(str, ks))] = generate_keeping(
            model, tok, captions, source, ks, a.seconds, a.seed, a.guidance, a.top_k or None, a.temperature)
    # continuations begin with the source clip itself: only the window after the prompt is theirs
    per = {k: measure(v, req, sr) for k, v in sets.items() if k != "continued"}
    clear_above = float(np.median([m["clarity"] for m in per["through_codec"]]))
    drums = [named_factors(r).get("drums", "none") != "none" for r in prompts]
    res = {"model": a.model or "shipped organism", "split": a.split, "seed": a.seed, "seconds": a.seconds,
           "kept_sets": {"kept_" + "+".join(map(str, ks)): ks for ks in keeps},
           "guidance": a.guidance, "top_k": a.top_k or int(model.generation_config.top_k),
           "temperature": a.temperature, "n_prompts_drawn": a.n_prompts, **contrast,
           "sampling_seconds": timed,
           "clear_above": clear_above,
           "clear_above_means": "median pulse clarity of the source clips through the codec",
           **{k: summarise(v, words, drums, clear_above) for k, v in per.items()}}
    if a.prompt_seconds:
        from musiclens.measure.tempo import pulse_clarity

        cut = int(a.prompt_seconds * sr)
        after = {k: np.array([pulse_clarity(y[cut:], sr)["clarity"] for y in v]) for k, v in sets.items()}
        win_clear = float(np.median(after["through_codec"]))
        res["window"] = {"from_seconds": a.prompt_seconds, "clear_above": win_clear,
                         "sets": {k: clarity_stats(v, win_clear) for k, v in after.items()}}
        for k, v in after.items():
            for m, c in zip(per.setdefault(k, [{} for _ in prompts]), v):
                m["clarity_window"] = float(c)
    res["per_clip"] = [{"caption": r["caption"], "word": w, **{k: per[k][i] for k in per}}
                       for i, (r, w) in enumerate(zip(prompts, words))]
    write_result(a.name, res)
    for k in ("as_rendered", "through_codec", "generated", *res["kept_sets"]):
        s = res[k]
        print(f"{k:14s} n {s['n']}  clarity {s['clarity_median']:.3f}  share clear {s['share_clear']:.2f}  "
              f"rho {_fmt(s['spearman_bpm']['rho'])}  within 4% {s['within_4pct']:.2f}  "
              f"salience at request {s['salience_at_request_share_median']:.2f}")
    if "window" in res:
        sets_after = res["window"]["sets"].items()
        print(f"pulse clarity after {a.prompt_seconds:g} s: " + ", ".join(
            f"{k} {v['clarity_median']:.3f} ({100 * v['share_clear']:.1f} % clear)" for k, v in sets_after))


if __name__ == "__main__":
    main()
