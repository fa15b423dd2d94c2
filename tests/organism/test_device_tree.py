"""tools/device_tree.sh keeps a tracked folder out of a device call's tree and puts it back exactly.

The device call copies tracked and untracked-unignored files; the shipped organism must not travel
with the LM pack (together they pass 64 MiB), and nothing may be lost or left staged afterwards.
"""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "device_tree.sh"


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def tree(repo, *args):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=repo, capture_output=True, text=True)


def test_hide_size_restore(tmp_path):
    repo = tmp_path / "repo"
    (repo / "assets" / "big").mkdir(parents=True)
    (repo / "gpu").mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@t")
    git(repo, "config", "user.name", "t")
    (repo / "assets" / "big" / "w.bin").write_bytes(b"\1" * (3 << 20))
    (repo / "code.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("/gpu/\n")
    (repo / "gpu" / "pack.bin").write_bytes(b"\2" * (1 << 20))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")

    before = tree(repo, "size", "gpu")
    assert before.returncode == 0 and "+ carry 1.00 MiB" in before.stdout
    assert float(before.stdout.split()[1]) >= 3.0          # the tracked 3 MiB travels

    dirty = repo / "assets" / "big" / "w.bin"
    dirty.write_bytes(b"\3")
    refused = tree(repo, "hide", "assets")
    assert refused.returncode == 2 and "uncommitted" in refused.stderr
    git(repo, "checkout", "--", "assets")

    r = tree(repo, "hide", "assets/")
    assert r.returncode == 0, r.stderr
    assert dirty.stat().st_size == 3 << 20                 # still on disk
    assert "assets" not in git(repo, "ls-files", "--cached", "--others", "--exclude-standard")
    assert float(tree(repo, "size").stdout.split()[1]) < 0.01

    r = tree(repo, "restore")
    assert r.returncode == 0 and "restored: assets" in r.stdout
    assert git(repo, "status", "--porcelain") == ""       # index, exclude file and tree as before
    assert "device_tree" not in (repo / ".git" / "info" / "exclude").read_text()
    assert tree(repo, "restore").stdout.strip() == "device_tree: nothing hidden"
    assert tree(repo, "hide", "nothing_here").returncode == 2
    assert tree(repo, "size", "gpu").stdout == before.stdout


def test_two_hides_one_restore(tmp_path):
    """prepare_lm_pack.sh hides the organism and bench/results in two calls; one restore undoes both."""
    repo = tmp_path / "repo"
    for d in ("assets", "results"):
        (repo / d).mkdir(parents=True)
        (repo / d / "f.bin").write_bytes(b"\1" * (1 << 20))
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@t")
    git(repo, "config", "user.name", "t")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    assert tree(repo, "hide", "assets").returncode == 0
    assert tree(repo, "hide", "results").returncode == 0
    assert float(tree(repo, "size").stdout.split()[1]) < 0.01
    r = tree(repo, "restore")
    assert r.returncode == 0 and "restored: assets" in r.stdout and "restored: results" in r.stdout
    assert git(repo, "status", "--porcelain") == ""
