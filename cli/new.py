"""`edgestack new FAMILY NAME --data PATH`: look at your data, write models/NAME.toml, say what to run next.

    edgestack new image parts --data photos/          one sub-folder of images per class
    edgestack new text tickets --data tickets.csv     CSV/TSV (text,label), JSONL, or <label>/*.txt folders
    edgestack new tune reels --data tunes/            a folder of .abc files

It reads the data as the build will (classes from sub-folder names or the label column, image
size and colour, counts per class), warns about a class with very few examples or a heavy
imbalance (and turns on class weights for the latter), writes the spec (edgestack/specs.py)
into EDGESTACK_MODELS_DIR (else models/), and prints the next command. Bad data, or a name
that is taken by a spec or a built model, is refused in one line (exit 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgestack import registry, specs
from edgestack.errors import DataError

FAMILIES = ("image", "text", "tune")


def _image(args, spec: dict) -> list[str]:
    from training.data import folders
    from training.image_nets import lite0_available

    info = folders.inspect(Path(args.data))
    shape = [int(x) for x in args.shape.split(",")] if args.shape else folders.suggest_shape(info)
    widths, heights = [w for w, _ in info.sizes], [h for _, h in info.sizes]
    print(f"{info.scan.root}: {len(info.scan.classes)} classes, {info.total} images"
          f" (sizes {min(widths)}x{min(heights)} to {max(widths)}x{max(heights)}, "
          f"{'colour' if info.colour else 'grey'}), {len(info.unreadable)} unreadable"
          + (f", {info.scan.ignored} other files ignored" if info.scan.ignored else ""))
    for cls in info.scan.classes:
        print(f"  {cls:24s} {info.readable[cls]:6d}")
    for path, why in info.unreadable[:5]:
        print(f"  unreadable (skipped at build time): {path}: {why}")
    arch = args.arch or "auto"
    spec["data"] = {"source": "folder", "path": str(info.scan.root.resolve())}
    spec["input"] = {"shape": shape}
    spec["architecture"] = {"arch": arch}
    spec["training"] = {"epochs": args.epochs or 20, "patience": 4, "flip": bool(args.flip)}
    notes = [f"input {'x'.join(map(str, shape))}: {'RGB' if shape[0] == 3 else 'grey'}, resized whole from the "
             "median image size (change [input] shape to taste)"]
    if shape[0] == 3 and arch == "auto" and lite0_available():
        notes.append("transfer learning from ImageNet weights: set arch = \"efficientnet-lite0\" under [architecture]")
    if not args.flip:
        notes.append("left-right flips are off: set flip = true under [training] if a mirrored image is the same class")
    return notes + _balance(spec, info.warnings())


def _text(args, spec: dict) -> list[str]:
    from training.data import text as text_data

    texts, labels = text_data.read_user_file(Path(args.data), args.text_column, args.label_column)
    texts, labels = text_data._clean(texts, labels, str(args.data))
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        raise DataError(f"{args.data}: needs at least two labels; found {sorted(counts)}")
    short = {k: n for k, n in counts.items() if n < 3}
    if short:
        label, n = next(iter(short.items()))
        raise DataError(f"{args.data}: label {label!r} has {n} text{'s' * (n != 1)}; every label needs at least 3 "
                        "(one for each of training, validation and test)")
    print(f"{args.data}: {len(texts)} texts (empty and repeated ones dropped), {len(counts)} labels")
    for label in sorted(counts):
        print(f"  {label:24s} {counts[label]:6d}")
    arch = args.arch or "minilm"
    spec["data"] = {"path": str(Path(args.data).resolve())}
    if args.text_column != "text" or args.label_column != "label":
        spec["data"].update(text_column=args.text_column, label_column=args.label_column)
    spec["input"] = {"max_length": 128}
    spec["architecture"] = {"arch": arch}
    spec["training"] = ({"epochs": args.epochs or 2, "batch_size": 16, "lr": 1e-4, "head_lr": 1e-3, "freeze_layers": 3,
                         "train_max_length": 64, "patience": 2} if arch == "minilm" else
                        {"epochs": args.epochs or 6, "lr": 1e-3, "patience": 2})
    notes = ["MiniLM-L6 fine-tuned (the 2-core profile); arch = \"tiny\" trains a small transformer from scratch "
             "(smaller and faster to serve)" if arch == "minilm" else
             "a tiny 2-layer transformer from scratch; arch = \"minilm\" fine-tunes the pretrained MiniLM-L6"]
    warnings = []
    few = {k: n for k, n in counts.items() if n < 20}
    if few:
        warnings.append("very few texts in " + ", ".join(f"{k!r} ({n})" for k, n in sorted(few.items())))
    if max(counts.values()) >= 5 * min(counts.values()):
        big, small = max(counts, key=counts.get), min(counts, key=counts.get)
        warnings.append(f"imbalanced labels: {big!r} has {counts[big]} texts, {small!r} {counts[small]}; "
                        "class_weights = true is set, and the quality report gives per-label recall and macro-F1")
    return notes + _balance(spec, warnings)


def _tune(args, spec: dict) -> list[str]:
    from training.data import abc as abc_data

    tunes, source = abc_data.load_corpus(data_dir=args.data)
    abc_data.split_corpus(tunes)  # refuses too few tunes, as the build would
    chars = sum(len(t) for t in tunes)
    print(f"{source}: {len(tunes)} tunes, {chars:,} characters")
    spec["data"] = {"path": str(Path(args.data).resolve())}
    spec["architecture"] = {"hidden_size": 384}
    spec["training"] = {"epochs": args.epochs or 15, "patience": 4, "threads": 1}
    notes = []
    if len(tunes) < 100:
        notes.append(f"WARNING: {len(tunes)} tunes is very little for a character model; hundreds write better tunes")
    return notes


def _balance(spec: dict, warnings: list[str]) -> list[str]:
    if any(w.startswith("imbalanced") for w in warnings):
        spec["training"]["class_weights"] = True
    return [f"WARNING: {w}" for w in warnings]


def cmd_new(args: argparse.Namespace) -> int:
    registry.check_new_name(args.name, force=args.force)
    spec = {"name": args.name, "family": args.family,
            "description": args.description or f"{args.family} model from {Path(args.data).name}"}
    notes = {"image": _image, "text": _text, "tune": _tune}[args.family](args, spec)
    if args.family in ("image", "text"):
        spec["quality"] = {"max_int8_drop": 0.01}
    directory = Path(args.out).resolve() if args.out else specs.user_dir()
    path = specs.write_spec(spec, directory, comment=f"Written by `edgestack new {args.family} {args.name} --data "
                                                     f"{args.data}`; edit freely (docs/your-own-model.md).")
    loaded = specs.parse(specs.read(path), registry.config_class(args.family), path=path)  # the full check
    registry.reload()
    for note in notes:
        print(note)
    print(f"\nwrote {path}")
    env = "" if directory in specs.search_dirs() else f"EDGESTACK_MODELS_DIR={directory} "
    print(f"next: {env}edgestack build {loaded.name}")
    return 0


def add_parsers(sub) -> None:
    n = sub.add_parser("new", help="write a model spec from your data (then: edgestack build NAME)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    n.add_argument("family", choices=FAMILIES, help="image: a folder of class folders; text: CSV/JSONL/folders; "
                                                    "tune: a folder of .abc files")
    n.add_argument("name", help="the served name (a-z, 0-9, '.', '_', '-')")
    n.add_argument("--data", required=True, help="the data: a folder, or a CSV/TSV/JSONL file (text)")
    n.add_argument("--shape", help="image: C,H,W the model takes (default: from the data, e.g. 3,64,64)")
    n.add_argument("--arch", help="image: auto, seed-cnn, cnn, dwsep, efficientnet-lite0; text: minilm or tiny")
    n.add_argument("--flip", action="store_true", help="image: left-right flips are fair augmentation for this data")
    n.add_argument("--epochs", type=int, help="most epochs (early stopping may end sooner)")
    n.add_argument("--text-column", default="text", help="text: the CSV column / JSON key with the text")
    n.add_argument("--label-column", default="label", help="text: the CSV column / JSON key with the label")
    n.add_argument("--description", help="one line for `edgestack models` and /models")
    n.add_argument("--out", help="folder for the spec (default: $EDGESTACK_MODELS_DIR, else models/)")
    n.add_argument("--force", action="store_true", help="replace a spec of your own of this name (nothing built)")
    n.set_defaults(func=cmd_new)
