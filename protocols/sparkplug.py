"""Sparkplug B: payload encode/decode, topic parsing, rebirth requests. Pure, no I/O.

Wraps the generated ``protocols.gen.sparkplug_b_pb2`` (from ``protocols/sparkplug_b.proto``)
in small typed objects: ``Metric`` (name, alias, datatype, value, timestamp) and ``Payload``
(timestamp, seq, metrics). Supported value types: the integer types, Float, Double, Boolean,
String/Text/UUID, DateTime (``datetime_text`` reads its milliseconds as a time) and Bytes, and Templates (``Template``: a definition, or an instance whose
members are metrics, nested up to ``MAX_TEMPLATE_DEPTH``), and DataSets (``DataSet``: columns, their
datatypes, rows of cells; ``dataset_arrays`` reads each column as an array). Sparkplug 3.0 arrays decode as their bytes (a data message
leaves their datatype out): ``array_value`` reads them with the birth's datatype. Signed integers are
stored the Sparkplug way (two's complement in the unsigned field) and decoded back to negative Python ints.
Every decoding failure is ``protocols.json_codec.CodecError`` (reasons ``garbage_protobuf``,
``bad_topic``, ``wrong_type``, ``too_many_metrics``: over ``MAX_METRICS`` in one payload, Template members
and DataSet cells included; ``non_finite`` is left to the caller), except a payload's metric whose name (or a
name inside it: a Template member's, a Template's reference, a DataSet column's) is not UTF-8 or over
``MAX_ID_CHARS`` characters: that metric alone comes back ``refused``, the others read (under protobuf's
pure-Python runtime, which refuses a whole message for a string that is not UTF-8, a metric holding any such
text: ``_parse_by_metric``). Eclipse Tahu's compressed payloads (``SPBV1.0_COMPRESSED``, DEFLATE or GZIP) are
inflated, bounded (``too_large`` past it; ``bad_compression``), and read as the payload they hold.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
import time
from dataclasses import dataclass, field
from typing import Any

from protocols import quality_names
from protocols.json_codec import (
    MS_LOOKS_LIKE_S,
    CodecError,
    coarse_time,
    could_be_coarse,
    date_only,
    offset_problem,
)
from protocols.topics import shown_topic

NAMESPACE = "spBv1.0"
MAX_ID_CHARS = 1024  # a group, edge node or device id, or a metric name, longer than this is refused
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"


class DataType(enum.IntEnum):
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19


class MessageType(enum.StrEnum):
    NBIRTH = "NBIRTH"
    NDATA = "NDATA"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDATA = "DDATA"
    DDEATH = "DDEATH"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


_WIDE_INTS = (DataType.INT64, DataType.UINT64)  # their own field is long_value (64 bits)
_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_UNSIGNED_BITS = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}
_INT_FIELD = {DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8, DataType.UINT16, DataType.UINT32}
_LONG_FIELD = {DataType.INT64, DataType.UINT64, DataType.DATETIME}
_STR_FIELD = {DataType.STRING, DataType.TEXT, DataType.UUID}


@dataclass(frozen=True, slots=True)
class Metric:
    name: str | None = None
    alias: int | None = None
    datatype: int = DataType.DOUBLE
    value: Any = None
    timestamp_ms: int | None = None
    is_null: bool = False
    quality: int | str | bool | None = (
        None  # its "Quality" property, when the node sends one (``quality_of``)
    )
    is_historical: bool = False  # a value sent late (a node's store-and-forward), not the current one
    is_transient: bool = False  # a value to use live, not to historize (Sparkplug 3.0)
    # its datatype field was sent as 0, Unknown (``datatype`` 0 as well: left out, the data messages' way)
    unknown_type: bool = False
    # why a payload's metric is not read, ``(reason, detail)``: its name, or a name inside it (a Template member's,
    # a Template's reference, a DataSet column's), is not UTF-8 (``garbage_protobuf``) or over ``MAX_ID_CHARS``
    # characters (``name_too_long``); such a metric has no name and no value, the others are read
    refused: tuple[str, str] | None = None
    # its value came in ``int_value`` (uint32) at 2**31 or above: for an Int64 or UInt64 (a uint64, written in
    # ``long_value``) that is no one number, -5 cut to 32 bits as much as 4294967291 (the host refuses it so)
    int_value_high: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Template:
    """A Template metric's value (Sparkplug's structured type; Ignition's UDTs are sent as these): a
    definition (``is_definition``, in an NBIRTH: members with their default values) or an instance of the
    definition named ``ref``, whose ``metrics`` are its members; in a data or command message an instance
    may carry only the members that changed."""

    metrics: list[Metric] = field(default_factory=list)
    ref: str | None = None
    is_definition: bool = False
    version: str | None = None


@dataclass(frozen=True, slots=True)
class DataSet:
    """A DataSet metric's value (a table: Ignition's Dataset tags are sent as these): column names, their
    datatypes, and rows of cells (None: a cell sent without a value). ``dataset_arrays`` reads its columns."""

    columns: list[str] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    problem: str = (
        ""  # why its rows are not read (a row of more or fewer cells than columns, say): wrong_type
    )


# the datatypes Sparkplug B defines (3.0, Payloads, Datatypes): Int8 (1) to Template (19), PropertySet (20),
# PropertySetList (21), Int8Array (22) to DateTimeArray (34). 0 is Unknown, a placeholder of no type, and a
# number past 34 is no type of any version: a value stated of either cannot be interpreted
DEFINED_DATATYPES = range(1, 35)


MAX_TEMPLATE_DEPTH = 16  # templates inside templates; a deeper payload is refused, not recursed into
# metrics in one payload, Template members and DataSet cells included: a birth of a large node holds tens of
# thousands; a few bytes each, 8 MB could hold millions, each decoded in Python on the agent's loop (1M took
# 10 s; 100,000 DataSet cells take about 70 ms)
MAX_METRICS = 100_000


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp_ms: int | None = None
    seq: int | None = None
    metrics: list[Metric] = field(default_factory=list)
    uuid: str | None = None


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    group: str
    message_type: MessageType
    edge_node: str
    device: str | None = None

    def __str__(self) -> str:
        if self.message_type is MessageType.STATE:
            return f"{NAMESPACE}/STATE/{self.edge_node}"
        parts = [NAMESPACE, self.group, self.message_type.value, self.edge_node]
        if self.device:
            parts.append(self.device)
        return "/".join(parts)


def _pb():
    from protocols.gen import sparkplug_b_pb2  # generated; imported on first use

    return sparkplug_b_pb2


def infer_datatype(value: Any) -> DataType:
    if isinstance(value, bool):
        return DataType.BOOLEAN
    if isinstance(value, int):
        return DataType.INT64
    if isinstance(value, float):
        return DataType.DOUBLE
    if isinstance(value, str):
        return DataType.STRING
    if isinstance(value, bytes | bytearray):
        return DataType.BYTES
    raise CodecError("wrong_type", f"no Sparkplug datatype for {type(value).__name__}")


def _set_value(m: Any, dt: int, value: Any) -> None:
    if dt in _SIGNED_BITS:
        bits = _SIGNED_BITS[DataType(dt)]
        v = int(value) & ((1 << bits) - 1)  # two's complement, as Tahu writes it
        if dt == DataType.INT64:
            m.long_value = v
        else:
            m.int_value = v
    elif dt in _INT_FIELD:
        m.int_value = int(value)
    elif dt in _LONG_FIELD:
        m.long_value = int(value)
    elif dt == DataType.FLOAT:
        m.float_value = float(value)
    elif dt == DataType.DOUBLE:
        m.double_value = float(value)
    elif dt == DataType.BOOLEAN:
        m.boolean_value = bool(value)
    elif dt in _STR_FIELD:
        m.string_value = str(value)
    elif dt in (DataType.BYTES, DataType.FILE):
        m.bytes_value = bytes(value)
    elif dt == DataType.TEMPLATE and isinstance(value, Template):
        t = m.template_value
        t.is_definition = value.is_definition
        if value.ref is not None:
            t.template_ref = value.ref
        if value.version is not None:
            t.version = value.version
        for member in value.metrics:
            _fill(t.metrics.add(), member)
    elif dt == DataType.DATASET and isinstance(value, DataSet):
        d = m.dataset_value
        d.num_of_columns = len(value.columns)
        d.columns.extend(value.columns)
        d.types.extend(value.types)
        for row in value.rows:
            r = d.rows.add()
            for cell, t in zip(row, value.types, strict=True):
                e = r.elements.add()  # a cell has the fields of a metric's value, by the same names
                if cell is not None:
                    _set_value(e, t, cell)
    else:
        raise CodecError("wrong_type", f"encoding datatype {dt} is not supported")


def encode(payload: Payload) -> bytes:
    """Serialise a ``Payload`` to Sparkplug B protobuf bytes."""
    pb = _pb().Payload()
    if payload.timestamp_ms is not None:
        pb.timestamp = int(payload.timestamp_ms)
    if payload.seq is not None:
        pb.seq = int(payload.seq)
    if payload.uuid is not None:
        pb.uuid = payload.uuid
    for metric in payload.metrics:
        _fill(pb.metrics.add(), metric)
    return pb.SerializeToString()


def _fill(m: Any, metric: Metric) -> None:
    if metric.name is not None:
        m.name = metric.name
    if metric.alias is not None:
        m.alias = int(metric.alias)
    if metric.timestamp_ms is not None:
        m.timestamp = int(metric.timestamp_ms)
    if metric.datatype or metric.unknown_type:  # 0 is left out (as data messages do), unless Unknown is meant
        m.datatype = int(metric.datatype)
    if metric.quality is not None:
        m.properties.keys.append(QUALITY_PROPERTY)
        pv = m.properties.values.add()
        if isinstance(metric.quality, str):
            pv.type, pv.string_value = DataType.STRING, metric.quality
        elif isinstance(metric.quality, bool):
            pv.type, pv.boolean_value = DataType.BOOLEAN, metric.quality
        else:
            pv.type, pv.int_value = DataType.INT32, int(metric.quality) & 0xFFFFFFFF
    if metric.is_historical:
        m.is_historical = True
    if metric.is_transient:
        m.is_transient = True
    if metric.is_null or metric.value is None:
        m.is_null = True
    else:
        _set_value(m, int(metric.datatype), metric.value)


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def datetime_text(ms: int) -> str:
    """A DateTime metric's value (milliseconds since the epoch, UTC) as ISO 8601 text with its zone, the form
    the OPC UA source gives a DateTime in: ``2026-12-03T05:17:50.123000+00:00``. A time before 1970 comes in
    two's complement (Tahu's Java nodes write a ``Date``'s negative milliseconds so) and is read so; one
    outside the years 1..9999 raises ``CodecError('wrong_type')``."""
    signed = ms - (1 << 64) if ms >= 1 << 63 else ms
    try:
        return (_EPOCH + _dt.timedelta(milliseconds=signed)).isoformat()
    except OverflowError:
        raise CodecError(
            "wrong_type", f"DateTime {signed} ms since 1970 is outside the years 1..9999"
        ) from None


def datetime_read(value: Any) -> str:
    """A DateTime metric's value from a node, as ISO 8601 text with its zone (``datetime_text``). The specification
    has it in ``long_value`` (milliseconds since 1970); a node that puts it in another field is read by the same
    rules, never passed on as it came: text is a time with its zone (``datetime_ms``: a date alone, text without
    a zone or no time at all is ``bad_timestamp``), a double a whole number of milliseconds in the years
    1..9999; anything else (a boolean, a fraction, NaN) is ``wrong_type``."""
    if type(value) is int:
        return datetime_text(value)
    if type(value) is float:
        if not math.isfinite(value) or not value.is_integer():
            raise CodecError(
                "wrong_type", f"DateTime {value!r} is not a whole number of milliseconds since 1970"
            )
        if abs(value) >= 1 << 63:
            raise CodecError("wrong_type", f"DateTime {value!r} ms since 1970 is outside the years 1..9999")
        return datetime_text(int(value))
    if isinstance(value, str):
        return datetime_text(datetime_ms(value))
    raise CodecError("wrong_type", f"DateTime {value!r} is no time: milliseconds since 1970 were expected")


# the last millisecond a DateTime metric is written up to (the years a time is read in, ``datetime_text``)
DATETIME_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def datetime_ms(value: Any) -> int:
    """A value for a DateTime metric (unsigned milliseconds since 1970, UTC) from ISO 8601 text with its zone
    (``2026-12-03T05:17:50Z``, ``...+01:00``: the form readings give a DateTime in, ``datetime_text``), an
    aware ``datetime``, or whole epoch milliseconds. Raises ``CodecError('bad_timestamp')`` for text that is no
    instant: a date alone (``2026-12-04``, the JSON codec's ``date_only``), a time without a zone (a node in
    another zone would take it as another instant), text that is no time; ``CodecError('wrong_type')`` for one
    before 1970 or past the year 9999 and anything else (a boolean, a fraction)."""
    shown = repr(value)
    if isinstance(value, str):
        text = value.strip()  # (padding says nothing of the time: the forms below are looked at without it)
        try:
            value = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise CodecError(
                "bad_timestamp", f"{shown} is no ISO 8601 time; write e.g. '2026-12-03T05:17:50Z' or epoch ms"
            ) from None
        if could_be_coarse(value):
            if date_only(text):  # the JSON codec's rule: fromisoformat reads it as midnight, hours off
                raise CodecError(
                    "bad_timestamp",
                    f"{shown} is a date without a time of day, no instant; write a date and time with its zone, "
                    "e.g. '2026-12-03T05:17:50Z'",
                )
            if (coarse := coarse_time(text)) is not None:  # T10: the whole hour, read as 10:00:00
                raise CodecError(
                    "bad_timestamp",
                    f"{shown} is {coarse}; write a date and time with its zone, e.g. '2026-12-03T05:17:50Z'",
                )
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise CodecError(
                "bad_timestamp",
                f"{shown} has no zone: the node would take it as another instant; add Z (UTC) or an offset, "
                "e.g. '2026-12-03T05:17:50Z' or '2026-12-03T06:17:50+01:00'",
            )
        if (odd := offset_problem(value)) is not None:
            raise CodecError("bad_timestamp", f"{shown}: {odd}; write e.g. '2026-12-03T06:17:50+01:00'")
        try:
            ms = (value - _EPOCH) // _dt.timedelta(milliseconds=1)
        except OverflowError:
            ms = -1
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
        if MS_LOOKS_LIKE_S[0] <= ms < MS_LOOKS_LIKE_S[1]:  # as the JSON codec refuses such a timestamp
            raise CodecError(
                "wrong_type",
                f"{shown} as milliseconds is in early 1970 ({datetime_text(ms)}): epoch seconds? a DateTime "
                f"metric takes milliseconds, {ms * 1000} (or ISO 8601 text with its zone)",
            )
    else:
        raise CodecError(
            "wrong_type",
            f"{shown} is no time: write ISO 8601 text with its zone ('2026-12-03T05:17:50Z') or "
            "whole epoch milliseconds",
        )
    if not 0 <= ms <= DATETIME_MAX_MS:
        raise CodecError(
            "wrong_type",
            f"{shown} is out of the range of a Sparkplug DateTime, 1970-01-01T00:00:00Z..9999-12-31T23:59:59.999Z "
            f"(0..{DATETIME_MAX_MS} ms since 1970)",
        )
    return ms


def as_declared(value: int, datatype: int) -> int:
    """An integer from the wire (``int_value`` is uint32, ``long_value`` uint64: Tahu writes signed types
    in two's complement) as the value of ``datatype``: Int8/16/32/64 get their sign back, others stay.
    Data messages should not repeat the datatype (Sparkplug 3.0), so a host applies the one from the
    metric's birth: -5 as an Int32 arrives as 4294967291. A wire integer that is no form of a value of the
    type (70000 for an Int16, 2**32 + 5 for an Int32: neither the value, nor its two's complement in the
    type's bits, 32 or 64) is returned as it came, which ``fits`` then refuses: cut to the type's bits it
    was another number (4464, 5), passed on as the node's."""
    bits = _SIGNED_BITS.get(datatype)  # type: ignore[call-overload]
    if bits is None:
        return value
    low = value & ((1 << bits) - 1)
    negative = low >> (bits - 1)
    if value != low:  # high bits: the sign extended to the wire's 32 or 64 bits, or not this type's form
        wider = (w for w in (32, 64) if w > bits)
        if not (negative and any(value >> bits == (1 << (w - bits)) - 1 for w in wider)):
            return value  # no sign extension (or a value already signed, as -5): returned as it came
    return low - (1 << bits) if negative else low


def fits(value: int, datatype: int) -> bool:
    """Whether the integer ``value`` (read by ``as_declared``) is within the range of ``datatype`` when that is
    one of Sparkplug's integer types (-32768..32767 for an Int16, 0..255 for a UInt8); any other type: True."""
    bits = _SIGNED_BITS.get(datatype)  # type: ignore[call-overload]
    if bits is not None:
        return -(1 << (bits - 1)) <= value < 1 << (bits - 1)
    bits = _UNSIGNED_BITS.get(datatype)  # type: ignore[call-overload]
    return bits is None or 0 <= value < 1 << bits


# Sparkplug 3.0 array types (Payloads, "Array Types"): little-endian packed in bytes_value, as Tahu reads them
ARRAY_DTYPES = {
    22: "<i1",  # Int8Array
    23: "<i2",
    24: "<i4",
    25: "<i8",
    26: "<u1",  # UInt8Array
    27: "<u2",
    28: "<u4",
    29: "<u8",
    30: "<f4",  # FloatArray
    31: "<f8",  # DoubleArray
    34: "<i8",  # DateTimeArray: ms since the epoch
}
BOOLEAN_ARRAY = (
    32  # a 4-byte little-endian count, then the values packed 8 a byte, first value in the top bit
)
STRING_ARRAY = 33


def array_value(data: bytes, datatype: int) -> Any:
    """A Sparkplug 3.0 array metric's ``bytes_value`` as a 1-D NumPy array (numbers, or truth values for a
    BooleanArray), a StringArray's as text (``string_array_text``); None when ``datatype`` is no array
    (Bytes, File). Raises ``CodecError('wrong_type')`` when the bytes do not fit the type."""
    if datatype == STRING_ARRAY:
        return string_array_text(data)
    import numpy as np  # imported here: a payload without arrays never needs it

    dt = ARRAY_DTYPES.get(datatype)
    if dt is not None:
        size = np.dtype(dt).itemsize
        if len(data) % size:
            raise CodecError(
                "wrong_type", f"array of datatype {datatype}: {len(data)} bytes is no whole number of {size}"
            )
        return np.frombuffer(data, dtype=dt).astype(dt[1:])  # a writable copy in this machine's byte order
    if datatype == BOOLEAN_ARRAY:
        n = int.from_bytes(data[:4], "little") if len(data) >= 4 else -1
        if n < 0 or len(data) - 4 != (n + 7) // 8:
            raise CodecError(
                "wrong_type", f"BooleanArray of {len(data)} bytes does not hold the count its first 4 state"
            )
        return np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=4), count=n).astype(bool)
    return None


def string_array_text(data: bytes) -> str:
    """A StringArray's ``bytes_value`` (each string's UTF-8 bytes and a NUL after it: ``ABC\\0hello\\0``) as
    the JSON text of its strings (``["ABC", "hello"]``): a reading's value is a number, a truth value, text or
    an array of numbers, and JSON text keeps every string whole (a comma or a space in one too), for a rule
    comparing it, the cloud or a consumer that parses it. ``CodecError('wrong_type')`` when the last string has
    no NUL after it or a string is not UTF-8."""
    import json  # imported here: a payload without a StringArray never needs it

    if not data:
        return "[]"
    if data[-1:] != b"\0":
        raise CodecError(
            "wrong_type", f"StringArray of {len(data)} bytes does not end with the NUL each string ends with"
        )
    try:
        strings = data[:-1].decode().split("\0")
    except UnicodeDecodeError:
        raise CodecError("wrong_type", f"StringArray holds text that is not UTF-8: {data[:40]!r}") from None
    return json.dumps(strings, ensure_ascii=False)


def _text(v: Any, what: str) -> Any:
    """A protobuf string field as text: protobuf's upb runtime hands proto2 strings that are not UTF-8 over
    as bytes (a node's bug, or garbage), which would then be taken for a name or a value."""
    if isinstance(v, bytes):
        raise CodecError("garbage_protobuf", f"{what} is not UTF-8 text: {v[:40]!r}")
    return v


class _BadName(CodecError):
    """A name inside a payload's metric (a Template member's, a Template's reference, a DataSet column's) that is
    not UTF-8 (``garbage_protobuf``) or over ``MAX_ID_CHARS`` characters (``name_too_long``): that metric is
    refused, not its payload (``_metric``)."""


def _name(v: Any, what: str) -> str:
    """A name inside a payload's metric, as ``_refused_name`` reads the metric's own: text of at most
    ``MAX_ID_CHARS`` characters (a tag's name, or the name of a definition), else ``_BadName``."""
    if isinstance(v, bytes):
        raise _BadName("garbage_protobuf", f"{what} that is not UTF-8 text ({v[:40]!r}, {len(v)} bytes)")
    if len(v) > MAX_ID_CHARS:
        raise _BadName("name_too_long", f"{what} {shown_topic(v)} over {MAX_ID_CHARS} characters")
    return str(v)


def _too_many() -> CodecError:
    return CodecError(
        "too_many_metrics",
        f"over {MAX_METRICS} metrics (Template members and DataSet cells included) in one payload; skipped undecoded",
    )


def _get_value(m: Any, budget: list[int], depth: int) -> Any:
    which = m.WhichOneof("value")
    if which is None:
        return None
    if which in ("int_value", "long_value"):
        return as_declared(getattr(m, which), m.datatype)
    if which == "template_value":
        if depth >= MAX_TEMPLATE_DEPTH:
            raise CodecError("garbage_protobuf", f"templates nested deeper than {MAX_TEMPLATE_DEPTH} levels")
        t = m.template_value
        budget[0] -= len(t.metrics)
        if budget[0] < 0:
            raise _too_many()
        return Template(
            metrics=[_metric(x, budget, depth + 1) for x in t.metrics],
            ref=_name(t.template_ref, "a Template's reference") if t.HasField("template_ref") else None,
            is_definition=t.is_definition,
            version=t.version if t.HasField("version") else None,
        )
    if which == "dataset_value":
        return _dataset(m.dataset_value, budget)
    if which == "extension_value":
        return None
    if which == "string_value":
        return _text(m.string_value, f"metric {m.name!r}'s string value")
    return getattr(m, which)


def _dataset(d: Any, budget: list[int]) -> DataSet:
    """A DataSet's cells, decoded; one of another shape than its columns keeps its rows unread (``problem``)
    rather than refusing the whole payload: the node's other metrics are good."""
    columns = [_name(c, "a DataSet column's name") for c in d.columns]  # a tag name each, as a metric's
    types = list(d.types)
    budget[0] -= len(d.rows) * max(len(columns), 1)  # each cell is decoded here, as a metric is
    if budget[0] < 0:
        raise _too_many()
    if len(columns) != len(types) or (d.HasField("num_of_columns") and d.num_of_columns != len(columns)):
        problem = f"{d.num_of_columns} columns, {len(columns)} names and {len(types)} datatypes"
        return DataSet(columns, types, [], problem if d.rows else "")
    if columns and d.rows and not d.HasField("num_of_columns") and not any(r.elements for r in d.rows):
        return DataSet(
            columns,
            types,
            [],
            f"{len(d.rows)} rows without cells and no num_of_columns: Eclipse Tahu's JavaScript encoder "
            "(sparkplug-payload) writes no cells when the DataSet has no numOfColumns; set it on the node",
        )
    rows = []
    for r in d.rows:
        if len(r.elements) != len(columns):
            return DataSet(
                columns, types, [], f"a row of {len(r.elements)} cells under {len(columns)} columns"
            )
        rows.append([_cell(e, t) for e, t in zip(r.elements, types, strict=True)])
    return DataSet(columns, types, rows)


@dataclass(frozen=True, slots=True)
class IntValueHigh:
    """A DataSet cell of an Int64 or UInt64 column that came in ``int_value`` (32 bits) at 2**31 or above: -1
    written by a 32-bit encoder (4294967295) as much as the number, no one value (``dataset_arrays`` refuses its
    column, as the host refuses such a metric: ``Metric.int_value_high``). Eclipse Tahu reads an Int64 from
    long_value only: 0 in Java, an error for the DataSet in JavaScript."""

    value: int


def _cell(e: Any, datatype: int) -> Any:
    which = e.WhichOneof("value")
    if which is None or which == "extension_value":
        return None
    if which == "int_value" and e.int_value >= 0x80000000 and datatype in _WIDE_INTS:
        return IntValueHigh(e.int_value)
    if which in ("int_value", "long_value"):
        return as_declared(getattr(e, which), datatype)
    if which == "string_value":
        return _text(e.string_value, "a DataSet cell")
    return getattr(e, which)


# a DataSet column's datatype -> the NumPy type of its array (``dataset_arrays``); Float stays 32 bits, as a
# FloatArray does; a DateTime column is milliseconds since the epoch, as a DateTimeArray
_COLUMN_DTYPES = {
    DataType.INT8: "int8",
    DataType.INT16: "int16",
    DataType.INT32: "int32",
    DataType.INT64: "int64",
    DataType.UINT8: "uint8",
    DataType.UINT16: "uint16",
    DataType.UINT32: "uint32",
    DataType.UINT64: "uint64",
    DataType.FLOAT: "float32",
    DataType.DOUBLE: "float64",
    DataType.BOOLEAN: "bool",
    DataType.DATETIME: "int64",
}
_FLOAT_COLUMNS = (DataType.FLOAT, DataType.DOUBLE)


def cut_to_32(v: int, signed: bool) -> str:
    """The other meaning of ``v`` (2**31 or above) in int_value where a 64-bit integer belongs: an Int64's negative
    number cut to 32 bits (``-5 cut to 32 bits or the number``); a UInt64 is never negative, so a number of 2**32 or
    more cut to its low 32 bits."""
    if signed:
        return f"{v - (1 << 32)} cut to 32 bits or the number"
    return "a number of 2**32 or more cut to its low 32 bits, or the number"


def dataset_arrays(ds: DataSet) -> list[tuple[str, Any, str]]:
    """A DataSet's columns as ``(name, 1-D NumPy array of its rows, "")``; a column that gives no array has
    ``None`` and why: ``"unsupported"`` (text, or a type no array holds) or ``"wrong_type: ..."`` (a cell
    of another type than its column's, or an empty cell where no NaN can stand: only Float and Double
    columns take an empty cell, as NaN). A table without rows gives nothing (no array of no samples); one
    whose shape is wrong, one ``("", None, "wrong_type: ...")``."""
    import numpy as np  # imported here: a payload without a DataSet never needs it

    if ds.problem:
        return [("", None, f"wrong_type: {ds.problem}")]
    if not ds.rows:
        return []
    out: list[tuple[str, Any, str]] = []
    for i, (name, dt) in enumerate(zip(ds.columns, ds.types, strict=True)):
        np_type = _COLUMN_DTYPES.get(dt)  # type: ignore[call-overload]
        if np_type is None:
            out.append((name, None, "unsupported"))
            continue
        cells = [r[i] for r in ds.rows]
        if dt in _FLOAT_COLUMNS:
            cells = [math.nan if c is None else c for c in cells]
        want = (bool,) if dt == DataType.BOOLEAN else (float,) if dt in _FLOAT_COLUMNS else (int,)
        bad = next((c for c in cells if type(c) not in want), _NO_CELL)
        if type(bad) is IntValueHigh:
            out.append(
                (
                    name,
                    None,
                    f"wrong_type: a cell {bad.value} of a column of {'an Int64' if dt == DataType.INT64 else 'a UInt64'}"
                    f" came in int_value (32 bits), not in long_value as Sparkplug writes it: "
                    + cut_to_32(bad.value, dt == DataType.INT64)
                    + ", no one value; the column skipped (the edge node must write a 64-bit integer in long_value)",
                )
            )
            continue
        if bad is not _NO_CELL:
            what = "an empty cell" if bad is None else f"a cell {type(bad).__name__} {str(bad)[:40]!r}"
            out.append((name, None, f"wrong_type: {what} in a column of datatype {dt}"))
            continue
        try:
            out.append((name, np.array(cells, dtype=np_type), ""))
        except OverflowError:
            out.append((name, None, f"wrong_type: a cell out of the range of datatype {dt}"))
    return out


_NO_CELL = object()


def _refused_name(m: Any) -> tuple[str, str] | None:
    """Why a payload's metric is not read by its name (None: it is): a name that is not UTF-8 (protobuf's upb
    runtime hands it over as bytes) or of over ``MAX_ID_CHARS`` characters (a host keeps each metric's name,
    100,000 a node: births of names of tens of kilobytes held gigabytes). Refused whole, the payload's other
    metrics were lost with it (a birth's: its node's data unread)."""
    if not m.HasField("name"):
        return None
    name = m.name
    if isinstance(name, bytes):
        return "garbage_protobuf", f"a metric name that is not UTF-8 text ({name[:40]!r}, {len(name)} bytes)"
    if len(name) > MAX_ID_CHARS:
        return "name_too_long", f"a metric name {shown_topic(name)} over {MAX_ID_CHARS} characters"
    return None


def _metric(m: Any, budget: list[int], depth: int = 0) -> Metric:
    if depth == 0:
        # a payload's own metric: one whose name, or a name inside it, is not read is skipped, its value unread;
        # refused whole, the payload's other metrics were lost with it (a birth's: its node's data unread)
        refused = _refused_name(m)
        if refused is None:
            try:
                return _read_metric(m, budget, depth)
            except _BadName as e:
                name = f"metric {shown_topic(m.name)}: " if m.HasField("name") else ""
                refused = e.reason, f"{name}{e.detail}"
        return Metric(alias=m.alias if m.HasField("alias") else None, datatype=m.datatype, refused=refused)
    return _read_metric(m, budget, depth)


def _read_metric(m: Any, budget: list[int], depth: int) -> Metric:
    # a Template member's name (the payload's own metric's is checked by ``_refused_name``)
    name = _name(m.name, "a Template member's name") if m.HasField("name") else None
    return Metric(
        name=name,
        alias=m.alias if m.HasField("alias") else None,
        datatype=m.datatype,
        value=_get_value(m, budget, depth),
        timestamp_ms=m.timestamp if m.HasField("timestamp") else None,
        is_null=m.is_null,
        quality=_quality_property(m.properties) if m.HasField("properties") else None,
        is_historical=m.is_historical,
        is_transient=m.is_transient,
        unknown_type=m.datatype == 0 and m.HasField("datatype"),
        int_value_high=m.int_value >= 0x80000000,  # (0 when the value is in another field)
    )


QUALITY_PROPERTY = "Quality"


def _quality_property(props: Any) -> int | str | bool | None:
    for key, pv in zip(props.keys, props.values, strict=False):
        if not isinstance(key, str) or key.lower() != "quality":
            continue
        which = pv.WhichOneof("value")
        if which in ("int_value", "long_value"):
            q = as_declared(getattr(pv, which), pv.type)
            if which == "int_value" and pv.type == DataType.INT64 and q >= 1 << 31:
                # an Int64 (signed) in the 32-bit field: its sign is bit 31, as an Int32's is (a quality code is
                # 32 bits, Ignition's QualityCode an Int32): Bad_Stale came as 2147483652, not -2147483132 as in
                # long_value or as an Int32 (the same low 32 bits, so the same level and name)
                q -= 1 << 32
            return q
        if which == "string_value":
            return _text(pv.string_value, "a metric's Quality property")
        if which == "boolean_value":  # a node imitating Ignition's property with a truth value
            return bool(pv.boolean_value)
        # sent, but null, a number with a fraction, a property set: a quality no one can read is not a good one
        if which in ("float_value", "double_value") and float(getattr(pv, which)).is_integer():
            return int(getattr(pv, which))
        return UNREADABLE_QUALITY
    return None


UNREADABLE_QUALITY = "unreadable"  # a Quality property of no type a quality is read from: uncertain


def quality_of(q: int | str | bool | None) -> str:
    """``"good"``, ``"uncertain"`` or ``"bad"`` for a metric's "Quality" property. Absent is good (Cirrus
    Link's nodes leave a good quality out). Ignition 8 sends its 32-bit QualityCode, whose top two bits are
    the level (good, uncertain, bad, error); older nodes send OPC DA's codes (192 good, 64-191 uncertain,
    below 64 bad) or Ignition 7's 500 for stale (bad); Ignition's bare subcodes 256-511 are uncertain and
    512-1023 bad. A string is read by its first word (Good_..., Uncertain_..., Bad_..., Error_...), any other
    string (and a property of a type no quality is read from: null, a property set) is uncertain; a truth
    value is good or bad."""
    if q is None:
        return "good"
    if isinstance(q, bool):  # true/false, as a JSON record's quality is read
        return "good" if q else "bad"
    if isinstance(q, str):
        low = q.strip().lower()
        for word, level in (("good", "good"), ("uncertain", "uncertain"), ("bad", "bad"), ("error", "bad")):
            if low.startswith(word):
                return level
        return "uncertain"
    q &= 0xFFFFFFFF
    if q >> 30:
        return ("good", "uncertain", "bad", "bad")[q >> 30]
    if q <= 0xFF:
        return "good" if q & 0xC0 == 0xC0 else "uncertain" if q & 0xC0 == 0x40 else "bad"
    if q == 500:
        return "bad"
    if q <= 0x1FF:
        return "uncertain"
    if q <= 0x3FF:
        return "bad"
    return "good"


def quality_reason(q: int | str | bool | None) -> tuple[str, str | None]:
    """``quality_of(q)`` and, when not good, why (``protocols.quality_names``): the node's own word (Ignition's
    ``Bad_Stale``, ``Uncertain_...``), else its number's name: a 32-bit QualityCode whose level bits are set by
    its OPC UA StatusCode name (``BadNotConnected``), or by level and number where OPC UA has none (Ignition 8's
    ``Bad_0x80000204``); OPC DA's code by OPC DA's name (``BadCommFailure``); Ignition 7's 500 ``Bad_Stale``;
    another number ``quality_<n>``; false ``quality_false``; a property of no readable type
    ``quality_unreadable``."""
    level = quality_of(q)
    if level == "good":
        return level, None
    if q is None or isinstance(q, bool):
        return level, "quality_false"
    if isinstance(q, str):
        return level, "quality_unreadable" if q == UNREADABLE_QUALITY else quality_names.text(q)
    u = q & 0xFFFFFFFF
    if u >> 30:
        return level, quality_names.opcua(u)
    if u <= 0xFF:
        return level, quality_names.opcda(u)
    return level, "Bad_Stale" if u == 500 else f"quality_{u}"


def _parse(data: bytes) -> tuple[Any, dict[int, str]]:
    """The payload's message, and which of its metrics are not read (index -> why: ``_parse_by_metric``)."""
    from google.protobuf.message import DecodeError

    pb = _pb().Payload()
    try:
        pb.ParseFromString(bytes(data))
    except UnicodeDecodeError:
        return _parse_by_metric(bytes(data))
    except (DecodeError, RuntimeError, ValueError, TypeError) as e:
        raise CodecError("garbage_protobuf", f"not a Sparkplug B payload ({e})"[:160]) from None
    except Exception as e:
        raise CodecError("garbage_protobuf", f"not a Sparkplug B payload ({type(e).__name__})") from None
    return pb, {}


def _fields(buf: bytes) -> list[tuple[int, int, int, int, int]] | None:
    """The top-level fields of protobuf bytes, ``(field number, wire type, start, value's start, end)``: the
    field is ``buf[start:end]``, its value (a length-delimited one's without its length) ``buf[value's
    start:end]``; None when they do not parse."""
    out, i = [], 0
    while i < len(buf):
        start, tag = i, _varint(buf, i)
        if tag is None:
            return None
        key, i = tag
        wire, at = key & 7, i
        if wire == 0:
            v = _varint(buf, i)
            if v is None:
                return None
            i = v[1]
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n = _varint(buf, i)
            if n is None:
                return None
            at, i = n[1], n[1] + n[0]
        else:  # groups: Sparkplug has none
            return None
        if i > len(buf):
            return None
        out.append((key >> 3, wire, start, at, i))
    return out


def _parse_by_metric(data: bytes) -> tuple[Any, dict[int, str]]:
    """A payload that protobuf's pure-Python runtime (``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``, or where
    no upb wheel is built for the gateway's CPU) refused for a string that is not UTF-8: upb hands such a string
    over as bytes, this runtime refuses the whole message, so one bad name lost a birth's other metrics. Parsed
    again metric by metric (field 2), a metric that holds such text (its name, a name inside it, a text value)
    is left with its alias and datatype only, and named by its index with why; the others are read."""
    fields = _fields(data)
    if fields is None:
        raise CodecError("garbage_protobuf", "not a Sparkplug B payload (its fields do not parse)")
    if sum(1 for f in fields if f[0] == 2) > MAX_METRICS:  # before any is decoded
        raise _too_many()
    pb, unread = _pb().Payload(), {}
    try:
        pb.ParseFromString(b"".join(data[a:b] for n, _, a, _, b in fields if n != 2))
        for n, wire, _, at, end in fields:
            if n != 2 or wire != 2:
                continue
            m, raw = pb.metrics.add(), data[at:end]
            try:
                m.ParseFromString(raw)
            except UnicodeDecodeError as e:
                inner = _fields(raw) or []
                m.Clear()
                m.ParseFromString(b"".join(raw[a:b] for k, w, a, _, b in inner if k in (2, 4) and w == 0))
                names = [raw[v:b] for k, w, _, v, b in inner if k == 1 and w == 2]
                try:
                    shown = f"metric {shown_topic(names[0].decode())}: " if names else ""
                except UnicodeDecodeError:
                    shown = ""
                bad = bytes(e.object)
                unread[len(pb.metrics) - 1] = (
                    f"{shown}text that is not UTF-8 ({bad[:40]!r}, {len(bad)} bytes)"
                )
    except CodecError:
        raise
    except Exception as e:
        raise CodecError("garbage_protobuf", f"not a Sparkplug B payload ({e})"[:160]) from None
    return pb, unread


# Eclipse Tahu's compressed payload (its Java and JavaScript nodes, with compression turned on): the whole
# payload, encoded and compressed, in ``body``; ``uuid`` says so; a String metric ``algorithm`` names
# DEFLATE (zlib's format, as java.util.zip.Deflater and pako write it; the default when the metric is absent)
# or GZIP. Both are read whatever their header says, and a raw deflate stream too
COMPRESSED_UUID = "SPBV1.0_COMPRESSED"
ALGORITHM_METRIC = "algorithm"
COMPRESSION_ALGORITHMS = ("DEFLATE", "GZIP")
MAX_INFLATED_BYTES = (
    8 * 1024 * 1024
)  # the inflated payload's bound by default (MqttSettings.max_message_bytes)
# the inflated bytes an edge node's compressed payloads may take per second by default
# (SparkplugHostSettings.max_inflated_bytes_per_s; a source's nodes together, INFLATE_TOTAL_NODES times it)
INFLATE_BYTES_PER_S = 16 * 1024 * 1024
INFLATE_TOTAL_NODES = 4
# a node refused a payload by its budget within this time (s) is storming: it may not draw on a total's reserve
STORMING_S = 1.0
# ... and a budget with less than this share of its second's worth left is busy: it may not draw on a total's
# reserve either (``InflateBudget.spent``)
BUSY_LEFT = 0.5


class InflateBudget:
    """The bytes an edge node (or a source) may inflate per second, a token bucket of one second's worth
    (full at first). Inflating and decoding cost the loop by the inflated byte (about 1 ms per MiB), and a
    node's 8 KB can inflate to 8 MiB: without a budget, 100 such messages a second (0.8 MB/s on the wire) would
    take all of the agent's loop. A payload is inflated while some budget is left, and what it inflated is
    charged (the bucket may go into debt by one message, paid back before the next): over any T seconds at
    most ``per_s * (T + 1)`` bytes plus one message are inflated, and none is inflated in vain.
    A node's budget may draw on a ``total`` one as well (its source's, all nodes together): a payload is
    inflated while both have some left and is charged to both, so a flooding node spends its own budget and
    its share of the total, not its neighbours' budgets, while many nodes together stay held to the total.
    A total may keep a ``reserve``, the last of it that budgets refused within the last ``STORMING_S`` while
    not full (their nodes are storming: they send more than their budget, or than the total leaves them), or that
    have less than ``BUSY_LEFT`` of their second's worth left (busy: a storm's opening burst, in which nothing was
    refused yet; a birth sequence is judged at its NBIRTH, ``births_begin``), may not draw on:
    however many nodes storm, they stop at it (past it by one message at most), and a calm node, refused
    nothing, finds the total with some left. Without it, four storming nodes spent the total between them, and
    a calm node's payload waited on them. New names are calm too, and each may draw on the reserve, but the
    total still bounds them all.
    ``whose`` and ``setting`` name the budget in the ``inflate_budget`` message."""

    def __init__(
        self,
        per_s: float,
        clock: Any = time.monotonic,
        *,
        total: InflateBudget | None = None,
        reserve: float = 0.0,
        whose: str = "this source's compressed payloads",
        setting: str = "max_inflated_bytes_per_s",
    ) -> None:
        self.per_s, self._clock, self.total, self.reserve = per_s, clock, total, reserve
        self.whose, self.setting = whose, setting
        self._left, self._at = float(per_s), clock()
        self._refused_at = -math.inf  # when a payload was last refused on this budget (``refused``)
        self._calm_until = -math.inf  # a birth sequence begun not busy is not busy until (``births_begin``)

    def left(self) -> float:
        """What this budget has left now (its ``total``'s aside)."""
        now = self._clock()
        self._left = min(self.per_s, self._left + (now - self._at) * self.per_s)
        self._at = now
        return self._left

    def spent(self) -> InflateBudget | None:
        """The budget that has nothing left, this one or else its ``total``; None while both have some. While
        this one was refused within the last ``STORMING_S``, the total's ``reserve`` counts as nothing left."""
        mine = self.left()
        if mine <= 0:
            return self
        t = self.total
        if t is not None:
            left = t.left()
            # storming: refused within STORMING_S, or busy: more than half its second's worth inflated within
            # about the last second (a storm's opening burst, before any of it was refused: every node new),
            # unless it is in a birth sequence begun not busy (``births_begin``)
            now = self._clock()
            busy = mine < self.per_s * BUSY_LEFT and now >= self._calm_until
            storming = now - self._refused_at < STORMING_S or busy
            if left <= 0 or (left <= t.reserve and storming):
                return t
        return None

    def births_begin(self) -> None:
        """An NBIRTH comes: a node's births are one sequence, its NBIRTH and then a DBIRTH per device, back to
        back, which may together inflate to more than half its second's worth. The sequence is judged busy or
        not at its NBIRTH: one begun with over ``BUSY_LEFT`` of the budget left may draw on the total's reserve
        for what follows within ``STORMING_S`` (up to this budget), so that a calm node's restart amid a storm
        is read whole; judged at each DBIRTH, its later devices were skipped, and asked again in vain while the
        storm lasted. A node storming births sends its next NBIRTH within the second and is judged busy there."""
        busy = self.left() < self.per_s * BUSY_LEFT
        self._calm_until = -math.inf if busy else self._clock() + STORMING_S

    def refused(self) -> None:
        """A payload was refused on this budget (``spent``): its node is storming, for ``STORMING_S``, if this
        budget is not full (it inflated within the last second or so: more than its budget, or than the total
        left it). A node refused by the total alone with its own budget full (a calm node, a birth now and
        then) is not: it may draw on the reserve at its next payload. A node already storming stays so while it
        is refused (its own budget refills while it is refused, and a full budget must not end its storm)."""
        now = self._clock()
        if self._left < self.per_s or now - self._refused_at < STORMING_S:
            self._refused_at = now

    def spend(self, n: int) -> None:
        self._left -= n
        if self.total is not None:
            self.total.spend(n)


def _inflate(pb: Any, max_bytes: int, budget: InflateBudget | None = None, must: bool = False) -> bytes:
    """A compressed payload's ``body`` inflated, at most ``max_bytes`` of it: a few kilobytes from a hostile
    or broken node can inflate to gigabytes (a "zip bomb"), so inflating stops one byte past the bound, or
    ``budget`` has nothing left (``inflate_budget``: not inflated at all, unless ``must``), which is charged
    with what was inflated."""
    import zlib

    algorithm = "DEFLATE"
    for m in pb.metrics:
        if m.HasField("name") and m.name == ALGORITHM_METRIC and m.WhichOneof("value") == "string_value":
            algorithm = _text(m.string_value, "a compressed payload's algorithm").strip().upper()
    if algorithm not in COMPRESSION_ALGORITHMS:
        raise CodecError(
            "bad_compression",
            f"compressed payload of algorithm {algorithm[:40]!r}: only DEFLATE and GZIP (Tahu's) are read",
        )
    body = pb.body
    header = len(body) >= 2 and (
        body[:2] == b"\x1f\x8b" or (body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0)
    )
    if budget is not None and not must and (spent := budget.spent()) is not None:
        budget.refused()
        kept = " (what is left kept for nodes not storming)" if spent.reserve and spent.left() > 0 else ""
        raise CodecError(
            "inflate_budget",
            f"compressed payload ({len(body)} bytes) while {spent.whose} have inflated more than "
            f"{spent.setting} ({spent.per_s:.0f} bytes a second){kept}; skipped, not inflated",
        )
    inflater = zlib.decompressobj(47 if header else -15)  # 47: a zlib or gzip header; -15: none (raw)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as e:
        if budget is not None:  # what it inflated before failing is not told: at most deflate's 1032:1
            budget.spend(min(max_bytes + 1, 1032 * len(body)))
        raise CodecError("bad_compression", f"{algorithm} body does not inflate ({e})"[:160]) from None
    if budget is not None:  # the work done is charged, whatever comes of it
        budget.spend(len(out))
    if len(out) > max_bytes:
        raise CodecError(
            "too_large",
            f"compressed payload ({len(body)} bytes) inflates to over {max_bytes} bytes (max_message_bytes); "
            "skipped undecoded",
        )
    if not inflater.eof:
        raise CodecError("bad_compression", f"{algorithm} body of {len(body)} bytes is cut short")
    return out


def _varint(buf: bytes, i: int) -> tuple[int, int] | None:
    """The protobuf varint at ``buf[i]`` and the index past it; None when cut short."""
    value = shift = 0
    while i < len(buf) and shift < 70:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
    return None


def bd_seq_within(
    data: bytes, max_inflated: int, inflate_budget: InflateBudget | None = None
) -> tuple[int | None, bool]:
    """``(bdSeq, found)`` of a compressed death whose whole payload is not inflated (it inflates past its bound,
    or its node's budget is spent): only its first ``max_inflated`` bytes are inflated (charged to
    ``inflate_budget``) and the metrics complete within them read, so the cost is bounded whatever the body
    holds. Tahu's nodes, like any encoder, write the metrics (field 2) before the body, and an NDEATH's one
    metric is its bdSeq. ``found`` is False when no bdSeq metric is complete within that prefix (or the
    payload is not a compressed one that inflates)."""
    import zlib

    def value(m: Any) -> tuple[int | None, bool]:
        try:
            return _get_value(m, [0], 0), True
        except CodecError:  # a bdSeq that is no number (a Template, text that is not UTF-8)
            return None, False

    try:
        pb, _ = _parse(data)
    except CodecError:
        return None, False
    if not (pb.HasField("uuid") and pb.uuid == COMPRESSED_UUID):
        bd = next((m for m in pb.metrics if m.HasField("name") and m.name == BDSEQ_METRIC), None)
        return (None, False) if bd is None else value(bd)
    body = pb.body
    gz = len(body) >= 2 and body[:2] == b"\x1f\x8b"
    header = gz or (len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0)
    try:
        prefix = zlib.decompressobj(47 if header else -15).decompress(body, max_inflated)
    except zlib.error:
        prefix = b""
    if inflate_budget is not None:  # the work done is charged (a body that fails: as if the whole prefix)
        inflate_budget.spend(len(prefix) or max_inflated)
    i, metric_pb = 0, _pb().Payload.Metric
    while i < len(prefix):
        tag = _varint(prefix, i)
        if tag is None:
            break
        key, i = tag
        wire = key & 7
        if wire == 0:
            v = _varint(prefix, i)
            if v is None:
                break
            i = v[1]
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n = _varint(prefix, i)
            if n is None or n[1] + n[0] > len(prefix):
                break  # cut by the prefix: its last field is not read
            size, i = n[0], n[1]
            if key >> 3 == 2:  # a metric
                m = metric_pb()
                try:
                    m.ParseFromString(prefix[i : i + size])
                except Exception:
                    return None, False
                if m.HasField("name") and m.name == BDSEQ_METRIC:
                    return value(m)
            i += size
        else:
            break
    return None, False


def decode(
    data: bytes,
    *,
    max_inflated: int = MAX_INFLATED_BYTES,
    inflate_budget: InflateBudget | None = None,
    must_inflate: bool = False,
) -> Payload:
    """Parse Sparkplug B bytes; anything unparseable raises ``CodecError('garbage_protobuf')``. A compressed
    payload (``COMPRESSED_UUID``) is inflated, to at most ``max_inflated`` bytes (over: ``too_large``) and
    while ``inflate_budget`` and its ``total`` have some left (none: ``inflate_budget``; ``must_inflate``, a
    birth's or a death's, is inflated all the same and charged), and the payload inside is returned
    (``bad_compression``: an unknown algorithm, a body that does not inflate or is cut short, a compressed
    payload inside)."""
    pb, unread = _parse(data)
    if pb.HasField("uuid") and pb.uuid == COMPRESSED_UUID:
        outer, (pb, unread) = pb, _parse(_inflate(pb, max_inflated, inflate_budget, must_inflate))
        if pb.HasField("uuid") and pb.uuid == COMPRESSED_UUID:  # not unwrapped again: a bomb in a bomb
            raise CodecError("bad_compression", "a compressed payload inside a compressed payload")
        for f in ("seq", "timestamp"):  # Tahu copies the seq outside; the inside's is the node's own
            if not pb.HasField(f) and outer.HasField(f):
                setattr(pb, f, getattr(outer, f))
    return _payload(pb, unread)


def decode_uncompressed(data: bytes) -> Payload | None:
    """``decode`` of a payload that is not compressed (None for one that is: its inflating is charged to a budget
    only its host keeps). Touches no state: made to run in a worker thread, as a payload of 100,000 metrics takes
    1-2 s of Python to decode (``devices.mqtt``'s large messages)."""
    pb, unread = _parse(data)
    if pb.HasField("uuid") and pb.uuid == COMPRESSED_UUID:
        return None
    return _payload(pb, unread)


def _payload(pb: Any, unread: dict[int, str]) -> Payload:
    if len(pb.metrics) > MAX_METRICS:  # before any is decoded
        raise _too_many()
    budget = [MAX_METRICS - len(pb.metrics)]  # what Template members may still take
    metrics = [
        _metric(m, budget)
        if i not in unread
        else Metric(
            alias=m.alias if m.HasField("alias") else None,
            datatype=m.datatype,
            refused=("garbage_protobuf", unread[i]),
        )
        for i, m in enumerate(pb.metrics)
    ]
    return Payload(
        timestamp_ms=pb.timestamp if pb.HasField("timestamp") else None,
        seq=pb.seq if pb.HasField("seq") else None,
        metrics=metrics,
        uuid=pb.uuid if pb.HasField("uuid") else None,
    )


def parse_topic(topic: str) -> SparkplugTopic:
    """Parse ``spBv1.0/{group}/{type}/{edge_node}[/{device}]`` (or ``spBv1.0/STATE/{host}``, or Sparkplug 2.2's
    ``STATE/{host}``, both STATE: a host's, no payload of an edge node); an id of over
    ``MAX_ID_CHARS`` characters is refused (``bad_topic``)."""
    parts = topic.split("/")
    if len(topic) > MAX_ID_CHARS and (longest := max(map(len, parts))) > MAX_ID_CHARS:
        # no edge node names itself so; a client of a shared broker making up such names by the thousand made a
        # host keep each (its node, group and device tables are bounded by count: 10,000 nodes of 60 KB names
        # held 1.3 GB)
        raise CodecError(
            "bad_topic",
            f"{topic[:80]!r}... has a level of {longest} characters; a Sparkplug id (group, edge node, device) "
            f"of over {MAX_ID_CHARS} is not read",
        )
    if len(parts) == 2 and parts[0] == "STATE" and parts[1]:
        # Sparkplug 2.2's host STATE (the text ONLINE or OFFLINE), outside the namespace: another host's, which a
        # subscription of all a Sparkplug broker carries (``#``) takes too; it was bad_topic, "not a Sparkplug B
        # topic", counted as an error at every connect (retained) and every change of that host
        return SparkplugTopic("", MessageType.STATE, parts[1])
    if len(parts) < 3 or parts[0] != NAMESPACE:
        raise CodecError(
            "bad_topic",
            f"{shown_topic(topic)} is not a Sparkplug B topic ({NAMESPACE}/group/TYPE/node[/device])",
        )
    if parts[1] == "STATE" and len(parts) == 3:
        return SparkplugTopic("", MessageType.STATE, parts[2])
    if len(parts) not in (4, 5) or not all(parts):
        raise CodecError("bad_topic", f"{shown_topic(topic)} has {len(parts)} levels; expected 4 or 5")
    try:
        mt = MessageType(parts[2])
    except ValueError:
        raise CodecError(
            "bad_topic", f"{shown_topic(topic)}: unknown message type {parts[2][:80]!r}"
        ) from None
    is_device = mt in (MessageType.DBIRTH, MessageType.DDATA, MessageType.DDEATH, MessageType.DCMD)
    if is_device != (len(parts) == 5):
        raise CodecError(
            "bad_topic",
            f"{shown_topic(topic)}: {mt.value} {'needs' if is_device else 'takes no'} device level",
        )
    return SparkplugTopic(parts[1], mt, parts[3], parts[4] if len(parts) == 5 else None)


def topic(group: str, message_type: MessageType | str, edge_node: str, device: str | None = None) -> str:
    return str(SparkplugTopic(group, MessageType(message_type), edge_node, device))


def next_seq(seq: int) -> int:
    """Sparkplug sequence numbers run 0..255 and wrap."""
    return (seq + 1) % 256


def rebirth_request(group: str, edge_node: str, *, now_ms: int | None = None) -> tuple[str, bytes]:
    """The NCMD topic and payload asking an edge node to publish its births again."""
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    body = encode(
        Payload(timestamp_ms=ts, metrics=[Metric(REBIRTH_METRIC, None, DataType.BOOLEAN, True, ts)])
    )
    return topic(group, MessageType.NCMD, edge_node), body


def death_payload(bd_seq: int) -> bytes:
    """NDEATH payload carrying the bdSeq that matches the NBIRTH (used as the MQTT will)."""
    return encode(
        Payload(
            timestamp_ms=int(time.time() * 1000), metrics=[Metric(BDSEQ_METRIC, None, DataType.INT64, bd_seq)]
        )
    )
