"""A waveform's sample rate as its source states it (OPC UA node metadata, an MQTT payload field) is checked
like the config's: without a configured rate the first stated one decides (resampled when the ratio to the
model's is clean, refused naming both rates otherwise); a rate that changes at run time, or one that
contradicts the config, is an event and its windows are skipped and counted, never scored at a wrong rate;
back at the rate in use, scoring resumes. The JSON codec reads the rate field; the OPC UA x axis gives it."""

from __future__ import annotations

import numpy as np
import pytest
from asyncua import ua

from devices.base import Quality, Reading
from devices.opcua.rates import RateError, StatedRates, x_axis_span_s
from edge_agent.config import WindowSettings
from edge_agent.pipelines import Windower
from protocols import json_codec


def feed(w: Windower, rate: float | None, seconds: float = 0.5, chunk: int = 1024) -> list:
    fs = rate or 10000.0
    x = np.sin(2 * np.pi * 250 * np.arange(int(fs * seconds)) / fs)
    out = []
    for i in range(0, len(x) - chunk + 1, chunk):
        win = w.add(Reading("plc", "vib", x[i : i + chunk], i / fs, i / fs, Quality.GOOD, rate))
        if win is not None:
            out.append(win)
    return out


def windower(rate_hz=None):
    events = []
    w = Windower(
        "plc",
        WindowSettings(waveform="vib", sample_rate_hz=rate_hz),
        2048,
        pipeline="pump",
        resample=(25, 64) if rate_hz == 25600 else (1, 1),
        model_rate_hz=10000.0,
        on_event=events.append,
    )
    return w, events


def test_without_a_configured_rate_the_stated_rate_is_resampled_or_refused_naming_both():
    w, events = windower()
    wins = feed(w, 25600.0, seconds=1.0)
    assert wins and all(x.waveform.shape == (2048,) for x in wins)
    mag = np.abs(np.fft.rfft(wins[-1].waveform * np.hanning(2048)))
    assert (
        abs(np.argmax(mag) * 10000 / 2048 - 250) < 6
    )  # the tone where it belongs: resampled, not relabelled
    assert [e["kind"] for e in events] == ["sample_rate_stated"] and w.rate_status()["from"] == "source"
    w, events = windower()
    assert feed(w, 10001.0) == []
    assert [e["kind"] for e in events] == ["sample_rate_refused"]  # once, not per reading
    assert "10001 Hz" in events[0]["message"] and "10000 Hz" in events[0]["message"]
    assert w.rate_status()["skipped_readings"] == w.notices.counts["sample_rate_refused"] > 1


def test_a_rate_that_changes_at_run_time_is_an_event_and_its_windows_are_skipped_until_it_is_back():
    w, events = windower(25600)
    assert feed(w, 25600.0)
    assert feed(w, 51200.0) == []  # the sensor was reconfigured: not scored at a wrong rate
    assert [e["kind"] for e in events] == ["sample_rate_changed"]
    msg = events[0]["message"]
    assert "now states 51200 Hz" in msg and "runs at 25600 Hz (window.sample_rate_hz)" in msg
    assert w.rate_status()["skipped_readings"] > 0 and w.rate_status()["stated_now_hz"] == 51200.0
    wins = feed(w, 25600.0, seconds=0.3)
    assert wins and events[-1]["kind"] == "sample_rate_restored"
    assert feed(w, None, seconds=1.0)  # readings without a stated rate: the configured one, as before


def test_the_json_codec_reads_a_waveforms_rate_from_the_payload():
    m = json_codec.JsonMapping(values={"v": "vib"}, tag_prefix="")
    run = json_codec.compile_decoder(m, rates=True)
    [(tag, v, _, rate)] = run(b'{"v": [1, 2, 3], "sample_rate_hz": 25600, "ts": 1}', 0.0)
    assert (tag, list(v), rate) == ("vib", [1.0, 2.0, 3.0], 25600.0)
    assert run(b'{"v": [1, 2], "rate_hz": 12800}', 0.0)[0][3] == 12800.0
    assert run(b'{"v": [1, 2]}', 0.0)[0][3] is None
    with pytest.raises(
        json_codec.CodecError, match="'sample_rate_hz' .* is -5; expected a positive number of Hz"
    ):
        run(b'{"v": [1, 2], "sample_rate_hz": -5}', 0.0)
    named = json_codec.compile_decoder(
        json_codec.JsonMapping(values={"v": "vib", "t": "temp"}, rate_field="meta.fs"), rates=True
    )
    assert [x[3] for x in named(b'{"v": [1, 2], "t": 3.5, "meta": {"fs": 8192}}', 0.0)] == [8192.0, None]
    assert json_codec.compile_decoder(m)(b'{"v": [1], "sample_rate_hz": 1}', 0.0)[0][3:] == ()  # 3-tuples


def _axis(unit: str, unit_id: int, low: float, high: float, steps=None):
    return ua.AxisInformation(
        EngineeringUnits=ua.EUInformation(UnitId=unit_id, DisplayName=ua.LocalizedText(unit)),
        EURange=ua.Range(Low=low, High=high),
        AxisSteps=steps or [],
    )


def test_the_opcua_x_axis_states_the_rate_of_a_time_waveform_and_a_spectrum_states_none():
    rates = StatedRates()
    rates.span_s["vib"] = x_axis_span_s(_axis("ms", 4403766, 0.0, 2047 / 25.6))  # 2048 samples over 79.96 ms
    assert rates.rate_for("vib", np.zeros(2048)) == pytest.approx(25600.0)
    assert x_axis_span_s(_axis("s", 0, 0.0, 0.5)) == 0.5
    with pytest.raises(RateError, match="in 'hz', not time"):
        x_axis_span_s(_axis("Hz", 4937544, 0.0, 5000.0))
    with pytest.raises(RateError, match="not equidistant"):
        x_axis_span_s(_axis("s", 5457219, 0.0, 1.0, steps=[0.0, 0.1, 0.5]))
    rates.nodes[ua.NodeId(7, 2)] = ["acc"]  # a vendor's rate node, as setup() registers it
    rates.on_change(ua.NodeId(7, 2), 12800.0)
    assert rates.rate_for("acc", np.zeros(4)) == 12800.0 and rates.rate_for("temp", 1.0) is None
