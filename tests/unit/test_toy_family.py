"""Adding a family is one module per stage plus one registry line: a toy `vector` family
(tests/unit/toy_family.py) is registered, built by the real build pipeline, served by a
real runner on ONNX Runtime, and unregistered again."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edgestack import registry
from edgestack.errors import InputError, UnknownName, UsageError
from tests.unit import toy_family


@pytest.fixture
def vector_family():
    toy_family.VectorClassifier = toy_family.make_runner_class()
    family = registry.register_family(registry.Family(
        "vector", "vector-classification", "tests.unit.toy_family", train="tests.unit.toy_family",
        export="tests.unit.toy_family", runner="tests.unit.toy_family:VectorClassifier"))
    spec = registry.register_model(registry.ModelSpec("vector-demo", "vector", {"samples": 400}, "toy"))
    try:
        yield family, spec
    finally:
        registry.FAMILIES.pop("vector")
        registry.MODELS.pop("vector-demo")


def test_a_registered_family_builds_and_serves(vector_family, tmp_path):
    from export.build import build

    art = build("vector-demo", root=tmp_path / "artifacts", progress=False)
    assert art.manifest["family"] == "vector" and art.variants["fp32"]["test_accuracy"] > 0.7  # chance: 0.33
    assert art.manifest["parity"]["passed"]
    runner_cls = registry.load_object(registry.get("vector-demo").stages.runner)
    runner = runner_cls(art)
    runner.warm_up()
    x, _ = toy_family.dataset(seed=3, n=5)
    labels = asyncio.run(runner.classify(x))
    logits = asyncio.run(runner.infer({"vectors": x}))["logits"]  # the v2 tensor path of the same runner
    assert labels == [toy_family.LABELS[i] for i in logits.argmax(1)]
    with pytest.raises(InputError, match=r"shape \[N, 4\]"):
        asyncio.run(runner.classify(np.zeros((2, 3))))


def test_a_family_without_a_stage_says_which_and_where(vector_family):
    with pytest.raises(UsageError, match="family 'vector' has no batch stage yet"):
        registry.stage("vector-demo", "batch")


def test_old_family_names_still_resolve_and_unknown_ones_are_clear():
    assert registry.family("cnn").name == "image" and registry.family("lstm").name == "tune"
    assert registry.family("transformer").name == "text"
    with pytest.raises(UnknownName, match="unknown model family 'nope'"):
        registry.family("nope")
    with pytest.raises(KeyError):
        registry.get("no-such-model")
