"""`musiclens models info|save`: inspect a model, or write it as a plain HF folder."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..config import add_arguments, from_args, option


@dataclass
class ModelsSaveConfig:
    name: str = option(help="model to save: organism, tiny-random, tiny-random-melody, a folder or hub id")
    out: str = option(help="output folder (a normal Hugging Face checkpoint folder)")
    overwrite: bool = option(False, help="replace an existing output folder")


def register(sub) -> None:
    p = sub.add_parser("models", help="inspect or save models")
    msub = p.add_subparsers(dest="models_command", metavar="<action>")

    pi = msub.add_parser("info", help="print a model's geometry (layers, width, codec rates)")
    pi.add_argument("name", nargs="?", default="organism", help="model name (default: organism)")
    pi.set_defaults(func=_info)

    ps = msub.add_parser("save", help="write a model as a self-contained HF folder")
    ps.add_argument("name", help="model to save (organism, tiny-random, tiny-random-melody, folder, hub id)")
    ps.add_argument("out", help="output folder")
    ps.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    ps.set_defaults(func=_save)
    p.set_defaults(func=lambda a: p.print_help() or 2)


def _info(args) -> int:
    from ..models import load_model

    print(json.dumps(load_model(args.name).info(), indent=2))
    return 0


def _save(args) -> int:
    from ..models import load_model, save_model

    model = load_model(args.name)
    out = save_model(model, args.out, overwrite=args.overwrite)
    print(f"saved {args.name} ({model.kind}, {model.n_layers} layers x {model.d_model}) to {out}")
    return 0
