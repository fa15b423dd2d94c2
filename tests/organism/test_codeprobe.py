"""Reading factors from codes: probes on real clips' codes, applied to what the decoder receives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musiclens.cli import main
from musiclens.errors import MusiclensError
from musiclens.organism.codec import load_codec
from musiclens.organism.codeprobe import capture_decoder_input, latent_of_codes, train_code_probe
from musiclens.organism.codes import load_codes


@pytest.fixture(scope="module")
def coded_run(tiny_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("probe") / "run"
    base = ["organism", "train", "--corpus", str(tiny_corpus), "--out", str(run), "--device", "cpu"]
    assert main(base + ["--stage", "codec", "--codec-steps", "2", "--codec-batch-size", "2"]) == 0
    assert main(base + ["--stage", "codes", "--codes-seconds", "1.0"]) == 0
    # the tiny corpus's tones are 110 or 440 Hz; name that factor "register" in the index
    idx = run / "codes" / "index.json"
    data = json.loads(idx.read_text())
    for r in data["rows"]:
        r["register"] = "high" if "high" in r["caption"] else "low"
    idx.write_text(json.dumps(data))
    return run


def test_probe_reads_a_factor_from_real_codes(coded_run):
    codec = load_codec(coded_run / "codec" / "hf")
    probe = train_code_probe(coded_run, codec, factors=("register",))
    assert probe.n_train == 8
    assert probe.valid_accuracy["register"] == 1.0  # 110 vs 440 Hz is plain in the latent
    codes, _, rows = load_codes(coded_run, text=False)
    pred = probe.predict(latent_of_codes(codec, codes["codes"], codes["lengths"]))["register"]
    assert pred == [r["register"] for r in rows]


def test_capture_sees_what_the_probe_is_trained_on_and_unhooks(coded_run):
    codec = load_codec(coded_run / "codec" / "hf")
    codes, _, _ = load_codes(coded_run, text=False)
    c = codes["codes"][:3].long()
    with capture_decoder_input(codec) as got:
        with torch.no_grad():
            codec.decode(c[None], [None])
    assert len(got) == 1 and got[0].shape == (3, 2 * codec.config.hidden_size)
    np.testing.assert_allclose(got[0], latent_of_codes(codec, c), rtol=1e-5, atol=1e-6)
    assert len(codec.decoder._forward_pre_hooks) == 0


def test_probe_needs_train_clips(tmp_path, coded_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(coded_run / "codes", run / "codes")
    idx = run / "codes" / "index.json"
    data = json.loads(idx.read_text())
    for r in data["rows"]:
        r["split"] = "valid"
    idx.write_text(json.dumps(data))
    with pytest.raises(MusiclensError, match="too few train clips"):
        train_code_probe(run, load_codec(coded_run / "codec" / "hf"), factors=("register",))
