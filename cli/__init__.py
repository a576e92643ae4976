"""`edgestack`: one command for the whole flow.

    edgestack new FAMILY NAME --data PATH   write a model spec from your data (models/NAME.toml)
    edgestack build [MODEL ...]      train + export what is missing (default: the default models)
    edgestack train MODEL [opts]     train only (checkpoint, metrics, plots under runs/MODEL)
    edgestack export MODEL           export the last training run into a new artifact version
    edgestack serve [MODEL ...]      serve every built model (or those named) with BentoML on ONNX Runtime
    edgestack predict MODEL FILE...  classify image files (or IDX/arrays) through a server
    edgestack bench MODEL            PyTorch vs ORT fp32 vs ORT int8, in process and over HTTP
    edgestack models                 list model specs, built versions, variants and their accuracy
    edgestack import FILE --name N   serve a model edgestack did not train (ONNX, or PyTorch + safetensors)
    edgestack batch MODEL IN OUT     batch inference to Parquet/JSONL (local processes or Ray), resumable
    edgestack bundle MODEL           edge-device bundle: int8 ONNX + ORT format + a numpy-only runner
    edgestack bench-batch / bench-bundle   items/s per engine; bundle size, cold start, RSS, latency
    edgestack keys new DIR           a signing key pair; `edgestack sign MODEL` signs a built version
"""

from __future__ import annotations

import argparse
import sys

from edgestack import artifact
from cli.serve import server_env  # noqa: F401 (how serve flags become settings; tests use it)
from edgestack.errors import InputError, QualityGateError, UsageError

# One module per command group, each adding its subcommands; the order is the order of `--help`.
COMMAND_GROUPS = ("new", "build", "triton", "kserve", "serve", "predict", "bench", "abc_check", "batch", "bundle", "v2check",
                  "keys", "import_model")


def parser() -> argparse.ArgumentParser:
    import importlib

    p = argparse.ArgumentParser(prog="edgestack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        importlib.import_module(f"cli.{group}").add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] in (["export", "triton"], ["export", "kserve"]):  # `export triton` = `export-triton`, ...
        argv = [f"export-{argv[1]}", *argv[2:]]
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:  # a bad EDGESTACK_* variable behind a default (SettingsError)
        print(f"edgestack: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(args) or 0
    except (artifact.ArtifactError, UsageError, QualityGateError, InputError, FileNotFoundError) as exc:
        print(f"edgestack {args.command}: {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)  # 1: bad input (a spec, a data folder); 2: the command's use
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
