"""A model output that is no tensor of numbers (a sequence, a map, text), or has no row per item, beside the
declared ones.

Every output of the model comes back from each run and is compared with the golden one. A sequence output
(a scikit-learn classifier's ZipMap is a sequence of maps) passed ``build`` and then failed every agent's
golden check (its items stacked on another axis: "output 'seq' shape [4, 1, 6], expected [1, 4, 6]"): a
package no gateway takes. A text output failed the build with "could not convert string to float", naming
nothing. Both are refused by the graph check (build, verify, the agent), naming the output and its kind."""

from __future__ import annotations

import pytest

from model_packager import GoldenError, SpecMismatchError, build_package
from tests.support.models import golden_inputs, make_keypair, make_vision_onnx, vision_spec


def _with_output(src, out, kind: str):
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(src))
    g = m.graph
    if kind in ("scalar", "over-the-batch"):  # the logits' largest value: of the whole batch, of each class
        axes = {"scalar": None, "over-the-batch": [0]}[kind]
        g.node.append(
            helper.make_node(
                "ReduceMax", ["logits"], ["extra"], keepdims=0, **({"axes": axes} if axes else {})
            )
        )
        g.output.append(
            helper.make_tensor_value_info("extra", TensorProto.FLOAT, [] if axes is None else [6])
        )
    elif kind in ("twice", "first-row"):  # the logits of every row given twice, or of the first row only
        for n in g.node:
            n.output[:] = ["logits0" if o == "logits" else o for o in n.output]
        if kind == "twice":
            g.node.append(helper.make_node("Concat", ["logits0", "logits0"], ["logits"], axis=0))
        else:
            g.initializer.extend(
                helper.make_tensor(name, TensorProto.INT64, [1], [v])
                for name, v in (("start", 0), ("end", 1), ("axis", 0))
            )
            g.node.append(helper.make_node("Slice", ["logits0", "start", "end", "axis"], ["logits"]))
    elif kind == "sequence":
        g.node.append(helper.make_node("SequenceConstruct", ["logits"], ["extra"]))
        g.output.append(helper.make_tensor_sequence_value_info("extra", TensorProto.FLOAT, None))
    else:
        text = helper.make_tensor("t", TensorProto.STRING, [1], [b"ok"])
        g.node.append(helper.make_node("Constant", [], ["extra"], value=text))
        g.output.append(helper.make_tensor_value_info("extra", TensorProto.STRING, [1]))
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


def _build_refused(tmp_path, kind: str, error: type[Exception]) -> str:
    """The message of ``error`` that building the vision model with an output of ``kind`` beside its own raised."""
    key, _ = make_keypair(tmp_path / "keys")
    model = _with_output(
        make_vision_onnx(tmp_path / "src.onnx", heatmap=False), tmp_path / "model.onnx", kind
    )
    with pytest.raises(error) as ei:
        build_package(
            model,
            vision_spec(heatmap=False),
            tmp_path / "out",
            signing_key=key,
            golden_inputs=golden_inputs("vision"),
        )
    return str(ei.value)


@pytest.mark.parametrize("kind,said", [("sequence", "a sequence"), ("text", "a text tensor")])
def test_an_output_that_is_no_tensor_of_numbers_is_refused_at_build_naming_it(tmp_path, kind, said):
    msg = _build_refused(tmp_path, kind, SpecMismatchError)
    assert f"model.onnx output 'extra' is {said}, not a tensor of numbers the agent reads" in msg, msg
    assert "options={'zipmap': False}" in msg
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.edgepkg"))


@pytest.mark.parametrize("kind,shape", [("scalar", []), ("over-the-batch", [6])])
def test_an_output_without_a_row_per_item_is_refused_at_build_naming_it(tmp_path, kind, shape):
    """Built from the golden batch run at once, then refused by every agent, which runs items one by one and
    stacks their outputs ("output 'extra' shape [24], expected [6]")."""
    msg = _build_refused(tmp_path, kind, GoldenError)
    assert (
        f"output 'extra' has shape {shape} for a golden batch of 4 rows: each output needs a row per item"
        in msg
    )


@pytest.mark.parametrize("kind,shape", [("twice", [8, 6]), ("first-row", [1, 6])])
def test_an_output_of_other_rows_than_the_golden_batch_fed_is_refused_at_build(tmp_path, kind, shape):
    """Every output of as many rows as each other, but not as the 4 fed: built, then refused by every agent
    ("output 'logits' deviates by up to ...", "shape [4, 6], expected [1, 6]")."""
    msg = _build_refused(tmp_path, kind, GoldenError)
    assert (
        f"output 'logits' has shape {shape} for a golden batch of 4 rows: each output needs a row per item"
        in msg
    ), msg


@pytest.mark.parametrize(
    "name,said",
    [
        ("x" * 60_000, "... is 60,000 characters:"),
        ("flag\nset", "'flag\\nset' is 8 characters and holds a control"),
    ],
)
def test_an_output_whose_name_no_result_should_carry_is_refused_at_build_naming_it(tmp_path, name, said):
    """Each result carries every output of up to 16 values keyed by its name, declared or not: an output named
    with 60,000 characters was built and installed, and every result carried the 60 KB key (over MQTT, in the
    outbox, on the status page); one with a newline broke the lines it is named in."""
    import onnx
    from onnx import TensorProto, helper

    key, _ = make_keypair(tmp_path / "keys")
    m = onnx.load(str(make_vision_onnx(tmp_path / "src.onnx", heatmap=False)))
    m.graph.node.append(helper.make_node("Identity", ["logits"], [name]))
    m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 6]))
    onnx.save(m, str(tmp_path / "model.onnx"))
    with pytest.raises(SpecMismatchError) as ei:
        build_package(
            tmp_path / "model.onnx",
            vision_spec(heatmap=False),
            tmp_path / "out",
            signing_key=key,
            golden_inputs=golden_inputs("vision"),
        )
    msg = str(ei.value)
    assert "model.onnx output '" in msg and said in msg, msg
    assert "an output's name is at most 255 printable characters" in msg, msg


def test_a_model_of_more_outputs_than_a_result_should_carry_is_refused_at_build(tmp_path):
    """Each result carries every output of up to 16 values: a graph of 2,000 outputs (intermediate tensors left
    in) was built and installed, and every result was 145 KB of them. 65 are refused, 64 built."""
    import onnx
    from onnx import TensorProto, helper

    key, _ = make_keypair(tmp_path / "keys")
    m = onnx.load(str(make_vision_onnx(tmp_path / "src.onnx", heatmap=False)))
    for i in range(64):
        m.graph.node.append(helper.make_node("Identity", ["logits"], [f"o{i}"]))
        m.graph.output.append(helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, ["batch", 6]))
    onnx.save(m, str(tmp_path / "model.onnx"))

    def build(out):
        return build_package(
            tmp_path / "model.onnx",
            vision_spec(heatmap=False),
            tmp_path / out,
            signing_key=key,
            golden_inputs=golden_inputs("vision"),
        )

    with pytest.raises(SpecMismatchError) as ei:
        build("65")
    assert "model.onnx has 65 outputs: at most 64 (each result carries every output" in str(ei.value), (
        ei.value
    )
    m.graph.output.pop()
    onnx.save(m, str(tmp_path / "model.onnx"))
    assert build("64")
