"""A swap's helper process (ONNX Runtime's memory preflight, OpenVINO's conversion) runs ``HELPER_NICE`` steps below
the agent's event loop: the share of a busy gateway's cores it was measured and chosen for (``runtimes``: a
preflight behind three busy processes on 2 cores took 2.2 s at niceness 5, 27 s at 10). It ran 10 steps below: set
to niceness 5 by the agent from a model's loading thread (already 5 below the loop, whose niceness a child takes),
then lowered by 5 more by its own first lines; a restarted agent's swap behind a busy CI's other workers outlasted
its test's 60 s."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from edge_agent.priority import lower_this_thread, thread_nice
from model_packager import runtimes

# the helpers' own first lines (runtimes._HELPER_PRELUDE), run when told: before or after the agent sets the
# helper's priority, as either may come first
_CODE = (
    "import os, resource, sys\n"
    "sys.stdin.readline()\n" + runtimes._HELPER_PRELUDE + "print('begun', flush=True)\n"
    "sys.stdin.readline()\n"
    "print(os.getpriority(os.PRIO_PROCESS, 0), flush=True)\n"
)


def _helper_nice(agent_first: bool) -> int:
    """Start a helper as the runtimes start one and return the niceness it runs at."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if agent_first:
            runtimes._lower_priority(proc.pid, runtimes.PREFLIGHT_NICE)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "begun"
        if not agent_first:
            runtimes._lower_priority(proc.pid, runtimes.PREFLIGHT_NICE)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("agent_first", [True, False], ids=["set-then-begun", "begun-then-set"])
@pytest.mark.parametrize("lowered", [True, False], ids=["from-a-loading-thread", "from-the-loop-thread"])
def test_a_helper_runs_helper_nice_steps_below_the_agents_loop_whichever_thread_starts_it(
    lowered, agent_first
):
    main = thread_nice(os.getpid())
    if main is None or main + runtimes.HELPER_NICE > 19:
        pytest.skip("niceness cannot be read here, or this process is too nice to lower a helper below it")
    got: list[int] = []

    def start() -> None:
        if lowered:
            assert (
                lower_this_thread()
            )  # as a model's loading thread is (edge_agent.priority.in_lowered_thread)
        got.append(_helper_nice(agent_first))

    t = threading.Thread(target=start)
    t.start()
    t.join(30)
    assert got == [
        main + runtimes.HELPER_NICE
    ]  # (was: 10 below an agent at 0, as a loading thread starts it)
