"""Every core serves: several server worker processes behind one port, and what they share.

BentoML starts `workers` identical processes (its circus arbiter), each with its own event
loop, models, sessions and batchers, and each listening on a socket of its own
(`own_listening_socket`: SO_REUSEPORT, instead of BentoML's one shared socket). One
Python event loop tops out at about one core of front-end work (HTTP parsing, routing,
middleware: ~0.5 ms of CPU per small request), so a server with one worker leaves the other
cores to ONNX Runtime alone; small models want more loops, not more intra-op threads.

- `plan()`: how many workers and how many ORT intra-op threads each session gets, so that
  workers x threads fits the cores. EDGESTACK_WORKERS / `--workers` wins; by default the
  threads a worker needs are the most any served model's build measured worth having
  (export/threads.py; a model whose batch-1 run takes under FRONT_END_MS on one thread
  counts as one thread: its requests cost more than its inference), and the workers are
  the cores divided by that. `edgestack serve` prints the plan and why.
- What must hold for the server as a whole, not per process, lives in a folder shared by
  the workers of one server (`run_dir()`: named after the arbiter, their parent):
  `InFlight`, the server-wide bound on requests inside the server (one counter in a shared
  memory-mapped file, changed under a file lock); and `Control`, a Unix socket per worker on
  which any worker asks all of them for their statistics, or to load or unload a model
  (`SharedModels`).
- Per process and correct as it is: deadlines (per request), load shedding (each loop judges
  its own queue), Server-Sent-Event streams (a stream lives on the worker that accepted it),
  graceful drain (the arbiter passes SIGTERM to every worker; each drains its own requests,
  serving/admission.py). /metrics is one view: BentoML runs Prometheus in multiprocess mode
  (PROMETHEUS_MULTIPROC_DIR), every worker's counters summed. The HTTP and v2 gRPC ports are
  bound by every worker with SO_REUSEPORT: the kernel spreads connections over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import mmap
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgestack.errors import InputError
from edgestack.settings import Settings, get_settings
from serving.repository import ModelRepository
from serving.stats import merged

log = logging.getLogger("edgestack.serving")

FRONT_END_MS = 1.0   # a batch-1 run faster than this on one thread gains nothing from a second one
SLOTS = 256          # in-flight counters: [0] the server's total, [wid] each worker's share


# ---------------------------------------------------------------------- how many, how many threads

@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    threads: int      # most ORT intra-op threads per session in each worker
    reason: str

    def describe(self) -> str:
        return (f"{self.workers} worker process(es) x at most {self.threads} ORT thread(s) per model "
                f"({self.reason})")


def model_threads(name: str, settings: Settings, cores: int) -> tuple[int, str]:
    """The threads one served model needs per worker, and why (from its manifest's measurements)."""
    from edgestack import artifact
    from edgestack.runtime import choose_variant

    meta = artifact.load_latest(name, check=False).meta
    variant = choose_variant(list(meta.variants), ["CPUExecutionProvider"], settings.variant)
    info = meta.variants[variant]
    if meta.task == "text-generation":  # stepping at batch 1: EDGESTACK_LSTM_THREADS (serving/tune.py)
        return settings.lstm_threads, f"{name}: {settings.lstm_threads} (stepping)"
    one = (info.threads_batch1_ms or {}).get("1")
    if one is not None and one < FRONT_END_MS:
        return 1, f"{name}: 1 ({one:.2f} ms on one thread)"
    if info.threads:
        return info.threads, f"{name}: {info.threads} (measured)"
    return cores, f"{name}: {cores} (not measured)"


def plan(names: list[str], settings: Settings | None = None, cores: int | None = None) -> WorkerPlan:
    """Workers and threads for serving `names` (see the module's docstring); never fails: a model
    whose manifest cannot be read counts as needing every core."""
    settings = settings or get_settings()
    cores = cores or os.cpu_count() or 1
    if settings.device in ("cuda", "tensorrt"):  # one GPU: one process holds it
        workers = settings.workers or 1
        return WorkerPlan(workers, settings.threads or max(1, cores // workers), "GPU: one worker unless set")
    if settings.threads:
        need, why = settings.threads, f"EDGESTACK_THREADS={settings.threads}"
    else:
        need, reasons = 1, []
        for name in names:
            try:
                threads, reason = model_threads(name, settings, cores)
            except Exception as exc:  # noqa: BLE001 - a plan, not a check: `edgestack serve` verifies
                threads, reason = cores, f"{name}: {cores} ({type(exc).__name__})"
            need = max(need, threads)
            reasons.append(reason)
        why = "threads per model: " + ", ".join(reasons) if reasons else "no model"
    if settings.workers:
        workers = settings.workers
        why = f"EDGESTACK_WORKERS={workers}; {why}"
    else:
        workers = max(1, cores // max(1, need))
        why = f"{cores} cores / {need} thread(s); {why}"
    return WorkerPlan(workers, settings.threads or max(1, cores // workers), why)


def worker_index() -> int | None:
    """This worker's id among its server's (1..N, as BentoML's arbiter numbers them), None outside one."""
    try:
        from bentoml._internal.context import server_context
    except ImportError:
        return None
    return server_context.worker_index


# ---------------------------------------------------------------------- the folder the workers share

def run_dir(parent: int | None = None) -> Path:
    """The folder shared by the workers of one server: named after their parent (the arbiter
    that `edgestack serve` / `bentoml serve` became). Folders of servers that are gone are removed."""
    parent = parent or os.getppid()
    base = Path(tempfile.gettempdir())
    for stale in base.glob("edgestack-server-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != parent and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    path = base / f"edgestack-server-{parent}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on `path` (created if missing), held by this process for the block."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class InFlight:
    """The requests inside the whole server, against EDGESTACK_MAX_IN_FLIGHT: slot 0 of a shared
    memory-mapped file is the total, slot `wid` this worker's part of it, both changed under an
    exclusive lock (flock, a few microseconds). A worker that starts (or is restarted after a
    crash, with the same id) first takes its predecessor's part out of the total, so requests
    that died with a worker do not hold the bound forever."""

    def __init__(self, folder: Path, wid: int):
        self.wid = wid % SLOTS or SLOTS - 1
        path = folder / "in-flight"
        with locked(folder / "in-flight.lock"):
            if not path.exists() or path.stat().st_size < 8 * SLOTS:
                path.write_bytes(bytes(8 * SLOTS))
        self._lock = open(folder / "in-flight.lock", "a+b")  # noqa: SIM115 - held for the worker's life
        self._file = open(path, "r+b")  # noqa: SIM115 - mapped for the worker's life
        self._map = mmap.mmap(self._file.fileno(), 8 * SLOTS)
        self.counts = np.frombuffer(self._map, dtype=np.int64)
        with self._held():
            self.counts[0] -= self.counts[self.wid]
            self.counts[self.wid] = 0

    @contextlib.contextmanager
    def _held(self):
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def enter(self, limit: int) -> int | None:
        """Count one more request in, or None when `limit` are inside already: then the total."""
        with self._held():
            total = int(self.counts[0])
            if total >= limit:
                return total
            self.counts[0] = total + 1
            self.counts[self.wid] += 1
        return None

    def leave(self) -> None:
        with self._held():
            self.counts[0] -= 1
            self.counts[self.wid] -= 1

    @property
    def total(self) -> int:
        return int(self.counts[0])


# ---------------------------------------------------------------------- asking every worker

Handler = Callable[[dict], Awaitable[dict]]


class Control:
    """This worker's end of the channel between the workers of one server: a Unix socket
    (`worker-<id>.sock` in the run folder) answering one JSON request per line with one JSON
    line, by `handlers[op]`; and `ask_all`, the same request to every worker, this one included."""

    def __init__(self, folder: Path, wid: int, handlers: dict[str, Handler]):
        self.folder, self.wid, self.handlers = folder, wid, handlers
        self.path = folder / f"worker-{wid}.sock"
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a predecessor with the same id that died
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def answer(self, request: dict) -> dict:
        handler = self.handlers.get(request.get("op"))
        if handler is None:
            return {"error": f"unknown op {request.get('op')!r}", "status": 400}
        try:
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 - an answer, not a dead channel
            status = getattr(exc, "status", 500)
            log.warning("worker %s: %s failed: %s", self.wid, request.get("op"), exc)
            return {"error": str(exc), "status": status}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            reply = await self.answer(json.loads(line))
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ValueError, ConnectionError) as exc:
            log.warning("worker %s: bad control request: %s", self.wid, exc)
        finally:
            writer.close()

    def peers(self) -> list[Path]:
        return sorted(self.folder.glob("worker-*.sock"))

    async def ask(self, path: Path, request: dict, timeout: float) -> dict:
        if path == self.path:
            return await self.answer(request)
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
        if not line:
            raise ConnectionError(f"{path.name} closed the connection without an answer")
        return json.loads(line)

    async def ask_all(self, request: dict, timeout: float = 300.0) -> dict[str, dict]:
        """{worker socket name: its answer} from every worker; a worker that cannot be reached
        answers {"error", "status": 503}."""
        peers = self.peers()

        async def one(path: Path) -> dict:
            try:
                return await self.ask(path, request, timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                return {"error": f"worker {path.stem.removeprefix('worker-')} did not answer: "
                                 f"{type(exc).__name__}: {exc}", "status": 503}

        answers = await asyncio.gather(*(one(p) for p in peers))
        return {p.stem: a for p, a in zip(peers, answers)}


# ---------------------------------------------------------------------- the models, across workers

class SharedModels(ModelRepository):
    """The server's model repository when it runs several workers: the same runners per worker,
    and what the v2 API answers for the server as a whole. Statistics are every worker's, added
    up (serving/stats.py `merged`), with each worker's share of the successes under `workers`."""

    control: Control | None = None

    async def statistics(self, runners: list) -> list[dict]:
        if self.control is None:
            return [r.stats.triton() for r in runners]
        pairs = [[r.name, r.artifact.version] for r in runners]
        answers = await self.control.ask_all({"op": "stats", "models": pairs})
        failed = [a["error"] for a in answers.values() if "error" in a]
        if failed:
            raise InputError("statistics of every worker are needed, and " + "; ".join(failed), 503)
        result = []
        for index, (name, version) in enumerate(pairs):
            parts = {w: a["stats"][index] for w, a in answers.items() if a["stats"][index] is not None}
            entry = merged(list(parts.values()))
            entry["workers"] = [{"worker": w, "success": p["inference_stats"]["success"]["count"]}
                                for w, p in parts.items()]
            result.append(entry)
        return result

    async def local_stats(self, request: dict) -> dict:
        stats = []
        for name, version in request["models"]:
            runner = self._served.get(name, {}).get(version)
            stats.append(None if runner is None else runner.stats.triton())
        return {"stats": stats}

    # -- model control: every worker or none --------------------------------------------
    # A v2 load/unload reaches every worker of the server and answers only once all have it.
    # Load is two-phase: each worker prepares the new versions (verified, warmed up) while its
    # old ones keep serving; only when every worker has prepared the same versions do all of
    # them switch, else all drop what they prepared and the answer says which worker failed.
    # The served versions are written to the run folder (`served.json`): a worker that starts
    # later (a restart after a crash) serves exactly those, not whatever is newest on disk.
    # One operation at a time per server (a file lock), so two loads cannot interleave.

    _pending: dict | None = None

    def _state_path(self) -> Path:
        return self.control.folder / "served.json"

    def served(self) -> dict[str, list[str]]:
        return {name: self.versions(name) for name in self}

    async def _everywhere(self, request: dict) -> dict[str, dict]:
        answers = await self.control.ask_all(request)
        if not answers:
            raise InputError("no worker of this server answers model control; retry", 503)
        return answers

    async def load(self, name: str) -> list[str]:
        if self.control is None:
            return await super().load(name)
        async with self._exclusive():
            prepared = await self._everywhere({"op": "prepare", "model": name})
            failed = {w: a for w, a in prepared.items() if "error" in a}
            found = {tuple(a["versions"]) for a in prepared.values() if "versions" in a}
            if failed or len(found) != 1:
                await self._everywhere({"op": "abort", "model": name})
                if failed:
                    worker, answer = next(iter(failed.items()))
                    raise InputError(f"{name} was not loaded: {worker} of {len(prepared)} failed, every worker "
                                     f"keeps what it served: {answer['error']}", answer.get("status", 500))
                raise InputError(f"{name} was not loaded: the workers found different versions on disk "
                                 f"({sorted(found)}; a build was writing one?); nothing changed, retry", 409)
            committed = await self._everywhere({"op": "commit", "model": name})
            self._record(committed, f"load {name}")
        return self.versions(name)

    async def unload(self, name: str) -> None:
        if self.control is None:
            return await super().unload(name)
        async with self._exclusive():
            answers = await self._everywhere({"op": "unload", "model": name})
            missing = [a for a in answers.values() if a.get("status") == 404]
            if len(missing) == len(answers):
                raise InputError(missing[0]["error"], 404)
            self._record(answers, f"unload {name}")

    def _record(self, answers: dict[str, dict], what: str) -> None:
        """Write down what every worker now serves; a worker that failed the last step is named in
        the log and the answer (a 500): never different versions silently."""
        failed = {w: a["error"] for w, a in answers.items() if "error" in a and a.get("status") != 404}
        self._state_path().write_text(json.dumps(self.served()))
        if failed:
            log.error("%s: %s failed on %s; those workers may serve other versions than the rest", what,
                      what, failed)
            raise InputError(f"{what} failed on {', '.join(failed)} after the others switched "
                             f"(they may serve other versions): {failed}", 500)

    @contextlib.asynccontextmanager
    async def _exclusive(self):
        handle = open(self.control.folder / "control.lock", "a+b")  # noqa: SIM115, ASYNC230 - a lock file, no I/O
        try:
            await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    async def _local_prepare(self, request: dict) -> dict:
        name = request["model"]
        await self._local_abort(request)
        self._pending = self._pending or {}
        self._pending[name] = await asyncio.to_thread(self._prepare, name)
        return {"versions": sorted(self._pending[name])}

    async def _local_commit(self, request: dict) -> dict:
        name = request["model"]
        self._swap(name, self._pending.pop(name))
        return {"versions": self.versions(name)}

    async def _local_abort(self, request: dict) -> dict:
        runners = (self._pending or {}).pop(request["model"], {})
        serving = set(self._served.get(request["model"], {}).values())
        for runner in set(runners.values()) - serving:
            runner.close()
        return {}

    async def _local_unload(self, request: dict) -> dict:
        self.unload_now(request["model"])
        return {}

    def handlers(self) -> dict[str, Handler]:
        return {"stats": self.local_stats, "prepare": self._local_prepare, "commit": self._local_commit,
                "abort": self._local_abort, "unload": self._local_unload}

    def converge(self, folder: Path) -> None:
        """At a worker's start, before it serves: take what the server serves (`served.json`) if
        another worker wrote it, else write this worker's own (under the control lock)."""
        with locked(folder / "control.lock"):
            path = folder / "served.json"
            if not path.exists():
                path.write_text(json.dumps(self.served()))
                return
            wanted: dict[str, list[str]] = json.loads(path.read_text())
            for name in list(self):
                if name not in wanted:
                    self.unload_now(name)
            for name, versions in wanted.items():
                if self.versions(name) != versions:
                    log.warning("%s: serving version(s) %s as the other workers do", name, ", ".join(versions))
                    self._swap(name, self._prepare(name, versions))


# ---------------------------------------------------------------------- one listening socket per worker

def listening_fd(argv: list[str]) -> int | None:
    """The listening socket BentoML's arbiter hands this worker (`--fd N` on its command line), if any."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--fd" and argv[i + 1].isdigit():
            return int(argv[i + 1])
    return None


def own_listening_socket(fd: int | None) -> bool:
    """Put a listening socket of this worker's own on the server's port in place of the
    arbiter's shared one (at the same fd number, which uvicorn then listens on): every worker's
    socket has SO_REUSEPORT and the kernel spreads new connections over them by their address.

    Why: on one shared socket, whichever worker wakes first accepts every connection that is
    waiting (uvloop accepts until none is left), so a client that opens its connections at once
    (h2load, a connection pool, a proxy) lands on one worker while the others idle: that server
    has one core, not all. Measured (2026-12-05, fashion-cnn int8, v2 binary batch 32, 16
    connections, 2 workers): 16 of 16 connections on one worker in one run, 11 / 5 in another.

    The shared socket gets SO_REUSEPORT as well (so that the workers' sockets may bind beside it)
    and stops listening (shutdown), so that no connection waits on it for a worker that no longer
    polls it; it stays bound, so the port stays taken: another server started on it fails as
    before. Call it last before uvicorn listens (a connection already waiting on the shared
    socket is reset). False, nothing changed: no such fd, or not a TCP socket (a Unix socket)."""
    import socket

    if fd is None:
        return False
    shared = socket.socket(fileno=os.dup(fd))
    try:
        if shared.type != socket.SOCK_STREAM or shared.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with socket.socket(shared.family, socket.SOCK_STREAM) as own:
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            own.bind(shared.getsockname())
            own.listen()  # uvicorn listens again with its backlog
            with contextlib.suppress(OSError):  # ENOTCONN: not listening any more (another worker was first)
                shared.shutdown(socket.SHUT_RDWR)
            os.dup2(own.fileno(), fd)  # inheritable, as the arbiter's was
        log.info("worker (pid %d): a listening socket of its own on port %d (SO_REUSEPORT)", os.getpid(),
                 shared.getsockname()[1])
        return True
    finally:
        shared.close()
