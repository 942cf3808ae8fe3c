# The newcomer's entry points. Each target installs what is missing first (scripts/bootstrap.sh is idempotent).
#   make demo   generate a tiny model and run freehold end to end on it
#   make test   build and run the whole test suite (unit, conformance against transformers, ...)
#   make bench  freehold against HF PEFT on the same training work (ARGS=--quick: under 10 minutes)
BUILD_DIR ?= build
CUDA_BUILD_DIR ?= build-cuda
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=
CTEST_FLAGS ?=

.PHONY: all bootstrap configure build test demo build-cuda fuzz bench clean

all: build

bootstrap:
	@bash scripts/bootstrap.sh

configure: bootstrap
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS)

test: build
	@ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(JOBS) $(CTEST_FLAGS)

# The demo needs the binary only, not the test executables.
demo: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS) --target freehold
	@bash scripts/demo.sh $(BUILD_DIR)

# freehold against HF transformers + PEFT on the same work (bench/run.py): training tokens/s, step split, peak RSS,
# MFU; export and prepare. Writes bench/results/<date>.json and docs/benchmarks.md. ARGS=--quick: under 10 minutes.
bench: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS) --target freehold
	@.venv/bin/python bench/run.py --freehold $(BUILD_DIR)/bin/freehold --work $(BUILD_DIR)/bench $(ARGS)

# Compile and link the CUDA variant (kernels for sm_80 and sm_90); runs only where a GPU is.
build-cuda: bootstrap
	@bash scripts/build_cuda.sh $(CUDA_BUILD_DIR)

# libFuzzer + ASan/UBSan over the parsers of untrusted bytes.
fuzz: bootstrap
	@bash scripts/run_fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD_DIR) $(CUDA_BUILD_DIR) build-fuzz
