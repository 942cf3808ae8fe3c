#!/usr/bin/env bash
# Installs llama.cpp's Hugging Face → GGUF converters for the interop test (tests/conformance/llama_cpp_test.py)
# and the llama.cpp block of docs/export-and-interop.md: convert_hf_to_gguf.py (merged models), convert_lora_to_gguf.py
# (PEFT adapters), their `conversion` package and gguf-py, plus sentencepiece, which the converter imports for
# Llama-family vocabularies. Everything comes from PyPI: the llama-cpp-python sdist vendors llama.cpp's source at a
# fixed commit (pinned here by version and sha256). Only the Python converters are installed, not llama.cpp's
# runtime. Cached outside the clone under $FREEHOLD_CACHE (default ~/.cache/freehold), keyed by the version and this
# script, and linked as .llama.cpp; safe to rerun. Needs the test virtual environment (scripts/bootstrap.sh).
#
#   .llama.cpp/convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/, gguf-py/   llama.cpp's converters
#   .llama.cpp/python/sentencepiece                                                   put on PYTHONPATH with gguf-py
set -euo pipefail

version=0.3.36   # llama-cpp-python; vendor/llama.cpp is the llama.cpp it was released with
sdist_sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
sentencepiece_version=0.2.1

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${FREEHOLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/freehold}"
python="$repo_root/.venv/bin/python"

log() { printf '[install_llama_cpp] %s\n' "$*" >&2; }

if [[ ! -x "$python" ]]; then
  log "$python is missing: run scripts/bootstrap.sh first"
  exit 1
fi

digest="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
target="$cache_dir/llama.cpp-converters-$version-$digest"
stamp="$target/.freehold-complete"

if [[ ! -f "$stamp" ]]; then
  log "installing llama.cpp's converters (llama-cpp-python $version sdist, 77 MB, once per machine) in $target"
  downloads="$cache_dir/downloads"
  sdist="$downloads/llama_cpp_python-$version.tar.gz"
  mkdir -p "$downloads"
  if [[ ! -f "$sdist" ]] || ! echo "$sdist_sha256  $sdist" | sha256sum --check --status; then
    "$python" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$downloads"
  fi
  if ! echo "$sdist_sha256  $sdist" | sha256sum --check --status; then
    log "$sdist does not have the pinned sha256 $sdist_sha256"
    exit 1
  fi
  tmp="$(mktemp -d "$cache_dir/.llama.cpp-$version.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  vendor="llama_cpp_python-$version/vendor/llama.cpp"
  tar -xzf "$sdist" -C "$tmp" "$vendor/convert_hf_to_gguf.py" "$vendor/convert_lora_to_gguf.py" \
    "$vendor/conversion" "$vendor/gguf-py" "$vendor/LICENSE"
  mv "$tmp/$vendor" "$tmp/tree"
  "$python" -m pip install -q --no-deps --target "$tmp/tree/python" "sentencepiece==$sentencepiece_version"
  rm -rf "$target"
  mv "$tmp/tree" "$target"
  rm -rf "$tmp"
  trap - EXIT
  PYTHONPATH="$target/gguf-py:$target/python" "$python" "$target/convert_hf_to_gguf.py" --help >/dev/null
  touch "$stamp"
fi

if [[ "$(readlink "$repo_root/.llama.cpp" 2>/dev/null)" != "$target" ]]; then
  ln -sfn "$target" "$repo_root/.llama.cpp"
fi
