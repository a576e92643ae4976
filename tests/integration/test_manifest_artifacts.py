"""The typed manifest on a real artifact: the digits model the suite builds (tests/conftest.py)
is written as schema version 2, validates, round-trips to the same JSON, and reads the same
through `meta` as through the dict; a copy rewritten as version 1 still loads."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from edgestack import artifact
from edgestack import manifest as schema

pytestmark = pytest.mark.slow


def test_a_built_manifest_is_version_2_and_round_trips(digits_artifact):
    on_disk = json.loads((digits_artifact.path / artifact.MANIFEST).read_text())
    assert on_disk["schema_version"] == schema.SCHEMA_VERSION == 2 and on_disk["family"] == "image"
    meta = schema.parse(on_disk, "digits manifest")
    assert json.dumps(meta.to_dict()) == json.dumps(on_disk)  # same keys, values and order
    assert digits_artifact.meta == meta and digits_artifact.manifest == on_disk
    assert pickle.loads(pickle.dumps(meta)).to_dict() == on_disk  # batch jobs ship it to workers


def test_the_typed_view_reads_what_the_dict_says(digits_artifact):
    meta, raw = digits_artifact.meta, digits_artifact.manifest
    assert (meta.name, meta.version, meta.task) == (raw["name"], raw["version"], raw["task"])
    assert [t.to_dict() for t in meta.inputs] == raw["inputs"] and meta.labels == raw["labels"]
    assert meta.preprocessing.to_dict() == raw["preprocessing"] and meta.preprocessing.height == 28
    assert set(meta.variants) == set(raw["variants"]) == {"fp32", "int8", "fp16"}
    for name, variant in meta.variants.items():
        assert variant.file == raw["variants"][name]["file"] and variant.test_accuracy is not None
        assert digits_artifact.variant_path(name).is_file()
    assert meta.quantization.status == raw["quantization"]["status"] == "published"
    assert meta.quantization.chosen is not None and meta.quantization.trials
    assert meta.training.config["dataset"] == "digits" and meta.parity.passed
    assert {f: e.sha256 for f, e in meta.files.items()} == {f: e["sha256"] for f, e in raw["files"].items()}


def test_a_version_1_copy_loads_with_the_old_family_name_migrated(digits_artifact, tmp_path):
    copy = tmp_path / "digits-cnn" / "1"
    shutil.copytree(digits_artifact.path, copy)
    path = copy / artifact.MANIFEST
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "schema_version": 1, "family": "cnn"}, indent=2))
    art = artifact.load(copy)  # checksums still verified: the manifest is not among the files
    assert art.meta.family == "image" and art.meta.schema_version == 2
    assert art.meta.to_dict() == data


def test_the_served_description_comes_from_the_typed_view(digits_artifact):
    from serving.image import ImageClassifier
    from serving.runner import RunnerOptions

    runner = ImageClassifier(digits_artifact, RunnerOptions(device="cpu", variant="fp32", threads=1))
    raw = digits_artifact.manifest
    described = runner.describe()
    assert described["inputs"] == raw["inputs"] and described["outputs"] == raw["outputs"]
    assert described["labels"] == raw["labels"] and described["task"] == raw["task"]
    assert described["accuracy"] == {v: m["test_accuracy"] for v, m in raw["variants"].items()}
    assert runner.preprocessing == raw["preprocessing"] and runner.size == (28, 28)
