"""The update agent: keeps this device on the newest healthy bundle of its model and channel.

    python -m edge_runner agent --server URL --device-id ID [--channel stable] [--home DIR]
                                [--model NAME] [--token-file F] [--trusted-key signing.pub]
                                [--interval 30] [--once]

Needs what the runner needs (onnxruntime, numpy) and, to check signatures, `cryptography`;
HTTP is the standard library's. Each cycle:

1. poll   GET {server}/bundles/{model}/latest?channel=C -> version, size, sha256, archive URL
2. fetch  the archive into downloads/<name>.part, resuming a partial one (HTTP Range), then
          its size and sha256 must match what the server announced
3. verify unpack into versions/.tmp-N (plain files and folders only, nothing outside it), then
          the signature (with --trusted-key: model.sig must verify against one of the keys)
          and every file's sha256 (manifest.json), then rename to versions/N
4. health `python -m edge_runner --health --check` in versions/N, a fresh process: the golden
          inputs shipped in the bundle must give the answers they were built with
5. switch `current` -> versions/N (a new symlink renamed over the old one: atomic), then
          start the new version through `current` once more; if that fails, switch back
6. report POST {server}/devices/{id}/status: version, health, arch, onnxruntime, p50 latency,
          last error, recent events

A version that fails any step is never made current (the device keeps its last good one) and
is remembered as failed by its sha256, so it is not tried again; the agent reports what
happened. Each cycle also re-checks the current version's checksums (and its health every
--health-every cycles) and rolls back to the newest good version kept when it fails.

On disk (--home, default ~/.edgestack-device): versions/N/ (bundle folders, side by side),
current -> versions/N, downloads/, state.json (written to a temporary file and renamed).
Killed at any point (SIGKILL, power loss), the device restarts on a complete version: a
partial download resumes, a half-unpacked version is a .tmp folder that is removed, and
`current` always names a version that was verified and healthy when it was switched to.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import onnxruntime as ort

from . import BundleError, read_manifest

CHUNK = 1 << 16
KEEP_GOOD = 2            # good versions kept on disk beside the current one (rollback targets)
EVENTS_KEPT = 20
TOKEN_VARIABLE = "EDGE_AGENT_TOKEN"
# Fault tests: the agent SIGKILLs itself at this point of an update (download | unpack | verify |
# health | switch), so a test hits each step deterministically (tests/integration/test_edge_fleet.py).
KILL_AT = "EDGE_AGENT_KILL_AT"
KILL_POINTS = ("download", "unpack", "verify", "health", "switch")


def fault(point: str) -> None:
    if os.environ.get(KILL_AT) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class AgentError(RuntimeError):
    """One step of an update failed; the message says which and why, in one line. transient: the
    network's fault (server unreachable, download cut): tried again next cycle, not held against
    the version."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(data, indent=1) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_extract(archive: Path, target: Path, on_file=lambda n: None) -> None:
    """Unpack a bundle archive's single top folder into `target`: regular files and folders
    only, every path inside the folder (no absolute paths, no '..', no links or devices)."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        tops = {m.name.split("/", 1)[0] for m in members}
        if len(tops) != 1:
            raise AgentError(f"the archive holds {len(tops)} top-level entries, a bundle has one folder")
        top = tops.pop()
        target.mkdir(parents=True)
        for member in members:
            relative = member.name[len(top):].lstrip("/")
            parts = Path(relative).parts
            if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                raise AgentError(f"the archive has an unsafe entry {member.name!r}: refused")
            if not relative:
                continue
            destination = target / relative
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out)
            on_file(relative)


class Agent:
    def __init__(self, args: argparse.Namespace):
        self.server = args.server.rstrip("/")
        self.device_id, self.channel = args.device_id, args.channel
        self.home = Path(args.home).expanduser().resolve()
        self.versions, self.downloads = self.home / "versions", self.home / "downloads"
        self.token = args.token
        self.trusted = args.trusted_key or []
        self.python, self.timeout = args.python or sys.executable, args.health_timeout
        self.health_every = args.health_every
        for folder in (self.versions, self.downloads):
            folder.mkdir(parents=True, exist_ok=True)
        self.state = self.load_state()
        self.model = self.state.get("model") or args.model
        if not self.model:
            current = self.current_version()
            self.model = read_manifest(self.versions / current)["name"] if current else None
        if not self.model:
            raise AgentError("no bundle installed yet: name the model with --model")
        self.state["model"] = self.model
        self.cycle = 0

    # ------------------------------------------------------------ state on disk

    def load_state(self) -> dict:
        try:
            return json.loads((self.home / "state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def save_state(self) -> None:
        write_json(self.home / "state.json", self.state)

    def event(self, text: str) -> None:
        print(f"edge agent: {text}", file=sys.stderr, flush=True)
        self.state["events"] = (self.state.get("events", []) + [f"{now()} {text}"])[-EVENTS_KEPT:]
        self.save_state()

    @staticmethod
    def say(text: str) -> None:
        """A step on stderr (not an event: the report keeps events only)."""
        print(f"edge agent: {text}", file=sys.stderr, flush=True)

    def current_version(self) -> str | None:
        link = self.home / "current"
        if not link.is_symlink():
            return None
        version = Path(os.readlink(link)).name
        return version if (self.versions / version / "manifest.json").is_file() else None

    def switch(self, version: str) -> None:
        """`current` -> versions/<version>, atomically (a new link renamed over the old one)."""
        tmp = self.home / f".current.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(f"versions/{version}", tmp)
        fault("switch")
        os.replace(tmp, self.home / "current")
        directory = os.open(self.home, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    # ------------------------------------------------------------ checks

    def verify(self, folder: Path, expect_version: str | None = None, *, signature: bool = True) -> dict:
        """The signature (with trusted keys; at install), then every file's sha256; the manifest."""
        if self.trusted and signature:
            self.verify_signature(folder)
        try:
            manifest = read_manifest(folder, check=True)
        except (BundleError, ValueError) as exc:
            raise AgentError(f"checksum check failed: {exc}") from exc
        if manifest.get("name") != self.model or (expect_version and str(manifest.get("version")) != expect_version):
            raise AgentError(f"the bundle is {manifest.get('name')} v{manifest.get('version')}, expected "
                             f"{self.model} v{expect_version}")
        return manifest

    def verify_signature(self, folder: Path) -> None:
        """model.sig must verify against a trusted key and list exactly the bundle's files; when the bundle
        carries its source artifact's signature, that must verify too, and name the bundle's .onnx graphs."""
        try:
            from . import signing

            keys = signing.load_trusted_keys(self.trusted)
            signer = signing.verify_directory(folder, keys)
            source = folder / "source"
            if (source / signing.SIGNATURE).is_file():
                raw = (source / "artifact-manifest.json").read_bytes()
                files = {k: v["sha256"] for k, v in json.loads(raw)["files"].items()}
                signing.verify_artifact(source, raw, files, keys)
                for role, meta in json.loads((folder / "manifest.json").read_text())["source"]["files"].items():
                    if files.get(meta["file"]) != meta["sha256"] or sha256_of(folder / f"{role}.onnx") != meta["sha256"]:
                        raise AgentError(f"{role}.onnx is not the signed artifact's {meta['file']}")
        except ImportError as exc:
            raise AgentError(f"checking signatures needs the `cryptography` package ({exc})") from exc
        except AgentError:
            raise
        except Exception as exc:  # signing.SignatureError, unreadable key or manifest: refused, in one line
            raise AgentError(f"signature check failed: {exc}") from exc
        self.state["signer"] = signer[:16]

    def health(self, folder: Path) -> dict:
        """The bundle's health check in a fresh process (a version that cannot even start fails here)."""
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            run = subprocess.run([self.python, "-m", "edge_runner", "--health", "--json", "--check", "--threads", "1"],
                                 cwd=folder, capture_output=True, text=True, timeout=self.timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"ok": False, "problems": [f"the health check took over {self.timeout:g} s"]}
        if run.stdout.startswith("{"):
            return json.loads(run.stdout)
        lines = (run.stderr.strip() or f"exit status {run.returncode}").splitlines()
        return {"ok": False, "problems": [f"did not start: {lines[-1][:300]}"]}

    # ------------------------------------------------------------ the server

    def request(self, path: str, data: dict | None = None, headers: dict | None = None, timeout: float = 30):
        request = urllib.request.Request(self.server + path, method="POST" if data is not None else "GET",
                                         data=json.dumps(data).encode() if data is not None else None,
                                         headers={**({"Authorization": f"Bearer {self.token}"} if self.token else {}),
                                                  **({"Content-Type": "application/json"} if data is not None else {}),
                                                  **(headers or {})})
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise AgentError(f"the server answered {exc.code} to {path}: {detail}", transient=True) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise AgentError(f"server unreachable ({self.server}): {getattr(exc, 'reason', exc)}",
                             transient=True) from exc

    def poll(self) -> dict:
        query = urllib.parse.urlencode({"channel": self.channel})
        with self.request(f"/bundles/{urllib.parse.quote(self.model)}/latest?{query}") as response:
            return json.loads(response.read())

    def download(self, offer: dict) -> Path:
        """The archive into downloads/, resumed where a partial one stopped; checked by size and sha256."""
        name = f"{self.model}-v{offer['version']}.tar.gz"
        final, part = self.downloads / name, self.downloads / f"{name}.part"
        if final.exists() and final.stat().st_size == offer["bytes"] and sha256_of(final) == offer["sha256"]:
            return final
        have = part.stat().st_size if part.exists() else 0
        if have >= offer["bytes"]:
            part.unlink()
            have = 0
        with self.request(offer["archive"], headers={"Range": f"bytes={have}-"} if have else None,
                          timeout=60) as response, open(part, "ab" if have and response.status == 206 else "wb") as out:
            if have and response.status == 206:
                self.event(f"resuming the download of v{offer['version']} at byte {have}")
            try:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    if out.tell() > have + CHUNK:  # some bytes of this download are on disk
                        out.flush()
                        fault("download")
            except OSError as exc:
                raise AgentError(f"download interrupted at {out.tell()} of {offer['bytes']} bytes ({exc}); "
                                 "it resumes next time", transient=True) from exc
            out.flush()
            os.fsync(out.fileno())
        size = part.stat().st_size
        if size < offer["bytes"]:
            raise AgentError(f"download incomplete: {size} of {offer['bytes']} bytes; it resumes next time",
                             transient=True)
        if size > offer["bytes"] or sha256_of(part) != offer["sha256"]:
            part.unlink()
            raise AgentError(f"the download of v{offer['version']} does not match the sha256 the server announced "
                             "(corrupted or tampered): discarded, fetched again next time", transient=True)
        os.replace(part, final)
        return final

    def install(self, offer: dict, archive: Path) -> Path:
        version = str(offer["version"])
        target = self.versions / version
        if target.is_dir():  # installed before (a kill after the rename, or a rollback target): check it again
            try:
                self.verify(target, version, signature=False)
                return target
            except AgentError:
                shutil.rmtree(target)
        tmp = self.versions / f".tmp-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            safe_extract(archive, tmp, on_file=lambda name: fault("unpack") if name.endswith(".ort") else None)
            self.verify(tmp, version)
            fault("verify")
        except (AgentError, tarfile.TarError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            archive.unlink(missing_ok=True)
            raise AgentError(str(exc) if isinstance(exc, AgentError) else f"the archive cannot be unpacked: {exc}") from exc
        os.rename(tmp, target)
        return target

    # ------------------------------------------------------------ a cycle

    def recover(self) -> None:
        """After a crash or a kill: drop half-done work, make sure `current` is a good version."""
        for leftover in list(self.versions.glob(".tmp-*")) + list(self.home.glob(".current.tmp-*")):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        current = self.current_version()
        if current is None:
            if self.state.get("good"):
                self.roll_back("`current` is missing or broken")
            return
        try:
            self.verify(self.versions / current, current, signature=False)
        except AgentError as exc:
            self.roll_back(f"v{current} no longer verifies ({exc})")
            return
        if current not in self.state.get("good", []):  # killed after the switch, before the bookkeeping
            self.state["good"] = [current] + self.state.get("good", [])
            self.save_state()

    def roll_back(self, why: str) -> None:
        broken = self.current_version()
        for version in self.state.get("good", []):
            if version == broken or not (self.versions / version).is_dir():
                continue
            try:
                self.verify(self.versions / version, version, signature=False)
            except AgentError:
                continue
            self.switch(version)
            self.state["good"] = [v for v in self.state["good"] if v != broken]
            if broken:
                self.state.setdefault("failed", {})[broken] = {"reason": why, "at": now(),
                                                               "sha256": self.state.get("sha256", {}).get(broken)}
            self.state["last_error"] = why
            self.event(f"rolled back to v{version}: {why}")
            return
        self.state["last_error"] = f"{why}; no good version left to roll back to"
        self.event(self.state["last_error"])

    def step(self) -> None:
        self.cycle += 1
        current = self.current_version()
        if current and self.health_every and self.cycle % self.health_every == 0:
            report = self.health(self.versions / current)
            self.note_health(report)
            if not report["ok"]:
                self.roll_back(f"v{current} failed its health check: {'; '.join(report['problems'])}")
                current = self.current_version()
        offer = self.poll()
        version = str(offer["version"])
        failed = self.state.get("failed", {}).get(version)
        if version == current or (failed and failed.get("sha256") == offer["sha256"]):
            return
        self.event(f"v{version} offered on channel {self.channel} (running {('v' + current) if current else 'nothing'})")
        try:
            archive = self.download(offer)
            self.say(f"v{version}: downloaded and its sha256 checked; unpacking and verifying")
            folder = self.install(offer, archive)
            self.say(f"v{version}: installed beside the current version; health check")
            report = self.health(folder)
            fault("health")
            if not report["ok"]:
                raise AgentError(f"v{version} failed its health check: {'; '.join(report['problems'])}")
            self.state.setdefault("sha256", {})[version] = offer["sha256"]
            self.save_state()
            self.say(f"v{version}: healthy; switching `current`")
            self.switch(version)
            started = self.health(self.home / "current")  # the new version, started as the device runs it
            if not started["ok"]:
                if current:
                    self.switch(current)
                else:
                    (self.home / "current").unlink()
                raise AgentError(f"v{version} did not start through `current`: {'; '.join(started['problems'])}")
        except AgentError as exc:
            if not exc.transient:
                self.state.setdefault("failed", {})[version] = {"reason": str(exc), "at": now(), "sha256": offer["sha256"]}
                if version != self.current_version():
                    shutil.rmtree(self.versions / version, ignore_errors=True)
            self.state["last_error"] = str(exc)
            self.event(f"update to v{version} refused, {'staying on v' + current if current else 'nothing installed'}: "
                       f"{exc}")
            return
        self.note_health(report)
        self.state["good"] = [version] + [v for v in self.state.get("good", []) if v != version]
        self.state["last_error"] = None
        self.event(f"updated to v{version}" + (f" (from v{current})" if current else ""))
        self.prune()

    def note_health(self, report: dict) -> None:
        self.state["health"] = "ok" if report["ok"] else "failed"
        if report.get("p50_ms") is not None:
            self.state["p50_ms"] = report["p50_ms"]
        self.save_state()

    def prune(self) -> None:
        keep = set(self.state.get("good", [])[:KEEP_GOOD + 1]) | {self.current_version()}
        for folder in self.versions.iterdir():
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        for old in self.downloads.glob("*.tar.gz"):
            if not any(old.name == f"{self.model}-v{v}.tar.gz" for v in keep):
                old.unlink(missing_ok=True)
        self.state["good"] = [v for v in self.state.get("good", []) if (self.versions / v).is_dir()]
        self.save_state()

    def status(self) -> dict:
        return {"model": self.model, "version": self.current_version(), "channel": self.channel,
                "health": self.state.get("health", "unknown") if self.current_version() else "none",
                "arch": platform.machine(), "onnxruntime": ort.__version__, "p50_ms": self.state.get("p50_ms"),
                "last_error": self.state.get("last_error"), "events": self.state.get("events", [])[-EVENTS_KEPT:],
                "event": (self.state.get("events") or [""])[-1], "agent_started_at": self.started_at,
                "signature": (f"checked (key {self.state.get('signer', '?')})" if self.trusted
                              else "not checked (no --trusted-key)"),
                "installed": sorted((p.name for p in self.versions.iterdir() if p.is_dir() and not p.name.startswith(".")),
                                    key=lambda v: int(v) if v.isdigit() else -1)}

    def report(self) -> None:
        try:
            self.request(f"/devices/{urllib.parse.quote(self.device_id)}/status", self.status()).close()
        except AgentError as exc:
            self.state["last_error"] = str(exc)
            self.save_state()
            print(f"edge agent: could not report: {exc}", file=sys.stderr, flush=True)

    def run(self, once: bool, interval: float) -> int:
        self.started_at = now()
        self.recover()
        while True:
            try:
                self.step()
            except AgentError as exc:  # the server is unreachable or refused: keep running what we have
                self.state["last_error"] = str(exc)
                self.event(str(exc))
            self.report()
            if once:
                return 0 if self.current_version() else 1
            time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_runner agent",
        description="Keep this device on the newest healthy bundle of its model: poll the server, download "
                    "(resuming), verify signature and checksums, install side by side, health-check, switch "
                    "atomically, roll back on failure, report status.")
    parser.add_argument("--server", required=True, help="the edgestack server, e.g. http://10.0.0.2:3000")
    parser.add_argument("--device-id", required=True, help="this device's name in the fleet view")
    parser.add_argument("--channel", default="stable", help="release channel to follow (default stable; e.g. canary)")
    parser.add_argument("--home", default="~/.edgestack-device", help="where versions/ and current live")
    parser.add_argument("--model", help="the model to run (needed only before the first install)")
    parser.add_argument("--token-file", help=f"a file holding the server's bearer token (or set ${TOKEN_VARIABLE})")
    parser.add_argument("--trusted-key", action="append", help="a public key (PEM) bundles must be signed with; "
                        "repeatable. Without one only checksums are checked")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between polls (default 30)")
    parser.add_argument("--health-every", type=int, default=10,
                        help="run the current version's health check every N polls (0: never; default 10)")
    parser.add_argument("--health-timeout", type=float, default=120.0, help="longest health check, seconds")
    parser.add_argument("--python", help="the interpreter that runs bundles (default: this one)")
    parser.add_argument("--once", action="store_true", help="one cycle, then exit (0 when a version is current)")
    args = parser.parse_args(argv)
    args.token = os.environ.get(TOKEN_VARIABLE)
    try:
        if args.token_file:
            args.token = Path(args.token_file).read_text().strip()
        agent = Agent(args)
    except (AgentError, OSError, BundleError) as exc:
        print(f"edge agent: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return agent.run(args.once, args.interval)
