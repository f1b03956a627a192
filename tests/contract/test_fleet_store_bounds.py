# ruff: noqa: F811  (the store fixture imported from test_fleet_store is a parameter here)
"""What one agent can make the shared store keep for it, on both stores (SQLite, PostgreSQL): its bookkeeping rows
do not grow with kinds it makes up (a kind no agent sends is counted as ``other``), and the epochs it may open are a
rate (``EPOCHS_PER_WINDOW`` within ``EPOCH_WINDOW_S``): past it a batch opens one epoch at most (an outbox sends its
current epoch only: an agent whose data folder is not kept across restarts loses nothing), one opening two is
refused, nothing of it stored, and an ``outbox_corrupt`` event naming one more epoch ends none."""

from __future__ import annotations

import json

import pytest

from cloud_trainer.fleet import store as store_module
from cloud_trainer.fleet.store import TooManyEpochs
from tests.contract.test_fleet_store import postgres_server, postgres_url, rec, store  # noqa: F401  (fixtures)


def _rows(store, table: str, agent: str) -> int:
    with store._tx(write=False) as ex:
        return int(
            ex(
                store.q(f"SELECT COUNT(*) FROM {table} WHERE tenant = ? AND agent = ?"), ("default", agent)
            ).fetchone()[0]
        )


def _stats_steps(st, agent: str) -> tuple[int, dict]:
    """SQLite's progress steps (every 10 instructions) of ``st.stats(agent)``, and its answer."""
    steps = [0]
    for r in st.readers.queue:
        r.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
    try:
        got = st.stats(agent)
    finally:
        for r in st.readers.queue:
            r.set_progress_handler(None, 0)
    return steps[0], got


def _older(store, tmp_path, sqlite_script: str, pg_statements: list[str]):
    """``store``'s file or database as a store of before a table: ``sqlite_script`` / ``pg_statements`` (its
    ``schema_version`` rows among them) undo it, then it is opened again (SQLite: beside the fixture's store, which
    the fixture closes; a SQLiteStore closed twice waits 10 s for readers)."""
    from cloud_trainer.fleet.store import SQLiteStore, open_store

    if isinstance(store, SQLiteStore):
        store.db.executescript(sqlite_script)
        return SQLiteStore(tmp_path / "fleet.db")
    import psycopg

    store.close()
    with psycopg.connect(store.url, autocommit=True) as conn:
        for statement in pg_statements:
            conn.execute(statement)
    return open_store(store.url, tmp_path)


def test_kinds_no_agent_sends_are_counted_as_other_and_keep_their_own_kind(store):
    """200 kinds of its own: one bookkeeping row, not 200 (100,000 made the tenant's agents view 6.9 MB)."""
    made_up = [rec(s, kind=f"k{s}") for s in range(1, 201)]
    store.ingest("gwk", [*made_up, rec(201, kind="event"), rec(202)])
    st = store.stats("gwk")
    assert st["by_kind"] == {"other": 200, "event": 1, "result": 1}
    assert st["records"] == 202 and st["last_seq"] == 202
    assert _rows(store, "record_counts", "gwk") == 3
    assert store.records("gwk", kind="k7")[0]["seq"] == 7  # stored as sent
    assert store.gaps("gwk") == []


def test_an_agent_opens_a_bounded_number_of_epochs_per_window(store, monkeypatch):
    monkeypatch.setattr(store_module, "EPOCHS_PER_WINDOW", 3)
    store.ingest("gwe", [rec(1, epoch=1)])  # the first epoch ends nothing
    for e in (2, 3, 4):
        store.ingest("gwe", [rec(1, epoch=e)])
    assert store.stats("gwe")["epochs_24h"] == 3
    # past the bound, a batch opening two epochs (no outbox sends one) is refused: nothing of it stored
    with pytest.raises(
        TooManyEpochs,
        match=r"gwe .*4 epochs opened within 24 h, past the 3 .*epoch 6 after epoch 5 is refused",
    ):
        store.ingest("gwe", [rec(1, epoch=5), rec(1, epoch=6)])
    assert store.stats("gwe")["epoch"] == 4 and store.stats("gwe")["records"] == 4
    assert [g["epoch"] for g in store.gaps("gwe")] == [1, 2, 3]
    # past the bound, a batch opening one epoch (an agent whose data folder is not kept, at its 5th start) is
    # stored and counted: its records were refused, then lost with the folder at the next restart
    store.ingest("gwe", [rec(1, epoch=5), rec(2, epoch=5)])
    assert store.stats("gwe")["epoch"] == 5 and store.stats("gwe")["records"] == 6
    assert store.stats("gwe")["epochs_24h"] == 4
    assert [g["epoch"] for g in store.gaps("gwe")] == [1, 2, 3, 4]
    store.ingest("gwe", [rec(3, epoch=5), rec(1, epoch=2)])  # the current epoch and a replay of an older one
    assert store.stats("gwe")["records"] == 7
    # an outbox_corrupt event naming epochs never seen ends none past the bound (each was a row)
    for prev in (100, 101, 102):
        store.ingest(
            "gwe",
            [
                rec(
                    prev - 96,
                    epoch=5,
                    kind="event",
                    payload=json.dumps({"kind": "outbox_corrupt", "previous_epoch": prev}),
                )
            ],
        )
    assert [g["epoch"] for g in store.gaps("gwe")] == [1, 2, 3, 4]
    # the window passed (the ends' times moved back a day): the agent opens epochs again, two in a batch too
    with store._tx() as ex:
        ex(store.q("UPDATE gaps SET t = t - ? WHERE agent = 'gwe'"), (store_module.EPOCH_WINDOW_S,))
    store.ingest("gwe", [rec(1, epoch=6), rec(1, epoch=7)])
    assert store.stats("gwe")["epoch"] == 7 and store.stats("gwe")["epochs_24h"] == 2
    assert {"epoch": 5, "first": 7, "last": 0, "cause": "epoch_change"} in store.gaps("gwe")
    # at the bound, the renewed outbox's own outbox_corrupt event gives the previous epoch's end (written by its
    # batch) its cause: no new row
    monkeypatch.setattr(store_module, "EPOCHS_PER_WINDOW", 1)
    store.ingest("gwc", [rec(1, epoch=1), rec(2, epoch=1)])
    corrupt = json.dumps({"kind": "outbox_corrupt", "previous_epoch": 1})
    store.ingest("gwc", [rec(1, epoch=2, kind="event", payload=corrupt)])
    assert store.gaps("gwc") == [{"epoch": 1, "first": 3, "last": 0, "cause": "outbox_corrupt"}]


def test_one_callers_long_read_of_the_sqlite_store_holds_no_other_callers_read(tmp_path):
    """The SQLite store read on one connection for all: one tenant's long read (an agent's gaps over millions of
    records, its console refreshing) made every other tenant's stats and gaps wait behind it. Reads now take one of
    ``READERS`` connections each."""
    import concurrent.futures
    import threading

    from cloud_trainer.fleet.store import SQLiteStore

    st = SQLiteStore(tmp_path / "fleet.db")
    st.ingest("gw-b", [rec(1), rec(3)], tenant="beta")
    held, release = threading.Event(), threading.Event()

    def long_read() -> None:
        with st._tx(write=False) as ex:
            ex("SELECT COUNT(*) FROM records").fetchone()
            held.set()
            release.wait(20)

    reading = threading.Thread(target=long_read)
    reading.start()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        assert held.wait(10)
        gaps = pool.submit(st.gaps, "gw-b", tenant="beta")
        assert gaps.result(timeout=5) == [{"epoch": 0, "first": 2, "last": 2, "cause": "unknown"}]
        assert pool.submit(st.stats, "gw-b", tenant="beta").result(timeout=5)["records"] == 2
    finally:
        release.set()
        reading.join()
        pool.shutdown()
        st.close()


def test_the_gap_list_names_the_newest_holes_of_an_epoch_up_to_its_bound(store, monkeypatch):
    """300,000 records at every other seq were 300,000 holes built into the gap list at every console refresh;
    ``gaps`` lists an epoch's newest ``HOLES_READ`` (lowered here), with their causes, and its other gaps as before."""
    monkeypatch.setattr(store_module, "HOLES_READ", 3)
    store.ingest("gwh", [rec(s) for s in (3, 5, 7, 9, 11, 2**63 - 1)])
    drop = {"kind": "outbox_budget", "epoch": 0, "ranges": [[8, 8]]}
    store.ingest("gwh", [rec(2**63 - 2, kind="event", payload=json.dumps(drop))])
    # holes 4, 6, 8, 10 and 12..2^63-3: the newest three listed, 4 and 6 not
    assert store.gaps("gwh") == [
        {"epoch": 0, "first": 1, "last": 2, "cause": "unknown"},  # before the first stored seq: not a hole
        {"epoch": 0, "first": 8, "last": 8, "cause": "budget"},
        {"epoch": 0, "first": 10, "last": 10, "cause": "unknown"},
        {"epoch": 0, "first": 12, "last": 2**63 - 3, "cause": "unknown"},
    ]


def test_a_batch_refused_for_its_epoch_costs_the_writer_no_more_with_the_agents_loss_rows(
    tmp_path, monkeypatch
):
    """The epochs an agent opened within the window are counted in the batch's write transaction (the writer every
    tenant shares), for every batch opening one more, refused and not charged: read over all the agent's loss rows
    (up to ``LOSS_ROWS_PER_AGENT``), at 100,000 a refused 1-record batch held the writer ~90 ms, against ~20 ms. The
    epochs' ends are read through an index of their own: the refusal's work does not grow with the loss rows."""
    from cloud_trainer.fleet.store import SQLiteStore

    monkeypatch.setattr(store_module, "EPOCHS_PER_WINDOW", 2)
    st = SQLiteStore(tmp_path / "fleet.db")
    try:
        for e in (1, 2, 3):
            st.ingest("gwl", [rec(1, epoch=e)])
        steps = [0]

        def refused_steps() -> int:
            steps[0] = 0
            st.db.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
            try:
                with pytest.raises(TooManyEpochs):
                    st.ingest("gwl", [rec(1, epoch=9), rec(1, epoch=10)])  # two: refused
            finally:
                st.db.set_progress_handler(None, 0)
            return steps[0]

        few = refused_steps()
        with st.lock:  # 20,000 loss ranges told (the bound is 100,000)
            st.db.execute("BEGIN IMMEDIATE")
            st.db.executemany(
                "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES (?,?,?,?,?,?,?)",
                [("default", "gwl", 3, 4 * i + 2, 4 * i + 3, "budget", 1.0) for i in range(20_000)],
            )
            st.db.execute("COMMIT")
        assert refused_steps() <= 2 * few + 20
    finally:
        st.close()


def test_an_agents_loss_rows_are_kept_as_a_count_not_counted_at_each_loss_write(store, monkeypatch):
    """Every write carrying a loss event counted all the agent's rows (18-51 ms of the shared writer at 90,000):
    ``ingest.loss_rows`` keeps its loss ranges' count as each write leaves it, through the bound's pruning, counted
    once where it is NULL (a store of before it); the bound's room is what it was."""
    monkeypatch.setattr(store_module, "LOSS_ROWS_PER_AGENT", 10)

    def told(seq, *ranges):
        drop = {"kind": "outbox_budget", "epoch": 0, "ranges": [[a, a] for a in ranges]}
        return rec(seq, kind="event", payload=json.dumps(drop))

    def kept() -> tuple[int | None, int]:
        with store._tx(write=False) as ex:
            col = ex(store.q("SELECT loss_rows FROM ingest WHERE agent = 'gwn'")).fetchone()[0]
            n = ex(store.q("SELECT COUNT(*) FROM gaps WHERE agent = 'gwn' AND last <> 0")).fetchone()[0]
        return col, int(n)

    store.ingest("gwn", [rec(1), told(100, 2, 4, 6)])
    assert kept() == (3, 3)
    store.ingest("gwn", [told(101, 6, 8)])  # (6 told again: no row)
    assert kept() == (4, 4)
    with store._tx() as ex:  # a store of before the count
        ex(store.q("UPDATE ingest SET loss_rows = NULL WHERE agent = 'gwn'"))
    store.ingest("gwn", [told(102, *range(10, 30, 2))])  # past the bound: the oldest make room
    col, n = kept()
    assert col == n <= 10
    assert {(g["first"], g["cause"]) for g in store.gaps("gwn")} >= {(28, "budget"), (26, "budget")}


def test_a_loss_write_costs_the_writer_no_more_with_the_agents_loss_rows(tmp_path):
    from cloud_trainer.fleet.store import SQLiteStore

    st = SQLiteStore(tmp_path / "fleet.db")
    try:
        drop = {"kind": "outbox_budget", "epoch": 0, "ranges": [[3, 3]]}
        st.ingest("gwm", [rec(1), rec(2, kind="event", payload=json.dumps(drop))])
        steps = [0]

        def loss_write_steps(seq: int) -> int:
            steps[0] = 0
            told = {"kind": "outbox_budget", "epoch": 0, "ranges": [[seq + 1, seq + 1]]}
            st.db.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
            try:
                st.ingest("gwm", [rec(seq, kind="event", payload=json.dumps(told))])
            finally:
                st.db.set_progress_handler(None, 0)
            return steps[0]

        few = loss_write_steps(10)
        with st.lock:  # 20,000 loss ranges told (the bound is 100,000), the count kept beside them
            st.db.execute("BEGIN IMMEDIATE")
            st.db.executemany(
                "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES (?,?,?,?,?,?,?)",
                [("default", "gwm", 0, 4 * i + 100, 4 * i + 101, "budget", 1.0) for i in range(20_000)],
            )
            st.db.execute("UPDATE ingest SET loss_rows = loss_rows + 20000 WHERE agent = 'gwm'")
            st.db.execute("COMMIT")
        assert loss_write_steps(20) <= 2 * few + 20
    finally:
        st.close()


def test_the_newest_gaps_are_built_from_the_newest_epoch_down_and_are_the_end_of_the_whole_list(
    store, monkeypatch
):
    """The console's agents view (every 3 s) and IngestStats built an agent's whole gap list, every epoch's holes and
    loss ranges, to show its newest 1,000 or 10,000: ``gaps(newest=N)`` reads epochs from the highest down until it
    has N, the same N as the whole list's end, saying how many it left out (None: older epochs not read)."""
    monkeypatch.setattr(store_module, "EPOCHS_PER_WINDOW", 100)
    monkeypatch.setattr(store_module, "GAPS_PAGE_EPOCHS", 1)  # one epoch a read, doubling
    drop = {"kind": "outbox_budget", "epoch": 3, "ranges": [[2, 3], [9, 9]]}
    store.ingest("gwg", [rec(1, epoch=1), rec(4, epoch=1)])
    store.ingest("gwg", [rec(5, epoch=2)])  # ends epoch 1; 1..4 missing
    store.ingest(
        "gwg",
        [
            rec(1, epoch=3),
            rec(4, epoch=3),
            rec(10, epoch=3),
            rec(11, epoch=3, kind="event", payload=json.dumps(drop)),
        ],
    )
    whole = store.gaps("gwg")
    assert len(whole) >= 6
    for n in range(len(whole) + 2):
        part = store.gaps("gwg", newest=n)
        assert list(part) == (whole[-n:] if n else []), n
        if part.left_out is not None:
            assert part.left_out == len(whole) - len(part)
    assert store.gaps("gwg", newest=len(whole) + 1).left_out == 0
    assert store.gaps("gwg", newest=1).left_out is None  # epochs 1 and 2 never read


def test_the_newest_gaps_of_an_agent_with_thousands_of_epochs_read_the_newest_alone(tmp_path):
    from cloud_trainer.fleet.store import SQLiteStore

    st = SQLiteStore(tmp_path / "fleet.db")
    try:
        steps = [0]

        def newest_steps() -> int:
            steps[0] = 0
            for reader in list(st.readers.queue):
                reader.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
            try:
                assert [g["epoch"] for g in st.gaps("gwt", newest=3)] == [top - 1, top - 1, top]
            finally:
                for reader in list(st.readers.queue):
                    reader.set_progress_handler(None, 0)
            return steps[0]

        def epochs(
            first: int, last: int
        ) -> None:  # each with one record at seq 2 and its end (1 missing, 3 on)
            with st.lock:
                st.db.execute("BEGIN IMMEDIATE")
                st.db.executemany(
                    "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq) "
                    "VALUES ('default', 'gwt', ?, 'result', 1, 2, 2)",
                    [(e,) for e in range(first, last)],
                )
                st.db.executemany(
                    "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES "
                    "('default', 'gwt', ?, 3, 0, 'epoch_change', 1.0)",
                    [(e,) for e in range(first, last - 1)],
                )
                st.db.execute("COMMIT")

        top = 2_000
        epochs(top - 200, top + 1)  # more than a first page
        few = newest_steps()
        epochs(0, top - 200)
        assert newest_steps() <= 2 * few + 20
    finally:
        st.close()


def _ended(store, agent: str, epochs: range, t: float) -> None:
    """Epochs of the agent ended at ``t``, as the store writes them (their ``gaps`` rows), in one transaction."""
    with store._tx() as ex:
        for e in epochs:
            ex(
                store.q(
                    "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES "
                    "('default', ?, ?, 2, 0, 'epoch_change', ?)"
                ),
                (agent, e, t),
            )


def test_an_agent_opens_at_most_its_most_epochs_a_day_and_its_stats_say_more(store, monkeypatch):
    """Past ``EPOCHS_PER_WINDOW`` a write opening one epoch is stored (a data folder not kept), but up to
    ``EPOCHS_MOST_PER_WINDOW`` only (one each 10 s; lowered here): past it a gateway opened one a write for ever,
    bounded by the writer's speed alone. The agent's stats count up to just past it."""
    import time

    monkeypatch.setattr(store_module, "EPOCHS_PER_WINDOW", 2)
    monkeypatch.setattr(store_module, "EPOCHS_MOST_PER_WINDOW", 5)
    store.ingest("gwm", [rec(1, epoch=1)])
    for e in range(2, 7):  # 5 ended: 3 of them past the bound, each opened by a write of its own
        store.ingest("gwm", [rec(1, epoch=e), rec(2, epoch=e)])
    st = store.stats("gwm")
    assert (st["epoch"], st["records"], st["epochs_24h"], st["epochs_24h_more"]) == (6, 11, 5, False)
    with pytest.raises(
        TooManyEpochs, match=r"gwm .*5 epochs opened within 24 h, the most .*epoch 7 is refused"
    ):
        store.ingest("gwm", [rec(1, epoch=7)])
    store.ingest("gwm", [rec(3, epoch=6)])  # the current epoch's records go on
    st = store.stats("gwm")
    assert (st["epoch"], st["records"], st["epochs_24h"]) == (6, 12, 5)
    _ended(store, "gwm", range(100, 103), time.time())  # (more than the most: replicas racing)
    assert store.stats("gwm")["epochs_24h"] == 5 and store.stats("gwm")["epochs_24h_more"]
    # the window passed: the agent opens epochs again
    with store._tx() as ex:
        ex(store.q("UPDATE gaps SET t = t - ? WHERE agent = 'gwm'"), (store_module.EPOCH_WINDOW_S,))
    store.ingest("gwm", [rec(1, epoch=7)])
    assert store.stats("gwm")["epoch"] == 7 and store.stats("gwm")["epochs_24h"] == 1


def test_an_agents_epoch_ends_take_none_of_its_room_for_losses(store, monkeypatch):
    """An agent whose data folder is not kept ends an epoch at each start, rows never deleted: counted against
    ``LOSS_ROWS_PER_AGENT`` (lowered here), they took its room (restarted once a minute: in ~70 days), then every
    loss it told was dropped and its older ones deleted (their seqs ``unknown``)."""
    monkeypatch.setattr(store_module, "LOSS_ROWS_PER_AGENT", 4)
    store.ingest("gwo", [rec(1, epoch=1)])
    _ended(store, "gwo", range(100, 110), 1.0)  # 10 epochs ended long ago
    drop = {"kind": "outbox_budget", "epoch": 1, "ranges": [[2, 2], [4, 4]]}
    store.ingest("gwo", [rec(3, epoch=1), rec(5, epoch=1, kind="event", payload=json.dumps(drop))])
    assert [(g["first"], g["cause"]) for g in store.gaps("gwo") if g["epoch"] == 1] == [
        (2, "budget"),
        (4, "budget"),
    ]


def test_a_write_opening_an_epoch_past_the_bound_counts_no_more_of_the_agents_epochs_than_it_needs(
    tmp_path, monkeypatch
):
    """Past ``EPOCHS_PER_WINDOW`` each write may open one epoch: a gateway doing so at every write had each write
    count all its epochs of the window in the writer every tenant shares (300,000: ~90 ms a write, another tenant's
    1-record writes 5x slower). The write counts up to ``EPOCHS_MOST_PER_WINDOW`` (lowered here), past which it is
    refused; the agent's stats count up to just past it (each console refresh: 400,000 counted took 593 ms)."""
    import time

    from cloud_trainer.fleet.store import SQLiteStore

    monkeypatch.setattr(store_module, "EPOCHS_MOST_PER_WINDOW", 1000)
    st = SQLiteStore(tmp_path / "fleet.db")
    try:
        steps = [0]

        def counted(call) -> int:
            steps[0] = 0
            st.db.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
            for r in st.readers.queue:
                r.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
            try:
                call()
            finally:
                st.db.set_progress_handler(None, 0)
                for r in st.readers.queue:
                    r.set_progress_handler(None, 0)
            return steps[0]

        def refused(epoch: int) -> None:  # a write opening one epoch more
            with pytest.raises(TooManyEpochs):
                st.ingest("gwx", [rec(1, epoch=epoch)])

        st.ingest("gwx", [rec(1, epoch=1)])
        _ended(st, "gwx", range(10_000, 11_000), time.time())  # at the most already
        few, few_stats = counted(lambda: refused(2)), counted(lambda: st.stats("gwx"))
        _ended(st, "gwx", range(20_000, 40_000), time.time())  # (replicas racing, a service of before it)
        assert counted(lambda: refused(3)) <= 2 * few + 20
        assert counted(lambda: st.stats("gwx")) <= 2 * few_stats + 20
        assert st.stats("gwx")["epochs_24h"] == 1000 and st.stats("gwx")["epochs_24h_more"]
    finally:
        st.close()


def test_an_agents_stats_read_its_totals_per_kind_not_a_row_per_epoch(tmp_path):
    """The agent's records by kind were summed over its ``record_counts`` rows, one per epoch (and kind), at each
    console refresh (per agent) and IngestStats: an agent opening an epoch each 10 s for a month (259,200) took
    0.2-0.7 s a refresh. Its totals per kind are kept beside them (``agent_counts``)."""
    from cloud_trainer.fleet.store import SQLiteStore

    st = SQLiteStore(tmp_path / "fleet.db")
    try:

        def epochs(first: int, last: int) -> None:  # one record each, counted as the store counts them
            with st._tx() as ex:
                for e in range(first, last):
                    ex(
                        "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq) "
                        "VALUES ('default', 'gwc', ?, 'result', 1, 1, 1)",
                        (e,),
                    )

        st.ingest("gwc", [rec(1, epoch=30_000), rec(2, epoch=30_000, kind="event")])
        epochs(29_800, 30_000)
        few, got = _stats_steps(st, "gwc")
        assert got["by_kind"] == {"result": 201, "event": 1} and got["epoch"] == 30_000
        epochs(0, 29_800)
        many, got = _stats_steps(st, "gwc")
        assert got["by_kind"] == {"result": 30_001, "event": 1} and got["records"] == 30_002
        assert many <= 2 * few + 20
    finally:
        st.close()


def test_an_older_store_gets_its_agents_totals_and_they_follow_every_writer_of_the_counts(store, tmp_path):
    """A fleet.db or database of before ``agent_counts`` has it made and filled at open (migration 0021 on
    PostgreSQL); a service of before it, still writing ``record_counts`` (a rolling upgrade, a rollback), is
    followed too (the triggers of ``record_counts``)."""
    store.ingest("gw1", [rec(1), rec(2), rec(3, kind="event")], tenant="acme")
    store.ingest("gw1", [rec(1, epoch=4), rec(2)], tenant="acme")
    before = store.stats("gw1", tenant="acme")
    assert before["by_kind"] == {"result": 3, "event": 1}
    older = _older(
        store,
        tmp_path,
        "DROP TRIGGER agent_counts_add;DROP TRIGGER agent_counts_change;DROP TRIGGER agent_counts_drop;"
        "DROP TABLE agent_counts;",
        [
            "DROP TABLE agent_counts",
            "DROP TRIGGER agent_counts_keep ON record_counts",
            "DROP FUNCTION agent_counts_keep",
            "DELETE FROM schema_version WHERE version >= 21",
        ],
    )
    try:
        assert older.stats("gw1", tenant="acme") == before
        older.ingest("gw1", [rec(3, epoch=4), rec(4, epoch=4, kind="alarm")], tenant="acme")
        with older._tx() as ex:  # an older service's write: its counts only
            ex(
                older.q(
                    "UPDATE record_counts SET records = records + 2 WHERE tenant = 'acme' AND agent = 'gw1' "
                    "AND epoch = 0 AND kind = 'result'"
                )
            )
            ex(
                older.q(
                    "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq) "
                    "VALUES ('acme', 'gw1', 2, 'telemetry', 5, 1, 5)"
                )
            )
        st = older.stats("gw1", tenant="acme")
        assert st["by_kind"] == {"result": 6, "event": 1, "alarm": 1, "telemetry": 5}
        assert st["records"] == 13 == older.usage()["acme"]["records"]
        assert older.stats(tenant="acme")["by_kind"] == st["by_kind"]
    finally:
        older.close()


def test_the_prune_of_an_agents_oldest_losses_reads_its_losses_not_its_epochs_ends(tmp_path, monkeypatch):
    """Past ``LOSS_ROWS_PER_AGENT`` (lowered here) a loss write deletes the agent's oldest ranges told, found by
    time: read and sorted over all its gaps rows, its epochs' ends too (never deleted, one each start of an agent
    whose data folder is not kept): 1.27 s of the writer every tenant shares at 3 M ends. Now through an index of
    its loss ranges by time."""
    from cloud_trainer.fleet.store import SQLiteStore

    monkeypatch.setattr(store_module, "LOSS_ROWS_PER_AGENT", 100)
    st = SQLiteStore(tmp_path / "fleet.db")
    try:
        steps, seq = [0], [1000]

        def pruning_write_steps() -> int:  # 30 ranges more than the room: the 40 oldest go
            seq[0] += 100
            told = {
                "kind": "outbox_budget",
                "epoch": 0,
                "ranges": [[seq[0] + i, seq[0] + i] for i in range(30)],
            }
            steps[0] = 0
            st.db.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
            try:
                st.ingest("gwp", [rec(seq[0] + 99, kind="event", payload=json.dumps(told))])
            finally:
                st.db.set_progress_handler(None, 0)
            return steps[0]

        drop = {"kind": "outbox_budget", "epoch": 0, "ranges": [[2 * i, 2 * i] for i in range(1, 101)]}
        st.ingest("gwp", [rec(1), rec(999, kind="event", payload=json.dumps(drop))])  # at the bound
        _ended(st, "gwp", range(1, 201), 1.0)
        few = pruning_write_steps()
        _ended(st, "gwp", range(1000, 21_000), 1.0)
        assert pruning_write_steps() <= 2 * few + 20
        with st._tx(write=False) as ex:
            kept = ex("SELECT COUNT(*) FROM gaps WHERE agent = 'gwp' AND last <> 0").fetchone()[0]
        assert kept <= 100 and {g["first"] for g in st.gaps("gwp") if g["cause"] == "budget"} >= {1100, 1229}
    finally:
        st.close()


def test_the_prune_past_an_agents_loss_bound_deletes_exactly_its_oldest_ranges_told(store, monkeypatch):
    """Past ``LOSS_ROWS_PER_AGENT`` (lowered here) the oldest ranges told go, by the time they were told (then
    epoch, first, last: ranges told in one write share it), down to nine tenths of it, exactly; its epochs' ends
    never. The newest to go is read first, then every range up to it deleted (one DELETE with the oldest as its
    subquery ran for seconds on PostgreSQL where the table's statistics did not know the agent's rows yet)."""
    monkeypatch.setattr(store_module, "LOSS_ROWS_PER_AGENT", 100)
    clock = iter(range(1000, 2000))
    monkeypatch.setattr(store_module.time, "time", lambda: float(next(clock)))

    def told(seq, ranges):
        drop = {"kind": "outbox_budget", "epoch": 1, "ranges": ranges}
        return rec(seq, epoch=1, kind="event", payload=json.dumps(drop))

    store.ingest("gwq", [rec(1, epoch=1)])
    _ended(store, "gwq", range(100, 105), 1.0)
    store.ingest("gwq", [told(10_000, [[s, s] for s in range(10, 70)])])  # 60, told first
    store.ingest("gwq", [told(10_001, [[s, s + 1] for s in range(100, 200, 2)])])  # 50 more: 110, past 100
    with store._tx(write=False) as ex:
        left = ex(
            store.q("SELECT first FROM gaps WHERE agent = 'gwq' AND last <> 0 ORDER BY first")
        ).fetchall()
        ends = ex(store.q("SELECT COUNT(*) FROM gaps WHERE agent = 'gwq' AND last = 0")).fetchone()[0]
    # 20 of the first write's (its ranges by first), none of the second's, went: 90 left
    assert [f for (f,) in left] == [*range(30, 70), *range(100, 200, 2)] and ends == 5


def test_a_drop_event_of_many_ranges_is_written_in_a_few_statements_not_one_a_range(store, monkeypatch):
    """A full drop event (1,500 ranges) was one INSERT a range: on PostgreSQL a round trip each, 0.6-1.8 s of the
    agent's rows held. Now a statement writes many (PostgreSQL: the event's all), and every range is kept."""
    import contextlib

    writes = [0]
    tx = store._tx

    @contextlib.contextmanager
    def counted(*args, **kw):
        with tx(*args, **kw) as ex:

            def run(sql, *a):
                writes[0] += sql.lstrip().startswith("INSERT INTO gaps")
                return ex(sql, *a)

            yield run

    monkeypatch.setattr(store, "_tx", counted)
    ranges = [[s, s] for s in range(10, 3010, 2)]
    drop = {"kind": "outbox_budget", "epoch": 0, "ranges": ranges}
    store.ingest("gwb", [rec(1), rec(3011, kind="event", payload=json.dumps(drop))])
    assert writes[0] <= len(ranges) // 100
    gaps = store.gaps("gwb")
    assert sum(g["cause"] == "budget" for g in gaps) == len(ranges)
    with store._tx(write=False) as ex:
        assert ex(store.q("SELECT loss_rows FROM ingest WHERE agent = 'gwb'")).fetchone()[0] == len(ranges)


def test_an_agents_samples_are_a_total_kept_by_every_writer_and_an_older_store_gets_it(store, tmp_path):
    """An agent's stats (each console refresh, IngestStats) counted its sample rows, and the tenants' usage every
    tenant's: a total per agent (``agent_samples``) is kept by triggers on ``samples`` (a service of before it writing
    samples too), made and filled at open where missing (migration 0027 on PostgreSQL)."""
    from tests.contract.test_fleet_store import _sample

    store.ingest("gw1", [_sample(s, b"s%d" % s) for s in (1, 2, 3)], tenant="acme")
    store.ingest("gw2", [_sample(1, b"other")], tenant="acme")
    assert store.stats("gw1", tenant="acme")["samples"] == 3 and store.usage()["acme"]["samples"] == 4
    older = _older(
        store,
        tmp_path,
        "DROP TRIGGER agent_samples_add;DROP TRIGGER agent_samples_take;DROP TABLE agent_samples;",
        [
            "DROP TABLE agent_samples",
            "DROP TRIGGER agent_samples_add ON samples",
            "DROP TRIGGER agent_samples_take ON samples",
            "DELETE FROM schema_version WHERE version >= 27",
        ],
    )
    try:
        assert older.stats("gw1", tenant="acme")["samples"] == 3
        with older._tx() as ex:  # a service of before it: its rows only, two in one statement, one deleted
            ex(
                older.q(
                    "INSERT INTO samples (sha256, tenant, agent, epoch, seq, t) "
                    "VALUES ('d1', 'acme', 'gw1', 0, 7, 1.0), ('d2', 'acme', 'gw1', 0, 8, 1.0)"
                )
            )
            ex(older.q("DELETE FROM samples WHERE tenant = 'acme' AND agent = 'gw2'"))
        assert (
            older.stats("gw1", tenant="acme")["samples"] == 5
            and older.stats("gw2", tenant="acme")["samples"] == 0
        )
        assert older.usage()["acme"]["samples"] == 5 == older.stats(tenant="acme")["samples"]
    finally:
        older.close()


def test_a_fleet_db_opened_again_does_not_count_its_sample_rows(tmp_path, monkeypatch):
    """Each open counted every sample row (a read of the whole table under the writer's lock, growing with the
    samples) to check the totals the triggers keep; with the table and its triggers in the file every writer kept
    them: counted only where one is missing (the test above)."""
    from cloud_trainer.fleet.store import SQLiteStore
    from tests.contract.test_fleet_store import _sample
    from tests.support.sqlite_trace import traced_statements

    st = SQLiteStore(tmp_path / "fleet.db")
    st.ingest("gw1", [_sample(s, b"s%d" % s) for s in (1, 2, 3)])
    st.close()
    said = traced_statements(monkeypatch)
    again = SQLiteStore(tmp_path / "fleet.db")
    try:
        monkeypatch.undo()
        # was: SELECT COALESCE(COUNT(*), 0) FROM samples
        assert not [s for s in said if "FROM samples" in s], said
        assert again.stats("gw1")["samples"] == 3
    finally:
        again.close()


def test_an_agents_stats_read_its_samples_total_not_its_sample_rows(tmp_path):
    """The agent's samples were counted row by row at each refresh (grows with its samples); a total is read."""
    from cloud_trainer.fleet.store import SQLiteStore

    st = SQLiteStore(tmp_path / "fleet.db")
    try:

        def samples(first: int, last: int) -> None:
            with st.lock:
                st.db.execute("BEGIN IMMEDIATE")
                st.db.executemany(
                    "INSERT INTO samples (sha256, tenant, agent, epoch, seq, t) VALUES (?, 'default', 'gws', 0, ?, 1)",
                    [(f"d{s}", s) for s in range(first, last)],
                )
                st.db.execute("COMMIT")

        st.ingest("gws", [rec(1)])
        samples(1, 100)
        few, _ = _stats_steps(st, "gws")
        samples(100, 5_000)
        many, got = _stats_steps(st, "gws")
        assert got["samples"] == 4_999 and many <= 2 * few + 20
    finally:
        st.close()
