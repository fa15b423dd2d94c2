"""The CLI: every command and sub-command has working --help; user errors exit 2 with one line."""

import argparse
import subprocess
import sys

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
        assert "usage:" in text
        seen.append(" ".join(path))
    for required in ("extract", "store", "models", "generate", "train-sae", "features", "steer",
                     "diffmean", "measure", "corpus", "organism", "latent", "demo"):
        assert required in seen, f"missing command {required}"


def test_no_command_module_fails_to_load(capsys):
    cli.build_parser()
    assert "failed to load" not in capsys.readouterr().err


def _run(*args):
    return subprocess.run([sys.executable, "-m", "musiclens", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [
    ("generate", "--model", "no-such-model", "--prompt", "x"),
    ("models", "info", "/no/such/folder"),
])
def test_user_errors_are_one_line_exit_2(args):
    r = _run(*args)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(err) == 1 and err[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
