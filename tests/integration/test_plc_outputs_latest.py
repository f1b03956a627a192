"""A PLC output gets the latest value, never an older one after it: a write that failed (the PLC was
away) is not retried through its backoff once a newer value waits for the same output; the newer one
is written as soon as it can be, and the older one is counted ``superseded``. Against a real asyncua
server on a free loopback port, started only after the first writes have failed."""

from __future__ import annotations

import asyncio
import time

from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.opcua.client import OpcUaSource
from edge_agent.actions import ActionRunner
from edge_agent.config import parse_config
from edge_agent.types import Result
from tests.support.peers import free_port, opcua_server
from tests.support.results import result


def _result(verdict: str, seq: int, pipeline: str = "p") -> Result:
    return result(verdict, seq, pipeline=pipeline)


async def test_a_failed_output_value_is_dropped_when_a_newer_one_waits_and_the_newer_goes_out_at_once():
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")  # not started: the PLC is away
    for name in ("Level", "Change", "Pulse"):
        await (await obj.add_variable(ua.NodeId(name, idx), name, False)).set_writable()
    writes: list[tuple[str, object]] = []

    async def on_write(event, _dispatcher) -> None:
        for wv, status in zip(event.request_params.NodesToWrite, event.response_params, strict=True):
            if status.is_good() and wv.NodeId.NamespaceIndex == idx:  # not the server's own
                writes.append((wv.NodeId.Identifier, wv.Value.Value.Value))

    srv.subscribe_server_callback(CallbackType.PostWrite, on_write)
    common = {"type": "opcua_write", "source": "plc", "when": {"verdict": "NG"}}
    # (a backoff longer than a loaded machine's server start and reconnect: no True retried before the False)
    retry = {"retry": {"max_attempts": 3, "backoff_s": 60.0}}
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                    "reconnect_initial_s": 0.1,
                    "reconnect_max_s": 0.2,
                    "connect_timeout_s": 2.0,
                    "keepalive_check_s": 0.3,
                }
            },
            "actions": {
                "level": {**common, **retry, "node_id": f"ns={idx};s=Level", "reset_value": False},
                "change": {**common, **retry, "node_id": f"ns={idx};s=Change", "mode": "on_change"},
                # the pulse's reset is the newer value for its output: written at the stop, which cuts the pulse
                # short (at pulse_ms of 1 s, a reset failed while a loaded machine's server was still starting
                # waited out its own 60-s retry, and the test with it)
                "pulse": {
                    **common,
                    **retry,
                    "node_id": f"ns={idx};s=Pulse",
                    "mode": "pulse",
                    "pulse_ms": 600_000,
                },
            },
        }
    )
    names = ["level", "change", "pulse"]
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()  # the first connect fails; the source keeps trying
    runner = ActionRunner(cfg, {"plc": src})
    try:
        t0 = time.monotonic()
        await runner.handle(names, _result("NG", 0), None)  # True to each: fails, waits for its retry
        await asyncio.sleep(0.1)
        await srv.start()
        for _ in range(1500):
            if src.state.value == "connected":
                break
            await asyncio.sleep(0.02)
        assert src.state.value == "connected", src.stats.last_error
        t_ok = time.monotonic()  # timed from here: the PLC's restart and the reconnect are not the product's
        await runner.handle(names, _result("OK", 1), None)  # False: newer than the waiting True
        for _ in range(1500):
            if len(writes) == 2:
                break
            await asyncio.sleep(0.02)
        done_after = time.monotonic() - t_ok
        await runner.flush(timeout_s=45)  # the pulse cut short: its reset written now
        # nothing left to write: a True waiting for its 60-s retry would still be pending (or written, late)
        left = [t.get_coro() for t in runner._pending]
        await asyncio.sleep(0.1)
    finally:
        await src.stop()
        await srv.stop()
    # before: each True was retried after its 5 s backoff and reached the PLC (a reject for a part long
    # gone), before the False or (level, on_change) instead of being followed by it at once
    assert sorted(writes) == [("Change", False), ("Level", False), ("Pulse", False)], writes
    assert left == [], left
    # at once, told apart from the Trues' retries (60 s after their failure); reconnected at t_ok - t0
    assert done_after < 30.0, (done_after, t_ok - t0)
    for name in names:
        st = runner.stats[name]
        assert (st["superseded"], st["ok"], st["failed"]) == (1, 1, 0), (name, dict(st))


async def test_an_older_value_from_another_pipeline_never_lands_after_a_newer_one_on_the_same_node():
    """Two pipelines (two cameras at one reject gate) share one output node: the value decided last wins
    there too, whichever pipeline decided it."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")  # not started: the PLC is away
    await (await obj.add_variable(ua.NodeId("Gate", idx), "Gate", False)).set_writable()
    writes: list[object] = []

    async def on_write(event, _dispatcher) -> None:
        for wv, status in zip(event.request_params.NodesToWrite, event.response_params, strict=True):
            if status.is_good() and wv.NodeId == ua.NodeId("Gate", idx):
                writes.append(wv.Value.Value.Value)

    srv.subscribe_server_callback(CallbackType.PostWrite, on_write)
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                    "reconnect_initial_s": 0.1,
                    "reconnect_max_s": 0.2,
                    "connect_timeout_s": 2.0,
                    "keepalive_check_s": 0.3,
                }
            },
            "actions": {
                "gate": {
                    "type": "opcua_write",
                    "source": "plc",
                    "node_id": f"ns={idx};s=Gate",
                    "when": {"verdict": "NG"},
                    "reset_value": False,
                    # longer than a loaded machine's server start and reconnect (at 5 s, a reconnect slower
                    # than that had the True retried, and written, before the False was decided)
                    "retry": {"max_attempts": 3, "backoff_s": 30.0},
                }
            },
        }
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await runner.handle(["gate"], _result("NG", 0, "camera_a"), None)  # True: fails, waits 30 s
        await asyncio.sleep(0.1)
        await srv.start()
        for _ in range(1500):
            if src.state.value == "connected":
                break
            await asyncio.sleep(0.02)
        assert src.state.value == "connected", src.stats.last_error
        await runner.handle(["gate"], _result("OK", 1, "camera_b"), None)  # False, decided later
        for _ in range(75):
            if writes:
                break
            await asyncio.sleep(0.02)
        await runner.flush(timeout_s=45)  # (a True still waiting for its retry would land within it)
        await asyncio.sleep(0.1)
    finally:
        await src.stop()
        await srv.stop()
    # before: camera_a's True was retried after its backoff, after camera_b's False: the gate ended open on a
    # decision older than the one the PLC had already received
    assert writes == [False], writes
    st = runner.stats["gate"]
    assert (st["superseded"], st["ok"], st["failed"]) == (1, 1, 0), dict(st)
