"""scripts/gpu-check.sh: its CPU dry run on the digits build (CPUExecutionProvider standing in for
TensorRT and CUDA), and its refusal to start without a GPU. The GPU run itself needs a GPU machine."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DRY_RUN_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def test_dry_run_checks_every_provider_role(digits_artifact, artifacts_root, tmp_path):
    out = tmp_path / "gpu.json"
    done = gpu_check("--dry-run", "digits-cnn", "--artifacts", str(artifacts_root), "--runs", "5",
                     "--images", "200", "--json", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    rows = {row["stands_in_for"]: row for row in result["rows"]}
    assert set(rows) == {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
    for row in rows.values():
        assert row["variant"] == "fp16" and row["got_provider"] == "CPUExecutionProvider"
        assert row["images"] == 200 and row["fp16_within_gate"] is True
        assert abs(row["fp16_drop"]) <= 0.01 and row["fp32_accuracy"] > 0.5
        assert 0 < row["batch1"]["p50_ms"] and 0 < row["batch64"]["p50_ms"]
    cache = rows["TensorrtExecutionProvider"]["trt_cache"]  # the two-start timing ran (no engines on CPU)
    assert cache["first_start_s"] > 0 and cache["second_start_s"] > 0 and cache["files"] == []


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine runs the real check")
def test_without_a_gpu_it_says_so_and_points_at_the_dry_run():
    done = gpu_check()
    assert done.returncode == 2 and "no NVIDIA GPU here" in done.stderr and "--dry-run" in done.stderr
