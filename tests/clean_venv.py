"""Clean virtual environments for tests, built from local wheels only (no network during a test run).

A test that proves something runs with *only* a few packages (an edge bundle with onnxruntime and
numpy, a text bundle that adds tokenizers, ...) makes a fresh venv and installs exactly those into
it. It never downloads: `make wheelhouse` (a step of `make test`) fills the wheelhouse folder
`<repo>/.wheelhouse/` once, from the package registry, with wheels for the packages named in
`PACKAGES`, at the versions this venv has installed (so the clean venv runs what the suite tests),
and their dependencies. Tests then install with `pip install --no-index --find-links .wheelhouse`.

Use from a test or fixture::

    from tests.clean_venv import clean_env, clean_python

    python = clean_python(tmp_path / "venv", ["onnxruntime", "numpy"])
    subprocess.run([str(python), "-m", "edge_runner", ...], env=clean_env(), cwd=bundle)

or the session fixture `clean_venv` of tests/conftest.py (`clean_venv("onnxruntime", "numpy")`:
one venv per package set per session). A package a test needs that is not in PACKAGES: add it
there (then `make wheelhouse`, or `python -m tests.clean_venv fill` in a git worktree, fetches it).
A wheelhouse that lacks a package is an error naming that command, never a skip and never a
download during the run.

Command line: `python -m tests.clean_venv fill` (what `make wheelhouse` runs; does nothing when
the wheelhouse already holds this venv's versions), `python -m tests.clean_venv requirements`.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO_ROOT / ".wheelhouse"
# What clean venvs may ask for: the edge runners' whole dependency list (bundle manifests'
# runner.requires). onnxruntime-gpu shares the import name: its CPU twin is pinned to the same version.
PACKAGES = ("onnxruntime", "numpy", "tokenizers", "cryptography")  # cryptography: the update agent checks signatures
STAMP = "requirements.txt"  # in the wheelhouse: what the last successful `fill` downloaded
HOW = "run `make wheelhouse` (in a git worktree: `.venv/bin/python -m tests.clean_venv fill`)"


class WheelhouseMissing(RuntimeError):
    """The wheelhouse does not hold what a clean venv needs (says how to fill it)."""


def installed_version(package: str) -> str:
    for name in (package, f"{package}-gpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise WheelhouseMissing(f"{package} is not installed in {sys.prefix}: it cannot be pinned for the wheelhouse")


def requirements(packages=PACKAGES) -> list[str]:
    """`name==version` for each package, at this venv's versions."""
    return [f"{p}=={installed_version(p)}" for p in packages]


def fill(wheelhouse: Path = WHEELHOUSE, packages=PACKAGES) -> bool:
    """Download wheels of `packages` (this venv's versions) and their dependencies into `wheelhouse`
    unless it already holds them; True when it downloaded."""
    wanted = "\n".join(requirements(packages)) + "\n"
    stamp = wheelhouse / STAMP
    if stamp.is_file() and stamp.read_text() == wanted:
        return False
    wheelhouse.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                    "--only-binary=:all:", "--dest", str(wheelhouse), *wanted.split()], check=True)
    stamp.write_text(wanted)
    return True


def missing(packages, wheelhouse: Path = WHEELHOUSE) -> str | None:
    """Why `packages` cannot be installed from the wheelhouse (None when they can)."""
    unknown = sorted(set(packages) - set(PACKAGES))
    if unknown:
        return f"{unknown} not in tests/clean_venv.py PACKAGES: add them there, then {HOW}"
    stamp = wheelhouse / STAMP
    if not stamp.is_file():
        return f"no wheelhouse at {wheelhouse}: {HOW}"
    have = set(stamp.read_text().split())
    stale = [r for r in requirements(packages) if r not in have]
    if stale:
        return f"the wheelhouse {wheelhouse} lacks {stale} (this venv's versions): {HOW}"
    return None


def clean_python(venv: Path, packages, wheelhouse: Path = WHEELHOUSE) -> Path:
    """A new venv at `venv` holding `packages` (this venv's versions) and their dependencies,
    installed from the wheelhouse with --no-index; returns its python. WheelhouseMissing (with
    the command that fixes it) when the wheelhouse lacks them."""
    why = missing(packages, wheelhouse)
    if why:
        raise WheelhouseMissing(why)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = Path(venv) / "bin" / "python"
    # --isolated: no pip.conf or PIP_* variable adds an index or another find-links folder
    done = subprocess.run([sys.executable, "-m", "pip", "--isolated", "--python", str(python), "install", "--quiet",
                           "--disable-pip-version-check", "--no-index", "--find-links", str(wheelhouse),
                           *requirements(packages)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise WheelhouseMissing(f"pip could not install {list(packages)} from {wheelhouse}: "
                                f"{done.stderr.strip()[-1500:]}\n{HOW}")
    return python


def clean_env() -> dict[str, str]:
    """This process's environment without PYTHON*, EDGESTACK* and VIRTUAL_ENV: what a device that
    never saw this repository would have."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGESTACK", "VIRTUAL_ENV"))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["fill"]:
        print(f"wheelhouse {WHEELHOUSE}: " + ("filled" if fill() else "up to date") + f" ({', '.join(requirements())})")
        return 0
    if argv == ["requirements"]:
        print("\n".join(requirements()))
        return 0
    print("usage: python -m tests.clean_venv fill|requirements", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
