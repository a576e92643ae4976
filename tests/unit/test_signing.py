"""Signed artifacts (edgestack/signing.py): keys, signing at publish, and every refusal with
EDGESTACK_TRUSTED_KEYS set. Real keys, real model-signing signatures, real artifact folders."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgestack import artifact, signing
from edgestack.errors import ArtifactError
from tests.unit.test_security import folder_artifact

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: `ours` (trusted) and `theirs` (not)."""
    base = tmp_path_factory.mktemp("keys")
    return {"ours": signing.new_key_pair(base / "ours"), "theirs": signing.new_key_pair(base / "theirs")}


@pytest.fixture
def trusted(keys, monkeypatch):
    monkeypatch.setenv("EDGESTACK_TRUSTED_KEYS", str(keys["ours"][1]))
    return keys


def test_keys_new_makes_a_private_p256_key_only_its_owner_reads(keys, tmp_path):
    private, public = keys["ours"]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes() and b"BEGIN PUBLIC KEY" in public.read_bytes()
    assert len(signing.load_trusted_keys([public])) == 1
    with pytest.raises(signing.SignatureError, match="refusing to replace"):
        signing.new_key_pair(private.parent)
    run = subprocess.run([sys.executable, "-m", "cli", "keys", "new", str(tmp_path / "k")], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 0 and "EDGESTACK_TRUSTED_KEYS=" in run.stdout and (tmp_path / "k/signing.key").is_file()


def test_a_signed_artifact_loads_with_its_key_trusted_and_model_signing_agrees(tmp_path, trusted):
    folder = folder_artifact(tmp_path)
    signing.sign_artifact(folder, trusted["ours"][0])
    assert artifact.load(folder).version == "1"
    # the OpenSSF package's own verifier accepts the same signature (same format, both ways)
    from model_signing import verifying

    verifying.Config().use_elliptic_key_verifier(public_key=trusted["ours"][1]).verify(folder, folder / "model.sig")
    assert signing.verify_directory(folder, signing.load_trusted_keys([trusted["ours"][1]]))


def test_a_rehashed_tampered_manifest_is_refused(tmp_path, trusted):
    """The attack checksums cannot see: change a file and rewrite the manifest's checksums to match."""
    folder = folder_artifact(tmp_path)
    signing.sign_artifact(folder, trusted["ours"][0])
    (folder / "model.fp32.onnx").write_bytes(b"a different model")
    data = json.loads((folder / "manifest.json").read_text())
    artifact.write_manifest(folder, {k: v for k, v in data.items() if k not in ("schema_version", "files")})
    artifact.verify(folder, artifact.load(folder, check=False).meta.files)  # the checksums agree again...
    with pytest.raises(ArtifactError, match=r"refusing demo-image v1 .*does not match its signature: "
                                            r"manifest.json: differs .*model.fp32.onnx: differs"):
        artifact.load(folder)  # ...the signature does not


def test_a_signature_by_an_untrusted_key_is_refused(tmp_path, trusted):
    folder = folder_artifact(tmp_path)
    signing.sign_artifact(folder, trusted["theirs"][0])
    with pytest.raises(ArtifactError, match="refusing demo-image v1 .*signed by a key that is not trusted"):
        artifact.load(folder)


def test_a_forged_signature_is_refused(tmp_path, trusted):
    """A signature file claiming the trusted key, over a statement it did not sign."""
    folder = folder_artifact(tmp_path)
    signing.sign_artifact(folder, trusted["ours"][0])
    bundle = json.loads((folder / "model.sig").read_text())
    other = folder_artifact(tmp_path / "other")
    signing.sign_artifact(other, trusted["theirs"][0])
    bundle["dsseEnvelope"]["signatures"] = json.loads((other / "model.sig").read_text())["dsseEnvelope"]["signatures"]
    (folder / "model.sig").write_text(json.dumps(bundle))
    with pytest.raises(ArtifactError, match="the signature does not verify"):
        artifact.load(folder)


def test_unsigned_is_refused_with_keys_and_served_without_them(tmp_path, keys, monkeypatch, caplog):
    folder = folder_artifact(tmp_path)
    monkeypatch.setenv("EDGESTACK_TRUSTED_KEYS", str(keys["ours"][1]))
    with pytest.raises(ArtifactError, match="refusing demo-image v1 .*unsigned: no model.sig"):
        artifact.load(folder)
    monkeypatch.delenv("EDGESTACK_TRUSTED_KEYS")
    monkeypatch.setattr(signing, "_warned_unchecked", False)
    with caplog.at_level(logging.WARNING, logger="edgestack.signing"):
        artifact.load(folder)
        artifact.load(folder)
    assert [r.message for r in caplog.records].count(
        "artifacts are not signature-checked (set EDGESTACK_TRUSTED_KEYS to refuse unsigned ones)") == 1


def test_publish_signs_with_the_signing_key_and_the_manifest_never_lists_the_signature(tmp_path, trusted,
                                                                                      monkeypatch):
    monkeypatch.setenv("EDGESTACK_SIGNING_KEY", str(trusted["ours"][0]))
    staging = artifact.fresh_version_dir("demo-image", tmp_path)
    (staging / "model.fp32.onnx").write_bytes(b"graph")
    artifact.write_manifest(staging, {
        "name": "demo-image", "version": artifact.staging_version(staging), "family": "toy", "task": "t",
        "inputs": [], "outputs": [], "variants": {"fp32": {"file": "model.fp32.onnx"}}})
    published = artifact.publish(staging)
    assert (published / "model.sig").is_file()
    art = artifact.load(published)
    assert "model.sig" not in art.meta.files
    artifact.write_manifest(published, {k: v for k, v in art.manifest.items() if k not in ("schema_version", "files")})
    assert "model.sig" not in json.loads((published / "manifest.json").read_text())["files"]


def test_edgestack_sign_signs_a_built_version(tmp_path, trusted, monkeypatch):
    """`edgestack sign MODEL` on a version built before there was a key (a registered name)."""
    folder = folder_artifact(tmp_path, name="digits-cnn")
    (tmp_path / "digits-cnn" / "1").parent.mkdir(parents=True, exist_ok=True)
    target = tmp_path / "digits-cnn" / "1"
    folder.rename(target)
    env = {"EDGESTACK_ARTIFACTS": str(tmp_path), "EDGESTACK_SIGNING_KEY": str(trusted["ours"][0])}
    run = subprocess.run([sys.executable, "-m", "cli", "sign", "digits-cnn"], capture_output=True, text=True,
                         cwd=REPO, env={**__import__("os").environ, **env})
    assert run.returncode == 0, run.stderr
    assert artifact.load(target).name == "digits-cnn"
    (target / "model.fp32.onnx").write_bytes(b"changed after the build")
    run = subprocess.run([sys.executable, "-m", "cli", "sign", "digits-cnn"], capture_output=True, text=True,
                         cwd=REPO, env={**__import__("os").environ, **env})
    assert run.returncode == 2 and "sha256 mismatch" in run.stderr and "Traceback" not in run.stderr
