"""Fuzzing the parsers that read bytes from the plant, each at the entry point the agent (or the fleet) uses:
MQTT JSON (``json_codec.compile_decoder`` with the hints the MQTT source calls after it), Sparkplug B
(``sparkplug.decode`` and a ``SparkplugHost`` fed births, data and deaths), images (``image_header``,
``image_complete.cut_short``, ``jpeg_check.coded_damage``, ``decode_image``), MJPEG streams (``MjpegStream``
over an in-memory answer) and the fleet's record checks (``store.check_record``, ``store.event_dict``).

Inputs: valid samples mutated (bit flips, truncations, splices, duplicated chunks, huge varints and lengths,
numbers at type limits, unicode edge cases: lone surrogates, NUL, U+2028, overlong UTF-8) and structure-aware
generators per format (JSON trees, deep nesting, protobuf fields of any wire type, compressed Sparkplug
payloads including bombs, image headers with extreme sizes, multipart streams). Seeded and deterministic.

Per input: an exception other than the parser's own refusal escaping (a defect, its bytes kept under
``bench/out/parser_fuzz/``), its time (flagged over 50 ms), and on every 8th input the peak memory
(tracemalloc) beside its size. A growth series per parser (the same pattern at 1 KB .. 1 MB) shows time per
KB staying flat, or not (superlinear).

    nice .venv/bin/python -m bench.parser_fuzz [--seconds 60] [--seed 1] [--only json,sparkplug,...]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import os
import random
import resource
import struct
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "parser_fuzz"
SLOW_S = 0.050
RSS_JUMP = 256 << 20

# ---- mutators ------------------------------------------------------------------------------------------------

UNICODE_EDGES = [
    b"\\ud800",
    b"\\udfff",
    b"\\ud83d\\ude00",
    b"\\u0000",
    b"\x00",
    b"\xe2\x80\xa8",
    b"\xe2\x80\xa9",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xff",
    b"\xef\xbb\xbf",
    b"\\u202e",
    "\U0010ffff".encode(),
]
NUMBER_EDGES = [
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"1e308",
    b"1e309",
    b"-1e309",
    b"5e-324",
    b"1e-400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"-0",
    b"0.0000000000000000000000000000001",
    b"1" * 5000,
    b"1e" + b"9" * 50,
    b"4294967295",
    b"4294967296",
    b"-2147483649",
    b"253402300800",
    b"-62135596801",
    b"1.7976931348623157e308",
]


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def mutate(rng: random.Random, data: bytes, pool: list[bytes], tokens: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(10)
        n = len(b)
        if op == 0 and n:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # truncation
            del b[rng.randrange(n) :]
        elif op == 2:  # splice with another sample
            other = rng.choice(pool)
            i, j = rng.randint(0, n), rng.randint(0, len(other))
            b = b[:i] + other[j:]
        elif op == 3 and n:  # a chunk duplicated (repeated fields, repeated keys)
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 64))
            b[j:j] = b[i:j] * rng.choice((1, 2, 16, 256))
        elif op == 4:  # a huge varint / length
            i = rng.randint(0, n)
            b[i:i] = varint(rng.choice((1 << 31, 1 << 32, (1 << 63) - 1, (1 << 64) - 1, 1 << 28)))
        elif op == 5:  # a token of the format
            i = rng.randint(0, n)
            b[i:i] = rng.choice(tokens)
        elif op == 6 and n:  # a byte set to an extreme
            b[rng.randrange(n)] = rng.choice((0, 0xFF, 0x7F, 0x80))
        elif op == 7 and n:  # a 16/32-bit field set to an extreme
            i = rng.randrange(n)
            b[i : i + 4] = rng.choice(
                (b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\xff\xff")
            )
        elif op == 8 and n:  # a chunk removed
            i = rng.randrange(n)
            del b[i : i + rng.randint(1, 32)]
        else:  # a unicode edge
            i = rng.randint(0, n)
            b[i:i] = rng.choice(UNICODE_EDGES)
    return bytes(b[: 1 << 20])


# ---- JSON ----------------------------------------------------------------------------------------------------


def _json_value(rng: random.Random, depth: int) -> object:
    r = rng.randrange(12)
    if depth > 3 or r < 4:
        return rng.choice(
            [
                rng.uniform(-1e6, 1e6),
                rng.randint(-(2**63), 2**64),
                True,
                None,
                "21.5",
                "ON",
                "0x80000000",
                "2024-01-01T00:00:00Z",
                "\ud800",
                "a\x00b",
                "\u2028",
                1.7e308,
                -0.0,
                192.0,
                "",
            ]
        )
    if r < 8:
        return {
            rng.choice(
                ["ts", "v", "id", "q", "t", "values", "Payload", "Value", "NodeId", "Messages", "x", "\ud800"]
            )
            + (str(rng.randrange(4)) if rng.random() < 0.3 else ""): _json_value(rng, depth + 1)
            for _ in range(rng.randint(0, 6))
        }
    return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 8))]


def json_samples() -> list[bytes]:
    return [
        b'{"ts": 1701388800.5, "temp": 21.5, "rpm": 1500, "ok": true, "fw": "1.2.3"}',
        b'{"ts": "2024-01-01T00:00:00+01:00", "v": [0.1, 0.2, 0.3], "sample_rate_hz": 25600}',
        b'{"timestamp": 1701388800123, "values": [{"id": "a", "v": 1.5, "q": 192, "t": 1701388800123},'
        b' {"id": "b", "v": "ON", "q": "0x80000000"}]}',
        b'{"MessageType": "ua-data", "PublisherId": "p", "Messages": [{"DataSetWriterId": 1, "Timestamp":'
        b' "2024-01-01T00:00:00Z", "Payload": {"t": {"Type": 11, "Body": 21.5}, "u": {"Value": 3,'
        b' "SourceTimestamp": "2024-01-01T00:00:01Z", "StatusCode": {"Code": 2156527616}}}}]}',
        b'[{"NodeId": "ns=2;s=x", "DisplayName": "x", "Value": {"Value": 1.0, "SourceTimestamp":'
        b' "2024-01-01T00:00:00Z"}}]',
        b"21.5",
        b"ON",
        b'[{"ts": 1701388800, "a": 1}, {"ts": 1701388801, "a": 2}]',
    ]


def json_generate(rng: random.Random) -> bytes:
    r = rng.randrange(6)
    if r == 0:  # deep nesting
        d = rng.choice((50, 500, 990, 5000, 100_000))
        o, c = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
        return o * d + b"1" + c * d
    if r == 1:  # many keys / records
        n = rng.choice((100, 1000, 20_000))
        return b"{" + b",".join(b'"k%d": %d' % (i, i) for i in range(n)) + b"}"
    if r == 2:  # numbers at limits
        return b'{"ts": %s, "v": %s, "values": [{"id": "a", "v": %s, "q": %s, "t": %s}]}' % tuple(
            rng.choice(NUMBER_EDGES) for _ in range(5)
        )
    if r == 3:  # unicode in keys and values
        return b'{"%s": 1, "ts": "%s", "x": "%s"}' % tuple(rng.choice(UNICODE_EDGES) for _ in range(3))
    try:
        return json.dumps(_json_value(rng, 0)).encode("utf-8", "surrogatepass")
    except (ValueError, OverflowError):
        return b"{}"


def json_target() -> tuple[Callable[[bytes], None], tuple[type[BaseException], ...]]:
    from protocols import json_codec as jc

    mappings = [
        jc.JsonMapping(),
        jc.JsonMapping(numbers_from_text=True, states={"on": 1, "off": 0}),
        jc.JsonMapping(
            values={"temp": "t", "v": "wave", "a.b": "ab"}, timestamp_format=jc.TimestampFormat("auto")
        )
        if "auto" in {f.value for f in jc.TimestampFormat}
        else jc.JsonMapping(values={"temp": "t", "v": "wave", "a.b": "ab"}),
        jc.JsonMapping(records=jc.RecordsMapping(), timestamp_field="timestamp"),
        jc.JsonMapping(
            records=jc.RecordsMapping(
                array="", name="NodeId", value="Value.Value", timestamp="Value.SourceTimestamp"
            ),
            timestamp_format=jc.TimestampFormat("iso8601")
            if "iso8601" in {f.value for f in jc.TimestampFormat}
            else jc.TimestampFormat.EPOCH_S,
        ),
        jc.JsonMapping(opcua_pubsub=jc.PubsubMapping(), timestamp_field=None),
    ]
    texts: list = []
    decoders = [
        (
            m,
            jc.compile_decoder(
                m,
                rates=True,
                on_record_error=lambda r, d: None,
                keep_non_finite=True,
                on_text_unread=lambda k, v: texts.append((k, v)),
            ),
        )
        for m in mappings
    ]

    def run(data: bytes) -> None:
        for m, dec in decoders:
            texts.clear()
            try:
                got = dec(data, 1.7e9)
            except jc.CodecError:
                got = None
            if texts:
                jc.text_fields_hint(texts, m)
            jc.time_field_hint(data, m)
            if m.records is not None:
                jc.records_field_hint(data, m)
            if not got:
                jc.empty_batch(data)

    return run, ()


def json_growth(kb: int) -> list[tuple[str, bytes]]:
    n = kb * 1024
    return [
        ("many fields", b"{" + b",".join(b'"k%d": %d.5' % (i, i) for i in range(n // 14)) + b"}"),
        ("long array", b'{"v": [' + b",".join(b"1.25" for _ in range(n // 5)) + b"]}"),
        (
            "records",
            b'{"values": ['
            + b",".join(b'{"id": "a%d", "v": 1, "q": 192}' % i for i in range(n // 30))
            + b"]}",
        ),
        ("long text", b'{"fw": "' + b"x" * n + b'", "ts": 1701388800}'),
        ("nesting", b"[" * (n // 2) + b"]" * (n // 2)),
        ("text fields", b"{" + b",".join(b'"s%d": "v%d"' % (i, i) for i in range(n // 16)) + b"}"),
    ]


# ---- Sparkplug -----------------------------------------------------------------------------------------------


def _sp():
    from protocols import sparkplug as sp

    return sp


@functools.cache
def sparkplug_samples() -> list[bytes]:
    sp = _sp()
    D = sp.DataType
    M = sp.Metric
    out = [
        sp.encode(sp.Payload(1000, 0, [M("bdSeq", None, D.INT64, 0), M("uptime", 1, D.DOUBLE, 1.0)])),
        sp.encode(sp.Payload(1000, 1, [M("current", 10, D.DOUBLE, 4.0), M("name", 11, D.STRING, "abc")])),
        sp.encode(sp.Payload(2000, 2, [M(None, 10, D.DOUBLE, 5.0), M(None, 11, D.INT32, -5)])),
        sp.encode(
            sp.Payload(2000, 3, [M("flag", 12, D.BOOLEAN, True), M("t", 13, D.DATETIME, 1_700_000_000_000)])
        ),
    ]
    # Templates, DataSets and arrays through the generated classes (what a Tahu node sends)
    pb = sp._pb().Payload()
    pb.timestamp, pb.seq = 1000, 4
    m = pb.metrics.add()
    m.name, m.datatype = "tmpl", int(D.TEMPLATE)
    t = m.template_value
    t.template_ref = "Motor"
    for i in range(3):
        mm = t.metrics.add()
        mm.name, mm.datatype, mm.double_value = f"m{i}", int(D.DOUBLE), float(i)
    m = pb.metrics.add()
    m.name, m.datatype = "ds", int(D.DATASET)
    ds = m.dataset_value
    ds.num_of_columns = 2
    ds.columns.extend(["a", "b"])
    ds.types.extend([int(D.INT32), int(D.STRING)])
    for i in range(3):
        row = ds.rows.add()
        e = row.elements.add()
        e.int_value = i
        e = row.elements.add()
        e.string_value = f"r{i}"
    m = pb.metrics.add()
    m.name, m.datatype = "arr", int(getattr(D, "DOUBLE_ARRAY", D.DOUBLE))
    m.bytes_value = struct.pack("<4d", 1, 2, 3, 4)
    m = pb.metrics.add()
    m.name, m.datatype, m.float_value = "q", int(D.FLOAT), 1.5
    p = m.properties
    p.keys.append("Quality")
    v = p.values.add()
    v.type, v.int_value = int(D.INT32), 192
    out.append(pb.SerializeToString())
    for body in list(out):
        out.append(compressed(body, "DEFLATE"))
        out.append(compressed(body, "GZIP"))
    return out


def compressed(body: bytes, algorithm: str | None, raw: bytes | None = None, seq: int = 5) -> bytes:
    sp = _sp()
    pb = sp._pb().Payload()
    pb.uuid = sp.COMPRESSED_UUID
    pb.seq, pb.timestamp = seq, 1000
    if raw is None:
        raw = gzip.compress(body) if algorithm == "GZIP" else zlib.compress(body)
    pb.body = raw
    if algorithm is not None:
        m = pb.metrics.add()
        m.name, m.datatype, m.string_value = "algorithm", int(sp.DataType.STRING), algorithm
    return pb.SerializeToString()


def _field(num: int, wt: int, payload: bytes | int) -> bytes:
    key = varint(num << 3 | wt)
    if wt == 2 and isinstance(payload, int):
        payload = varint(payload)
    elif wt != 2 and isinstance(payload, bytes):
        payload = int.from_bytes(payload[:8].ljust(8, b"\0"), "little")
    if wt == 0:
        return key + varint(int(payload))  # type: ignore[arg-type]
    if wt == 2:
        return key + varint(len(payload)) + payload
    if wt == 1:
        return key + struct.pack("<Q", int(payload) & ((1 << 64) - 1))  # type: ignore[arg-type]
    if wt == 5:
        return key + struct.pack("<I", int(payload) & 0xFFFFFFFF)  # type: ignore[arg-type]
    return key


_INT_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1, -(2**63), 2**64 - 1, 127, 128, 255, 65535]


def _raw_metric(rng: random.Random, depth: int) -> bytes:
    # Payload.Metric: 1 name, 2 alias, 3 timestamp, 4 datatype, 5 is_historical, 6 is_transient, 7 is_null,
    # 8 metadata, 9 properties, 10 int, 11 long, 12 float, 13 double, 14 bool, 15 string, 16 bytes, 17 dataset,
    # 18 template
    parts = []
    if rng.random() < 0.8:
        parts.append(
            _field(1, 2, rng.choice([b"m", b"bdSeq", b"algorithm", b"\xff\xfe", b"a/b", b"", b"x" * 300]))
        )
    if rng.random() < 0.5:
        parts.append(_field(2, 0, rng.choice(_INT_EDGES)))
    parts.append(_field(4, 0, rng.choice(list(range(0, 35)) + [2**32 - 1, 2**63])))
    k = rng.randrange(12)
    if k == 0:
        parts.append(_field(10, 0, rng.choice(_INT_EDGES)))
    elif k == 1:
        parts.append(_field(11, 0, rng.choice(_INT_EDGES)))
    elif k == 2:
        parts.append(_field(12, 5, rng.choice([0x7F800000, 0x7FC00000, 0xFF800000, 1])))
    elif k == 3:
        parts.append(
            _field(13, 1, rng.choice([0x7FF0000000000000, 0x7FF8000000000001, 0xFFF0000000000000, 1]))
        )
    elif k == 4:
        parts.append(_field(15, 2, rng.choice(UNICODE_EDGES) * rng.choice((1, 100))))
    elif k == 5:
        parts.append(
            _field(16, 2, bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 3, 7, 8, 17, 64)))))
        )
    elif k == 6 and depth < 40:  # template (deep nesting)
        inner = b"".join(_field(1, 2, _raw_metric(rng, depth + 1)) for _ in range(rng.randint(0, 3)))
        tmpl = _field(2, 2, b"Ref") + inner.replace(b"", b"", 0) if rng.random() < 0.5 else inner
        parts.append(_field(18, 2, tmpl))
    elif k == 7:  # dataset: 1 num_of_columns, 2 columns, 3 types, 4 rows (row: 1 elements)
        cols = rng.choice((0, 1, 2, 3, 2**32 - 1, 2**63))
        ds = _field(1, 0, cols)
        for _ in range(rng.randint(0, 3)):
            ds += _field(2, 2, b"c")
        for _ in range(rng.randint(0, 3)):
            ds += _field(3, 0, rng.choice(list(range(0, 35)) + [2**32 - 1]))
        for _ in range(rng.randint(0, 4)):
            row = b"".join(
                _field(1, 2, _field(rng.choice((1, 2, 3, 4, 5, 6, 7)), 0, rng.choice(_INT_EDGES)))
                for _ in range(rng.randint(0, 4))
            )
            ds += _field(4, 2, row)
        parts.append(_field(17, 2, ds))
    elif k == 8:  # property set: 1 keys, 2 values (type 1, is_null 2, int 3, long 4, float 5, double 6,
        # bool 7, string 8, propertyset 9, propertysets 10)
        ps = b""
        for _ in range(rng.randint(0, 3)):
            ps += _field(1, 2, rng.choice([b"Quality", b"engUnit", b"q"]))
        for _ in range(rng.randint(0, 3)):
            pv = _field(1, 0, rng.choice(list(range(0, 25)) + [2**32 - 1]))
            pv += _field(
                rng.choice((3, 4, 8)),
                0 if rng.random() < 0.7 else 2,
                rng.choice(_INT_EDGES) if rng.random() < 0.7 else b"x",
            )  # type: ignore[arg-type]
            ps += _field(2, 2, pv)
        parts.append(_field(9, 2, ps))
    elif k == 9:
        parts.append(_field(7, 0, 1))
    elif k == 10:
        parts.append(_field(3, 0, rng.choice(_INT_EDGES)))
    else:
        parts.append(
            _field(
                rng.randint(1, 30),
                rng.choice((0, 1, 2, 5)),
                rng.choice(_INT_EDGES) if rng.random() < 0.5 else b"zz",
            )
        )  # type: ignore[arg-type]
    rng.shuffle(parts)
    return b"".join(parts)


_BOMBS: list[bytes] = []


def _bombs() -> list[bytes]:
    if not _BOMBS:
        for n in (1 << 20, 9 << 20, 64 << 20):
            _BOMBS.append(zlib.compress(bytes(n), 9))
            _BOMBS.append(gzip.compress(bytes(n), 9))
            _BOMBS.append(zlib.compressobj(9, zlib.DEFLATED, -15).compress(bytes(n)))
        _BOMBS.extend(
            [
                zlib.compress(bytes(100))[:-3],
                b"\x78\x9c" + bytes(10),
                zlib.compress(compressed(b"x", "DEFLATE")),
            ]
        )
    return _BOMBS


def sparkplug_generate(rng: random.Random) -> bytes:
    r = rng.randrange(8)
    if r == 0:  # decompression bombs and broken bodies
        body = rng.choice(_bombs())
        return compressed(b"", rng.choice(["DEFLATE", "GZIP", None, "deflate ", "LZ4", "\u2028"]), raw=body)
    if r == 1:  # many metrics
        n = rng.choice((100, 10_000, 200_000))
        return b"".join(_field(2, 2, _field(4, 0, 10) + _field(13, 1, 0)) for _ in range(n))
    if r == 2:  # deep templates
        inner = _field(4, 0, 19)
        for _ in range(rng.choice((10, 100, 1000))):
            inner = _field(4, 0, 19) + _field(18, 2, _field(1, 2, inner))
        return _field(2, 2, inner)
    # Payload: 1 timestamp, 2 metrics, 3 seq, 4 uuid, 5 body
    parts = []
    if rng.random() < 0.8:
        parts.append(_field(1, 0, rng.choice(_INT_EDGES)))
    if rng.random() < 0.8:
        parts.append(_field(3, 0, rng.choice(_INT_EDGES)))
    for _ in range(rng.randint(0, 6)):
        parts.append(_field(2, 2, _raw_metric(rng, 0)))
    if rng.random() < 0.1:
        parts.append(_field(4, 2, b"SPBV1.0_COMPRESSED"))
        parts.append(_field(5, 2, zlib.compress(b"".join(parts))))
    rng.shuffle(parts)
    return b"".join(parts)


def sparkplug_target() -> tuple[Callable[[bytes], None], tuple[type[BaseException], ...]]:
    sp = _sp()
    from devices.mqtt.settings import SparkplugHostSettings
    from devices.mqtt.sparkplug_host import SparkplugHost

    hosts: list = []
    state = {"n": 0}

    def fresh() -> None:
        hosts[:] = [SparkplugHost("src", SparkplugHostSettings(), lambda t, b: None, lambda r, d: None)]
        h = hosts[0]
        h.handle("spBv1.0/g/NBIRTH/n", sparkplug_samples()[0], 1.0)
        h.handle("spBv1.0/g/DBIRTH/n/m", sparkplug_samples()[1], 1.0)

    fresh()
    topics = [
        "spBv1.0/g/NBIRTH/n",
        "spBv1.0/g/DBIRTH/n/m",
        "spBv1.0/g/NDATA/n",
        "spBv1.0/g/DDATA/n/m",
        "spBv1.0/g/DDEATH/n/m",
        "spBv1.0/g/NDEATH/n",
        "spBv1.0/g/DDATA/n/m",
        "spBv1.0/g/DDATA/n/m",
    ]

    def run(data: bytes) -> None:
        try:
            sp.decode(data)
        except sp.CodecError:
            pass
        state["n"] += 1
        if state["n"] % 200 == 0:
            fresh()
        try:
            hosts[0].handle(topics[state["n"] % len(topics)], data, 2.0 + state["n"])
        except sp.CodecError:
            pass

    return run, ()


def sparkplug_growth(kb: int) -> list[tuple[str, bytes]]:
    n = kb * 1024
    metric = _field(1, 2, b"m") + _field(4, 0, 10) + _field(13, 1, 0)
    tmpl = _field(4, 0, 19)
    for _ in range(n // 8):
        tmpl = _field(4, 0, 19) + _field(18, 2, _field(1, 2, tmpl))
        if len(tmpl) > n:
            break
    ds = _field(1, 0, 1) + _field(2, 2, b"c") + _field(3, 0, 3)
    ds += b"".join(_field(4, 2, _field(1, 2, _field(3, 0, 7))) for _ in range(n // 8))
    return [
        ("many metrics", b"".join(_field(2, 2, metric) for _ in range(n // (len(metric) + 2)))),
        ("nested templates", _field(2, 2, tmpl)),
        ("dataset rows", _field(2, 2, _field(4, 0, 16) + _field(17, 2, ds))),
        ("long string", _field(2, 2, _field(1, 2, b"s") + _field(4, 0, 12) + _field(15, 2, b"x" * n))),
        ("compressed metrics", compressed(b"".join(_field(2, 2, metric) for _ in range(n // 3)), "DEFLATE")),
    ]


# ---- images --------------------------------------------------------------------------------------------------


@functools.cache
def image_samples() -> list[bytes]:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    grey = img[:, :, 0]
    out = []
    for ext, im in (
        (".png", img),
        (".jpg", img),
        (".bmp", img),
        (".tiff", img),
        (".ppm", img),
        (".pgm", grey),
        (".webp", img),
        (".png", grey.astype(np.uint16) * 16),
        (".tiff", grey),
    ):
        ok, buf = cv2.imencode(ext, im)
        if ok:
            out.append(buf.tobytes())
    out.append(b"P2\n4 2\n255\n" + b" ".join(b"%d" % i for i in range(8)) + b"\n")
    out.append(
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
        b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )
    return out


IMAGE_TOKENS = [
    b"\xff\xd8",
    b"\xff\xd9",
    b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03",
    b"\xff\xda\x00\x0c",
    b"\xff\xe1\xff\xff",
    b"\xff\xc4\x00\x00",
    b"\xff\xdd\x00\x04\xff\xff",
    b"IEND",
    b"IHDR\xff\xff\xff\xff\xff\xff\xff\xff",
    b"acTL",
    b"\x00\x00\x00\x00IEND\xaeB`\x82",
    b"II*\x00\xff\xff\xff\xff",
    b"MM\x00*\x00\x00\x00\x08",
    b"RIFF\xff\xff\xff\xffWEBPVP8X",
    b"P6\n999999 999999\n65535\n",
    b"BM\xff\xff\xff\xff",
    b"\xff\xff\x00\x00",
    b"\x11\x01\x04\x00\xff\xff\xff\xff",
]


def image_generate(rng: random.Random) -> bytes:
    r = rng.randrange(6)
    if r == 0:  # a TIFF of many tags/directories pointing anywhere
        n = rng.choice((1, 10, 1000, 65535))
        ifd = (
            struct.pack("<H", n)
            + b"".join(
                struct.pack(
                    "<HHII",
                    rng.choice((256, 257, 258, 273, 277, 279, 322, 323, 324, 325, 330, 338)),
                    rng.choice((1, 3, 4, 16, 0, 99)),
                    rng.choice((1, 2, 1 << 30, 0xFFFFFFFF)),
                    rng.choice((8, 0, 0xFFFFFFFF, 16)),
                )
                for _ in range(min(n, 2000))
            )
            + struct.pack("<I", rng.choice((0, 8, 0xFFFFFFFF)))
        )
        return b"II*\x00\x08\x00\x00\x00" + ifd
    if r == 1:  # a JPEG of many segments
        segs = b"".join(
            b"\xff"
            + bytes([rng.choice((0xE0, 0xE1, 0xDB, 0xC4, 0xC0, 0xC2, 0xDD, 0xFE, 0x01, 0xD0))])
            + struct.pack(">H", rng.choice((2, 3, 17, 0xFFFF, 0)))
            + bytes(rng.randrange(40))
            for _ in range(rng.choice((1, 10, 3000)))
        )
        return b"\xff\xd8" + segs + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + bytes(100) + b"\xff\xd9"
    if r == 2:  # a PNM with extreme dimensions / plain digits
        w, h = rng.choice(((1, 1), (99999999, 99999999), (0, 5), (65536, 65536), (3, 2)))
        return (
            rng.choice((b"P5", b"P6", b"P2", b"P3", b"P1", b"P4", b"P7"))
            + b"\n# c\n%d %d\n%d\n" % (w, h, rng.choice((1, 255, 65535, 65536, 0)))
            + bytes(rng.randrange(200))
        )
    if r == 3:  # a PNG with huge IHDR and chunk lengths
        ihdr = struct.pack(
            ">IIBBBBB",
            rng.choice((1, 0x7FFFFFFF, 0)),
            rng.choice((1, 0x7FFFFFFF)),
            rng.choice((1, 8, 16, 3)),
            rng.choice((0, 2, 3, 6, 7)),
            0,
            0,
            rng.choice((0, 1)),
        )
        chunks = struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"
        for _ in range(rng.randint(0, 20)):
            chunks += (
                struct.pack(">I", rng.choice((0, 4, 0xFFFFFFFF)))
                + rng.choice((b"IDAT", b"tRNS", b"acTL", b"PLTE", b"fcTL"))
                + bytes(8)
            )
        return b"\x89PNG\r\n\x1a\n" + chunks
    if r == 4:  # a BMP with extreme header
        return (
            b"BM"
            + struct.pack(
                "<IHHIIiiHHII",
                rng.choice((0, 0xFFFFFFFF, 100)),
                0,
                0,
                rng.choice((54, 0xFFFFFFFF)),
                40,
                rng.choice((1, -1, 2**31 - 1, -(2**31))),
                rng.choice((1, -1, 2**31 - 1, -(2**31))),
                1,
                rng.choice((1, 4, 8, 24, 32, 0, 64)),
                rng.choice((0, 1, 2, 3, 4, 5)),
                rng.choice((0, 0xFFFFFFFF)),
            )
            + bytes(rng.randrange(100))
        )
    return (
        b"GIF89a"
        + struct.pack("<HH", 1, 1)
        + b"\x00\x00\x00"
        + b"".join(
            rng.choice(
                (
                    b"!\xf9\x04\x00\x00\x00\x00\x00",
                    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00",
                    b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00",
                    b"\xff",
                )
            )
            for _ in range(rng.choice((1, 10, 5000)))
        )
        + b";"
    )


def image_target() -> tuple[Callable[[bytes], None], tuple[type[BaseException], ...]]:
    from protocols import image_complete, image_header, jpeg_check

    def run(data: bytes) -> None:
        image_header.image_size(data)
        image_header.image_kind(data[:64])
        image_header.kind_suffix(data[:64])
        image_header.animated(data)
        image_header.tiff_data_misplaced(data)
        image_header.tiff_not_one_image(data)
        image_header.transparent_pixels(data)
        image_complete.cut_short(data)
        image_complete.cut_short(data, exact_end=True)
        jpeg_check.coded_damage(data)
        if len(data) < 200_000:
            try:
                image_header.decode_image(data, max_megapixels=4)
            except image_header.ImageRejected:
                pass

    return run, ()


def image_growth(kb: int) -> list[tuple[str, bytes]]:
    n = kb * 1024
    return [
        ("jpeg segments", b"\xff\xd8" + b"\xff\xfe\x00\x06abcd" * (n // 8) + b"\xff\xd9"),
        ("jpeg no end", b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xda\x00\x02" + b"\xff\x00" * (n // 2)),
        ("jpeg RST markers", b"\xff\xd8\xff\xda\x00\x02" + b"\xff\xd0\x00" * (n // 3) + b"\xff\xd9"),
        ("jpeg stuffed header", b"\xff\xd8" + b"\x00\xff" * (n // 2)),  # stuffed bytes, no marker
        ("plain pnm", b"P2\n%d 1\n255\n" % (n // 2) + b"1 " * (n // 2)),
        ("gif blocks", b"GIF89a\x01\x00\x01\x00\x00\x00\x00" + b"!\xfe\x01a\x00" * (n // 5) + b";"),
        (
            "png chunks",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"
            + bytes(17)
            + b"\x00\x00\x00\x00tEXt\x00\x00\x00\x00" * (n // 12),
        ),
    ]


# ---- MJPEG ---------------------------------------------------------------------------------------------------


class _Resp:
    def __init__(self, data: bytes, chunk: int) -> None:
        self._io, self._chunk = io.BytesIO(data), chunk

    def read1(self, n: int) -> bytes:
        return self._io.read(min(n, self._chunk))

    def close(self) -> None:
        pass


class _Sock:
    def settimeout(self, t: float) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


def mjpeg_samples() -> list[bytes]:
    jpg = image_samples()[1]
    parts = []
    for _ in range(3):
        parts.append(
            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg) + jpg + b"\r\n"
        )
    no_len = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + jpg + b"\r\n"
    return [b"".join(parts), no_len * 3, b"".join(parts) + b"--frame--\r\n"]


MJPEG_TOKENS = [
    b"--frame\r\n",
    b"Content-Length: 99999999999\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 0\r\n",
    b"\r\n\r\n",
    b"--frame--\r\n",
    b"\n",
    b"Content-Length: 1e3\r\n",
    b"--\r\n",
    b"X: " + b"a" * 10000 + b"\r\n",
]


def mjpeg_generate(rng: random.Random) -> bytes:
    jpg = image_samples()[1]
    out = b""
    for _ in range(rng.randint(1, 5)):
        hdr = b"--frame\r\n"
        for _ in range(rng.choice((0, 1, 2, 200))):
            hdr += rng.choice(MJPEG_TOKENS[1:4] + [b"Content-Type: image/jpeg\r\n"])
        body = rng.choice((jpg, jpg[: rng.randrange(len(jpg))], b"", b"--frame" * 100))
        out += hdr + b"\r\n" + body + rng.choice((b"\r\n", b"", b"\n"))
    return out


def mjpeg_target() -> tuple[Callable[[bytes], None], tuple[type[BaseException], ...]]:
    from devices.camera.mjpeg import MjpegStream, StreamError

    def run(data: bytes) -> None:
        for boundary, chunk in (("frame", 4096), (None, 7), ("--frame", 65536), ("other", 4096)):
            s = MjpegStream(_Resp(data, chunk), _Sock(), boundary, 5.0, 1 << 20)  # type: ignore[arg-type]
            for _ in range(50):
                try:
                    s.next_part()
                except (StreamError, EOFError):
                    break

    return run, ()


def mjpeg_growth(kb: int) -> list[tuple[str, bytes]]:
    n = kb * 1024
    return [
        ("no boundary", b"--frame\r\n\r\n" + b"x" * n),
        ("many parts", b"--frame\r\nContent-Length: 1\r\n\r\nx\r\n" * (n // 33)),
        ("byte lines", b"--frame\r\n" + b"\r\n" * (n // 2)),
        ("near-boundaries", b"--frame\r\n\r\n" + b"--fram" * (n // 6) + b"\r\n--frame--\r\n"),
    ]


# ---- fleet records -------------------------------------------------------------------------------------------


def _batch(records: list[dict]) -> bytes:
    from protocols.gen import fleet_pb2 as pb

    return pb.RecordBatch(records=[pb.Record(**r) for r in records]).SerializeToString()


def fleet_samples() -> list[bytes]:
    png = image_samples()[0]
    import hashlib

    return [
        _batch([{"seq": 1, "epoch": 3, "kind": "result", "t": 1.7e9, "payload": b'{"verdict": "OK"}'}]),
        _batch(
            [
                {
                    "seq": 2,
                    "epoch": 3,
                    "kind": "sample",
                    "t": 1.7e9,
                    "sample": png,
                    "sample_ext": ".png",
                    "sample_sha256": hashlib.sha256(png).hexdigest(),
                    "payload": b'{"source": "cam", "label": "NG"}',
                },
                {
                    "seq": 3,
                    "epoch": 3,
                    "kind": "event",
                    "t": 1.7e9,
                    "payload": b'{"kind": "source_down", "active": true}',
                },
            ]
        ),
    ]


def fleet_generate(rng: random.Random) -> bytes:
    inner = rng.choice(
        [
            b'{"a": ' * 2000 + b"1" + b"}" * 2000,
            b"[" * 100_000,
            b'{"source": 5}',
            b'"\\ud800"',
            b"{}",
            b'{"kind": "\\u0000", "active": "yes"}',
            b"1e999",
            b"\xff\xfe",
            b'{"label": "\\ud800"}',
        ]
    )
    rec = {
        "seq": rng.choice([0, 1, 2**63 - 1, 2**63, 2**64 - 1]),
        "epoch": rng.choice([0, 1, 2**63, 2**64 - 1]),
        "kind": rng.choice(["sample", "event", "result", "\x00", "k" * 100, "\u2028"]),
        "t": rng.choice([1.7e9, float("nan"), float("inf"), -0.0, 5e-324, 1.8e308]),
        "payload": inner,
        "sample_ext": rng.choice([".PNG", "png", "../x", "\x00", "", ".npy", "." + "p" * 300]),
        "sample_sha256": rng.choice(["", "x", "0" * 64]),
        "sample": rng.choice([b"", image_samples()[0], b"\x93NUMPY" + bytes(20), bytes(10)]),
    }
    return _batch([rec] * rng.choice((1, 1, 3)))


def fleet_target() -> tuple[Callable[[bytes], None], tuple[type[BaseException], ...]]:
    from google.protobuf.message import DecodeError

    from cloud_trainer.fleet import service, store
    from protocols.gen import fleet_pb2 as pb

    def run(data: bytes) -> None:
        # what the service does with a batch gRPC parsed: its refusal (_malformed), the store's records
        # (_records), the store's own check (check_record) and the console's view of an event (event_dict)
        batch = pb.RecordBatch()
        try:
            batch.ParseFromString(data)
        except DecodeError:
            return  # gRPC answers such a request itself
        if service._malformed(batch) is not None:
            return
        records, _, _ = service._records(batch)
        for r in records:
            try:
                store.check_record(r)
            except ValueError:
                continue
            store.event_dict(r["t"], "a", r["epoch"], r["seq"], r["kind"], r["payload"])

    return run, ()


def fleet_growth(kb: int) -> list[tuple[str, bytes]]:
    n = kb * 1024
    return [
        (
            "long payload",
            _batch([{"seq": 1, "kind": "event", "t": 1.0, "payload": b'{"x": "' + b"y" * n + b'"}'}]),
        ),
        (
            "nested payload",
            _batch(
                [
                    {
                        "seq": 1,
                        "kind": "sample",
                        "sample": b"\x89PNG",
                        "sample_ext": ".png",
                        "t": 1.0,
                        "payload": b"[" * (n // 2) + b"]" * (n // 2),
                    }
                ]
            ),
        ),
        (
            "many records",
            _batch([{"seq": i, "kind": "result", "t": 1.0, "payload": b"{}"} for i in range(1, n // 16)]),
        ),
    ]


# ---- runner --------------------------------------------------------------------------------------------------

PARSERS: dict[str, tuple] = {
    "json": (
        json_samples,
        json_generate,
        json_target,
        json_growth,
        [b"{", b"}", b"[", b"]", b'"', b",", b":", b"null", b'"ts":', b'"values":', b'"Payload":']
        + NUMBER_EDGES,
    ),
    "sparkplug": (
        sparkplug_samples,
        sparkplug_generate,
        sparkplug_target,
        sparkplug_growth,
        [varint(v) for v in _INT_EDGES]
        + [b"\x12\xff\xff\xff\xff\x0f", b"\x92\x01", b"\xa2\x01", b"SPBV1.0_COMPRESSED"],
    ),
    "image": (image_samples, image_generate, image_target, image_growth, IMAGE_TOKENS),
    "mjpeg": (mjpeg_samples, mjpeg_generate, mjpeg_target, mjpeg_growth, MJPEG_TOKENS),
    "fleet": (
        fleet_samples,
        fleet_generate,
        fleet_target,
        fleet_growth,
        [b"\\ud800", b"\\u0000", b"1e999", b"-1", b'"', b"\x0a\xff\xff\xff\xff\x0f", b"\x22\x00"],
    ),
}


def _timed(run: Callable[[bytes], None], data: bytes) -> float:
    t0 = time.perf_counter()
    try:
        run(data)
    except Exception:  # counted on the first run
        pass
    return time.perf_counter() - t0


def fuzz(name: str, seconds: float, seed: int, max_inputs: int | None = None) -> dict:
    samples_of, generate, target_of, growth_of, tokens = PARSERS[name]
    samples = samples_of()
    run, _ = target_of()
    rng = random.Random(f"{seed}:{name}")
    pool = list(samples)
    stats: dict = {
        "inputs": 0,
        "defects": {},
        "slow": 0,
        "worst_s": 0.0,
        "worst_ms_per_kb": 0.0,
        "worst_mem_ratio": 0.0,
        "worst_peak_bytes": 0,
    }
    (OUT / name).mkdir(parents=True, exist_ok=True)
    t_end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < t_end and (max_inputs is None or i < max_inputs):
        i += 1
        r = rng.random()
        data = generate(rng) if r < 0.3 else mutate(rng, rng.choice(pool), pool, tokens)
        if len(pool) < 200 and rng.random() < 0.05:
            pool.append(data[:65536])
        measure = i % 8 == 0
        if measure:
            tracemalloc.start()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            run(data)
        except Exception as e:  # what escapes the parser is the finding
            key = f"{type(e).__name__}: {str(e)[:120]}"
            d = stats["defects"].setdefault(key, {"count": 0, "smallest": None})
            d["count"] += 1
            if d["smallest"] is None or len(data) < d["smallest"]:
                d["smallest"] = len(data)
                (OUT / name / f"defect-{zlib.crc32(key.encode()):08x}.bin").write_bytes(data)
        dt = time.perf_counter() - t0
        # native allocations (OpenCV, zlib, protobuf) are not traced: the process's peak RSS rising by over
        # RSS_JUMP on one input is a memory defect of its own
        jump = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
        if jump > RSS_JUMP:
            stats["rss_jumps"] = stats.get("rss_jumps", 0) + 1
            stats["worst_rss_jump_bytes"] = max(stats.get("worst_rss_jump_bytes", 0), jump)
            (OUT / name / f"rss-{stats['rss_jumps']}.bin").write_bytes(data)
        if measure:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            ratio = peak / max(len(data), 1024)
            if ratio > stats["worst_mem_ratio"]:
                stats["worst_mem_ratio"], stats["worst_mem_input_bytes"], stats["worst_peak_bytes"] = (
                    round(ratio, 1),
                    len(data),
                    peak,
                )
        else:
            if dt > SLOW_S or dt * 1000 / max(len(data) / 1024, 1) > stats["worst_ms_per_kb"]:
                # timed again, the least of three: this machine is shared (GC pauses, other processes)
                dt = min(dt, *(_timed(run, data) for _ in range(2)))
            if dt > SLOW_S:
                stats["slow"] += 1
                if stats["slow"] <= 5:
                    (OUT / name / f"slow-{stats['slow']}.bin").write_bytes(data)
            stats["worst_s"] = max(stats["worst_s"], dt)
            per_kb = dt * 1000 / max(len(data) / 1024, 1)
            if per_kb > stats["worst_ms_per_kb"]:
                stats["worst_ms_per_kb"], stats["worst_per_kb_input_bytes"] = round(per_kb, 3), len(data)
                (OUT / name / "worst-per-kb.bin").write_bytes(data)
    stats["inputs"] = i
    stats["worst_s"] = round(stats["worst_s"], 4)
    return stats


def growth(name: str) -> dict:
    _, _, target_of, growth_of, _ = PARSERS[name]
    run, _ = target_of()
    out: dict = {}
    for kb in (1, 16, 256, 1024):
        for label, data in growth_of(kb):
            t0 = time.perf_counter()
            try:
                run(data)
                err = None
            except Exception as e:
                err = type(e).__name__
            dt = time.perf_counter() - t0
            row = out.setdefault(label, {})
            row[f"{kb}KB"] = round(dt * 1000 / max(len(data) / 1024, 1), 4)
            if err:
                row["escaped"] = err
    for row in out.values():
        base = max(row["1KB"], row["16KB"], 1e-3)
        row["growth"] = round(row["1024KB"] / base, 1)  # time per KB at 1 MB over that at 1-16 KB
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=",".join(PARSERS))
    ap.add_argument("--no-growth", action="store_true")
    args = ap.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    report = {}
    for name in args.only.split(","):
        t0 = time.perf_counter()
        report[name] = fuzz(name, args.seconds, args.seed)
        if not args.no_growth:
            report[name]["growth_ms_per_kb"] = growth(name)
        report[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({name: report[name]}, indent=1), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.json").write_text(json.dumps(report, indent=1))
    return 1 if any(r["defects"] or r.get("rss_jumps") for r in report.values()) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
