"""An INT8-only package (no FP32 form: a user's own quantized model, docs/own-model.md) is judged on any CPU by
the verdicts it was built with, not by the build machine's INT8 values.

Its golden outputs are the build machine's INT8 run, and INT8 kernels differ by CPU: on x86 without VNNI a
sound model's class logits move by 0.1 (ONNX Runtime) where the golden tolerance allows 0.001, and a golden
item near the threshold may land on the other side. Before, the package's only form was held to the
tolerance and to every verdict, so such a package was refused on that CPU, the whole of it. Now its form is
held as an INT8 form is held to FP32: every golden item's verdict and labels (an item within
``golden.INT8_NEAR_THRESHOLD``, 5 %, of its threshold excepted), outputs without a verdict (heat maps,
remaining life) within the tolerance. A form that collapses there is still refused, the reason in the
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
from model_packager import GoldenError, build_package
from model_packager.cpu import cpu_flags
from model_packager.golden import run_engine
from tests.integration.test_int8_parity import _NO_QEMU, SIZE, _saturating_model, _select_under_qemu
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
    return ModelSlot("health", ModelConfig(package=str(pkg), **cfg), tmp_path / "agent", [kit["pub"]])


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


@_NO_QEMU
@pytest.mark.skipif(
    "avx512_vnni" not in cpu_flags() and "avx_vnni" not in cpu_flags(),
    reason="the packages must be built on a CPU with VNNI for the emulated AVX2 CPU to differ",
)
@pytest.mark.timeout(600)
def test_on_an_avx2_cpu_without_vnni_a_sound_int8_only_package_serves_and_a_collapsed_one_is_refused(
    tmp_path,
):
    """Built here (VNNI) from INT8 ONNX files quantized with full 8-bit weights, as a user's own tools do:
    the part CNN's INT8 form gives the build's verdicts on Haswell through ONNX Runtime (its logits 0.1 off,
    past the tolerance) while OpenVINO's heat map is 1.7 off; a saturating model's heat map collapses on both."""
    key, pub = make_keypair(tmp_path / "keys")
    pkgs = int8_only_packages(
        tmp_path, key, {"sound": ("own", False, "s8"), "collapsed": ("sat", False, "u8")}
    )
    out = _select_under_qemu("Haswell", pkgs, tmp_path, {"pub": pub})
    assert "avx2" in out["cpu_flags"] and "avx512_vnni" not in out["cpu_flags"]

    sound = out["sound"]  # before: refused, "int8 on onnxruntime: output 'logits' deviates by up to 0.0961"
    assert "refused" not in sound, sound
    assert (sound["engine"], sound["form"]) == ("onnxruntime", "int8"), sound
    trials = {t["engine"]: t for t in sound["trials"]}
    assert trials["onnxruntime"]["ok"] and trials["onnxruntime"]["agreement"] == 1.0
    assert trials["onnxruntime"]["deviation"] > 0.01  # past the golden tolerance: the other CPU's INT8
    assert not trials["openvino"]["ok"] and "output 'heatmap' deviates" in trials["openvino"]["reason"]
    assert "INT8 off on this CPU: on openvino: output 'heatmap' deviates" in sound["summary"], sound

    collapsed = out["collapsed"]  # every engine off: the package is refused with the reasons
    assert "int8 on onnxruntime: output 'heatmap' deviates" in collapsed["refused"], collapsed
    assert "int8 on openvino: output 'heatmap' deviates" in collapsed["refused"], collapsed
