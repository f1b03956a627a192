"""`edge-agent browse` and a source's browse ask a folder's children in the current view (a null View
Timestamp): asyncua's Browse asks the view at now, which an OPC Foundation .NET server answers BadViewIdUnknown
for the whole Browse, and the browse of the start folder failed whole. Against a real asyncua server on a free
loopback port that refuses a Browse at another time, as such a server does."""

from __future__ import annotations

from asyncua import ua

from devices.opcua.client import browse_server
from devices.opcua.settings import OpcUaSettings
from tests.support.plc import only_the_current_view, opcua_source, plc_server


async def test_a_server_browsing_only_the_current_view_lists_its_folders_variables(monkeypatch) -> None:
    only_the_current_view(monkeypatch)

    async def build(_srv, idx: int, obj) -> dict:
        line = await obj.add_folder(ua.NodeId("Line", idx), "Line")
        return {
            "Speed": await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.5),
            "Count": await line.add_variable(
                ua.NodeId("Count", idx), "Count", ua.Variant(3, ua.VariantType.Int32)
            ),
        }

    async with plc_server(build) as p:
        settings = OpcUaSettings(endpoint=f"opc.tcp://127.0.0.1:{p.port}/plc/", connect_timeout_s=2.0)
        skipped: list[str] = []
        rows = await browse_server(settings, None, 3, skipped)
        assert {r["path"]: r["data_type"] for r in rows} == {"PLC/Speed": "Double", "PLC/Line/Count": "Int32"}
        assert skipped == []
        async with opcua_source(p) as src:
            assert {r["node_id"] for r in await src.browse()} == {p.node_id("Speed"), p.node_id("Count")}
