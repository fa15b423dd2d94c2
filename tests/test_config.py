"""Config dataclasses double as CLI options and config.json."""

import argparse
from dataclasses import dataclass

import pytest

from musiclens.config import add_arguments, from_args, load_config, option, save_config
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
