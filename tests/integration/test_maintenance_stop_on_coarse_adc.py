"""A machine stopped, its speed tag reading 0, read through a 16-bit input: its floor lies within a code or two, a
flat window. The pipeline's sensor check called it a dead sensor (``flatline``): a sensor_fault episode, "check the
sensor", at every stop. With the speed tag saying the shaft stands, it is the stop (UNSURE, stopped), no sensor
fault; the same flat window while the tag says the machine runs is still the sensor's. Real ONNX Runtime slot."""

from __future__ import annotations

import numpy as np

from edge_agent.maintenance.settings import BaselineSettings
from tests.integration.test_maintenance_healthy_variation import _run, package  # noqa: F401 (a fixture)
from tests.support.rotor_signals import rotor

STEP = 100.0 / 2**16  # a 16-bit input over +-50 g


async def test_a_flat_window_while_the_speed_tag_says_stopped_is_the_stop_not_a_dead_sensor(
    tmp_path,
    package,  # noqa: F811 (the fixture imported above)
):
    rng = np.random.default_rng(4)

    def coded(x: np.ndarray) -> np.ndarray:
        return np.round(x / STEP) * STEP

    floor = [coded(rng.normal(0, 0.0004, 2048)) for _ in range(15)]  # a stopped machine's floor: 0.4 mg
    feeds = (
        [(1476.0, coded(rotor(rng))) for _ in range(20)]
        + [(0.0, w) for w in floor[:3]]
        + [(1476.0, floor[3])]
        # the sensor dead (flat) while the machine runs, then a stop of 10 windows and a restart: the stop's flat
        # windows ended its episode ('reads a live signal again') at every stop, opened again at the restart
        + [(0.0, w) for w in floor[4:14]]
        + [(1476.0, floor[14])]
    )
    events: list = []
    baseline = BaselineSettings(windows=20, speed_tag="Speed")
    results = await _run(tmp_path, package, None, baseline, feeds, events=events)
    stop, running_flat = results[20:23], results[23]
    assert all(r.verdict == "UNSURE" and "stopped" in (r.reason or "") for r in stop), [
        r.reason for r in stop
    ]
    assert not any((r.outputs or {}).get("sensor") for r in stop)
    assert running_flat.verdict == "UNSURE" and (running_flat.reason or "").startswith("sensor: flat")
    told = [(e["active"], e["fault"]) for e in events if e["kind"] == "sensor_fault"]
    assert told == [(True, "flatline")], told
    assert (results[-1].reason or "").startswith("sensor: flat")
