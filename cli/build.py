"""`edgestack build`, `train`, `export` and `models`: the build pipeline (export/build.py) from the command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from edgestack import artifact, registry, specs
from edgestack.errors import UsageError


def _add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training options (defaults come from the model's spec, models/NAME.toml)")
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
            raise UsageError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip().replace("-", "_")] = value
    return overrides


def cmd_build(args: argparse.Namespace) -> int:
    """Every model in turn, a summary table at the end; exit 1 only when a model has nothing to serve."""
    from export.build import build_many, summary_table

    names = args.models or list(registry.DEFAULT_MODELS)
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
    from export.build import train

    run_dir, metrics = train(args.model, _train_overrides(args))
    print(f"[{args.model}] best epoch {metrics['best_epoch']}, test accuracy {metrics.get('test_acc')}; "
          f"checkpoint, metrics and plots in {run_dir}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from export.build import export, runs_root

    run_dir = Path(args.run_dir) if args.run_dir else runs_root() / args.model
    built = export(args.model, run_dir)
    print(f"[{args.model}] artifact v{built.version}: {built.path}")
    return 0


def model_rows(root: Path | None = None) -> list[dict]:
    """One row per spec (and per spec file that did not load): name, family, where its spec is,
    built versions and the latest one's variants with their test figures and macro-F1."""
    rows = []
    for name, spec in registry.MODELS.items():
        row = {"name": name, "family": spec.family, "spec": str(spec.path) if spec.path else "(in code)",
               "default": spec.default, "imported": spec.imported is not None,
               "versions": [d.name for d in artifact.version_dirs(name, root)], "variants": {}, "state": "not built"}
        if row["versions"]:
            try:
                art = artifact.load_latest(name, root)
            except artifact.ArtifactError as exc:
                row["state"] = f"v{row['versions'][-1]} unusable ({exc})"
            else:
                report = art.manifest.get("quality_report") or {}
                row["state"] = f"v{art.version}"
                for variant, meta in art.meta.variants.items():
                    kind, figure = meta.headline
                    entry = {} if math.isnan(figure) else {kind: figure}  # NaN: not measured (an import without --eval)
                    if (report.get(variant) or {}).get("macro_f1") is not None:
                        entry["macro_f1"] = report[variant]["macro_f1"]
                    row["variants"][variant] = entry
        rows.append(row)
    for name, error in registry.spec_errors().items():
        rows.append({"name": name, "family": "?", "spec": "", "default": False, "imported": False,
                     "versions": [], "variants": {}, "state": f"spec refused: {error}"})
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    rows = model_rows()
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        figures = " ".join(
            variant + "=" * bool(entry) + " ".join(f"{v:.4f}" + (" bits/char" if k == "bits/char" else " macro-F1"
                                                               if k == "macro_f1" else "") for k, v in entry.items())
            for variant, entry in row["variants"].items())
        versions = f" (versions {', '.join(row['versions'])})" if len(row["versions"]) > 1 else ""
        mark = "*" if row["default"] else ("i" if row["imported"] else " ")
        print(f"{mark} {row['name']:24s} {row['family']:7s} {row['state']}{versions} {figures}".rstrip())
    print("\n* built by a plain `edgestack build`; i imported. Specs: " +
          ", ".join(str(d) for d in specs.search_dirs()))
    return 0


def add_parsers(sub) -> None:
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

    m = sub.add_parser("models", help="list model specs, built versions, variants and their test figures",
                       description="Every model spec (models/ and EDGESTACK_MODELS_DIR), its built versions under "
                                   "$EDGESTACK_ARTIFACTS and the latest version's variants with test accuracy "
                                   "(or bits/char) and macro-F1; spec files that did not load, with why.")
    m.add_argument("--json", action="store_true", help="print the rows as JSON")
    m.set_defaults(func=cmd_models)
