"""Tiny random autoencoders of each supported class: shapes, sites, frames, decode, loading."""

from __future__ import annotations

import pytest
import torch

from musiclens.errors import MusiclensError
from musiclens.latent.autoencoders import TINY_NAMES, load_autoencoder


@pytest.mark.parametrize("name", TINY_NAMES)
def test_encode_decode_shapes(name):
    ae = load_autoencoder(name)
    assert ae.frame_rate == 50.0 and ae.hop == 320
    wav = torch.randn(2, 16000 + 100)  # not a whole number of frames: trimmed to 50 frames
    out = ae.encode(wav)
    assert list(out) == ae.sites
    for site, z in out.items():
        assert z.shape == (2, 50, ae.dim), site
        assert torch.isfinite(z).all()
    y = ae.decode(out["latent.encoder"])
    assert y.shape == (2, 50 * 320)
    # different audio gives different latents (the encoder is not degenerate)
    assert not torch.allclose(out["latent.encoder"][0], out["latent.encoder"][1])


@pytest.mark.parametrize("name", ["tiny-encodec", "tiny-dac"])
def test_codebook_sites_sum_to_quantised_latent(name):
    ae = load_autoencoder(name)
    assert ae.n_codebooks >= 3
    out = ae.encode(torch.randn(1, 8000))
    total = sum(out[f"latent.q{k}"] for k in range(ae.n_codebooks))
    torch.testing.assert_close(total, ae.quantize(out["latent.encoder"]), atol=1e-5, rtol=1e-5)
    # filled codebooks: each codebook's embedding is non-zero, and decoding depends on the codes
    assert all(out[f"latent.q{k}"].abs().sum() > 0 for k in range(ae.n_codebooks))


def test_tiny_models_are_deterministic_and_hashed():
    a, b = load_autoencoder("tiny-encodec"), load_autoencoder("tiny-encodec")
    assert a.weights_hash == b.weights_hash
    assert a.weights_hash != load_autoencoder("tiny-dac").weights_hash
    x = torch.randn(1, 3200)
    torch.testing.assert_close(a.latents(x), b.latents(x))


def test_load_from_folder_roundtrip(tmp_path):
    ae = load_autoencoder("tiny-encodec")
    ae.model.save_pretrained(tmp_path / "codec")
    again = load_autoencoder(str(tmp_path / "codec"))
    assert again.kind == "encodec"
    x = torch.randn(1, 6400)
    torch.testing.assert_close(again.latents(x), ae.latents(x))


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(MusiclensError, match="unknown autoencoder"):
        load_autoencoder("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MusiclensError, match="config.json"):
        load_autoencoder(str(tmp_path / "empty"))
    ae = load_autoencoder("tiny-oobleck")
    with pytest.raises(MusiclensError, match="shorter than one latent frame"):
        ae.encode(torch.randn(1, 100))
    with pytest.raises(MusiclensError, match="no site"):
        ae.encode(torch.randn(1, 3200), ["latent.q0"])
    with pytest.raises(MusiclensError, match="latents must be"):
        ae.decode(torch.randn(1, 5, ae.dim + 1))


def test_codec_read_from_a_musicgen_folder(tiny_model, tmp_path):
    # the organism path: the codec is read from the `audio_encoder.` tensors of a MusicGen checkpoint
    tiny_model.hf.save_pretrained(tmp_path / "mg")
    ae = load_autoencoder(str(tmp_path / "mg"))
    assert ae.kind == "encodec" and ae.n_codebooks == tiny_model.n_codebooks
    wav = torch.randn(1, 3200)
    codec = tiny_model.hf.audio_encoder
    with torch.no_grad():
        ref = codec.encoder(wav[:, None, :]).transpose(1, 2)
    torch.testing.assert_close(ae.latents(wav), ref)
