"""An OpenVINO IR pair (model.xml/.bin, from OpenVINO's converter or a model zoo) given to `model-packager build`
in place of the ONNX model: refused in one line that says it is an IR and what to give instead. Before, the line
was "not a readable ONNX model (wire type 4 of field 7 is not used by ONNX)", naming no fix."""

from __future__ import annotations

import pytest

from model_packager import SpecMismatchError, build_package
from tests.support.models import make_keypair, make_signal_onnx, signal_spec


@pytest.mark.parametrize("given", ["model.xml", "model.bin"])
def test_an_openvino_ir_given_as_the_model_is_refused_saying_what_to_give(tmp_path, given):
    ov = pytest.importorskip("openvino")
    key, _ = make_keypair(tmp_path / "keys")
    onnx_model = make_signal_onnx(tmp_path / "src.onnx")
    ov.save_model(ov.Core().read_model(str(onnx_model)), str(tmp_path / "model.xml"), compress_to_fp16=False)
    with pytest.raises(SpecMismatchError) as ei:
        build_package(tmp_path / given, signal_spec(), tmp_path / "out", signing_key=key)
    msg = str(ei.value)
    assert f"{given}: not a readable ONNX model" in msg and "it is an OpenVINO IR" in msg, msg
    assert "give the ONNX model the IR was converted from" in msg, msg
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_file_that_is_neither_onnx_nor_an_ir_is_not_called_an_ir(tmp_path):
    key, _ = make_keypair(tmp_path / "keys")
    (tmp_path / "model.onnx").write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(SpecMismatchError) as ei:
        build_package(tmp_path / "model.onnx", signal_spec(), tmp_path / "out", signing_key=key)
    assert "not a readable ONNX model" in str(ei.value) and "OpenVINO IR" not in str(ei.value)
