"""Shared subscriptions ('$share/{group}/{filter}', MQTT 5 and, on Mosquitto, EMQX and HiveMQ, MQTT 3.1.1 as
well; EMQX's '$queue/{filter}'): several gateways of one line take turns at a topic's messages. The broker
delivers them under their own topic names, which the '$share/...' filter does not match as written."""

from __future__ import annotations

import asyncio

import paho.mqtt.publish as paho_publish
import pytest
from pydantic import ValidationError

from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from tests.support.peers import Mosquitto


@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
async def test_messages_of_a_shared_subscription_are_read_by_its_mapping(tmp_path, protocol):
    """The messages came from the broker as 'sensors/...' and were matched to no subscription: dropped, not
    counted, the source connected and subscribed and silent for good. They are now read by the
    subscription whose shared filter they came through, with its mapping."""
    broker = Mosquitto(tmp_path / "mosq", extra_conf="user root\n").start()
    settings = MqttSettings(
        port=broker.port,
        protocol=protocol,
        subscriptions=[
            {"topic": "$share/line1/sensors/#", "qos": 1, "json_mapping": {"values": {"t": "temp"}}},
        ],
    )
    src = MqttSource("bus", settings)
    await src.start()
    got: list = []
    try:
        async with asyncio.timeout(5):
            await src.subscribed.wait()
        await asyncio.to_thread(
            paho_publish.single,
            "sensors/oven1",
            b'{"t": 181.5}',
            qos=1,
            hostname="127.0.0.1",
            port=broker.port,
        )

        async def read() -> None:
            async for r in src.items():
                got.append((r.tag, r.value))
                return

        await asyncio.wait([asyncio.create_task(read())], timeout=3)
    finally:
        await src.stop()
        broker.stop()
    assert got == [("sensors/oven1/temp", 181.5)]


def test_a_shared_filter_is_matched_by_the_filter_after_its_group_and_checked_as_one():
    def sub(topic: str, codec: str = "json"):
        return MqttSettings(subscriptions=[{"topic": topic, "codec": codec}]).subscriptions[0]

    assert sub("$share/line1/sensors/#").filter == "sensors/#"
    assert (
        sub("$queue/sensors/+/temp").filter == "sensors/+/temp"
    )  # EMQX's shared subscription without a group
    assert sub("plant/#").filter == "plant/#"
    known = MqttSettings(
        subscriptions=[{"topic": "$share/g/sensors/oven1", "json_mapping": {"values": {"t": "temp"}}}]
    ).known_tags()
    assert known == ({"sensors/oven1/temp"}, False)
    for bad, said in [
        ("$share/line1", "a group and a topic filter"),
        ("$share//sensors/#", "a group and a topic filter"),
        ("$share/line+/sensors/#", "group"),
        ("$share/line1/sensors/#/x", "'#' must be a whole last level"),
    ]:
        with pytest.raises(ValidationError, match=said.replace("+", r"\+")):
            sub(bad)
    with pytest.raises(ValidationError, match="Sparkplug host"):
        sub("$share/hosts/spBv1.0/plant/#", "sparkplug_b")


async def test_mqtt5_a_topic_also_subscribed_unshared_is_read_whole_by_each_gateway_of_the_group(tmp_path):
    """With MQTT 5 a message matching two subscriptions comes once per subscription, and only the first
    subscription's copy is read. A shared subscription's copy goes to one gateway of the group: with it listed
    first, each gateway dropped the copy of its own (unshared) subscription of the topic as an overlapping
    copy, and read only the messages the broker gave it, half of them with two gateways. The copy read is now
    the first unshared subscription's, which always comes."""
    broker = Mosquitto(tmp_path / "mosq", extra_conf="user root\n").start()
    subs = [{"topic": "$share/line1/sensors/#"}, {"topic": "sensors/oven1"}]
    sources = [
        MqttSource(n, MqttSettings(port=broker.port, protocol="mqtt5", subscriptions=subs)) for n in "ab"
    ]
    got: dict[str, list] = {"a": [], "b": []}
    try:
        for src in sources:
            await src.start()
        async with asyncio.timeout(5):
            for src in sources:
                await src.subscribed.wait()
        messages = [("sensors/oven1", f'{{"v": {i}}}'.encode(), 0, False) for i in range(10)]
        messages.append(("sensors/oven2", b'{"v": 10}', 0, False))  # the shared subscription's alone
        await asyncio.to_thread(
            paho_publish.multiple, messages, hostname="127.0.0.1", port=broker.port, protocol=5
        )

        async def read(src: MqttSource) -> None:
            async for r in src.items():
                got[src.name].append((r.tag, r.value))

        await asyncio.wait([asyncio.create_task(read(src)) for src in sources], timeout=3)
    finally:
        for src in sources:
            await src.stop()
        broker.stop()
    for name in "ab":
        assert [v for t, v in got[name] if t == "sensors/oven1/v"] == list(range(10))
    assert sorted(v for name in "ab" for t, v in got[name] if t == "sensors/oven2/v") == [10]
