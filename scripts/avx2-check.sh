#!/usr/bin/env bash
# The AVX2-only check (issue 21): every built default model's int8 variant scored on its whole
# test split on an emulated x86-64 without AVX-512 and VNNI (qemu-x86_64 -cpu Haswell-noTSX) and
# natively, by the same ONNX Runtime session worker, so only the CPU differs. Passes when the
# emulated score is within the model's int8 gate of the native one (0.5 points of accuracy; 2%
# bits/char for folk-lstm). A MatMulInteger probe shows the emulated CPU takes the AVX2 int8 path
# (ORT's u8 x s8 kernel saturates there: 1,048,544 instead of 2,072,640).
#
#   scripts/avx2-check.sh [MODEL...] [--record] [--artifacts DIR]
#
# --record writes the result into each artifact manifest's quantization entry (isa_checks).
# Prints a table, writes bench-results/avx2-check.json; exit 0 when every model passes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/emulators.sh qemu
exec "${PYTHON:-.venv/bin/python}" -m benchmarks.device_check avx2 "$@"
