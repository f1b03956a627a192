"""The agent's state files lie in its data folder, a disk anyone with the gateway's shell can edit. The fleet
config's ``fleet-config/state.json`` and the fleet commands' ``fleet/commands.json`` were read whole at start: a
named pipe there waited for ever (the agent's start with it), a file of gigabytes or a link to ``/dev/zero``
filled its memory, and a deep nesting (or a JSON list where an object is kept) raised RecursionError or
TypeError out of the start. Each is read bounded now (``edge_agent.files.read_json_state``): such a file is
said unreadable in one ERROR naming it and why, as one that is not JSON was, and the agent starts without it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading

import pytest

from edge_agent.files import STATE_FILE_MAX_BYTES
from edge_agent.fleet_config import ConfigKeeper
from edge_agent.uplink.commands import CommandRunner
from protocols.events import EventKind
from tests.unit.test_agent_commands import cfg


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def _keeper(tmp_path):
    return ConfigKeeper(tmp_path / "fleet-config")


def _runner(tmp_path):
    return CommandRunner(cfg(tmp_path / "agent"))


def _state_path(tmp_path, which: str):
    if which == "fleet config":
        (tmp_path / "fleet-config").mkdir(parents=True)
        return tmp_path / "fleet-config" / "state.json"
    path = tmp_path / "agent" / "data" / "fleet" / "commands.json"
    path.parent.mkdir(parents=True)
    return path


def _start(tmp_path, which: str):
    return _keeper(tmp_path) if which == "fleet config" else _runner(tmp_path)


def _unread(which: str, path, why: str) -> str:
    if which == "fleet config":
        return f"{path}: unreadable ({why}); starting from the local config file"
    return f"fleet commands: {path} is unreadable ({why}); commands still in the desired state may run again"


@pytest.mark.parametrize("which", ["fleet config", "commands"])
def test_a_state_file_larger_than_the_agent_writes_is_said_unreadable_not_read_whole(tmp_path, caplog, which):
    path = _state_path(tmp_path, which)
    body = '{"ran": []}' if which == "commands" else '{"refused": {}}'
    path.write_text(body + " " * (STATE_FILE_MAX_BYTES + 1 - len(body)))  # valid JSON, past the bound
    with caplog.at_level(logging.ERROR):
        _start(tmp_path, which)
    assert _errors(caplog) == [
        _unread(which, path, f"larger than {STATE_FILE_MAX_BYTES} bytes, the most it may hold")
    ]


@pytest.mark.parametrize("which", ["fleet config", "commands"])
@pytest.mark.parametrize("body", ["[" * 100_000, "[1, 2]"])
def test_a_state_file_nested_past_the_parser_or_not_an_object_is_said_unreadable(
    tmp_path, caplog, which, body
):
    path = _state_path(tmp_path, which)
    path.write_text(body)
    with caplog.at_level(logging.ERROR):
        started = _start(tmp_path, which)
    (said,) = _errors(caplog)
    assert said.startswith(_unread(which, path, "").split("()")[0] + "(")
    if which == "fleet config":
        assert started.state == {"last_good": None, "trial": None, "refused": {}, "unreported": []}
    else:
        assert started.ran == {}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX file kind")
@pytest.mark.parametrize("which", ["fleet config", "commands"])
def test_a_state_file_that_is_a_named_pipe_is_said_unreadable_not_waited_for(tmp_path, caplog, which):
    path = _state_path(tmp_path, which)
    os.mkfifo(path)
    got: list = []
    with caplog.at_level(logging.ERROR):
        t = threading.Thread(target=lambda: got.append(_start(tmp_path, which)), daemon=True)
        t.start()
        t.join(60)  # a bound for a hang, not a time measured: the start takes milliseconds
        hung = t.is_alive()
        if hung:  # the former code: blocked opening the pipe; a writer that opens and closes it frees it
            with open(path, "wb"):
                pass
            t.join()
    assert not hung, "the start waited on the named pipe"
    assert len(got) == 1
    assert _errors(caplog) == [_unread(which, path, "a named pipe, not a file")]


@pytest.mark.parametrize("kind", ["larger", "nested", "pipe"])
def test_the_halts_and_outages_told_before_are_read_bounded_and_said_unreadable(tmp_path, caplog, kind):
    # source-halts.json and source-down.json (edge_agent.agent: HALTS_FILE, DOWNS_FILE), read at every start
    from edge_agent.agent import DOWNS_FILE, _read_told

    path = tmp_path / DOWNS_FILE
    if kind == "larger":
        body = '{"cam": {"since": "2026-01-01T00:00:00+00:00"}}'
        path.write_text(body + " " * (STATE_FILE_MAX_BYTES + 1 - len(body)))
    elif kind == "nested":
        path.write_text("[" * 100_000)
    else:
        os.mkfifo(path)
    got: list = []
    with caplog.at_level(logging.WARNING):
        t = threading.Thread(target=lambda: got.append(_read_told(path)), daemon=True)
        t.start()
        t.join(60)  # a bound for a hang, not a time measured
        hung = t.is_alive()
        if hung:
            with open(path, "wb"):
                pass
            t.join()
    assert not hung, "the start waited on the named pipe"
    assert got == [{}]
    (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    why = {
        "larger": f"larger than {STATE_FILE_MAX_BYTES} bytes, the most it may hold",
        "nested": "nested deeper than JSON is read",
        "pipe": "a named pipe, not a file",
    }[kind]
    assert said == f"{path} cannot be read ({why}); the ends of what it held are not said"


@pytest.mark.parametrize("kind", ["nested", "pipe", "no slot", "a list"])
def test_a_pending_deployment_file_that_is_no_deployment_is_removed_and_said_not_a_crash_or_a_hang(
    tmp_path, caplog, kind
):
    # <data_dir>/deployments/<slot>.json: a rollout's outcome kept across a restart (ModelManager._write_pending)
    from edge_agent.models.manager import ModelManager

    mgr = ModelManager({}, cfg(tmp_path / "agent"))
    mgr.pending_dir.mkdir(parents=True)
    path = mgr.pending_dir / "vision.json"
    if kind == "nested":
        path.write_text("[" * 100_000)
    elif kind == "pipe":
        os.mkfifo(path)
    elif kind == "no slot":
        path.write_text('{"deployment_id": "d1", "version": "1.0.0", "digest": "ab", "package": "p"}')
    else:
        path.write_text('["vision"]')
    got: list = []
    with caplog.at_level(logging.WARNING):
        # its own loop in a thread: the former code blocked the loop's thread itself opening the pipe
        t = threading.Thread(target=lambda: got.append(asyncio.run(mgr._settle_pending())), daemon=True)
        t.start()
        t.join(60)  # a bound for a hang, not a time measured
        hung = t.is_alive()
        if hung:
            with open(path, "wb"):
                pass
            t.join()
    assert not hung, "the start waited on the named pipe"
    assert got == [None]
    assert not path.exists()
    (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said.startswith(f"model manager: {path}: ") and said.endswith(
        "; removed, its outcome not reported"
    )


@pytest.mark.parametrize("kind", ["nested", "pipe"])
def test_the_sizing_check_reads_a_slots_measured_item_time_and_state_bounded(tmp_path, kind):
    # edge-agent validate and the start compare the measured time per item (models/<slot>/item_time.json) of
    # the package the slot serves (its state.json's current folder) with the cores: both read bounded now
    from types import SimpleNamespace

    from edge_agent import sizing

    folder = tmp_path / "models" / "vision"
    folder.mkdir(parents=True)
    for name in (sizing.RECORD, "state.json"):
        if kind == "nested":
            (folder / name).write_text("[" * 100_000)
        else:
            os.mkfifo(folder / name)
    got: list = []
    t = threading.Thread(
        target=lambda: got.append(
            (sizing.recorded(folder), sizing._serves(None, SimpleNamespace(package=None), folder))
        ),
        daemon=True,
    )
    t.start()
    t.join(60)  # a bound for a hang, not a time measured
    hung = t.is_alive()
    if hung:  # the former code: blocked opening a pipe; writers that open and close them free it
        for name in (sizing.RECORD, "state.json"):
            with open(folder / name, "wb"):
                pass
        t.join()
    assert not hung, "the sizing check waited on a named pipe"
    assert got == [(None, None)]


def _baseline(tmp_path, per_state: bool):
    from edge_agent.maintenance.baseline import Baseline
    from edge_agent.maintenance.settings import BaselineSettings, ProcessState
    from edge_agent.maintenance.states import StateBaselines

    events: list = []
    path = tmp_path / "data" / "baseline" / "spindle.json"
    path.parent.mkdir(parents=True)
    s = BaselineSettings(windows=30, iso_alarm_zone="off")
    if not per_state:
        return Baseline(s, 10000.0, 2048, path=path, pipeline="spindle", on_event=events.append), events
    s = BaselineSettings(
        windows=50,
        iso_alarm_zone="off",
        state_tag="Load",
        states=[ProcessState(name="empty", max=0.5), ProcessState(name="loaded", min=0.5)],
    )
    return StateBaselines(s, 10000.0, 2048, path=path, pipeline="spindle", on_event=events.append), events


@pytest.mark.parametrize("per_state", [False, True])
@pytest.mark.parametrize("kind", ["a list", "nested", "pipe"])
def test_a_relearn_request_that_holds_no_request_object_is_taken_as_one_without_a_reason(
    tmp_path, per_state, kind
):
    # edge-agent baseline relearn writes <data_dir>/baseline/<pipeline>.relearn ({"reason": ..., "state": ...});
    # the baseline reads it at its next window: a JSON list raised AttributeError out of every window, the
    # request never removed; a named pipe waited for ever in the window's thread; a deep nesting raised
    from edge_agent.maintenance.baseline import relearn_path

    b, events = _baseline(tmp_path, per_state)
    req = relearn_path(tmp_path / "data", "spindle")
    if kind == "a list":
        req.write_text('["bearing replaced"]')
    elif kind == "nested":
        req.write_text("[" * 100_000)
    else:
        os.mkfifo(req)
    got: list = []
    t = threading.Thread(target=lambda: got.append(b.check_request()), daemon=True)
    t.start()
    t.join(60)  # a bound for a hang, not a time measured
    hung = t.is_alive()
    if hung:
        with open(req, "wb"):
            pass
        t.join()
    assert not hung, "the baseline waited on the named pipe"
    assert got == [None]
    assert not req.exists()
    relearned = [e.data["reason"] for e in events if e.kind == EventKind.BASELINE_RELEARN]
    assert relearned == ["asked from the command line"]


def test_a_relearn_request_naming_a_state_that_is_not_text_relearns_nothing_and_is_said(tmp_path, caplog):
    from edge_agent.maintenance.baseline import relearn_path

    b, events = _baseline(tmp_path, per_state=True)
    req = relearn_path(tmp_path / "data", "spindle")
    req.write_text('{"reason": "bearing replaced", "state": ["loaded"]}')  # the command line writes text
    with caplog.at_level(logging.WARNING):
        b.check_request()
    assert not req.exists()
    assert [e for e in events if e.kind == EventKind.BASELINE_RELEARN] == []
    assert f"{req}: names the state ['loaded'], not text; nothing relearned" in caplog.text


@pytest.mark.parametrize("kind", ["a list", "nested"])
def test_a_repair_request_that_holds_no_request_object_resets_remaining_life_without_a_reason(tmp_path, kind):
    # edge-agent baseline repaired writes <data_dir>/baseline/<pipeline>.repaired: read as the relearn request is
    from edge_agent.maintenance.baseline import repaired_path
    from edge_agent.maintenance.monitor import Monitor
    from edge_agent.maintenance.settings import BaselineSettings
    from model_packager.manifest import Manifest
    from tests.support.models import signal_spec
    from tests.unit.test_remaining_life import _Slot

    events: list = []
    mon = Monitor(
        BaselineSettings(windows=20),
        _Slot(Manifest.model_validate(signal_spec())),
        "h",
        tmp_path,
        events.append,
    )
    req = repaired_path(tmp_path, "h")
    req.parent.mkdir(parents=True, exist_ok=True)
    req.write_text('["bearing replaced"]' if kind == "a list" else "[" * 100_000)
    mon._check_repair()
    assert not req.exists()
    assert [e.data["reason"] for e in events if e.kind == EventKind.LIFE_RESET] == ["repair"]


@pytest.mark.parametrize("kind", ["nested", "pipe"])
def test_the_outbox_opens_past_an_epoch_or_sent_file_that_is_no_such_file(tmp_path, kind):
    # <data_dir>/outbox-epoch.json and outbox-sent: a number or two each, read at every open; a torn or
    # unreadable one only loses its protection (docs/agent.md), but a named pipe waited for ever and a deep
    # nesting raised RecursionError out of the agent's start
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import EPOCH_FILE, SENT_FILE, Outbox

    for name in (EPOCH_FILE, SENT_FILE):
        if kind == "nested":
            (tmp_path / name).write_text('{"epoch": ' + "[" * 100_000)
        else:
            os.mkfifo(tmp_path / name)
    ob = Outbox(OutboxSettings(), tmp_path)
    got: list = []
    t = threading.Thread(target=lambda: got.append(ob.open()), daemon=True)
    t.start()
    t.join(60)  # a bound for a hang, not a time measured
    hung = t.is_alive()
    if hung:  # the former code: blocked opening a pipe; writers that open and close them free it
        for name in (EPOCH_FILE, SENT_FILE):
            with contextlib.suppress(OSError), open(tmp_path / name, "wb"):
                pass
        t.join(60)
    assert not hung, "the outbox's open waited on a named pipe"
    assert got == [None]
    try:
        assert ob.is_open and ob.epoch > 0
        # the epoch is recorded anew, as for a file that does not parse
        assert json.loads((tmp_path / EPOCH_FILE).read_text())["epoch"] == ob.epoch
    finally:
        ob.close()


@pytest.mark.parametrize("kind", ["nested", "pipe", "raised not a list", "an output not text"])
def test_the_alarm_outputs_left_raised_are_read_bounded_and_an_entry_not_written_so_is_left_out(
    tmp_path, kind
):
    # <data_dir>/alarm-outputs.json (edge_agent.actions.RAISED_FILE): read at the first result, to clear the
    # outputs a runner before this one left raised
    from edge_agent import actions
    from edge_agent.config import parse_config

    data = tmp_path / "data"
    data.mkdir()
    path = data / actions.RAISED_FILE
    if kind == "nested":
        path.write_text("[" * 100_000)
    elif kind == "pipe":
        os.mkfifo(path)
    elif kind == "raised not a list":
        path.write_text('{"raised": 5}')
    else:
        path.write_text('{"raised": [{"alarm": "a", "output": ["mqtt"], "source": "s", "target": "t"}]}')
    cfg = parse_config({"agent": {"id": "a", "data_dir": str(data)}, "http": {"enabled": False}}, "t.yaml")
    runner = actions.ActionRunner(cfg, {}, state_dir=data)
    got: list = []
    t = threading.Thread(target=lambda: got.append(runner._clear_orphans()), daemon=True)
    t.start()
    t.join(60)  # a bound for a hang, not a time measured
    hung = t.is_alive()
    if hung:
        with open(path, "wb"):
            pass
        t.join()
    assert not hung, "the first result waited on the named pipe"
    assert got == [None]
    assert runner._raised_saved == []
