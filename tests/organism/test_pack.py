"""`musiclens organism pack` and tools/device_codec.sh: the codec trained from pack shards, as on a lent GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclens.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _rows(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / "metadata.jsonl").read_text().splitlines()]


def test_pack_caps_size_keeps_factors_and_shards_do_not_overlap(tiny_corpus, tmp_path):
    a, b = tmp_path / "gpu" / "pack1", tmp_path / "gpu" / "pack2"
    assert main(["organism", "pack", "--corpus", str(tiny_corpus), "--out", str(a), "--max-mb", "0.06",
                 "--seconds", "1.5", "--valid", "2"]) == 0
    first = _rows(a)
    train = [r for r in first if r["split"] == "train"]
    assert [r["split"] for r in first[:2]] == ["valid", "valid"] and 1 <= len(train) < 8  # the cap stopped it
    assert sum(f.stat().st_size for f in (a / "audio").iterdir()) <= 0.06 * 2**20
    y, sr = sf.read(a / train[0]["path"])
    src = {r["id"]: r for r in _rows(tiny_corpus)}[train[0]["id"]]
    assert sr == 16000 and abs(len(y) - 1.5 * sr) < 400 and train[0]["bpm"] == src["bpm"]
    ref, _ = sf.read(tiny_corpus / src["path"], frames=len(y))
    spec = lambda v: np.abs(np.fft.rfft(v[:16000]))  # noqa: E731
    assert np.corrcoef(spec(y), spec(ref))[0, 1] > 0.9  # lossy, but the same sound
    assert main(["organism", "pack", "--corpus", str(tiny_corpus), "--out", str(b), "--max-mb", "1",
                 "--seconds", "1.5", "--valid", "0", "--skip", str(len(train))]) == 0
    second = _rows(b)
    assert {r["split"] for r in second} == {"train"} and len(second) == 8 - len(train)
    assert not {r["id"] for r in second} & {r["id"] for r in first}  # the next shard continues the order
    assert json.loads((a / "pack.json").read_text())["next_skip"] == len(train)
    assert json.loads((b / "pack.json").read_text())["config"]["skip"] == len(train)


def test_pack_bad_input_is_one_line_and_writes_nothing(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["organism", "pack", "--corpus", str(tiny_corpus), "--out", str(out), "--skip", "99"]) == 2
    assert "leaves no clip" in capsys.readouterr().err and not out.exists()
    assert main(["organism", "pack", "--corpus", str(tiny_corpus), "--out", str(out), "--max-mb", "0.0001"]) == 2
    assert "holds no clip" in capsys.readouterr().err and not out.exists()
    assert not list(tmp_path.glob(".p.*"))  # no half-written temp folder left


def test_device_script_trains_resumes_and_returns_the_codec_in_parts(tiny_corpus, tmp_path):
    work = tmp_path / "work"
    (work / "gpu").mkdir(parents=True)
    for i, (skip, valid) in enumerate([(0, 2), (2, 0)], 1):
        assert main(["organism", "pack", "--corpus", str(tiny_corpus), "--out", str(work / "gpu" / f"pack{i}"),
                     "--max-mb", "0.05", "--seconds", "1.5", "--valid", str(valid), "--skip", str(skip)]) == 0
    env = {**os.environ, "DEVICE": "cpu", "MINUTES": "5", "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT)}
    for call, steps in ((1, 2), (2, 4)):  # the second call resumes the first call's checkpoint
        out = tmp_path / f"out{call}"
        out.mkdir()
        r = subprocess.run(["bash", str(ROOT / "tools" / "device_codec.sh"), "--codec-steps", str(steps),
                            "--codec-batch-size", "2", "--codec-filters", "4"],
                           cwd=work, env={**env, "OUT": str(out)}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        n = len(_rows(work / "gpu" / "pack1")) + len(_rows(work / "gpu" / "pack2"))
        assert f"corpus: {n} clips from 2 shard(s)" in r.stdout
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "step" in r][-2:] == [2, 4]
    assert json.loads((out / "config.json").read_text())["steps"] == 4
    parts = sorted(out.glob("codec_hf.tar.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    (tmp_path / "whole.tar").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "whole.tar") as t:
        t.extractall(tmp_path / "back", filter="data")
    from musiclens.organism.codec import load_codec

    assert load_codec(tmp_path / "back" / "hf").config.num_filters == 4


def test_device_script_decoder_stage_starts_from_the_shipped_codec_and_keeps_its_codes(tiny_corpus, tmp_path):
    # STAGE=decoder: the shipped organism's codec is the start; only decoder tensors may change
    from safetensors.torch import load_file

    from musiclens.latent.autoencoders import organism_codec

    work = tmp_path / "work"
    (work / "gpu").mkdir(parents=True)
    assert main(["organism", "pack", "--corpus", str(tiny_corpus), "--out", str(work / "gpu" / "pack1"),
                 "--max-mb", "0.05", "--seconds", "1.5", "--valid", "2"]) == 0
    env = {**os.environ, "DEVICE": "cpu", "MINUTES": "5", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
           "STAGE": "decoder"}
    for call, steps in ((1, 2), (2, 3)):
        out = tmp_path / f"out{call}"
        out.mkdir()
        r = subprocess.run(["bash", str(ROOT / "tools" / "device_codec.sh"), "--decoder-steps", str(steps),
                            "--codec-batch-size", "2"],
                           cwd=work, env={**env, "OUT": str(out)}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert ("starts from the shipped organism codec" in r.stdout) == (call == 1)
    assert json.loads((out / "config.json").read_text())["steps"] == 3
    assert [x["step"] for x in map(json.loads, (out / "log.jsonl").read_text().splitlines())][-1] == 3
    parts = sorted(out.glob("decoder_hf.tar.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    (tmp_path / "whole.tar").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "whole.tar") as t:
        t.extractall(tmp_path / "back", filter="data")
    new = load_file(str(tmp_path / "back" / "hf" / "model.safetensors"))
    old = organism_codec().state_dict()
    changed = {k for k in old if not np.allclose(old[k].numpy(), new[k].numpy())}
    assert changed and all(k.startswith("decoder.") for k in changed)

    bad = subprocess.run(["bash", str(ROOT / "tools" / "device_codec.sh")], cwd=work,
                         env={**env, "STAGE": "lm", "OUT": str(tmp_path)}, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "STAGE must be codec or decoder, not 'lm'"


def test_device_script_variants_train_side_by_side_on_a_time_budget_and_come_back_as_float16(tiny_corpus, tmp_path):
    # VARIANTS: two codecs trained at once, each on a schedule of minutes (not steps), returned in one tar
    import torch

    from musiclens.organism.codec import load_codec
    from musiclens.organism.pack import set_export_dtype

    work = tmp_path / "work"
    (work / "gpu").mkdir(parents=True)
    assert main(["organism", "pack", "--corpus", str(tiny_corpus), "--out", str(work / "gpu" / "pack1"),
                 "--max-mb", "0.05", "--seconds", "1.5", "--valid", "2"]) == 0
    (work / "variants.txt").write_text("# name, then its own options\nnarrow --codec-filters 4\n\n"
                                       "wide --codec-filters 8 --codec-crop-seconds 0.3\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "DEVICE": "cpu", "MINUTES": "5", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
           "VARIANTS": "variants.txt", "HALF": "1", "OUT": str(out)}
    r = subprocess.run(["bash", str(ROOT / "tools" / "device_codec.sh"), "--codec-batch-size", "2",
                        "--schedule-minutes", "0.05"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    assert "preflight ok" in r.stdout and "started narrow" in r.stdout and "started wide" in r.stdout
    summary = (out / "summary.txt").read_text()
    assert "narrow: exit 0" in summary and "wide: exit 0" in summary
    parts = sorted(out.glob("variants.tar.part-*"))
    (tmp_path / "whole.tar").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "whole.tar") as t:
        t.extractall(tmp_path / "back", filter="data")
    for name, filters in (("narrow", 4), ("wide", 8)):
        d = tmp_path / "back" / name / "codec"
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["budget_minutes"] == 0.05 and cfg["num_filters"] == filters
        progress = json.loads((d / "progress.json").read_text())
        assert progress["done"] and progress["trained_minutes"] >= 0.05 and progress["step"] > 0
        from safetensors.torch import load_file

        assert {v.dtype for v in load_file(str(d / "hf" / "model.safetensors")).values()
                if v.is_floating_point()} == {torch.float16}
        assert set_export_dtype(d / "hf", "float32") > 0
        codec = load_codec(d / "hf")
        assert codec.config.num_filters == filters and next(codec.parameters()).dtype == torch.float32
    assert json.loads((tmp_path / "back" / "wide" / "codec" / "config.json").read_text())["crop_seconds"] == 0.3

    # a missing shard fails before any training; a bad variants file is one line
    bad = subprocess.run(["bash", str(ROOT / "tools" / "device_codec.sh")], cwd=work,
                         env={**env, "VARIANTS": "nope.txt"}, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "VARIANTS file not found: nope.txt"


def test_pack_lm_and_device_lm_script_train_lm_and_tune_from_codes_with_a_trimmed_minilm(tiny_corpus, tmp_path, capsys):
    # what a lent GPU gets for the LM: codes + float16 codec + a MiniLM with only the captions' tokens
    import gzip

    import pytest
    import torch
    from safetensors.torch import load_file

    from musiclens.errors import MusiclensError
    from musiclens.models import organism as O
    from musiclens.organism.codes import caption_states
    from musiclens.organism.pack import set_export_dtype

    run = tmp_path / "run"
    common = ["--corpus", str(tiny_corpus), "--out", str(run), "--device", "cpu", "--codec-batch-size", "2",
              "--codes-seconds", "1.0"]
    assert main(["organism", "train", "--stage", "codec", "--codec-steps", "2", *common]) == 0
    assert main(["organism", "train", "--stage", "codes", *common]) == 0
    work = tmp_path / "work"
    (work / "gpu").mkdir(parents=True)
    pack = work / "gpu" / "lm"
    assert main(["organism", "pack-lm", "--run", str(run), "--out", str(pack)]) == 0
    assert main(["organism", "pack-lm", "--run", str(run), "--out", str(pack)]) == 2  # exists: one line
    assert "output exists" in capsys.readouterr().err
    info = json.loads((pack / "pack.json").read_text())
    assert info["clips"] == 12 and 10 < info["kept_tokens"] < 200 and info["minilm_mib"] < 25
    # every row says where its beat grid starts (None here: the tiny corpus's pieces are in no score cache)
    index = json.loads(gzip.decompress((pack / "codes" / "index.json.gz").read_bytes()))
    assert len(index["rows"]) == 12 and all("start_ql" in r and r["start_ql"] is None for r in index["rows"])
    # the codec travels as shapes (encoder and decoder zeroed, gzipped): only its codebooks as the run's, in float16
    from safetensors.torch import load as load_bytes

    packed = load_bytes(gzip.decompress((pack / "codec_hf" / "model.safetensors.gz").read_bytes()))
    original = load_file(str(run / "codec" / "hf" / "model.safetensors"))
    assert not (pack / "codec_hf" / "model.safetensors").exists() and packed.keys() == original.keys()
    zeroed = [k for k in packed if k.startswith(("encoder.", "decoder."))]
    assert zeroed and all(not packed[k].any() for k in zeroed)
    for k in packed:
        if k not in zeroed:
            assert torch.allclose(packed[k].float(), original[k].float(), rtol=1e-3, atol=1e-4), k
    with tarfile.open(pack / "minilm.tar.gz") as t:
        t.extractall(tmp_path / "mini", filter="data")
    emb = load_file(str(tmp_path / "mini" / "model.safetensors"))["embeddings.word_embeddings.weight"]
    kept = json.loads((tmp_path / "mini" / "kept_token_ids.json").read_text())
    assert emb.dtype == torch.float16 and int((emb.abs().sum(1) > 0).sum()) == len(kept)

    # the trimmed MiniLM encodes the corpus's captions as the full one does, and refuses other words
    caps = ["a fast high tone", "a slow low tone", ""]
    full, m_full = caption_states(caps)
    os.environ["MUSICLENS_MINILM"] = str(tmp_path / "mini")
    try:
        trimmed, m_trim = caption_states(caps)
        with pytest.raises(MusiclensError, match="trimmed MiniLM lacks"):
            caption_states(["a saxophone"])
    finally:
        del os.environ["MUSICLENS_MINILM"]
    assert torch.equal(m_full, m_trim)
    assert torch.allclose(full.float(), trimmed.float(), atol=2e-2) and not torch.equal(full, trimmed)

    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OUT": str(out),
           "LM_MINUTES": "0.03", "TUNE_MINUTES": "0.03", "TUNE_ARGS": "--contrast-concepts tempo --contrast-flips all"}
    r = subprocess.run(["bash", str(ROOT / "tools" / "device_lm.sh"), "--lm-batch-size", "2", "--lm-layers", "1",
                        "--lm-d-model", "32", "--lm-eval-every", "1"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    assert "preflight ok" in r.stdout and "exit 0" in (out / "summary.txt").read_text()
    (tmp_path / "whole.tar").write_bytes(b"".join(p.read_bytes() for p in sorted(out.glob("lm.tar.part-*"))))
    with tarfile.open(tmp_path / "whole.tar") as t:
        t.extractall(tmp_path / "back", filter="data")
    for stage in ("lm", "tune"):
        d = tmp_path / "back" / stage
        assert json.loads((d / "progress.json").read_text())["done"]
        assert json.loads((d / "config.json").read_text())["budget_minutes"] == 0.03
        assert [json.loads(x)["step"] for x in (d / "log.jsonl").read_text().splitlines()][0] == 1
        set_export_dtype(d / "hf", "float32")
        model, _ = O.load_organism_hf(path=d / "hf")
        assert model.config.decoder.hidden_size == 32
    assert json.loads((tmp_path / "back" / "tune" / "config.json").read_text())["contrast_concepts"] == "tempo"
    assert json.loads((tmp_path / "back" / "lm" / "config.json").read_text())["eval_every"] == 1

    # pack-lm --init: the returned LM travels too (its codec zeroed) and the lm stage there continues it
    assert main(["organism", "pack-lm", "--run", str(run), "--out", str(work / "gpu" / "lm2"),
                 "--init", str(tmp_path / "back" / "lm" / "hf")]) == 0
    assert "the LM of" in capsys.readouterr().out
    init_packed = load_bytes(gzip.decompress((work / "gpu" / "lm2" / "init_hf" / "model.safetensors.gz").read_bytes()))
    returned = load_file(str(tmp_path / "back" / "lm" / "hf" / "model.safetensors"))
    assert init_packed.keys() == returned.keys()
    for k, v in init_packed.items():
        if k.startswith("audio_encoder."):
            assert not v.any(), k
        elif v.is_floating_point():
            assert v.dtype == torch.float16 and torch.allclose(v.float(), returned[k].float(), atol=1e-3), k
    out2 = tmp_path / "out2"
    out2.mkdir()
    r = subprocess.run(["bash", str(ROOT / "tools" / "device_lm.sh"), "--lm-batch-size", "2", "--lm-layers", "1",
                        "--lm-d-model", "32", "--lm-eval-every", "1", "--lm-lr", "0.001"], cwd=work,
                       env={**env, "OUT": str(out2), "PACK": "gpu/lm2", "RUN": "gpu/lmrun2"},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    (tmp_path / "whole2.tar").write_bytes(b"".join(p.read_bytes() for p in sorted(out2.glob("lm.tar.part-*"))))
    with tarfile.open(tmp_path / "whole2.tar") as t:
        t.extractall(tmp_path / "back2", filter="data")
    lm2 = json.loads((tmp_path / "back2" / "lm" / "config.json").read_text())
    assert lm2["init"].endswith("init_hf") and lm2["lr"] == 0.001
    first = [json.loads((d / "lm" / "log.jsonl").read_text().splitlines()[0])["heldout_loss"]
             for d in (tmp_path / "back", tmp_path / "back2")]
    assert first[1] < first[0]  # after one step, the continued LM is ahead of the one from random weights
    assert main(["organism", "pack-lm", "--run", str(run), "--out", str(work / "gpu" / "lm3"),
                 "--init", str(run)]) == 2 and "not an organism HF folder" in capsys.readouterr().err

    missing = subprocess.run(["bash", str(ROOT / "tools" / "device_lm.sh")], cwd=work,
                             env={**env, "PACK": "gpu/nope"}, capture_output=True, text=True)
    assert missing.returncode == 2 and "no LM pack in gpu/nope" in missing.stderr


def test_lossless_export_dtype_halves_only_what_float16_holds_exactly(tmp_path):
    from safetensors.torch import load_file, save_file

    from musiclens.errors import MusiclensError
    from musiclens.organism.pack import set_export_dtype

    exact = torch.randn(64, 64).half().float()  # e.g. an LM that came back from the GPU in float16
    fine = torch.randn(64, 64) * 1e-3 + 0.1     # e.g. a codec trained in float32: not representable
    save_file({"lm.w": exact, "codec.w": fine, "codec.n": torch.arange(4)}, str(tmp_path / "model.safetensors"))
    assert set_export_dtype(tmp_path, "lossless") == 1
    out = load_file(str(tmp_path / "model.safetensors"))
    assert out["lm.w"].dtype == torch.float16 and torch.equal(out["lm.w"].float(), exact)
    assert out["codec.w"].dtype == torch.float32 and torch.equal(out["codec.w"], fine)
    assert out["codec.n"].dtype == torch.int64
    assert set_export_dtype(tmp_path, "lossless") == 0  # idempotent
    with pytest.raises(MusiclensError, match="lossless"):
        set_export_dtype(tmp_path, "bf16")
