"""Model families, registered once in code, and served models, declared in spec files.

A *family* says where each stage of one kind of model lives (module paths, imported on
demand, so the server never imports torch and the edge runner never imports bentoml).
A *served model* is a name plus its family and training defaults: a `models/NAME.toml` spec
(edgestack/specs.py; the repository's models/ and EDGESTACK_MODELS_DIR), read when first
needed and again whenever a spec folder changes. Adding a family is one module per stage
that needs it plus one `Family(...)` line (docs/adding-a-family.md); adding a served model
is one spec file (docs/your-own-model.md), no code.

`MODELS` (name -> ModelSpec), `DEFAULT_MODELS` (the specs with `default = true`) and `get`
read the specs; `register_model` adds a model in code (over the files, for this process).
"""

from __future__ import annotations

import importlib
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgestack import specs
from edgestack.errors import DataError, UnknownName, UsageError


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
    config: str | None = None   # "module:Class": the training Config, torch-free (specs are checked against it);
                                # None: the train module's Config
    budget: str = "max_int8_drop"  # the export keyword that takes the spec's quality.max_int8_drop


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


register_family(Family(
    "image", "image-classification", "edgestack.families.image", "training.image", "export.image",
    "serving.image:ImageClassifier", batch="batch.image:ImageBatch", edge="bundle.edge_runner.image",
    bench="benchmarks.image:bench_image", predict="cli.predict:predict_images",
    config="training.configs:ImageConfig"))
register_family(Family(
    "tune", "text-generation", "edgestack.families.tune", "training.tune", "export.tune",
    "serving.tune:MusicGenerator", batch="batch.tune:MusicBatch", edge="bundle.edge_runner.tune",
    bench="benchmarks.tune:bench_tune", predict="cli.predict:predict_tune",
    config="training.configs:TuneConfig", budget="max_int8_bpc_increase"))
register_family(Family(
    "text", "text-classification", "edgestack.families.text", "training.text", "export.text",
    "serving.text:TextClassifier", batch="batch.text:TextBatch", edge="bundle.edge_runner.text",
    bench="benchmarks.text:bench_text", predict="cli.predict:predict_texts",
    config="training.configs:TextConfig"))
# Graphs edgestack did not train (`edgestack import`, export/onnx_import.py): no training stage, served
# as their own tensors over v2 REST and gRPC (no REST endpoint of their own).
register_family(Family(
    "generic", "tensors", "edgestack.families.generic", "", "export.onnx_import",
    "serving.generic:GenericModel", batch="batch.generic:GenericBatch", edge="bundle.edge_runner.generic"))


def family(name: str) -> Family:
    """A family by its name, or by the name a schema-1 manifest used (cnn, lstm, transformer)."""
    from edgestack.manifest import FAMILY_ALIASES

    name = FAMILY_ALIASES.get(name, name)
    if name not in FAMILIES:
        raise UnknownName(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


@dataclass(frozen=True)
class ModelSpec:
    """A served model as the registry knows it: from a spec file (edgestack/specs.py), or
    registered in code (`register_model`, tests and experiments)."""

    name: str
    family: str
    defaults: dict[str, Any] = field(default_factory=dict)  # training Config values of the default build
    description: str = ""
    default: bool = False                  # built by a plain `edgestack build`
    quality: dict[str, Any] = field(default_factory=dict)   # the spec's [quality] budgets that are set
    path: Path | None = None               # the spec file (None: registered in code)
    imported: dict[str, Any] | None = None  # set for `edgestack import`ed models: not trained

    @property
    def stages(self) -> Family:
        return family(self.family)

    @property
    def task(self) -> str:
        return self.stages.task


def config_class(family_name: str):
    """The training Config dataclass of a family (imported lazily; None for a family that does
    not train)."""
    fam = family(family_name)
    if fam.config:
        return load_object(fam.config)
    return load_object(fam.train + ":Config") if fam.train else None


def _from_spec(loaded: specs.LoadedSpec) -> ModelSpec:
    spec = loaded.spec
    return ModelSpec(spec.name, spec.family, dict(loaded.config), spec.description, spec.default,
                     spec.quality.model_dump(exclude_none=True), loaded.path,
                     spec.imported.model_dump() if spec.imported else None)


class _Catalogue:
    """The spec files as read, kept until a spec folder (or EDGESTACK_MODELS_DIR) changes."""

    def __init__(self):
        self._key: tuple | None = None
        self.models: dict[str, ModelSpec] = {}
        self.errors: dict[str, specs.SpecError] = {}

    def _stamp(self) -> tuple:
        dirs = specs.search_dirs()
        stamp = []
        for directory in dirs:
            try:
                stamp.append((str(directory), directory.stat().st_mtime_ns))
            except OSError:
                stamp.append((str(directory), None))
        return tuple(stamp)

    def current(self) -> _Catalogue:
        key = self._stamp()
        if key != self._key:
            self.reload(key)
        return self

    def reload(self, key: tuple | None = None) -> None:
        loaded, bad = specs.load_all(config_class)
        self.models = {name: _from_spec(s) for name, s in loaded.items()}
        self.errors = bad
        self._key = key if key is not None else self._stamp()


_CATALOGUE = _Catalogue()
_REGISTERED: dict[str, ModelSpec] = {}   # register_model(): in code, over the spec files
_REMOVED: set[str] = set()               # MODELS.pop() of a spec's model (tests)


class _Models(MutableMapping):
    """Served name -> ModelSpec: the spec files (read again when a spec folder changes) plus the
    models registered in code. Defaults first, then the rest, by name."""

    def _all(self) -> dict[str, ModelSpec]:
        models = {k: v for k, v in _CATALOGUE.current().models.items() if k not in _REMOVED}
        models.update(_REGISTERED)
        return models

    def __getitem__(self, name: str) -> ModelSpec:
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, name) -> bool:
        return name in self._all()

    def __setitem__(self, name: str, spec: ModelSpec) -> None:
        _REGISTERED[name] = spec
        _REMOVED.discard(name)

    def __delitem__(self, name: str) -> None:
        if name not in self._all():
            raise KeyError(name)
        _REGISTERED.pop(name, None)
        _REMOVED.add(name)

    def __repr__(self) -> str:
        return f"MODELS({', '.join(self._all())})"


MODELS: MutableMapping[str, ModelSpec] = _Models()


def register_model(spec: ModelSpec) -> ModelSpec:
    family(spec.family)  # must exist
    MODELS[spec.name] = spec
    return spec


def spec_errors() -> dict[str, specs.SpecError]:
    """Spec files that did not load: model name (the file's stem) -> why, one line."""
    return dict(_CATALOGUE.current().errors)


def reload() -> None:
    """Read the spec folders again now (a spec edited in place keeps its folder's timestamp)."""
    _CATALOGUE.reload()


class _DefaultModels(Sequence):
    """The models a plain `edgestack build` builds: specs with `default = true`, by name."""

    def _names(self) -> list[str]:
        return [name for name, spec in MODELS.items() if spec.default]

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def __repr__(self) -> str:
        return repr(self._names())


DEFAULT_MODELS: Sequence[str] = _DefaultModels()


def check_new_name(name: str, *, force: bool = False) -> None:
    """A new model's name (`edgestack new`, `edgestack import`): a served name, not taken by a
    spec or by a built model (DataError, one line, otherwise). `force` may replace a spec of
    your own (never the repository's) that has nothing built."""
    from edgestack import artifact

    if not specs.NAME.match(name):
        raise DataError(f"name {name!r} is not a served name: lower-case letters, digits, '.', '_' and '-', "
                        "starting with a letter or digit, at most 63 characters")
    built = artifact.latest_version_dir(name)
    if built is not None:
        raise DataError(f"{name!r} clashes with a built model ({built}); pick another name, or remove that "
                        "artifact folder first")
    existing = MODELS.get(name)
    path = existing.path if existing is not None else None
    if name in spec_errors():
        path = next((p for p in specs.spec_files() if p.stem == name), None)
    if existing is None and path is None:
        return
    mine = path is not None and path.parent != specs.REPO_MODELS
    if force and mine:
        return
    raise DataError(f"{name!r} is already a model ({path or 'registered in code'}); pick another name"
                    + (", or --force to replace its spec" if mine else ""))


def get(name: str) -> ModelSpec:
    models = MODELS
    if name in models:
        return models[name]
    broken = _CATALOGUE.current().errors.get(name)
    if broken is not None:
        raise broken
    raise UnknownName(f"unknown model {name!r}; known: {', '.join(models)}") from None


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
