"""An agent's gaps and stats beside every tenant's writes, on the real SQLite store: they scan the agent's records
(the gaps of an epoch with a hole read every record of it: ~0.6 s at 500,000 records), and they were read under the
one lock every tenant's writes wait for, so one tenant's admin asking for its own agent's ``IngestStats`` in a loop
made another tenant's batches take 1.4 s instead of 4 ms (seconds at millions of records). They are read on a
connection of their own now (WAL: a reader neither waits for the writer nor holds it)."""

from __future__ import annotations

import threading
import time

from cloud_trainer.fleet.store import SQLiteStore


def _records(seqs, kind: str = "result") -> list[dict]:
    return [{"epoch": 1, "seq": s, "kind": kind, "t": time.time(), "payload": "{}"} for s in seqs]


def test_another_tenants_batch_is_stored_while_an_agents_gaps_are_being_read(tmp_path, monkeypatch):
    store = SQLiteStore(tmp_path / "fleet.db")
    store.ingest("gw-b", _records([1, *range(3, 200)]), tenant="beta")  # a hole: the gaps read every record
    reading, stored = threading.Event(), threading.Event()
    q = store.q

    def held(sql: str) -> str:  # the gaps' read, under way: it waits (bounded) for the other tenant's batch
        if "FROM gaps" in sql and threading.current_thread().name == "gaps":
            reading.set()
            stored.wait(timeout=25)
        return q(sql)

    monkeypatch.setattr(store, "q", held)
    got: list = []
    t = threading.Thread(target=lambda: got.append(store.gaps("gw-b", tenant="beta")), name="gaps")
    t.start()
    assert reading.wait(timeout=30)
    done: list = []
    writer = threading.Thread(target=lambda: done.append(store.ingest("gw-a", _records([1]), tenant="acme")))
    writer.start()
    writer.join(timeout=20)  # the former code: it waits for the read, which waits (25 s) for it
    in_time = not writer.is_alive()
    stored.set()
    writer.join()
    t.join()
    store.close()
    assert in_time, "another tenant's batch waited for an agent's gaps to be read"
    assert done[0][1] == 1
    assert [(g["epoch"], g["first"], g["last"]) for g in got[0]] == [(1, 2, 2)]
