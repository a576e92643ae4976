"""Batch adapter of the CNN image classifiers: a folder of images, an IDX file or a .npy array.

Decoding and preprocessing are the image family's processing (edgestack/families/image.py),
which follow the server exactly (grey, LANCZOS resize, dark-on-light inversion, 0..255
scaling), so a batch job, the server and a device agree on the same pixels.

Rows: key, index, label, label_index, probability (of the label), probabilities (every class,
in the manifest's label order). An image that cannot be decoded, or an array item outside
0..255, becomes an error row with the reason; the job goes on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from batch.adapter import BatchAdapter, Item, Source, error_row, file_fingerprint
from edgestack.errors import UsageError
from edgestack.families import image as image_processing
from edgestack.manifest import Manifest


class FolderSource(Source):
    """Every image file under a folder (recursively, by extension), sorted by relative path."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        files = sorted((p for p in self.folder.rglob("*") if p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(self.folder).parts)),
                       key=lambda p: str(p.relative_to(self.folder)))
        self.files = [str(p.relative_to(self.folder)) for p in files if p.suffix.lower() in image_processing.IMAGE_SUFFIXES]
        self.skipped = [str(p.relative_to(self.folder)) for p in files if p.suffix.lower() not in image_processing.IMAGE_SUFFIXES]
        listing = hashlib.sha256()
        for relative in self.files:
            stat = (self.folder / relative).stat()
            listing.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        self._fingerprint = {"folder": str(self.folder), "files": len(self.files), "listing_sha256": listing.hexdigest()}

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> dict:
        return self._fingerprint

    def read(self, start: int, stop: int) -> list[Item]:
        items = []
        for index in range(start, stop):
            relative = self.files[index]
            try:
                items.append(Item(index, relative, (self.folder / relative).read_bytes()))
            except OSError as exc:
                items.append(Item(index, relative, None, f"cannot read file: {exc.strerror or exc}"))
        return items

    def describe(self) -> str:
        extra = f" ({len(self.skipped)} other files skipped: not image extensions)" if self.skipped else ""
        return f"{len(self.files)} image files under {self.folder}{extra}"


class ArraySource(Source):
    """An IDX file (MNIST layout, optionally .gz) or a .npy array of images [N, H, W]."""

    def __init__(self, path: Path, height: int, width: int, channels: int = 1):
        self.path = Path(path).resolve()
        self.name = self.path.name
        self.channels = channels
        array = self._shaped(self._load())
        want = (height, width) if channels == 1 else (height, width, channels)
        if array.shape[1:] != want:
            expected = (f"[N, {height}, {width}] (or [N, 1, {height}, {width}])" if channels == 1 else
                        f"[N, {height}, {width}, {channels}] (or [N, {channels}, {height}, {width}])")
            raise UsageError(f"{self.path}: images of shape {list(array.shape)}; this model takes {expected}")
        self.count = len(array)
        self._array = None  # loaded again lazily in each worker

    def _load(self) -> np.ndarray:
        if self.path.suffix == ".npy":
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        return image_processing.read_idx(self.path)

    def __getstate__(self):
        return {**self.__dict__, "_array": None}

    def _shaped(self, array: np.ndarray) -> np.ndarray:
        """[N, 1, H, W] -> [N, H, W]; RGB [N, 3, H, W] -> [N, H, W, 3]."""
        if array.ndim == 4 and self.channels == 1 and array.shape[1] == 1:
            return array[:, 0]
        if array.ndim == 4 and self.channels == 3 and array.shape[1] == 3 and array.shape[-1] != 3:
            return array.transpose(0, 2, 3, 1)
        return array

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self._shaped(self._load())
        return self._array

    def __len__(self) -> int:
        return self.count

    def fingerprint(self) -> dict:
        return {**file_fingerprint(self.path), "items": self.count}

    def read(self, start: int, stop: int) -> list[Item]:
        block = np.asarray(self.array[start:stop])
        return [Item(start + i, f"{self.name}[{start + i}]", block[i]) for i in range(len(block))]

    def describe(self) -> str:
        return f"{self.count} images in {self.path}"


class ImageBatch(BatchAdapter):
    @property
    def pre(self) -> dict:
        """The preprocessing as the image family's processing takes it (a dict)."""
        return self.manifest.preprocessing.to_dict()

    @classmethod
    def open_source(cls, path: str, manifest: Manifest, options: dict) -> Source:
        pre = manifest.preprocessing
        p = Path(path)
        if p.is_dir():
            return FolderSource(p)
        if not p.is_file():
            raise FileNotFoundError(f"input {path} does not exist")
        if p.suffix == ".npy" or image_processing.is_idx(p):
            return ArraySource(p, pre.height, pre.width, pre.channels or 1)
        raise UsageError(f"input {path}: give a folder of images, an IDX file (*-idx3-ubyte[.gz]) or a .npy "
                         "array [N, H, W] of 0..255 intensities")

    def schema(self):
        import pyarrow as pa

        labels = self.manifest.labels
        return pa.schema([("key", pa.string()), ("index", pa.int64()), ("label", pa.string()),
                          ("label_index", pa.int32()), ("probability", pa.float32()),
                          ("probabilities", pa.list_(pa.float32(), len(labels)))],
                         metadata={"labels": json.dumps(labels), "model": self.manifest.name,
                                   "version": self.manifest.version})

    def _decode(self, items: list[Item]) -> tuple[list[Item], list[np.ndarray], list[dict]]:
        """Items -> the usable ones with their pixels [H, W] (RGB: [H, W, 3]), and an error row for each other one."""
        pre = self.manifest.preprocessing
        height, width = pre.height, pre.width
        good, pixels, errors = [], [], []
        arrays = [item for item in items if not isinstance(item.payload, bytes)]
        if arrays:  # array inputs: checked all at once (finite, 0..255), not image by image
            block = np.stack([np.asarray(item.payload) for item in arrays]).astype(np.float32)
            pixel_axes = tuple(range(1, block.ndim))  # (1, 2) grey, (1, 2, 3) RGB
            finite = np.isfinite(block).all(axis=pixel_axes)
            in_range = ((np.nan_to_num(block, nan=-1).min(axis=pixel_axes) >= 0)
                        & (np.nan_to_num(block).max(axis=pixel_axes) <= 255))
            for item, image, ok_finite, ok_range in zip(arrays, block, finite, in_range):
                if ok_finite and ok_range:
                    good.append(item)
                    pixels.append(image)
                else:
                    errors.append(error_row(item, "pixels must be finite intensities in 0..255"))
        for item in items:
            if isinstance(item.payload, bytes):
                try:
                    pixels.append(image_processing.decode_image(item.payload, height, width,
                                                          dark_background=pre.dark_background,
                                                          what="file", layout=pre.drawn_layout,
                                                          channels=pre.channels or 1))
                    good.append(item)
                except (ValueError, OSError) as exc:
                    errors.append(error_row(item, str(exc)))
        return good, pixels, errors

    def process(self, items: list[Item]) -> tuple[list[dict], list[dict]]:
        good, pixels, errors = self._decode(items)
        labels, pre = self.manifest.labels, self.pre
        input_name = self.manifest.inputs[0].name
        rows = []
        for begin in range(0, len(good), self.batch_size):
            block = np.stack(pixels[begin:begin + self.batch_size]).astype(np.float32)
            (logits,) = self.run_model({input_name: image_processing.to_model_input(block, pre)})[:1]
            probs = image_processing.probabilities(logits)
            best = probs.argmax(axis=1)
            for item, row, top in zip(good[begin:begin + self.batch_size], probs, best):
                rows.append({"key": item.key, "index": item.index, "label": labels[top], "label_index": int(top),
                             "probability": float(row[top]), "probabilities": row.astype(np.float32).tolist()})
        rows.sort(key=lambda r: r["index"])
        return rows, errors
