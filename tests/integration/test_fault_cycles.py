"""Months alone, compressed: a fault repeated many times against real peers must leave nothing behind
that grows with the count of faults (log lines, file descriptors, tasks, threads). Each test runs a few
dozen cycles and compares a count after the later cycles with the count after the first ones."""

from __future__ import annotations

import logging

from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from tests.support.peers import free_port
from tests.support.waits import until


async def test_a_plc_that_stays_away_adds_no_log_line_per_reconnect_attempt(caplog) -> None:
    # a PLC switched off: its port on loopback refuses every connection, as a powered-down PLC's does
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{free_port()}/factory/",
            nodes=[{"node_id": "ns=2;s=Machine1.Temperature"}],
            reconnect_initial_s=0.01,
            reconnect_max_s=0.02,
        ),
    )
    caplog.set_level(logging.WARNING)
    await src.start()
    try:
        await until(lambda: src.stats.errors >= 5, what="5 failed attempts")
        early = len(caplog.records)
        await until(lambda: src.stats.errors >= 40, what="40 failed attempts")
        late = len(caplog.records)
    finally:
        await src.stop()
    # the adapter says the loss once per burst: 35 more attempts in the same burst add no line (asyncua
    # said "close_secure_channel was called but connection is closed" once per attempt, for good)
    assert late - early == 0, [r.getMessage() for r in caplog.records[early:]][:3]
