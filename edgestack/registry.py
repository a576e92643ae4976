"""Model families and served models, registered once.

A *family* says where each stage of one kind of model lives (module paths, imported on
demand, so the server never imports torch and the edge runner never imports bentoml).
A *served model* is a name plus its family and training defaults. Adding a family is one
module per stage that needs it plus one `Family(...)` line; adding a served model of an
existing family is one `ModelSpec(...)` line (docs/adding-a-family.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from edgestack.errors import UnknownName, UsageError


@dataclass(frozen=True)
class Family:
    name: str              # one name everywhere: image | tune | text
    task: str              # what the server does with it: image-classification | text-generation | ...
    processing: str        # numpy-only pre/post-processing, copied into bundles: edgestack.families.<name>
    train: str             # module with Config (dataclass) and train(cfg, out_dir, progress=) -> metrics
    export: str            # module with export(run_dir, staging, name=, progress=, **gates) -> manifest
    runner: str            # "module:Class" built from an Artifact at serve time (ORT only)
    batch: str | None = None    # "module:Class": batch-job adapter (batch/)
    edge: str | None = None     # edge runner module copied into bundles (bundle/edge_runner/)
    bench: str | None = None    # "module:function(art, args) -> dict": `edgestack bench`
    predict: str | None = None  # "module:function(args, client) -> int": `edgestack predict`


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


register_family(Family(
    "image", "image-classification", "edgestack.families.image", "training.image", "export.image",
    "serving.image:ImageClassifier", batch="batch.image:ImageBatch", edge="bundle.edge_runner.image",
    bench="benchmarks.image:bench_image", predict="cli.predict:predict_images"))
register_family(Family(
    "tune", "text-generation", "edgestack.families.tune", "training.tune", "export.tune",
    "serving.tune:MusicGenerator", batch="batch.tune:MusicBatch", edge="bundle.edge_runner.tune",
    bench="benchmarks.tune:bench_tune", predict="cli.predict:predict_tune"))
register_family(Family(
    "text", "text-classification", "edgestack.families.text", "training.text", "export.text",
    "serving.text:TextClassifier", batch="batch.text:TextBatch", edge="bundle.edge_runner.text",
    bench="benchmarks.text:bench_text", predict="cli.predict:predict_texts"))


def family(name: str) -> Family:
    """A family by its name, or by the name a schema-1 manifest used (cnn, lstm, transformer)."""
    from edgestack.manifest import FAMILY_ALIASES

    name = FAMILY_ALIASES.get(name, name)
    if name not in FAMILIES:
        raise UnknownName(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    defaults: dict[str, Any] = field(default_factory=dict)  # Config overrides for the default build
    description: str = ""

    @property
    def stages(self) -> Family:
        return family(self.family)

    @property
    def task(self) -> str:
        return self.stages.task


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    family(spec.family)  # must exist
    MODELS[spec.name] = spec
    return spec


for _spec in (
    # drawn: writer/pen augmentation; printed_digits: 100 per class from fonts other than the
    # evaluation's DejaVu (training/image.py; docs/models.md has what each gives)
    ModelSpec("digits-cnn", "image", {"dataset": "digits", "epochs": 40, "augment": True, "patience": 8,
                                      "drawn": True, "printed_digits": 100},
              "handwritten digit classifier (28x28 grey, 10 classes)"),
    ModelSpec("fashion-cnn", "image", {"dataset": "fashion", "epochs": 15, "augment": False, "patience": 3},
              "Fashion-MNIST clothing classifier (28x28 grey, 10 classes)"),
    ModelSpec("folk-lstm", "tune", {"corpus": "irish", "hidden_size": 384, "epochs": 15, "patience": 4, "threads": 1},
              "character LSTM writing Irish folk tunes in ABC notation"),
    # Text classifiers (training/text.py): the defaults are the 2-core profile; `make text-large`
    # (every training text, 2 epochs, max length 128) is the larger one.
    ModelSpec("sentiment-transformer", "text",
              {"dataset": "sentiment", "arch": "minilm", "epochs": 1, "batch_size": 16, "train_limit": 4000,
               "lr": 1e-4, "head_lr": 1e-3, "freeze_layers": 3},
              "movie-review sentiment, fresh/rotten (MiniLM-L6 fine-tuned)"),
    ModelSpec("topic-transformer", "text",
              {"dataset": "topic", "arch": "minilm", "epochs": 2, "batch_size": 16, "train_limit": 600,
               "lr": 1e-4, "head_lr": 1e-3, "freeze_layers": 3, "train_max_length": 64},
              "BBC News topic, 5 classes (MiniLM-L6 fine-tuned)"),
    ModelSpec("sentiment-tiny", "text", {"dataset": "sentiment", "arch": "tiny", "epochs": 4, "lr": 1e-3, "patience": 2},
              "movie-review sentiment, tiny 2-layer transformer trained from scratch (edge option)"),
    ModelSpec("topic-tiny", "text", {"dataset": "topic", "arch": "tiny", "epochs": 6, "lr": 1e-3, "patience": 2},
              "BBC News topic, tiny 2-layer transformer trained from scratch (edge option)"),
):
    register_model(_spec)

DEFAULT_MODELS = ["digits-cnn", "fashion-cnn", "folk-lstm", "sentiment-transformer", "topic-transformer"]


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownName(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def stage(name: str, which: str) -> str:
    """The module path of one stage ("batch", "edge", "bench", "predict", ...) of a served model's
    family; ValueError naming the family when it has none."""
    fam = get(name).stages
    path = getattr(fam, which)
    if not path:
        raise UsageError(f"{name}: family {fam.name!r} has no {which} stage yet; add one to its Family entry "
                         "in edgestack/registry.py")
    return path


def load_object(path: str):
    """'package.module:Attr' -> the attribute (imported lazily)."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj
