"""One config dataclass per pipeline stage, doubling as CLI options and `config.json`.

Declare a stage's options once, as a dataclass whose fields carry their help
text in `metadata={"help": ...}` (as EleutherAI's sparsify does). Then

    add_arguments(parser, ExtractConfig)      # --model, --layers, ... with help
    cfg = from_args(ExtractConfig, namespace) # back to a typed dataclass
    save_config(cfg, out_dir / "config.json") # what was run, next to the result

Field names map to flags with dashes (`batch_size` -> `--batch-size`).
Supported field types: str, int, float, bool (becomes --flag / --no-flag),
Optional[...] of those, and list[int] / list[float] / list[str]
(comma-separated on the command line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import operator
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import MusiclensError
from .io import write_json

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
           cli: bool = True, short: str | None = None, choices: list | None = None,
           ge: float | None = None, gt: float | None = None, lt: float | None = None,
           le: float | None = None) -> Any:
    """A dataclass field with help text (and optional short flag / choices).

    `ge` / `gt` / `lt` / `le` bound a number (each element of a list): `from_args` turns a value
    outside them, or outside `choices`, into a one-line error before the command does anything.
    Every float option must also be finite; NaN would otherwise slip through every `x < 0` check.
    """
    meta = {"help": help, "cli": cli, "short": short, "choices": choices, "ge": ge, "gt": gt, "lt": lt, "le": le}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _list_parser(elem: type, flag: str):
    def parse(text: str) -> list:
        if text.strip() == "":
            return []
        items = [x.strip() for x in text.split(",")]
        if "" in items:  # "1,,2" or "1,2,": a typo, not a shorter list
            raise argparse.ArgumentTypeError(f"{flag}: empty item in {text!r}")
        try:
            return [elem(x) for x in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: expected a comma-separated list of {elem.__name__}, got {text!r}")
    return parse


def add_arguments(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """Add one CLI option per field of dataclass `cls` to `parser`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.metadata.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        names = [flag] + ([f.metadata["short"]] if f.metadata.get("short") else [])
        tp, optional = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if not required and default not in (None, [], ""):
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            help_text = f"{help_text} (default: {shown})"
        # argparse %-formats help strings: escape literal percent signs ("25%,50%")
        kw: dict[str, Any] = {"dest": f.name, "help": help_text.replace("%", "%%")}
        if tp is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, default=default, **kw)
            continue
        if typing.get_origin(tp) is list:
            (elem,) = typing.get_args(tp)
            kw["type"] = _list_parser(elem, flag)
            kw["metavar"] = elem.__name__.upper() + ",..."
        elif tp in (int, float, str):
            kw["type"] = tp
        else:
            kw["type"] = str
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        if required:
            parser.add_argument(*names, required=True, **kw)
        else:
            parser.add_argument(*names, default=default, **kw)


def _check_device(spec: str) -> None:
    """--device: a torch device string whose kind this machine has (else a traceback deep in torch)."""
    import torch

    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise MusiclensError(f"--device {spec!r} is not a device (cpu, cuda, cuda:1, ...)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MusiclensError(f"--device {spec}: this machine has no CUDA device")


_BOUNDS = (("ge", ">=", operator.ge), ("gt", ">", operator.gt), ("lt", "<", operator.lt), ("le", "<=", operator.le))


def check_values(cfg: Any) -> None:
    """One-line errors for option values outside their declared bounds or choices, and for
    non-finite floats. `from_args` calls it; so do library entry points, for configs built in Python."""
    import math

    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        flag = "--" + f.name.replace("_", "-")
        if f.name == "device" and isinstance(v, str) and v != "auto":
            _check_device(v)
        choices = f.metadata.get("choices")
        if choices and v is not None and not isinstance(v, list) and v not in choices:
            raise MusiclensError(f"{flag} must be one of {', '.join(map(str, choices))}, got {v}")
        bounds = [(sym, f.metadata[key], ok) for key, sym, ok in _BOUNDS if f.metadata.get(key) is not None]
        for x in (v if isinstance(v, list) else [v]):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if isinstance(x, float) and not math.isfinite(x):
                raise MusiclensError(f"{flag} must be a finite number, got {x}")
            if not all(ok(x, b) for _, b, ok in bounds):
                raise MusiclensError(f"{flag} must be {' and '.join(f'{sym} {b:g}' for sym, b, _ in bounds)}, got {x:g}")


def from_args(cls: type[T], ns: argparse.Namespace, **overrides: Any) -> T:
    """Build a `cls` instance from parsed args (fields missing from `ns` keep defaults), values checked."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            kwargs[f.name] = overrides[f.name]
        elif hasattr(ns, f.name):
            kwargs[f.name] = getattr(ns, f.name)
    cfg = cls(**kwargs)
    check_values(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    """Dataclass -> JSON-able dict (Paths become strings)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, Path):
            v = str(v)
        elif dataclasses.is_dataclass(v):
            v = to_dict(v)
        out[f.name] = v
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write `cfg` as JSON (atomically)."""
    write_json(path, to_dict(cfg))


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a `config.json` written by `save_config`; unknown keys are an error."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MusiclensError(f"config not found: {path}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MusiclensError(f"config is not valid JSON: {path}: {e}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise MusiclensError(f"{path}: unknown config keys {sorted(unknown)}")
    return cls(**data)
