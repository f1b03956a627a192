"""OPC UA: what the source passes on when its connection to a real asyncua server is cut and made again."""

from __future__ import annotations

import asyncio

import numpy as np
from asyncua import ua

from devices.base import Quality, Reading
from devices.opcua.client import OpcUaSource
from tests.integration.test_opcua_source import _settings
from tests.support.peers import free_port, opcua_server
from tests.support.tcp_cut import CutRelay


async def test_a_waveform_sent_again_after_a_reconnect_is_not_passed_on_twice() -> None:
    """A new subscription starts with each node's current value: after a cut connection the server sends the
    waveform this source passed on before the cut again, with the same source timestamp and samples. Before,
    it was passed on twice, so a signal pipeline scored those samples twice (or spliced them into its next
    window). It is passed on once now; a scalar's current value still comes again (a state, which outputs
    resent after a reconnect rely on), and the next waveform is passed on."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:resub", "Line")
    wave = await obj.add_variable(ua.NodeId("Vib", idx), "Vib", [float(i) for i in range(16)])
    await obj.add_variable(ua.NodeId("Temp", idx), "Temp", 20.0)
    await srv.start()
    relay = CutRelay(port)
    nodes = [{"node_id": f"ns={idx};s=Vib"}, {"node_id": f"ns={idx};s=Temp"}]
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{relay.port}/plc/", nodes))
    got: list[Reading] = []
    temps = asyncio.Event()

    async def read() -> None:
        async for r in src.items():
            got.append(r)
            if r.tag == "Temp" and r.quality is Quality.GOOD:  # not the cut's BAD reading
                temps.set()

    async def next_temp() -> None:  # Temp's value comes after Vib's, in the same publish
        await asyncio.wait([asyncio.ensure_future(temps.wait())], timeout=8.0)
        assert temps.is_set(), ([r.tag for r in got], src.stats.errors_by_reason)
        temps.clear()

    reader = asyncio.create_task(read())
    try:
        await src.start()
        await next_temp()
        relay.cut()
        await next_temp()  # the new subscription's first values
        assert src.stats.reconnects == 1
        await wave.write_value([float(i) for i in range(1, 17)])  # the next waveform
        for _ in range(100):
            if sum(r.tag == "Vib" and r.quality is Quality.GOOD for r in got) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        reader.cancel()
        await src.stop()
        relay.close()
        await srv.stop()
    good = [r for r in got if r.quality is Quality.GOOD]  # the cut's BAD readings apart
    assert [(r.tag, r.reason) for r in got if r.quality is not Quality.GOOD] == [
        ("Vib", "connection_lost"),
        ("Temp", "connection_lost"),
    ], got
    vib = [r for r in good if r.tag == "Vib"]
    assert len(vib) == 2 and vib[1].timestamp > vib[0].timestamp, [(r.timestamp, r.value) for r in vib]
    assert np.array_equal(vib[0].value, np.arange(16.0)) and np.array_equal(
        vib[1].value, np.arange(1.0, 17.0)
    )
    assert [r.tag for r in good].count("Temp") == 2
    assert src.notices.counts.get("repeated_waveform") == 1
