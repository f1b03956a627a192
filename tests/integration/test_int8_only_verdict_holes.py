"""The verdict check of an INT8-only package (no FP32 form, judged on the gateway's CPU by the verdicts it was
built with) against forms that keep its golden verdicts by the check's own allowances:

- one outlying golden score no longer widens every item's margin (``golden.threshold_margin`` leaves a lone
  outlier out of the span it is a share of);
- golden items exempt near a threshold or a tie that flip are said, and refused when many flip past the margin;
- a form whose outputs moved wholesale (every score plus a constant) or spread out is refused unless every
  verdict holds by the margin, as a collapse was;
- a tiled model's messages count tiles, not items.

Real ONNX Runtime (and OpenVINO where the slot tries it) sessions of the test signal and part models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train import onnx_tools
from edge_agent.models.slot import SlotError
from model_packager import build_package, golden, read_manifest
from model_packager.golden import run_engine
from tests.integration import test_int8_only_packages as _base
from tests.integration.test_int8_only_packages import (
    THRESHOLD,
    _package,
    _recorded_elsewhere,
    _resigned_with,
    _score_as,
    _serves,
    _spec,
)
from tests.support.models import golden_inputs, make_vision_onnx, signal_spec, vision_spec

kit = _base.kit  # the golden kit of the INT8 signal model (a module-scoped fixture), shared


def _with_outlier(model: Path, out: Path, factor: float, offset: float) -> Path:
    """The INT8 signal model with its anomaly score ``factor`` * score + ``offset`` (``_score_as``) +
    max(0, feature 0 - 10): a window whose first feature is 60 scores about 50 (an outlier), the others as the
    model scores them."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(_score_as(model, out, factor, offset)))
    (node,) = [n for n in m.graph.node if "anomaly_score" in n.output]
    node.output[list(node.output).index("anomaly_score")] = "o_moved"
    m.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([10.0], np.float32), "o_ten"),
            numpy_helper.from_array(np.array([0], np.int64), "o_first"),
        ]
    )
    m.graph.node.extend(
        [
            helper.make_node("Gather", ["features", "o_first"], ["o_f0"], axis=1),
            helper.make_node("Sub", ["o_f0", "o_ten"], ["o_over"]),
            helper.make_node("Relu", ["o_over"], ["o_bump"]),
            helper.make_node("Add", ["o_moved", "o_bump"], ["anomaly_score"]),
        ]
    )
    onnx.save(m, str(out))
    return out


def test_one_outlying_golden_score_no_longer_widens_the_margin_of_every_other_item(kit, tmp_path):
    """Five golden windows: four scoring 0.11 to 0.46, one 50.5 (an outlier), threshold 0.3. A form that says
    the opposite of the four (0.6 - score) and keeps the outlier NG. Before: the margin was 5 % of the scores'
    span (50), 2.5, every one of the four exempt, and it served with a "can hardly judge" warning. Now the
    outlier is left out of the span (margin 0.018): refused, the four named; the package's own form serves."""
    x = kit["inputs"]["features"]
    outlier = x[1:2].copy()
    outlier[0, 0] = 60.0
    inputs = {"features": np.concatenate([x, outlier]).astype(np.float32)}
    sound = _with_outlier(kit["int8"], tmp_path / "sound.onnx", 1.0, 0.0)
    here = run_engine("onnxruntime", sound, inputs)["anomaly_score"][:, 0]
    assert (
        here[4] > 50 and (here[:4] < 0.47).all() and ((here[:4] > 0.3) == [True, False, False, False]).all()
    )
    spec = {**_spec("1.0.0"), "outputs": signal_spec(anomaly_threshold=0.3)["outputs"]}
    pkg = build_package(sound, spec, tmp_path / "pkg", signing_key=kit["key"], golden_inputs=inputs)
    assert _serves(kit, tmp_path / "own", pkg)["form"] == "int8"

    flipped = _with_outlier(kit["int8"], tmp_path / "flipped.onnx", -1.0, 0.6)
    got = run_engine("onnxruntime", flipped, inputs)["anomaly_score"][:, 0]
    assert ((got > 0.3) != (here > 0.3)).tolist() == [True, True, True, True, False]  # the premise
    bad = _resigned_with(kit, tmp_path, pkg, "flipped", model=flipped.read_bytes())
    with pytest.raises(SlotError) as ei:  # before: served
        _serves(kit, tmp_path / "bad", bad)
    msg = str(ei.value)
    assert "verdict differs from the package's on golden item 0: OK (" in msg, msg
    assert "(and 3 more golden items)" in msg, msg
    margin = golden.threshold_margin(here, 0.3)
    assert margin == pytest.approx(0.05 * np.ptp(here[:4]), rel=1e-3)  # the outlier left out


def test_int8_only_labels_near_a_tie_that_flip_are_said_and_many_flipping_past_the_margin_is_refused(
    kit, tmp_path
):
    """Item 2's fault logits here: bearing_outer 1.68, healthy 1.21; recorded on another CPU with healthy 0.02
    above (a near-tie): it serves, as before, and now its trial and summary say the flip ("1 of the 2 golden
    items exempt ... flipped here (golden item 2)"), where before nothing did. Recorded with the top two labels
    of 8 of 16 golden windows swapped to a near-tie the other way (each exempt, each flipped past the margin
    here, where their top two values are far apart): before it served; now refused, the items counted."""
    near = {k: v.copy() for k, v in kit["here"].items()}
    near["fault_logits"][2, 0] = near["fault_logits"][2, 3] + np.float32(0.02)
    st = _serves(kit, tmp_path / "near", _recorded_elsewhere(kit, tmp_path, "1.0.0", near))
    assert st["form"] == "int8", st
    said = "exempt near a threshold or a tie flipped here (golden item 2): allowed"
    assert said in st["selection"]["summary"], st["selection"]["summary"]
    trial = st["selection"]["trials"][0]
    assert trial["ok"] and any(said in n for n in trial["notes"]), trial

    inputs = golden_inputs("signal", n=16, seed=2)
    here = run_engine("onnxruntime", kit["int8"], inputs)
    many = {k: v.copy() for k, v in here.items()}
    v = many["fault_logits"]
    margin = golden.tie_margin(here["fault_logits"])
    clear = [i for i in range(16) if np.diff(np.sort(v[i])[-2:])[0] > 2 * margin][:8]
    assert len(clear) == 8, clear
    for i in clear:
        top, second = np.argsort(v[i])[-1], np.argsort(v[i])[-2]
        v[i, second] = v[i, top] + np.float32(0.02)  # the other label, by a hair: near a tie, exempt
    sound = build_package(
        kit["int8"], _spec("2.0.0"), tmp_path / "many", signing_key=kit["key"], golden_inputs=inputs
    )
    pkg = _resigned_with(kit, tmp_path, sound, "many", expected=many)
    with pytest.raises(SlotError) as ei:  # before: served (each of them exempt)
        _serves(kit, tmp_path / "many", pkg)
    msg = str(ei.value)
    assert (
        "golden items exempt near a threshold or a tie flipped here past the margin (golden items" in msg
    ), msg


def test_an_int8_only_form_whose_score_moved_wholesale_or_spread_out_is_refused_unless_its_verdicts_hold(
    kit, tmp_path
):
    """At threshold 0.5 every golden item is OK (scores 0.11 to 0.46, margin 0.025). A form scoring 0.03 more
    for everything keeps every verdict (item 0 at 0.49) and the spread: before, it served; now refused, moved
    wholesale. 0.05 less keeps every verdict by the margin (item 0 0.09 below it): it serves. At threshold 2
    (margin 0.1) a form scoring 4.2 times more keeps every verdict (item 0 at 1.94) with four times the spread:
    before, it served; now refused, spread out."""
    sound = _package(kit, tmp_path, "1.0.0", 0.5)
    up = _score_as(kit["int8"], tmp_path / "up.onnx", 1.0, 0.03)
    with pytest.raises(SlotError) as ei:
        _serves(kit, tmp_path / "up", _resigned_with(kit, tmp_path, sound, "up", model=up.read_bytes()))
    assert "output 'anomaly_score' moved wholesale: across the 4 golden items here" in str(ei.value), ei.value
    down = _score_as(kit["int8"], tmp_path / "down.onnx", 1.0, -0.05)
    st = _serves(
        kit, tmp_path / "down", _resigned_with(kit, tmp_path, sound, "down", model=down.read_bytes())
    )
    assert st["form"] == "int8", st

    high = _package(kit, tmp_path, "2.0.0", 2.0)
    wide = _score_as(kit["int8"], tmp_path / "wide.onnx", 4.2, 0.0)
    assert (run_engine("onnxruntime", wide, kit["inputs"])["anomaly_score"] < 2.0).all()  # verdicts kept
    with pytest.raises(SlotError) as ei:
        _serves(kit, tmp_path / "wide", _resigned_with(kit, tmp_path, high, "wide", model=wide.read_bytes()))
    assert "output 'anomaly_score' spread out: its values span" in str(ei.value), ei.value
    assert THRESHOLD < 0.5  # (the kit's items: item 0 just above 0.46)


def test_a_tiled_int8_only_models_check_counts_tiles_not_golden_items(tmp_path):
    """A part CNN read as 2 tiles a frame, INT8, 4 golden frames (8 tiles); a form whose labels are rotated
    (every logit moved to the next label). Before: no spread or shift check took the rows of a frame, and
    the flips were "golden items" (there were 4 items, of 2 tiles). Now a rotation is caught (moved wholesale)
    and the tiles are named as tiles."""
    key_dir = tmp_path / "keys"
    from tests.support.models import make_keypair

    key, _ = make_keypair(key_dir)
    size = 32
    fp32 = make_vision_onnx(tmp_path / "cnn.onnx", width=size, height=size, seed=3, heatmap=False)
    calib = golden_inputs("vision", n=32, width=size, height=size, seed=1)["image"]
    int8 = onnx_tools.quantize(fp32, tmp_path / "int8.onnx", calib, "image")
    spec = vision_spec("tiled-part", "1.0.0", width=size, height=size, heatmap=False)
    spec["preprocessing"]["tiles"] = [2, 1]
    spec["quantization"] = {"scheme": onnx_tools.SCHEME}
    inputs = golden_inputs("vision", n=8, width=size, height=size, seed=2)
    m = read_manifest(build_package(int8, spec, tmp_path / "pkg", signing_key=key, golden_inputs=inputs))
    expected = run_engine("onnxruntime", int8, inputs)
    rotated = {"logits": np.roll(expected["logits"], 1, axis=1)}  # every label rotated
    flips = golden.verdict_problems(m, expected, rotated, rows=1)
    assert flips and flips[0].startswith("verdict differs from the package's on golden tile "), flips
    assert "more golden tiles)" in flips[0], flips
    by_frame = golden.collapse_problems(m, expected, rotated, rows=2)
    assert by_frame and "across the 8 golden tiles (4 frames of 2 tiles) here" in by_frame[0], by_frame
    tiles = golden.collapse_problems(m, expected, rotated)
    assert tiles and "moved wholesale: across the 8 golden tiles here" in tiles[0], tiles


def test_an_int8_only_golden_set_whose_ng_scores_lie_far_apart_keeps_their_span_in_the_margin(kit, tmp_path):
    """Eight golden windows: six OK (0.11 to 0.15) and item 0 NG at 0.462 against threshold 0.45, and two NG far
    off, about 5 and 20 (a scratch, a missing part): the output's range is 0 to 20, one quantization step of it
    about 0.08. Recorded on another CPU whose kernels rounded every item but item 0 one such step higher: every
    verdict agrees. Before: both far NG scores were left out of the span one after the other as "outliers",
    the margin shrank to 0.0225 (5 % of the threshold), and the sound package was refused ("moved wholesale",
    item 0 within that margin). Now only a lone value is left out (the 20): the margin is 5 % of 0.11 to 5, and
    it serves."""
    x = kit["inputs"]["features"]
    scratch, missing = x[3:4].copy(), x[1:2].copy()
    scratch[0, 0], missing[0, 0] = 15.0, 30.0
    inputs = {"features": np.concatenate([x, x[1:3], scratch, missing]).astype(np.float32)}
    model = _with_outlier(kit["int8"], tmp_path / "far.onnx", 1.0, 0.0)
    here = run_engine("onnxruntime", model, inputs)
    score = here["anomaly_score"][:, 0]
    assert 0.45 < score[0] < 0.47 and (score[1:6] < 0.2).all(), score  # the premise
    assert 4 < score[6] < 7 and score[7] > 18, score
    spec = {**_spec("1.0.0"), "outputs": signal_spec(anomaly_threshold=0.45)["outputs"]}
    pkg = build_package(model, spec, tmp_path / "pkg", signing_key=kit["key"], golden_inputs=inputs)
    step = np.float32(20.0 / 255)
    recorded = {k: v.copy() for k, v in here.items()}
    recorded["anomaly_score"][1:] += step
    assert ((recorded["anomaly_score"] >= 0.45) == (here["anomaly_score"] >= 0.45)).all()  # verdicts agree
    st = _serves(kit, tmp_path / "step", _resigned_with(kit, tmp_path, pkg, "step", expected=recorded))
    assert st["version"] == "1.0.0" and st["form"] == "int8", st  # before: SlotError "moved wholesale"
    margin = golden.threshold_margin(recorded["anomaly_score"][:, 0], 0.45)
    assert margin == pytest.approx(0.05 * (score[6] - score[1:6].min()), rel=0.05), margin


def _nan_below(model: Path, out: Path, f0: float) -> Path:
    """The INT8 signal model with its anomaly score + 0 * sqrt(feature 0 - ``f0``): NaN for a window whose
    first feature is below ``f0`` (as a broken kernel gives), the model's own score otherwise."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(model))
    (node,) = [n for n in m.graph.node if "anomaly_score" in n.output]
    node.output[list(node.output).index("anomaly_score")] = "n_raw"
    m.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([f0], np.float32), "n_floor"),
            numpy_helper.from_array(np.array([0.0], np.float32), "n_zero"),
            numpy_helper.from_array(np.array([0], np.int64), "n_first"),
        ]
    )
    m.graph.node.extend(
        [
            helper.make_node("Gather", ["features", "n_first"], ["n_f0"], axis=1),
            helper.make_node("Sub", ["n_f0", "n_floor"], ["n_over"]),
            helper.make_node("Sqrt", ["n_over"], ["n_root"]),
            helper.make_node("Mul", ["n_root", "n_zero"], ["n_nan"]),
            helper.make_node("Add", ["n_raw", "n_nan"], ["anomaly_score"]),
        ]
    )
    onnx.save(m, str(out))
    return out


def test_an_int8_only_form_whose_score_is_nan_on_an_ok_golden_item_is_refused(kit, tmp_path):
    """The kit's four windows, window 1 (OK, 0.15) with its first feature at -6. A form whose score is NaN for
    that window (a broken kernel) and the model's own for the others: NaN reads as OK (below every threshold),
    the collapse check's median hides one item of four. Before: it served. Now refused, the item named."""
    x = kit["inputs"]["features"].copy()
    x[1, 0] = -6.0
    inputs = {"features": x}
    nan = _nan_below(kit["int8"], tmp_path / "nan.onnx", -5.0)
    got = run_engine("onnxruntime", nan, inputs)["anomaly_score"][:, 0]
    here = run_engine("onnxruntime", kit["int8"], inputs)["anomaly_score"][:, 0]
    assert np.isnan(got[1]) and np.isfinite(here).all() and here[1] < THRESHOLD, (got, here)  # the premise
    assert np.array_equal(np.delete(got, 1), np.delete(here, 1))
    sound = build_package(
        kit["int8"], _spec("1.0.0"), tmp_path / "pkg", signing_key=kit["key"], golden_inputs=inputs
    )
    assert _serves(kit, tmp_path / "own", sound)["form"] == "int8"
    bad = _resigned_with(kit, tmp_path, sound, "nan", model=nan.read_bytes())
    with pytest.raises(SlotError) as ei:  # before: served
        _serves(kit, tmp_path / "bad", bad)
    assert "output 'anomaly_score' gives nan on golden item 1 here" in str(ei.value), ei.value
