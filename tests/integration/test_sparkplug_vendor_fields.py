"""Sparkplug B metric fields other vendors' edge nodes send and this project's simulators do not, through a real
Mosquitto: datatypes Sparkplug B does not define (0, Unknown; 99), metrics flagged ``is_transient``. Payloads are
built on the protobuf schema field by field (``tests.support.sparkplug_pb``), as Eclipse Tahu's nodes write them,
not with this project's encoder."""

from __future__ import annotations

import json

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from protocols import sparkplug as sp
from tests.support.mqtt_read import read_published
from tests.support.sparkplug_pb import pb_metric
from tests.support.waits import until

D = sp.DataType
T0_MS = 1_700_000_000_000  # a node whose clock is set


def _payload(seq: int, *metrics: dict) -> bytes:
    p = sp._pb().Payload()
    p.timestamp, p.seq = T0_MS + seq, seq
    for m in metrics:
        pb_metric(p, **m)
    return p.SerializeToString()


async def test_a_metric_of_a_datatype_sparkplug_does_not_define_is_skipped_counted_and_said_once(
    mosquitto, caplog
):
    """A metric whose datatype is none Sparkplug B defines (99; 0, Unknown, stated) cannot be interpreted: it was
    read by its value's field and passed on GOOD, unsaid, in births and data, and so was data by the alias of such
    a birth metric. Each such value is now skipped and counted (notice ``undefined_datatype``), said once per node
    and metric, and the message's other metrics are read: NBIRTH, NDATA, DBIRTH and DDATA alike."""
    nbirth = _payload(
        0,
        {"name": "bdSeq", "datatype": D.INT64, "long_value": 0},
        {"name": "odd", "alias": 1, "datatype": 99, "double_value": 1.5},
        {"name": "unknown", "alias": 2, "datatype": 0, "int_value": 7},
        {"name": "temp", "alias": 3, "datatype": D.DOUBLE, "double_value": 20.0},
    )
    ndata = _payload(
        1,
        {"alias": 1, "double_value": 1.6},  # by the alias of a birth metric of datatype 99
        {"alias": 2, "int_value": 8},
        {"alias": 3, "double_value": 21.0},
        {"name": "temp", "datatype": 99, "double_value": 22.0},  # a declared metric, stated 99 in the data
    )
    dbirth = _payload(
        2,
        {"name": "mode", "alias": 11, "datatype": 77, "string_value": "auto"},
        {"name": "speed", "alias": 12, "datatype": D.FLOAT, "float_value": 1.5},
    )
    ddata = _payload(
        3,
        {"alias": 11, "string_value": "manual"},
        {"alias": 12, "float_value": 2.5},
        # a datatype of 0 in data: read by the birth's type, as Eclipse Tahu's host does (a nanopb or proto3-optional
        # encoder writes 0 for "not set"); the first form of this check skipped it, the birth's type known
        {"name": "speed", "datatype": 0, "float_value": 3.5},
    )
    ndata2 = _payload(4, {"alias": 1, "double_value": 1.7}, {"alias": 3, "double_value": 23.0})
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}, {"topic": "end"}],
        [
            ("spBv1.0/G/NBIRTH/E", nbirth),
            ("spBv1.0/G/NDATA/E", ndata),
            ("spBv1.0/G/DBIRTH/E/D", dbirth),
            ("spBv1.0/G/DDATA/E/D", ddata),
            ("spBv1.0/G/NDATA/E", ndata2),
            ("end", b'{"v": 1}'),
        ],
        "end/v",
    )
    assert [(r.tag, r.value, r.quality.name) for r in got[:-1]] == [
        ("E/temp", 20.0, "GOOD"),
        ("E/temp", 21.0, "GOOD"),
        ("E/D/speed", 1.5, "GOOD"),
        ("E/D/speed", 2.5, "GOOD"),
        ("E/D/speed", 3.5, "GOOD"),
        ("E/temp", 23.0, "GOOD"),
    ]
    notice = src.notices.status()["undefined_datatype"]
    # odd, unknown (NBIRTH); odd, unknown, temp (NDATA); mode (DBIRTH); mode (DDATA); odd (NDATA)
    assert notice["count"] == 8, notice
    said = [notice["message"], *notice.get("more", [])]
    assert len(said) == 4, said  # once per node and metric: odd, unknown, temp, D/mode
    assert "metric 'odd' is of datatype 99 (stated in its NBIRTH)" in said[0], said
    assert "metric 'unknown' is of datatype 0 (Unknown)" in said[1], said
    logged = [
        r.getMessage()
        for r in caplog.records
        if "undefined_datatype" in r.getMessage() or "does not define" in r.getMessage()
    ]
    assert len(logged) == 4, logged
    assert not src.stats.errors_by_reason, src.stats.errors_by_reason
    # commands are typed as before: an Unknown declared is 0, which no command writes
    assert src.sparkplug.datatype("G", "E", None, "unknown") == 0


async def test_a_transient_metric_is_read_live_and_by_rules_but_never_stored_for_the_cloud(
    tmp_path, mosquitto
):
    """Sparkplug 3.0: a metric flagged ``is_transient`` should not be historized (a motor's setpoint being jogged,
    a live position). The flag was not read: a forward with ``outbox: true`` stored each of its values as a
    telemetry record for the cloud. It is now the tag's value, a rule's input and published live by the forward
    (marked ``"transient": true`` for a historian downstream to leave out), and never queued in the outbox, in
    its birth and in data by its alias that leave the flag out; the node's other metrics are stored as before."""
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "outbox": {},
        "sources": {
            "plant": {
                "type": "mqtt",
                "port": mosquitto.port,
                "subscriptions": [{"topic": "spBv1.0/G/#", "codec": "sparkplug_b"}],
            }
        },
        "forward": [{"name": "all", "source": "plant", "to": "plant", "outbox": True, "topic": "fwd"}],
        "rules": [{"name": "fast", "source": "plant", "tag": "E/jog", "above": 50.0, "actions": []}],
    }
    birth = sp._pb().Payload()
    birth.timestamp, birth.seq = T0_MS, 0
    pb_metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
    pb_metric(birth, "temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
    pb_metric(birth, "jog", alias=2, datatype=D.DOUBLE, double_value=10.0).is_transient = True
    data = sp._pb().Payload()
    data.timestamp, data.seq = T0_MS + 1, 1
    pb_metric(data, alias=1, double_value=21.0)
    pb_metric(data, alias=2, double_value=60.0)  # data by its alias leave the flag out: the birth's holds
    death = sp._pb().Payload()  # the node's death: each tag BAD, a transient one still kept out of the outbox
    pb_metric(death, "bdSeq", datatype=D.INT64, long_value=0)
    agent = Agent(parse_config(cfg))
    src = agent.sources["plant"]
    got: list[dict] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("fwd", qos=1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        await agent.start()
        await until(lambda: src.subscribed.is_set(), what="the SUBACK")
        pub.publish("spBv1.0/G/NBIRTH/E", birth.SerializeToString(), qos=1)
        pub.publish("spBv1.0/G/NDATA/E", data.SerializeToString(), qos=1)
        pub.publish("spBv1.0/G/NDEATH/E", death.SerializeToString(), qos=1)
        await until(lambda: len(got) >= 6, timeout_s=30, what="the forwarded readings")
        rule = agent.status()["rules"][0]
        shown = agent.tags["plant"]["E/jog"]
        agent.outbox.flush()
        stored = [json.loads(r.payload) for r in agent.outbox.pending(100, 10**7) if r.kind == "telemetry"]
        forward = agent.status()["forward"][0]
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.disconnect()
        sub.loop_stop()
        await agent.stop()
    assert [(m["tag"], m["value"], m.get("transient", False)) for m in got[:4]] == [
        ("E/temp", 20.0, False),
        ("E/jog", 10.0, True),
        ("E/temp", 21.0, False),
        ("E/jog", 60.0, True),
    ]
    dead = sorted((m["tag"], m.get("transient", False)) for m in got[4:])
    assert dead == [("E/jog", True), ("E/temp", False)], got[
        4:
    ]  # the death's BAD readings (was: jog unmarked)
    assert (rule["active"], rule["value"]) == (True, 60.0)  # live: the rule takes it
    assert shown.value == 60.0  # and it is the tag's value
    assert [(m["tag"], m["value"]) for m in stored] == [("E/temp", 20.0), ("E/temp", 21.0), ("E/temp", 21.0)]
    assert forward["transient_not_stored"] == 3, forward
