"""Image classifiers on the device: the bundle's side (files, command line, a Model).

Decoding, checks, preprocessing and top-k labels are the image family's processing
(edgestack/families/image.py), copied into every bundle beside this file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

try:  # inside a bundle: `edgestack bundle` copied the family's processing here
    from .families import image as processing
except ModuleNotFoundError as missing:  # in the source tree (any other missing module is a real error)
    if missing.name != f"{__package__}.families":
        raise
    from edgestack.families import image as processing

read_inputs, check_pixels, to_model_input = processing.read_inputs, processing.check_pixels, processing.to_model_input


# --------------------------------------------------------- what the bundle maker reads

CLI_HELP = ("classify images: .npy arrays ([H, W] or [N, H, W], 0..255), IDX files, PGM/PPM and 8-bit PNG "
            "(any format Pillow reads, and any size, when Pillow is installed)")
LATENCY_UNIT = "1 image"
API_EXAMPLE = 'model.predict_files(["image.png"])      # or model.classify(pixels uint8 [N, H, W], top_k=3)'


def graphs(manifest: dict, variant: str) -> dict[str, str]:
    """Bundle graph role -> the artifact file it comes from."""
    return {"model": manifest["variants"][variant]["file"]}


def bundle_files(manifest: dict) -> list[str]:
    return []  # labels and preprocessing travel in the manifest


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files, .npy arrays or IDX files")
    parser.add_argument("--top-k", type=int, default=3, help="how many labels to show per input")


class Model:
    """An image classifier bundle: `classify(pixels)` and `predict_files(paths)`."""

    def __init__(self, bundle_dir: Path, manifest: dict, sessions: dict):
        self.bundle_dir, self.manifest, self.session = Path(bundle_dir), manifest, sessions["model"]
        self.pre = manifest["preprocessing"]
        self.height, self.width, self.channels = processing.model_size(self.pre)
        self.labels = manifest["labels"]
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, pixels, batch: int = 256) -> np.ndarray:
        """pixels [N, H, W] (or [H, W]) 0..255 -> class probabilities float64 [N, classes]."""
        array = check_pixels(pixels, self.height, self.width, channels=self.channels)
        out = [processing.probabilities(self.session.run(None, {self.input_name: to_model_input(array[i:i + batch],
                                                                                                self.pre)})[0])
               for i in range(0, len(array), batch)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def classify(self, pixels, top_k: int = 3) -> list[dict]:
        return processing.classify(self.probabilities(pixels), self.labels, top_k)

    def predict_one(self, pixels) -> dict:
        """One image [H, W] -> its top label (the batch-1 path the benchmark times)."""
        return self.classify(pixels, top_k=1)[0]

    def predict_files(self, paths: list[str], top_k: int = 3) -> list[dict]:
        names, images, errors = read_inputs(paths, self.height, self.width, self.pre.get("dark_background", False),
                                            self.pre.get("drawn_layout"), self.channels)
        good = [i for i, image in enumerate(images) if image is not None]
        answers = iter(self.classify(np.stack([images[i] for i in good]), top_k) if good else [])
        return [{"input": name, **(next(answers) if image is not None else {"error": errors[name]})}
                for name, image in zip(names, images)]

    def run_cli(self, args) -> list[dict]:
        processing.check_top_k(args.top_k, self.labels)
        return self.predict_files(args.inputs, args.top_k)

    format_text = staticmethod(processing.format_result)


def answers(model: Model, inputs: dict) -> dict:
    """The golden check's answers (edge_runner/health.py): {"pixels": uint8 [N, H, W]} -> class probabilities."""
    return {"probabilities": model.probabilities(inputs["pixels"])}


def example_golden(manifest: dict) -> dict:
    """Golden inputs when no test images are at hand: a synthetic frame (see example_input)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return {"pixels": example_input(manifest, Path(tmp))[1][None]}


def example_input(manifest: dict, directory: Path) -> tuple[list[str], np.ndarray]:
    """A sample input file for benchmarks (a .npy frame, as a camera pipeline would hand over)."""
    height, width = manifest["preprocessing"]["height"], manifest["preprocessing"]["width"]
    y, x = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((y - height / 2) / (height / 4)) ** 2 + ((x - width / 2) / (width / 5)) ** 2))
    pixels = (255 * blob).astype(np.uint8)
    if (manifest["preprocessing"].get("channels") or 1) == 3:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    path = Path(directory) / "example.npy"
    np.save(path, pixels)
    return [str(path)], pixels
