"""A process state's tag through a real pipeline (its windower, an ONNX Runtime slot): one that reads BAD
leaves the windows without a state, yet a fault over every learned state's threshold still alarms, and
healthy windows of either state do not; a speed tag that is the state tag too still gives the speed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench._bearing_signals import Machine
from devices.base import Quality, Reading
from edge_agent.config import PipelineSettings, WindowSettings
from edge_agent.maintenance.settings import BaselineSettings, ProcessState
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from tests.integration.test_baseline_process_states import RPM, spindle_window
from tests.support.models import SIGNAL_RATE_HZ, make_keypair, make_package
from tests.support.waits import until


async def start_pipeline(tmp_path, name: str, baseline: BaselineSettings, results: list, events: list):
    """A signal pipeline on an ONNX Runtime slot, its results and events into the lists given."""
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="signal", key=key)
    slot = ModelSlot(
        "health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    settings = PipelineSettings(
        name=name,
        source="plc",
        model="health",
        window=WindowSettings(waveform="Vibration", sample_rate_hz=SIGNAL_RATE_HZ, scalars={}),
        baseline=baseline,
    )

    async def on_result(res, item):
        results.append(res)

    pipe = Pipeline(
        settings, slot, ThreadPoolExecutor(1), on_result, on_event=events.append, data_dir=tmp_path / "data"
    )
    pipe.prepare()
    pipe.start()
    return slot, pipe


async def test_a_state_tag_gone_bad_still_alarms_a_fault_over_every_learned_state(tmp_path):
    """The spindle commissioned idle and cutting; then its ``Cutting`` tag reads BAD (the PLC's link to
    the mode word lost): no window has a state (the windower drops a value that is not GOOD).
    Healthy windows of either state do not alarm; a bearing fault, over the threshold of both states,
    does (the former agent called every such window UNSURE for as long as the tag stayed BAD)."""
    m = Machine(44, fs=SIGNAL_RATE_HZ, n=2048, rpm=RPM)
    rng = np.random.default_rng(9)
    baseline = BaselineSettings(
        windows=60,
        speed_tag="Speed",
        state_tag="Cutting",
        states=[ProcessState(name="idle", max=0.5), ProcessState(name="cutting", min=0.5)],
        iso_alarm_zone="off",
    )
    results: list = []
    slot, pipe = await start_pipeline(tmp_path, "spindle", baseline, results, [])
    t = [0.0]

    async def feed(n: int, cutting: bool | None, severity: float = 0.0, fault: str = "healthy") -> None:
        for _ in range(n):
            want = len(results) + 1
            t[0] += 1.0
            state = Quality.BAD if cutting is None else Quality.GOOD
            await pipe.offer(Reading("plc", "Speed", RPM, t[0], t[0], Quality.GOOD))
            await pipe.offer(Reading("plc", "Cutting", float(bool(cutting)), t[0], t[0], state))
            x = spindle_window(m, bool(cutting), rng, severity, fault)
            await pipe.offer(Reading("plc", "Vibration", x, t[0], t[0], Quality.GOOD))
            await until(lambda w=want: len(results) >= w, timeout_s=60, what="the window's result")

    try:
        await feed(30, cutting=False)
        await feed(30, cutting=True)
        st = pipe.status()["baseline"]
        assert {k: v["state"] for k, v in st["process_states"].items()} == {
            "idle": "ready",
            "cutting": "ready",
        }
        results.clear()
        await feed(12, cutting=None)  # the tag reads BAD; the spindle idles, healthy
        # (the windower forgets a BAD tag's value: these and the next windows have no state)
        assert sum(r.verdict == "NG" for r in results) <= 1
        results.clear()
        # still BAD: the spindle cuts, healthy (louder than idle, as commissioned cutting)
        for _ in range(12):
            want = len(results) + 1
            t[0] += 1.0
            x = spindle_window(m, True, rng)
            await pipe.offer(Reading("plc", "Vibration", x, t[0], t[0], Quality.GOOD))
            await until(lambda w=want: len(results) >= w, timeout_s=60, what="the window's result")
        assert sum(r.verdict == "NG" for r in results) <= 1
        assert pipe.status()["baseline"]["not_judged"].get("(none)", 0) >= 24
        results.clear()
        await feed(8, cutting=None, severity=0.7, fault="bearing_outer")
    finally:
        await pipe.stop()
        await slot.stop()
    assert sum(r.verdict == "NG" for r in results) >= 3, [(r.verdict, r.reason) for r in results]


async def test_the_speed_tag_as_state_tag_still_gives_the_baseline_its_speed(tmp_path):
    """docs/maintenance.md offers a speed tag as state_tag (``{name: low, max: 1200}``). Given as both
    speed_tag and state_tag, the windower kept the tag for the state only: the baseline lost its speed
    tag (the shaft speed searched in the spectrum, stops no longer told by the tag)."""
    m = Machine(45, fs=SIGNAL_RATE_HZ, n=2048, rpm=RPM)
    baseline = BaselineSettings(
        windows=30,
        speed_tag="Speed",
        state_tag="Speed",
        states=[ProcessState(name="low", max=1200), ProcessState(name="high", min=1200)],
        iso_alarm_zone="off",
    )
    results: list = []
    events: list = []
    slot, pipe = await start_pipeline(tmp_path, "fan", baseline, results, events)
    try:
        for i in range(34):
            want = len(results) + 1
            await pipe.offer(Reading("plc", "Speed", RPM, float(i), float(i), Quality.GOOD))
            await pipe.offer(Reading("plc", "Vibration", m.window(), float(i), float(i), Quality.GOOD))
            await until(lambda w=want: len(results) >= w, timeout_s=60, what="the window's result")
    finally:
        await pipe.stop()
        await slot.stop()
    st = pipe.status()["baseline"]
    assert st["process_states"]["high"]["state"] == "ready"
    last = results[-1].outputs["baseline"]
    assert last["process_state"] == "high" and last["speed_estimated"] is False, last
    assert not [e for e in events if e["kind"] == "baseline_speed"]  # no speed searched in the spectrum
