"""Teaching the LM where the beat is: a training-only beat-phase head.

The shipped organism's generations have no steady beat, and the lever that
failed on CPU was always indirect: more likelihood (session 22), a hinge on
spliced sequences (sessions 18 and 23), or sampling (sessions 23 and 24).
Under the delay pattern only codebook 0 has to know *when* a hit is due
(`rhythm.py`), and to know that, the decoder must track the beat's phase
from the codes it has read so far. Likelihood teaches that phase only
through the rare tokens where a hit lands; here it is taught directly.

The corpus knows every clip's beat grid: it renders the score's notes and
drums at `bpm` from the score position of note `start_note`
(`corpus.synth.clip_notes`, `drum_hits`), so frame f of a clip lies at score
position q(f) = start_ql + f / (50 · 60 / bpm) quarter notes. A linear head
on the decoder's last hidden state at sequence position p (the position that
predicts codebook 0 of crop frame p) regresses cos/sin of 2π·q and, for clips
with drums (whose patterns repeat every 4 quarters), of 2π·q/4. The head
trains with the LM and is dropped at export: the shipped folder stays a
plain MusicGen, only its decoder weights carry what the head asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MusiclensError
from ..models.organism import FRAME_RATE
from .rhythm import beat_frames

BAR_QUARTERS = 4  # the corpus's drum patterns span a 4-beat bar (corpus.synth.DRUM_PATTERNS)


def start_positions(rows: list[dict], cache_dir: Path | None = None) -> np.ndarray:
    """Each row's score position at its clip's first sample, in quarter notes (NaN where unknown).

    Read from the row's `start_ql` where a pack wrote it, else from the cached music21
    pieces the renderer used (`corpus.sources.load_piece`). A row without source,
    start_note and bpm (a corpus of audio files) gets NaN and no phase target.
    """
    from ..corpus.sources import default_cache_dir, load_piece

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    pieces: dict[str, object] = {}
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if r.get("start_ql") is not None:  # written into a device pack (`pack.pack_lm`), where no cache is
            out[i] = float(r["start_ql"])
            continue
        src, note = r.get("source"), r.get("start_note")
        if src is None or note is None or not r.get("bpm"):
            continue
        if src not in pieces:
            pieces[src] = load_piece(src, cache)
        piece = pieces[src]
        if piece is not None and 0 <= int(note) < len(piece.notes):
            out[i] = float(piece.notes[int(note)][0])
    return out


def phase_targets(start_ql: np.ndarray, bpm: np.ndarray, drums: np.ndarray, starts: np.ndarray,
                  lengths: np.ndarray, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets [B, steps, 4] (cos, sin of the beat phase; cos, sin of the bar phase) and mask [B, steps, 2].

    Sequence position p predicts codebook 0 of crop frame p, i.e. clip frame
    starts + p; the mask is 0 past the clip's codes, for clips of unknown grid
    (NaN start), and on the bar columns of clips without drums.
    """
    p = np.arange(steps)[None, :]
    frame = starts[:, None] + p
    q = start_ql[:, None] + frame / beat_frames(np.where(bpm > 0, bpm, 1.0))[:, None]
    beat, bar = 2 * np.pi * q, 2 * np.pi * q / BAR_QUARTERS
    tgt = np.stack([np.cos(beat), np.sin(beat), np.cos(bar), np.sin(bar)], axis=-1)
    known = (frame < lengths[:, None]) & np.isfinite(q)
    mask = np.stack([known, known & drums[:, None]], axis=-1)
    return torch.as_tensor(np.nan_to_num(tgt), dtype=torch.float32), torch.as_tensor(mask, dtype=torch.float32)


class PhaseTargets:
    """The beat grids of a `lm.CodeData`'s clips, looked up once."""

    def __init__(self, data, cache_dir: Path | None = None):
        self.start_ql = start_positions(data.rows, cache_dir)
        self.bpm = np.array([float(r.get("bpm") or 0.0) for r in data.rows])
        self.drums = np.array([r.get("drums", "none") != "none" for r in data.rows])
        self.lengths = np.asarray(data.lengths, dtype=np.int64)
        self.codebooks = int(data.codes.shape[1])
        if not np.isfinite(self.start_ql).any():
            raise MusiclensError("no clip of these codes has a known beat grid (corpus rows with source, start_note "
                                 "and bpm, and their pieces in the score cache): --beat-phase-weight needs one")

    def __call__(self, idx, starts: np.ndarray, steps: int, device: str = "cpu"):
        """Targets and mask for the `steps` positions of crops from `starts` (steps = crop + codebooks - 1).

        The last codebooks - 1 positions predict no first-codebook code (the delay pattern's tail), so
        they get no target, nor does any frame past a clip's codes.
        """
        idx, starts = np.asarray(idx, dtype=int), np.asarray(starts)
        ends = np.minimum(self.lengths[idx], starts + steps - (self.codebooks - 1))
        tgt, mask = phase_targets(self.start_ql[idx], self.bpm[idx], self.drums[idx], starts, ends, steps)
        return tgt.to(device), mask.to(device)


def phase_loss(head: torch.nn.Module, hidden: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean squared error of the head's (cos, sin) pairs; hidden [B, T, D], tgt [B, T, 4], mask [B, T, 2]."""
    pred = head(hidden[:, : tgt.shape[1]])
    err = F.mse_loss(pred, tgt, reduction="none").reshape(*tgt.shape[:2], 2, 2).sum(-1)  # [B, T, 2]
    return (err * mask).sum() / mask.sum().clamp(min=1)


def phase_errors_degrees(head: torch.nn.Module, hidden: torch.Tensor, tgt: torch.Tensor,
                         mask: torch.Tensor) -> np.ndarray:
    """Angles (degrees) between the head's beat phase and the true one, at every known position.

    A readable monitor: a head that knows nothing has a median near 90, a perfect one 0.
    """
    pred = head(hidden[:, : tgt.shape[1]])
    a = torch.atan2(pred[..., 1], pred[..., 0]) - torch.atan2(tgt[..., 1], tgt[..., 0])
    err = torch.rad2deg(torch.atan2(torch.sin(a), torch.cos(a)).abs())
    return err[mask[..., 0] > 0].float().cpu().numpy()


@torch.no_grad()
def hidden_and_targets(model, data, phase: PhaseTargets, idx: np.ndarray, crop: int = 300, batch: int = 16):
    """The LM's last hidden state at every position of each clip's opening crop, with its phase targets."""
    from .lm import decoder_hidden

    was = model.training
    model.eval()
    pad = model.config.decoder.pad_token_id
    hs, ts, ms = [], [], []
    for s in range(0, len(idx), batch):
        part = np.asarray(idx[s: s + batch])
        starts = np.zeros(len(part), dtype=np.int64)
        ids, st, m = data.batch(part, crop, pad, None, starts=starts)
        h = decoder_hidden(model, ids, st, m)
        t, mk = phase(part, starts, h.shape[1], data.device)
        hs.append(h.float().cpu())
        ts.append(t.cpu())
        ms.append(mk.cpu())
    model.train(was)
    return torch.cat(hs), torch.cat(ts), torch.cat(ms)


class RidgeProbe(torch.nn.Module):
    """A linear read-out of (cos, sin) pairs fitted in closed form (ridge regression with a bias)."""

    def __init__(self, hidden: torch.Tensor, tgt: torch.Tensor, ridge: float = 1.0):
        super().__init__()
        x = torch.cat([hidden, torch.ones(len(hidden), 1)], dim=1).double()
        eye = torch.eye(x.shape[1], dtype=torch.double)
        eye[-1, -1] = 0  # the bias is not shrunk
        self.w = torch.linalg.solve(x.T @ x + ridge * eye, x.T @ tgt.double()).float()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.w[:-1] + self.w[-1]


def probe_phase(model, data, train_idx: np.ndarray, valid_idx: np.ndarray, crop: int = 300,
                ridge: float = 1.0) -> dict:
    """How well a linear probe reads the beat phase from the LM's last hidden state (held-out clips).

    The probe is fitted on `train_idx`'s openings, beat phase on every clip with a known grid and
    bar phase on those with drums, and scored on `valid_idx` as the median angle error in degrees
    (about 90 for a state that holds no phase). A low error with beatless generations says the LM
    knows where the beat is and still does not place its hits there.
    """
    phase = PhaseTargets(data)
    htr, ttr, mtr = hidden_and_targets(model, data, phase, train_idx, crop)
    hva, tva, mva = hidden_and_targets(model, data, phase, valid_idx, crop)
    beat_keep, bar_keep = mtr[..., 0] > 0, mtr[..., 1] > 0
    if not beat_keep.any():
        raise MusiclensError("no train clip with a known beat grid to fit the probe on")
    beat = RidgeProbe(htr[beat_keep], ttr[beat_keep][:, :2], ridge)
    drums = torch.as_tensor(phase.drums[np.asarray(valid_idx, dtype=int)])[:, None].expand(mva.shape[:2])
    out = {"n_train_clips": int(len(train_idx)), "n_valid_clips": int(len(valid_idx)), "crop_frames": crop}
    for name, sel in (("all", torch.ones_like(drums)), ("drums", drums), ("no_drums", ~drums)):
        m = mva[..., :1] * sel[..., None]
        err = phase_errors_degrees(beat, hva, tva[..., :2], torch.cat([m, m], -1))
        out[f"beat_error_deg_{name}"] = round(float(np.median(err)), 2) if len(err) else None
        out[f"positions_{name}"] = int(len(err))
    if bar_keep.any():
        bar = RidgeProbe(htr[bar_keep], ttr[bar_keep][:, 2:], ridge)
        m = mva[..., 1:]
        err = phase_errors_degrees(bar, hva, tva[..., 2:], torch.cat([m, m], -1))
        out["bar_error_deg_drums"] = round(float(np.median(err)), 2) if len(err) else None
    return out


def beat_frames_of(phase: PhaseTargets, i: int, n: int, skip: int, offset: float = 0.0) -> np.ndarray:
    """Frames nearest each beat (+ `offset` beats) of clip `i`, from frame `skip` to before `n`."""
    period = beat_frames(phase.bpm[i])
    q0 = phase.start_ql[i]
    beats = np.arange(np.ceil(q0 + skip / period), q0 + n / period) + offset
    f = np.round((beats - q0) * period).astype(int)
    return f[(f >= skip) & (f < n)]


def token_onset_scores(data, phase: PhaseTargets, corpus: Path, idx: np.ndarray, vocab: int,
                       max_lag: int = 4) -> tuple[np.ndarray, int]:
    """How much of an onset each first-codebook code marks, from real audio: (scores [vocab], lag in frames).

    For each clip of `idx`, librosa's onset envelope at the codec's frame rate, divided by the
    clip's mean (so loud and soft clips count alike). The envelope peaks a frame or two after a
    hit (its analysis window and the synthesizer's attack), so it is first aligned: the lag (0 to
    `max_lag` frames) whose envelope is highest on the beats of the clips with drums, against a
    sixteenth after them. A code's score is then its mean aligned envelope over the frames where
    it occurs in codebook 0; codes never seen get the overall mean (1.0).
    """
    import librosa

    from ..models.organism import SAMPLE_RATE
    from .codes import _read_clip

    hop = SAMPLE_RATE // FRAME_RATE
    envs = {}
    for i in idx:
        n = int(data.lengths[int(i)])
        y = _read_clip(Path(corpus) / data.rows[int(i)]["path"], SAMPLE_RATE, n / FRAME_RATE)
        if y is not None:
            env = librosa.onset.onset_strength(y=y, sr=SAMPLE_RATE, hop_length=hop)[:n]
            envs[int(i)] = env / max(float(env.mean()), 1e-8)
    if not envs:
        raise MusiclensError(f"no clip of {corpus} could be read for the onset scores")
    contrast = np.zeros(max_lag + 1)
    for i, env in envs.items():
        if phase.drums[i] and np.isfinite(phase.start_ql[i]):
            on = beat_frames_of(phase, i, len(env) - max_lag, 0)
            off = beat_frames_of(phase, i, len(env) - max_lag, 0, 0.25)
            for lag in range(max_lag + 1):
                contrast[lag] += env[on + lag].mean() - env[off + lag].mean() if len(on) and len(off) else 0
    lag = int(np.argmax(contrast))
    tot, cnt = np.zeros(vocab), np.zeros(vocab)
    for i, env in envs.items():
        codes = data.codes[i, 0, : len(env) - lag].long().numpy()
        np.add.at(tot, codes, env[lag: lag + len(codes)])
        np.add.at(cnt, codes, 1)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), 1.0), lag


@torch.no_grad()
def expected_onsets(model, codes: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                    scores: np.ndarray) -> np.ndarray:
    """Teacher-forced expected onset strength of codebook 0 at every frame: [B, F].

    codes [B, K, F]; entry f is sum_v p(v | everything before frame f's first code) · scores[v],
    the onset strength the LM's next draw of codebook 0 carries on average.
    """
    from .lm import decoder_hidden, delay_pattern

    hidden = decoder_hidden(model, delay_pattern(codes, model.config.decoder.pad_token_id), states, mask)
    s = torch.as_tensor(scores, dtype=torch.float32, device=hidden.device)
    p0 = torch.softmax(model.decoder.lm_heads[0](hidden).float(), dim=-1)[..., : len(s)]
    return (p0 * s).sum(-1)[:, : codes.shape[2]].cpu().numpy()


def on_off_ratio(values: np.ndarray, on: np.ndarray, off: np.ndarray) -> float:
    """Mean of `values` on the beat frames over its mean a sixteenth after them (NaN without frames)."""
    if len(on) == 0 or len(off) == 0:
        return float("nan")
    return float(values[on].mean() / max(values[off].mean(), 1e-8))
