"""A ``sparkplug_command`` action with ``datatype: DateTime`` is checked when the config is loaded: its values
must be times a Sparkplug DateTime holds (ISO 8601 text with its zone, or whole epoch milliseconds, 1970 to
the year 9999), refused with the file and the field named otherwise. The former code had no DateTime
datatype for the action at all."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, load_config

HEAD = """\
agent:
  id: gw
  data_dir: {data}
sources:
  bus:
    type: mqtt
    subscriptions: [{{topic: spBv1.0/#, codec: sparkplug_b}}]
actions:
  due:
    type: sparkplug_command
    source: bus
    group: g
    edge_node: n1
    metric: due
    datatype: DateTime
"""


def _load(tmp_path, tail: str):
    path = tmp_path / "line3.yaml"
    path.write_text(HEAD.format(data=tmp_path / "data") + tail)
    return path, load_config(path)


@pytest.mark.parametrize(
    "tail",
    [
        "    value: '2026-12-03T05:17:50Z'\n",
        "    value: '2026-12-03T06:17:50.123+01:00'\n",
        "    value: 1764739070000\n",
        "    value: 1764739070000\n    mode: pulse\n    reset_value: '1970-01-01T00:00:00Z'\n",
    ],
)
def test_a_datetime_commands_time_with_its_zone_or_epoch_ms_loads(tmp_path, tail):
    _, cfg = _load(tmp_path, tail)
    assert cfg.actions["due"].datatype == "DateTime"


@pytest.mark.parametrize(
    ("tail", "field", "expected"),
    [
        ("    value: '2026-12-03T05:17:50'\n", "value", "has no zone"),
        ("    value: '1969-12-31T23:59:59Z'\n", "value", "is out of the range of a Sparkplug DateTime"),
        ("    value: -1\n", "value", "-1 is out of the range of a Sparkplug DateTime"),
        (
            "    value: 1764739070000\n    mode: pulse\n    reset_value: true\n",
            "reset_value",
            "True is no time",
        ),
        ("    value: 'tomorrow'\n", "value", "'tomorrow' is no ISO 8601 time"),
        # a date alone, as the JSON codec refuses one (date_only): "has no zone" for one given an offset
        ("    value: '2026-12-04+01:00'\n", "value", "is a date without a time of day, no instant"),
        ("    value: '2026-12-04'\n", "value", "'2026-12-04' is a date without a time of day"),
        # epoch seconds (as a PLC or a shell's date +%s gives them) would be sent as a time in January 1970
        (
            "    value: 1764739070\n",
            "value",
            "epoch seconds? a DateTime metric takes milliseconds, 1764739070000",
        ),
    ],
)
def test_a_datetime_commands_naive_or_out_of_range_time_is_refused_at_load_naming_file_and_field(
    tmp_path, tail, field, expected
):
    path = tmp_path / "line3.yaml"
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, tail)
    errors = ei.value.errors
    # the field is named in the location (actions.due.value) or, for a check of the whole action, its message
    assert any(
        e.startswith(f"{path}: actions.due")
        and f"{field}:" in e.replace(f"due.{field}", f"{field}:")
        and expected in e
        for e in errors
    ), errors


def test_a_rebirth_retry_cap_below_the_first_wait_is_refused_naming_file_and_both_fields(tmp_path):
    """``rebirth_retry_max_s`` is the longest wait between two rebirths asked of a node that does not answer;
    below ``rebirth_retry_s`` the first wait was longer than the "longest", accepted silently."""
    path = tmp_path / "line3.yaml"
    path.write_text(
        HEAD.format(data=tmp_path / "data").replace(
            "codec: sparkplug_b}]",
            "codec: sparkplug_b}]\n    sparkplug: {rebirth_retry_s: 60, rebirth_retry_max_s: 30}",
        )
        + "    value: 1764739070000\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(path)
    said = str(e.value)
    assert "line3.yaml" in said and "sources.bus" in said, said
    assert "rebirth_retry_max_s (30) is below rebirth_retry_s (60)" in said, said
    ok = tmp_path / "ok.yaml"  # 0: asked once only, whatever the cap
    ok.write_text(path.read_text().replace("rebirth_retry_s: 60", "rebirth_retry_s: 0"))
    load_config(ok)
