"""`edgestack keys new DIR` and `edgestack sign MODEL`: signing keys and signed artifacts
(edgestack/signing.py holds the format and every check)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgestack import artifact, registry, signing


def cmd_keys_new(args: argparse.Namespace) -> int:
    private, public = signing.new_key_pair(Path(args.directory))
    print(f"private key: {private}  (keep it secret; EDGESTACK_SIGNING_KEY={private} signs every new build)")
    print(f"public key:  {public}  (give it to servers: EDGESTACK_TRUSTED_KEYS={public})")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    registry.get(args.model)
    root = artifact.default_root()
    folder = root / args.model / args.version if args.version else artifact.latest_version_dir(args.model, root)
    if folder is None or not (folder / artifact.MANIFEST).is_file():
        raise artifact.ArtifactError(f"no artifact {args.model}{' v' + args.version if args.version else ''} under "
                                     f"{root}; build it with `edgestack build {args.model}`")
    art = artifact.load(folder, check=False)
    artifact.verify(folder, art.meta.files)  # sign only what still matches its manifest
    path = signing.sign_artifact(folder, Path(args.key) if args.key else None)
    print(f"signed {art.name} v{art.version}: {path}")
    return 0


def add_parsers(sub) -> None:
    keys = sub.add_parser("keys", help="signing keys: `keys new DIR` makes an EC P-256 key pair")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    new = keys_sub.add_parser("new", help="write DIR/signing.key (private, 0600) and DIR/signing.pub")
    new.add_argument("directory", help="folder for the key pair (created if missing; existing keys are kept)")
    new.set_defaults(func=cmd_keys_new)
    sign = sub.add_parser("sign", help="sign a built artifact version (EDGESTACK_SIGNING_KEY or --key)",
                          description="Writes model.sig into the artifact's version folder (OpenSSF model-signing "
                                      "format, EC P-256); servers with EDGESTACK_TRUSTED_KEYS then accept it.")
    sign.add_argument("model", help="served name")
    sign.add_argument("--version", help="the version to sign (default: the latest)")
    sign.add_argument("--key", help="the private key (default: EDGESTACK_SIGNING_KEY)")
    sign.set_defaults(func=cmd_sign)
