"""The artifact directory: the contract between export and everything downstream.

An artifact is one model version in a folder::

    artifacts/<served-name>/<version>/
        manifest.json        what it is, how to feed it, how good each variant is
        model.fp32.onnx      one file per variant (fp32, int8, fp16, ...)
        ...                  anything else the family needs (labels, vocabulary, tokenizer)

Every file is listed in the manifest with its sha256; loading refuses an artifact whose
files do not match, so a half-copied or tampered model never gets served. A signed
artifact also holds `model.sig` (edgestack/signing.py: who built it); with
EDGESTACK_TRUSTED_KEYS set, loading refuses one that is unsigned or signed by another key. The manifest's
schema is edgestack/manifest.py: writing validates it, loading migrates an older schema
version and validates it, and `Artifact.meta` is the typed view. This module imports
neither torch nor onnxruntime: serving, batch jobs and edge runners all use it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgestack import manifest as schema
from edgestack import signing
from edgestack.errors import ArtifactError  # callers catch artifact.ArtifactError
from edgestack.families.common import sha256_file  # noqa: F401 (part of this module's API)

SCHEMA_VERSION = schema.SCHEMA_VERSION  # what write_manifest stamps; load also reads older versions
MANIFEST = "manifest.json"


def default_root() -> Path:
    """Where artifacts live: $EDGESTACK_ARTIFACTS, else ./artifacts."""
    from edgestack.settings import get_settings

    return get_settings().artifacts.resolve()


def write_manifest(directory: Path, manifest: dict[str, Any], files: dict | None = None) -> Path:
    """Checksum every file in `directory` (except the manifest) and write the manifest.
    `files`: checksums already taken of these same files (a manifest rewritten with new
    fields only), so they are not hashed again.

    External ONNX weight files (`*.onnx.data`) are ordinary files here, so they are
    covered by the checksums like the graphs that reference them.
    """
    directory = Path(directory)
    files = files if files is not None else {
        str(p.relative_to(directory)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.relative_to(directory).as_posix() not in (MANIFEST, signing.SIGNATURE)
    }
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": files}
    schema.validate(manifest, f"the manifest for {directory}")  # a malformed one fails the export, loudly
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(directory / MANIFEST)
    return directory / MANIFEST


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict[str, Any]  # the manifest as read (migrated to SCHEMA_VERSION); prefer `meta`
    meta: schema.Manifest = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.meta is None:  # built from a dict: check it like load() does
            object.__setattr__(self, "meta", schema.parse(self.manifest, f"{self.path / MANIFEST}"))

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        """Variant name -> its manifest entry as a dict (`meta.variants` is the typed one)."""
        return self.manifest["variants"]

    def variant_path(self, variant: str) -> Path:
        if variant not in self.meta.variants:
            raise ArtifactError(
                f"{self.name} v{self.version} has no variant {variant!r}; "
                f"it has {sorted(self.meta.variants)}"
            )
        return self.path / self.meta.variants[variant].file

    def file(self, relative: str) -> Path:
        return self.path / relative

    def read_verified(self, relative: str) -> bytes:
        """A file's bytes, checked against its manifest checksum as read: what is loaded is what was
        hashed (a file swapped after `load` verified the folder is caught here, not loaded)."""
        entry = self.meta.files.get(relative)
        if entry is None:
            raise ArtifactError(f"{self.name} v{self.version}: {relative!r} is not listed in the manifest's files")
        data = (self.path / relative).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ArtifactError(f"refusing {self.name} v{self.version}: {relative} changed since it was verified "
                                "(sha256 mismatch)")
        return data


def verify(directory: Path, files: dict[str, schema.FileEntry]) -> None:
    problems = []
    for relative, entry in files.items():
        path = directory / relative
        if not path.is_file():
            problems.append(f"{relative}: missing")
        elif sha256_file(path) != entry.sha256:
            problems.append(f"{relative}: sha256 mismatch (file changed or partly copied)")
    if problems:
        raise ArtifactError(
            f"refusing artifact {directory}: " + "; ".join(problems)
            + ". Rebuild it with `edgestack build --force` or restore the original files."
        )


def load(directory: Path, *, check: bool = True, folder_is_version: bool = True) -> Artifact:
    """Read and (by default) verify an artifact directory. Its folder must be named after its
    version (`folder_is_version=False`: a copy under another name, as in a Triton repository)."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"no {MANIFEST} in {directory}: not an edgestack artifact")
    raw = manifest_path.read_bytes()  # hashed as read when signatures are checked
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON: {exc}") from exc
    manifest = schema.migrate(manifest, str(manifest_path))
    meta = schema.validate(manifest, str(manifest_path))
    if folder_is_version and meta.version != directory.name:
        raise ArtifactError(f"refusing artifact {directory}: its manifest says version {meta.version!r} but its "
                            f"folder is {directory.name!r}")
    if check:
        verify(directory, meta.files)
        signing.check_artifact(directory, raw, meta)  # with EDGESTACK_TRUSTED_KEYS: signed by one of them
    return Artifact(directory, manifest, meta)


def version_dirs(name: str, root: Path | None = None) -> list[Path]:
    """A served name's numbered version folders that have a manifest, oldest first."""
    base = (root or default_root()) / name
    if not base.is_dir():
        return []
    versions = [p for p in base.iterdir() if p.is_dir() and p.name.isdigit() and (p / MANIFEST).is_file()]
    return sorted(versions, key=lambda p: int(p.name))


def latest_version_dir(name: str, root: Path | None = None) -> Path | None:
    """The highest numbered version folder of a served name that has a manifest."""
    versions = version_dirs(name, root)
    return versions[-1] if versions else None


def built_models(root: Path | None = None) -> list[str]:
    """The registered served names that have a built version under `root`, in registry order."""
    from edgestack import registry

    return [name for name in registry.MODELS if latest_version_dir(name, root) is not None]


def load_latest(name: str, root: Path | None = None, *, check: bool = True) -> Artifact:
    directory = latest_version_dir(name, root)
    if directory is None:
        raise ArtifactError(
            f"no artifact for {name!r} under {(root or default_root())}; "
            f"build it with `edgestack build {name}`"
        )
    return load(directory, check=check)


def fresh_version_dir(name: str, root: Path | None = None) -> Path:
    """A new, empty staging folder for the next version; commit it with `publish`."""
    base = (root or default_root()) / name
    base.mkdir(parents=True, exist_ok=True)
    existing = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    version = str(max(existing, default=0) + 1)
    staging = base / f".staging-{version}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def staging_version(staging: Path) -> str:
    """The version a staging folder of `fresh_version_dir` becomes when published."""
    return Path(staging).name.removeprefix(".staging-")


def publish(staging: Path) -> Path:
    """Atomically turn a staging folder into its version folder (no half-written versions),
    signed first when EDGESTACK_SIGNING_KEY is set (edgestack/signing.py)."""
    from edgestack.settings import get_settings

    if get_settings().signing_key is not None:
        signing.sign_artifact(staging)
    final = staging.parent / staging_version(staging)
    staging.rename(final)
    return final
