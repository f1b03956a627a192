"""Decode JSON sensor payloads into ``(tag, value, timestamp)`` triples by a mapping.

A ``JsonMapping`` says which fields are values (field path -> tag name; dotted paths reach
nested objects and, by a whole number, an array's items; a key holding dots is found as written) and which field holds the timestamp (epoch seconds, milliseconds, microseconds,
nanoseconds or ISO 8601). Without value mappings every numeric top-level field (bool excluded) becomes a
tag named after the field, and a payload that is a bare number (``21.5``, as Shelly, ESPHome and
Zigbee2MQTT publish one value per topic) one tag named ``""``. Arrays of numbers become 1-D float64 NumPy arrays (waveforms);
an array of whole numbers holding one past 2**53 (Int64/UInt64 ids, counters) an int64 (else uint64) array, exact.
Every failure is a ``CodecError(reason, detail)`` with a stable ``reason`` key:
``malformed_json``, ``wrong_type``, ``missing_field``, ``non_finite``, ``bad_timestamp``,
``duplicate_key`` (a key given twice in one object: parsers disagree on which value counts),
``too_many_values`` (over ``MAX_VALUES`` fields or records in one message).
A JSON integer past float64's range (also one of more digits than Python converts, 4,300) is ``non_finite``.
``compile_decoder(..., keep_non_finite=True)`` keeps a NaN or infinite value (reported as ``non_finite``)
for the caller to pass on as a BAD reading, as the MQTT source does under ``non_finite: bad``.
ISO 8601 times without a zone are in ``JsonMapping.timezone`` (UTC unless set: Tasmota's ``Time`` is the
device's local time); a date alone (``"2026-12-04"``) is ``bad_timestamp``: no instant, which ``fromisoformat``
reads as midnight, and so is the hour alone (``"2026-12-05T10"``, ``coarse_time``), which it reads as 10:00:00, and a
UTC offset no time zone has (``+15:00``, outside -12:00..+14:00, or with seconds: ``offset_problem``). A
timestamp field that is null is taken as absent (the receive time);
an epoch time quoted as text (``"1701388800123"``) is read as its number.
A waveform's sample rate may ride in the payload (``{"v": [...], "sample_rate_hz": 25600}``):
``JsonMapping.rate_field`` names the field (``auto``: the first of ``RATE_FIELDS`` present), and
``compile_decoder(..., rates=True)`` gives it as a fourth element of each array value's tuple.
``JsonMapping.numbers_from_text``: a value that is a number written as text (``"21.5"``, as EdgeX and devices that
quote every value send it) is read as that number, and a float's fault so written (``"NaN"``, ``"+Inf"``) as that
NaN or infinity, ``non_finite`` as a JSON ``NaN`` is; off, text stays text (a part number "0012" keeps its zeros).
``JsonMapping.states`` (text -> number, matched in any case, spaces around ignored): a text value that is a state
(``{"state": "ON"}``, Zigbee2MQTT and ESPHome; Shelly's "on"; "open"/"closed") is read as its number, as is a
payload that is the text alone (Tasmota's ``stat/<dev>/POWER`` "ON", not JSON; a JSON string ``"ON"``), and a
JSON true/false under the keys ``"true"``/``"false"``. Unknown text: every-number mode reads no text (as
always); a mapped field's or record's is ``unknown_state`` (reported and skipped) unless ``unknown_state`` is
"text"; a plain payload's is ``unknown_state``. Without ``states`` nothing changes: text is never made a number
by default, a JSON true/false stays a bool (a mapped field's reading) or is not read (every-number mode).
``time_field_hint`` names a field that looks like the message's time when ``timestamp_field`` is not in it.
A payload that is an array of objects is a batch of messages (a gateway's buffered samples): each object
is read as one, with its own time; a bad one is reported and skipped (``on_record_error``), or raised.
``JsonMapping.opcua_pubsub`` reads OPC UA PubSub JSON messages (Part 14): every field of every DataSetMessage's
Payload, with its own time and StatusCode (``PubsubMapping``); ua-metadata gives nothing; and Azure OPC
Publisher's legacy Samples messages (one monitored item per object), each a reading of its node, told from
PubSub by shape (``_sample_shaped``); an event's sample is reported as ``event_unread``.
Without ``values`` every text field that gives no reading is told to ``on_text_unread`` (``text_field_hint``).
A quality may be a whole float (192.0, read as 192) or, in the conventions that name the number, an OPC UA
StatusCode as hex text ("0x80000000"); a fraction is no quality. A record's quality other than "good" is a
``Status`` (it equals "bad" or "uncertain") whose ``reason`` says why: the device's own word where it sent one
("BadNotConnected", "Bad_Stale", a StatusCode's Symbol), else the name of its number in its convention
(``protocols.quality_names``), ``non_finite`` for a NaN or infinite value kept as BAD (whose record said no
other reason: a quality not good keeps its name, as the OPC UA source keeps a status's).
Limits: no JSONPath beyond dotted keys and array indexes.

Outgoing: ``dumps`` writes what strict JSON parsers accept (browsers, Node-RED, Jackson, Go, PostgreSQL's
jsonb): Python's ``json`` writes NaN and infinities as bare ``NaN``/``Infinity``, which are not JSON, so
they become ``null`` (a BAD-quality reading keeps its quality field beside it). Bytes (an OPC UA ByteString
reading) are written as base64 text, as OPC UA's JSON encoding writes a ByteString.
"""

from __future__ import annotations

import base64
import enum
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from protocols import quality_names
from protocols.topics import shown_topic


class CodecError(ValueError):
    """A payload that cannot be decoded; ``reason`` is a stable key for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TimestampFormat(enum.StrEnum):
    EPOCH_S = "epoch_s"
    EPOCH_MS = "epoch_ms"
    EPOCH_US = "epoch_us"
    EPOCH_NS = "epoch_ns"
    ISO8601 = "iso8601"


_UNIT_NAME = {
    TimestampFormat.EPOCH_S: "seconds",
    TimestampFormat.EPOCH_MS: "milliseconds",
    TimestampFormat.EPOCH_US: "microseconds",
    TimestampFormat.EPOCH_NS: "nanoseconds",
}
# units per second of each epoch format
_SCALE = {
    TimestampFormat.EPOCH_S: 1,
    TimestampFormat.EPOCH_MS: 1_000,
    TimestampFormat.EPOCH_US: 1_000_000,
    TimestampFormat.EPOCH_NS: 1_000_000_000,
}


@dataclass(frozen=True)
class RecordsMapping:
    """A message that carries many tags as an array of records, as OPC/IoT gateways publish them
    (Kepware IoT Gateway: ``{"timestamp": ms, "values": [{"id", "v", "q", "t"}]}``; Siemens Industrial
    Edge: ``{"vals": [{"id", "val", "qc", "ts"}]}``; a template's bare array ``[{...}, ...]``).
    ``array``: the path of the array ("" = the payload is the array); ``name``/``value``: each record's
    tag name and value (each of a record's four fields a key or a dotted path in it: Azure OPC Publisher's
    ``Value.Value``, ``Value.SourceTimestamp``, ``Value.StatusCode``); ``timestamp``: the record's time (the mapping's ``timestamp_format``; absent or
    null: the message's ``timestamp_field``, else the receive time); ``quality``: optional, true/false,
    "good"/"uncertain"/"bad" (any case, as a prefix), or a number: 0-3 as Siemens' qc (0 bad,
    1 uncertain, 2-3 good), else OPC DA's quality bits (192+ good, 64-191 uncertain, below bad); a negative
    number or one past 16 bits is no quality (the record is skipped as ``wrong_type``, its message naming
    ``quality_format: opcua`` when the number reads as an OPC UA StatusCode). ``quality_format`` names the
    convention of a bare number (also a whole float, 192.0; a fraction is none) where conventions collide
    (0 is Siemens' bad and OPC UA's Good); hex text ("0x80000000") is read as its number except in ``auto``:
    ``opcua`` reads it as a 32-bit OPC UA StatusCode (its top two bits: 00 good, 01 uncertain, 1x bad;
    Ignition 8's QualityCode, negative as a signed 32-bit int, the same), ``opcda`` as OPC DA's 16 bits
    (0-3 bad), ``siemens`` as Siemens' qc 0-3 only. An object is an OPC UA StatusCode in every convention:
    Part 6's JSON ``{"Code": 2156527616, "Symbol": "BadNotConnected"}`` (``{}``: Good, the Code omitted),
    node-opcua's (Node-RED) ``{"value": 0}``, or one with a ``name``/``Symbol`` alone."""

    array: str = "values"
    name: str = "id"
    value: str = "v"
    timestamp: str | None = "t"
    quality: str | None = "q"
    quality_format: str = "auto"  # one of QUALITY_FORMATS


@dataclass(frozen=True)
class PubsubMapping:
    """OPC UA PubSub JSON messages (Part 14, 7.2.5): NetworkMessages ``{"MessageType": "ua-data",
    "PublisherId", "Messages": [DataSetMessage, ...]}``, a DataSetMessage alone (``{"DataSetWriterId",
    "Timestamp", "Status", "Payload": {...}}``), an array of either, or a DataSetMessage without its header
    (the Payload object itself). Each field of a Payload (an object keyed by field name) is one reading: a
    bare value (the non-reversible encoding), a Variant (reversible: ``{"Type": 11, "Body": 21.5}``; 1.05's
    verbose ``{"UaType": 11, "Value": 21.5}``) or a DataValue (``{"Value", "SourceTimestamp",
    "StatusCode"}``, its Value a bare value or a Variant). A field's time: its SourceTimestamp, else its
    DataSetMessage's Timestamp, else the receive time; its quality: its StatusCode (an OPC UA StatusCode,
    a number or Part 6's ``{"Code", "Symbol"}``), else its DataSetMessage's Status, else good. ``ua-metadata``
    (and every other ``ua-`` message type: keep-alives, status, discovery) gives no reading and no error.
    ``tag``: the tag of a field, a template of ``{field}``, ``{writer}`` (the DataSetWriterId, else the
    DataSetWriterName) and ``{publisher}`` (the PublisherId).
    Azure OPC Publisher's Samples messages (no PubSub header; alone or in an array): an object of a text
    ``NodeId`` and a DataValue object under ``Value`` is one reading, ``{field}`` its DisplayName, else its
    NodeId, ``{writer}``/``{publisher}`` from its ``ExtensionFields``, its time the Value's SourceTimestamp,
    else its ``Timestamp``; only an object of a sample's keys is one (a PubSub header key makes it PubSub;
    another key, either: ``wrong_type``). A sample whose Value holds an OPC UA event's fields (no DataValue)
    is reported as ``event_unread`` and gives no reading."""

    tag: str = "{field}"


PUBSUB_PLACEHOLDERS = ("field", "writer", "publisher")


@dataclass
class JsonMapping:
    records: RecordsMapping | None = None  # tags as an array of records instead of fields
    opcua_pubsub: PubsubMapping | None = None  # OPC UA PubSub JSON (Part 14) instead of fields
    values: dict[str, str] = field(default_factory=dict)  # field path -> tag name
    timestamp_field: str | None = "ts"
    timestamp_format: TimestampFormat = TimestampFormat.EPOCH_S
    tag_prefix: str = ""  # prepended to every tag, e.g. the topic
    # a name the payload gives (a key read unmapped, a record's name, a PubSub field, writer or publisher) is
    # one level of its tag, after the topic (``tag_level``): no name of one topic's payload names another's tag
    escape_names: bool = False
    rate_field: str | None = (
        "auto"  # an array's sample rate in Hz: a field path, "auto" (RATE_FIELDS) or None
    )
    timezone: str = "UTC"  # the zone of an ISO 8601 time that states none (an IANA name)
    numbers_from_text: bool = (
        False  # a value that is a number written as text ("21.5") is read as that number
    )
    # state text -> number ({"on": 1, "off": 0}): a text value (any case, spaces around it ignored), a plain
    # text payload ("ON", Tasmota's POWER) and, under the keys "true"/"false", a JSON true/false read as it
    states: dict[str, int | float] = field(default_factory=dict)
    unknown_state: str = "skip"  # a mapped field's or record's text not in states: "skip" (counted) | "text"


RATE_FIELDS = ("sample_rate_hz", "rate_hz", "sampling_rate_hz", "fs_hz")


def zone(name: str) -> tzinfo:
    """The zone an ISO 8601 time without one is read in: UTC (no tz database needed) or an IANA name
    (``zoneinfo.ZoneInfoNotFoundError``, a ``KeyError``, for an unknown one; instances are cached)."""
    if name in ("UTC", "Etc/UTC", "Z"):
        return UTC
    return ZoneInfo(name)


def _unit_of(v: float) -> str:
    """The epoch unit in which ``v`` is a date of this century (2001-2286): the format to suggest."""
    a = abs(v)
    return "epoch_s" if a < 1e11 else "epoch_ms" if a < 1e14 else "epoch_us" if a < 1e17 else "epoch_ns"


# A timestamp in the wrong unit is refused rather than taken: milliseconds read as seconds land past the
# year 50000 (and past what datetime can hold); seconds read as milliseconds land in January 1970. Uptime
# counters of devices without a clock (small numbers either way) pass.
SECONDS_MAX = 1e11  # epoch seconds: the year 5138
MS_LOOKS_LIKE_S = (1e9, 1e10)  # epoch milliseconds that are this century's epoch seconds (2001-2286)
# ... refused as such when, in the smaller unit, within this of the receive time (a day: a device's clock off)
WRONG_UNIT_NEAR_S = 86_400.0


_MISSING = object()
# a number written as text, as devices that quote every value send it (EdgeX's readings, "21.5", " 1e3 "); a
# decimal comma ("12,5") is not one: it could as well be a thousands separator ("1,250")
_TEXT_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*\Z")


def _text_number(v: Any) -> Any:
    """``v`` as the number it writes, if it is text writing a finite one; else ``v`` unchanged."""
    if type(v) is not str or len(v) > 64:
        return v
    m = _TEXT_NUMBER.match(v)
    if m is None:
        return v
    try:
        if "." not in v and "e" not in v and "E" not in v:
            return int(v)
        f = float(v)
    except ValueError:  # a space \s matches that int() and float() do not strip (U+001C-U+001F): text
        return v
    return f if math.isfinite(f) else v


# a float's fault written as text: Go's strconv.FormatFloat (EdgeX: "NaN", "+Inf", "-Inf"), JavaScript's String()
# ("Infinity"), C's printf and Python's str() ("nan", "-nan", "inf")
_TEXT_NON_FINITE = re.compile(r"\s*[+-]?(?:nan|inf(?:inity)?)\s*\Z", re.IGNORECASE)


def _text_value(v: Any) -> Any:
    """``_text_number(v)``, and a text writing a NaN, an infinity or a number past float64's range (``"NaN"``,
    ``"+Inf"``, ``"1e999"``) as that float, for the caller to take as the fault a JSON ``NaN`` is: a value
    read from text (``numbers_from_text``), never a time, a rate or a quality, which have no fault to pass."""
    n = _text_number(v)
    if n is not v or type(v) is not str or len(v) > 64:
        return n
    if _TEXT_NON_FINITE.match(v) is None and _TEXT_NUMBER.match(v) is None:
        return v
    try:
        return float(v)  # a number _text_number read no finite one of: an infinity
    except ValueError:  # a separator character around it (U+001C-U+001F), as _text_number's: text
        return v


def state_key(text: str) -> str:
    """The form in which ``JsonMapping.states`` keys and values sent are matched: any case, no spaces around."""
    return text.strip().casefold()


def _state_lookup(mapping: JsonMapping) -> Callable[[Any], Any] | None:
    """``f(v)``: a value as the number ``states`` (or ``numbers_from_text``) reads it, else ``v`` itself;
    None when neither is set (values are read as they come)."""
    if not mapping.states:
        return _text_value if mapping.numbers_from_text else None
    states = {state_key(k): v for k, v in mapping.states.items()}
    on, off = states.get("true"), states.get("false")
    ntext = mapping.numbers_from_text

    def lookup(v: Any) -> Any:
        tv = type(v)
        if tv is str:
            got = states.get(state_key(v)) if len(v) <= 64 else None
            if got is not None:
                return got
            return _text_value(v) if ntext else v
        if tv is bool:
            got = on if v else off
            return v if got is None else got
        return v

    return lookup


def _known_states(mapping: JsonMapping) -> str:
    names = list(mapping.states)
    return ", ".join(repr(k) for k in names[:8]) + (", ..." if len(names) > 8 else "")


def _converter(mapping: JsonMapping) -> Callable[[str, Any], Any]:
    """``conv(path, v)`` for a mapped field or a record's value: ``_state_lookup``'s reading; a text that is no
    state is ``unknown_state`` (reported, skipped) unless ``mapping.unknown_state`` is "text"."""
    lookup = _state_lookup(mapping)
    if lookup is None:
        return _path_same
    if not mapping.states or mapping.unknown_state == "text":
        return lambda path, v: lookup(v)
    known = _known_states(mapping)

    def conv(path: str, v: Any) -> Any:
        got = lookup(v)
        if got is v and type(v) is str:
            raise _unknown_state(path, v, known, "set json_mapping.unknown_state: text")
        return got

    return conv


def _unknown_state(path: str, v: str, known: str, text: str) -> CodecError:
    return CodecError(
        "unknown_state",
        f"field {shown_topic(path)} is {v[:40]!r}, no text of json_mapping.states ({known}); skipped: add it to "
        f"states, or {text} to read it as text",
    )


def _path_same(path: str, v: Any) -> Any:
    return v


# values one message may give: a few bytes each, 8 MB of JSON holds 700,000, which took 5 s of the agent's
# loop to turn into readings (every other source and the status page waited)
MAX_VALUES = 100_000


def _too_many(what: str) -> CodecError:
    return CodecError(
        "too_many_values", f"{what} in one message, over {MAX_VALUES}: skipped rather than hold the agent"
    )


# Keys (in all its objects) and objects and arrays one payload may hold to be parsed at all. Parsing is one C call
# that holds the GIL throughout (no worker thread frees the loop from it): an 8-MB object of 700,000 keys held
# the agent's loop 1.6 s before it was refused as too_many_values, 2,000,000 nested [1] arrays 2 s. Sized so that
# a batch of MAX_VALUES records or fields of the widest shapes read (docs/mqtt.md), refused as too_many_values
# after parsing only past that count, is parsed: a Kepware record {id, v, q, t} holds 4 keys, an OPC UA PubSub
# field 4 as a DataValue {Value, SourceTimestamp, StatusCode}, 6 with a Variant {Type, Body} as its Value; an OPC
# Publisher sample is 4 objects (its Value, StatusCode and ExtensionFields). At twice MAX_VALUES, 50,000 Kepware
# records or 70,000 PubSub fields, a gateway's store-and-forward flush, were refused whole.
MAX_KEYS = 6 * MAX_VALUES
MAX_CONTAINERS = 4 * MAX_VALUES
# strings the count walks at most (about 1.5 us each, in a worker thread): an 8-MB array of 1,600,000 strings
# holding a ':' each took 2.5 s to count (then 0.4 s of the loop to parse). A batch of 100,000 records of eight
# strings each (four keys, a name, a text value and quality, an ISO time, whose ':' send it to be walked) is within it
MAX_STRINGS = 8 * MAX_VALUES
# keys one object may hold to be parsed: more fields than one message may give (MAX_VALUES), no reading's shape. An
# object's keys and text values do not call back into Python as it is parsed, so an 8-MB object of 599,999 keys of
# text (within MAX_KEYS) held the GIL, the agent's loop with it, 1-2.4 s before it was refused as too_many_values
# once parsed. Told by the count (a ':' outside strings is a key): more keys than MAX_OBJECT_KEYS times the objects;
# a payload of no more ':' after a '"' or whitespace (a key's follows one of them, whatever the printer) than
# MAX_OBJECT_KEYS is not walked. Past that, each object's keys are counted by the payload's structure in NumPy
# (``largest_object``): bounding the objects by the '{' bytes (strings' included) passed an object of 599,999 keys
# whose text held a few '{' or beside a few small objects (parsed: the loop held 0.2-1.3 s). The string walk in
# Python, exact too, took 2.3-2.7 s for a batch of 99,999 Kepware records or PubSub fields; NumPy 0.1-0.2 s loaded
MAX_OBJECT_KEYS = MAX_VALUES
# a JSON string from its opening quote, whole (escapes included); between two of them lies structure only
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)


def too_many_to_parse(payload: bytes) -> CodecError | None:
    """``too_many_values`` when UTF-8 JSON ``payload`` holds over ``MAX_KEYS`` keys, or over ``MAX_CONTAINERS``
    objects and arrays, or an object of more keys than ``MAX_OBJECT_KEYS`` (``largest_object``, run when its keys
    are more than that and no more than that times its objects: else one of them holds more), counted without
    parsing it (a ``:``, ``{`` or ``[`` inside a string does not count), or, holding more of those
    bytes than the bounds, over ``MAX_STRINGS`` strings; else None. Made to run in a worker
    thread: the count walks the payload string by string in Python, so the event loop gets its turn every switch
    interval (a C scan would hold the GIL as the parse does), and it stops once past a bound. A payload with no
    more ``:``, ``{`` and ``[`` bytes than the bounds is passed after a C count (and ``largest_object``'s, in
    NumPy, for over ``MAX_OBJECT_KEYS`` keys); one holding a NUL byte is passed
    unscanned when UTF-16 or UTF-32 JSON (whose strings this does not find), else counted up to its first NUL (no
    parse reads past it) and ``malformed_json`` when that is past the bounds.

    A string is matched only where one opens (the next quote past the last string's end), never searched for: a
    search tried again from every quote of a payload of unterminated ones (200 KB of ``\\"`` then ':'), each try
    to its end, 24 s at 204 KB in one C call holding the GIL. A string that never ends ends the count (what
    follows is inside it): no JSON, the parse refuses it at once (``malformed_json``)."""
    count = payload.count
    colons, braces = count(b":"), count(b"{")
    # (the braces, strings' included, are at least the objects: more keys than that bound, one object has too many)
    most_keys = min(MAX_KEYS, MAX_OBJECT_KEYS * max(braces, 1))
    if colons <= MAX_KEYS and braces + count(b"[") <= MAX_CONTAINERS:
        # a key's ':' follows its closing '"' or whitespace (JSON allows any before it: '" :' as Jackson's pretty
        # printer writes it, a tab, a line break): where those are few, the ':' are in strings (ISO times), no
        # object has too many keys, and the payload is not walked for it (150,000 ISO times in one object took
        # 0.4-0.7 s of the one decode thread to walk, 22-60 ms to count). Counting '":' and '" :' alone passed
        # an object of 480,000 keys written '"k"\t:' or '"k"  :' unwalked (0.56-0.83 s of the GIL parsed)
        key_colons = count(b'":') + count(b" :") + count(b"\t:") + count(b"\n:") + count(b"\r:")
        if colons <= most_keys or key_colons <= most_keys:
            # none of its objects holds more than MAX_OBJECT_KEYS when it holds no more keys than that, else told by
            # its structure (the '{' bytes passed an object of 599,999 keys beside five '{}'); one holding a NUL
            # (UTF-16/32 JSON, or UTF-8 counted up to it) below
            if key_colons <= MAX_OBJECT_KEYS:
                return None
            if 0 not in payload:
                if largest_object(payload) <= MAX_OBJECT_KEYS:
                    return None
                return _unparsed(f"an object of over {MAX_OBJECT_KEYS} keys", payload)
    if 0 in payload:
        enc = json.detect_encoding(payload)
        if enc not in ("utf-8", "utf-8-sig"):  # UTF-8 with a byte-order mark is read as UTF-8 (json.loads)
            return None  # UTF-16 or UTF-32 JSON, whose strings this does not find: passed unscanned
        # no parse reads past a NUL in UTF-8 (never valid JSON, in a string or out): what is before it is bounded,
        # its JSON lines read as before; past the bounds, refused as the parse would, without it (it passed any
        # such payload unscanned: 2,000,000 [1] arrays and a NUL held the GIL 2 s, to be malformed_json)
        nul = payload.index(0)
        if too_many_to_parse(payload[3 if enc == "utf-8-sig" else 0 : nul]) is None:
            return None
        return CodecError(
            "malformed_json",
            f"a NUL byte at {nul} of {len(payload)} bytes, never in UTF-8 JSON, in {_show(payload)}: refused "
            "unparsed (what is before it is too large to parse)",
        )
    find, match = payload.find, _JSON_STRING.match
    keys = containers = objects = at = strings = 0
    while True:
        start = find(b'"', at)
        end = len(payload) if start < 0 else start
        keys += count(b":", at, end)
        opened = count(b"{", at, end)
        objects += opened
        containers += opened + count(b"[", at, end)
        if start < 0 or keys > most_keys or containers > MAX_CONTAINERS or strings > MAX_STRINGS:
            break
        m = match(payload, start)
        if m is None:  # unterminated: the rest is inside it
            break
        at = m.end()
        strings += 1
    if keys > MAX_KEYS:
        what = f"over {MAX_KEYS} keys"
    elif containers > MAX_CONTAINERS:
        what = f"over {MAX_CONTAINERS} objects and arrays"
    elif strings > MAX_STRINGS:
        what = f"over {MAX_STRINGS} strings"
    elif keys > MAX_OBJECT_KEYS * max(objects, 1) or (
        keys > MAX_OBJECT_KEYS and largest_object(payload) > MAX_OBJECT_KEYS
    ):
        what = f"an object of over {MAX_OBJECT_KEYS} keys"
    else:
        return None
    return _unparsed(what, payload)


def _unparsed(what: str, payload: bytes) -> CodecError:
    return CodecError(
        "too_many_values",
        f"{what} in one message ({len(payload)} bytes), refused unparsed: parsing it would hold the agent; "
        f"publish its values in smaller messages, or as an array of records (json_mapping.records) of at most "
        f"{MAX_VALUES}",
    )


# the payload is looked through this many bytes at a time (the arrays of a window take 12-28 times its size)
_WINDOW = 1 << 18


def largest_object(payload: bytes) -> int:
    """The most keys one object of UTF-8 JSON ``payload`` holds (its ``:`` outside strings, by the object they are
    in), counted without parsing it: in NumPy, over windows of 256 KiB of its bytes (the in-string state and a
    trailing backslash run's parity carried across), keeping only the depth of its ``{ [ :`` outside strings (as
    many as the count lets through), then a sort of those. For 8 MiB, a tracemalloc peak of 3-12 MiB (0.4-1.7 times
    the payload); looked at whole, in int64 positions of every quote and mark, it took 75-228 MiB (10-29 times) and
    the decode thread's arena kept 63 MiB of it, 3 now. The string parity is taken by ``logical_xor.accumulate``,
    with the GIL released (a cumulative sum of the quotes held it 48-465 ms); 8 MiB take 0.08-0.2 s of the decode
    thread on a loaded 2-core machine, the loop's worst gap while it runs 14-53 ms. A string is told by its quotes
    (one after an odd run of backslashes is escaped); malformed JSON is counted as it stands (an unterminated
    string: the rest is in it; a ``:`` in an array: the array's key), never refused here (the parse says so). Exact
    where the ``{`` bytes only bound the objects from above (strings' included, empty ones beside a large object),
    which let an object of 599,999 keys past the count."""
    a = np.frombuffer(payload, np.uint8)
    in_string = False
    odd_tail = False  # the window before ended in a run of backslashes of odd length (counted across windows)
    level = 0  # the depth at the window's start
    depths: list[np.ndarray] = [np.zeros(0, np.int32)]
    openers: list[np.ndarray] = [np.zeros(0, bool)]
    for s in range(0, len(a), _WINDOW):
        w = a[s : s + _WINDOW]
        quote = w == 0x22
        back = w == 0x5C
        if odd_tail and quote[0]:
            quote[0] = False  # escaped by the window before's backslashes
        # quotes right after a backslash: escaped when the run of backslashes before them is odd (positions of run
        # starts and of such quotes only: a payload of backslashes costs no array of each one's position)
        after = np.flatnonzero(back[:-1] & quote[1:]) + 1
        if len(after):
            starts = np.flatnonzero(back[1:] & ~back[:-1]) + 1
            if back[0]:
                starts = np.concatenate(([0], starts))
            first = starts[np.searchsorted(starts, after - 1, side="right") - 1]
            odd = (after - first) % 2 == 1
            if back[0] and odd_tail:  # the run at the window's start goes on from one of odd length
                odd ^= first == 0
            quote[after[odd]] = False
        if back[-1]:
            others = np.flatnonzero(~back)
            if len(others):
                odd_tail = (len(w) - 1 - int(others[-1])) % 2 == 1
            else:
                odd_tail ^= len(w) % 2 == 1
        else:
            odd_tail = False
        del back
        inside = np.logical_xor.accumulate(quote)  # a mark after an odd count of quotes is in a string
        del quote
        if in_string:
            np.logical_not(inside, out=inside)
        in_string = bool(inside[-1])
        folded = w | 0x20  # '[' '{' as '{', ']' '}' as '}'
        opens, closes = folded == 0x7B, folded == 0x7D
        del folded
        marks = np.flatnonzero((opens | closes | (w == 0x3A)) & ~inside)
        del inside
        step = opens[marks].view(np.int8) - closes[marks].view(np.int8)
        depth = np.cumsum(step, dtype=np.int32)
        depth += level
        if len(depth):
            level = int(depth[-1])
        keep = (step >= 0) & (
            depth > 0
        )  # containers opened and keys, within one (a payload of ']': none kept)
        depths.append(depth[keep])
        openers.append(step[keep] > 0)
    depth, opener = np.concatenate(depths), np.concatenate(openers)
    del depths, openers
    if not len(depth):
        return 0
    # by depth, in the payload's order within each: a key belongs to the last container opened at its depth
    order = np.argsort(depth.astype(np.int16) if depth.max() < 1 << 15 else depth, kind="stable")
    opener = opener[order]
    keys = np.bincount(np.cumsum(opener, dtype=np.int32)[~opener])
    return int(keys.max()) if len(keys) else 0


_decode = json.JSONDecoder().decode
_raw_decode = json.JSONDecoder().raw_decode

# json.detect_encoding's name of a UTF-16 or UTF-32 payload -> how a message names it
_WIDE = {
    "utf-16": "UTF-16 (by its byte-order mark)",
    "utf-32": "UTF-32 (by its byte-order mark)",
    "utf-16-le": "UTF-16LE (by its NUL bytes, no byte-order mark)",
    "utf-16-be": "UTF-16BE (by its NUL bytes, no byte-order mark)",
    "utf-32-le": "UTF-32LE (by its NUL bytes, no byte-order mark)",
    "utf-32-be": "UTF-32BE (by its NUL bytes, no byte-order mark)",
}


def wide_encoding(payload: bytes) -> str | None:
    """How a message names the encoding of a UTF-16 or UTF-32 payload (a byte-order mark, or a NUL among its
    first two bytes, which UTF-8 JSON and text never have: json.detect_encoding's rule), else None."""
    if len(payload) < 2 or (payload[0] and payload[1] and payload[0] < 0xFE):
        return None
    return _WIDE.get(json.detect_encoding(payload))


def utf8_payload(payload: bytes) -> bytes:
    """``payload`` as UTF-8: UTF-16 or UTF-32 (``wide_encoding``: a Windows gateway's, .NET's Encoding.Unicode, a
    PowerShell logger's) decoded, its byte-order mark dropped, and written as UTF-8; any other payload as it
    came. So every way a UTF-8 payload is read reads it: JSON lines, a plain state (``ON``), the bounds counted
    before the parse (``too_many_to_parse``), errors quoting its text. Only json.loads read such JSON (one
    object or array); JSON lines and a plain state in it were ``malformed_json`` or ``unknown_state`` quoting
    its bytes ('O\\x00N\\x00'), and the bounds passed it unscanned. Text whose bytes do not decode in
    that encoding raises ``CodecError('malformed_json')`` naming it. A lone surrogate passes as json.loads
    passes it (``surrogatepass``)."""
    how = wide_encoding(payload)
    if how is None:
        return payload
    enc = json.detect_encoding(payload)
    try:
        text = payload.decode(enc, "surrogatepass")
    except UnicodeDecodeError as e:
        raise CodecError(
            "malformed_json",
            f"the payload is {how} but its bytes do not decode in it ({e.reason} at byte {e.start} of "
            f"{len(payload)}): {_show(payload)}",
        ) from None
    text = text.removeprefix("\ufeff")
    if "\0" in text[:2]:
        # a zeroed buffer (all NUL bytes) or one that begins so: no JSON or text, and as UTF-8 json.loads would
        # read it as UTF-32 again, its error naming a conversion the payload never had
        raise CodecError(
            "malformed_json",
            f"the payload begins with NUL bytes (a zeroed buffer?), no JSON or text: {_show(payload)}",
        )
    return text.encode("utf-8", "surrogatepass")


def wide_refused(e: CodecError, how: str) -> CodecError:
    """``e``, a refusal of a payload read as UTF-8 from UTF-16 or UTF-32 (``utf8_payload``), naming the encoding it
    was read in (``how``, ``wide_encoding``'s): any reason (malformed_json, unknown_state, wrong_type) quotes
    the converted text, which the device never wrote so. One that names the payload already stays as it is."""
    if e.detail.startswith("the payload "):
        return e
    return CodecError(e.reason, f"{e.detail}; the payload is {how}, read as such")


def _loads(payload: bytes | str) -> Any:
    # Plain UTF-8 bytes go straight to the decoder (json.loads sniffs the encoding first, a cost
    # paid per message on the loop); a BOM or UTF-16/32 JSON still goes through json.loads. Without a BOM,
    # UTF-16/32 (.NET's Encoding.Unicode) has a NUL among its first two bytes, which UTF-8 JSON never has:
    # decoded as UTF-8 (valid: NUL is ASCII), it was malformed_json
    if (
        type(payload) is bytes
        and payload[:3] != b"\xef\xbb\xbf"
        and (len(payload) < 2 or payload[0] and payload[1])
    ):
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            return json.loads(payload)
        # raw_decode skips decode()'s two whitespace regex matches; anything unusual (leading or
        # trailing whitespace, trailing data, malformed input) goes through decode() for its checks
        try:
            obj, end = _raw_decode(text)
        except ValueError:
            return _decode(text)
        return obj if end == len(text) else _decode(text)
    return json.loads(payload)


_ESCAPE_SEEN = re.compile("%2[fF5]")


def tag_level(name: str) -> str:
    """``name`` (a JSON key, a record's name, a PubSub field's, writer's or publisher's, from the payload) as one
    level of a tag named after its topic (``tag_prefix_topic``): one holding '/' (or the text %2F or %25) has
    '%' and '/' percent-encoded (``a/b`` -> ``a%2Fb``), any other is as it came. Kept whole, the key ``a/b`` of
    a message on ``f/x`` named the tag ``f/x/a/b``, the key ``b``'s on ``f/x/a``: a device a broker lets publish
    on ``f/x`` alone wrote another device's tag, and the rules and actions on it. Two names never give one
    level: one holding %2F or %25 was encoded (``urllib.parse.unquote`` tells it back), any other came so."""
    if "/" in name or ("%2" in name and _ESCAPE_SEEN.search(name) is not None):
        return name.replace("%", "%25").replace("/", "%2F")
    return name


def tag_level_origin(level: str) -> str:
    """The name ``tag_level`` made ``level`` of: one holding %2F or %25 was encoded (every '%' of it begins
    %25 or %2F), any other came so."""
    if "%2F" in level or "%25" in level:
        return level.replace("%2F", "/").replace("%25", "%")
    return level


def _same(name: str) -> str:
    return name


def _get(obj: Any, path: str) -> Any:
    """The value at ``path`` in ``obj``, else ``_MISSING``: a key as it is written, dots and all (Kepware's and OPC
    gateways' flat ``"Channel1.Device1.Temp"``), else the path level by level, each level a key, else (``_search``)
    a level that is a key holding dots or, in an array, a whole number (``ENERGY.Voltage.0``: Tasmota's three
    phases)."""
    if isinstance(obj, dict) and path in obj:
        return obj[path]
    cur = obj
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            return _search(obj, path) if "." in path or isinstance(obj, list) else _MISSING
        cur = cur[key]
    return cur


def _search(obj: Any, path: str) -> Any:
    """``_get``'s path through keys holding dots (shortest first) and arrays' items: each step takes the payload a
    level deeper, so the search is bounded by the payload's size."""
    if isinstance(obj, dict):
        if path in obj:
            return obj[path]
    elif isinstance(obj, list):
        if path.isdigit() and path.isascii() and int(path) < len(obj):
            return obj[int(path)]
    else:
        return _MISSING
    dot = path.find(".")
    while dot != -1:
        key = path[:dot]
        if isinstance(obj, dict):
            inner = obj.get(key, _MISSING)
        else:
            inner = obj[int(key)] if key.isdigit() and key.isascii() and int(key) < len(obj) else _MISSING
        if inner is not _MISSING and (got := _search(inner, path[dot + 1 :])) is not _MISSING:
            return got
        if isinstance(obj, list):
            return _MISSING
        dot = path.find(".", dot + 1)
    return _MISSING


_FLOAT_MAX = 1.7976931348623157e308  # a JSON integer past it has no float64 (a 400-digit number, say)


def _fits(v: int | float) -> bool:
    """A JSON number a float64 holds: not NaN or an infinity, and no integer too large for one (on which
    ``math.isfinite`` would raise ``OverflowError``)."""
    return -_FLOAT_MAX <= v <= _FLOAT_MAX if type(v) is int else math.isfinite(v)


def _inf(v: int) -> float:
    """An integer past float64's range as the float64 it rounds towards: an infinity of its sign."""
    return math.inf if v > 0 else -math.inf


_EXACT = 2**53  # a float64 holds every whole number up to it, and past it only some
_WHOLE_ARRAYS = (("int64", -(2**63), 2**63 - 1), ("uint64", 0, 2**64 - 1))


def _whole_array(v: list) -> np.ndarray | None:
    """A JSON array of whole numbers some of which are past 2**53 (a device's Int64/UInt64 ids, counters, tick
    times) as an int64 array, else a uint64 one, so that every digit is kept: in a float64 array 2**53 + 1 was
    2**53 and 2**63 - 1 was 2**63. None when an item is a fraction (or true/false) or none of them holds all."""
    if not all(type(x) is int for x in v):
        return None
    lo, hi = min(v), max(v)
    for dtype, least, most in _WHOLE_ARRAYS:
        if least <= lo and hi <= most:
            return np.asarray(v, dtype=dtype)
    return None


_ARRAY_SLICE = 65_536  # numbers of an array converted at a time (a few ms each)


def _value(path: str, v: Any, keep: Callable[[str, str], None] | None = None) -> Any:
    """A field's value; a non-finite number (or an array holding one) raises ``non_finite``, or, given
    ``keep``, is reported to it and returned (an integer past float64's range as an infinity)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        if not _fits(v):
            bad = CodecError("non_finite", f"field {shown_topic(path)} is {str(v)[:40]}: no finite float64")
            if keep is None:
                raise bad
            keep(bad.reason, bad.detail + "; passed on as BAD")
            return _inf(v) if type(v) is int else v
        return v
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise CodecError("wrong_type", f"field {shown_topic(path)} is an array with non-numeric items")
        try:
            if len(v) > _ARRAY_SLICE:
                # a slice at a time: one conversion holds the GIL to its end (4,000,000 numbers 0.1-0.2 s), and a
                # worker thread converting a large message's array held the agent's loop that long
                arr = np.concatenate(
                    [
                        np.asarray(v[i : i + _ARRAY_SLICE], dtype=np.float64)
                        for i in range(0, len(v), _ARRAY_SLICE)
                    ]
                )
            else:
                arr = np.asarray(v, dtype=np.float64)
        except OverflowError:  # an integer too large for a float64
            if keep is None:
                raise CodecError(
                    "non_finite", f"field {shown_topic(path)} holds a number past float64's range"
                ) from None
            arr = np.asarray([x if _fits(x) or type(x) is not int else _inf(x) for x in v], dtype=np.float64)
        else:  # two C-speed passes (5 us for 2,048 samples, whose parse takes 1.3 ms); a NaN compares False
            if (
                arr.size
                and (arr.max() >= _EXACT or arr.min() <= -_EXACT)
                and (whole := _whole_array(v)) is not None
            ):
                return whole
        if not np.all(np.isfinite(arr)):
            bad = CodecError(
                "non_finite", f"field {shown_topic(path)} holds NaN or Inf (or a number past float64's range)"
            )
            if keep is None:
                raise bad
            keep(bad.reason, bad.detail + "; passed on as BAD")
        return arr
    raise CodecError(
        "wrong_type",
        f"field {shown_topic(path)} is {type(v).__name__}; expected a number, bool, string or array",
    )


# ISO 8601 forms of a date alone (2026-12-04, 20261204, 2026-W49-5, 2026-338), with a zone or not
_DATE_ONLY = re.compile(
    r"\s*[0-9]{4}-?(?:[0-9]{2}-?[0-9]{2}|W[0-9]{2}(?:-?[0-9])?|[0-9]{3})(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?\s*\Z"
)


# ISO 8601 times of reduced precision that fromisoformat misreads: the hour alone (2026-12-05T10, the whole hour
# 10:00 to 11:00, read as 10:00:00; T10.5, the half hour, read as 10:00:00.5) and hours and minutes with a
# fraction of a minute (T10:30.5, 10:30:30, read as 10:30:00.5); with a zone or not, any separator fromisoformat
# takes before the time (T, t, a space)
_DATE = r"[0-9]{4}-?(?:[0-9]{2}-?[0-9]{2}|W[0-9]{2}-?[0-9]?)"
_ZONE = r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?)?)?"
_HOUR_ONLY = re.compile(rf"\s*{_DATE}.([0-9]{{2}})(?:[.,]([0-9]+))?{_ZONE}\s*\Z")
_MINUTE_FRACTION = re.compile(rf"\s*{_DATE}.([0-9]{{2}}):?([0-9]{{2}})[.,]([0-9]+){_ZONE}\s*\Z")


def coarse_time(s: str) -> str | None:
    """What is wrong with ISO 8601 text ``s`` that is a time of the hour alone, or of hours and minutes with a
    fraction of a minute (ISO 8601's reduced precision), which ``fromisoformat`` reads as another instant:
    ``2026-12-05T10`` is the hour from 10:00 to 11:00, read as 10:00:00 (a reading stamped up to an hour off),
    ``T10.5`` half past ten, read as 10:00:00.5; None for any other text (``T10:30`` is read as 10:30:00, a time
    to the minute, as JavaScript's Date and HTML's datetime-local write one; a fraction of zeros, ``T14.0`` or
    ``T16:45.0``, read exactly as 14:00:00 and 16:45:00, as it names them). Any length is looked at (both forms
    are anchored and linear): a cut-off let a padded or long-fraction hour through (``T10.555...5Z`` read as
    10:00:00.555555). A caller asks only of a time ``could_be_coarse`` (two regexes cost 0.9 us a time)."""
    if (m := _HOUR_ONLY.match(s)) is not None:
        hour, fraction = m.group(1), m.group(2)
        if fraction is not None and not fraction.strip("0"):
            return None  # T14.0 is 14:00:00, read as such: no instant other than the one it names
        if fraction is None:
            return (
                f"a time of the hour alone (ISO 8601's reduced precision: T{hour} is the whole hour, {hour}:00 to "
                f"{int(hour) + 1:02d}:00), no instant: read as the hour's start ({hour}:00:00) the reading would be "
                "stamped up to an hour off"
            )
        return (
            f"a time of the hour alone and a fraction of it (ISO 8601's reduced precision: T{hour}.{_cut(fraction)} is "
            f"{_fraction_of(hour, '', fraction, 3600)}), which would be read as a fraction of a second "
            f"({hour}:00:00.{_cut(fraction, 6)}), the reading stamped up to an hour off"
        )
    if (m := _MINUTE_FRACTION.match(s)) is not None:
        hour, minute, fraction = m.groups()
        if not fraction.strip("0"):
            return None  # T16:45.0 is 16:45:00, read as such
        return (
            f"hours and minutes with a fraction of a minute (ISO 8601: T{hour}:{minute}.{_cut(fraction)} is "
            f"{_fraction_of(hour, minute, fraction, 60)}), which would be read as a fraction of a second "
            f"({hour}:{minute}:00.{_cut(fraction, 6)})"
        )
    return None


def _cut(digits: str, n: int = 9) -> str:
    """A fraction's digits as quoted in a line: at most ``n`` (a text of thousands is not quoted whole)."""
    return digits if len(digits) <= n else digits[:n] + "..."


def _fraction_of(hour: str, minute: str, digits: str, unit_s: int) -> str:
    """The time of day ISO 8601 gives ``hour`` (and ``minute``) with the fraction ``digits`` of an hour
    (``unit_s`` 3600) or a minute (60): "14:15:00" for T14.25, "10:30:30" for T10:30.5."""
    ms = round((int(minute or 0) * 60 + int(digits[:9]) * unit_s / 10 ** len(digits[:9])) * 1000)
    whole, rest = divmod(ms, 1000)
    shown = f"{int(hour) + whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return shown + f".{rest:03d}".rstrip("0") if rest else shown


def could_be_coarse(dt: datetime) -> bool:
    """Whether a time ``fromisoformat`` read could be a date alone or a ``coarse_time`` form: each is read at second
    0, the hour alone and a date at minute 0 (T10 -> 10:00:00, T10.5 -> 10:00:00.5), a fraction of a minute with
    microseconds (T10:30.5 -> 10:30:00.5; one under a millionth of a minute, T10:30.0, reads within 60 us of its
    instant and passes). Any other time pays this test only, not the regexes."""
    return not dt.second and (not dt.minute or dt.microsecond != 0)


# the UTC offsets of time zones: UTC-12:00 (Baker Island) to UTC+14:00 (Line Islands), in whole minutes (Part 1 of
# ISO 8601 writes none with seconds); fromisoformat takes any under 24 hours, with seconds and microseconds
_OFFSETS = (timedelta(hours=-12), timedelta(hours=14))


def offset_problem(dt: datetime) -> str | None:
    """Why the UTC offset ``fromisoformat`` read in a time is no time zone's (``+15:00``, ``+05:30:15``: a typo or a
    garbled field; taken as stated, the reading was stamped up to a day off), None when it is one (or there is
    none). The rule of every time given as text, as ``date_only`` is."""
    off = dt.utcoffset()
    if off is None or (not off and dt.tzinfo is UTC):
        return None
    sign, left = ("-", -off) if off < timedelta(0) else ("+", off)
    minutes, rest = divmod(left, timedelta(minutes=1))
    shown = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    if rest:
        secs = rest.total_seconds()
        shown += f":{secs:02.0f}" if secs == int(secs) else f":{secs:09.6f}".rstrip("0")
        return f"its UTC offset {shown} is no time zone's (they are whole minutes)"
    if not _OFFSETS[0] <= off <= _OFFSETS[1]:
        return f"its UTC offset {shown} is no time zone's (they are -12:00..+14:00)"
    return None


def date_only(s: str) -> bool:
    """Whether ``s`` (ISO 8601 text) is a date with no time of day, which ``fromisoformat`` reads as midnight (the
    rule of every time given as text: this codec's timestamps, Sparkplug's DateTime metrics)."""
    return _DATE_ONLY.match(s) is not None


def _timestamp(raw: Any, mapping: JsonMapping, default: float, named: str | None = None) -> float:
    """``raw``'s time at ``mapping.timestamp_field``; ``named``: the field as the user wrote it, named by an error in
    its place (a record's time is looked up under an inner name)."""
    name = mapping.timestamp_field
    if name is None:
        return default
    v = _get(raw, name)
    name = named or name
    if v is _MISSING or v is None:  # null: a device without a (synchronised) clock says so; as a record's
        return default
    fmt = mapping.timestamp_format
    if fmt is TimestampFormat.ISO8601:
        if not isinstance(v, str):
            hint = ""
            if type(v) is int or (type(v) is float and math.isfinite(v)):
                hint = f": an epoch time? set timestamp_format: {_unit_of(v)}"
            raise CodecError(
                "wrong_type", f"timestamp {name!r} is {type(v).__name__}; expected an ISO 8601 string{hint}"
            )
        s = v.strip()  # a space around it (a gateway's fixed-width field) says nothing of the time
        try:  # RFC 3339 allows a lower-case "z" (and "t"), which fromisoformat refuses
            dt = datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s)
        except ValueError:
            # the text quoted cut, as a topic or a key is (a time of megabytes was quoted whole: in the log line,
            # last_error on /status and a source's down event)
            raise CodecError(
                "bad_timestamp", f"timestamp {name!r}={shown_topic(v)} is not ISO 8601"
            ) from None
        if not could_be_coarse(dt):
            pass  # a time with seconds (the usual one): no regex run
        elif not dt.hour and not dt.minute and len(s) <= 16 and date_only(s):
            # a date without a time of day ("2026-12-04", a daily export's): fromisoformat reads it as midnight, a
            # reading stamped hours off (and "2026-12-04+01:00" as 01:00 local), so refused as no instant
            raise CodecError(
                "bad_timestamp",
                f"timestamp {name!r}={shown_topic(v)} is a date without a time of day, no instant: read as midnight the "
                "reading would be stamped hours off; send a date and time (2026-12-04T10:15:00Z), or set "
                "timestamp_field: null to stamp readings with the receive time",
            )
        elif (coarse := coarse_time(s)) is not None:
            raise CodecError(
                "bad_timestamp",
                f"timestamp {name!r}={shown_topic(v)} is {coarse}; send hours, minutes and seconds "
                "(2026-12-05T10:15:00Z), or set timestamp_field: null to stamp readings with the receive time",
            )
        if dt.tzinfo is not None and (odd := offset_problem(dt)) is not None:
            raise CodecError(
                "bad_timestamp",
                f"timestamp {name!r}={shown_topic(v)}: {odd}; send Z (UTC) or the device's offset "
                "(2026-12-05T10:15:00+01:00), or set timestamp_field: null to stamp readings with the receive time",
            )
        if dt.tzinfo is None:  # a device's local time (Tasmota's "Time"): the mapping's timezone says which
            tz = zone(mapping.timezone)
            t = dt.replace(tzinfo=tz).timestamp()
            if tz is not UTC and abs(t - default) >= 900:
                # the hour a summer time ends comes twice (02:30 in Berlin on the last Sunday of October): of its
                # two instants, the one nearer the receive time (``default``); read as the first, the second
                # hour's readings were an hour older than the first's, and dropped as out of order. (A shift is
                # 30 min at least: a time within 15 min of the receive time is the nearer one, the common case.)
                later = dt.replace(tzinfo=tz, fold=1).timestamp()
                if later != t and abs(later - default) < abs(t - default):
                    t = later
            return t
        return dt.timestamp()
    if type(v) is str:
        # epoch time sent as text ("1701388800123", " 1.7e9 ", as some gateways quote every value): a time has
        # no leading zeros to keep, and no setting could read such a device otherwise; read in the forms
        # numbers_from_text reads, whether or not it is set (as a waveform's sample rate)
        v = _text_number(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        hint = ""
        if type(v) is str:
            try:
                datetime.fromisoformat(v.strip().rstrip("Zz"))
                hint = ": an ISO 8601 time? set timestamp_format: iso8601"
            except ValueError:
                pass
        raise CodecError(
            "wrong_type", f"timestamp {name!r} is {type(v).__name__}; expected a number ({fmt.value}){hint}"
        )
    if not _fits(v):
        raise CodecError("non_finite", f"timestamp {name!r} is {str(v)[:40]}: no finite float64")
    if fmt is TimestampFormat.EPOCH_S and abs(v) >= SECONDS_MAX:
        unit = TimestampFormat(_unit_of(v))
        raise CodecError(
            "bad_timestamp",
            f"timestamp {name!r}={v!r} as seconds is past the year 5000: {_UNIT_NAME[unit]}? set "
            f"timestamp_format: {unit.value}",
        )
    scale = _SCALE[fmt]
    unit = TimestampFormat(_unit_of(v))
    if (
        _SCALE[unit] < scale
        and MS_LOOKS_LIKE_S[0] <= v / _SCALE[unit] < MS_LOOKS_LIKE_S[1]
        and (default < MS_LOOKS_LIKE_S[0] or abs(v / _SCALE[unit] - default) <= WRONG_UNIT_NEAR_S)
    ):
        # a smaller unit's date of this century (2001-2286), read in this one, lands in early 1970: refused,
        # naming the unit, when in that unit it is near the receive time (``default``), as a device sending
        # the time in another unit does; else it is a device clock never set counting in this unit (an ESP's
        # uptime: millis() past 11.6 days, esp_timer's microseconds past 17 minutes), which the source reads
        # at the receive time (a time before 2001), not refused message after message for weeks
        raise CodecError(
            "bad_timestamp",
            f"timestamp {name!r}={v!r} as {_UNIT_NAME[fmt]} is in early 1970, as {_UNIT_NAME[unit]} it is a "
            f"date of this century: set timestamp_format: {unit.value}",
        )
    return float(v) if scale == 1 else v / scale


def decode(
    payload: bytes | str, mapping: JsonMapping | None = None, *, now: float = 0.0
) -> list[tuple[str, Any, float]]:
    """Decode one JSON object into ``[(tag, value, timestamp_s), ...]``; ``now`` if no timestamp."""
    return compile_decoder(mapping)(payload, now)


def compile_decoder(
    mapping: JsonMapping | None = None,
    *,
    rates: bool = False,
    on_record_error: Callable[[str, str], None] | None = None,
    keep_non_finite: bool = False,
    on_text_unread: Callable[[str, str], None] | None = None,
    on_nested_unread: Callable[[str, Any], None] | None = None,
    wide: bool = True,
) -> Callable[[bytes | str, float], list[tuple]]:
    """``decode`` for one mapping, its choices (paths, timestamp reader) made once: an adapter calls
    this per subscription and the result per message (``run(payload, now)``, the same results and
    errors as ``decode``). ``rates``: each tuple gets a fourth element, an array's sample rate from the
    payload (``mapping.rate_field``) or None. With ``mapping.records`` every tuple is
    ``(tag, value, timestamp_s, None, quality)`` (quality "good", or a ``Status`` equal to "uncertain" or "bad" with
    its ``reason``), and a bad record
    is reported to ``on_record_error(reason, detail)`` and skipped while the others are kept (a message
    whose array is missing or not an array still raises). Given ``on_record_error``, a bad field (NaN,
    null, missing, an array with text) is reported the same way and skipped while the message's other
    fields are kept: one open channel of an 8-channel module (NaN) must not silence the seven others.
    Without it, the first bad field raises. ``keep_non_finite`` (with ``on_record_error``): a NaN or
    infinite value (an integer past float64's range as an infinity, an array holding one) is reported as
    ``non_finite`` and kept, for the caller to pass on as a BAD reading (a record's quality is then "bad").
    ``on_text_unread(field, text)``: without ``values`` (every number read), each top-level field whose text
    gives no reading and is not counted as ``unknown_state`` (a status word, a text field that never held a
    state; not the timestamp field): unread, so far silently. ``on_nested_unread(field, value)``: likewise each
    top-level field holding an object or an array that is not empty (Shelly's ``"temperature": {"tC": ...}``),
    which only a path in ``values`` reads (``nested_fields_hint``). ``wide=False``: the caller reads a UTF-16 or
    UTF-32 payload as UTF-8 itself (``wide_encoding``, ``utf8_payload``, once) and names its encoding in a
    refusal (``wide_refused``): the decoder is returned as it is, a UTF-8 payload paying nothing for the test."""
    inner = _compile_decoder(
        mapping or JsonMapping(),
        rates,
        on_record_error,
        on_record_error if keep_non_finite else None,
        on_text_unread,
        on_nested_unread,
    )

    if not wide:
        return inner

    def run(payload: bytes | str, now: float = 0.0) -> list[tuple]:
        # UTF-16/32 (a byte-order mark, or a NUL among the first two bytes) read as the UTF-8 it is written
        # as (``utf8_payload``); a plain UTF-8 payload pays this call, its type, length and two byte lookups
        # (0.2-0.3 us: the MQTT source tests it itself, ``wide=False``)
        if (
            type(payload) is bytes
            and len(payload) > 1
            and (not payload[0] or not payload[1] or payload[0] >= 0xFE)
        ):
            how = wide_encoding(payload)
            if how is not None:
                try:
                    return inner(utf8_payload(payload), now)
                except CodecError as e:
                    raise wide_refused(e, how) from None
        return inner(payload, now)

    return run


def _compile_decoder(
    mapping: JsonMapping,
    rates: bool,
    on_record_error: Callable[[str, str], None] | None,
    keep: Callable[[str, str], None] | None,
    on_text_unread: Callable[[str, str], None] | None,
    on_nested_unread: Callable[[str, Any], None] | None,
) -> Callable[[bytes | str, float], list[tuple]]:
    if mapping.records is not None:
        return _records_decoder(mapping, on_record_error, keep)
    if mapping.opcua_pubsub is not None:
        return _pubsub_decoder(mapping, on_record_error, keep)
    ts_of = _timestamp_reader(mapping)
    p = mapping.tag_prefix
    report = on_record_error
    lookup = _state_lookup(mapping)
    if mapping.values:
        conv = _converter(mapping)
        fields = [(path, p + tag) for path, tag in mapping.values.items()]
        rate_of = _rate_reader(mapping.rate_field) if rates else None

        def run(raw: dict, now: float) -> list[tuple]:
            ts = ts_of(raw, now)
            out: list[tuple] = []
            for path, tag in fields:
                v = _get(raw, path)
                try:
                    if v is _MISSING:
                        raise CodecError("missing_field", f"field {shown_topic(path)} is absent")
                    out.append((tag, _value(path, conv(path, v), keep), ts))
                except CodecError as e:
                    if report is None:
                        raise
                    report(e.reason, e.detail)
            if rate_of is not None:
                rate = rate_of(raw)
                out = [(t, v, ts, rate if isinstance(v, np.ndarray) else None) for t, v, ts in out]
            return out

        return _messages(run, report, bare=False, mapping=mapping)
    tsf = mapping.timestamp_field
    isfinite = math.isfinite
    level = tag_level if mapping.escape_names else None
    # with states (and unknown_state: skip), the fields that have held a state: such a field's text that is
    # no state ({"state": "BLINK"} after {"state": "ON"}) is unknown_state, as a mapped field's; another text
    # field (Zigbee2MQTT's "color_mode": "xy", Tasmota's "Time") is not read, as without states
    state_fields: set[str] | None = set() if mapping.states and mapping.unknown_state != "text" else None
    state_keys = frozenset(state_key(k) for k in mapping.states)
    known = _known_states(mapping)
    text_unread = on_text_unread
    # the object the timestamp_field's path goes into ({"meta": {"ts": ...}}): read for its time, not unread
    ts_root = tsf.split(".", 1)[0] if tsf is not None and "." in tsf else None
    nested_unread = on_nested_unread

    def unread(k: str, v: Any) -> None:
        """A text (or other) value of field ``k`` that gave no number; counted when ``k`` holds states."""
        if type(v) is not str:
            if nested_unread is not None and (type(v) is dict or type(v) is list) and v and k != ts_root:
                nested_unread(k, v)
            return
        if state_fields is not None and k in state_fields:
            bad = _unknown_state(k, v, known, "map the field in json_mapping.values with unknown_state: text")
            if report is None:
                raise bad
            report(bad.reason, bad.detail)
        elif text_unread is not None:
            text_unread(k, v)

    def run_all(raw: dict, now: float) -> list[tuple]:
        if len(raw) > MAX_VALUES:
            raise _too_many(f"{len(raw)} fields")
        ts = ts_of(raw, now)
        out = []
        for k, v in raw.items():
            tv = type(v)  # exact types: bool is not a number here; json.loads makes no subclasses
            if tv is not float and tv is not int:  # text, bool, null, object, array: not read, unless
                if lookup is None or k == tsf:  # states or numbers_from_text make it a number
                    if k == tsf:
                        continue
                    if tv is str:
                        if text_unread is not None:
                            text_unread(k, v)
                    elif (tv is dict or tv is list) and v and nested_unread is not None and k != ts_root:
                        nested_unread(k, v)
                    continue
                got = lookup(v)
                tv = type(got)
                if tv is not float and tv is not int:
                    unread(k, v)
                    continue
                if (
                    state_fields is not None
                    and k not in state_fields
                    and len(state_fields) < 1_000  # bounded: field names come from the outside world
                    and type(v) is str
                    and state_key(v) in state_keys
                ):
                    state_fields.add(k)
                v = got
            if tv is float:
                if not isfinite(v):
                    bad = CodecError("non_finite", f"field {shown_topic(k)} is {v}")
                    if report is None:
                        raise bad
                    if keep is None:
                        report(bad.reason, bad.detail)  # this field skipped, the others kept
                        continue
                    report(bad.reason, bad.detail + "; passed on as BAD")
            elif k == tsf:
                continue
            elif not -_FLOAT_MAX <= v <= _FLOAT_MAX:
                bad = CodecError("non_finite", f"field {shown_topic(k)} is {str(v)[:40]}: no finite float64")
                if report is None:
                    raise bad
                if keep is None:
                    report(bad.reason, bad.detail)
                    continue
                report(bad.reason, bad.detail + "; passed on as BAD")
                v = _inf(v)
            if k != tsf:
                out.append((p + (level(k) if level is not None and ("/" in k or "%" in k) else k), v, ts))
        return [(*x, None) for x in out] if rates else out  # arrays appear only through a mapping

    return _messages(run_all, report, bare=True, mapping=mapping)


def _messages(
    one: Callable[[dict, float], list[tuple]],
    report: Callable[[str, str], None] | None,
    bare: bool,
    mapping: JsonMapping | None = None,
) -> Callable[..., list[tuple]]:
    """``one`` (the readings of one JSON object) applied to a payload: an object; an array of objects, a
    batch of messages as gateways send buffered samples (each object read as a message of its own, with its
    own time; a bad one reported and skipped, or raised without ``report``); with ``bare``, a bare number
    (Shelly's relay/0/power "21.5", ESPHome's and Zigbee2MQTT's state topics): one reading of the field
    named "", which the caller names after the topic, with no time of its own."""

    ntext = bare and mapping is not None and mapping.numbers_from_text

    def run(payload: bytes | str, now: float = 0.0) -> list[tuple]:
        try:
            raw = _parse(payload)
        except CodecError as e:
            return _lines_batch(payload, e, one, now, report)
        if type(raw) is dict:
            return one(raw, now)
        if type(raw) is list and (not raw or type(raw[0]) is dict):
            return _batch(raw, one, now, report)  # [] (a gateway's empty buffer): nothing to read
        if bare and (type(raw) is int or type(raw) is float):
            return one({"": raw}, now)
        if ntext and type(raw) is str:  # a bare number quoted ("21.5"), as the bare number 21.5 is read
            v = _text_value(raw)
            if type(v) is not str:
                return one({"": v}, now)
        raise _not_object(raw, payload)

    if not bare or mapping is None or not mapping.states:
        return run
    lookup = _state_lookup(mapping)
    assert lookup is not None
    known = _known_states(mapping)

    def run_states(payload: bytes | str, now: float = 0.0) -> list[tuple]:
        # a payload that is a state alone: plain text (Tasmota's POWER "ON", not JSON), a JSON string or
        # true/false; a separate function, so that a subscription without states pays nothing for it
        try:
            raw = _parse(payload)
        except CodecError as e:
            text = _plain_text(payload) if e.reason == "malformed_json" else None
            if text is None:
                return _lines_batch(payload, e, one, now, report)
            raw = text
        tr = type(raw)
        if tr is str or tr is bool:
            v = lookup(raw)
            if v is raw:
                shown = (
                    repr(raw[:40])
                    if tr is str
                    else f"{str(raw).lower()} (JSON; its key: '{str(raw).lower()}')"
                )
                raise CodecError(
                    "unknown_state",
                    f"payload {shown} is no text of json_mapping.states ({known}); skipped: add it to states",
                )
            return one({"": v}, now)
        if tr is dict:
            return one(raw, now)
        if tr is list and (not raw or type(raw[0]) is dict):
            return _batch(raw, one, now, report)
        if tr is int or tr is float:
            return one({"": raw}, now)
        raise _not_object(raw, payload)

    return run_states


_EMPTY_ARRAY = re.compile(rb"[ \t\r\n]*\[[ \t\r\n]*\][ \t\r\n]*\Z")  # JSON's whitespace only


def empty_batch(payload: bytes) -> bool:
    """A payload that is an empty JSON array however written (``[]``, ``[ ]``, ``[\\n]``): a gateway's empty
    buffer, a batch of no messages, which has nothing unread."""
    return len(payload) < 64 and _EMPTY_ARRAY.match(payload) is not None


def _plain_text(payload: bytes | str) -> str | None:
    """A short payload that is plain text (not JSON, not the start of an object or array), stripped; else None."""
    if len(payload) > 64:
        return None
    try:
        # a BOM before it (a Windows tool's UTF-8) is no part of the text: '\ufeffON' was no state
        text = (
            payload.decode("utf-8-sig") if isinstance(payload, bytes) else payload.removeprefix("\ufeff")
        ).strip()
    except UnicodeDecodeError:
        return None
    return text if text and text[0] not in "{[" else None


def _batch(
    items: list,
    one: Callable[[dict, float], list[tuple]],
    now: float,
    report: Callable[[str, str], None] | None,
    of: str = "item {} of the array",
) -> list[tuple]:
    if len(items) > MAX_VALUES:
        raise _too_many(f"{len(items)} objects")
    out: list[tuple] = []
    for i, item in enumerate(items):
        try:
            if type(item) is not dict:
                raise CodecError("wrong_type", f"a JSON {_json_name(item)}; expected an object")
            out.extend(one(item, now))
        except CodecError as e:
            if report is None:
                raise
            report(e.reason, f"{of.format(i)}: {e.detail}")
        if len(out) > MAX_VALUES:
            raise _too_many(f"over {MAX_VALUES} values in an array of {len(items)} objects")
    return out


_LINE_OF = "object {} of the payload's JSON lines"


def _lines_batch(
    payload: bytes | str,
    error: CodecError,
    one: Callable[[dict, float], list[tuple]],
    now: float,
    report: Callable[[str, str], None] | None,
) -> list[tuple]:
    """A payload ``_parse`` refused (``error``) read as several JSON values one after another, JSON lines
    (Logstash's ``json_lines``, a logger flushing its buffer) or objects written back to back: a batch, as an
    array of objects is, when it holds at least two values and the first is an object; a part after them that
    does not parse is reported naming it, the objects before it read. Else ``error`` is raised: only a payload already
    refused pays for this."""
    if error.reason != "malformed_json":
        raise error
    try:
        text = payload.decode("utf-8-sig") if isinstance(payload, bytes) else payload  # a BOM passed over
    except UnicodeDecodeError:
        raise error from None
    items: list = []
    broken: CodecError | None = None
    at = _past_space(text, 0)
    while at < len(text):
        if len(items) > MAX_VALUES:
            raise _too_many(f"over {MAX_VALUES} objects of JSON lines")
        try:
            try:
                v, at = _LINES_DECODER.raw_decode(text, at)
            except ValueError as e:
                if "integer string conversion" not in str(e):
                    raise
                # an integer of more digits than Python converts: the infinity of its sign, as in a payload of
                # one object (its field passed on BAD as non_finite); the whole object was malformed_json
                v, at = _LONG_LINES_DECODER.raw_decode(text, at)
        except _DuplicateKey as e:
            broken = CodecError(
                "duplicate_key",
                f"{_LINE_OF.format(len(items))}: key {str(e.args[0])[:60]!r} appears twice in one object",
            )
            break
        except (ValueError, RecursionError) as e:
            detail = "nested too deep" if isinstance(e, RecursionError) else str(e)[:120]
            broken = CodecError("malformed_json", f"{_LINE_OF.format(len(items))}: {detail}")
            break
        if not items and type(v) is not dict:
            raise error
        items.append(v)
        at = _past_space(text, at)
    if len(items) < 2:  # one object and something after it: a payload broken, not JSON lines
        raise error
    out = _batch(items, one, now, report, _LINE_OF)
    if broken is not None:
        if report is None:
            raise broken
        report(broken.reason, broken.detail)
    return out


_JSON_SPACE = re.compile(r"[ \t\r\n]*")


def _past_space(text: str, at: int) -> int:
    """The index of the first character at or after ``at`` that is not JSON's whitespace (a regular
    expression: megabytes of spaces between two objects cost no Python loop)."""
    m = _JSON_SPACE.match(text, at)
    return at if m is None else m.end()


def _all_finite(v: Any) -> bool:
    """False for a float NaN or infinity and an array holding one (what ``_value`` keeps)."""
    if type(v) is float:
        return math.isfinite(v)
    if type(v) is np.ndarray:
        return bool(np.isfinite(v).all())
    return True


_SEVERITY = ("good", "uncertain", "bad", "bad")  # an OPC UA StatusCode's top two bits (Part 4, 7.39)


class Status(str):
    """A record's quality that is not "good" (it equals "bad" or "uncertain", as the plain word does), with
    ``reason``: why (``quality_names``). A good record's quality stays the plain word: it costs nothing."""

    reason: str

    def __new__(cls, level: str, reason: str) -> Status:
        self = super().__new__(cls, level)
        self.reason = reason
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy rebuild it with its reason: str's own way calls Status(level) alone, a TypeError
        return Status, (str(self), self.reason)


def _status(level: str, raw: Any, fmt: str) -> Status:
    """``level`` (not "good") with the reason ``raw``, the record's quality field in convention ``fmt``, gives."""
    return Status(level, _reason(raw, fmt))


def _reason(raw: Any, fmt: str) -> str:
    if isinstance(raw, bool):
        return "quality_false"
    if type(raw) is float:
        raw = _whole(raw)
    if isinstance(raw, str):
        low = raw.strip().lower()
        if low.startswith(("good", "uncertain", "bad", "error")):
            return quality_names.text(raw)  # the device's own word
        if fmt != "auto" and _HEX.match(raw) is not None:
            raw = int(raw, 16)
        else:
            n = _text_number(raw)
            raw = _whole(n) if type(n) is float else n
    if isinstance(raw, dict):
        for key in _STATUS_NAME_KEYS:
            name = raw.get(key)
            # Part 6's Symbol: the publisher's own name, unless it says Good of a code that is not
            if isinstance(name, str) and name.strip() and not name.strip().lower().startswith("good"):
                return quality_names.text(name)
        for key in _STATUS_NUMBER_KEYS:
            if key in raw:
                return _reason(raw[key], "opcua")
    if type(raw) is int:
        if fmt == "opcua":
            return quality_names.opcua(raw)
        if fmt == "opcda" or (fmt == "auto" and not 0 <= raw <= 3):
            return quality_names.opcda(raw)
        return f"quality_{raw}"  # Siemens' qc 0 or 1: no name beyond its level
    return "quality_unread"


# a NaN or infinite value kept (``keep_non_finite``): the sensor's fault
_NON_FINITE = Status("bad", "non_finite")


def _non_finite(quality: str) -> Status:
    """The quality of a kept NaN or infinite value whose record (field) said ``quality``: BAD, and why as the
    record said it when not good (BadSensorFailure), as the OPC UA source keeps a status's name; else
    ``non_finite``."""
    return Status("bad", quality.reason) if isinstance(quality, Status) else _NON_FINITE


def _whole(q: float) -> int | float:
    """A quality sent as a float (192.0: a gateway, JavaScript's above all, that writes every number as a
    double) as the integer it is; a fraction, NaN or an infinity stays a float, which no convention reads."""
    return int(q) if q.is_integer() else q


# an OPC UA StatusCode as hex text ("0x80000000", "0x00000000"), as OPC Publisher's compatibility mode and
# UA Expert's exports write it: read as its number in the conventions that name the number (not ``auto``)
_HEX = re.compile(r"\s*0[xX][0-9a-fA-F]{1,8}\s*\Z")


def _quality_of(q: Any) -> str | None:
    """A record's quality in the ``auto`` convention: Siemens' qc 0-3, else OPC DA's 16 bits."""
    if type(q) is float:
        q = _whole(q)
    if isinstance(q, bool):
        return "good" if q else "bad"
    if isinstance(q, int):
        if 0 <= q <= 3:  # Siemens Industrial Edge qc
            return ("bad", "uncertain", "good", "good")[q]
        if not 0 <= q <= 0xFFFF:  # no OPC DA quality (16 bits): -1 would pass its bit test as good
            return None
        return "good" if q & 0xC0 == 0xC0 else "uncertain" if q & 0xC0 == 0x40 else "bad"  # OPC DA
    return _quality_text_or_object(q, _quality_of)


def _quality_opcua(q: Any) -> str | None:
    """A 32-bit OPC UA StatusCode (0 Good; 0x40000000.. Uncertain; 0x80000000.. Bad), unsigned or as a
    signed 32-bit int (Ignition 8's QualityCode, a Java int: Bad_Stale is -2147483132)."""
    if type(q) is float:
        q = _whole(q)
    if isinstance(q, bool):
        return "good" if q else "bad"
    if isinstance(q, int):
        if not -(1 << 31) <= q <= 0xFFFFFFFF:
            return None
        return _SEVERITY[(q & 0xFFFFFFFF) >> 30]
    if isinstance(q, str) and q.strip().lower().startswith("error"):  # Ignition's Error_* (severity 11)
        return "bad"
    return _quality_text_or_object(q, _quality_opcua)


def _quality_opcda(q: Any) -> str | None:
    """OPC DA's 16-bit quality (QQSSSSLL in the low byte): 192+ good, 64-127 uncertain, else bad."""
    if type(q) is float:
        q = _whole(q)
    if isinstance(q, bool):
        return "good" if q else "bad"
    if isinstance(q, int):
        if not 0 <= q <= 0xFFFF:
            return None
        return "good" if q & 0xC0 == 0xC0 else "uncertain" if q & 0xC0 == 0x40 else "bad"
    return _quality_text_or_object(q, _quality_opcda)


def _quality_siemens(q: Any) -> str | None:
    """Siemens Industrial Edge's qc: 0 bad, 1 uncertain, 2-3 good (2 cascade, 3 non-cascade)."""
    if type(q) is float:
        q = _whole(q)
    if isinstance(q, bool):
        return "good" if q else "bad"
    if isinstance(q, int):
        return ("bad", "uncertain", "good", "good")[q] if 0 <= q <= 3 else None
    return _quality_text_or_object(q, _quality_siemens)


_STATUS_NUMBER_KEYS = ("Code", "code", "value", "Value")
_STATUS_NAME_KEYS = ("Symbol", "symbol", "name", "Name")


def _quality_text_or_object(q: Any, number_of: Callable[[Any], str | None]) -> str | None:
    """Text (a word, or a number written as text read by ``number_of``) or an OPC UA StatusCode object."""
    if isinstance(q, str):
        low = q.strip().lower()
        for word in ("good", "uncertain", "bad"):
            if low.startswith(word):  # "Good", "BadNotConnected", Ignition's "Bad_Stale", "GOOD_NON_CASCADE"
                return word
        n = _text_number(q)  # "192", "2": the number's quality, as a time or a rate written as text
        if type(n) is float:
            n = _whole(n)
        if type(n) is int:
            return number_of(n)
        if number_of is not _quality_of and _HEX.match(q) is not None:  # "0x80000000"
            return number_of(int(q, 16))
        return None
    if isinstance(
        q, dict
    ):  # no DA or Siemens gateway sends an object: an OPC UA StatusCode in any convention
        for key in _STATUS_NUMBER_KEYS:
            if key in q:
                code = q[key]
                if type(code) is str:
                    code = int(code, 16) if _HEX.match(code) is not None else _text_number(code)
                if type(code) is float:
                    code = _whole(code)
                return _quality_opcua(code) if type(code) is int else None
        for key in _STATUS_NAME_KEYS:
            if key in q:
                name = q[key]
                return _quality_opcua(name) if isinstance(name, str) else None
        return "good" if not q else None  # Part 6: a Good StatusCode omits its Code and Symbol
    return None


QUALITY_FORMATS: dict[str, Callable[[Any], str | None]] = {
    "auto": _quality_of,
    "opcua": _quality_opcua,
    "opcda": _quality_opcda,
    "siemens": _quality_siemens,
}


def _quality_hint(q: Any, fmt: str) -> str:
    """The convention to set for a number that ``fmt`` does not read but another does."""
    if type(q) is str:
        if _HEX.match(q) is None:
            q = _text_number(q)
        elif fmt == "auto":
            n = int(q, 16)
            return (
                f" (hex text is how OPC UA StatusCodes are written: as one 0x{n:08X} is {_quality_opcua(n)}; set "
                "quality_format: opcua, where 0 is Good)"
            )
        else:  # read as its number (opcda, siemens): what that number is told
            q = int(q, 16)
    if type(q) is float:
        q = _whole(q)
        if type(q) is float:
            return " (a fraction: no quality convention has one)" if math.isfinite(q) else ""
    if type(q) is not int:
        return ""
    if fmt != "opcua" and (0x10000 <= q <= 0xFFFFFFFF or -(1 << 31) <= q < 0):
        return (
            f" (as an OPC UA StatusCode 0x{q & 0xFFFFFFFF:08X} is {_quality_opcua(q)}: set quality_format: "
            "opcua, where 0 is Good)"
        )
    if fmt == "siemens" and 0 <= q <= 0xFFFF:
        return f" (Siemens' qc is 0-3; as OPC DA's quality bits it is {_quality_opcda(q)}: quality_format: opcda)"
    return ""


def _record_alone_read(obj: dict, mapping: JsonMapping) -> bool:
    """Whether an object where the records belong is a record alone (a device's one per message), read as an array of
    one: it holds the name and the value (not an array or object of them), and no key the mapping does not read. A
    status or heartbeat (``{"name": "gw-7", "value": 1, "type": "heartbeat"}``), an envelope or a message holding
    other numbers is refused, as an object was before: read as a record, its other keys would be dropped unsaid. The
    message's ``timestamp_field`` is the record's time when the record has none."""
    rec = mapping.records
    assert rec is not None
    fields = [
        k for k in (rec.name, rec.value, rec.timestamp, rec.quality, mapping.timestamp_field) if k is not None
    ]
    keys = {*fields, *(k.split(".", 1)[0] for k in fields)}
    value = _get(obj, rec.value)
    return (
        _get(obj, rec.name) is not _MISSING
        and value is not _MISSING
        and not isinstance(value, list)
        and obj.keys() <= keys
    )


def _records_decoder(
    mapping: JsonMapping,
    on_error: Callable[[str, str], None] | None,
    keep: Callable[[str, str], None] | None = None,
) -> Callable[[bytes | str, float], list[tuple]]:
    rec = mapping.records
    assert rec is not None
    ts_of = _timestamp_reader(mapping)
    p = mapping.tag_prefix
    level = tag_level if mapping.escape_names else _same
    conv = _converter(mapping)
    at = JsonMapping(  # a record's own time
        timestamp_field="t", timestamp_format=mapping.timestamp_format, timezone=mapping.timezone
    )
    report = on_error or (lambda reason, detail: None)
    quality_of = QUALITY_FORMATS[rec.quality_format]
    # a field given as a dotted path (Azure OPC Publisher's {"Value": {"Value", "SourceTimestamp",
    # "StatusCode"}}): each record is first flattened to its four fields, keyed by the paths, so the
    # common case (plain keys) reads as before
    fields = [k for k in (rec.name, rec.value, rec.timestamp, rec.quality) if k is not None]
    dotted = fields if any("." in k for k in fields) else None

    def run(payload: bytes | str, now: float = 0.0) -> list[tuple]:
        if rec.array:
            raw = _object(payload)
            items = _get(raw, rec.array)
            if items is _MISSING:
                raise CodecError("missing_field", f"field {rec.array!r} (the records) is absent")
            ts = ts_of(raw, now)
        else:
            items, ts = _parse(payload), now
        if type(items) is dict and _record_alone_read(items, mapping):
            # a record alone (a device's one per message): an array of one, at the message's time when it has one
            ts = ts if rec.array else ts_of(items, now)
            items = [items]
        if not isinstance(items, list):
            where = repr(rec.array) if rec.array else "the payload"
            raise CodecError(
                "wrong_type", f"{where} is a JSON {type(items).__name__}; expected an array of records"
            )
        if len(items) > MAX_VALUES:
            raise _too_many(f"{len(items)} records")
        out: list[tuple] = []
        for i, r in enumerate(items):
            try:
                if not isinstance(r, dict):
                    raise CodecError(
                        "wrong_type", f"record {i} is a JSON {type(r).__name__}; expected an object"
                    )
                if dotted is not None:
                    r = {k: x for k in dotted if (x := _get(r, k)) is not _MISSING}
                name = r.get(rec.name)
                if not isinstance(name, str) or not name:
                    raise CodecError("missing_field", f"record {i} has no text {rec.name!r} (the tag name)")
                if rec.value not in r:
                    raise CodecError(
                        "missing_field", f"record {shown_topic(name)} has no {rec.value!r} (the value)"
                    )
                path = f"{name}.{rec.value}"
                v = _value(path, conv(path, r[rec.value]), keep)
                t = ts
                if rec.timestamp is not None and r.get(rec.timestamp) is not None:
                    try:  # named as the mapping names it (records.timestamp), not by the inner "t"
                        t = _timestamp({"t": r[rec.timestamp]}, at, ts, rec.timestamp)
                    except CodecError as e:
                        raise CodecError(e.reason, f"record {shown_topic(name)}: {e.detail}") from None
                quality = "good"
                if rec.quality is not None and r.get(rec.quality) is not None:
                    q = quality_of(r[rec.quality])
                    if q is None:
                        raise CodecError(
                            "wrong_type",
                            f"record {shown_topic(name)}: quality {repr(r[rec.quality])[:80]} not understood (its "
                            f"field {rec.quality!r})" + _quality_hint(r[rec.quality], rec.quality_format),
                        )
                    quality = q if q == "good" else _status(q, r[rec.quality], rec.quality_format)
                if keep is not None and not _all_finite(v):  # kept by _value: the sensor's fault, BAD
                    quality = _non_finite(quality)
            except CodecError as e:
                report(e.reason, e.detail)
                continue
            out.append((p + level(name), v, t, None, quality))
        return out

    return run


_PUBSUB_HEADER = frozenset({"Messages", "Payload", "MessageType"})  # a message with none: a bare Payload


def _pubsub_decoder(
    mapping: JsonMapping,
    on_error: Callable[[str, str], None] | None,
    keep: Callable[[str, str], None] | None = None,
) -> Callable[[bytes | str, float], list[tuple]]:
    """The readings of OPC UA PubSub JSON messages (``PubsubMapping``), as the records decoder's tuples
    ``(tag, value, timestamp_s, None, quality)``; a bad field or DataSetMessage is reported and skipped."""
    pm = mapping.opcua_pubsub
    assert pm is not None
    p = mapping.tag_prefix
    level = tag_level if mapping.escape_names else _same
    conv = _converter(mapping)
    at = JsonMapping(timestamp_field="t", timestamp_format=TimestampFormat.ISO8601, timezone=mapping.timezone)
    report = on_error or (lambda reason, detail: None)
    template = pm.tag
    plain = template == "{field}"
    needs_writer, needs_publisher = "{writer}" in template, "{publisher}" in template
    around = template.split("{field}", 1)  # the text before and after the field's name (one, validated)
    if len(around) == 1:
        around.append("")

    def time_of(v: Any, what: str, default: float) -> float:
        if v is None or (type(v) is str and v.startswith("0001-01-01")):  # Part 6: MinDateTime is no time
            return default
        try:
            return _timestamp({"t": v}, at, default)
        except CodecError as e:
            raise CodecError(e.reason, f"{what}: {e.detail}") from None

    def quality_of(q: Any, what: str) -> str:
        got = _quality_opcua(q)
        if got is None:
            raise CodecError(
                "wrong_type",
                f"{what}: StatusCode {str(q)[:40]!r} is no OPC UA StatusCode" + _quality_hint(q, "opcua"),
            )
        return got if got == "good" else _status(got, q, "opcua")

    def dataset(msg: Any, where: str, publisher: Any, now: float, out: list[tuple]) -> None:
        if type(msg) is not dict:
            raise CodecError("wrong_type", f"{where} is a JSON {_json_name(msg)}; expected an object")
        kind = msg.get("MessageType")
        if type(kind) is str and kind.startswith("ua-") and kind not in _PUBSUB_DATA:
            return  # a keep-alive, an event's notice or metadata: no reading, no error
        if "Payload" in msg:
            payload = msg["Payload"]
            ts = time_of(msg.get("Timestamp"), f"{where} Timestamp", now)
            status = msg.get("Status")
            quality = "good" if status is None else quality_of(status, f"{where} Status")
        elif _DSM_HEADER.isdisjoint(msg):  # no DataSetMessage header: the object is the Payload
            payload, ts, quality = msg, now, "good"
        else:
            raise CodecError("missing_field", f"{where} has no Payload")
        if type(payload) is not dict:
            raise CodecError(
                "wrong_type", f"{where} Payload is a JSON {_json_name(payload)}; expected an object"
            )
        if plain:
            prefix, suffix = p, ""
        else:
            writer = msg.get("DataSetWriterId", msg.get("DataSetWriterName"))
            prefix, suffix = named(writer, msg.get("PublisherId", publisher), where, "DataSetWriterName")
        if len(out) + len(payload) > MAX_VALUES:
            raise _too_many(f"over {MAX_VALUES} fields")
        for name, f in payload.items():
            field(name, f, prefix + level(name) + suffix, ts, quality, where, out)

    def named(writer: Any, publisher: Any, where: str, other: str) -> tuple[str, str]:
        """The text before and after the field's name in a tag, ``template``'s placeholders filled."""
        if needs_writer and (writer is None or type(writer) is bool or type(writer) not in (int, str)):
            raise CodecError(
                "missing_field",
                f"{where} has no DataSetWriterId (nor {other}), which json_mapping.opcua_pubsub.tag "
                f"{template!r} names",
            )
        if needs_publisher and (publisher is None or type(publisher) not in (int, str)):
            raise CodecError(
                "missing_field",
                f"{where} has no PublisherId (nor its NetworkMessage), which json_mapping.opcua_pubsub.tag "
                f"{template!r} names",
            )
        prefix, suffix = (
            x.replace("{publisher}", level(str(publisher))).replace("{writer}", level(str(writer)))
            for x in around
        )
        return p + prefix, suffix

    def field(name: str, f: Any, tag: str, ts: float, quality: str, where: str, out: list[tuple]) -> None:
        """One field of a Payload (or a Samples message's Value): its reading appended to ``out``, or reported."""
        try:
            path = f"field {shown_topic(name)}"
            t, q = ts, quality
            if type(f) is dict:
                if "Type" in f or "UaType" in f:  # a Variant alone (reversible encoding)
                    v = _variant(f, path)
                else:  # a DataValue: Value (a Variant or a bare value), SourceTimestamp, StatusCode
                    if "StatusCode" in f:
                        q = quality_of(f["StatusCode"], path)
                    if f.get("Value") is None:
                        if q == "good":
                            raise CodecError("missing_field", f"{path} has no Value")
                        # a publisher's way to say its PLC item is gone (BadNotConnected, no Value): the
                        # tag's last value is no longer current, passed on as the OPC UA source passes a
                        # node's Bad status, a reading of no value with that quality
                        t = time_of(f.get("SourceTimestamp"), f"{path} SourceTimestamp", ts)
                        out.append((tag, None, t, None, q))
                        return
                    v = f["Value"]
                    if type(v) is dict and ("Type" in v or "UaType" in v):
                        v = _variant(v, path)
                    t = time_of(f.get("SourceTimestamp"), f"{path} SourceTimestamp", ts)
            elif f is None:
                raise CodecError("missing_field", f"{path} is null (no value)")
            else:
                v = f
            v = _value(name, conv(name, v), keep)
            if keep is not None and not _all_finite(v):
                q = _non_finite(q)
        except CodecError as e:
            report(e.reason, f"{where}: {e.detail}")
            return
        out.append((tag, v, t, None, q))

    def sample(msg: dict, where: str, now: float, out: list[tuple]) -> None:
        """A message of OPC Publisher's Samples mode (its default outside ``--strict``, no PubSub): one
        monitored item, ``{"NodeId", "DisplayName", "Timestamp", "Value": DataValue, "ExtensionFields":
        {"PublisherId", "DataSetWriterId"}}``, named by its DisplayName, else its NodeId."""
        name = msg.get("DisplayName")
        if type(name) is not str or not name:
            name = msg["NodeId"]
            if not name:
                raise CodecError("missing_field", f"{where} has an empty NodeId and no DisplayName (the tag)")
        ts = time_of(msg.get("Timestamp"), f"{where} Timestamp", now)
        if plain:
            tag = p + level(name)
        else:
            ext = msg.get("ExtensionFields")  # Publisher's --fm=true messages name their writer there
            if type(ext) is not dict:
                ext = {}
            writer = ext.get("DataSetWriterId", msg.get("DataSetWriterId"))
            publisher = ext.get("PublisherId", msg.get("PublisherId"))
            before, after = named(writer, publisher, where, "ExtensionFields.DataSetWriterId")
            tag = before + level(name) + after
        fields = _event_fields(msg["Value"])
        if fields is not None:  # an event's sample: its fields are no value of the node, and no tag's
            shown = ", ".join(repr(k[:40]) for k in fields[:4]) + (", ..." if len(fields) > 4 else "")
            report(
                "event_unread",
                f"{where}: {name[:60]!r} sent an event (its Value holds the event's fields {shown}, no "
                "DataValue): OPC UA events are not read as tags; skipped",
            )
            return
        field(name, msg["Value"], tag, ts, "good", where, out)

    def network(msg: Any, where: str, now: float, out: list[tuple]) -> None:
        if type(msg) is dict and "Messages" in msg:
            kind = msg.get("MessageType")
            if kind is not None and kind not in _PUBSUB_DATA:
                if type(kind) is str and kind.startswith("ua-"):
                    return  # ua-metadata, ua-status, discovery: describe the publisher, no readings
                raise CodecError("wrong_type", f"{where} MessageType {str(kind)[:40]!r}; expected 'ua-data'")
            msgs = msg["Messages"]
            if type(msgs) is dict:  # a single DataSetMessage not in an array (some publishers)
                msgs = [msgs]
            if type(msgs) is not list:
                raise CodecError(
                    "wrong_type", f"{where} Messages is a JSON {_json_name(msgs)}; expected an array"
                )
            if len(msgs) > MAX_VALUES:
                raise _too_many(f"{len(msgs)} DataSetMessages")
            publisher = msg.get("PublisherId")
            for i, m in enumerate(msgs):
                try:
                    dataset(m, f"{where} DataSetMessage {i}".lstrip(), publisher, now, out)
                except CodecError as e:
                    if e.reason == "too_many_values":
                        raise
                    report(e.reason, e.detail)
            return
        if type(msg) is dict:
            kind = msg.get("MessageType")
            if type(kind) is str and kind.startswith("ua-") and kind not in _PUBSUB_DATA:
                return
            if _sample_shaped(msg, where):
                sample(msg, where or "sample", now, out)  # OPC Publisher's Samples mode
                return
        dataset(msg, where or "DataSetMessage", None, now, out)

    def run(payload: bytes | str, now: float = 0.0) -> list[tuple]:
        raw = _parse(payload)
        out: list[tuple] = []
        if type(raw) is list:  # NetworkMessages or DataSetMessages, batched
            if len(raw) > MAX_VALUES:
                raise _too_many(f"{len(raw)} messages")
            for i, m in enumerate(raw):
                try:
                    network(m, f"message {i}", now, out)
                except CodecError as e:
                    if e.reason == "too_many_values":
                        raise
                    report(e.reason, e.detail)
            return out
        if type(raw) is not dict:
            raise _not_object(raw, payload)
        network(raw, "", now, out)
        return out

    return run


_PUBSUB_DATA = frozenset({"ua-data", "ua-keyframe", "ua-deltaframe", "ua-event"})
# a header field of a DataSetMessage (or a NetworkMessage's MessageId): an object holding one but no Payload
# is no bare Payload
_DSM_HEADER = frozenset(
    {"DataSetWriterId", "DataSetWriterName", "SequenceNumber", "MetaDataVersion", "MessageType", "MessageId"}
)
# keys that only a PubSub NetworkMessage or DataSetMessage holds (Part 14, 7.2.5.3-4), never an OPC Publisher
# sample: an object holding one is PubSub whatever else it holds
_PUBSUB_ONLY = frozenset(
    {
        "MessageId",
        "MessageType",
        "Messages",
        "Payload",
        "MetaDataVersion",
        "DataSetWriterName",
        "MinorVersion",
    }
)
# the keys of an OPC Publisher Samples message (MonitoredItemMessage of 2.5 to 2.9, --fm=true and false); its
# DataSetWriterId and PublisherId ride in ExtensionFields, and are read at the top too. The first OPC Publisher
# (iot-edge-opc-publisher, shaped by its telemetry configuration file) adds ExpandedNodeId when it is published,
# and nests ApplicationUri and DisplayName in a MonitoredItem object under MonitoredItem.Flat: false
_SAMPLE_KEYS = frozenset(
    {
        "NodeId",
        "Value",
        "EndpointUrl",
        "ApplicationUri",
        "DisplayName",
        "Timestamp",
        "SequenceNumber",
        "ExtensionFields",
        "Status",
        "Heartbeat",
        "DataSetWriterId",
        "PublisherId",
        "WriterGroupId",
        "ExpandedNodeId",
        "MonitoredItem",
    }
)
# the members of a DataValue in Part 6's JSON (an empty one, {}, is a DataValue too: Good, no value)
_DATAVALUE_KEYS = frozenset(
    {"Value", "StatusCode", "SourceTimestamp", "ServerTimestamp", "SourcePicoseconds", "ServerPicoseconds"}
)


def _sample_shaped(msg: dict, where: str) -> bool:
    """Whether ``msg`` (an object that is no NetworkMessage) is an OPC Publisher sample: a text NodeId and an
    object under Value beside only a sample's keys. A PubSub header key (MessageId, MessageType "ua-data",
    Payload, ...) makes it PubSub. Beside NodeId and Value, a key that no sample holds makes it a sample and a
    bare Payload at once (two of its fields named NodeId and Value): CodecError rather than a guess."""
    if type(msg.get("NodeId")) is not str or type(msg.get("Value")) is not dict:
        return False
    if not _PUBSUB_ONLY.isdisjoint(msg):
        return False
    others = [k for k in msg if k not in _SAMPLE_KEYS]
    if not others:
        return True
    shown = ", ".join(repr(k[:40]) for k in others[:4]) + (", ..." if len(others) > 4 else "")
    raise CodecError(
        "wrong_type",
        f"{where or 'message'} holds a text NodeId and an object under Value, as an OPC Publisher sample does, "
        f"and {shown}, which no sample holds: a sample or a PubSub Payload sent without its DataSetMessage "
        "header, and nothing tells which; skipped rather than misread (a PubSub publisher: send the "
        "DataSetMessage header, whose Payload holds the fields)",
    )


def _event_fields(v: dict) -> list[str] | None:
    """The field names of an OPC UA event a Samples message carries under Value instead of a DataValue (OPC
    Publisher's event and pending-alarm samples: ``{"EventId": ..., "Message": ..., "Severity": ...}``, or in
    the reversible encoding an ExtensionObject Variant whose Body's Body holds them); None for a DataValue or
    a Variant of a value."""
    if "Type" in v or "UaType" in v:
        kind = v.get("Type", v.get("UaType"))
        body = v.get("Body", v.get("Value"))
        if kind in (22, "ExtensionObject") and type(body) is dict and type(body.get("Body")) is dict:
            inner = body["Body"]
            if inner and _DATAVALUE_KEYS.isdisjoint(inner):
                return list(inner)
        return None
    if v and _DATAVALUE_KEYS.isdisjoint(v):
        return list(v)
    return None


def _variant(v: dict, path: str) -> Any:
    """The value of a Variant in the reversible JSON encoding: ``{"Type": 11, "Body": 21.5}`` (1.04), or
    ``{"UaType": 11, "Value": 21.5}`` (1.05 verbose); an absent Body is a null value."""
    body = v.get("Body", v.get("Value")) if "Type" in v else v.get("Value")
    if body is None:
        raise CodecError("missing_field", f"{path} is a Variant without a Body (null)")
    kind = v.get("Type", v.get("UaType"))
    if kind in _TEXT_INTEGER_TYPES:
        # Part 6 (5.4.2.3) writes an Int64 and a UInt64 as a JSON string, that JavaScript readers keep its digits:
        # read as text, an S7-1500's energy total was no number to a rule or a pipeline and forwards quoted it
        if type(body) is str:
            body = int(body) if _INTEGER_TEXT.match(body) else body
        elif type(body) is list and body and all(type(x) is str and _INTEGER_TEXT.match(x) for x in body):
            body = [int(x) for x in body]
        # a JSON number with a fraction or exponent (1e19, 2.5, -1.0: a publisher that writes every number as a
        # double) is read as the integer it holds when whole (1.0 is 1), and refused when fractional, NaN or Inf as
        # no value of an integer type; passed on GOOD, a UInt64 Variant held 2.5 and -1.0
        if type(body) is float:
            body = _whole_of(body, kind, path)
        elif type(body) is list and any(type(x) is float for x in body):
            body = [_whole_of(x, kind, path) if type(x) is float else x for x in body]
        # a whole number past its type's range is no value of it (a publisher's fault), refused as a Sparkplug
        # metric's is: "99999999999999999999" as an Int64 was passed on GOOD as that number
        least, most = _INTEGER_RANGES[kind]
        for x in body if type(body) is list else (body,):
            if type(x) is int and not least <= x <= most:
                raise CodecError(
                    "wrong_type",
                    f"{path} is {'an Int64' if kind == 8 else 'a UInt64'} Variant holding {x}, past its range "
                    f"({least} to {most})",
                )
    return body


def _whole_of(x: float, kind: int, path: str) -> int:
    """A float an Int64 or UInt64 Variant holds, as the integer it is; CodecError if it is none."""
    if not math.isfinite(x) or not x.is_integer():
        raise CodecError(
            "wrong_type",
            f"{path} is {'an Int64' if kind == 8 else 'a UInt64'} Variant holding {x!r}, not a whole number",
        )
    return int(x)


_TEXT_INTEGER_TYPES = (8, 9)  # the built-in types Int64 and UInt64
_INTEGER_RANGES = {8: (-(2**63), 2**63 - 1), 9: (0, 2**64 - 1)}
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,20}\Z")  # as Part 6 writes them: digits and a sign, nothing else


def _rate_reader(field: str | None) -> Callable[[dict], float | None] | None:
    """The payload's statement of its arrays' sample rate: a positive number of Hz, or CodecError."""
    if field is None:
        return None
    candidates = RATE_FIELDS if field == "auto" else (field,)

    def rate_of(raw: dict) -> float | None:
        for name in candidates:
            v = _get(raw, name)
            if v is _MISSING:
                continue
            if type(v) is str:  # "25600": a rate, like an epoch time, has no text to keep (quoted by EdgeX)
                v = _text_number(v)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not _fits(v) or v <= 0:
                raise CodecError(
                    "wrong_type",
                    f"field {name!r} (the waveform's sample rate) is {str(v)[:40]}; expected a positive "
                    "number of Hz",
                )
            return float(v)
        return None

    return rate_of


class _DuplicateKey(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return d


_LINES_DECODER = json.JSONDecoder(object_pairs_hook=_unique)  # JSON lines: each object checked for keys twice

_SMALL_PAYLOAD = 512  # bytes: below, the plain parse and a quote count are the cheaper check

# Bytes past which a payload is parsed with a Python function reading each number: parsing is one C call that
# holds the GIL to its end (a flat object of 100,000 numbers 90-150 ms, an array of 4,000,000 numbers 0.35-0.4 s on
# a loaded 2-core gateway), so a worker thread parsing it (devices.mqtt's large messages) held the agent's loop all
# that time; a call back into Python at each number lets the loop have the GIL within a switch interval (the parse
# about 10 % slower for records, 2x for a bare array of numbers, in that thread). Objects already call back
# (``_unique``), so a Kepware batch of 100,000 records had its turns; numbers alone did not.
SWITCHING_BYTES = 256 * 1024


def _number_float(text: str) -> float:
    return float(text)


def _number_int(text: str) -> int:
    return int(text)


def _parse(payload: bytes | str, parse_int: Callable[[str], Any] | None = None) -> Any:
    try:
        if parse_int is not None:  # (a hook that slows every integer: only for a payload refused without it)
            return json.loads(payload, object_pairs_hook=_unique, parse_int=parse_int)
        # A key given twice in one object ({"temp": 20, "temp": 9999}) is a payload that parsers read
        # differently (Python and most keep the last, others the first or refuse it): refused, never read
        # as either. Without an object there is nothing to check; a larger payload (a waveform, records)
        # is parsed once, pair by pair (~5 % slower than the plain parse, where parsing it twice took
        # 2x); a small one is parsed plainly, and a flat object of numbers with as many quotes as twice
        # its keys has none twice, else (text values, nesting) it is parsed again pair by pair.
        objects = (payload.count("{") if isinstance(payload, str) else payload.count(b"{")) != 0
        if len(payload) > SWITCHING_BYTES:  # the loop gets its turns while a worker thread parses it
            return json.loads(
                payload,
                object_pairs_hook=_unique if objects else None,
                parse_float=_number_float,
                parse_int=parse_int or _number_int,
            )
        if not objects:
            return _loads(payload)
        if len(payload) > _SMALL_PAYLOAD:
            return json.loads(payload, object_pairs_hook=_unique)
        raw = _loads(payload)
        quotes = payload.count('"') if isinstance(payload, str) else payload.count(b'"')
        if type(raw) is not dict or quotes != 2 * len(raw):
            json.loads(payload, object_pairs_hook=_unique)
        return raw
    except _DuplicateKey as e:
        raise CodecError(
            "duplicate_key",
            f"key {str(e.args[0])[:60]!r} appears twice in one object: parsers disagree on which value counts",
        ) from None
    except (ValueError, UnicodeDecodeError) as e:
        if parse_int is None and "integer string conversion" in str(e):
            # a JSON integer of more digits than Python converts (sys.get_int_max_str_digits: 4,300) is past
            # float64's range, as one of 310 digits is: the infinity of its sign, which its field passes on BAD
            # as non_finite, the message's other fields read (the whole message was malformed_json)
            return _parse(payload, _long_int)
        hint = f": plain text, not JSON? {_STATE_HINT}" if _plain_text(payload) is not None else ""
        raise CodecError("malformed_json", f"{str(e)[:120]} in {_show(payload)}{hint}") from None
    except RecursionError:
        raise CodecError("malformed_json", "nested too deep") from None


def _long_int(digits: str) -> int | float:
    """A JSON integer, or the infinity of its sign past the digits Python converts."""
    try:
        return int(digits)
    except ValueError:
        return -math.inf if digits[0] == "-" else math.inf


# JSON lines holding an integer of more digits than Python converts (``_lines_batch``)
_LONG_LINES_DECODER = json.JSONDecoder(object_pairs_hook=_unique, parse_int=_long_int)


def _object(payload: bytes | str) -> dict:
    raw = _parse(payload)
    if not isinstance(raw, dict):
        raise _not_object(raw, payload)
    return raw


_JSON_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "true/false",
    int: "number",
    float: "number",
}


def _json_name(raw: Any) -> str:
    return "null" if raw is None else _JSON_NAMES.get(type(raw), type(raw).__name__)


# what a short plain text ("ON", Tasmota's POWER), a JSON string or true/false payload is told: the setting
_STATE_HINT = (
    "a state (ON/OFF, open/closed, true/false) is read as a number with json_mapping.states, e.g. states: "
    "{'ON': 1, 'OFF': 0}"
)


def _not_object(raw: Any, payload: bytes | str) -> CodecError:
    hint = f"; {_STATE_HINT}" if type(raw) in (str, bool) else ""
    return CodecError(
        "wrong_type",
        f"payload is a JSON {_json_name(raw)} ({_show(payload)}); expected an object or an array of "
        f"objects{hint}",
    )


def _show(payload: bytes | str) -> str:
    """The start of a payload, for a message saying what came instead of JSON."""
    text = payload if isinstance(payload, str) else payload[:40].decode("utf-8", "replace")
    return repr(text[:40])


# field names that say "time": a message whose timestamp_field is absent but that holds one of these (with a
# time in it) is stamped with the receive time and, unmapped, its time read as a tag: said, with the setting
_TIME_WORDS = ("time", "date", "epoch", "stamp")
# (EdgeX Foundry stamps its events and readings "origin", in nanoseconds)
_TIME_NAMES = frozenset(
    {"t", "ts", "dt", "utc", "ts_ms", "ts_us", "ts_ns", "last_seen", "created_at", "origin"}
)


def _time_held(v: Any) -> tuple[TimestampFormat, str] | None:
    """``(format, as said)`` of a value holding a time: an epoch number that is a date of this century in some unit
    (``epoch_ns (2026-12-05)``) or ISO 8601 text of a date and a time; None for anything else (an uptime, a
    count, a name)."""
    tv = type(v)
    if tv is int or tv is float:
        if not _fits(v) or v <= 0:
            return None
        unit = TimestampFormat(_unit_of(v))
        if not MS_LOOKS_LIKE_S[0] <= v / _SCALE[unit] < MS_LOOKS_LIKE_S[1]:
            return None  # an uptime, a duration, a count: no date of this century
        day = datetime.fromtimestamp(v / _SCALE[unit], UTC).strftime("%Y-%m-%d")
        return unit, f"{unit.value} ({day})"
    if tv is str and 10 <= len(v) <= 40:
        s = v.strip()
        try:
            datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s)
        except ValueError:
            return None
        if date_only(s) or coarse_time(s):  # no time to stamp readings with (refused as one)
            return None
        return TimestampFormat.ISO8601, "iso8601"
    return None


def time_field_hint(payload: bytes | str, mapping: JsonMapping) -> str | None:
    """For a message whose readings got the receive time because ``mapping.timestamp_field`` is not in it:
    the setting that reads its time, when a top-level field is named like a time and holds one (an epoch
    number of this century in some unit, or ISO 8601 text); None otherwise. Costs a parse: call it once per
    topic, not per message."""
    try:
        raw = _parse(payload)
    except CodecError:
        return None
    if type(raw) is list and raw and type(raw[0]) is dict:
        raw = raw[0]
    if type(raw) is not dict:
        return None
    for k, v in raw.items():
        low = k.lower()
        if k == mapping.timestamp_field or not (
            low in _TIME_NAMES or any(w in low for w in _TIME_WORDS) or low.endswith("_ts")
        ):
            continue
        held = _time_held(v)
        if held is None:
            continue
        unit, fmt = held
        tv = type(v)
        where = (
            ""
            if mapping.timestamp_field is None
            else f"no field {mapping.timestamp_field!r} (timestamp_field); "
        )
        read = " and, unmapped, it is read as a tag" if tv is not str and not mapping.values else ""
        return (
            f"{where}its field {shown_topic(k)} holds a time as {fmt}, but its readings get the receive time{read}: "
            f"set json_mapping.timestamp_field: {_as_setting(k)} and timestamp_format: {unit.value}"
        )
    return None


def _as_setting(key: str) -> str:
    """A key from the payload as a hint writes it in a setting to copy: as it is when printable and short, else
    quoted (``shown_topic``): a key holding an ANSI escape, a line feed or a NUL wrote them raw into the log
    line (its own colours, a forged line), one of 60 KB the whole of it."""
    return key if key.isprintable() and len(key) <= 80 else shown_topic(key)


def text_field_hint(name: str, text: str, mapping: JsonMapping) -> str:
    """What a top-level text field left unread by every-number mode (``compile_decoder``'s
    ``on_text_unread``) is told: the field, its text and the setting that reads it."""
    shown, key, name = repr(text[:40]), name, shown_topic(name)
    if type(_text_number(text)) is not str:
        return (
            f"field {name} holds a number as text ({shown}), not read: set json_mapping.numbers_from_text: true "
            "to read it as a number, or map it in json_mapping.values to read it as text"
        )
    if type(_text_value(text)) is not str:  # "NaN", "+Inf": a sensor's fault, no state to map to a number
        return (
            f"field {name} holds a NaN or an infinity as text ({shown}), not read: set "
            "json_mapping.numbers_from_text: true to read it as the sensor's fault (a BAD reading, non_finite)"
        )
    s = text.strip()
    if 10 <= len(s) <= 40 and not date_only(s) and not coarse_time(s):  # no time to stamp readings with
        try:
            datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s)
            return (
                f"field {name} holds a time as text ({shown}), not read: set json_mapping.timestamp_field: "
                f"{_as_setting(key)} and timestamp_format: iso8601 to stamp the readings with it"
            )
        except ValueError:
            pass
    as_text = "map the field in json_mapping.values to read it as text"
    if not _WORD.match(text):  # a version "1.2.3", an id: no state
        return f"field {name} holds text ({shown}), not read (unmapped, only numbers are): {as_text}"
    states = (
        f"add it to json_mapping.states ({_known_states(mapping)})"
        if mapping.states
        else f"a state is read as a number with json_mapping.states, e.g. states: {{{shown}: 1}}"
    )
    return f"field {name} holds text ({shown}), not read (unmapped, only numbers are): {states}; or {as_text}"


_WORD = re.compile(r"\s*[A-Za-z][A-Za-z_ -]{0,30}\s*\Z")  # text that may be a state: RUNNING, open, Auto Mode


TEXT_FIELDS_SHOWN = 5  # the names one text_field_unread line lists


def text_fields_hint(fields: list[tuple[str, str]], mapping: JsonMapping, numbers: Sequence[str] = ()) -> str:
    """What a message's top-level text fields left unread by every-number mode are told, in one line: their
    names (the first ``TEXT_FIELDS_SHOWN``, then a count) and the setting of the one most likely meant as a
    value (a number written as text, then a time, then a state word; a version or an id last). ``numbers``: the
    names of the numbers it read: a message that is one record (``{"name": "temp", "value": 21.5}``, a device's
    one per message) is told the records mapping that reads it by its name."""
    alone = _record_alone(fields, numbers, mapping)
    if alone is not None:
        return alone
    if len(fields) == 1:
        return text_field_hint(*fields[0], mapping)

    def rank(kv: tuple[str, str]) -> int:
        k, v = kv
        if type(_text_value(v)) is not str:
            return 0
        if "holds a time" in text_field_hint(k, v, mapping):
            return 1
        return 2 if _WORD.match(v) else 3

    shown = ", ".join(f"{k[:40]!r} ({v[:20]!r})" for k, v in fields[:TEXT_FIELDS_SHOWN])
    more = f" and {len(fields) - TEXT_FIELDS_SHOWN} more" if len(fields) > TEXT_FIELDS_SHOWN else ""
    return f"{len(fields)} text fields, {shown}{more}, not read; {text_field_hint(*min(fields, key=rank), mapping)}"


def _record_alone(fields: list[tuple[str, str]], numbers: Sequence[str], mapping: JsonMapping) -> str | None:
    """What a message that is one record is told (a text naming it by a key of ``_RECORD_NAME_KEYS``, a number read
    under one of ``_RECORD_VALUE_KEYS``), else None. Read for every number, its value is the tag "value" whatever
    the record's name: another record on the topic is the same tag. It was told its name was a state to map to a
    number (``states: {'temp': 1}``). Told only when the records mapping reads the whole message: its value is its
    one number and its name its one text, but for a field named as a time (told as the record's ``timestamp``). A
    message holding more (``{"name": "Pump 3", "value": 21.5, "rpm": 1500}``) is refused by that mapping (it would
    drop rpm), so it is told the every-number hint (None). A time as ISO 8601 text is told with the
    ``timestamp_format`` that reads it when the mapping's is another: told the records mapping alone, every such
    record was refused (``wrong_type``: expected a number)."""
    value = next((n for n in numbers if n.lower() in _RECORD_VALUE_KEYS), None)
    if value is None:
        return None
    texts = {k.lower(): (k, v) for k, v in fields}
    named = [texts[k] for k in _RECORD_NAME_KEYS if k in texts and not _UUID.fullmatch(texts[k][1])]
    if not named:
        return None
    name, text = named[0]
    rest = [k for k in (*numbers, *(k for k, _ in fields)) if k not in (value, name)]
    times = [k for k in rest if k.lower() in _TIME_NAMES or any(w in k.lower() for w in _TIME_WORDS)]
    if len(rest) > 1 or rest != times:
        return None  # more than the record: the mapping refuses it (its other fields would be dropped)
    at = f", timestamp: {_as_setting(times[0])}" if times else ""
    held = _time_held(texts[times[0].lower()][1]) if times and times[0].lower() in texts else None
    fmt = (
        f" and json_mapping.timestamp_format: {held[0].value}"
        if held is not None and held[0] is not mapping.timestamp_format
        else ""
    )
    return (
        f"the message is one record, named by its {shown_topic(name)} ({text[:40]!r}), not read by it: its "
        f"{shown_topic(value)} is read as the tag {shown_topic(value)} whatever the record's name (another record "
        f"on this topic is the same tag); read it by its name with json_mapping.records: {{array: '', name: "
        f"{_as_setting(name)}, value: {_as_setting(value)}{at}}}{fmt} (a record alone, holding no other field, is "
        "read as an array of one)"
    )


def _number_path(path: str, v: Any, depth: int = 0, budget: list[int] | None = None) -> str | None:
    """The path of the first number in ``v`` (found at ``path``), looked for a few levels deep, else None.
    ``budget``: ``[objects and arrays left to look in]``, shared by a hint's walks and spent here."""
    if (type(v) is int or type(v) is float) and depth:
        return path
    if depth >= 8 or (type(v) is not dict and type(v) is not list):
        return None
    if budget is not None:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
    items: Any = itertools.islice(v.items() if type(v) is dict else enumerate(v), 64)
    for k, x in items:
        found = _number_path(f"{path}.{k}", x, depth + 1, budget)
        if found is not None:
            return found
    return None


# a record's keys naming it and holding its value, in the order a hint takes them (a generic gateway's "name", EdgeX's
# "resourceName", Kepware's and Siemens' "id", ...): a record's "id" may be the reading's own id (EdgeX: a UUID), so
# the names of a tag come first
_RECORD_NAME_KEYS = (
    "name",
    "resourcename",
    "tagname",
    "tag",
    "displayname",
    "nodeid",
    "id",
    "key",
    "n",
    "sensor",
)
_RECORD_VALUE_KEYS = ("value", "v", "val", "reading")
_TAG_NAME_KEYS = _RECORD_NAME_KEYS[:6]  # keys that name a tag, never a reading's own id ("name" ... "nodeid")


def _numbered(ids: list[str]) -> bool:
    """Whether ``ids`` number readings (``"17"``, ``"r1"``, ``"r2"``): each holds a digit, the same text but for its
    digits."""
    return all(any(c.isdigit() for c in i) for i in ids) and len({_DIGITS.sub("", i) for i in ids}) == 1


_DIGITS = re.compile(r"[0-9]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


def _records_in(
    path: str, v: Any, depth: int = 0, budget: list[int] | None = None
) -> tuple[str, str, str, bool, tuple[str, bool] | None] | None:
    """``(array path, name key, value key, values as text, (the other name key a hint names, one record alone))`` of the first array of records found at ``path`` or a few
    levels in (``{"readings": [{"name": "temp", "value": 21.5}, ...]}``): objects each naming itself by text and
    holding a value, by the keys of ``_RECORD_NAME_KEYS`` and ``_RECORD_VALUE_KEYS``, one value at least a number
    or a number written as text (beside them a bool alarm, a state word, a failed sensor's null: a records mapping
    reads those too); else None. The name key is the first whose texts tell the records apart (a device's "name"
    the same in each, its readings' "tag" not: "tag"), else the first (one tag's history), never one holding each
    record's own id (UUIDs, or an ``id``/``key`` different in every record beside a tag name key: EdgeX's readings).
    Values as text only when none is a JSON number (``numbers_from_text`` would read a "0012" beside them as 12).
    ``budget``: ``[objects and arrays left to look in]``, shared by a hint's walks and spent here."""
    if type(v) is not list and type(v) is not dict:
        return None
    if budget is not None:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
    if type(v) is list:
        items = v[:64]
        if not items or not all(type(x) is dict for x in items):
            return None
        keys = {k.lower(): k for k in items[0] if type(k) is str}
        value = next((keys[k] for k in _RECORD_VALUE_KEYS if k in keys), None)
        if value is None:
            return None
        texts = [
            n
            for k in _RECORD_NAME_KEYS
            if (n := keys.get(k)) is not None and all(type(x.get(n)) is str for x in items)
        ]
        if not texts:
            return None
        # a tag name key whose texts tell the records apart: an id unique to each record beside it is the reading's
        # own (EdgeX's). One the same in every record (a device's "name": "plc1") names no tag, and an "id" beside
        # it is the tag's ({"name": "plc1", "id": "temp"}) unless it numbers the readings ("17", "r1", "r2": the
        # same text but for its digits): taken as the record's own id, every record was told to be read under
        # "plc1", one tag
        named = any((n := keys.get(k)) in texts and len({x[n] for x in items}) > 1 for k in _TAG_NAME_KEYS)

        def own_id(n: str) -> bool:  # each record's own id, not a tag's name
            ids = [x[n] for x in items]
            unique = n.lower() not in _TAG_NAME_KEYS and len(set(ids)) == len(ids)
            return all(_UUID.fullmatch(i) for i in ids) or (unique and (named or _numbered(ids)))

        names = [n for n in texts if not own_id(n)] or texts
        name = next((n for n in names if len({x[n] for x in items}) > 1), names[0])
        # the key the hint also names when the one told cannot be sure: a name the same in every record beside a
        # key that differs (a device's "name" and each reading's number, or each tag's "id"), or one record alone
        # (no key tells records apart): followed wrongly, every record is one tag, or each reading a tag
        others: Iterator[str]
        if len(items) == 1:
            others = (n for n in texts if n != name and not _UUID.fullmatch(items[0][n]))
        elif len({x[name] for x in items}) == 1:
            # (a key of digits only last: a register number, 40001, 40002, names a tag as much as "temp" does;
            # left out, records of one PLC's registers were told name: name, all read as one tag)
            others = iter(
                sorted(
                    (
                        n
                        for n in texts
                        if n != name
                        and len({x[n] for x in items}) > 1
                        and not all(_UUID.fullmatch(x[n]) for x in items)
                    ),
                    key=lambda n: all(x[n].isdigit() for x in items),
                )
            )
        else:
            others = iter(())
        other = next(others, None)
        vals = [x.get(value) for x in items]
        numbers = any(type(x) is int or type(x) is float for x in vals)
        as_text = not numbers and any(
            type(x) is str and _text_number(x) is not x for x in vals
        )  # EdgeX's "21.5"
        if not as_text and not numbers:
            return None  # no number among them: nothing read for every number is lost
        return path, name, value, as_text, None if other is None else (other, len(items) == 1)
    if depth < 3 and type(v) is dict:
        for k, x in itertools.islice(v.items(), 64):
            found = _records_in(f"{path}.{k}", x, depth + 1, budget)
            if found is not None:
                return found
    return None


SEARCHED = 64  # the fields a nested_field_unread hint looks in for a path or an array of records
VISITED = (
    2_000  # the objects and arrays its walks look in, together (a 7.5 MB tree in one field: 3 s, on the loop)
)


def nested_fields_hint(fields: list[tuple[str, Any]], numbers: Sequence[str] = ()) -> str:
    """What a message's top-level fields holding objects or arrays, left unread by every-number mode
    (``compile_decoder``'s ``on_nested_unread``), are told in one line: their names and sizes (the first
    ``TEXT_FIELDS_SHOWN``) and a path in ``values`` that reads a number they hold, or, for an array of records
    (``[{"name": "temp", "value": 21.5}, ...]``), the ``records`` mapping that reads each by its name: a path to an
    item (``readings.0.value``) reads whichever record comes first, another's value under the tag when a gateway
    sends its records in another order or only those that changed. ``numbers``: the names of the message's
    top-level numbers, read as it is; a records mapping reads none of them (said)."""

    def shape(v: Any) -> str:
        return f"an object of {len(v)} fields" if type(v) is dict else f"an array of {len(v)} items"

    shown = ", ".join(f"{k[:40]!r} ({shape(v)})" for k, v in fields[:TEXT_FIELDS_SHOWN])
    more = f" and {len(fields) - TEXT_FIELDS_SHOWN} more" if len(fields) > TEXT_FIELDS_SHOWN else ""
    what = (
        f"field {shown}"
        if len(fields) == 1
        else f"{len(fields)} fields holding objects or arrays, {shown}{more}"
    )
    # (the first SEARCHED fields looked in: a message of 100,000 fields held the loop 1.8 s looking in each)
    # and VISITED objects and arrays within them, by both walks together: one field's tree is as large as the message
    looked = fields[:SEARCHED]
    budget = [VISITED]
    records = next((r for k, v in looked if (r := _records_in(k, v, 0, budget)) is not None), None)
    example = next((p for k, v in looked if (p := _number_path(k, v, 0, budget)) is not None), None)
    stopped = f" (the search stopped after {VISITED} objects and arrays)" if budget[0] <= 0 else ""
    read = (
        f"e.g. values: {{{_as_setting(example[:80])}: {_as_setting(example[:80].replace('.', '_'))}}}"
        if example is not None
        else f"each level a key, an array's item a whole number{stopped}"
    )
    they = "it holds" if len(fields) == 1 else "they hold"
    if records is not None:
        array, name, value, as_text, also = records
        other, first_alone = also if also is not None else ("", False)
        return (
            f"{what}, not read (unmapped, only top-level numbers are): {_as_setting(array[:80])} is an array of records "
            f"named by their {_as_setting(name[:80])}: read each by its name with json_mapping.records: "
            f"{{array: {_as_setting(array[:80])}, name: {_as_setting(name[:80])}, value: {_as_setting(value[:80])}}}"
            + (" and numbers_from_text: true (a value is a number written as text)" if as_text else "")
            + f" (a path to an item, {_as_setting(array[:80])}.0.{_as_setting(value[:80])}, reads whichever record "
            "comes first)"
            + (
                (
                    "; one record in the message, so no key is seen to tell records apart: if its "
                    f"{_as_setting(other[:80])} names the tag, set name: {_as_setting(other[:80])}"
                    if first_alone
                    else f"; its {_as_setting(name[:80])} is the same in every record: if their "
                    f"{_as_setting(other[:80])} names each one's tag, set name: {_as_setting(other[:80])}"
                )
                if also is not None
                else ""
            )
            + (
                f"; under records, its top-level number{'s' if len(numbers) > 1 else ''} read now, "
                + ", ".join(repr(n[:40]) for n in numbers[:TEXT_FIELDS_SHOWN])
                + (
                    f" and {len(numbers) - TEXT_FIELDS_SHOWN} more"
                    if len(numbers) > TEXT_FIELDS_SHOWN
                    else ""
                )
                + f", {'are' if len(numbers) > 1 else 'is'} not read (records and values do not go together)"
                if numbers
                else ""
            )
        )
    return (
        f"{what}, not read (unmapped, only top-level numbers are): map what {they} by its path in "
        f"json_mapping.values, {read} (an array of numbers mapped whole is a waveform)"
    )


# record keys gateways give a record's quality under (Kepware "q", Siemens "qc", OPC UA "StatusCode", ...)
_QUALITY_NAMES = frozenset(
    {"q", "qc", "quality", "qualitycode", "quality_code", "status", "statuscode", "status_code", "sc"}
)


def records_field_hint(payload: bytes | str, mapping: JsonMapping) -> str | None:
    """For a records message: the setting that reads its records' quality (or time), when its first record
    has no ``records.quality`` (``records.timestamp``) key but one named like a quality (a time) beside
    it: such records were all read GOOD (stamped with the message's time), silently. None otherwise (and
    for a setting that is null: no quality or time read, chosen).
    Costs a parse: call it once per topic, not per message."""
    rec = mapping.records
    if rec is None:
        return None
    try:
        raw = _parse(payload)
    except CodecError:
        return None
    if rec.array:
        items = _get(raw, rec.array) if type(raw) is dict else None
    else:
        items = raw
    if type(items) is not list or not items or type(items[0]) is not dict:
        return None
    first = items[0]
    said = []
    if (
        rec.quality is not None and _get(first, rec.quality) is _MISSING
    ):  # null: the mapping reads no quality, chosen
        names = [k for k in first if k != rec.value and k.lower() in _QUALITY_NAMES]
        if names:
            said.append(
                f"records hold no {rec.quality!r} (records.quality) but {names[0]!r}, read as no quality: every "
                f"record is GOOD; set json_mapping.records.quality: {names[0]}"
            )
    if rec.timestamp is not None and _get(first, rec.timestamp) is _MISSING:
        # a key named like a time and holding one (EdgeX's "origin" in ns; not an "origin": "plc-3/modbus"), said
        # with its format when the mapping's is another: records.timestamp alone read it in the mapping's (epoch_s:
        # EdgeX's origin refused as past the year 5000, every record)
        times = (
            (k, held)
            for k, v in first.items()
            if k not in (rec.value, rec.name)
            and (k.lower() in _TIME_NAMES or any(w in k.lower() for w in _TIME_WORDS))
            and (held := _time_held(v)) is not None
        )
        found = next(times, None)
        if found is not None:
            key, (unit, fmt) = found
            also = f" and timestamp_format: {unit.value}" if unit != mapping.timestamp_format else ""
            said.append(
                f"records hold no {rec.timestamp!r} (records.timestamp) but {key!r}, a time as {fmt}, not read: "
                f"each record gets the message's time; set json_mapping.records.timestamp: {_as_setting(key)}{also}"
            )
    return "; ".join(said) or None


def _timestamp_reader(mapping: JsonMapping) -> Callable[[dict, float], float]:
    name = mapping.timestamp_field
    if name is None or "." in name or mapping.timestamp_format is not TimestampFormat.EPOCH_S:
        return lambda raw, now: _timestamp(raw, mapping, now)
    isfinite = math.isfinite

    def epoch_s(raw: dict, now: float) -> float:  # the common case, checked without detours
        v = raw.get(name, _MISSING)
        if v is _MISSING:
            return now
        tv = type(v)
        if tv is float and isfinite(v) and -SECONDS_MAX < v < SECONDS_MAX:
            return v
        if tv is int and -SECONDS_MAX < v < SECONDS_MAX:
            return float(v)
        return _timestamp(raw, mapping, now)  # every other case, with its exact error

    return epoch_s


def encode(obj: dict[str, Any]) -> bytes:
    """Encode a dict as compact UTF-8 JSON (NumPy arrays and scalars become lists and numbers)."""

    return json.dumps(obj, separators=(",", ":"), default=_known, allow_nan=False).encode()


def _known(o: Any) -> Any:
    """NumPy values as numbers and lists, enums as their values, bytes as base64 text (an OPC UA ByteString's
    JSON form, Part 6 5.4.2.8: ``str`` made Python's repr of them, ``"b'\\xe0\\x04'"``, which no consumer
    decodes); TypeError for anything else."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, enum.Enum):
        return o.value
    if isinstance(o, bytes | bytearray | memoryview):
        return base64.b64encode(o).decode("ascii")
    raise TypeError(f"cannot encode {type(o).__name__} as JSON")


def _plain(o: Any) -> Any:
    """What ``dumps`` writes for an object ``json`` does not know: ``_known``'s forms, else its ``str``."""
    try:
        return _known(o)
    except TypeError:
        return str(o)


def dumps(obj: Any, *, default: Callable[[Any], Any] | None = _plain, **kw: Any) -> str:
    """``json.dumps`` whose output strict parsers accept: NaN and +-infinity (also inside NumPy arrays and
    scalars) become ``null``, and a lone surrogate in a text (a key or a value: a file name, a terminal's or a
    device's bytes that were not UTF-8, which Python holds as ``\\udcfc``) becomes U+FFFD. Python's own
    ``json`` writes such a character as a ``"\\udcfc"`` escape that serde_json, PostgreSQL's jsonb and other
    strict readers refuse whole (or, with ``ensure_ascii=False``, as a character UTF-8 cannot encode). The common
    case, with neither, costs one plain encoding and a scan of its text."""
    try:
        out = json.dumps(obj, allow_nan=False, default=default, **kw)
    except ValueError as e:
        if "Out of range float" not in str(e):
            raise
        obj = _finite(obj)
        out = json.dumps(obj, allow_nan=False, default=default, **kw)
    if ("\\ud" in out) if kw.get("ensure_ascii", True) else not out.isascii() and _lone(out):
        # an escape of a surrogate: a character past U+FFFF (an emoji, written as a pair) or a lone one, also in
        # what ``default`` made of an object (a path's or an exception's text)
        plain = default
        out = json.dumps(
            _valid(obj),
            allow_nan=False,
            default=None if plain is None else lambda o: _valid(plain(o)),
            **kw,
        )
    return out


def _lone(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _valid(o: Any) -> Any:
    """``o`` with each text holding a lone surrogate made valid (U+FFFD for each; a pair of them is the character
    they make), or ``o`` itself when none does. Two keys that differ only by their lone surrogates become one, the
    later's value kept."""
    if isinstance(o, str):
        return o.encode("utf-16", "surrogatepass").decode("utf-16", "replace") if _lone(o) else o
    if isinstance(o, dict):
        items = [(_valid(k), _valid(v)) for k, v in o.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, o.items(), strict=True)):
            return o
        return dict(items)
    if isinstance(o, list | tuple):
        vals = [_valid(v) for v in o]
        return o if all(v is v0 for v, v0 in zip(vals, o, strict=True)) else vals
    return o


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, np.generic):
        return _finite(o.item())
    return o
