"""`edgestack`: one command for the whole flow.

    edgestack build [MODEL ...]      train + export what is missing (default: the default models)
    edgestack train MODEL [opts]     train only (checkpoint, metrics, plots under runs/MODEL)
    edgestack export MODEL           export the last training run into a new artifact version
    edgestack serve                  serve every built model with BentoML on ONNX Runtime
    edgestack predict MODEL FILE...  classify image files (or IDX/arrays) through a server
    edgestack bench MODEL            PyTorch vs ORT fp32 vs ORT int8, in process and over HTTP
    edgestack models                 list served names and which artifacts exist
    edgestack batch MODEL IN OUT     batch inference to Parquet/JSONL (local processes or Ray), resumable
    edgestack bundle MODEL           edge-device bundle: int8 ONNX + ORT format + a numpy-only runner
    edgestack bench-batch / bench-bundle   items/s per engine; bundle size, cold start, RSS, latency
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edgestack import artifact, registry


def _add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training options (defaults come from the model's registry entry)")
    g.add_argument("--epochs", type=int, help="most epochs (early stopping may end sooner)")
    g.add_argument("--batch-size", type=int, help="mini-batch size")
    g.add_argument("--lr", type=float, help="learning rate (Adam)")
    g.add_argument("--seed", type=int, help="seed for splits, init and shuffling: same seed, same model")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random rotations/shifts of training images")
    g.add_argument("--patience", type=int, help="early stopping: epochs without a better validation score")
    g.add_argument("--data-dir", help="your own data instead of the packaged set (e.g. a folder of IDX files)")
    g.add_argument("--train-limit", type=int, help="train on only the first N training examples")
    g.add_argument("--hidden-size", type=int, help="folk-lstm: LSTM hidden size (default 384; the lab's 1024 is "
                   "the large profile: `make folk-lstm-large`)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other field of the model's training Config, repeatable (values are JSON or "
                        "plain strings), e.g. --set freeze_layers=0 --set max_length=256")


def _train_overrides(args: argparse.Namespace) -> dict:
    keys = ("epochs", "batch_size", "lr", "seed", "augment", "patience", "data_dir", "train_limit", "hidden_size")
    overrides = {k: getattr(args, k, None) for k in keys}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip().replace("-", "_")] = value
    return overrides


def cmd_build(args: argparse.Namespace) -> int:
    """Every model in turn, a summary table at the end; exit 1 only when a model has nothing to serve."""
    from edgestack.build import build_many, summary_table

    names = args.models or registry.DEFAULT_MODELS
    for name in names:
        registry.get(name)
    outcomes = build_many(names, _train_overrides(args), force=args.force, retrain=args.retrain)
    print("\n" + summary_table(outcomes), flush=True)
    failed = [o.name for o in outcomes if not o.servable]
    if failed:
        print(f"\nedgestack build: {len(failed)} of {len(outcomes)} model(s) have no servable variant: "
              f"{', '.join(failed)} (see above); the others can be served.", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from edgestack.build import train

    run_dir, metrics = train(args.model, _train_overrides(args))
    print(f"[{args.model}] best epoch {metrics['best_epoch']}, test accuracy {metrics.get('test_acc')}; "
          f"checkpoint, metrics and plots in {run_dir}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from edgestack.build import export, runs_root

    run_dir = Path(args.run_dir) if args.run_dir else runs_root() / args.model
    built = export(args.model, run_dir)
    print(f"[{args.model}] artifact v{built.version}: {built.path}")
    return 0


SERVE_FLAGS = (("device", "EDGESTACK_DEVICE"), ("variant", "EDGESTACK_VARIANT"), ("threads", "EDGESTACK_THREADS"),
               ("max_body_bytes", "EDGESTACK_MAX_BODY_BYTES"), ("max_batch", "EDGESTACK_MAX_BATCH"),
               ("max_wait_ms", "EDGESTACK_MAX_WAIT_MS"))


def server_env(args: argparse.Namespace, environ) -> dict[str, str]:
    """The server's environment: ours, with `edgestack serve`'s flags as the EDGESTACK_* settings
    the service reads (a flag wins over the variable)."""
    env = dict(environ)
    if args.models:
        env["EDGESTACK_MODELS"] = ",".join(args.models)
    env.setdefault("EDGESTACK_ARTIFACTS", str(artifact.default_root()))
    for flag, var in SERVE_FLAGS:
        if getattr(args, flag) is not None:
            env[var] = str(getattr(args, flag))
    return env


def cmd_serve(args: argparse.Namespace) -> int:
    # Verify every artifact before starting BentoML: a refused artifact should stop the
    # command with its reason, not leave a server that never becomes ready.
    names = args.models or [n for n in registry.MODELS if artifact.latest_version_dir(n) is not None]
    if not names:
        raise artifact.ArtifactError(f"nothing to serve under {artifact.default_root()}: run `edgestack build` first")
    for name in names:
        registry.get(name)
        art = artifact.load_latest(name)
        print(f"[{name}] v{art.version} verified ({len(art.manifest['files'])} files)", flush=True)
    env = server_env(args, os.environ)
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:EdgeStack",
               "--host", args.host, "--port", str(args.port), "--working-dir", str(root)]
    print("serving:", " ".join(command[2:]), flush=True)
    # Become the server (no child): a SIGTERM to `edgestack serve` (tests, systemd,
    # Kubernetes) then reaches BentoML itself instead of leaving an orphaned server behind.
    os.execve(sys.executable, command, env)


def _one_array_file(paths: list[str]) -> bool:
    return len(paths) == 1 and ("idx" in Path(paths[0]).name or paths[0].endswith(".npy"))


def _load_inputs(paths: list[str], limit: int | None):
    """Image files -> ('files', [paths]); an IDX file -> ('pixels', array)."""
    if _one_array_file(paths):
        import numpy as np

        from training.data.images import read_idx

        array = np.load(paths[0]) if paths[0].endswith(".npy") else read_idx(Path(paths[0]))
        return "pixels", array[: limit or 8]
    return "files", paths


def cmd_predict(args: argparse.Namespace) -> int:
    from clients import Client, EdgestackError

    if args.protocol == "v2":
        return _predict_v2(args)
    spec = registry.MODELS.get(args.model)
    predict = {"text-classification": _predict_texts, "text-generation": _predict_tune}.get(
        spec.task if spec else "", _predict_images)
    try:
        with Client(args.url, timeout=args.timeout) as client:
            return predict(args, client)
    except EdgestackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _predict_images(args: argparse.Namespace, client) -> int:
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


def _predict_texts(args: argparse.Namespace, client) -> int:
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


def _predict_tune(args: argparse.Namespace, client) -> int:
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
    from bundle.edge_runner.image import Model
    from clients import Client, EdgestackError
    from clients.v2 import predict_files_v2
    from edgestack.v2protocol import client_hints

    hints = client_hints(artifact.load_latest(args.model, Path(args.artifacts)).manifest) if args.artifacts else None
    try:
        with Client(args.url, timeout=args.timeout) as client:
            results = predict_files_v2(client, args.model, args.inputs, top_k=args.top_k, hints=hints,
                                       limit=args.limit or (8 if _one_array_file(args.inputs) else None))
    except EdgestackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2) if args.json else "\n".join(map(Model.format_text, results)))
    return 2 if any("error" in r for r in results) else 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.protocols:
        from edgestack.bench_v2 import run_protocol_bench

        run_protocol_bench(args)
        return 0
    from edgestack.bench import run_bench

    run_bench(args)
    return 0


def cmd_v2_check(args: argparse.Namespace) -> int:
    from edgestack.v2check import run

    return run(args)


def cmd_models(args: argparse.Namespace) -> int:
    for name, spec in registry.MODELS.items():
        try:
            art = artifact.load_latest(name)
            state = f"v{art.version} " + " ".join(
                f"{v}={m['test_accuracy']:.4f}" if "test_accuracy" in m else
                f"{v}={m.get('test_bits_per_char', float('nan')):.4f}bpc" for v, m in art.variants.items())
        except artifact.ArtifactError as exc:
            state = f"not built ({exc})" if artifact.latest_version_dir(name) else "not built"
        print(f"{name:24s} {spec.family:6s} {state}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgestack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = ", ".join(registry.MODELS)

    b = sub.add_parser("build", help="train + export missing models", description=
                       "Build an artifact (train, export, parity check, quantize, measure) for each model "
                       "that has no verified artifact yet. Artifacts go under $EDGESTACK_ARTIFACTS (./artifacts).")
    b.add_argument("models", nargs="*", help=f"served names (default: {', '.join(registry.DEFAULT_MODELS)}); known: {names}")
    b.add_argument("--force", action="store_true", help="build a new version even if one exists (a finished "
                   "training run of the same config is exported again, not retrained)")
    b.add_argument("--retrain", action="store_true", help="train anew even if a finished run of the same config exists")
    _add_train_options(b)
    b.set_defaults(func=cmd_build)

    t = sub.add_parser("train", help="train a model (checkpoint + metrics + plots)")
    t.add_argument("model", choices=list(registry.MODELS))
    _add_train_options(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a training run to a new artifact version")
    e.add_argument("model", choices=list(registry.MODELS))
    e.add_argument("--run-dir", help="training run folder (default: runs/MODEL)")
    e.set_defaults(func=cmd_export)

    from export import triton as triton_export

    triton_export.add_parser(sub)  # export-triton; `edgestack export triton` is the same (see main)

    s = sub.add_parser("serve", help="serve built models over HTTP (BentoML + ONNX Runtime)")
    s.add_argument("models", nargs="*", help="served names (default: every built model)")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=3000)
    s.add_argument("--device", choices=["auto", "cpu", "cuda", "tensorrt"], help="auto: TensorRT > CUDA > CPU")
    s.add_argument("--variant", help="force a variant (fp32, int8, fp16); default int8 on CPU, fp16 on GPU")
    s.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per model (default: all cores)")
    s.add_argument("--max-body-bytes", type=int, help="largest accepted request body (default 8 MiB)")
    s.add_argument("--max-batch", type=int, help="adaptive batching: most rows in one ORT call (default 64)")
    s.add_argument("--max-wait-ms", type=float,
                   help="adaptive batching: extra wait for company once the queue is drained, like Triton's "
                        "max_queue_delay (default 0: a lone request runs at once)")
    s.set_defaults(func=cmd_serve)

    pr = sub.add_parser("predict", help="ask a running server: classify images or texts, write a tune",
                        description="Image classifiers: image files or one IDX/.npy file. Text classifiers: "
                                    "quoted texts, or - for one per line on standard input. folk-lstm: an optional "
                                    "prompt ('X:1\\nT:'; a literal \\n is a newline), the tune streamed as it is written.")
    pr.add_argument("model", help=f"served name ({names})")
    pr.add_argument("inputs", nargs="*", help="image files, texts, or the folk-lstm prompt (see above)")
    pr.add_argument("--url", default=os.environ.get("EDGESTACK_URL", "http://localhost:3000"))
    pr.add_argument("--top-k", type=int, default=3)
    pr.add_argument("--limit", type=int, help="with an IDX/.npy file: how many images (default 8)")
    pr.add_argument("--timeout", type=float, default=30.0)
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

    be = sub.add_parser("bench", help="benchmark one model: table on screen, JSON on disk")
    be.add_argument("model", choices=list(registry.MODELS))
    be.add_argument("--iterations", type=int, default=200, help="timed runs per variant and batch size")
    be.add_argument("--http-requests", type=int, default=400, help="requests per HTTP concurrency level")
    be.add_argument("--no-http", action="store_true", help="skip the HTTP part (no server started)")
    be.add_argument("--port", type=int, default=0, help="port for the benchmark server (0: a free one)")
    be.add_argument("--threads", type=int, help="intra-op threads for torch and ORT (default: all cores)")
    be.add_argument("--out", default="bench-results", help="folder for the JSON result")
    be.add_argument("--protocols", action="store_true",
                    help="instead: v2 binary vs v2 JSON vs the convenience endpoint over HTTP, batch 1 and 32, "
                         "concurrency 1 and 16, against in-process ORT (--http-requests per case)")
    be.add_argument("--triton", action="store_true",
                    help="with --protocols: also a real Triton (`make triton`, CPU, Python backend) serving the same "
                         "artifact and variant, as one more contender in the same rotation")
    be.set_defaults(func=cmd_bench)

    from edgestack import abc_check

    abc_check.add_parser(sub)

    from batch import cli as batch_cli
    from bundle import cli as bundle_cli

    batch_cli.add_parsers(sub)    # batch, bench-batch
    bundle_cli.add_parsers(sub)   # bundle, bench-bundle

    m = sub.add_parser("models", help="list models and their artifacts")
    m.set_defaults(func=cmd_models)

    vc = sub.add_parser("v2-check", help="tritonclient compatibility matrix against a running v2 server",
                        description="Every tritonclient.http call (sync and async, binary and JSON tensors) "
                                    "against each model of a running Open Inference Protocol (v2) server: ours, "
                                    "Triton or KServe. Prints one pass/FAIL cell per call and model; exit 1 if "
                                    "any cell failed. See edgestack/v2check.py.")
    vc.add_argument("models", nargs="*", help="model names (default: what our server lists at POST /models)")
    vc.add_argument("--url", default=os.environ.get("EDGESTACK_URL", "http://localhost:3000"))
    vc.add_argument("--artifacts", help="also compare each answer with the same variant run in process, "
                                        "from this artifacts folder (e.g. artifacts)")
    vc.add_argument("--json", metavar="FILE", help="write the matrix as JSON to FILE")
    vc.set_defaults(func=cmd_v2_check)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["export", "triton"]:  # `edgestack export triton ...` = `edgestack export-triton ...`
        argv = ["export-triton", *argv[2:]]
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (artifact.ArtifactError, KeyError, ValueError, FileNotFoundError) as exc:
        print(f"edgestack {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
