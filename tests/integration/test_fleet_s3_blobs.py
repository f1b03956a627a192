"""The fleet service on an S3-compatible blob store (a real S3 server on 127.0.0.1: moto's server mode, see
``tests.support.s3``): `serve --blobs s3://BUCKET/PREFIX --s3-endpoint URL` with credentials from the
environment stores an agent's uploaded image in the bucket under its tenant's prefix, and the trainer's
dataset export reads it back from there."""

from __future__ import annotations

import hashlib
import json
import time

import grpc

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.train.uploads import export
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import make_pki
from tests.support.peers import free_port
from tests.support.s3 import CREDENTIALS, s3_bucket, s3_client, s3_server  # noqa: F401  (fixtures)


async def test_uploaded_samples_land_in_the_bucket_and_train_from_there(tmp_path, s3_bucket, monkeypatch):  # noqa: F811
    endpoint, bucket = s3_bucket
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    pki = make_pki(tmp_path / "pki", agents=("gw1",))
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        blobs=f"s3://{bucket}/fleet",
        s3_endpoint=endpoint,
    )
    await srv.start()
    import cv2
    import numpy as np

    image = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8))[
        1
    ].tobytes()
    digest = hashlib.sha256(image).hexdigest()
    try:
        creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            batch = pb.RecordBatch(
                records=[
                    pb.Record(
                        seq=1,
                        kind="sample",
                        t=time.time(),
                        sample=image,
                        sample_ext=".png",
                        sample_sha256=digest,
                        payload=json.dumps({"model": "part-inspection"}).encode(),
                    )
                ]
            )
            acks = [a async for a in rpc.FleetStub(ch).PushRecords(iter([batch]), timeout=10)]
        assert acks[0].stored == 1
    finally:
        await srv.stop()
    body = (
        s3_client(endpoint)
        .get_object(Bucket=bucket, Key=f"fleet/sha256/{digest[:2]}/{digest}")["Body"]
        .read()
    )
    assert body == image and not (tmp_path / "cloud" / "blobs").exists()  # nothing fell back to a folder
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"sha256": digest, "label": "ok"}) + "\n")
    res = export(
        tmp_path / "cloud",
        "part-inspection",
        tmp_path / "ds",
        labels_file=labels,
        blobs=f"s3://{bucket}/fleet",
        s3_endpoint=endpoint,
    )
    assert (
        res["exported"] == 1 and (tmp_path / "ds" / f"images/upload-{digest[:16]}.png").read_bytes() == image
    )


async def test_an_object_store_gone_tells_the_agent_its_kind_and_id_never_its_endpoint_or_bucket(
    tmp_path, caplog
):
    """A batch whose sample the object store could not take told the agent botocore's text: the endpoint's host and
    port, the bucket, the tenant's prefix and the key ('Could not connect to the endpoint URL:
    "http://127.0.0.1:PORT/internal-bucket/fleet/acme/sha256/..."'). It is told the kind and an error id, and the
    service's log has the text under that id. The store is boto3 over a real socket to an endpoint that has closed
    (one attempt: the retries would only take longer)."""
    import http.server
    import logging
    import threading

    import boto3
    from botocore.config import Config

    from cloud_trainer.blobs import S3BlobStore

    class Answering(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # the bucket is there at start
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    s3 = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Answering)
    threading.Thread(target=s3.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{s3.server_address[1]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="fleet-test",
        aws_secret_access_key="fleet-test-secret",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5),
    )
    blobs = S3BlobStore("internal-bucket", "fleet", client=client)
    blobs.check()
    pki = make_pki(tmp_path / "pki", agents=("gw1",))
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", blobs=blobs
    )
    await srv.start()
    s3.shutdown()
    s3.server_close()  # the object store goes away: its port refuses
    image = b"\x89PNG\r\n\x1a\n" + bytes(200)
    record = pb.Record(
        seq=1,
        kind="sample",
        t=time.time(),
        sample=image,
        sample_ext=".png",
        sample_sha256=hashlib.sha256(image).hexdigest(),
        payload=b"{}",
    )
    try:
        creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            with caplog.at_level(logging.ERROR, logger="cloud_trainer.fleet"):
                call = rpc.FleetStub(ch).PushRecords(iter([pb.RecordBatch(records=[record])]), timeout=30)
                try:
                    acks = [a async for a in call]
                    raise AssertionError(f"stored with the object store gone: {acks}")
                except grpc.aio.AioRpcError as exc:
                    code, details = exc.code(), exc.details()
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        for word in (endpoint, str(s3.server_address[1]), "internal-bucket", "fleet/", "sha256/", "Endpoint"):
            assert word not in details, (word, details)  # was: botocore's EndpointConnectionError, whole
        assert "unreachable; error id " in details and "nothing of it was stored" in details, details
        eid = details.split("error id ")[1][:10]
        said = [r for r in caplog.records if f"error id {eid}" in r.getMessage()]
        assert said and said[0].exc_info and "internal-bucket" in str(said[0].exc_info[1]), caplog.text
    finally:
        await srv.stop()
