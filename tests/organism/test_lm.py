"""The organism's language model: delay pattern as generate() builds it, training, export, loading."""

from __future__ import annotations

import numpy as np
import torch

from musiclens.models import organism as O
from musiclens.organism.codec import CodecTrainConfig, train_codec
from musiclens.organism.codes import load_codes, precompute
from musiclens.organism.lm import CodeData, LMTrainConfig, delay_pattern, heldout_loss, lm_loss, train_lm

TINY_CODEC = dict(codebook_size=32, num_filters=4, hidden_size=16)


def test_delay_pattern_matches_hf_generation_layout():
    from transformers import MusicgenForCausalLM

    dec = MusicgenForCausalLM(O.decoder_config(codebook_size=32, layers=1, d_model=16, heads=2, ffn=32))
    codes = torch.randint(0, 32, (2, 4, 6))
    ids = delay_pattern(codes, pad=32)
    assert ids.shape == (2, 4, 10)
    # HF's mask for a BOS-only prompt of the same length: pads where ours has pads, -1 where ours has codes
    bos = torch.full((2 * 4, 1), 32)
    _, mask = dec.build_delay_pattern_mask(bos, pad_token_id=32, max_length=10)
    mask = mask.reshape(2, 4, 10)
    assert torch.equal(mask == -1, ids != 32)
    assert torch.equal(ids[:, 2, 3:9], codes[:, 2])
    assert (ids[:, :, 0] == 32).all()


def test_precompute_train_resume_and_load(tiny_corpus, tmp_path):
    train_codec(CodecTrainConfig(steps=4, warmup_steps=2, batch_size=2, crop_seconds=0.2, kmeans_batches=2,
                                 **TINY_CODEC), tiny_corpus, tmp_path, None, False)
    s = precompute(tiny_corpus, tmp_path)
    assert s["clips"] == 12 and s["frames"] == 12 * 100
    codes, text, rows = load_codes(tmp_path)
    assert codes["codes"].shape == (12, 4, 100) and int(codes["codes"].max()) < 32
    assert text["states"].shape[0] == 12 and text["states"].shape[2] == 384
    assert float(text["states"][0].float().abs().sum()) > 0

    # loss falls on a fixed batch within a few steps (the model can learn the codes)
    data = CodeData(tmp_path)
    cfg = LMTrainConfig(steps=20, batch_size=4, crop_frames=40, layers=2, d_model=32, heads=2, ffn=64,
                        dropout=0.0, lr=3e-3, warmup=2, eval_every=10, checkpoint_minutes=100)
    s = train_lm(cfg, tmp_path, None, False)
    assert s["step"] == 20
    model, tok = O.load_organism_hf(path=tmp_path / "lm" / "hf")
    idx = data.indices("valid")
    after = heldout_loss(model, data, idx, 40)
    assert after < np.log(32) - 0.3  # well below the uniform-code loss
    # the shipped-style folder has no MiniLM weights (they come from the package)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lm" / "hf" / "model.safetensors"), "pt") as f:
        assert not any(k.startswith("text_encoder.") for k in f.keys())

    # resume continues the step count and the schedule
    cfg.steps = 22
    assert train_lm(cfg, tmp_path, None, True)["step"] == 22

    # fine-tuning (the tune stage): starts from the LM checkpoint, adds the caption-contrast hinge, logs per-concept gaps
    import json

    import pytest

    from musiclens.errors import MusiclensError

    tcfg = LMTrainConfig(steps=2, batch_size=4, crop_frames=40, layers=2, d_model=32, heads=2, ffn=64, lr=1e-9,
                         warmup=1, eval_every=2, checkpoint_minutes=100, init=str(tmp_path / "lm" / "ckpt.pt"),
                         contrast_weight=1.0, contrast_margin=10.0, contrast_frames=20, contrast_concepts="tempo")
    assert train_lm(tcfg, tmp_path, None, False, subdir="tune")["step"] == 2
    rec = json.loads((tmp_path / "tune" / "log.jsonl").read_text().splitlines()[-1])
    # margin 10 nats is far beyond any gap an untrained model has: the hinge is active, at about 10 - gap
    assert 9.0 < rec["contrast_loss"] < 11.0 and rec["concept_gap"]["tempo"] is not None
    assert (tmp_path / "tune" / "contrasts.safetensors").exists()
    from musiclens.organism.sensitivity import flip_pairs

    named = len(flip_pairs(data.rows, data.indices("train"), "tempo"))
    assert json.loads((tmp_path / "tune" / "progress.json").read_text())["contrast_pairs"] == {"tempo": named}
    tuned, _ = O.load_organism_hf(path=tmp_path / "tune" / "hf")
    base = torch.load(tmp_path / "lm" / "ckpt.pt", weights_only=False)["decoder"]
    k = next(k for k in base if k.endswith("fc1.weight"))
    assert torch.allclose(tuned.decoder.state_dict()[k], base[k], atol=1e-5)  # lr ~0: still the LM's weights
    # --contrast-flips all: every other value, so at least twice the opposite-only flips (3-valued concepts)
    from musiclens.organism.lm import Contrasts

    train = data.indices("train")
    one = Contrasts(data, train, ["tempo", "drums"], tmp_path / "c1.safetensors")
    every = Contrasts(data, train, ["tempo", "drums"], tmp_path / "c2.safetensors", every=True)
    assert len(one.by_clip) > 0 and every.states.shape[0] >= 2 * one.states.shape[0]
    assert set(every.by_clip) >= set(one.by_clip)
    assert sum(every.counts.values()) == every.states.shape[0] and set(every.counts) == {"tempo", "drums"}
    with pytest.raises(MusiclensError, match="nothing for the contrast hinge"):
        Contrasts(data, train[:0], ["tempo"], tmp_path / "c3.safetensors")
    assert not (tmp_path / "c3.safetensors").exists()
    with pytest.raises(MusiclensError, match="already has a checkpoint"):
        train_lm(tcfg, tmp_path, None, False, subdir="tune")
    tcfg.init = str(tmp_path / "nope.pt")
    with pytest.raises(MusiclensError, match="not found"):
        train_lm(tcfg, tmp_path / "other", None, False, subdir="tune")

    # the beat hinge (organism/rhythm.py): active on clips with drums whose codes reach past the longest jump
    index = tmp_path / "codes" / "index.json"
    meta = json.loads(index.read_text())
    for r in meta["rows"]:
        r["drums"] = "rock"
    index.write_text(json.dumps(meta))
    bcfg = LMTrainConfig(steps=2, batch_size=8, crop_frames=40, layers=2, d_model=32, heads=2, ffn=64, lr=1e-9,
                         warmup=1, eval_every=2, checkpoint_minutes=100, init=str(tmp_path / "lm" / "ckpt.pt"),
                         beat_weight=1.0, beat_margin=10.0, beat_window=10)
    assert train_lm(bcfg, tmp_path, None, False, subdir="tune_beat")["step"] == 2
    rec = json.loads((tmp_path / "tune_beat" / "log.jsonl").read_text().splitlines()[-1])
    assert 9.0 < rec["beat_loss"] < 11.0 and "contrast_loss" not in rec  # about 10 - (a small gap)

    # training on corrupted pasts (--lm-input-noise) runs, and its share is saved with the stage's config
    ncfg = LMTrainConfig(steps=2, batch_size=4, crop_frames=40, layers=2, d_model=32, heads=2, ffn=64, lr=1e-9,
                         warmup=1, eval_every=2, checkpoint_minutes=100, init=str(tmp_path / "lm" / "ckpt.pt"),
                         input_noise=0.3)
    assert train_lm(ncfg, tmp_path, None, False, subdir="tune_noise")["step"] == 2
    saved = json.loads((tmp_path / "tune_noise" / "config.json").read_text())
    assert saved["input_noise"] == 0.3 and saved["input_noise_kind"] == "sampled"
    assert np.isfinite(json.loads((tmp_path / "tune_noise" / "log.jsonl").read_text().splitlines()[-1])["train_loss"])

    # null conditions (zero states + empty mask) give finite losses
    ids, st, m = data.batch(idx[:2], 40, 32, None, null_kind=np.array([1, 2]))
    loss, per = lm_loss(model, ids, st, m)
    assert torch.isfinite(per).all() and int(m[0].sum()) == 0 and int(m[1].sum()) > 0

    # first_weight: a weighted mean that counts each first-codebook token that many times
    from musiclens.organism.lm import token_ce

    with torch.no_grad():
        ce, real = token_ce(model, ids, st, m)
        heavy, per4 = lm_loss(model, ids, st, m, first_weight=4.0)
        plain, _ = lm_loss(model, ids, st, m)
    want = (4 * ce[:, 0].sum() + ce[:, 1:].sum()) / (4 * real[:, 0].sum() + real[:, 1:].sum())
    assert float(heavy) == pytest.approx(float(want), rel=1e-5)
    assert float(plain) == pytest.approx(float(ce.sum() / real.sum()), rel=1e-5)
    assert abs(float(heavy) - float(plain)) > 1e-4 and torch.allclose(per4, per, atol=1e-5)


def test_precompute_stops_on_minutes_and_resumes_to_the_same_codes(tiny_corpus, tmp_path, capsys):
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    train_codec(CodecTrainConfig(steps=2, warmup_steps=1, batch_size=2, crop_seconds=0.2, kmeans_batches=2,
                                 **TINY_CODEC), tiny_corpus, a, None, False)
    b.mkdir()
    shutil.copytree(a / "codec", b / "codec")
    whole = precompute(tiny_corpus, a, max_seconds=1.0)
    # minutes=0: one chunk, then stop with the progress saved
    first = precompute(tiny_corpus, b, max_seconds=1.0, minutes=0, chunk=5)
    assert first == {"done": False, "clips_encoded": 5, "clips": 12}
    assert (b / "codes" / "partial.safetensors").exists() and not (b / "codes" / "index.json").exists()
    # a partial made for another cut of the clips is not reused
    assert precompute(tiny_corpus, b, max_seconds=0.5, minutes=0, chunk=5, resume=True)["clips_encoded"] == 5
    assert "encoding from the start" in capsys.readouterr().out
    precompute(tiny_corpus, b, max_seconds=1.0, minutes=0, chunk=5)                   # 5 of 12 again
    assert precompute(tiny_corpus, b, max_seconds=1.0, minutes=0, chunk=5, resume=True)["clips_encoded"] == 10
    done = precompute(tiny_corpus, b, max_seconds=1.0, chunk=5, resume=True)
    assert done["done"] and done["clips"] == whole["clips"] == 12 and done["frames"] == whole["frames"] == 12 * 50
    assert not (b / "codes" / "partial.safetensors").exists()
    (ca, _, ra), (cb, _, rb) = load_codes(a, text=False), load_codes(b, text=False)
    assert torch.equal(ca["codes"], cb["codes"]) and [r["id"] for r in ra] == [r["id"] for r in rb]
    assert precompute(tiny_corpus, b, resume=True) == done  # finished: returned as it is


def test_token_ce_reads_the_same_logits_as_the_decoders_forward():
    from musiclens.organism.lm import token_ce

    model = _holder(top_k=250)
    ids = delay_pattern(torch.randint(0, 32, (2, 4, 12)), pad=32)
    states, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        ce, real, hidden = token_ce(model, ids, states, mask, with_hidden=True)
        logits = model.decoder(input_ids=ids[..., :-1].reshape(8, -1),
                               encoder_hidden_states=model.enc_to_dec_proj(states),
                               encoder_attention_mask=mask).logits.reshape(2, 4, 15, -1)
    tgt = ids[..., 1:]
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, 32), tgt.clamp(max=31).reshape(-1),
                                             reduction="none").reshape(2, 4, 15) * (tgt != 32)
    assert hidden.shape == (2, 15, 32)
    assert torch.allclose(ce, want, atol=1e-5) and int(real.sum()) == 2 * 4 * 12


def _holder(top_k: int):
    """The parts of a MusicGen that token_ce and corrupt_inputs use, around a real tiny MusicgenForCausalLM."""
    from transformers import GenerationConfig, MusicgenForCausalLM

    cfg = O.decoder_config(codebook_size=32, layers=2, d_model=32, heads=2, ffn=64)

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = MusicgenForCausalLM(cfg).eval()
            self.enc_to_dec_proj = torch.nn.Linear(384, 32)
            self.config = type("C", (), {"decoder": cfg})()
            self.generation_config = GenerationConfig(top_k=top_k)

    torch.manual_seed(0)
    return Holder()


def test_corrupt_inputs_replaces_the_chosen_share_of_real_codes_and_never_a_pad():
    from musiclens.organism.lm import corrupt_inputs

    model = _holder(top_k=250)
    ids = delay_pattern(torch.randint(0, 32, (4, 4, 60)), pad=32)
    states, mask = torch.randn(4, 5, 384), torch.ones(4, 5, dtype=torch.long)
    real = ids != 32
    for kind in ("uniform", "sampled"):
        same = corrupt_inputs(model, ids, states, mask, 0.0, kind, torch.Generator().manual_seed(1))
        assert torch.equal(same, ids)
        out = corrupt_inputs(model, ids, states, mask, 0.4, kind, torch.Generator().manual_seed(1))
        again = corrupt_inputs(model, ids, states, mask, 0.4, kind, torch.Generator().manual_seed(1))
        assert torch.equal(out, again)  # reproducible from the generator
        assert torch.equal(out[~real], ids[~real]) and int(out[real].max()) < 32  # pads kept, codes stay codes
        changed = float((out != ids)[real].float().mean())
        # 40 % chosen, a chosen code redrawn as itself 1/32 of the time (uniform) or more often (sampled)
        assert 0.25 < changed <= 0.45, (kind, changed)


def test_corrupt_inputs_samples_each_code_from_the_logits_of_the_position_before():
    from musiclens.organism.lm import code_logits, corrupt_inputs, decoder_hidden

    model = _holder(top_k=1)  # top-k 1: the sample is the teacher-forced argmax
    ids = delay_pattern(torch.randint(0, 32, (2, 4, 20)), pad=32)
    states, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.long)
    out = corrupt_inputs(model, ids, states, mask, 0.5, "sampled", torch.Generator().manual_seed(3))
    with torch.no_grad():
        hidden = decoder_hidden(model, ids, states, mask)
        best = code_logits(model, hidden).argmax(-1)  # [B, K, T-1]
    chosen = out != ids
    assert int(chosen.sum()) > 0
    # every replaced code at t + 1 is what position t's logits ranked first
    assert torch.equal(out[..., 1:][chosen[..., 1:]], best[chosen[..., 1:]])


def test_span_mask_chooses_whole_frames_in_runs_on_every_codebook():
    from musiclens.organism.lm import span_mask

    m = span_mask((64, 4, 204), 0.4, 16, torch.Generator().manual_seed(0))
    frames = m[:, 0, 1:201]  # codebook 0's frame f sits at column f + 1
    for q in range(1, 4):  # codebook q's frame f at column f + q + 1: the same frames
        assert torch.equal(m[:, q, q + 1: q + 201], frames)
    assert not m[:, 0, 0].any() and not m[:, 3, :4].any()  # BOS and the delay pattern's leading pads
    share = float(frames.float().mean())
    assert abs(share - (1 - np.exp(-0.4))) < 0.05, share
    # runs: a chosen frame's run goes on for at least 16 frames unless the crop ends first
    starts = frames[:, 1:] & ~frames[:, :-1]
    b, f = starts.nonzero(as_tuple=True)
    for bi, fi in zip(b.tolist(), f.tolist()):
        if fi + 1 + 16 <= 200:
            assert frames[bi, fi + 1: fi + 17].all()


def test_stale_runs_replay_the_same_rows_codes_from_a_few_frames_earlier():
    from musiclens.organism.lm import STALE_LAG, corrupt_inputs

    model = _holder(top_k=250)
    torch.manual_seed(0)
    ids = delay_pattern(torch.randint(0, 32, (6, 4, 80)), pad=32)
    real = ids != 32
    out = corrupt_inputs(model, ids, None, None, 0.4, "stale", torch.Generator().manual_seed(2), span=8)
    again = corrupt_inputs(model, ids, None, None, 0.4, "stale", torch.Generator().manual_seed(2), span=8)
    assert torch.equal(out, again) and torch.equal(out[~real], ids[~real])
    for b in range(6):
        changed = (out[b] != ids[b]).nonzero()
        assert len(changed) > 0
        # one lag per row, always backwards, the same for every codebook: find it from the first change
        q, c = changed[0].tolist()
        lags = [lag for lag in range(STALE_LAG[0], STALE_LAG[1] + 1)
                if c - lag >= 0 and out[b, q, c] == ids[b, q, c - lag]]
        assert lags
        ok = [lag for lag in lags
              if all(int(out[b, qq, cc]) == int(ids[b, qq, cc - lag]) for qq, cc in changed.tolist())]
        assert ok, b  # every changed code is the real code `lag` columns (frames) earlier
