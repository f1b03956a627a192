"""Sparkplug B codec: round trips, signed integers, topics, rebirth, garbage never escapes as non-CodecError."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import sparkplug as sp
from protocols.json_codec import CodecError

_values = st.one_of(
    st.tuples(st.just(sp.DataType.INT8), st.integers(-128, 127)),
    st.tuples(st.just(sp.DataType.INT16), st.integers(-(2**15), 2**15 - 1)),
    st.tuples(st.just(sp.DataType.INT32), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just(sp.DataType.INT64), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just(sp.DataType.UINT32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(sp.DataType.UINT64), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(sp.DataType.DOUBLE), st.floats(allow_nan=False)),
    st.tuples(st.just(sp.DataType.FLOAT), st.floats(allow_nan=False, width=32)),
    st.tuples(st.just(sp.DataType.BOOLEAN), st.booleans()),
    st.tuples(st.just(sp.DataType.STRING), st.text(max_size=20)),
)


@given(
    ts=st.integers(0, 2**63),
    seq=st.integers(0, 255),
    metrics=st.lists(st.tuples(st.text(max_size=10), st.integers(0, 2**64 - 1), _values), max_size=5),
)
@settings(max_examples=150, deadline=None)
def test_encode_then_decode_returns_the_same_payload(ts, seq, metrics):
    p = sp.Payload(ts, seq, [sp.Metric(n, a, dt, v, ts) for n, a, (dt, v) in metrics])
    assert sp.decode(sp.encode(p)) == p


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_garbage_bytes_raise_only_codec_error(data):
    try:
        sp.decode(data)
    except CodecError as e:
        assert e.reason == "garbage_protobuf"


def test_truncated_payload_is_garbage_protobuf():
    raw = sp.encode(sp.Payload(1, 2, [sp.Metric("temperature", 1, sp.DataType.DOUBLE, 21.5)]))
    with pytest.raises(CodecError) as e:
        sp.decode(raw[:-3])
    assert e.value.reason == "garbage_protobuf"


def test_null_metric_decodes_as_none():
    p = sp.decode(sp.encode(sp.Payload(1, 0, [sp.Metric("x", 1, sp.DataType.DOUBLE, None)])))
    assert p.metrics[0].is_null and p.metrics[0].value is None


def test_float_value_keeps_single_precision():
    p = sp.decode(sp.encode(sp.Payload(metrics=[sp.Metric("f", None, sp.DataType.FLOAT, 0.1)])))
    assert math.isclose(p.metrics[0].value, 0.1, rel_tol=1e-6)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("spBv1.0/plant/NBIRTH/edge1", sp.SparkplugTopic("plant", sp.MessageType.NBIRTH, "edge1")),
        ("spBv1.0/plant/DDATA/edge1/pump", sp.SparkplugTopic("plant", sp.MessageType.DDATA, "edge1", "pump")),
        ("spBv1.0/STATE/host1", sp.SparkplugTopic("", sp.MessageType.STATE, "host1")),
    ],
)
def test_topic_parses_and_rebuilds(topic, expected):
    assert sp.parse_topic(topic) == expected
    assert str(expected) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "spBv1.0/plant/NOPE/edge1",
        "spAv1.0/plant/NDATA/e",
        "spBv1.0/plant/DDATA/edge1",
        "spBv1.0/plant/NDATA/e/d",
        "x",
    ],
)
def test_bad_topics_are_bad_topic_errors(topic):
    with pytest.raises(CodecError) as e:
        sp.parse_topic(topic)
    assert e.value.reason == "bad_topic"


def test_sparkplug_2_2_state_topic_is_a_state_not_a_bad_topic():
    """Sparkplug 2.2's host STATE is ``STATE/<host_id>``, outside the namespace; it was ``bad_topic``."""
    assert sp.parse_topic("STATE/scada1") == sp.SparkplugTopic("", sp.MessageType.STATE, "scada1")
    for topic in ("STATE/", "STATE/a/b", "STATE"):
        with pytest.raises(CodecError):
            sp.parse_topic(topic)


def test_rebirth_request_is_ncmd_with_rebirth_true():
    t, body = sp.rebirth_request("plant", "edge1", now_ms=5)
    assert t == "spBv1.0/plant/NCMD/edge1"
    (m,) = sp.decode(body).metrics
    assert (m.name, m.datatype, m.value) == ("Node Control/Rebirth", sp.DataType.BOOLEAN, True)


def test_seq_wraps_after_255():
    assert sp.next_seq(255) == 0 and sp.next_seq(7) == 8


def test_a_template_instance_and_its_definition_round_trip():
    D = sp.DataType
    bearing = sp.Template([sp.Metric("Vib", None, D.DOUBLE, 0.5)], ref="Bearing")
    motor = sp.Template(
        [
            sp.Metric("Speed", None, D.FLOAT, 1500.0),
            sp.Metric("Temp", None, D.INT32, -3, 7),
            sp.Metric("Bearing", None, D.TEMPLATE, bearing),
            sp.Metric("Note", None, D.STRING, None),
        ],
        ref="Motor",
        version="2",
    )
    definition = sp.Template([sp.Metric("Speed", None, D.FLOAT, 0.0)], is_definition=True)
    p = sp.Payload(
        1,
        0,
        [
            sp.Metric("Motor1", 10, D.TEMPLATE, motor),
            sp.Metric("_types_/Motor", None, D.TEMPLATE, definition),
        ],
    )
    got = sp.decode(sp.encode(p))
    assert got.metrics[0].value.metrics[3].is_null  # a null member stays null
    assert got == sp.Payload(
        1,
        0,
        [
            sp.Metric(
                "Motor1",
                10,
                D.TEMPLATE,
                sp.Template(
                    [*motor.metrics[:3], sp.Metric("Note", None, D.STRING, None, None, True)],
                    "Motor",
                    False,
                    "2",
                ),
            ),
            sp.Metric("_types_/Motor", None, D.TEMPLATE, definition),
        ],
    )


def test_templates_nested_past_the_limit_are_refused_not_recursed_into():
    inner = sp.Metric("x", None, sp.DataType.DOUBLE, 1.0)
    for depth in range(sp.MAX_TEMPLATE_DEPTH + 1):
        inner = sp.Metric(f"t{depth}", None, sp.DataType.TEMPLATE, sp.Template([inner], ref="T"))
    with pytest.raises(CodecError, match="nested deeper than"):
        sp.decode(sp.encode(sp.Payload(1, 0, [inner])))
    ok = inner.value.metrics[0]  # one level less: decoded
    assert sp.decode(sp.encode(sp.Payload(1, 0, [ok]))).metrics[0] == ok


@pytest.mark.parametrize(
    ("code", "level"),
    [
        (None, "good"),  # Cirrus Link's nodes leave a good quality out
        (192, "good"),
        (200, "good"),  # Ignition's Good_Provisional
        (64, "uncertain"),  # OPC DA
        (0, "bad"),
        (500, "bad"),  # Ignition 7's stale
        (-2147483136, "bad"),  # Ignition 8 QualityCode Bad
        (-2147483132, "bad"),  # Bad_Stale
        (-2147483126, "bad"),  # Bad_NotConnected
        (1073742080, "uncertain"),  # Uncertain
        (1073742081, "uncertain"),  # Uncertain_LastKnownValue
        (-1073741056, "bad"),  # Error
        (2**32 - 2147483132, "bad"),  # the same Bad_Stale read unsigned
        (257, "uncertain"),  # bare Ignition subcodes
        (516, "bad"),
        ("Bad_NotConnected", "bad"),
        ("Good", "good"),
        ("Error_IO", "bad"),
    ],
)
def test_a_quality_property_is_read_as_ignition_and_opc_da_nodes_mean_it(code, level):
    assert sp.quality_of(code) == level


def test_a_quality_property_round_trips_signed():
    m = sp.Metric("t", 1, sp.DataType.DOUBLE, 1.5, 9, quality=-2147483132)
    assert sp.decode(sp.encode(sp.Payload(1, 0, [m]))).metrics == [m]


@pytest.mark.parametrize(
    ("field", "datatype", "wire"),
    [
        ("int_value", sp.DataType.INT64, 2**32 - 2147483132),  # Bad_Stale, an Int64 in the 32-bit field
        ("int_value", sp.DataType.INT64, 2**32 - 5),
        ("long_value", sp.DataType.INT64, 2**64 - 2147483132),  # as Sparkplug writes an Int64
        ("int_value", sp.DataType.INT32, 2**32 - 2147483132),  # as Ignition sends its QualityCode
    ],
)
def test_an_int64_quality_property_is_read_signed_whichever_field_holds_it(field, datatype, wire):
    """An Int64 Quality property in int_value was read unsigned (Bad_Stale as 2147483652, -5 as 4294967291) where
    the same code as an Int32 or in long_value reads -2147483132: an Int64 is signed. Its level and name are the
    same (its low 32 bits), and it round-trips through this codec as what it was read as."""
    pb = sp._pb().Payload()
    m = pb.metrics.add()
    m.name, m.datatype, m.double_value = "t", sp.DataType.DOUBLE, 1.0
    m.properties.keys.append("Quality")
    pv = m.properties.values.add()
    pv.type = datatype
    setattr(pv, field, wire)
    (back,) = sp.decode(pb.SerializeToString()).metrics
    assert back.quality == wire - (1 << (64 if field == "long_value" else 32))
    assert back.quality < 0 and sp.quality_of(back.quality) == "bad"
    assert sp.decode(sp.encode(sp.Payload(1, 0, [back]))).metrics == [back]


@pytest.mark.parametrize(
    "datatype, data, values",
    [  # the Sparkplug 3.0 specification's own examples (Payloads, "Array Types")
        (
            22,
            "EF 7B",
            [-17, 123],
        ),  # its text says [-23, 123], its bytes say -17: the bytes are what a node sends
        (23, "D0 8A 30 75", [-30000, 30000]),
        (24, "FF FF FF FF FA AF CB 12", [-1, 315338746]),
        (26, "17 FA", [23, 250]),
        (27, "1E 00 88 CC", [30, 52360]),
        (28, "34 00 00 00 49 FB 55 C4", [52, 3293969225]),
        (29, "34 00 00 00 00 00 00 00 D9 9E 02 D1 B2 76 37 E4", [52, 16444743074749521625]),
        (30, "A4 70 9D 3F", [1.2300000190734863]),  # little-endian, as Tahu reads it
        (
            32,
            "0C 00 00 00 34 D0",
            [False, False, True, True, False, True, False, False, True, True, False, True],
        ),
        (34, "C7 D0 90 75 24 01 00 00", [1256102875335]),
    ],
)
def test_array_metrics_are_read_as_the_specification_packs_them(datatype, data, values):
    assert sp.array_value(bytes.fromhex(data), datatype).tolist() == values


@pytest.mark.parametrize("datatype, data", [(24, "01 02 03"), (32, "0C 00 00 00 34"), (32, "01 00")])
def test_array_bytes_that_do_not_fit_their_type_are_wrong_type(datatype, data):
    with pytest.raises(CodecError) as e:
        sp.array_value(bytes.fromhex(data), datatype)
    assert e.value.reason == "wrong_type"


def test_bytes_and_files_are_no_arrays():
    assert all(sp.array_value(b"AB\x00", dt) is None for dt in (sp.DataType.BYTES, sp.DataType.FILE, 0))


@pytest.mark.parametrize(
    "data, text",
    [
        ("41 42 43 00 68 65 6c 6c 6f 00", '["ABC", "hello"]'),  # the specification's example
        ("", "[]"),
        ("00", '[""]'),
        ("61 2c 62 00 c3 a4 00", '["a,b", "\u00e4"]'),  # a comma kept in its string; UTF-8
    ],
)
def test_a_string_array_is_the_json_text_of_its_strings(data, text):
    assert sp.array_value(bytes.fromhex(data), 33) == text


@pytest.mark.parametrize("data, why", [("41 42", "does not end with the NUL"), ("ff 00", "not UTF-8")])
def test_a_string_array_without_its_last_nul_or_not_utf8_is_wrong_type(data, why):
    with pytest.raises(CodecError) as e:
        sp.array_value(bytes.fromhex(data), 33)
    assert e.value.reason == "wrong_type" and why in e.value.detail


@pytest.mark.parametrize(
    "field, value, level",
    [
        ("boolean_value", False, "bad"),  # a node imitating Ignition's property with a truth value
        ("boolean_value", True, "good"),
        ("double_value", 192.0, "good"),  # a code sent as a number with a float type
        ("double_value", 0.5, "uncertain"),  # sent, but no code: not taken as good
        ("is_null", True, "uncertain"),
    ],
)
def test_a_quality_property_of_another_type_is_not_taken_as_good(field, value, level):
    """Before, a Quality property that was not an integer or text read as absent, so GOOD: a node that sent
    Quality = false for a tag whose PLC link was down had it taken as a good value."""
    pb = sp._pb().Payload()
    m = pb.metrics.add()
    m.name, m.datatype, m.double_value = "t", sp.DataType.DOUBLE, 1.0
    m.properties.keys.append("Quality")
    setattr(m.properties.values.add(), field, value)
    (back,) = sp.decode(pb.SerializeToString()).metrics
    assert sp.quality_of(back.quality) == level
    assert sp.decode(sp.encode(sp.Payload(1, 0, [back]))).metrics == [back]  # and our encoder keeps it


def _wrapped(body: bytes, algorithm: str | None = None, seq: int | None = None) -> bytes:
    out = sp._pb().Payload()
    out.uuid, out.body = "SPBV1.0_COMPRESSED", body  # Eclipse Tahu's compressed payload
    if seq is not None:
        out.seq = seq
    if algorithm is not None:
        m = out.metrics.add()
        m.name, m.datatype, m.string_value = "algorithm", sp.DataType.STRING, algorithm
    return out.SerializeToString()


def _raw_deflate(data: bytes) -> bytes:
    import zlib

    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    "pack, algorithm",
    [
        ("zlib", "DEFLATE"),  # java.util.zip.Deflater's and pako's format
        ("zlib", None),  # Tahu's compress() without an algorithm: DEFLATE
        ("gzip", "GZIP"),
        ("gzip", "gzip"),
        ("raw", "DEFLATE"),  # a deflate stream without zlib's header
    ],
)
def test_a_compressed_payload_is_read_as_the_payload_it_holds(pack, algorithm):
    """Before, the wrapper was the payload: its only metric was ``algorithm``, the node's metrics unseen."""
    import gzip
    import zlib

    inner = sp.encode(sp.Payload(5, None, [sp.Metric("t", 1, sp.DataType.INT32, -3, 7)]))
    body = {"zlib": zlib.compress, "gzip": gzip.compress, "raw": _raw_deflate}[pack](inner)
    got = sp.decode(_wrapped(body, algorithm, seq=9))
    assert got == sp.Payload(5, 9, [sp.Metric("t", 1, sp.DataType.INT32, -3, 7)])  # the seq from outside


def test_a_compressed_payload_that_inflates_past_the_bound_is_refused_without_inflating_it_whole():
    """A few kilobytes a hostile node sends can inflate to gigabytes: inflating stops past the bound, so
    the gateway never holds the whole (here 32 MiB, of which at most the bound plus one byte is made)."""
    import tracemalloc
    import zlib

    bomb = _wrapped(zlib.compress(b"\0" * (32 << 20), 9))
    assert len(bomb) < 64 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(CodecError) as e:
            sp.decode(bomb, max_inflated=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.reason == "too_large"
    assert peak < 4 << 20


def test_the_inflate_budget_skips_compressed_payloads_while_spent_charges_bombs_and_refills_with_time():
    """Inflating and decoding cost the loop by the inflated byte: a source inflates at most its budget a
    second. A payload is inflated while some is left and charged what it inflated; while none is left, one
    is inflate_budget, not inflated at all. A bomb refused as too_large and a body that does not inflate
    are charged too (their work was done); time refills the budget."""
    import zlib

    now = [0.0]
    budget = sp.InflateBudget(1000, clock=lambda: now[0])
    pb = sp._pb().Payload()
    pb.ParseFromString(sp.encode(sp.Payload(5, 1, [sp.Metric("t", 1, sp.DataType.DOUBLE, 1.0)])))
    pb.body = b"\0" * (600 * 1024)  # 600 KiB inflated, a few hundred bytes sent
    big = _wrapped(zlib.compress(pb.SerializeToString(), 9))

    def reason(data: bytes) -> str | None:
        try:
            sp.decode(data, max_inflated=1 << 20, inflate_budget=budget)
        except CodecError as e:
            return e.reason
        return None

    def charged() -> None:
        assert reason(big) == "inflate_budget"  # nothing left: the last one's work was charged
        now[0] += 1e6  # at most a second's worth is kept (1000 bytes), whatever the debt was

    assert reason(big) is None  # 1000 bytes left: inflated, 600 KiB charged
    now[0] += 60
    charged()  # a minute later 60 KB of the debt are paid back, not 600 KiB
    assert reason(_wrapped(zlib.compress(b"\0" * (2 << 20), 9))) == "too_large"
    charged()
    assert reason(_wrapped(b"\x78\x9c" + b"\xff" * 30)) == "bad_compression"  # up to 1032 x 32 bytes
    charged()
    assert reason(big) is None


def test_a_payload_that_must_be_inflated_is_while_the_budget_is_spent_and_is_charged_still():
    """A birth or a death (``must_inflate``) is inflated while the budget is spent, still bounded by
    max_inflated and still charged: a data message after it waits the longer."""
    import zlib

    now = [0.0]
    budget = sp.InflateBudget(1000, clock=lambda: now[0])
    inner = sp.encode(sp.Payload(5, 1, [sp.Metric("t", 1, sp.DataType.DOUBLE, 1.0)]))
    small = _wrapped(zlib.compress(inner))
    budget.spend(1000)  # spent
    with pytest.raises(CodecError) as e:
        sp.decode(small, inflate_budget=budget)
    assert e.value.reason == "inflate_budget"
    assert sp.decode(small, inflate_budget=budget, must_inflate=True).metrics[0].value == 1.0
    assert budget.left() == -len(inner)  # charged
    with pytest.raises(CodecError) as e:  # still bounded
        sp.decode(
            _wrapped(zlib.compress(b"\0" * 4096)), max_inflated=1024, inflate_budget=budget, must_inflate=True
        )
    assert e.value.reason == "too_large"
    now[0] += (1024 + 1 + len(inner) + 10) / 1000  # paid back: the data is read again
    assert sp.decode(small, inflate_budget=budget).metrics[0].value == 1.0


def test_a_nodes_budget_draws_on_a_total_both_are_charged_and_the_spent_one_is_named():
    """Each edge node has its own budget, drawing on its source's total: a payload is inflated while both
    have some left and charged to both, so one node's flood leaves another node's budget whole, and nodes
    together are held to the total; the inflate_budget message names the budget that is spent."""
    import zlib

    now = [0.0]
    total = sp.InflateBudget(2000, clock=lambda: now[0], whose="the nodes together", setting="2 x per node")
    a, b, c = (sp.InflateBudget(1000, clock=lambda: now[0], total=total, whose=f"node {x}") for x in "abc")
    inner = sp.encode(sp.Payload(5, 1, [sp.Metric("t", 1, sp.DataType.DOUBLE, 1.0)]))
    small = _wrapped(zlib.compress(inner))
    pb = sp._pb().Payload()
    pb.ParseFromString(inner)
    pb.body = b"\0" * 1500  # inflates to about 1.5 KB
    big = _wrapped(zlib.compress(pb.SerializeToString(), 9))

    def spent(data: bytes, budget: sp.InflateBudget) -> str | None:
        """Who is named as spent (None: inflated)."""
        try:
            sp.decode(data, inflate_budget=budget)
        except CodecError as e:
            assert e.reason == "inflate_budget"
            return e.detail.split(" while ")[1].split(" have ")[0]
        return None

    assert spent(big, a) is None  # a had 1000 bytes left: inflated, a in debt, the total at about 500
    assert spent(big, a) == "node a"  # a's own budget is spent ...
    assert spent(small, b) is None  # ... not b's
    assert spent(big, b) is None  # b spends its own: the total, charged with both, is in debt
    assert spent(small, c) == "the nodes together"  # c has its whole budget, the total has none
    assert c.left() == 1000 and total.left() < -900
    assert "2 x per node (2000 bytes a second)" in str(
        pytest.raises(CodecError, sp.decode, small, inflate_budget=c).value
    )
    now[0] += 0.3  # nodes and total refill with time: the total is still in debt
    assert spent(small, c) == "the nodes together"
    now[0] += 1.0
    assert spent(small, c) is None and spent(small, b) is None and spent(small, a) is None


def test_a_calm_node_finds_the_totals_reserve_while_six_nodes_storm_however_long_and_they_are_still_read():
    """A storming node refused by the total's reserve stops inflating, so its own budget refills while it is
    refused; a full budget must not make it calm again. When it did, each storming node took one payload out
    of the reserve every two seconds or so, and with six of them a calm node's birth was skipped 11 times in 40.
    The storming nodes are still read whenever the total has more than the reserve left."""
    import zlib

    now = [0.0]
    total = sp.InflateBudget(4000, clock=lambda: now[0], reserve=1000)
    storm = [sp.InflateBudget(1000, clock=lambda: now[0], total=total) for _ in range(6)]
    calm = sp.InflateBudget(1000, clock=lambda: now[0], total=total)
    pb = sp._pb().Payload()
    pb.ParseFromString(sp.encode(sp.Payload(5, 0, [sp.Metric("bdSeq", None, sp.DataType.INT64, 1)])))
    pb.body = b"\0" * 300  # a birth inflating to about a third of a node's budget
    birth = _wrapped(zlib.compress(pb.SerializeToString(), 9))

    def read(budget: sp.InflateBudget) -> bool:
        try:
            sp.decode(birth, inflate_budget=budget)
        except CodecError as e:
            assert e.reason == "inflate_budget"
            return False
        return True

    calm_skipped = storm_read = 0
    for step in range(6000):  # a minute, every 10 ms
        now[0] = step / 100
        storm_read += sum(read(b) for b in storm)
        if step % 150 == 75:  # the calm node's birth every 1.5 s
            calm_skipped += not read(calm)
    assert calm_skipped == 0
    assert storm_read > 60 * 4000 / 400  # most of the total (about 4000 bytes a second) went to the storm


@pytest.mark.parametrize(
    "body, algorithm",
    [
        (b"\x78\x9c" + b"\xff" * 20, "DEFLATE"),  # zlib's header, then garbage
        (b"", None),
        (None, "LZ4"),  # no algorithm Tahu has
        (None, "nested"),  # a compressed payload inside a compressed payload: not unwrapped again
    ],
)
def test_a_compressed_payload_that_does_not_inflate_is_bad_compression(body, algorithm):
    import zlib

    inner = sp.encode(sp.Payload(5, 1, [sp.Metric("t", 1, sp.DataType.DOUBLE, 1.0)]))
    if algorithm == "nested":
        body, algorithm = zlib.compress(_wrapped(zlib.compress(inner))), None
    elif body is None:
        body = zlib.compress(inner)
    with pytest.raises(CodecError) as e:
        sp.decode(_wrapped(body, algorithm))
    assert e.value.reason == "bad_compression"


def test_a_dataset_round_trips_and_its_columns_are_arrays_of_their_datatypes():
    """Before, a DataSet decoded without a value (and our encoder refused one)."""
    D = sp.DataType
    ds = sp.DataSet(
        ["i8", "u64", "f", "d", "b", "s", "t"],
        [D.INT8, D.UINT64, D.FLOAT, D.DOUBLE, D.BOOLEAN, D.STRING, D.DATETIME],
        [[-1, 2**64 - 1, 0.5, None, True, "a", 1], [127, 0, None, 2.5, False, None, 2]],
    )
    (m,) = sp.decode(sp.encode(sp.Payload(1, 0, [sp.Metric("T", 3, D.DATASET, ds)]))).metrics
    assert m.value == ds
    got = {
        name: (a if a is None else (a.dtype.name, str(a.tolist())), why)
        for name, a, why in sp.dataset_arrays(ds)
    }
    assert got == {
        "i8": (("int8", "[-1, 127]"), ""),
        "u64": (("uint64", "[18446744073709551615, 0]"), ""),
        "f": (("float32", "[0.5, nan]"), ""),  # an empty Float or Double cell is NaN
        "d": (("float64", "[nan, 2.5]"), ""),
        "b": (("bool", "[True, False]"), ""),
        "s": (None, "unsupported"),
        "t": (("int64", "[1, 2]"), ""),  # DateTime: milliseconds since the epoch
    }


@pytest.mark.parametrize(
    "types, rows, why",
    [
        ([sp.DataType.BOOLEAN], [[True], [None]], "an empty cell"),  # no NaN in a column of truth values
        ([sp.DataType.INT32], [[1], ["2"]], "a cell str '2'"),
        ([sp.DataType.UINT8], [[300]], "out of the range"),
        ([sp.DataType.DOUBLE], [[1]], "a cell int"),  # a Double column's cell sent as an integer
    ],
)
def test_a_dataset_column_that_does_not_fit_its_datatype_is_wrong_type(types, rows, why):
    ((name, arr, got),) = sp.dataset_arrays(sp.DataSet(["c"], types, rows))
    assert arr is None and got.startswith("wrong_type") and why in got


def test_a_dataset_of_the_wrong_shape_is_wrong_type_not_the_whole_payload_refused():
    pb = sp._pb().Payload()
    m = pb.metrics.add()
    m.name, m.datatype = "T", sp.DataType.DATASET
    d = m.dataset_value
    d.num_of_columns, d.columns[:], d.types[:] = 2, ["a", "b"], [sp.DataType.INT32, sp.DataType.INT32]
    d.rows.add().elements.add().int_value = 1  # one cell under two columns
    ok = pb.metrics.add()
    ok.name, ok.datatype, ok.double_value = "x", sp.DataType.DOUBLE, 1.0
    table, x = sp.decode(pb.SerializeToString()).metrics
    assert x.value == 1.0
    ((_, arr, why),) = sp.dataset_arrays(table.value)
    assert arr is None and why == "wrong_type: a row of 1 cells under 2 columns"
    assert sp.dataset_arrays(sp.DataSet(["a"], [sp.DataType.INT32], [])) == []  # no rows: no array


def test_dataset_cells_count_against_the_payloads_metric_budget():
    """Each cell is decoded in Python as a metric is: a table of millions of cells in one 8-MB message would
    hold the agent's loop for seconds."""
    ds = sp.DataSet(["c"], [sp.DataType.BOOLEAN], [[True]] * sp.MAX_METRICS)  # + the metric itself: one over
    with pytest.raises(CodecError) as e:
        sp.decode(sp.encode(sp.Payload(1, 0, [sp.Metric("T", None, sp.DataType.DATASET, ds)])))
    assert e.value.reason == "too_many_metrics"


@pytest.mark.parametrize(
    ("value", "datatype", "read"),
    [
        (2**64 - 5, sp.DataType.INT64, -5),  # two's complement in the wire's 64 bits
        (2**32 - 5, sp.DataType.INT32, -5),
        (2**64 - 5, sp.DataType.INT16, -5),  # sign-extended to 64 bits, as Tahu writes a long
        (-5, sp.DataType.INT64, -5),  # a value already signed (an Int64 of its own) stays itself
        (-5, sp.DataType.INT16, -5),
        (70_000, sp.DataType.INT16, 70_000),  # no form of an Int16: left for ``fits`` to refuse
    ],
)
def test_an_integer_is_read_as_its_declared_type_and_a_signed_one_stays_itself(value, datatype, read):
    """``as_declared`` of an already negative integer for an Int64 raised 'negative shift count' (the check of
    a sign extension to widths narrower than the type); every integer is now read or handed on as it is."""
    assert sp.as_declared(value, datatype) == read
    assert sp.fits(read, datatype) == (read != 70_000)


def test_under_protobufs_pure_python_runtime_a_metric_holding_text_that_is_not_utf8_is_skipped_alone():
    """protobuf's pure-Python runtime (``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``, or where no upb wheel
    is built for the gateway's CPU) refuses a whole message for one string that is not UTF-8, where upb hands
    it over as bytes: a metric name, a Template member's or a DataSet column's such name refused the whole
    payload (``garbage_protobuf``), a birth's other metrics lost with it. Now the metric holding it comes back
    refused, its alias kept (data by it is then skipped), and the payload's other metrics are read."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from protocols.gen import sparkplug_b_pb2 as pb2
    from tests.support.sparkplug_pb import pb_metric

    D = sp.DataType
    p = pb2.Payload(timestamp=1000, seq=0)
    pb_metric(p, "bdSeq", None, D.INT64, long_value=7)
    pb_metric(p, "bad_1", 2, D.DOUBLE, double_value=1.0)
    t = pb_metric(p, "M1", 3, D.TEMPLATE).template_value
    pb_metric(t, "bad_1", None, D.DOUBLE, double_value=1.0)
    ds = pb_metric(p, "T1", 4, D.DATASET).dataset_value
    ds.num_of_columns, ds.columns[:], ds.types[:] = 1, ["bad_1"], [D.DOUBLE]
    pb_metric(p, "ok", 5, D.DOUBLE, double_value=3.0)
    data = p.SerializeToString().replace(b"bad_1", b"bad\xff1")
    script = (
        "import json, sys\n"
        "from google.protobuf.internal import api_implementation\n"
        "from protocols import sparkplug as sp\n"
        "got = sp.decode(bytes.fromhex(sys.stdin.read()))\n"
        "print(json.dumps([api_implementation.Type(), got.seq,\n"
        "    [[m.name, m.alias, m.value, m.refused and m.refused[0]] for m in got.metrics]]))\n"
    )
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], input=data.hex(), env=env, cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    runtime, seq, metrics = json.loads(done.stdout)
    assert runtime == "python" and seq == 0
    assert metrics == [
        ["bdSeq", None, 7, None],
        [None, 2, None, "garbage_protobuf"],
        [None, 3, None, "garbage_protobuf"],
        [None, 4, None, "garbage_protobuf"],
        ["ok", 5, 3.0, None],
    ]


@pytest.mark.parametrize(
    "text",
    [
        " " * 40 + "2026-12-05T10Z",  # a fixed-width field's padding: was read as 10:00:00Z
        "2026-12-05T10Z ",
        "2026-12-05T10." + "5" * 40 + "Z",  # half past ten: was read as 10:00:00.555
        " 2026-12-05 ",  # a date alone, padded
    ],
)
def test_a_datetime_of_the_hour_alone_is_refused_padded_or_long(text):
    with pytest.raises(CodecError) as e:
        sp.datetime_ms(text)
    assert e.value.reason == "bad_timestamp"
    assert "hour alone" in e.value.detail or "without a time of day" in e.value.detail


def test_a_padded_full_datetime_is_read():
    assert sp.datetime_ms("  2026-12-05T10:00:00Z  ") == 1_796_464_800_000


def test_a_datetime_with_a_utc_offset_no_time_zone_has_is_refused_and_the_zones_extremes_are_read():
    """A DateTime metric given as text (a node's string_value, a command's value) with an offset outside
    -12:00..+14:00 or with seconds was taken as stated, up to a day off; the JSON codec's rule refuses it."""
    for text, said in (
        ("2026-12-05T10:00:00+15:00", "+15:00"),
        ("2026-12-05T10:00:00+05:30:15", "+05:30:15"),
    ):
        with pytest.raises(CodecError) as e:
            sp.datetime_ms(text)
        assert e.value.reason == "bad_timestamp" and f"UTC offset {said} is no time zone's" in e.value.detail
    assert sp.datetime_ms("2026-12-06T00:00:00+14:00") == sp.datetime_ms("2026-12-04T22:00:00-12:00")
