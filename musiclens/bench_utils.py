"""Shared plumbing for `bench/*.py`: every result file records where and how it was measured.

The README quotes figures from `bench/results/*.json` only, so each file must
say which machine, which library versions, and which exact command made it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from .io import write_json

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def machine() -> dict[str, Any]:
    """CPU model and cores, memory, GPU (if any)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info


def versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "transformers", "numpy", "safetensors", "librosa", "essentia", "sae_lens"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:
            pass
    from . import __version__

    out["musiclens"] = __version__
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and waited-for children), in MB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0


def write_result(name: str, figures: dict[str, Any], command: str | None = None) -> Path:
    """Write `bench/results/<name>.json` with machine, versions, command and figures."""
    path = RESULTS / f"{name}.json"
    write_json(path, {
        "name": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command or " ".join([Path(sys.executable).name] + sys.argv),
        "machine": machine(),
        "versions": versions(),
        "figures": figures,
    })
    return path


SHIPPED_ORGANISM = "musiclens/assets/organism/musicgen"


def shipped_at(rev: str, folder: Path) -> Path:
    """The organism folder shipped at commit `rev`, written into `folder` from git history.

    Benches compare LMs shipped over the project's history on the same clips (`--rev`).
    """
    import subprocess

    from .errors import MusiclensError

    root = RESULTS.parent.parent
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        r = subprocess.run(["git", "show", f"{rev}:{SHIPPED_ORGANISM}/{name}"], cwd=root, capture_output=True)
        if r.returncode:
            raise MusiclensError(f"no shipped organism at {rev}: {r.stderr.decode().strip().splitlines()[-1]}")
        (folder / name).write_bytes(r.stdout)
    return folder


def add_organism_model_args(ap) -> None:
    """--model (organism folders, or 'shipped') and --rev (organisms shipped at past commits), for benches
    that compare LMs on the same clips; `organism_models` resolves them."""
    ap.add_argument("--model", action="append", default=[],
                    help="organism HF folder, or 'shipped'; repeat to compare (default: shipped)")
    ap.add_argument("--rev", action="append", default=[],
                    help="a commit whose shipped organism to measure too (read from git history); repeatable")


@contextlib.contextmanager
def organism_models(model: list[str], rev: list[str]):
    """(name, folder) for each --model (folder None = the shipped organism) and each --rev, the latter
    written from git history into a temporary folder that lives as long as the context."""
    import tempfile

    from .errors import MusiclensError

    models = [("shipped organism", None) if m == "shipped" else (m, Path(m)) for m in model or ["shipped"]]
    missing = [m for _, m in models if m is not None and not (m / "config.json").exists()]
    if missing:
        raise MusiclensError(f"no organism folder (config.json) at {missing[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        yield models + [(f"shipped at {r}", shipped_at(r, Path(tmp) / r)) for r in rev]
