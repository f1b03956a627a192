"""A faulty server answering a Read with fewer results than the nodes it was asked for (none for one of them). asyncua
indexes the answer: a Read of one node so answered raised IndexError ("list index out of range") out of a write to a
BaseDataType node (its held value is read at each write), and the source's keep-alive, which reads the server's state
and clock in one Read, failed at each check and the source reconnected every few tenths of a second. Now a Read of
several nodes so answered is read again a node a Read (the node answered with nothing given a Bad status, the others
their values), a Read of one node raises an adapter error naming the fault, and each such answer is counted (notice
``read_results_missing``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from asyncua import ua
from asyncua.server.internal_session import InternalSession

from tests.support.plc import opcua_source, plc_server
from tests.support.waits import until


async def _two_tags(_srv, idx, obj):
    """Double tags A (1.0) and B (3.0)."""
    return {
        n: await obj.add_variable(ua.NodeId(n, idx), n, ua.Variant(v, ua.VariantType.Double))
        for n, v in (("A", 1.0), ("B", 3.0))
    }


def _held(p) -> set[int]:
    """The ids of the monitored items the server holds, over all subscriptions."""
    subs = p.server.iserver.subscription_service.subscriptions.values()
    return {mid for s in subs for mid in s.monitored_item_srv._monitored_items}


def _get_monitored_items(p):
    """The Server object's GetMonitoredItems method (Part 5, 9.1), which asyncua's server leaves unimplemented: the
    ids and client handles of a subscription's items."""

    def get(_parent, sub_id: ua.Variant) -> list[ua.Variant]:
        items = p.server.iserver.subscription_service.subscriptions[
            sub_id.Value
        ].monitored_item_srv._monitored_items
        return [
            ua.Variant(list(items), ua.VariantType.UInt32),
            ua.Variant([m.client_handle for m in items.values()], ua.VariantType.UInt32),
        ]

    return get


async def test_a_read_answered_without_a_nodes_result_keeps_the_others_and_is_counted(monkeypatch) -> None:
    """Also a CreateMonitoredItems answered with one result fewer than items: asyncua pairs results and items in
    order, and the source's connect failed at each try ("zip() argument 2 is shorter than argument 1"). Now each node is
    subscribed again alone: each tag gets its own node's values, each once (the items it named and the one left out,
    left on the server, not deleted, are not read beside their own: which item such an id is cannot be told). The write targets' watch so answered is not kept."""

    async def build(_srv, idx, obj):
        return {
            "Any": await obj.add_variable(
                ua.NodeId("Any", idx), "Any", ua.Variant(2.0, ua.VariantType.Double), None, ua.NodeId(24)
            ),
            "Speed": await obj.add_variable(
                ua.NodeId("Speed", idx), "Speed", ua.Variant(7.0, ua.VariantType.Double)
            ),
        }

    read, left_out = InternalSession.read, {ua.ObjectIds.Server_ServerStatus_CurrentTime}
    clock_reads = [0]  # the Reads asking for the clock (each session check) the server answered short

    async def faulty(self, params):
        got = await read(self, params)
        clock_reads[0] += any(rv.NodeId.Identifier in left_out for rv in params.NodesToRead)
        return [
            r
            for r, rv in zip(got, params.NodesToRead, strict=True)
            if rv.NodeId.Identifier not in left_out or rv.AttributeId != ua.AttributeIds.Value
        ]

    async with plc_server(build) as p:
        monkeypatch.setattr(InternalSession, "read", faulty)  # after the server's own reads at its start
        service = p.server.iserver.subscription_service
        create = service.create_monitored_items

        left: list[int] = []

        async def last_dropped(params):  # the last item made, its result left out
            got = await create(params)
            left.extend(r.MonitoredItemId for r in got[-1:] if len(got) > 1)
            return got[:-1] if len(got) > 1 else got

        p.server.link_method(
            p.server.get_node(ua.ObjectIds.Server_GetMonitoredItems), _get_monitored_items(p)
        )

        monkeypatch.setattr(service, "create_monitored_items", last_dropped)
        nodes = [{"node_id": p.node_id("Any")}, {"node_id": p.node_id("Speed")}]
        targets = [(p.node_id("Any"), 1.0), (p.node_id("Speed"), 1.0)]
        async with opcua_source(p, targets, nodes=nodes) as src:  # a keep-alive check every 0.3 s
            # the targets' watch so answered is given back (was: counted watched, one of them not): their writes are
            # judged by a Read of their attributes before each
            await until(lambda: "targets_unwatched" in src.notices.status(), 30, "the watch given back")
            assert src.targets_watched == 0, src.targets_watched
            values: dict[str, object] = {}
            async for reading in src.items():
                values[reading.tag] = reading.value
                if len(values) == 2:
                    break
            assert values == {"Any": 2.0, "Speed": 7.0}, values  # was: no connect
            # the session checks' state and clock so answered keep the session (was, when a Publish was ahead of the
            # check: its one result taken as the answer, the session taken for lost at each check and made again, the
            # tags' values read again after each)
            checked = clock_reads[0]
            await until(lambda: clock_reads[0] >= checked + 3, 30, "three session checks")
            assert src.stats.errors_by_reason.get("unreachable", 0) == 0, src.stats.errors_by_reason
            await p.nodes["Speed"].write_value(
                8.0
            )  # each value once: the item left out is not read beside its own
            speeds = []
            async with asyncio.timeout(
                30
            ):  # the change read (within 1.5 s of the write failed on a loaded machine)
                async for reading in src.items():
                    if reading.tag == "Speed" and reading.value == 8.0:
                        speeds.append(reading.value)
                        break
            with contextlib.suppress(TimeoutError):  # and not again
                async with asyncio.timeout(1.5):
                    async for reading in src.items():
                        speeds += [reading.value] if reading.tag == "Speed" and reading.value == 8.0 else []
            assert speeds == [8.0], speeds  # one reading of the change
            # the item left out is left on the server, never deleted, and counted
            assert left and set(left) <= _held(p), (left, _held(p))
            assert src.items_left_on_server >= 1, src.items_left_on_server
            # each check's Read so answered is counted: three checks, and the CreateMonitoredItems
            await until(
                lambda: src.notices.counts.get("read_results_missing", 0) >= 4, 30, "three checks counted"
            )
            assert src.stats.reconnects == 0 and src.state.value == "connected"  # was: one reconnect a check
            left_out.add("Any")  # its held value's Read, made before each write to it, answered with nothing
            assert await src.write(p.node_id("Any"), 5.0) is None  # was: IndexError
            left_out.discard("Any")
            assert await p.nodes["Any"].read_value() == 5.0
            said = src.notices.status()["read_results_missing"]
            assert said["count"] >= 5 and "with 1 result(s) (a server fault)" in said["message"], said


async def test_a_create_monitored_items_answered_with_more_results_than_items_takes_the_first(
    monkeypatch,
) -> None:
    """A faulty server answering each CreateMonitoredItems with one result more than items (an item it made again for
    the last): asyncua pairs results with items by index and raised IndexError, and the source never connected
    ("IndexError: list index out of range" at every try). Now the first as many as items are taken, counted (notice
    read_results_missing): the tags read their values and the write target is watched. The item made past those
    asked is left on the server, not deleted (which item an extra names cannot be told: deleting by it took tags' live
    items), and counted; a Read answered with more results than nodes is counted too (its extras were dropped
    unsaid)."""

    async with plc_server(_two_tags) as p:
        service = p.server.iserver.subscription_service
        create = service.create_monitored_items
        made: list[int] = []

        async def one_more(params):
            got = await create(params)
            again = await create(dataclasses.replace(params, ItemsToCreate=params.ItemsToCreate[-1:]))
            made.extend(r.MonitoredItemId for r in again)
            return got + again

        service.create_monitored_items = one_more
        read = InternalSession.read

        async def read_one_more(self, params):
            got = await read(self, params)
            return got + got[-1:]

        nodes = [{"node_id": p.node_id("A")}, {"node_id": p.node_id("B")}]
        async with opcua_source(p, [(p.node_id("A"), 1.0)], nodes=nodes) as src:  # was: never connected
            values: dict[str, object] = {}
            async for reading in src.items():
                values[reading.tag] = reading.value
                if len(values) == 2:
                    break
            assert values == {"A": 1.0, "B": 3.0}, values
            await until(lambda: src.targets_watched > 0, 30, "the target watched")  # its items one a call
            said = src.notices.status()["read_results_missing"]
            assert "with 3 result(s)" in said["message"] or "with 2 result(s)" in said["message"], said

            assert made and set(made) <= _held(p), (made, _held(p))  # left on the server, never deleted
            assert src.items_left_on_server >= len(made), (src.items_left_on_server, made)
            counted = said["count"]
            monkeypatch.setattr(InternalSession, "read", read_one_more)
            assert (
                await src.write(p.node_id("A"), 5.0) is None
            )  # its held value Read so answered, if any: taken
            # its keep-alive's Read of the server's state and clock so answered, each counted (was: dropped unsaid)
            await until(
                lambda: src.notices.status()["read_results_missing"]["count"] > counted,
                30,
                "a Read answered with more results counted",
            )
            assert await p.nodes["A"].read_value() == 5.0


async def test_a_node_subscribed_alone_after_a_refused_batch_answered_with_nothing_is_a_node_error() -> None:
    """A faulty server refusing a CreateMonitoredItems of several items with a status (the source then subscribes
    each node alone) and answering one of those alone with no result: asyncua, asked for the node alone, indexed
    the empty answer and raised IndexError out of the connect, and the source never connected. Now that node is a
    node error (BadUnexpectedError), counted (notice read_results_missing), and the other tag reads its value."""

    async with plc_server(_two_tags) as p:
        service = p.server.iserver.subscription_service
        create = service.create_monitored_items

        async def b_alone_unanswered(params):
            items = params.ItemsToCreate
            if len(items) > 1:
                raise ua.uaerrors.BadNodeIdUnknown()  # one node refused, as a PLC does
            if items[0].ItemToMonitor.NodeId.Identifier == "B":
                return []
            return await create(params)

        service.create_monitored_items = b_alone_unanswered
        nodes = [{"node_id": p.node_id("A")}, {"node_id": p.node_id("B")}]
        async with opcua_source(p, nodes=nodes) as src:  # was: never connected (IndexError at every try)
            async for reading in src.items():
                assert (reading.tag, reading.value) == ("A", 1.0), reading
                break
            assert "BadUnexpectedError" in str(src.node_errors), src.node_errors
            assert "alone with 0 result(s)" in src.notices.status()["read_results_missing"]["message"]


async def _tags_keep_their_items(src, p) -> None:
    """Each tag's monitored item still on the server, and a value written now read."""
    items = {tag: src._items[ua.NodeId.from_string(p.node_id(tag))][0] for tag in ("A", "B")}
    assert set(items.values()) <= _held(p), (items, _held(p))  # was: deleted, the tags got no value again
    await p.nodes["A"].write_value(42.0)
    async with asyncio.timeout(30):
        async for reading in src.items():
            if (reading.tag, reading.value) == ("A", 42.0):
                break


async def test_an_extra_result_naming_an_item_answered_before_is_not_deleted() -> None:
    """A faulty server appending its previous CreateMonitoredItems answer's results to each answer: the extras name
    items the source holds (the tags', then the watch's). They were deleted as items made for no item asked: the tags
    got no value again and the watch was counted whole with one item left, the source connected. Only an extra naming
    no item answered before is deleted."""

    async with plc_server(_two_tags) as p:
        service = p.server.iserver.subscription_service
        create = service.create_monitored_items
        last: list = []

        async def previous_appended(params):
            got = await create(params)
            answer, last[:] = got + last, got
            return answer

        service.create_monitored_items = previous_appended
        nodes = [{"node_id": p.node_id("A")}, {"node_id": p.node_id("B")}]
        async with opcua_source(p, [(p.node_id("A"), 1.0)], nodes=nodes) as src:
            await until(lambda: src.targets_watched == 3, 30, "the target watched")
            await _tags_keep_their_items(src, p)


async def test_get_monitored_items_pairing_a_tags_item_with_an_item_left_out_keeps_the_tags_item() -> None:
    """The write targets' watch answered with one result fewer than items, and the server's GetMonitoredItems pairing
    its ids with the client handles in another order than it made them: the id it paired with the handle of the item
    left out was a tag's, deleted, and the tag got no value again. An item asyncua holds as answered is never deleted."""

    async with plc_server(_two_tags) as p:
        service = p.server.iserver.subscription_service
        create = service.create_monitored_items

        async def watch_last_dropped(params):
            got = await create(params)
            watch = params.ItemsToCreate[0].ItemToMonitor.AttributeId != ua.AttributeIds.Value
            return got[:-1] if watch and len(got) > 1 else got

        service.create_monitored_items = watch_last_dropped
        answer = _get_monitored_items(p)

        def reversed_handles(parent, sub_id: ua.Variant) -> list[ua.Variant]:
            ids, clients = answer(parent, sub_id)
            return [ids, ua.Variant(clients.Value[::-1], ua.VariantType.UInt32)]

        p.server.link_method(p.server.get_node(ua.ObjectIds.Server_GetMonitoredItems), reversed_handles)
        nodes = [{"node_id": p.node_id("A")}, {"node_id": p.node_id("B")}]
        targets = [(p.node_id("A"), 1.0), (p.node_id("B"), 1.0)]
        async with opcua_source(p, targets, nodes=nodes) as src:
            await until(lambda: "targets_unwatched" in src.notices.status(), 30, "the watch given back")
            await _tags_keep_their_items(src, p)


async def test_a_watch_answered_with_the_tags_ids_given_back_keeps_the_tags_items() -> None:
    """A faulty server answering the write targets' watch with its previous answer again (the tags' item ids, one
    result short of the three targets): the watch is given back, and its give-back deleted the ids that answer named,
    the tags' items: the tags got no value again, the source connected. An id asyncua holds for an item of another
    node or attribute is not deleted with them."""

    async def three(_srv, idx, obj):
        return {
            n: await obj.add_variable(ua.NodeId(n, idx), n, ua.Variant(v, ua.VariantType.Double))
            for n, v in (("A", 1.0), ("B", 3.0), ("C", 5.0))
        }

    async with plc_server(three) as p:
        service = p.server.iserver.subscription_service
        create = service.create_monitored_items
        last: list = []

        async def watch_given_previous(params):
            got = await create(params)
            if params.ItemsToCreate[0].ItemToMonitor.AttributeId == ua.AttributeIds.Value:
                last[:] = got
                return got
            return list(last)

        service.create_monitored_items = watch_given_previous
        nodes = [{"node_id": p.node_id("A")}, {"node_id": p.node_id("B")}]
        targets = [(p.node_id(n), 1.0) for n in ("A", "B", "C")]
        async with opcua_source(p, targets, nodes=nodes) as src:
            await until(lambda: "targets_unwatched" in src.notices.status(), 30, "the watch given back")
            await _tags_keep_their_items(src, p)


async def test_a_tag_item_answered_with_another_tags_id_made_again_keeps_that_tags_item() -> None:
    """A faulty server answering a CreateMonitoredItems with its previous answer again, as many results as asked: the
    tags' second batch (another sampling interval) was given the first batch's item id. Made again when its node was
    said gone (a download), the second tag's item was deleted by that id: the first tag's, which got no value again,
    the source connected. An id asyncua holds for another node's item is not deleted; the answer is counted."""

    async with plc_server(_two_tags) as p:
        service = p.server.iserver.subscription_service
        create = service.create_monitored_items
        last: list = []

        async def previous_again(params):
            got = await create(params)
            answer = list(last) if len(last) == len(got) else got
            last[:] = got
            return answer

        service.create_monitored_items = previous_again
        nodes = [{"node_id": p.node_id("A")}, {"node_id": p.node_id("B"), "sampling_interval_ms": 50}]
        async with opcua_source(p, nodes=nodes) as src:
            ids = {tag: src._items[ua.NodeId.from_string(p.node_id(tag))][0] for tag in ("A", "B")}
            assert ids["A"] == ids["B"], ids  # the second batch given the first's id
            service.create_monitored_items = create
            value = p.server.iserver.aspace[p.nodes["B"].nodeid].attributes[ua.AttributeIds.Value]
            for handle, callback in list(value.datachange_callbacks.items()):  # B said gone, as at a download
                await callback(
                    handle, ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown))
                )
            await until(
                lambda: src._items[p.nodes["B"].nodeid][0] not in (None, ids["B"]), 30, "B made again"
            )
            assert ids["A"] in _held(p), (ids, _held(p))  # was: deleted, the tag got no value again
            kept = src._sub._monitored_items.values()  # B's former item forgotten: its values not read twice
            assert sum(d.node.nodeid == p.nodes["B"].nodeid for d in kept) == 1, list(kept)
            await p.nodes["A"].write_value(42.0)
            async with asyncio.timeout(30):
                async for reading in src.items():
                    if (reading.tag, reading.value) == ("A", 42.0):
                        break
            said = src.notices.status()["read_results_missing"]
            assert "gave another item" in said["message"], said
