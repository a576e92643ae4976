"""`edgestack predict`: ask a running server, through the Python client; one printer per family
(the family's `predict` stage in edgestack/registry.py), or the v2 protocol for any v2 server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgestack import artifact, registry
from edgestack.settings import get_settings


def _one_array_file(paths: list[str]) -> bool:
    return len(paths) == 1 and ("idx" in Path(paths[0]).name or paths[0].endswith(".npy"))


def _load_inputs(paths: list[str], limit: int | None):
    """Image files -> ('files', [paths]); an IDX file -> ('pixels', array)."""
    if _one_array_file(paths):
        import numpy as np

        from edgestack.families.image import read_idx

        array = np.load(paths[0]) if paths[0].endswith(".npy") else read_idx(Path(paths[0]))
        return "pixels", array[: limit or 8]
    return "files", paths


def cmd_predict(args: argparse.Namespace) -> int:
    from clients import Client, EdgestackError

    if args.protocol == "v2":
        return _predict_v2(args)
    spec = registry.MODELS.get(args.model)  # a name we do not know is taken for an image classifier
    predict = registry.load_object(spec.stages.predict) if spec and spec.stages.predict else predict_images
    try:
        with Client(args.url, timeout=args.timeout, token=args.token) as client:
            return predict(args, client)
    except EdgestackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def predict_images(args: argparse.Namespace, client) -> int:
    if not args.inputs:
        raise SystemExit("error: give image files, or one IDX/.npy file of 28x28 images")
    kind, inputs = _load_inputs(args.inputs, args.limit)
    if kind == "files":
        result = client.classify_images(inputs, model=args.model, top_k=args.top_k)
        names = inputs
    else:
        result = client.classify(inputs, model=args.model, top_k=args.top_k)
        names = [f"{args.inputs[0]}[{i}]" for i in range(len(inputs))]
    if args.json:
        print(json.dumps([{"input": str(n), "label": p.label,
                           "top_k": [s.__dict__ for s in p.top_k]} for n, p in zip(names, result.predictions)], indent=2))
    else:
        for name, pred in zip(names, result.predictions):
            scores = ", ".join(f"{s.label} {s.probability:.3f}" for s in pred.top_k)
            print(f"{name}: {pred.label}   ({scores})")
    return 0


def predict_texts(args: argparse.Namespace, client) -> int:
    """Texts from the command line, or one per line from standard input with `-`."""
    texts = [line.rstrip("\n") for line in sys.stdin if line.strip()] if args.inputs == ["-"] else args.inputs
    if not texts:
        raise SystemExit("error: give one or more texts (quoted), or - to read one per line from standard input")
    result = client.classify_text(texts=texts, model=args.model)
    if args.json:
        print(json.dumps([{"text": t, **p.__dict__} for t, p in zip(texts, result.predictions)], indent=2))
        return 0
    for text, pred in zip(texts, result.predictions):
        shown = text if len(text) <= 60 else text[:57] + "..."
        print(f"{pred.label:>10s} {pred.score:.3f}{' (truncated)' if pred.truncated else ''}   {shown}")
    return 0


def predict_tune(args: argparse.Namespace, client) -> int:
    """folk-lstm: the prompt is the optional input (a literal \\n is a newline); the tune is
    printed as it is written, or as JSON at the end with --json."""
    if len(args.inputs) > 1:
        raise SystemExit("error: folk-lstm takes one prompt (quote it), e.g. 'X:1\\nT:'")
    prompt = args.inputs[0].replace("\\n", "\n") if args.inputs else None
    sampling = {"seed": args.seed, "temperature": args.temperature, "max_length": args.max_length}  # None: server default
    if args.json:
        print(json.dumps(client.generate(prompt, model=args.model, **sampling).__dict__, indent=2))
        return 0
    for event in client.generate_stream(prompt, model=args.model, **sampling):
        if event.kind == "start":
            print(event.data["prompt"], end="", flush=True)
        print(event.text, end="", flush=True)
    print()
    return 0


def _predict_v2(args: argparse.Namespace) -> int:
    """The Open Inference Protocol path: any v2 server (ours, Triton, KServe); images are
    decoded and preprocessed here, the server runs the bare model."""
    from clients import Client, EdgestackError
    from clients.v2 import predict_files_v2
    from edgestack.families.image import format_result
    from edgestack.v2protocol import client_hints

    hints = client_hints(artifact.load_latest(args.model, Path(args.artifacts)).manifest) if args.artifacts else None
    try:
        with Client(args.url, timeout=args.timeout, token=args.token) as client:
            results = predict_files_v2(client, args.model, args.inputs, top_k=args.top_k, hints=hints,
                                       limit=args.limit or (8 if _one_array_file(args.inputs) else None))
    except EdgestackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2) if args.json else "\n".join(map(format_result, results)))
    return 2 if any("error" in r for r in results) else 0


def add_parsers(sub) -> None:
    names = ", ".join(registry.MODELS)
    pr = sub.add_parser("predict", help="ask a running server: classify images or texts, write a tune",
                        description="Image classifiers: image files or one IDX/.npy file. Text classifiers: "
                                    "quoted texts, or - for one per line on standard input. folk-lstm: an optional "
                                    "prompt ('X:1\\nT:'; a literal \\n is a newline), the tune streamed as it is written.")
    pr.add_argument("model", help=f"served name ({names})")
    pr.add_argument("inputs", nargs="*", help="image files, texts, or the folk-lstm prompt (see above)")
    pr.add_argument("--url", default=get_settings().url)
    pr.add_argument("--top-k", type=int, default=3)
    pr.add_argument("--limit", type=int, help="with an IDX/.npy file: how many images (default 8)")
    pr.add_argument("--timeout", type=float, default=30.0)
    pr.add_argument("--token", default=get_settings().token,
                    help="bearer token when the server requires one (default: EDGESTACK_TOKEN)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--seed", type=int, help="folk-lstm: same seed, same tune")
    pr.add_argument("--temperature", type=float, help="folk-lstm: sampling temperature (server default 1.0)")
    pr.add_argument("--max-length", type=int, help="folk-lstm: most new characters")
    pr.add_argument("--protocol", choices=["rest", "v2"], default="rest",
                    help="rest: our convenience endpoints (the server decodes images); v2: the Open Inference "
                         "Protocol, against any v2 server (ours, Triton, KServe) - images are decoded and "
                         "preprocessed here, binary tensors are sent")
    pr.add_argument("--artifacts", help="with --protocol v2 and a server that does not describe the model's "
                    "preprocessing and labels (not ours, no exported config): read them from this artifacts folder")
    pr.set_defaults(func=cmd_predict)
