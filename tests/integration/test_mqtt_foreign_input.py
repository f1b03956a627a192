"""MqttSource against a real Mosquitto with input nobody here made: retained messages stamped by their
sensor, a password in a URL that reaches an error, hostile JSON, Sparkplug B payloads of other vendors,
and (from a bare socket posing as a broker, as Mosquitto refuses to deliver them) topic names MQTT forbids.
Each bad message is counted and skipped; the messages around it flow."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import struct
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Quality
from devices.mqtt import sparkplug_host
from devices.mqtt.client import MqttSource, SparkplugTypeMismatch
from devices.mqtt.settings import MqttSettings
from edge_agent.config import ConfigError, parse_config
from protocols import json_codec
from protocols import sparkplug as sp
from tests.support.mqtt_wire import read_packet
from tests.support.sparkplug_pb import pb_metric as _pb_metric
from tests.support.waits import until

D = sp.DataType
AGENT = {"id": "a1", "site": "s", "line": "l"}


def closed(c: paho.Client) -> None:
    """Disconnect a raw paho client and end its network thread. ``loop_stop`` alone waits for the thread's
    select to time out (paho's 1 s) before the thread sees the stop; the DISCONNECT wakes it at once."""
    c.disconnect()
    c.loop_stop()


def raw_client(port: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    return c


async def started(port: int, subs: list[dict], **kw) -> MqttSource:
    src = MqttSource("mq", MqttSettings(port=port, subscriptions=subs, **kw))
    await src.start()
    async with asyncio.timeout(5):
        await src.connected.wait()
        await src.subscribed.wait()
    return src


async def collect(src: MqttSource, until, timeout_s: float = 3.0) -> list:
    got: list = []
    try:
        async with asyncio.timeout(timeout_s):
            async for r in src.items():
                got.append(r)
                if until(got):
                    break
    except TimeoutError:
        pass
    return got


async def test_a_retained_message_stamped_moments_ago_is_good_and_an_old_or_unstamped_one_uncertain(
    mosquitto,
):
    """A sensor that publishes with the retain flag every second hands the broker's copy to a new
    subscription stamped 200 ms ago: it is as live as the next one. Its own timestamp decides (epoch
    seconds, milliseconds, ISO 8601 with a zone, a Sparkplug metric's time); without one, an hour old, or a
    clock minutes ahead (its age unknown) it stays uncertain."""
    now = time.time()
    iso = time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(now - 0.2 + 3600)
    )  # as a clock in UTC+01:00 shows it
    pub = raw_client(mosquitto.port)
    node = sp.Payload(
        int((now - 0.2) * 1000),
        0,
        [
            sp.Metric("bdSeq", None, D.INT64, 0),
            sp.Metric("fresh", 1, D.DOUBLE, 1.0),
            sp.Metric("old", 2, D.DOUBLE, 2.0, timestamp_ms=int((now - 3600) * 1000)),
        ],
    )
    retained = {
        "r/s/fresh": json.dumps({"ts": now - 0.2, "v": 1.0}),
        "r/s/old": json.dumps({"ts": now - 3600, "v": 2.0}),
        "r/s/none": json.dumps({"v": 3.0}),
        "r/s/ahead": json.dumps({"ts": now + 120, "v": 4.0}),
        "r/ms/fresh": json.dumps({"ts": int((now - 0.2) * 1000), "v": 5.0}),
        "r/iso/fresh": json.dumps({"ts": iso + "+01:00", "v": 6.0}),
        "spBv1.0/r/NBIRTH/edge": sp.encode(node),
    }
    for topic, body in retained.items():
        pub.publish(topic, body, qos=1, retain=True).wait_for_publish(5)
    subs = [
        {"topic": "r/s/#"},
        {"topic": "r/ms/#", "json_mapping": {"timestamp_format": "epoch_ms"}},
        {"topic": "r/iso/#", "json_mapping": {"timestamp_format": "iso8601"}},
        {"topic": "spBv1.0/r/#", "codec": "sparkplug_b"},
    ]
    try:
        src = await started(mosquitto.port, subs)
        try:
            got = await collect(src, lambda g: len(g) >= 8)
        finally:
            await src.stop()
    finally:
        for topic in retained:  # an empty retained message clears the broker's copy
            pub.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        closed(pub)
    q = {r.tag: r.quality for r in got}
    assert q == {
        "r/s/fresh/v": Quality.GOOD,
        "r/s/old/v": Quality.UNCERTAIN,
        "r/s/none/v": Quality.UNCERTAIN,
        "r/s/ahead/v": Quality.UNCERTAIN,
        "r/ms/fresh/v": Quality.GOOD,
        "r/iso/fresh/v": Quality.GOOD,
        "edge/fresh": Quality.GOOD,
        "edge/old": Quality.UNCERTAIN,
    }, q
    notices = src.notices.status()
    assert notices["retained_fresh"]["count"] == 4 and notices["retained"]["count"] == 4
    # a retained birth (Sparkplug forbids it; a node set to retain them) is no sign its node lives: it was
    # taken as alive, so a command to a node long dead was counted sent and lost. Now commands wait for a
    # live message from it, and a rebirth is asked
    assert not src.sparkplug.node_alive("r", "edge") and src.sparkplug.rebirths_requested == 1
    assert notices["retained_birth"]["count"] == 1


async def test_retained_max_age_s_bounds_what_counts_as_fresh(mosquitto):
    now = time.time()
    pub = raw_client(mosquitto.port)
    pub.publish("m/a", json.dumps({"ts": now - 5, "v": 1.0}), qos=1, retain=True).wait_for_publish(5)
    try:
        subs = [{"topic": "m/#", "retained_max_age_s": 2}]
        src = await started(mosquitto.port, subs)
        try:
            (r,) = await collect(src, lambda g: len(g) >= 1)
        finally:
            await src.stop()
    finally:
        pub.publish("m/a", b"", qos=1, retain=True).wait_for_publish(5)
        closed(pub)
    assert r.quality is Quality.UNCERTAIN  # 5 s old, over 2 s


async def test_a_password_in_a_url_never_reaches_last_error_or_the_log(mosquitto, caplog):
    """Any text a source's error carries, its own or a library's, may quote a URL with its login: the
    password is masked where every source's errors are kept and logged, not by each source."""
    src = await started(mosquitto.port, [{"topic": "u/#"}])
    pub = raw_client(mosquitto.port)
    caplog.set_level(logging.INFO)
    try:
        pub.publish("u/mqtts://edge:s3cretpw@broker/x", b"{oops", qos=1).wait_for_publish(5)
        pub.publish("u/ok", b'{"v": 1}', qos=1).wait_for_publish(5)
        got = await collect(src, lambda g: len(g) >= 1)
    finally:
        closed(pub)
        await src.stop()
    assert [r.value for r in got] == [1]
    assert src.stats.errors_by_reason == {"malformed_json": 1}
    assert "mqtts://edge:***@broker" in src.stats.last_error
    assert "s3cretpw" not in src.stats.last_error and "s3cretpw" not in caplog.text
    assert "mqtts://edge:***@broker" in caplog.text


async def test_a_broker_url_with_a_login_is_refused_as_host_and_masked_when_unreachable(caplog):
    """``host: mqtts://user:pass@broker`` never connects (it is no host name): refused at validation, the
    password not quoted back. A settings object made without validation, so unreachable, shows it masked."""
    for host in ("mqtts://edge:s3cretpw@broker.invalid", "edge:s3cretpw@broker.invalid"):
        with pytest.raises(ConfigError) as err:
            parse_config({"agent": AGENT, "sources": {"b": {"type": "mqtt", "host": host}}}, "line.yaml")
        assert "line.yaml: sources.b: host:" in str(err.value) and "username and password" in str(err.value)
        assert "s3cretpw" not in str(err.value)
    caplog.set_level(logging.INFO)
    s = MqttSettings.model_construct(
        **{**MqttSettings().__dict__, "host": "mqtt://edge:s3cretpw@nosuch.invalid"}
    )
    src = MqttSource("mq", s)
    await src.start()
    await src.stop()
    assert src.stats.errors_by_reason.get("broker_unreachable") == 1
    assert "edge:***@nosuch.invalid" in src.stats.last_error
    assert "s3cretpw" not in src.stats.last_error and "s3cretpw" not in caplog.text


async def test_a_key_given_twice_is_refused_not_read_as_either_value(mosquitto):
    """``{"temp": 20, "temp": 9999}``: Python keeps the last, other parsers the first; neither is read."""
    src = await started(mosquitto.port, [{"topic": "d/#"}, {"topic": "k/#", "json_mapping": {"records": {}}}])
    pub = raw_client(mosquitto.port)
    try:
        for body in (
            b'{"temp": 20, "temp": 9999}',
            b'{"name": "a", "temp": 20, "temp": 9999}',
            b'{"n": {"x": 1, "x": 2}, "temp": 5}',
        ):
            pub.publish("d/1", body, qos=1)
        pub.publish("k/1", b'{"values": [{"id": "a", "v": 1, "v": 2}]}', qos=1)
        pub.publish("d/1", b'{"temp": 21, "hum": 40}', qos=1)
        got = await collect(src, lambda g: len(g) >= 2)
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [("d/1/temp", 21), ("d/1/hum", 40)]
    assert src.stats.errors_by_reason == {"duplicate_key": 4}


async def test_sparkplug_timestamps_of_zero_or_in_seconds_are_no_time_and_a_million_metrics_are_refused(
    mosquitto,
):
    """A node without a clock sends timestamp 0: its readings get the receive time, not 1970 (every one at
    the same instant). A node that sends epoch seconds where Sparkplug has milliseconds stamped its readings
    in January 1970 (and, after a reading stamped with the receive time, dropped as out of order): the
    receive time too, counted as bad_timestamp. A Float metric came widened (75.3 as 75.30000305175781, which
    a rule gt: 75.3 took as over): it is the decimal the node shows. A 4-MB payload of a million metrics once
    held the agent's loop 10 s: refused before decoding, counted, and the node's next message is read."""
    src = await started(mosquitto.port, [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    try:
        birth = sp._pb().Payload()
        birth.timestamp, birth.seq = 0, 0
        _pb_metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
        _pb_metric(birth, "t", alias=1, datatype=D.DOUBLE, double_value=1.0, timestamp=0)
        _pb_metric(birth, "f", alias=2, datatype=D.FLOAT, float_value=75.3)
        pub.publish("spBv1.0/g/NBIRTH/n", birth.SerializeToString(), qos=1)
        big = b"\x18\x01" + b"\x12\x02\x10\x01" * 1_000_000  # seq 1, a million metrics {alias: 1}
        assert len(sp._pb().Payload.FromString(big[:14]).metrics) == 3  # what it is, in a few
        data = sp._pb().Payload()
        data.seq = 2
        _pb_metric(data, alias=1, double_value=2.0)  # no timestamp at all
        seconds = sp._pb().Payload()
        seconds.seq, seconds.timestamp = 3, int(time.time())  # epoch seconds, not milliseconds
        _pb_metric(seconds, alias=1, double_value=3.0, timestamp=int(time.time()))
        pub.publish("spBv1.0/g/NDATA/n", big, qos=1)
        pub.publish("spBv1.0/g/NDATA/n", data.SerializeToString(), qos=1)
        pub.publish("spBv1.0/g/NDATA/n", seconds.SerializeToString(), qos=1)
        got = await collect(src, lambda g: len(g) >= 4, 10)
    finally:
        closed(pub)
        await src.stop()
    assert [r.value for r in got] == [1.0, 75.3, 2.0, 3.0]
    for r in got:
        assert r.timestamp == r.received_at, r
    assert src.stats.errors_by_reason.get("too_many_metrics") == 1  # refused whole, none of its metrics read
    assert src.stats.errors_by_reason.get("bad_timestamp") == 2  # the payload's and the metric's


# ---- a bare socket posing as a broker: Mosquitto refuses these topics, other brokers may not ----------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_packet(s: socket.socket) -> bytes:
    packet = read_packet(s)
    if packet is None:
        raise ConnectionError("the client closed the connection")
    return packet[1]


def _lax_broker(listener: socket.socket, topics: list[bytes], done: threading.Event) -> None:
    """Accept one client, acknowledge its CONNECT and SUBSCRIBE, deliver a QoS 0 message per topic."""
    conn, _ = listener.accept()
    with conn:
        _read_packet(conn)
        conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
        mid = _read_packet(conn)[:2]
        conn.sendall(b"\x90\x03" + mid + b"\x00")  # SUBACK, QoS 0
        for topic in topics:
            body = struct.pack("!H", len(topic)) + topic + b'{"v": 1}'
            conn.sendall(b"\x30" + _remaining_length(len(body)) + body)
        done.wait(5)


async def test_topic_names_mqtt_forbids_are_counted_and_the_source_reads_on():
    """A topic that is not UTF-8 once ended paho's network thread (the exception left our callback): the
    connection stayed up and nothing more was read. Wildcards and NUL in a delivered topic name would give
    tags no rule could name. Each is counted as bad_topic and skipped."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    done = threading.Event()
    topics = [b"x/\xff\xfe", b"x/a+b", b"x/#", b"x/n\x00ul", b"x/ok"]
    t = threading.Thread(target=_lax_broker, args=(listener, topics, done), daemon=True)
    t.start()
    src = MqttSource("mq", MqttSettings(port=listener.getsockname()[1], subscriptions=[{"topic": "x/#"}]))
    try:
        await src.start()
        got = await collect(src, lambda g: len(g) >= 1)
        await asyncio.sleep(0.05)  # the thread-safe error hand-over
    finally:
        done.set()
        await src.stop()
        listener.close()
    assert [(r.tag, r.value) for r in got] == [("x/ok/v", 1)]
    assert src.stats.errors_by_reason == {"bad_topic": 4}


async def test_a_message_of_over_100000_values_is_refused_whole_and_the_next_is_read(mosquitto):
    """8 MB of JSON holds 700,000 fields or 250,000 records; turning one such message into readings held
    the agent's loop for seconds (every source, the status page). Over 100,000 it is refused, counted."""
    subs = [{"topic": "f/#"}, {"topic": "k/#", "json_mapping": {"records": {"array": ""}}}]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("f/1", "{" + ",".join(f'"a{i}":1' for i in range(100_001)) + "}", qos=1)
        pub.publish("k/1", json.dumps([{"id": f"t{i}", "v": 1} for i in range(100_001)]), qos=1)
        pub.publish("f/2", b'{"v": 7}', qos=1)
        got = await collect(src, lambda g: g[-1].value == 7, 10)
    finally:
        closed(pub)
        await src.stop()
    # refused whole (no reading of the 200,002 values, which is what held the loop), counted, the next one read
    assert [(r.tag, r.value) for r in got] == [("f/2/v", 7)]
    assert src.stats.errors_by_reason == {"too_many_values": 2}


async def test_a_message_of_700000_keys_is_refused_unparsed_while_the_loop_runs_on(mosquitto):
    """An 8-MB JSON object of 700,000 keys (a hostile or buggy sensor) was parsed on the agent's loop before its
    count refused it: 1.6 s in one C call, every other source, the status page and action writes waiting. Its
    keys are now counted in a worker thread and it is refused unparsed; the loop runs on meanwhile (a ticker
    advances between the message's hand-over and its refusal: it did not once), and large JSON that may be
    parsed (a 200,000-sample waveform, a text holding 300,000 colons) is read as before."""
    subs = [{"topic": "f/#"}, {"topic": "w/#", "json_mapping": {"values": {"v": "wave", "t": "t"}}}]
    src = await started(mosquitto.port, subs)
    hostile = ("{" + ",".join(f'"k{i}":1' for i in range(700_000)) + "}").encode()
    ticks = [0]
    seen: dict[str, int] = {}

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    # the two ends of the hostile message's reading, by the ticker's count: its hand-over and its refusal
    channel, get_many, error = src._channel, src._channel.get_many, src._error

    async def handed_over(*a, **kw):
        batch = await get_many(*a, **kw)
        if any(e[1] is not None and len(e[1]) == len(hostile) for e in batch):
            seen.setdefault("handed_over", ticks[0])
        return batch

    def counted(reason: str, detail: str) -> None:
        if reason == "too_many_values":
            seen.setdefault("refused", ticks[0])
        error(reason, detail)

    channel.get_many, src._error = handed_over, counted
    pub = raw_client(mosquitto.port)
    tick = asyncio.create_task(ticker())
    try:
        pub.publish("f/1", hostile, qos=1)
        pub.publish("w/1", json.dumps({"v": [0.5] * 200_000, "t": 3}), qos=1)
        pub.publish("w/2", json.dumps({"log": "a:" * 300_000, "v": [1.0], "t": 5}), qos=1)
        pub.publish("f/2", b'{"v": 7}', qos=1)
        got = await collect(src, lambda g: g[-1].tag == "f/2/v", 30)
    finally:
        tick.cancel()
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value.shape if r.tag.endswith("wave") else r.value) for r in got] == [
        ("w/1/wave", (200_000,)),
        ("w/1/t", 3),
        ("w/2/wave", (1,)),
        ("w/2/t", 5),
        ("f/2/v", 7),
    ]
    assert src.stats.errors_by_reason == {"too_many_values": 1}
    # the loop turned while the message was counted (in one loop step, as its parse was, it would not)
    assert seen["refused"] - seen["handed_over"] >= 3, seen


async def test_an_object_of_more_keys_than_one_message_may_give_values_is_refused_unparsed(
    mosquitto, monkeypatch
):
    """An 8-MB object of 599,999 keys each holding text (within MAX_KEYS) was parsed in the worker thread before it
    was refused as too_many_values: text does not call back into Python, so the parse held the GIL, the agent's
    loop with it (measured against Mosquitto, a 10 ms ticker's worst lag 2.3 s; now 67-117 ms). An object of more
    keys than one message may give values (MAX_VALUES) is told by the count and refused unparsed; the source's next
    message is read. So is such an object beside a few small ones, which the count passed when it bounded the objects
    by the '{' bytes (parsed: the loop's worst lag 0.22-0.3 s, 0.7-1.3 s on a busier machine)."""
    parsed: list[int] = []
    parse = json_codec._parse

    def counted_parse(payload, *a, **kw):
        parsed.append(len(payload))
        return parse(payload, *a, **kw)

    monkeypatch.setattr(json_codec, "_parse", counted_parse)
    src = await started(mosquitto.port, [{"topic": "f/#"}])
    giant = "{" + ",".join(f'"k{i}":"x"' for i in range(599_990)) + "}"
    hostile = giant.encode()
    beside = ('[{"id": "t1", "v": 1},' + giant + ",{},{},{},{},{}]").encode()
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("f/1", hostile, qos=1)
        pub.publish("f/3", beside, qos=1)
        pub.publish("f/2", b'{"v": 7}', qos=1)
        got = await collect(src, lambda g: g[-1].tag == "f/2/v", 30)
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [("f/2/v", 7)]
    assert src.stats.errors_by_reason == {"too_many_values": 2}, src.stats.errors_by_reason
    assert "an object of over 100000 keys" in src.stats.last_error, src.stats.last_error
    assert len(hostile) not in parsed and len(beside) not in parsed  # refused unparsed


async def test_a_large_message_is_parsed_off_the_loop_while_another_source_reads_on_its_readings_in_order(
    mosquitto, monkeypatch
):
    """A JSON message of 100,000 values, under every bound, was parsed and turned into readings on the agent's
    loop: 0.5-1.3 s in which every other source, the status page, PLC writes and the uplink waited (an 8-MiB array
    of 4,000,000 numbers 2.4 s). It is now parsed in a worker thread and its readings made a chunk at a time. The
    parse is held here until another source's reading has been read (on the loop, as the parse held it, it never
    was); then every value of the large message comes, in its order, and the next messages after it."""
    from protocols import json_codec

    subs = [{"topic": "f/#"}, {"topic": "w/#", "json_mapping": {"values": {"v": "wave", "t": "t"}}}]
    big = await started(mosquitto.port, subs)
    other = await started(mosquitto.port, [{"topic": "o/#"}])
    large = ("{" + ",".join(f'"a{i}":{i}.5' for i in range(100_000)) + "}").encode()
    parsing, release = threading.Event(), threading.Event()
    held: list[bool] = []
    parse = json_codec._parse

    def held_parse(payload, *a, **kw):
        if payload == large and not held:  # (parsed again for its first message's hint of a time field)
            parsing.set()
            held.append(
                release.wait(10)
            )  # on the loop (the former code) the other source cannot read meanwhile
        return parse(payload, *a, **kw)

    monkeypatch.setattr(json_codec, "_parse", held_parse)
    got: list = []
    got_other: list = []

    async def consume(src: MqttSource, into: list, on_each=None) -> None:
        async for r in src.items():  # as the agent reads a source: the loop given back every 64 readings
            into.append(r)
            if on_each is not None:
                on_each(r)
            if len(into) % 64 == 0:
                await asyncio.sleep(0)

    tasks = [
        asyncio.create_task(consume(big, got)),
        asyncio.create_task(consume(other, got_other, lambda r: release.set())),
    ]
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("f/1", large, qos=1)
        pub.publish("w/1", json.dumps({"v": [0.25] * 1_000_000, "t": 3}), qos=1)
        pub.publish("f/2", b'{"v": 7}', qos=1)
        await until(parsing.is_set, 20, "the large message's parse")
        pub.publish("o/1", b'{"v": 1}', qos=1)
        await until(lambda: got and got[-1].tag == "f/2/v", 30, "the messages after the large one")
    finally:
        release.set()
        closed(pub)
        for t in tasks:
            t.cancel()
        await big.stop()
        await other.stop()
    assert held == [True]  # the other source's reading came while the large message was parsed
    assert [(r.tag, r.value) for r in got_other] == [("o/1/v", 1)]
    assert [(r.tag, r.value) for r in got[:100_000]] == [(f"f/1/a{i}", i + 0.5) for i in range(100_000)]
    assert [(r.tag, r.value.shape if r.tag == "w/1/wave" else r.value) for r in got[100_000:]] == [
        ("w/1/wave", (1_000_000,)),
        ("w/1/t", 3),
        ("f/2/v", 7),
    ]
    assert float(got[100_000].value.sum()) == 250_000.0
    assert big.stats.errors_by_reason == {} and other.stats.errors_by_reason == {}


async def test_a_large_sparkplug_payload_is_decoded_off_the_loop_while_another_source_reads_on(
    mosquitto, monkeypatch
):
    """A Sparkplug NDATA of 100,000 metrics (within MAX_METRICS) was decoded on the agent's loop, which it held
    1.8-2.7 s with the host's reading of it. Its decoding (over 64 KiB, not compressed) now runs in a worker thread:
    held here until another source's reading has been read (on the loop, as the decoding held it, it never was);
    then its 20,000 metrics are read by their aliases, in order, and the node's next message after them."""
    n = 20_000
    ms = int(time.time() * 1000)
    birth = sp.Payload(timestamp_ms=ms, seq=0, metrics=[sp.Metric("bdSeq", None, D.INT64, 0)])
    birth.metrics.extend(sp.Metric(f"m{i}", i, D.DOUBLE, 0.0) for i in range(n))
    data = sp.encode(
        sp.Payload(
            timestamp_ms=ms + 1, seq=1, metrics=[sp.Metric(None, i, D.DOUBLE, i + 0.5) for i in range(n)]
        )
    )
    after = sp.encode(sp.Payload(timestamp_ms=ms + 2, seq=2, metrics=[sp.Metric(None, 0, D.DOUBLE, -1.0)]))
    assert len(data) > 64 * 1024
    parsing, release = threading.Event(), threading.Event()
    held: list[bool] = []
    parse = sp._parse

    def held_parse(payload):
        if payload == data and not held:
            parsing.set()
            held.append(
                release.wait(10)
            )  # on the loop (the former code) the other source cannot read meanwhile
        return parse(payload)

    monkeypatch.setattr(sp, "_parse", held_parse)
    src = await started(mosquitto.port, [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}])
    other = await started(mosquitto.port, [{"topic": "o/#"}])
    got: list = []
    got_other: list = []

    async def consume(source: MqttSource, into: list, on_each=None) -> None:
        async for r in source.items():  # as the agent reads a source: the loop given back every 64 readings
            into.append(r)
            if on_each is not None:
                on_each(r)
            if len(into) % 64 == 0:
                await asyncio.sleep(0)

    tasks = [
        asyncio.create_task(consume(src, got)),
        asyncio.create_task(consume(other, got_other, lambda r: release.set())),
    ]
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("spBv1.0/g/NBIRTH/n", sp.encode(birth), qos=1)
        pub.publish("spBv1.0/g/NDATA/n", data, qos=1)
        pub.publish("spBv1.0/g/NDATA/n", after, qos=1)
        await until(parsing.is_set, 20, "the large payload's decoding")
        pub.publish("o/1", b'{"v": 1}', qos=1)
        await until(lambda: got and got[-1].value == -1.0, 30, "the node's message after the large one")
    finally:
        release.set()
        closed(pub)
        for t in tasks:
            t.cancel()
        await src.stop()
        await other.stop()
    assert held == [True]  # the other source's reading came while the large payload was decoded
    assert [(r.tag, r.value) for r in got_other] == [("o/1/v", 1)]
    assert [(r.tag, r.value) for r in got[n:]] == [(f"n/m{i}", i + 0.5) for i in range(n)] + [("n/m0", -1.0)]
    assert src.stats.errors_by_reason == {}


async def test_a_large_sparkplug_birth_and_data_are_read_a_step_at_a_time_the_loop_serving_other_work_between(
    mosquitto,
):
    """A large Sparkplug message (decoded in the worker thread) was learnt and read by the host on the loop at once:
    an NBIRTH of 99,999 metrics held it 2-3.5 s, an NDATA 1-1.1 s, every other source, the status page and the PLC
    writes waiting. Its metrics are now learnt and read ``STEP_METRICS`` at a time, the loop serving other work
    between two: a task counting its turns gets some between the birth's first reading and its last, and the
    data's (the consumer itself never gives the loop back); every reading comes, in order, then the node's next
    message."""
    n = 5_000
    ms = int(time.time() * 1000)
    birth = sp.Payload(timestamp_ms=ms, seq=0, metrics=[sp.Metric("bdSeq", None, D.INT64, 0)])
    birth.metrics.extend(sp.Metric(f"m{i}", i, D.DOUBLE, float(i)) for i in range(n))
    data = sp.Payload(
        timestamp_ms=ms + 1, seq=1, metrics=[sp.Metric(None, i, D.DOUBLE, i + 0.5) for i in range(n)]
    )
    after = sp.Payload(timestamp_ms=ms + 2, seq=2, metrics=[sp.Metric(None, 0, D.DOUBLE, -1.0)])
    assert min(len(sp.encode(birth)), len(sp.encode(data))) > 64 * 1024  # decoded in the worker thread
    src = await started(mosquitto.port, [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}])
    turns = [0]
    seen: list[tuple[float, int]] = []  # (a reading's value, the other task's turns when it came)

    async def other_work() -> None:
        while True:
            await asyncio.sleep(0)
            turns[0] += 1

    async def consume() -> None:
        async for (
            r
        ) in src.items():  # (no await of its own: the loop gets a turn only where the source gives it)
            seen.append((r.value, turns[0]))

    tasks = [asyncio.create_task(other_work()), asyncio.create_task(consume())]
    pub = raw_client(mosquitto.port)
    try:
        for kind, p in (("NBIRTH", birth), ("NDATA", data), ("NDATA", after)):
            pub.publish(f"spBv1.0/g/{kind}/n", sp.encode(p), qos=1)
        await until(lambda: seen and seen[-1][0] == -1.0, 30, "the node's message after the large ones")
    finally:
        closed(pub)
        for t in tasks:
            t.cancel()
        await src.stop()
    assert [v for v, _ in seen] == [float(i) for i in range(n)] + [i + 0.5 for i in range(n)] + [-1.0]
    births, datas = seen[:n], seen[n : 2 * n]
    assert births[-1][1] > births[0][1]  # the loop served the other task while the birth was read
    assert datas[-1][1] > datas[0][1]
    assert src.stats.errors_by_reason == {}


async def test_a_source_stopped_while_a_large_sparkplug_message_is_read_hands_nothing_more_on(mosquitto):
    """A large Sparkplug message's readings, read a step at a time: a stop that comes between two steps (here, at
    its first reading) hands none of its later ones on, as a large JSON message's. Read at once, the whole message
    was handed on after ``stop()`` was called (its readings past the step the stop came in)."""
    n = 5_000
    ms = int(time.time() * 1000)
    birth = sp.Payload(timestamp_ms=ms, seq=0, metrics=[sp.Metric("bdSeq", None, D.INT64, 0)])
    birth.metrics.extend(sp.Metric(f"m{i}", i, D.DOUBLE, 0.0) for i in range(n))
    data = sp.Payload(
        timestamp_ms=ms + 1, seq=1, metrics=[sp.Metric(None, i, D.DOUBLE, i + 0.5) for i in range(n)]
    )
    src = await started(mosquitto.port, [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}])
    got: list = []
    after_stop: list = []
    stopping: list[asyncio.Task] = []

    async def consume() -> None:
        async for r in src.items():
            (after_stop if stopping else got).append(r)
            if r.value == 0.5 and not stopping:  # the data's first reading: stopped now
                stopping.append(asyncio.create_task(src.stop()))

    task = asyncio.create_task(consume())
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("spBv1.0/g/NBIRTH/n", sp.encode(birth), qos=1)
        pub.publish("spBv1.0/g/NDATA/n", sp.encode(data), qos=1)
        await until(lambda: stopping, 30, "the data's first reading")
        await stopping[0]
        await asyncio.wait_for(task, 10)  # items() ended
    finally:
        closed(pub)
        task.cancel()
        await src.stop()
    assert [r.value for r in got[n:]] == [0.5]
    assert len(got) == n + 1
    # the rest of the step the stop came in, then nothing: read at once, the whole message (4,999 more)
    assert [r.value for r in after_stop] == [i + 0.5 for i in range(1, 1 + len(after_stop))]
    assert len(after_stop) < sparkplug_host.STEP_METRICS


async def test_a_command_sent_while_a_large_sparkplug_birth_is_learnt_is_typed_by_the_whole_birth(mosquitto):
    """A large birth is learnt a step at a time, its node alive from the first: a command to a metric its later
    steps declare waits until the birth is learnt, and is typed by it (300 to a UInt8 metric refused whatever the
    action's datatype), never by half of it (sent as the action's Int32)."""
    n = 5_000
    ms = int(time.time() * 1000)
    birth = sp.Payload(timestamp_ms=ms, seq=0, metrics=[sp.Metric("bdSeq", None, D.INT64, 0)])
    birth.metrics.extend(sp.Metric(f"m{i}", i, D.DOUBLE, 0.0) for i in range(n - 1))
    birth.metrics.append(sp.Metric("last", n - 1, D.UINT8, 1))
    src = await started(mosquitto.port, [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}])
    got: list = []
    sent: list = []

    async def command_once_alive() -> None:
        while not src.sparkplug.node_alive("g", "n"):
            await asyncio.sleep(0)
        try:
            sent.append(await src.command("g", "n", None, "last", 300, datatype="Int32"))
        except Exception as e:
            sent.append(e)

    async def consume() -> None:
        async for r in src.items():
            got.append(r)

    tasks = [asyncio.create_task(command_once_alive()), asyncio.create_task(consume())]
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("spBv1.0/g/NBIRTH/n", sp.encode(birth), qos=1)
        await until(lambda: sent and len(got) == n, 30, "the command's outcome and the birth's readings")
    finally:
        closed(pub)
        for t in tasks:
            t.cancel()
        await src.stop()
    assert isinstance(sent[0], SparkplugTypeMismatch), sent


def _large_birth(n: int) -> sp.Payload:
    birth = sp.Payload(
        timestamp_ms=int(time.time() * 1000), seq=0, metrics=[sp.Metric("bdSeq", None, D.INT64, 0)]
    )
    birth.metrics.extend(sp.Metric(f"m{i}", i, D.DOUBLE, 0.0) for i in range(n))
    return birth


async def test_a_command_waits_while_a_large_birth_is_learnt_on_a_busy_loop_and_is_refused_at_once_without_reader(
    mosquitto, monkeypatch
):
    """A command to a node whose large birth is being learnt (a step a turn of the loop) waits as long as the
    steps go on, however busy the loop: here 30 ms of other work a turn, the steps smaller and the wait for a step
    1 s, so the birth takes well over that (a 99,999-metric birth took 4.3 s at 30 ms a turn, and a fixed 5 s
    refused the command past it). A consumer cancelled mid-birth leaves its steps for the next: a command then is
    refused at once, saying so (it waited the 5 s, each one), and once a consumer reads on it is sent."""
    from devices.mqtt import client as mqtt_client
    from devices.mqtt.client import MqttError

    monkeypatch.setattr(sparkplug_host, "STEP_METRICS", 64)
    monkeypatch.setattr(mqtt_client, "LEARNING_WAIT_S", 1.0)
    n = 5_000
    src = await started(mosquitto.port, [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}])
    got: list = []
    sent: list = []
    busy = True

    async def other_work() -> None:
        while busy:
            time.sleep(0.03)
            await asyncio.sleep(0)

    async def consume() -> None:
        async for r in src.items():
            got.append(r)

    async def command_while_learnt() -> None:
        while not src.sparkplug.learning("g", "n"):
            await asyncio.sleep(0)
        try:
            sent.append(await src.command("g", "n", None, "m5", 1.5))
        except Exception as e:
            sent.append(e)

    pub = raw_client(mosquitto.port)
    tasks = [asyncio.create_task(f()) for f in (other_work, consume, command_while_learnt)]
    try:
        pub.publish("spBv1.0/g/NBIRTH/n", sp.encode(_large_birth(n)), qos=1)
        await until(lambda: sent, 60, "the command's outcome")
        busy = False
        assert isinstance(sent[0], str), sent  # sent, typed by the whole birth
        await until(lambda: len(got) >= n, 30, "the birth's readings")
        assert len(got) == n, len(got)
        # the node born again, a consumer cancelled mid-birth
        got.clear()
        pub.publish("spBv1.0/g/NBIRTH/n", sp.encode(_large_birth(n)), qos=1)
        await until(lambda: src.sparkplug.learning("g", "n"), 30, "the birth learnt", every_s=0)
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        assert src.sparkplug.learning("g", "n")  # its steps left for the next consumer
        with pytest.raises(MqttError, match="no consumer reads this source now"):
            await src.command("g", "n", None, "m5", 2.5)
        tasks[1] = asyncio.create_task(consume())
        await until(lambda: src._readers, 30, "a consumer reading again")
        assert isinstance(await src.command("g", "n", None, "m5", 2.5), str)
        await until(lambda: len(got) >= n, 30, "the birth's readings")
        assert len(got) == n, len(got)  # none lost, none twice
    finally:
        busy = False
        closed(pub)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await src.stop()


async def test_large_messages_are_decoded_one_at_a_time_apart_from_the_loops_default_pool(
    mosquitto, monkeypatch
):
    """A large message of every MQTT source (JSON and Sparkplug alike) was decoded with asyncio.to_thread, in the
    loop's default pool the uplink's outbox reads and acks, model installs, paho's connect and stop()'s loop_stop
    use: six sources each decoding an 8-MiB array at once took its every thread (a no-op waited up to 30.4 s) and
    peaked 683 MB. They are now decoded in one thread of their own, one message at a time. Here the loop's default
    pool has two threads and two sources' decodes are held: the agent's to_thread work runs on meanwhile, the second
    decode waits for the first, and every reading comes once they are let go."""
    from concurrent.futures import ThreadPoolExecutor

    from protocols import json_codec

    large = ("{" + ",".join(f'"a{i}":{i}.5' for i in range(10_000)) + "}").encode()
    n = 20_000
    ms = int(time.time() * 1000)
    birth = sp.Payload(timestamp_ms=ms, seq=0, metrics=[sp.Metric("bdSeq", None, D.INT64, 0)])
    birth.metrics.extend(sp.Metric(f"m{i}", i, D.DOUBLE, 0.0) for i in range(n))
    data = sp.encode(
        sp.Payload(
            timestamp_ms=ms + 1, seq=1, metrics=[sp.Metric(None, i, D.DOUBLE, i + 0.5) for i in range(n)]
        )
    )
    assert len(large) > 64 * 1024 and len(data) > 64 * 1024
    release = threading.Event()
    lock = threading.Lock()
    began: list[str] = []
    running = [0, 0]  # decodes running now, most at once

    def held(kind: str) -> None:
        with lock:
            if kind in began:  # (parsed again for its first message's hint of a time field)
                return
            began.append(kind)
            running[0] += 1
            running[1] = max(running)
        release.wait(60)  # in the loop's default pool (the former code) two such decodes take its two threads
        with lock:
            running[0] -= 1

    json_parse, sp_parse = json_codec._parse, sp._parse

    def held_json(payload, *a, **kw):
        if payload == large:
            held("json")
        return json_parse(payload, *a, **kw)

    def held_sp(payload):
        if payload == data:
            held("sparkplug")
        return sp_parse(payload)

    monkeypatch.setattr(json_codec, "_parse", held_json)
    monkeypatch.setattr(sp, "_parse", held_sp)
    pool = ThreadPoolExecutor(max_workers=2)
    asyncio.get_running_loop().set_default_executor(pool)
    j = await started(mosquitto.port, [{"topic": "f/#"}])
    s = await started(mosquitto.port, [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}])
    entered: set[str] = set()

    def watched(src: MqttSource, name: str) -> None:
        decoded = src._decoded

        async def entering(entry):  # its decode is handed to its thread before this task next waits
            if entry[1] in (large, data):  # (the birth is large too, and not held)
                entered.add(name)
            return await decoded(entry)

        src._decoded = entering  # type: ignore[method-assign]

    watched(j, "json")
    watched(s, "sparkplug")
    got_j: list = []
    got_s: list = []

    async def consume(src: MqttSource, into: list) -> None:
        async for r in src.items():
            into.append(r)

    tasks = [asyncio.create_task(consume(j, got_j)), asyncio.create_task(consume(s, got_s))]
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("spBv1.0/g/NBIRTH/n", sp.encode(birth), qos=1)
        # (large too, it is decoded in the same thread: read before the held ones come)
        await until(lambda: len(got_s) == n, 20, "the node's birth")
        pub.publish("spBv1.0/g/NDATA/n", data, qos=1)
        pub.publish("f/1", large, qos=1)
        await until(lambda: entered == {"json", "sparkplug"}, 20, "both large messages handed to be decoded")
        noop = asyncio.ensure_future(asyncio.to_thread(lambda: None))
        await until(noop.done, 30, "the agent's to_thread work while two decodes are held")
        assert len(began) == 1 and running == [1, 1]  # the other decode waits for the held one
        release.set()
        await until(lambda: len(got_j) == 10_000 and len(got_s) == 2 * n, 30, "every reading of both")
    finally:
        release.set()
        closed(pub)
        for t in tasks:
            t.cancel()
        await j.stop()
        await s.stop()
    assert running[1] == 1 and sorted(began) == ["json", "sparkplug"]
    assert [(r.tag, r.value) for r in got_j] == [(f"f/1/a{i}", i + 0.5) for i in range(10_000)]
    assert [(r.tag, r.value) for r in got_s[n:]] == [(f"n/m{i}", i + 0.5) for i in range(n)]
    assert j.stats.errors_by_reason == {} and s.stats.errors_by_reason == {}


async def test_stop_while_a_large_message_is_decoded_hands_none_of_it_on(mosquitto, monkeypatch):
    """stop() while a large message was decoded in its worker thread: once the decode came back, items() handed
    its first 2,048 readings on after stop() had returned (the docs: nothing is handed on from the stop on), and the
    source kept the message's other values. Now the consumer ends with none of them, and they are let go."""
    from protocols import json_codec

    src = await started(mosquitto.port, [{"topic": "f/#", "qos": 1}])
    large = ("{" + ",".join(f'"a{i}":{i}.5' for i in range(10_000)) + "}").encode()
    parsing, release = threading.Event(), threading.Event()
    parse = json_codec._parse

    def held_parse(payload, *a, **kw):
        if payload == large and not parsing.is_set():
            parsing.set()
            release.wait(60)  # until stop() has returned
        return parse(payload, *a, **kw)

    monkeypatch.setattr(json_codec, "_parse", held_parse)
    got: list = []
    after: list = []
    stopped = [False]

    async def consume() -> None:
        async for r in src.items():
            (after if stopped[0] else got).append(r)

    task = asyncio.create_task(consume())
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("f/1", large, qos=1)
        await until(parsing.is_set, 20, "the large message's parse")
        await src.stop(timeout_s=1)
        stopped[0] = True
        release.set()
        await until(task.done, 20, "the consumer's end after stop()")
    finally:
        release.set()
        closed(pub)
        task.cancel()
        await src.stop()
    assert got == [] and after == []
    assert src._chunks is None  # the message's values are not kept


async def test_a_consumer_restarted_while_a_large_message_is_decoded_counts_its_text_fields_once(
    mosquitto, monkeypatch
):
    """A consumer cancelled while its source's large message was decoded, and started again, decodes the message
    again; the first decoding runs on in its thread. Both wrote into the decoder's one list of unread text fields
    (and its one list of reports and non-finite flag), so the message's text fields were counted twice. Each
    decoding now keeps what it finds to itself: the readings come once and the fields are counted once."""
    from protocols import json_codec

    src = await started(mosquitto.port, [{"topic": "f/#", "qos": 1}])
    fields = ",".join(f'"a{i}":{i}.5' for i in range(10_000))
    large = ('{"fw":"1.2.3","serial":"X7","mac":"aa:bb",' + fields + "}").encode()
    parsing, release = threading.Event(), threading.Event()
    parse = json_codec._parse

    def held_parse(payload, *a, **kw):
        if payload == large and not parsing.is_set():
            parsing.set()
            release.wait(60)  # until its consumer has been cancelled and started again
        return parse(payload, *a, **kw)

    monkeypatch.setattr(json_codec, "_parse", held_parse)
    got: list = []

    async def consume() -> None:
        async for r in src.items():
            got.append(r)

    first = asyncio.create_task(consume())
    again: asyncio.Task | None = None
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("f/1", large, qos=1)
        await until(parsing.is_set, 20, "the large message's parse")
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        again = asyncio.create_task(
            consume()
        )  # the same message decoded again, the first decoding running on
        release.set()
        await until(lambda: len(got) == 10_000, 30, "the message's readings")
    finally:
        release.set()
        closed(pub)
        if again is not None:
            again.cancel()
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [(f"f/1/a{i}", i + 0.5) for i in range(10_000)]
    assert src.notices.counts["text_field_unread"] == 3


async def test_a_payload_of_unterminated_quotes_is_malformed_json_at_once_the_loop_running_on(mosquitto):
    """The count before parsing (b338c52c) searched the next string from every quote: a payload of escaped quotes
    that never close and then more ':' than MAX_KEYS was scanned to its end once per quote, in one C call holding
    the GIL (200 KB of 2,000 such quotes: 24 s, the loop, paho's thread and the HTTP thread all stopped), and then
    refused as too_many_values. A string is now matched only where one opens; one that never ends ends the count,
    and the parse refuses the message at once as malformed_json, as before b338c52c. The loop turns while each is
    counted in the worker thread (a ticker advances between its hand-over and its refusal) and the next message
    is read."""
    from protocols.json_codec import MAX_KEYS

    src = await started(mosquitto.port, [{"topic": "f/#"}])
    hostile = {"f/1": b'\\"' * 300 + b":" * (MAX_KEYS + 1), "f/2": b'\\"' * 300 + b":" * 1_000_000}
    ticks = [0]
    seen: dict[str, list[int]] = {"handed_over": [], "refused": []}

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    get_many, error = src._channel.get_many, src._error

    async def handed_over(*a, **kw):
        batch = await get_many(*a, **kw)
        seen["handed_over"] += [ticks[0] for e in batch if e[1] in hostile.values()]
        return batch

    def counted(reason: str, detail: str) -> None:
        seen["refused"].append(ticks[0])
        error(reason, detail)

    src._channel.get_many, src._error = handed_over, counted
    pub = raw_client(mosquitto.port)
    tick = asyncio.create_task(ticker())
    try:
        for topic, payload in hostile.items():
            pub.publish(topic, payload, qos=1)
        pub.publish("f/3", b'{"v": 7}', qos=1)
        got = await collect(src, lambda g: g[-1].tag == "f/3/v", 30)
    finally:
        tick.cancel()
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [("f/3/v", 7)]
    assert src.stats.errors_by_reason == {"malformed_json": 2}
    assert len(seen["handed_over"]) == len(seen["refused"]) == 2, seen
    for given, refused in zip(seen["handed_over"], seen["refused"], strict=True):
        assert refused > given, seen


async def test_one_bad_field_skips_that_field_not_the_messages_others_and_text_numbers_are_said(mosquitto):
    """An 8-channel module sends NaN for an open thermocouple, a gateway null for a tag it lost: the whole
    message was refused, so one broken channel silenced every other one for as long as it stayed broken.
    Now the bad field is counted and skipped (a NaN or infinite one is passed on as a BAD reading of its tag,
    non_finite: bad) and the others are read. A device that sends its numbers as
    text ({"temp": "21.5"}) gave nothing and said nothing: it is now the no_numeric_field notice. A
    timestamp of null (a device whose clock is not set) refused the message: it is the receive time; an
    epoch time quoted as text ("1700000000.5") refused it too: it is read as its number."""
    subs = [
        {"topic": "daq/#"},
        {"topic": "gw/#", "json_mapping": {"values": {"a": "a", "b": "b", "w": "w"}}},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("daq/1", b'{"ts": 1700000010, "ch1": 1.5, "ch2": NaN, "ch3": 2.5, "ch4": 1e999}', qos=1)
        pub.publish("gw/1", b'{"ts": 1700000010, "a": 3.5, "b": null, "w": [1, NaN]}', qos=1)
        pub.publish("daq/2", b'{"ts": 1700000010, "temp": "21.5"}', qos=1)
        pub.publish("daq/4", b'{"ts": null, "clockless": 4}', qos=1)  # no synchronised clock: receive time
        pub.publish("daq/5", b'{"ts": "1700000000.5", "quoted": 5}', qos=1)  # a gateway that quotes its times
        pub.publish("daq/3", b'{"ts": 1700000011, "end": 1}', qos=1)
        got = await collect(src, lambda g: any(r.tag == "daq/3/end" for r in g), 5)
    finally:
        closed(pub)
        await src.stop()
    values = {r.tag: r.value for r in got if r.quality is Quality.GOOD}
    assert values == {
        "daq/1/ch1": 1.5,
        "daq/1/ch3": 2.5,
        "gw/1/a": 3.5,
        "daq/4/clockless": 4,
        "daq/5/quoted": 5,
        "daq/3/end": 1,
    }
    # the NaN / Inf channels (and the waveform holding a NaN) are BAD readings of their tags (non_finite: bad)
    assert {r.tag for r in got if r.quality is Quality.BAD} == {"daq/1/ch2", "daq/1/ch4", "gw/1/w"}
    stamps = {r.tag: r.timestamp - r.received_at for r in got}
    assert stamps["daq/4/clockless"] == 0 and [r.timestamp for r in got if r.tag == "daq/5/quoted"] == [
        1700000000.5
    ]
    assert src.stats.errors_by_reason == {"non_finite": 3, "wrong_type": 1}, src.stats.errors_by_reason
    notice = src.notices.status()["no_numeric_field"]
    assert notice["count"] == 1 and "daq/2" in notice["message"]


async def test_topics_of_tens_of_kilobytes_are_bounded_by_their_length_not_only_their_count(
    mosquitto, monkeypatch
):
    """MQTT allows topics of 65,535 bytes, and Mosquitto delivers them. The source's per-topic state (the routes
    cached, the order check's tag times, the first subscription of a topic under MQTT 5) was bounded by a count of
    names (100,000) alone: a client of a shared broker publishing once to each of 100,000 topics of 60 KB made the
    gateway hold about 13 GB (measured: 6,000 such topics, 0.75 GB). A name now counts once more for every 256
    characters it holds, so the state stays within the count's worth of short names; every message is read.
    (A topic over 1,024 characters that names tags is not read at all, ``name_too_long``: these are just under.)"""
    from devices.mqtt import client

    monkeypatch.setattr(client, "MAX_TAGS", 100)  # the bound: 100 names of up to 255 characters
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port,
            protocol="mqtt5",  # two subscriptions: each topic's first subscription is kept (``_first_sub``)
            subscriptions=[{"topic": "long/#"}, {"topic": "other/#"}],
        ),
    )
    await src.start()
    pub = raw_client(mosquitto.port)
    t0 = round(time.time()) - 60
    got: list = []
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        for i in range(100):  # 100 topics of 1,009 characters: 100,900, 4 times the bound
            pub.publish(f"long/{i:03d}/" + "x" * 1000, json.dumps({"ts": t0 + i, "v": i}), qos=1)
        async with asyncio.timeout(10):
            async for r in src.items():
                got.append(r)
                if len(got) == 100:
                    break
    finally:
        closed(pub)
        await src.stop()
    assert sorted((r.value, r.timestamp) for r in got) == [(i, t0 + i) for i in range(100)]
    bound = 100 * 256
    assert sum(map(len, src._route_cache)) <= bound
    assert sum(map(len, src._last_ts)) <= bound
    assert sum(map(len, src._first_sub)) <= bound


async def test_a_topic_of_tens_of_kilobytes_is_quoted_at_most_200_characters_in_errors_and_notices(
    mosquitto, caplog
):
    """MQTT allows topics of 65,535 bytes. An error or notice of a message on such a topic quoted it whole
    (`topic '...': ...`, `tag '...': ...`): 60 KB in each log line, in last_error on /status and in each
    notice's kept message, for every burst, and masked for passwords character by character each time. A topic,
    or a tag named after one, is now quoted by its first 200 characters and its length. (A topic over 1,024
    characters that names tags is not read at all, ``name_too_long``: this one is just under.)"""
    long = "long/" + "x" * 1000  # a tag named after it is just under the 1,024 characters read
    caplog.set_level(logging.INFO)
    pub = raw_client(mosquitto.port)
    pub.publish(
        f"{long}/kept", json.dumps({"ts": time.time() - 3600, "v": 1}), qos=1, retain=True
    ).wait_for_publish(5)
    t0 = round(time.time()) - 60
    try:
        src = await started(
            mosquitto.port,
            [{"topic": "long/#"}, {"topic": "end/#"}, {"topic": "spBv1.0/#", "codec": "sparkplug_b"}],
            max_message_bytes=1024,
        )
        try:
            for payload in (
                b"{oops",  # malformed_json
                json.dumps({"ts": 12, "v": 1}),  # clock_skew: a clock never set
                json.dumps({"ts": t0 + 10, "v": 2}),
                json.dumps({"ts": t0, "v": 3}),  # out_of_order
                json.dumps({"state": "RUN"}),  # no_numeric_field, text_field_unread
                json.dumps({"time": t0 * 1000, "v": 4}),  # time_field_unread
                b"[" + b" " * 2000 + b"]",  # too_large
            ):
                pub.publish(long, payload, qos=1).wait_for_publish(5)
            # bad_topic: 102 levels of 500 characters (Mosquitto takes at most 200 levels)
            pub.publish("spBv1.0/g/" + "/".join(["n" * 500] * 100), b"", qos=1).wait_for_publish(5)
            pub.publish("end/x", json.dumps({"v": 0}), qos=1).wait_for_publish(5)
            await collect(src, lambda g: any(r.tag == "end/x/v" for r in g), 5)
        finally:
            await src.stop()
    finally:
        pub.publish(f"{long}/kept", b"", qos=1, retain=True).wait_for_publish(5)
        closed(pub)
    reasons = src.stats.errors_by_reason
    for key in ("malformed_json", "clock_skew", "out_of_order", "too_large", "bad_topic"):
        assert reasons.get(key) == 1, (key, reasons)
    for key in ("retained", "no_numeric_field", "text_field_unread", "time_field_unread"):
        assert src.notices.counts.get(key) == 1, (key, src.notices.counts)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("devices.mqtt")]
    assert len([m for m in said if "long/xxx" in m]) >= 8, said
    # each under the topic's own 1,005 characters: quoted by its start
    assert max(map(len, said)) < 1000, sorted(map(len, said))[-3:]
    assert " characters)" in (src.stats.last_error or "") and len(src.stats.last_error or "") < 1000
    assert "1005 characters" in " ".join(said) and "50109 characters" in " ".join(said)  # the Sparkplug one
    kept = src.notices.status()
    assert all(len(str(v)) < 1000 for v in kept.values()), {k: len(str(v)) for k, v in kept.items()}


async def test_an_integer_past_pythons_digit_limit_is_its_fields_bad_reading_not_a_malformed_message(
    mosquitto,
):
    """Python converts integers of at most 4,300 digits from text: a JSON integer of more (a device's buffer
    overrun written as digits, a fuzzer) made json refuse the whole message as malformed_json, so the 8-channel
    module's other seven channels gave nothing, where a 400-digit integer is only its own field's BAD reading
    (non_finite: past float64's range). Now any integer past float64's range is that field's BAD reading."""
    huge = "9" * 4301
    subs = [{"topic": "daq/#"}, {"topic": "gw/#", "json_mapping": {"values": {"a": "a", "w": "w"}}}]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish(
            "daq/1", f'{{"ts": 1700000010, "ch1": 1.5, "ch2": {huge}, "ch3": -{huge}, "ch4": 7}}', qos=1
        )
        pub.publish("gw/1", f'{{"ts": 1700000010, "a": 3.5, "w": [1, {huge}]}}', qos=1)
        pub.publish("daq/3", b'{"ts": 1700000011, "end": 1}', qos=1)
        got = await collect(src, lambda g: any(r.tag == "daq/3/end" for r in g), 5)
    finally:
        closed(pub)
        await src.stop()
    assert {r.tag: r.value for r in got if r.quality is Quality.GOOD} == {
        "daq/1/ch1": 1.5,
        "daq/1/ch4": 7,
        "gw/1/a": 3.5,
        "daq/3/end": 1,
    }
    bad = {r.tag: (r.value, r.reason) for r in got if r.quality is Quality.BAD}
    assert bad.keys() == {"daq/1/ch2", "daq/1/ch3", "gw/1/w"}, bad
    assert bad["daq/1/ch2"] == (math.inf, "non_finite") and bad["daq/1/ch3"] == (-math.inf, "non_finite")
    assert bad["gw/1/w"][1] == "non_finite"
    assert src.stats.errors_by_reason == {"non_finite": 3}, src.stats.errors_by_reason


def _alias_broker(
    listener: socket.socket, messages: list[tuple[bytes, int, bytes]], done: threading.Event
) -> None:
    """Accept one MQTT 5 client, acknowledge its CONNECT and SUBSCRIBE, deliver each (topic, topic alias,
    payload) at QoS 0: an empty topic with an alias is a message whose topic name the alias stands for."""
    conn, _ = listener.accept()
    with conn:
        _read_packet(conn)
        conn.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK, accepted, no properties
        mid = _read_packet(conn)[:2]
        conn.sendall(b"\x90\x04" + mid + b"\x00\x00")  # SUBACK, no properties, QoS 0
        for topic, alias, payload in messages:
            props = b"\x23" + struct.pack("!H", alias) if alias else b""
            body = struct.pack("!H", len(topic)) + topic + bytes([len(props)]) + props + payload
            conn.sendall(b"\x30" + _remaining_length(len(body)) + body)
        done.wait(5)


async def test_a_message_named_only_by_a_topic_alias_this_client_never_allowed_is_counted_not_lost():
    """The source allows the broker no topic aliases (its CONNECT states no Topic Alias Maximum: Mosquitto,
    EMQX and HiveMQ then send the names in full). A broker sending one anyway delivers a message with an
    empty topic name, which paho passes on as it is: it matched no subscription and was dropped uncounted.
    It is counted as bad_topic, named, and the source reads on."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    done = threading.Event()
    messages = [(b"x/a", 1, b'{"v": 1}'), (b"", 1, b'{"v": 2}'), (b"x/ok", 0, b'{"v": 3}')]
    t = threading.Thread(target=_alias_broker, args=(listener, messages, done), daemon=True)
    t.start()
    src = MqttSource(
        "mq",
        MqttSettings(port=listener.getsockname()[1], protocol="mqtt5", subscriptions=[{"topic": "x/#"}]),
    )
    try:
        await src.start()
        got = await collect(src, lambda g: len(g) >= 2)
        await asyncio.sleep(0.05)  # the thread-safe error hand-over
    finally:
        done.set()
        await src.stop()
        listener.close()
    assert [(r.tag, r.value) for r in got] == [("x/a/v", 1), ("x/ok/v", 3)]
    assert src.stats.errors_by_reason == {"bad_topic": 1}
    assert "topic alias" in src.stats.last_error


async def test_a_time_text_of_a_megabyte_is_quoted_by_its_start_in_bad_timestamp(mosquitto, caplog):
    """A device's ISO 8601 time field holding a megabyte of text (a JSON object's time, a record's, an OPC UA PubSub
    field's SourceTimestamp): ``bad_timestamp``, its error quoting the text's first 200 characters and its length,
    as every other error quotes a topic, key or value. It quoted the text whole: a 1 MB log line per burst, and 1 MB
    (up to max_message_bytes) in last_error on /status and in a source's down event to the fleet. So is a date
    alone padded with a megabyte of spaces, refused as a date without a time of day (quoted whole after 5a90ca3)."""
    from tests.support.mqtt_read import read_published

    caplog.set_level(logging.WARNING)
    junk = "2026-12-04T10:15:00" + "x" * 1_000_000
    padded_date = "2026-12-04" + " " * 1_000_000
    subs = [
        {"topic": "iso/#", "json_mapping": {"timestamp_format": "iso8601"}},
        {"topic": "rec/#", "json_mapping": {"timestamp_format": "iso8601", "records": {}}},
        {"topic": "ps/#", "json_mapping": {"opcua_pubsub": {}}},
    ]
    dsm = {"DataSetWriterId": 1, "Payload": {"a": {"Value": 1, "SourceTimestamp": junk}, "b": 2}}
    messages = [
        ("iso/a", json.dumps({"ts": junk, "v": 1})),
        ("rec/a", json.dumps({"values": [{"id": "a", "v": 1, "t": junk}, {"id": "b", "v": 2}]})),
        ("ps/a", json.dumps({"MessageType": "ua-data", "Messages": [dsm]})),
        ("iso/b", json.dumps({"ts": padded_date, "v": 1})),  # the last error: last_error holds it
        ("iso/end", json.dumps({"end": 1})),
    ]
    errors: list[str] = []
    got, src = await read_published(mosquitto.port, subs, messages, "iso/end/end", errors=errors)
    # the others around each bad time read
    assert [r.tag for r in got] == ["rec/a/b", "ps/a/b", "iso/end/end"]
    assert src.stats.errors_by_reason == {"bad_timestamp": 4}
    # before: 1,000,243 characters for the date alone
    assert all(len(e) < 1000 for e in errors), sorted(map(len, errors))
    assert sum("(1000019 characters)" in e for e in errors) == 3, [e[:300] for e in errors]
    assert "(1000010 characters) is a date without a time of day" in errors[-1], errors[-1][:300]
    said = [r.getMessage() for r in caplog.records if r.name.startswith("devices.mqtt")]
    assert said and max(map(len, said)) < 1000, sorted(map(len, said))[-3:]  # before: 1,000,093
    assert len(src.stats.last_error or "") < 1000
