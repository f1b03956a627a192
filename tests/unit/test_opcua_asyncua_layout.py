"""asyncua keeps a subscription's monitored items by client handle in ``Subscription._monitored_items``, a private
dict with no public call to forget one: the OPC UA source forgets there the items a faulty server's
CreateMonitoredItems answer left out (``_forget_unanswered``), else their values reach a tag twice. These tests fail
on an asyncua that keeps them otherwise, so an upgrade is seen in CI, and an unknown layout is said at run time, not
passed over."""

from __future__ import annotations

import logging

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.subscription import Subscription, SubscriptionItemData

from devices.opcua import client as opc


class _LeavesOneOut:
    """A session answering a CreateMonitoredItems with the first item's result alone (item id 7)."""

    async def create_monitored_items(self, params: ua.CreateMonitoredItemsParameters) -> list:
        return [ua.MonitoredItemCreateResult(MonitoredItemId=7)]


def _request(
    node: ua.NodeId, handle: int, attr: ua.AttributeIds = ua.AttributeIds.Value
) -> ua.MonitoredItemCreateRequest:
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node, AttributeId=attr),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=ua.MonitoringParameters(ClientHandle=handle, QueueSize=1),
    )


async def test_an_item_left_out_of_the_answer_is_kept_by_asyncua_and_forgotten_by_the_source() -> None:
    session = _LeavesOneOut()
    sub = Subscription(session, ua.CreateSubscriptionParameters(), handler=object())  # type: ignore[arg-type]
    a, b = ua.NodeId("A", 2), ua.NodeId("B", 2)
    await sub.create_monitored_items([_request(a, 201), _request(b, 202)])
    kept = sub._monitored_items
    # asyncua's layout the source relies on: by client handle, the unanswered one without the server's id
    assert {h: (d.node.nodeid, d.server_handle) for h, d in kept.items()} == {201: (a, 7), 202: (b, None)}
    assert opc._forget_unanswered(sub, [Node(session, b)])  # type: ignore[arg-type]
    assert set(kept) == {201}


async def test_only_the_items_of_the_attribute_answered_short_are_forgotten() -> None:
    """The write targets' watch (a node's DataType) answered with a result short, while the node's tag item, asked
    for again meanwhile, waits for its answer: the tag's item was forgotten too (asyncua then raised KeyError at its
    answer) and, named by the server's GetMonitoredItems, deleted. Only the items of the attribute asked are."""
    session = _LeavesOneOut()
    sub = Subscription(session, ua.CreateSubscriptionParameters(), handler=object())  # type: ignore[arg-type]
    a, b = ua.NodeId("A", 2), ua.NodeId("B", 2)
    await sub.create_monitored_items(
        [_request(a, 201, ua.AttributeIds.DataType), _request(b, 202, ua.AttributeIds.DataType)]
    )
    tag = SubscriptionItemData()  # the tag's item of B, asked for again, not answered yet
    tag.client_handle, tag.node, tag.attribute = 203, Node(session, b), ua.AttributeIds.Value  # type: ignore[arg-type]
    sub._monitored_items[203] = tag
    nodes = [Node(session, a), Node(session, b)]  # type: ignore[arg-type]
    forgotten = opc._forget_unanswered(sub, nodes, ua.AttributeIds.DataType)
    assert forgotten == {202} and set(sub._monitored_items) == {201, 203}


def test_a_subscription_kept_otherwise_is_said_not_passed_over(caplog) -> None:
    class Other:  # an asyncua that keeps its items elsewhere
        _items: dict = {}

    opc._layout_unknown.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="devices.opcua"):
            assert not opc._forget_unanswered(Other(), [])  # type: ignore[arg-type]
            assert not opc._forget_unanswered(Other(), [])  # type: ignore[arg-type]
        said = [r.getMessage() for r in caplog.records if "Subscription._monitored_items" in r.getMessage()]
        assert len(said) == 1 and "its tag may get each value twice" in said[0], said
    finally:
        opc._layout_unknown.cache_clear()


class _Deletes:
    """A session taking every DeleteMonitoredItems, the ids it was asked to delete kept in ``deleted``."""

    def __init__(self) -> None:
        self.deleted: list = []

    async def delete_monitored_items(self, params: ua.DeleteMonitoredItemsParameters) -> list:
        self.deleted.extend(params.MonitoredItemIds)
        return [ua.StatusCode() for _ in params.MonitoredItemIds]


def _held(session, *items: tuple) -> Subscription:
    """A subscription of ``session`` whose items asyncua holds: (client handle, node name, item id or None while its
    answer is awaited, attribute (Value when not given))."""
    sub = Subscription(session, ua.CreateSubscriptionParameters(), handler=object())
    sub.subscription_id = 5
    for handle, node, server, *attr in items:
        item = SubscriptionItemData()
        item.client_handle, item.node, item.server_handle = handle, Node(session, ua.NodeId(node, 2)), server  # type: ignore[arg-type]
        item.attribute = attr[0] if attr else ua.AttributeIds.Value
        sub._monitored_items[handle] = item
    return sub


async def test_a_short_answer_naming_a_waiting_items_id_deletes_nothing() -> None:
    """A tag's item asked for again after a download (C) waits for its answer, id 9 on the server already, while a
    batch of B and D is answered short naming 9 (the other call's answer mixed in): 9 was held by no answered item of
    another node, so it was deleted; C's answer then gave it 9 and the tag got no value again, the source connected.
    No item a faulty answer names is deleted: the batch's registrations are forgotten, C's kept."""
    session = _Deletes()
    sub = _held(session, (201, "A", 7), (202, "B", 9), (203, "C", None))
    assert opc._forget_named(sub, [9], [ua.NodeId("B", 2), ua.NodeId("D", 2)]) == 1
    assert session.deleted == [] and set(sub._monitored_items) == {201, 203}


async def test_an_extra_naming_an_item_of_a_call_answered_later_is_not_deleted() -> None:
    """Two CreateMonitoredItems of one subscription under way (a tag's item asked for again while the write targets'
    watch is made): the server answers the second first and appends its answer to the first (item 10) to it. 10 was
    deleted as an item made for no item asked, then given to the tag by the first call's answer: the tag silent, the
    source connected. No extra is deleted (which item it is cannot be told); those made are counted."""
    import asyncio
    import types

    deleted: list = []
    faults: list = []
    first_answer: asyncio.Future = asyncio.get_running_loop().create_future()

    class OutOfOrder:
        async def create_monitored_items(self, params: ua.CreateMonitoredItemsParameters) -> list:
            if params.ItemsToCreate[0].RequestedParameters.ClientHandle == 201:
                await first_answer
                return [ua.MonitoredItemCreateResult(MonitoredItemId=10)]
            # its own item 11, the first call's 10 appended, and 12 made for no item asked
            return [ua.MonitoredItemCreateResult(MonitoredItemId=i) for i in (11, 10, 12)]

        async def delete_monitored_items(self, params: ua.DeleteMonitoredItemsParameters) -> list:
            deleted.extend(params.MonitoredItemIds)
            return [ua.StatusCode() for _ in params.MonitoredItemIds]

    session = OutOfOrder()
    opc._split_operations(
        types.SimpleNamespace(uaclient=types.SimpleNamespace(session=session)),  # type: ignore[arg-type]
        lambda why, left=0: faults.append(left),
    )

    def create(handle: int, node: str) -> ua.CreateMonitoredItemsParameters:
        return ua.CreateMonitoredItemsParameters(
            SubscriptionId=5, ItemsToCreate=[_request(ua.NodeId(node, 2), handle)]
        )

    first = asyncio.create_task(session.create_monitored_items(create(201, "A")))
    await asyncio.sleep(0)
    second = await session.create_monitored_items(create(202, "B"))
    assert [r.MonitoredItemId for r in second] == [11] and deleted == []
    first_answer.set_result(None)
    assert [r.MonitoredItemId for r in await first] == [10]
    assert deleted == [] and faults == [2], (deleted, faults)


def test_asyncua_keeps_each_request_awaiting_its_answer_by_request_id() -> None:
    """The session check counts its wait from the last answer to a request ahead of it
    (``OpcUaSource._read_state``), by the requests asyncua's protocol holds in ``_callbackmap`` until answered: on
    another layout that wait falls back to ``connect_timeout_s`` alone, and a slow serial PLC is dropped again. The
    check's one read is sent with a timeout of its own (``_read_values``), through the protocol's ``send_request``."""
    import inspect

    from asyncua.client.ua_client import UASocketProtocol

    assert isinstance(UASocketProtocol(timeout=1.0)._callbackmap, dict)
    assert "timeout" in inspect.signature(UASocketProtocol.send_request).parameters


async def test_asyncuas_send_request_waits_the_timeout_it_is_given_not_the_protocols() -> None:
    """The session check's one read (``_read_values``) is waited for as long as the requests ahead of it may take,
    by the ``timeout`` it gives the protocol's ``send_request``, and not by the protocol's own (``connect_timeout_s``,
    the client's): an asyncua that took that argument for the request's TimeoutHint alone ended the read at the
    first ``connect_timeout_s``, and a slow serial PLC was taken for a stalled one again. A PLC that takes the
    request and never answers: the wait given (0.05 s) ends it, the protocol's hour never reached."""
    import asyncio

    from asyncua.client.ua_client import UASocketProtocol

    proto = UASocketProtocol(timeout=3600.0)
    sent: list[bytes] = []

    class _Silent:  # the PLC's end of the connection: takes every request, answers none
        def write(self, data: bytes) -> None:
            sent.append(data)

    proto.connection_made(_Silent())  # type: ignore[arg-type]
    request = ua.ReadRequest()
    read = asyncio.ensure_future(proto.send_request(request, timeout=0.05))
    done, _ = await asyncio.wait([read], timeout=60)
    assert done, "the read was waited for by the protocol's own timeout, not the one given"
    assert isinstance(read.exception(), TimeoutError), read.exception()
    assert request.RequestHeader.TimeoutHint == 50 and len(sent) == 1, (
        request.RequestHeader.TimeoutHint,
        sent,
    )


async def test_the_watch_given_back_while_a_tags_item_waits_deletes_nothing() -> None:
    """The write targets' watch answered with the right count but some items refused (no room) is given back. A tag's
    item asked for again after a download (C) waits for its answer, id 9 on the server already, and the watch's answer
    named 9 for a watch item too (a server fault no count shows): 9 was held by no answered item of another node or
    attribute, so the give-back deleted it; C's answer then gave it 9 and the tag got no value again, the source
    connected. While an item waits, the watch's items are not deleted: forgotten, left on the server, counted."""
    session = _Deletes()
    sub = _held(
        session,
        (201, "A", 7),
        (202, "C", None),
        (203, "W", 9, ua.AttributeIds.DataType),
    )
    w, c = ua.NodeId("W", 2), ua.NodeId("C", 2)
    watched = opc._WATCHED
    assert (
        await opc._delete_named(
            sub, [9, ua.StatusCode(ua.StatusCodes.BadTooManyMonitoredItems)], [w], watched
        )
        == 1
    )
    assert session.deleted == [] and set(sub._monitored_items) == {201, 202}
    # once nothing waits, the watch's items are given back (deleted), the tags' kept
    sub = _held(session, (201, "A", 7), (202, "C", 11), (204, "W", 12, ua.AttributeIds.DataType))
    assert await opc._delete_named(sub, [12, 7], [w, c], watched) == 0
    assert session.deleted == [12], session.deleted


async def test_the_session_checks_read_asks_no_longer_timeout_than_a_request_header_holds() -> None:
    """The session check's read asks asyncua for ``connect_timeout_s`` times the requests ahead of it plus one
    (``_read_values``), written into the request's TimeoutHint, a UInt32 of milliseconds: a day's timeout with 50
    requests ahead went past it, the request was never encoded (struct.error) and each check took the session for
    lost. The request is encoded as asyncua's protocol encodes it before sending."""
    from types import SimpleNamespace

    from asyncua.client.ua_client import UASocketProtocol
    from asyncua.common.utils import Buffer
    from asyncua.ua import ua_binary

    proto = UASocketProtocol(timeout=1.0)
    hints: list[int] = []

    async def send_request(request, timeout=None):
        proto._setup_request_header(request.RequestHeader, timeout)
        ua_binary.struct_to_binary(request)  # raises past what the header holds
        hints.append(request.RequestHeader.TimeoutHint)
        answer = ua.ReadResponse()
        answer.Results = [ua.DataValue(ua.Variant(0, ua.VariantType.Int32))]
        return Buffer(ua_binary.struct_to_binary(answer))

    proto.send_request = send_request  # type: ignore[method-assign]
    client = SimpleNamespace(uaclient=SimpleNamespace(protocol=proto))
    state = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
    got = await opc._read_values(client, [state], 86_400.0 * 51)  # was: struct.error
    assert got[0].Value.Value == 0 and hints == [(2**32 - 1) // 1000 * 1000], hints
