"""Edge bundles on other CPUs and other onnxruntime versions (issue 21), with the session's
small real digits model: an emulated arm64 board (QEMU user mode, a Debian arm64 root, the
aarch64 wheels), an emulated AVX2-only x86, and older onnxruntime releases. The emulators
come from `make emulators` (scripts/emulators.sh, cached in .emu/)."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys

import pytest

from benchmarks.device_check import arm64_row, avx2_row
from bundle import emulate
from bundle.make import make_bundle
from bundle.runtimes import measure
from edgestack import artifact

ORT = importlib.metadata.version("onnxruntime")


@pytest.fixture(scope="module")
def digits_bundle(digits_artifact, artifacts_root, tmp_path_factory):
    return make_bundle("digits-cnn", tmp_path_factory.mktemp("bundles"), root=artifacts_root, progress=False)


def test_the_digits_bundle_answers_on_an_emulated_arm64_board_as_on_x86(digits_artifact, artifacts_root, tmp_path):
    row = arm64_row("digits-cnn", artifacts_root, tmp_path, None)
    assert row["machine"] == "aarch64" and row["onnxruntime"] == ORT and row["cpu"] == emulate.ARM64_CPU
    assert row["ok"], row["problems"]
    assert row["labels_agree"] == row["rows"] == 200 and row["max_probability_difference"] <= 0.02
    # the bundle's health check was built from real test images, the most confidently answered ones
    manifest = json.loads((tmp_path / f"digits-cnn-v{digits_artifact.version}" / "manifest.json").read_text())
    assert manifest["health"]["source"] == "test split" and manifest["health"]["inputs"] == 8


def test_int8_holds_its_gate_on_an_emulated_avx2_only_cpu_and_is_recorded(digits_artifact, tmp_path):
    shutil.copytree(digits_artifact.path, tmp_path / "digits-cnn" / digits_artifact.version)
    row = avx2_row("digits-cnn", tmp_path, record=True, threads=2)
    assert row["int8_probe"] == 1_048_544  # the emulated CPU has no VNNI: ORT's u8 x s8 kernel saturates
    assert row["ok"] and row["drop"] <= row["budget"] and row["native"] == pytest.approx(row["manifest"])
    assert row["max_output_difference"] < 1e-3  # 7-bit weights: the same integer arithmetic on both CPUs
    art = artifact.load_latest("digits-cnn", tmp_path)  # checksums still verify after the manifest was rewritten
    recorded = art.manifest["quantization"]["isa_checks"]["avx2-only"]
    assert recorded["ok"] and recorded["avx2"] == row["avx2"] and recorded["emulator"].endswith("Haswell-noTSX")


def test_the_runner_refuses_an_older_onnxruntime_in_one_line(digits_bundle, tmp_path):
    runtime = digits_bundle.manifest["runtime"]
    assert runtime["ort_format_version"] == "6" and runtime["opset"]["ai.onnx"] >= 13
    assert runtime["min_onnxruntime"] == ORT and runtime["min_onnxruntime_measured"] is False
    folder = tmp_path / "bundle"
    shutil.copytree(digits_bundle.path, folder)
    ok = subprocess.run([sys.executable, "-m", "edge_runner", "--health"], cwd=folder, capture_output=True, text=True)
    assert ok.returncode == 0 and "health ok (labels 1/1" in ok.stdout, ok.stdout + ok.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["runtime"]["min_onnxruntime"] = "99.0.0"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    refused = subprocess.run([sys.executable, "-m", "edge_runner", "--health"], cwd=folder, capture_output=True,
                             text=True)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        (f"edge_runner: this bundle needs onnxruntime >= 99.0.0 (ORT format 6, opset {runtime['opset']['ai.onnx']}); "
         f"this device has {ORT}: pip install 'onnxruntime>=99.0.0'")]


def test_the_oldest_onnxruntime_is_measured_not_assumed(digits_bundle):
    found = measure(digits_bundle.path, [emulate.OLDEST_TESTED, ORT])
    assert found["min_onnxruntime"] == ORT and found["min_onnxruntime_measured"]
    assert found["onnxruntime_tried"][ORT] == "ok"
    assert "ORT format model version [6] is not supported" in found["onnxruntime_tried"][emulate.OLDEST_TESTED]
