"""Evaluation helpers: which factors a caption names, ordered-level statistics, SI-SDR."""

from __future__ import annotations

import numpy as np
import pytest

from musiclens.errors import MusiclensError

from musiclens.organism.evaluate import _accuracy, _ordered, named_factors, pick_prompts, si_sdr

ROW = {"instrument": "organ", "bpm": 70.0, "brightness": "dark", "register": "low", "dynamics": "soft",
       "drums": "none", "mode": "minor"}


def test_named_factors_uses_word_boundaries():
    r = dict(ROW, caption="A slow, dark church organ chorale in a minor key")
    nf = named_factors(r)
    assert nf == {"instrument": "organ", "tempo": "slow", "brightness": "dark", "mode": "minor"}
    # "slow" must not count as the register word "low"; an explicit BPM names the tempo
    r = dict(ROW, bpm=150.0, caption="organ hymn at 150 BPM")
    assert named_factors(r) == {"instrument": "organ", "tempo": "fast"}


def test_named_factors_does_not_read_drum_phrases_as_dynamics():
    r = dict(ROW, drums="light", dynamics="soft", caption="calm organ tune with a soft ride-cymbal groove")
    assert named_factors(r) == {"instrument": "organ", "drums": "light"}
    r = dict(r, caption="a soft organ tune with gentle drums")
    assert named_factors(r) == {"instrument": "organ", "drums": "light", "dynamics": "soft"}


def test_ordered_levels_and_pvalues():
    rng = np.random.default_rng(0)
    vals = {"dark": list(rng.normal(500, 50, 12)), "neutral": list(rng.normal(900, 50, 12)),
            "bright": list(rng.normal(1500, 50, 12))}
    r = _ordered(["dark", "neutral", "bright"], vals)
    assert r["ordered"] and r["p_one_sided"]["dark<neutral"] < 1e-3 and r["spearman_level"]["rho"] > 0.8
    r = _ordered(["dark", "neutral", "bright"], {"dark": vals["bright"], "bright": vals["dark"]})
    assert not r["ordered"] and r["n"]["neutral"] == 0


def test_accuracy_and_si_sdr():
    a = _accuracy([("organ", "organ")] * 8 + [("organ", "piano")] * 2, 0.1)
    assert a["accuracy"] == 0.8 and a["p_vs_chance"] < 1e-4
    x = np.sin(np.linspace(0, 100, 16000))
    assert si_sdr(x, x) > 60 and si_sdr(x, x + np.random.default_rng(0).normal(0, 1, 16000)) < 0


def test_pick_prompts_draws_from_the_asked_split_only():
    rows = [dict(ROW, id=f"{i:03d}", split=("test", "valid", "train")[i % 3],
                 caption="a slow, dark organ chorale in a minor key" if i % 2 else "an organ tune") for i in range(60)]
    test, valid = pick_prompts(rows, 8), pick_prompts(rows, 8, split="valid")
    assert len(test) == len(valid) == 8
    assert {r["split"] for r in test} == {"test"} and {r["split"] for r in valid} == {"valid"}
    assert pick_prompts(rows, 8, seed=0) == test  # deterministic for a seed


def test_generate_passes_sampling_settings_through():
    """top_k 1 leaves no randomness: two seeds give the same audio; the default (250) does not."""
    import musiclens.models.organism as O
    from musiclens.organism.evaluate import generate

    model, tok = O.load_organism_hf()
    a, b = (generate(model, tok, ["a slow organ chorale"], 0.3, seed=s, top_k=1) for s in (0, 1))
    assert np.array_equal(a[0], b[0])
    c, d = (generate(model, tok, ["a slow organ chorale"], 0.3, seed=s) for s in (0, 1))
    assert not np.array_equal(c[0], d[0])


def test_generate_with_context_contrast_over_several_batches():
    """Context contrast in the bench's own generation: each batch is the library's contrasted generation (same
    seeds), so it differs from plain sampling, and the second batch works too (HF appends its guidance processor
    to the list it is given: a shared list would hold it twice)."""
    import musiclens.models.organism as O
    from musiclens.models import MusicModel
    from musiclens.organism.evaluate import generate

    model, tok = O.load_organism_hf()
    prompts = ["a slow organ chorale", "a fast flute tune", "a loud trumpet tune"]
    got = generate(model, tok, prompts, 0.4, seed=0, batch=2, contrast_weight=2.0, contrast_window=4)
    plain = generate(model, tok, prompts, 0.4, seed=0, batch=2)
    assert len(got) == 3 and not any(np.array_equal(g, p) for g, p in zip(got, plain))
    mm = MusicModel(model, tok, "organism")
    # the second batch, seed 0 + 2; `generate` samples one frame past the clip (frames + K steps), and the
    # codec's last frames depend on where the codes end, so the library call samples those 21 frames too
    lib = mm.generate(prompts[2:], n_frames=21, seed=2, contrast_weight=2.0, contrast_window=4).audio[0].numpy()
    np.testing.assert_allclose(got[2], lib[: len(got[2])], atol=1e-4)


def test_generate_keeping_copies_the_source_codes_as_far_as_they_go():
    """All four codebooks kept: the clip is the source through the codec; a shorter source is kept only as far
    as it goes, and sampling (different per seed) takes over after it."""
    import torch

    import musiclens.models.organism as O
    from musiclens.models import MusicModel
    from musiclens.organism.evaluate import generate_keeping

    model, tok = O.load_organism_hf()
    mm = MusicModel(model, tok, "organism")
    t = np.arange(8000) / 16000
    src = [0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32), 0.3 * np.sin(2 * np.pi * 440 * t[:4000])]
    a, b = (generate_keeping(model, tok, ["a slow organ chorale", "a fast flute tune"], src, [0, 1, 2, 3], 0.5,
                             seed=s) for s in (0, 1))
    assert len(a[0]) == len(a[1]) == 8000
    through = mm.decode_codes(mm.encode_audio(torch.as_tensor(src[0])[None]))[0].numpy()
    np.testing.assert_allclose(a[0], through, atol=1e-4)
    np.testing.assert_allclose(a[0], b[0], atol=1e-4)  # nothing left to sample
    assert np.abs(a[1][:3000] - b[1][:3000]).max() < 1e-3 < np.abs(a[1][5000:] - b[1][5000:]).max()


def test_paired_tags_counts_clips_and_refuses_other_captions():
    from musiclens.organism.evaluate import paired_tags

    def run(tags):
        return [{"caption": f"c{i}", "named": {"instrument": "piano"} if i < 4 else {}, "tag": {"instrument": t}}
                for i, t in enumerate(tags)]

    a = run(["piano", "piano", "organ", "organ", "piano"])
    b = run(["piano", "organ", "piano", "flute", "organ"])
    r = paired_tags(a, b, "instrument")
    assert (r["n"], r["both_right"], r["a_only"], r["b_only"], r["neither"]) == (4, 1, 1, 1, 1)  # clip 4 names none
    assert r["accuracy_a"] == r["accuracy_b"] == 0.5 and r["p_sign_test"] == 1.0
    with pytest.raises(MusiclensError, match="same captions"):
        paired_tags(a, b[::-1], "instrument")


def test_generation_eval_measures_the_source_clips_as_ground_truth(tmp_path):
    """The source-clip reference measures the captions' own audio: dark tones below bright ones, raw and decoded."""
    import json

    import soundfile as sf

    import musiclens.models.organism as O
    from musiclens.organism.evaluate import generation_eval

    sr = O.SAMPLE_RATE
    (tmp_path / "audio").mkdir()
    t = np.arange(sr) / sr
    rows = []
    for i in range(6):
        bright = i % 2 == 1
        f = [220.0 * h for h in (range(1, 12) if bright else (1,))]
        y = 0.3 * sum(np.sin(2 * np.pi * x * t) for x in f) / len(f)
        sf.write(tmp_path / "audio" / f"{i:06d}.wav", y.astype(np.float32), sr, subtype="PCM_16")
        rows.append(dict(ROW, id=f"{i:06d}", path=f"audio/{i:06d}.wav", split="test", brightness="bright" if bright else "dark",
                         caption=f"a {'bright' if bright else 'dark'} organ tune"))
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tok = O.load_organism_hf()
    res = generation_eval(model, tok, rows, n_prompts=6, n_uncond=0, seconds=0.5, corpus=tmp_path, reference=True)
    assert res["brightness"]["n"]["dark"] == 3 and res["brightness"]["n"]["bright"] == 3
    ref = res["source_clips"]
    assert ref["n_clips"] == 6
    for kind in ("as_rendered", "through_codec"):
        med = ref[kind]["brightness"]["median"]
        assert med["dark"] < 400 < med["bright"], (kind, med)  # a 220 Hz sine against its harmonics up to 2.4 kHz
    assert "source_clips" not in generation_eval(model, tok, rows, n_prompts=2, n_uncond=0, seconds=0.3)


def test_paired_tempo_counts_only_moved_estimates():
    from musiclens.organism.evaluate import paired_tempo

    def run(bpms):
        return [{"caption": f"c{i}", "named": {"tempo": "fast"} if i < 4 else {}, "bpm_requested": 160.0, "bpm": x}
                for i, x in enumerate(bpms)]

    a = run([160.0, 80.0, 150.0, 120.0, 90.0])
    b = run([161.0, 160.0, 100.0, 170.0, 60.0])  # clip 0 within 4 %; clip 4 names no tempo
    r = paired_tempo(a, b)
    assert (r["n"], r["moved"], r["a_closer"], r["b_closer"]) == (4, 3, 1, 2)
    assert r["p_sign_test"] == 1.0  # 2 of 3 is no evidence either way
    many = paired_tempo(run([80.0] * 4), run([160.0] * 4))
    assert many["b_closer"] == 4 and many["p_sign_test"] == 0.125  # every moved clip won by b: 2 x 0.5^4
    # a silent generation (BPM NaN) has no tempo: it is neither counted nor "moved"
    silent = paired_tempo(run([160.0, 80.0, 150.0, float("nan"), 90.0]), b)
    assert (silent["n"], silent["moved"], silent["a_closer"], silent["b_closer"]) == (3, 2, 1, 1)
    with pytest.raises(MusiclensError, match="same captions"):
        paired_tempo(a, b[::-1])


def test_caption_bpm_is_the_named_bpm_or_the_middle_of_the_words_third():
    from musiclens.organism.evaluate import caption_bpm

    assert caption_bpm("a lively organ tune at 152 BPM, with a rock beat", "fast") == 152.0
    assert [caption_bpm("a tune", w) for w in ("slow", "moderate", "fast")] == [80.0, 120.0, 160.0]
    with pytest.raises(MusiclensError, match="unknown tempo word 'medium'"):
        caption_bpm("a tune", "medium")


def test_adherence_reads_tempo_against_the_source_clip_and_against_the_caption():
    """Generations that play exactly the caption's BPM score 1 against it, and less against hidden source BPMs."""
    from musiclens.organism.evaluate import _adherence, caption_bpm

    words = ["slow", "slow", "moderate", "moderate", "fast", "fast", "fast"]
    source = [95.0, 62.0, 101.0, 139.0, 141.0, 178.0, 150.0]
    captions = [f"a {w} tune" for w in words[:-1]] + ["a fast tune at 150 BPM"]
    prompts = [dict(caption=c, bpm=b) for c, b in zip(captions, source)]
    named = [{"tempo": w} for w in words]
    meas = [{"bpm": caption_bpm(c, w), "onset_rate": caption_bpm(c, w) / 30} for c, w in zip(captions, words)]
    t = _adherence(prompts, named, meas, [], with_tags=False)["tempo"]
    assert t["n"] == 7 and t["spearman_bpm_caption"] == pytest.approx(1.0)
    assert 0.5 < t["spearman_bpm"] < 0.99  # the words order the thirds, not the BPMs inside one


def test_the_cards_tempo_row_shows_the_captions_reading_when_the_result_holds_it():
    from musiclens.organism.card import _tempo_line

    t = {"spearman_bpm": 0.375, "p_bpm": 2e-29, "n": 839, "spearman_onset_rate": 0.5}
    old = _tempo_line(t)
    new = _tempo_line({**t, "spearman_bpm_caption": 0.401})
    assert "0.38" in old and "caption" not in old and old.count("|") == 3
    assert new.startswith(old[:-2]) and "caption itself names or implies 0.40 |" in new and new.count("|") == 3
