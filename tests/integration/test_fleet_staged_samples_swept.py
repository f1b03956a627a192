"""A fleet service killed (-9, the OOM killer) while a batch's samples were staged under ``<blobs>/tmp/`` (written
and synced before the batch's transaction, renamed into a blob in it) left those files for good: nothing removed
them, and every such kill kept up to a batch's sample bytes (8 MB with 1-MB samples, here) on the disk. The
service removes, when it starts, staged files older than an hour (a live replica of the same folder holds its own
for one batch's transaction, seconds), the default tenant's and every other tenant's."""

from __future__ import annotations

import logging
import os
import time

from cloud_trainer.blobs import LocalBlobStore
from cloud_trainer.fleet.service import FleetServer
from tests.support.fleet import make_pki
from tests.support.peers import free_port


async def test_samples_a_killed_run_staged_are_removed_at_the_next_start_and_a_live_replicas_are_kept(
    tmp_path, caplog
):
    data = tmp_path / "cloud"
    blobs = LocalBlobStore(data / "blobs")
    # what a run killed between stage and commit leaves: the bytes staged, never committed nor discarded
    left = [blobs.stage(b"x" * 1000), blobs.for_tenant("acme").stage(b"y" * 500)]
    old = time.time() - 2 * 3600
    for st in left:
        os.utime(st.tmp, (old, old))
    live = blobs.for_tenant("acme").stage(b"z" * 10)  # another replica's batch, under way
    pki = make_pki(tmp_path / "pki", agents=())
    with caplog.at_level(logging.INFO, logger="cloud_trainer.fleet.service"):
        srv = FleetServer(data, free_port(), pki / "ca.pem", pki / "server.pem", pki / "server.key")
    try:
        assert [st.tmp.exists() for st in left] == [False, False]
        assert live.tmp.exists() and live.tmp.read_bytes() == b"z" * 10
        assert "removed 2 staged sample files (1500 bytes)" in caplog.text, caplog.text
        assert blobs.for_tenant("acme").commit(live) and blobs.for_tenant("acme").exists(live.digest)
    finally:
        await srv.stop()
