"""The edge fleet, server side (issue 21): the server publishes bundles to devices and keeps a
view of what every device reported. The device side is the update agent in the bundle
(`python -m edge_runner agent`, bundle/edge_runner/agent.py).

Routes (behind the same bearer-token auth as every other route):

    GET  /bundles                               what is published: versions per model, channels
    GET  /bundles/{model}/latest?channel=NAME   the version a device on that channel should run,
                                                with the archive's size, sha256 and URL
    GET  /bundles/{model}/{version}/archive     the .tar.gz (Range requests: downloads resume)
    POST /devices/{device_id}/status            a device's report (JSON; see REPORT_FIELDS)
    GET  /devices                               the fleet view: every device's last report

Channels are names (`canary`, `stable`, ...) that each point at one version per model: publish
a version to `canary` first, `edgestack fleet promote MODEL` moves it to `stable` once the canary
devices report it healthy (cli/bundle.py).

State lives on disk under EDGESTACK_FLEET_DIR, so every worker process of the server sees the
same fleet and a restart loses nothing:

    bundles/<model>/<version>/<model>-v<version>.tar.gz   published archives, never changed
    bundles/<model>/<version>/published.json              sha256, bytes, signed, published_at
    channels.json                                         {channel: {model: version}}
    devices/<device_id>.json                              the device's last report + received_at

Every file is written to a temporary name and renamed (a reader sees the old or the new file,
never half of one); publishing and promoting hold an exclusive lock on `.lock` around the
read-modify-write of channels.json.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tarfile
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from edgestack.errors import UsageError
from edgestack.families.common import sha256_file
from edgestack.settings import get_settings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")     # models, device ids
CHANNEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
VERSION = re.compile(r"^[0-9]{1,9}$")
REPORT_FIELDS = {  # what a device reports; other keys are refused (a typo is a 400, not a silent drop)
    "model": str, "version": (str, type(None)), "channel": str, "health": str, "arch": str, "onnxruntime": str,
    "p50_ms": (float, int, type(None)), "last_error": (str, type(None)), "event": str, "events": list,
    "agent_started_at": str, "signature": (str, type(None)), "installed": list}
PREFIXES = ("/bundles", "/devices")


def fleet_dir() -> Path:
    return get_settings().fleet_dir


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


@contextlib.contextmanager
def locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def channels(root: Path) -> dict:
    return read_json(root / "channels.json", {})


def bundle_manifest(archive: Path) -> dict:
    """manifest.json from inside a bundle archive (`<name>-v<version>/manifest.json`)."""
    with tarfile.open(archive) as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and m.name.count("/") == 1
                       and m.name.endswith("/manifest.json")), None)
        if member is None:
            raise UsageError(f"{archive}: not a bundle archive (no <folder>/manifest.json in it)")
        manifest = json.loads(tar.extractfile(member).read())
        manifest["_signed"] = any(m.name.count("/") == 1 and m.name.endswith("/model.sig") for m in tar.getmembers())
        return manifest


def publish(archive: Path | str, channel: str, root: Path | None = None) -> dict:
    """Publish a bundle archive (`edgestack bundle` writes one) and point `channel` at it."""
    root, archive = Path(root or fleet_dir()), Path(archive)
    if not CHANNEL.match(channel):
        raise UsageError(f"channel names are lower-case letters, digits and '-' (got {channel!r})")
    if not archive.is_file():
        raise UsageError(f"no bundle archive at {archive} (`edgestack bundle MODEL` writes one)")
    manifest = bundle_manifest(archive)
    model, version = manifest["name"], str(manifest["version"])
    folder = root / "bundles" / model / version
    target = folder / f"{model}-v{version}.tar.gz"
    digest = sha256_file(archive)
    with locked(root):
        if target.exists() and read_json(folder / "published.json", {}).get("sha256") != digest:
            raise UsageError(f"{model} v{version} is already published with other bytes; published versions never "
                             "change (build a new version)")
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{target.name}.tmp-{os.getpid()}"
            shutil.copyfile(archive, tmp)
            os.replace(tmp, target)
            write_json(folder / "published.json", {"sha256": digest, "bytes": target.stat().st_size,
                                                   "signed": manifest["_signed"],
                                                   "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        pointers = channels(root)
        pointers.setdefault(channel, {})[model] = version
        write_json(root / "channels.json", pointers)
    return {"model": model, "version": version, "channel": channel, "sha256": digest}


def promote(model: str, to: str = "stable", *, source: str = "canary", version: str | None = None,
            root: Path | None = None, require_healthy: bool = True) -> dict:
    """Point channel `to` at `version` (default: what `source` runs). Unless told otherwise, at
    least one device on `source` must have reported that version healthy."""
    root = Path(root or fleet_dir())
    with locked(root):
        pointers = channels(root)
        version = version or pointers.get(source, {}).get(model)
        if version is None:
            raise UsageError(f"{model} is not published on channel {source!r}")
        if not (root / "bundles" / model / str(version)).is_dir():
            raise UsageError(f"{model} v{version} is not published")
        if require_healthy:
            healthy = [d for d in devices(root) if d.get("model") == model and str(d.get("version")) == str(version)
                       and d.get("channel") == source and d.get("health") == "ok"]
            if not healthy:
                raise UsageError(f"no device on {source!r} reports {model} v{version} healthy yet: not promoting "
                                 "(--force promotes anyway)")
        pointers.setdefault(to, {})[model] = str(version)
        write_json(root / "channels.json", pointers)
    return {"model": model, "version": str(version), "channel": to}


def devices(root: Path | None = None) -> list[dict]:
    root = Path(root or fleet_dir())
    found = []
    for path in sorted((root / "devices").glob("*.json")):
        with contextlib.suppress(json.JSONDecodeError, FileNotFoundError):
            found.append(json.loads(path.read_text()))
    return found


# ------------------------------------------------------------------ HTTP

def refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def list_bundles(request: Request):
    root = fleet_dir()
    published = {m.name: sorted((v.name for v in m.iterdir() if v.is_dir() and VERSION.match(v.name)), key=int)
                 for m in sorted((root / "bundles").glob("*")) if m.is_dir()}
    return JSONResponse({"bundles": published, "channels": channels(root)})


async def latest(request: Request):
    model, channel = request.path_params["model"], request.query_params.get("channel", "stable")
    if not NAME.match(model) or not CHANNEL.match(channel):
        return refuse(400, "model and channel must be plain names (letters, digits, '.', '_', '-')")
    root = fleet_dir()
    version = channels(root).get(channel, {}).get(model)
    if version is None:
        return refuse(404, f"{model} is not published on channel {channel!r}")
    meta = read_json(root / "bundles" / model / version / "published.json", None)
    if meta is None:
        return refuse(404, f"{model} v{version} is named by channel {channel!r} but not published")
    return JSONResponse({"model": model, "version": version, "channel": channel, **meta,
                         "archive": f"/bundles/{model}/{version}/archive"})


async def archive(request: Request):
    model, version = request.path_params["model"], request.path_params["version"]
    if not NAME.match(model) or not VERSION.match(version):
        return refuse(400, "model must be a plain name and version a number")
    path = fleet_dir() / "bundles" / model / version / f"{model}-v{version}.tar.gz"
    if not path.is_file():
        return refuse(404, f"{model} v{version} is not published")
    return FileResponse(path, media_type="application/gzip", filename=path.name)  # answers Range requests


async def report(request: Request):
    device = request.path_params["device_id"]
    if not NAME.match(device):
        return refuse(400, "device ids are 1-64 letters, digits, '.', '_' or '-'")
    try:
        body = await request.json()
    except ValueError:
        return refuse(400, "the status report must be a JSON object")
    if not isinstance(body, dict):
        return refuse(400, "the status report must be a JSON object")
    for key, value in body.items():
        if key not in REPORT_FIELDS:
            return refuse(400, f"unknown status field {key!r} (known: {', '.join(sorted(REPORT_FIELDS))})")
        if not isinstance(value, REPORT_FIELDS[key]) or isinstance(value, bool):
            return refuse(400, f"status field {key!r} has the wrong type")
    if "model" not in body or not NAME.match(str(body["model"])):
        return refuse(400, "the status report must name its model")
    body["events"] = [str(e)[:300] for e in body.get("events", [])][-20:]
    entry = {"device_id": device, **body, "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "received_unix": time.time()}
    write_json(fleet_dir() / "devices" / f"{device}.json", entry)
    return JSONResponse({"ok": True, "received_at": entry["received_at"]})


async def fleet_view(request: Request):
    root = fleet_dir()
    return JSONResponse({"devices": devices(root), "channels": channels(root), "now_unix": time.time()})


ROUTES = [Route("/bundles", list_bundles, methods=["GET"]),
          Route("/bundles/{model}/latest", latest, methods=["GET"]),
          Route("/bundles/{model}/{version}/archive", archive, methods=["GET"]),
          Route("/devices", fleet_view, methods=["GET"]),
          Route("/devices/{device_id}/status", report, methods=["POST"])]


class Fleet:
    """ASGI middleware: answers the fleet's routes (/bundles..., /devices...), passes everything
    else on. Mounted in serving/service.py inside the auth middleware."""

    def __init__(self, app):
        self.app = app
        self.fleet = Starlette(routes=ROUTES)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and any(scope["path"] == p or scope["path"].startswith(p + "/") for p in PREFIXES):
            return await self.fleet(scope, receive, send)
        return await self.app(scope, receive, send)
