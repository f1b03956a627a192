"""The agent's uplink refused ``RESOURCE_EXHAUSTED`` by a real fleet service (gRPC, mTLS): the service is up and has
said "too much", so the uplink keeps its backoff wait. A heartbeat or a state update on the Connect stream ends a
wait after a failure the cloud's return mends (the link down), and it ended this one too: the refused batch was
sent again at every heartbeat (every 5 s by default, its backoff reset each time), a batch of up to 1 MB over the
site's link for as long as the quota held (a sample budget of the day: all day)."""

from __future__ import annotations

import time

import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.mark.parametrize("stream", [True, False], ids=["connect", "heartbeat"])
async def test_a_push_refused_resource_exhausted_keeps_its_backoff_through_state_updates(tmp_path, stream):
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        quotas=Quotas(
            QuotaLimits(sample_bytes_per_day=1000)
        ),  # the day's sample budget: less than the sample
    )
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    ob.append("sample", {"x": 1}, sample=b"\x00" * 5000, sample_ext="npy")
    ob.flush()
    updates = [0]

    async def desired(_reply) -> None:
        updates[0] += 1

    # a backoff far longer than the heartbeats watched below
    settings = cloud_settings(
        pki, port, backoff_initial_s=60, backoff_max_s=60, heartbeat_s=0.2, stream=stream
    )
    up = Uplink(settings, ob, on_desired=desired)
    await up.start()
    try:

        def refusals() -> int:
            return srv.quotas.snapshot("default")["refusals"].get("gw1:samples", 0)

        await until(lambda: refusals() >= 1 and up.state == "backoff", what="the batch refused")
        seen = updates[0]
        await until(lambda: updates[0] >= seen + 5, what="five state updates after the refusal")
        assert refusals() == 1, f"the refused batch was sent {refusals()} times within the backoff"
        assert ob.stats()["depth"] == 1  # kept in the outbox, sent once the backoff is over
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_a_push_refused_for_the_epochs_of_the_day_waits_doubling_and_tries_one_record(
    tmp_path, monkeypatch
):
    """A fleet service of before 2026-12-07 refused every batch opening an epoch past 24 a day: the agent sent its
    whole batch again at its backoff (15-30 s) for up to a day. It now waits ``EPOCHS_WAIT_S`` (2 min), doubling up
    to ``EPOCHS_WAIT_MAX_S`` (30 min), each jittered (``_push_wait``: the waits asked for are recorded, each slept
    0.01 s here, the first epochs wait 0.3 s), tries one record, counts the refusals and says so on its status;
    delivered once the service takes it."""
    import edge_agent.uplink.client as client_module
    from cloud_trainer.fleet.store import TooManyEpochs

    asked: list[float] = []  # the waits the push asked for (before their jitter)
    first_wait = 0.3  # the first epochs wait's draw: slept before the next try, unlike the backoff's 0.01 s

    def push_wait(delay: float) -> float:
        asked.append(delay)
        return first_wait if delay == client_module.EPOCHS_WAIT_S else 0.01

    monkeypatch.setattr(client_module, "_push_wait", push_wait)
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    tries: list[int] = []  # the records of each batch the store was asked to take
    at: list[float] = []  # when
    real = srv.store.ingest

    def refusing(agent, records, **kw):  # the words of the former service's refusal
        tries.append(len(records))
        at.append(time.monotonic())
        raise TooManyEpochs(
            f"agent {agent} (tenant default): 24 epochs opened within 24 h, at most 24 (an epoch is an outbox "
            "started afresh); the batch opening epoch 9 is refused, nothing of it stored"
        )

    monkeypatch.setattr(srv.store, "ingest", refusing)
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    for i in range(5):
        ob.append("result", {"i": i})
    ob.flush()
    up = Uplink(cloud_settings(pki, port, backoff_initial_s=0.2, backoff_max_s=0.2), ob)
    await up.start()
    try:
        # (counted by the agent once the refusal is back: after the store saw the try)
        await until(lambda: up.status()["epochs_refused"] >= 7, what="seven batches refused")
        # the first epochs wait slept before the next try, not only asked for
        assert up.status()["epochs_refused_now"] and at[1] - at[0] >= first_wait
        # at each refusal: the backoff's wait (0.2 s), then the epochs' (2 min doubling to 30 min), the longer slept
        epochs_waits = [w for w in asked if w > 0.2]
        assert epochs_waits[:6] == [120, 240, 480, 960, 1800, 1800] and set(epochs_waits[6:]) <= {1800}
        assert tries[0] == 5 and set(tries[1:]) == {1}  # after the refusal, one record a try
        monkeypatch.setattr(srv.store, "ingest", real)  # the day's window lets one more epoch in
        await until(
            lambda: ob.stats()["depth"] == 0, what="the records delivered once the service takes them"
        )
        assert srv.store.stats("gw1")["records"] == 5 and not up.status()["epochs_refused_now"]
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


def test_a_refusal_for_the_epochs_of_the_day_is_told_by_its_mark_else_by_its_words() -> None:
    import grpc

    import edge_agent.uplink.client as client_module
    from protocols.refusals import EPOCHS_BOUND, REFUSAL_KEY, STREAMS_FULL

    def refused(details: str, *marks: tuple[str, str]) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(*marks), details
        )

    words = "agent gw1 (tenant default): 24 epochs opened within 24 h, at most 24; the batch ... is refused"
    assert client_module._epochs_refused(refused("other words", (REFUSAL_KEY, EPOCHS_BOUND)))
    assert client_module._epochs_refused(refused(words))  # a service of before the mark
    assert not client_module._epochs_refused(refused(words, (REFUSAL_KEY, STREAMS_FULL)))  # the mark decides
    assert not client_module._epochs_refused(refused("agent gw1: 1000 records a day (limit)"))
