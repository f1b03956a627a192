"""MqttSource against a real Mosquitto, a payload of several JSON objects, one a line (JSON lines, as Logstash's
``json_lines`` codec and loggers flushing a buffer write it) or one after another: a batch, as an array of objects
is, each object read as a message of its own with its own time. Before, the whole payload was ``malformed_json``
("Extra data"), every sample in it lost."""

from __future__ import annotations

import json
import time

from tests.support.mqtt_read import read_published


async def test_json_lines_and_concatenated_objects_are_a_batch_and_a_broken_line_is_counted_naming_it(
    mosquitto,
):
    t0 = round(time.time()) - 60
    subs = [{"topic": "lines/#"}, {"topic": "mapped/#", "json_mapping": {"values": {"m.v": "v"}}}]
    lines = "".join(json.dumps({"ts": t0 + i, "a": i}) + "\n" for i in range(3))
    glued = json.dumps({"ts": t0, "m": {"v": 1.5}}) + json.dumps({"ts": t0 + 1, "m": {"v": 2.5}})
    messages = [
        ("lines/ndjson", lines),
        ("mapped/glued", glued),
        ("lines/bom", b"\xef\xbb\xbf" + lines.replace('"a"', '"f"').encode()),  # Windows' UTF-8
        ("lines/crlf", f'{{"ts": {t0}, "b": 1}}\r\n{{"ts": {t0 + 1}, "b": 2}}'),
        # a broken line: counted, naming it; the payload's objects before it are read
        ("lines/broken", f'{{"ts": {t0}, "c": 1}}\n{{"ts": {t0 + 1}, "c": 2}}\n{{"ts": '),
        # a line that is no object: counted, naming it, as an array's item is; the others read
        ("lines/number", f'{{"ts": {t0}, "d": 1}}\n7\n'),
        # one object and something after it is a broken payload, not JSON lines: refused whole, as before
        ("lines/junk", f'{{"ts": {t0}, "e": 1}}}}'),
        ("lines/end", json.dumps({"ts": t0, "end": 1})),
    ]
    got, src = await read_published(mosquitto.port, subs, messages, "lines/end/end")
    assert [(r.tag, r.value, r.timestamp) for r in got] == [
        ("lines/ndjson/a", 0, t0),
        ("lines/ndjson/a", 1, t0 + 1),
        ("lines/ndjson/a", 2, t0 + 2),
        ("mapped/glued/v", 1.5, t0),
        ("mapped/glued/v", 2.5, t0 + 1),
        ("lines/bom/f", 0, t0),
        ("lines/bom/f", 1, t0 + 1),
        ("lines/bom/f", 2, t0 + 2),
        ("lines/crlf/b", 1, t0),
        ("lines/crlf/b", 2, t0 + 1),
        ("lines/broken/c", 1, t0),
        ("lines/broken/c", 2, t0 + 1),
        ("lines/number/d", 1, t0),
        ("lines/end/end", 1, t0),
    ]
    assert src.stats.errors_by_reason == {"malformed_json": 2, "wrong_type": 1}
    said = src.stats.last_error or ""
    assert "lines/junk" in said and "Extra data" in said


async def test_an_integer_past_pythons_digit_limit_in_json_lines_is_its_fields_fault_not_the_payloads(
    mosquitto,
):
    """A JSON line holding an integer of more digits than Python converts (4,300) is read as a payload of one such
    object is: that field the infinity of its sign, passed on BAD (``non_finite``), the line's other fields and the
    payload's other lines read. Before, the line was ``malformed_json`` (int()'s ValueError): of two lines, the
    whole payload was refused ("Extra data"), the good line lost with it."""
    t0 = round(time.time()) - 60
    long = "9" * 100_000
    messages = [
        ("lines/two", f'{{"ts": {t0}, "a": 1}}\n{{"ts": {t0 + 1}, "a": {long}, "b": 2}}'),
        ("lines/first", f'{{"ts": {t0}, "c": -{long}}}\n{{"ts": {t0 + 1}, "c": 3}}'),
        ("lines/end", json.dumps({"ts": t0, "end": 1})),
    ]
    got, src = await read_published(mosquitto.port, [{"topic": "lines/#"}], messages, "lines/end/end")
    assert [(r.tag, r.value, r.timestamp, r.quality.value) for r in got] == [
        ("lines/two/a", 1, t0, "good"),  # before: none of these but the end
        ("lines/two/a", float("inf"), t0 + 1, "bad"),
        ("lines/two/b", 2, t0 + 1, "good"),
        ("lines/first/c", float("-inf"), t0, "bad"),
        ("lines/first/c", 3, t0 + 1, "good"),
        ("lines/end/end", 1, t0, "good"),
    ]
    assert src.stats.errors_by_reason == {"non_finite": 2}
