"""Sparkplug B interop with Eclipse Tahu's JavaScript codec (npm `sparkplug-payload`, via node).

Skipped with a reason when node or the npm package is absent (`.ci/interop-peers` installs it).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from protocols import sparkplug as sp
from tests.support.sparkplug_pb import pb_metric

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).parent / "interop" / "sparkplug_codec.js"
TAHU = ROOT / "interop" / "node_modules" / "sparkplug-payload"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("node") is None, reason="node not installed; needed for the Tahu interop peer"
    ),
    pytest.mark.skipif(not TAHU.exists(), reason="Tahu sparkplug-payload absent; run .ci/interop-peers"),
]


def tahu(req: dict) -> dict:
    r = subprocess.run(
        ["node", str(SCRIPT)], input=json.dumps(req), capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_payload_encoded_here_decodes_in_tahu():
    D = sp.DataType
    p = sp.Payload(
        1_700_000_000_123,
        7,
        [
            sp.Metric("temperature", 3, D.DOUBLE, 21.25),
            sp.Metric("count", 4, D.INT32, -5),
            sp.Metric("total", 5, D.INT64, -7),
            sp.Metric("ok", 6, D.BOOLEAN, True),
            sp.Metric("state", 7, D.STRING, "running é"),
            sp.Metric("speed", 8, D.FLOAT, 0.5),
            sp.Metric("big", 9, D.UINT64, 2**40),
        ],
    )
    got = tahu({"op": "decode", "b64": base64.b64encode(sp.encode(p)).decode()})
    assert got["timestamp"] == "1700000000123" and got["seq"] == "7"
    m = {x["name"]: x for x in got["metrics"]}
    assert m["temperature"] == {"name": "temperature", "alias": "3", "type": "Double", "value": 21.25}
    assert (m["count"]["type"], m["count"]["value"]) == ("Int32", -5)
    # Tahu returns negative Int64 as unsigned (FIELD-NOTES); the two's complement bits agree
    assert m["total"]["type"] == "Int64" and int(m["total"]["value"]) == 2**64 - 7
    assert m["ok"]["value"] is True and m["state"]["value"] == "running é"
    assert m["speed"]["value"] == 0.5 and m["big"]["value"] == str(2**40)


def test_payload_encoded_by_tahu_decodes_here_byte_for_byte():
    req = {
        "timestamp": 1_700_000_000_000,
        "seq": 4,
        "metrics": [
            {"name": "t", "alias": 3, "type": "Double", "value": 1.5},
            {"name": "i", "type": "Int32", "value": -5},
            {"name": "l", "type": "Int64", "value": -7},
            {"name": "b", "type": "Boolean", "value": True},
            {"name": "s", "type": "String", "value": "hé"},
            {"name": "f", "type": "Float", "value": 0.5},
        ],
    }
    raw = base64.b64decode(tahu({"op": "encode", "payload": req})["b64"])
    p = sp.decode(raw)
    assert (p.timestamp_ms, p.seq) == (1_700_000_000_000, 4)
    assert [(m.name, m.value) for m in p.metrics] == [
        ("t", 1.5),
        ("i", -5),
        ("l", -7),
        ("b", True),
        ("s", "hé"),
        ("f", 0.5),
    ]
    assert p.metrics[0].alias == 3
    assert sp.encode(p) == raw


def test_rebirth_request_decodes_in_tahu():
    _, body = sp.rebirth_request("plant", "edge0", now_ms=1)
    (m,) = tahu({"op": "decode", "b64": base64.b64encode(body).decode()})["metrics"]
    assert (m["name"], m["type"], m["value"]) == ("Node Control/Rebirth", "Boolean", True)


def test_templates_encoded_by_tahu_decode_here_and_ours_decode_in_tahu():
    """Template metrics (Ignition UDTs), both ways: an instance with a nested member from Tahu's encoder,
    and a command-shaped instance carrying one member from ours."""
    req = {
        "timestamp": 5,
        "seq": 1,
        "metrics": [
            {
                "name": "Motor1",
                "alias": 10,
                "type": "Template",
                "value": {
                    "templateRef": "Motor",
                    "isDefinition": False,
                    "metrics": [
                        {"name": "Speed", "type": "Float", "value": 1500.0},
                        {"name": "Temp", "type": "Int32", "value": -3},
                        {
                            "name": "Bearing",
                            "type": "Template",
                            "value": {
                                "templateRef": "Bearing",
                                "isDefinition": False,
                                "metrics": [{"name": "Vib", "type": "Double", "value": 0.5}],
                            },
                        },
                    ],
                },
            }
        ],
    }
    p = sp.decode(base64.b64decode(tahu({"op": "encode", "payload": req})["b64"]))
    (m,) = p.metrics
    assert (m.name, m.alias, m.datatype, m.value.ref, m.value.is_definition) == (
        "Motor1",
        10,
        sp.DataType.TEMPLATE,
        "Motor",
        False,
    )
    speed, temp, bearing = m.value.metrics
    assert (speed.name, speed.value, temp.name, temp.value) == ("Speed", 1500.0, "Temp", -3)
    assert bearing.value.ref == "Bearing" and [(x.name, x.value) for x in bearing.value.metrics] == [
        ("Vib", 0.5)
    ]

    ours = sp.Payload(
        6,
        None,
        [
            sp.Metric(
                "Motor1",
                None,
                sp.DataType.TEMPLATE,
                sp.Template([sp.Metric("Speed", None, sp.DataType.FLOAT, 1200.5)], ref="Motor"),
            )
        ],
    )
    (got,) = tahu({"op": "decode", "b64": base64.b64encode(sp.encode(ours)).decode()})["metrics"]
    assert (got["name"], got["type"], got["value"]["templateRef"]) == ("Motor1", "Template", "Motor")
    assert got["value"]["isDefinition"] is False
    (member,) = got["value"]["metrics"]
    assert (member["name"], member["type"], member["value"]) == ("Speed", "Float", 1200.5)


def test_a_quality_property_encoded_by_tahu_is_read_here():
    req = {
        "timestamp": 7,
        "metrics": [
            {
                "name": "a",
                "type": "Double",
                "value": 1.0,
                "properties": {"Quality": {"type": "Int32", "value": -2147483132}},
            },
            {
                "name": "b",
                "type": "Double",
                "value": 2.0,
                "properties": {"Quality": {"type": "Int32", "value": 192}},
            },
            {"name": "c", "type": "Double", "value": 3.0},
        ],
    }
    p = sp.decode(base64.b64decode(tahu({"op": "encode", "payload": req})["b64"]))
    assert [(m.name, m.quality, sp.quality_of(m.quality)) for m in p.metrics] == [
        ("a", -2147483132, "bad"),  # Ignition 8's Bad_Stale
        ("b", 192, "good"),
        ("c", None, "good"),
    ]


def test_tahu_reads_a_metric_by_its_datatypes_field_only():
    """Why a value in another field than its datatype's is refused here (wrong_type,
    test_sparkplug_value_fields.py): Tahu reads the field Sparkplug gives the datatype and nothing else, so a
    Float carrying int_value, a Boolean int_value or a String a double has no value there (an Int32 carrying a
    double reads 0), nor an Int64 carrying int_value. A UInt32 in long_value is read (Tahu writes it there; the
    specification says uint32)."""
    D = sp.DataType
    p = sp._pb().Payload()
    p.timestamp, p.seq = 1, 0
    pb_metric(p, "F", alias=1, datatype=D.FLOAT, int_value=21)
    pb_metric(p, "B", alias=2, datatype=D.BOOLEAN, int_value=1)
    pb_metric(p, "S", alias=3, datatype=D.STRING, double_value=3.5)
    pb_metric(p, "I", alias=4, datatype=D.INT32, double_value=2.5)
    pb_metric(p, "U", alias=5, datatype=D.UINT32, long_value=7)
    pb_metric(p, "L", alias=6, datatype=D.INT64, int_value=4294967295)  # -1 cut to 32 bits, or the number
    got = tahu({"op": "decode", "b64": base64.b64encode(p.SerializeToString()).decode()})
    assert [(m["name"], m["type"], m["value"]) for m in got["metrics"]] == [
        ("F", "Float", None),
        ("B", "Boolean", None),
        ("S", "String", None),
        ("I", "Int32", 0),
        ("U", "UInt32", "7"),
        ("L", "Int64", None),  # neither -1 nor 4294967295: refused here (test_sparkplug_value_fields.py)
    ]
