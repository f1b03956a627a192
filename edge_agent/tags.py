"""Tags without a model: forwarding readings as they are, and rules on plain tags.

``Forwarder`` (config ``forward:``) sends the readings of chosen tags (all scalar tags by default;
arrays only when named) to an MQTT broker as JSON, one message per reading, under
``factory/<site>/<line>/<agent>/tags/<name>`` by default, and/or to the cloud outbox as ``telemetry``
records (not a reading its source marks ``transient``, a Sparkplug metric flagged ``is_transient``, not to be
historized: published only, marked so). A ``deadband`` skips a number that moved less than it since the last
forwarded value (a boolean or text is forwarded when it changes), ``min_interval_ms`` forwards at most one reading per
tag that often (the skipped ones are counted; the latest value is not held back for later). A change of
quality (a tag going BAD with its last value, and back) passes both. Sending
is bounded: at most ``MAX_PENDING`` messages and ``MAX_PENDING_BYTES`` wait for the broker (those the MQTT client
holds for its return, QoS 1, counted in the bytes), the oldest is dropped (counted).

``Rule`` (config ``rules:``) scales one tag (``value * scale + offset``; a whole number unscaled is kept whole,
so an Int64 counter past 2**53 is compared exactly) and compares it with
``above`` / ``below`` with hysteresis: active once past the threshold, cleared only when back past
it by ``hysteresis``: by the band of the threshold that tripped it (a rule with both is raised by one
side and released by that side alone; config refuses bands that overlap). Every reading gives a
``Result`` (verdict ``NG`` while active, ``OK`` otherwise; score = the scaled value; label = the tag;
model ``rule``) handed to the rule's actions, so alarms, PLC writes (with their level / on_change /
pulse modes) and publishing work as for a model.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import sys
import time
from typing import Any

import numpy as np

from devices.base import BurstLogger, Quality, Reading
from edge_agent.config import ForwardSettings, RuleSettings, band_edge
from edge_agent.types import Result
from protocols import json_codec

log = logging.getLogger(__name__)

MAX_TAGS = 100_000  # tags whose last forwarded value is kept (deadband, rate limit)
MAX_PENDING = 1000
# the bytes of the messages a forward holds for a broker that is away: in its own queue, and handed to the MQTT
# client that holds a QoS 1 message until the broker is back (counted, not weighed, there: 10,000 of them); the
# oldest is dropped past it (a 2 MB ByteString forwarded 18 times a second held 880 MB after 20 s)
MAX_PENDING_BYTES = 64 * 1024 * 1024


class Forwarder:
    def __init__(self, settings: ForwardSettings, topic: str, publish, outbox_append, connected=None) -> None:
        self.s = settings
        self.topic = settings.topic or topic
        self._publish = publish  # async (topic, bytes, qos) or None
        self._outbox_append = outbox_append  # (kind, dict) or None
        self._connected = connected  # () -> whether the broker is connected (None: not known)
        self._bytes = 0  # of the messages in the queue
        self._handed = 0  # of the messages the MQTT client holds for the broker's return ("queued")
        self._tags = set(settings.tags)
        # tag -> (value forwarded, monotonic time, its quality)
        self._last: dict[str, tuple[Any, float, Quality]] = {}
        self._queue: collections.deque = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._burst = BurstLogger(log)
        self.stats: collections.Counter = collections.Counter()

    def start(self) -> None:
        if self._publish is not None:
            self._task = asyncio.create_task(self._sender(), name=f"forward-{self.s.name}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._task is None:
            return
        deadline = time.monotonic() + timeout_s
        while self._queue and time.monotonic() < deadline:  # what is queued goes out first (bounded)
            await asyncio.sleep(0.02)
        self._task.cancel()

    def offer(self, r: Reading) -> None:
        if self._tags:
            if r.tag not in self._tags:
                return
        elif isinstance(r.value, np.ndarray | list):
            return  # waveforms only when named: a 2048-sample array per update is not telemetry
        v = r.value
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        now = time.monotonic()
        last = self._last.get(r.tag)
        # a change of quality is news however little or soon the value moved: a gateway's record or a Sparkplug
        # node's death makes the tag BAD with its last value, and the consumer must learn it (held back by the
        # rate limit, a death seen once would never be sent: the latest value is not kept for later)
        if last is not None:
            if last[2] is r.quality:
                if self.s.min_interval_ms and (now - last[1]) * 1000 < self.s.min_interval_ms:
                    self.stats["rate_limited"] += 1
                    return
                if self.s.deadband and not _moved(last[0], v, self.s.deadband):
                    self.stats["deadband"] += 1
                    return
        elif len(self._last) >= MAX_TAGS:  # bounded: tag names come from outside (a counter in a topic)
            self._last.clear()
            self.stats["tag_state_reset"] += 1
            self._burst.log(
                "tags",
                "forward %s: over %d tag names; deadband and rate state start afresh",
                self.s.name,
                MAX_TAGS,
            )
        self._last[r.tag] = (v, now, r.quality)
        body = {"source": r.source, "tag": r.tag, "value": v, "ts": r.timestamp, "quality": r.quality.value}
        if r.reason is not None:  # why not GOOD: the server's status code name, or the source's own reason
            body["reason"] = r.reason
        if r.source_ts is not None:  # ts moved later than the source's own time (after a BAD the source made)
            body["source_ts"] = r.source_ts
        self.stats["forwarded"] += 1
        if r.transient:
            # its device says not to historize it (a Sparkplug metric's is_transient): a live value, published
            # (marked so, for a historian downstream to leave out), never stored as a record for the cloud
            body["transient"] = True
            if self._outbox_append is not None:
                self.stats["transient_not_stored"] += 1
        elif self._outbox_append is not None:
            try:
                self._outbox_append("telemetry", body)
            except Exception as exc:  # the outbox reports its own failures
                self.stats["outbox_failed"] += 1
                self._burst.log("outbox", "forward %s: not queued for the cloud: %s", self.s.name, exc)
        if self._publish is not None:
            payload = json_codec.dumps(body, separators=(",", ":")).encode()
            self._queue.append(payload)
            self._bytes += len(payload)
            # bounded in messages and in bytes (with what the MQTT client holds of ours); the newest is kept
            while len(self._queue) > MAX_PENDING or (
                len(self._queue) > 1 and self._bytes + self._handed > MAX_PENDING_BYTES
            ):
                self._bytes -= len(self._queue.popleft())
                self.stats["dropped"] += 1
            self._wake.set()

    async def _sender(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self._handed and self._connected is not None:
                if self._connected():  # the client sends what it held: ours no longer wait
                    self._handed = 0
                elif self._handed + len(self._queue[0]) > MAX_PENDING_BYTES:
                    await asyncio.sleep(0.2)  # it holds enough of ours for the broker's return
                    continue
            payload = self._queue[0]
            try:
                outcome = await self._publish(self.topic, payload, qos=self.s.qos)
                self.stats["queued" if outcome == "queued" else "sent"] += 1
                self._handed = self._handed + len(payload) if outcome == "queued" else 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats["failed"] += 1
                self._burst.log(
                    "publish", "forward %s: not published to %s: %s", self.s.name, self.topic, exc
                )
                await asyncio.sleep(0.5)  # the broker is away: try the next one a little later
            if self._queue and self._queue[0] is payload:
                self._bytes -= len(self._queue.popleft())

    def status(self) -> dict:
        return {
            "name": self.s.name,
            "source": self.s.source,
            "topic": self.topic if self._publish else None,
            "outbox": self.s.outbox,
            "pending": len(self._queue),
            "pending_bytes": self._bytes + self._handed,
            **dict(self.stats),
        }


def _moved(old: Any, new: Any, deadband: float) -> bool:
    if (
        isinstance(old, bool)
        or isinstance(new, bool)
        or not isinstance(old, int | float)
        or not isinstance(new, int | float)
    ):
        return old != new
    return abs(new - old) > deadband or (math.isnan(new) != math.isnan(old))


def _judged(v: Any) -> bool:
    """A value a rule compares: a finite number, not a truth value; an integer within float64's range (past it,
    it has no scaled value, and math.isfinite raised OverflowError on it)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return -sys.float_info.max <= v <= sys.float_info.max if isinstance(v, int) else math.isfinite(v)


class Rule:
    def __init__(self, settings: RuleSettings, act) -> None:
        self.s = settings
        self._act = act  # async (action names, Result, None)
        self.active = False
        self.side: str | None = None  # "above" or "below": the threshold that tripped the active rule
        self.value: int | float | None = None
        self.since: float | None = None
        self.seq = 0
        self.ignored = 0  # readings that are not a number (or past float64's range) or not GOOD
        self._exact = settings.scale == 1 and settings.offset == 0  # an integer reading compared as it is
        above, below, band = settings.above, settings.below, settings.hysteresis
        self._above_release = None if above is None else band_edge(above, -band)
        self._below_release = None if below is None else band_edge(below, band)

    async def offer(self, r: Reading) -> None:
        if r.tag != self.s.tag:
            return
        raw = r.value
        if r.quality is not Quality.GOOD or not _judged(raw):
            self.ignored += 1
            return
        s = self.s
        # a whole number unscaled is compared as it is: an Int64/UInt64 counter past 2**53 lost its last digits as
        # a float64 (9007199254740993 read as 9007199254740992, not above 9007199254740992); Python compares an
        # int with an int or a float exactly
        v: int | float = int(raw) if self._exact and isinstance(raw, int) else float(raw) * s.scale + s.offset
        self.value = v
        # an active rule is released only by the band of the threshold that tripped it: with above 20,
        # below 10 and hysteresis 2, a rule raised by 25 clears at 18, not at 12 (below's band)
        held = False
        if self.side == "above" and self._above_release is not None:
            held = v > self._above_release
        elif self.side == "below" and self._below_release is not None:
            held = v < self._below_release
        if not held:  # released (or never active): the thresholds themselves decide, either side
            if s.above is not None and v > s.above:
                self.side = "above"
            elif s.below is not None and v < s.below:
                self.side = "below"
            else:
                self.side = None
        hit = self.side is not None
        if hit != self.active:
            self.active, self.since = hit, time.time()
        res = Result(
            pipeline=s.name,
            source=r.source,
            item_seq=self.seq,
            captured_at=r.timestamp,
            model="rule",
            model_version="",
            engine="rule",
            verdict="NG" if self.active else "OK",
            score=v,
            label=s.tag,
            finished_at=time.time(),
        )
        self.seq += 1
        if s.actions:
            await self._act(s.actions, res, None)

    def status(self) -> dict:
        return {
            "name": self.s.name,
            "source": self.s.source,
            "tag": self.s.tag,
            "active": self.active,
            "side": self.side,  # the threshold that tripped it: "above", "below" or None
            "value": self.value,
            "since": self.since,
            "readings": self.seq,
            "ignored": self.ignored,
        }
