"""What watching the write targets (3 monitored items a node: DataType, ArrayDimensions, UserAccessLevel)
costs a PLC with few monitored items, and how a line engineer turns it off. Against a real asyncua server on
a free loopback port that holds a fixed number of monitored items across all its sessions (as an S7-1200's
few hundred are shared by every client) and refuses the rest with BadTooManyMonitoredItems: the watch never
takes a tag's place, stated limits are kept, a refused watch gives back what it took, and
``watch_write_targets: false`` makes no item and, on a source that only writes, no subscription."""

from __future__ import annotations

import dataclasses

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError

from devices.opcua.client import OpcUaSource
from edge_agent.config import ConfigError, parse_config
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until


def _source(port: int, tags: list[str] = (), **kw) -> dict:
    return {
        "type": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
        "connect_timeout_s": 2.0,
        "keepalive_check_s": 0.3,
        "nodes": [{"node_id": t} for t in tags],
        **kw,
    }


def _settings(port: int, tags: list[str] = (), **kw):
    return parse_config({"agent": {"id": "gw"}, "sources": {"plc": _source(port, tags, **kw)}}).sources["plc"]


def _held(srv) -> int:
    """Monitored items the server holds now, over all sessions and subscriptions."""
    subs = srv.iserver.subscription_service.subscriptions.values()
    return sum(len(s.monitored_item_srv._monitored_items) for s in subs)


async def _plc(port: int, most: int, stated: bool, tags: list[str], outputs: list[str], per_call: int = 0):
    """A server holding at most ``most`` monitored items in all (BadTooManyMonitoredItems past them);
    ``stated``: it says so in ServerCapabilities/MaxMonitoredItems; ``per_call``: it takes at most that many
    items in a call to delete them (BadTooManyOperations for more, as an embedded PLC server does), as its
    OperationLimits/MaxMonitoredItemsPerCall states. Returns (server, idx)."""
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    for name in tags:
        await obj.add_variable(ua.NodeId(name, idx), name, 1.0)
    for name in outputs:
        node = await obj.add_variable(ua.NodeId(name, idx), name, ua.Variant(False, ua.VariantType.Boolean))
        await node.set_writable()
    service = srv.iserver.subscription_service
    create = service.create_monitored_items

    async def at_most(params):
        room = max(most - _held(srv), 0)
        taken = await create(dataclasses.replace(params, ItemsToCreate=params.ItemsToCreate[:room]))
        full = ua.MonitoredItemCreateResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadTooManyMonitoredItems))
        return list(taken) + [full] * (len(params.ItemsToCreate) - len(taken))

    service.create_monitored_items = at_most
    if per_call:
        delete = service.delete_monitored_items

        def few_at_once(params):
            if len(params.MonitoredItemIds) > per_call:
                raise ServiceError(ua.StatusCodes.BadTooManyOperations)
            return delete(params)

        service.delete_monitored_items = few_at_once
        await srv.write_attribute_value(
            ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall),
            ua.DataValue(ua.Variant(per_call, ua.VariantType.UInt32)),
        )
    if stated:
        await srv.write_attribute_value(
            ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_MaxMonitoredItems),
            ua.DataValue(ua.Variant(most, ua.VariantType.UInt32)),
        )
    await srv.start()
    return srv, idx


@pytest.mark.parametrize("stated", [True, False], ids=["limit_stated", "limit_unstated"])
async def test_the_watch_never_takes_the_place_of_a_tag_on_a_plc_with_few_monitored_items(stated) -> None:
    """A PLC holding 5 monitored items in all: the line's source takes 3 tags and writes 2 outputs, a second
    source (another session, as the docs advise for tags past a limit) takes 2 tags. The watch of the 2
    outputs (6 items) does not fit: it is not made when the server states its limit, and given back when the
    server refuses it part way; said once; the second source gets both its tags. Before, the watch took the
    2 items left (and kept them, refused the rest) and the second source's tags were refused."""
    port = free_port()
    srv, idx = await _plc(port, 5, stated, ["T0", "T1", "T2", "U0", "U1"], ["Reject", "Lamp"])
    line = OpcUaSource("line", _settings(port, [f"ns={idx};s=T{i}" for i in range(3)]))
    line.expect_writes([(f"ns={idx};s=Reject", True), (f"ns={idx};s=Lamp", True)])
    other = OpcUaSource("other", _settings(port, [f"ns={idx};s=U0", f"ns={idx};s=U1"]))
    try:
        await line.start()
        await until(lambda: line.state.value == "connected", 30, "the line's source connected")
        await other.start()
        await until(lambda: other.state.value == "connected", 30, "the other source connected")
        assert other.node_errors == {}, other.node_errors
        assert line.node_errors == {} and line.target_errors == {}, (line.node_errors, line.target_errors)
        assert _held(srv) == 5
        assert line.targets_watched == 0
        assert line.notices.counts.get("targets_unwatched") == 1, line.notices.counts
        said = line.notices.messages["targets_unwatched"]
        if stated:  # not asked for at all
            assert "the server states MaxMonitoredItems 5" in said and "kept for tags" in said, said
        else:  # asked for, refused part way, given back
            assert "the server refused them (BadTooManyMonitoredItems)" in said, said
    finally:
        await line.stop()
        await other.stop()
        await srv.stop()


async def test_a_refused_watch_is_given_back_in_parts_of_the_items_a_plc_takes_per_call() -> None:
    """A PLC taking at most 2 monitored items per call (its MaxMonitoredItemsPerCall, for deleting them too)
    and holding 5 in all: the source's tag takes one, its 2 outputs' watch (6 items) is made in parts of 2, the
    PLC takes 4 and refuses the last 2. The 4 it took are given back, in parts of 2. Before, they were given
    back in one call, which the PLC refused whole (BadTooManyOperations, logged at INFO): the half watch held
    4 of the PLC's 5 items for the rest of the session, room another client's tags needed."""
    port = free_port()
    srv, idx = await _plc(port, 5, False, ["T0"], ["Reject", "Lamp"], per_call=2)
    line = OpcUaSource("line", _settings(port, [f"ns={idx};s=T0"]))
    line.expect_writes([(f"ns={idx};s=Reject", True), (f"ns={idx};s=Lamp", True)])
    try:
        await line.start()
        await until(lambda: line.notices.counts.get("targets_unwatched") == 1, 30, "the watch refused")
        assert (
            "the server refused them (BadTooManyMonitoredItems)" in line.notices.messages["targets_unwatched"]
        )
        await until(lambda: _held(srv) == 1, 30, "the watch's items given back")
        assert line.node_errors == {} and line.targets_watched == 0
    finally:
        await line.stop()
        await srv.stop()


async def test_a_write_only_source_whose_watch_is_refused_holds_no_subscription() -> None:
    """A source that only writes, on a PLC holding 2 monitored items and stating no limit: its watch (6
    items) is refused part way; the 2 it took are given back and the subscription made for it is deleted,
    so that neither it nor its keep-alive check is held for nothing. Before, both stayed."""
    port = free_port()
    srv, idx = await _plc(port, 2, False, [], ["Reject", "Lamp"])
    src = OpcUaSource("line", _settings(port))
    src.expect_writes([(f"ns={idx};s=Reject", True), (f"ns={idx};s=Lamp", True)])
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        assert src.notices.counts.get("targets_unwatched") == 1, src.notices.counts
        assert srv.iserver.subscription_service.subscriptions == {}
        await src.write(f"ns={idx};s=Reject", True)
    finally:
        await src.stop()
        await srv.stop()


async def test_watch_write_targets_false_makes_no_item_and_a_write_only_source_no_subscription() -> None:
    """``watch_write_targets: false`` on a source that only writes: the targets are judged at connect and
    written, and the server holds no subscription and no monitored item for it. Before, there was no such
    setting (the config was refused) and the source always held a subscription with 3 items per target."""
    port = free_port()
    srv, idx = await _plc(port, 100, True, [], ["Reject", "Lamp"])
    src = OpcUaSource("line", _settings(port, watch_write_targets=False))
    src.expect_writes([(f"ns={idx};s=Reject", True), (f"ns={idx};s=Lamp", "on")])
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        assert set(src.target_errors) == {f"ns={idx};s=Lamp"}, src.target_errors  # judged still
        await src.write(f"ns={idx};s=Reject", True)
        assert srv.iserver.subscription_service.subscriptions == {}
        assert src.targets_watched == 0 and "targets_unwatched" not in src.notices.counts
    finally:
        await src.stop()
        await srv.stop()


def test_watch_write_targets_takes_true_or_false_only_and_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"sources\.plc\.watch_write_targets") as e:
        _settings(4840, watch_write_targets="maybe")
    assert "bool" in str(e.value).lower() or "boolean" in str(e.value).lower(), str(e.value)
