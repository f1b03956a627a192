"""Agent commands on both control stores (the SQLite ``control.db`` and PostgreSQL, migration 0003): a command
is in its agent's desired state until the agent's result is recorded; recording is idempotent; every change is
a new generation in the change log (what the streams push); tenants never see or command each other's agents;
a pipeline the agent did not report, or one without a baseline, is refused at once."""

from __future__ import annotations

import pytest

from cloud_trainer.fleet.commands import Commands
from cloud_trainer.fleet.control import Control, NotInTenant
from cloud_trainer.fleet.store import SQLiteStore, open_store
from cloud_trainer.registry import Registry
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)


@pytest.fixture(params=["sqlite", "postgresql"])
def commands(request, tmp_path):
    if request.param == "sqlite":
        store, where = SQLiteStore(tmp_path / "fleet.db"), tmp_path / "control.db"
    else:
        where = request.getfixturevalue("postgres_url")
        store = open_store(where, tmp_path)
    control = Control(where, Registry(tmp_path / "registry"), store)
    yield Commands(control)
    control.db.close()
    store.close()


NAN = float("nan")
HEALTH = {"pump": {"rate": 1.0, "baseline": {"state": "ready"}}, "camera": {"rate": 2.0}}


def test_a_command_stays_in_the_desired_state_until_its_result_is_recorded_once(commands):
    store, control = commands.c.store, commands.c
    store.heartbeat("gw1", {"site": "a"}, [], HEALTH, 0)
    store.heartbeat("gw1", {"site": "b"}, [], HEALTH, 0, tenant="acme")  # the same id in another tenant
    gen0 = control.generation()
    cmd = commands.send("gw1", "baseline_relearn", "pump", "bearing replaced", "alice")
    assert cmd["state"] == "pending" and cmd["generation"] > gen0
    assert control.changes_since(gen0)[1] == [("default", "gw1")]  # pushed to the connected agent
    pending = commands.pending_many([("default", "gw1"), ("acme", "gw1")])
    gen, cmds = pending[("default", "gw1")]
    assert gen == cmd["generation"] and [
        (c["id"], c["kind"], c["pipeline"], c["issued_by"], c["reason"]) for c in cmds
    ] == [(cmd["id"], "baseline_relearn", "pump", "alice", "bearing replaced")]
    assert pending[("acme", "gw1")] == (0, [])  # acme's gw1 never receives it
    # a result for another tenant's agent of the same id changes nothing
    assert commands.record_results("gw1", [{"id": cmd["id"], "ok": True}], tenant="acme") == 0
    result = {"id": cmd["id"], "ok": True, "detail": "relearn requested", "done_at": 5.0}
    assert commands.record_results("gw1", [result]) == 1
    assert commands.record_results("gw1", [result, {"id": "nope", "ok": True}]) == 0  # a replay counts once
    gen2, cmds = commands.pending_many([("default", "gw1")])[("default", "gw1")]
    assert cmds == [] and gen2 > gen  # the generation only goes up: the agent gets the state without it
    [row] = commands.list("gw1")
    assert (row["state"], row["detail"], row["done_at"]) == ("done", "relearn requested", 5.0)
    assert commands.list(tenant="acme") == []
    failed = commands.send("gw1", "baseline_relearn", "pump")
    commands.record_results("gw1", [{"id": failed["id"], "ok": False, "detail": "no such pipeline"}])
    assert [c["state"] for c in commands.list()] == ["failed", "done"]


def test_commands_are_refused_for_other_tenants_agents_unknown_kinds_and_pipelines(commands):
    store = commands.c.store
    store.heartbeat("gw9", {}, [], HEALTH, 0, tenant="acme")
    with pytest.raises(NotInTenant) as other:
        commands.send("gw9", "baseline_relearn", "pump")  # acme's agent, from the default tenant
    with pytest.raises(NotInTenant) as missing:
        commands.send("nobody", "baseline_relearn", "pump", tenant="acme")
    assert str(other.value).replace("gw9", "X") == str(missing.value).replace("nobody", "X")
    with pytest.raises(ValueError, match="unknown command kind 'reboot'; known: baseline_relearn"):
        commands.send("gw9", "reboot", "pump", tenant="acme")
    with pytest.raises(ValueError, match="has no pipeline 'pmup'; it reported: camera, pump"):
        commands.send("gw9", "baseline_relearn", "pmup", tenant="acme")
    with pytest.raises(ValueError, match="pipeline camera of agent gw9 has no baseline.*with one: pump"):
        commands.send("gw9", "baseline_relearn", "camera", tenant="acme")
    assert commands.list(tenant="acme") == []


def test_nul_characters_from_an_agent_or_an_admin_never_fail_the_control_state(commands):
    """PostgreSQL's text holds no NUL character: a command result whose detail held one failed the whole state
    report, and the agent reports a result until it is recorded, so every heartbeat of that agent failed (and
    every Connect stream ended) for good. Now the detail is kept without it; ids with one match nothing; an
    admin's reason or a tenant's name with one is refused (INVALID_ARGUMENT), never a database error."""
    store, control = commands.c.store, commands.c
    store.heartbeat("gw1", {}, [], HEALTH, 0)
    cmd = commands.send("gw1", "baseline_relearn", "pump")
    assert commands.record_results("gw1", [{"id": "x\x00", "ok": True, "detail": "?"}]) == 0
    assert (
        commands.record_results(
            "gw1", [{"id": cmd["id"], "ok": False, "detail": "bad\x00byte", "done_at": NAN}]
        )
        == 1
    )
    [done] = commands.list("gw1")
    assert (done["state"], done["detail"]) == ("failed", "bad\ufffdbyte") and done["done_at"] > 0
    assert (
        commands.pending_many([("default", "gw1")])[("default", "gw1")][1] == []
    )  # it left the desired state
    with pytest.raises(ValueError, match="NUL"):
        commands.send("gw1", "baseline_relearn", "pump", "bearing\x00replaced")
    with pytest.raises(ValueError, match="NUL"):
        control.create_tenant("acme", "ACME\x00Gears")
    assert control.on_report("gw1", "d\x00", "vision", "1.0.0", "healthy", True, "", {}) is False
    assert control.deployed_to("gw1", "ab\x00") is False  # a download request: PERMISSION_DENIED, not UNKNOWN
    with pytest.raises(NotInTenant):
        control.get("d\x00")


STATE_HEALTH = {
    "spindle": {
        "baseline": {
            "state": "ready",
            "state_tag": "Cutting",
            "state_names": ["idle", "cutting"],
            "process_states": ["idle"],
        }
    },
    "recip": {"baseline": {"state": "ready", "state_tag": "Step", "process_states": ["0", "1"]}},
    "pump": {"baseline": {"state": "ready"}},
}


def test_a_relearn_of_one_process_state_reaches_the_agent_and_a_state_it_lacks_is_refused(commands):
    """``cloud-trainer baseline relearn AGENT PIPELINE --state NAME``: the command carries the state into the
    agent's desired state (``AgentCommand.process_state``); a state the agent's baseline does not have (as it
    reported it), or a pipeline that reported no process states (an agent that would relearn every state),
    is refused at once naming what it has."""
    from cloud_trainer.fleet.commands import add_commands
    from protocols.gen import fleet_pb2 as pb

    commands.c.store.heartbeat("gw1", {}, [], STATE_HEALTH, 0)
    cmd = commands.send("gw1", "baseline_relearn", "spindle", "new tool", "alice", "cutting")
    whole = commands.send("gw1", "baseline_relearn", "recip", "", "alice", "2")  # a whole value, not seen yet
    every = commands.send("gw1", "baseline_relearn", "spindle")
    pending = commands.pending_many([("default", "gw1")])[("default", "gw1")]
    assert [(c["id"], c.get("process_state", "")) for c in pending[1]] == [
        (cmd["id"], "cutting"),
        (whole["id"], "2"),
        (every["id"], ""),
    ]
    reply = pb.HeartbeatReply()
    add_commands(reply, pending)
    assert [c.process_state for c in reply.commands] == ["cutting", "2", ""]
    assert {c["id"]: c["process_state"] for c in commands.list("gw1")}[cmd["id"]] == "cutting"
    with pytest.raises(
        ValueError, match=r"no process state 'drilling'; its states \(baseline.states\): idle, cutting"
    ):
        commands.send("gw1", "baseline_relearn", "spindle", "", "", "drilling")
    with pytest.raises(ValueError, match="whole value of state tag 'Step'.*seen: 0, 1"):
        commands.send("gw1", "baseline_relearn", "recip", "", "", "on")
    with pytest.raises(ValueError, match="pipeline pump of agent gw1 has reported no process states"):
        commands.send("gw1", "baseline_relearn", "pump", "", "", "idle")
    with pytest.raises(ValueError, match="1-64 letters"):
        commands.send("gw1", "baseline_relearn", "spindle", "", "", "a b")
    assert len(commands.list("gw1")) == 3


def test_a_control_db_made_before_process_states_gets_the_column(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "control.db")
    db.executescript(
        "CREATE TABLE commands (tenant TEXT NOT NULL, id TEXT NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,"
        " pipeline TEXT NOT NULL, reason TEXT NOT NULL, issued_at REAL NOT NULL, issued_by TEXT NOT NULL,"
        " state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', done_at REAL, generation INTEGER NOT NULL,"
        " PRIMARY KEY (tenant, id));"
        "INSERT INTO commands VALUES ('default', 'old1', 'gw1', 'baseline_relearn', 'pump', '', 1.0, 'al',"
        " 'pending', '', NULL, 1);"
    )
    db.close()
    store = SQLiteStore(tmp_path / "fleet.db")
    control = Control(tmp_path / "control.db", Registry(tmp_path / "registry"), store)
    try:
        commands = Commands(control)
        store.heartbeat("gw1", {}, [], STATE_HEALTH, 0)
        assert [c["id"] for c in commands.pending_many([("default", "gw1")])[("default", "gw1")][1]] == [
            "old1"
        ]
        commands.send("gw1", "baseline_relearn", "spindle", "", "", "idle")
        assert sorted(c["process_state"] for c in commands.list("gw1")) == ["", "idle"]
    finally:
        control.db.close()
        store.close()


def test_generations_are_times_that_only_go_up_and_the_newest_are_kept(commands, monkeypatch):
    """A generation is the time of its change in microseconds (the counter is every tenant's: a count told a
    tenant how many changes the others made between two of its own), one more than the last where the clock is
    behind it; the change log keeps the changes of the last ``KEEP_CHANGES_US`` (an hour)."""
    import time

    from cloud_trainer.fleet import control as control_mod

    store, control = commands.c.store, commands.c
    store.heartbeat("gw1", {"site": "a"}, [], HEALTH, 0)
    before = time.time_ns() // 1000
    gen = commands.send("gw1", "baseline_relearn", "pump")["generation"]
    assert before <= gen <= time.time_ns() // 1000
    # a clock behind the last generation (stepped back, or another replica's ahead): still one more
    ahead = gen + 3_600_000_000
    control.db.execute("UPDATE counters SET value = ? WHERE key = 'generation'", (ahead,))
    gens = [commands.send("gw1", "baseline_relearn", "pump")["generation"] for _ in range(4)]
    assert gens == [ahead + 1, ahead + 2, ahead + 3, ahead + 4]
    monkeypatch.setattr(control_mod, "KEEP_CHANGES_US", 2)  # of the newest: ahead + 2 .. ahead + 4
    control.tick()
    kept = [g for (g,) in control.db.execute("SELECT DISTINCT generation FROM changes ORDER BY generation")]
    assert kept == gens[-3:]
    assert control.changes_since(gens[0]) == (gens[-1], [("default", "gw1")])


def _history(commands, n: int, tenant: str = "default", agent: str = "gw1", prefix: str = "old") -> None:
    """``n`` finished commands of the agent, as an admin's script of sends and acks leaves them (kept: the audit)."""
    from cloud_trainer.fleet.commands import COLS

    with commands.c._write():
        commands.c.db.executemany(
            "INSERT INTO commands (tenant, " + ", ".join(COLS) + ") VALUES (?" + ",?" * len(COLS) + ")",
            [
                (
                    tenant,
                    f"{prefix}{i}",
                    agent,
                    "baseline_relearn",
                    "pump",
                    "",
                    1.0 + i,
                    "script",
                    "done",
                    "ok",
                )
                + (2.0 + i, 1 + i, "")
                for i in range(n)
            ],
        )


def test_a_long_history_of_finished_commands_leaves_the_pending_list_and_generation_right(commands):
    """Finished commands are kept (who asked for what); a heartbeat reads only its agent's pending commands and
    its latest generation through the indexes (it read every finished command before: 100,000 of them, 186 ms a
    heartbeat under the lock every tenant's calls wait for): sent, acked, failed, acked again, sent again."""
    store = commands.c.store
    store.heartbeat("gw1", {}, [], HEALTH, 0)
    store.heartbeat("gw2", {}, [], HEALTH, 0)
    _history(commands, 2000)
    key = ("default", "gw1")
    assert commands.pending_many([key])[key] == (2000, [])  # the newest change is a finished command's
    a, b, c = (commands.send("gw1", "baseline_relearn", "pump", str(i)) for i in range(3))
    other = commands.send("gw2", "baseline_relearn", "pump")
    gen, cmds = commands.pending_many([key])[key]
    assert gen == c["generation"] and [x["id"] for x in cmds] == [a["id"], b["id"], c["id"]]
    assert commands.record_results("gw1", [{"id": b["id"], "ok": True}, {"id": a["id"], "ok": False}]) == 2
    gen2, cmds = commands.pending_many([key])[key]
    assert gen2 > gen and [x["id"] for x in cmds] == [c["id"]]
    assert commands.record_results("gw1", [{"id": b["id"], "ok": True}, {"id": "old7", "ok": True}]) == 0
    assert commands.pending_many([key])[key][0] == gen2  # a replay and a finished id change nothing
    assert commands.record_results("gw1", [{"id": c["id"], "ok": True}]) == 1
    gen3, cmds = commands.pending_many([key])[key]
    assert gen3 > gen2 and cmds == []  # the last one out: still a newer generation, the agent drops it
    again = commands.send("gw1", "baseline_relearn", "pump", "again")
    both = commands.pending_many([key, ("default", "gw2")])
    assert both[key] == (
        again["generation"],
        [{k: again[k] for k in ("id", "kind", "pipeline", "issued_at", "issued_by", "reason")}],
    )
    assert [x["id"] for x in both[("default", "gw2")][1]] == [other["id"]]
    assert (
        len(commands.list("gw1")) == 500
    )  # the newest 1000 finished are kept; the list shows the newest 500
    assert sum(1 for x in commands.list("gw1") if x["state"] == "failed") == 1


def test_an_agents_finished_commands_beyond_its_newest_kept_are_deleted_as_one_finishes(commands):
    """The finished-command history grew on disk without bound. As a command finishes, its agent's finished commands
    beyond the newest ``keep_finished`` (by generation) are deleted; pending ones, other agents' and other tenants'
    are not, and the agent's latest generation stays (the finished one just recorded carries it)."""
    from cloud_trainer.fleet.commands import KEEP_FINISHED, Commands

    assert commands.keep_finished == KEEP_FINISHED == 1000
    kept = Commands(commands.c, keep_finished=5)
    store = commands.c.store
    for agent, tenant in (("gw1", "default"), ("gw2", "default"), ("gw1", "acme")):
        store.heartbeat(agent, {}, [], HEALTH, 0, tenant=tenant)
        _history(commands, 12, tenant, agent, prefix="old" if agent == "gw1" else agent)
    a, b = (kept.send("gw1", "baseline_relearn", "pump", str(i)) for i in range(2))
    key = ("default", "gw1")
    assert kept.record_results("gw1", [{"id": a["id"], "ok": True}]) == 1
    gen, cmds = kept.pending_many([key])[key]

    def ids(agent: str, tenant: str = "default") -> list[str]:
        return [c["id"] for c in kept.list(agent, tenant=tenant) if c["state"] != "pending"]

    assert ids("gw1") == [a["id"], "old11", "old10", "old9", "old8"]  # was: all 13 kept
    assert [c["id"] for c in cmds] == [b["id"]] and gen > b[
        "generation"
    ]  # pending kept, the generation right
    assert len(ids("gw2")) == 12 and len(ids("gw1", "acme")) == 12
    assert (
        kept.record_results("gw1", [{"id": "old8", "ok": True}]) == 0
    )  # a replay: nothing changes, none read
    assert len(ids("gw1")) == 5
    assert kept.record_results("gw1", [{"id": b["id"], "ok": False}]) == 1
    assert (
        ids("gw1") == [b["id"], a["id"], "old11", "old10", "old9"] and kept.pending_many([key])[key][1] == []
    )


def test_a_long_finished_history_is_pruned_a_bounded_batch_at_a_finish_the_oldest_first(
    commands, monkeypatch
):
    """The first finish after an upgrade deleted an agent's whole history past its newest kept in one transaction:
    300,000 commands held the control's writer (every tenant's writes and heartbeats) 5.7 s on SQLite. Each finish
    now deletes at most ``PRUNE_BATCH`` of them, the oldest first, and the history shrinks to the kept ones over the
    next finishes; pending commands and other agents' are never touched."""
    import cloud_trainer.fleet.commands as module

    monkeypatch.setattr(module, "PRUNE_BATCH", 4, raising=False)
    kept = module.Commands(commands.c, keep_finished=3)
    commands.c.store.heartbeat("gw1", {}, [], HEALTH, 0)
    commands.c.store.heartbeat("gw2", {}, [], HEALTH, 0)
    _history(commands, 12)
    _history(commands, 12, agent="gw2", prefix="gw2-")
    sent = [kept.send("gw1", "baseline_relearn", "pump", str(i)) for i in range(4)]

    def finished() -> list[str]:
        return sorted(c["id"] for c in kept.list("gw1") if c["state"] != "pending")

    kept.record_results("gw1", [{"id": sent[0]["id"], "ok": True}])
    old = [f"old{i}" for i in range(12)]
    assert finished() == sorted([*old[4:], sent[0]["id"]])  # was: all but the newest 3 at once
    kept.record_results("gw1", [{"id": sent[1]["id"], "ok": True}])
    assert finished() == sorted([*old[8:], sent[0]["id"], sent[1]["id"]])
    kept.record_results("gw1", [{"id": sent[2]["id"], "ok": True}])
    assert finished() == sorted(c["id"] for c in sent[:3])  # down to the newest 3
    assert [c["id"] for c in kept.list("gw1") if c["state"] == "pending"] == [sent[3]["id"]]
    assert len([c for c in kept.list("gw2") if c["state"] != "pending"]) == 12


NEW_INDEXES = {
    "commands_by_generation": "(tenant, agent, generation)",
    "commands_by_agent_time": "(tenant, agent, issued_at)",
    "commands_by_time": "(tenant, issued_at)",
    "commands_pending": "(tenant, agent, state, issued_at)",
}
# the pending read's index before, replaced by commands_pending (in order of issue: this one left them to be sorted)
OLD_INDEX = "CREATE INDEX commands_by_agent ON commands (tenant, agent, state)"


def test_the_heartbeat_read_goes_through_the_indexes_of_an_upgraded_control_state(commands, tmp_path):
    """A control.db or PostgreSQL database made before ``commands_by_generation`` (and the list's indexes) gets
    them when opened, and the heartbeat's two reads and an admin's lists use an index (never a scan or a sort of
    the agent's whole history)."""
    from cloud_trainer.fleet.commands import LATEST_GENERATION, LIST_AGENT, LIST_TENANT, PENDING

    db = commands.c.db
    if hasattr(db, "executescript"):
        for index in NEW_INDEXES:
            db.execute(f"DROP INDEX {index}")
        db.execute(OLD_INDEX)
        db.close()
        control = Control(tmp_path / "control.db", Registry(tmp_path / "registry"), commands.c.store)
        upgraded = Commands(control)
        plans = [
            " ".join(r[-1] for r in control.db.execute("EXPLAIN QUERY PLAN " + sql, args))
            for sql, args in (
                (LATEST_GENERATION, ("default", "gw1")),
                (PENDING, ("default", "gw1")),
                (LIST_AGENT, ("default", "gw1")),
                (LIST_TENANT, ("default",)),
            )
        ]
        assert "USING COVERING INDEX commands_by_generation (" in plans[0], plans
        assert "USING INDEX commands_pending (tenant=? AND agent=? AND state=?)" in plans[1], plans
        assert "USING INDEX commands_by_agent_time (" in plans[2], plans
        assert "USING INDEX commands_by_time (" in plans[3], plans
        assert "SCAN" not in " ".join(plans) and "TEMP B-TREE" not in " ".join(plans), plans
        assert (
            control.db.execute("SELECT name FROM sqlite_master WHERE name = 'commands_by_agent'").fetchall()
            == []
        )
    else:
        import psycopg

        with psycopg.connect(db.url, autocommit=True) as conn:  # a database from before migration 0016
            for index in NEW_INDEXES:
                conn.execute(f"DROP INDEX {index}")
            conn.execute(OLD_INDEX)
            conn.execute("DELETE FROM schema_version WHERE version >= 16")
        db.close()
        control = Control(db.url, Registry(tmp_path / "registry"), commands.c.store)
        upgraded = Commands(control)
        with psycopg.connect(db.url, autocommit=True) as conn:
            got = conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s) ORDER BY indexname",
                ([*NEW_INDEXES, "commands_by_agent"],),
            ).fetchall()
        assert [(n, d.split(" USING btree ")[1]) for n, d in got] == sorted(NEW_INDEXES.items())
    try:
        commands.c.store.heartbeat("gw1", {}, [], HEALTH, 0)
        cmd = upgraded.send("gw1", "baseline_relearn", "pump")
        assert upgraded.pending_many([("default", "gw1")])[("default", "gw1")] == (
            cmd["generation"],
            [{k: cmd[k] for k in ("id", "kind", "pipeline", "issued_at", "issued_by", "reason")}],
        )
    finally:
        control.db.close()


def test_migration_0017_lets_an_older_replica_write_and_read_commands_while_its_indexes_build(
    postgres_url,  # noqa: F811
    tmp_path,
):
    """An older replica still serving during a rolling upgrade writes commands (an admin's, its agents' results) and
    reads them at each heartbeat: 0017 built its three indexes inside its transaction, each SHARE lock (waiting for a
    write under way, then held for the build) stopping every later write to ``commands``, and its DROP of the former
    index every read too, until it committed. Built and dropped CONCURRENTLY outside a transaction, both go on."""
    import psycopg

    from tests.support.postgres import upgrade_beside_an_open_write

    row = (
        "INSERT INTO commands (tenant, id, agent, kind, pipeline, reason, issued_at, issued_by, state, generation) "
        "VALUES ('default', %s, 'gw1', 'baseline_relearn', 'pump', '', 1, 'admin', 'pending', 1)"
    )
    read = "SELECT count(*) FROM commands WHERE tenant = 'default' AND agent = 'gw1' AND state = 'pending'"
    applied, pending = upgrade_beside_an_open_write(postgres_url, tmp_path, 17, row, "commands_pending", read)
    assert 17 in applied and pending == 1  # (the later write's own, the first not committed yet)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        got = admin.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = ANY(%s) ORDER BY c.relname",
            ([*NEW_INDEXES, "commands_by_agent"],),
        ).fetchall()
        assert got == [(name, True) for name in sorted(NEW_INDEXES)]


def test_a_full_command_queue_is_not_a_full_tenant_of_rollouts():
    """``TooManyCommands`` subclassed ``TooManyRollouts``: a handler of a tenant's full rollouts took an agent's full
    command queue for one. Siblings now (the Admin service answers each ``RESOURCE_EXHAUSTED``: test_fleet_tenants)."""
    from cloud_trainer.fleet.commands import TooManyCommands
    from cloud_trainer.fleet.control import TooManyRollouts

    assert not issubclass(TooManyCommands, TooManyRollouts) and not issubclass(
        TooManyRollouts, TooManyCommands
    )
