"""The int8 recipe and its gates: portable settings, a gate that fails without costing the
server, a build that goes on past a failed model, training runs that are reused, and
training that does not depend on the machine's thread count."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import cli
from export.build import build, reusable_run, runs_root
from tests.conftest import serve


def int8_weight_ranges(path) -> list[tuple[str, int, int]]:
    """(name, min, max) of every int8 initializer (the quantized weights) of an ONNX file."""
    model = onnx.load(str(path))
    return [(t.name, int(a.min()), int(a.max())) for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and (a := numpy_helper.to_array(t)).size > 1]


def test_int8_weights_are_7_bit_so_avx2_kernels_cannot_saturate(digits_artifact):
    """On CPUs without VNNI, u8 x s8 pairs summed into int16 overflow with full-range weights
    (255 * 127 * 2 > 32767); the portable recipe's 7-bit weights, |w| <= 64, cannot (255 * 64 * 2 =
    32640). Checked on the file itself: a VNNI machine shows no accuracy loss either way, so
    accuracy alone would not catch a non-portable int8."""
    ranges = int8_weight_ranges(digits_artifact.variant_path("int8"))
    assert len(ranges) >= 4  # conv1, conv2, fc1, fc2 (+ their per-channel scales are float)
    for name, low, high in ranges:
        assert -64 <= low and high <= 64, f"{name}: int8 weights use [{low}, {high}], not 7 bits"
    assert max(max(-low, high) for _, low, high in ranges) >= 60  # the range is used, not collapsed


def test_int8_recipe_chosen_on_validation_and_recorded(digits_artifact):
    quant = digits_artifact.manifest["quantization"]
    assert quant["status"] == "published" and quant["portable"] is True
    assert quant["chosen"]["settings"]["reduce_range"] is True
    assert quant["cpu"]["model"] and quant["cpu"]["int8_dot_product"] in ("vnni", "avx2", "none")
    labels = [t["label"] for t in quant["trials"]]
    for method in ("minmax", "entropy", "percentile"):
        assert any(label.startswith(method) for label in labels)
    best_val = max(t["val_score"] for t in quant["trials"])
    assert quant["chosen"]["val_score"] == best_val  # chosen by validation, not test
    assert quant["chosen"]["test_drop"] <= quant["budget"] + 1e-9
    assert digits_artifact.variants["int8"]["test_accuracy"] == pytest.approx(quant["chosen"]["test_score"])


@pytest.fixture
def own_root(digits_artifact, tmp_path):
    """A private artifacts folder holding a copy of the digits fixture's finished training run."""
    root = tmp_path / "artifacts"
    shutil.copytree(runs_root(digits_artifact.path.parent.parent) / "digits-cnn", runs_root(root) / "digits-cnn")
    return root


def test_impossible_int8_budget_withholds_int8_and_the_server_serves_fp32(own_root, capsys):
    # A negative budget no int8 can meet: the search walks every fallback, then withholds int8.
    art = build("digits-cnn", {"epochs": 3, "patience": 3}, root=own_root, max_int8_drop=-1.0)
    out = capsys.readouterr().out
    assert "reusing the finished training run" in out  # the copied run was exported, not retrained
    assert "int8 withheld" in out
    assert "int8" not in art.variants and {"fp32", "fp16"} <= set(art.variants)
    quant = art.manifest["quantization"]
    assert quant["status"] == "withheld" and "no int8 candidate within the budget" in quant["reason"]
    steps = [t["label"] for t in quant["trials"]]
    assert any(s.startswith("exclude ") for s in steps) and any(s.startswith("per-tensor") for s in steps)
    assert not list(art.path.glob("*int8*")) and not (art.path / "int8-search").exists()

    with serve(["digits-cnn"], {"EDGESTACK_ARTIFACTS": str(own_root)}) as (url, _):
        described = httpx.post(url + "/models", json={}).json()["models"][0]
        assert described["variant"] == "fp32"
        assert any("withheld int8" in w for w in described["warnings"])
        pixels = np.zeros((28, 28), np.uint8).tolist()
        answer = httpx.post(url + "/classify", json={"model": "digits-cnn", "pixels": pixels})
        assert answer.status_code == 200 and answer.json()["variant"] == "fp32"


def test_build_goes_on_past_a_failed_model_and_says_so(digits_artifact, artifacts_env, capsys):
    # digits-cnn is present; fashion-cnn cannot find its data: one line, a summary, exit 1
    code = cli.main(["build", "digits-cnn", "fashion-cnn", "--data-dir", "/nonexistent/fashion"])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    assert "[fashion-cnn] FAILED:" in captured.err and "/nonexistent/fashion" in captured.err
    table = captured.out[captured.out.index("model "):]
    assert "digits-cnn" in table and "present" in table
    assert "fashion-cnn" in table and "failed" in table
    assert "1 of 2 model(s) have no servable variant: fashion-cnn" in captured.err


def test_a_finished_run_is_reused_only_for_the_same_config(own_root):
    from edgestack.registry import get
    from export.build import make_config

    run_dir = runs_root(own_root) / "digits-cnn"
    spec = get("digits-cnn")
    assert reusable_run(run_dir, make_config(spec, {"epochs": 3, "patience": 3}))
    assert not reusable_run(run_dir, make_config(spec, {"epochs": 4, "patience": 3}))
    (run_dir / "model.safetensors").write_bytes(b"not the trained weights")
    assert not reusable_run(run_dir, make_config(spec, {"epochs": 3, "patience": 3}))




