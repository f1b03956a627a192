"""Sample rate is part of the contract: a tag's declared rate is resampled to the model's when the
ratio is clean, and refused (naming both rates) at validate and at start otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from devices.base import Quality, Reading
from edge_agent.config import ConfigError, WindowSettings, parse_config
from edge_agent.pipelines import Windower
from model_packager.condition import RateError, resample, resample_plan
from tests.support.models import make_keypair, make_package


def test_clean_ratios_resample_and_others_are_refused_with_both_rates():
    assert resample_plan(25600, 10000) == (25, 64)
    assert resample_plan(10000, 10000) == (1, 1)
    with pytest.raises(RateError, match=r"10001 Hz.*10000 Hz.*not a clean ratio"):
        resample_plan(10001, 10000)
    with pytest.raises(RateError, match=r"5000 Hz but the model takes 10000 Hz"):
        resample_plan(5000, 10000)


def test_a_25k6_tone_keeps_its_frequency_and_loses_what_is_above_the_model_nyquist():
    fs_in, n_in = 25600.0, 64 * 40
    t = np.arange(n_in) / fs_in
    x = np.sin(2 * np.pi * 1000 * t) + 0.5 * np.sin(2 * np.pi * 8000 * t)  # 8 kHz: above 5 kHz, must go
    y = resample(x, 25, 64)
    assert len(y) == 25 * 40
    mag = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    f = np.fft.rfftfreq(len(y), 1 / 10000.0)
    assert abs(f[np.argmax(mag)] - 1000) < 15
    aliased = mag[(f > 1900) & (f < 2100)].max()  # 8 kHz would fold to 2 kHz
    assert aliased < 1e-3 * mag.max()


def test_the_windower_buffers_at_the_tag_rate_and_hands_the_model_its_own():
    w = Windower("plc", WindowSettings(waveform="vib", sample_rate_hz=25600), 2048, resample=(25, 64))
    t = np.arange(25600) / 25600
    x = np.sin(2 * np.pi * 250 * t)
    out = None
    for i in range(0, len(x), 1280):
        ts = i / 25600  # readings stamped with their first sample's time (contiguous)
        out = out or w.add(Reading("plc", "vib", x[i : i + 1280], ts, ts, Quality.GOOD))
    assert out is not None and out.waveform.shape == (2048,)
    mag = np.abs(np.fft.rfft(out.waveform * np.hanning(2048)))
    assert abs(np.argmax(mag) * 10000 / 2048 - 250) < 6


@pytest.fixture(scope="module")
def signal_pkg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rates")
    key, pub = make_keypair(tmp / "keys")
    return str(pub), str(make_package(tmp, kind="signal", key=key))


def _cfg(pub, pkg, rate):
    return {
        "agent": {"id": "gw1"},
        "trusted_keys": [pub],
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": "opc.tcp://127.0.0.1:4840/",
                "nodes": [{"node_id": "ns=2;s=M.Vibration"}],
            }
        },
        "models": {"health": {"package": pkg}},
        "pipelines": [
            {
                "name": "health",
                "source": "plc",
                "model": "health",
                "window": {"waveform": "Vibration", "sample_rate_hz": rate},
            }
        ],
    }


def test_validate_accepts_25k6_into_10k_and_refuses_an_unclean_rate_naming_both(signal_pkg):
    parse_config(_cfg(*signal_pkg, 25600))
    with pytest.raises(ConfigError) as ei:
        parse_config(_cfg(*signal_pkg, 12345.6), "line1.yaml")
    (err,) = ei.value.errors
    assert (
        err.startswith("line1.yaml: pipelines[0].window.sample_rate_hz:")
        and "12345.6 Hz" in err
        and "10000 Hz" in err
    )


def test_start_refuses_an_unclean_rate_in_one_line_naming_both(signal_pkg):
    from edge_agent.config import PipelineSettings
    from edge_agent.models.slot import SlotError
    from edge_agent.pipelines import Pipeline
    from model_packager.package import read_manifest

    class Slot:
        manifest = read_manifest(signal_pkg[1])

        def __init__(self) -> None:
            self.swap_checks: dict = {}  # the pipelines' checks of a package swapped in (ModelSlot's)

    async def on_result(res, item):
        pass

    p = Pipeline(
        PipelineSettings(
            name="health",
            source="plc",
            model="health",
            window=WindowSettings(waveform="Vibration", sample_rate_hz=12800.5),
        ),
        Slot(),
        None,
        on_result,
    )
    with pytest.raises(SlotError) as ei:
        p.prepare()
    assert "\n" not in str(ei.value) and "12800.5 Hz" in str(ei.value) and "10000 Hz" in str(ei.value)
    ok = Pipeline(
        PipelineSettings(
            name="health",
            source="plc",
            model="health",
            window=WindowSettings(waveform="Vibration", sample_rate_hz=25600),
        ),
        Slot(),
        None,
        on_result,
    )
    ok.prepare()
    assert ok.windower.resample == (25, 64) and ok.windower.size == 5248
