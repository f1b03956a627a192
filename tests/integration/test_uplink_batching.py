"""The uplink's records path at a trickle, against a real fleet service (gRPC, mTLS): records arriving a few a
second go up as batches on one long-lived PushRecords stream. Before, the uplink ended its stream as soon as the
outbox was drained and sent whatever one wake found: one stream and one batch per record or two (~11,000 stream
opens and closes in a 200-s fleet run), and ``max_delay_ms`` ("wait this long to fill a batch") filled none."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from cloud_trainer.fleet import guard
from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1", "gw2"))


def _server(tmp_path, pki, port: int, **kw) -> FleetServer:
    return FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", **kw)


def _counting(up: Uplink) -> list[int]:
    """The PushRecords streams the uplink opens, counted at its stub."""
    opened = [0]
    push = up.client.stub.PushRecords

    def counted(*a, **kw):
        opened[0] += 1
        return push(*a, **kw)

    up.client.stub.PushRecords = counted
    return opened


def _kinds_read(up: Uplink) -> list[list[str]]:
    """The kinds of each batch the uplink reads from its outbox, in order."""
    sent: list[list[str]] = []
    pending = up._pending

    def seen(limit):
        recs = pending(limit)
        if recs:
            sent.append([r.kind for r in recs])
        return recs

    up._pending = seen  # type: ignore[method-assign]
    return sent


@contextlib.asynccontextmanager
async def _peers(tmp_path, pki, commit_interval_ms: float = 5, **cloud):
    """A real fleet service, an outbox and its uplink started (``cloud``: its settings), the kinds of each batch
    it reads, and a check that an alarm is stored in the cloud; all stopped at the end."""
    port = free_port()
    srv = _server(tmp_path, pki, port)
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=commit_interval_ms), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, port, **cloud), ob)
    sent = _kinds_read(up)
    try:
        await up.start()
        yield ob, up, sent, lambda: any(r["kind"] == "alarm" for r in srv.store.records("gw1", limit=10))
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_records_arriving_a_few_a_second_go_up_in_batches_on_one_stream(tmp_path, pki) -> None:
    """16 results at 10 a second (a camera's pace), each poked as the agent does: they go up on one stream, in
    batches of several records, each acked within max_delay_ms and a bound; and an alarm recorded while a
    batch of results waits to fill goes first in that batch."""
    port = free_port()
    srv = _server(tmp_path, pki, port)
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, port, max_delay_ms=300), ob)
    acked: dict[int, float] = {}
    ack = ob.ack

    def timed_ack(seqs):
        t = time.monotonic()
        for s in seqs:
            acked.setdefault(s, t)
        return ack(seqs)

    ob.ack = timed_ack  # type: ignore[method-assign]
    sent = _kinds_read(up)
    try:
        await up.start()
        opened = _counting(up)
        put: dict[int, float] = {}
        for i in range(16):
            at = time.monotonic()
            put[await ob.append_async("result", {"i": i})] = at
            up.poke()
            if i == 12:  # results waiting to fill their batch; then an alarm
                await asyncio.sleep(0.05)
                put[await ob.append_async("alarm", {"what": "overtemp"})] = time.monotonic()
                up.poke()
            await asyncio.sleep(0.1)
        await until(lambda: ob.stats()["acked"] == 17, timeout_s=30, what="every record acked")
        got = [r["payload"].get("i") for r in srv.store.records("gw1", limit=100) if r["kind"] == "result"]
        assert sorted(got) == list(range(16))
        # the former uplink: ~1 record a batch, a stream each one or two
        assert up.batches <= 8, (up.batches, sent)
        assert opened[0] == 1, opened[0]
        late = max(acked[s] - put[s] for s in put)
        # (a bound on gross waits, an ack timeout or a stream idling: not on pace, which a loaded machine stretches)
        assert late < 0.3 + 2.7, f"a record waited {late:.2f} s for its ack (max_delay_ms 300)"
        with_alarm = next(b for b in sent if "alarm" in b)
        assert with_alarm[0] == "alarm" and "result" in with_alarm, sent
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_a_server_restart_while_the_stream_idles_loses_nothing(tmp_path, pki) -> None:
    """The fleet service restarts while the agent's PushRecords stream is open and idle: the records put after
    it go up on a new stream, none lost, none stored twice; the uplink does not wait for a batch's 60-s ack
    timeout nor count the idle stream's end as a failure."""
    port = free_port()
    srv = _server(tmp_path, pki, port)
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, port, max_delay_ms=50, stream_idle_s=30), ob)
    try:
        await up.start()
        opened = _counting(up)
        for i in range(5):
            await ob.append_async("result", {"i": i})
            up.poke()
        await until(lambda: ob.stats()["acked"] == 5, timeout_s=30, what="the first records acked")
        await asyncio.sleep(0.2)
        assert opened[0] == 1 and up.state == "idle"  # the stream is open, waiting for records
        await srv.stop()
        srv = _server(tmp_path, pki, port)
        await srv.start()
        for i in range(5, 10):
            await ob.append_async("result", {"i": i})
            up.poke()
        await until(lambda: ob.stats()["acked"] == 10, timeout_s=30, what="the records put after the restart")
        got = [r["payload"]["i"] for r in srv.store.records("gw1", limit=100)]
        assert sorted(got) == list(range(10))
        assert opened[0] == 2
        assert up.reconnects == 0, up.last_error
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_an_idle_stream_does_not_hold_up_another_agents_batch(tmp_path, pki, monkeypatch) -> None:
    """An agent's stream that idles waits for its next batch at the service; it must not keep its tenant's place
    among ``tenant_receiving_batches`` meanwhile: with one place, gw1's idle stream held it 5 s after each batch
    (``RECEIVE_SLOT_S``) and gw2's batch waited that long (many idle agents of a tenant: past
    ``in_flight_wait_s``, refused). The hold is made 60 s here, so that it cannot be mistaken for a loaded
    machine's delays."""
    monkeypatch.setattr(guard, "RECEIVE_SLOT_S", 60.0)
    port = free_port()
    srv = _server(tmp_path, pki, port, quotas=Quotas(QuotaLimits(tenant_receiving_batches=1)))
    await srv.start()
    obs, ups = [], []
    try:
        for name in ("gw1", "gw2"):
            ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / name)
            ob.open()
            up = Uplink(cloud_settings(pki, port, agent=name, max_delay_ms=20), ob)
            await up.start()
            obs.append(ob)
            ups.append(up)
        await obs[0].append_async("result", {"i": 0})
        ups[0].poke()
        await until(lambda: obs[0].stats()["acked"] == 1, timeout_s=30, what="gw1's record acked")
        await asyncio.sleep(0.5)  # gw1's stream idles, its next batch asked for
        t0 = time.monotonic()
        await obs[1].append_async("result", {"i": 1})
        ups[1].poke()
        await until(lambda: obs[1].stats()["acked"] == 1, timeout_s=60, what="gw2's record acked")
        took = time.monotonic() - t0
        assert took < 20, f"gw2's record waited {took:.1f} s behind gw1's idle stream"
    finally:
        for up in ups:
            await up.stop()
        for ob in obs:
            ob.close()
        await srv.stop()


async def test_a_certificate_revoked_while_the_stream_idles_is_refused_at_its_next_batch(
    tmp_path, pki
) -> None:
    """A gateway's certificate is revoked while its PushRecords stream is open and idle: its next batch on that
    stream is refused (PERMISSION_DENIED), nothing of it is stored, and the record stays in the outbox."""
    from cloud_trainer.pki import issue
    from cloud_trainer.pki import main as pki_main

    issue(pki, "gw3", "agent", pki / "agents" / "gw3")
    port = free_port()
    srv = _server(tmp_path, pki, port)
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, port, agent="gw3", stream=False, heartbeat_s=30), ob)
    try:
        await up.start()
        opened = _counting(up)
        await ob.append_async("result", {"i": 0})
        up.poke()
        await until(lambda: ob.stats()["acked"] == 1, timeout_s=30, what="the first record acked")
        revoke = [
            "revoke",
            "--dir",
            str(pki),
            "--cert",
            str(pki / "agents" / "gw3.pem"),
            "--reason",
            "stolen",
        ]
        assert pki_main(revoke) == 0
        await asyncio.sleep(1.5)  # the service reads the revocations again (within a second)
        await ob.append_async("result", {"i": 1})
        up.poke()
        await until(lambda: "PERMISSION_DENIED" in (up.last_error or ""), timeout_s=30, what="the refusal")
        assert opened[0] == 1  # refused on the stream that idled, not on a new one
        assert ob.stats()["depth"] == 1
        assert [r["payload"]["i"] for r in srv.store.records("gw3", limit=10)] == [0]
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_an_alarm_recorded_while_results_fill_their_batch_goes_at_once(tmp_path, pki) -> None:
    """max_delay_ms 5000 (a site saving bandwidth): a result starts a batch's fill, then an alarm is recorded as
    the agent records it (handed to the outbox's thread, poked with its future). The alarm reaches the cloud
    well before the 5 s, first in its batch. Before, it waited out the whole fill."""
    async with _peers(tmp_path, pki, max_delay_ms=5000) as (ob, up, sent, alarm_stored):
        await ob.append_async("result", {"i": 0})
        up.poke()
        await asyncio.sleep(0.1)  # the result's batch fills
        t0 = time.monotonic()
        up.poke(urgent=ob.append_soon("alarm", {"what": "overtemp"}))
        await until(alarm_stored, timeout_s=30, what="the alarm stored in the cloud")
        took = time.monotonic() - t0
        assert took < 3.5, f"the alarm reached the cloud after {took:.2f} s (max_delay_ms 5000)"
        assert sent[0] == ["alarm", "result"], sent


async def test_an_alarm_the_outbox_takes_just_after_the_fill_ended_goes_at_once(tmp_path, pki) -> None:
    """max_delay_ms 5000: an alarm is recorded while results fill their batch, but the outbox's thread is busy (a
    sample being written, a slow disk) and takes it only after the fill ended and the batch was read. It goes up
    as soon as that batch is acked, not a poll (max_delay_ms) later: before, its poke was forgotten with the
    batch's and nothing woke the uplink, which looked at the outbox again only after max_delay_ms."""
    async with _peers(tmp_path, pki, commit_interval_ms=50, max_delay_ms=5000) as (ob, up, _, alarm_stored):
        await ob.append_async("result", {"i": 0})
        up.poke()
        await until(lambda: ob.stats()["depth"] == 1, what="the result committed")  # its batch fills (5 s)
        free = threading.Event()
        busy = ob._executor.submit(free.wait, 60)  # the outbox's thread busy until the batch is acked
        up.poke(urgent=ob.append_soon("alarm", {"what": "overtemp"}))
        await until(
            lambda: ob.stats()["acked"] == 1, timeout_s=30, what="the result's batch, read at its fill's end"
        )
        free.set()
        await asyncio.wrap_future(busy)
        t0 = time.monotonic()
        await until(alarm_stored, timeout_s=30, what="the alarm stored in the cloud")
        took = time.monotonic() - t0
        assert took < 3.5, (
            f"the alarm reached the cloud {took:.2f} s after the outbox took it (max_delay_ms 5000)"
        )
        await until(lambda: ob.stats()["acked"] == 2, timeout_s=30, what="both records acked")


async def test_an_alarm_recorded_while_results_fill_a_batch_on_the_open_stream_goes_at_once(
    tmp_path, pki
) -> None:
    """max_delay_ms 5000: after a first batch (poked as full, so it goes at once) the stream stays open, idle; a
    result starts the next batch's fill and an alarm is recorded 0.1 s later. The alarm reaches the cloud well
    before the 5 s, first in its batch. Before, a poke woke nothing while the stream was open (the wait was for
    the poke and the stream's end, both), so the alarm waited out the fill: only a stream's first batch ended its
    fill for an alarm."""
    async with _peers(tmp_path, pki, max_delay_ms=5000) as (ob, up, sent, alarm_stored):
        opened = _counting(up)
        await ob.append_async("result", {"i": 0})
        up.poke(nbytes=up.s.batch_max_bytes)
        await until(lambda: ob.stats()["acked"] == 1, timeout_s=30, what="the first batch acked")
        await ob.append_async("result", {"i": 1})
        up.poke()
        await asyncio.sleep(0.1)  # the next batch fills, on the stream left open
        t0 = time.monotonic()
        up.poke(urgent=ob.append_soon("alarm", {"what": "overtemp"}))
        await until(alarm_stored, timeout_s=30, what="the alarm stored in the cloud")
        took = time.monotonic() - t0
        assert took < 3.5, f"the alarm reached the cloud after {took:.2f} s (max_delay_ms 5000)"
        assert sent[1] == ["alarm", "result"], sent
        assert opened[0] == 1  # both batches on one stream


async def test_an_alarm_recorded_while_the_uplink_waits_for_the_outbox_commit_goes_at_once(
    tmp_path, pki
) -> None:
    """commit_interval_ms 1000 (a site sparing its SD card), max_delay_ms 200: a result's fill ends by time and the
    uplink waits for the outbox's own commit of it before the read. An alarm recorded during that wait goes at once,
    in the result's batch and first: it is stored in the cloud while that wait is still under way (held here until
    the alarm is stored). Before, the uplink waited for the outbox's next commit round (~0.75 s)."""
    async with _peers(tmp_path, pki, commit_interval_ms=1000, max_delay_ms=200) as (
        ob,
        up,
        sent,
        alarm_stored,
    ):
        entered, released = threading.Event(), threading.Event()
        wait_committed = ob.wait_committed

        def held(seq: int, timeout_s: float):  # the outbox's commit round, held back by the test
            entered.set()
            released.wait(60)
            return wait_committed(seq, timeout_s)

        ob.wait_committed = held  # type: ignore[method-assign]
        try:
            await until(lambda: up.state == "idle", what="the uplink waiting for records")
            await ob.append_async("result", {"i": 0})
            up.poke()
            await until(entered.is_set, what="the uplink waiting for the outbox's commit")
            up.poke(urgent=ob.append_soon("alarm", {"what": "overtemp"}))
            await until(alarm_stored, timeout_s=30, what="the alarm stored while the wait is held")
        finally:
            released.set()
        assert sent == [["alarm", "result"]], sent


async def test_a_batch_full_by_its_bytes_goes_without_waiting_out_its_fill(tmp_path, pki) -> None:
    """max_delay_ms 5000, batch_max_bytes 100 kB: two samples of 60 kB are recorded (poked with their bytes, as the
    agent does) and the batch is full by bytes at the second: the first goes at once, well before the 5 s, and
    the second right after it (a batch holds one). Before, only batch_max_records ended a fill: a site's images
    waited out max_delay_ms with a full batch ready."""
    async with _peers(tmp_path, pki, max_delay_ms=5000, batch_max_bytes=100_000) as (ob, up, _, _):
        # the uplink waiting for a first record: the fill is what this test is about, not its first look at the outbox
        await until(lambda: up.state == "idle", what="the uplink waiting for records")
        t0 = time.monotonic()
        for i in range(2):
            image = bytes([i]) * 60_000
            await ob.append_async("sample", {"i": i}, sample=image, sample_ext=".png")
            up.poke(nbytes=len(image))
        await until(lambda: ob.stats()["acked"] == 2, timeout_s=30, what="both samples acked")
        took = time.monotonic() - t0
        assert took < 3.5, f"a full batch waited {took:.2f} s (max_delay_ms 5000)"
        # (the batch count is bumped after the ack is recorded: read once it has been, or a loaded run sees 1)
        await until(lambda: up.batches >= 2, timeout_s=30, what="the second batch counted")
        assert up.batches == 2  # one sample a batch: 120 kB do not fit in 100 kB


async def test_a_record_committed_just_after_its_batch_was_read_goes_right_after_it(tmp_path, pki) -> None:
    """max_delay_ms 2000, the outbox committing every 1 s: a result starts a fill on the open stream, and a second is
    recorded 0.6 s before the fill ends and committed ~0.4 s after it (the writer's interval), so the batch is read
    before the second is committed. The second goes up right after the first batch, not a poll (max_delay_ms) later:
    its poke was reset with that read, and nothing else woke the uplink for it. (The margins either side stand a
    loaded machine's delays: recorded 10 ms before the fill's end, the record often came after it and began a
    fill of its own.)"""
    async with _peers(tmp_path, pki, commit_interval_ms=1000, max_delay_ms=2000) as (ob, up, _, _):
        await ob.append_async("result", {"i": 0})
        up.poke()
        await until(lambda: ob.stats()["acked"] == 1, timeout_s=30, what="the first record acked")
        t0 = time.monotonic()
        await ob.append_async("result", {"i": 1})
        up.poke()  # the fill ends 2 s from now; this record is committed 1 s from now
        await asyncio.sleep(max(0.0, 1.4 - (time.monotonic() - t0)))
        await ob.append_async("result", {"i": 2})  # committed ~2.4 s from t0, after the fill's read
        up.poke()
        await until(lambda: ob.stats()["acked"] == 3, timeout_s=30, what="every record acked")
        took = time.monotonic() - t0
        # flagged: ~2.1 s; left to the next look at the outbox: 4 s or more
        assert took < 3.2, f"the last record was acked {took:.2f} s after the fill began (max_delay_ms 2000)"


async def test_a_steady_line_fills_whole_batches(tmp_path, pki) -> None:
    """A result every 50 ms (a camera's line), max_delay_ms 400, the outbox committing every 50 ms (its default):
    each fill ends by time with its last result appended moments before, not yet committed. The batches are whole
    fills of several records: the read waits for the writer's own commit of what was poked, so no fill leaves its
    last records to a batch of their own right after it (before: nearly every fill was followed by a batch of 1-2
    records and a commit forced for it, a third more batches and commits than ``max_delay_ms`` says)."""
    async with _peers(tmp_path, pki, commit_interval_ms=50, max_delay_ms=400) as (ob, up, sent, _):
        await until(lambda: up.state == "idle", what="the uplink waiting for records")
        flushes = [0]
        flush = ob.flush

        def counted(*a, **kw):
            flushes[0] += 1
            return flush(*a, **kw)

        ob.flush = counted  # type: ignore[method-assign]
        n = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            await ob.append_async("result", {"i": n})
            up.poke()
            n += 1
            await asyncio.sleep(0.05)
        await until(lambda: ob.stats()["acked"] == n, timeout_s=30, what="every record acked")
        sizes = [len(b) for b in sent]
        # ~5 fills of ~8 results; a tail batch after each would make ~10, most of 1-2 records
        tails = sum(1 for s in sizes[:-1] if s <= 2)
        assert tails <= 1, f"batches of {sizes} for {n} results (max_delay_ms 400)"
        assert flushes[0] <= 1, f"{flushes[0]} commits forced for {len(sizes)} batches of a steady line"
