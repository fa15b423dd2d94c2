"""MusicModel on the tiny random models of both real HF classes."""

import pytest
import torch

from musiclens.errors import MusiclensError
from musiclens.models import load_model, save_model

VARIANTS = ["tiny_model", "tiny_melody"]


@pytest.fixture(params=VARIANTS)
def model(request):
    return request.getfixturevalue(request.param)


def test_geometry(model):
    info = model.info()
    assert info["n_layers"] == 6 and info["d_model"] == 32 and info["n_codebooks"] == 4
    assert model.frame_rate == 50 and model.sample_rate == 16000
    assert model.kind == ("melody" if "melody" in model.name else "musicgen")


def test_depth_names(model):
    # 6 layers: early=2, 25%=2, 50%=3, 75%=5, late=4
    assert model.parse_layers("early,25%,50%,75%,late") == [2, 3, 4, 5]
    assert model.parse_layers("late") == [4] and model.parse_layers("75%") == [5]
    assert model.parse_layers("0,5") == [0, 5]
    with pytest.raises(MusiclensError):
        model.parse_layers("6")
    with pytest.raises(MusiclensError):
        model.parse_layers("middle")


def test_codec_codes_matter(model):
    t = torch.arange(16000) / 16000
    a = torch.stack([torch.sin(2 * torch.pi * 220 * t) * 0.5, torch.randn(16000) * 0.3])
    codes = model.encode_audio(a)
    assert codes.shape == (2, 4, 50)
    assert not torch.equal(codes[0], codes[1])          # different audio, different codes
    assert len(codes[1, 0].unique()) > 3                 # codes vary over time
    y0, y1 = model.decode_codes(codes)
    assert (y0 - y1).abs().mean() > 1e-4                 # decoded audio depends on the codes


def test_decoder_input_ids_match_generation(model):
    """The ids we build from codes are exactly the ids generate() fed the decoder."""
    seen = []

    def grab(module, args, kwargs):
        seen.append(kwargs["input_ids"].clone())

    h = model.hf.decoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        res = model.generate(["a bright flute"], seconds=0.2, seed=1, guidance_scale=1.0)
    finally:
        h.remove()
    fed = torch.cat(seen, dim=-1)                        # [K, steps]: one new column per step
    ids = model.decoder_input_ids(res.codes)             # [K, F+K]
    assert torch.equal(ids[:, : fed.shape[-1]], fed)
    assert torch.equal(model.codes_from_ids(ids), res.codes)


def test_residuals_equal_hf_hidden_states(model):
    codes = model.encode_audio(torch.randn(2, 8000) * 0.2)
    ids = model.decoder_input_ids(codes)
    got = model.residuals(ids, ["layer.0", "layer.3"])
    out = model.hf(decoder_input_ids=ids, **model._conditioning(None, 2), output_hidden_states=True, use_cache=False)
    hs = getattr(out, "decoder_hidden_states", None) or out.hidden_states
    T = ids.shape[-1]
    for layer in (0, 3):
        assert torch.allclose(got[f"layer.{layer}"], hs[layer + 1][:, -T:], atol=1e-6)


def test_residuals_stop_after_deepest_layer(model):
    calls = []
    h = model.layers[4].register_forward_hook(lambda *a: calls.append(1))
    try:
        ids = model.decoder_input_ids(model.encode_audio(torch.randn(1, 4000) * 0.2))
        model.residuals(ids, ["layer.1"])
    finally:
        h.remove()
    assert calls == []


def test_forward_codes_shapes_and_captions(model):
    ids = model.decoder_input_ids(model.encode_audio(torch.randn(2, 4000) * 0.2))
    a = model.forward_codes(ids)
    b = model.forward_codes(ids, captions=["a slow organ", "fast drums"])
    assert a.shape == (2, 4, ids.shape[-1], model.codebook_size)
    assert not torch.allclose(a, b)                      # text conditioning reaches the logits


def test_generate_reproducible(model):
    r1 = model.generate(["a", "b"], seconds=0.2, seed=5)
    r2 = model.generate(["a", "b"], seconds=0.2, seed=5)
    r3 = model.generate(["a", "b"], seconds=0.2, seed=6)
    assert torch.equal(r1.audio, r2.audio) and torch.equal(r1.codes, r2.codes)
    assert not torch.equal(r1.codes, r3.codes)
    assert r1.codes.shape == (2, 4, 10) and r1.audio.shape[-1] == 10 * 320


@pytest.mark.parametrize("kw, msg", [(dict(temperature=0.0), "--temperature must be a positive"),
                                     (dict(top_k=-5), "--top-k must be a whole number"),
                                     (dict(seconds=-1.0), "--seconds must be a positive")])
def test_generate_rejects_bad_sampling_settings(tiny_model, kw, msg):
    """transformers raises a ValueError for temperature 0 and turns seconds <= 0 into one frame."""
    with pytest.raises(MusiclensError, match=msg):
        tiny_model.generate(["a"], **{"seconds": 0.1, **kw})
    greedy = tiny_model.generate(["a"], seconds=0.1, temperature=0.0, do_sample=False)  # unused when greedy
    assert greedy.codes.shape[-1] == 5


def test_generate_continues_an_audio_prompt(model):
    first = model.generate(["a", "b"], seconds=0.4, seed=1)
    wav = model.decode_codes(first.codes[:, :, :8])          # 8 frames of audio, one per prompt
    prompt_codes = model.encode_audio(wav)
    r = model.generate(["a", "b"], seconds=0.4, seed=2, audio_prompt=wav)
    assert r.codes.shape == first.codes.shape and r.audio.shape == first.audio.shape   # --seconds counts the prompt
    assert torch.equal(r.codes[:, :, : prompt_codes.shape[-1]], prompt_codes)          # kept exactly
    # one prompt for the whole batch is the same as that prompt on every row
    assert torch.equal(model.generate(["a", "b"], seconds=0.4, seed=2, audio_prompt=wav[0].numpy()).codes[0],
                       r.codes[0])
    with pytest.raises(MusiclensError, match="shorter than the clip"):
        model.generate(["a"], seconds=0.1, audio_prompt=wav[0])
    with pytest.raises(MusiclensError, match="audio prompt: expected"):
        model.generate(["a", "b", "c"], seconds=0.4, audio_prompt=wav)


def test_save_and_reload(tmp_path, tiny_model, capfd):
    capfd.readouterr()
    out = save_model(tiny_model, tmp_path / "m")
    assert "Writing model shards" not in capfd.readouterr().err  # transformers' bar, off for local saves
    m2 = load_model(str(out), cache=False)
    assert m2.kind == "musicgen" and m2.d_model == tiny_model.d_model
    ids = tiny_model.decoder_input_ids(tiny_model.encode_audio(torch.randn(1, 4000) * 0.2))
    assert torch.allclose(tiny_model.forward_codes(ids), m2.forward_codes(ids), atol=1e-5)


def test_half_precision_keeps_the_weights_hash_and_a_float32_codec(tmp_path):
    full = load_model("tiny-random", cache=False)
    half = load_model("tiny-random", dtype="bfloat16", cache=False)
    assert half.weights_hash == full.weights_hash  # stores extracted in bf16 still match the float32 model
    assert half.hf.decoder.dtype == torch.bfloat16 and half.hf.audio_encoder.dtype == torch.float32
    # a checkpoint saved in half precision loads in float32 (its codec too) unless --dtype asks otherwise
    folder = save_model(half, tmp_path / "bf16")
    again = load_model(str(folder), cache=False)
    assert again.hf.decoder.dtype == torch.float32 and again.hf.audio_encoder.dtype == torch.float32


def test_device_auto_and_bad_devices():
    assert str(load_model("tiny-random", device="auto").device) in ("cpu", "cuda:0", "cuda")
    with pytest.raises(MusiclensError, match="unknown device"):
        load_model("tiny-random", device="gpu-please", cache=False)


def test_unknown_models():
    with pytest.raises(MusiclensError):
        load_model("no-such-model")
    with pytest.raises(MusiclensError):
        load_model("/definitely/not/here")


def test_teacher_forcing_matches_greedy_generation(model):
    """forward_codes conditions exactly as generate(): greedy tokens == teacher-forced argmax."""
    res = model.generate(["a bright flute"], seconds=0.2, seed=1, guidance_scale=1.0, do_sample=False)
    ids = model.decoder_input_ids(res.codes)
    pred = model.forward_codes(ids, captions=["a bright flute"]).argmax(-1)[0]   # [K, T]
    F = res.codes.shape[-1]
    for k in range(model.n_codebooks):
        tf = torch.stack([pred[k, f + k] for f in range(F)])
        assert torch.equal(tf, res.codes[0, k])
