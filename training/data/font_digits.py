"""Digits that no scanner made: 0-9 rendered from the fonts the machine has (Debian's
DejaVu family by default), at several stroke thicknesses, slants, sizes and positions.

An evaluation set for how digits-cnn copes with writing it did not learn from (a digit
drawn on a canvas is thicker, off-centre and differently sized than the 5,000 MNIST scans):

    .venv/bin/python -m training.data.font_digits OUT_DIR [--per-digit 300] [--seed 0]

writes OUT_DIR/t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (MNIST's IDX layout,
light ink on dark, 28x28), which `edgestack batch digits-cnn OUT_DIR/t10k-images-idx3-ubyte.gz ...`
and the IDX loaders read. Deterministic for a seed and a set of fonts. `--score` then prints
the accuracy of the built digits-cnn (every CPU variant, ONNX Runtime; EDGESTACK_ARTIFACTS
picks the artifacts folder) on both layouts.
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np

FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype"))


# The evaluation set's faces. Training may render digits from every other installed font
# (training_fonts()), so the evaluation stays on faces the model never saw.
EVAL_FAMILY = "DejaVu"
NOT_DIGITS = ("Math", "Symbol", "Emoji", "D050000L", "Dingbat")  # faces without plain digits


def installed_fonts() -> list[Path]:
    """Every TrueType/OpenType font file installed, except symbol, dingbat and maths fonts."""
    found = sorted(p for d in FONT_DIRS if d.is_dir() for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return [p for p in found if not any(word in p.name for word in NOT_DIGITS)]


def fonts() -> list[Path]:
    """The evaluation set's fonts: the DejaVu family (Debian's fonts-dejavu-core and -extra)."""
    return [p for p in installed_fonts() if p.name.startswith(EVAL_FAMILY)]


def training_fonts() -> list[Path]:
    """Fonts other than the evaluation's (fonts-liberation2, fonts-freefont-ttf, fonts-urw-base35
    here, installed by scripts/install-system-data.sh)."""
    return [p for p in installed_fonts() if not p.name.startswith(EVAL_FAMILY)]


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


def make(per_digit: int = 300, seed: int = 0, files: list[Path] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(canvases uint8 [N, 96, 96], labels int64 [N]), every digit `per_digit` times over the
    fonts (default: the evaluation's)."""
    files = fonts() if files is None else files
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


def score(images: np.ndarray, labels: np.ndarray, root: Path | None = None) -> dict[str, float]:
    """Accuracy of the latest digits-cnn artifact's CPU variants on (images, labels)."""
    from edgestack import artifact
    from edgestack.families.image import to_model_input
    from edgestack.runtime import open_session

    art = artifact.load_latest("digits-cnn", root)
    pre, input_name = art.manifest["preprocessing"], art.manifest["inputs"][0]["name"]
    accuracy = {}
    for variant, meta in art.manifest["variants"].items():
        if meta.get("target") != "cpu":
            continue
        session = open_session(art.path / meta["file"], device="cpu")
        logits = np.concatenate([session.run({input_name: to_model_input(images[i:i + 500].astype(np.float32), pre)})[0]
                                 for i in range(0, len(images), 500)])
        accuracy[variant] = float((logits.argmax(1) == labels).mean())
    return accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-digit", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", action="store_true", help="then score the built digits-cnn on the set")
    args = parser.parse_args()
    from edgestack.families.image import mnist_style

    canvases, labels = make(args.per_digit, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_idx(args.out / "t10k-images-idx3-ubyte.gz", np.stack([mnist_style(c) for c in canvases]))
    write_idx(args.out / "t10k-labels-idx1-ubyte.gz", labels)
    write_idx(args.out / "plain-images-idx3-ubyte.gz", np.stack([plain_resize(c) for c in canvases]))
    print(f"{len(labels)} digits from {len(fonts())} fonts -> {args.out} (MNIST-style layout; plain-resized copy beside)")
    if args.score:
        from edgestack.families.image import read_idx

        for layout, stem in (("mnist_style", "t10k"), ("plain resize", "plain")):
            accuracy = score(read_idx(args.out / f"{stem}-images-idx3-ubyte.gz"), labels)
            print(f"digits-cnn, {layout}: " + ", ".join(f"{v} {a:.2%}" for v, a in accuracy.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
