"""ONNX external data: a model whose tensors live in another file (``data_location: EXTERNAL``).

PyTorch's exporter writes weights to ``model.onnx.data`` by default; a package carries one model
file, so such a model could never load where the package is opened, and a location outside the
package (``../../etc/passwd``, an absolute path, another tenant's folder) names a file of the
machine that opens it. Build, verify and open refuse it in one line naming the tensor and location."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from model_packager import SpecMismatchError, build_package, load_trusted_keys, open_package, verify_package
from model_packager.onnx_graph import external_data
from tests.support.models import golden_inputs, make_keypair, make_signal_onnx, signal_spec
from tests.unit.test_package_bad_input import members, resign, write


def _external(src: Path, out: Path, location: str, *, which: str = "w1") -> Path:
    """``src`` with tensor ``which`` moved to ``location`` (written beside ``out`` when it is a plain
    name, so that the model loads where it was made), the others kept inside."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(str(src))
    for init in m.graph.initializer:
        if init.name == which:
            raw = numpy_helper.to_array(init).tobytes()
            if "/" not in location:
                (out.parent / location).write_bytes(raw)
            init.ClearField("float_data")
            init.ClearField("raw_data")
            init.data_location = TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
                e = init.external_data.add()
                e.key, e.value = k, v
    out.write_bytes(m.SerializeToString())
    return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ext")
    key, pub = make_keypair(tmp / "keys")
    model = make_signal_onnx(tmp / "model.onnx")
    return tmp, key, load_trusted_keys([pub]), model


def test_build_refuses_a_model_whose_weights_are_in_a_side_file(kit, tmp_path):
    """As ``torch.onnx.export`` writes by default: the side file would not be in the package."""
    import onnx

    _, key, _, model = kit
    (tmp_path / "export").mkdir()
    exported = tmp_path / "export" / "model.onnx"
    onnx.save_model(
        onnx.load(str(model)),
        str(exported),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    out = tmp_path / "out"
    with pytest.raises(SpecMismatchError) as ei:
        build_package(
            exported,
            signal_spec("machine-health", "1.0.0"),
            out,
            signing_key=key,
            golden_inputs=golden_inputs("signal"),
        )
    msg = str(ei.value)
    assert ei.value.code == "external_data"
    assert "spec for machine-health-1.0.0: model.onnx: tensor " in msg
    assert "'model.onnx.data'" in msg and "save_as_external_data=False" in msg
    assert "\n" not in msg
    assert not out.exists() or not list(out.glob("*.edgepkg"))


def _resigned(pkg: Path, key: Path, replace: dict[str, bytes], out: Path) -> Path:
    """``pkg`` with files replaced, listed with their new sizes and digests, signed again by ``key``
    (a trusted signer whose toolchain wrote the model)."""
    ents = members(pkg)
    doc = yaml.safe_load(dict((m.name, d) for m, d in ents)["manifest.yaml"])
    for f in doc["files"]:
        if f["path"] in replace:
            data = replace[f["path"]]
            f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    man = yaml.safe_dump(doc, sort_keys=False).encode()
    new = {"manifest.yaml": man, "manifest.sig": resign(man, key), **replace}
    return write(out, [(m, new.get(m.name, d)) for m, d in ents])


@pytest.mark.parametrize(
    "location", ["../../../../etc/passwd", "/etc/passwd", "../.tenants/beta/weights.bin", "golden/inputs.npz"]
)
def test_a_signed_package_whose_model_reads_another_file_is_refused_at_verify_and_open(
    kit, tmp_path, location
):
    tmp, key, trusted, model = kit
    pkg = build_package(
        model,
        signal_spec("machine-health", "1.0.0"),
        tmp_path / "good",
        signing_key=key,
        golden_inputs=golden_inputs("signal"),
    )
    hostile = _external(model, tmp_path / "hostile.onnx", location).read_bytes()
    bad = _resigned(pkg, key, {"model.onnx": hostile}, tmp_path / "machine-health-1.0.0.edgepkg")
    for refuse in (
        lambda: verify_package(bad, trusted),
        lambda: open_package(bad, tmp_path / "opened", trusted),
    ):
        with pytest.raises(SpecMismatchError) as ei:
            refuse()
        assert ei.value.code == "external_data", str(ei.value)
        assert "package machine-health-1.0.0.edgepkg: model.onnx: tensor 'w1' " in str(ei.value)
        assert repr(location) in str(ei.value)
    assert not (tmp_path / "opened").exists()


def test_the_fp32_form_is_held_to_the_same_rule(kit, tmp_path):
    tmp, key, trusted, model = kit
    pkg = build_package(
        model,
        signal_spec("machine-health", "1.0.0"),
        tmp_path / "good",
        signing_key=key,
        golden_inputs=golden_inputs("signal"),
        fp32_model=model,
    )
    verify_package(pkg, trusted)
    hostile = _external(model, tmp_path / "hostile.onnx", "/etc/hostname").read_bytes()
    bad = _resigned(pkg, key, {"model.fp32.onnx": hostile}, tmp_path / "machine-health-1.0.0.edgepkg")
    with pytest.raises(
        SpecMismatchError, match=r"\(FP32 form\): model.fp32.onnx: tensor 'w1' .*'/etc/hostname'"
    ):
        open_package(bad, tmp_path / "opened", trusted)


def test_external_tensors_are_found_in_subgraphs_constants_and_functions(tmp_path):
    """Not only top-level initializers: a Constant node's tensor inside a Loop body, and a local
    function's Constant, are read by the engines from the same place."""
    from onnx import TensorProto, helper

    def ext_tensor(name: str, loc: str):
        t = helper.make_tensor(name, TensorProto.FLOAT, [1], [1.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", loc
        return t

    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Constant", [], ["k"], value=ext_tensor("in_body", "../body.bin")),
            helper.make_node("Add", ["xi", "k"], ["xo"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("xi", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("xo", TensorProto.FLOAT, [1]),
        ],
    )
    fn = helper.make_function(
        "local",
        "F",
        ["a"],
        ["b"],
        [
            helper.make_node("Constant", [], ["c"], value=ext_tensor("in_fn", "/fn.bin")),
            helper.make_node("Add", ["a", "c"], ["b"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["n", "", "x"], ["y0"], body=body),
            helper.make_node("F", ["y0"], ["y"], domain="local"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("n", TensorProto.INT64, [], [2])],
    )
    m = helper.make_model(
        graph, functions=[fn], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    )
    assert external_data(m.SerializeToString()) == [("in_body", "../body.bin"), ("in_fn", "/fn.bin")]
    plain = make_signal_onnx(tmp_path / "plain.onnx").read_bytes()
    assert external_data(plain) == []

    def field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
        def varint(n: int) -> bytes:
            out = b""
            while n >= 0x80:
                out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
            return out + bytes([n])

        return varint(number << 3 | 2) + varint(len(payload)) + payload

    sub = b""
    for _ in range(120):  # graph > node (1) > attribute (5) > g (6) > graph ...: more than parsers read
        sub = field(1, field(5, field(6, sub)))
    deep = field(7, sub)  # (onnx itself cannot even build it)
    with pytest.raises(ValueError, match="nested deeper"):  # refused as unreadable, not a RecursionError
        external_data(deep)
