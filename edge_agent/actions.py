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
say) is kept and sent again when the node's (or device's) next birth arrives (``resent``); any other
output's latest value, and an alarm's latest transition, that failed all its retries is tried again
every ``OWED_RETRY_S`` until it lands (``resent``), a newer one replaces it, or ``flush()`` (at stop).

Across the agent's lifecycle: ``flush()`` at stop ends a pulse that would outlast half its bound, so its
reset is written while the source is connected (``cut_at_stop``); a new runner (restart, config reload)
writes a pulse node's reset at its first result that is no edge, and signals an alarm's first established
state even when it is a clear (``reconciled``): what an agent before it left high (killed mid-pulse, an
alarm raised at stop) is not left standing. At the first result after a source reconnects (a PLC or broker
that restarted may have lost what was written), the on_change outputs' levels and the alarms' last states on
it are sent again (``resent``); so is an on_change level, or an alarm's state on its OPC UA mirror, its node
refused for good (locked) once the source has seen the node may be written again (``writable_again``). A
result with NaN in a number a condition reads is not judged by that condition (``not_a_number``); a label a
condition names that a swapped-in model no longer gives is said (``label_gone``). An output whose reset its
OPC UA node would refuse (the value out of the node's type) does not write its value (``reset_refused``): the
node would keep it for good. An ``on_change`` or ``pulse`` edge so refused, or refused at the write for the node's type (an error whose
``type_refused`` is True: the source's check at the write, the server's BadTypeMismatch), is judged again at
the next result (``_edge_refused``). The reset is judged again as the value is sent (``_refused_now``): a
value decided while the PLC was away was judged by what its node was before a download. A node whose type
the source does not know (its check at connect could not read it) is read first (``_judgeable``): the value
waits, retried, until its reset can be judged, and is never written unjudged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import functools
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from devices import load_object
from devices.base import BurstLogger, Frame, config_text
from edge_agent.conditions import compile_condition, labels_named, numbers_named
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
    write_value_note,
)
from edge_agent.types import Result, Window
from protocols import json_codec, topics
from protocols.events import Event, EventKind

log = logging.getLogger(__name__)

# an output's or an alarm's latest value whose retries all failed (the PLC or broker away longer than
# them) is tried again this often until it lands, a newer value replaces it or the agent stops: else a
# pulse's reset, an on_change level or an alarm's clear that failed was lost, and the PLC kept the old
# value (a reject gate held open) until the next change, however long after the peer was back
OWED_RETRY_S = 1.0

# an OPC UA write's outcome when the PLC answered it Uncertain (Part 4: taken, but not wholly as asked): counted
# apart from ``ok`` and said once per burst, never written again (the PLC took it)
UNCERTAIN = "uncertain"

RAISED_FILE = "alarm-outputs.json"  # in the agent's data folder: the outputs of the alarms raised now

# results one ordinary action (mqtt_publish, save_sample, log, a plugin) acts on at once: with its peer
# away each one waits through its retries (a full MQTT queue: publish_timeout_s per attempt), so without
# a bound the tasks grew with every result and their polling starved the loop; past it a result is
# dropped, counted as `dropped` and logged
MAX_IN_FLIGHT = 64
# a PLC write target whose writes a retry cannot fix is an episode the cloud is told of (``write_failing``):
# its start at the first refusal, its end once the target has taken a write and refused none for this long
# (a node that takes and refuses the value in turn is one episode, not an event per write)
WRITE_RECOVERED_S = 10.0
# in the agent's data folder: the write_failing episodes told and not yet ended, so that the next runner (a
# restart, a config reload: the usual fix of a value the node cannot hold) tells their end
FAILING_FILE = "write-failing.json"

# a file save_sample wrote: <pipeline>-[<UTC time>-]<seq>-<verdict>.<ext> (names without the time were
# written before it was added); nothing else in its folder is counted or removed
_SAMPLE_FILE = re.compile(r"(.+-[0-9]{8,}-[A-Z]+)\.(?:png|npy|json)")
_SAMPLE_EXTS = (".png", ".npy", ".json")


class SampleFolder:
    """The samples ``save_sample`` keeps in one folder, oldest first: read from the folder once (at the first
    sample of a run: what earlier runs left counts), then kept up to date, so that a save costs no scan.
    ``trim`` removes the oldest while there are more than ``max_samples`` or they take more than ``max_bytes``
    (the newest is always kept). Without it the folder grew by up to ``max_per_hour`` samples an hour for
    as long as the agent ran (14,000 a day at the default: a gateway's disk full within weeks)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.samples: collections.OrderedDict[str, int] = collections.OrderedDict()  # stem -> bytes
        self.bytes = 0
        found: dict[str, list[float]] = {}
        with os.scandir(folder) as it:
            for e in it:
                m = _SAMPLE_FILE.fullmatch(e.name)
                if m is None or not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
                entry = found.setdefault(m.group(1), [0.0, 0.0])
                entry[0] = max(entry[0], st.st_mtime)
                entry[1] += st.st_size
        for stem, (_, size) in sorted(found.items(), key=lambda kv: (kv[1][0], kv[0])):
            self.add(stem, int(size))

    def add(self, stem: str, size: int) -> None:
        self.bytes += size - self.samples.pop(stem, 0)
        self.samples[stem] = size

    def trim(self, max_samples: int, max_bytes: int) -> int:
        """Remove the oldest samples past the bounds; how many were removed."""
        removed = 0
        while len(self.samples) > 1 and (len(self.samples) > max_samples or self.bytes > max_bytes):
            stem, size = self.samples.popitem(last=False)
            self.bytes -= size
            for ext in _SAMPLE_EXTS:
                with contextlib.suppress(OSError):
                    (self.folder / (stem + ext)).unlink()
            removed += 1
        return removed


def write_targets(cfg: AgentConfig) -> dict[str, list[tuple[str, str, Any]]]:
    """Per opcua source: (config path, node_id, value) of every value the actions may write there."""
    out: dict[str, list[tuple[str, str, Any]]] = collections.defaultdict(list)
    for name, a in cfg.actions.items():
        for source, option, node_id, value in a.write_targets():  # each action type names its own
            out[source].append((f"actions.{name}.{option}", node_id, value))
    return dict(out)


def expect_writes(cfg: AgentConfig, sources: dict[str, Any]) -> None:
    """Tells each source that checks its write targets at connect (OPC UA) what the actions will write there,
    with the note that says a refusal of a value a gateway variable gives (``write_value_note``)."""
    for src_name, targets in write_targets(cfg).items():
        src = sources.get(src_name)
        if src is not None and hasattr(src, "expect_writes"):
            src.expect_writes(
                [(node_id, value, write_value_note(cfg, loc), loc) for loc, node_id, value in targets],
                where=cfg.where,
            )


class ActionRunner:
    def __init__(
        self, cfg: AgentConfig, sources: dict[str, Any], on_event=None, state_dir: Path | None = None
    ) -> None:
        self.cfg = cfg
        self.sources = sources
        self.on_event = on_event or (lambda e: None)
        # <state_dir>/RAISED_FILE: the outputs of the alarms raised now, so that the next runner (a restart,
        # a config reload) clears those of an alarm its config no longer has (removed, renamed, moved to
        # another node), which nothing would ever clear otherwise; read at the first result
        self._raised_file = state_dir / RAISED_FILE if state_dir is not None else None
        self._failing_file = state_dir / FAILING_FILE if state_dir is not None else None
        self._failing_read = False  # FAILING_FILE read (at start() or the first result)
        self._raised_saved: list[dict] | None = None  # what the file holds (None: not read yet)
        self._orphans: list[dict] = []  # outputs raised by an alarm no longer configured, until cleared
        self._carry: list[dict] = []  # outputs recorded for a configured alarm, until its state is known
        self._stop_orphans = asyncio.Event()  # set by flush(): their retries end
        self.preds = {name: compile_condition(a.when) for name, a in cfg.actions.items()}
        # the labels each condition names, and per pipeline the model (name, version) of its last result
        # with the labels it gives: after a hot swap, a label the new model no longer gives is said
        self._named = {n: labels_named(a.when) for n, a in cfg.actions.items() if a.when is not None}
        self._named = {n: v for n, v in self._named.items() if v}
        self._models: dict[str, tuple[str, str, frozenset[str]]] = {}
        # a peer that restarted (a PLC's outputs back at their initial values, a broker without persistence
        # that lost the retained alarms) has what the agent wrote before gone: at the first result after a
        # source reconnects, the state of each on_change output and alarm output on it is sent again
        self._resync: dict[str, list[tuple[str, str]]] = collections.defaultdict(
            list
        )  # source -> (action, output)
        for n, a in cfg.actions.items():
            if isinstance(a, OpcUaWriteAction) and a.mode is WriteMode.ON_CHANGE:
                self._resync[a.source].append((n, "output"))
            elif isinstance(a, AlarmAction):
                if a.publish_to:
                    self._resync[a.publish_to].append((n, "mqtt"))
                if a.node_id and a.opcua_source:
                    self._resync[a.opcua_source].append((n, "opcua"))
        self._reconnects: dict[str, int] = {}  # source -> its reconnect count when last looked at
        # an on_change output (action, pipeline) or an alarm's OPC UA mirror (alarm, pipeline, "opcua") whose
        # level or state its node refused for good (a node locked: BadUserAccessDenied, BadNotWritable) -> its
        # source's ``writable_again`` count for the node before that write: once the source sees the node may
        # be written again, the level or state is written at the next result (``resent``)
        self._refused_levels: dict[tuple[str, ...], int] = {}
        self._last_write: dict[
            tuple[str, str], Result
        ] = {}  # on_change output -> the result of its last level
        self._last_signal: dict[tuple[str, str], Event] = {}  # (alarm, pipeline) -> its last transition
        # the number fields each condition reads: a result with NaN in one is not judged by that condition
        self._numbers = {n: numbers_named(a.when) for n, a in cfg.actions.items()}
        self._numbers_read = tuple(sorted(set().union(*self._numbers.values())))  # by any condition
        # each type's implementation, from its row in ACTION_PLUGINS (a type without one fails here, at start)
        self.impls = {a.type: load_object(ACTION_PLUGINS[a.type][1]) for a in cfg.actions.values()}
        self.stats: dict[str, collections.Counter] = {n: collections.Counter() for n in cfg.actions}
        self.state: dict[str, dict] = {n: {} for n in cfg.actions}  # each action's own state
        self.alarm_state: dict[tuple[str, str], dict] = {}
        self._sample_folders: dict[Path, SampleFolder] = {}  # save_sample's folders (shared by its actions)
        self._burst = BurstLogger(log)
        # per action, the errors a retry cannot fix that were logged since its last success: each is said
        # once (a read-only node under a level output would otherwise log every 30 s for ever), counted always
        self._said: dict[str, set[str]] = {}
        # ... and those said before its last success (at most 8 an action): said again once per burst, not
        # at each refusal after a success (a node that flaps between taking and refusing the value)
        self._said_before: dict[str, set[str]] = {}
        self._pending: set[asyncio.Task] = set()
        # (action, output) -> the episode of its PLC write target refusing its writes (``_write_refused``)
        self._failing: dict[tuple[str, str], dict[str, Any]] = {}
        self.write_recovered_after_s = WRITE_RECOVERED_S
        self._recover_timer: asyncio.TimerHandle | None = None
        self._recover_due: float | None = None  # when the timer looks (monotonic)
        self._in_flight: collections.Counter[str] = collections.Counter()  # per ordinary action
        self._level: dict[tuple[str, str], bool] = {}  # (action, pipeline) -> condition at the last result
        self._pulse_until: dict[tuple[str, str], float] = {}  # monotonic deadline of a pulse that is high
        self._pulse_wake: dict[tuple[str, str], asyncio.Event] = {}  # set when a pulse is ended early (stop)
        # pulses still running whose high value the node refused for its type at the write (``_edge_refused``), or
        # an action on UNSURE wrote over (``written_over``): the next rising edge writes it again, extending the pulse
        self._pulse_refused: set[tuple[str, str]] = set()
        # output nodes of pulse actions that have had a result since start: the first result that is no
        # rising edge writes the reset value, since an agent that died (or was stopped) while a pulse was
        # high may have left the node high
        self._reconciled: set[tuple] = set()
        # keys (an output's or an alarm output's) whose latest value failed all its retries and is tried
        # again every OWED_RETRY_S; flush() (at stop) ends those waits
        self._owing: set[tuple] = set()
        self._closing = False
        # one writer per output: the value still waiting is replaced by a newer one (counted as
        # superseded), so a PLC that is away never builds up a backlog of stale writes
        # (value, result, its order, the action's field it is: ``_set_output``)
        self._desired: dict[tuple[str, str], tuple[Any, Result, int, str]] = {}
        self._writing: dict[
            tuple[str, str], str
        ] = {}  # an output's field being written now (``write_opcua``)
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
        # output node -> the writer (action, pipeline) of its newest value: an on_change output whose node another
        # wrote since its own value writes its value again at its next result, edge or not
        self._node_writer: dict[tuple, tuple[str, str]] = {}
        self._nodes: dict[str, tuple] = {}  # output action -> the node it writes (``_node_of``)
        # (output node, source) -> held by the node's write in flight through that source (``_run``)
        self._node_locks: dict[tuple, asyncio.Lock] = {}
        # output node -> its writes in flight, each (source, order, set once answered): one through another session
        # is not waited for unless newer (``_run``)
        self._flights: dict[tuple, list[tuple[str, int, asyncio.Event]]] = {}
        # the same for an alarm's outputs, per (alarm, pipeline, output): the transition waiting to be
        # signalled, the signallers running, and the event that cuts a retry's backoff short
        self._signals: dict[tuple[str, str, str], Event] = {}
        self._signallers: set[tuple[str, str, str]] = set()
        self._signal_wake: dict[tuple[str, str, str], asyncio.Event] = {}
        # a level / on_change Sparkplug command whose last value did not reach its node (dead, say) is
        # kept and sent again when the node's (or device's) next birth arrives
        self._owed: dict[tuple[str, str], tuple[Any, Result, int, str]] = {}
        self._resend: dict[str, SparkplugCommandAction] = {
            n: a
            for n, a in cfg.actions.items()
            if isinstance(a, SparkplugCommandAction) and a.mode is not WriteMode.PULSE
        }
        for src in {a.source for a in self._resend.values()}:
            listen = getattr(getattr(sources.get(src), "sparkplug", None), "add_birth_listener", None)
            if listen is not None:
                listen(functools.partial(self._born, src))
        # (source, node_id) -> the (action, output) writing it: a target the source's check at connect finds
        # failing (a node that does not exist, a type that refuses the value) is an episode before any write
        self._targets_at: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
        for n, a in cfg.actions.items():
            for output in ("output", "opcua"):
                if (target := _plc_target(a, output)) is not None:
                    self._targets_at[target].append((n, output))
        for src in {source for source, _ in self._targets_at}:
            listen = getattr(sources.get(src), "add_target_listener", None)
            if listen is not None:
                listen(functools.partial(self._target_checked, src))

    async def handle(
        self,
        pipeline_actions: list[str],
        result: Result,
        item: Frame | Window,
        not_met: Collection[str] = (),
        written_over: Collection[str] = (),
    ) -> None:
        """Act on ``result`` with each of ``pipeline_actions``. The outputs of ``not_met`` take their condition as
        false, not asked of it: the pass signals an UNSURE part is handed to (it is not a passed part, whatever its
        score or label), which write what an NG part leaves. The outputs of ``written_over`` are not acted on: an
        action of the result writes their node (a pass left to a divert on UNSURE), so it no longer holds what they
        wrote, and their next result writes its value whatever the edge (an ``on_change`` pass kept its last OK
        part's level and wrote nothing for the next OK part: the PLC read the divert's false for it; a ``pulse`` one
        still high extended its pulse and wrote nothing)."""
        if self._named:
            last = self._models.get(result.pipeline)
            if last is None or last[0] != result.model or last[1] != result.model_version:
                self._model_changed(pipeline_actions, result, last)
        if self._resync:
            self._after_reconnects()
        if self._refused_levels:
            self._after_unlocks(result)
        if self._raised_file is not None and self._raised_saved is None:
            self._clear_orphans()
        if not self._failing_read:
            self._read_failing()
        if self._recover_due is not None and (
            self._recover_timer is None or time.monotonic() >= self._recover_due
        ):
            self._recovered()  # the timer's look, if the loop has not run it yet (or flush() cancelled it)
        nan = _nan_fields(result, self._numbers_read) if self._numbers_read else None
        for name in pipeline_actions:
            action = self.cfg.actions[name]
            if name in written_over:
                key = (name, result.pipeline)
                self._level.pop(key, None)
                # a pulse still high, written over: the next rising edge writes its value again
                if key in self._pulse_until:
                    self._pulse_refused.add(key)
                if name not in not_met:
                    continue
            if name in not_met and isinstance(action, OutputAction):
                self._output(name, action, result, False)
                continue
            if nan and nan & self._numbers[name]:
                # NaN is neither above nor below a threshold: the result is not judged by this condition,
                # like an UNSURE one (an alarm counts it neither way, an output keeps its state)
                self.stats[name]["not_a_number"] += 1
                self._burst.log(
                    f"nan:{name}",
                    "action %r: pipeline %s item %d has no number for %s (NaN); its condition cannot judge "
                    "it: not acted on (counted not_a_number)",
                    name,
                    result.pipeline,
                    result.item_seq,
                    ", ".join(sorted(nan)),
                )
                continue
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

    def start(self) -> None:
        """Once the sources are started: clears the outputs an agent before this one left raised for an
        alarm this config no longer has (RAISED_FILE). Without it, the first result does."""
        if self._raised_file is not None and self._raised_saved is None:
            self._clear_orphans()
        if not self._failing_read:
            self._read_failing()

    def _alarm_targets(self, name: str, action: AlarmAction) -> list[dict]:
        """An alarm's outputs, as RAISED_FILE records them."""
        out = []
        if action.publish_to:
            cfg = self.cfg
            topic = topics.build_topic(cfg.agent.site, cfg.agent.line, cfg.agent.id, topics.Kind.ALARMS, name)
            out.append({"alarm": name, "output": "mqtt", "source": action.publish_to, "target": topic})
        if action.node_id and action.opcua_source:
            out.append(
                {"alarm": name, "output": "opcua", "source": action.opcua_source, "target": action.node_id}
            )
        return out

    def _save_raised(self) -> None:
        """RAISED_FILE: the outputs of the alarms raised now, and the orphans not yet cleared (written
        only when that changes: at a transition, rarely)."""
        if self._raised_file is None:
            return
        raised = {
            json.dumps(t, sort_keys=True): t
            for (name, _pipeline), st in self.alarm_state.items()
            if st["active"]
            for t in self._alarm_targets(name, self.cfg.actions[name])  # type: ignore[arg-type]
        }
        known = {  # outputs whose alarm has signalled its state since start: no longer carried
            (t["output"], t["source"], t["target"])
            for (name, _p), st in self.alarm_state.items()
            if st["known"]
            for t in self._alarm_targets(name, self.cfg.actions[name])  # type: ignore[arg-type]
        }
        self._carry = [t for t in self._carry if (t["output"], t["source"], t["target"]) not in known]
        for t in (*self._orphans, *self._carry):
            raised.setdefault(json.dumps(t, sort_keys=True), t)
        now = sorted(raised.values(), key=lambda t: json.dumps(t, sort_keys=True))
        if now == self._raised_saved:
            return
        try:
            from edge_agent.files import atomic_write_json

            atomic_write_json(self._raised_file, {"raised": now})
            self._raised_saved = now
        except OSError as exc:
            self._burst.log("raised_file", "alarm outputs not recorded in %s: %s", self._raised_file, exc)

    def _clear_orphans(self) -> None:
        """At the first result: the outputs a runner before this one left raised for an alarm this config
        no longer has (RAISED_FILE) are cleared, each tried again every OWED_RETRY_S until it is; an
        output on a source this config no longer has is named in a WARNING (nothing else can clear it)."""
        assert self._raised_file is not None
        from edge_agent.files import read_json_state

        try:  # bounded: the data folder is anyone's with the gateway's shell (a named pipe, a deep nest)
            saved = read_json_state(self._raised_file).get("raised", [])
            saved = [
                t
                for t in saved
                if isinstance(t, dict)
                and all(isinstance(t.get(k), str) for k in ("alarm", "output", "source", "target"))
            ]
        except FileNotFoundError:
            saved = []  # none yet: nothing to clear
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            # emptied or cut short by a power loss, or not one the agent wrote: nothing known to clear, said (an
            # output a removed alarm left raised stays so, and before, nothing named the file)
            from edge_agent.files import why_unread

            why = why_unread(exc) if isinstance(exc, OSError | ValueError) else "not what the agent writes"
            log.warning(
                "%s: unreadable (%s); outputs an earlier run left raised for alarms this config no longer has are "
                "not known and not cleared: check the alarm outputs on their PLC or broker",
                self._raised_file,
                why,
            )
            saved = []
        self._raised_saved = saved
        # what this config writes: an alarm's outputs (whichever alarm: a renamed one may mirror on the same
        # node), and every OPC UA node an action writes; such an output is not cleared here
        ours = {
            (t["output"], t["source"], t["target"])
            for n, a in self.cfg.actions.items()
            if isinstance(a, AlarmAction)
            for t in self._alarm_targets(n, a)
        }
        ours |= {
            ("opcua", src, node) for src, targets in write_targets(self.cfg).items() for _, node, _ in targets
        }
        for t in saved:
            if (t["output"], t["source"], t["target"]) in ours:
                self._carry.append(t)  # a configured output: its alarm's first state is signalled anyway
                continue
            if not hasattr(self.sources.get(t["source"]), "write" if t["output"] == "opcua" else "publish"):
                log.warning(
                    "alarm %s was raised when the agent stopped, and its %s output %s on source %s is not in "
                    "this config (no such %s source): nothing clears it now; clear it by hand",
                    t["alarm"],
                    t["output"],
                    t["target"],
                    t["source"],
                    t["output"],
                )
                continue
            self._orphans.append(t)
            self._spawn(self._clear_orphan(t))
        self._save_raised()

    async def _clear_orphan(self, t: dict) -> None:
        src = self.sources[t["source"]]
        while True:
            try:
                if t["output"] == "opcua":
                    await src.write(t["target"], False)
                else:
                    evt = Event(
                        EventKind.ALARM,
                        alarm=t["alarm"],
                        active=False,
                        pipeline=None,
                        score=None,
                        label=None,
                        anomaly_score=None,
                        remaining_life=None,
                        model_version=None,
                        removed=True,
                    )
                    await src.publish(
                        t["target"],
                        json_codec.dumps(evt.to_json_dict()).encode(),
                        qos=1,
                        retain=True,
                        confirm=True,
                    )
                log.info(
                    "alarm %s is not in this config; its %s output %s, raised when the agent stopped, is cleared",
                    t["alarm"],
                    t["output"],
                    t["target"],
                )
                break
            except Exception as exc:
                if not getattr(exc, "retryable", True):
                    log.warning(
                        "alarm %s's former output %s could not be cleared: %s", t["alarm"], t["target"], exc
                    )
                    break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OWED_RETRY_S):
                    await self._stop_orphans.wait()
            if self._stop_orphans.is_set():
                return  # at stop: still recorded, the next start tries again
        self._orphans.remove(t)
        self._save_raised()

    def _after_reconnects(self) -> None:
        """Sends again the state of the on_change outputs and alarm outputs on a source that has reconnected
        since the last result (counted ``resent``): a PLC that restarted has its outputs back at their
        initial values, a broker without persistence has lost the retained alarm states."""
        for src_name, outputs in self._resync.items():
            n = getattr(getattr(self.sources.get(src_name), "stats", None), "reconnects", None)
            if not isinstance(n, int) or n == self._reconnects.setdefault(src_name, n):
                continue
            self._reconnects[src_name] = n
            for name, output in outputs:
                action = self.cfg.actions[name]
                if output == "output":
                    assert isinstance(action, OpcUaWriteAction)
                    node = self._node_of(name, action)
                    for key, res in list(self._last_write.items()):
                        level = self._level.get(key)
                        value = action.value if level else action.reset
                        # only the writer of the node's newest value (two pipelines on one node: the other's older
                        # value resent after it was what the restarted PLC kept)
                        newest = self._node_writer.get(node, key) == key
                        if key[0] == name and key not in self._desired and value is not None and newest:
                            self.stats[name]["resent"] += 1
                            self._set_output(
                                name, action, res, value, "value" if level else _reset_field(action)
                            )
                    continue
                assert isinstance(action, AlarmAction)
                for (alarm, pipeline), evt in list(self._last_signal.items()):
                    if alarm == name:
                        self._resignal(name, action, (alarm, pipeline, output), evt)

    def _resignal(self, name: str, action: AlarmAction, key3: tuple[str, str, str], evt: Event) -> None:
        """Sends an alarm's last transition to one output again (counted ``resent``), unless a newer one
        waits."""
        if key3 in self._signals:
            return
        self._refused_levels.pop(key3, None)  # this one is sent now
        self.stats[name]["resent"] += 1
        self._signals[key3] = evt
        if key3 not in self._signallers:
            self._signallers.add(key3)
            self._spawn(self._signaller(name, action, key3))

    def _writable_again(self, action: Any) -> int | None:
        """How often the source of an on_change output's node (or an alarm's OPC UA mirror's) saw it become
        writable again (None: it cannot tell)."""
        if isinstance(action, OpcUaWriteAction) and action.mode is WriteMode.ON_CHANGE:
            source, node_id = action.source, action.node_id
        elif isinstance(action, AlarmAction) and action.node_id and action.opcua_source:
            source, node_id = action.opcua_source, action.node_id
        else:
            return None
        counts = getattr(self.sources.get(source), "writable_again", None)
        return counts.get(node_id, 0) if isinstance(counts, dict) else None

    def _after_unlocks(self, result: Result) -> None:
        """Writes again the level of each on_change output, and the state of each alarm's OPC UA mirror, its
        node refused for good (locked) once the node's source has seen it may be written again (counted
        ``resent``): the PLC back from a mode that locked the node reads the current level or alarm state
        (an alarm lamp lit), not the one before the lock, until the next change."""
        for key, before in list(self._refused_levels.items()):
            action = self.cfg.actions[key[0]]
            now = self._writable_again(action)
            if now is None or now <= before:
                continue
            del self._refused_levels[key]
            if len(key) == 3:  # an alarm's mirror: its last transition
                assert isinstance(action, AlarmAction)
                evt = self._last_signal.get((key[0], key[1]))
                if evt is not None:
                    self._resignal(key[0], action, (key[0], key[1], key[2]), evt)
                continue
            assert isinstance(action, OpcUaWriteAction)
            out = (key[0], key[1])
            level = self._level.get(out)
            value = None if level is None else action.value if level else action.reset
            if value is not None and out not in self._desired:
                self.stats[out[0]]["resent"] += 1
                self._set_output(
                    out[0],
                    action,
                    self._last_write.get(out, result),
                    value,
                    "value" if level else _reset_field(action),
                )

    def _model_changed(
        self, pipeline_actions: list[str], result: Result, last: tuple[str, str, frozenset[str]] | None
    ) -> None:
        """A pipeline's first result from another model (a hot swap, a rollback): a label a condition of
        its actions names that the model before gave and this one does not is said (a WARNING, counted
        ``label_gone``), since the condition can no longer match: a reject on ``{label: crack}`` would let
        every cracked part pass without a word. Labels are those of the model's class output."""
        labels = frozenset(result.probabilities)
        self._models[result.pipeline] = (result.model, result.model_version, labels)
        if last is None or not labels:  # at start `validate` checked them against the local package
            return
        for name in pipeline_actions:
            gone = sorted((self._named.get(name, set()) & last[2]) - labels)
            if gone:
                self.stats[name]["label_gone"] += 1
                log.warning(
                    "action %r: pipeline %s now runs model %s %s, which gives no label %s (%s %s did); its "
                    "condition can no longer match them: this model's labels are %s; update the action's "
                    "`when` or roll the model back",
                    name,
                    result.pipeline,
                    result.model,
                    result.model_version,
                    ", ".join(map(repr, gone)),
                    last[0],
                    last[1],
                    ", ".join(sorted(labels)),
                )

    def _landed(self, name: str, _task: asyncio.Task) -> None:
        self._in_flight[name] -= 1

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)
        return t

    def _output(self, name: str, action: OutputAction, result: Result, now: bool | None = None) -> None:
        key = (name, result.pipeline)
        now = self.preds[name](result) if now is None else now
        before = self._level.get(key)
        self._level[key] = now
        reset = action.reset
        if action.mode is WriteMode.LEVEL:
            # level resets only when told to (reset_value): without it, it writes what it always did
            value = action.value if now else action.reset_value
            if value is not None and not (now and self._reset_refused(name, action)):
                self._set_output(name, action, result, value, "value" if now else "reset_value")
        elif action.mode is WriteMode.ON_CHANGE:
            value = action.value if now else reset
            # no edge, but another writer's value on its node (another pipeline's part, an action on UNSURE): the
            # node no longer holds this output's level. Before, it wrote nothing: two cameras' pass on one node, an
            # NG part after the other camera's OK part read as passed
            over = self._node_writer.get(self._node_of(name, action), key) != key
            if (now != before or over) and value is not None:
                if now and self._reset_refused(name, action):
                    self._unjudged(key, before)
                else:
                    self._last_write[key] = result
                    self._set_output(name, action, result, value, "value" if now else _reset_field(action))
        elif now and not before:  # pulse: a rising edge
            if self._reset_refused(name, action):
                self._unjudged(key, before)
                return
            self._reconciled.add(self._node_of(name, action))  # the pulse ends with its reset anyway
            deadline = time.monotonic() + action.pulse_ms / 1000.0
            if key in self._pulse_until:  # still high: extend, the running pulse resets later
                self._pulse_until[key] = deadline
                if key in self._pulse_refused:  # its high value was refused at the write: written now
                    self._pulse_refused.discard(key)
                    self._set_output(name, action, result, action.value)
                return
            self._pulse_until[key] = deadline
            self._spawn(self._pulse(name, action, result, key))
        elif before is None and (node := self._node_of(name, action)) not in self._reconciled:
            # the node's first result since start is no edge: the reset value, once, in case an agent
            # stopped (killed, power lost, a reset that could not be written) while the pulse was high
            self._reconciled.add(node)
            if reset is not None and not any(k in self._pulse_until for k in self._node_keys.get(node, ())):
                self.stats[name]["reconciled"] += 1
                self._set_output(name, action, result, reset, _reset_field(action))

    def _unjudged(self, key: tuple[str, str], before: bool | None) -> None:
        """An edge whose value was not written (``_reset_refused``) is judged again at the next result: the
        node may take the reset by then (a BaseDataType node the PLC made hold another type)."""
        if before is None:
            self._level.pop(key, None)
        else:
            self._level[key] = before

    def _edge_refused(self, action: OutputAction, key: tuple[str, str], value: Any) -> None:
        """An ``on_change`` or ``pulse`` edge's value refused at the write for the node's type (by the source
        before sending, or by the server: BadTypeMismatch), so not written: the edge is judged again at the
        next result, as one refused before the write (``_unjudged``), unless the condition changed since
        (a newer value was decided). An ``on_change`` level is then written at the next result whichever it
        is; a pulse still running writes its value again at the next rising edge and is extended. Nothing
        the node took is written again: a refused value never reached it."""
        level = self._level.get(key)
        if action.mode is WriteMode.ON_CHANGE and level is not None and level == (value == action.value):
            self._level.pop(key, None)
        elif action.mode is WriteMode.PULSE and level and value == action.value:
            self._level[key] = False
            if key in self._pulse_until:
                self._pulse_refused.add(key)

    def _refused_now(self, name: str, action: Any, key: tuple[str, str] | None, value: Any) -> bool:
        """An OPC UA output's ``value`` judged again as it is sent (``_reset_refused``, by the node's type as
        the source knows it now): decided while the PLC was away, or waiting behind a retry, it was judged by
        the type the node held then, and a PLC download with a reconnect may have retyped it (a Double node
        now an Int32, whose reset 0.5 would be refused once 1 was written). True: not written (counted
        ``reset_refused``), the edge judged again at the next result (``_edge_refused``)."""
        if key is None or not isinstance(action, OpcUaWriteAction) or value != action.value:
            return False
        if not self._reset_refused(name, action):
            return False
        self._edge_refused(action, key, value)
        return True

    def _node_lock(self, node: tuple | None, source: str) -> Any:
        """What one write of output node ``node`` through ``source`` holds while it is in flight (``_run``; none for
        another action): one session's writes of a node go one at a time."""
        if node is None:
            return contextlib.nullcontext()
        return self._node_locks.setdefault((node, source), asyncio.Lock())

    def _node_of(self, name: str, action: OutputAction) -> tuple:
        """The PLC output ``name`` writes (``_output_node``), an OPC UA node as its PLC reads it: the PLC by its
        endpoint (``plc_of``: two sources on one endpoint are one) and the node however spelt in one namespace
        (``node_key``: ``ns=2; s=Part`` is ``ns=2;s=Part``). Its writers' values are ordered as one node's: spelt two
        ways, a pass's older ``true`` went out after a divert's newer code and the PLC kept it."""
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = _output_node(name, action, self.cfg.sources)
        return node

    async def _judgeable(self, action: Any, key: tuple[str, str] | None, value: Any) -> None:
        """Before an OPC UA output's ``value`` that needs a reset goes out, its node's type is known to the
        source (``ensure_type``: read now when the check at connect could not read the node), so that
        ``_refused_now`` judges the reset by it: judged by nothing, the value was written, its reset refused
        next, and the node kept the value for good. A node that cannot be read now raises a retryable
        error: the value waits with the action's retries (then ``OWED_RETRY_S``) until it can be judged, or
        a newer value replaces it; it is never written unjudged."""
        if key is None or not isinstance(action, OpcUaWriteAction) or value != action.value:
            return
        if (action.reset_value if action.mode is WriteMode.LEVEL else action.reset) is None:
            return
        ensure = getattr(self.sources.get(action.source), "ensure_type", None)
        if ensure is not None:
            await ensure(action.node_id)

    def _reset_refused(self, name: str, action: OutputAction) -> bool:
        """True (counted ``reset_refused``, logged once per burst) when the output's node would refuse the
        value that ends what ``value`` starts (a pulse's reset, a level's or an on_change's reset_value: out
        of the node's type, as the server described the node at the last connect or write): ``value`` is
        then not written, since the node would keep it for good; an edge so refused is judged again at the
        next result. False when the node takes it or is not known yet. Sources that can tell have
        ``write_misfit(node_id, value)`` (OPC UA; no call to the server on the way)."""
        reset = action.reset_value if action.mode is WriteMode.LEVEL else action.reset
        if reset is None or not isinstance(action, OpcUaWriteAction):
            return False
        misfit = getattr(self.sources.get(action.source), "write_misfit", None)
        # judged as the node will be once ``value`` is written: one holding nothing then holds its type
        why = misfit(action.node_id, reset, after=action.value) if misfit is not None else None
        if why is None:
            return False
        self.stats[name]["reset_refused"] += 1
        shown = config_text(action.value) or repr(action.value)  # 0x7FFF as the file writes it, not 32767
        self._write_refused(
            name,
            action,
            "output",
            f"{shown} not written: {why}; the node would keep it for good",
            action.value,
        )
        field = "reset_value" if action.reset_value is not None else "value (its reset)"
        self._burst.log(
            f"reset:{name}",
            "%s: actions.%s.%s: action %r: %s not written: %s; the node would keep it for good (counted "
            "reset_refused); fix reset_value or the node's type",
            self.cfg.where,
            name,
            field,
            name,
            shown,
            why,
        )
        return True

    async def _pulse(self, name: str, action: OutputAction, result: Result, key) -> None:
        wake = self._pulse_wake[key] = asyncio.Event()  # flush() at stop ends a long pulse early
        try:
            self._set_output(name, action, result, action.value)
            while (left := self._pulse_until[key] - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await wake.wait()
                wake.clear()
        finally:
            self._pulse_until.pop(key, None)
            self._pulse_wake.pop(key, None)
            self._pulse_refused.discard(key)
            if action.reset is not None:
                self._set_output(name, action, result, action.reset, _reset_field(action))

    def _set_output(
        self, name: str, action: OutputAction, result: Result, value: Any, field: str = "value"
    ) -> None:
        """``field``: the action's field ``value`` is (``value``, ``reset_value``, or ``reset``: the reset of a
        boolean ``value`` with no reset_value line), named by a refusal at the write (``_place``)."""
        key = (name, result.pipeline)
        self._refused_levels.pop(key, None)  # this value is the one owed now
        node = self._node_of(name, action)
        if key in self._desired:
            self.stats[name]["superseded"] += 1
        order = self._newest[node] = next(self._order)
        self._node_writer[node] = key
        self._desired[key] = (value, result, order, field)
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
            node = self._node_of(name, action)
            while key in self._desired:  # no await between this check and the discard below: no lost value
                value, result, order, field = self._desired.pop(key)
                wake.clear()
                delivered = await self._run(
                    name, action, result, None, value=value, key=key, order=order, field=field
                )
                if name in self._resend:  # no await from the command's failure to here: no birth missed
                    if delivered or self._newest.get(node, -1) > order:  # a newer value is the one owed
                        self._owed.pop(key, None)
                    else:
                        self._owed[key] = (value, result, order, field)
        finally:
            self._writers.discard(key)

    def _born(self, source: str, group: str, edge_node: str, device: str | None) -> None:
        """A Sparkplug birth: the commands its node (or device) missed while away are sent again."""
        for key, (value, result, order, field) in list(self._owed.items()):
            a = self._resend[key[0]]
            if (a.source, a.group, a.edge_node, a.device) != (source, group, edge_node, device):
                continue
            del self._owed[key]
            # else a newer value (this output's or another writer's for the same metric) is on its way
            if key not in self._desired and self._newest.get(self._node_of(key[0], a), -1) <= order:
                self.stats[key[0]]["resent"] += 1
                self._set_output(key[0], a, result, value, field)

    async def flush(self, timeout_s: float = 10.0) -> None:
        """At stop: waits (at most ``timeout_s``) for what is being acted on. A pulse that would still be
        high past half of that ends now (counted ``cut_at_stop``), so that its reset is written while the
        output's source is still connected; a pulse ending sooner runs its course. Values tried again
        after their retries (``OWED_RETRY_S``) are given up: the next start sets those outputs again."""
        now = time.monotonic()
        deadline = now + timeout_s
        for key, until in list(self._pulse_until.items()):
            if until > now + timeout_s / 2:
                self._pulse_until[key] = now
                self.stats[key[0]]["cut_at_stop"] += 1
                wake = self._pulse_wake.get(key)
                if wake is not None:
                    wake.set()
        self._closing = True
        self._stop_orphans.set()
        try:
            wakes: dict[tuple, asyncio.Event] = {**self._output_wake, **self._signal_wake}
            for key in self._owing:
                if key in wakes:
                    wakes[key].set()
            while (
                self._pending and (left := deadline - time.monotonic()) > 0
            ):  # a pulse ending spawns its reset
                await asyncio.wait(list(self._pending), timeout=left)
        finally:
            self._closing = False
            self._stop_orphans.clear()
            # the write_failing ends due are told now, while the outbox is open; no timer outlives the stop
            # (the next result looks again), and the episodes still open are kept for the next runner
            if self._failing or self._recover_timer is not None:
                self._recovered()
                if self._recover_timer is not None:
                    self._recover_timer.cancel()
                    self._recover_timer = None
                self._save_failing()

    async def _run(
        self,
        name: str,
        action,
        result: Result,
        item,
        value: Any = None,
        key: tuple[str, str] | None = None,
        order: int = 0,
        field: str = "value",
    ) -> bool:
        """Acts with the action's retries; True when done (or queued for the broker). For an output's
        writer (``key``, the value's ``order``), a failed value is not retried once a newer one is decided
        for the same output node (by this writer or another): it is counted ``superseded`` and False
        returned at once, so the PLC never gets the older value after (or instead of) the newer one; a
        newer value arriving during the backoff ends it, and a value older than one already written to
        the node is not sent at all."""
        st = self.stats[name]
        node = self._node_of(name, action) if key is not None else None

        def moot() -> bool:  # a newer value for this output node is decided, or one was written already
            return node is not None and (
                self._newest.get(node, -1) > order or self._written.get(node, -1) > order
            )

        # an output's value is still owed after its retries (OWED_RETRY_S), except a Sparkplug command that
        # is sent again at its node's next birth instead
        owes = key is not None and name not in self._resend
        attempt = 0
        # written, and now written again after older writes through another session were answered
        again = False
        try:
            while True:
                attempt += 1
                if node is not None and self._written.get(node, -1) > order:
                    st["superseded"] += 1  # a newer value reached the node meanwhile: this one never goes out
                    return False
                # the node's unlocks seen so far, taken before the write: one seen while it is refused counts
                unlocks = self._writable_again(action) if key is not None else None
                try:
                    await self._judgeable(action, key, value)
                    if self._refused_now(name, action, key, value):
                        return False
                    if key is not None:
                        self._writing[key] = field
                    source = str(getattr(action, "source", ""))
                    flights = self._flights.setdefault(node, []) if node is not None else []
                    # one session's writes of a node go one at a time
                    lock = self._node_lock(node, source)
                    if node is not None and lock.locked():
                        st["waited_for_node"] += 1  # its answer, up to its timeout
                    async with lock:
                        # a newer value in flight through another session: sent beside it, this older one could
                        # land last. It waits for that write's answer (written: this one is superseded below;
                        # refused or failed: this one is what the node can hold now, as before), and gives up at
                        # once when a value newer than those in flight is decided, so that it holds nothing of its
                        # own session's back behind a stalled session
                        while node is not None and (ahead := [f for f in flights if f[1] > order]):
                            if self._newest.get(node, -1) > max(f[1] for f in ahead):
                                st["superseded"] += 1
                                return False
                            wake = self._output_wake.get(key) if key is not None else None
                            await _first_set([*(f[2] for f in ahead), *([wake] if wake is not None else [])])
                            if wake is not None:
                                wake.clear()
                        if node is not None and self._written.get(node, -1) > order:
                            # a newer value was written while this one waited (for the node's type, or for the
                            # write before it): sent after it, this older one was what the PLC kept (an OK part's
                            # pass after an UNSURE part's divert)
                            st["superseded"] += 1
                            return False
                        # older writes in flight through another session (a stalled one: its PLC connection hung)
                        # are not waited for: this value goes out now, and again once they are answered (two
                        # sessions do not keep the order their writes were sent in: the older could land last).
                        # Waiting held the newer value, a divert included, for up to the stalled write's timeout
                        passed = [f[2] for f in flights if f[0] != source]
                        flight = (source, order, asyncio.Event())
                        flights.append(flight)
                        try:
                            outcome = await self._do(name, action, result, item, value)
                        finally:
                            flights.remove(flight)
                            flight[2].set()
                        if node is not None:
                            self._written[node] = max(self._written.get(node, -1), order)
                    if again:
                        st["written_again"] += 1  # after the writes it passed were answered
                    else:
                        # queued: held until the broker is back; uncertain: a PLC's Uncertain answer to a write
                        st[outcome if outcome in ("queued", UNCERTAIN) else "ok"] += 1
                        if attempt > action.retry.max_attempts:
                            st["resent"] += 1  # after its retries had failed: the peer is back
                    self._said.pop(name, None)  # a later refusal is news again
                    self._write_taken(name, "output", action_value(action, value))
                    # (each bounded by its write's timeout; a newer value decided meanwhile ends the wait: it is
                    # written at once, and waits so itself)
                    while passed and not moot() and (left := [e for e in passed if not e.is_set()]):
                        wake = None if self._closing or key is None else self._output_wake.get(key)
                        await _first_set([*left, *([wake] if wake is not None else [])])
                        if wake is not None and wake.is_set() and not moot():
                            wake.clear()
                    if passed and not moot():  # no newer value decided: this one is what the node must keep
                        again, attempt, passed = True, 0, []
                        continue
                    return True
                except Exception as exc:
                    st["attempt_failures"] += 1
                    if not getattr(exc, "retryable", True):
                        st["failed"] += 1
                        self._cannot(name, exc, self._place(name, action, field, exc))
                        self._write_refused(
                            name,
                            action,
                            "output",
                            str(exc),
                            _refused_what(exc, action_value(action, value)),
                        )
                        if key is not None and getattr(exc, "type_refused", False):
                            self._edge_refused(action, key, value)
                        elif key is not None and unlocks is not None and not moot():
                            self._refused_levels[key] = unlocks  # written once the node is writable again
                        return False
                    if moot():
                        st["superseded"] += 1  # a newer value waits: that one is written, not this one
                        return False
                    owed = attempt >= action.retry.max_attempts
                    if attempt == action.retry.max_attempts:
                        st["failed"] += 1
                        # a PLC target out of retries (busy, not taking writes) is failing too, until a write is
                        # taken; a lost connection is the source's source_down, which stays quiet for short outages
                        if not _connection_lost(exc):
                            self._write_refused(name, action, "output", str(exc), _NODE, attempts=attempt)
                        if not owes or self._closing:
                            self._burst.log(
                                name, "action %r failed after %d attempts: %s", name, attempt, exc
                            )
                            return False
                        self._burst.log(
                            name,
                            "action %r failed after %d attempts: %s; the value is tried again every %g s "
                            "until it is written or a newer one replaces it",
                            name,
                            attempt,
                            exc,
                            OWED_RETRY_S,
                        )
                    elif owed and self._closing:
                        return False
                    if key is None:
                        await asyncio.sleep(action.retry.backoff_s * attempt)
                    else:
                        if owed:
                            self._owing.add(key)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(
                                OWED_RETRY_S if owed else action.retry.backoff_s * attempt
                            ):
                                await self._output_wake[key].wait()  # set by a newer value (or flush)
                        if moot():
                            st["superseded"] += 1
                            return False
                        if owed and self._closing:
                            return False
                    if not owed:
                        st["retried"] += 1
        finally:
            if key is not None:
                self._owing.discard(key)

    def _place(self, name: str, action: Any, field: str, exc: Exception) -> str:
        """Where the config gives what a write refused (``_cannot``): the file and the action's field, as a
        refusal at load or connect names it. The field at fault is the one its raise site gave the error
        (``exc.field``: ``node_id`` for a node the server does not have or lets no one write, ``metric`` or
        ``datatype`` for a Sparkplug metric's type); else the field written (``field``, from the caller:
        ``value``, ``reset_value``, or ``reset``, the reset of a boolean ``value`` with no reset_value line)."""
        at = f"{self.cfg.where}: actions.{name}"
        if not isinstance(action, OpcUaWriteAction | SparkplugCommandAction):
            return at
        target = getattr(exc, "field", None)
        if isinstance(target, str):
            return f"{at}.{target}"
        return f"{at}.value (its reset)" if field == "reset" else f"{at}.{field}"

    def _cannot(self, name: str, exc: Exception, place: str) -> None:
        """An error a retry cannot fix (a read-only node, BadUserAccessDenied, a value the node's type
        refuses): logged once per action and error until the action succeeds again, counted as ``failed``
        every time. Past a few distinct errors (a value that changes with each result), once per burst; so is
        one said before the action's last success (a node whose held type flaps refused the value at every
        other result, and each refusal after a success was said again)."""
        said = self._said.setdefault(name, set())
        msg = str(exc)
        if msg in said:
            return
        if len(said) >= 8:
            self._burst.log(
                name, "%s: action %r failed (not retried: a retry cannot fix it): %s", place, name, exc
            )
            return
        said.add(msg)
        before = self._said_before.setdefault(name, set())
        if msg in before or len(before) >= 8:  # said before a success: a node taking it, then not, in turn
            self._burst.log(
                f"cannot:{name}",
                "%s: action %r failed again after succeeding (not retried: a retry cannot fix it): %s; said once "
                "per burst while it keeps succeeding and failing so, counted (failed) each time",
                place,
                name,
                exc,
            )
            return
        before.add(msg)
        log.warning(
            "%s: action %r failed (not retried: a retry cannot fix it): %s; said once: each further failure "
            "like it is only counted (failed) until the action succeeds",
            place,
            name,
            exc,
        )

    def _target_checked(
        self, source: str, node_id: str, value: Any, why: str | None, whole: bool, at: str | None = None
    ) -> None:
        """A verdict of the source's check of a write target (at connect, and when the node changes): a target
        found failing is an episode from then (``write_failing``, before any write: a node that does not exist,
        is read-only or whose type refuses the value), the same episode at the next connect's check; one whose
        check found only that and now finds it fine ends after the quiet time, as a write taken ends one."""
        if not self._failing_read:
            self._read_failing()
        # the action whose value was checked (``actions.<name>.value``; a name may hold dots)
        checked = at.removeprefix("actions.").rsplit(".", 1)[0] if at and at.startswith("actions.") else None
        for name, output in self._targets_at.get((source, node_id), ()):
            action = self.cfg.actions[name]
            if not whole and repr(value) not in {repr(v) for v in _values_written(action)}:
                continue  # another action's value for the same node
            if not whole and checked is not None and checked != name:
                continue  # the same value of another action on the node: its verdict (its note) is its own
            if why is not None:
                self._write_refused(name, action, output, why, _NODE if whole else value, checked=True)
            else:
                self._check_passed(name, output, value)

    def _check_passed(self, name: str, output: str, value: Any) -> None:
        """The source's check found ``value`` fits the target: an episode only its checks refused (no write was
        refused) ends once nothing it refused is refused still, ``write_recovered_after_s`` after; so does one
        whose writes only ran out of retries (``away``: the PLC busy), the target now answering the check."""
        ep = self._failing.get((name, output))
        if ep is None or ep["taken_at"] is not None or (ep["by_write"] and not ep["away"]):
            return  # none, ending already, or one a write refused: a write taken ends it
        if ep["by_write"] and self._owes(name, output):
            return  # a value still owed (a PLC busy for good passes the check): only that write taken ends it
        ep["checked"].discard("node")
        ep["checked"].discard(repr(value))
        if ep["checked"]:
            return
        ep["node"] = False
        ep["refused"].clear()
        ep["taken_at"] = time.monotonic()
        ep["ended_by"] = "are found fine by the source's check of the node"  # no write may have been made
        self._recovered()

    def _owes(self, name: str, output: str) -> bool:
        """Whether a value for ``name``'s ``output`` failed all its retries and is still tried again."""
        return any(
            k[0] == name and (k[2] == output if len(k) == 3 else output == "output") for k in self._owing
        )

    def _write_refused(
        self,
        name: str,
        action: Any,
        output: str,
        why: str,
        value: Any = None,
        checked: bool = False,
        attempts: int = 0,
    ) -> None:
        """A write to a PLC target (an ``opcua_write`` node, an alarm's OPC UA mirror) refused for a reason a
        retry cannot fix, or not sent since its node would refuse the reset: at the first, the target's episode
        starts and the cloud is told (``write_failing``, active); the later ones are only counted in it, so a
        level output refused at every result sends one event, not one a result. ``value``: the value refused
        (its type is what the node refuses: only that value taken ends it), or ``_NODE`` (a node the PLC does not
        let the agent write: any write taken ends it). ``checked``: found by the source's check of the target (at
        connect), not at a write: not counted in ``failed``. ``attempts``: a write that failed all its retries
        (the PLC away, busy): the value is tried again every ``OWED_RETRY_S``, and any write taken ends it."""
        target = _plc_target(action, output)
        if target is None:
            return
        ep = self._failing.get((name, output))
        if ep is None:
            ep = self._failing[(name, output)] = {
                "since": time.monotonic(),
                "since_wall": time.time(),
                "failed": 0,
                "reason": why,
                "taken_at": None,
                "refused": set(),
                "node": False,
                "checked": set(),  # what the source's checks refused (``_check_passed``)
                "by_write": False,  # a write was refused: only a write taken ends it
                "away": False,  # every write refusal was one out of retries: a check finding it fine ends it
            }
            on = f"action {name!r}: writes to {target[1]} on source {target[0]}"
            if checked:
                said = f"{on} will be refused (found by the source's check of the node)"
            elif attempts:
                again = (
                    "sent again at the edge node's next birth"
                    if name in self._resend
                    else f"tried again every {OWED_RETRY_S:g} s until taken"
                )
                said = f"{on} failed after {attempts} attempts; {again}"
            else:
                said = f"{on} are refused and not retried (a retry cannot fix it)"
            self.on_event(
                Event(
                    EventKind.WRITE_FAILING,
                    action=name,
                    source=target[0],
                    node_id=target[1],
                    active=True,
                    reason=why,
                    failed=0 if checked else 1,
                    failing_s=None,
                    message=f"{said}: the PLC does not get this output until "
                    + ("it answers" if attempts else "the node or the config is fixed"),
                )
            )
            self._save_failing()
        if checked:
            ep["checked"].add("node" if value is _NODE else repr(value))
        else:
            ep["failed"] += 1
            ep["away"] = bool(attempts) and (ep["away"] or not ep["by_write"])
            ep["by_write"] = True
        ep["reason"] = why
        ep["taken_at"] = None  # still refusing: the end waits for a quiet stretch after a write it takes
        if value is _NODE:
            ep["node"] = True
        else:
            ep["refused"].add(repr(value))

    def _write_taken(self, name: str, output: str, value: Any) -> None:
        """A write its PLC target took: a refusing target's episode ends once the node has taken a write (a
        node refused whole) and each value it refused, and none is refused for ``write_recovered_after_s``
        after (``_recovered``, at a result or by a timer). A reset taken while the action's value is still
        refused ends nothing."""
        ep = self._failing.get((name, output))
        if ep is None or ep["taken_at"] is not None:
            return
        ep["node"] = False
        ep["refused"].discard(repr(value))
        if ep["refused"]:
            return
        ep["taken_at"] = time.monotonic()
        ep["ended_by"] = "are taken again"
        self._recovered()

    def _recovered(self) -> None:
        """Ends (``write_failing``, active false) each episode whose target took its writes and refused none
        for ``write_recovered_after_s`` since; the next due one is looked at again by a timer."""
        now = time.monotonic()
        due: float | None = None
        ended = False
        for (name, output), ep in list(self._failing.items()):
            taken = ep["taken_at"]
            if taken is None:
                continue
            if now - taken < self.write_recovered_after_s:
                at = taken + self.write_recovered_after_s
                due = at if due is None else min(due, at)
                continue
            del self._failing[(name, output)]
            ended = True
            target = _plc_target(self.cfg.actions[name], output)
            if target is None:
                continue
            failing_s = round(taken - ep["since"], 3) if ep["since"] is not None else None
            self._tell_end(name, target, ep, failing_s, ep.get("ended_by", "are taken again"))
        if ended:
            self._save_failing()
        if due == self._recover_due and self._recover_timer is not None:
            return  # already looked for then (a result at 100 Hz does not set a timer each)
        if self._recover_timer is not None:
            self._recover_timer.cancel()
            self._recover_timer = None
        self._recover_due = due
        if due is not None:
            with contextlib.suppress(RuntimeError):  # no loop running: the next result looks
                self._recover_timer = asyncio.get_running_loop().call_later(
                    max(due - now, 0.0) + 0.01, self._recovered
                )

    def _tell_end(
        self, name: str, target: tuple[str, str], ep: dict, failing_s: float | None, what: str
    ) -> None:
        after = f"after {ep['failed']} refused" + (f" over {failing_s:g} s" if failing_s is not None else "")
        self.on_event(
            Event(
                EventKind.WRITE_FAILING,
                action=name,
                source=target[0],
                node_id=target[1],
                active=False,
                reason=ep["reason"],
                failed=ep["failed"],
                failing_s=failing_s,
                message=f"action {name!r}: writes to {target[1]} on source {target[0]} {what}, {after}",
            )
        )

    def _save_failing(self) -> None:
        """FAILING_FILE: the episodes told and not ended (written at a start, an end and flush(): rarely)."""
        if self._failing_file is None:
            return
        open_eps = []
        for (name, output), ep in self._failing.items():
            target = _plc_target(self.cfg.actions[name], output)
            if target is None:
                continue
            open_eps.append(
                {
                    "action": name,
                    "output": output,
                    "source": target[0],
                    "node_id": target[1],
                    "reason": ep["reason"],
                    "failed": ep["failed"],
                    "since": ep["since_wall"],
                    "refused": sorted(ep["refused"]),
                    "node": ep["node"],
                    "checked": sorted(ep["checked"]),
                    "by_write": ep["by_write"],
                    "away": ep["away"],
                }
            )
        try:
            from edge_agent.files import atomic_write_json

            atomic_write_json(self._failing_file, {"failing": open_eps})
        except OSError as exc:
            self._burst.log(
                "failing_file", "write_failing episodes not recorded in %s: %s", self._failing_file, exc
            )

    def _read_failing(self) -> None:
        """At start (or the first result): the episodes an earlier runner told and did not end (FAILING_FILE).
        One whose target this config still writes goes on here (a refusal is the same episode, no second
        start; its end once the target takes its writes); a refused value the config no longer writes is not
        waited for (the fix of a value the node cannot hold is a config change). One whose action or target is
        gone is ended at once (``failing_s`` null)."""
        self._failing_read = True
        if self._failing_file is None:
            return
        from edge_agent.files import read_json_state

        try:
            saved = read_json_state(self._failing_file).get("failing", [])
            saved = [e for e in saved if isinstance(e, dict)]
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning(
                "%s: unreadable (%s); the ends of write_failing episodes an earlier run told are not known",
                self._failing_file,
                exc,
            )
            return
        now, wall = time.monotonic(), time.time()
        for e in saved:
            try:
                name, output = str(e["action"]), str(e["output"])
                target = (str(e["source"]), str(e["node_id"]))
                since_wall = float(e["since"])
                ep: dict[str, Any] = {
                    "since": now - (wall - since_wall) if wall >= since_wall else None,
                    "since_wall": since_wall,
                    "failed": int(e["failed"]),
                    "reason": str(e["reason"]),
                    "taken_at": None,
                    "refused": {str(r) for r in e.get("refused", [])},
                    "node": bool(e.get("node", False)),
                    "checked": {str(r) for r in e.get("checked", [])},
                    "by_write": bool(e.get("by_write", True)),  # a former release's: found at a write
                    "away": bool(e.get("away", False)),
                }
            except (KeyError, TypeError, ValueError):
                continue
            action = self.cfg.actions.get(name)
            if action is None or _plc_target(action, output) != target:
                self._tell_end(name, target, ep, None, "are no longer made (not in the config)")
                continue
            ep["refused"] &= {repr(v) for v in _values_written(action)}
            ep["checked"] &= {"node", *ep["refused"]}
            if ep["away"]:
                # its writes only ran out of retries, and the value owed was given up at stop: nothing is owed
                # now, so nothing would end it but the action's next write (days for a rare alarm)
                if not ep["checked"]:
                    self._tell_end(
                        name,
                        target,
                        ep,
                        None,
                        "are owed no longer (the value not taken was given up at stop)",
                    )
                    continue
                ep["by_write"] = ep["away"] = (
                    False  # what the checks refuse stays: a check finding it fine ends it
                )
                ep["refused"] = {r for r in ep["refused"] if r in ep["checked"]}
                ep["node"] = "node" in ep["checked"]
            self._failing[(name, output)] = ep
        self._save_failing()

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
                # not known since start: the alarm's outputs may still show a raise from before a
                # restart, so the first state established (raised, or cleared) is signalled either way
                "known": False,
            },
        )
        if self.preds[name](result):
            st["hits"] += 1
            st["misses"] = 0
            if not st["active"] and st["hits"] >= action.raise_after:
                st["active"], st["since"], st["known"] = True, time.time(), True
                self._alarm_changed(name, action, result, True)
        else:
            st["misses"] += 1
            st["hits"] = 0
            if st["misses"] >= action.clear_after and (st["active"] or not st["known"]):
                initial = not st["known"]
                st["active"], st["since"], st["known"] = False, time.time(), True
                self._alarm_changed(name, action, result, False, initial)

    def _alarm_changed(
        self, name: str, action: AlarmAction, result: Result, active: bool, initial: bool = False
    ) -> None:
        """A transition: its event, and each output's signal. ``initial``: the first clear since start, of
        an alarm not raised since: signalled to its outputs (a retained raise or a mirror left True by the
        agent before a restart is cleared), counted ``reconciled``, logged at INFO; its event carries
        ``initial: true``."""
        if initial:
            self.stats[name]["reconciled"] += 1
            log.info(
                "alarm %s on pipeline %s: clear since start; its outputs are set to cleared",
                name,
                result.pipeline,
            )
            extra = {"initial": True}
        else:
            self.stats[name]["raised" if active else "cleared"] += 1
            extra = {}
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
            **extra,
        )
        if not initial:
            log.warning(
                "alarm %s %s on pipeline %s (score %s)",
                name,
                "RAISED" if active else "cleared",
                result.pipeline,
                result.score_text,
            )
        self.on_event(evt)
        self._last_signal[(name, result.pipeline)] = evt
        self._save_raised()
        for output in _alarm_outputs(action):
            key = (name, result.pipeline, output)
            self._refused_levels.pop(key, None)  # this transition is the one owed now
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
                attempt = 0
                while True:  # after its retries, tried again every OWED_RETRY_S (module docstring)
                    attempt += 1
                    owed = attempt >= action.retry.max_attempts
                    # the mirror node's unlocks seen so far, taken before the write (as an output's, ``_run``)
                    unlocks = self._writable_again(action) if key[2] == "opcua" else None
                    try:
                        await self.impls[action.type](self, name, action, evt, key[2])
                        if attempt > action.retry.max_attempts:
                            st["resent"] += 1
                        self._write_taken(name, key[2], evt["active"])
                        break
                    except Exception as exc:
                        if not getattr(exc, "retryable", True):
                            st["failed"] += 1
                            self._burst.log(name, "alarm %r: could not signal (%s)", name, exc)
                            self._write_refused(
                                name,
                                action,
                                key[2],
                                str(exc),
                                _refused_what(exc, evt["active"]),
                            )
                            if (
                                unlocks is not None
                                and not getattr(exc, "type_refused", False)
                                and key not in self._signals
                            ):
                                # a locked mirror: its state is written once the node is writable again
                                self._refused_levels[key] = unlocks
                            break
                        if key in self._signals:
                            st["superseded"] += 1  # a newer transition waits: send that, not this
                            break
                        if attempt == action.retry.max_attempts:
                            st["failed"] += 1
                            if not _connection_lost(exc):
                                self._write_refused(name, action, key[2], str(exc), _NODE, attempts=attempt)
                            self._burst.log(
                                name,
                                "alarm %r: could not signal (%s); tried again every %g s until it is",
                                name,
                                exc,
                                OWED_RETRY_S,
                            )
                        if owed and self._closing:
                            break
                    if owed:
                        self._owing.add(key)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(
                            OWED_RETRY_S if owed else action.retry.backoff_s * attempt
                        ):
                            await wake.wait()  # set by a newer transition (or flush, at stop)
                    if key in self._signals:
                        st["superseded"] += 1
                        break
                    if owed and self._closing:
                        break
                self._owing.discard(key)
        finally:
            self._signallers.discard(key)
            self._owing.discard(key)

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
        topic,
        json_codec.dumps(result.to_json_dict()).encode(),
        qos=action.qos,
        retain=action.retain,
        confirm=True,  # MQTT 5: a result the broker refused (its ACL) is failed, not counted ok
    )


async def write_opcua(
    ctx: ActionRunner, name: str, action: OpcUaWriteAction, result: Result, item, value: Any = None
) -> str | None:
    # the place written (value, or the reset): a refusal is said with its own note, not another action's on the node
    field = ctx._writing.get((name, result.pipeline), "value")
    field = "reset_value" if field == "reset" else field
    said = await ctx.sources[action.source].write(
        action.node_id, action.value if value is None else value, at=f"actions.{name}.{field}"
    )
    if said:  # the PLC took it with an Uncertain status: written (never sent again), but counted and said
        ctx._burst.log(f"uncertain:{name}", "action %r: %s", name, said)
        return UNCERTAIN
    return None


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
    kept = ctx._sample_folders.get(folder)
    if kept is None:
        kept = ctx._sample_folders[folder] = SampleFolder(folder)
    # the UTC time in the name: an item's seq starts again at each start of the agent, and a name of the
    # pipeline, seq and verdict alone was written over by the next run's sample of the same seq
    stamp = datetime.datetime.fromtimestamp(time.time(), datetime.UTC).strftime("%Y%m%dT%H%M%S%f")[:-3] + "Z"
    stem = f"{result.pipeline}-{stamp}-{result.item_seq:08d}-{result.verdict}"
    if isinstance(item, Frame):
        import cv2

        data = folder / f"{stem}.png"
        # encoded here and written by Python: cv2.imwrite failed a full disk with False and libpng's own
        # "libpng error: Write Error" on stderr, a line per sample past the log's once per burst (a journal on
        # the same full disk), and the cause unsaid
        ok, png = cv2.imencode(".png", item.image)
        if not ok:
            raise OSError(f"sample {data} not written: the frame cannot be encoded as PNG")
        try:
            data.write_bytes(png.tobytes())
        except OSError as exc:
            _unlink_quietly(data)
            raise OSError(exc.errno, f"sample {data} not written ({exc.strerror or exc})") from exc
    else:
        data = folder / f"{stem}.npy"
        try:
            np.save(data, item.waveform.astype(np.float32))
        except OSError as exc:
            _unlink_quietly(data)
            raise OSError(exc.errno, f"sample {data} not written ({exc.strerror or exc})") from exc
    meta = folder / f"{stem}.json"
    try:
        meta.write_text(json_codec.dumps(result.to_json_dict()))
    except OSError as exc:
        _unlink_quietly(meta, data)
        raise OSError(exc.errno, f"sample {meta} not written ({exc.strerror or exc})") from exc
    kept.add(stem, data.stat().st_size + meta.stat().st_size)
    removed = kept.trim(action.max_samples, action.max_bytes)
    if removed:
        ctx.stats[name]["removed"] += removed


def _unlink_quietly(*paths: Path) -> None:
    """A failed sample's files removed, best effort: a read-only disk refuses the unlink too (EROFS, even for a
    file never made), which raised in place of the failure saying which sample was not written and why."""
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)


async def _first_set(events: list[asyncio.Event]) -> None:
    """Returns once one of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _nan_fields(result: Result, fields: tuple[str, ...]) -> set[str] | None:
    """Those of the number ``fields`` of ``result`` that hold NaN (None when none does: the usual case)."""
    out = None
    for f in fields:
        v = getattr(result, f, None)
        if v is not None and v != v:
            out = out or set()
            out.add(f)
    return out


def _output_node(name: str, action: OutputAction, sources: dict | None = None) -> tuple:
    """The PLC output an output action writes: its OPC UA node or Sparkplug metric (another output type:
    its own). With the config's ``sources``, an OPC UA node is keyed as its PLC reads it (``ActionRunner._node_of``)."""
    if isinstance(action, OpcUaWriteAction):
        if sources is not None:
            from devices.opcua.settings import node_key, plc_of

            src = sources.get(action.source)
            plc = plc_of(src.endpoint) if src is not None and src.type == "opcua" else action.source
            return ("opcua", plc, node_key(action.node_id))
        return ("opcua", action.source, action.node_id)
    if isinstance(action, SparkplugCommandAction):
        return ("sparkplug", action.source, action.group, action.edge_node, action.device, action.metric)
    return ("action", name)


# a refusal of the node itself (not writable, access denied), not of one value: any write it takes ends it
_NODE = object()


# the refusals of the node itself, whatever the value: any write it then takes ends the episode
_NODE_REFUSALS = (
    "BadNotWritable",
    "BadUserAccessDenied",
    "BadWriteNotSupported",
    "BadNodeId",
    "does not exist on the server",
)


def _reset_field(action: Any) -> str:
    """The field of an output's reset: ``reset_value`` when the config has one, else ``reset`` (the opposite
    of a boolean ``value``)."""
    return "reset_value" if getattr(action, "reset_value", None) is not None else "reset"


def _refused_what(exc: Exception, value: Any) -> Any:
    """What a refusal refuses: the node (``_NODE``: not writable, access denied, unknown) or ``value`` (a type
    or range it cannot hold: only that value taken again ends the episode)."""
    if getattr(exc, "type_refused", False):
        return value
    return _NODE if any(n in str(exc) for n in _NODE_REFUSALS) else value


def action_value(action: Any, value: Any) -> Any:
    """The value an output's write sent: the one given, else the action's ``value``."""
    return getattr(action, "value", None) if value is None else value


def _values_written(action: Any) -> list[Any]:
    """The values an action may write to its PLC target (an alarm's mirror: its states)."""
    if isinstance(action, AlarmAction):
        return [True, False]
    return [getattr(action, f, None) for f in ("value", "reset_value", "reset")]


def _connection_lost(exc: BaseException) -> bool:
    """Whether a write failed because the source is not connected (or lost its connection on the way), not
    because the target refused or could not take it now (a timeout is neither: a PLC whose session is up but
    that never answers writes is failing); such a failure is the source's ``source_down`` (quiet
    for outages shorter than ``source_down_after_s``, flapping folded), never a write target's episode."""
    return bool(getattr(exc, "connection_lost", False)) or isinstance(exc, ConnectionError)


def _plc_target(action: Any, output: str) -> tuple[str, str] | None:
    """(source, node_id) of the PLC node an action's output writes: an ``opcua_write`` action's node, an alarm's
    OPC UA mirror, a ``sparkplug_command``'s metric (its node_id ``group/edge_node[/device]/metric``); None for
    the others (a broker: no PLC target of theirs is written)."""
    if isinstance(action, OpcUaWriteAction) and output == "output":
        return action.source, action.node_id
    if isinstance(action, SparkplugCommandAction) and output == "output":
        return action.source, action.target
    if isinstance(action, AlarmAction) and output == "opcua" and action.node_id and action.opcua_source:
        return action.opcua_source, action.node_id
    return None


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
            topic, json_codec.dumps(evt.to_json_dict()).encode(), qos=1, retain=True, confirm=True
        )
    if action.node_id and action.opcua_source and output in (None, "opcua"):
        said = await ctx.sources[action.opcua_source].write(action.node_id, evt["active"])
        if said:  # the PLC took it with an Uncertain status: written, but said
            ctx._burst.log(f"uncertain:{name}", "alarm %r: %s", name, said)
