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
