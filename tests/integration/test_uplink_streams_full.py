"""The uplink at the fleet service's ``concurrent_streams`` 2 (the agent's Connect and one more) while a rollout's
package download holds the second place: its pushes are refused (``RESOURCE_EXHAUSTED``, "... concurrent streams)")
for as long as the download runs. A real FleetServer (gRPC, mTLS) and a real download on the uplink's own channel,
as the model manager's is."""

from __future__ import annotations

import json

import grpc
import pytest

from cloud_trainer.fleet.guard import QuotaExceeded, QuotaLimits, Quotas
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink import client
from edge_agent.uplink.client import Uplink
from protocols.gen import fleet_pb2 as pb
from protocols.refusals import REFUSAL_KEY, STREAMS_FULL, STREAMS_LIMIT_KEY
from tests.integration.test_uplink_batching import _kinds_read, _server
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until

DIGEST = "f" * 64
# larger than what grpc's windows take ahead of the reader: the download holds its place until it is read or cut
SIZE = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1",))


def _registry(root) -> None:
    """A published package of SIZE bytes (a sparse file: its bytes are not the test's business)."""
    d = root / "part" / "1.0.0"
    d.mkdir(parents=True)
    with open(d / "part-1.0.0.edgepkg", "wb") as f:
        f.truncate(SIZE)
    entry = {"name": "part", "version": "1.0.0", "status": "published", "digest": DIGEST}
    (root / "part" / "index.json").write_text(json.dumps([{**entry, "package": "part-1.0.0.edgepkg"}]))


async def test_records_refused_while_a_download_holds_the_place_go_once_it_ends_an_alarm_first(
    tmp_path, pki
) -> None:
    """Three results, then an alarm, recorded while a download holds the agent's second stream: each push is refused
    and tried again at the uplink's short pace, not its doubling backoff (60 s here, jittered to 30-60 s: longer
    than each of the test's waits, so the records would still wait when the test gives up). Once the download ends the records go, the alarm first and alone in its batch (each try
    sends one record: the service reads a refused stream's first batch whole), then the results; no failure
    counted."""
    _registry(tmp_path / "registry")
    port = free_port()
    srv = _server(
        tmp_path,
        pki,
        port,
        quotas=Quotas(QuotaLimits(concurrent_streams=2)),
        registry=tmp_path / "registry",
    )
    await srv.start()
    with srv.control.lock:
        srv.control._set_desired("gw1", "vision", "part", "1.0.0", DIGEST, SIZE, "d1")
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    settings = cloud_settings(pki, port, backoff_initial_s=60, backoff_max_s=120, heartbeat_s=5)
    up = Uplink(settings, ob)
    read = _kinds_read(up)
    download = None
    try:
        await up.start()
        await until(lambda: up.mode == "stream", what="the uplink's Connect stream open")
        download = up.client.stub.DownloadPackage(pb.DownloadRequest(digest=DIGEST))
        assert (await download.read()).total == SIZE  # the download holds the second place from now on
        for i in range(3):
            await ob.append_async("result", {"i": i})
            up.poke()
        await until(lambda: up.streams_refused >= 2, timeout_s=20, what="pushes refused for the download")
        up.poke(urgent=ob.append_soon("alarm", {"what": "overtemp"}))
        await until(lambda: ["alarm"] in read, timeout_s=20, what="the alarm tried alone")
        assert ob.stats()["acked"] == 0  # nothing went while the download held the place
        download.cancel()  # the download ends: its place is given back
        await until(lambda: ob.stats()["acked"] == 4, timeout_s=20, what="every record acked")
        assert read[-2:] == [["alarm"], ["result"] * 3], read
        assert up.reconnects == 0, (up.reconnects, up.last_error)
        assert "concurrent streams" in (up.last_error or "")
        kinds = sorted(r["kind"] for r in srv.store.records("gw1", limit=10))
        assert kinds == ["alarm", "result", "result", "result"]
    finally:
        if download is not None:
            download.cancel()
        await up.stop()
        ob.close()
        await srv.stop()


async def test_a_refusal_that_lasts_is_tried_ever_less_often_and_an_alarm_storm_does_not_set_the_pace(
    tmp_path, pki, monkeypatch
) -> None:
    """concurrent_streams 1: the agent's Connect holds the only place for good and every push is refused as beyond
    it. The waits between tries grow once the refusals have lasted STREAMS_FULL_FAST_S, up to STREAMS_FULL_MAX_S
    (scaled down here); before, 4 tries a second for ever. Then a storm of alarms, each poked once the uplink waits
    again: an alarm ends a wait at once at most once per STREAMS_FULL_RETRY_S (30 s here), so the storm does not
    make a try each (before: one per alarm, a try per round trip). The refusal's details are reworded: the agent
    tells it by its mark in the trailing metadata (protocols.refusals). Another failure in between ends the streak:
    the next refusal is tried again at the fast pace."""
    monkeypatch.setattr(client, "STREAMS_FULL_RETRY_S", 0.02)
    monkeypatch.setattr(client, "STREAMS_FULL_FAST_S", 0.1)
    monkeypatch.setattr(client, "STREAMS_FULL_DOUBLE_S", 0.05)
    monkeypatch.setattr(client, "STREAMS_FULL_MAX_S", 0.3)
    port = free_port()
    srv = _server(tmp_path, pki, port, quotas=Quotas(QuotaLimits(concurrent_streams=1)))
    opened = srv.quotas.open_stream

    fail_once = [False]

    def reworded(agent) -> None:  # the refusal told in other words: the agent goes by its mark
        if fail_once[0]:  # another failure (the service's store, say): INTERNAL
            fail_once[0] = False
            raise RuntimeError("the store failed")
        try:
            opened(agent)
        except QuotaExceeded:
            raise QuotaExceeded("no room for another stream of this agent") from None

    srv.quotas.open_stream = reworded  # type: ignore[method-assign]
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, port, heartbeat_s=5), ob)
    waits: dict[int, float] = {}  # refusal number -> the first wait drawn after it
    failed: dict[int, int] = {}  # refusal number -> the uplink's other failures before it
    held = [0]  # waits begun with an alarm's wake pending: the alarm did not end the wait
    wait = up._woken

    async def spied(reading, timeout):
        if reading is None and up.state == "backoff":
            waits.setdefault(up.streams_refused, timeout)
            failed.setdefault(up.streams_refused, up.reconnects)
            held[0] += up._urgent
        await wait(reading, timeout)

    up._woken = spied  # type: ignore[method-assign]
    try:
        await up.start()
        await until(
            lambda: up.mode == "stream", what="the uplink's Connect stream open: the only place taken"
        )
        await ob.append_async("result", {"i": 0})
        up.poke()
        await until(lambda: any(w >= 0.15 for w in waits.values()), timeout_s=20, what="the waits grown")
        assert waits[1] <= 0.03, waits  # 0.02 s, jitter up to 1.5x: the streak's first wait
        assert max(waits.values()) <= 0.45, waits  # STREAMS_FULL_MAX_S, jitter up to 1.5x
        monkeypatch.setattr(client, "STREAMS_FULL_RETRY_S", 30.0)
        tried = up.streams_refused
        for i in range(20):
            seen = (held[0], up.streams_refused)
            up.poke(urgent=ob.append_soon("alarm", {"i": i}))
            await until(
                lambda seen=seen: (held[0], up.streams_refused) != seen,
                timeout_s=20,
                what="the alarm seen",
                every_s=0.005,
            )
        # one early try for the first alarm, and the tries at the grown pace (0.15-0.45 s) while the storm lasted
        assert up.streams_refused - tried <= 10, up.streams_refused - tried
        assert ob.stats()["acked"] == 0 and up.reconnects == 0, (ob.stats(), up.reconnects)
        # another failure between two refusals ends the streak: the next refusal is tried again at the fast pace
        monkeypatch.setattr(client, "STREAMS_FULL_RETRY_S", 0.02)
        fail_once[0] = True
        await until(lambda: 1 in failed.values(), timeout_s=20, what="a refusal after the other failure")
        first = min(n for n, f in failed.items() if f == 1)
        assert waits[first] <= 0.03, (
            first,
            waits[first],
        )  # a new streak's first wait, not the grown 0.15-0.45
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


def test_a_refusal_at_concurrent_streams_is_told_by_its_mark_else_by_its_words() -> None:
    """The mark decides when the service sent one; a service of before the mark is told by its words."""

    def refused(details: str, *marks: tuple[str, str]) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(*marks), details
        )

    words = "agent gw1: 2 streams already open (limit 2 concurrent streams); slow down and retry later"
    assert client._streams_full(refused("other words", (REFUSAL_KEY, STREAMS_FULL)))
    assert client._streams_full(refused(words))  # a service of before the mark
    assert not client._streams_full(refused(words, (REFUSAL_KEY, "records-per-day")))  # the mark decides
    assert not client._streams_full(refused("agent gw1: 1000 records a day (limit)"))
    # the limit likewise: its mark, else the words
    assert (
        client._streams_limit(refused("other words", (REFUSAL_KEY, STREAMS_FULL), (STREAMS_LIMIT_KEY, "1")))
        == 1
    )
    assert client._streams_limit(refused(words)) == 2
    assert client._streams_limit(refused("other words", (REFUSAL_KEY, STREAMS_FULL))) is None


async def test_at_concurrent_streams_1_the_connect_stream_gives_its_place_to_the_records(
    tmp_path, pki, caplog, monkeypatch
) -> None:
    """concurrent_streams 1 and the agent's Connect stream open: the one place is Connect's for as long as it is
    open, and every push is refused as beyond it. Before, the push was tried again every 5-7.5 s for ever and no
    record was ever delivered. The agent ends its Connect stream and reports its state by unary Heartbeat (as with
    cloud.stream: false), says why in one WARNING and on /status, and the records go. The limit is told by the
    refusal's mark (``STREAMS_LIMIT_KEY``), not its words (reworded here: formerly read from them, so a service
    wording it otherwise was refused for ever). Once the service's limit is raised, the Connect stream tried again
    after ``CONNECT_AGAIN_S`` (scaled down) stays, beside the records; formerly the agent stayed on Heartbeat until
    it restarted."""
    monkeypatch.setattr(client, "CONNECT_AGAIN_S", 0.3, raising=False)  # (absent before)
    port = free_port()
    srv = _server(tmp_path, pki, port, quotas=Quotas(QuotaLimits(concurrent_streams=1)))
    opened = srv.quotas.open_stream

    def reworded(agent) -> None:  # the refusal told in other words, its limit in its mark alone
        try:
            opened(agent)
        except QuotaExceeded as exc:
            raise QuotaExceeded(
                "no room for another stream of this agent", getattr(exc, "limit", None)
            ) from None

    srv.quotas.open_stream = reworded  # type: ignore[method-assign]
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, port, heartbeat_s=0.2, stream_idle_s=0), ob)
    caplog.set_level("WARNING", logger="edge_agent.uplink.client")
    try:
        await up.start()
        await until(
            lambda: up.mode == "stream", what="the uplink's Connect stream open: the only place taken"
        )
        for i in range(3):
            await ob.append_async("result", {"i": i})
        up.poke(urgent=ob.append_soon("alarm", {"what": "overtemp"}))
        await until(lambda: ob.stats()["acked"] == 4, timeout_s=20, what="every record acked")
        kinds = sorted(r["kind"] for r in srv.store.records("gw1", limit=10))
        assert kinds == ["alarm", "result", "result", "result"]
        status = up.status()
        assert status["mode"] == "heartbeat" and "concurrent_streams 1" in status["mode_why"], status
        heartbeat = up.last_heartbeat_at
        await until(lambda: up.last_heartbeat_at != heartbeat, timeout_s=20, what="a heartbeat answered")
        said = [r.getMessage() for r in caplog.records if "concurrent_streams 1" in r.getMessage()]
        assert len(said) == 1 and "unary Heartbeat" in said[0], said
        srv.quotas.limits = QuotaLimits(concurrent_streams=3)  # the service's limit raised
        await ob.append_async("result", {"i": 3})
        up.poke()
        await until(lambda: ob.stats()["acked"] == 5, timeout_s=20, what="the next record acked")
        await until(lambda: up.mode == "stream", timeout_s=20, what="the Connect stream tried again")
        await ob.append_async("result", {"i": 4})
        up.poke()
        await until(
            lambda: up.status()["mode_why"] is None, timeout_s=20, what="a push beside the Connect stream"
        )
        await until(lambda: ob.stats()["acked"] == 6, timeout_s=20, what="the last record acked")
        assert up.mode == "stream", up.status()
    finally:
        await up.stop()
        ob.close()
        await srv.stop()
