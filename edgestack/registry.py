"""Served models: one entry per served name, naming the module of each stage.

Modules are named as strings and imported on demand, so the server never imports torch
(training/export modules) and the edge runner never imports bentoml. Adding a model
family means one module per stage plus an entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    task: str
    train_module: str      # has Config (dataclass) and train(cfg, out_dir, progress=) -> metrics
    export_module: str     # has export(run_dir, staging, name=, progress=) -> manifest
    runner: str            # "module:Class" built from an Artifact at serve time (ORT only)
    defaults: dict[str, Any] = field(default_factory=dict)  # Config overrides for the default build
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    "digits-cnn": ModelSpec(
        "digits-cnn", "cnn", "image-classification", "training.cnn", "export.cnn",
        "serving.image_classifier:ImageClassifier",
        defaults={"dataset": "digits", "epochs": 40, "augment": True, "patience": 8},
        description="handwritten digit classifier (28x28 grey, 10 classes)"),
    "fashion-cnn": ModelSpec(
        "fashion-cnn", "cnn", "image-classification", "training.cnn", "export.cnn",
        "serving.image_classifier:ImageClassifier",
        defaults={"dataset": "fashion", "epochs": 15, "augment": False, "patience": 3},
        description="Fashion-MNIST clothing classifier (28x28 grey, 10 classes)"),
    "folk-lstm": ModelSpec(
        "folk-lstm", "lstm", "text-generation", "training.folk_lstm", "export.folk_lstm",
        "serving.music_generator:MusicGenerator",
        defaults={"corpus": "irish", "hidden_size": 384, "epochs": 15, "patience": 4, "threads": 1},
        description="character LSTM writing Irish folk tunes in ABC notation"),
    # Text classifiers (training/text_transformer.py): the defaults are the 2-core profile;
    # `make text-large` (every training text, 2 epochs, max length 128) is the larger one.
    "sentiment-transformer": ModelSpec(
        "sentiment-transformer", "transformer", "text-classification", "training.text_transformer",
        "export.text_transformer", "serving.text_classifier:TextClassifier",
        defaults={"dataset": "sentiment", "arch": "minilm", "epochs": 1, "batch_size": 16, "train_limit": 4000,
                  "lr": 1e-4, "head_lr": 1e-3, "freeze_layers": 3},
        description="movie-review sentiment, fresh/rotten (MiniLM-L6 fine-tuned)"),
    "topic-transformer": ModelSpec(
        "topic-transformer", "transformer", "text-classification", "training.text_transformer",
        "export.text_transformer", "serving.text_classifier:TextClassifier",
        defaults={"dataset": "topic", "arch": "minilm", "epochs": 2, "batch_size": 16, "train_limit": 600,
                  "lr": 1e-4, "head_lr": 1e-3, "freeze_layers": 3, "train_max_length": 64},
        description="BBC News topic, 5 classes (MiniLM-L6 fine-tuned)"),
    "sentiment-tiny": ModelSpec(
        "sentiment-tiny", "transformer", "text-classification", "training.text_transformer",
        "export.text_transformer", "serving.text_classifier:TextClassifier",
        defaults={"dataset": "sentiment", "arch": "tiny", "epochs": 4, "lr": 1e-3, "patience": 2},
        description="movie-review sentiment, tiny 2-layer transformer trained from scratch (edge option)"),
    "topic-tiny": ModelSpec(
        "topic-tiny", "transformer", "text-classification", "training.text_transformer",
        "export.text_transformer", "serving.text_classifier:TextClassifier",
        defaults={"dataset": "topic", "arch": "tiny", "epochs": 6, "lr": 1e-3, "patience": 2},
        description="BBC News topic, tiny 2-layer transformer trained from scratch (edge option)"),
}

DEFAULT_MODELS = ["digits-cnn", "fashion-cnn", "folk-lstm", "sentiment-transformer", "topic-transformer"]


@dataclass(frozen=True)
class FamilyTools:
    """Offline tools of a model family (module paths, imported on demand)."""
    batch: str   # "module:Class": batch-job adapter (reads inputs, runs ORT, returns rows) -- batch/
    edge: str    # "module": the device-side runner module copied into bundles -- bundle/edge_runner/


# A family listed here gets `edgestack batch` and `edgestack bundle`; one entry per family.
FAMILY_TOOLS: dict[str, FamilyTools] = {
    "cnn": FamilyTools(batch="batch.images:ImageBatch", edge="bundle.edge_runner.image"),
    "lstm": FamilyTools(batch="batch.music:MusicBatch", edge="bundle.edge_runner.music"),
    "transformer": FamilyTools(batch="batch.text:TextBatch", edge="bundle.edge_runner.text"),
}


def family_tools(name: str) -> FamilyTools:
    spec = get(name)
    if spec.family not in FAMILY_TOOLS:
        raise ValueError(f"{name}: family {spec.family!r} has no batch/bundle adapter yet "
                         f"(covered: {', '.join(FAMILY_TOOLS)}); add one to registry.FAMILY_TOOLS")
    return FAMILY_TOOLS[spec.family]


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def load_object(path: str):
    """'package.module:Attr' -> the attribute (imported lazily)."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj
