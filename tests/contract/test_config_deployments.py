"""Config deployments in the control state, on SQLite and on PostgreSQL alike: canary step by step, the
desired state carrying the YAML, a failure halting the rollout and giving the canary its previous config
back (marked as a rollback), removal, another tenant refused, a refused YAML storing nothing."""

from __future__ import annotations

import json

import pytest

from cloud_trainer.fleet.control import Control, NotInTenant
from cloud_trainer.fleet.store import open_store
from cloud_trainer.registry import Registry
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)

A = b"sources: {plant: {type: mqtt, host: 127.0.0.1}}\n"
B = b"sources: {plant: {type: mqtt, host: 10.0.0.9}}\n"


def refuse_bad(data: bytes, name: str) -> None:
    if b"bad" in data:
        raise ValueError(f"agent configuration refused: {name}: sources.bad.port: out of range")


@pytest.fixture(params=["sqlite", "postgresql"])
def control(request, tmp_path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    store = open_store(url, tmp_path)
    for agent in ("gw1", "gw2"):
        store.heartbeat(agent, {"site": "plant"}, [], {}, 0, {})
    c = Control(
        url or tmp_path / "control.db", Registry(tmp_path / "registry"), store, config_validator=refuse_bad
    )
    yield c
    store.close()


def test_a_config_rolls_out_halts_rolls_back_and_is_removed(control):
    c = control
    a = c.create_config(
        {"config_yaml": A, "config_name": "line-a", "selector": {"site": "plant"}, "steps": ["1", "100%"]}
    )
    assert a["kind"] == "config" and a["version"] == a["digest"] and a["config_yaml"] == A.decode()
    gen, slots, cfg = c.desired_state("gw1")
    assert slots == [] and cfg == {
        "deployment_id": a["id"],
        "digest": a["digest"],
        "name": "line-a",
        "rollback": False,
        "yaml": A,
    }
    assert c.desired_state("gw2")[2] is None  # the canary step first
    for step in ("applied", "healthy"):
        assert c.on_report("gw1", a["id"], "", a["digest"], step, True, "", {})
    assert c.desired_state("gw2")[2]["digest"] == a["digest"]
    c.on_report("gw2", a["id"], "", a["digest"], "healthy", True, "", {})
    assert c.get(a["id"])["state"] == "completed"
    assert c.desired_for("gw1", {}, [], {})[1] == []  # the config is never a model slot

    b = c.create_config(
        {"config_yaml": B, "config_name": "line-b", "agents": ["gw1", "gw2"], "steps": ["1", "100%"]}
    )
    assert c.get(b["id"])["previous"]["gw1"]["deployment_id"] == a["id"]
    assert c.desired_state("gw1")[2]["digest"] == b["digest"]
    c.on_report("gw1", b["id"], "", b["digest"], "rolled_back", False, "source plant: not connected", {})
    d = c.get(b["id"])
    assert d["state"] == "halted" and "not connected" in d["reason"]
    back = c.desired_state("gw1")[2]
    assert (back["deployment_id"], back["digest"], back["rollback"], back["yaml"]) == (
        a["id"],
        a["digest"],
        True,
        A,
    )
    assert c.desired_state("gw2")[2]["digest"] == a["digest"]  # never received B

    c.command(a["id"], "remove")
    assert c.desired_state("gw1")[2] is None and c.desired_state("gw2")[2] is None
    assert c.get(a["id"])["state"] == "removed"


def test_refusals_store_nothing_and_another_tenant_sees_no_agents(control):
    c = control
    with pytest.raises(ValueError, match="sources.bad.port"):
        c.create_config({"config_yaml": b"bad: 1\n", "config_name": "x", "agents": ["gw1"]})
    with pytest.raises(NotInTenant):
        c.create_config({"config_yaml": A, "agents": ["gw1"]}, tenant="acme")
    with pytest.raises(ValueError, match="config name"):
        c.create_config({"config_yaml": A, "config_name": "../x", "agents": ["gw1"]})
    with pytest.raises(ValueError, match="'@'"):
        c.create({"package": "p", "slot": "@config", "agents": ["gw1"]})
    # a slot as a config may spell it: its agents report it as 'vision', a rollout keyed 'vision/' had no way back
    for spelt in ("vision/", "./vision", "././vision/"):
        with pytest.raises(ValueError, match=r"^deploy to 'vision': slot "):
            c.create({"package": "p", "slot": spelt, "agents": ["gw1"]})
    with pytest.raises(ValueError, match="not a model slot name"):
        c.create({"package": "p", "slot": "./", "agents": ["gw1"]})
    assert c.list() == [] and c.desired_state("gw1") == (0, [], None)


def test_a_rollout_step_shares_one_generation_and_an_old_change_log_is_replaced(tmp_path):
    """A fleet-wide step costs one generation (every agent of the step is logged under it, and streams push
    them all); a control.db from before, whose change log was keyed by generation alone, opens and works."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "control.db")
    db.execute(
        "CREATE TABLE changes (generation INTEGER PRIMARY KEY, tenant TEXT NOT NULL, agent TEXT NOT NULL)"
    )
    db.execute("INSERT INTO changes VALUES (7, 'default', 'gw0')")
    db.commit()
    db.close()
    store = open_store(None, tmp_path)
    for agent in ("gw1", "gw2", "gw3"):
        store.heartbeat(agent, {"site": "plant"}, [], {}, 0, {})
    c = Control(tmp_path / "control.db", Registry(tmp_path / "registry"), store, config_validator=refuse_bad)
    before = c.generation()
    c.create_config({"config_yaml": A, "config_name": "a", "selector": {"site": "plant"}, "steps": ["100%"]})
    gen, changed = c.changes_since(before)
    assert sorted(changed) == [("default", "gw1"), ("default", "gw2"), ("default", "gw3")]
    # the step's three agents share one generation (a time, not before + 1: generations are no count)
    assert gen > before
    assert c.db.execute(
        "SELECT DISTINCT generation FROM changes WHERE generation > ?", (before,)
    ).fetchall() == [(gen,)]
    assert {k: v[0] for k, v in c.desired_many(changed).items()} == dict.fromkeys(changed, gen)
    store.close()


class _CountingJson:
    """``json`` for the control module, counting the documents it parses."""

    def __init__(self) -> None:
        self.parsed = 0

    def loads(self, s):
        self.parsed += 1
        return json.loads(s)

    dumps = staticmethod(json.dumps)


def test_the_rollout_tick_and_an_admins_list_parse_only_the_documents_they_need(control, monkeypatch):
    """Finished deployments of every tenant pile up in one table, and the rollout tick runs every second on every
    replica, inside the write transaction every tenant's reports and desired states wait behind: it parsed every
    document ever written (2,000 finished rollouts of 50 agents: 0.38 s of each second), and an admin's list
    parsed every tenant's. Now the tick reads the running deployments and a list its tenant's only."""
    import cloud_trainer.fleet.control as control_module

    c = control
    with c._write():
        for i in range(50):  # another tenant's history (a slot each: none past the finished rollouts kept)
            c._put(
                {
                    "id": f"old{i}",
                    "created": float(i),
                    "tenant": "beta",
                    "state": "completed",
                    "slot": f"s{i}",
                    "targets": {},
                }
            )
    a = c.create_config(
        {"config_yaml": A, "config_name": "a", "agents": ["gw1", "gw2"], "steps": ["1", "100%"]}
    )
    counting = _CountingJson()
    monkeypatch.setattr(control_module, "json", counting)
    c.tick()
    assert counting.parsed < 10  # not the 50 finished documents
    counting.parsed = 0
    assert [d["id"] for d in c.list()] == [a["id"]] and counting.parsed < 10
    assert c.usage() == {"beta": 50, "default": 1}
    assert c.desired_state("gw1")[2]["digest"] == a["digest"]  # the rollout itself goes on


def test_deployments_written_before_the_state_column_are_read_as_before(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "control.db")
    db.execute("CREATE TABLE deployments (id TEXT PRIMARY KEY, created REAL NOT NULL, doc TEXT NOT NULL)")
    for i, state in enumerate(("completed", "paused")):
        doc = {"id": f"d{i}", "created": float(i), "tenant": "beta", "state": state, "targets": {}}
        db.execute("INSERT INTO deployments VALUES (?, ?, ?)", (doc["id"], doc["created"], json.dumps(doc)))
    db.commit()
    db.close()
    store = open_store(None, tmp_path)
    c = Control(tmp_path / "control.db", Registry(tmp_path / "registry"), store, config_validator=refuse_bad)
    assert [d["id"] for d in c.list(tenant="beta")] == ["d1", "d0"] and c.list() == []
    assert c.usage() == {"beta": 2}
    rows = c.db.execute("SELECT id, tenant, state FROM deployments ORDER BY id").fetchall()
    assert rows == [("d0", "beta", "completed"), ("d1", "beta", "paused")]
    c.tick()  # neither is running
    store.close()


def test_a_gateway_joining_the_group_and_a_stalled_step_on_either_store(control):
    """The rollout reads its group (agents that join it) and a stalled step's last heartbeats from the store,
    and its newer rollouts from the control state: the same on SQLite and PostgreSQL."""
    c = control
    now = [1000.0]
    c.clock = c.monotonic = lambda: now[0]
    a = c.create_config(
        {"config_yaml": A, "config_name": "line-a", "selector": {"site": "plant"}, "steps": ["1", "100%"]}
    )
    c.store.heartbeat("gw3", {"site": "plant"}, [], {}, 0, {})  # enrolled meanwhile
    now[0] += c.step_timeout_s
    c.tick()
    d = c.get(a["id"])
    assert d["targets"]["gw3"]["status"] == "waiting" and d["stalled"]["agents"] == ["gw1"], d
    c.on_report("gw1", a["id"], "", a["digest"], "healthy", True, "", {})
    assert c.desired_state("gw3")[2]["digest"] == a["digest"]  # the last step reaches it


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_finished_rollouts_past_the_newest_of_their_tenant_and_slot_are_pruned_but_those_still_named(
    request, tmp_path, backend
):
    """Finished rollouts were never deleted: a platform of thousands of tenants rolling out weekly grew its control
    state (and every admin's list) without bound. A service keeping 2 per tenant and slot deletes the older ones at
    its tick, but one an agent's desired state still names (gw2 runs the first configuration: no later rollout
    reached it), and another tenant's or another slot's are counted apart. Deployments written before the slot
    column (an older file or database) are read into it."""
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    where = url or tmp_path / "control.db"
    store = open_store(url, tmp_path)
    for tenant in ("default", "acme"):
        for agent in ("gw1", "gw2"):
            store.heartbeat(agent, {"site": "plant"}, [], {}, 0, {}, tenant=tenant)
    c = Control(where, Registry(tmp_path / "registry"), store, config_validator=refuse_bad, keep_rollouts=0)
    try:

        def rolled_out(n: int, agents: list[str], tenant: str = "default") -> str:
            yaml = b"sources: {plant: {type: mqtt, host: 10.0.0.%d}}\n" % n
            dep = c.create_config(
                {"config_yaml": yaml, "config_name": f"c{n}", "agents": agents, "steps": ["100%"]},
                tenant=tenant,
            )
            for agent in agents:
                c.on_report(agent, dep["id"], "", dep["digest"], "healthy", True, "", {}, tenant=tenant)
            assert c.get(dep["id"], tenant=tenant)["state"] == "completed"
            return dep["id"]

        first = rolled_out(1, ["gw1", "gw2"])
        ids = [rolled_out(n, ["gw1"]) for n in range(2, 6)]
        theirs = [rolled_out(n, ["gw1"], tenant="acme") for n in range(6, 8)]
        c.tick()  # keeping all: nothing deleted
        assert len(c.list()) == 5 and len(c.list(tenant="acme")) == 2
        c.db.execute("UPDATE deployments SET slot = NULL")  # as written before the column
    finally:
        c.close()
    kept = Control(
        where, Registry(tmp_path / "registry"), store, config_validator=refuse_bad, keep_rollouts=2
    )
    try:
        kept.tick()
        assert [d["id"] for d in kept.list()] == [ids[3], ids[2], first]
        assert [d["id"] for d in kept.list(tenant="acme")] == theirs[::-1]
        assert kept.desired_state("gw2")[2]["yaml"] == b"sources: {plant: {type: mqtt, host: 10.0.0.1}}\n"
        assert kept.desired_state("gw1")[2]["deployment_id"] == ids[3]
        assert kept.prune_finished() == 0  # the next look finds nothing more
    finally:
        kept.close()
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_finished_rollout_named_by_following_or_by_a_config_rollouts_previous_is_never_pruned(
    request, tmp_path, backend
):
    """The prune keeps a finished rollout past the newest of its slot while a rollout in progress would give it
    back at a halt (its ``previous``: the agents' desired rows name the new one meanwhile) and while a completed
    group rollout gives its version to gateways joining the group (``following``); the halt then sends the kept
    configuration back, YAML and all."""
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    store = open_store(url, tmp_path)
    for agent in ("gw1", "gw2", "gw3"):
        store.heartbeat(agent, {"site": "plant"}, [], {}, 0, {})
    c = Control(
        url or tmp_path / "control.db",
        Registry(tmp_path / "registry"),
        store,
        config_validator=refuse_bad,
        keep_rollouts=1,
    )
    now = [1000.0]
    c.clock = lambda: now[0]
    try:

        def config(n: int) -> bytes:
            return b"sources: {plant: {type: mqtt, host: 10.0.0.%d}}\n" % n

        def rolled_out(n: int, agents: list[str]) -> str:
            now[0] += 1  # one after the other
            dep = c.create_config(
                {"config_yaml": config(n), "config_name": f"c{n}", "agents": agents, "steps": ["100%"]}
            )
            for agent in agents:
                c.on_report(agent, dep["id"], "", dep["digest"], "healthy", True, "", {})
            assert c.get(dep["id"])["state"] == "completed"
            return dep["id"]

        first = rolled_out(1, ["gw1", "gw2"])
        rolled_out(2, ["gw3"])
        third = rolled_out(3, ["gw3"])
        now[0] += 1
        ongoing = c.create_config(
            {"config_yaml": config(4), "config_name": "c4", "agents": ["gw1", "gw2"], "steps": ["100%"]}
        )
        assert c.desired_state("gw2")[2]["deployment_id"] == ongoing["id"]  # no desired row names c1 now
        assert c.get(ongoing["id"])["previous"]["gw2"]["deployment_id"] == first
        # a completed group rollout of a model slot, older than the newest kept, that gateways joining get
        with c._write():
            for i in range(3):
                c._put(
                    {
                        "id": f"m{i}",
                        "created": float(i),
                        "tenant": "default",
                        "kind": "model",
                        "state": "completed",
                        "slot": "vision",
                        "targets": {},
                    }
                )
            c.db.execute(
                "INSERT INTO following (tenant, slot, deployment_id) VALUES ('default', 'vision', 'm0')"
            )
        now[0] += 601  # the prune is due
        c.tick()
        assert {d["id"] for d in c.list()} == {ongoing["id"], third, first, "m2", "m0"}
        c.on_report("gw1", ongoing["id"], "", ongoing["digest"], "failed", False, "source plant: refused", {})
        assert c.get(ongoing["id"])["state"] == "halted"
        back = c.desired_state("gw2")[2]
        assert (back["deployment_id"], back["rollback"], back["yaml"]) == (first, True, config(1))
    finally:
        c.close()
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rows_an_older_replica_writes_without_a_slot_are_not_pruned_as_one_slot(request, tmp_path, backend):
    """During a rolling upgrade an older replica writes deployments without the slot column: the prune ranked all
    of a tenant's such rows as one slot (four slots' only finished rollouts, two deleted keeping 2). They are
    left out of the ranking, and a newer replica's next write of one sets its slot."""
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    store = open_store(url, tmp_path)
    c = Control(
        url or tmp_path / "control.db",
        Registry(tmp_path / "registry"),
        store,
        config_validator=refuse_bad,
        keep_rollouts=2,
    )
    try:
        docs = [
            {
                "id": f"old-{slot}",
                "tenant": "default",
                "kind": "model",
                "created": 100.0 + i,
                "state": "completed",
                "slot": slot,
                "targets": {},
                "previous": {},
            }
            for i, slot in enumerate(["vision", "vibration", "acoustic", "thermal"])
        ]
        for d in docs:  # the older replica's statement: no slot column
            c.db.execute(
                "INSERT INTO deployments (id, created, doc, tenant, state) VALUES (?, ?, ?, ?, ?)",
                (d["id"], d["created"], json.dumps(d), "default", "completed"),
            )
        assert c.prune_finished() == 0
        assert len(c.list()) == 4
        with c._write():
            c._put(docs[0])  # this replica's write of it
        assert c.db.execute("SELECT slot FROM deployments WHERE id = 'old-vision'").fetchone()[0] == "vision"
    finally:
        c.close()
        store.close()


def test_a_configuration_gone_between_the_two_reads_of_a_desired_state_fails_only_that_agent(control):
    """An agent's desired rows and its configuration's YAML are two reads: another replica moving the agent on
    and pruning the configuration between them raised NotInTenant (a heartbeat UNAVAILABLE, a stream push failed
    for its whole batch). The rows are read again; a configuration still gone fails that agent's heartbeat (never
    "none", which would send the agent back to its local file) and leaves it out of a batch's push."""
    c = control
    a = c.create_config({"config_yaml": A, "config_name": "line-a", "agents": ["gw1"], "steps": ["100%"]})
    b = c.create_config({"config_yaml": B, "config_name": "line-b", "agents": ["gw2"], "steps": ["100%"]})
    c._yaml_cache.clear()
    c.db.execute("DELETE FROM deployments WHERE id = ?", (a["id"],))  # as another replica's prune would
    with pytest.raises(NotInTenant):
        c.desired_state("gw1")
    many = c.desired_many([("default", "gw1"), ("default", "gw2")])
    assert ("default", "gw1") not in many and many[("default", "gw2")][2]["yaml"] == B
    assert c.desired_state("gw2")[2]["deployment_id"] == b["id"]


def test_an_admins_command_whose_tick_prunes_its_deployment_answers_with_it(tmp_path):
    """An admin's remove of an old configuration, whose tick's prune then deleted it (no longer named, past the
    newest kept), was answered PERMISSION_DENIED 'no deployment' though it was done: the record written is
    returned."""
    store = open_store(None, tmp_path)
    for agent in ("gw1", "gw2"):
        store.heartbeat(agent, {"site": "plant"}, [], {}, 0, {})
    c = Control(
        tmp_path / "control.db",
        Registry(tmp_path / "registry"),
        store,
        config_validator=refuse_bad,
        keep_rollouts=1,
    )
    now = [1000.0]
    c.clock = lambda: now[0]
    try:
        old = c.create_config({"config_yaml": A, "config_name": "a", "agents": ["gw1"], "steps": ["100%"]})
        c.on_report("gw1", old["id"], "", old["digest"], "healthy", True, "", {})
        now[0] += 1
        new = c.create_config({"config_yaml": B, "config_name": "b", "agents": ["gw2"], "steps": ["100%"]})
        c.on_report("gw2", new["id"], "", new["digest"], "healthy", True, "", {})
        now[0] += 601  # the prune is due at the command's tick
        done = c.command(old["id"], "remove")
        assert done["id"] == old["id"] and done["state"] == "removed"
        assert c.desired_state("gw1")[2] is None
        assert [d["id"] for d in c.list()] == [new["id"]]  # pruned, as it may be
    finally:
        c.close()
        store.close()


def test_the_slot_back_fill_commits_in_batches_and_skips_a_document_it_cannot_read(tmp_path, caplog):
    """The slot column of deployments written before it was filled reading every document at once and updating
    them in one transaction (2,000 rollouts of 135 MB on PostgreSQL: 9.6 s holding every replica's writes, 270
    MB more); one document that was not JSON (or null) stopped the service at start. Now FILL_BATCH rows a
    transaction, and such a document is skipped with a WARNING naming it."""
    import logging

    store = open_store(None, tmp_path)
    c = Control(tmp_path / "control.db", Registry(tmp_path / "registry"), store, config_validator=refuse_bad)
    n = 1010  # FILL_BATCH (500) twice and some
    with c._write():
        c.db.executemany(
            "INSERT INTO deployments (id, created, doc, tenant, state) VALUES (?, ?, ?, 'default', 'completed')",
            [(f"d{i:05d}", float(i), json.dumps({"id": f"d{i:05d}", "slot": f"s{i % 7}"})) for i in range(n)]
            + [("bad1", 1.0, '{"id": "bad1", "targets": {'), ("bad2", 2.0, "null")],
        )
    c.close()
    commits = []

    class Traced(Control):
        def _fill_slots(self) -> None:
            self.db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
            try:
                super()._fill_slots()
            finally:
                self.db.set_trace_callback(None)

    with caplog.at_level(logging.WARNING, logger="cloud_trainer.fleet.control"):
        again = Traced(
            tmp_path / "control.db", Registry(tmp_path / "registry"), store, config_validator=refuse_bad
        )
    try:
        assert len(commits) >= 3, commits  # at least one transaction per FILL_BATCH rows
        filled = dict(again.db.execute("SELECT id, slot FROM deployments").fetchall())
        assert filled["d00008"] == "s1" and filled[f"d{n - 1:05d}"] == f"s{(n - 1) % 7}"
        assert filled["bad1"] is None and filled["bad2"] is None  # never pruned
        said = caplog.text
        assert "deployment bad1: its document cannot be read" in said and "deployment bad2:" in said, said
    finally:
        again.close()
        store.close()
