"""Start a server as a real child process and wait until it is ready: `edgestack serve`, or a
real Triton Inference Server (the tritonserver `make triton` unpacks) on a model repository.

Used by the benchmark and the tests, so both exercise exactly what a user runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import httpx
import psutil

from edgestack.settings import get_settings

# free_port() hands out ports from 20000-29999: below Linux's ephemeral range (32768-60999 by
# default), where the kernel picks the port of every bind(0) and outgoing connection (a local Ray
# alone listens on dozens there: a port found free that way was taken by Ray's own processes before
# Serve's proxy bound it, "Failed to bind to address"), above Ray's worker ports (10002-19999), and
# below Serve's direct-ingress blocks (30000-30999). Each port is claimed with a lock file held for
# this process's life, so two processes (pytest-xdist workers, two benchmarks) never get the same one.
FREE_PORTS = range(20000, 30000)
_claimed_ports: dict[int, int] = {}  # port -> descriptor of its lock file (closed when the process ends)


def free_port() -> int:
    """A port nothing listens on now, claimed for this process (no other caller of free_port on
    the machine gets it while this process lives). Something else may still take it before the
    server binds it: running_process checks that the server that answers is its own."""
    import fcntl
    import random

    folder = Path(tempfile.gettempdir()) / f"edgestack-ports-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    for port in random.sample(FREE_PORTS, 500):
        if port in _claimed_ports:
            continue
        fd = os.open(folder / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as s:
                s.bind(("", port))  # all addresses: a listener on any of them makes the port taken
        except OSError:  # BlockingIOError: another process claimed it; EADDRINUSE: something uses it
            os.close(fd)
            continue
        _claimed_ports[port] = fd
        return port
    raise RuntimeError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1} after 500 tries")


# Every process a running_process starts, and everything they start, carries this variable with a
# value of its own (children inherit the environment): how readiness knows the server that answers
# is this run's and not another on a reused port, and how the stop finds every process of the run.
RUN_TOKEN = "SERVERPROC_RUN_TOKEN"


def run_processes(token: str) -> list[psutil.Process]:
    """The live processes whose environment carries `token` (this run's processes)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if process.environ().get(RUN_TOKEN) == token:
                found.append(process)
    return found


def _answered_by(port: int, token: str) -> bool | None:
    """True when a process of the run listens on `port`; None when this OS does not let us see
    (then readiness falls back to the HTTP answer alone)."""
    try:
        listening = {c.pid for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}
    except (psutil.AccessDenied, OSError):
        return None
    for pid in listening:
        with contextlib.suppress(psutil.Error, OSError):
            if psutil.Process(pid).environ().get(RUN_TOKEN) == token:
                return True
    return False


def _stop(proc: subprocess.Popen, token: str, grace: float) -> list[str]:
    """SIGTERM the top process and give it `grace` seconds to shut its own children down; then
    SIGKILL its process group and every process still carrying the run token (Ray starts some in
    sessions of their own). Returns 'pid cmdline' of each process that outlived the graceful stop."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    left, described = run_processes(token), []
    for process in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"{process.pid} {' '.join(process.cmdline())[:200]}")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the process, which is its own session
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    proc.wait()
    psutil.wait_procs(left, timeout=10)
    return described


@contextlib.contextmanager
def running_process(command: list[str], ready_url: str, *, env: dict | None = None, timeout: float = 120.0,
                    log_path: Path | None = None, what: str = "server", grace: float = 20.0):
    """Start `command`, yield the process once GET `ready_url` answers 200 from a process this
    call started; always stop it and everything it started afterwards, also on failure.

    The process runs in a session (process group) of its own with a per-run token in its
    environment (RUN_TOKEN): readiness needs the port's listener to carry it, and the stop kills
    the group and every process carrying it once the top process has exited (or `grace` seconds
    after SIGTERM). The yielded Popen also has `run_token`, `log_path` (None: a temporary file)
    and, after the stop, `leftovers`: the processes that outlived the graceful stop and were killed.
    Raises RuntimeError with the last output if it exits before it is ready, TimeoutError if it
    is not ready in `timeout` seconds (the output in both cases).
    """
    token = uuid.uuid4().hex
    port = urllib.parse.urlsplit(ready_url).port
    # A file, never a pipe: nobody reads a pipe while the server runs, and a full one stalls it.
    log = open(log_path, "w+") if log_path else tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(command, env={**os.environ, **(env or {}), RUN_TOKEN: token}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.run_token, proc.log_path, proc.leftovers = token, log_path, []

    def output() -> str:
        log.seek(0)
        return log.read()[-3000:]

    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}:\n{output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=2).status_code == 200 and _answered_by(port, token) is not False:
                    break
            if time.time() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout}s:\n{output()}")
            time.sleep(0.3)
        yield proc
    finally:
        proc.leftovers = _stop(proc, token, grace)
        log.close()


@contextlib.contextmanager
def running_server(models: list[str], *, port: int | None = None, env: dict | None = None,
                   timeout: float = 120.0, log_path: Path | None = None):
    """`edgestack serve`: yield (url, process) once GET /readyz answers 200; stop the server afterwards."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    # BentoML keeps Prometheus' multiprocess files in $BENTOML_HOME and wipes them when a
    # server starts: servers sharing a home erase each other's metrics. One home each.
    home = tempfile.mkdtemp(prefix="edgestack-bentoml-home-")
    command = [sys.executable, "-m", "cli", "serve", *models, "--port", str(port), "--host", "127.0.0.1"]
    try:
        with running_process(command, url + "/readyz", env={"BENTOML_HOME": home, **(env or {})},
                             timeout=timeout, log_path=log_path) as proc:
            yield url, proc
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ------------------------------------------------------------------ Triton Inference Server

REPO_ROOT = Path(__file__).resolve().parents[1]


def triton_home() -> Path:
    """Where `make triton` unpacks the nvidia-pytriton wheel: $EDGESTACK_TRITON_HOME, else <repo>/.triton."""
    return get_settings().triton_home or REPO_ROOT / ".triton"


def triton_server_dir(home: Path | None = None) -> Path:
    """The unpacked tritonserver (bin/, backends/python/ with the stub in place); FileNotFoundError if
    it, or the stub environment, is absent."""
    home = home or triton_home()
    server = home / "pytriton" / "tritonserver"
    for needed in (server / "bin/tritonserver", server / "backends/python/libtriton_python.so",
                   server / "backends/python/triton_python_backend_stub", home / "stub-env/bin/python3"):
        if not needed.is_file():
            raise FileNotFoundError(f"no {needed}: run `make triton` (unpacks the tritonserver of the "
                                    f"nvidia-pytriton wheel into {home})")
    return server


def triton_missing(home: Path | None = None) -> str | None:
    """Why no local tritonserver can run (what `make triton` would fetch), or None."""
    try:
        triton_server_dir(home)
    except FileNotFoundError as exc:
        return str(exc)
    return None


def triton_env(home: Path | None = None) -> dict[str, str]:
    """Environment for tritonserver and its Python-backend stubs. The stub embeds libpython3.X
    (this interpreter's, on LD_LIBRARY_PATH with the wheel's bundled libraries) and takes its
    sys.path from the first `python3` on PATH: the stub environment `make triton` builds
    (numpy<2, which the stub's numpy glue needs, then this venv's packages)."""
    home = home or triton_home()

    def joined(entries: list, current: str | None) -> str:
        return os.pathsep.join(dict.fromkeys(str(e) for e in [*entries, *(current or "").split(os.pathsep)] if e))

    return {
        "PATH": joined([home / "stub-env" / "bin"], os.environ.get("PATH")),
        "LD_LIBRARY_PATH": joined([sysconfig.get_config_var("LIBDIR"), home / "nvidia_pytriton.libs"],
                                  os.environ.get("LD_LIBRARY_PATH")),
    }


@contextlib.contextmanager
def running_triton(repo: Path, *, port: int | None = None, host: str = "127.0.0.1", env: dict | None = None,
                   timeout: float = 120.0, log_path: Path | None = None, home: Path | None = None,
                   grpc_port: int | None = None):
    """tritonserver on the model repository `repo`: yield (url, process) once GET /v2/health/ready
    answers 200 (every model loaded); stop it afterwards. HTTP only unless `grpc_port` is given;
    metrics are off, so nothing but the given ports is bound. A model that fails to load makes
    tritonserver exit, and this raise RuntimeError with its log."""
    server = triton_server_dir(home)
    port = port or free_port()
    command = [str(server / "bin" / "tritonserver"), f"--model-repository={Path(repo).resolve()}",
               f"--backend-directory={server / 'backends'}", f"--cache-directory={server / 'caches'}",
               f"--http-address={host}", f"--http-port={port}", "--allow-metrics=false",
               *([f"--grpc-address={host}", f"--grpc-port={grpc_port}"] if grpc_port else ["--allow-grpc=false"]),
               "--exit-on-error=true", "--exit-timeout-secs=10"]
    url = f"http://127.0.0.1:{port}"
    with running_process(command, url + "/v2/health/ready", env={**triton_env(home), **(env or {})},
                         timeout=timeout, log_path=log_path, what="tritonserver") as proc:
        yield url, proc


# ------------------------------------------------------------------ KServe's Python ModelServer

KSERVE_VENV = REPO_ROOT / ".venv-kserve"


def kserve_missing() -> str | None:
    """Why KServe's ModelServer cannot run here (`make kserve-venv` builds its venv), or None."""
    if not (KSERVE_VENV / "bin" / "python").is_file() or not list(KSERVE_VENV.glob(".installed-kserve-*")):
        return f"no KServe venv at {KSERVE_VENV}: run `make kserve-venv`"
    return None


@contextlib.contextmanager
def running_kserve(model: str, onnx_path: Path, *, threads: int, port: int | None = None,
                   grpc_port: int | None = None, timeout: float = 120.0, log_path: Path | None = None,
                   workers: int = 1):
    """KServe's own ModelServer (in .venv-kserve) serving `onnx_path` as `model` with the plain
    kserve.Model of benchmarks/kserve_peer.py: yield (url, process) once its model is ready."""
    missing = kserve_missing()
    if missing:
        raise FileNotFoundError(missing)
    port = port or free_port()
    command = [str(KSERVE_VENV / "bin" / "python"), str(REPO_ROOT / "benchmarks" / "kserve_peer.py"),
               "--model_name", model, "--onnx", str(onnx_path), "--threads", str(threads),
               "--http_port", str(port), "--grpc_port", str(grpc_port or free_port()), "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with running_process(command, f"{url}/v2/models/{model}/ready", timeout=timeout, log_path=log_path,
                         what="kserve ModelServer") as proc:
        yield url, proc
