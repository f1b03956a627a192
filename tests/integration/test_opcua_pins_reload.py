"""OPC UA namespace pins across a config reload and for a namespace array with a null entry. A config reload (a fleet
push) after a namespace reorder the running agent followed: the source whose settings and write targets are
unchanged follows on; one changed is refused as at a start. Real asyncua servers, the real agent host swapping
agents on a desired config."""

from __future__ import annotations

import pytest
import yaml
from asyncua import ua

from devices.base import ConnectionState
from devices.opcua.client import OpcUaNodeError, OpcUaSource
from devices.opcua.settings import OpcUaSettings
from protocols.gen import fleet_pb2 as pb
from tests.support.peers import free_port
from tests.support.waits import until


async def test_a_config_reload_after_a_followed_namespace_reorder_keeps_following_an_unchanged_source(
    tmp_path,
):
    """The running agent followed urn:plc from index 2 to 3 (a PLC restart). A fleet push touching nothing of the
    source made a new agent whose source compared with the kept pins as a start does: every ns= node of it refused
    (neither read nor written) until the config said nsu= or ``--accept``. Now the unchanged source follows on: the
    write reaches urn:plc's moved node. A push that changes the source (its config may have been rewritten for the
    new order) is still refused, as at a start, and writes nothing; one back to the first config follows again."""
    from edge_agent.fleet_config import AgentHost, digest_of
    from tests.support.peers import node_ids_written, two_namespaces_with_a_speed

    port = free_port()
    srv, plc, diag, ours, other = await two_namespaces_with_a_speed(port)
    written = node_ids_written(srv, plc)  # after the restart: urn:diag's
    await srv.start()
    node = f"ns={plc};s=Speed"
    source = {
        "type": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
        "nodes": [{"node_id": node, "tag": "speed"}],
        "publishing_interval_ms": 50,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.5,
        "connect_timeout_s": 2.0,
    }
    local = tmp_path / "gw1.yaml"
    local.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "gw1", "data_dir": str(tmp_path / "gw1")},
                "http": {"enabled": False},
                "sources": {"plc": source},
            }
        )
    )
    host = AgentHost(local, health_s=5.0)
    await host.start()

    def push(name: str, sources: dict) -> None:
        data = yaml.safe_dump({"sources": sources}).encode()
        host._on_desired(pb.DesiredConfig(deployment_id=name, digest=digest_of(data), yaml=data, name=name))

    try:
        first = host.agent
        src = first.sources["plc"]
        await until(lambda: src.state is ConnectionState.CONNECTED and src._tags, 30, "the first connect")
        # the restarted PLC: urn:diag registered before urn:plc; the running source follows the URI
        array = await srv.get_namespace_array()
        array[plc], array[diag] = array[diag], array[plc]
        await srv.nodes.namespace_array.write_value(array)
        src._client.uaclient.protocol.transport.close()
        await until(lambda: src.stats.reconnects >= 1 and src.state is ConnectionState.CONNECTED, 30)
        written.clear()
        await src.write(node, 3.0)
        assert await other.read_value() == 3.0 and written == []
        # a push touching nothing of the source: it follows on (was: refused, "neither read nor written")
        push("d1", {"plc": source})
        await until(lambda: host.agent is not first and host.keeper.state.get("last_good"), 30, "d1 healthy")
        src = host.agent.sources["plc"]
        await until(lambda: src.state is ConnectionState.CONNECTED and src._tags, 30)
        assert not src.node_errors, src.node_errors
        await src.write(node, 4.0)
        assert await other.read_value() == 4.0 and written == [] and await ours.read_value() == 1.0
        # a push changing the source: its ns= index may be written for the new order now: refused, as at a start
        second = host.agent
        push("d2", {"plc": {**source, "nodes": [{"node_id": node, "tag": "speed2"}]}})
        await until(lambda: host.agent is not second, 30, "d2 applied")
        src = host.agent.sources["plc"]
        await until(lambda: node in src.node_errors, 30)
        assert "'urn:diag' now, but was 'urn:plc'" in src.node_errors[node], src.node_errors
        with pytest.raises(OpcUaNodeError, match="neither read nor written"):
            await src.write(node, 5.0)
        assert written == [] and await other.read_value() == 4.0
        # back on the first config (a rollback after such a trial): what its agents followed is followed again
        third = host.agent
        push("d3", {"plc": source})
        await until(lambda: host.agent is not third, 30, "d3 applied")
        src = host.agent.sources["plc"]
        await until(lambda: src.state is ConnectionState.CONNECTED and src._tags, 30)
        await src.write(node, 6.0)
        assert await other.read_value() == 6.0 and written == [] and await ours.read_value() == 1.0
    finally:
        await host.stop()
        await srv.stop()


async def test_a_namespace_array_with_a_null_entry_pins_its_uris_and_a_later_reorder_is_refused(tmp_path):
    """A server leaving an index of its namespace array null (asyncua reads None): the array was taken as unread as
    a whole, so its namespaces were never pinned and the start after a reorder read the other namespace's node of
    the index, GOOD, silently. The URIs it does list are pinned now, and the moved index refused."""
    from asyncua import ua

    from edge_agent.opcua_pins import PINS_FILE, pin_namespaces
    from tests.support.peers import two_namespaces_with_a_speed
    from tests.support.waits import until

    port = free_port()
    srv, plc, diag, _, _ = await two_namespaces_with_a_speed(port)
    await srv.start()
    array = [*(await srv.get_namespace_array()), None]  # an index the server leaves free

    async def serve(array: list) -> None:
        value = ua.DataValue(ua.Variant(array, ua.VariantType.String))
        await srv.write_attribute_value(srv.nodes.namespace_array.nodeid, value)

    await serve(array)
    node = f"ns={plc};s=Speed"
    settings = OpcUaSettings(
        endpoint=f"opc.tcp://127.0.0.1:{port}/plc/",
        nodes=[{"node_id": node, "tag": "speed"}],
        publishing_interval_ms=50,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.5,
        connect_timeout_s=2.0,
    )

    async def start() -> OpcUaSource:  # as the agent makes it at each start
        src = OpcUaSource("plc", settings)
        pin_namespaces(tmp_path, {"plc": src}, {"plc": settings})
        await src.start()
        return src

    src = await start()
    try:
        await until(lambda: src._tags, 30)
    finally:
        await src.stop()
    assert '"urn:plc"' in (tmp_path / PINS_FILE).read_text()  # was: no file, nothing pinned
    array[plc], array[diag] = array[diag], array[plc]  # the PLC restarted: urn:diag first
    await serve(array)
    src = await start()
    try:
        await until(lambda: node in src.node_errors, 30)
        assert "'urn:diag' now, but was 'urn:plc'" in src.node_errors[node] and not src._tags
    finally:
        await src.stop()
        await srv.stop()


async def test_a_source_following_an_earlier_ones_namespaces_keeps_them_where_a_trial_config_left_none(
    tmp_path, monkeypatch
):
    """A trial config naming the PLC by another endpoint (``localhost`` for ``127.0.0.1``) pinned its namespaces
    afresh, in the new order, for that name, and read urn:diag's node as ``ns=2;s=Speed``, GOOD: the pins are the
    server's now (its ApplicationUri), the trial refuses it. A trial that dropped the source left no pins for it
    (another source saving the file): back on the first config, the process followed the order its agent had
    followed, but the next start pinned afresh and read urn:diag's node. The pins followed are kept now: that
    start refuses it."""
    from types import SimpleNamespace

    from devices.opcua.client import OpcUaError, check_server
    from edge_agent import cli
    from edge_agent.opcua_pins import PINS_FILE, NamespacePinFile, pin_file, pin_namespaces
    from tests.support.peers import two_namespaces_with_a_speed

    port = free_port()
    srv, plc, diag, _, _ = await two_namespaces_with_a_speed(port)
    await srv.start()
    node = f"ns={plc};s=Speed"

    def settings(host: str) -> OpcUaSettings:
        return OpcUaSettings(
            endpoint=f"opc.tcp://{host}:{port}/plc/",
            nodes=[{"node_id": node, "tag": "speed"}],
            reconnect_initial_s=0.1,
            connect_timeout_s=2.0,
        )

    monkeypatch.setattr(
        cli, "_load", lambda path: SimpleNamespace(sources={"plc": settings("127.0.0.1")}, data_dir=tmp_path)
    )

    # as an agent of the host runs it: made, given its pins (and what an earlier agent followed), started, stopped
    async def run(host: str, followed=None) -> OpcUaSource:
        src = OpcUaSource("plc", settings(host))
        pin_namespaces(tmp_path, {"plc": src}, {"plc": src.settings})
        if followed is not None:
            src.follow_namespaces(*followed)
        await src.start()
        try:
            await until(lambda: src.state is ConnectionState.CONNECTED and (src._tags or src.node_errors), 30)
        finally:
            await src.stop()
        return src

    try:
        followed = (await run("127.0.0.1")).namespaces_followed()  # pinned: urn:plc at 2
        array = await srv.get_namespace_array()
        array[plc], array[diag] = array[diag], array[plc]  # the PLC restarted: urn:diag first
        await srv.nodes.namespace_array.write_value(array)
        moved = "'urn:diag' now, but was 'urn:plc'"
        trial = await run("localhost")  # the trial: the same server by another endpoint
        assert moved in trial.node_errors.get(node, "") and not trial._tags, trial.node_errors  # was: read
        # a source new to the config on that server while the agent follows the reorder: pinned afresh, it read
        # urn:diag's node as ns=2;s=Speed, GOOD; it takes the pins kept for the server (another source's) now
        new = OpcUaSource("speed2", settings("127.0.0.1"))
        new.namespace_pins = pin_file(tmp_path, "speed2", {"plc": new.settings, "speed2": new.settings})
        await new.start()
        try:
            await until(lambda: new.node_errors or new._tags, 30)
        finally:
            await new.stop()
        assert moved in new.node_errors.get(node, "") and not new._tags, new.node_errors  # was: read
        # one new to the config naming the server by another endpoint finds no pins for it: pinned afresh, it read
        # urn:diag's node; refused now that the server's namespaces are another endpoint's kept, in another order
        other = {"plc": new.settings, "speed3": settings("localhost")}
        named = OpcUaSource("speed3", other["speed3"])
        named.namespace_pins = pin_file(tmp_path, "speed3", other)
        await named.start()
        try:
            await until(lambda: named.stats.errors_by_reason.get("namespaces") or named._tags, 30)
        finally:
            await named.stop()
        assert not named._tags and "speed3" not in (tmp_path / PINS_FILE).read_text()  # was: read
        # `edge-agent validate --online` refuses the source as the agent does (was: its node, the others passed)
        with pytest.raises(OpcUaError, match="agent refuses this connect .*urn:plc was at 2, now at 3"):
            await check_server(named.settings, [], pin_file(tmp_path, "speed3", other, keep=False))
        named.namespace_pins.forget()  # `--accept speed3`: another server, its order taken as found at its start
        assert named.namespace_pins.reordered_elsewhere(await srv.get_namespace_array(), {plc}) is None
        # that trial at a connect where the server's ApplicationUri is not read (its ServerArray refused): by the
        # endpoint alone it pinned afresh, read urn:diag's node and dropped the first endpoint's entry; refused now
        await srv.delete_nodes([srv.get_node(ua.ObjectIds.Server_ServerArray)])
        blind = OpcUaSource("plc", settings("localhost"))
        pin_namespaces(tmp_path, {"plc": blind}, {"plc": blind.settings})
        await blind.start()
        try:
            await until(lambda: blind.stats.errors_by_reason.get("namespaces") or blind._tags, 30)
        finally:
            await blind.stop()
        assert not blind._tags and "127.0.0.1" in (tmp_path / PINS_FILE).read_text()
        # `edge-agent validate --online` of that config refuses it as the agent does (it checked the raw index: the
        # node the agent would never read passed)
        with pytest.raises(OpcUaError, match="ApplicationUri is not given"):
            await check_server(
                blind.settings, [], pin_file(tmp_path, "plc", {"plc": blind.settings}, keep=False)
            )
        # the same with another source's pins kept for localhost: validate took them as this source's (it read the
        # file before the ApplicationUri, the agent after) and passed the config whose connect the agent refuses
        beside = {"plc": blind.settings, "line2": settings("localhost")}
        pin_file(tmp_path, "line2", beside).save({plc: "urn:plc", diag: "urn:diag"})
        with pytest.raises(OpcUaError, match="ApplicationUri is not given"):  # was: passed
            await check_server(blind.settings, [], pin_file(tmp_path, "plc", beside, keep=False))
        # a trial that dropped the source: another OPC UA source's save drops its entry
        NamespacePinFile(tmp_path / PINS_FILE, "line", "opc.tcp://line", frozenset({"line"})).save(
            {2: "urn:x"}
        )
        assert (await run("127.0.0.1", followed))._tags  # back on the first config: followed
        src = await run("127.0.0.1")  # the next start
        assert moved in src.node_errors.get(node, ""), src.node_errors
        assert not src._tags  # was: urn:diag's Speed read
        # `edge-agent namespaces --accept plc`, a config reload (a push touching another part) before the restart
        # it asks for: the reload's source, following the refusing agent's pins, kept them again, and the restart
        # refused as before the accept
        assert cli.main(["namespaces", "agent.yaml", "--accept", "plc"]) == 0
        await run("127.0.0.1", src.namespaces_followed())
        assert (await run("127.0.0.1"))._tags  # the restart: the new order taken, as the accept said
    finally:
        await srv.stop()
