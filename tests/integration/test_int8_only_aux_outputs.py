"""An INT8-only package's outputs that carry no verdict (heat maps, remaining life) are held to what another
CPU's INT8 noise may do to them, not to the golden tolerance (0.001 + 1 %) that only the build machine's own
INT8 run meets.

Under QEMU emulating a Haswell (AVX2, no VNNI), OpenVINO moved a sound INT8 CNN's heat map by up to 1.67 on
single cells (15 % of the span of its golden values, 0.4 % for the median cell) and a sound signal model's
remaining life by 0.073 (1.1 %): before, the form was refused for it, and a gateway pinned to OpenVINO stopped
the line on a sound package. Now a value per item may move by ``golden.INT8_AUX_MOVED`` (5 %) of the span of its
golden values and 0; a map's cells may move more, but not its median cell, not its spread down to a flat map,
not its hot spot elsewhere. FP32 packages keep the golden tolerance.

"Another CPU" here: golden outputs recorded a little off (re-signed, as another CPU's INT8 run), and forms whose
map or remaining life really collapsed (the model's output scaled down after the fact). Real ONNX Runtime and
OpenVINO sessions on small models."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train import onnx_tools
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot, SlotError
from model_packager import GoldenError, build_package, load_trusted_keys
from model_packager.golden import INT8_AUX_MOVED, aux_scale, run_engine
from tests.integration.test_int8_parity import SIZE, _started_status
from tests.support.models import (
    golden_inputs,
    make_keypair,
    make_signal_onnx,
    make_vision_onnx,
    signal_spec,
    vision_spec,
)
from tests.unit.test_package_external_data import _resigned


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8-aux")
    key, pub = make_keypair(tmp / "keys")
    vision = onnx_tools.quantize(
        make_vision_onnx(tmp / "vision.onnx", width=SIZE, height=SIZE, seed=3),
        tmp / "vision-int8.onnx",
        golden_inputs("vision", n=32, width=SIZE, height=SIZE, seed=1)["image"],
        "image",
        seven_bit_weights=True,
    )
    signal = onnx_tools.quantize(
        make_signal_onnx(tmp / "signal.onnx"),
        tmp / "signal-int8.onnx",
        golden_inputs("signal", n=64, seed=1)["features"],
        "features",
    )
    v_in = golden_inputs("vision", n=8, width=SIZE, height=SIZE, seed=2)
    s_in = golden_inputs("signal", n=8, seed=2)
    return {
        "tmp": tmp,
        "key": key,
        "pub": pub,
        "vision": (vision, v_in, run_engine("onnxruntime", vision, v_in)),
        "signal": (signal, s_in, run_engine("onnxruntime", signal, s_in)),
    }


def _spec(kind: str, version: str, scheme: str = onnx_tools.SCHEME) -> dict:
    base = (
        vision_spec("own-part", version, width=SIZE, height=SIZE)
        if kind == "vision"
        else signal_spec("machine-health", version)
    )
    return {**base, "quantization": {"scheme": scheme}}


def _package(kit, tmp_path: Path, kind: str, version: str, expected: dict | None = None, model=None) -> Path:
    """The INT8-only package built here, its golden outputs (``expected``) and model (``model``) replaced by
    another machine's, signed again."""
    int8, inputs, _ = kit[kind]
    pkg = build_package(
        int8, _spec(kind, version), tmp_path / version, signing_key=kit["key"], golden_inputs=inputs
    )
    replace = {}
    if expected is not None:
        buf = io.BytesIO()
        np.savez(buf, **expected)
        replace["golden/expected.npz"] = buf.getvalue()
    if model is not None:
        replace["model.onnx"] = Path(model).read_bytes()
    return _resigned(pkg, kit["key"], replace, tmp_path / f"{kind}-{version}.edgepkg")


def _start(kit, tmp_path: Path, pkg: Path, **cfg) -> dict:
    # the key loaded here: the slot installs in this process, with no install child (a new interpreter, ~0.5 CPU s
    # a start); what is judged here is the check of the forms, not the install (test_model_slot's)
    keys = load_trusted_keys([kit["pub"]])
    return _started_status(ModelSlot("m", ModelConfig(package=str(pkg), **cfg), tmp_path / "agent", keys))


def _refused(kit, tmp_path: Path, pkg: Path, **cfg) -> str:
    with pytest.raises(SlotError) as ei:
        _start(kit, tmp_path, pkg, **cfg)
    return str(ei.value)


def _scaled_output(model: Path, out: Path, name: str, factor: float) -> Path:
    """``model`` with output ``name`` multiplied by ``factor`` (a Mul after it): a form whose output shrank
    towards 0, a collapse."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(model))
    (node,) = [n for n in m.graph.node if name in n.output]
    node.output[list(node.output).index(name)] = f"{name}_raw"
    m.graph.initializer.append(numpy_helper.from_array(np.array([factor], np.float32), f"{name}_factor"))
    m.graph.node.append(helper.make_node("Mul", [f"{name}_raw", f"{name}_factor"], [name]))
    onnx.save(m, str(out))
    return out


def _int8_noisy_map(heat: np.ndarray, seed: int = 0) -> np.ndarray:
    """The heat map as another CPU's INT8 gives it (measured under emulation: a few cells up to 15 % of the
    span of the golden values off, the median cell 0.4 %): every cell moved by up to 1 % of the scale, four
    cells of each map by 12 %."""
    rng = np.random.default_rng(seed)
    scale = aux_scale(heat)
    out = heat + rng.uniform(-0.01, 0.01, heat.shape) * scale
    flat = out.reshape(heat.shape[0], -1)
    for i in range(flat.shape[0]):
        cells = rng.choice(flat.shape[1], 4, replace=False)
        flat[i, cells] += rng.choice([-0.12, 0.12], 4) * scale
    return out.astype(np.float32)


def test_a_sound_int8_only_package_whose_heat_map_moves_by_int8_noise_on_another_cpu_is_served(kit, tmp_path):
    _, inputs, here = kit["vision"]
    other_cpu = {**here, "heatmap": _int8_noisy_map(here["heatmap"])}
    assert np.abs(other_cpu["heatmap"] - here["heatmap"]).max() > 0.1  # far past the golden tolerance
    pkg = _package(kit, tmp_path, "vision", "1.0.0", other_cpu)
    # before: SlotError, "int8 on onnxruntime: output 'heatmap' deviates by up to 1.46 (atol 0.001, rtol 0.01)"
    for engine in ("onnxruntime", "openvino"):
        st = _start(kit, tmp_path / engine, pkg, engine=engine)
        assert st["version"] == "1.0.0" and st["form"] == "int8" and st["engine"] == engine, st
    # the same outputs given to the build (recorded on another machine): signed (before: GoldenError)
    int8, inputs, _ = kit["vision"]
    built = build_package(
        int8,
        _spec("vision", "1.0.1"),
        tmp_path / "b",
        signing_key=kit["key"],
        golden_inputs=inputs,
        expected=other_cpu,
    )
    assert built.is_file()
    # an FP32 package is still held to the golden tolerance: its run is the same on every CPU
    fp32 = make_vision_onnx(tmp_path / "fp32.onnx", width=SIZE, height=SIZE, seed=3)
    fp32_here = run_engine("onnxruntime", fp32, inputs)
    with pytest.raises(GoldenError, match="output 'heatmap' deviates by up to"):
        build_package(
            fp32,
            _spec("vision", "1.0.2", scheme="none"),
            tmp_path / "c",
            signing_key=kit["key"],
            golden_inputs=inputs,
            expected={**fp32_here, "heatmap": _int8_noisy_map(fp32_here["heatmap"])},
        )


def test_an_int8_only_form_whose_heat_map_collapsed_or_lost_its_hot_spot_is_refused(kit, tmp_path):
    int8, inputs, here = kit["vision"]
    # the form's heat map shrank to a tenth (its logits as built): a flat map, every verdict kept
    flat = _scaled_output(int8, tmp_path / "flat.onnx", "heatmap", 0.1)
    assert (run_engine("onnxruntime", flat, inputs)["logits"] == here["logits"]).all()
    msg = _refused(kit, tmp_path / "flat", _package(kit, tmp_path, "vision", "2.0.0", model=flat))
    assert "output 'heatmap' collapsed on golden items 0, 1, 2" in msg, msg
    with pytest.raises(GoldenError, match="output 'heatmap' collapsed"):
        build_package(
            flat,
            _spec("vision", "2.0.1"),
            tmp_path / "b",
            signing_key=kit["key"],
            golden_inputs=inputs,
            expected=here,
        )
    # recorded where the hot spot sat elsewhere (the map mirrored): not INT8 noise
    mirrored = {**here, "heatmap": np.ascontiguousarray(here["heatmap"][..., ::-1, ::-1])}
    msg = _refused(kit, tmp_path / "mirrored", _package(kit, tmp_path, "vision", "2.1.0", mirrored))
    assert "output 'heatmap' lost its hottest region on golden items" in msg, msg


def test_a_sound_int8_only_package_whose_remaining_life_moves_by_int8_noise_is_served_a_moved_one_is_not(
    kit, tmp_path
):
    int8, inputs, here = kit["signal"]
    life = here["remaining_life"]
    scale = aux_scale(life)
    noise = np.random.default_rng(1).choice([-1.0, 1.0], life.shape) * 0.02 * scale  # 2 % (1.1 % measured)
    other_cpu = {**here, "remaining_life": (life + noise).astype(np.float32)}
    assert np.abs(noise).min() > 0.001 + 0.01 * np.abs(life).max()  # every item past the golden tolerance
    pkg = _package(kit, tmp_path, "signal", "1.0.0", other_cpu)
    # before: SlotError, "output 'remaining_life' deviates by up to 0.187 (atol 0.001, rtol 0.01)"
    for engine in ("onnxruntime", "openvino"):
        st = _start(kit, tmp_path / engine, pkg, engine=engine)
        assert st["version"] == "1.0.0" and st["engine"] == engine, st

    # recorded 3 times the INT8 margin higher: every remaining life moved, refused, the margin named
    moved = {**here, "remaining_life": (life + 3 * INT8_AUX_MOVED * scale).astype(np.float32)}
    msg = _refused(kit, tmp_path / "moved", _package(kit, tmp_path, "signal", "2.0.0", moved))
    assert "output 'remaining_life' differs from the package's golden outputs by up to" in msg, msg
    assert "golden items 0, 1, 2" in msg and "5% of" in msg, msg
    # a form whose remaining life collapsed towards 0, every verdict kept: refused
    flat = _scaled_output(int8, tmp_path / "flat.onnx", "remaining_life", 0.2)
    msg = _refused(kit, tmp_path / "flat", _package(kit, tmp_path, "signal", "2.1.0", model=flat))
    assert "output 'remaining_life' differs from the package's golden outputs" in msg, msg


def _after(model: Path, out: Path, name: str, op: str, *consts: float) -> Path:
    """``model`` with output ``name`` passed through ``op`` (Relu, or Mul then Add by ``consts``)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(model))
    (node,) = [n for n in m.graph.node if name in n.output]
    node.output[list(node.output).index(name)] = f"{name}_{op}_raw"
    if op == "Relu":
        m.graph.node.append(helper.make_node("Relu", [f"{name}_{op}_raw"], [name]))
    else:
        a, b = (
            numpy_helper.from_array(np.array([c], np.float32), f"{name}_{op}{i}")
            for i, c in enumerate(consts)
        )
        m.graph.initializer.extend([a, b])
        m.graph.node.append(helper.make_node("Mul", [f"{name}_{op}_raw", a.name], [f"{name}_{op}_m"]))
        m.graph.node.append(helper.make_node("Add", [f"{name}_{op}_m", b.name], [name]))
    onnx.save(m, str(out))
    return out


def test_an_int8_only_remaining_life_far_from_0_that_collapsed_to_a_constant_is_refused(kit, tmp_path):
    """Remaining life of 9,200 to 10,000 h: 5 % of its scale (0 to 10,000 h) is 500 h, more than half its golden
    span, so a form giving 9,608 h for every item kept each within the margin and was served."""
    int8, inputs, _ = kit["signal"]
    hours = _after(int8, tmp_path / "hours.onnx", "remaining_life", "MulAdd", 130.0, 8800.0)
    here = run_engine("onnxruntime", hours, inputs)["remaining_life"]
    assert here.min() > 9000 and here.max() - here.min() < 2 * INT8_AUX_MOVED * aux_scale(here)
    middle = float(here.max() + here.min()) / 2
    const = _after(int8, tmp_path / "const.onnx", "remaining_life", "MulAdd", 0.0, middle)
    spec = _spec("signal", "3.0.0")
    pkg = build_package(hours, spec, tmp_path / "p", signing_key=kit["key"], golden_inputs=inputs)
    pkg = _resigned(pkg, kit["key"], {"model.onnx": const.read_bytes()}, tmp_path / "const.edgepkg")
    # before: served, every item within 500 h of its golden value
    for engine in ("onnxruntime", "openvino"):
        msg = _refused(kit, tmp_path / engine, pkg, engine=engine)
        assert "output 'remaining_life' collapsed: its values span 0 across the golden items" in msg, msg
    # the sound form with another CPU's noise (2 % of the scale on every item) is still served
    sound = run_engine("onnxruntime", hours, inputs)
    noise = np.random.default_rng(1).choice([-1.0, 1.0], here.shape) * 0.02 * aux_scale(here)
    other_cpu: dict = {**sound, "remaining_life": (here + noise).astype(np.float32)}
    pkg = build_package(
        hours, _spec("signal", "3.0.1"), tmp_path / "q", signing_key=kit["key"], golden_inputs=inputs
    )
    buf = io.BytesIO()
    np.savez(buf, **other_cpu)
    pkg = _resigned(pkg, kit["key"], {"golden/expected.npz": buf.getvalue()}, tmp_path / "sound.edgepkg")
    assert _start(kit, tmp_path / "sound", pkg, engine="openvino")["version"] == "3.0.1"


def test_an_int8_only_anomaly_map_scaled_down_to_a_third_is_refused_its_int8_noise_served(kit, tmp_path):
    """An anomaly map whose background is 0 (a Relu last), scaled to 30 %: its median cell stays 0, its hot spot
    in place and its span at 30 % (past the 25 % of a collapse), so it was served with every defect at a third
    of its height."""
    int8, inputs, _ = kit["vision"]
    relu = _after(int8, tmp_path / "relu.onnx", "heatmap", "Relu")
    third = _after(relu, tmp_path / "third.onnx", "heatmap", "MulAdd", 0.3, 0.0)
    here = run_engine("onnxruntime", relu, inputs)
    assert (np.median(here["heatmap"].reshape(len(here["heatmap"]), -1), axis=1) == 0).all()
    pkg = build_package(
        relu, _spec("vision", "3.0.0"), tmp_path / "p", signing_key=kit["key"], golden_inputs=inputs
    )
    bad = _resigned(pkg, kit["key"], {"model.onnx": third.read_bytes()}, tmp_path / "third.edgepkg")
    # before: served
    for engine in ("onnxruntime", "openvino"):
        msg = _refused(kit, tmp_path / engine, bad, engine=engine)
        assert "output 'heatmap' flattened its hot spot on golden items 0, 1, 2" in msg, msg
    # the same map with another CPU's INT8 noise (single cells 12 % of the scale off) is served
    buf = io.BytesIO()
    np.savez(buf, **{**here, "heatmap": np.maximum(_int8_noisy_map(here["heatmap"]), 0)})
    noisy = _resigned(pkg, kit["key"], {"golden/expected.npz": buf.getvalue()}, tmp_path / "noisy.edgepkg")
    for engine in ("onnxruntime", "openvino"):
        assert _start(kit, tmp_path / f"n-{engine}", noisy, engine=engine)["version"] == "3.0.0"
