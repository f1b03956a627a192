"""A faulty server answering a Read with fewer results than the nodes it was asked for (none for one of them). asyncua
indexes the answer: a Read of one node so answered raised IndexError ("list index out of range") out of a write to a
BaseDataType node (its held value is read at each write), and the source's keep-alive, which reads the server's state
and clock in one Read, failed at each check and the source reconnected every few tenths of a second. Now a Read of
several nodes so answered is read again a node a Read (the node answered with nothing given a Bad status, the others
their values), a Read of one node raises an adapter error naming the fault, and each such answer is counted (notice
``read_results_missing``)."""

from __future__ import annotations

from asyncua import ua
from asyncua.server.internal_session import InternalSession

from tests.support.plc import opcua_source, plc_server
from tests.support.waits import until


async def test_a_read_answered_without_a_nodes_result_keeps_the_others_and_is_counted(monkeypatch) -> None:
    async def build(_srv, idx, obj):
        return {
            "Any": await obj.add_variable(
                ua.NodeId("Any", idx), "Any", ua.Variant(2.0, ua.VariantType.Double), None, ua.NodeId(24)
            )
        }

    read, left_out = InternalSession.read, {ua.ObjectIds.Server_ServerStatus_CurrentTime}

    async def faulty(self, params):
        got = await read(self, params)
        return [
            r
            for r, rv in zip(got, params.NodesToRead, strict=True)
            if rv.NodeId.Identifier not in left_out or rv.AttributeId != ua.AttributeIds.Value
        ]

    async with plc_server(build) as p:
        monkeypatch.setattr(InternalSession, "read", faulty)  # after the server's own reads at its start
        async with opcua_source(p) as src:  # a keep-alive check every 0.3 s
            # each check's Read so answered is counted: three checks
            await until(
                lambda: src.notices.counts.get("read_results_missing", 0) >= 3, 5, "three checks counted"
            )
            assert src.stats.reconnects == 0 and src.state.value == "connected"  # was: one reconnect a check
            left_out.add("Any")  # its held value's Read, made before each write to it, answered with nothing
            assert await src.write(p.node_id("Any"), 5.0) is None  # was: IndexError
            left_out.discard("Any")
            assert await p.nodes["Any"].read_value() == 5.0
            said = src.notices.status()["read_results_missing"]
            assert said["count"] >= 2 and "with 1 result(s) (a server fault)" in said["message"], said
