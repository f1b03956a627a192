"""A made-up Sparkplug node name whose compressed births the inflate budget skips must not keep its place in the node
table by having one of its births read as the answer to the rebirth this host asked of it (a1244ad's bound, found
bypassed in review): a flooder need not listen on NCMD, it only keeps sending births. Such a node was filed as one
that spoke, in no line ``_room`` forgets from, and with the table full a real node's birth was refused
(``too_many_nodes``). What keeps a skipped node's place is data it sends. Driven on ``SparkplugHost`` itself with a
clock of the test's (the budgets refill by time); the broker plays no part in it."""

from __future__ import annotations

import time

from devices.mqtt import sparkplug_host
from devices.mqtt.settings import SparkplugHostSettings
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import sparkplug as sp
from tests.integration.test_sparkplug_compressed import _compressed
from tests.integration.test_sparkplug_rebirth_requests import _birth as _padded_birth


def _data(seq: int) -> bytes:
    b = sp._pb().Payload()
    b.timestamp, b.seq = int(time.time() * 1000), seq
    m = b.metrics.add()
    m.alias, m.datatype, m.double_value = 1, 10, 1.0
    return b.SerializeToString()


def test_births_only_under_made_up_names_never_keep_a_real_nodes_birth_out(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(sparkplug_host.time, "monotonic", lambda: clock[0])
    # the inflate budgets' clock, bound when their class was made
    monkeypatch.setattr(sp.InflateBudget.__init__, "__defaults__", (lambda: clock[0],))
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 8)
    errors: list[str] = []
    notices: list[str] = []
    host = SparkplugHost(
        "src",
        SparkplugHostSettings(max_inflated_bytes_per_s=4096),
        lambda topic, body: None,
        lambda reason, detail: errors.append(reason),
    )
    host.on_notice = lambda key, msg, **kw: notices.append(key)

    def feed(topic: str, data: bytes) -> None:
        host.handle(topic, data, time.time())

    def skipped_birth(name: str, big: bytes) -> None:
        for _ in range(20):
            before = host.births_skipped
            feed(f"spBv1.0/g/NBIRTH/{name}", big)
            if host.births_skipped > before:
                return
        raise AssertionError(f"no birth of {name} skipped")

    feed("spBv1.0/g/NBIRTH/steady", _padded_birth(0).SerializeToString())
    big = _compressed(_padded_birth(0, 12 * 1024))
    for i in range(7):
        name = f"junk{i}"
        skipped_birth(name, big)  # created, not born, a rebirth wanted
        clock[0] += 30
        host.tick(clock[0])  # the budget refilled: the rebirth is asked
        assert None in host._nodes[("g", name)].asked
        feed(f"spBv1.0/g/NBIRTH/{name}", big)  # read: the answer to the rebirth asked
        skipped_birth(name, big)  # and the flood goes on
    for real in ("real", "real2", "real3"):
        clock[0] += 30
        feed(f"spBv1.0/g/NBIRTH/{real}", _padded_birth(0).SerializeToString())
        assert host.node_alive("g", real), (real, notices)
        feed(f"spBv1.0/g/NDATA/{real}", _data(1))  # each speaks: kept
    assert "too_many_nodes" not in notices
    assert all(host.node_alive("g", n) for n in ("steady", "real", "real2", "real3"))
    assert len(host._nodes) <= 8
