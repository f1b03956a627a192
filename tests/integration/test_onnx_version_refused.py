"""A model of an ONNX opset or IR version newer than ONNX Runtime runs (opset 99, IR version 99).

OpenVINO runs such a model; ONNX Runtime refuses to load it. A package holding one failed its build on ONNX
Runtime's own error (naming no fix), and, signed elsewhere with golden outputs recorded on OpenVINO, was
installed and served by an agent configured for OpenVINO while every ONNX Runtime gateway refused it: the same
package behaved differently by gateway. The graph check (build, verify, the agent's install, whichever engine)
now refuses it naming the version and the newest one taken."""

from __future__ import annotations

import numpy as np
import pytest

from model_packager import SpecMismatchError, build_package, load_trusted_keys, verify_package
from tests.support.models import golden_inputs, make_keypair, make_package, make_signal_onnx, signal_spec
from tests.support.swaps import swap_once, with_model


def _stamped(src, out, *, opset: int = 17, ir: int = 8):
    import onnx

    m = onnx.load(str(src))
    m.opset_import[0].version = opset
    m.ir_version = ir
    onnx.save(m, str(out))
    return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx-version")
    key, pub = make_keypair(tmp / "keys")
    v1 = make_package(tmp, kind="signal", version="1.0.0", key=key)
    return tmp, key, pub, v1, make_signal_onnx(tmp / "src.onnx")


@pytest.mark.parametrize(
    ("opset", "ir", "said"), [(99, 8, "ONNX opset 99 (ai.onnx)"), (17, 99, "ONNX IR version 99")]
)
def test_a_model_newer_than_onnx_runtime_runs_is_refused_at_build_naming_the_version(
    kit, tmp_path, opset, ir, said
):
    _, key, _, _, src = kit
    model = _stamped(src, tmp_path / "model.onnx", opset=opset, ir=ir)
    with pytest.raises(SpecMismatchError) as ei:
        build_package(
            model,
            signal_spec("machine-health", "1.1.0"),
            tmp_path / "out",
            signing_key=key,
            golden_inputs=golden_inputs("signal"),
        )
    msg = str(ei.value)
    assert f"model.onnx: {said} is newer than what every gateway's ONNX Runtime runs" in msg, msg
    assert "IR version 10, opset 21 at most" in msg, msg


async def test_a_signed_opset_99_package_is_refused_by_an_openvino_agent_and_the_old_model_serves(
    kit, tmp_path
):
    """Its golden outputs recorded on OpenVINO (a packager that did not check, a valid signature): the former
    code verified it and swapped it into the OpenVINO slot, where ONNX Runtime gateways failed to load it."""
    pytest.importorskip("openvino")
    from model_packager import runtimes

    _, key, pub, v1, src = kit
    hostile = _stamped(src, tmp_path / "model.onnx", opset=99)
    inputs = golden_inputs("signal")
    ov = runtimes.load("openvino")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(hostile)), "CPU")
    got = compiled(inputs)
    expected = {o.get_any_name(): np.asarray(got[o]) for o in compiled.outputs}
    good = make_package(tmp_path, kind="signal", version="1.1.0", key=key)
    bad = with_model(good, key, hostile, expected, tmp_path / "bad")
    trusted = load_trusted_keys([pub])
    with pytest.raises(SpecMismatchError, match=r"ONNX opset 99 \(ai.onnx\) is newer than"):
        verify_package(bad, trusted)
    outcome, version = await swap_once("signal", v1, bad, "openvino", tmp_path / "data", trusted)
    assert not outcome.ok, outcome
    assert "ONNX opset 99 (ai.onnx) is newer than" in outcome.reason, outcome
    assert version == "1.0.0"
