"""The health check's verdicts kept across restarts (``<data_dir>/deployments/health-rollbacks``) are written by
each slot's watch in a worker thread. Two slots rolled back in the same instant (two deployments rolled out
together, one bad line condition) both read the file before either wrote it, through one shared temporary name:
one verdict was lost (or the second replace failed, "cannot record"), and after a restart that deployment,
still desired, was installed and served again."""

from __future__ import annotations

import json
import logging
import threading
from types import SimpleNamespace

from edge_agent.models.manager import ModelManager


def test_two_slots_rolled_back_at_once_keep_both_verdicts(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    a = SimpleNamespace(slot="vision", package="p", version="1.1.0", digest="a" * 64, deployment_id="depA")
    b = SimpleNamespace(slot="anomaly", package="q", version="2.1.0", digest="b" * 64, deployment_id="depB")
    for i in range(20):
        data = tmp_path / f"d{i}"
        mgr = ModelManager({}, SimpleNamespace(data_dir=data))
        start = threading.Barrier(2)

        def hold(d, why, mgr=mgr, start=start):
            start.wait()
            mgr._hold(d, why)

        threads = [
            threading.Thread(target=hold, args=(a, "health check failed: x")),
            threading.Thread(target=hold, args=(b, "health check failed: y")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        kept = json.loads((data / "deployments" / "health-rollbacks").read_text())
        assert {k: v["deployment"] for k, v in kept.items()} == {a.digest: "depA", b.digest: "depB"}, (
            i,
            kept,
        )
        assert not [r for r in caplog.records if "cannot record" in r.getMessage()]
        assert [p.name for p in (data / "deployments").iterdir()] == ["health-rollbacks"]  # no temporary left
