"""Widening a codec: same codes and audio at step 0, a trainable wider decoder, and an export that loads."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import EncodecModel, MusicgenForConditionalGeneration

from musiclens.models import organism as O
from musiclens.cli import main
from musiclens.errors import MusiclensError
from musiclens.organism.codec import load_codec
from musiclens.organism.widen import widen_codec


def _tiny_codec(seed=0):
    torch.manual_seed(seed)
    return EncodecModel(O.codec_config(codebook_size=32, num_filters=4, hidden_size=16)).eval()


def test_widened_codec_computes_the_same_codes_and_audio():
    codec = _tiny_codec()
    with torch.no_grad():  # give the codebooks content, so the codes depend on the input
        for layer in codec.quantizer.layers:
            layer.codebook.embed.normal_()
    wide = widen_codec(codec, 8, seed=1)
    assert wide.config.num_filters == 8 and codec.config.num_filters == 4
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in codec.parameters())
    x = torch.randn(3, 1, 8000) * 0.3
    with torch.no_grad():
        c_old, c_new = codec.encode(x).audio_codes, wide.encode(x).audio_codes
        assert len(set(c_old.flatten().tolist())) > 1
        assert torch.equal(c_old, c_new)
        y_old = codec.decode(c_old, [None]).audio_values
        y_new = wide.decode(c_new, [None]).audio_values
    assert torch.allclose(y_old, y_new, atol=1e-5)
    # the new width is trainable: the gradient reaches the weights from the new channels into old ones
    out = wide.decoder(wide.quantizer.decode(c_new[0].transpose(0, 1)))
    out.pow(2).mean().backward()
    w = wide.decoder.layers[-1].conv.parametrizations.weight.original1
    assert float(w.grad[:, 4:].abs().sum()) > 0  # the last conv's weights from the new channels learn


def test_widening_refuses_to_narrow():
    with pytest.raises(MusiclensError, match="only be widened"):
        widen_codec(_tiny_codec(), 2)


def test_widened_decoder_stage_installs_a_loadable_export(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    common = ["--corpus", str(tiny_corpus), "--out", str(run), "--device", "cpu"]
    assert main(["organism", "train", *common, "--stage", "codec", "--codec-steps", "2",
                 "--codec-batch-size", "2"]) == 0
    assert main(["organism", "train", *common, "--stage", "codes", "--codes-seconds", "1.0"]) == 0
    assert main(["organism", "train", *common, "--stage", "lm", "--lm-steps", "1", "--lm-batch-size", "2",
                 "--lm-layers", "1", "--lm-d-model", "32"]) == 0
    narrow = load_codec(run / "codec" / "hf")
    assert main(["organism", "train", *common, "--stage", "decoder", "--decoder-steps", "2",
                 "--codec-batch-size", "2", "--decoder-filters", str(2 * narrow.config.num_filters)]) == 0
    wide = load_codec(run / "decoder" / "hf")
    assert wide.config.num_filters == 2 * narrow.config.num_filters
    assert json.loads((run / "decoder" / "config.json").read_text())["num_filters"] == wide.config.num_filters
    x = torch.randn(2, 1, 16000) * 0.1
    with torch.no_grad():
        assert torch.equal(narrow.encode(x).audio_codes, wide.encode(x).audio_codes)  # the LM's codes stay valid
    # the LM export now carries the wide codec, and loads with plain transformers
    lm = MusicgenForConditionalGeneration.from_pretrained(run / "lm" / "hf")
    assert lm.audio_encoder.config.num_filters == wide.config.num_filters
    for k, v in wide.state_dict().items():
        assert torch.equal(lm.audio_encoder.state_dict()[k], v)
    # a resume rebuilds the same width before loading the checkpoint
    assert main(["organism", "train", *common, "--stage", "decoder", "--decoder-steps", "3", "--codec-batch-size",
                 "2", "--decoder-filters", str(wide.config.num_filters), "--resume"]) == 0
    assert json.loads((run / "decoder" / "progress.json").read_text())["step"] == 3


def test_negative_decoder_filters_is_a_one_line_error(tiny_corpus, tmp_path, capsys):
    assert main(["organism", "train", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "r"),
                 "--stage", "decoder", "--decoder-filters", "-1"]) == 2
    assert "--decoder-filters" in capsys.readouterr().err and not (tmp_path / "r").exists()
