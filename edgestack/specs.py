"""Model specs: every served model is a TOML file, `models/NAME.toml`, checked by a typed schema.

Where specs are found, in this order: the repository's `models/` folder (the default models
and the tiny ones), then the folder `EDGESTACK_MODELS_DIR` names (your own; `edgestack new`
writes there, or into `models/` when it is unset). A name is defined once: a second file of
the same name is refused. The file's stem is the model's name (`name`, when written, must
equal it). A spec that does not parse is refused on its own, with one line naming the file
and the key (`edgestack models` lists such files); the other models still work.

A spec::

    name = "parts-cnn"                 # served name: a-z, 0-9, '.', '_', '-' (the file is parts-cnn.toml)
    family = "image"                   # image | text | tune | a registered family (edgestack/registry.py)
    description = "six kinds of machine parts, from photos"
    default = false                    # true: built by a plain `edgestack build` (the shipped five)

    [data]                             # where the training data is
    source = "folder"                  # a packaged data set (fashion, digits, sentiment, topic, irish, ...)
    path = "/data/parts"               # your own files (relative: to this file's folder)

    [input]                            # what the model takes
    shape = [3, 64, 64]                # image: channels, height, width (text: max_length = 128)

    [architecture]                     # the network (family-specific keys)
    arch = "dwsep"

    [training]                         # any other field of the family's training Config
    epochs = 30
    flip = true

    [quality]                          # budgets the build must hold
    max_int8_drop = 0.01               # int8 may lose at most this against fp32 (else int8 is withheld)
    min_accuracy = 0.8                 # fp32's test accuracy must reach this (else the build fails)
    min_macro_f1 = 0.75                # ... and its macro-F1 this

The keys of `[data]`, `[input]` and `[architecture]` are the family's training Config's
`SPEC_SECTIONS` (training/configs.py); `[training]` takes every other field of that Config.
Values are checked against the Config's types (pydantic); an unknown key anywhere is refused.

Imported models (`edgestack import`, cli/import*.py) are specs too: they are not trained, so
instead of `[data]`/`[training]` they carry an `[imported]` table, and `edgestack build`
refuses them (re-import instead)::

    name = "my-onnx"
    family = "generic"                 # or image / text with their labels and preprocessing
    description = "imported from model.onnx"

    [imported]
    file = "/abs/path/model.onnx"      # what was imported (a record, not read at serve time)
    sha256 = "..."
    options = { opset = 17 }           # free-form: the importer's own settings, kept as written

The importer writes such a file with `write_spec(spec_dict, directory)` after
`check_new_name(name)`; the artifact it publishes is what is served.

Core module: standard library, pydantic and edgestack.errors only. A family's Config class
is found through the registry (a module path, imported lazily: no torch is imported here).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from edgestack.errors import UsageError

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
SUFFIX = ".toml"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SECTIONS = ("data", "input", "architecture", "training")


class SpecError(UsageError):
    """A model spec that cannot be used: one line naming the file and the key (the CLI exits 1)."""

    exit_status = 1


class Quality(BaseModel):
    """Budgets a build must hold (absent: the family's defaults; min_*: no floor)."""

    model_config = ConfigDict(extra="forbid")

    max_int8_drop: float | None = Field(None, ge=0, description="classifiers: accuracy points int8 may lose against "
                                        "fp32 (0.005 = half a point); tune: relative bits/char increase")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="fp32's test accuracy must reach this")
    min_macro_f1: float | None = Field(None, ge=0, le=1, description="fp32's test macro-F1 must reach this")


class Imported(BaseModel):
    """An imported model's record (edgestack import): what was imported and how."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="the imported file (ONNX, or a PyTorch factory's weights)")
    sha256: str | None = Field(None, description="its digest at import time")
    options: dict[str, Any] = Field(default_factory=dict, description="the importer's settings, free-form")


class Spec(BaseModel):
    """One models/NAME.toml."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the served name (the file's stem)")
    family: str = Field(description="image | text | tune | a registered family")
    description: str = Field("", description="one line for `edgestack models` and the server's /models")
    default: bool = Field(False, description="built by a plain `edgestack build`")
    data: dict[str, Any] = Field(default_factory=dict, description="source (packaged) or path (yours), and "
                                 "the family's data options")
    input: dict[str, Any] = Field(default_factory=dict, description="image: shape = [C, H, W]; text: max_length")
    architecture: dict[str, Any] = Field(default_factory=dict, description="the family's network options")
    training: dict[str, Any] = Field(default_factory=dict, description="any other training Config field")
    quality: Quality = Field(default_factory=Quality, description="budgets the build must hold")
    imported: Imported | None = Field(None, description="set by `edgestack import`: the model is not trained")

    @field_validator("name")
    @classmethod
    def _served_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(f"{value!r} is not a served name: lower-case letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit, at most 63 characters")
        return value


@dataclass(frozen=True)
class LoadedSpec:
    """A checked spec: the TOML as typed, where it came from, and the training Config values it sets."""

    spec: Spec
    path: Path | None
    config: dict[str, Any]          # Config field -> value (the sections, flattened and typed)

    @property
    def name(self) -> str:
        return self.spec.name


def _one_line(exc: ValidationError, prefix: str = "") -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in (*([prefix] if prefix else []), *error["loc"])) or "spec"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    more = len(exc.errors()) - 1
    return f"{where}: {message}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def config_fields(config_cls) -> dict[str, Any]:
    """Field name -> its type, of a family's training Config dataclass."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def section_keys(config_cls) -> dict[str, dict[str, str]]:
    """Section -> {spec key: Config field}; `training` holds every field no other section claims."""
    sections = {s: dict(getattr(config_cls, "SPEC_SECTIONS", {}).get(s, {})) for s in SECTIONS[:-1]}
    claimed = {f for keys in sections.values() for f in keys.values()}
    sections["training"] = {f: f for f in config_fields(config_cls) if f not in claimed}
    return sections


def flatten(spec: Spec, config_cls, base: Path | None = None) -> dict[str, Any]:
    """The spec's sections as Config field values, each checked against the Config's type;
    SpecError (one line, naming section.key) for an unknown key or a value of the wrong type.
    A relative `data.path` is taken relative to `base` (the spec file's folder)."""
    types = config_fields(config_cls)
    out: dict[str, Any] = {}
    for section, keys in section_keys(config_cls).items():
        for key, value in getattr(spec, section).items():
            if key not in keys:
                known = ", ".join(sorted(keys)) or "none"
                raise SpecError(f"{section}.{key}: unknown key for family {spec.family!r} (known: {known})")
            field = keys[key]
            try:
                value = TypeAdapter(types[field]).validate_python(value, strict=False)
            except ValidationError as exc:
                raise SpecError(_one_line(exc, f"{section}.{key}")) from None
            if section == "data" and key == "path" and value is not None and base is not None:
                value = str((base / Path(value).expanduser()).resolve()) if not Path(value).expanduser().is_absolute() \
                    else str(Path(value).expanduser())
            out[field] = value
    return out


def parse(data: dict[str, Any], config_cls=None, *, path: Path | None = None) -> LoadedSpec:
    """A spec as a dict -> LoadedSpec. `config_cls`: the family's training Config (None: the
    sections are not checked, as for a family that does not train)."""
    where = f"{path}: " if path else ""
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(where + _one_line(exc)) from None
    if path is not None and path.stem != spec.name:
        raise SpecError(f"{where}name: {spec.name!r} differs from the file's name {path.stem!r} "
                        f"(rename the file to {spec.name}{SUFFIX})")
    if spec.imported is not None:
        trained = [s for s in ("data", "training") if getattr(spec, s)]
        if trained:
            raise SpecError(f"{where}{trained[0]}: an imported model is not trained; drop [{trained[0]}]")
        return LoadedSpec(spec, path, {})
    if config_cls is None:
        return LoadedSpec(spec, path, {})
    try:
        config = flatten(spec, config_cls, path.parent if path else None)
    except SpecError as exc:
        raise SpecError(where + str(exc)) from None
    return LoadedSpec(spec, path, config)


def read(path: Path) -> dict[str, Any]:
    """The TOML of a spec file as a dict; SpecError when it is not TOML."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read it ({exc})") from None


def search_dirs() -> list[Path]:
    """The spec folders, in search order: the repository's models/, then EDGESTACK_MODELS_DIR."""
    from edgestack.settings import get_settings

    extra = get_settings().models_dir
    dirs = [REPO_MODELS]
    if extra is not None and Path(extra).resolve() != REPO_MODELS:
        dirs.append(Path(extra).resolve())
    return dirs


def user_dir() -> Path:
    """Where `edgestack new` (and `edgestack import`) write a spec: EDGESTACK_MODELS_DIR, else models/."""
    from edgestack.settings import get_settings

    extra = get_settings().models_dir
    return Path(extra).resolve() if extra is not None else REPO_MODELS


def spec_files(dirs: list[Path] | None = None) -> list[Path]:
    files: list[Path] = []
    for directory in dirs if dirs is not None else search_dirs():
        if directory.is_dir():
            files += sorted(directory.glob(f"*{SUFFIX}"))
    return files


def load_all(config_for, dirs: list[Path] | None = None) -> tuple[dict[str, LoadedSpec], dict[str, SpecError]]:
    """Every spec file -> ({name: LoadedSpec}, {name: the SpecError of a file that did not load}).
    `config_for(family) -> Config class or None` (raises UsageError for an unknown family).
    Defaults first, then the others, each group by name."""
    good: dict[str, LoadedSpec] = {}
    bad: dict[str, SpecError] = {}
    for path in spec_files(dirs):
        name = path.stem
        if name in good or name in bad:
            first = good[name].path if name in good else None
            bad.setdefault(name, SpecError(f"{path}: model {name!r} is already defined by {first}; "
                                           "pick another name"))
            continue
        try:
            data = read(path)
            family = data.get("family") if isinstance(data, dict) else None
            config_cls = config_for(family) if isinstance(family, str) and "imported" not in data else None
            good[name] = parse(data, config_cls, path=path)
        except SpecError as exc:
            bad[name] = exc
        except UsageError as exc:  # an unknown family
            bad[name] = SpecError(f"{path}: family: {exc}")
    ordered = sorted(good.values(), key=lambda s: (not s.spec.default, s.name))
    return {s.name: s for s in ordered}, bad


def to_toml(data: dict[str, Any]) -> str:
    """A spec dict as TOML (top-level keys, then one table per section; strings, numbers,
    booleans, lists and inline tables only: what a spec holds)."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {type(v).__name__} to a spec")

    head = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    tables = [f"\n[{k}]\n" + "\n".join(f"{kk} = {value(vv)}" for kk, vv in v.items() if vv is not None)
              for k, v in data.items() if isinstance(v, dict) and v]
    return "\n".join(head) + "\n" + "\n".join(tables) + ("\n" if tables else "")


def write_spec(data: dict[str, Any], directory: Path | None = None, *, comment: str = "") -> Path:
    """Write a spec dict as `directory/NAME.toml` (default: user_dir()), after checking that it
    parses as a spec (its sections are checked when it is loaded). Returns the path."""
    parse(data)  # the typed head: name, family, quality, imported
    directory = Path(directory) if directory is not None else user_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{data['name']}{SUFFIX}"
    text = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines()) + to_toml(data)
    path.write_text(text, encoding="utf-8")
    return path
