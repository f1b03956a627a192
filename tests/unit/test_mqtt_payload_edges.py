"""Payload edges of other vendors' MQTT devices, pure (no broker): RFC 3339 times, duplicate keys, metric
counts of a Sparkplug payload and of one node, and passwords kept out of what a source shows."""

from __future__ import annotations

import logging

import pytest

from devices.base import BurstLogger, DeviceStats, Notices
from devices.mqtt import sparkplug_host
from devices.mqtt.settings import SparkplugHostSettings
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import json_codec as jc
from protocols import sparkplug as sp

D = sp.DataType


@pytest.mark.parametrize(
    "ts",
    ["2026-12-01T15:00:00z", "2026-12-01t15:00:00Z", "2026-12-01T16:00:00+01:00", "2026-12-01T15:00:00"],
)
def test_an_iso_time_in_any_form_rfc_3339_allows_is_read_and_one_without_zone_is_utc(ts):
    mapping = jc.JsonMapping(timestamp_format=jc.TimestampFormat.ISO8601)
    assert jc.decode(f'{{"ts": "{ts}", "v": 1}}', mapping) == [("v", 1, 1796137200.0)]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v": 1, "v": 2}',
        b'{"v": 1, "s": "x", "s": "y"}',
        b'{"a": {"b": 1, "b": 2}, "v": 3}',
        '{"v":1,"v":1}',
        b'{"v" :1,"v":2}',
        # larger payloads (a waveform, records) take the one-pass check
        b'{"ts": "2026-12-01T10:00:00Z", "w": [' + b", ".join([b"0.125"] * 400) + b'], "v": 1, "v": 2}',
        b'{"v": 1, "r": [' + b", ".join([b'{"t": 1, "x": 2}'] * 60) + b', {"t": 1, "t": 2}]}',
    ],
)
def test_a_key_given_twice_is_a_duplicate_key_error(payload):
    with pytest.raises(jc.CodecError) as e:
        jc.decode(payload, jc.JsonMapping(values={"v": "v"}))
    assert e.value.reason == "duplicate_key"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v": 1, "s": "\\"v\\""}',
        b'{"v": 1, "a": {"v": 2}}',
        b'{"v": "v"}',
        b'{"v": 1, "r": [' + b", ".join([b'{"v": 1, "x": 2}'] * 60) + b"]}",
    ],
)
def test_the_same_key_in_other_objects_or_quotes_inside_text_are_no_duplicates(payload):
    assert jc.decode(payload, jc.JsonMapping(values={"v": "v"}))[0][0] == "v"


def test_template_members_count_toward_the_metric_bound(monkeypatch):
    monkeypatch.setattr(sp, "MAX_METRICS", 10)
    members = [sp.Metric(f"m{i}", None, D.DOUBLE, float(i)) for i in range(9)]
    inst = sp.Metric("T", None, D.TEMPLATE, sp.Template(members, ref="Motor"))
    assert len(sp.decode(sp.encode(sp.Payload(1, 0, [inst]))).metrics[0].value.metrics) == 9
    members.append(sp.Metric("m9", None, D.DOUBLE, 9.0))
    with pytest.raises(jc.CodecError) as e:
        sp.decode(sp.encode(sp.Payload(1, 0, [inst])))
    assert e.value.reason == "too_many_metrics"


def test_data_by_ever_new_metric_names_is_read_but_not_kept_past_the_bound_of_a_node(monkeypatch):
    monkeypatch.setattr(sparkplug_host, "MAX_NODE_METRICS", 3)
    notices: list[str] = []
    h = SparkplugHost("s", SparkplugHostSettings(), lambda t, b: None, lambda r, d: None)
    h.on_notice = lambda key, msg, n=1, **kw: notices.append(key)
    birth = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("a", 1, D.DOUBLE, 1.0)])
    h.handle("spBv1.0/g/NBIRTH/n", sp.encode(birth), 1.0)
    for i in range(5):
        data = sp.Payload(1000 + i, 1 + i, [sp.Metric(f"new{i}", None, D.DOUBLE, float(i))])
        assert [r.value for r in h.handle("spBv1.0/g/NDATA/n", sp.encode(data), 1.0)] == [float(i)]
    assert len(h._nodes[("g", "n")].last) == 3 and notices.count("too_many_node_metrics") == 3
    for device in ("d1", "d2", "d3"):  # births of ever new devices: types kept up to the bound too
        db = sp.Payload(1000, None, [sp.Metric("x", None, D.DOUBLE, 1.0)])
        h.handle(f"spBv1.0/g/DBIRTH/n/{device}", sp.encode(db), 1.0)
    assert len(h._nodes[("g", "n")].types) == 3


def test_what_a_source_keeps_and_logs_of_an_error_has_a_urls_password_masked(caplog):
    caplog.set_level(logging.INFO)
    stats = DeviceStats()
    stats.error("broker_unreachable", "cannot reach mqtts://edge:s3cretpw@broker:8883: refused")
    assert stats.last_error == "broker_unreachable: cannot reach mqtts://edge:***@broker:8883: refused"
    BurstLogger(logging.getLogger("t")).log("k", "x %s", "rtsp://admin:s3cretpw@cam/1")
    notices = Notices(logging.getLogger("t"))
    notices.note("n", "seen %s", "opc.tcp://u:s3cretpw@plc:4840")
    assert notices.status()["n"]["message"] == "seen opc.tcp://u:***@plc:4840"
    assert "s3cretpw" not in caplog.text and "rtsp://admin:***@cam/1" in caplog.text


def test_a_notice_keeps_the_first_message_of_each_distinct_cause_bounded(caplog):
    """A notice key kept its first message only: a second cause needing another fix (a node's PropertySet
    after its Bytes metric, both unsupported_metric) was counted and never shown. Noted with a cause, each
    distinct cause's first message is logged once and kept, up to MAX_CAUSES; a key noted without one keeps
    its first message alone, as before."""
    from devices.base import MAX_CAUSES

    notices = Notices(logging.getLogger("t"))
    for i in range(MAX_CAUSES + 5):
        notices.note("k", "cause %d", i % (MAX_CAUSES + 2), cause=str(i % (MAX_CAUSES + 2)))
    notices.note("plain", "first")
    notices.note("plain", "second")
    st = notices.status()
    assert st["k"]["message"] == "cause 0" and st["k"]["count"] == MAX_CAUSES + 5
    assert st["k"]["more"] == [f"cause {i}" for i in range(1, MAX_CAUSES)]
    assert st["plain"] == {"count": 2, "message": "first"}
    assert caplog.text.count("cause 1\n") == 1 and f"cause {MAX_CAUSES}" not in caplog.text


@pytest.mark.parametrize("retained", [False, True])
def test_a_large_message_decoded_apart_gives_the_readings_and_counts_of_one_decoded_on_the_loop(retained):
    """A JSON message of over 64 KiB is decoded in a worker thread and its readings made a chunk at a time
    (``MqttSource._decoded``, ``_next_chunk``): the same readings, in the same order, and the same counts as the
    message decoded whole on the loop, for every kind of mapping, a NaN kept BAD, a retained message, and two
    names far apart that differ only by text that is not valid Unicode (refused both, found over the message)."""
    import json
    import time

    from devices.mqtt.client import CHUNK_READINGS, MqttSource
    from devices.mqtt.settings import MqttSettings

    subs = [
        {"topic": "f/#"},
        {"topic": "k/#", "json_mapping": {"records": {"array": ""}, "timestamp_format": "epoch_ms"}},
        {"topic": "w/#", "json_mapping": {"values": {"v": "wave", "t": "t"}}},
    ]
    now = time.time()
    ms = int(now * 1000)
    half = ",".join(f'"a{i}":{i}' for i in range(5_000))
    payloads = {
        "f/a": f'{{{half},"t\\ud800":1,{half.replace("a", "b")},"t\\udc00":2,"nan":NaN,"x\\ud801y":5,"s":"x"}}',
        "k/b": json.dumps(
            [
                {"id": f"T{i % 3_000}", "v": None if i == 7 else float(i), "q": i % 2 == 0, "t": ms - i}
                for i in range(10_000)
            ]
        ),
        "w/c": json.dumps({"v": [0.5] * 100_000 + [1.5], "t": 3}),
    }
    for topic, text in payloads.items():
        payload = text.encode()
        assert len(payload) > 64 * 1024
        whole, apart = (MqttSource("x", MqttSettings(port=1, subscriptions=subs)) for _ in range(2))
        entry = [topic, payload, now, retained, now, None]
        expected = whole._read(entry)
        got = apart._read(entry, apart._route(topic).parse(topic, payload, now))
        chunks = 1
        while apart._chunks is not None:
            got += apart._next_chunk(entry)
            chunks += 1
        assert chunks == (1 if topic == "w/c" else -(-len(expected) // CHUNK_READINGS)) > 0, topic

        def shown(r):
            v = r.value
            return (r.tag, repr(v.tolist()) if hasattr(v, "tolist") else v, r.timestamp, r.quality, r.reason)

        assert [shown(r) for r in got] == [shown(r) for r in expected], topic
        assert apart.stats.errors_by_reason == whole.stats.errors_by_reason, topic
        assert apart.notices.counts == whole.notices.counts, topic
        if topic == "f/a":  # the two names refused, the third renamed, the NaN kept BAD
            assert whole.stats.errors_by_reason == {"duplicate_key": 1, "invalid_text": 3, "non_finite": 1}


def test_a_clock_step_held_for_a_tag_that_never_reads_again_is_forgotten_after_its_hold():
    """A tag whose device clock was set back has its step held 10 minutes (a re-send of its fast clock is dropped
    meanwhile), every reading of every tag looked up against it. A device removed after its step kept it for the
    process's life; it is forgotten once its hold is over, at another tag's reading."""
    import json

    from devices.mqtt.client import CLOCK_STEP_HOLD_S, MqttSource
    from devices.mqtt.settings import MqttSettings

    src = MqttSource("x", MqttSettings(port=1, subscriptions=[{"topic": "j/#"}]))
    r0 = 1_796_000_000.0

    def read(topic: str, ts: float, received_at: float) -> list:
        return src._read([topic, json.dumps({"ts": ts, "v": 1}).encode(), received_at, False, 0, None])

    read("j/a", r0 + 200, r0)  # its clock 200 s fast
    assert [r.timestamp for r in read("j/a", r0 - 1, r0 + 1)] == [r0 - 1]  # set right: a step
    assert set(src._steps) == {"j/a/v"}
    read("j/b", r0 + 2, r0 + 2.5)
    read("j/b", r0 + 3, r0 + 3.5)
    assert set(src._steps) == {"j/a/v"}  # held
    read("j/b", r0 + 3 + CLOCK_STEP_HOLD_S, r0 + 3.5 + CLOCK_STEP_HOLD_S)
    assert src._steps == {}


def test_a_device_reading_after_this_gateways_own_clock_was_set_back_is_no_resend_of_its_fast_clock(
    monkeypatch,
):
    """A device clock 200 s fast is set right (a step, held 10 minutes: a re-send of the fast clock's readings is
    dropped meanwhile); then this gateway's own clock is set back 10 s (its NTP). The device's readings, right, read
    10 s ahead of it and were dropped as re-sends (out_of_order) until they passed the fast clock's times (200 s of
    readings). They are judged by this gateway's clock as it was at the step: taken; a re-send is dropped still."""
    import json

    from devices.mqtt import client
    from devices.mqtt.settings import MqttSettings

    src = client.MqttSource("x", MqttSettings(port=1, subscriptions=[{"topic": "j/#"}]))
    r0 = 1_796_000_000.0
    offset = [1000.0]
    monkeypatch.setattr(client, "_wall_offset", lambda: offset[0])

    def read(ts: float, received_at: float) -> list:
        return [
            r.timestamp
            for r in src._read(["j/a", json.dumps({"ts": ts, "v": 1}).encode(), received_at, False, 0, None])
        ]

    assert read(r0 + 200, r0) == [r0 + 200]  # its clock 200 s fast
    assert read(r0 + 1, r0 + 1.5) == [r0 + 1]  # set right: a step
    offset[0] -= 10  # this gateway's clock set back 10 s
    assert read(r0 + 20, r0 + 10.5) == [r0 + 20]  # before: dropped as a re-send
    assert read(r0 + 150, r0 + 12) == []  # the fast clock's, re-sent: dropped
    assert read(r0 + 21, r0 + 11.5) == [r0 + 21]


def test_clock_steps_of_many_tags_expiring_one_after_another_are_forgotten_oldest_first_each_looked_at_once():
    """Tags whose device clocks were set back one after another (each device's NTP step) see their holds end one
    after another: every step held was looked at whenever one of them ended, at nearly every reading (100,000 tags:
    20 times a reading's cost while they expired, the consumer minutes behind). Only those over are looked at now,
    oldest first, and the others are kept; nor is the table of steps walked (CPython's walk of a dict passes every
    entry deleted before: 5 times a reading's cost with 99,000 tags)."""
    import collections
    import json

    from devices.mqtt.client import CLOCK_STEP_HOLD_S, MqttSource
    from devices.mqtt.settings import MqttSettings

    class Counted(dict):
        looked = walks = 0

        def items(self):
            Counted.walks += 1
            for kv in super().items():
                Counted.looked += 1
                yield kv

    class Line(collections.deque):
        def __getitem__(self, i):
            Counted.looked += 1
            return super().__getitem__(i)

    src = MqttSource("x", MqttSettings(port=1, subscriptions=[{"topic": "j/#"}]))
    src._steps, src._steps_line = Counted(), Line()
    r0, n = 1_796_000_000.0, 200

    def read(topic: str, ts: float, received_at: float) -> list:
        return src._read([topic, json.dumps({"ts": ts, "v": 1}).encode(), received_at, False, 0, None])

    read("j/b", r0, r0)
    for i in range(n):
        read(f"j/t{i}", r0 + 200, r0)  # its clock 200 s fast
    for i in range(n):  # set right, one after another
        assert read(f"j/t{i}", r0 + 1 + i / 100 - 0.5, r0 + 1 + i / 100)
    assert len(src._steps) == n
    for i in range(n // 2):  # a tag without a step read as each hold ends
        at = r0 + 1 + CLOCK_STEP_HOLD_S + i / 100 + 0.005
        assert read("j/b", at - 0.5, at)
    assert set(src._steps) == {f"j/t{i}/v" for i in range(n // 2, n)}
    assert Counted.looked <= 2 * n, Counted.looked  # before: every step held at each, 15,000
    assert Counted.walks == 0, Counted.walks  # before: one at each step's end, 100


def test_a_message_of_many_tags_older_than_their_fast_clocks_last_is_scanned_once_not_once_per_tag():
    """A device whose clock runs fast replays buffered readings over 30 s old (a gateway device after an outage): each
    reading older than its tag's last goes to the look for the newest reading of its tag in its message (a batch
    after a clock step), which scanned the whole message once per tag (a message of 4,000 tags: 70 times a
    reading's cost, on the loop). Scanned once; the readings are still dropped as out of order, each counted."""
    from devices.mqtt.client import MqttSource
    from devices.mqtt.settings import MqttSettings

    class Counted(list):
        scans = 0

        def __iter__(self):
            Counted.scans += 1
            return super().__iter__()

    src = MqttSource("x", MqttSettings(port=1, subscriptions=[{"topic": "j/#"}]))
    r0, n = 1_796_000_000.0, 300
    assert len(src._json_readings("j/gw/", [(f"k{i}", i, r0 + 200, None) for i in range(n)], r0)) == n
    old = Counted((f"k{i}", i, r0 - 100, None) for i in range(n))
    assert src._json_readings("j/gw/", old, r0 + 1) == []
    assert src.stats.errors_by_reason == {"out_of_order": n}
    assert Counted.scans <= 2, Counted.scans  # its own reading and one look; before: one look per tag, 301


def test_a_value_without_a_time_of_its_own_is_not_the_newest_reading_that_makes_an_old_one_beside_it_a_clock_step():
    """A tag's last reading came from its device's fast clock (+200 s); its next message holds a buffered value of 2
    min ago and a value without a time (stamped the receive time). The time-less value was taken as the message's
    newest reading, near the receive time, so the old one was taken as the clock set back (a false notice, the tag's
    order restarted 2 min back, one of its two steps per 10 min spent). Dropped as out of order, as without it."""
    from devices.mqtt.client import MqttSource
    from devices.mqtt.settings import MqttSettings

    src = MqttSource("x", MqttSettings(port=1, subscriptions=[{"topic": "j/#"}]))
    r0 = 1_796_000_000.0
    assert len(src._json_readings("j/gw/", [("k", 0, r0 + 200, None)], r0)) == 1
    got = src._json_readings("j/gw/", [("k", 1, r0 - 119, None), ("k", 2, r0 + 1, None)], r0 + 1)
    assert [r.value for r in got] == [2]  # before: [1, 2], 1 taken as a step
    assert src.stats.errors_by_reason == {"out_of_order": 1}
    assert not src._steps


def test_a_clock_step_made_again_after_its_hold_is_swept_in_its_new_place_not_in_front_of_older_ones():
    """Held steps are swept oldest first, up to the first still held. A tag whose step is made again after its hold
    (its device's clock flapping) must move behind the others: left in front, held anew, it stopped every sweep, and
    a removed device's step behind it was kept for as long as the flapping went on."""
    import json

    from devices.mqtt.client import CLOCK_STEP_HOLD_S, MqttSource
    from devices.mqtt.settings import MqttSettings

    src = MqttSource("x", MqttSettings(port=1, subscriptions=[{"topic": "j/#"}]))
    r0, hold = 1_796_000_000.0, CLOCK_STEP_HOLD_S

    def read(topic: str, ts: float, received_at: float) -> list:
        return src._read([topic, json.dumps({"ts": ts, "v": 1}).encode(), received_at, False, 0, None])

    read("j/a", r0 + 200, r0)
    read("j/a", r0 + 0.5, r0 + 1)  # a's clock set back: a step
    read("j/b", r0 + 300, r0 + 100)
    read("j/b", r0 + 100.5, r0 + 101)  # b's too; b's device then removed
    read("j/a", r0 + 750, r0 + 500)  # a's clock fast again
    read("j/a", r0 + hold + 1.5, r0 + hold + 2)  # and set back after a's hold: the step made again
    read("j/c", r0 + hold + 50, r0 + hold + 50.5)
    read("j/c", r0 + hold + 101, r0 + hold + 101.5)  # b's hold over: swept
    assert set(src._steps) == {"j/a/v"}  # before (a left in front): b's kept too
