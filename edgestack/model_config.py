"""Triton's model configuration of a served model, completed from its tensors as Triton does.

`GET /v2/models/{m}[/versions/{v}]/config` (REST) and `ModelConfig` (gRPC) answer with the
JSON form of Triton's `ModelConfig` protobuf, the model-configuration extension of the
protocol. Our models have no config.pbtxt: like Triton given an ONNX model without one, the
config is completed from the model's inputs and outputs (the manifest's, which for an
imported graph are the graph's own), by the rules of Triton's ONNX Runtime backend
(onnxruntime_backend, src/onnxruntime.cc: AutoCompleteMaxBatch and AutoCompleteIO):

- the model batches when every input and output has rank >= 1 and an open first dimension
  (-1). Then `max_batch_size` is set (Triton: its --backend-config default-max-batch-size,
  4; here: the server's own most rows per ORT call, EDGESTACK_MAX_BATCH) and, when above 1,
  `dynamic_batching` is turned on (here with the server's EDGESTACK_MAX_WAIT_MS as
  `max_queue_delay_microseconds`);
- otherwise `max_batch_size` is 0 and every tensor's `dims` is its full shape: a graph that
  fixes its first dimension (say to 1) is stated as such, never taken for a batch axis;
- a batching model's `dims` leave out the batch dimension; a tensor that has no other
  dimension gets `dims: [1]` and `reshape: {shape: []}`, as Triton writes it.

Core layer: no web framework, no onnx, no onnxruntime.
"""

from __future__ import annotations

from edgestack import v2protocol as v2
from edgestack.families.generic import supports_batching


def tensor_config(spec: dict, batched: bool) -> dict:
    """One manifest tensor ({"name", "dtype", "shape"}) as a ModelInput/ModelOutput JSON."""
    dims = list(spec["shape"][1:] if batched else spec["shape"])
    entry = {"name": spec["name"], "data_type": v2.datatype(spec["dtype"]).triton, "dims": dims or [1]}
    if not dims and batched:
        entry["reshape"] = {"shape": []}
    return entry


def autocomplete(name: str, inputs: list[dict], outputs: list[dict], *, max_batch_size: int,
                 max_queue_delay_us: int = 0, instance_kind: str = "KIND_CPU", versions: int = 1,
                 parameters: dict[str, str] | None = None, platform: str = "onnxruntime_onnx",
                 backend: str = "onnxruntime") -> dict:
    """The completed config (JSON form of Triton's ModelConfig). `max_batch_size`: what the server
    batches at most (used only when the model batches); `parameters`: string values."""
    batched = supports_batching(inputs, outputs)
    config = {"name": name, "platform": platform, "backend": backend,
              "version_policy": {"latest": {"num_versions": versions}},
              "max_batch_size": max_batch_size if batched else 0,
              "input": [tensor_config(spec, batched) for spec in inputs],
              "output": [tensor_config(spec, batched) for spec in outputs]}
    if batched and max_batch_size > 1:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": int(max_queue_delay_us)}
    config["instance_group"] = [{"name": f"{name}_0", "kind": instance_kind, "count": 1}]
    config["parameters"] = {key: {"string_value": str(value)} for key, value in (parameters or {}).items()}
    return config
