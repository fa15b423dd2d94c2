"""Can a MusicGen decoder of the organism's size keep a beat while it samples? Synthetic codes.

    python bench/beat_synthetic.py [--steps 3000] [--eval-at 500,1000,2000,3000] [--miss 0] [--false-hits 0]
                                   [--bpm 60,180] [--condition-tempo]
                                   [--layers 8] [--d-model 128] [--batch 16] [--seed 0] [--save PT]
                                   [--input-noise 0 --input-noise-kind sampled --input-noise-span 1]
                                   [--name beat_synthetic]
    python bench/beat_synthetic.py --load PT [--temperature 1] [--miss 0] [--false-hits 0] [--name NAME]

Every LM the organism has had loses a beat within a beat of its own samples
(docs/organism.md, "Why the LM loses a beat it is given" and after). This
asks whether that is the architecture (a MusicGen decoder with the delay
pattern, sinusoidal positions, ancestral sampling) or the codes. The clips
are synthetic 4-codebook code sequences of 300 frames (50 frames/s, the
organism's layout): held "notes" of random length, and on every beat of a
random tempo (60-180 BPM, random phase; the corpus's range) a "hit": codebook
0 takes one of --hit-codes reserved codes. --miss drops a share of the hits
and --false-hits puts hits on that share of the other frames, so the beat can
be made as faint in the codes as the real codes' onsets are (their on/off
ratio of onset strength is 5.4; bench/results/beat_decay_s27_shipped.json).
--bpm narrows the tempo range (one tempo when LO = HI): with one period the
decoder only has to count frames from the last hit, with many it must also
read the period from the past.

A decoder of the given shape (unconditional: the text states are one zero
vector; with --condition-tempo they carry the clip's tempo instead, as a
caption naming it exactly would) trains on fresh clips every step. At each of --eval-at it is read on
64 held-out clips, as bench/beat_decay.py reads the organism: the probability
of a hit code at the beat frames and a sixteenth after them (their ratio per
clip, median over clips), (a) teacher-forced on the real clip and (b) while
it continues the clip's first 2 s on its own (ancestral sampling, temperature
1, no top-k; --temperature). Also: the share of its sampled hits that fall
within one frame of the prompt's beat grid, against the share of frames that
do (chance). --save keeps the trained decoder; --load measures a saved one
again (other sampling settings) without training. --input-noise trains on
corrupted pasts as `musiclens organism train --lm-input-noise` does.

Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402

K, FRAMES, PROMPT, FPS = 4, 300, 100, 50
WINDOWS = ((0, 1), (0, 2), (2, 4), (4, 8))  # beats after the prompt's end, as in bench/beat_decay.py


def synthetic_clips(n: int, rng: np.random.Generator, vocab: int, hit_codes: int, miss: float = 0.0,
                    false_hits: float = 0.0, frames: int = FRAMES, bpm: tuple[float, float] = (60.0, 180.0)) -> dict:
    """{codes [n, K, frames], period [n], phase [n]}: held notes plus a hit on every beat.

    A note lasts 4-40 frames; its codebook-0 code is a non-hit code, its other
    codebooks hold a code each, and codebooks 2-3 flicker (a fresh code in
    half the frames) like the fine codebooks of real audio. A hit sets codebook
    0 to a random hit code and codebook 1 to a code of its own, for one frame.
    """
    codes = np.empty((n, K, frames), dtype=np.int64)
    period = 3000.0 / rng.uniform(bpm[0], bpm[1], size=n)
    phase = rng.uniform(0.0, 1.0, size=n) * period
    for i in range(n):
        t = 0
        while t < frames:
            d = int(rng.integers(4, 41))
            codes[i, 0, t:t + d] = rng.integers(hit_codes, vocab)
            codes[i, 1:, t:t + d] = rng.integers(0, vocab, size=(K - 1, 1))
            t += d
        flicker = rng.random((2, frames)) < 0.5
        codes[i, 2:][flicker] = rng.integers(0, vocab, size=int(flicker.sum()))
        beats = np.round(np.arange(phase[i], frames - 0.5, period[i])).astype(int)
        beats = beats[rng.random(len(beats)) >= miss]
        others = np.setdiff1d(np.arange(frames), np.round(np.arange(phase[i], frames, period[i])).astype(int))
        hits = np.concatenate([beats, others[rng.random(len(others)) < false_hits]])
        codes[i, 0, hits] = rng.integers(0, hit_codes, size=len(hits))
        codes[i, 1, hits] = vocab - 1 - codes[i, 0, hits]
    return {"codes": codes, "period": period, "phase": phase}


def grid_frames(period: float, phase: float, lo: int, hi: int, offset: float = 0.0) -> np.ndarray:
    """Frames in [lo, hi) of the beats (+ offset beats) of a grid."""
    f = np.round(np.arange(phase + offset * period, hi, period)).astype(int)
    return f[(f >= lo) & (f < hi)]


def on_off_means(p_hit: np.ndarray, period: float, phase: float, lo_beat: float, hi_beat: float,
                 offset: float = 0.25) -> tuple[float, float]:
    """Mean hit probability on the beats between lo_beat and hi_beat after the prompt, and `offset` beats from
    them (a sixteenth after them by default; nan where either is empty)."""
    span = (int(np.ceil(PROMPT + lo_beat * period - 1e-6)), int(np.ceil(min(PROMPT + hi_beat * period, FRAMES) - 1e-6)))
    on, off = grid_frames(period, phase, *span), grid_frames(period, phase, *span, offset)
    if not len(on) or not len(off):
        return float("nan"), float("nan")
    return float(p_hit[on].mean()), float(p_hit[off].mean())


def next_hit_timing(p_hit: np.ndarray, period: float, phase: float) -> list[tuple[float, float]]:
    """For each beat after the prompt, read teacher-forced from the previous beat's hit on: the chance that the
    model's next hit lands on this beat's frame or the one before, and the chance it comes earlier still.

    Why: an on/off ratio against the frame a sixteenth after a beat is inflated by the hit just before that
    frame (a decoder learns that hits do not follow each other at once). Between two real hits the past holds
    no hit, so p_hit is the decoder's hazard there, and q(t) = h(t) * prod(1 - h(s), s < t) is where it would
    put the next hit: all of it on the beat for a decoder that keeps time, spread for one that only knows
    roughly how long a beat lasts.
    """
    beats = grid_frames(period, phase, PROMPT, FRAMES)
    out = []
    for prev, nxt in zip(beats[:-1], beats[1:]):
        h = p_hit[prev + 1: nxt + 1]
        q = h * np.concatenate([[1.0], np.cumprod(1 - h)[:-1]])
        out.append((float(q[-2:].sum()), float(q[:-2].sum())))
    return out


def hazard_profile(p_hit: np.ndarray, clips: dict, frames: range = range(-15, 4)) -> dict[str, float]:
    """Mean hit probability k frames from each beat after the prompt, over clips and beats (k < 0: before it).

    The shortest period is 16.7 frames, so k = -15..3 stays between the previous beat's hit and the next one:
    the profile shows whether the probability peaks on the beat or rises slowly towards it.
    """
    vals: dict[int, list[float]] = {k: [] for k in frames}
    for i in range(len(p_hit)):
        for b in grid_frames(clips["period"][i], clips["phase"][i], PROMPT + int(np.ceil(clips["period"][i])),
                             FRAMES - frames.stop):
            for k in frames:
                vals[k].append(float(p_hit[i, b + k]))
    return {str(k): float(np.mean(v)) if v else float("nan") for k, v in vals.items()}


def build(vocab: int, layers: int, d_model: int, seed: int):
    """A MusicGen decoder (the organism's class and config helper) with the LM losses' interface."""
    import torch
    from transformers import MusicgenForCausalLM

    from musiclens.models import organism as O

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(seed)
            self.decoder = MusicgenForCausalLM(O.decoder_config(codebook_size=vocab, layers=layers, d_model=d_model,
                                                                heads=4, ffn=4 * d_model, dropout=0.1))
            self.enc_to_dec_proj = torch.nn.Linear(8, d_model)
            self.config = type("C", (), {"decoder": self.decoder.config})()
            self.generation_config = type("G", (), {"top_k": None})()  # what corrupt_inputs("sampled") reads

    return Decoder()


def hit_probability(model, ids, states, mask, hit_codes: int):
    """Teacher-forced P(codebook 0 = a hit code) for every frame: [B, F]."""
    import torch

    from musiclens.organism.lm import code_logits, decoder_hidden

    with torch.no_grad():
        logits = code_logits(model, decoder_hidden(model, ids, states, mask))  # [B, K, T-1, V]
    p = logits[:, 0].float().softmax(-1)[..., :hit_codes].sum(-1)  # position t predicts frame t
    return p[:, :FRAMES].numpy()


def continue_clips(model, ids, states, mask, hit_codes: int, seed: int, temperature: float = 1.0):
    """Sample every code after the prompt (ancestral at `temperature`, 0 = greedy), KV-cached; returns (codes
    [B, K, F], the model's hit probability for codebook 0 at every frame, before the temperature [B, F])."""
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    from musiclens.organism.lm import code_logits

    g = torch.Generator().manual_seed(seed)
    b, k, t_all = ids.shape
    out = ids.clone()
    p_hit = torch.zeros(b, FRAMES)
    dec = model.decoder.model.decoder
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    enc = model.enc_to_dec_proj(states)
    with torch.no_grad():
        for t in range(t_all - 1):
            h = dec(input_ids=out[..., t:t + 1].reshape(b * k, 1), encoder_hidden_states=enc,
                    encoder_attention_mask=mask, cache=cache, use_cache=True).last_hidden_state
            logits = code_logits(model, h)[:, :, 0].float()  # [B, K, V]
            if t < FRAMES:
                p_hit[:, t] = logits[:, 0].softmax(-1)[:, :hit_codes].sum(-1)
            for q in range(k):
                frame = t - q
                if PROMPT <= frame < FRAMES:
                    if temperature == 0:
                        out[:, q, t + 1] = logits[:, q].argmax(-1)
                    else:
                        probs = (logits[:, q] / temperature).softmax(-1)
                        out[:, q, t + 1] = torch.multinomial(probs, 1, generator=g)[:, 0]
    codes = torch.stack([out[:, q, q + 1:q + 1 + FRAMES] for q in range(k)], dim=1)
    return codes.numpy(), p_hit.numpy()


def tempo_states(period: np.ndarray, condition: bool):
    """The 'text states' [B, 1, 8] the decoder cross-attends to: zeros, or (with `condition`) the tempo.

    x = log(BPM / 60) / log(3) is 0 at 60 BPM and 1 at 180; the states are x, sin and cos of x at three
    scales, and a constant, so the decoder's single cross-attention key can carry the tempo to every
    frame the way a caption that named it exactly would.
    """
    import torch

    if not condition:
        return torch.zeros(len(period), 1, 8)
    x = np.log(3000.0 / np.asarray(period) / 60.0) / np.log(3.0)
    feats = [x] + [f(np.pi * k * x) for k in (1, 2, 4) for f in (np.sin, np.cos)] + [np.ones_like(x)]
    return torch.as_tensor(np.stack(feats, -1)[:, None, :], dtype=torch.float32)


def evaluate(model, clips: dict, hit_codes: int, seed: int, temperature: float = 1.0,
             condition: bool = False) -> dict:
    """The teacher-forced and own-past on/off ratios per window, and the sampled hits' grid share."""
    import torch

    from musiclens.organism.lm import delay_pattern

    model.eval()
    codes = torch.as_tensor(clips["codes"])
    pad = model.config.decoder.pad_token_id
    ids = delay_pattern(codes, pad)
    states, mask = tempo_states(clips["period"], condition), torch.ones(len(codes), 1, dtype=torch.long)
    real = hit_probability(model, ids, states, mask, hit_codes)
    sampled, own = continue_clips(model, ids, states, mask, hit_codes, seed, temperature)
    out = {}
    for name, p in (("real_past", real), ("own_past", own),
                    ("sampled_codes", (sampled[:, 0] < hit_codes).astype(float)),
                    ("real_codes", (clips["codes"][:, 0] < hit_codes).astype(float))):
        out[name] = {}
        for lo, hi in WINDOWS:
            # against a sixteenth after the beat, and before it, where no real hit has just been (as beat_decay.py)
            for key, offset in (("beats", 0.25), ("on_before_beats", -0.25)):
                means = np.array([on_off_means(p[i], clips["period"][i], clips["phase"][i], lo, hi, offset)
                                  for i in range(len(p))])
                out[name][f"{key}_{lo}_to_{hi}"] = float(np.nanmedian(means[:, 0] / np.maximum(means[:, 1], 1e-9)))
                if offset > 0:
                    out[name][f"mean_on_off_beats_{lo}_to_{hi}"] = [float(v) for v in np.nanmean(means, axis=0)]
    timing = np.array([t for i in range(len(real)) for t in next_hit_timing(real[i], clips["period"][i],
                                                                            clips["phase"][i])])
    out["real_past_next_hit"] = {"beats": len(timing), "on_the_beat_or_one_before": float(timing[:, 0].mean()),
                                 "earlier": float(timing[:, 1].mean())}
    out["real_past_by_frames_from_beat"] = hazard_profile(real, clips)
    on_grid, hits, chance = 0, 0, []
    for i in range(len(sampled)):
        near = np.zeros(FRAMES, bool)
        for d in (-1, 0, 1):
            f = grid_frames(clips["period"][i], clips["phase"][i], 0, FRAMES) + d
            near[f[(f >= 0) & (f < FRAMES)]] = True
        h = np.flatnonzero(sampled[i, 0, PROMPT:] < hit_codes) + PROMPT
        on_grid += int(near[h].sum())
        hits += len(h)
        chance.append(near[PROMPT:].mean())
    out["sampled_hits"] = {"n": hits, "real_n": int((clips["codes"][:, 0, PROMPT:] < hit_codes).sum()),
                           "share_on_grid": on_grid / max(hits, 1), "chance": float(np.mean(chance))}
    model.train()
    return out


def summary_line(label: str, ev: dict) -> str:
    return (f"{label}: real past {ev['real_past']['beats_0_to_2']:.2f} (against the frame before: "
            f"{ev['real_past']['on_before_beats_0_to_2']:.2f})  own past {ev['own_past']['beats_0_to_1']:.2f}"
            f" / {ev['own_past']['beats_2_to_4']:.2f} / {ev['own_past']['beats_4_to_8']:.2f}  sampled hits on grid "
            f"{ev['sampled_hits']['share_on_grid']:.2f} (chance {ev['sampled_hits']['chance']:.2f})  next hit on the "
            f"beat {ev['real_past_next_hit']['on_the_beat_or_one_before']:.2f}, earlier "
            f"{ev['real_past_next_hit']['earlier']:.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--eval-at", default="500,1000,2000,3000", help="steps to measure at (comma-separated)")
    ap.add_argument("--miss", type=float, default=0.0, help="share of beats without a hit (0-0.9)")
    ap.add_argument("--false-hits", type=float, default=0.0, help="share of other frames with a hit (0-0.5)")
    ap.add_argument("--bpm", default="60,180", help="tempo range LO,HI (within 60-180; LO = HI: one tempo)")
    ap.add_argument("--vocab", type=int, default=64, help="codebook size (16-1024)")
    ap.add_argument("--hit-codes", type=int, default=8, help="codes reserved for hits (1 to vocab/4)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--input-noise", type=float, default=0.0, help="train on corrupted pasts: this share of the "
                                                                   "codes the decoder reads is replaced (0-0.5; "
                                                                   "organism.lm.corrupt_inputs)")
    ap.add_argument("--input-noise-kind", default="sampled", choices=["sampled", "uniform", "stale"])
    ap.add_argument("--input-noise-span", type=int, default=1, help="replace whole frames in runs of this many "
                                                                    "(1-100)")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the continuations "
                                                                   "(0 = greedy; 0-2)")
    ap.add_argument("--condition-tempo", action="store_true", help="give the decoder each clip's tempo through "
                                                                   "its text states (cross-attention)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None, help="also save the trained decoder's state dict here (a .pt file)")
    ap.add_argument("--load", default=None, help="measure this saved decoder (--save of an earlier run, same "
                                                 "shape) instead of training one")
    ap.add_argument("--init", default=None, help="start training from this saved decoder (same shape)")
    ap.add_argument("--name", default="beat_synthetic")
    a = ap.parse_args(argv)
    try:
        eval_at = sorted({int(s) for s in a.eval_at.split(",") if s.strip()})
    except ValueError:
        eval_at = []
    try:
        bpm = tuple(float(v) for v in a.bpm.split(","))
    except ValueError:
        bpm = ()
    problems = [msg for bad, msg in (
        (a.steps < 1, "--steps must be at least 1"),
        (not a.load and (not eval_at or eval_at[0] < 0 or eval_at[-1] > a.steps),
         "--eval-at: steps between 0 and --steps"),
        (not 0 <= a.miss <= 0.9, "--miss must be in [0, 0.9]"),
        (not 0 <= a.false_hits <= 0.5, "--false-hits must be in [0, 0.5]"),
        (len(bpm) != 2 or not 60 <= bpm[0] <= bpm[1] <= 180, "--bpm: LO,HI with 60 <= LO <= HI <= 180"),
        (not 16 <= a.vocab <= 1024, "--vocab must be in [16, 1024]"),
        (not 1 <= a.hit_codes <= a.vocab // 4, "--hit-codes must be between 1 and vocab/4"),
        (not 1 <= a.layers <= 24, "--layers must be in [1, 24]"),
        (a.d_model < 16 or a.d_model % 4, "--d-model must be a multiple of 4, at least 16"),
        (not 1 <= a.batch <= 512, "--batch must be in [1, 512]"),
        (not 0 < a.lr <= 0.1, "--lr must be in (0, 0.1]"),
        (not 0 <= a.temperature <= 2, "--temperature must be in [0, 2]"),
        (not 0 <= a.input_noise <= 0.5, "--input-noise must be in [0, 0.5]"),
        (not 1 <= a.input_noise_span <= 100, "--input-noise-span must be in [1, 100]"),
        (a.load is not None and not Path(a.load).is_file(), f"--load: no such file {a.load}"),
        (a.init is not None and not Path(a.init).is_file(), f"--init: no such file {a.init}"),
    ) if bad]
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 2

    import torch
    from tqdm import tqdm

    from musiclens.organism.lm import corrupt_inputs, delay_pattern, lm_loss

    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    held = synthetic_clips(64, np.random.default_rng(10_000 + a.seed), a.vocab, a.hit_codes, a.miss, a.false_hits,
                           bpm=bpm)
    model = build(a.vocab, a.layers, a.d_model, a.seed)
    evals, losses, t0 = {}, [], time.time()
    config = {k: v for k, v in vars(a).items() if k not in ("name", "save")}
    for flag, path in (("--load", a.load), ("--init", a.init)):
        try:
            if path:
                model.load_state_dict(torch.load(path))
        except Exception as e:  # a wrong shape (RuntimeError), not a torch file (UnpicklingError), ...
            print(f"error: {flag} {path}: not a decoder of this shape ({str(e).splitlines()[0]})", file=sys.stderr)
            return 2
    if a.load:
        evals["loaded"] = evaluate(model, held, a.hit_codes, a.seed, a.temperature, a.condition_tempo)
        print(summary_line("loaded", evals["loaded"]), flush=True)
        config = {k: v for k, v in config.items() if k not in ("steps", "eval_at", "lr", "batch") and
                  not k.startswith("input_noise")}
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
        warm = min(200, a.steps // 10 + 1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, a.steps) / a.steps)))
        pad = model.config.decoder.pad_token_id
        mask = torch.ones(a.batch, 1, dtype=torch.long)
        noise = torch.Generator().manual_seed(a.seed + 1)
        if 0 in eval_at:
            evals["0"] = evaluate(model, held, a.hit_codes, a.seed, a.temperature, a.condition_tempo)
        for step in tqdm(range(1, a.steps + 1), desc="train", disable=None):
            clips = synthetic_clips(a.batch, rng, a.vocab, a.hit_codes, a.miss, a.false_hits, bpm=bpm)
            ids = delay_pattern(torch.as_tensor(clips["codes"]), pad)
            states = tempo_states(clips["period"], a.condition_tempo)
            inputs = (corrupt_inputs(model, ids, states, mask, a.input_noise, a.input_noise_kind, noise,
                                     a.input_noise_span) if a.input_noise > 0 else None)
            loss, _ = lm_loss(model, ids, states, mask, inputs=inputs)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if step in eval_at:
                ev = evaluate(model, held, a.hit_codes, a.seed, a.temperature, a.condition_tempo)
                ev["train_loss"] = float(np.mean(losses[-50:]))
                ev["seconds"] = round(time.time() - t0, 1)
                evals[str(step)] = ev
                print(summary_line(f"step {step}: loss {ev['train_loss']:.3f}", ev), flush=True)
        if a.save:
            torch.save(model.state_dict(), a.save)
    write_result(a.name, {"config": config, "frames": FRAMES, "prompt_frames": PROMPT, "held_out_clips": 64,
                          "real_codes_on_off": evals[list(evals)[-1]]["real_codes"] if evals else None,
                          "evals": evals, "seconds": round(time.time() - t0, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
