"""What YAML brings in is refused by name wherever it comes in, never resolved silently or as a traceback:
a key given twice in one mapping (YAML would keep the last one) and a value YAML cannot build (a date such
as `2024-13-45`, an integer of 5000 digits), in a fleet config checked by `edge-agent validate --fleet`
(what the cloud runs before a rollout) and in a signed package manifest (where a reviewer reads the first
value and the agent would use the second). The agent's own config file is covered in
tests/unit/test_agent_config.py, the fleet config as the agent receives it in
tests/integration/test_fleet_config_rollout.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model_packager import ManifestError, read_manifest
from tests.unit.test_package_hostile import _manifest, _sig, _with, good, refused_everywhere

__all__ = ["good"]  # the packages' fixture, shared with test_package_hostile
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "sources:\n  broker: {type: mqtt}\nsources:\n  other: {type: mqtt}\n",
            "sources: key given twice (lines 1 and 3); keep one",
        ),
        (
            "sources:\n  broker: {type: mqtt}\ninstalled: 2024-13-45\n",
            "not valid YAML at line 3, column 12: cannot read '2024-13-45' as a date or time",
        ),
        (
            "sources:\n  broker: {type: mqtt, port: " + "9" * 5000 + "}\n",
            "not valid YAML at line 2, column 30: cannot read '99999999999999999999'... (5000 characters) "
            "as an integer",
        ),
        (
            "sources: !!timestamp x\n",
            "not valid YAML at line 1, column 10: cannot read 'x' as a date or time",
        ),
    ],
    ids=["key-twice", "bad-date", "5000-digits", "timestamp-tag"],
)
def test_validate_fleet_refuses_what_yaml_cannot_build_and_keys_given_twice(tmp_path, text, expected):
    """Before: a traceback (ValueError, AttributeError) out of `edge-agent validate --fleet`, and the key
    given twice passed as valid."""
    p = tmp_path / "fleet.yaml"
    p.write_text(text)
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "validate", "--fleet", str(p)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{p}: {expected}" in r.stderr, r.stderr


def test_a_signed_manifest_giving_a_threshold_twice_is_refused_on_every_path(good, tmp_path):
    pkg, trusted, key = good
    text = _manifest(pkg).decode()
    assert "  threshold: 0.5\n" in text
    doc = text.replace("  threshold: 0.5\n", "  threshold: 0.5\n  threshold: 0.99\n", 1).encode()
    bad = _with(pkg, tmp_path / "twice-1.0.0.edgepkg", manifest=doc, sig=_sig(doc, key))
    err = refused_everywhere(bad, trusted, tmp_path, ManifestError, "bad_yaml")
    assert "outputs[0].threshold: key given twice (lines" in str(err), err
    with pytest.raises(ManifestError, match=r"outputs\[0\]\.threshold: key given twice"):
        read_manifest(bad)


def test_a_signed_manifest_merging_two_thresholds_is_refused_on_every_path(good, tmp_path):
    """``<<: [{threshold: 0.5}, {threshold: 0.99}]``: a reviewer who knows the YAML merge spec reads 0.5 (the
    first wins), the agent used 0.99 (PyYAML takes the last)."""
    pkg, trusted, key = good
    text = _manifest(pkg).decode()
    doc = text.replace("  threshold: 0.5\n", "  <<: [{threshold: 0.5}, {threshold: 0.99}]\n", 1).encode()
    bad = _with(pkg, tmp_path / "merged-1.0.0.edgepkg", manifest=doc, sig=_sig(doc, key))
    err = refused_everywhere(bad, trusted, tmp_path, ManifestError, "bad_yaml", max_s=60.0)  # a hang guard
    said = str(err)
    assert "outputs[0].threshold: given differently in the mappings it merges (merge spec: line " in said
    assert "; PyYAML took column " in said, said
    with pytest.raises(ManifestError, match=r"outputs\[0\]\.threshold: given differently in the mappings"):
        read_manifest(bad)
