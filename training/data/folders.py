"""Your own images: a folder with one sub-folder per class, read as the server reads uploads.

    photos/
        bolt/   img001.jpg  img002.png ...
        nut/    ...
        washer/ ...

Every file with an image extension (PNG, JPEG, WebP, BMP, GIF, TIFF, PGM/PPM) in a class
folder is decoded by the image family's own `decode_image` (edgestack/families/image.py), the
function the server, batch jobs and bundles use, resized whole to the model's input: a model
sees a training image exactly as it will see an upload. A file that does not decode is skipped
and counted, never a crash; files with other extensions and hidden files are ignored. The
split is seeded and stratified (80/10/10 per class: training/data/splits.py).

Refused in one line (DataError, `edgestack` exits 1): a path that is not a folder, fewer than
two class folders, a class folder without a readable image, a class with fewer than three
(one per split).

`inspect()` reads only the headers (fast) and is what `edgestack new` shows; `suggest_shape()`
picks the input from it: RGB when any image has colour, grey otherwise; the side is the
median shorter side of the images, kept between 16 and 96 px (multiples of 4 from 32 on).
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgestack.errors import DataError
from edgestack.families import image as processing
from training.data.splits import stratified_indices

IMAGE_SUFFIXES = processing.IMAGE_SUFFIXES
MIN_PER_CLASS = 3          # one per split
FEW = 20                   # `edgestack new` warns below this many images in a class
IMBALANCE = 5.0            # ... and when the largest class has this many times the smallest's images


@dataclass
class FolderScan:
    root: Path
    classes: list[str]
    files: dict[str, list[Path]]           # class -> its image files, sorted
    ignored: int = 0                       # files without an image extension

    @property
    def counts(self) -> dict[str, int]:
        return {c: len(self.files[c]) for c in self.classes}

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for cls in self.classes:
            for path in self.files[cls]:
                stat = path.stat()
                digest.update(f"{cls}/{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan(root: Path) -> FolderScan:
    """The class folders and their image files (by extension); DataError when the layout is wrong."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: give a folder with one sub-folder of images per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    if len(class_dirs) < 2:
        found = f"only {class_dirs[0].name!r}" if class_dirs else "none"
        raise DataError(f"{root}: needs at least two class folders (one sub-folder of images per class); found {found}")
    files, ignored = {}, 0
    for class_dir in class_dirs:
        entries = sorted(p for p in class_dir.rglob("*") if p.is_file() and _visible(p))
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        ignored += len(entries) - len(images)
        if not images:
            raise DataError(f"{class_dir}: class {class_dir.name!r} has no image files "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}); remove the folder or add images")
        files[class_dir.name] = images
    return FolderScan(root, [d.name for d in class_dirs], files, ignored)


@dataclass
class Inspection:
    scan: FolderScan
    readable: dict[str, int]                        # class -> images whose header reads
    unreadable: list[tuple[str, str]]               # (file, why)
    sizes: list[tuple[int, int]]                    # (width, height) of every readable image
    colour: int                                     # readable images with colour in them
    modes: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.readable.values())

    def warnings(self) -> list[str]:
        """Classes with very few images, or a heavy imbalance, in words."""
        out = []
        few = {c: n for c, n in self.readable.items() if n < FEW}
        if few:
            out.append("very few images in " + ", ".join(f"{c!r} ({n})" for c, n in few.items())
                       + f": aim for {FEW} or more per class; the test split holds a tenth of each class")
        counts = [n for n in self.readable.values() if n]
        if counts and max(counts) >= IMBALANCE * min(counts):
            big = max(self.readable, key=self.readable.get)
            small = min(self.readable, key=self.readable.get)
            out.append(f"imbalanced classes: {big!r} has {self.readable[big]} images, {small!r} {self.readable[small]}; "
                       "set `class_weights = true` under [training] to weigh the loss, and read the per-class "
                       "recall in the quality report")
        return out


def _has_colour(img) -> bool:
    """An image in a colour mode whose channels actually differ (a grey photo saved as RGB is grey)."""
    if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return False
    rgb = np.asarray(img.convert("RGB").resize((32, 32)), dtype=np.int16)
    return bool(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max() > 12)


def inspect(root: Path, colour_sample: int = 50) -> Inspection:
    """Headers of every image (size, mode) and the colour of a sample per class; no full decode."""
    from PIL import Image, UnidentifiedImageError

    found = scan(root)
    readable, unreadable, sizes, modes, colour = {}, [], [], Counter(), 0
    for cls in found.classes:
        readable[cls] = 0
        for index, path in enumerate(found.files[cls]):
            try:
                with Image.open(path) as img:
                    sizes.append(img.size)
                    modes[img.mode] += 1
                    if index < colour_sample:
                        img.draft("RGB", (64, 64))
                        colour += _has_colour(img)
                readable[cls] += 1
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
                    Image.DecompressionBombWarning) as exc:
                unreadable.append((str(path), f"{type(exc).__name__}: {exc}"))
    if all(n == 0 for n in readable.values()):
        raise DataError(f"{found.root}: no image could be read ({len(unreadable)} unreadable files)")
    empty = [c for c, n in readable.items() if n == 0]
    if empty:
        raise DataError(f"{found.root / empty[0]}: class {empty[0]!r} has no readable image "
                        f"({found.counts[empty[0]]} unreadable files)")
    return Inspection(found, readable, unreadable, sizes, colour, modes)


def suggest_shape(info: Inspection) -> list[int]:
    """[channels, height, width] for a folder: RGB if any sampled image has colour, a square
    side from the median shorter side (16..96 px; multiples of 4 from 32 up)."""
    channels = 3 if info.colour else 1
    side = int(np.median([min(w, h) for w, h in info.sizes]))
    side = max(16, min(96, side))
    if side >= 32:
        side -= side % 4
    return [channels, side, side]


@dataclass
class FolderData:
    images: np.ndarray                     # uint8 [N, H, W] (grey) or [N, H, W, 3]
    labels: np.ndarray                     # int64 [N]
    classes: list[str]
    skipped: list[tuple[str, str]]         # (file, why): files that did not decode
    source: str


@functools.lru_cache(maxsize=2)
def _decode_all(root: str, fingerprint: str, height: int, width: int, channels: int) -> FolderData:
    found = scan(Path(root))
    images, labels, skipped = [], [], []
    for index, cls in enumerate(found.classes):
        for path in found.files[cls]:
            try:
                pixels = processing.decode_image(path.read_bytes(), height, width, dark_background=False,
                                                 what=str(path), channels=channels)
            except (ValueError, OSError) as exc:   # InputError is a ValueError: damaged, truncated, too large
                skipped.append((str(path), str(exc)))
                continue
            images.append(pixels)
            labels.append(index)
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=len(found.classes)) if len(labels) else np.zeros(len(found.classes), int)
    short = [(found.classes[i], int(n)) for i, n in enumerate(counts) if n < MIN_PER_CLASS]
    if short:
        cls, n = short[0]
        raise DataError(f"{found.root / cls}: class {cls!r} has {n} readable image{'s' * (n != 1)}; every class needs "
                        f"at least {MIN_PER_CLASS} (one for each of training, validation and test)"
                        + (f" ({len(skipped)} files could not be read)" if skipped else ""))
    shape = (0, height, width) if channels == 1 else (0, height, width, channels)
    stacked = np.stack(images) if images else np.zeros(shape, np.uint8)
    return FolderData(stacked, labels, found.classes, skipped,
                      f"{found.root} ({len(labels)} images in {len(found.classes)} classes"
                      + (f", {len(skipped)} unreadable skipped" if skipped else "") + ")")


def read_folder(root: Path, height: int, width: int, channels: int) -> FolderData:
    """Every readable image of the folder at the model's size (kept in memory for the next call
    with the same folder contents: a build trains, then exports from the same images)."""
    found = scan(root)
    return _decode_all(str(found.root.resolve()), found.fingerprint(), height, width, channels)


def split(data: FolderData, seed: int, fractions=(0.8, 0.1, 0.1)):
    """Seeded stratified train/val/test index arrays; the training indices in a seeded random
    order (so that its first N are a fair sample of every class)."""
    train, val, test = stratified_indices(data.labels, fractions, seed)
    train = train[np.random.default_rng(seed + 1).permutation(len(train))]
    return train, val, test

