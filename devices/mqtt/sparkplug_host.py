"""Sparkplug B host-application logic: births, data, deaths, sequence checks, rebirth requests.

Keeps, per edge node (group, edge_node), the bdSeq and alias table of its last NBIRTH (aliases
are unique across the node and its devices, as the specification requires) and the last seq
(0..255, wrapping; a gap is counted as ``seq_gap`` and the data is still used). NDATA/DDATA
metrics are resolved by alias or name; an unknown alias, or data before any birth, is counted
(``unknown_alias``; ``data_before_birth``, which is normal after the host starts and so counted apart,
not as an error), skipped, and answered by an NCMD
``Node Control/Rebirth`` = true (at most once per ``rebirth_min_interval_s`` per node).
NDEATH (with the birth's bdSeq) and DDEATH emit, for every tag of the node or device that had a
value, a ``Reading`` with the last value and ``Quality.BAD``; a later birth brings GOOD values
back. Tags are named ``{edge_node}/{device}/{metric}`` (``{edge_node}/{metric}`` for node
metrics) unless ``tag_map`` renames them. ``bdSeq`` and ``Node Control/*`` metrics are not tags.
Limits: DataSet, Template and null metrics are skipped; STATE, NCMD and DCMD are ignored.
Not thread-safe: call ``handle`` from one thread (the adapter uses its asyncio loop).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devices.base import Quality, Reading
from devices.mqtt.settings import SparkplugHostSettings
from protocols import sparkplug as sp

Publish = Callable[[str, bytes], None]
OnError = Callable[[str, str], None]


@dataclass
class _Node:
    bd_seq: int | None = None
    seq: int | None = None
    alive: bool = False
    aliases: dict[int, tuple[str | None, str]] = field(default_factory=dict)  # alias -> (device, metric)
    last: dict[tuple[str | None, str], tuple[Any, float]] = field(
        default_factory=dict
    )  # (device, metric) -> value, ts
    types: dict[tuple[str | None, str], int] = field(
        default_factory=dict
    )  # (device, metric) -> datatype from births
    last_rebirth: float = -math.inf


class SparkplugHost:
    def __init__(
        self, source: str, settings: SparkplugHostSettings, publish: Publish, on_error: OnError
    ) -> None:
        self._source = source
        self._settings = settings
        self._publish = publish
        self._on_error = on_error
        self._nodes: dict[tuple[str, str], _Node] = {}
        self.rebirths_requested = 0
        self.births = 0
        self.deaths = 0
        self.data_before_birth = (
            0  # normal after a host restart: counted, answered by a rebirth, not an error
        )
        self.on_notice: Callable[..., None] | None = None  # (key, message): a silent drop, said once
        self._tag_map_checked: set[str] = set()

    def node_alive(self, group: str, edge_node: str) -> bool:
        n = self._nodes.get((group, edge_node))
        return bool(n and n.alive)

    def _tag(self, node: str, device: str | None, metric: str) -> str:
        name = f"{node}/{device}/{metric}" if device else f"{node}/{metric}"
        return self._settings.tag_map.get(name, name)

    def _rebirth(self, group: str, edge_node: str, node: _Node) -> None:
        if not self._settings.rebirth_on_unknown:
            return
        now = time.monotonic()
        if now - node.last_rebirth < self._settings.rebirth_min_interval_s:
            return
        node.last_rebirth = now
        self.rebirths_requested += 1
        self._publish(*sp.rebirth_request(group, edge_node))

    def handle(self, topic: str, data: bytes, received_at: float) -> list[Reading]:
        """Readings from one Sparkplug message; raises ``CodecError`` for a bad topic or payload."""
        t = sp.parse_topic(topic)
        if t.message_type in (sp.MessageType.STATE, sp.MessageType.NCMD, sp.MessageType.DCMD):
            return []
        payload = sp.decode(data)
        key = (t.group, t.edge_node)
        node = self._nodes.setdefault(key, _Node())
        mt = t.message_type
        if mt is sp.MessageType.NBIRTH:
            node.alive, node.aliases, node.seq = True, {}, payload.seq
            node.bd_seq = next((m.value for m in payload.metrics if m.name == sp.BDSEQ_METRIC), None)
            self.births += 1
            self._check_tag_map(t, None, payload)
            for m in payload.metrics:
                if m.name:
                    node.types[(None, m.name)] = m.datatype
                if m.alias is not None and m.name:
                    node.aliases[m.alias] = (None, m.name)
            return self._readings(t, node, None, payload, received_at, by_birth=True)
        if mt is sp.MessageType.NDEATH:
            bd = next((m.value for m in payload.metrics if m.name == sp.BDSEQ_METRIC), None)
            if bd is not None and node.bd_seq is not None and bd != node.bd_seq:
                return []  # a stale will from an older session: the node has already re-born
            node.alive = False
            self.deaths += 1
            return self._bad(t.edge_node, node, lambda dev: True, received_at)
        if not node.alive:
            self.data_before_birth += 1
            if self.on_notice is not None:
                self.on_notice(
                    "data_before_birth",
                    f"sparkplug: {mt.value} from {t.group}/{t.edge_node} before its "
                    "NBIRTH (normal after this host starts); rebirth requested, data skipped until then",
                )
            else:
                self._on_error(
                    "data_before_birth", f"{mt.value} from {t.group}/{t.edge_node} before its NBIRTH"
                )
            self._rebirth(t.group, t.edge_node, node)
            return []
        self._check_seq(t, node, payload.seq)
        if mt is sp.MessageType.DBIRTH:
            self.births += 1
            self._check_tag_map(t, t.device, payload)
            for m in payload.metrics:
                if m.name:
                    node.types[(t.device, m.name)] = m.datatype
                if m.alias is not None and m.name:
                    node.aliases[m.alias] = (t.device, m.name)
            return self._readings(t, node, t.device, payload, received_at, by_birth=True)
        if mt is sp.MessageType.DDEATH:
            self.deaths += 1
            return self._bad(t.edge_node, node, lambda dev: dev == t.device, received_at)
        return self._readings(t, node, t.device, payload, received_at, by_birth=False)

    def datatype(self, group: str, edge_node: str, device: str | None, metric: str) -> int | None:
        """The metric's datatype as the node's (or device's) last birth declared it."""
        n = self._nodes.get((group, edge_node))
        return n.types.get((device, metric)) if n else None

    def _check_tag_map(self, t: sp.SparkplugTopic, device: str | None, payload: sp.Payload) -> None:
        """A tag_map key that names no metric renames nothing, silently; the common slip is to start
        it with the Sparkplug group. Said once per key, when a birth shows what the node offers."""
        if not self._settings.tag_map or self.on_notice is None:
            return
        names = {
            f"{t.edge_node}/{device}/{m.name}" if device else f"{t.edge_node}/{m.name}"
            for m in payload.metrics
            if m.name
        }
        for key in self._settings.tag_map:
            if key in self._tag_map_checked or key in names:
                continue
            if key.startswith(t.group + "/") and key[len(t.group) + 1 :] in names:
                self._tag_map_checked.add(key)
                self.on_notice(
                    f"tag_map:{key}",
                    f"sparkplug tag_map key {key!r} starts with the group {t.group!r}, "
                    f"so it matches no metric and renames nothing; keys are '{{edge_node}}/{{device}}/"
                    f"{{metric}}': write {key[len(t.group) + 1 :]!r}",
                )

    def _check_seq(self, t: sp.SparkplugTopic, node: _Node, seq: int | None) -> None:
        if seq is None:
            return
        if node.seq is not None and seq != sp.next_seq(node.seq):
            self._on_error("seq_gap", f"{t.group}/{t.edge_node}: seq {seq} after {node.seq}")
        node.seq = seq

    def _readings(
        self,
        t: sp.SparkplugTopic,
        node: _Node,
        device: str | None,
        payload: sp.Payload,
        received_at: float,
        *,
        by_birth: bool,
    ) -> list[Reading]:
        out: list[Reading] = []
        unknown = False
        default_ts = payload.timestamp_ms / 1000.0 if payload.timestamp_ms is not None else received_at
        for m in payload.metrics:
            name = m.name
            dev = device
            if not name:
                entry = node.aliases.get(m.alias) if m.alias is not None else None
                if entry is None:
                    unknown = True
                    self._on_error(
                        "unknown_alias", f"{t.group}/{t.edge_node}: alias {m.alias} not in its birth"
                    )
                    continue
                dev, name = entry
            if name == sp.BDSEQ_METRIC or name.startswith("Node Control/") or m.value is None or m.is_null:
                continue
            v = m.value
            if (
                not m.datatype and type(v) is int
            ):  # no datatype in a data message: the birth's says how to read it
                declared = node.types.get((dev, name))
                if declared:
                    v = sp.as_declared(v, declared)
            if isinstance(v, float) and not math.isfinite(v):
                self._on_error("non_finite", f"{t.group}/{t.edge_node}/{dev or ''}: metric {name!r} is {v}")
                continue
            if isinstance(v, bytes):
                continue
            ts = m.timestamp_ms / 1000.0 if m.timestamp_ms is not None else default_ts
            node.last[(dev, name)] = (v, ts)
            out.append(Reading(self._source, self._tag(t.edge_node, dev, name), v, ts, received_at))
        if unknown:
            self._rebirth(t.group, t.edge_node, node)
        return out

    def _bad(
        self, edge_node: str, node: _Node, which: Callable[[str | None], bool], received_at: float
    ) -> list[Reading]:
        return [
            Reading(self._source, self._tag(edge_node, dev, name), v, received_at, received_at, Quality.BAD)
            for (dev, name), (v, _) in node.last.items()
            if which(dev)
        ]
