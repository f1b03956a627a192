"""A maintenance baseline on a real small disk (tmpfs) that fills up: commissioning that ends while the disk is
full still ends (its ``baseline_learned`` event, the window's verdict), the baseline is said unsaved naming its
file, and it is written by itself once there is room, so a restart after that keeps what was learned."""

from __future__ import annotations

import contextlib
import logging
import shutil

from bench._bearing_signals import Machine
from edge_agent.maintenance.baseline import Baseline, read_baseline
from edge_agent.maintenance.states import StateBaselines, state_path
from tests.support.peers import small_tmpfs
from tests.unit.test_baseline_states import RPM, Clock, _run, _settings
from tests.unit.test_maintenance_baseline import settings_for


def test_a_baseline_learned_while_the_disk_is_full_is_said_and_saved_once_there_is_room(tmp_path, caplog):
    with small_tmpfs(tmp_path / "baseline", "1m") as root:
        m = Machine(11, rpm=1750.0)
        events: list = []
        path = root / "pump.json"
        b = Baseline(
            settings_for(m, windows=30), m.fs, m.n, path=path, pipeline="pump", on_event=events.append
        )
        for _ in range(25):
            b.process(m.window())
        assert len(read_baseline(path)["rows"]) == 20  # learning progress, saved every 10 windows
        filler = root / "filler"  # (the disk's other tenants)
        with contextlib.suppress(OSError):  # filled to the last byte
            filler.write_bytes(b"\0" * (shutil.disk_usage(root).free + 4096))
        with caplog.at_level(logging.WARNING, logger="edge_agent.maintenance.baseline"):
            verdicts = [b.process(m.window()) for _ in range(12)]  # raised OSError out of the last window
        assert verdicts[-1].state == "ready" and b.state == "ready"
        assert "baseline_learned" in [e["kind"] for e in events]
        said = [r.getMessage() for r in caplog.records if "not saved" in r.getMessage()]
        assert len(said) == 1 and str(path) in said[0] and "No space left" in said[0], said
        assert read_baseline(path)["state"] == "learning"  # the disk holds what it held
        assert [
            p.name for p in root.iterdir() if p.name.startswith(".")
        ] == []  # no temporary on the full disk

        filler.unlink()
        b.process(m.window())
        assert read_baseline(path)["state"] == "ready"  # the former code never saved a ready baseline again
        assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no temporary left
        again = Baseline(settings_for(m, windows=30), m.fs, m.n, path=path, pipeline="pump")  # a restart
        assert again.state == "ready" and again.threshold == b.threshold


def test_baselines_per_process_state_commissioned_while_the_disk_is_full_are_saved_once_there_is_room(
    tmp_path, caplog
):
    with small_tmpfs(tmp_path / "baseline", "1m") as root:
        clock = Clock()
        m = Machine(51, fs=10000.0, n=2048, rpm=RPM)
        path = root / "conveyor.json"
        b = StateBaselines(_settings(), 10000.0, 2048, path=path, pipeline="conveyor", clock=clock)
        _run(b, m, clock, 25, 0.0)
        filler = root / "filler"
        with contextlib.suppress(OSError):
            filler.write_bytes(b"\0" * (shutil.disk_usage(root).free + 4096))
        with caplog.at_level(logging.WARNING, logger="edge_agent.maintenance"):
            ended = _run(b, m, clock, 6, 0.0)  # raised OSError out of the window that ended commissioning
        assert ended[-1].state == "ready" and not b.commissioning
        said = [r.getMessage() for r in caplog.records if "not saved" in r.getMessage()]
        assert any(str(state_path(path, "empty")) in s for s in said), said

        filler.unlink()
        _run(b, m, clock, 1, 1.0)  # another state's window: the empty state's baseline is saved all the same
        again = StateBaselines(_settings(), 10000.0, 2048, path=path, pipeline="conveyor", clock=clock)
        assert not again.commissioning and again.status()["process_states"]["empty"]["state"] == "ready"
