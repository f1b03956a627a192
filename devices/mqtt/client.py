"""MqttSource: the MQTT device adapter (paho-mqtt 2.x), JSON and Sparkplug B subscriptions.

paho runs its own network thread (``loop_start``). ``on_message`` only stamps the receive
time and hands ``(topic, payload, received_at, retained)`` to the bounded ``_BatchChannel`` (when full, the
oldest message of the topic holding the most is dropped, counted by topic; taken in batches shared out among
the topics); decoding happens in the asyncio loop inside ``items()``, which keeps
the network thread light (measured in ``bench/mqtt_bench.py``), but for a JSON message of over 64 KiB, decoded in a
worker thread and made readings a chunk at a time (``MqttSource._decoded``): parsed on the loop, 100,000 values held
it 0.5-1.3 s. Subscriptions are (re)made
in ``on_connect`` after every connect, so a broker restart is survived.

Connecting: the first connect is attempted by the adapter itself (in an executor, with
``Backoff``) so that a refused port or a TLS failure is reported with its real cause
(``stats.last_error``, one log line per burst) and the state goes BACKOFF; once connected,
paho's own reconnect (``reconnect_delay_set``) takes over after a drop.

Bad input is counted in ``stats.errors_by_reason`` and skipped: ``malformed_json``,
``wrong_type``, ``missing_field``, ``non_finite``, ``bad_timestamp``, ``duplicate_key``, ``too_many_values``,
``unknown_state`` (under ``json_mapping.states``, a text that is no state: a mapped field's or record's, unless
``unknown_state: text``, or a payload that is text alone), ``garbage_protobuf``, ``too_many_metrics``,
``bad_topic`` (also a delivered topic name that is not
UTF-8 or holds ``+``, ``#`` or NUL), ``unknown_alias``, ``seq_gap``, ``out_of_order``
(a reading older than its tag's last one; dropped unless ``out_of_order: keep``), ``too_large``
(a message over ``max_message_bytes``, skipped before it is queued; a compressed Sparkplug payload
inflating past it), ``bad_compression`` (a compressed Sparkplug payload that does not inflate),
``inflate_budget`` (a compressed NDATA or DDATA while its edge node's ``sparkplug.max_inflated_bytes_per_s``,
or the source's total of 4 times it, is spent: not inflated; a compressed birth while its node's births budget,
as large, or theirs together is spent: not inflated, its node stale; deaths always are),
``broker_unreachable``, ``tls_failed``, ``connect_refused``, ``publish_failed``, ``publish_refused`` (MQTT 5:
a PUBACK with a failure reason, e.g. 0x87 from the broker's ACL; ``MqttPublishRefused``),
``publish_lost`` (QoS 1 messages still held at a stop: queued while the broker was away or refused the
connection, or not acknowledged in time; said once with their number, counted once per message), ``publish_too_large`` (over the Maximum Packet Size of the broker's CONNACK; ``MqttTooLarge``),
``publish_dropped`` (a QoS 1 message at which the broker closed the connection ``POISON_DROPS`` times in a
row: taken out of paho's queue instead of sent after every reconnect). A JSON message's bad
field (null, missing, an array holding text) or record is counted and skipped; its other fields or
records are read. A NaN or infinite value (JSON or Sparkplug; an array holding one) is counted as
``non_finite`` and, under ``non_finite: bad`` (the default, as the OPC UA source), passed on as a BAD
reading of its tag; under ``skip`` it is dropped like the others.
Routine or silent events go to ``notices`` instead (one WARNING on the first, then counted, shown
on ``/status``): ``no_numeric_field`` (a JSON message, read for every numeric field, that gave no reading:
numbers sent as text, say), ``time_field_unread`` (a topic's first message without its ``timestamp_field``,
whose readings got the receive time, holds a field named and valued like a time: the setting to read it),
``records_field_unread`` (a topic's first records message whose records hold no ``records.quality`` or
``records.timestamp`` key but one named like it: every record was read GOOD or at the message's time),
``text_field_unread`` (read for every number, a field whose text gave no reading: each one counted; the
source's first such message said in one line, its fields and the setting that reads the likeliest value,
``json_codec.text_fields_hint``), ``nested_field_unread`` (likewise a field holding an object or an array, which
only a path in ``values`` reads: ``json_codec.nested_fields_hint``), ``event_unread`` (an OPC Publisher sample carrying an OPC UA event: skipped),
``data_before_birth`` (normal after the host starts; a rebirth is asked),
``historical`` (Sparkplug values a node sent late, not used), ``retained`` and
``retained_skipped`` (a retained message, the broker's stored value of unknown age: quality
uncertain or not read, by the subscription's ``retained``), ``retained_fresh`` (one whose own timestamp
is within ``retained_max_age_s`` of its receive time: taken as live), ``retained_birth`` (a retained
Sparkplug birth: commands to its node wait for a live message from it, a rebirth is asked) and a
Sparkplug ``tag_map`` key that matches no metric because it starts with the group, and ``redelivered`` (a
QoS 1 message the broker sent again after a reconnect, flagged DUP, that was passed on before: not passed on
twice, ``_Redeliveries``) and ``overlapping_copy`` (MQTT 5: a broker's copy of a message for a later
subscription that matches it too; each subscription has its own Subscription Identifier, and only the
first matching one's copy is read), ``retain_unavailable`` and ``publish_qos_downgraded`` (MQTT 5: the
broker's CONNACK says it keeps no retained messages, or takes QoS 0 only: messages go without the flag or
at QoS 0 instead of costing the connection), ``session_taken_over`` (connections lost right after their
CONNACK, in a row, or reason 0x8E: another client with this client_id; the reconnect delay grows),
``dropped_after_connect`` (the same with a random client_id), ``empty_message`` (a JSON topic's message
of 0 bytes: a client deleting its retained message, which the broker passes on, or an empty message; nothing
read, no ``malformed_json``), ``left_at_stop`` (QoS 1 messages of a persistent
session that came while the source stopped: not handed on nor acknowledged, the broker delivers them at the next
start; ``_Unacked``) and ``dropped_at_stop`` (the same without a persistent session, or at QoS 0: lost, counted
in ``stats.dropped`` too).
Limits: one broker per source; QoS 2 is not offered; over MQTT 3.1.1 a publish the broker refuses (ACL) is
acknowledged and dropped, which the protocol cannot tell.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import heapq
import json
import logging
import math
import operator
import select
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import (
    QUALITY_BY_NAME,
    Backoff,
    BurstLogger,
    Channel,
    ConnectionState,
    DeviceError,
    DeviceStats,
    Notices,
    Quality,
    Reading,
    valid_text,
)
from devices.mqtt import sparkplug_host
from devices.mqtt.settings import CodecKind, MqttSettings, Protocol, Subscription
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import json_codec
from protocols import sparkplug as sp
from protocols.redact import escaped
from protocols.topics import shown_topic

log = logging.getLogger(__name__)
MAX_TAGS = 100_000  # tag names whose last time is kept for the order check (a few MB); topics routed the same
# a topic or tag name counts as one more of those per NAME_UNIT characters it holds: MQTT allows topics of 65,535
# bytes (Mosquitto takes them), and 100,000 such names, made up by a client of a shared broker, held gigabytes
NAME_UNIT = 256
# a tag name's key path (a JSON key, a record's name) or the topic naming it: longer is not read, as a Sparkplug
# metric name is not (a 3 MB key became a tag, and a 3 MB record per reading sent to the fleet)
MAX_NAME_CHARS = sp.MAX_ID_CHARS
# A reading stamped before this (2001-09-09) comes from a clock that was never set: a device without NTP or a
# battery-backed clock counts from 1970 at power-on (Tasmota before its first sync, an ESP's uptime). No
# device's buffer holds data that old, so while this gateway's own clock is past it, the receive time is used
CLOCK_SET_S = 1e9
RETAINED_AHEAD_S = 1.0  # a retained reading stamped further ahead of the receive time has an unknown age
# a device clock set back from fast (NTP stepping it): a reading older than its tag's last one while that one is
# still this far ahead of the receive time, and this one is not, is the device's clock set right, not a reading
# out of order (``_stepped_back``)
CLOCK_STEP_S = 1.0
# ... when it is stamped near the receive time (at most CLOCK_STEP_NEAR_S behind it: a clock set right stamps about
# now; a buffer's values or a message re-sent minutes late are no step), and at most CLOCK_STEPS_HELD times per tag
# in CLOCK_STEP_HOLD_S: a tag whose times keep going back is two devices on one topic, or a buffer sent between live
# values. Twice, not once: readings stamped by the fast clock before the step that come after it (the rest of a
# batch sent across the step, put in time order after its newer readings) move the tag ahead once more, and a step
# held then dropped the device's readings until its clock caught up; one at or before a fast time already passed (a
# message re-sent from before the step) is dropped (``_out_of_order``), not passed again
CLOCK_STEP_NEAR_S = 30.0
CLOCK_STEP_HOLD_S = 600.0
CLOCK_STEPS_HELD = 2


def _wall_offset() -> float:
    """This gateway's wall clock less its monotonic clock: it moves only when the wall clock is stepped (NTP
    setting it, an admin), by as much (``_out_of_order``)."""
    return time.time() - time.monotonic()


# a JSON device whose times run a steady while behind this gateway's clock (it writes its local time without a
# zone west of UTC, read in json_mapping.timezone; or its clock is set wrong): its readings were stamped hours in
# the past, unsaid (an older time stands: a buffer sent after an outage). Said once (``clock_behind``) when a
# topic's first reading of a message lags the receive time by CLOCK_BEHIND_S or more, steady within
# CLOCK_BEHIND_JITTER_S, for CLOCK_BEHIND_STEADY_S of receive time (a buffer's lag falls as it is sent); the
# times are kept. At most MAX_LAG_TOPICS topics are watched at once
CLOCK_BEHIND_S = 600.0
CLOCK_BEHIND_JITTER_S = 5.0
CLOCK_BEHIND_STEADY_S = 60.0
MAX_LAG_TOPICS = 10_000

__all__ = [
    "MqttBadTopic",
    "MqttError",
    "MqttPublishRefused",
    "MqttSource",
    "MqttTooLarge",
    "SparkplugTypeMismatch",
]

# PUBACK reason codes (MQTT 5) of a refusal that a retry cannot mend: 0x83 implementation specific (a
# broker plugin's refusal), 0x87 not authorized (an ACL), 0x90 topic name invalid, 0x99 payload format
# invalid. Others (0x80 unspecified, 0x97 quota exceeded) may pass later and are retried.
_PUBACK_FINAL = frozenset({0x83, 0x87, 0x90, 0x99})
# what to do about a SUBACK refusal by its MQTT 5 reason code; any other (0x80, 0x83, 0x87 Not authorized,
# MQTT 3.1.1's 0x80) is the broker's ACL
_SUBACK_FIX = {
    0x8F: "the broker takes no such topic filter (its syntax, or its own limits on length, levels or a "
    "leading '$'): check the filter against the broker's rules",
    0x97: "the broker's quota for this client is used up (its subscriptions per connection, or its rate): "
    "subscribe to fewer filters (one with a wildcard for several topics) or raise the broker's limit",
    0x9E: "this broker does not take shared subscriptions ('$share/...'): subscribe unshared (the filter "
    "without '$share/{group}/'), each gateway then reading every message",
    0xA1: "the broker does not take the Subscription Identifiers this source sends with more than one "
    "subscription under MQTT 5 (its CONNACK did not say so): set protocol mqtt311, or list one subscription",
    0xA2: "the broker does not take wildcards ('+', '#') here (AWS IoT Core with some policies): name each "
    "topic in full, one subscription each",
}
# connections lost this soon after their CONNACK, this many times in a row: another client takes the
# session over (the same client_id), or the broker drops the connection for a message it refuses
SHORT_SESSION_S = 5.0
SHORT_SESSIONS = 3
# a QoS 1 message left unacknowledged by this many such drops in a row is taken as the cause (_poison)
POISON_DROPS = 3
# MQTT 5: how long publish() awaits a QoS 1 message's PUBACK before it answers "queued" (paho holds the
# message and sends it again after a reconnect; a refusal that comes later is counted publish_refused):
# a connection that died without paho knowing yet (up to 1.5 keepalives) must not hold every action's
# task that long
PUBACK_WAIT_S = 2.0
# a PINGREQ unanswered (and nothing else received) for this share of the keepalive means a dead path: paho
# itself waits a whole keepalive for the PINGRESP, which it sends only after a keepalive of silence, so a
# path that died without a FIN or RST (a NAT or firewall that dropped the flow, a switch rebooting) was
# noticed after up to 2 keepalives (60 s at the default 30); now within 1.5, as the broker notices us
PINGRESP_WAIT = 0.5
PING_CHECK_S = 0.5  # how often the source looks at paho's last PINGREQ
# struct tcp_info (Linux >= 4.1): tcpi_bytes_acked, a u64 at this offset
_TCPI_BYTES_ACKED = 120
# stop(): the share of its timeout given to the messages still queued (QoS 1 awaiting PUBACKs, paho holding
# all but its 20 in flight; QoS 0 not yet written) to go out while connected; and the least time, after the
# DISCONNECT, given to the broker to close its end (else the rest of the timeout): a socket closed with unread
# bytes from the broker makes the kernel send a TCP RST, which throws away what was not yet sent, DISCONNECT
# included, and the broker then sees a network error and publishes the will
STOP_DRAIN_SHARE = 0.6
STOP_CLOSE_S = 1.0
STOP_POLL_S = 0.01


def _bytes_acked(sock: object) -> int | None:
    """The bytes the peer has acknowledged on a TCP socket (the kernel's count, TLS records included); None
    where the kernel does not say (not Linux, an older kernel, no socket at the moment)."""
    opt = getattr(socket, "TCP_INFO", None)
    getsockopt = getattr(sock, "getsockopt", None)
    if opt is None or getsockopt is None:
        return None
    try:
        info = getsockopt(socket.IPPROTO_TCP, opt, _TCPI_BYTES_ACKED + 8)
    except (OSError, ValueError):  # closed meanwhile
        return None
    if len(info) < _TCPI_BYTES_ACKED + 8:
        return None
    acked: int = struct.unpack_from("Q", info, _TCPI_BYTES_ACKED)[0]
    return acked


class MqttError(DeviceError):
    """An MQTT operation that failed (publish refused, not started)."""

    retryable = True


class SparkplugTypeMismatch(MqttError):
    """A command value refused for the metric's type. ``field``: the command's config field at fault
    (``metric``: the birth gives it a type this host cannot write; ``datatype``: the action's, which the birth
    contradicts); None: the value."""

    retryable = False

    def __init__(self, msg: str, field: str | None = None) -> None:
        super().__init__(msg)
        self.field = field


class MqttPublishRefused(MqttError):
    """MQTT 5: the broker answered a QoS 1 message's PUBACK with a failure reason (0x87 Not authorized: its
    ACL; 0x97 Quota exceeded): the message was not delivered. ``retryable`` by the reason."""

    def __init__(self, msg: str, reason: int) -> None:
        super().__init__(msg)
        self.reason = reason
        self.retryable = reason not in _PUBACK_FINAL


class MqttTooLarge(MqttError):
    """A message over the broker's Maximum Packet Size (MQTT 5 CONNACK): the broker would drop the
    connection, and paho would send it again after each reconnect. A retry cannot mend it."""

    retryable = False


class MqttBadTopic(MqttError):
    """A topic no message may be published to: a retry cannot mend it."""

    retryable = False


def _sparkplug_value(dt: sp.DataType, value: Any, where: str) -> Any:
    """Strict conversion to a Sparkplug datatype (``sparkplug_host.command_value``); a value that does not
    fit raises ``SparkplugTypeMismatch`` (not retryable)."""
    try:
        return sparkplug_host.command_value(dt, value, where)
    except ValueError as e:
        raise SparkplugTypeMismatch(str(e)) from None


class _Redeliveries:
    """QoS 1 messages a broker delivers again. With a persistent session, a message whose PUBACK did not
    reach the broker before the connection dropped (a switch restarted, a cable) is sent again after the
    reconnect, flagged DUP, under the same packet id; passed on twice, a part counter or an event was
    counted twice. The last ``SIZE`` QoS 1 messages are kept as packet id -> (topic, fingerprint of the
    payload): a DUP message matching the last message under its id is the same message and is dropped. A
    message without DUP (one the broker queued while this gateway was away, or a repeated value) is never
    dropped, nor is a DUP message under an id last used for another topic or payload (the first delivery
    was lost on the way). Brokers give packet ids in turn (Mosquitto, EMQX: the next of 65,535), so the id
    of a message among the last ``SIZE`` is not yet given again; the payload is fingerprinted by its hash
    (up to 1 KiB; past that its length, first and last 512 bytes): about 1 µs a message on paho's thread,
    only with ``persistent_session`` and a QoS 1 subscription. Not kept across restarts of the agent: a
    message redelivered to a new process is passed on."""

    SIZE = 4096  # more than a broker keeps in flight to one client (Mosquitto 20, EMQX 32 by default)

    def __init__(self) -> None:
        # by packet id (1..65535): (topic, fingerprint, the message's number); no eviction to pay for
        self._slots: list[tuple[str, int, int] | None] = [None] * 65536
        self._n = 0

    def repeated(self, mid: int, topic: str, payload: bytes, dup: bool) -> bool:
        """Whether this message (paho's thread) is one passed on already; records it otherwise."""
        size = len(payload)
        fp = hash(payload) if size <= 1024 else hash((size, payload[:512], payload[-512:]))
        slot = mid & 0xFFFF
        if dup:
            seen = self._slots[slot]
            if seen is not None and seen[1] == fp and seen[0] == topic and self._n - seen[2] <= self.SIZE:
                return True
        self._n += 1
        self._slots[slot] = (topic, fp, self._n)
        return False


class _Unacked:
    """The QoS 1 messages received and not yet acknowledged, in the order they came (paho's ``manual_ack``:
    with ``persistent_session`` and a QoS 1 subscription). paho acknowledged each message as it arrived, so
    one that came while the agent stopped (its readers gone, the source still connected) was acknowledged and
    dropped: the broker, which would have kept it for the next start, had forgotten it. Now a message is
    acknowledged once taken: its last reading handed to the consumer (``items``), or skipped for a counted
    reason (malformed, too large, a copy, dropped from the full queue: acknowledged all the same, else the
    broker would send it again at every start); one never taken stays with the broker.

    MQTT 3.1.1 and 5 both ask a client to send its PUBACKs in the order the messages came ([MQTT-4.6.0-2]):
    a message is acknowledged once every earlier one is taken too (``flush``), and at ``stop()`` every taken
    one is (``flush(final=True)``; one behind a message left with the broker would come again otherwise). A
    cell is ``[packet id, taken, connection]``. Acknowledged only while connected: paho drops what it holds
    at a reconnect (an acknowledgement queued before the new CONNECT would break the protocol), and the broker
    sends the messages of the lost acknowledgements again (DUP: ``_Redeliveries`` drops them, acknowledged).

    A packet id means a message only within its session (``connected``). When the broker kept the session,
    it sends every message not acknowledged again, DUP, under its id: one taken while away is acknowledged on
    the new connection, and its DUP copy, which may come before that PUBACK reaches the broker, is not
    acknowledged a second time (``redelivered``; the broker may have given the freed id to a newer message,
    which that PUBACK would acknowledge before it is taken). When the broker has no session for this client
    any more (restarted without persistence, session expired, failed over), it forgot those messages and
    gives their ids to new ones from 1: they are not acknowledged at all (each such PUBACK would acknowledge
    a new message that is not yet taken, lost if the agent then stops).

    paho says it is connected from the moment it has read a CONNACK, before ``on_connect`` runs: from a new
    connection's start (``connecting``) until its CONNACK is taken in (``connected``) nothing is acknowledged.
    A consumer's flush in between sent the old connection's acknowledgements on the new one as if on the old:
    not noted as acknowledged late, so the DUP copy that follows was acknowledged again (kept session), or not
    dropped, so each acknowledged a new message under its id (lost session)."""

    def __init__(self, client: paho.Client) -> None:
        self._client = client
        self._cells: collections.deque[list] = collections.deque()
        self._lock = threading.Lock()
        self._connection = 0  # connections so far (paho's thread)
        self._late: set[int] = set()  # ids acknowledged on this connection for an earlier one's message
        self._between = False  # a connection begun whose CONNACK is not yet taken in (``connecting``)

    def add(self, mid: int, taken: bool = False) -> list:
        cell = [mid, taken, self._connection]
        self._cells.append(cell)  # paho's thread only; the loop's flush pops from the other end
        if taken:
            self.flush()
        return cell

    def connecting(self) -> None:
        """paho begins a connection (``on_pre_connect``, before its socket is made): nothing is acknowledged
        until its CONNACK is taken in (``connected``)."""
        with self._lock:
            self._between = True

    def connected(self, again: bool, session_present: bool) -> None:
        """A connection's CONNACK (paho's thread, in ``on_connect``, before any message of it); ``again``: one
        after the first. Then what was taken while away is acknowledged."""
        with self._lock:
            if again:
                self._connection += 1
                self._late.clear()
                # the broker forgot them: none acknowledged (counted if not handed on)
                if not session_present:
                    for cell in self._cells:
                        cell[1] = True
                    self._cells.clear()
            self._between = False
        self.flush()

    def pending(self, mid: int) -> bool:
        """A message under this packet id waits for its acknowledgement (its DUP copy needs none of its own)."""
        with self._lock:
            return any(c[0] == mid for c in self._cells)

    def redelivered(self, mid: int) -> None:
        """A DUP copy of a message passed on before (paho's thread): acknowledged, unless its first copy's
        acknowledgement is still to come, or went on this connection (the broker has it, or will). Judged under
        one hold of the lock: the consumer's flush of the first copy, which moves it from waiting to late, comes
        before or after, never between (found neither, the copy was acknowledged as well)."""
        with self._lock:
            if mid in self._late:
                self._late.discard(mid)
                return
            if any(c[0] == mid for c in self._cells):
                return
        self.add(mid, True)  # its first copy's acknowledgement went on a connection that is gone

    def flush(self, final: bool = False) -> None:
        c = self._client
        with self._lock:
            if self._between or not c.is_connected():
                return
            cells, connection = self._cells, self._connection
            if not final:
                while cells and cells[0][1]:
                    cell = cells.popleft()
                    c.ack(cell[0], 1)
                    if cell[2] != connection:  # its DUP copy may still come: not acknowledged again
                        self._late.add(cell[0])
                return
            for _ in range(len(cells)):  # at stop: every taken one; the others stay with the broker
                cell = cells.popleft()
                if cell[1]:
                    c.ack(cell[0], 1)
                else:
                    cells.append(cell)

    def __len__(self) -> int:
        return len(self._cells)


SP_PREFIX = sp.NAMESPACE + "/"
_ARRIVAL = operator.itemgetter(4)
_PAYLOAD = operator.itemgetter(1)
# messages a hand-over gives the consumer at most (get_many): about the most a new message waits behind
TAKE_MAX = 256
# the loop given back (``items``) once this long has passed since it last was by the source, between two messages:
# the consumer gives it back between readings only (edge_agent's every 64 or 5 ms), and a flood of messages giving
# none (data of never-born nodes, births refused, garbage) held it for the flood's whole length while the consumer
# was behind (20,000 never-born nodes' NDATA at QoS 0: 5.8 s; every OPC UA session, heartbeat and rule stalled)
YIELD_AFTER_S = 0.005
# a JSON message of more bytes could hold more keys, or objects and arrays, than are parsed: counted first
_SCAN_BYTES = min(json_codec.MAX_KEYS, json_codec.MAX_CONTAINERS)
# a JSON message of more bytes is decoded in a worker thread (``MqttSource._decoded``): 64 KiB parse and walk in
# about 2-5 ms on a loaded gateway, a hop to the thread and back costs some 0.1 ms
_WORKER_BYTES = 64 * 1024
# ... in this one thread, shared by every MQTT source of the process (JSON and Sparkplug): one large message is
# decoded at a time, so memory is bounded by one message's decoding. In the loop's default pool (asyncio.to_thread)
# six sources each decoding an 8-MiB array at once peaked 683 MB (one: 185 MB), and took every thread of the pool
# the uplink's outbox reads and acks, model installs, paho's connect and stop()'s loop_stop use: a no-op there
# waited up to 30.4 s. Made on first use (``_decode_pool``)
_DECODE_POOL: list[concurrent.futures.ThreadPoolExecutor] = []
_DECODE_POOL_LOCK = threading.Lock()


def _decode_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread large MQTT messages are decoded in (``MqttSource._decoded``)."""
    if not _DECODE_POOL:
        with _DECODE_POOL_LOCK:
            if not _DECODE_POOL:
                _DECODE_POOL.append(
                    concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-decode")
                )
    return _DECODE_POOL[0]


# names a duplicate_key line of names that differ only by text that is not valid Unicode says (then a count)
CLASH_NAMES_SHOWN = 3
# the payload of a mark (``_BatchChannel.mark_threadsafe``): this source's connection to the broker was lost there
_LOST = object()


def _lane(topic: str) -> Any:
    """The consumer's lane of a topic: a Sparkplug edge node's messages (its births, data and deaths, and its
    devices') share one, as their seq runs across them and a birth must come before the data that follows it;
    any other topic is a lane of its own."""
    if topic.startswith(SP_PREFIX):
        parts = topic.split("/", 4)
        if len(parts) >= 4:  # spBv1.0/<group>/<type>/<edge node>[/<device>]; STATE topics are their own
            # by the node's name alone: tags are named by it, so two groups' nodes of one name meet in the
            # host (the second is skipped while the first lives) and their messages keep their order too
            return (SP_PREFIX, parts[3])
    return topic


class _BatchChannel(Channel):
    """``Channel`` that wakes the loop only when its consumer may be asleep, hands over batches taken fairly
    from each topic, and, when full, drops from the topic that holds the most of it.

    Waking the loop costs a self-pipe write per ``call_soon_threadsafe``; at 10k+ msg/s that
    alone halved ingest (bench/mqtt_bench.py). A wake-up is scheduled only when none is pending.

    Full (``queue_max_items`` messages, or ``queue_max_bytes`` of payload: the newest message is always
    kept), the oldest message of the topic holding the most goes, not the oldest of all (the most messages;
    the most bytes when it is ``queue_max_bytes`` that is reached, of equal ones the topic whose oldest is
    oldest: a camera's large frames go, not a quiet topic's several small readings): a node
    publishing thousands of messages a second on one topic loses its own redundant ones, and the one
    message of a quiet topic (a temperature crossing its alarm threshold, a Sparkplug birth) that arrived
    among them is kept; when every topic holds one message (a flood over topics named anew), the oldest of
    all goes. Each drop is counted in ``stats.dropped`` and by topic (``dropped_by_topic``, bounded).

    Taken (``get_many``), at most ``TAKE_MAX`` messages at a time, shared out among the lanes that hold
    messages (a topic; a Sparkplug edge node with its devices), each lane's oldest first: a quiet topic's
    message waits behind at most one such batch, not behind the thousands a flooding topic holds (taken
    whole, the queue handed a flood's 10,000 messages to the consumer ahead of the quiet one, and one that
    came just after waited for all of them). A batch is handed over in arrival order, and order is kept
    within a lane (a Sparkplug node's seq, a birth before its data); only under a backlog does a lane's
    message overtake another lane's older ones that wait for the next batch. A dropped message of a
    Sparkplug lane stays in it as a shell without its payload (topic None) until the consumer reaches it.
    A topic's lane is its deque in ``_by_topic`` itself; a Sparkplug node's lane is a deque of its own over
    the node's topics. An entry is ``[topic, payload, received_at, retained, arrival number, ack cell, wall
    offset]`` (the cell: ``_Unacked``'s, None for a message not acknowledged by the source; the offset: this
    gateway's ``_wall_offset`` at its receipt, None if not known).

    A mark (``mark_threadsafe``: the connection lost) is an entry without a topic that keeps its place in the
    arrival order, outside the size bounds (at most one more than the messages queued): a batch takes nothing
    that came after it until every message that came before it is taken, and ends with it.
    """

    _wake_pending = False
    MAX_TOPICS_COUNTED = 100  # topic names whose drops are counted apart (they come from outside)

    def __init__(self, maxsize: int, stats: DeviceStats, max_bytes: int = 2**62) -> None:
        super().__init__(maxsize, stats)
        self._max_bytes = max_bytes
        self._live = 0  # messages queued and not dropped
        self._bytes = 0  # their payload
        self._by_topic: dict[str, collections.deque[list]] = {}  # topic -> its queued entries, oldest first
        self._lanes: dict[Any, collections.deque[list]] = {}  # lane -> its entries (and shells), oldest first
        self._shells = 0  # dropped entries still in a lane behind a live one
        self._wakeups = 0  # wake-ups (no message) since the consumer last took
        self._arrived = 0  # messages pushed so far: each entry's arrival number
        self._heavy: str | None = None  # the topic holding the most (kept up to date on each push)
        self._heavy_n = 0  # its queued messages
        # once queue_max_bytes has been reached, until the queue is empty (not kept before: a push costs more):
        # each topic's queued payload bytes, and the topics by them, a heap of (-bytes, the arrival number of
        # its oldest, topic) with an entry added at each change (one whose bytes are no longer the topic's is
        # left behind, skipped when met)
        self._topic_bytes: dict[str, int] = {}
        self._by_bytes: list[tuple[int, int, str]] | None = None
        self.dropped_by_topic: dict[str, int] = {}
        self._marks: collections.deque[list] = collections.deque()  # marks not taken, oldest first

    def __len__(self) -> int:
        return self._live

    def _push(self, item: Any, cell: list | None = None, offset: float | None = None) -> None:
        if type(item) is not list:  # the entry is marked in place when dropped
            item = list(item)
        topic = item[0]
        size = len(item[1])
        with self._lock:
            if self._live >= self._maxsize or self._bytes + size > self._max_bytes:
                while self._live:
                    if self._live >= self._maxsize:
                        self._drop_heaviest()
                    elif self._bytes + size > self._max_bytes:
                        self._drop_biggest()
                    else:
                        break
            self._arrived += 1
            item.append(self._arrived)
            item.append(cell)
            item.append(offset)
            lane = _lane(topic)
            by_topic = self._by_topic
            mine = by_topic.get(topic)
            if mine is None:
                mine = by_topic[topic] = collections.deque()
                if lane is topic:  # a lane of its own: the same deque
                    self._lanes[topic] = mine
            mine.append(item)
            if len(mine) > self._heavy_n:
                self._heavy, self._heavy_n = topic, len(mine)
            heap = self._by_bytes
            if heap is not None:
                topic_bytes = self._topic_bytes
                b = topic_bytes[topic] = topic_bytes.get(topic, 0) + size
                if heap and heap[0][2] == topic and -b <= heap[0][0]:  # the heaviest, heavier: in place
                    heap[0] = (-b, heap[0][1], topic)
                else:
                    heapq.heappush(heap, (-b, mine[0][4], topic))
            if lane is not topic:  # a Sparkplug node's
                lanes = self._lanes
                queued = lanes.get(lane)
                if queued is None:
                    queued = lanes[lane] = collections.deque()
                queued.append(item)
            self._live += 1
            self._bytes += size
            self._stats.received += 1

    def _drop_heaviest(self, chosen: str | None = None) -> None:
        """Drop the oldest message of ``chosen``, or (None) of the topic holding the most messages."""
        topic: str | None
        mine: collections.deque[list] | None
        if chosen is not None:
            topic, mine = chosen, self._by_topic[chosen]
        else:
            # the heaviest as last seen (its count only falls, and a topic passing it takes its place)
            topic = self._heavy
            mine = self._by_topic.get(topic) if topic is not None else None
            if topic is None or not mine:  # not known (after a take emptied it): the longest now; a scan
                topic, mine = max(self._by_topic.items(), key=lambda kv: len(kv[1]))
                self._heavy = topic
            if len(mine) == 1 and len(self._by_topic) > 1:
                # every topic holds one message (a flood spread over topics named anew, a counter in the
                # name): the oldest goes, as from a plain queue. The heaviest would be the newest, and the
                # next message pushed out a quiet topic's the moment it came
                topic = next(iter(self._lanes.values()))[0][0]
                mine = self._by_topic[topic]
        entry = mine.popleft()
        heavy = topic == self._heavy
        if heavy:
            self._heavy_n = len(mine)
        size = len(entry[1])
        lane = _lane(topic)
        heap = self._by_bytes
        if not mine:
            del self._by_topic[topic]
            if heap is not None:
                del self._topic_bytes[topic]
                if heap[0][2] == topic:
                    heapq.heappop(heap)
            if heavy:
                self._heavy, self._heavy_n = None, 0
            if lane is topic:  # its lane, the same deque
                del self._lanes[lane]
        elif heap is not None:
            b = self._topic_bytes[topic] = self._topic_bytes[topic] - size
            if heap[0][2] == topic:  # the heaviest (_drop_biggest's choice), lighter: its entry replaced
                heapq.heapreplace(heap, (-b, mine[0][4], topic))
            else:
                heapq.heappush(heap, (-b, mine[0][4], topic))
        self._live -= 1
        self._bytes -= size
        entry[0], entry[1] = None, b""  # a shell: skipped by the consumer, its payload freed now
        cell = entry[5]
        if cell is not None:  # a counted drop: acknowledged in its turn (held back, it would stop the broker)
            cell[1] = True
        if lane is not topic:  # a Sparkplug node's lane: the entry may be behind another topic's
            queued = self._lanes[lane]
            if queued[0] is entry:  # the lane's oldest: gone at once
                queued.popleft()
                while queued and queued[0][0] is None:
                    queued.popleft()
                    self._shells -= 1
                if not queued:
                    del self._lanes[lane]
            else:
                self._shells += 1
                if self._shells > self._maxsize + 64:  # compacted now and then
                    for key, q in list(self._lanes.items()):
                        if type(key) is tuple:
                            self._lanes[key] = collections.deque(e for e in q if e[0] is not None)
                    self._shells = 0
        self._stats.dropped += 1
        counted = self.dropped_by_topic
        n = counted.get(topic)
        if n is not None:
            counted[topic] = n + 1
        elif len(counted) < self.MAX_TOPICS_COUNTED:
            counted[topic] = 1
        else:
            counted[""] = counted.get("", 0) + 1  # "": other topics

    def _drop_biggest(self) -> None:
        # queue_max_bytes reached: the oldest message of the topic holding the most bytes goes (a camera's large
        # frames, not a quiet topic's several small readings); of equal ones, the topic whose oldest is oldest
        # (a flood of equal messages over topics named anew: the oldest of all, as from a plain queue)
        heap, topic_bytes, by_topic = self._by_bytes, self._topic_bytes, self._by_topic
        if heap is None:  # each topic's bytes, kept from now on
            topic_bytes.clear()
            for t, mine in by_topic.items():
                topic_bytes[t] = sum(map(len, map(_PAYLOAD, mine)))
        if heap is None or len(heap) > 2 * len(topic_bytes) + 64:  # built (again, without its left-behinds)
            heap = self._by_bytes = [(-b, by_topic[t][0][4], t) for t, b in topic_bytes.items()]
            heapq.heapify(heap)
        while True:  # the heaviest, skipping the entries left behind; left in place, replaced by the drop
            minus_b, _, topic = heap[0]
            if topic_bytes.get(topic) == -minus_b:
                break
            heapq.heappop(heap)
        self._drop_heaviest(topic)

    def _take(self, limit: int) -> list[list]:
        """Up to ``limit`` live entries, shared out among the lanes, each lane's oldest first (under the lock)."""
        out: list[list] = []
        lanes, by_topic, topic_bytes = self._lanes, self._by_topic, self._topic_bytes
        heap = self._by_bytes
        taken_bytes = 0
        mixed = len(lanes) > 1
        # a mark waiting: only what came before it is taken (each lane's entries are in arrival order)
        upto = self._marks[0][4] if self._marks else None
        # with a mark waiting, the rounds walk only the lanes whose oldest came before it, each left out from the
        # round it has nothing more before it (not all lanes ~256 rounds a take, under the lock, in the event loop)
        ahead = None if upto is None else [lane for lane, queued in lanes.items() if queued[0][4] < upto]
        while len(out) < limit:
            walk = list(lanes) if ahead is None else ahead
            if not walk:
                break
            share = max(1, (limit - len(out)) // len(walk))
            if ahead is not None:
                ahead = []  # the lanes with more before the mark, for the next round
            for lane in walk:
                queued = lanes[lane]
                if type(lane) is str:  # a topic's own lane: its deque in by_topic too, without shells
                    k = len(queued)
                    n = share
                    if upto is not None and queued[-1][4] > upto:  # some came after the mark: those stay
                        n = 0
                        while n < share and queued[n][4] < upto:
                            n += 1
                        if not n:
                            continue
                        if n == share and ahead is not None:
                            ahead.append(lane)
                    elif ahead is not None and k > n:
                        ahead.append(lane)
                    if k <= n:
                        part = list(queued)
                        del lanes[lane], by_topic[lane]
                        if heap is not None:
                            del topic_bytes[lane]
                        if self._heavy == lane:
                            self._heavy, self._heavy_n = None, 0
                        taken_bytes += sum(map(len, map(_PAYLOAD, part)))
                    else:
                        part = [queued.popleft() for _ in range(n)]
                        if self._heavy == lane:
                            self._heavy_n = len(queued)
                        b = sum(map(len, map(_PAYLOAD, part)))
                        taken_bytes += b
                        if heap is not None:
                            b = topic_bytes[lane] = topic_bytes[lane] - b
                            heapq.heappush(heap, (-b, queued[0][4], lane))
                    out += part
                else:
                    n = 0
                    while queued and n < share and (upto is None or queued[0][4] < upto):
                        entry = queued.popleft()
                        topic = entry[0]
                        if topic is None:  # a shell
                            self._shells -= 1
                            continue
                        mine = by_topic[topic]
                        mine.popleft()  # this entry: the oldest of its topic too
                        size = len(entry[1])
                        if not mine:
                            del by_topic[topic]
                            if heap is not None:
                                del topic_bytes[topic]
                            if self._heavy == topic:
                                self._heavy, self._heavy_n = None, 0
                        else:
                            if self._heavy == topic:
                                self._heavy_n = len(mine)
                            if heap is not None:
                                b = topic_bytes[topic] = topic_bytes[topic] - size
                                heapq.heappush(heap, (-b, mine[0][4], topic))
                        taken_bytes += size
                        out.append(entry)
                        n += 1
                    while queued and queued[0][0] is None:
                        queued.popleft()
                        self._shells -= 1
                    if not queued:
                        del lanes[lane]
                    elif n == share and ahead is not None:
                        ahead.append(lane)
                if len(out) >= limit:
                    break
        self._live -= len(out)
        self._bytes -= taken_bytes
        if self._heavy is None and by_topic:  # the heaviest was taken whole: the heaviest left, known again
            self._heavy, mine = max(by_topic.items(), key=lambda kv: len(kv[1]))
            self._heavy_n = len(mine)
        if not by_topic:
            self._by_bytes = None  # kept again from the next time queue_max_bytes is reached
        if mixed:  # the batch in arrival order: lanes are fair in what a batch takes, not in its order
            out.sort(key=_ARRIVAL)
        if upto is not None and len(out) < limit:  # all before the mark taken: the batch ends with it
            out.append(self._marks.popleft())
        return out

    def put_threadsafe(self, item: Any, cell: list | None = None, offset: float | None = None) -> None:
        self._push(item, cell, offset)
        if self._wake_pending or self._event.is_set():
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            self._wake_pending = True
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # loop closing: the item stays queued
                self._wake_pending = False

    def _wake(self) -> None:
        self._wake_pending = False
        self._event.set()

    def mark_threadsafe(self, what: object) -> None:
        """Queue a mark (an entry ``[None, what, ...]``) after every message queued so far: handed over once all
        of them are, before any queued after it, and woken for; none if the last mark (the same ``what``) is still
        the newest entry. Marks stay at most one more than the messages queued: past that (the messages between
        them dropped from a full queue), the oldest mark followed by one of the same ``what`` goes, as the later
        one follows every message the earlier one did and, applied (``SparkplugHost.connection_lost``: the live
        nodes' tags BAD), leaves the same state."""
        with self._lock:
            marks = self._marks
            if marks and marks[-1][4] == self._arrived and marks[-1][1] is what:
                return  # the last one still the newest entry (drops with nothing between): not one more each
            self._arrived += 1
            marks.append([None, what, 0.0, False, self._arrived, None])
            # a stalled consumer, a flapping broker, each reconnect bringing a message: coalesced, not one a drop
            if len(marks) > self._live + 1:
                for i in range(len(marks) - 1):
                    if marks[i][1] is marks[i + 1][1]:
                        del marks[i]
                        break
        self.wake_threadsafe()

    def wake_threadsafe(self) -> None:
        """Wake the consumer without a message: its next ``get_many`` returns (empty, if nothing is queued)."""
        with self._lock:
            self._wakeups += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # loop closing: nothing to wake
                pass

    def take_all(self) -> list[list]:
        """Every message still queued (``stop()``: none of them is handed on any more)."""
        with self._lock:
            self._marks.clear()
            return self._take(self._live) if self._live else []

    @property
    def arrived(self) -> int:
        """The arrival number of the last entry queued (messages and marks)."""
        return self._arrived

    def holds(
        self, topics: tuple[str, ...], lane: Any = None, prefix: str = "", upto: float = math.inf
    ) -> bool:
        """Whether a message on one of ``topics`` is queued, not yet taken; with ``lane`` (a Sparkplug node's),
        or one in that lane whose topic begins with ``prefix`` (its devices' births) and whose arrival number is
        at most ``upto``: a scan of the lane, in arrival order, up to the first past it."""
        with self._lock:
            by_topic = self._by_topic
            if any(by_topic.get(t) for t in topics):
                return True
            for e in self._lanes.get(lane, ()) if lane is not None else ():
                if e[4] > upto:
                    break
                if e[0] is not None and e[0].startswith(prefix):
                    return True
            return False

    def take_drops(self) -> dict[str, int]:
        """The messages dropped by topic since the last call ("": topics past ``MAX_TOPICS_COUNTED``)."""
        with self._lock:
            out = dict(self.dropped_by_topic)
            self.dropped_by_topic.clear()
        return out

    async def get_many(self, limit: int = TAKE_MAX) -> list[Any]:
        """Up to ``limit`` queued messages, shared out among the topics (at least one, or none after a
        ``wake_threadsafe``); raises ``EOFError`` once closed and drained."""
        while True:
            with self._lock:
                if self._live or self._marks:
                    self._wakeups = 0
                    return self._take(limit)
                if self._wakeups:
                    self._wakeups = 0
                    return []
                if self._closed:
                    raise EOFError
                self._event.clear()
            await self._event.wait()


class MqttSource:
    def __init__(self, name: str, settings: MqttSettings) -> None:
        self.name = name
        self.settings = settings
        self.stats = DeviceStats()
        self.state = ConnectionState.STOPPED
        self._channel = _BatchChannel(settings.queue_max_items, self.stats, settings.queue_max_bytes)
        self._burst = BurstLogger(log)
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connect_task: asyncio.Task | None = None
        self._stopping = False
        self._ever_connected = False
        self._loop_started = False
        self._refused = False
        self._route_cache: dict[str, Any] = {}  # topic -> its subscription's decoder (None: no subscription)
        self._route_units = 0  # the cached topics' NAME_UNITs beyond one each
        self._last_ts: dict[str, float] = {}
        self._tag_units = 0  # the order check's tag names' NAME_UNITs beyond one each
        self._keep_out_of_order = settings.out_of_order == "keep"
        self._max_ahead = settings.max_clock_skew_s or math.inf
        self._clock_checked = settings.max_clock_skew_s > 0
        # topic -> (lag of its first reading behind the receive time, since when (receive time), said): see
        # CLOCK_BEHIND_S
        self._lags: dict[str, tuple[float, float, bool]] = {}
        # tag -> (receive time (``_held_at``) of its device's first clock step in CLOCK_STEP_HOLD_S, steps since,
        # the newest time its fast clock gave, how far ahead of the receive time that clock was at the step, and the
        # clock set right (0 if behind: the most of its steps), this gateway's ``_wall_offset`` then)
        # (``_stepped_back``, ``_out_of_order``)
        self._steps: dict[str, tuple[float, int, float, float, float, float]] = {}
        # (receive time (``_held_at``), tag) of each step made, in order: swept from the front once over
        # (``_forget_steps``), an item whose tag's step is gone or made again since skipped. Not the dict itself:
        # each sweep began a fresh walk of it, which in CPython passes every entry deleted before (kept as holes
        # until the dict grows again), 5 times a reading's cost with 99,000 tags' steps expiring one after another
        self._steps_line: collections.deque[tuple[float, str]] = collections.deque()
        # the receive time (``_held_at``) from which the front of ``_steps_line`` is over: swept then
        # (``_forget_steps``)
        self._steps_over = math.inf
        # (message, each tag's newest time in it not ahead of the receive time): ``_newest``'s last message
        self._newest_seen: tuple[Any, dict[str, float]] | None = None
        # this gateway's ``_wall_offset`` when the message being read was received (None: not known, an entry made
        # without it): ``_out_of_order`` judges its receive time by the clock as it was at a device's step
        self._recv_offset: float | None = None
        self._max_bytes = settings.max_message_bytes
        # a persistent session's QoS 1 messages that the broker sends again after a reconnect (DUP)
        self._redelivered = (
            _Redeliveries()
            if settings.persistent_session and any(s.qos for s in settings.subscriptions)
            else None
        )
        # the same sessions acknowledge a QoS 1 message once it is taken, not on receipt (``_Unacked``)
        self._manual_ack = self._redelivered is not None
        self._unacked: _Unacked | None = None
        # items(): the batch taken from the queue, the place of the message being handed on, its readings and
        # how many of them were handed on: a consumer that leaves mid-batch (cancelled) leaves them here, for
        # stop() to count and for the next items() to go on with
        self._held: list[list] = []
        self._pos = 0
        self._readings: list[Reading] | None = None
        self._ri = 0
        # a large message's values still to be made readings (``_decoded``), or a large Sparkplug message's metrics
        # still to be read (``_Steps``)
        self._chunks: _Chunks | _Steps | None = None
        # consumers in ``items()`` now (the one that drives a large birth's steps), and the event set as one leaves
        # (a command waiting for a birth learnt told at once that none drives it)
        self._readers = 0
        self._reader_left = asyncio.Event()
        self._handing = True  # False from stop() on: nothing more is queued or handed on
        self._stop_left = 0  # messages that came during stop(): QoS 1 left with the broker (paho's thread)
        self._stop_lost = 0  # ... and others (QoS 0, or no persistent session: acknowledged by paho)
        self._state_ts = 0  # ms: the time in this host's STATE birth and death (sparkplug.host_id)
        self._asked: list[tuple[str, int]] = []  # this connection's subscriptions, in SUBSCRIBE's order
        self._acks: dict[
            int, list[tuple[str, int]]
        ] = {}  # SUBSCRIBE packet id -> its filters, until its SUBACK
        # MQTT 5: each subscription has its own Subscription Identifier (its index + 1), so that of the copies
        # a broker sends of a message matching two subscriptions only the first subscription's is read
        self._sub_ids = False
        self._first_sub: dict[
            str, int
        ] = {}  # topic -> the identifier of its first subscription (paho's thread)
        self._first_units = 0  # its topics' NAME_UNITs beyond one each
        # connections after the first (counted in paho's thread): the Sparkplug host learns of each before
        # it decodes a message that connection brought, and takes every node's births as missed
        self._sessions = self._sessions_seen = 0
        # connections lost (counted in paho's thread); each is marked in the queue, where it came: the Sparkplug
        # host marks its live nodes' tags BAD there (``SparkplugHost.connection_lost``), after every message the
        # lost connection brought, what they publish meanwhile unseen
        self._drops = 0
        # the arrival number of the queue's last entry at each reconnect not caught up yet: the entries up to it (the
        # drop's mark the last of them) are the lost connection's, read before its births are taken as stale
        # (``_catch_up``); appended by paho's thread, taken on the loop
        self._reconnects: collections.deque[int] = collections.deque()
        # with sparkplug.host_id, the rebirths a reconnect asks wait for the STATE birth, sent on the SUBACK
        self._state_sent = self._state_sent_seen = 0
        self.sparkplug = SparkplugHost(
            name,
            settings.sparkplug,
            self._publish_raw,
            self._error,
            max_inflated_bytes=settings.max_message_bytes,  # a compressed payload inflated: bounded alike
            non_finite=settings.non_finite,
            births_reach=self._births_reach,
        )
        self._sparkplug_subs = [s.filter for s in settings.subscriptions if s.codec == "sparkplug_b"]
        # one decoder per subscription, built by its codec's row in CODEC_TYPES
        self._decoders = {id(s): _decoder_factory(s.codec)(self, s) for s in settings.subscriptions}
        # the JSON ones: a large message of theirs is counted, parsed and walked in a worker thread (``_decoded``)
        self._json_decoders = {id(self._decoders[id(s)]) for s in settings.subscriptions if s.codec == "json"}
        # ... and the Sparkplug ones: a large message of theirs is decoded in a worker thread too (``_decoded``)
        self._apart_decoders = self._json_decoders | {
            id(self._decoders[id(s)]) for s in settings.subscriptions if s.codec == "sparkplug_b"
        }
        self.notices = Notices(log)  # silent drops and routine events: said once, counted always
        self.sparkplug.on_notice = self._notice
        self.published: dict[str, int] = {"sent": 0, "queued": 0}
        # MQTT 5: the QoS 1 messages whose PUBACK a publish() awaits, by packet id: (its future, topic)
        self._puback: dict[int, tuple[asyncio.Future, str]] = {}
        self._acks_in: list[tuple[int, Any]] = []  # PUBACKs from paho's thread, until the loop takes them
        self._ack_wake_pending = False
        # MQTT 5: what the broker's CONNACK said it takes (MaximumQoS, RetainAvailable, MaximumPacketSize);
        # a message past them makes Mosquitto, EMQX, HiveMQ drop the connection, and paho sent it again after
        # each reconnect: a gateway reconnecting every second for good, nothing else sent
        self.broker_limits: dict[str, Any] = {}
        self._max_qos = 1
        self._retain_ok = True
        self._max_packet: int | None = None
        # connections lost right after their CONNACK, in a row (another client with this client_id)
        self._connected_at = 0.0
        self._short_sessions = 0
        self._kicked_delay = 0.0  # the raised reconnect delay while they last (0: the settings' own)
        self._connack_seen = False  # this connection attempt got its CONNACK (paho's thread)
        # the QoS 1 message left unacknowledged by such drops: (packet id, topic, drops in a row)
        self._suspect: tuple[int, str, int] | None = None
        self._ping_task: asyncio.Task | None = None
        # asks the Sparkplug rebirths waiting (``_ask_rebirths``)
        self._rebirth_task: asyncio.Task | None = None
        self._dead_ping = 0.0  # paho's time of the PINGREQ found unanswered (each is acted on once)
        # _check_ping's previous look: paho's socket, the bytes the peer had acknowledged on it, when
        self._seen_sock: object = None
        self._seen_acked: int | None = None
        self._seen_at = 0.0
        self._moving_at = 0.0  # the last look that found the connection's sent bytes moving
        self._fed = -1.0  # the time last given to paho as its last receipt (_check_ping)
        self._dead_path: str | None = (
            None  # why the source closed the connection itself (paho's thread reads)
        )
        # stop(): until when (monotonic) the socket's close waits for the broker's end (paho's thread reads)
        self._close_by: float | None = None
        self.connected = asyncio.Event()
        self.subscribed = (
            asyncio.Event()
        )  # set when the broker has acknowledged this connection's subscriptions
        # publish_connection: separate: what this source publishes goes over a second connection of its own
        # (no subscriptions): a QoS 1 message's PUBACK then never waits behind a flood on a subscription, which
        # comes to the agent on the subscriptions' connection (docs/mqtt.md, "A flood")
        self._pub: MqttSource | None = None
        # on the publish connection of a source with publish_connection: separate: its client id; its own last
        # error (the source's stats are shared: their last_error may be the other connection's)
        self._pub_id: str | None = None
        self._own_last_error: str | None = None
        if settings.publish_connection == "separate":
            pub_id = settings.publish_id
            self._pub = MqttSource(
                f"{name}-pub",
                settings.model_copy(
                    update={
                        "client_id": pub_id,
                        "subscriptions": [],
                        "will": None,  # the source's will and Sparkplug STATE stay on its own connection
                        "sparkplug": type(settings.sparkplug)(),
                        "publish_connection": "shared",
                        "publish_client_id": "",
                    }
                ),
            )
            self.published = self._pub.published  # one count of what the source published
            # ... and one of its errors and notices: a publish refused, failed or downgraded, and the publish
            # connection's own failures, are the source's on /status (each log line names '<name>-pub')
            self._pub.stats = self.stats
            self._pub.notices = self.notices
            self._pub._pub_id = pub_id  # until it connects: then the id it connects with (a random one)

    @property
    def publish_connection(self) -> dict | None:
        """The state of the publish connection of ``publish_connection: separate`` (None: none), for /status:
        the source's own state is its subscriptions' connection's."""
        p = self._pub
        if p is None:
            return None
        return {"state": p.state.value, "client_id": p._pub_id, "last_error": p._own_last_error}

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._client is not None:
            return
        if self._pub is not None:
            await self._pub.start()
        self._loop = asyncio.get_running_loop()
        self._channel.bind(self._loop)
        self._stopping = False
        s = self.settings
        client_id = s.client_id or f"edge-{self.name}-{uuid.uuid4().hex[:8]}"
        if self._pub_id is not None:  # the publish connection: the id it connects with, for /status
            self._pub_id = client_id
        c = _paho_client(s, client_id, self._manual_ack)
        self._unacked = _Unacked(c) if self._manual_ack else None
        self._handing = True
        self._stop_left = self._stop_lost = 0
        if s.will is not None:
            c.will_set(s.will.topic, s.will.payload, s.will.qos, s.will.retain)
        if s.sparkplug.host_id is not None:  # the broker says "offline" for us if the connection dies
            self._state_ts = int(time.time() * 1000)  # birth and death carry the same time (Sparkplug 3.0)
            c.will_set(self._state_topic, self._state(False), qos=1, retain=True)
        c.reconnect_delay_set(max(1, int(s.reconnect_min_s)), max(1, int(s.reconnect_max_s)))
        c.max_queued_messages_set(s.publish_max_queued)  # before connect: FIELD-NOTES paho pitfall
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_connect_fail = self._on_connect_fail
        c.on_pre_connect = self._on_pre_connect
        c.on_socket_close = self._on_socket_close
        self._close_by = None
        self._client = c
        self.state = ConnectionState.CONNECTING
        first = asyncio.get_running_loop().create_future()
        self._connect_task = asyncio.create_task(self._connect_loop(first), name=f"mqtt-connect-{self.name}")
        self._ping_task = asyncio.create_task(self._watch_pings(c), name=f"mqtt-pings-{self.name}")
        if self._sparkplug_subs:
            self._rebirth_task = asyncio.create_task(self._ask_rebirths(), name=f"mqtt-rebirths-{self.name}")
        await first  # the first attempt was made (successful or not)

    async def _connect_loop(self, first: asyncio.Future) -> None:
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        s, c = self.settings, self._client
        assert c is not None and self._loop is not None
        connect = functools.partial(c.connect, s.host, s.port, s.keepalive_s, **_connect_kwargs(s))
        while not self._stopping:
            try:
                await self._loop.run_in_executor(None, connect)
            except ssl.SSLError as e:
                self._connect_failed(
                    "tls_failed",
                    f"TLS handshake with {s.host}:{s.port} failed: {e}; "
                    "check tls.ca_file / cert_file / key_file",
                )
            except (OSError, ValueError) as e:
                self._connect_failed("broker_unreachable", f"cannot reach broker {s.host}:{s.port}: {e}")
            else:
                c.loop_start()
                self._loop_started = True
                if not first.done():
                    first.set_result(None)
                return
            if not first.done():
                first.set_result(None)
            await asyncio.sleep(backoff.next_delay())

    def _births_reach(self, group: str, edge_node: str) -> bool:
        """A subscription of this source takes the node's NBIRTH: a rebirth asked of it would be read."""
        topic = f"{sp.NAMESPACE}/{group}/NBIRTH/{edge_node}"
        return any(paho.topic_matches_sub(f, topic) for f in self._sparkplug_subs)

    async def _ask_rebirths(self) -> None:
        """One task per Sparkplug source: every ``TICK_S`` the host asks the rebirths waiting that are due
        (a stale node that sends nothing more is asked too; ``SparkplugHost.tick``), while this connection is
        subscribed and the consumer has taken in its reconnect (``items``: ``session_lost``)."""
        while not self._stopping:
            await asyncio.sleep(sparkplug_host.TICK_S)
            if self.subscribed.is_set() and self._sessions_seen == self._sessions:
                try:
                    self.sparkplug.tick()
                except Exception:  # a bug here must not end the asking for good: said, tried again next tick
                    log.exception("mqtt source %r: asking Sparkplug rebirths failed", self.name)
                # nodes gone silent: their BAD readings go out with no message (``items``)
                if self.sparkplug.stale_waiting():
                    self._channel.wake_threadsafe()

    async def _watch_pings(self, c: paho.Client) -> None:
        while not self._stopping:
            await asyncio.sleep(PING_CHECK_S)
            self._check_ping(c, time.monotonic())

    def _check_ping(self, c: paho.Client, now: float) -> None:
        """Close the connection when paho's PINGREQ has gone unanswered for ``PINGRESP_WAIT`` of the keepalive
        with nothing at all received and nothing sent getting through since: paho's loop then sees it lost and
        reconnects as after any drop. Reads paho's own bookkeeping (``_ping_t``: when its PINGREQ was queued,
        0 once answered; it sets ``_last_bytes_received`` to that time, and every byte read moves it later);
        a broker slow to answer while it sends other packets is alive and left alone.

        paho queues its PINGREQ behind what it is still writing, so on a slow uplink a large message keeps the
        PINGREQ, and its answer, back for as long as the message takes: a connection whose written bytes the
        peer keeps acknowledging (the kernel's count, ``TCP_INFO``) is alive too, and the wait counts from the
        last look that saw them move. paho's own rule (a PINGREQ outstanding and nothing received for a whole
        keepalive: it closes the connection) counts from there too: while a PINGREQ is outstanding, the time
        the acknowledged bytes last moved is given to paho as its last receipt (``_last_bytes_received``), as
        paho cannot see them. Without it, a message longer than ~2 keepalives on the wire (500 KB at 32 KB/s
        and keepalive_s 5; 2 MB at the default 30) was cut by paho itself each time, sent again from its start
        over the next connection and cut again: never delivered. Without the kernel's count nothing is given
        (paho still writing is no proof of a live path: a dead one fills the send buffer too).

        paho's thread may reconnect at any moment: the look at the socket and at its bookkeeping and the
        shutdown are made holding paho's ``_msgtime_mutex``, which its reconnect takes after dropping the old
        socket and before making the new one, so the socket shut is the one whose PINGREQ went unanswered."""
        lock = getattr(c, "_msgtime_mutex", None) or contextlib.nullcontext()
        with lock:
            sock = c.socket()
            ka = getattr(c, "_keepalive", 0) or 0  # the broker's ServerKeepAlive when it set one (MQTT 5)
            ping_t = getattr(c, "_ping_t", 0) or 0
            received = getattr(c, "_last_bytes_received", now)
            acked = _bytes_acked(sock)
            if sock is not self._seen_sock:  # another connection: what moved before tells nothing of it
                self._moving_at = 0.0
            elif acked is not None and self._seen_acked is not None and acked > self._seen_acked:
                # the earliest they can have moved: since the previous look, unless that is long ago (the
                # event loop held up): a look late by seconds must not make a moving connection look silent
                self._moving_at = self._seen_at if now - self._seen_at <= 2 * PING_CHECK_S else now
            elif acked is None and c.want_write():
                self._moving_at = now  # no kernel count here: paho still writing is taken as moving
            if (
                acked is not None
                and ping_t
                and sock is self._seen_sock
                and self._moving_at > received
                and hasattr(c, "_last_bytes_received")
            ):
                # paho's PINGREQ waits behind bytes the peer is acknowledging: paho's whole-keepalive rule
                # counts from their last move, not from the last byte the broker sent (see above)
                c._last_bytes_received = self._fed = self._moving_at
            if received == self._fed:  # what this check gave paho is no byte from the broker
                received = 0.0
            self._seen_sock, self._seen_acked, self._seen_at = sock, acked, now
            if (
                not ka
                or not ping_t
                or ping_t == self._dead_ping
                or self.state is not ConnectionState.CONNECTED
            ):
                return
            silent_s = now - max(ping_t, self._moving_at)
            if received > ping_t or silent_s < ka * PINGRESP_WAIT:
                return
            shutdown = getattr(sock, "shutdown", None)  # None: no connection at the moment
            if shutdown is None:
                return
            self._dead_ping = ping_t
            self._dead_path = (
                f"no answer from broker {self.settings.host}:{self.settings.port} to a ping for "
                f"{now - ping_t:.1f}s (keepalive_s {ka}), nothing else received and nothing sent acknowledged "
                f"for {silent_s:.1f}s: the path died without closing (a NAT or firewall that dropped the flow, "
                "a switch or cable); reconnecting"
            )
            try:  # paho's loop reads the end at once and handles it as any lost connection
                shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _connect_failed(self, reason: str, detail: str) -> None:
        self.state = ConnectionState.BACKOFF
        self._error(reason, detail)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Close the connection cleanly, within about ``timeout_s`` + 2 ``STOP_CLOSE_S`` (7 s by default; a
        broker that takes nothing more has its connection cut then, 2 s more at most, ``_end_loop``):
        while connected, up to ``STOP_DRAIN_SHARE`` of ``timeout_s`` for the messages still queued to go out
        (``_drain``), then the Sparkplug STATE offline (at most 2 s), the DISCONNECT, and the broker's end of
        the connection awaited for the rest (``_on_socket_close``): the broker publishes no will, and nothing
        published before the stop is lost. A broker too slow for that gets the will; messages left unsent are
        said in the log.

        Nothing is handed on from the stop on: the messages still queued or held by a consumer that left
        (the agent stops its readers first), and those that come until the connection is closed, are counted
        and said once (``_count_unread``). With ``persistent_session`` their QoS 1 ones are not acknowledged
        (``_Unacked``; every message taken before is, now): the broker delivers them at the next start."""
        if self._pub is not None:  # what was published drains over its own connection meanwhile
            pub_stop = asyncio.ensure_future(self._pub.stop(timeout_s))
            try:
                await self._stop(timeout_s)
            finally:
                await pub_stop
            return
        await self._stop(timeout_s)

    async def _stop(self, timeout_s: float) -> None:
        self._stopping = True
        self._handing = False
        start = time.monotonic()
        c, self._client = self._client, None
        if self._unacked is not None:
            self._unacked.flush(final=True)
        for task in (self._ping_task, self._rebirth_task):
            if task is not None:
                task.cancel()
        self._ping_task = self._rebirth_task = None
        if self._connect_task is not None:
            self._connect_task.cancel()
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._connect_task)
            except (asyncio.CancelledError, TimeoutError, Exception):
                pass
            self._connect_task = None
        if c is not None:
            if self.state is ConnectionState.CONNECTED:
                await self._drain(c, start + timeout_s * STOP_DRAIN_SHARE)
            else:  # what paho holds for a connection that never came is lost with it
                with c._out_message_mutex:
                    held = len(c._out_messages)
                if held:
                    self._lost_at_stop(held, False)
            if self.settings.sparkplug.host_id is not None and self.state is ConnectionState.CONNECTED:
                try:  # a clean disconnect sends no will: say "offline" ourselves, before it
                    info = c.publish(self._state_topic, self._state(False), qos=1, retain=True)
                    wait_s = min(2.0, max(0.1, start + timeout_s - time.monotonic()))
                    await asyncio.to_thread(info.wait_for_publish, wait_s)
                except Exception as exc:  # the broker's copy stays "online" until it notices
                    log.warning("mqtt source %r: STATE offline not sent: %s", self.name, exc)
            # the broker's end is awaited for the rest of timeout_s, at least STOP_CLOSE_S
            close_by = self._close_by = max(start + timeout_s, time.monotonic() + STOP_CLOSE_S)
            if self._unacked is not None:  # skipped meanwhile (a copy): sent before the DISCONNECT
                self._unacked.flush(final=True)
            try:
                c.disconnect()
            except Exception:  # already down: nothing to close
                pass
            if self._loop_started:
                try:
                    await self._end_loop(c, close_by - time.monotonic() + STOP_CLOSE_S)
                finally:  # an error here must not leave the source half-stopped
                    self._loop_started = False
                    self._finish_stop()
                return
        self._finish_stop()

    def _finish_stop(self) -> None:
        self._count_unread()
        self._channel.close()
        self.state = ConnectionState.STOPPED
        self.connected.clear()
        self.subscribed.clear()

    def _count_unread(self) -> None:
        """At the end of ``stop()`` (paho's thread ended): the messages never handed on, said once and
        counted: ``dropped_at_stop`` (lost: QoS 0, or without a persistent session, acknowledged by paho;
        also in ``stats.dropped``) and ``left_at_stop`` (QoS 1 of a persistent session, not acknowledged:
        the broker delivers them at the next start)."""
        held = self._held[self._pos :]
        if held and self._readings is not None and self._ri >= len(self._readings) and self._chunks is None:
            held = held[1:]  # its last reading was handed over: taken
        self._held, self._pos, self._readings, self._chunks = [], 0, None, None
        left, lost = self._stop_left, self._stop_lost
        self._stop_left = self._stop_lost = 0
        for entry in held + self._channel.take_all():
            if entry[1] is _LOST:  # a mark, no message
                continue
            if entry[5] is not None and not entry[5][1]:
                left += 1
            else:
                lost += 1
        if lost:
            self.stats.dropped += lost
            why = ""
            if self.settings.persistent_session:
                why = " (QoS 0, which the broker keeps for no one, or of a session the broker lost at a reconnect)"
            elif not self._sparkplug_subs and self.settings.sparkplug.host_id is None:
                # a Sparkplug host (a sparkplug_b subscription, or host_id alone) connects clean: refused at load
                why = (
                    "; with persistent_session: true (and a fixed client_id) the broker keeps the QoS 1 ones "
                )
                why += "for the next start"
            self._notice(
                "dropped_at_stop",
                f"{lost} message(s) that came while the source stopped were not handed on and are lost{why}",
                n=lost,
            )
        if left:
            self._notice(
                "left_at_stop",
                f"{left} QoS 1 message(s) that came while the source stopped were not handed on nor acknowledged: "
                "the broker keeps them for this client_id's next start (persistent session)",
                n=left,
            )

    async def _end_loop(self, c: paho.Client, wait_s: float) -> None:
        """Stop paho's thread, ``wait_s`` at most for it to write what it holds and close. A broker that takes
        nothing more (hung, or a path that died with the send buffers full) would keep paho writing, its thread
        alive, until its keepalive noticed (1.5x ``keepalive_s``): the connection is cut then, and paho's loop
        ends at once."""
        ended = asyncio.ensure_future(asyncio.to_thread(c.loop_stop))
        if (await asyncio.wait({ended}, timeout=max(0.0, wait_s)))[0]:
            ended.result()  # its error, if any
            return
        log.warning(
            "mqtt source %r: broker %s:%d takes nothing more (%s); connection cut",
            self.name,
            self.settings.host,
            self.settings.port,
            "packets not yet written" if c.want_write() else "no close",
        )
        sock = c.socket()
        if isinstance(sock, socket.socket):
            try:  # the plain socket's: an SSLSocket's own shutdown drops TLS under paho's thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        if not (await asyncio.wait({ended}, timeout=2 * STOP_CLOSE_S))[0]:
            log.error("mqtt source %r: paho's network thread did not end", self.name)

    async def _drain(self, c: paho.Client, until: float) -> None:
        """Wait, up to ``until`` (monotonic) and while connected, for paho's outgoing messages to be gone:
        every QoS 1 message acknowledged (paho keeps all but its 20 in flight back until PUBACKs come, and a
        DISCONNECT sent before them ends them unsent) and every queued packet written. Those left are said."""
        while True:
            with c._out_message_mutex:
                unacked = len(c._out_messages)
            unwritten = c.want_write()
            if not unacked and not unwritten:
                return
            if time.monotonic() >= until or self.state is not ConnectionState.CONNECTED:
                break
            await asyncio.sleep(STOP_POLL_S)
        self._lost_at_stop(unacked, unwritten)

    def _lost_at_stop(self, unacked: int, unwritten: bool) -> None:
        """Counted (``publish_lost``) and said: paho's QoS 1 messages not acknowledged when the source stops
        (queued while the broker was away or refused this connection, or not drained in time) are lost: said once,
        counted once per message (once when only packets not yet written are left)."""
        away = "" if self.state is ConnectionState.CONNECTED else f" (not connected: {self.state.value})"
        self._error(
            "publish_lost",
            f"stopping with {unacked} QoS 1 message(s) not acknowledged"
            f"{' and packets not yet written' if unwritten else ''} by broker {self.settings.host}:"
            f"{self.settings.port}{away}: not sent, lost",
            max(1, unacked),
        )

    def _on_socket_close(self, client, userdata, sock) -> None:
        """paho's thread, just before it closes the socket. After stop()'s DISCONNECT: send our end's FIN
        behind what is queued and read what the broker sends until it closes its end (bounded by
        ``_close_by``), so that the socket is closed with nothing unread; closed with unread bytes (messages
        on a subscription, PUBACKs), the kernel sends a RST that drops what it had not sent yet, the
        DISCONNECT with it, and the broker publishes the will. Other closes (a lost connection) are left
        as they are."""
        close_by = self._close_by
        if close_by is None or not self._stopping:
            return
        self._close_by = None
        try:
            sock.shutdown(socket.SHUT_WR)  # on a TLS socket this drops TLS: the rest is read as raw bytes
            while (left := close_by - time.monotonic()) > 0:
                readable, _, _ = select.select([sock], [], [], left)
                if not readable:
                    break
                try:
                    if not sock.recv(65536):
                        return  # the broker's end is closed: nothing unread
                except (BlockingIOError, ssl.SSLWantReadError):
                    continue
        except (OSError, ValueError):  # the connection is down already: nothing to wait for
            return
        log.warning(
            "mqtt source %r: broker %s:%d did not close its end in time after the DISCONNECT: closed anyway "
            "(the broker may take it as a network error and publish the will)",
            self.name,
            self.settings.host,
            self.settings.port,
        )

    # ---- paho thread callbacks (keep light) --------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._refused = reason_code.is_failure
        self._connack_seen = True
        if reason_code.is_failure:
            self.state = ConnectionState.BACKOFF
            self._error_threadsafe("connect_refused", self._refused_text(reason_code))
            return
        self._connected_at = time.monotonic()
        if self.settings.protocol is Protocol.MQTT5:
            self._connack_limits(client, properties)
        again = self._ever_connected
        if again:
            self.stats.reconnects += 1
        log.info(
            "mqtt source %r: %s broker %s:%d",
            self.name,
            "reconnected to" if self._ever_connected else "connected to",
            self.settings.host,
            self.settings.port,
        )
        self._ever_connected = True
        subs: list[tuple[str, int]] = [(s.topic, s.qos) for s in self.settings.subscriptions]
        if self.settings.sparkplug.host_id is not None:  # our own STATE: a stale "offline" is answered
            subs.append((self._state_topic, 1))
        if subs:
            self._asked = subs
            self._acks.clear()
            # MQTT 5 brokers (Mosquitto, EMQX, HiveMQ) send a message matching two subscriptions once per
            # subscription: with an identifier each, the copies are told apart (``_on_message``)
            self._sub_ids = (
                properties is not None
                and self.settings.protocol is Protocol.MQTT5
                and getattr(properties, "SubscriptionIdentifierAvailable", 1) != 0
                and len(self.settings.subscriptions) > 1
            )
            if self._sub_ids:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                for i, (topic, qos) in enumerate(subs):
                    props = Properties(PacketTypes.SUBSCRIBE)
                    props.SubscriptionIdentifier = i + 1
                    rc, mid = client.subscribe(topic, qos, properties=props)
                    if rc == paho.MQTT_ERR_SUCCESS:
                        self._acks[mid] = [(topic, qos)]
            else:
                rc, mid = client.subscribe(subs)
                if rc == paho.MQTT_ERR_SUCCESS:
                    self._acks[mid] = subs
        if self._unacked is not None:  # taken while away: acknowledged now (the broker sends them again, DUP)
            self._unacked.connected(again, bool(flags.session_present))
        if again:  # after the SUBSCRIBE (rebirths are asked then) and before this connection's messages
            self._reconnects.append(self._channel.arrived)  # what came before is the lost connection's
            self._sessions += 1
            self._channel.wake_threadsafe()  # the rebirths are asked even if no message comes
        self.state = ConnectionState.CONNECTED
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._now_connected)

    def _now_connected(self) -> None:
        """On the loop, after the errors paho's thread handed it before this connect (so that none comes after):
        ``connected`` set, and a publish connection's own ``last_error`` cleared: it shows on /status beside
        its state while it is not connected, and stood there after it recovered (the source's errors by reason
        still count it)."""
        self._own_last_error = None
        self.connected.set()

    def _connack_limits(self, client, props) -> None:
        """MQTT 5 (paho's thread, before paho sends again what it holds): the broker's limits from its
        CONNACK, applied to every later publish() and to the messages paho held while the broker was away.
        Sent as they were, each would make the broker drop the connection, and paho would send it again after
        each reconnect. A retained message on a broker without retain (AWS IoT Core, Mosquitto's
        ``retain_available false``) goes without the flag, a QoS 1 message to a broker of QoS 0 at QoS 0
        (both said once, counted); one over the Maximum Packet Size is dropped (``publish_too_large``).
        A Receive Maximum under paho's 20 in-flight messages is honoured (EMQX and HiveMQ drop a client past
        it)."""
        self._max_qos = min(1, int(getattr(props, "MaximumQoS", 1)))
        self._retain_ok = bool(getattr(props, "RetainAvailable", 1))
        self._max_packet = getattr(props, "MaximumPacketSize", None)
        receive_max = getattr(props, "ReceiveMaximum", None)
        self.broker_limits = {
            "max_qos": self._max_qos,
            "retain_available": self._retain_ok,
            "max_packet_bytes": self._max_packet,
            "receive_maximum": receive_max,
            "server_keepalive_s": getattr(props, "ServerKeepAlive", None),
        }
        # paho refuses max_inflight_messages_set() once connected (and this is the CONNACK): its attribute,
        # read at each publish and PUBACK; 20 (paho's default) unless the broker takes fewer
        client._max_inflight_messages = min(receive_max or 20, 20)
        if self._max_qos and self._retain_ok and self._max_packet is None:
            return
        # the messages paho holds (published while away, or in flight when the last connection dropped)
        held = getattr(client, "_out_messages", None)
        lock = getattr(client, "_out_message_mutex", None)
        if held is None or lock is None:
            return
        again: list[tuple[str, bytes, bool]] = []
        with lock:
            for mid, m in list(held.items()):
                size = _packet_size(len(m.topic.encode()), len(m.payload), m.qos, True)
                if self._max_packet is not None and size > self._max_packet:
                    del held[mid]
                    self._refuse_held(mid, m.topic, self._too_large(m.topic, size))
                    continue
                if m.retain and not self._retain_ok:
                    m.retain = False
                    self._notice_threadsafe("retain_unavailable", self._no_retain_text(m.topic))
                if m.qos > self._max_qos:
                    del held[mid]  # sent again below at QoS 0 (paho keeps no QoS 0 message)
                    again.append((m.topic, m.payload, m.retain))
                    self._notice_threadsafe("publish_qos_downgraded", self._qos0_text(m.topic))
                    self._refuse_held(mid, m.topic, None)
        for topic, payload, retain in again:
            client.publish(topic, payload, qos=0, retain=retain)

    def _refuse_held(
        self, mid: int, topic: str, exc: MqttError | None, reason: str = "publish_too_large"
    ) -> None:
        """A held message taken out of paho's queue (paho's thread): counted as ``reason`` and its awaiting
        publish() learns it (None: sent at QoS 0 instead)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._held_done, mid, exc, reason)
            except RuntimeError:  # loop closing: nobody waits
                pass

    def _held_done(self, mid: int, exc: MqttError | None, reason: str) -> None:
        waiter = self._puback.pop(mid, None)
        if exc is not None:
            self._error(reason, str(exc))
        if waiter is not None and not waiter[0].done():
            if exc is None:
                waiter[0].set_result(None)
            else:
                waiter[0].set_exception(exc)

    def _too_large(self, topic: str, size: int) -> MqttTooLarge:
        return MqttTooLarge(
            f"mqtt source {self.name!r}: message to {topic!r} not sent: {size} bytes, over the broker's "
            f"maximum packet size of {self._max_packet} bytes (its CONNACK); the broker would drop the "
            "connection for it. Make the message smaller (fewer fields, a smaller batch) or raise the broker's "
            "limit (Mosquitto: max_packet_size)"
        )

    def _no_retain_text(self, topic: str) -> str:
        return (
            f"broker {self.settings.host}:{self.settings.port} does not keep retained messages (its CONNACK: "
            f"RetainAvailable 0): messages meant to be retained (alarm states, first {topic!r}) are sent "
            "without the flag; a subscriber that connects later does not see the last state"
        )

    def _qos0_text(self, topic: str) -> str:
        return (
            f"broker {self.settings.host}:{self.settings.port} takes QoS 0 only (its CONNACK: MaximumQoS 0): "
            f"QoS 1 messages (alarms, results; first {topic!r}) are sent at QoS 0, unacknowledged: one lost "
            "on the way is not known, and none is held while the broker is away"
        )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # paho's thread, for every message sent (QoS 0) or acknowledged (QoS 1): only a refusal or an
        # awaited PUBACK is handed to the loop (a dict lookup otherwise), in batches: one wake-up of the
        # loop for all that arrive before it runs (each costs a self-pipe write and a thread switch)
        if mid in self._puback or reason_code.is_failure:
            self._acks_in.append((mid, reason_code))
            if self._ack_wake_pending:
                return
            loop = self._loop
            if loop is not None and not loop.is_closed():
                self._ack_wake_pending = True
                try:
                    loop.call_soon_threadsafe(self._acks_arrived)
                except RuntimeError:  # loop closing: nobody waits
                    self._ack_wake_pending = False

    def _acks_arrived(self) -> None:
        self._ack_wake_pending = False  # before taking them: one appended from now on wakes the loop again
        acks, self._acks_in = self._acks_in, []
        for mid, reason_code in acks:
            self._acked(mid, reason_code)

    def _acked(self, mid: int, reason_code) -> None:
        waiter = self._puback.pop(mid, None)
        if waiter is not None:
            if not waiter[0].done():
                waiter[0].set_result(reason_code)
            return
        if reason_code.is_failure:  # unconfirmed (a forward), or held while away: its publish() returned
            self._error(
                "publish_refused",
                f"broker {self.settings.host}:{self.settings.port} refused a message (PUBACK {reason_code}, "
                f"0x{reason_code.value:02X}; 0x87: its ACL does not let this client's user publish there); "
                "it was not delivered",
            )

    def _will_text(self) -> str:
        s = self.settings
        if s.sparkplug.host_id is not None:
            return (
                "this source's will is its Sparkplug STATE (sparkplug.host_id), QoS 1 and retained as Sparkplug "
                "3.0 has it: this broker cannot serve a primary host; use one that keeps retained messages at "
                "QoS 1, or remove sparkplug.host_id"
            )
        if s.will is not None:
            return (
                f"this source's will is QoS {s.will.qos}{', retained' if s.will.retain else ''}: set will.retain "
                "false or will.qos 0 as the broker takes"
            )
        return "check the broker's limits and its log"

    def _refused_text(self, reason_code: Any) -> str:
        return (
            f"broker {self.settings.host}:{self.settings.port} refused the connection: {reason_code} "
            f"(0x{reason_code.value:02X}); {self._refusal_hint(reason_code.value)}"
        )

    def _refusal_hint(self, code: int) -> str:
        """The fix for a CONNACK refusal (MQTT 5 reason codes; paho gives MQTT 3.1.1's as their equivalents)."""
        if self._pub_id is not None and code not in (0x86, 0x95):
            # the same login as the subscriptions' connection: the broker refuses this client id or a second
            # connection
            return (
                "the broker refuses the publish connection's client id or a second connection of this login "
                "(its per-client-id ACL, its connection limit): set publish_client_id to an id the broker lets "
                "in, or publish_connection: shared"
            )
        if code == 0x9A:  # Retain not supported
            return "the broker keeps no retained messages; " + self._will_text()
        if code == 0x9B:  # QoS not supported
            return "the broker does not take the will's QoS; " + self._will_text()
        if code == 0x85:
            return "the broker refuses the client_id; set another client_id (empty: a random one)"
        if code == 0x86:
            return "check username/password"
        if code in (0x87, 0x8A):
            return "the broker does not let this client in (its ACL, a ban): check username/password and ACLs"
        if code in (0x88, 0x89, 0x97, 0x9F):
            return "the broker is unavailable, busy or limits connections for now; retried with the backoff"
        if code == 0x95:
            return "the broker refuses the CONNECT's size (a large will payload?)"
        return "check username/password and ACLs, and the broker's log"

    def _on_pre_connect(self, client, userdata) -> None:
        # Before every connection after the first, on whichever path paho took to notice the drop (its
        # disconnect callback is skipped when the socket itself went bad): the next connection's STATE
        # death and birth carry a new time (Sparkplug 3.0), so nodes tell it from the last one's will.
        if self._ever_connected and self.state is ConnectionState.CONNECTED and not self._stopping:
            self._on_disconnect(
                client, userdata, None, "connection lost", None
            )  # the skipped callback's work
        self._connack_seen = False
        if self._unacked is not None:  # until this connection's CONNACK is taken in: nothing acknowledged
            self._unacked.connecting()
        if self._state_ts and self._ever_connected:
            self._state_ts = max(int(time.time() * 1000), self._state_ts + 1)
            client.will_set(self._state_topic, self._state(False), qos=1, retain=True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._stopping:
            return
        if self.state is ConnectionState.CONNECTED:  # a connection that was up: Sparkplug nodes' tags go BAD
            self._drops += 1
            self._channel.mark_threadsafe(_LOST)  # after its last message (paho's thread delivered them all)
        self.state = ConnectionState.BACKOFF
        if self._refused:  # the refusal was already reported with its reason; this is its echo
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.connected.clear)
            self._loop.call_soon_threadsafe(self.subscribed.clear)
        detail = f"lost broker {self.settings.host}:{self.settings.port} ({reason_code}); reconnecting"
        if self._dead_path is not None:  # closed by _check_ping: say why, not paho's "connection lost"
            detail, self._dead_path = self._dead_path, None
        if not self._connack_seen and (self.settings.will is not None or self.settings.sparkplug.host_id):
            # closed at CONNECT (MQTT 3.1.1 gives no reason): what a broker without retain or QoS 1 does
            detail = (
                f"broker {self.settings.host}:{self.settings.port} closed the connection at CONNECT, before "
                f"its CONNACK ({reason_code}); a broker that keeps no retained messages or takes QoS 0 only "
                f"does so for a will it cannot keep: {self._will_text()}; reconnecting"
            )
        if self._kicked(client, reason_code):  # counted; the pattern is said once, not each drop
            loop = self._loop
            if loop is not None and not loop.is_closed():
                # as every error of this connection's: a publish connection's names it and is its last_error (its
                # drop read as the subscriptions' connection's, and /status showed it in backoff with no error)
                loop.call_soon_threadsafe(self._count_error, "broker_unreachable", detail)
            return
        self._error_threadsafe("broker_unreachable", detail)

    def _poison(self, client) -> None:
        """A short connection lost with a QoS 1 message sent and not acknowledged (paho's thread). Brokers
        that refuse a message by closing the connection (AWS IoT Core's policies, Azure IoT Hub's topics, and
        Mosquitto's limits over MQTT 3.1.1, which states none) got it again after every reconnect, as paho
        sends what it holds: the gateway reconnected for good. The same message found so at
        ``POISON_DROPS`` drops in a row is taken out of paho's queue (``publish_dropped``, naming the
        topic); the rest is sent on."""
        held = getattr(client, "_out_messages", None)
        lock = getattr(client, "_out_message_mutex", None)
        if held is None or lock is None:
            return
        with lock:
            first = next(iter(held.values()), None)
            if first is None or first.qos == 0 or first.state != paho.mqtt_ms_wait_for_puback:
                self._suspect = None
                return
            mid, topic = first.mid, first.topic
            n = self._suspect[2] + 1 if self._suspect and self._suspect[:2] == (mid, topic) else 1
            if n < POISON_DROPS:
                self._suspect = (mid, topic, n)
                return
            del held[mid]
            self._suspect = None
        exc = MqttError(
            f"mqtt source {self.name!r}: broker {self.settings.host}:{self.settings.port} dropped the connection "
            f"each of the {n} times the message to {topic!r} was sent: not sent again. The broker refuses it "
            "(a topic its policy or ACL does not allow, a size, QoS or retain flag it does not take; its log "
            "says which); the messages after it are sent on"
        )
        exc.retryable = False
        self._refuse_held(mid, topic, exc, "publish_dropped")

    def _kicked(self, client, reason_code) -> bool:
        """Whether connections are being taken over (paho's thread): MQTT 5 reason 0x8E (Session taken
        over), or ``SHORT_SESSIONS`` connections in a row lost within ``SHORT_SESSION_S`` of their CONNACK
        (MQTT 3.1.1, or a broker that just closes the socket: Mosquitto 2.0). Two gateways cloned from one
        disk image, with one client_id, kick each other off every second for good, each reconnect resetting
        paho's backoff. Said once (``session_taken_over``), and the reconnect delay doubles at each such
        drop (up to ``reconnect_max_s``) until a connection lasts."""
        s = self.settings
        taken = getattr(reason_code, "value", None) == 0x8E
        if not self._connected_at:  # the same drop told again (paho's paths), or no connection since
            return bool(self._kicked_delay)
        if time.monotonic() - self._connected_at < SHORT_SESSION_S:
            self._short_sessions += 1
            self._poison(client)
        else:
            self._short_sessions = 0
            self._suspect = None
            if self._kicked_delay:  # a connection lasted: the settings' own delays again
                self._kicked_delay = 0.0
                client.reconnect_delay_set(max(1, int(s.reconnect_min_s)), max(1, int(s.reconnect_max_s)))
        self._connected_at = 0.0
        if not taken and self._short_sessions < SHORT_SESSIONS:
            return False
        self._kicked_delay = min(max(2 * self._kicked_delay, 2 * s.reconnect_min_s, 2.0), s.reconnect_max_s)
        client.reconnect_delay_set(max(1, int(self._kicked_delay)), max(1, int(s.reconnect_max_s)))
        meanwhile = f"reconnecting less often meanwhile (up to reconnect_max_s, {s.reconnect_max_s:g} s)"
        if not s.client_id:  # a random id of its own: no other client has it
            self._notice_threadsafe(
                "dropped_after_connect",
                f"broker {s.host}:{s.port} dropped the connection right after each of the last "
                f"{self._short_sessions} connects: it refuses something this client sends (a message over its "
                "size limit, a QoS or retain flag it does not take): the broker's log says which; "
                + meanwhile,
            )
            return True
        why = (
            "the broker says another client took this one's session over (0x8E)"
            if taken
            else f"the broker dropped the connection right after each of the last {self._short_sessions} "
            "connects"
        )
        self._notice_threadsafe(
            "session_taken_over",
            f"{why}: another client connects to {s.host}:{s.port} with the same client_id {s.client_id!r} (a "
            "gateway cloned from this one's disk image?) and each connect ends the other's; give each gateway "
            f"its own client_id (empty: a random one); {meanwhile}. If no other client has it, the broker "
            "drops this one for what it sends: its log says why",
        )
        return True

    def _on_connect_fail(self, client, userdata) -> None:
        self.state = ConnectionState.BACKOFF
        self._error_threadsafe(
            "broker_unreachable", f"reconnect to {self.settings.host}:{self.settings.port} failed"
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        asked = self._acks.pop(mid, self._asked)
        for (topic, qos), rc in zip(asked, reason_codes or (), strict=False):
            if rc.is_failure:  # a broker's ACL refuses a filter this way (MQTT 3.1.1: 0x80): nothing comes
                fix = _SUBACK_FIX.get(rc.value, "check the broker's ACL for this client's user")
                self._error_threadsafe(
                    "subscribe_refused",
                    f"broker {self.settings.host}:{self.settings.port} refused the subscription to {topic!r} "
                    f"({rc}): nothing on it will arrive; {fix}",
                )
            elif rc.value < qos:
                self._notice_threadsafe(
                    "qos_downgraded",
                    f"broker granted QoS {rc.value} for {topic!r} (asked {qos}): what is published there while "
                    "this gateway is away is not kept for it; check the broker's max_qos",
                )
        if self._acks:  # one SUBSCRIBE per subscription (MQTT 5 identifiers): the last SUBACK goes on
            return
        if self.settings.sparkplug.host_id is not None:  # subscribed first, then online (Sparkplug 3.0)
            client.publish(self._state_topic, self._state(True), qos=1, retain=True)
            if self._sessions:  # a reconnect: the rebirths it asks may go now, after the STATE birth
                self._state_sent += 1
                self._channel.wake_threadsafe()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.subscribed.set)

    @property
    def _state_topic(self) -> str:
        sps = self.settings.sparkplug
        if sps.state_version == "2.2":
            return f"STATE/{sps.host_id}"
        return f"{sp.NAMESPACE}/STATE/{sps.host_id}"

    def _state(self, online: bool) -> bytes:
        """This host application's STATE payload (Sparkplug 3.0: JSON, the same timestamp in the birth
        and the death that follows it; 2.2: the text ONLINE or OFFLINE)."""
        if self.settings.sparkplug.state_version == "2.2":
            return b"ONLINE" if online else b"OFFLINE"
        return json_codec.dumps({"online": online, "timestamp": self._state_ts}).encode()

    def _own_state(self, payload: bytes) -> None:
        """Our STATE as the broker holds it: "offline" while we are connected (the will of a connection
        the broker had not yet dropped, delivered after we came back) is put right at once."""
        online: Any = None
        if self.settings.sparkplug.state_version == "2.2":
            if payload.strip().upper() == b"OFFLINE":
                online = False
        else:
            try:
                online = json.loads(payload).get("online")
            except Exception:
                pass
        c = self._client
        if online is False and c is not None and not self._stopping:
            c.publish(self._state_topic, self._state(True), qos=1, retain=True)

    def _on_message(self, client, userdata, msg) -> None:
        # Only stamp and hand over: this thread must read and acknowledge promptly, and
        # every microsecond spent here delays the broker's in-flight window (measured in
        # bench/mqtt_bench.py: decoding here cost more than decoding in the loop).
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # MQTT topics are UTF-8 and Mosquitto checks it, but not every broker or bridge does. paho
            # decodes the name only when asked, and an exception here would end paho's network thread:
            # the connection would stay up with nothing more read, for every topic of this source
            self._error_threadsafe(
                "bad_topic", f"a message on a topic that is not UTF-8 ({bytes(msg._topic)[:60]!r}); skipped"
            )
            return self._skipped(msg)
        if self._state_ts and topic == self._state_topic:
            self._own_state(msg.payload)
            return self._skipped(msg)
        if self._sub_ids:
            ids = getattr(msg.properties, "SubscriptionIdentifier", None)
            if ids:
                first = self._first_sub.get(topic)
                if first is None:
                    if len(self._first_sub) + self._first_units > MAX_TAGS:  # bounded: topic names come
                        self._first_sub.clear()  # from outside, of any length
                        self._first_units = 0
                    self._first_units += len(topic) // NAME_UNIT
                    # the first unshared subscription's copy: a shared one's goes to one client of its
                    # group, maybe another gateway. Matched by shared subscriptions alone: every copy is read
                    subs = self.settings.subscriptions
                    first = self._first_sub[topic] = next(
                        (
                            i + 1
                            for i, s in enumerate(subs)
                            if s.filter == s.topic and paho.topic_matches_sub(s.filter, topic)
                        ),
                        0,
                    )
                if first and first not in ids:  # the copy for another subscription: read once, by the first
                    self._notice_threadsafe(
                        "overlapping_copy",
                        f"topic {shown_topic(topic)} matches more than one subscription; the broker sends a copy for "
                        "each (MQTT 5): only the first (unshared) subscription's copy is read",
                    )
                    return self._skipped(msg)
        if len(msg.payload) > self._max_bytes:
            self._error_threadsafe(
                "too_large",
                f"topic {shown_topic(topic)}: message of {len(msg.payload)} bytes exceeds max_message_bytes "
                f"({self._max_bytes}); skipped undecoded",
            )
            return self._skipped(msg)
        if (
            self._redelivered is not None
            and msg.qos
            and self._redelivered.repeated(msg.mid, topic, msg.payload, msg.dup)
        ):
            self._notice_threadsafe(
                "redelivered",
                f"topic {shown_topic(topic)}: a QoS 1 message the broker sent again after a reconnect (DUP: its "
                "acknowledgement was lost with the connection) was passed on before; not passed on twice",
            )
            if self._unacked is not None:
                self._unacked.redelivered(msg.mid)
            return
        unacked = self._unacked
        if not self._handing:  # stopping: never handed on; a QoS 1 message of a persistent session is not
            if unacked is not None and msg.qos:  # acknowledged, and the broker delivers it at the next start
                self._stop_left += 1
            else:
                self._stop_lost += 1
            return
        cell = unacked.add(msg.mid) if unacked is not None and msg.qos else None
        now = time.time()
        # with the wall clock's offset from the monotonic one at receipt (``_out_of_order``: this gateway's own
        # clock stepped since a device's step is judged exactly, a message queued across it too; ~60 ns)
        self._channel.put_threadsafe([topic, msg.payload, now, msg.retain], cell, now - time.monotonic())

    def _skipped(self, msg) -> None:
        """A message skipped before the queue (counted by the caller): acknowledged in its turn."""
        unacked = self._unacked
        if unacked is not None and msg.qos:
            unacked.add(msg.mid, True)

    # ---- errors ----------------------------------------------------------------------------
    def _notice(self, key: str, msg: str, n: int = 1, cause: str | None = None) -> None:
        # data before birth (this host started after the node) and a node's late values after an outage
        # are routine: INFO, counted apart. ``cause``: a key's messages kept per distinct cause (``Notices``)
        msg = escaped(msg)  # (as ``_error``)
        self.notices.note(
            key,
            "mqtt source %r: %s",
            self.name,
            msg,
            n=n,
            cause=cause,
            level=logging.INFO
            if key
            in (
                "data_before_birth",
                "historical",
                "retained",
                "retained_skipped",
                "retained_fresh",
                "redelivered",
                "left_at_stop",
                "overlapping_copy",
                "repeated_waveform",
                "empty_message",
            )
            else logging.WARNING,
        )

    def _error(self, reason: str, detail: str, n: int = 1) -> None:
        # a name from the wire quoted raw (a Sparkplug group or edge node id holding a bidirectional override, which
        # Mosquitto passes, or a line feed, which a broker that checks less passes) turned the log line, last_error
        # and /status around, or forged a line: escaped (a C-speed check when there is none)
        detail = self._count_error(reason, escaped(detail), n)
        self._burst.log(reason, "mqtt source %r: %s: %s", self.name, reason, detail)

    def _count_error(self, reason: str, detail: str, n: int = 1) -> str:
        """Count an error, ``n`` times for one that stands for ``n`` messages (the detail as counted: the publish
        connection's names it, with its client id)."""
        if self._pub_id is not None:
            detail = f"publish connection (client id {self._pub_id}): {detail}"
        self.stats.error(reason, detail, n)
        if self._pub_id is not None:
            self._own_last_error = self.stats.last_error  # as the source's: "<reason>: <detail>", masked
        return detail

    def _notice_threadsafe(self, key: str, msg: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._notice, key, msg)
            except RuntimeError:  # loop closing: nothing to tell
                pass

    def _error_threadsafe(self, reason: str, detail: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._error, reason, detail)
                return
            except RuntimeError:
                pass
        self._error(reason, detail)

    # ---- consuming -------------------------------------------------------------------------
    def _subscription(self, topic: str) -> Subscription | None:
        """The first subscription whose filter matches ``topic`` (None: none does)."""
        return next((s for s in self.settings.subscriptions if paho.topic_matches_sub(s.filter, topic)), None)

    def _route(self, topic: str):
        """The decoder of ``topic``'s subscription (None: none matches), cached per topic."""
        try:
            return self._route_cache[topic]
        except KeyError:
            pass
        dec: Any
        if not topic:
            # no topic name (MQTT allows none empty): a topic alias standing for it, which this client never
            # allows (its CONNECT states no Topic Alias Maximum) and paho does not resolve
            dec = _no_topic
        elif "+" in topic or "#" in topic or "\x00" in topic:
            # a topic name a broker should never deliver (wildcards belong to filters; NUL is refused by
            # MQTT): its readings would carry tag names no forward or rule could name
            dec = _bad_topic
        else:
            sub = self._subscription(topic)
            dec = None if sub is None else self._decoders[id(sub)]
        units = len(topic) // NAME_UNIT
        if len(self._route_cache) + self._route_units + units < MAX_TAGS:  # bounded: topics come from the
            self._route_cache[topic] = dec  # outside world, of any length
            self._route_units += units
        return dec

    def decode(
        self,
        topic: str,
        payload: bytes,
        received_at: float,
        parsed: _Parsed | sparkplug_host.Decoded | None = None,
    ) -> list[Reading] | _Chunks | _Steps:
        """Readings from one message (bad input counted and skipped, never raised); given ``parsed`` (a large JSON
        message decoded in a worker thread, ``_decoded``), those left to make are a ``_Chunks`` (a Sparkplug
        message's, ``_Steps``)."""
        dec = self._route(topic)
        if dec is None:
            return []
        if len(self._last_ts) + self._tag_units > MAX_TAGS:  # bounded: tag names come from the outside world
            self._notice(
                "too_many_tags",
                f"over {MAX_TAGS} tag names seen (the latest on topic {shown_topic(topic)}): a device that puts a counter "
                "or a time in its topic makes a new tag per message; the order check starts afresh. Narrow "
                "the subscription, or set tag_prefix_topic: false",
            )
            self._last_ts.clear()
            self._steps.clear()
            self._steps_line.clear()
            self._steps_over = math.inf
            self._tag_units = 0
        try:
            return (
                dec(topic, payload, received_at)
                if parsed is None
                else dec(topic, payload, received_at, parsed)
            )
        except json_codec.CodecError as e:
            hint = ""
            if e.reason == "malformed_json" and topic.startswith(sp.NAMESPACE + "/"):
                # a JSON subscription (`#`) on a broker that carries Sparkplug B too: its protobuf quoted as bytes
                hint = (
                    f"; a Sparkplug B message ({sp.NAMESPACE}/...): read it with a subscription of codec: "
                    f"sparkplug_b, or leave {sp.NAMESPACE}/ out of this JSON subscription's filter"
                )
            self._error(e.reason, f"topic {shown_topic(topic)}: {e.detail}{hint}")
            return []
        except Exception as e:  # a payload no check foresaw: skipped and counted, never the source's end
            if "decode_failed" not in self.stats.errors_by_reason:  # the first with its traceback
                log.exception(
                    "mqtt source %r: a message on %s could not be decoded; skipped",
                    self.name,
                    shown_topic(topic),
                )
            self._error("decode_failed", f"topic {shown_topic(topic)}: {type(e).__name__}: {str(e)[:200]}")
            return []

    def _valid_text(self, topic: str, readings: list[Reading]) -> None:
        """Each lone surrogate in a reading's text value or tag name (a JSON key, a record's name) made U+FFFD,
        counted as ``invalid_text`` (``devices.base.valid_text``): written as a "\\ud800" escape, it made
        strict JSON parsers (serde_json, PostgreSQL jsonb) refuse every forwarded message and outbox record
        holding it. Called by the JSON decoder; Sparkplug B's protobuf refuses text that is not UTF-8.
        Two names of one message that differ only by such text ("t\\ud800" and "t\\udc00", a device's Latin-1
        keys) would be one tag: both are refused as a key given twice is (``duplicate_key``), the others read."""
        # a name made valid -> the names of this message that give it; the readings so renamed
        came_as: dict[str, set[str]] | None = None
        renamed: set[int] = set()
        for i, r in enumerate(readings):
            v, tag = r.value, r.tag
            fixed = valid_text(v) if type(v) is str or type(v) is list else v
            named = tag if tag.isascii() else valid_text(tag)
            if named is not tag:
                came_as = came_as or {}
                came_as.setdefault(named, set()).add(tag)
                renamed.add(i)
            if fixed is not v or named is not tag:
                self._error(
                    "invalid_text",
                    f"topic {shown_topic(topic)}: tag {shown_topic(tag)}: "
                    f"{'its name' if fixed is v else 'its value'} holds text that is not valid Unicode (a lone "
                    'surrogate: a "\\ud800" escape, or its own bytes); '
                    "passed on with U+FFFD in its place",
                )
                readings[i] = dataclasses.replace(r, value=fixed, tag=named)
        if came_as is None:
            return
        for i, r in enumerate(readings):  # a name valid as it came (the device's own U+FFFD)
            if i not in renamed and r.tag in came_as:
                came_as[r.tag].add(r.tag)
        clashes = {named: names for named, names in came_as.items() if len(names) > 1}
        if not clashes:
            return
        for named, names in clashes.items():
            # the first few names, then how many more: 8,000 names that clash made a line of 176,220 characters
            shown = sorted(names)
            said = ", ".join(shown_topic(n) for n in shown[:CLASH_NAMES_SHOWN])
            if len(shown) > CLASH_NAMES_SHOWN:
                said += f" and {len(shown) - CLASH_NAMES_SHOWN:,} more"
            self._error(
                "duplicate_key",
                f"topic {shown_topic(topic)}: names {said} differ only by text that is not valid Unicode: each "
                f"would be tag {shown_topic(named)}, two fields' values in one; none of them is read (the message's "
                "other values are): make the device send UTF-8",
            )
        readings[:] = [r for r in readings if r.tag not in clashes]

    def _name_too_long(
        self,
        name: str,
        what: str = "tag name",
        unread: str = "its value is not read (the message's other values are)",
        escaped: bool = False,
    ) -> None:
        """A JSON key path or record name, or a topic its tags are named after, over ``MAX_NAME_CHARS``
        characters: counted and skipped (such a name was a tag, and a record of it sent, per reading).
        ``escaped``: the name is one level of a tag named after its topic (``json_codec.tag_level``): the bound
        holds for the encoded name, and one that grew past it through the encoding says so."""
        grew = ""
        if escaped and "%2" in name:
            came = json_codec.tag_level_origin(name)
            if len(came) != len(name):
                grew = (
                    f"; the payload's name was {len(came)} characters and grew to {len(name)} through the encoding "
                    "of its '/' and '%' (one level of a tag named after its topic, tag_prefix_topic)"
                )
        self._error(
            "name_too_long",
            f"{what} {shown_topic(name)} is over {MAX_NAME_CHARS} characters (a Sparkplug metric name's bound)"
            + grew
            + ": "
            + unread,
        )

    def _ahead(
        self, tag: str, ts: float, received_at: float, fix: str = "or check timestamp_format"
    ) -> float:
        """The time of a reading stamped further ahead of this gateway's clock than ``max_clock_skew_s``: the
        receive time. Kept, it would make every later reading of the tag look older and be dropped as
        out of order until the wall clock caught up (a device clock set years ahead, microseconds sent as
        milliseconds). The receive time is not the device's clock, so it does not move the tag's order
        either: the next reading, stamped by the device a little behind this gateway, is not dropped. The same
        for a time before 2001 (``CLOCK_SET_S``): a clock never set, which restarts from 1970 at each power-on."""
        if ts < CLOCK_SET_S:
            msg = (
                f"tag {shown_topic(tag)}: timestamp {ts:.3f} is {time.strftime('%Y-%m-%d', time.gmtime(max(ts, 0)))}: the "
                "device's clock was never set (without NTP it counts from 1970 at power-on, and after a restart "
                f"every reading would look older than the last); the receive time is used: set the device's clock "
                f"(NTP), {fix}"
            )
        else:
            msg = (
                f"tag {shown_topic(tag)}: timestamp {ts:.3f} is {ts - received_at:+.0f} s ahead of this gateway's clock (over "
                f"max_clock_skew_s {self.settings.max_clock_skew_s:g}); the receive time is used: set the "
                f"device's clock (NTP), {fix}"
            )
        self._error("clock_skew", msg)
        return received_at

    def _unset_before(self, received_at: float) -> float:
        """Times before this come from a device clock never set: ``CLOCK_SET_S`` while this gateway's own
        clock is past it (a gateway without one of its own tells nothing), and clocks are checked at all
        (``max_clock_skew_s`` 0 turns both checks off)."""
        return CLOCK_SET_S if self._clock_checked and received_at >= CLOCK_SET_S else -math.inf

    def _json_readings(
        self, prefix: str, triples, received_at: float, non_finite: bool = False
    ) -> list[Reading]:
        # _order fused with construction: this runs for every tag of every message on the loop
        # (bench/mqtt_bench); JSON values are of GOOD quality, but for a NaN or infinite one (or an array
        # holding one), which the codec keeps only under non_finite: bad and reports (``non_finite``: the
        # message holds one, so its values are looked at; the common message pays nothing): BAD
        name, last_ts, out = self.name, self._last_ts, []
        ahead = received_at + self._max_ahead
        unset = self._unset_before(received_at)
        isfinite = math.isfinite
        steps = self._steps  # a device clock step held for some tag (rare): its fast times passed once only
        for t, v, ts, rate in triples:
            if len(t) > MAX_NAME_CHARS:
                self._name_too_long(t, escaped=prefix != "")
                continue
            tag = prefix + t
            if non_finite and (
                (type(v) is float and not isfinite(v)) or (type(v) is np.ndarray and not np.isfinite(v).all())
            ):
                # a sensor's fault (an open thermocouple sent as NaN): BAD, as the OPC UA source passes it.
                # A BAD stamped with the receive time does not move the tag's order (as _order)
                if ts > ahead or ts < unset:
                    ts = self._ahead(tag, ts, received_at)
                elif ts != received_at and ts >= (had := last_ts.get(tag, -math.inf)):
                    if had == -math.inf:  # a new tag name
                        self._tag_units += len(tag) // NAME_UNIT
                    last_ts[tag] = ts
                out.append(Reading(name, tag, v, ts, received_at, Quality.BAD, rate, "non_finite"))
                continue
            if ts > ahead or ts < unset:  # the receive time, not the device's clock: the tag's order stays
                out.append(
                    Reading(name, tag, v, self._ahead(tag, ts, received_at), received_at, Quality.GOOD, rate)
                )
                continue
            if ts == received_at:
                # no time of its own (none in the message, or null: a device without a clock yet): the receive
                # time neither moves the tag's order nor is held to it, as in _order: moved, a device whose
                # clock runs behind this gateway's had its next stamped readings dropped as out of order
                out.append(Reading(name, tag, v, ts, received_at, Quality.GOOD, rate))
                continue
            last = last_ts.get(tag)
            if (
                last is not None
                and (ts < last or steps)
                and self._out_of_order(tag, ts, last, received_at, triples, prefix)
            ):
                if not self._keep_out_of_order:
                    continue
            else:
                if last is None:  # a new tag name
                    self._tag_units += len(tag) // NAME_UNIT
                last_ts[tag] = ts
            out.append(Reading(name, tag, v, ts, received_at, Quality.GOOD, rate))
        return out

    def _lagging(self, topic: str, r: Reading) -> None:
        """Say once (``clock_behind``) that ``topic``'s readings run a steady while behind this gateway's clock
        (``CLOCK_BEHIND_S``), judged by the first reading of each of its messages; the times are kept."""
        lag = r.received_at - r.timestamp
        seen = self._lags.get(topic)
        if lag < CLOCK_BEHIND_S:
            if seen is not None:
                del self._lags[topic]
            return
        if seen is None or abs(lag - seen[0]) > CLOCK_BEHIND_JITTER_S:
            if seen is None and len(self._lags) >= MAX_LAG_TOPICS:
                self._lags.clear()  # bounded: topics come from outside
            self._lags[topic] = (lag, r.received_at, False)
            return
        if seen[2] or r.received_at - seen[1] < CLOCK_BEHIND_STEADY_S:
            return
        self._lags[topic] = (seen[0], seen[1], True)
        quarters = round(lag / 900.0)
        zone = (
            f" (about {quarters / 4:g} h: a time zone's offset?)"
            if quarters and abs(lag - 900.0 * quarters) <= 120.0
            else ""
        )
        self._notice(
            "clock_behind",
            f"topic {shown_topic(topic)}: its readings have been stamped a steady {lag:.0f} s{zone} behind this "
            f"gateway's clock for {r.received_at - seen[1]:.0f} s: the device's clock is behind, or it writes its "
            "local time without a zone, which is read in json_mapping.timezone (UTC unless set): set its clock "
            "(NTP), or set json_mapping.timezone to its zone (Europe/Berlin, America/Chicago); the readings keep "
            "their times",
        )

    def _out_of_order(
        self,
        tag: str,
        ts: float,
        last: float,
        received_at: float,
        message: Sequence[Any],
        prefix: str | None = None,
    ) -> bool:
        """Whether a reading of ``tag`` stamped ``ts`` (its last: ``last``) is dropped as ``out_of_order``, said:
        older than the last and no clock step (``_stepped_back``); or, while a step of the tag is held, stamped by
        the fast clock from before the step (over half its lead at the step ahead of the receive time, over
        ``CLOCK_STEP_S`` at least) at or before a time of it already passed: a message re-sent from before
        the step (its client's in-flight one at a reconnect), which came "in order" after the step and was passed a
        second time, moving the tag ahead again. A fast reading newer than those (the rest of a batch sent across the
        step) is passed, as before. ``message``: the readings of its message (``prefix``: as (name, value, time,
        ...) tuples, each tag ``prefix`` + name; None: ``Reading``s), for ``_stepped_back``."""
        if ts < last:
            if self._stepped_back(tag, ts, last, received_at, message, prefix):
                return False
            self._error("out_of_order", f"tag {shown_topic(tag)}: timestamp {ts} is older than {last}")
            return True
        stepped = self._steps.get(tag)
        at = self._held_at(received_at)
        if stepped is None:
            if at >= self._steps_over:
                # another tag's hold over, that tag silent since (a device removed): forgotten, else every reading of
                # every tag paid this call for the process's life
                self._forget_steps(at)
            return False
        if at - stepped[0] >= CLOCK_STEP_HOLD_S:
            # its hold over: forgotten, so that once none is held the readings in order pay no look-up
            del self._steps[tag]
            return False
        # not the fast clock's: under half its lead at the step ahead (a clock set right that runs a second or two
        # ahead of this gateway's is no re-send: its new readings were dropped), or under 2 CLOCK_STEP_S more ahead
        # than the clock set right was at the step (a re-send over half the lead late was passed twice)
        near = received_at + min(max(CLOCK_STEP_S, stepped[3] / 2), stepped[4] + 2 * CLOCK_STEP_S)
        # judged by this gateway's clock as it was at the step (its offset then, ``stepped[5]``, less the one the
        # receive time was stamped with): its own clock set back since (its NTP), the device's clock set right read
        # ahead of it by as much, and its readings were dropped as re-sends until they passed the fast clock's
        # times; set forward X s, the fast clock's re-sends within X s of it passed a second time
        offset = self._recv_offset
        if offset is not None:
            if ts <= near + stepped[5] - offset:
                return False
        # the offset at receipt not known (a reading not read from a received message): the later of the two, a
        # right reading never dropped (a message received before a step of the clock and read after it)
        elif ts <= near or ts <= near + stepped[5] - _wall_offset():
            return False
        if ts > stepped[2]:  # newer than any the fast clock gave: passed, the fast times known up to it
            self._steps[tag] = (stepped[0], stepped[1], ts, stepped[3], stepped[4], stepped[5])
            return False
        self._error(
            "out_of_order",
            f"tag {shown_topic(tag)}: timestamp {ts} is of its device's clock before it was set back, at or before "
            f"{stepped[2]} already passed (a message re-sent)",
        )
        return True

    def _held_at(self, received_at: float) -> float:
        """``received_at`` on the monotonic clock (less the wall clock's offset at the receipt, ``_recv_offset``;
        unknown: now's), which a step's hold is timed by: this gateway's own clock set forward X s within a hold
        ended it X s early, and the fast clock's re-sends after that passed a second time."""
        off = self._recv_offset
        return received_at - (_wall_offset() if off is None else off)

    def _forget_steps(self, now: float) -> None:
        """The steps whose hold is over by ``now`` (a receive time, ``_held_at``) forgotten, oldest first, up to the
        first still held (a scan of every step held, its tags' steps spread over seconds, came at nearly every
        reading: 100,000 tags, 20 times the cost of a reading while they expired); each looked at once."""
        line, steps = self._steps_line, self._steps
        self._steps_over = math.inf
        while line:
            at, t = line[0]
            if now - at < CLOCK_STEP_HOLD_S:
                self._steps_over = at + CLOCK_STEP_HOLD_S
                break
            line.popleft()
            st = steps.get(t)
            if st is not None and st[0] == at:  # not forgotten at its own reading, nor made again since
                del steps[t]

    def _stepped_back(
        self, tag: str, ts: float, last: float, received_at: float, message: Sequence[Any], prefix: str | None
    ) -> bool:
        """Whether a reading of ``tag`` older than its last one (``last``) is its device's clock set back from fast
        (NTP stepping a clock that ran fast, a clock synced after boot): the tag's last time is still more than
        ``CLOCK_STEP_S`` ahead of this gateway's clock (within ``max_clock_skew_s``, so it was taken) and this one
        is not, nor more than ``CLOCK_STEP_NEAR_S`` behind it, or the newest reading of the tag in its message
        (``message``, ``prefix``: ``_out_of_order``) not ahead of it is not (a batching device's first batch after
        the step: its part older than CLOCK_STEP_NEAR_S was dropped); at most ``CLOCK_STEPS_HELD`` times per tag in
        ``CLOCK_STEP_HOLD_S`` (a QoS 1 message re-sent late, two devices on one topic, a buffer sent between live
        values: each went back in time, the tag's times flipping at every one; twice, as the fast clock's readings
        from before the step may come after it once: a batch sent across it). Taken, said once
        per burst (``device_clock_stepped``): the tag's order starts again from it, where its readings were dropped
        as out of order until the device's clock caught up with the times it gave when fast (200 s of a sensor's
        readings for a clock 200 s fast). With the clock checks off (``max_clock_skew_s`` 0) never."""
        if not self._clock_checked or last <= received_at + CLOCK_STEP_S or ts > received_at + CLOCK_STEP_S:
            return False
        if ts < received_at - CLOCK_STEP_NEAR_S and self._newest(tag, received_at, message, prefix) < (
            received_at - CLOCK_STEP_NEAR_S
        ):
            return False
        # a step back again soon after one: two devices (clocks) on one topic, or a buffer's values sent between
        # live ones; taken, each such reading went back in time, the tag's times flipping at every one
        stepped = self._steps.get(tag)
        at = self._held_at(received_at)
        if stepped is None or at - stepped[0] >= CLOCK_STEP_HOLD_S:
            if at >= self._steps_over:  # (steps made, no tag without one read: the line kept short)
                self._forget_steps(at)
            self._steps[tag] = (
                at,
                1,
                last,
                last - received_at,
                max(ts - received_at, 0.0),
                received_at - at,  # the wall clock's offset at the step's receipt
            )
            self._steps_line.append((at, tag))
            self._steps_over = min(self._steps_over, at + CLOCK_STEP_HOLD_S)
        elif stepped[1] >= CLOCK_STEPS_HELD:
            return False
        else:
            self._steps[tag] = (
                stepped[0],
                stepped[1] + 1,
                max(stepped[2], last),
                max(stepped[3], last - received_at),
                max(stepped[4], ts - received_at),
                stepped[5],
            )
        self._notice(
            "device_clock_stepped",
            f"tag {shown_topic(tag)}: its device's clock was set back by {last - ts:.3f} s (its last reading was "
            f"stamped {last - received_at:.3f} s ahead of this gateway's clock): its readings are taken from its "
            "clock as set now; the readings stamped while it ran fast keep their times; check the device's time "
            "sync (NTP)",
        )
        return True

    def _newest(self, tag: str, received_at: float, message: Sequence[Any], prefix: str | None) -> float:
        """The newest time of ``tag`` in ``message`` (``_out_of_order``) not ahead of ``received_at`` by over
        ``CLOCK_STEP_S`` (a batch sent across a step holds the fast clock's too), a value without a time of its
        own (stamped ``received_at``) left out; -inf: none. One scan of the message finds every tag's, kept for
        its next older readings (a buffer of old readings, each dropped, scanned it once, not once each; nor once
        per tag: a message of 4,000 tags replayed from a buffer by a device whose clock runs fast cost 70 times
        as much per reading)."""
        seen = self._newest_seen
        if seen is None or seen[0] is not message:
            bound = received_at + CLOCK_STEP_S
            newest: dict[str, float] = {}
            stamps = (
                ((r.tag, r.timestamp) for r in message)
                if prefix is None
                else ((prefix + x[0], x[2]) for x in message)
            )
            for name, t in stamps:
                # a value stamped the receive time has no time of its own (``_json_readings``): not the newest
                # (an old buffered value beside it was taken as a clock step)
                if t <= bound and t != received_at and t > newest.get(name, -math.inf):
                    newest[name] = t
            self._newest_seen = seen = (message, newest)
        return seen[1].get(tag, -math.inf)

    def _record_readings(self, prefix: str, tuples, received_at: float) -> list[Reading]:
        """Readings of a records message, in its order: each record brings its own quality (a BAD or
        UNCERTAIN value is passed on as such, as an OPC UA source passes a node's status); a gateway's
        buffered values of one tag come in one message, ordered by time as any others."""
        name, last_ts, out = self.name, self._last_ts, []
        ahead = received_at + self._max_ahead
        unset = self._unset_before(received_at)
        steps = self._steps  # as in _json_readings
        for t, v, ts, rate, q in tuples:
            if len(t) > MAX_NAME_CHARS:
                self._name_too_long(t, escaped=prefix != "")
                continue
            tag = prefix + t
            # why not GOOD (json_codec.Status): the device's own word, or its number's name; a GOOD one's plain
            # "good" costs this one comparison
            why = None if q == "good" else q.reason
            if ts > ahead or ts < unset:  # the receive time, not the device's clock: the tag's order stays
                ts = self._ahead(tag, ts, received_at)
                out.append(Reading(name, tag, v, ts, received_at, QUALITY_BY_NAME[q], rate, why))
                continue
            if ts == received_at:  # no time of its own, nor its message: the receive time, as above
                out.append(Reading(name, tag, v, ts, received_at, QUALITY_BY_NAME[q], rate, why))
                continue
            last = last_ts.get(tag)
            if (
                last is not None
                and (ts < last or steps)
                and self._out_of_order(tag, ts, last, received_at, tuples, prefix)
            ):
                if not self._keep_out_of_order:
                    continue
            else:
                if last is None:  # a new tag name
                    self._tag_units += len(tag) // NAME_UNIT
                last_ts[tag] = ts
            out.append(Reading(name, tag, v, ts, received_at, QUALITY_BY_NAME[q], rate, why))
        return out

    def _order(self, readings: list[Reading]) -> list[Reading]:
        """Sparkplug readings held to their tags' order, and to the clock checks of ``_json_readings``: a time
        too far ahead, or before 2001 (an edge node whose clock was never set stamps its uptime: 1970, and
        after each restart older than its last reading), gets the receive time and does not move the order."""
        keep = self._keep_out_of_order
        last_ts = self._last_ts
        out: list[Reading] = []
        steps = self._steps  # as in _json_readings
        if not readings:
            return out
        unset = self._unset_before(readings[0].received_at)  # one message's readings: one receive time
        for r in readings:
            if r.timestamp > r.received_at + self._max_ahead or r.timestamp < unset:  # as in _json_readings
                ts = self._ahead(
                    r.tag, r.timestamp, r.received_at, "or check its times are epoch milliseconds"
                )
                out.append(dataclasses.replace(r, timestamp=ts))
                continue
            if r.timestamp == r.received_at:
                # stamped with this gateway's receive time: a node that sent no time or 0 (no clock yet, as it
                # boots), an NDEATH's BAD. Not the node's clock, so it is neither held to the tag's order nor
                # moves it: moved, a node whose clock runs behind this gateway's had the readings after it (its
                # rebirth's after a death, its first stamped ones once its clock was set) dropped as out of
                # order; held, one of a node whose clock runs ahead was dropped
                out.append(r)
                continue
            last = last_ts.get(r.tag)
            if (
                last is not None
                and r.quality is Quality.GOOD
                and (r.timestamp < last or steps)
                and self._out_of_order(r.tag, r.timestamp, last, r.received_at, readings)
            ):
                if not keep:
                    continue
            else:
                if last is None:  # a new tag name
                    self._tag_units += len(r.tag) // NAME_UNIT
                last_ts[r.tag] = r.timestamp
            out.append(r)
        return out

    async def items(self) -> AsyncIterator[Reading]:
        """Readings until ``stop()``."""
        # Under load, waking the loop per message makes it fight paho's thread for the GIL
        # (measured: ingest 38k -> 14k msg/s). When wake-ups come faster than every
        # ``coalesce_s``, pause that long so that messages arrive in batches; an idle stream
        # is not delayed, nor is a backlog (the queue hands it over TAKE_MAX messages at a time).
        #
        # A message is taken once its last reading is handed over (yielded); its QoS 1 acknowledgement goes
        # then, with the batch's (``_Unacked``). A consumer that leaves mid-batch leaves the rest in ``_held``.
        coalesce_s = self.settings.handover_coalesce_ms / 1000.0
        last_wake = -1.0
        backlog = False  # the last batch was a full one: more are waiting, taken without a pause
        clock = time.perf_counter
        due = clock() + YIELD_AFTER_S
        self._readers += 1
        try:
            while self._handing:
                # Sparkplug nodes gone silent without a death: their tags BAD, as a death makes them (``tick``)
                if self.sparkplug.stale_waiting():
                    for r in self._order(self.sparkplug.take_stale()):
                        yield r
                # left by a consumer that went away mid-batch: on with it first
                if self._pos < len(self._held):
                    batch = self._held
                else:
                    taken = await self._take_batch(coalesce_s, last_wake, backlog)
                    if taken is None:
                        return
                    batch = taken
                    backlog = len(batch) >= TAKE_MAX
                    last_wake = time.monotonic()
                    self._held, self._pos, self._readings = batch, 0, None
                    # a reconnect's (``session_lost``): BAD readings of nodes that lived
                    if self.sparkplug.stale_waiting():
                        for r in self._order(self.sparkplug.take_stale()):
                            yield r
                while self._pos < len(batch):
                    if not self._handing:
                        return
                    entry = batch[self._pos]
                    readings = self._readings
                    if readings is None:
                        if type(entry[1]) is bytes and len(entry[1]) > _WORKER_BYTES:
                            readings = await self._decoded(entry)  # parsed in a worker thread
                            if not self._handing:  # stopped meanwhile: nothing handed on, its values not kept
                                self._chunks = None
                                return
                        else:
                            readings = self._read(entry)
                        self._readings, self._ri = readings, 0
                    cell = entry[5]
                    while True:
                        n, ri, last = len(readings), self._ri, self._chunks is None
                        # no reading (or all handed over before): taken
                        if cell is not None and ri >= n and last:
                            cell[1] = True
                        while ri < n:
                            r = readings[ri]
                            ri += 1
                            self._ri = ri
                            # its last reading is handed over: taken
                            if ri == n and cell is not None and last:
                                cell[1] = True
                            yield r
                        if last:
                            break
                        # a large message's next readings, once the loop has served the agent's other work
                        await asyncio.sleep(0)
                        if not self._handing:
                            self._chunks = None
                            return
                        readings = self._readings = self._next_chunk(entry)
                        self._ri = 0
                    self._pos += 1
                    self._readings = None
                    if clock() >= due:
                        await asyncio.sleep(0)
                        if not self._handing:
                            return
                        due = clock() + YIELD_AFTER_S
                if (unacked := self._unacked) is not None:
                    unacked.flush()
        finally:
            self._readers -= 1
            # a command waiting for a large birth this reader learnt a step at a time: told that none does now
            self._reader_left.set()
            self._reader_left = asyncio.Event()

    async def _take_batch(self, coalesce_s: float, last_wake: float, backlog: bool) -> list[list] | None:
        """The next batch from the queue (None once it is closed and empty), after the reconnect's and
        drops' bookkeeping."""
        now = time.monotonic()
        if coalesce_s and now - last_wake < 2 * coalesce_s and not backlog:
            await asyncio.sleep(coalesce_s)
        try:
            batch = await self._channel.get_many()
        except EOFError:
            return None
        if self._channel.dropped_by_topic:
            self._queue_full(self._channel.take_drops())
        # caught up with a reconnect once all that came before it is read: a birth the lost connection brought, read
        # after ``session_lost`` (taken at the batch ending with the drop's mark), made its node alive again with
        # aliases the node may have given anew while this host was away (and took the rebirth asked as answered); at
        # that mark's read (``_read``), or here, before the new connection's first message
        # (each lane in arrival order, a mixed batch sorted by it: its first is its oldest, and what came before it was
        # read, a mark taking nothing after it until all before it is)
        self._catch_up(batch[0][4] - 1 if batch else self._channel.arrived)
        return batch

    def _catch_up(self, read: float) -> None:
        """After a reconnect, once what the lost connection brought is read (the queue's entries up to the arrival
        number ``read``): every node's births taken as stale (``session_lost``), and a primary host's rebirths asked
        after its STATE birth."""
        reconnects, caught = self._reconnects, 0
        while reconnects and reconnects[0] <= read:
            reconnects.popleft()
            caught += 1
        if caught:  # reconnected: the new connection's messages may follow
            self._sessions_seen += caught
            # a primary host asks its rebirths after its STATE birth, the first message of a connection
            self.sparkplug.session_lost(ask=self.settings.sparkplug.host_id is None)
        if self._state_sent_seen != self._state_sent and self._sessions_seen == self._sessions:
            self._state_sent_seen = self._state_sent
            self.sparkplug.ask_missed()

    async def _decoded(self, entry: list) -> list[Reading]:
        """The first readings of a large message (over ``_WORKER_BYTES``) of a JSON subscription, decoded in a
        worker thread: counted (over ``json_codec.MAX_KEYS`` keys, or ``MAX_CONTAINERS`` objects and arrays, it is
        refused unparsed, ``too_many_values``), parsed and walked there, one message at a time per source (this
        source's later messages wait, in order), the loop served meanwhile. Parsing on the loop held it for the whole
        message: 100,000 values 0.5-1.3 s with their readings, an 8-MiB array of 4,000,000 numbers 2.4 s (every
        other source, the status page, action writes, the uplink). Its readings are then made ``CHUNK_READINGS`` at
        a time (``_next_chunk``); the decoder's reports are said on the loop, in their order. A large Sparkplug B
        payload is decoded there too (``sparkplug_host.decode_apart``: 100,000 metrics held the loop 1.8-2.7 s); its
        host reads it on the loop (a compressed one is inflated and decoded there, on its budget)."""
        self._chunks = None
        topic, payload = entry[0], entry[1]
        if topic is None or id(dec := self._route(topic)) not in self._apart_decoders:
            return self._read(entry)
        # in the one decode thread of every MQTT source (``_decode_pool``), the loop's default pool left free
        parsed = await asyncio.get_running_loop().run_in_executor(
            _decode_pool(), dec.parse, topic, payload, entry[2]
        )
        return self._read(entry, parsed)

    def _next_chunk(self, entry: list) -> list[Reading]:
        """The next ``CHUNK_READINGS`` readings of the large message ``_decoded`` began (the last: ``_chunks``
        None); never raises."""
        c = self._chunks
        assert c is not None
        self._recv_offset = entry[6] if len(entry) > 6 else None
        if type(c) is _Steps:
            return self._next_step(entry, c)
        assert type(c) is _Chunks
        part = c.got[c.at : c.at + CHUNK_READINGS]
        c.at += len(part)
        if c.at >= len(c.got):
            self._chunks = None
        try:
            if c.records:
                readings = self._record_readings(c.prefix, part, c.received_at)
            else:
                readings = self._json_readings(c.prefix, part, c.received_at, c.kept)
            if readings and c.checked:
                self._valid_text(c.topic, readings)
            if readings and self._clock_checked and not entry[3]:
                self._lagging(c.topic, readings[0])
            return self._retained(c.topic, readings) if entry[3] else readings
        except Exception as e:  # a fault no check foresaw: the message's other readings skipped
            self._chunks = None
            log.exception(
                "mqtt source %r: a message on %s could not be read; skipped", self.name, shown_topic(c.topic)
            )
            self._error("decode_failed", f"topic {shown_topic(c.topic)}: {type(e).__name__}: {str(e)[:200]}")
            return []

    def _next_step(self, entry: list, c: _Steps) -> list[Reading]:
        """The readings of the next ``sparkplug_host.STEP_METRICS`` metrics of a large Sparkplug message (none
        while a birth's are learnt; the last: ``_chunks`` None); never raises."""
        try:
            part = next(c.steps)
        except StopIteration:
            self._chunks = None
            return []
        except Exception as e:  # the message's other metrics skipped, said as decode says its errors
            self._chunks = None
            if isinstance(e, json_codec.CodecError):
                self._error(e.reason, f"topic {shown_topic(c.topic)}: {e.detail}")
                return []
            log.exception(
                "mqtt source %r: a message on %s could not be read; skipped", self.name, shown_topic(c.topic)
            )
            self._error("decode_failed", f"topic {shown_topic(c.topic)}: {type(e).__name__}: {str(e)[:200]}")
            return []
        if not part:
            return part
        readings = self._order(part)
        return self._retained(c.topic, readings) if entry[3] else readings

    def _read(self, entry: list, parsed: _Parsed | sparkplug_host.Decoded | None = None) -> list[Reading]:
        """The readings of a queued message (none for a dropped one's shell); never raises. Given ``parsed`` (a
        large JSON message decoded in a worker thread), its first ``CHUNK_READINGS``, the others left in
        ``_chunks``."""
        topic, payload, received_at, retained = entry[0], entry[1], entry[2], entry[3]
        self._recv_offset = entry[6] if len(entry) > 6 else None
        if topic is None:  # a dropped message's shell, or the mark of a lost connection
            if payload is _LOST:  # after all it brought: what the Sparkplug nodes publish now is unseen
                lost = self.sparkplug.connection_lost()
                self._catch_up(
                    entry[4]
                )  # back already: its births taken as stale now, not before the lost ones read
                return self._order(lost)
            return []
        try:
            if not retained:
                got = self.decode(topic, payload, received_at, parsed)
            else:
                # the broker's stored last value, sent on subscribing: rare, checked apart; a retained Sparkplug
                # birth is no sign that its node lives (``SparkplugHost.retained``)
                self.sparkplug.retained = True
                try:
                    got = self.decode(topic, payload, received_at, parsed)
                finally:
                    self.sparkplug.retained = False
            if isinstance(
                got, (_Chunks, _Steps)
            ):  # a large message's: the rest made later (_next_chunk, retained too)
                self._chunks = got
                return self._next_chunk(entry)
            return self._retained(topic, got) if retained else got
        except Exception as e:  # a fault no check foresaw: this message skipped (and acknowledged)
            log.exception(
                "mqtt source %r: a message on %s could not be read; skipped", self.name, shown_topic(topic)
            )
            self._error("decode_failed", f"topic {shown_topic(topic)}: {type(e).__name__}: {str(e)[:200]}")
            return []

    def _queue_full(self, drops: dict[str, int]) -> None:
        """Messages the full hand-over queue dropped, named: one WARNING (``queue_full``, all of them)
        naming the topic that lost the most, then a count per topic (``queue_full:<topic>``)."""
        top = max(drops, key=drops.__getitem__)
        s = self.settings
        self.notices.note(
            "queue_full",
            "mqtt source %r: messages arrive faster than the agent reads them; the hand-over queue is full "
            "(queue_max_items %d, queue_max_bytes %d) and the oldest messages of the topic holding the most "
            "are dropped, first of %s (each topic's drops: queue_full:<topic>); other topics keep theirs. "
            "Slow the device down or narrow the subscription",
            self.name,
            s.queue_max_items,
            s.queue_max_bytes,
            shown_topic(top or "(other topics)"),
            n=sum(drops.values()),
        )
        counts = self.notices.counts
        for topic, n in drops.items():
            key = f"queue_full:{topic or '(other topics)'}"
            if key not in counts and sum(k.startswith("queue_full:") for k in counts) >= 100:
                key = "queue_full:(other topics)"  # bounded: topic names come from outside
            self.notices.note(
                key,
                "mqtt source %r: topic %s: messages dropped from the full hand-over queue",
                self.name,
                shown_topic(topic or "(other topics)"),
                n=n,
                level=logging.INFO,
            )

    def _retained(self, topic: str, readings: list[Reading]) -> list[Reading]:
        """The readings of a retained message, by its subscription's ``retained``. The broker keeps a
        topic's last retained message for good and sends it to every new subscription, so on each
        (re)connect it may hand over the value of a sensor that died yesterday, stamped with the receive
        time when the payload carries none. Only a message flagged so at delivery is one: MQTT clears the
        flag on messages passed on live, whatever their publisher set. Decoded all the same (a retained
        Sparkplug birth still teaches aliases and types). Under ``uncertain``, a reading whose own
        timestamp shows it fresh (``retained_max_age_s``) is taken as live: a sensor that publishes every
        second with the retain flag is good at once."""
        sub = self._subscription(topic)
        policy = sub.retained if sub is not None else "uncertain"
        if policy == "live" or not readings:
            return readings
        if policy == "skip":
            self._notice(
                "retained_skipped",
                f"topic {shown_topic(topic)}: a retained message (the broker's stored last value, of unknown age) was "
                "not read (retained: skip); its tags wait for a live value",
                n=len(readings),
            )
            return []
        max_age = sub.retained_max_age_s if sub is not None else 0.0
        out: list[Reading] = []
        fresh = 0
        for r in readings:
            # fresh: stamped by the device (not the receive time, which a reading without a time of its
            # own, or stamped too far ahead, was given) at most max_age before it was received and at most
            # RETAINED_AHEAD_S after (a clock further ahead says nothing of the message's age)
            if r.timestamp != r.received_at and -RETAINED_AHEAD_S <= r.received_at - r.timestamp <= max_age:
                fresh += 1
                out.append(r)
            elif r.quality is Quality.GOOD:
                out.append(dataclasses.replace(r, quality=Quality.UNCERTAIN, reason="retained_value"))
            else:  # a BAD record stays BAD
                out.append(r)
        if fresh:
            self._notice(
                "retained_fresh",
                f"topic {shown_topic(topic)}: a retained message stamped within retained_max_age_s ({max_age:g} s) of its "
                "receive time was taken as live (quality good)",
                n=fresh,
            )
        if fresh < len(readings):
            self._notice(
                "retained",
                f"topic {shown_topic(topic)}: a retained message (the broker's stored last value, sent on subscribing) "
                "without a timestamp of its own within retained_max_age_s gave its readings quality "
                "uncertain: shown and forwarded, but pipelines, models and rules wait for a live value; set "
                "retained: live on a subscription whose topics hold state published only on change",
                n=len(readings) - fresh,
            )
        return out

    # ---- Sparkplug write-back ------------------------------------------------------------------
    async def _birth_learnt(self, learnt: asyncio.Event, where: str) -> None:
        """Return once the node's large birth being learnt a step at a time (``SparkplugHost.handle``) is learnt,
        so that a command is typed by it, as when a birth was learnt at once (the command waited for the loop),
        never by half of it. Waits as long as its steps go on: one step a turn of the loop, a 99,999-metric birth
        took 1.1 s on an idle loop, 4.3 s with 30 ms of other work a turn, and a fixed 5 s refused the command
        past that. ``MqttError`` when no step is learnt for ``LEARNING_WAIT_S``, or at once when no consumer
        reads the source (its reader left mid-birth: the steps wait for the next; it waited 5 s then)."""
        steps = self.sparkplug.steps_learnt
        while not learnt.is_set():
            why = None
            if not self._readers:
                why = "no consumer reads this source now (its reader left mid-birth)"
            else:
                waits = [
                    asyncio.ensure_future(learnt.wait()),
                    asyncio.ensure_future(self._reader_left.wait()),
                ]
                try:
                    woken, _ = await asyncio.wait(
                        waits, timeout=LEARNING_WAIT_S, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for w in waits:
                        w.cancel()
                if not woken:
                    if self.sparkplug.steps_learnt == steps:
                        why = f"no step of it learnt for {LEARNING_WAIT_S:.0f} s"
                    steps = self.sparkplug.steps_learnt
            if why is not None:
                raise MqttError(
                    f"mqtt source {self.name!r}: command to {where} not sent: the node's birth is still being "
                    f"read (its metrics' datatypes not all known yet), and {why}"
                )

    def _rebirth_unread(
        self, group: str, edge_node: str, device: str | None, upto: float = math.inf, shares: bool = False
    ) -> str:
        """Whether an NBIRTH or NDEATH of the node (a DBIRTH or DDEATH of ``device``; for the node, or a device of
        a node known to share aliases (``shares``), a DBIRTH of any device of it whose arrival number is at most
        ``upto``: come before the command, as a node whose devices birth often, each birth coming while the last
        was read, held its commands until refused) came and is not read yet: queued, or in the batch taken and not
        handed over. A command typed by the birth read last would then carry its alias, which the node's new birth
        may give another metric (a device's birth too, on a node that gives a device metric another metric's
        alias, against Sparkplug: read, the clash has the command go by name alone). "own": a birth or death of
        the node (the device) itself; "device": a device birth of the node; "": none. Commands are few: a look-up
        of each such topic, for the node a scan of its queued messages, and a scan of the batch in hand."""
        kinds = (sp.MessageType.NBIRTH, sp.MessageType.NDEATH)
        topics = tuple(sp.topic(group, k, edge_node) for k in kinds)
        prefix = ""
        if device:
            topics += tuple(
                sp.topic(group, k, edge_node, device) for k in (sp.MessageType.DBIRTH, sp.MessageType.DDEATH)
            )
        if not device or shares:
            prefix = sp.topic(group, sp.MessageType.DBIRTH, edge_node) + "/"
        held = self._held[self._pos + (self._readings is not None) :]  # the message in hand read already
        if self._channel.holds(topics) or any(e[0] in topics for e in held):
            return "own"
        if prefix and (
            self._channel.holds((), _lane(prefix), prefix, upto)
            or any(e[4] <= upto and e[0] is not None and e[0].startswith(prefix) for e in held)
        ):
            return "device"
        return ""

    async def command(
        self,
        group: str,
        edge_node: str,
        device: str | None,
        metric: str,
        value: Any,
        datatype: str | None = None,
    ) -> str:
        """Send an NCMD (``device`` None) or DCMD setting ``metric`` to ``value``, typed as the node's current
        birth declared it whatever ``datatype`` says (which types a metric no birth declares, or one of a type
        this host does not write); a value that does not fit the birth's type (or ``datatype``) raises
        ``SparkplugTypeMismatch`` (not retryable): ``"false"`` is never sent as TRUE, 300 never to a UInt8. A Template instance's member (``Motor1/Speed``,
        as its tag is named) is sent inside its instance, as Sparkplug has it: the instance metric carrying
        only that member."""
        where = f"{group}/{edge_node}/{device + '/' if device else ''}{metric}"
        deadline = time.monotonic() + LEARNING_WAIT_S
        # an NCMD waits for the device births come by now, not for those after (its node's own births: for any);
        # "now" taken again once a birth of its node is read (one learnt a step at a time, one unread at a look, or
        # one read between two looks, as the birth a rebirth asked mostly is: the node restarted, the device births
        # following it are its new birth's, and may clash)
        came = self._channel.arrived
        births = self.sparkplug.births_read(group, edge_node)
        settle = -math.inf  # until then device births are waited for as they come (``BIRTH_SETTLE_S``)
        while True:
            if (learnt := self.sparkplug.learnt(group, edge_node)) is not None:
                await self._birth_learnt(learnt, where)
                came = self._channel.arrived
            if (read := self.sparkplug.births_read(group, edge_node)) != births:
                births, came = read, self._channel.arrived
                settle = time.monotonic() + BIRTH_SETTLE_S
            elif not device and time.monotonic() < settle:
                came = self._channel.arrived
            # (a DCMD to a node known to share aliases: another device's birth too, whose metric may take this
            # one's alias)
            unread = self._rebirth_unread(
                group,
                edge_node,
                device,
                came,
                device is not None and self.sparkplug.shares_aliases(group, edge_node),
            )
            # a rebirth this host asked, its data showing a birth missed (a seq gap, an alias its births did not
            # give): the node's aliases may be new already, a command by the old one set another metric
            owed = "" if unread else self.sparkplug.birth_owed(group, edge_node, device)
            # a node known to give a device metric another metric's alias (the node's, or another device's): its
            # last birth's devices not born again since its new birth, whose births may come later than
            # BIRTH_SETTLE_S (bounded by the host)
            late = [] if unread or owed else self.sparkplug.devices_unborn(group, edge_node)
            if late:
                came = self._channel.arrived  # their births, whenever come, are waited for
            elif not unread and not owed:
                if device or time.monotonic() >= settle or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(UNREAD_POLL_S)
                continue
            given_up = owed == "given_up"
            if given_up and not self.sparkplug.node_alive(group, edge_node):
                break  # gone silent after (notice node_silent): refused below as not alive, not as given up
            # its alias and datatype come from the birth read last: a node that restarted or was born again
            # may have given that alias to another metric, which a node looking commands up by alias would set.
            # Waited for while a consumer reads (refused at once, a death its node's new connection made stale,
            # which brings no birth, held a level command until the node's next birth; and a rebirth given up
            # on, which nothing asked answers: each command waited 5 s for nothing)
            if given_up or not self._readers or time.monotonic() >= deadline:
                if given_up:
                    why = (
                        "no answer nor anything else from it for sparkplug.rebirth_give_up_s: asked again when it "
                        "sends anything; sent once its birth is read"
                    )
                elif not self._readers:
                    why = "no consumer reads this source now"
                else:
                    why = f"not {'answered' if owed else 'read'} within {LEARNING_WAIT_S:.0f} s"
                done = "was given up on" if given_up else "is not read yet"
                what = (
                    "a birth or death of its node (device) came and is not read yet"
                    if unread
                    else f"the births of devices its node's last birth had ({', '.join(late[:3])}"
                    f"{f' and {len(late) - 3} more' if len(late) > 3 else ''}) are not read since its new birth, "
                    "and its devices' births have given a device metric the alias of another metric of it (against "
                    "Sparkplug)"
                    if late
                    else "the birth this host asked of its node (device), its data having shown a birth of it "
                    f"missed (a seq gap, an alias its births did not give), {done}"
                )
                raise MqttError(
                    f"mqtt source {self.name!r}: command to {where} not sent: {what} ({why}); "
                    + (
                        "one may give a device metric the alias this metric was given"
                        if late
                        else "the metric's alias and datatype would be those of the birth it replaces (the alias "
                        "maybe another metric's now)"
                    )
                )
            await asyncio.sleep(UNREAD_POLL_S)
            if unread == "own":
                came = self._channel.arrived
        if not self.sparkplug.node_alive(group, edge_node):
            # a node that is dead (NDEATH) or has not been born since this host started would drop the
            # command: not counted as sent (the action counts it failed); retryable, the node may be back
            raise MqttError(
                f"mqtt source {self.name!r}: command to {where} not sent: edge node {group}/{edge_node} is "
                "not alive (NDEATH, or no NBIRTH seen since this host started or its broker connection came "
                "back, or only a retained one and no live message since, or, after nothing heard of it for "
                "sparkplug.rebirth_give_up_s, it did not answer the rebirth then asked of it within "
                "sparkplug.rebirth_retry_max_s: notice node_silent; it is read again, and its birth asked, as soon "
                "as it sends anything)"
            )
        if device and not self.sparkplug.device_alive(group, edge_node, device):
            # the same for a device of a live node: a DCMD to a device that sent DDEATH (or no DBIRTH yet)
            # is dropped by its node, while the action would count it sent and never send it again
            raise MqttError(
                f"mqtt source {self.name!r}: command to {where} not sent: device {group}/{edge_node}/"
                f"{device} is not alive (DDEATH, or no DBIRTH seen since its node's birth, or only a retained "
                "one and no live message since)"
            )
        if why := self.sparkplug.birth_unsure(group, edge_node):
            # rebirths off: no birth is asked, none is owed, and the node may have given its aliases anew: a
            # command by the old alias set another metric (by name alone, a node looking commands up by alias, as
            # Sparkplug 3.0 has them sent, finds none or takes alias 0). Refused, counted, until a birth is read
            msg = (
                f"command to {where} not sent: its node's data showed a birth of it missed ({why}), and with "
                "sparkplug.rebirth_on_unknown false none is asked: its aliases may be those of a birth it replaced "
                "(the metric's alias maybe another metric's now); sent once a birth of the node is read (it restarts, or "
                "another host asks one), or turn rebirth_on_unknown on"
            )
            self._notice("command_alias_unsure", msg)
            raise MqttError(f"mqtt source {self.name!r}: {msg}")
        if self._sessions_seen != self._sessions or (
            self._pub is not None and self.state is not ConnectionState.CONNECTED
        ):
            # what the node published while this host was away is unseen (a death and a birth giving its
            # aliases anew): its births are taken as stale (``session_lost``) only when the consumer takes its
            # next batch, and a separate publish connection sends while the subscribe connection is down
            raise MqttError(
                f"mqtt source {self.name!r}: command to {where} not sent: this source's connection to the broker "
                "is down or came back and is not caught up yet; a birth its node gave meanwhile is unseen (the "
                "metric's alias maybe another metric's now): sent once the node's birth after the reconnect is read"
            )
        if (clash := self.sparkplug.ambiguity(group, edge_node, device, metric)) is not None:
            # two points its births name alike: sent to either, the other may be the one meant
            raise SparkplugTypeMismatch(
                f"mqtt source {self.name!r}: command to {where} not sent: its node's births name two points so "
                f"({clash}); have the node name them apart",
                "metric",
            )
        given = sp.DataType[datatype.upper()] if datatype else None
        known = self.sparkplug.datatype(group, edge_node, device, metric)
        if known in sparkplug_host.COMMAND_TYPES:
            # the birth decides the datatype sent, whatever the action's says: a value sent as another type
            # than the node declared is cast by the node (300 as an Int32 to an UInt8 metric became 44). The
            # value must fit the birth's type (and the action's); a time sent to a metric declared a count,
            # or a count to a DateTime metric, is refused whatever the value
            dt = sp.DataType(known)
            if given is not None and given is not dt:
                shown = f"metric {metric!r} datatype {known} ({sparkplug_host.datatype_name(dt)})"
                if sp.DataType.DATETIME in (given, dt):
                    raise SparkplugTypeMismatch(
                        f"mqtt source {self.name!r}: command to {where} not sent: the action's datatype is "
                        f"{sparkplug_host.datatype_name(given)}, and the birth gives "
                        f"{shown}; set the datatype the birth gives, or leave it out",
                        "datatype",
                    )
                try:
                    _sparkplug_value(given, value, where)
                    value = _sparkplug_value(dt, value, where)
                except SparkplugTypeMismatch as e:
                    raise SparkplugTypeMismatch(
                        f"mqtt source {self.name!r}: command to {where} not sent: the birth gives {shown} "
                        f"(the action's datatype: {sparkplug_host.datatype_name(given)}); {e}"
                    ) from None
        elif given is not None:
            dt = given  # the metric not in the birth, or of a type this host does not write: the action's
        elif known is None:
            dt = sp.infer_datatype(value)
        else:  # 0 (Unknown), UUID, Bytes, Sparkplug 3.0 arrays (22-34): no type this host can write
            raise SparkplugTypeMismatch(
                f"mqtt source {self.name!r}: command to {where} not sent: the birth gives metric "
                f"{metric!r} datatype {known}, which this host cannot write (0 is Unknown; UUID, Bytes, File, "
                "DataSet, Template and Sparkplug 3.0 array types are not supported); set the action's "
                "datatype, or write another metric",
                "metric",
            )
        ts = int(time.time() * 1000)
        member = self.sparkplug.template_member(group, edge_node, device, metric)
        chain = member[0] if member else ()
        # the alias of the metric its births gave one (a Template instance's own), beside its name: Sparkplug 3.0
        # commands an aliased metric by its alias, and a node that looks commands up so found none by name alone,
        # or took the alias left out as 0, another metric's; nodes that look up by name still find the name
        v = _sparkplug_value(dt, value, where)  # (first: a refused value is no command sent by name alone)
        alias = self.sparkplug.alias(group, edge_node, device, chain[0][0] if chain else metric)
        leaf = member[1] if member else metric
        m = sp.Metric(leaf, None if chain else alias, dt, v)
        for i in range(len(chain) - 1, -1, -1):
            name, ref = chain[i]
            m = sp.Metric(name, alias if i == 0 else None, sp.DataType.TEMPLATE, sp.Template([m], ref=ref))
        payload = sp.Payload(ts, None, [m])
        kind = sp.MessageType.DCMD if device else sp.MessageType.NCMD
        return await self.publish(sp.topic(group, kind, edge_node, device), sp.encode(payload), qos=0)

    # ---- publishing ------------------------------------------------------------------------
    def _publish_raw(self, topic: str, payload: bytes) -> None:
        c = self._client
        if c is not None:
            c.publish(topic, payload, qos=0)

    async def publish(
        self,
        topic: str,
        payload: bytes | str | dict[str, Any],
        qos: int = 0,
        retain: bool = False,
        confirm: bool = False,
    ) -> str:
        """Publish results and events (a dict becomes compact JSON); returns ``"sent"`` or ``"queued"``.

        QoS 1 messages are queued by paho while the broker is away (up to ``publish_max_queued``) and
        sent on reconnect: that returns ``"queued"``, not ``"sent"``. When the queue is full this waits
        up to ``publish_timeout_s`` for room, then raises ``MqttError``. QoS 0 while disconnected is
        counted as ``publish_failed`` and raises ``MqttError`` (the message is not sent).

        ``confirm`` (QoS 1): wait for the broker's PUBACK, and raise ``MqttPublishRefused`` when it refused
        the message (MQTT 5: 0x87 from its ACL); actions confirm, so that a refused alarm or result is not
        counted ok (over MQTT 3.1.1 a broker refuses by closing the connection: ``"queued"``, then
        ``publish_dropped``). Unconfirmed (a forward's stream, which one round trip per message would slow to the
        broker's latency), a refusal is counted ``publish_refused`` and logged by the source.

        With ``publish_connection: separate`` the message goes over the source's publish connection.
        """
        if self._pub is not None:
            return await self._pub.publish(topic, payload, qos=qos, retain=retain, confirm=confirm)
        c = self._client
        if c is None:
            raise MqttError(
                f"mqtt source {self.name!r}: publish before start(); call await source.start() first"
            )
        if qos not in (0, 1):
            raise MqttError(f"mqtt source {self.name!r}: qos {qos} not offered; use 0 or 1")
        if not topic or "+" in topic or "#" in topic or "\x00" in topic:
            # paho refuses the wildcards, but sends a NUL, and the broker then drops the whole connection
            # (a malformed packet): every subscription of this source would stop with it
            self._error("publish_failed", f"topic {topic!r}: not a topic to publish to")
            raise MqttBadTopic(
                f"mqtt source {self.name!r}: cannot publish to {topic!r}: a topic to publish to is not empty "
                "and holds no wildcard (+, #) and no NUL character"
            )
        if isinstance(payload, dict):
            payload = json_codec.encode(payload)
        v5 = self.settings.protocol is Protocol.MQTT5
        if v5:  # the broker's limits (its CONNACK): a message past them would cost the connection
            if retain and not self._retain_ok:
                retain = False
                self._notice("retain_unavailable", self._no_retain_text(topic))
            if qos > self._max_qos:
                qos = 0
                self._notice("publish_qos_downgraded", self._qos0_text(topic))
            if self._max_packet is not None:
                size = _packet_size(len(topic.encode()), len(payload), qos, True)
                if size > self._max_packet:
                    exc = self._too_large(topic, size)
                    self._error("publish_too_large", str(exc))
                    raise exc
        deadline = time.monotonic() + self.settings.publish_timeout_s
        while True:
            if qos and confirm:
                # MQTT 5 tells a refused message (PUBACK 0x87 from an ACL), and a 3.1.1 broker refuses one by
                # closing the connection (no PUBACK: "queued", then publish_dropped): its PUBACK is awaited, so
                # that a message paho merely holds is never "sent". Registered
                # under paho's lock for its outgoing messages, which paho holds while it handles a PUBACK, so
                # that an acknowledgement arriving at once is not missed
                with c._out_message_mutex:
                    info = c.publish(topic, payload, qos=qos, retain=retain)
                    waiter: asyncio.Future | None = None
                    if info.rc == paho.MQTT_ERR_SUCCESS:
                        waiter = asyncio.get_running_loop().create_future()
                        self._puback[info.mid] = (waiter, topic)
                if waiter is not None:
                    return await self._await_puback(info.mid, waiter, topic)
            else:
                info = c.publish(topic, payload, qos=qos, retain=retain)
            if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
                if time.monotonic() > deadline:
                    self._error(
                        "publish_failed",
                        f"topic {topic!r}: paho queue full for {self.settings.publish_timeout_s}s",
                    )
                    raise MqttError(f"mqtt source {self.name!r}: outgoing queue full; broker slow or away")
                await asyncio.sleep(0.005)
                continue
            if info.rc == paho.MQTT_ERR_SUCCESS and (
                self._refused or (qos and self.state is not ConnectionState.CONNECTED)
            ):
                # paho writes to any socket it has, the broker's answer to its CONNECT aside: the one whose
                # CONNACK refused it (the broker closes it, and a QoS 0 message with it), or one still waiting for
                # it. Counted "sent", a QoS 1 message that paho then held until a connection came, or lost at a
                # stop, was never said to be waiting
                info.rc = paho.MQTT_ERR_NO_CONN
            if info.rc == paho.MQTT_ERR_NO_CONN:
                if qos == 0:
                    self._error("publish_failed", f"topic {topic!r}: not connected, QoS 0 message dropped")
                    raise MqttError(
                        f"mqtt source {self.name!r}: broker {self.settings.host}:{self.settings.port} "
                        "is not connected; QoS 0 message not sent"
                    )
                self.published["queued"] += 1
                return "queued"
            if info.rc != paho.MQTT_ERR_SUCCESS:
                self._error("publish_failed", f"topic {topic!r}: {paho.error_string(info.rc)}")
                raise MqttError(f"mqtt source {self.name!r}: publish failed ({paho.error_string(info.rc)})")
            self.published["sent"] += 1
            return "sent"

    async def _await_puback(self, mid: int, waiter: asyncio.Future, topic: str) -> str:
        """MQTT 5: ``"sent"`` once the broker acknowledged the message; ``MqttPublishRefused`` when it
        refused it (its reason; counted ``publish_refused``); ``"queued"`` when no PUBACK came within
        ``publish_timeout_s`` (the connection dropped: paho holds the message and sends it again)."""
        try:
            done, _ = await asyncio.wait(
                {waiter}, timeout=min(PUBACK_WAIT_S, self.settings.publish_timeout_s)
            )
        finally:
            if self._puback.get(mid, (None,))[0] is waiter:
                del self._puback[mid]
        if not done:
            self.published["queued"] += 1
            return "queued"
        rc = waiter.result()  # raises MqttTooLarge for a held message the broker's limit refused
        if rc is None or not rc.is_failure:  # None: sent at QoS 0 (the broker's MaximumQoS)
            self.published["sent"] += 1
            return "sent"
        hint = {
            0x87: "the broker's ACL does not let this client's user publish there",
            0x90: "the broker refuses the topic name",
            0x97: "the broker's quota for this client is spent for now",
            0x99: "the broker refuses the payload's format",
        }.get(rc.value, "the broker's log says why")
        if self._pub_id is not None and rc.value == 0x87:
            hint += (
                f" (the publish connection's client id {self._pub_id}: an ACL by client id must let it publish "
                "there, as it lets the source's)"
            )
        # counted; the caller names it
        self._count_error("publish_refused", f"topic {topic!r}: PUBACK {rc} (0x{rc.value:02X})")
        raise MqttPublishRefused(
            f"mqtt source {self.name!r}: broker {self.settings.host}:{self.settings.port} refused the message to "
            f"{topic!r}: PUBACK {rc} (0x{rc.value:02X}): {hint}; not delivered",
            rc.value,
        )


def _paho_client(s: MqttSettings, client_id: str, manual_ack: bool) -> paho.Client:
    """A paho client for ``s``: its protocol, session, TLS and login (no will, no callbacks)."""
    proto = paho.MQTTv5 if s.protocol is Protocol.MQTT5 else paho.MQTTv311
    c = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=proto,
        clean_session=None if proto == paho.MQTTv5 else not s.persistent_session,
        manual_ack=manual_ack,
    )
    if s.tls is not None:
        c.tls_set(ca_certs=s.tls.ca_file, certfile=s.tls.cert_file, keyfile=s.tls.key_file)
        c.tls_insecure_set(s.tls.insecure)
    if s.username is not None:
        c.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
    return c


def _connect_kwargs(s: MqttSettings) -> dict[str, Any]:
    """``connect()``'s MQTT 5 session arguments: a persistent session kept 24 h after a drop."""
    kwargs: dict[str, Any] = {}
    if s.protocol is Protocol.MQTT5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        kwargs["clean_start"] = not s.persistent_session
        if s.persistent_session:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 24 * 3600
            kwargs["properties"] = props
    return kwargs


async def check_connections(
    name: str, settings: MqttSettings, timeout_s: float = 5.0
) -> list[tuple[str, str]]:
    """``edge-agent validate --online``: connect once with each client id the source connects with (its own;
    with ``publish_connection: separate`` its publish connection's too) and say why the broker will not have
    one: ``(field, message)`` per failure (``client_id`` or ``publish_client_id`` for a refusal, ``host`` for a
    broker not reached, ``tls`` for a failed handshake), the message as the running source would count it (a
    refusal of the publish connection names it, its client id and the fix). A broker not reached (or its TLS
    handshake failed) is said once, not once more for the publish connection: the same broker, TLS and login
    would fail it the same way. Nothing is subscribed or published
    and there is no will; with a persistent session nothing the broker delivers is acknowledged, so it keeps
    it for the agent. A connect with a client id a running agent is connected with takes that connection over
    and the broker publishes the agent's will: ``edge-agent validate`` does not call this while the config's
    agent holds its data folder; check before starting it."""
    src = MqttSource(name, settings)  # builds, no I/O: its own wording of each failure
    conns = [(src, "client_id")] + ([(src._pub, "publish_client_id")] if src._pub is not None else [])
    out: list[tuple[str, str]] = []
    loop = asyncio.get_running_loop()
    for conn, field in conns:
        if out and out[-1][0] in ("host", "tls"):
            break  # the broker was not reached: the publish connection's try would say it again
        s = conn.settings
        client_id = s.client_id or f"edge-{conn.name}-{uuid.uuid4().hex[:8]}"
        label = f"publish connection (client id {client_id}): " if conn._pub_id is not None else ""
        answered: asyncio.Future = loop.create_future()

        def on_connect(_c, _u, _f, rc, _p, fut=answered) -> None:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(rc))

        try:
            c = _paho_client(s, client_id, manual_ack=True)  # reads the TLS files
            c.on_connect = on_connect
            await loop.run_in_executor(
                None, functools.partial(c.connect, s.host, s.port, s.keepalive_s, **_connect_kwargs(s))
            )
        except ssl.SSLError as e:
            out.append(("tls", f"{label}TLS handshake with {s.host}:{s.port} failed: {e}"))
            continue
        except (OSError, ValueError) as e:
            out.append(("host", f"{label}cannot reach broker {s.host}:{s.port}: {e}"))
            continue
        c.loop_start()
        try:
            async with asyncio.timeout(timeout_s):
                rc = await answered
        except TimeoutError:
            out.append(("host", f"{label}broker {s.host}:{s.port} sent no CONNACK within {timeout_s:g} s"))
            continue
        finally:
            c.disconnect()
            await loop.run_in_executor(None, c.loop_stop)
        if rc.is_failure:
            out.append((field, label + conn._refused_text(rc)))
    return out


def _packet_size(topic_bytes: int, payload_bytes: int, qos: int, v5: bool) -> int:
    """The size of a PUBLISH packet (no properties), as a broker's Maximum Packet Size counts it: the
    fixed header, the topic, the packet id (QoS 1), MQTT 5's empty property length, the payload."""
    rest = 2 + topic_bytes + (2 if qos else 0) + (1 if v5 else 0) + payload_bytes
    return 1 + (1 if rest < 128 else 2 if rest < 16_384 else 3 if rest < 2_097_152 else 4) + rest


def _bad_topic(topic: str, payload: bytes, received_at: float) -> list[Reading]:
    raise json_codec.CodecError(
        "bad_topic",
        "a topic name holds a wildcard (+, #) or NUL, which MQTT allows in no topic name; skipped",
    )


def _no_topic(topic: str, payload: bytes, received_at: float) -> list[Reading]:
    raise json_codec.CodecError(
        "bad_topic",
        "a message without a topic name (a broker sending a topic alias, which this client allows none; "
        "MQTT allows no empty topic name): its subscription cannot be known; skipped",
    )


# ---- codecs: the decoder factories named by devices.mqtt.settings.CODEC_TYPES ------------------


def _decoder_factory(codec: CodecKind):
    from devices import load_object
    from devices.mqtt.settings import CODEC_TYPES

    try:
        return load_object(CODEC_TYPES[codec.value][1])
    except (KeyError, ImportError, AttributeError) as exc:  # never decode as another codec
        raise MqttError(
            f"codec {codec.value!r} has no decoder ({exc}); one of {sorted(CODEC_TYPES)}"
        ) from exc


def json_decoder(src: MqttSource, sub: Subscription):
    """JSON objects: every numeric field, or the fields of ``json_mapping``, as readings."""
    m = sub.json_mapping
    mapping = json_codec.JsonMapping(
        records=None if m.records is None else json_codec.RecordsMapping(**m.records.model_dump()),
        opcua_pubsub=None
        if m.opcua_pubsub is None
        else json_codec.PubsubMapping(**m.opcua_pubsub.model_dump()),
        values=dict(m.values),
        timestamp_field=m.timestamp_field,
        timestamp_format=json_codec.TimestampFormat(m.timestamp_format.value),
        rate_field=m.rate_field,
        timezone=m.timezone,
        numbers_from_text=m.numbers_from_text,
        states=dict(m.states),
        unknown_state=m.unknown_state,
        # named after the topic, a name from the payload is one level of its tag ('/' escaped): a key "a/b" on
        # f/x named f/x/a/b, the tag of key "b" on f/x/a, another device's where the broker's ACL parts them
        escape_names=m.tag_prefix_topic,
    )
    # a bad field or record is counted and skipped, the message's others are read; a NaN or infinite value
    # is counted and, under non_finite: bad, kept (a records decoder makes its record's quality bad)
    kept = [False]  # this message holds a kept non-finite value: _json_readings makes its reading BAD

    topic_of = [""]  # the topic of the message being decoded, for a notice the decoder reports
    # the encoding of the message being decoded on the loop when UTF-16/32 (``wide_encoding``; a worker thread's:
    # ``_Own.how``): a record's refusal quotes its converted text, so it names the encoding as the message's do
    wide_of: list[str | None] = [None]
    # a worker thread's decode (``parse``) keeps what it finds to itself, on this thread-local: its reports (said
    # on the loop in their order by ``run``), its non-finite flag, its unread text and nested fields. A consumer
    # cancelled mid-decode and started again decodes the message again while the first decode runs on (both wrote
    # into the lists below: the message's text fields counted twice)
    apart = threading.local()

    def on_error(reason: str, detail: str) -> None:
        own: _Own | None = getattr(apart, "own", None)
        if (how := wide_of[0] if own is None else own.how) is not None:
            detail = json_codec.wide_refused(json_codec.CodecError(reason, detail), how).detail
        if own is not None:
            if reason == "non_finite":
                own.kept = True
            own.reports.append((reason, detail))
            return
        if reason == "non_finite":
            kept[0] = True
        report(reason, detail)

    def report(reason: str, detail: str) -> None:
        if reason == "event_unread":  # an OPC Publisher event's sample: no error of the payload, said once
            src._notice("event_unread", f"topic {shown_topic(topic_of[0])}: {detail}")
            return
        # named by its topic, as a message's own error is: the field alone does not say which device sent it
        src._error(reason, f"topic {shown_topic(topic_of[0])}: {detail}")

    keep = src.settings.non_finite == "bad"
    every_number = m.records is None and m.opcua_pubsub is None and not m.values
    # read for every number, a message's text fields that gave nothing (a status word, a firmware version, an
    # id): counted under text_field_unread, said once per source in one line, never logged per message or field
    texts: list[tuple[str, str]] = []
    # ... and its fields holding objects or arrays (Shelly's "temperature": {"tC": ...}, Tasmota's "ENERGY"),
    # which only a path in values reads: counted under nested_field_unread, said once per source
    nested: list[tuple[str, Any]] = []

    def text_found(k: str, v: Any) -> None:
        own: _Own | None = getattr(apart, "own", None)
        (texts if own is None else own.texts).append((k, v))

    def nested_found(k: str, v: Any) -> None:
        own: _Own | None = getattr(apart, "own", None)
        (nested if own is None else own.nested).append((k, v))

    decode, prefixed = (
        json_codec.compile_decoder(
            mapping,
            rates=True,
            on_record_error=on_error,
            keep_non_finite=keep,
            on_text_unread=text_found if every_number else None,
            on_nested_unread=nested_found if every_number else None,
            wide=False,  # (UTF-16/32 read as UTF-8 below, once: ``parse``, ``run``)
        ),
        m.tag_prefix_topic,
    )
    # the records (and OPC UA PubSub) decoder states each record's quality (bad for a kept non-finite value)
    records = m.records is not None or m.opcua_pubsub is not None
    json_readings, record_readings = src._json_readings, src._record_readings
    # a message without its timestamp_field whose readings so got the receive time: its first message on each
    # topic is looked at for a field that holds its time under another name (a device's "time": it was read
    # as a tag, and every reading stamped on arrival, silently)
    hinted: set[int] | None = None if records or m.timestamp_field is None else set()
    # a records message's first one on each topic is looked at for a quality (or time) under another key than
    # the mapping's: every record was read GOOD (or at the message's time), silently
    hinted_records: set[int] | None = set() if m.records is not None else None

    def text_unread(topic: str, got: list) -> None:
        # the source's first such message is said, its fields in one line (a device's firmware version, serial
        # and MAC are no fault each); every field of every message is counted, never formatted again
        if "text_field_unread" not in src.notices.counts:
            # (with the names of its numbers, the first 64: a message that is one record is told so)
            hint = json_codec.text_fields_hint(texts, mapping, [r[0] for r in got[:64]])
            src._notice("text_field_unread", f"topic {shown_topic(topic)}: {hint}", n=len(texts))
        else:
            src.notices.note("text_field_unread", "", n=len(texts))
        texts.clear()

    def parse(topic: str, payload: bytes, received_at: float) -> _Parsed:
        """A large message's decoding up to its readings, made to run in a worker thread (``MqttSource._decoded``):
        its count (``json_codec.too_many_to_parse``), parse and walk, and the hints read from its payload again;
        what it reports, and its error, are kept for ``run`` to say on the loop. Touches no state of the source or
        of the decoder (two decodes of one decoder may run at once: ``apart``)."""
        own = apart.own = _Own()
        got: list = []
        error: BaseException | None = None
        hints: list[tuple[str, str]] = []
        how: str | None = None
        try:
            size = len(payload)
            # UTF-16/32 counted and read as the UTF-8 it is written as, converted once (its strings were not
            # found: passed unscanned); an error names its encoding
            if (how := json_codec.wide_encoding(payload)) is not None:
                payload = json_codec.utf8_payload(payload)
                own.how = how
            too_many = json_codec.too_many_to_parse(payload) if size > _SCAN_BYTES else None
            if too_many is not None:
                raise too_many
            got = decode(payload, received_at)
            if hinted is not None and got and got[0][2] == received_at and hash(topic) not in hinted:
                hint = json_codec.time_field_hint(payload, mapping)
                if hint is not None:
                    hints.append(("time_field_unread", hint))
            if hinted_records is not None and got and hash(topic) not in hinted_records:
                hint = json_codec.records_field_hint(payload, mapping)
                if hint is not None:
                    hints.append(("records_field_unread", hint))
            if len(got) > 1:
                got = _in_time_order(got, received_at)
        except Exception as e:  # said on the loop, as the same message decoded there would be
            error = (
                e
                if how is None or not isinstance(e, json_codec.CodecError)
                else json_codec.wide_refused(e, how)
            )
        finally:
            apart.own = None
        return _Parsed(got, own.reports, error, own.kept, hints, own.texts, own.nested)

    def run(
        topic: str, payload: bytes, received_at: float, parsed: _Parsed | None = None
    ) -> list[Reading] | _Chunks:
        """The readings of a message; given ``parsed`` (a large one's decoding, made by ``parse`` in a worker
        thread), what it reported is said and its readings are made ``CHUNK_READINGS`` at a time (``_Chunks``)."""
        if not payload:
            # 0 bytes: a client deleting the topic's retained message (MQTT Explorer's delete, a script clearing
            # retained messages), which the broker passes on to subscribers, or an empty message: no JSON to
            # read, and no malformed JSON either
            src._notice(
                "empty_message",
                f"topic {shown_topic(topic)}: a message of 0 bytes (a client deleting the topic's retained message, "
                "which the broker passes on, or an empty message): nothing to read",
            )
            return []
        topic_of[0] = topic
        how: str | None = None
        if parsed is None and (not payload[0] or payload[0] >= 0xFE or (len(payload) > 1 and not payload[1])):
            # UTF-16/32 (a Windows gateway's): read and looked at for hints as the UTF-8 it is written as,
            # converted once; an error names its encoding (``wide_refused``)
            if (how := json_codec.wide_encoding(payload)) is not None:
                try:
                    payload = json_codec.utf8_payload(payload)
                except json_codec.CodecError as e:
                    raise json_codec.wide_refused(e, how) from None
        wide_of[0] = how
        unnested: list[tuple[str, Any]] | None = None  # (no list made per message: the loop's hot path)
        said: str | None = None  # the nested fields' hint, once built (once per source, not per message)
        got: list = []
        try:
            if parsed is None:
                kept[0] = False
                try:
                    got = decode(payload, received_at)
                except json_codec.CodecError as e:
                    if how is None:
                        raise
                    raise json_codec.wide_refused(e, how) from None
            else:
                for reason, detail in parsed.reports:
                    report(reason, detail)
                texts.extend(parsed.texts)
                nested.extend(parsed.nested)
                if parsed.error is not None:
                    raise parsed.error
                got, kept[0] = parsed.got, parsed.kept
        finally:
            if texts:
                text_unread(topic, got)
            if nested:
                unnested = nested[:]
                nested.clear()
                if "nested_field_unread" not in src.notices.counts:
                    # (with the top-level numbers read: the records mapping it may tell reads none of them)
                    said = json_codec.nested_fields_hint(unnested, list(dict.fromkeys(r[0] for r in got)))
                    src._notice("nested_field_unread", f"topic {shown_topic(topic)}: {said}", n=len(unnested))
                else:
                    src.notices.note("nested_field_unread", "", n=len(unnested))
        if hinted is not None and got and got[0][2] == received_at and (key := hash(topic)) not in hinted:
            # bounded: topics come from the outside world, of any length (65,535 bytes): kept by their hash (two
            # topics of one hash: one's notice unsaid)
            if len(hinted) < 10_000:
                hinted.add(key)
                if parsed is None:
                    hint = json_codec.time_field_hint(payload, mapping)
                else:  # (read again from the payload in the worker thread)
                    hint = next((h for k, h in parsed.hints if k == "time_field_unread"), None)
                if hint is not None:
                    src._notice("time_field_unread", f"topic {shown_topic(topic)}: {hint}")
        if hinted_records is not None and got and (key := hash(topic)) not in hinted_records:
            if len(hinted_records) < 10_000:  # bounded, by their hash as above
                hinted_records.add(key)
                if parsed is None:
                    hint = json_codec.records_field_hint(payload, mapping)
                else:
                    hint = next((h for k, h in parsed.hints if k == "records_field_unread"), None)
                if hint is not None:
                    src._notice("records_field_unread", f"topic {shown_topic(topic)}: {hint}")
        if not got and every_number and not json_codec.empty_batch(payload):  # [], [ ]: nothing unread
            # nothing to read, and nothing said: a device (or a firmware update) that sends its numbers as
            # text ({"temp": "21.5"}) looked like a source that had stopped; one that nests them (Tasmota's
            # {"ENERGY": {...}}) is told the paths, not the text settings. Said once: later ones are counted,
            # their text not built (a nested field's hint held the loop 1.8 s on a message of 100,000 fields)
            if "no_numeric_field" in src.notices.counts:
                src.notices.note("no_numeric_field", "")
            else:
                src._notice(
                    "no_numeric_field",
                    f"topic {shown_topic(topic)}: a JSON message gave no reading: none of its top-level fields holds a finite "
                    + (
                        f"number; {said if said is not None else json_codec.nested_fields_hint(unnested)}"
                        if unnested
                        else 'number. A number sent as text ("21.5", "12,5") is not read as one (text is never made a '
                        'number: a part number "0012" would lose its zeros); set json_mapping.numbers_from_text: true to '
                        "read them as numbers, or map such a field in json_mapping.values to read it as text"
                    ),
                )
        prefix = topic + "/" if prefixed else ""
        if every_number and len(got) == 1 and got[0][0] == "":
            prefix = topic  # a bare number (the payload "21.5"): its tag is its topic
        if prefix and len(topic) > MAX_NAME_CHARS:
            # the tags would be named after a topic of thousands of characters (MQTT allows 65,535 bytes): each of
            # the message's values, none read. Its line said "the message's other values are", as a key's does
            unread = (
                f"none of its message's {len(got)} value(s) is read, every tag being named after it (tag_prefix_topic); "
                "shorten the device's topic"
            )
            for _ in got:
                src._name_too_long(topic, "topic", unread)
            return []
        if parsed is None and len(got) > 1:  # (put in time order in the worker thread)
            got = _in_time_order(got, received_at)
        checked = (
            0x5C in payload or not payload.isascii()
        )  # may hold text that is not valid Unicode: see below
        if parsed is not None and len(got) > CHUNK_READINGS:
            if checked:
                # names of the message that differ only by such text, refused all (_valid_text), are found over
                # the whole message first: its readings are handed over a chunk at a time
                got = _clashes_refused(src, topic, prefix, got)
            return _Chunks(got, prefix, received_at, kept[0], records, checked, topic)
        if records:
            readings = record_readings(prefix, got, received_at)
        else:
            readings = json_readings(prefix, got, received_at, kept[0])
        # text that is not valid Unicode comes in two ways: a JSON escape, "\ud800" alone (a valid pair,
        # "\ud83d\ude00", Python's json joins into its character), and a surrogate's own bytes, which json.loads
        # takes (surrogatepass) where strict UTF-8 failed: ED A0 80 (CESU-8, Java's modified UTF-8), a UTF-16
        # payload's lone D800. Both hand over a lone surrogate. A message of ASCII bytes without a backslash, the
        # common one, pays two C scans (memchr and an ASCII check: 30 ns; b"\\" in payload alone took 134)
        if readings and checked:
            src._valid_text(topic, readings)
        if (
            readings and src._clock_checked and not src.sparkplug.retained
        ):  # (a retained one: the broker's copy)
            src._lagging(topic, readings[0])
        return readings

    run.parse = parse  # type: ignore[attr-defined]
    return run


# how long a Sparkplug command waits for the next step of its node's large birth being learnt
# (``MqttSource._birth_learnt``): it waits while the steps go on; and at most for a birth or death of its node that
# came to be read (``MqttSource.command``)
LEARNING_WAIT_S = 5.0
UNREAD_POLL_S = 0.02  # a command waiting for its node's birth or death to be read looks this often
# a command that saw a birth of its node read while it waited waits this long more for the device births following
# it, which may not have come yet (another TCP read): births that came in that time are waited for too
BIRTH_SETTLE_S = 0.2

# readings made of a large message (decoded in a worker thread) at a time on the loop: 100,000 of them took 0.1-0.3 s
CHUNK_READINGS = 2_048


@dataclasses.dataclass(slots=True)
class _Parsed:
    """A large JSON message decoded in a worker thread (``json_decoder``'s ``parse``): its values, what the
    decoding reported and the error that ended it, in their order, said on the loop by ``run``."""

    got: list
    reports: list[tuple[str, str]]
    error: BaseException | None
    kept: bool
    hints: list[tuple[str, str]]
    texts: list[tuple[str, Any]]  # its text and nested fields that gave nothing, counted on the loop
    nested: list[tuple[str, Any]]


@dataclasses.dataclass(slots=True)
class _Own:
    """What one decode in a worker thread found (``json_decoder``'s ``parse``), kept to itself."""

    reports: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    kept: bool = False
    how: str | None = (
        None  # the payload's encoding when UTF-16/32 (``wide_encoding``): its records' refusals name it
    )
    texts: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    nested: list[tuple[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class _Chunks:
    """The values of a large JSON message still to be made readings, ``CHUNK_READINGS`` at a time on the loop
    (``MqttSource._next_chunk``), in their order: between two, the loop serves the agent's other work."""

    got: list
    prefix: str
    received_at: float
    kept: bool
    records: bool
    checked: bool  # may hold text that is not valid Unicode (``MqttSource._valid_text`` per chunk)
    topic: str
    at: int = 0


@dataclasses.dataclass(slots=True)
class _Steps:
    """A large Sparkplug message's metrics still to be learnt and read, ``sparkplug_host.STEP_METRICS`` at a time on
    the loop (``MqttSource._next_step``), in their order: between two, the loop serves the agent's other work.
    Learnt and read at once, 99,999 metrics held the loop 0.7-3.5 s."""

    steps: Iterator[list[Reading]]
    topic: str


def _clashes_refused(src: MqttSource, topic: str, prefix: str, got: list) -> list:
    """``got`` without the values whose names differ only by text that is not valid Unicode (each one would be
    tag ``valid_text(name)``), refused as ``MqttSource._valid_text`` refuses them in one message's readings: found
    over the whole message before its readings are made a chunk at a time."""
    came_as: dict[str, set[str]] = {}
    for g in got:
        t = g[0]
        if not t.isascii():
            named = valid_text(t)
            if named is not t:
                came_as.setdefault(named, set()).add(t)
    if not came_as:
        return got
    for g in got:  # a name valid as it came (the device's own U+FFFD)
        if g[0] in came_as:
            came_as[g[0]].add(g[0])
    clashes = {t for names in came_as.values() if len(names) > 1 for t in names}
    if not clashes:
        return got
    # said by _valid_text's words, over readings of the clashing names (the chunks then find none)
    src._valid_text(topic, [Reading(src.name, prefix + g[0], None, 0.0, 0.0) for g in got if g[0] in clashes])
    return [g for g in got if g[0] not in clashes]


_TIME_OF = operator.itemgetter(2)  # a decoded value's time: (tag, value, time, rate[, quality])


def _in_time_order(got: list, received_at: float) -> list:
    """One message's decoded values with each tag's own in time order, in the slots its values had (the
    message's order across tags stands, and a value without a time of its own, stamped ``received_at``, stays
    where it was: the receive time is not the device's clock). A message's samples are one batch the device
    sent at once: a historian's or REST bridge's buffer sent newest first kept only its newest sample of each
    tag, the others dropped as out_of_order. A message older than one already read still is. A message in
    order, the common case, costs one pass."""
    last = -math.inf
    for g in got:
        if g[2] < last:
            break
        last = g[2]
    else:
        return got
    slots: dict[str, list[int]] = {}
    for i, g in enumerate(got):
        if g[2] != received_at:
            slots.setdefault(g[0], []).append(i)
    out = got[:]
    for idx in slots.values():
        if len(idx) > 1:
            for i, g in zip(idx, sorted([got[i] for i in idx], key=_TIME_OF), strict=True):
                out[i] = g
    return out


def sparkplug_decoder(src: MqttSource, sub: Subscription):
    """Sparkplug B: the source's host application decodes (births, aliases, sequence numbers)."""
    handle, order = src.sparkplug.handle, src._order

    def run(topic: str, payload: bytes, received_at: float, decoded: sparkplug_host.Decoded | None = None):
        got = handle(topic, payload, received_at, decoded)
        # a large message's (decoded in a worker thread): read a step at a time (``MqttSource._next_step``)
        return order(got) if isinstance(got, list) else _Steps(got, topic)

    run.parse = lambda topic, payload, received_at: sparkplug_host.decode_apart(payload)  # type: ignore[attr-defined]
    return run
