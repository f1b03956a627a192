"""A server that grants a monitored item less than asked (a queue of 2 where 100 were asked, a sampling
interval of 200 ms where 10 were asked) drops values between samples or publishes without a word, as does
one that publishes less often than asked with a queue of one; the source reads what the server granted
from its answer and says it once per node (once per subscription). Against a real asyncua server on a free
loopback port whose monitored-item queue limit is 2 and minimum publishing interval 400 ms."""

from __future__ import annotations

import asyncio
import logging

from asyncua import ua

from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from edge_agent.config import WindowSettings
from edge_agent.pipelines import Windower
from tests.support.peers import free_port, opcua_server


async def _until(check, what: str, timeout_s: float = 6.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(what)


async def test_a_queue_or_sampling_interval_the_server_revised_down_is_said_once_per_node(caplog):
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    srv.iserver.max_monitored_item_queue_size = 2  # the server's limit, as a small PLC's
    # and a minimum publishing interval of 400 ms, as a PLC's OPC UA server has one (asyncua has none)
    service = srv.iserver.subscription_service
    create = service.create_subscription

    async def at_least_400_ms(params, *args, **kw):
        params.RequestedPublishingInterval = max(params.RequestedPublishingInterval, 400.0)
        return await create(params, *args, **kw)

    service.create_subscription = at_least_400_ms
    for name in ("Fast", "Plain"):
        await obj.add_variable(ua.NodeId(name, idx), name, 0.0)
    await srv.start()
    settings = OpcUaSettings(
        endpoint=f"opc.tcp://127.0.0.1:{port}/plc/",
        nodes=[
            {"node_id": f"ns={idx};s=Fast", "queue_size": 100, "sampling_interval_ms": 10},
            {"node_id": f"ns={idx};s=Plain"},  # queue 1, sampling 0 (the server's fastest): nothing to say
        ],
        publishing_interval_ms=200,  # asyncua grants the publishing interval as the sampling interval
        reconnect_initial_s=0.1,
        reconnect_max_s=0.2,
        connect_timeout_s=2.0,
        keepalive_check_s=0.3,
    )
    src = OpcUaSource("plc", settings)
    caplog.set_level(logging.WARNING, logger="devices.opcua")
    try:
        await src.start()
        await _until(lambda: src.state.value == "connected", f"not connected: {src.stats.last_error}")
        # before: asyncua dropped the server's revised values; nothing was said and /status showed nothing
        counts = {k: v["count"] for k, v in src.notices.status().items()}
        assert counts == {"queue_revised": 1, "sampling_revised": 1, "publishing_revised": 1}, counts
        said = [r.getMessage() for r in caplog.records if "asked, the server" in r.getMessage()]
        (publishing,) = [m for m in said if "publishing_interval_ms 200 asked" in m]
        assert "the server publishes every 400 ms" in publishing, said
        assert len(said) == 3 and all("tag Fast" in m for m in said if m != publishing), said
        fast = f"ns={idx};s=Fast"
        assert list(src.revised) == [fast], src.revised
        assert "queue_size 100 asked, the server keeps 2" in src.revised[fast]
        assert "sampling_interval_ms 10 asked, the server samples every 400 ms" in src.revised[fast]
        src._lost.set()  # the connection is lost: a fresh session subscribes again and gets the same answer
        await _until(lambda: src.stats.reconnects >= 1 and src.state.value == "connected", "no reconnect")
        await asyncio.sleep(0.1)
        assert [r.getMessage() for r in caplog.records if "asked, the server" in r.getMessage()] == said
        assert src.notices.status()["queue_revised"]["count"] == 1
        assert src.notices.status()["publishing_revised"]["count"] == 1
    finally:
        await src.stop()
        await srv.stop()


async def test_a_value_the_server_marks_as_after_a_queue_overflow_is_counted_and_said_once(caplog):
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    node = await obj.add_variable(ua.NodeId("Count", idx), "Count", 0.0)
    await srv.start()
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/",
            nodes=[{"node_id": f"ns={idx};s=Count", "queue_size": 5}],
            publishing_interval_ms=50,
            connect_timeout_s=2.0,
            keepalive_check_s=0.3,
        ),
    )
    caplog.set_level(logging.WARNING, logger="devices.opcua")
    got: list = []

    async def read() -> None:
        async for r in src.items():
            got.append(r)

    reader = None
    try:
        await src.start()
        await _until(lambda: src.state.value == "connected", f"not connected: {src.stats.last_error}")
        reader = asyncio.create_task(read())
        await _until(lambda: got, "no first value")
        # a server whose queue overflowed marks the next value: InfoType DataValue with the Overflow bit
        for v, status in ((1.0, 0x0480), (2.0, 0), (3.0, 0x0480)):
            await srv.write_attribute_value(
                node.nodeid,
                ua.DataValue(ua.Variant(v, ua.VariantType.Double), StatusCode=ua.StatusCode(status)),
            )
            await asyncio.sleep(0.12)
        await _until(lambda: any(r.value == 3.0 for r in got), "the values did not come")
    finally:
        if reader is not None:
            reader.cancel()
        await src.stop()
        await srv.stop()
    # before: the values passed as GOOD and nothing said the server had dropped any before them
    counts = {k: v["count"] for k, v in src.notices.status().items()}
    assert counts == {"queue_overflow": 2}, counts
    assert src.overflows == {"Count": 2}, src.overflows
    said = [r.getMessage() for r in caplog.records if "overflowed" in r.getMessage()]
    assert len(said) == 1 and "tag Count" in said[0], said
    assert [r.value for r in got[-3:]] == [1.0, 2.0, 3.0]
    # each value after an overflow says values were lost before it, and a signal pipeline taking the tag as a
    # scalar stream starts its window afresh there: before, the hole (0.12 s here, under the 0.5 s the times
    # alone let pass) was spliced into the window, a window of 0.0, 1.0, 2.0, 3.0 judged across it
    assert [(r.value, r.lost_before) for r in got[-4:]] == [
        (0.0, False),
        (1.0, True),
        (2.0, False),
        (3.0, True),
    ]
    w = Windower("plc", WindowSettings(waveform="Count", size_samples=3, sample_rate_hz=8.0), 3)
    windows = [win.waveform.tolist() for r in got[-4:] for win in w.add_all(r)]
    assert windows == [], windows
    assert w.notices.status()["window_values_lost"]["count"] == 2
