"""Content-addressed blob store for packages, samples and reports: a local folder, or S3-compatible storage.

A blob is named by the SHA-256 of its bytes. Two implementations of ``BlobStore``, chosen by
``open_blobs`` (``cloud-trainer serve --blobs``):

- ``LocalBlobStore`` (the default): a folder, ``<root>/sha256/ab/abcdef…``, written to a temporary name
  then renamed, so a reader never sees a partial blob. Its bytes are fsynced before the rename and its folder
  after it (``model_packager.durable``), so that a blob a record names survives a power cut once stored.
- ``S3BlobStore``: a bucket of any S3-compatible object store (AWS S3, MinIO, Ceph RGW, …) through
  ``boto3``, for replicas on several hosts: ``s3://bucket[/prefix]``, objects ``<prefix>/sha256/ab/abcdef…``.
  The endpoint comes from ``--s3-endpoint`` or boto3's own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``;
  credentials only from boto3's usual chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the
  environment, a profile, an instance role), never from a flag. An object is uploaded only once its digest
  is known, so an object named by a digest always holds those bytes; ``get_bytes`` checks them again.

Tenants: ``for_tenant(t)`` is the same store under ``tenants/<t>/`` (the default tenant at the root, where
single-tenant setups always kept their blobs), so that one tenant's blobs can be listed, billed, or erased
apart from every other's, and a digest one tenant knows never opens another tenant's blob.

Errors: ``BlobNotFound`` (a ``KeyError``) for a digest that is not there; ``BlobCorrupt`` when the bytes read
do not hash to their name; ``ValueError`` for something that is not a SHA-256 hex digest.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from model_packager.durable import sync_folder

_CHUNK = 1 << 20
DEFAULT_TENANT = "default"
# a staged file (``tmp/``) older than this was left by a process killed between ``stage`` and ``commit`` or
# ``discard`` (a live one holds it for one batch's transaction, seconds); ``sweep_staged`` removes it
STALE_STAGED_S = 3600.0


class BlobNotFound(KeyError):
    pass


class BlobCorrupt(ValueError):
    pass


class Staged:
    """Bytes written for a blob that is not one yet (``LocalBlobStore.stage``; ``S3BlobStore`` keeps the bytes)."""

    def __init__(self, digest: str, tmp: Path | None = None, data: bytes | None = None) -> None:
        self.digest, self.tmp, self.data = digest, tmp, data


class BlobStore(Protocol):
    def put_bytes(self, data: bytes) -> str: ...
    def put_file(self, path: Path) -> str: ...
    def put_stream(self, chunks: Iterable[bytes]) -> str: ...
    def exists(self, digest: str) -> bool: ...
    def size(self, digest: str) -> int: ...
    def get_bytes(self, digest: str) -> bytes: ...
    def read_range(self, digest: str, offset: int, length: int) -> bytes: ...
    def iter_chunks(self, digest: str, offset: int = 0, chunk: int = _CHUNK) -> Iterator[bytes]: ...
    def delete(self, digest: str) -> bool: ...
    def for_tenant(self, tenant: str | None) -> BlobStore: ...


def check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return digest


def tenant_prefix(tenant: str | None) -> str:
    """'' for the default tenant, ``tenants/<t>/`` for any other (a valid tenant id, or ``ValueError``)."""
    if tenant in (None, "", DEFAULT_TENANT):
        return ""
    from cloud_trainer.pki import check_tenant

    return f"tenants/{check_tenant(tenant)}/"


def _verified(digest: str, data: bytes) -> bytes:
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise BlobCorrupt(
            f"blob {digest[:16]}…: its bytes hash to {got[:16]}…: altered or truncated in the store; "
            "upload it again"
        )
    return data


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def for_tenant(self, tenant: str | None) -> LocalBlobStore:
        prefix = tenant_prefix(tenant)
        return LocalBlobStore(self.root / prefix) if prefix else self

    def _path(self, digest: str) -> Path:
        return self.root / "sha256" / check_digest(digest)[:2] / digest

    def _commit(self, tmp: Path, digest: str) -> str:
        dest = self._path(digest)
        if dest.exists():
            tmp.unlink()
            return digest
        new = [p for p in (dest.parent.parent, dest.parent) if not p.is_dir()]
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        # the rename on the disk, and a folder made for it in its parent: after a power cut the blob could be gone
        # while the record naming it, committed and acknowledged (the agent dropped its copy), stays
        sync_folder(dest.parent)
        for made in reversed(new):
            sync_folder(made.parent)
        return digest

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream(iter([data]))

    def stage(self, data: bytes) -> Staged:
        """Write ``data`` to a temporary file and sync it to disk, not yet a blob: ``commit`` makes it one (a
        rename, no data written), ``discard`` forgets it. The fleet store stages a batch's samples before its
        transaction, so that the slow part (writing and syncing the bytes) holds no lock other writers wait for."""
        tmp, digest = self._write(iter([data]))
        return Staged(digest, tmp)

    def commit(self, staged: Staged) -> str:
        if staged.tmp is None:
            raise ValueError(f"blob {staged.digest[:16]}…: already committed or discarded")
        tmp, staged.tmp = staged.tmp, None
        return self._commit(tmp, staged.digest)

    def discard(self, staged: Staged) -> None:
        if staged.tmp is not None:
            staged.tmp.unlink(missing_ok=True)
            staged.tmp = None

    def put_file(self, path: Path) -> str:
        with open(path, "rb") as f:
            return self.put_stream(iter(lambda: f.read(_CHUNK), b""))

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        tmp, digest = self._write(chunks)
        return self._commit(tmp, digest)

    def _write(self, chunks: Iterable[bytes]) -> tuple[Path, str]:
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
        return Path(name), h.hexdigest()

    def sweep_staged(self, older_than_s: float = STALE_STAGED_S) -> tuple[int, int]:
        """Remove the staged files (every tenant's ``tmp/``) not touched for ``older_than_s``: a service killed
        (-9, the OOM killer) while a batch's samples were staged left them, and nothing else ever removed them.
        Replicas share the folder: a file another replica has staged for its batch now is young and is kept.
        Returns (files, bytes) removed."""
        cutoff = time.time() - older_than_s
        files = size = 0
        for tmp_dir in (self.root / "tmp", *self.root.glob("tenants/*/tmp")):
            try:
                entries = list(os.scandir(tmp_dir))
            except FileNotFoundError:
                continue
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                    if e.is_file(follow_symlinks=False) and st.st_mtime < cutoff:
                        os.unlink(e.path)
                        files, size = files + 1, size + st.st_size
                except FileNotFoundError:  # removed meanwhile (committed, discarded, another replica's sweep)
                    continue
        return files, size

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

    def get_bytes(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return _verified(digest, f.read())

    def read_range(self, digest: str, offset: int, length: int) -> bytes:
        with self.open(digest) as f:
            f.seek(offset)
            return f.read(length)

    def iter_chunks(self, digest: str, offset: int = 0, chunk: int = _CHUNK) -> Iterator[bytes]:
        """The blob's bytes from ``offset`` in pieces of at most ``chunk`` (not checked against the digest: the
        caller hashes them). ``BlobNotFound`` at once for a blob that is not there."""
        f = self.open(digest)
        return self._chunks(f, offset, chunk)

    @staticmethod
    def _chunks(f: BinaryIO, offset: int, chunk: int) -> Iterator[bytes]:
        with f:
            f.seek(offset)
            while data := f.read(chunk):
                yield data

    def delete(self, digest: str) -> bool:
        try:
            self._path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def path(self, digest: str) -> Path:
        p = self._path(digest)
        if not p.exists():
            raise BlobNotFound(digest)
        return p


class S3BlobStore:
    """Blobs in an S3-compatible bucket (boto3, imported only here). ``client``: an existing boto3 S3 client
    (for tests and callers that configure their own); otherwise one is made from ``endpoint`` / ``region``
    and boto3's credential chain."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        client=None,
    ) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint or None,
                region_name=region or None,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
            )
        self.client, self.bucket = client, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def check(self) -> None:
        """Fail start-up, naming the fix, when the bucket cannot be reached (never fall back to a folder)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise ValueError(
                f"blob store s3://{self.bucket}: {str(exc)[:300]}; check --s3-endpoint (or "
                "AWS_ENDPOINT_URL_S3), that the bucket exists and the credentials in the environment "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) may read and write it"
            ) from exc

    def for_tenant(self, tenant: str | None) -> S3BlobStore:
        prefix = tenant_prefix(tenant)
        return S3BlobStore(self.bucket, self.prefix + prefix, client=self.client) if prefix else self

    def key(self, digest: str) -> str:
        return f"{self.prefix}sha256/{check_digest(digest)[:2]}/{digest}"

    def _missing(self, exc) -> bool:
        err = getattr(exc, "response", {}).get("Error", {})
        return str(err.get("Code")) in ("404", "NoSuchKey", "NotFound")

    def _head(self, digest: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self._head(digest) is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data)
        return digest

    def stage(self, data: bytes) -> Staged:
        """Nothing written yet: an object is uploaded whole or not at all (``commit``)."""
        return Staged(hashlib.sha256(data).hexdigest(), data=data)

    def commit(self, staged: Staged) -> str:
        if staged.data is None:
            raise ValueError(f"blob {staged.digest[:16]}…: already committed or discarded")
        data, staged.data = staged.data, None
        return self.put_bytes(data)

    def discard(self, staged: Staged) -> None:
        staged.data = None

    def put_file(self, path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        digest = h.hexdigest()
        if self._head(digest) is None:  # upload_file: multipart for large files, retried per part
            self.client.upload_file(str(path), self.bucket, self.key(digest))
        return digest

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        # the name is the digest, known only at the end: spool (memory, then disk past 8 MB), then upload
        with tempfile.SpooledTemporaryFile(max_size=8 * _CHUNK) as spool:
            h = hashlib.sha256()
            for chunk in chunks:
                h.update(chunk)
                spool.write(chunk)
            digest = h.hexdigest()
            if self._head(digest) is None:
                spool.seek(0)
                self.client.upload_fileobj(spool, self.bucket, self.key(digest))
        return digest

    def exists(self, digest: str) -> bool:
        return self._head(digest) is not None

    def size(self, digest: str) -> int:
        head = self._head(digest)
        if head is None:
            raise BlobNotFound(digest)
        return int(head["ContentLength"])

    def _get(self, digest: str, **kw) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(digest), **kw)["Body"].read()
        except ClientError as exc:
            if self._missing(exc):
                raise BlobNotFound(digest) from exc
            if str(exc.response.get("Error", {}).get("Code")) == "InvalidRange":
                return b""
            raise

    def get_bytes(self, digest: str) -> bytes:
        return _verified(digest, self._get(digest))

    def read_range(self, digest: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return self._get(digest, Range=f"bytes={offset}-{offset + length - 1}")

    def iter_chunks(self, digest: str, offset: int = 0, chunk: int = _CHUNK) -> Iterator[bytes]:
        total = self.size(digest)
        while offset < total:
            data = self.read_range(digest, offset, min(chunk, total - offset))
            if not data:
                return
            yield data
            offset += len(data)

    def delete(self, digest: str) -> bool:
        if self._head(digest) is None:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))
        return True


def open_blobs(
    where: str | None, data: Path, *, s3_endpoint: str | None = None, s3_region: str | None = None
) -> BlobStore:
    """``s3://bucket[/prefix]``: ``S3BlobStore``; a folder path: ``LocalBlobStore`` there; nothing: ``<data>/blobs``."""
    if where and where.startswith("s3://"):
        bucket, _, prefix = where.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"--blobs {where!r}: expected s3://BUCKET[/PREFIX]")
        try:
            import boto3  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                f"--blobs {where!r} needs boto3: pip install 'factory-edge[cloud]' (or boto3)"
            ) from exc
        store = S3BlobStore(bucket, prefix, endpoint=s3_endpoint, region=s3_region)
        store.check()
        return store
    if where and "://" in where:
        raise ValueError(f"--blobs {where!r}: expected s3://BUCKET[/PREFIX] or a folder")
    return LocalBlobStore(Path(where) if where else Path(data) / "blobs")
