"""The artifact manifest as types: what `manifest.json` holds, checked when it is written and read.

Every artifact folder has a `manifest.json` (edgestack/artifact.py writes and loads it). This
module is its schema: pydantic models for the head every family writes (name, version,
family, task, tensors, variants, files, ...) and for the parts only some families have
(tune: `vocabulary`, `generation`, `prompt_graph`; text: `model_inputs`/`model_outputs`,
`fusions`, `baseline`). Every model keeps keys it does not know (`extra="allow"`): a new
family's own block, or a field a newer export adds, survives a load and a dump unchanged,
and a dump keeps the keys in the order they were read (the same JSON back).

Schema versions (`schema_version` in the file):

    1   the first manifests. Family names were cnn / lstm / transformer, renamed image /
        tune / text late in version 1 (files of both kinds exist); the `quantization`
        block arrived late too, so older version-1 files lack it.
    2   family names image / tune / text only, and the `quantization` block from the int8
        search (still optional: a family without int8, like a toy one, has none).

`migrate` brings a version-1 dict up to SCHEMA_VERSION; a manifest from a newer edgestack is
refused (ArtifactError naming both versions) instead of being misread. `parse` = migrate +
validate, every failure one line.

Core layer: standard library, pydantic and edgestack.errors only (no torch, no web
framework): the server, batch jobs and the CLI all read manifests through it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from edgestack.errors import ArtifactError

SCHEMA_VERSION = 2
NAME = re.compile(r"[a-z0-9][a-z0-9-]*")   # a served name: also a folder, a URL segment, a Triton model name
VERSION = re.compile(r"[0-9]+")           # a version: also the name of its folder


def check_relative(relative: str, where: str) -> str:
    """A path inside the artifact folder: relative, '/'-separated, no '..', '.', empty or drive parts."""
    parts = relative.split("/")
    if (not relative or relative.startswith("/") or "\\" in relative or "\0" in relative or ":" in relative
            or any(part in ("", ".", "..") for part in parts)):
        raise ValueError(f"{where}: {relative[:120]!r} is not a relative path inside the artifact folder")
    return relative
# Family names of schema version 1 -> the names every later manifest uses.
FAMILY_ALIASES = {"cnn": "image", "lstm": "tune", "transformer": "text"}


class Block(BaseModel):
    """A part of the manifest: unknown keys kept, `to_dict` gives back what was read, in its order."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())  # model_inputs is a field name
    _keys: tuple[str, ...] = PrivateAttr(default=())  # the keys as read, in the file's order

    @model_validator(mode="wrap")
    @classmethod
    def _remember_key_order(cls, data: Any, handler: ModelWrapValidatorHandler[Block]) -> Block:
        block = handler(data)
        if isinstance(data, dict):
            block._keys = tuple(data)
        return block

    @model_serializer(mode="wrap")
    def _in_read_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        if not self._keys or not isinstance(out, dict):
            return out
        rank = {key: i for i, key in enumerate(self._keys)}
        return dict(sorted(out.items(), key=lambda item: rank.get(item[0], len(rank))))

    def to_dict(self, **options) -> dict[str, Any]:
        """The block as plain JSON data: the keys that were set (no defaults added), extras
        included, in the order they were read (a manifest round-trips to the same JSON)."""
        return self.model_dump(exclude_unset=True, **options)


class TensorSpec(Block):
    """One input or output tensor of a graph or of the served model."""

    name: str = Field(description="the tensor's name in the graph and in v2 requests")
    dtype: str = Field(description='numpy-style name: "float32", "int64", "bytes" (text), ...')
    shape: list[int] = Field(description="-1 = any size (batch, sequence)")


class Variant(Block):
    """One model file of the artifact (fp32, fp32-opt, int8, fp16, ...) and how good it measured."""

    file: str = Field(description="the ONNX graph (tune: the step graph)")
    prompt_file: str | None = Field(None, description="tune: the prompt graph of the same variant")
    val_bits_per_char: float | None = Field(None, description="tune: validation bits per character (ORT)")
    test_bits_per_char: float | None = Field(None, description="tune: test bits per character (ORT)")
    val_chars: int | None = Field(None, description="tune: characters of validation text measured")
    test_chars: int | None = Field(None, description="tune: characters of test text measured")
    step_tokens_per_s: float | None = Field(None, description="tune: batch-1 stepping speed at export time")
    test_accuracy: float | None = Field(None, description="classifiers: accuracy on the whole test split (ORT)")
    test_size: int | None = Field(None, description="classifiers: examples in that test split")
    agreement_with_fp32: float | None = Field(None, description="text: share of test predictions equal to fp32's")
    op_types: dict[str, int] = Field(default_factory=dict, description="ONNX op type -> count in the graph")
    prompt_op_types: dict[str, int] | None = Field(None, description="tune: the same for the prompt graph")
    target: str | None = Field(None, description='"cpu" or "gpu": where this variant is meant to run')
    val_accuracy: float | None = Field(None, description="int8: validation accuracy of the chosen recipe")
    threads: int | None = Field(None, description="ORT intra-op threads the server uses for this variant when "
                                                 "EDGESTACK_THREADS is unset: the fewest within 5% of the fastest "
                                                 "batch-1 run at build time (export/threads.py)")
    threads_batch1_ms: dict[str, float] | None = Field(None, description="batch-1 p50 in ms per thread count, at build time")
    threads_isa: dict[str, Any] | None = Field(None, description="the CPU those figures come from (model, cores, int8 ISA)")

    @property
    def headline(self) -> tuple[str, float]:
        """The variant's main figure: ("accuracy", test accuracy) for classifiers, else
        ("bits/char", test bits per character; NaN when the variant has neither)."""
        if self.test_accuracy is not None:
            return "accuracy", self.test_accuracy
        return "bits/char", float("nan") if self.test_bits_per_char is None else self.test_bits_per_char

    def scores(self) -> dict[str, float]:
        """The measured test_*/val_* numbers (what a bundle reports as its quality)."""
        return {k: v for k, v in self.to_dict().items() if k.startswith(("test_", "val_")) and isinstance(v, (int, float))}


class Preprocessing(Block):
    """How inputs become model tensors. Image: layout, size and scaling; text: the tokenizer."""

    layout: str | None = Field(None, description='image: "NCHW"')
    height: int | None = Field(None, description="image: rows the model takes (uploads are resized)")
    width: int | None = Field(None, description="image: columns the model takes")
    channels: int | None = Field(None, description="image: 1 = grey")
    scale: float | None = Field(None, description="image: pixels (0..255) * scale, then (x - mean) / std")
    mean: float | None = Field(None, description="image: subtracted after scaling")
    std: float | None = Field(None, description="image: divided by after the mean")
    dark_background: bool = Field(False, description="image: training images are light on dark: invert uploads that are not")
    drawn_layout: str | None = Field(None, description='image: "mnist": uploaded files are laid out as MNIST was '
                                     "made (crop to the ink, fit in 20x20, centre by mass) instead of resized whole")
    tokenizer: str | None = Field(None, description="text: tokenizer.json, a file of the artifact")
    max_length: int | None = Field(None, description="text: most tokens read per text ([CLS] and [SEP] included)")
    padding: str | None = Field(None, description="text: how a batch is padded (to its longest text)")
    truncation: str | None = Field(None, description="text: what happens to longer texts")
    lowercase: bool | None = Field(None, description="text: the tokenizer lowercases")


class Parity(Block):
    """The export's parity results: ONNX Runtime against PyTorch, passed when |ORT - PyTorch| <=
    atol + rtol * |PyTorch| everywhere. Image: one check (the four fields below); text: one such
    check per graph ("fp32", "fp32-opt", extras) and `texts`; tune: the greedy rollout fields
    and a check per graph output ("prompt_logits", ..., extras)."""

    max_abs_diff: float | None = Field(None, description="image: the largest |ORT - PyTorch| on the sample")
    atol: float | None = Field(None, description="image: absolute tolerance")
    rtol: float | None = Field(None, description="image: relative tolerance")
    passed: bool | None = Field(None, description="image: within tolerance everywhere (else the export failed)")
    texts: int | None = Field(None, description="text: real test texts compared")
    greedy_rollout_steps: int | None = Field(None, description="tune: characters generated greedily by both")
    greedy_rollout_prompt: str | None = Field(None, description="tune: the rollout's prompt")
    greedy_rollout_identical: bool | None = Field(None, description="tune: ORT fp32 wrote PyTorch's characters")
    int8_greedy_rollout_agreement: float | None = Field(None, description="tune: share of int8's characters equal")


class Trial(Block):
    """One int8 candidate of the search (export/int8_search.py)."""

    label: str = Field(description='what was tried, e.g. "minmax 1000 per-channel"')
    settings: dict[str, Any] = Field(default_factory=dict, description="the quantizer's settings")
    val_score: float | None = Field(None, description="the metric on validation (higher is better)")
    test_score: float | None = Field(None, description="the metric on test")
    val_drop: float | None = Field(None, description="fp32's validation score minus this one's")
    test_drop: float | None = Field(None, description="fp32's test score minus this one's")
    within_budget: bool | None = Field(None, description="both drops within the budget")
    seconds: float | None = Field(None, description="time to quantize and score")


class Quantization(Block):
    """The int8 search's record: published (the chosen trial) or withheld (and why)."""

    status: Literal["published", "withheld"] = Field(description="withheld: no int8 variant in the artifact")
    step: str | None = Field(None, description="calibration | exclude-nodes | granularity | withheld")
    metric: str | None = Field(None, description='what was compared: "accuracy", "-bits/char"')
    budget: float | None = Field(None, description="the largest drop allowed against fp32")
    reference: dict[str, float] | None = Field(None, description="fp32's val and test scores")
    portable: bool | None = Field(None, description="7-bit weights: the same answers on AVX2 and VNNI CPUs")
    cpu: dict[str, Any] | None = Field(None, description="the CPU the search ran on (edgestack.cpu.cpu_info)")
    chosen: Trial | None = Field(None, description="the published candidate")
    reason: str = Field("", description="why int8 was withheld")
    selection: str | None = Field(None, description="the rule that chose, in words")
    trials: list[Trial] = Field(default_factory=list, description="every candidate tried, in order")
    format: str | None = Field(None, description='"QDQ static" or "dynamic"')
    activations: str | None = Field(None, description="activation type")
    weights: str | None = Field(None, description="weight type")

    @property
    def withheld_reason(self) -> str | None:
        """Why the build withheld int8; None when it was published."""
        if self.status != "withheld":
            return None
        return self.reason or "no candidate within budget"


class Training(Block):
    """The training run the artifact was exported from (family-specific metrics are extras)."""

    config: dict[str, Any] = Field(default_factory=dict, description="the training Config, as a dict")
    best_epoch: int | None = Field(None, description="the epoch whose checkpoint was kept")
    train_seconds: float | None = Field(None, description="wall time of the training run")
    data_source: str | None = Field(None, description="where the training data came from")


class FileEntry(Block):
    """A file of the artifact folder; loading refuses the artifact when the checksum differs."""

    sha256: str = Field(description="hex digest of the file's bytes")
    bytes: int = Field(description="size")


class Vocabulary(Block):
    """tune: the characters of the model, one per token id, in `file` (a JSON list)."""

    file: str = Field(description="vocab.json, a file of the artifact")
    size: int | None = Field(None, description="characters (the logits' width)")
    unknown_characters: str | None = Field(None, description="what prompts and evaluation do with others")


class Generation(Block):
    """tune: what sampling needs besides the graphs."""

    end_of_tune: str = Field(description="generation stops when the text ends with it (a blank line)")
    default_prompt: str = Field(description="the prompt when a request has none")
    hidden_size: int = Field(description="the LSTM state's width (h and c are [1, batch, hidden_size])")


class Graph(Block):
    """A second graph's tensors (tune: the prompt graph)."""

    inputs: list[TensorSpec] = Field(description="what the graph takes")
    outputs: list[TensorSpec] = Field(description="what it gives")


class Fusions(Block):
    """text: the transformer optimizer's fused operators."""

    fused: dict[str, int] = Field(default_factory=dict, description="fused op type -> count")
    expected_attention: int | None = Field(None, description="attention blocks there should be (one per layer)")


class Manifest(Block):
    """manifest.json of one artifact version (schema version SCHEMA_VERSION)."""

    schema_version: int = Field(description="the manifest's format; see this module's docstring")
    name: str = Field(description="the served name, e.g. digits-cnn")
    version: str = Field(description="the artifact version: the folder name, a number")
    family: str = Field(description="image | tune | text (or a registered family's name)")
    task: str = Field(description="image-classification | text-generation | text-classification | ...")
    created_at: str | None = Field(None, description="UTC, ISO 8601")
    inputs: list[TensorSpec] = Field(description="what a caller sends (REST and v2)")
    outputs: list[TensorSpec] = Field(description="what a caller gets")
    prompt_graph: Graph | None = Field(None, description="tune: the prompt graph's tensors")
    vocabulary: Vocabulary | None = Field(None, description="tune: the characters")
    generation: Generation | None = Field(None, description="tune: sampling settings")
    model_inputs: list[TensorSpec] | None = Field(None, description="text: what the ONNX graphs take (token ids, mask)")
    model_outputs: list[TensorSpec] | None = Field(None, description="text: what they give (logits)")
    preprocessing: Preprocessing | None = Field(None, description="image and text: input to tensors")
    labels: list[str] | None = Field(None, description="class names, in the model's output order")
    variants: dict[str, Variant] = Field(description="variant name -> its file and measured quality")
    parity: Parity | None = Field(None, description="the export's ORT-against-PyTorch checks")
    fusions: Fusions | None = Field(None, description="text: operator fusions of fp32-opt")
    int8_accuracy_drop: float | None = Field(None, description="classifiers: fp32 - int8 test accuracy")
    pytorch_val_bits_per_char: float | None = Field(None, description="tune: PyTorch's validation bits/char")
    int8_bits_per_char_increase: float | None = Field(None, description="tune: int8 / fp32 validation bits/char - 1")
    int8_step_speedup: float | None = Field(None, description="tune: int8 / fp32 stepping speed at export time")
    quantization: Quantization | None = Field(None, description="the int8 search's record (schema 2)")
    baseline: dict[str, Any] | None = Field(None, description="text: the TF-IDF + logistic regression baseline")
    versions: dict[str, str] = Field(default_factory=dict, description="package versions at export time")
    training: Training | None = Field(None, description="the training run behind the artifact")
    files: dict[str, FileEntry] = Field(description="path in the folder -> sha256 and size (all but the manifest)")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value):
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not a served name: lowercase letters, digits and '-', "
                             "starting with a letter or digit")
        return value

    @field_validator("version")
    @classmethod
    def _digits(cls, value: str) -> str:
        if not VERSION.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not a version: digits only (it names the version folder)")
        return value

    @field_validator("files")
    @classmethod
    def _files_inside(cls, value: dict) -> dict:
        for relative in value:
            check_relative(relative, "files")
        return value

    @model_validator(mode="after")
    def _read_files_listed(self) -> Manifest:
        """Every file the model reads is inside the artifact and checksummed in `files`: a path
        with `..` or an absolute one would escape the folder, an unlisted one be read unverified."""
        for where, relative in self.model_files():
            check_relative(relative, where)
            if relative not in self.files:
                raise ValueError(f"{where} {relative!r} is not listed in `files`, so it would be read unverified")
        return self

    def model_files(self) -> list[tuple[str, str]]:
        """(field, relative path) of every file a runner, batch job or export reads."""
        found = []
        for name, variant in self.variants.items():
            found.append((f"variants.{name}.file", variant.file))
            if variant.prompt_file is not None:
                found.append((f"variants.{name}.prompt_file", variant.prompt_file))
        if self.preprocessing is not None and self.preprocessing.tokenizer is not None:
            found.append(("preprocessing.tokenizer", self.preprocessing.tokenizer))
        if self.vocabulary is not None:
            found.append(("vocabulary.file", self.vocabulary.file))
        return found

    @field_validator("schema_version")
    @classmethod
    def _current_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"is {value}; this model reads {SCHEMA_VERSION} (parse() migrates older ones)")
        return value

    @field_validator("family")
    @classmethod
    def _current_family_name(cls, value: str) -> str:
        if value in FAMILY_ALIASES:
            raise ValueError(f"{value!r} is a schema-1 name; schema {SCHEMA_VERSION} says {FAMILY_ALIASES[value]!r}")
        return value

    @model_validator(mode="after")
    def _family_parts(self) -> Manifest:
        """What the server needs of each built-in family, so a manifest without it fails at load."""
        need: list[str] = []
        pre = self.preprocessing
        if self.family == "image":
            if pre is None or None in (pre.height, pre.width, pre.scale, pre.mean, pre.std):
                need.append("preprocessing with height, width, scale, mean and std")
        elif self.family == "text":
            if pre is None or pre.tokenizer is None or pre.max_length is None:
                need.append("preprocessing with tokenizer and max_length")
        elif self.family == "tune":
            need += [part for part in ("vocabulary", "generation") if getattr(self, part) is None]
            need += [f"variants.{v}.prompt_file" for v, meta in self.variants.items() if meta.prompt_file is None]
        if self.family in ("image", "text") and not self.labels:
            need.append("labels")
        if need:
            raise ValueError(f"a {self.family} manifest needs {', '.join(need)}")
        return self


def migrate(data: dict[str, Any], where: str = "manifest") -> dict[str, Any]:
    """A manifest dict of any known schema version -> a new dict at SCHEMA_VERSION.

    1 -> 2: family aliases (cnn -> image, lstm -> tune, transformer -> text); a missing
    quantization block stays missing. A newer version than this edgestack knows is refused."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: a manifest is a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{where} has schema_version {version!r}; this edgestack reads 1 to {SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise ArtifactError(f"{where} has schema_version {version}, newer than this edgestack reads "
                            f"({SCHEMA_VERSION}): upgrade edgestack, or rebuild the artifact with this one")
    data = dict(data)
    if version == 1:
        family = data.get("family")
        data["family"] = FAMILY_ALIASES.get(family, family) if isinstance(family, str) else family
        data["schema_version"] = 2
    return data


def one_line(exc: ValidationError) -> str:
    """pydantic's report in one line: the first problem with where it is, and how many more."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "manifest"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {message}{more}"


def validate(data: dict[str, Any], where: str = "manifest") -> Manifest:
    """A dict at SCHEMA_VERSION -> Manifest; ArtifactError with a one-line reason if it is not one."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ArtifactError(f"{where} is not a valid manifest: {one_line(exc)}") from None


def parse(data: dict[str, Any], where: str = "manifest") -> Manifest:
    """A manifest dict of any known schema version -> Manifest (migrated, then validated)."""
    return validate(migrate(data, where), where)
