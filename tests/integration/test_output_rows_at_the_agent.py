"""A signed package whose model gives another number of rows than it is fed (each row twice).

The build refuses such a model (``tests/unit/test_package_output_kinds.py``); one signed elsewhere, its
golden outputs recorded from the model run on the whole batch, was refused by the agent as deviating from its
golden values "on this CPU" (``output 'logits' deviates by up to ...``): a numerical difference of the gateway,
by those words, where the model's batch size is wrong on every CPU. The refusal now says so."""

from __future__ import annotations

from model_packager import load_trusted_keys
from tests.support.models import golden_inputs, make_keypair, make_package, make_vision_onnx
from tests.support.swaps import swap_once, with_model
from tests.unit.test_package_output_kinds import _with_output


async def test_a_model_giving_each_row_twice_is_refused_by_the_agent_naming_its_rows(tmp_path):
    import onnxruntime as ort

    key, pub = make_keypair(tmp_path / "keys")
    v1 = make_package(tmp_path / "v1", kind="vision", version="1.0.0", key=key, heatmap=False)
    good = make_package(tmp_path / "v2", kind="vision", version="1.1.0", key=key, heatmap=False)
    hostile = _with_output(
        make_vision_onnx(tmp_path / "src.onnx", heatmap=False), tmp_path / "m.onnx", "twice"
    )
    sess = ort.InferenceSession(str(hostile), providers=["CPUExecutionProvider"])
    inputs = golden_inputs("vision")
    # 8 rows for the 4 fed, as a packager recorded them
    expected = {"logits": sess.run(["logits"], inputs)[0]}
    bad = with_model(good, key, hostile, expected, tmp_path / "bad")
    outcome, version = await swap_once(
        "inspect", v1, bad, "onnxruntime", tmp_path / "data", load_trusted_keys([pub])
    )
    assert not outcome.ok and outcome.stage == "golden", outcome
    reason = outcome.reason or ""
    # 'output 'logits' deviates by up to ...' on the former code
    assert (
        "the model gives another number of rows than it is fed: output 'logits' gives 8 rows for the 4 "
        in reason
    ), outcome
    # 'golden test failed on this CPU (...)' on the former code: the gateway blamed for the package's defect
    assert reason.startswith("golden test failed, a defect of the package on every CPU: "), outcome
    assert "on this CPU" not in reason, outcome
    assert version == "1.0.0"
