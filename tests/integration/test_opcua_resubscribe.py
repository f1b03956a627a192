"""OPC UA: what the source passes on when its connection to a real asyncua server is cut and made again."""

from __future__ import annotations

import asyncio

import numpy as np
from asyncua import ua

from devices.base import Quality, Reading
from devices.opcua.client import OpcUaSource
from edge_agent.config import WindowSettings
from edge_agent.pipelines import Windower
from tests.integration.test_opcua_source import _settings
from tests.support.peers import free_port, opcua_server
from tests.support.tcp_cut import CutRelay


async def test_a_waveform_sent_again_after_a_cut_makes_its_tag_good_again_and_is_not_scored_twice() -> None:
    """A new subscription starts with each node's current value: after a cut connection the server sends the
    waveform this source passed on before the cut again, with the same source timestamp and samples. The cut made
    the tag BAD (connection_lost); that waveform is the tag GOOD again (a recipe or limits array that never changes
    stayed BAD for good when it was dropped as a repeat), stamped after the BAD with its own time in
    ``source_ts``, and a signal pipeline knows it by that time: its samples are scored once, not twice (nor
    spliced into the next window). A scalar's current value comes again, and the next waveform is passed on."""
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
        for _ in range(1500):
            if sum(r.tag == "Vib" and r.quality is Quality.GOOD for r in got) >= 3:
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
    assert len(vib) == 3, [(r.timestamp, r.source_ts, r.value) for r in vib]
    bad_vib = next(r for r in got if r.tag == "Vib" and r.quality is Quality.BAD)
    again = vib[1]
    assert np.array_equal(again.value, vib[0].value) and again.source_ts == vib[0].timestamp, again
    assert vib[0].timestamp <= bad_vib.timestamp < again.timestamp < vib[2].timestamp, vib
    assert np.array_equal(vib[2].value, np.arange(1.0, 17.0))
    assert [r.tag for r in good].count("Temp") == 2
    # a signal pipeline on the tag: windows of 16 samples, one per waveform it scores
    w = Windower(
        "plc", WindowSettings(waveform="Vib", size_samples=16, sample_rate_hz=16.0), 16, model_rate_hz=16.0
    )
    windows = [win for r in got for win in w.add_all(r)]
    assert [win.waveform.tolist() for win in windows] == [list(range(16)), list(range(1, 17))], windows
    assert w.repeats == 1
