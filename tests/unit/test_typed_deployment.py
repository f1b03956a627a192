"""The typed deployment on the wire (v3 fields, v2 JSON still read), explicit rollbacks, and the fleet-config
check the cloud runs with the agent's own validator."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cloud_trainer.fleet.deployment import Deployment, gate_from_request
from edge_agent.fleet_config import check_fleet_config
from edge_agent.models.manager import is_rollback
from protocols.gen import fleet_pb2 as pb


def _dep(**kw) -> Deployment:
    return Deployment.model_validate(
        {
            "id": "abc123",
            "created": 1.0,
            "package": "part-inspection",
            "version": "1.1.0",
            "digest": "d" * 64,
            "size": 9,
            "slot": "vision",
            "steps": ["1", "50%", "100%"],
            "gate": {"max_error_rate": 0.05},
            "targets": {
                "gw1": {"status": "healthy", "step": 0, "updated": 2.0, "health": {"x": 1}},
                "gw2": {},
            },
            **kw,
        }
    )


def test_a_deployment_travels_as_typed_fields_and_reads_back_the_same():
    d = _dep(rollback=True, state="halted", reason="agent gw1: failed")
    info = d.to_proto(pb)
    assert (info.id, info.kind, info.rollback, info.gate.max_error_rate, info.targets[1].step) == (
        "abc123",
        "model",
        True,
        0.05,
        -1,
    )
    back = Deployment.from_proto(pb.DeploymentInfo.FromString(info.SerializeToString()))
    want = d.doc()
    del want["targets"]["gw1"]["health"]  # what agents sent stays in the service's document, not in the table
    assert back.doc() == want
    # a v2 service answers with the JSON document only: read alike
    assert Deployment.from_proto(pb.DeploymentInfo(json=info.json)).targets["gw1"].status == "healthy"


def test_config_deployments_do_not_echo_their_yaml_and_name_what_they_roll_out():
    d = _dep(kind="config", config_yaml="sources: {}\n", slot="")
    assert "config_yaml" not in d.to_proto(pb).json and d.what() == f"config part-inspection ({'d' * 12})"


def test_gate_is_typed_or_absent():
    assert gate_from_request(pb.CreateDeploymentRequest()) == {}
    req = pb.CreateDeploymentRequest()
    req.gate.max_error_rate = 0.0  # zero is a bound, not "unset"
    assert gate_from_request(req) == {"max_error_rate": 0.0}
    with pytest.raises(ValueError):
        Deployment(id="x", created=0, package="p", version="1", digest="d", gate={"max_error_rat": 1})


def test_rollback_is_an_explicit_field_and_the_v2_suffix_still_counts():
    assert is_rollback(SimpleNamespace(deployment_id="abc", rollback=True))
    assert is_rollback(SimpleNamespace(deployment_id="abc:rollback", rollback=False))
    assert not is_rollback(pb.DesiredSlot(deployment_id="abc"))


def test_fleet_config_check_names_each_field_and_leaves_agent_files_to_the_agent():
    errors = check_fleet_config(
        b"cloud: {endpoint: x}\nsources: {s: {type: mqtt, port: 0}}\n"
        b"pipelines: [{name: p, source: s, model: nope}]\n",
        "cfg.yaml",
    )
    assert errors[0].startswith("cfg.yaml: cloud: set by each agent's own local file")
    assert errors[1:] == [
        "cfg.yaml: sources.s.port: Input should be greater than or equal to 1 (found 0)",
        "cfg.yaml: pipelines[0].model: unknown model slot 'nope'; none defined",
    ]
    # trusted keys and packages are files on each agent, environment variables its own: not checked here
    assert (
        check_fleet_config(
            b"trusted_keys: [keys/fleet.pub]\nsources: {s: {type: mqtt, host: '${BROKER}'}}\n", "cfg.yaml"
        )
        == []
    )
    assert check_fleet_config(b"- a list\n", "cfg.yaml") == [
        "cfg.yaml: expected a mapping at the top level (sources:, models:, pipelines: ...)"
    ]


def test_the_fleet_config_check_reads_no_environment_and_says_why_a_gateways_variable_is_refused(monkeypatch):
    """The cloud's check runs in the fleet service's environment: ``${VAR}`` is substituted from none (a tenant's
    config read the platform's credentials back in a refusal), and a number field taking a gateway's variable with
    no default, refused as empty, says so (it was ``(found '')`` alone)."""
    monkeypatch.setenv("MQTT_PORT", "1883")  # set here, as the cloud's own: not read
    monkeypatch.setenv("PLATFORM_SECRET", "s3cr3t")
    [error] = check_fleet_config(b"sources: {s: {type: mqtt, port: '${MQTT_PORT}'}}\n", "cfg.yaml")
    assert error == (
        "cfg.yaml: sources.s.port: Input should be a valid integer, unable to parse string as an integer (found '') "
        "(it takes ${MQTT_PORT}, a gateway's variable the cloud's check does not read: give it a default, "
        "${MQTT_PORT:-...}, that the field accepts)"
    )
    [error] = check_fleet_config(b"sources: {s: {type: '${PLATFORM_SECRET}'}}\n", "cfg.yaml")
    assert "s3cr3t" not in error and error.startswith("cfg.yaml: sources.s.type: unknown source type ''")
    assert check_fleet_config(b"sources: {s: {type: mqtt, port: '${MQTT_PORT:-1883}'}}\n", "cfg.yaml") == []


def test_the_fleet_config_check_reads_no_package_file_of_the_services_disk(tmp_path):
    """The cloud's check of a tenant's fleet config read the package a model names when that path was a file on
    the fleet service's own disk (absolute paths are allowed: a gateway's own files): its labels came back in the
    refusal of an action's label, so a tenant's admin could learn whether another tenant's package (registry
    paths are guessable) exists and what it tells apart. The check now reads no file; the agent reads its own."""
    from tests.support.models import make_package

    pkg = make_package(tmp_path, kind="vision")
    doc = f"""
trusted_keys: [k.pub]
sources:
  cam: {{type: camera, url: "http://127.0.0.1:1/x.mjpg"}}
models:
  m: {{package: {pkg}}}
pipelines:
  - {{name: p, source: cam, model: m, actions: [lg]}}
actions:
  lg: {{type: log, when: {{label: zzz_probe}}}}
"""
    errors = check_fleet_config(doc.encode(), "cfg.yaml")
    assert not any("labels are" in e for e in errors), errors
    assert errors == check_fleet_config(
        doc.replace(str(pkg), str(tmp_path / "none.edgepkg")).encode(), "cfg.yaml"
    )


def test_the_fleet_config_check_reads_no_opcua_certificate_file_of_the_services_disk(tmp_path, monkeypatch):
    """The OPC UA source's check of the agent's own certificate (expired, not its key) ran in the cloud's check of a
    tenant's fleet config too, reading whatever path the tenant named on the fleet service's disk: its time told
    whether a file existed and how big, a named pipe hung the check and /dev/zero filled the validator's memory
    (2 GiB in 4 s). The cloud's check now opens no such file; the gateway still checks its own."""
    import devices.opcua.settings as opcua_settings

    opened: list[str] = []

    def spy(path, *a, **k):
        opened.append(str(path))
        raise OSError("not read here")

    monkeypatch.setattr(opcua_settings, "read_certificate", spy)
    monkeypatch.setattr(opcua_settings, "read_private_key", spy)
    doc = f"""
sources:
  plc:
    type: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    security_mode: SignAndEncrypt
    certificate_file: {tmp_path / "cert.der"}
    private_key_file: {tmp_path / "key.pem"}
    nodes: [{{node_id: "ns=2;s=Temp", tag: temp}}]
"""
    check_fleet_config(doc.encode(), "cfg.yaml")
    assert opened == []


def test_a_certificate_or_key_path_to_a_pipe_a_device_or_a_huge_file_is_refused_unread(tmp_path):
    """The agent reads its OPC UA certificate and key whole: a path to a named pipe blocked for good, one to a
    device or a huge file was read into memory. Only a regular file of at most 1 MiB is read now."""
    import os
    import threading

    from devices.opcua.settings import read_certificate, read_private_key

    big = tmp_path / "big.der"
    big.write_bytes(b"\0" * (2 * 1024 * 1024))
    pipe = tmp_path / "cert.fifo"
    os.mkfifo(pipe)
    for read in (read_certificate, read_private_key):
        with pytest.raises(OSError, match="larger than"):
            read(str(big))
        with pytest.raises(OSError, match="not a regular file"):
            read("/dev/zero")
        said: list[BaseException] = []

        def on_pipe(read=read, said=said) -> None:
            try:
                read(str(pipe))
            except BaseException as exc:  # what the read raised, checked below
                said.append(exc)

        t = threading.Thread(target=on_pipe, daemon=True)
        t.start()
        t.join(10)
        if t.is_alive():  # blocked opening the pipe: let it go before failing
            with open(pipe, "wb"):
                pass
        assert not t.is_alive() and said and isinstance(said[0], OSError), said


def test_a_certificate_path_to_a_device_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    """Opening some devices acts (/dev/watchdog, as root, arms the watchdog): a certificate or key path that is not
    a regular file is refused from its stat, never opened."""
    import os

    from devices.opcua.settings import read_certificate

    pipe = tmp_path / "cert.fifo"
    os.mkfifo(pipe)
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(
        os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k)
    )
    for path in (str(pipe), "/dev/null"):
        with pytest.raises(OSError, match="not a regular file"):
            read_certificate(path)
    assert opened == []
