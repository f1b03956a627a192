"""Where a refusal at the write of an output's reset is named when the file has no ``reset_value`` line (the
opposite of a boolean ``value``): at ``value (its reset)``, not at a ``reset_value`` the file does not have (review
/work/notes61/review_plc/findings.md MEDIUM 1: the field was guessed from ``repr`` of the value written). The
node's refusal of the reset only is played by a source whose write refuses false; the OPC UA server's part of a
refusal at the write is in tests/integration/test_plc_write_refusals.py."""

from __future__ import annotations

import logging
import time

from devices.opcua.client import OpcUaTypeMismatch
from edge_agent.actions import ActionRunner
from edge_agent.config import parse_config, read_yaml
from edge_agent.types import Result


class _RefusesFalse:
    """An OPC UA source whose node takes true and refuses false (a PLC program's limit), at the write."""

    def __init__(self) -> None:
        self.written: list = []

    async def write(self, node_id, value, at=None):
        if value is False:
            raise OpcUaTypeMismatch(f"opcua source plc: node {node_id} refuses False")
        self.written.append(value)


def _result(verdict, seq):
    now = time.time()
    return Result(
        pipeline="p",
        source="s",
        item_seq=seq,
        captured_at=now,
        model="m",
        model_version="1",
        engine="e",
        verdict=verdict,
        score=1.0,
        label="x",
        finished_at=now,
    )


async def test_the_reset_of_a_boolean_value_with_no_reset_value_line_is_named_at_value(caplog):
    where = "/etc/edge/line1.yaml"
    text = (
        "agent: {id: gw}\n"
        "sources:\n  plc: {type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840'}\n"
        "actions:\n"
        "  gate: {type: opcua_write, source: plc, node_id: 'ns=2;s=Gate', value: true, mode: on_change,"
        " when: {verdict: NG}}\n"
    )
    cfg = parse_config(read_yaml(text, where), where)
    src = _RefusesFalse()
    runner = ActionRunner(cfg, {"plc": src})
    caplog.set_level(logging.WARNING, logger="edge_agent.actions")
    await runner.handle(["gate"], _result("NG", 0), None)
    await runner.flush(timeout_s=5)
    await runner.handle(["gate"], _result("OK", 1), None)
    await runner.flush(timeout_s=5)
    said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
    assert src.written == [True]
    line = [s for s in said if "refuses False" in s]
    assert len(line) == 1 and line[0].startswith(
        f"{where}: actions.gate.value (its reset): action 'gate' failed"
    ), said
