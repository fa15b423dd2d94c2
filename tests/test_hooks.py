"""Hook engine: capture, inject, branches, steps, cleanup."""

import pytest
import torch

from musiclens import hooks
from musiclens.errors import MusiclensError
from musiclens.hooks import Intervention, active_hooks, capture, inject

VARIANTS = ["tiny_model", "tiny_melody"]


@pytest.fixture(params=VARIANTS)
def model(request):
    return request.getfixturevalue(request.param)


def test_zero_vector_is_bit_exact(model):
    base = model.generate(["slow organ", "fast trumpet"], seconds=0.3, seed=11)
    with inject(model, [Intervention("layer.2", torch.zeros(model.d_model), coef=4.0)]):
        steered = model.generate(["slow organ", "fast trumpet"], seconds=0.3, seed=11)
    assert torch.equal(base.audio, steered.audio) and torch.equal(base.codes, steered.codes)


def test_nonzero_vector_changes_output(model):
    base = model.generate(["slow organ"], seconds=0.3, seed=11)
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    with inject(model, [Intervention("layer.1", v, coef=20.0)]):
        steered = model.generate(["slow organ"], seconds=0.3, seed=11)
    assert not torch.equal(base.codes, steered.codes)


def test_branch_isolation_first_step(model):
    """Steering the conditional branch leaves the unconditional one untouched at step 0."""
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    with capture(model, ["layer.4"], steps=(0, 1)) as clean:
        model.generate(["slow organ", "bright flute"], seconds=0.1, seed=2)
    with inject(model, [Intervention("layer.1", v, coef=5.0)], branch="cond"), \
            capture(model, ["layer.4"], steps=(0, 1)) as steered:
        model.generate(["slow organ", "bright flute"], seconds=0.1, seed=2)
    a, b = clean.records["layer.4"][0], steered.records["layer.4"][0]
    assert a.shape[0] == 4                               # [cond 2 ; uncond 2]
    assert torch.equal(a[2:], b[2:])                     # uncond unchanged
    assert not torch.allclose(a[:2], b[:2])              # cond changed


def test_capture_branch_and_steps(model):
    with capture(model, ["layer.0"], branch="cond", steps=(2, 5)) as cap:
        model.generate(["x", "y", "z"], seconds=0.2, seed=0)
    assert cap.steps["layer.0"] == [2, 3, 4]
    assert all(r.shape[0] == 3 for r in cap.records["layer.0"])


def test_teacher_forced_step_range_edits_only_those_positions(model):
    ids = model.decoder_input_ids(model.encode_audio(torch.randn(1, 4000) * 0.2))
    v = torch.ones(model.d_model)
    clean = model.residuals(ids, ["layer.1"])["layer.1"]
    with inject(model, [Intervention("layer.1", v, coef=1.0)], steps=(3, 6)):
        edited = model.residuals(ids, ["layer.1"])["layer.1"]
    diff = (edited - clean).abs().sum(-1)[0]
    assert torch.all(diff[3:6] > 0) and torch.all(diff[:3] == 0) and torch.all(diff[6:] == 0)


def test_ablate_and_clamp(tiny_model):
    m = tiny_model
    ids = m.decoder_input_ids(m.encode_audio(torch.randn(1, 4000) * 0.2))
    u = torch.randn(m.d_model)
    u = u / u.norm()
    with inject(m, [Intervention("layer.2", u, mode="ablate")]):
        h = m.residuals(ids, ["layer.2"])["layer.2"]
    assert (h @ u).abs().max() < 1e-4
    with inject(m, [Intervention("layer.2", u, coef=3.0, mode="clamp")]):
        h = m.residuals(ids, ["layer.2"])["layer.2"]
    assert torch.allclose(h @ u, torch.full_like(h @ u, 3.0), atol=1e-4)


def test_hooks_removed_after_exception(tiny_model):
    with pytest.raises(RuntimeError):
        with capture(tiny_model, ["layer.1", "layer.3"]), \
                inject(tiny_model, [Intervention("layer.2", torch.ones(tiny_model.d_model))]):
            assert active_hooks(tiny_model) == 3
            raise RuntimeError("boom")
    assert active_hooks(tiny_model) == 0


def test_bad_interventions(tiny_model):
    with pytest.raises(MusiclensError):
        with inject(tiny_model, [Intervention("layer.99", torch.ones(tiny_model.d_model))]):
            pass
    with pytest.raises(MusiclensError):
        with inject(tiny_model, [Intervention("layer.1", torch.ones(7))]):
            pass
    with pytest.raises(MusiclensError):
        with inject(tiny_model, [Intervention("layer.1", torch.ones(tiny_model.d_model), coef=float("nan"))]):
            pass
    assert active_hooks(tiny_model) == 0


class _TupleLayer(torch.nn.Module):
    """transformers 4.4x decoder layers return (hidden, ...) tuples."""

    def forward(self, x):
        return (x * 2, "cache")


def test_tuple_outputs_supported():
    layer = _TupleLayer()
    h = hooks._get_h(layer(torch.ones(1, 2, 3)))
    assert h.shape == (1, 2, 3)
    out = hooks._set_h((h, "cache"), h + 1)
    assert isinstance(out, tuple) and out[1] == "cache" and torch.all(out[0] == 3)
