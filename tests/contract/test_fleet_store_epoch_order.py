# ruff: noqa: F811  (the store fixture imported from test_fleet_store is a parameter here)
"""Which epoch of an agent is current, and what its ended epochs show lost, whatever order a renewal's batches arrive
in, on both stores (SQLite, PostgreSQL). A renewed outbox sends its new records while it still copies the old store,
its ``outbox_corrupt`` event after them; a late batch of the old epoch (its ack lost, the service still holding it)
can land before or after that event. And past an agent's bound of loss rows, room is made once per tenth of it."""

from __future__ import annotations

import json

from cloud_trainer.fleet import store as store_module
from tests.contract.test_fleet_store import postgres_server, postgres_url, rec, store  # noqa: F401  (fixtures)

OLD, NEW = 1_796_600_000_000_000, 1_796_600_000_500_000
CORRUPT = json.dumps({"kind": "outbox_corrupt", "epoch": NEW, "previous_epoch": OLD})


def test_a_late_batch_of_the_old_epoch_before_the_renewals_event_is_not_current_once_the_event_comes(store):
    """The renewed outbox's first records, then a late batch of the old epoch (never stored: taken as the newer
    outbox), then the renewal's event. Formerly the old epoch stayed current for good and the live one was shown
    lost after its seq of then (an ``epoch_change`` end at 103 while 103 and 104 were stored)."""
    store.ingest("gw1", [rec(101, epoch=NEW), rec(102, epoch=NEW)])  # appended while the copy ran
    store.ingest("gw1", [rec(1, epoch=OLD), rec(2, epoch=OLD)])  # the late one
    store.ingest(
        "gw1", [rec(103, epoch=NEW, kind="event", payload=CORRUPT), rec(1, epoch=NEW), rec(2, epoch=NEW)]
    )
    store.ingest("gw1", [rec(104, epoch=NEW)])
    assert (store.stats("gw1")["epoch"], store.stats("gw1")["last_seq"]) == (NEW, 104)
    assert [g for g in store.gaps("gw1") if g["last"] == 0] == [
        {"epoch": OLD, "first": 3, "last": 0, "cause": "outbox_corrupt"}
    ]
    # a later outbox, no event (a wiped folder): ends the live epoch, as any new epoch does
    store.ingest("gw1", [rec(1, epoch=NEW + 1)])
    assert store.stats("gw1")["epoch"] == NEW + 1
    assert {"epoch": NEW, "first": 105, "last": 0, "cause": "epoch_change"} in store.gaps("gw1")


def test_records_of_an_ended_epoch_stored_after_its_end_are_not_shown_lost(store):
    """The renewal's event first (the old epoch ended where the store had nothing of it: all lost from seq 1), then
    the late batch of the old epoch: its end moves past the records stored. Formerly seqs 1-3, stored, stayed shown
    lost (``first: 1``) for good."""
    store.ingest("gw1", [rec(1, epoch=NEW, kind="event", payload=CORRUPT), rec(2, epoch=NEW)])
    assert store.ingest("gw1", [rec(2, epoch=OLD), rec(3, epoch=OLD), rec(1, epoch=OLD)])[1:] == (3, 0)
    store.ingest("gw1", [rec(5, epoch=OLD)])  # and another, past a hole
    assert store.ingest("gw1", [rec(4, epoch=OLD)])[1:] == (1, 0)  # below the end now: it stays
    assert (store.stats("gw1")["epoch"], store.stats("gw1")["last_seq"]) == (NEW, 2)
    assert [g for g in store.gaps("gw1") if g["epoch"] == OLD] == [
        {"epoch": OLD, "first": 6, "last": 0, "cause": "outbox_corrupt"}
    ]


def test_past_an_agents_bound_of_loss_rows_room_is_made_for_a_tenth_of_it_at_once(store, monkeypatch):
    """Each room made sorts every loss row of the agent (no index on their time) in the write all tenants share:
    done at every write past the bound, 25-36 ms each at 100,000 rows. Now down to nine tenths of the bound, the
    oldest first, so the next writes add rows without a sort."""
    monkeypatch.setattr(store_module, "LOSS_ROWS_PER_AGENT", 20)

    def told(seq: int, first: int) -> dict:
        drop = {"kind": "outbox_budget", "epoch": 0, "ranges": [[first, first]]}
        return rec(seq, kind="event", payload=json.dumps(drop))

    store.ingest("gw1", [told(1000 + i, 2 * i) for i in range(1, 21)])  # at the bound: 20 rows
    store.ingest("gw1", [told(2000, 100)])  # one past it: the oldest 3 go (to 18)
    budget = [g["first"] for g in store.gaps("gw1") if g["cause"] == "budget"]
    assert budget == [2 * i for i in range(4, 21)] + [100], budget
    store.ingest("gw1", [told(2001, 102)])  # room left: nothing deleted
    assert [g["first"] for g in store.gaps("gw1") if g["cause"] == "budget"] == [*budget, 102]
