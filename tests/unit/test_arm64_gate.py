"""The arm64 check's gate (benchmarks/device_check.py arm64_gate and judge): which rule holds a
model's emulated-arm64 answers to its x86 answers, and how a health report is judged by it.
Pure functions; the emulated runs themselves are in tests/integration/test_edge_devices.py."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.device_check import arm64_gate, judge
from bundle.edge_runner.health import PROBABILITY_TOLERANCE, compare

STATIC = {"format": "QDQ static", "budget": 0.005}
DYNAMIC = {"format": "dynamic", "budget": 0.01}


def report(labels_agree=100, rows=100, difference=0.0, problems=()):
    return {"rows": rows, "labels_agree": labels_agree, "max_probability_difference": difference,
            "strings": 0, "strings_equal": 0, "problems": list(problems)}


def test_static_int8_and_generators_keep_every_label_and_the_fixed_tolerance():
    for task, q in (("image-classification", STATIC), ("text-generation", {"format": "dynamic", "budget": 0.02})):
        gate = arm64_gate(task, q, 200)
        assert gate == {"rule": "same int8", "labels_may_differ": 0, "probability_tolerance": PROBABILITY_TOLERANCE}
    assert arm64_gate("image-classification", None, 200)["rule"] == "same int8"  # no quantization entry
    assert arm64_gate("imported", {"format": "dynamic", "budget": 0.01}, 2)["rule"] == "same int8"  # no probabilities


def test_a_dynamic_int8_classifier_is_held_to_its_own_distance_from_fp32_and_its_int8_gate():
    gate = arm64_gate("text-classification", DYNAMIC, 100, int8_error=0.2046)
    assert gate["rule"] == "int8 vs fp32" and gate["probability_tolerance"] == 0.2046
    assert gate["labels_may_differ"] == 1  # 1 point of accuracy on 100 texts
    assert arm64_gate("text-classification", DYNAMIC, 100, int8_error=0.001)["probability_tolerance"] == \
        PROBABILITY_TOLERANCE  # never tighter than the fixed tolerance
    assert arm64_gate("text-classification", DYNAMIC, 99, int8_error=0.1)["labels_may_differ"] == 0
    with pytest.raises(ValueError, match="int8 error against fp32"):
        arm64_gate("text-classification", DYNAMIC, 100)


def test_judge_replaces_the_fixed_probability_findings_by_the_gates():
    # what the emulated MiniLM gave: every label, 0.075 apart; the health comparison calls it a failure
    want = np.array([[0.9, 0.1], [0.3, 0.7]])
    fixed = compare({"probabilities": want}, {"probabilities": want + [[-0.075, 0.075], [0.0, 0.0]]})
    assert not fixed["ok"] and fixed["problems"][0].startswith("probabilities: a probability differs by 0.0750")
    assert judge(fixed, arm64_gate("text-classification", DYNAMIC, 2, int8_error=0.2)) == []
    assert judge(fixed, arm64_gate("image-classification", STATIC, 2)) == [
        "a probability differs by 0.0750 (tolerance 0.0200, same int8)"]
    assert judge(fixed, arm64_gate("text-classification", DYNAMIC, 2, int8_error=0.05)) == [
        "a probability differs by 0.0750 (tolerance 0.0500, int8 vs fp32)"]


def test_judge_bounds_the_labels_that_differ_and_keeps_every_other_problem():
    gate = arm64_gate("text-classification", DYNAMIC, 100, int8_error=0.2)
    assert judge(report(labels_agree=99, problems=["probabilities: 1 of 100 labels differ"]), gate) == []
    assert judge(report(labels_agree=98), gate) == ["2 of 100 labels differ (at most 1)"]
    assert judge(report(labels_agree=99), arm64_gate("image-classification", STATIC, 100)) == [
        "1 of 100 labels differ (at most 0)"]
    other = ["tune: differs from character 3 ('a' expected, 'b' got)", "logits: no such output"]
    assert judge(report(problems=other), gate) == other
