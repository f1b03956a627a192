"""`model-packager` from the command line: keygen -> build -> verify --run -> inspect, on both engines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import model_packager
from tests.support.models import golden_inputs, make_signal_onnx, signal_spec


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "model_packager.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_round_trip_on_both_engines(tmp_path):
    import numpy as np

    r = cli("keygen", "keys/fleet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "keys/fleet.key").stat().st_mode & 0o777 == 0o600
    make_signal_onnx(tmp_path / "model.onnx")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(signal_spec(version="2.1.0")))
    np.savez(tmp_path / "golden.npz", **golden_inputs("signal"))
    r = cli(
        "build",
        "model.onnx",
        "spec.yaml",
        "--key",
        "keys/fleet.key",
        "--out",
        "dist",
        "--golden",
        "golden.npz",
        "--openvino",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    pkg = tmp_path / "dist" / "machine-health-2.1.0.edgepkg"
    assert pkg.is_file()

    r = cli("verify", pkg, "--trust", "keys/fleet.pub", "--run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "golden on onnxruntime: largest deviation" in r.stdout
    assert "golden on openvino: largest deviation" in r.stdout

    r = cli("inspect", pkg, "--json", cwd=tmp_path)
    doc = json.loads(r.stdout)
    assert doc["name"] == "machine-health" and doc["version"] == "2.1.0"
    assert {e["engine"] for e in doc["engines"]} == {"onnxruntime", "openvino"}
    assert {f["role"] for f in doc["files"]} >= {"model", "golden", "openvino_xml", "openvino_bin"}
    r = cli("inspect", pkg, cwd=tmp_path)
    assert "machine-health-2.1.0" in r.stdout and "UNVERIFIED" in r.stdout


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> Path:
    """A folder with a key made by `model-packager keygen` (k.key, k.pub) and the signal package
    machine-health-1.0.0.edgepkg it signed, made by `model-packager build`; the tests below read them and
    write their own files elsewhere."""
    tmp = tmp_path_factory.mktemp("signed")
    assert cli("keygen", "k", cwd=tmp).returncode == 0
    make_signal_onnx(tmp / "model.onnx")
    (tmp / "spec.yaml").write_text(yaml.safe_dump(signal_spec()))
    assert cli("build", "model.onnx", "spec.yaml", "--key", "k.key", "--out", ".", cwd=tmp).returncode == 0
    return tmp


def test_cli_verify_refuses_an_untrusted_package_with_exit_1(tmp_path, signed):
    assert cli("keygen", "b", cwd=tmp_path).returncode == 0
    r = cli("verify", signed / "machine-health-1.0.0.edgepkg", "--trust", "b.pub", cwd=tmp_path)
    assert r.returncode == 1
    assert "not among the trusted keys" in r.stderr and r.stderr.count("\n") == 1


def test_cli_verify_output_cannot_be_forged_by_names_with_control_characters(tmp_path, signed):
    """An entry named ``x\\r\\nOK ...`` with a terminal escape, appended to a genuine package: one escaped
    line on stderr, nothing on stdout, exit 1 (issue 16, row 11)."""
    from tests.support import tar_craft as tc

    forged = (
        "x\x1b[2K\r\nOK machine-health-1.0.0: signature by a trusted key, 3 files, every hash and size match"
    )
    pkg = signed / "machine-health-1.0.0.edgepkg"
    tc.splice(pkg, tmp_path / "forged.edgepkg", tc.pax_entry(tc.pax_record("path", forged)))
    r = cli("verify", "forged.edgepkg", "--trust", signed / "k.pub", cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "\x1b" not in r.stderr and "\r" not in r.stderr
    assert "\\x1b[2K\\r\\nOK machine-health" in r.stderr


def test_cli_build_reports_spec_mismatch_naming_both_sides(tmp_path, signed):
    make_signal_onnx(tmp_path / "model.onnx", n_features=10)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(signal_spec()))
    r = cli("build", "model.onnx", "spec.yaml", "--key", signed / "k.key", cwd=tmp_path)
    assert r.returncode == 2
    assert "manifest input 'features' dimension 1 is 68 but model.onnx has 10" in r.stderr


def test_public_api_is_exported():
    for name in model_packager.__all__:
        assert hasattr(model_packager, name), name
    assert {
        "build_package",
        "open_package",
        "verify_package",
        "read_manifest",
        "generate_keypair",
        "load_trusted_keys",
        "run_golden",
        "PackageError",
    } <= set(model_packager.__all__)


def test_cli_builds_a_two_form_package_and_verify_checks_int8_on_this_cpu(tmp_path):
    import numpy as np

    from cloud_trainer.train import onnx_tools

    cli("keygen", "keys/fleet", cwd=tmp_path)
    make_signal_onnx(tmp_path / "model.fp32.onnx")
    calib = np.abs(golden_inputs("signal", n=64, seed=3)["features"])
    onnx_tools.quantize(tmp_path / "model.fp32.onnx", tmp_path / "model.int8.onnx", calib, "features")
    spec = {**signal_spec(version="3.0.0"), "quantization": {"scheme": onnx_tools.SCHEME}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    np.savez(tmp_path / "golden.npz", features=np.abs(golden_inputs("signal", n=8, seed=4)["features"]))
    r = cli(
        "build",
        "model.int8.onnx",
        "spec.yaml",
        "--key",
        "keys/fleet.key",
        "--out",
        "dist",
        "--golden",
        "golden.npz",
        "--openvino",
        "--fp32",
        "model.fp32.onnx",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    pkg = tmp_path / "dist" / "machine-health-3.0.0.edgepkg"
    r = cli("verify", pkg, "--trust", "keys/fleet.pub", "--run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "INT8 on onnxruntime: largest deviation from FP32" in r.stdout and "on this CPU" in r.stdout
    r = cli("inspect", pkg, cwd=tmp_path)
    assert "model_fp32" in r.stdout and "parity    INT8 vs FP32 bounds" in r.stdout
