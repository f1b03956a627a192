"""A baseline per process state (``baseline.state_tag``): one ``Baseline`` for each state of the machine.

A machine that runs in several process states (a spindle cutting or idle, a compressor loaded or not, a
mixer's programs) vibrates differently in each: commissioned across them in one baseline, a state's
healthy windows read as another's fault (a spindle alarmed 35 times a day: bench/RESULTS.md, "Maintenance
baseline on machine kinds no generator here made"). Here the state tag's value picks the state
(``states``: named ranges of it; else each whole value is a state), and each state has its own
baseline, ``<data_dir>/baseline/<pipeline>@<state>.json``, with its statistics and threshold. The
commissioning (``windows`` or ``duration_s``, counted over every state) learns every state it sees; at
its end, each state with at least ``MIN_BAND_WINDOWS`` windows is learned, the others are not. A window
in a state not learned, or without a state (the tag not GOOD, or a value in no range), is not
judged: ``UNSURE``, counted per state in the status (``not_judged``), and no alarm counts it (a window
without a state over the threshold of every learned state does: ``_against_every_state``). Such a
state is learned when asked (``edge-agent baseline relearn PIPELINE CONFIG --state NAME``: ``windows``
or ``duration_s`` of that state's windows) or, with ``state_learn_s``, automatically for that long
from its first window. The ISO zone rule still judges every window (it needs no baseline).
Commissioning progress and the counts live in ``<pipeline>.states.json`` beside them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from edge_agent.files import atomic_write_json, why_unread
from edge_agent.maintenance.baseline import (
    _AMPLITUDE_INDEX,
    _FEATURE_INDEX,
    _FREE_AMPLITUDE_INDEX,
    MIN_BAND_WINDOWS,
    SAVE_EVERY,
    SCALE_MIN,
    Baseline,
    Verdict,
    diagnose,
    index_path,
    kept_path,
    learned_under,
    read_baseline,
    read_request,
    relearn_path,
)
from edge_agent.maintenance.settings import BaselineSettings
from model_packager.condition import FAULT_FEATURES, feature_vector
from model_packager.text import printable
from protocols.events import Event, EventKind

log = logging.getLogger(__name__)

NO_STATE = "(none)"  # the count of windows without a state (the tag not read, or in no range)
# the process states one pipeline keeps (baselines, files, counts). A tag with ever new values (a speed
# or a load read without ``states``, a counter) made a state of each whole value: a baseline, a file and
# a count each, without bound, and no window was ever judged. Windows of states beyond it are counted
# under OTHER_STATES, not judged, and said once
MAX_STATES = 64
OTHER_STATES = "(other)"
# without ``states``, a whole value beyond this (an uninitialised PLC REAL reads 3.4e38) is no state: its
# name was hundreds of digits long, a file name no file system takes, and every window's baseline failed
MAX_WHOLE = 2**31
STATE_INPUT = "_process_state"  # the state tag's value rides with each window under this name (pipelines)


def state_path(path: Path, state: str) -> Path:
    """Beside ``<pipeline>.json``: ``<pipeline>@<state>.json``."""
    return path.with_name(f"{path.stem}@{state}.json")


def build_baseline(settings: BaselineSettings, sample_rate_hz: float, window_samples: int, **kw):
    """A ``Baseline``, or with a ``state_tag`` a ``StateBaselines``: what the pipeline and the bench use."""
    cls = StateBaselines if settings.state_tag else Baseline
    return cls(settings, sample_rate_hz, window_samples, **kw)


class StateBaselines:
    """The baselines of one asset's process states; ``process(waveform, scalars)`` as ``Baseline``'s."""

    def __init__(
        self,
        settings: BaselineSettings,
        sample_rate_hz: float,
        window_samples: int,
        *,
        path: Path | None = None,
        pipeline: str = "?",
        model_features: dict | None = None,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.s = settings
        self.fs, self.n = float(sample_rate_hz), int(window_samples)
        self.path = path
        self.pipeline = pipeline
        self.model_features = model_features
        self.on_event = on_event or (lambda evt: None)
        self.clock = clock
        self.monotonic = monotonic or (time.monotonic if clock is time.time else clock)  # as Baseline's
        # each state's baseline learns until this wrapper ends it (commissioning, or its own learning)
        self._inner = settings.model_copy(update={"windows": 20_000, "duration_s": None})
        self.by_state: dict[str, Baseline] = {}
        self.learning: dict[str, str] = {}  # state -> why it learns: commissioning | asked | auto
        self.not_judged: dict[str, int] = {}  # windows not judged, per state (NO_STATE: without one)
        self.commissioning = True
        self.started_at = clock()
        self._learned = (0.0, self.monotonic())  # commissioning's seconds (``Baseline.learning_s``)
        self.learned_at: float | None = None
        self.windows = 0  # commissioning windows seen (every state)
        self._iso_over = 0
        self._judged_zone: str | None = None  # the last zone judged as the machine's in _iso_over's run
        self._probe: Baseline | None = None  # features (the ISO zone) of windows no baseline takes
        self._said_too_many = False
        # the state tag may be the speed or temperature tag too: its value rides under that name (pipelines)
        self._input = {settings.speed_tag: "_shaft_speed", settings.temperature_tag: "_temperature"}.get(
            settings.state_tag, STATE_INPUT
        )
        self._unknown_over = 0  # windows without a state in a row over every learned state's threshold
        self.unsaved: str | None = None  # why the index's last save failed (a full disk)
        self._load()

    # ---- the state of a window ---------------------------------------------------------------
    def state_of(self, scalars: dict[str, float] | None) -> str | None:
        v = (scalars or {}).get(self._input)
        if v is None or not math.isfinite(v):
            return None
        if self.s.states is None:
            return f"{round(v):d}" if abs(v) < MAX_WHOLE else None
        return next((st.name for st in self.s.states if st.holds(v)), None)

    # ---- files ---------------------------------------------------------------------------------
    def _ranges(self) -> list[dict] | None:
        return None if self.s.states is None else [st.model_dump() for st in self.s.states]

    def _baseline(self, state: str, fresh: bool = False) -> Baseline:
        """``state``'s baseline; ``fresh``: one not in the index (a new learning), so a file of that name
        left by a former commissioning (discarded, set aside) is not loaded as if learned now."""
        b = self.by_state.get(state)
        if b is None:
            if fresh and self.path is not None:
                state_path(self.path, state).unlink(missing_ok=True)
            b = self.by_state[state] = Baseline(
                self._inner,
                self.fs,
                self.n,
                path=None if self.path is None else state_path(self.path, state),
                pipeline=self.pipeline,
                model_features=self.model_features,
                on_event=self._state_event(state),
                clock=self.clock,
                monotonic=self.monotonic,
                under=learned_under(self.s, state),
            )
        return b

    def _state_event(self, state: str) -> Callable[[Event], None]:
        def emit(evt: Event) -> None:  # a state's baseline event, saying whose
            self.on_event(Event(evt.kind, t=evt.t, **evt.data, process_state=state))

        return emit

    def to_dict(self) -> dict:
        return {
            "state_tag": self.s.state_tag,
            "state_ranges": self._ranges(),
            "commissioning": self.commissioning,
            "started_at": self.started_at,
            "learning_s": round(self.learning_s(), 3) if self.commissioning else None,
            "learned_at": self.learned_at,
            "windows": self.windows,
            "learning": self.learning,
            "not_judged": self.not_judged,
            "states": sorted(self.by_state),
        }

    def save(self) -> None:
        """The index to its file; a write the disk refuses is said once and tried again at each window, as a
        baseline's own save is (``Baseline.save``)."""
        if self.path is None:
            return
        try:
            atomic_write_json(index_path(self.path), self.to_dict())
        except OSError as exc:
            if self.unsaved is None:
                log.warning(
                    "pipeline %s: baselines index %s not saved: %s; saved again at each window until the disk "
                    "takes it (a restart before then goes back to what the file holds)",
                    self.pipeline,
                    index_path(self.path),
                    exc,
                )
            self.unsaved = str(exc)
            return
        if self.unsaved is not None:
            log.warning("pipeline %s: baselines index %s saved again", self.pipeline, index_path(self.path))
            self.unsaved = None

    def _set_aside_single(self) -> None:
        """The one baseline of a former config without ``state_tag`` (``<pipeline>.json``) is not a seed for
        the states: learned over all of them together, its statistics are what judged one state's healthy
        windows as another's fault (or hid a fault behind another state's noise). Said, and set aside, so
        that removing ``state_tag`` later learns anew rather than reloading it, by then months old."""
        assert self.path is not None
        if not self.path.is_file():
            return
        aside = self.path.with_name(self.path.name + ".no-state-tag")
        try:
            self.path.replace(aside)
            kept_path(self.path).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("pipeline %s: cannot set %s aside (%s)", self.pipeline, self.path, exc)
        reason = (
            f"baseline {self.path.name} was learned without state_tag, over every process state together; "
            f"not used with state_tag {self.s.state_tag!r} (set aside as {aside.name}): each state is "
            "learned on its own windows"
        )
        log.warning("pipeline %s: %s", self.pipeline, reason)
        self._event(EventKind.BASELINE_DISCARDED, reason=reason)

    def _load(self) -> None:
        if self.path is None:
            return
        self._set_aside_single()
        try:
            d = read_baseline(index_path(self.path))
            # valid JSON of another shape (a damaged file): as unreadable, not a crash at every start
            shapes = (("states", list), ("learning", dict), ("not_judged", dict))
            if not isinstance(d, dict) or not all(isinstance(d.get(k, t()), t) for k, t in shapes):
                raise ValueError("not an index of baselines per process state")
        except FileNotFoundError:
            self._event(EventKind.BASELINE_LEARNING, reason="no baseline yet", target_windows=self.s.windows)
            return
        except (OSError, ValueError) as exc:  # a named pipe, larger than an index, nested past the parser
            reason = (
                f"unreadable file {index_path(self.path)} ({why_unread(exc)}); commissioning every state anew"
            )
            log.warning("pipeline %s: %s", self.pipeline, reason)
            self._event(EventKind.BASELINE_DISCARDED, reason=reason)
            self._forget()
            return
        named_then = d["state_ranges"] is not None if "state_ranges" in d else self.s.states is not None
        if d.get("state_tag") != self.s.state_tag or named_then != (self.s.states is not None):
            # another tag, or named ranges for whole values (or back): no state is the one it learned. A
            # state whose range alone changed is relearned on its own (its file's ``learned_under``), the
            # others kept
            reason = (
                f"baselines per process state were learned under state_tag {d.get('state_tag')!r}"
                + (f", states {d['state_ranges']}" if d.get("state_ranges") else "")
                + f"; the config now gives state_tag {self.s.state_tag!r}"
                + (f", states {self._ranges()}" if self._ranges() else "")
                + "; not used, commissioning every state anew"
            )
            log.warning("pipeline %s: %s", self.pipeline, reason)
            self._event(EventKind.BASELINE_DISCARDED, reason=reason)
            for st in d.get("states", []):
                state_path(self.path, str(st)).unlink(missing_ok=True)
            self._forget()
            return
        self.commissioning = bool(d.get("commissioning", True))
        self.started_at = float(d.get("started_at", self.started_at))
        done = d.get("learning_s")  # a release before the count: the wall clock's, as then
        done = float(done) if done is not None else max(0.0, self.clock() - self.started_at)
        self._learned = (done, self.monotonic())
        self.learned_at = d.get("learned_at")
        self.windows = int(d.get("windows", 0))
        self.learning = {str(k): str(v) for k, v in d.get("learning", {}).items()}
        self.not_judged = {str(k): int(v) for k, v in d.get("not_judged", {}).items()}
        names = None if self.s.states is None else {x.name for x in self.s.states}
        for st in d.get("states", []):
            if names is not None and st not in names:  # a state no longer in baseline.states
                log.warning(
                    "pipeline %s: process state %r is no longer in baseline.states; its baseline is dropped",
                    self.pipeline,
                    st,
                )
                state_path(self.path, str(st)).unlink(missing_ok=True)
                self.learning.pop(str(st), None)
                continue
            if state_path(self.path, st).is_file():
                b = self._baseline(str(st))
                if b.state == "learning" and st not in self.learning:  # a feature set changed: learns anew
                    self.learning[st] = "asked"
        if "state_ranges" not in d:  # from a release before the record: stamped with the states of now, once
            self.save()

    def _forget(self) -> None:
        for st in list(self.by_state):
            self._drop(st)
        self.commissioning, self.started_at, self.learned_at, self.windows = True, self.clock(), None, 0
        self._learned = (0.0, self.monotonic())
        self.learning, self.not_judged = {}, {}
        self.save()

    def _drop(self, state: str) -> None:
        self.by_state.pop(state, None)
        self.learning.pop(state, None)
        if self.path is not None:
            state_path(self.path, state).unlink(missing_ok=True)

    def _event(self, kind: EventKind, **kw) -> None:
        try:
            self.on_event(Event(kind, t=self.clock(), pipeline=self.pipeline, **kw))
        except Exception:
            log.exception("baseline event %s could not be recorded", kind)

    # ---- requests --------------------------------------------------------------------------------
    def check_request(self) -> None:
        """A relearn asked for through the data folder: every state (commissioning anew), or one."""
        if self.path is None:
            return
        req = relearn_path(self.path.parent.parent, self.pipeline)
        if not req.exists():
            return
        d = read_request(req)
        req.unlink(missing_ok=True)
        state = d.get("state")
        if state is not None and not isinstance(state, str):  # not one the command line wrote: none relearned
            log.warning(
                "%s: names the state %s, not text; nothing relearned", req, printable(repr(state), 80)
            )
            return
        self.relearn(str(d.get("reason", "asked from the command line")), state)

    def relearn(self, reason: str = "asked", state: str | None = None) -> None:
        if state is None:
            self._forget()
            self._event(EventKind.BASELINE_RELEARN, reason=reason, target_windows=self.s.windows)
            return
        self._baseline(state).relearn(reason)
        self.learning[state] = "commissioning" if self.commissioning else "asked"
        self.not_judged.pop(state, None)
        self.save()

    # ---- per window ------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return "learning" if self.commissioning else "ready"

    def _learned_enough(self, state: str, b: Baseline) -> bool:
        """A state learning after commissioning: ``windows`` of it, or its time with enough windows."""
        limit = self.s.state_learn_s if self.learning[state] == "auto" else self.s.duration_s
        if len(b.rows) >= self.s.windows:
            return True
        return limit is not None and len(b.rows) >= MIN_BAND_WINDOWS and b.learning_s() >= limit

    def _state_progress(self, state: str, b: Baseline) -> float:
        limit = self.s.state_learn_s if self.learning.get(state) == "auto" else self.s.duration_s
        p = len(b.rows) / self.s.windows
        if limit and len(b.rows) >= MIN_BAND_WINDOWS:
            p = max(p, b.learning_s() / limit)
        return float(min(1.0, p))

    def learning_s(self) -> float:
        """Seconds commissioning has run, counted as ``Baseline.learning_s`` (a wall clock's step is not)."""
        done, mark = self._learned
        return done + max(0.0, self.monotonic() - mark)

    def progress(self) -> float:
        if not self.commissioning:
            return 1.0
        p = self.windows / self.s.windows
        if self.s.duration_s and self.windows >= MIN_BAND_WINDOWS:
            p = max(p, self.learning_s() / self.s.duration_s)
        return float(min(1.0, p))

    def _end_commissioning(self) -> None:
        for st in sorted(self.by_state):
            if self.learning.get(st) != "commissioning":
                continue
            b = self.by_state[st]
            if len(b.rows) >= MIN_BAND_WINDOWS:
                b._finish()
                del self.learning[st]
            elif self.s.state_learn_s is not None:  # seen too little: learned on while it runs
                self.learning[st] = "auto"
            else:
                log.warning(
                    "pipeline %s: process state %r ran %d windows while commissioning, fewer than the %d "
                    "it needs: not learned; its windows are not judged until it is (edge-agent baseline "
                    "relearn %s CONFIG --state %s, or state_learn_s)",
                    self.pipeline,
                    st,
                    len(b.rows),
                    MIN_BAND_WINDOWS,
                    self.pipeline,
                    st,
                )
                self._drop(st)
        self.commissioning = False
        self.learned_at = self.clock()
        self.save()

    def _too_many(self, state: str) -> bool:
        """``state`` would be one more than ``MAX_STATES`` kept (learned, learning, or counted)."""
        known = set(self.by_state) | (set(self.not_judged) - {NO_STATE, OTHER_STATES})
        if state in known or len(known) < MAX_STATES:
            return False
        if not self._said_too_many:
            self._said_too_many = True
            log.warning(
                "pipeline %s: state tag %r gave more than %d process states (%s ...): a measured value (a "
                "speed, a load) or a counter is no state; its further states are not learned nor judged "
                "(counted under %s); give baseline.states ranges of it, or another tag",
                self.pipeline,
                self.s.state_tag,
                MAX_STATES,
                ", ".join(sorted(known)[:5]),
                OTHER_STATES,
            )
        return True

    def _not_judged(
        self, state: str | None, waveform: np.ndarray, scalars: dict | None, why: str, key: str | None = None
    ) -> Verdict:
        key = key or (NO_STATE if state is None else state)
        self.not_judged[key] = self.not_judged.get(key, 0) + 1
        if self._probe is None:
            self._probe = Baseline(self._inner, self.fs, self.n, path=None, pipeline=self.pipeline)
        f = self._probe.features(waveform, scalars)
        iso_before = self._iso_over
        zone, self._iso_over = self._probe.iso_count(f, waveform, self._iso_over)
        if self.not_judged[key] == 1 or sum(self.not_judged.values()) % SAVE_EVERY == 0:
            self.save()  # a state's first (said at once), then every few: the counts survive a restart
        v = Verdict(
            self.state,
            progress=self.progress(),
            speed_hz=f["speed_hz"],
            speed_estimated=bool(f["speed_estimated"]),
            velocity_mm_s=f["velocity_mm_s"],
            iso_zone=zone,
            iso_alarm=self._iso_over >= self.s.confirm_windows,
            process_state=state,
            not_learned=why,
        )
        if key == NO_STATE:
            self._against_every_state(v, waveform, scalars, iso_before)
        if v.sensor is None:  # its velocity is the machine's: a standing alarm of the run is labelled so
            self._judged_zone = zone
        return v

    def _against_every_state(
        self, v: Verdict, waveform: np.ndarray, scalars: dict | None, iso_before: int
    ) -> None:
        """A window without a state (the tag not read since a start, BAD, or in no range) is still a fault
        when it is over the threshold of every learned state: whichever state the machine is in, it is
        not that state's healthy vibration. Such windows ``confirm_windows`` in a row alarm (scored
        against the state it is nearest); a window under any state's threshold stays not judged. Without
        it, a state tag that went BAD hid every fault for as long as it lasted (before a tag's first value
        no window is formed at all: the windower holds them back, ``scalar_missing``).

        A window that is a learned state but for one common factor (``scale``: the units or the sensor's gain)
        and that no other learned state takes as healthy (under its threshold, or at its level: loaded =
        unloaded x4, a fault of the loaded machine x2.5 is no gain of x10) is the sensor's, as one baseline says it: ``v.sensor``
        (``UNSURE`` with the sensor's reason, a sensor episode), and its velocity, read through that factor, counts
        towards no ISO zone run (``iso_before``, the run before the window; kept if the scale was found through
        the ADC's floor, ``Baseline.floor_scale``, else ended). Counted, m/s2 read as g in windows without a state
        read ``NG`` ``iso_zone_D`` (a PLC write) on a healthy compressor in 11 of 12 windows."""
        ready = [
            b for st, b in sorted(self.by_state.items()) if b.state == "ready" and st not in self.learning
        ]
        near: tuple[float, float, float, str] | None = None  # score / threshold, score, threshold, fault
        seen: dict[tuple, dict[str, float]] = {}  # states tracking one speed share the window's features
        suspect: tuple[str, str] | None = None  # a stop, a dead sensor, the sensor's gain, against a state
        gain: tuple[str, Baseline, bool] | None = None  # the first 'scale': its message, state, floor_scale
        healthy = False  # some learned state (not a suspect's) takes the window under its threshold or level
        # some learned state cannot judge the window (another speed): no fault over every state
        unjudged = False
        for b in ready:
            k = (b.orders, b.speed_hz)
            if k not in seen:
                seen[k] = b.features(waveform, scalars)
            f = seen[k]
            row = feature_vector(f)
            med, scale, extrapolated = b._band_stats(f["speed_hz"])
            if b._stopped(scalars):
                self._unknown_over = 0
                return
            # a state commissioned at another speed (a VFD's modes) cannot judge the window: it takes it as
            # nothing. Its return threw away a gain another state found (m/s2 read as g: NG iso_zone_D)
            if extrapolated or not b.threshold:
                unjudged = True
                continue
            found = b._sensor_suspect(
                row,
                med,
                scale,
                (row - med) / scale,
                floor=partial(b.floor_move, f["speed_hz"], waveform),
                quant=partial(b.quantisation_levels, f["speed_hz"], waveform),
                speed_hz=f["speed_hz"],
            )
            if found is not None:  # no fault over every state; asked of the other states all the same
                suspect = suspect or found
                if found[0] == "scale" and gain is None:
                    gain = (found[1], b, b.floor_scale)
                continue
            # as the state's own windows are scored: on a drive's baseline, against the levels its speed gives too
            z = b._rise(row, med, scale, f["speed_hz"])
            score = float(np.clip(z, 0, None).max())
            amp = _AMPLITUDE_INDEX if b.orders else _FREE_AMPLITUDE_INDEX
            w = 1.0 / scale[amp] ** 2
            at_level = abs(float(np.dot(w, row[amp] - med[amp]) / w.sum())) < math.log(SCALE_MIN)
            # a state at whose level the window is (no common factor) takes it as the machine's, over its threshold
            # or not: states differing by level (loaded = unloaded x4) made a fault of the loud one (x2.5, zone D)
            # a gain against the quiet one, and its ISO zone alarm was dropped
            healthy = healthy or score < b.threshold or at_level
            if near is None or score / b.threshold < near[0]:
                rises = {
                    fam: float(max(z[_FEATURE_INDEX[k]] for k in ks)) for fam, ks in FAULT_FEATURES.items()
                }
                near = (score / b.threshold, score, b.threshold, diagnose(rises, z=z))
        if gain is not None and not healthy:  # the sensor's gain or units (one baseline says the same)
            v.sensor_kind, v.sensor = "scale", gain[0]
            if gain[2]:  # through the ADC's floor: the run neither counts nor ends; an alarm standing stands
                self._iso_over = iso_before
                # labelled with this run's last zone judged as the machine's, not the zone a state's baseline
                # judged last, maybe hours before the tag was lost (an alarm in zone D read 'iso_zone_B')
                v.iso_zone = self._judged_zone or v.iso_zone
            else:
                self._iso_over = 0
            v.iso_alarm = self._iso_over >= self.s.confirm_windows
        if unjudged or suspect is not None or near is None or near[0] < 1.0:
            self._unknown_over = 0
            return
        self._unknown_over += 1
        v.anomalous, v.score, v.threshold = True, near[1], near[2]
        if self._unknown_over >= self.s.confirm_windows:
            v.state, v.alarm, v.fault = "ready", True, near[3]
            v.not_learned = (
                f"{v.not_learned}; but over the threshold of every learned state "
                f"({', '.join(sorted(self.by_state))}): a fault whichever state it is in"
            )

    def process(
        self,
        waveform: np.ndarray,
        scalars: dict[str, float] | None = None,
        span: tuple[float, float] | None = None,
    ) -> Verdict:
        if self.unsaved is not None:
            self.save()
        # a state's baseline not saved (a full disk) is saved again whatever state the machine is in now
        for unsaved in self.by_state.values():
            if unsaved.unsaved is not None:
                unsaved.save()
        state = self.state_of(scalars)
        if state is None:
            value = (scalars or {}).get(self._input)
            where = "none of the states" if self.s.states else f"no state (whole values within +-{MAX_WHOLE})"
            why = (
                f"baseline: no process state (state tag {self.s.state_tag!r} not read yet, or not GOOD); "
                "not judged"
                if value is None
                else f"baseline: state tag {self.s.state_tag!r} reads {value:g}, in {where}; not judged"
            )
            return self._not_judged(None, waveform, scalars, why)
        self._unknown_over = 0
        b = self.by_state.get(state)
        if b is None and self._too_many(state):
            return self._not_judged(
                state,
                waveform,
                scalars,
                f"baseline: state tag {self.s.state_tag!r} gave more than {MAX_STATES} process states; "
                f"state {state!r} is not learned; not judged (give baseline.states ranges)",
                key=OTHER_STATES,
            )
        if b is None:
            if self.commissioning:
                self.learning[state] = "commissioning"
            elif self.s.state_learn_s is not None:
                self.learning[state] = "auto"
                log.info(
                    "pipeline %s: process state %r was not commissioned: learning it for %g s",
                    self.pipeline,
                    state,
                    self.s.state_learn_s,
                )
            else:
                return self._not_judged(
                    state,
                    waveform,
                    scalars,
                    f"baseline: process state {state!r} is not learned; not judged (edge-agent baseline "
                    f"relearn {self.pipeline} CONFIG --state {state}, or state_learn_s)",
                )
            b = self._baseline(state, fresh=True)
            self.save()
        self._iso_over = 0  # the state's own baseline counts its ISO windows
        self._judged_zone = None
        v = b.process(waveform, scalars, span=span)
        v.process_state = state
        if state in self.learning:
            if self.commissioning:
                if b.state == "learning" and not v.stopped and v.unsteady is None:
                    self.windows += 1
                if self.progress() >= 1.0:
                    self._end_commissioning()
                elif self.windows % SAVE_EVERY == 0:
                    self.save()
            elif self._learned_enough(state, b):
                b._finish()
                del self.learning[state]
                self.save()
            v.state = "ready" if state not in self.learning and not self.commissioning else "learning"
            v.progress = self.progress() if self.commissioning else self._state_progress(state, b)
        return v

    # ---- what the bench and the status read ------------------------------------------------------
    @property
    def speed_hz(self) -> float | None:
        return next((b.speed_hz for b in self.by_state.values() if b.speed_hz), None)

    @property
    def orders(self) -> bool:
        return all(b.orders for b in self.by_state.values())

    @property
    def threshold(self) -> float | None:
        return None

    def slowest_judged_hz(self) -> float | None:
        """The slowest shaft speed any state's baseline judges (``Baseline.slowest_judged_hz``)."""
        # read from the pipeline's other threads: a state may be added meanwhile, in the baseline's
        speeds = [hz for b in list(self.by_state.values()) if (hz := b.slowest_judged_hz()) is not None]
        return min(speeds) if speeds else None

    def status(self) -> dict:
        return {
            "state": self.state,
            "progress": round(self.progress(), 3),
            "started_at": self.started_at,
            "learned_at": self.learned_at,
            "windows": self.windows,
            "target_windows": self.s.windows,
            "state_tag": self.s.state_tag,
            "state_names": None if self.s.states is None else [st.name for st in self.s.states],
            "process_states": {
                st: {
                    "state": "learning" if st in self.learning else "ready",
                    "learning": self.learning.get(st),
                    "threshold": b.threshold,
                    "windows": len(b.rows) if b.state == "learning" else sum(n for *_, n in b.bands.values()),
                    "learned_at": b.learned_at,
                    "outliers": b.outliers,
                    "speed_bands": sorted(b.bands),
                }
                for st, b in sorted(self.by_state.items())
            },
            "not_judged": dict(self.not_judged),
            "unsteady_windows": sum(b.unsteady_windows for b in self.by_state.values()),
            "external_impulses": sum(b.external_impulses for b in self.by_state.values()),
        }
