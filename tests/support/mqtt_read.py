"""An MQTT source on a real broker fed by a raw paho client: the readings it gives for messages published in order.

The MQTT JSON tests' common set-up (a source on the subscriptions, a publisher, read up to an end tag)."""

from __future__ import annotations

import asyncio
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings


async def read_published(
    port: int,
    subs: list[dict],
    messages: list[tuple[str, Any]],
    last: str,
    *,
    errors: list[str] | None = None,
    gap_s: float = 0.0,
    **settings: Any,
) -> tuple[list, MqttSource]:
    """The readings a source on ``subs`` gives for ``messages`` ((topic, payload), published in order at QoS 1) up
    to and with the tag ``last``, and the stopped source (its stats and notices). ``errors``, when given, gets each
    error's text as it is counted (``reason: detail``), not only the first of a burst the log says. ``gap_s``: a
    pause after each message (spread over the receive time, as a device's are)."""
    src = MqttSource("mq", MqttSettings(port=port, subscriptions=subs, **settings))
    if errors is not None:
        said = src._error

        def error(reason: str, detail: str) -> None:
            errors.append(f"{reason}: {detail}")
            said(reason, detail)

        src._error = error  # type: ignore[method-assign]
    await src.start()
    async with asyncio.timeout(5):
        await src.connected.wait()
        await src.subscribed.wait()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", port, 30)
    pub.loop_start()
    got: list = []
    try:
        for topic, payload in messages:
            pub.publish(topic, payload, qos=1)
            if gap_s:
                await asyncio.sleep(gap_s)
        async with asyncio.timeout(5):
            async for r in src.items():
                got.append(r)
                if r.tag == last:
                    break
    finally:
        pub.disconnect()
        pub.loop_stop()
        await src.stop()
    return got, src
