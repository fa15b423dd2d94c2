"""Where the organism's codec loses instrument identity: the tagger on decodes that change one thing at a time.

    python bench/codec_timbre.py [--codec FOLDER] [--corpus data/corpus] [--n 60] [--name codec_timbre]
    python bench/codec_timbre.py --n 407 --variants full --name codec_tagger    # all test clips, plain decode

The shipped tagger names the right instrument on 98 % of clean test clips and
on about 30 % of their codec reconstructions (docs/organism.md). This bench
decodes the first 6.4 s of `--n` test clips in ways that each remove one
suspect, and asks the tagger about each:

- `full`: encode, quantise, decode the whole clip (what generation does);
- `unquantised`: decode the encoder's latent without the codebooks, so the
  quantiser cannot be what erases timbre;
- `windows_25` / `windows_25_ctx25` / `windows_50_ctx50` / `windows_100`:
  decode the quantised latent in windows of 25-100 frames (0.5-2 s; the codec
  trained on 0.5-s crops), with or without that many frames of left context
  cut off afterwards, so the decoder's LSTM never runs past what it trained on.

It writes bench/results/<name>.json (tagger accuracy per head and the most
predicted instruments for each variant) and <name>.png (spectrograms of four
clips, original vs full reconstruction).

`--mfcc-train N` adds a second judge of instrument that shares nothing with
the tagger: a logistic regression on MFCC statistics (20 coefficients and
their deltas, mean and std over time) fitted on N clean train clips. A
decoder trained with a loss read from a tagger network (`perceptual.py`)
could learn to please CNNs of that kind; a gain this judge also hears is not
that.

`--baseline RESULT` compares the plain reconstructions clip by clip with an
earlier run of this bench on the same clips (another decoder): how many clips
only one decoder gets right, with a sign test, for each judge.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from musiclens.bench_utils import RESULTS, write_result  # noqa: E402

HEADS = ("instrument", "drums", "brightness", "register", "dynamics", "mode")
WINDOWS = {"windows_25": (25, 0), "windows_25_ctx25": (25, 25), "windows_50_ctx50": (50, 50), "windows_100": (100, 0)}


def decode_windows(codec, z: torch.Tensor, window: int, context: int, hop: int) -> torch.Tensor:
    """Decode latent z [1, D, F] window by window; each window sees `context` earlier frames, whose audio is cut."""
    out = []
    for s in range(0, z.shape[-1], window):
        a = max(0, s - context)
        y = codec.decoder(z[..., a:s + window])[:, 0]
        out.append(y[:, (s - a) * hop:])
    return torch.cat(out, -1)


def mfcc_stats(y: np.ndarray, sr: int) -> np.ndarray:
    """Mean and std over time of 20 MFCCs and their deltas (80 numbers)."""
    import librosa

    m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
    d = librosa.feature.delta(m)
    return np.concatenate([m.mean(1), m.std(1), d.mean(1), d.std(1)]).astype(np.float32)


def mfcc_judge(corpus: Path, rows: list[dict], n_samples: int, sr: int):
    """A standardised logistic regression on MFCC statistics of clean train clips: instrument from audio."""
    import soundfile as sf
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.stack([mfcc_stats(sf.read(corpus / r["path"], dtype="float32")[0][:n_samples], sr) for r in rows])
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, [r["instrument"] for r in rows])


def by_class(rows: list[dict], variant: dict) -> dict:
    """Share of clips of each instrument that each judge names right: which timbres a decoder loses."""
    out = {}
    for inst in sorted({r["instrument"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["instrument"] == inst]
        out[inst] = {"n": len(idx), **{judge: round(sum(variant[f"{judge}_hits"][i] for i in idx) / len(idx), 4)
                                       for judge in ("instrument", "instrument_mfcc") if f"{judge}_hits" in variant}}
    return out


def paired_with(baseline: str, figures: dict) -> dict:
    """Sign tests of the plain reconstructions' per-clip hits against an earlier result (a = baseline, b = this)."""
    import json

    from scipy.stats import binomtest

    path = Path(baseline) if baseline.endswith(".json") else RESULTS / f"{baseline}.json"
    if not path.exists():
        sys.exit(f"error: no result {path}")
    base = json.loads(path.read_text())["figures"]
    if base["clips"] != figures["clips"]:
        sys.exit(f"error: {path.name} decoded {base['clips']} clips, this run {figures['clips']}: not the same clips")
    out = {"baseline": path.stem}
    for key in ("instrument_hits", "instrument_mfcc_hits"):
        ha, hb = base["variants"]["full"].get(key), figures["variants"]["full"].get(key)
        if ha is None or hb is None:
            continue
        a_only = sum(x and not y for x, y in zip(ha, hb))
        b_only = sum(y and not x for x, y in zip(ha, hb))
        flips = a_only + b_only
        out[key.removesuffix("_hits")] = {"a_only": a_only, "b_only": b_only,
                                          "both": sum(x and y for x, y in zip(ha, hb)),
                                          "p_sign_test": binomtest(b_only, flips).pvalue if flips else 1.0}
    return out


def spectrogram_figure(pairs: list[tuple[str, np.ndarray, np.ndarray]], sr: int, path: Path) -> None:
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(len(pairs), 2, figsize=(12, 2.6 * len(pairs)))
    for i, (title, y, yr) in enumerate(pairs):
        for j, a in enumerate((y, yr)):
            s = librosa.amplitude_to_db(np.abs(librosa.stft(a[: 3 * sr], n_fft=1024, hop_length=128)), ref=1.0,
                                        top_db=None)
            ax[i, j].imshow(np.clip(s[:300], -100, None), origin="lower", aspect="auto", cmap="magma", vmin=-100,
                            vmax=-10, extent=(0, 3, 0, 300 * sr / 1024))
            ax[i, j].set_title(f"{title}: {'original' if j == 0 else 'codec reconstruction'}", fontsize=9)
            ax[i, j].set_ylabel("Hz")
    ax[-1, 0].set_xlabel("s")
    ax[-1, 1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="", help="EnCodec or organism folder (default: the shipped organism's codec)")
    ap.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    ap.add_argument("--n", type=int, default=60, help="first N test clips")
    ap.add_argument("--name", default="codec_timbre")
    ap.add_argument("--variants", default="all", help="comma-separated variants to decode (default: all); "
                                                        "`full` alone gives the tagger on plain reconstructions")
    ap.add_argument("--mfcc-train", type=int, default=0, help="also judge instrument with an MFCC classifier fitted "
                                                                "on this many clean train clips (0 = off)")
    ap.add_argument("--baseline", default="", help="an earlier result of this bench on the same clips (name in "
                                                       "bench/results or .json path): paired sign tests per judge")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    import soundfile as sf

    from musiclens.corpus.render import load_metadata
    from musiclens.measure.tagger import load_tagger
    from musiclens.organism import quantizer as Q
    from musiclens.organism.reconstruct import load_codec_any

    codec = load_codec_any(a.codec)
    tagger = load_tagger()
    sr, hop = codec.config.sampling_rate, int(np.prod(codec.config.upsampling_ratios))
    rows = [r for r in load_metadata(a.corpus) if r["split"] == "test"][: a.n]
    n_samples = int(6.4 * sr)
    every = ["original", "full", "unquantised", *WINDOWS]
    wanted = every if a.variants == "all" else ["original", *[v for v in a.variants.split(",") if v != "original"]]
    if unknown := set(wanted) - set(every):
        sys.exit(f"error: unknown variant(s) {sorted(unknown)}; choose from {', '.join(every)}")
    clips = {k: [] for k in wanted}
    for r in rows:
        y, _ = sf.read(a.corpus / r["path"], dtype="float32")
        x = torch.from_numpy(y[:n_samples])[None]
        z = codec.encoder(x[:, None])
        zq, *_ = Q.quantize(codec, z, train=False)
        decode = {"original": lambda: x, "full": lambda: codec.decoder(zq)[:, 0],
                  "unquantised": lambda: codec.decoder(z)[:, 0],
                  **{k: (lambda w=w, c=c: decode_windows(codec, zq, w, c, hop)) for k, (w, c) in WINDOWS.items()}}
        for k in clips:
            clips[k].append(decode[k]()[0, :n_samples].numpy())
    figures = {"clips": len(rows), "seconds": 6.4, "codec": a.codec or "shipped organism", "variants": {}}
    judge = None
    if a.mfcc_train:
        train_rows = [r for r in load_metadata(a.corpus) if r["split"] == "train"][: a.mfcc_train]
        judge = mfcc_judge(a.corpus, train_rows, n_samples, sr)
        figures["mfcc_train_clips"] = len(train_rows)
    for k, ys in clips.items():
        pred = tagger.predict_batch(ys, sr)
        figures["variants"][k] = {
            **{h: round(float(np.mean([p[h] == r[h] for p, r in zip(pred, rows)])), 4) for h in HEADS},
            "most_predicted_instruments": Counter(p["instrument"] for p in pred).most_common(3),
            "instrument_hits": [int(p["instrument"] == r["instrument"]) for p, r in zip(pred, rows)]}
        if judge is not None:
            hits = judge.predict(np.stack([mfcc_stats(y, sr) for y in ys])) == np.array([r["instrument"] for r in rows])
            figures["variants"][k]["instrument_mfcc"] = round(float(hits.mean()), 4)
            figures["variants"][k]["instrument_mfcc_hits"] = [int(h) for h in hits]
        figures["variants"][k]["instrument_by_class"] = by_class(rows, figures["variants"][k])
        print(k, figures["variants"][k], flush=True)
    if a.baseline:
        figures["paired_with_baseline"] = paired_with(a.baseline, figures)
        print("paired", figures["paired_with_baseline"], flush=True)
    pairs = []
    for inst in ("piano", "marimba", "trumpet", "flute") if a.variants == "all" else ():  # figure: full runs only
        i = next((i for i, r in enumerate(rows) if r["instrument"] == inst), None)
        if i is not None:
            pairs.append((f"{inst} ({rows[i]['bpm']:.0f} BPM, {rows[i]['brightness']})", clips["original"][i],
                          clips["full"][i]))
    if pairs:
        spectrogram_figure(pairs, sr, RESULTS / f"{a.name}.png")
        figures["spectrograms"] = f"bench/results/{a.name}.png"
    write_result(a.name, figures, "python bench/codec_timbre.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
