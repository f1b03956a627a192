"""MqttSource against a real Mosquitto, JSON whose values a mapping's path must reach as devices lay them out: a
key holding dots (Kepware's and OPC gateways' tag names, ``"Channel1.Device1.Temp"``, sent flat), and an item
of an array (Tasmota's three-phase ``"ENERGY": {"Voltage": [231, 229, 230]}``, a gateway's ``"sensors": [{...},
{...}]``). Each reaches its tag; a path that is really absent is ``missing_field`` as before."""

from __future__ import annotations

import json
import time

from tests.support.mqtt_read import read_published


async def test_a_dotted_key_and_an_array_item_are_read_by_the_mappings_path(mosquitto):
    """A mapped ``Channel1.Device1.Temp`` looked for ``{"Channel1": {"Device1": {"Temp": ...}}}`` only, and
    ``ENERGY.Voltage.0`` or ``sensors.1.temp`` went into no array: each was counted ``missing_field`` ("field
    ... is absent") while the value was in the message, and no path could reach it. A key is now found as it is
    written, dots and all, before the path is followed level by level; a level that is an array is indexed by
    a whole number (0 the first item); the timestamp field is found the same way."""
    t0 = round(time.time()) - 60
    subs = [
        {
            "topic": "kepware/flat",
            "json_mapping": {
                "values": {"Channel1.Device1.Temp": "temp", "Channel1.Device1.Pressure": "pressure"},
                "timestamp_field": "meta.ts",
            },
        },
        {
            "topic": "tele/pm3/SENSOR",
            "json_mapping": {
                "values": {"ENERGY.Voltage.0": "u1", "ENERGY.Voltage.2": "u3", "ENERGY.Total": "kwh"},
                "timestamp_field": "Time",
                "timestamp_format": "iso8601",
            },
        },
        {"topic": "gw/1", "json_mapping": {"values": {"sensors.1.temp": "t2", "sensors.2.temp": "t3"}}},
        {"topic": "end"},
    ]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + 1))
    flat = {"meta.ts": t0, "Channel1.Device1.Temp": 21.5, "Channel1.Device1.Pressure": 1.25}
    energy = {"Time": iso, "ENERGY": {"Total": 12.5, "Voltage": [231, 229, 230], "Current": [1.1, 1.2, 1.3]}}
    messages = [
        ("kepware/flat", json.dumps(flat)),
        ("tele/pm3/SENSOR", json.dumps(energy)),
        ("gw/1", json.dumps({"ts": t0 + 2, "sensors": [{"temp": 20.0}, {"temp": 20.5}]})),
        ("end", json.dumps({"ts": t0, "end": 1})),
    ]
    got, src = await read_published(mosquitto.port, subs, messages, "end/end")
    assert [(r.tag, r.value, r.timestamp) for r in got] == [
        ("kepware/flat/temp", 21.5, t0),
        ("kepware/flat/pressure", 1.25, t0),
        ("tele/pm3/SENSOR/u1", 231, t0 + 1),
        ("tele/pm3/SENSOR/u3", 230, t0 + 1),
        ("tele/pm3/SENSOR/kwh", 12.5, t0 + 1),
        ("gw/1/t2", 20.5, t0 + 2),
        ("end/end", 1, t0),
    ]
    # the third sensor is not in the message: absent, as before
    assert src.stats.errors_by_reason == {"missing_field": 1}
