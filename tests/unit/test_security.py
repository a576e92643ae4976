"""Issue 20's holes that need no server: manifest text as paths, the key ring, open paths, the
v2 BYTES limits, the batch job's own input. Each test failed on the code before its fix."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edgestack import artifact
from edgestack import manifest as schema
from edgestack.errors import ArtifactError


def folder_artifact(tmp_path: Path, **changes) -> Path:
    """A small valid artifact folder (files of junk bytes: nothing here runs them), version 1."""
    folder = tmp_path / "demo-image" / "1"
    folder.mkdir(parents=True)
    for name in ("model.fp32.onnx", "labels.txt"):
        (folder / name).write_bytes(b"bytes of " + name.encode())
    body = {"name": "demo-image", "version": "1", "family": "toy", "task": "vector-classification",
            "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]}],
            "variants": {"fp32": {"file": "model.fp32.onnx"}}}
    artifact.write_manifest(folder, body)
    if changes:
        data = json.loads((folder / artifact.MANIFEST).read_text())
        for key, value in changes.items():
            data[key] = value(data) if callable(value) else value
        (folder / artifact.MANIFEST).write_text(json.dumps(data))
    return folder


# ------------------------------------------------------------------ 4. manifest text as paths

@pytest.mark.parametrize("field,value,words", [
    ("name", "../../x", "not a served name"),
    ("name", "Digits_CNN", "not a served name"),
    ("version", "1/../../x", "not a version"),
    ("version", "", "not a version"),
    ("variants", {"fp32": {"file": "../../../etc/passwd"}}, "not a relative path"),
    ("variants", {"fp32": {"file": "/etc/passwd"}}, "not a relative path"),
    ("variants", {"fp32": {"file": "labels.txt/../model.fp32.onnx"}}, "not a relative path"),
    ("variants", {"fp32": {"file": "other.onnx"}}, "not listed in `files`"),
    ("files", {}, "not listed in `files`"),
    ("files", lambda d: {**d["files"], "../outside": {"sha256": "0" * 64, "bytes": 1}}, "not a relative path"),
    ("preprocessing", {"tokenizer": "/root/tokenizer.json", "max_length": 8}, "not a relative path"),
    ("vocabulary", {"file": "../vocab.json"}, "not a relative path"),
])
def test_manifest_text_that_would_be_a_path_outside_the_artifact_is_refused(tmp_path, field, value, words):
    """Was: a version `1/../../x` made `edgestack bundle` rename and delete outside bundles/; a
    file with `..` escaped the artifact in `export triton`; an unlisted variant file loaded unverified."""
    folder = folder_artifact(tmp_path, **{field: value})
    with pytest.raises(ArtifactError, match="not a valid manifest") as caught:
        artifact.load(folder)
    assert words in str(caught.value)


def test_a_version_must_match_its_folder(tmp_path):
    folder = folder_artifact(tmp_path, version="2")
    with pytest.raises(ArtifactError, match="says version '2' but its folder is '1'"):
        artifact.load(folder)
    assert artifact.load(folder, folder_is_version=False).version == "2"  # a copy under another name


def test_a_file_swapped_after_verification_is_not_loaded(tmp_path):
    """Was: the checksums were taken, then the path was opened again (time of check to time of use)."""
    art = artifact.load(folder_artifact(tmp_path))
    assert art.read_verified("model.fp32.onnx") == b"bytes of model.fp32.onnx"
    (art.path / "model.fp32.onnx").write_bytes(b"something else")
    with pytest.raises(ArtifactError, match="changed since it was verified"):
        art.read_verified("model.fp32.onnx")
    with pytest.raises(ArtifactError, match="not listed"):
        art.read_verified("labels.txt.bak")


def test_open_session_takes_the_verified_bytes(monkeypatch):
    """ONNX Runtime gets the bytes read_verified() checked (the server passes them), not the path."""
    import onnxruntime as ort

    from edgestack import runtime

    seen = []

    class Recorder:
        def __init__(self, model, **_):
            seen.append(model)
            raise RuntimeError("stop here")

    monkeypatch.setattr(ort, "InferenceSession", Recorder)
    with pytest.raises(RuntimeError, match="stop here"):
        runtime.open_session(Path("x.onnx"), device="cpu", model_bytes=b"graph")
    assert seen == [b"graph"]


# ------------------------------------------------------------------ 2 and 12. the key ring, open paths

def ring_for(tmp_path, text: str | None, monkeypatch):
    from serving.auth import KeyRing

    key_file = tmp_path / "keys"
    if text is not None:
        key_file.write_text(text)
    monkeypatch.setenv("EDGESTACK_API_KEYS_FILE", str(key_file))
    monkeypatch.delenv("EDGESTACK_API_KEYS", raising=False)
    return KeyRing(), key_file


@pytest.mark.parametrize("text", ["# only a comment\n\n", "", None, b"\xff\xfe"])
def test_a_key_file_without_keys_keeps_auth_on(tmp_path, monkeypatch, text):
    """Was: comments only, empty or missing: an empty key list, and an empty list turned auth off
    (missing: FileNotFoundError, a 500 on every route)."""
    ring, key_file = ring_for(tmp_path, None if text is None or isinstance(text, bytes) else text, monkeypatch)
    if isinstance(text, bytes):
        key_file.write_bytes(text)
    assert ring.on and ring.keys() == [] and ring.problem


def test_a_key_file_keeps_its_last_good_keys(tmp_path, monkeypatch):
    from serving.auth import digest

    ring, key_file = ring_for(tmp_path, "one\n", monkeypatch)
    assert ring.keys() == [digest("one")]
    key_file.write_text("")          # truncated on the way to a rewrite
    assert ring.keys() == [digest("one")] and "holds no key" in ring.problem
    key_file.unlink()                # gone
    assert ring.keys() == [digest("one")] and "cannot read" in ring.problem
    key_file.write_text("two # the new one\n")
    assert ring.keys() == [digest("two")] and ring.problem is None


@pytest.mark.parametrize("path,opened", [("/docs", True), ("/docs/x.js", True), ("/docsecret", False),
                                         ("/v2/health/live", True), ("/v2/healthy", False),
                                         ("/livez", True), ("/livez2", False)])
def test_open_prefixes_match_whole_segments(path, opened):
    from serving.auth import is_open

    assert is_open(path, ["/livez", "/docs*", "/v2/health/*"]) is opened


def test_only_a_real_preflight_is_one():
    from serving.auth import is_preflight

    def scope(method, *headers):
        return {"type": "http", "method": method, "headers": [(h, b"x") for h in headers]}

    assert is_preflight(scope("OPTIONS", b"origin", b"access-control-request-method"))
    assert not is_preflight(scope("OPTIONS"))
    assert not is_preflight(scope("OPTIONS", b"origin"))
    assert not is_preflight(scope("POST", b"origin", b"access-control-request-method"))


# ------------------------------------------------------------------ 7. abc2midi: its own pool, rlimits, a MIDI cap

def test_abc2midi_runs_under_rlimits():
    import resource
    import subprocess
    import sys

    from serving.abc_tools import limited

    probe = ("import resource as r; print(*(r.getrlimit(k)[0] for k in "
             "(r.RLIMIT_CPU, r.RLIMIT_AS, r.RLIMIT_FSIZE)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         preexec_fn=limited(cpu_seconds=3, memory_bytes=1 << 30, file_bytes=4096)).stdout
    assert out.split() == ["3", str(1 << 30), "4096"]
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] != 4096  # the server's own limits are untouched


@pytest.mark.skipif(__import__("shutil").which("abc2midi") is None, reason="needs abc2midi (Debian abcmidi)")
def test_a_midi_over_the_cap_is_refused():
    from edgestack.errors import InputError
    from serving.abc_tools import abc2midi, render_midi

    tune = "X:1\nT:t\nM:4/4\nL:1/8\nK:D\n" + "DEFG ABcd|" * 200
    assert render_midi(tune).notes == 1600  # under the server's cap
    with pytest.raises(InputError, match="more than 200 bytes of MIDI") as caught:
        abc2midi(tune, max_midi_bytes=200)
    assert caught.value.status == 413


def test_slow_midi_renders_fill_their_own_pool_not_the_default_one():
    """Was: abc2midi ran on asyncio's default pool, unbounded: six slow renders held the threads
    that generation and model loads use. Now: its own pool; a seventh render gets 503 at once."""
    import asyncio
    import threading

    from edgestack.errors import Overloaded
    from serving.tune_http import MIDI_POOL

    release = threading.Event()

    async def scenario():
        renders = [asyncio.create_task(MIDI_POOL.run(release.wait, 30)) for _ in range(6)]  # six slow renders
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match="rendering MIDI") as caught:
            await MIDI_POOL.run(release.wait, 30)
        started = time.perf_counter()
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "loaded"), 5) == "loaded"  # a model load's pool
        waited = time.perf_counter() - started
        release.set()
        await asyncio.gather(*renders)
        return caught.value, waited

    refusal, waited = asyncio.run(scenario())
    assert refusal.status == 503 and refusal.retry_after >= 1 and waited < 5


# ------------------------------------------------------------------ 8. v2 BYTES: the shape is checked first

def test_a_bytes_shape_over_the_limit_is_refused_before_decoding():
    """Was: an 8 KB gzip body inflated to 2M empty BYTES elements, all decoded on the event loop
    before the item limit said no (1.67 s)."""
    from edgestack import v2protocol as v2

    tensor = {"name": "text", "datatype": "BYTES", "shape": [2_000_000], "parameters": {"binary_data_size": 3}}
    with pytest.raises(v2.TooLarge, match="2,000,000 BYTES elements; the limit is 256") as caught:
        v2.read_tensors([tensor], memoryview(b"bad"), max_bytes_elements=256)  # never decoded: 3 bad bytes
    assert caught.value.status == 413
    with pytest.raises(v2.ProtocolError, match="needs 2 BYTES element.*holds more"):
        v2.deserialize_bytes(v2.serialize_bytes(v2.np.array(["a", "b", "c"], dtype=object)), limit=2)


def test_a_batch_worker_loads_the_graph_it_verified(tmp_path):
    """Each batch worker opens its graph from bytes checked against the manifest, never a swapped file."""
    from batch.adapter import BatchAdapter

    art = artifact.load(folder_artifact(tmp_path))
    adapter = BatchAdapter(art.meta, str(art.variant_path("fp32")))
    assert adapter._verified(str(art.variant_path("fp32"))) == b"bytes of model.fp32.onnx"
    (art.path / "model.fp32.onnx").write_bytes(b"swapped after the job verified the artifact")
    with pytest.raises(ArtifactError, match="changed since the job verified it"):
        adapter._verified(str(art.variant_path("fp32")))
