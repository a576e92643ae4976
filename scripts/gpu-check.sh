#!/usr/bin/env bash
# The GPU check (issue 13): every built default model on ONNX Runtime's TensorRT and CUDA
# providers: fp16 accuracy against fp32 within the int8 gate, batch-1 and batch-64 latency per
# provider, the TensorRT engine cache reused on a second start. JSON: bench-results/gpu-check.json.
#
#   scripts/gpu-check.sh                 on a machine with an NVIDIA GPU: builds .venv-gpu (onnxruntime-gpu
#                                        with its CUDA/cuDNN wheels, TensorRT), then runs the check there
#   scripts/gpu-check.sh --dry-run       anywhere: the same check with the CPU provider standing in, in .venv
#                                        (tests/integration/test_gpu_check.py runs this)
# Other arguments go to benchmarks/gpu_check.py (models, --artifacts DIR, --runs N, --images N, --json FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ " $* " == *" --dry-run "* ]]; then
  exec "${DRY_RUN_PYTHON:-.venv/bin/python}" -m benchmarks.gpu_check "$@"
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "!! no NVIDIA GPU here (nvidia-smi finds none); scripts/gpu-check.sh --dry-run checks the script on CPU" >&2
  exit 2
fi
nvidia-smi -L
VENV=.venv-gpu
if [ ! -f "$VENV/.installed-gpu" ]; then
  # onnxruntime and onnxruntime-gpu share an import name: the GPU build gets a venv of its own.
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -e ".[train]" "onnxruntime-gpu[cuda,cudnn]==1.31.1" "tensorrt-cu12>=10,<11"
  "$VENV/bin/pip" uninstall --quiet -y onnxruntime || true   # a dependency may pull the CPU build back in
  touch "$VENV/.installed-gpu"
fi
# TensorRT's libraries live in the tensorrt_libs wheel; ORT's TensorRT provider loads them by name.
TRT_LIBS=$("$VENV/bin/python" -c 'import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))')
export LD_LIBRARY_PATH="$TRT_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$VENV/bin/python" -c 'import onnxruntime as ort, sys; ort.preload_dlls(); from benchmarks.gpu_check import main; sys.exit(main())' "$@"
