"""Other CPUs on this x86 machine, by QEMU's user-mode emulation (no VM, no binfmt), and other
onnxruntime versions, for the device checks of edge bundles (issue 21).

- arm64: a Debian arm64 root with python3.11 run by `qemu-aarch64 -L ROOT`, the aarch64
  wheels of onnxruntime, numpy (and tokenizers) unpacked on its PYTHONPATH;
- AVX2-only x86: this machine's own Python under `qemu-x86_64 -cpu Haswell-noTSX`: the CPU
  model has AVX2 and no AVX-512/VNNI, and QEMU's TCG has no AVX-512 at all, so onnxruntime
  picks the kernels an AVX2-only CPU would (its u8 x s8 int8 kernels saturate exactly as on
  real AVX2 hardware: `int8_probe_model` shows it);
- other onnxruntime versions on this machine: their x86-64 wheels unpacked side by side.

The emulators and the root are built once by scripts/emulators.sh into .emu/; wheels are fetched once by `pip download` into .emu/wheels/ and
unpacked there (`python -m bundle.emulate wheels` fetches the default set ahead of time).
Emulated timings mean nothing; answers do.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from edgestack.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
HASWELL = "Haswell-noTSX"  # Haswell without TSX: TCG has no TSX either, so QEMU does not warn about it
PLATFORMS = {"aarch64": ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                         "manylinux2014_aarch64"],
             "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                        "manylinux2014_x86_64"]}
# onnxruntime builds older than 1.19 were compiled against numpy 1.x and refuse numpy 2
NUMPY_1 = "1.26.4"
NUMPY_2_FROM = (1, 19)
OLDEST_TESTED = "1.15.1"


def emu_dir() -> Path:
    return REPO / ".emu"


def prepare(what: str = "all") -> None:
    """Build the emulators (and the arm64 root) when missing: scripts/emulators.sh, cached."""
    ready = {"qemu": [emu_dir() / "qemu/.installed"],
             "all": [emu_dir() / "qemu/.installed", emu_dir() / "arm64-root/.installed"]}[what]
    if all(p.exists() for p in ready):
        return
    run = subprocess.run(["bash", str(REPO / "scripts/emulators.sh"), what])
    if run.returncode:
        raise UsageError(f"scripts/emulators.sh {what} failed (exit {run.returncode}); see its output above")


def installed_version(dist: str) -> str:
    return importlib.metadata.version(dist)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def wheel(platform: str, dist: str, version: str) -> Path:
    """The unpacked wheel of dist==version for platform (aarch64 | x86_64), CPython 3.11:
    .emu/wheels/<platform>/<dist>-<version>/, fetched with pip once."""
    target = emu_dir() / "wheels" / platform / f"{dist}-{version}"
    if (target / ".unpacked").exists():
        return target
    download = emu_dir() / "wheels" / "download"
    download.mkdir(parents=True, exist_ok=True)
    platform_args = [arg for tag in PLATFORMS[platform] for arg in ("--platform", tag)]
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                              *platform_args, "--python-version", "3.11", "--dest", str(download),
                              f"{dist}=={version}"], capture_output=True, text=True)
    if fetched.returncode:
        raise UsageError(f"pip could not fetch {dist}=={version} for {platform}: "
                         f"{(fetched.stderr.strip().splitlines() or ['?'])[-1]}")
    stem = dist.replace("-", "_")
    files = [p for p in download.glob(f"{stem}-{version}-*.whl") if platform in p.name]
    if not files:
        raise UsageError(f"pip fetched no {platform} wheel of {dist}=={version}")
    shutil.rmtree(target, ignore_errors=True)
    with zipfile.ZipFile(files[0]) as archive:
        archive.extractall(target)
    for so in target.rglob("*.so*"):
        so.chmod(0o755)
    # Bytecode for the emulated python (.pyc is the same on every CPU; 3.11 both sides): compiling
    # every module at import under emulation would triple the emulated start-up.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(target)], capture_output=True)
    files[0].unlink()
    (target / ".unpacked").write_text(files[0].name + "\n")
    return target


def numpy_for(onnxruntime: str) -> str:
    """The numpy an onnxruntime version can import with."""
    return installed_version("numpy") if version_tuple(onnxruntime) >= NUMPY_2_FROM else NUMPY_1


ARM64_CPU = "cortex-a72"  # a Raspberry Pi 4's core (NEON, no dot-product instructions); cortex-a76: a Pi 5's


def arm64_python(onnxruntime: str | None = None, *, tokenizers: bool = False,
                 cpu: str | None = None) -> tuple[list[str], dict]:
    """(command prefix, environment) that runs the emulated arm64 python3.11 on `cpu` (a QEMU CPU
    model, default ARM64_CPU) with onnxruntime (default: this venv's
    version), numpy (and tokenizers) on its path."""
    prepare("all")
    onnxruntime = onnxruntime or installed_version("onnxruntime")
    root = emu_dir() / "arm64-root"
    paths = [wheel("aarch64", "onnxruntime", onnxruntime), wheel("aarch64", "numpy", numpy_for(onnxruntime))]
    if tokenizers:
        paths.append(wheel("aarch64", "tokenizers", installed_version("tokenizers")))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join(map(str, paths)),
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    cpu = cpu or ARM64_CPU
    return [str(emu_dir() / "qemu/bin/qemu-aarch64"), "-cpu", cpu, "-L", str(root), str(root / "usr/bin/python3.11")], env


def haswell_python() -> list[str]:
    """Command prefix: this Python under an emulated AVX2-only x86-64 (no AVX-512, no VNNI)."""
    prepare("qemu")
    return [str(emu_dir() / "qemu/bin/qemu-x86_64"), "-cpu", HASWELL, sys.executable]


def x86_runtime_env(onnxruntime: str) -> dict:
    """Environment for this Python with another onnxruntime (and the numpy it needs) first on its path."""
    paths = [wheel("x86_64", "onnxruntime", onnxruntime)]
    if numpy_for(onnxruntime) != installed_version("numpy"):
        paths.append(wheel("x86_64", "numpy", numpy_for(onnxruntime)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "PYTHONNOUSERSITE": "1"}


EXACT_PRODUCT = 255 * 127 * 64  # 2,072,640: VNNI (and the reference); AVX2's u8 x s8 kernel saturates to 1,048,544


def int8_probe_model() -> bytes:
    """A 255 x 127 MatMulInteger over 64 terms: 2,072,640 where ORT's u8 x s8 kernel is exact
    (VNNI), 1,048,544 where it saturates (AVX2's pmaddubsw adds pairs into int16)."""
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 64])
    b = helper.make_tensor_value_info("b", TensorProto.INT8, [64, 1])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "probe", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


# ------------------------------------------------ one ORT session in another (emulated) process

def _send(stream, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    stream.write(struct.pack("<Q", buffer.tell()) + buffer.getvalue())
    stream.flush()


def _receive(stream) -> dict | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    with np.load(io.BytesIO(stream.read(size)), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def serve_session(path: str, threads: int, probe: str | None = None) -> int:
    """The worker: one CPU session of `path`; its input/output specs as a JSON line (with the
    int8 probe's answer when `probe` names its model file), then framed npz feeds in on stdin,
    framed npz outputs (o0, o1, ...) out on stdout, until EOF."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    out = sys.stdout.buffer
    specs = {"inputs": [{"name": i.name, "shape": i.shape, "type": i.type} for i in session.get_inputs()],
             "outputs": [o.name for o in session.get_outputs()], "onnxruntime": ort.__version__}
    if probe:
        probe_session = ort.InferenceSession(probe, providers=["CPUExecutionProvider"])
        feeds = {"a": np.full((1, 64), 255, np.uint8), "b": np.full((64, 1), 127, np.int8)}
        specs["int8_probe"] = int(probe_session.run(None, feeds)[0][0, 0])
    out.write((json.dumps(specs) + "\n").encode())
    out.flush()
    while (feeds := _receive(sys.stdin.buffer)) is not None:
        _send(out, {f"o{i}": value for i, value in enumerate(session.run(None, feeds))})
    return 0


class RemoteSession:
    """An ORT session of `path` running in `prefix` (e.g. haswell_python(), or [sys.executable]
    for this CPU): run(feeds) -> outputs, as in-process. Use as a context manager; the worker
    process is stopped (by its pid) on exit, also on errors."""

    def __init__(self, prefix: list[str], path: Path | str, threads: int = 2, *, probe: Path | None = None):
        """probe: a file of int8_probe_model(): its answer on that CPU comes in specs["int8_probe"]."""
        self.process = subprocess.Popen([*prefix, "-m", "bundle.emulate", "session", str(path), "--threads",
                                         str(threads), *(["--probe", str(probe)] if probe else [])],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        line = self.process.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"the session worker for {Path(path).name} exited before it started")
        self.specs = json.loads(line)
        self.input_names = [i["name"] for i in self.specs["inputs"]]

    def run(self, feeds: dict) -> list[np.ndarray]:
        _send(self.process.stdin, feeds)
        outputs = _receive(self.process.stdout)
        if outputs is None:
            raise RuntimeError(f"the session worker died (exit {self.process.wait()})")
        return [outputs[f"o{i}"] for i in range(len(outputs))]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["session"]:  # the worker of RemoteSession
        worker = argparse.ArgumentParser(prog="python -m bundle.emulate session")
        worker.add_argument("path")
        worker.add_argument("--threads", type=int, default=2)
        worker.add_argument("--probe")
        args = worker.parse_args(argv[1:])
        return serve_session(args.path, args.threads, args.probe)
    parser = argparse.ArgumentParser(prog="python -m bundle.emulate",
                                     description="Fetch what the emulated devices need ahead of time (cached in "
                                                 ".emu/): the emulators, the arm64 root, and the aarch64 wheels "
                                                 "of this venv's onnxruntime, numpy and tokenizers.")
    parser.add_argument("what", choices=["all", "qemu"], nargs="?", default="all")
    args = parser.parse_args(argv)
    try:
        prepare(args.what)
        if args.what == "all":
            arm64_python(tokenizers=True)
            # the oldest onnxruntime candidate (bundle/runtimes.py) and its numpy, for the test that
            # measures which versions load a bundle without fetching during the test
            x86_runtime_env(OLDEST_TESTED)
    except UsageError as exc:
        print(f"!! {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
