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

# Wheels for a CUDA machine without internet (bash benchmarks/gpu/run.sh --wheels .gpu_wheels):
# cp312 manylinux x86_64, without dependencies, of what such a machine lacks when it has torch,
# torchvision, numpy, opencv, pandas, scipy, accelerate, ...: the packages named here at
# requirements.txt's pins, plus benchmarks/gpu/wheels.txt; the fallback ones are installed
# there only when the machine's own copy does not import.
GPU_WHEELS := .gpu_wheels
GPU_FROM_REQUIREMENTS := segmentation-models-pytorch albumentations torchinfo timm
GPU_FALLBACK := PyYAML tqdm safetensors
GPU_DOWNLOAD := $(if $(wildcard $(BIN)/pip),$(BIN)/pip,$(PYTHON) -m pip) download -q --no-deps --only-binary=:all: \
	--python-version 3.12 --implementation cp --abi cp312 \
	--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
gpu_pins = $(foreach p,$(1),$(or $(shell grep -i -m1 '^$(p)==' requirements.txt),$(error $(p) has no == pin in requirements.txt)))

.PHONY: gpu-wheels
gpu-wheels:
	rm -rf $(GPU_WHEELS)
	$(GPU_DOWNLOAD) -d $(GPU_WHEELS) $(call gpu_pins,$(GPU_FROM_REQUIREMENTS)) -r benchmarks/gpu/wheels.txt
	$(GPU_DOWNLOAD) -d $(GPU_WHEELS)/fallback $(call gpu_pins,$(GPU_FALLBACK))
	@ls -l $(GPU_WHEELS) $(GPU_WHEELS)/fallback
	@du -sh $(GPU_WHEELS); test $$(du -sm $(GPU_WHEELS) | cut -f1) -lt 40 || { echo "$(GPU_WHEELS) is over 40 MB (about 12 MB expected): a large package such as torch came in; check benchmarks/gpu/wheels.txt"; exit 1; }
