"""Atomic writes: nothing half-written, ordinary permissions."""

import os
import stat

import pytest

from musiclens.io import atomic_dir, atomic_path, write_json


def test_atomic_path_renames_on_success_with_normal_permissions(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_path(target) as tmp:
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        write_json(tmp / "a.json", {"x": 1})
    assert (target / "a.json").exists()
    with pytest.raises(RuntimeError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "b.json").write_text("{}")
            raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a.json"]
    with pytest.raises(FileExistsError):
        with atomic_dir(target) as tmp:
            pass
