"""Actions on results: MQTT publish, OPC UA write-back, alarms with hysteresis, sample saving.

Each action has an optional condition (``edge_agent.conditions``) and a retry policy. Acting is
asynchronous and bounded per action (one task per result, at most ``MAX_IN_FLIGHT`` at once: past
that a result is counted ``dropped``), a failure is
retried ``max_attempts`` times with a backoff, then counted and logged once per burst; it never
stops the pipeline. Alarms are stateful per (action, pipeline): raised after ``raise_after``
consecutive matching results, cleared after ``clear_after`` consecutive non-matching ones; each
transition is published (``.../alarms/<action>``) and mirrored on an OPC UA node when configured.
One signaller per alarm and output (the publication, the OPC UA mirror) sends the current state: a
transition that failed is retried only while no newer one is waiting; a newer one replaces it
(``superseded``) at once, so a mirror that was away never ends in a state the alarm has left.

``opcua_write`` and ``sparkplug_command`` (an NCMD/DCMD to a Sparkplug edge node) follow their
``mode`` (docs/actions.md has the timing diagram), per (action, pipeline): ``level`` writes on every result (``value`` while the condition holds, ``reset_value``
while it does not, when one is given), ``on_change`` writes the same level only when it changes,
``pulse`` writes ``value`` on a rising edge and ``reset_value`` ``pulse_ms`` later (a new edge while
the pulse is high extends it). One writer per output sends them in order; a value still waiting
when a newer one is decided is replaced (``superseded``), so a PLC that is away gets the latest
state when it is back, not a backlog; a value whose write failed is retried only while no newer one
waits for the same output node, from this pipeline or another (a newer one ends the backoff and the
failed one is ``superseded``), and none older than one already written goes out: the PLC never gets an
older value after a newer one.
An error that a retry cannot fix (``retryable = False``: unknown node, wrong type, write refused)
is not retried. A ``level`` / ``on_change`` Sparkplug command that did not reach its edge node (dead,
say) is kept and sent again when the node's (or device's) next birth arrives (``resent``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import time
from typing import Any

import numpy as np

from devices import load_object
from devices.base import BurstLogger, Frame
from edge_agent.conditions import compile_condition
from edge_agent.config import (
    ACTION_PLUGINS,
    AgentConfig,
    AlarmAction,
    MqttPublishAction,
    OpcUaWriteAction,
    OutputAction,
    SaveSampleAction,
    SparkplugCommandAction,
    WriteMode,
)
from edge_agent.types import Result, Window
from protocols import json_codec, topics
from protocols.events import Event, EventKind

log = logging.getLogger(__name__)

# results one ordinary action (mqtt_publish, save_sample, log, a plugin) acts on at once: with its peer
# away each one waits through its retries (a full MQTT queue: publish_timeout_s per attempt), so without
# a bound the tasks grew with every result and their polling starved the loop; past it a result is
# dropped, counted as `dropped` and logged
MAX_IN_FLIGHT = 64


def write_targets(cfg: AgentConfig) -> dict[str, list[tuple[str, str, Any]]]:
    """Per opcua source: (config path, node_id, value) of every value the actions may write there."""
    out: dict[str, list[tuple[str, str, Any]]] = collections.defaultdict(list)
    for name, a in cfg.actions.items():
        for source, option, node_id, value in a.write_targets():  # each action type names its own
            out[source].append((f"actions.{name}.{option}", node_id, value))
    return dict(out)


class ActionRunner:
    def __init__(self, cfg: AgentConfig, sources: dict[str, Any], on_event=None) -> None:
        self.cfg = cfg
        self.sources = sources
        self.on_event = on_event or (lambda e: None)
        self.preds = {name: compile_condition(a.when) for name, a in cfg.actions.items()}
        # each type's implementation, from its row in ACTION_PLUGINS (a type without one fails here, at start)
        self.impls = {a.type: load_object(ACTION_PLUGINS[a.type][1]) for a in cfg.actions.values()}
        self.stats: dict[str, collections.Counter] = {n: collections.Counter() for n in cfg.actions}
        self.state: dict[str, dict] = {n: {} for n in cfg.actions}  # each action's own state
        self.alarm_state: dict[tuple[str, str], dict] = {}
        self._burst = BurstLogger(log)
        # per action, the errors a retry cannot fix that were logged since its last success: each is said
        # once (a read-only node under a level output would otherwise log every 30 s for ever), counted always
        self._said: dict[str, set[str]] = {}
        self._pending: set[asyncio.Task] = set()
        self._in_flight: collections.Counter[str] = collections.Counter()  # per ordinary action
        self._level: dict[tuple[str, str], bool] = {}  # (action, pipeline) -> condition at the last result
        self._pulse_until: dict[tuple[str, str], float] = {}  # monotonic deadline of a pulse that is high
        # one writer per output: the value still waiting is replaced by a newer one (counted as
        # superseded), so a PLC that is away never builds up a backlog of stale writes
        self._desired: dict[tuple[str, str], tuple[Any, Result, int]] = {}  # (value, result, its order)
        self._writers: set[tuple[str, str]] = set()
        # set when a newer value is decided: a failed write's backoff ends then, and the failed (older)
        # value is dropped as superseded instead of retried (it would reach the PLC before the newer one)
        self._output_wake: dict[tuple[str, str], asyncio.Event] = {}
        # the same output node may be written by several writers (an action shared by pipelines, two
        # actions on one coil): values are ordered by when they were decided, per node, so that none older
        # than the newest decided is retried and none older than one already written goes out
        self._order = itertools.count()
        self._newest: dict[tuple, int] = {}  # output node -> order of the newest value decided for it
        self._written: dict[tuple, int] = {}  # output node -> order of the newest value written to it
        self._node_keys: dict[tuple, set[tuple[str, str]]] = {}  # output node -> its writers' keys
        # the same for an alarm's outputs, per (alarm, pipeline, output): the transition waiting to be
        # signalled, the signallers running, and the event that cuts a retry's backoff short
        self._signals: dict[tuple[str, str, str], Event] = {}
        self._signallers: set[tuple[str, str, str]] = set()
        self._signal_wake: dict[tuple[str, str, str], asyncio.Event] = {}
        # a level / on_change Sparkplug command whose last value did not reach its node (dead, say) is
        # kept and sent again when the node's (or device's) next birth arrives
        self._owed: dict[tuple[str, str], tuple[Any, Result, int]] = {}
        self._resend: dict[str, SparkplugCommandAction] = {
            n: a
            for n, a in cfg.actions.items()
            if isinstance(a, SparkplugCommandAction) and a.mode is not WriteMode.PULSE
        }
        for src in {a.source for a in self._resend.values()}:
            listen = getattr(getattr(sources.get(src), "sparkplug", None), "add_birth_listener", None)
            if listen is not None:
                listen(functools.partial(self._born, src))

    async def handle(self, pipeline_actions: list[str], result: Result, item: Frame | Window) -> None:
        for name in pipeline_actions:
            action = self.cfg.actions[name]
            if isinstance(action, AlarmAction):
                self._alarm(name, action, result)  # stateful: evaluated for every result
                continue
            if isinstance(action, OutputAction):
                self._output(name, action, result)  # stateful too: edges and resets
                continue
            if not self.preds[name](result):
                continue
            if self._in_flight[name] >= MAX_IN_FLIGHT:
                self.stats[name]["dropped"] += 1
                self._burst.log(
                    name,
                    "action %r: %d results still being acted on (its peer is slow or away); "
                    "this one is dropped (counted as dropped)",
                    name,
                    MAX_IN_FLIGHT,
                )
                continue
            self._in_flight[name] += 1
            self._spawn(self._run(name, action, result, item)).add_done_callback(
                functools.partial(self._landed, name)
            )

    def _landed(self, name: str, _task: asyncio.Task) -> None:
        self._in_flight[name] -= 1

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)
        return t

    def _output(self, name: str, action: OutputAction, result: Result) -> None:
        key = (name, result.pipeline)
        now = self.preds[name](result)
        before = self._level.get(key)
        self._level[key] = now
        reset = action.reset
        if action.mode is WriteMode.LEVEL:
            # level resets only when told to (reset_value): without it, it writes what it always did
            value = action.value if now else action.reset_value
            if value is not None:
                self._set_output(name, action, result, value)
        elif action.mode is WriteMode.ON_CHANGE:
            value = action.value if now else reset
            if now != before and value is not None:
                self._set_output(name, action, result, value)
        elif now and not before:  # pulse: a rising edge
            deadline = time.monotonic() + action.pulse_ms / 1000.0
            if key in self._pulse_until:  # still high: extend, the running pulse resets later
                self._pulse_until[key] = deadline
                return
            self._pulse_until[key] = deadline
            self._spawn(self._pulse(name, action, result, key))

    async def _pulse(self, name: str, action: OutputAction, result: Result, key) -> None:
        try:
            self._set_output(name, action, result, action.value)
            while (left := self._pulse_until[key] - time.monotonic()) > 0:
                await asyncio.sleep(left)
        finally:
            self._pulse_until.pop(key, None)
            if action.reset is not None:
                self._set_output(name, action, result, action.reset)

    def _set_output(self, name: str, action: OutputAction, result: Result, value: Any) -> None:
        key = (name, result.pipeline)
        node = _output_node(name, action)
        if key in self._desired:
            self.stats[name]["superseded"] += 1
        order = self._newest[node] = next(self._order)
        self._desired[key] = (value, result, order)
        keys = self._node_keys.setdefault(node, set())
        keys.add(key)
        for k in keys:  # a retry waiting with an older value for this node gives up at once
            wake = self._output_wake.get(k)
            if wake is not None:
                wake.set()
        if key not in self._writers:
            self._writers.add(key)
            self._spawn(self._writer(name, action, key))

    async def _writer(self, name: str, action: OutputAction, key) -> None:
        wake = self._output_wake.setdefault(key, asyncio.Event())
        try:
            node = _output_node(name, action)
            while key in self._desired:  # no await between this check and the discard below: no lost value
                value, result, order = self._desired.pop(key)
                wake.clear()
                delivered = await self._run(name, action, result, None, value=value, key=key, order=order)
                if name in self._resend:  # no await from the command's failure to here: no birth missed
                    if delivered or self._newest.get(node, -1) > order:  # a newer value is the one owed
                        self._owed.pop(key, None)
                    else:
                        self._owed[key] = (value, result, order)
        finally:
            self._writers.discard(key)

    def _born(self, source: str, group: str, edge_node: str, device: str | None) -> None:
        """A Sparkplug birth: the commands its node (or device) missed while away are sent again."""
        for key, (value, result, order) in list(self._owed.items()):
            a = self._resend[key[0]]
            if (a.source, a.group, a.edge_node, a.device) != (source, group, edge_node, device):
                continue
            del self._owed[key]
            # else a newer value (this output's or another writer's for the same metric) is on its way
            if key not in self._desired and self._newest.get(_output_node(key[0], a), -1) <= order:
                self.stats[key[0]]["resent"] += 1
                self._set_output(key[0], a, result, value)

    async def flush(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._pending and (left := deadline - time.monotonic()) > 0:  # a pulse ending spawns its reset
            await asyncio.wait(list(self._pending), timeout=left)

    async def _run(
        self,
        name: str,
        action,
        result: Result,
        item,
        value: Any = None,
        key: tuple[str, str] | None = None,
        order: int = 0,
    ) -> bool:
        """Acts with the action's retries; True when done (or queued for the broker). For an output's
        writer (``key``, the value's ``order``), a failed value is not retried once a newer one is decided
        for the same output node (by this writer or another): it is counted ``superseded`` and False
        returned at once, so the PLC never gets the older value after (or instead of) the newer one; a
        newer value arriving during the backoff ends it, and a value older than one already written to
        the node is not sent at all."""
        st = self.stats[name]
        node = _output_node(name, action) if key is not None else None

        def moot() -> bool:  # a newer value for this output node is decided, or one was written already
            return node is not None and (
                self._newest.get(node, -1) > order or self._written.get(node, -1) > order
            )

        for attempt in range(1, action.retry.max_attempts + 1):
            if node is not None and self._written.get(node, -1) > order:
                st["superseded"] += 1  # a newer value reached the node meanwhile: this one never goes out
                return False
            try:
                outcome = await self._do(name, action, result, item, value)
                st["queued" if outcome == "queued" else "ok"] += 1  # queued: held until the broker is back
                if node is not None:
                    self._written[node] = max(self._written.get(node, -1), order)
                self._said.pop(name, None)  # a later refusal is news again
                return True
            except Exception as exc:
                st["attempt_failures"] += 1
                if not getattr(exc, "retryable", True):
                    st["failed"] += 1
                    self._cannot(name, exc)
                    return False
                if moot():
                    st["superseded"] += 1  # a newer value waits: that one is written, not this one
                    return False
                if attempt == action.retry.max_attempts:
                    st["failed"] += 1
                    self._burst.log(name, "action %r failed after %d attempts: %s", name, attempt, exc)
                    return False
                if key is None:
                    await asyncio.sleep(action.retry.backoff_s * attempt)
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(action.retry.backoff_s * attempt):
                            await self._output_wake[key].wait()  # set by a newer value
                    if moot():
                        st["superseded"] += 1
                        return False
                st["retried"] += 1
        return False

    def _cannot(self, name: str, exc: Exception) -> None:
        """An error a retry cannot fix (a read-only node, BadUserAccessDenied, a value the node's type
        refuses): logged once per action and error until the action succeeds again, counted as ``failed``
        every time. Past a few distinct errors (a value that changes with each result), once per burst."""
        said = self._said.setdefault(name, set())
        msg = str(exc)
        if msg in said:
            return
        if len(said) >= 8:
            self._burst.log(name, "action %r failed (not retried: a retry cannot fix it): %s", name, exc)
            return
        said.add(msg)
        log.warning(
            "action %r failed (not retried: a retry cannot fix it): %s; said once: each further failure "
            "like it is only counted (failed) until the action succeeds",
            name,
            exc,
        )

    async def _do(self, name: str, action, result: Result, item, value: Any = None) -> str | None:
        return await self.impls[action.type](self, name, action, result, item, value)

    def _alarm(self, name: str, action: AlarmAction, result: Result) -> None:
        key = (name, result.pipeline)
        st = self.alarm_state.setdefault(
            key,
            {
                "active": False,
                "hits": 0,
                "misses": 0,
                "since": None,
                "pipeline": result.pipeline,
                "alarm": name,
            },
        )
        if self.preds[name](result):
            st["hits"] += 1
            st["misses"] = 0
            if not st["active"] and st["hits"] >= action.raise_after:
                st["active"], st["since"] = True, time.time()
                self._alarm_changed(name, action, result, True)
        else:
            st["misses"] += 1
            st["hits"] = 0
            if st["active"] and st["misses"] >= action.clear_after:
                st["active"], st["since"] = False, time.time()
                self._alarm_changed(name, action, result, False)

    def _alarm_changed(self, name: str, action: AlarmAction, result: Result, active: bool) -> None:
        self.stats[name]["raised" if active else "cleared"] += 1
        evt = Event(
            EventKind.ALARM,
            alarm=name,
            active=active,
            pipeline=result.pipeline,
            score=result.score,
            label=result.label,
            anomaly_score=result.anomaly_score,
            remaining_life=result.remaining_life,
            model_version=result.model_version,
        )
        log.warning(
            "alarm %s %s on pipeline %s (score %.3f)",
            name,
            "RAISED" if active else "cleared",
            result.pipeline,
            result.score,
        )
        self.on_event(evt)
        for output in _alarm_outputs(action):
            key = (name, result.pipeline, output)
            if key in self._signals:  # the one still waiting is moot: the alarm has moved on
                self.stats[name]["superseded"] += 1
            self._signals[key] = evt
            wake = self._signal_wake.get(key)
            if wake is not None:
                wake.set()
            if key not in self._signallers:
                self._signallers.add(key)
                self._spawn(self._signaller(name, action, key))

    async def _signaller(self, name: str, action: AlarmAction, key: tuple[str, str, str]) -> None:
        """Sends the alarm's latest transition to one output; a failed one is retried with the backoff
        only while no newer transition waits, and a newer one ends the backoff at once."""
        st = self.stats[name]
        wake = self._signal_wake.setdefault(key, asyncio.Event())
        try:
            while key in self._signals:  # no await between this check and the pop: no lost transition
                evt = self._signals.pop(key)
                wake.clear()
                for attempt in range(1, action.retry.max_attempts + 1):
                    try:
                        await self.impls[action.type](self, name, action, evt, key[2])
                        break
                    except Exception as exc:
                        if not getattr(exc, "retryable", True):
                            st["failed"] += 1
                            self._burst.log(name, "alarm %r: could not signal (%s)", name, exc)
                            break
                        if key in self._signals:
                            st["superseded"] += 1  # a newer transition waits: send that, not this
                            break
                        if attempt == action.retry.max_attempts:
                            st["failed"] += 1
                            self._burst.log(name, "alarm %r: could not signal (%s)", name, exc)
                            break
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(action.retry.backoff_s * attempt):
                            await wake.wait()  # set by a newer transition
                    if key in self._signals:
                        st["superseded"] += 1
                        break
        finally:
            self._signallers.discard(key)

    def status(self) -> dict:
        return {
            "actions": {n: dict(c) for n, c in self.stats.items()},
            "alarms": [dict(v) for v in self.alarm_state.values()],
        }


# ---- the built-in implementations (rows of edge_agent.config.ACTION_PLUGINS) ------------------


async def publish_result(
    ctx: ActionRunner, name: str, action: MqttPublishAction, result: Result, item, value: Any = None
) -> str | None:
    cfg = ctx.cfg
    topic = action.topic or topics.build_topic(
        cfg.agent.site, cfg.agent.line, cfg.agent.id, topics.Kind.RESULTS, result.pipeline
    )
    return await ctx.sources[action.source].publish(
        topic, json_codec.dumps(result.to_json_dict()).encode(), qos=action.qos, retain=action.retain
    )


async def write_opcua(
    ctx: ActionRunner, name: str, action: OpcUaWriteAction, result: Result, item, value: Any = None
) -> None:
    await ctx.sources[action.source].write(action.node_id, action.value if value is None else value)


async def send_sparkplug_command(
    ctx: ActionRunner, name: str, action: SparkplugCommandAction, result: Result, item, value: Any = None
) -> None:
    await ctx.sources[action.source].command(
        action.group,
        action.edge_node,
        action.device,
        action.metric,
        action.value if value is None else value,
        action.datatype.value if action.datatype else None,
    )


async def save_sample(
    ctx: ActionRunner, name: str, action: SaveSampleAction, result: Result, item, value: Any = None
) -> None:
    await asyncio.to_thread(_save, ctx, name, action, result, item)


def _save(ctx: ActionRunner, name: str, action: SaveSampleAction, result: Result, item) -> None:
    times = ctx.state[name].setdefault("times", collections.deque())
    now = time.monotonic()  # an hour of elapsed time: a wall clock stepped back (NTP) would stall the budget
    while times and now - times[0] > 3600:
        times.popleft()
    if len(times) >= action.max_per_hour:
        ctx.stats[name]["over_budget"] += 1
        return
    times.append(now)
    folder = ctx.cfg.path(action.dir) if action.dir else ctx.cfg.data_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{result.pipeline}-{result.item_seq:08d}-{result.verdict}"
    if isinstance(item, Frame):
        import cv2

        cv2.imwrite(str(folder / f"{stem}.png"), item.image)
    else:
        np.save(folder / f"{stem}.npy", item.waveform.astype(np.float32))
    (folder / f"{stem}.json").write_text(json_codec.dumps(result.to_json_dict()))


def _output_node(name: str, action: OutputAction) -> tuple:
    """The PLC output an output action writes: its OPC UA node or Sparkplug metric (another output type:
    its own)."""
    if isinstance(action, OpcUaWriteAction):
        return ("opcua", action.source, action.node_id)
    if isinstance(action, SparkplugCommandAction):
        return ("sparkplug", action.source, action.group, action.edge_node, action.device, action.metric)
    return ("action", name)


def _alarm_outputs(action: AlarmAction) -> list[str]:
    """The outputs an alarm signals its transitions to: ``mqtt`` (publish_to), ``opcua`` (its node)."""
    out = []
    if action.publish_to:
        out.append("mqtt")
    if action.node_id and action.opcua_source:
        out.append("opcua")
    return out


async def signal_alarm(
    ctx: ActionRunner, name: str, action: AlarmAction, evt: Event, output: str | None = None
) -> None:
    """An alarm's transition (``evt``: raised or cleared): published, and mirrored on its OPC UA node
    (``output`` ``mqtt`` or ``opcua``: that one only; None: both)."""
    if action.publish_to and output in (None, "mqtt"):
        cfg = ctx.cfg
        topic = topics.build_topic(cfg.agent.site, cfg.agent.line, cfg.agent.id, topics.Kind.ALARMS, name)
        await ctx.sources[action.publish_to].publish(
            topic, json_codec.dumps(evt.to_json_dict()).encode(), qos=1, retain=True
        )
    if action.node_id and action.opcua_source and output in (None, "opcua"):
        await ctx.sources[action.opcua_source].write(action.node_id, evt["active"])
