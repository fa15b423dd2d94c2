"""Generation-time extraction: per-step rows of one CFG branch, generated codes and audio, resume."""

from __future__ import annotations

import json
import shutil

import pytest
import soundfile as sf
import torch

from musiclens.cli import main
from musiclens.store import ActivationStore, verify_store

PROMPTS = ["a slow organ chorale", "fast bright drums", "soft low strings"]


def _gen(prompts_file, out, *extra) -> int:
    return main(["extract", "--model", "tiny-random", "--prompts", str(prompts_file), "--seconds", "0.3",
                 "--layers", "1,4", "--batch-size", "2", "--store-dtype", "float32", "--out", str(out),
                 *map(str, extra)])


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    p.write_text("# three prompts\n" + "\n".join(PROMPTS) + "\n\n")
    return p


@pytest.fixture(scope="module")
def cond_store(prompts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "cond"
    assert _gen(prompts_file, out, "--shard-rows", "1") == 0
    return out


def test_rows_codes_audio_and_teacher_forced_replay(cond_store, tiny_model):
    store = ActivationStore(cond_store)
    F, K = tiny_model.frames_for(0.3), tiny_model.n_codebooks
    assert verify_store(cond_store) == [] and store.meta["branch"] == "cond"
    assert [c["meta"]["prompt"] for c in store.clips] == PROMPTS
    assert [c["meta"]["seed"] for c in store.clips] == [0, 0, 1]  # batch g uses seed + g
    for c in store.clips:
        i = c["index"]
        rows = store.clip_rows(i)
        assert len(rows) == F and torch.equal(store.frame_column(rows), torch.arange(F))
        codes = store.extra(i, "codes")
        ids = store.input_ids(i)
        assert codes.shape == (K, F)
        assert torch.equal(ids, tiny_model.decoder_input_ids(codes[None]))
        audio, sr = sf.read(cond_store / c["meta"]["audio"], dtype="float32")
        assert sr == tiny_model.sample_rate
        torch.testing.assert_close(torch.from_numpy(audio), tiny_model.decode_codes(codes[None])[0],
                                   atol=1e-4, rtol=1e-3)
        # the conditional branch at step f+1 == a teacher-forced pass over the same ids with the prompt
        replay = tiny_model.residuals(ids, ["layer.1", "layer.4"], captions=[c["meta"]["prompt"]])
        for layer in (1, 4):
            torch.testing.assert_close(store.read(layer, rows), replay[f"layer.{layer}"][0, 1:F + 1],
                                       atol=1e-4, rtol=1e-3)


def test_melody_rows_replay_with_the_batch_padding(tmp_path, tiny_melody):
    # MusicGen-Melody prepends the (padded) text, so a row depends on its batch's longest prompt:
    # the replay must use the same batch of captions
    p = tmp_path / "p.txt"
    p.write_text("\n".join(PROMPTS[:2]))
    out = tmp_path / "mel"
    assert main(["extract", "--model", "tiny-random-melody", "--prompts", str(p), "--seconds", "0.2", "--layers", "3",
                 "--batch-size", "2", "--store-dtype", "float32", "--out", str(out)]) == 0
    store = ActivationStore(out)
    ids = torch.cat([store.input_ids(0), store.input_ids(1)])
    F = ids.shape[1] - tiny_melody.n_codebooks
    replay = tiny_melody.residuals(ids, ["layer.3"], captions=PROMPTS[:2])["layer.3"]
    for i in (0, 1):
        torch.testing.assert_close(store.read(3, store.clip_rows(i)), replay[i, 1:F + 1], atol=1e-4, rtol=1e-3)


def test_uncond_branch_same_samples_other_rows(cond_store, prompts_file, tmp_path, tiny_model):
    out = tmp_path / "uncond"
    assert _gen(prompts_file, out, "--branch", "uncond") == 0
    a, b = ActivationStore(cond_store), ActivationStore(out)
    assert b.meta["branch"] == "uncond"
    for c in b.clips:
        i = c["index"]
        assert torch.equal(a.extra(i, "codes"), b.extra(i, "codes"))  # same seed, same batch, same samples
        ids = b.input_ids(i)
        F = ids.shape[1] - tiny_model.n_codebooks
        replay = tiny_model.residuals(ids, ["layer.4"], captions=[""])["layer.4"][0, 1:F + 1]
        got = b.read(4, b.clip_rows(i))
        torch.testing.assert_close(got, replay, atol=1e-4, rtol=1e-3)
        assert not torch.allclose(got, a.read(4, a.clip_rows(i)), atol=1e-3)


def test_interrupted_generation_resumes_identically(cond_store, prompts_file, tmp_path):
    # the on-disk state a kill leaves after the 2nd shard commit: drop the last shard from the manifest
    out = tmp_path / "cut"
    shutil.copytree(cond_store, out)
    m = json.loads((out / "manifest.json").read_text())
    last = m["shards"].pop()
    m["clips"] = [c for c in m["clips"] if c["shard"] != last["file"]]
    m["rows"] -= last["rows"]
    m["complete"] = False
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "audio" / "00002.wav").unlink()
    assert _gen(prompts_file, out, "--shard-rows", "1") == 2  # exists without --resume
    assert _gen(prompts_file, out, "--shard-rows", "1", "--resume") == 0
    assert verify_store(out) == []
    a, b = ActivationStore(cond_store), ActivationStore(out)
    assert a.rows == b.rows
    for layer in (1, 4):
        assert torch.equal(a.read(layer, slice(None)), b.read(layer, slice(None)))
    assert torch.equal(a.extra(2, "codes"), b.extra(2, "codes"))
    new, _ = sf.read(out / "audio" / "00002.wav", dtype="float32")
    old, _ = sf.read(cond_store / "audio" / "00002.wav", dtype="float32")
    torch.testing.assert_close(torch.from_numpy(new), torch.from_numpy(old), atol=1e-5, rtol=1e-4)


def test_generation_input_errors(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    assert _gen(empty, tmp_path / "o") == 2
    p = tmp_path / "p.txt"
    p.write_text("x\n")
    assert _gen(p, tmp_path / "o", "--branch", "uncond", "--guidance-scale", "1") == 2
    assert main(["extract", "--model", "tiny-random", "--out", str(tmp_path / "o")]) == 2  # no input mode
    assert not (tmp_path / "o").exists()
    err = capsys.readouterr().err
    assert "no prompts" in err and "guidance" in err and "exactly one of" in err
