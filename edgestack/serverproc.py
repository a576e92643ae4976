"""Start `edgestack serve` as a real child process and wait until it is ready.

Used by the benchmark and the tests, so both exercise exactly what a user runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(models: list[str], *, port: int | None = None, env: dict | None = None,
                   timeout: float = 120.0, log_path: Path | None = None):
    """Yield (url, process) once GET /readyz answers 200; stop the server afterwards.

    Raises RuntimeError with the server's last output if it exits before it is ready.
    """
    port = port or free_port()
    # BentoML keeps Prometheus' multiprocess files in $BENTOML_HOME and wipes them when a
    # server starts: servers sharing a home erase each other's metrics. One home each.
    home = tempfile.mkdtemp(prefix="edgestack-bentoml-home-")
    env = {"BENTOML_HOME": home, **(env or {})}
    # A file, never a pipe: nobody reads a pipe while the server runs, and a full one stalls it.
    log = open(log_path, "w+") if log_path else tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "edgestack.cli", "serve", *models, "--port", str(port),
                             "--host", "127.0.0.1"], env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def output() -> str:
        log.seek(0)
        return log.read()[-3000:]

    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            if time.time() > deadline:
                raise TimeoutError(f"server not ready after {timeout}s")
            time.sleep(0.3)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(home, ignore_errors=True)
