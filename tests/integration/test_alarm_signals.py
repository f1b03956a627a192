"""An alarm's OPC UA mirror ends in the alarm's current state, against the real asyncua machine server:
a transition that could not be signalled (the server was away) is not retried once a newer transition
waits; the newer one goes out at once, and the older one can no longer land after it."""

from __future__ import annotations

import asyncio
import time

from devices.mqtt.client import MqttSource
from devices.opcua.client import OpcUaSource
from edge_agent.actions import MAX_IN_FLIGHT, ActionRunner
from edge_agent.config import parse_config
from edge_agent.types import Result
from simulators.machine import MachineServer
from tests.support.peers import free_port
from tests.support.results import result


def _result(verdict: str, seq: int) -> Result:
    return result(verdict, seq, source="machine", label="x", finished_at=time.time())


async def test_a_raise_that_failed_is_dropped_when_the_clear_comes_and_the_mirror_ends_clear():
    machine = MachineServer(free_port(), seed=1, period_ms=200, window_samples=64)  # not started yet
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {
                "machine": {
                    "type": "opcua",
                    "endpoint": machine.endpoint,
                    "reconnect_initial_s": 0.1,
                    "reconnect_max_s": 0.3,
                    "connect_timeout_s": 2.0,
                    "keepalive_check_s": 0.3,
                }
            },
            "actions": {
                "al": {
                    "type": "alarm",
                    "raise_after": 1,
                    "clear_after": 1,
                    "when": {"verdict": "NG"},
                    "opcua_source": "machine",
                    "node_id": machine.node_id("Alarm"),
                    # the raise's first retry is 30 s after it failed: long after the server is back, even
                    # on a loaded machine (at 3 s, a connect slower than its retries gave the raise up: failed 1)
                    "retry": {"max_attempts": 4, "backoff_s": 30.0},
                }
            },
        }
    )
    src = OpcUaSource("machine", cfg.sources["machine"])
    await src.start()  # the server is away: the first connect fails, the source keeps trying
    runner = ActionRunner(cfg, {"machine": src})
    try:
        await runner.handle(["al"], _result("NG", 0), None)  # raised: the mirror write fails (retryable)
        await asyncio.sleep(0.2)
        await machine.start()
        for _ in range(400):
            if src.state.value == "connected":
                break
            await asyncio.sleep(0.05)
        assert src.state.value == "connected", src.stats.last_error
        t0 = time.monotonic()
        await runner.handle(["al"], _result("OK", 1), None)  # cleared while the raise waits for its retry
        for _ in range(600):  # the clear goes out at once, not after the raise's backoff
            if machine.writes:
                break
            await asyncio.sleep(0.05)
        sent_after = time.monotonic() - t0
        await runner.flush(timeout_s=45)  # (a raise still waiting for its retry would land within it)
        await asyncio.sleep(0.2)
    finally:
        await src.stop()
        await machine.stop()
    assert runner.alarm_state[("al", "p")]["active"] is False
    # before, the raise's retry landed after it failed, after the clear: the PLC saw an alarm that had
    # already cleared, and kept seeing it
    assert [v for t, v in machine.writes if t == "Alarm"] == [False], machine.writes
    assert sent_after < 15, sent_after  # not after the raise's 30-s backoff
    st = runner.stats["al"]
    assert (st["raised"], st["cleared"], st["superseded"], st["failed"]) == (1, 1, 1, 0), dict(st)


async def test_results_an_mqtt_publish_action_is_still_acting_on_are_bounded_and_the_rest_counted_dropped():
    # the broker is away and paho's queue is full: each publish waits its publish_timeout_s, then retries
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {
                "bus": {"type": "mqtt", "port": free_port(), "publish_max_queued": 2, "publish_timeout_s": 5}
            },
            "actions": {"pub": {"type": "mqtt_publish", "source": "bus", "qos": 1}},
        }
    )
    src = MqttSource("bus", cfg.sources["bus"])
    await src.start()
    runner = ActionRunner(cfg, {"bus": src})
    try:
        for i in range(MAX_IN_FLIGHT + 40):
            await runner.handle(["pub"], _result("NG", i), None)
        await asyncio.sleep(0.05)  # the two paho could queue are done; the rest wait for room
        pending, stats = len(runner._pending), dict(runner.stats["pub"])
        for i in range(5):  # room for two again
            await runner.handle(["pub"], _result("NG", i), None)
        again = len(runner._pending)
    finally:
        for t in list(runner._pending):
            t.cancel()
        await asyncio.gather(*runner._pending, return_exceptions=True)
        await src.stop()
    # before: one task per result, each polling paho's queue every 5 ms for as long as the broker was away
    assert pending == MAX_IN_FLIGHT - 2 and again == MAX_IN_FLIGHT, (pending, again)
    assert stats == {"queued": 2, "dropped": 40}, stats
    assert runner.stats["pub"]["dropped"] == 43
