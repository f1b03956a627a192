"""Which failed records the uplink sets aside as too large for the link (``Uplink._lone_failed``): only one alone in
its batch, of more than ``FIT_FLOOR`` bytes, cut on its way after half of ``keepalive_timeout_s`` or more. A small
record failing so says nothing of the link (a path that died, a service away): an alarm alone in the outbox during
a minute-long outage was set aside for ``ASIDE_RETRY_S``. The end-to-end case, on a slow link through a relay to a
real fleet service, is in tests/integration/test_halfopen.py."""

from __future__ import annotations

import time

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink import client
from edge_agent.uplink.client import FIT_FLOOR, Uplink
from edge_agent.uplink.settings import CloudSettings


def test_only_a_record_larger_than_a_useful_batch_failing_alone_on_its_way_is_set_aside(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(client, "ASIDE_AFTER", 1)
    s = CloudSettings(
        endpoint="127.0.0.1:1", ca_file="c", cert_file="c", key_file="k", keepalive_timeout_s=20
    )
    up = Uplink(s, Outbox(OutboxSettings(), tmp_path / "agent"))  # never started, the outbox never opened

    def failed(seq: int, kind: str, nbytes: int, after_s: float) -> None:
        up._connected_at = (
            time.monotonic()
        )  # a connection made since the failure before (a slow link, not down)
        up._lone = (seq, kind, nbytes)
        up._lone_failed((1, nbytes, time.monotonic() - after_s))

    failed(1, "alarm", 300, after_s=30)  # a small alarm, cut after the keepalive: a dead path, not its size
    failed(2, "sample", 2 * FIT_FLOOR, after_s=2)  # a large one refused at once: says nothing of its size
    assert up._aside == {} and up.set_aside == 0
    failed(3, "sample", 2 * FIT_FLOOR, after_s=30)
    assert list(up._aside) == [3] and up.set_aside == 1
    assert {r for r in up._skipped()} == {3}


def test_a_large_record_failing_while_the_link_is_down_is_not_set_aside(tmp_path, monkeypatch) -> None:
    """An outage (a black-holed path, a cellular dead zone) fails every batch after the keepalive or the connect
    timeout, whatever its size: a large sample at the head of the outbox failing so again and again, no connection
    made between the failures, says nothing of its size. Before, it was set aside after ``ASIDE_AFTER`` such failures,
    its WARNING blaming its size, and held for ``ASIDE_RETRY_S`` after the link came back (seen through a frozen relay
    on a fast link). On a link too slow for the record, each try is on a new connection (test_halfopen.py)."""
    monkeypatch.setattr(client, "ASIDE_AFTER", 2)
    s = CloudSettings(
        endpoint="127.0.0.1:1", ca_file="c", cert_file="c", key_file="k", keepalive_timeout_s=20
    )
    up = Uplink(s, Outbox(OutboxSettings(), tmp_path / "agent"))  # never started, the outbox never opened
    up._connected_at = time.monotonic()  # connected before the outage

    def failed() -> None:
        up._lone = (7, "sample", 4 * FIT_FLOOR)
        up._lone_failed((1, 4 * FIT_FLOOR, time.monotonic() - 30))

    for _ in range(5):  # no connection made between the failures
        failed()
    assert up._aside == {} and up.set_aside == 0
    up._connected_at = time.monotonic()  # the link back: a new connection; the record fails on it again
    failed()
    assert list(up._aside) == [7]


def test_the_records_the_uplink_leaves_out_are_left_out_by_the_outbox_read_the_bounds_applied_to_the_rest(
    tmp_path,
) -> None:
    """While a full disk holds acknowledgements unrecorded (up to 5,000) or records are set aside, the uplink read as
    many more rows and their payloads at every read and dropped them itself; ``Outbox.pending`` leaves them out in its
    query (``skip``), alarms first as ever, ``limit`` and ``max_bytes`` applied to the rest."""
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    try:
        seqs = [ob.append("result", {"i": i, "pad": "x" * 200}) for i in range(30)]
        alarm = ob.append("alarm", {"kind": "hot"})
        ob.flush()
        size = {r.seq: r.size for r in ob.pending(100)}
        up = Uplink(CloudSettings(endpoint="127.0.0.1:1", ca_file="c", cert_file="c", key_file="k"), ob)
        up._unrecorded = {q: size[q] for q in seqs[:20]}  # acknowledged, not recorded (a full disk)
        assert [r.seq for r in up._unsent(5, 10**6)] == [alarm, *seqs[20:24]]
        three = sum(size[q] for q in seqs[20:23])
        assert [r.seq for r in ob.pending(100, three, skip=[alarm, *seqs[:20]])] == seqs[20:23]
        assert ob.pending(10, skip=[alarm, *seqs]) == []
    finally:
        ob.close()


def test_the_outbox_read_leaving_records_out_needs_no_json_function_of_sqlite(tmp_path, monkeypatch) -> None:
    """SQLite's JSON functions were a build option before 3.38 (off in some gateway images): the read leaving out
    the records acknowledged and not recorded, or set aside, listed them with ``json_each``, and without it failed
    ("cannot read the store"): nothing was sent while anything was left out. The store's connections here refuse
    JSON functions, as such an SQLite does."""
    import sqlite3

    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    try:
        seqs = [ob.append("result", {"i": i}) for i in range(6)]
        ob.flush()
        connect = sqlite3.connect

        def without_json(*args, **kw):
            db = connect(*args, **kw)
            db.set_authorizer(
                lambda action, a, b, *_: sqlite3.SQLITE_DENY if "json" in f"{a}{b}" else sqlite3.SQLITE_OK
            )
            return db

        monkeypatch.setattr(sqlite3, "connect", without_json)
        assert [r.seq for r in ob.pending(3, skip=[seqs[0], seqs[2]])] == [seqs[1], seqs[3], seqs[4]]
        assert [r.seq for r in ob.pending(10, skip=seqs[1:])] == [seqs[0]]
        assert [r.seq for r in ob.pending(10)] == seqs
    finally:
        monkeypatch.undo()
        ob.close()
