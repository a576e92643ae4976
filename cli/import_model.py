"""`edgestack import`: serve a model edgestack did not train (an ONNX file, or a PyTorch module).

    edgestack import model.onnx --name NAME [--calibration rows.npy] [--eval labelled.npz]
    edgestack import model.onnx --name NAME --family image --labels labels.txt [--scale ... --mean ... --std ...]
    edgestack import model.onnx --name NAME --family text --labels a,b --tokenizer tokenizer.json [--max-length 128]
    edgestack import --torch package.module:factory --weights model.safetensors --input-shape 8 --name NAME

The checks, the int8 step and the artifact: export/onnx_import.py (and export/torch_import.py).
The model is then a spec like any other (models/NAME.toml or $EDGESTACK_MODELS_DIR/NAME.toml,
with an [imported] table), so `edgestack serve`, `models`, `batch`, `bundle` and `v2-check` know
it. Every refusal is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgestack import artifact, registry
from edgestack.errors import InputError, QualityGateError, UsageError


def parse_shape(text: str) -> list[int]:
    try:
        shape = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 3,32,32") from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive sizes, e.g. 3,32,32 (the batch axis is added)")
    return shape


def read_labels(value: str | None) -> list[str] | None:
    """--labels: a file with one label per line, or the labels separated by commas."""
    if value is None:
        return None
    path = Path(value)
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() \
        else [part.strip() for part in value.split(",")]
    labels = [label for label in labels if label]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise UsageError(f"--labels: give at least two distinct labels (a file, one per line, or a,b,c); got {labels}")
    return labels


def check_name(name: str, new_version: bool) -> None:
    """Refuse a name another model has; a model imported before gets a new version only when asked."""
    from edgestack import specs

    if not specs.NAME.match(name):
        raise UsageError(f"--name {name!r}: lower-case letters, digits, '.', '_' and '-', starting with a letter "
                         "or digit (it becomes the served name and the spec file's name)")
    spec = registry.MODELS.get(name)
    built = artifact.latest_version_dir(name)
    if spec is not None and not spec.imported:
        where = f"spec {spec.path}" if spec.path else "registered in code"
        raise UsageError(f"--name {name!r} is a model edgestack trains ({where}"
                         + (f", built as v{built.name}" if built else "") + "): pick another name")
    if spec is None and built is not None:
        raise UsageError(f"--name {name!r}: {built.parent} already holds artifacts of another model: pick another name")
    if spec is not None and built is not None and not new_version:
        raise UsageError(f"--name {name!r} was imported before (v{built.name}); add --new-version to import this "
                         f"as its next version, or pick another name")


def import_options(args: argparse.Namespace):
    from export.onnx_import import FAMILY, ImportOptions, ImportRefused

    family = args.family or FAMILY
    labels = read_labels(args.labels)
    preprocessing, extra = None, {}
    if family == "image":
        preprocessing = {"layout": "NCHW", "channels": None, "height": None, "width": None,
                         "scale": 1 / 255 if args.scale is None else args.scale,
                         "mean": 0.0 if args.mean is None else args.mean, "std": 1.0 if args.std is None else args.std,
                         "dark_background": args.dark_background}
    elif family == "text":
        if not args.tokenizer:
            raise ImportRefused("--family text needs --tokenizer tokenizer.json (the tokenizer the model's ids "
                                "come from, as the Hugging Face `tokenizers` library writes it)")
        tokenizer = Path(args.tokenizer)
        if not tokenizer.is_file():
            raise ImportRefused(f"--tokenizer {tokenizer}: no such file")
        check_tokenizer(tokenizer)
        preprocessing = {"tokenizer": "tokenizer.json", "max_length": args.max_length, "padding": "longest",
                         "truncation": "longest_first"}
        extra = {"tokenizer.json": tokenizer}
    else:
        image_flags = [f for f in ("scale", "mean", "std", "tokenizer") if getattr(args, f) not in (None, False)]
        if labels or image_flags:
            raise ImportRefused(f"{'--labels' if labels else '--' + image_flags[0]} is for --family image or text; "
                                "a model without a family is served as its tensors")
    return ImportOptions(family=family, labels=labels, preprocessing=preprocessing, extra_files=extra,
                         calibration=args.calibration, eval=args.eval, eval_output=args.eval_output,
                         eval_labels=args.eval_labels, budget=args.int8_budget,
                         description=args.description or "")


def check_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer

    from export.onnx_import import ImportRefused, first_line

    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain exceptions
        raise ImportRefused(f"--tokenizer {path.name} is not a tokenizer.json the tokenizers library reads: "
                            f"{first_line(exc)}") from None


def fill_image_preprocessing(options, path: Path) -> None:
    """--family image: channels, height and width come from the graph's input [batch, C, H, W]."""
    import onnx

    from export.onnx_import import ImportRefused

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    if len(inputs) != 1 or len(dims) != 4 or not all(dims[1:]):
        raise ImportRefused("--family image takes a graph with one input [batch, channels, height, width] whose "
                            "channels, height and width are fixed")
    options.preprocessing.update(channels=dims[1], height=dims[2], width=dims[3])


def register(art: artifact.Artifact, options, source: Path, extra: dict) -> Path:
    """The model's spec (an [imported] table): what makes it a served model like the others."""
    from edgestack import specs

    data = {"name": art.name, "family": options.family,
            "description": options.description or f"imported from {source.name}",
            "imported": {"file": str(source.resolve()), "sha256": artifact.sha256_file(source),
                         "options": {k: v for k, v in extra.items() if v is not None}}}
    return specs.write_spec(data, comment=f"Written by `edgestack import` (v{art.version}: {art.path}).")


def cmd_import(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except (UsageError, artifact.ArtifactError, QualityGateError, InputError, FileNotFoundError) as exc:
        print(f"edgestack import: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    from export.onnx_import import ImportRefused, import_onnx

    if (args.model is None) == (args.torch is None):
        raise ImportRefused("give an ONNX file, or --torch package.module:factory with --weights and --input-shape")
    if args.torch and (not args.weights or not args.input_shape):
        raise ImportRefused("--torch needs --weights model.safetensors and --input-shape (one item's shape, e.g. 3,32,32)")
    if not args.torch and (args.weights or args.input_shape):
        raise ImportRefused("--weights and --input-shape go with --torch package.module:factory")
    check_name(args.name, args.new_version)
    options = import_options(args)
    if args.torch:
        from export.torch_import import import_torch

        if options.family != "generic":
            raise ImportRefused(f"--family {options.family} with --torch: export the module to ONNX and import the "
                                "file with --family, or import it without a family (as its tensors)")
        art = import_torch(args.torch, args.weights, args.input_shape, args.name, options,
                           dtypes=args.input_dtype, progress=True)
        source = Path(args.weights)
        extra = {"torch": args.torch, "input_shape": [list(s) for s in args.input_shape]}
    else:
        source = Path(args.model)
        if options.family == "image":
            from export.onnx_import import read_model

            read_model(source)  # a file that is not ONNX is refused as such first
            fill_image_preprocessing(options, source)
        art = import_onnx(source, args.name, options, progress=True)
        extra = {}
    extra.update(family=options.family, calibration=args.calibration, eval=args.eval)
    spec_path = register(art, options, source, extra)
    print(f"[{art.name}] spec {spec_path}")
    served = "int8" if "int8" in art.meta.variants else "fp32"
    print(f"\nnext: edgestack serve {art.name}        (serves {served}; "
          f"v2: POST /v2/models/{art.name}/infer, GET /v2/models/{art.name}/config)")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "import", help="serve a model edgestack did not train (ONNX file, or a PyTorch module + safetensors)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check an ONNX graph (parses, opsets onnxruntime runs, the ONNX checker, a test run on inputs of "
                    "its declared types), read its inputs and outputs, and publish it as a verified artifact "
                    "(manifest, checksums) with an int8 variant where one can be made. Without --family it is "
                    "served as its own tensors over v2 REST and gRPC, with GET /v2/models/NAME/config completed from "
                    "the graph as Triton does. See docs/your-own-model.md.",
        epilog="int8: static QDQ with --calibration rows; otherwise dynamic int8 when the graph's weights are in "
               "MatMul/Gemm/recurrent ops (a graph with convolutions needs --calibration). With --eval the int8 "
               "recipe must hold --int8-budget against fp32 or is withheld; without it the int8 graph is kept as "
               "the variant int8-unvalidated, which the server serves only when asked (--variant).\n"
               "Files: --calibration is a .npy (one-input model) or .npz (one array per input, named as the inputs) "
               "of rows [N, ...]; --eval is a .npz with those arrays and a `labels` array (class ids, or numbers "
               "for a regression output).")
    p.add_argument("model", nargs="?", help="the ONNX file (or use --torch)")
    p.add_argument("--name", required=True, help="the served name (a-z, 0-9, '.', '_', '-'); it must not be taken")
    p.add_argument("--new-version", action="store_true", help="NAME was imported before: publish this as its next version")
    p.add_argument("--description", help="one line for `edgestack models` and /models")
    fam = p.add_argument_group("family (default: none, served as generic tensors)")
    fam.add_argument("--family", choices=["generic", "image", "text"],
                     help="image: /classify and /classify_image; text: /classify_text; both need --labels")
    fam.add_argument("--labels", help="class names in the order of the score output: a file (one per line) or a,b,c")
    fam.add_argument("--scale", type=float, help="image: pixels (0..255) * scale, then (x - mean) / std (default 1/255)")
    fam.add_argument("--mean", type=float, help="image: subtracted after scaling (default 0)")
    fam.add_argument("--std", type=float, help="image: divided by after the mean (default 1)")
    fam.add_argument("--dark-background", action="store_true",
                     help="image: the model was trained on light-on-dark images (uploads that are not get inverted)")
    fam.add_argument("--tokenizer", help="text: tokenizer.json of the model's token ids (Hugging Face tokenizers)")
    fam.add_argument("--max-length", type=int, default=128, help="text: most tokens read per text (default 128)")
    q = p.add_argument_group("int8")
    q.add_argument("--calibration", help="rows for static int8 calibration (.npy or .npz)")
    q.add_argument("--eval", help="labelled rows (.npz with the inputs and `labels`) that gate int8 against fp32")
    q.add_argument("--eval-labels", default="labels", help="the labels array's name in --eval (default labels)")
    q.add_argument("--eval-output", help="the output compared with the labels (default: the first [batch, classes] "
                                         "float output, else a [batch] integer one)")
    q.add_argument("--int8-budget", type=float, default=0.01,
                   help="most int8 may lose against fp32 on --eval (accuracy: 0.01 = one point; regression: "
                        "relative increase of the mean absolute error) (default 0.01)")
    t = p.add_argument_group("from PyTorch")
    t.add_argument("--torch", metavar="MODULE:FACTORY", help="a function or class that builds the torch.nn.Module "
                   "(the working directory is importable)")
    t.add_argument("--weights", help="its state dict as .safetensors (never a pickle)")
    t.add_argument("--input-shape", type=parse_shape, action="append",
                   help="one item's shape without the batch axis, e.g. 3,32,32 (repeat for several inputs)")
    t.add_argument("--input-dtype", action="append", help="torch dtype of the input(s) (default float32)")
    p.set_defaults(func=cmd_import)
