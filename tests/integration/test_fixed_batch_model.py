"""A model whose batch axis is fixed at 1, as `torch.onnx.export(..., external_data=False)` writes it without
`dynamic_shapes`: the agent feeds it one frame at a time and serves it, but `build` fed the golden batch at once
and failed with ONNX Runtime's own words (`unexpected InvalidArgument: ... Got: 2 Expected: 1`), so the export the
docs lead to could not be packaged. The golden batch now runs in the rows the model takes, on every engine, at
build and at `verify --run`, and the package installs and serves on a real slot."""

from __future__ import annotations

import numpy as np
import pytest

from model_packager import build_package, load_trusted_keys, open_package, run_golden
from model_packager.golden import available_engines
from tests.support.models import golden_inputs, make_keypair, make_vision_onnx, vision_spec
from tests.support.swaps import swap_once


def _batch_of_one(src, out):
    import onnx

    m = onnx.load(str(src))
    for v in (*m.graph.input, *m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(m, str(out))
    return out


async def test_a_model_of_fixed_batch_one_is_packaged_verified_and_served(tmp_path):
    import onnxruntime as ort

    key, pub = make_keypair(tmp_path / "keys")
    src = make_vision_onnx(tmp_path / "src.onnx", heatmap=False)
    model = _batch_of_one(src, tmp_path / "model.onnx")
    inputs = golden_inputs("vision", n=4)
    engines = available_engines()
    pkg = build_package(
        model,
        vision_spec(heatmap=False),
        tmp_path / "out",
        signing_key=key,
        golden_inputs=inputs,
        openvino="openvino" in engines,
    )
    trusted = load_trusted_keys([pub])
    opened = open_package(pkg, tmp_path / "opened", trusted)
    with np.load(opened.golden_expected) as z:
        expected = z["logits"]
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    one_by_one = np.concatenate(
        [sess.run(["logits"], {"image": inputs["image"][i : i + 1]})[0] for i in range(4)]
    )
    np.testing.assert_allclose(expected, one_by_one, rtol=0, atol=1e-6)  # every item, each alone
    results = run_golden(opened)  # `verify --run`: the golden batch on every installed engine
    assert set(results) == set(engines), results
    first = build_package(
        src,
        vision_spec(version="0.9.0", heatmap=False),
        tmp_path / "v0",
        signing_key=key,
        golden_inputs=inputs,
    )
    outcome, version = await swap_once("vision", first, pkg, "onnxruntime", tmp_path / "data", trusted)
    assert outcome.ok, outcome
    assert version == "1.0.0"


def test_a_model_of_fixed_batch_one_gets_synthetic_golden_inputs_at_build(tmp_path):
    """Without --golden, build makes a batch of two synthetic items: they too run one at a time."""
    key, _ = make_keypair(tmp_path / "keys")
    model = _batch_of_one(make_vision_onnx(tmp_path / "src.onnx", heatmap=False), tmp_path / "model.onnx")
    pkg = build_package(model, vision_spec(heatmap=False), tmp_path / "out", signing_key=key)
    assert pkg.is_file()


def test_a_model_of_fixed_batch_two_with_an_odd_golden_batch_still_says_what_is_wrong(tmp_path):
    """Rows that do not divide into the model's fixed batch are run at once, as before: a model of batch 2 is
    refused against a spec of one row per frame before any run (it would fail every frame)."""
    import onnx

    key, _ = make_keypair(tmp_path / "keys")
    m = onnx.load(str(make_vision_onnx(tmp_path / "src.onnx", heatmap=False)))
    for v in (*m.graph.input, *m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(m, str(tmp_path / "model.onnx"))
    from model_packager import SpecMismatchError

    with pytest.raises(SpecMismatchError, match="one row per frame"):
        build_package(tmp_path / "model.onnx", vision_spec(heatmap=False), tmp_path / "out", signing_key=key)


def _batch_dependent(tmp_path):
    """Each image centred on the mean of the batch it runs in (what a BatchNorm exported in training mode does)."""
    import onnx
    from onnx import helper

    m = onnx.load(str(make_vision_onnx(tmp_path / "src.onnx", heatmap=False)))
    for node in m.graph.node:
        node.input[:] = ["centred" if i == "image" else i for i in node.input]
    m.graph.node.insert(0, helper.make_node("ReduceMean", ["image"], ["batch_mean"], axes=[0]))  # (opset 17)
    m.graph.node.insert(1, helper.make_node("Sub", ["image", "batch_mean"], ["centred"]))
    onnx.save(m, str(tmp_path / "model.onnx"))
    return tmp_path / "model.onnx"


def test_a_model_whose_items_depend_on_their_batch_is_refused_at_build(tmp_path):
    """Build and `verify --run` ran the golden batch at once and passed such a model, and every agent, which runs
    each item alone, refused it, saying its golden test failed "on this CPU". Build now runs the items alone too."""
    from model_packager import GoldenError

    key, _ = make_keypair(tmp_path / "keys")
    _batch_dependent(tmp_path)
    with pytest.raises(
        GoldenError, match="depend on the other items run with it.*export the model in eval mode"
    ):
        build_package(
            tmp_path / "model.onnx",
            vision_spec(heatmap=False),
            tmp_path / "out",
            signing_key=key,
            golden_inputs=golden_inputs("vision", n=4),
        )


def test_verify_run_refuses_a_package_built_before_whose_items_depend_on_their_batch(
    tmp_path, capsys, monkeypatch
):
    """A package built before build ran the items alone passed `verify --run`, which ran the golden batch at once;
    every agent refused it. `verify --run` now judges it as build does, naming the cause and the fix. So does a
    build given the expected outputs (it took them as they were, and ran no item alone)."""
    import onnxruntime as ort

    from model_packager import GoldenError
    from model_packager import golden as golden_mod
    from model_packager.cli import main

    key, pub = make_keypair(tmp_path / "keys")
    model, inputs = _batch_dependent(tmp_path), golden_inputs("vision", n=4)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    expected = dict(zip(names, sess.run(None, inputs), strict=True))  # the batch at once, as builds did

    def build():
        return build_package(
            model,
            vision_spec(heatmap=False),
            tmp_path / "out",
            signing_key=key,
            golden_inputs=inputs,
            expected=expected,
        )

    with pytest.raises(GoldenError, match="depend on the other items run with it"):
        build()
    with monkeypatch.context() as m:  # a build of before: no item run alone
        m.setattr(golden_mod, "batch_dependence", lambda *a, **k: None)
        pkg = build()
    assert main(["verify", str(pkg), "--trust", str(pub), "--run"]) == 1
    err = capsys.readouterr().err
    assert "model.onnx: the outputs of a golden item depend on the other items run with it" in err, err
    assert "export the model in eval mode" in err, err


def test_a_tiled_model_of_fixed_batch_with_golden_rows_that_are_not_whole_frames_is_refused_saying_so(
    tmp_path,
):
    """Tiles 2x2 and a batch axis fixed at 4, golden inputs of 3 rows: build failed with ONNX Runtime's own words
    (`unexpected InvalidArgument: ... Got: 3 Expected: 4`), naming no fix."""
    import onnx

    from model_packager import GoldenError

    key, _ = make_keypair(tmp_path / "keys")
    m = onnx.load(str(make_vision_onnx(tmp_path / "src.onnx", heatmap=False)))
    for v in (*m.graph.input, *m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(m, str(tmp_path / "model.onnx"))
    spec = vision_spec(heatmap=False)
    spec["preprocessing"]["tiles"] = [2, 2]
    with pytest.raises(
        GoldenError, match="golden inputs have 3 rows, but .* takes 4 at a time.*a multiple of 4"
    ):
        build_package(
            tmp_path / "model.onnx",
            spec,
            tmp_path / "out",
            signing_key=key,
            golden_inputs=golden_inputs("vision", n=3),
        )


def test_an_openvino_golden_run_takes_one_infer_request_for_all_its_parts(tmp_path, monkeypatch):
    """A golden run on OpenVINO made an infer request per part (each item alone, then the batch: a request holds
    its own input and output tensors); one serves them all now, each part's outputs its own (copied out before the
    next part runs), as ONNX Runtime gives them."""
    if "openvino" not in available_engines():
        pytest.skip("OpenVINO is not installed")
    from model_packager import runtimes

    made: list[int] = []
    compile_for_real = runtimes.ov_compile

    class Counted:  # the compiled model, its requests counted
        def __init__(self, compiled) -> None:
            self._compiled = compiled

        def __getattr__(self, name: str):
            return getattr(self._compiled, name)

        def create_infer_request(self):
            made.append(1)
            return self._compiled.create_infer_request()

    monkeypatch.setattr(runtimes, "ov_compile", lambda *a, **k: Counted(compile_for_real(*a, **k)))
    model, inputs = make_vision_onnx(tmp_path / "m.onnx", heatmap=False), golden_inputs("vision", n=4)
    ov_batch, ov_alone = runtimes.runs("openvino", model, inputs, (None, 1))
    ort_batch, ort_alone = runtimes.runs("onnxruntime", model, inputs, (None, 1))
    assert len(made) == 1, made
    for got, want in ((ov_batch, ort_batch), (ov_alone, ort_alone)):
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=1e-4, rtol=1e-4)
