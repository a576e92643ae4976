"""Artifacts -> a Triton Inference Server model repository (`edgestack export triton`).

    <repo>/<model>/config.pbtxt
    <repo>/<model>/labels.txt            classifiers: Triton's classification extension
    <repo>/<model>/tokenizer.json        text models: the tokenizer the graph's token ids come from
    <repo>/<model>/<version>/model.onnx  the artifact's ONNX graph, byte for byte

Every config is built from the ONNX graph itself (names, element types, dims; a leading
dynamic dimension shared by every input and output becomes Triton's batch dimension, by the
rules of edgestack/model_config.py, which our server's /config route follows too) and
then parsed into Triton's own `ModelConfig` protobuf (shipped in tritonclient's grpc
package) before it is written, so a config Triton would refuse is never written.

Platform onnxruntime_onnx; dynamic batching with a queue delay (like our server's
adaptive batcher); instance groups for GPU and/or CPU; on GPU the TensorRT execution
accelerator with FP16; a version policy. The same hints our server gives clients (task,
preprocessing, labels) ride along as the parameter `edgestack`.

Text models: the graph takes token ids (INT64), not text. Triton serves it as such:
clients tokenize (pre-tokenized inputs), or an ensemble puts a Python-backend tokenizer in
front (README, "Triton model repositories"). Needs onnx (the `train` extra); no torch.

`--backend python` writes a repository for Triton's Python backend instead (the one backend
the tritonserver of the nvidia-pytriton wheel ships; `make triton`), with the artifact's own
inputs and outputs (text models take BYTES text, as on our server's v2 route):

    <repo>/<model>/config.pbtxt                backend "python", KIND_CPU; max_batch_size 0, or with
                                               --max-batch N Triton's dynamic batching (one ORT call per merged set)
    <repo>/<model>/<version>/model.py          serving/triton_model.py: edgestack's runner
    <repo>/<model>/<version>/artifact/         the artifact folder (checksums verified at load)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from edgestack import artifact, registry
from edgestack import v2protocol as v2
from edgestack.errors import UsageError
from edgestack.families.generic import supports_batching
from edgestack.model_config import tensor_config

TARGETS = ("both", "gpu", "cpu")
BACKENDS = ("onnxruntime", "python")
# Copied as a file, never imported here: it runs inside Triton, on the serving layer.
PYTHON_MODEL = Path(__file__).resolve().parents[1] / "serving" / "triton_model.py"  # becomes <version>/model.py


def graph_io(path: Path) -> tuple[list[dict], list[dict], bool]:
    """ONNX graph -> (inputs, outputs, batched): each {"name", "datatype", "dims" (-1 = dynamic)}."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def describe(values) -> list[dict]:
        out = []
        for value in values:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            out.append({"name": value.name, "datatype": v2.BY_ONNX[tensor.elem_type], "dims": dims})
        return out

    inputs, outputs = describe(graph.input), describe(graph.output)
    batched = supports_batching(*([{"shape": t["dims"]} for t in tensors] for tensors in (inputs, outputs)))
    return inputs, outputs, batched


def manifest_io(manifest: dict) -> tuple[list[dict], list[dict]]:
    """The artifact's declared inputs and outputs (what our server's v2 metadata lists), as graph_io gives them."""
    def describe(entries: list[dict]) -> list[dict]:
        return [{"name": e["name"], "datatype": v2.datatype(e["dtype"]), "dims": list(e["shape"])} for e in entries]

    return describe(manifest["inputs"]), describe(manifest["outputs"])


def base_config(name: str, manifest: dict, inputs: list[dict], outputs: list[dict], *, batched: bool,
                keep_versions: int, labels_file: str | None) -> dict:
    """What every config has whatever runs the model: name, version policy, tensors (without the
    batch axis when batched; label_filename on a classifier's [labels] output), client hints."""
    labels = manifest.get("labels") or []

    def tensor(t: dict, is_output: bool) -> dict:
        # a [batch] tensor becomes dims [1] with an empty reshape, as Triton's auto-complete writes it
        entry = tensor_config({"name": t["name"], "dtype": t["datatype"].v2, "shape": t["dims"]}, batched)
        if is_output and labels_file and entry["dims"] == [len(labels)]:
            entry["label_filename"] = labels_file
        return entry

    return {
        "name": name,
        "version_policy": {"latest": {"num_versions": keep_versions}},
        "input": [tensor(t, False) for t in inputs],
        "output": [tensor(t, True) for t in outputs],
        "instance_group": [],
        "parameters": {"edgestack": {"string_value": json.dumps(v2.client_hints(manifest))}},
    }


def model_config(name: str, onnx_path: Path, manifest: dict, *, max_batch_size: int = 64,
                 queue_delay_us: int = 2000, target: str = "both", cpu_instances: int = 1,
                 gpu_instances: int = 1, threads: int | None = None, keep_versions: int = 1,
                 labels_file: str | None = None) -> dict:
    """The config as the JSON form of Triton's ModelConfig (what Triton's /config returns)."""
    if target not in TARGETS:
        raise UsageError(f"target must be one of {TARGETS}, got {target!r}")
    inputs, outputs, batched = graph_io(onnx_path)
    config = base_config(name, manifest, inputs, outputs, batched=batched, keep_versions=keep_versions,
                         labels_file=labels_file)
    config.update(platform="onnxruntime_onnx", max_batch_size=max_batch_size if batched else 0)
    if batched:
        preferred = [b for b in (8, 16, 32) if b <= max_batch_size]
        config["dynamic_batching"] = {"max_queue_delay_microseconds": queue_delay_us,
                                      **({"preferred_batch_size": preferred} if preferred else {})}
    if target in ("both", "gpu"):
        config["instance_group"].append({"name": f"{name}-gpu", "kind": "KIND_GPU", "count": gpu_instances})
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [
            {"name": "tensorrt", "parameters": {"precision_mode": "FP16",
                                                "max_workspace_size_bytes": str(1 << 30),
                                                "trt_engine_cache_enable": "1"}}]}}
    if target in ("both", "cpu"):
        config["instance_group"].append({"name": f"{name}-cpu", "kind": "KIND_CPU", "count": cpu_instances})
    if threads:
        config["parameters"]["intra_op_thread_count"] = {"string_value": str(threads)}
    return config


def python_model_config(name: str, manifest: dict, *, variant: str = "fp32", target: str = "cpu",
                        cpu_instances: int = 1, threads: int | None = None, keep_versions: int = 1,
                        max_batch_size: int = 0, queue_delay_us: int = 0) -> dict:
    """The config of a Python-backend model running edgestack's own runner on the artifact.

    The tensors are the manifest's (text models: BYTES text, tokenized by the runner). model.py
    reads `variant` and `threads`. max_batch_size 0 (the default): full shapes, no batching,
    the runner takes any batch the client sends and Triton passes each request through as it
    came. max_batch_size > 0, for a model whose every tensor has a leading batch dimension:
    Triton's dynamic batcher merges requests up to that many rows (waiting at most
    `queue_delay_us` for company; 0 = as our server's batcher: never), without preferred sizes
    (Triton then sends the largest batch it can), and model.py runs each merged set as one ORT
    call. Dims then leave out the batch dimension; a [batch] tensor (a text model's texts) is
    dims [1] with an empty reshape, which clients send as [n, 1] (Triton's rule for such tensors;
    our server takes [n] and [n, 1] alike).
    """
    if target != "cpu":
        raise UsageError(f"the python backend runs edgestack's runner on CPU: use --target cpu, not {target!r}")
    if max_batch_size < 0 or queue_delay_us < 0:
        raise UsageError(f"max_batch_size and queue_delay_us must be >= 0, got {max_batch_size} and {queue_delay_us}")
    inputs, outputs = manifest_io(manifest)
    batched = max_batch_size > 0 and supports_batching(manifest["inputs"], manifest["outputs"])
    config = base_config(name, manifest, inputs, outputs, batched=batched, keep_versions=keep_versions,
                         labels_file=None)
    config.update(backend="python", max_batch_size=max_batch_size if batched else 0)
    if batched:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": queue_delay_us}
    config["instance_group"].append({"name": f"{name}-cpu", "kind": "KIND_CPU", "count": cpu_instances})
    config["parameters"]["variant"] = {"string_value": variant}
    if threads:
        config["parameters"]["threads"] = {"string_value": str(threads)}
    return config


def to_pbtxt(config: dict) -> str:
    """JSON config -> protobuf text, via Triton's ModelConfig (refuses unknown fields and enums)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)


def write_model(repo: Path, art: artifact.Artifact, *, variant: str = "fp32", backend: str = "onnxruntime",
                **options) -> Path:
    """One model version into the repository; the config describes that version's graph
    (onnxruntime) or the artifact's declared tensors (python)."""
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {BACKENDS}, got {backend!r}")
    source = art.variant_path(variant)
    model_dir = Path(repo) / art.name
    version_dir = model_dir / art.version
    version_dir.mkdir(parents=True, exist_ok=True)
    if backend == "python":
        config = python_model_config(art.name, art.manifest, variant=variant, **options)
        shutil.copyfile(PYTHON_MODEL, version_dir / "model.py")
        shutil.rmtree(version_dir / "artifact", ignore_errors=True)
        shutil.copytree(art.path, version_dir / "artifact")  # model.py verifies every checksum when it loads
    else:
        shutil.copyfile(source, version_dir / "model.onnx")
        external = source.with_name(source.name + ".data")  # weights kept beside the graph, under their own name
        if external.is_file():
            shutil.copyfile(external, version_dir / external.name)
        tokenizer = art.meta.preprocessing.tokenizer if art.meta.preprocessing else None
        if tokenizer and art.file(tokenizer).is_file():  # text models: for clients (or a tokenizer model) to use
            shutil.copyfile(art.file(tokenizer), model_dir / Path(tokenizer).name)
        labels = art.meta.labels
        if labels:
            (model_dir / "labels.txt").write_text("\n".join(labels) + "\n")
        config = model_config(art.name, version_dir / "model.onnx", art.manifest,
                              labels_file="labels.txt" if labels else None, **options)
    (model_dir / "config.pbtxt").write_text(to_pbtxt(config))
    return model_dir


def export_repository(repo: Path, names: list[str], *, all_versions: bool = False, variant: str = "fp32",
                      root: Path | None = None, **options) -> list[Path]:
    written = []
    for name in names:
        registry.get(name)
        base = (root or artifact.default_root()) / name
        if all_versions and base.is_dir():
            versions = sorted((p for p in base.iterdir() if p.name.isdigit() and (p / artifact.MANIFEST).is_file()),
                              key=lambda p: int(p.name))
            arts = [artifact.load(p) for p in versions]
        else:
            arts = [artifact.load_latest(name, root)]
        if not arts:
            raise artifact.ArtifactError(f"no artifact for {name!r}; build it with `edgestack build {name}`")
        for art in arts:
            model_dir = write_model(repo, art, variant=variant, **options)
        written.append(model_dir)
    return written


def serve_repository(repo: Path, port: int) -> int:
    """Run the local tritonserver (`make triton`) on `repo` until interrupted (Ctrl-C or SIGTERM)."""
    import signal
    import sys

    from edgestack.serverproc import running_triton

    # SIGTERM (docker stop, kill) would end this process at once and leave tritonserver running:
    # exit through the context instead, which stops it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log = Path(repo).resolve().parent / f"{Path(repo).name}.tritonserver.log"
    started = time.perf_counter()
    with running_triton(repo, port=port, host="0.0.0.0", log_path=log) as (url, proc):
        print(f"tritonserver ready at {url} in {time.perf_counter() - started:.1f} s (log: {log}); Ctrl-C stops it")
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return 0
