"""`edge-agent validate` explains every broken config: each error names the file, the path inside it
and what was expected, all at once; the example configs in configs/ are valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_agent import cli as edge_agent_cli
from edge_agent.config import ConfigError, load_config, parse_config
from tests.support.certs import dated_certificate, locked_key
from tests.support.models import make_keypair, make_package

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cfg")
    key, pub = make_keypair(tmp / "keys")
    return {
        "pub": str(pub),
        "vision": str(make_package(tmp, kind="vision", key=key)),
        "signal": str(make_package(tmp, kind="signal", key=key)),
        "signal_temp": str(signal_package_with_scalars(tmp, key, ["temperature"])),
    }


def signal_package_with_scalars(tmp, key, scalars: list[str]):
    """A signal model that also takes scalar inputs (named as the manifest says)."""
    import numpy as np

    from tests.support.models import SIGNAL_FEATURES, build_package_for_tests, make_signal_onnx, signal_spec

    n = SIGNAL_FEATURES + len(scalars)
    model = make_signal_onnx(Path(tmp) / "build" / "signal-scalars" / "model.onnx", n_features=n)
    spec = signal_spec("machine-health-t")
    spec["inputs"][0]["shape"] = ["batch", n]
    spec["preprocessing"]["scalars"] = list(scalars)
    inputs = {"features": np.random.default_rng(0).normal(0, 1, (4, n)).astype(np.float32)}
    return build_package_for_tests(model, spec, Path(tmp) / "packages-scalars", key, inputs, False)


def with_scalar_model(env, d: dict, scalars, nodes=("Vibration", "Temperature")) -> dict:
    d["models"]["health"]["package"] = env["signal_temp"]
    d["sources"]["plc"]["nodes"] = [{"node_id": f"ns=2;s=M.{n}"} for n in nodes]
    d["pipelines"][1]["window"]["scalars"] = scalars
    return d


def good(env) -> dict:
    return {
        "agent": {"id": "gw1"},
        "trusted_keys": [env["pub"]],
        "sources": {
            "cam": {"type": "camera", "url": "usb:0"},
            "plc": {
                "type": "opcua",
                "endpoint": "opc.tcp://127.0.0.1:4840/",
                "nodes": [{"node_id": "ns=2;s=M.Vibration"}],
            },
            "broker": {"type": "mqtt"},
        },
        "models": {"vision": {"package": env["vision"]}, "health": {"package": env["signal"]}},
        "pipelines": [
            {"name": "inspect", "source": "cam", "model": "vision", "actions": ["pub", "reject"]},
            {
                "name": "health",
                "source": "plc",
                "model": "health",
                "window": {"waveform": "Vibration"},
                "baseline": {},  # commissioned: a maintenance model alone is a warning (below)
            },
        ],
        "actions": {
            "pub": {"type": "mqtt_publish", "source": "broker"},
            "reject": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": "ns=2;s=M.Reject",
                "when": {"verdict": "NG"},
            },
        },
    }


def errors_of(data, where="line3.yaml") -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_config(data, where)
    return ei.value.errors


def test_an_infinite_baseline_number_is_an_error_naming_the_field_and_the_file(env):
    """YAML's ``.inf`` (or 1e400) for a baseline's temperature_scale read every temperature as infinite and its
    rules (a stop cools 1 degree) as 0 degrees: taken without a word. Refused, as NaN already was."""
    d = good(env)
    d["pipelines"][1]["baseline"] = yaml.safe_load(
        "{temperature_scale: .inf, mv_per_g: .inf, failure_ratio: .inf}"
    )
    errs = errors_of(d)
    for field in ("temperature_scale", "mv_per_g", "failure_ratio"):
        assert any("line3.yaml" in e and f"baseline.{field}" in e for e in errs), errs


@pytest.mark.parametrize(
    "field, value",
    [
        ("life_after_alarm_s", "[.nan, 1]"),
        ("life_after_alarm_s", "[1, .nan]"),
        ("life_after_alarm_s", "[.inf, 1]"),
        ("life_after_alarm_s", "[1, .inf]"),
        ("speed_range_rpm", "[.nan, 6000]"),
        ("speed_range_rpm", "[300, .inf]"),
        ("speed_range_rpm", "[6000, 300]"),
        ("speed_range_rpm", "[-5, 10]"),
    ],
)
def test_a_baseline_range_not_finite_or_reversed_is_an_error_naming_the_field_and_the_file(env, field, value):
    """A NaN life_after_alarm_s gave a NaN remaining-life interval, a NaN speed_range_rpm low end never read a shaft
    as stopped, a reversed or negative range searched the speed where none is: each was taken without a word."""
    d = good(env)
    d["pipelines"][1]["baseline"] = yaml.safe_load(f"{{{field}: {value}}}")
    errs = errors_of(d)
    assert any("line3.yaml" in e and f"baseline.{field}" in e for e in errs), errs


def test_a_good_config_validates(env):
    cfg = parse_config(good(env))
    assert cfg.source_type("plc") == "opcua" and cfg.pipelines[1].window.waveform == "Vibration"
    assert cfg.warnings == []


def test_a_maintenance_model_without_a_baseline_is_a_warning_naming_the_pipeline(env):
    """Served alone, a trained maintenance model's NG comes from a threshold set on other machines (0-152
    alarms a day on healthy machines it never saw): validate says so before the gateway runs it, as the
    agent does at start."""
    d = good(env)
    del d["pipelines"][1]["baseline"]
    cfg = parse_config(d, "line3.yaml")
    assert [w.split(": ")[1] for w in cfg.warnings] == ["pipelines[1].baseline"]
    assert "add 'baseline:'" in cfg.warnings[0] and "machine-health" in cfg.warnings[0]


def test_a_blocking_queue_beside_a_rule_on_its_source_is_a_warning_naming_both(env):
    """A full ``block`` queue holds up its source's reading, and a rule on that source waits for the slow
    model with it (its trip to the PLC late): validate says so; alone on its source it is back-pressure as
    asked, and no warning."""
    d = good(env)
    d["pipelines"][1]["queue"] = {"policy": "block"}
    assert parse_config(d, "line3.yaml").warnings == []  # alone on the PLC source
    d["rules"] = [
        {"name": "overheat", "source": "plc", "tag": "Vibration", "above": 9.0, "actions": ["reject"]}
    ]
    cfg = parse_config(d, "line3.yaml")
    assert [w.split(": ")[1] for w in cfg.warnings] == ["pipelines[1].queue.policy"]
    assert "rule 'overheat'" in cfg.warnings[0] and "source 'plc'" in cfg.warnings[0]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda d: d["sources"]["cam"].update(fsp=5),
            "line3.yaml: sources.cam.fsp: unknown option 'fsp'; did you mean 'fps'?",
        ),
        (
            lambda d: d["pipelines"][0].update(model="vison"),
            "line3.yaml: pipelines[0].model: unknown model slot 'vison'; did you mean 'vision'?",
        ),
        (
            lambda d: d["pipelines"][1].update(source="plcc"),
            "line3.yaml: pipelines[1].source: unknown source 'plcc'; did you mean 'plc'?",
        ),
        (
            lambda d: d["pipelines"][0]["actions"].append("rejct"),
            "line3.yaml: pipelines[0].actions[2]: unknown action 'rejct'; did you mean 'reject'?",
        ),
        (
            lambda d: d["actions"]["reject"].update(source="broker"),
            "line3.yaml: actions.reject.source: 'broker' is a mqtt source; this needs a opcua source",
        ),
        (
            lambda d: d["actions"]["reject"].update(when={"verdikt": "NG"}),
            "line3.yaml: actions.reject.when: unknown field 'verdikt'; did you mean 'verdict'?",
        ),
        (
            lambda d: d["actions"]["reject"].update(when={"score": {"greater": 1}}),
            "line3.yaml: actions.reject.when: score: unknown operator 'greater'",
        ),
        (
            lambda d: d["actions"]["pub"].update(type="mqtt_pub"),
            "line3.yaml: actions.pub.type: unknown type 'mqtt_pub'; did you mean 'mqtt_publish'?",
        ),
        (
            lambda d: d["sources"]["broker"].update(type="mqt"),
            "line3.yaml: sources.broker.type: unknown source type 'mqt'; did you mean 'mqtt'?",
        ),
        (
            lambda d: d["sources"]["plc"].update(endpoint="http://x"),
            "line3.yaml: sources.plc.endpoint: String should match",
        ),
        # each request carries it as a UInt32 of milliseconds: past 49 days none could be sent
        (
            lambda d: d["sources"]["plc"].update(connect_timeout_s=86_400.0 * 50),
            "line3.yaml: sources.plc.connect_timeout_s: Input should be less than or equal to 3600",
        ),
        # .inf (or a queue past a UInt32) was taken, and the source never connected, with no field named
        (
            lambda d: d["sources"]["plc"].update(connect_timeout_s=float("inf")),
            "line3.yaml: sources.plc.connect_timeout_s: Input should be a finite number",
        ),
        (
            lambda d: d["sources"]["plc"].update(keepalive_check_s=float("inf")),
            "line3.yaml: sources.plc.keepalive_check_s: Input should be a finite number",
        ),
        (
            lambda d: d["sources"]["plc"].update(session_timeout_s=float("inf")),
            "line3.yaml: sources.plc.session_timeout_s: Input should be a finite number",
        ),
        (
            lambda d: d["sources"]["plc"]["nodes"][0].update(queue_size=2**32),
            "line3.yaml: sources.plc.nodes[0].queue_size: Input should be less than or equal to 4294967295",
        ),
        (
            lambda d: d["models"]["vision"].update(engine="tensorrt"),
            "line3.yaml: models.vision.engine: Input should be",
        ),
        (
            lambda d: d["models"]["vision"].update(package="missing.edgepkg"),
            "line3.yaml: models.vision.package: file missing.edgepkg does not exist",
        ),
        (
            lambda d: d["pipelines"][1].pop("window"),
            "line3.yaml: pipelines[1].window: a signal pipeline needs a window",
        ),
        (
            lambda d: d["pipelines"][0].update(kind="signal"),
            "line3.yaml: pipelines[0].kind: a signal pipeline needs an opcua or mqtt source; 'cam' is a camera",
        ),
        (
            lambda d: d["pipelines"][0].update(queue={"size": 0}),
            "line3.yaml: pipelines[0].queue.size: Input should be",
        ),
        (
            lambda d: d["pipelines"][0].update(queue={"policy": "drop_random"}),
            "line3.yaml: pipelines[0].queue.policy",
        ),
        (
            lambda d: d.update(pipelnes=[]),
            "line3.yaml: pipelnes: unknown option 'pipelnes'; did you mean 'pipelines'?",
        ),
        (lambda d: d.pop("agent"), "line3.yaml: agent: required section is missing"),
        (lambda d: d.update(trusted_keys=[]), "line3.yaml: trusted_keys: at least one public key is needed"),
        (
            lambda d: d["pipelines"].append(dict(d["pipelines"][0])),
            "line3.yaml: pipelines[2].name: pipeline name 'inspect' is used twice",
        ),
        # a condition that can never match is refused, with the right spelling
        (
            lambda d: d["actions"]["reject"].update(when={"verdict": "ng"}),
            "line3.yaml: actions.reject.when: verdict: unknown verdict 'ng'; did you mean 'NG'? (verdicts are OK, NG, UNSURE;",
        ),
        (
            lambda d: d["actions"]["reject"].update(when={"verdict": {"in": ["NG", "Unsure"]}}),
            "line3.yaml: actions.reject.when: verdict: unknown verdict 'Unsure'; did you mean 'UNSURE'?",
        ),
        (
            lambda d: d["actions"]["reject"].update(when={"label": "Scratch"}),
            "line3.yaml: actions.reject.when: label: unknown label 'Scratch'; did you mean 'scratch'? (the model's labels are",
        ),
        (
            lambda d: d["actions"]["reject"].update(when={"any": [{"label": {"in": ["scrach"]}}]}),
            "line3.yaml: actions.reject.when: label: unknown label 'scrach'; did you mean 'scratch'?",
        ),
        # each action's options are checked against its own schema (not the first action type's)
        (
            lambda d: d["actions"].update(alarm={"type": "alarm", "raise_afer": 3}),
            "line3.yaml: actions.alarm.raise_afer: unknown option 'raise_afer'; did you mean 'raise_after'?",
        ),
        (
            lambda d: d["actions"]["reject"].update(pulse_msec=200),
            "line3.yaml: actions.reject.pulse_msec: unknown option 'pulse_msec'; did you mean 'pulse_ms'?",
        ),
        # a quoted boolean or number would reach a Boolean coil as TRUE under any loose conversion
        (
            lambda d: d["actions"]["reject"].update(value="false"),
            "line3.yaml: actions.reject.value: 'false' is quoted text, not a boolean: a Boolean or numeric node must never "
            "get a string; write value: false without quotes",
        ),
        (
            lambda d: d["actions"]["reject"].update(value="yes"),
            "line3.yaml: actions.reject.value: 'yes' is quoted text, not a boolean: a Boolean or numeric node must never "
            "get a string; write value: true without quotes",
        ),
        (
            lambda d: d["actions"]["reject"].update(value=1, reset_value="0"),
            "line3.yaml: actions.reject.reset_value: '0' is quoted text, not a number",
        ),
        (
            lambda d: d["actions"]["reject"].update(value=None),
            "line3.yaml: actions.reject.value: value must be",
        ),
        (
            lambda d: d["actions"]["reject"].update(mode="edge"),
            "line3.yaml: actions.reject.mode: Input should be",
        ),
        (
            lambda d: d["actions"]["reject"].update(mode="pulse", value=7),
            "line3.yaml: actions.reject: mode pulse with a non-boolean value (7) needs reset_value",
        ),
    ],
)
def test_each_broken_config_gets_its_own_clear_error(env, mutate, expected):
    data = good(env)
    mutate(data)
    errs = errors_of(data)
    assert any(e.startswith(expected) for e in errs), errs


def test_a_model_slot_name_the_fleet_cannot_roll_out_to_is_refused_at_load(env):
    """The fleet refuses a rollout to a model slot over 128 characters (what a deployment report keeps of its
    name), but validation accepted such a slot: an agent that could never be updated through the fleet."""
    data = good(env)
    data["models"]["v" * 129] = data["models"].pop("vision")
    data["pipelines"][0]["model"] = "v" * 129
    errs = errors_of(data)
    assert errs == [
        f"line3.yaml: models.{'v' * 64}...: a model slot's name of 129 characters; at most 128 (the fleet refuses "
        "a rollout to a longer one and keeps the first 128 of it in a deployment report)"
    ], errs
    data["models"]["v" * 128] = data["models"].pop("v" * 129)
    data["pipelines"][0]["model"] = "v" * 128
    assert parse_config(data, "line3.yaml").models["v" * 128]


def test_all_errors_are_reported_at_once(env):
    data = good(env)
    data["sources"]["cam"]["fsp"] = 5
    data["pipelines"][0]["model"] = "vison"
    data["actions"]["reject"]["when"] = {"verdikt": "NG"}
    errs = errors_of(data)
    assert len(errs) == 3, errs


def test_environment_substitution_and_missing_variable(env, monkeypatch):
    data = good(env)
    data["sources"]["broker"]["port"] = "${BROKER_PORT:-1883}"
    data["sources"]["broker"]["password"] = "${BROKER_SECRET}"
    data["sources"]["broker"]["username"] = "edge"
    errs = errors_of(data)
    assert errs == [
        "line3.yaml: sources.broker.password: environment variable BROKER_SECRET is not set "
        "(write ${BROKER_SECRET:-default} to give a default)"
    ]
    monkeypatch.setenv("BROKER_SECRET", "s3cret")
    monkeypatch.setenv("BROKER_PORT", "2883")
    cfg = parse_config(data)
    assert cfg.sources["broker"].port == 2883
    assert cfg.sources["broker"].password.get_secret_value() == "s3cret"


def test_a_variable_set_empty_takes_the_default_the_config_gives_as_a_shell_does(env, monkeypatch):
    data = good(env)
    data["sources"]["broker"]["host"] = "${BROKER_HOST:-127.0.0.1}"
    data["sources"]["broker"]["port"] = "${BROKER_PORT:-1883}"
    data["sources"]["broker"]["username"] = "edge-${BROKER_USER_SUFFIX}"
    # an agent.env whose lines were left blank (BROKER_HOST=): set, but empty
    for name in ("BROKER_HOST", "BROKER_PORT", "BROKER_USER_SUFFIX"):
        monkeypatch.setenv(name, "")
    cfg = parse_config(data)  # formerly: sources.broker.port: ... (found ''), and an empty host validated
    assert cfg.sources["broker"].host == "127.0.0.1" and cfg.sources["broker"].port == 1883
    assert cfg.sources["broker"].username == "edge-"  # ${VAR} without a default: empty, as a shell gives it
    monkeypatch.setenv("BROKER_HOST", "10.0.0.7")
    assert parse_config(data).sources["broker"].host == "10.0.0.7"


def test_a_variable_set_empty_on_purpose_keeps_its_empty_value_with_a_default_for_unset_only(
    env, monkeypatch
):
    data = good(env)
    data["sources"]["broker"]["username"] = "edge${BROKER_USER_SUFFIX-1}"
    monkeypatch.delenv("BROKER_USER_SUFFIX", raising=False)
    assert parse_config(data).sources["broker"].username == "edge1"  # unset: the default
    # BROKER_USER_SUFFIX= meaning no suffix (as ${VAR-default} reads in a shell): formerly the literal text
    # 'edge${BROKER_USER_SUFFIX-1}' was taken without a word, and ${VAR:-1} now gives the default for it
    monkeypatch.setenv("BROKER_USER_SUFFIX", "")
    assert parse_config(data).sources["broker"].username == "edge"


def test_an_environment_variable_holding_bytes_that_are_not_utf8_is_refused_naming_it(
    env, monkeypatch, tmp_path
):
    # an environment file saved in Latin-1 (AGENT_DATA=/srv/Pr\xfcfstand): Python hands the byte over as a lone
    # surrogate. Before, agent.data_dir validated and the agent then failed to load every model from it (ONNX
    # Runtime: "incompatible constructor arguments"); agent.site was refused as "unable to parse raw data as a
    # unicode string", not saying which variable or why
    import os

    monkeypatch.setenv("AGENT_DATA", os.fsdecode(bytes(tmp_path) + b"/Pr\xfcfstand"))
    monkeypatch.setenv("SITE", os.fsdecode(b"S\xfcdwerk"))
    data = good(env)
    data["agent"].update(data_dir="${AGENT_DATA}", site="${SITE}")
    # the value is not quoted (it may be a password: a fleet config's refusal is told to the fleet): the byte and
    # its place say where to look
    assert errors_of(data) == [
        f"line3.yaml: agent.{field}: environment variable {var} holds a byte that is not UTF-8 (0xfc, its character "
        f"{at} of {size}); set it in UTF-8 (an environment file saved in another code page?)"
        for field, var, at, size in (
            ("data_dir", "AGENT_DATA", len(str(tmp_path)) + 4, len(str(tmp_path)) + 10),
            ("site", "SITE", 2, 7),
        )
    ]


def _fleet_refusal(doc: str, monkeypatch, **env) -> str:
    """The errors of the agent's check of a fleet config (``hide_env``: what goes to the fleet), joined."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    data = {"agent": {"id": "gw1", "data_dir": "/tmp/gw1"}, "http": {"enabled": False}, **yaml.safe_load(doc)}
    with pytest.raises(ConfigError) as ei:
        parse_config(data, "fleet config c1 (abc)", "/tmp", hide_env=True)
    return "; ".join(ei.value.errors)


def test_a_fleet_configs_refusal_shows_no_form_of_a_value_holding_a_byte_that_is_not_utf8(monkeypatch):
    # a gateway password from an environment file saved in Latin-1: the substitution's error quoted it whole as
    # 'M\\xfcller-Werk3-...', a form hide_env_values did not match, and it went to the fleet
    import os

    from edge_agent.config import hide_env_values

    value = os.fsdecode(b"M\xfcller-Werk3-Passwort-2024")
    told = _fleet_refusal(
        "sources:\n  broker: {type: mqtt, host: 127.0.0.1, port: 1883, username: op, password: '${GW_PASS}',"
        " subscriptions: [{topic: 'p/#'}]}\n",
        monkeypatch,
        GW_PASS=value,
    )
    assert "Passwort" not in told and "ller" not in told, told
    assert (
        "sources.broker.password: environment variable GW_PASS holds a byte that is not UTF-8 (0xfc, its "
        in told
    )
    assert "${GW_PASS}" in told
    # every form a value can be printed in is hidden: as written, repr, undecoded_bytes, printable, JSON
    for shown in (
        value,
        repr(value),
        "M\\xfcller-Werk3-Passwort-2024",
        "M\\udcfcller-Werk3-Passwort-2024",
        repr("M\\xfcller-Werk3-Passwort-2024"),
        "tab\\there-secret",
    ):
        text = f"source: cannot log in as {shown} (refused)"
        hidden = hide_env_values(text, {"GW_PASS": value, "GW_T": "tab\there-secret"})
        assert "Passwort" not in hidden and "there-secret" not in hidden, hidden


def test_a_fleet_configs_refusal_hides_a_value_cut_short_in_a_quote(monkeypatch):
    # a topic quoted cut to its first 200 characters (shown_topic) held the start of the secret before the cut:
    # hidden after the cut, the whole value was no longer there to find
    secret = "tok-9f8e7d6c5b4a-SECRET-0123456789"
    told = _fleet_refusal(
        "sources:\n  broker: {type: mqtt, host: 127.0.0.1, port: 1883, persistent_session: true, client_id: gw1c,"
        f" subscriptions: [{{topic: 'spBv1.0/{'x' * 180}${{GW_TOK}}/#', codec: sparkplug_b}}]}}\n",
        monkeypatch,
        GW_TOK=secret,
    )
    assert "subscriptions[0] (topic 'spBv1.0/xxx" in told and "<$GW_TOK>'... (224 characters)" in told, told
    assert "tok-9f8e" not in told, told


def test_a_fleet_configs_refusal_hides_the_start_of_a_value_whose_escapes_make_its_cut_quote_longer(
    monkeypatch,
):
    # a credential kept in an env file as escaped JSON: a topic quoted cut to 200 characters of the value (repr'd,
    # each \\" four characters) took more than 200 characters of the message, and a look-back bounded at 200 found
    # no start of the value before the cut: the client secret went to the fleet (/work/notes53/review_hide13/)
    secret = (
        '{\\"client_id\\":\\"gw-line3-7781\\",\\"client_secret\\":\\"Vq3-9xLmZ2kP8wRt5nB1cJ7hG4sD0aEfY6uQ\\",'
        '\\"tenant\\":\\"acme-plant-42\\",\\"scope\\":\\"fleet.read fleet.write\\",\\"refresh_token\\":'
        '\\"rt-5b1c7d9e3f2a4b6c8d0e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c5\\"}'
    )
    told = _fleet_refusal(
        "sources:\n  broker: {type: mqtt, host: 127.0.0.1, port: 1883, persistent_session: true, client_id: gw1c,"
        " subscriptions: [{topic: 'spBv1.0/${GW_KEY}/#', codec: sparkplug_b}]}\n",
        monkeypatch,
        GW_KEY=secret,
    )
    assert "(topic 'spBv1.0/<$GW_KEY>'... (" in told, told
    for part in ("client_secret", "Vq3-9xLmZ2kP8wRt5nB1", "acme-plant", "gw-line3"):
        assert part not in told, (part, told)


def test_a_fleet_configs_refusal_hides_a_cut_value_that_repr_quotes_with_double_quotes(monkeypatch):
    # a libpq connection string (a value holding ' and no "): repr quotes it with ", and the look-back began
    # before that closing " (only ' was skipped), found no start of the value, and sent its host, user and
    # password to the fleet (/work/notes53/review_r18/h2_e2e_dsn.py)
    dsn = (
        "host=fleetdb.acme.example port=5432 dbname=line3 user=gw_line3 password='Vq3-9xLmZ2kP8wRt5nB1cJ7hG4sD0aEfY6uQ'"
        " sslmode=verify-full sslrootcert=/etc/gw/ca.pem connect_timeout=10 application_name=line3-gateway-7781"
    )
    told = _fleet_refusal(
        "sources:\n  broker: {type: mqtt, host: 127.0.0.1, port: 1883, persistent_session: true, client_id: gw1c,"
        " subscriptions: [{topic: 'spBv1.0/${GW_DSN}/#', codec: sparkplug_b}]}\n",
        monkeypatch,
        GW_DSN=dsn,
    )
    assert '(topic "spBv1.0/<$GW_DSN>"... (' in told, told
    for part in ("Vq3-9xLmZ2kP8wRt5nB1", "fleetdb", "gw_line3"):
        assert part not in told, (part, told)


def test_a_fleet_configs_refusal_shows_neither_end_of_a_value_cut_in_its_middle(monkeypatch):
    # a device key from the environment that is not hex: the error quoted it cut in its middle (reprlib, 12 first
    # and 13 last characters of 33) and hide_env_values knew only marks after a value's start, never '...' with
    # a value's end after it; pydantic's input_value cuts in the middle too
    import reprlib

    from pydantic import BaseModel, ValidationError

    from edge_agent.config import hide_env_values
    from protocols.topics import shown_topic

    key = "K7f3Q9zLmP2xWv8RtY4nB6cJ1hG5sD0aE"
    told = _fleet_refusal(
        "sources:\n  machine: {type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840'}\nactions:\n  licence:\n"
        "    type: opcua_write\n    source: machine\n    node_id: ns=2;s=Licence\n    value: {hex: '${GW_KEY}'}\n",
        monkeypatch,
        GW_KEY=key,
    )
    assert (
        "actions.licence.value: {hex: ...} (33 characters) is not hex text (its character 1 is not a hex "
        in told
    )
    assert "K7f3" not in told and "s0aE" not in told and "D0aE" not in told, told

    class Port(BaseModel):
        port: int

    with pytest.raises(ValidationError) as ei:
        Port(port=key * 2)
    pin = "482913"
    for text, values in (
        (f"cannot write {reprlib.repr(key)}", {"GW_KEY": key}),
        (str(ei.value), {"GW_KEY": key * 2}),
        (
            f"login refused for password {'Müller-Werk3-Passwort-2024'.encode()!r}",
            {"GW_KEY": "Müller-Werk3-Passwort-2024"},
        ),
        # a 6-digit PIN cut to its first 4 by a topic's cut
        (f"topic {shown_topic('plant/line3/' + 'x' * 184 + pin + '/cmd')} is refused", {"GW_PIN": pin}),
    ):
        hidden = hide_env_values(text, values)
        for value in values.values():
            assert value[:4] not in hidden and value[-4:] not in hidden, hidden
        assert "<$" in hidden, hidden


def test_a_fleet_configs_refusal_hides_the_longest_value_start_before_a_cut_of_any_variable():
    # the look-back before a cut's mark stopped at the first value (the longest form first) with any start of 4+
    # characters there: GW_A's 'tok-' was taken and GW_B's first 20 characters were sent
    from edge_agent.config import hide_env_values
    from protocols.topics import shown_topic

    a, b = "tok-" + "Q" * 60, "hunter2-secret-site-tok-ZZZZZZ"
    text = f"fleet config c1 (abc): sources.b.subscriptions[0].topic: topic {shown_topic('plant/' + 'x' * 170 + b)}"
    hidden = hide_env_values(text, {"GW_A": a, "GW_B": b}, "fleet config c1 (abc)")
    assert "hunter2" not in hidden and "xxx<$GW_B>'... (206 characters)" in hidden, hidden


def test_a_fleet_configs_refusal_hides_only_the_errors_told_to_the_fleet(monkeypatch):
    # every error was hidden (each with every form's pattern and the look around each cut: ~1 s a refusal of 200
    # variables and a few certificates, on the agent's loop) though the fleet is told the first 5
    from edge_agent.config import FLEET_ERRORS

    key = "K7f3Q9zLmP2xWv8RtY4nB6cJ1hG5sD0aE"
    doc = "".join(
        f"  s{i}: {{type: mqtt, host: 127.0.0.1, port: 1883, client_id: '${{GW_KEY}}', bad{i}: 1}}\n"
        for i in range(9)
    )
    told = _fleet_refusal("sources:\n" + doc, monkeypatch, GW_KEY=key)
    assert told.count("fleet config c1 (abc): sources.s") == FLEET_ERRORS == 5, told
    assert "K7f3" not in told, told


def test_a_fleet_configs_refusal_leaves_field_paths_and_words_holding_a_short_value_as_written(monkeypatch):
    # GW_SITE=line, GW_QOS=1: every "line" and "1" was rewritten, the field path too ("pipe<$GW_SITE>s[<$GW_QOS>]")
    told = _fleet_refusal(
        "sources:\n  broker: {type: mqtt, host: 127.0.0.1, port: 1883, qos: '${GW_QOS:-0}',"
        " subscriptions: [{topic: '${GW_SITE:-plant}/#'}]}\n"
        "pipelines:\n  - {name: a, source: broker, model: m}\n  - {name: b, source: '${GW_SITE}', model: m}\n",
        monkeypatch,
        GW_SITE="line",
        GW_QOS="1",
    )
    assert "pipelines[1].source: unknown source '<$GW_SITE>'" in told, told  # the value quoted: hidden
    assert "pipelines[0].model: " in told and "<$GW_QOS>" not in told, told
    assert "sources.broker.qos: unknown option 'qos'" in told and "${GW_QOS}" in told, told


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("agent:\n  id: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_config(p)


def test_a_tab_indenting_a_line_is_named_as_a_tab_with_its_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("agent:\n  id: gw1\nsources:\n\tcam:\n\t\ttype: camera\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    # formerly "found character that cannot start any token", which the engineer's editor shows as spaces
    assert ei.value.errors == [
        f"{p}: not valid YAML at line 4, column 1: found character that cannot start any token: a tab; YAML "
        "indents with spaces only, replace the tabs with spaces"
    ]


def test_a_yaml_alias_bomb_is_refused_by_name_before_validation(tmp_path):
    """Nine levels of nine aliases: ~400 bytes standing for 387 million list items. Before the limit,
    validating a smaller such file (43 million) took 37 s of CPU; now it is refused from the parser's
    events, and ordinary anchors and merge keys still load."""
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\nagent: {id: gw1, site: s, line: l}\n")
    with pytest.raises(
        ConfigError, match=r"bomb.yaml: YAML more than \d+ nodes once aliases are expanded; refused"
    ):
        load_config(p)
    ok = tmp_path / "anchors.yaml"
    ok.write_text(
        "x-broker: &broker {type: mqtt, host: 127.0.0.1}\n"
        "agent: {id: gw1, site: s, line: l}\n"
        "sources:\n  a: {<<: *broker, port: 1883}\n  b: {<<: *broker, port: 1884}\n"
    )
    from edge_agent.config import read_yaml

    doc = read_yaml(ok.read_text(), str(ok))
    assert doc["sources"]["b"] == {"type": "mqtt", "host": "127.0.0.1", "port": 1884}


def example_env(env, monkeypatch):
    from tests.support.fleet import make_pki

    pki = Path(env["vision"]).parent.parent / "pki"
    if not pki.exists():
        make_pki(pki, agents=("gw-line1",), admins=())
    monkeypatch.setenv("PKI", str(pki))
    monkeypatch.setenv("VISION_PACKAGE", env["vision"])
    monkeypatch.setenv("MAINTENANCE_PACKAGE", env["signal"])
    monkeypatch.setenv("TRUSTED_KEY", env["pub"])


# the example configs, and the demo's (it ships in the simulators package so that an installed edge-sim finds it)
EXAMPLE_CONFIGS = [*sorted((ROOT / "configs").glob("*.yaml")), ROOT / "simulators" / "demo-agent.yaml"]


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_example_configs_are_valid(env, monkeypatch, path):
    example_env(env, monkeypatch)
    cfg = load_config(path)
    # their results and alarms are not held back by a flood on what the same source reads (docs/mqtt.md)
    assert not [w for w in cfg.warnings if "QoS 1 through mqtt source" in w], cfg.warnings


def validate(path: Path, capsys) -> tuple[int, str, str]:
    """``edge-agent validate PATH`` through the CLI's entry point in this process: (exit code, stdout, stderr).
    The real process (``python -m edge_agent.cli``, its exit code and stderr) is run by
    test_validate_cli_prints_every_error_and_exits_1."""
    capsys.readouterr()
    code = edge_agent_cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_cli_prints_every_error_and_exits_1(env, tmp_path, capsys):
    data = good(env)
    data["sources"]["cam"]["fsp"] = 5
    data["pipelines"][0]["model"] = "vison"
    p = tmp_path / "line3.yaml"
    p.write_text(yaml.safe_dump(data))
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "validate", str(p)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 1
    assert f"{p}: sources.cam.fsp: unknown option 'fsp'; did you mean 'fps'?" in r.stderr
    assert f"{p}: pipelines[0].model: unknown model slot 'vison'; did you mean 'vision'?" in r.stderr
    assert "2 error(s)" in r.stderr
    p.write_text(yaml.safe_dump(good(env)))
    code, out, _ = validate(p, capsys)
    assert code == 0 and out.startswith("ok:")


def test_validating_imports_no_engine_or_protocol_library(env, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(good(env)))
    code = (
        "import sys; from edge_agent.config import load_config; load_config(sys.argv[1]); "
        "heavy = [m for m in ('onnxruntime', 'openvino', 'cv2', 'asyncua', 'paho', 'torch') if m in sys.modules]; "
        "print(heavy)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(p)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_a_scalar_the_model_needs_under_another_name_is_refused_with_the_mapping_to_write(env):
    errs = errors_of(with_scalar_model(env, good(env), ["Temperature"]))
    assert (
        "line3.yaml: pipelines[1].window.scalars: model machine-health-t needs scalar input 'temperature', "
        "which the window does not carry (it carries ['Temperature']); every window would be refused; "
        "map the tag to it: scalars: {temperature: Temperature}"
    ) in errs, errs
    cfg = parse_config(with_scalar_model(env, good(env), {"temperature": "Temperature"}))
    assert cfg.pipelines[1].window.scalar_inputs == {"Temperature": "temperature"}


def test_a_configured_package_of_the_other_kind_is_refused_naming_the_pipeline_and_the_slot(env):
    """A signal model in a camera pipeline's slot (an image model in a windowed one's): validate passed both; the
    start served the first, every frame UNSURE bad_input, and ended on the second in the pipeline's words, naming
    neither the file nor the field."""
    d = good(env)
    d["models"] = {"vision": {"package": env["signal"]}, "health": {"package": env["vision"]}}
    errs = errors_of(d)
    for said in (
        "line3.yaml: pipelines[0].model: pipeline inspect: model machine-health 1.0.0 takes signal windows; this "
        "pipeline's items are camera frames: serve an image model (models.vision.package)",
        "line3.yaml: pipelines[1].model: pipeline health: model part-inspection 1.0.0 takes camera frames; this "
        "pipeline's items are signal windows: serve a signal model (models.health.package)",
    ):
        assert said in errs, errs


@pytest.mark.parametrize("model", ["vision", "signal"])
def test_a_window_on_a_camera_pipeline_is_a_warning_naming_the_field_whatever_its_model(env, model):
    """Every frame went to a windower, which takes readings only: the pipeline judged nothing and counted nothing,
    with a signal model; with an image model, the refusal read "this pipeline's items are signal windows: serve a
    signal model", advice leading to the first. A warning, not an error: such a config ran, and an error stopped
    the gateway at its upgrade (its pipeline drops its frames, counted, the reason on its status)."""
    d = good(env)
    d["models"]["vision"]["package"] = env[model]
    d["pipelines"][0]["window"] = {"waveform": "Vibration"}
    cfg = parse_config(d, "line3.yaml")
    said = (
        "line3.yaml: pipelines[0].window: a frame pipeline judges each camera frame alone: remove its window"
    )
    assert said in cfg.warnings, cfg.warnings
    assert not [w for w in cfg.warnings if "pipelines[0].model" in w], (
        cfg.warnings
    )  # no kind advice beside it


def test_a_tag_the_source_does_not_produce_is_refused_with_path_and_fix(env):
    d = with_scalar_model(env, good(env), {"temperature": "Temp"})
    d["sources"]["plc"]["nodes"] = [
        {"node_id": "ns=2;s=M.Vibration", "tag": "Vibration"},
        {"node_id": "ns=2;i=7", "tag": "Temperature"},
    ]  # tags certain: refused
    errs = errors_of(d)
    assert (
        "line3.yaml: pipelines[1].window.scalars.temperature: source 'plc' produces no tag 'Temp'; it gives "
        "['Temperature', 'Vibration']" in errs
    ), errs
    # browse names guessed from string NodeIds may not be the server's: a warning that says how to check
    cfg = parse_config(with_scalar_model(env, good(env), {"temperature": "Temp"}), "line3.yaml")
    assert cfg.warnings == [
        "line3.yaml: pipelines[1].window.scalars.temperature: source 'plc' produces no tag "
        "'Temp'; it gives ['Temperature', 'Vibration'] (OPC UA: a node's tag is its `tag:` or, "
        "by default, its browse name, here guessed from the NodeId; set `tag:` on the node to "
        "name it, or check with `edge-agent validate --online`)"
    ]
    d = good(env)
    d["pipelines"][1]["window"]["waveform"] = (
        "vibration"  # only the case differs from the browse name: refused
    )
    errs = errors_of(d)
    assert any(
        e.startswith(
            "line3.yaml: pipelines[1].window.waveform: source 'plc' produces no tag 'vibration'; "
            "did you mean 'Vibration'?"
        )
        for e in errs
    ), errs
    d["sources"]["plc"]["nodes"][0]["tag"] = "vibration"  # `tag:` settles it
    parse_config(d)
    # a structure node (a PLC's UDT) gives "{tag}/{member}": only the server knows its members
    d["sources"]["plc"]["nodes"][0]["tag"] = "Drive"
    d["pipelines"][1]["window"]["waveform"] = "Drive/Axis/Vibration"
    parse_config(d)
    d["pipelines"][1]["window"]["waveform"] = "Drives/Vibration"  # not a member of a node the source has
    assert any("produces no tag 'Drives/Vibration'" in e for e in errors_of(d))
    from edge_agent.config import _guess_tag

    assert [
        _guess_tag(n)
        for n in (
            'ns=3;s="DB_Line"."Temp"',
            "ns=6;s=::Program:speed",
            "ns=2;s=Line/Press/T1",
            "ns=4;s=|var|PLC.Application.GVL.bStart",
            "ns=2;i=1001",
        )
    ] == ["Temp", "speed", "T1", "bStart", None]
    d = good(env)  # an explicit tag is what counts
    d["sources"]["plc"]["nodes"] = [{"node_id": "ns=2;i=1001", "tag": "vibration"}]
    d["pipelines"][1]["window"]["waveform"] = "vibration"
    parse_config(d)
    d["sources"]["plc"]["nodes"].append(
        {"node_id": "ns=2;i=1002"}
    )  # a browse name not known offline: not refused
    d["pipelines"][1]["window"]["waveform"] = "anything"
    parse_config(d)


def test_a_sparkplug_tag_map_key_with_the_group_is_a_warning_with_the_fix(env):
    d = good(env)
    d["sources"]["broker"].update(
        subscriptions=[{"topic": "spBv1.0/plant/#", "codec": "sparkplug_b"}],
        sparkplug={"tag_map": {"plant/edge0/motor1/current_a": "current", "edge0/motor1/speed": "speed"}},
    )
    cfg = parse_config(d, "line3.yaml")
    assert cfg.warnings == [
        "line3.yaml: sources.broker.sparkplug.tag_map.plant/edge0/motor1/current_a: starts with "
        "the Sparkplug group 'plant', so it would match no metric; keys are "
        "'{edge_node}/{device}/{metric}': write 'edge0/motor1/current_a'"
    ]


def test_a_json_values_name_ending_in_another_under_a_wildcard_is_a_warning_naming_the_field(env):
    """Under a filter ending in '#' with tag_prefix_topic, the values names 'speed' and 'motor/speed' let the
    device on v/x name v/x/motor/speed, the tag 'speed' of the device on v/x/motor (measured against Mosquitto:
    999 from v/x read as v/x/motor/speed). A config's names are kept, '/' and all, so validate says it. Under
    tele/+/SENSOR no topic has one level more than another, so no other device's tag is named so: no warning."""
    d = good(env)
    values = {"speed": "speed", "motor.speed": "motor/speed", "temp": "a/temp"}
    d["sources"]["broker"].update(
        subscriptions=[
            {"topic": "v/#", "json_mapping": {"values": values}},
            {"topic": "one/device", "json_mapping": {"values": values}},  # no wildcard: no other device
            {"topic": "w/+", "json_mapping": {"values": values, "tag_prefix_topic": False}},
            {"topic": "tele/+/SENSOR", "json_mapping": {"values": values}},  # no topic T and T/motor under it
        ]
    )
    cfg = parse_config(d, "line3.yaml")
    assert cfg.warnings == [
        "line3.yaml: sources.broker.subscriptions[0].json_mapping.values.motor.speed: tag name 'motor/speed' "
        "ends with '/' and the tag name 'speed': named after its topic under the wildcard filter 'v/#' "
        "(tag_prefix_topic), on topic T it is T/motor/speed, the tag 'speed' of a device on topic T/motor, which "
        "a device publishing on T alone so sets; name it without '/' (e.g. 'motor_speed')"
    ]


def test_validate_cli_prints_warnings_and_still_exits_0(env, tmp_path, capsys):
    d = good(env)
    d["sources"]["broker"].update(
        subscriptions=[{"topic": "spBv1.0/plant/#", "codec": "sparkplug_b"}],
        sparkplug={"tag_map": {"plant/edge0/m/t": "t"}},
    )
    p = tmp_path / "line3.yaml"
    p.write_text(yaml.safe_dump(d))
    code, out, err = validate(p, capsys)
    assert code == 0 and out.startswith("ok:")
    assert err.startswith(f"warning: {p}: sources.broker.sparkplug.tag_map.plant/edge0/m/t: starts with")


def own_certificate(folder: Path, stem: str, days: tuple[int, int]) -> tuple[str, str]:
    """A self-signed certificate valid from ``days[0]`` to ``days[1]`` days from now and its key (no
    passphrase), written as ``{stem}.pem`` and ``{stem}.key`` in ``folder``: their paths."""
    cert, key = dated_certificate(folder, stem, days, pem=True)
    return str(cert), str(key)


def test_a_weak_link_to_the_plc_is_a_warning_naming_the_option(env, tmp_path):
    """A password on a channel without security, and a secured channel whose server certificate is not
    pinned (any server answering at the endpoint would be trusted with readings and writes)."""
    d = good(env)
    d["sources"]["plc"].update(username="line", password="secret")
    cfg = parse_config(d, "line3.yaml")
    assert [w.split(": ")[1] for w in cfg.warnings] == ["sources.plc.password"]
    assert "may cross the network in clear text" in cfg.warnings[0]
    d = good(env)
    own_certificate(tmp_path, "agent", (-1, 400))
    d["sources"]["plc"].update(
        security_mode="SignAndEncrypt",
        certificate_file=str(tmp_path / "agent.pem"),
        private_key_file=str(tmp_path / "agent.key"),
        username="line",
        password="secret",
    )
    cfg = parse_config(d, "line3.yaml")
    assert [w.split(": ")[1] for w in cfg.warnings] == ["sources.plc.server_certificate_file"]
    assert "any server at opc.tcp://127.0.0.1:4840/ is trusted" in cfg.warnings[0]
    d["sources"]["plc"]["server_certificate_file"] = str(tmp_path / "agent.pem")
    assert parse_config(d, "line3.yaml").warnings == []


def test_an_opcua_endpoint_the_agent_cannot_connect_to_as_written_is_a_warning_naming_the_field(env):
    """A host that does not parse (a bracket not closed, a name in brackets), a port out of range, no port (asyncua
    connects to port 0): said at validate and at load, naming the field and the file; a warning, not an error (such
    a gateway would no longer start at its upgrade). The endpoint is not shown (it may be a gateway variable's)."""
    for endpoint, said in (
        ("opc.tcp://[::1:4840/plc/", "does not parse"),
        ("opc.tcp://[plc1]:4840/", "does not parse"),
        ("opc.tcp://127.0.0.1:70000/", "does not parse"),
        ("opc.tcp://127.0.0.1/plc/", "names no port"),
        ("opc.tcp://:4840/", "names no host"),
    ):
        d = good(env)
        d["sources"]["plc"]["endpoint"] = endpoint
        (w,) = parse_config(d, "line3.yaml").warnings
        assert w.startswith(f"line3.yaml: sources.plc.endpoint: {said}") and endpoint not in w, w
    for endpoint in ("opc.tcp://[::1]:4840/", "opc.tcp://PLC-1.local:4840/line3"):
        d = good(env)
        d["sources"]["plc"]["endpoint"] = endpoint
        assert parse_config(d, "line3.yaml").warnings == []


def test_an_opcua_endpoint_with_no_host_is_the_gateways_own_server_to_the_warning_and_the_watchdog_hold(env):
    """``opc.tcp://:4840/`` connects (asyncio takes the loopback): a heartbeat written so beat on the gateway's own
    server. The warning said it never connects, and the hold took it for a PLC of its own: a reject gate on NG
    through ``127.0.0.1``, never written for a part no model judged, let that heartbeat run (a real PLC: 26 beats)."""
    from devices.opcua.settings import plc_of

    d = good(env)
    d["sources"]["plc"]["endpoint"] = "opc.tcp://:4840/"
    (w,) = parse_config(d, "line3.yaml").warnings
    assert "connects to this gateway itself" in w and "never connects" not in w, w
    assert plc_of("opc.tcp://:4840/") == plc_of("opc.tcp://127.0.0.1:4840/plc/") != plc_of("opc.tcp://:4841/")


def test_a_pass_on_unsure_parts_beside_a_heartbeat_is_a_warning_saying_what_the_plc_reads(env):
    """A pass whose condition also holds on UNSURE parts (``ne: NG``, ``not: NG``, ``in: [OK, UNSURE]``) written to
    a PLC with a watchdog heartbeat (through another session of it too): the PLC reads it passed for a part no model
    judged, its watchdog fed beside a reject gate. A warning at validate and at load (the same config check)."""
    for when in (
        {"verdict": {"ne": "NG"}},
        {"not": {"verdict": "NG"}},
        {"verdict": {"in": ["OK", "UNSURE"]}},
    ):
        for session in ("plc", "plc2"):
            d = good(env)
            d["sources"]["plc"]["heartbeat"] = {"node_id": "ns=2;s=M.Life"}
            d["sources"]["plc2"] = {"type": "opcua", "endpoint": "opc.tcp://localhost:4840/"}
            d["actions"]["pass"] = {
                "type": "opcua_write",
                "source": session,
                "node_id": "ns=2;s=M.Pass",
                "when": when,
            }
            d["pipelines"][0]["actions"].append("pass")
            (w,) = parse_config(d, "line3.yaml").warnings
            assert w.startswith("line3.yaml: actions.pass.when: acts on OK parts and on UNSURE ones"), w
            assert "the PLC reads on ns=2;s=M.Pass this action's value, a pass" in w and "source plc" in w
            d["actions"]["pass"]["when"] = {"verdict": "OK"}
            assert parse_config(d, "line3.yaml").warnings == []
    del d["sources"]["plc"]["heartbeat"]
    d["actions"]["pass"]["when"] = {"verdict": {"ne": "NG"}}
    assert parse_config(d, "line3.yaml").warnings == []  # no watchdog: nothing fed while no part is judged


def test_an_output_written_to_the_heartbeats_node_is_a_warning_naming_the_field(env):
    """An OPC UA output (or an alarm's mirror) written to the node a heartbeat of its PLC writes, through any source
    of it and however the node is spelt: the heartbeat toggles it every period, so a PLC program reading it as the
    reject gate read a part rejected every other beat, and the watchdog took the gate's writes as beats. It loaded
    without a word. A warning naming the field and the heartbeat's source; another node, or another PLC's, is none."""
    for session, node in (
        ("plc", "ns=2;s=M.Life"),
        ("plc2", "ns=2; s=M.Life"),
        ("plc", "nsu=urn:plc;s=M.Life"),
    ):
        d = good(env)
        d["sources"]["plc"]["heartbeat"] = {"node_id": "ns=2;s=M.Life"}
        d["sources"]["plc2"] = {"type": "opcua", "endpoint": "opc.tcp://localhost:4840/"}
        d["actions"]["reject"].update(source=session, node_id=node)
        d["actions"]["lamp"] = {
            "type": "alarm",
            "when": {"verdict": "NG"},
            "opcua_source": session,
            "node_id": node,
        }
        d["pipelines"][0]["actions"].append("lamp")
        got = parse_config(d, "line3.yaml").warnings
        assert [w.split(": ")[1] for w in got] == ["actions.reject.node_id", "actions.lamp.node_id"], got
        assert all(
            f"node {node} is the watchdog heartbeat of source plc on that PLC (ns=2;s=M.Life)" in w
            for w in got
        )
    d["sources"]["plc2"]["endpoint"] = "opc.tcp://10.0.0.9:4840/"  # another PLC's node of that id
    d["actions"]["reject"].update(source="plc2", node_id="ns=2;s=M.Life")
    d["actions"]["lamp"].update(opcua_source="plc2", node_id="ns=2;s=M.Life")
    assert parse_config(d, "line3.yaml").warnings == []
    d["actions"]["reject"].update(source="plc", node_id="ns=2;s=M.Reject")
    d["actions"]["lamp"].update(opcua_source="plc", node_id="ns=2;s=M.Lamp")
    assert parse_config(d, "line3.yaml").warnings == []


def test_an_output_on_unsure_writing_false_to_a_pass_node_with_its_reset_implied_is_a_warning_naming_the_field(
    env,
):
    """An output on UNSURE parts writing ``false`` in mode on_change or pulse, no reset_value, on a pass signal's
    node: its reset, implied, is ``true``, written for every NG part after it (on_change) or pulse_ms after the
    UNSURE part (pulse), and the PLC read those parts passed. It loaded without a word. A warning naming the field;
    mode level, a reset_value, or a node of its own are none."""
    d = good(env)
    plc = {"type": "opcua_write", "source": "plc", "node_id": "ns=2;s=M.Pass"}
    d["actions"]["pass"] = {**plc, "mode": "on_change", "when": {"verdict": "OK"}}
    d["pipelines"][0]["actions"] += ["pass", "unsure"]
    for mode, said in (("on_change", "an NG part too"), ("pulse", "500 ms after each part it acts on")):
        d["actions"]["unsure"] = {**plc, "node_id": "ns=2; s=M.Pass", "value": False, "mode": mode}
        d["actions"]["unsure"]["when"] = {"verdict": "UNSURE"}
        got = parse_config(d, "line3.yaml").warnings
        assert [w.split(": ")[:2] for w in got] == [["line3.yaml", "actions.unsure.mode"]], got
        assert said in got[0] and "node ns=2; s=M.Pass is pass signal pass's" in got[0], got
    for change in ({"mode": "level"}, {"reset_value": False}, {"node_id": "ns=2;s=M.Unsure"}):
        d["actions"]["unsure"] = {**plc, "value": False, "mode": "on_change", "when": {"verdict": "UNSURE"}}
        d["actions"]["unsure"].update(change)
        assert parse_config(d, "line3.yaml").warnings == [], change


def test_a_sources_certificate_files_are_the_config_folders_and_are_checked(env, tmp_path, monkeypatch):
    """A source's TLS and OPC UA certificate paths were taken relative to the process's working directory
    (a service manager's is `/`), were not checked by validate (a missing key showed only at run time),
    and a key pasted in place of its path (or given through ${VAR}) was not refused."""
    folder = tmp_path / "etc"
    (folder / "pki").mkdir(parents=True)
    for f in ("ca.pem", "gw.pem", "gw.key"):
        (folder / "pki" / f).write_text("x")
    d = good(env)
    d["sources"]["broker"]["tls"] = {
        "ca_file": "pki/ca.pem",
        "cert_file": "pki/gw.pem",
        "key_file": "pki/gw.key",
    }
    d["sources"]["plc"].update(
        security_mode="SignAndEncrypt",
        certificate_file="pki/gw.pem",
        private_key_file="pki/gw.key",
        server_certificate_file="pki/ca.pem",
    )
    path = folder / "agent.yaml"
    path.write_text(yaml.safe_dump(d))
    monkeypatch.chdir(tmp_path)  # elsewhere, as a service starts
    cfg = load_config(path)
    assert cfg.sources["broker"].tls.key_file == str(folder.resolve() / "pki" / "gw.key")
    assert cfg.sources["plc"].private_key_file == str(folder.resolve() / "pki" / "gw.key")
    d["sources"]["broker"]["tls"]["ca_file"] = "pki/missing.pem"
    d["sources"]["plc"]["private_key_file"] = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvsecret\n-----END PRIVATE KEY-----\n"
    )
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = "\n".join(exc.value.errors)
    assert "sources.broker.tls.ca_file" in text and "pki/missing.pem does not exist" in text
    assert "sources.plc.private_key_file" in text and "holds a PEM certificate or key itself" in text
    assert "MIIEvsecret" not in text


def test_an_mqtt_password_in_clear_text_or_an_unchecked_broker_is_a_warning(env):
    d = good(env)
    d["sources"]["broker"].update(host="10.0.0.5", username="gw", password="secret")
    cfg = parse_config(d, "line3.yaml")
    assert [w.split(": ")[1] for w in cfg.warnings] == ["sources.broker.password"]
    assert "sent to 10.0.0.5 without tls" in cfg.warnings[0]
    d["sources"]["broker"]["host"] = "127.0.0.1"  # the broker on this host: nothing crosses a network
    assert parse_config(d, "line3.yaml").warnings == []
    d["sources"]["broker"].update(host="10.0.0.5", tls={"insecure": True})
    cfg = parse_config(d, "line3.yaml")
    assert [w.split(": ")[1] for w in cfg.warnings] == ["sources.broker.tls.insecure"]


# ---- the YAML itself: keys given twice, values YAML cannot build, files not in UTF-8 ---------------------------

SMALL = "agent:\n  id: gw1\nsources:\n  broker: {type: mqtt}\nactions:\n  pub: {type: mqtt_publish, source: broker}\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        # a second agent: section at the end replaced the first: another identity, silently
        (SMALL + "agent:\n  id: other\n", "agent: key given twice (lines 1 and 7); keep one"),
        (SMALL.replace("  id: gw1\n", "  id: gw1\n  id: gw2\n"), "agent.id: key given twice (lines 2 and 3)"),
        (
            SMALL.replace(
                "  broker: {type: mqtt}\n", "  broker: {type: mqtt}\n  broker: {type: mqtt, port: 1}\n"
            ),
            "sources.broker: key given twice (lines 4 and 5)",
        ),
        (
            SMALL.replace("source: broker}", "source: broker, qos: 0, qos: 1}"),
            "actions.pub.qos: key given twice (line 6, columns 45 and 53)",  # a flow mapping on one line
        ),
        (
            SMALL + "pipelines:\n  - {name: p, name: q, source: broker, model: m}\n",
            "pipelines[0].name: key given twice",
        ),
        (
            SMALL + "sources:\n  x: {type: mqtt}\nsources:\n  y: {type: mqtt}\n",
            "sources: key given 3 times (lines 3, 7 and 9)",
        ),
    ],
    ids=["agent", "agent.id", "source", "flow", "list-item", "three-times"],
)
def test_a_key_given_twice_is_refused_with_its_path_and_both_lines(tmp_path, text, expected):
    """YAML keeps the last of two equal keys without a word: a second `agent:` renamed the agent and a
    repeated model slot or source replaced the first. Now the config is refused, naming both lines."""
    p = tmp_path / "line3.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert any(e.startswith(f"{p}: {expected}") for e in ei.value.errors), ei.value.errors


def test_merge_keys_still_override_without_being_repeats(tmp_path):
    p = tmp_path / "c.yaml"
    # an explicit key after a merge key overrides the merged one: that is what merge keys are for
    p.write_text(
        "x-broker: &broker {type: mqtt, host: 127.0.0.1, port: 1883}\n"
        "agent: {id: gw1}\nsources:\n  a: {<<: *broker, port: 1884}\n  b: {<<: *broker}\n"
    )
    with pytest.raises(ConfigError) as ei:  # x-broker is not an option; nothing about repeats
        load_config(p)
    assert not any("given" in e for e in ei.value.errors), ei.value.errors


@pytest.mark.parametrize(
    "value, expected",
    [
        (
            "2024-13-45",
            "at line 2, column 13: cannot read '2024-13-45' as a date or time (month must be in 1..12)",
        ),
        (
            "2001-02-30",
            "at line 2, column 13: cannot read '2001-02-30' as a date or time (day is out of range",
        ),
        ("!!timestamp x", "at line 2, column 13: cannot read 'x' as a date or time; quote it if it is text"),
        (
            "9" * 5000,
            "at line 2, column 13: cannot read '99999999999999999999'... (5000 characters) as an integer "
            "(too long a number: 5000 digits, more than any integer a config takes); quote it if it is text",
        ),
        ("!!bool maybe", "at line 2, column 13: cannot read 'maybe' as a boolean"),
    ],
    ids=["month-13", "feb-30", "timestamp-tag", "5000-digits", "bool-tag"],
)
def test_a_value_yaml_cannot_build_is_a_config_error_naming_file_and_line(tmp_path, value, expected):
    """Before: ValueError / AttributeError tracebacks out of load_config (and `edge-agent validate`)."""
    p = tmp_path / "c.yaml"
    p.write_text(f"agent:\n  data_dir: {value}\n  id: gw1\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.errors[0].startswith(f"{p}: not valid YAML {expected}"), ei.value.errors


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            b"agent:\n  id: gw\xe91\n",
            "not UTF-8 text (invalid continuation byte at byte 15, line 2, column 9: 0xe9); save the file as UTF-8",
        ),
        (  # the column as an editor counts it: characters, not bytes (formerly column 23)
            "agent:\n  site: Größe Halle ".encode() + b"\xb0C\n",
            "not UTF-8 text (invalid start byte at byte 29, line 2, column 21: 0xb0); save the file as UTF-8",
        ),
        (
            "agent:\n  id: gw1\n".encode("utf-16"),
            "not UTF-8 text (invalid start byte at byte 0 (a UTF-16 byte",
        ),
    ],
    ids=["latin-1", "after-umlauts", "utf-16"],
)
def test_a_config_file_not_in_utf8_is_refused_naming_the_byte(tmp_path, data, expected):
    p = tmp_path / "c.yaml"
    p.write_bytes(data)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.errors[0].startswith(f"{p}: {expected}"), ei.value.errors
    p.write_bytes(b"\xef\xbb\xbfagent:\n  id: gw1\n")  # UTF-8 with a byte order mark (Windows editors) loads
    assert load_config(p).agent.id == "gw1"


def test_validate_cli_reports_a_repeated_key_and_a_bad_date_without_a_traceback(tmp_path, capsys):
    p = tmp_path / "line3.yaml"
    for text, expected in (
        (SMALL + "agent:\n  id: other\n", f"{p}: agent: key given twice (lines 1 and 7); keep one"),
        (
            SMALL + "installed: 2024-13-45\n",
            f"{p}: not valid YAML at line 7, column 12: cannot read '2024-13-45'",
        ),
    ):
        p.write_text(text)
        code, _, err = validate(p, capsys)  # an exception out of it would be the process's traceback
        assert code == 1 and expected in err, err


# ---- MQTT topics the agent publishes to ----------------------------------------------------------------------


def _mqtt_config(**extra) -> dict:
    return {"agent": {"id": "gw1"}, "sources": {"broker": {"type": "mqtt"}}, **extra}


def _pub(topic: str) -> dict:
    return {"actions": {"pub": {"type": "mqtt_publish", "source": "broker", "topic": topic}}}


def _sp(**ids) -> dict:
    cmd = {"type": "sparkplug_command", "source": "broker", "group": "g", "edge_node": "n", "metric": "m"}
    return {"actions": {"cmd": {**cmd, **ids}}}


@pytest.mark.parametrize(
    "extra, expected",
    [
        (_pub("plant/+/results"), "actions.pub.topic: holds '+', a wildcard"),
        (_pub("plant/#"), "actions.pub.topic: holds '#', a wildcard"),
        # a NUL or a control character: Mosquitto dropped the whole connection at every publish
        (
            _pub("plant/line\0"),
            "actions.pub.topic: holds NUL at character 11; the broker drops the whole connection",
        ),
        (_pub("plant/a\tb"), "actions.pub.topic: holds a control character (U+0009) at character 8"),
        (_pub("plant/\ufffe"), "actions.pub.topic: holds a Unicode noncharacter (U+FFFE) at character 7"),
        (_pub(""), "actions.pub.topic: empty; name a topic"),
        (_pub("a/" + "x" * 70_000), "actions.pub.topic: is 70002 bytes in UTF-8; MQTT allows at most 65535"),
        (
            {"forward": [{"name": "f", "source": "broker", "to": "broker", "topic": "plant/+/tags"}]},
            "forward[0].topic: holds '+', a wildcard",
        ),
        (
            {"forward": [{"name": "f", "source": "broker", "to": "broker", "topic": "plant/\0"}]},
            "forward[0].topic: holds NUL at character 7",
        ),
        (_sp(edge_node="n\0"), "actions.cmd.edge_node: holds NUL at character 2"),
        (_sp(device="d\0"), "actions.cmd.device: holds NUL at character 2"),
        (_sp(group="g/x"), "actions.cmd.group: is one topic level: '/', '+' and '#' are not allowed in it"),
        (
            {"actions": {"a+b": {"type": "alarm", "publish_to": "broker"}}},
            "actions.a+b: this alarm is published to .../alarms/a+b: its name is one topic level",
        ),
        ({"agent": {"id": "gw1", "site": "plant\0"}}, "agent.site: holds NUL at character 6"),
    ],
    ids=[
        "plus",
        "hash",
        "nul",
        "tab",
        "noncharacter",
        "empty",
        "70k-bytes",
        "forward-plus",
        "forward-nul",
        "sparkplug-node-nul",
        "sparkplug-device-nul",
        "sparkplug-group-slash",
        "alarm-name",
        "site-nul",
    ],
)
def test_a_topic_the_broker_would_refuse_is_refused_at_validation_with_its_path(tmp_path, extra, expected):
    """Before: accepted; a wildcard failed every publish at run time, and a NUL made Mosquitto drop the
    whole connection at every publish while the action counted the message sent."""
    p = tmp_path / "line3.yaml"
    p.write_text(yaml.safe_dump(_mqtt_config(**extra)))  # NUL and TAB written as YAML escapes
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert any(e.startswith(f"{p}: {expected}") for e in ei.value.errors), ei.value.errors
    assert all(len(e) < 400 for e in ei.value.errors), ei.value.errors  # a 70,000-byte topic is not echoed


def test_topics_are_published_as_written_a_placeholder_is_a_warning_and_any_other_text_is_fine(tmp_path):
    p = tmp_path / "line3.yaml"
    p.write_text(
        yaml.safe_dump(
            _mqtt_config(
                **_pub("plant/{pipeline}/results"),
                forward=[{"name": "f", "source": "broker", "to": "broker", "topic": "Werk/Linie-Ä/温度"}],
            ),
            allow_unicode=True,
        )
    )
    cfg = load_config(p)
    assert cfg.warnings == [
        f"{p}: actions.pub.topic: topic 'plant/{{pipeline}}/results' is published as written: {{pipeline}} is "
        "not expanded (topics take no placeholders; ${VAR} environment variables are substituted when the "
        "config is read)"
    ]
    assert cfg.forward[0].topic == "Werk/Linie-Ä/温度"


@pytest.mark.parametrize(
    "thresholds, expected",
    [
        (
            {"above": 20, "below": 10, "hysteresis": 5},
            "plant.yaml: rules[0]: hysteresis: 5 is too wide for below: 10 and above: 20 (below + hysteresis "
            "must stay under above - hysteresis, or the rule could never clear); use hysteresis under 5, or "
            "thresholds further apart",
        ),
        (
            {"above": 10, "below": 20},
            "plant.yaml: rules[0]: above: 10 must be greater than below: 20 (a value over above or under "
            "below trips the rule: with above <= below every value does)",
        ),
    ],
)
def test_a_rule_whose_release_bands_overlap_is_refused_naming_the_field(thresholds, expected):
    """With above and below, each side is released by its own band; bands that meet would let a value hold
    the rule by one side while it is tripped by the other, so that it never clears."""
    data = {
        "agent": {"id": "gw"},
        "sources": {"bus": {"type": "mqtt", "port": 1883, "subscriptions": [{"topic": "x/#"}]}},
        "rules": [{"name": "r", "source": "bus", "tag": "t", **thresholds}],
    }
    with pytest.raises(ConfigError) as e:
        parse_config(data, "plant.yaml")
    assert expected in e.value.errors, e.value.errors
    data["rules"][0].update(above=20, below=10, hysteresis=4.9)  # bands 10..14.9 and 15.1..20: apart
    assert parse_config(data, "plant.yaml").rules[0].hysteresis == 4.9


def test_validate_says_the_agents_own_plc_certificate_is_expired_expiring_or_not_its_keys(env, tmp_path):
    """The agent's OPC UA client certificate expired (or expiring within 30 days), not yet valid, or given with
    another certificate's key: each makes the PLC refuse the agent, which validate did not say (the source
    found out at run time). Each is a warning naming the option, the file and the date or the fix."""

    def own(stem: str, days: tuple[int, int]) -> tuple[str, str]:
        return own_certificate(tmp_path, stem, days)

    def said(cert: str, key: str) -> list[str]:
        d = good(env)
        d["sources"]["plc"].update(
            security_mode="SignAndEncrypt",
            certificate_file=cert,
            private_key_file=key,
            server_certificate_file=cert,
        )
        return [w.split(": ", 1)[1] for w in parse_config(d, "line3.yaml").warnings]

    fine, expired, early, soon = (
        own("fine", (-1, 400)),
        own("old", (-30, -2)),
        own("early", (3, 400)),
        own("soon", (-300, 10)),
    )
    assert said(*fine) == []
    (old,) = said(*expired)
    assert old.startswith(f"sources.plc.certificate_file: {expired[0]} expired on "), old
    assert old.endswith(": the PLC refuses it; issue a new one and have the PLC trust it"), old
    assert len(said(*early)) == 1 and " is valid only from " in said(*early)[0]
    assert len(said(*soon)) == 1 and "expires on " in said(*soon)[0] and "in 9 days" in said(*soon)[0]
    assert said(fine[0], soon[1]) == [
        f"sources.plc.certificate_file: private_key_file {soon[1]} is not this certificate's key: the PLC cannot "
        "read the channel"
    ]
    # a key with a passphrase (the source takes none) and a file that holds no certificate: the source cannot
    # connect with either; validate passed both over
    locked = locked_key(Path(fine[1]), tmp_path / "locked.key")
    assert said(fine[0], str(locked)) == [
        f"sources.plc.certificate_file: private_key_file {locked} is protected by a passphrase, which the "
        "source does not take: store the key without one (`openssl pkey -in KEY -out KEY.plain`)"
    ]
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a certificate")
    assert said(str(junk), fine[1])[0] == (
        f"sources.plc.certificate_file: {junk} is not an X.509 certificate (PEM or DER): the source cannot "
        "connect with it"
    )


def test_a_persistent_session_with_a_sparkplug_subscription_is_refused_at_load_naming_it(env, tmp_path):
    """Sparkplug 3.0 has every host application connect with a clean session, and a source with a sparkplug_b
    subscription is one, host_id or not (it decodes births and deaths, asks rebirths). Accepted before (a
    warning), its persistent session had the broker replay, at the agent's next start, the QoS 1 births, data
    and death of a node session that began and ended while it was away, passed on as live readings (measured
    against Mosquitto: 1.0 and 7.0 GOOD, then BAD). Now refused at load, naming the file, the source, the field
    and the subscription; the same source without the session, and JSON topics with one, load."""
    d = good(env)
    json_sub = {"topic": "plant/line3/#", "qos": 1}
    d["sources"]["broker"].update(
        client_id="gw1",
        persistent_session=True,
        subscriptions=[json_sub, {"topic": "spBv1.0/plant/#", "codec": "sparkplug_b", "qos": 1}],
    )
    p = tmp_path / "line3.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert len(ei.value.errors) == 1 and ei.value.errors[0].startswith(
        f"{p}: sources.broker: persistent_session: true with subscriptions[1] (topic 'spBv1.0/plant/#', codec: "
        "sparkplug_b): a source that reads Sparkplug is a host application, which Sparkplug 3.0 has connect with "
        "a clean session"
    ), ei.value.errors
    assert "set persistent_session: false" in ei.value.errors[0]
    d["sources"]["broker"]["persistent_session"] = False
    assert not parse_config(d, "line3.yaml").warnings
    d["sources"]["broker"].update(persistent_session=True, subscriptions=[json_sub])
    assert not parse_config(d, "line3.yaml").warnings


def test_a_qos1_publish_through_a_subscribing_mqtt_source_is_a_warning_naming_the_field(
    env, tmp_path, capsys
):
    """A QoS 1 publish waits for its PUBACK on the connection that carries what the source reads: a flood on a
    subscription held such results back 11-32 s (docs/mqtt.md, "A flood"). validate and load warn, naming the
    file and the field, for an ``mqtt_publish`` at QoS 1 and an alarm's ``publish_to``; QoS 0, a source
    with no subscriptions or one with ``publish_connection: separate`` is no warning."""
    d = good(env)
    d["actions"]["pub"]["qos"] = 1
    d["actions"]["alarm"] = {"type": "alarm", "publish_to": "broker", "when": {"verdict": "NG"}}
    d["pipelines"][0]["actions"].append("alarm")
    assert parse_config(d, "line3.yaml").warnings == []  # the source subscribes to nothing
    d["sources"]["broker"]["subscriptions"] = [{"topic": "plant/line1/#"}]
    cfg = parse_config(d, "line3.yaml")
    assert [w.split(": ")[:2] for w in cfg.warnings] == [
        ["line3.yaml", "actions.pub.source"],
        ["line3.yaml", "actions.alarm.publish_to"],
    ], cfg.warnings
    assert all("'plant/line1/#'" in w and "publish_connection: separate" in w for w in cfg.warnings)
    d["actions"]["pub"]["qos"] = 0  # no PUBACK to wait for
    assert [w.split(": ")[1] for w in parse_config(d, "line3.yaml").warnings] == ["actions.alarm.publish_to"]
    d["actions"]["pub"]["qos"] = 1
    path = tmp_path / "line3.yaml"
    path.write_text(yaml.safe_dump(d))
    code, out, err = validate(path, capsys)  # a warning, not a refusal
    assert code == 0 and f"{path}: actions.pub.source: QoS 1 through mqtt source 'broker'" in out + err, (
        out,
        err,
    )
    # the source publishes over a connection of its own: no PUBACK waits behind what it reads
    d["sources"]["broker"]["publish_connection"] = "separate"
    assert parse_config(d, "line3.yaml").warnings == []


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("..", "no empty, '.' or '..' part"),
        ("vision/..", "no empty, '.' or '..' part"),
        ("/var/lib/factory-edge", "no empty, '.' or '..' part"),
        ("vision/", "names the folder of slot 'vision' (data_dir/models/vision): two slots cannot share one"),
        (
            "./vision",
            "names the folder of slot 'vision' (data_dir/models/vision): two slots cannot share one",
        ),
        ("vision//", "no empty, '.' or '..' part"),
        ("./..", "no empty, '.' or '..' part"),
        ("vision/x", "this one's is inside slot 'vision''s, whose clean-up removes it"),
    ],
)
def test_a_slot_name_whose_folder_is_another_is_refused_naming_it(env, name, said):
    """A slot's store is data_dir/models/<name>, and its clean-up removes every folder there its state does not
    name: a slot named 'vision/..' beside 'vision' removed vision's installed package at its start; '..' put its
    store on the data folder (the outbox beside it)."""
    d = good(env)
    d["models"][name] = {"package": env["vision"]}
    errs = errors_of(d)
    assert len(errs) == 1 and errs[0].startswith(f"line3.yaml: models.{name}: ") and said in errs[0], errs
    d["models"] = {"line1/vision": {"package": env["vision"]}, "health": d["models"]["health"]}
    d["pipelines"][0]["model"] = "line1/vision"
    parse_config(d, "line3.yaml")  # a nested name of its own folder: as before


@pytest.mark.parametrize("spelling", ["vision/", "./vision", "./vision/"])
def test_a_slot_name_spelt_with_a_trailing_slash_or_a_leading_dot_is_read_as_the_slot_with_a_warning(
    env, spelling
):
    """``vision/`` and ``./vision`` name the folder data_dir/models/vision as ``vision`` does; refused since names
    could alias another slot's folder, a gateway written so no longer started at its upgrade (its installed package
    in that very folder). Read as ``vision``, each place said in a warning naming the file and the field."""
    d = good(env)
    d["models"] = {spelling: d["models"]["vision"], "health": d["models"]["health"]}
    d["pipelines"][0]["model"] = spelling
    cfg = parse_config(d, "line3.yaml")
    assert list(cfg.models) == ["vision", "health"] and cfg.pipelines[0].model == "vision"
    said = [w for w in cfg.warnings if "read as slot 'vision'" in w]
    assert (
        said[0].startswith(f"line3.yaml: models.{spelling}: read as slot 'vision': its folder is ")
        and said[1]
    )
    assert said[1].startswith("line3.yaml: pipelines[0].model: read as slot 'vision'"), said
    # a reference so spelt to a slot written plainly: read as it too
    d = good(env)
    d["pipelines"][0]["model"] = spelling
    assert parse_config(d, "line3.yaml").pipelines[0].model == "vision"
