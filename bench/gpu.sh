#!/usr/bin/env bash
# The GPU check in one command, on a machine with an NVIDIA GPU (about 5-7 minutes):
#   1. the gpu-marked tests (load on the device, mixed precision, pinned non-blocking copies, a real
#      out-of-memory split and retry, warm-up, /readyz),
#   2. bench/gpu.py: the in-process limit at batch 1..1024 and the service at concurrency 1..512, with
#      GPU utilisation sampled by nvidia-smi,
# and writes bench/results/gpu-<date>.md (+ .json).
#
#   bench/gpu.sh                   # WORKERS=1: one service process
#   WORKERS=4 bench/gpu.sh         # passes --workers 4 to `fusion-serve serve`
#   DEVICE=cpu QUICK=1 bench/gpu.sh  # the same steps on CPU, shortened (checks the script itself)
#
# PYTHON: the interpreter with the project installed (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS="${WORKERS:-1}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
stamp="$(date -u +%Y-%m-%d-%H%M)"
out="bench/results/gpu-${stamp}.md"
[ "$DEVICE" = "cuda" ] || out="bench/work/gpu-${DEVICE}-${stamp}.md"  # a smoke run is not a result
mkdir -p bench/work bench/results
tests_log="bench/work/gpu-tests.txt"

if [ "$DEVICE" = "cuda" ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "nvidia-smi not found: GPU utilisation will not be sampled" >&2
  else
    nvidia-smi -L
  fi
  if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "torch sees no CUDA device; for a smoke run on CPU: DEVICE=cpu QUICK=1 $0" >&2
    exit 1
  fi
fi

echo "== gpu tests" >&2
set +e
if [ "$DEVICE" = "cuda" ]; then
  timeout 300 "$PYTHON" -m pytest -m gpu -q -rs -p no:cacheprovider tests 2>&1 | tee "$tests_log"
  tests_rc=${PIPESTATUS[0]}
else
  echo "(skipped: DEVICE=$DEVICE)" | tee "$tests_log"
  tests_rc=0
fi
set -e
echo "gpu tests exit status: ${tests_rc}" >> "$tests_log"

echo "== benchmark" >&2
args=(--device "$DEVICE" --workers "$WORKERS" --tests "$tests_log" --out "$out")
if [ "$QUICK" = "1" ]; then args+=(--quick); fi
timeout 420 "$PYTHON" bench/gpu.py "${args[@]}"

echo "wrote $out" >&2
exit "$tests_rc"
