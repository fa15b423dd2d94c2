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
from ..io import atomic_path, state_dict_hash, write_json
from ..models import organism as O
from .data import read_metadata


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
def reconstruct_clips(codec, wavs: list[np.ndarray]) -> list[np.ndarray]:
    """Each waveform through the codec (encode, then decode), float32 and trimmed to its own length.

    One clip per decode, so no clip's padding leaks into another's audio.
    """
    return [codec.decode(c[None, None], [None]).audio_values[0, 0, : len(w)].float().numpy()
            for c, w in zip(encode_clips(codec, wavs), wavs)]


@torch.no_grad()
def caption_states(captions: list[str], device: str = "cpu", batch: int = 64, encoder=None, desc: str = ""):
    """Frozen MiniLM last hidden states for captions -> (states [N, L, 384] fp16, mask [N, L] int8).

    `encoder`: an already loaded (model, tokenizer) pair, for callers that encode many small batches;
    its own device then wins over `device`. The states always come back on the CPU.
    `desc`: show a progress bar with this label (tens of thousands of captions take minutes on a CPU).
    """
    enc, tok = encoder if encoder is not None else O.load_text_encoder(device)
    device = next(enc.parameters()).device
    t = tok(captions, return_tensors="pt", padding=True)
    kept = getattr(enc, "kept_token_ids", None)
    if kept is not None:
        missing = set(t["input_ids"][t["attention_mask"].bool()].tolist()) - kept
        if missing:
            raise MusiclensError(f"the trimmed MiniLM lacks {len(missing)} token(s) these captions use, e.g. "
                                 f"{tok.convert_ids_to_tokens(sorted(missing)[:5])}: pack it from captions that "
                                 "include them (organism pack-lm)")
    L = t["input_ids"].shape[1]
    states = torch.zeros(len(captions), L, enc.config.hidden_size, dtype=torch.float16)
    for s in tqdm(range(0, len(captions), batch), desc=desc, unit="batch", disable=None if desc else True):
        ids = t["input_ids"][s: s + batch].to(device)
        m = t["attention_mask"][s: s + batch].to(device)
        h = enc(input_ids=ids, attention_mask=m).last_hidden_state
        states[s: s + batch] = (h * m[..., None]).half().cpu()
    return states, t["attention_mask"].to(torch.int8)


def _read_clip(path: Path, sample_rate: int, max_seconds: float | None) -> np.ndarray | None:
    """A clip's first `max_seconds` as float32 mono (the same values `load_clips` gives); None if unreadable."""
    import soundfile as sf

    frames = int(max_seconds * sample_rate) if max_seconds else -1
    try:
        a, sr = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except Exception:
        return None
    if sr != sample_rate:
        raise MusiclensError(f"{path}: sample rate {sr}, the organism needs {sample_rate}")
    return np.ascontiguousarray(a.mean(axis=1) if a.shape[1] > 1 else a[:, 0])


def _fingerprint(out: Path, rows: list[dict], max_seconds: float | None) -> str:
    """What a partial encoding depends on: the codec file, the clips and their cut."""
    import hashlib

    st = (out / "codec" / "hf" / "model.safetensors").stat()
    key = f"{st.st_size}:{st.st_mtime_ns}:{max_seconds}:" + ",".join(r["id"] for r in rows)
    return hashlib.sha1(key.encode()).hexdigest()


def encoder_key(codec) -> str:
    """Hash of what fixes the codes: the encoder and codebook tensors (not the decoder)."""
    return state_dict_hash(codec.state_dict(), ("encoder.", "quantizer."))


def precompute(corpus: Path, out: Path, device: str = "cpu", resume: bool = False,
               max_seconds: float | None = None, splits: tuple[str, ...] = ("train", "valid", "test"),
               minutes: float | None = None, chunk: int = 64) -> dict:
    """Encode every clip of the corpus with the trained codec and every caption with MiniLM.

    `max_seconds` keeps only each clip's beginning and `splits` limits the
    clips (encoding is the slow part on CPU; the LM trains on crops of a few
    seconds of train clips and tracks its loss on valid clips).

    Clips are read `chunk` at a time (only their first `max_seconds`), so memory
    holds the codes, not the corpus. Progress is saved to `codes/partial.safetensors`
    every few minutes and when `minutes` run out (summary `done: False`); with
    `resume` the next call continues from it, if codec and clips are unchanged.
    With `resume` a finished encoding is returned as it is.
    """
    from .codec import load_codec

    cdir = out / "codes"
    codec = load_codec(out / "codec" / "hf", device)
    key_now = encoder_key(codec)
    if (cdir / "index.json").exists() and resume:
        summary = json.loads((cdir / "index.json").read_text())["summary"]
        if summary.get("encoder_key", key_now) != key_now:  # (runs encoded before the key was kept: trusted)
            raise MusiclensError(f"{cdir} was encoded by another codec (RUN/codec changed since): move it away to "
                                 f"re-encode, and restart the LM stages, whose checkpoints learnt the old codes")
        return summary
    rows = [r for r in read_metadata(corpus) if r.get("split") in splits]
    if not rows:
        raise MusiclensError(f"no clips of splits {', '.join(splits)} in {corpus}")
    partial = cdir / "partial.safetensors"
    key = _fingerprint(out, rows, max_seconds)
    done_pos: list[int] = []       # positions in `rows` already encoded (unreadable clips are left out)
    codes_list: list[torch.Tensor] = []
    spent, start = 0.0, 0
    if resume and partial.exists():
        from safetensors import safe_open

        with safe_open(str(partial), "pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("key") == key:
            p = load_file(str(partial))
            codes_list = list(torch.split(p["codes"], p["lengths"].tolist(), dim=1))
            done_pos = p["positions"].tolist()
            spent, start = float(meta.get("seconds", 0.0)), int(meta["next"])
        else:
            print(f"codes: {partial} belongs to another codec or clip list; encoding from the start")

    def save_partial(next_pos: int, seconds: float) -> None:
        cdir.mkdir(parents=True, exist_ok=True)
        cat = torch.cat(codes_list, 1) if codes_list else torch.zeros(O.N_CODEBOOKS, 0, dtype=torch.int16)
        with atomic_path(partial, suffix=".safetensors") as tmp:
            save_file({"codes": cat.contiguous(),
                       "lengths": torch.tensor([c.shape[1] for c in codes_list], dtype=torch.long),
                       "positions": torch.tensor(done_pos, dtype=torch.long)}, str(tmp),
                      metadata={"key": key, "next": str(next_pos), "seconds": f"{seconds:.1f}"})

    t0, last_save = time.time(), time.time()
    bar = tqdm(total=len(rows), initial=start, desc="codes", disable=None)
    for s in range(start, len(rows), chunk):
        pos = list(range(s, min(len(rows), s + chunk)))
        wavs = [(p, _read_clip(corpus / rows[p]["path"], O.SAMPLE_RATE, max_seconds)) for p in pos]
        wavs = [(p, w) for p, w in wavs if w is not None]  # unreadable (e.g. still being written): left out
        if wavs:
            codes_list += [c.to(torch.int16) for c in encode_clips(codec, [w for _, w in wavs], device, batch=1)]
            done_pos += [p for p, _ in wavs]
        bar.update(len(pos))
        nxt = pos[-1] + 1
        if minutes is not None and time.time() - t0 >= minutes * 60 and nxt < len(rows):
            bar.close()
            save_partial(nxt, spent + time.time() - t0)
            return {"done": False, "clips_encoded": len(done_pos), "clips": len(rows)}
        if time.time() - last_save > 120 and nxt < len(rows):
            save_partial(nxt, spent + time.time() - t0)
            last_save = time.time()
    bar.close()
    if not codes_list:
        raise MusiclensError(f"no readable clips in {corpus}")
    kept = [rows[p] for p in done_pos]
    F = max(c.shape[1] for c in codes_list)
    K = codes_list[0].shape[0]
    codes = torch.full((len(codes_list), K, F), -1, dtype=torch.int16)
    lengths = torch.zeros(len(codes_list), dtype=torch.long)
    for i, c in enumerate(codes_list):
        codes[i, :, : c.shape[1]] = c
        lengths[i] = c.shape[1]
    t_codes = spent + time.time() - t0
    cdir.mkdir(parents=True, exist_ok=True)
    text_len = _write_text(cdir, [r["caption"] for r in kept], device)
    with atomic_path(cdir / "codes.safetensors") as tmp:
        save_file({"codes": codes, "lengths": lengths}, str(tmp))
    used = [int(torch.unique(codes[:, k][codes[:, k] >= 0]).numel()) for k in range(K)]
    summary = {"clips": len(kept), "splits": list(splits), "frames": int(lengths.sum()), "max_seconds": max_seconds,
               "codes_used": used, "encode_seconds": round(t_codes, 1), "text_len": text_len,
               "encoder_key": key_now, "done": True}
    write_json(cdir / "index.json", {"summary": summary, "rows": kept})
    partial.unlink(missing_ok=True)
    return summary


def _write_text(cdir: Path, captions: list[str], device: str) -> int:
    """Write `text.safetensors`: MiniLM states of `captions` and of ""; returns the padded length."""
    states, mask = caption_states(captions + [""], device, desc="captions (MiniLM)")
    with atomic_path(cdir / "text.safetensors") as tmp:
        save_file({"states": states[:-1].contiguous(), "mask": mask[:-1].contiguous(),
                   "empty_states": states[-1:].contiguous(), "empty_mask": mask[-1:].contiguous()}, str(tmp))
    return int(mask.shape[1])


def encode_captions(out: Path, device: str = "cpu") -> dict:
    """(Re)write RUN/codes/text.safetensors from the captions in RUN/codes/index.json.

    Why a step of its own: the caption states of the 12,000-clip corpus are 116 MB, the codes
    28 MB. A lent GPU call carries at most 64 MiB, so the codes travel and the states are made
    there again, by a trimmed MiniLM (`organism pack-lm`).
    """
    cdir = out / "codes"
    if not (cdir / "index.json").exists():
        raise MusiclensError(f"no precomputed codes in {cdir}: run `musiclens organism train --stage codes`")
    rows = json.loads((cdir / "index.json").read_text())["rows"]
    t0 = time.time()
    n = _write_text(cdir, [r["caption"] for r in rows], device)
    return {"captions": len(rows), "text_len": n, "seconds": round(time.time() - t0, 1)}


def load_codes(out: Path, text: bool = True) -> tuple[dict, dict | None, list[dict]]:
    """(codes tensors, text tensors, rows) written by `precompute`; text=False skips the caption states."""
    cdir = out / "codes"
    if not (cdir / "index.json").exists():
        raise MusiclensError(f"no precomputed codes in {cdir}: run `musiclens organism train --stage codes`")
    rows = json.loads((cdir / "index.json").read_text())["rows"]
    states = load_file(str(cdir / "text.safetensors")) if text else None  # ~116 MB on the shipped run
    return load_file(str(cdir / "codes.safetensors")), states, rows
