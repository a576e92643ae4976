"""Signed artifacts: proof of who built a model version, checked before it is served.

The checksums in `manifest.json` prove that the files match the manifest, but anyone who can
write the folder can rewrite both. A signature made with a private key that only the
builder holds closes that: the server, batch jobs, Triton export and hot reload refuse an
artifact whose signature is missing or does not verify against EDGESTACK_TRUSTED_KEYS.

Keys and commands::

    edgestack keys new DIR            DIR/signing.key (EC P-256, PKCS#8 PEM, mode 0600) + DIR/signing.pub
    EDGESTACK_SIGNING_KEY=DIR/signing.key edgestack build ...     every new version is signed
    edgestack sign MODEL [--version N]                             sign a version already built
    EDGESTACK_TRUSTED_KEYS=DIR/signing.pub[,more.pub|a-folder-of-*.pub] edgestack serve

On-disk format: one file, `model.sig`, in the signed folder (an artifact version, or a
bundle), beside `manifest.json`. It is an OpenSSF model-signing v1.0 signature as the
`model-signing` package (PyPI, `model_signing.signing.Config().use_elliptic_key_signer`)
writes it, so `model_signing verify key` checks our artifacts and we check its signatures:

- a Sigstore bundle, JSON: `{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
  "verificationMaterial": {"publicKey": {"hint": H}, "tlogEntries": []}, "dsseEnvelope": E}`,
  H = hex SHA-256 of the signer's public key in PEM (SubjectPublicKeyInfo) form;
- E, a DSSE envelope: `{"payload": base64(P), "payloadType": "application/vnd.in-toto+json",
  "signatures": [{"sig": base64(S)}]}`, S = the DER ECDSA signature (P-256, SHA-256) of
  PAE(payloadType, P) = b"DSSEv1 " + len(type) + b" " + type + b" " + len(P) + b" " + P
  (lengths as ASCII decimals);
- P, an in-toto Statement v1 (JSON): `_type` "https://in-toto.io/Statement/v1",
  `predicateType` "https://model_signing/signature/v1.0", `subject`: [{"name": the folder's
  name, "digest": {"sha256": hex SHA-256 of the concatenated raw digests of the resources, in
  their listed order}}], `predicate`: {"resources": [{"name": a path relative to the folder,
  '/'-separated, "algorithm": "sha256", "digest": hex SHA-256 of the file}, ... sorted by
  name], "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false,
  "ignore_paths": ["model.sig", ".git", ...]}}.

The resources are every file of the folder except `model.sig` (and git's files), so for an
artifact they are `manifest.json` plus exactly the files its manifest lists. Checking an
artifact (`verify_artifact`) therefore needs one hash, of the manifest's bytes: the
signature must name a trusted key, verify, and list manifest.json with that digest and
every file of the manifest's `files` with its sha256, nothing more and nothing less; the
manifest's own checksums (edgestack/artifact.py) then cover the rest. `verify_directory`
hashes every file instead (a bundle, or any folder).

Verifying needs only the standard library and `cryptography`: this file is standalone for
that part, so a device can copy it beside its runner (`sign_*` and `new_key_pair` import
`model-signing` and edgestack's settings when called). Why model-signing: it is the
OpenSSF format for ML models, works offline with a key pair, and its signatures are
checked by a verifier that does not need it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path

try:  # in edgestack; a standalone copy on a device raises plain errors
    from edgestack.errors import ArtifactError as _Base
except ImportError:  # pragma: no cover - the device copy
    _Base = RuntimeError

log = logging.getLogger("edgestack.signing")

SIGNATURE = "model.sig"
PRIVATE_KEY, PUBLIC_KEY = "signing.key", "signing.pub"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
IGNORED = (SIGNATURE, ".git", ".github", ".gitattributes", ".gitignore")
MANIFEST = "manifest.json"


class SignatureError(_Base):
    """An artifact's signature is missing, is by a key that is not trusted, or does not match it."""


# ------------------------------------------------------------------ keys

def new_key_pair(directory: Path) -> tuple[Path, Path]:
    """A new EC P-256 key pair in `directory`: signing.key (private, 0600) and signing.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory = Path(directory)
    private, public = directory / PRIVATE_KEY, directory / PUBLIC_KEY
    for path in (private, public):
        if path.exists():
            raise SignatureError(f"{path} exists: refusing to replace a key (move it away first)")
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as fh:
        fh.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def key_id(public_pem: bytes) -> str:
    """What a signature names its key by: hex SHA-256 of the public key's PEM."""
    return hashlib.sha256(public_pem).hexdigest()


def load_trusted_keys(paths) -> dict[str, object]:
    """Public keys (PEM files, or folders of *.pub / *.pem) -> {key id: key}."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    keys = {}
    for entry in map(Path, paths):
        files = sorted([*entry.glob("*.pub"), *entry.glob("*.pem")]) if entry.is_dir() else [entry]
        if entry.is_dir() and not files:
            raise SignatureError(f"trusted keys: {entry} holds no *.pub or *.pem public key")
        for file in files:
            try:
                pem = file.read_bytes()
                key = serialization.load_pem_public_key(pem)
            except (OSError, ValueError) as exc:
                raise SignatureError(f"trusted keys: {file} is not a PEM public key ({exc})") from None
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                raise SignatureError(f"trusted keys: {file} is not an EC P-256 public key")
            keys[key_id(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))] = key
    return keys


# ------------------------------------------------------------------ verifying (standard library + cryptography)

def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def signed_files(folder: Path, keys: dict[str, object]) -> tuple[dict[str, str], str]:
    """The files `folder`'s signature vouches for, {relative path: sha256}, and the signer's key
    id; SignatureError if there is no signature, its key is not among `keys`, or it does not verify."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(folder) / SIGNATURE
    if not path.is_file():
        raise SignatureError(f"unsigned: no {SIGNATURE}")
    try:
        bundle = json.loads(path.read_bytes())
        envelope = bundle["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        payload_type = envelope["payloadType"]
        hint = (bundle.get("verificationMaterial") or {}).get("publicKey", {}).get("hint")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise SignatureError(f"{SIGNATURE} is not a model-signing signature ({type(exc).__name__}: {exc})") from None
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE or payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"{SIGNATURE} is not a model-signing v1.0 signature (media or payload type)")
    candidates = [hint] if hint in keys else ([] if hint else list(keys))
    if not candidates:
        raise SignatureError(f"signed by a key that is not trusted (key id {str(hint)[:16]}...; trusted: "
                             f"{', '.join(k[:16] + '...' for k in keys) or 'none'})")
    signer = None
    for candidate in candidates:
        try:
            keys[candidate].verify(signature, pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
            signer = candidate
            break
        except InvalidSignature:
            continue
    if signer is None:
        raise SignatureError("the signature does not verify: the signed statement was changed, or it was not "
                             "made with the trusted key it names")
    try:
        statement = json.loads(payload)
        predicate, (subject,) = statement["predicate"], statement["subject"]
        resources = {r["name"]: r["digest"] for r in predicate["resources"] if r["algorithm"] == "sha256"}
        listed = [r["digest"] for r in predicate["resources"]]
        root = hashlib.sha256(b"".join(bytes.fromhex(d) for d in listed)).hexdigest()
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"the signed statement is not model-signing v1.0 ({type(exc).__name__}: {exc})") from None
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError("the signed statement is not an in-toto model-signing v1.0 statement")
    if root != subject.get("digest", {}).get("sha256") or len(resources) != len(listed):
        raise SignatureError("the signed statement is inconsistent (its subject digest does not match its files)")
    return resources, signer


def compare(signed: dict[str, str], actual: dict[str, str]) -> None:
    """Signed {path: sha256} against what is there; SignatureError naming the first differences."""
    problems = [f"{p}: not signed" for p in sorted(set(actual) - set(signed))]
    problems += [f"{p}: signed but absent" for p in sorted(set(signed) - set(actual))]
    problems += [f"{p}: differs from the signed file" for p in sorted(set(signed) & set(actual))
                 if signed[p] != actual[p]]
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise SignatureError("does not match its signature: " + "; ".join(problems[:4]) + more)


def verify_artifact(folder: Path, manifest_bytes: bytes, files: dict[str, str], keys: dict[str, object]) -> str:
    """An artifact's signature against its manifest (the bytes read) and the manifest's
    `files` ({path: sha256}, which the caller checks against the files themselves): the signer's key id."""
    signed, signer = signed_files(folder, keys)
    compare(signed, {MANIFEST: hashlib.sha256(manifest_bytes).hexdigest(), **files})
    return signer


def folder_digests(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` but the signature and git's files."""
    folder = Path(folder)
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] in IGNORED or not path.is_file():
            continue
        if path.is_symlink():
            raise SignatureError(f"{relative} is a symbolic link: a signed folder holds plain files only")
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        found[relative.as_posix()] = digest.hexdigest()
    return found


def verify_directory(folder: Path, keys: dict[str, object]) -> str:
    """Any signed folder (a bundle): every file hashed and compared with the signature; the signer's key id."""
    signed, signer = signed_files(folder, keys)
    compare(signed, folder_digests(folder))
    return signer


# ------------------------------------------------------------------ signing (model-signing + settings)

def sign_directory(folder: Path, key: Path) -> Path:
    """Sign every file of `folder` with the private key `key` (PEM): writes folder/model.sig."""
    folder, key = Path(folder), Path(key)
    try:
        from model_signing import hashing
        from model_signing import signing as model_signing
    except ImportError:
        raise SignatureError("signing needs the model-signing package: pip install 'model-signing==1.1.1' "
                             "(the `train` extra has it)") from None
    if not key.is_file():
        raise SignatureError(f"no signing key at {key}: make one with `edgestack keys new DIR`")
    tmp = folder.parent / f".{folder.name}.{SIGNATURE}.tmp"  # beside the folder: never hashed into it
    try:
        config = model_signing.Config().use_elliptic_key_signer(private_key=key)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{key} is not an unencrypted EC P-256 private key in PEM ({exc})") from None
    config.set_hashing_config(hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=True))
    config.sign(folder, tmp)
    os.replace(tmp, folder / SIGNATURE)
    return folder / SIGNATURE


def sign_artifact(path: Path, key: Path | None = None) -> Path:
    """Sign one artifact version folder (or a staging folder about to be published) with `key`,
    else EDGESTACK_SIGNING_KEY: its model.sig. What `edgestack build`, import and export call."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise SignatureError(f"{path} is not an artifact (no {MANIFEST})")
    if key is None:
        from edgestack.settings import get_settings

        key = get_settings().signing_key
        if key is None:
            raise SignatureError("no signing key: set EDGESTACK_SIGNING_KEY (make one with `edgestack keys new DIR`)")
    return sign_directory(path, key)


_warned_unchecked = False


def check_artifact(folder: Path, manifest_bytes: bytes, meta) -> None:
    """What artifact.load() calls: with EDGESTACK_TRUSTED_KEYS, refuse an artifact that is unsigned
    or whose signature does not verify (naming the model, version and reason); without, say once
    that artifacts are not signature-checked."""
    global _warned_unchecked
    from edgestack.settings import get_settings

    trusted = get_settings().trusted_keys
    if not trusted:
        if not _warned_unchecked:
            _warned_unchecked = True
            log.warning("artifacts are not signature-checked (set EDGESTACK_TRUSTED_KEYS to refuse unsigned ones)")
        return
    keys = load_trusted_keys(trusted)
    try:
        verify_artifact(folder, manifest_bytes, {k: v.sha256 for k, v in meta.files.items()}, keys)
    except SignatureError as exc:
        raise SignatureError(f"refusing {meta.name} v{meta.version} ({folder}): {exc}") from None
