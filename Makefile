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

.PHONY: setup build demo test test-cuda test-system cuda-toolkit fmt fuzz clean-venv

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build -p lrf-flow

demo: build
	$(BIN) run pipelines/demo.yaml

test: setup
	$(CARGO) test --workspace --no-fail-fast
	@$(MAKE) --no-print-directory test-cuda
	@$(MAKE) --no-print-directory test-system

# Tests that need Debian packages (scripts/setup-debian.sh installs them): the HTML report and the viewer in
# headless Chromium (the viewer driven by ChromeDriver), and MP4 videos through ffmpeg. #[ignore]d in a plain `cargo test`, run here where the program
# is found, and reported as skipped where it is not.
test-system:
	@bash scripts/setup-debian.sh chromium chromium-driver ffmpeg
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "$(CARGO) test -p lrf-stages --test report_browser -- --include-ignored"; \
	  $(CARGO) test -p lrf-stages --test report_browser -- --include-ignored || exit 1; \
	else echo "test-system: SKIPPED the report's browser test: no chromium (see scripts/setup-debian.sh)"; fi
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  echo "$(CARGO) test -p lrf-flow --test viewer -- --include-ignored"; \
	  $(CARGO) test -p lrf-flow --test viewer -- --include-ignored || exit 1; \
	else echo "test-system: SKIPPED the viewer's browser test: no chromium/chromedriver (see scripts/setup-debian.sh)"; fi
	@if command -v ffmpeg >/dev/null 2>&1; then \
	  echo "$(CARGO) test -p lrf-formats --lib video -- --include-ignored"; \
	  $(CARGO) test -p lrf-formats --lib video -- --include-ignored || exit 1; \
	  echo "$(CARGO) test -p lrf-flow --test camera_path -- --include-ignored"; \
	  $(CARGO) test -p lrf-flow --test camera_path -- --include-ignored || exit 1; \
	else echo "test-system: SKIPPED the video tests: no ffmpeg (see scripts/setup-debian.sh)"; fi

# nvcc from PyPI (scripts/requirements-cuda.txt, about 100 MB) in the virtualenv, so that every `make test`
# compiles the CUDA kernel, GPU or not. The stamp makes it a no-op once installed; a machine where pip cannot
# install it carries on, and test-cuda says it skipped.
CUDA_STAMP := $(VENV)/.lrf-cuda-toolkit-stamp
cuda-toolkit: setup
	@if [ ! -f $(CUDA_STAMP) ] || [ scripts/requirements-cuda.txt -nt $(CUDA_STAMP) ]; then \
	  start=$$(date +%s); \
	  if $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-cuda.txt; then \
	    touch $(CUDA_STAMP); echo "cuda-toolkit: nvcc installed in $$(( $$(date +%s) - start )) s"; \
	  else echo "cuda-toolkit: could not install scripts/requirements-cuda.txt (see above)"; fi; \
	fi

# The CUDA rasterizer: built with the `cuda` feature wherever nvcc is found (NVCC, PATH, the virtualenv: the
# same search as splat/build.rs), then its parity tests: the kernels' host emulation everywhere, the kernels
# themselves (#[ignore]d, so listed as ignored) with --include-ignored where nvidia-smi finds a device.
test-cuda: cuda-toolkit
	@if [ -n "$$NVCC" ] || command -v nvcc >/dev/null 2>&1 || ls $(VENV)/lib/python3*/site-packages/nvidia/*/bin/nvcc >/dev/null 2>&1; then \
	  gpu=$$(command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo --include-ignored); \
	  echo "$(CARGO) test -p lrf-splat --features cuda --lib tests::cuda -- $$gpu"; \
	  $(CARGO) test -p lrf-splat --features cuda --lib tests::cuda -- $$gpu || exit 1; \
	  [ -n "$$gpu" ] || echo "test-cuda: the GPU tests were ignored: nvidia-smi finds no device"; \
	else echo "test-cuda: skipped: no nvcc (install it with: $(VENV)/bin/pip install -r scripts/requirements-cuda.txt)"; fi

fmt:
	$(CARGO) fmt --all

# Coverage-guided fuzzing of the file readers (cargo install cargo-fuzz --locked first): COLMAP models,
# safetensors shards, PLY, views.json (formats/fuzz), pipeline files and manifests (graph/fuzz); FUZZ_SECONDS
# each. Stable toolchain: RUSTC_BOOTSTRAP lets cargo-fuzz use the sanitizer flags.
FUZZ_SECONDS ?= 600
FORMATS_FUZZ_TARGETS := colmap_cameras colmap_images colmap_points3d colmap_roundtrip colmap_text shard ply views_json
GRAPH_FUZZ_TARGETS := pipeline_yaml manifest
fuzz:
	cd formats/fuzz && python3 seed_corpus.py && for t in $(FORMATS_FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done
	cd graph/fuzz && for t in $(GRAPH_FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean-venv:
	rm -rf $(VENV)
