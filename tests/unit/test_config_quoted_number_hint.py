"""A quoted number for a PLC write is refused at load with a hint of the value to write unquoted. The hint names
the number the engineer wrote, never its float when that is another number (review
/work/notes58/review_proto/findings.md M1): ``'9.007199254740993e+15'`` was told ``9007199254740992.0``, which
loads without a word and reaches an Int64 node one less; ``'9007199254740992.5'`` was told the same, its fraction
dropped. Followed, the hint must load as the very number written. Checked at load, with no peer."""

from __future__ import annotations

import decimal
import re

import pytest

from devices.base import FractionFloat, WholeFloat
from edge_agent.config import ConfigError, load_config


def _config(tmp_path, value: str):
    path = tmp_path / "line1.yaml"
    path.write_text(
        "agent: {id: gw}\n"
        "sources:\n"
        "  plc: {type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840/'}\n"
        "actions:\n"
        f"  preset: {{type: opcua_write, source: plc, node_id: 'ns=2;s=Preset', value: {value}, when: {{verdict: NG}}}}\n"
    )
    return path


def _exact(value) -> decimal.Decimal:
    if isinstance(value, WholeFloat):
        return decimal.Decimal(value.whole)
    if isinstance(value, FractionFloat):
        return decimal.Decimal(value.text)
    return decimal.Decimal(value)


@pytest.mark.parametrize(
    "written",
    ["9.007199254740993e+15", "9007199254740992.5", "9007199254740993.0", "9007199254740993e0", "2.5", "1e3"],
)
def test_the_hint_for_a_quoted_number_loads_as_the_number_written(tmp_path, written):
    with pytest.raises(ConfigError) as refused:
        load_config(_config(tmp_path, f"'{written}'"))
    hint = re.search(r"write value: (\S+?)(?: without quotes|$)", str(refused.value))
    assert hint is not None, str(refused.value)
    followed = load_config(_config(tmp_path, hint.group(1))).actions["preset"].value
    assert _exact(followed) == decimal.Decimal(written), (hint.group(1), followed)


@pytest.mark.parametrize(
    "written", ["9.007199254740993e+15", "1.8446744073709551617e+19", "-9.007199254740993e+15"]
)
def test_the_hint_for_a_quoted_whole_number_past_a_doubles_range_is_its_text_a_double_node_takes(
    tmp_path, written
):
    """An exponent's whole number a double does not hold was hinted as its digits (9007199254740993): right for an
    Int64 node, but a Double node refuses those digits at every write (no double holds them), and past 2**64 the
    digits were refused at load (no node holds them). The text itself, unquoted, is kept exact: an integer node
    gets the number shown, a Double node the float the text rounds to."""
    from asyncua import ua

    from devices.opcua.client import convert_value

    with pytest.raises(ConfigError) as refused:
        load_config(_config(tmp_path, f"'{written}'"))
    assert f"write value: {written} without quotes" in str(refused.value), str(refused.value)
    followed = load_config(_config(tmp_path, written)).actions["preset"].value
    assert _exact(followed) == decimal.Decimal(written)
    assert convert_value(ua.VariantType.Double, followed, "ns=2;s=Level") == float(written)
