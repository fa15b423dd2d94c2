"""Fréchet Audio Distance (FAD) between two sets of clips.

FAD fits a Gaussian to each set's embeddings and reports the Fréchet
(2-Wasserstein) distance between the two Gaussians:

    FAD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))

Why not `scipy.linalg.sqrtm(S_a @ S_b)` as most implementations do: the
product of two covariance matrices is not symmetric, `sqrtm` then returns
complex values with spurious imaginary parts and is unstable when the
covariances are rank-deficient (always the case with fewer clips than
embedding dimensions, as in small steering experiments). We use the identity

    tr((S_a S_b)^(1/2)) = tr((A S_b A)^(1/2)),   A = S_a^(1/2) (symmetric PSD)

and take the trace as the sum of square roots of the (clipped non-negative)
eigenvalues of the symmetric PSD matrix A S_b A, in float64. This is exact,
real-valued and stable for singular covariances.

The embedder is pluggable: anything with `embed(y, sr) -> array` of shape
[d] (one vector per clip) or [frames, d] (frame-level, all frames pooled, as
VGGish-FAD does). The offline default in musiclens is the shipped tagger's
`embed`; `MelEmbedder` (log-mel frames) needs no trained model at all and is
what tests and `tiny-random` runs use. A CLAP or VGGish model a user has
locally plugs in the same way.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import numpy as np

from ..errors import MusiclensError


class Embedder(Protocol):
    """Maps one mono clip to an embedding ([d]) or frame embeddings ([frames, d])."""

    def embed(self, y: np.ndarray, sr: int) -> np.ndarray: ...


def _stats(emb: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2:
        raise MusiclensError(f"FAD: {name} embeddings must be 2-D [n, d], got shape {emb.shape}")
    if emb.shape[0] < 2:
        raise MusiclensError(f"FAD: {name} needs at least 2 embeddings, got {emb.shape[0]}")
    if not np.isfinite(emb).all():
        raise MusiclensError(f"FAD: {name} embeddings contain NaN or inf")
    return emb.mean(axis=0), np.cov(emb, rowvar=False).reshape(emb.shape[1], emb.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b) (stable, real-valued)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape:
        raise MusiclensError(f"FAD: embedding widths differ ({mu_a.shape[0]} vs {mu_b.shape[0]})")
    sa = _psd_sqrt(cov_a)
    m = sa @ cov_b @ sa
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu_a - mu_b
    d = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)
    return max(d, 0.0)


def fad(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """FAD between two embedding sets, each [n, d] (rows = clips or frames)."""
    mu_a, cov_a = _stats(emb_a, "set A")
    mu_b, cov_b = _stats(emb_b, "set B")
    return frechet_distance(mu_a, cov_a, mu_b, cov_b)


def embed_set(embedder: Embedder, clips: Iterable[np.ndarray], sr: int) -> np.ndarray:
    """Embed every clip and stack the rows (frame-level embeddings are pooled as rows).

    Uses the embedder's `embed_batch(clips, sr)` when it has one (one batched pass).
    """
    if hasattr(embedder, "embed_batch"):
        clips = [np.asarray(y, dtype=np.float32) for y in clips]
        if not clips:
            raise MusiclensError("FAD: no clips to embed")
        return np.asarray(embedder.embed_batch(clips, sr), dtype=np.float64)
    rows = []
    for y in clips:
        e = np.asarray(embedder.embed(np.asarray(y, dtype=np.float32), sr), dtype=np.float64)
        rows.append(e[None, :] if e.ndim == 1 else e.reshape(-1, e.shape[-1]))
    if not rows:
        raise MusiclensError("FAD: no clips to embed")
    return np.concatenate(rows, axis=0)


class MelEmbedder:
    """Log-mel frame embeddings: a model-free embedder for FAD.

    Each ~0.1 s frame becomes its `n_mels` log-mel energies (dB), so FAD
    compares the distributions of short-time spectra. It is cruder than a
    learned embedding (it sees timbre and loudness, not structure) but needs
    no weights, so it works on any machine and on untrained test models.
    """

    name = "mel"

    def __init__(self, n_mels: int = 32, frame_seconds: float = 0.1):
        self.n_mels = n_mels
        self.frame_seconds = frame_seconds

    def embed(self, y: np.ndarray, sr: int) -> np.ndarray:
        import librosa

        y = np.asarray(y, dtype=np.float32)
        hop = max(1, int(round(sr * self.frame_seconds)))
        n_fft = 1 << int(np.ceil(np.log2(hop * 2)))
        if y.shape[-1] < n_fft:
            y = np.pad(y, (0, n_fft - y.shape[-1]))
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=self.n_mels,
                                             fmax=sr / 2, center=False)
        return librosa.power_to_db(mel + 1e-10, ref=1.0).T.astype(np.float64)


class TaggerEmbedder:
    """The shipped tagger's penultimate-layer embedding (the offline FAD default)."""

    name = "tagger"

    def __init__(self, path: str | None = None):
        try:
            from .tagger import Tagger
        except ImportError as e:  # the tagger module belongs to the measurement estimators
            raise MusiclensError(f"the tagger embedder is not available ({e}); use --embedder mel") from e
        self.tagger = Tagger.load(path) if path else Tagger.load()
        self.name = f"tagger:{path}" if path else "tagger"

    def embed(self, y: np.ndarray, sr: int) -> np.ndarray:
        return np.asarray(self.tagger.embed(y, sr))

    def embed_batch(self, clips: list, sr: int) -> np.ndarray:
        return np.asarray(self.tagger.embed_batch(clips, sr))


class ClapEmbedder:
    """CLAP audio embeddings (`musiclens.measure.clap`: HF ClapModel or the shipped mini-CLAP)."""

    name = "clap"

    def __init__(self, path: str | None = None):
        from .clap import load_clap

        self.clap = load_clap(path)

    def embed(self, y: np.ndarray, sr: int) -> np.ndarray:
        return np.asarray(self.clap.embed_audio([y], sr)[0].cpu().numpy(), dtype=np.float64)

    def embed_batch(self, clips: list, sr: int) -> np.ndarray:
        return np.asarray(self.clap.embed_audio(clips, sr).cpu().numpy(), dtype=np.float64)


def load_embedder(name: str = "auto", path: str | None = None) -> Embedder:
    """`tagger` (the shipped tagger), `clap`, `mel` (model-free log-mel frames), or `auto`.

    `auto` is the tagger when it can be loaded, else `mel`; the embedder
    actually used is its `.name`, which every FAD result records.
    """
    if name == "mel":
        return MelEmbedder()
    if name == "tagger":
        return TaggerEmbedder(path)
    if name == "clap":
        return ClapEmbedder(path)
    if name == "auto":
        try:
            return TaggerEmbedder(path)
        except (MusiclensError, OSError):
            return MelEmbedder()
    raise MusiclensError(f"unknown embedder {name!r} (choose auto, tagger, clap or mel)")
