#!/usr/bin/env bash
# The arm64 check (issue 21): every built default model's edge bundle runs on an emulated arm64
# board (QEMU user mode, Cortex-A72 as in a Raspberry Pi 4, Debian bookworm's python3.11, the
# aarch64 onnxruntime/numpy/tokenizers wheels from PyPI) on real test inputs: 200 test images,
# 100 test texts, folk-lstm's greedy tunes from 3 test-tune headers. Its answers are compared
# with the same bundle's answers on this x86 machine, judged by each model's gate (one place:
# benchmarks/device_check.py arm64_gate; printed in the table): static int8 (the CNNs) and
# folk-lstm: every label the same, every probability within 0.02, every greedy tune character for
# character; dynamically quantized classifiers (the MiniLM transformers), whose int8 answers move
# with each CPU's float rounding: labels that differ at most the int8 gate's share, probabilities
# within the x86 int8 graph's own distance from its fp32 graph on the same texts (at least 0.02).
# It also measures the oldest onnxruntime that answers each bundle right (x86-64 wheels, by
# bisection; --no-runtimes skips it). Prints a table, writes bench-results/arm64-check.json; exit 0
# when every model passes.
#
#   scripts/arm64-check.sh [MODEL...] [--onnxruntime 1.20.1] [--cpu cortex-a76] [--artifacts DIR]
#
# The emulator and the arm64 root are built once into .emu/ (scripts/emulators.sh, root needed
# the first time). Emulated timings mean nothing; answers do.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/emulators.sh
exec "${PYTHON:-.venv/bin/python}" -m benchmarks.device_check arm64 "$@"
