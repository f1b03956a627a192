"""A pass signal is reset for every UNSURE part, whatever other action writes its node. Left to an action on UNSURE
writing its node, it kept the last OK part's ``true`` wherever that action wrote nothing: a divert on UNSURE parts
``not: {score: {gte: 0.6}}`` (true of a part no model judged, and of one scoring 0.0) skips an UNSURE part scoring
0.7, and a PLC reading the pass passed that part. The pass's reset is written first, the divert's code after it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edge_agent.actions import ActionRunner
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support.results import result
from tests.support.waits import until


class _Plc:
    def __init__(self) -> None:
        self.written: list = []
        self.stats = SimpleNamespace(reconnects=0)

    async def write(self, node_id, value, at=None):
        self.written.append(value)


_OUT = {"type": "opcua_write", "source": "plc", "node_id": "ns=2;s=Part"}


def _pass_and_divert(tmp_path, divert: dict):
    """A camera pipeline ``p`` with an on_change pass on ``_OUT`` and ``divert`` (a level output on UNSURE parts, on
    its node unless it says another), sources ``plc`` and ``plc2`` on one PLC's endpoint."""
    return parse_config(
        {
            "agent": {"id": "gw", "data_dir": str(tmp_path)},
            "trusted_keys": ["k.pub"],
            "sources": {
                "plc": {"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"},
                "plc2": {"type": "opcua", "endpoint": "opc.tcp://localhost:4840"},
                "cam": {"type": "camera", "url": "folder:///nonexistent"},
            },
            "models": {"m": {"package": "m.edgepkg"}},
            "actions": {
                "pass": {**_OUT, "mode": "on_change", "when": {"verdict": "OK"}},
                "divert": {**_OUT, "value": 3, "mode": "level", **divert},
            },
            "pipelines": [{"name": "p", "source": "cam", "model": "m", "actions": ["pass", "divert"]}],
        },
        local_checks=False,  # no package here: the actions are what is checked
    )


async def test_a_pass_beside_an_unsure_action_skipping_the_part_is_reset(tmp_path):
    cfg = _pass_and_divert(tmp_path, {"when": {"verdict": "UNSURE", "not": {"score": {"gte": 0.6}}}})
    (p,) = cfg.pipelines
    agent = Agent(cfg)
    plc = _Plc()
    agent.actions = runner = ActionRunner(cfg, {"plc": plc})
    on_result = agent._make_on_result(p)
    await on_result(result("OK", 0, pipeline="p", source="cam", score=0.1), None)
    await until(lambda: plc.written == [True], what="the OK part passed")
    await on_result(result("UNSURE", 1, pipeline="p", source="cam", score=0.7), None)
    await until(lambda: plc.written == [True, False], what="the UNSURE part scoring 0.7 not passed")
    await on_result(result("UNSURE", 2, pipeline="p", source="cam", score=0.2), None)
    await until(lambda: plc.written[-1] == 3, what="the UNSURE part scoring 0.2 diverted, after the reset")
    await on_result(result("OK", 3, pipeline="p", source="cam", score=0.1), None)
    await until(lambda: plc.written[-1] is True, what="the next OK part passed again")
    await runner.flush(timeout_s=5)


async def test_an_on_change_pass_two_pipelines_write_is_written_again_after_the_others_value():
    """Two cameras' pipelines, one ``on_change`` pass node (two lanes, one station): an NG part of one after the
    other's OK part writes its reset. It wrote nothing (its own level was already false): the node held the other's
    ``true`` and the PLC passed the NG part. A PLC restarted is sent the node's newest value alone: b's older ``true``
    sent after it was what it kept."""
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {"plc": {"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"}},
            "actions": {
                "pass": {
                    "type": "opcua_write",
                    "source": "plc",
                    "node_id": "ns=2;s=Part",
                    "mode": "on_change",
                    "when": {"verdict": "OK"},
                }
            },
        }
    )
    plc = _Plc()
    runner = ActionRunner(cfg, {"plc": plc})
    await runner.handle(["pass"], result("NG", 0, pipeline="a"), None)
    await runner.handle(["pass"], result("OK", 1, pipeline="b"), None)
    await until(lambda: plc.written == [False, True], what="b's OK part passed")
    await runner.handle(["pass"], result("NG", 2, pipeline="a"), None)
    await until(lambda: plc.written == [False, True, False], what="a's NG part not passed")
    # the PLC restarted: the node's newest value is sent again, not b's older true after it
    plc.stats.reconnects += 1
    await runner.handle([], result("NG", 3, pipeline="c"), None)
    await until(lambda: not runner._pending, what="the values sent again")
    assert plc.written[3:] == [False], plc.written
    await runner.handle(["pass"], result("OK", 4, pipeline="a"), None)
    await until(lambda: plc.written[-1] is True, what="a's OK part passed")
    await runner.flush(timeout_s=5)


@pytest.mark.parametrize(
    "divert_at",
    [("plc", "ns=2;s=Part"), ("plc", " ns=2; s=Part"), ("plc2", "ns=2;s=Part")],
    ids=["one spelling", "spelt with spaces", "through a second session"],
)
async def test_a_value_waiting_for_its_nodes_type_is_not_written_after_a_newer_value_of_the_node(
    tmp_path, divert_at
):
    """An OK part's pass ``true`` waits for its node's type (read at the first write after a connect: its reset is
    judged by it); meanwhile the next part, UNSURE, writes the divert's code 3 to that node. The ``true`` then went
    out after the 3 and the pass's reset (``false``, older than the 3) was dropped as superseded: the PLC read the
    UNSURE part passed. A value older than one written to its node is never sent, the node however spelt in one
    namespace and through whichever source on the PLC's endpoint."""
    import asyncio

    source, node_id = divert_at
    cfg = _pass_and_divert(tmp_path, {"source": source, "node_id": node_id, "when": {"verdict": "UNSURE"}})
    asked, typed = asyncio.Event(), asyncio.Event()

    class _SlowTypePlc(_Plc):
        async def ensure_type(self, node_id):
            asked.set()
            await typed.wait()

    plc = _SlowTypePlc()
    agent = Agent(cfg)
    agent.actions = runner = ActionRunner(cfg, {"plc": plc, "plc2": plc})
    on_result = agent._make_on_result(cfg.pipelines[0])
    await on_result(result("OK", 0, pipeline="p", source="cam", score=0.1), None)
    await until(asked.is_set, what="the pass's true waiting for its node's type")
    await on_result(result("UNSURE", 1, pipeline="p", source="cam", score=0.5), None)
    await until(lambda: 3 in plc.written, what="the UNSURE part diverted")
    typed.set()
    await runner.flush(timeout_s=5)
    assert plc.written[-1] == 3, plc.written


class _Session(_Plc):
    """One of two sessions on one PLC: its write of ``stalls`` goes unanswered until ``answered`` is set; ``taken``
    (shared) is what the PLC took, in its order; ``typed``, when given, holds the node's type read."""

    def __init__(self, stalls, answered, taken, typed=None, asked=None, refuses=False) -> None:
        super().__init__()
        self.stalls, self.answered, self.taken, self.typed, self.asked = stalls, answered, taken, typed, asked
        self.refuses = refuses  # the stalled write, once answered, is refused (a retry cannot fix it)

    async def ensure_type(self, node_id):
        if self.typed is not None:
            self.asked.set()
            await self.typed.wait()

    async def write(self, node_id, value, at=None):
        if type(value) is type(self.stalls) and value == self.stalls and not self.answered.is_set():
            self.written.append(value)  # sent
            await self.answered.wait()
            if self.refuses:
                raise _Refused(f"{value!r} refused")
        self.taken.append(value)


class _Refused(Exception):
    retryable = False  # as the source's refused write (Bad_UserAccessDenied, Bad_NotWritable)


def _two_sessions(cfg, stalls, **waits):
    """(session plc, session plc2, runner, pipeline p's on_result) of ``cfg``, each session stalling on ``stalls``."""
    import asyncio

    answered, taken = asyncio.Event(), []
    one, two = (_Session(stalls, answered, taken, **waits) for _ in range(2))
    agent = Agent(cfg)
    agent.actions = runner = ActionRunner(cfg, {"plc": one, "plc2": two})
    return one, two, runner, agent._make_on_result(cfg.pipelines[0])


async def test_a_nodes_write_stalled_on_one_session_holds_no_newer_value_through_another_and_lands_first(
    tmp_path,
):
    """A pass through one session and a divert on UNSURE through another on the same PLC: the OK part's ``true``
    stalls (the session is up, its write unanswered). The UNSURE part's code 3 goes out at once through the healthy
    session; it waited for the stalled write's answer, up to its timeout, the PLC keeping the older value (it read
    the UNSURE part passed) meanwhile. Once the stalled write is answered the 3 is written again: two sessions do
    not keep the order their writes were sent in, and the ``true`` taken last was what the PLC kept."""
    cfg = _pass_and_divert(tmp_path, {"source": "plc2", "when": {"verdict": "UNSURE"}})
    one, _, runner, on_result = _two_sessions(cfg, True)
    taken = one.taken  # what the PLC took, in its order
    await on_result(result("OK", 0, pipeline="p", source="cam", score=0.1), None)
    await until(lambda: one.written == [True], what="the OK part's pass sent")
    await on_result(result("UNSURE", 1, pipeline="p", source="cam", score=0.5), None)
    await until(lambda: taken == [3], what="the divert taken while the pass's write is unanswered")
    # the next part's divert is not held either by the first one's waiting to write its 3 again
    await on_result(result("UNSURE", 2, pipeline="p", source="cam", score=0.5), None)
    await until(
        lambda: taken == [3, 3], what="the next part's divert taken, the pass's write still unanswered"
    )
    one.answered.set()  # the stalled true lands last
    await runner.flush(timeout_s=5)
    assert taken == [3, 3, True, 3], taken
    assert runner.stats["divert"]["written_again"] == 1, runner.stats["divert"]
    assert runner.stats["divert"]["waited_for_node"] == 0, runner.stats["divert"]


async def test_an_older_value_behind_a_newer_one_stalled_on_another_session_holds_nothing_back(tmp_path):
    """An OK part's pass ``true`` through one session waits for its node's type; the next part's divert code 3 goes
    out through another session and stalls there. The ``true``, older than the 3, is never sent (it could land
    last), and does not wait for the 3's answer either: the part after, OK, has its pass ``true`` taken at once."""
    import asyncio

    cfg = _pass_and_divert(tmp_path, {"source": "plc2", "when": {"verdict": "UNSURE"}})
    asked, typed = asyncio.Event(), asyncio.Event()
    _, two, runner, on_result = _two_sessions(cfg, 3, typed=typed, asked=asked)
    taken = two.taken
    await on_result(result("OK", 0, pipeline="p", source="cam", score=0.1), None)
    await until(asked.is_set, what="the pass's true waiting for its node's type")
    await on_result(result("UNSURE", 1, pipeline="p", source="cam", score=0.5), None)
    await until(lambda: two.written == [3], what="the divert sent, unanswered")
    typed.set()
    await on_result(result("OK", 2, pipeline="p", source="cam", score=0.1), None)
    await until(lambda: taken == [True], what="the next OK part's pass taken while the divert is unanswered")
    two.answered.set()
    await runner.flush(timeout_s=5)
    assert taken == [True, 3, True], taken


async def test_an_older_value_behind_a_newer_one_refused_on_another_session_is_written_once_it_is_refused(
    tmp_path,
):
    """An OK part's pass ``true`` through one session waits for its node's type; the next part's divert code 3 goes
    out through another session, stalls there, and is refused at last (that session's user may not write the node).
    The ``true`` and the UNSURE part's pass reset ``false`` (both older than the 3) wait for that answer and then go
    out, as they did before the two sessions' writes went side by side: dropped because the 3 was in flight, the
    node kept the value from before all three (nothing, here) for good, the pass reset never written."""
    import asyncio

    cfg = _pass_and_divert(tmp_path, {"source": "plc2", "when": {"verdict": "UNSURE"}})
    asked, typed = asyncio.Event(), asyncio.Event()
    _, two, runner, on_result = _two_sessions(cfg, 3, typed=typed, asked=asked)
    two.refuses = True
    await on_result(result("OK", 0, pipeline="p", source="cam", score=0.1), None)
    await until(asked.is_set, what="the pass's true waiting for its node's type")
    await on_result(result("UNSURE", 1, pipeline="p", source="cam", score=0.5), None)
    await until(lambda: two.written == [3], what="the divert sent, unanswered")
    typed.set()
    two.answered.set()
    await runner.flush(timeout_s=30)
    assert two.taken == [True, False], two.taken
    assert runner.stats["divert"]["failed"] == 1, runner.stats["divert"]
