"""Typed objects that cross component boundaries inside the agent.

``Window``: a signal window assembled by a signal pipeline from ``devices.Reading``s.
``Result``: one inference outcome, what actions act on and the outbox stores; it carries its item's capture
time and its age at the verdict (``age_ms``), so that an action (a condition on ``age_ms``) and the cloud can
tell a verdict on a late item.
(``devices.Frame`` and ``devices.Reading`` come from the adapters.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Window:
    source: str
    seq: int  # per-pipeline, strictly increasing
    # epoch seconds of the window's first and last samples: a reading's timestamp is its first sample's
    # time, later samples are placed at the rate in use (all at the reading's time when no rate is known)
    start_ts: float
    end_ts: float
    waveform: np.ndarray  # 1-D float, the waveform tag's samples (window_samples long)
    scalars: dict[str, float] = field(default_factory=dict)  # latest value of each scalar tag
    # the ADC's step as its noise lies in ``waveform`` when the waveform cannot tell it (resampled from a faster
    # tag: its raw samples' step, for the model's band; maintenance.baseline.resampled_step); None: not given
    adc_step: float | None = None


@dataclass(frozen=True, slots=True)
class Latency:
    queue_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.queue_ms + self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(slots=True)
class Result:
    pipeline: str
    source: str
    item_seq: int  # Frame.seq or Window.seq
    captured_at: float  # epoch seconds
    model: str  # package name
    model_version: str
    engine: str  # "onnxruntime" | "openvino"
    verdict: str  # "OK" | "NG" | "UNSURE"
    # None: not judged (the model failed on the item: its reason in ``reason`` and ``outputs.model_error``)
    score: float | None
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    margin: float | None = None
    anomaly_score: float | None = None
    remaining_life: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # small raw outputs, JSON-able
    latency: Latency | None = None
    heatmap: np.ndarray | None = None  # not serialised into JSON
    finished_at: float = 0.0
    # why UNSURE (the input is far outside what the model was trained on), or the sensor's reason beside an
    # ISO zone alarm that stood before a 'scale' found through the ADC's floor (NG iso_zone_<zone>)
    reason: str | None = None

    @property
    def score_text(self) -> str:
        """The score as a log line writes it: to 3 decimals, a whole number (a rule's Int64 counter past 2**53)
        with every digit (``%.3f`` wrote 9007199254740993 as 9007199254740992.000); ``none`` when not judged."""
        s = self.score
        if s is None:
            return "none"
        return str(s) if isinstance(s, int) and not isinstance(s, bool) else f"{s:.3f}"

    @property
    def age_ms(self) -> float:
        """The item's age at the verdict: ``finished_at`` minus ``captured_at``, in ms (a frame's capture
        time is the gateway's clock; a window's is its last sample's, and a rule's its reading's, on the source's
        clock, not when this gateway received it)."""
        return round((self.finished_at - self.captured_at) * 1000.0, 3)

    def to_json_dict(self) -> dict[str, Any]:
        d = {
            "pipeline": self.pipeline,
            "source": self.source,
            "seq": self.item_seq,
            "captured_at": self.captured_at,
            "finished_at": self.finished_at,
            "age_ms": self.age_ms,
            "model": self.model,
            "model_version": self.model_version,
            "engine": self.engine,
            "verdict": self.verdict,
            "score": self.score,
            "label": self.label,
            "probabilities": self.probabilities,
            "margin": self.margin,
            "anomaly_score": self.anomaly_score,
            "remaining_life": self.remaining_life,
            "outputs": self.outputs,
        }
        if self.reason is not None:
            d["reason"] = self.reason
        if self.latency is not None:
            d["latency_ms"] = {
                "queue": self.latency.queue_ms,
                "preprocess": self.latency.preprocess_ms,
                "inference": self.latency.inference_ms,
                "postprocess": self.latency.postprocess_ms,
            }
        return d


def made_up_parts(pipeline: str, source: str) -> tuple[Result, Result, Result, Result]:
    """A pipeline's made-up parts its actions' conditions are tried on (the watchdog hold, ``validate``): one not
    judged (UNSURE, no score, no label, ``model_error: no_model``), one judged OK and one NG (no score, no label, no
    model: each unknown to the conditions that read them), and that NG part at the highest score (an NG part scores
    above its slot's threshold, whatever it is)."""
    import dataclasses
    import math
    import time

    now = time.time()
    unjudged = Result(
        pipeline,
        source,
        0,
        now,
        "",
        "",
        "",
        "UNSURE",
        None,
        outputs={"model_error": "no_model"},
        finished_at=now,
    )
    judged_ok = dataclasses.replace(unjudged, verdict="OK", outputs={})
    judged_ng = dataclasses.replace(judged_ok, verdict="NG")
    return (
        unjudged,
        judged_ok,
        judged_ng,
        dataclasses.replace(judged_ng, score=math.inf, anomaly_score=math.inf),
    )
