"""Pipelines: source items → (windows) → bounded queue → model slot in worker threads → actions.

- ``BoundedQueue``: the one queue between a source and inference, with the pipeline's policy when
  inference falls behind: ``drop_oldest`` (default, freshest data wins), ``drop_newest``, or
  ``block`` (back-pressure to the source's own bounded hand-over, which then drops oldest). Every
  drop is counted.
- ``Windower``: turns ``Reading``s of a waveform tag (arrays, e.g. an OPC UA Double[] node, or a
  scalar stream) into fixed-size ``Window``s by sample count with a hop (every window the hop allows,
  several from one long reading, at most ``MAX_WINDOWS_PER_READING``), or every ``hop_s`` seconds
  (time mode), carrying the latest value of each scalar tag. A window holds contiguous samples only:
  non-GOOD readings of the waveform are skipped and counted, and they, a gap in the readings'
  timestamps or a change of rate start the window in progress afresh (counted).
- ``AgeGate``: the pipeline's bound on an item's age when inference would take it (``queue.max_age_ms``;
  ``auto``: 2 frame intervals of a live camera, at least 250 ms; none for windows, replays, drop folders
  and ``block``). An older item is dropped unjudged before a thread runs it (checked when the worker takes
  it from the queue, and again in the thread, after the wait for one), counted (``dropped_stale``), and an
  ``items_stale`` event marks an episode's start and end; each result carries its item's age at the verdict.
- ``Pipeline``: ``workers`` tasks each take an item, run ``slot.infer`` in the shared thread pool
  (the asyncio loop never blocks on inference), build the ``Result`` with its latency split
  (queue wait, preprocessing, inference, postprocessing) and hand it to the actions.
- Sensor checks (``edge_agent.maintenance.sensor``): a maintenance pipeline's window that a dead,
  saturated or corrupted sensor made (flatline, clipped, held, spikes) is not inferred nor scored: its
  result is ``UNSURE`` with the reason, counted by fault, one ``sensor_fault`` event per episode.
- ``UnsureWatch``: frames far outside the model's training inputs come back ``UNSURE`` (the slot
  checks them against the manifest's ``input_stats``); their share over the last ``unsure.window``
  results is watched, and an ``input_drift`` event raised when it reaches ``unsure.max_share``
  (again only after it has fallen below half of that).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import reprlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from devices.base import MAX_CAUSES, Frame, Notices, Quality, Reading
from edge_agent.config import FRAME_WINDOW_WHY, PipelineSettings, QueuePolicy, WindowSettings, kind_refusal
from edge_agent.maintenance.sensor import SensorFault, SensorWatch
from edge_agent.maintenance.sensor import check as sensor_check
from edge_agent.models.slot import Inference, InferenceError, ModelSlot, SlotError
from edge_agent.types import Latency, Result, Window
from model_packager.condition import RateError, input_samples, resample, resample_plan, waveform_rate_floor_hz
from model_packager.text import printable
from protocols.events import Event, EventKind

if TYPE_CHECKING:
    from edge_agent.maintenance.monitor import Monitor
    from model_packager.manifest import Manifest

log = logging.getLogger(__name__)


SPEED_INPUT = "_shaft_speed"  # the baseline's speed tag rides with each window under this name
TEMPERATURE_INPUT = "_temperature"  # ... and its temperature tag under this one
STATE_INPUT = "_process_state"  # ... and its process-state tag (edge_agent.maintenance.states.STATE_INPUT)
TAG_MISSING_AFTER_S = 15.0  # readings flow this long without the waveform tag: say so (slow waveforms exist)
# the waveform stopped while the source's other tags still update (an OPC UA server notifies only changes,
# so a stuck sensor or a stalled DAQ sends nothing): said after this long, and 10 of its usual intervals
STALE_AFTER_S = 30.0
MAX_WINDOWS_PER_READING = 256  # a longer reading's older windows are skipped (counted): ~3 ms of loop time
GAP_SLACK_S = (
    0.5  # a reading this much later than its predecessor's samples span is a gap (receive stamps jitter)
)
# readings' timestamps tell the rate samples come at: over this long and this many readings, samples coming
# this many times faster than the rate in use are a tag sampled faster than its windows are computed at
RATE_CHECK_S = 30.0
RATE_CHECK_READINGS = 20
RATE_FAST = 1.2
NO_WINDOWS: tuple = ()  # what most readings complete: no allocation on the per-reading path
_EMPTY = np.zeros(0, dtype=np.float64)
# queue.max_age_ms: auto, for a live camera: an item is stale past this many intervals between its frames (the
# pipeline is more than one item behind: the part in view has moved on) ...
AUTO_AGE_FRAMES = 2
# ... and never under this: the loop's lag and the wait for a thread of the pool every pipeline shares delay a
# fresh frame by tens of ms on a busy gateway that keeps up
AUTO_AGE_FLOOR_S = 0.25
STALE_QUIET_S = 10.0  # a stale episode ends after this long without a stale item, at a fresh item's result
# the wall clock moving against the monotonic one by more than this is a step (NTP setting the clock of a gateway
# without a battery), not drift; for STEP_GRACE_S after one, an item's age is also taken on the clock of before
CLOCK_STEP_S = 1.0
STEP_GRACE_S = 30.0

# the failures of the model on an item it was given (a frame decoded, a window made): the item's result is UNSURE,
# naming the failure, never dropped (a part the reject gate let by); so is a camera's frame that does not fit the
# model (bad_input: a camera at another resolution or bit depth); a window's bad_input (held at the windower, a
# wrong length refused at config) and no_model stay drops
MODEL_FAILURES = frozenset({"nonfinite_output", "engine_error", "preprocess_error", "model_error"})
# the model failing on more than FAIL_SHARE of a pipeline's last FAIL_WINDOW items (FAIL_MIN_ITEMS at least) is an
# episode: a WARNING and a model_failing event, the WARNING again every FAIL_REPEAT_S while it lasts; it ends when a
# quarter or fewer have failed for FAIL_QUIET_S (a model failing at random on 30-50 % of its items swings the
# window's share across both bounds every few dozen items: ended at once, the episode began and ended over and
# over, 50-150 events per 10,000 items)
FAIL_WINDOW = 20
FAIL_MIN_ITEMS = 6
FAIL_SHARE = 0.5
FAIL_REPEAT_S = 60.0
FAIL_QUIET_S = 60.0
# ... or when no item has reached the model for FAIL_IDLE_S (3 of the episode's longest interval, when longer), on time
FAIL_IDLE_S = 60.0
# ... at most this long: a pause of hours before the episode's first item (a line stopped for the night) is a stop,
# not the source's rhythm; taken whole, it held the episode on /status for three times the night after the source
# stopped
FAIL_IDLE_MAX_S = 3600.0

_FIXES = {
    "bad_input": "the input does not fit the model: for a camera, its frame size against the model's roi or "
    "tiles (a camera set to another resolution); for signals, the pipeline's window (waveform, scalars, "
    "size); check with `edge-agent validate`",
    "engine_error": "the engine failed on this input; check the model package (model_packager inspect)",
    "nonfinite_output": "the model produced NaN/Inf; check the inputs' range or roll the model back",
    "no_model": "no item is judged until a package that passes serves the slot (models.<slot>.package, or the "
    "fleet's); see models on the status page",
    "preprocess_error": "the package's preprocessing fails on this input (frame size, colour, region): check "
    "the camera against the package's manifest (model_packager inspect); a hot-swapped model is rolled back",
    "model_error": "the model's outputs do not read as its manifest declares (labels, output names): the "
    "package contradicts itself; roll it back (a hot-swapped one is, by its health watch)",
}


class BoundedQueue:
    def __init__(self, size: int, policy: QueuePolicy) -> None:
        self.size, self.policy = size, policy
        self._items: collections.deque = collections.deque()
        self._cond = asyncio.Condition()
        self.dropped = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item, n: int = 1) -> None:
        """``n``: the items ``item`` stands for (the windows of one reading go in as one entry, and are
        dropped, and counted, together)."""
        async with self._cond:
            if len(self._items) >= self.size:
                if self.policy is QueuePolicy.DROP_OLDEST:
                    self.dropped += self._items.popleft()[2]
                elif self.policy is QueuePolicy.DROP_NEWEST:
                    self.dropped += n
                    return
                else:
                    await self._cond.wait_for(lambda: len(self._items) < self.size or self.closed)
            self._items.append((item, time.perf_counter(), n))
            self._cond.notify_all()

    async def get(self):
        async with self._cond:
            await self._cond.wait_for(lambda: self._items or self.closed)
            if not self._items:
                raise EOFError
            item, t, _n = self._items.popleft()
            self._cond.notify_all()
            return item, t

    async def close(self) -> None:
        async with self._cond:
            self.closed = True
            self._cond.notify_all()


# a reading's value in a notice, bounded: a tag holding 200,000 integers or 3 MB of text is named by its start
# and its size, not copied whole into the log line and /status
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlist = _SHOWN.maxtuple = 8
_SHOWN.maxlong = 60


def _held(value: Any) -> str:
    """``value`` as a notice shows it: its repr cut to a line, with its size when it was cut."""
    try:
        text = _SHOWN.repr(value)
    except ValueError:  # an int past Python's 4,300 digits for a text
        text = f"<{type(value).__name__}>"
    if isinstance(value, str | bytes) and len(value) > _SHOWN.maxstring:
        return f"{text} ({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    n = value.size if isinstance(value, np.ndarray) else len(value) if isinstance(value, list | tuple) else 0
    return f"{text} ({n} items)" if n > _SHOWN.maxlist else text


def _samples(value) -> np.ndarray | None:
    """A waveform reading's samples as float64, or None when it does not hold numbers (text, bytes, a
    truth value, a record): a tag of the wrong type must be skipped, not stop the source's readings."""
    if value is None or isinstance(value, bool | str | bytes | np.bool_):
        return None
    try:
        x = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    return x


class Windower:
    """A waveform tag's readings -> ``Window``s of ``size`` samples at the tag's rate (resampled to the
    model's ``out_size`` when the rates differ).

    Count mode: windows on a grid of ``hop`` samples from the first sample of a stretch of contiguous
    readings; one reading may complete several (``add_all`` returns them all, oldest first), at most
    ``MAX_WINDOWS_PER_READING``: the older ones of a longer reading are skipped and counted
    (``windows_capped``), so one huge reading cannot hold the event loop. Time mode: the newest ``size``
    samples, at most every ``hop_s`` seconds.

    A window holds only contiguous samples: a reading skipped (quality not GOOD, not numbers, NaN/Inf), a
    change of rate, or a reading whose timestamp jumps past what the previous reading's samples span
    (x1.5, and ``GAP_SLACK_S`` at least: receive-time stamps jitter) or goes back starts the window in
    progress afresh, as does a reading whose source lost values before it (``Reading.lost_before``: an OPC UA
    queue's overflow); each such restart that drops samples is counted (``window_bad_reading``, ``window_gap``,
    ``window_values_lost``). A reading's timestamp is taken as its first sample's time; later samples are placed
    at the rate in use, and each window carries the times of its first and last samples.
    """

    def __init__(
        self,
        source: str,
        settings: WindowSettings,
        default_size: int,
        notices: Notices | None = None,
        pipeline: str = "?",
        resample: tuple[int, int] = (1, 1),
        extra_inputs: dict[str, str] | None = None,
        model_rate_hz: float | None = None,
        on_event: Callable[[Event], None] | None = None,
        input_scale: dict[str, float] | None = None,
    ) -> None:
        self.source = source
        self.s = settings
        self.by_count = settings.by == "count"
        self.inputs = {**settings.scalar_inputs, **(extra_inputs or {})}  # tag -> the model's scalar input
        # a tag that is both a model input and the baseline's (its speed tag also the model's speed scalar):
        # it rides under both names, the model's too (it went under the baseline's only, and every window
        # was dropped as lacking the model's input), times ``input_scale``'s factor for that input (the
        # baseline's speed tag in Hz: the model's speed scalar is rpm)
        extra, scale = extra_inputs or {}, input_scale or {}
        self.also = {
            tag: (name, scale.get(name, 1.0))
            for tag, name in settings.scalar_inputs.items()
            if extra.get(tag, name) != name
        }
        self.model_inputs = settings.scalar_inputs  # without a value of these, windows wait
        self.scalars_seen: set[str] = set()  # inputs that have had a value once
        self.not_good: dict[str, str] = {}  # input tag -> the quality of its last reading, when not GOOD
        self.notices = notices or Notices(log)
        self.pipeline = pipeline
        self.tags_seen: dict[str, int] = {}  # tag -> readings (bounded: a few hundred tags at most)
        self.readings = 0
        self.first_t = 0.0
        # at the model's rate; a faster tag is buffered at its own rate and resampled per window
        self.out_size = settings.size_samples or default_size
        self._plan(resample)
        # a rate the source states on its readings (Reading.rate_hz) is checked against the one in use: the
        # config's, else the first one stated (then the model's rate until one is)
        self.model_rate = model_rate_hz
        self.rate_in_use = settings.sample_rate_hz
        self.rate_source = "config" if settings.sample_rate_hz else "model"
        self.bad_rate: float | None = None
        # samples counted since ``rate_t0`` (readings' time) at the rate ``rate_for``; faster than it (hz) if set
        self.rate_t0: float | None = None
        self.rate_for: float | None = None
        self.rate_n = self.rate_k = 0
        self.rate_by_times: float | None = None
        self.rate_skipped = 0  # waveform readings skipped: not scored at a wrong rate
        self.on_event = on_event or (lambda evt: None)
        self.total = 0  # samples seen; the index of the next sample
        self.buf = _EMPTY  # samples [buf_i0, total) of the current stretch that a window may still use
        self.buf_i0 = 0
        self.next_i = 0  # count mode: the first sample of the next window
        self.t_first: collections.deque = collections.deque()  # (sample index, timestamp) of each reading
        self.last_ts: float | None = None  # the previous reading's time and samples (gap check)
        self.last_n = 0
        # the source's own time of the last waveform taken (Reading.source_ts where the source re-stamped it,
        # else its timestamp) and its samples: a waveform a source passes on again after its own BAD (OPC UA,
        # after a lost connection or a halt: the same samples, re-stamped after the BAD, its own time in
        # source_ts) is not scored twice; a new one the server dates at that same time (a coarse clock, one
        # behind the gateway's: each re-stamped after the BAD) holds other samples and is scored
        self.last_src_ts: float | None = None
        self.last_wave: np.ndarray | None = None
        self.repeats = 0  # such waveforms skipped
        self.dt_usual: float | None = (
            None  # the usual interval between readings, when no sample rate is known
        )
        self.since_emit = 0
        self.scalars: dict[str, float] = {}
        self.seq = 0
        self.bad = 0
        self.capped = 0  # windows skipped: more than MAX_WINDOWS_PER_READING in one reading
        self.last_emit_t = 0.0
        # a window's sensor check where only the windower can make it (a resampled window's, on its raw
        # samples: resampling smears a clipped top or a held run; a window repeating the previous one):
        # seq -> the answer, taken by the worker that scores the window instead of checking it itself
        # the sensor check of a window's raw samples and its scalars (the speed tag's: the shaft's turns in it)
        self.raw_check: Callable[[np.ndarray, dict], Any] | None = None
        self.raw_checks: dict[int, Any] = {}
        self._last_raw: tuple[np.ndarray | None, float] = (None, 0.0)
        self.wave_t: float | None = None  # monotonic time of the last waveform reading
        self.wave_gap: float | None = None  # the usual interval between waveform readings
        self.stale: str | None = None  # why no window comes (the waveform stopped), while it lasts

    def _plan(self, resample: tuple[int, int]) -> None:
        up, down = resample  # computed first, assigned together: a plan that cannot be used changes nothing
        size = input_samples(self.out_size, up, down) if resample != (1, 1) else self.out_size
        hop = -(-self.s.hop_samples * down // up) if self.s.hop_samples else size
        self.resample, self.size, self.hop = resample, size, hop

    def _restart(self) -> int:
        """Start afresh at the next sample: no window joins samples across what came before. Returns the
        samples of the window in progress that were dropped."""
        dropped = self.buf.size
        self.buf = _EMPTY
        self.buf_i0 = self.next_i = self.total
        self.t_first.clear()
        self.last_ts = None
        return dropped

    def _rate_ok(self, rate: float) -> bool:
        """A waveform reading whose source states its rate (OPC UA node metadata, an MQTT payload field)."""
        where = f"pipeline {self.pipeline}: tag {self.s.waveform!r} of source {self.source}"
        if not (math.isfinite(rate) and rate > 0):
            return self._skip_rate(
                rate,
                "sample_rate_refused",
                f"{where}: its source states a sample rate of {rate!r} Hz, not a finite rate > 0; its windows "
                "are skipped (counted) until it states a usable one; check the rate node or payload field",
            )
        if (
            self.rate_in_use is None and self.model_rate
        ):  # no rate in the config: the first stated one decides
            try:  # the plan before the rate: a rate that cannot be used leaves the windower as it was
                plan = resample_plan(rate, self.model_rate, where)
            except RateError as exc:
                return self._skip_rate(
                    rate,
                    "sample_rate_refused",
                    f"{exc}: the rate its source states; its windows are skipped (counted)",
                )
            self._plan(plan)
            self.rate_in_use, self.rate_source = rate, "source"
            self.bad_rate = None
            self._restart()
            self._event(
                "sample_rate_stated",
                rate,
                f"{where}: its source states {rate:g} Hz; model rate "
                f"{self.model_rate:g} Hz" + (", resampled" if plan != (1, 1) else ""),
            )
            return True
        if self.rate_in_use is None or abs(rate - self.rate_in_use) <= 1e-6 * self.rate_in_use:
            if self.bad_rate is not None:
                self.bad_rate = None
                self._event(
                    "sample_rate_restored", rate, f"{where}: back at {rate:g} Hz; windows are scored again"
                )
            return True
        stated = "window.sample_rate_hz" if self.rate_source == "config" else "its source earlier"
        return self._skip_rate(
            rate,
            "sample_rate_changed",
            f"{where}: its source now states {rate:g} Hz, but the "
            f"pipeline runs at {self.rate_in_use:g} Hz ({stated}); its windows are skipped (counted), "
            "not scored at a wrong rate; if the sensor changed, set window.sample_rate_hz to the "
            "new rate (edge-agent validate checks it) and restart the agent",
        )

    def _skip_rate(self, rate: float, kind: str, msg: str) -> bool:
        self.rate_skipped += 1
        self.notices.note(kind, "%s", msg)
        same = rate == self.bad_rate or (
            rate != rate and self.bad_rate is not None and self.bad_rate != self.bad_rate
        )
        if not same:  # once per change, not per reading; a window never mixes two rates
            self.bad_rate = rate
            self._restart()
            self.since_emit = 0
            self._event(kind, rate, msg)
        return False

    def _event(self, kind: str, rate: float, message: str) -> None:
        self.on_event(
            Event(
                kind,
                pipeline=self.pipeline,
                tag=self.s.waveform,
                rate_hz=rate if math.isfinite(rate) else None,  # events are JSON: no Inf/NaN
                rate_in_use_hz=self.rate_in_use,
                model_rate_hz=self.model_rate,
                message=message,
            )
        )

    def rate_status(self) -> dict:
        return {
            "in_use_hz": self.rate_in_use or self.model_rate,
            "from": self.rate_source,
            "skipped_readings": self.rate_skipped,
            "stated_now_hz": self.bad_rate
            if self.bad_rate is None or math.isfinite(self.bad_rate)
            else str(self.bad_rate),  # /status is JSON: "inf", "nan"
            "by_timestamps_hz": None if self.rate_by_times is None else round(self.rate_by_times, 1),
        }

    def _rate_by_times(self, ts: float, n: int, rate: float | None) -> None:
        """Readings cannot bring samples faster than the tag is sampled: the samples of the readings over
        ``RATE_CHECK_S`` or more of their timestamps, more than ``RATE_FAST`` times the rate in use, are a tag
        sampled faster than its windows are computed at (no rate configured nor stated: the model's taken),
        every window's frequencies read too low. Said (a notice per such reading, the rate on the status),
        never taken for the rate: lost readings only lower it, a backlog delivered at once raises it."""
        if self.rate_t0 is None or ts < self.rate_t0 or rate != self.rate_for:
            self.rate_t0, self.rate_for, self.rate_n, self.rate_k = ts, rate, 0, 0
        elapsed = ts - self.rate_t0
        if rate and self.rate_k >= RATE_CHECK_READINGS and elapsed >= RATE_CHECK_S:
            measured = self.rate_n / elapsed
            if measured > RATE_FAST * rate:
                self.rate_by_times = measured
                self.notices.note(
                    "sample_rate_by_timestamps",
                    "pipeline %s: waveform tag %r of source %s: its readings bring %.0f samples a second by their "
                    "timestamps (%d readings over %.0f s), more than the %g Hz its windows are computed at (%s): "
                    "the tag is sampled faster, and every window's frequencies are read %.2gx too low; state its "
                    "rate: window.sample_rate_hz (unless these readings were a backlog delivered at once)",
                    self.pipeline,
                    self.s.waveform,
                    self.source,
                    measured,
                    self.rate_k,
                    elapsed,
                    rate,
                    f"the {self.rate_source}'s rate",
                    measured / rate,
                )
        self.rate_n += n
        self.rate_k += 1

    def _stale_watch(self, r: Reading) -> None:
        """A waveform that stopped while the source's other tags still update: no window, so no result
        says it; one ``sensor_fault`` event (``stale``) and a counted notice, and one when it is back.
        Vibration only (sensor checks on): a slow signal (a temperature) may hold one value for minutes."""
        if self.raw_check is None:
            return
        now = time.monotonic()
        if r.tag == self.s.waveform:
            if self.wave_t is not None:
                dt = now - self.wave_t
                self.wave_gap = dt if self.wave_gap is None else 0.9 * self.wave_gap + 0.1 * dt
            self.wave_t = now
            if self.stale is not None:
                self.stale = None
                self._sensor_event(False, f"pipeline {self.pipeline}: tag {self.s.waveform!r} updates again")
            return
        if self.stale is None and self.wave_t is not None and self.wave_gap is not None:
            silent = now - self.wave_t
            if silent > max(STALE_AFTER_S, 10 * self.wave_gap):
                self.stale = (
                    f"pipeline {self.pipeline}: no new reading of waveform tag {self.s.waveform!r} of source "
                    f"{self.source} for {silent:.0f} s (it came every {self.wave_gap:.3g} s) while its tag "
                    f"{r.tag!r} still updates: the sensor's value stopped changing (a stuck sensor, a stalled "
                    "DAQ or server); no window is formed nor judged until it changes again, the last result "
                    "is not current"
                )
                self.notices.note("waveform_stale", "%s", self.stale)
                self._sensor_event(True, self.stale)

    def _sensor_event(self, active: bool, message: str) -> None:
        evt = Event(
            EventKind.SENSOR_FAULT, pipeline=self.pipeline, fault="stale", active=active, message=message
        )
        try:
            self.on_event(evt)
        except Exception:
            log.exception("sensor_fault event could not be recorded")

    def _seen(self, r: Reading) -> None:
        self._stale_watch(r)
        self.readings += 1
        if r.tag in self.tags_seen or len(self.tags_seen) < 500:
            self.tags_seen[r.tag] = self.tags_seen.get(r.tag, 0) + 1
        if self.readings == 1:
            self.first_t = time.monotonic()
        if (
            self.s.waveform not in self.tags_seen
            and self.readings >= 10
            and time.monotonic() - self.first_t > TAG_MISSING_AFTER_S
        ):
            if "tag_missing" in self.notices.counts:
                self.notices.counts["tag_missing"] += 1
                return
            self.notices.note(
                "tag_missing",
                "pipeline %s: source %s gave %d readings but none of tag %r (window.waveform), so no "
                "window is formed; it gives %s; set window.waveform to one of them (OPC UA: a node's tag is its "
                "browse name unless `tag:` is set)",
                self.pipeline,
                self.source,
                self.readings,
                self.s.waveform,
                sorted(self.tags_seen)[:20],
            )

    def _scalar_gone(self, tag: str) -> bool:
        """Forget the scalar input ``tag`` feeds (and the model's, where it feeds both); whether it had a value."""
        if tag in self.also:
            self.scalars.pop(self.also[tag][0], None)
        return self.scalars.pop(self.inputs[tag], None) is not None

    def _without(self, tag: str) -> str:
        """What the windows do while the scalar input ``tag`` feeds has no value."""
        if tag in self.model_inputs:
            return "windows wait"
        if self.inputs[tag] == STATE_INPUT:
            return "windows have no process state: UNSURE, NG only when over every learned state's threshold"
        return "windows are judged without it (the baseline's own estimate)"

    def add(self, r: Reading) -> Window | None:
        """The newest window ``r`` completes, or None: for callers that take at most one window per
        reading. A reading longer than the hop completes several; ``add_all`` returns every one."""
        ws = self.add_all(r)
        return ws[-1] if ws else None

    def add_all(self, r: Reading) -> tuple[Window, ...]:
        """Every window ``r`` completes, oldest first; most readings complete none (a shared empty tuple)."""
        self._seen(r)
        if r.tag in self.inputs:
            if r.quality is Quality.GOOD and isinstance(r.value, int | float):
                self.not_good.pop(r.tag, None)
                self.scalars[self.inputs[r.tag]] = float(r.value)
                self.scalars_seen.add(self.inputs[r.tag])
                if r.tag in self.also:
                    name, factor = self.also[r.tag]
                    self.scalars[name] = float(r.value) * factor
            elif r.quality is not Quality.GOOD:
                self.not_good[r.tag] = r.quality.value
                # its last good value is no longer the machine's: a model input's windows wait for a good
                # one, the baseline's speed or temperature goes without (speed tracked from the spectrum)
                if self._scalar_gone(r.tag):
                    self.notices.note(
                        "scalar_not_good",
                        "pipeline %s: scalar tag %r of source %s reads %s; %s until it reads GOOD again",
                        self.pipeline,
                        r.tag,
                        self.source,
                        r.quality.value,
                        self._without(r.tag),
                    )
            else:
                # a GOOD value that is no number (a JSON device's "---" or "ERR" on a sensor fault, a node a
                # download retyped to text): its last number is no longer the machine's either (it rode on with
                # every window, the model judging the machine at a speed it may no longer run at)
                self._scalar_gone(r.tag)
                self.notices.note(
                    "scalar_not_a_number",
                    "pipeline %s: scalar tag %r of source %s holds %s, not a number; %s until it holds one "
                    "again; map a numeric tag in window.scalars",
                    self.pipeline,
                    r.tag,
                    self.source,
                    _held(r.value),
                    self._without(r.tag),
                )
            return NO_WINDOWS
        if r.tag != self.s.waveform:
            return NO_WINDOWS
        if r.rate_hz is not None and not self._rate_ok(r.rate_hz):
            return NO_WINDOWS
        if r.quality is not Quality.GOOD:  # BAD, and UNCERTAIN too (e.g. a retained MQTT message)
            return self._skipped(
                r, f"its quality is {r.quality.value}" + (f" ({r.reason})" if r.reason else "")
            )
        x = _samples(r.value)
        if (
            r.source_ts is not None
            and r.source_ts == self.last_src_ts
            and x is not None
            and self.last_wave is not None
            and np.array_equal(x, self.last_wave)
        ):
            self.repeats += 1  # one taken before, passed on again after its source's BAD: not scored twice
            return NO_WINDOWS
        if x is None:
            self.notices.note(
                "waveform_not_a_number",
                "pipeline %s: waveform tag %r of source %s holds %s, not numbers; it is counted as bad and "
                "skipped; map a numeric tag (or array) in window.waveform",
                self.pipeline,
                r.tag,
                self.source,
                _held(r.value),
            )
            return self._skipped(r, "it holds no numbers")
        n = x.size
        if n == 0:  # holds no samples, so none are missing
            self.bad += 1
            return NO_WINDOWS
        if not np.all(np.isfinite(x)):
            return self._skipped(r, "it holds NaN or Inf")
        ts = r.timestamp
        self.last_src_ts = r.source_ts if r.source_ts is not None else ts
        self.last_wave = x  # a reference (the source makes a new array per value), compared only at that time
        rate = self.rate_in_use or self.model_rate
        if r.lost_before and self.last_ts is not None:
            self._values_lost()
        elif self.last_ts is not None:
            dt = ts - self.last_ts
            # what the previous reading's samples span; with no rate known at all, the usual interval
            expect = self.last_n / rate if rate else self.dt_usual
            if dt < -GAP_SLACK_S or (
                expect is not None and dt - expect > GAP_SLACK_S and dt - expect > 0.5 * expect
            ):
                self._gap(dt, expect or 0.0, rate)
            elif not rate:
                self.dt_usual = dt if self.dt_usual is None else 0.9 * self.dt_usual + 0.1 * dt
        self._rate_by_times(ts, n, rate)
        self.last_ts, self.last_n = ts, n
        b = self.total
        self.total = end = b + n
        self.since_emit += n
        self.t_first.append((b, ts))
        if self.by_count:
            if end - self.next_i < self.size and self.next_i == self.buf_i0:
                self.buf = np.concatenate((self.buf, x))  # most readings: no window yet, every sample kept
                return NO_WINDOWS
            return self._by_count(x, b, end, rate)
        return self._by_time(x, b, end, rate)

    def _skipped(self, r: Reading, why: str) -> tuple[Window, ...]:
        self.bad += 1
        if self._restart():
            self.notices.note(
                "window_bad_reading",
                "pipeline %s: a reading of waveform tag %r of source %s was skipped (%s), so the window in "
                "progress was started afresh rather than joined across the hole; windows resume after a "
                "window's worth of good readings (each restart counted here, each skipped reading in "
                "bad_samples)",
                self.pipeline,
                self.s.waveform,
                self.source,
                why,
            )
        return NO_WINDOWS

    def _values_lost(self) -> None:
        """The source lost values just before this reading (an OPC UA server's queue overflowed): a hole of
        any length, even one under ``GAP_SLACK_S`` (50 samples of a scalar stream at 100 Hz), which the
        timestamps alone let pass, the window's spectrum then judged across it."""
        if self._restart():
            self.notices.note(
                "window_values_lost",
                "pipeline %s: waveform tag %r of source %s: its source lost values just before a reading (the "
                "OPC UA server's queue for the node overflowed): the window in progress was started afresh "
                "rather than joined across the hole (each restart counted here); raise the node's queue_size "
                "or lower publishing_interval_ms",
                self.pipeline,
                self.s.waveform,
                self.source,
            )

    def _gap(self, dt: float, expect: float, rate: float | None) -> None:
        if self._restart():
            span = (
                f"whose samples span {expect:.4g} s at {rate:g} Hz"
                if rate
                else f"where they usually come {expect:.4g} s apart (no sample rate known)"
            )
            self.notices.note(
                "window_gap",
                "pipeline %s: waveform tag %r of source %s: a reading came %+.3f s after the previous one, %s: "
                "windows start afresh after a gap (or a step back in time) rather than join samples across "
                "it (each restart counted here); if no readings were lost, check the source's timestamps and "
                "window.sample_rate_hz",
                self.pipeline,
                self.s.waveform,
                self.source,
                dt,
                span,
            )

    def _missing(self) -> list[str]:
        """Scalar tags the model needs that have not been seen yet (windows wait for them)."""
        missing = [
            tag
            for tag, name in self.inputs.items()
            if name not in self.scalars and (tag in self.model_inputs or name not in self.scalars_seen)
        ]
        if missing and self.seq == 0 and self.since_emit >= 3 * self.size:  # say so if it never comes
            # received but not GOOD (a PLC's tag reading BAD): the tag is right, its value is not the machine's
            bad = [t for t in missing if t in self.not_good]
            unseen = [t for t in missing if t not in self.not_good]
            if bad:
                self.notices.note(
                    "scalar_missing",
                    "pipeline %s: windows are held back: scalar tag(s) %s of source %s read %s, not GOOD; "
                    "windows wait for a GOOD value (check the tag's device or its link at the source)",
                    self.pipeline,
                    bad,
                    self.source,
                    sorted({self.not_good[t] for t in bad}),
                    cause="not_good",
                )
            if unseen:
                self.notices.note(
                    "scalar_missing",
                    "pipeline %s: windows are held back: scalar tag(s) %s never "
                    "received from source %s (it gives %s); fix window.scalars or the source's tags",
                    self.pipeline,
                    unseen,
                    self.source,
                    sorted(self.tags_seen)[:20],
                    n=0 if bad else 1,  # one held-back window, counted once
                    cause="unseen",
                )
        return missing

    def _by_count(self, x: np.ndarray, b: int, end: int, rate: float | None) -> tuple[Window, ...]:
        size, hop, s = self.size, self.hop, self.next_i
        k = (end - size - s) // hop + 1 if end - s >= size else 0  # windows [s + j*hop, +size) now complete
        if k == 0:
            self._keep(x, b, end, s)
            return NO_WINDOWS
        if self.inputs and self._missing():
            self.next_i = s + (k - 1) * hop  # held back: only the newest stays ready
            self._keep(x, b, end, self.next_i)
            return NO_WINDOWS
        if k > MAX_WINDOWS_PER_READING:  # the newest are kept, as a full queue keeps the newest
            skip = k - MAX_WINDOWS_PER_READING
            s, k = s + skip * hop, MAX_WINDOWS_PER_READING
            self.capped += skip
            self.notices.note(
                "windows_capped",
                "pipeline %s: one reading of waveform tag %r of source %s held %d samples, %d windows at a hop "
                "of %d; the newest %d were formed and the older ones skipped (counted here), so that one "
                "reading cannot hold up the agent; send shorter readings or set a larger window.hop_samples",
                self.pipeline,
                self.s.waveform,
                self.source,
                end - b,
                k + skip,
                hop,
                MAX_WINDOWS_PER_READING,
                n=skip,
            )
        scalars = dict(self.scalars)  # shared by the windows of one reading
        out = tuple(self._window(x, b, s + j * hop, rate, scalars) for j in range(k))
        self.next_i = s + k * hop
        self.since_emit = 0
        self._keep(x, b, end, self.next_i)
        return out

    def _by_time(self, x: np.ndarray, b: int, end: int, rate: float | None) -> tuple[Window, ...]:
        a = end - self.size  # the newest `size` samples
        if a < self.buf_i0:
            self._keep(x, b, end, self.buf_i0)
            return NO_WINDOWS
        now = time.monotonic()
        if now - self.last_emit_t < (self.s.hop_s or 0):
            self._keep(x, b, end, a)
            return NO_WINDOWS
        self.last_emit_t = now
        if self.inputs and self._missing():
            self._keep(x, b, end, a)
            return NO_WINDOWS
        w = self._window(x, b, a, rate, dict(self.scalars))
        self.since_emit = 0
        self._keep(x, b, end, a)
        return (w,)

    def _window(self, x: np.ndarray, b: int, a: int, rate: float | None, scalars: dict) -> Window:
        """The window of samples [a, a + size): from the buffer (samples before ``b``) and/or ``x``."""
        e = a + self.size
        if a >= b:
            wave = x[a - b : e - b].copy()
        elif e <= b:
            wave = self.buf[a - self.buf_i0 : e - self.buf_i0].copy()
        else:
            wave = np.concatenate((self.buf[a - self.buf_i0 :], x[: e - b]))
        t0 = self._time_at(a, rate)
        if self.raw_check is not None:
            self._check_raw(wave, t0, scalars)
        step = None
        if self.resample != (1, 1):
            if self.raw_check is not None:  # vibration: the ADC's step from the raw samples (the resampled
                from edge_agent.maintenance.baseline import resampled_step  # lie on no lattice of codes)

                step = resampled_step(wave, *self.resample)
            wave = resample(wave, *self.resample, self.out_size)
        anchors = self.t_first
        while len(anchors) > 1 and anchors[1][0] <= a:  # readings wholly before this window: not needed
            anchors.popleft()
        w = Window(self.source, self.seq, t0, self._time_at(e - 1, rate), wave, scalars, step)
        self.seq += 1
        return w

    def _check_raw(self, wave: np.ndarray, t0: float, scalars: dict) -> None:
        """A resampled window's sensor check on its raw samples; a window that repeats the previous one
        sample for sample at a later time (a source re-sending a stale reading as new: no live sensor
        does that) is said so. The same reading delivered again with its own time (an OPC UA
        subscription's first value after a reconnect) is not a sensor's fault."""
        assert self.raw_check is not None  # called only with sensor checks on
        found = self.raw_check(wave, scalars) if self.resample != (1, 1) else None
        (last, last_t), self._last_raw = self._last_raw, (wave, t0)
        if (
            found is None
            and last is not None
            and t0 != last_t
            and wave[0] != wave[-1]
            and np.array_equal(wave, last)
        ):
            found = SensorFault(
                "held",
                f"sensor: the same {wave.size} samples as the previous window (a stale reading sent again)",
            )
        if found is not None or self.resample != (1, 1):
            if len(self.raw_checks) >= 1024:  # windows the queue dropped are never taken
                del self.raw_checks[next(iter(self.raw_checks))]
            self.raw_checks[self.seq] = found

    def _time_at(self, i: int, rate: float | None) -> float:
        for idx, t in reversed(self.t_first):  # the reading holding sample i (the newest, mostly)
            if idx <= i:
                return t + (i - idx) / rate if rate else t
        return self.t_first[0][1]

    def _keep(self, x: np.ndarray, b: int, end: int, keep_from: int) -> None:
        """Keep samples [keep_from, end): what a later window may use (copied: a reading's array may be
        reused by its producer, and a view would pin a long reading's memory)."""
        keep_from = max(keep_from, self.buf_i0)
        anchors = self.t_first
        if keep_from >= end:
            self.buf, self.buf_i0 = _EMPTY, end
            anchors.clear()
            return
        if keep_from >= b:
            self.buf = x[keep_from - b :].copy()
        else:
            self.buf = np.concatenate((self.buf[keep_from - self.buf_i0 :], x))
        self.buf_i0 = keep_from
        while len(anchors) > 1 and anchors[1][0] <= keep_from:
            anchors.popleft()


class KindWindow:
    """The kinds of a pipeline's last ``size`` items (a kind, or None for an item of none) with a running count of
    each: ``add`` and ``share`` cost the same whatever the size, on every item (``UnsureWatch`` summed its window
    for the share, ``ModelFailureWatch`` copied and counted its window, at every item). ``snapshot`` is safe from
    the HTTP thread."""

    __slots__ = ("by", "marked", "recent")

    def __init__(self, size: int) -> None:
        self.recent: collections.deque[str | None] = collections.deque(maxlen=size)
        self.by: collections.Counter = (
            collections.Counter()
        )  # kind -> items in the window, those above 0 only
        self.marked = 0  # items in the window with a kind

    def __len__(self) -> int:
        return len(self.recent)

    @property
    def full(self) -> bool:
        return len(self.recent) == self.recent.maxlen

    @property
    def share(self) -> float:
        n = len(self.recent)
        return self.marked / n if n else 0.0

    def add(self, kind: str | None) -> None:
        r = self.recent
        if len(r) == r.maxlen and (old := r[0]) is not None:
            self.marked -= 1
            if (k := self.by[old] - 1) > 0:
                self.by[old] = k
            else:
                del self.by[old]
        r.append(kind)
        if kind is not None:
            self.marked += 1
            self.by[kind] += 1

    def snapshot(self) -> tuple[int, dict[str, int]]:
        return len(self.recent), dict(self.by)  # (dict(): one C call under the GIL, as the loop may add)


class UnsureWatch:
    """The share of UNSURE results over the last ``window`` results; ``add`` returns an
    ``input_drift`` event when the share reaches ``max_share`` (re-armed below half of it)."""

    def __init__(self, pipeline: str, window: int, max_share: float) -> None:
        self.pipeline, self.window, self.max_share = pipeline, window, max_share
        self.kinds = KindWindow(window)
        self.raised = False

    @property
    def share(self) -> float:
        return self.kinds.share

    def add(self, reason: str | None) -> Event | None:
        self.kinds.add(reason.split(":")[0] or None if reason else None)
        if not self.raised:
            if not self.kinds.full or (share := self.kinds.share) < self.max_share:
                return None
            self.raised = True
            reasons = dict(self.kinds.by)
            top, n = max(reasons.items(), key=lambda kv: kv[1]) if reasons else ("", 0)
            what = (
                "the camera's image has not changed (frozen camera?); check it (a power cycle)"
                if top == "camera frozen"
                else "far outside the model's training inputs; check the camera (focus, light, position) or "
                "retrain on the new conditions"
            )
            return Event(
                EventKind.INPUT_DRIFT,
                pipeline=self.pipeline,
                share=round(share, 4),
                window=self.window,
                max_share=self.max_share,
                reasons=reasons,
                message=f"pipeline {self.pipeline}: {share:.0%} of the last {self.window} frames are UNSURE, "
                f"most ({n}) for '{top}': {what}",
            )
        if self.kinds.share < self.max_share / 2:
            self.raised = False
        return None


class ModelFailureWatch:
    """The model's failures (``MODEL_FAILURES``) over a pipeline's last ``FAIL_WINDOW`` items it ran the model on.
    ``add(reason or None)`` once per such item (on the loop): the first failure of each reason is logged once (a
    WARNING with its fix); more than ``FAIL_SHARE`` failing (``FAIL_MIN_ITEMS`` items at least) starts an episode
    (a WARNING and a ``model_failing`` event), said again every ``FAIL_REPEAT_S`` while it lasts (a WARNING, at a
    failure), ended when a quarter or fewer have failed for ``FAIL_QUIET_S`` (an INFO and the event, ``active``
    false), or on time when no item has come for ``FAIL_IDLE_S`` (three of the longest interval between the
    episode's items when that is longer: a slow source's next item, or a bursty source's next burst, is not
    awaited as a stop): a camera that stopped ended no episode, which
    stood on ``/status`` and in the heartbeat until the next item, for ever if none came. The timer runs only
    during an episode, on the loop ``add`` is called on (none without a running loop: then only items end it).
    Before, one WARNING at the first failure was all: a model giving NaN on every frame of a run said nothing
    more."""

    def __init__(self, pipeline: str, on_event: Callable[[Event], None], baseline: bool = False) -> None:
        self.pipeline = pipeline
        self.on_event = on_event
        # with a baseline, a window the model fails on is judged by the baseline alone (NG when it alarms)
        self.judged_as = (
            "judged by the baseline alone (NG when it alarms, else UNSURE)"
            if baseline
            else "UNSURE, not judged"
        )
        self.kinds = KindWindow(FAIL_WINDOW)
        self.active = False
        self.since: float | None = None  # wall clock, for /status
        self.failed = 0  # in the episode under way
        self.total = 0
        self.message: str | None = None
        self.first: dict[str, str] = {}  # reason -> its first message
        self._said = 0.0  # monotonic time of the last WARNING of the episode
        self._quiet: float | None = None  # monotonic time since when a quarter or fewer fail, in an episode
        self._last_item = 0.0  # monotonic time of the last item, and the interval before it
        self._gap = 0.0
        # the longest interval between items in the episode under way, the one before its first item included: a
        # source pausing between bursts (a tray of parts, a line stopping for minutes) is not taken as stopped at
        # each pause (its last interval, within a burst, is short)
        self._gap_max = 0.0
        self._model = ("", "")  # (slot, version) of the last item
        # (slot, version) whose failures began the episode under way: its start and its end name it, though a
        # hot swap (a package installed, a rollback) put another version in the slot meanwhile
        self._episode_model = ("", "")
        self._timer: asyncio.TimerHandle | None = None

    def add(self, reason: str | None, slot: str, version: str, detail: str = "", said: bool = False) -> None:
        """``said``: the failure's cause was said already (a slot failed at the start: the agent's WARNING names its
        package and why): its first item is logged at INFO."""
        now = time.monotonic()
        self._gap, self._last_item = now - self._last_item, now
        self.kinds.add(reason)
        if reason is None and not self.active:
            return  # the usual item: nothing to tell
        if self._gap > self._gap_max:  # (in an episode, or the item that starts one: reset there)
            self._gap_max = self._gap
        self._model = (slot, version)
        if reason is not None:
            self.total += 1
            if reason not in self.first:
                self.first[reason] = (
                    f"pipeline {self.pipeline}: "
                    + (
                        "a frame does not fit the model"
                        if reason == "bad_input"
                        else "no model serves its slot"
                        if reason == "no_model"
                        else "the model failed on an item"
                    )
                    + f" ({reason}): {detail}; such an item is "
                    f"{self.judged_as} (each failure counted under errors.{reason}); "
                    f"{_FIXES.get(reason, 'see the model slot status')}"
                )
                log.log(logging.INFO if said else logging.WARNING, "%s", self.first[reason])
        n, by = len(self.kinds), self.kinds.by
        share = self.kinds.share
        if self.active:
            if share > FAIL_SHARE / 2:
                self._quiet = None
            elif self._quiet is None:
                self._quiet = now
            if reason is not None:
                self.failed += 1
                if now - self._said >= FAIL_REPEAT_S:
                    self._said = now
                    log.warning(
                        "pipeline %s: the model (slot %s, %s) still fails on %d of its last %d items %s; %d failed "
                        "since it began (those items %s)",
                        self.pipeline,
                        slot,
                        version,
                        self.kinds.marked,
                        n,
                        dict(by),
                        self.failed,
                        self.judged_as,
                    )
            elif self._quiet is not None and now - self._quiet >= FAIL_QUIET_S:
                self._end(
                    f"pipeline {self.pipeline}: the model (slot {self._episode_of()}) judges its items again "
                    f"({share:.0%} of the last {n} failed); {self.failed} failed in the episode"
                )
            return
        if n >= FAIL_MIN_ITEMS and share > FAIL_SHARE:
            self.active, self.since, self._said, self._gap_max = True, time.time(), now, self._gap
            self._episode_model = (slot, version)
            self.failed = self.kinds.marked
            top, k = by.most_common(1)[0]
            msg = (
                f"pipeline {self.pipeline}: the model (slot {slot}, {version}) fails on {self.failed} of its last "
                f"{n} items, most ({k}) {top}: those items are {self.judged_as}, never OK or NG by the model (a "
                f"reject gate acts on them only through an action on UNSURE); {_FIXES.get(top, 'see the model slot status')}"
            )
            self.message = msg
            log.warning("%s", msg)
            self._tell(True, msg)
            self._arm(self._idle_limit())

    def _idle_limit(self) -> float:
        """No item for this long ends an episode on time: FAIL_IDLE_S, or three of the longest interval between
        the episode's items (the one before its first item included) when that is longer. Three of the last
        interval ended the episode of a source pausing between bursts at each pause, and the next failure started
        another: two events and a WARNING per pause of one failure. At most FAIL_IDLE_MAX_S: a night's pause before
        the first item is no rhythm."""
        return max(FAIL_IDLE_S, min(3 * self._gap_max, FAIL_IDLE_MAX_S))

    def _arm(self, delay_s: float) -> None:
        if self._timer is not None:
            return  # (the one pending arms itself again as needed)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without a loop (a unit test): items alone end an episode
            return
        self._timer = loop.call_later(delay_s, self._on_time)

    def _on_time(self) -> None:
        self._timer = None
        if not self.active:
            return
        idle, limit = time.monotonic() - self._last_item, self._idle_limit()
        if idle < limit:
            self._arm(limit - idle)
            return
        self._end(
            f"pipeline {self.pipeline}: no item has reached the model (slot {self._episode_of()}) for {idle:.0f} s (its "
            f"source stopped, or its items are dropped before the model: see the source's status): the episode is "
            f"ended; {self.failed} failed in it; a failure of the next items starts another"
        )

    def _end(self, msg: str) -> None:
        self.active, self._quiet = False, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info("%s", msg)
        self.message, self.since = None, None
        self._tell(False, msg)

    def close(self) -> None:
        """The pipeline stops: its timer with it, and an episode under way is ended (its event told while the outbox
        is open: the pipelines stop first). Left standing, the episode's last word to the cloud and a dashboard was
        its start, for good when the model judged its items after the restart (a package installed meanwhile)."""
        if self.active:
            self._end(
                f"pipeline {self.pipeline}: stopped (the agent stops, or its config is reloaded) while the model "
                f"(slot {self._episode_of()}) failed on its items: the episode is ended; {self.failed} failed in it; "
                "if the model fails again after the restart, another begins"
            )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _episode_of(self) -> str:
        """The slot and the version whose failures began the episode, for its end messages, with the version
        serving now where a hot swap put another in the slot meanwhile."""
        slot, version = self._episode_model
        now = self._model[1]
        return f"{slot}, {version}" + ("" if now == version else f"; {now} serves now")

    def _tell(self, active: bool, msg: str) -> None:
        slot, version = self._episode_model  # its start's, at its end too
        n, by = self.kinds.snapshot()
        evt = Event(
            EventKind.MODEL_FAILING,
            pipeline=self.pipeline,
            slot=slot,
            model_version=version,
            active=active,
            share=round(sum(by.values()) / n, 4) if n else 0.0,
            items=n,
            reasons=by,
            failed=self.failed,
            message=msg,
        )
        try:
            self.on_event(evt)
        except Exception:
            log.exception("model_failing event could not be recorded")

    def status(self) -> dict:
        n, by = self.kinds.snapshot()
        return {
            "active": self.active,
            "share": round(sum(by.values()) / n, 4) if n else 0.0,
            "items": n,
            "reasons": by,
            "failed_total": self.total,
            "since": self.since,
            "message": self.message,
        }


class PipelineStats:
    def __init__(self) -> None:
        self.items = 0
        self.results = 0
        self.ng = 0
        self.unsure = 0
        # results UNSURE because the model failed on the item (also counted under errors): not judged, so the
        # fleet's error rate and health read them as failures, not as results
        self.model_failed = 0
        self.errors: collections.Counter = collections.Counter()
        self.latencies: collections.deque = collections.deque(maxlen=2000)  # total ms
        self.times: collections.deque = collections.deque(maxlen=2000)  # monotonic finish times, for rates
        self.last_result: Result | None = None

    def rate(self, window_s: float = 30.0) -> float:
        now = time.monotonic()  # elapsed time: a wall clock step would empty or stall the window
        n = sum(1 for t in list(self.times) if now - t <= window_s)  # list(): read from the HTTP thread
        return n / window_s

    def percentiles(self) -> dict[str, float | None]:
        if not self.latencies:
            return {"p50": None, "p95": None, "p99": None}
        # np.percentile's "linear" rule, without np.percentile: it imports numpy.ma (1.2 MB) on first use
        a = np.sort(np.asarray(list(self.latencies), dtype=np.float64))
        return {
            k: float(np.interp((len(a) - 1) * q / 100, np.arange(len(a)), a))
            for k, q in (("p50", 50), ("p95", 95), ("p99", 99))
        }


def age_bound(settings: PipelineSettings, source: Any = None) -> tuple[float | None, bool, str]:
    """``queue.max_age_ms`` as the pipeline applies it: (bound in seconds or None, whether it follows the
    frames' rate, what it is and why). ``auto`` bounds only a live camera's frames: a window is one of a
    series where order matters more than freshness (the baseline, the wear trend, the sensor checks read them
    in turn) and its time is the source's clock; a replayed file or folder and a drop folder hold items each
    wanted judged whenever; ``block`` was chosen to judge every item its queue takes (its own queue drops
    none; the source's hand-over queue may still drop, see docs/agent.md)."""
    q = settings.queue
    if q.max_age_ms is None:
        return None, False, "none (max_age_ms: null)"
    if q.max_age_ms != "auto":
        return float(q.max_age_ms) / 1000.0, False, f"{q.max_age_ms:g} ms (max_age_ms)"
    if settings.window is not None:
        return None, False, "none (auto: signal windows are a series, order before freshness)"
    if q.policy is QueuePolicy.BLOCK:
        return None, False, "none (auto: queue policy block judges every item)"
    if getattr(source, "watch", False):
        return None, False, "none (auto: a drop folder's images are each judged)"
    if getattr(getattr(source, "kind", None), "value", None) == "path":
        return None, False, "none (auto: a file or folder replayed is judged frame by frame)"
    return None, True, "auto: not set until the frames' rate is known"


class _Stale(NamedTuple):
    age_s: float


class AgeGate:
    """Items too old to act on. ``stale(item)``: its age (now minus its capture time; a window's is its last
    sample's) when over the bound, else None. ``drop`` counts one and returns the ``items_stale`` event that
    starts an episode; ``fresh`` returns the one that ends it (no stale item for ``STALE_QUIET_S``, at a
    fresh item's result). ``auto``: the bound follows the frames' rate (the median of the last 16 intervals
    between capture times, from the 5th frame; recomputed every 8 frames)."""

    def __init__(self, pipeline: str, settings: PipelineSettings, source: Any = None) -> None:
        self.pipeline = pipeline
        self.max_s, self.auto, self.why = age_bound(settings, source)
        self.windows = settings.window is not None
        self.dropped = 0
        self.active = False
        self.episode = 0  # dropped in the episode under way
        self.last_stale = 0.0  # monotonic time of the last stale item
        self.last: tuple[int, float] | None = None  # (seq, age ms) of the last stale item
        self._t: float | None = None  # auto: the last frame's capture time
        self._gaps: collections.deque = collections.deque(maxlen=16)
        self._n = 0
        self._offset: float | None = None  # wall clock less monotonic clock at the last look
        self._step = 0.0  # the last step of the wall clock (s; forward > 0), looked at until _step_until
        self._step_until = 0.0

    def note(self, captured_at: float) -> None:
        """Auto: a frame offered; its capture time against the previous one's gives the rate."""
        if not self.auto:
            return
        last, self._t = self._t, captured_at
        if last is None:
            return
        d = captured_at - last
        if 0 < d <= 60:  # a camera's outage (or a clock step) says nothing of its rate
            self._gaps.append(d)
        self._n += 1
        if len(self._gaps) >= 4 and (self.max_s is None or not self._n & 7):
            gap = sorted(self._gaps)[len(self._gaps) // 2]
            self.max_s = max(AUTO_AGE_FRAMES * gap, AUTO_AGE_FLOOR_S)
            self.why = (
                f"auto: {AUTO_AGE_FRAMES} frame intervals at {1 / gap:.3g} fps (measured), at least "
                f"{AUTO_AGE_FLOOR_S * 1000:.0f} ms"
            )

    def stale(self, item: Frame | Window) -> float | None:
        bound = self.max_s
        if bound is None:
            return None
        mono = time.monotonic()
        now = time.time()
        age = now - (item.captured_at if isinstance(item, Frame) else item.end_ts)
        offset = now - mono
        if self._offset is not None and abs(offset - self._offset) > CLOCK_STEP_S:
            self._step, self._step_until = offset - self._offset, mono + STEP_GRACE_S
        self._offset = offset
        if mono < self._step_until:
            # an item stamped before the step has its age on the clock of then: a step forward made the frames
            # waiting in the queue an hour or a day old, each dropped unjudged (a part the reject gate let by)
            # and said as 'inference is behind'; the lesser age that is not negative is the item's
            before = age - self._step
            if before >= 0 and (age < 0 or before < age):
                age = before
        return age if age > bound else None

    def drop(self, item: Frame | Window, age_s: float) -> Event | None:
        self.dropped += 1
        self.episode += 1
        self.last_stale = time.monotonic()
        self.last = (item.seq, round(age_s * 1000, 1))
        if self.active:
            return None
        self.active = True
        bound_ms = (self.max_s or 0.0) * 1000
        clock = (
            " (a window's age runs from its last sample's timestamp, on the source's clock: a source "
            "clock ahead of or behind the gateway's shows here too)"
            if self.windows
            else ""
        )
        msg = (
            f"pipeline {self.pipeline}: inference is behind: item {item.seq} of source {item.source} was "
            f"{age_s * 1000:.0f} ms old when a thread could take it, over queue.max_age_ms ({bound_ms:.0f} ms, "
            f"{self.why}){clock}; such items are dropped unjudged (counted: dropped_stale), so no verdict nor "
            "action acts on a part that has moved on; the gateway does not keep up: lower the camera's fps, "
            "use a smaller model, or move a camera to another gateway (docs/agent.md 'Sizing a gateway')"
        )
        log.warning("%s", msg)
        return Event(
            EventKind.ITEMS_STALE,
            pipeline=self.pipeline,
            active=True,
            max_age_ms=round(bound_ms, 1),
            age_ms=round(age_s * 1000, 1),
            dropped=1,
            message=msg,
        )

    def fresh(self, age_ms: float) -> Event | None:
        if not self.active or time.monotonic() - self.last_stale < STALE_QUIET_S:
            return None
        return self._ended(age_ms, "items are judged within queue.max_age_ms again")

    def _ended(self, age_ms: float | None, why: str) -> Event | None:
        if not self.active:
            return None
        self.active = False
        n, self.episode = self.episode, 0
        msg = f"pipeline {self.pipeline}: {why}; {n} were dropped as stale in this episode"
        log.info("%s", msg)
        return Event(
            EventKind.ITEMS_STALE,
            pipeline=self.pipeline,
            active=False,
            max_age_ms=None if self.max_s is None else round(self.max_s * 1000, 1),
            age_ms=None if age_ms is None else round(age_ms, 1),
            dropped=n,
            message=msg,
        )

    def close(self) -> Event | None:
        """The pipeline stops: the end of an episode under way (left standing, its start was the cloud's last
        word on it, for good)."""
        return self._ended(
            None, "stopped (the agent stops, or its config is reloaded) while inference was behind"
        )

    def status(self) -> dict:
        return {
            "max_age_ms": None if self.max_s is None else round(self.max_s * 1000, 1),
            "max_age": self.why,
            "dropped_stale": self.dropped,
            "stale_now": self.active,
            "last_stale": None if self.last is None else {"seq": self.last[0], "age_ms": self.last[1]},
        }


class _Refused(Exception):
    """A camera's frame refused when it was taken (decoded then): counted at the camera, not here."""


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        slot: ModelSlot,
        executor: Executor,
        on_result: Callable[[Result, Frame | Window], Awaitable[None]],
        on_latency: Callable[[str, Latency], None] | None = None,
        *,
        on_event: Callable[[Event], None] | None = None,
        data_dir: str | Path | None = None,
        source_settings: Any = None,
    ) -> None:
        """``source_settings``: the settings of the source it reads (its queue.max_age_ms ``auto`` depends on
        what kind of source it is)."""
        self.s = settings
        self.data_dir = data_dir
        self.baseline: Monitor | None = None  # when settings.baseline is set
        self.sensor: SensorWatch | None = None  # maintenance pipelines: is the window the sensor's fault?
        self.name = settings.name
        self.slot = slot
        self.executor = executor
        self.on_result = on_result
        self.on_latency = on_latency or (lambda name, lat: None)
        self.queue = BoundedQueue(settings.queue.size, settings.queue.policy)
        self.age = AgeGate(self.name, settings, source_settings)
        self.stats = PipelineStats()
        self.windower: Windower | None = None
        self.notices = Notices(log)  # silent drops: first one logged as a WARNING, all counted
        # a window on a camera pipeline (a config warning): its frames are dropped, counted, the reason on its status;
        # it went to a windower that takes readings only, and the pipeline judged nothing, in silence
        self.window_ignored = (
            settings.window is not None and getattr(source_settings, "produces", None) == "frames"
        )
        self._tasks: list[asyncio.Task] = []
        self._unexpected_seen: set[str] = set()  # distinct unexpected errors logged (with traceback) once
        self.on_event = on_event or (lambda evt: None)
        u = settings.unsure
        self.unsure_tolerance = u.tolerance if u.enabled else None
        self.unsure_watch = UnsureWatch(self.name, u.window, u.max_share)
        # on_event read when called: the agent may set it after this pipeline is made
        self.failures = ModelFailureWatch(
            self.name, lambda evt: self.on_event(evt), baseline=settings.baseline is not None
        )

    @property
    def kind(self) -> str:
        return "signal" if self.s.window is not None and not self.window_ignored else "frame"

    def refusal(self, manifest: Manifest) -> str | None:
        """Why the model of ``manifest`` cannot serve this pipeline (None: it can): checked when the pipeline is
        prepared and again on each package swapped into its slot (``ModelSlot.swap_checks``)."""
        # a failed slot's first package (a fleet-fed slot's) of the other kind: a signal model was installed into a
        # camera pipeline's slot (an image model into a windowed one's), the slot read active, every item UNSURE
        # bad_input (a windowed pipeline: no result at all), the PLC's heartbeat written again
        if (
            self.window_ignored
        ):  # it judges nothing: no model is refused for it (the start went on without it)
            return None
        if (why := kind_refusal(self.name, self.s.window is not None, manifest)) is not None:
            return why
        if self.s.window is None:
            return None
        rate = getattr(manifest.preprocessing, "sample_rate_hz", None)
        if self.s.baseline is not None:
            top_rpm = self.s.baseline.speed_range_rpm[1]
            if rate is not None and rate < (floor_hz := waveform_rate_floor_hz(top_rpm)):
                # an overall level (a 4-20 mA transmitter's RMS once a second) is no waveform: the baseline's
                # condition features found no shaft line in it and failed at every window, leaving the model's
                # own verdicts
                return (
                    f"pipeline {self.name}: model {manifest.name} takes its signal at {rate:g} Hz; the "
                    f"baseline's condition features need a vibration waveform at {floor_hz:g} Hz or more "
                    f"(its spectrum up to a {top_rpm:g}-rpm shaft's 1x): serve a model of the accelerometer's "
                    "waveform, or remove 'baseline:' and judge the level with the model alone"
                )
        size = getattr(manifest.preprocessing, "window_samples", None)
        w = self.windower  # (None while the pipeline is prepared: sized from the model then serving)
        if w is None and rate is not None and self.s.window.sample_rate_hz is not None:
            # not prepared yet (its slot failed at the start): a package swapped in whose rate the tag cannot be
            # resampled to was installed, and every reading then dropped (model_unfit) while the slot read active
            try:
                resample_plan(
                    self.s.window.sample_rate_hz,
                    rate,
                    f"pipeline {self.name}: tag {self.s.window.waveform!r}",
                )
            except RateError as exc:
                return f"{exc} (model {manifest.name} {manifest.version})"
        if w is not None and (size != w.out_size or rate != w.model_rate):
            # the windows (buffered, queued, commissioned by a baseline) keep the size and rate the pipeline
            # started with: another length failed the model on every window (bad_input; for good after an
            # admin's rollback, which has no health window), another rate was judged as if taken at it, silently
            takes = f"{size} samples at {rate:g} Hz" if size and rate else "no signal windows"
            return (
                f"pipeline {self.name}: model {manifest.name} {manifest.version} takes {takes}; the pipeline's "
                f"windows are {w.out_size} samples at {w.model_rate or 0:g} Hz, sized when it started, and a "
                "hot swap does not change them: serve a model of the same window and rate, or install this one "
                "at a start (the slot's 'package' with version_policy: pinned, then restart the agent)"
            )
        if w is not None:  # (at a start the config's check refused such a model: edge_agent.config)
            cond = getattr(manifest.preprocessing, "condition", None)
            speed = cond.speed_scalar if cond is not None else None
            need = [*getattr(manifest.preprocessing, "scalars", []), *([speed] if speed else [])]
            carried = set(self.s.window.scalar_inputs.values())
            if missing := [x for x in dict.fromkeys(need) if x not in carried]:
                # every window failed the model (bad_input 'window lacks scalar tag(s)'), no result
                return (
                    f"pipeline {self.name}: model {manifest.name} {manifest.version} needs scalar input(s) "
                    f"{missing}, which the window does not carry (it carries {sorted(carried)}); every window "
                    f"would be refused: map the source's tag to it in the pipeline's window.scalars first"
                )
        return None

    def prepare(self) -> None:
        """After the slot has a model: size the windower from the model's preprocessing."""
        if self.s.window is not None and not self.window_ignored:
            pre = self.slot.manifest.preprocessing
            plan = (1, 1)
            if self.s.window.sample_rate_hz is not None and hasattr(pre, "sample_rate_hz"):
                try:
                    plan = resample_plan(
                        self.s.window.sample_rate_hz,
                        pre.sample_rate_hz,
                        f"pipeline {self.name}: tag {self.s.window.waveform!r}",
                    )
                except RateError as exc:
                    raise SlotError(f"{exc} (model {self.slot.manifest.name})") from None
            if (why := self.refusal(self.slot.manifest)) is not None:
                raise SlotError(why)
            # a package a fleet rollout swaps in is checked so too, and refused in the same words
            self.slot.swap_checks[self.name] = self.refusal
            extra, scale = {}, {}
            if self.s.baseline is not None and self.s.baseline.speed_tag:
                extra[self.s.baseline.speed_tag] = SPEED_INPUT
                cond = getattr(pre, "condition", None)
                if self.s.baseline.speed_unit == "hz" and cond is not None and cond.speed_scalar:
                    scale[cond.speed_scalar] = 60.0  # the model's speed scalar is rpm
            if self.s.baseline is not None and self.s.baseline.temperature_tag:
                extra[self.s.baseline.temperature_tag] = TEMPERATURE_INPUT
            # a speed (or temperature) tag may also be the state tag: it rides under its first name, which
            # the baseline reads for its state (states.StateBaselines), and the speed is not lost to it
            if self.s.baseline is not None and self.s.baseline.state_tag:
                extra.setdefault(self.s.baseline.state_tag, STATE_INPUT)
            self.windower = Windower(
                self.s.source,
                self.s.window,
                getattr(pre, "window_samples", 1024),
                self.notices,
                self.name,
                plan,
                extra,
                getattr(pre, "sample_rate_hz", None),
                self.on_event,
                scale,
            )
            if self.s.baseline is not None:
                from edge_agent.maintenance.monitor import Monitor

                self.baseline = Monitor(self.s.baseline, self.slot, self.name, self.data_dir, self.on_event)
            m = self.slot.manifest
            # vibration: a baseline, or a maintenance model at 1 kHz or more (not a slow signal such as a
            # temperature, which reads flat for minutes without a fault)
            if self.s.baseline is not None or (
                m.task == "equipment_maintenance" and getattr(pre, "sample_rate_hz", 0) >= 1000
            ):
                self.sensor = SensorWatch(self.name, self.on_event)
                self.windower.raw_check = self._sensor_check
            if self.s.baseline is None and m.task == "equipment_maintenance":
                # the package's anomaly threshold was set on the machines it was trained on: on others
                # healthy windows read NG (0-152 episodes a day on generated machines, docs/maintenance.md)
                log.warning(
                    "pipeline %s: maintenance model %s judges this asset without a baseline: its NG comes "
                    "from a threshold set on the machines it was trained on, and on a machine it never "
                    "saw, healthy windows read NG; add 'baseline:' to the pipeline to commission this "
                    "asset (docs/maintenance.md)",
                    self.name,
                    m.name,
                )

    async def offer(self, item: Frame | Reading) -> None:
        if self.window_ignored:
            # one WARNING, as each silent drop: a fleet config's warnings are not logged at its start
            self.notices.note(
                "window_on_frames", "pipeline %s: frames dropped: %s", self.name, self._ignored()
            )
            return
        if self.windower is None and self.s.window is not None and not self._prepare_late():
            return
        if self.windower is not None:
            if not isinstance(item, Reading):
                return
            ws = self.windower.add_all(item)
            if not ws:
                return
            # the windows of one reading are one queue entry: a burst is scored in full when inference
            # keeps up, and dropped whole (each window counted) when it does not
            if len(ws) == 1:
                await self._enqueue(ws[0])
            else:
                await self._enqueue(ws, len(ws))
        elif isinstance(item, Frame):
            self.age.note(item.captured_at)
            await self._enqueue(item)

    async def _enqueue(self, item: Frame | Window | tuple[Window, ...], n: int = 1) -> None:
        self.stats.items += n
        await self.queue.put(item, n)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"pipeline-{self.name}-{i}")
            for i in range(self.s.workers)
        ]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish what is queued and in flight, then stop: the workers, and the episodes under way ended (their
        ends told while the outbox is open). Cut from outside (a caller's bound shorter than the wait, a cancel),
        it stops them all the same: the workers went on with the queued items, the watch's timer stayed armed,
        and a "stopped" pipeline told an episode's end, then another's start."""
        try:
            await self.queue.close()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=timeout_s)
        finally:
            for t in self._tasks:
                t.cancel()  # (a no-op on those done)
            self.failures.close()  # (after the items in flight: one of them may start an episode)
            if (evt := self.age.close()) is not None:
                self._emit(evt)

    async def _worker(self) -> None:
        while True:
            try:
                entry, enq_t = await self.queue.get()
            except EOFError:
                return
            for item in entry if isinstance(entry, tuple) else (entry,):  # a reading's windows: oldest first
                try:
                    if not self._too_old(item):  # here, not in a thread: a stale item never waits for one
                        await self._process(item, enq_t)
                except Exception as exc:  # one item's fault never ends this worker: counted, skipped
                    self._unexpected(exc)

    def _unexpected(self, exc: Exception) -> None:
        """An error no check foresaw, on one item (in the model's run, or after it: building, judging or
        handing on its result): counted under ``errors.unexpected``, each distinct one logged once with its
        traceback (at most ``MAX_CAUSES``), the item skipped. Before, one raised after the model's run ended
        this pipeline's worker for good: no result any more, nothing counted, the pipeline still listed."""
        self.stats.errors["unexpected"] += 1
        cause = f"{type(exc).__name__}: {exc}"[:300]
        if cause not in self._unexpected_seen and len(self._unexpected_seen) < MAX_CAUSES:
            self._unexpected_seen.add(cause)
            log.error(
                "pipeline %s: an item failed unexpectedly and was skipped (counted under errors.unexpected; "
                "each distinct error logged once): %s",
                self.name,
                cause,
                exc_info=exc,
            )

    def _ignored(self) -> str:
        return f"window: {FRAME_WINDOW_WHY}"

    def _prepare_late(self) -> bool:
        """A windowed pipeline whose slot had no model at the agent's start (its package refused, nothing
        installed): its windows are sized from the model, so its readings are counted (``no_model``) and dropped
        until a package serves the slot (the fleet's), then it is prepared as at a start. True once prepared."""
        if self.slot.version is None:
            reason, detail = "no_model", f"model slot {self.slot.name!r} has no model"
            if self.slot.failed is not None:
                detail = f"{detail}: {self.slot.failed}"
        else:
            try:
                self.prepare()
                return True
            except SlotError as exc:  # a package that cannot serve this pipeline (its sample rate)
                reason, detail = "model_unfit", str(exc)
        self.notices.note(
            reason,
            "pipeline %s: readings dropped (%s): %s; %s",
            self.name,
            reason,
            detail,
            _FIXES.get(reason, "see the model slot's status"),
            # a slot failed at the start: the agent's WARNING said its package and why
            level=logging.INFO if reason == "no_model" and self.slot.failed is not None else logging.WARNING,
        )
        return False

    def _too_old(self, item: Frame | Window) -> bool:
        age = self.age.stale(item)
        if age is None:
            return False
        self._stale(item, age)
        return True

    def _stale(self, item: Frame | Window, age_s: float) -> None:
        evt = self.age.drop(item, age_s)
        if evt is not None:
            self._emit(evt)

    def _emit(self, evt: Event) -> None:
        try:
            self.on_event(evt)
        except Exception:
            log.exception("%s event could not be recorded", evt["kind"])

    async def _process(self, item: Frame | Window, enq_t: float) -> None:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            # ``start`` becomes when a thread took the item: the wait for one (the pool is shared by every
            # pipeline, and a saturated gateway's frames queue there) is the item's queue time too
            start, inf = await loop.run_in_executor(self.executor, self._started_infer, item)
        except _Refused:  # a camera's frame that could not be decoded when taken: counted at the camera
            return
        except (InferenceError, SlotError) as exc:
            reason = getattr(exc, "reason", "no_model")
            self.stats.errors[reason] += 1
            if (
                reason in MODEL_FAILURES
                or reason == "no_model"
                or (reason == "bad_input" and isinstance(item, Frame))
            ):
                # the model failed on an item it was given, or a camera's frame does not fit it (a camera set to
                # another resolution against a roi), or no model serves the slot (its package refused at the
                # start, nothing installed): UNSURE, naming the failure (with a baseline, a window is judged by
                # the baseline alone), never dropped unjudged
                self.failures.add(
                    reason,
                    self.slot.name,
                    self._model_names()[1],
                    str(exc),
                    said=reason == "no_model" and self.slot.failed is not None,
                )
                if self.baseline is not None and isinstance(item, Window):
                    await self._baseline_alone(item, reason)
                else:
                    await self._model_failed(item, reason, enq_t, start, str(exc))
                return
            if reason not in self.notices.counts:
                self.notices.note(
                    reason,
                    "pipeline %s: item dropped (%s): %s; %s",
                    self.name,
                    reason,
                    exc,
                    _FIXES.get(reason, "see the model slot's status"),
                )
            else:
                self.notices.counts[reason] += 1
            if self.baseline is not None and isinstance(item, Window):
                await self._baseline_alone(item, reason)
            return
        except Exception as exc:  # never let one item stop the pipeline
            self._unexpected(exc)
            return
        if isinstance(inf, _Stale):  # fresh when taken from the queue, too old once a thread took it
            self._stale(item, inf.age_s)
            return
        if not isinstance(inf, Inference):  # the sensor's fault: UNSURE, never OK nor NG
            assert isinstance(item, Window)
            await self._sensor_result(item, inf, enq_t, start)
            return
        self.failures.add(None, self.slot.name, inf.version)
        if self.baseline is not None and isinstance(item, Window):
            try:
                verdict = await loop.run_in_executor(self.executor, self.baseline.process, item)
            except Exception as exc:  # the model's result still counts
                self.stats.errors["baseline"] += 1
                verdict = None
                if "baseline" not in self.notices.counts:
                    self.notices.note(
                        "baseline",
                        "pipeline %s: the baseline could not score a window: %s",
                        self.name,
                        exc,
                    )
        lat = Latency((start - enq_t) * 1000, inf.preprocess_ms, inf.inference_ms, inf.postprocess_ms)
        it = inf.interpretation
        outputs: dict[str, Any] = {}
        for k, v in inf.outputs.items():
            if v.size <= 16:
                a = np.asarray(v).ravel()
                # rounded in double: a float16 value times 1e6 overflowed (every value past 0.066 published as
                # null); a flag (bool) or a count kept as it is (numpy's round raised on a bool and ended this
                # pipeline's worker); anything else (text) is no number to publish
                if a.dtype.kind == "f":
                    outputs[k] = a.astype(np.float64).round(6).tolist()
                elif a.dtype.kind in "biu":
                    outputs[k] = a.tolist()
        if it.remaining_life_raw is not None:  # the model's value below 0, published as remaining_life 0
            outputs["remaining_life_below_zero"] = round(it.remaining_life_raw, 6)
        res = Result(
            pipeline=self.name,
            source=item.source,
            item_seq=item.seq,
            captured_at=item.captured_at if isinstance(item, Frame) else item.end_ts,
            model=inf.model,
            model_version=inf.version,
            engine=inf.engine,
            verdict=it.verdict,
            score=float(it.score),
            label=it.label,
            probabilities=it.probabilities,
            margin=it.margin,
            anomaly_score=it.anomaly_score,
            remaining_life=it.remaining_life,
            outputs=outputs,
            latency=lat,
            heatmap=it.heatmap,
            finished_at=time.time(),
            reason=it.reason,
        )
        if self.baseline is not None and isinstance(item, Window) and verdict is not None:
            self.baseline.apply(verdict, res)
        elif self.baseline is None and isinstance(item, Window):
            self._speed_unusable(item, res)
        if res.verdict == "OK" and it.ok_label is not None:
            # an OK result names no fault: the classifier's top class (a fault guessed on a window the anomaly
            # score or the baseline judged healthy) reads as a fault beside OK; it stays in probabilities
            res.label = it.ok_label
        bv = verdict if self.baseline is not None else None
        if self.sensor is not None and (bv is None or not bv.stopped):
            # a clean window, or one the baseline finds at another scale. A stop says nothing of the sensor: a dead
            # sensor's flat windows while the speed tag says the shaft stands are the stop's, and counted clean they
            # ended its episode ('reads a live signal again') at every stop of 10 windows, opened again at the restart
            found = None if bv is None or bv.sensor is None else SensorFault(bv.sensor_kind or "", bv.sensor)
            self.sensor.record(found)
        if self.kind == "frame":  # UNSURE: outside the package's input_stats, or a frozen camera
            drift = self.unsure_watch.add(it.reason)
            if drift is not None:
                log.warning("%s", drift["message"])
                self.on_event(drift)
        self.stats.latencies.append(lat.total_ms)
        self.on_latency(self.name, lat)
        await self._hand_on(res, item)

    async def _hand_on(self, res: Result, item: Frame | Window) -> None:
        """A result counted (results, NG, UNSURE, its time), kept as the last, its age watched, and handed to the
        actions and the outbox (``on_result``: an error there is counted, never the pipeline's end). Every result
        of the pipeline, the model's, the baseline's alone or a sensor fault's, goes through here."""
        st = self.stats
        st.results += 1
        st.ng += res.verdict == "NG"
        st.unsure += res.verdict == "UNSURE"
        st.times.append(time.monotonic())
        st.last_result = res
        if self.age.active and (evt := self.age.fresh(res.age_ms)) is not None:
            self._emit(evt)
        try:
            await self.on_result(res, item)
        except Exception:
            self.stats.errors["action_dispatch"] += 1
            log.exception("pipeline %s: acting on a result failed", self.name)

    def _model_names(self) -> tuple[str, str]:
        """(package name, version) of the slot's model, ("", "") when it has none: a failed item's result names
        them."""
        try:
            m = self.slot.manifest
        except SlotError:
            return "", ""
        return m.name, m.version

    async def _model_failed(
        self, item: Frame | Window, reason: str, enq_t: float, start: float, detail: str = ""
    ) -> None:
        """The model failed on this item (``MODEL_FAILURES``: NaN/Inf out, the engine's error, its preprocessing's
        or its outputs' that its manifest cannot read): a result ``UNSURE`` naming the failure in ``reason``
        (``outputs.model_error``: the reason alone), no label, handed on like any UNSURE (actions whose condition
        names UNSURE, MQTT, the outbox). Before, the item was dropped, counted, said once: a model giving NaN on
        every frame let every part by the reject gate, unjudged and untold. A camera's frame that does not fit the
        model (``bad_input``: its roi or tiles outside the frame, pixels not 8-bit) is UNSURE the same way, the
        reason naming why (``detail``): it was dropped, one WARNING for the whole run."""
        model, version = self._model_names()
        what = "frame" if isinstance(item, Frame) else "window"
        res = Result(
            pipeline=self.name,
            source=item.source,
            item_seq=item.seq,
            captured_at=item.captured_at if isinstance(item, Frame) else item.end_ts,
            model=model,
            model_version=version,
            engine=self.slot.engine_name or "",
            verdict="UNSURE",
            score=None,  # not judged: no number a dashboard reads as a good part's (0.0 was)
            outputs={"model_error": reason},
            latency=Latency((start - enq_t) * 1000, (time.perf_counter() - start) * 1000, 0.0, 0.0),
            finished_at=time.time(),
            reason=(
                f"the frame does not fit the model (bad_input): {printable(detail, 300)}; not judged"
                if reason == "bad_input"
                else f"no model serves this {what} (no_model): {printable(detail, 300)}; not judged"
                if reason == "no_model"
                else f"the model failed on this {what} ({reason}): not judged"
            ),
        )
        self.stats.model_failed += 1
        await self._hand_on(res, item)

    async def _baseline_alone(self, item: Window, reason: str) -> None:
        """The model failed on this window (NaN out, an engine error, no model): the baseline, which judges the
        machine without it, still learns and scores it. Before, the window was dropped: a model giving NaN on
        every window (its golden NaN matching NaN) kept the baseline commissioning for ever and a bearing fault
        unseen. NG when the baseline alarms; never OK (UNSURE, the model's failure named) otherwise."""
        assert self.baseline is not None
        loop = asyncio.get_running_loop()
        try:
            verdict = await loop.run_in_executor(self.executor, self.baseline.process, item)
        except Exception as exc:
            self.stats.errors["baseline"] += 1
            if "baseline" not in self.notices.counts:
                self.notices.note(
                    "baseline", "pipeline %s: the baseline could not score a window: %s", self.name, exc
                )
            return
        model, version = self._model_names()
        why = f"the model failed on this window ({reason}): judged by the baseline alone"
        res = Result(
            pipeline=self.name,
            source=item.source,
            item_seq=item.seq,
            captured_at=item.end_ts,
            model=model,
            model_version=version,
            engine="",
            verdict="UNSURE",
            score=None,  # the baseline's, when it scores the window (Monitor.apply)
            finished_at=time.time(),
            reason=why,
        )
        self.baseline.apply(verdict, res)
        if res.verdict == "OK":  # the baseline found no fault, but the model could not judge: not OK
            res.verdict, res.reason = "UNSURE", why
        elif res.verdict == "NG":
            res.reason = None  # (why UNSURE); the model's failure is in outputs
        res.outputs["model_error"] = reason
        await self._hand_on(res, item)

    def _speed_unusable(self, item: Window, res: Result) -> None:
        """The model's shaft speed scalar reads no speed (0, negative, NaN: a machine at rest, a speed tag that
        reads 0 while the machine runs): its features fell back to a speed estimated from the spectrum, which
        the package was not trained on, and a machine at rest read as a fault. Not judged: UNSURE, named,
        counted (with a baseline, its own rules on the speed tag and the signal judge the window)."""
        cond = getattr(self.slot.manifest.preprocessing, "condition", None)
        name = cond.speed_scalar if cond is not None else None
        if not name or name not in item.scalars:
            return
        value = float(item.scalars[name])
        if value > 0:
            return
        res.verdict, res.label, res.remaining_life = "UNSURE", None, None
        res.reason = (
            f"speed scalar {name!r} reads {value:g} rpm: the machine at rest, or its speed tag wrong; "
            "not judged"
        )
        scalars = self.s.window.scalars if self.s.window is not None else None
        tag = scalars.get(name, name) if isinstance(scalars, dict) else name
        self.notices.note(
            "model_speed_unusable",
            "pipeline %s: model %s's shaft speed scalar %r (tag %r) reads %g rpm: its windows are not judged "
            "(UNSURE) until it reads a speed; the machine at rest, or the tag reads 0 or NaN while it runs "
            "(check the tag, or give the pipeline a baseline: with one, stops are told by its own rules)",
            self.name,
            self.slot.manifest.name,
            name,
            tag,
            value,
        )

    def _started_infer(self, item: Frame | Window) -> tuple[float, Inference | SensorFault | _Stale]:
        start = time.perf_counter()
        # again once a thread has it: the pool is shared by every pipeline, and a saturated gateway's items
        # wait there too
        age = self.age.stale(item)
        return start, (_Stale(age) if age is not None else self._infer(item))

    def _infer(self, item: Frame | Window) -> Inference | SensorFault:
        """In a worker thread. A window the sensor made (dead, saturated, corrupted) is not inferred: the
        model's verdict on it would be the sensor's, and would count in the model's health watch. A camera's
        frame kept compressed until taken (``devices.camera.capture.UntakenFrame``: a frame a full queue
        drops is never decoded) is decoded here, its time counted as preprocessing; one its camera refuses
        then (a JPEG damaged past its header ...) is ``_Refused``, counted at the camera as before."""
        take = getattr(item, "take", None)
        if take is not None:
            t = time.perf_counter()
            if not take():
                raise _Refused
            decode_ms = (time.perf_counter() - t) * 1000
        if self.sensor is not None and isinstance(item, Window) and self.windower is not None:
            raw = self.windower.raw_checks  # a resampled window was checked on its raw samples
            found = raw.pop(item.seq) if item.seq in raw else self._sensor_check(item.waveform, item.scalars)
            if found is not None:
                return found
        inf = self.slot.infer(item, self.unsure_tolerance)
        if take is not None:
            inf.preprocess_ms += decode_ms
        if isinstance(item, Frame) and item.unchanged_s and self.unsure_tolerance is not None:
            # a hung camera resending its last image: the verdict is on that image, not on the part in view
            it = inf.interpretation
            it.verdict, it.label = "UNSURE", None  # naming no fault, as any UNSURE (the guess: probabilities)
            it.reason = (
                f"camera frozen: its image has not changed for {item.unchanged_s:.0f} s (frozen_after_s); "
                "the verdict would be on an old image"
            )
        return inf

    def _sensor_check(self, wave: np.ndarray, scalars: dict) -> SensorFault | None:
        """The sensor check of a window (``edge_agent.maintenance.sensor.check``). With a baseline, a sliding level
        (a sensor settling) is told from a slow shaft by the shaft's turns in the window, counted at the speed the
        machine runs at (``Monitor.shaft_turns``: the speed tag's, else the commissioned one)."""
        pre = self.slot.manifest.preprocessing
        rate = getattr(pre, "sample_rate_hz", None)
        if self.baseline is None or not rate:
            return sensor_check(wave)
        turns = self.baseline.shaft_turns(scalars, getattr(pre, "window_samples", 1024) / rate)
        found = sensor_check(wave, shaft_turns=turns)
        if found is not None and found.kind == "flatline" and self.baseline.stopped_by_tag(scalars):
            # the speed tag says the shaft stands: a stopped machine's floor within a code or two of a 12- or
            # 16-bit input is flat, and the baseline says the stop (UNSURE, stopped); it was a sensor_fault
            # episode, "check the sensor", at every stop. A dead sensor is still flat once the machine runs
            return None
        return found

    async def _sensor_result(self, item: Window, fault: SensorFault, enq_t: float, start: float) -> None:
        assert self.sensor is not None  # only a pipeline with sensor checks finds a sensor fault
        self.sensor.record(fault)
        m = self.slot.manifest
        res = Result(
            pipeline=self.name,
            source=item.source,
            item_seq=item.seq,
            captured_at=item.end_ts,
            model=m.name,
            model_version=m.version,
            engine=self.slot.engine_name or "",
            verdict="UNSURE",
            score=None,  # not inferred nor scored: no number a dashboard reads as a good part's (0.0 was)
            outputs={"sensor": fault.to_dict()},
            latency=Latency((start - enq_t) * 1000, (time.perf_counter() - start) * 1000, 0.0, 0.0),
            finished_at=time.time(),
            reason=fault.message,
        )
        await self._hand_on(res, item)

    def status(self) -> dict:
        st = self.stats
        return {
            "pipeline": self.name,
            "kind": self.kind,
            "source": self.s.source,
            "model": self.s.model,
            "items": st.items,
            "results": st.results,
            "ng": st.ng,
            "unsure": st.unsure,
            "unsure_share": round(self.unsure_watch.share, 4),
            "rate_per_s": round(st.rate(), 3),
            "queue_depth": len(self.queue),
            "queue_size": self.queue.size,
            "policy": self.queue.policy.value,
            "dropped": self.queue.dropped
            + self.age.dropped
            + (self.windower.bad + self.windower.capped if self.windower else 0),
            "dropped_queue": self.queue.dropped,
            **self.age.status(),
            "bad_samples": self.windower.bad if self.windower else 0,
            "windows_capped": self.windower.capped if self.windower else 0,
            # waveforms its source passed on again after a BAD it made (same source time and samples as the last
            # one taken): not scored twice, nor dropped (their samples were taken)
            "repeated_waveforms": self.windower.repeats if self.windower else 0,
            "errors": dict(st.errors),
            "latency_ms": st.percentiles(),
            "windows": self.windower.seq if self.windower else None,
            **({"sample_rate": self.windower.rate_status()} if self.windower else {}),
            "silent_drops": self.notices.status(),
            **({"judges_nothing": self._ignored()} if self.window_ignored else {}),
            # the model failing on its items (their results UNSURE): an episode under way, and the first of each
            "model_failing": self.failures.status(),
            "model_failures": dict(self.failures.first),
            **({"baseline": self.baseline.status()} if self.baseline is not None else {}),
            **(
                {"sensor": {**self.sensor.status(), "stale": self.windower.stale if self.windower else None}}
                if self.sensor is not None
                else {}
            ),
        }
