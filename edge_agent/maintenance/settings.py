"""``pipelines[].baseline`` in the agent config: commissioning a per-asset baseline (no heavy imports).

baseline:
  windows: 360                 # learn on this many healthy windows (or duration_s, whichever first)
  false_alarm_rate: 0.0001     # per window, after confirmation; sets the threshold
  speed_tag: Speed             # shaft speed tag (rpm); absent: estimated from the spectrum
  temperature_tag: BearingTemp # optional: tells a stop (it cools) from a dead sensor without a speed tag
  temperature_unit: C          # C, F or K: the temperature tag's degrees
  temperature_scale: 1.0       # the tag's value times this is in temperature_unit (0.1: a PLC INT in tenths)
  bearing: {n_elements: 9, ball_d_mm: 7.94, pitch_d_mm: 39.04, contact_angle_deg: 0}
  units: g                     # g or m/s2 (accelerometer), mm/s (velocity sensor), mV (and mv_per_g)
  iso_class: group2_rigid      # ISO 10816-3 zone boundaries for the day-one velocity rule
  state_tag: Cutting           # optional: a tag naming the process state; learned and judged per state
  states:                      # optional: ranges of the state tag's value, each a named state
    - {name: idle, max: 0.5}   #   (absent: each whole value of the tag is a state of its own)
    - {name: cutting, min: 0.5}
  state_learn_s: 3600          # optional: a state first seen after commissioning is learned this long
                               #   (absent: only when asked: edge-agent baseline relearn ... --state NAME)
  outlier_mad: 4.0             # commissioning windows this many MADs above the median (log) score,
  outlier_max_share: 0.03      #   alone (not in runs), at most this share, are left out (null: none)
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BearingSettings(_Model):
    n_elements: int = Field(ge=3, le=100, description="rolling elements (balls or rollers)")
    ball_d_mm: float = Field(gt=0, description="rolling element diameter")
    pitch_d_mm: float = Field(gt=0, description="pitch circle diameter")
    contact_angle_deg: float = Field(0.0, ge=0, lt=90)

    @model_validator(mode="after")
    def _geometry(self) -> BearingSettings:
        if self.ball_d_mm >= self.pitch_d_mm:
            raise ValueError(
                f"ball_d_mm ({self.ball_d_mm}) must be smaller than pitch_d_mm ({self.pitch_d_mm}); "
                "check the bearing's datasheet"
            )
        return self


class ProcessState(_Model):
    """One process state of ``state_tag``: the tag's values in ``[min, max)`` (either end open)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the state's name (results, status, relearn --state): letters, digits, _ . -",
    )
    min: float | None = Field(
        None, description="the state tag's value from (inclusive); absent: no lower end"
    )
    max: float | None = Field(
        None, description="the state tag's value up to (exclusive); absent: no upper end"
    )

    @model_validator(mode="after")
    def _range(self) -> ProcessState:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"state {self.name!r}: min ({self.min}) must be below max ({self.max})")
        return self

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value < self.max)


class BaselineSettings(_Model):
    windows: int = Field(360, ge=20, le=20_000, description="healthy windows to learn from")
    duration_s: float | None = Field(
        None, gt=0, description="or stop learning after this long (needs >= 20 windows)"
    )
    # per window: at one window per 10 s the former 0.005 stated 43 alarms a day on a healthy machine
    # (a window over the threshold 1 time in 14); 1e-4 states about one a day at that rate, and the
    # correlated windows of a real machine give fewer
    false_alarm_rate: float = Field(1e-4, gt=0, lt=0.5, description="stated per-window false-alarm rate")
    confirm_windows: int = Field(
        2, ge=1, le=20, description="consecutive windows over threshold for an alarm"
    )
    speed_tag: str | None = Field(
        None, description="tag with the shaft speed; absent: estimated from the spectrum"
    )
    speed_unit: Literal["rpm", "hz"] = "rpm"
    temperature_tag: str | None = Field(
        None,
        description="tag with the machine's temperature (bearing, housing, winding): without a speed "
        "tag, a stop is told from a dead sensor by the temperature falling with the vibration",
    )
    temperature_unit: Literal["C", "F", "K"] = Field(
        "C",
        description="the temperature tag's unit: its rules (a stop cools 1 C; 5 C below the commissioned "
        "running temperature is a machine at rest) are read in its degrees (F: 1.8 F, 9 F)",
    )
    temperature_scale: float = Field(
        1.0,
        gt=0,
        allow_inf_nan=False,  # YAML's .inf (or 1e400): a degree was 0 counts, every spell "cooling": held as a stop
        description="the temperature tag's value times this is in temperature_unit: 0.1 for a PLC's INT in tenths "
        "of a degree (215 for 21.5)",
    )
    speed_range_rpm: tuple[float, float] = (300.0, 6000.0)
    speed_band_pct: float = Field(
        10.0, gt=0, le=100, description="width of a speed band (statistics per band)"
    )
    bearing: BearingSettings | None = Field(
        None, description="absent: races told apart by the envelope's sidebands"
    )
    units: Literal["g", "m/s2", "mm/s", "mV"] = Field(
        "g",
        description="the waveform's unit: an accelerometer's g or m/s2, a velocity sensor's mm/s, or an "
        "accelerometer's raw mV (with mv_per_g)",
    )
    mv_per_g: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="with units mV: the accelerometer's sensitivity (its data sheet's mV/g)",
    )
    iso_class: Literal["group2_rigid", "group2_flexible", "group1_rigid", "group1_flexible"] = "group2_rigid"
    iso_alarm_zone: Literal["C", "D", "off"] = "D"
    failure_ratio: float = Field(
        10.0,
        gt=1,
        allow_inf_nan=False,
        description="amplitude growth over the baseline taken as failure, "
        "for the remaining-life trend (10x: the usual 'danger')",
    )
    failure_ratio_sd: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="how well failure_ratio is known (widens the interval)"
    )
    life_after_alarm_s: tuple[float, float] | None = Field(
        None,
        description="mean and spread of the time from "
        "the onset to failure on past runs: a prior declared "
        "by hand, used when the package carries none",
    )
    life_unit: Literal["s", "h"] = "s"
    state_tag: str | None = Field(
        None,
        description="tag whose value names the machine's process state (a program, cutting or idle, a "
        "load step): the baseline is learned per state, and a window in a state not learned is not judged",
    )
    states: list[ProcessState] | None = Field(
        None,
        description="ranges of the state tag's value, each a named state (the first that holds wins); "
        "absent: each whole value of the tag is a state of its own",
    )
    state_learn_s: float | None = Field(
        None,
        gt=0,
        description="a state not learned at commissioning is learned automatically for this long when it "
        "runs (its windows UNSURE meanwhile); absent: only when asked (relearn --state)",
    )
    outlier_mad: float | None = Field(
        4.0,
        gt=0,
        description="commissioning windows whose score lies this many robust deviations (MAD) above the "
        "median, each alone (not in a run), are left out of the statistics and counted; null: none",
    )
    outlier_max_share: float = Field(
        0.03,
        ge=0,
        lt=0.5,
        description="at most this share of commissioning windows is left out as outliers; more are the "
        "machine's own (kept)",
    )

    @model_validator(mode="after")
    def _units(self) -> BaselineSettings:
        if self.units == "mV" and self.mv_per_g is None:
            raise ValueError(
                "units mV needs mv_per_g: the accelerometer's sensitivity in mV/g from its data sheet (100 for "
                "most IEPE sensors)"
            )
        if self.mv_per_g is not None and self.units != "mV":
            raise ValueError(f"mv_per_g is for units mV (a waveform in millivolts); units is {self.units}")
        return self

    @model_validator(mode="after")
    def _states(self) -> BaselineSettings:
        if (self.states is not None or self.state_learn_s is not None) and self.state_tag is None:
            raise ValueError("states and state_learn_s need state_tag: the tag whose value names the state")
        names = [st.name for st in self.states or ()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"states: name(s) {dup} given twice; each state needs its own name")
        if self.states is not None and not self.states:
            raise ValueError("states: empty; list at least one {name, min, max}, or leave states out")
        if self.state_tag is not None and not self.state_tag.strip():
            raise ValueError(
                "state_tag: empty; name the tag whose value names the state, or leave state_tag out"
            )
        return self

    @field_validator("life_after_alarm_s")
    @classmethod
    def _life_prior(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        # written so that NaN fails (a NaN mean or spread was taken: the remaining-life interval NaN), and .inf
        if v is not None and not (v[0] > 0 and v[1] >= 0 and math.isfinite(v[0]) and math.isfinite(v[1])):
            raise ValueError(
                f"life_after_alarm_s is [mean, sd] of the time from onset to failure in seconds, "
                f"mean > 0 and sd >= 0, both finite; found {list(v)}"
            )
        return v

    @field_validator("speed_range_rpm")
    @classmethod
    def _speed_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        # as the trainer's dataset.yaml check: a NaN low end never read a shaft as stopped, a reversed or
        # infinite range searched the speed where none can be found
        if not (0 < v[0] < v[1] and math.isfinite(v[1])):
            raise ValueError(
                f"speed_range_rpm is the slowest and the fastest shaft speed in rpm, two finite numbers, the first "
                f"above 0 and below the second (speed_range_rpm: [600, 3000]); found {list(v)}"
            )
        return v
