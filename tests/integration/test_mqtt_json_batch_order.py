"""MqttSource against a real Mosquitto, one message holding a tag's samples newest first (a historian's or REST
bridge's buffer in descending time): a batch the device sent at once, each tag's samples read in time order (in
the slots they had: the message's order across tags stands), none lost. Before, only the newest was kept and the
others were dropped as ``out_of_order``. A message older than one already read is still ``out_of_order``."""

from __future__ import annotations

import json
import time

from tests.support.mqtt_read import read_published


async def test_a_message_of_samples_newest_first_is_read_in_time_order_and_an_older_message_still_counted(
    mosquitto,
):
    t0 = round(time.time()) - 60
    subs = [
        {"topic": "arr/#"},
        {"topic": "rec/#", "json_mapping": {"records": {"array": "values"}}},
    ]
    messages = [
        ("arr/desc", json.dumps([{"ts": t0 + 2, "a": 3}, {"ts": t0 + 1, "a": 2}, {"ts": t0, "a": 1}])),
        (
            "rec/desc",
            json.dumps(
                {
                    "values": [
                        {"id": "x", "v": 3, "t": t0 + 2},
                        {"id": "y", "v": 30, "t": t0 + 2},
                        {"id": "x", "v": 2, "t": t0 + 1},
                    ]
                }
            ),
        ),
        # a message older than the tag's last one: out of order, dropped and counted, as before
        ("arr/desc", json.dumps({"ts": t0 + 1, "a": 9})),
        ("arr/end", json.dumps({"ts": t0, "end": 1})),
    ]
    got, src = await read_published(mosquitto.port, subs, messages, "arr/end/end")
    assert [(r.tag, r.value, r.timestamp) for r in got] == [
        ("arr/desc/a", 1, t0),
        ("arr/desc/a", 2, t0 + 1),
        ("arr/desc/a", 3, t0 + 2),
        ("rec/desc/x", 2, t0 + 1),  # each tag's samples in time order, in the slots they had
        ("rec/desc/y", 30, t0 + 2),
        ("rec/desc/x", 3, t0 + 2),
        ("arr/end/end", 1, t0),
    ]
    assert src.stats.errors_by_reason == {"out_of_order": 1}
    assert "arr/desc/a" in (src.stats.last_error or "")
