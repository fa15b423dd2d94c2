"""Precomputing what the language model trains on: codec codes and caption states.

Both inputs of the LM are fixed during its training (the codec is frozen
once trained, the MiniLM text encoder is frozen by design), so each is
computed once for the whole corpus instead of once per step:

* `codes.safetensors`: `codes` int16 [N, 4, F] (-1 past a clip's end),
  `lengths` int64 [N];
* `text.safetensors`: MiniLM `states` float16 [N, L, 384] and `mask` int8
  [N, L] of every clip's caption, plus `empty_states` / `empty_mask`, the
  encoding of the empty caption "";
* `index.json`: clip ids, splits, captions and the factor metadata, row-aligned.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import MusiclensError
from ..io import atomic_path, write_json
from ..models import organism as O
from .data import load_clips, read_metadata


@torch.no_grad()
def encode_clips(codec, wavs: list[np.ndarray], device: str = "cpu", batch: int = 8) -> list[torch.Tensor]:
    """Codes [K, F] of each waveform (float32 arrays at the codec's rate), via HF `encode`."""
    hop = int(np.prod(codec.config.upsampling_ratios))
    bw = codec.config.target_bandwidths[-1]
    out = []
    order = np.argsort([len(w) for w in wavs])
    result: dict[int, torch.Tensor] = {}
    for s in range(0, len(order), batch):
        idx = order[s: s + batch]
        n = max(len(wavs[i]) for i in idx)
        n = int(np.ceil(n / hop)) * hop
        x = torch.zeros(len(idx), 1, n)
        for j, i in enumerate(idx):
            x[j, 0, : len(wavs[i])] = torch.from_numpy(wavs[i])
        codes = codec.encode(x.to(device), bandwidth=bw).audio_codes[0]  # [B, K, F]
        for j, i in enumerate(idx):
            f = int(np.ceil(len(wavs[i]) / hop))
            result[int(i)] = codes[j, :, :f].cpu()
    for i in range(len(wavs)):
        out.append(result[i])
    return out


@torch.no_grad()
def caption_states(captions: list[str], device: str = "cpu", batch: int = 64, encoder=None):
    """Frozen MiniLM last hidden states for captions -> (states [N, L, 384] fp16, mask [N, L] int8).

    `encoder`: an already loaded (model, tokenizer) pair, for callers that encode many small batches.
    """
    enc, tok = encoder if encoder is not None else O.load_text_encoder(device)
    t = tok(captions, return_tensors="pt", padding=True)
    L = t["input_ids"].shape[1]
    states = torch.zeros(len(captions), L, enc.config.hidden_size, dtype=torch.float16)
    for s in range(0, len(captions), batch):
        ids = t["input_ids"][s: s + batch].to(device)
        m = t["attention_mask"][s: s + batch].to(device)
        h = enc(input_ids=ids, attention_mask=m).last_hidden_state
        states[s: s + batch] = (h * m[..., None]).half().cpu()
    return states, t["attention_mask"].to(torch.int8)


def precompute(corpus: Path, out: Path, device: str = "cpu", resume: bool = False,
               max_seconds: float | None = None, splits: tuple[str, ...] = ("train", "valid", "test")) -> dict:
    """Encode every clip of the corpus with the trained codec and every caption with MiniLM.

    `max_seconds` keeps only each clip's beginning and `splits` limits the
    clips (encoding is the slow part on CPU; the LM trains on crops of a few
    seconds of train clips and tracks its loss on valid clips).
    """
    from .codec import load_codec

    cdir = out / "codes"
    if (cdir / "index.json").exists() and resume:
        return json.loads((cdir / "index.json").read_text())["summary"]
    codec = load_codec(out / "codec" / "hf", device)
    rows = read_metadata(corpus)
    t0 = time.time()
    clips = load_clips(corpus, tuple(splits), O.SAMPLE_RATE, rows=rows)
    if len(clips) == 0:
        raise MusiclensError(f"no clips found in {corpus}")
    codes_list = []
    bar = tqdm(total=len(clips), desc="codes", disable=None)
    chunk = 64
    for s in range(0, len(clips), chunk):
        wavs = [clips.wav(i) for i in range(s, min(len(clips), s + chunk))]
        if max_seconds:
            wavs = [w[: int(max_seconds * clips.sample_rate)] for w in wavs]
        codes_list += encode_clips(codec, wavs, device, batch=1)
        bar.update(min(chunk, len(clips) - s))
    bar.close()
    F = max(c.shape[1] for c in codes_list)
    K = codes_list[0].shape[0]
    codes = torch.full((len(codes_list), K, F), -1, dtype=torch.int16)
    lengths = torch.zeros(len(codes_list), dtype=torch.long)
    for i, c in enumerate(codes_list):
        codes[i, :, : c.shape[1]] = c.to(torch.int16)
        lengths[i] = c.shape[1]
    t_codes = time.time() - t0
    captions = [r["caption"] for r in clips.rows]
    states, mask = caption_states(captions + [""], device)
    cdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(cdir / "codes.safetensors") as tmp:
        save_file({"codes": codes, "lengths": lengths}, str(tmp))
    with atomic_path(cdir / "text.safetensors") as tmp:
        save_file({"states": states[:-1].contiguous(), "mask": mask[:-1].contiguous(),
                   "empty_states": states[-1:].contiguous(), "empty_mask": mask[-1:].contiguous()}, str(tmp))
    used = [int(torch.unique(codes[:, k][codes[:, k] >= 0]).numel()) for k in range(K)]
    summary = {"clips": len(clips), "splits": list(splits), "frames": int(lengths.sum()), "max_seconds": max_seconds, "codes_used": used,
               "encode_seconds": round(t_codes, 1), "text_len": int(mask.shape[1])}
    write_json(cdir / "index.json", {"summary": summary, "rows": clips.rows})
    return summary


def load_codes(out: Path, text: bool = True) -> tuple[dict, dict | None, list[dict]]:
    """(codes tensors, text tensors, rows) written by `precompute`; text=False skips the caption states."""
    cdir = out / "codes"
    if not (cdir / "index.json").exists():
        raise MusiclensError(f"no precomputed codes in {cdir}: run `musiclens organism train --stage codes`")
    rows = json.loads((cdir / "index.json").read_text())["rows"]
    states = load_file(str(cdir / "text.safetensors")) if text else None  # ~116 MB on the shipped run
    return load_file(str(cdir / "codes.safetensors")), states, rows
