"""What does `generate --keep-from` keep of a clip, and what can the caption still change?

    python bench/keep_revoice.py --corpus data/corpus [--model DIR] [--split test] [--n 120] [--keep 0]
                                 [--seconds 6] [--seed 2] [--name keep_revoice]

Keeping the first codebook of a clip's codes keeps its beat (bench/tempo_pulse.py
--keep). Re-voicing a clip means keeping it under *another* clip's caption.
This bench pairs each of `--n` clips with drums (A) with the caption of another
clip of the split (B) that names a different instrument, and generates B's
caption twice with the same seeds: plainly, and with A's codebooks `--keep`
copied. Per tagger head (instrument, drums, brightness, register, mode,
dynamics) it reports, over the pairs whose B caption names a value of that
factor different from A's,

* how often the tagger hears B's value (the caption wins) and how often A's
  (the kept codes win), for the kept generations and the plain ones (the
  plain ones say how well the caption alone is followed),
* and on A's own clips through the codec, how often it hears A's value (the
  ceiling for "the kept codes win").

For tempo it reports pulse clarity and the share of clips within 4 % of A's BPM,
A's BPM being the beat the kept codes carry. Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402

HEADS = ("instrument", "drums", "brightness", "register", "mode", "dynamics")


def pair_captions(rows: list[dict], n: int, seed: int, split: str) -> list[tuple[dict, dict]]:
    """(A, B): n clips A with drums, each with another clip B whose caption names an instrument that is not A's."""
    from musiclens.organism.evaluate import named_factors

    rng = np.random.default_rng(seed)
    pool = [r for r in rows if r["split"] == split]
    sources = [r for r in pool if r.get("drums", "none") != "none"]
    captions = [r for r in pool if "instrument" in named_factors(r)]
    rng.shuffle(sources)
    pairs = []
    for a in sources[:n]:
        options = [b for b in captions if b["instrument"] != a["instrument"] and b["path"] != a["path"]]
        pairs.append((a, options[int(rng.integers(len(options)))]))
    return pairs


def agreement(tags: list[dict], pairs: list[tuple[dict, dict]], named: list[dict], head: str) -> dict:
    """Over pairs whose B caption names (`named`) a value of `head` other than A's: share hearing B's, A's."""
    hits_b = hits_a = n = 0
    for tag, (a, _), asked in zip(tags, pairs, named):
        want = asked.get(head)
        if want is None or want == a[head]:
            continue
        n += 1
        hits_b += tag[head] == want
        hits_a += tag[head] == a[head]
    return {"n": n, "caption": hits_b / n if n else None, "kept_source": hits_a / n if n else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    ap.add_argument("--model", default="", help="organism HF folder (default: the shipped one)")
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--n", type=int, default=120, help="source clips with drums (each gets one other caption)")
    ap.add_argument("--keep", default="0", help="codebooks copied from the source clip, comma-separated")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--name", default="keep_revoice")
    a = ap.parse_args()
    if a.n < 1:
        sys.exit("error: --n must be at least 1")

    from musiclens.errors import MusiclensError
    from musiclens.measure.tempo import pulse_clarity, tempo
    from musiclens.models import organism as O
    from musiclens.models.keep import parse_codebooks
    from musiclens.organism.codes import reconstruct_clips
    from musiclens.organism.data import load_clips, read_metadata
    from musiclens.organism.evaluate import generate, generate_keeping, load_tagger, named_factors

    try:
        rows = read_metadata(a.corpus)
        pairs = pair_captions(rows, a.n, a.seed, a.split)
        if not pairs:
            raise MusiclensError(f"no {a.split}-split clips with drums in {a.corpus}")
        model, tok = O.load_organism_hf("cpu", a.model or str(O.organism_path()))
        keep = parse_codebooks(a.keep, int(model.decoder.config.num_codebooks))
        tagger = load_tagger()
        if tagger is None:
            raise MusiclensError("the shipped tagger is not available")
    except MusiclensError as e:
        sys.exit(f"error: {e}")
    sr = O.SAMPLE_RATE
    paths = {p[0]["path"] for p in pairs}
    clips = load_clips(a.corpus, (a.split,), sr, rows=[r for r in rows if r["path"] in paths])
    idx = {r["path"]: i for i, r in enumerate(clips.rows)}
    source = [clips.wav(idx[s["path"]])[: int(a.seconds * sr)] for s, _ in pairs]
    captions = [b["caption"] for _, b in pairs]
    sets = {"kept": generate_keeping(model, tok, captions, source, keep, a.seconds, a.seed, a.guidance, None, 1.0),
            "plain": generate(model, tok, captions, a.seconds, a.seed, a.guidance),
            "source_through_codec": reconstruct_clips(model.audio_encoder, source)}
    res: dict = {"model": a.model or "shipped organism", "split": a.split, "n_pairs": len(pairs), "keep": keep,
                 "seconds": a.seconds, "seed": a.seed, "guidance": a.guidance}
    per_clip = [{"source": s["path"], "source_bpm": float(s["bpm"]), "caption": b["caption"]} for s, b in pairs]
    named = [named_factors(b) for _, b in pairs]
    src_bpm = np.array([float(s["bpm"]) for s, _ in pairs])
    for name, audio in sets.items():
        tags = tagger.predict_batch(audio, sr)
        clarity = np.array([pulse_clarity(y, sr)["clarity"] for y in audio])
        bpm = np.array([tempo(y, sr)["bpm"] for y in audio])
        res[name] = {"heads": {h: agreement(tags, pairs, named, h) for h in HEADS},
                     "clarity_median": float(np.median(clarity)),
                     "within_4pct_of_source_bpm": float(np.mean(np.abs(bpm / src_bpm - 1) <= 0.04))}
        for m, t, c, b in zip(per_clip, tags, clarity, bpm):
            m[name] = {"tag": t, "clarity": float(c), "bpm": float(b)}
    res["per_clip"] = per_clip
    write_result(a.name, res)
    for name in sets:
        v = res[name]
        print(f"{name:22s} clarity {v['clarity_median']:.2f}  within 4% of source BPM "
              f"{100 * v['within_4pct_of_source_bpm']:.0f} %  " + "  ".join(
                  f"{h} {_pct(v['heads'][h]['caption'])}/{_pct(v['heads'][h]['kept_source'])} (n {v['heads'][h]['n']})"
                  for h in HEADS))


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


if __name__ == "__main__":
    main()
