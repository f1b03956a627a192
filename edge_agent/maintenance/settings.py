"""``pipelines[].baseline`` in the agent config: commissioning a per-asset baseline (no heavy imports).

baseline:
  windows: 360                 # learn on this many healthy windows (or duration_s, whichever first)
  false_alarm_rate: 0.0001     # per window, after confirmation; sets the threshold
  speed_tag: Speed             # shaft speed tag (rpm); absent: estimated from the spectrum
  temperature_tag: BearingTemp # optional: tells a stop (it cools) from a dead sensor without a speed tag
  bearing: {n_elements: 9, ball_d_mm: 7.94, pitch_d_mm: 39.04, contact_angle_deg: 0}
  iso_class: group2_rigid      # ISO 10816-3 zone boundaries for the day-one velocity rule
"""

from __future__ import annotations

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
    speed_range_rpm: tuple[float, float] = (300.0, 6000.0)
    speed_band_pct: float = Field(
        10.0, gt=0, le=100, description="width of a speed band (statistics per band)"
    )
    bearing: BearingSettings | None = Field(
        None, description="absent: races told apart by the envelope's sidebands"
    )
    units: Literal["g", "m/s2"] = "g"
    iso_class: Literal["group2_rigid", "group2_flexible", "group1_rigid", "group1_flexible"] = "group2_rigid"
    iso_alarm_zone: Literal["C", "D", "off"] = "D"
    failure_ratio: float = Field(
        10.0,
        gt=1,
        description="amplitude growth over the baseline taken as failure, "
        "for the remaining-life trend (10x: the usual 'danger')",
    )
    failure_ratio_sd: float = Field(
        0.0, ge=0, description="how well failure_ratio is known (widens the interval)"
    )
    life_after_alarm_s: tuple[float, float] | None = Field(
        None,
        description="mean and spread of the time from "
        "the onset to failure on past runs: a prior declared "
        "by hand, used when the package carries none",
    )
    life_unit: Literal["s", "h"] = "s"

    @field_validator("life_after_alarm_s")
    @classmethod
    def _life_prior(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and (v[0] <= 0 or v[1] < 0):
            raise ValueError(
                f"life_after_alarm_s is [mean, sd] of the time from onset to failure in seconds, "
                f"mean > 0 and sd >= 0; found {list(v)}"
            )
        return v
