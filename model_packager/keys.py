"""Ed25519 signing keys for packages: generate, load, and the set of keys an agent trusts.

Keys are PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key) so that standard tools
(``openssl pkey -in signing.key -pubout``) read them. A key is named by its *key id*: the first
16 hex digits of the SHA-256 of the raw 32-byte public key, recorded in each signature so that a
verifier knows which trusted key to try and can say which key signed.

A trusted key is only as safe as the file it is read from: a key file, or a folder of them, that every
user of the machine can write (mode o+w, or a folder on the way to it that is, unless that folder has the
sticky bit, as ``/tmp`` has) lets anyone add a key or swap one and then have any package they sign accepted.
``load_trusted_keys`` refuses such a key (``SignatureError`` code ``unsafe_trusted_key``, naming the path and
``chmod o-w``), through a symbolic link as well as at the link's own place.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from model_packager.errors import SignatureError
from model_packager.key_dates import NOT_AFTER, key_not_after, read_key_file  # noqa: F401 - NOT_AFTER re-exported
from model_packager.perms import writable_by_anyone


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new Ed25519 key pair; the private key file is created with mode 0600. Returns the key id."""
    private_path, public_path = Path(private_path), Path(public_path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)
    os.chmod(private_path, 0o600)  # O_CREAT's mode does not apply to an existing file
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_id(key.public_key())


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(
            f"signing key {path}: cannot read an unencrypted PEM private key ({exc})", code="bad_key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(
            f"signing key {path}: not an Ed25519 key; create one with `model-packager keygen`", code="bad_key"
        )
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    try:
        data = read_key_file(path)  # a regular file only: a named pipe is never waited on
    except OSError as exc:
        raise SignatureError(
            f"trusted key {path}: cannot read a PEM public key ({exc.strerror or exc}); refused",
            code="bad_key",
        ) from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SignatureError(
            f"trusted key {path}: cannot read a PEM public key ({exc})", code="bad_key"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"trusted key {path}: not an Ed25519 public key", code="bad_key")
    return key


def _refuse_unsafe(path: Path, what: str) -> None:
    p = writable_by_anyone(path)
    if p is not None:
        shown = "it" if p in (path, path.resolve()) else f"{p} on the way to it"
        raise SignatureError(
            f"trusted key {what} {path}: {shown} can be changed by every user of this machine (mode "
            f"{stat.S_IMODE(os.stat(p).st_mode):o}), so anyone could add or swap a key and have any package "
            f"accepted; refused: `chmod o-w {p}`",
            code="unsafe_trusted_key",
        )


class TrustedKeys:
    """The public keys whose signatures an agent accepts, by key id, with the end of each one's trust when its
    file states one (``not_after``: epoch seconds; see ``key_not_after``)."""

    def __init__(
        self,
        keys: dict[str, Ed25519PublicKey] | None = None,
        sources: dict[str, str] | None = None,
        not_after: dict[str, float] | None = None,
    ):
        self.keys = dict(keys or {})
        self.sources = dict(sources or {})  # key id -> file it came from, for messages
        self.not_after = dict(not_after or {})  # key id -> when its trust ends (absent: never)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, kid: str) -> bool:
        return kid in self.keys

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self.keys.get(kid)

    def ids(self) -> list[str]:
        return sorted(self.keys)


def load_trusted_keys(paths: Iterable[str | Path] | str | Path) -> TrustedKeys:
    """Load public keys from files, or from every ``*.pub`` in a directory given among ``paths``. A key file or
    folder that every user may change is refused (``writable_by_anyone``)."""
    if isinstance(paths, str | Path):
        paths = [paths]
    keys: dict[str, Ed25519PublicKey] = {}
    sources: dict[str, str] = {}
    not_after: dict[str, float] = {}
    for p in paths:
        p = Path(p)
        is_dir = p.is_dir()
        _refuse_unsafe(p, "folder" if is_dir else "file")
        files = sorted(p.glob("*.pub")) if is_dir else [p]
        for f in files:
            if is_dir:
                _refuse_unsafe(f, "file")  # a link in the folder to a file elsewhere
            k = load_public_key(f)
            kid = key_id(k)
            keys[kid] = k
            sources[kid] = str(f)
            ends = key_not_after(f)
            if ends is not None:  # the same key in two files: the earliest end stated holds
                not_after[kid] = min(ends, not_after.get(kid, ends))
    return TrustedKeys(keys, sources, not_after)
