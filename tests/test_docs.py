"""Every `musiclens ...` command in a code block of README.md and docs/*.md parses with the real CLI.

A renamed or removed option would otherwise leave the docs telling users to type a command that
fails. Only parsing is checked (nothing runs); placeholders such as RUN or DIR are fine where an
option takes text.
"""
import contextlib
import io
import re
import shlex
from pathlib import Path

from musiclens import cli

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"^(?:\$ |.*?(?:&& |; |\( *))?(musiclens [a-z][\w-]*.*)$")


def fenced_commands(path: Path):
    """(line number, command) for each musiclens command inside ``` fences, continuation lines joined."""
    lines = path.read_text().splitlines()
    inside = False
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("```"):
            inside = not inside
        elif inside and not line.startswith("#") and (m := COMMAND.match(line)):
            cmd, start = m.group(1), i
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd[:-1].rstrip() + " " + lines[i].strip()
            cmd = re.split(r" #| && | \| |;", cmd)[0].strip()
            if "..." not in cmd:
                yield start + 1, cmd
        i += 1


def test_documented_commands_parse():
    parser = cli.build_parser()
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked, bad = 0, []
    for f in files:
        for line, cmd in fenced_commands(f):
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(shlex.split(cmd)[1:])
            except SystemExit as e:
                if e.code:
                    bad.append(f"{f.name}:{line}: {cmd}\n    {err.getvalue().strip().splitlines()[-1]}")
            checked += 1
    assert checked > 100, checked  # the extraction still finds the docs' commands
    assert not bad, "\n".join(bad)


def test_the_check_catches_a_stale_option(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n```bash\nmusiclens generate --prompt a \\\n    --no-such-flag 3   # comment\n```\n")
    ((line, cmd),) = fenced_commands(doc)
    assert line == 3 and cmd == "musiclens generate --prompt a --no-such-flag 3"
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            cli.build_parser().parse_args(shlex.split(cmd)[1:])
        raise AssertionError("a stale option parsed")
    except SystemExit as e:
        assert e.code == 2
