"""State written by earlier releases (tests/fixtures/upgrade, see its README) read by this one: an upgrade keeps
what the gateway or the fleet service learned and stored, and a rollback to an earlier release and back loses
nothing that release could not know about."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from bench._bearing_signals import Machine
from cloud_trainer.fleet.control import Control
from cloud_trainer.fleet.server import main as serve
from cloud_trainer.fleet.store import SQLITE_FORMAT, SQLiteStore, StoreFormatError, open_store
from edge_agent.maintenance.baseline import Baseline, kept_path
from edge_agent.maintenance.settings import BaselineSettings, BearingSettings
from tests.support.fleet import make_pki
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade"


def _pump() -> tuple[BaselineSettings, float, int]:
    """The settings the fixtures' baselines were learned with (Machine(11), 30 windows)."""
    m = Machine(11, rpm=1750.0)
    b = m.bearing
    s = BaselineSettings(
        windows=30,
        bearing=BearingSettings(
            n_elements=b.n_elements,
            ball_d_mm=b.ball_d_mm,
            pitch_d_mm=b.pitch_d_mm,
            contact_angle_deg=b.contact_angle_deg,
        ),
    )
    return s, m.fs, m.n


def _baseline(path: Path) -> Baseline:
    s, fs, n = _pump()
    return Baseline(s, fs, n, path=path, pipeline="pump")


def test_a_commissioned_baseline_written_over_by_a_release_reading_format_1_is_restored(tmp_path):
    # 2026-12-01's release (b444dbb) took the format-2 file for unreadable and wrote a new learning over it; the
    # copy this release keeps beside it is what was commissioned
    path = tmp_path / "baseline" / "pump.json"
    path.parent.mkdir()
    shutil.copy(FIXTURES / "baseline-b444dbb-over-format2.json", path)
    shutil.copy(FIXTURES / "baseline-a1bf903-format2-ready.json", kept_path(path))
    commissioned = json.loads((FIXTURES / "baseline-a1bf903-format2-ready.json").read_text())

    b = _baseline(path)

    assert b.state == "ready" and b.relative
    assert b.threshold == commissioned["threshold"] and b.learned_at == commissioned["learned_at"]
    assert json.loads(path.read_text())["state"] == "ready"  # the file too, for the next start


def test_a_commissioned_baseline_is_kept_for_a_rollback_and_dropped_by_a_relearn(tmp_path):
    path = tmp_path / "baseline" / "pump.json"
    path.parent.mkdir()
    shutil.copy(
        FIXTURES / "baseline-a1bf903-format2-ready.json", path
    )  # commissioned before the copy existed

    b = _baseline(path)

    assert b.state == "ready"
    assert json.loads(kept_path(path).read_text())["threshold"] == b.threshold
    b.relearn("asked")  # what was commissioned is no longer wanted
    assert not kept_path(path).exists()
    shutil.copy(FIXTURES / "baseline-b444dbb-over-format2.json", path)  # then an older release's new learning
    assert _baseline(path).state == "learning"


def test_a_new_learning_by_an_older_release_for_other_features_is_not_replaced(tmp_path):
    path = tmp_path / "baseline" / "pump.json"
    path.parent.mkdir()
    shutil.copy(FIXTURES / "baseline-b444dbb-over-format2.json", path)
    kept = json.loads((FIXTURES / "baseline-a1bf903-format2-ready.json").read_text())
    kept["feature_set"] = "sha256:0000000000000000"
    kept_path(path).write_text(json.dumps(kept))

    assert _baseline(path).state == "learning"


def _fleet_db(tmp_path) -> Path:
    db = sqlite3.connect(tmp_path / "fleet.db")
    db.executescript((FIXTURES / "fleet-345c750-after-rollback.sql").read_text())
    db.close()
    return tmp_path


def test_records_stored_by_an_older_service_after_an_upgrade_are_counted_again(tmp_path):
    # epoch 5 seqs 1-3 by 2026-11-30's service, 4-5 by this one (record_counts), then, rolled back, epoch 6
    # seqs 1-3 by 2026-11-30's again: it does not count records, and the agent's epoch 6 was invisible
    store = open_store(None, _fleet_db(tmp_path))
    try:
        st = store.stats("gw1", tenant="default")
        assert (st["records"], st["epoch"], st["last_seq"]) == (8, 6, 3)
        store.ingest(
            "gw1",
            [{"seq": 5, "epoch": 6, "kind": "result", "t": 1.0, "payload": "{}"}],
            tenant="default",
        )
        assert [(g["epoch"], g["first"], g["last"]) for g in store.gaps("gw1", tenant="default")] == [
            (5, 6, 0),
            (6, 4, 4),
        ]
    finally:
        store.close()


def test_a_fleet_db_written_by_a_newer_service_is_refused_naming_the_file(tmp_path):
    store = open_store(None, tmp_path)
    store.close()
    db = sqlite3.connect(tmp_path / "fleet.db")
    db.execute(f"PRAGMA user_version = {SQLITE_FORMAT + 1}")
    db.close()

    with pytest.raises(StoreFormatError, match=r"fleet\.db: written by a newer fleet service") as err:
        SQLiteStore(tmp_path / "fleet.db")
    assert isinstance(err.value, ValueError)  # what `cloud-trainer serve` says in one line (exit 2)
    db = sqlite3.connect(tmp_path / "fleet.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SQLITE_FORMAT + 1  # left as it was
    db.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=(), admins=())


def test_a_service_rolled_back_onto_a_newer_postgres_schema_exits_with_one_line(
    postgres_url,  # noqa: F811
    tmp_path,
    pki,
    capsys,
):
    import psycopg

    open_store(postgres_url, tmp_path).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, '0999_future.sql', 0)")

    rc = serve(["--data", str(tmp_path), "--port", "0", "--pki", str(pki), "--store", postgres_url])

    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"fleet store {postgres_url}: the database's schema is version 999, newer than this code's" in err


def _control_from(tmp_path, fixture: str) -> Control:
    """The control state an earlier release wrote (``fixture``, an ``iterdump()``), opened by this one."""
    db = sqlite3.connect(tmp_path / "control.db")
    db.executescript((FIXTURES / fixture).read_text())
    db.close()
    return Control(tmp_path / "control.db", None, None)


def test_deployments_an_older_service_finished_after_an_upgrade_are_not_taken_for_running(tmp_path):
    # d1 was running when 2026-11-30's service (345c750) was put back on the file; it completed d1 in the
    # document only, and the state column every query of this one reads still said 'running'
    c = _control_from(tmp_path, "control-345c750-after-rollback.sql")
    try:
        rows = c.db.execute("SELECT id, state, doc FROM deployments ORDER BY id").fetchall()
        assert [(i, s) for i, s, _ in rows] == [("d1", "completed"), ("d2", "halted")]
        assert all(json.loads(doc)["state"] == s for _, s, doc in rows)
    finally:
        c.db.close()


def test_a_rollback_made_by_an_older_service_ends_what_a_completed_rollout_gives_joining_gateways(tmp_path):
    # d1, a selector rollout of slot vision to 1.1.0, completed here (its group's version: `following`); then
    # 2026-12-01's service (b444dbb), put back on the file, rolled the slot back to 1.0.0 (d2) without knowing
    # `following`: gateways joining the group would have been given 1.1.0, the version rolled back from
    c = _control_from(tmp_path, "control-b444dbb-rollback-after-following.sql")
    try:
        assert c.db.execute("SELECT * FROM following").fetchall() == []
        assert [d["id"] for d in c.list()] == ["d2", "d1"]  # both kept
    finally:
        c.db.close()


def test_a_halt_made_by_an_older_service_after_an_upgrade_is_closed_when_its_agent_moves_on(tmp_path):
    # this release opened the file (going_back filled); 2026-12-03's service (8f1a47aa), put back on it, halted d1
    # and sent gw1 back (rolling_back) without a going_back row. Opened here again, gw1 running a newer rollout
    # left d1's target rolling_back for good, as an admin's rollback to it did too (the older release closed both)
    c = _control_from(tmp_path, "control-8f1a47aa-halt-after-going-back.sql")
    try:
        assert c.db.execute("SELECT * FROM going_back").fetchall() == [("default", "gw1", "vision", "d1")]
        newer = {"id": "d2", "created": 2.0, "tenant": "default", "slot": "vision", "rollback": False}
        with c._write():
            c._gone_back(newer, "gw1", "1.2.0")
        targets = c.get("d1")["targets"]
        assert targets["gw1"]["status"] == "rolled_back_by_fleet", targets["gw1"]  # was: rolling_back
        assert targets["gw2"]["status"] == "rolled_back"  # its own verdict stays
    finally:
        c.db.close()


def test_the_going_back_look_reads_the_halted_rollouts_ids_from_an_index_alone(tmp_path):
    """The tick's look for halts without going_back rows (every 30 s, under the control's lock) read each halted
    rollout's id through deployments_by_state (state, created): a row lookup each, 1.38 s at 20,000 halted rollouts
    (bench/fleet_going_back_look_bench.py). A control.db of before gets an index (state, id) at open."""
    from cloud_trainer.fleet.control import HALTED_IDS

    c = _control_from(tmp_path, "control-8f1a47aa-halt-after-going-back.sql")
    try:
        plan = " ".join(str(r[-1]) for r in c.db.execute("EXPLAIN QUERY PLAN " + HALTED_IDS))
        assert "COVERING INDEX deployments_state_ids" in plan, plan  # was: USING INDEX deployments_by_state
        assert sorted(r[0] for r in c.db.execute(HALTED_IDS)) == ["d1"]
    finally:
        c.db.close()


def test_the_going_back_fill_at_open_reads_the_documents_outside_the_write_transaction(tmp_path):
    """The fill at each open scanned every halted rollout's document inside the control's write transaction (on
    PostgreSQL its advisory lock): every replica's steps, new runs and ticks waited for it at each replica's start
    (2,000 halted rollouts of 1,000 agents: up to 2.4 s). Read outside it; only the rows found are written in it."""
    c = _control_from(tmp_path, "control-8f1a47aa-halt-after-going-back.sql")
    real = c.db
    try:
        real.execute("DELETE FROM going_back")
        scans: list[bool] = []

        class Seen:  # (the connection, telling whether the scan ran inside a transaction)
            def __getattr__(self, name):
                return getattr(real, name)

            def execute(self, sql, args=()):
                if "doc LIKE" in sql:
                    scans.append(real.in_transaction)
                return real.execute(sql, args)

        c.db = Seen()  # type: ignore[assignment]
        c._halts_seen = None  # (every halted rollout looked at, as at open)
        c._fill_going_back()
        assert scans == [False]  # was: [True]
        assert real.execute("SELECT * FROM going_back").fetchall() == [("default", "gw1", "vision", "d1")]
    finally:
        real.close()
