"""The corpus as the organism's codec hears it: every clip encoded and decoded.

Whatever the codec erases, the language model can never generate, and a
tagger trained on clean renderings may misread what the codec keeps. A
reconstructed copy of the corpus, in the corpus format (same metadata, same
ids, codec audio), separates the two: `musiclens tagger eval` on it gives
the shipped tagger's ceiling for any generation, and `musiclens tagger
train` on it shows how much of a concept the codes still carry.

Resumable: clips already written are skipped, `metadata.jsonl` is written
last, so an interrupted run is never mistaken for a complete corpus.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import check_values, option, save_config
from ..errors import MusiclensError


@dataclasses.dataclass
class ReconstructConfig:
    """Options of `musiclens organism reconstruct`."""

    corpus: str = option("data/corpus", "rendered corpus to reconstruct")
    out: str = option("", "output corpus directory (corpus format: audio/ + metadata.jsonl)")
    codec: str = option("", "codec HF folder, or an organism folder (default: the shipped organism's codec)")
    splits: str = option("train,valid,test", "comma-separated splits to reconstruct")
    seconds: float = option(6.4, "reconstruct each clip's first S seconds (the LM's training length)", gt=0)
    limit: int = option(0, "at most this many clips per split (0 = all)", ge=0)
    batch_size: int = option(16, "clips per codec call", ge=1)
    threads: int = option(2, "torch CPU threads", ge=1)


def load_codec_any(folder: str):
    """An EncodecModel: the shipped organism's (default), or from an EnCodec or MusicGen folder."""
    from ..latent.autoencoders import load_folder, organism_codec

    if not folder:
        return organism_codec().eval()
    model, kind = load_folder(Path(folder))
    if kind != "encodec":
        raise MusiclensError(f"{folder} is a {kind} model; reconstruct needs an EnCodec (or MusicGen) folder")
    return model.eval()


@torch.no_grad()
def reconstruct(cfg: ReconstructConfig, progress: bool = True) -> dict:
    """Write OUT/audio/<id>.wav (codec output) + OUT/metadata.jsonl; returns a summary."""
    import soundfile as sf

    from ..audio import write_wav
    from ..corpus.render import load_metadata
    from ..io import write_json, write_text

    if not cfg.out:
        raise MusiclensError("--out is required")
    check_values(cfg)
    corpus, out = Path(cfg.corpus), Path(cfg.out)
    if out.resolve() == corpus.resolve():
        raise MusiclensError("--out must differ from --corpus")
    splits = [s.strip() for s in cfg.splits.split(",") if s.strip()]
    rows = load_metadata(corpus)
    chosen = []
    for s in splits:
        part = [r for r in rows if r.get("split") == s]
        chosen += part[: cfg.limit] if cfg.limit else part
    if not chosen:
        raise MusiclensError(f"no clips of split(s) {splits} in {corpus}")
    torch.set_num_threads(cfg.threads)
    codec = load_codec_any(cfg.codec)
    sr = codec.config.sampling_rate
    hop = int(np.prod(codec.config.upsampling_ratios))
    n = max(hop, int(cfg.seconds * sr) // hop * hop)
    bw = codec.config.target_bandwidths[-1]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "reconstruct_config.json")
    todo = [r for r in chosen if not (out / r["path"]).exists()]
    t0 = time.time()
    bar = tqdm(total=len(todo), desc="reconstruct", unit="clip", disable=None if progress else True)
    for s in range(0, len(todo), cfg.batch_size):
        part = todo[s: s + cfg.batch_size]
        x = torch.zeros(len(part), 1, n)
        for j, r in enumerate(part):
            try:
                a, file_sr = sf.read(corpus / r["path"], dtype="float32", always_2d=True)
            except Exception as e:  # decoder errors come in many types
                raise MusiclensError(f"cannot read {corpus / r['path']}: {e}")
            if file_sr != sr:
                raise MusiclensError(f"{r['path']}: sample rate {file_sr}, the codec needs {sr}")
            a = a.mean(axis=1)[:n]
            x[j, 0, : len(a)] = torch.from_numpy(a)
        codes = codec.encode(x, bandwidth=bw).audio_codes
        y = codec.decode(codes, [None]).audio_values[:, 0].numpy()
        for j, r in enumerate(part):
            write_wav(out / r["path"], y[j], sr)
        bar.update(len(part))
    bar.close()
    recs = [{**r, "seconds": round(min(float(r.get("seconds", n / sr)), n / sr), 3)} for r in chosen]
    write_text(out / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    summary = {"clips": len(chosen), "reconstructed_now": len(todo), "seconds_each": n / sr,
               "minutes": round((time.time() - t0) / 60, 2), "splits": splits, "codec": cfg.codec or "shipped organism"}
    write_json(out / "reconstruct_summary.json", summary)
    return summary
