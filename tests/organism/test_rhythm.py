"""The beat-splice test: it reads the frames after the cut, and it sees a beat an LM has learnt."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import MusicgenForCausalLM

from musiclens.models import organism as O
from musiclens.organism.lm import delay_pattern, lm_loss
from musiclens.organism.rhythm import JUMPS, _spliced, beat_frames, beat_splice_gap, eligible, splice_losses

V, K = 16, 4  # vocabulary, codebooks
HIT = 0  # the "drum hit" code of the synthetic clips


class TinyLM(torch.nn.Module):
    """The parts of MusicgenForConditionalGeneration the LM losses use: a real MusicGen decoder + projection."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.decoder = MusicgenForCausalLM(O.decoder_config(codebook_size=V, layers=2, d_model=64, heads=4, ffn=128,
                                                            dropout=0.0))
        self.enc_to_dec_proj = torch.nn.Linear(8, 64)
        self.config = SimpleNamespace(decoder=self.decoder.config)


def beat_clips(n: int, frames: int, bpm: float, rng: np.random.Generator) -> SimpleNamespace:
    """Clips (an `lm.CodeData` stand-in) that hold one random code per codebook and play HIT on the beat.

    The beat starts at frame 0 of every clip, so a few steps of training find it.
    """
    codes = torch.as_tensor(rng.integers(1, V, size=(n, K, 1))).repeat(1, 1, frames)
    codes[:, :, np.round(np.arange(0, frames - 0.5, beat_frames(bpm))).astype(int)] = HIT
    return SimpleNamespace(codes=codes, lengths=np.full(n, frames), device="cpu",
                           rows=[{"bpm": bpm, "drums": "rock"} for _ in range(n)],
                           states=torch.zeros(n, 3, 8), mask=torch.ones(n, 3, dtype=torch.long))


def test_splice_and_eligible_clips():
    codes = torch.arange(2 * 30).reshape(2, 30)
    got = _spliced(codes, t0=5, jump=7, window=4)
    assert got.tolist() == [[0, 1, 2, 3, 4, 12, 13, 14, 15], [30, 31, 32, 33, 34, 42, 43, 44, 45]]
    data = SimpleNamespace(rows=[{"bpm": 150.0, "drums": "rock"}, {"bpm": 150.0, "drums": "none"},
                                 {"bpm": 60.0, "drums": "light"}, {"drums": "rock"}],
                           lengths=np.array([200, 200, 200, 200]))
    # 150 BPM: P = 20 frames, longest jump 50; 60 BPM: P = 50, longest jump 125 > 200 - 100 - 50
    assert eligible(data, np.arange(4), t0=100, window=50).tolist() == [0]
    assert eligible(data, np.arange(4), t0=100, window=50, drums_only=False).tolist() == [0, 1]
    assert eligible(data, np.arange(4), t0=20, window=50).tolist() == [0, 2]
    assert eligible(data, np.arange(4), t0=35, window=50).tolist() == [0]  # 35 + 125 + 50 > 200
    assert eligible(data, np.arange(4), t0=35, window=50, jumps=(2.0, 2.25)).tolist() == [0, 2]  # 35 + 112 + 50


def test_splice_losses_read_only_the_frames_after_the_cut():
    """Same figure as the mean loss of the in-phase clip's frames >= t0, computed position by position."""
    model = TinyLM().eval()
    data = beat_clips(3, 120, 150.0, np.random.default_rng(1))
    t0, window = 40, 30
    got = splice_losses(model, data, np.arange(3), t0, window)
    by_book = splice_losses(model, data, np.arange(3), t0, window, by_codebook=True)
    assert by_book["in_phase"].shape == (3, K)
    for name in JUMPS:  # every codebook has `window` tokens after the cut: their mean is the clip's figure
        np.testing.assert_allclose(by_book[name].mean(axis=1), got[name], atol=1e-5)
    pad = model.config.decoder.pad_token_id
    for i in range(3):
        codes = _spliced(data.codes[i], t0, int(round(JUMPS["in_phase"][0] * beat_frames(150.0))), window)
        ids = delay_pattern(codes[None], pad)
        with torch.no_grad():
            logits = model.decoder(input_ids=ids[0, :, :-1], encoder_hidden_states=model.enc_to_dec_proj(
                data.states[i: i + 1]), encoder_attention_mask=data.mask[i: i + 1]).logits  # [K, T-1, V]
        ce = np.zeros((K, window))
        for k in range(K):
            for f in range(t0, t0 + window):  # codebook k's frame f is predicted at position f + k
                ce[k, f - t0] = float(torch.nn.functional.cross_entropy(logits[k, f + k], codes[k, f]))
        assert got["in_phase"][i] == pytest.approx(ce.mean(), abs=1e-4)
        np.testing.assert_allclose(by_book["in_phase"][i], ce.mean(axis=1), atol=1e-4)


def test_an_lm_trained_on_a_steady_beat_finds_off_grid_continuations_less_likely():
    rng = np.random.default_rng(0)
    held = beat_clips(24, 120, 150.0, np.random.default_rng(1))
    model = TinyLM(seed=0)
    before = beat_splice_gap(model, held, np.arange(24), t0=40, window=30)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    pad = model.config.decoder.pad_token_id
    for _ in range(120):
        d = beat_clips(16, 120, 150.0, rng)
        loss, _ = lm_loss(model, delay_pattern(d.codes, pad), d.states, d.mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = beat_splice_gap(model, held, np.arange(24), t0=40, window=30)
    assert before["n"] == after["n"] == 24
    assert abs(before["sixteenth_off"]["gap"]) < 0.03  # an untrained LM knows no beat
    for off in ("sixteenth_off", "eighth_off"):
        assert after[off]["gap"] > 0.05 and after[off]["p_sign"] < 1e-3, after
        # Every codebook plays the hit, but under the delay pattern codebook k of a frame is predicted after
        # codebooks 0..k-1 of that frame: only the first codebook must know *when* the hit is due.
        books = after[off]["gap_by_codebook"]
        assert len(books) == K and np.mean(books) == pytest.approx(after[off]["gap"], abs=1e-5)
        assert books[0] > 0.2 and books[0] > 3 * max(books[1:]), books


def test_beat_contrast_loss_teaches_the_beat_and_skips_clips_without_drums():
    from musiclens.organism.rhythm import beat_contrast_loss

    rng = np.random.default_rng(0)
    held = beat_clips(24, 120, 150.0, np.random.default_rng(1))
    model = TinyLM(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):  # the hinge alone, no likelihood term
        loss = beat_contrast_loss(model, beat_clips(16, 120, 150.0, rng), np.arange(16), rng, margin=0.3,
                                  window=30, t0_range=(30, 40))
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first - 0.1
    assert beat_splice_gap(model, held, np.arange(24), t0=40, window=30)["sixteenth_off"]["gap"] > 0.1
    quiet = beat_clips(4, 120, 150.0, rng)
    quiet.rows = [{"bpm": 150.0, "drums": "none"}] * 4
    assert beat_contrast_loss(model, quiet, np.arange(4), rng, margin=0.3, window=30, t0_range=(30, 40)) is None


def test_the_first_codebook_hinge_reads_codebook_0_alone():
    """`first_codebook` = the hinge on the first codebook's splice gap, which is not the all-codebook one."""
    from musiclens.organism.rhythm import beat_contrast_loss

    data = beat_clips(6, 120, 150.0, np.random.default_rng(2))
    model = TinyLM(seed=3).eval()
    per_k = splice_losses(model, data, np.arange(6), t0=40, window=30, by_codebook=True)
    gap = per_k["sixteenth_off"] - per_k["in_phase"]  # [clips, K]
    with torch.no_grad():
        first = beat_contrast_loss(model, data, np.arange(6), np.random.default_rng(0), margin=10.0, window=30,
                                   t0_range=(40, 40), first_codebook=True)
        every = beat_contrast_loss(model, data, np.arange(6), np.random.default_rng(0), margin=10.0, window=30,
                                   t0_range=(40, 40))
    assert float(first) == pytest.approx(float(np.mean(10.0 - gap[:, 0])), abs=1e-4)
    assert float(every) == pytest.approx(float(np.mean(10.0 - gap.mean(axis=1))), abs=1e-4)
    assert abs(float(first) - float(every)) > 1e-3


def test_holding_the_off_grid_side_leaves_only_the_on_beat_gradient():
    """hold_off_grid: same hinge value; its gradient is the on-beat loss's gradient (where it is active)."""
    from musiclens.organism.rhythm import _variants, _window_loss, beat_contrast_loss

    data = beat_clips(4, 120, 150.0, np.random.default_rng(2))
    model = TinyLM(seed=3).eval()
    params = list(model.decoder.parameters())

    def grad(loss):
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, gs)])

    kw = dict(margin=10.0, window=30, t0_range=(40, 40), first_codebook=True)  # margin 10: active on every clip
    free = beat_contrast_loss(model, data, np.arange(4), np.random.default_rng(0), **kw)
    held = beat_contrast_loss(model, data, np.arange(4), np.random.default_rng(0), hold_off_grid=True, **kw)
    assert float(held.detach()) == pytest.approx(float(free.detach()), abs=1e-5)
    pad = model.config.decoder.pad_token_id
    on_beat = _window_loss(model, *_variants(data, np.arange(4), [JUMPS["in_phase"][0]], 40, 30, pad),
                           by_codebook=True)[:, 0].mean()
    g_on, g_held, g_free = grad(on_beat), grad(held), grad(free)
    assert g_on.abs().max() > 0
    assert torch.allclose(g_held, g_on, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(g_free, g_on, atol=1e-6, rtol=1e-4)
