#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz and runs each for SECONDS (default 60) over a
# fresh copy of its checked-in seed corpus; first it runs the bad-HDF5 tests built with the same sanitizers. Exits
# non-zero when a test or target fails, crashes or breaks an invariant; a fuzzer's input that did it is left in
# build-fuzz/artifacts/<target>/ and its path is printed.
#   scripts/run_fuzz.sh [SECONDS]         environment: FREEHOLD_FUZZ_BUILD_DIR, JOBS
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds == 0)); then
  echo "usage: scripts/run_fuzz.sh [SECONDS]   (a positive whole number of seconds per target, default 60)" >&2
  exit 2
fi
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${FREEHOLD_FUZZ_BUILD_DIR:-$repo_root/build-fuzz}"
jobs="${JOBS:-2}"

# target:corpus directory under tests/fuzz/corpus
targets=(
  safetensors_header_fuzz:safetensors
  safetensors_index_fuzz:safetensors_index
  tokenizer_json_fuzz:tokenizer_json
  jsonl_record_fuzz:jsonl_record
)

log() { printf '[fuzz] %s\n' "$*" >&2; }

cmake -S "$repo_root" -B "$build_dir" -DFREEHOLD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang >/dev/null
names=()
for entry in "${targets[@]}"; do names+=("${entry%%:*}"); done
cmake --build "$build_dir" -j "$jobs" --target "${names[@]}" data_hdf5_files_asan_tests

status=0
# The bad-HDF5 tests under the same sanitizers (about 20 s): any ASan/UBSan report fails the run.
log "data_hdf5_files_asan_tests: bad HDF5 files under ASan + UBSan"
if ! LSAN_OPTIONS="suppressions=$repo_root/tests/data/lsan_hdf5.supp:print_suppressions=0" \
    "$build_dir/bin/data_hdf5_files_asan_tests" --gtest_brief=1 >"$build_dir/data_hdf5_files_asan_tests.log" 2>&1; then
  status=1
  tail -n 80 "$build_dir/data_hdf5_files_asan_tests.log" >&2
  log "data_hdf5_files_asan_tests FAILED; full log: $build_dir/data_hdf5_files_asan_tests.log"
else
  log "data_hdf5_files_asan_tests: $(grep -E '^\[  PASSED  \]' "$build_dir/data_hdf5_files_asan_tests.log" | tail -n 1)"
fi
for entry in "${targets[@]}"; do
  target="${entry%%:*}"
  seeds="$repo_root/tests/fuzz/corpus/${entry#*:}"
  work="$build_dir/corpus/$target"
  artifacts="$build_dir/artifacts/$target"
  # A copy, so what the fuzzer adds does not end up in the source tree.
  rm -rf "$work"
  mkdir -p "$work" "$artifacts"
  cp "$seeds"/* "$work"/
  log "$target: ${seconds}s over $(ls "$work" | wc -l) seed(s)"
  if ! "$build_dir/bin/$target" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" \
      "$work" 2>"$build_dir/$target.log"; then
    status=1
    tail -n 60 "$build_dir/$target.log" >&2
    log "$target FAILED; reproducer: $(ls -t "$artifacts" | head -n 1 | sed "s|^|$artifacts/|")"
    log "rerun it with: $build_dir/bin/$target <reproducer>"
  else
    log "$target: $(grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units)' "$build_dir/$target.log" | tail -n 1)"
  fi
done
exit "$status"
