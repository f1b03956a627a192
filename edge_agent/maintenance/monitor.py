"""The pipeline's side of a baseline: one ``Baseline`` + ``LifeTrend`` per signal pipeline.

``process(window)`` runs in a worker thread (serialised by a lock: the baseline learns in order);
``apply(verdict, result)`` then decides the result on the loop: while learning, ``UNSURE``
(the asset has no healthy reference yet) unless the ISO zone rule fires; once ready, ``NG`` when
``confirm_windows`` windows in a row are over the threshold, with the model-free fault family as
label; the score becomes score / threshold (1.0 = at the threshold) and remaining life comes from
the amplitude growth over the baseline (edge_agent.maintenance.life), with the run-to-failure prior
of the package's manifest (``life_prior``), else the config's ``life_after_alarm_s``, else the trend
alone (the status and each result's ``outputs.baseline.life.basis`` say which). The model's own
outputs stay in ``result.outputs``. A model swap to another feature set rebuilds the baseline (the
old one is discarded with an event); a same-feature swap keeps it. A repair (``edge-agent baseline
repaired PIPELINE``, a request file the next window picks up, or ``repaired()``) resets remaining life.
A window that is the commissioned machine but for one common factor on every amplitude (the units or
the sensor's gain changed), or whose amplitudes fell tenfold (a dead sensor: ``Verdict.sensor``), or
a stopped machine (``Verdict.stopped``: the speed tag, or without one the signal and temperature), is
``UNSURE`` with that reason, and counts towards no alarm, ISO zone nor remaining life (a ``scale`` found
through the ADC's floor, ``Baseline.floor_scale``, keeps an ISO zone alarm that stood before its window: ``NG``
``iso_zone_<zone>`` with the sensor's reason). A window whose
speed changed across it (``Verdict.unsteady``: a ramp, told by the window's times handed to the baseline)
is ``UNSURE`` saying so, and counts towards no baseline alarm nor remaining life (the ISO zone rule
still judges its velocity). Half or more of a running machine's windows over ``UNJUDGED_SPAN_S`` not judged
(a speed change, a speed never commissioned) raise one ``baseline_unjudged`` event, shown in the status
(``unjudged``), and one when the machine is judged again (``UnjudgedWatch``).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path

from edge_agent.maintenance.baseline import Baseline, Verdict, adc_step, baseline_path, speed_tag_stopped
from edge_agent.maintenance.life import NOT_ENOUGH, LifeEstimate, LifeTrend
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.maintenance.states import StateBaselines, build_baseline
from model_packager.manifest import LifePrior
from protocols.events import Event, EventKind

log = logging.getLogger(__name__)


# A machine whose windows are not judged said nothing of it: a drive hunting +-3 % about its set point had every
# window UNSURE as a speed change (counted in the status's unsteady_windows only), a machine run at a speed its
# commissioning never saw every window UNSURE as such, and no event nor alarm told that its faults went unseen.
# Over the last UNJUDGED_SPAN_S of the running machine's windows (those the baseline would judge: commissioned,
# the machine running, the sensor live), UNJUDGED_SHARE or more not judged for those reasons raise one
# ``baseline_unjudged`` event; fewer than half that share end it. Measured over time, not windows: a run-up of
# 10 s is 50 back-to-back windows of 0.2 s, not an episode
UNJUDGED_SPAN_S = 600.0
UNJUDGED_SHARE = 0.5
UNJUDGED_MIN_WINDOWS = 20  # ... judged only once this many windows over half the span are counted
UNJUDGED_BUCKETS = 60  # the span counted in this many slices of time (memory bounded at any window rate)
_UNJUDGED_WHY = {
    "speed_changing": "the speed changed across them (more than 2 % from window to window: a drive hunting about "
    "its set point, a speed tag that jitters); steady the drive's speed control, or check what the speed tag reads",
    "speed_not_commissioned": "they ran at speeds the commissioning never saw; relearn the baseline across the "
    "machine's speeds (edge-agent baseline relearn)",
}


class UnjudgedWatch:
    """The share of a running machine's windows its baseline did not judge (``_UNJUDGED_WHY``) over the last
    ``UNJUDGED_SPAN_S`` of window times; ``add`` returns a ``baseline_unjudged`` event when it reaches
    ``UNJUDGED_SHARE`` (once) and when it has fallen below half of it (the machine judged again)."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        # slices of the span: (slice index, first window's time, windows counted, not judged per reason)
        self.slices: collections.deque[tuple[int, float, list[int], collections.Counter]] = (
            collections.deque()
        )
        self.last_t: float | None = None
        self.active = False

    def _counts(self) -> tuple[int, collections.Counter, float]:
        """Windows counted, those not judged per reason, and the time they cover (copied first: the status is
        read from the HTTP thread while the loop adds)."""
        snap = [(t0, k[0], dict(c)) for _, t0, k, c in list(self.slices)]
        by: collections.Counter = collections.Counter()
        for _, _, c in snap:
            by.update(c)
        covered = (self.last_t or 0.0) - snap[0][0] if snap else 0.0
        return sum(k for _, k, _ in snap), by, covered

    def add(self, t: float, kind: str | None) -> Event | None:
        """``t``: the window's time; ``kind``: why it was not judged (a key of ``_UNJUDGED_WHY``), None: judged."""
        if self.last_t is not None and t < self.last_t:  # the source's time went back (a replay, a clock set)
            self.slices.clear()
        self.last_t = t
        width = UNJUDGED_SPAN_S / UNJUDGED_BUCKETS
        i = math.floor(t / width)
        if not self.slices or self.slices[-1][0] != i:
            self.slices.append((i, t, [0], collections.Counter()))
        self.slices[-1][2][0] += 1
        if kind is not None:
            self.slices[-1][3][kind] += 1
        while self.slices[0][0] <= i - UNJUDGED_BUCKETS:
            self.slices.popleft()
        n, by, covered = self._counts()
        share = sum(by.values()) / n
        if (
            not self.active
            and share >= UNJUDGED_SHARE
            and n >= UNJUDGED_MIN_WINDOWS
            and covered >= UNJUDGED_SPAN_S / 2
        ):
            self.active = True
            top, k = by.most_common(1)[0]
            return self._said(
                True,
                share,
                n,
                by,
                f"pipeline {self.pipeline}: {share:.0%} of its last {n} windows ({covered:.0f} s) were not judged "
                f"by the baseline, most ({k}) because {_UNJUDGED_WHY[top]}; its faults go unseen meanwhile (the ISO "
                "zone rule still judges the velocity)",
            )
        if self.active and share < UNJUDGED_SHARE / 2:
            self.active = False
            return self._said(
                False,
                share,
                n,
                by,
                f"pipeline {self.pipeline}: judged again ({share:.0%} of its last {n} windows not judged)",
            )
        return None

    def _said(self, active: bool, share: float, n: int, by: collections.Counter, message: str) -> Event:
        return Event(
            EventKind.BASELINE_UNJUDGED,
            pipeline=self.pipeline,
            active=active,
            share=round(share, 4),
            windows=n,
            reasons=dict(by),
            message=message,
        )

    def status(self) -> dict:
        n, by, covered = self._counts()
        return {
            "active": self.active,
            "share": round(sum(by.values()) / n, 4) if n else 0.0,
            "windows": n,
            "span_s": round(covered, 1),
            "reasons": dict(by),
        }


def _unsure(res, why: str) -> None:
    """Not judged by the baseline: UNSURE naming no fault (the model's fault classifier guesses a class on every
    window, read beside UNSURE as a fault found; the guess stays in ``probabilities``), as for a sensor fault."""
    res.verdict, res.label = "UNSURE", None
    if hasattr(res, "reason"):  # results that carry why they are UNSURE
        res.reason = why


def model_features(manifest) -> dict:
    """The parts of a model's signal preprocessing that define its features (not its normalisation)."""
    pre = manifest.preprocessing
    return pre.model_dump(mode="json", exclude={"mean", "std"})


class Monitor:
    def __init__(
        self,
        settings: BaselineSettings,
        slot,
        pipeline: str,
        data_dir: str | Path | None,
        on_event: Callable[[Event], None] | None,
    ) -> None:
        self.s = settings
        self.slot = slot
        self.pipeline = pipeline
        self.data_dir = data_dir
        self.on_event = on_event
        self._lock = threading.Lock()
        self.life = LifeTrend(
            settings.failure_ratio,
            prior_life=settings.life_after_alarm_s,
            failure_level_sd=settings.failure_ratio_sd,
        )
        self._manifest_key: str | None = None
        self.baseline: Baseline | StateBaselines | None = None
        self.last_life: LifeEstimate | None = None
        # a running machine's windows not judged: said (UNJUDGED_SHARE)
        self.unjudged = UnjudgedWatch(pipeline)
        self._build()
        self._prior_key: str | None = None
        self._use_prior()

    def _build(self) -> None:
        m = self.slot.manifest
        pre = m.preprocessing
        feats = model_features(m)
        key = str(sorted(feats.items()))
        if key == self._manifest_key:
            return
        self._manifest_key = key
        path = baseline_path(self.data_dir, self.pipeline) if self.data_dir is not None else None
        self.baseline = build_baseline(
            self.s,
            pre.sample_rate_hz,
            pre.window_samples,
            path=path,
            pipeline=self.pipeline,
            model_features=feats,
            on_event=self.on_event,
        )
        self.baseline.check_request()
        self.life.reset()

    def _use_prior(self) -> None:
        """The package's run-to-failure prior, else the config's declared one, else none (trend only);
        a swap that brings another prior keeps the run's history and answers with the new one."""
        m = self.slot.manifest
        prior = getattr(m, "life_prior", None)
        if prior is not None:
            prior = prior.model_copy(update={"source": prior.source or f"package {m.name} {m.version}"})
        elif self.s.life_after_alarm_s is not None:
            mean, sd = self.s.life_after_alarm_s
            prior = LifePrior.from_normal(mean, sd, self.s.failure_ratio, source="config life_after_alarm_s")
        key = None if prior is None else prior.model_dump_json()
        if key != self._prior_key:
            self._prior_key = key
            self.life.use_prior(prior)

    def _check_repair(self) -> None:
        from edge_agent.maintenance.baseline import read_request, repaired_path

        if self.data_dir is None:
            return
        req = repaired_path(self.data_dir, self.pipeline)
        if req.exists():
            why = read_request(req).get("reason", "repair")
            req.unlink(missing_ok=True)
            self._reset_life(str(why))

    def _reset_life(self, reason: str) -> None:
        self.life.reset()
        if self.on_event:
            self.on_event(Event(EventKind.LIFE_RESET, pipeline=self.pipeline, reason=reason))

    def process(self, window) -> Verdict:
        with self._lock:
            self._build()  # a swap to another feature set: rebuilt (and the old baseline discarded)
            self._use_prior()
            self._check_repair()
            b = self.baseline
            assert b is not None  # _build always leaves one
            b.check_request()
            if b.state == "learning":
                self.life.reset()
            with adc_step(getattr(window, "adc_step", None)):  # a resampled window's, from its raw samples
                v = b.process(window.waveform, window.scalars, span=(window.start_ts, window.end_ts))
            if (
                v.sensor is None
                and v.state == "ready"
                and v.score is not None
                and v.growth is not None
                and v.threshold
                and not v.extrapolated  # judged against another speed's statistics: no health index
            ):
                scale = 3600.0 if self.s.life_unit == "h" else 1.0
                est = self.life.update(window.end_ts, v.growth, v.anomalous)
                if est.remaining is not None:
                    est.remaining, est.low, est.high = (
                        None if x is None else x / scale for x in (est.remaining, est.low, est.high)
                    )
                self.last_life = est
            else:
                self.last_life = None
            return v

    def shaft_turns(self, scalars: dict[str, float] | None, window_s: float) -> float:
        """The turns the machine's shaft makes in a window of ``window_s`` seconds (the sensor check's
        ``settling`` is judged from two): at the speed tag's speed where the baseline has one and it reads, else
        at the slowest speed the commissioned baseline judges (``slowest_judged_hz``), else at the low end of
        ``speed_range_rpm``. That low end alone (300 rpm by default: one turn in a 0.2-s window) kept the rule
        off on machines running five times faster, and every power-up of their sensor alarmed."""
        hz = None
        v = (scalars or {}).get("_shaft_speed")  # the speed tag's value (edge_agent.pipelines.SPEED_INPUT)
        if self.s.speed_tag is not None and v is not None and math.isfinite(v):
            hz = max(0.0, v / 60.0 if self.s.speed_unit == "rpm" else v)
        if hz is None and self.baseline is not None:
            hz = self.baseline.slowest_judged_hz()
        if hz is None:
            hz = self.s.speed_range_rpm[0] / 60.0
        return hz * window_s

    def stopped_by_tag(self, scalars: dict[str, float] | None) -> bool:
        """The speed tag says the shaft stands (``speed_tag_stopped``): a window flat within the ADC's step is then
        the stopped machine read through a coarse input, not a dead sensor (the sensor check's ``flatline``)."""
        return speed_tag_stopped(self.s, scalars)

    def repaired(self, reason: str = "repair") -> None:
        """A repair resets the remaining-life trend (the baseline stays)."""
        with self._lock:
            self._reset_life(reason)

    def apply(self, v: Verdict, res) -> None:
        d = v.to_dict()
        if v.sensor is not None:  # the sensor's scale changed: neither OK nor NG
            res.verdict, res.label = "UNSURE", None
            res.reason = v.sensor
            # a 'scale' over the ADC's floor (Baseline.floor_scale) may be a fault: an ISO zone alarm that
            # stood before its window stands (the window itself counts neither way)
            if v.iso_alarm:
                res.verdict, res.label = "NG", f"iso_zone_{v.iso_zone}"
            res.outputs["baseline"] = d
            return
        iso = v.iso_alarm  # the zone held confirm_windows windows in a row (a single transient is not)
        # a process state without a baseline (state_tag): not judged, unless a window without a state is
        # over every learned state's threshold (StateBaselines._against_every_state): NG below
        if v.not_learned is not None and not v.alarm:
            _unsure(res, v.not_learned)
        elif v.unsteady is not None:  # a ramp: its smeared lines are no fault (baseline.SPEED_STEADY)
            _unsure(res, v.unsteady)
        elif v.state == "ready" and v.score is not None and v.threshold:
            res.score = round(v.score / v.threshold, 4)
            res.anomaly_score = res.score
            # a speed the asset was not commissioned at: no reference to judge by (say so, not OK/NG)
            res.verdict = "NG" if v.alarm else "OK"
            if v.extrapolated:  # not judged (v.alarm is False): neither OK nor NG
                _unsure(res, f"baseline: shaft speed {60 * (v.speed_hz or 0):.0f} rpm was not commissioned")
            elif v.external_impulse and not v.alarm:  # a knock from outside (baseline.lone_impulse)
                _unsure(
                    res,
                    "baseline: over the threshold by a lone impulse, not repeated at the shaft's turns (a knock "
                    "from outside the machine: a press or a hammer nearby); not counted towards an alarm",
                )
            if v.alarm:
                res.label = v.fault
            life = self.last_life
            if life is not None:
                d["life"] = life.to_dict()
                res.remaining_life = life.remaining if life.state != NOT_ENOUGH else None
        elif v.stopped:
            _unsure(res, v.stop_reason or "baseline: the speed tag says the machine is stopped; not judged")
        else:
            _unsure(res, f"baseline: commissioning, {100 * v.progress:.0f} % learned")
        if iso:
            res.verdict = "NG"
            res.label = res.label if v.alarm else f"iso_zone_{v.iso_zone}"
        res.outputs["baseline"] = d
        self._watch_unjudged(v, res)

    def _watch_unjudged(self, v: Verdict, res) -> None:
        """The window in the share of the running machine's windows not judged (``UnjudgedWatch``): a stop, a
        process state not learned and a sensor fault are not counted (each said on its own)."""
        if v.stopped or v.not_learned is not None or v.sensor is not None:
            return
        if v.unsteady is not None:
            kind: str | None = "speed_changing"
        elif v.state == "ready" and v.score is not None:
            kind = "speed_not_commissioned" if v.extrapolated else None
        elif v.state == "learning":
            kind = None  # learned: the commissioning goes on
        else:
            return
        evt = self.unjudged.add(float(getattr(res, "captured_at", 0.0) or 0.0), kind)
        if evt is not None:
            if evt["active"]:
                log.warning("%s", evt["message"])
            else:
                log.info("%s", evt["message"])
            if self.on_event:
                self.on_event(evt)

    def status(self) -> dict:
        b = self.baseline
        d = b.status() if b is not None else {"state": "not started"}
        p = self.life.prior
        d["life"] = {
            "basis": self.life.basis,
            "prior": None
            if p is None
            else {"source": p.source, "runs": p.runs, "trend_weight": round(p.trend_weight, 3)},
        }
        d["unjudged"] = self.unjudged.status()
        return d
