"""The baseline files lie in the agent's data folder, a disk anyone with the gateway's shell can edit:
``<pipeline>.json``, its ``.format2`` copy, ``<pipeline>@<state>.json`` and the index ``<pipeline>.states.json``
were read whole, at the pipeline's start and by ``edge-agent baseline status``. A named pipe there waited for
ever, a file of gigabytes or a link to ``/dev/zero`` filled the memory, and a deep nesting raised RecursionError
out of the start (or a traceback out of the command). Each is read bounded now (``read_baseline``): such a file
is taken as a damaged one was (learned anew, every state commissioned anew, a copy not restored), said in one
WARNING naming the file and why; the command says it in one line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from bench._bearing_signals import Machine
from edge_agent.config import parse_config
from edge_agent.maintenance.baseline import Baseline, kept_path
from edge_agent.maintenance.cli import baseline_main
from edge_agent.maintenance.settings import BaselineSettings, ProcessState
from edge_agent.maintenance.states import STATE_INPUT, StateBaselines, index_path, state_path
from protocols.events import EventKind
from tests.unit.test_baseline_states import Clock

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX file kind")

RPM = 1800.0
FS, N = 10000.0, 2048
NESTED = "[" * 100_000  # past the JSON parser's depth: RecursionError
BOUND = "edge_agent.maintenance.baseline.BASELINE_MAX_BYTES"


def _one() -> BaselineSettings:
    return BaselineSettings(windows=30, speed_tag="Speed", iso_alarm_zone="off")


def _per_state() -> BaselineSettings:
    return BaselineSettings(
        windows=50,
        speed_tag="Speed",
        iso_alarm_zone="off",
        state_tag="Load",
        states=[ProcessState(name="empty", max=0.5), ProcessState(name="loaded", min=0.5)],
    )


def _start(path: Path, per_state: bool, events: list | None = None):
    """The pipeline's baseline as the agent builds it at start."""
    on_event = (events if events is not None else []).append
    if per_state:
        return StateBaselines(_per_state(), FS, N, path=path, pipeline="spindle", on_event=on_event)
    return Baseline(_one(), FS, N, path=path, pipeline="spindle", on_event=on_event)


def _commissioned(tmp_path: Path, per_state: bool) -> Path:
    """A data folder whose pipeline ``spindle`` was commissioned; the path of its ``<pipeline>.json``."""
    clock, m = Clock(), Machine(61, fs=FS, n=N, rpm=RPM)
    path = tmp_path / "data" / "baseline" / "spindle.json"
    if per_state:
        b = StateBaselines(_per_state(), FS, N, path=path, pipeline="spindle", clock=clock)
        loads = [0.0] * 25 + [1.0] * 25
    else:
        b = Baseline(_one(), FS, N, path=path, pipeline="spindle", clock=clock)
        loads = [None] * 30
    for load in loads:
        clock.t += 10.0
        b.process(m.window(), {"_shaft_speed": RPM} | ({} if load is None else {STATE_INPUT: load}))
    assert b.state == "ready"
    return path


def _without_hang(fn, fifo: Path | None = None) -> list:
    """``[fn()]``, or ``[exception]`` when it raised; fails when it waited on the named pipe ``fifo``."""
    got: list = []

    def run() -> None:
        try:
            got.append(fn())
        except BaseException as exc:  # RecursionError out of the former code: the test's failure, said below
            got.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)  # a bound for a hang, not a time measured: the start takes milliseconds
    hung = t.is_alive()
    if (
        hung and fifo is not None
    ):  # the former code: blocked opening the pipe; a writer that opens it frees it
        with open(fifo, "wb"):
            pass
        t.join()
    assert not hung, f"waited on {fifo}"
    assert not isinstance(got[0], BaseException), f"raised {got[0]!r}"
    return got


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _discarded(events: list) -> list[str]:
    return [e.data["reason"] for e in events if e.kind == EventKind.BASELINE_DISCARDED]


@pytest.mark.parametrize("which", ["baseline", "index", "index beside one baseline"])
def test_a_baseline_file_nested_past_the_parser_is_taken_as_unreadable_not_raised_out_of_the_start(
    tmp_path, caplog, which
):
    path = tmp_path / "data" / "baseline" / "spindle.json"
    path.parent.mkdir(parents=True)
    bad = path if which == "baseline" else index_path(path)
    bad.write_text(NESTED)
    events: list = []
    with caplog.at_level(logging.WARNING):
        (b,) = _without_hang(lambda: _start(path, which == "index", events))
    assert b.state == "learning"
    if which == "index beside one baseline":  # as a damaged one: set aside, said (it names the index)
        assert not bad.exists() and bad.with_name(bad.name + ".unused").exists()
        return
    said = f"unreadable {'baseline file' if which == 'baseline' else 'file'} {bad} (nested deeper than JSON is read)"
    assert [w for w in _warnings(caplog) if str(bad) in w] == [
        f"pipeline spindle: {said}; "
        + ("learning anew" if which == "baseline" else "commissioning every state anew")
    ]
    assert len(_discarded(events)) == 1 and _discarded(events)[0].startswith(said)


@pytest.mark.parametrize("per_state", [False, True])
def test_a_baseline_file_larger_than_any_baseline_is_learned_anew_not_read_whole(
    tmp_path, caplog, monkeypatch, per_state
):
    # a bound under the file's size stands for a file of gigabytes: the former code read it whole, and loaded it
    path = _commissioned(tmp_path, per_state)
    big = index_path(path) if per_state else path
    bound = big.stat().st_size - 1
    monkeypatch.setattr(BOUND, bound, raising=False)
    events: list = []
    with caplog.at_level(logging.WARNING):
        b = _start(path, per_state, events)
    assert b.state == "learning"
    why = f"{big} (larger than {bound} bytes, the most it may hold)"
    (said,) = [w for w in _warnings(caplog) if f"{big} (" in w]  # (the kept copy, as large, is said apart)
    assert why in said
    assert len(_discarded(events)) == 1 and why in _discarded(events)[0]


def test_an_index_of_baselines_per_state_that_is_a_named_pipe_is_not_waited_on(tmp_path, caplog):
    path = tmp_path / "data" / "baseline" / "spindle.json"
    path.parent.mkdir(parents=True)
    os.mkfifo(index_path(path))
    events: list = []
    with caplog.at_level(logging.WARNING):
        (b,) = _without_hang(lambda: _start(path, True, events), index_path(path))
    assert b.commissioning
    assert _warnings(caplog) == [
        f"pipeline spindle: unreadable file {index_path(path)} (a named pipe, not a file); commissioning "
        "every state anew"
    ]
    assert index_path(path).is_file()  # written anew over the pipe


@pytest.mark.parametrize("kind", ["pipe", "nested", "larger"])
def test_a_kept_commissioned_copy_that_cannot_be_read_is_not_restored_and_said(
    tmp_path, caplog, monkeypatch, kind
):
    """A release reading format 1 only, run on the data folder, learns anew over ``<pipeline>.json``; the next
    start of this one restores the commissioned baseline from ``<pipeline>.json.format2``: read whole, a pipe
    there waited for ever, a deep nesting raised out of the start."""
    path = _commissioned(tmp_path, False)
    kept = kept_path(path)
    older = Baseline(_one(), FS, N, path=None, pipeline="spindle")
    older.reason, older.relative = "unreadable file", False
    path.write_text(json.dumps(older.to_dict()))  # what that release writes over the baseline
    why = {"pipe": "a named pipe, not a file", "nested": "nested deeper than JSON is read"}.get(kind)
    if kind == "pipe":
        kept.unlink()
        os.mkfifo(kept)
    elif kind == "nested":
        kept.write_text(NESTED)
    else:
        bound = kept.stat().st_size - 1
        assert path.stat().st_size <= bound
        monkeypatch.setattr(BOUND, bound, raising=False)
        why = f"larger than {bound} bytes, the most it may hold"
    with caplog.at_level(logging.WARNING):
        (b,) = _without_hang(lambda: _start(path, False), kept if kind == "pipe" else None)
    assert b.state == "learning"  # that release's learning goes on, as when the copy is damaged
    assert _warnings(caplog) == [
        f"pipeline spindle: the commissioned baseline kept in {kept} is unreadable ({why}); not restored, the "
        "learning begun over spindle.json goes on"
    ]


def _cfg(tmp_path: Path, per_state: bool):
    return parse_config(
        {
            "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
            "trusted_keys": ["k.pub"],
            "sources": {"plc": {"type": "mqtt", "subscriptions": [{"topic": "a/b"}]}},
            "models": {"m": {"package": "m.edgepkg"}},
            "pipelines": [
                {
                    "name": "spindle",
                    "source": "plc",
                    "model": "m",
                    "window": {"waveform": "V"},
                    "baseline": (_per_state() if per_state else _one()).model_dump(exclude_defaults=True),
                }
            ],
        },
        local_checks=False,
    )


def _status(tmp_path: Path, per_state: bool, fifo: Path | None = None) -> int:
    args = argparse.Namespace(
        action="status", pipeline="spindle", config="agent.yaml", json=False, state=None
    )
    cfg = _cfg(tmp_path, per_state)
    (rc,) = _without_hang(lambda: baseline_main(args, lambda _: cfg), fifo)
    return rc


@pytest.mark.parametrize("per_state", [False, True])
@pytest.mark.parametrize("kind", ["nested", "larger"])
def test_baseline_status_says_a_baseline_file_it_cannot_read_in_one_line(
    tmp_path, capsys, monkeypatch, per_state, kind
):
    path = _commissioned(tmp_path, per_state)
    bad = index_path(path) if per_state else path
    if kind == "nested":
        bad.write_text(NESTED)
        why = "nested deeper than JSON is read"
    else:
        bound = bad.stat().st_size - 1
        monkeypatch.setattr(BOUND, bound, raising=False)
        why = f"larger than {bound} bytes, the most it may hold"
    capsys.readouterr()
    assert _status(tmp_path, per_state) == 1
    out = capsys.readouterr()
    anew = "commissions every state anew" if per_state else "learns the baseline anew"
    assert (
        out.err == f"pipeline spindle: {bad} is unreadable ({why}); the agent {anew} when it next loads it\n"
    )
    assert out.out == ""


def test_baseline_status_of_the_states_leaves_out_a_states_file_that_is_a_named_pipe_and_says_it(
    tmp_path, capsys
):
    path = _commissioned(tmp_path, True)
    pipe = state_path(path, "loaded")
    pipe.unlink()
    os.mkfifo(pipe)
    capsys.readouterr()
    assert _status(tmp_path, True, pipe) == 0
    out = capsys.readouterr()
    assert out.err == (
        f"  loaded: {pipe} is unreadable (a named pipe, not a file); the agent learns this state anew when it "
        "next loads it\n"
    )
    assert "  empty: ready" in out.out and "loaded" not in out.out
