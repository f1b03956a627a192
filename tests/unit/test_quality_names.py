"""Why a JSON record's quality is not GOOD (``protocols.quality_names``, ``json_codec.Status``)."""

from __future__ import annotations

import copy
import importlib.util
import json
import pickle
import threading

import pytest

from protocols import quality_names
from protocols.json_codec import JsonMapping, PubsubMapping, RecordsMapping, compile_decoder


def _record(q: object, fmt: str) -> tuple:
    """The tuple of one record with quality ``q`` under ``quality_format: fmt``."""
    errors: list[tuple[str, str]] = []
    run = compile_decoder(
        JsonMapping(records=RecordsMapping(array="", quality_format=fmt)),
        on_record_error=lambda r, d: errors.append((r, d)),
    )
    out = run(json.dumps([{"id": "a", "v": 1.5, "q": q}]), 0.0)
    assert not errors and len(out) == 1
    return out[0]


@pytest.mark.parametrize("fmt", ["auto", "opcda"])
@pytest.mark.parametrize(
    ("q", "level", "reason"),
    [
        (0x0118, "bad", "BadCommFailure"),  # a vendor's high byte (0x01) beside OPC DA's quality bits
        (0xFF18, "bad", "BadCommFailure"),
        (0x0144, "uncertain", "UncertainLastUsableValue"),
        (0x0118 | 0x03, "bad", "BadCommFailure"),  # and its limit bits (constant), left out as ever
    ],
)
def test_an_opcda_quality_with_its_vendor_byte_set_is_named_by_its_quality_bits(fmt, q, level, reason):
    """OPC DA's 16-bit quality keeps its upper byte for the vendor; its level is read from the lower byte
    (QQSSSSLL), and so is its name. Before, any quality past 0xFF was named ``quality_<n>`` (quality_280
    for 0x0118), though read BAD by the same bits that name it BadCommFailure."""
    got = _record(q, fmt)[4]
    assert got == level
    assert got.reason == reason


def test_a_decoded_records_quality_survives_pickle_and_copy_with_its_reason():
    """``decode``'s tuples are plain data a caller may copy or hand to another process (a process pool
    pickles them). A record that is not GOOD carries a ``Status``, a str with its ``reason``; pickling,
    ``copy.copy`` and ``copy.deepcopy`` of it raised TypeError (str's own way rebuilt it from its text
    alone, without the reason ``Status.__new__`` requires)."""
    got = _record({"Code": 0x808A0000, "Symbol": "BadNotConnected"}, "opcua")
    for again in (
        pickle.loads(pickle.dumps(got)),
        pickle.loads(pickle.dumps(got, protocol=0)),
        copy.copy(got),
        copy.deepcopy(got),
    ):
        assert again == got
        assert again[4] == "bad"
        assert again[4].reason == "BadNotConnected"


def test_a_code_named_by_another_thread_while_the_opcua_table_loads_gets_its_name_not_its_number(monkeypatch):
    """The OPC UA names are read from asyncua's table once, at the first code named. A thread naming a code
    while another read the table found it empty (a placeholder set before the read) and named the code by
    level and number, ``Bad_0x808A0000``, and that name was kept for good in the per-code cache: every
    later BadNotConnected said so. The second thread is run deterministically inside the first's read."""
    monkeypatch.setattr(quality_names, "_opcua_table", None)
    monkeypatch.setattr(quality_names, "_opcua_names", {})
    real = importlib.util.spec_from_file_location
    meanwhile: list[str] = []

    def reading_the_table(*args, **kwargs):
        if not meanwhile:  # the first read: another thread names a code now
            meanwhile.append("")
            t = threading.Thread(target=lambda: meanwhile.append(quality_names.opcua(0x808A0000)))
            t.start()
            t.join()
        return real(*args, **kwargs)

    monkeypatch.setattr(importlib.util, "spec_from_file_location", reading_the_table)
    assert quality_names.opcua(0x80340000) == "BadNodeIdUnknown"
    assert meanwhile[1] == "BadNotConnected"
    assert quality_names.opcua(0x808A0000) == "BadNotConnected"


BAD_SENSOR_FAILURE = 0x808C0000


def test_a_nan_whose_record_says_why_keeps_that_reason_one_that_says_nothing_non_finite():
    """A NaN or infinite value kept (``non_finite: bad``) is BAD whatever its quality says. Its reason was
    ``non_finite`` even where the record said why (BadSensorFailure: an open thermocouple), where the OPC UA
    source keeps a status's name for such a value and says ``non_finite`` only when the status said nothing
    more. Records and OPC UA PubSub fields alike."""
    run = compile_decoder(
        JsonMapping(records=RecordsMapping(array="", quality_format="opcua")),
        on_record_error=lambda r, d: None,
        keep_non_finite=True,
    )
    got = run(
        f'[{{"id": "a", "v": NaN, "q": {BAD_SENSOR_FAILURE}}}, {{"id": "b", "v": NaN, "q": 0}},'
        f' {{"id": "c", "v": 1e999, "q": "Uncertain_Stale"}}, {{"id": "d", "v": NaN}}]',
        0.0,
    )
    assert [(t[0], t[4], t[4].reason) for t in got] == [
        ("a", "bad", "BadSensorFailure"),
        ("b", "bad", "non_finite"),
        ("c", "bad", "Uncertain_Stale"),
        ("d", "bad", "non_finite"),
    ]
    run = compile_decoder(
        JsonMapping(opcua_pubsub=PubsubMapping()), on_record_error=lambda r, d: None, keep_non_finite=True
    )
    status = {"Code": BAD_SENSOR_FAILURE, "Symbol": "BadSensorFailure"}
    msg = {"MessageType": "ua-data", "Messages": [{"Payload": {"a": {"Value": "NaN", "StatusCode": status}}}]}
    got = run(json.dumps(msg).replace('"NaN"', "NaN"), 0.0)
    assert [(t[0], t[4], t[4].reason) for t in got] == [("a", "bad", "BadSensorFailure")]


def test_a_status_whose_symbol_says_good_of_a_bad_code_is_named_by_its_code():
    """The level of ``{"Code", "Symbol"}`` comes from its Code; a publisher whose Symbol contradicts it (a stale
    Symbol field, a mapping bug) gave a BAD reading whose reason said "Good". Now the Code names it."""
    got = _record({"Code": 0x808A0000, "Symbol": "Good"}, "opcua")[4]
    assert got == "bad" and got.reason == "BadNotConnected", got.reason
    agreeing = _record({"Code": 0x808A0000, "Symbol": "Bad_NotConnected"}, "opcua")[4]
    assert agreeing.reason == "Bad_NotConnected"  # the publisher's own word where it agrees
