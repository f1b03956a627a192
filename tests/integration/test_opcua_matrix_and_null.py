"""OPC UA values that are not one plain number or waveform: a node holding a matrix (a tri-axial vibration
sensor's [3, N] axes) and a null Variant with status Good, against a real asyncua server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import ua
from pydantic import ValidationError

from devices.base import Quality, Reading
from devices.opcua.client import OpcUaSource, check_server
from devices.opcua.settings import OpcUaSettings
from tests.integration.test_opcua_vendor_limits import _settings
from tests.support.peers import free_port, opcua_server

N = 64
AXES = np.arange(3 * N, dtype=np.float64).reshape(3, N)  # row i: axis i (x, y, z)


async def _server(port: int):
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:matrix", "Line")
    # a matrix as asyncua (and most servers) send it: the Variant carries its dimensions
    await obj.add_variable(ua.NodeId("Axes", idx), "Axes", AXES.tolist())
    # the same matrix sent flat, its shape said only by the node's ValueRank / ArrayDimensions attributes
    flat = await obj.add_variable(ua.NodeId("FlatAxes", idx), "FlatAxes", AXES.ravel().tolist())
    await flat.write_attribute(ua.AttributeIds.ValueRank, ua.DataValue(ua.Variant(2, ua.VariantType.Int32)))
    await flat.write_attribute(
        ua.AttributeIds.ArrayDimensions, ua.DataValue(ua.Variant([3, N], ua.VariantType.UInt32))
    )
    # a PLC tag with no value (a null Variant), its status Good
    await obj.add_variable(
        ua.NodeId("Empty", idx),
        "Empty",
        ua.Variant(None, ua.VariantType.Null),
        datatype=ua.NodeId(ua.ObjectIds.Double),
    )
    await obj.add_variable(ua.NodeId("Temp", idx), "Temp", 21.5)
    await srv.start()
    return srv, idx


async def _read(src: OpcUaSource, want: set[str]) -> dict[str, Reading]:
    got: dict[str, Reading] = {}

    async def run() -> None:
        async for r in src.items():
            got.setdefault(r.tag, r)
            if want <= set(got):
                return

    reader = asyncio.create_task(run())
    await asyncio.wait([reader], timeout=8.0)
    reader.cancel()
    return got


async def test_a_matrix_node_is_never_passed_on_as_one_flattened_waveform_and_a_null_value_is_bad(
    caplog,
) -> None:
    """Before, a [3, N] node came as one 3N-sample waveform (three axes end to end, quality GOOD) for a
    maintenance model to score, and a null Variant with status Good as a GOOD reading of None."""
    port = free_port()
    srv, idx = await _server(port)
    nodes = [{"node_id": f"ns={idx};s={n}"} for n in ("Axes", "FlatAxes", "Empty", "Temp")]
    src = OpcUaSource("plc", _settings(port, nodes))
    try:
        await src.start()
        got = await _read(src, {"Empty", "Temp"})
        # the matrices' first values were notified before Temp's and Empty's (one publish, node order)
        for _ in range(600):
            if src.stats.errors_by_reason.get("multi_dim", 0) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await src.stop()
        await srv.stop()
    assert got["Temp"].value == 21.5 and got["Temp"].quality is Quality.GOOD
    assert "Axes" not in got and "FlatAxes" not in got, {t: np.shape(r.value) for t, r in got.items()}
    assert src.stats.errors_by_reason["multi_dim"] >= 2
    said = [
        r.getMessage()
        for r in caplog.records
        if "ns=2;s=Axes (tag Axes) holds a 3x64 array" in r.getMessage()
    ]
    assert len(said) == 1 and "nodes[].index" in said[0], said
    assert got["Empty"].value is None and got["Empty"].quality is Quality.BAD
    assert src.stats.errors_by_reason["null_value"] >= 1


async def test_index_picks_a_row_of_a_matrix_node_as_its_tags_waveform() -> None:
    """``nodes[].index``: the same node listed once per row, each row a waveform of its own tag, from the
    Variant's dimensions or, for a value sent flat, the node's ArrayDimensions."""
    port = free_port()
    srv, idx = await _server(port)
    nodes = [
        {"node_id": f"ns={idx};s=Axes", "tag": "x", "index": 0},
        {"node_id": f"ns={idx};s=Axes", "tag": "z", "index": 2},
        {"node_id": f"ns={idx};s=FlatAxes", "tag": "flat_y", "index": [1]},
    ]
    src = OpcUaSource("plc", _settings(port, nodes))
    try:
        await src.start()
        got = await _read(src, {"x", "z", "flat_y"})
    finally:
        await src.stop()
        await srv.stop()
    assert set(got) == {"x", "z", "flat_y"}, (set(got), src.stats.errors_by_reason)
    for tag, row in (("x", 0), ("z", 2), ("flat_y", 1)):
        assert got[tag].value.shape == (N,) and np.array_equal(got[tag].value, AXES[row]), tag
        assert got[tag].quality is Quality.GOOD
    assert "multi_dim" not in src.stats.errors_by_reason


def test_a_node_listed_twice_needs_a_distinct_index_for_each_listing() -> None:
    ok = [
        {"node_id": "ns=2;s=Axes", "tag": "x", "index": 0},
        {"node_id": "ns=2;s=Axes", "tag": "y", "index": 1},
    ]
    OpcUaSettings(endpoint="opc.tcp://127.0.0.1:4840/", nodes=ok)
    for nodes in (
        [{"node_id": "ns=2;s=Axes", "tag": "x"}, {"node_id": "ns=2;s=Axes", "tag": "y"}],
        [
            {"node_id": "ns=2;s=Axes", "tag": "x", "index": 1},
            {"node_id": "ns=2;s=Axes", "tag": "y", "index": 1},
        ],
    ):
        with pytest.raises(ValidationError, match=r"'ns=2;s=Axes' is listed 2 times.*own index and tag"):
            OpcUaSettings(endpoint="opc.tcp://127.0.0.1:4840/", nodes=nodes)
    with pytest.raises(ValidationError, match="negative indexes"):
        OpcUaSettings(endpoint="opc.tcp://127.0.0.1:4840/", nodes=[{"node_id": "ns=2;s=Axes", "index": -1}])


async def test_validate_online_names_a_matrix_node_without_a_fitting_index() -> None:
    """``edge-agent validate --online`` (``check_server``) says before the start what the source would skip
    for its shape: a matrix without ``index``, and an index past the matrix's dimensions."""
    port = free_port()
    srv, idx = await _server(port)
    nodes = [
        {"node_id": f"ns={idx};s=Axes"},
        {"node_id": f"ns={idx};s=FlatAxes", "tag": "y", "index": 1},
        {"node_id": f"ns={idx};s=FlatAxes", "tag": "w", "index": 3},
        {"node_id": f"ns={idx};s=Temp"},
    ]
    try:
        errors, _, tags, _ = await check_server(_settings(port, nodes), [])
    finally:
        await srv.stop()
    assert tags == ["Axes", "y", "w", "Temp"]
    assert "holds a 3x64 array" in str(errors[0]) and "index" in str(errors[0])
    assert errors[1] is None and errors[3] is None
    assert "index [3] does not pick a row of its 3x64 array" in str(errors[2])


async def test_a_node_listed_again_under_another_node_id_is_named_not_silently_untagged() -> None:
    """``ns=2;s=Temp`` and ``nsu=<uri>;s=Temp`` are one node: the settings cannot tell, and before, the
    node got two monitored items and gave every value twice under the second tag (the first tag silent).
    Now it is subscribed once, under the first tag, and the second listing is named in node_errors."""
    port = free_port()
    srv, idx = await _server(port)
    nodes = [
        {"node_id": f"ns={idx};s=Temp", "tag": "t1"},
        {"node_id": "nsu=urn:test:matrix;s=Temp", "tag": "t2"},
    ]
    src = OpcUaSource("plc", _settings(port, nodes))
    try:
        await src.start()
        got = await _read(src, {"t1"})
        for _ in range(20):  # a second value of the same notification would follow at once
            await asyncio.sleep(0.01)
    finally:
        await src.stop()
        await srv.stop()
    assert set(got) == {"t1"} and src.stats.received == 1
    assert "tag 't1' reads" in src.node_errors["nsu=urn:test:matrix;s=Temp"]


async def test_a_datetime_value_of_1601_the_null_time_is_no_value_and_bad() -> None:
    """A PLC's DateTime tag that was never set (a last-maintenance or batch-start time) holds DateTime 0, OPC
    UA's null time, which asyncua hands out as 1601-01-01. It was passed on as that date, GOOD, while the
    source's timestamps already took it as missing: a rule or a dashboard took year 1601 for a real time. It
    is now no value, BAD, counted as null_value naming the tag, as a null Variant is; a set time reads on."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:nulltime", "Line")
    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    await obj.add_variable(
        ua.NodeId("LastService", idx),
        "LastService",
        ua.Variant(datetime(1601, 1, 1, tzinfo=UTC), ua.VariantType.DateTime),
    )
    await obj.add_variable(
        ua.NodeId("BatchStart", idx), "BatchStart", ua.Variant(when, ua.VariantType.DateTime)
    )
    await srv.start()
    nodes = [{"node_id": f"ns={idx};s={n}"} for n in ("LastService", "BatchStart")]
    src = OpcUaSource("plc", _settings(port, nodes))
    try:
        await src.start()
        got = await _read(src, {"LastService", "BatchStart"})
    finally:
        await src.stop()
        await srv.stop()
    assert got["BatchStart"].value == "2026-11-30T12:00:00+00:00"
    assert got["BatchStart"].quality is Quality.GOOD
    r = got["LastService"]
    assert (r.value, r.quality, r.reason) == (None, Quality.BAD, "null_value"), r
    assert src.stats.errors_by_reason["null_value"] == 1
    assert "LastService" in (src.stats.last_error or "") and "1601-01-01" in (src.stats.last_error or "")
