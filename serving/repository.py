"""The served models and their versions, with Triton's model control (load / unload / index).

`Models` is what the endpoints and the v2 app look models up in: a read-only Mapping from a
served name to the runner of its latest served version, plus `runner(name, version)` and
`versions(name)`. `StaticModels` wraps a fixed dict of runners (tests, other engines).

`ModelRepository` is the server's: it serves the `serve_versions` latest versions of each
model side by side (EDGESTACK_SERVE_VERSIONS) and (re)loads them while the server runs:

- `load(name)` reads the newest version folders again; a version not served yet is verified
  (every checksum, edgestack/artifact.py) and warmed up on a worker thread while the old
  versions keep serving, and only then replaces them in one step on the event loop. If any
  new version fails to load, nothing changes and the error says why;
- a replaced or unloaded version stops taking new requests; the ones it has accepted finish;
- `index()` lists every model on disk with its state, as Triton's repository index does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from edgestack import artifact, registry
from edgestack.errors import InputError, UnknownModel

log = logging.getLogger("edgestack.serving")


def _newest_last(versions) -> list[str]:
    return sorted(versions, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))


class Models(Mapping):
    """name -> {version: runner}; as a Mapping, name -> the latest version's runner."""

    def __init__(self) -> None:
        self._served: dict[str, dict] = {}

    def __getitem__(self, name: str):
        versions = self._served[name]
        return versions[_newest_last(versions)[-1]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._served)

    def __len__(self) -> int:
        return len(self._served)

    def versions(self, name: str) -> list[str]:
        """The served versions of `name`, oldest first ([] if not served)."""
        return _newest_last(self._served.get(name, {}))

    def runner(self, name: str, version: str | None = None):
        """The runner of `name` at `version` (None: the latest); a 404 InputError if not served."""
        versions = self._served.get(name)
        if not versions:
            raise UnknownModel(name, list(self))
        if version is None:
            return self[name]
        if version not in versions:
            raise InputError(f"model {name!r} has no version {version!r} on this server; "
                             f"it serves version(s) {', '.join(self.versions(name))}", 404)
        return versions[version]

    async def statistics(self, runners: list) -> list[dict]:
        """Triton's statistics of `runners` (serving/stats.py); a server of several worker
        processes answers for all of them (serving/workers.py SharedModels)."""
        return [runner.stats.triton() for runner in runners]


class StaticModels(Models):
    """A fixed set of runners, one version each."""

    def __init__(self, runners: Mapping) -> None:
        super().__init__()
        self._served = {name: {runner.artifact.version: runner} for name, runner in runners.items()}


class ModelRepository(Models):
    def __init__(self, make_runner: Callable, *, keep: int = 1, root: Path | None = None):
        super().__init__()
        self.make_runner = make_runner  # Artifact -> a warmed-up runner
        self.keep, self.root = keep, root
        self._reasons: dict[str, str] = {}  # why a model on disk is not served
        self._locks: dict[str, asyncio.Lock] = {}

    def _prepare(self, name: str, versions: list[str] | None = None) -> dict:
        """The runners `name` should serve now (its newest versions, or exactly `versions`): those
        already serving are kept, new versions are loaded (verified, warmed up). Blocking: runs on
        a worker thread after startup."""
        if name not in registry.MODELS:
            raise UnknownModel(name, list(registry.MODELS))
        dirs = artifact.version_dirs(name, self.root)
        dirs = [d for d in dirs if d.name in versions] if versions is not None else dirs[-self.keep:]
        if not dirs:
            raise InputError(f"no artifact for {name!r} under {self.root or artifact.default_root()}: "
                             f"build it with `edgestack build {name}`", 404)
        current = self._served.get(name, {})
        runners = {}
        for directory in dirs:
            if directory.name in current:
                runners[directory.name] = current[directory.name]
                continue
            try:
                runners[directory.name] = self.make_runner(artifact.load(directory))
            except Exception as exc:
                for fresh in set(runners.values()) - set(current.values()):
                    fresh.close()
                raise InputError(f"{name} v{directory.name} failed to load, the served versions "
                                 f"({', '.join(self.versions(name)) or 'none'}) stay: {exc}", 400) from exc
        return runners

    def _swap(self, name: str, runners: dict) -> None:
        old = self._served.get(name, {})
        self._served[name] = runners
        self._reasons.pop(name, None)
        for version, runner in old.items():
            if runners.get(version) is not runner:
                runner.close()
        log.info("%s: serving version(s) %s", name, ", ".join(self.versions(name)))

    def load_now(self, name: str) -> None:
        """At startup, before the server takes traffic."""
        self._swap(name, self._prepare(name))

    async def load(self, name: str) -> list[str]:
        """(Re)load `name`'s newest versions while the served ones keep serving; the versions now served."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            runners = await asyncio.to_thread(self._prepare, name)
            self._swap(name, runners)
        return self.versions(name)

    async def unload(self, name: str) -> None:
        self.unload_now(name)

    def unload_now(self, name: str) -> None:
        if name not in self._served:
            raise UnknownModel(name, list(self))
        for runner in self._served.pop(name).values():
            runner.close()
        self._reasons[name] = "unloaded"
        log.info("%s: unloaded", name)

    def index(self) -> list[dict]:
        """Triton's repository index: every served or built model, with its state."""
        root = self.root or artifact.default_root()
        on_disk = artifact.built_models(root)
        entries = []
        for name in dict.fromkeys([*self._served, *on_disk]):
            if name in self._served:
                entries += [{"name": name, "version": v, "state": "READY", "reason": ""}
                            for v in self.versions(name)]
            else:
                entries.append({"name": name, "version": "", "state": "UNAVAILABLE",
                                "reason": self._reasons.get(name, "not loaded")})
        return entries
