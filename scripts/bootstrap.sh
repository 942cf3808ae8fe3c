#!/usr/bin/env bash
# Installs what freehold needs to build and test, and nothing twice: the Debian packages that are missing, and a
# Python virtual environment (oracles and benchmarks only) kept in a cache outside the clone and linked as .venv.
# Safe to run any number of times; a fresh Debian machine gets everything unattended.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${FREEHOLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/freehold}"
requirements="$repo_root/scripts/python-requirements.txt"

debian_packages=(
  build-essential cmake make pkg-config git
  openmpi-bin libopenmpi-dev
  libhdf5-dev
  libabsl-dev
  libyaml-cpp-dev
  nlohmann-json3-dev
  libgtest-dev
  libpcre2-dev
  libicu-dev
  ccache
  clang libclang-rt-dev
  python3 python3-venv
  time
  # tests/slurm: a one-node Slurm on localhost (scripts/slurm_local_cluster.sh), the offline proof's tools
  slurmctld slurmd slurm-client munge strace iproute2 util-linux
)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

install_debian_packages() {
  local missing=()
  for package in "${debian_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$package")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return
  fi
  log "installing Debian packages: ${missing[*]}"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pick_python() {
  # The wheels we pin exist for CPython 3.10 to 3.13; prefer the newest interpreter on PATH.
  for candidate in python3.13 python3.12 python3.11 python3.10 python3; do
    # pyenv shims exist for interpreters that are not installed; ask each one to run before trusting it.
    if "$candidate" -c 'import venv, ensurepip' >/dev/null 2>&1; then
      command -v "$candidate"
      return
    fi
  done
  log "no python3 found"
  exit 1
}

install_python_environment() {
  local digest venv stamp
  digest="$(sha256sum "$requirements" | cut -c1-12)"
  venv="$cache_dir/venv-$digest"
  stamp="$venv/.freehold-complete"
  if [[ ! -f "$stamp" ]]; then
    log "building the Python environment in $venv (torch and the oracles; a few GB, once per machine)"
    rm -rf "$venv"
    mkdir -p "$cache_dir"
    "$(pick_python)" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -r "$requirements"
    "$venv/bin/python" -c 'import torch, transformers, peft, tokenizers, safetensors, h5py, numpy' 
    touch "$stamp"
  fi
  if [[ "$(readlink "$repo_root/.venv" 2>/dev/null)" != "$venv" ]]; then
    ln -sfn "$venv" "$repo_root/.venv"
  fi
}

install_debian_packages
install_python_environment
