"""Train + export a served model into a new artifact version (the `edgestack build` step)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from edgestack import artifact, registry


def runs_root(root: Path | None = None) -> Path:
    """Training run folders (checkpoints, curves) live beside the artifacts folder."""
    return (root or artifact.default_root()).parent / "runs"


def quiet_export_logs() -> None:
    """torch.onnx warns about every missing torchvision op; nothing a user can act on."""
    for noisy in ("torch.onnx", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def make_config(spec: registry.ModelSpec, overrides: dict[str, Any] | None = None):
    config_cls = registry.load_object(spec.train_module + ":Config")
    values = {**spec.defaults, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{spec.name}: unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
    return config_cls(**values)


def train(name: str, overrides: dict[str, Any] | None = None, *, run_dir: Path | None = None,
          progress: bool = True) -> tuple[Path, dict]:
    spec = registry.get(name)
    cfg = make_config(spec, overrides)
    run_dir = Path(run_dir or runs_root() / name)
    metrics = registry.load_object(spec.train_module + ":train")(cfg, run_dir, progress=progress)
    return run_dir, metrics


def export(name: str, run_dir: Path, *, root: Path | None = None, progress: bool = True) -> artifact.Artifact:
    spec = registry.get(name)
    quiet_export_logs()
    staging = artifact.fresh_version_dir(name, root)
    try:
        registry.load_object(spec.export_module + ":export")(run_dir, staging, name=name, progress=progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never leave a half-built version behind
        raise
    return artifact.load(artifact.publish(staging))


def build(name: str, overrides: dict[str, Any] | None = None, *, root: Path | None = None,
          force: bool = False, progress: bool = True) -> artifact.Artifact:
    """Build `name` unless a verified artifact already exists (or force)."""
    if not force:
        try:
            existing = artifact.load_latest(name, root)
            if progress:
                print(f"[{name}] artifact v{existing.version} present and verified: {existing.path}")
            return existing
        except artifact.ArtifactError as exc:
            if progress and artifact.latest_version_dir(name, root) is not None:
                print(f"[{name}] existing artifact unusable ({exc}); rebuilding")
    started = time.time()
    if progress:
        print(f"[{name}] building: training then export ({registry.get(name).description})")
    run_dir, metrics = train(name, overrides, run_dir=runs_root(root) / name,
                             progress=progress)
    built = export(name, run_dir, root=root, progress=progress)
    if progress:
        accs = ", ".join(f"{v}: {m['test_accuracy']:.4f}" if "test_accuracy" in m else
                         f"{v}: {m.get('test_bits_per_char', float('nan')):.4f} bits/char"
                         for v, m in built.variants.items())
        print(f"[{name}] built v{built.version} in {time.time() - started:.0f}s ({accs}) -> {built.path}")
    return built
