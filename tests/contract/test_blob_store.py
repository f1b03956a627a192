"""One suite over every blob store: the local folder and an S3-compatible bucket (``S3BlobStore`` through boto3
against a real S3 server on 127.0.0.1: moto's server mode, see ``tests.support.s3``). Same semantics:
content-addressed put (bytes, file, stream) that stores a blob once, whole and ranged reads (resumable
downloads), exists/size/delete, a digest check on whole reads, and tenants that never see each other's blobs."""

from __future__ import annotations

import hashlib

import pytest

from cloud_trainer.blobs import BlobCorrupt, BlobNotFound, LocalBlobStore, S3BlobStore, open_blobs
from tests.support.s3 import CREDENTIALS, s3_bucket, s3_client, s3_server  # noqa: F401  (fixtures)


@pytest.fixture(params=["folder", "s3"])
def blobs(request, tmp_path):
    if request.param == "folder":
        return LocalBlobStore(tmp_path / "blobs")
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return S3BlobStore(bucket, "fleet", client=s3_client(endpoint))


def test_put_get_ranges_and_delete(blobs, tmp_path):
    data = bytes(range(256)) * 5000  # 1.28 MB: past one chunk
    digest = blobs.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert blobs.put_bytes(data) == digest  # stored once: the same name
    assert blobs.exists(digest) and blobs.size(digest) == len(data)
    assert blobs.get_bytes(digest) == data
    assert blobs.read_range(digest, 1_000_000, 1000) == data[1_000_000:1_001_000]
    assert blobs.read_range(digest, len(data) - 10, 1000) == data[-10:]  # the last, short chunk
    assert blobs.read_range(digest, len(data), 100) == b""
    f = tmp_path / "pkg.bin"
    f.write_bytes(b"package bytes" * 100)
    assert blobs.put_file(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    assert blobs.put_stream(iter([b"ab", b"cd"])) == hashlib.sha256(b"abcd").hexdigest()
    assert blobs.get_bytes(hashlib.sha256(b"abcd").hexdigest()) == b"abcd"
    assert blobs.delete(digest) is True and blobs.delete(digest) is False
    assert not blobs.exists(digest)
    for call in (blobs.get_bytes, blobs.size):
        with pytest.raises(BlobNotFound):
            call(digest)
    with pytest.raises(ValueError, match="not a sha256 hex digest"):
        blobs.exists("../../etc/passwd")


def test_tenants_never_see_each_others_blobs(blobs):
    acme, beta = blobs.for_tenant("acme"), blobs.for_tenant("beta")
    assert blobs.for_tenant("default") is blobs and blobs.for_tenant(None) is blobs
    digest = acme.put_bytes(b"acme's image")
    assert acme.get_bytes(digest) == b"acme's image"
    assert not beta.exists(digest) and not blobs.exists(digest)
    with pytest.raises(BlobNotFound):
        beta.get_bytes(digest)
    assert beta.delete(digest) is False and acme.exists(digest)
    with pytest.raises(ValueError, match="tenant id"):
        blobs.for_tenant("../acme")


def test_a_blob_altered_in_the_store_is_refused_on_a_whole_read(blobs):
    digest = blobs.put_bytes(b"original bytes")
    if isinstance(blobs, LocalBlobStore):
        blobs.path(digest).write_bytes(b"altered bytes!")
    else:
        blobs.client.put_object(Bucket=blobs.bucket, Key=blobs.key(digest), Body=b"altered bytes!")
    with pytest.raises(BlobCorrupt, match="altered or truncated"):
        blobs.get_bytes(digest)


def test_open_blobs_picks_the_store_and_refuses_an_unreachable_bucket(request, tmp_path, monkeypatch):
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    assert isinstance(open_blobs(None, tmp_path), LocalBlobStore)
    for k, v in CREDENTIALS.items():  # credentials come from the environment only
        monkeypatch.setenv(k, v)
    store = open_blobs(f"s3://{bucket}/fleet", tmp_path, s3_endpoint=endpoint)
    assert isinstance(store, S3BlobStore) and store.prefix == "fleet/"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)  # boto3's own variable works as well as the flag
    digest = open_blobs(f"s3://{bucket}/fleet", tmp_path).put_bytes(b"x")
    assert store.get_bytes(digest) == b"x"
    with pytest.raises(ValueError, match="bucket exists"):
        open_blobs("s3://no-such-bucket", tmp_path, s3_endpoint=endpoint)
    with pytest.raises(ValueError, match="expected s3://"):
        open_blobs("gs://bucket", tmp_path)
