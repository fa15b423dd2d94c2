"""The beat-phase head: targets on the renderer's own grid, the masked loss, and training with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musiclens.corpus.sources import Piece, _cache_file
from musiclens.corpus.synth import DRUM_PATTERNS, KICK, SNARE, drum_hits
from musiclens.io import write_json
from musiclens.organism.beatphase import (PhaseTargets, phase_errors_degrees, phase_loss, phase_targets,
                                          start_positions)

FPS = 50


def _angle(c, s):
    return np.degrees(np.arctan2(s, c)) % 360


def test_targets_sit_on_the_grid_the_renderer_plays_drums_on():
    # a tune whose clip starts on its second note, half a beat after a barline: the grid is offset
    piece = Piece(source="x", collection="folksong", key="C major", mode="major",
                  notes=[[0.0, 1.0, 60], [2.5, 0.5, 62], [3.0, 1.0, 64]], length_ql=4.0)
    bpm = 120.0
    plan = {"bpm": bpm, "start_note": 1, "seconds": 4.0, "drums": "rock"}
    hits = drum_hits(plan, piece)
    n = int(plan["seconds"] * FPS)
    tgt, mask = phase_targets(np.array([2.5]), np.array([bpm]), np.array([True]), np.array([0]), np.array([n]), n)
    tgt = tgt[0].numpy()
    beat, bar = _angle(tgt[:, 0], tgt[:, 1]), _angle(tgt[:, 2], tgt[:, 3])
    tol = 360 * 0.5 / (FPS * 60 / bpm) + 1e-3  # half a frame of the beat period, in degrees
    kicks = [t for t, note, _ in hits if note == KICK]
    snares = [t for t, note, _ in hits if note == SNARE]
    assert kicks and snares
    for t in snares:  # backbeat: on a beat, on beats 2 and 4 of the bar
        f = int(round(t * FPS))
        assert min(beat[f], 360 - beat[f]) <= tol
        assert min(abs(bar[f] - 90), abs(bar[f] - 270)) <= tol / 4 + 1e-6
    downbeats = [t for t, note, _ in hits if note == KICK and any(
        abs(t - (s / 2.0 - 2.5) * 0.5) < 1e-9 for s in range(0, 40, 8))]
    assert downbeats
    for t in downbeats:
        f = int(round(t * FPS))
        assert min(bar[f], 360 - bar[f]) <= tol / 4 + 1e-6
    # the first frame is half a beat into the grid: phase 180 degrees
    assert abs(beat[0] - 180) < 1e-6
    assert set(DRUM_PATTERNS["rock"]) == set(range(8))  # the pattern the bar phase is about spans 4 beats


def test_targets_mask_the_end_of_codes_unknown_grids_and_drumless_bars():
    tgt, mask = phase_targets(np.array([0.0, np.nan, 1.0]), np.array([60.0, 90.0, 150.0]),
                              np.array([True, True, False]), np.array([0, 0, 10]), np.array([30, 30, 30]), 40)
    assert tgt.shape == (3, 40, 4) and mask.shape == (3, 40, 2)
    assert mask[0, :30].all() and not mask[0, 30:].any()        # past the clip's codes
    assert not mask[1].any() and torch.isfinite(tgt).all()        # no grid: no target, no NaN
    assert mask[2, :20, 0].all() and not mask[2, 20:, 0].any()    # a crop from frame 10 of 30 frames
    assert not mask[2, :, 1].any()                                # no drums: no bar target
    # unit vectors; at 60 BPM a beat is 50 frames
    assert torch.allclose(tgt[0, :, :2].norm(dim=-1), torch.ones(40))
    assert abs(float(tgt[0, 25, 0]) + 1) < 1e-6 and abs(float(tgt[0, 0, 0]) - 1) < 1e-6


def test_start_positions_read_the_cached_pieces(tmp_path):
    piece = Piece(source="tune#1", collection="folksong", key="A minor", mode="minor",
                  notes=[[0.0, 1.0, 57], [1.5, 0.5, 60]], length_ql=2.0)
    write_json(_cache_file(tmp_path, piece.source), {"piece": piece.__dict__})
    rows = [{"source": "tune#1", "start_note": 1, "bpm": 100.0},
            {"source": "tune#1", "start_note": 5, "bpm": 100.0},   # no such note
            {"path": "a.wav"},                                       # audio without a score
            {"source": "not cached", "start_note": 0, "bpm": 90.0, "start_ql": 0.25}]  # as a device pack writes it
    q = start_positions(rows, tmp_path)
    assert q[0] == 1.5 and np.isnan(q[1]) and np.isnan(q[2]) and q[3] == 0.25


def test_loss_is_zero_for_a_head_that_reads_the_phase_and_ignores_masked_positions():
    hidden = torch.randn(2, 6, 4)
    tgt = torch.randn(2, 6, 4)
    head = torch.nn.Identity()
    mask = torch.ones(2, 6, 2)
    assert float(phase_loss(head, tgt, tgt, mask)) == 0.0
    loss = phase_loss(head, hidden, tgt, mask)
    assert float(loss) > 0
    wrong = tgt.clone()
    wrong[0, 3] += 100.0  # a wrong target where the mask is 0 changes nothing
    mask[0, 3] = 0
    assert torch.allclose(phase_loss(head, hidden, tgt, mask), phase_loss(head, hidden, tgt + (wrong - tgt), mask))
    unit = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]])
    quarter = torch.tensor([[[0.0, 1.0, 0.0, 1.0]]])
    err = phase_errors_degrees(head, quarter, unit, torch.ones(1, 1, 2))
    assert err.shape == (1,) and abs(float(err[0]) - 90) < 1e-4


def test_training_with_the_head_logs_it_keeps_it_out_of_the_export_and_resumes(tiny_corpus, tmp_path, monkeypatch):
    from safetensors import safe_open

    from musiclens.errors import MusiclensError
    from musiclens.organism.codec import CodecTrainConfig, train_codec
    from musiclens.organism.codes import precompute
    from musiclens.organism.lm import CodeData, LMTrainConfig, train_lm

    train_codec(CodecTrainConfig(steps=2, warmup_steps=1, batch_size=2, crop_seconds=0.2, kmeans_batches=2,
                                 codebook_size=32, num_filters=4, hidden_size=16), tiny_corpus, tmp_path, None, False)
    precompute(tiny_corpus, tmp_path)
    cfg = LMTrainConfig(steps=4, batch_size=4, crop_frames=40, layers=2, d_model=32, heads=2, ffn=64, lr=3e-3,
                        warmup=1, eval_every=2, checkpoint_minutes=100, beat_phase_weight=1.0)
    # the tiny corpus's rows name pieces no cache holds: refused in one line, before any step
    monkeypatch.setenv("MUSICLENS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MusiclensError, match="known beat grid"):
        train_lm(cfg, tmp_path, None, False)
    # give its clicks a grid: each clip's clicks start at frame 0, on the beat
    index = tmp_path / "codes" / "index.json"
    meta = json.loads(index.read_text())
    for r in meta["rows"]:
        r["start_note"] = 0
        r["drums"] = "rock"
    index.write_text(json.dumps(meta))
    for src in {r["source"] for r in meta["rows"]}:
        piece = Piece(source=src, collection="folksong", key="C major", mode="major", notes=[[0.0, 1.0, 60]],
                      length_ql=1.0)
        write_json(_cache_file(tmp_path / "cache" / "scores", src), {"piece": piece.__dict__})
    assert np.isfinite(PhaseTargets(CodeData(tmp_path)).start_ql).all()

    assert train_lm(cfg, tmp_path, None, False)["step"] == 4
    recs = [json.loads(x) for x in (tmp_path / "lm" / "log.jsonl").read_text().splitlines()]
    assert all(0 < r["phase_loss"] < 4 and 0 <= r["phase_error_deg"] <= 180 for r in recs)
    assert "train_lm_loss" in recs[-1] and recs[-1]["train_loss"] > recs[-1]["train_lm_loss"]
    ckpt = torch.load(tmp_path / "lm" / "ckpt.pt", weights_only=False)
    assert ckpt["phase_head"]["weight"].shape == (4, 32) and float(ckpt["phase_head"]["weight"].abs().sum()) > 0
    with safe_open(str(tmp_path / "lm" / "hf" / "model.safetensors"), "pt") as f:
        assert not any("phase" in k for k in f.keys())  # the head is training-only
    # resume: the head and its optimiser state come back, and training goes on
    cfg.steps = 6
    assert train_lm(cfg, tmp_path, None, True)["step"] == 6
    again = torch.load(tmp_path / "lm" / "ckpt.pt", weights_only=False)
    assert not torch.equal(again["phase_head"]["weight"], ckpt["phase_head"]["weight"])
    assert len(again["opt"]["param_groups"]) == 3
    # resuming without the head (or a run without it, with one) would mismatch the optimiser: one line
    cfg.steps, cfg.beat_phase_weight = 8, 0.0
    with pytest.raises(MusiclensError, match="trained with the beat-phase head: resume it with --beat-phase-weight"):
        train_lm(cfg, tmp_path, None, True)


def test_ridge_probe_reads_a_phase_that_is_there_and_not_one_that_is_not():
    from musiclens.organism.beatphase import RidgeProbe

    g = torch.Generator().manual_seed(0)
    ang = torch.rand(2000, generator=g) * 2 * np.pi
    tgt = torch.stack([ang.cos(), ang.sin()], 1)
    noise = torch.randn(2000, 6, generator=g)
    held = torch.cat([3 * tgt + 1.0, noise], 1)  # the phase, scaled and shifted, among noise
    probe = RidgeProbe(held[:1500], tgt[:1500], ridge=1e-3)
    ones = torch.ones(1, 500, 2)  # [clips, positions, (beat, bar)]
    assert np.median(phase_errors_degrees(probe, held[None, 1500:], tgt[None, 1500:], ones)) < 1.0
    blind = RidgeProbe(noise[:1500], tgt[:1500])
    assert np.median(phase_errors_degrees(blind, noise[None, 1500:], tgt[None, 1500:], ones)) > 60


def test_probe_phase_reports_beat_and_bar_errors_split_by_drums():
    from types import SimpleNamespace

    from transformers import MusicgenForCausalLM

    from musiclens.models import organism as O
    from musiclens.organism.beatphase import probe_phase
    from musiclens.organism.lm import CodeData

    torch.manual_seed(0)
    dec = MusicgenForCausalLM(O.decoder_config(codebook_size=16, layers=1, d_model=32, heads=2, ffn=64))
    model = SimpleNamespace(decoder=dec, enc_to_dec_proj=torch.nn.Linear(8, 32),
                            config=SimpleNamespace(decoder=dec.config), training=False,
                            eval=lambda: None, train=lambda mode=True: None)
    n = 12
    data = CodeData.__new__(CodeData)  # the codes stage's output, made here
    data.codes = torch.randint(0, 16, (n, 4, 60))
    data.lengths = np.full(n, 60)
    data.states, data.mask = torch.randn(n, 3, 8), torch.ones(n, 3, dtype=torch.long)
    data.device = "cpu"
    data.rows = [{"bpm": 120.0, "start_ql": 0.25 * i, "drums": "rock" if i % 2 else "none"} for i in range(n)]
    out = probe_phase(model, data, np.arange(8), np.arange(8, 12), crop=40)
    assert out["positions_all"] == 4 * 40 == out["positions_drums"] + out["positions_no_drums"]
    assert out["positions_drums"] == 2 * 40
    for k in ("beat_error_deg_all", "beat_error_deg_drums", "beat_error_deg_no_drums", "bar_error_deg_drums"):
        assert 0 <= out[k] <= 180


def _clip_stand_in(codes: torch.Tensor, rows: list[dict]):
    from musiclens.organism.lm import CodeData

    n = codes.shape[0]
    data = CodeData.__new__(CodeData)  # the codes stage's output, made here
    data.codes, data.lengths, data.rows, data.device = codes, np.full(n, codes.shape[2]), rows, "cpu"
    data.states, data.mask = torch.randn(n, 3, 8), torch.ones(n, 3, dtype=torch.long)
    data.split = np.array(["train"] * n)
    return data


def test_token_onset_scores_find_the_code_that_sits_on_the_hits_and_the_envelopes_lag(tmp_path):
    import soundfile as sf

    from musiclens.organism.beatphase import token_onset_scores

    sr, frames, hit = 16000, 150, 3
    rng = np.random.default_rng(0)
    codes = torch.as_tensor(rng.integers(4, 16, size=(4, 4, frames)))
    rows = []
    (tmp_path / "audio").mkdir()
    for i in range(4):
        beats = np.arange(0, frames, 25)  # 120 BPM: a beat every 25 frames, from frame 0
        codes[i, 0, beats] = hit
        y = 0.001 * rng.standard_normal(frames * sr // FPS)
        for f in beats:  # a 30 ms noise burst on every beat
            s = f * sr // FPS
            burst = y[s: s + 480]
            burst += 0.5 * rng.standard_normal(len(burst)) * np.exp(-np.arange(len(burst)) / 100)
        sf.write(tmp_path / "audio" / f"{i}.wav", y.astype(np.float32), sr)
        rows.append({"path": f"audio/{i}.wav", "bpm": 120.0, "start_ql": 0.0, "drums": "rock"})
    data = _clip_stand_in(codes, rows)
    scores, lag = token_onset_scores(data, PhaseTargets(data), tmp_path, np.arange(4), vocab=16)
    assert 0 <= lag <= 4 and scores.shape == (16,)
    others = np.delete(scores, [hit, 0, 1, 2])
    assert scores[hit] > 5 * np.median(others)
    assert scores[0] == scores[1] == scores[2] == 1.0  # never seen: the overall mean


def test_expected_onsets_read_only_the_past_and_the_ratio_compares_beat_and_offbeat_frames():
    from transformers import MusicgenForCausalLM

    from musiclens.models import organism as O
    from musiclens.organism.beatphase import expected_onsets, on_off_ratio

    torch.manual_seed(0)
    dec = MusicgenForCausalLM(O.decoder_config(codebook_size=16, layers=1, d_model=32, heads=2, ffn=64)).eval()
    from types import SimpleNamespace

    model = SimpleNamespace(decoder=dec, enc_to_dec_proj=torch.nn.Linear(8, 32),
                            config=SimpleNamespace(decoder=dec.config))
    codes = torch.randint(0, 16, (2, 4, 30))
    st, m = torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.long)
    scores = np.linspace(0, 3, 16)
    e = expected_onsets(model, codes, st, m, scores)
    assert e.shape == (2, 30) and (e > 0).all() and (e < 3).all()
    changed = codes.clone()
    changed[:, :, 20:] = (changed[:, :, 20:] + 1) % 16  # frame 20 onwards: entry 20 predicts it, so is unchanged
    e2 = expected_onsets(model, changed, st, m, scores)
    assert np.allclose(e[:, :21], e2[:, :21], atol=1e-5) and not np.allclose(e[:, 21:], e2[:, 21:])
    v = np.array([4.0, 1.0, 4.0, 1.0, 2.0])
    assert on_off_ratio(v, np.array([0, 2]), np.array([1, 3])) == 4.0
    assert np.isnan(on_off_ratio(v, np.array([], dtype=int), np.array([1])))


def test_beat_frames_of_places_beats_and_sixteenths_on_the_clips_grid():
    from musiclens.organism.beatphase import beat_frames_of

    # 120 BPM = a beat every 25 frames; the clip starts 0.2 quarter notes into the score, so beat 1 is at frame 20
    rows = [{"path": "a.wav", "bpm": 120.0, "start_ql": 0.2, "drums": "rock"}]
    phase = PhaseTargets(_clip_stand_in(torch.zeros(1, 4, 100, dtype=torch.long), rows))
    assert beat_frames_of(phase, 0, 100, 0).tolist() == [20, 45, 70, 95]
    assert beat_frames_of(phase, 0, 100, 30).tolist() == [45, 70, 95]  # from frame 30 on
    assert beat_frames_of(phase, 0, 100, 30, 0.25).tolist() == [51, 76]  # a sixteenth later; 101 is past the end
