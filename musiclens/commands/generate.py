"""`musiclens generate`: text -> audio files, batched, reproducible seeds, CFG scale.

With --audio-prompt the model continues a recording instead of starting from
silence (MusicGen's continuation mode): each clip begins with the prompt as
the codec hears it, and the text steers what follows.

With --keep-from FILE the model copies some codebooks of FILE's codes
(--keep-codebooks, default the first, coarsest one) and samples only the
others, under the text. On the organism the first codebook carries the beat,
and with it much of the brightness, drums and loudness; the caption changes
what the other codebooks hold (docs/organism.md, "Where the beat is lost").

With --contrast-weight G the sampler amplifies what the long context adds
to each prediction over the last --contrast-window steps alone
(`models.contrast`); on the organism it gives no beat (docs/organism.md,
"Amplifying the long context while sampling").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import add_arguments, from_args, option, save_config
from ..errors import MusiclensError


@dataclass
class GenerateConfig:
    model: str = option("organism", help="model: organism, tiny-random, a local HF folder or hub id")
    prompt: str | None = option(None, help="one text prompt (or use --prompts)")
    prompts: str | None = option(None, help="file with one prompt per line")
    seconds: float = option(5.0, help="length of each clip in seconds", gt=0)
    seed: int = option(0, help="random seed (same seed, prompts and batch size -> same audio)")
    guidance_scale: float = option(3.0, help="classifier-free guidance scale (1 disables CFG)")
    temperature: float = option(1.0, help="sampling temperature", gt=0)
    top_k: int = option(250, help="top-k sampling (0 keeps every token)", ge=0)
    batch_size: int = option(8, help="prompts per generation batch", ge=1)
    audio_prompt: str | None = option(None, help="audio file to continue (mono-mixed, resampled); every clip "
                                                 "starts with it and --seconds counts it")
    prompt_seconds: float | None = option(None, help="use only the first S seconds of --audio-prompt")
    keep_from: str | None = option(None, help="audio file whose codes every clip copies in --keep-codebooks "
                                              "(from its start, for up to --seconds); the rest is sampled")
    keep_codebooks: str = option("0", help="with --keep-from: codebooks to copy, comma-separated "
                                           "(0 = the first, coarsest)")
    contrast_weight: float = option(0.0, help="context contrast: add G x (prediction - prediction from the last "
                                              "--contrast-window steps only); 0 = off", ge=0)
    contrast_window: int = option(8, help="with --contrast-weight: steps (frames) the local prediction sees", ge=1)
    device: str = option("cpu", help="cpu or cuda")
    out: str = option("generated", help="output folder for the WAV files")
    overwrite: bool = option(False, help="allow writing into an existing output folder")


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate audio from text prompts")
    add_arguments(p, GenerateConfig)
    p.set_defaults(func=run)


def load_prompt_args(prompt: str | None, prompts_file: str | None) -> list[str]:
    """Prompts from --prompt or --prompts (exactly one of them)."""
    from ..audio import read_prompts

    if (prompt is None) == (prompts_file is None):
        raise MusiclensError("give exactly one of --prompt or --prompts")
    return [prompt] if prompt is not None else read_prompts(prompts_file)


def _read_clip(path: str, sample_rate: int, what: str, max_seconds: float | None = None):
    """Mono samples of `path` at `sample_rate`, cut to `max_seconds`; at least 20 ms or a one-line error."""
    from ..steer.generation import read_audio

    if not Path(path).is_file():
        raise MusiclensError(f"{what} not found: {path}")
    y, _ = read_audio(path, sample_rate)
    if max_seconds is not None:
        y = y[: int(round(max_seconds * sample_rate))]
    if len(y) < sample_rate // 50:
        raise MusiclensError(f"{what} {path} is too short (under 20 ms)")
    return y


def read_audio_prompt(cfg, sample_rate: int):
    """The --audio-prompt samples at the model's rate (cropped to --prompt-seconds), or None."""
    if cfg.prompt_seconds is not None and cfg.audio_prompt is None:
        raise MusiclensError("--prompt-seconds needs --audio-prompt")
    if cfg.audio_prompt is None:
        return None
    if cfg.prompt_seconds is not None and not cfg.prompt_seconds > 0:
        raise MusiclensError("--prompt-seconds must be a positive number")
    y = _read_clip(cfg.audio_prompt, sample_rate, "audio prompt", cfg.prompt_seconds)
    if len(y) >= cfg.seconds * sample_rate:
        raise MusiclensError(f"the audio prompt ({len(y) / sample_rate:.2f} s) must be shorter than the clip "
                             f"(--seconds {cfg.seconds:g}): crop it with --prompt-seconds")
    return y


def read_keep_codes(cfg, model):
    """(codes [1, K, F'] of --keep-from's first --seconds, codebooks to keep), or (None, ())."""
    if cfg.keep_from is None:
        return None, ()
    import torch

    from ..models.keep import parse_codebooks

    books = parse_codebooks(str(cfg.keep_codebooks), model.n_codebooks)  # before the file is read
    y = _read_clip(cfg.keep_from, model.sample_rate, "--keep-from file", cfg.seconds)
    return model.encode_audio(torch.as_tensor(y, dtype=torch.float32)[None]), books


def generate_batched(model, prompts, cfg, audio_prompt=None, keep_codes=None, keep_codebooks=()) -> list:
    """Generate `prompts` in batches of cfg.batch_size; batch b uses seed cfg.seed + b.

    `audio_prompt` (mono samples at the model's rate) is continued by every
    prompt; `keep_codes` [1, K, F'] gives every prompt its `keep_codebooks`.
    """
    import torch
    from tqdm import tqdm

    audios = []
    batches = [prompts[i:i + cfg.batch_size] for i in range(0, len(prompts), cfg.batch_size)]
    for b, batch in enumerate(tqdm(batches, desc="generate", unit="batch", disable=None)):
        kept = None if keep_codes is None else keep_codes.expand(len(batch), -1, -1)
        res = model.generate(batch, seconds=cfg.seconds, seed=cfg.seed + b, guidance_scale=cfg.guidance_scale,
                             temperature=cfg.temperature, top_k=cfg.top_k, audio_prompt=audio_prompt,
                             keep_codes=kept, keep_codebooks=keep_codebooks,
                             contrast_weight=cfg.contrast_weight,
                             contrast_window=cfg.contrast_window)
        audios.extend(res.audio)
    return audios


def run(args) -> int:
    from ..audio import clip_names, write_wav
    from ..models import load_model

    cfg = from_args(GenerateConfig, args)
    prompts = load_prompt_args(cfg.prompt, cfg.prompts)
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise MusiclensError(f"output folder exists and is not empty: {out} (use --overwrite)")
    model = load_model(cfg.model, device=cfg.device)
    audio_prompt = read_audio_prompt(cfg, model.sample_rate)
    audios = generate_batched(model, prompts, cfg, audio_prompt, *read_keep_codes(cfg, model))
    out.mkdir(parents=True, exist_ok=True)
    for name, audio in zip(clip_names(prompts), audios):
        write_wav(out / name, audio, model.sample_rate)
    save_config(cfg, out / "config.json")
    print(f"wrote {len(audios)} clip(s) of {cfg.seconds:g} s to {out}")
    return 0
