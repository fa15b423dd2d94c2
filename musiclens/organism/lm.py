"""Training the organism's language model: a MusicGen decoder on the corpus codes.

The decoder sees exactly what `generate()` feeds it: a BOS (= pad id) column
followed by the codes in MusicGen's delay pattern (codebook k shifted by k
steps, pads before and after). Text conditioning is the frozen MiniLM's
precomputed caption states through the trained `enc_to_dec_proj`. For
classifier-free guidance, `null_prob` of the captions are replaced: half by
zero states with an all-zero mask (what `generate(guidance_scale>1)` feeds the
unconditional branch) and half by the encoding of "" (what a user's empty
prompt produces). Loss: mean cross-entropy over the real code positions of
all codebooks. Checkpoints every few minutes, resumable; the current model is
exported as a shippable HF folder at each checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..bench_utils import machine
from ..config import check_values, option, save_config, to_dict
from ..errors import MusiclensError
from ..io import atomic_path, write_json
from ..models import organism as O
from .codes import load_codes
from .beatphase import phase_errors_degrees, phase_loss
from .rhythm import beat_contrast_loss, beat_splice_gap
from .resume import load_checkpoint, load_weights, restore_rng, rng_state
from .schedule import Clock


@dataclass
class LMTrainConfig:
    """Language-model training options (saved as RUN/lm/config.json)."""

    steps: int = option(9000, "total optimiser steps (the LR schedule spans these; --minutes may stop earlier)", ge=1)
    budget_minutes: float = option(0.0, "span the LR schedule over this many minutes of training instead of `steps`, "
                                        "and stop when they are spent (0 = by steps; see schedule.Clock)", ge=0)
    batch_size: int = option(8, "clips per step", ge=1)
    crop_frames: int = option(300, "frames per training crop (50 frames = 1 s)", ge=8)
    layers: int = option(8, "decoder layers", ge=1)
    d_model: int = option(128, "decoder width", ge=1)
    heads: int = option(4, "attention heads", ge=1)
    ffn: int = option(512, "feed-forward width", ge=1)
    dropout: float = option(0.0, "decoder dropout (0: training sees each crop only a few times)", ge=0, lt=1)
    lr: float = option(1.5e-3, "peak AdamW learning rate (linear warm-up, cosine decay to 10%)", ge=0)
    warmup: int = option(100, "LR warm-up steps", ge=0)
    weight_decay: float = option(0.01, "AdamW weight decay", ge=0)
    null_prob: float = option(0.15, "share of captions dropped for classifier-free guidance", ge=0, le=1)
    eval_every: int = option(200, "steps between held-out loss and caption-gap evaluations", ge=1)
    checkpoint_minutes: float = option(5.0, "minutes between checkpoints (+ HF export)", gt=0)
    seed: int = option(0, "random seed")
    init: str = option("", "start from this LM checkpoint (e.g. RUN/lm/ckpt.pt) or organism HF folder (e.g. the "
                           "shipped one, or RUN/tune/hf) with a fresh optimiser and schedule, instead of random "
                           "weights (the `tune` stage)")
    contrast_weight: float = option(0.0, "weight of the caption-contrast loss (0 = off): a hinge that makes a "
                                         "clip's opening less likely under its caption with one concept flipped", ge=0)
    contrast_margin: float = option(0.1, "nats per token the own caption must beat the flipped one by", ge=0)
    contrast_frames: int = option(100, "opening frames the contrast is measured on (the caption is all the "
                                       "model has there)", ge=1)
    contrast_concepts: str = option("tempo,drums,register,dynamics",
                                    "concepts whose words are flipped (see organism/sensitivity.py); instrument "
                                    "is left out (the base LM obeys it); the shipped continuation adds brightness")
    first_codebook_weight: float = option(1.0, "weight of the first codebook's tokens in the LM loss (1 = "
                                               "MusicGen's plain mean): only that codebook decides when a hit "
                                               "falls (organism/rhythm.py)", gt=0)
    beat_weight: float = option(0.0, "weight of the beat-contrast loss (0 = off): a hinge that makes a drum "
                                     "clip's continuation after a cut less likely a sixteenth note off the beat "
                                     "than on it (organism/rhythm.py)", ge=0)
    beat_margin: float = option(0.15, "nats per token the on-beat continuation must beat the off-grid ones by", ge=0)
    beat_codebooks: str = option("all", "which tokens the beat hinge compares: every codebook's, or the first "
                                        "codebook's alone (the one that decides when a hit falls)",
                                 choices=["all", "first"])
    beat_train: str = option("both", "which side of the beat hinge trains: both (off-grid continuations made "
                                     "less likely, the on-beat one likelier) or on_beat alone (the off-grid "
                                     "losses held fixed)", choices=["both", "on_beat"])
    beat_window: int = option(50, "frames after the cut the beat hinge reads; the cut falls at a random frame "
                                  "between this and 3x this", ge=1)
    beat_phase_weight: float = option(0.0, "weight of the beat-phase loss (0 = off): a training-only linear head on "
                                           "the decoder's last hidden state regresses each frame's position in the "
                                           "beat and the bar, which the corpus knows (organism/beatphase.py); the "
                                           "head is not exported", ge=0)
    contrast_flips: str = option("opposite", "which values a concept's words are flipped to: its opposite (slow <-> "
                                             "fast, none <-> rock; the shipped tune stage), or every other value "
                                             "(middle values such as neutral or light drums included)",
                                 choices=["opposite", "all"])
    input_noise: float = option(0.0, "share of the real codes the decoder reads that are replaced before the "
                                     "forward pass, while the targets stay the real codes (0 = off, as shipped): "
                                     "training on imperfect pasts against exposure bias (see corrupt_inputs)",
                                ge=0, le=0.5)
    input_noise_kind: str = option("sampled", "what replaces a corrupted code: the LM's own sample at that position "
                                              "(parallel scheduled sampling; one extra forward pass without "
                                              "gradients per step), a uniformly random code, or (stale) the same "
                                              "clip's real code 2-12 frames earlier: mistimed music",
                                   choices=["sampled", "uniform", "stale"])
    input_noise_span: int = option(1, "corrupt whole frames in runs of this many frames instead of scattered "
                                      "codes (1 = scattered; stale always replaces whole frames)",
                                   ge=1, le=100)


def delay_pattern(codes: torch.Tensor, pad: int) -> torch.Tensor:
    """codes [B, K, F] (negative = missing) -> ids [B, K, F + K]: BOS column + MusicGen's delay pattern.

    Codebook k's frame t sits at position t + k + 1; everything else is `pad`
    (which is also MusicGen's BOS / decoder-start id). This is the sequence
    `generate()` builds with `build_delay_pattern_mask`.
    """
    b, k, f = codes.shape
    ids = torch.full((b, k, f + k), pad, dtype=torch.long, device=codes.device)
    for q in range(k):
        ids[:, q, q + 1: q + 1 + f] = codes[:, q].long()
    ids[ids < 0] = pad
    return ids


def decoder_hidden(model, ids: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden state [B, T-1, D] over ids[..., :-1] (delay pattern [B, K, T]): what the
    codebook heads read, without computing their logits (`beatphase` reads it alone)."""
    b, k, t = ids.shape
    return model.decoder.model(input_ids=ids[..., :-1].reshape(b * k, t - 1),
                               encoder_hidden_states=model.enc_to_dec_proj(states),
                               encoder_attention_mask=mask).last_hidden_state


def code_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Every codebook head's logits over the decoder's last hidden state [B, T, D]: [B, K, T, V]."""
    return torch.stack([head(hidden) for head in model.decoder.lm_heads], dim=1)


def token_ce(model, ids: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
             with_hidden: bool = False, inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Teacher-forced cross-entropy of every next code: (ce [B, K, T-1], real [B, K, T-1] bool).

    ids [B, K, T] (delay pattern), states [B, L, 384], mask [B, L]. Position
    t of codebook k predicts ids[:, k, t + 1]; `real` is False where that is
    a pad (BOS, the delay pattern's corners, a crop's end), and ce is 0 there.
    With `with_hidden`, also the decoder's last hidden state [B, T-1, D] (what
    the codebooks' heads read; `beatphase` trains a head of its own on it).
    `inputs` (same shape as ids, e.g. from `corrupt_inputs`) is what the
    decoder reads instead of ids; the targets stay ids.
    The decoder body and heads are called as `MusicgenForCausalLM.forward`
    calls them, so the logits are the same.
    """
    b, k, t = ids.shape
    pad = model.config.decoder.pad_token_id
    tgt = ids[..., 1:]
    hidden = decoder_hidden(model, ids if inputs is None else inputs, states, mask)
    logits = code_logits(model, hidden)  # [B, K, T-1, V]
    real = tgt != pad
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.clamp(max=logits.shape[-1] - 1).reshape(-1),
                         reduction="none").reshape(b, k, t - 1)
    return (ce * real, real, hidden) if with_hidden else (ce * real, real)


def lm_loss(model, ids: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
            first_weight: float = 1.0, with_hidden: bool = False,
            inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Teacher-forced cross-entropy over real code positions.

    ids [B, K, T] (delay pattern), states [B, L, 384], mask [B, L].
    Returns (mean loss, per-example mean loss [B]), plus the last hidden
    state with `with_hidden`. With `first_weight` != 1 the mean counts each
    first-codebook token that many times (a weighted mean; the per-example
    figure stays plain). `inputs`: see `token_ce`.
    """
    ce, real, *hidden = token_ce(model, ids, states, mask, with_hidden, inputs)
    per = ce.sum(dim=(1, 2)) / real.sum(dim=(1, 2)).clamp(min=1)
    w = torch.ones(ce.shape[1], 1, device=ce.device, dtype=ce.dtype)
    w[0] = first_weight
    return ((ce * w).sum() / (real * w).sum().clamp(min=1), per, *hidden)


STALE_LAG = (2, 12)  # frames a "stale" span lags by: 40-240 ms, up to about half a beat at 120 BPM


def span_mask(shape: tuple[int, int, int], share: float, span: int, generator: torch.Generator,
              device=None) -> torch.Tensor:
    """[B, K, T] bool: runs of `span` whole frames (every codebook of a frame, in delay-pattern columns).

    Each frame starts a run with probability share / span, so runs cover about 1 - exp(-share) of the
    frames (runs may overlap). Codebook k's frame f sits at column f + k + 1 (`delay_pattern`).
    """
    b, k, t = shape
    starts = (torch.rand(b, t, generator=generator, device=device) < share / span).long()
    cs = torch.nn.functional.pad(starts.cumsum(-1), (span, 0))
    frames = (cs[:, span:] - cs[:, :-span]) > 0  # frame f is in a run started at f - span + 1 .. f
    out = torch.zeros(b, k, t, dtype=torch.bool, device=device)
    for q in range(k):
        out[:, q, q + 1:] = frames[:, : t - q - 1]
    return out


def corrupt_inputs(model, ids: torch.Tensor, states: torch.Tensor, mask: torch.Tensor, share: float, kind: str,
                   generator: torch.Generator, span: int = 1) -> torch.Tensor:
    """A copy of ids (delay pattern [B, K, T]) with `share` of its real codes replaced: what the decoder reads.

    Why: the LM is trained only on real pasts but generates from its own samples, and every LM measured
    loses the beat within a beat of sampling (bench/beat_decay.py, docs/organism.md): the symptom of
    exposure bias. Training against imperfect pasts, with the targets kept real, asks the decoder to
    recover the music from a past that is partly wrong.

    `kind` "sampled" replaces a code by the LM's own sample for that position, drawn from one teacher-forced
    pass without gradients over the real codes (parallel scheduled sampling, Duckworth et al. 2019; the
    conditional logits at temperature 1 with the generation config's top-k, guidance left out); "uniform"
    by a random code. BOS and the delay pattern's pads are never touched. Each real position is chosen
    independently with probability `share`; a chosen position may draw its own code again.

    With `span` > 1 (and always for "stale"), whole frames are chosen in runs of `span` frames
    (`span_mask`), as generation's own past is a run of frames, not scattered codes. "stale" fills a
    run with the same clip's real codes from a few frames earlier (a lag drawn per row from
    STALE_LAG): music that sounds right but is mistimed, as a sampled continuation that lost the beat
    is. The targets inside and after the run follow the real clock, so only the beat heard *before*
    the run can place them. The lag is only ever backwards: a forward lag would show the decoder its
    own targets. Positions whose source frame is not real keep their code.
    """
    from transformers import TopKLogitsWarper

    b, k, t = ids.shape
    pad = model.config.decoder.pad_token_id
    real = ids != pad  # (BOS is the pad id too)
    if span == 1 and kind != "stale":  # scattered codes (session 27's arms; the RNG stream is theirs)
        chosen = real & (torch.rand(ids.shape, generator=generator, device=ids.device) < share)
    else:
        chosen = real & span_mask((b, k, t), share, span, generator, ids.device)
    if kind == "stale":
        lag = torch.randint(STALE_LAG[0], STALE_LAG[1] + 1, (b,), generator=generator, device=ids.device)
        src = torch.arange(t, device=ids.device)[None, :] - lag[:, None]  # [B, T]
        fresh = torch.gather(ids, 2, src.clamp(min=0)[:, None, :].expand(b, k, t))
        chosen &= (src >= 0)[:, None, :] & (fresh != pad)  # only real source frames
    elif kind == "uniform":
        fresh = torch.randint(0, model.decoder.config.vocab_size, ids.shape, generator=generator, device=ids.device)
    elif kind == "sampled":
        with torch.no_grad():
            logits = code_logits(model, decoder_hidden(model, ids, states, mask)).float()  # [B, K, T-1, V]
        top_k = getattr(model.generation_config, "top_k", None) or logits.shape[-1]
        logits = TopKLogitsWarper(top_k)(None, logits)  # what generate() keeps; every code when top_k >= V
        probs = logits.softmax(-1).reshape(-1, logits.shape[-1])
        drawn = torch.multinomial(probs, 1, generator=generator).reshape(b, k, t - 1)
        fresh = torch.cat([ids[..., :1], drawn], dim=-1)  # position t+1's sample comes from position t's logits
    else:
        raise MusiclensError(f"unknown input-noise kind {kind!r}: choose sampled, uniform or stale")
    return torch.where(chosen, fresh, ids)


class CodeData:
    """Codes + caption states in memory, with random crops and caption dropout."""

    def __init__(self, out: Path, device: str = "cpu"):
        codes, text, rows = load_codes(out)
        self.codes = codes["codes"]
        self.lengths = codes["lengths"]
        self.states = text["states"]
        self.mask = text["mask"]
        self.empty_states = text["empty_states"][0]
        self.empty_mask = text["empty_mask"][0]
        self.rows = rows
        self.device = device
        self.split = np.array([r["split"] for r in rows])

    def indices(self, split: str) -> np.ndarray:
        return np.nonzero(self.split == split)[0]

    def crop_starts(self, idx, crop: int, rng: np.random.Generator | None, start_zero: float = 0.3) -> np.ndarray:
        """Each clip's first frame in a training crop: 0 for `start_zero` of them (openings are what the
        caption alone must set up), else uniform; always 0 without `rng` (held-out figures)."""
        out = np.zeros(len(idx), dtype=np.int64)
        for j, i in enumerate(idx):
            n = int(self.lengths[i])
            if rng is not None and n > crop and rng.random() >= start_zero:
                out[j] = int(rng.integers(0, n - crop + 1))
        return out

    def batch(self, idx, crop: int, pad: int, rng: np.random.Generator | None, null_prob: float = 0.0,
              start_zero: float = 0.3, null_kind: np.ndarray | None = None, starts: np.ndarray | None = None):
        """Delay-pattern ids [B, K, crop+K], states [B, L, 384] fp32, mask [B, L].

        `starts` (from `crop_starts`) fixes the crops' first frames, for a caller that needs them too.
        """
        idx = np.asarray(idx)
        if starts is None:
            starts = self.crop_starts(idx, crop, rng, start_zero)
        crops = torch.full((len(idx), self.codes.shape[1], crop), -1, dtype=torch.long)
        for j, (i, s) in enumerate(zip(idx, starts)):
            c = self.codes[i, :, s: s + crop].long()
            crops[j, :, : c.shape[1]] = c
        ids = delay_pattern(crops, pad)
        states = self.states[idx].float().clone()
        mask = self.mask[idx].long().clone()
        if null_kind is None and rng is not None and null_prob > 0:
            u = rng.random(len(idx))
            null_kind = np.where(u < null_prob / 2, 1, np.where(u < null_prob, 2, 0))
        if null_kind is not None:
            for j, kind in enumerate(null_kind):
                if kind == 1:  # CFG's unconditional branch: zero states, nothing attended
                    states[j] = 0
                    mask[j] = 0
                elif kind == 2:  # an empty prompt ""
                    states[j] = 0
                    mask[j] = 0
                    n = self.empty_states.shape[0]
                    states[j, :n] = self.empty_states.float()
                    mask[j, :n] = self.empty_mask.long()
        return ids.to(self.device), states.to(self.device), mask.to(self.device)


class Contrasts:
    """Every train clip's flipped captions, encoded once by the frozen MiniLM.

    Cached in `cache` (a safetensors file whose metadata holds a hash of the
    flipped captions), so a resumed run does not encode them again.
    """

    def __init__(self, data: CodeData, idx: np.ndarray, concepts: list[str], cache: Path, every: bool = False):
        import hashlib

        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        from .codes import caption_states
        from .sensitivity import flip_pairs

        per_concept = {c: flip_pairs(data.rows, idx, c, every) for c in concepts}
        self.counts = {c: len(v) for c, v in per_concept.items()}  # logged with the tune stage's progress
        pairs = [p for v in per_concept.values() for p in v]
        if not pairs:
            raise MusiclensError(f"no train caption names {', '.join(concepts)}: nothing for the contrast hinge to "
                                 "flip (check --contrast-concepts)")
        key = hashlib.sha1("\n".join(f"{i}\t{f}" for i, f in pairs).encode()).hexdigest()
        cached = False
        if cache.exists():
            with safe_open(str(cache), "pt") as fh:
                cached = (fh.metadata() or {}).get("captions_sha1") == key
        if cached:
            t = load_file(str(cache))
        else:
            st, m = caption_states([f for _, f in pairs], desc="flipped captions (MiniLM, once)")
            t = {"states": st, "mask": m}
            with atomic_path(cache, suffix=".safetensors") as tmp:
                save_file(t, str(tmp), metadata={"captions_sha1": key})
        self.states, self.mask = t["states"], t["mask"]
        self.by_clip: dict[int, list[int]] = {}
        for j, (i, _) in enumerate(pairs):
            self.by_clip.setdefault(i, []).append(j)

    def pick(self, idx, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(clips that have a flip, one random flip row for each)."""
        clips = np.array([i for i in idx if int(i) in self.by_clip], dtype=int)
        rows = np.array([rng.choice(self.by_clip[int(i)]) for i in clips], dtype=int)
        return clips, rows


def contrast_loss(model, data: CodeData, con: Contrasts, idx, rng, cfg: LMTrainConfig) -> torch.Tensor | None:
    """Hinge: mean relu(margin - (loss under flipped caption - loss under own caption)) on the clips' openings."""
    from .sensitivity import flip_gap

    clips, rows = con.pick(idx, rng)
    if len(clips) == 0:
        return None
    pad = model.config.decoder.pad_token_id
    ids, st, m = data.batch(clips, cfg.contrast_frames, pad, None)
    flipped = (con.states[rows].float().to(data.device), con.mask[rows].long().to(data.device))
    return F.relu(cfg.contrast_margin - flip_gap(model, ids, (st, m), flipped)).mean()


@torch.no_grad()
def heldout_loss(model, data: CodeData, idx: np.ndarray, crop: int, batch: int = 16, null: bool = False) -> float:
    """Mean token loss on held-out clips (first `crop` frames, real captions or the null condition)."""
    model.eval()
    pad = model.config.decoder.pad_token_id
    tot, n = 0.0, 0
    for s in range(0, len(idx), batch):
        part = idx[s: s + batch]
        kinds = np.ones(len(part), dtype=int) if null else None
        ids, st, m = data.batch(part, crop, pad, None, null_kind=kinds)
        loss, per = lm_loss(model, ids, st, m)
        tot += float(per.sum())
        n += len(part)
    model.train()
    return tot / max(n, 1)


@torch.no_grad()
def conditioning_gap(model, data: CodeData, idx: np.ndarray, crop: int, batch: int = 16) -> dict:
    """Held-out token loss with each clip's own caption, another clip's caption, and no caption.

    If the model uses the text, own < shuffled and own < null; the gaps (in
    nats per token) show how much it does, before any generation is measured.
    """
    model.eval()
    pad = model.config.decoder.pad_token_id
    rolled = np.roll(idx, 1)
    tot = {"own": 0.0, "shuffled": 0.0, "null": 0.0}
    for s in range(0, len(idx), batch):
        part, other = idx[s: s + batch], rolled[s: s + batch]
        ids, st, m = data.batch(part, crop, pad, None)
        _, st2, m2 = data.batch(other, crop, pad, None)
        _, st0, m0 = data.batch(part, crop, pad, None, null_kind=np.ones(len(part), dtype=int))
        for k, (a, b) in {"own": (st, m), "shuffled": (st2, m2), "null": (st0, m0)}.items():
            tot[k] += float(lm_loss(model, ids, a, b)[1].sum())
    out = {k: v / max(len(idx), 1) for k, v in tot.items()}
    out["gap_shuffled"] = out["shuffled"] - out["own"]
    out["gap_null"] = out["null"] - out["own"]
    out["n"] = int(len(idx))
    return out


def heldout_phase_error(model, head, data: CodeData, phase, idx: np.ndarray, crop: int) -> float:
    """Median error (degrees) of the beat-phase head on held-out clips' openings (`beatphase`; 90 = knows nothing)."""
    from .beatphase import hidden_and_targets

    hidden, tgt, mask = hidden_and_targets(model, data, phase, idx, crop)
    with torch.no_grad():
        errs = phase_errors_degrees(head, hidden, tgt, mask)
    return round(float(np.median(errs)), 2) if len(errs) else float("nan")


def export_organism(model, out: Path, extra_files: dict[str, str] | None = None) -> None:
    """Write a shippable HF folder: config + generation config + safetensors WITHOUT the MiniLM weights."""
    from safetensors.torch import save_file as sf_save

    from ..io import atomic_dir

    with atomic_dir(out, overwrite=True) as tmp, O.quiet_loading():
        model.save_pretrained(tmp)
        state = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()
                 if not k.startswith(O.TEXT_PREFIX)}
        for f in tmp.glob("model*.safetensors*"):
            f.unlink()
        sf_save(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)


def init_state(path: Path, device: str = "cpu") -> dict:
    """Decoder and projection weights to start from: a stage checkpoint, or an exported organism HF folder.

    A folder is what a lent GPU sends back (`tools/device_lm.sh`) and what ships, so it can be
    fine-tuned further without the checkpoint that stayed on the GPU machine.
    """
    if path.is_dir():
        model, _ = O.load_organism_hf(device, path)
        return {"decoder": model.decoder.state_dict(), "proj": model.enc_to_dec_proj.state_dict()}
    return load_checkpoint(path, device)


def train_lm(cfg: LMTrainConfig, out: Path, minutes: float | None, resume: bool, device: str = "cpu",
             subdir: str = "lm") -> dict:
    """Train (or continue) the LM in `out/<subdir>`; returns a summary dict.

    With `cfg.init` the weights start from that checkpoint (fine-tuning, e.g.
    the `tune` stage in `out/tune`), with a fresh optimiser and LR schedule.
    """
    from .codec import load_codec
    from .polish import polished_codec_dir

    check_values(cfg)
    if cfg.d_model % cfg.heads:
        raise MusiclensError(f"the LM width ({cfg.d_model}) must be a multiple of its heads ({cfg.heads})")
    ldir = out / subdir
    ckpt = ldir / "ckpt.pt"
    if ckpt.exists() and not resume:
        raise MusiclensError(f"{ldir} already has a checkpoint: pass --resume to continue or choose another --out")
    if cfg.init and not Path(cfg.init).exists():
        raise MusiclensError(f"checkpoint to start from not found: {cfg.init}")
    ldir.mkdir(parents=True, exist_ok=True)
    data = CodeData(out, device)
    codec = load_codec(polished_codec_dir(out), device)  # the codes come from RUN/codec either way
    torch.manual_seed(cfg.seed)
    dec_cfg = O.decoder_config(codec.config.codebook_size, cfg.layers, cfg.d_model, cfg.heads, cfg.ffn, cfg.dropout)
    model, _ = O.build_organism(codec, dec_cfg, device)
    for p in list(model.text_encoder.parameters()) + list(model.audio_encoder.parameters()):
        p.requires_grad_(False)
    params = list(model.decoder.parameters()) + list(model.enc_to_dec_proj.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(cfg.seed)
    step, trained = 0, 0.0
    if cfg.init and not (resume and ckpt.exists()):
        state = init_state(Path(cfg.init), device)
        load_weights(model.decoder, state["decoder"], Path(cfg.init), "decoder")
        load_weights(model.enc_to_dec_proj, state["proj"], Path(cfg.init), "projection")
    if resume and ckpt.exists():
        state = load_checkpoint(ckpt, device)
        load_weights(model.decoder, state["decoder"], ckpt, "decoder")
        load_weights(model.enc_to_dec_proj, state["proj"], ckpt, "projection")
        step = state["step"]
        trained = state.get("trained_seconds", 0.0)
        restore_rng(state, rng)
    save_config(cfg, ldir / "config.json")
    clock = Clock(cfg.steps, cfg.budget_minutes, trained)
    pad = model.config.decoder.pad_token_id
    train_idx = data.indices("train")
    valid_idx = data.indices("valid")[:64]
    if len(train_idx) == 0:
        raise MusiclensError("no train clips among the precomputed codes")
    log_path = ldir / "log.jsonl"
    phase = head = None
    if cfg.beat_phase_weight > 0:
        from .beatphase import PhaseTargets

        phase = PhaseTargets(data)
        head = torch.nn.Linear(cfg.d_model, 4).to(device)  # (cos, sin) of beat and bar phase; never exported
        torch.nn.init.zeros_(head.weight)  # no gradient reaches the LM until the head has learnt to read something
        torch.nn.init.zeros_(head.bias)
        opt.add_param_group({"params": list(head.parameters()), "weight_decay": 0.0})
    if resume and ckpt.exists():
        if ("phase_head" in state) != (head is not None):  # the optimiser's parameter groups would not match
            raise MusiclensError(f"{ckpt} was trained {'with' if 'phase_head' in state else 'without'} the beat-phase "
                                 f"head: resume it {'with' if 'phase_head' in state else 'without'} --beat-phase-weight")
        if head is not None:
            head.load_state_dict(state["phase_head"])
        opt.load_state_dict(state["opt"])  # after the head's group exists, so the groups match
    con = encoder = None
    if cfg.contrast_weight > 0:
        from .sensitivity import FLIPS

        concepts = [c.strip() for c in cfg.contrast_concepts.split(",") if c.strip()]
        bad = [c for c in concepts if c not in FLIPS]
        if bad:
            raise MusiclensError(f"unknown contrast concept(s) {bad}; choose from {sorted(FLIPS)}")
        con = Contrasts(data, train_idx, concepts, ldir / "contrasts.safetensors", cfg.contrast_flips == "all")
        encoder = O.load_text_encoder(device)  # for the per-concept gaps logged at each evaluation

    def checkpoint():
        state = {"decoder": model.decoder.state_dict(), "proj": model.enc_to_dec_proj.state_dict(),
                 "opt": opt.state_dict(), "step": step, "trained_seconds": clock.seconds(), **rng_state(rng),
                 "config": to_dict(cfg), **({"phase_head": head.state_dict()} if head is not None else {})}
        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)
        model.eval()
        export_organism(model, ldir / "hf")
        model.train()

    t0 = time.time()
    last = t0
    clock.start()
    model.train()
    model.text_encoder.eval()
    model.audio_encoder.eval()
    bar = tqdm(total=clock.total(), initial=step, desc=subdir, disable=None, dynamic_ncols=True)
    frames = 0
    rec: dict = {}
    while not clock.done(step):
        if minutes is not None and time.time() - t0 > minutes * 60:
            break
        lr = clock.lr(cfg.lr, step, cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.choice(train_idx, size=cfg.batch_size, replace=len(train_idx) < cfg.batch_size)
        starts = data.crop_starts(idx, cfg.crop_frames, rng)
        ids, st, m = data.batch(idx, cfg.crop_frames, pad, rng, null_prob=cfg.null_prob, starts=starts)
        inputs = None
        if cfg.input_noise > 0:
            gen = torch.Generator(device=ids.device).manual_seed(int(rng.integers(2**62)))
            inputs = corrupt_inputs(model, ids, st, m, cfg.input_noise, cfg.input_noise_kind, gen,
                                    cfg.input_noise_span)
        loss, _, *hidden = lm_loss(model, ids, st, m, cfg.first_codebook_weight, with_hidden=head is not None,
                                   inputs=inputs)
        likelihood = loss
        ploss = None
        if head is not None:
            ploss = phase_loss(head, hidden[0], *phase(idx, starts, hidden[0].shape[1], device))
            loss = loss + cfg.beat_phase_weight * ploss
        closs = contrast_loss(model, data, con, idx, rng, cfg) if con is not None else None
        if closs is not None:
            loss = loss + cfg.contrast_weight * closs  # (train_loss below is this total; train_lm_loss the LM part)
        bloss = beat_contrast_loss(model, data, idx, rng, cfg.beat_margin, cfg.beat_window,
                                   (cfg.beat_window, 3 * cfg.beat_window),
                                   first_codebook=cfg.beat_codebooks == "first",
                                   hold_off_grid=cfg.beat_train == "on_beat") if cfg.beat_weight > 0 else None
        if bloss is not None:
            loss = loss + cfg.beat_weight * bloss
        if not torch.isfinite(loss):
            raise MusiclensError(f"LM loss became {float(loss)} at step {step}: lower --lr and --resume")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        frames += cfg.batch_size * cfg.crop_frames
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            rec = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "train_loss": float(loss.detach()),
                   "lr": lr, "frames_per_s": round(frames / (time.time() - t0), 1)}
            if closs is not None:
                rec["contrast_loss"] = float(closs.detach())
            if bloss is not None:
                rec["beat_loss"] = float(bloss.detach())
            if ploss is not None:
                rec["phase_loss"] = float(ploss.detach())
                rec["phase_error_deg"] = heldout_phase_error(model, head, data, phase, valid_idx, cfg.crop_frames)
            if closs is not None or bloss is not None or ploss is not None:
                rec["train_lm_loss"] = float(likelihood.detach())  # comparable with the lm stage's train_loss
            if len(valid_idx):
                gap = conditioning_gap(model, data, valid_idx, cfg.crop_frames)
                model.train()
                rec["heldout_loss"] = gap["own"]
                # nats/token the caption is worth: the signal that prompt adherence is being learned
                rec["gap_null"], rec["gap_shuffled"] = gap["gap_null"], gap["gap_shuffled"]
                if con is not None:  # per concept: does flipping its words cost the real audio likelihood?
                    from .sensitivity import concept_sensitivity

                    sens = concept_sensitivity(model, data, valid_idx, frames=cfg.contrast_frames, encoder=encoder)
                    model.train()
                    rec["concept_gap"] = {c: v["gap"] for c, v in sens.items() if isinstance(v, dict)}
                # does the LM keep the beat's phase across a cut? (organism/rhythm.py; > 0 = it models metre)
                beat = beat_splice_gap(model, data, valid_idx)
                if beat["n"]:
                    rec["beat_gap"] = {"sixteenth_off": beat["sixteenth_off"]["gap"],
                                       "eighth_off": beat["eighth_off"]["gap"], "n": beat["n"],
                                       "sixteenth_off_first_codebook": beat["sixteenth_off"]["gap_by_codebook"][0]}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        if time.time() - last > cfg.checkpoint_minutes * 60:
            checkpoint()
            last = time.time()
    bar.close()
    checkpoint()
    summary = {"step": step, "steps": cfg.steps, "done": clock.done(step),
               "trained_minutes": round(clock.seconds() / 60, 2),
               "minutes_this_sitting": round((time.time() - t0) / 60, 2), "last": rec,
               "device": device, "machine": machine(),
               **({"contrast_pairs": con.counts} if con is not None else {})}
    write_json(ldir / "progress.json", summary)
    return summary
