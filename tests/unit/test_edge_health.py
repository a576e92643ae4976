"""The bundle's golden comparison (bundle/edge_runner/health.py): what the health check, the
update agent and the arm64 check decide on. No model, no emulator."""

from __future__ import annotations

import numpy as np

from bundle.edge_runner.health import compare, read_golden, summary, write_golden


def probabilities(rows: int = 5, classes: int = 4, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).random((rows, classes)) + np.eye(rows, classes) * 3
    return p / p.sum(1, keepdims=True)


def test_the_same_answers_pass_and_round_trip_through_the_file(tmp_path):
    inputs = {"texts": np.asarray(["a fine film", "a dull one"]), "max_length": np.asarray([3])}
    expected = {"probabilities": probabilities(), "tune": np.asarray(["X:1\nT:a tune"])}
    write_golden(tmp_path / "golden.npz", inputs, expected)
    got_inputs, got_expected = read_golden(tmp_path / "golden.npz")
    assert list(got_inputs["texts"]) == ["a fine film", "a dull one"]
    report = compare(got_expected, {"probabilities": expected["probabilities"] + 1e-4, "tune": expected["tune"]})
    assert report["ok"] and report["labels_agree"] == report["rows"] == 5 and report["strings_equal"] == 1
    assert summary(report).startswith("ok (labels 5/5")


def test_a_flipped_label_a_far_probability_and_one_changed_character_each_fail():
    expected = {"probabilities": probabilities(), "tune": np.asarray(["X:1\nT:a tune|abc"])}
    flipped = expected["probabilities"].copy()
    flipped[2] = flipped[2][::-1]
    report = compare(expected, {"probabilities": flipped, "tune": expected["tune"]})
    assert not report["ok"] and report["labels_agree"] == 4 and "1 of 5 labels differ" in summary(report)

    shifted = expected["probabilities"].copy()
    shifted[0, 0] += 0.05  # label unchanged, probability beyond the 0.02 tolerance
    report = compare(expected, {"probabilities": shifted, "tune": expected["tune"]})
    assert not report["ok"] and report["labels_agree"] == 5 and "differs by 0.0500" in summary(report)

    report = compare(expected, {"probabilities": expected["probabilities"], "tune": np.asarray(["X:1\nT:a tune|abd"])})
    assert not report["ok"] and "differs from character 15" in report["problems"][0]


def test_missing_outputs_wrong_shapes_and_nan_fail():
    expected = {"probabilities": probabilities()}
    assert not compare(expected, {})["ok"]
    assert "shape" in compare(expected, {"probabilities": probabilities(4)})["problems"][0]
    broken = expected["probabilities"].copy()
    broken[1, 1] = np.nan
    assert not compare(expected, {"probabilities": broken})["ok"]


def test_an_imported_graphs_outputs_integers_exactly_other_floats_relative_to_their_size():
    expected = {"label": np.asarray([0, 1, 1]), "score": np.asarray([[1200.0, -3.0], [0.001, 5.0]])}
    close = {"label": expected["label"], "score": expected["score"] * (1 + 5e-3)}  # 6 units off on 1,200: fine
    assert compare(expected, close)["ok"]
    report = compare(expected, {"label": np.asarray([0, 1, 0]), "score": expected["score"]})
    assert not report["ok"] and report["problems"] == ["label: 1 of 3 values differ"]
    far = {"label": expected["label"], "score": expected["score"] + np.asarray([[0.0, 0.0], [0.05, 0.0]])}
    assert "score: a value differs by 0.0500" in compare(expected, far)["problems"][0]
