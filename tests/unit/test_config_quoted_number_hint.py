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
