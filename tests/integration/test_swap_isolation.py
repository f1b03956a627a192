"""A swap's heavy loading stays off the serving process: OpenVINO's ``convert_model`` (which holds the
GIL for up to seconds) runs in a low-priority helper process while another model serves, and gives
the same model as the conversion in process; a helper that cannot run falls back to it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from edge_agent.models.config import ModelConfig  # noqa: E402
from edge_agent.models.slot import ModelSlot  # noqa: E402
from model_packager import load_trusted_keys, open_package, runtimes  # noqa: E402
from tests.support.models import make_keypair, make_package  # noqa: E402
from tests.support.peers import child_pids  # noqa: E402


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iso")
    key, pub = make_keypair(tmp / "keys")
    return {
        "pub": pub,
        "v1": make_package(tmp, version="1.0.0", key=key, out_dir=tmp / "p1"),
        "v2": make_package(tmp, version="1.1.0", key=key, seed=1, out_dir=tmp / "p2"),
        "tmp": tmp,
    }


def _outputs(model) -> dict:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 64, 64)).astype(np.float32)
    res = compiled({compiled.inputs[0].get_any_name(): x})
    return {o.get_any_name(): np.asarray(res[o]) for o in compiled.outputs}


def test_the_helper_converts_in_another_process_to_the_same_model(pkgs, monkeypatch):
    opened = open_package(pkgs["v1"], pkgs["tmp"] / "open1", load_trusted_keys([pkgs["pub"]]))
    here = _outputs(runtimes.ov_read(opened.model_path))

    def refuse(*a, **kw):
        raise AssertionError("convert_model ran in the serving process")

    monkeypatch.setattr(runtimes, "_convert", refuse)  # the serving process's one path to convert_model
    isolated = _outputs(runtimes.ov_read(opened.model_path, isolated=True))
    assert here.keys() == isolated.keys()
    for k in here:
        np.testing.assert_array_equal(here[k], isolated[k])


def test_a_helper_that_cannot_start_falls_back_to_converting_here(pkgs, monkeypatch, caplog):
    opened = open_package(pkgs["v1"], pkgs["tmp"] / "open2", load_trusted_keys([pkgs["pub"]]))
    monkeypatch.setattr(sys, "executable", str(pkgs["tmp"] / "no-such-python"))
    with caplog.at_level(logging.WARNING, logger="model_packager.runtimes"):
        model = runtimes.ov_read(opened.model_path, isolated=True)
    assert _outputs(model)
    assert "opening model.onnx in a helper process failed" in caplog.text and "this process" in caplog.text


async def test_a_swap_converts_in_the_helper_and_a_start_in_process(pkgs, monkeypatch, tmp_path):
    calls = []
    real = runtimes._convert
    monkeypatch.setattr(runtimes, "_convert", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    slot = ModelSlot(
        "vision",
        ModelConfig(package=str(pkgs["v1"]), engine="openvino", openvino_f32=True),
        tmp_path / "data",
        [pkgs["pub"]],
    )
    await slot.start()  # nothing serves yet: converted here, the quickest way to a first result
    assert len(calls) == 1 and slot.engine_name == "openvino"
    outcome = await slot.swap(pkgs["v2"], watch=False)
    assert outcome.ok and slot.version == "1.1.0"
    assert len(calls) == 1, "the swap converted the new model on the serving process's threads"
    await slot.stop()


async def test_stopping_mid_conversion_stops_the_helper_and_the_old_model_stays(pkgs, monkeypatch, tmp_path):
    """A stop (SIGTERM) while a swap's conversion helper still works (here one that hangs, as a stuck
    conversion would): the helper is killed with the slot instead of being waited for (up to 300 s; a
    process exit waits for the swap's thread), the swap ends as a refusal without converting here
    instead, nothing is marked failed, and the next start runs the model that had passed."""
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="openvino", openvino_f32=True)
    slot = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    await slot.start()
    monkeypatch.setattr(
        runtimes, "_OV_HELPER", "import time; time.sleep(120)"
    )  # a conversion that never ends
    before = child_pids()
    swap = asyncio.create_task(slot.swap(pkgs["v2"], watch=False))
    helper: set[int] = set()
    try:
        async with asyncio.timeout(10):  # the verifier child comes and goes first (reaped before loading)
            while not (helper := child_pids() - before if slot.state == "smoke_testing" else set()):
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        await slot.stop()
        deadline = time.monotonic() + 2
        while child_pids() & helper and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not child_pids() & helper, "the conversion helper outlived the slot's stop"
        async with asyncio.timeout(2):
            outcome = await swap
        assert not outcome.ok and "stopped" in (outcome.reason or ""), outcome
    finally:
        for pid in child_pids() & helper:  # (former code) never leave the hanging helper behind
            os.kill(pid, signal.SIGKILL)
        await asyncio.wait({swap}, timeout=30)
    assert not slot.store.state().get("failed"), "a stop is not the package's fault"
    again = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    await again.start()
    assert again.version == "1.0.0"
    await again.stop()


async def test_a_model_that_crashes_its_helper_is_refused_not_opened_in_the_agent(
    pkgs, monkeypatch, tmp_path
):
    """A model on which OpenVINO crashes (a library bug on a graph it was never given before, or a hostile
    signer's) crashed the conversion helper, and the agent then converted it in its own process: the crash
    took the serving agent down, at every start while the fleet wanted that version. It is now refused at
    load, naming the crash, and the old model serves on (here the helper kills itself with SIGSEGV)."""
    calls = []
    real = runtimes._convert
    monkeypatch.setattr(runtimes, "_convert", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="openvino", openvino_f32=True)
    slot = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    await slot.start()
    calls.clear()
    monkeypatch.setattr(runtimes, "_OV_HELPER", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    outcome = await slot.swap(pkgs["v2"], watch=False)
    assert not outcome.ok and outcome.stage == "load", outcome
    assert "crashed a helper process (signal 11)" in (outcome.reason or ""), outcome
    assert not calls, "the model was converted in the serving process after its helper crashed"
    assert slot.version == "1.0.0"
    await slot.stop()
