"""Sensor-fault checks on single windows: real failure modes applied to healthy machines' windows are
named (flatline, clipped, held, spike), and healthy or degrading windows from two independent generators,
at other rates, window lengths, noise levels and ADC resolutions are never flagged; a waveform tag that
stops updating while its source's other tags flow is said once."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from bench._bearing_signals import FAULTS, Machine
from devices.base import Quality, Reading
from edge_agent import pipelines
from edge_agent.config import WindowSettings
from edge_agent.maintenance.sensor import check
from simulators.vibration import MachineSim, Scenario


def adc(x: np.ndarray, bits: int, full_scale: float) -> np.ndarray:
    """What an ADC of ``bits`` over +-full_scale hands over (codes scaled back to g)."""
    lsb = 2 * full_scale / 2**bits
    return np.clip(np.round(x / lsb), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * lsb


def _zero_packet(x, r):
    y = x.copy()
    i = int(r.integers(0, x.size - 256))
    y[i : i + 256] = 0.0  # a lost packet of 256 samples, filled with 0
    return y


def _frozen(x, r):
    y = x.copy()
    y[700:] = y[700]  # the value froze: the server repeats the last one
    return y


def _spike(x, r):
    y = x.copy()
    y[int(r.integers(2, x.size - 2))] = -50.0  # one EMI spike at full scale
    return y


def _clip(x, r):
    g = 49.9 / np.quantile(np.abs(x), 0.95)  # 5 % of the waveform beyond the +-49.9 g range
    return np.clip(x * g, -49.9, 49.9)


def _bias_flicker(x, r):
    return adc(2.5 + r.normal(0, 0.4 * 100 / 2**16, x.size), 16, 50.0)  # open input: bias, one code


FAULTY = {
    "constant": (
        lambda x, r: np.full_like(x, 0.37),
        "flatline",
        r"sensor: flat at 0\.37 for all \d+ samples",
    ),
    "bias flicker": (_bias_flicker, "flatline", r"sensor: flat at 2\.5 \(varies by "),
    "frozen": (_frozen, "held", r"sensor: held at -?\d"),
    "zero packet": (_zero_packet, "held", r"sensor: held at 0 for 256 samples in a row"),
    "clipped": (_clip, "clipped", r"sensor: clipped at -?49.9 (and -?49.9 )?in \d+\.\d % of samples"),
    "clipped 16-bit": (lambda x, r: adc(_clip(x, r), 16, 49.9), "clipped", r"sensor: clipped at -?49.9"),
    "spike": (_spike, "spike", r"sensor: 1 single-sample spike\(s\) up to -50, \d+x the rest"),
}


@pytest.mark.parametrize("name", list(FAULTY))
def test_a_sensor_fault_on_a_healthy_machine_is_named(name):
    fault, kind, pattern = FAULTY[name]
    for seed in range(6):
        m = Machine(40 + seed, fs=[10000.0, 25600.0][seed % 2], rpm=600.0 + 500 * seed)
        found = check(fault(m.window(), np.random.default_rng(seed)))
        assert found is not None and found.kind == kind and re.match(pattern, found.message), (seed, found)


def test_healthy_and_degrading_windows_are_never_flagged():
    rng = np.random.default_rng(7)
    windows = []
    for i in range(40):  # independent machines: rates, lengths, site noise, each fault type's degradation
        m = Machine(
            900 + i,
            fs=float(rng.choice([8192.0, 10000.0, 25600.0, 51200.0])),
            n=int(rng.choice([1024, 2048, 4096])),
            noise=float(rng.choice([0.1, 0.3, 1.0, 3.0])),
        )
        fault = FAULTS[i % len(FAULTS)]
        for _ in range(2):
            x = m.window(float(rng.uniform(0, 1)), fault)
            # as DAQs hand it over: floats, 24- and 16-bit codes, a 12-bit MEMS (+-16 g), m/s2
            windows += [x, adc(x, 24, 50.0), adc(x, 16, 50.0), adc(x, 16, 5.0), adc(x, 12, 16.0)]
            windows.append(adc(x * 9.80665, 16, 490.0))
    sim = MachineSim(
        3,
        Scenario.from_dict(
            {
                "phases": [
                    {"fault": "healthy", "duration_s": 30},
                    {"fault": "bearing_outer", "duration_s": 300, "degrade": True},
                ]
            }
        ),
    )
    for _ in range(40):  # the project's simulator, healthy then degrading to failure and beyond
        x, _st = sim.step(9.0)
        windows += [x, adc(x, 16, 50.0)]
    flagged = [(i, f.message) for i, w in enumerate(windows) if (f := check(w)) is not None]
    assert len(windows) == 560 and flagged == []


def test_a_waveform_that_stops_while_other_tags_update_is_said_once_and_when_it_is_back(monkeypatch):
    """An OPC UA server notifies changes only: a stuck sensor's array, repeated by the server, sends nothing,
    so no window (and no result) says so; the windower does, once, while the source's other tags flow."""
    monkeypatch.setattr(pipelines, "STALE_AFTER_S", 0.05)
    events = []
    w = pipelines.Windower("plc", WindowSettings(waveform="vib"), 64, pipeline="pump", on_event=events.append)
    w.raw_check = lambda x, scalars: check(x)  # a vibration pipeline (sensor checks on)
    x = Machine(3).window()[:64]
    for i in range(3):
        w.add_all(Reading("plc", "vib", x + i, float(i), float(i), Quality.GOOD))
        w.add_all(Reading("plc", "temp", 40.0, float(i), float(i), Quality.GOOD))
    assert events == [] and w.stale is None
    time.sleep(0.15)
    for i in range(3):  # the vibration tag stopped; the temperature still updates
        w.add_all(Reading("plc", "temp", 41.0 + i, 3.0 + i, 3.0 + i, Quality.GOOD))
    assert [(e["fault"], e["active"]) for e in events] == [("stale", True)]
    assert "no new reading of waveform tag 'vib' of source plc for " in events[0]["message"]
    assert w.stale is not None and w.notices.counts["waveform_stale"] == 1
    w.add_all(Reading("plc", "vib", x, 6.0, 6.0, Quality.GOOD))
    assert [(e["fault"], e["active"]) for e in events] == [
        ("stale", True),
        ("stale", False),
    ] and w.stale is None


def test_a_window_beyond_any_sensors_range_is_overrange_and_refused_by_the_features():
    """A corrupt payload (1e100): formerly OverflowError out of the kurtosis, a counted baseline error a window."""
    import warnings

    from model_packager.condition import condition_features
    from tests.support.rotor_signals import rotor

    x = rotor(np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning a window
        found = check(x * 1e100)
        assert found is not None and found.kind == "overrange" and "e+98" in found.message
        assert check(x * 1e4) is None  # a large window of a physical sensor is judged
        with pytest.raises(ValueError, match="within"):
            condition_features(x * 1e100, 10000.0, 24.6)
