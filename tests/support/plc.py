"""A PLC for write-back tests: a real asyncua server on a free loopback port with writable variables of the types
asked for, and the agent's side of it (its opcua source, told its write targets as the agent tells it, and an
``ActionRunner``), connected. The PLC write tests (enumerations, variables' values, write_failing) each built both
by hand."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
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


@contextlib.asynccontextmanager
async def plc(variables: dict[str, ua.Variant]) -> AsyncIterator[Plc]:
    """A started server with one writable variable a name (``ns=<idx>;s=<name>``), each holding its variant."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    nodes = {}
    for name, variant in variables.items():
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, variant)
        await nodes[name].set_writable()
    await srv.start()
    try:
        yield Plc(port, srv, idx, nodes)
    finally:
        await srv.stop()


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
        await until(lambda: src.state.value == "connected", 10, "connected")
        yield src, runner
    finally:
        await src.stop()
