"""A signed package whose manifest contradicts itself or its model never serves, on real ONNX Runtime
sessions: it is refused before the switch (verify, or the smoke test reading the golden outputs as every
frame's will be read) and the old model keeps serving; and whatever still fails on every item after the
switch (preprocessing or postprocessing raising) is counted as an error, so the health watch rolls it back.
Before, such a package installed, every frame failed outside the health counters, and the watch kept it."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import yaml

from devices.base import Frame
from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.slot import InferenceError, ModelSlot, SlotError
from model_packager import build_package
from tests.support.models import golden_inputs, make_keypair, make_package, make_vision_onnx, vision_spec
from tests.unit.test_package_hostile import _manifest, _sig, _with


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")
    return {
        "v1": make_package(tmp, kind="vision", version="1.0.0", key=key, seed=1),
        "v2": make_package(tmp, kind="vision", version="1.1.0", key=key, seed=2),
        "small": make_package(tmp, kind="vision", version="1.2.0", key=key, seed=3, width=32, height=32),
        "key": key,
        "pub": pub,
        "tmp": tmp,
    }


def _slot(tmp_path, pkgs, package, **health) -> ModelSlot:
    cfg = ModelConfig(
        package=str(package),
        engine="onnxruntime",
        health=HealthConfig(**{"window_s": 1.0, "min_items": 10, **health}),
    )
    return ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])


def _frame(seq: int, dtype=np.uint8) -> Frame:
    img = np.random.default_rng(seq).integers(0, 255, (64, 64, 3)).astype(dtype)
    return Frame("cam", seq, time.time(), img)


def _resigned(pkgs, tmp_path, edit, version="1.1.0"):
    """v2 with its manifest edited and signed again by the trusted key (a trainer bug, a hand edit)."""
    doc = yaml.safe_load(_manifest(pkgs["v2"]))
    doc["version"] = version
    edit(doc)
    data = yaml.safe_dump(doc, sort_keys=False).encode()
    out = tmp_path / f"part-inspection-{version}.edgepkg"
    return _with(pkgs["v2"], out, manifest=data, sig=_sig(data, pkgs["key"]))


def _symbolic_classes_7_labels(d):
    d["outputs"][0].update(shape=["batch", "classes"], labels=["ok", "a", "b", "c", "d", "e", "f"])


REFUSALS = {
    # (manifest edit, stage, words of the reason)
    "nan-threshold": (
        lambda d: d["outputs"][0].update(threshold=float("nan")),
        "verify",
        "manifest outputs[0].threshold is nan",
    ),
    "nan-atol": (lambda d: d["golden"].update(atol=float("nan")), "verify", "manifest golden.atol is nan"),
    "1000-labels": (  # the most an output may have (model_packager MAX_LABELS), for 6 values
        lambda d: d["outputs"][0].update(labels=["ok"] + [f"l{i}" for i in range(999)]),
        "verify",
        "manifest outputs[0].labels: 1000 labels but the output has 6 values per item",
    ),
    "width-32-for-a-64-model": (
        lambda d: d["preprocessing"].update(width=32, height=32),
        "verify",
        "preprocessing.width gives 32 where the model takes 64",
    ),
    "labels-for-a-symbolic-class-axis": (
        _symbolic_classes_7_labels,
        "golden",
        "package part-inspection-1.1.0: manifest outputs[0].labels has 7 labels but output 'logits' gives 6",
    ),
}


async def test_a_self_contradicting_package_is_refused_before_the_switch_and_the_old_model_serves(
    tmp_path, pkgs
):
    # one slot, refused each package in turn (a refusal leaves it as it was for the next swap): each case
    # under a version of its own, the one whose reason names the package under 1.1.0
    s = _slot(tmp_path, pkgs, pkgs["v1"])
    await s.start()
    try:
        for i, (case, (edit, stage, words)) in enumerate(REFUSALS.items()):
            version = "1.1.0" if "1.1.0" in words else f"1.1.{i + 1}"
            out = await s.swap(_resigned(pkgs, tmp_path, edit, version))
            assert not out.ok and out.stage == stage and words in out.reason, (case, out)
            assert out.reason.isprintable(), case
            assert s.state == "active" and s.version == "1.0.0", case
            inf = s.infer(_frame(1))
            assert inf.version == "1.0.0" and inf.interpretation.verdict in ("OK", "NG"), case
    finally:
        await s.stop()


async def test_a_first_start_on_labels_that_do_not_fit_the_model_fails_with_the_field(tmp_path, pkgs):
    # nothing to restore on a first start: the slot must not start serving a model that fails every frame
    s = _slot(tmp_path, pkgs, _resigned(pkgs, tmp_path, _symbolic_classes_7_labels))
    with pytest.raises(SlotError, match=r"outputs\[0\]\.labels has 7 labels but output 'logits' gives 6"):
        await s.start()
    assert s.version is None


async def test_preprocessing_that_raises_on_every_frame_is_counted_and_rolled_back(
    tmp_path, pkgs, monkeypatch
):
    # the 32x32 model's preprocessing fails on every frame with an error of the library's own (an OpenCV
    # error, not a PreprocessError); the 64x64 one's does not. (Frames of 32-bit integers did this: OpenCV
    # resizes no int32 image. The slot now reads them as the 8-bit pixels they hold.)
    import edge_agent.models.slot as slot_module

    real = slot_module.image_tensor

    def failing(img, spec, dtype="float32"):
        if spec.width == 32:
            raise RuntimeError("OpenCV: (-215:Assertion failed) func != 0 && cn <= 4 in function 'resize'")
        return real(img, spec, dtype)

    monkeypatch.setattr(slot_module, "image_tensor", failing)
    s = _slot(tmp_path, pkgs, pkgs["v1"])
    await s.start()
    for i in range(15):
        assert s.infer(_frame(i, np.int32)).version == "1.0.0"
    out = await s.swap(pkgs["small"])
    assert out.ok and s.version == "1.2.0"
    reasons = set()
    for i in range(600):
        if s.version == "1.0.0":
            break
        try:
            s.infer(_frame(i, np.int32))
        except InferenceError as exc:
            reasons.add(exc.reason)
        await asyncio.sleep(0.05)
    assert s.version == "1.0.0", s.status()
    assert reasons == {"preprocess_error"}
    for _ in range(600):  # the rollback switches first, then records its outcome
        if s.last_outcome.stage == "rolled_back":
            break
        await asyncio.sleep(0.05)
    assert s.last_outcome.stage == "rolled_back" and "error rate 100.0%" in s.last_outcome.reason, s.status()
    assert s.counters["errors"] >= 10 and s.counters["rollbacks"] == 1
    await s.stop()


async def test_a_frame_the_input_statistics_cannot_measure_is_a_counted_error(tmp_path, pkgs, monkeypatch):
    tmp = tmp_path / "stats"
    model = make_vision_onnx(tmp / "model.onnx", seed=1)
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(8)]
    pkg = build_package(
        model,
        vision_spec(),
        tmp / "out",
        signing_key=pkgs["key"],
        golden_inputs=golden_inputs("vision"),
        input_images=frames,
    )
    s = _slot(tmp_path, pkgs, pkg)
    await s.start()
    assert s.infer(_frame(1), unsure_tolerance=1.0).version == "1.0.0"
    import model_packager.inputstats as inputstats

    def failing(*args):  # as OpenCV failed on an int32 frame, which the slot now reads as its 8-bit pixels
        raise RuntimeError("OpenCV: (-215:Assertion failed) in function 'cvtColor'")

    monkeypatch.setattr(inputstats, "check", failing)
    with pytest.raises(InferenceError, match="cannot be measured against part-inspection-1.0.0") as ei:
        s.infer(_frame(2), unsure_tolerance=1.0)
    assert ei.value.reason == "bad_input"
    h = s._active.health
    assert (h.n, h.errors, s.counters["errors"]) == (2, 1, 1)
    await s.stop()


async def test_a_frame_is_checked_against_the_training_inputs_while_the_check_threads_are_busy(
    tmp_path, pkgs
):
    """The UNSURE check runs on the process's two check threads beside inference. With both busy (other
    frame pipelines' checks, or threads the loaded machine had not scheduled yet), a frame whose engine
    was done waited for a check thread before: here it never returned until they were freed. The thread
    that ran the engine now checks the frame itself, and a dark frame is still called UNSURE."""
    import threading

    from edge_agent.models.slot import _unsure_checks

    tmp = tmp_path / "stats"
    model = make_vision_onnx(tmp / "model.onnx", seed=1)
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(8)]
    pkg = build_package(
        model,
        vision_spec(),
        tmp / "out",
        signing_key=pkgs["key"],
        golden_inputs=golden_inputs("vision"),
        input_images=frames,
    )
    s = _slot(tmp_path, pkgs, pkg)
    await s.start()
    dark = Frame("cam", 1, time.time(), np.full((64, 64, 3), 4, np.uint8))
    release = threading.Event()
    started = [threading.Event(), threading.Event()]

    def hold(ev: threading.Event) -> None:
        ev.set()
        release.wait()

    busy = [_unsure_checks().submit(hold, ev) for ev in started]
    try:
        for ev in started:  # both check threads are taken
            assert await asyncio.to_thread(ev.wait, 30)
        async with asyncio.timeout(30):  # a guard against the former hang, not a measure
            r = await asyncio.to_thread(s.infer, dark, 1.0)
        assert r.interpretation.verdict == "UNSURE"
        assert (r.interpretation.reason or "").startswith("underexposed"), r.interpretation.reason
        assert s.infer(_frame(2), unsure_tolerance=1.0).interpretation.verdict in ("OK", "NG")
    finally:
        release.set()
        for f in busy:
            f.result()
        await s.stop()


async def test_the_unsure_check_is_handed_to_its_thread_once_the_frame_is_preprocessed(
    tmp_path, pkgs, monkeypatch
):
    """The check holds the interpreter between its many small NumPy calls; handed to its thread before the
    preprocessing, it ran beside it and stretched it (the preprocessing needs the interpreter between its
    OpenCV calls), where the engine's run releases it throughout. It is now handed over once the frame is
    preprocessed, and its verdict is the same: a dark frame is UNSURE, underexposed."""
    from edge_agent.models import slot as slot_module

    tmp = tmp_path / "stats"
    model = make_vision_onnx(tmp / "model.onnx", seed=1)
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(8)]
    pkg = build_package(
        model,
        vision_spec(),
        tmp / "out",
        signing_key=pkgs["key"],
        golden_inputs=golden_inputs("vision"),
        input_images=frames,
    )
    s = _slot(tmp_path, pkgs, pkg)
    await s.start()
    order: list[str] = []
    checks = slot_module._unsure_checks()
    tensor = slot_module.image_tensor

    class Recorded:
        def submit(self, fn, *args):
            order.append("check handed over")
            return checks.submit(fn, *args)

    def preprocess(*args, **kwargs):
        order.append("preprocessing")
        return tensor(*args, **kwargs)

    monkeypatch.setattr(slot_module, "_unsure_checks", Recorded)
    monkeypatch.setattr(slot_module, "image_tensor", preprocess)
    try:
        dark = Frame("cam", 1, time.time(), np.full((64, 64, 3), 4, np.uint8))
        r = await asyncio.to_thread(s.infer, dark, 1.0)
        assert order == ["preprocessing", "check handed over"]
        assert r.interpretation.verdict == "UNSURE"
        assert (r.interpretation.reason or "").startswith("underexposed"), r.interpretation.reason
    finally:
        await s.stop()
