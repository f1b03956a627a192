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
