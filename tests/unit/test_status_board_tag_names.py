"""The tags view (``/api/tags``, the status page, ``edge-agent tags``) shows a name or text from the wire as the
logs quote it: a bidirectional override or a control character as its escape."""

from __future__ import annotations

from devices.base import Quality, Reading
from edge_agent.status_board import tag_rows


def test_a_tag_name_or_text_with_a_bidi_override_or_an_escape_is_shown_escaped_the_reading_keeps_its_name():
    """A Sparkplug metric named 'n/\\u202eGN' showed as 'n/NG' on the status page, a text value '\\u202eKO' as 'OK',
    and an ANSI escape in a name drove the terminal of `edge-agent tags`. A plain name, and one in Arabic or
    Japanese, is shown as it is."""
    spoof = Reading("plc", "n/\u202eGN", "\u202eKO", 1.0, 1.0, Quality.GOOD)
    ansi = Reading("plc", "m/\x1b[31mtemp", 1.5, 1.0, 1.0, Quality.GOOD)
    plain = Reading("plc", "خط/温度", "ok", 1.0, 1.0, Quality.GOOD)
    rows = {r["tag"]: r["value"] for r in tag_rows([spoof, ansi, plain], now=2.0)}
    assert rows == {"n/\\u202eGN": "\\u202eKO", "m/\\x1b[31mtemp": 1.5, "خط/温度": "ok"}
    assert spoof.tag == "n/\u202eGN"  # what pipelines and the outbox are given


def test_a_names_own_characters_are_shown_as_they_are_only_what_turns_or_hides_text_is_escaped():
    """A Persian name's zero-width non-joiner, a Japanese one's ideographic space, a no-break space, an emoji's
    zero-width joiner are the name's spelling: escaped as the logs quote them, /api/tags showed
    'دما/می\\u200cخواهد', and a script reading it matched no tag of its config. What turns or hides the text around it
    (a bidirectional mark or isolate, a C1 control, a line separator, a lone surrogate) is still escaped."""
    names = [
        "دما/می\u200cخواهد",
        "温度\u3000上",
        "Temp\u00a0°C",
        "👩\u200d🔧/state",
        "\u2764\ufe0f/Nhie\u0302\u0323t",
    ]
    rows = tag_rows([Reading("plc", n, n, 1.0, 1.0, Quality.GOOD) for n in names], now=2.0)
    # before: 'دما/می\\u200cخواهد', 'Temp\\xa0°C' ...
    assert sorted((r["tag"], r["value"]) for r in rows) == sorted((n, n) for n in names)
    odd = ["a\u2067b\u2069", "c\u200fd", "e\x85f", "g\u2028h", "i\ud800"]
    rows = tag_rows([Reading("plc", n, 1.0, 1.0, 1.0, Quality.GOOD) for n in odd], now=2.0)
    assert sorted(r["tag"] for r in rows) == [
        "a\\u2067b\\u2069",
        "c\\u200fd",
        "e\\x85f",
        "g\\u2028h",
        "i\\ud800",
    ]


def test_what_shows_nothing_and_spells_nothing_in_a_name_is_escaped_so_is_a_flood_of_marks():
    """A zero-width space, a word joiner, a byte-order mark ('\\ufeffTemp', a CSV's or a script's first name), a soft
    hyphen and tag characters (U+E0041.. spell 'AB' and show nothing) were shown raw: 'Te\\u200bmp' looked like the
    'Temp' a config names, and a name carried a text nobody saw. Variation selectors past a base's one, and combining
    marks on one base past 4, are escaped too: the first hid a text as the tag characters do, the second drew over
    the rows above and below. A Hebrew name's points and Vietnamese's two marks are shown as they are."""
    names = {
        "Te\u200bmp": "Te\\u200bmp",
        "\ufeffTemp": "\\ufeffTemp",
        "a\u2060b": "a\\u2060b",
        "Zähler\u00adstand": "Zähler\\xadstand",
        "pump\U000e0041\U000e0042": "pump\\U000e0041\\U000e0042",
        "pump\u3164": "pump\\u3164",
        "OK\ufe00\ufe01\ufe02": "OK\ufe00\\ufe01\\ufe02",
        "a" + "\u0301" * 6: "a" + "\u0301" * 4 + "\\u0301" * 2,
        "שָׁלוֹם": "שָׁלוֹם",
    }
    rows = tag_rows([Reading("plc", n, n, 1.0, 1.0, Quality.GOOD) for n in names], now=2.0)
    # before: each name shown as it came
    assert sorted((r["tag"], r["value"]) for r in rows) == sorted((shown, shown) for shown in names.values())
