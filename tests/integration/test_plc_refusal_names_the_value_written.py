"""A write target refused at connect is named by the value the config holds and the field that holds it. An output
whose value is a boolean resets to its opposite (the implied reset, no ``reset_value`` written): ``value: false`` to a
String node was shown at connect (``target_errors``, the status page, the log) as "cannot write True", the reset the
config nowhere holds, naming no field; ``validate --online`` listed an ``actions.<name>.reset_value`` the file does
not have. Against a real asyncua server on 127.0.0.1."""

from __future__ import annotations

from asyncua import ua

from edge_agent.cli import _online_errors
from edge_agent.config import load_config
from tests.support.plc import agent_side, plc


async def test_a_value_refused_at_connect_is_named_as_written_with_its_field_not_by_its_implied_reset(
    tmp_path,
):
    async with plc(
        {
            "Label": ua.Variant("", ua.VariantType.String),
            "Level": ua.Variant(0.0, ua.VariantType.Double),
            "Mode": ua.Variant("", ua.VariantType.String),
        }
    ) as p:
        path = p.config_file(
            tmp_path,
            {
                "label": ("Label", "false, mode: on_change"),
                "level": ("Level", "true"),
                "mode": ("Mode", "AUTO, reset_value: true, mode: on_change"),
            },
        )
        cfg = load_config(path)
        async with agent_side(cfg) as (src, _runner):
            said = dict(src.target_errors)
        label, level, mode = (said[p.node_id(n)] for n in ("Label", "Level", "Mode"))
        # was: "node ... is String; cannot write True (bool): write text", the implied reset's; then
        # "actions.label.value: node ...", naming the field but not the file
        assert label.startswith(
            f"{path}: actions.label.value: node {p.node_id('Label')} is String; cannot write False"
        ), said
        assert level.startswith(
            f"{path}: actions.level.value: node {p.node_id('Level')} is Double; cannot write True"
        ), said
        # a reset_value written and refused is named as such (the value AUTO fits the node): its True as written
        assert mode.startswith(
            f"{path}: actions.mode.reset_value: node {p.node_id('Mode')} is String; cannot write True"
        ), said
        errors = await _online_errors(cfg, str(path))
    assert not [e for e in errors if "actions.label.reset_value" in e or "actions.level.reset_value" in e], (
        errors
    )
    assert any(
        e.startswith(f"{path}: actions.label.value: ") and "cannot write False" in e for e in errors
    ), errors
    assert any(
        e.startswith(f"{path}: actions.mode.reset_value: ") and "cannot write True" in e for e in errors
    ), errors
