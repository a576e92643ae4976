"""The typed manifest (edgestack/manifest.py) on hand-written manifests: no built model, fast.

Round trips of version-2 manifests of every family, the version-1 -> 2 migration, refusals
(newer schema, missing or wrong fields: one line each), unknown keys kept, and
edgestack.artifact writing and loading through the model."""

from __future__ import annotations

import copy
import json
import re

import pytest

from edgestack import artifact
from edgestack import manifest as schema
from edgestack.errors import ArtifactError

STATE = {"dtype": "float32", "shape": [1, -1, 8]}


def head(family: str, task: str) -> dict:
    return {"schema_version": schema.SCHEMA_VERSION, "name": f"demo-{family}", "version": "3", "family": family,
            "task": task, "created_at": "2026-11-29T12:00:00Z"}


def image_manifest() -> dict:
    """What export/image.py writes, with small values."""
    trial = {"label": "minmax 1000 per-channel", "settings": {"method": "minmax", "images": 1000,
                                                             "per_channel": True, "reduce_range": True},
             "val_score": 0.98, "test_score": 0.984, "val_drop": 0.002, "test_drop": 0.0, "within_budget": True,
             "seconds": 0.2}
    return {
        **head("image", "image-classification"),
        "inputs": [{"name": "images", "dtype": "float32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 3]}],
        "preprocessing": {"layout": "NCHW", "height": 28, "width": 28, "channels": 1, "scale": 1 / 255.0,
                          "mean": 0.0, "std": 1.0, "dark_background": True},
        "labels": ["a", "b", "c"],
        "variants": {
            "fp32": {"file": "model.fp32.onnx", "test_accuracy": 0.984, "test_size": 500,
                     "op_types": {"Conv": 2, "Gemm": 2}, "target": "cpu"},
            "int8": {"file": "model.int8.onnx", "test_accuracy": 0.984, "test_size": 500,
                     "op_types": {"QuantizeLinear": 8}, "target": "cpu", "val_accuracy": 0.98},
            "fp16": {"file": "model.fp16.onnx", "test_accuracy": 0.984, "test_size": 500, "op_types": {},
                     "target": "gpu"},
        },
        "parity": {"max_abs_diff": 5.7e-06, "atol": 0.0001, "rtol": 0.0001, "passed": True},
        "int8_accuracy_drop": 0.0,
        "quantization": {"status": "published", "step": "calibration", "metric": "accuracy", "budget": 0.005,
                         "reference": {"val": 0.982, "test": 0.984}, "portable": True,
                         "cpu": {"model": "AMD EPYC", "cores": 2, "flags": ["avx2"], "int8_dot_product": "avx2"},
                         "chosen": trial, "reason": "", "selection": "best validation score ...",
                         "trials": [trial], "format": "QDQ static", "activations": "uint8", "weights": "int8"},
        "versions": {"onnx": "1.23.2", "onnxruntime": "1.31.1"},
        "training": {"config": {"dataset": "digits", "seed": 0}, "best_epoch": 3, "val_acc": 0.938,
                     "train_seconds": 4.2, "data_source": "mnist_5k.csv.gz"},
        "files": {"model.fp32.onnx": {"sha256": "0" * 64, "bytes": 10},
                  "model.int8.onnx": {"sha256": "3" * 64, "bytes": 5}, "model.fp16.onnx": {"sha256": "4" * 64, "bytes": 5}},
    }


def tune_manifest() -> dict:
    """What export/tune.py writes: step and prompt graphs, vocabulary, generation."""
    variant = {"file": "step.fp32.onnx", "prompt_file": "prompt.fp32.onnx", "val_bits_per_char": 1.5,
               "test_bits_per_char": 1.49, "val_chars": 7178, "test_chars": 7498, "step_tokens_per_s": 6.1e4,
               "op_types": {"LSTM": 1}, "prompt_op_types": {"LSTM": 1}, "target": "cpu"}
    return {
        **head("tune", "text-generation"),
        "inputs": [{"name": "token", "dtype": "int64", "shape": [-1]}, {"name": "h", **STATE}, {"name": "c", **STATE}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 79]}, {"name": "h_out", **STATE},
                    {"name": "c_out", **STATE}],
        "prompt_graph": {"inputs": [{"name": "tokens", "dtype": "int64", "shape": [-1, -1]}],
                         "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, -1, 79]}]},
        "vocabulary": {"file": "vocab.json", "size": 79, "unknown_characters": "refused in prompts"},
        "generation": {"end_of_tune": "\n\n", "default_prompt": "X:1\n", "hidden_size": 8},
        "variants": {"fp32": variant},
        "parity": {"greedy_rollout_steps": 200, "greedy_rollout_prompt": "X:1\nT:", "greedy_rollout_identical": True,
                   "int8_greedy_rollout_agreement": None,
                   "prompt_logits": {"max_abs_diff": 7e-07, "atol": 0.0001, "rtol": 0.0001, "passed": True}},
        "pytorch_val_bits_per_char": 1.5,
        "int8_bits_per_char_increase": None,
        "int8_step_speedup": None,
        # what the tune export records when the int8 search itself failed: status and reason only
        "quantization": {"status": "withheld", "reason": "the LSTM was not quantized"},
        "versions": {},
        "training": {"config": {"corpus": "irish"}, "best_epoch": 2, "tunes": {"train": 120, "val": 30, "test": 30}},
        "files": {"step.fp32.onnx": {"sha256": "1" * 64, "bytes": 20}, "prompt.fp32.onnx": {"sha256": "5" * 64, "bytes": 9},
                  "vocab.json": {"sha256": "6" * 64, "bytes": 9}},
    }


def text_manifest() -> dict:
    """What export/text.py writes: text in, probabilities out, the graphs' own tensors beside."""
    return {
        **head("text", "text-classification"),
        "inputs": [{"name": "text", "dtype": "bytes", "shape": [-1]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [-1, 2]}],
        "model_inputs": [{"name": n, "dtype": "int64", "shape": [-1, -1]} for n in ("input_ids", "attention_mask")],
        "model_outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 2]}],
        "preprocessing": {"tokenizer": "tokenizer.json", "max_length": 128, "padding": "longest in batch",
                          "truncation": "first max_length tokens", "lowercase": True},
        "labels": ["rotten", "fresh"],
        "variants": {"fp32": {"file": "model.fp32.onnx", "test_accuracy": 0.8, "test_size": 1275,
                              "agreement_with_fp32": 1.0, "op_types": {}, "target": "cpu"}},
        "parity": {"fp32": {"max_abs_diff": 2e-07, "atol": 0.0001, "rtol": 0.001, "passed": True}, "texts": 64},
        "fusions": {"fused": {"Attention": 2}, "expected_attention": 2},
        "int8_accuracy_drop": None,
        "baseline": {"name": "tfidf-1-2gram+logreg", "test_acc": 0.78},
        "files": {"model.fp32.onnx": {"sha256": "2" * 64, "bytes": 30}, "tokenizer.json": {"sha256": "7" * 64, "bytes": 9}},
    }


MANIFESTS = {"image": image_manifest, "tune": tune_manifest, "text": text_manifest}


@pytest.mark.parametrize("family", sorted(MANIFESTS))
def test_a_v2_manifest_round_trips_to_the_same_json(family):
    data = MANIFESTS[family]()
    meta = schema.parse(copy.deepcopy(data))
    assert meta.family == family and meta.schema_version == 2
    # the same keys, values and key order back, nothing added (no defaults filled in)
    assert json.dumps(meta.to_dict()) == json.dumps(data)
    assert json.dumps(schema.parse(meta.to_dict()).to_dict()) == json.dumps(data)


def test_typed_fields_read_like_the_dict():
    image, tune, text = (schema.parse(make()) for make in (image_manifest, tune_manifest, text_manifest))
    assert (image.name, image.version, image.task) == ("demo-image", "3", "image-classification")
    assert image.inputs[0].name == "images" and image.inputs[0].shape == [-1, 1, 28, 28]
    assert (image.preprocessing.height, image.preprocessing.width, image.preprocessing.dark_background) == (28, 28, True)
    assert image.variants["int8"].val_accuracy == 0.98 and image.variants["fp16"].target == "gpu"
    assert image.variants["int8"].scores() == {"test_accuracy": 0.984, "test_size": 500, "val_accuracy": 0.98}
    assert image.variants["fp32"].headline == ("accuracy", 0.984)
    assert image.quantization.status == "published" and image.quantization.withheld_reason is None
    assert image.quantization.chosen.settings["method"] == "minmax" and len(image.quantization.trials) == 1
    assert image.quantization.cpu["cores"] == 2 and image.files["model.fp32.onnx"].bytes == 10
    assert image.training.config["dataset"] == "digits" and image.training.best_epoch == 3
    assert image.parity.passed is True and image.labels == ["a", "b", "c"]

    assert tune.variants["fp32"].prompt_file == "prompt.fp32.onnx" and tune.variants["fp32"].test_bits_per_char == 1.49
    assert tune.variants["fp32"].headline == ("bits/char", 1.49)
    assert tune.vocabulary.file == "vocab.json" and tune.generation.hidden_size == 8
    assert tune.generation.to_dict() == {"end_of_tune": "\n\n", "default_prompt": "X:1\n", "hidden_size": 8}
    assert tune.prompt_graph.inputs[0].name == "tokens" and tune.labels is None
    assert tune.quantization.withheld_reason == "the LSTM was not quantized"

    assert text.preprocessing.tokenizer == "tokenizer.json" and text.preprocessing.max_length == 128
    assert [t.name for t in text.model_inputs] == ["input_ids", "attention_mask"]
    assert text.fusions.fused == {"Attention": 2} and text.baseline["test_acc"] == 0.78
    assert text.quantization is None  # optional: a family without int8 has none


def test_a_withheld_quantization_without_a_reason_still_says_why():
    data = image_manifest()
    data["quantization"] = {"status": "withheld"}
    assert schema.parse(data).quantization.withheld_reason == "no candidate within budget"


@pytest.mark.parametrize(("old", "new"), [("cnn", "image"), ("lstm", "tune"), ("transformer", "text")])
def test_a_v1_manifest_is_migrated_family_aliases_included(old, new):
    data = MANIFESTS[new]()
    data["schema_version"], data["family"] = 1, old
    data.pop("quantization", None)  # version-1 files may predate the int8 search's record
    meta = schema.parse(data)
    assert (meta.schema_version, meta.family, meta.quantization) == (2, new, None)
    assert data["schema_version"] == 1 and data["family"] == old  # the caller's dict is left alone
    migrated = schema.migrate(data)
    assert migrated == {**data, "schema_version": 2, "family": new} and list(migrated) == list(data)


def test_a_v1_manifest_with_the_new_family_names_migrates_too():
    data = {**image_manifest(), "schema_version": 1}
    assert schema.parse(data).family == "image"


def test_a_v1_manifest_of_a_family_with_no_alias_keeps_its_name():
    data = {**image_manifest(), "schema_version": 1, "family": "vector"}
    assert schema.parse(data).family == "vector"


def test_a_newer_schema_version_is_refused_naming_both_versions():
    data = {**image_manifest(), "schema_version": 3}
    with pytest.raises(ArtifactError, match=r"schema_version 3, newer than this edgestack reads \(2\)") as info:
        schema.parse(data, "artifacts/demo/3/manifest.json")
    assert "artifacts/demo/3/manifest.json" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("version", [None, 0, "2", True])
def test_a_missing_or_odd_schema_version_is_refused(version):
    data = image_manifest()
    if version is None:
        del data["schema_version"]
    else:
        data["schema_version"] = version
    with pytest.raises(ArtifactError, match="this edgestack reads 1 to 2"):
        schema.parse(data)


def test_the_model_alone_refuses_an_unmigrated_manifest():
    with pytest.raises(ArtifactError, match="schema_version: is 1; this model reads 2"):
        schema.validate({**image_manifest(), "schema_version": 1})
    with pytest.raises(ArtifactError, match="family: 'cnn' is a schema-1 name; schema 2 says 'image'"):
        schema.validate({**image_manifest(), "family": "cnn"})


@pytest.mark.parametrize(("path", "expected"), [
    (("name",), r"name: Field required"),
    (("variants", "fp32", "file"), r"variants\.fp32\.file: Field required"),
    (("files", "model.fp32.onnx", "sha256"), r"files\.model\.fp32\.onnx\.sha256: Field required"),
    (("inputs", 0, "shape"), r"inputs\.0\.shape: Field required"),
])
def test_a_missing_required_field_is_a_one_line_error_naming_it(path, expected):
    data = image_manifest()
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    with pytest.raises(ArtifactError) as info:
        schema.parse(data, "m.json")
    message = str(info.value)
    assert "\n" not in message and message.startswith("m.json is not a valid manifest: ")
    assert re.search(expected, message), message


def test_several_problems_are_counted_in_the_one_line():
    data = image_manifest()
    del data["name"], data["task"], data["outputs"]
    message = str(pytest.raises(ArtifactError, schema.parse, data).value)
    assert "\n" not in message and message.endswith("(and 2 more problems)")


def test_a_wrong_type_and_a_bad_quantization_status_are_refused():
    data = image_manifest()
    data["inputs"][0]["shape"] = "any"
    with pytest.raises(ArtifactError, match=r"inputs\.0\.shape: Input should be a valid list"):
        schema.parse(data)
    data = image_manifest()
    data["quantization"]["status"] = "maybe"
    with pytest.raises(ArtifactError, match=r"quantization\.status: Input should be 'published' or 'withheld'"):
        schema.parse(data)


@pytest.mark.parametrize(("family", "remove", "need"), [
    ("image", ("preprocessing", "height"), "preprocessing with height, width, scale, mean and std"),
    ("image", ("labels",), "labels"),
    ("text", ("preprocessing", "tokenizer"), "preprocessing with tokenizer and max_length"),
    ("tune", ("vocabulary",), "vocabulary"),
    ("tune", ("variants", "fp32", "prompt_file"), "variants.fp32.prompt_file"),
])
def test_a_built_in_family_needs_what_its_server_reads(family, remove, need):
    data = MANIFESTS[family]()
    target = data
    for key in remove[:-1]:
        target = target[key]
    del target[remove[-1]]
    with pytest.raises(ArtifactError, match=f"a {family} manifest needs .*{need.replace('.', '[.]')}"):
        schema.parse(data)


def test_unknown_keys_are_kept_at_every_level():
    data = image_manifest()
    data["lineage"] = {"run": "abc", "parent": None}               # a new top-level block
    data["variants"]["fp32"]["latency_ms"] = 1.25                  # a new per-variant figure
    data["preprocessing"]["resize"] = "lanczos"                    # a new preprocessing step
    data["quantization"]["trials"][0]["notes"] = ["kept"]          # deep inside a list
    data["files"]["model.fp32.onnx"]["mode"] = "0644"
    meta = schema.parse(copy.deepcopy(data))
    assert meta.lineage == {"run": "abc", "parent": None}
    assert meta.variants["fp32"].latency_ms == 1.25 and meta.preprocessing.resize == "lanczos"
    assert json.dumps(meta.to_dict()) == json.dumps(data)


def test_a_toy_family_with_only_the_common_head_is_a_valid_manifest():
    data = {**head("vector", "vector-classification"),
            "inputs": [{"name": "vectors", "dtype": "float32", "shape": [-1, 4]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 3]}],
            "variants": {"fp32": {"file": "model.fp32.onnx"}},
            "files": {"model.fp32.onnx": {"sha256": "8" * 64, "bytes": 3}}}
    meta = schema.parse(data)
    assert meta.family == "vector" and meta.preprocessing is None and meta.quantization is None
    assert meta.variants["fp32"].op_types == {}  # a default: read, but not written back
    assert meta.to_dict() == data


def test_an_integer_version_reads_as_text():
    assert schema.parse({**image_manifest(), "version": 7}).version == "7"


# -- edgestack.artifact through the model ----------------------------------------------------
def write_folder(tmp_path, data: dict):
    folder = tmp_path / "demo" / data["version"]  # a version's folder is named after it
    folder.mkdir(parents=True)
    for name in data["files"]:  # every file the manifest names (issue 20: each must be listed and present)
        (folder / name).write_bytes(b"not really onnx")
    body = {k: v for k, v in data.items() if k not in ("schema_version", "files")}
    return folder, body


def test_write_manifest_stamps_the_version_and_load_gives_both_views(tmp_path):
    folder, body = write_folder(tmp_path, image_manifest())
    artifact.write_manifest(folder, body)
    on_disk = json.loads((folder / artifact.MANIFEST).read_text())
    assert on_disk["schema_version"] == artifact.SCHEMA_VERSION == schema.SCHEMA_VERSION == 2
    art = artifact.load(folder)
    assert art.manifest == on_disk and isinstance(art.meta, schema.Manifest)
    assert art.meta.files["model.fp32.onnx"].bytes == len(b"not really onnx")
    assert (art.name, art.version, art.task) == ("demo-image", "3", "image-classification")
    assert art.variant_path("int8") == folder / "model.int8.onnx" and art.variants["fp32"]["target"] == "cpu"
    with pytest.raises(ArtifactError, match="has no variant 'bf16'"):
        art.variant_path("bf16")


def test_write_manifest_refuses_a_malformed_manifest_and_writes_nothing(tmp_path):
    folder, body = write_folder(tmp_path, image_manifest())
    del body["variants"]["fp32"]["file"]
    with pytest.raises(ArtifactError, match=r"variants\.fp32\.file: Field required"):
        artifact.write_manifest(folder, body)
    assert not (folder / artifact.MANIFEST).exists()


def test_load_migrates_a_v1_file_and_refuses_a_newer_one(tmp_path):
    folder, body = write_folder(tmp_path, image_manifest())
    artifact.write_manifest(folder, body)
    path = folder / artifact.MANIFEST
    on_disk = json.loads(path.read_text())
    path.write_text(json.dumps({**on_disk, "schema_version": 1, "family": "cnn"}))
    art = artifact.load(folder)
    assert art.meta.family == "image" and art.manifest["family"] == "image" and art.manifest["schema_version"] == 2
    path.write_text(json.dumps({**on_disk, "schema_version": 9}))
    with pytest.raises(ArtifactError, match=r"schema_version 9, newer than this edgestack reads \(2\)"):
        artifact.load(folder)


def test_load_turns_an_invalid_manifest_into_one_line(tmp_path):
    folder, body = write_folder(tmp_path, image_manifest())
    artifact.write_manifest(folder, body)
    path = folder / artifact.MANIFEST
    path.write_text(json.dumps({**json.loads(path.read_text()), "outputs": None}))
    with pytest.raises(ArtifactError, match=r"manifest\.json is not a valid manifest: outputs: Input should be a "
                                            r"valid list") as info:
        artifact.load(folder)
    assert "\n" not in str(info.value)


def test_an_artifact_built_from_a_dict_is_checked_too(tmp_path):
    art = artifact.Artifact(tmp_path, {**image_manifest(), "schema_version": 1, "family": "cnn"})
    assert art.meta.family == "image"
    with pytest.raises(ArtifactError, match="name: Field required"):
        artifact.Artifact(tmp_path, {k: v for k, v in image_manifest().items() if k != "name"})


# -- the smaller pieces, one rule each (scripts/mutation.py found them unchecked) ---------------

def test_to_dict_passes_pydantics_options_on():
    meta = schema.parse(image_manifest())
    assert "labels" not in meta.to_dict(exclude={"labels"}) and "labels" in meta.to_dict()
    assert meta.variants["fp32"].to_dict(include={"file"}) == {"file": "model.fp32.onnx"}


def test_a_variants_scores_are_its_measured_test_and_val_numbers_only():
    variant = schema.parse(tune_manifest()).variants["fp32"]
    assert variant.scores() == {"val_bits_per_char": 1.5, "test_bits_per_char": 1.49, "val_chars": 7178,
                                "test_chars": 7498}  # not step_tokens_per_s, not op_types
    image = schema.parse(image_manifest()).variants["int8"]
    assert image.scores() == {"test_accuracy": 0.984, "test_size": 500, "val_accuracy": 0.98}


def test_one_problem_is_where_and_what_and_more_are_counted():
    def message(data) -> str:
        with pytest.raises(ArtifactError) as info:
            schema.parse(data, "m.json")
        return str(info.value)

    data = image_manifest()
    del data["name"]
    assert message(data) == "m.json is not a valid manifest: name: Field required"
    del data["task"]
    assert message(data) == "m.json is not a valid manifest: name: Field required (and 1 more problem)"
    data = image_manifest()
    data["labels"] = []  # the whole manifest is what is wrong: no field to name
    assert message(data) == "m.json is not a valid manifest: manifest: a image manifest needs labels"


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "a\\b.onnx", "a\0b", "C:x.onnx", "a//b", "./a", "a/./b", "../x",
                                 "a/..", "a/"])
def test_each_kind_of_path_outside_the_folder_is_refused_on_its_own(bad):
    with pytest.raises(ValueError) as caught:
        schema.check_relative(bad, "files")
    assert str(caught.value) == f"files: {bad[:120]!r} is not a relative path inside the artifact folder"


def test_good_paths_pass_and_a_long_one_is_quoted_cut_at_120():
    for good in ("model.onnx", "checkpoint/model.safetensors", "a.b/c-d_e.json", ".hidden"):
        assert schema.check_relative(good, "files") == good
    with pytest.raises(ValueError, match=r"^files: '" + "a" * 120 + r"' is not"):
        schema.check_relative("a" * 200 + "/..", "files")


def test_the_files_a_runner_reads_are_named_by_their_fields():
    assert schema.parse(text_manifest()).model_files() == [("variants.fp32.file", "model.fp32.onnx"),
                                                             ("preprocessing.tokenizer", "tokenizer.json")]
    assert schema.parse(tune_manifest()).model_files() == [("variants.fp32.file", "step.fp32.onnx"),
                                                             ("variants.fp32.prompt_file", "prompt.fp32.onnx"),
                                                             ("vocabulary.file", "vocab.json")]


def test_where_a_manifest_came_from_is_named_by_default_and_when_given():
    for call in (schema.migrate, schema.parse):
        with pytest.raises(ArtifactError, match=r"^manifest: a manifest is a JSON object, got list$"):
            call([1])
        with pytest.raises(ArtifactError, match=r"^x.json: a manifest is a JSON object, got str$"):
            call("text", "x.json")
    with pytest.raises(ArtifactError, match=r"^manifest is not a valid manifest: name: Field required"):
        data = image_manifest()
        del data["name"]
        schema.parse(data)
    with pytest.raises(ArtifactError, match=r"^manifest is not a valid manifest"):
        data = image_manifest()
        del data["name"]
        schema.validate(data)


def test_a_v1_family_that_is_not_text_is_kept_as_it_is_for_the_model_to_refuse():
    migrated = schema.migrate({**image_manifest(), "schema_version": 1, "family": 7})
    assert migrated["family"] == 7 and migrated["schema_version"] == 2
    assert schema.migrate({**image_manifest(), "schema_version": 1, "family": ["cnn"]})["family"] == ["cnn"]
    with pytest.raises(ArtifactError, match="family"):
        schema.parse({**image_manifest(), "schema_version": 1, "family": 7})
