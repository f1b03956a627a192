"""A version withdrawn (``cloud-trainer withdraw``) while a gateway downloads it: a real fleet service (gRPC, mTLS,
SQLite, a registry of signed packages) and real agents (camera folder, ONNX Runtime). The fleet looked at the
withdrawal only when a download started, so a version withdrawn between that look and the last chunk, or between
the last chunk and the install, was delivered whole and installed. Now the fleet looks again before the last chunk
(and every second before the others) and the agent asks once more as the install begins: the agent stops, keeps
none of its bytes, does not install it, and says why (its log, its deployment report, the rollout's reason)."""

from __future__ import annotations

import asyncio
import threading

from cloud_trainer.fleet import service
from edge_agent.models import manager as manager_module
from tests.integration.test_fleet_control import fleet, until, version  # noqa: F401

DEFECT = "misreads dark castings (ticket 5120)"


def _deploy(srv, agent: str) -> dict:
    return srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": [agent],
            "strategy": "all_at_once",
        }
    )


def _leftovers(mgr) -> list[str]:
    return sorted(p.name for p in mgr.staging.rglob("*") if p.is_file())


async def _stopped_and_said_why(srv, agents, dep, mgr) -> None:
    await until(
        lambda: any(s["step"] == "failed" and s["version"] == "1.1.0" for s in mgr.steps),
        what="gw1 to stop and report why",
    )
    step = next(s for s in mgr.steps if s["step"] == "failed" and s["version"] == "1.1.0")
    assert "was withdrawn from the registry" in step["reason"] and DEFECT in step["reason"], step
    await until(lambda: srv.control._get(dep["id"])["state"] == "halted", what="the rollout to halt")
    assert DEFECT in srv.control._get(dep["id"])["reason"]
    await asyncio.sleep(1.0)  # (several heartbeats: it is not tried again for this deployment)
    assert version(agents["gw1"]) == "1.0.0" and agents["gw1"].slots["vision"].state == "active"
    assert [s["step"] for s in mgr.steps if s["version"] == "1.1.0"].count("downloading") == 1
    assert _leftovers(mgr) == []  # no partial file nor package of it kept


async def test_a_version_withdrawn_between_the_download_start_and_its_last_chunk_is_not_delivered(
    fleet,  # noqa: F811
    monkeypatch,
):
    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    began, withdrawn = threading.Event(), threading.Event()
    open_at = service._open_at

    def opened_after_the_withdrawal(
        path, offset
    ):  # the fleet's reader, once the download's first look passed
        began.set()
        withdrawn.wait(10)
        return open_at(path, offset)

    monkeypatch.setattr(service, "_open_at", opened_after_the_withdrawal)
    dep = _deploy(srv, "gw1")
    try:
        await until(began.is_set, what="gw1's download to begin")
        reg.withdraw("part-inspection", "1.1.0", DEFECT)
    finally:
        withdrawn.set()
    await _stopped_and_said_why(srv, agents, dep, mgr)


async def test_a_version_withdrawn_after_its_last_chunk_is_not_installed(fleet, monkeypatch):  # noqa: F811
    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    downloaded, withdrawn = threading.Event(), threading.Event()
    digest_of = manager_module._sha256

    def hashed_after_the_withdrawal(path):  # the agent checks the bytes it received, every chunk sent
        downloaded.set()
        withdrawn.wait(10)
        return digest_of(path)

    monkeypatch.setattr(manager_module, "_sha256", hashed_after_the_withdrawal)
    dep = _deploy(srv, "gw1")
    try:
        await until(downloaded.is_set, what="gw1's download to end")
        reg.withdraw("part-inspection", "1.1.0", DEFECT)
    finally:
        withdrawn.set()
    await _stopped_and_said_why(srv, agents, dep, mgr)


async def test_a_withdrawal_stops_a_download_in_its_course_and_a_recheck_reads_one_index(
    fleet,  # noqa: F811
    monkeypatch,
):
    """The per-second re-check in the middle of a download (chunks of 4 KiB, re-checked at each): a version
    withdrawn after a few chunks is stopped before its last one. Each re-check reads the package's own index.json
    only: it re-read every index of the tenant's registry (``names()`` and one ``list()`` per name, 449 ms at
    20,000 versions), under the control's lock, in one of the tenant's package read places."""
    import re

    from cloud_trainer.registry import Registry

    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    for i in range(60):  # other packages of the tenant
        (reg.root / f"other-{i}").mkdir()
        (reg.root / f"other-{i}" / "index.json").write_text("[]")
    total = reg.by_digest(reg.get("part-inspection", "1.1.0")["digest"]).stat().st_size
    monkeypatch.setattr(service, "CHUNK", 4096)
    monkeypatch.setattr(service, "RECHECK_S", 0.0)
    reads = {"names": 0, "list": 0}
    per_check: list[dict] = []
    names, listed = Registry.names, Registry.list

    def counted_names(self):
        reads["names"] += 1
        return names(self)

    def counted_list(self, name):
        reads["list"] += 1
        return listed(self, name)

    monkeypatch.setattr(Registry, "names", counted_names)
    monkeypatch.setattr(Registry, "list", counted_list)
    still = service.FleetServicer._still_served

    async def counted_still(self, *args):
        if len(per_check) == 3:
            reg.withdraw("part-inspection", "1.1.0", DEFECT)
        before = dict(reads)
        try:
            await still(self, *args)
        finally:
            per_check.append({k: reads[k] - before[k] for k in reads})

    monkeypatch.setattr(service.FleetServicer, "_still_served", counted_still)
    dep = _deploy(srv, "gw1")
    await _stopped_and_said_why(srv, agents, dep, mgr)
    step = next(s for s in mgr.steps if s["step"] == "failed" and s["version"] == "1.1.0")
    stopped_at = int(re.search(r"stopped the download at (\d+) bytes", step["reason"])[1])
    assert 0 < stopped_at < total, (stopped_at, total)
    assert len(per_check) == 4 and all(c == {"names": 0, "list": 1} for c in per_check), per_check
