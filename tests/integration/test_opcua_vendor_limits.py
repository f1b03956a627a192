"""Limits and quirks of other vendors' OPC UA servers (embedded PLC servers, gateways), each emulated by a
real asyncua server on a free loopback port configured to behave as that vendor's does."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError

from devices.base import Quality
from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from tests.integration.test_opcua_source import (
    _press_types,
    _press_udt_body,
    ua_types,  # noqa: F401 (a fixture)
)
from tests.integration.test_opcua_source import _settings as source_settings
from tests.support.peers import free_port, opcua_server, take_node_away


def _settings(port: int, nodes: list[dict], **kw) -> OpcUaSettings:
    """The OPC UA source tests' fast settings, for a server on ``port``."""
    return source_settings(f"opc.tcp://127.0.0.1:{port}/plc/", nodes, **({"reconnect_max_s": 0.3} | kw))


async def _limit_operations(srv, most: int, stated: bool) -> list[tuple[str, int]]:
    """The server refuses a Read, Browse or CreateMonitoredItems call of more than ``most`` items whole with
    BadTooManyOperations, as an embedded PLC server does; ``stated``: it says so in its OperationLimits
    (MaxNodesPerRead, MaxNodesPerBrowse, MaxMonitoredItemsPerCall), as most do. Returns the refused calls."""
    refused: list[tuple[str, int]] = []
    isrv = srv.iserver

    def capped(kind: str, field: str, call):
        def check(params) -> None:
            n = len(getattr(params, field))
            if n > most:
                refused.append((kind, n))
                raise ServiceError(ua.StatusCodes.BadTooManyOperations)

        if asyncio.iscoroutinefunction(call):

            async def acall(params, *a, **kw):
                check(params)
                return await call(params, *a, **kw)

            return acall

        def scall(params, *a, **kw):
            check(params)
            return call(params, *a, **kw)

        return scall

    isrv.attribute_service.read = capped("read", "NodesToRead", isrv.attribute_service.read)
    isrv.view_service.browse = capped("browse", "NodesToBrowse", isrv.view_service.browse)
    service = isrv.subscription_service
    service.create_monitored_items = capped("monitor", "ItemsToCreate", service.create_monitored_items)
    if stated:
        for name in ("MaxNodesPerRead", "MaxNodesPerBrowse", "MaxMonitoredItemsPerCall"):
            await srv.write_attribute_value(
                ua.NodeId(getattr(ua.ObjectIds, f"Server_ServerCapabilities_OperationLimits_{name}")),
                ua.DataValue(ua.Variant(most, ua.VariantType.UInt32)),
            )
    return refused


@pytest.mark.usefixtures("ua_types")
@pytest.mark.parametrize("stated", [True, False], ids=["limits_stated", "limits_unstated"])
async def test_a_plc_taking_few_items_per_call_gets_every_tag_and_its_structures_decoded(stated) -> None:
    """An embedded PLC server takes at most 10 nodes per Read and 10 monitored items per call (its
    OperationLimits) and refuses a larger call whole. The source sends its calls in parts: all 30 tags are
    subscribed and the PLC's structure (a UDT) gives its members. Before, asyncua asked for the definitions
    of every structure type in one Read (48 nodes here), the PLC refused it, and the structure's values were
    skipped for good ('structure types could not be read'); the subscription got through only because one
    refused call made the source subscribe node by node (a call per tag)."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:udt", "Line")
    press_type, enc = await _press_types(srv, idx, "definitions")
    await obj.add_variable(
        ua.NodeId("Press1", idx),
        "Press1",
        ua.Variant(ua.ExtensionObject(enc, _press_udt_body(812.5, [0.5, 1.5], "P-7", 3.25))),
        datatype=press_type,
    )
    names = [f"T{i}" for i in range(30)]
    for i, name in enumerate(names):
        await obj.add_variable(ua.NodeId(name, idx), name, float(i))
    refused = await _limit_operations(srv, 10, stated)
    await srv.start()
    # the type load runs on this process's loop, beside the server's: give the state check its default time
    nodes = [{"node_id": f"ns={idx};s={n}"} for n in ["Press1", *names]]
    src = OpcUaSource("plc", _settings(port, nodes, connect_timeout_s=5.0))
    want = set(names) | {"Press1/Force", "Press1/Axis/Pos"}
    got: dict[str, float] = {}

    async def collect() -> None:
        async for r in src.items():
            got.setdefault(r.tag, r.value)
            if want <= set(got):
                return

    try:
        await src.start()
        reader = asyncio.create_task(collect())
        await asyncio.wait([reader], timeout=20.0)
        reader.cancel()
    finally:
        await src.stop()
        await srv.stop()
    assert want <= set(got), (sorted(want - set(got))[:5], src.notices.status(), src.node_errors)
    assert got["Press1/Force"] == 812.5 and got["T29"] == 29.0
    assert not src.node_errors and "structure_types_unread" not in src.notices.counts
    if stated:  # a server that states its limits never gets a call over them
        assert refused == [], refused
    else:  # one that does not is sent a refused call in halves, once per kind of call and size
        assert refused and all(n > 10 for _, n in refused), refused
        assert len(refused) <= 6, refused


async def test_a_plc_full_of_monitored_items_names_its_limit_once_and_refuses_an_anonymous_login_clearly(
    caplog,
) -> None:
    """A PLC that holds 5 monitored items per subscription (BadTooManyMonitoredItems for the rest of one
    CreateMonitoredItems call) and takes only a user login, as a hardened S7-1500 does. The 5 nodes it took
    give values; the 3 it refused are named with the server's limit and what to do, in one log line; before,
    each got its own line telling the reader to check a node id that was right. A source configured without
    a user is told the server refuses an anonymous login and to set one, not 'login refused for user None;
    check username/password'."""
    import logging

    from asyncua.crypto.permission_rules import User, UserRole
    from asyncua.server.user_managers import UserManager

    class Operators(UserManager):
        def get_user(self, iserver, username=None, password=None, certificate=None):
            return User(role=UserRole.User) if (username, password) == ("op", "line3") else None

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    srv.iserver.set_user_manager(Operators())
    srv.set_security_IDs(["Username"])
    names = [f"T{i}" for i in range(8)]
    for i, name in enumerate(names):
        await obj.add_variable(ua.NodeId(name, idx), name, float(i))
    service = srv.iserver.subscription_service
    create = service.create_monitored_items

    async def five_per_subscription(params):
        taken = await create(params)
        full = ua.MonitoredItemCreateResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadTooManyMonitoredItems))
        return taken[:5] + [full] * len(taken[5:])

    service.create_monitored_items = five_per_subscription
    await srv.start()
    nodes = [{"node_id": f"ns={idx};s={n}"} for n in names]
    anonymous = OpcUaSource("anon", _settings(port, nodes))
    operator = OpcUaSource("line", _settings(port, nodes, username="op", password="line3"))
    caplog.set_level(logging.WARNING, logger="devices.opcua")
    got: dict[str, float] = {}

    async def collect() -> None:
        async for r in operator.items():
            got.setdefault(r.tag, r.value)
            if len(got) == 5:
                return

    try:
        await anonymous.start()
        await operator.start()
        reader = asyncio.create_task(collect())
        await asyncio.wait([reader], timeout=20.0)
        reader.cancel()
    finally:
        await anonymous.stop()
        await operator.stop()
        await srv.stop()
    assert anonymous.state.value != "connected"
    refusal = anonymous.stats.last_error or ""
    assert "refuses an anonymous login" in refusal and "set username and password" in refusal, refusal
    assert "None" not in refusal, refusal
    assert got == {f"T{i}": float(i) for i in range(5)}, got
    assert sorted(operator.node_errors) == [f"ns={idx};s=T{i}" for i in (5, 6, 7)], operator.node_errors
    for msg in operator.node_errors.values():
        assert "BadTooManyMonitoredItems" in msg and "took 5 of the 8" in msg, msg
        assert "check the node_id" not in msg and "second opcua source" in msg, msg
    said = [r.getMessage() for r in caplog.records if "T6" in r.getMessage()]
    assert len(said) == 1 and "3 node(s) get no values" in said[0], said


async def _speeds_until_3(src, srv, speed, meanwhile) -> list[float]:
    """The values ``src`` gives (the PLC's Speed) from its start, through ``meanwhile(values so far)``, up to the
    3.0 written after it; the source and the server stopped on the way out."""
    values: list[float] = []

    async def collect() -> None:
        async for r in src.items():
            values.append(r.value)
            if r.value == 3.0:
                return

    try:
        await src.start()
        reader = asyncio.create_task(collect())
        await meanwhile(values)
        await speed.write_value(3.0)
        await asyncio.wait([reader], timeout=20.0)
        reader.cancel()
    finally:
        await src.stop()
        await srv.stop()
    return values


async def test_a_plc_refusing_a_read_of_its_server_state_keeps_the_session() -> None:
    """A PLC whose user role may not read the Server object answers the source's check of its state
    (ServerStatus.State) with BadUserAccessDenied. An answer shows the session is up: the source stays
    connected and values flow. Before, each check (every keepalive_check_s) tore the session down and
    reconnected, counted as 'unreachable: cannot reach ...; is the server running?'."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    service = srv.iserver.attribute_service
    read = service.read
    state = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)

    def refuse_state(params, *a, **kw):
        got = read(params, *a, **kw)
        denied = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadUserAccessDenied))
        return [denied if r.NodeId == state else dv for r, dv in zip(params.NodesToRead, got, strict=True)]

    service.read = refuse_state
    speed = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    src = OpcUaSource("plc", _settings(port, [{"node_id": f"ns={idx};s=Speed"}], keepalive_check_s=0.2))

    async def refused_thrice(_values: list[float]) -> None:
        for _ in range(1000):  # three checks of the server's state, answered with the refusal
            if src.notices.counts.get("server_state_refused", 0) >= 3 or src.stats.reconnects:
                break
            await asyncio.sleep(0.02)

    values = await _speeds_until_3(src, srv, speed, refused_thrice)
    assert src.stats.reconnects == 0 and not src.stats.errors_by_reason, src.stats.last_error
    assert src.notices.counts.get("server_state_refused", 0) >= 3, src.notices.status()
    assert "BadUserAccessDenied" in src.notices.status()["server_state_refused"]["message"]
    assert values[0] == 1.0 and values[-1] == 3.0, values


async def test_a_plc_taking_one_node_per_read_has_its_state_and_clock_checked() -> None:
    """A PLC that takes one node per Read (MaxNodesPerRead 1, a larger Read refused whole with
    BadTooManyOperations) gets the session check's read of its state and clock in parts: it is checked, never
    refused. Before, the check sent while a Publish waited (nearly always) went whole, was refused at each
    check, and the clock of the server was never judged ('server_state_refused')."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    await _limit_operations(srv, 1, stated=True)
    service = srv.iserver.attribute_service
    read = service.read
    clock = ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)
    clock_reads = [0]

    def counted(params, *a, **kw):
        if any(r.NodeId == clock and r.AttributeId == ua.AttributeIds.Value for r in params.NodesToRead):
            clock_reads[0] += 1
        return read(params, *a, **kw)

    service.read = counted
    speed = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    src = OpcUaSource("plc", _settings(port, [{"node_id": f"ns={idx};s=Speed"}], keepalive_check_s=0.2))

    async def checked(n: int) -> None:
        for _ in range(1500):  # n session checks reading the clock
            if clock_reads[0] >= n or src.stats.reconnects:
                break
            await asyncio.sleep(0.02)

    async def checked_thrice(_values: list[float]) -> None:
        await checked(3)
        # a limit not known yet (a server stating none, or a lower one than it states): the check refused whole
        # is read again in halves and the limit learned
        assert src._client is not None
        limits = src._client.uaclient.session._operation_limits
        assert limits.get("read") == 1, limits
        limits.clear()
        await checked(clock_reads[0] + 3)
        assert limits.get("read") == 1, limits

    values = await _speeds_until_3(src, srv, speed, checked_thrice)
    assert clock_reads[0] >= 6, clock_reads
    assert "server_state_refused" not in src.notices.counts, src.notices.status()
    assert src.stats.reconnects == 0 and not src.stats.errors_by_reason, src.stats.last_error
    assert values[0] == 1.0 and values[-1] == 3.0, values


async def test_a_plc_granting_a_session_timeout_shorter_than_the_checks_keeps_the_session_while_tags_stand_still() -> (
    None
):
    """An embedded server grants a short session timeout whatever is asked (here 0.5 s; the source checks every
    1 s). With its tags standing still, no request reached it within the timeout: it closed the session, and
    the source reconnected every 1.5 s (counted unreachable). The source now checks the session, and asks the
    subscription's keep-alives, within the timeout granted."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    srv.iserver.min_session_timeout_ms = srv.iserver.max_session_timeout_ms = 500
    speed = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    src = OpcUaSource("plc", _settings(port, [{"node_id": f"ns={idx};s=Speed"}], keepalive_check_s=1.0))

    async def standing_still(values: list[float]) -> None:
        for _ in range(1500):
            if values:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(2.5)  # the tag stands still: five session timeouts

    values = await _speeds_until_3(src, srv, speed, standing_still)
    assert src.stats.reconnects == 0 and not src.stats.errors_by_reason, src.stats.last_error
    assert values == [1.0, 3.0], values


async def test_a_node_a_plc_download_took_away_and_made_again_gives_values_again() -> None:
    """A TwinCAT or Codesys program download takes the PLC's nodes away and makes them again under the same
    ids. The server says so on each monitored item (a value with BadNodeIdUnknown, as OPC UA Part 4 asks;
    asyncua's own delete loses that notification, so the test sends it) and does not link the old item to
    the new node. The source makes the item again until the node is back: its values come again without a
    reconnect. Before, the tag stayed Bad until the agent reconnected (for a healthy session: never)."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:BeckhoffAutomation:Ua:PLC1", "PLC1")
    nid = ua.NodeId("MAIN.fbPump.rSpeed", idx)
    speed = await obj.add_variable(nid, "rSpeed", 1.0)
    await srv.start()
    src = OpcUaSource("plc", _settings(port, [{"node_id": f"ns={idx};s=MAIN.fbPump.rSpeed"}]))
    values: list[tuple[float | None, str]] = []

    async def until(value: float) -> None:
        async for r in src.items():
            values.append((r.value, r.quality.value))
            if r.value == value:
                return

    try:
        await src.start()
        await asyncio.wait([asyncio.create_task(until(1.0))], timeout=20.0)
        await take_node_away(srv, speed)  # the download: the server says the node is gone, then drops it
        await srv.register_namespace("urn:plc:library")  # and adds a namespace at the end: no index moves
        speed = await obj.add_variable(nid, "rSpeed", 2.0)  # the new program's node
        await asyncio.wait([asyncio.create_task(until(2.0))], timeout=20.0)
        await speed.write_value(5.0)
        await asyncio.wait([asyncio.create_task(until(5.0))], timeout=20.0)
    finally:
        await src.stop()
        await srv.stop()
    assert values == [(1.0, "good"), (None, "bad"), (2.0, "good"), (5.0, "good")], values
    assert src.stats.reconnects == 0 and src.notices.counts == {"node_gone": 1}, src.notices.status()


async def test_nodes_sharing_a_browse_name_get_tags_of_their_own_and_siemens_quoted_ids_are_read_and_written() -> (
    None
):
    """Two Beckhoff pumps' speeds, ``MAIN.fbPump1.rSpeed`` and ``MAIN.fbPump2.rSpeed``, both have the browse
    name ``rSpeed``, the default tag; two Siemens data blocks both hold ``"Temp Öl"``. The first keeps the
    browse name, a configured tag takes precedence, and a node whose browse name is taken is tagged by its
    node id (said once, and by validate); the tags hold across a reconnect, and validate --online gives the
    same. Before, both pumps' values came under ``rSpeed``, so a rule on it took one pump's speed for the
    other's. Siemens ids with quotes, dots, a space and non-ASCII are read and written as the YAML gives
    them."""
    import yaml

    from devices.opcua.client import check_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC1")
    ids = ["MAIN.fbPump1.rSpeed", "MAIN.fbPump2.rSpeed", '"DB_Line1"."Temp Öl"', '"DB_Line2"."Temp Öl"']
    made = []
    for i, s in enumerate(ids):
        made.append(await obj.add_variable(ua.NodeId(s, idx), s.split(".")[-1].strip('"'), float(i)))
    await made[2].set_writable()
    await srv.start()
    text = f"""
nodes:
  - node_id: ns={idx};s=MAIN.fbPump1.rSpeed
  - node_id: ns={idx};s=MAIN.fbPump2.rSpeed
  - node_id: ns={idx};s="DB_Line1"."Temp Öl"
  - node_id: ns={idx};s="DB_Line2"."Temp Öl"
    tag: Temp Öl
"""
    settings = _settings(port, yaml.safe_load(text)["nodes"])
    pump2, line1 = f"ns={idx};s=MAIN.fbPump2.rSpeed", f'ns={idx};s="DB_Line1"."Temp Öl"'
    want = {"rSpeed": 0.0, pump2: 1.0, line1: 2.0, "Temp Öl": 3.0}
    assert settings.known_tags() == (set(want), True)
    src = OpcUaSource("plc", settings)
    got: dict[str, float] = {}

    async def until(n: int) -> None:
        async for r in src.items():
            if (
                r.quality is Quality.BAD and r.reason == "connection_lost"
            ):  # the loss's, before the reconnect's
                continue
            got[r.tag] = r.value
            if len(got) == n:
                return

    try:
        await src.start()
        await asyncio.wait([asyncio.create_task(until(4))], timeout=20.0)
        first = dict(got)
        got.clear()
        src._lost.set()  # the connection is lost: a fresh session names the nodes again
        await asyncio.wait([asyncio.create_task(until(4))], timeout=20.0)
        await src.write(line1, 21.5)
        written = await made[2].read_value()
        online = await check_server(settings, [])
    finally:
        await src.stop()
        await srv.stop()
    assert first == want and got == want, (first, got)
    assert src.stats.reconnects == 1 and src.notices.counts["tag_taken"] == 4, src.notices.status()
    assert written == 21.5
    assert online[2] == list(want), online[2]


async def test_a_plc_whose_only_subscription_another_client_holds_says_so_and_connects_once_it_is_free() -> (
    None
):
    """A small PLC holds one subscription, and an HMI has it. The source is refused with
    BadTooManySubscriptions, says that other clients (or sessions left behind) hold what the PLC allows, and
    connects as soon as the HMI lets its subscription go. Before, it said the server's status alone."""
    from asyncua import Client

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "S7-1200")
    srv.iserver.max_subscriptions = 1
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    hmi = Client(f"opc.tcp://127.0.0.1:{port}/plc/")
    await hmi.connect()
    held = await hmi.create_subscription(500, None)
    src = OpcUaSource("plc", _settings(port, [{"node_id": f"ns={idx};s=Speed"}]))
    try:
        await src.start()
        said = src.stats.last_error or ""
        await held.delete()
        for _ in range(1000):
            if src.state.value == "connected":
                break
            await asyncio.sleep(0.02)
        state = src.state.value
    finally:
        await src.stop()
        await hmi.disconnect()
        await srv.stop()
    assert "BadTooManySubscriptions" in said and "other clients" in said and "tried again" in said, said
    assert state == "connected"
