"""Every event the agent emits, in one list: ``EventKind`` (the kinds, what each means, the payload fields
each always carries) and ``Event`` (one event: its kind, its time and its payload). A wire contract, so
it lives here: the agent builds events, the cloud reads them (``outbox_*`` account for lost records).

An event is what the agent tells about itself: a swap, an alarm raised or cleared, a dropped outbox range,
a baseline learned. Components hand ``Event`` objects to their ``on_event`` callback; the agent keeps the
last ones for ``/status``, counts them in ``edge_events_total{kind}``, and records them in the outbox
(record kind ``event``, or ``alarm`` for alarms) as ``Event.to_json_dict()``: ``{"kind": ..., "t": ...,
<payload fields>}``, the same JSON the cloud and MQTT subscribers have always read.

An unknown kind is refused when the event is built (``ValueError``), as is an event missing one of its
kind's payload fields: a new kind is one new member below plus its line in docs/events.md (a test keeps
the two in step). An ``Event`` reads like its JSON form (``evt["kind"]``, ``evt.get("reason")``); it is
not a dict, so a listener cannot change what the next listener sees.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Event", "EventKind"]


class EventKind(enum.StrEnum):
    """value, the payload fields always present (beside ``kind`` and ``t``), and the meaning."""

    fields: tuple[str, ...]
    meaning: str

    def __new__(cls, value: str, fields: tuple[str, ...], meaning: str) -> EventKind:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.fields = fields
        obj.meaning = meaning
        return obj

    # the agent
    STARTED = ("started", ("pipelines",), "every source, pipeline and slot is up; the agent serves")
    FIRST_RESULT = (
        "first_result",
        ("after_s",),
        "the first result, after_s seconds after the process was launched",
    )
    # pipelines and actions
    ALARM = (
        "alarm",
        ("alarm", "active", "pipeline", "score", "label", "anomaly_score", "remaining_life", "model_version"),
        "an alarm action was raised (active true) or cleared (active false); also published on "
        ".../alarms/<name> when the action says so",
    )
    INPUT_DRIFT = (
        "input_drift",
        ("pipeline", "share", "window", "max_share", "reasons", "message"),
        "a share of the last frames far outside the model's training inputs (UNSURE) reached max_share",
    )
    MODEL_FAILING = (
        "model_failing",
        ("pipeline", "slot", "model_version", "active", "share", "items", "reasons", "failed", "message"),
        "the model failed (NaN/Inf out, an engine, preprocessing or output error) on more than half of a "
        "pipeline's last items (at least 6 of up to 20): each such item's result is UNSURE, never OK nor NG by the "
        "model (with a baseline, a window is judged by it alone) (active true, once); a quarter or fewer of them "
        "fail, no item reaches the model for 60 s, the pipeline stops, or the next start finds it not ended (an agent "
        "killed during it) (active false; failed: the items failed in the episode)",
    )
    ITEMS_STALE = (
        "items_stale",
        ("pipeline", "active", "max_age_ms", "age_ms", "dropped", "message"),
        "inference fell behind: items older than the pipeline's queue.max_age_ms are dropped unjudged "
        "(active true, at the first); none for 10 s and a fresh item judged, the pipeline stops, or the next start "
        "finds it not ended (active false; dropped: the episode's count)",
    )
    WRITE_FAILING = (
        "write_failing",
        ("action", "source", "node_id", "active", "reason", "failed", "failing_s", "message"),
        "a PLC write target refuses the action's writes for a reason a retry cannot fix (a node not writable, "
        "a value its type cannot hold, a reset_value it would refuse): active true at the first refusal, with "
        "the reason; none for 10 s after it took what it refused: any write for a node refused whole, the value "
        "refused for its type (active false; failed: the writes refused in the episode, failing_s: from the first "
        "refusal to that write; null for an episode ended by a config without its action); once per episode, "
        "however often it writes; the next agent ends one told before a restart",
    )
    SOURCE_DOWN = (
        "source_down",
        ("source", "active", "state", "down_s", "last_error", "flaps", "message"),
        "a source (camera, PLC, broker) has not been connected for 30 s: its pipelines get no items (active "
        "true, with its state and last error); connected again (active false; down_s: how long it was down, null when that cannot be known); a flapping source counts once it was down for "
        "30 s in total within 2 minutes, and ends once connected for 2 minutes without a break, or bad for at most 5% of them (flaps: its outages)",
    )
    PUBLISH_DOWN = (
        "publish_down",
        ("source", "client_id", "active", "state", "down_s", "last_error", "flaps", "message"),
        "an mqtt source's publish connection (publish_connection: separate) has not been connected for 30 s, "
        "its source connected or not: what the source publishes (results, alarms) cannot reach the "
        "broker (active true, with its client id, state and last error); connected again (active false; "
        "down_s: how long it was down, null when that cannot be known); flapping as source_down (flaps: its "
        "outages)",
    )
    SOURCE_HALTED = (
        "source_halted",
        ("source", "active", "reason", "since", "halted_s", "checks", "flaps", "message"),
        "an OPC UA source's server has been halted for 30 s (reason: server_not_running, server_clock_frozen, "
        "subscription_stalled or server_not_answering; since: ISO 8601, UTC), its connection up or not: its "
        "tags are BAD, its readings held (active true, once per halt); healthy again (active false; halted_s: "
        "how long it lasted, null when that cannot be known); a flapping server counts once halted for 30 s in total within 2 minutes, and ends once "
        "healthy for 2 minutes without a break, or halted for at most 5% of them (flaps: its halts)",
    )
    SAMPLE_RATE_STATED = (
        "sample_rate_stated",
        ("pipeline", "tag", "rate_hz", "rate_in_use_hz", "model_rate_hz", "message"),
        "a waveform's source stated its sample rate (no rate in the config): the windows use it",
    )
    SAMPLE_RATE_REFUSED = (
        "sample_rate_refused",
        ("pipeline", "tag", "rate_hz", "rate_in_use_hz", "model_rate_hz", "message"),
        "the stated rate cannot be resampled to the model's: its windows are skipped (counted)",
    )
    SAMPLE_RATE_CHANGED = (
        "sample_rate_changed",
        ("pipeline", "tag", "rate_hz", "rate_in_use_hz", "model_rate_hz", "message"),
        "the source now states another rate than the pipeline runs at: windows skipped (counted)",
    )
    SAMPLE_RATE_RESTORED = (
        "sample_rate_restored",
        ("pipeline", "tag", "rate_hz", "rate_in_use_hz", "model_rate_hz", "message"),
        "the stated rate is back at the pipeline's: windows are scored again",
    )
    # model slots and the model manager
    SWAP_STARTED = ("swap_started", ("slot", "package", "from_version"), "a slot began installing a package")
    SWAPPED = (
        "swapped",
        ("slot", "from_version", "to_version", "engine"),
        "the new model passed its checks and serves; its health window starts",
    )
    SWAP_REFUSED = (
        "swap_refused",
        ("slot", "stage", "reason", "from_version", "to_version", "package"),
        "a package was refused at a stage (verify, load, smoke test ...); the old model keeps serving",
    )
    SWAP_KEPT = (
        "swap_kept",
        ("slot", "version", "inferences"),
        "the health window passed: the new model stays",
    )
    ROLLED_BACK = (
        "rolled_back",
        ("slot", "from_version", "to_version", "reason"),
        "the previous model serves again (health gate failed, admin rollback or restart in the window)",
    )
    ROLLBACK_UNRECORDED = (
        "rollback_unrecorded",
        ("slot", "package", "active", "reason", "message"),
        "a version was rolled back or refused, but the disk refused its record (models/<slot>/.rolled-back/): a "
        "restart before it is written may serve that version again (active true, with the disk's reason); written "
        "at last, or its folder removed (active false)",
    )
    INT8_DEVIATION = (
        "int8_deviation",
        ("slot", "package", "engine", "deviation", "agreement", "reason", "cpu", "cpu_flags", "serving"),
        "the INT8 form disagrees with FP32 (an INT8-only package: with its golden verdicts) on the golden inputs on "
        "this CPU; the FP32 form (an INT8-only package: another engine) serves",
    )
    DEPLOYMENT_STEP = (
        "deployment_step",
        ("slot", "version", "step", "ok", "reason", "deployment"),
        "a fleet deployment moved a step on this agent (download, install, health, failed ...)",
    )
    FLEET_COMMAND = (
        "fleet_command",
        ("command", "command_kind", "pipeline", "ok", "detail", "issued_by", "reason"),
        "a command from the fleet (e.g. relearn a baseline) was carried out (ok) or refused",
    )
    # condition monitoring (signal pipelines with a baseline)
    BASELINE_LEARNING = (
        "baseline_learning",
        ("pipeline", "reason", "target_windows"),
        "no baseline yet: learning this asset's healthy state",
    )
    BASELINE_DISCARDED = (
        "baseline_discarded",
        ("pipeline", "reason"),
        "a stored baseline could not be used (unreadable, feature set changed, learned under other "
        "settings: state_tag, states, speed source or bands; reason says which); learning anew",
    )
    BASELINE_LOADED = (
        "baseline_loaded",
        ("pipeline", "state", "windows"),
        "a stored baseline was read at start",
    )
    BASELINE_RELEARN = (
        "baseline_relearn",
        ("pipeline", "reason", "target_windows"),
        "learning was asked for again (edge-agent baseline relearn, a repair)",
    )
    BASELINE_SPEED = (
        "baseline_speed",
        ("pipeline", "speed_rpm", "windows", "orders", "confidence"),
        "the shaft speed was estimated from the first windows",
    )
    BASELINE_LEARNED = (
        "baseline_learned",
        ("pipeline", "windows", "threshold"),
        "the baseline is learned: scoring against it starts",
    )
    ISO_ZONE = (
        "iso_zone",
        ("pipeline", "zone", "velocity_mm_s", "iso_class"),
        "the vibration velocity entered another ISO 10816 zone",
    )
    LIFE_RESET = ("life_reset", ("pipeline", "reason"), "a repair reset the remaining-life trend")
    BASELINE_UNJUDGED = (
        "baseline_unjudged",
        ("pipeline", "active", "share", "windows", "reasons", "message"),
        "half or more of a running machine's windows over the last 10 minutes were not judged by its baseline "
        "(the speed changed across them, or a speed never commissioned): its faults go unseen (active true, "
        "once); fewer than a quarter are (active false)",
    )
    SENSOR_FAULT = (
        "sensor_fault",
        ("pipeline", "fault", "active", "message"),
        "a signal pipeline's sensor reads no live signal (flatline, clipped, held, spike, overrange, low_level), "
        "another scale (scale), the grid through its cable (mains_pickup), or its waveform stopped updating "
        "(stale): its windows are UNSURE (none "
        "come, when stale) until it does (active true); it does again (active false)",
    )
    # the outbox (recorded by the outbox itself, with its epoch)
    OUTBOX_CORRUPT = (
        "outbox_corrupt",
        (
            "moved_to",
            "reason",
            "epoch",
            "previous_epoch",
            "salvaged",
            "salvaged_by_kind",
        ),
        "the outbox file was unreadable at start, or turned corrupt or was removed while running: moved "
        "aside when it still existed, a fresh outbox starts a new epoch holding every readable record "
        "with its seq (salvaged, per kind); when it went bad while running, also lost and lost_by_kind; when "
        "a start's time limit cut the copy, salvaged_at_least true (the rest is copied while the agent runs)",
    )
    OUTBOX_SALVAGED = (
        "outbox_salvaged",
        ("moved_to", "epoch", "previous_epoch", "salvaged", "salvaged_by_kind"),
        "a copy of a moved-aside store that a start's time limit (or a renewal's) cut, its outbox_corrupt event "
        "saying salvaged_at_least, is done while the agent ran: the whole copy's count (salvaged, per kind)",
    )
    OUTBOX_WRITE_FAILED = (
        "outbox_write_failed",
        ("records", "reason", "epoch", "cause", "dropped", "by_kind", "ranges"),
        "a commit failed (disk full, I/O error): these records are lost, their seqs listed",
    )
    OUTBOX_BUDGET = (
        "outbox_budget",
        ("cause", "epoch", "dropped", "by_kind", "ranges", "budget_bytes"),
        "records dropped to stay within the outbox's disk budget (samples first, events last)",
    )
    OUTBOX_RETENTION = (
        "outbox_retention",
        ("cause", "epoch", "dropped", "by_kind", "ranges", "budget_bytes"),
        "records older than their kind's retention were dropped unsent",
    )
    OUTBOX_REFUSED = (
        "outbox_refused",
        ("cause", "epoch", "dropped", "by_kind", "ranges", "budget_bytes"),
        "records the cloud refused for good (INVALID_ARGUMENT) were dropped, so the ones behind them are sent",
    )
    OUTBOX_DAMAGED = (
        "outbox_damaged",
        ("cause", "epoch", "dropped", "by_kind", "ranges", "budget_bytes"),
        "rows whose kind damage garbled (no record of any kind) were removed unsent from a sound store, or left "
        "out of the copy of a corrupt one into a new epoch, counted as corrupt:damaged (a row of such a copy whose "
        "kind reads right and whose other cells were damaged: by its kind; a seq the copy could not read at all: "
        "as damaged); their seqs listed",
    )


_BY_VALUE: dict[str, EventKind] = {k.value: k for k in EventKind}


class Event(Mapping[str, Any]):
    """One event: ``kind``, ``t`` (epoch seconds) and the payload (JSON values: str, numbers, bool, None,
    lists, dicts). Build it with the payload as keywords: ``Event(EventKind.SWAPPED, slot=..., ...)``."""

    __slots__ = ("data", "kind", "t")
    kind: EventKind
    t: float
    data: dict[str, Any]

    def __init__(self, kind: EventKind | str, /, t: float | None = None, **data: Any) -> None:
        k = _BY_VALUE.get(kind) if isinstance(kind, str) else None
        if k is None:
            raise ValueError(
                f"unknown event kind {kind!r}: add it to protocols.events.EventKind (and docs/events.md)"
            )
        missing = [f for f in k.fields if f not in data]
        if missing:
            raise ValueError(
                f"event {k.value}: payload field(s) {missing} missing (it always carries {list(k.fields)})"
            )
        if "kind" in data:
            raise ValueError(f"event {k.value}: 'kind' is not a payload field")
        object.__setattr__(self, "kind", k)
        object.__setattr__(self, "t", time.time() if t is None else float(t))
        object.__setattr__(self, "data", data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("an Event does not change once built")

    @classmethod
    def coerce(cls, evt: Event | Mapping[str, Any]) -> Event:
        """An ``Event`` as it is; a mapping in the wire form (``{"kind": ..., "t": ..., ...}``) checked."""
        if isinstance(evt, Event):
            return evt
        body = dict(evt)
        return cls(body.pop("kind", "<none>"), t=body.pop("t", None), **body)

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form: what the outbox records, MQTT subscribers and the cloud read."""
        return {"kind": self.kind.value, "t": self.t, **self.data}

    # read like the wire form
    def __getitem__(self, key: str) -> Any:
        if key == "kind":
            return self.kind
        if key == "t":
            return self.t
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        yield "kind"
        yield "t"
        yield from self.data

    def __len__(self) -> int:
        return 2 + len(self.data)

    def __repr__(self) -> str:
        return f"Event({self.kind.value!r}, t={self.t!r}, {', '.join(f'{k}={v!r}' for k, v in self.data.items())})"
