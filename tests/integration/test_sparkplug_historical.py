"""A Sparkplug edge node's buffered history, through the real agent: an edge node with store-and-forward
(Ignition Edge, Cirrus Link's MQTT Transmission, Opto 22 groov) sends the values it kept while the broker or
host was away as metrics flagged ``is_historical``, with their own times, after it reconnects. They are not
current: no rule, action or the tag's value takes them; forwards store and send them, marked historical, so
the cloud holds the hours of the outage. A value flagged ``is_transient`` is current but not to be kept: it
drives rules and the tag's value and goes out live, never to the cloud's store. Against a real Mosquitto (a
paho client sending the protobuf) and a real fleet service (gRPC, mTLS, SQLite)."""

from __future__ import annotations

import json
import sqlite3
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_trainer.fleet.service import FleetServer
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from protocols import sparkplug as sp
from tests.integration.test_tags_without_model import Subscriber
from tests.support.fleet import make_pki
from tests.support.peers import free_port
from tests.support.sparkplug_pb import pb_metric
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _cloud_telemetry(db) -> list[dict]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT payload FROM records WHERE kind = 'telemetry' ORDER BY seq").fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


async def test_a_nodes_buffered_history_is_stored_and_forwarded_marked_and_drives_nothing(
    tmp_path, mosquitto, pki
):
    """Before, the 100 values the node kept through an hour's outage were counted and dropped: the broker, the
    outbox and the cloud never saw the hour. Now each is forwarded and stored with its own time, marked
    historical, past the forward's deadband (it is not news about the current value); the rule, its alarm and
    the tag's value still see only the current readings (20.0 at birth, 21.0 now), though every historical
    value is above the rule's threshold. The transient Flow reading is the tag's value and goes out live,
    marked, but is not queued for the cloud's store."""
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "sp": {
                "type": "mqtt",
                "port": mosquitto.port,
                "subscriptions": [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}],
            }
        },
        "cloud": {
            "endpoint": f"127.0.0.1:{port}",
            "ca_file": str(pki / "ca.pem"),
            "cert_file": str(pki / "agents" / "gw1.pem"),
            "key_file": str(pki / "agents" / "gw1.key"),
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.5,
            "heartbeat_s": 0.5,
            "max_delay_ms": 20,
        },
        "forward": [{"name": "line", "source": "sp", "to": "sp", "outbox": True, "qos": 1, "deadband": 0.5}],
        "actions": {
            "alarm": {"type": "alarm", "raise_after": 1, "clear_after": 1, "when": {"verdict": "NG"}}
        },
        "rules": [{"name": "hot", "source": "sp", "tag": "edge/Temp", "above": 80, "actions": ["alarm"]}],
    }
    sub = Subscriber(mosquitto.port, "factory/#")
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    D = sp.DataType
    now_ms = int(time.time() * 1000)
    hour_ago = now_ms - 3_600_000
    birth = sp._pb().Payload()
    birth.timestamp, birth.seq = now_ms - 1000, 0
    pb_metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
    pb_metric(birth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
    pb_metric(birth, "Flow", alias=2, datatype=D.DOUBLE, double_value=1.0)
    kept = sp._pb().Payload()  # the node's store-and-forward, sent as it reconnects
    kept.timestamp, kept.seq = now_ms, 1
    for i in range(100):
        m = pb_metric(kept, alias=1, double_value=90.0 + i)
        m.timestamp, m.is_historical = hour_ago + i * 36_000, True
    current = sp._pb().Payload()
    current.timestamp, current.seq = now_ms + 1, 2
    pb_metric(current, alias=1, double_value=21.0).timestamp = now_ms + 1
    flow = pb_metric(current, alias=2, double_value=5.0)
    flow.timestamp, flow.is_transient = now_ms + 1, True
    topic = "factory/plant/line1/gw1/tags/line"

    def forwarded(tag: str) -> list[dict]:
        with sub.lock:
            return [m for t, m in sub.messages if t == topic and m["tag"] == tag]

    agent = Agent(parse_config(cfg))
    try:
        await agent.start()
        await until(lambda: agent.sources["sp"].subscribed.is_set(), what="the SUBACK")
        for kind, body in (("NBIRTH", birth), ("NDATA", kept), ("NDATA", current)):
            pub.publish(f"spBv1.0/g/{kind}/edge", body.SerializeToString(), qos=1).wait_for_publish(5)
        await until(lambda: len(forwarded("edge/Temp")) >= 102, what="the 102 Temp readings forwarded")
        await until(lambda: len(forwarded("edge/Flow")) >= 2, what="both Flow readings forwarded")
        db = tmp_path / "cloud" / "fleet.db"
        await until(
            lambda: len(_cloud_telemetry(db)) >= 103, timeout_s=10, what="the telemetry in the cloud's store"
        )
        rule = agent.rules[0].status()
        tags = agent.tags["sp"]
        assert agent.outbox is not None
        outbox = [(r.kind, json.loads(r.payload)) for r in agent.outbox.pending()]
        notice = agent.sources["sp"].notices.status()["historical"]
    finally:
        await agent.stop()
        sub.stop()
        pub.disconnect()
        pub.loop_stop()
        await srv.stop()
    want_history = [(90.0 + i, (hour_ago + i * 36_000) / 1000) for i in range(100)]
    temp = forwarded("edge/Temp")
    assert [(m["value"], m["ts"]) for m in temp if m.get("historical")] == want_history
    assert [m["value"] for m in temp if not m.get("historical")] == [20.0, 21.0]
    cloud = _cloud_telemetry(db)
    assert [
        (m["value"], m["ts"]) for m in cloud if m["tag"] == "edge/Temp" and m.get("historical")
    ] == want_history
    assert [m["value"] for m in cloud if m["tag"] == "edge/Temp" and not m.get("historical")] == [20.0, 21.0]
    # the rule saw the current readings only: never active, so its alarm never raised
    assert (rule["readings"], rule["value"], rule["active"]) == (2, 21.0, False)
    assert not any(kind == "alarm" for kind, _ in outbox)
    assert tags["edge/Temp"].value == 21.0 and not tags["edge/Temp"].historical
    assert notice["count"] == 100
    # transient: the tag's value, sent live and marked, not stored in the cloud
    assert tags["edge/Flow"].value == 5.0
    assert [(m["value"], m.get("transient", False)) for m in forwarded("edge/Flow")] == [
        (1.0, False),
        (5.0, True),
    ]
    assert [m["value"] for m in cloud if m["tag"] == "edge/Flow"] == [1.0]


async def test_a_replay_of_history_pushes_out_no_current_reading_at_the_broker_or_in_the_outbox(
    tmp_path, mosquitto, monkeypatch
):
    """Before, historical values went straight into the queues current readings use: a replay of thousands
    (a node back after a long outage) pushed current Pressure changes out of the forward's MQTT queue (it drops
    the oldest) and out of the outbox's hand-over (it drops telemetry past soon_max). Now historical messages
    are dropped first (counted ``historical_dropped``), and none is handed to the outbox once its hand-over is
    half full: every current change reaches the broker and the outbox. A historical value without a time of its
    own is dropped, counted, not stored at the receive instant. (The queues are made small to keep it cheap.)"""
    from edge_agent import tags as tags_mod

    monkeypatch.setattr(tags_mod, "MAX_PENDING", 50)
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "sp": {
                "type": "mqtt",
                "port": mosquitto.port,
                "subscriptions": [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}],
            }
        },
        "outbox": {},
        "forward": [{"name": "line", "source": "sp", "to": "sp", "outbox": True, "qos": 1}],
    }
    sub = Subscriber(mosquitto.port, "factory/#")
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    D = sp.DataType
    now_ms = int(time.time() * 1000)
    hour_ago = now_ms - 3_600_000
    birth = sp._pb().Payload()
    birth.timestamp, birth.seq = now_ms - 1000, 0
    pb_metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
    pb_metric(birth, "Pressure", alias=1, datatype=D.DOUBLE, double_value=0.0)
    pb_metric(birth, "Temp", alias=2, datatype=D.DOUBLE, double_value=20.0)
    messages, per = 4, 2000
    replay = []
    for k in range(messages):
        p = sp._pb().Payload()
        p.timestamp, p.seq = now_ms + k, k + 1
        for j in range(per):
            m = pb_metric(p, alias=2, double_value=float(j))
            m.timestamp, m.is_historical = hour_ago + (k * per + j) * 10, True
            if j == per // 2:  # the current change amid the replay
                pb_metric(p, alias=1, double_value=float(k + 1)).timestamp = now_ms + k
        m = pb_metric(p, alias=2, double_value=-1.0)  # historical, no time of its own: dropped
        m.is_historical = True
        replay.append(p)
    topic = "factory/plant/line1/gw1/tags/line"

    def pressure() -> list[float]:
        with sub.lock:
            return [m["value"] for t, m in sub.messages if t == topic and m["tag"] == "edge/Pressure"]

    agent = Agent(parse_config(cfg))
    try:
        await agent.start()
        assert agent.outbox is not None
        agent.outbox.soon_max = 100
        await until(lambda: agent.sources["sp"].subscribed.is_set(), what="the SUBACK")
        for kind, body in [("NBIRTH", birth)] + [("NDATA", p) for p in replay]:
            pub.publish(f"spBv1.0/g/{kind}/edge", body.SerializeToString(), qos=1).wait_for_publish(5)
        await until(
            lambda: len(pressure()) >= messages + 1,
            timeout_s=10,
            what="every current Pressure change at the broker",
        )
        await until(lambda: agent.forwarders[0].status()["pending"] == 0, what="the forward's queue sent")
        await until(lambda: agent.outbox._soon_waiting == 0, what="the outbox's hand-over done")  # type: ignore[union-attr]
        rows = agent.outbox.pending(limit=10**6, max_bytes=10**9)
        stored = [json.loads(r.payload) for r in rows if r.kind == "telemetry"]
        fwd = agent.forwarders[0].status()
        notices = agent.sources["sp"].notices.status()
    finally:
        await agent.stop()
        sub.stop()
        pub.disconnect()
        pub.loop_stop()
    assert pressure() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [m["value"] for m in stored if m["tag"] == "edge/Pressure"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert fwd["historical_dropped"] > 0  # the replay did not fit: its own values gave way
    with sub.lock:
        assert not any(m.get("historical") and m["value"] == -1.0 for t, m in sub.messages)
    assert notices["historical_untimed"]["count"] == messages
