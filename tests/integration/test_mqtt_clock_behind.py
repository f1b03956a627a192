"""A JSON device whose times run a steady while behind this gateway's clock, through a real Mosquitto: one that
writes its local time without a zone in a zone west of UTC (read in ``json_mapping.timezone``, UTC by default), or
whose clock is simply set wrong. Its readings were stamped hours in the past without a word (a time ahead is
``clock_skew``; an older one stands, as a buffer sent after an outage): the cloud's records, a historian and
``age_ms`` all had them hours old. Said now, once, as ``clock_behind``; the readings keep their times."""

from __future__ import annotations

import datetime as dt
import json
import time

import devices.mqtt.client as mqtt_client
from tests.support.mqtt_read import read_published


async def test_a_device_writing_its_local_time_west_of_utc_is_said_to_be_hours_behind(mosquitto, monkeypatch):
    monkeypatch.setattr(mqtt_client, "CLOCK_BEHIND_STEADY_S", 0.3)  # 60 s in service: a test cannot wait so
    now = time.time()

    def local(at: float) -> str:  # UTC-5, written without its zone
        return (
            (dt.datetime.fromtimestamp(at, dt.UTC) - dt.timedelta(hours=5)).replace(tzinfo=None).isoformat()
        )

    subs = [
        {"topic": "west/#", "json_mapping": {"timestamp_format": "iso8601"}},
        {"topic": "utc/#", "json_mapping": {"timestamp_format": "iso8601"}},
        {"topic": "end"},
    ]
    msgs = []
    for i in range(4):
        msgs.append(("west/m1", json.dumps({"ts": local(now + 0.2 * i), "t": 20 + i})))
        msgs.append(("utc/m2", json.dumps({"ts": local(now + 0.2 * i + 5 * 3600) + "Z", "t": 30 + i})))
    msgs.append(("end", json.dumps({"end": 1})))
    got, src = await read_published(mosquitto.port, subs, msgs, "end/end", gap_s=0.1)
    west = [r for r in got if r.tag == "west/m1/t"]
    assert len(west) == 4 and all(17990 < r.received_at - r.timestamp < 18010 for r in west)  # times kept
    said = src.notices.status().get("clock_behind")
    assert said is not None and said["count"] == 1, src.notices.status()
    assert "west/m1" in said["message"] and "json_mapping.timezone" in said["message"]
    assert "about 5 h" in said["message"] and "utc/m2" not in said["message"]
