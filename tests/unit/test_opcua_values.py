"""Values an OPC UA server sends, in the forms pipelines, rules and JSON consumers use (no server needed:
the structures' decoding against a real server is tests/integration/test_opcua_source.py's)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
from asyncua import ua

from devices.opcua.client import _MAX_MEMBERS, _members, _plain


@dataclasses.dataclass
class Axis:
    Pos: float = 0.0
    Homed: bool = False


@dataclasses.dataclass
class Drive:
    Speed: float = 0.0
    Axis: Axis = dataclasses.field(default_factory=Axis)
    Trace: list = dataclasses.field(default_factory=list)


def test_plain_forms_of_texts_names_ids_codes_and_times():
    assert _plain(ua.LocalizedText("Flange 40", "en")) == "Flange 40"
    assert _plain(ua.QualifiedName("Speed", 2)) == "Speed"
    assert _plain(ua.NodeId("Line.Speed", 3)) == "ns=3;s=Line.Speed"
    assert _plain(ua.StatusCode(ua.StatusCodes.BadSensorFailure)) == "BadSensorFailure"
    assert _plain(dt.datetime(2026, 11, 30, 6, 0)) == "2026-11-30T06:00:00+00:00"  # OPC UA times are UTC
    assert _plain([ua.LocalizedText("a"), ua.LocalizedText("b")]) == ["a", "b"]
    assert _plain(b"\x00\x01") == b"\x00\x01" and _plain(7) == 7


def test_a_structure_gives_its_members_by_path_and_an_array_of_them_is_bounded():
    out: list = []
    _members("Drive1", Drive(1450.0, Axis(3.5, True), [0.5, 1.5]), out)
    assert [t for t, _ in out] == ["Drive1/Speed", "Drive1/Axis/Pos", "Drive1/Axis/Homed", "Drive1/Trace"]
    assert out[0][1] == 1450.0 and out[2][1] is True
    np.testing.assert_array_equal(out[3][1], [0.5, 1.5])  # a member's numbers: a waveform, as a node's
    many: list = []
    _members("Drives", [Drive(float(i)) for i in range(600)], many)  # 4 members each: 2400
    assert len(many) == _MAX_MEMBERS and many[0][0] == "Drives/0/Speed" and many[4][0] == "Drives/1/Speed"


def test_variants_and_xml_have_their_plain_form_and_a_members_big_integers_stay_exact():
    from asyncua import ua

    assert _plain([ua.Variant(1, ua.VariantType.Int32), ua.Variant("a", ua.VariantType.String)]) == [1, "a"]
    assert _plain(ua.XmlElement("<a/>")) == "<a/>"
    out: list = []
    _members("Part", Drive(1.0, Axis(), [2**53 + 1, 7]), out)  # an Int64[] member: exact, not rounded
    assert dict(out)["Part/Trace"] == [2**53 + 1, 7]
    assert _plain([True, False]) == [True, False] and _plain(["0012"]) == ["0012"]
