"""`edgestack bundle MODEL`: a self-contained folder + .tar.gz for a small device.

    bundles/<name>-v<version>/
        model.onnx                          the int8 model (as exported, verified by its sha256)
        model.ort                           the same in ONNX Runtime's ORT format (pre-optimized)
                                            (generators have two graphs: step.* and prompt.*)
        required_operators.config           operators for an ORT minimal build (--include_ops_by_config)
        required_operators_and_types.config the same with types (--enable_reduced_operator_type_support)
        manifest.json                       what it is, how to feed it, labels, accuracy, checksums,
                                            runtime compatibility (ORT format, opset, ISA, oldest onnxruntime)
        golden.npz                          a few real test inputs and this bundle's answers to them
                                            (`python -m edge_runner --health`; the update agent's health check)
        source/artifact-manifest.json,      the source artifact's manifest and signature, when it is signed:
        source/model.sig                    proof that model.onnx is the signed artifact's int8 graph
        model.sig                           the bundle's own signature (every file), with a signing key
                                            (EDGESTACK_SIGNING_KEY): OpenSSF model-signing, EC P-256
        labels.txt                          one label per line
        edge_runner/                        the runner: onnxruntime + numpy only (python -m edge_runner)
        <extra files the family needs>      vocabulary / tokenizer for text models
        README.txt
    bundles/<name>-v<version>.tar.gz        the folder, archived reproducibly

The folder is written under a staging name and renamed when complete; the archive is
written to a temporary name and renamed, so neither is ever seen half-written.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bundle.edge_runner.health import GOLDEN, PROBABILITY_TOLERANCE, write_golden
from edgestack import artifact, registry
from edgestack.errors import UsageError

EDGE_PACKAGE = Path(__file__).resolve().parent / "edge_runner"
COMMON_FILES = ("__init__.py", "__main__.py", "health.py", "agent.py")
GOLDEN_ROWS = 8  # golden inputs kept: the ones the model answers most confidently (a health check, not a benchmark)
BUNDLE_SCHEMA = 1


@dataclass
class Bundle:
    path: Path
    archive: Path | None
    manifest: dict


sha256 = artifact.sha256_file


def convert_to_ort(graphs: list[str], out_dir: Path, target_platform: str | None) -> tuple[Path, Path]:
    """<role>.onnx in out_dir -> <role>.ort (optimizations fixed at conversion) for each graph,
    plus the minimal-build operator configs covering all of them."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        for role in graphs:
            shutil.copy(out_dir / f"{role}.onnx", work / "in" / f"{role}.onnx")
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(work / "in", output_dir=work / "out",
                                       optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform=target_platform, enable_type_reduction=True)
        configs = list((work / "out").glob("*.config"))
        for role in graphs:
            shutil.move(work / "out" / f"{role}.ort", out_dir / f"{role}.ort")
        if len(configs) != 1:
            raise RuntimeError(f"ORT conversion wrote {[p.name for p in (work / 'out').iterdir()]}, expected one .config")
        # The converter names absolute temp paths in comments; name the bundle files instead.
        typed = re.sub(r"(?m)^# - .*/([^/]+\.ort)$", r"# - \1", configs[0].read_text())
    typed_path = out_dir / "required_operators_and_types.config"
    typed_path.write_text(typed)
    # Without type information: "domain;opset;Op1,Op2" per line (the {...} type lists removed).
    plain_path = out_dir / "required_operators.config"
    plain_path.write_text(re.sub(r"\{[^{}]*(\{[^{}]*\}[^{}]*)*\}", "", typed))
    return plain_path, typed_path


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "__pycache__" in info.name:
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def write_archive(folder: Path, archive: Path) -> Path:
    """folder -> archive (.tar.gz), same bytes for the same files (sorted, no times, no owners)."""
    tmp = archive.with_name(archive.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [folder, *sorted(folder.rglob("*"))]:
            tar.add(path, arcname=str(Path(folder.name) / path.relative_to(folder)), recursive=False,
                    filter=_tar_filter)
    os.replace(tmp, archive)
    return archive


def readme(manifest: dict) -> str:
    name = manifest["name"]
    needs = " ".join(manifest["runner"]["requires"])
    return f"""{name} v{manifest['version']} ({manifest['task']}, {manifest['variant']}) -- an edgestack bundle

Needs only: pip install {needs}

Command line (from this folder):
    python -m edge_runner INPUT...            one answer per input (--json, --top-k, --threads, --format onnx)
    python -m edge_runner --help

Python:
    import sys; sys.path.insert(0, "<this folder>")
    import edge_runner
    model = edge_runner.load(threads=1)       # *.ort graphs; load(model_format="onnx") for *.onnx
    {manifest['runner']['python_api']}

A reduced ONNX Runtime for a device (only the operators this model uses), from an
onnxruntime source checkout:
    ./build.sh --config MinSizeRel --minimal_build --disable_ml_ops --disable_exceptions \\
        --include_ops_by_config <this folder>/required_operators_and_types.config \\
        --enable_reduced_operator_type_support --build_wheel
A minimal build loads the .ort files only (not the .onnx ones).
The .ort files were converted with onnxruntime {manifest['converted_with']['onnxruntime']} for target
'{manifest['converted_with']['target_platform']}' (ORT format {manifest['runtime']['ort_format_version']}); the oldest
onnxruntime that loads and answers them: {manifest['runtime']['min_onnxruntime']}{
    '' if manifest['runtime']['min_onnxruntime_measured'] else ' (not measured: the converter)'}.

Health check (golden inputs vs the answers this bundle was built with):
    python -m edge_runner --health

Files and their sha256 are listed in manifest.json (`python -m edge_runner --check ...` verifies them).
"""


def copy_family_processing(module: str, folder: Path) -> None:
    """The family's numpy-only processing (and the common module it imports) into the bundle's
    edge_runner/families/, where the edge runner imports it from."""
    source = Path(importlib.util.find_spec(module).origin)
    folder.mkdir()
    (folder / "__init__.py").write_text('"""The model family\'s processing, copied from edgestack/families/."""\n')
    for file in (source.parent / "common.py", source):
        shutil.copy(file, folder / file.name)


def ort_format_version(path: Path) -> str:
    """The ORT format version an .ort file was written in (its flatbuffer's ort_version)."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        InferenceSession,
    )

    return InferenceSession.InferenceSession.GetRootAsInferenceSession(path.read_bytes(), 0).OrtVersion().decode()


def opsets(path: Path) -> dict[str, int]:
    """The opset of each operator domain the .onnx graph's nodes use ("ai.onnx": the default domain)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    used = {node.domain or "ai.onnx" for node in model.graph.node} | {"ai.onnx"}
    return {(entry.domain or "ai.onnx"): entry.version for entry in model.opset_import
            if (entry.domain or "ai.onnx") in used}


TARGET_ISA = {None: "portable: any CPU onnxruntime runs on (x86-64 with or without AVX2/AVX-512, arm64)",
              "arm": "arm64 (the .ort may use ARM-only int8 kernels; the .onnx stays portable)",
              "amd64": "x86-64 (the .ort may use x86-only NCHWc layouts; the .onnx stays portable)"}


def pick_golden(inputs: dict, expected: dict, rows: int = GOLDEN_ROWS) -> tuple[dict, dict]:
    """Keep the `rows` inputs the model answers with the largest top-1 margin (a health check must
    not fail because another CPU rounds a near-tie the other way); arrays that are not per row
    (a generator's prompt) are kept whole."""
    probabilities = expected.get("probabilities")
    if probabilities is None or probabilities.ndim != 2 or len(probabilities) <= rows:
        return inputs, expected
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    keep = np.sort(np.argsort(-(top2[:, 1] - top2[:, 0]), kind="stable")[:rows])
    n = len(probabilities)
    cut = lambda block: {k: (v[keep] if len(v) == n else v) for k, v in block.items()}
    return cut(inputs), cut(expected)


def golden_answers(folder: Path, inputs: dict) -> dict:
    """The bundle's own runner (this Python, the bundle's .ort graphs) answers the golden inputs:
    run as a separate process, so it is the shipped code that answers, not the source tree's."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "inputs.npz", **inputs)
        script = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import edge_runner as e; "
                  "d = np.load(sys.argv[2]); inputs = {k: d[k] for k in d.files}; m = e.load(sys.argv[1], threads=1); "
                  "np.savez(sys.argv[3], **e.family_module(m.manifest).answers(m, inputs))")
        env = {**os.environ, "EDGE_RUNNER_ANY_RUNTIME": "1"}
        run = subprocess.run([sys.executable, "-c", script, str(folder), str(Path(tmp) / "inputs.npz"),
                              str(Path(tmp) / "expected.npz")], capture_output=True, text=True, env=env, cwd=tmp)
        if run.returncode:
            raise RuntimeError(f"the bundle's runner failed on its golden inputs: {run.stderr.strip()[-600:]}")
        with np.load(Path(tmp) / "expected.npz") as data:
            return {k: data[k] for k in data.files}


def sign_bundle(folder: Path, key: Path) -> Path:
    """The bundle's signature over every one of its files (edgestack/signing.py: OpenSSF model-signing,
    EC P-256): model.sig, which the update agent checks with --trusted-key before it installs."""
    from edgestack import signing

    return signing.sign_directory(folder, key)


def make_bundle(name: str, out_root: Path | str = "bundles", *, variant: str = "int8",
                target_platform: str | None = None, archive: bool = True, root: Path | None = None,
                progress: bool = True, golden: dict | None = None, runtimes: list[str] | None = None,
                version: str | None = None, signing_key: Path | str | None = None) -> Bundle:
    """golden: real test inputs for the health check (the family's `answers` format, e.g. {"pixels":
    uint8 [N, 28, 28]}); without them the family's synthetic example. runtimes: onnxruntime
    versions to measure the oldest that loads and answers the bundle (bundle/runtimes.py); None:
    not measured, the manifest says so and names the converter's version as the minimum.
    version: the artifact version to bundle (default: the latest). signing_key: sign the bundle with this
    private key (default EDGESTACK_SIGNING_KEY; none: unsigned, checksums only)."""
    say = print if progress else (lambda *a, **k: None)
    spec = registry.get(name)
    edge = registry.stage(name, "edge")
    art = (artifact.load(Path(root or artifact.default_root()) / name / str(version)) if version is not None
           else artifact.load_latest(name, root))  # verifies every checksum of the source artifact
    m = art.meta
    withheld = m.quantization.withheld_reason if m.quantization else None
    if variant == "int8" and "int8" not in m.variants and withheld:
        say(f"[{name}] WARNING: the build withheld int8 ({withheld}); bundling fp32 instead")
        variant = "fp32"
    if variant not in m.variants:
        raise UsageError(f"{name} v{art.version} has no {variant!r} variant (has {sorted(m.variants)})")
    edge_module = importlib.import_module(edge)
    out_root = Path(out_root).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / f"{name}-v{art.version}"
    staging = out_root / f".staging-{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        started = time.time()
        sources = edge_module.graphs(art.manifest, variant)  # role -> artifact file
        for role, relative in sources.items():
            shutil.copy(art.file(relative), staging / f"{role}.onnx")
        say(f"[{name}] converting {variant} {'/'.join(sources)} graph(s) to ORT format "
            f"(target: {target_platform or 'portable'})")
        convert_to_ort(list(sources), staging, target_platform)
        for relative in edge_module.bundle_files(art.manifest):  # vocabulary, tokenizer, ...
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(art.file(relative), staging / relative)
        runner_dir = staging / "edge_runner"
        runner_dir.mkdir()
        for filename in COMMON_FILES:
            shutil.copy(EDGE_PACKAGE / filename, runner_dir / filename)
        shutil.copy(Path(importlib.util.find_spec("edgestack.signing").origin), runner_dir / "signing.py")
        if (art.path / "model.sig").is_file():  # the artifact's own signature travels with the bundle
            (staging / "source").mkdir()
            shutil.copy(art.path / "model.sig", staging / "source" / "model.sig")
            shutil.copy(art.path / "manifest.json", staging / "source" / "artifact-manifest.json")
        module_file = Path(importlib.util.find_spec(edge).origin)
        shutil.copy(module_file, runner_dir / module_file.name)
        copy_family_processing(spec.stages.processing, runner_dir / "families")
        labels = m.labels or []
        if labels:
            (staging / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
        import onnxruntime

        first = next(iter(sources))
        as_read = art.manifest
        manifest = {
            "bundle_schema": BUNDLE_SCHEMA,
            "name": name, "version": art.version, "family": spec.family, "task": m.task, "variant": variant,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "graphs": {role: {"ort": f"{role}.ort", "onnx": f"{role}.onnx"} for role in sources},
            "runner": {"module": module_file.stem, "command": "python -m edge_runner INPUT...",
                       "requires": list(getattr(edge_module, "REQUIRES", ("onnxruntime", "numpy"))),
                       "python_api": edge_module.API_EXAMPLE,
                       # what `python -m edge_runner agent --trusted-key` needs beyond `requires`
                       "verifier_requires": ["cryptography"]},
            # blocks the edge runner reads, copied verbatim from the artifact's manifest (it stays on dicts)
            "inputs": as_read["inputs"], "outputs": as_read["outputs"],
            "preprocessing": as_read.get("preprocessing"), "labels": labels,
            **{k: as_read[k] for k in ("tokenizer", "vocabulary", "generation", "prompt_graph", "max_length")
               if k in as_read},
            "quality": m.variants[variant].scores(),
            "source": {"artifact": str(art.path),
                       "files": {role: {"file": rel, "sha256": sha256(art.file(rel))} for role, rel in sources.items()}},
            "converted_with": {"onnxruntime": onnxruntime.__version__, "optimization_style": "Fixed",
                               "target_platform": target_platform or "portable"},
            "minimal_build": {"required_operators": "required_operators.config",
                              "required_operators_and_types": "required_operators_and_types.config"},
            "runtime": {"ort_format_version": ort_format_version(staging / f"{first}.ort"),
                        "opset": opsets(staging / f"{first}.onnx"),
                        "target_isa": TARGET_ISA[target_platform],
                        "min_onnxruntime": onnxruntime.__version__,
                        "min_onnxruntime_measured": False},
            "health": {"file": GOLDEN, "probability_tolerance": PROBABILITY_TOLERANCE},
        }
        manifest["files"] = {}  # filled below, README included
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")  # the runner reads it for golden
        inputs = golden if golden is not None else edge_module.example_golden(manifest)
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        inputs, expected = pick_golden(inputs, golden_answers(staging, inputs))
        write_golden(staging / GOLDEN, inputs, expected)
        manifest["health"].update(inputs=len(next(iter(expected.values()))),
                                  source="test split" if golden is not None else "synthetic example")
        if runtimes:
            from bundle.runtimes import measure

            say(f"[{name}] measuring which onnxruntime versions load and answer it ({', '.join(runtimes)})")
            manifest["runtime"].update(measure(staging, runtimes))
        (staging / "README.txt").write_text(readme(manifest))
        manifest["files"] = {
            str(p.relative_to(staging)): {"sha256": sha256(p), "bytes": p.stat().st_size}
            for p in sorted(staging.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
            and p != staging / "manifest.json"}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        from edgestack.settings import get_settings

        key = signing_key or get_settings().signing_key
        if key:
            sign_bundle(staging, Path(key))
        manifest["signed"] = bool(key)
        if final.exists():
            old = out_root / f".old-{final.name}-{os.getpid()}"
            final.rename(old)
            shutil.rmtree(old)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    archive_path = write_archive(final, out_root / f"{final.name}.tar.gz") if archive else None
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    say(f"[{name}] bundle {final} ({size / 1024:.0f} KiB"
        + (f", archive {archive_path.stat().st_size / 1024:.0f} KiB" if archive_path else "")
        + f") in {time.time() - started:.1f}s")
    return Bundle(final, archive_path, manifest)
