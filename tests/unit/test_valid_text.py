"""devices.base.valid_text: text that is not valid Unicode (lone surrogates) made valid, U+FFFD for each."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from devices.base import valid_text

# any code point, lone surrogates included (what asyncua's surrogateescape and JSON's "\ud800" give)
_TEXT = st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=40)


@given(st.one_of(_TEXT, st.lists(st.one_of(_TEXT, st.integers(), st.lists(_TEXT, max_size=3)), max_size=5)))
def test_the_result_is_always_text_a_strict_consumer_reads_and_valid_text_is_kept_as_it_is(v) -> None:
    out = valid_text(v)
    json.dumps(out, ensure_ascii=False).encode()  # UTF-8 JSON: what a strict consumer parses
    if json.dumps(v, ensure_ascii=False).encode(errors="surrogatepass") == json.dumps(
        out, ensure_ascii=False
    ).encode(errors="surrogatepass"):
        assert out is v  # nothing to replace: the same object, no copy on the hot path


def test_each_lone_surrogate_becomes_one_replacement_character() -> None:
    assert valid_text("ok\udcff\udcfe") == "ok\ufffd\ufffd"
    assert valid_text(["a", ["b\ud800"], 3, b"\xff"]) == ["a", ["b\ufffd"], 3, b"\xff"]
    assert valid_text("Grüße 温度") == "Grüße 温度"
