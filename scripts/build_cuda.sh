#!/usr/bin/env bash
# Configures and builds the CUDA variant (-DFREEHOLD_CUDA=ON: kernels/*.cu by nvcc for sm_80 and sm_90, linked with
# LibTorch's CUDA libraries). Compile and link only: it needs the CUDA toolkit, not a GPU. CI runs it.
#   scripts/build_cuda.sh [BUILD_DIR] [extra cmake arguments...]     BUILD_DIR defaults to build-cuda
#   JOBS=N sets the parallel jobs (default: nproc); TARGETS="a b" builds only those targets (CI builds the binary
#   and the CUDA tests, which proves compile and link without recompiling every CPU test a second time).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${1:-${root}/build-cuda}"
shift || true
jobs="${JOBS:-$(nproc)}"

cmake_args=(-DFREEHOLD_CUDA=ON)
if [[ -z "${CUDACXX:-}" ]] && ! command -v nvcc >/dev/null; then
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then
    cmake_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
  else
    echo "build_cuda.sh: nvcc not found. HINT: install the CUDA toolkit matching the torch wheel (CUDA 13 for" \
         "torch 2.11.0+cu130), put its bin/ on PATH or set CUDACXX=/path/to/nvcc" >&2
    exit 2
  fi
fi

start=${SECONDS}
cmake -S "${root}" -B "${build_dir}" "${cmake_args[@]}" "$@"
if [[ -n "${TARGETS:-}" ]]; then
  read -r -a targets <<< "${TARGETS}"
  cmake --build "${build_dir}" -j"${jobs}" --target "${targets[@]}"
else
  cmake --build "${build_dir}" -j"${jobs}"
fi
echo "build_cuda.sh: built ${build_dir} in $((SECONDS - start)) s." \
     "On a GPU machine: ctest --test-dir ${build_dir} -L cuda"
