"""Measuring the organism: codec fidelity and prompt adherence of generations.

Codec: on held-out clips, original vs encode-decode reconstruction: log-mel
distance, SI-SDR, and agreement of what the concepts need (onset rate by
tempo group, tempo, centroid, RMS, CREPE pitch, tagger heads). A codec that
erases a concept makes the LM unable to learn it (DESIGN.md), so this runs
before LM training and its figures go to the model card.

Generation ("Prove it" of issue 3): captions of test-split clips are
generated from; each metric uses the generations whose caption names that
factor (word match on the caption vocabulary), with the source clip's
factors as the request. Ordered factors are tested with one-sided
Mann-Whitney U tests between neighbouring levels and a Spearman correlation
with the level; instrument / drums by the tagger's accuracy with a binomial
test against chance; FAD of unconditional generations vs the test split is
compared with FAD of noise at the corpus loudness. The same figures on the
captions' own source clips (as rendered and through the codec) say what
ground truth scores on the same draw, since each figure compares different
captions and the estimators err too.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import MusiclensError
from ..models import organism as O

ORDER = {"register": ["low", "mid", "high"], "brightness": ["dark", "neutral", "bright"],
         "dynamics": ["soft", "medium", "loud"], "tempo": ["slow", "moderate", "fast"]}


# ---------------------------------------------------------------- estimators
def _estimators():
    """Measurement functions from musiclens.measure (librosa/essentia fallbacks where one is missing)."""
    from ..measure import spectral

    est = {"centroid": spectral.centroid, "loudness": spectral.loudness, "onset_rate": spectral.onset_rate}
    try:
        from ..measure.tempo import tempo as tempo_fn

        est["bpm"] = lambda y, sr: tempo_fn(y, sr)["bpm"]
    except ImportError:
        import librosa

        est["bpm"] = lambda y, sr: float(np.atleast_1d(librosa.beat.beat_track(y=y, sr=sr)[0])[0])
    try:
        from ..measure.pitch import pitch as pitch_fn

        est["pitch"] = lambda y, sr: pitch_fn(y, sr)["median_midi"]
    except ImportError:
        pass
    return est


def load_tagger(path: str | Path | None = None):
    """The corpus tagger (or the one at `path`), or None when the shipped one is not available."""
    from ..measure.tagger import Tagger

    if path:
        return Tagger.load(path)  # asked for by name: a missing one is an error, not a silent None
    try:
        return Tagger.load()
    except Exception:
        return None


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref - ref.mean()
    est = est - est.mean()
    a = float(np.dot(est, ref) / (np.dot(ref, ref) + 1e-12))
    target = a * ref
    return float(10 * np.log10((target ** 2).sum() / (((est - target) ** 2).sum() + 1e-12) + 1e-12))


def log_mel_distance(x: np.ndarray, y: np.ndarray, sr: int) -> float:
    import librosa

    mx = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=1024, hop_length=256, n_mels=64)
    my = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=256, n_mels=64)
    n = min(mx.shape[1], my.shape[1])
    return float(np.mean(np.abs(np.log(mx[:, :n] + 1e-5) - np.log(my[:, :n] + 1e-5))))


def _corr(a, b) -> dict:
    from scipy.stats import pearsonr

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return {"n": int(ok.sum())}
    r, p = pearsonr(a[ok], b[ok])
    return {"pearson": round(float(r), 4), "p": float(p), "mean_orig": float(a[ok].mean()),
            "mean_recon": float(b[ok].mean()), "n": int(ok.sum())}


@torch.no_grad()
def codec_fidelity(codec, clips, n: int = 40, tagger=None, n_pitch: int = 16) -> dict:
    """Original vs reconstructed held-out clips (see module docstring)."""
    from .codes import reconstruct_clips

    est = _estimators()
    sr = clips.sample_rate
    n = min(n, len(clips))
    wavs = [clips.wav(i) for i in range(n)]
    t0 = time.time()
    recons = reconstruct_clips(codec, wavs)
    per = {k: ([], []) for k in ["onset_rate", "bpm", "centroid", "loudness", "pitch"] if k in est or k == "bpm"}
    mel, sdr, tag_agree = [], [], {}
    for i, (x, y) in enumerate(zip(wavs, recons)):
        mel.append(log_mel_distance(x, y, sr))
        sdr.append(si_sdr(x, y))
        for k in per:
            if k == "pitch" and i >= n_pitch:  # CREPE is the slow one on CPU: a subset is enough
                continue
            per[k][0].append(est[k](x, sr))
            per[k][1].append(est[k](y, sr))
        if tagger is not None:
            px, py = tagger.predict_batch([x, y], sr)
            for h in px:
                tag_agree.setdefault(h, []).append(px[h] == py[h])
    out = {"n": n, "n_pitch": min(n, n_pitch), "log_mel_l1": float(np.mean(mel)), "si_sdr_db": float(np.mean(sdr)),
           "seconds": round(time.time() - t0, 1)}
    for k, (a, b) in per.items():
        out[k] = _corr(a, b)
    out["loudness"]["mean_diff_db"] = float(np.nanmean(np.array(per["loudness"][1]) - np.array(per["loudness"][0])))
    bpm = np.array([clips.rows[i].get("bpm", np.nan) for i in range(n)], float)
    on_o, on_r = np.array(per["onset_rate"][0]), np.array(per["onset_rate"][1])
    for name, sel in (("slow_lt_100bpm", bpm < 100), ("fast_gt_140bpm", bpm > 140)):
        if sel.any():
            out[f"onset_rate_{name}"] = {"orig": float(on_o[sel].mean()), "recon": float(on_r[sel].mean()),
                                          "n": int(sel.sum())}
    if tagger is not None:
        out["tagger_agreement"] = {h: float(np.mean(v)) for h, v in tag_agree.items()}
    else:
        out["tagger_agreement"] = "tagger not available"
    return out


# ---------------------------------------------------------------- generation
NAMED_BPM = re.compile(r"\bat (\d+) bpm\b", flags=re.IGNORECASE)  # the captions' "at 132 BPM" (corpus.captions)


def named_factors(row: dict) -> dict:
    """Which of the clip's factor values its caption names (whole-phrase match on the caption vocabulary).

    Drum phrases are shielded (`sensitivity.concept_spans`, as when captions are
    flipped): "with gentle drums" asks for light drums, not for soft dynamics.
    """
    from ..corpus import captions as C
    from ..corpus.factors import tempo_word
    from .sensitivity import concept_spans

    text = row["caption"]
    tables = {"instrument": (C.INSTRUMENT_WORDS, row["instrument"]),
              "tempo": (C.TEMPO_WORDS, tempo_word(row["bpm"])),
              "brightness": (C.BRIGHT_WORDS, row["brightness"]),
              "register": (C.REGISTER_WORDS, row["register"]),
              "dynamics": (C.DYNAMIC_WORDS, row["dynamics"]),
              "drums": (C.DRUM_PHRASES, row["drums"]),
              "mode": (C.MODE_PHRASES, row["mode"])}
    out = {}
    for f, (table, value) in tables.items():
        if concept_spans(text, table[value], shield_drums=f != "drums"):
            out[f] = value
    if NAMED_BPM.search(text):
        out["tempo"] = tempo_word(row["bpm"])
    return out


def caption_bpm(caption: str, word: str) -> float:
    """The BPM a caption itself asks for: the one it names ("at 132 BPM"), else the middle of its tempo
    word's third of the corpus range (slow 80, moderate 120, fast 160).

    Why: the issue's tempo figure pairs each generation with its source clip's BPM, which a caption
    that only says "fast" does not reveal. This reading asks only what the caption says
    (`bench/tempo_request.py` compares the two).
    """
    from ..corpus.factors import BPM_RANGE, tempo_word

    m = NAMED_BPM.search(caption)
    if m:
        return float(m.group(1))
    lo, hi = BPM_RANGE
    third = (hi - lo) / 3
    mids = {tempo_word(lo + (i + 0.5) * third): lo + (i + 0.5) * third for i in range(3)}
    if word not in mids:
        raise MusiclensError(f"unknown tempo word {word!r}: expected one of {', '.join(mids)}")
    return mids[word]


def pick_prompts(rows: list[dict], n: int, seed: int = 0, split: str = "test") -> list[dict]:
    """n clips of `split`, preferring captions that name many factors (more evidence per generation).

    Reported figures use "test"; choices made by looking at generations (a checkpoint, a guidance
    scale) use "valid", so the test captions never steer them.
    """
    pool = [r for r in rows if r["split"] == split]
    rng = np.random.default_rng(seed)
    rng.shuffle(pool)
    pool.sort(key=lambda r: -len(named_factors(r)))
    top = pool[: max(n * 2, n)]
    idx = rng.choice(len(top), size=min(n, len(top)), replace=False)
    return [top[i] for i in sorted(idx)]


@torch.no_grad()
def generate(model, tok, prompts: list[str], seconds: float, seed: int, guidance: float = 3.0,
             batch: int = 16, top_k: int | None = None, temperature: float = 1.0,
             contrast_weight: float = 0.0, contrast_window: int = 8) -> list[np.ndarray]:
    """Audio (float32 numpy at 16 kHz) for each prompt; "" / None = unconditional (null condition).

    `top_k` None keeps the model's generation_config (250 for the organism, as for MusicGen).
    `contrast_weight` > 0 samples with context contrast (`models.contrast`).
    """
    import contextlib

    from transformers import LogitsProcessorList

    from ..models.contrast import ContextContrast

    frames = int(seconds * O.FRAME_RATE)
    sampling = {"temperature": temperature, **({"top_k": top_k} if top_k is not None else {})}
    contrast = ContextContrast(model, contrast_window, contrast_weight) if contrast_weight else None
    out = []
    for s in range(0, len(prompts), batch):
        part = prompts[s: s + batch]
        torch.manual_seed(seed + s)
        with contrast or contextlib.nullcontext():
            # a new list per call: HF appends its guidance processor to the list it is given
            extra = {"logits_processor": LogitsProcessorList([contrast])} if contrast else {}
            audio = _generate_batch(model, tok, part, frames, guidance, {**sampling, **extra})
        for a in audio[:, 0]:
            out.append(a.float().numpy()[: int(seconds * O.SAMPLE_RATE)])
    return out


def _generate_batch(model, tok, part: list[str], frames: int, guidance: float, sampling: dict):
    """One batch of `generate`: the null condition on both CFG branches when no prompt has text."""
    if all(not p for p in part):
        inputs = dict(model.get_unconditional_inputs(num_samples=len(part)))
        inputs["guidance_scale"] = 1.0  # null condition on both CFG branches = plain sampling
        inputs.pop("max_new_tokens", None)
        return model.generate(**inputs, max_new_tokens=frames + O.N_CODEBOOKS, do_sample=True, **sampling)
    t = tok(list(part), return_tensors="pt", padding=True)
    t.pop("token_type_ids", None)
    return model.generate(**t, max_new_tokens=frames + O.N_CODEBOOKS, do_sample=True, guidance_scale=guidance,
                          **sampling)


def generate_keeping(model, tok, captions: list[str], source: list[np.ndarray], keep: list[int], seconds: float,
                     seed: int, guidance: float = 3.0, top_k: int | None = None, temperature: float = 1.0,
                     batch: int = 16) -> list[np.ndarray]:
    """Generations with codebooks `keep` copied from each source clip's codes, the others sampled.

    Batches and seeds as `generate`. A clip shorter than `seconds`
    keeps its codebooks only as far as it goes (its codes are padded with the
    pad id, which `models.keep` never forces).
    """
    from ..models import MusicModel
    from .codes import encode_clips

    mm = MusicModel(model, tok, "organism")
    F, K = mm.frames_for(seconds), mm.n_codebooks
    # the very codes `codes.reconstruct_clips` decodes for the "through the codec" sets, encoded in batches
    codes = encode_clips(model.audio_encoder, source, str(mm.device))
    out = []
    for s in range(0, len(captions), batch):
        part = codes[s: s + batch]
        kept = torch.full((len(part), K, F), mm.pad_token_id, dtype=torch.long)
        for j, c in enumerate(part):
            kept[j, :, : min(F, c.shape[-1])] = c[:, :F]
        res = mm.generate(captions[s: s + batch], seconds=seconds, seed=seed + s, guidance_scale=guidance,
                          temperature=temperature, top_k=top_k or int(model.generation_config.top_k),
                          keep_codes=kept, keep_codebooks=keep)
        out += [a.numpy() for a in res.audio]
    return out


def _ordered(levels: list[str], values: dict[str, list[float]]) -> dict:
    from scipy.stats import mannwhitneyu, spearmanr

    res = {"median": {}, "n": {}}
    xs, ys = [], []
    for i, lv in enumerate(levels):
        v = np.asarray([x for x in values.get(lv, []) if np.isfinite(x)], float)
        res["median"][lv] = float(np.median(v)) if len(v) else None
        res["n"][lv] = int(len(v))
        xs += [i] * len(v)
        ys += list(v)
    pairs = {}
    for a, b in zip(levels[:-1], levels[1:]):
        va, vb = [np.asarray(values.get(x, []), float) for x in (a, b)]
        va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
        if len(va) >= 2 and len(vb) >= 2:
            pairs[f"{a}<{b}"] = float(mannwhitneyu(va, vb, alternative="less").pvalue)
    lo, hi = levels[0], levels[-1]
    va, vb = [np.asarray(values.get(x, []), float) for x in (lo, hi)]
    va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
    if len(va) >= 2 and len(vb) >= 2 and len(levels) > 2:
        pairs[f"{lo}<{hi}"] = float(mannwhitneyu(va, vb, alternative="less").pvalue)
    res["p_one_sided"] = pairs
    present = [lv for lv in levels if res["n"][lv] > 0]
    meds = [res["median"][lv] for lv in present]
    res["ordered"] = bool(len(present) == len(levels) and all(a < b for a, b in zip(meds[:-1], meds[1:])))
    lo_m, hi_m = res["median"][levels[0]], res["median"][levels[-1]]
    res["extremes_ordered"] = bool(lo_m is not None and hi_m is not None and lo_m < hi_m)
    if len(set(xs)) >= 2:
        rho, p = spearmanr(xs, ys)
        res["spearman_level"] = {"rho": float(rho), "p": float(p)}
    return res


def _accuracy(pairs: list[tuple[str, str]], chance: float) -> dict:
    from scipy.stats import binomtest

    if not pairs:
        return {"n": 0}
    hits = sum(a == b for a, b in pairs)
    return {"accuracy": hits / len(pairs), "n": len(pairs), "chance": chance,
            "p_vs_chance": float(binomtest(hits, len(pairs), chance, alternative="greater").pvalue)}


def paired_tags(per_clip_a: list[dict], per_clip_b: list[dict], factor: str) -> dict:
    """Compare two generation runs clip by clip on the tagger's reading of one named factor.

    Why paired: both runs generate from the same captions with the same seeds,
    so a per-clip sign test (McNemar's exact form) removes the caption-to-caption
    spread that two independent accuracies carry. With the same LM the codes are
    identical too, and the test isolates the codec's decoder.
    """
    from scipy.stats import binomtest

    if [r["caption"] for r in per_clip_a] != [r["caption"] for r in per_clip_b]:
        raise MusiclensError("the two runs did not generate from the same captions in the same order")
    both = a_only = b_only = neither = 0
    for ra, rb in zip(per_clip_a, per_clip_b):
        if factor not in ra["named"]:
            continue
        want = ra["named"][factor]
        a, b = ra["tag"].get(factor) == want, rb["tag"].get(factor) == want
        both += a and b
        a_only += a and not b
        b_only += b and not a
        neither += not (a or b)
    n = both + a_only + b_only + neither
    return {"n": n, "both_right": both, "a_only": a_only, "b_only": b_only, "neither": neither,
            "accuracy_a": (both + a_only) / n if n else float("nan"),
            "accuracy_b": (both + b_only) / n if n else float("nan"),
            "p_sign_test": binomtest(b_only, a_only + b_only).pvalue if a_only + b_only else 1.0}


def paired_tempo(per_clip_a: list[dict], per_clip_b: list[dict], tolerance: float = 0.04) -> dict:
    """Which of two runs' estimated BPMs is closer to the request, clip by clip (sign test).

    Why: the beat tracker flips a share of estimates between metrical levels
    on small changes of the audio, which moves a Spearman over a few hundred
    clips by more than the change itself. Only the clips whose estimate moved
    by more than `tolerance` (relative) count; each is won by the run whose
    estimate is closer to the requested BPM in log ratio.
    """
    from scipy.stats import binomtest

    if [r["caption"] for r in per_clip_a] != [r["caption"] for r in per_clip_b]:
        raise MusiclensError("the two runs did not generate from the same captions in the same order")
    n = moved = a_closer = b_closer = 0
    for ra, rb in zip(per_clip_a, per_clip_b):
        # silence has no tempo: a NaN estimate would count as "moved" and be won by neither run
        if "tempo" not in ra["named"] or not all(np.isfinite(r.get("bpm", np.nan)) and r["bpm"] > 0
                                                 for r in (ra, rb)):
            continue
        n += 1
        if abs(np.log(rb["bpm"] / ra["bpm"])) <= np.log1p(tolerance):
            continue
        moved += 1
        ea, eb = (abs(float(np.log(r["bpm"] / r["bpm_requested"]))) for r in (ra, rb))
        a_closer += int(ea < eb)
        b_closer += int(eb < ea)
    return {"n": n, "moved": moved, "tolerance": tolerance, "a_closer": a_closer, "b_closer": b_closer,
            "p_sign_test": binomtest(b_closer, a_closer + b_closer).pvalue if a_closer + b_closer else 1.0}


def _measure(audio: list[np.ndarray], named: list[dict], tagger, est: dict, sr: int) -> list[dict]:
    """Centroid, loudness, onset rate, BPM (and CREPE pitch where a register is asked for, tagger heads) per clip."""
    tags = tagger.predict_batch(audio, sr) if tagger is not None else [None] * len(audio)
    meas = []
    for y, nf, tag in zip(audio, named, tags):
        m = {k: est[k](y, sr) for k in ("centroid", "loudness", "onset_rate", "bpm")}
        if "pitch" in est:  # CREPE is slow on CPU: only where the caption asks for a register
            m["pitch"] = est["pitch"](y, sr) if "register" in nf else float("nan")
        if tag is not None:
            m["tag"] = tag
        meas.append(m)
    return meas


def _adherence(prompts: list[dict], named: list[dict], meas: list[dict], rows: list[dict], with_tags: bool) -> dict:
    """The issue's figures for one set of clips: each from the clips whose caption names that factor."""
    from scipy.stats import spearmanr

    from ..corpus.factors import DRUMS

    res: dict = {}
    if with_tags:
        inst = [(nf["instrument"], m["tag"].get("instrument")) for nf, m in zip(named, meas) if "instrument" in nf]
        n_inst = len({r["instrument"] for r in rows})
        res["instrument"] = _accuracy(inst, 1.0 / max(n_inst, 1))
        dr = [(nf["drums"], m["tag"].get("drums")) for nf, m in zip(named, meas) if "drums" in nf]
        res["drums"] = _accuracy(dr, 1.0 / len(DRUMS))
        res["drums_presence"] = _accuracy([(a != "none", b != "none") for a, b in dr], 0.5)
    else:
        res["instrument"] = res["drums"] = "tagger not available"
    # tempo: Spearman requested vs estimated BPM, onset rate ordered slow < fast
    tp = [(r["bpm"], m["bpm"], m["onset_rate"], nf["tempo"], caption_bpm(r["caption"], nf["tempo"]))
          for r, nf, m in zip(prompts, named, meas) if "tempo" in nf]
    if len(tp) >= 3:
        rho, p = spearmanr([t[0] for t in tp], [t[1] for t in tp])
        rho_on, p_on = spearmanr([t[0] for t in tp], [t[2] for t in tp])
        rho_c, p_c = spearmanr([t[4] for t in tp], [t[1] for t in tp])
        res["tempo"] = {"spearman_bpm": float(rho), "p_bpm": float(p), "spearman_onset_rate": float(rho_on),
                        "p_onset_rate": float(p_on), "n": len(tp),
                        "spearman_bpm_caption": float(rho_c), "p_bpm_caption": float(p_c),
                        "onset_rate": _ordered(ORDER["tempo"], _group(tp, 3, 2))}
    for factor, key in (("register", "pitch"), ("brightness", "centroid"), ("dynamics", "loudness")):
        if key not in meas[0] or not np.isfinite([m[key] for m in meas]).any():
            res[factor] = f"{key}: not measured (estimator missing or no caption names {factor})"
            continue
        vals: dict[str, list[float]] = {}
        for nf, m in zip(named, meas):
            if factor in nf:
                vals.setdefault(nf[factor], []).append(m[key])
        res[factor] = {"measure": key, **_ordered(ORDER[factor], vals)}
    return res


def source_clip_reference(model, prompts: list[dict], named: list[dict], rows: list[dict], corpus, seconds: float,
                          tagger, est: dict) -> dict:
    """The same figures on the real clips the captions were written from: as rendered, and through the codec.

    Why: each figure compares *different* captions, whose other factors
    (instrument, register, drums) move the same measurements, and the
    estimators have errors of their own. The source clips show what the
    figure is for ground truth on this very draw; their reconstructions, what
    an LM that reproduced them exactly would score through this codec.
    """
    from .codes import reconstruct_clips
    from .data import load_clips

    sr = O.SAMPLE_RATE
    want = {r["path"] for r in prompts}
    clips = load_clips(corpus, (prompts[0]["split"],), sr, rows=[r for r in rows if r["path"] in want])
    by_path = {r["path"]: i for i, r in enumerate(clips.rows)}
    keep = [j for j, r in enumerate(prompts) if r["path"] in by_path]
    if not keep:
        return {"n_clips": 0}
    prompts, named = [prompts[j] for j in keep], [named[j] for j in keep]
    wavs = [clips.wav(by_path[r["path"]])[: int(seconds * sr)] for r in prompts]
    out = {"n_clips": len(prompts), "seconds": seconds}
    for name, audio in (("as_rendered", wavs), ("through_codec", reconstruct_clips(model.audio_encoder, wavs))):
        out[name] = _adherence(prompts, named, _measure(audio, named, tagger, est, sr), rows, tagger is not None)
    return out


def generation_eval(model, tok, rows: list[dict], n_prompts: int = 64, n_uncond: int = 16, seconds: float = 6.0,
                    seed: int = 0, guidance: float = 3.0, tagger=None, corpus=None, code_probe=None,
                    split: str = "test", top_k: int | None = None, temperature: float = 1.0,
                    reference: bool = False) -> dict:
    """The issue's 'Prove it' metrics on test-split captions (see module docstring).

    `split="valid"` draws the captions from the valid split instead, for model selection.

    With a `codeprobe.CodeProbe`, instrument and drums are also read from the
    codes the LM sampled (`<factor>_codes`), before the codec decodes them.
    With `reference` (and a corpus), `source_clips` holds the same figures on
    the captions' own clips (`source_clip_reference`).
    """
    from .codeprobe import capture_decoder_input

    est = _estimators()
    sr = O.SAMPLE_RATE
    prompts = pick_prompts(rows, n_prompts, seed, split)
    if not prompts:
        raise MusiclensError(f"no {split}-split captions to generate from (--n-prompts {n_prompts})")
    t0 = time.time()
    # the decoder-input hook only when a probe will read it: generation stays untouched otherwise
    capture = capture_decoder_input(model.audio_encoder) if code_probe is not None else contextlib.nullcontext([])
    with capture as latents:
        audio = generate(model, tok, [r["caption"] for r in prompts], seconds, seed, guidance,
                         top_k=top_k, temperature=temperature)
    t_gen = time.time() - t0
    named = [named_factors(r) for r in prompts]
    meas = _measure(audio, named, tagger, est, sr)
    res: dict = {"split": split, "n_prompts": len(prompts), "seconds_per_clip": seconds, "guidance_scale": guidance,
                 "top_k": top_k if top_k is not None else model.generation_config.top_k,
                 "temperature": temperature, "generation_seconds": round(t_gen, 1)}
    res.update(_adherence(prompts, named, meas, rows, tagger is not None))
    if code_probe is not None:
        read = code_probe.predict(np.concatenate(latents))
        for f in code_probe.probes:
            pairs = [(nf[f], read[f][i]) for i, nf in enumerate(named) if f in nf]
            n_levels = len({str(r.get(f)) for r in rows})
            res[f"{f}_codes"] = {**_accuracy(pairs, 1.0 / max(n_levels, 1)),
                                 "probe_valid_accuracy": code_probe.valid_accuracy[f], "probe_train_clips": code_probe.n_train}
    res["per_clip"] = [{"caption": r["caption"], "named": nf, "bpm_requested": r["bpm"],
                        **{k: v for k, v in m.items()}} for r, nf, m in zip(prompts, named, meas)]
    if reference and corpus is not None:
        res["source_clips"] = source_clip_reference(model, prompts, named, rows, corpus, seconds, tagger, est)
    # unconditional generations vs the test split, and noise as the reference
    if n_uncond and corpus is not None:
        res["fad"] = fad_eval(model, tok, corpus, rows, n_uncond, seconds, seed, top_k, temperature)
    return res


def _group(items, key_idx, val_idx):
    out: dict[str, list[float]] = {}
    for t in items:
        out.setdefault(t[key_idx], []).append(t[val_idx])
    return out


def fad_eval(model, tok, corpus, rows, n: int, seconds: float, seed: int, top_k: int | None = None,
             temperature: float = 1.0) -> dict:
    """FAD(unconditional generations, test clips) vs FAD(noise, test clips), same embedder and n.

    Unconditional = the null condition on both CFG branches, so no guidance scale applies.
    """
    from ..measure.fad import embed_set, fad, load_embedder
    from .data import load_clips

    sr = O.SAMPLE_RATE
    emb = load_embedder("auto")
    test = load_clips(corpus, ("test",), sr, rows=rows)
    ref = [test.wav(i)[: int(seconds * sr)] for i in range(min(len(test), 4 * n))]
    gen = generate(model, tok, [""] * n, seconds, seed + 10_000, top_k=top_k, temperature=temperature)
    rng = np.random.default_rng(seed)
    rms = float(np.mean([np.sqrt(np.mean(x ** 2)) for x in ref]))
    noise = [(rng.standard_normal(int(seconds * sr)) * rms).astype(np.float32) for _ in range(n)]
    valid = load_clips(corpus, ("valid",), sr, rows=rows, limit=n)
    real = [valid.wav(i)[: int(seconds * sr)] for i in range(len(valid))]
    e_ref = embed_set(emb, ref, sr)
    return {"embedder": getattr(emb, "name", "?"), "n_generated": n, "n_reference": len(ref),
            "fad_unconditional": fad(embed_set(emb, gen, sr), e_ref),
            "fad_noise": fad(embed_set(emb, noise, sr), e_ref),
            "fad_real_valid": fad(embed_set(emb, real, sr), e_ref)}
