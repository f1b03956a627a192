"""An INT8-only package (no FP32 form: a user's own quantized model, docs/own-model.md) is judged on any CPU by
the verdicts it was built with, not by the build machine's INT8 values.

Its golden outputs are the build machine's INT8 run, and INT8 kernels differ by CPU: on x86 without VNNI a
sound model's class logits move by 0.1 (ONNX Runtime) where the golden tolerance allows 0.001, and a golden
item near the threshold may land on the other side. Before, the package's only form was held to the
tolerance and to every verdict, so such a package was refused on that CPU, the whole of it. Now its form is
held as an INT8 form is held to FP32: every golden item's verdict and labels (a verdict near its threshold, a
label near a tie of its top two values excepted: within ``golden.INT8_NEAR_THRESHOLD``, 5 %, of the span of
that output's golden values, so a threshold of 0 has its margin too), the spread of those outputs (a constant
score is a collapse), outputs without a verdict (heat maps, remaining life) within what another CPU's INT8
noise may do to them (test_int8_only_aux_outputs); a golden
set that leaves a decision nothing to judge is refused at build. A form that collapses there is still refused, the reason in the
summary (``/status``, the swapped event), and the package too when every engine collapses.

"Another CPU" is made two ways: golden outputs recorded a little off (re-signed, as another CPU's INT8 run),
and the real thing, the selection run under QEMU emulating a Haswell (AVX2, no VNNI). Real ONNX Runtime and
OpenVINO sessions throughout."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train import onnx_tools
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot, SlotError
from model_packager import GoldenError, build_package, load_trusted_keys
from model_packager.cpu import cpu_flags
from model_packager.golden import run_engine
from tests.integration.test_int8_parity import (
    _NO_QEMU,
    SIZE,
    _saturating_model,
    _started_status,
    haswell_selections,
)
from tests.support.models import (
    golden_inputs,
    make_keypair,
    make_signal_onnx,
    make_vision_onnx,
    signal_spec,
    vision_spec,
)
from tests.unit.test_package_external_data import _resigned

THRESHOLD = 0.46  # golden item 0 of the INT8 signal model scores 0.4621 here: NG, 0.45 % above


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8-only")
    key, pub = make_keypair(tmp / "keys")
    fp32 = make_signal_onnx(tmp / "fp32.onnx")
    int8 = onnx_tools.quantize(
        fp32, tmp / "int8.onnx", golden_inputs("signal", n=64, seed=1)["features"], "features"
    )
    inputs = golden_inputs("signal")
    here = run_engine("onnxruntime", int8, inputs)
    score = here["anomaly_score"][:, 0]
    assert score[0] >= THRESHOLD > score[0] * 0.995 and (score[1:] < 0.9 * THRESHOLD).all(), score
    return {"tmp": tmp, "key": key, "pub": pub, "int8": int8, "inputs": inputs, "here": here}


def _spec(version: str) -> dict:
    return {
        **signal_spec("machine-health", version, anomaly_threshold=THRESHOLD),
        "quantization": {"scheme": onnx_tools.SCHEME},
    }


def _recorded_elsewhere(kit, tmp_path: Path, version: str, expected: dict) -> Path:
    """The package as built here, its golden outputs replaced by another machine's and signed again."""
    pkg = build_package(
        kit["int8"], _spec(version), tmp_path / version, signing_key=kit["key"], golden_inputs=kit["inputs"]
    )
    buf = io.BytesIO()
    np.savez(buf, **expected)
    return _resigned(
        pkg, kit["key"], {"golden/expected.npz": buf.getvalue()}, tmp_path / f"mh-{version}.edgepkg"
    )


def _built_with(kit, tmp_path: Path, version: str, expected: dict) -> Path:
    """``build_package`` given golden outputs recorded on another machine (``--expected``)."""
    return build_package(
        kit["int8"],
        _spec(version),
        tmp_path / version,
        signing_key=kit["key"],
        golden_inputs=kit["inputs"],
        expected=expected,
    )


def _slot(kit, tmp_path: Path, pkg: Path, **cfg) -> ModelSlot:
    # the key loaded here: the slot installs in this process, with no install child (a new interpreter, ~0.5 CPU s
    # a start); what is judged here is the check of the forms, not the install (test_model_slot's)
    keys = load_trusted_keys([kit["pub"]])
    return ModelSlot("health", ModelConfig(package=str(pkg), **cfg), tmp_path / "agent", keys)


def test_an_int8_only_package_whose_item_near_the_threshold_flips_on_another_cpu_serves_one_far_from_it_does_not(
    kit, tmp_path
):
    # recorded where INT8 ran 0.5 % lower (another CPU's kernels): item 0 was OK there, 0.05 % below the
    # threshold; here it is NG. Every other output is within the tolerance.
    other_cpu = {k: v * np.float32(0.995) for k, v in kit["here"].items()}
    pkg = _recorded_elsewhere(kit, tmp_path, "1.0.0", other_cpu)
    slot = _slot(kit, tmp_path, pkg)

    async def run():
        await slot.start()  # before: SlotError, "verdict differs from the package's on golden item 0"
        st = slot.status()
        await slot.stop()
        return st

    st = asyncio.run(run())
    assert st["version"] == "1.0.0" and st["form"] == "int8", st
    trials = st["selection"]["trials"]
    assert trials and all(t["ok"] and t["form"] == "int8" for t in trials), trials
    assert all(t["agreement"] == pytest.approx(0.75) for t in trials), trials  # item 0's verdict differs
    # the same recorded outputs given to the build: signed (before: GoldenError, onnxruntime does not
    # reproduce the golden outputs)
    assert _built_with(kit, tmp_path, "1.0.1", other_cpu).is_file()

    # recorded 10 % lower: item 0 was OK there, 9.6 % below the threshold: not another CPU's INT8 noise,
    # refused at load and at build, the item and both verdicts named
    far = {**kit["here"], "anomaly_score": kit["here"]["anomaly_score"] * np.float32(0.9)}
    pkg = _recorded_elsewhere(kit, tmp_path, "2.0.0", far)
    with pytest.raises(SlotError) as ei:
        asyncio.run(_slot(kit, tmp_path / "far", pkg).start())
    msg = str(ei.value)
    assert "verdict differs from the package's on golden item 0: NG (" in msg, msg
    assert "score 0.46" in msg and "where the package's golden outputs give OK (" in msg, msg
    with pytest.raises(GoldenError, match="golden item 0"):
        _built_with(kit, tmp_path, "2.0.1", far)


def int8_only_packages(tmp: Path, key: Path, variants: dict[str, tuple[str, bool, str]]) -> dict[str, str]:
    """INT8-only packages (OpenVINO IR too) built here from INT8 ONNX files, by name: (model, 7-bit weights,
    activations ``s8``/``u8``); model ``own``: the test part CNN, ``sat``: the model whose first convolution
    saturates without VNNI (test_int8_parity)."""
    calib = golden_inputs("vision", n=48, width=SIZE, height=SIZE, seed=1)["image"]
    inputs = golden_inputs("vision", n=16, width=SIZE, height=SIZE, seed=2)
    spec = {
        **vision_spec("own-part", "1.0.0", width=SIZE, height=SIZE),
        "quantization": {"scheme": onnx_tools.SCHEME},
    }
    models = {
        "own": make_vision_onnx(tmp / "own.onnx", width=SIZE, height=SIZE, seed=3),
        "sat": _saturating_model(tmp / "sat.onnx"),
    }
    pkgs = {}
    for i, (name, (model, seven, acts)) in enumerate(variants.items()):
        int8 = onnx_tools.quantize(
            models[model], tmp / f"int8-{i}.onnx", calib, "image", seven_bit_weights=seven, activations=acts
        )
        built = build_package(
            int8, spec, tmp / f"pkg-{i}", signing_key=key, golden_inputs=inputs, openvino=True
        )
        pkgs[name] = str(built)
    return pkgs


# ---- a real CPU without VNNI, emulated ------------------------------------------------------------------

# the INT8-only packages selected under QEMU emulating a Haswell (``haswell_selections``): the part CNN's INT8
# form with full 8-bit weights and s8 activations, and the saturating model's with u8 activations
HASWELL_VARIANTS = {"sound": ("own", False, "s8"), "collapsed": ("sat", False, "u8")}


@_NO_QEMU
@pytest.mark.skipif(
    "avx512_vnni" not in cpu_flags() and "avx_vnni" not in cpu_flags(),
    reason="the packages must be built on a CPU with VNNI for the emulated AVX2 CPU to differ",
)
@pytest.mark.timeout(600)
def test_on_an_avx2_cpu_without_vnni_a_sound_int8_only_package_serves_and_a_collapsed_one_is_refused(
    tmp_path_factory,
):
    """Built here (VNNI) from INT8 ONNX files quantized with full 8-bit weights, as a user's own tools do:
    the part CNN's INT8 form gives the build's verdicts on Haswell through ONNX Runtime (its logits 0.1 off,
    past the tolerance) and OpenVINO (its heat map 1.7 off on single cells, INT8 noise: served too); a saturating
    model's logits collapse on both and its heat map moves wholesale."""
    # HASWELL_VARIANTS' packages, selected with test_int8_parity's in one emulated process
    out = haswell_selections(tmp_path_factory)
    assert "avx2" in out["cpu_flags"] and "avx512_vnni" not in out["cpu_flags"]

    # before: refused, "int8 on onnxruntime: output 'logits' deviates by up to 0.0961"
    sound = out["int8_only.sound"]
    assert "refused" not in sound, sound
    assert sound["form"] == "int8", sound  # on the faster engine: both pass now
    trials = {t["engine"]: t for t in sound["trials"]}
    assert trials["onnxruntime"]["ok"] and trials["onnxruntime"]["agreement"] == 1.0
    assert trials["onnxruntime"]["deviation"] > 0.01  # past the golden tolerance: the other CPU's INT8
    # before: openvino off, "output 'heatmap' deviates by up to 1.67 (atol 0.001, rtol 0.01)"
    assert trials["openvino"]["ok"] and trials["openvino"]["deviation"] > 0.1, trials["openvino"]
    assert "INT8 off on this CPU" not in sound["summary"], sound

    collapsed = out["int8_only.collapsed"]  # every engine off: the package is refused with the reasons
    assert "int8 on onnxruntime: output 'heatmap' moved wholesale" in collapsed["refused"], collapsed
    assert "int8 on openvino: output 'heatmap' moved wholesale" in collapsed["refused"], collapsed
    assert "output 'logits' collapsed" in collapsed["refused"], collapsed


# ---- the edges of the margin: a threshold at 0, near-ties of labels, too few judged items, a collapse -------


def _score_as(model: Path, out: Path, factor: float, offset: float) -> Path:
    """The INT8 signal model with its anomaly score ``factor`` * score + ``offset`` (a Mul and an Add after it):
    offset -THRESHOLD puts the threshold at 0 with the same items on each side; factor 0 a constant output."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(model))
    (node,) = [n for n in m.graph.node if "anomaly_score" in n.output]
    node.output[list(node.output).index("anomaly_score")] = "score_raw"
    m.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([factor], np.float32), "score_factor"),
            numpy_helper.from_array(np.array([offset], np.float32), "score_offset"),
        ]
    )
    m.graph.node.extend(
        [
            helper.make_node("Mul", ["score_raw", "score_factor"], ["score_scaled"]),
            helper.make_node("Add", ["score_scaled", "score_offset"], ["anomaly_score"]),
        ]
    )
    onnx.save(m, str(out))
    return out


def _package(kit, tmp_path: Path, version: str, threshold: float, model: Path | None = None, **kw) -> Path:
    spec = {**_spec(version), "outputs": signal_spec(anomaly_threshold=threshold)["outputs"]}
    return build_package(
        model or kit["int8"],
        spec,
        tmp_path / version,
        signing_key=kit["key"],
        golden_inputs=kit["inputs"],
        **kw,
    )


def _resigned_with(
    kit, tmp_path: Path, pkg: Path, name: str, expected: dict | None = None, model: bytes | None = None
) -> Path:
    """``pkg`` with its golden outputs (``expected``: their arrays) or its model replaced, signed again."""
    replace = {}
    if expected is not None:
        buf = io.BytesIO()
        np.savez(buf, **expected)
        replace["golden/expected.npz"] = buf.getvalue()
    if model is not None:
        replace["model.onnx"] = model
    return _resigned(pkg, kit["key"], replace, tmp_path / f"{name}.edgepkg")


def _serves(kit, tmp_path: Path, pkg: Path) -> dict:
    return _started_status(_slot(kit, tmp_path, pkg))


def test_an_int8_only_package_whose_threshold_is_0_keeps_a_margin_near_it(kit, tmp_path):
    """Scores less the former threshold: the threshold is 0, item 0 NG 0.0021 above it. Recorded where INT8
    ran 0.5 % lower (another CPU), item 0 is OK there, 0.0002 below. Before: the margin was 5 % of |0|, none,
    and the sound package was refused ("verdict differs ... on golden item 0"). Now 5 % of the span of the
    scores (0.018): it serves; recorded 10 % lower (item 0 0.044 below 0) it is still refused."""
    zero = _score_as(kit["int8"], tmp_path / "zero.onnx", 1.0, -THRESHOLD)
    here = run_engine("onnxruntime", zero, kit["inputs"])
    assert 0 <= here["anomaly_score"][0, 0] < 0.005, here["anomaly_score"]  # the premise
    pkg = _package(kit, tmp_path, "1.0.0", 0.0, zero)

    def recorded(factor: float) -> dict:
        score = (kit["here"]["anomaly_score"] * np.float32(factor) - np.float32(THRESHOLD)).astype(np.float32)
        return {**{k: v * np.float32(factor) for k, v in here.items()}, "anomaly_score": score}

    st = _serves(kit, tmp_path / "near", _resigned_with(kit, tmp_path, pkg, "near", expected=recorded(0.995)))
    assert st["version"] == "1.0.0" and st["form"] == "int8", st
    with pytest.raises(SlotError, match="verdict differs from the package's on golden item 0: NG"):
        _serves(kit, tmp_path / "far", _resigned_with(kit, tmp_path, pkg, "far", expected=recorded(0.9)))


def test_an_int8_only_package_whose_labels_near_a_tie_swap_on_another_cpu_serves_one_far_from_a_tie_does_not(
    kit, tmp_path
):
    """Item 2's fault logits here: bearing_outer 1.68, healthy 1.21. Recorded on another CPU with healthy at
    1.70, 0.02 above bearing_outer (its INT8 noise at a near-tie): the label differs, its verdict (the anomaly
    score) does not. Before: refused, the label held on every item with no margin. Now a label within 5 % of
    the span of the logits (0.4) of a tie is not held: it serves, the build names the items; an item whose
    label the recording puts 1.5 above the one here (item 1) is still refused."""
    near = {k: v.copy() for k, v in kit["here"].items()}
    near["fault_logits"][2, 0] = near["fault_logits"][2, 3] + np.float32(0.02)  # healthy, just above
    assert near["fault_logits"][2].argmax() == 0 and kit["here"]["fault_logits"][2].argmax() == 3
    pkg = _recorded_elsewhere(kit, tmp_path, "1.0.0", near)
    st = _serves(kit, tmp_path / "near", pkg)  # before: SlotError, "verdict differs ... golden item 2"
    assert st["version"] == "1.0.0" and st["form"] == "int8", st
    notes: list[str] = []
    assert _package(kit, tmp_path, "1.0.1", THRESHOLD, expected=near, notes=notes).is_file()
    (tie,) = [n for n in notes if "near a tie" in n]
    assert tie.startswith(
        "INT8-only package: golden items 2, 3 (2 of 4 items) near a tie of their top two"
    ), tie
    # 3 of 4 items exempt (item 0 near the threshold too): said, the golden set can hardly judge the form
    assert any("golden set can hardly judge the INT8-only form: 3 of its 4 golden items" in n for n in notes)

    far = {k: v.copy() for k, v in kit["here"].items()}
    far["fault_logits"][1, 1] = far["fault_logits"][1, 0] + np.float32(1.5)  # imbalance, far above healthy
    pkg = _recorded_elsewhere(kit, tmp_path, "2.0.0", far)
    with pytest.raises(SlotError, match=r"on golden item 1: OK \(healthy\) here.* give OK \(imbalance\)"):
        _serves(kit, tmp_path / "far", pkg)
    with pytest.raises(GoldenError, match="golden item 1"):
        _package(kit, tmp_path, "2.0.1", THRESHOLD, expected=far)


def test_an_int8_only_build_whose_golden_items_all_sit_at_a_tie_is_refused(kit, tmp_path):
    """Golden fault logits whose every item has its second label 0.01 below its first: each is exempt, the
    form's labels held to nothing on another CPU. Before: signed (the labels here agree); now refused,
    ``golden_unjudged``, the output named."""
    tied = {k: v.copy() for k, v in kit["here"].items()}
    v = tied["fault_logits"]
    for row in v:
        order = np.argsort(row)
        row[order[-2]] = row[order[-1]] - np.float32(0.01)
    assert (v.argmax(1) == kit["here"]["fault_logits"].argmax(1)).all()  # the labels here agree
    with pytest.raises(GoldenError) as ei:
        _package(kit, tmp_path, "1.0.0", THRESHOLD, expected=tied)
    assert ei.value.code == "golden_unjudged", ei.value
    msg = str(ei.value)
    assert "golden set cannot judge the INT8-only form: output 'fault_logits': every one of its 4" in msg, msg
    assert not list((tmp_path / "1.0.0").glob("*.edgepkg"))


def test_an_int8_only_form_whose_score_collapsed_to_a_constant_is_refused_though_it_keeps_every_verdict(
    kit, tmp_path
):
    """At threshold 0.5 every golden item is OK (scores 0.11 to 0.46): a form whose anomaly score is 0.2 for
    every input keeps every golden verdict, and without a heat map nothing else is off. Before: it was signed
    and served. Now its scores' span (0) against the golden outputs' (0.35) is a collapse: refused at build
    and at load, the output named."""
    flat = _score_as(kit["int8"], tmp_path / "flat.onnx", 0.0, 0.2)
    assert np.ptp(run_engine("onnxruntime", flat, kit["inputs"])["anomaly_score"]) == 0  # the premise
    assert (kit["here"]["anomaly_score"] < 0.5).all()
    with pytest.raises(
        GoldenError, match=r"output 'anomaly_score' collapsed: its values span 0 across the 4"
    ):
        _package(kit, tmp_path, "1.0.0", 0.5, flat, expected=kit["here"])
    sound = _package(kit, tmp_path, "1.0.1", 0.5)
    pkg = _resigned_with(kit, tmp_path, sound, "flat", model=flat.read_bytes())
    with pytest.raises(SlotError, match="output 'anomaly_score' collapsed"):
        _serves(kit, tmp_path / "flat", pkg)


def test_an_int8_only_package_whose_golden_items_are_near_identical_is_not_called_collapsed_for_its_noise(
    kit, tmp_path
):
    """Four golden windows a hair apart (one window with noise of 0.0003): here INT8 gives every one the same
    outputs, the same quantization steps. Recorded on another CPU whose kernels rounded items 1 and 2 two
    steps (0.105) the other ways in one fault logit (ONNX Runtime on Haswell moved them by 0.1): its golden
    spread of 0.21 is that CPU's noise, every verdict and label agrees. Before: refused, "output 'fault_logits'
    collapsed" (0 against 0.21), where the former agent served it. Now a spread the INT8 noise of the output's
    values (``golden.INT8_NEAR_THRESHOLD`` of their span, the tie margin) can take away is not a collapse: it
    serves. (A constant score against golden items apart is still refused: the test above.)"""
    window = kit["inputs"]["features"][1:2]
    rng = np.random.default_rng(3)
    inputs = {"features": (window + rng.normal(0, 3e-4, (4, window.shape[1]))).astype(np.float32)}
    here = run_engine("onnxruntime", kit["int8"], inputs)
    assert max(np.ptp(here[k], axis=0).max() for k in ("anomaly_score", "fault_logits")) <= 0.06, here
    step = np.float32(0.0525)  # the quantization step of the fault logits
    recorded = {k: v.copy() for k, v in here.items()}
    recorded["fault_logits"][1, 0] += 2 * step
    recorded["fault_logits"][2, 0] -= 2 * step
    assert (recorded["fault_logits"].argmax(1) == here["fault_logits"].argmax(1)).all()  # the labels agree
    spec = {**_spec("1.0.0"), "outputs": signal_spec(anomaly_threshold=0.5)["outputs"]}
    pkg = build_package(kit["int8"], spec, tmp_path / "near", signing_key=kit["key"], golden_inputs=inputs)
    buf = io.BytesIO()
    np.savez(buf, **recorded)
    pkg = _resigned(pkg, kit["key"], {"golden/expected.npz": buf.getvalue()}, tmp_path / "near.edgepkg")
    st = _serves(kit, tmp_path / "served", pkg)  # before: SlotError "output 'fault_logits' collapsed"
    assert st["version"] == "1.0.0" and st["form"] == "int8", st


def test_an_int8_only_package_signed_with_golden_items_nearly_alike_near_the_threshold_serves_as_before(
    kit, tmp_path
):
    """Four golden windows a hair apart, all scoring 0.4621 here against threshold 0.46 (NG, 0.0021 above it),
    signed before ``golden_unjudged`` existed. Recorded where INT8 ran 0.5 % lower (another CPU), they are OK
    there. The margin was 5 % of the span of the scores and the threshold, here 0.0001: their spread says
    nothing of the output's quantization step, and the sound package the former agent served (5 % of
    |threshold|, 0.023) was refused. Now the margin is never less than 5 % of |threshold|: it serves, as
    before; and the build refuses such a golden set (nothing left to judge), where it signed it."""
    window = kit["inputs"]["features"][:1]
    rng = np.random.default_rng(3)
    inputs = {"features": (window + rng.normal(0, 3e-4, (4, window.shape[1]))).astype(np.float32)}
    here = run_engine("onnxruntime", kit["int8"], inputs)
    score = here["anomaly_score"][:, 0]
    assert (score >= THRESHOLD).all() and np.ptp(score) < 0.001, score  # the premise: alike, just above
    recorded = {**here, "anomaly_score": here["anomaly_score"] * np.float32(0.995)}
    assert (recorded["anomaly_score"] < THRESHOLD).all()
    recorded["fault_logits"] = here["fault_logits"] * np.float32(0.995)
    sound = build_package(
        kit["int8"], _spec("1.0.0"), tmp_path / "sound", signing_key=kit["key"], golden_inputs=kit["inputs"]
    )
    golden = {}
    for name, arrays in (("inputs", inputs), ("expected", recorded)):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        golden[f"golden/{name}.npz"] = buf.getvalue()
    pkg = _resigned(sound, kit["key"], golden, tmp_path / "alike.edgepkg")  # as the former build signed it
    st = _serves(kit, tmp_path / "served", pkg)  # before: SlotError "verdict differs ... golden item 0"
    assert st["version"] == "1.0.0" and st["form"] == "int8", st
    with pytest.raises(GoldenError) as ei:
        build_package(
            kit["int8"], _spec("1.0.1"), tmp_path / "again", signing_key=kit["key"], golden_inputs=inputs
        )
    assert ei.value.code == "golden_unjudged" and "within 0.023 of threshold 0.46" in str(ei.value), ei.value
