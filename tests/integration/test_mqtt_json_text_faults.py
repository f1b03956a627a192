"""MqttSource against a real Mosquitto, JSON as devices that quote every value send a sensor's fault: with
``json_mapping.numbers_from_text`` a float written as text by Go's ``strconv.FormatFloat`` (EdgeX Foundry:
``"NaN"``, ``"+Inf"``, ``"-Inf"``), JavaScript's ``String()`` (``"Infinity"``), C's ``printf`` or Python's
``str()`` (``"nan"``, ``"inf"``), or a quoted number past float64's range, is the fault a JSON ``NaN`` is: a BAD
reading of its tag (``non_finite``), never a text reading passed on GOOD."""

from __future__ import annotations

import json
import math
import time

from devices.base import Quality
from tests.support.mqtt_read import read_published


def _shown(v):
    return "nan" if isinstance(v, float) and math.isnan(v) else v


async def test_a_non_finite_float_written_as_text_is_a_bad_reading_not_text_passed_on_good(mosquitto):
    """EdgeX Foundry quotes every reading's value, and an open thermocouple's Float64 comes as ``"NaN"``: it was
    a text reading ``'NaN'``, GOOD (a mapped field, a record) or nothing (unmapped), where the JSON ``NaN`` a
    device writes unquoted is a BAD reading of the tag. Now each such text is that fault, counted as
    ``non_finite`` naming the field, a BAD reading (``non_finite: skip``: dropped); the message's other values
    are read."""
    t0 = round(time.time()) - 60
    text = {"numbers_from_text": True}
    subs = [
        {
            "topic": "edgex/mapped",
            "json_mapping": {**text, "values": {"a": "a", "b": "b", "c": "c", "d": "d"}},
        },
        {"topic": "edgex/all", "json_mapping": text},
        {"topic": "edgex/bare", "json_mapping": text},
        {
            "topic": "edgex/records",
            "json_mapping": {
                **text,
                "records": {"array": "readings", "name": "resourceName", "value": "value"},
            },
        },
        {"topic": "edgex/end", "json_mapping": text},
    ]
    messages = [
        ("edgex/mapped", json.dumps({"ts": t0, "a": "NaN", "b": "+Inf", "c": " -infinity ", "d": "21.5"})),
        ("edgex/all", json.dumps({"ts": t0, "x": "nan", "y": "1e999", "z": "7"})),
        ("edgex/bare", json.dumps("-Inf")),
        (
            "edgex/records",
            json.dumps(
                {
                    "ts": t0,
                    "readings": [
                        {"resourceName": "T", "value": "NaN"},
                        {"resourceName": "P", "value": "1.5"},
                    ],
                }
            ),
        ),
        ("edgex/end", json.dumps({"ts": t0, "end": 1})),
    ]
    got, src = await read_published(mosquitto.port, subs, messages, "edgex/end/end")
    assert [(r.tag, _shown(r.value), r.quality, r.reason) for r in got] == [
        ("edgex/mapped/a", "nan", Quality.BAD, "non_finite"),
        ("edgex/mapped/b", math.inf, Quality.BAD, "non_finite"),
        ("edgex/mapped/c", -math.inf, Quality.BAD, "non_finite"),
        ("edgex/mapped/d", 21.5, Quality.GOOD, None),
        ("edgex/all/x", "nan", Quality.BAD, "non_finite"),
        ("edgex/all/y", math.inf, Quality.BAD, "non_finite"),
        ("edgex/all/z", 7, Quality.GOOD, None),
        ("edgex/bare", -math.inf, Quality.BAD, "non_finite"),
        ("edgex/records/T", "nan", Quality.BAD, "non_finite"),
        ("edgex/records/P", 1.5, Quality.GOOD, None),
        ("edgex/end/end", 1, Quality.GOOD, None),
    ]
    assert src.stats.errors_by_reason == {"non_finite": 7}


async def test_under_non_finite_skip_a_nan_written_as_text_is_dropped_and_a_text_that_is_no_number_stays_text(
    mosquitto,
):
    """``non_finite: skip`` drops the quoted NaN as it drops a JSON NaN (counted); text that writes no number
    (``"n/a"``, ``"Nano"``) is a text reading of a mapped field, as before."""
    t0 = round(time.time()) - 60
    subs = [
        {
            "topic": "dev/#",
            "json_mapping": {"numbers_from_text": True, "values": {"a": "a", "b": "b", "c": "c"}},
        }
    ]
    messages = [("dev/1", json.dumps({"ts": t0, "a": "NaN", "b": "n/a", "c": "Nano"}))]
    got, src = await read_published(mosquitto.port, subs, messages, "dev/1/c", non_finite="skip")
    assert [(r.tag, r.value, r.quality) for r in got] == [
        ("dev/1/b", "n/a", Quality.GOOD),
        ("dev/1/c", "Nano", Quality.GOOD),
    ]
    assert src.stats.errors_by_reason == {"non_finite": 1}


async def test_a_nan_written_as_text_unread_is_said_to_be_a_fault_not_a_state_to_map_to_a_number(mosquitto):
    """Read for every number without ``numbers_from_text``, a device's quoted ``"NaN"`` is a text field left
    unread; the ``text_field_unread`` line took it for a state word and said to map it in ``states``
    (``states: {'NaN': 1}``), which would pass the sensor's fault on as the number 1, GOOD. It now names the
    setting that reads it as the fault it is: ``numbers_from_text``, a BAD reading."""
    t0 = round(time.time()) - 60
    messages = [("dev/2", json.dumps({"ts": t0, "temp": "NaN", "end": 1}))]
    got, src = await read_published(mosquitto.port, [{"topic": "dev/#"}], messages, "dev/2/end")
    assert [(r.tag, r.value) for r in got] == [("dev/2/end", 1)]
    said = src.notices.messages["text_field_unread"]
    assert "'temp'" in said and "numbers_from_text: true" in said and "states" not in said
