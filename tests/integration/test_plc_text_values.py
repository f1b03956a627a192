"""Text a String node must get as written, though it reads as a number or a truth value: a recipe code
"010", an HMI's "ON", a label "1.50". YAML reads such text unquoted as 8 (octal), true or 1.5, and the agent
refuses it quoted ("a Boolean or numeric node must never get a string"), so no config could write it: the
load's own advice for `value: 010` ("quote it if it is text") was refused in turn, and the advice for the
quoted '010' ("write value: 10 without quotes") put "10" on the PLC. Stated as text, `value: {text: '010'}`
(as a ByteString's bytes are stated, `{hex: ...}`), it loads; a String node gets it exactly, and any other
node refuses it at connect and at each write, naming the node. Against a real asyncua server, the config
loaded from its YAML file."""

from __future__ import annotations

import pytest
from asyncua import ua

from devices.opcua.client import OpcUaSource
from edge_agent.actions import ActionRunner, write_targets
from edge_agent.config import ConfigError, load_config
from tests.support.peers import free_port, node_ids_written, opcua_server
from tests.support.results import result
from tests.support.waits import until

CONFIG = """\
agent:
  id: gw
  data_dir: {data}
sources:
  plc:
    type: opcua
    endpoint: opc.tcp://127.0.0.1:{port}/plc/
    connect_timeout_s: 2.0
    keepalive_check_s: 0.3
actions:
  recipe:
    type: opcua_write
    source: plc
    node_id: ns={idx};s=Recipe
    value: {{text: '010'}}
    reset_value: {{text: '1.50'}}
    mode: on_change
    when: {{verdict: NG}}
  lamp:
    type: opcua_write
    source: plc
    node_id: ns={idx};s=Lamp
    value: {{text: 'ON'}}
    when: {{verdict: NG}}
  count:
    type: opcua_write
    source: plc
    node_id: ns={idx};s=Count
    value: {{text: '010'}}
    when: {{verdict: NG}}
"""


async def test_text_stated_as_text_reaches_a_string_node_as_written_and_no_other(tmp_path):
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    nodes = {}
    for name, variant in (
        ("Recipe", ua.Variant("", ua.VariantType.String)),
        ("Lamp", ua.Variant("OFF", ua.VariantType.String)),
        ("Count", ua.Variant(0, ua.VariantType.Int16)),
    ):
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, variant)
        await nodes[name].set_writable()
    sent = node_ids_written(srv, idx)
    await srv.start()
    path = tmp_path / "line3.yaml"
    path.write_text(CONFIG.format(data=tmp_path / "data", port=port, idx=idx))
    cfg = load_config(path)  # before: refused, "'010' is quoted text, not a number"
    assert cfg.actions["recipe"].value == "010" and cfg.actions["lamp"].value == "ON"
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(node_id, value) for _, node_id, value in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        await until(lambda: src.target_errors, 30, "the write targets checked")
        await runner.handle(["recipe", "lamp", "count"], result("NG", 0), None)
        await runner.flush(timeout_s=5)
        got = [await nodes[n].read_value() for n in ("Recipe", "Lamp", "Count")]
        await runner.handle(["recipe"], result("OK", 1), None)
        await runner.flush(timeout_s=5)
        reset = await nodes["Recipe"].read_value()
    finally:
        await src.stop()
        await srv.stop()
    assert got == ["010", "ON", 0] and reset == "1.50"
    assert "Count" not in sent, sent  # never sent to the Int16 node
    (why,) = (v for k, v in src.target_errors.items() if "Count" in k)
    assert "Int16" in why and "'010'" in why, why
    assert runner.stats["count"]["failed"] == 1 and runner.stats["count"].get("ok", 0) == 0


def test_quoted_text_that_reads_as_a_number_or_truth_value_is_refused_naming_the_text_form(tmp_path):
    path = tmp_path / "line3.yaml"
    path.write_text(
        CONFIG.format(data=tmp_path / "data", port=4840, idx=2).replace("{text: '010'}", "'010'", 1)
    )
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    (err,) = ei.value.errors
    assert "'010' is quoted text, not a number" in err, err
    assert "for a String node, state it as text: value: {text: '010'}" in err, err
