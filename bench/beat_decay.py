"""How long does the organism's LM keep a beat it is given? Onset expectation after a real prompt.

    python bench/beat_decay.py --run RUN --corpus CORPUS [--model DIR ...] [--rev COMMIT ...] [--n 64]
                               [--prompt-seconds 3] [--seconds 6] [--seed 2] [--guidance 3]
                               [--n-onset-train 600] [--name beat_decay]

The first --n valid clips with drums of RUN's codes (whose rows name the score
they were rendered from, so every frame's place in the beat is known;
organism/beatphase.py) are continued from their first --prompt-seconds with
their own captions (`MusicModel.generate(audio_prompt=)`), as bench/tempo_pulse.py
continues them. Each first-codebook code carries an onset strength measured
on --n-onset-train train clips' audio (`beatphase.token_onset_scores`). The LM
is then run teacher-forced over (a) the real clip and (b) its own
continuation, and at every frame its distribution over codebook 0 gives an
expected onset strength: what its next draw would carry. The ratio of that
expectation on the beat to a sixteenth after it, per window of beats after
the prompt, says whether the LM expects hits where the prompt's beat puts
them: with the real past (a) and with its own samples as the past (b). The
codes it sampled are scored the same way. Run on the shipped organism it
separates "the LM does not know when a hit is due" from "it knows, given
real codes, and loses it on its own". The same two expectations, pooled over
clips by how many frames after the prompt's end a beat falls, say how many of
its own samples it takes to lose it.

The frame a sixteenth after a beat follows the beat's own onset, and a model
that has only learnt that onsets do not follow each other at once scores well
against it (bench/beat_synthetic.py found exactly that). So every window also
has the ratio against the frame a sixteenth *before* the beat
(`median_on_before_ratio`), and `by_frames_from_beat` gives the mean of each
series 8 frames either side of every beat: a peak on the beat for a model
that keeps time, a slow rise for one that only knows how long a beat lasts.

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

from musiclens.bench_utils import add_organism_model_args, organism_models, write_result  # noqa: E402

SETS = ("expected_real_past", "expected_own_past", "sampled_codes", "real_codes")
# beats after the prompt's end ((-4, 0): its last four; (0, 1): the first beat, whose past is at most one beat
# of the LM's own samples)
WINDOWS = ((-4, 0), (0, 1), (0, 2), (2, 4), (4, 8))
# frames between the prompt's end and a beat: how many of its own samples the LM's past holds there
SINCE_PROMPT = ((0, 5), (5, 10), (10, 20), (20, 40), (40, 1000))
# frames from a beat the profile reads (the shortest beat is 16.7 frames, so -8..8 stays within one beat either
# side), for beats at least PROFILE_FROM frames into the clip (after the prompt for the LM's own past)
PROFILE, PROFILE_FROM = range(-8, 9), 50


def window_frames(frames: np.ndarray, start: float, period: float, lo: float, hi: float, offset: float) -> np.ndarray:
    """The frames (of beats + `offset`) whose beat falls between `lo` and `hi` beats after frame `start`."""
    beat = (frames - offset * period - start) / period
    return frames[(beat >= lo - 1e-6) & (beat < hi - 1e-6)]


def window_ratios(v: np.ndarray, on_all: np.ndarray, off_all: np.ndarray, before_all: np.ndarray, start: int,
                  period: float) -> dict[tuple[int, int], tuple[float, float]]:
    """Per window of WINDOWS: (mean of `v` on its beats / a sixteenth after them, / a sixteenth before them)."""
    from musiclens.organism.beatphase import on_off_ratio

    out = {}
    for w in WINDOWS:
        on = window_frames(on_all, start, period, *w, 0.0)
        out[w] = (on_off_ratio(v, on, window_frames(off_all, start, period, *w, 0.25)),
                  on_off_ratio(v, on, window_frames(before_all, start, period, *w, -0.25)))
    return out


def beat_profile(v: np.ndarray, on_all: np.ndarray, first: int, n: int) -> dict[int, list[float]]:
    """`v` at d frames from every beat at or after frame `first` whose PROFILE stays before frame `n`."""
    beats = on_all[(on_all >= first) & (on_all + PROFILE[-1] < n) & (on_all + PROFILE[0] >= 0)]
    return {d: [float(v[f + d]) for f in beats] for d in PROFILE}


def causal_past(mm, model, data, phase, clips: list[int], wavs: list[np.ndarray], scores: np.ndarray,
                whole: list[np.ndarray], span: tuple[float, float] = (2.0, 5.5), batch: int = 16) -> dict:
    """On/off-beat ratio of the expected onset when the past is encoded without the future.

    The codec's encoder is not causal (its convolutions see a few frames ahead), so the real
    codes before a hit already carry some of it. For every beat frame T in `span` (seconds)
    and the frame a sixteenth after it, the audio before T alone is encoded and the LM's
    expected onset at T read from those codes. The comparison is `whole[j]`, clip j's expected
    onsets from its whole codes (what `measure` already read with the real past: entry T reads
    only the codes before T). Per clip: ratio of the mean on the beat to the mean off it.
    """
    import torch

    from musiclens.models import organism as O
    from musiclens.organism.beatphase import beat_frames_of, expected_onsets, on_off_ratio

    hop = O.SAMPLE_RATE // O.FRAME_RATE
    lo, hi = int(span[0] * O.FRAME_RATE), int(span[1] * O.FRAME_RATE)
    jobs = []  # (clip position, frame, on?)
    for j, i in enumerate(clips):
        n = min(int(data.lengths[i]), hi, len(whole[j]))
        for on, frames in ((True, beat_frames_of(phase, i, n, lo)), (False, beat_frames_of(phase, i, n, lo, 0.25))):
            jobs += [(j, int(f), on) for f in frames]
    clip = np.array([j for j, _, _ in jobs])
    on = np.array([o for _, _, o in jobs], dtype=bool)
    causal = np.zeros(len(jobs))
    changed = np.zeros(len(jobs))  # share of the last 3 frames' first-codebook codes the future had changed
    for b in range(0, len(jobs), batch):
        part = jobs[b: b + batch]
        width = max(f for _, f, _ in part) + 1
        codes = torch.full((len(part), data.codes.shape[1], width), -1, dtype=torch.long)
        for r, (j, f, _) in enumerate(part):
            c = mm.encode_audio(torch.as_tensor(wavs[j][: f * hop]))[0]
            codes[r, :, : min(f, c.shape[1])] = c[:, :f]
            changed[b + r] = float((codes[r, 0, f - 3: f] != data.codes[clips[j], 0, f - 3: f].long()).float().mean())
        rows = [clips[j] for j, _, _ in part]
        st, m = data.states[rows].float(), data.mask[rows].long()
        e = expected_onsets(model, codes, st, m, scores)
        for r, (_, f, _) in enumerate(part):
            causal[b + r] = e[r, f]
    whole_at = np.array([whole[j][f] for j, f, _ in jobs])
    out = {}
    for name, v in (("causal_past", causal), ("whole_clip_codes", whole_at)):
        ratios = [r for j in range(len(clips))
                  if np.isfinite(r := on_off_ratio(v, np.flatnonzero((clip == j) & on), np.flatnonzero((clip == j) & ~on)))]
        out[name] = {"median_on_off_ratio": round(float(np.median(ratios)), 3), "n": len(ratios)}
    out["last_3_frames_codes_changed_by_the_future"] = {
        "before_a_beat": round(float(changed[on].mean()), 3),
        "before_a_sixteenth_after_it": round(float(changed[~on].mean()), 3)}
    out["frames_read"] = len(jobs)
    return out


def measure(model, tok, data, phase, valid: list[int], wavs: list[np.ndarray], scores: np.ndarray, a,
            start: int, frames: int, n_prompt: int) -> dict:
    """Every figure of one model: the on/off-beat ratios per window, and the past encoded without the future."""
    import torch

    from musiclens.models import MusicModel
    from musiclens.organism.beatphase import beat_frames_of, expected_onsets
    from musiclens.organism.codec import lookahead_frames
    from musiclens.organism.rhythm import beat_frames

    mm = MusicModel(model, tok, "organism")
    t = time.time()
    sets = {k: {w: [] for w in WINDOWS} for k in SETS}
    sets_before = {k: {w: [] for w in WINDOWS} for k in SETS}  # on the beat against a sixteenth before it
    profile = {k: {d: [] for d in PROFILE} for k in SETS}
    since = {k: {b: ([], []) for b in SINCE_PROMPT} for k in ("expected_real_past", "expected_own_past")}
    whole = []  # per clip: expected onsets with the real past, which causal_past compares against
    for s in range(0, len(valid), 16):
        part = valid[s: s + 16]
        gen = mm.generate([data.rows[i]["caption"] for i in part], seconds=a.seconds, seed=a.seed + s,
                          guidance_scale=a.guidance, audio_prompt=np.stack([w[:n_prompt] for w in
                                                                            wavs[s: s + 16]]))
        st, m = data.states[part].float(), data.mask[part].long()
        own = gen.codes[..., :frames].long()
        real = torch.full_like(own, -1)
        c = data.codes[part, :, :frames].long()
        real[..., : c.shape[2]] = c
        exp_real = expected_onsets(model, real, st, m, scores)
        exp_own = expected_onsets(model, own, st, m, scores)
        whole += list(exp_real)
        for j, i in enumerate(part):
            n = min(int(data.lengths[i]), frames)
            period = beat_frames(phase.bpm[i])
            on_all, off_all = beat_frames_of(phase, i, n, 0), beat_frames_of(phase, i, n, 0, 0.25)
            before_all = beat_frames_of(phase, i, n, 0, -0.25)
            series = {"expected_real_past": exp_real[j], "expected_own_past": exp_own[j],
                      "sampled_codes": scores[own[j, 0].numpy()],
                      "real_codes": scores[np.clip(real[j, 0].numpy(), 0, None)]}
            for f_on in on_all[on_all >= start]:  # each beat after the prompt with the frame a sixteenth after it
                later = off_all[off_all > f_on]
                if len(later):
                    b = next(b for b in SINCE_PROMPT if b[0] <= f_on - start < b[1])
                    for k in since:
                        since[k][b][0].append(series[k][f_on])
                        since[k][b][1].append(series[k][later[0]])
            for k, v in series.items():
                for w, (r, rb) in window_ratios(v, on_all, off_all, before_all, start, period).items():
                    if np.isfinite(r):
                        sets[k][w].append(r)
                    if np.isfinite(rb):
                        sets_before[k][w].append(rb)
                # the profile around every beat the past holds PROFILE_FROM frames before (the LM's own: after it)
                for d, vals in beat_profile(v, on_all, start if k in ("expected_own_past", "sampled_codes")
                                            else PROFILE_FROM, n).items():
                    profile[k][d] += vals
    out = {}
    for k, per in sets.items():
        out[k] = {f"beats_{lo}_to_{hi}": {"median_on_off_ratio": round(float(np.median(v)), 3),
                                          "median_on_before_ratio": round(float(np.median(sets_before[k][(lo, hi)])),
                                                                          3) if sets_before[k][(lo, hi)] else None,
                                          "n": len(v)} for (lo, hi), v in per.items() if v}
    # mean onset strength d frames from a beat (pooled over clips and beats): a peak on the beat, or a slow rise?
    out["by_frames_from_beat"] = {k: {str(d): round(float(np.mean(v)), 3) for d, v in per.items() if v}
                                  for k, per in profile.items()}
    out["by_frames_from_beat"]["beats"] = {k: len(per[0]) for k, per in profile.items()}
    # pooled over clips (one beat per clip and bin is too few for a ratio per clip)
    out["by_frames_since_prompt"] = {k: {f"frames_{lo}_to_{hi}": {
        "pooled_on_off_ratio": round(float(np.mean(on) / max(np.mean(off), 1e-8)), 3), "beats": len(on)}
        for (lo, hi), (on, off) in per.items() if on} for k, per in since.items()}
    out["encoded_without_the_future"] = causal_past(mm, model, data, phase, valid, wavs, scores, whole)
    out["codec_lookahead_frames"] = lookahead_frames(model.audio_encoder)
    out["seconds"] = round(time.time() - t, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run folder with precomputed codes (RUN/codes)")
    ap.add_argument("--corpus", required=True, help="the corpus those codes were encoded from (its audio)")
    add_organism_model_args(ap)
    ap.add_argument("--n", type=int, default=64, help="first N valid clips with drums")
    ap.add_argument("--prompt-seconds", type=float, default=3.0)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--n-onset-train", type=int, default=600, help="train clips the codes' onset strengths come from")
    ap.add_argument("--name", default="beat_decay")
    a = ap.parse_args(argv)

    from musiclens.errors import MusiclensError
    from musiclens.models import organism as O
    from musiclens.organism.beatphase import PhaseTargets, token_onset_scores
    from musiclens.organism.codes import _read_clip
    from musiclens.organism.lm import CodeData

    try:
        if a.n < 1 or a.n_onset_train < 1 or not 1.0 <= a.prompt_seconds <= a.seconds - 1.0:
            raise MusiclensError("--n and --n-onset-train must be >= 1, and --prompt-seconds between 1 s and "
                                 "--seconds minus 1 s")
        data = CodeData(Path(a.run))
        phase = PhaseTargets(data)
        valid = [int(i) for i in data.indices("valid") if phase.drums[i] and np.isfinite(phase.start_ql[i])][: a.n]
        train = data.indices("train")
        if not valid or not len(train):
            raise MusiclensError(f"{a.run} needs train codes and valid clips with drums and a known beat grid")
        train = np.sort(np.random.default_rng(0).choice(train, min(a.n_onset_train, len(train)), replace=False))
        t = time.time()
        scores, lag = token_onset_scores(data, phase, Path(a.corpus), train, int(data.codes.max()) + 1)
        score_seconds = time.time() - t
        frames = int(round(a.seconds * O.FRAME_RATE))
        start = int(round(a.prompt_seconds * O.FRAME_RATE))
        n_prompt = int(a.prompt_seconds * O.SAMPLE_RATE)
        wavs = [_read_clip(Path(a.corpus) / data.rows[i]["path"], O.SAMPLE_RATE, a.seconds) for i in valid]
        if any(w is None or len(w) < n_prompt for w in wavs):
            raise MusiclensError(f"the audio of some clips of {a.corpus} is missing or shorter than the prompt")
        res = {}
        with organism_models(a.model, a.rev) as models:
            for name, folder in models:
                model, tok = O.load_organism_hf("cpu", folder)
                out = measure(model, tok, data, phase, valid, wavs, scores, a, start, frames, n_prompt)
                res[name] = out
                print(name)
                for k in SETS:
                    print(f"  {k:20s}", "  ".join(f"{w}: {v['median_on_off_ratio']:.2f} (before "
                                                f"{v['median_on_before_ratio']})" for w, v in out[k].items()))
                for k in SETS:
                    print(f"  {k:20s} by frames from the beat:", " ".join(
                        f"{d}:{v:.2f}" for d, v in out["by_frames_from_beat"][k].items()))
                for k, v in out["by_frames_since_prompt"].items():
                    print(f"  {k:20s}", "  ".join(f"{b}: {r['pooled_on_off_ratio']:.2f} ({r['beats']})"
                                                for b, r in v.items()), "(pooled, by frames since the prompt)")
                print("  beats at 2-5.5 s, past encoded without the future:", out["encoded_without_the_future"])
                print("  the codec's encoder reads", out["codec_lookahead_frames"], "frames ahead")
    except MusiclensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_result(a.name, {"run": a.run, "corpus": a.corpus, "clips": len(valid), "prompt_seconds": a.prompt_seconds,
                          "seconds": a.seconds, "seed": a.seed, "guidance": a.guidance, "onset_lag_frames": lag,
                          "onset_train_clips": int(len(train)), "onset_score_seconds": round(score_seconds, 1),
                          "windows_beats_after_prompt": [list(w) for w in WINDOWS],
                          "frames_since_prompt_bins": [list(b) for b in SINCE_PROMPT], "models": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
