"""What a BAD or UNCERTAIN reading from an MQTT device says of why, against a real Mosquitto.

An OPC UA reading not GOOD carries its ``reason`` (49e49c8); the MQTT JSON source's and the Sparkplug B host's
carried none: a device its node declared dead (DDEATH), a node that died (NDEATH), a metric its node flags
stale or null, a record its gateway calls BadNotConnected and a retained value of unknown age all read the
same ``bad``/``uncertain`` in forwarded tag JSON and on ``/status``. Now each says why: the device's own word
or its status number's name (``BadNotConnected``, Ignition's ``Bad_Stale``), or the agent's own snake_case
key (``device_death``, ``node_death``, ``null_value``, ``non_finite``, ``retained_value``)."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Quality
from devices.mqtt.client import MqttError
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.status_board import tag_rows
from protocols import sparkplug as sp
from tests.integration.test_mqtt_opcua_pubsub import iso, published, ua_data
from tests.integration.test_sparkplug_hostile_nodes import _QUIET_1_S, _birth, _host
from tests.integration.test_tags_without_model import Subscriber
from tests.support.waits import until

D = sp.DataType
BAD_NOT_CONNECTED, UNCERTAIN_LAST_USABLE = 0x808A0000, 0x40900000


def _config(tmp_path, port: int) -> dict:
    return {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "broker": {
                "type": "mqtt",
                "port": port,
                "subscriptions": [
                    {"topic": "spBv1.0/#", "codec": "sparkplug_b"},
                    {
                        "topic": "kepware/#",
                        "json_mapping": {
                            "records": {},
                            "timestamp_field": "timestamp",
                            "timestamp_format": "epoch_ms",
                            "tag_prefix_topic": False,
                        },
                    },
                ],
            }
        },
        "forward": [{"name": "all", "source": "broker", "to": "broker"}],
    }


async def test_a_dead_device_a_dead_node_and_stale_or_bad_values_say_why_in_forwarded_json_and_status(
    tmp_path, mosquitto
):
    """A Sparkplug node with a pump device: the pump's DDEATH makes its Flow BAD with reason ``device_death``,
    the node's metric its node flags with Ignition's quality 500 reads BAD ``Bad_Stale``, a metric sent
    is_null BAD ``null_value``, the NDEATH makes the node's Temp BAD ``node_death``; a Kepware record with
    q: false is BAD ``quality_false``. Forwarded tag JSON and /status's tag rows say so; a GOOD reading
    carries no reason. Before, none of them said why."""
    agent = Agent(parse_config(_config(tmp_path, mosquitto.port)))
    sub = Subscriber(mosquitto.port, "factory/#")
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    topic = "factory/plant/line1/gw1/tags/all"
    t0 = int(time.time() * 1000) - 10_000

    def forwarded() -> dict[str, list[dict]]:
        by_tag: dict[str, list[dict]] = {}
        with sub.lock:
            for t, m in sub.messages:
                if t == topic:
                    by_tag.setdefault(m["tag"], []).append(m)
        return by_tag

    try:
        await agent.start()
        src = agent.sources["broker"]
        await until(lambda: src.subscribed.is_set(), what="the SUBACK")
        nbirth = [
            sp.Metric("bdSeq", None, D.INT64, 0),
            sp.Metric("Temp", 1, D.DOUBLE, 20.0),
            sp.Metric("Level", 2, D.DOUBLE, 3.0),
            sp.Metric("Gone", 3, D.DOUBLE, 7.0),
        ]
        dbirth = [sp.Metric("Flow", 4, D.DOUBLE, 1.5)]
        ndata = [
            sp.Metric(None, 2, D.DOUBLE, 3.0, quality=500),  # Ignition 7's stale
            sp.Metric(None, 3, D.DOUBLE, None, is_null=True),
        ]
        death = [sp.Metric("bdSeq", None, D.INT64, 0)]
        for what, body in (
            ("NBIRTH/n1", sp.Payload(t0, 0, nbirth)),
            ("DBIRTH/n1/pump", sp.Payload(t0 + 1, 1, dbirth)),
            ("NDATA/n1", sp.Payload(t0 + 2, 2, ndata)),
            ("DDEATH/n1/pump", sp.Payload(t0 + 3, 3, [])),
        ):
            pub.publish(f"spBv1.0/g/{what}", sp.encode(body), qos=1).wait_for_publish(5)
        record = {"timestamp": t0 + 4, "values": [{"id": "oven.temp", "v": 85.0, "q": False}]}
        pub.publish("kepware/oven", json.dumps(record), qos=1).wait_for_publish(5)

        def last(tag: str) -> dict:
            return (forwarded().get(tag) or [{}])[-1]

        await until(
            lambda: "oven.temp" in forwarded() and last("n1/pump/Flow").get("quality") == "bad",
            what="the DDEATH's and the record's readings forwarded",
        )
        rows = {r["tag"]: r for r in tag_rows(list(agent.tags["broker"].values()))}  # what /api/tags serves
        pub.publish("spBv1.0/g/NDEATH/n1", sp.encode(sp.Payload(None, None, death)), qos=1).wait_for_publish(
            5
        )
        await until(lambda: last("n1/Temp").get("quality") == "bad", what="the NDEATH's readings forwarded")
        after = {r["tag"]: r for r in tag_rows(list(agent.tags["broker"].values()))}
    finally:
        await agent.stop()
        sub.stop()
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
    got = forwarded()
    assert got["n1/pump/Flow"][0]["quality"] == "good" and "reason" not in got["n1/pump/Flow"][0], got
    assert [(m["quality"], m.get("reason")) for m in got["n1/pump/Flow"]][1] == ("bad", "device_death"), got
    assert rows["n1/pump/Flow"]["quality"] == "bad" and rows["n1/pump/Flow"]["reason"] == "device_death", rows
    assert rows["n1/Temp"]["quality"] == "good" and rows["n1/Temp"]["reason"] is None, rows
    assert rows["oven.temp"]["reason"] == "quality_false", rows
    assert got["oven.temp"][-1]["quality"] == "bad" and got["oven.temp"][-1]["reason"] == "quality_false", got
    assert [(m["quality"], m.get("reason")) for m in got["n1/Level"]][-2:] == [
        ("bad", "Bad_Stale"),
        ("bad", "node_death"),
    ], got
    assert [(m["quality"], m.get("reason")) for m in got["n1/Gone"]][-2:] == [
        ("bad", "null_value"),
        ("bad", "node_death"),
    ], got
    assert got["n1/Temp"][-1]["reason"] == "node_death", got
    assert after["n1/Temp"]["reason"] == "node_death", after


async def test_an_opcua_pubsub_sample_with_a_bad_status_carries_the_status_codes_name(mosquitto):
    """OPC UA PubSub JSON (Part 14) from a publisher whose PLC item is gone: a DataSetMessage's Status
    BadNotConnected as a number, a field's StatusCode UncertainLastUsableValue as a number, a Status as Part
    6's object with its Symbol, and a Bad field without a Value: each reading carries the status code's name
    as its reason; a GOOD one none. Before, only the level was read (bad, uncertain), the name dropped."""
    t0 = round(time.time()) - 30
    network = ua_data(
        "plc1",
        {
            "DataSetWriterId": 1,
            "Timestamp": iso(t0),
            "Payload": {
                "Speed": {"Value": 1500, "SourceTimestamp": iso(t0), "StatusCode": 0},
                "Level": {"Value": 0.5, "SourceTimestamp": iso(t0), "StatusCode": UNCERTAIN_LAST_USABLE},
                "Probe": {"SourceTimestamp": iso(t0), "StatusCode": 0x80320000},  # BadWaitingForInitialData
            },
        },
        {
            "DataSetWriterId": 2,
            "Timestamp": iso(t0 + 1),
            "Status": BAD_NOT_CONNECTED,
            "Payload": {"Temp": 19.0},
        },
        {
            "DataSetWriterId": 3,
            "Timestamp": iso(t0 + 2),
            "Status": {"Code": 0x80000000 | 0x12340000, "Symbol": "BadVendorSpecific"},
            "Payload": {"Last": 1.0},
        },
    )
    subs = [{"topic": "opc/#", "json_mapping": {"opcua_pubsub": {"tag": "{writer}/{field}"}}}]
    src, got = await published(mosquitto.port, subs, [("opc/line1", network)], "opc/line1/3/Last")
    assert [(r.tag, r.quality, r.reason) for r in got] == [
        ("opc/line1/1/Speed", Quality.GOOD, None),
        ("opc/line1/1/Level", Quality.UNCERTAIN, "UncertainLastUsableValue"),
        ("opc/line1/1/Probe", Quality.BAD, "BadWaitingForInitialData"),
        ("opc/line1/2/Temp", Quality.BAD, "BadNotConnected"),
        ("opc/line1/3/Last", Quality.BAD, "BadVendorSpecific"),
    ]
    assert src.stats.errors_by_reason == {}


async def test_records_name_their_quality_a_nan_and_a_retained_value_say_why(mosquitto):
    """Records in each quality convention: OPC DA's 24 (BadCommFailure) and 68 (UncertainLastUsableValue),
    Ignition's text Bad_Stale, an OPC UA hex StatusCode; a NaN kept BAD says ``non_finite``; a retained
    message's readings made UNCERTAIN say ``retained_value``."""
    now_ms = int(time.time() * 1000) - 5_000
    subs = [
        {"topic": "retained/#"},
        {
            "topic": "da/#",
            "json_mapping": {"records": {}, "timestamp_field": "timestamp", "timestamp_format": "epoch_ms"},
        },
        {
            "topic": "ua/#",
            "json_mapping": {
                "records": {"quality_format": "opcua"},
                "timestamp_field": "timestamp",
                "timestamp_format": "epoch_ms",
            },
        },
        {"topic": "nan/#", "json_mapping": {"tag_prefix_topic": False}},
    ]
    pre = paho.Client(CallbackAPIVersion.VERSION2)
    pre.connect("127.0.0.1", mosquitto.port)
    pre.loop_start()
    pre.publish("retained/x", json.dumps({"Level": 4.0}), qos=1, retain=True).wait_for_publish(5)
    pre.disconnect()  # first: paho's thread ends now, not at its next 1 s select
    pre.loop_stop()
    da = {
        "timestamp": now_ms,
        "values": [
            {"id": "a", "v": 1.0, "q": 24},
            {"id": "b", "v": 2.0, "q": 68},
            {"id": "c", "v": 3.0, "q": "Bad_Stale"},
            {"id": "d", "v": 4.0, "q": 192},
        ],
    }
    ua = {"timestamp": now_ms, "values": [{"id": "e", "v": 5.0, "q": "0x808A0000"}]}
    messages: list[tuple[str, object]] = [
        ("da/1", da),
        ("ua/1", ua),
        ("nan/1", b'{"temp": NaN}'),
        ("nan/2", {"end": 1.0}),
    ]
    src, got = await published(mosquitto.port, subs, messages, "end")
    by_tag = {r.tag: (r.quality, r.reason) for r in got}
    assert by_tag["da/1/a"] == (Quality.BAD, "BadCommFailure"), by_tag
    assert by_tag["da/1/b"] == (Quality.UNCERTAIN, "UncertainLastUsableValue"), by_tag
    assert by_tag["da/1/c"] == (Quality.BAD, "Bad_Stale"), by_tag
    assert by_tag["da/1/d"] == (Quality.GOOD, None), by_tag
    assert by_tag["ua/1/e"] == (Quality.BAD, "BadNotConnected"), by_tag
    assert by_tag["temp"] == (Quality.BAD, "non_finite"), by_tag
    assert by_tag["retained/x/Level"] == (Quality.UNCERTAIN, "retained_value"), by_tag


async def test_a_silent_nodes_tags_say_node_silent_and_its_refused_command_says_it_did_not_answer(mosquitto):
    """A node that goes quiet past rebirth_give_up_s and does not answer the rebirth then asked (1131205): its
    tags' BAD readings say ``node_silent``, and a command to it is refused saying it did not answer its rebirth
    within rebirth_retry_max_s. Before, the readings said nothing of why, and the refusal said only "nothing
    heard of it for rebirth_give_up_s", which is not why it is refused (a quiet node that answers is kept)."""
    async with _host(mosquitto.port, **_QUIET_1_S) as (src, got, _asked, pub):
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", None, D.DOUBLE, 20.0)), qos=1)
        await until(lambda: 20.0 in [r.value for r in got if r.tag == "n1/Temp"], 30, "its birth read")
        await until(lambda: any(r.quality is Quality.BAD for r in got), 30, "its tags marked BAD")
        with pytest.raises(MqttError) as refused:
            await src.command("g", "n1", None, "Temp", 25.0)
    bad = [(r.tag, r.reason) for r in got if r.quality is Quality.BAD]
    assert bad == [("n1/Temp", "node_silent")], bad
    assert "did not answer the rebirth" in str(refused.value), refused.value
    assert "rebirth_retry_max_s" in str(refused.value), refused.value
