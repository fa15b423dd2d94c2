"""The `musiclens` command line.

Every module in `musiclens/commands/` defines `register(subparsers)`, which
adds one or more sub-commands whose `func(args)` does the work. This file
only discovers those modules and turns user errors into one-line messages
(exit 2), so adding a command never means editing a central list.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from . import __version__
from .errors import MusiclensError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musiclens",
        description="Find what music generation models have learned, and steer them.",
    )
    parser.add_argument("--version", action="version", version=f"musiclens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    from . import commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{commands.__name__}.{mod.name}")
            module.register(sub)
        except Exception as e:  # one broken command must not take down the others
            if os.environ.get("MUSICLENS_DEBUG"):
                raise
            print(f"warning: command module {mod.name!r} failed to load: {type(e).__name__}: {e}", file=sys.stderr)
    return parser


class ArgumentParserError(MusiclensError):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        return int(result or 0)
    except MusiclensError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError) as e:
        # a path the user gave that a library opened before musiclens checked it
        if os.environ.get("MUSICLENS_DEBUG"):
            raise
        what = {FileNotFoundError: "file not found", NotADirectoryError: "not a folder (a file is in the path)",
                IsADirectoryError: "a folder where a file was expected",
                FileExistsError: "a file is in the way of a folder", PermissionError: "permission denied"}[type(e)]
        print(f"error: {what}: {e.filename or e}", file=sys.stderr)
        return 2


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
