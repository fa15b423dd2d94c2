"""Extraction during generation: the residual stream of one CFG branch, step by step.

Why a second mode: teacher forcing shows the model real music; during
generation it reads its *own* samples, under text guidance, and that is where
steering vectors act. With classifier-free guidance the batch is
[conditional B ; unconditional B]; we record one branch (`--branch cond`, the
default, or `uncond`) with `hooks.capture`, keep the generated codes (a
`codes.<j>` tensor next to each clip's input ids) and write the audio to
`STORE/audio/<id>.wav`.

Rows follow the same frame mapping as teacher forcing: frame f is generation
step f + 1 (step 0 sees only BOS, plus the conditioning prefix for
MusicGen-Melody, of which we keep the last position). The stored input ids are
`decoder_input_ids(codes)`, i.e. exactly the tokens fed at each step, so a
teacher-forced pass over them with the prompt as caption reproduces the
conditional-branch rows (up to KV-cache rounding; tested).

Batches are fixed by prompt index and batch g is generated with seed
`--seed + g`, so resumed and multi-process runs produce the same audio.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import MusiclensError
from ..audio import read_prompts
from ..io import atomic_path
from . import ExtractConfig, check_output, dist_setup, fixed_groups, frame_subset, open_model, open_writer


def _write_audio(path: Path, audio: torch.Tensor, sr: int) -> None:
    import soundfile as sf

    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), audio.numpy(), sr, subtype="FLOAT", format="WAV")


@torch.no_grad()
def extract_generation(cfg: ExtractConfig) -> dict:
    """Generate from every prompt in `cfg.prompts` and store per-step residuals of one CFG branch."""
    from .. import hooks

    check_output(cfg)
    prompts = read_prompts(cfg.prompts)
    cfg_on = cfg.guidance_scale is not None and cfg.guidance_scale > 1
    if cfg.branch == "uncond" and not cfg_on:
        raise MusiclensError("--branch uncond needs classifier-free guidance (--guidance-scale > 1)")
    rank, world = dist_setup()
    model, layers = open_model(cfg, world)
    sites = [f"layer.{l}" for l in layers]
    F = model.frames_for(cfg.seconds)
    K = model.n_codebooks
    ids_all = [f"{i:05d}" for i in range(len(prompts))]
    meta = {"mode": "generation", "source": str(cfg.prompts), "branch": cfg.branch if cfg_on else "single",
            "guidance_scale": cfg.guidance_scale, "n_frames": F, "audio_dir": "audio"}
    out = Path(cfg.out)
    with open_writer(cfg, model, layers, meta) as w:
        done = w.done_clips()
        if world == 1 and (out / "audio").is_dir():  # temp files of a killed run (never renamed in)
            for tmp in (out / "audio").glob(".*.tmp.wav"):
                tmp.unlink(missing_ok=True)
        groups = [(g, list(idx)) for g, idx in fixed_groups(len(prompts), cfg.batch_size, rank, world)]
        groups = [(g, idx) for g, idx in groups if any(ids_all[i] not in done for i in idx)]
        bar = tqdm(total=sum(len(i) for _, i in groups), desc=f"generate[{rank}]" if world > 1 else "generate",
                   unit="clip", disable=None, position=rank if world > 1 else None)
        stored = 0
        for g, idx in groups:
            batch = [prompts[i] for i in idx]
            with hooks.capture(model, sites, branch=cfg.branch if cfg_on else "both") as cap:
                res = model.generate(batch, seconds=cfg.seconds, seed=cfg.seed + g,
                                     guidance_scale=cfg.guidance_scale, n_frames=F)
            codes = res.codes  # [b, K, F]
            n_rows = min(F, len(cap.records[sites[0]]) - 1)
            # step s -> last position of the call (melody's first call also holds the prefix)
            steps = {s: torch.stack([r[:, -1] for r in cap.records[s][1:n_rows + 1]], dim=1).to("cpu", w.torch_dtype)
                     for s in sites}
            dec_ids = model.decoder_input_ids(codes.to(model.device)).reshape(len(idx), K, -1).cpu()
            for j, i in enumerate(idx):
                cid = ids_all[i]
                if cid in done:
                    continue
                wav_path = out / "audio" / f"{cid}.wav"
                _write_audio(wav_path, res.audio[j], res.sample_rate)
                frames = frame_subset(n_rows, cfg.frames_per_clip, cfg.seed, i)
                acts = {l: steps[f"layer.{l}"][j, frames] for l in layers}
                w.add_clip(cid, acts, frames, dec_ids[j], index=i, extra={"codes": codes[j]},
                           meta={"prompt": prompts[i], "caption": prompts[i], "seed": cfg.seed + g, "batch": g,
                                 "audio": f"audio/{cid}.wav", "n_frames": F})
                stored += 1
            bar.update(len(idx))
        bar.close()
        rows = w.rows
    return {"rows": rows, "clips_stored_now": stored, "skipped": 0, "layers": layers, "out": cfg.out,
            "rank": rank, "world_size": world}
