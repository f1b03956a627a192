"""Why a JSON record's quality is not GOOD (``protocols.quality_names``, ``json_codec.Status``)."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from protocols.json_codec import JsonMapping, RecordsMapping, compile_decoder


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
