"""A PLC for write-back tests: a real asyncua server on a free loopback port with writable variables of the types
asked for, and the agent's side of it (its opcua source, told its write targets as the agent tells it, and an
``ActionRunner``), connected. The PLC write tests (enumerations, variables' values, write_failing) each built both
by hand."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from asyncua import ua

from tests.support.peers import free_port, opcua_server
from tests.support.waits import until


@dataclasses.dataclass
class Plc:
    port: int
    server: Any
    idx: int
    nodes: dict[str, Any]  # name -> its asyncua node

    def node_id(self, name: str) -> str:
        return f"ns={self.idx};s={name}"

    async def read(self) -> dict[str, Any]:
        """What each node holds now."""
        return {n: await node.read_value() for n, node in self.nodes.items()}

    def config_file(
        self, folder: Path, writes: dict[str, tuple[str, str]] | None = None, more: str = ""
    ) -> Path:
        """``line1.yaml`` in ``folder``: an agent whose one opcua source ``plc`` is this PLC, with an opcua_write
        action per ``writes`` entry (action -> (node, its value as the YAML writes it, with any further options
        after it: ``"false, mode: on_change"``)), then ``more`` (action lines as written, indented)."""
        path = folder / "line1.yaml"
        path.write_text(
            "agent: {id: gw}\n"
            "sources:\n"
            f'  plc: {{type: opcua, endpoint: "opc.tcp://127.0.0.1:{self.port}/plc/", connect_timeout_s: 2.0}}\n'
            "actions:\n"
            + "".join(
                f'  {a}: {{type: opcua_write, source: plc, node_id: "{self.node_id(n)}", value: {v}}}\n'
                for a, (n, v) in (writes or {}).items()
            )
            + more
        )
        return path


@contextlib.asynccontextmanager
async def plc(variables: dict[str, ua.Variant]) -> AsyncIterator[Plc]:
    """A started server with one writable variable a name (``ns=<idx>;s=<name>``), each holding its variant."""

    async def build(_srv: Any, idx: int, obj: Any) -> dict[str, Any]:
        return {name: await obj.add_variable(ua.NodeId(name, idx), name, v) for name, v in variables.items()}

    async with plc_server(build) as p:
        yield p


@contextlib.asynccontextmanager
async def plc_server(build: Callable[[Any, int, Any], Awaitable[dict[str, Any]]]) -> AsyncIterator[Plc]:
    """A started server whose variables ``build(server, idx, plc_object)`` adds (name -> node: an enumeration's, a
    multi-state node with its properties), each made writable."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    nodes = await build(srv, idx, obj)
    for node in nodes.values():
        await node.set_writable()
    await srv.start()
    try:
        yield Plc(port, srv, idx, nodes)
    finally:
        await srv.stop()


def only_the_current_view(monkeypatch: Any, asked: list[str] | None = None) -> None:
    """asyncua's server (the test's ``monkeypatch``) answers a Browse not of the current view (a View Timestamp not
    null) BadViewIdUnknown for the whole Browse, as an OPC Foundation .NET server does; each node a Browse asks is
    added to ``asked`` as ``browse <its identifier>`` when given."""
    from asyncua.server.internal_session import InternalSession

    browse = InternalSession.browse

    async def dotnet_browse(self: Any, params: ua.BrowseParameters) -> Any:
        if asked is not None:
            asked.extend(f"browse {d.NodeId.Identifier}" for d in params.NodesToBrowse)
        if params.View.Timestamp != ua.get_win_epoch():
            raise ua.UaStatusCodeError(ua.StatusCodes.BadViewIdUnknown)
        return await browse(self, params)

    monkeypatch.setattr(InternalSession, "browse", dotnet_browse)


@contextlib.asynccontextmanager
async def opcua_source(p: Plc, expect: list | None = None, **settings: Any) -> AsyncIterator[Any]:
    """An opcua source ``plc`` on ``p`` (``settings`` beside a 2 s connect timeout and a 0.3 s keep-alive check),
    told ``expect`` as its write targets, started and connected. Stopped on the way out."""
    from devices.opcua.client import OpcUaSource
    from devices.opcua.settings import OpcUaSettings

    settings = {"connect_timeout_s": 2.0, "keepalive_check_s": 0.3, **settings}
    src = OpcUaSource("plc", OpcUaSettings(endpoint=f"opc.tcp://127.0.0.1:{p.port}/plc/", **settings))
    if expect is not None:
        src.expect_writes(expect)
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 30, "connected")
        yield src
    finally:
        await src.stop()


@contextlib.asynccontextmanager
async def agent_side(
    cfg: Any,
    events: list | None = None,
    state_dir: Path | None = None,
    recovered_after_s: float | None = None,
) -> AsyncIterator[tuple[Any, Any]]:
    """(source, runner) for ``cfg``'s opcua source ``plc``, connected: the source told the actions' write targets
    as the agent tells it (``expect_writes``), the runner's events into ``events``. Stopped on the way out."""
    from devices.opcua.client import OpcUaSource
    from edge_agent.actions import ActionRunner, expect_writes

    src = OpcUaSource("plc", cfg.sources["plc"])
    expect_writes(cfg, {"plc": src})
    runner = ActionRunner(
        cfg, {"plc": src}, on_event=events.append if events is not None else None, state_dir=state_dir
    )
    if recovered_after_s is not None:
        runner.write_recovered_after_s = recovered_after_s
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 30, "connected")
        yield src, runner
    finally:
        await src.stop()
