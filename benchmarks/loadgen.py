"""The protocol benchmark's load generator: h2load (Debian nghttp2-client, a C program), driven
per block of requests, so the client is not what the benchmark measures.

One block = one h2load run: `count` requests of one body over `concurrency` connections
(one request in flight on each), HTTP/1.1 keep-alive for the REST protocols, HTTP/2 for
gRPC (the body is then a gRPC frame; `grpc_frame`). Per-request latencies come from
h2load's own per-request log (`--log-file`: microseconds from send to the end of the
response), so every percentile is exact; the wall time is h2load's "finished in"; h2load's
own CPU seconds come from the kernel (getrusage of waited-for children), and the server's
CPU seconds from its process tree (`ProcessTreeCPU`: nanosecond per-process clocks, exited
workers included, never negative), both per block; a total of zero is reported as below
resolution (None), never divided by.

A block fails loudly when any answer is not a 2xx, or (gRPC, where errors arrive as 200
with a grpc-status trailer) when the data received is smaller than `min_response_bytes`
per request: an error carries no message body.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def h2load_path() -> str:
    found = shutil.which("h2load")
    if found is None:
        from edgestack.errors import UsageError

        raise UsageError("the protocol benchmark drives its load with h2load: run `make data` "
                         "(as root it installs Debian's nghttp2-client), or apt-get install nghttp2-client")
    return found


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: flag 0 (not compressed), big-endian length, the message."""
    return b"\0" + struct.pack(">I", len(message)) + message


@dataclass
class Target:
    """One contender's request: absolute URL, body (None: GET), headers, HTTP/2 (gRPC) or HTTP/1.1."""
    url: str
    body: bytes | None = None
    headers: dict = field(default_factory=dict)
    grpc: bool = False
    server: str = "ours"              # whose process tree's CPU a block of this target is charged to
    min_response_bytes: int = 0       # gRPC: a real answer carries at least this much data

    def __post_init__(self) -> None:
        # A server started with EDGESTACK_API_KEYS needs a token: EDGESTACK_TOKEN (an HTTP header,
        # and over gRPC the same HTTP/2 header is the call's metadata).
        from edgestack.settings import get_settings

        token = get_settings().token
        if token:
            self.headers = {"authorization": f"Bearer {token}", **self.headers}


@dataclass
class Block:
    latencies_s: list[float]
    wall_s: float
    loadgen_cpu_s: float
    server_cpu_s: float = 0.0


def _data_bytes(text: str) -> int:
    """h2load's 'traffic: ... , <N> (<n>) data' line: response body bytes received."""
    match = re.search(r"traffic:.*?,\s*[\d.]+\w*B \((\d+)\) data", text)
    return int(match.group(1)) if match else -1


def h2load_command(target: Target, concurrency: int, workdir: Path, log: str, *, count: int | None = None,
                   seconds: float | None = None, rps: float | None = None) -> list[str]:
    """h2load for `target`: `count` requests, or for `seconds`; `rps`: each connection's request
    rate (open loop, h2load --rps) instead of one request right after another."""
    command = [h2load_path(), "-c", str(concurrency), "-m", "1", "-t", "1"]
    command += ["-D", f"{seconds:g}"] if seconds else ["-n", str(count)]
    if rps:
        command.append(f"--rps={rps:g}")
    if not target.grpc:
        command.append("--h1")
    if target.body is not None:
        body = workdir / f"body-{abs(hash(target.body))}.bin"
        if not body.exists():
            body.write_bytes(target.body)
        command += ["-d", str(body)]
    for name, value in target.headers.items():
        command += ["-H", f"{name}: {value}"]
    return [*command, "--log-file", log, target.url]


def read_log(text: str) -> tuple[np.ndarray, np.ndarray]:
    """h2load's per-request log -> (HTTP statuses, latencies in seconds)."""
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    return np.array([int(r[1]) for r in rows], dtype=int), np.array([int(r[2]) / 1e6 for r in rows])


def run_block(target: Target, concurrency: int, count: int, workdir: Path) -> Block:
    count = max(count, concurrency)
    with tempfile.NamedTemporaryFile("r", dir=workdir, suffix=".log") as log:
        command = h2load_command(target, concurrency, workdir, log.name, count=count)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        statuses, latencies = read_log(log.read())
    out = done.stdout
    succeeded = re.search(r"(\d+) succeeded", out)
    if done.returncode != 0 or not succeeded or int(succeeded.group(1)) != count or len(statuses) != count \
            or any(not 200 <= s < 300 for s in statuses):
        raise RuntimeError(f"h2load against {target.url} (concurrency {concurrency}): not every request "
                           f"succeeded:\n{out[-1500:]}{done.stderr[-500:]}")
    if target.min_response_bytes and _data_bytes(out) < count * target.min_response_bytes:
        raise RuntimeError(f"{target.url}: {_data_bytes(out)} bytes of answers for {count} requests; a real "
                           f"answer has at least {target.min_response_bytes} (gRPC errors come as 200 "
                           "without a body): check one request with tritonclient.grpc")
    wall = re.search(r"finished in ([\d.]+)(s|ms|us),", out)
    wall_s = float(wall.group(1)) / {"s": 1, "ms": 1e3, "us": 1e6}[wall.group(2)]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Block(list(latencies), wall_s, cpu)


class Stream:
    """An h2load run in the background that may answer anything (overload: 503s are expected):
    start several for a mixed load, then `finish` each for every request's status and latency."""

    def __init__(self, target: Target, concurrency: int, workdir: Path, **amount):
        self.log = tempfile.NamedTemporaryFile("r", dir=workdir, suffix=".log")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(h2load_command(target, concurrency, workdir, self.log.name, **amount),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self) -> dict:
        output, _ = self.proc.communicate()
        wall = time.perf_counter() - self.started
        with self.log:
            statuses, latencies = read_log(self.log.read())
        if self.proc.returncode != 0:
            raise RuntimeError(f"h2load failed ({self.proc.returncode}): {output[-1500:]}")
        return {"status": statuses, "latency_s": latencies, "wall_s": wall}


def run_stream(target: Target, concurrency: int, workdir: Path, **amount) -> dict:
    """One `Stream` to its end, with h2load's own CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = Stream(target, concurrency, workdir, **amount).finish()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["loadgen_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """One process's CPU seconds (user + system), None once it is gone: its own from the kernel's
    per-process CPU clock (nanoseconds, every thread, those that ended included: Linux
    clock_getcpuclockid, the clock id written out as the kernel encodes it), plus its children
    that ended and were waited for (cutime + cstime in /proc/PID/stat, clock ticks). Elsewhere
    psutil's cpu_times (clock ticks)."""
    import psutil

    try:
        if sys.platform == "linux":
            own = time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9  # CPUCLOCK_SCHED of the whole process
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            return own + (int(fields[13]) + int(fields[14])) / CLK_TCK  # fields 16, 17: cutime, cstime
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system + times.children_user + times.children_system
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


class ProcessTreeCPU:
    """CPU seconds (user + system) and resident memory of a server process and every process below it.

    `seconds()` never goes down: it sums, over the root and every live descendant, each one's own
    CPU (nanosecond clock) and that of its children that ended (a worker that exits and is
    waited for by its parent stays counted, in the parent's cutime); the rare moment a process
    ends between two readings (its time not yet moved to its parent's) is covered by keeping
    the highest total seen, so a block's reading is >= 0 by construction. A block too short
    for any CPU to be seen reads 0, which `summary` reports as below resolution."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self._highest = 0.0

    def processes(self) -> list:
        import psutil

        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:  # the root has exited: nothing left to read
            return []

    def rss_bytes(self) -> int:
        import psutil

        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def seconds(self) -> float:
        total = sum(filter(None, (process_cpu_seconds(proc.pid) for proc in self.processes())))
        self._highest = max(self._highest, total)
        return self._highest


def per_request_ms(seconds: float, requests: int) -> float | None:
    """CPU milliseconds per request, or None when nothing was measured (below the clock's resolution,
    or no request): such a reading is reported as such, never divided by."""
    if requests <= 0 or not seconds or seconds <= 0:
        return None
    return 1000 * seconds / requests


def summary(blocks: list[Block], items_per_request: int) -> dict:
    """Percentiles over every block's requests; throughput = requests / summed wall time."""
    latencies = np.concatenate([b.latencies_s for b in blocks]) * 1000
    requests = len(latencies)
    wall = sum(b.wall_s for b in blocks)
    return {"p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
            "p99_ms": float(np.percentile(latencies, 99)), "max_ms": float(latencies.max()),
            "mean_ms": float(latencies.mean()), "n": requests, "requests_per_s": requests / wall,
            "items_per_s": requests * items_per_request / wall,
            # None: below the clock's resolution (reported as such, never divided by)
            "server_cpu_ms_per_request": per_request_ms(sum(b.server_cpu_s for b in blocks), requests),
            "loadgen_cpu_ms_per_request": per_request_ms(sum(b.loadgen_cpu_s for b in blocks), requests),
            "loadgen_cpu_share": sum(b.loadgen_cpu_s for b in blocks) / wall}
