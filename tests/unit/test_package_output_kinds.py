"""A model output that is no tensor of numbers (a sequence, a map, text), beside the declared ones.

Every output of the model comes back from each run and is compared with the golden one. A sequence output
(a scikit-learn classifier's ZipMap is a sequence of maps) passed ``build`` and then failed every agent's
golden check (its items stacked on another axis: "output 'seq' shape [4, 1, 6], expected [1, 4, 6]"): a
package no gateway takes. A text output failed the build with "could not convert string to float", naming
nothing. Both are refused by the graph check (build, verify, the agent), naming the output and its kind."""

from __future__ import annotations

import pytest

from model_packager import SpecMismatchError, build_package
from tests.support.models import golden_inputs, make_keypair, make_vision_onnx, vision_spec


def _with_output(src, out, kind: str):
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(src))
    g = m.graph
    if kind == "sequence":
        g.node.append(helper.make_node("SequenceConstruct", ["logits"], ["extra"]))
        g.output.append(helper.make_tensor_sequence_value_info("extra", TensorProto.FLOAT, None))
    else:
        text = helper.make_tensor("t", TensorProto.STRING, [1], [b"ok"])
        g.node.append(helper.make_node("Constant", [], ["extra"], value=text))
        g.output.append(helper.make_tensor_value_info("extra", TensorProto.STRING, [1]))
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize("kind,said", [("sequence", "a sequence"), ("text", "a text tensor")])
def test_an_output_that_is_no_tensor_of_numbers_is_refused_at_build_naming_it(tmp_path, kind, said):
    key, _ = make_keypair(tmp_path / "keys")
    model = _with_output(
        make_vision_onnx(tmp_path / "src.onnx", heatmap=False), tmp_path / "model.onnx", kind
    )
    with pytest.raises(SpecMismatchError) as ei:
        build_package(
            model,
            vision_spec(heatmap=False),
            tmp_path / "out",
            signing_key=key,
            golden_inputs=golden_inputs("vision"),
        )
    msg = str(ei.value)
    assert f"model.onnx output 'extra' is {said}, not a tensor of numbers the agent reads" in msg, msg
    assert "options={'zipmap': False}" in msg
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.edgepkg"))
