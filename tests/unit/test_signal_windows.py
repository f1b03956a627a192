"""What a signal pipeline's windows promise: each carries the time of its own first and last sample; a
reading longer than the hop gives every window the hop allows (bounded per reading, the rest counted);
a window never joins samples across a skipped reading or a gap in the readings' times (each restart
counted), while jittery receive-time stamps and slow scalar streams start nothing afresh; a rate of
+Inf from a source is refused and the pipeline goes on when a usable one comes."""

from __future__ import annotations

import numpy as np
import pytest

from devices.base import Quality, Reading
from devices.opcua.rates import StatedRates
from edge_agent import pipelines
from edge_agent.config import QueuePolicy, WindowSettings
from edge_agent.pipelines import BoundedQueue, Windower
from model_packager.condition import RateError, resample_plan

FS = 10000.0


def R(value, ts, quality=Quality.GOOD, rate=None, tag="vib") -> Reading:
    return Reading("plc", tag, value, ts, ts, quality, rate)


def windower(**window) -> Windower:
    size = window.pop("size", 1024)
    return Windower(
        "plc", WindowSettings(waveform="vib", size_samples=size, **window), size, model_rate_hz=FS
    )


def feed(w: Windower, x: np.ndarray, chunk: int, t0: float = 1000.0, fs: float = FS) -> list:
    """``x`` in readings of ``chunk`` samples, each stamped with its first sample's time."""
    out: list = []
    for i in range(0, len(x), chunk):
        out += w.add_all(R(x[i : i + chunk], t0 + i / fs))
    return out


def test_each_window_carries_the_times_of_its_own_first_and_last_sample():
    w = windower()
    wins = feed(w, np.zeros(16 * 256), 256)  # 0.0256 s readings, windows of 0.1024 s
    assert [round(x.start_ts - 1000.0, 6) for x in wins] == [0.0, 0.1024, 0.2048, 0.3072]
    assert all(abs(x.end_ts - x.start_ts - 1023 / FS) < 1e-9 for x in wins)
    # readings that do not divide the window: the time of a window's first sample inside a reading
    w = windower(hop_samples=500)
    wins = feed(w, np.zeros(7 * 300), 300)
    assert [round(x.start_ts - 1000.0, 6) for x in wins] == [0.0, 0.05, 0.1]
    assert [x.seq for x in wins] == [0, 1, 2]


def test_one_second_blocks_give_every_window_and_the_windows_tile_the_signal():
    w = Windower("plc", WindowSettings(waveform="vib", sample_rate_hz=25600), 2048, model_rate_hz=25600.0)
    x = np.random.default_rng(0).normal(size=10 * 25600)
    wins = feed(w, x, 25600, t0=0.0, fs=25600.0)
    assert len(wins) == 125  # 256000 // 2048; one a block before
    assert np.array_equal(np.concatenate([v.waveform for v in wins]), x[: 125 * 2048])
    assert wins[12].start_ts == pytest.approx(12 * 2048 / 25600)  # this one spans blocks 0 and 1
    # with a hop, one long reading gives every overlapping window
    w = windower(size=2048, hop_samples=512)
    wins = w.add_all(R(np.arange(20_000.0), 5.0))
    assert len(wins) == (20_000 - 2048) // 512 + 1
    assert [v.waveform[0] for v in wins[:3]] == [0.0, 512.0, 1024.0]
    assert w.add(R(np.arange(20_000.0, 20_512.0), 5.0 + 2.0)).waveform[0] == 36 * 512  # the grid runs on


def test_a_huge_reading_is_bounded_its_newest_windows_kept_and_the_rest_counted():
    w = windower(size=2048, hop_samples=512)
    wins = w.add_all(R(np.arange(10_000_000.0), 5.0))
    expected = (10_000_000 - 2048) // 512 + 1
    assert (
        len(wins) == pipelines.MAX_WINDOWS_PER_READING
        and wins[-1].waveform[-1] == (expected - 1) * 512 + 2047
    )
    assert w.capped == expected - pipelines.MAX_WINDOWS_PER_READING
    assert w.notices.counts["windows_capped"] == expected - pipelines.MAX_WINDOWS_PER_READING


async def test_a_burst_of_windows_is_one_queue_entry_dropped_and_counted_whole():
    q = BoundedQueue(2, QueuePolicy.DROP_OLDEST)
    await q.put(("w0", "w1", "w2"), 3)
    await q.put("w3")
    await q.put(("w4", "w5"), 2)
    assert q.dropped == 3 and (await q.get())[0] == "w3"
    q = BoundedQueue(1, QueuePolicy.DROP_NEWEST)
    await q.put("w0")
    await q.put(("w1", "w2"), 2)
    assert q.dropped == 2


def tone(n: int, t0: float, f: float = 156.25) -> np.ndarray:
    return np.sin(2 * np.pi * f * (t0 + np.arange(n) / FS) + 0.3)  # on an FFT bin of 1024 at 10 kHz


def off_tone(x: np.ndarray, f: float = 156.25) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    k = round(f * len(x) / FS)
    return 1 - spec[k - 1 : k + 2].sum() / spec.sum()


def test_an_outage_starts_the_window_afresh_instead_of_joining_its_two_sides():
    w = windower()
    out = []
    for ts in [0.0, 0.0256, 600.0013, 600.0269, 600.0525, 600.0781, 600.1037]:
        out += w.add_all(R(tone(256, ts), ts))
    assert len(out) == 1 and out[0].start_ts == 600.0013
    assert off_tone(out[0].waveform) < 1e-9  # was 6.7 % joined across the outage
    assert w.notices.counts["window_gap"] == 1 and "+599.976 s" in w.notices.messages["window_gap"]
    # a step back in time too
    w.add_all(R(tone(256, 500.0), 500.0))
    assert w.notices.counts["window_gap"] == 2


@pytest.mark.parametrize("quality", [Quality.BAD, Quality.UNCERTAIN])
def test_a_skipped_reading_starts_the_window_afresh(quality):
    w = windower()
    out = []
    for i in range(11):
        ts = i * 0.0256
        out += w.add_all(R(tone(256, ts), ts, quality if i == 2 else Quality.GOOD))
    assert [round(x.start_ts, 4) for x in out] == [0.0768, 0.1792]  # the two after the skipped one
    assert all(off_tone(x.waveform) < 1e-9 for x in out)  # was 5 % with the hole joined over
    assert w.bad == 1 and w.notices.counts["window_bad_reading"] == 1
    w.add_all(R(tone(256, 11 * 0.0256), 11 * 0.0256))
    w.add_all(R(np.array([1.0, np.nan] * 128), 12 * 0.0256))  # NaN samples: skipped the same way
    assert w.bad == 2 and w.notices.counts["window_bad_reading"] == 2


def test_jittery_receive_times_and_slow_scalar_streams_start_nothing_afresh():
    rng = np.random.default_rng(1)
    # 25.6 ms blocks stamped on receipt: up to 150 ms late, so some arrive bunched
    w = windower()
    ts = 1000.0 + np.arange(400) * 0.0256 + rng.uniform(0.0, 0.15, 400)
    out = [v for i, t in enumerate(ts) for v in w.add_all(R(np.zeros(256), float(t)))]
    assert len(out) == 100 and "window_gap" not in w.notices.counts
    # per-block send times of 0.2 s blocks, sent a little faster or slower than they fill
    w = windower(size=4096, hop_samples=1024)
    t, out = 0.0, []
    for _ in range(50):
        out += w.add_all(R(np.zeros(2048), t))
        t += 2048 / FS * rng.uniform(0.5, 1.4)
    assert len(out) == (50 * 2048 - 4096) // 1024 + 1 and "window_gap" not in w.notices.counts
    # a scalar stream at 10 Hz where the model's rate is 10 kHz (Sparkplug metrics, one per message)
    w = windower(size=64)
    out = [v for i in range(640) for v in w.add_all(R(float(i), i * 0.1 + rng.uniform(0, 0.05)))]
    assert len(out) == 10 and "window_gap" not in w.notices.counts
    # but a lost 1-s block whose device stamps its blocks is a gap
    w = windower(size=4096)
    for k in (0, 1, 3):
        w.add_all(R(np.zeros(int(FS)), float(k)))
    assert w.notices.counts["window_gap"] == 1


def test_an_infinite_stated_rate_is_refused_and_a_usable_one_then_taken():
    with pytest.raises(RateError, match="finite"):
        resample_plan(float("inf"), 10000.0)
    with pytest.raises(RateError, match="finite"):
        resample_plan(float("nan"), 10000.0)
    events = []
    w = Windower("plc", WindowSettings(waveform="vib"), 1024, model_rate_hz=FS, on_event=events.append)
    assert w.add_all(R(np.zeros(1280), 0.0, rate=float("inf"))) == ()  # raised ZeroDivisionError
    assert w.rate_status()["in_use_hz"] == FS and w.rate_skipped == 1
    out = []
    for i in range(10):
        out += w.add_all(R(tone(1280, i * 0.05), i * 0.05, rate=25600.0))  # then failed on every reading
    assert len(out) == 4 and out[0].waveform.shape == (1024,) and w.resample == (25, 64)
    assert [e["kind"] for e in events] == ["sample_rate_refused", "sample_rate_stated"]
    assert events[0]["rate_hz"] is None  # events are JSON
    # the OPC UA rate node: +Inf (or '1e400') gives readings no rate rather than an infinite one
    rates = StatedRates()
    rates.nodes["ns=2;s=Rate"] = ["vib"]  # as setup() registers the rate node of the waveform "vib"
    for v in (float("inf"), "1e400", float("nan"), -5.0):
        rates.on_change("ns=2;s=Rate", 25600.0)
        assert rates.rate_for("vib", None) == 25600.0
        rates.on_change("ns=2;s=Rate", v)
        assert rates.rate_for("vib", None) is None, v


def test_a_new_waveform_the_source_dates_at_the_time_of_the_last_one_after_a_bad_is_scored():
    """After a BAD the source made (OPC UA: a lost connection, a halt), the waveform it passes on again (the
    samples and source time of the last one taken, re-stamped after the BAD, its own time in ``source_ts``)
    is not scored twice; but a new waveform its server dates at that same time (a clock that stamps in whole
    seconds or tens of ms, a server clock behind the gateway's: each re-stamped after the BAD) holds other
    samples, and is scored: a repeat is the same time and the same samples, as the source itself judges."""
    w = windower()
    a, b, c = np.arange(1024.0), np.arange(1.0, 1025.0), np.arange(2.0, 1026.0)
    assert len(w.add_all(R(a, 1000.0))) == 1
    assert w.add_all(R(None, 1000.3, Quality.BAD)) == ()
    again = R(a.copy(), 1000.301)
    again.source_ts = 1000.0
    assert w.add_all(again) == () and w.repeats == 1  # the same samples at the same time: taken already
    scored = []
    for i, x in enumerate((b, c)):  # new samples, dated by the server at the same (coarse) time
        r = R(x, 1000.302 + i * 0.1024)
        r.source_ts = 1000.0
        scored += w.add_all(r)
    assert [win.waveform[0] for win in scored] == [1.0, 2.0], scored
    assert w.repeats == 1


def test_a_repeated_waveform_not_scored_twice_is_counted_on_the_pipelines_status(tmp_path):
    """A window that does not come for a waveform its source passed on again after a BAD has its reason on
    /status (``repeated_waveforms``), as skipped readings have theirs (``bad_samples``)."""
    from edge_agent.config import PipelineSettings
    from edge_agent.pipelines import Pipeline
    from model_packager.package import read_manifest
    from tests.support.models import make_keypair, make_package

    key, _ = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="signal", key=key)

    class Slot:
        manifest = read_manifest(str(pkg))

        def __init__(self) -> None:
            self.swap_checks: dict = {}  # the pipelines' checks of a package swapped in (ModelSlot's)

    async def on_result(res, item):
        pass

    p = Pipeline(
        PipelineSettings(name="health", source="plc", model="health", window=WindowSettings(waveform="vib")),
        Slot(),
        None,
        on_result,
    )
    p.prepare()
    assert p.windower is not None
    x = np.arange(float(p.windower.size))
    p.windower.add_all(R(x, 1000.0))
    p.windower.add_all(R(None, 1000.3, Quality.BAD))
    again = R(x.copy(), 1000.301)
    again.source_ts = 1000.0
    p.windower.add_all(again)
    st = p.status()
    assert st["repeated_waveforms"] == 1 and st["bad_samples"] == 1, st


def test_a_tag_sampled_faster_than_the_windows_are_computed_at_is_said_from_the_readings_times():
    """A 25.6-kHz sensor streamed into a 10-kHz model's pipeline with no rate configured nor stated: every
    window was computed as 10 kHz (its frequencies read 2.56x too low), without a word, though its readings
    came 2.56x faster than their samples span at 10 kHz. The readings' timestamps now say it: one warning
    naming the rate they bring and the fix, counted, the rate on the status. A tag at the rate in use, lost
    readings and snapshots a few seconds apart say nothing."""
    x = np.sin(np.arange(45 * 25600) * 0.3)
    w = windower()
    feed(w, x, 2560, fs=25600.0)  # 45 s of readings, 0.1 s apart
    st = w.rate_status()
    assert st["by_timestamps_hz"] == pytest.approx(25600, rel=0.01)
    note = w.notices.status()["sample_rate_by_timestamps"]
    assert "25600 samples a second" in note["message"]
    assert "more than the 10000 Hz its windows are computed at (the model's rate)" in note["message"]
    for readings in (
        [(x[i : i + 1000], 1000.0 + i / FS) for i in range(0, 45 * 10000, 1000)],  # at the rate in use
        [(x[i : i + 1000], 1000.0 + i / FS) for i in range(0, 45 * 10000, 1000) if i % 7000],  # some lost
        [(x[:1024], 1000.0 + 5.0 * k) for k in range(30)],  # a snapshot every 5 s
    ):
        w = windower()
        for v, ts in readings:
            w.add_all(R(v, ts))
        assert (
            w.rate_status()["by_timestamps_hz"] is None
            and "sample_rate_by_timestamps" not in w.notices.status()
        )


@pytest.mark.parametrize(
    "tag, value",
    [
        ("temp", [2**60 + i for i in range(200_000)]),  # an Int64[] past 2**53 stays a list of ints
        ("temp", "x" * 3_000_000),  # a PLC's long text
        ("vib", ["fault"] * 200_000),  # a String[] where a waveform was meant
    ],
)
def test_a_tag_holding_no_number_is_named_in_a_bounded_line_not_copied_whole(tag, value, caplog):
    """A scalar input, or the waveform tag, that holds a large value which is no number (a node's ValueRank
    changed to an array at run time, a String[] mapped as the waveform): the notice named the value with its
    whole repr, so 200,000 Int64 values past 2**53 made a 4.2 MB log line and a 4.2 MB /status (every poll of
    it), kept as long as the agent ran. The value is shown cut, with its size."""
    w = Windower(
        "plc", WindowSettings(waveform="vib", scalars=["temp"], size_samples=1024), 1024, model_rate_hz=FS
    )
    w.add_all(R(value, 1000.0, tag=tag))
    (message,) = [n["message"] for n in w.notices.status().values()]
    assert f"tag {tag!r}" in message and len(message) < 400, message[:500]
    assert f"{len(value)} " in message  # its size, so a user knows what came
    assert all(len(r.getMessage()) < 400 for r in caplog.records)
