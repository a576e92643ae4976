"""`edgestack import model.onnx --name NAME`: an ONNX graph edgestack did not train -> a verified artifact.

The steps, each failing with one line that says what is wrong (ImportRefused, a UsageError):

1. read: the file must parse as an ONNX ModelProto with a graph (external weight files are
   read from beside it and inlined: the artifact holds one self-contained file);
2. opsets: every operator-set the graph imports must be one this onnxruntime runs: ai.onnx
   from 7 (what ONNX Runtime guarantees) up to the newest it loads, ai.onnx.ml up to the newest
   it loads (found by asking onnxruntime itself, not from a table: `supported_opsets`);
3. the ONNX checker (onnx.checker.check_model);
4. inputs and outputs as ONNX Runtime sees them (names, element types, shapes: -1 for every
   dimension the graph leaves open). A non-tensor output (a sequence of maps: scikit-learn's
   ZipMap) is refused with the converter option that removes it;
5. a test run on inputs of the declared types, at two batch sizes when the first dimensions are
   open: every output must have its declared element type and rank, its fixed dimensions, and
   (for a batching model, Triton's rule: edgestack.families.generic.py) a first dimension that
   follows the batch. Outputs the graph gives no shape get theirs from these runs. A graph that
   fixes its first dimension is stated as unbatched, its shapes required exactly: nothing is
   guessed;
6. int8 (export/int8_search.py's search and record): static QDQ calibrated on `--calibration`
   rows, or dynamic int8 when the graph's weights sit in MatMul/Gemm/recurrent ops and no
   calibration data is given (dynamic int8 convolutions are slower than fp32: a graph with Conv
   nodes needs calibration data). With `--eval` labelled rows the search keeps the recipe
   within `--int8-budget` of fp32 on a validation half and a test half, or withholds int8; without
   them the int8 graph is kept as the variant `int8-unvalidated`, which no server or bundle picks
   by itself (the manifest's quantization record says int8 is withheld, and why;
   `edgestack serve --variant int8-unvalidated` serves it on purpose);
7. the artifact: model.fp32.onnx (the graph as given, byte for byte unless weights had to be
   inlined), the int8 graph, manifest.json with checksums (edgestack/artifact.py), the source
   file's sha256, producer and opsets, and `batching` (dynamic or fixed, and why); signed
   (model.sig, edgestack/signing.py) when EDGESTACK_SIGNING_KEY is set, as every build is.

A `--family image|text` import writes the same artifact with that family's manifest parts
(labels, preprocessing), so the family's own runner and REST endpoints serve it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgestack import artifact
from edgestack import v2protocol as v2
from edgestack.errors import UsageError
from edgestack.families import generic as processing
from export import int8_search
from export.onnx_utils import manifest_head, op_types, versions

FAMILY, TASK = "generic", "tensors"
MIN_OPSET = 7                      # ONNX Runtime guarantees ai.onnx opset 7 and above
DEFAULT_BUDGET = 0.01              # int8 may lose at most this much of the eval metric (accuracy: 1 point)
CALIBRATION_ROWS = 1000            # most calibration rows used
CALIBRATION_BATCH = 100            # rows per calibration batch (the histogram calibrators need equal batches)
WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention")
DYNAMIC_OPS = ("MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention")
UNVALIDATED = "int8-unvalidated"   # the int8 variant's name when no evaluation data checked it


class ImportRefused(UsageError):
    """The file cannot be imported as asked; the message (one line) says why."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# ---------------------------------------------------------------------------- 1-3: the file

def read_model(path: Path) -> onnx.ModelProto:
    """The file as an ONNX ModelProto with any external weights inlined; ImportRefused otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ImportRefused(f"{path.name} is not an ONNX model (it does not parse as one: {first_line(exc)})") from None
    if model.ir_version <= 0 or not model.opset_import or not model.graph.node or not model.graph.output:
        raise ImportRefused(f"{path.name} is not an ONNX model (no IR version, operator set or graph in it)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # noqa: BLE001 - OSError, or onnx's checker.ValidationError for a missing file
            raise ImportRefused(f"{path.name} keeps its weights in external files that cannot be read: "
                                f"{first_line(exc)}") from None
    return model


def _accepts(domain: str, version: int) -> bool:
    """Does this onnxruntime load a graph importing `domain` at `version`? (a one-node graph)"""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    imports = [helper.make_opsetid(domain, version)] + ([helper.make_opsetid("", MIN_OPSET)] if domain else [])
    probe = helper.make_model(graph, opset_imports=imports)
    probe.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return True
    except Exception:  # noqa: BLE001 - ORT refuses an opset it does not know with a plain failure
        return False


@functools.cache
def supported_opsets(domain: str) -> tuple[int, int]:
    """(oldest, newest) opset of `domain` this onnxruntime runs, asked of onnxruntime itself."""
    newest = onnx.defs.onnx_opset_version() + 4 if domain == "" else 16
    while newest > 1 and not _accepts(domain, newest):
        newest -= 1
    return (MIN_OPSET if domain == "" else 1), newest


def check_opsets(model: onnx.ModelProto, what: str) -> dict[str, int]:
    """The graph's operator sets, {domain: version}; ImportRefused naming one ORT does not run."""
    import onnxruntime as ort

    opsets = {}
    for entry in model.opset_import:
        domain = "" if entry.domain in ("", "ai.onnx") else entry.domain
        opsets[domain or "ai.onnx"] = entry.version
        if domain not in ("", "ai.onnx.ml"):
            continue  # other domains (com.microsoft, custom ops): the test run tells
        oldest, newest = supported_opsets(domain)
        if not oldest <= entry.version <= newest:
            raise ImportRefused(f"{what} uses opset {entry.version} of {domain or 'ai.onnx'}; onnxruntime "
                                f"{ort.__version__} runs {oldest} to {newest} (convert the model with "
                                f"onnx.version_converter, or export it again at a supported opset)")
    return opsets


def check_graph(model: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ImportRefused(f"{what} fails the ONNX checker: {first_line(exc)}") from None


# ---------------------------------------------------------------------------- 4-5: tensors, test run

NON_TENSOR_HINT = ("edgestack serves tensors; a scikit-learn model converted with ZipMap (a list of "
                   "{label: probability} maps) converts to a tensor with skl2onnx's options={'zipmap': False}")


def session_of(path: Path, what: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT's load failures are plain exceptions with a message
        raise ImportRefused(f"onnxruntime cannot load {what}: {first_line(exc)}") from None


def describe(args, kind: str, what: str) -> list[dict]:
    """ORT NodeArgs -> manifest tensors {"name", "dtype", "shape"} (shape None: the graph gives none)."""
    out = []
    for arg in args:
        row = v2.BY_ORT.get(arg.type)
        if row is None:
            hint = NON_TENSOR_HINT if not arg.type.startswith("tensor(") else "its element type has no v2 datatype"
            raise ImportRefused(f"{what}: {kind} {arg.name!r} is {arg.type}: {hint}")
        shape = None if arg.shape is None else [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape]
        out.append({"name": arg.name, "dtype": row.aliases[0], "shape": shape})
    return out


def declared_ranks(model: onnx.ModelProto) -> dict[str, bool]:
    """Output name -> whether the graph declares its shape at all."""
    return {o.name: o.type.tensor_type.HasField("shape") for o in model.graph.output}


@dataclass
class Tensors:
    inputs: list[dict]
    outputs: list[dict]
    batched: bool
    batching: dict            # the manifest's statement: dynamic or fixed, and why
    test_runs: list[dict] = field(default_factory=list)


def test_run(path: Path, model: onnx.ModelProto, what: str) -> Tensors:
    """Inputs and outputs as ONNX Runtime runs them, checked by running the graph (see the docstring)."""
    session = session_of(path, what)
    inputs = describe(session.get_inputs(), "input", what)
    outputs = describe(session.get_outputs(), "output", what)
    for spec in inputs:
        if spec["shape"] is None:
            raise ImportRefused(f"{what}: input {spec['name']!r} has no declared shape; export the model with "
                                "input shapes (an open dimension may stay open)")
    shaped = declared_ranks(model)
    open_first = all(s["shape"] and s["shape"][0] == -1 for s in inputs)
    sizes = (2, 3) if open_first else (2,)
    names = [o["name"] for o in outputs]
    results = []
    for size in sizes:
        feeds = processing.example_feeds(inputs, batch=size)
        try:
            arrays = session.run(names, feeds)
        except Exception as exc:  # noqa: BLE001
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            raise ImportRefused(f"{what}: the test run on inputs of the declared types {shapes} failed: "
                                f"{first_line(exc)}") from None
        results.append((size, dict(zip(names, arrays))))
    for spec in outputs:
        got = [np.asarray(r[spec["name"]]) for _, r in results]
        dtype = processing.dtype_of(spec["dtype"])
        for array in got:
            if (array.dtype == object) != (dtype == object) or (dtype != object and array.dtype != dtype):
                raise ImportRefused(f"{what}: output {spec['name']!r} is declared {spec['dtype']} but the test run "
                                    f"gave {array.dtype}")
        if spec["shape"] is None or (not shaped.get(spec["name"], True) and not spec["shape"]):
            first = got[0].shape
            spec["shape"] = [d if all(g.shape[i] == d for g in got) else -1 for i, d in enumerate(first)]
        for array in got:
            if array.ndim != len(spec["shape"]) or any(d not in (-1, a) for d, a in zip(spec["shape"], array.shape)):
                raise ImportRefused(f"{what}: output {spec['name']!r} is declared {spec['shape']} but the test run "
                                    f"gave {list(array.shape)}")
    batched = processing.supports_batching(inputs, outputs)
    if batched:
        for spec in outputs:
            rows = [(size, r[spec["name"]].shape[0]) for size, r in results]
            if any(size != n for size, n in rows):
                batched = False
                reason = (f"output {spec['name']!r} has an open first dimension that does not follow the batch "
                          f"(batches of {', '.join(str(s) for s, _ in rows)} gave {', '.join(str(n) for _, n in rows)} "
                          "rows): requests are run one at a time, never merged")
                break
        else:
            reason = ("every input and output has an open first dimension, and the test runs (batches of "
                      f"{', '.join(str(s) for s in sizes)}) gave as many rows: requests may be merged")
    else:
        fixed = [f"{s['name']} {s['shape']}" for s in [*inputs, *outputs] if not s["shape"] or s["shape"][0] != -1]
        reason = ("the graph fixes the first dimension of " + ", ".join(fixed) + ": served as declared, each "
                  "request must match those shapes exactly; export the model with a dynamic batch axis to batch")
    runs = [{"batch": size, "outputs": {k: list(np.shape(v)) for k, v in r.items()}} for size, r in results]
    return Tensors(inputs, outputs, batched, {"dynamic": batched, "why": reason}, runs)


# ---------------------------------------------------------------------------- 6: int8

def read_rows(path: Path | str, inputs: list[dict], what: str, *, labels_key: str | None = None
              ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """A .npy (one-input model) or .npz file of rows for calibration or evaluation, checked against
    the inputs; with `labels_key`, also that array (one label per row) from the .npz."""
    path = Path(path)
    if not path.is_file():
        raise ImportRefused(f"{what} {path}: no such file")
    labels = None
    if labels_key is not None:
        if path.suffix != ".npz":
            raise ImportRefused(f"{what} {path.name}: give a .npz file holding the input array(s) and {labels_key!r}")
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = sorted(archive.files)
                arrays = {k: archive[k] for k in names}
        except Exception as exc:  # noqa: BLE001 - zipfile and numpy raise several kinds for a damaged file
            raise ImportRefused(f"{what} {path.name} is not a readable .npz file: {first_line(exc)}") from None
        if labels_key not in arrays:
            raise ImportRefused(f"{what} {path.name} has no {labels_key!r} array (it has {names})")
        labels = arrays.pop(labels_key)
    else:
        try:
            arrays = processing.read_tensor_file(path, inputs)
        except ValueError as exc:
            raise ImportRefused(f"{what}: {exc}") from None
    try:
        feeds = processing.check_feeds(inputs, arrays, batched=True, model=f"the model ({what} {path.name})")
    except ValueError as exc:
        raise ImportRefused(f"{what} {path.name} does not match the model: {exc}") from None
    rows = len(next(iter(feeds.values())))
    if labels is not None and (labels.ndim != 1 or len(labels) != rows):
        raise ImportRefused(f"{what} {path.name}: {labels_key!r} must hold one label per row ({rows}), "
                            f"got shape {list(labels.shape)}")
    return feeds, labels


class _Calibration:
    """Calibration rows in equal batches, as ORT's calibrators read them."""

    def __init__(self, feeds: dict[str, np.ndarray]):
        rows = len(next(iter(feeds.values())))
        batch = min(CALIBRATION_BATCH, rows)
        whole = max(rows // batch, 1) * batch
        self.batches = [{k: v[i:i + batch] for k, v in feeds.items()} for i in range(0, whole, batch)]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def int8_mode(ops: dict[str, int], calibration: bool) -> tuple[str | None, str]:
    """("static" | "dynamic" | None, why)."""
    weights = {op: n for op, n in ops.items() if op in WEIGHT_OPS}
    if calibration:
        return "static", "static QDQ int8, calibrated on the --calibration rows"
    if not weights:
        return None, "no int8: the graph has no Conv/MatMul/Gemm/recurrent ops to quantize"
    if any(op in weights for op in ("Conv", "ConvTranspose")):
        return None, ("no int8: the graph has convolutions, which need static int8 calibrated on real inputs "
                      "(dynamic int8 convolutions run slower than fp32); give --calibration rows")
    return "dynamic", f"dynamic int8 (weights in {', '.join(sorted(weights))}; no calibration data needed)"


def quantize(mode: str, src: Path, dst: Path, settings: dict, calibration: dict | None) -> Path:
    """One int8 graph of `src` as `settings` say (7-bit weights: int8_search.PORTABLE)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    dst.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's generic advice lines (pre-processing, ...) are not for the user
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if mode == "dynamic":
                quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=settings["per_channel"],
                                 reduce_range=settings["reduce_range"], nodes_to_exclude=settings.get("exclude") or [],
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            else:
                method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[settings["method"]]
                # ORT's default op list less Softmax: onnxruntime 1.31 fails on a Softmax whose output
                # is not calibrated (a graph output behind an Identity, as skl2onnx writes it)
                ops = sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - {"Softmax"})
                quantize_static(str(src), str(dst), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=ops,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                                nodes_to_exclude=settings.get("exclude") or [], calibrate_method=method,
                                extra_options={"CalibPercentile": 99.999, "DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    for leftover in dst.parent.glob("*.onnx.data"):
        leftover.unlink()
    return dst


def base_candidates(mode: str, evaluated: bool) -> list[dict]:
    if mode == "dynamic":
        return [{"per_channel": True}, {"per_channel": False}] if evaluated else [{"per_channel": True}]
    methods = ("minmax", "percentile", "entropy") if evaluated else ("minmax",)
    return [{"method": m, "per_channel": True} for m in methods]


@dataclass
class Evaluation:
    """Labelled rows split into a validation and a test half (seeded), and the metric on them."""
    feeds: dict[str, np.ndarray]
    labels: np.ndarray
    output: str
    metric: str                          # "accuracy" | "-mean abs error"
    splits: dict[str, np.ndarray]
    scores: dict = field(default_factory=dict)  # (file, split) -> score, each measured once

    def score(self, path: Path, split: str) -> float:
        if (str(path), split) not in self.scores:
            self.scores[str(path), split] = self._score(path, split)
        return self.scores[str(path), split]

    def _score(self, path: Path, split: str) -> float:
        rows = self.splits[split]
        session = session_of(path, path.name)
        try:
            got = np.asarray(session.run([self.output], {k: v[rows] for k, v in self.feeds.items()})[0])
        except Exception as exc:  # noqa: BLE001 - ORT refuses values the graph cannot take (an id out of range, ...)
            raise ImportRefused(f"--eval: the model fails on the evaluation rows: {first_line(exc)}") from None
        want = self.labels[rows]
        if self.metric == "accuracy":
            predicted = got.argmax(axis=1) if got.ndim == 2 and got.dtype.kind == "f" else got.reshape(len(rows))
            return float(np.mean(predicted == want))
        return -float(np.mean(np.abs(got.reshape(len(rows)).astype(np.float64) - want)))


def evaluation(path: Path | str, tensors: Tensors, output: str | None, labels_key: str) -> Evaluation:
    if not tensors.batched:
        raise ImportRefused("--eval needs a model that batches (open first dimensions): this graph fixes them")
    feeds, labels = read_rows(path, tensors.inputs, "--eval", labels_key=labels_key)
    if len(labels) < 20:
        raise ImportRefused(f"--eval {Path(path).name}: {len(labels)} labelled rows; give at least 20 (half "
                            "choose the int8 recipe, half confirm it)")
    outputs = {o["name"]: o for o in tensors.outputs}
    if output is None:
        scores = [o for o in tensors.outputs if len(o["shape"]) == 2 and o["dtype"].startswith("float")]
        ids = [o for o in tensors.outputs if len(o["shape"]) == 1 and o["dtype"].startswith(("int", "uint"))]
        chosen = (scores or ids or tensors.outputs)[0]
    elif output not in outputs:
        raise ImportRefused(f"--eval-output {output!r}: the model's outputs are {sorted(outputs)}")
    else:
        chosen = outputs[output]
    metric = "accuracy" if labels.dtype.kind in "iub" else "-mean abs error"
    if metric == "accuracy" and not (len(chosen["shape"]) == 2 or chosen["dtype"].startswith(("int", "uint"))):
        raise ImportRefused(f"--eval: integer labels need a [batch, classes] score output or a [batch] class output; "
                            f"{chosen['name']!r} is {chosen['dtype']} {chosen['shape']} (pick one with --eval-output)")
    order = np.random.default_rng(0).permutation(len(labels))
    half = len(order) // 2
    return Evaluation(feeds, labels, chosen["name"], metric, {"val": np.sort(order[:half]), "test": np.sort(order[half:])})


def add_int8(staging: Path, fp32: Path, tensors: Tensors, *, name: str, calibration: str | None,
             evaluation_data: Evaluation | None, budget: float, say) -> tuple[dict, dict | None]:
    """Quantize as `int8_mode` decides; returns (variants to add, the manifest's quantization record)."""
    ops = op_types(fp32)
    calib = None
    if calibration is not None:
        calib, _ = read_rows(calibration, tensors.inputs, "--calibration")
        if not tensors.batched:
            raise ImportRefused("--calibration needs a model that batches (open first dimensions): this graph "
                                "fixes them")
        calib = {k: v[:CALIBRATION_ROWS] for k, v in calib.items()}
    mode, why = int8_mode(ops, calib is not None)
    say(f"[{name}] {why}")
    if mode is None:
        return {}, {"status": "withheld", "step": "withheld", "reason": why.removeprefix("no int8: ")}
    prepared = staging / "prepared.onnx"
    if mode == "static":
        from onnxruntime.quantization.shape_inference import quant_pre_process

        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the graph as it is
            without_shapes(fp32, prepared)
    else:
        without_shapes(fp32, prepared)
    fmt = {"format": "QDQ static" if mode == "static" else "dynamic",
           "activations": "uint8", "weights": "int8"}
    try:
        return quantize_and_check(staging, fp32, prepared, tensors, mode=mode, calib=calib, fmt=fmt, name=name,
                                  evaluation_data=evaluation_data, budget=budget, say=say)
    except Exception as exc:  # noqa: BLE001 - a failed int8 graph (quantizer, check, scoring) withholds int8
        reason = f"{fmt['format']} int8 failed on this graph: {type(exc).__name__}: {first_line(exc)}"
        say(f"[{name}] WARNING: int8 withheld: {reason}")
        return {}, {"status": "withheld", "step": "withheld", "reason": reason, **fmt}
    finally:
        prepared.unlink(missing_ok=True)
        shutil.rmtree(staging / "int8-search", ignore_errors=True)


def without_shapes(src: Path, dst: Path) -> None:
    """`src` without its intermediate value_info: the quantizer infers shapes again, and stale ones
    (torch's dynamo exporter records a Gemm weight's shape that dynamic int8 transposes) make it fail."""
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    onnx.save_model(model, str(dst))


def quantize_and_check(staging: Path, fp32: Path, prepared: Path, tensors: Tensors, *, mode: str, calib, fmt: dict,
                       name: str, evaluation_data, budget: float, say) -> tuple[dict, dict]:
    if evaluation_data is None:
        settings = {**base_candidates(mode, False)[0], **int8_search.PORTABLE}
        out = quantize(mode, prepared, staging / "model.int8.onnx", settings, calib)
        check_int8(out, tensors, name)
        say(f"[{name}] int8 kept as {UNVALIDATED!r}: no --eval data checked it, so no server picks it by itself")
        # "withheld" from serving: there is no `int8` variant, so servers and bundles take fp32 unless told
        record = {"status": "withheld", "step": "unvalidated", "portable": True, **fmt,
                  "reason": f"no evaluation data (--eval) compared the int8 graph with fp32: it is kept as the "
                            f"variant {UNVALIDATED}, served only when asked for (--variant {UNVALIDATED})",
                  "chosen": {"label": int8_search.settings_label(settings), "settings": settings}}
        return {UNVALIDATED: {"file": out.name, "op_types": op_types(out), "target": "cpu"}}, record
    ev = evaluation_data
    reference = {"val": ev.score(fp32, "val"), "test": ev.score(fp32, "test")}
    say(f"[{name}] fp32 {ev.metric} on --eval: validation {reference['val']:.4f}, test {reference['test']:.4f} "
        f"({len(ev.splits['val'])} + {len(ev.splits['test'])} rows)")
    result = int8_search.search(
        name=name, metric=ev.metric, reference=reference, budget=budget, workdir=staging / "int8-search",
        quantize=lambda settings, folder: [quantize(mode, prepared, folder / "model.int8.onnx", settings, calib)],
        score=lambda files, split: ev.score(files[0], split), base=base_candidates(mode, True),
        nodes=[n.name for n in onnx.load(str(prepared)).graph.node if n.op_type in WEIGHT_OPS][:8],
        drop=int8_search.absolute_drop if ev.metric == "accuracy" else int8_search.relative_increase, say=say)
    files = int8_search.adopt(result, staging, name=name, kept="fp32", say=say)
    record = {**result.record, **fmt}
    variants = {}
    if files:
        check_int8(files[0], tensors, name)
        chosen = result.chosen
        variants["int8"] = {"file": files[0].name, "op_types": op_types(files[0]), "target": "cpu",
                            "val_score": chosen.val, "test_score": chosen.test}
        if ev.metric == "accuracy":
            variants["int8"].update(val_accuracy=chosen.val, test_accuracy=chosen.test,
                                    test_size=len(ev.splits["test"]))
    return variants, record


def check_int8(path: Path, tensors: Tensors, name: str) -> None:
    """The int8 graph takes and gives the same tensors as fp32 (a quantizer bug must not ship)."""
    session = session_of(path, f"{name}'s int8 graph")
    feeds = processing.example_feeds(tensors.inputs, batch=2)
    outputs = session.run([o["name"] for o in tensors.outputs], feeds)
    for spec, array in zip(tensors.outputs, outputs):
        if array.ndim != len(spec["shape"]) or any(d not in (-1, a) for d, a in zip(spec["shape"], array.shape)):
            raise ImportRefused(f"{name}: the int8 graph's output {spec['name']!r} has shape {list(array.shape)}, "
                                f"fp32's is {spec['shape']}")


# ---------------------------------------------------------------------------- 7: the artifact

@dataclass
class ImportOptions:
    family: str = FAMILY                # generic | image | text
    labels: list[str] | None = None     # image/text: class names in output order
    preprocessing: dict | None = None   # image/text: the family's preprocessing block
    extra_files: dict[str, Path] = field(default_factory=dict)  # artifact name -> file (a tokenizer, ...)
    calibration: str | None = None
    eval: str | None = None
    eval_output: str | None = None
    eval_labels: str = "labels"
    budget: float = DEFAULT_BUDGET
    description: str = ""


def import_onnx(path: Path | str, name: str, options: ImportOptions | None = None, *, root: Path | None = None,
                source_extra: dict | None = None, parity: dict | None = None, progress: bool = True
                ) -> artifact.Artifact:
    """Check `path`, then publish it as a new version of `name` under `root` (see the docstring)."""
    options = options or ImportOptions()
    say = print if progress else (lambda *a, **k: None)
    path = Path(path)
    started = time.time()
    model = read_model(path)
    what = path.name
    opsets = check_opsets(model, what)
    check_graph(model, what)
    staging = artifact.fresh_version_dir(name, root)
    try:
        fp32 = staging / "model.fp32.onnx"
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(str(path), load_external_data=False)
               .graph.initializer):
            onnx.save_model(model, str(fp32), save_as_external_data=False)  # weights inlined: one file
        else:
            shutil.copyfile(path, fp32)  # byte for byte
        tensors = test_run(fp32, model, what)
        say(f"[{name}] {what}: {len(model.graph.node)} nodes, opsets "
            + ", ".join(f"{d} {v}" for d, v in opsets.items())
            + f"; inputs {fmt_tensors(tensors.inputs)}; outputs {fmt_tensors(tensors.outputs)}")
        say(f"[{name}] batching: {'dynamic' if tensors.batched else 'none'}: {tensors.batching['why']}")
        family_checks(options, tensors)
        ev = evaluation(options.eval, tensors, options.eval_output, options.eval_labels) if options.eval else None
        variants = {"fp32": {"file": fp32.name, "op_types": op_types(fp32), "target": "cpu"}}
        if ev is not None:
            variants["fp32"].update(val_score=ev.score(fp32, "val"), test_score=ev.score(fp32, "test"))
            if ev.metric == "accuracy":
                variants["fp32"].update(test_accuracy=variants["fp32"]["test_score"],
                                        test_size=len(ev.splits["test"]))
        int8_variants, record = add_int8(staging, fp32, tensors, name=name, calibration=options.calibration,
                                         evaluation_data=ev, budget=options.budget, say=say)
        variants.update(int8_variants)
        for relative, source in options.extra_files.items():
            shutil.copyfile(source, staging / relative)
        manifest = {
            **manifest_head(name, staging, options.family, family_task(options.family)),
            "description": options.description or f"imported from {what}",
            "inputs": tensors.inputs if options.family == FAMILY else family_inputs(options, tensors),
            "outputs": tensors.outputs if options.family != "text" else [
                {"name": "probabilities", "dtype": "float32", "shape": tensors.outputs[0]["shape"]}],
            **({"model_inputs": tensors.inputs, "model_outputs": tensors.outputs} if options.family == "text" else {}),
            **({"preprocessing": options.preprocessing} if options.preprocessing else {}),
            **({"labels": options.labels} if options.labels else {}),
            "variants": variants,
            **({"parity": parity} if parity else {}),
            **({"quantization": record} if record else {}),
            "batching": tensors.batching,
            "source": {"kind": "onnx", "file": what, "sha256": artifact.sha256_file(path), "bytes": path.stat().st_size,
                       "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
                       "ir_version": model.ir_version, "opsets": opsets, "test_runs": tensors.test_runs,
                       **({"eval": {"file": Path(options.eval).name, "metric": ev.metric, "output": ev.output,
                                    "rows": len(ev.labels)}} if ev else {}),
                       **({"calibration": Path(options.calibration).name} if options.calibration else {}),
                       **(source_extra or {})},
            "versions": versions(),
        }
        artifact.write_manifest(staging, manifest)
        published = artifact.load(artifact.publish(staging))  # signed first when EDGESTACK_SIGNING_KEY is set
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"[{name}] imported as v{published.version} in {time.time() - started:.1f}s: {published.path} "
        f"(variants: {', '.join(published.meta.variants)})")
    return published


def fmt_tensors(specs: list[dict]) -> str:
    return ", ".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in specs)


def family_task(family: str) -> str:
    return {FAMILY: TASK, "image": "image-classification", "text": "text-classification"}[family]


def family_checks(options: ImportOptions, tensors: Tensors) -> None:
    """--family image|text: the graph must be what that family's runner feeds and reads."""
    if options.family == FAMILY:
        return
    if not tensors.batched:
        raise ImportRefused(f"--family {options.family} needs a graph with a dynamic batch axis; this one is "
                            f"unbatched ({tensors.batching['why']})")
    scores = tensors.outputs[0]  # the family's runner applies softmax to it: logits, not probabilities
    if len(scores["shape"]) != 2 or not scores["dtype"].startswith("float"):
        raise ImportRefused(f"--family {options.family}: the first output must be class logits [batch, classes]; "
                            f"{scores['name']!r} is {scores['dtype']} {scores['shape']}")
    classes = scores["shape"][1]
    if options.labels is None:
        raise ImportRefused(f"--family {options.family} needs --labels (one class name per line, in the order of "
                            f"the output's {classes if classes > 0 else 'N'} columns)")
    if classes > 0 and len(options.labels) != classes:
        raise ImportRefused(f"--labels has {len(options.labels)} names but {scores['name']!r} gives {classes} scores")
    if options.family == "image":
        if len(tensors.outputs) != 1:
            raise ImportRefused(f"--family image takes a graph with one output (class logits); this one gives "
                                f"{fmt_tensors(tensors.outputs)}")
        spec = tensors.inputs[0]
        pre = options.preprocessing or {}
        if len(tensors.inputs) != 1 or len(spec["shape"]) != 4 or not spec["dtype"].startswith("float"):
            raise ImportRefused(f"--family image takes a graph with one float input [batch, channels, height, width]; "
                                f"this one takes {fmt_tensors(tensors.inputs)}")
        want = [pre.get("channels"), pre.get("height"), pre.get("width")]
        from edgestack.families import image

        try:
            image.check_channels(pre.get("channels"))  # what the family decodes uploads to
        except ValueError as exc:
            raise ImportRefused(f"--family image: input {spec['name']!r} takes {pre.get('channels')} channels, but "
                                f"{exc}: import the graph as its tensors") from None
        if any(d not in (-1, w) for d, w in zip(spec["shape"][1:], want)):
            raise ImportRefused(f"the image options give [channels, height, width] {want} but input "
                                f"{spec['name']!r} takes {spec['shape'][1:]}")
    else:
        names = {s["name"] for s in tensors.inputs}
        unknown = names - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in names:
            raise ImportRefused("--family text takes a graph whose inputs are input_ids [, attention_mask, "
                                f"token_type_ids] (a tokenizer's ids); this one takes {sorted(names)}")


def family_inputs(options: ImportOptions, tensors: Tensors) -> list[dict]:
    """What a caller sends to a family model: image pixels as the graph takes them; text as BYTES."""
    if options.family == "text":
        return [{"name": "text", "dtype": "bytes", "shape": [-1]}]
    return tensors.inputs
