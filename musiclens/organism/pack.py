"""A size-capped, compressed copy of the corpus, to train the codec on a machine that cannot render it.

Why: the GPU machines lent to this project (see docs/organism.md, "Training
the codec on a lent GPU") have no FluidSynth, no soundfont and no network,
and a call there carries at most 64 MiB, of which the repository already
takes about half. The rendered corpus is 1.3 GB of 16-bit wav (FLAC: 80 KiB
per 6.4-s clip). Ogg Opus at compression 0.8 keeps a 6.4-s clip in 45 KiB
and, by the tagger, its instrument (97.8 % of test clips against 98.0 % for
the wav; `bench/pack.py`), so about 550 clips fit one call. The codec needs only audio, not
captions or codes.

The pack is a corpus folder like any other (`audio/` + `metadata.jsonl`,
the same ids, factors and splits), so `musiclens organism train --corpus
PACK --stage codec` reads it unchanged. Train clips are drawn in a seeded
random order, so the subset spans the factors as the whole split does; the
first `--valid` valid clips come along for the held-out loss.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import check_values, option, to_dict
from ..errors import MusiclensError

FORMATS = {"opus": ("OGG", "OPUS", ".ogg"), "vorbis": ("OGG", "VORBIS", ".ogg"), "flac": ("FLAC", "PCM_16", ".flac")}


@dataclasses.dataclass
class PackConfig:
    """Options of `musiclens organism pack`."""

    corpus: str = option("data/corpus", "rendered corpus to pack")
    out: str = option("", "output corpus folder (must not exist)")
    max_mb: float = option(24.0, "stop adding clips once the audio reaches this many MiB (24: a first shard "
                                 "travels beside 35 MiB of tracked files and 2.3 MiB of wheels, under 64 MiB)", gt=0)
    seconds: float = option(6.4, "keep each clip's first S seconds (the length the LM trains on)", gt=0)
    splits: str = option("train", "comma-separated splits whose clips are packed (in a seeded random order)")
    valid: int = option(16, "also pack the first N valid clips (the codec's held-out loss reads 16)", ge=0)
    format: str = option("opus", "audio format", choices=sorted(FORMATS))
    compression: float = option(0.8, "libsndfile compression level, 0 (best quality) to 1 (smallest); opus at 0.8: "
                                     "45 KiB a 6.4-s clip, on which the tagger names the instrument of 97.8 % "
                                     "of test clips, against 98.0 % on the wav (docs/organism.md)", ge=0, le=1)
    skip: int = option(0, "skip the first N clips of the order: the next shard of a pack sent in several calls "
                          "(give it --valid 0)", ge=0)
    seed: int = option(0, "seed of the clip order")


def pack(cfg: PackConfig, progress: bool = True) -> dict:
    """Write the pack; returns its summary (also saved as OUT/pack.json)."""
    import soundfile as sf

    from ..corpus.render import load_metadata
    from ..io import atomic_dir, write_json

    if not cfg.out:
        raise MusiclensError("--out is required")
    check_values(cfg)
    corpus, out = Path(cfg.corpus), Path(cfg.out)
    if out.exists():
        raise MusiclensError(f"output exists: {out}")
    fmt, subtype, ext = FORMATS[cfg.format]
    rows = load_metadata(corpus)
    splits = [s.strip() for s in cfg.splits.split(",") if s.strip()]
    pool = [r for r in rows if r.get("split") in splits]
    if not pool:
        raise MusiclensError(f"no clips of split(s) {splits} in {corpus}")
    order = [pool[i] for i in np.random.default_rng(cfg.seed).permutation(len(pool))][cfg.skip:]
    if not order:
        raise MusiclensError(f"--skip {cfg.skip} leaves no clip of the {len(pool)} in {splits}")
    extra = [r for r in rows if r.get("split") == "valid" and "valid" not in splits][: cfg.valid]
    budget = int(cfg.max_mb * 2**20)
    written, used = [], 0
    with atomic_dir(out) as tmp:
        (tmp / "audio").mkdir()
        bar = tqdm(total=budget, unit="B", unit_scale=True, desc="pack", disable=None if progress else True)
        for r in extra + order:
            y, sr = sf.read(corpus / r["path"], dtype="float32", always_2d=True)
            y = y.mean(axis=1)[: int(round(cfg.seconds * sr))]
            path = f"audio/{r['id']}{ext}"
            sf.write(tmp / path, y, sr, format=fmt, subtype=subtype, compression_level=cfg.compression)
            size = (tmp / path).stat().st_size
            if used + size > budget and r.get("split") in splits:
                (tmp / path).unlink()
                break
            used += size
            bar.update(size)
            written.append({**r, "path": path, "seconds": round(len(y) / sr, 3)})
        bar.close()
        if not any(r.get("split") in splits for r in written):
            raise MusiclensError(f"--max-mb {cfg.max_mb} holds no clip of {splits}")
        (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in written))
        counts = {s: sum(r.get("split") == s for r in written) for s in sorted({r.get("split") for r in written})}
        summary = {"corpus": str(corpus), "clips": len(written), "per_split": counts, "of_pool": len(pool),
                   "mib": round(used / 2**20, 2), "kib_per_clip": round(used / 1024 / len(written), 1),
                   "format": cfg.format, "seconds": cfg.seconds, "config": to_dict(cfg),
                   # where the next shard starts: --skip counts clips of the packed splits only
                   "next_skip": cfg.skip + sum(r.get("split") in splits for r in written)}
        if (corpus / "config.json").exists():  # the render config, for tools that read the factors' levels
            shutil.copy(corpus / "config.json", tmp / "config.json")
        write_json(tmp / "pack.json", summary)
    return summary


def set_export_dtype(folder: str | Path, dtype: str) -> int:
    """Rewrite an HF export's `model.safetensors` with its floating tensors in `dtype`.

    `dtype` is "float16", "float32", or "lossless": float16 for each tensor that float16 holds
    exactly (every value survives the round trip), float32 for the others.

    Why: what comes back from a lent GPU call is capped (16 MiB a file, 64 MiB a call), and a
    32-filter codec is 40 MiB of float32. Halved for the trip and widened again here, it is the
    float16-rounded codec from then on: every code and figure is made from the widened copy, so
    nothing downstream sees two versions. "lossless" is how the organism ships: an LM that came
    back from the GPU in float16 is stored in float16 again (half its size, the same values),
    while a codec trained in float32 on CPU keeps float32. Returns the number of tensors converted.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from ..io import atomic_path

    if dtype not in ("float16", "float32", "lossless"):
        raise MusiclensError(f"dtype must be float16, float32 or lossless, not {dtype!r}")
    path = Path(folder) / "model.safetensors"
    if not path.exists():
        raise MusiclensError(f"no model.safetensors in {folder}")
    state = load_file(str(path))
    fixed = {"float16": torch.float16, "float32": torch.float32}.get(dtype)  # None: lossless, per tensor
    n = 0
    for k, v in state.items():
        if not v.is_floating_point():
            continue
        target = fixed
        if target is None:  # lossless: half precision only where it changes nothing
            wide = v.float()
            target = torch.float16 if torch.equal(wide.half().float(), wide) else torch.float32
        if v.dtype != target:
            state[k] = v.to(target).contiguous()
            n += 1
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    return n


@dataclasses.dataclass
class PackLMConfig:
    """Options of `musiclens organism pack-lm`."""

    run: str = option("runs/organism", "run directory whose codes (RUN/codes) and codec (RUN/codec/hf) travel")
    out: str = option("", "output folder (must not exist)")
    init: str = option("", "organism HF folder whose LM (decoder + projection) also travels, so that the lm "
                           "stage there continues it (tools/device_lm.sh passes --lm-init); e.g. the shipped "
                           "musiclens/assets/organism/musicgen")


def zero_and_gzip(folder: Path, prefixes: tuple[str, ...]) -> int:
    """Zero the tensors of FOLDER/model.safetensors whose names start with `prefixes`, and gzip it.

    Why: the lm and tune stages only read codes and never run the codec, and at home
    `polish.install_codec` puts the real codec back into their exports. So the codec travels
    as shapes (its encoder and decoder zeroed: 20 MB of float16 for the shipped one, which with
    the 12,000-clip codes pushed a pack past one device call's 64 MiB), and so does the codec
    inside an `--init` folder. Zeros gzip to almost nothing and the shapes stay, so both still
    load. `tools/device_lm.sh` gunzips them. Returns the number of tensors zeroed.
    """
    import gzip

    import torch
    from safetensors.torch import load_file, save

    path = Path(folder) / "model.safetensors"
    state = load_file(str(path))
    zeroed = [k for k in state if k.startswith(prefixes)]
    for k in zeroed:
        state[k] = torch.zeros_like(state[k])
    with gzip.open(path.with_name(path.name + ".gz"), "wb", compresslevel=6) as f:
        f.write(save(state, metadata={"format": "pt"}))
    path.unlink()
    return len(zeroed)


def pack_lm(cfg: PackLMConfig) -> dict:
    """What a lent GPU needs to train the LM and tune stages: codes, codec, and a trimmed MiniLM.

    Why trimmed: the caption states are too large to travel (116 MB for the 12,000-clip corpus,
    far more for the tune stage's flipped captions), so they are made there, and the MiniLM
    that makes them is 87 MiB. Its six transformer layers travel in float16 (21 MiB); of its
    30,522 word embeddings only the rows the corpus's captions, every flip of them
    (`sensitivity.flip_pairs`) and "" use are kept, the rest zeroed, so the gzipped folder is
    about 19 MiB. `kept_token_ids.json` lists those rows, and `caption_states` refuses a
    caption with any other token instead of encoding it wrongly. The states a float16-rounded
    MiniLM gives differ from the full one's by about 1e-3 relative: the LM trained on them is
    used with the full MiniLM here, as the LM in `generate()` always is.

    Writes OUT/codes/{codes.safetensors,index.json}.gz, OUT/codec_hf (float16, its encoder and
    decoder zeroed and the weights gzipped: `zero_and_gzip`; widen it again with
    `set_export_dtype`), OUT/minilm.tar.gz, OUT/pack.json, and with `init` OUT/init_hf (that
    folder in float16, its codec zeroed, gzipped).
    """
    import gzip
    import io
    import tarfile

    import torch
    from safetensors.torch import save_file

    from ..io import atomic_dir, write_json
    from ..models import organism as O
    from .sensitivity import FLIPS, flip_pairs

    if not cfg.out:
        raise MusiclensError("--out is required")
    run, out = Path(cfg.run), Path(cfg.out)
    cdir = run / "codes"
    for need in (cdir / "index.json", cdir / "codes.safetensors", run / "codec" / "hf" / "config.json"):
        if not need.exists():
            raise MusiclensError(f"{need} not found: run the codec and codes stages of {run} first")
    if out.exists():
        raise MusiclensError(f"output exists: {out}")
    init = Path(cfg.init) if cfg.init else None
    if init is not None and not O.is_hf_folder(init):
        raise MusiclensError(f"--init is not an organism HF folder (needs config.json and model.safetensors): {init}")
    rows = json.loads((cdir / "index.json").read_text())["rows"]
    idx = range(len(rows))
    captions = [r["caption"] for r in rows] + [""]
    for concept in FLIPS:
        for every in (False, True):
            captions += [f for _, f in flip_pairs(rows, idx, concept, every)]
    src = O.minilm_path()
    enc, tok = O.load_text_encoder("cpu")
    kept: set[int] = set(tok.all_special_ids)
    for s in range(0, len(captions), 4096):
        t = tok(captions[s: s + 4096], padding=True, return_tensors="pt")
        kept |= set(t["input_ids"][t["attention_mask"].bool()].tolist())
    state = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    emb = state["embeddings.word_embeddings.weight"]
    keep = torch.zeros(emb.shape[0], dtype=torch.bool)
    keep[sorted(kept)] = True
    emb[~keep] = 0
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    with atomic_dir(out) as tmp:
        (tmp / "codes").mkdir()
        # each row carries its beat grid's start (beatphase.start_positions), read here from the score cache,
        # which the device machine lacks, so --beat-phase-weight works there too
        from .beatphase import start_positions

        index = json.loads((cdir / "index.json").read_text())
        for r, q in zip(index["rows"], start_positions(index["rows"])):
            r["start_ql"] = None if np.isnan(q) else float(q)
        with gzip.open(tmp / "codes" / "index.json.gz", "wt", compresslevel=6) as dst_f:
            json.dump(index, dst_f)
        # gzipped: 9-bit codes in int16 and JSON shrink a third
        with open(cdir / "codes.safetensors", "rb") as src_f, \
                gzip.open(tmp / "codes" / "codes.safetensors.gz", "wb", compresslevel=6) as dst_f:
            shutil.copyfileobj(src_f, dst_f)
        shutil.copytree(run / "codec" / "hf", tmp / "codec_hf")
        set_export_dtype(tmp / "codec_hf", "float16")
        zero_and_gzip(tmp / "codec_hf", ("encoder.", "decoder."))
        if init is not None:
            (tmp / "init_hf").mkdir()
            for f in ("config.json", "generation_config.json", "model.safetensors"):
                if (init / f).exists():
                    shutil.copy(init / f, tmp / "init_hf" / f)
            set_export_dtype(tmp / "init_hf", "float16")
            zero_and_gzip(tmp / "init_hf", ("audio_encoder.",))
        mini = tmp / "minilm"
        mini.mkdir()
        for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (src / f).exists():
                shutil.copy(src / f, mini / f)
        save_file(state, str(mini / "model.safetensors"), metadata={"format": "pt"})
        (mini / "kept_token_ids.json").write_text(json.dumps(sorted(kept)))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tf:
            for f in sorted(mini.iterdir()):
                tf.add(f, arcname=f.name)
        shutil.rmtree(mini)
        (tmp / "minilm.tar.gz").write_bytes(buf.getvalue())
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        summary = {"run": str(run), "clips": len(rows), "captions_covered": len(captions),
                   "kept_tokens": len(kept), "mib": round(size / 2**20, 2),
                   "minilm_mib": round(len(buf.getvalue()) / 2**20, 2)}
        if init is not None:
            summary["init"] = str(init)
            summary["init_mib"] = round((tmp / "init_hf" / "model.safetensors.gz").stat().st_size / 2**20, 2)
        write_json(tmp / "pack.json", summary)
    return summary
