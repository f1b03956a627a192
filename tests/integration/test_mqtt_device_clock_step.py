"""A device whose clock ran fast (within ``max_clock_skew_s``, so its times were taken) and is then set right
(NTP stepping it back, a gateway's clock synced after boot), through a real Mosquitto: its readings after the
step were each older than the tag's last one and dropped as ``out_of_order`` until its clock caught up with the
times it gave when fast (200 s of a sensor's readings lost for a clock 200 s fast). They are now taken: the tag's
order starts again from the first of them, said once as ``device_clock_stepped``. JSON, records and Sparkplug
alike; a reading older than its tag's last that the gateway's clock does not show as a step is dropped as before."""

from __future__ import annotations

import asyncio
import json
import time

from protocols import sparkplug as sp
from tests.support.mqtt_read import read_published

D = sp.DataType


def _sparkplug(seq: int, ts_s: float, value: float) -> bytes:
    ms = int(ts_s * 1000)
    return sp.encode(sp.Payload(ms, seq, [sp.Metric("Temp", None, D.DOUBLE, value, timestamp_ms=ms)]))


async def test_a_device_clock_set_back_from_fast_keeps_its_readings_an_older_one_is_still_dropped(mosquitto):
    now = time.time()
    fast, right = now + 200, now - 2  # the device's clock 200 s fast, then set right (2 s behind)
    subs = [
        {"topic": "j/#"},
        {"topic": "rec/#", "json_mapping": {"records": {"array": "values"}}},
        {"topic": "spBv1.0/#", "codec": "sparkplug_b"},
    ]
    messages = [
        ("spBv1.0/g/NBIRTH/n1", _sparkplug(0, fast, 1.0)),
        ("j/1", json.dumps({"ts": fast, "v": 1})),
        ("rec/1", json.dumps({"values": [{"id": "w", "v": 1, "t": fast}]})),
        ("spBv1.0/g/NDATA/n1", _sparkplug(1, fast + 1, 2.0)),
        # NTP: the clock 200 s back
        ("j/1", json.dumps({"ts": right, "v": 2})),
        ("rec/1", json.dumps({"values": [{"id": "w", "v": 2, "t": right}]})),
        ("spBv1.0/g/NDATA/n1", _sparkplug(2, right, 3.0)),
        ("j/1", json.dumps({"ts": right + 1, "v": 3})),
        # older than the tag's last, the device's clock right: out of order, dropped as before
        ("j/1", json.dumps({"ts": right - 5, "v": 4})),
        # two devices on one topic (one fast, one right): two steps, not a flip back at each of the right one's
        ("j/two", json.dumps({"ts": fast, "v": 1})),
        ("j/two", json.dumps({"ts": right, "v": 2})),
        ("j/two", json.dumps({"ts": fast + 2, "v": 3})),
        ("j/two", json.dumps({"ts": right + 1, "v": 4})),
        ("j/two", json.dumps({"ts": fast + 4, "v": 5})),
        ("j/two", json.dumps({"ts": right + 2, "v": 6})),
        # a batch sent across the step: its readings from before it (the fast clock's) come after the newer ones in
        # time order and move the tag ahead again; the next message, its clock right, is a second step
        ("rec/s", json.dumps({"values": [{"id": "w", "v": 1, "t": fast}]})),
        (
            "rec/s",
            json.dumps({"values": [{"id": "w", "v": 2, "t": fast + 5}, {"id": "w", "v": 3, "t": right}]}),
        ),
        ("rec/s", json.dumps({"values": [{"id": "w", "v": 4, "t": right + 1}]})),
        # its first batch re-sent (its client's in-flight message at a reconnect): passed already, not again, and
        # the tag not moved ahead a third time (its right clock's next dropped until it caught up)
        ("rec/s", json.dumps({"values": [{"id": "w", "v": 1, "t": fast}]})),
        ("rec/s", json.dumps({"values": [{"id": "w", "v": 5, "t": right + 2}]})),
        # a message of the fast clock re-sent from before the step over half its lead late (stamped 50 s ahead of
        # this gateway's clock, the clock 200 s fast): passed already, not again (it was: the tag moved ahead)
        ("rec/r", json.dumps({"values": [{"id": "w", "v": 1, "t": now + 50}]})),
        ("rec/r", json.dumps({"values": [{"id": "w", "v": 2, "t": fast}]})),
        ("rec/r", json.dumps({"values": [{"id": "w", "v": 3, "t": right}]})),
        ("rec/r", json.dumps({"values": [{"id": "w", "v": 1, "t": now + 50}]})),
        ("rec/r", json.dumps({"values": [{"id": "w", "v": 4, "t": right + 1}]})),
        # set right to a clock a second or two ahead of this gateway's: its new readings are no re-send of the fast
        # clock's (they were dropped as such until its clock passed the fast times)
        ("j/ahead", json.dumps({"ts": fast, "v": 1})),
        ("j/ahead", json.dumps({"ts": now + 1, "v": 2})),
        ("j/ahead", json.dumps({"ts": now + 2.5, "v": 3})),
        # a buffer's value of 2 min ago sent after a live one: no step (its clock is not set right: it is old)
        ("j/old", json.dumps({"ts": fast, "v": 1})),
        ("j/old", json.dumps({"ts": now - 120, "v": 2})),
        # a device batching a minute a message: its first batch after the step is taken whole, its newest reading
        # near the receive time (its readings over 30 s old were dropped as out of order)
        ("rec/b", json.dumps({"values": [{"id": "w", "v": 1, "t": fast}]})),
        ("rec/b", json.dumps({"values": [{"id": "w", "v": i, "t": right - 60 + 30 * i} for i in range(3)]})),
        ("j/end", json.dumps({"ts": right + 2, "end": 1})),
    ]
    got, src = await read_published(mosquitto.port, subs, messages, "j/end/end")
    by_tag: dict = {}
    for r in got:
        by_tag.setdefault(r.tag, []).append((r.value, r.timestamp))
    assert by_tag == {
        "n1/Temp": [
            (1.0, int(fast * 1000) / 1000),
            (2.0, int((fast + 1) * 1000) / 1000),
            (3.0, int(right * 1000) / 1000),
        ],
        "j/1/v": [(1, fast), (2, right), (3, right + 1)],  # before: 2 and 3 dropped as out of order
        "rec/1/w": [(1, fast), (2, right)],
        # once per 10 min: 4 dropped; no bound: 6 as well, back in time again
        "j/two/v": [(1, fast), (2, right), (3, fast + 2), (4, right + 1), (5, fast + 4)],
        # once per 10 min: 4 dropped; twice: 1 again and 5 dropped
        "rec/s/w": [(1, fast), (3, right), (2, fast + 5), (4, right + 1), (5, right + 2)],
        "rec/r/w": [(1, now + 50), (2, fast), (3, right), (4, right + 1)],
        "j/ahead/v": [(1, fast), (2, now + 1), (3, now + 2.5)],
        "j/old/v": [(1, fast)],  # before this bound: 2 as well, the tag's current value 2 min old
        "rec/b/w": [(1, fast), (0, right - 60), (1, right - 30), (2, right)],
        "j/end/end": [(1, right + 2)],
    }, by_tag
    assert src.stats.errors_by_reason.get("out_of_order") == 5
    assert src.notices.counts.get("device_clock_stepped") == 10


async def test_a_resend_of_a_fast_clock_is_dropped_after_this_gateways_own_clock_is_set_forward(
    mosquitto, monkeypatch
):
    """A device clock 200 s fast is set right (a step, held 10 minutes: a message of the fast clock re-sent, its
    client's in-flight one at a reconnect, is dropped meanwhile); then this gateway's own clock is set forward 300 s
    (its NTP), between the device's step and the re-send. The re-send was judged by the clock as it is now: its
    fast time, 100 s behind it, read as no re-send, and it was passed a second time. Judged by the clock as it was
    at the step: dropped; the device's next right reading is taken. Set forward 600 s more, the step's 10-minute
    hold, timed by the receive times, was over at once and the re-send passed again: timed by the monotonic clock."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from devices.mqtt import client
    from devices.mqtt.settings import MqttSettings

    class Clock:  # this gateway's wall clock as the source reads it (paho's thread stamps with it), stepped
        step = 0.0

        def time(self) -> float:
            return time.time() + self.step

        def __getattr__(self, name: str):
            return getattr(time, name)

    clock = Clock()
    monkeypatch.setattr(client, "time", clock)
    src = client.MqttSource("mq", MqttSettings(port=mosquitto.port, subscriptions=[{"topic": "j/#"}]))
    await src.start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    got: list = []
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        pub.connect("127.0.0.1", mosquitto.port, 30)
        pub.loop_start()
        now = time.time()
        readings = src.items()

        async def send(ts: float, v: int) -> None:  # and read up to the end mark after it
            pub.publish("j/1", json.dumps({"ts": ts, "v": v}), qos=1)
            pub.publish("j/end", json.dumps({"ts": now + 3, "v": 0}), qos=1)
            async with asyncio.timeout(5):
                async for r in readings:
                    got.append((r.tag, r.value, r.timestamp))
                    if r.tag == "j/end/v":
                        return

        await send(now + 200, 1)  # fast
        await send(now + 1, 2)  # set right: a step
        clock.step = 300.0  # this gateway's clock set forward 300 s
        await send(now + 200, 1)  # the fast message re-sent
        await send(now + 2, 3)  # right
        clock.step = 900.0  # and 600 s more: the step's 10-minute hold is not over (it ended at once)
        await send(now + 200, 1)  # re-sent again
        await send(now + 3, 4)
    finally:
        pub.disconnect()
        pub.loop_stop()
        await src.stop()
    assert [(v, ts) for tag, v, ts in got if tag == "j/1/v"] == [
        (1, now + 200),
        (2, now + 1),
        (3, now + 2),
        (4, now + 3),
    ]
    assert src.stats.errors_by_reason.get("out_of_order") == 2
