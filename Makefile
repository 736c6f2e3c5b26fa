# The two commands a newcomer needs: `make demo` and `make test`. Both set the project up first
# (scripts/setup.sh: a local virtualenv with libtorch from PyPI torch==2.13.0; idempotent).

VENV := $(CURDIR)/.venv
# tch's build finds libtorch through the venv's python (LIBTORCH_USE_PYTORCH); binaries get an
# rpath to it, so running them needs no LD_LIBRARY_PATH.
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
export LRF_PYTHON := $(VENV)/bin/python
# Tests build models from configs; nothing may come from a model hub.
export HF_HUB_OFFLINE := 1
# Real scenes for acceptance tests (override to point elsewhere).
export LRF_DATA ?= $(abspath $(CURDIR)/../shared/data)
CARGO ?= cargo
BIN := target/debug/lrf-flow

.PHONY: setup build demo test fmt fuzz clean-venv

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build -p lrf-flow

demo: build
	$(BIN) run pipelines/demo.yaml

test: setup
	$(CARGO) test --workspace --no-fail-fast

fmt:
	$(CARGO) fmt --all

# Coverage-guided fuzzing of the COLMAP binary readers (cargo install cargo-fuzz first).
# Stable toolchain: RUSTC_BOOTSTRAP lets cargo-fuzz use the sanitizer flags.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := colmap_cameras colmap_images colmap_points3d colmap_roundtrip colmap_text
fuzz:
	cd formats/fuzz && python3 seed_corpus.py && for t in $(FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$$(( $(FUZZ_SECONDS) / 5 )) || exit 1; done

clean-venv:
	rm -rf $(VENV)
