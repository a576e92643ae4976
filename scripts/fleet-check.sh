#!/usr/bin/env bash
# The update agent's figures (issue 21): a simulated device (a venv with only onnxruntime, numpy and
# cryptography, from the local wheelhouse) on loopback against a real server: install, update v1 -> v2,
# a version failing its health check refused, a broken version rolled back, then 20 SIGKILLs at random
# moments of updates, each leaving the device on a good version. Table + bench-results/edge-fleet.json.
#
#   scripts/fleet-check.sh [MODEL] [--kills 20] [--artifacts DIR]      (default fashion-cnn)
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-.venv/bin/python}" -m tests.clean_venv fill >/dev/null
exec "${PYTHON:-.venv/bin/python}" -m benchmarks.edge_fleet "$@"
