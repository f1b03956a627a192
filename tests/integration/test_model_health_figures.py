"""What a deployment step says of a slot's health is the served version's own figures, not the slot's since the
agent started. Real signed packages, a real slot (ONNX Runtime) and the model manager; the fleet's side is the
manager's uplink seam, which records the step it is told to send."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest

from devices.base import Frame
from edge_agent.models.config import ModelConfig
from edge_agent.models.manager import ModelManager
from edge_agent.models.slot import ModelSlot
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("health-figures")
    key, pub = make_keypair(tmp / "keys")
    return {
        v: make_package(tmp / v, version=v, key=key, seed=i) for i, v in enumerate(["1.0.0", "1.1.0"])
    }, pub


async def test_a_steps_health_is_the_served_versions_own_not_the_slots_since_the_start(tmp_path, pkgs):
    """The health a step carries (the fleet's gate judges its error rate, the admin reads its count) was the
    slot's counters since the agent started: just after a swap, mostly the previous version's inferences (a
    candidate failing every item after 1,000 good ones of the version before read 2% and passed a 5% gate; the
    count a ``watching`` step gave as the candidate's was the previous version's). It is the served model's own
    since it was made active, and names its version."""
    packages, pub = pkgs
    cfg = ModelConfig(package=str(packages["1.0.0"]), engine="onnxruntime", version_policy="follow_fleet")
    s = ModelSlot("vision", cfg, tmp_path / "data", [pub])
    await s.start()
    sent: list[dict] = []

    async def report_deployment(dep_id, step, ok, reason, **kw):
        sent.append({"step": step, **kw})
        return True

    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=tmp_path / "data"))
    mgr.uplink = SimpleNamespace(client=SimpleNamespace(report_deployment=report_deployment))
    rng = np.random.default_rng(0)

    def frames(n: int) -> None:
        for i in range(n):
            s.infer(Frame("cam", i, time.time(), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)))

    try:
        frames(6)  # served by 1.0.0
        assert (await s.swap(packages["1.1.0"], watch=False)).ok
        frames(2)
        status = s.status()
        assert status["version"] == "1.1.0" and s.counters["inferences"] == 8
        d = SimpleNamespace(
            slot="vision",
            package=status["package"],
            version="1.1.0",
            digest=status["digest"],
            deployment_id="dep1",
            rollback=False,
        )
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=1))  # it runs it: says healthy, once
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        (step,) = sent
        assert step["step"] == "healthy" and step["version"] == "1.1.0"
        assert step["health"] == {"error_rate": 0.0, "inferences": 2, "version": "1.1.0"}, (
            step
        )  # was 8, no version
    finally:
        await mgr.stop()
        await s.stop()
