"""The benches' shared helpers: result files, and the organisms a bench compares (folders, or past commits)."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from musiclens.bench_utils import add_organism_model_args, organism_models, shipped_at
from musiclens.errors import MusiclensError


def test_model_args_default_to_the_shipped_organism_and_check_folders(tmp_path):
    ap = argparse.ArgumentParser()
    add_organism_model_args(ap)
    a = ap.parse_args([])
    with organism_models(a.model, a.rev) as models:
        assert models == [("shipped organism", None)]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    a = ap.parse_args(["--model", "shipped", "--model", str(tmp_path / "mine")])
    with organism_models(a.model, a.rev) as models:
        assert [m for _, m in models] == [None, tmp_path / "mine"]
    with pytest.raises(MusiclensError, match="no organism folder"):
        with organism_models([str(tmp_path / "missing")], []):
            pass


IN_GIT = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True).returncode == 0


@pytest.mark.skipif(not IN_GIT, reason="a checkout without git history has no past commits to read")
def test_a_past_commit_is_read_from_git_history_into_a_folder_that_lives_with_the_context(tmp_path):
    with organism_models([], ["HEAD"]) as models:
        name, folder = models[-1]
        assert name == "shipped at HEAD" and json.loads((folder / "config.json").read_text())["model_type"]
        assert (folder / "model.safetensors").stat().st_size > 1_000_000
    assert not folder.exists()
    with pytest.raises(MusiclensError, match="no shipped organism at"):
        shipped_at("0000000000000000000000000000000000000000", tmp_path / "x")


def test_feature_steering_bench_pools_concept_checks_and_rejects_bad_input(tmp_path):
    import sys

    mod, path = _bench_module("feature_steering")
    per_sae = [{"features": [
        {"improvement": 0.1, "concept_checks": [{"concept": "brightness=dark", "tagger_rises": True,
                                                 "moved_as_expected": True}]},
        {"improvement": -0.2, "concept_checks": [{"concept": "brightness=neutral", "tagger_rises": False},
                                                  {"concept": "drums=rock", "tagger_rises": True}]}]},
        {"features": [{"improvement": 0.3}]}]
    s = mod.summarise(per_sae)
    assert (s["features"], s["saes_tested"], s["concept_pairs"], s["estimator_pairs"]) == (3, 2, 3, 1)
    assert s["clap_share_positive"] == 2 / 3 and s["tagger_rises_share"] == 2 / 3
    assert s["estimator_as_expected_share"] == 1.0
    assert s["estimator_as_expected_p"] == 0.5 and s["tagger_rises_p"] == 0.5    # 1 of 1; 2 of 3
    assert s["by_head"]["brightness"] == {"pairs": 2, "tagger_rises_share": 0.5, "estimator_pairs": 1,
                                          "estimator_as_expected_share": 1.0, "tagger_pairs": 2,
                                          "tagger_rises_p": 0.75, "estimator_as_expected_p": 0.5}
    r = subprocess.run([sys.executable, str(path), "--features-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not an annotated" in r.stderr


def _bench_module(name: str):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, path


def test_synthetic_beat_clips_hit_every_beat_and_only_the_beat_unless_told():
    import numpy as np

    mod, _ = _bench_module("beat_synthetic")
    clips = mod.synthetic_clips(8, np.random.default_rng(0), vocab=64, hit_codes=8)
    assert clips["codes"].shape == (8, mod.K, mod.FRAMES) and clips["codes"].max() < 64
    for i in range(8):
        hits = np.flatnonzero(clips["codes"][i, 0] < 8)
        grid = mod.grid_frames(clips["period"][i], clips["phase"][i], 0, mod.FRAMES)
        assert hits.tolist() == grid.tolist()                    # a hit on every beat, nowhere else
        assert 50 / 3 - 1e-9 <= clips["period"][i] <= 50 + 1e-9  # 60-180 BPM at 50 frames/s
        ind = (clips["codes"][i, 0] < 8).astype(float)
        assert mod.on_off_means(ind, clips["period"][i], clips["phase"][i], 0, 8) == (1.0, 0.0)
        assert mod.on_off_means(ind, clips["period"][i], clips["phase"][i], 0, 8, -0.25) == (1.0, 0.0)
    noisy = mod.synthetic_clips(64, np.random.default_rng(1), vocab=64, hit_codes=8, miss=0.2, false_hits=0.05)
    on, off = [], []
    for i in range(64):
        ind = noisy["codes"][i, 0] < 8
        grid = mod.grid_frames(noisy["period"][i], noisy["phase"][i], 0, mod.FRAMES)
        on.append(ind[grid].mean())
        off.append(np.delete(ind, grid).mean())
    assert abs(np.mean(on) - 0.8) < 0.05 and abs(np.mean(off) - 0.05) < 0.01
    one = mod.synthetic_clips(4, np.random.default_rng(2), vocab=64, hit_codes=8, bpm=(120.0, 120.0))
    for i in range(4):                                           # one tempo: a hit every 25 frames exactly
        assert set(np.diff(np.flatnonzero(one["codes"][i, 0] < 8)).tolist()) == {25}


def test_synthetic_beat_bench_samples_only_after_the_prompt_and_rejects_bad_input(tmp_path):
    import json
    import sys

    import numpy as np
    import torch

    from musiclens.organism.lm import delay_pattern

    mod, path = _bench_module("beat_synthetic")
    clips = mod.synthetic_clips(3, np.random.default_rng(0), vocab=32, hit_codes=4)
    model = mod.build(vocab=32, layers=1, d_model=16, seed=0).eval()
    codes = torch.as_tensor(clips["codes"])
    ids = delay_pattern(codes, model.config.decoder.pad_token_id)
    states, mask = torch.zeros(3, 1, 8), torch.ones(3, 1, dtype=torch.long)
    sampled, p_own = mod.continue_clips(model, ids, states, mask, hit_codes=4, seed=0)
    assert (sampled[..., :mod.PROMPT] == clips["codes"][..., :mod.PROMPT]).all()
    assert (sampled[..., mod.PROMPT:] != clips["codes"][..., mod.PROMPT:]).mean() > 0.5   # sampled, not copied
    p_real = mod.hit_probability(model, ids, states, mask, hit_codes=4)
    # over the prompt both read the same past: the cached sampling pass matches the teacher-forced one
    assert np.allclose(p_own[:, :mod.PROMPT], p_real[:, :mod.PROMPT], atol=1e-5)
    shape = ["--layers", "1", "--d-model", "16", "--vocab", "32", "--hit-codes", "4"]
    st = mod.tempo_states(np.array([50.0, 3000 / 180]), True)    # 60 and 180 BPM: x = 0 and 1, then features
    assert st.shape == (2, 1, 8) and st[0, 0, 0] == 0 and abs(st[1, 0, 0] - 1) < 1e-6 and (st[:, 0, -1] == 1).all()
    assert not mod.tempo_states(np.array([50.0]), False).any()
    r = subprocess.run([sys.executable, str(path), "--steps", "2", "--eval-at", "0,2", *shape, "--condition-tempo",
                        "--save", str(tmp_path / "d.pt"), "--input-noise", "0.3", "--input-noise-kind", "stale",
                        "--input-noise-span", "4", "--name", str(tmp_path / "bs")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "bs.json").read_text())["figures"]
    assert set(got["evals"]) == {"0", "2"} and got["real_codes_on_off"]["beats_0_to_2"] > 1e6
    # the saved decoder measured again, greedy: same teacher-forced figures, its own continuation
    r = subprocess.run([sys.executable, str(path), "--load", str(tmp_path / "d.pt"), "--temperature", "0", *shape,
                        "--condition-tempo", "--name", str(tmp_path / "again")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "again.json").read_text())["figures"]
    assert again["evals"]["loaded"]["real_past"] == got["evals"]["2"]["real_past"]
    assert again["config"]["temperature"] == 0 and again["config"]["condition_tempo"] is True
    assert got["config"]["input_noise_kind"] == "stale" and "input_noise" not in again["config"]
    for bad, word in ((["--hit-codes", "40"], "--hit-codes"), (["--load", str(tmp_path / "none.pt")], "--load"),
                      (["--input-noise", "0.8"], "--input-noise"), (["--bpm", "90,200"], "--bpm"),
                      (["--bpm", "fast"], "--bpm"),
                      (["--load", str(tmp_path / "d.pt")], "--load")):   # the last: saved with another shape
        r = subprocess.run([sys.executable, str(path), *bad], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and word in r.stderr, r.stderr


def test_next_hit_timing_and_hazard_profile_tell_a_clock_from_a_slow_rise():
    import numpy as np

    mod, _ = _bench_module("beat_synthetic")
    period, phase = 20.0, 3.0
    beats = mod.grid_frames(period, phase, 0, mod.FRAMES)
    clock = np.zeros(mod.FRAMES)
    clock[beats] = 1.0                                   # certain of the beat frame, nothing else
    got = mod.next_hit_timing(clock, period, phase)
    assert len(got) == len(mod.grid_frames(period, phase, mod.PROMPT, mod.FRAMES)) - 1
    assert all(on == 1.0 and early == 0.0 for on, early in got)
    flat = np.full(mod.FRAMES, 0.1)                      # a constant hazard: most of the next hit comes early
    on, early = np.mean(mod.next_hit_timing(flat, period, phase), axis=0)
    assert abs(on - (0.9 ** 18 * 0.1 + 0.9 ** 19 * 0.1)) < 1e-9 and abs(early - (1 - 0.9 ** 18)) < 1e-9
    clips = {"period": np.array([period]), "phase": np.array([phase])}
    prof = mod.hazard_profile(clock[None], clips)
    assert prof["0"] == 1.0 and all(prof[str(k)] == 0.0 for k in range(-15, 4) if k)
    ramp = np.zeros(mod.FRAMES)
    for b in beats:
        ramp[max(b - 15, 0): b + 1] = np.linspace(0.0, 0.15, 16)[-len(ramp[max(b - 15, 0): b + 1]):]
    prof = mod.hazard_profile(ramp[None], clips)
    assert prof["-15"] == 0.0 and abs(prof["0"] - 0.15) < 1e-12 and prof["1"] == 0.0
    on, off = mod.on_off_means(ramp, period, phase, 0, 8)              # the frame after flatters the slow rise,
    on_, before = mod.on_off_means(ramp, period, phase, 0, 8, -0.25)   # the frame before does not
    assert off == 0.0 and on == on_ and abs(on / before - 1.5) < 1e-9


def test_beat_decay_reads_against_the_frame_before_the_beat_as_well_as_after_it():
    import numpy as np

    mod, _ = _bench_module("beat_decay")
    period, phase, n, start = 20.0, 3.0, 300, 100

    def grid(offset):
        f = np.round(np.arange(phase + offset * period, n, period)).astype(int)
        return f[(f >= 0) & (f < n)]

    on_all, off_all, before_all = grid(0.0), grid(0.25), grid(-0.25)
    clock = np.full(n, 0.01)
    clock[on_all] = 1.0                       # expects the onset on the beat, nothing elsewhere
    ramp = np.zeros(n)                        # nothing just after an onset, then a slow rise towards the next
    for b in on_all:
        ramp[b + 6: b + 21] = np.linspace(0.1, 0.3, 15)[: len(ramp[b + 6: b + 21])]
    ramp[on_all] = 0.3
    for w, (off, before) in mod.window_ratios(clock, on_all, off_all, before_all, start, period).items():
        assert abs(off - 100) < 1e-9 and abs(before - 100) < 1e-9, w
    for w, (off, before) in mod.window_ratios(ramp, on_all, off_all, before_all, start, period).items():
        assert off > 1e6 and 1.0 < before < 1.5, (w, off, before)   # the after-frame flatters a slow rise
    prof = mod.beat_profile(clock, on_all, 50, n)
    assert set(prof) == set(mod.PROFILE) and len(prof[0]) == len([b for b in on_all if 50 <= b < n - 8])
    assert np.mean(prof[0]) == 1.0 and all(abs(np.mean(prof[d]) - 0.01) < 1e-12 for d in mod.PROFILE if d)
