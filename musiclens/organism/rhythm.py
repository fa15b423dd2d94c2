"""Does the language model keep a beat? A teacher-forced splice test.

`measure.pulse_clarity` says *that* the organism's generations have no steady
beat. It cannot say why: an LM that never learnt metre and one that learnt it
but loses it while sampling both produce beatless audio. This test asks the
LM itself, on real clips, without sampling.

A held-out clip with drums at B BPM has a beat period of P = 50·60/B frames.
Its codes are cut at frame `t0` and continued from frame t0 + j, and the LM's
teacher-forced loss is read on the `window` frames after the cut:

* j = 2P keeps the beat's phase: two beats on, every hit stays on the grid
  and the backbeat (snare or side-stick on beats 2 and 4) where it was due,
  though not every kick (the corpus's patterns differ between bar halves);
* j = 1.75P or 2.25P (a sixteenth note off the grid) and j = 1.5P or 2.5P
  (an eighth off) skip the same amount of music on average but put every
  later drum hit off the grid that the first t0 frames set up.

Every variant has a cut, so the shock of a splice is common to all of them;
only the phase differs. An LM that models the pulse finds the off-grid
continuations less likely (gap > 0, nats per token). One that models only
the local sound finds them alike (gap ≈ 0). The figure is logged during LM
training (`lm.train_lm`), so a long run shows when rhythm is learnt, before
anything is generated.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.organism import FRAME_RATE

# variant -> jumps in beats; "in_phase" is the reference the others are compared with
JUMPS = {"in_phase": (2.0,), "sixteenth_off": (1.75, 2.25), "eighth_off": (1.5, 2.5)}


def beat_frames(bpm: float) -> float:
    """The beat period in codec frames."""
    return FRAME_RATE * 60.0 / bpm


def eligible(data, idx: np.ndarray, t0: int, window: int, drums_only: bool = True,
             jumps: tuple[float, ...] = ()) -> np.ndarray:
    """The clips of `idx` that have a known tempo, drums (if asked), and codes for the longest jump.

    `jumps` (in beats) defaults to every jump of `JUMPS`.
    """
    longest_beats = max(jumps or [j for v in JUMPS.values() for j in v])
    keep = []
    for i in idx:
        row = data.rows[int(i)]
        if "bpm" not in row or (drums_only and row.get("drums", "none") == "none"):
            continue
        longest = int(round(longest_beats * beat_frames(row["bpm"])))
        if int(data.lengths[int(i)]) >= t0 + longest + window:
            keep.append(int(i))
    return np.array(keep, dtype=int)


def _spliced(codes: torch.Tensor, t0: int, jump: int, window: int) -> torch.Tensor:
    """codes [K, F] -> [K, t0 + window]: the first t0 frames, then frames t0+jump ... t0+jump+window-1."""
    return torch.cat([codes[:, :t0], codes[:, t0 + jump: t0 + jump + window]], dim=1)


def _variants(data, clips: np.ndarray, jumps: list[float], t0: int, window: int, pad: int):
    """Every clip spliced at every jump (in beats), in the delay pattern, with its own caption.

    Returns ids [n * len(jumps), K, t0 + window + K], states, mask, and the
    weight [same, K, t0 + window + K - 1] of the predicted codes that belong
    to the frames after the cut (the loss is read there alone).
    """
    from .lm import delay_pattern

    crops = [_spliced(data.codes[int(i)].long(), t0, int(round(j * beat_frames(data.rows[int(i)]["bpm"]))), window)
             for i in clips for j in jumps]
    codes = torch.stack(crops).to(data.device)  # [n * variants, K, t0 + window]
    after = torch.zeros_like(codes)
    after[..., t0:] = 1  # the frames after the cut, carried through the same delay pattern
    rows = torch.as_tensor(np.repeat(np.asarray(clips), len(jumps)))
    return (delay_pattern(codes, pad), data.states[rows].float().to(data.device),
            data.mask[rows].long().to(data.device), delay_pattern(after, 0)[..., 1:].float())


def _window_loss(model, ids, states, mask, weight, by_codebook: bool = False) -> torch.Tensor:
    """Each sequence's mean token loss over the weighted (after-the-cut) positions: [B], or [B, K] by codebook."""
    from .lm import token_ce

    ce, real = token_ce(model, ids, states, mask)
    w = weight * real
    if by_codebook:
        return (ce * w).sum(dim=2) / w.sum(dim=2).clamp(min=1)
    return (ce * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2)).clamp(min=1)


@torch.no_grad()
def splice_losses(model, data, idx: np.ndarray, t0: int = 100, window: int = 50, batch: int = 16,
                  by_codebook: bool = False) -> dict:
    """Per variant of `JUMPS`: each clip's mean token loss on the `window` frames after the cut [n].

    `data` is an `lm.CodeData`, `idx` clips from `eligible`. Each clip keeps
    its own caption. A variant with two jumps averages them per clip. With
    `by_codebook`, [n, K]: the loss of each codebook's tokens alone (every
    codebook has `window` tokens after the cut, so their mean is the [n] figure).
    """
    was_training = model.training
    model.eval()
    pad = model.config.decoder.pad_token_id
    names = [(name, j) for name, jumps in JUMPS.items() for j in jumps]
    K = int(data.codes.shape[1])
    out = {name: np.zeros((len(idx), K)) for name in JUMPS}
    for s in range(0, len(idx), batch):
        part = idx[s: s + batch]
        per = _window_loss(model, *_variants(data, part, [j for _, j in names], t0, window, pad),
                           by_codebook=True).cpu().numpy()
        per = per.reshape(len(part), len(names), K)
        for v, (name, _) in enumerate(names):
            out[name][s: s + len(part)] += per[:, v] / len(JUMPS[name])
    model.train(was_training)
    return out if by_codebook else {name: v.mean(axis=1) for name, v in out.items()}


def beat_contrast_loss(model, data, idx, rng: np.random.Generator, margin: float, window: int = 50,
                       t0_range: tuple[int, int] = (50, 150), first_codebook: bool = False,
                       hold_off_grid: bool = False) -> torch.Tensor | None:
    """Training hinge: mean relu(margin - (off-grid loss - in-phase loss)) over the batch's clips with drums.

    The cut falls at a random frame in `t0_range` each step; off-grid is the
    mean of the two sixteenth-note jumps. It shows the LM, clip by clip, that
    a drum hit off the grid the music has set up must be less likely than
    one on it, the way the caption hinge (`lm.contrast_loss`) shows it that
    a wrong tempo word must make the real audio less likely. None when no
    clip of the batch qualifies.

    With `first_codebook`, the losses are those of codebook 0's tokens alone:
    under the delay pattern only that codebook has to know when a hit is due
    (`beat_splice_gap`), so the hinge's margin is spent where the beat is lost.

    With `hold_off_grid`, the off-grid losses are constants: the hinge can then only be met by
    making the on-beat continuation likelier, not by making every continuation after an
    irregular-looking cut unlikely (which the free hinge did in session 23). Neither gave the
    generations a beat: both train on spliced sequences, which teaches the LM to follow what
    comes after a cut rather than keep the phase set before it (docs/organism.md, "Sampling
    settings, and a beat hinge on the first codebook").
    """
    t0 = int(rng.integers(t0_range[0], t0_range[1] + 1))
    jumps = (JUMPS["in_phase"][0], *JUMPS["sixteenth_off"])
    clips = eligible(data, np.asarray(idx), t0, window, jumps=jumps)
    if len(clips) == 0:
        return None
    pad = model.config.decoder.pad_token_id
    per = _window_loss(model, *_variants(data, clips, jumps, t0, window, pad), by_codebook=first_codebook)
    per = (per[:, 0] if first_codebook else per).reshape(len(clips), len(jumps))
    off = per[:, 1:].mean(dim=1)
    return torch.relu(margin - ((off.detach() if hold_off_grid else off) - per[:, 0])).mean()


def beat_splice_gap(model, data, idx: np.ndarray, t0: int = 100, window: int = 50, batch: int = 16,
                    drums_only: bool = True) -> dict:
    """How much less likely the LM finds an off-beat continuation than an on-beat one.

    Returns {n, loss: {variant: mean}, and per off-grid variant: gap (mean
    loss minus in-phase, nats/token), share_positive, p_sign (one-sided sign
    test that the gap is positive), gap_by_codebook (the gap of each
    codebook's tokens alone)}. Empty clips list -> {"n": 0}.

    Why by codebook: under the delay pattern, codebook k of a frame is
    predicted after codebooks 0..k-1 of the same frame, so only the first
    codebook has to know *when* a hit is due; the others hear it there.
    The first codebook's gap is the one that must grow for generations to
    keep a beat (docs/organism.md, "Where the beat is lost").
    """
    from scipy.stats import binomtest

    clips = eligible(data, np.asarray(idx), t0, window, drums_only)
    if len(clips) == 0:
        return {"n": 0}
    per_k = splice_losses(model, data, clips, t0, window, batch, by_codebook=True)
    per = {k: v.mean(axis=1) for k, v in per_k.items()}
    res: dict = {"n": int(len(clips)), "t0": t0, "window": window,
                 "loss": {k: float(v.mean()) for k, v in per.items()}}
    for name in JUMPS:
        if name == "in_phase":
            continue
        d = per[name] - per["in_phase"]
        pos = int((d > 0).sum())
        res[name] = {"gap": float(d.mean()), "share_positive": pos / len(d),
                     "p_sign": float(binomtest(pos, len(d), 0.5, alternative="greater").pvalue),
                     "gap_by_codebook": [float(g) for g in (per_k[name] - per_k["in_phase"]).mean(axis=0)]}
    return res
