"""Model specs (edgestack/specs.py): the repository's files, the typed schema's one-line refusals,
EDGESTACK_MODELS_DIR, and what `edgestack build`/`models` make of a bad spec (one line, exit 1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgestack import registry, specs
from training.configs import ImageConfig, TextConfig

ROOT = Path(__file__).resolve().parents[2]

# What edgestack/registry.py said in code before the models moved into spec files (commit 2e15252):
# the specs must give the same training Config values, so the five build as before.
BEFORE = {
    "digits-cnn": ("image", {"dataset": "digits", "epochs": 40, "augment": True, "patience": 8, "drawn": True,
                             "printed_digits": 100}),
    "fashion-cnn": ("image", {"dataset": "fashion", "epochs": 15, "augment": False, "patience": 3}),
    "folk-lstm": ("tune", {"corpus": "irish", "hidden_size": 384, "epochs": 15, "patience": 4, "threads": 1}),
    "sentiment-transformer": ("text", {"dataset": "sentiment", "arch": "minilm", "epochs": 1, "batch_size": 16,
                                       "train_limit": 4000, "lr": 1e-4, "head_lr": 1e-3, "freeze_layers": 3}),
    "topic-transformer": ("text", {"dataset": "topic", "arch": "minilm", "epochs": 2, "batch_size": 16,
                                   "train_limit": 600, "lr": 1e-4, "head_lr": 1e-3, "freeze_layers": 3,
                                   "train_max_length": 64}),
    "sentiment-tiny": ("text", {"dataset": "sentiment", "arch": "tiny", "epochs": 4, "lr": 1e-3, "patience": 2}),
    "topic-tiny": ("text", {"dataset": "topic", "arch": "tiny", "epochs": 6, "lr": 1e-3, "patience": 2}),
}


def test_repository_specs_give_the_configs_the_code_gave():
    from export.build import make_config

    assert registry.spec_errors() == {}
    assert list(registry.DEFAULT_MODELS) == ["digits-cnn", "fashion-cnn", "folk-lstm", "sentiment-transformer",
                                             "topic-transformer"]
    assert set(BEFORE) <= set(registry.MODELS)
    for name, (family, values) in BEFORE.items():
        spec = registry.get(name)
        assert spec.family == family and spec.path == ROOT / "models" / f"{name}.toml"
        config_cls = registry.config_class(family)
        assert make_config(spec) == config_cls(**{**values, **{k: v for k, v in spec.defaults.items()
                                                             if k in ("input_shape", "arch", "max_length")}})
        assert {k: v for k, v in spec.defaults.items() if k in values} == values


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


GOOD = 'name = "parts"\nfamily = "image"\n[data]\nsource = "folder"\npath = "photos"\n[input]\nshape = [3, 32, 32]\n'


def test_a_user_spec_is_found_in_models_dir_and_paths_are_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESTACK_MODELS_DIR", str(tmp_path))
    assert "parts" not in registry.MODELS
    write(tmp_path, "parts", GOOD + "[training]\nepochs = 3\nflip = true\n[quality]\nmax_int8_drop = 0.01\n")
    spec = registry.get("parts")
    assert spec.defaults == {"dataset": "folder", "data_dir": str(tmp_path / "photos"), "input_shape": [3, 32, 32],
                             "epochs": 3, "flip": True}
    assert spec.quality == {"max_int8_drop": 0.01} and not spec.default
    assert "parts" not in registry.DEFAULT_MODELS
    from export.build import spec_export_options

    assert spec_export_options(spec) == {"max_int8_drop": 0.01}


@pytest.mark.parametrize("text, expected", [
    (GOOD + "colour = 1\n", "input.colour: unknown key"),  # after a table, a key belongs to it (TOML)
    ('name = "parts"\nfamily = "image"\ncolour = "red"\n', "colour: unknown key"),
    (GOOD + "[training]\nepoch = 3\n", "training.epoch: unknown key for family 'image'"),
    (GOOD + "[architecture]\nepochs = 3\n", "architecture.epochs: unknown key for family 'image'"),
    (GOOD + "[training]\nepochs = \"ten\"\n", "training.epochs: Input should be a valid integer"),
    (GOOD.replace("[3, 32, 32]", '"big"'), "input.shape: Input should be a valid list"),
    ('name = "parts"\nfamily = "vision"\n', "family: unknown model family 'vision'"),
    ('name = "other"\nfamily = "image"\n', "name: 'other' differs from the file's name 'parts'"),
    ('family = "image"\n', "name: required key is missing"),
    ('name = "parts"\nfamily = "image"\n[quality]\nmax_int8_drop = -1\n', "quality.max_int8_drop: Input should be "
                                                                        "greater than or equal to 0"),
    ('name = "parts"\nfamily = "image"\n[quality]\nmin_acc = 0.9\n', "quality.min_acc: unknown key"),
    ('name = "parts\nfamily = "image"\n', "not valid TOML"),
])
def test_a_bad_spec_is_refused_in_one_line_naming_the_key(tmp_path, monkeypatch, text, expected):
    monkeypatch.setenv("EDGESTACK_MODELS_DIR", str(tmp_path))
    path = write(tmp_path, "parts", text)
    registry.reload()
    errors = registry.spec_errors()
    assert set(errors) == {"parts"}
    message = str(errors["parts"])
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    with pytest.raises(specs.SpecError, match="parts.toml"):
        registry.get("parts")
    assert "digits-cnn" in registry.MODELS  # the others still load


def test_a_name_is_defined_once(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESTACK_MODELS_DIR", str(tmp_path))
    write(tmp_path, "fashion-cnn", 'name = "fashion-cnn"\nfamily = "image"\n')
    assert registry.get("fashion-cnn").path == ROOT / "models" / "fashion-cnn.toml"
    assert "already defined by" in str(registry.spec_errors()["fashion-cnn"])


def test_served_names_and_sections_are_checked_without_a_file():
    with pytest.raises(specs.SpecError, match="name: 'Parts Photos' is not a served name"):
        specs.parse({"name": "Parts Photos", "family": "image"}, ImageConfig)
    with pytest.raises(specs.SpecError, match="data.column: unknown key for family 'text'"):
        specs.parse({"name": "t", "family": "text", "data": {"column": "x"}}, TextConfig)
    loaded = specs.parse({"name": "t", "family": "text", "data": {"path": "/x.csv", "text_column": "body"},
                          "input": {"max_length": 64}}, TextConfig)
    assert loaded.config == {"data_dir": "/x.csv", "text_column": "body", "max_length": 64}


def test_an_imported_spec_round_trips_and_is_not_trained(tmp_path):
    data = {"name": "my-onnx", "family": "image", "description": "imported",
            "imported": {"file": "/models/x.onnx", "sha256": "ab" * 32, "options": {"opset": 17, "labels": ["a"]}}}
    path = specs.write_spec(data, tmp_path, comment="written by a test")
    assert path.read_text().startswith("# written by a test\n")
    loaded = specs.parse(specs.read(path), ImageConfig, path=path)
    assert loaded.spec.imported.options == {"opset": 17, "labels": ["a"]} and loaded.config == {}
    with pytest.raises(specs.SpecError, match="training: an imported model is not trained"):
        specs.parse({**data, "training": {"epochs": 1}}, ImageConfig)
    from export.build import make_config

    spec = registry._from_spec(loaded)
    with pytest.raises(Exception, match="was imported"):
        make_config(spec)


def test_toml_writer_round_trips():
    data = {"name": "x", "family": "text", "description": 'a "quoted"\\ line', "default": False,
            "data": {"path": "/a b/c.csv"}, "input": {"max_length": 64}, "training": {"lr": 0.0001, "head_lr": None},
            "quality": {"max_int8_drop": 0.01}}
    back = __import__("tomllib").loads(specs.to_toml(data))
    assert back == {**data, "training": {"lr": 0.0001}}


def test_cli_refuses_a_bad_spec_in_one_line_with_exit_1(tmp_path, monkeypatch, capsys):
    from cli import main

    monkeypatch.setenv("EDGESTACK_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("EDGESTACK_ARTIFACTS", str(tmp_path / "artifacts"))
    write(tmp_path, "parts", GOOD + "[training]\nepoch = 3\n")
    assert main(["build", "parts"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "training.epoch: unknown key" in err
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"parts\s+\?\s+spec refused: .*training.epoch", out) and "digits-cnn" in out
