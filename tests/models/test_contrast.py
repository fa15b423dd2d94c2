"""Context-contrast sampling (models/contrast.py) on a tiny random MusicGen."""

import pytest
import torch
from transformers import LogitsProcessorList

from musiclens.errors import MusiclensError
from musiclens.models.contrast import ContextContrast, positions_at


def _generate_with(m, proc, prompts=("a", "b"), steps=16, guidance=3.0):
    inputs = m.text_inputs(list(prompts))
    torch.manual_seed(0)
    with proc:
        m.hf.generate(**inputs, max_new_tokens=steps, do_sample=True, guidance_scale=guidance,
                      logits_processor=LogitsProcessorList([proc]))
    return proc


def test_the_window_keeps_its_true_positions(tiny_model):
    """positions_at over every column is the plain pass; a cut window differs with 0-based positions."""
    proc = _generate_with(tiny_model, ContextContrast(tiny_model.hf, 4, 1.0))
    ids, cond, dec = proc.history, proc.conditioning, tiny_model.hf.decoder
    full = dec(input_ids=ids, use_cache=False, **cond).logits
    with positions_at(dec, torch.arange(ids.shape[1])):
        same = dec(input_ids=ids, use_cache=False, **cond).logits
    assert torch.equal(same, full)
    cols = torch.tensor([0, *range(ids.shape[1] - 4, ids.shape[1])])
    with positions_at(dec, cols):
        placed = dec(input_ids=ids[:, cols], use_cache=False, **cond).logits[:, -1]
    at_zero = dec(input_ids=ids[:, cols], use_cache=False, **cond).logits[:, -1]
    assert not torch.allclose(placed, at_zero, atol=1e-4)


def test_local_scores_equal_the_full_pass_with_the_middle_masked(tiny_model):
    """BOS + the last W steps at their positions = the whole past with every other key masked out."""
    W = 5
    proc = _generate_with(tiny_model, ContextContrast(tiny_model.hf, W, 1.0))
    ids = proc.history
    T = ids.shape[1]
    assert T == 16  # BOS + one column per generated step but the last, whose prediction ends the loop
    mask = torch.zeros(ids.shape[0] // tiny_model.n_codebooks, T, dtype=torch.long)
    mask[:, 0] = 1
    mask[:, T - W:] = 1
    masked = tiny_model.hf.decoder(input_ids=ids, attention_mask=mask, use_cache=False,
                                   **proc.conditioning).logits[:, -1]
    assert torch.allclose(proc.local_scores(), masked, atol=1e-5)
    full = tiny_model.hf.decoder(input_ids=ids, use_cache=False, **proc.conditioning).logits[:, -1]
    assert not torch.allclose(full, masked, atol=1e-4)


def test_the_recorded_history_is_what_generation_fed_the_decoder(tiny_model, monkeypatch):
    """Both CFG halves of the history are the delay-pattern ids of the codes generation returned."""
    m = tiny_model
    used = []
    leave = ContextContrast.__exit__
    monkeypatch.setattr(ContextContrast, "__exit__", lambda self, *exc: (used.append(self), leave(self, *exc))[1])
    out = m.generate(["a", "b"], seconds=0.3, seed=0, guidance_scale=3.0, contrast_weight=0.5, contrast_window=4)
    ids = m.decoder_input_ids(out.codes)  # [B*K, F + K]
    hist = used[0].history
    BK = ids.shape[0]
    assert hist.shape == (2 * BK, ids.shape[1] - 1)  # every column but the last, which nothing predicts from
    assert torch.equal(hist[:BK], ids[:, :-1]) and torch.equal(hist[BK:], ids[:, :-1])


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_weight_zero_or_a_window_longer_than_the_clip_is_plain_sampling(tiny_model, guidance):
    m = tiny_model
    plain = m.generate(["a", "b"], seconds=0.4, seed=3, guidance_scale=guidance).codes  # 20 frames
    assert torch.equal(m.generate(["a", "b"], seconds=0.4, seed=3, guidance_scale=guidance,
                                  contrast_weight=0.0).codes, plain)
    assert torch.equal(m.generate(["a", "b"], seconds=0.4, seed=3, guidance_scale=guidance,
                                  contrast_weight=2.0, contrast_window=40).codes, plain)
    contrasted = m.generate(["a", "b"], seconds=0.4, seed=3, guidance_scale=guidance, contrast_weight=2.0,
                            contrast_window=4).codes
    assert contrasted.shape == plain.shape and not torch.equal(contrasted, plain)


def test_contrast_combines_with_kept_codebooks_and_cleans_up(tiny_model):
    m = tiny_model
    hooks = len(m.hf.decoder._forward_pre_hooks)
    ref = m.generate(["a", "b"], seconds=0.4, seed=0).codes
    got = m.generate(["c", "d"], seconds=0.4, seed=1, keep_codes=ref, keep_codebooks=[0], contrast_weight=1.0,
                     contrast_window=4).codes
    assert torch.equal(got[:, 0], ref[:, 0])  # the force wins over the contrast
    assert len(m.hf.decoder._forward_pre_hooks) == hooks
    with pytest.raises(MusiclensError, match="window"):
        m.generate(["a"], seconds=0.2, contrast_weight=1.0, contrast_window=0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(MusiclensError, match="weight"):
            m.generate(["a"], seconds=0.2, contrast_weight=bad)
    assert len(m.hf.decoder._forward_pre_hooks) == hooks


def test_melody_is_refused_in_one_line(tiny_melody):
    with pytest.raises(MusiclensError, match="melody"):
        tiny_melody.generate(["a"], seconds=0.2, contrast_weight=1.0)


def test_captures_and_the_step_counter_skip_the_window_forward(tiny_model):
    """A capture during contrasted generation sees one call per step, as plain generation does."""
    from musiclens.hooks import capture

    m = tiny_model
    seen = []
    for weight in (0.0, 2.0):
        with capture(m, ["layer.2"]) as cap:
            m.generate(["a", "b"], seconds=0.3, seed=0, contrast_weight=weight, contrast_window=4)
        seen.append(([tuple(r.shape) for r in cap.records["layer.2"]], cap.steps["layer.2"]))
    assert seen[0] == seen[1]
    shapes, steps = seen[1]
    assert steps == list(range(len(steps))) and all(s[1] == 1 for s in shapes[1:])
