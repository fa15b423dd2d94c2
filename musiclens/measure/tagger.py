"""The organism's attribute tagger: a small CNN on log-mel that hears the corpus factors.

Heads: instrument, drums, brightness, register, mode, dynamics (the corpus's
categorical factors). It is the offline judge of generated audio (does the
organism play the instrument it was asked for?) and its penultimate layer is
the offline embedding for FAD (no VGGish/CLAP weights can be downloaded here).

Design, and why:
* Log-mel (16 kHz, 64 bands up to 8 kHz, 20 ms hop) *without* per-clip
  normalisation: the dynamics head needs the absolute level. A single global
  mean/std (from the train split) is stored in the config.
* Four conv blocks + mean/max pooling over time and frequency: lengths vary
  (training crops 4 s, inference sees whole clips).
* Mode (major/minor) is a pitch-class question that a coarse log-mel CNN
  cannot answer, so a small chroma branch adds it: the clip's mean chroma is
  rotated to all 12 transpositions, a shared MLP scores each, and the max
  over rotations is kept (transposition-invariant key-profile matching).
* Training caches features once (log-mel float16 + mean chroma per clip),
  then trains with random crops; resumable per epoch; 1 CPU thread by default.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import check_values, option, save_config
from ..errors import MusiclensError

SR = 16000
N_FFT = 1024
HOP = 320
MIN_FRAMES = 16     # mel frames the CNN's four 2x time poolings need
FMAX = 8000.0
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "organism" / "tagger"


# ----------------------------------------------------------------------------- features

def log_mel(y: np.ndarray, n_mels: int = 64) -> np.ndarray:
    """[n_mels, frames] natural-log mel power of 16 kHz audio (absolute level kept)."""
    import librosa

    m = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=n_mels, fmax=FMAX,
                                       power=2.0)
    return np.log(m + 1e-8).astype(np.float32)


def mean_chroma(y: np.ndarray) -> np.ndarray:
    """12-d pitch-class profile (frame-energy weighted, sums to 1)."""
    import librosa

    c = librosa.feature.chroma_stft(y=y, sr=SR, n_fft=2048, hop_length=HOP * 2, norm=None)
    prof = c.sum(axis=1)
    return (prof / max(float(prof.sum()), 1e-8)).astype(np.float32)


def features(y, sr: int, n_mels: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel [n_mels, frames], chroma [12]) of one clip at any sample rate."""
    import librosa

    from .spectral import as_mono

    y = as_mono(y)
    if sr != SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=SR)
    if len(y) < N_FFT:
        y = np.pad(y, (0, N_FFT - len(y)))
    return log_mel(y, n_mels), mean_chroma(y)


# ----------------------------------------------------------------------------- model

class TaggerNet(nn.Module):
    """CNN over log-mel + rotation-invariant chroma branch -> embedding -> one linear head per factor."""

    def __init__(self, heads: dict[str, list[str]], n_mels: int = 64, channels: tuple = (16, 32, 64, 128),
                 embed_dim: int = 128, chroma_dim: int = 32):
        super().__init__()
        blocks, c_in = [], 1
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c
        self.conv = nn.Sequential(*blocks)
        self.chroma = nn.Sequential(nn.Linear(12, chroma_dim), nn.ReLU(), nn.Linear(chroma_dim, chroma_dim))
        self.embed = nn.Sequential(nn.Linear(2 * c_in + chroma_dim, embed_dim), nn.ReLU())
        self.heads = nn.ModuleDict({h: nn.Linear(embed_dim, len(labels)) for h, labels in heads.items()})
        rolls = torch.stack([torch.roll(torch.eye(12), r, dims=0) for r in range(12)])  # [12 rot, 12, 12]
        self.register_buffer("rolls", rolls, persistent=False)

    def embedding(self, mel: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, T] (normalised), chroma [B, 12] -> [B, embed_dim]."""
        h = self.conv(mel[:, None])                                   # [B, C, F', T']
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        chroma = chroma * 12.0 - 1.0                                   # profile (sums to 1) -> ~zero mean, unit scale
        rot = torch.einsum("rij,bj->bri", self.rolls, chroma)         # all 12 transpositions
        ch = self.chroma(rot).amax(dim=1)                             # [B, chroma_dim]
        return self.embed(torch.cat([pooled, ch], dim=1))

    def forward(self, mel: torch.Tensor, chroma: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embedding(mel, chroma)
        return {h: head(e) for h, head in self.heads.items()}


# ----------------------------------------------------------------------------- inference

class Tagger:
    """A trained tagger: `predict(y, sr) -> {head: label}`, `embed(y, sr) -> [embed_dim]`."""

    def __init__(self, net: TaggerNet, config: dict):
        self.net = net.eval()
        self.config = config
        self.heads: dict[str, list[str]] = config["heads"]
        self.n_mels = int(config["n_mels"])
        self.mel_mean = float(config["mel_mean"])
        self.mel_std = float(config["mel_std"])
        self.embed_dim = int(config["embed_dim"])

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Tagger":
        """Load a tagger folder (config.json + model.safetensors); default: the shipped one."""
        from safetensors.torch import load_file

        d = Path(path) if path else ASSET_DIR
        cfg_path, w_path = d / "config.json", d / "model.safetensors"
        if not cfg_path.exists() or not w_path.exists():
            hint = " (train one with `musiclens tagger train`)" if path is None else ""
            raise MusiclensError(f"no tagger at {d}: config.json and model.safetensors are needed{hint}")
        try:
            config = json.loads(cfg_path.read_text())
            net = TaggerNet(config["heads"], n_mels=config["n_mels"], channels=tuple(config["channels"]),
                            embed_dim=config["embed_dim"], chroma_dim=config["chroma_dim"])
            net.load_state_dict(load_file(str(w_path)))
        except (KeyError, json.JSONDecodeError, RuntimeError) as e:
            raise MusiclensError(f"invalid tagger folder {d}: {str(e).splitlines()[0]}")
        return cls(net, config)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        from ..io import atomic_path, write_json

        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "model.safetensors", suffix=".safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(tmp))
        write_json(d / "config.json", self.config)

    def _tensors(self, clips: list, sr: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = [features(y, sr, self.n_mels) for y in clips]
        short = min(f[0].shape[1] for f in feats)
        if short < MIN_FRAMES:   # four 2x poolings over time need 16 frames
            raise MusiclensError(f"a clip of {short * HOP / SR:.2f} s is too short for the tagger "
                                 f"(it needs at least {MIN_FRAMES * HOP / SR:.2f} s)")
        t_max = max(f[0].shape[1] for f in feats)
        mel = torch.full((len(feats), self.n_mels, t_max), 0.0)
        mask = torch.zeros(len(feats), t_max, dtype=torch.bool)
        for i, (m, _) in enumerate(feats):
            mel[i, :, :m.shape[1]] = torch.from_numpy((m - self.mel_mean) / self.mel_std)
            mask[i, :m.shape[1]] = True
        chroma = torch.from_numpy(np.stack([f[1] for f in feats]))
        return mel, chroma, mask

    @torch.no_grad()
    def _run(self, clips: list, sr: int, batch_size: int = 16):
        embs, logits = [], {h: [] for h in self.heads}
        for i in range(0, len(clips), batch_size):
            chunk = clips[i:i + batch_size]
            lens = {len(np.asarray(c).reshape(-1)) for c in chunk}
            # equal lengths batch together; otherwise one at a time (no padding artefacts)
            groups = [chunk] if len(lens) == 1 else [[c] for c in chunk]
            for g in groups:
                mel, chroma, _ = self._tensors(g, sr)
                e = self.net.embedding(mel, chroma)
                embs.append(e)
                for h, head in self.net.heads.items():
                    logits[h].append(head(e))
        return torch.cat(embs), {h: torch.cat(v) for h, v in logits.items()}

    def predict_proba(self, clips: list, sr: int) -> dict[str, np.ndarray]:
        """{head: [n_clips, n_labels] probabilities} for a list of clips."""
        _, logits = self._run(clips, sr)
        return {h: torch.softmax(v, dim=1).numpy() for h, v in logits.items()}

    def predict_batch(self, clips: list, sr: int) -> list[dict[str, str]]:
        """Top label per head for each clip."""
        probs = self.predict_proba(clips, sr)
        return [{h: self.heads[h][int(p[i].argmax())] for h, p in probs.items()} for i in range(len(clips))]

    def predict(self, y, sr: int) -> dict[str, str]:
        """{head: label} for one clip."""
        return self.predict_batch([y], sr)[0]

    def embed_batch(self, clips: list, sr: int) -> np.ndarray:
        """[n_clips, embed_dim] penultimate-layer embeddings (for FAD)."""
        e, _ = self._run(clips, sr)
        return e.numpy().astype(np.float64)

    def embed(self, y, sr: int) -> np.ndarray:
        """[embed_dim] penultimate-layer embedding of one clip (for FAD)."""
        return self.embed_batch([y], sr)[0]


def load_tagger(path: str | Path | None = None) -> Tagger:
    """`Tagger.load(path)`; the shipped organism tagger by default."""
    return Tagger.load(path)


# ----------------------------------------------------------------------------- training

@dataclasses.dataclass
class TaggerConfig:
    """Options of `musiclens tagger train` (saved as OUT/train_config.json)."""

    corpus: str = option(help="rendered corpus directory (musiclens corpus render)")
    out: str = option(help="output tagger directory (config.json, model.safetensors, metrics.json)")
    epochs: int = option(12, help="training epochs over the train split", ge=1)
    batch_size: int = option(32, help="clips per step", ge=1)
    lr: float = option(2e-3, help="AdamW learning rate (cosine decay)", gt=0)
    crop_seconds: float = option(4.0, help="random training crop length in seconds", gt=0)
    n_mels: int = option(64, help="mel bands", ge=8)
    channels: list[int] = option(default_factory=lambda: [16, 32, 64, 128], help="conv channels per block", ge=1)
    embed_dim: int = option(128, help="embedding (penultimate layer) width, used for FAD", ge=1)
    chroma_dim: int = option(32, help="width of the chroma (mode) branch", ge=0)
    threads: int = option(1, help="torch CPU threads", ge=1)
    seed: int = option(0, help="random seed")
    max_minutes: float = option(15.0, help="stop after this many minutes of CPU time (checkpointed; --resume continues)", gt=0)
    resume: bool = option(False, help="continue training from OUT/checkpoint.pt")
    overwrite: bool = option(False, help="replace an existing tagger in OUT")


def _load_audio(path: Path) -> np.ndarray:
    import soundfile as sf

    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SR:
        import librosa

        y = librosa.resample(y, orig_sr=sr, target_sr=SR)
    return y


def _feature_cache(corpus: Path, records: list[dict], n_mels: int, cache: Path, progress: bool = True):
    """Log-mel (float16) and chroma of every clip, computed once and stored in `cache` (npz)."""
    from tqdm import tqdm

    from ..io import atomic_path

    ids = [r["id"] for r in records]
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        if list(data["ids"]) == ids and int(data["n_mels"]) == n_mels:
            return data["mel"], data["chroma"]
    mels, chromas = [], []
    for r in tqdm(records, desc="features", unit="clip", disable=None if progress else True):
        m, c = features(_load_audio(corpus / r["path"]), SR, n_mels)
        mels.append(m)
        chromas.append(c)
    t = min(m.shape[1] for m in mels)
    mel = np.stack([m[:, :t] for m in mels]).astype(np.float16)
    chroma = np.stack(chromas)
    with atomic_path(cache, suffix=".npz") as tmp:
        np.savez(tmp, ids=np.array(ids), n_mels=n_mels, mel=mel, chroma=chroma)
    return mel, chroma


def _labels(records: list[dict], heads: dict[str, list[str]]) -> dict[str, np.ndarray]:
    out = {}
    for h, labels in heads.items():
        idx = {l: i for i, l in enumerate(labels)}
        try:
            out[h] = np.array([idx[r[h]] for r in records], dtype=np.int64)
        except KeyError as e:
            raise MusiclensError(f"corpus has an unknown {h} label {e}; expected one of {labels}")
    return out


def evaluate(tagger: Tagger, mel: np.ndarray, chroma: np.ndarray, labels: dict[str, np.ndarray],
             batch_size: int = 64) -> dict:
    """Accuracy per head (and chance = 1/number of labels) on cached features."""
    net = tagger.net.eval()
    correct = {h: 0 for h in tagger.heads}
    with torch.no_grad():
        for i in range(0, len(mel), batch_size):
            m = (torch.from_numpy(mel[i:i + batch_size].astype(np.float32)) - tagger.mel_mean) / tagger.mel_std
            out = net(m, torch.from_numpy(chroma[i:i + batch_size]))
            for h, lg in out.items():
                correct[h] += int((lg.argmax(1).numpy() == labels[h][i:i + batch_size]).sum())
    n = max(len(mel), 1)
    return {h: {"accuracy": round(correct[h] / n, 4), "chance": round(1 / len(tagger.heads[h]), 4), "n": len(mel)}
            for h in tagger.heads}


def train_tagger(cfg: TaggerConfig, progress: bool = True) -> dict:
    """Train the attribute tagger on a corpus's train split; returns metrics (test accuracy per head).

    Writes OUT/config.json + model.safetensors (a `Tagger.load`-able folder),
    OUT/metrics.json, OUT/train_config.json and OUT/checkpoint.pt (for --resume).
    """
    from tqdm import tqdm

    from ..corpus import HEADS, load_metadata
    from ..io import atomic_path, write_json

    corpus, out = Path(cfg.corpus), Path(cfg.out)
    records = load_metadata(corpus)
    check_values(cfg)  # the options' bounds, also for a config built in Python
    ckpt_path = out / "checkpoint.pt"
    if out.exists() and any(out.iterdir()) and not (cfg.resume or cfg.overwrite):
        raise MusiclensError(f"{out} already exists (use --resume or --overwrite)")
    if cfg.overwrite and not cfg.resume:
        ckpt_path.unlink(missing_ok=True)
    splits = {s: [r for r in records if r["split"] == s] for s in ("train", "valid", "test")}
    if not splits["train"]:
        raise MusiclensError(f"corpus {corpus} has no train clips")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "train_config.json")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    heads = {h: list(v) for h, v in HEADS.items()}
    feats = {s: _feature_cache(corpus, recs, cfg.n_mels, out / f".features_{s}.npz", progress)
             for s, recs in splits.items() if recs}
    labels = {s: _labels(recs, heads) for s, recs in splits.items() if recs}
    mel_tr, chroma_tr = feats["train"]
    sample = mel_tr[: min(len(mel_tr), 256)].astype(np.float32)
    config = {"heads": heads, "n_mels": cfg.n_mels, "channels": list(cfg.channels), "embed_dim": cfg.embed_dim,
              "chroma_dim": cfg.chroma_dim, "sample_rate": SR, "n_fft": N_FFT, "hop_length": HOP, "fmax": FMAX,
              "mel_mean": float(sample.mean()), "mel_std": float(sample.std() + 1e-6),
              "trained_on": str(corpus), "n_train": len(mel_tr)}
    net = TaggerNet(heads, cfg.n_mels, tuple(cfg.channels), cfg.embed_dim, cfg.chroma_dim)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(len(mel_tr) / cfg.batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    warm = max(1, total_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, total_steps) / total_steps)))
    epoch, history, elapsed = 0, [], 0.0
    if cfg.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        epoch, history, elapsed, config = ck["epoch"], ck["history"], ck["elapsed"], ck["config"]
        rng = np.random.default_rng([cfg.seed, epoch])
    tagger = Tagger(net, config)
    crop = int(cfg.crop_seconds * SR / HOP)
    crop = min(crop, mel_tr.shape[2])
    mean, std = config["mel_mean"], config["mel_std"]
    lab_tr = {h: torch.from_numpy(v) for h, v in labels["train"].items()}
    loss_fn = nn.CrossEntropyLoss()
    stopped_early = False
    while epoch < cfg.epochs:
        t0, w0 = time.process_time(), time.time()  # budget in CPU time: the machine is shared
        net.train()
        order = rng.permutation(len(mel_tr))
        total = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=None if progress else True)
        for s in bar:
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            starts = rng.integers(0, mel_tr.shape[2] - crop + 1, size=len(idx))
            m = np.stack([mel_tr[i, :, st:st + crop] for i, st in zip(idx, starts)]).astype(np.float32)
            m = (torch.from_numpy(m) - mean) / std
            out_ = net(m, torch.from_numpy(chroma_tr[idx]))
            loss = sum(loss_fn(out_[h], lab_tr[h][idx]) for h in heads)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        epoch += 1
        elapsed += time.process_time() - t0
        entry = {"epoch": epoch, "train_loss": round(total / steps_per_epoch, 4), "cpu_minutes": round(elapsed / 60, 2),
                 "wall_minutes_epoch": round((time.time() - w0) / 60, 2)}
        if "valid" in feats:
            acc = evaluate(tagger, *feats["valid"], labels["valid"])
            entry["valid"] = {h: v["accuracy"] for h, v in acc.items()}
        history.append(entry)
        with atomic_path(ckpt_path, suffix=".pt") as tmp:
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "epoch": epoch, "history": history, "elapsed": elapsed, "config": config}, tmp)
        if elapsed / 60 > cfg.max_minutes and epoch < cfg.epochs:
            stopped_early = True
            break
    tagger.save(out)
    metrics = {"epochs_done": epoch, "epochs": cfg.epochs, "train_cpu_minutes": round(elapsed / 60, 2),
               "stopped_at_time_budget": stopped_early, "threads": cfg.threads, "history": history,
               "n": {s: len(r) for s, r in splits.items()}}
    eval_split = "test" if "test" in feats else ("valid" if "valid" in feats else "train")
    metrics["eval_split"] = eval_split
    metrics["accuracy"] = evaluate(tagger, *feats[eval_split], labels[eval_split])
    write_json(out / "metrics.json", metrics)
    return metrics
