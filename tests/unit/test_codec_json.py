"""JSON mapping codec: mappings, timestamps, waveforms and typed errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.json_codec import CodecError, JsonMapping, TimestampFormat, decode, encode


def test_default_mapping_takes_numeric_top_level_fields():
    out = decode(b'{"ts": 10, "temperature": 21.5, "humidity": 40, "ok": true, "name": "x"}')
    assert sorted(out) == [("humidity", 40, 10.0), ("temperature", 21.5, 10.0)]


def test_nested_paths_map_to_tag_names():
    m = JsonMapping(values={"a.b.c": "deep", "t": "top"})
    out = decode(b'{"a": {"b": {"c": 3}}, "t": 1.5}', m, now=7.0)
    assert out == [("deep", 3, 7.0), ("top", 1.5, 7.0)]


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        (1_700_000_000, TimestampFormat.EPOCH_S, 1_700_000_000.0),
        (1_700_000_000_500, TimestampFormat.EPOCH_MS, 1_700_000_000.5),
        ("2023-11-14T22:13:20Z", TimestampFormat.ISO8601, 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", TimestampFormat.ISO8601, 1_700_000_000.0),
    ],
)
def test_timestamp_formats(raw, fmt, expected):
    m = JsonMapping(values={"v": "v"}, timestamp_field="time", timestamp_format=fmt)
    ((_, _, ts),) = decode(json.dumps({"time": raw, "v": 1}), m)
    assert ts == expected


@pytest.mark.parametrize(
    "payload",
    [b'\xef\xbb\xbf{"t": 2.5}', '{"t": 2.5}'.encode("utf-16"), '{"t": 2.5}'.encode("utf-32"), '{"t": 2.5}'],
)
def test_every_encoding_json_allows_decodes(payload):
    assert decode(payload) == [("t", 2.5, 0.0)]


def test_number_arrays_become_waveforms():
    ((tag, v, _),) = decode(b'{"wave": [1, 2.5, -3]}', JsonMapping(values={"wave": "vib"}))
    assert tag == "vib" and isinstance(v, np.ndarray) and v.dtype == np.float64 and v.tolist() == [1, 2.5, -3]


@pytest.mark.parametrize(
    ("payload", "mapping", "reason"),
    [
        (b"{not json", None, "malformed_json"),
        (b"\xff\xfe", None, "malformed_json"),
        (b"[1, 2]", None, "wrong_type"),
        (b'{"v": {"x": 1}}', JsonMapping(values={"v": "v"}), "wrong_type"),
        (b'{"v": [1, "a"]}', JsonMapping(values={"v": "v"}), "wrong_type"),
        (b'{"w": 1}', JsonMapping(values={"v": "v"}), "missing_field"),
        (b'{"v": NaN}', JsonMapping(values={"v": "v"}), "non_finite"),
        (b'{"v": Infinity}', None, "non_finite"),
        (b'{"v": [1, NaN]}', JsonMapping(values={"v": "v"}), "non_finite"),
        (b'{"ts": "yesterday", "v": 1}', None, "wrong_type"),
        (
            b'{"ts": "yesterday", "v": 1}',
            JsonMapping(timestamp_format=TimestampFormat.ISO8601),
            "bad_timestamp",
        ),
    ],
)
def test_bad_payloads_raise_typed_errors(payload, mapping, reason):
    with pytest.raises(CodecError) as e:
        decode(payload, mapping)
    assert e.value.reason == reason


@given(st.binary(max_size=100))
@settings(max_examples=300, deadline=None)
def test_garbage_bytes_raise_only_codec_error(data):
    try:
        decode(data)
    except CodecError:
        pass


@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.floats(allow_nan=False, allow_infinity=False)
    )
)
@settings(max_examples=100, deadline=None)
def test_encode_then_decode_round_trips_numeric_fields(d):
    d.pop("ts", None)
    assert sorted((t, v) for t, v, _ in decode(encode(d))) == sorted(d.items())


def test_encode_rejects_nan():
    with pytest.raises(ValueError):
        encode({"x": float("nan")})


def test_outgoing_json_has_null_for_nan_and_infinity_and_numbers_for_numpy_values():
    from protocols.json_codec import dumps

    def strict(token):
        raise ValueError(token)

    obj = {
        "v": float("nan"),
        "w": np.array([1.0, np.inf]),
        "s": np.float32(-np.inf),
        "n": np.int64(3),
        "t": (1.5, float("nan")),
        "ok": [{"x": 2.0}],
    }
    out = json.loads(dumps(obj), parse_constant=strict)
    assert out == {"v": None, "w": [1.0, None], "s": None, "n": 3, "t": [1.5, None], "ok": [{"x": 2.0}]}
    assert dumps({"a": 1.0}, separators=(",", ":")) == '{"a":1.0}'
