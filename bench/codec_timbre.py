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
    for k, ys in clips.items():
        pred = tagger.predict_batch(ys, sr)
        figures["variants"][k] = {
            **{h: round(float(np.mean([p[h] == r[h] for p, r in zip(pred, rows)])), 4) for h in HEADS},
            "most_predicted_instruments": Counter(p["instrument"] for p in pred).most_common(3)}
        print(k, figures["variants"][k], flush=True)
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
