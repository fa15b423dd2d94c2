"""Config dataclasses double as CLI options and config.json."""

import argparse
from dataclasses import dataclass

import pytest

from musiclens.config import add_arguments, check_values, from_args, load_config, option, save_config
from musiclens.errors import MusiclensError


@dataclass
class Cfg:
    store: str = option(help="store directory")
    layers: str = option("early,25%,50%", help="layers, e.g. 25%")
    expansion: list[int] = option(default_factory=lambda: [4, 32], help="expansions")
    lam: float | None = option(None, help="strength")
    resume: bool = option(False, help="resume")


def _parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p, Cfg)
    return p, from_args(Cfg, p.parse_args(argv))


def test_round_trip(tmp_path):
    p, cfg = _parse(["--store", "s", "--expansion", "4,8,16", "--lam", "1.5", "--resume"])
    assert cfg == Cfg(store="s", expansion=[4, 8, 16], lam=1.5, resume=True)
    assert "25%" in p.format_help()                    # literal percent signs survive argparse
    save_config(cfg, tmp_path / "config.json")
    assert load_config(Cfg, tmp_path / "config.json") == cfg


def test_required_and_bad_values():
    with pytest.raises(SystemExit):
        _parse([])                                      # --store is required
    with pytest.raises(SystemExit):
        _parse(["--store", "s", "--expansion", "4,x"])


def test_unknown_keys_rejected(tmp_path):
    (tmp_path / "c.json").write_text('{"store": "s", "bogus": 1}')
    with pytest.raises(MusiclensError):
        load_config(Cfg, tmp_path / "c.json")


@dataclass
class Bounded:
    lr: float = option(0.0, help="0 = auto", ge=0)
    rate: float = option(0.5, help="a share", ge=0, le=1)
    decay: float = option(0.2, help="a share below 1", ge=0, lt=1)
    rate_hz: int = option(16000, help="sample rate", choices=[16000, 32000])
    steps: int = option(10, help="steps", gt=0)
    sizes: list[int] = option(default_factory=lambda: [2, 4], help="sizes", ge=2)
    device: str = option("cpu", help="device")


def _bounded(argv):
    p = argparse.ArgumentParser()
    add_arguments(p, Bounded)
    return from_args(Bounded, p.parse_args(argv))


@pytest.mark.parametrize("argv, msg", [
    (["--lr", "-1"], "--lr must be >= 0, got -1"),
    (["--lr", "nan"], "--lr must be a finite number"),   # NaN passes every `x < 0` check
    (["--rate", "1.5"], "--rate must be >= 0 and <= 1"),
    (["--decay", "1"], "--decay must be >= 0 and < 1, got 1"),
    (["--steps", "0"], "--steps must be > 0"),
    (["--sizes", "2,1"], "--sizes must be >= 2, got 1"),
    (["--device", "foo"], "is not a device"),
])
def test_bounds_nan_and_devices_are_one_line_errors(argv, msg):
    with pytest.raises(MusiclensError, match=msg.replace("(", r"\(")):
        _bounded(argv)
    assert _bounded(["--lr", "0", "--rate", "1", "--steps", "1", "--sizes", "2"]).rate == 1.0


def test_empty_list_items_are_rejected():
    with pytest.raises(SystemExit):
        _bounded(["--sizes", "2,,4"])
    with pytest.raises(SystemExit):
        _bounded(["--sizes", "2,4,"])
    assert _bounded(["--sizes", ""]).sizes == []


def test_choices_are_checked_for_configs_built_in_python():
    """argparse checks choices on the command line; check_values does for library callers too."""
    check_values(Bounded(rate_hz=32000))
    with pytest.raises(MusiclensError, match="--rate-hz must be one of 16000, 32000, got 22050"):
        check_values(Bounded(rate_hz=22050))
    with pytest.raises(MusiclensError, match="--decay must be >= 0 and < 1"):
        check_values(Bounded(decay=1.0))
