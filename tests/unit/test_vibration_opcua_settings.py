"""OPC UA source settings: validation without asyncua, clear errors for bad configs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from devices.opcua.settings import OpcUaSettings


def test_settings_module_does_not_import_asyncua() -> None:
    code = "import sys, devices.opcua.settings; print('asyncua' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unknown_option_is_rejected_by_name() -> None:
    with pytest.raises(ValidationError, match="publishing_intervall_ms"):
        OpcUaSettings(endpoint="opc.tcp://h:4840/", publishing_intervall_ms=10)


def test_security_mode_needs_certificate_and_key() -> None:
    with pytest.raises(ValidationError, match="needs certificate_file and private_key_file"):
        OpcUaSettings(endpoint="opc.tcp://h:4840/", security_mode="SignAndEncrypt")


def test_duplicate_tags_and_non_opc_endpoint_are_rejected() -> None:
    with pytest.raises(ValidationError, match="appear more than once"):
        OpcUaSettings(
            endpoint="opc.tcp://h:4840/",
            nodes=[{"node_id": "ns=2;s=A", "tag": "x"}, {"node_id": "ns=2;s=B", "tag": "x"}],
        )
    with pytest.raises(ValidationError, match="endpoint"):
        OpcUaSettings(endpoint="http://h:4840/")


def test_settings_are_frozen_and_defaults_documented() -> None:
    s = OpcUaSettings(endpoint="opc.tcp://h:4840/")
    assert s.type == "opcua" and s.security_mode.value == "None" and s.non_finite.value == "bad"
    with pytest.raises(ValidationError):
        s.endpoint = "opc.tcp://other:4840/"  # type: ignore[misc]


def test_sample_config_validates() -> None:
    from pathlib import Path

    import yaml

    sample = Path(__file__).resolve().parents[2] / "devices" / "opcua" / "sample.yaml"
    s = OpcUaSettings.model_validate(yaml.safe_load(sample.read_text()))
    assert [n.tag for n in s.nodes] == [None, None, "speed"]


def test_a_namespace_uri_whose_percent_escapes_are_no_utf8_is_refused_naming_the_field_and_file(
    tmp_path,
) -> None:
    """``nsu=`` escapes are UTF-8 bytes (``%C3%A9`` is é); ``%E9`` alone (Latin-1) is no text: refused at load,
    naming the file, the field and the escapes, not found missing on the server at run time."""
    from devices.opcua.settings import namespace_uri
    from edge_agent.config import ConfigError, load_config

    assert namespace_uri("nsu=urn:usine:r%C3%A9gleur;s=Speed") == "urn:usine:régleur"
    assert namespace_uri("nsu=urn:plc%3Bline=2;i=7") == "urn:plc;line=2" and namespace_uri("ns=2;i=7") is None
    path, bad = tmp_path / "line1.yaml", "nsu=urn:usine:r%E9gleur;s=Speed"
    plc = "  plc: {type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840/'"
    for field, text in (
        ("sources.plc.nodes[0].node_id", f"{plc}, nodes: [{{node_id: '{bad}'}}]}}\n"),
        ("sources.plc.heartbeat.node_id", f"{plc}, heartbeat: {{node_id: '{bad}'}}}}\n"),
        (
            "actions.reject.node_id",
            f"{plc}}}\nactions:\n  reject: {{type: opcua_write, source: plc, node_id: '{bad}', value: true}}\n",
        ),
    ):
        path.write_text("agent: {id: gw}\nsources:\n" + text)
        with pytest.raises(ConfigError) as e:
            load_config(path)
        said = str(e.value)
        assert str(path) in said and f"{field}: node '{bad}'" in said and "%E9 are no UTF-8" in said, said
        # the URI's own '%' (a namespace urn:usine:r%E9gleur, found as written before escapes were decoded)
        assert "is written nsu=urn:usine:r%25E9gleur;..." in said, said
