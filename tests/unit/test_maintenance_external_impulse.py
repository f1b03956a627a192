"""A knock from outside the machine (a press next door, through the floor) is no fault: a lone impulse in a
window is UNSURE (external_impulse), counted, and counts towards no alarm, unless knocks keep coming (6 of the last
8 windows judged); a bearing's impacts, repeated at its defect orders through the window, still alarm with knocks
landing between them, and so does a steady 1x that a 50-Hz pickup's beat makes look like a knock."""

from __future__ import annotations

import math

import numpy as np

from bench._bearing_signals import Machine
from edge_agent.maintenance.baseline import Baseline, lone_impulse
from edge_agent.maintenance.settings import BaselineSettings, BearingSettings


def _settings(m: Machine) -> BaselineSettings:
    b = m.bearing
    return BaselineSettings(
        windows=60,
        bearing=BearingSettings(
            n_elements=b.n_elements,
            ball_d_mm=b.ball_d_mm,
            pitch_d_mm=b.pitch_d_mm,
            contact_angle_deg=b.contact_angle_deg,
        ),
    )


def _knock(m: Machine, rng: np.random.Generator, g: float) -> np.ndarray:
    """One floor-borne knock: a 140-Hz ring decaying in about 40 ms, somewhere in the window's first half."""
    out = np.zeros(m.n)
    i = int(rng.integers(0, m.n // 2))
    tau = np.arange(m.n - i) / m.fs
    out[i:] = g * np.exp(-tau * 25.0) * np.sin(2 * math.pi * 140.0 * tau)
    return out


def test_lone_knocks_do_not_alarm_knocks_that_keep_coming_do_a_bearing_fault_with_knocks_still_does(tmp_path):
    m = Machine(11, rpm=1750.0)
    b = Baseline(_settings(m), m.fs, m.n, path=tmp_path / "b.json", pipeline="p")
    for _ in range(60):
        b.process(m.window())
    assert b.state == "ready"
    rng = np.random.default_rng(3)
    # a knock in every other window: lone events
    knocked = [b.process(m.window() + i % 2 * _knock(m, rng, 1.0)) for i in range(12)]
    over = [
        v for v in knocked if v.anomalous
    ]  # a knock alone is over the threshold (or moves the speed found)
    assert not any(v.alarm for v in knocked)  # the former code: an alarm from the second knock on
    assert len(over) >= 4 and all(v.external_impulse for v in over) and b.external_impulses == len(over)
    assert b.status()["external_impulses"] == len(over) and over[0].to_dict()["external_impulse"] is True
    # knocks that keep coming (6 of the last 8 windows: a press locked to the window period) are no lone event:
    # judged as any window, they alarm
    assert any(b.process(m.window() + _knock(m, rng, 1.0)).alarm for _ in range(5))
    for _ in range(8):
        b.process(m.window())
    # an inner race's impacts repeat through the window: judged, and a knock louder than them in every other
    # window (not counted, not ending the run) does not keep them from alarming
    faulty = [b.process(m.window(0.5, "bearing_inner") + i % 2 * _knock(m, rng, 1.0)) for i in range(4)]
    assert not any(v.external_impulse for v in faulty[::2]) and faulty[-1].alarm
    assert faulty[-1].fault == "bearing_inner"


def test_a_lone_impulse_is_told_from_impacts_repeated_through_the_window():
    m = Machine(11, rpm=1750.0)
    rng = np.random.default_rng(5)
    assert lone_impulse(m.window() + _knock(m, rng, 1.0))
    assert not lone_impulse(m.window(0.5, "bearing_outer"))
    assert not lone_impulse(m.window(0.5, "bearing_inner"))
    assert not lone_impulse(np.zeros(m.n)) and not lone_impulse(np.zeros(8))


def test_a_steady_1x_beating_with_a_50_hz_pickup_is_no_lone_knock_its_growth_alarms():
    """A 2-pole motor at 2,940 rpm (1x at 49 Hz, a bin from 50 Hz at 25.6 kHz x 8192) with a 50-Hz pickup in its
    cable: the 1x and the pickup beat once a second, longer than the window (0.32 s), so a window holds one swell of
    a steady signal, told as a lone impulse on most windows. An imbalance x5 over the threshold in every window was
    then told as knocks in a row, which count towards no alarm: it never alarmed. Knocks that keep coming are no lone
    event (baseline.IMPULSE_REPEATS): the imbalance alarms."""
    fs, n = 25600, 8192
    t = np.arange(n) / fs
    rng = np.random.default_rng(1)

    def window(g1: float) -> np.ndarray:
        f1 = 49.0
        return (
            g1 * np.sin(2 * math.pi * f1 * t + rng.uniform(0, 2 * math.pi))
            + 0.03 * np.sin(2 * math.pi * 2 * f1 * t + rng.uniform(0, 2 * math.pi))
            + 0.06 * np.sin(2 * math.pi * 50.0 * t + rng.uniform(0, 2 * math.pi))
            + 0.02 * rng.standard_normal(n)
        )

    b = Baseline(BaselineSettings(windows=40, speed_tag="Speed"), fs, n, path=None, pipeline="p")
    speed = {"_shaft_speed": 49.0 * 60}
    for _ in range(40):
        b.process(window(0.12), speed)
    assert b.state == "ready"
    faulty = [b.process(window(0.6), speed) for _ in range(10)]
    assert all(v.anomalous for v in faulty)
    assert sum(lone_impulse(window(0.6)) for _ in range(10)) >= 6  # the steady signal told as a lone impulse
    assert (
        faulty[-1].alarm and faulty[-1].fault == "imbalance"
    )  # the former code: no alarm, every window a knock
