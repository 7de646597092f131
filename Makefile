# Set-up and the two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?=

.PHONY: demo test install clean-demo

# (Re)install when the requirements change; the venv is created with the machine's python3.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The main job end to end: synthetic data (or DATA=<Carvana-layout folder>), folds, the
# ablation set on every fold, tuning, TTA ensemble, a checked submission and the leaderboard.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(if $(DATA),--data $(DATA))
