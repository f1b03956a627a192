"""A ``pulse`` pass signal left to an action on UNSURE writing its node (a level false on UNSURE): an UNSURE part
while the pass's pulse is still high has the action write false over it; the next OK part's rising edge extends the
pulse and writes its value again. Before, it extended the pulse and wrote nothing: the PLC read the action's false
for the OK part (no pulse), until the pulse ended."""

from __future__ import annotations

from edge_agent.actions import ActionRunner
from edge_agent.config import parse_config
from tests.support.results import result
from tests.support.waits import until


class _Plc:
    def __init__(self) -> None:
        self.written: list = []

    async def write(self, node_id, value, at=None):
        self.written.append(value)


async def test_a_pulse_written_over_by_an_unsure_action_is_written_again_at_the_next_ok_part():
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {"plc": {"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"}},
            "actions": {
                "pass": {
                    "type": "opcua_write",
                    "source": "plc",
                    "node_id": "ns=2;s=Pass",
                    "mode": "pulse",
                    "pulse_ms": 600_000,  # high for the whole test: ended by flush()
                    "when": {"verdict": "OK"},
                },
                "unsure": {
                    "type": "opcua_write",
                    "source": "plc",
                    "node_id": "ns=2;s=Pass",
                    "value": False,
                    "mode": "level",
                    "when": {"verdict": "UNSURE"},
                },
            },
        }
    )
    plc = _Plc()
    runner = ActionRunner(cfg, {"plc": plc})
    names = ["pass", "unsure"]
    await runner.handle(names, result("OK", 0), None)
    await until(lambda: plc.written == [True], what="the OK part's pulse")
    # an UNSURE part: the pass is handed over as written over (``Agent._make_on_result``), the action writes false
    await runner.handle(names, result("UNSURE", 1), None, written_over=["pass"])
    await until(lambda: plc.written == [True, False], what="the UNSURE part's false")
    await runner.handle(names, result("OK", 2), None)
    await until(lambda: plc.written == [True, False, True], what="the next OK part's pulse written again")
    await runner.flush(timeout_s=5)
    assert plc.written[-1] is False  # the pulse's end
