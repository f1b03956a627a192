"""Every pluggable kind is one row in its table and documents itself: each source type has a
sample.yaml that validates and names every option; each action type has a section in the action
reference naming every option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from devices import SOURCE_TYPES, load_object
from edge_agent.config import ACTION_TYPES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", sorted(SOURCE_TYPES))
def test_each_source_type_has_a_sample_config_naming_every_option(kind):
    sample = ROOT / "devices" / kind / "sample.yaml"
    cls = load_object(SOURCE_TYPES[kind][0])
    cls.model_validate(yaml.safe_load(sample.read_text()))
    text = sample.read_text()
    missing = [f for f in cls.model_fields if f not in text]
    assert not missing, f"{sample.relative_to(ROOT)} does not mention {missing}"


@pytest.mark.parametrize("kind", sorted(ACTION_TYPES))
def test_each_action_type_is_in_the_action_reference_with_every_option(kind):
    doc = (ROOT / "docs" / "actions.md").read_text()
    m = re.search(rf"^## `{kind}`\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    assert m, f"docs/actions.md has no section ## `{kind}`"
    common = re.search(r"^## Options every action has\n(.*?)(?=^## )", doc, re.S | re.M).group(1)
    text = (
        m.group(1) + common + (doc if kind == "sparkplug_command" else "")
    )  # it refers to opcua_write's modes
    missing = [f for f in ACTION_TYPES[kind].model_fields if f"`{f}" not in text]
    assert not missing, f"docs/actions.md: section {kind} does not mention {missing}"


# ---- every row of every table: settings light, a sample that validates, a docs entry, a test ----


def _tables() -> dict[str, dict[str, tuple[str, str]]]:
    from devices.mqtt.settings import CODEC_TYPES
    from edge_agent.config import ACTION_PLUGINS
    from edge_agent.models.config import ENGINE_TYPES

    return {
        "source": SOURCE_TYPES,
        "action": ACTION_PLUGINS,
        "codec": CODEC_TYPES,
        "engine": {k: ("edge_agent.models.config:ModelConfig", v[0]) for k, v in ENGINE_TYPES.items()},
    }


def test_every_table_row_names_settings_that_import_without_a_heavy_library():
    import subprocess
    import sys

    refs = sorted({settings for table in _tables().values() for settings, _ in table.values()})
    code = (
        "import sys\nfrom devices import load_object\n"
        f"for ref in {refs!r}:\n    load_object(ref)\n"
        "heavy = ('onnx', 'onnxruntime', 'openvino', 'cv2', 'asyncua', 'paho', 'torch', 'google.protobuf', "
        "'grpc')\nprint(sorted(m for m in heavy if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"validating a config imported {r.stdout.strip()}"


def test_every_table_row_names_an_implementation_that_exists():
    import importlib.util

    for kind, table in _tables().items():
        for name, (_, impl) in table.items():
            module, _, attr = impl.partition(":")
            heavy = {"engine": name, "source": None, "codec": "paho"}.get(kind)
            if heavy and importlib.util.find_spec(heavy) is None:
                continue  # the library is not installed here: nothing to import
            assert callable(load_object(impl)), f"{kind} {name!r}: {impl} is not callable"


def test_every_action_type_has_a_sample_that_validates_and_a_test():
    from edge_agent.config import ACTION_PLUGINS, ACTION_TYPES

    samples = yaml.safe_load((ROOT / "edge_agent" / "actions.sample.yaml").read_text())
    # the tests, and the example configs the e2e tests run
    tests = "\n".join(
        p.read_text()
        for p in [
            *(ROOT / "tests").rglob("test_*.py"),
            *(ROOT / "configs").glob("*.yaml"),
            ROOT / "simulators" / "demo-agent.yaml",
        ]
    )
    for kind in ACTION_PLUGINS:
        assert kind in samples, f"edge_agent/actions.sample.yaml has no example of {kind!r}"
        assert ACTION_TYPES[kind].model_validate(samples[kind]).type == kind
        assert re.search(rf"""["']type["']: ["']{kind}["']|type: {kind}\b""", tests), (
            f"no test uses action {kind!r}"
        )


@pytest.mark.parametrize("kind", ["engine", "codec"])
def test_every_engine_and_codec_is_documented_validated_and_tested(kind):
    from devices.mqtt.settings import MqttSettings
    from edge_agent.models.config import ModelConfig

    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for name in _tables()[kind]:
        if kind == "engine":  # docs/agent.md lists the choices: `engine: auto | onnxruntime | openvino`
            assert re.search(rf"`engine: [^`]*\b{name}\b", (ROOT / "docs" / "agent.md").read_text()), name
            assert ModelConfig(package="x.edgepkg", engine=name).engine == name
            assert re.search(rf"""["']{name}["']""", tests), f"no test runs engine {name!r}"
        else:
            assert f"`{name}`" in (ROOT / "docs" / "mqtt.md").read_text(), (
                f"docs/mqtt.md never names codec {name}"
            )
            sub = {"topic": "a/#", "codec": name}
            assert MqttSettings(subscriptions=[sub]).subscriptions[0].codec == name
            own = ROOT / "tests" / "unit" / f"test_codec_{name.split('_')[0]}.py"  # e.g. test_codec_json.py
            assert own.exists() or re.search(rf"""codec["']?: ["']?{name}\b""", tests), (
                f"no test of codec {name!r}"
            )


def test_a_name_not_in_its_table_is_a_config_error_never_a_fallback():
    from edge_agent.config import ConfigError, parse_config

    bad = {
        "agent": {"id": "gw"},
        "trusted_keys": ["k.pub"],
        "sources": {"b": {"type": "mqtt", "subscriptions": [{"topic": "a/#", "codec": "protobuf"}]}},
        "models": {"m": {"package": "x.edgepkg", "engine": "tensorrt"}},
        "actions": {"a": {"type": "beep"}},
    }
    with pytest.raises(ConfigError) as exc:
        parse_config(bad)
    text = "\n".join(exc.value.errors)
    for where in ("sources.b.subscriptions[0].codec", "models.m.engine", "actions.a.type"):
        assert where in text, text


# ---- the trainer families (cloud_trainer.train.families.TRAINER_FAMILIES) ----


def test_every_trainer_family_loads_without_torch_or_onnx():
    """The CLI loads every family's class to build its choices: none may pull in a heavy library."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom cloud_trainer.train.families import TRAINER_FAMILIES, load_family\n"
        "print([type(load_family(k)).__name__ for k in TRAINER_FAMILIES])\n"
        "heavy = ('torch', 'onnx', 'onnxruntime', 'openvino', 'cv2', 'grpc')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "[]", (
        f"loading the trainer families imported {r.stdout.splitlines()[-1]}"
    )


def test_every_trainer_family_implements_its_hooks_is_documented_and_built_by_a_test():
    from cloud_trainer.train.families import STAGE_VERBS, TRAINER_FAMILIES, TrainerFamily, load_family

    staged = ("load_dataset", "train", "evaluate", "incumbent_metrics", "labels", "plot_curve", "package_io")
    docs = (ROOT / "docs" / "trainer.md").read_text()
    plugins = (ROOT / "docs" / "plugins.md").read_text()
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for name, ref in TRAINER_FAMILIES.items():
        fam = load_family(name)
        assert isinstance(fam, TrainerFamily) and fam.name == name, f"{ref}: not the TrainerFamily {name!r}"
        assert "build" in fam.verbs and set(fam.verbs) <= set(STAGE_VERBS), f"{name}: verbs {fam.verbs}"
        assert fam.package_name and fam.INPUT and fam.OUTPUTS, f"{name}: no package name, input or outputs"
        if set(fam.verbs) == set(STAGE_VERBS):  # the shared pipeline calls these
            missing = [h for h in staged if getattr(type(fam), h) is getattr(TrainerFamily, h)]
            assert not missing, f"{ref} does not implement {missing}"
            assert fam.default_epochs > 0 and fam.primary and fam.default_floors, (
                f"{ref}: epochs, primary, floors"
            )
        else:  # a build of its own, or nothing would run
            assert type(fam).build_command is not TrainerFamily.build_command, f"{ref}: no build_command"
        assert f"cloud-trainer build {name}" in docs, (
            f"docs/trainer.md never shows `cloud-trainer build {name}`"
        )
        assert f"| `{name}` |" in plugins, (
            f"docs/plugins.md: the table of trainer families has no row {name!r}"
        )
        assert re.search(rf"""["'](build|train)["'],\s*["']{name}["']""", tests), (
            f"no test runs cloud-trainer on {name}"
        )


def test_the_trainer_names_no_family_outside_its_family_classes():
    """The pipeline and the CLI call hooks: a `family == "..."` branch would be a place a new family
    is silently missing from."""
    branches = re.compile(r"""family\s*(==|!=|in\b|not in\b)|["'](vision|maintenance|anomaly)["']""")
    for rel in ("cloud_trainer/train/pipeline.py", "cloud_trainer/train/cli.py"):
        found = [
            f"{rel}:{i}: {line.strip()}"
            for i, line in enumerate((ROOT / rel).read_text().splitlines(), 1)
            if branches.search(line) and not line.lstrip().startswith("#")
        ]
        assert not found, "\n".join(found)


def test_an_unknown_or_build_only_family_is_refused_by_the_stages_naming_the_choices(tmp_path):
    from cloud_trainer.train.families import load_family
    from cloud_trainer.train.pipeline import BuildSettings, stage_train

    with pytest.raises(
        ValueError, match=r"unknown family 'weld'; expected one of \['anomaly', 'maintenance'"
    ):
        load_family("weld")
    s = BuildSettings(
        family="anomaly", dataset=tmp_path, registry=None, signing_key=tmp_path / "k", workdir=tmp_path
    )
    with pytest.raises(
        ValueError, match=r"unknown family 'anomaly'; expected one of \['maintenance', 'vision'\]"
    ):
        stage_train(s)
