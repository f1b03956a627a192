"""A package swapped into the slot of a signal pipeline (a fleet rollout's hot swap, an admin's rollback) whose
window length or sample rate is not the one the pipeline's windows were sized for at its start is refused at
verify, naming both, and the old model serves on; so is one that needs a scalar input the window does not carry
(the config's check refuses such a model at a start). Such a package was swapped in: another length failed the model
on every window (``bad_input``; for good after an admin's rollback, which has no health window), another rate was
judged as if the windows were taken at it, silently. Real signed packages, the slot's install child, ONNX
Runtime, the real pipeline and windower."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from devices.base import Quality, Reading
from edge_agent.config import PipelineSettings, WindowSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from tests.support.models import (
    SIGNAL_FEATURES,
    build_package_for_tests,
    make_keypair,
    make_signal_onnx,
    signal_spec,
)


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")

    def package(version: str, scalars: tuple[str, ...] = (), **spec):
        n = SIGNAL_FEATURES + len(scalars)
        model = make_signal_onnx(tmp / "build" / version / "model.onnx", seed=len(spec), n_features=n)
        spec_ = signal_spec("machine-health", version, **spec)
        spec_["preprocessing"]["scalars"] = list(scalars)
        spec_["inputs"][0]["shape"] = ["batch", n]
        golden = {"features": np.random.default_rng(0).normal(0, 1, (4, n)).astype(np.float32)}
        return build_package_for_tests(model, spec_, tmp / "packages", key, golden, False)

    return {
        "v1": package("1.0.0"),
        "same": package("1.1.0"),
        "longer": package("1.2.0", window_samples=4096),
        "faster": package("1.3.0", sample_rate_hz=20000.0),
        "speed": package("1.4.0", scalars=("speed",)),  # a scalar input the pipeline's window does not carry
        "pub": pub,
    }


@pytest.mark.parametrize(
    ("to", "takes"),
    [
        (
            "longer",
            "takes 4096 samples at 10000 Hz; the pipeline's windows are 2048 samples at 10000 Hz, sized",
        ),
        (
            "faster",
            "takes 2048 samples at 20000 Hz; the pipeline's windows are 2048 samples at 10000 Hz, sized",
        ),
        ("speed", "needs scalar input(s) ['speed'], which the window does not carry (it carries []); every"),
        ("same", None),
    ],
)
async def test_a_package_of_another_window_or_rate_is_refused_at_a_hot_swap(tmp_path, pkgs, to, takes):
    slot = ModelSlot(
        "health", ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime"), tmp_path / "data", [pkgs["pub"]]
    )
    await slot.start()
    results = []

    async def on_result(res, item):
        results.append(res)

    settings = PipelineSettings(
        name="pump",
        source="plc",
        model="health",
        window=WindowSettings(waveform="Vibration", sample_rate_hz=10000),
    )
    pipe = Pipeline(settings, slot, ThreadPoolExecutor(1), on_result, data_dir=tmp_path / "data")
    pipe.prepare()
    pipe.start()
    rng, t = np.random.default_rng(0), [0.0]

    async def feed(n: int) -> None:  # readings of 1024 samples at 10 kHz, back to back: a window every 2
        for _ in range(n):
            t[0] += 0.1024
            await pipe.offer(Reading("plc", "Vibration", rng.normal(0, 1, 1024), t[0], t[0], Quality.GOOD))
            while len(pipe.queue):
                await asyncio.sleep(0.005)

    try:
        await feed(4)
        outcome = await slot.swap(pkgs[to], watch=False)  # (an admin's rollback: no health window to undo it)
        await feed(8)
        await asyncio.sleep(0.2)
    finally:
        await pipe.stop()
        await slot.stop()
    if takes is None:  # the same window and rate: swapped in, every window judged by it
        assert outcome.ok and [r.model_version for r in results[2:]] == ["1.1.0"] * 4, outcome
        return
    assert not outcome.ok and outcome.stage == "verify", outcome  # (was swapped in)
    assert outcome.reason.startswith(f"pipeline pump: model machine-health {outcome.to_version} {takes}"), (
        outcome
    )
    assert [r.model_version for r in results] == ["1.0.0"] * 6  # every window judged, by the model serving
    assert pipe.status()["errors"] == {}
