"""The CLI: every command and sub-command has working --help; user errors exit 2 with one line."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from musiclens import cli


def _walk(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def test_every_command_has_help():
    parser = cli.build_parser()
    seen = []
    for path, p in _walk(parser):
        text = p.format_help()                      # raises on bad help strings (e.g. a bare %)
        assert "usage:" in text and "%%" not in text, " ".join(path)  # escaped twice shows "25%%"
        seen.append(" ".join(path))
    for required in ("extract", "store", "models", "generate", "train-sae", "features", "steer",
                     "diffmean", "measure", "corpus", "organism", "latent", "demo"):
        assert required in seen, f"missing command {required}"


def test_no_command_module_fails_to_load(capsys):
    cli.build_parser()
    assert "failed to load" not in capsys.readouterr().err


def _run(*args):
    return subprocess.run([sys.executable, "-m", "musiclens", *args], capture_output=True, text=True, timeout=300)


def test_generate_continues_an_audio_prompt(tmp_path):
    import json

    import numpy as np
    import soundfile as sf

    from musiclens.cli import main

    t = np.arange(22050) / 22050       # 1 s at another rate: resampled to the model's
    sf.write(tmp_path / "prompt.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    out = tmp_path / "out"
    assert main(["generate", "--model", "tiny-random", "--prompt", "x", "--audio-prompt", str(tmp_path / "prompt.wav"),
                 "--prompt-seconds", "0.1", "--seconds", "0.3", "--out", str(out)]) == 0
    (wav,) = out.glob("*.wav")
    y, sr = sf.read(wav)
    assert len(y) == round(0.3 * sr)
    assert json.loads((out / "config.json").read_text())["prompt_seconds"] == 0.1
    # the whole second does not fit in 0.3 s
    r = _run("generate", "--model", "tiny-random", "--prompt", "x", "--audio-prompt", str(tmp_path / "prompt.wav"),
             "--seconds", "0.3", "--out", str(tmp_path / "out2"))
    assert r.returncode == 2 and "shorter than the clip" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out2").exists()


def test_generate_keeps_codebooks_of_a_file(tmp_path):
    """--keep-from: the command's clips are the library's keep-codebooks generation (same seed), which holds the
    file's codes in the kept codebooks and samples the others."""
    import json

    import soundfile as sf
    import torch

    from musiclens.audio import write_wav
    from musiclens.cli import main
    from musiclens.models import load_model

    m = load_model("tiny-random")
    write_wav(tmp_path / "ref.wav", m.generate(["a"], seconds=0.4, seed=0).audio[0], m.sample_rate)
    (tmp_path / "p.txt").write_text("x\ny\n")
    out = tmp_path / "out"
    assert main(["generate", "--model", "tiny-random", "--prompts", str(tmp_path / "p.txt"), "--keep-from",
                 str(tmp_path / "ref.wav"), "--keep-codebooks", "0,2", "--seconds", "0.6", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["keep_codebooks"] == "0,2"
    y, _ = sf.read(tmp_path / "ref.wav", dtype="float32")
    kept = m.encode_audio(torch.as_tensor(y)[None])  # the file's 20 frames of codes
    res = m.generate(["x", "y"], seconds=0.6, seed=0, keep_codes=kept.expand(2, -1, -1), keep_codebooks=[0, 2])
    for k in (0, 2):
        assert torch.equal(res.codes[:, k, :20], kept[:, k].expand(2, -1))
    assert not torch.equal(res.codes[:, 1, :20], kept[:, 1].expand(2, -1))
    written = [sf.read(f, dtype="float32")[0] for f in sorted(out.glob("*.wav"))]
    assert len(written) == 2
    for w, a in zip(written, res.audio):  # 16-bit WAV of the clipped audio: equal within quantisation
        assert abs(w - a.numpy().clip(-1, 1)).max() < 1e-3
    r = _run("generate", "--model", "tiny-random", "--prompt", "x", "--keep-from", str(tmp_path / "ref.wav"),
             "--keep-codebooks", "7", "--out", str(tmp_path / "out3"))
    assert r.returncode == 2 and "codebook 7 does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out3").exists()


def test_generate_with_context_contrast_is_the_library_call(tmp_path):
    """--contrast-weight/--contrast-window: the command writes what MusicModel.generate(contrast_...) returns."""
    import json

    import soundfile as sf

    from musiclens.cli import main
    from musiclens.models import load_model

    out = tmp_path / "out"
    assert main(["generate", "--model", "tiny-random", "--prompt", "x", "--seconds", "0.4", "--contrast-weight", "2",
                 "--contrast-window", "4", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["contrast_weight"] == 2.0
    m = load_model("tiny-random")
    res = m.generate(["x"], seconds=0.4, seed=0, contrast_weight=2.0, contrast_window=4)
    plain = m.generate(["x"], seconds=0.4, seed=0)
    (wav,) = out.glob("*.wav")
    y = sf.read(wav, dtype="float32")[0]
    assert abs(y - res.audio[0].numpy().clip(-1, 1)).max() < 1e-3
    assert abs(y - plain.audio[0].numpy().clip(-1, 1)).max() > 1e-3


@pytest.mark.parametrize("args", [
    ("generate", "--model", "no-such-model", "--prompt", "x"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--keep-from", "/no/such.wav"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--keep-from", "/no/such.wav", "--keep-codebooks", "a"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--audio-prompt", "/no/such.wav"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--prompt-seconds", "1"),
    ("models", "info", "/no/such/folder"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--temperature", "0"),  # transformers: a traceback
    ("generate", "--model", "tiny-random", "--prompt", "x", "--top-k", "-1"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--seconds", "nan"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--guidance-scale", "nan"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--contrast-weight", "-1"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--contrast-weight", "nan"),
    ("generate", "--model", "tiny-random", "--prompt", "x", "--contrast-weight", "1", "--contrast-window", "0"),
    ("generate", "--model", "tiny-random-melody", "--prompt", "x", "--contrast-weight", "1", "--out", "/tmp/ml_never"),
    ("organism", "eval", "--model", "/no/such/folder", "--corpus", "/no/such/corpus"),
    ("measure", "--audio", "/tmp", "--out", "/tmp/ml_never.json", "--metrics", "", "--no-tags"),
    ("measure", "--audio", "/tmp", "--out", "/tmp/ml_never.json", "--tagger", "/no/such/tagger"),
    ("measure", "--audio", "/tmp", "--out", "/tmp/ml_never.json", "--clap", "/no/such/clap", "--clap-text", "x"),
    ("demo", "--model", "/no/such/model", "--out", "/tmp/ml_never"),
    ("corpus", "render", "--out", "/tmp/ml_never", "--clips", "2", "--soundfont", __file__),
    ("corpus", "info", "/no/such/corpus"),
    ("tagger", "eval", "--corpus", "/no/such/corpus", "--limit", "-1"),
    ("features", "--sae", "x", "--store", "y", "--out", "/tmp/ml_never", "--device", "foo"),
    ("features", "--sae", "x", "--store", "y", "--out", "/tmp/ml_never", "--min-seconds", "5", "--max-seconds", "1"),
    ("latent", "train", "--store", "x", "--out", "/tmp/ml_never", "--lr", "-1"),
    ("latent-edit", "--audio", "x.wav", "--cell", "c", "--to", "C5", "--alpha", "nan", "--out", "/tmp/ml_never.wav"),
    ("steer", "--model", "tiny-random", "--prompt", "x", "--temperature", "-1", "--out", "/tmp/ml_never"),
])
def test_user_errors_are_one_line_exit_2(args):
    r = _run(*args)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(err) == 1 and err[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert not any(Path(a).exists() for a in args if a.startswith("/tmp/ml_never"))


def test_a_file_where_a_folder_is_expected(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    for args in (("sae", "info", str(tmp_path / "f.txt")), ("store", "info", str(tmp_path / "f.txt"))):
        r = _run(*args)
        assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr


def test_unreadable_audio_is_one_line(tmp_path):
    """librosa warns twice before failing on a non-audio file; the user sees only the error."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "junk.wav").write_bytes(b"not audio")
    r = _run("measure", "--audio", str(tmp_path / "in"), "--out", str(tmp_path / "m"))
    err = r.stderr.strip().splitlines()  # the reason depends on the decoders installed (ffmpeg or none)
    assert r.returncode == 2 and len(err) == 1 and err[0].startswith(f"error: cannot read audio {tmp_path / 'in'}")
    assert not (tmp_path / "m").exists()


def test_loading_the_organism_prints_no_weight_bars():
    """transformers' per-load 'Loading weights' bars are off for local loads (and back on afterwards)."""
    r = _run("models", "info", "organism")
    assert r.returncode == 0, r.stderr
    assert "Loading weights" not in r.stderr
    from transformers.utils import logging as hf_logging

    from musiclens.models.organism import quiet_loading

    with quiet_loading():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()


def test_building_an_organism_config_prints_no_token_id_warnings():
    """pad/BOS id = codebook size is MusicGen's layout; transformers' validation calls it "unexpected".

    The model is built first: transformers warns once per process, so a silenced config built
    before it would hide the warning a fresh model still prints (as `organism train` did).
    """
    code = ("from transformers.utils import logging as L; from transformers import EncodecModel; "
            "from musiclens.models.organism import musicgen_config, codec_config, decoder_config, build_organism; "
            "v = L.get_verbosity(); "
            "m, _ = build_organism(EncodecModel(codec_config(num_filters=4, hidden_size=16)), "
            "decoder_config(layers=1, d_model=32, heads=2, ffn=64)); "
            "assert m.config.decoder.pad_token_id == m.config.decoder.vocab_size; "
            "c = musicgen_config(); assert c.decoder.pad_token_id == c.decoder.vocab_size; "
            "assert L.get_verbosity() == v")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "token_id" not in r.stderr


def test_loading_the_organism_codec_prints_no_token_id_warnings():
    """The latent commands' default autoencoder reads the organism folder's MusicGen config: silently."""
    code = ("from transformers.utils import logging as L; from musiclens.latent.autoencoders import load_autoencoder; "
            "v = L.get_verbosity(); ae = load_autoencoder('organism'); assert L.get_verbosity() == v")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "token_id" not in r.stderr
