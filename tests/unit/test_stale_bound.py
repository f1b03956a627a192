"""``queue.max_age_ms``: what each pipeline's bound on an item's age is (``auto`` follows a live camera's frame
rate; no bound where every item is wanted judged), and a wrong value named with its file and field."""

from __future__ import annotations

import pytest

from devices.camera.settings import CameraSettings
from edge_agent.config import ConfigError, PipelineSettings, load_config
from edge_agent.pipelines import AUTO_AGE_FLOOR_S, AgeGate


def _gate(source=None, **kw) -> AgeGate:
    return AgeGate("p", PipelineSettings(name="p", source="s", model="m", **kw), source)


def _feed(gate: AgeGate, interval_s: float, n: int = 12) -> None:
    for i in range(n):
        gate.note(1_700_000_000.0 + i * interval_s)


@pytest.mark.parametrize("url", ["usb:0", "rtsp://10.0.0.5/stream", "http://10.0.0.5/snapshot.jpg"])
def test_auto_bounds_a_live_cameras_frames_at_two_frame_intervals_at_least_the_floor(url):
    cam = CameraSettings(url=url)
    slow = _gate(cam)
    assert slow.auto and slow.max_s is None  # no bound until the frames' rate is known
    _feed(slow, 0.5)  # 2 fps
    assert slow.max_s == pytest.approx(1.0) and "2 fps (measured)" in slow.why
    fast = _gate(cam)
    _feed(fast, 1 / 30)
    assert fast.max_s == AUTO_AGE_FLOOR_S


def test_auto_rate_is_the_median_interval_so_one_outage_does_not_loosen_it():
    gate = _gate(CameraSettings(url="usb:0"))
    _feed(gate, 0.5)
    gate.note(1_700_000_000.0 + 11 * 0.5 + 40.0)  # the camera came back after 40 s
    for i in range(1, 8):
        gate.note(1_700_000_000.0 + 11 * 0.5 + 40.0 + i * 0.5)
    assert gate.max_s == pytest.approx(1.0)


@pytest.mark.parametrize(
    "source, kw, why",
    [
        (CameraSettings(url="/data/parts"), {}, "replayed"),
        (CameraSettings(url="/data/line.avi", loop=True), {}, "replayed"),
        (CameraSettings(url="/data/drop", watch=True), {}, "drop folder"),
        (CameraSettings(url="usb:0"), {"queue": {"policy": "block"}}, "block"),
        (None, {"window": {"waveform": "Vibration"}}, "signal windows"),
        (CameraSettings(url="usb:0"), {"queue": {"max_age_ms": None}}, "null"),
    ],
)
def test_auto_sets_no_bound_where_every_item_is_wanted_judged(source, kw, why):
    gate = _gate(source, **kw)
    _feed(gate, 0.1)
    assert gate.max_s is None and not gate.auto and why in gate.why


def test_a_bound_in_the_config_applies_to_any_pipeline():
    assert _gate(CameraSettings(url="/data/parts"), queue={"max_age_ms": 300}).max_s == pytest.approx(0.3)
    windows = _gate(None, window={"waveform": "Vibration"}, queue={"max_age_ms": "1500"})  # from a ${VAR}
    assert windows.max_s == pytest.approx(1.5) and not windows.auto


@pytest.mark.parametrize("value", [0, -20, "fast", True, ".nan"])
def test_a_wrong_max_age_is_named_with_its_file_and_field(tmp_path, value):
    path = tmp_path / "line3.yaml"
    path.write_text(
        "agent: {id: gw1}\nsources: {cam: {type: camera, url: 'usb:0'}}\n"
        f"pipelines: [{{name: inspect, source: cam, model: vision, queue: {{max_age_ms: {value}}}}}]\n"
    )
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert any(
        e.startswith(f"{path}: pipelines[0].queue.max_age_ms: expected 'auto', a number of milliseconds > 0")
        for e in ei.value.errors
    ), ei.value.errors
