# Two commands: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv in the checkout when missing and installs the pinned set.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt setup.py | cksum | cut -d' ' -f1)
STAMP_HF := $(VENV)/.installed-hf-$(shell cat requirements-hf.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo study test lint fmt sysdeps venv venv-hf bench clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade "pip==26.3"
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# The test suite also covers the optional Hugging Face export (torch CPU + transformers).
venv-hf: $(STAMP_HF)

$(STAMP_HF): $(STAMP) requirements-hf.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-hf.txt
	@rm -f $(VENV)/.installed-hf-*
	@touch $@

demo: venv
	$(VENV)/bin/siglip-rins demo $(DEMO_ARGS)

# The compute sweep behind the README's study table: STUDY_ARGS="--budget 60m" by default (report in ./study_report).
STUDY_ARGS ?= --budget 60m
study: venv
	$(VENV)/bin/siglip-rins study $(STUDY_ARGS)

# One formatter-enforced style (ruff.toml: 2-space indentation) and a linter, checked before the suite.
lint: venv
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .

fmt: venv
	$(VENV)/bin/ruff format --quiet .
	$(VENV)/bin/ruff check --quiet --fix .

# System packages the suite drives as a user would: Debian's chromium (the serve page test). Installed when missing.
sysdeps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: venv venv-hf lint sysdeps
	$(PY) -m pytest -q -n 2 --durations=15 tests $(PYTEST_ARGS)

bench: venv
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
