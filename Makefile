# Two commands set everything up on a fresh machine:
#   make run    venv + dependencies + build, then the main job
#   make test   venv + dependencies + build, then ruff and the test suite
# A second call reinstalls and rebuilds nothing unless its inputs changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .make
# The CUDA kernels are compiled whenever nvcc is found under CUDA_HOME.
export CUDA_HOME ?= /usr/local/cuda
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
export MAX_JOBS ?= $(shell nproc)

EXTENSION := detkit/_C$(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
EXTENSION_SOURCES := setup.py $(shell find detkit/layers/csrc -type f)

# The main job: Fast R-CNN trained on the synthetic shapes set and evaluated on shapes_val.
# --resume: a second `make run` continues an interrupted run, or only re-evaluates a finished
# one; delete $(SHAPES_OUTPUT) to train again from scratch.
SHAPES_CONFIG := configs/shapes/fast_rcnn.yaml
SHAPES_OUTPUT := output/shapes_fast_rcnn
# Proposals live in the split's folder, so a regenerated split takes its stale proposals with it.
PROPOSALS := datasets/shapes/%/selective_search.pkl
DEMO_IMAGES := $(foreach i,00000 00001 00002 00003,datasets/shapes/val/images/$(i).png)

.PHONY: run test build lint bench gpu-check offline-wheels clean

run: build $(subst %,train,$(PROPOSALS)) $(subst %,val,$(PROPOSALS))
	$(PY) tools/train_net.py --config-file $(SHAPES_CONFIG) --resume OUTPUT_DIR=$(SHAPES_OUTPUT)
	$(PY) tools/demo.py --config-file $(SHAPES_CONFIG) --output $(SHAPES_OUTPUT)/demo \
		--input $(DEMO_IMAGES) MODEL.WEIGHTS=$(SHAPES_OUTPUT)/model_final.pth
	$(PY) tools/show_results.py $(SHAPES_OUTPUT)

# Selective-search proposals (generating the shapes images first), computed once and cached.
$(PROPOSALS): | build
	$(PY) tools/compute_proposals.py --dataset shapes_$* --out $@ --workers $(MAX_JOBS)

test: build lint
	$(PY) -m pytest -q

build: $(EXTENSION)

lint: $(STAMPS)/deps
	$(VENV)/bin/ruff check .

bench: build
	$(PY) tools/benchmark_ops.py --json benchmark_ops.json

# On a machine with a CUDA GPU: build, every CUDA test, the op and end-to-end benchmarks on the
# GPU, one report in $(GPU_CHECK_DIR)/report.md (tools/gpu_check.py; docs/benchmarks.md).
GPU_CHECK_DIR ?= output/gpu_check
gpu-check: build
	$(PY) tools/gpu_check.py --output-dir $(GPU_CHECK_DIR)

# A machine without a package registry but with torch, torchvision, numpy, OpenCV and pytest
# installed (the device machines that run the GPU check): `make offline-wheels` here writes the
# wheels of the other dependencies into $(OFFLINE_WHEELS) (for that machine's Python,
# OFFLINE_PYTHON); there `make gpu-check OFFLINE_WHEELS=.wheels` makes a venv over the system's
# packages and installs only those wheels.
OFFLINE_PYTHON ?= 3.12
OFFLINE_PACKAGES := fvcore iopath omegaconf pycocotools
pinned = $(shell grep -E '^($(subst $() ,|,$(1)))==' requirements.txt)
offline-wheels: $(STAMPS)/deps
	$(PY) -m pip wheel --quiet --no-deps -w .wheels $(call pinned,fvcore iopath omegaconf) \
		yacs termcolor
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: -d .wheels \
		--python-version $(OFFLINE_PYTHON) --platform manylinux2014_x86_64 $(call pinned,pycocotools)

$(STAMPS)/deps: requirements.txt
ifeq ($(OFFLINE_WHEELS),)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
else
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --no-index --find-links $(OFFLINE_WHEELS) $(OFFLINE_PACKAGES)
endif
	mkdir -p $(STAMPS) && touch $@

$(EXTENSION): $(STAMPS)/deps $(EXTENSION_SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

clean:
	rm -rf build $(STAMPS) detkit/_C*.so *.egg-info .wheels
