"""Operator sets other than ``ai.onnx``, and nodes of a domain no engine implements.

A model declaring ``ai.onnx.ml`` 99 (or ``com.microsoft`` 2) fails to load on ONNX Runtime ("Current official
support for domain ai.onnx.ml is till opset 5") while OpenVINO runs it: signed with golden outputs recorded on
OpenVINO, it verified and served on an OpenVINO gateway and failed on the others. A node of a custom domain
(``com.evil``) verified and then failed to load on every gateway, with the engine's raw error. The graph check
(build, verify, the agent's install) now refuses both naming the domain and its opset. What the ONNX Runtime
quantizer declares in every INT8 model (``ai.onnx.ml`` 5, ``com.microsoft`` 1, ...), a contrib operator
(``com.microsoft`` Gelu) and a custom domain declared but not used keep passing."""

from __future__ import annotations

import numpy as np
import pytest

from model_packager import SpecMismatchError, build_package, load_trusted_keys, verify_package
from tests.support.models import golden_inputs, make_keypair, make_package, make_signal_onnx, signal_spec
from tests.support.swaps import swap_once, with_model

# what onnxruntime.quantization's quantize_static declares in the trainer's INT8 models
QUANTIZER_OPSETS = [
    ("ai.onnx.ml", 5),
    ("ai.onnx.training", 1),
    ("ai.onnx.preview", 1),
    ("com.microsoft", 1),
    ("ai.onnx.preview.training", 1),
    ("com.microsoft.experimental", 1),
    ("com.microsoft.nchwc", 1),
    ("org.pytorch.aten", 1),
]


def _variant(src, out, opsets, op: tuple[str, str] | None = None):
    """``src`` with ``opsets`` declared besides its own, and its first Relu replaced by ``op`` (domain, type)."""
    import onnx
    from onnx import helper

    m = onnx.load(str(src))
    m.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets)
    if op is not None:
        i, relu = next((i, n) for i, n in enumerate(m.graph.node) if n.op_type == "Relu")
        m.graph.node.remove(relu)
        m.graph.node.insert(i, helper.make_node(op[1], list(relu.input), list(relu.output), domain=op[0]))
    onnx.save(m, str(out))
    return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx-domains")
    key, pub = make_keypair(tmp / "keys")
    v1 = make_package(tmp, kind="signal", version="1.0.0", key=key)
    return tmp, key, pub, v1, make_signal_onnx(tmp / "src.onnx")


def _build(model, key, out):
    return build_package(
        model,
        signal_spec("machine-health", "1.1.0"),
        out,
        signing_key=key,
        golden_inputs=golden_inputs("signal"),
    )


@pytest.mark.parametrize(
    ("opsets", "op", "said"),
    [
        (
            [("ai.onnx.ml", 99)],
            None,
            "ONNX opset 99 (ai.onnx.ml) is newer than what every gateway's ONNX Runtime",
        ),
        ([("com.microsoft", 2)], None, "ONNX opset 2 (com.microsoft) is newer than"),
        (
            [("com.evil", 1)],
            ("com.evil", "Foo"),
            "node 'Foo' is of operator domain 'com.evil' (opset 1), which no engine the agent runs implements",
        ),
    ],
    ids=["ai.onnx.ml-99", "com.microsoft-2", "custom-op"],
)
def test_another_domains_newer_opset_or_a_custom_operator_is_refused_at_build_naming_it(
    kit, tmp_path, opsets, op, said
):
    _, key, _, _, src = kit
    model = _variant(src, tmp_path / "model.onnx", opsets, op)
    with pytest.raises(SpecMismatchError) as ei:
        _build(model, key, tmp_path / "out")
    assert said in str(ei.value), str(ei.value)
    if opsets[0][0] != "com.evil":
        assert f"{opsets[0][0]} {dict(QUANTIZER_OPSETS)[opsets[0][0]]} at most" in str(ei.value), str(
            ei.value
        )


def test_what_the_quantizer_declares_a_contrib_operator_and_an_unused_custom_domain_keep_passing(
    kit, tmp_path
):
    _, key, pub, _, src = kit
    model = _variant(
        src, tmp_path / "model.onnx", [*QUANTIZER_OPSETS, ("com.evil", 3)], ("com.microsoft", "Gelu")
    )
    pkg = _build(model, key, tmp_path / "out")
    verify_package(pkg, load_trusted_keys([pub]))


def test_a_custom_operator_in_a_signed_package_is_refused_at_verify_naming_it(kit, tmp_path):
    """Golden outputs recorded from the model's own graph before the node was swapped (a packager that did not
    check): the former code verified it, and every gateway then failed to load it."""
    _, key, pub, _, src = kit
    bad_model = _variant(src, tmp_path / "model.onnx", [("com.evil", 1)], ("com.evil", "Foo"))
    good = make_package(tmp_path, kind="signal", version="1.1.0", key=key)
    bad = with_model(good, key, bad_model, {"anomaly_score": np.zeros((4, 1), np.float32)}, tmp_path / "bad")
    with pytest.raises(SpecMismatchError, match=r"node 'Foo' is of operator domain 'com.evil' \(opset 1\)"):
        verify_package(bad, load_trusted_keys([pub]))


async def test_a_signed_ml_opset_99_package_is_refused_by_an_openvino_agent_and_the_old_model_serves(
    kit, tmp_path
):
    """Its golden outputs recorded on OpenVINO, which runs it: the former code verified it and swapped it into
    the OpenVINO slot, where ONNX Runtime gateways failed to load it."""
    pytest.importorskip("openvino")
    from model_packager import runtimes

    _, key, pub, v1, src = kit
    hostile = _variant(src, tmp_path / "model.onnx", [("ai.onnx.ml", 99)])
    ov = runtimes.load("openvino")
    core = ov.Core()
    compiled = core.compile_model(runtimes.ov_read(hostile, core), "CPU")
    got = compiled(golden_inputs("signal"))
    expected = {o.get_any_name(): np.asarray(got[o]) for o in compiled.outputs}
    good = make_package(tmp_path, kind="signal", version="1.1.0", key=key)
    bad = with_model(good, key, hostile, expected, tmp_path / "bad")
    trusted = load_trusted_keys([pub])
    with pytest.raises(SpecMismatchError, match=r"ONNX opset 99 \(ai.onnx.ml\) is newer than"):
        verify_package(bad, trusted)
    outcome, version = await swap_once("signal", v1, bad, "openvino", tmp_path / "data", trusted)
    assert not outcome.ok, outcome
    assert "ONNX opset 99 (ai.onnx.ml) is newer than" in outcome.reason, outcome
    assert version == "1.0.0"


def _with_tiny_initializers(src, out, n: int):
    """``src`` with ``n`` more one-float initializers in its main graph, written as raw protobuf (onnx's helpers
    take minutes for a million)."""
    import onnx

    def varint(v: int) -> bytes:
        b = bytearray()
        while True:
            b.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(b)

    def field(num: int, payload: bytes) -> bytes:
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    m = onnx.load(str(src))
    graph = m.graph.SerializeToString() + b"".join(
        field(5, b"\x08\x01\x10\x01" + field(8, b"k%d" % i) + field(9, b"\0\0\0\0")) for i in range(n)
    )
    m.ClearField("graph")
    out.write_bytes(m.SerializeToString() + field(7, graph))
    return out


def test_a_model_of_more_initializers_than_any_network_has_is_refused_before_each_is_read(kit, tmp_path):
    """Millions of tiny initializers in a package's 2 GB: each was read in Python at build, verify and every
    agent's install (1,000,000: 23 s and 110 MB for their names before any engine ran)."""
    from model_packager.onnx_graph import MAX_INITIALIZERS

    _, key, _, _, src = kit
    model = _with_tiny_initializers(src, tmp_path / "model.onnx", MAX_INITIALIZERS + 1)
    with pytest.raises(SpecMismatchError) as ei:
        _build(model, key, tmp_path / "out")
    assert ei.value.code == "bad_model", ei.value
    assert "its main graph holds more than 250,000 initializers" in str(ei.value), str(ei.value)
    ok = _with_tiny_initializers(src, tmp_path / "ok.onnx", 1000)
    _build(ok, key, tmp_path / "ok")  # a thousand more still builds
