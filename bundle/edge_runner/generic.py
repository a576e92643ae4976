"""Imported graphs (the generic family) on the device: tensors from .npy/.npz files in, every output out.

The checks (names, element types, shapes, one batch size) and the file reading are the generic
family's processing (edgestack/families/generic.py), copied into the bundle; the graph is run
as the server runs it, with no pre- or post-processing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

try:  # inside a bundle: `edgestack bundle` copied the family's processing here
    from .families import generic as processing
except ModuleNotFoundError as missing:  # in the source tree (any other missing module is a real error)
    if missing.name != f"{__package__}.families":
        raise
    from edgestack.families import generic as processing

CLI_HELP = ("run the graph on tensor files: a .npy array (a one-input model) or a .npz archive with one array "
            "per input, named as the inputs; prints every output")
LATENCY_UNIT = "1 row"
API_EXAMPLE = 'model.run({"INPUT": array})        # -> {output name: array}; model.inputs lists the tensors'


def graphs(manifest: dict, variant: str) -> dict[str, str]:
    return {"model": manifest["variants"][variant]["file"]}


def bundle_files(manifest: dict) -> list[str]:
    return []  # the tensors travel in the manifest


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", help=".npy or .npz tensor files (each one request)")


class Model:
    """An imported graph: `run(feeds)` checks the tensors and returns every output by name."""

    def __init__(self, bundle_dir: Path, manifest: dict, sessions: dict):
        self.bundle_dir, self.manifest, self.session = Path(bundle_dir), manifest, sessions["model"]
        self.inputs, self.outputs = manifest["inputs"], manifest["outputs"]
        batching = manifest.get("batching") or {}
        self.batched = bool(batching.get("dynamic", processing.supports_batching(self.inputs, self.outputs)))
        self.output_names = [spec["name"] for spec in self.outputs]

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        checked = processing.check_feeds(self.inputs, feeds, batched=self.batched, model=self.manifest["name"])
        return dict(zip(self.output_names, self.session.run(self.output_names, checked)))

    def predict_one(self, feeds: dict) -> dict[str, np.ndarray]:
        return self.run(feeds)

    def run_cli(self, args) -> list[dict]:
        results = []
        for path in args.inputs:
            try:
                outputs = self.run(processing.read_tensor_file(path, self.inputs))
            except ValueError as exc:
                results.append({"input": path, "error": str(exc)})
                continue
            results.append({"input": path, "outputs": {name: np.asarray(a).tolist() if np.asarray(a).dtype != object
                                                       else processing.as_lists({name: np.asarray(a)[None]}, 0)[name]
                                                       for name, a in outputs.items()}})
        return results

    @staticmethod
    def format_text(result: dict) -> str:
        if "error" in result:
            return f"{result['input']}: error: {result['error']}"
        shown = "; ".join(f"{name} = {value}" for name, value in result["outputs"].items())
        return f"{result['input']}: {shown}"


def answers(model: Model, inputs: dict) -> dict:
    """The golden check's answers (edge_runner/health.py): the graph's feeds -> every output by name."""
    return {name: (value.astype(str) if value.dtype == object else value) for name, value in model.run(inputs).items()}


def example_golden(manifest: dict) -> dict:
    """Golden inputs: example feeds built from the inputs' names, types and shapes (2 rows when batched)."""
    return processing.example_feeds(manifest["inputs"], batch=2)


def latency_sample(inputs: dict) -> dict:
    """What predict_one takes for the health check's latency: the first row of every feed."""
    return {name: value[:1] for name, value in inputs.items()}


def example_input(manifest: dict, directory: Path) -> tuple[list[str], dict]:
    """A one-row request for benchmarks, written as a .npz file."""
    feeds = processing.example_feeds(manifest["inputs"], batch=1)
    path = Path(directory) / "example.npz"
    np.savez(path, **feeds)
    return [str(path)], feeds
