"""Train + export a served model into a new artifact version (the `edgestack build` step)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgestack import artifact, registry
from edgestack.errors import DataMissing, QualityGateError, UsageError


def runs_root(root: Path | None = None) -> Path:
    """Training run folders (checkpoints, curves) live beside the artifacts folder."""
    return (root or artifact.default_root()).parent / "runs"


def quiet_export_logs() -> None:
    """torch.onnx warns about every missing torchvision op; nothing a user can act on."""
    for noisy in ("torch.onnx", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def make_config(spec: registry.ModelSpec, overrides: dict[str, Any] | None = None):
    if spec.imported is not None:
        raise UsageError(f"{spec.name} was imported ({spec.imported.get('file')}), not trained: "
                         f"import it again with `edgestack import` to make a new version")
    config_cls = registry.config_class(spec.family)
    values = {**spec.defaults, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(values) - known
    if unknown:
        raise UsageError(f"{spec.name}: unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
    return config_cls(**values)


RUN_RECORD = "run.json"  # written last by a finished training run: its config and checkpoint checksums


def _checkpoints(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): artifact.sha256_file(p) for p in sorted(run_dir.rglob("*.safetensors"))}


def reusable_run(run_dir: Path, cfg) -> bool:
    """True when `run_dir` holds a finished training run of exactly `cfg` whose checkpoints
    are intact (the record is written last, so an interrupted run never counts)."""
    record_path = Path(run_dir) / RUN_RECORD
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return record.get("config") == dataclasses.asdict(cfg) and record.get("checkpoints") == _checkpoints(Path(run_dir)) \
        and bool(record.get("checkpoints"))


def train(name: str, overrides: dict[str, Any] | None = None, *, run_dir: Path | None = None,
          progress: bool = True) -> tuple[Path, dict]:
    spec = registry.get(name)
    cfg = make_config(spec, overrides)
    run_dir = Path(run_dir or runs_root() / name)
    (run_dir / RUN_RECORD).unlink(missing_ok=True)  # a run cut short must not look finished
    metrics = registry.load_object(spec.stages.train + ":train")(cfg, run_dir, progress=progress)
    (run_dir / RUN_RECORD).write_text(json.dumps({"config": dataclasses.asdict(cfg),
                                                  "checkpoints": _checkpoints(run_dir)}, indent=2))
    return run_dir, metrics


def spec_export_options(spec: registry.ModelSpec) -> dict[str, Any]:
    """The spec's int8 budget as its family's export keyword (quality.max_int8_drop)."""
    budget = spec.quality.get("max_int8_drop")
    return {} if budget is None else {spec.stages.budget: budget}


def export(name: str, run_dir: Path, *, root: Path | None = None, progress: bool = True,
           **export_options) -> artifact.Artifact:
    spec = registry.get(name)
    quiet_export_logs()
    staging = artifact.fresh_version_dir(name, root)
    try:
        manifest = registry.load_object(spec.stages.export + ":export")(
            run_dir, staging, name=name, progress=progress, **{**spec_export_options(spec), **export_options})
        check_floors(spec, manifest)
        from export.threads import record_thread_choice

        record_thread_choice(staging, progress=progress)  # the server's ORT threads per variant
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never leave a half-built version behind
        raise
    return artifact.load(artifact.publish(staging))


def build(name: str, overrides: dict[str, Any] | None = None, *, root: Path | None = None,
          force: bool = False, retrain: bool = False, progress: bool = True,
          **export_options) -> artifact.Artifact:
    """Build `name` unless a verified artifact already exists (or force). A finished training
    run of the same config is exported again instead of retrained (unless retrain)."""
    if not force and not retrain:
        try:
            existing = artifact.load_latest(name, root)
            if progress:
                print(f"[{name}] artifact v{existing.version} present and verified: {existing.path}")
            return existing
        except artifact.ArtifactError as exc:
            if progress and artifact.latest_version_dir(name, root) is not None:
                print(f"[{name}] existing artifact unusable ({exc}); rebuilding")
    started = time.time()
    spec = registry.get(name)
    run_dir = runs_root(root) / name
    if not retrain and reusable_run(run_dir, make_config(spec, overrides)):
        if progress:
            print(f"[{name}] reusing the finished training run in {run_dir} (same config, checksums match); "
                  f"exporting it again (--retrain trains anew)", flush=True)
    else:
        if progress:
            print(f"[{name}] building: training then export ({spec.description or spec.family})", flush=True)
        train(name, overrides, run_dir=run_dir, progress=progress)
    built = export(name, run_dir, root=root, progress=progress, **export_options)
    if progress:
        print(f"[{name}] built v{built.version} in {time.time() - started:.0f}s ({variant_summary(built)})"
              f" -> {built.path}")
        withheld = int8_withheld(built)
        if withheld:
            print(f"[{name}] WARNING: int8 withheld ({withheld}); fp32 will be served on CPU", flush=True)
    return built


def check_floors(spec: registry.ModelSpec, manifest: dict) -> None:
    """The spec's quality floors (min_accuracy, min_macro_f1) on fp32's test figures; a build
    below one fails (QualityGateError) and publishes nothing."""
    fp32 = (manifest.get("variants") or {}).get("fp32") or {}
    report = (manifest.get("quality_report") or {}).get("fp32") or {}
    for key, measured, what in (("min_accuracy", fp32.get("test_accuracy"), "test accuracy"),
                                ("min_macro_f1", report.get("macro_f1"), "test macro-F1")):
        floor = spec.quality.get(key)
        if floor is not None and measured is not None and measured < floor:
            raise QualityGateError(f"{spec.name}: fp32 {what} {measured:.4f} is below the spec's "
                                   f"quality.{key} = {floor}", gate=key, model=spec.name)


def variant_summary(art: artifact.Artifact) -> str:
    figures = {v: m.headline for v, m in art.meta.variants.items()}
    text = ", ".join(f"{v}: {x:.4f}" + ("" if kind == "accuracy" else f" {kind}") for v, (kind, x) in figures.items())
    report = art.manifest.get("quality_report") or {}
    served = "int8" if "int8" in report else "fp32"
    if served in report:
        text += f"; macro-F1 {served} {report[served]['macro_f1']:.4f}"
    return text


def int8_withheld(art: artifact.Artifact) -> str | None:
    """Why the build withheld int8, or None when it was published (or never attempted)."""
    return art.meta.quantization.withheld_reason if art.meta.quantization else None


@dataclass
class BuildOutcome:
    name: str
    status: str          # present | built | built, int8 withheld | failed
    seconds: float
    variants: str = ""
    error: str = ""

    @property
    def servable(self) -> bool:
        return self.status != "failed"


def build_many(names: list[str], overrides: dict[str, Any] | None = None, *, root: Path | None = None,
               force: bool = False, retrain: bool = False, progress: bool = True) -> list[BuildOutcome]:
    """Build each model in turn; a failure is reported and the next model is built all the same."""
    outcomes = []
    for name in names:
        started = time.time()
        before = artifact.latest_version_dir(name, root)  # a listing: build() verifies the checksums once
        try:
            art = build(name, overrides, root=root, force=force, retrain=retrain, progress=progress)
        except Exception as exc:
            if isinstance(exc, (QualityGateError, artifact.ArtifactError, DataMissing, UsageError)):
                print(f"[{name}] FAILED: {exc}", file=sys.stderr, flush=True)
            else:  # a bug, not a gate: show where, then go on with the next model
                traceback.print_exc()
            outcomes.append(BuildOutcome(name, "failed", time.time() - started, error=f"{type(exc).__name__}: {exc}"))
            continue
        status = ("present" if art.path == before else
                  "built, int8 withheld" if int8_withheld(art) else "built")
        outcomes.append(BuildOutcome(name, status, time.time() - started, f"v{art.version} {variant_summary(art)}"))
    return outcomes


def summary_table(outcomes: list[BuildOutcome]) -> str:
    rows = [("model", "status", "time", "variants (test accuracy or bits/char) / error")]
    rows += [(o.name, o.status, f"{o.seconds:.0f}s", o.variants or o.error) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows)
