"""A forward's deadband holds back a number that barely moved, never a change of the reading's quality: a
gateway's record (Kepware IoT Gateway) going bad with its last value, and good again, reaches the broker and
the cloud's telemetry. Against a real Mosquitto."""

from __future__ import annotations

import json

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.integration.test_tags_without_model import Subscriber
from tests.support.waits import until as wait_for


async def test_a_tag_going_bad_with_its_last_value_is_forwarded_through_the_deadband(tmp_path, mosquitto):
    """A gateway reports a thermocouple's channel bad, with the last value it read (85.0), then good again at
    85.0. With a deadband, the forward held back both (the value had not moved): the broker's and the cloud's
    last word on the tag stayed '85.0 good' while the sensor was gone. Now each change of quality is sent."""
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "broker": {
                "type": "mqtt",
                "port": mosquitto.port,
                "subscriptions": [
                    {
                        "topic": "kepware/#",
                        "json_mapping": {
                            "records": {},
                            "timestamp_field": "timestamp",
                            "timestamp_format": "epoch_ms",
                            "tag_prefix_topic": False,
                        },
                    }
                ],
            }
        },
        "forward": [
            {"name": "oven", "source": "broker", "tags": ["oven.temp"], "to": "broker", "deadband": 0.5}
        ],
    }
    sub = Subscriber(mosquitto.port, "factory/#")
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    topic = "factory/plant/line1/gw1/tags/oven"

    def forwarded() -> list[tuple[float, str]]:
        with sub.lock:
            return [(m["value"], m["quality"]) for t, m in sub.messages if t == topic]

    def judged(agent: Agent) -> int:
        f = next(f for f in agent.status()["forward"] if f["name"] == "oven")
        return f.get("forwarded", 0) + f.get("deadband", 0) + f.get("rate_limited", 0)

    agent = Agent(parse_config(cfg))
    try:
        await agent.start()
        src = agent.sources["broker"]
        # a message published before the SUBACK is never seen
        await wait_for(lambda: src.subscribed.is_set(), what="the SUBACK")
        sent = 0
        for ms, q, v in [(1000, True, 85.0), (2000, False, 85.0), (3000, False, 85.2), (4000, True, 85.0)]:
            record = {"id": "oven.temp", "v": v, "q": q}
            body = {"timestamp": 1764500000000 + ms, "values": [record]}
            pub.publish("kepware/oven", json.dumps(body), qos=1).wait_for_publish(5)
            sent += 1
            await wait_for(lambda n=sent: judged(agent) >= n, what=f"reading {sent} judged by the forward")
        # a last, moved value: once it is forwarded, everything before it was judged
        body = {"timestamp": 1764500005000, "values": [{"id": "oven.temp", "v": 90.0, "q": True}]}
        pub.publish("kepware/oven", json.dumps(body), qos=1).wait_for_publish(5)
        await wait_for(lambda: (90.0, "good") in forwarded(), what="the last reading forwarded")
    finally:
        await agent.stop()
        sub.stop()
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
    # 85.2 bad moved less than the deadband from 85.0 bad, and is held back as before
    assert forwarded() == [(85.0, "good"), (85.0, "bad"), (85.0, "good"), (90.0, "good")]
