"""`edgestack import --torch package.module:factory --weights model.safetensors --input-shape 3,32,32`.

A PyTorch module edgestack did not train becomes an artifact by the path every edgestack model
takes: the factory builds the module (a function or class called with no arguments), the
safetensors weights are loaded into it (strictly: every key present, none left over; never a
pickle), it is exported to ONNX with a dynamic batch axis (export/onnx_utils.export_module,
torch's dynamo exporter), ONNX Runtime's answers are compared with PyTorch's on inputs of
another batch size (the parity gate: |ORT - PyTorch| <= atol + rtol * |PyTorch| everywhere,
else the import fails), and the graph is then imported like any ONNX file
(export/onnx_import.py: checks, test run, int8, the verified artifact).

`--input-shape` is the shape of one item, without the batch axis (repeat it for a module
that takes several inputs); the batch axis is added in front and exported open.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgestack import artifact
from export.onnx_import import ImportOptions, ImportRefused, first_line, import_onnx

PARITY_ATOL, PARITY_RTOL = 1e-4, 1e-3
EXPORT_BATCH, PARITY_BATCH = 2, 5


def load_factory(spec: str):
    """'package.module:factory' -> the callable (the working directory is importable, as with python -m)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ImportRefused(f"--torch wants package.module:factory (a function or class that builds the "
                            f"module), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportRefused(f"--torch {spec}: cannot import {module_name!r}: {first_line(exc)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ImportRefused(f"--torch {spec}: {module_name} has no callable {attr!r}")
    return factory


def build_module(spec: str, weights: Path):
    """The factory's module with the safetensors weights loaded strictly, in eval mode."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        module = load_factory(spec)()
    except ImportRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's factory: say what it raised, in one line
        raise ImportRefused(f"--torch {spec}: calling the factory failed: {type(exc).__name__}: {first_line(exc)}"
                            ) from None
    if not isinstance(module, torch.nn.Module):
        raise ImportRefused(f"--torch {spec} returned {type(module).__name__}, not a torch.nn.Module")
    weights = Path(weights)
    if not weights.is_file():
        raise ImportRefused(f"--weights {weights}: no such file")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ImportRefused(f"--weights {weights.name} is not a safetensors file: {first_line(exc)}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ImportRefused(f"--weights {weights.name} does not fit the module: {detail[:300]}") from None
    return module.eval()


def example_inputs(shapes: list[list[int]], dtypes: list[str], batch: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for shape, dtype in zip(shapes, dtypes):
        full = [batch, *shape]
        if dtype.startswith(("int", "uint")):
            tensors.append(torch.randint(0, 10, full, generator=generator, dtype=getattr(torch, dtype)))
        else:
            tensors.append(torch.randn(full, generator=generator, dtype=getattr(torch, dtype)))
    return tuple(tensors)


def import_torch(spec: str, weights: Path | str, shapes: list[list[int]], name: str,
                 options: ImportOptions | None = None, *, dtypes: list[str] | None = None,
                 root: Path | None = None, progress: bool = True) -> artifact.Artifact:
    import torch

    from export.build import quiet_export_logs
    from export.onnx_utils import ParityError, check_parity, export_module

    say = print if progress else (lambda *a, **k: None)
    dtypes = dtypes or ["float32"] * len(shapes)
    if len(dtypes) == 1 and len(shapes) > 1:
        dtypes = dtypes * len(shapes)
    if len(dtypes) != len(shapes):
        raise ImportRefused(f"{len(shapes)} --input-shape but {len(dtypes)} --input-dtype; give one dtype, or one per input")
    for dtype in dtypes:
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ImportRefused(f"--input-dtype {dtype!r} is not a torch dtype (float32, int64, ...)")
    module = build_module(spec, Path(weights))
    example = example_inputs(shapes, dtypes, EXPORT_BATCH, seed=0)
    with torch.no_grad():
        try:
            out = module(*example)
        except Exception as exc:  # noqa: BLE001
            raise ImportRefused(f"--torch {spec}: the module fails on inputs of --input-shape "
                                f"{[[EXPORT_BATCH, *s] for s in shapes]}: {type(exc).__name__}: {first_line(exc)}") from None
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    input_names = ["input"] if len(shapes) == 1 else [f"input_{i}" for i in range(len(shapes))]
    output_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    quiet_export_logs()
    with tempfile.TemporaryDirectory(prefix="edgestack-import-") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        say(f"[{name}] exporting {spec} to ONNX (dynamic batch axis)")
        batch = torch.export.Dim("batch", min=1, max=4096)
        try:
            export_module(module, example, path, input_names=input_names, output_names=output_names,
                          dynamic_shapes=tuple({0: batch} for _ in shapes))
        except Exception as exc:  # noqa: BLE001 - torch.onnx's failures are long; the first line says which op
            raise ImportRefused(f"torch.onnx.export of {spec} failed: {type(exc).__name__}: {first_line(exc)}") from None
        sample = example_inputs(shapes, dtypes, PARITY_BATCH, seed=1)
        with torch.no_grad():
            expected = module(*sample)
        expected = [t.numpy() for t in (expected if isinstance(expected, (tuple, list)) else (expected,))]
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        actual = session.run(output_names, {n: t.numpy() for n, t in zip(input_names, sample)})
        parity = {}
        for out_name, want, got in zip(output_names, expected, actual):
            try:
                parity[out_name] = check_parity(want, np.asarray(got), atol=PARITY_ATOL, rtol=PARITY_RTOL,
                                                what=f"{name} fp32 {out_name} (batch {PARITY_BATCH})")
            except ParityError as exc:
                raise ParityError(f"{exc}; the import stops here", name) from None
        report = parity[output_names[0]] if len(parity) == 1 else {
            "passed": True, **{k: v for k, v in parity.items()}}
        say(f"[{name}] parity with PyTorch at batch {PARITY_BATCH}: max |ORT - PyTorch| "
            f"{max(p['max_abs_diff'] for p in parity.values()):.2e} (atol {PARITY_ATOL}, rtol {PARITY_RTOL})")
        source = {"kind": "pytorch", "file": Path(weights).name, "factory": spec,
                  "weights_sha256": artifact.sha256_file(Path(weights)),
                  "input_shapes": [[-1, *s] for s in shapes], "input_dtypes": dtypes}
        return import_onnx(path, name, options, root=root, source_extra=source, parity=report, progress=progress)
