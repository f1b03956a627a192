"""Settings of the outbox (``outbox:``) and of sample selection (``upload:``). No heavy imports."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FsyncPolicy(enum.StrEnum):
    ALWAYS = "always"  # every append is committed and fsynced before append() returns
    BATCH = "batch"  # appends are committed (and fsynced) together every commit_interval_ms / commit_batch
    OFF = "off"  # batched commits, no fsync: survives a process crash, not a power loss


class DropPolicy(enum.StrEnum):
    OLDEST_FIRST = "oldest_first"
    LOWEST_PRIORITY_FIRST = "lowest_priority_first"  # samples, then results/telemetry; events last


class Retention(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_age_s: float | None = Field(None, gt=0)


class OutboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: str | None = Field(None, description="default: <data_dir>/outbox")
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    commit_interval_ms: float = Field(50.0, gt=0, le=10_000)
    commit_batch: int = Field(500, ge=1)
    max_bytes: int = Field(
        1 * 1024**3,
        ge=128 * 1024,
        description="disk budget: bytes of the outbox folder on disk (database, WAL, sample files); "
        "SQLite itself needs ~60 KB of it",
    )
    drop_policy: DropPolicy = DropPolicy.LOWEST_PRIORITY_FIRST
    retention: dict[str, Retention] = Field(
        default_factory=lambda: {
            "result": Retention(max_age_s=7 * 86400),
            "telemetry": Retention(max_age_s=7 * 86400),
        }
    )


class SampleSelectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    all_ng: bool = True
    ok_fraction: float = Field(0.02, ge=0, le=1, description="random fraction of OK results")
    uncertain_margin: float = Field(0.15, ge=0, le=1, description="top-2 probability margin below which")
    unsure_fraction: float = Field(0.2, ge=0, le=1, description="fraction of UNSURE results uploaded")
    max_per_hour: int = Field(600, ge=0)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        # uncertain_score_band never selected anything (no threshold reached the selector), and a band in
        # the score's own units cannot suit every model (an NG probability, an anomaly score, a baseline's
        # ratio): refused by name rather than as an unknown option, so that its users know what happened
        if isinstance(data, dict) and "uncertain_score_band" in data:
            raise ValueError(
                "option 'uncertain_score_band' was removed: it never had an effect; remove it "
                "(uncertain_margin selects a classifier's borderline results)"
            )
        return data
