"""Digits that no scanner made: 0-9 rendered from the fonts the machine has (Debian's
DejaVu family by default), at several stroke thicknesses, slants, sizes and positions.

An evaluation set for how digits-cnn copes with writing it did not learn from (a digit
drawn on a canvas is thicker, off-centre and differently sized than the 5,000 MNIST scans):

    .venv/bin/python -m training.data.font_digits OUT_DIR [--per-digit 300] [--seed 0]

writes OUT_DIR/t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (MNIST's IDX layout,
light ink on dark, 28x28), which `edgestack batch digits-cnn OUT_DIR/t10k-images-idx3-ubyte.gz ...`
and the IDX loaders read. Deterministic for a seed and a set of fonts.
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np

FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype"))


def fonts() -> list[Path]:
    """Every TrueType/OpenType font file installed, except symbol and maths fonts."""
    found = sorted(p for d in FONT_DIRS if d.is_dir() for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return [p for p in found if not any(word in p.name for word in ("Math", "Symbol", "Emoji"))]


def render(digit: int, font: Path, rng: np.random.Generator, canvas: int = 96) -> np.ndarray:
    """One digit, light on dark, [canvas, canvas] uint8: random size, stroke, slant and offset."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(40, 72))
    face = ImageFont.truetype(str(font), size)
    image = Image.new("L", (canvas, canvas), 0)
    stroke = int(rng.integers(0, 5))
    ImageDraw.Draw(image).text((canvas // 2 + int(rng.integers(-12, 13)), canvas // 2 + int(rng.integers(-12, 13))),
                               str(digit), fill=255, font=face, anchor="mm", stroke_width=stroke, stroke_fill=255)
    slant = float(rng.uniform(-0.35, 0.35))
    image = image.transform(image.size, Image.Transform.AFFINE, (1, slant, -slant * canvas / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def plain_resize(pixels: np.ndarray, size: int = 28) -> np.ndarray:
    """What an upload without MNIST-style layout gets: the whole canvas resized (LANCZOS)."""
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def make(per_digit: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(canvases uint8 [N, 96, 96], labels int64 [N]), every digit `per_digit` times over the fonts."""
    files = fonts()
    if not files:
        raise FileNotFoundError("no fonts under /usr/share/fonts: apt-get install fonts-dejavu-core")
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for digit in range(10):
        for i in range(per_digit):
            images.append(render(digit, files[i % len(files)], rng))
            labels.append(digit)
    return np.stack(images), np.asarray(labels, np.int64)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-digit", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from edgestack.families.image import mnist_style

    canvases, labels = make(args.per_digit, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_idx(args.out / "t10k-images-idx3-ubyte.gz", np.stack([mnist_style(c) for c in canvases]))
    write_idx(args.out / "t10k-labels-idx1-ubyte.gz", labels)
    write_idx(args.out / "plain-images-idx3-ubyte.gz", np.stack([plain_resize(c) for c in canvases]))
    print(f"{len(labels)} digits from {len(fonts())} fonts -> {args.out} (MNIST-style layout; plain-resized copy beside)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
