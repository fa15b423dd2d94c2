"""Activation store: round trip, shuffled streaming, resume after SIGKILL, verify.

The 2-process (torchrun) merge is tested end to end in tests/extract/test_teacher.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from musiclens.cli import main
from musiclens.errors import MusiclensError
from musiclens.store import ActivationStore, StoreWriter, verify_store

D = 8
LAYERS = [1, 3]

# One deterministic clip per index: a script run in a subprocess builds the same data.
CLIP_SRC = textwrap.dedent("""
    import torch
    def make_clip(i, d=8, layers=(1, 3)):
        g = torch.Generator().manual_seed(1000 + i)
        n = 5 + i % 4
        acts = {l: torch.randn(n, d, generator=g) for l in layers}
        frames = torch.arange(n) * 2
        ids = torch.randint(0, 2049, (4, n + 4), generator=g)
        return acts, frames, ids
""")
exec(CLIP_SRC)  # defines make_clip here too

WRITER_SRC = textwrap.dedent("""
    from musiclens.store import StoreWriter
    def write_clips(out, n_clips, resume):
        with StoreWriter(out, model_name="toy", weights_hash="abc", layers=[1, 3], d_model=8, dtype="float32",
                         resume=resume, shard_rows=12, meta={"test": True}) as w:
            done = w.done_clips()
            for i in range(n_clips):
                if i % 7 == 6:
                    w.skip(f"clip{i}.wav", "silent")
                    continue
                if f"clip{i}" in done:
                    continue
                acts, frames, ids = make_clip(i)
                w.add_clip(f"clip{i}", acts, frames, ids, meta={"i": i}, index=i)
""")
exec(WRITER_SRC)  # defines write_clips here too
WRITER_SCRIPT = CLIP_SRC + WRITER_SRC + textwrap.dedent("""
    import sys
    write_clips(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1")
""")


def _write(path: Path, n_clips: int, **kw) -> None:
    with StoreWriter(path, model_name="toy", weights_hash="abc", layers=LAYERS, d_model=D,
                     dtype=kw.pop("dtype", "float32"), shard_rows=kw.pop("shard_rows", 12), **kw) as w:
        for i in range(n_clips):
            if i % 7 == 6:
                w.skip(f"clip{i}.wav", "silent")
                continue
            acts, frames, ids = make_clip(i)
            w.add_clip(f"clip{i}", acts, frames, ids, meta={"i": i}, index=i)


def _rows_by_key(store: ActivationStore, layer: int) -> dict[tuple[int, int], torch.Tensor]:
    """(clip, frame) -> activation row: a layout-independent view of a store's content."""
    acts = store.read(layer, slice(None))
    clip = store.clip_column(slice(None))
    frame = store.frame_column(slice(None))
    return {(int(c), int(f)): a for c, f, a in zip(clip, frame, acts)}


def _assert_same_content(a: ActivationStore, b: ActivationStore) -> None:
    assert a.rows == b.rows
    assert [c["index"] for c in a.clips] == [c["index"] for c in b.clips]
    for layer in LAYERS:
        ra, rb = _rows_by_key(a, layer), _rows_by_key(b, layer)
        assert ra.keys() == rb.keys()
        for k in ra:
            assert torch.equal(ra[k], rb[k])
    for c in a.clips:
        assert torch.equal(a.input_ids(c["index"]), b.input_ids(c["index"]))


def test_round_trip_and_clip_table(tmp_path):
    _write(tmp_path / "s", 20)
    s = ActivationStore(tmp_path / "s")
    kept = [i for i in range(20) if i % 7 != 6]
    assert [c["index"] for c in s.clips] == kept
    assert s.rows == sum(5 + i % 4 for i in kept)
    assert len(s.shards) > 3  # several shards, each holding whole clips
    assert all(sh["rows"] >= 12 for sh in s.shards[:-1])
    for i in kept:
        acts, frames, ids = make_clip(i)
        rows = s.clip_rows(i)
        for layer in LAYERS:
            assert torch.equal(s.read(layer, rows), acts[layer])
        assert torch.equal(s.frame_column(rows), frames)
        assert torch.equal(s.input_ids(i), ids)
        assert s.clip_info(i)["meta"] == {"i": i}
    # scattered, unordered reads across shards come back in the requested order
    idx = [s.rows - 1, 0, 17, 3, 40]
    full = s.read(3, slice(None))
    assert torch.equal(s.read(3, idx), full[idx])
    skipped = json.loads((tmp_path / "s" / "skipped.json").read_text())
    assert sorted(x["path"] for x in skipped) == ["clip13.wav", "clip6.wav"]
    assert verify_store(tmp_path / "s") == []


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtypes(tmp_path, dtype):
    _write(tmp_path / "s", 4, dtype=dtype)
    s = ActivationStore(tmp_path / "s")
    acts, _, _ = make_clip(2)
    got = s.read(1, s.clip_rows(2))
    assert got.dtype == getattr(torch, dtype)
    assert torch.equal(got, acts[1].to(getattr(torch, dtype)))
    assert verify_store(tmp_path / "s") == []


def test_iter_batches_shuffled_covers_every_row_once(tmp_path):
    _write(tmp_path / "s", 30, shard_rows=20)
    s = ActivationStore(tmp_path / "s")
    full = s.read(1, slice(None))
    key = {tuple(r.tolist()): i for i, r in enumerate(full)}

    def seen(batches):
        return [key[tuple(r.tolist())] for b in batches for r in b]

    # small buffer and chunks force the streaming path (several buffer fills)
    kw = dict(batch_size=7, chunk_rows=4, buffer_rows=24)
    order = seen(s.iter_batches(1, seed=0, **kw))
    assert sorted(order) == list(range(s.rows))
    assert order != list(range(s.rows))
    assert order != seen(s.iter_batches(1, seed=1, **kw))
    assert order == seen(s.iter_batches(1, seed=0, **kw))  # seeded
    # ranks: disjoint rows, the same number of full batches (lockstep for DDP), only a small tail dropped
    b0 = list(s.iter_batches(1, rank=0, world_size=2, **kw))
    b1 = list(s.iter_batches(1, rank=1, world_size=2, **kw))
    assert len(b0) == len(b1) and all(b.shape[0] == 7 for b in b0 + b1)
    r0, r1 = seen(b0), seen(b1)
    assert not set(r0) & set(r1) and len(r0) + len(r1) >= s.rows - 2 * 7 - 4
    p0 = list(s.iter_batches(1, batch_size=5, shuffle=False, rank=0, world_size=2))
    p1 = list(s.iter_batches(1, batch_size=5, shuffle=False, rank=1, world_size=2))
    assert len(p0) == len(p1) == (s.rows // 5) // 2
    assert torch.equal(p1[0], full[5:10])
    batches = list(s.iter_batches(1, batch_size=7, drop_last=True, chunk_rows=4, buffer_rows=24))
    assert all(b.shape == (7, D) for b in batches)
    plain = torch.cat(list(s.iter_batches(1, batch_size=5, shuffle=False)))
    assert torch.equal(plain, full)


def test_existing_output_without_resume_is_an_error(tmp_path):
    _write(tmp_path / "s", 3)
    before = sorted(p.name for p in (tmp_path / "s").iterdir())
    with pytest.raises(MusiclensError, match="output exists"):
        _write(tmp_path / "s", 3)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == before
    with pytest.raises(MusiclensError, match="layers"):
        with StoreWriter(tmp_path / "s", model_name="toy", weights_hash="abc", layers=[2], d_model=D,
                         dtype="float32", resume=True):
            pass


def _run_writer(out: Path, n: int, resume: bool, kill: str | None = None) -> int:
    script = out.parent / "writer.py"
    script.write_text(WRITER_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MUSICLENS_TEST_KILL", None)
    if kill:
        env["MUSICLENS_TEST_KILL"] = kill
    return subprocess.run([sys.executable, str(script), str(out), str(n), "1" if resume else "0"],
                          env=env, capture_output=True).returncode


@pytest.mark.parametrize("kill", ["shard:2", "commit:2"])
def test_sigkilled_writer_resumes_to_identical_rows(tmp_path, kill):
    _write(tmp_path / "ref", 25)
    out = tmp_path / "run"
    rc = _run_writer(out, 25, resume=False, kill=kill)
    assert rc == -9  # really killed
    m = json.loads((out / "manifest.json").read_text())
    assert not m["complete"] and 0 < m["rows"]
    listed = {s["file"] for s in m["shards"]}
    on_disk = {p.name for p in out.glob("shard-*.safetensors")}
    assert (on_disk - listed) == (set() if kill.startswith("commit") else {"shard-r0-00001.safetensors"})
    with pytest.raises(MusiclensError, match="interrupted"):
        ActivationStore(out)
    assert any("incomplete" in p for p in verify_store(out))
    write_clips(out, 25, resume=True)
    assert verify_store(out) == []
    _assert_same_content(ActivationStore(out), ActivationStore(tmp_path / "ref"))


def test_verify_detects_corruption_and_cli(tmp_path, capsys):
    _write(tmp_path / "s", 10)
    assert main(["store", "verify", str(tmp_path / "s")]) == 0
    assert main(["store", "info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "rows" in out and "1,3" in out
    shard = sorted((tmp_path / "s").glob("shard-*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_store(tmp_path / "s")
    assert len(problems) == 1 and shard.name in problems[0] and "sha256" in problems[0]
    assert main(["store", "verify", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert shard.name in err and len(err.strip().splitlines()) == 1
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["shards"][0]["rows"] += 1
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    assert any("rows" in p for p in verify_store(tmp_path / "s"))
    assert main(["store", "info", str(tmp_path / "nope")]) == 2
