"""The AVX2-only check's slice of a text test split (benchmarks/device_check.py spread_slice, behind
--text-limit): N items spread evenly over the split, every input and label picked by the same
indices, so the native and the emulated side score the same N items, each with its own label.
Pure function; the emulated runs are in tests/integration/test_edge_devices.py."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.device_check import spread_slice
from edgestack.errors import UsageError


def split_of(n: int) -> tuple[dict, np.ndarray]:
    texts = np.asarray([f"text {i}" for i in range(n)])
    return {"texts": texts, "ids": np.arange(n) * 10}, np.arange(n) % 3


def test_n_items_spread_over_the_split_first_and_last_included_in_order():
    split, labels = split_of(20)
    picked, picked_labels = spread_slice(split, labels, 5)
    assert list(picked["texts"]) == ["text 0", "text 4", "text 9", "text 14", "text 19"]
    assert len(picked_labels) == 5


def test_every_input_and_its_label_are_picked_by_the_same_indices():
    split, labels = split_of(1275)
    picked, picked_labels = spread_slice(split, labels, 128)
    index = np.asarray([int(t.split()[1]) for t in picked["texts"]])
    assert len(index) == len(set(index)) == 128
    assert (picked["ids"] == index * 10).all()
    assert (picked_labels == index % 3).all()
    assert (np.diff(index) > 0).all() and index[0] == 0 and index[-1] == 1274


def test_no_limit_or_a_limit_not_below_the_split_keeps_the_whole_split():
    split, labels = split_of(7)
    for limit in (None, 0, 7, 100):
        picked, picked_labels = spread_slice(split, labels, limit)
        assert list(picked["texts"]) == list(split["texts"]) and (picked_labels == labels).all()


def test_one_item_and_a_negative_limit():
    split, labels = split_of(7)
    assert list(spread_slice(split, labels, 1)[0]["texts"]) == ["text 0"]
    with pytest.raises(UsageError, match="--text-limit"):
        spread_slice(split, labels, -1)
