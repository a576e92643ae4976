"""The suite's own rules, shown to hold (docs/testing.md): a server is ours only if its listener
carries our run token; stopping one stops its whole process group and every process of the run;
a skip is an error unless expected; a clean venv never downloads. Small child processes stand in
for servers here (no model, no BentoML), so these run in the unit lane."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from edgestack import serverproc
from edgestack.serverproc import free_port, running_process

# A tiny HTTP server answering 200 on every GET, `sys.argv[1]` its port. With "--spawn", it first
# starts a grandchild in its own process group that ignores SIGTERM (an orphan-to-be), and prints
# the grandchild's pid.
SERVER = textwrap.dedent("""
    import http.server, os, signal, subprocess, sys
    if "--spawn" in sys.argv:
        child = subprocess.Popen([sys.executable, "-c",
                                  "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        print(child.pid, flush=True)
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
""")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_readiness_needs_our_own_server_not_any_200_on_the_port(tmp_path):
    port = free_port()
    # another process (not started by running_process, so without our token) answers 200 there
    foreign = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        deadline = time.time() + 30
        while not any(c.laddr.port == port for c in psutil.Process(foreign.pid).net_connections("tcp")):
            assert time.time() < deadline, "the stand-in server did not listen"
            time.sleep(0.05)
        # ours cannot bind the taken port and exits: an error naming it, never "ready" on the other's 200
        command = [sys.executable, "-c", SERVER, str(port)]
        with pytest.raises(RuntimeError, match="exited with"):
            with running_process(command, f"http://127.0.0.1:{port}/", timeout=30, what="stand-in"):
                pass
        # and a process that never binds at all times out rather than borrowing the other's answer
        idle = [sys.executable, "-c", "import time; time.sleep(600)"]
        with pytest.raises(TimeoutError, match="not ready"):
            with running_process(idle, f"http://127.0.0.1:{port}/", timeout=3, what="idle"):
                pass
    finally:
        foreign.kill()
        foreign.wait()


def test_a_stop_ends_the_whole_run_orphans_included(tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    with running_process([sys.executable, "-u", "-c", SERVER, str(port), "--spawn"], f"http://127.0.0.1:{port}/",
                         timeout=30, log_path=log, grace=2) as proc:
        assert proc.log_path == log and len(proc.run_token) == 32
        grandchild = int(log.read_text().split()[0])
        ours = {p.pid for p in serverproc.run_processes(proc.run_token)}
        assert {proc.pid, grandchild} <= ours  # the token travels to what the server starts
        assert os.getpgid(proc.pid) == proc.pid and os.getpgid(grandchild) == proc.pid  # a group of its own
    # the server exits on SIGTERM; its grandchild ignores SIGTERM and is killed with the group
    assert not alive(proc.pid) and not alive(grandchild)
    assert len(proc.leftovers) == 1 and proc.leftovers[0].startswith(f"{grandchild} ")
    assert serverproc.run_processes(proc.run_token) == []


def test_free_ports_are_outside_the_kernels_range_and_never_given_to_two_processes():
    """pytest-xdist runs two workers, each starting servers and Rays: a port free_port gives one
    process is never another's while the first lives, and none comes from the range the kernel
    hands to bind(0) and outgoing connections (where a local Ray's own processes listen)."""
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    mine = {free_port() for _ in range(50)}
    claim = "from edgestack.serverproc import free_port\nprint(*(free_port() for _ in range(200)))"
    other = subprocess.run([sys.executable, "-c", claim],
                           capture_output=True, text=True, check=True, timeout=60).stdout.split()
    theirs = {int(p) for p in other}
    assert len(mine) == 50 and len(theirs) == 200 and not mine & theirs
    assert all(not low <= p <= high and p > 19999 for p in mine | theirs)


def test_a_failing_test_still_stops_the_server(tmp_path):
    port = free_port()
    with pytest.raises(ZeroDivisionError):
        with running_process([sys.executable, "-c", SERVER, str(port)], f"http://127.0.0.1:{port}/", timeout=30) as proc:
            1 / 0
    assert not alive(proc.pid)


SKIPPING = '''
import pytest


def test_missing_tool():
    pytest.skip("no widget here: apt-get install widget")


def test_fine():
    pass
'''


def run(pytester, *args: str):
    pytester.makeconftest("from tests.conftest import *  # noqa: F401,F403 (the suite's hooks)\n")
    return pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)


# `make test` runs two xdist workers: a skip happens in a worker and is counted by the controller
WORKERS = pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one process", "two xdist workers"])


@WORKERS
def test_an_unexpected_skip_fails_with_its_reason_and_is_counted(pytester, workers):
    pytester.makepyfile(test_x=SKIPPING)
    result = run(pytester, *workers)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*unexpected skip: Skipped: no widget here: apt-get install widget*",
                                 "skips: 1 (0 expected, 1 unexpected)"])
    # named in expected_skips, the same skip is allowed (and still counted)
    pytester.makeini("[pytest]\nexpected_skips =\n    test_x.py::test_missing_tool # a widget-less box\n")
    result = run(pytester, *workers)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["skips: 1 (1 expected, 0 unexpected)"])


@WORKERS
def test_a_module_level_skip_fails_the_run(pytester, workers):
    pytester.makepyfile(test_gone="import pytest\npytest.importorskip('no_such_module_here')\n",
                        test_ok="def test_ok():\n    pass\n")
    result = run(pytester, *workers)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*unexpected skip: test_gone.py: Skipped: could not import 'no_such_module_here'*"])


def test_a_clean_venv_never_downloads_and_says_how_to_fill_the_wheelhouse(tmp_path):
    from tests.clean_venv import WheelhouseMissing, clean_python, missing

    empty = tmp_path / "wheelhouse"
    empty.mkdir()
    assert "make wheelhouse" in missing(["onnxruntime"], empty)
    with pytest.raises(WheelhouseMissing, match="make wheelhouse"):
        clean_python(tmp_path / "venv", ["onnxruntime", "numpy"], empty)
    assert not (tmp_path / "venv").exists()  # refused before anything was made
    assert "not in tests/clean_venv.py PACKAGES" in missing(["torch"], empty)
