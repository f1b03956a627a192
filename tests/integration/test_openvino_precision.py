"""OpenVINO's float precision on a CPU whose OpenVINO runs float layers in bf16 by default (AVX-512 BF16, AMX:
~3 significant digits).

- A package's thresholds and golden outputs are set at f32. In bf16 its scores shift by up to a few hundredths
  (measured on the trainer's packages: 1 of 300 cast images and 1 of 300 part images got another verdict), so
  the agent runs OpenVINO at f32 unless ``openvino_f32: false``: an item on the threshold gets the verdict the
  package was gated at, whichever engine the slot chose.
- With ``openvino_f32: false``, a package checked only on ONNX Runtime whose tolerance bf16 misses is tried
  again at f32 (it was refused: "golden test failed on this CPU (amx)").

Where OpenVINO's default is f32 there is no bf16 to differ: those tests are skipped, saying so."""

from __future__ import annotations

import numpy as np
import pytest

from devices.base import Frame
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from model_packager import build_package
from model_packager.preprocess import image_tensor, interpret
from model_packager.runtimes import ort_session
from tests.support.models import golden_inputs, make_keypair, make_package, make_vision_onnx, vision_spec

SIZE = 32


def _default_precision() -> str:
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


_F32_DEFAULT = pytest.mark.skipif(
    _default_precision() == "f32",
    reason="this CPU's OpenVINO runs float layers at f32 by default: no bf16 to differ",
)


@_F32_DEFAULT
async def test_a_package_its_tolerance_misses_in_bf16_is_served_by_openvino_at_f32(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="vision", key=key)  # golden checked on ONNX Runtime at f32 only
    cfg = ModelConfig(package=str(pkg), engine="openvino", openvino_f32=False)
    slot = ModelSlot("vision", cfg, tmp_path / "data", [pub])
    await (
        slot.start()
    )  # before: SlotError "golden test failed on this CPU ...: fp32 on openvino: ... deviates"
    try:
        assert slot.engine_name == "openvino"
        st = slot.status()
        sel = st["selection"]
        assert "at f32 (bf16, this CPU's default, missed the golden check)" in sel["summary"], sel
        chosen = next(t for t in sel["trials"] if t["ok"])
        assert (
            chosen["reason"].startswith("at f32: at this CPU's default precision (bf16)")
            and "deviates" in (chosen["reason"])
        ), chosen
    finally:
        await slot.stop()


def _ng_score(spec: dict, raw: dict) -> float:
    from model_packager.manifest import Manifest

    return interpret(Manifest.model_validate({**spec, "files": []}), raw).score


@_F32_DEFAULT
async def test_an_item_on_the_threshold_gets_the_verdict_the_package_was_gated_at_on_openvino(tmp_path):
    """The package's threshold sits between a part's NG score at f32 and in bf16; its golden tolerance is wide
    enough for bf16 to pass. The agent, serving it on OpenVINO, must give that part the f32 verdict: before,
    it ran in bf16 (the CPU's default) and gave the other one."""
    import openvino as ov

    key, pub = make_keypair(tmp_path / "keys")
    model = make_vision_onnx(tmp_path / "m.onnx", width=SIZE, height=SIZE, seed=5)
    spec = vision_spec(width=SIZE, height=SIZE, heatmap=True)
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(32)]
    pre = vision_spec(width=SIZE, height=SIZE)["preprocessing"]
    from model_packager.manifest import ImagePreprocessing

    feeds = [image_tensor(p, ImagePreprocessing.model_validate(pre)) for p in parts]
    sess = ort_session(model, threads=1)
    names = [o.name for o in sess.get_outputs()]
    compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_NUM_THREADS": 1})  # the CPU's default
    f32, bf16 = [], []
    for x in feeds:
        f32.append(_ng_score(spec, dict(zip(names, sess.run(names, {"image": x}), strict=True))))
        got = compiled.create_infer_request().infer({"image": x})
        bf16.append(_ng_score(spec, {o.get_any_name(): got[o] for o in compiled.outputs}))
    part = int(np.argmax(np.abs(np.subtract(f32, bf16))))
    assert abs(f32[part] - bf16[part]) > 1e-5, (f32[part], bf16[part])
    threshold = (f32[part] + bf16[part]) / 2
    gated = "NG" if f32[part] >= threshold else "OK"
    spec["outputs"][0]["threshold"] = threshold
    spec["golden"] = {"atol": 0.5, "rtol": 0.0}  # wide enough for bf16: the golden check does not decide here
    pkg = build_package(
        model,
        spec,
        tmp_path / "pkgs",
        signing_key=key,
        golden_inputs=golden_inputs("vision", width=SIZE, height=SIZE),
    )
    slot = ModelSlot("vision", ModelConfig(package=str(pkg), engine="openvino"), tmp_path / "data", [pub])
    await slot.start()
    try:
        got = slot.infer(Frame("cam", 1, 0.0, parts[part]))
        assert got.engine == "openvino"
        # before: the bf16 verdict, the other side of the threshold
        assert got.interpretation.verdict == gated, (f32[part], bf16[part], got.interpretation.score)
        assert got.interpretation.score == pytest.approx(f32[part], abs=1e-5)
    finally:
        await slot.stop()


def _wide_tolerance_package(tmp_path, key) -> str:
    """A vision package checked on ONNX Runtime only, its golden tolerance wide enough for bf16 and f16 to pass."""
    model = make_vision_onnx(tmp_path / "m.onnx", width=SIZE, height=SIZE, seed=5)
    spec = vision_spec(width=SIZE, height=SIZE, heatmap=True)
    spec["golden"] = {"atol": 0.5, "rtol": 0.0}
    return str(
        build_package(
            model,
            spec,
            tmp_path / "pkgs",
            signing_key=key,
            golden_inputs=golden_inputs("vision", width=SIZE, height=SIZE),
        )
    )


@_F32_DEFAULT
async def test_a_slot_serving_openvino_at_this_cpus_reduced_default_precision_says_which(tmp_path):
    """openvino_f32: false and a package whose tolerance the CPU's default meets: the slot serves at that precision
    (a verdict near a threshold may differ from the package's at f32) and its selection says so. Before, its
    summary read "fp32 on openvino", as at f32."""
    key, pub = make_keypair(tmp_path / "keys")
    cfg = ModelConfig(package=_wide_tolerance_package(tmp_path, key), engine="openvino", openvino_f32=False)
    slot = ModelSlot("vision", cfg, tmp_path / "data", [pub])
    await slot.start()
    try:
        summary = slot.status()["selection"]["summary"]
        default = _default_precision()
        assert summary.startswith(
            f"fp32 on openvino in {default} (this CPU's default: openvino_f32 is false)"
        ), summary
    finally:
        await slot.stop()


def _f16_capable() -> bool:
    import openvino as ov

    return "FP16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.skipif(
    not _f16_capable(), reason="this CPU's OpenVINO cannot run f16 (no AVX-512 FP16, not ARM)"
)
@pytest.mark.parametrize("tolerance", ["tight", "wide"])
async def test_a_cpu_whose_openvino_defaults_to_f16_is_said_to_run_f16_not_bf16(
    tmp_path, monkeypatch, tolerance
):
    """ARM's OpenVINO runs float layers in f16 by default, not bf16; emulated here by compiling at f16 every model
    the agent leaves at the CPU's default. The selection names the precision that ran: f16 missing the package's
    tolerance and served at f32, or meeting a wide one and served in f16. Before, the agent took the precision from
    this CPU's OpenVINO (bf16 on AMX) and said bf16 where f16 had run."""
    import edge_agent.engines as engines

    compile_real = engines.ov_compile

    def f16_default(src, props, **kw):
        props = dict(props)
        props.setdefault("INFERENCE_PRECISION_HINT", "f16")
        return compile_real(src, props, **kw)

    monkeypatch.setattr(engines, "ov_compile", f16_default)
    key, pub = make_keypair(tmp_path / "keys")
    pkg = (
        str(make_package(tmp_path, kind="vision", key=key))
        if tolerance == "tight"
        else _wide_tolerance_package(tmp_path, key)
    )
    slot = ModelSlot(
        "vision", ModelConfig(package=pkg, engine="openvino", openvino_f32=False), tmp_path / "d", [pub]
    )
    await slot.start()
    try:
        summary = slot.status()["selection"]["summary"]
        assert "bf16" not in summary, summary
        if tolerance == "tight":
            assert "at f32 (f16, this CPU's default, missed the golden check)" in summary, summary
            assert "fp32 on openvino in f16: output" in summary, summary
        else:
            assert summary.startswith("fp32 on openvino in f16 (this CPU's default"), summary
    finally:
        await slot.stop()
