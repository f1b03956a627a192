"""The fleet console's samples and agents over real HTTP, on a real SQLite store: ``/api/samples`` is the newest 200
samples, oldest first (the page shows the last 60 of them, newest first), and the store reads no more than those
200 rows for it. It once read every sample row of the tenant and kept the last 200 in Python, holding the store's
lock (about 2 s at 300k samples, every 3 s while the page was open: every tenant's heartbeats waited behind it)."""

from __future__ import annotations

import json
import urllib.request
from types import SimpleNamespace

import pytest

from cloud_trainer.fleet.console import Console
from cloud_trainer.fleet.store import SQLiteStore


class CountingStore(SQLiteStore):
    """The real SQLite store, noting how many rows each read returned."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.read: list[int] = []

    def _rows(self, sql: str, args=()) -> list[tuple]:
        rows = super()._rows(sql, args)
        self.read.append(len(rows))
        return rows


def _sample(seq: int, model: str, reason: str) -> dict:
    return {
        "epoch": 0,
        "seq": seq,
        "kind": "sample",
        "t": 1_700_000_000.0 + seq,
        "payload": json.dumps({"model": model, "reason": reason, "verdict": "NG"}),
        "sample_sha256": f"{seq:064x}",
        "sample_ext": ".png",
    }


@pytest.fixture
def console(tmp_path):
    store = CountingStore(tmp_path / "fleet.db")
    seqs = list(range(1, 501))
    seqs = seqs[250:] + seqs[:250]  # arrival order is not time order
    store.ingest(
        "gw1",
        [_sample(s, "part-inspection" if s % 5 else "other", "ng" if s % 3 else "ok_random") for s in seqs],
    )
    store.ingest("gw1", [_sample(s, "part-inspection", "ng") for s in range(1, 300)], tenant="acme")
    c = Console(SimpleNamespace(store=store), tenant="default")
    c.start()
    yield c, store
    c.stop()
    store.close()


def _get(c: Console, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{c.port}{path}", timeout=5) as r:
        return json.loads(r.read())


def test_console_samples_are_the_newest_200_oldest_first_and_the_store_reads_no_more(console):
    c, store = console
    for query, keep in (
        ("?model=part-inspection", lambda s: s % 5),
        ("?model=part-inspection&reason=ng", lambda s: s % 5 and s % 3),
        ("", lambda s: True),
    ):
        store.read.clear()
        got = _get(c, "/api/samples" + query)
        want = [s for s in range(1, 501) if keep(s)][-200:]
        assert [s["seq"] for s in got] == want, query  # oldest first: the page reverses the last 60
        assert {s["agent"] for s in got} == {"gw1"}  # the default tenant's only
        assert store.read and max(store.read) <= 200, (query, store.read)
