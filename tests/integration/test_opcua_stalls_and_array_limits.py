"""Data and the PLC protected from servers that misbehave, against a real asyncua server on a free loopback
port: a server whose subscription stalls (no data, no keep-alive, the TCP connection up) has its tags turned
BAD as soon as the stall is seen, nothing GOOD while it stays silent, GOOD values again once it publishes; a
server whose clock and values froze for good stays said on the source's status (``halted``: since when,
checks that found it still so), on the agent's ``/status``, by ``edge-agent status`` and as
``edge_source_halted``, not in one log line; and an
array longer than the server's ServerCapabilities.MaxArrayLength is refused naming the node, at connect for a
value fixed in the YAML and at the write, before anything is sent."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.base import Quality
from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch
from edge_agent.actions import write_targets
from edge_agent.agent import Agent
from edge_agent.cli import main
from edge_agent.config import load_config, parse_config
from tests.integration.test_opcua_halt_recovery import _Collect, _stop_clock, _tick
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until


def _settings(port: int, **kw):
    source = {
        "type": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
        "publishing_interval_ms": 50,
        "connect_timeout_s": 0.5,
        "keepalive_check_s": 0.3,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.5,
        **kw,
    }
    return parse_config({"agent": {"id": "gw"}, "sources": {"plc": source}}).sources["plc"]


def _stalls_while(srv, stalled: asyncio.Event) -> None:
    """While ``stalled`` is set, no subscription of the server publishes (no data, no keep-alive), those
    made during it too, from their first publish; its sessions and reads still answer and the TCP connection
    stays up: a stalled PLC runtime. Each subscription is hooked as it is made, before it first publishes."""
    service = srv.iserver.subscription_service
    create = service.create_subscription

    def hook(sub) -> None:
        publish = sub.publish_results

        async def publish_results(requestdata=None) -> bool:
            return False if stalled.is_set() else await publish(requestdata)

        sub.publish_results = publish_results

    async def create_subscription(*args, **kwargs):
        result = await create(*args, **kwargs)
        hook(service.subscriptions[result.SubscriptionId])
        return result

    service.create_subscription = create_subscription


async def test_a_stalled_subscription_turns_its_tags_bad_at_once_and_they_are_good_again_once_it_publishes() -> (
    None
):
    """The server's subscriptions stop publishing (no data, no keep-alive) while its TCP connection and its
    sessions stay up, and stay so through the source's reconnects: as soon as the stall is seen, the tag gets
    a BAD reading, nothing GOOD follows while the server stays silent, and the source says it is halted for a
    stalled subscription; once the server publishes again, the value written meanwhile comes GOOD. Before,
    the source reconnected but passed nothing BAD: downstream took the last GOOD value as current."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:stall", "Line")
    var = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    stalled = asyncio.Event()
    _stalls_while(srv, stalled)
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Speed"}]))
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: out.got, 30, "the first value")
        stalled.set()
        await var.write_value(2.0)
        await until(lambda: any(r.quality is Quality.BAD for r in out.got), 30, "a BAD reading for the stall")
        await until(lambda: src.stats.reconnects >= 2, 20, "reconnects while the server stays silent")
        halted = src.halted
        while_silent = list(out.got)
        stalled.clear()
        await until(
            lambda: any(r.value == 2.0 and r.quality is Quality.GOOD for r in out.got),
            20,
            "the value written meanwhile, GOOD, once the server publishes",
        )
        after = src.halted
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    assert while_silent[0].value == 1.0 and while_silent[0].quality is Quality.GOOD, while_silent
    first_bad = next(i for i, r in enumerate(while_silent) if r.quality is Quality.BAD)
    assert while_silent[first_bad].tag == "Speed" and while_silent[first_bad].value is None, while_silent
    assert [r for r in while_silent[first_bad:] if r.quality is Quality.GOOD] == [], while_silent
    assert halted is not None and halted["reason"] == "subscription_stalled", halted
    assert src.stats.errors_by_reason.get("stalled", 0) >= 1, src.stats.errors_by_reason
    assert after is None, after


async def test_a_server_frozen_for_good_stays_said_on_status_after_its_first_warning(
    tmp_path: Path, capsys
) -> None:
    """A server's clock moved (every 0.3 s) and then stands still for good, its values too (a frozen runtime
    whose OPC UA stack lives on): the source halts once, reconnects, and the new session's clock never moves,
    so it is never judged again. The agent's /status shows the halt continuing (reason, since when, a count of
    the checks that found it still so, growing), and ``edge-agent status`` prints it. Before, one warning and
    one error count said it; then the source showed "connected" with nothing more, for as long as it lasted."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:freeze", "Line")
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    await _stop_clock(srv)
    ticker = asyncio.create_task(_tick(srv, 0.3, []))
    source = {
        "type": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
        "connect_timeout_s": 2,
        "keepalive_check_s": 0.3,
        "nodes": [{"node_id": f"ns={idx};s=Speed"}],
    }
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
                "http": {"port": 0},
                "sources": {"plc": source},
            }
        )
    )
    try:
        await agent.start()
        src = agent.sources["plc"]
        await until(lambda: src.clock_period_s, 30, "the server's clock period learned")
        ticker.cancel()
        await until(lambda: src.stats.reconnects >= 1, 20, "the halt and its reconnect")
        await until(lambda: src.state.value == "connected", 30, "connected again")
        await until(lambda: (src.halted or {}).get("checks", 0) >= 2, 30, "checks that found it still halted")
        first = agent.status()["sources"]["plc"].get("halted")
        await until(
            lambda: (src.halted or {}).get("checks", 0) > (first or {}).get("checks", 0) + 2,
            30,
            "more checks that found it still halted",
        )
        later = agent.status()["sources"]["plc"].get("halted")
        agent.metrics.refresh(agent)
        metrics = agent.metrics.exposition().decode()
        assert agent.http is not None
        capsys.readouterr()
        said = await asyncio.to_thread(main, ["status", "--url", f"http://127.0.0.1:{agent.http.port}"])
        printed = capsys.readouterr().out
    finally:
        ticker.cancel()
        await agent.stop()
        await srv.stop()
    assert src.stats.errors_by_reason.get("server_clock_frozen") == 1, src.stats.errors_by_reason
    assert first is not None and first["reason"] == "server_clock_frozen", first
    assert later is not None and later["since"] == first["since"] and later["checks"] > first["checks"], later
    assert dt.datetime.fromisoformat(later["since"]).tzinfo is not None, later
    assert 'edge_source_halted{source="plc"} 1.0' in metrics, metrics
    assert said == 0 and f"halted: server_clock_frozen since {later['since']}" in printed, printed


_CONFIG = """\
agent: {{id: gw}}
sources:
  plc:
    type: opcua
    endpoint: opc.tcp://127.0.0.1:{port}/plc/
    connect_timeout_s: 2
    keepalive_check_s: 0.3
actions:
  profile:
    type: opcua_write
    source: plc
    node_id: ns=2;s=Profile
    value: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  short:
    type: opcua_write
    source: plc
    node_id: ns=2;s=Short
    value: [1.0, 2.0, 3.0]
"""


async def test_an_array_longer_than_the_servers_max_array_length_is_refused_naming_the_node_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    """The server states ServerCapabilities.MaxArrayLength 4 (its nodes none of their own): a 6-element
    array fixed in the YAML is named at connect (target_errors) with the server's limit and its length, a
    write of it is refused the same way (OpcUaTypeMismatch) and never reaches the server, a 4-element one is
    written, and a 3-element value elsewhere is fine. Before, the limit was not read: the long array was
    sent, refused by a strict server with an opaque Bad status or cut by a lax one."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    assert idx == 2
    nodes = {}
    for name in ("Profile", "Short"):
        nodes[name] = await obj.add_variable(
            ua.NodeId(name, idx), name, ua.Variant([0.0, 0.0], ua.VariantType.Double)
        )
        await nodes[name].write_value_rank(1)
        await nodes[name].set_writable()
    await srv.write_attribute_value(
        ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_MaxArrayLength),
        ua.DataValue(ua.Variant(4, ua.VariantType.UInt32)),
    )
    sent: list[tuple[str, int]] = []

    async def on_write(event, _dispatcher) -> None:
        sent.extend(
            (wv.NodeId.Identifier, len(wv.Value.Value.Value or []))
            for wv in event.request_params.NodesToWrite
            if wv.NodeId.NamespaceIndex == idx
        )

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    await srv.start()
    path = tmp_path / "agent.yaml"
    path.write_text(_CONFIG.format(port=port))
    cfg = load_config(path)
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(node_id, value) for _, node_id, value in write_targets(cfg)["plc"]])
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        errors = dict(src.target_errors)
        with pytest.raises(OpcUaTypeMismatch) as refused:
            await src.write("ns=2;s=Profile", cfg.actions["profile"].value)
        await src.write("ns=2;s=Profile", [1.0, 2.0, 3.0, 4.0])
        await src.write("ns=2;s=Short", cfg.actions["short"].value)
        profile, short = await nodes["Profile"].read_value(), await nodes["Short"].read_value()
    finally:
        await src.stop()
        await srv.stop()
    assert set(errors) == {"ns=2;s=Profile"}, errors
    said = errors["ns=2;s=Profile"]
    assert "ns=2;s=Profile" in said and "the server's MaxArrayLength" in said and "6 elements" in said, said
    assert "at most 4" in said, said
    assert "ns=2;s=Profile" in str(refused.value) and "the server's MaxArrayLength" in str(refused.value)
    assert sent == [("Profile", 4), ("Short", 3)], sent
    assert profile == [1.0, 2.0, 3.0, 4.0] and short == [1.0, 2.0, 3.0], (profile, short)


async def test_a_server_answering_one_request_at_a_time_behind_slow_reads_is_not_taken_for_stalled(
    monkeypatch,
):
    """A PLC's stack answers one request at a time (asyncua's server does, per connection), each read of a large
    node taking 0.25 s: eight of them queued take 2 s, twice ``connect_timeout_s``, each answered in time. The
    session check's read of the server state waits behind them; it was given ``connect_timeout_s`` alone, the PLC
    taken for a stalled one (``server_not_answering``), its tags turned BAD and the session made again, over and
    over on a line that reads that much. The wait is counted from the last answer to a request ahead of it: the
    session stays up, nothing said halted. The check sends its read once, and waits for that one: sent again at each
    wait, the read given up on stayed queued, answered for nothing, the new one behind it. A server whose reads then
    hang (its publishes go on) is still said stalled."""
    from asyncua.server.internal_session import InternalSession

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:serial", "Line")
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    large = await obj.add_variable(ua.NodeId("Recipe", idx), "Recipe", 0.0)
    await srv.start()
    read, done, hung = InternalSession.read, [0], asyncio.Event()
    state = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
    state_alone = [0]  # Reads of the server state alone (the periodic check reads its clock beside it)

    async def slow_read(self, params):
        while hung.is_set():
            await asyncio.sleep(0.05)
        if [r.NodeId for r in params.NodesToRead] == [state]:
            state_alone[0] += 1
        got = await read(self, params)
        if any(r.NodeId == large.nodeid for r in params.NodesToRead):
            await asyncio.sleep(0.25)
            done[0] += 1
        return got

    monkeypatch.setattr(InternalSession, "read", slow_read)
    src = OpcUaSource("plc", _settings(port, connect_timeout_s=1.0, nodes=[{"node_id": f"ns={idx};s=Speed"}]))
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "connected")
        client = src._client
        assert client is not None
        reads = [
            asyncio.ensure_future(client.uaclient.read_attributes([large.nodeid], ua.AttributeIds.Value))
            for _ in range(8)
        ]
        # each read's task sends its request at its first step, run in order before this one goes on
        await asyncio.sleep(0)
        checked = await src._read_state(client, [state])  # queued behind them: answered after about 2 s
        assert checked[0].StatusCode.is_good(), checked
        await asyncio.gather(*reads, return_exceptions=True)  # (the later ones not answered within 1 s)
        await until(lambda: done[0] == 8, 30, "the server answered the eight reads")
        assert state_alone[0] == 1, state_alone  # was: 2, sent again after the first second
        checks = src.stats.reconnects, src.halted, src._client is client
        hung.set()
        await until(
            lambda: (src.halted or {}).get("reason") == "server_not_answering", 30, "a hung server said"
        )
    finally:
        hung.clear()
        await src.stop()
        await srv.stop()
    assert checks == (0, None, True), checks
    assert "server_not_answering" not in src.stats.errors_by_reason, src.stats.errors_by_reason
