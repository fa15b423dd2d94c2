"""The organism's codec: HF EnCodec trained with our EMA quantiser, encode/decode through HF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musiclens.errors import MusiclensError
from musiclens.organism import quantizer as Q
from musiclens.organism.codec import CodecTrainConfig, codec_forward, load_codec, new_codec, train_codec
from musiclens.organism.losses import MultiResolutionSTFT, MultiScaleMel, onset_envelope, reconstruction_loss

TINY = dict(codebook_size=32, num_filters=4, hidden_size=16)


def test_config_rate_and_quantizers():
    c = new_codec(CodecTrainConfig(**TINY))
    assert c.config.frame_rate == 50 and c.config.sampling_rate == 16000
    assert c.config.num_quantizers == 4
    z = c.encoder(torch.randn(2, 1, 16000) * 0.1)
    assert z.shape == (2, 16, 50)


def test_kmeans_fills_codebooks_and_hf_encode_decode_use_them():
    torch.manual_seed(0)
    c = new_codec(CodecTrainConfig(**TINY)).eval()
    x = torch.randn(4, 16000) * 0.1
    with torch.no_grad():
        z = c.encoder(x[:, None])
    assert all(float(layer.codebook.embed.abs().sum()) == 0 for layer in c.quantizer.layers[:4])
    used = Q.kmeans_init(c, z.permute(0, 2, 1).reshape(-1, 16), iters=5)
    assert all(u > 16 for u in used)  # no collapse on spread-out inputs
    assert all(float(layer.codebook.embed.abs().sum()) > 0 for layer in c.quantizer.layers[:4])
    with torch.no_grad():
        codes = c.encode(x[:, None]).audio_codes[0]
        assert codes.shape == (4, 4, 50)
        a = c.decode(codes[None], [None]).audio_values
        b = c.decode((codes[None] + 1) % 32, [None]).audio_values
    assert a.shape[-1] == 16000
    assert float((a - b).abs().mean()) > 0  # decoding depends on the codes
    # the training quantiser picks the same codes as HF's encode
    _, qcodes, _, _ = Q.quantize(c, z, train=False)
    assert torch.equal(qcodes, codes)


def test_ema_update_moves_codes_and_restart_revives_dead_ones():
    torch.manual_seed(0)
    c = new_codec(CodecTrainConfig(**TINY))
    z = torch.randn(2, 16, 50)
    Q.kmeans_init(c, z.permute(0, 2, 1).reshape(-1, 16), iters=3)
    before = c.quantizer.layers[0].codebook.embed.clone()
    zq, codes, commit, inputs = Q.quantize(c, z + 0.5, train=True, decay=0.5)
    assert zq.shape == z.shape and codes.shape == (2, 4, 50) and float(commit) > 0
    assert not torch.equal(before, c.quantizer.layers[0].codebook.embed)
    c.quantizer.layers[0].codebook.cluster_size[:5] = 0.0
    n = Q.restart_dead(c, inputs, threshold=0.01, rng=np.random.default_rng(0))
    assert n >= 5 and float(c.quantizer.layers[0].codebook.cluster_size[:5].min()) == pytest.approx(0.02)


def test_losses_see_onsets():
    mel = MultiScaleMel(16000)
    t = torch.arange(16000) / 16000
    clicks = torch.sin(2 * torch.pi * 440 * t) * torch.exp(-(t % 0.125) * 30)
    smooth = torch.sin(2 * torch.pi * 440 * t) * 0.3
    lx = torch.log(mel.mels(clicks[None])[256] + 1e-5)
    ls = torch.log(mel.mels(smooth[None])[256] + 1e-5)
    assert float(onset_envelope(lx).mean()) > 3 * float(onset_envelope(ls).mean())
    same = reconstruction_loss(mel, clicks[None], clicks[None])
    diff = reconstruction_loss(mel, clicks[None], smooth[None])
    assert float(same["total"]) < 1e-6 and float(diff["onset"]) > 0.05


def test_stft_loss_sees_noise_between_harmonics_that_mel_bands_average_away():
    torch.manual_seed(0)
    t = torch.arange(16000) / 16000
    tone = sum(torch.sin(2 * torch.pi * 220 * k * t) / k for k in range(1, 30)) * 0.02
    noisy = tone + 0.002 * torch.randn(16000)  # 20 dB below the tone, spread between its partials
    r = reconstruction_loss(MultiScaleMel(16000), tone[None], noisy[None], w_stft=1.0, stft=MultiResolutionSTFT())
    assert float(r["stft"]) > 3 * float(r["mel"])
    assert float(r["total"]) == pytest.approx(float(r["stft"]) + float(r["mel"]) + 0.1 * float(r["wave"])
                                              + float(r["onset"]), rel=1e-5)
    same = reconstruction_loss(MultiScaleMel(16000), tone[None], tone[None], w_stft=1.0, stft=MultiResolutionSTFT())
    with pytest.raises(ValueError, match="stft="):
        reconstruction_loss(MultiScaleMel(16000), tone[None], noisy[None], w_stft=1.0)
    assert float(same["stft"]) == 0.0 and float(reconstruction_loss(MultiScaleMel(16000), tone[None],
                                                                     noisy[None])["stft"]) == 0.0  # off by default


def test_train_checkpoint_resume_and_export(tiny_corpus, tmp_path):
    cfg = CodecTrainConfig(steps=6, warmup_steps=3, batch_size=2, crop_seconds=0.2, kmeans_batches=2,
                           restart_every=2, **TINY)
    s = train_codec(cfg, tiny_corpus, tmp_path, minutes=None, resume=False)
    assert s["step"] == 6 and s["done"]
    with pytest.raises(MusiclensError):
        train_codec(cfg, tiny_corpus, tmp_path, minutes=None, resume=False)
    cfg.steps = 8
    assert train_codec(cfg, tiny_corpus, tmp_path, minutes=None, resume=True)["step"] == 8
    codec = load_codec(tmp_path / "codec" / "hf")
    assert float(codec.quantizer.layers[3].codebook.embed.abs().sum()) > 0
    y, *_ = codec_forward(codec, torch.randn(1, 16000) * 0.1, quantise=True, train=False)
    assert y.shape == (1, 16000) and torch.isfinite(y).all()
    assert json.loads((tmp_path / "codec" / "config.json").read_text())["steps"] == 8


def test_resume_with_another_width_and_too_few_kmeans_frames_are_one_line_errors(tiny_corpus, tmp_path):
    cfg = CodecTrainConfig(steps=2, batch_size=2, crop_seconds=0.2, kmeans_batches=2, **TINY)
    train_codec(cfg, tiny_corpus, tmp_path, minutes=None, resume=False)
    wider = CodecTrainConfig(steps=3, batch_size=2, crop_seconds=0.2, kmeans_batches=2, **{**TINY, "num_filters": 8})
    with pytest.raises(MusiclensError, match="another shape") as e:
        train_codec(wider, tiny_corpus, tmp_path, minutes=None, resume=True)
    assert "\n" not in str(e.value)
    few = CodecTrainConfig(steps=2, batch_size=1, crop_seconds=0.2, kmeans_batches=1, **TINY)  # 10 frames < 32 codes
    with pytest.raises(MusiclensError, match="k-means needs at least 32"):
        train_codec(few, tiny_corpus, tmp_path / "few", minutes=None, resume=False)


def test_latent_init_normalises_quiet_audio():
    from musiclens.organism.codec import init_latent_scale

    torch.manual_seed(0)
    c = new_codec(CodecTrainConfig(**TINY))
    x = torch.randn(4, 8000) * 0.01  # quiet, like the corpus (about -40 dBFS)
    stats = init_latent_scale(c, x)
    assert stats["std_before"] < 0.1
    assert abs(stats["std_after"] - 1.0) < 0.05 and stats["mean_norm_after"] < 1e-3


def test_adversarial_codec_training_logs_and_resumes_its_discriminator(tiny_corpus, tmp_path):
    cfg = CodecTrainConfig(steps=4, warmup_steps=0, batch_size=2, crop_seconds=0.2, kmeans_batches=2,
                           w_adv=0.2, w_feat=0.5, disc_start=2, disc_channels=4, **TINY)
    train_codec(cfg, tiny_corpus, tmp_path, minutes=None, resume=False)
    state = torch.load(tmp_path / "codec" / "ckpt.pt", weights_only=False)
    assert "disc" in state and "opt_d" in state  # the discriminator resumes with the codec
    before = {k: v.clone() for k, v in state["disc"].items()}
    cfg.steps = 100
    s = train_codec(cfg, tiny_corpus, tmp_path, minutes=None, resume=True)
    assert s["last"]["adv"] > 0 and s["last"]["feat"] > 0 and s["last"]["disc"] > 0
    after = torch.load(tmp_path / "codec" / "ckpt.pt", weights_only=False)["disc"]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it kept training


def test_wider_codec_from_the_train_command(tiny_corpus, tmp_path):
    from musiclens.cli import main

    assert main(["organism", "train", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "r"), "--stage", "codec",
                 "--codec-steps", "2", "--codec-batch-size", "2", "--codec-filters", "8", "--codec-w-adv", "0.2",
                 "--codec-w-feat", "0.5", "--codec-w-stft", "1.5", "--device", "cpu"]) == 0
    assert load_codec(tmp_path / "r" / "codec" / "hf").config.num_filters == 8
    cfg = json.loads((tmp_path / "r" / "codec" / "config.json").read_text())
    assert cfg["num_filters"] == 8 and cfg["w_adv"] == 0.2 and cfg["w_feat"] == 0.5 and cfg["w_stft"] == 1.5


def test_a_causal_codec_encodes_no_frame_from_the_audio_after_it_and_the_shipped_kind_does():
    # the shipped codec's codes before a hit already announce it (docs/organism.md, "Why the LM loses a
    # beat it is given"); --codec-causal trains one whose latent frames (which the codes quantise) cannot
    torch.manual_seed(0)
    x = 0.3 * torch.randn(1, 16000)
    later = x.clone()
    later[:, 9600:] = 0.3 * torch.randn(1, 6400)  # new audio from frame 30 on (320 samples per frame)
    changed = {}
    for causal in (False, True):
        codec = new_codec(CodecTrainConfig(codebook_size=32, num_filters=4, hidden_size=16, causal=causal,
                                           seed=0)).eval()
        assert codec.config.use_causal_conv is causal
        with torch.no_grad():
            a, b = codec.encoder(x[:, None]), codec.encoder(later[:, None])
        assert a.shape == (1, 16, 50)
        changed[causal] = (a[0, :, :30] - b[0, :, :30]).abs().amax(dim=0) > 1e-6  # frames before the change
    assert not changed[True].any()
    assert changed[False][27:].all()  # the non-causal encoder reads a few frames ahead
    assert not changed[False][:20].any()  # but not far
    from musiclens.organism.codec import lookahead_frames

    for causal in (False, True):  # the same, as the figure bench/codec_lookahead.py reports
        codec = new_codec(CodecTrainConfig(codebook_size=32, num_filters=4, hidden_size=16, causal=causal)).eval()
        assert (lookahead_frames(codec) == 0) is causal and lookahead_frames(codec) < 10


def test_resuming_a_codec_with_the_other_causality_is_a_one_line_error(tiny_corpus, tmp_path):
    cfg = CodecTrainConfig(steps=1, batch_size=2, crop_seconds=0.2, kmeans_batches=2, codebook_size=32,
                           num_filters=4, hidden_size=16, causal=True)
    train_codec(cfg, tiny_corpus, tmp_path, None, False)
    cfg.causal, cfg.steps = False, 2
    with pytest.raises(MusiclensError, match="causal codec: resume it with --codec-causal"):
        train_codec(cfg, tiny_corpus, tmp_path, None, True)
