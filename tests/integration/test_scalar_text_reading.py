"""A window's scalar input (a speed or load tag) whose device sends text in place of its number: a JSON sensor
writing "---" on a fault (a GOOD reading of text, as the MQTT source passes a mapped field's text on) through a
real Mosquitto. Its last number no longer rides with the windows."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Notices
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from edge_agent.config import WindowSettings
from edge_agent.pipelines import Windower


async def test_a_scalar_whose_device_sends_text_is_not_fed_to_the_model_as_its_last_number(mosquitto):
    """The speed rode on at 1480 rpm with every window while the device said "---": the model judged the machine
    at a speed it may no longer run at. A model input's windows now wait for a number; the baseline's own speed
    tag goes without it (its own estimate), as for a BAD reading."""
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port,
            subscriptions=[
                {
                    "topic": "m1",
                    "qos": 1,
                    "json_mapping": {"values": {"load": "load", "speed": "speed"}, "tag_prefix_topic": False},
                }
            ],
        ),
    )
    await src.start()
    c = paho.Client(CallbackAPIVersion.VERSION2)
    try:
        async with asyncio.timeout(5):
            await src.subscribed.wait()
        c.connect("127.0.0.1", mosquitto.port)
        c.loop_start()
        for p in (b'{"load": 0.8, "speed": 1480}', b'{"speed": "---"}', b'{"load": "ERR"}'):
            c.publish("m1", p, qos=1).wait_for_publish(5)
        got = []
        async with asyncio.timeout(5):
            async for r in src.items():
                got.append(r)
                if len(got) == 4:
                    break
    finally:
        c.disconnect()  # first: paho's thread ends once it is written, not at its next 1 s select
        c.loop_stop()
        await src.stop()
    notes = Notices(logging.getLogger("test.windower"))
    w = Windower(
        "mq",
        WindowSettings(waveform="vib", scalars=["load"], size_samples=4),
        1024,
        notes,
        "health",
        extra_inputs={"speed": "_shaft_speed"},
    )
    load, speed, speed_text, load_text = got
    assert (speed_text.tag, speed_text.value, load_text.value) == ("speed", "---", "ERR")
    w.add(load)
    w.add(speed)
    vib = type(load)("mq", "vib", np.ones(4), load.timestamp, load.received_at)
    assert w.add(vib).scalars == {"load": 0.8, "_shaft_speed": 1480.0}
    w.add(speed_text)
    assert w.add(vib).scalars == {"load": 0.8}  # judged without the stale speed (it rode on at 1480)
    w.add(load_text)
    assert w.add(vib) is None  # the model's input: wait for a number
    assert notes.counts["scalar_not_a_number"] == 2
