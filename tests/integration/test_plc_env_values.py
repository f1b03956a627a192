"""A write value given by an environment variable (``value: ${RECIPE}``, the recipe number set per line in the
gateway's ``agent.env``): a variable has no YAML type and no quotes to leave out. ``RECIPE=12`` and
``FLAG=false`` were refused at load as quoted text, "write value: 12 without quotes", which no variable can
follow, so no number or boolean could be given through one. A variable holding a decimal number or
true/false is that number or boolean; another form (``010``, ``yes``) is refused naming the variable and
what to set it to. Against a real asyncua server on a free loopback port."""

from __future__ import annotations

import pytest
import yaml
from asyncua import ua

from devices.opcua.client import OpcUaTypeMismatch
from edge_agent.config import ConfigError, load_config
from tests.integration.test_plc_exact_values import _config, _config_data
from tests.support.plc import agent_side, plc
from tests.support.results import result
from tests.support.waits import until


async def test_a_number_and_a_boolean_given_by_variables_are_written_as_such(monkeypatch):
    monkeypatch.setenv("RECIPE", "12")
    monkeypatch.setenv("STOP", "false")
    monkeypatch.setenv("GAIN", "1.5")
    monkeypatch.setenv("LABEL", "010")  # text for a String node, stated as such
    variables = {
        "Recipe": ua.Variant(0, ua.VariantType.Int16),
        "Stop": ua.Variant(True, ua.VariantType.Boolean),
        "Gain": ua.Variant(0.0, ua.VariantType.Float),
        "Label": ua.Variant("", ua.VariantType.String),
    }
    async with plc(variables) as p:
        write = {"type": "opcua_write", "source": "plc"}
        cfg = _config(
            p.port,
            {
                "recipe": {**write, "node_id": p.node_id("Recipe"), "value": "${RECIPE}"},
                "stop": {**write, "node_id": p.node_id("Stop"), "value": "${STOP}"},
                "gain": {
                    **write,
                    "node_id": p.node_id("Gain"),
                    "value": "${GAIN}",
                    "reset_value": "${NONE:-0}",
                },
                "label": {**write, "node_id": p.node_id("Label"), "value": {"text": "${LABEL}"}},
            },
        )
        # before: refused at load, "'12' is quoted text, not a number: ... write value: 12 without quotes"
        assert [cfg.actions[n].value for n in ("recipe", "stop", "gain", "label")] == [12, False, 1.5, "010"]
        assert cfg.actions["gain"].reset_value == 0
        async with agent_side(cfg) as (src, runner):
            assert src.target_errors == {}, src.target_errors
            await runner.handle(list(cfg.actions), result("NG", 0), None)
            await runner.flush(timeout_s=5)
        got = await p.read()
    assert got == {"Recipe": 12, "Stop": False, "Gain": 1.5, "Label": "010"}, (got, runner.stats)


@pytest.mark.parametrize(
    ("held", "fix"),
    [
        ("010", "set RECIPE=10 (or 8, if the octal 010 is meant)"),
        ("yes", "set RECIPE=true"),
    ],
)
def test_a_variable_holding_another_form_of_a_number_or_boolean_is_refused_naming_it_and_the_fix(
    monkeypatch, held, fix
):
    monkeypatch.setenv("RECIPE", held)
    with pytest.raises(ConfigError) as e:
        _config(
            4840,
            {"recipe": {"type": "opcua_write", "source": "plc", "node_id": "ns=2;s=R", "value": "${RECIPE}"}},
        )
    said = str(e.value)
    assert f"actions.recipe.value: environment variable RECIPE holds '{held}'" in said, said
    assert fix in said and "value: {text: '${RECIPE}'}" in said, said
    assert "without quotes" not in said, said  # before: advice no variable can follow


@pytest.mark.parametrize(
    ("held", "fix"),
    [
        ("1.50", "set RECIPE=1.5 for the number"),
        ("2.10", "set RECIPE=2.1 for the number"),
        ("1e3", "set RECIPE=1000.0 for the number"),
        ("+5", "set RECIPE=5 for the number"),
        ("-0", "set RECIPE=0 for the number"),
        (" 12 ", "set RECIPE=12 for the number"),
        ("1.5e400", "give RECIPE a finite decimal number"),
    ],
)
def test_a_variable_whose_number_reads_as_other_text_is_refused_not_changed_for_a_string_node(
    monkeypatch, held, fix
):
    """Before, RECIPE=2.10 loaded as the number 2.1, and a String node (a recipe version) got '2.1', maybe
    another recipe, without a word."""
    monkeypatch.setenv("RECIPE", held)
    with pytest.raises(ConfigError) as e:
        _config(
            4840,
            {"recipe": {"type": "opcua_write", "source": "plc", "node_id": "ns=2;s=R", "value": "${RECIPE}"}},
        )
    said = str(e.value)
    assert f"actions.recipe.value: environment variable RECIPE holds '{held}', which is" in said, said
    assert fix in said and "value: {text: '${RECIPE}'}" in said, said


async def test_a_variable_written_as_its_number_reaches_a_string_node_as_the_variable_holds_it(monkeypatch):
    monkeypatch.setenv("VERSION", "12.0")
    monkeypatch.setenv("CODE", "2.10")
    async with plc({n: ua.Variant("", ua.VariantType.String) for n in ("Version", "Code")}) as p:
        write = {"type": "opcua_write", "source": "plc"}
        cfg = _config(
            p.port,
            {
                "version": {**write, "node_id": p.node_id("Version"), "value": "${VERSION}"},
                "code": {**write, "node_id": p.node_id("Code"), "value": {"text": "${CODE}"}},
            },
        )
        async with agent_side(cfg) as (_src, runner):
            await runner.handle(list(cfg.actions), result("NG", 0), None)
            await runner.flush(timeout_s=5)
        got = await p.read()
    assert got == {"Version": "12.0", "Code": "2.10"}, (got, runner.stats)


@pytest.mark.parametrize(
    ("default", "said", "fix"),
    [
        ("007", "the default '007' of ${RECIPE} (the variable is not set)", "write the default as 7"),
        ("2.10", "the default '2.10' of ${RECIPE} (the variable is not set)", "write the default as 2.1"),
    ],
)
def test_a_default_the_config_writes_is_named_as_such_not_as_what_the_variable_holds(
    monkeypatch, default, said, fix
):
    """Before: 'environment variable RECIPE holds '007' ... set RECIPE=7 (or 7, if the octal 007 is meant)'
    with RECIPE unset: the text to change is the default in the config file, and both readings are 7."""
    monkeypatch.delenv("RECIPE", raising=False)
    value = f"${{RECIPE:-{default}}}"
    with pytest.raises(ConfigError) as e:
        _config(
            4840, {"recipe": {"type": "opcua_write", "source": "plc", "node_id": "ns=2;s=R", "value": value}}
        )
    text = str(e.value)
    assert said in text and fix in text and f"{{text: '{value}'}}" in text, text
    assert "RECIPE holds" not in text and "octal" not in text, text


@pytest.mark.parametrize("held", ["0x1F", "0b101"])
def test_a_variable_holding_a_hex_or_binary_code_is_text_as_before_variables_were_typed(monkeypatch, held):
    """A code for a String node (RECIPE=0x1F) loaded as text before c7328d8c typed variables, which then refused
    it at load: a gateway whose agent.env held one no longer started. It is text again."""
    monkeypatch.setenv("RECIPE", held)
    cfg = _config(
        4840,
        {"recipe": {"type": "opcua_write", "source": "plc", "node_id": "ns=2;s=R", "value": "${RECIPE}"}},
    )
    assert cfg.actions["recipe"].value == held and type(cfg.actions["recipe"].value) is str


async def test_a_variables_value_a_node_refuses_is_said_with_the_variable_its_place_and_file_and_a_fix_it_can_take(
    monkeypatch, tmp_path
):
    """LABEL=true for a String node (a boolean to a variable), RECIPE=0x1F for an INT and STEP=0b101 in a list for an
    INT array (text to a variable): each node refuses the value at connect and at every write. Before, the refusal
    said 'write text' and 'write a number without quotes', advice no variable can follow, and named no variable,
    field or file: the text to change is in the gateway's environment or the config's {text: ...}."""
    monkeypatch.setenv("LABEL", "true")
    monkeypatch.setenv("RECIPE", "0x1F")
    monkeypatch.setenv("STEP", "0b101")
    variables = {
        "Label": ua.Variant("", ua.VariantType.String),
        "Recipe": ua.Variant(0, ua.VariantType.Int16),
        "Steps": ua.Variant([0, 0, 0, 0], ua.VariantType.Int16),
    }
    async with plc(variables) as p:
        write = {"type": "opcua_write", "source": "plc"}
        path = tmp_path / "line3.yaml"
        path.write_text(
            yaml.safe_dump(
                _config_data(
                    p.port,
                    {
                        "label": {**write, "node_id": p.node_id("Label"), "value": "${LABEL}"},
                        "recipe": {**write, "node_id": p.node_id("Recipe"), "value": "${RECIPE}"},
                        "steps": {**write, "node_id": p.node_id("Steps"), "value": [1, 2, 3, "${STEP}"]},
                    },
                )
            )
        )
        cfg = load_config(path)
        events: list = []
        async with agent_side(cfg, events) as (src, runner):
            at_connect = dict(src.target_errors)
            await runner.handle(list(cfg.actions), result("NG", 0), None)
            await runner.flush(timeout_s=5)
        assert await p.read() == {"Label": "", "Recipe": 0, "Steps": [0, 0, 0, 0]}
    at_write = {e["node_id"]: e["reason"] for e in events if e["kind"] == "write_failing"}
    expected = {  # the place and file, the variable and what it holds, a fix a variable can take
        "Label": (
            f"actions.label.value in {path}",  # its value True, or its reset False (the opposite)
            "from environment variable LABEL, which holds 'true'",
            "for a String node state it as text in the config: value: {text: '${LABEL}'}",
        ),
        "Recipe": (
            f"which actions.recipe.value in {path} takes",
            "from environment variable RECIPE, which holds '0x1F'",
            "set RECIPE to the number in decimal digits",
        ),
        "Steps": (
            f"which actions.steps.value[3] in {path} takes",
            "from environment variable STEP, which holds '0b101'",
            "set STEP to the number in decimal digits",
        ),
    }
    for name, said_right in expected.items():
        for when, said in (("connect", at_connect), ("write", at_write)):
            why = said.get(p.node_id(name), "")
            assert all(s in why for s in said_right), (when, why)
            assert "write text" not in why and "without quotes" not in why, (when, why)
            assert "cannot write the " in why, (when, why)
    # what the fleet is told holds no form of a variable's value (the decimal of RECIPE=0x1F told what it holds)
    from edge_agent.cloud_text import CloudText

    for name, forms in (
        ("Recipe", ("0x1F", "31")),
        ("Steps", ("0b101", "STEP=5")),
        ("Label", ("<$LABEL> gives", "True", "False")),  # the type is named, not the value: 'the bool'
    ):
        told = CloudText(cfg).text(at_write[p.node_id(name)])
        # the config's path is the test's temporary folder, whose run number may hold '31'
        assert not any(f in told.replace(str(path), "<config>") for f in forms), told


async def test_a_literal_reset_value_a_node_refuses_is_not_blamed_on_the_variable_that_gives_value(
    monkeypatch,
):
    """``value: ${LABEL}`` (LABEL='Part A', text the String node takes) beside ``reset_value: false``, which the
    node refuses. Before, the check at connect and write_failing's reason said the refused False came from
    actions.label.value and environment variable LABEL, sending the engineer to agent.env for a value that is
    fine; the refusal is the config's own reset_value, said as any literal value's."""
    monkeypatch.setenv("LABEL", "Part A")
    async with plc({"Label": ua.Variant("", ua.VariantType.String)}) as p:
        label = {"type": "opcua_write", "source": "plc", "node_id": p.node_id("Label"), "value": "${LABEL}"}
        cfg = _config(p.port, {"label": {**label, "reset_value": False}})
        events: list = []
        async with agent_side(cfg, events) as (src, runner):
            at_connect = src.target_errors.get(p.node_id("Label"), "")
            await runner.handle(["label"], result("NG", 0), None)
            await runner.flush(timeout_s=5)
    told = [e["reason"] for e in events if e["kind"] == "write_failing"]
    assert told, events
    for why in (at_connect, *told):
        assert "cannot write False (bool)" in why, why
        assert "LABEL" not in why and "actions.label.value" not in why, why


async def test_two_actions_writing_one_value_to_one_node_are_each_said_with_their_own_note(
    monkeypatch, caplog
):
    """``label`` writes ${LABEL} (LABEL=true: the boolean true) and ``flag`` the config's own ``true`` to one String
    node, which refuses both. The notes were keyed by node and value, so the refusal of flag's literal true (at
    connect and at its write) was said as LABEL's, sending the engineer to agent.env for a value the config holds;
    each action's refusal is now said with its own place: flag's names no variable, label's names LABEL."""
    monkeypatch.setenv("LABEL", "true")
    async with plc({"Label": ua.Variant("", ua.VariantType.String)}) as p:
        write = {"type": "opcua_write", "source": "plc", "node_id": p.node_id("Label"), "mode": "level"}
        cfg = _config(p.port, {"label": {**write, "value": "${LABEL}"}, "flag": {**write, "value": True}})
        events: list = []
        async with agent_side(cfg, events) as (src, runner):
            runner.start()
            await until(lambda: len({e["action"] for e in events}) == 2, 5, "an episode an action at connect")
            at_connect = {e["action"]: e["reason"] for e in events if e["kind"] == "write_failing"}
            assert "LABEL" not in at_connect["flag"], at_connect
            assert "environment variable LABEL" in at_connect["label"], at_connect
            await runner.handle(["flag"], result("NG", 0), None)  # the runner's write of flag's value
            await runner.flush(timeout_s=5)
            said = [r.getMessage() for r in caplog.records if "action 'flag' failed" in r.getMessage()]
            with pytest.raises(OpcUaTypeMismatch) as flag:
                await src.write(p.node_id("Label"), True, at="actions.flag.value")
            with pytest.raises(OpcUaTypeMismatch) as label:
                await src.write(p.node_id("Label"), True, at="actions.label.value")
    assert said and not any("LABEL" in m for m in said), said
    assert "LABEL" not in str(flag.value), flag.value
    assert "which actions.label.value" in str(label.value) and "LABEL" in str(label.value), label.value
