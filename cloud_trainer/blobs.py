"""Content-addressed blob store for packages, samples and reports.

A blob is named by the SHA-256 of its bytes. ``LocalBlobStore`` keeps them in a folder
(``<root>/sha256/ab/abcdef…``), written to a temporary name then renamed, so a reader never sees
a partial blob. An S3-compatible implementation can satisfy ``BlobStore`` later.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

_CHUNK = 1 << 20


class BlobNotFound(KeyError):
    pass


class BlobStore(Protocol):
    def put_bytes(self, data: bytes) -> str: ...
    def put_file(self, path: Path) -> str: ...
    def exists(self, digest: str) -> bool: ...
    def size(self, digest: str) -> int: ...
    def open(self, digest: str) -> BinaryIO: ...
    def path(self, digest: str) -> Path: ...


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.root / "sha256" / digest[:2] / digest

    def _commit(self, tmp: Path, digest: str) -> str:
        dest = self._path(digest)
        if dest.exists():
            tmp.unlink()
            return digest
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return digest

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream(iter([data]))

    def put_file(self, path: Path) -> str:
        with open(path, "rb") as f:
            return self.put_stream(iter(lambda: f.read(_CHUNK), b""))

    def put_stream(self, chunks) -> str:
        h = hashlib.sha256()
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return self._commit(Path(name), h.hexdigest())

    def exists(self, digest: str) -> bool:
        return self._path(digest).exists()

    def size(self, digest: str) -> int:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self._path(digest), "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def path(self, digest: str) -> Path:
        p = self._path(digest)
        if not p.exists():
            raise BlobNotFound(digest)
        return p
