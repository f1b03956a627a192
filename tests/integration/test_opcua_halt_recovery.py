"""How an OPC UA source comes back from a server that said its values were not current (its state not
Running, its clock standing still), against a real asyncua server on a free loopback port: the reconnect's
first values (the halted server's stale ones) are not passed on GOOD before the server shows it is healthy
by the check that halted it, the reconnect backoff is reset then, a clock that updates less often than once
a second is not a frozen one, a server replaced on the same endpoint is judged on its own clock, and a
write-only source whose watch found no room for its subscription after a reconnect gets it once there is
room (its former session's subscription, left on the server by a cut link, is not counted as another's), and a
subscription a cut link left on a PLC that keeps it past its session ends with that session (its lifetime), also
on a PLC publishing slower than asked, while a live one on a PLC publishing faster outlasts a held loop, and a
PLC that never answers the ModifySubscription asking the counts again is read and watched all the same (one
answering it with yet another interval is asked them once more)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from asyncua import Client, ua
from asyncua.server.internal_session import InternalSession
from asyncua.server.subscription_service import SubscriptionService
from asyncua.server.uaprocessor import UaProcessor

from devices.base import Quality
from devices.opcua import client as client_module
from devices.opcua.client import OpcUaSource
from edge_agent.config import parse_config
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until

_STATE = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
_SUBS = ua.NodeId(ua.ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSubscriptionCount)


def _settings(port: int, **kw):
    source = {
        "type": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
        "connect_timeout_s": 2,
        "keepalive_check_s": 0.3,
        **kw,
    }
    return parse_config({"agent": {"id": "gw"}, "sources": {"plc": source}}).sources["plc"]


async def _stop_clock(srv) -> None:
    """asyncua's server moves ServerStatus.CurrentTime every second from one task: stopped, the clock stands."""
    task, srv.iserver.time_task = srv.iserver.time_task, None
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _tick(srv, every_s: float, ticks: list[int]) -> None:
    """The server's clock moved every ``every_s`` (a PLC that updates its ServerStatus that often)."""
    while True:
        await srv.write_attribute_value(
            ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime),
            ua.DataValue(ua.Variant(dt.datetime.now(dt.UTC), ua.VariantType.DateTime)),
        )
        ticks.append(1)
        await asyncio.sleep(every_s)


async def _set_state(srv, state: ua.ServerState) -> None:
    await srv.write_attribute_value(_STATE, ua.DataValue(ua.Variant(int(state), ua.VariantType.Int32)))


async def _set_subs(srv, n: int) -> None:
    await srv.write_attribute_value(_SUBS, ua.DataValue(ua.Variant(n, ua.VariantType.UInt32)))


async def _line(port: int):
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    return srv, idx


def _after_bad(got: list) -> list:
    """The GOOD readings passed on after the first BAD one."""
    first = next((i for i, r in enumerate(got) if r.quality is Quality.BAD), len(got))
    return [r for r in got[first:] if r.quality is Quality.GOOD]


class _Collect:
    def __init__(self, src: OpcUaSource) -> None:
        self.got: list = []
        self._task = asyncio.create_task(self._run(src))

    async def _run(self, src: OpcUaSource) -> None:
        async for r in src.items():
            self.got.append(r)

    def cancel(self) -> None:
        self._task.cancel()


async def test_after_a_state_halt_no_value_is_good_until_the_server_runs_again_and_then_the_backoff_is_reset() -> (
    None
):
    """A server whose clock never moves says it is Suspended: each reconnect's first values (its stale ones)
    are held, not passed on GOOD, while it stays Suspended; once it says Running again they go on GOOD and
    the reconnect backoff starts again from its shortest pause. Before, every back-off cycle passed the stale
    values on GOOD until the next check, and the backoff stayed grown for good (it was reset only by a clock
    seen moving)."""
    port = free_port()
    srv, idx = await _line(port)
    await _stop_clock(srv)
    src = OpcUaSource(
        "plc", _settings(port, reconnect_initial_s=0.1, nodes=[{"node_id": f"ns={idx};s=Speed"}])
    )
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: out.got, 30, "the first value")
        await _set_state(srv, ua.ServerState.Suspended)
        await until(lambda: src.halts >= 3, 20, "halted again after two reconnects")
        stale = _after_bad(out.got)
        await _set_state(srv, ua.ServerState.Running)
        await until(lambda: _after_bad(out.got), 20, "a value once the server runs again")
        attempts = src.backoff_attempts
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    assert out.got[0].quality is Quality.GOOD and src.stats.reconnects >= 2, (out.got, src.stats.reconnects)
    assert stale == [], stale
    assert _after_bad(out.got)[0].value == 1.0 and attempts == 0, (out.got, attempts)


async def test_after_a_frozen_clock_the_reconnects_values_are_held_until_the_clock_moves_again() -> None:
    """The server's clock stands still (a frozen runtime): the source turns its tags BAD and reconnects; the
    new session's first values are held until the clock is seen moving in it, then passed on. Before, they
    were passed on GOOD at once, and stayed so until the clock was judged frozen again."""
    port = free_port()
    srv, idx = await _line(port)
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Speed"}]))
    out, ticks, ticker = None, [], None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: out.got, 30, "the first value")
        # the clock's period learned (two changes seen: a clock is judged by it only then); the former code
        # judged from the first change
        await until(lambda: getattr(src, "clock_period_s", 1.0), 30, "the server's clock period learned")
        await _stop_clock(srv)
        await until(lambda: src.stats.reconnects >= 1, 20, "the source reconnected")
        await until(lambda: src.state.value == "connected", 30, "the source connected again")
        await asyncio.sleep(1.0)  # the new subscription's first values have come (and were held)
        stale = _after_bad(out.got)
        ticker = asyncio.create_task(_tick(srv, 0.5, ticks))
        await until(lambda: _after_bad(out.got), 20, "a value once the clock moves")
    finally:
        if ticker is not None:
            ticker.cancel()
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    assert src.stats.errors_by_reason.get("server_clock_frozen", 0) >= 1, src.stats.errors_by_reason
    assert stale == [], stale
    assert _after_bad(out.got)[0].value == 1.0, out.got


async def test_a_server_clock_that_moves_every_few_seconds_is_not_called_frozen() -> None:
    """A healthy PLC that updates its ServerStatus.CurrentTime every 3.5 s (over the 3 s the former limit
    allowed at these settings): the source learns the period and judges the clock only well past it, so it
    neither turns the tags BAD nor reconnects. Before, it was reconnected over and over."""
    port = free_port()
    srv, idx = await _line(port)
    await _stop_clock(srv)
    ticks: list[int] = []
    ticker = asyncio.create_task(_tick(srv, 3.5, ticks))
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Speed"}]))
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        seen = len(ticks)
        await until(lambda: len(ticks) >= seen + 3, 30, "the clock moved three times")
    finally:
        ticker.cancel()
        await src.stop()
        await srv.stop()
    assert src.halts == 0 and src.stats.reconnects == 0, (src.stats.errors_by_reason, src.stats.last_error)
    assert "server_clock_frozen" not in src.stats.errors_by_reason, src.stats.errors_by_reason


async def test_a_clock_stall_the_server_came_back_from_is_forgotten_and_does_not_widen_the_frozen_limit_for_good() -> (
    None
):
    """A healthy server's clock moves every 0.3 s, stands 2.5 s once (a PLC busy for a while, under the limit,
    so not a halt) and moves every 0.3 s again: after a few changes the period the clock is judged by is its
    own again, not the stall's. Before, the learned period was the longest interval of the whole session: each
    stall under the limit tripled the limit for the rest of a session that may last months, so a clock that
    then froze was caught ever later, or never."""
    port = free_port()
    srv, idx = await _line(port)
    await _stop_clock(srv)
    pause = asyncio.Event()
    pause.set()

    async def ticker() -> None:
        while True:
            await pause.wait()
            await srv.write_attribute_value(
                ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime),
                ua.DataValue(ua.Variant(dt.datetime.now(dt.UTC), ua.VariantType.DateTime)),
            )
            await asyncio.sleep(0.3)

    ticks = asyncio.create_task(ticker())
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Speed"}]))
    try:
        await src.start()
        await until(lambda: src.clock_period_s, 30, "the server's clock period learned")
        pause.clear()
        await asyncio.sleep(2.5)
        pause.set()
        await until(lambda: (src.clock_period_s or 0) >= 2.0, 30, "the stall seen")
        await until(lambda: (src.clock_period_s or 9) < 1.5, 20, "the stall forgotten after a few changes")
    finally:
        ticks.cancel()
        await src.stop()
        await srv.stop()
    assert src.halts == 0 and src.stats.reconnects == 0, (src.stats.errors_by_reason, src.stats.last_error)


async def test_a_server_replaced_on_the_same_endpoint_is_judged_on_its_own_clock() -> None:
    """The first server's clock moved; it is replaced (restarted) by one whose clock never moves (a server
    that states no real time): the second is never called frozen. Before, "clock seen moving" carried over
    from the first server, and the second was reconnected every few seconds."""
    port = free_port()
    srv, idx = await _line(port)
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Speed"}]))
    other = None
    try:
        await src.start()
        await until(
            lambda: getattr(src, "clock_period_s", 1.0), 30, "the first server's clock period learned"
        )
        await srv.stop()
        other, _ = await _line(port)
        await _stop_clock(other)
        await until(lambda: src.stats.reconnects >= 1, 20, "the source reconnected to the second server")
        await until(lambda: src.state.value == "connected", 30, "the source connected to it")
        await asyncio.sleep(4.5)  # past three checks and 3 s, the former limit, of a clock standing still
        connected = src.state.value
    finally:
        await src.stop()
        if other is not None:
            await other.stop()
    assert src.halts == 0 and connected == "connected", (src.stats.errors_by_reason, src.stats.last_error)
    assert "server_clock_frozen" not in src.stats.errors_by_reason, src.stats.errors_by_reason


async def _small_plc(port: int, most: int = 1):
    """A PLC that states MaxSubscriptions ``most`` and counts the subscriptions itself (the test writes the
    count)."""
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "S7-1200")
    srv.iserver.max_subscriptions = most
    reject = await obj.add_variable(ua.NodeId("Reject", idx), "Reject", False)
    await reject.set_writable()
    await srv.write_attribute_value(
        ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_MaxSubscriptions),
        ua.DataValue(ua.Variant(most, ua.VariantType.UInt32)),
    )
    await _set_subs(srv, 0)
    await srv.start()
    return srv, idx


async def test_a_write_only_sources_watch_without_room_after_a_reconnect_is_made_once_there_is_room() -> None:
    """A write-only source's watch holds the one subscription a small PLC allows; after a reconnect the PLC
    still counts it (as a PLC does until it notices the old session's subscription is gone): no room, said
    on /status, and the watch is made once the PLC states room again. Before, it was never asked again."""
    port = free_port()
    srv, idx = await _small_plc(port)
    src = OpcUaSource("plc", _settings(port))
    src.expect_writes([(f"ns={idx};s=Reject", True)])
    try:
        await src.start()
        await until(lambda: src.targets_watched > 0, 30, "the watch made")
        await _set_subs(srv, 1)  # the PLC counts the source's subscription
        await _set_state(srv, ua.ServerState.Suspended)  # a halt: the source closes its session, reconnects
        await until(lambda: src.halts >= 1, 30, "the source halted")
        await _set_state(srv, ua.ServerState.Running)
        await until(lambda: "targets_unwatched" in src.notices.counts, 30, "the watch said not made")
        unwatched = src.notices.status()["targets_unwatched"]["message"]
        await _set_subs(srv, 0)  # the PLC dropped the former session's subscription from its count
        await until(lambda: src.targets_watched > 0, 30, "the watch made once there is room")
        await src.write(f"ns={idx};s=Reject", True)
    finally:
        await src.stop()
        await srv.stop()
    assert "it holds 1" in unwatched and "once the server states room" in unwatched, unwatched
    assert "targets_watched_late" in src.notices.counts, src.notices.counts


async def test_a_write_only_sources_former_session_left_by_a_cut_link_is_not_counted_against_its_watch() -> (
    None
):
    """The link is cut (no CloseSession reaches the PLC): the PLC holds the former session's subscription,
    and states it in its count, until that session times out. The source knows that one is its own: it asks
    for its watch's subscription, refused until the former session times out, and again at each check until
    it is made. Before, the PLC was judged full and the watch was never made."""
    port = free_port()
    srv, idx = await _small_plc(port)
    # a PLC that does not take a session's activation on another channel (its transfer): the source's close of
    # the former session at the reconnect is refused (BadSessionIdInvalid), so the PLC holds it until its timeout
    srv.iserver.lookup_external_session = lambda _token: None
    src = OpcUaSource("plc", _settings(port, session_timeout_s=1))
    src.expect_writes([(f"ns={idx};s=Reject", True)])
    try:
        await src.start()
        await until(lambda: src.targets_watched > 0, 30, "the watch made")
        await _set_subs(srv, 1)  # the PLC counts the source's subscription, and goes on counting it
        for proto in list(srv.bserver.clients):  # the link drops: no CloseSession reaches the server
            proto.transport.close()
        await until(lambda: src.stats.reconnects >= 1, 30, "the source reconnected")
        await until(lambda: src.targets_watched > 0, 20, "the watch made again")
    finally:
        await src.stop()
        await srv.stop()
    said = src.notices.status().get("targets_unwatched", {}).get("message", "")
    assert "MaxSubscriptions" not in said, said  # not judged full on its own former subscription


async def test_a_write_only_sources_left_subscriptions_are_counted_for_every_left_session_not_one(
    monkeypatch,
) -> None:
    """Two sessions of the source are left on the PLC (cut links), each holding its watch's subscription; at the
    reconnect the older one's close succeeds and the newer one's goes unanswered (a PLC busy: no answer within
    connect_timeout_s), so the PLC still holds the newer one's subscription, which it states in its count until
    that session times out. That one is this source's own: the watch is asked for and made. Before, the first
    close that succeeded forgot every left subscription: the PLC (stating 2 of 2) was judged full by the source's
    own former subscription and the watch not asked for until that session timed out."""
    never = asyncio.Event()  # the PLC's answer to the closes it does not answer in time
    hang: set = set()  # the sessions (their AuthenticationToken) whose close the PLC does not answer
    real_close = InternalSession.close_session

    async def close_session(self, delete_subs: bool = True) -> None:
        if self.auth_token in hang:
            await never.wait()
        await real_close(self, delete_subs)

    monkeypatch.setattr(InternalSession, "close_session", close_session)
    port = free_port()
    srv, idx = await _small_plc(port, most=2)
    src = OpcUaSource("plc", _settings(port, reconnect_initial_s=0.1))
    src.expect_writes([(f"ns={idx};s=Reject", True)])

    def token():
        return src._client.uaclient.session.authentication_token

    def cut() -> None:  # the link drops: no CloseSession reaches the server
        for proto in list(srv.bserver.clients):
            proto.transport.close()

    try:
        await src.start()
        await until(lambda: src.targets_watched > 0, 30, "the watch made")
        await _set_subs(srv, 1)  # the PLC counts the source's subscription
        hang.add(token())
        cut()
        await until(lambda: src.stats.reconnects >= 1 and src.targets_watched > 0, 20, "the watch made again")
        assert len(src._left_sessions) == 1  # the first session, its close unanswered: kept
        await _set_subs(srv, 2)  # both sessions' subscriptions: the PLC is full
        hang.clear()  # the first session's close answered from now on, the second's not
        hang.add(token())
        cut()
        await until(
            lambda: (
                src.stats.reconnects >= 2
                and (src.targets_watched > 0 or "targets_unwatched" in src.notices.counts)
            ),
            20,
            "the watch judged after the second reconnect",
        )
        said = src.notices.status().get("targets_unwatched", {}).get("message", "")
        left = len(src._left_sessions)
    finally:
        never.set()
        await src.stop()
        await srv.stop()
    assert left == 1  # the second session, its close unanswered
    assert "MaxSubscriptions" not in said, said  # not judged full on its own former subscription
    assert src.targets_watched > 0


async def test_the_left_subscriptions_kept_of_a_tag_reading_source_whose_plc_restarts_are_those_not_past_their_time() -> (
    None
):
    """A tag-reading source keeps, per session a cut left, the subscriptions that session may still hold on the
    PLC (``_subs_left``), until its time. Its PLC restarts three times: at each restart the entries of the former
    ones, past their time, are gone; only the last cut's is kept. Before, only a write-only source's watch pruned
    them: one entry more for good at every restart of a PLC (a flapping link over months)."""

    async def plc():  # one that grants the short session timeout asked for (asyncua's grants 5 s at least)
        srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
        srv.iserver.min_session_timeout_ms = 100
        await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
        await srv.start()
        return srv, idx

    port = free_port()
    srv, idx = await plc()
    src = OpcUaSource(
        "plc",
        _settings(
            port,
            connect_timeout_s=1,
            reconnect_initial_s=0.1,
            session_timeout_s=0.6,
            nodes=[{"node_id": f"ns={idx};s=Speed"}],
        ),
    )
    held = []
    try:
        await src.start()
        for _ in range(3):
            await until(lambda: src._sub is not None, 20, "subscribed")
            # the former cuts' sessions timed out on the PLC: their entries past their time
            await until(
                lambda: all(until_s <= time.monotonic() for _, until_s in src._subs_left.values()),
                20,
                "the former entries past their time",
            )
            reconnects = src.stats.reconnects + 1
            await srv.stop()  # the PLC restarts: its sessions gone, the source's cut
            srv, idx = await plc()
            await until(
                lambda n=reconnects: src.stats.reconnects >= n and src._sub is not None,
                30,
                "subscribed again",
            )
            held.append(len(src._subs_left))
    finally:
        await src.stop()
        await srv.stop()
    assert max(held) <= 1, held


async def test_the_subscription_a_cut_link_left_on_a_plc_that_keeps_it_past_the_session_ends_with_the_session(
    monkeypatch,
) -> None:
    """OPC UA Part 4 lets a server keep the subscriptions of a session it ends itself (its timeout) until their
    own lifetime runs out (a UA .NET-based server does, for a transfer). The PLC here: asyncua's server made to
    keep them so, allowing 2 subscriptions, and taking no activation of a left session on another channel (the
    source's close of it at the reconnect refused). The link is cut; the source reconnects and subscribes again;
    its former subscription is gone soon after its session timed out, and the PLC's HMI gets the second one.
    Before, the source asked a lifetime of 10,000 publishing intervals (1,000 s here): the left subscription
    stayed on the PLC and the HMI was refused (BadTooManySubscriptions)."""
    real_close = InternalSession.close_session

    async def close_session(self, delete_subs: bool = True) -> None:
        if (
            asyncio.current_task() is self._timeout_task
        ):  # the server ends the session: its subscriptions stay
            delete_subs = False
        await real_close(self, delete_subs)

    monkeypatch.setattr(InternalSession, "close_session", close_session)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    srv.iserver.min_session_timeout_ms = 100  # grants the short session timeout asked for
    srv.iserver.max_subscriptions = 2
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    srv.iserver.lookup_external_session = lambda _token: None
    subs = srv.iserver.subscription_service.subscriptions
    src = OpcUaSource(
        "plc",
        _settings(
            port, session_timeout_s=2, reconnect_initial_s=0.1, nodes=[{"node_id": f"ns={idx};s=Speed"}]
        ),
    )
    hmi = Client(f"opc.tcp://127.0.0.1:{port}/plc/")
    try:
        await src.start()
        await until(lambda: src._sub is not None, 30, "subscribed")
        first = set(subs)
        granted = [
            (sub.data.RevisedLifetimeCount, sub.data.RevisedMaxKeepAliveCount) for sub in subs.values()
        ]
        for proto in list(srv.bserver.clients):  # the link drops: no CloseSession reaches the server
            proto.transport.close()
        await until(lambda: src.stats.reconnects >= 1 and src._sub is not None, 20, "subscribed again")
        await until(lambda: not first & set(subs), 30, "the former session's subscription gone from the PLC")
        await hmi.connect()
        await hmi.create_subscription(500, None)  # the PLC's second subscription: the HMI's
        await until(lambda: len(subs) == 2, 30, "the source's and the HMI's subscriptions on the PLC")
    finally:
        await hmi.disconnect()
        await src.stop()
        await srv.stop()
    assert all(life >= 3 * keepalive for life, keepalive in granted), granted  # Part 4's floor


def _plc_revising_the_interval(monkeypatch, lo_ms: float, hi_ms: float) -> None:
    """asyncua's server made a PLC whose publishing interval is within [lo_ms, hi_ms] (it revises the one asked)
    and that honours ModifySubscription's counts (asyncua's answers with what it created)."""
    create, modify = SubscriptionService.create_subscription, SubscriptionService.modify_subscription

    async def create_subscription(self, params, *a, **kw):
        params.RequestedPublishingInterval = min(max(params.RequestedPublishingInterval, lo_ms), hi_ms)
        return await create(self, params, *a, **kw)

    def modify_subscription(self, params):
        sub = self.subscriptions[params.SubscriptionId]
        sub.data.RevisedLifetimeCount = self._clamp_lifetime_count(params.RequestedLifetimeCount)
        sub.data.RevisedMaxKeepAliveCount = self._clamp_keep_alive_count(params.RequestedMaxKeepAliveCount)
        return modify(self, params)

    monkeypatch.setattr(SubscriptionService, "create_subscription", create_subscription)
    monkeypatch.setattr(SubscriptionService, "modify_subscription", modify_subscription)


async def test_the_subscription_a_cut_link_left_on_a_plc_publishing_slower_than_asked_ends_with_the_session(
    monkeypatch,
) -> None:
    """A PLC whose fastest publishing interval is 1,000 ms, asked 10 ms, and that keeps a session's
    subscriptions past its timeout until their lifetime (as in the test above). The source asks the counts
    again of the interval granted: the subscription a cut link left is gone soon after its 2 s session. Before,
    the lifetime asked was of 10 ms intervals (200 of them for 2 s), 200 s at the interval granted."""
    real_close = InternalSession.close_session

    async def close_session(self, delete_subs: bool = True) -> None:
        if asyncio.current_task() is self._timeout_task:  # the server ends the session: its own stay
            delete_subs = False
        await real_close(self, delete_subs)

    monkeypatch.setattr(InternalSession, "close_session", close_session)
    _plc_revising_the_interval(monkeypatch, 1000.0, 1e9)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    srv.iserver.min_session_timeout_ms = 100  # grants the short session timeout asked for
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    # the source's close of the left session refused (no activation on another channel)
    srv.iserver.lookup_external_session = lambda _token: None
    subs = srv.iserver.subscription_service.subscriptions
    src = OpcUaSource(
        "plc",
        _settings(
            port,
            session_timeout_s=2,
            reconnect_initial_s=0.1,
            publishing_interval_ms=10,
            nodes=[{"node_id": f"ns={idx};s=Speed"}],
        ),
    )
    try:
        await src.start()
        await until(lambda: src._sub is not None, 30, "subscribed")
        first = set(subs)
        granted = [(s.data.RevisedPublishingInterval, s.data.RevisedLifetimeCount) for s in subs.values()]
        for proto in list(srv.bserver.clients):  # the link drops: no CloseSession reaches the server
            proto.transport.close()
        await until(lambda: src.stats.reconnects >= 1 and src._sub is not None, 20, "subscribed again")
        await until(lambda: not first & set(subs), 30, "the former session's subscription gone from the PLC")
    finally:
        await src.stop()
        await srv.stop()
    assert granted == [(1000.0, 3)], granted  # 3 keep-alives of one 1,000 ms interval: Part 4's floor


async def test_a_live_subscription_on_a_plc_publishing_faster_than_asked_outlasts_publish_requests_held_back(
    monkeypatch,
) -> None:
    """A PLC that publishes every 250 ms, asked 1,000, and the source's Publish requests held back (its event
    loop held by other work, as the server sees it) for 10 of those intervals, well within the 4 s session:
    the subscription lives on, and the source goes on with it. Before, its lifetime was asked in 1,000 ms
    intervals (4, the session's, at keepalive_check_s 0.3), 1 s at 250 ms: the server ended it (publish cycle
    count over the lifetime) and the source reconnected."""
    _plc_revising_the_interval(monkeypatch, 0.0, 250.0)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    srv.iserver.min_session_timeout_ms = 100
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    subs = srv.iserver.subscription_service.subscriptions
    src = OpcUaSource(
        "plc",
        _settings(
            port,
            session_timeout_s=4,
            connect_timeout_s=20,  # the silence watch: not what is tested here
            publishing_interval_ms=1000,
            nodes=[{"node_id": f"ns={idx};s=Speed"}],
        ),
    )
    try:
        await src.start()
        await until(lambda: src._sub is not None, 30, "subscribed")
        (sid,) = subs
        session = src._client.uaclient.session
        publish, hold, answers = session.publish, asyncio.Event(), []

        async def held_publish(acks):
            await hold.wait()
            answer = await publish(acks)
            answers.append(answer)
            return answer

        session.publish = held_publish  # the next Publish request waits: the server has none to answer
        # held for 10 publishing intervals the server counted without a request (or until it ended the
        # subscription), however loaded the machine
        await until(lambda: sid not in subs or subs[sid]._publish_cycles_count >= 10, 30, "10 intervals held")
        hold.set()
        assert sid in subs, "the server ended the live subscription (its lifetime ran out)"
        await until(lambda: answers, 20, "a Publish answered after the hold")
        assert sid in subs and src._sub is not None and src.stats.reconnects == 0
    finally:
        await src.stop()
        await srv.stop()


async def test_the_subscriptions_a_cut_link_left_are_counted_for_their_lifetime_when_shorter_than_the_session() -> (
    None
):
    """A PLC granting a lifetime shorter than the session (its largest lifetime count 10, at 500 ms: 5 s of a
    20 s session): the subscription a cut left ends at its lifetime whether its session lives on or not, so the
    source counts it as its own (``_subs_left``) that long, not 1.5 session timeouts (30 s)."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    srv.iserver.max_lifetime_count = 10
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    src = OpcUaSource(
        "plc",
        _settings(
            port,
            session_timeout_s=20,
            reconnect_initial_s=0.1,
            publishing_interval_ms=500,
            nodes=[{"node_id": f"ns={idx};s=Speed"}],
        ),
    )
    try:
        await src.start()
        await until(lambda: src._sub is not None, 30, "subscribed")
        cut = time.monotonic()
        for proto in list(srv.bserver.clients):
            proto.transport.close()
        await until(lambda: src._subs_left, 20, "the cut session's subscription counted")
        left = dict(src._subs_left)
    finally:
        await src.stop()
        await srv.stop()
    # its lifetime (10 x 500 ms) from the cut at least, well short of 1.5 session timeouts
    assert all(cut + 5 <= until_t < cut + 30 for _n, until_t in left.values()), (left, cut)


async def test_counts_are_asked_once_more_of_the_interval_a_plc_revised_again_in_its_modify_answer(
    monkeypatch,
) -> None:
    """A PLC granting 1,000 ms (asked 10) that answers the ModifySubscription asking the counts of 1,000 ms with
    2,000 ms: the counts are asked once more, of 2,000 ms, and the subscription lives as long as the session.
    Before, the counts of 1,000 ms stood at 2,000 ms (a left subscription kept twice the session)."""
    _plc_revising_the_interval(monkeypatch, 1000.0, 1e9)
    modify = SubscriptionService.modify_subscription
    asked: list[tuple[float, int]] = []

    def modify_subscription(self, params):
        asked.append((params.RequestedPublishingInterval, params.RequestedLifetimeCount))
        sub = self.subscriptions[params.SubscriptionId]  # (asyncua's publishes on at 1,000 ms: what it says)
        sub.data.RevisedPublishingInterval = max(params.RequestedPublishingInterval, 2000.0)
        return modify(self, params)

    monkeypatch.setattr(SubscriptionService, "modify_subscription", modify_subscription)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    srv.iserver.min_session_timeout_ms = 100
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    subs = srv.iserver.subscription_service.subscriptions
    src = OpcUaSource(
        "plc",
        _settings(
            port, session_timeout_s=20, publishing_interval_ms=10, nodes=[{"node_id": f"ns={idx};s=Speed"}]
        ),
    )
    try:
        await src.start()
        await until(lambda: src._sub is not None, 20, "subscribed")
        granted = [(s.data.RevisedPublishingInterval, s.data.RevisedLifetimeCount) for s in subs.values()]
    finally:
        await src.stop()
        await srv.stop()
    assert asked == [(1000.0, 20), (2000.0, 10)], asked
    assert granted == [(2000.0, 10)], granted  # 20 s: the session's


def _plc_never_answering_modify_subscription(monkeypatch) -> None:
    """A PLC publishing no faster than every 1,000 ms that applies a ModifySubscription and never answers it
    (the answer dropped)."""
    _plc_revising_the_interval(monkeypatch, 1000.0, 1e9)
    send = UaProcessor.send_response

    def send_response(self, handle, seqhdr, response, *a, **kw):
        if isinstance(response, ua.ModifySubscriptionResponse):
            return None
        return send(self, handle, seqhdr, response, *a, **kw)

    monkeypatch.setattr(UaProcessor, "send_response", send_response)


async def test_a_tag_source_on_a_plc_never_answering_modify_subscription_connects_and_reads(
    monkeypatch,
) -> None:
    """The counts asked again of the interval granted (ModifySubscription) go unanswered: the source goes on
    with its subscription (watched for the larger of the counts created and asked) and reads. Before, the
    unanswered request's TimeoutError failed every connect: the source never connected."""
    _plc_never_answering_modify_subscription(monkeypatch)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    speed = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    subs = srv.iserver.subscription_service.subscriptions
    src = OpcUaSource(
        "plc", _settings(port, publishing_interval_ms=10, nodes=[{"node_id": f"ns={idx};s=Speed"}])
    )
    got = None
    try:
        await src.start()
        got = _Collect(src)
        await until(lambda: src._sub is not None, 20, "subscribed")
        await speed.write_value(2.0)
        await until(
            lambda: any(r.value == 2.0 and r.quality is Quality.GOOD for r in got.got), 20, "the change read"
        )
        held = set(subs)
        sid = src._sub.subscription_id
        # what the PLC applied (the counts asked again): a cut leaves the subscription that long
        applied_s = subs[sid].data.RevisedPublishingInterval / 1000.0 * subs[sid].data.RevisedLifetimeCount
        counted_s = src._sub_life_s
    finally:
        if got is not None:
            got.cancel()
        await src.stop()
        await srv.stop()
    assert held == {sid} and src.stats.reconnects == 0, (held, sid)
    assert counted_s >= applied_s, (counted_s, applied_s)  # counted as this source's at least that long


async def test_a_write_only_sources_watch_on_a_plc_never_answering_modify_subscription_leaves_none_behind(
    monkeypatch,
) -> None:
    """A write-only source's watch makes a subscription of its own; its ModifySubscription goes unanswered:
    the watch is made on it all the same, and it is the only subscription the source holds. Before, the
    TimeoutError left it on the PLC, unknown to the source (never deleted, for the session's life), and the
    watch was said refused and never asked again."""
    _plc_never_answering_modify_subscription(monkeypatch)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    reject = await obj.add_variable(ua.NodeId("Reject", idx), "Reject", False)
    await reject.set_writable()
    await srv.start()
    subs = srv.iserver.subscription_service.subscriptions
    src = OpcUaSource("plc", _settings(port, connect_timeout_s=3, publishing_interval_ms=10))
    src.expect_writes([(f"ns={idx};s=Reject", True)])
    try:
        await src.start()
        await until(
            lambda: src.targets_watched > 0 or "targets_unwatched" in src.notices.counts,
            20,
            "the watch asked",
        )
        watched, held = src.targets_watched, set(subs)
        sid = src._sub.subscription_id if src._sub is not None else None
    finally:
        await src.stop()
        await srv.stop()
    assert watched == 3, src.notices.status()
    assert held == {sid}, (held, sid)


async def test_a_tag_that_changed_once_is_not_lost_from_a_full_hold_and_goes_on_good_when_the_server_runs_again(
    monkeypatch,
) -> None:
    """While a halted server has not shown it is healthy, a chatty tag fills the held readings past their
    limit: the oldest are dropped, but not the one value of a tag that changed once (a machine state, a
    setpoint), which is passed on GOOD with the rest once the server says Running. Before, it was dropped
    among the chatty tag's values, and the tag stayed BAD after the recovery until it changed again."""
    monkeypatch.setattr(client_module, "_HELD_MAX", 4)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    speed = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 0.0)
    await obj.add_variable(ua.NodeId("Mode", idx), "Mode", 7)
    await srv.start()
    await _stop_clock(srv)

    async def chatter() -> None:
        n = 0.0
        while True:
            n += 1.0
            await speed.write_value(n)
            await asyncio.sleep(0.01)

    src = OpcUaSource(
        "plc",
        _settings(
            port,
            reconnect_initial_s=0.1,
            publishing_interval_ms=20,
            nodes=[
                {"node_id": f"ns={idx};s=Speed", "tag": "speed", "queue_size": 100},
                {"node_id": f"ns={idx};s=Mode", "tag": "mode"},
            ],
        ),
    )
    out, writer = None, asyncio.create_task(chatter())
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: any(r.tag == "mode" for r in out.got), 30, "the mode's first value")
        await _set_state(srv, ua.ServerState.Suspended)
        await until(lambda: src.halts >= 1, 20, "the halt")
        await _set_state(srv, ua.ServerState.Running)
        await until(
            lambda: any(r.tag == "speed" for r in _after_bad(out.got)), 20, "values once it runs again"
        )
        # the reconnect's values went on together: if the mode's is not among them, it never comes
        await until(
            lambda: len([r for r in _after_bad(out.got) if r.tag == "speed"]) >= 20, 20, "more values"
        )
        dropped = src.stats.dropped
    finally:
        writer.cancel()
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    mode = [r for r in _after_bad(out.got) if r.tag == "mode"]
    assert dropped > 0, "the hold never overflowed: the test proves nothing"
    assert [r.value for r in mode] == [7], out.got
    speeds = [r.value for r in _after_bad(out.got) if r.tag == "speed"]
    assert speeds == sorted(speeds), speeds
