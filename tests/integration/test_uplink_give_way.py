"""The uplink when the fleet service ends its idle PushRecords between two batches to give its place to another of
the agent's streams (``concurrent_streams``; a rollout's download): the uplink sends its next batch on a new stream,
no failure counted, no backoff, nothing lost. A real FleetServer (gRPC, mTLS); the give-way is the service's own,
asked of it at the moment each test is about (a download's timing against a batch's is not the test's to choose)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from tests.integration.test_uplink_batching import _server
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until

AGENT = ("default", "gw1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1",))


@contextlib.asynccontextmanager
async def _backlog(tmp_path, pki, streams: int = 2):
    """A real fleet service at concurrent_streams 2, and an uplink with three ~1-kB results in its outbox, sent one a
    batch, each paced ~0.5 s to its bandwidth cap (its push waits for its next batch meanwhile, as a capped
    link's does); yields the service's FleetServicer, the outbox and the uplink (not started). At the end: every
    record stored, no failure counted, and ``streams`` PushRecords streams opened."""
    port = free_port()
    srv = _server(tmp_path, pki, port, quotas=Quotas(QuotaLimits(concurrent_streams=2)))
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    for i in range(3):
        await ob.append_async("result", {"i": i, "pad": "x" * 900})
    settings = cloud_settings(pki, port, heartbeat_s=5, batch_max_records=1, bandwidth_cap_bytes_per_s=2048)
    up = Uplink(settings, ob)
    try:
        yield srv, ob, up
        await until(lambda: ob.stats()["acked"] == 3, timeout_s=30, what="every record acked")
        assert up.reconnects == 0 and up.last_error is None, (up.reconnects, up.last_error)
        assert up.streams == streams  # (2: the first, ended by the give-way, and the one after it)
        assert sorted(r["payload"]["i"] for r in srv.store.records("gw1", limit=10)) == [0, 1, 2]
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


def _waiting_push(fleet) -> str | None:
    """The connection (peer) of the agent's push that waits for its next batch, if one does."""
    return next((p for p, t0 in fleet._pushes.get(AGENT, {}).values() if t0 is not None), None)


async def test_a_push_ended_while_its_next_batch_is_paced_sends_it_on_a_new_stream(
    tmp_path, pki, caplog
) -> None:
    """The service ends the push while the uplink paces its second batch: the uplink sees the end (it reads the
    stream's next message as soon as a batch is acked) and sends that batch on a new stream, not into the ended one
    (where it would go unread, its bytes spent on a capped link for nothing, and be sent again)."""
    caplog.set_level(logging.DEBUG, logger="edge_agent.uplink.client")
    async with _backlog(tmp_path, pki) as (srv, ob, up):
        await up.start()
        await until(lambda: ob.stats()["acked"] >= 1, timeout_s=30, what="the first batch acked")
        await until(lambda: _waiting_push(srv.fleet) is not None, what="the push waiting for its next batch")
        assert await srv.fleet._give_way_idle(AGENT, _waiting_push(srv.fleet))
    unread = [r.getMessage() for r in caplog.records if "ended before its batch was read" in r.getMessage()]
    assert unread == []


async def test_a_push_ended_just_as_a_batch_went_sends_it_again_on_a_new_stream(tmp_path, pki) -> None:
    """The service ends the push just as the uplink sends its second batch into it (asked the moment its pace ends,
    after the uplink last looked at the stream): the stream ends with status OK and that batch unread. The uplink
    sends it again on a new stream, counted as no failure: before, "the server closed the stream" was a failure,
    with a reconnect and its backoff."""
    async with _backlog(tmp_path, pki) as (srv, _ob, up):
        pace, paced, asked = up._pace, [0], []

        async def give_way_as_it_goes(nbytes: int) -> None:
            await pace(nbytes)
            paced[0] += 1
            if paced[0] == 2 and (peer := _waiting_push(srv.fleet)) is not None:
                asked.append(asyncio.ensure_future(srv.fleet._give_way_idle(AGENT, peer)))

        up._pace = give_way_as_it_goes  # type: ignore[method-assign]
        await up.start()
        await until(lambda: bool(asked) and asked[0].done(), timeout_s=30, what="the give-way asked")
        assert asked[0].result()


async def test_a_stream_is_opened_only_once_its_first_batch_is_paced(tmp_path, pki) -> None:
    """The first batch is paced to the bandwidth cap (~0.5 s) before its stream opens, and goes as it opens: no push
    of the agent's waits for a first batch meanwhile, that the service (at concurrent_streams, for a download) would
    end before its first batch. Before, the stream opened first and waited out the pace; so ended, it had carried no
    batch: "the server closed the stream", a failure with its backoff."""
    async with _backlog(tmp_path, pki, streams=1) as (srv, _ob, up):
        pace, waiting = up._pace, []

        async def seen_while_paced(nbytes: int) -> None:
            await pace(nbytes)
            waiting.append(_waiting_push(srv.fleet))
            if (
                len(waiting) == 1 and waiting[0] is not None
            ):  # what a download would do now: the push gives way
                assert await srv.fleet._give_way_idle(AGENT, waiting[0])

        up._pace = seen_while_paced  # type: ignore[method-assign]
        await up.start()
        await until(lambda: len(waiting) == 3, timeout_s=30, what="three batches paced")
        assert waiting[0] is None  # the first batch's stream was not open yet
        assert waiting[1:] == [waiting[1]] * 2 and waiting[1] is not None  # the next two: on that one stream
