"""A swap's helper process (ONNX Runtime's memory preflight, OpenVINO's conversion) runs ``HELPER_NICE`` steps below
the agent's event loop: the share of a busy gateway's cores it was measured and chosen for (``runtimes``: a
preflight behind three busy processes on 2 cores took 2.2 s at niceness 5, 27 s at 10). It ran 10 steps below: set
to niceness 5 by the agent from a model's loading thread (already 5 below the loop, whose niceness a child takes),
then lowered by 5 more by its own first lines; a restarted agent's swap behind a busy CI's other workers outlasted
its test's 60 s.

The real preflight helper is started here as a swap starts it (``runtimes.ort_preflight`` on a small model) and its
niceness read from /proc while it runs: what the agent sets, not what a helper function would set if called."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge_agent.priority import lower_this_thread, thread_nice
from model_packager import runtimes

_ROOT = Path(__file__).resolve().parents[2]


def _children() -> set[int]:
    """This process's child processes, whichever of its threads started them."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            pass
    return pids


def _nice_of(pid: int, marker: str) -> int | None:
    """The niceness of process ``pid`` (field 19 of /proc/<pid>/stat) once it runs the helper (``marker`` in its
    command line: not the fork before its exec), None before that or once it has ended."""
    try:
        if marker not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return None
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    except (OSError, ValueError, IndexError):
        return None


def helper_nice(model: str, lowered: bool) -> tuple[int, int | None]:
    """Run the memory preflight of ``model`` from a thread of this process (``lowered``: as a model's loading
    thread is, ``edge_agent.priority.in_lowered_thread``, else as the loop's own thread would) and return the
    niceness its helper last ran at, read from /proc while it ran, and what the preflight returned."""
    seen: dict[int, int] = {}
    done = threading.Event()
    need: list[int | None] = []

    def watch() -> None:
        while not done.is_set():
            for pid in _children():
                nice = _nice_of(pid, model)
                if nice is not None:
                    seen[pid] = nice
            done.wait(0.002)

    def start() -> None:
        try:
            if lowered:
                assert lower_this_thread()
            need.append(runtimes.ort_preflight(model))
        finally:
            done.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    if lowered:
        starter = threading.Thread(target=start)
        starter.start()
        starter.join(60)
    else:
        start()  # this (the main) thread is the loop's
    watcher.join(5)
    assert len(seen) == 1, f"the preflight's helper was not seen running (children seen: {seen})"
    return next(iter(seen.values())), need[0] if need else None


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    from tests.support.models import make_signal_onnx

    return str(make_signal_onnx(tmp_path_factory.mktemp("helper-nice") / "m.onnx"))


@pytest.mark.parametrize("lowered", [True, False], ids=["from-a-loading-thread", "from-the-loop-thread"])
def test_a_swaps_preflight_helper_runs_helper_nice_steps_below_the_agents_loop(model, lowered):
    main = thread_nice(os.getpid())
    assert main is not None
    got, need = helper_nice(model, lowered)
    # (was: 10 in a process at 10, set to 5 by the agent then lowered by 5 more by the helper itself)
    assert got == min(19, main + runtimes.PREFLIGHT_NICE)
    assert need is not None  # the helper ran to its end and measured the model


@pytest.mark.skipif(shutil.which("nice") is None, reason="no nice command here")
def test_an_agent_already_at_niceness_19_starts_its_helper_at_19_without_an_error(model):
    code = (
        "import os, sys\n"
        "from tests.unit.test_helper_priority import helper_nice\n"
        "print(os.getpriority(os.PRIO_PROCESS, 0), *helper_nice(sys.argv[1], False))\n"
    )
    out = subprocess.run(
        ["nice", "-n", "19", sys.executable, "-c", code, model],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        # at niceness 19 it gets a sliver of the cores while the suite's other workers run (60 s was not enough
        # with six workers under load); the bound only keeps a hung child from holding the suite
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    main, got, need = out.stdout.split()
    assert (main, got) == ("19", "19")
    assert need != "None"  # measured: no error at 19
