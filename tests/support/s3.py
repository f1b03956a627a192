"""An S3-compatible server for tests: moto's server mode (``python -m moto.server``, from the dev extra) as a
subprocess on a free loopback port, once per test session. It speaks the S3 REST API over HTTP like MinIO or
AWS (PUT/GET with ranges/HEAD/DELETE objects, buckets), so ``S3BlobStore`` is tested through boto3 over a
real socket; moto is the peer because no MinIO binary installs from the package registries here."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.support.peers import free_port, wait_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "fleet-test",
    "AWS_SECRET_ACCESS_KEY": "fleet-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint URL (``http://127.0.0.1:PORT``) of a running S3-compatible server."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("moto[server] is not installed: pip install -e '.[dev]'")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


@pytest.fixture
def s3_bucket(s3_server):
    """(endpoint, a fresh bucket's name)."""
    name = "fleet-" + uuid.uuid4().hex[:12]
    s3_client(s3_server).create_bucket(Bucket=name)
    return s3_server, name
