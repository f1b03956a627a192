"""Tag names from outside (the keys of a JSON payload, a Sparkplug birth's metric names) that hold what no
log line or rebirth can carry, through a real Mosquitto: a JSON key with an ANSI escape, a line feed and a NUL
is quoted escaped in every notice naming it; a Sparkplug birth declaring a metric without a name is counted and
asks no rebirth, which would bring the same birth. The message's other tags are read."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import shutil
import subprocess
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import sparkplug as sp
from tests.support.peers import Mosquitto
from tests.support.waits import until

D = sp.DataType
HOSTILE = "time\x1b[31m\nFAKE log line\x00"  # an ANSI colour, a line feed that forges a log line, a NUL


def _client(port: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    return c


def _closed(c: paho.Client) -> None:
    c.disconnect()  # first: paho's thread ends once it is written, not at its next 1 s select
    c.loop_stop()


@contextlib.asynccontextmanager
async def _host_and_node(port: int, answer=None):
    """A Sparkplug host (rebirths asked 0.1 s apart at most) and a node's client that records each NCMD sent to
    node n1 (``asked``) and, given ``answer``, publishes ``answer()`` as its NBIRTH each time, as a node answers
    a rebirth; both connected, stopped after."""
    src = MqttSource(
        "mq",
        MqttSettings(
            port=port,
            subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b", "qos": 1}],
            sparkplug={"rebirth_min_interval_s": 0.1},
        ),
    )
    await src.start()
    asked: list[str] = []
    node = paho.Client(CallbackAPIVersion.VERSION2)

    def on_message(client, userdata, msg) -> None:
        asked.append(msg.topic)
        if answer is not None:
            client.publish("spBv1.0/g/NBIRTH/n1", answer(), qos=1)

    node.on_message = on_message
    node.connect("127.0.0.1", port, 30)
    node.subscribe("spBv1.0/g/NCMD/n1", qos=1)
    node.loop_start()
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        yield src, node, asked
    finally:
        await src.stop()
        _closed(node)


async def _read(src: MqttSource, n: int, timeout_s: float = 5.0) -> list:
    got: list = []
    async with asyncio.timeout(timeout_s):
        async for r in src.items():
            got.append(r)
            if len(got) >= n:
                return got
    return got


async def test_json_keys_holding_escapes_line_feeds_and_nul_are_quoted_escaped_in_every_notice(mosquitto):
    """Three notices quoted a key raw in the setting they suggest (``values: {<path>: ...}``,
    ``timestamp_field: <key>``): a key holding an ANSI escape and a line feed coloured the terminal and wrote a
    line of its own into the agent's log, a NUL went into it as it came; a key of 64 KB was quoted whole (a
    65 KB log line). Each is now quoted as Python writes text (``'time\\x1b[31m\\n...'``), cut at 200
    characters with its length; the message's numbers are read."""
    now = time.time()
    bodies = {
        "nested": {HOSTILE: {"in": 1.5}, "v": 1},  # nested_unread: the path that reads the number inside
        "epoch": {HOSTILE: now, "v": 2},  # a field named like a time holding one: timestamp_field
        "iso": {HOSTILE: "2026-01-01T00:00:00Z", "v": 3},  # the same, written as ISO 8601 text
        "long": {"L" * 65536: "text", "M" * 65536: math.nan, "v": 4},  # text_field_unread, non_finite
    }
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logging.getLogger("devices").addHandler(handler)
    pub = _client(mosquitto.port)
    try:
        for kind, body in bodies.items():
            # a source each: a notice is said once per source
            src = MqttSource(
                "mq",
                MqttSettings(
                    port=mosquitto.port,
                    subscriptions=[{"topic": f"{kind}/#", "json_mapping": {"timestamp_field": "ts"}}],
                ),
            )
            await src.start()
            try:
                async with asyncio.timeout(5):
                    await src.connected.wait()
                    await src.subscribed.wait()
                pub.publish(f"{kind}/1", json.dumps(body).encode(), qos=1).wait_for_publish(5)
                # the 64 KB key's NaN: its line said, its reading not passed on (a name over 1,024 characters)
                got = await _read(src, 2 if kind == "epoch" else 1)
                assert f"{kind}/1/v" in {r.tag for r in got}, kind
                await until(lambda k=kind: k in buf.getvalue(), what=f"the {kind} notice logged")
            finally:
                await src.stop()
    finally:
        logging.getLogger("devices").removeHandler(handler)
        _closed(pub)
    out = buf.getvalue()
    lines = [ln for ln in out.splitlines() if "connected" not in ln and "stopped" not in ln]
    assert all(ln.startswith("mqtt source 'mq':") for ln in lines), lines  # no line the key wrote itself
    assert not any(c in out for c in "\x1b\x00"), ascii(out)
    assert len([ln for ln in lines if "'time\\x1b[31m\\nFAKE log line\\x00" in ln]) >= 3, lines
    # a key of 64 KB quoted by its first 200 characters and its length, as a topic is: each line held all of it
    assert max(len(ln) for ln in lines) < 1000, [len(ln) for ln in lines]
    assert "(65536 characters)" in out


async def test_a_birth_declaring_a_metric_without_a_name_asks_no_rebirth_and_its_other_metrics_are_read(
    mosquitto,
):
    """A node whose NBIRTH holds a metric named "" (a node's bug: Sparkplug gives every birth metric a name):
    the host read it as data by alias, found the alias in no birth and asked a rebirth, which brought the same
    birth: the node was reborn whole every ``rebirth_min_interval_s`` for ever (5 rebirths in 9 s at the
    default 2 s). Now the nameless metric is counted (``unnamed_metric``) and skipped, nothing is asked, and
    the birth's other metrics are read."""

    def birth() -> bytes:
        return sp.encode(
            sp.Payload(
                timestamp_ms=int(time.time() * 1000),
                seq=0,
                metrics=[
                    sp.Metric("bdSeq", None, D.INT64, 0),
                    sp.Metric("", 6, D.DOUBLE, 4.0),
                    sp.Metric(None, None, D.DOUBLE, 4.5),
                    sp.Metric("ok", 7, D.DOUBLE, 5.0),
                ],
            )
        )

    async with _host_and_node(mosquitto.port, answer=birth) as (src, node, asked):  # each rebirth answered
        node.publish("spBv1.0/g/NBIRTH/n1", birth(), qos=1).wait_for_publish(5)
        got = await _read(src, 1)
        assert [(r.tag, r.value) for r in got] == [("n1/ok", 5.0)]
        # ten rebirth intervals: the former code asked (and was answered) again and again
        await asyncio.sleep(1.0)
        assert asked == []
        assert src.stats.errors_by_reason.get("unnamed_metric") == 2
        assert "unknown_alias" not in src.stats.errors_by_reason
        assert "unnamed_metric" in (src.stats.last_error or "")


async def test_a_birth_declaring_one_metric_name_twice_keeps_the_first_declaration(mosquitto):
    """Sparkplug 3.0 names a metric once in a birth. An NBIRTH declaring ``Temp`` as a Double (alias 1) and
    again as a String (alias 2) made the tag take both declarations' values in turn, 20.0 then "hot" in the birth
    and 21.0 then "warm" in each NDATA, typed by the last declaration, unsaid. Now the first declaration is kept:
    the second is counted (``duplicate_metric``) and its value unread, data by its alias is skipped as a clash's,
    no rebirth is asked (it would bring the same birth), and the birth's other metrics are read."""
    now_ms = int(time.time() * 1000)
    birth = [
        sp.Metric("bdSeq", None, D.INT64, 0),
        sp.Metric("Temp", 1, D.DOUBLE, 20.0),
        sp.Metric("Temp", 2, D.STRING, "hot"),
        sp.Metric("ok", 3, D.DOUBLE, 5.0),
    ]
    data = [
        sp.Metric(None, 1, D.DOUBLE, 21.0),
        sp.Metric(None, 2, D.STRING, "warm"),
        sp.Metric(None, 3, D.DOUBLE, 6.0),
    ]
    async with _host_and_node(mosquitto.port) as (src, node, asked):
        for kind, seq, metrics in (("NBIRTH", 0, birth), ("NDATA", 1, data)):
            payload = sp.encode(sp.Payload(timestamp_ms=now_ms + seq, seq=seq, metrics=metrics))
            node.publish(f"spBv1.0/g/{kind}/n1", payload, qos=1).wait_for_publish(5)
        got = await _read(src, 4)
        assert [(r.tag, r.value) for r in got] == [
            ("n1/Temp", 20.0),
            ("n1/ok", 5.0),
            ("n1/Temp", 21.0),
            ("n1/ok", 6.0),
        ]
        await asyncio.sleep(0.5)  # five rebirth intervals
        assert asked == []
        assert src.stats.errors_by_reason.get("duplicate_metric") == 1
        assert src.stats.errors_by_reason.get("alias_collision") == 1  # the NDATA's value by alias 2
        assert "unknown_alias" not in src.stats.errors_by_reason


@pytest.mark.parametrize("other_first", [False, True])
async def test_an_alias_given_to_a_refused_second_declaration_and_another_metric_is_kept_by_neither(
    mosquitto, other_first
):
    """An NBIRTH declaring ``Temp`` twice (alias 1, then alias 2: refused, ``duplicate_metric``) and giving alias 2
    to ``other`` as well: which metric its data by alias 2 means is unknown (Sparkplug: an alias is given once in a
    birth), yet ``other`` kept it, and took the refused declaration's values. Neither keeps it now, as for two
    metrics of one birth: data by alias 2 is skipped (``alias_collision``), whichever came first in the birth."""
    now_ms = int(time.time() * 1000)
    twice = [sp.Metric("Temp", 1, D.DOUBLE, 20.0), sp.Metric("Temp", 2, D.INT32, 7)]
    other = [sp.Metric("other", 2, D.INT32, 3)]
    birth = [sp.Metric("bdSeq", None, D.INT64, 0), *(other + twice if other_first else twice + other)]
    birth.append(sp.Metric("ok", 3, D.DOUBLE, 5.0))
    data = [sp.Metric(None, 2, D.INT32, 8), sp.Metric(None, 3, D.DOUBLE, 6.0)]
    async with _host_and_node(mosquitto.port) as (src, node, asked):
        for kind, seq, metrics in (("NBIRTH", 0, birth), ("NDATA", 1, data)):
            payload = sp.encode(sp.Payload(timestamp_ms=now_ms + seq, seq=seq, metrics=metrics))
            node.publish(f"spBv1.0/g/{kind}/n1", payload, qos=1).wait_for_publish(5)
        got = await _read(src, 4)
        await asyncio.sleep(0.2)
        assert ("n1/other", 8) not in [(r.tag, r.value) for r in got]  # before: read, GOOD
        assert ("n1/ok", 6.0) in [(r.tag, r.value) for r in got]
        assert src.stats.errors_by_reason.get("duplicate_metric") == 1
        assert src.stats.errors_by_reason.get("alias_collision", 0) >= 1, src.stats.errors_by_reason


async def test_sparkplug_metric_names_holding_escapes_are_quoted_escaped_in_an_alias_clash(mosquitto):
    """An NBIRTH giving one alias to a metric whose name holds an ANSI escape, a line feed and a NUL and to
    another metric: the ``alias_collision`` line wrote both names raw (the terminal coloured, a line of the log
    forged by the node). They are now quoted escaped; the birth's other metrics are read."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logging.getLogger("devices").addHandler(handler)
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port, subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b", "qos": 1}]
        ),
    )
    await src.start()
    pub = _client(mosquitto.port)
    birth = [
        sp.Metric("bdSeq", None, D.INT64, 0),
        sp.Metric(HOSTILE, 8, D.DOUBLE, 1.0),
        sp.Metric("Y", 8, D.DOUBLE, 2.0),
        sp.Metric("ok", 9, D.DOUBLE, 5.0),
    ]
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        payload = sp.encode(sp.Payload(timestamp_ms=int(time.time() * 1000), seq=0, metrics=birth))
        pub.publish("spBv1.0/g/NBIRTH/n1", payload, qos=1).wait_for_publish(5)
        got = await _read(src, 3)
        assert {r.tag for r in got} == {f"n1/{HOSTILE}", "n1/Y", "n1/ok"}  # read by name in the birth
        await until(lambda: "alias_collision" in buf.getvalue(), what="the clash logged")
    finally:
        await src.stop()
        logging.getLogger("devices").removeHandler(handler)
        _closed(pub)
    out = buf.getvalue()
    assert not any(c in out for c in "\x1b\x00"), ascii(out)
    assert all(ln.startswith("mqtt source 'mq':") for ln in out.splitlines()), out.splitlines()
    assert "'time\\x1b[31m\\nFAKE log line\\x00' and 'Y'" in out


async def test_a_json_tag_name_over_1024_characters_is_counted_and_skipped_the_others_read(mosquitto):
    """A plain JSON key had no length bound (Sparkplug refuses metric names over 1,024 characters): a key of
    3 MB became a tag, and a 3 MB record of it per reading went to the outbox and the fleet. A key path, a
    record's name or a topic naming the tags over that bound is now counted (``name_too_long``), quoted cut in
    its line, and skipped; the message's other values are read. A record's error line (no value, a quality
    not understood) quoted its name whole: it is cut too."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logging.getLogger("devices").addHandler(handler)
    records = {"array": "values", "name": "id", "value": "v", "quality": "q", "timestamp": None}
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port,
            subscriptions=[
                {"topic": "j/#", "json_mapping": {"timestamp_field": None}},
                {"topic": "r/#", "json_mapping": {"records": records}},
            ],
        ),
    )
    await src.start()
    pub = _client(mosquitto.port)
    long_topic = "j/" + "t" * 2000
    sent = [
        ("j/1", {"K" * 5000: 1.0, "ok": 2.0}),
        ("r/1", {"values": [{"id": "R" * 5000, "v": 3.0}, {"id": "ok", "v": 4.0}]}),
        (
            "r/2",
            {"values": [{"id": "S" * 5000}, {"id": "Q" * 5000, "v": 1.0, "q": [1]}, {"id": "ok", "v": 5.0}]},
        ),
        (long_topic, {"x": 6.0}),
        ("j/2", {"ok": 7.0}),
    ]
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        for topic, body in sent:
            pub.publish(topic, json.dumps(body).encode(), qos=1).wait_for_publish(5)
        got = await _read(src, 4)
    finally:
        await src.stop()
        logging.getLogger("devices").removeHandler(handler)
        _closed(pub)
    assert [(r.tag, r.value) for r in got] == [
        ("j/1/ok", 2.0),
        ("r/1/ok", 4.0),
        ("r/2/ok", 5.0),
        ("j/2/ok", 7.0),
    ]
    errors = src.stats.errors_by_reason
    assert errors.get("name_too_long") == 3, errors  # the key, the record's name, the topic's one value
    assert errors.get("missing_field") == 1 and errors.get("wrong_type") == 1, errors
    lines = buf.getvalue().splitlines()
    assert max(len(ln) for ln in lines) < 1000, [len(ln) for ln in lines]
    assert "(5000 characters)" in buf.getvalue()  # said once: later ones counted
    last = src.stats.last_error or ""  # the topic's: its tags' names would be over the bound
    assert "topic 'j/ttt" in last and "(2002 characters)" in last, last[:300]
    # none of that message's values is read (each tag is named after the topic): its line said the others were
    assert "none of its message's 1 value(s) is read" in last and "other values are" not in last, last[-300:]


async def test_a_sparkplug_metric_whose_name_is_too_long_or_not_utf8_is_skipped_alone(mosquitto):
    """A metric named by over 1,024 characters, or by bytes that are not UTF-8, made its whole payload refused
    (``too_large``, ``garbage_protobuf``): a birth's other metrics were lost with it, the node unborn, its data
    unread and a rebirth asked that brought the same birth. Now that metric alone is counted
    (``name_too_long``, ``garbage_protobuf``) and skipped; the birth's other metrics, and their data, are read,
    data by the skipped metric's alias is skipped as a clash's, and no rebirth is asked."""
    now_ms = int(time.time() * 1000)

    def payload(seq: int, *metrics: sp.Metric) -> bytes:
        # "bad_1" written as bytes that are not UTF-8, as a node's bug would
        data = sp.encode(sp.Payload(timestamp_ms=now_ms + seq, seq=seq, metrics=list(metrics)))
        return data.replace(b"bad_1", b"bad\xff1")

    sent = [
        (
            "NBIRTH/n1",
            payload(
                0,
                sp.Metric("bdSeq", None, D.INT64, 0),
                sp.Metric("N" * 2000, 2, D.DOUBLE, 1.0),
                sp.Metric("bad_1", 3, D.DOUBLE, 2.0),
                sp.Metric("ok", 4, D.DOUBLE, 3.0),
            ),
        ),
        (
            "DBIRTH/n1/d1",
            payload(1, sp.Metric("D" * 2000, 10, D.DOUBLE, 1.0), sp.Metric("flow", 11, D.DOUBLE, 8.0)),
        ),
        (
            "NDATA/n1",
            payload(
                2,
                sp.Metric(None, 2, D.DOUBLE, 4.0),
                sp.Metric(None, 3, D.DOUBLE, 5.0),
                sp.Metric(None, 4, D.DOUBLE, 6.0),
                sp.Metric("N" * 2000, None, D.DOUBLE, 7.0),
            ),
        ),
        ("DDATA/n1/d1", payload(3, sp.Metric(None, 10, D.DOUBLE, 2.0), sp.Metric(None, 11, D.DOUBLE, 9.0))),
    ]
    async with _host_and_node(mosquitto.port) as (src, node, asked):
        for topic, data in sent:
            node.publish(f"spBv1.0/g/{topic}", data, qos=1).wait_for_publish(5)
        got = await _read(src, 4)
        assert [(r.tag, r.value) for r in got] == [
            ("n1/ok", 3.0),
            ("n1/d1/flow", 8.0),
            ("n1/ok", 6.0),
            ("n1/d1/flow", 9.0),
        ]
        await asyncio.sleep(0.5)  # five rebirth intervals
        assert asked == []
        errors = src.stats.errors_by_reason
        assert errors.get("name_too_long") == 3 and errors.get("garbage_protobuf") == 1, errors
        assert errors.get("alias_collision") == 3, errors  # aliases 2, 3 and the device's 10
        assert "unknown_alias" not in errors and "too_large" not in errors, errors
        assert len(src.stats.last_error or "") < 1000


async def test_a_bad_name_inside_a_sparkplug_template_or_dataset_skips_only_its_metric(mosquitto):
    """A Template member's name (an instance's or a definition's), a Template's reference or a DataSet column's
    name of over 1,024 characters or not UTF-8 made its whole payload refused (``too_large``,
    ``garbage_protobuf``): a birth's other metrics were lost with it, the node unborn, its data unread and a
    rebirth asked that brought the same birth. Now the metric holding it is counted (``name_too_long``,
    ``garbage_protobuf``) and skipped alone: the birth's other metrics, and their data, are read, data by the
    skipped metric's alias is skipped as a clash's, and no rebirth is asked."""
    from protocols.gen import sparkplug_b_pb2 as pb2
    from tests.support.sparkplug_pb import pb_metric

    now_ms = int(time.time() * 1000)
    long = "L" * 2000

    def instance(p, name, alias, ref, member, value=1.0):
        t = pb_metric(p, name, alias, D.TEMPLATE).template_value
        t.template_ref = ref
        pb_metric(t, member, None, D.DOUBLE, double_value=value)

    def table(p, name, alias, column):
        ds = pb_metric(p, name, alias, D.DATASET).dataset_value
        ds.num_of_columns = 2
        ds.columns.extend(["a", column])
        ds.types.extend([D.DOUBLE, D.DOUBLE])
        ds.rows.add().elements.add(double_value=1.0)
        ds.rows[0].elements.add(double_value=2.0)

    birth = pb2.Payload(timestamp=now_ms, seq=0)
    pb_metric(birth, "bdSeq", None, D.INT64, long_value=0)
    definition = pb_metric(birth, "_types_/Motor", None, D.TEMPLATE).template_value
    definition.is_definition = True
    pb_metric(definition, "bad_1", None, D.DOUBLE, double_value=0.0)  # "bad_1": bytes that are not UTF-8
    instance(birth, "M1", 2, "Motor", long)
    instance(birth, "M2", 3, "bad_1", "Speed")
    instance(birth, "M3", 4, long, "Speed")
    table(birth, "T1", 5, long)
    table(birth, "T2", 6, "bad_1")
    instance(birth, "M4", 7, "Motor", "Speed")
    pb_metric(birth, "ok", 1, D.DOUBLE, double_value=3.0)
    data = pb2.Payload(timestamp=now_ms + 1, seq=1)
    for alias in (2, 3, 4, 5, 6):
        pb_metric(data, None, alias, double_value=5.0)
    instance(data, "M1", None, "Motor", long)
    pb_metric(data, None, 1, double_value=6.0)
    instance(data, "M4", None, "Motor", "Speed", 7.0)
    async with _host_and_node(mosquitto.port) as (src, node, asked):
        for topic, payload in (("NBIRTH/n1", birth), ("NDATA/n1", data)):
            raw = payload.SerializeToString().replace(b"bad_1", b"bad\xff1")
            node.publish(f"spBv1.0/g/{topic}", raw, qos=1).wait_for_publish(5)
        got = await _read(src, 4)
        assert [(r.tag, r.value) for r in got] == [
            ("n1/M4/Speed", 1.0),
            ("n1/ok", 3.0),
            ("n1/ok", 6.0),
            ("n1/M4/Speed", 7.0),
        ]
        await asyncio.sleep(0.5)  # five rebirth intervals
        assert asked == []
        errors = src.stats.errors_by_reason
        # the definition's member, M2's reference, T2's column; M1's member (twice), M3's reference, T1's column
        assert errors == {"garbage_protobuf": 3, "name_too_long": 4, "alias_collision": 5}, errors
        last = src.stats.last_error or ""
        assert len(last) < 1000 and "'M1'" in last and "(2000 characters)" in last, last


async def test_a_json_name_holding_a_slash_cannot_name_the_tag_of_a_device_on_a_deeper_topic(tmp_path):
    """A reading named after its topic (``tag_prefix_topic``) took a name from the payload whole: the key
    ``a/b`` of a message on ``f/x`` was the tag ``f/x/a/b``, the key ``b``'s on ``f/x/a``. A device the
    broker's ACL lets publish on ``f/x`` alone (here a real Mosquitto's: its publish on ``f/x/a`` is dropped)
    so wrote the other device's tag, and the rules and PLC writes on it acted on its value; so did a record's
    name, an OPC UA PubSub field's, and an object of an array. Such a name is now one level of its tag,
    '/' and '%' percent-encoded (``f/x/a%2Fb``); a name without them is as before."""
    tool = shutil.which("mosquitto_passwd")
    assert tool is not None, "mosquitto_passwd is installed with mosquitto"
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    pw.write_text("")
    for user in ("agent", "x", "xa"):
        subprocess.run([tool, "-b", str(pw), user, user], check=True)
    acl.write_text(
        "user agent\ntopic read #\n"
        "user x\ntopic write f/x\ntopic write r/x\ntopic write p/x\n"
        "user xa\ntopic write f/x/a\ntopic write r/x/a\n"
    )
    broker = Mosquitto(
        tmp_path / "mosq",
        extra_conf=f"allow_anonymous false\npassword_file {pw}\nacl_file {acl}\nuser root\n",
    ).start()
    src = MqttSource(
        "mq",
        MqttSettings(
            port=broker.port,
            username="agent",
            password="agent",
            subscriptions=[
                {"topic": "f/#", "qos": 1, "json_mapping": {"timestamp_field": None}},
                {
                    "topic": "r/#",
                    "qos": 1,
                    "json_mapping": {
                        "timestamp_field": None,
                        "records": {"array": "values", "name": "id", "value": "v"},
                    },
                },
                {"topic": "p/#", "qos": 1, "json_mapping": {"opcua_pubsub": {"tag": "{writer}.{field}"}}},
            ],
        ),
    )
    devices: list[paho.Client] = []
    try:
        await src.start()
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        for user in ("x", "xa"):
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{user}")
            c.username_pw_set(user, user)
            c.connect("127.0.0.1", broker.port, 30)
            c.loop_start()
            devices.append(c)
        x, xa = devices
        network = {
            "MessageId": "1",
            "MessageType": "ua-data",
            "Messages": [{"DataSetWriterId": "w/1", "Payload": {"a/b": {"Value": 503.0}}}],
        }
        for dev, topic, body in [
            (xa, "f/x/a", {"b": 20.0}),
            (xa, "r/x/a", {"values": [{"id": "b", "v": 21.0}]}),
            (x, "f/x/a", {"b": 999.0}),  # the broker's ACL drops it: x may not publish there
            (x, "f/x", {"a/b": 500.0, "a%2Fb": 1.0, "RH%": 45.0, "c": 2.0}),
            (x, "f/x", [{"a/b": 501.0}]),  # an array of objects: each a message
            (x, "r/x", {"values": [{"id": "a/b", "v": 502.0}]}),
            (x, "p/x", network),
        ]:
            dev.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)
        # x's messages come in the order it sent them: its dropped one, had the broker passed it, came first
        got = await _read(src, 9, timeout_s=10)
    finally:
        await src.stop()
        for c in devices:
            _closed(c)
        broker.stop()
    assert sorted((r.tag, r.value) for r in got) == sorted(
        [
            ("f/x/a/b", 20.0),  # xa's own tags, named as before
            ("r/x/a/b", 21.0),
            ("f/x/a%2Fb", 500.0),  # x's, each a tag of its own topic
            ("f/x/a%252Fb", 1.0),  # a name holding the text %2F: encoded too, so no two names give one tag
            ("f/x/RH%", 45.0),  # a name without '/' (nor %2F, %25): as it came
            ("f/x/c", 2.0),
            ("f/x/a%2Fb", 501.0),
            ("r/x/a%2Fb", 502.0),
            ("p/x/w%2F1.a%2Fb", 503.0),  # the template's writer and field, each a name from the payload
        ]
    ), [(r.tag, r.value) for r in got]


async def test_a_bare_value_on_a_topic_never_stops_a_key_of_its_parent_naming_its_tag(mosquitto):
    """A bare value (a number or a state alone) is named by its topic, so the payload on ``h/x/temp`` and the key
    ``temp`` of a message on ``h/x`` are one tag, by design (Zigbee2MQTT's attribute_and_json: one tag per
    attribute). A rule that made a topic with one bare value own that tag for good (219a43cb) dropped live data:
    a technician's one retained '0' on h/x/temp, deleted since, dropped the device's {"temp": 95}, and a device
    switched to JSON output beside its old retained attribute topics lost its brightness. Every value is read;
    devices that must not write each other's tags are kept apart by the broker's ACL (docs/mqtt.md)."""
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port,
            subscriptions=[{"topic": "h/#", "qos": 1, "json_mapping": {"timestamp_field": None}}],
        ),
    )
    pub = _client(mosquitto.port)
    # retained before the subscription: the source reads them at subscribing, as a restart would
    pub.publish("h/x/temp", b"0", qos=1, retain=True).wait_for_publish(5)
    pub.publish("h/lamp/brightness", b"100", qos=1, retain=True).wait_for_publish(5)
    await src.start()
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        got = []
        async with asyncio.timeout(10):
            async for r in src.items():
                got.append((r.tag, r.value))
                if len(got) == 2:
                    break
        pub.publish("h/x/temp", b"", qos=1, retain=True).wait_for_publish(5)  # the retained message deleted
        for topic, body in [
            ("h/x", {"temp": 95.0}),
            ("h/lamp", {"brightness": 120, "linkquality": 80}),  # its output now json alone
            ("h/end", 0.0),
        ]:
            pub.publish(topic, json.dumps(body).encode(), qos=1).wait_for_publish(5)
        async with asyncio.timeout(10):  # one client's messages come in order: h/end is the last
            async for r in src.items():
                got.append((r.tag, r.value))
                if r.tag == "h/end":
                    break
    finally:
        await src.stop()
        pub.publish("h/lamp/brightness", b"", qos=1, retain=True).wait_for_publish(5)
        _closed(pub)
    assert sorted(got[:2]) == [("h/lamp/brightness", 100), ("h/x/temp", 0)], got
    assert got[2:] == [
        ("h/x/temp", 95.0),
        ("h/lamp/brightness", 120),
        ("h/lamp/linkquality", 80),
        ("h/end", 0.0),
    ], got
    assert "owned_by_topic" not in src.notices.status()


async def test_a_name_over_the_bound_through_its_encoding_says_how_long_it_was(mosquitto):
    """The 1,024-character bound holds for a name as it is encoded into one level of its tag (ca41f9ef): a
    key of 500 characters, 400 of them '/', is 1,300 once each '/' is %2F. Its line said only "(1300
    characters) is over 1024": the device's name was not; it now says the key was 500 and grew to 1,300."""
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port, subscriptions=[{"topic": "j/#", "json_mapping": {"timestamp_field": None}}]
        ),
    )
    await src.start()
    pub = _client(mosquitto.port)
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        pub.publish("j/1", json.dumps({"/" * 400 + "b" * 100: 1.0, "ok": 2.0}), qos=1).wait_for_publish(5)
        got = await _read(src, 1)
    finally:
        await src.stop()
        _closed(pub)
    assert [(r.tag, r.value) for r in got] == [("j/1/ok", 2.0)]
    assert src.stats.errors_by_reason.get("name_too_long") == 1, src.stats.errors_by_reason
    last = src.stats.last_error or ""
    assert "(1300 characters) is over 1024" in last, last[-400:]
    assert "was 500 characters and grew to 1300 through the encoding" in last, last[-400:]


async def test_an_edge_node_id_holding_a_bidirectional_override_is_quoted_escaped_in_errors_and_the_log(
    mosquitto, caplog
):
    """Mosquitto passes a topic holding U+202E (right-to-left override; it refuses controls). The Sparkplug host's
    errors and notices name a node by its group and id as they came: the log line, last_error and /status showed
    the rest of the line reversed (a line feed, through a broker that checks less, forged a log line). Escaped."""
    src = MqttSource(
        "mq",
        MqttSettings(port=mosquitto.port, subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}]),
    )
    await src.start()
    node = _client(mosquitto.port)
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        now = int(time.time() * 1000)
        birth = [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("m", 1, D.INT32, 1)]
        node.publish("spBv1.0/g/NBIRTH/r\u202eev", sp.encode(sp.Payload(now, 0, birth)), qos=1)
        data = sp.encode(
            sp.Payload(now + 1, 1, [sp.Metric(None, 9, D.INT32, 2)])
        )  # an alias its birth never gave
        node.publish("spBv1.0/g/NDATA/r\u202eev", data, qos=1)
        node.publish("spBv1.0/g/NBIRTH/ok", sp.encode(sp.Payload(now, 0, birth)), qos=1)
        got = await _read(src, 2)
    finally:
        await src.stop()
        _closed(node)
    assert [r.tag for r in got] == ["r\u202eev/m", "ok/m"]  # the tag keeps its name as it came
    assert "g/r\\u202eev: alias 9 not in its birth" in (src.stats.last_error or "")
    assert "\u202e" not in caplog.text and "g/r\\u202eev: alias 9" in caplog.text
