"""OPC UA source (asyncua client): subscribed node values as ``Reading`` objects, write-back, browse.

Lifecycle (``devices.base`` contract): ``start()`` launches one background task that connects,
reads each node's browse name (default tag), creates one subscription with one monitored item
per node and then probes the server state every ``keepalive_check_s``. Any failure (refused,
unreachable, server restarted, keepalive lost) moves the source to BACKOFF, counts the error,
logs once per burst, waits (bounded exponential backoff) and starts over with a fresh session and
subscription. The task never raises. A server whose values are not current while its session stays
open (its state not Running, its clock frozen, its subscription stalled, no answer) has its tags' readings
turned BAD at once, and ``halted`` says so (reason, since when, checks) until it shows it is healthy.

Readings: a scalar Float (a PLC's REAL, also a structure's member) as the short decimal that is the same
REAL (75.3, as the PLC shows it, not 75.30000305175781: ``protocols.float32``); an array of numbers (a
Double[] waveform) arrives as a 1-D float64 NumPy array (a matrix node, [3, 1024] by the value's dimensions or
the node's ArrayDimensions, as the rows ``nodes[].index`` picks, never flattened: ``_matrix``), any other array
as a list (texts, bytes, true/false, whole numbers past 2**53), scalars as Python values (texts, names,
times, XML and Variants in their plain form); a structure (a PLC's UDT) gives a reading per member, ``{tag}/{member}``,
once the session has read the server's type definitions (``_structures``); ``timestamp``
is the source timestamp (server timestamp, then receive time, when absent); status Good /
Uncertain / Bad becomes ``Quality``, and a reading not GOOD says why in ``reason`` (the status code's name, or the
source's own key: a halt's reason, ``null_value``, ``non_finite``; ``_quality``) (a null value said Good or
Uncertain is BAD, counted as ``null_value``, as is a DateTime value of 1601-01-01: DateTime 0, the null time); a value the server dates before the BAD reading a halt gave its tag is
stamped after it, its own time in ``source_ts`` (a tag's history never goes back in time). Non-finite numbers are passed with quality BAD
(``non_finite: bad``, default) or dropped (``skip``), and counted as ``non_finite`` either way.
A source timestamp older than the tag's previous one is counted as ``out_of_order`` and still
passed on; a waveform sent again with its tag's last source timestamp and samples (a subscription's first
value after a reconnect) is not passed on twice (``repeated_waveform``). A node that does not exist is reported by name (``stats.errors_by_reason['node']``)
and the other nodes stay subscribed. A monitored item the server grants a smaller queue than asked, or a
much slower sampling interval, is said once per node (``queue_revised`` / ``sampling_revised``,
``revised``), and a subscription published much less often than asked once (``publishing_revised``): the
values it then drops are never reported; a value whose status carries the Overflow bit
(the server dropped older ones before it) is counted per tag (``overflows``, ``queue_overflow``). No
message from the server over ``max_message_bytes`` is held in memory: the connection is closed, counted
as ``too_large``, and the source reconnects (closing first the session the server kept: ``_close_left``);
after one in a subscribed session, the largest values are given
subscriptions of their own, a node whose value alone is over the limit is left out until it fits (``_measure``,
``_refit``). Calls carrying many items go to the server in parts of
at most its OperationLimits (``_split_operations``). A node without ``tag`` whose browse name is another
node's tag is tagged by its node id (``_claim_tag``). A node the server says is gone (BadNodeIdUnknown: a
PLC program download) has its monitored item made again until the server takes it (``_node_gone``).

Errors (all ``OpcUaError``, itself a ``devices.base.DeviceError``)::

    OpcUaError
    ├── OpcUaNotConnected   write/browse while not CONNECTED
    ├── OpcUaWriteRefused   the server answered a write with a Bad status
    ├── OpcUaServerBusy     ... with one that says "not now" (BadTooManyOperations, BadServerTooBusy,
    │                       BadTimeout, BadNoCommunication, ...): retried
    ├── OpcUaNodeError      a malformed or unknown node id
    └── OpcUaTypeMismatch   a value that does not fit the node's DataType (never coerced: the string
                            ``"false"`` is not written as TRUE to a Boolean node)

``retryable`` is False on errors that a retry cannot fix (unknown node, type mismatch, refused write);
a write refused with a status that says "not now" (``_BUSY``) is ``OpcUaServerBusy``, retried.
``type_refused`` is True on a value refused for the node's type, by this adapter or by the server
(BadTypeMismatch): a PLC download may make the node take it later (an output's edge is judged again).
A write is checked against the node's DataType and ValueRank (read once, read again when the server
answers BadTypeMismatch); a DataType the server does not derive from a built-in type is a type mismatch,
as is a value an enumeration does not define. A server answering BadWriteNotSupported gets the value in
the other forms of ``_FORMS`` (alone, with a source timestamp); the form a node takes is kept.
NodeIds may name their namespace by URI (``nsu=urn:plc;s=Line.Reject``): resolved to the server's
index after each connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import enum
import functools
import logging
import math
import re
import reprlib
import socket
import struct
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from asyncua import Client, Node, ua
from asyncua.common.connection import MessageChunk
from asyncua.common.subscription import Subscription
from asyncua.common.ua_utils import get_base_data_type
from asyncua.common.utils import Buffer
from asyncua.crypto import security_policies
from asyncua.ua import status_codes, ua_binary

from devices.base import (
    Backoff,
    BurstLogger,
    Channel,
    ConnectionState,
    DeviceError,
    DeviceStats,
    FractionFloat,
    Notices,
    Quality,
    Reading,
    WholeFloat,
    WrittenNumber,
    config_text,
    float_for_plc,
    text_problem,
    valid_text,
    wall_since,
    written_number,
)
from devices.opcua.properties import (
    BROWSE_IDLE_PAGES,
    UNTIL_READ,
    Properties,
    PropertiesUnread,
    browse_of,
    next_page,
    paged,
    release_points,
)
from devices.opcua.rates import RateError, StatedRates
from devices.opcua.settings import (
    DATETIME_RANGE,
    NSU,
    NonFinitePolicy,
    OpcUaSettings,
    SecurityMode,
    is_key_of,
    namespace_uri,
    read_certificate,
    read_private_key,
)
from devices.opcua.statuses import BUSY as _BUSY
from devices.opcua.statuses import SESSION_GONE as _SESSION_GONE
from devices.opcua.statuses import busy, code_name, code_of
from protocols.float32 import float32_shown
from protocols.json_codec import offset_problem
from protocols.redact import mask_credentials

log = logging.getLogger("devices.opcua")


class _ConnectionLossFilter(logging.Filter):
    """A PLC restart is routine: asyncua's own ERROR lines with tracebacks about the lost connection
    ("Publish iteration crashed", ...) become one WARNING line without traceback; this adapter reports
    the loss itself and reconnects. asyncua's WARNING that it was asked to close a session or channel
    whose connection is already closed is dropped: the adapter closes the client after every failed
    attempt, so a PLC that stays away gave one such line per retry, for as long as it stayed away (the
    adapter's own line about it is said once per burst). Other asyncua errors pass unchanged."""

    _LOSS = (
        OSError,
        ConnectionError,
        TimeoutError,
        asyncio.TimeoutError,
        asyncio.IncompleteReadError,
        ua.UaError,
    )

    _CLOSED = "was called but connection is closed"  # close_session / close_secure_channel on a dead link

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return not (record.levelno == logging.WARNING and self._expected(record))
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None and "error status from server" not in str(record.msg):
            return True
        if exc is not None and not isinstance(exc, self._LOSS):
            return True
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        if exc is not None:
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc}); the source reconnects"
            record.args = None
            record.exc_info = record.exc_text = None
        return True

    def _expected(self, record: logging.LogRecord) -> bool:
        if str(record.msg).endswith(self._CLOSED):
            return True
        # the refusal of the ActivateSession by which the source closes a session left on the server
        # (``_close_left``): a server that restarted has ended it already, at every reconnect after its restart
        args = record.args if isinstance(record.args, tuple) else ()
        return (
            str(record.msg).startswith("ServiceFault (")
            and len(args) == 3
            and args[0] == "BadSessionIdInvalid"
            and str(args[2]).endswith("ActivateSessionRequest")
        )


class _CertificateNoteOnce(logging.Filter):
    """asyncua checks the agent's certificate at every connect attempt and warns each time that it lacks the
    gateway's host name (or the application URI): a source reconnecting to a PLC away for a day logged it
    every attempt, up to 2,880 lines, none naming the source. Each such note is let through once."""

    _MAX = 256  # distinct notes kept (a host name and a URI each: a handful per certificate)
    _NOTE = "certificate does not contain"

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self._NOTE):
            return True
        note = record.getMessage()
        if note in self.seen:
            return False
        if len(self.seen) < self._MAX:
            self.seen.add(note)
        return True


class _UnknownHandleOnce(_CertificateNoteOnce):
    """asyncua warns at every notification of a monitored item it holds no handle for: the item a faulty server made
    but left out of its CreateMonitoredItems answer (``OpcUaSource._subscribe_alone``: its id never given, it cannot be
    deleted) warned at each change of its node's value for the session. Said once per handle."""

    _NOTE = "Received a notification for unknown handle"


_uacrypto_log = logging.getLogger("asyncua.crypto.uacrypto")
if not any(isinstance(f, _CertificateNoteOnce) for f in _uacrypto_log.filters):
    _uacrypto_log.addFilter(_CertificateNoteOnce())
_subscription_log = logging.getLogger("asyncua.common.subscription")
if not any(isinstance(f, _UnknownHandleOnce) for f in _subscription_log.filters):
    _subscription_log.addFilter(_UnknownHandleOnce())

for _name in (
    "asyncua.client.ua_session.UaSession",
    "asyncua.client.ua_client.UASocketProtocol",
    "asyncua.client.ua_client.UaClient",
    "asyncua.client.client",
    "asyncua.common.subscription",
):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _ConnectionLossFilter) for f in _logger.filters):
        _logger.addFilter(_ConnectionLossFilter())

__all__ = [
    "AbstractType",
    "OpcUaError",
    "OpcUaNodeError",
    "OpcUaNotConnected",
    "OpcUaServerBusy",
    "OpcUaSource",
    "OpcUaTypeMismatch",
    "OpcUaWriteRefused",
    "browse_server",
    "check_server",
    "convert_value",
    "to_variant",
]


class OpcUaError(DeviceError):
    """Root of the OPC UA adapter's errors."""

    retryable = True
    type_refused = False  # the value was refused for the node's type, here or by the server
    # the write target's config field at fault, for a caller to name (``node_id``: the node itself, whatever the
    # value); None: the value written
    field: str | None = None


class OpcUaNotConnected(OpcUaError):
    """Not connected, or the connection lost during the request: the PLC away, not the node refusing."""

    connection_lost = True  # a short outage is the source's ``source_down``, not a write target's episode


class OpcUaWriteRefused(OpcUaError):
    retryable = False


class OpcUaServerBusy(OpcUaError):
    """The server could not take the write now (busy, too many operations, a timeout on its side, the
    device behind it not answering): the same write may succeed later, so it is retried."""


class OpcUaNodeError(OpcUaError):
    """The node id names no node this server has (its namespace missing or changed, malformed, unknown)."""

    retryable = False
    field = "node_id"


class OpcUaTypeMismatch(OpcUaError):
    """A value the node's type refuses. ``fix``: the advice the message ends with (None: not split out);
    ``text_node``: the node takes text (String, LocalizedText); ``element``: the place of the refused element in
    a list written (``(3,)``: its fourth), () for a single value. A caller that knows where the value came from
    (a write value given by a variable: ``OpcUaSource.expect_writes``' note) says the fix in its own words."""

    retryable = False
    type_refused = True
    fix: str | None = None
    text_node = False
    element: tuple[int, ...] = ()
    props_unread = False  # refused for want of the node's properties (``_props_refused``), not by its type


# a write target's check that found the node itself failing for good (``_check_target``), not a read that failed
_NODE_FAILS = (
    "does not exist on the server",
    "is read-only for this session",
    "not a Variable",
    "malformed node id",
    "the server has no namespace",  # nsu=<uri> the server's NamespaceArray lacks: no node of it can exist there
)


class _Silent(ConnectionError):
    """The session answers but its subscription has sent nothing (no data, no keep-alive) for longer
    than the server promised: a stalled server, or one that dropped the subscription (asyncua's publish
    loop then ends quietly); or the server stopped answering with its connection open. Its tags would stay
    at their last values: their readings are passed on BAD at once (``halt``: the reason the source is
    halted for, ``_halted``) and the source reconnects."""

    reason = "stalled"

    def __init__(self, msg: str, halt: str = "subscription_stalled") -> None:
        super().__init__(msg)
        self.halt = halt


# a value dated (by the server) before the BAD reading a halt gave its tag is stamped at least this much after it
# (1 ms: a historian keeping milliseconds must not see the two at one time, the later one overwriting the BAD)
_AFTER_BAD_S = 0.001
# a wall clock moving back this much more than the time since boot between two values stepped (``OpcUaSource._now``)
_CLOCK_STEP_S = 1.0


def _since_boot() -> float:
    """Seconds since boot, suspend included: CLOCK_BOOTTIME on Linux, the monotonic clock elsewhere (macOS and
    Windows have no CLOCK_BOOTTIME: every value raised AttributeError there)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


# the most readings held while a halted server has not yet shown it is healthy again (``_hold``)
_HELD_MAX = 10_000
# the intervals between changes of the server's clock its update period is the longest of (``_judge_clock``)
_CLOCK_GAPS = 8
# the most of the clock node's MinimumSamplingInterval taken as the least of its update period: a server
# stating an hour (or a mistaken huge value) would otherwise have a frozen clock caught hours late. A clock
# seen moving more slowly still has its own period learned (``_judge_clock``)
_CLOCK_SAMPLING_MAX_S = 10.0
_UNSEEN = object()  # a tag without a value yet in this session (``_value_changed``)


def _same_value(a: Any, b: Any) -> bool:
    """Whether two values of a tag are the same (arrays element by element; NaN is its own)."""
    if type(a) is np.ndarray or type(b) is np.ndarray:
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:  # not numbers: NaN cannot be in them
            return bool(np.array_equal(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # a value whose == does not give a truth (an odd structure member)
        return a is b


class _Refused(ConnectionError):
    """A connect the agent ends itself before it sends what it must not (a password the server would take
    in clear text); ``reason`` is its ``errors_by_reason`` key."""

    def __init__(self, reason: str, msg: str) -> None:
        super().__init__(msg)
        self.reason = reason


class _Halted(_Silent):
    """The session answers and keeps alive, but the server says its values are not current: its state
    (ServerStatus.State) is not Running, or its clock (ServerStatus.CurrentTime), seen moving before, stands
    still (a frozen runtime whose OPC UA stack lives on). Its tags' readings are passed on BAD at once."""

    def __init__(self, reason: str, msg: str) -> None:
        super().__init__(msg, reason)
        self.reason = reason


# halts for a silent server (``_Silent``): ended once its subscription is seen publishing again
_STALLS = frozenset({"subscription_stalled", "server_not_answering"})


_INT_RANGE = {
    "SByte": (-(2**7), 2**7 - 1),
    "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}


# a value with one of these says the node is gone from the server (Part 4, 7.39: the high 16 bits)
_NODE_GONE = frozenset({ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid})


# a monitored item refused with one of these: the server holds no more, the node itself is fine
_SERVER_FULL = frozenset({"BadTooManyMonitoredItems", "BadResourceUnavailable", "BadOutOfMemory"})


_NOT_YOURS = (
    "the server does not let this session write the node (its AccessLevel / UserAccessLevel, the user the "
    "agent logs in as, or a PLC in local or maintenance mode); give that user write access, or make the node "
    "writable in the PLC's OPC UA settings; not retried"
)
# a write refused for good: what the status means for the person who has to fix it
_REFUSED = {
    "BadUserAccessDenied": _NOT_YOURS,
    "BadNotWritable": _NOT_YOURS,
    "BadWriteNotSupported": "the server takes no write of this node in any form the agent has (the value "
    "with its status, the value alone, the value with its source timestamp); not retried",
    "BadOutOfRange": "the node takes the type but not this value (outside its EURange or the PLC program's "
    "limits); write a value within them; not retried",
    "GoodClamped": "the server took the value only clamped into the node's range (its EURange or the PLC "
    "program's limits), so the node holds another value than the one written; write a value within the range; "
    "not retried",
}


# a write refused for the node itself, whatever the value: the config's node_id is at fault
_NODE_STATUSES = frozenset(
    {"BadUserAccessDenied", "BadNotWritable", "BadWriteNotSupported", "BadNodeIdInvalid", "BadNodeIdUnknown"}
)

# a write's answers that may mean the node's type changed since it was read (a converting gateway answers a value
# past a retyped node's new range BadOutOfRange): its type is read again once and the value judged by it
_TYPE_ANSWERS = frozenset({ua.StatusCodes.BadTypeMismatch, ua.StatusCodes.BadOutOfRange})

# the services ``_split_operations`` sends, as a faulty answer's count names them
_CALLS = {
    "write": "Write",
    "browse": "Browse",
    "monitor": "call on monitored items",
    "translate": "TranslateBrowsePathsToNodeIds",
}

# what a node's type is read from (``_node_type``, ``_attributes_unchanged``): one Read
_TYPE_ATTRIBUTES = (ua.AttributeIds.DataType, ua.AttributeIds.ValueRank, ua.AttributeIds.ArrayDimensions)

# a write target's attributes watched for a PLC download or mode change (``OpcUaSource._watch_targets``)
_WATCHED = (ua.AttributeIds.DataType, ua.AttributeIds.ArrayDimensions, ua.AttributeIds.UserAccessLevel)

# a value's status with InfoType DataValue and the Overflow bit: the monitored item's queue overflowed
# before it, so the server dropped older values (Part 4, 7.39.1)
_OVERFLOW = 0x0400 | 0x0080
# a value's status with the SemanticsChanged bit: the node's metadata (EURange, units, a waveform's
# XAxisDefinition) changed, and a client should read it again (Part 4, 7.39.1)
_SEMANTICS_CHANGED = 0x4000
# and with the StructureChanged bit: the encoding of its value changed (a PLC download changed a structure's
# layout): a client that decodes structures must read the DataType's definition again (Part 4, 7.39.1)
_STRUCTURE_CHANGED = 0x8000


_WRITABLE_VALUES = "Boolean, SByte..UInt64, Float, Double, String, LocalizedText, DateTime, ByteString, Guid"
_WRITABLE = _WRITABLE_VALUES + ", Number, Integer, UInteger, BaseDataType"


class AbstractType(enum.Enum):
    """The abstract numeric DataTypes (OPC UA Part 3, 5.8.2): no value is of them, only of a concrete
    subtype, so a write picks one (asyncua maps all three to Variant, which sent an Int32 to a UInteger
    node and text to an Integer one)."""

    Number = 26  # Integer, UInteger, Float, Double
    Integer = 27  # SByte, Int16, Int32, Int64
    UInteger = 28  # Byte, UInt16, UInt32, UInt64


_SIGNED = ("SByte", "Int16", "Int32", "Int64")
_UNSIGNED = ("Byte", "UInt16", "UInt32", "UInt64")
# the concrete types an abstract node may hold: the one it holds is written when the value fits it
_SUBTYPES = {
    AbstractType.Integer: _SIGNED,
    AbstractType.UInteger: _UNSIGNED,
    AbstractType.Number: _SIGNED + _UNSIGNED + ("Float", "Double"),
}


# a value in a refusal, bounded: a megabyte of text refused by an Int16 node is named, not copied into the
# message (and so into the log line and /status)
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlong = 60


def _shown(value: Any) -> str:
    try:
        return _SHOWN.repr(value)
    except ValueError:  # an int past Python's 4,300 digits for a text: not even its repr is made
        return (
            f"<an integer of {value.bit_length()} bits>"
            if isinstance(value, int)
            else f"<{type(value).__name__}>"
        )


def convert_value(
    vtype: ua.VariantType | AbstractType, value: Any, node_id: str = "?", held: ua.VariantType | None = None
) -> Any:
    """``value`` as the node's DataType wants it, or ``OpcUaTypeMismatch`` naming node, type and fix.

    Strict on purpose: ``bool("false")`` is True, so a string is never turned into a Boolean or a
    number; a Boolean takes true/false (or 0/1), an integer type takes whole numbers in its range
    (true/false as 1/0), Float/Double take finite numbers (a Float within its 32-bit range: never NaN,
    infinity or an overflow to infinity), String and LocalizedText take text (a finite number as its
    text: ``12`` → ``"12"``; never NaN or infinity, never true/false), DateTime an ISO 8601 time with its
    zone (``2026-11-30T12:00:00Z``) or a ``datetime`` within 1601-01-01..9999-12-31, ByteString bytes,
    Guid a UUID. A node of the abstract BaseDataType takes a value of the type it holds (``held``) by
    that type's rules, and refuses one that does not fit it naming that type (written as another type, a
    lenient server would change the node's type under the PLC program that reads it); only one holding
    nothing (a null value) takes a Boolean, a whole number (Int32, else Int64), a finite number (Double) or
    text (String). Integer takes a whole number (Int32, else Int64),
    UInteger a whole number >= 0 (UInt32, else UInt64), Number a finite number (whole: as Integer, else
    Double); for those three, the concrete type the node holds (``held``) is kept, and a value that does not
    fit it is refused naming it, as for BaseDataType. See ``to_variant``. Any other DataType is refused by
    name rather than handed to the encoder. Arrays: each element alike; a 0-d NumPy array is its single
    value. Text that UTF-8 cannot encode (a lone surrogate) is refused.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # its NumPy scalar: a float32 keeps its own precision (its text, ``_text``)
    if isinstance(value, np.ndarray):  # each element (a row of a matrix) as NumPy holds it, not as a double
        return _each(vtype, list(value), node_id, held)
    if isinstance(value, list | tuple):
        return _each(vtype, np.asarray(value, dtype=object).tolist(), node_id, held)
    return _convert_scalar(vtype, value, node_id, held)


def _each(
    vtype: ua.VariantType | AbstractType, items: list, node_id: str, held: ua.VariantType | None
) -> list:
    """Each element by ``convert_value``'s rules; a refusal knows which element it refused (``element``)."""
    out = []
    for i, v in enumerate(items):
        try:
            out.append(convert_value(vtype, v, node_id, held))
        except OpcUaTypeMismatch as e:
            e.element = (i, *e.element)
            raise
    return out


def to_variant(
    vtype: ua.VariantType | AbstractType, value: Any, node_id: str = "?", held: ua.VariantType | None = None
) -> ua.Variant:
    """The ``ua.Variant`` written for ``value`` to a node whose DataType is ``vtype``
    (``convert_value``'s rules). For BaseDataType (``Variant``) the type the node holds (``held``), else
    (it holds nothing) the value's own kind (a node holding a Variant[]: a Variant[] of each element's
    own); for the abstract Number / Integer / UInteger the held type (a value that does not fit it is
    refused), else (it holds nothing) the value's own kind; an array's elements must all be of one kind
    (whole numbers: the widest any needs; a Number's whole numbers among fractions: Double), but for a node
    holding a Variant[]."""
    if isinstance(vtype, ua.VariantType) and vtype is not ua.VariantType.Variant:
        return ua.Variant(convert_value(vtype, value, node_id), vtype)
    payload = convert_value(vtype, value, node_id, held)
    if not isinstance(payload, list):
        return ua.Variant(payload[0], payload[1])
    shown = "BaseDataType" if vtype is ua.VariantType.Variant else vtype.name
    if any(isinstance(p, list) for p in payload):
        raise OpcUaTypeMismatch(f"node {node_id} is {shown}; cannot write {_shown(value)}: nested arrays")
    if vtype is ua.VariantType.Variant and held is ua.VariantType.Variant:
        # a node holding a Variant[]: each element carries its own type, as the node holds them
        return ua.Variant([ua.Variant(v, kind) for v, kind in payload], ua.VariantType.Variant)
    kinds = {kind for _, kind in payload}
    if len(kinds) > 1 and held in kinds:  # some elements do not fit the held type: all by the rules
        payload = convert_value(vtype, value, node_id)
        kinds = {kind for _, kind in payload}
    names = {k.name for k in kinds}
    values = [v for v, _ in payload]
    if len(kinds) > 1:
        if names <= {"Int32", "Int64"}:
            kinds = {ua.VariantType.Int64}
        elif names <= {"UInt32", "UInt64"}:
            kinds = {ua.VariantType.UInt64}
        elif (
            vtype is AbstractType.Number
            and "Double" in names
            and names <= {"Int32", "Int64", "UInt64", "Double"}
        ):
            kinds, values = {ua.VariantType.Double}, [float(v) for v in values]
    if len(kinds) != 1:
        raise OpcUaTypeMismatch(
            f"node {node_id} is {shown}; cannot write {_shown(value)}: an array needs elements of one kind"
            + (f" (here {', '.join(sorted(names))})" if kinds else "")
        )
    return ua.Variant(values, kinds.pop())


def _convert_scalar(
    vtype: ua.VariantType | AbstractType,
    value: Any,
    node_id: str,
    held: ua.VariantType | None = None,
    any_held: bool = False,
    holder: str = "BaseDataType",
    as_written: str | None = None,
) -> Any:
    """One value by ``convert_value``'s rules; ``any_held``: ``vtype`` is the type a node of DataType
    ``holder`` (BaseDataType, or an abstract Number / Integer / UInteger) holds, and a refusal names it and
    why it is kept; ``as_written``: the config's text of the value (``config_text``) a holder was given."""
    # a config's number kept with its text: a refusal names it as written (9.007199254740993e+15, 0x8000, 2.50),
    # a String node gets that text, every other node the number (``written_number``)
    config_value = value  # as the config gave it: a BaseDataType node holding a String gets its text too
    value, written, text, shown_text = written_number(value)
    if text is not None:
        as_written = text
    if isinstance(value, WholeFloat | FractionFloat):
        # a config's 9.007199254740993e+15: an integer node gets the whole number the text shows, every other
        # type the float (a node holding a type judges it as that type, below); its 9007199254740992.5 is a
        # fraction to an integer or Boolean node (refused as 2.5 is: 1.0000000000000000001 was written true), the
        # float to every other
        if vtype.name in _INT_RANGE or vtype in (AbstractType.Integer, AbstractType.UInteger):
            # the whole number its text shows, named as written (-9.223372036854775809e+18, as every refusal)
            if isinstance(value, WholeFloat):
                value = value.whole
        elif isinstance(value, FractionFloat) and vtype.name == "Boolean":
            pass
        elif held is None or held is ua.VariantType.Variant or vtype.name not in ("Variant", "Number"):
            value = float(value)
    own = value  # a NumPy float32 (float16) keeps its own precision when written as text (``_text``)
    if isinstance(value, np.generic):
        value = value.item()
    given = value  # as the action gave it: the checks below may hold it as another type
    t = vtype.name
    shown = (
        f"{holder} holding {'an' if t[0] in 'AEIX' else 'a'} {t}"
        if any_held
        else "BaseDataType"
        if t == "Variant"
        else t
    )

    def bad(fix: str) -> OpcUaTypeMismatch:
        if any_held:
            fix += (
                f"; the node's type is kept: written as another, it would change under the PLC program that "
                f"reads it as {'an' if t[0] in 'AEIX' else 'a'} {t}"
            )
        err = OpcUaTypeMismatch(
            f"node {node_id} is {shown}; cannot write "
            f"{as_written if as_written is not None and type(given) in (int, float) else _shown(given)} "
            f"({'float' if isinstance(given, FractionFloat) else type(given).__name__}): {fix}"
        )
        err.fix, err.text_node = fix, t in ("String", "LocalizedText")
        return err

    if isinstance(vtype, AbstractType):
        return _abstract(vtype, value, node_id, held, bad, written, as_written)
    if t == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and not isinstance(value, FractionFloat) and value in (0, 1):
            return bool(value)
        raise bad("write true or false without quotes")
    if t in _INT_RANGE:
        if isinstance(value, str):
            raise bad("write a number without quotes")
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float):
            value = _whole_float(value, bad)
        if not isinstance(value, int):
            raise bad("write a whole number")
        lo, hi = _INT_RANGE[t]
        if not lo <= value <= hi:
            raise bad(f"out of range {lo}..{hi}")
        return value
    if t in ("Float", "Double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad(_a_number(value))
        try:
            # a config's number as its text shows it: 1.0e-400 is 0.0 to YAML, which the node would get
            return float_for_plc(value if written is None else written, single=t == "Float")
        except ValueError as e:
            raise bad(str(e)) from None
    if t in ("String", "LocalizedText"):
        if isinstance(value, float) and not math.isfinite(value):
            raise bad("NaN and infinity are never written as text; write text or a finite number")
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = (
                _utf8(value, bad)
                if isinstance(value, str)
                else shown_text
                if shown_text is not None
                else _text(own, value)
            )
            return text if t == "String" else ua.LocalizedText(text)
        raise bad("write text")
    if t == "DateTime":
        return _datetime(value, bad)
    if t == "ByteString":
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        raise bad("a ByteString node takes bytes; text and numbers are not encoded into it")
    if t == "Guid":
        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
        raise bad("write a GUID such as 72962b91-fa75-4ae6-8d28-b404dc7daf63")
    if t == "Variant":  # BaseDataType: the type the node holds, else (a null value) the value's own kind
        if held is not None and held is not ua.VariantType.Variant:  # Variant: a Variant[]'s elements, any
            # the config's number as given (0x7FFF: its text to a String held, the number to any other)
            held_value = config_value if isinstance(config_value, WrittenNumber) else own
            return _convert_scalar(held, held_value, node_id, any_held=True, as_written=as_written), held
        if isinstance(value, bool):
            return value, ua.VariantType.Boolean
        if isinstance(value, int):
            return _whole(value, ("Int32", "Int64"), bad)
        if isinstance(value, float):
            try:
                return float_for_plc(
                    value if written is None else written, single=False
                ), ua.VariantType.Double
            except ValueError as e:
                raise bad(str(e)) from None
        if isinstance(value, str):
            return _utf8(value, bad), ua.VariantType.String
        raise bad("write true/false, a number or text")
    if any_held:
        raise bad(f"the agent writes only {_WRITABLE_VALUES} values; write to a node that holds one of them")
    raise bad(f"the agent writes only {_WRITABLE} nodes; write to a node of one of those types")


def _a_number(value: Any) -> str:
    """What a Float, Double or Number node wants instead of ``value``: in words that fit it (``value: true`` has
    no quotes to remove)."""
    if isinstance(value, bool):
        return "write a number; true and false are a Boolean node's values"
    return "write a number without quotes" if isinstance(value, str) else "write a number"


def _text(own: Any, value: int | float) -> str:
    """A number written as text: an integer's digits; a float the shortest text that reads back as the same
    value of its own precision, in Python's form (``repr``): a NumPy float32 score of 0.1 is "0.1", not the
    "0.10000000149011612" of the double it widens to, 16777216.0 is "16777216.0" (NumPy's own text would be
    "1.6777216e+07"), a Python float (a double) its ``repr``."""
    if isinstance(own, np.floating) and own.dtype.itemsize < 8:
        return repr(float(str(own)))  # NumPy's str: the fewest digits that read back as this float32
    return str(value)


def _utf8(text: str, bad) -> str:
    """``text`` when UTF-8 can encode it (what OPC UA sends); a lone surrogate (JSON's or YAML's "\\ud800"
    loads as one) cannot, and asyncua's encoder would raise a bare UnicodeEncodeError naming no node. Text
    holding a NUL or another control character but tab, line feed and carriage return is refused too
    (``text_problem``: a NUL ends a PLC's C string there; OPC UA Part 6 calls such strings not interoperable)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise bad(
            f"text that is not valid Unicode (a lone surrogate, {text[e.start]!r}, at character {e.start}) has no "
            "UTF-8 form; write valid text"
        ) from None
    if (why := text_problem(text)) is not None:
        raise bad(why)
    return text


def _whole_float(value: float, bad) -> int:
    """A float bound for an integer node: a whole one as its int; a fraction is never rounded or cut
    (2.5 is neither 2 nor 3 to a PLC counter or setpoint), NaN and infinity are never written."""
    if not math.isfinite(value):
        raise bad("NaN and infinity are never written to an integer node")
    if not value.is_integer():
        raise bad("write a whole number; a fraction is never rounded or truncated for an integer node")
    return int(value)


def _whole(value: int, kinds: tuple[str, ...], bad) -> tuple[int, ua.VariantType]:
    """``value`` with the first of ``kinds`` whose range holds it."""
    for kind in kinds:
        lo, hi = _INT_RANGE[kind]
        if lo <= value <= hi:
            return value, ua.VariantType[kind]
    lo, hi = _INT_RANGE[kinds[-1]]
    raise bad(f"out of range of a{'n' if kinds[-1][0] == 'I' else ''} {kinds[-1]} {lo}..{hi}")


def _abstract(
    kind: AbstractType,
    value: Any,
    node_id: str,
    held: ua.VariantType | None,
    bad,
    written: float | None = None,
    as_written: str | None = None,
) -> tuple:
    """(value, concrete VariantType) for a node of an abstract numeric DataType: the type it holds, by that
    type's rules (a value that does not fit it is refused naming it: sent as another type, it was refused by a
    strict server only once it had gone out, and a lenient one took it and changed the node's type under the
    PLC variable it maps, an INT given 1.5 as a Double, a REAL 16777217 as an Int32: rounded there); one that
    holds nothing (a null value), the narrowest standard type that fits. True and false are 1 and 0 to an
    Integer or UInteger node, as to every concrete integer type (an action's default ``value: true`` on a PLC's
    INT flag), and to a Number node holding an integer type; a Number node holding none refuses them, as Float
    and Double do. ``written``: the config's number ``value`` is the float of (``WholeFloat``, ``FractionFloat``),
    judged by its text as a Double (``1.0e-400`` is refused, not written as 0.0)."""
    given = value
    if isinstance(value, bool) and (
        kind is not AbstractType.Number or (held is not None and held.name in _INT_RANGE)
    ):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(_a_number(value) if kind is AbstractType.Number else "write a whole number")
    if isinstance(value, float) and kind is not AbstractType.Number:
        value = _whole_float(value, bad)
    if kind is AbstractType.UInteger and value < 0:
        raise bad("a UInteger node takes whole numbers >= 0")
    if held is not None and held.name in _SUBTYPES[kind]:
        return (
            _convert_scalar(held, given, node_id, any_held=True, holder=kind.name, as_written=as_written),
            held,
        )
    if isinstance(value, float):
        try:
            return float_for_plc(value if written is None else written, single=False), ua.VariantType.Double
        except ValueError as e:
            raise bad(str(e)) from None
    if kind is AbstractType.UInteger:
        return _whole(value, ("UInt32", "UInt64"), bad)
    return _whole(
        value, ("Int32", "Int64") if kind is AbstractType.Integer else ("Int32", "Int64", "UInt64"), bad
    )


# an ISO 8601 time's fraction of a second past its sixth digit (group 1)
_FINER_THAN_US = re.compile(r"[.,]\d{6}(\d+)")


def _datetime(value: Any, bad) -> dt.datetime:
    """A timezone-aware UTC ``datetime`` from a ``datetime`` (naive: taken as UTC, as asyncua does)
    or an ISO 8601 string that names its zone; a zone-less string is ambiguous and refused."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise bad("write an ISO 8601 time with its zone, e.g. 2026-11-30T12:00:00Z") from None
        if parsed.tzinfo is None:
            raise bad("the time has no zone; add Z (UTC) or an offset such as +01:00")
        finer = _FINER_THAN_US.search(value)
        if finer and finer[1].strip("0"):
            # Python's times (and so asyncua's) hold microseconds: the digits past the sixth were dropped
            raise bad(
                f"its fraction of a second, {finer[0]}, is finer than a microsecond, which the agent "
                "writes at most (the rest would be dropped); write at most 6 digits after the point"
            )
        value = parsed
    if not isinstance(value, dt.datetime):
        raise bad("write an ISO 8601 time with its zone, e.g. 2026-11-30T12:00:00Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    elif (odd := offset_problem(value)) is not None:
        # +15:00, +05:30:15: a typo or a garbled field (refused so on MQTT and Sparkplug), a PLC's time a day off
        raise bad(f"{odd}; write Z (UTC) or the zone's offset, e.g. 2026-11-30T12:00:00+01:00")
    try:
        value = value.astimezone(dt.UTC)
    except OverflowError:
        value = None
    # earlier than 1601 would be sent as the null time (no time at all), later as the maximum
    if value is None or not DATETIME_RANGE[0] <= value <= DATETIME_RANGE[1]:
        raise bad("out of the range of an OPC UA DateTime, 1601-01-01..9999-12-31 (UTC)")
    return value


@dataclasses.dataclass(frozen=True)
class _NodeType:
    """What a write to a node must fit, read once per node and cached (``OpcUaSource._types``): the
    built-in (or abstract numeric) type its DataType derives from, that DataType's NodeId, its ValueRank
    and ArrayDimensions, for an abstract numeric DataType or BaseDataType the concrete type of the value it
    holds (read with the type; a BaseDataType node's is read again at each write: it holds whatever was last
    written to it, by anyone), for a BaseDataType node the shape of the value it holds (read with the held
    type, and as often), and for a String (ByteString) the most bytes it holds when it states them
    (MaxStringLength)."""

    vtype: ua.VariantType | AbstractType
    data_type: str
    rank: int = -2  # Part 3, 5.6.2: -3 scalar or 1-D, -2 any, -1 scalar, 0 one or more dims, n: n dims
    dims: tuple[int, ...] = ()  # 0: that dimension's length is not fixed
    held: ua.VariantType | None = None
    enum: frozenset[int] | None = None  # an enumeration's values, as its DataType defines them
    max_bytes: int | None = None  # a String's MaxStringLength, a ByteString's MaxByteStringLength
    max_len: int | None = None  # its MaxArrayLength property: the most elements an array value holds
    # a one-dimensional array of fixed ArrayDimensions whose value held exactly that many elements when read
    # (a PLC's Array[0..9]): it takes the whole array only (a strict PLC refuses another length at the
    # write, a lax one may write the first elements and keep the rest)
    whole: bool = False
    server_bytes: bool = False  # max_bytes is the server's ServerCapabilities limit, not the node's own
    server_len: bool = False  # max_len is the server's ServerCapabilities.MaxArrayLength, not the node's own
    # a BaseDataType node's held value's shape: () a single value, else the length of each dimension; None:
    # holding nothing, not read, or unreadable (any shape the ValueRank allows is taken)
    held_shape: tuple[int, ...] | None = None
    # why the value a BaseDataType (or abstract numeric) node holds could not be read with its type (a Bad
    # status, an error): what it holds is unknown, not nothing, and is read before a value whose reset must be
    # judged by it goes out (``OpcUaSource.ensure_type``); None: read
    held_unread: str | None = None
    # an enumeration's values with their names (its DataTypeDefinition's, EnumValues' or EnumStrings'), for a
    # refusal to name: a line engineer gives the name of the state meant ('Running'), not its number
    enum_names: tuple[tuple[int, str], ...] = ()
    # an integer node's own EnumStrings or EnumValues property (Part 8's MultiStateDiscreteType and
    # MultiStateValueDiscreteType: the value is one of the states they name), which then define ``enum``
    enum_own: str | None = None
    # that property's NodeId: read again at each write (``OpcUaSource.write``), a PLC download may change it
    enum_prop: str | None = None
    # the Locale of the LocalizedText the node holds (read before each write to a LocalizedText node, or to a
    # BaseDataType one holding a LocalizedText): text written to it goes out in that locale (Part 4, 5.11.4.1:
    # a write without one sets the text of the invariant locale, and a multi-locale server's clients reading
    # in that locale keep seeing the old text); None: it holds none, or it could not be read
    locale: str | None = dataclasses.field(default=None, compare=False)
    # an enumeration the server holds as a type that is no integer (a Double, a String: a gateway showing the
    # state's name): its values are written as Int32 all the same, and a refusal names the type it holds
    enum_held_as: str | None = None
    # when it was read (time.monotonic(); kept by a replace of its held type or locale): a type older than
    # _TYPE_HOLD_S is read again before it judges a write (``OpcUaSource.write``)
    read_at: float = dataclasses.field(default_factory=time.monotonic, compare=False)
    # how long that read took (``_Types.read``): a read that costs much is made less often (``_aged``)
    read_s: float = dataclasses.field(default=0.0, compare=False)

    @property
    def shown(self) -> str:
        return "BaseDataType" if self.vtype is ua.VariantType.Variant else self.vtype.name


# how long a node whose properties could not be found out after its Browse was released (10,000 references, or
# 100 idle pages; no translate) is refused without asking again: each lookup costs thousands of requests
_PROPS_UNREAD_HOLD_S = 600.0
# how long a type read again for a value it refused and found unchanged judges that node's refusals without another
# read (``OpcUaSource._type_confirmed``): at most one read of a refusing node a minute (a paged Browse for one of
# 10,000 references), while a change nothing notices (its MaxStringLength or MaxArrayLength, an enumeration's
# states, all unwatched) is taken within a minute
_CONFIRMED_HOLD_S = 60.0
# how long the Read of an unwatched write target's DataType, ValueRank and ArrayDimensions before a write, found
# unchanged, stands for the next writes to it on that session (none across a reconnect, nor after a write answered
# with a type status or refused by the agent): the window a watched target has (its DataType sampled each second).
# Read before every write, it doubled a write's round trips (a pulse's high and reset, an output at 10/s)
_PRE_CHECK_HOLD_S = 1.0
# the integer and Boolean types whose writes the hold above may spare that Read: only of a value every one of them
# stores alike (``_same_under_any_retype``); another, sent as the old type to a node a download retyped within the
# hold, a gateway converting what it is sent stored wrapped (an INT's -1 as a USINT's 255), with no status
_HOLD_VTYPES = frozenset({ua.VariantType.Boolean, *(ua.VariantType[name] for name in _INT_RANGE)})
# how long a write target's type read judges its writes before it is read again (``OpcUaSource.write``): a PLC
# download that changes a node in place (a STRING[20] made STRING[10], an Array[0..19] made [0..9]) without a
# gone notice (a target neither watched nor read as a tag, or a property changed with the node kept) let a
# value over the new limit be sent, for the PLC to cut or refuse, until a reconnect; one type read a target a
# minute (bench/opcua_type_hold_bench.py: its cost spread over the writes of a minute)
_TYPE_HOLD_S = 60.0
# ... or longer for a read that takes long: the read's time at most this share of its hold (``_aged``)
_TYPE_READ_SHARE = 0.01


async def _node_type(
    node: Node, node_id: str, unread: dict[str, tuple[float, str]] | None = None
) -> _NodeType:
    """The node's ``_NodeType``: one read of DataType, ValueRank and ArrayDimensions, then the DataType's
    supertypes up to the built-in one (and an abstract numeric or BaseDataType node's value, for the type it
    holds). ``unread`` (node id -> (when, why)): the nodes whose properties could not be found out after their
    Browse was released, refused for ``_PROPS_UNREAD_HOLD_S`` without their Browse asked again.
    ``OpcUaTypeMismatch`` naming node and DataType when that chain does not reach a built-in type (a
    vendor's DataType without a HasSubtype reference to ns=0, or a DataType node the server does not
    expose): the agent cannot tell how to encode a value for it. A Bad status is raised as asyncua's."""
    asked = _TYPE_ATTRIBUTES
    got = _one_each(await node.read_attributes(asked), len(asked), "Read of its type")
    if got[0].StatusCode is not None:
        got[0].StatusCode.check()
    dtid = got[0].Value.Value if got[0].Value is not None else None
    if not isinstance(dtid, ua.NodeId):
        raise OpcUaTypeMismatch(
            f"node {node_id} states no DataType; the agent cannot tell how to encode a value"
        )
    rank, dims = _shape_stated(got)
    rank_status, dims_status = got[1].StatusCode, got[2].StatusCode
    try:
        base = await get_base_data_type(Node(node.session, dtid))
    except ua.UaStatusCodeError as e:
        if code_of(e.code) != ua.StatusCodes.BadNodeIdUnknown:
            raise
        base = None
    except ua.UaError:
        base = None
    if base is None:
        raise OpcUaTypeMismatch(
            f"node {node_id} has DataType {dtid.to_string()}, which the server does not derive from a "
            "built-in type (no HasSubtype path to ns=0, or no such DataType node): the agent cannot tell how "
            "to encode a value for it; write to a node of a standard type, or have the server expose the "
            "DataType's supertype"
        )
    ident = base.nodeid.Identifier
    assert isinstance(ident, int)  # get_base_data_type stops at ns=0;i=0..29 only
    vtype: ua.VariantType | AbstractType
    enum_held_as: str | None = None
    if ident in (26, 27, 28):
        vtype = AbstractType(ident)
    elif ident == 24:
        vtype = ua.VariantType.Variant  # BaseDataType
    elif ident == 29:
        # an enumeration's value travels as an Int32 (Part 3, 8.14), unless the server holds it as another
        # integer type (a PLC's enumeration held as an Int16): written as Int32, such a server refused every
        # value (BadTypeMismatch, naming the Int32 the server does not hold); written as the type it holds
        vtype, enum_held_as = await _enum_held(node)
    else:
        vtype = ua.VariantType(ident)
    # by the node's own id, however the config spells it (ns= or nsu=, "i=05"): each spelling Browsed anew
    key = node.nodeid.to_string()
    said = unread.get(key) if unread is not None else None
    try:  # only the properties the DataType needs checked are asked (none for a Double scalar)
        if said is not None and time.monotonic() - said[0] < _PROPS_UNREAD_HOLD_S:
            raise PropertiesUnread(said[1])
        for attr, status in (("ValueRank", rank_status), ("ArrayDimensions", dims_status)):
            if status is not None and _not_given(status) and (attr == "ValueRank" or rank >= 0):
                # an array node's shape or lengths the server has but does not give now or to this session
                # (BadUserAccessDenied, BadInternalError; busy: retried): [9, 9] went to an Array[0..2]
                raise PropertiesUnread(
                    f"its {attr} answered {code_name(status)}", status=status.value, until=UNTIL_READ
                )
        enum, enum_names = await _enum_values(Node(node.session, dtid)) if ident == 29 else (None, ())
        enum_own, enum_prop = None, None
        props = Properties(node)  # one Browse answers every property read below
        if enum is None and (
            vtype in (AbstractType.Integer, AbstractType.UInteger)
            or (isinstance(vtype, ua.VariantType) and vtype.name in _INT_RANGE)
        ):
            # a multi-state node (Part 8): its states are its own property's, not its DataType's
            enum_own, (enum, enum_names), enum_prop = await _enum_properties(node, props)
        max_bytes, server_bytes = await _max_bytes(node, vtype, props)
        max_len, whole, server_len = await _array_bounds(node, rank, dims, props)
    except PropertiesUnread as e:
        # taken as absent, nothing was checked: 7 went to a three-state node whose Browse listed more than
        # 10,000 references on a server without the translate service (Nano, Micro), or whose EnumStrings
        # this session may not read
        if busy(e.status):
            raise ua.UaStatusCodeError(e.status) from None  # busy now: the write is retried, nothing kept
        why = str(e)
        if e.released and unread is not None:
            why += f"; not asked again for {_PROPS_UNREAD_HOLD_S / 60:g} minutes or until a reconnect"
            unread[key] = (time.monotonic(), why)
        raise _props_refused(node_id, why, e.until) from None
    held, held_shape, held_unread = None, None, None
    if isinstance(vtype, AbstractType) or vtype is ua.VariantType.Variant:
        holds = await _read_held(node)
        if isinstance(holds, str):  # unreadable: unknown, judged by the rules alone until it is read
            held_unread = holds
        else:
            held, held_shape = holds
        if vtype is not ua.VariantType.Variant:
            held_shape = None  # an abstract numeric node: only its type is kept from what it holds
    return _NodeType(
        vtype,
        dtid.to_string(),
        rank,
        dims,
        held,
        enum,
        max_bytes,
        max_len,
        whole,
        server_bytes,
        server_len,
        held_shape,
        held_unread,
        enum_names,
        enum_own,
        enum_prop,
        enum_held_as=enum_held_as,
    )


class _Types:
    """A session's write target types (node_id -> ``_NodeType``), with a count per node of the times its type
    was dropped (``pop``: a gone notice, a SemanticsChanged flag, a value refused) and of the clears (a
    connect): a type read that spans a drop is not stored (``read``, ``keep``). A download's gone notice comes
    after the download, so a read whose answers came before it stored the old type back over the drop, and the
    next write was judged by a limit the download had lowered."""

    def __init__(self) -> None:
        self._types: dict[str, _NodeType] = {}
        self._drops: dict[str, int] = {}
        self._clears = 0

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._types

    def __getitem__(self, node_id: str) -> _NodeType:
        return self._types[node_id]

    def __setitem__(self, node_id: str, nt: _NodeType) -> None:
        self._types[node_id] = nt

    def get(self, node_id: str) -> _NodeType | None:
        return self._types.get(node_id)

    def pop(self, node_id: str, default: None = None) -> _NodeType | None:
        self._drops[node_id] = self._drops.get(node_id, 0) + 1
        return self._types.pop(node_id, default)

    def clear(self) -> None:
        self._clears += 1
        self._drops.clear()
        self._types.clear()

    def token(self, node_id: str) -> tuple[int, int]:
        """What ``keep`` compares: changed by each drop of ``node_id``'s type and by each clear."""
        return self._clears, self._drops.get(node_id, 0)

    def keep(self, node_id: str, nt: _NodeType, token: tuple[int, int]) -> bool:
        """Store ``nt``, made from what was read since ``token`` was taken, unless the type was dropped since."""
        if self.token(node_id) != token:
            return False
        self._types[node_id] = nt
        return True

    async def read(self, node: Node, node_id: str, unread: dict[str, tuple[float, str]] | None) -> _NodeType:
        """``node``'s type read (``_node_type``) and stored; read once more when it was dropped during the read
        (a download's gone notice): the read's answers may have been the node's before the download. Dropped
        again then (downloads back to back), the second read is returned, not stored: the next write reads
        it again."""
        for _ in range(2):
            token = self.token(node_id)
            began = time.monotonic()
            nt = await _node_type(node, node_id, unread)
            nt = dataclasses.replace(nt, read_s=time.monotonic() - began)
            if self.keep(node_id, nt, token):
                break
        return nt


def _aged(nt: _NodeType) -> bool:
    """Whether the type ``nt`` was read ``_TYPE_HOLD_S`` ago or longer, or, for a read that took long, a hundred
    times its length (``_TYPE_READ_SHARE``): read again before it judges a write. A node of 10,000 references
    whose properties take a paged Browse of seconds (a few thousand requests) is read again every few minutes,
    not each minute: at most 1 % of the session's time goes to reading it again."""
    return time.monotonic() - nt.read_at >= max(_TYPE_HOLD_S, nt.read_s / _TYPE_READ_SHARE)


def _shape_stated(got: list) -> tuple[int, tuple[int, ...]]:
    """The ValueRank and ArrayDimensions of a Read of DataType, ValueRank and ArrayDimensions (``got``): -2 (any) and
    () where not given."""
    rank, dims = (
        dv.Value.Value if dv.Value is not None and _is_good(dv.StatusCode) else None for dv in got[1:]
    )
    return (
        rank if isinstance(rank, int) else -2,
        tuple(d for d in dims if isinstance(d, int)) if isinstance(dims, list) else (),
    )


def _same_under_any_retype(nt: _NodeType, value: object) -> bool:
    """Whether ``value``, to a node of type ``nt``, is one a download retyping the node to any other integer or
    Boolean type leaves as it is (a Boolean, or an integer 0 or 1, to a node of such a type): only such a write may
    go without the Read of the node's attributes within ``_PRE_CHECK_HOLD_S`` (a pulse's high and reset). Another
    (-1, 2, 300, 1.5, a text) sent as the old type to a node retyped within the hold was stored converted by a
    lenient gateway, with no status: an INT's -1 as a USINT's 255, an INT's 2 as a BOOL's true (the agent refuses
    2 for a Boolean node)."""
    return nt.vtype in _HOLD_VTYPES and (
        isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))
    )


async def _attributes_unchanged(node: Node, nt: _NodeType, bad_is_change: bool = True) -> bool | None:
    """Whether ``node``'s DataType, ValueRank and ArrayDimensions (one Read, no Browse) are those ``nt`` was read with,
    as ``_node_type`` takes them: True (unchanged), False (changed) or None (not known: the Read failed, or, with
    ``bad_is_change`` False, an attribute was answered Bad and the others are unchanged). Not known confirms nothing:
    taken as unchanged, a refusal after a pre-write Read that failed was said for the cached type without the
    refusal's own Read (a download that made an INT a REAL had its writes refused, naming the INT). True, with no
    Read, for a BaseDataType node holding a value: each write reads what it holds, which a download's retype
    changes. An abstract numeric node (judged by the type it held when its type was read) and an enumeration the
    server holds as no integer are Read as any other: spared it, a download that made them a USINT or a BOOL within
    the type's minute had an INT's -1 stored as 255, an enumeration's 2 as true, by a converting gateway. A Bad
    status on DataType is a change (the full read then raises it) unless
    ``bad_is_change`` is False (a check before a write: an attribute answered Bad is not compared, the others are; a
    ValueRank answered BadInternalError for a moment had every write refused, its full read raising it, where the type
    read before judged)."""
    if nt.vtype is ua.VariantType.Variant and nt.held is not None:
        return True
    asked = _TYPE_ATTRIBUTES
    try:
        got = _one_each(await node.read_attributes(asked), len(asked), "Read of its type")
    except (ua.UaError, TimeoutError):
        return None
    dtid = got[0].Value.Value if got[0].Value is not None and _is_good(got[0].StatusCode) else None
    if not bad_is_change:
        now = (dtid.to_string() if isinstance(dtid, ua.NodeId) else None, *_shape_stated(got))
        answered = [dv.Value is not None and _is_good(dv.StatusCode) for dv in got]
        if any(
            a and was != is_
            for a, was, is_ in zip(answered, (nt.data_type, nt.rank, nt.dims), now, strict=True)
        ):
            return False
        return True if all(answered) else None
    return isinstance(dtid, ua.NodeId) and (dtid.to_string(), *_shape_stated(got)) == (
        nt.data_type,
        nt.rank,
        nt.dims,
    )


def _one_each(results: list, asked: int, what: str) -> list:
    """``results``, one for each of the ``asked`` operations: the first ``asked`` of a faulty server's answer of more
    (Part 4 orders them as the operations; a Write taken, answered Good twice, was retried for ever, said failing); a
    faulty server's fewer raised as ``ua.UaError`` naming it (an empty answer to a Write raised IndexError, no
    adapter error, its text "list index out of range"): whether a Write so answered was taken is not known, so it
    is retried."""
    if len(results) > asked:
        return results[:asked]
    if len(results) < asked:
        raise ua.UaError(
            f"the server answered the {what} with {len(results)} result(s) for {asked} (a server fault); whether it "
            "was done is not known"
        )
    return results


def _mismatch_name(nt: _NodeType) -> str:
    """A write's BadTypeMismatch, said with the type the node was found to have (``nt``)."""
    if nt.enum_held_as is not None:
        return (
            f"BadTypeMismatch: the node is an enumeration held by the server as {nt.enum_held_as}, DataType "
            f"{nt.data_type}: the agent writes an enumeration's values as integers; have the server hold it as an "
            "integer type"
        )
    return f"BadTypeMismatch: the node is {nt.shown}, DataType {nt.data_type}"


def _props_refused(node_id: str, why: str, until: str) -> OpcUaTypeMismatch:
    """The refusal of a write to a node whose properties could not be read (``PropertiesUnread``)."""
    err = OpcUaTypeMismatch(
        f"node {node_id}: its properties could not be read ({why}), so a value cannot be checked against "
        f"the states or lengths they state; nothing is written to it until {until}"
    )
    err.props_unread = True
    return err


_Held = tuple[ua.VariantType | None, tuple[int, ...] | None]


async def _enum_held(node: Node) -> tuple[ua.VariantType, str | None]:
    """The integer type an enumeration node's value is held as: Int32 (the encoding Part 3 gives every
    enumeration), or the other integer type the server holds it as; Int32 when it holds nothing, something
    else or cannot be read. Beside it, the type held when it is no integer (Double, String, Boolean), for a
    refusal to name."""
    holds = await _read_held(node)
    held = None if isinstance(holds, str) else holds[0]
    if held is not None and held.name in _INT_RANGE:
        return held, None
    return ua.VariantType.Int32, held.name if held is not None else None


async def _read_held(node: Node) -> _Held | str:
    """(the type of the value ``node`` holds now, its shape: () a single value, else each dimension's length);
    (None, None) for a null value, which holds neither; why not (a status name, an error) when the value
    cannot be read. A value read with a Bad status is no value (Part 4, 7.7.1: a client ignores it, and
    asyncua gives it as a null one): what the node holds is then unknown, not nothing."""
    try:
        dv = await node.read_data_value(raise_on_bad_status=False)
    except ua.UaError as e:
        return f"{type(e).__name__}: {e}"
    if dv.StatusCode is not None and dv.StatusCode.is_bad():
        return code_name(dv.StatusCode)
    return _held_of(dv.Value)


async def _held_locale(node: Node) -> str | None:
    """The Locale of the LocalizedText ``node`` holds now (an array's: the one all its elements carry); None
    when it holds none (the invariant locale, a null value, another type) or cannot be read."""
    try:
        dv = await node.read_data_value(raise_on_bad_status=False)
    except ua.UaError:
        return None
    if (dv.StatusCode is not None and dv.StatusCode.is_bad()) or dv.Value is None:
        return None
    held = dv.Value.Value
    locales = {getattr(x, "Locale", None) for x in (held if isinstance(held, list | tuple) else [held])}
    locale = locales.pop() if len(locales) == 1 else None
    return locale if isinstance(locale, str) and locale else None


def _localized(payload: ua.Variant, locale: str | None) -> ua.Variant:
    """``payload`` with its LocalizedText (each element's, an array's) in ``locale`` when it carries none."""
    if locale is None or payload.VariantType is not ua.VariantType.LocalizedText:
        return payload

    def one(v: Any) -> Any:
        if isinstance(v, ua.LocalizedText) and not v.Locale:
            return ua.LocalizedText(v.Text, locale)
        return v

    v = payload.Value
    payload.Value = [one(x) for x in v] if isinstance(v, list) else one(v)
    return payload


_TIMEOUT_HINT_MAX_S = (2**32 - 1) // 1000  # the longest timeout a request header holds, in seconds


async def _read_values(client: Client, nodes: list[ua.NodeId], timeout_s: float) -> list[ua.DataValue]:
    """The Values of ``nodes``, as ``read_attributes`` reads them, with ``timeout_s`` for asyncua's wait and the
    request's TimeoutHint in place of the client's timeout (asyncua's read takes none). Sent in parts of at most
    the session's known read limit (``_split_operations``'s); a Read refused whole (BadTooManyOperations) by a
    server that states no lower limit is read again through the session's Read, which halves it and keeps the
    size: sent whole, a server taking one node per Read refused each session check, its clock never judged."""
    limits = getattr(getattr(client.uaclient, "session", None), "_operation_limits", None)
    most = limits.get("read", 0) if isinstance(limits, dict) else 0
    if isinstance(most, int) and 0 < most < len(nodes):
        out: list[ua.DataValue] = []
        for i in range(0, len(nodes), most):
            out += await _read_values(client, nodes[i : i + most], timeout_s)
        return out
    request = ua.ReadRequest()
    request.Parameters.NodesToRead = [
        ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in nodes
    ]
    proto = client.uaclient.protocol
    if proto is None:
        raise ConnectionError("Connection is not open")  # as asyncua's read says it
    # the TimeoutHint is a UInt32 of milliseconds: a day's connect_timeout_s times 50 requests ahead went past it,
    # the request never encoded (struct.error), and each session check took the session for lost
    try:  # a ServiceFault is raised by asyncua's send_request (check_answer), a Bad ServiceResult by the check
        data = await proto.send_request(request, timeout=min(timeout_s, _TIMEOUT_HINT_MAX_S))
        response = ua_binary.struct_from_binary(ua.ReadResponse, data)
        response.ResponseHeader.ServiceResult.check()
    except ua.UaStatusCodeError as e:
        if code_of(e.code) != ua.StatusCodes.BadTooManyOperations or len(nodes) < 2:
            raise
        return await client.uaclient.read_attributes(nodes, ua.AttributeIds.Value)
    if len(response.Results) != len(nodes):
        # a faulty server's answer (a result more or fewer than nodes): read again through the session's Read, which
        # takes the first of more and reads each node alone when fewer (``_read_results``), and counts it; taken
        # as it came, a state and clock answered with one result was a lost session at each check
        return await client.uaclient.read_attributes(nodes, ua.AttributeIds.Value)
    return response.Results


async def _held(node: Node, unread: _Held) -> _Held:
    """What ``node`` holds now (``_read_held``); ``unread`` when the value cannot be read (an error, a Bad
    status)."""
    got = await _read_held(node)
    return unread if isinstance(got, str) else got


def _held_of(v: ua.Variant | None) -> _Held:
    """(the type of ``v``, its shape), as a BaseDataType node holding it holds them (``_held``)."""
    if v is None or v.Value is None or v.VariantType is ua.VariantType.Null:
        return None, None
    if isinstance(v.Value, list | tuple):
        dims = tuple(d for d in (v.Dimensions or ()) if isinstance(d, int))
        return v.VariantType, dims or (len(v.Value),)
    return v.VariantType, ()


async def _array_bounds(
    node: Node, rank: int, dims: tuple[int, ...], props: Properties | None = None
) -> tuple[int | None, bool, bool]:
    """(MaxArrayLength, whole, whether that length is the server's) of a node that may hold an array
    (``_NodeType``). The most elements: the node's MaxArrayLength Property, or the server's
    ServerCapabilities.MaxArrayLength (Part 5, 6.3.2: every array of its Variables, a matrix by its element
    count) when the node states none, as a text's bytes are (``_stated_limit``): a longer array is
    refused with an opaque Bad status (BadEncodingLimitsExceeded, BadOutOfRange) or, worse, cut by some
    servers. Part 3 (5.6.2) makes
    ArrayDimensions a maximum, and asyncua's server takes any length; a PLC's arrays have one length (an
    S7-1500's Array[0..9] holds 10 and refuses 3 at the write). So a fixed one-dimensional ArrayDimensions is
    taken as the only length when the node's value holds exactly that many elements, and as a maximum
    when it holds fewer (a buffer that grows). Nothing is read for a node that holds a single value."""
    if rank == -1:
        return None, False, False
    max_len, server_len = await _stated_limit(
        node, "0:MaxArrayLength", ua.ObjectIds.Server_ServerCapabilities_MaxArrayLength, props
    )
    whole = False
    if rank >= 1 and len(dims) == rank and all(d > 0 for d in dims):
        try:
            dv = await node.read_data_value(raise_on_bad_status=False)
            held = dv.Value.Value if dv.Value is not None and _is_good(dv.StatusCode) else None
            whole = isinstance(held, list | tuple | np.ndarray) and _shape(held) == dims
        except ua.UaError:
            pass  # no value to go by: ArrayDimensions as the maximum Part 3 makes it
    return max_len, whole, server_len


# the Property a String (ByteString) variable may carry with the most bytes it holds (Part 3, 5.6.2 and
# Part 5, 5.2.5): a PLC's STRING[20] says 20; a longer text is cut by some servers and refused by others
_MAX_BYTES = {ua.VariantType.String: "0:MaxStringLength", ua.VariantType.ByteString: "0:MaxByteStringLength"}
# ... and the server's own limit for every such value (Part 5, 6.3.2 ServerCapabilities): a server refuses a
# longer one (BadEncodingLimitsExceeded) or, worse, cuts it; a node stating none is still held to it
_SERVER_MAX_BYTES = {
    ua.VariantType.String: ua.ObjectIds.Server_ServerCapabilities_MaxStringLength,
    ua.VariantType.ByteString: ua.ObjectIds.Server_ServerCapabilities_MaxByteStringLength,
}


def _positive(v: Any) -> int | None:
    """A stated limit (MaxStringLength, MaxArrayLength) as a count; None: none (0, absent, or no count). A server
    stating it as a Double (4.0, not the UInt32 Part 3 gives it; 4.5 held to 4) had it taken as none: a 6-byte text
    went to a STRING[4], for the PLC to cut."""
    if isinstance(v, float) and math.isfinite(v):
        v = math.floor(v)  # 4.5: fewer than 5 (taken as none stated, 6 bytes went to it)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


async def _stated_limit(
    node: Node, prop: str, server_id: int, props: Properties | None = None
) -> tuple[int | None, bool]:
    """(the node's own limit Property ``prop``, else the server's ServerCapabilities limit ``server_id``;
    whether it is the server's): Part 5 (6.3.2) lets a Variable's own Property be larger or smaller than the
    server's, so the node's holds when it states one (a PLC's Array[0..99] on a server whose default is 64
    takes 100), and a node stating none is held to the server's; (None, False) when neither is stated (or 0:
    no limit)."""
    try:  # a property the node has but whose value is not given raises PropertiesUnread
        if (own := _positive((await (props or Properties(node)).read(prop))[1])) is not None:
            return own, False
    except ua.UaError:
        pass  # most servers state none (BadNoMatch)
    try:
        server = _positive(await Node(node.session, server_id).read_value())
    except (ua.UaError, TypeError, ValueError):
        server = None
    return server, server is not None


async def _max_bytes(
    node: Node, vtype: ua.VariantType | AbstractType, props: Properties | None = None
) -> tuple[int | None, bool]:
    """(the most bytes a value of the node may hold, whether that is the server's limit): the node's
    MaxStringLength (MaxByteStringLength for a ByteString), or the server's ServerCapabilities limit when the
    node states none (``_stated_limit``); (None, False) when neither is stated (or 0: no limit)."""
    if not isinstance(vtype, ua.VariantType) or vtype not in _MAX_BYTES:
        return None, False
    return await _stated_limit(node, _MAX_BYTES[vtype], _SERVER_MAX_BYTES[vtype], props)


_EnumValues = tuple[frozenset[int] | None, tuple[tuple[int, str], ...]]

# the answers saying a server has no such attribute (an enumeration's DataTypeDefinition before OPC UA 1.04)
_NO_ATTRIBUTE = frozenset(
    {ua.StatusCodes.BadAttributeIdInvalid, ua.StatusCodes.BadNotSupported, ua.StatusCodes.BadNotImplemented}
)


def _not_given(status: ua.StatusCode | None) -> bool:
    """Whether an attribute's answer leaves what it states unknown, not absent: any Bad or Uncertain status but
    one saying the server has no such attribute (BadNotReadable, BadUserAccessDenied: not to this session;
    BadTimeout, BadServerTooBusy: not now, the caller's to retry). Taken as absent, 7 went to a three-state
    enumeration whose DataTypeDefinition answered BadTimeout, and its type so judged was kept."""
    return status is not None and not status.is_good() and code_of(status) not in _NO_ATTRIBUTE


async def _enum_values(dtype: Node) -> _EnumValues:
    """The values an enumeration DataType defines, and those with their names: its DataTypeDefinition's
    fields (OPC UA 1.04), else its EnumValues, else its EnumStrings (0..n-1); (None, ()) when the server
    states none (nothing is checked)."""
    try:
        dv = await dtype.read_attribute(ua.AttributeIds.DataTypeDefinition, raise_on_bad_status=False)
    except ua.UaStatusCodeError as e:  # the whole Read answered so (BadTooManyOperations)
        dv = ua.DataValue(StatusCode=ua.StatusCode(e.code))
    except ua.UaError:
        dv = None
    if dv is not None and _not_given(dv.StatusCode):
        # a server without the attribute (before OPC UA 1.04) answers BadAttributeIdInvalid: then the properties
        assert dv.StatusCode is not None
        raise PropertiesUnread(
            f"its DataType's DataTypeDefinition answered {code_name(dv.StatusCode)}",
            status=dv.StatusCode.value,
            until=UNTIL_READ,
        )
    try:
        d = dv.Value.Value if dv is not None and dv.Value is not None and _is_good(dv.StatusCode) else None
        if isinstance(d, ua.EnumDefinition) and d.Fields:
            return _named((int(f.Value), f.Name) for f in d.Fields)
    except (TypeError, ValueError):
        pass
    return (await _enum_properties(dtype))[1]


async def _enum_properties(
    node: Node, props: Properties | None = None
) -> tuple[str | None, _EnumValues, str | None]:
    """The values a node's EnumValues property states, else its EnumStrings (0..n-1), with the property's
    name and NodeId: an enumeration DataType's, or a multi-state Variable's own (Part 8). (None, (None, ()),
    None): neither, or each null, an empty list or an empty text (asyncua's MultiStateDiscreteType instance
    holds null). ``PropertiesUnread`` for one holding something else (a single text, a list of no
    EnumValueType): taken as no states, 7 went to a node whose EnumStrings read "Stopped,Running,Fault". An
    EnumValues the agent cannot decode (a list of ExtensionObject: a vendor's encoding of EnumValueType) beside
    an EnumStrings naming as many states leaves the node judged by its EnumStrings only when every entry still
    shows its value (integers, whole Doubles, Variants, EnumValueType's encoding under a vendor's TypeId) and
    those are 0..n-1; refused otherwise (10, 20, 30, or an entry showing none: 1 was written)."""
    props = props or Properties(node)
    bad: tuple[PropertiesUnread, list[Any] | None] | None = None  # the EnumValues not decoded, its entries
    for prop in ("0:EnumValues", "0:EnumStrings"):
        try:  # one the node has whose value is not given raises PropertiesUnread
            child, v = await props.read(prop)
        except ua.UaError:
            continue  # not stated (BadNoMatch)
        if (got := _states(prop[2:], v)) is not None:
            if bad is not None:
                _same_states(bad[0], bad[1], len(v))
            return prop[2:], got, child.nodeid.to_string()
        if not _no_states(v):
            if prop == "0:EnumStrings":
                raise _malformed(prop, v)
            bad = _malformed(prop, v), v if isinstance(v, list) else None
    if bad is not None:
        raise bad[0]
    return None, (None, ()), None


def _same_states(bad: PropertiesUnread, entries: list[Any] | None, n: int) -> None:
    """Raises ``bad`` (an EnumValues not decoded, holding ``entries``) unless it may name the states an
    EnumStrings beside it names (0..``n``-1): as many entries, each showing its value (an integer, a whole Double,
    a Variant of one, EnumValueType's encoding under a vendor's TypeId), distinct values of 0..n-1. EnumValues
    10, 20, 30 beside three EnumStrings: 1 was written, 20 refused; an entry showing none (a vendor's body, a
    text) refuses too: the EnumValues, the node's truth, cannot be read."""
    if entries is None or len(entries) != n:
        raise PropertiesUnread(f"{bad}; its EnumStrings names {n} states, not as many", until=bad.until)
    shown = [v for e in entries if (v := _entry_value(e)) is not None]
    if (
        len(shown) != n
    ):  # an entry showing none (a vendor's body, a text "10"): 1 was written beside 10, 20, 30
        raise PropertiesUnread(
            f"{bad}; its EnumValues could not be read ({n - len(shown)} of its {n} entries show no value the "
            "agent decodes), and they, not its EnumStrings, name the node's states",
            until=bad.until,
        )
    if len(set(shown)) != len(shown) or not set(shown) <= set(range(n)):
        raise PropertiesUnread(
            f"{bad}; its entries show the values {', '.join(map(str, shown))}, where its EnumStrings names 0 to "
            f"{n - 1}: which states are the node's cannot be told",
            until=bad.until,
        )


def _entry_value(e: Any) -> int | None:
    """The value an EnumValues entry not decoded as EnumValueType shows: an integer, or an ExtensionObject's body
    that is EnumValueType's binary encoding, every byte (a vendor's TypeId for it), each also as a Variant or a
    whole Double (10.0, 20.0, 30.0 beside three EnumStrings: 1 was written); None: it shows none."""
    if isinstance(e, ua.Variant):
        e = e.Value
    if isinstance(e, float) and e.is_integer():
        e = int(e)
    if isinstance(e, int) and not isinstance(e, bool):
        return e
    body = getattr(e, "Body", None)
    if not isinstance(body, bytes):
        return None
    buf = Buffer(body)
    try:
        got = ua_binary.struct_from_binary(ua.EnumValueType, buf)
    except Exception:  # not that encoding (too short, bad text): it shows nothing
        return None
    return got.Value if len(buf) == 0 and isinstance(got.Value, int) else None


def _no_states(v: Any) -> bool:
    """Whether a multi-state property's value ``v`` names no state: null, an empty list, an empty text."""
    return v is None or v == [] or (not isinstance(v, list) and getattr(v, "Text", v) in (None, ""))


def _malformed(prop: str, v: Any) -> PropertiesUnread:
    """``prop`` (``0:EnumStrings``, ``0:EnumValues``) holding ``v``, which is no list of its kind."""
    return PropertiesUnread(
        f"{prop}: the node has it, holding {_held_text(v)}, not a list of "
        f"{'EnumValueType' if prop == '0:EnumValues' else 'LocalizedText'}: which states it names "
        "cannot be told",
        until=f"the server states its {prop[2:]} as such a list",
    )


def _held_text(v: Any) -> str:
    """What a property's value holds, for a refusal: "one LocalizedText 'Stopped,Running,Fault'", "a list of
    integer"."""
    name = {bool: "Boolean", int: "integer", float: "Double", str: "String"}
    if isinstance(v, list):
        return "a list of " + ", ".join(sorted({name.get(type(x), type(x).__name__) for x in v}))
    text = getattr(v, "Text", v)
    shown = f" {str(text)[:60]!r}" if isinstance(text, str | int | float) else ""
    return f"one {name.get(type(v), type(v).__name__)}{shown}"


def _states(prop: str, v: Any) -> _EnumValues | None:
    """The states an EnumStrings (0..n-1) or EnumValues property's value ``v`` names; None: none."""
    if not isinstance(v, list) or not v:
        return None
    if prop == "EnumStrings":
        return _named((i, getattr(text, "Text", None)) for i, text in enumerate(v))
    got = _named(
        (e.Value, getattr(e.DisplayName, "Text", None))
        for e in v
        # an EnumValueType (or a vendor's structure of its fields): a list of Variant holding integers is not one
        # (its DisplayName asked: AttributeError, every write failed so)
        if isinstance(getattr(e, "Value", None), int) and hasattr(e, "DisplayName")
    )
    return got if got[0] else None


def _named(pairs: Iterable[tuple[int, Any]]) -> _EnumValues:
    """(the values, those with a name as (value, name)) of an enumeration's (value, name) pairs."""
    pairs = list(pairs)
    return frozenset(v for v, _ in pairs), tuple((v, n) for v, n in pairs if isinstance(n, str) and n)


def _is_good(status: ua.StatusCode | None) -> bool:
    return status is None or status.is_good()


def _ndim(value: Any) -> int:
    """Dimensions of a value to write: 0 for a single value (text and bytes included)."""
    if isinstance(value, np.ndarray):
        return value.ndim
    n = 0
    while isinstance(value, list | tuple):
        n += 1
        if not value:
            break
        value = value[0]
    return n


def _leaves(value: Any) -> list:
    """The elements of a value to write, a matrix's row by row (a single value: itself)."""
    if isinstance(value, np.ndarray):
        return value.ravel().tolist()
    if isinstance(value, list | tuple):
        return [x for v in value for x in _leaves(v)]
    return [value]


def _shape(value: Any) -> tuple[int, ...] | None:
    """Each dimension's length of a value to write (a single value: ()); None when its rows differ in length or
    depth (``[[1, 2, 3], [4]]``, ``[[1, 2], 3]``): an OPC UA matrix is rectangular, and asyncua would send
    such a value with its first row's dimensions over fewer elements, or fail in its encoder."""
    if isinstance(value, np.ndarray):
        return None if value.dtype == object and value.ndim > 1 else tuple(value.shape)
    if not isinstance(value, list | tuple):
        return ()
    if not value:
        return (0,)
    rows = {_shape(v) for v in value}
    row = rows.pop() if len(rows) == 1 else None
    return None if row is None else (len(value), *row)


def _elements(value: Any) -> int:
    """How many elements an array value holds (a matrix: all its rows'): what MaxArrayLength bounds."""
    return value.size if isinstance(value, np.ndarray) else len(_leaves(value))


# the ValueRanks that leave a value's shape open (Part 3, 5.6.2), as a refusal names them
_OPEN_RANKS = {-3: "a single value or a one-dimensional array", -2: "any shape", 0: "one or more dimensions"}


def _fit_rank(nt: _NodeType, value: Any, node_id: str) -> None:
    """``OpcUaTypeMismatch`` when ``value``'s shape does not fit the node's ValueRank (and a fixed
    ArrayDimensions): a list for a scalar node, a single value for an array node. A lenient server stores
    either and a strict PLC refuses it only at the first write. ValueRank -2 (any), -3 (a scalar or a
    one-dimensional array) and 0 (one or more dimensions) are taken as leniently as Part 3 allows. An
    array longer than the node's MaxArrayLength, or of another length than a PLC's fixed array holds
    (``_NodeType.whole``), is refused too. ValueRank 0 (one or more dimensions) never takes a single value. A
    BaseDataType node whose ValueRank leaves the shape open (-3, -2, 0) keeps the shape of the value it holds
    (``_NodeType.held_shape``), as it keeps its type: an array takes a list (of as many dimensions), a single
    value a single value; one holding nothing, or a shape its ValueRank forbids (a single value at ValueRank 0,
    two dimensions at -3), takes what its ValueRank allows. (A node of a concrete
    DataType and ValueRank -2 or -3 takes either shape, as the ValueRank says.)"""
    rank = nt.rank
    ndim = _ndim(value)

    def bad(what: str, fix: str) -> OpcUaTypeMismatch:
        # a config's number as written (0x8000, 2.50), of its kind (int, float)
        text = config_text(value)
        kind = type(value).__name__ if text is None else "int" if isinstance(value, int) else "float"
        return OpcUaTypeMismatch(
            f"node {node_id} is {what}; cannot write {reprlib.repr(value) if text is None else text} ({kind}): {fix}"
        )

    if nt.max_len is not None and ndim and (n := _elements(value)) > nt.max_len:
        whose = (
            "the server's MaxArrayLength, in its ServerCapabilities"
            if nt.server_len
            else "its MaxArrayLength"
        )
        raise bad(
            f"an array of at most {nt.max_len} {nt.shown} ({whose})",
            f"{n} elements{' in all' if ndim > 1 else ''}, which the server would cut or refuse; write at most "
            f"{nt.max_len}",
        )
    if rank == -1 and ndim:
        raise bad(f"a single {nt.shown} (ValueRank -1)", "write one value, not an array")
    shape_given = _shape(value) if ndim > 1 else None
    if ndim > 1 and shape_given is None:
        raise bad(
            f"an array of {nt.shown} (ValueRank {rank}"
            + (f", ArrayDimensions {list(nt.dims)})" if nt.dims else ")"),
            "rows of different lengths (or rows beside single values); an OPC UA matrix is rectangular: "
            "write every row with as many values",
        )
    if rank == -3 and ndim > 1:
        raise bad(f"a {nt.shown} or a one-dimensional array of them (ValueRank -3)", f"{ndim} dimensions")
    if rank == 0 and not ndim:
        raise bad(
            f"an array of {nt.shown} (ValueRank 0: one or more dimensions, never a single value)",
            "write a list of values, not a single one",
        )
    shape = nt.held_shape
    if shape is not None and (rank == -3 and len(shape) > 1 or rank == 0 and not shape):
        # a held shape the ValueRank forbids (a lenient server stored it): the ValueRank, the node's contract,
        # decides; kept, it would refuse the one shape the ValueRank leaves and the node could not be written
        shape = None
    if shape is not None and rank in _OPEN_RANKS and nt.vtype is ua.VariantType.Variant:
        kind = (nt.held or nt.vtype).name
        of = f"{nt.shown} (ValueRank {rank}: {_OPEN_RANKS[rank]})"
        if shape and not ndim:
            length = "x".join(map(str, shape))
            held = f"an array of {length} {kind}" + (
                " (each element of any type)" if kind == "Variant" else ""
            )
            raise bad(
                f"{of} holding {held}",
                "write a list of values, not a single one; the node's shape is kept: written as a single "
                "value, it would change under the PLC program that reads it as an array",
            )
        if not shape and ndim:
            raise bad(
                f"{of} holding a single {kind}",
                "write one value, not an array; the node's shape is kept: written as an array, it would "
                "change under the PLC program that reads it as a single value",
            )
        if shape and ndim != len(shape):
            raise bad(
                f"{of} holding an array of {len(shape)} dimension(s)",
                f"{ndim} dimension(s); write {len(shape)}",
            )
    if rank >= 1:
        what = f"an array of {nt.shown} (ValueRank {rank}" + (
            f", ArrayDimensions {list(nt.dims)})" if nt.dims else ")"
        )
        if not ndim:
            raise bad(what, "write a list of values, not a single one")
        if ndim != rank:
            raise bad(what, f"write {rank} dimension(s), not {ndim}")
        if rank == 1 and nt.dims and nt.dims[0] and len(value) > nt.dims[0]:
            raise bad(what, f"{len(value)} elements, at most {nt.dims[0]} fit")
        # a matrix: each dimension held to its ArrayDimensions as a one-dimensional array's length is
        if shape_given is not None and len(nt.dims) == rank:
            given, fixed = "x".join(map(str, shape_given)), "x".join(map(str, nt.dims))
            if any(d and n > d for n, d in zip(shape_given, nt.dims, strict=True)):
                raise bad(what, f"{given} elements, at most {fixed} fit")
            if nt.whole and shape_given != nt.dims:
                raise bad(
                    what,
                    f"{given} elements; it holds exactly {fixed} (a PLC's fixed matrix, such as an S7-1500's "
                    f"Array[{', '.join(f'0..{d - 1}' for d in nt.dims)}]: a strict PLC refuses another shape at "
                    f"the write, a lax one may write part of it and keep the old rest); write all {fixed}",
                )
        if rank == 1 and nt.whole and len(value) != nt.dims[0]:
            raise bad(
                what,
                f"{len(value)} elements; it holds exactly {nt.dims[0]} (a PLC's fixed array, such as an "
                f"S7-1500's Array[0..{nt.dims[0] - 1}]: a strict PLC refuses another length at the write, a "
                f"lax one may write the first {len(value)} and keep the old rest); write all {nt.dims[0]}",
            )


def _payload(nt: _NodeType, value: Any, node_id: str) -> ua.Variant:
    """The Variant written for ``value`` to a node of type ``nt``: shape first, then ``to_variant``."""
    _fit_rank(nt, value, node_id)
    if nt.enum is not None and any(isinstance(v, bool | np.bool_) for v in _leaves(value)):
        # true and false are no state (an action's default value is true): as 1 and 0 they set whichever states
        # those numbers are, a ServerState's 1 is Failed
        named = ", ".join(f"{v} {n}" for v, n in (nt.enum_names or [])[:20])
        raise OpcUaTypeMismatch(
            f"node {node_id} is {_enumeration(nt)}; cannot write {reprlib.repr(value)}: true and false are no "
            "state of it (as 1 and 0 they would set whichever states those numbers are); write the number of "
            "the state meant" + (f" (its values by name: {named})" if named else "")
        )
    try:
        payload = to_variant(nt.vtype, value, node_id, nt.held)
    except OpcUaTypeMismatch as e:
        if nt.enum is None:
            raise
        # name the enumeration, not the Int32 its values travel as ('Running' to a state node), and the value
        # a name given stands for (or its values by name): the refusal is the fix
        why = str(e).split("; ", 1)[-1]
        as_text = next((v for v in _leaves(value) if isinstance(v, str)), None)
        if as_text is not None and nt.enum_names:
            meant = [(v, n) for v, n in nt.enum_names if n.casefold() == as_text.strip().casefold()]
            if meant:
                why += f": {reprlib.repr(as_text)} names its value {meant[0][0]} ({meant[0][1]}): write {meant[0][0]}"
            else:
                named = ", ".join(f"{v} {n}" for v, n in nt.enum_names[:20])
                why += f" (its values by name: {named}{', ...' if len(nt.enum_names) > 20 else ''})"
        raise OpcUaTypeMismatch(
            f"node {node_id} is {_enumeration(nt)} (written as its number); {why}"
        ) from None
    if nt.max_bytes is not None:
        given = _leaves(payload.Value)
        sizes = [len(v.encode("utf-8")) if isinstance(v, str) else len(v) for v in given if v is not None]
        if sizes and max(sizes) > nt.max_bytes:
            text = nt.vtype is ua.VariantType.String
            prop = "MaxStringLength" if text else "MaxByteStringLength"
            raise OpcUaTypeMismatch(
                f"node {node_id} holds at most {nt.max_bytes} bytes"
                + (
                    f"{' of text' if text else ''} (the server's {prop}, in its ServerCapabilities)"
                    if nt.server_bytes
                    else f" of text (its MaxStringLength: a PLC's STRING[{nt.max_bytes}])"
                    if text
                    else " (MaxByteStringLength)"
                )
                + f"; cannot write {reprlib.repr(value)}: {max(sizes)} bytes, which the server would cut or refuse; "
                f"write at most {nt.max_bytes} bytes"
            )
    payload = _localized(payload, nt.locale)
    if nt.enum is not None:
        given = payload.Value if isinstance(payload.Value, list) else [payload.Value]
        outside = sorted({v for v in given if v not in nt.enum})
        if outside:
            raise OpcUaTypeMismatch(
                f"node {node_id} is {_enumeration(nt)}; cannot "
                f"write {reprlib.repr(value)}: {', '.join(map(str, outside[:5]))} is none of them (the PLC "
                "program would act on a state it does not define); write one of its values"
            )
    return payload


def _enumeration(nt: _NodeType) -> str:
    """An enumeration node's type as a refusal names it: its DataType and the values it defines."""
    shown = sorted(nt.enum or ())
    listed = ", ".join(map(str, shown[:20])) + (", ..." if len(shown) > 20 else "")
    if nt.enum_own is not None:
        return f"a multi-state node ({nt.shown}) whose {nt.enum_own} define the values {listed}"
    held = "" if nt.vtype is ua.VariantType.Int32 else f", held by the server as {nt.shown}"
    return f"an enumeration (DataType {nt.data_type}{held}) of the values {listed}"


# The forms of a value write, in the order tried. Servers differ in what a write may carry besides the
# value (Part 4, 5.10.4: a server that does not take a part answers BadWriteNotSupported): most take the
# value with its Good status (asyncua's form), some only the value alone, and some (an ICP DAS gateway)
# only a value with its source timestamp. The first form a node's server takes is kept for that node.
_FORMS: tuple[Callable[[ua.Variant], ua.DataValue], ...] = (
    lambda v: ua.DataValue(v),
    lambda v: ua.DataValue(v, StatusCode=None),
    lambda v: ua.DataValue(v, SourceTimestamp=ua.DateTime.now(dt.UTC)),
)


def _request_room(client: Client | None, own: int) -> tuple[int, str]:
    """(the most bytes a request of ``client``'s session may encode to, what sets that): the server's
    MaxMessageSize and MaxChunkCount (times the body a chunk of its ReceiveBufferSize carries), as its
    Acknowledge stated them (Part 6, 7.1.2.4: a larger request is aborted with BadRequestTooLarge, and asyncua's
    server then drops the session), and the source's own max_message_bytes ``own``: a value larger than that,
    once the node holds it, would come back in a message the source does not take, closing the connection."""
    room = [
        (
            own,
            f"the source's max_message_bytes {own} (the node holding it, its value read back would close the "
            "connection)",
        )
    ]
    protocol = getattr(getattr(client, "uaclient", None), "protocol", None)
    connection: Any = getattr(protocol, "_connection", None)
    limits = getattr(connection, "_limits", None)
    size, count, chunk = (
        getattr(limits, k, 0) for k in ("max_message_size", "max_chunk_count", "max_send_buffer")
    )
    if isinstance(size, int) and size > 0:
        room.append((size, f"the server's MaxMessageSize {size}, the largest request it takes"))
    if isinstance(count, int) and isinstance(chunk, int) and count > 0 and chunk > 0:
        try:
            body = MessageChunk.max_body_size(connection.security_policy.symmetric_cryptography, chunk)
        except (AttributeError, TypeError, ValueError):
            body = chunk - 128  # headers, a signature and padding at most
        room.append((count * body, f"the server's MaxChunkCount {count} of {chunk}-byte chunks"))
    return min(room)


# a request's bytes besides its encoded WriteRequest: its type's NodeId and a session's authentication token
# longer than the null one encoded here (a GUID's, a ByteString's)
_REQUEST_SLACK = 64


def _plain_leaves(value: Any) -> list | None:
    """A value's elements, each Variant unwrapped, when every one is a number, a text, bytes or a LocalizedText
    (None: some other kind, whose encoded size is not bounded by these)."""
    out: list = []
    for x in _leaves(value):
        if isinstance(x, ua.Variant):
            inner = _plain_leaves(x.Value)
            if inner is None:
                return None
            out += inner
        elif x is None or isinstance(x, int | float | str | bytes | ua.LocalizedText):
            out.append(x)
        else:
            return None
    return out


def _too_large_to_send(request: ua.WriteRequest, room: tuple[int, str], node_id: str, value: Any) -> None:
    """``OpcUaWriteRefused`` naming the node, the size and the limit when ``request`` encodes to more bytes
    than ``room`` (``_request_room``) lets the session send: the server would refuse it (BadRequestTooLarge)
    and drop the session, every tag BAD until the source reconnects."""
    most, what = room
    # a cheap bound first: encoded, a value is at most a few bytes per element more than its text and bytes;
    # a BaseDataType node's list is of Variants, each unwrapped (counted 16 bytes each, a list of 4-MB texts
    # went out unmeasured: found in review); anything else is measured
    leaves = _plain_leaves(request.Parameters.NodesToWrite[0].Value.Value.Value)
    if leaves is not None:
        texts = (x.Text if isinstance(x, ua.LocalizedText) else x for x in leaves)
        bound = sum(
            len(x) * 4 if isinstance(x, str) else len(x) if isinstance(x, bytes) else 0 for x in texts
        )
        if bound + 16 * len(leaves) + 1024 <= most:
            return
    size = len(ua_binary.struct_to_binary(request)) + _REQUEST_SLACK
    if size > most:
        raise OpcUaWriteRefused(
            f"write of {reprlib.repr(value)} to {node_id} refused before it was sent: the request would be "
            f"{size} bytes, over {what}; the server would refuse it (BadRequestTooLarge) and drop the session, "
            "every tag BAD until the source reconnects; write a smaller value"
        )


async def _write_value(
    node: Node,
    payload: ua.Variant,
    forms: dict[str, int],
    node_id: str,
    room: tuple[int, str] | None = None,
    value: Any = None,
) -> ua.StatusCode | None:
    """Write ``payload`` in the form this node's server took before, else in each form of ``_FORMS`` in
    turn while the server answers BadWriteNotSupported (the last answer is raised). GoodClamped (the server
    wrote the value clamped into the node's range: the node holds another one) is raised as a refusal:
    asyncua takes any Good status as written. An Uncertain status is returned, not raised: the server took
    the write but not wholly as asked (Part 4, 7.39.1: "could not complete the operation in the manner
    requested by the Client, however, the operation did not fail entirely"); asyncua raises it as it does a
    Bad one. ``room``: the most bytes the request may encode to and what sets it (``_request_room``); a larger
    one is refused before it is sent (``_too_large_to_send``), ``value`` named."""
    first = forms.get(node_id, 0)
    for i in range(first, len(_FORMS)):
        uncertain = None
        params = ua.WriteParameters(
            NodesToWrite=[
                ua.WriteValue(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value, Value=_FORMS[i](payload))
            ]
        )
        if room is not None:
            _too_large_to_send(ua.WriteRequest(Parameters=params), room, node_id, value)
        try:
            got = _one_each(await node.session.write(params), 1, "Write")
            if got[0].value >> 30 == 1:  # severity 01: Uncertain
                uncertain = got[0]
            else:
                got[0].check()
            if code_of(got[0]) == ua.StatusCodes.GoodClamped:
                raise ua.UaStatusCodeError(ua.StatusCodes.GoodClamped)
        except ua.UaStatusCodeError as e:
            if code_of(e.code) != ua.StatusCodes.BadWriteNotSupported or i == len(_FORMS) - 1:
                raise
            continue
        if i != first:
            forms[node_id] = i
            log.info("opcua: node %s takes writes only in form %d (of %d); kept", node_id, i, len(_FORMS))
        return uncertain
    return None


def _counter_top(nt: _NodeType | None) -> int:
    """The highest value of a heartbeat counter: 32767, or less when the node's integer type holds less (a
    Siemens USINT/SINT life counter: 255 / 127), so that it wraps to 0 rather than stop. For a BaseDataType
    (or an abstract Integer) node, the integer type it holds: a write keeps that type."""
    name = None if nt is None else (nt.held or nt.vtype).name  # held: only a BaseDataType's or abstract's
    if name in _INT_RANGE:
        return min(_INT_RANGE[name][1], 32767)
    return 32767


# a BaseDataType write target that an output judges (``write_misfit``) and finds refusing its values for the
# type or shape it held when last read has that value read again at most this often: once the PLC makes it
# hold a type that fits, the output writes again without a reconnect; refused for good, one read a second
HELD_RECHECK_S = 1.0
# such a node that changes what it holds again within this long of its last change (a PLC program retyping it,
# a server answering alternately) is said once and then counted (notice ``held_type_changes``), not said at each
# re-read: said again at its first change after holding one type this long, with the changes meanwhile
HELD_QUIET_S = 600.0
TYPES_RETRY_S = 10.0  # the server's structure types not read (busy, an error): read again after ~10 s,
TYPES_RETRY_MAX_S = 300.0  # doubling up to 5 minutes, until they are; each read bounded at 4x
TYPES_BOUND_MAX_S = 120.0  # connect_timeout_s, doubled at each try up to 2 minutes
# a structure node flagged StructureChanged (or whose bytes do not fit its layout) has the server's types read
# again at most this often: a server that flags every value so had them read at each one, the values between
# lost; within this long of the last read, a value decoded by the types it made is passed on (counted)
RELAYOUT_S = 10.0


def _types_failure(exc: BaseException, bound_s: float) -> str:
    """Why reading the server's structure types failed, in a few words (not "undescribed")."""
    if isinstance(exc, TimeoutError):
        return f"the server did not send them within {bound_s:g} s"
    if isinstance(exc, ua.UaStatusCodeError):
        return code_name(exc.code)
    return f"{type(exc).__name__}: {exc}"


_NS = re.compile(r"^ns=(\d+);(.+)$")


class NamespacePins(Protocol):
    """Where an ``OpcUaSource`` keeps the namespace URIs its server had by index (the agent's data folder), so that
    a start after the PLC registered them in another order is seen (``_repin``)."""

    # how to take the server's new order, as a refusal says it ("remove ... and restart the agent")
    accept: str
    # the server's ApplicationUri, set at each connect before ``load`` (None: not read): pins kept with it are the
    # server's whatever endpoint names it
    server: str | None

    def load(self, strict: bool = False) -> dict[int, str] | None:
        """The URIs kept for this source's server; None when none are (first start, another endpoint).
        ``strict``: ``OSError`` when they may be kept but cannot be read now (a cause that passes)."""

    def save(self, pins: dict[int, str]) -> None:
        """Keep ``pins`` (``OSError`` when it cannot)."""

    def forgotten(self) -> bool:
        """Whether the pins were forgotten for the next start to pin afresh (``--accept``), not pinned since
        (``OSError`` when that cannot be read now)."""

    def kept_elsewhere(self) -> bool:
        """Whether pins are kept for this source with a server's ApplicationUri under another endpoint (a connect
        that could not read its server's cannot tell whether they are its own)."""

    def reordered_elsewhere(self, array: list[str | None], used: Collection[int]) -> str | None:
        """Why ``array`` (the server's namespaces now) may be a reorder of those kept under another endpoint (a
        new source naming a pinned server by another name), an index of ``used`` moved, for a refusal; None: it
        is not."""


def _no_namespaces(got: Any) -> str | None:
    """Why a NamespaceArray value read tells nothing of what the ``ns=`` indexes mean (None: it tells). A server
    still starting may serve it empty, or with OPC UA's own namespace alone (index 0; a server's own is 1) while
    its nodes of other indexes are served: taken as read, the indexes went unchecked (``_repin``); a String
    taken for the array was pinned a character per index. A null entry (asyncua reads a null String as None: an
    index the server leaves free) tells nothing of its own index, but the others' URIs are read: the array was
    taken as unread as a whole, so such a server's namespaces were never pinned."""
    if not isinstance(got, list):
        return f"its value is {type(got).__name__}, not a list of namespace URIs"
    odd = [uri for uri in got if uri is not None and not isinstance(uri, str)]
    if odd:
        return f"it lists a {type(odd[0]).__name__}, not a namespace URI"
    if not got:
        return "it lists no namespace"
    if len(got) < 2:
        return "it lists 1 namespace, none but OPC UA's own"
    if all(uri is None for uri in got[1:]):
        return f"it lists {len(got)} namespaces, none but OPC UA's own with a URI"
    return None


async def _namespaces(client: Client, timeout_s: float) -> tuple[list[str | None], str | None]:
    """The server's namespace array (None: an index without a URI) and, when it tells nothing of the indexes
    (``[]`` then), why."""
    try:
        async with asyncio.timeout(timeout_s):
            unread = _no_namespaces(got := await client.get_namespace_array())
    except (ua.UaError, TimeoutError) as e:
        unread = f"{type(e).__name__}: {e}"
    return ([] if unread else list(got)), unread


async def _server_uri(client: Client, timeout_s: float) -> tuple[str | None, str | None]:
    """The server's ApplicationUri (the first entry of its Server/ServerArray; None: it names none) and, when the
    Read failed, why (None: it was read)."""
    try:
        async with asyncio.timeout(timeout_s):
            got = await client.get_node(ua.ObjectIds.Server_ServerArray).read_value()
    except (ua.UaError, TimeoutError) as e:
        return None, f"{type(e).__name__}: {e}"
    return (got[0] if isinstance(got, list) and got and isinstance(got[0], str) and got[0] else None), None


def _server_unknown(why: str | None, accept: str) -> str:
    """Why a connect whose server's ApplicationUri could not be had (``why``: the Read's failure; None: it names
    none) checks no ``ns=`` index while this source's pins are kept for a server under another endpoint
    (``NamespacePins.kept_elsewhere``): by the endpoint alone it pinned afresh, in a reordered array's order."""
    return (
        "the server's ApplicationUri "
        + (f"could not be read ({why})" if why else "is not given (its ServerArray names none)")
        + " and this source's namespaces are kept for a server under another endpoint: whether it is this one "
        "cannot be told, so its ns= indexes cannot be checked"
        + (f". Should this be another server, {accept}" if accept else "")
    )


def _ns_used(settings: OpcUaSettings, targets: list[str]) -> frozenset[int]:
    """The namespace indexes a source's ``ns=`` node ids name: its nodes and their rate nodes, its heartbeat, and
    the write targets ``targets``."""
    hb = settings.heartbeat
    ids = [n.node_id for n in settings.nodes] + [
        n.sample_rate_from for n in settings.nodes if n.sample_rate_from
    ]
    ids += targets + ([hb.node_id] if hb else [])
    return frozenset(int(m.group(1)) for i in ids if (m := _NS.match(i.strip())))


def _pins_refusal(
    pins: NamespacePins,
    why_uri: str | None,
    array: list[str | None],
    unread: str | None,
    used: Collection[int],
    pinned: bool = False,
) -> tuple[dict[int, str] | None, str | None]:
    """The one decision a source's connect (``OpcUaSource._connect``) and ``edge-agent validate --online``
    (``_kept_resolve``) make on the namespaces kept for a server, in one order: (the URIs kept for it by index, or
    None, and why the connect is refused, whole, nothing read or written: None when it is not). ``pins.server``:
    the server's ApplicationUri, read first (None: not; ``why_uri``: why); ``array``, ``unread``: its namespace
    array (``_namespaces``); ``used``: the ``ns=`` indexes the config names (``_ns_used``); ``pinned``: pinned by
    this process already (the file is not read for them). Made in two places, the orders differed: validate found
    another source's pins for the endpoint before it asked whether this source's were kept under another, and
    passed a config the agent refused; it refused per node what the agent refuses per connect. Blocking (the
    file, its lock): the agent calls it in a worker thread. ``OSError`` when the file may be read later, not now."""
    if pins.server is None and pins.kept_elsewhere():
        # by the endpoint alone, the entry kept for this server under another endpoint is not found: pinned
        # afresh in a reordered array's order (the moved index's other node read), and that entry dropped
        return None, _server_unknown(why_uri, pins.accept)
    kept = None if pinned else pins.load(strict=True) or None
    if unread:
        if not pinned and kept is None:
            return None, None  # pinned at a later connect; the indexes taken as written meanwhile
        # a PLC still starting after the download that reordered them: its ns= indexes, taken as written, may
        # name another namespace's node, read as GOOD and written
        return kept, (
            f"the server's namespace array could not be read ({unread}), so its ns= indexes cannot be checked "
            "against the namespace URIs pinned for them. Should the server no longer serve it (this user's access "
            f"to Server/NamespaceArray), {pins.accept} (its indexes are then taken as written)"
        )
    if not pinned and kept is None and (why := pins.reordered_elsewhere(array, used)):
        return None, why  # pinned afresh, the moved index's other node was read and written
    return kept, None


async def _kept_resolve(
    client: Client, pins: NamespacePins | None, timeout_s: float, used: Collection[int] = frozenset()
) -> Any:
    """How a one-off check beside the agent (``check_server``) resolves a configured node id: its ``ns=``
    index compared with the namespace ``pins`` kept for it, as the agent's next start compares (``_repin``),
    so that it never checks another namespace's node as the configured one. None without pins kept.
    ``OpcUaError`` where the agent refuses the connect (``_pins_refusal``, the same decision): ``used``, the
    ``ns=`` indexes the config names."""
    if pins is None:
        return None
    array, unread = await _namespaces(client, timeout_s)
    pins.server, why_uri = await _server_uri(client, timeout_s)
    try:  # read as the agent reads them: a file not read now is no "none kept" (the raw index was checked)
        kept, refused = _pins_refusal(pins, why_uri, array, unread, used)
    except OSError as e:
        raise OpcUaError(
            f"the namespaces kept for this server could not be read ({e}), so its ns= indexes cannot be checked "
            "against them; try again"
        ) from None
    if refused:
        # checked by the raw index, a node the agent would never read passed
        raise OpcUaError(f"the agent refuses this connect (it reads and writes nothing): {refused}")
    if not kept:
        return None

    async def resolve(client: Client, node_id: str) -> str:
        return await _resolve_node_id(client, _repin(node_id, kept, array, set(), pins.accept))

    return resolve


def _repin(
    node_id: str,
    pinned: dict[int, str],
    array: list[str | None],
    seen: set[int] | None = None,
    accept: str = "",
) -> str:
    """``ns=<index>;<rest>`` as the node it meant when ``pinned`` (index -> namespace URI) was taken.

    A PLC restart or program download may register the server's namespaces in another order: the URI
    that was index 2 is now 3, and ``ns=2;s=Speed`` names another namespace's node (maybe one that
    exists, so a wrong value read as good, or a write to the wrong node). An index this process saw hold its
    pinned URI (``seen``; None: every pinned one) is moved to where its URI is now: the config was read with
    that meaning. One pinned before this process started (kept in the data folder) whose URI it never saw
    there is refused: the array changed while the agent was not running, and the config may have been
    written since for the new order, so neither meaning is safe (``accept``: how to take the new order).
    ``OpcUaNodeError`` when refused or when the URI is gone. Unchanged when nothing was pinned or the
    namespace array could not be read."""
    m = _NS.match(node_id.strip())
    if m is None or not array:
        return node_id
    i = int(m.group(1))
    uri = pinned.get(i)
    if uri is None or (i < len(array) and array[i] == uri):
        return node_id
    now = (
        f"namespace {i} of the server is {array[i]!r} now"
        if i < len(array) and array[i] is not None
        else f"the server has no namespace {i} now"
    )
    if seen is not None and i not in seen:
        # a reorder a running agent followed is refused at its next start as well: the config, read for the old
        # order, may have been rewritten for the new one since. Accepting the new order for a config that was not
        # rewritten points the index at the other namespace: nsu= is the fix then, said first
        raise OpcUaNodeError(
            f"node {node_id!r}: {now}, but was {uri!r} when the agent pinned this server's namespaces: its "
            "namespace array changed since (a program download, a firmware update; a change while the agent ran "
            "was followed, but a start cannot tell whether the config was rewritten for the new order since), "
            f"so ns={i} may name another namespace's node: neither read nor written. Write the node as "
            f"nsu={uri};{m.group(2)} (the namespace the config meant when pinned). Only if the config's ns= "
            f"indexes were rewritten for the server's new order, {accept or 'restart the agent'}; for a config "
            f"not rewritten, that makes ns={i} read and write the other namespace's node"
        )
    if uri not in array:
        raise OpcUaNodeError(
            f"node {node_id!r}: namespace {i} was {uri!r} when pinned and the server has no such "
            "namespace now (its namespace array changed); check the node (edge-agent browse) and write it "
            "as nsu=<uri>;..."
        )
    return f"ns={array.index(uri)};{m.group(2)}"


def _claim_tag(node_id: str, browse: str, explicit: set[str], owners: dict[str, str]) -> str:
    """The tag of a node configured without one: its browse name, unless that is another node's tag (a
    configured ``tag``, or the browse name of a node before it: a Beckhoff ``MAIN.fbPump1.rSpeed`` and
    ``MAIN.fbPump2.rSpeed`` are both ``rSpeed``, a Siemens ``"DB_Line1"."Temp"`` and ``"DB_Line2"."Temp"``
    both ``Temp``); then its node id as configured. Before, both nodes' readings came under one tag, so a
    rule or model on it took one pump's speed for the other's. ``owners`` (browse name -> node id) keeps
    who has a name. A browse name that is not valid UTF-8 (asyncua hands it over as lone surrogates) names its
    tag with U+FFFD for each invalid byte, as a text value is read (``_emit``)."""
    browse = valid_text(browse)
    if browse in explicit:
        return node_id
    return browse if owners.setdefault(browse, node_id) == node_id else node_id


# the identifier after the URI, spaces around its key allowed as asyncua's NodeId.from_string allows them
# (``nsu=urn:plc; s=Speed`` resolved and served before the URI was percent-decoded)
_IDENTIFIER = re.compile(r"\s*[isgb]\s*=")


async def _resolve_node_id(client: Client, node_id: str) -> str:
    """``nsu=<uri>;<rest>`` → ``ns=<index>;<rest>`` using the server's namespace array.

    The URI ends at the first ``;``: one that holds a ``;`` is written ``%3B`` and a ``%`` ``%25`` (OPC UA
    Part 6, the NodeId's string form: "Any ';' in the URI shall be percent encoded"), decoded here, the escapes
    as UTF-8 bytes (``namespace_uri``: escapes that are no UTF-8 are refused, as the config's check does, unless the
    server has the URI as written). A raw
    ``;`` left the rest of the URI in the identifier and was refused as a namespace the server lacks. A URI
    written with a ``%`` of its own, not encoded (``urn:a%20b`` for the namespace ``urn:a%20b``), is tried as
    written when its decoded form is no namespace of the server's."""
    m = NSU.match(node_id.strip())
    if m is None:
        return node_id
    uri, rest = m.group(1), m.group(2)
    if not _IDENTIFIER.match(rest):
        raise OpcUaNodeError(
            f"node {node_id!r}: {rest!r} after the namespace URI {uri!r} is no identifier (i=, s=, g= or b=); "
            "a ';' inside a namespace URI is written %3B (and a '%' %25), as OPC UA's NodeId text form says"
        )
    try:
        no_text: str | None = None
        decoded = namespace_uri(node_id) or uri
    except ValueError as e:
        decoded, no_text = uri, str(e)
    for tried in dict.fromkeys((decoded, uri)):
        try:
            return f"ns={await client.get_namespace_index(tried)};{rest}"
        except ValueError:
            continue
    if no_text is not None:  # not a namespace as written either (urn:a%E9b, a '%' of its own, is found so)
        raise OpcUaNodeError(no_text)
    raise OpcUaNodeError(
        f"node {node_id!r}: the server has no namespace {decoded!r}; "
        "check the URI (browse the server's NamespaceArray)"
    )


_GOOD: tuple[Quality, str | None] = (Quality.GOOD, None)
# status code value -> (quality, reason): one dict lookup per reading; bounded (the codes come from the server)
_QUALITIES: dict[int, tuple[Quality, str | None]] = {0: _GOOD}
_QUALITIES_MAX = 1024


def _quality(status: ua.StatusCode | None) -> tuple[Quality, str | None]:
    """A value's status as its ``Quality`` and, when not GOOD, the reason: the status code's name
    (``BadSensorFailure``, ``UncertainLastUsableValue``; its info bits, e.g. Overflow, left out), or
    ``Bad_0x81230000`` for a code OPC UA does not define (a vendor's)."""
    if status is None:
        return _GOOD
    got = _QUALITIES.get(status.value)
    if got is not None:
        return got
    severity = status.value >> 30  # OPC UA Part 4 7.39: 00 good, 01 uncertain, 1x bad
    if severity == 0:
        got = _GOOD
    else:
        code = code_of(status)
        name, _ = status_codes.get_name_and_doc(code)
        if name in ("Bad", "Uncertain"):  # not a code the standard defines: its number says which
            name = f"{name}_0x{code:08X}"
        got = (Quality.UNCERTAIN if severity == 1 else Quality.BAD, name)
    if len(_QUALITIES) < _QUALITIES_MAX:
        _QUALITIES[status.value] = got
    return got


def _null_time(v: Any) -> bool:
    """Whether ``v`` is DateTime 0, OPC UA's null time (Part 6, 5.2.2.5: never set), which asyncua hands out as
    1601-01-01."""
    return isinstance(v, dt.datetime) and v.year <= 1601


def _epoch(t: dt.datetime | None) -> float | None:
    """Epoch seconds of an OPC UA DateTime; None for a missing one, and for the null values (Part 6:
    0 and the maximum, which asyncua hands out as 1601-01-01 and 9999-12-31) that PLCs without a
    clock send as the source timestamp: the next timestamp in line is used instead."""
    if t is None or _null_time(t) or t.year >= 9999:
        return None
    if t.tzinfo is None:  # asyncua hands out naive UTC datetimes
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _explain(exc: BaseException, settings: OpcUaSettings) -> tuple[str, str]:
    """(reason key, one-line message with a hint) for a connect failure."""
    text = mask_credentials(f"{type(exc).__name__}: {exc}".strip())  # asyncua may name the URL with its login
    low = text.lower()
    if isinstance(exc, _Silent | _Refused):
        return exc.reason, str(exc)
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout", f"no answer within {settings.connect_timeout_s}s; check the endpoint and the server"
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return (
            "unreachable",
            f"cannot reach {mask_credentials(settings.endpoint)} ({exc.strerror or exc}); is the server running?",
        )
    if "certificate" in low or "securitychecks" in low:
        return "certificate", _certificate_refused(text, settings)
    if "useraccessdenied" in low or "identitytoken" in low or "password" in low:
        if not settings.username:  # "user None ... check username/password" when none was given
            return "auth", (
                f"the server refuses an anonymous login ({text}); set username and password (a user the "
                "PLC's OPC UA settings allow), or allow anonymous access on the server"
            )
        return "auth", f"login refused for user {settings.username!r} ({text}); check username/password"
    if "toomanysessions" in low or "toomanysubscriptions" in low or "maxconnectionsreached" in low:
        # a PLC holds few (an S7-1200: a handful of sessions, one or two subscriptions each)
        return "connect", (
            f"{text}: the server holds no more for this gateway; other clients (an HMI, an engineering "
            "tool, another gateway), or sessions a cut connection left behind until their session timeout, "
            "hold what it allows; tried again with the backoff; close the other clients or raise the PLC's "
            "limit"
        )
    return "connect", text


def _certificate_read(option: str, file: str):
    """The certificate in ``file``; a ``certificate`` refusal naming ``option`` and the file when it cannot
    be read or holds none."""
    try:
        return read_certificate(file)
    except OSError as exc:
        raise _Refused("certificate", f"{option} {file!r} cannot be read ({exc.strerror})") from None
    except ValueError:
        raise _Refused("certificate", f"{option} {file!r} is not an X.509 certificate (PEM or DER)") from None


# (certificate_file, private_key_file, server_certificate_file) -> (the files' stat signature, the certificate,
# the key, the pinned server certificate) as read and checked at a connect (``_key_of_certificate``): a
# source's reconnects (every reconnect_max_s while a PLC is away) read the key again only when a file changed
_CREDENTIALS: dict[tuple[str, str, str | None], tuple[tuple, Any, Any, Any]] = {}


def _signature(files: tuple[str, str, str | None]) -> tuple | None:
    """The files' identity and version (device, inode, size, modification and change times, mode), None when
    one cannot be stat'ed (read it then, for the refusal that names it)."""
    out: list[tuple[int, ...] | None] = []
    for f in files:
        if f is None:
            out.append(None)
            continue
        try:
            st = Path(f).stat()
        except OSError:
            return None
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode))
    return tuple(out)


def _key_of_certificate(settings: OpcUaSettings) -> tuple[Any, Any, Any]:
    """The agent's certificate, its private key and the pinned server certificate (None without one), read
    and checked once per version of the files (``_CREDENTIALS``): each read of an RSA key checks its numbers
    (~0.04 s of CPU), and it was read twice at every reconnect attempt.

    Refuses (``certificate``) a ``private_key_file`` that is not ``certificate_file``'s key (a key of an
    earlier certificate, or of another gateway's): the server cannot read the channel signed and encrypted
    with it, and just does not answer, which was said as "timeout: no answer". A certificate (its own or the
    pinned ``server_certificate_file``) or key that cannot be read, or a key with a passphrase (which the
    source takes no setting for), is refused the same way, naming the file: asyncua's own failures named
    none and blamed the login ("check username/password"), the server ("is the server running?") or the
    ASN.1 parser."""
    assert settings.certificate_file and settings.private_key_file
    cert_file, key_file = settings.certificate_file, settings.private_key_file
    files = (cert_file, key_file, settings.server_certificate_file)
    signature = _signature(files)
    kept = _CREDENTIALS.get(files)
    if kept is not None and signature is not None and kept[0] == signature:
        return kept[1:]
    _CREDENTIALS.pop(files, None)
    cert = _certificate_read("certificate_file", cert_file)
    server_cert = None
    if settings.server_certificate_file:
        server_cert = _certificate_read("server_certificate_file", settings.server_certificate_file)
    try:
        key = read_private_key(key_file)
    except OSError as exc:
        raise _Refused(
            "certificate", f"private_key_file {key_file!r} cannot be read ({exc.strerror})"
        ) from None
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise _Refused(
            "certificate",
            f"private_key_file {key_file!r} is protected by a passphrase, which the source does not take: "
            "store the key without one (`openssl pkey -in KEY -out KEY.plain`) and make the file readable "
            "by the agent's user only",
        ) from None
    except ValueError:
        raise _Refused(
            "certificate", f"private_key_file {key_file!r} is not a private key (PEM or DER) that can be read"
        ) from None
    if not is_key_of(key, cert):
        raise _Refused(
            "certificate",
            f"private_key_file {settings.private_key_file!r} is not the key of certificate_file "
            f"{settings.certificate_file!r} ({cert.subject.rfc4514_string() or 'no subject'}): the server "
            "could not read the channel; give the key made with that certificate",
        )
    if signature is not None:
        _CREDENTIALS[files] = (signature, cert, key, server_cert)
    return cert, key, server_cert


@functools.cache
def _set_security_replaceable() -> bool:
    """Whether asyncua's ``Client._set_security`` takes the arguments ``_secured_by``'s stand-in does and its
    security policies a ``host_cert_chain`` (asyncua 2.x)."""
    import inspect

    from asyncua import Client as AsyncuaClient
    from asyncua.crypto.security_policies import SecurityPolicy

    try:
        names = list(inspect.signature(AsyncuaClient._set_security).parameters)
        policy = inspect.signature(SecurityPolicy.__init__).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    want = ["self", "policy", "certificate", "private_key", "server_cert", "mode", "certificate_chain"]
    return names == want and "host_cert_chain" in policy


def _secured_by(client: Client, cert: Any, key: Any, server_cert: Any) -> None:
    """Has asyncua's ``set_security`` take the certificates and key read here (``_key_of_certificate``)
    instead of reading the files again (its ``load_private_key`` checked the key's numbers once more at each
    connect): its endpoint look-up for a server certificate not pinned is kept. Only where asyncua's private
    ``Client._set_security`` and its policies' ``host_cert_chain`` are as this replaces them (asyncua 2.x; the
    project takes asyncua 1.1 up): elsewhere asyncua reads the files itself, as before."""
    from asyncua.crypto import uacrypto

    if not _set_security_replaceable():
        return

    async def secure(policy, certificate, private_key, server, mode, certificate_chain=None) -> None:
        peer = server_cert if isinstance(server, uacrypto.CertProperties) or server is None else server
        chain = await asyncio.gather(
            *(uacrypto.load_certificate(c.path_or_content, c.extension) for c in certificate_chain or [])
        )
        uacrypto.check_certificate(cert, client.application_uri, socket.gethostname())
        client.security_policy = policy(peer, cert, key, mode, host_cert_chain=chain)
        client.uaclient.set_security(client.security_policy)

    client._set_security = secure  # type: ignore[method-assign, assignment]


def _no_clear_password(client: Client, settings: OpcUaSettings) -> None:
    """With ``security_mode: Sign`` the channel is signed, not encrypted: a server whose endpoint's user
    token policy names no security policy of its own takes the password as it is, readable by anyone on the
    line (asyncua sends it, saying only "Sending plain-text password"). The login is refused here, before
    the password is sent: encrypt the channel (SignAndEncrypt) or have the PLC encrypt user tokens."""
    add_user_auth = client._add_user_auth

    def checked(params: ua.ActivateSessionParameters, username: str | None, password: str | None) -> None:
        token = client.server_policy(ua.UserTokenType.UserName)
        if password and token.SecurityPolicyUri in (None, "", security_policies.SecurityPolicyNone.URI):
            raise _Refused(
                "auth",
                f"the server at {mask_credentials(settings.endpoint)} would take user {settings.username!r}'s "
                f"password unencrypted over the {settings.security_policy} Sign channel (signed, not "
                "encrypted: its user token policy has no security policy), readable by anyone on the "
                "network; not sent: set security_mode SignAndEncrypt, or have the PLC encrypt user tokens",
            )
        add_user_auth(params, username, password)

    client._add_user_auth = checked  # type: ignore[method-assign]


def _certificate_refused(text: str, settings: OpcUaSettings) -> str:
    """What to do when the server refuses the agent's certificate: it lies outside its validity dates (a real
    PLC answers BadCertificateTimeInvalid, or just BadSecurityChecksFailed), it names no application URI the
    agent can announce (BadCertificateUriInvalid), or the PLC does not trust it yet (BadCertificateUntrusted,
    BadSecurityChecksFailed: the first connect to a Siemens or Beckhoff PLC, which files it as rejected until
    someone trusts it there). Names the file and its thumbprint, as the PLC lists it."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes

    file = settings.certificate_file
    try:
        assert file is not None
        cert = read_certificate(file)
    except (AssertionError, OSError, ValueError):
        return (
            f"certificate refused ({text}); make the server trust certificate_file {file!r} and check the "
            "server_certificate_file"
        )
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
    it = f"certificate_file {file!r} ({cert.subject.rfc4514_string() or 'no subject'}, SHA-1 thumbprint {thumbprint})"
    now = dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not start <= now <= end:
        when = (
            f"expired on {end:%Y-%m-%d %H:%M} UTC"
            if now > end
            else f"is valid only from {start:%Y-%m-%d %H:%M} UTC"
        )
        return (
            f"certificate refused ({text}): the agent's {it} {when}; issue a new one (with the same application "
            "URI) and have the PLC trust it; if the gateway's clock is wrong, set it right"
        )
    uri = _app_uri_of(file)
    if "uriinvalid" in text.lower() or "certificateinvalid" in text.lower():
        named = (
            f"names the application URI {uri!r}"
            if uri
            else "names no application URI (a URI in its subjectAltName)"
        )
        return (
            f"certificate refused ({text}): the agent's {it} {named}, which the agent announces as its own; the "
            "PLC wants the certificate's URI to be the application's: issue one with a URI subjectAltName "
            "(urn:<gateway>:factory-edge) and have the PLC trust it"
        )
    return (
        f"certificate refused ({text}): the PLC does not trust the agent's {it} yet; a PLC files a client "
        "certificate it has not seen as rejected: trust it there (Siemens: the OPC UA server's certificate "
        "manager in TIA Portal, or the web server's; Beckhoff TwinCAT: move it from the server's pki/rejected "
        "to pki/trusted folder); the agent connects at its next try (tried again with the backoff, up to "
        f"reconnect_max_s {settings.reconnect_max_s:g} s apart)"
    )


@contextlib.asynccontextmanager
async def _time_limit(seconds: float) -> AsyncIterator[None]:
    """``asyncio.timeout`` for the one-off connections (validate --online, browse, the refit's reads, the endpoint
    probe, the close of a session left on the server), whose limit always ends as ``TimeoutError``. On Python
    < 3.12 asyncua's ``wait_for`` raises ``CancelledWithResultError`` when a request's answer and the limit come
    in one turn of the loop (a loaded gateway holds its loop past the limit), a ``CancelledError`` that
    ``asyncio.timeout`` does not turn into ``TimeoutError``: it escaped ``validate --online`` and ``browse``
    (their ``except Exception`` let it through), ended a refit's task as if stopped, and made the source forget
    a left session whose close it cut short. A cancellation of the task itself (a stop) is passed on as it is
    (as the source's session loop tells them apart, 8239ff3)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # this task cancelled
        raise TimeoutError("no answer within the time limit (it came as the limit ran out)") from None


async def _security_not_offered(settings: OpcUaSettings) -> tuple[str, str] | None:
    """(reason, message) of why the server cannot be reached with ``security_mode``/``security_policy``, when
    its endpoint list (GetEndpoints, which needs no security) tells: it lacks the pair (``security_policy``), or
    its endpoints of that pair present another certificate than the pinned ``server_certificate_file``
    (``certificate``: a machine in the middle, or the PLC's certificate renewed). A server offered only
    policies the client does not speak, or a secured channel in a mode it lacks, or a channel encrypted for
    another certificate's key, simply does not answer (a timeout) or refuses it (BadSecurityChecksFailed),
    which hides the fix. None when the pair is offered as pinned or the list cannot be read."""
    probe = Client(settings.endpoint, timeout=min(settings.connect_timeout_s, 3.0))
    try:
        async with _time_limit(min(settings.connect_timeout_s, 3.0) + 1.0):
            endpoints = await probe.connect_and_get_server_endpoints()
    except Exception:
        return None
    offered = sorted(
        {
            (e.SecurityPolicyUri.rpartition("#")[2], ua.MessageSecurityMode(e.SecurityMode).name)
            for e in endpoints
        }
    )
    offered = [(pol, mode.rstrip("_")) for pol, mode in offered]  # asyncua's None_ is the mode None
    none = settings.security_mode is SecurityMode.NONE
    wanted = ("None", "None") if none else (settings.security_policy, settings.security_mode.value)
    if not offered:
        return None
    if wanted in offered:
        return _pin_mismatch(settings, endpoints)
    listed = ", ".join(f"{pol} {mode}" for pol, mode in offered)
    want = "no security" if none else f"{wanted[0]} {wanted[1]}"
    fix = "set security_mode and security_policy to one of those"
    if not none and all(mode == "None" for _, mode in offered):
        # a downgrade: the PLC's security switched off, or another machine answering at its address; never
        # steer the engineer towards sending readings, writes and passwords in clear
        fix = (
            "it offers no secured endpoint: turn security back on in the PLC's OPC UA settings, or check that "
            "this address is the PLC; security_mode: None would send readings, writes and passwords in clear"
        )
    return "security_policy", (
        f"the server at {mask_credentials(settings.endpoint)} does not offer {want}; it offers: {listed}; {fix}"
    )


def _pin_mismatch(settings: OpcUaSettings, endpoints: list[Any]) -> tuple[str, str] | None:
    """("certificate", message) when the server's endpoints of the configured policy and mode present another
    certificate than the pinned ``server_certificate_file``, naming the file, both certificates' thumbprints
    (SHA-1, as PLCs and UaExpert show them) and the fix; None when one presents it (or nothing is pinned)."""
    if settings.security_mode is SecurityMode.NONE or not settings.server_certificate_file:
        return None
    from asyncua.client.client import _first_cert_from_chain
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    try:
        pinned = read_certificate(settings.server_certificate_file)
    except (OSError, ValueError):
        return None
    mode = (
        ua.MessageSecurityMode.Sign
        if settings.security_mode is SecurityMode.SIGN
        else ua.MessageSecurityMode.SignAndEncrypt
    )
    presented = [
        e.ServerCertificate
        for e in endpoints
        if e.SecurityPolicyUri.rpartition("#")[2] == settings.security_policy
        and e.SecurityMode == mode
        and e.ServerCertificate
    ]
    own = pinned.public_bytes(serialization.Encoding.DER)
    if not presented or any(_first_cert_from_chain(c) == own for c in presented):
        return None
    try:
        theirs = x509.load_der_x509_certificate(_first_cert_from_chain(presented[0]))
    except ValueError:
        return None

    def said(cert: x509.Certificate) -> str:
        thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
        return f"{cert.subject.rfc4514_string() or 'no subject'}, SHA-1 thumbprint {thumbprint}"

    return "certificate", (
        f"the server at {mask_credentials(settings.endpoint)} presents another certificate ({said(theirs)}) than "
        f"the pinned server_certificate_file {settings.server_certificate_file!r} ({said(pinned)}); nothing is "
        "read or written: a machine in the middle presents its own; if the PLC's certificate was renewed (its "
        "OPC UA settings show the thumbprint), save the PLC's new certificate to that file"
    )


def _app_uri_of(cert_file: str) -> str | None:
    """The URI in the certificate's subjectAltName: the client must announce it as its application URI."""
    from cryptography import x509

    cert = read_certificate(cert_file)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


class _MessageSize:
    """The size of the OPC UA message under way, summed from its chunks' headers as the bytes pass
    (OPC UA Part 6, 7.1.2: message type, chunk type ``C`` intermediate / ``F`` final / ``A`` abort,
    then the chunk's size). A chunk is counted when its header arrives, before its body does."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = b""  # a header split across reads
        self.body_left = 0  # bytes of the current chunk still to come
        self.last = True  # the current chunk ends its message
        self.total = 0  # bytes of the message under way, its announced chunks included
        self.done = 0  # bytes of the last message taken in whole

    def feed(self, data: bytes) -> int:
        """0, or the size the message under way has reached when that is over the limit."""
        i, n = 0, len(data)
        while i < n:
            if self.body_left:
                step = min(self.body_left, n - i)
                self.body_left -= step
                i += step
            else:
                need = 8 - len(self.head)
                self.head += data[i : i + need]
                i += need
                if len(self.head) < 8:
                    break
                size = int.from_bytes(self.head[4:8], "little")
                self.last = self.head[3:4] != b"C"
                self.head = b""
                self.total += size
                if self.total > self.limit:
                    return self.total
                self.body_left = max(size - 8, 0)
            if not self.body_left and not self.head and self.last:
                self.done, self.total = self.total, 0
        return 0


def _bound_messages(client: Client, limit: int, on_oversize: Callable[[int], None] | None) -> None:
    """No message from the server over ``limit`` bytes is taken in.

    The Hello states the limit (``MaxMessageSize``), and a compliant server sends nothing larger. But
    asyncua then takes whatever the server's Acknowledge says, 0 (no limit) included, and it buffers a
    chunk until the size its header declares (up to 4 GiB) has arrived, copying the whole buffer on
    every read. So every read of the connection passes ``_MessageSize`` first: when a chunk's header
    takes the message under way over the limit, the connection is closed and ``on_oversize`` told the
    size it would have reached."""
    client.max_messagesize = limit
    make = getattr(client.uaclient, "_make_protocol", None)
    if make is None:  # another asyncua layout: the Hello's limit still holds a compliant server
        return

    def make_bounded() -> Any:
        proto = make()
        received = proto.data_received
        size = _MessageSize(limit)
        client._message_size = size  # type: ignore[attr-defined]  # the size of each answer (``_measure``)

        def data_received(data: bytes) -> None:
            client._heard_at = time.monotonic()  # type: ignore[attr-defined]  # ``OpcUaSource._answers_since``
            over = size.feed(data)
            if over:
                transport = getattr(proto, "transport", None)
                if transport is not None:
                    transport.close()
                if on_oversize is not None:
                    on_oversize(over)
                return
            received(data)

        proto.data_received = data_received
        return proto

    client.uaclient._make_protocol = make_bounded  # type: ignore[method-assign]


_APART_MAX = 8  # the most subscriptions of one large value each a source makes (``_measure``)
# a node left out for its size is read again after a pause doubling from max(reconnect_max_s, REFIT_MIN_S) to
# REFIT_MAX_S (``_refit``); read on the source's own session (the PLC refusing a connection of its own), a value
# still too large closes that session: after REFIT_HERE_MAX such closes it is no longer read there until the PLC
# reconnects on its own, or the config is reloaded (a new source)
REFIT_MIN_S = 1.0
# the time the close of a session left on the PLC (``_close_left``) gives the PLC to answer its Hello: a PLC that
# answers does so in milliseconds; one that does not (the link still dead, its stack hung) cost connect_timeout_s
# before each reconnect. A session whose close gave way so is closed once the PLC answers the new connection
LEFT_HELLO_S = 1.0
# sessions left on the server kept to close at the next connect (``_keep_left``)
LEFT_SESSIONS_MAX = 4
REFIT_MAX_S = 600.0
REFIT_HERE_MAX = 3
# the nodes that start to get no values at a connect named each in a WARNING line, the others in one line with
# their count (all of them, each with why, are ``node_errors`` on /status): 5,000 wrong node ids gave 5,000 lines
# at every connect, and a PLC reconnecting every few minutes filled the gateway's log
NODE_ERRORS_LOGGED = 5

# OPC UA Part 5, ServerCapabilities/OperationLimits: the most items a server takes in one call of a service
# (0: no limit). Embedded PLC servers state small ones (10, 100) and refuse a larger call whole with
# BadTooManyOperations.
_OPERATION_LIMITS = {
    "read": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    "write": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite,
    "browse": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
    "translate": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,
    "monitor": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
}


def _split_operations(client: Client, on_fault: Callable[..., None] | None = None) -> dict[str, int]:
    """Calls of this client's session that carry many items (Read, Write, Browse, TranslateBrowsePaths,
    CreateMonitoredItems, DeleteMonitoredItems) go to the server in parts of at most its limit for that service; the limits
    (returned, by ``_OPERATION_LIMITS`` key) are filled by ``_read_operation_limits`` after the connect.

    A Read a faulty server answers with fewer results than nodes asked (``_read_results``) is read again a node a
    Read, each node answered with nothing then given a Bad status (BadUnexpectedError), the others their values;
    a Read of one node so answered raises ``ua.UaError`` naming the fault (asyncua raised IndexError, "list index
    out of range", out of a write to a BaseDataType node, and a keep-alive of the server's state and clock so
    answered had the source reconnect at each check). Each such answer is told to ``on_fault`` (what to say).

    asyncua sends whatever it is given in one call: reading a PLC's structure types asks for the
    DataTypeDefinition of every type at once (48 nodes on a server with two UDTs), so a server stating
    MaxNodesPerRead 10 refused the whole read and no structure was ever decoded. A server that states no
    limit and still refuses a call with BadTooManyOperations gets it again in halves (the size it took is
    kept for the session); a call of one item so refused is raised as before (a busy server's answer)."""
    session = client.uaclient.session
    limits: dict[str, int] = {}
    # the items a CreateMonitoredItems answer gave to an item asked, by subscription id, until a delete names them:
    # an answer giving one of them to another item is counted
    given: dict[int, set[int]] = {}

    async def split(kind: str, items: list, call: Callable[[list], Any]) -> list:
        most = limits.get(kind, 0)
        if most and len(items) > most:
            out: list = []
            for i in range(0, len(items), most):
                out += await split(kind, items[i : i + most], call)
            return out
        try:
            got = list(await call(items))
            return (
                await _read_results(items, got, call, on_fault)
                if kind == "read"
                else more_taken(kind, items, got)
            )
        except ua.UaStatusCodeError as e:
            if code_of(e.code) != ua.StatusCodes.BadTooManyOperations or len(items) < 2:
                raise
        limits[kind] = (len(items) + 1) // 2
        log.info(
            "opcua: the server refused a %s of %d items (BadTooManyOperations) and states no lower limit: "
            "sent in parts of %d",
            kind,
            len(items),
            limits[kind],
        )
        return await split(kind, items, call)

    def more_taken(kind: str, items: list, got: list) -> list:
        # a call a faulty server answers with more results than items: asyncua pairs them with the items by index (a
        # CreateMonitoredItems raised IndexError, and the source's connect failed at every try); the first as many as
        # items are taken (Part 4 orders them as asked), as for a Read, and the answer counted
        if len(got) <= len(items):
            return got
        # items a CreateMonitoredItems answer names past those asked are left on the server, not deleted: which item an
        # id a faulty answer names is cannot be told (an earlier answer's item, one another call's answer gives later),
        # and each way of telling left a case where a tag's live item was deleted, the tag silent, the source connected
        left = {
            r.MonitoredItemId
            for r in got[len(items) :]
            if isinstance(r, ua.MonitoredItemCreateResult) and r.StatusCode.is_good()
        }
        if on_fault is not None:
            why = (
                f"the server answered a {_CALLS.get(kind, kind)} of {len(items)} item(s) with {len(got)} result(s) (a "
                f"server fault); the first {len(items)} taken"
            )
            if left:
                on_fault(
                    why + f", {len(left)} item(s) it named past those left on the server", left=len(left)
                )
            else:
                on_fault(why)
        return got[: len(items)]

    def by_params(kind: str, name: str, field: str) -> None:
        call = getattr(session, name, None)
        if call is None:  # another asyncua layout: calls go whole, as asyncua sends them
            return

        async def sent(params: Any) -> list:
            async def noted(part: Any) -> list:
                got = list(await call(part))
                if name == "delete_monitored_items":
                    given.get(part.SubscriptionId, set()).difference_update(getattr(part, field))
                elif name == "create_monitored_items":
                    asked = getattr(part, field)
                    taken = given.setdefault(part.SubscriptionId, set())
                    ids = [r.MonitoredItemId for r in got[: len(asked)] if r.StatusCode.is_good()]
                    if on_fault is not None and (twice := sorted(taken.intersection(ids) | _repeated(ids))):
                        on_fault(
                            f"the server answered a CreateMonitoredItems with item id(s) {twice[:3]} it gave another "
                            "item (a server fault); no item is deleted by such an id"
                        )
                    taken.update(ids)
                return got

            if len(getattr(params, field)) < 2 and kind != "read":  # a write: nothing to split
                got = more_taken(kind, list(getattr(params, field)), await noted(params))
            else:
                got = await split(
                    kind,
                    list(getattr(params, field)),
                    lambda part: noted(dataclasses.replace(params, **{field: part})),
                )
            return got

        setattr(session, name, sent)

    by_params("read", "read", "NodesToRead")
    by_params("write", "write", "NodesToWrite")
    by_params("browse", "browse", "NodesToBrowse")
    by_params("monitor", "create_monitored_items", "ItemsToCreate")
    # MaxMonitoredItemsPerCall bounds deleting them too (Part 5, OperationLimitsType): a refused watch's items
    by_params("monitor", "delete_monitored_items", "MonitoredItemIds")
    delete_subscriptions = getattr(session, "delete_subscriptions", None)
    if delete_subscriptions is not None:

        async def subscriptions_deleted(ids: list[int]) -> list:
            # their items with them: a server may give a new subscription the id again, and its items the ids again
            got = await delete_subscriptions(ids)
            for i in ids:
                given.pop(i, None)
            return got

        session.delete_subscriptions = subscriptions_deleted  # type: ignore[method-assign,assignment]
    read_attributes = getattr(session, "read_attributes", None)
    if read_attributes is not None:

        async def read_attributes_bounded(nodeids: list, attr: Any) -> list:
            return await split("read", list(nodeids), lambda part: read_attributes(part, attr))

        session.read_attributes = read_attributes_bounded  # type: ignore[method-assign]
    translate = getattr(session, "translate_browsepaths_to_nodeids", None)
    if translate is not None:

        async def translate_bounded(paths: list) -> list:
            return await split("translate", list(paths), translate)

        session.translate_browsepaths_to_nodeids = translate_bounded  # type: ignore[method-assign,assignment]
    session._operation_limits = limits  # type: ignore[attr-defined]
    return limits


def _repeated(ids: list[int]) -> set[int]:
    """The ids ``ids`` holds more than once."""
    seen: set[int] = set()
    twice: set[int] = set()
    for i in ids:
        (twice if i in seen else seen).add(i)
    return twice


def _forget_unanswered(
    into: Subscription, nodes: list[Node], attr: ua.AttributeIds = ua.AttributeIds.Value
) -> set[int] | None:
    """asyncua's registration (by client handle) of the items of ``nodes`` a faulty server's CreateMonitoredItems
    answer left out forgotten. The server's id of such an item is unknown, so it cannot be deleted: the server still
    sends its values under the handle, which asyncua gave to its node's tag beside the item made again (each value
    twice); forgotten, they are dropped (asyncua says "unknown handle", once: ``_UnknownHandleOnce``). asyncua has no
    public call for it: its ``Subscription._monitored_items`` (asyncua 1.1 to 2.1) is used, and another layout is said
    (a WARNING, once), not passed over; tests/unit/test_opcua_asyncua_layout.py fails on an asyncua without it. Only
    the items of ``attr`` (the attribute that answer was asked for): another attribute's item of the node, asked for
    meanwhile and not answered yet, is not the server's fault. The client handles forgotten; None: that layout is not
    there."""
    kept = getattr(into, "_monitored_items", None)
    if not isinstance(kept, dict) or not all(
        hasattr(data, "server_handle") and hasattr(data, "node") for data in kept.values()
    ):
        _layout_unknown()
        return None
    ids = {n.nodeid for n in nodes}
    forgotten = set()
    for handle, data in list(kept.items()):
        if (
            data.server_handle is None
            and getattr(data.node, "nodeid", None) in ids
            and getattr(data, "attribute", attr) == attr
        ):
            del kept[handle]
            forgotten.add(handle)
    return forgotten


def _forget_item(into: Subscription, nodeid: ua.NodeId, item_id: int) -> None:
    """asyncua's registration of ``nodeid``'s Value item ``item_id`` forgotten (``_forget_unanswered``'s layout): the
    values the server sends under its client handle are dropped."""
    kept = getattr(into, "_monitored_items", {})
    for handle, data in list(kept.items()):
        if (
            data.server_handle == item_id
            and getattr(data.node, "nodeid", None) == nodeid
            and getattr(data, "attribute", None) == ua.AttributeIds.Value
        ):
            del kept[handle]


@functools.cache
def _layout_unknown() -> None:
    """Said once a process: this asyncua keeps a subscription's items otherwise than ``_forget_unanswered`` reads."""
    log.warning(
        "opcua: this asyncua (%s) keeps a subscription's monitored items otherwise than versions 1.1 to 2.1 "
        "(Subscription._monitored_items): an item a faulty server made but left out of its CreateMonitoredItems "
        "answer cannot be forgotten, and its tag may get each value twice; report it with the asyncua version",
        _asyncua_version(),
    )


def _asyncua_version() -> str:
    """The installed asyncua's version, as its package states it."""
    from importlib import metadata

    try:
        return metadata.version("asyncua")
    except metadata.PackageNotFoundError:
        return "version unknown"


def _forget_named(
    into: Subscription,
    results: list,
    nodes: Collection[ua.NodeId],
    attrs: Collection[int] = (ua.AttributeIds.Value,),
) -> int:
    """asyncua's registration of the items of ``nodes``' ``attrs`` that a faulty server's CreateMonitoredItems answer
    named (the item ids among ``results``) forgotten, the items themselves left on the server (their values dropped,
    ``_UnknownHandleOnce``); how many ids it named. Not deleted: which item an id such an answer names is cannot be
    told, and a delete by it took a tag's item (another call's, still waiting for its answer), the tag silent, the
    source connected."""
    named = {r for r in results if isinstance(r, int) and not isinstance(r, bool)}
    kept = getattr(into, "_monitored_items", {})
    for handle, data in list(kept.items()):
        if (
            data.server_handle in named
            and getattr(data.node, "nodeid", None) in nodes
            and getattr(data, "attribute", None) in attrs
        ):
            del kept[handle]
    return len(named)


async def _delete_named(
    into: Subscription,
    results: list,
    nodes: Collection[ua.NodeId],
    attrs: Collection[int] = (ua.AttributeIds.Value,),
) -> int:
    """The monitored items a CreateMonitoredItems answer of the right count for ``nodes``' ``attrs`` made (the item ids
    among ``results``) given back (``OpcUaSource._watch_targets``, a refusal of some): deleted, a failure to delete
    them ignored, but for an id asyncua holds for an item of another node or attribute too (a server answering with an
    earlier answer again, the tags' ids named in the watch's answer, had that item deleted with them, a tag's, and
    the tag got no value again, the source connected); 0. While another item of ``into`` waits for its answer (a
    tag's made again after a download), none is deleted, as none a faulty answer made is (``_forget_named``): which
    item an id is cannot be told then, and the answer naming the waiting item's id had it deleted, the tag silent,
    the source connected; asyncua's registrations of them are forgotten, the items left on the server until the
    subscription ends, and how many returned."""
    if any(data.server_handle is None for data in getattr(into, "_monitored_items", {}).values()):
        return _forget_named(into, results, nodes, attrs)
    others = _held_elsewhere(into, nodes, attrs)
    made = [r for r in results if isinstance(r, int) and not isinstance(r, bool) and r not in others]
    if made:
        with contextlib.suppress(ua.UaError, TimeoutError):
            await into.unsubscribe(made)
    return 0


def _held_elsewhere(
    into: Subscription, nodes: Collection[ua.NodeId], attrs: Collection[int]
) -> set[int | None]:
    """The item ids asyncua holds for an item of ``into`` of another node than ``nodes`` or attribute than ``attrs``:
    a faulty server may have given one of them to one of those too (its previous answer again), and a delete by it
    takes that other item."""
    return {
        data.server_handle
        for data in getattr(into, "_monitored_items", {}).values()
        if getattr(data.node, "nodeid", None) not in nodes or getattr(data, "attribute", None) not in attrs
    }


async def _read_results(
    items: list, got: list, call: Callable[[list], Any], on_fault: Callable[[str], None] | None
) -> list:
    """``got``, a Read's answer for ``items`` (ReadValueIds, or NodeIds), one result each (``_split_operations``):
    the first of a faulty server's more (Part 4 orders them as asked), counted as fewer are (the extras were dropped
    unsaid); fewer, which node's is missing cannot be told, so each is read again alone, one answered with nothing
    given BadUnexpectedError; a Read of one node so answered, or none of whose nodes is answered alone, is raised."""
    if len(got) == len(items):
        return got
    shown = ", ".join(_shown(getattr(i, "NodeId", i).to_string()) for i in items[:3]) + (
        ", ..." if len(items) > 3 else ""
    )
    why = f"the server answered a Read of {len(items)} node(s) ({shown}) with {len(got)} result(s) (a server fault)"
    if len(got) > len(items):
        if on_fault is not None:
            on_fault(f"{why}; the first {len(items)} taken")
        return got[: len(items)]
    if on_fault is not None:
        on_fault(why + ("; each read again alone" if len(items) > 1 else ""))
    if len(items) == 1:
        raise ua.UaError(why)
    out, answered = [], False
    for item in items:
        alone = list(await call([item]))
        answered = answered or bool(alone)
        if not alone:
            if on_fault is not None:
                on_fault(
                    f"the server answered a Read of {_shown(getattr(item, 'NodeId', item).to_string())} alone with no result"
                )
            alone = [ua.DataValue(StatusCode=ua.StatusCode(ua.UInt32(ua.StatusCodes.BadUnexpectedError)))]
        out.append(alone[0])
    if not answered:  # nothing of it: a fault of the whole Read (retried where its caller retries)
        raise ua.UaError(why + "; read again a node a Read, none was answered")
    return out


async def _read_operation_limits(client: Client, timeout_s: float) -> bool:
    """The server's stated OperationLimits, by which ``_split_operations`` splits this client's calls (one
    Read; a server without them, or one that does not answer in time, states none: a refused call is then
    split as it comes). False: the server did not answer the Read within ``timeout_s``."""
    limits = getattr(client.uaclient.session, "_operation_limits", None)
    if limits is None:
        return True
    try:
        async with _time_limit(timeout_s):
            got = await client.uaclient.session.read_attributes(
                [client.get_node(i).nodeid for i in _OPERATION_LIMITS.values()], ua.AttributeIds.Value
            )
    except ua.UaError:
        return True
    except TimeoutError:
        return False
    for kind, dv in zip(_OPERATION_LIMITS, got, strict=False):
        v = dv.Value.Value if dv.Value is not None and _is_good(dv.StatusCode) else None
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            limits[kind] = min(limits.get(kind) or v, v)
    return True


def _too_large(size: int, settings: OpcUaSettings) -> str:
    return (
        f"a message from the server would reach {size} bytes, over max_message_bytes "
        f"{settings.max_message_bytes}: the connection was closed. A node's value (an array?) or a browse "
        "answer is larger than the source takes; raise max_message_bytes or leave the node out"
    )


# how long the close of a one-off session waits for a server that has just left a request of it unanswered (it made
# the session and then stalled): one that answers closes in milliseconds; validate --online waited
# connect_timeout_s more for the close, then as much again for the endpoint list (up to ~3x connect_timeout_s)
SILENT_CLOSE_S = 1.0


def _stalled(settings: OpcUaSettings) -> str:
    return (
        f"the server made the session and then gave no answer within {settings.connect_timeout_s}s: busy or "
        "hung; check the server and run this again"
    )


async def _one_off_client(
    settings: OpcUaSettings, what: str, stall_ends: bool = False
) -> tuple[Client, list[int]]:
    """A connected client for one request (validate --online, browse), and the size of a message its
    connection was closed for (``[0]`` while none); ``OpcUaError`` when it cannot connect, or (``stall_ends``)
    when the server leaves its first Read (the OperationLimits) unanswered and then a read of its clock
    (``_still_answers``): every further request would wait as long."""
    oversize = [0]
    made = False  # the server made the session: it answered on this security, so its endpoints need no probe
    try:
        # making it may refuse (a key not the certificate's) or ask the server (its endpoint list, when
        # the server certificate is not pinned): a policy it lacks ended validate --online in a traceback
        client = await _make_client(settings, lambda size: oversize.__setitem__(0, size))
        connected = False
        try:
            async with _time_limit(settings.connect_timeout_s):
                await client.connect()
            connected = True
            # one unanswered request is not a hung server: only when its clock goes unanswered too
            # (``_still_answers``); a PLC that leaves only the optional OperationLimits Read unanswered is used
            if (
                not await _read_operation_limits(client, settings.connect_timeout_s)
                and stall_ends
                and not await _still_answers(client, settings)
            ):
                raise TimeoutError
        except BaseException:
            # closed however the attempt ends: a server that accepts the connection and never answers (or
            # answers its Hello and then nothing) ends it at the timeout, a cancellation asyncua's own cleanup
            # (``except Exception``) lets through, and its connection was left open, one more at every call. A
            # session the server created but did not activate in time is closed too: the PLC kept it (one of
            # its few) until its session timeout; the close is given SILENT_CLOSE_S, the server just left a
            # request unanswered
            made = connected or bool(getattr(client.uaclient, "has_session", False))
            await _close_one_off(client, min(settings.connect_timeout_s, SILENT_CLOSE_S) if made else 0.0)
            raise
    except Exception as e:
        reason, why = _explain(e, settings)
        if oversize[0]:
            why = _too_large(oversize[0], settings)
        elif made and isinstance(e, TimeoutError):
            why = _stalled(settings)
        # as the source says it: a policy or mode the server lacks, a certificate other than the pinned one
        elif not made and (
            reason in ("timeout", "connect")
            or (reason == "certificate" and settings.server_certificate_file and not isinstance(e, _Refused))
        ):
            probed = await _security_not_offered(settings)
            if probed is not None:
                why = probed[1]
        raise OpcUaError(f"{what} {mask_credentials(settings.endpoint)}: {why}") from None
    return client, oversize


def _session_token(client: Client) -> ua.NodeId | None:
    """The AuthenticationToken of ``client``'s session (None before CreateSession was answered)."""
    token = getattr(getattr(client.uaclient, "session", None), "authentication_token", None)
    return token if isinstance(token, ua.NodeId) and not token.is_null() else None


def _token_key(token: ua.NodeId | None) -> str:
    return token.to_string() if token is not None else ""


def _reset_on_close(client: Client) -> None:
    """Have ``client``'s connection reset when it is closed (SO_LINGER 0), not ended in order: the requests the
    gateway's kernel still holds for it are dropped. After a link loss they wait there unacknowledged (a write
    that timed out, its retries, the session's reads), and an orderly close keeps retransmitting them: when the
    link came back the server applied them, within the session it still held, after the values written since
    on the next session (measured in a network namespace with its loopback down for 4 s: a pulse's high value,
    counted superseded, reached the PLC 2.3 s after its reset, the reject gate left open)."""
    protocol = getattr(client.uaclient, "protocol", None)
    transport = getattr(protocol, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _close_one_off(client: Client, timeout_s: float) -> None:
    """Close ``client``'s session, channel and connection, waiting at most ``timeout_s`` for the server (0: it
    has no session, the connection alone is closed); the connection is closed whatever the server answers. A
    cancellation (the source's stop) while it waits is passed on, the connection closed first: it was taken for
    the server's silence, and the caller got an ``OpcUaError`` instead, its stop waiting on a task still running."""
    try:
        if timeout_s > 0:
            with contextlib.suppress(Exception):  # TimeoutError among them
                async with _time_limit(timeout_s):
                    await client.disconnect()
    finally:
        with contextlib.suppress(Exception):
            client.disconnect_socket()


# asyncua (2.x) probes the server's state every ``watchdog_intervall`` (1 s) with a timeout of as much, and
# on one late answer tears the connection down: a PLC busy for a second (a long browse or type load ahead in
# its queue, a scan-time peak) cut the source's session, and a one-off check's. The source's own check
# (``_watch``: every keepalive_check_s, bounded by connect_timeout_s) decides; asyncua's waits an hour.
ASYNCUA_PROBE_S = 3600.0


async def _make_client(
    settings: OpcUaSettings,
    on_oversize: Callable[[int], None] | None = None,
    on_fault: Callable[..., None] | None = None,
) -> Client:
    client = Client(settings.endpoint, timeout=settings.connect_timeout_s, watchdog_intervall=ASYNCUA_PROBE_S)
    # asyncua asks for an hour: a session left behind by a cut connection (a switch restarted, a cable) then
    # held one of the PLC's few sessions for an hour, and a link that flapped a few times within it used
    # them all up, after which the PLC refused this source (and every other client) a session
    client.session_timeout = round(settings.session_timeout * 1000)
    _bound_messages(client, settings.max_message_bytes, on_oversize)
    _split_operations(client, on_fault)
    if settings.username:
        client.set_user(settings.username)
        if settings.password is not None:
            client.set_password(settings.password.get_secret_value())
    if settings.security_mode is not SecurityMode.NONE:
        assert settings.certificate_file and settings.private_key_file
        _secured_by(client, *_key_of_certificate(settings))
        uri = _app_uri_of(settings.certificate_file)
        if uri:
            client.application_uri = uri
        mode = (
            ua.MessageSecurityMode.Sign
            if settings.security_mode is SecurityMode.SIGN
            else ua.MessageSecurityMode.SignAndEncrypt
        )
        policy = getattr(security_policies, "SecurityPolicy" + settings.security_policy.replace("_", ""))
        if settings.password is not None and mode is ua.MessageSecurityMode.Sign:
            _no_clear_password(client, settings)
        await client.set_security(
            policy,
            certificate=_by_content(settings.certificate_file),
            private_key=_by_content(settings.private_key_file),
            server_certificate=_by_content(settings.server_certificate_file)
            if settings.server_certificate_file
            else None,
            mode=mode,
        )
    return client


def _by_content(path: str) -> Any:
    """The file for asyncua, its format (PEM or DER) told by its content: asyncua takes a file for PEM only when
    its name ends in ``.pem``, so a PEM key named ``agent.key`` or a certificate ``plc.crt`` (as openssl, PLC tools
    and most guides name them) was read as DER and the source never connected ("connect: ValueError: Could not
    deserialize key data"). A file that cannot be read here is left to asyncua's own error."""
    from asyncua.crypto.uacrypto import CertProperties

    try:
        data = Path(path).read_bytes()
    except OSError:
        return path
    return CertProperties(path, extension="pem" if b"-----BEGIN" in data else "der")


# values that need no conversion (the common case, checked first: this runs for every notification)
_PLAIN = (float, int, bool, str, list, np.ndarray, type(None))
_FLOAT = ua.VariantType.Float  # a 32-bit REAL: read as the PLC shows it (``float32_shown``)
_FLOAT_FIELD = ("ua.Float", "'ua.Float'", ua.Float, "typing.Optional[ua.Float]")  # a structure's REAL member
_MAX_MEMBERS = 1000
_NUMERIC = frozenset(
    ua.VariantType[t]
    for t in ("SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float", "Double")
)  # tags one structure may give: a PLC's array of UDTs can be large

_NULL = ua.VariantType.Null  # a null Variant (passed on BAD, ``null_value``) says nothing of the type
# a source tag's Variant types by family: a change within one (Int32 <-> Int64, Float <-> Double) keeps the
# value's meaning and is not said; any other change is (``_retyped``); a type not listed is its own family
_FAMILY: dict[ua.VariantType, str] = {
    **{t: "integer" for t in _NUMERIC if t not in (ua.VariantType.Float, ua.VariantType.Double)},
    ua.VariantType.Float: "float",
    ua.VariantType.Double: "float",
    ua.VariantType.Boolean: "bool",
    ua.VariantType.String: "string",
    ua.VariantType.LocalizedText: "string",
}


def _is_structure(v: Any) -> bool:
    """A decoded OPC UA structure (asyncua makes a dataclass of each), not one of the built-in types that
    are dataclasses too and have a plain form (``_plain``)."""
    return dataclasses.is_dataclass(v) and not isinstance(v, type) and not isinstance(v, _BUILTIN_FORMS)


_BUILTIN_FORMS = (
    ua.LocalizedText,
    ua.QualifiedName,
    ua.NodeId,
    ua.StatusCode,
    ua.ExtensionObject,
    ua.Variant,
    ua.XmlElement,
    ua.DataValue,
    ua.DiagnosticInfo,
)
_EXACT = 2**53  # the largest whole numbers a float64 holds exactly: past them an integer stays an int


def _numbers(v: list) -> np.ndarray | None:
    """A float64 array of a list (a matrix: of lists) of numbers; None when it holds anything else (text,
    bytes, true/false, None) or a whole number a float64 cannot hold exactly (an Int64/UInt64 id or
    counter past 2**53 stays a list of ints). The type of the first item decides: an OPC UA array holds
    one type, and a waveform's floats pass with one check."""
    first: Any = v
    while type(first) is list and first:
        first = first[0]
    kind = type(first)
    if kind is float:
        try:
            return np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):  # ragged, or not all numbers
            return None
    if kind is int:
        try:
            flat = v if type(v[0]) is not list else np.asarray(v, dtype=object).ravel().tolist()
            if min(flat) < -_EXACT or max(flat) > _EXACT:
                return None
            return np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            return None
    return None


def _plain(v: Any) -> Any:
    """A value a pipeline, a rule or a JSON consumer can use: a text's text, a name's name, a time in ISO
    8601 (with its zone), a NodeId as its string; numbers, truth values, strings and bytes as they are."""
    if isinstance(v, ua.LocalizedText):
        return v.Text
    if isinstance(v, ua.QualifiedName):
        return v.Name
    if isinstance(v, ua.NodeId):
        return v.to_string()
    if isinstance(v, ua.StatusCode):
        return v.name
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(v, ua.Variant | ua.DataValue):  # an element of a Variant[] (BaseDataType) array
        return _plain(v.Value)
    if isinstance(v, ua.XmlElement):
        return v.Value
    if isinstance(v, ua.DiagnosticInfo):
        return str(v)
    if isinstance(v, list):
        numbers = _numbers(v) if v else None
        return numbers if numbers is not None else [_plain(x) for x in v]
    return v


_MAY_BE_NON_FINITE = frozenset((float, np.ndarray, list))


def _holds_non_finite(v: list, depth: int = 0) -> bool:
    """Whether a list (a Variant[]'s plain form: items of any type, arrays among them) holds NaN or infinity."""
    for x in v:
        kind = type(x)
        if kind is float:
            if not math.isfinite(x):
                return True
        elif kind is np.ndarray:
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                return True
        elif kind is list and depth < 8 and _holds_non_finite(x, depth + 1):
            return True
    return False


def _members(tag: str, v: Any, out: list[tuple[str, Any]], depth: int = 0) -> None:
    """A structure's members as ``({tag}/{member}, value)``: nested structures and arrays of them by path
    (``Motor1/Axis/Pos``, ``Drives/0/Speed``), as a Sparkplug Template's are; at most ``_MAX_MEMBERS``."""
    if len(out) >= _MAX_MEMBERS:
        return
    if depth < 8 and isinstance(v, list | tuple) and v and _is_structure(v[0]):
        for i, x in enumerate(v):
            _members(f"{tag}/{i}", x, out, depth + 1)
    elif depth < 8 and _is_structure(v):
        for f in dataclasses.fields(v):
            if f.name != "Encoding":  # asyncua's mask of optional fields, not a member
                x = getattr(v, f.name)
                if type(x) is float and f.type in _FLOAT_FIELD:  # a REAL member as the PLC shows it
                    x = float32_shown(x)
                _members(f"{tag}/{f.name}", x, out, depth + 1)
    elif _null_time(v):  # a member never set
        out.append((tag, None))
    else:
        out.append((tag, _plain(v)))


def _variant_items(v: Any) -> list | None:
    """A Variant[]'s items (a BaseDataType node's array, each item of its own type) unwrapped, when one of them
    is a structure, decoded or not (an ExtensionObject): such a value is read as an array of structures is, each
    item by its index (``_indexed``), never as Python's picture of it. None for any other value."""
    if not (isinstance(v, list) and v and type(v[0]) is ua.Variant):
        return None
    items = [x.Value if isinstance(x, ua.Variant) else x for x in v]
    return items if any(isinstance(x, ua.ExtensionObject) or _is_structure(x) for x in items) else None


def _indexed(tag: str, items: list, out: list[tuple[str, Any]]) -> None:
    """A Variant[]'s items as tags by index: a structure's members by path (``Batch/1/Force``), any other item
    its plain value (``Batch/0``)."""
    for i, x in enumerate(items):
        _members(f"{tag}/{i}", x, out, 1)


class _Handler:
    """asyncua subscription handler: runs on the loop thread, turns notifications into Readings."""

    def __init__(self, source: OpcUaSource) -> None:
        self.src = source

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        src = self.src
        try:
            attr = getattr(data.subscription_data, "attribute", None)
            if attr is not None and attr != ua.AttributeIds.Value:  # a write target's type or access
                status = getattr(data.monitored_item.Value, "StatusCode", None)
                if status is not None and code_of(status) in _NODE_GONE:
                    src._targets_gone.add(node.nodeid)  # a download took it away: its namespace is checked
                    src._targets_back.discard(node.nodeid)
                    src._attrs_gone.setdefault(node.nodeid, set()).add(attr)
                    for node_id in src._target_nodes.get(node.nodeid, ()):
                        # the node made again may take more, or less (a STRING[10] for a STRING[20]: a longer
                        # text was sent, for the PLC to cut or refuse): its type is read at the next write
                        src._types.pop(node_id, None)  # its refusal memory with it (``_type_confirmed``)
                    return
                gone = src._attrs_gone.get(node.nodeid)
                if gone and attr in gone:  # its item said the node served again: linked to it again
                    gone.discard(attr)
                    if not gone:
                        src._targets_back.add(node.nodeid)
                src._target_changed(node.nodeid, attr, val)
                return
            dv = data.monitored_item.Value
            if node.nodeid in src._rates.nodes:  # a waveform's rate node (nodes[].sample_rate_from)
                src._rates.on_change(node.nodeid, val, dv.StatusCode)
            tag = src._tags.get(node.nodeid)
            if tag is not None:  # a rate node may be read as a tag of its own too
                src._on_value(node.nodeid, tag, val, dv)
        except Exception as e:  # never let one notification break asyncua's publish loop
            src.stats.error("notification", repr(e))
            src._burst.log("notification", "opcua source %s: bad notification: %r", src.name, e)

    def status_change_notification(self, status: Any) -> None:
        self.src._lost.set()


_ORDER = {"source": ("source", "server"), "server": ("server",), "receive": ()}


@dataclasses.dataclass(frozen=True)
class _Misread(ua.ExtensionObject):
    """A structure's value whose bytes do not fit the layout its class was made from (``why``): fewer bytes
    than its members need, or bytes left over after them. Kept undecoded, never passed on as members."""

    why: str = ""


# the structure classes OpcUaSources made of their servers' types: their values are decoded with a check of
# the layout (``_checked_structure``); asyncua's decoder took the first bytes of a longer body without a word
# and failed a whole publish (every tag's values in it) on a shorter one
_CHECKED: weakref.WeakSet[type] = weakref.WeakSet()
_asyncua_structure = ua_binary.extensionobject_from_binary


def _checked_structure(data: Any) -> Any:
    """asyncua's ``extensionobject_from_binary``, but a body of a class in ``_CHECKED`` that does not fit its
    layout is a ``_Misread`` holding its bytes (a PLC download changed the layout and the server did not flag
    StructureChanged), not the first bytes read as its members, nor an error that loses the whole message."""
    if not _CHECKED or not isinstance(data, Buffer):
        return _asyncua_structure(data)
    probe = data.copy()
    try:
        typeid = ua_binary.nodeid_from_binary(probe)
        cls = ua.extension_objects_by_typeid.get(typeid)
        if cls is None or cls not in _CHECKED or not ord(probe.read(1)) & 1:
            return _asyncua_structure(data)
        length = ua_binary.Primitives.Int32.unpack(probe)
    except Exception:
        return _asyncua_structure(data)
    if length < 1 or length > len(probe):
        return _asyncua_structure(data)
    raw = ua.ByteString(probe.read(length))
    data.skip(probe.cur_pos - data.cur_pos)
    body = Buffer(raw)
    try:
        got: Any = ua_binary.from_binary(cls, body)
    except Exception as e:
        return _Misread(typeid, raw, f"its {length} bytes end before the members of that layout do ({e})")
    if len(body):
        return _Misread(
            typeid, raw, f"{len(body)} of its {length} bytes are left over after that layout's members"
        )
    return got


def _check_layouts(classes: Iterable[type]) -> None:
    """Decode the values of ``classes`` with a check of their layout: asyncua's decoder replaced by
    ``_checked_structure`` (once, process-wide) and its coders cached per type made again to use it."""
    _CHECKED.update(c for c in classes if isinstance(c, type))  # an older server's loader gives dicts too
    if ua_binary.extensionobject_from_binary is not _checked_structure:
        ua_binary.extensionobject_from_binary = _checked_structure
        for cached in list(vars(ua_binary).values()):
            if callable(getattr(cached, "cache_clear", None)):
                cached.cache_clear()


# asyncua's process-wide tables keyed by a structure's or an enumeration's class (those keyed by node id
# are overwritten by the next load): a class this source made is taken out of them when it loads anew
_CLASS_KEYED: tuple[dict, ...] = tuple(
    getattr(ua.uatypes, t, {})
    for t in (
        "typeid_by_extension_objects",
        "datatype_by_extension_object",
        "enums_datatypes",
        "basetype_datatypes",
    )
)


class OpcUaSource:
    """One OPC UA server session feeding ``Reading`` objects (see module docstring)."""

    def __init__(self, name: str, settings: OpcUaSettings) -> None:
        self.name = name
        self.settings = settings
        self.stats = DeviceStats()
        self.state = ConnectionState.STOPPED
        self._channel = Channel(settings.queue_max_items, self.stats)
        self._burst = BurstLogger(log)
        self._backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
        self._client: Client | None = None
        self._tags: dict[ua.NodeId, str] = {}
        # a matrix node's rows read as tags (nodes[].index): node -> [(tag, index)], and the nodes whose
        # ArrayDimensions attribute says they hold a matrix (read at connect: a server may send its value flat)
        self._picks: dict[ua.NodeId, list[tuple[str, tuple[int, ...]]]] = {}
        self._dims: dict[ua.NodeId, tuple[int, ...]] = {}
        self._rates = StatedRates()  # waveforms' sample rates as the server states them
        self._last_ts: dict[str, float] = {}
        # the wall clock less the time since boot, at the last value (``_now``)
        self._wall_offset: float | None = None
        self._wall_first: float | None = None  # ... at the first value: its steps since (``_skew_hint``)
        # tag -> its last array and quality passed on: a waveform the server sends again (the first value of
        # a subscription made again after a reconnect) is known by its equal source time and samples
        self._last_wave: dict[str, tuple[np.ndarray, Quality]] = {}
        self._changed: set[str] = set()  # tags past their first notification since subscribing
        self._types = _Types()  # node_id -> its type, read at the first write, again after _TYPE_HOLD_S
        # node_id -> (its cached type, when): read again for a value it refused and found unchanged, so a later value
        # it refuses is refused by it without reading it again (a node of 10,000 references cost a whole paged
        # Browse a refusal) while that type object is the one cached (a change noticed replaces it), for
        # _CONFIRMED_HOLD_S at most, until the node is said gone; and what the reads were made for ("agent", "range",
        # "mismatch": only a read made for the agent's own refusal judges a later one without a read, only one made for a
        # BadTypeMismatch a later BadTypeMismatch: one made for a value out of range is no sign that the type is
        # the one cached, and a download that made an INT a DINT within that minute had 40000 refused, naming the INT)
        self._types_confirmed: dict[str, tuple[_NodeType, float, frozenset[str]]] = {}
        # node_id -> (when, why) its properties could not be found out after its Browse was released (_node_type)
        self._props_unread: dict[str, tuple[float, str]] = {}
        self._forms: dict[str, int] = {}  # node_id -> the form of write its server takes (_FORMS)
        # a node (its NodeId as resolved, so one lock however the config writes it) -> the lock its writes take,
        # from the type decision to the server's answer: two writes at once to a node that holds nothing yet
        # would each read it so and send its own kind (an Int32, a Double)
        self._write_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._resolved: dict[str, str] = {}  # configured node id (nsu=...) -> ns=<index>;...
        # (when, (reason, why)) of the last endpoint-list probe
        self._probed: tuple[float, tuple[str, str] | None] = (-1e9, None)
        self._write_targets: list[tuple[str, Any]] = []
        # how the refusal of a target's value is said by the one who knows where it came from (``expect_writes``: a
        # write value a gateway variable gives, named with its variable and place): each write target's note (``expect_writes``), in the targets' order, and by the place that writes it
        self._target_notes: list[tuple[Callable[[str, OpcUaTypeMismatch], str] | None, str | None]] = []
        self._write_notes: dict[str, Callable[[str, OpcUaTypeMismatch], str]] = {}
        # told each verdict of a write target's check (``add_target_listener``): node_id, value, why (None: fine),
        # and whether the node itself fails (missing, read-only, not a variable) rather than the value
        self._target_listeners: list[Callable[[str, Any, str | None, bool, str | None], None]] = []
        self.target_errors: dict[str, str] = {}  # node_id -> why writes to it will fail
        self._targets_where: str | None = None  # the file of the places that write (``expect_writes``)
        # the targets found failing at the last connect's check (or a re-check since), each with why (one per value
        # checked): one failing for the same reason at every connect is one standing condition, counted and said
        # once, not again at each reconnect; a new reason is said and counted (``_check_targets``)
        self._targets_said: dict[str, set[str]] = {}
        # write targets' nodes watched for a change of their type or access (``_watch_targets``): node ->
        # its node_id(s) as configured, and each node_id's last stated UserAccessLevel and pending re-check
        self._target_nodes: dict[ua.NodeId, list[str]] = {}
        self._target_access: dict[str, bool] = {}
        # write target node_id -> how often the watch saw the server let this session write it again (its
        # UserAccessLevel regained CurrentWrite: a PLC back from a mode that locked it): an output whose level
        # was refused meanwhile writes it then (``ActionRunner``), not only at its next change
        self.writable_again: dict[str, int] = {}
        self._target_checks: dict[str, asyncio.Task] = {}
        # a write target's node_id -> whether it is judged once more quietly (``_recheck``): a change came while
        # its check ran, which may have read the node before it
        self._recheck_again: dict[str, bool] = {}
        # a BaseDataType write target's node_id -> when the value it holds was last read (``write_misfit``)
        self._held_at: dict[str, float] = {}
        # BaseDataType write targets whose held value was asked for while a read of it ran (``_reheld``): read once
        # more after that one, which may have been answered before the PLC retyped the node
        self._reheld_again: set[str] = set()
        # unwatched write targets whose attributes the Read before a write found unchanged: (the session, when asked)
        self._pre_checked: dict[str, tuple[object, float]] = {}
        # ... -> (monotonic time of the last change of what it holds seen by a re-read, changes not said since)
        self._held_changes: dict[str, tuple[float, int]] = {}
        # a source tag -> the Variant type its last value came in (kept across connects: a PLC download that
        # retypes a node also drops the session), and -> (monotonic time of its last change of family, changes
        # not said since) (``_retyped``, notice ``type_changed``)
        self._vtypes: dict[str, ua.VariantType] = {}
        self._type_changes: dict[str, tuple[float, int]] = {}
        self.targets_watched = 0  # monitored items watching the write targets (3 a node the server took)
        self._items_full = False  # a tag was refused a monitored item for want of room (``_server_full``)
        self.heartbeats = 0
        self._heartbeat_uncertain_said = False  # a heartbeat the server answered Uncertain was logged
        # why the watchdog output must stand still now (None: written): set by the agent, so that a PLC's watchdog
        # falls back to its safe state while outputs this source writes are fed by a pipeline judging nothing
        self.heartbeat_hold: Callable[[], str | None] | None = None
        self._hb_held: tuple[str, str, float] | None = None  # (node, why, since) while the heartbeat is held
        self._task: asyncio.Task | None = None
        self._first_attempt = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        # node_id (as the config lists it) -> why it is not subscribed, as found at the last connect (``/status``)
        self.node_errors: dict[str, str] = {}
        # the node_errors keys counted and said since they last got values, each with why (``_node_failing``): a
        # node failing for the same reason at every connect is one standing condition, counted and said once, not
        # again at each reconnect; a new reason (a timeout, then BadNodeIdUnknown after a download) is said again
        self._nodes_said: dict[str, str] = {}
        self._nodes_logged = 0  # nodes that started failing at this connect, each said in a line of its own
        self._nodes_unsaid = 0  # and those past NODE_ERRORS_LOGGED, said in one line with their count
        self._connected_once = False
        self._oversize = 0  # bytes a message would have reached when the connection was closed
        self.notices = Notices(log)  # routine or silent events, said once and counted (``/status``)
        # structure nodes waiting for their type definitions: node -> (tag, the value's encoding id)
        self._undecoded: dict[ua.NodeId, tuple[str, ua.NodeId]] = {}
        self._types_wanted = asyncio.Event()
        self._types_loaded = False
        self._types_failed: str | None = None  # why the last read of the server's types failed
        self._structured = False  # a structure came on an earlier connection: its types are read first
        # a value came flagged StructureChanged: until the types are read again, a structure decoded (by the
        # former layout: one the same publish brought after it) is not passed on but read again then
        self._relayout = False
        self._type_classes: dict[str, Any] = {}  # the classes asyncua made of the types this source read
        self._types_at = -math.inf  # monotonic time the server's types were last read
        # a structure node's last ask to read the types again (StructureChanged, or bytes that did not fit)
        self._relayout_at: dict[ua.NodeId, float] = {}
        # nodes whose bytes did not fit their layout and had the types read again for it since their last good
        # value: a value that still does not fit is skipped and counted (``_misread``)
        self._misread_nodes: set[ua.NodeId] = set()
        self._semantics_at: dict[str, float] = {}  # a write target's type last read for SemanticsChanged
        self._semantics_later: dict[str, asyncio.TimerHandle] = {}  # and read once more after that bound
        self._sub: Subscription | None = None
        self._ns_pinned: dict[int, str] = {}  # the server's namespace URIs by index at the first connect
        self._ns_array: list[str | None] = []  # and at this connect (None: an index without a URI)
        self._ns_seen: set[int] = set()  # pinned indexes this process saw hold their pinned URI
        self._ns_changed = False  # the namespace array changed within the session (``_namespaces_moved``)
        # write targets the server said are gone within the session: the array is read before each write to one,
        # until a check passes after its watch said it is served again (``_targets_back``)
        self._targets_gone: set[ua.NodeId] = set()
        self._targets_back: set[ua.NodeId] = set()
        self._attrs_gone: dict[
            ua.NodeId, set[Any]
        ] = {}  # a target's watched attributes said gone, not yet back
        # where the pins outlive the process (the agent's data folder): pinned at the first start, compared at
        # each later one; None: pinned at this process's first connect
        self.namespace_pins: NamespacePins | None = None
        # pins taken on from an earlier source (``follow_namespaces``), not yet kept by ``namespace_pins``
        self._followed_unkept = False
        self._sub_since = 0.0  # monotonic time the subscription was created
        self._sub_silence_s = 0.0  # no publish answer for longer than this: the subscription is stalled
        # the longest lifetime the server granted a subscription of this session (RevisedLifetimeCount publishing
        # intervals, in seconds): a cut leaves it on a PLC that keeps it past the session (``_subs_left``)
        self._sub_life_s = 0.0
        # the server's ServerStatus.CurrentTime at the last check and the gateway's monotonic time it was
        # first read so (``_watch``), all of this session's: a server replaced (restarted, another endpoint)
        # is judged on its own clock. A clock is held to standing still only once its update period is known
        # (two changes seen), and only for well past that period: a server whose clock never moves, or moves
        # every 10 s (some PLCs), is never called frozen for it
        self._clock: tuple[Any, float] | None = None
        self._clock_moves = False  # seen to change in this session
        self._clock_moved_at: float | None = None  # monotonic time of the last change seen
        # the last intervals seen between two changes, this session, and the longest of them: a stall the
        # clock once came back from (a PLC busy for a while) is forgotten after _CLOCK_GAPS changes, so it
        # does not widen the limit for the rest of a session that may last months
        self._clock_gaps: deque[float] = deque(maxlen=_CLOCK_GAPS)
        self._clock_period_s = 0.0
        self._clock_sampling_s = 0.0  # the node's MinimumSamplingInterval, when it states one
        # this session's clock was seen standing still while values changed (a broken clock, not a halted
        # server: its ServerStatus thread died or the node is cached): not judged again in the session
        self._clock_broken = False
        # tag -> its last value in this session, and the monotonic time a value was last seen to change:
        # values that change are evidence the server is alive whatever its clock says (``_value_changed``)
        self._session_values: dict[str, Any] = {}
        self._changed_at: float | None = None
        self.halts = 0  # times the server said (state, clock) its values were not current: readings BAD
        # the reason of the last halt (server_not_running, server_clock_frozen) until the server shows it
        # healthy by the same check; meanwhile the backoff is not reset and readings are held (``_hold``)
        self._halt_reason: str | None = None
        self._halt_since: float | None = None  # epoch time the server was first found halted (``halted``)
        self._halt_mono = 0.0  # ... and monotonic: how long it lasts, whatever the wall clock does meanwhile
        self._halt_checks = 0  # checks since that found it still halted
        # a silent server's new subscriptions (the main one and ``_apart``'s) -> the first publish seen of each
        self._stall_publish: dict[Subscription, float] = {}
        self._held: deque[Reading] = deque()
        # tag -> (the time of the BAD reading a halt gave it, or of the last reading stamped after it; whether one
        # was), until a reading the server dates later passes
        self._bad_at: dict[str, tuple[float, bool]] = {}
        # tags given a BAD reading for a lost connection with nothing of theirs passed on since: not again at the
        # next loss (a server that accepts the session and drops it again at once, over and over)
        self._lost_marked: set[str] = set()
        # the value ``_on_value`` hands over followed values the server's queue dropped (``Reading.lost_before``)
        self._overflowing = False
        self._held_n: dict[str, int] = {}  # tag -> its readings in ``_held``
        # tag -> its latest reading pushed out of a full ``_held``: passed on first if none of its tag is
        # left there, so a tag that changed once (a state, a setpoint) among a chatty tag's values is not BAD
        # until it changes again, long after the server is healthy
        self._held_out: dict[str, Reading] = {}
        # a write-only source's watch found no room for its subscription: asked again at each check
        self._room_wanted = False
        # the subscriptions each session of this source left on the server (the link cut, not closed), by its
        # AuthenticationToken: how many, and the monotonic time the server drops them (its session timeout). They
        # count in its CurrentSubscriptionCount until then, or until that session is closed (``_close_left``), and
        # are not another client's (``_left_subs``). One count for every session: the first left session closed
        # forgot them all, another still left and its subscription counted as another client's
        self._subs_left: dict[str, tuple[int, float]] = {}
        # the sessions (each its AuthenticationToken, last ServerNonce, the server's user token policies, and the
        # monotonic time the server drops it: its timeout) of connections this source closed on a message over
        # max_message_bytes or whose close went unanswered (a dead link): each closed on the server at the next
        # connect (``_close_left``), tried again at each connect until its timeout. Several: a close that timed
        # out keeps its session while the next session is cut, and one slot forgot that one (held beside the next)
        self._left_sessions: list[tuple[ua.NodeId, bytes | None, list, float]] = []
        # node id -> what the server granted its monitored item, when far from what was asked (said once)
        self.revised: dict[str, str] = {}
        self.overflows: dict[str, int] = {}  # tag -> values the server said it dropped from its queue
        self._axis_reads: dict[str, asyncio.Task] = {}  # tag -> its XAxisDefinition being read again
        # node -> (its monitored item's id, sampling_interval_ms, queue_size) in this subscription
        self._items: dict[ua.NodeId, tuple[int | None, float, int]] = {}
        # a Publish answer over max_message_bytes while no node's value alone was: the next connect reads each
        # node's value on its own (``_measure``) and gives the largest their own subscriptions (``_apart``)
        self._measure_wanted = False
        self._measuring: str | None = None  # the node id whose value is being read for its size
        self._apart: dict[ua.NodeId, int] = {}  # node -> its value's size, subscribed on its own
        self._too_big: dict[str, int] = {}  # node id -> the size its value alone reached (not subscribed)
        self._listed_as: dict[ua.NodeId, str] = {}  # a subscribed node -> its node id as the config lists it
        self._extra_subs: list[Subscription] = []  # the subscriptions of ``_apart``
        # monitored items a faulty answer made, left on the server (``_left_on_server``), and whether that was said
        self.items_left_on_server = 0
        self._left_said = False
        self._refit_pause = 0.0  # the pause before a node of ``_too_big`` is read again (``_refit``)
        # node id of ``_too_big`` -> sessions its read again on them closed (still too large, ``_refit_here``)
        # since the PLC last dropped a session on its own: at REFIT_HERE_MAX it is read on its own connection only
        self._refit_closes: dict[str, int] = {}
        self._refit_now = False  # one fits again: the session is closed to subscribe it
        self._item_sub: dict[ua.NodeId, Subscription] = {}  # a node's subscription, when not ``_sub``
        # a subscription of ``_apart`` -> (monotonic time it was made, the silence it promised at most): watched
        # for a stall as ``_sub`` is (``_stalled_sub``)
        self._apart_watch: dict[Subscription, tuple[float, float]] = {}
        self._gone: dict[ua.NodeId, asyncio.Task] = {}  # nodes the server said are gone, subscribed again
        self._back: set[ua.NodeId] = set()  # ... and good again on their old items
        self._gone_pause: dict[ua.NodeId, float] = {}  # node -> the pause before its item is made again
        self._publishing_said: str | None = None
        self._explicit_tags = {n.tag for n in settings.nodes if n.tag}
        self._tag_owners: dict[
            str, str
        ] = {}  # a browse name taken as a tag -> the node id that has it  # the server's publishing interval, when far from asked

    def _on_oversize(self, size: int) -> None:
        self._oversize = size
        self._lost.set()

    def _server_fault(self, why: str, left: int = 0) -> None:
        """A faulty answer of the server's that the session works around (``_split_operations``: a Read answered with
        fewer results than nodes asked; ``_subscribe_alone``), counted and said once (notice ``read_results_missing``);
        ``left``: the monitored items it made and the source left on the server (``_left_on_server``)."""
        self.notices.note("read_results_missing", "opcua source %s: %s", self.name, why)
        self._left_on_server(left)

    def _left_on_server(self, n: int) -> None:
        """``n`` monitored items a faulty CreateMonitoredItems answer made (named past those asked, named for items
        made again, left out of it) left on the server, not deleted: which item such an id is cannot be told, and
        deleting by it took tags' live items. Each holds one of the PLC's monitored items until the subscription ends
        (a reconnect) and sends its node's values: dropped where asyncua forgot its handle, twice to a tag whose
        handle the server gave it. Counted (``items_left_on_server``), said
        once a source as a WARNING naming the PLC."""
        if n <= 0:
            return
        self.items_left_on_server += n
        if not self._left_said:
            self._left_said = True
            log.warning(
                "opcua source %s: the PLC at %s answered a CreateMonitoredItems wrongly (a server fault): %d monitored "
                "item(s) it made are left on it, not deleted, until the subscription ends: they hold room on the PLC, "
                "and one the PLC gave a tag's client handle sends that tag each value twice; report it to the PLC's "
                "vendor",
                self.name,
                self.settings.endpoint,
                n,
            )

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._channel.bind(asyncio.get_running_loop())
        self._task = asyncio.create_task(self._run(), name=f"opcua-{self.name}")
        await self._first_attempt.wait()

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._task is None:
            return
        self._stopping = True
        task, self._task = self._task, None
        task.cancel()
        for gone in [*self._gone.values(), *self._target_checks.values()]:
            gone.cancel()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except (TimeoutError, asyncio.CancelledError, Exception):
            pass
        await self._close_client(timeout_s)
        self.state = ConnectionState.STOPPED
        self._channel.close()

    async def items(self):
        async for item in self._channel:
            yield item

    @property
    def backoff_attempts(self) -> int:
        """Reconnect pauses taken since the backoff was last reset (0: the next pause is the shortest). A
        halted server keeps it growing until it shows it is healthy again."""
        return self._backoff.attempts

    @property
    def clock_period_s(self) -> float | None:
        """The longest of the last intervals (``_CLOCK_GAPS``) seen between two changes of the server's clock
        (ServerStatus.CurrentTime) in this session; None until two changes were seen (a clock is not judged
        frozen before)."""
        return self._clock_period_s or None

    @property
    def server_certificate(self) -> bytes | None:
        """The certificate (DER; a chain as the server gave it) the server gave the session now at its CreateSession,
        whatever the security mode; None before a session, or where the server gives none. It tells one server from
        another of the same make, whose ApplicationUri may be one default for all."""
        cert = getattr(getattr(self._client, "security_policy", None), "peer_certificate", None)
        return cert if isinstance(cert, bytes) and cert else None

    @property
    def peer_address(self) -> tuple[str, int] | None:
        """The address and port the session's connection reached (its socket's peer: the address a host name led to
        when it connected); None without a connection."""
        proto = getattr(getattr(self._client, "uaclient", None), "protocol", None)
        transport = getattr(proto, "transport", None)
        peer = transport.get_extra_info("peername") if transport is not None else None
        return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None

    # -- background task --------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._sessions()
        finally:
            self._first_attempt.set()  # start() never waits on a task that has ended

    async def _sessions(self) -> None:
        while not self._stopping:
            up = False  # this attempt's session was made: its loss, not a refused connect
            try:
                try:
                    self.state = ConnectionState.CONNECTING
                    # each step bounded on its own: a slow node does not fail the session
                    await self._connect()
                    self.state = ConnectionState.CONNECTED
                    up = True
                    # the pause starts again from its shortest at the session's first healthy check (``_watch``),
                    # not here: a server that takes each session and drops it at once (each drop a BAD reading per
                    # tag, each reconnect their values again) was reconnected at the shortest pause for good
                    self._first_attempt.set()
                    if self._connected_once:
                        self.stats.reconnects += 1
                    self._connected_once = True
                    log.info(
                        "opcua source %s: connected to %s",
                        self.name,
                        mask_credentials(self.settings.endpoint),
                    )
                    beat = asyncio.create_task(self._heartbeat()) if self.settings.heartbeat else None
                    structs = asyncio.create_task(self._structures())
                    refit = asyncio.create_task(self._refit()) if self._too_big else None
                    try:
                        await self._watch()
                    finally:
                        structs.cancel()
                        if beat is not None:
                            beat.cancel()
                        if refit is not None:
                            refit.cancel()
                    if self._refit_now:  # a node left out fits again: a new session subscribes it, at once
                        self._refit_now = False
                        await self._close_client(1.0)
                        continue
                    if self._ns_changed:
                        self._ns_changed = False
                        raise _Refused(
                            "namespaces",
                            "the server's namespace array changed within the session (a program download "
                            "registered its namespaces in another order), or could not be read when a node it "
                            "took away was back: every node is resolved again by its namespace URI on a new "
                            "session",
                        )
                    raise ConnectionError("connection lost")
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._stopping or task is None or task.cancelling():
                        raise  # stop(): this task cancelled
                    # not a stop: a request's answer and its time limit in one turn of the loop (a loaded
                    # gateway holds the loop past a limit): asyncua's wait_for (Python < 3.12) raises
                    # CancelledWithResultError, a CancelledError that asyncio.timeout does not make a
                    # TimeoutError; taken for a stop, it ended this task for good (start() waited for ever, or
                    # a live source stayed "connected" and read nothing more). The time limit it is
                    raise TimeoutError(
                        "no answer within the time limit (it came as the limit ran out)"
                    ) from None
            except asyncio.CancelledError:
                break
            except Exception as e:
                if not isinstance(e, _Halted) and self._sub is not None and self._client is not None:
                    # the session is not closed cleanly (cut, stalled): its subscription stays on the
                    # server until the session times out (a halt's session is closed below, deleting
                    # it); the timeout the server granted, and a check's time for its own watchdog
                    granted = (self._client.session_timeout or 0) / 1000.0 or self.settings.session_timeout
                    # or rather their own lifetime as granted (``_new_subscription``): it ends them whether the
                    # session lives on or not, and a PLC that keeps a session's subscriptions past its timeout
                    # (OPC UA Part 4) keeps them that long. The longer of the two counted them on past their
                    # lifetime: half a session longer (less two keep-alives) at the lifetime asked
                    left_s = (
                        (self._sub_life_s or granted * 1.5)
                        + self.settings.keepalive_check_s
                        + self.settings.connect_timeout_s
                    )
                    # those past their time pruned first: one entry was added per cut and none went on a
                    # tag-reading source (only its watch prunes), one more for good at every PLC restart
                    self._left_subs()
                    self._subs_left[_token_key(_session_token(self._client))] = (
                        1 + len(self._extra_subs),
                        time.monotonic() + left_s,
                    )
                reason, msg = _explain(e, self.settings)
                refit_close = self._oversize and self._measuring in self._too_big
                if up and not self._oversize and self._refit_closes:
                    # the PLC dropped the session on its own (a restart, a program download, the link): a node
                    # given up on the session is read there again, its value may fit now. Not when this source
                    # closed it, for a value over the limit: another node's that grew was taken for the PLC's
                    # drop, and the given-up node read there again, closing the session REFIT_HERE_MAX times more
                    self._refit_closes.clear()
                if self._oversize:  # the connection was closed here, on a message over the limit
                    reason, msg = "too_large", _too_large(self._oversize, self.settings)
                    if self._client is not None:  # the server keeps its session: closed at the next connect
                        self._keep_left(self._client)
                    if refit_close:
                        self._refit_closed(str(self._measuring))
                    if self._measuring is not None:  # one node's value alone: left out until it fits
                        msg = self._left_out(self._measuring, self._oversize)
                    elif self._sub is not None and self._tags:
                        # the values of several nodes in one Publish answer, or with one monitored item another
                        # read's answer (a write target's value, a type dictionary): which node is not known, so
                        # each is measured alone before one is left out (charged unmeasured to the one item, a
                        # tag of one Double was left out for a write target's 150,000)
                        self._measure_wanted = True
                        msg += (
                            "; the values of several nodes may have come in one Publish answer: the next "
                            "connection reads each node's value on its own and subscribes the largest apart"
                        )
                self._measuring = None
                # a security policy or mode the server does not offer looks like no answer at all; its
                # endpoint list says (read at most once a minute: a server that hangs costs each probe)
                # and a server presenting another certificate than the pinned one cannot read the channel
                # opened for that one's key: no answer, or its refusal (BadSecurityChecksFailed)
                if reason in ("timeout", "connect") or (
                    reason == "certificate"
                    and self.settings.server_certificate_file
                    and not isinstance(e, _Refused)  # found here: its own key, not the server's certificate
                ):
                    if time.monotonic() - self._probed[0] > 60.0:
                        self._probed = (time.monotonic(), await _security_not_offered(self.settings))
                    if self._probed[1] is not None:
                        reason, msg = self._probed[1]
                self.stats.error(reason, msg)
                self._burst.log(f"conn:{reason}", "opcua source %s: %s", self.name, msg)
                # a session lost partway through connecting too: values of its first nodes may have gone out
                # (``_lost_marked`` keeps a refused reconnect, with nothing passed on, from adding anything)
                if not isinstance(e, _Silent) and self._halt_reason is None and not self._stopping:
                    self._connection_lost()  # a stall or a halt made them BAD already, for its own reason
            self.state = ConnectionState.BACKOFF
            self._first_attempt.set()
            await self._close_client(1.0)
            try:
                await asyncio.sleep(self._backoff.next_delay())
            except asyncio.CancelledError:
                break

    async def _close_client(self, timeout_s: float) -> None:
        """Close the session's client, waiting at most ``timeout_s`` for the server. A close the server answered
        (a stop, a halt, a refit on a healthy link) ends the connection in order. A CloseSession left unanswered
        (the link dead, the server silent) resets the connection (``_reset_on_close``): a write still on its way
        is dropped, never applied later, and the CloseSession with it, so the session is closed at the next
        connect (``_close_left``), not left on the PLC until its timeout."""
        client, self._client = self._client, None
        if client is None:
            return
        closed = False  # the server answered the CloseSession
        # a connection ended under the session (reset by a firewall or a NAT, or closed by the server's side):
        # asyncua's close_session then returns without a word, nothing sent, and the session was taken for
        # closed while a PLC keeps it until its timeout, one more at every such cut. Closed at the next connect
        # (``_close_left``; a server that ended it itself, restarting, answers BadSessionIdInvalid: no cost)
        protocol = getattr(client.uaclient, "protocol", None)
        dropped = protocol is None or bool(getattr(protocol, "is_closed", False))
        token = _session_token(client)
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    await client.close_session()
                    closed = not dropped
                except ua.UaStatusCodeError:
                    closed = True  # answered: the server had ended the session already
                except Exception:
                    pass
                if closed:
                    await client.close_secure_channel()
        except (Exception, asyncio.CancelledError):
            pass
        if closed:  # CloseSession deletes its subscriptions: none left by it (``_subs_left``)
            self._subs_left.pop(_token_key(token), None)
        else:
            _reset_on_close(client)
            self._keep_left(client)
        try:
            client.disconnect_socket()
        except Exception:
            try:  # the transport may already be gone; drop what is left without waiting
                client.uaclient.protocol and client.uaclient.protocol.transport.close()  # type: ignore[union-attr]
            except Exception:
                pass

    async def _connect(self) -> None:
        self._lost.clear()
        self._ns_changed = False
        self._targets_gone.clear()
        self._targets_back.clear()
        self._attrs_gone.clear()
        self._clock, self._clock_moves, self._clock_moved_at = None, False, None
        self._clock_period_s = self._clock_sampling_s = 0.0
        self._clock_gaps.clear()
        self._clock_broken = False
        self._session_values.clear()
        self._changed_at = None
        self._stall_publish.clear()
        if self._halt_reason is not None:  # its held waveforms dropped below were never passed on
            self._last_wave.clear()
        self._unhold()  # a former session's values: stale, whatever this one shows
        self._room_wanted = False
        self._oversize = 0
        self._sub = None
        self._sub_life_s = 0.0
        self._extra_subs.clear()
        self._item_sub.clear()
        self._apart_watch.clear()
        self._items.clear()
        for task in self._gone.values():
            task.cancel()
        self._gone.clear()
        self._back.clear()
        self._gone_pause.clear()
        self._undecoded.clear()
        self._types_wanted.clear()
        self._relayout = False
        self._relayout_at.clear()
        self._misread_nodes.clear()
        for timer in self._semantics_later.values():
            timer.cancel()
        self._semantics_later.clear()
        for task in self._target_checks.values():
            task.cancel()
        self._target_checks.clear()
        self._recheck_again.clear()
        self._reheld_again.clear()
        self._target_nodes.clear()
        self._target_access.clear()
        self.targets_watched = 0
        self._items_full = False
        self._types_loaded = False  # a PLC's program may have been changed while the session was away
        self._types_failed = None
        # a Hello unanswered within LEFT_HELLO_S gives way to the reconnect: it waited connect_timeout_s before
        # each attempt while the link was dead (or the PLC hung), and a PLC back meanwhile got the source only then
        await self._close_left_session(min(LEFT_HELLO_S, self.settings.connect_timeout_s))
        client = await _make_client(self.settings, self._on_oversize, self._server_fault)
        self._client = client
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s * 2):
                await client.connect()
        except ua.UaStatusCodeError:
            # an answer (BadTooManySessions: the left session may hold the PLC's last one): the PLC is reached
            await self._close_left_session(self.settings.connect_timeout_s)
            raise
        # a close that gave way above, closed now that the PLC answers: else it was held until its timeout (it
        # was tried at the next connect only, and a connect that succeeded had none)
        await self._close_left_session(self.settings.connect_timeout_s)
        await _read_operation_limits(client, self.settings.connect_timeout_s)
        self._tags.clear()
        self._listed_as.clear()
        self._picks.clear()
        self._dims.clear()
        self._rates.clear()
        self._types.clear()
        self._types_confirmed.clear()
        self._pre_checked.clear()  # (a former session's held none: each names its session)
        self._props_unread.clear()
        self._forms.clear()
        # unread: the indexes are taken as they are written, unless some were pinned
        self._ns_array, unread = await _namespaces(client, self.settings.connect_timeout_s)
        kept = None
        if self.namespace_pins is not None:
            # the pins are the server's, not the endpoint text's: a config naming the PLC by another endpoint
            # (localhost for 127.0.0.1, a DNS name) pinned afresh, in a reordered array's order
            self.namespace_pins.server, why = await _server_uri(client, self.settings.connect_timeout_s)
            kept, refused = await self._pins_decided(self.namespace_pins, why, unread)
            if refused:
                raise _Refused(
                    "namespaces",
                    f"nothing is read or written on this connection (tried again with the backoff): {refused}",
                )
        elif unread and self._ns_pinned:
            raise _Refused(
                "namespaces",
                f"the server's namespace array could not be read ({unread}), so its ns= indexes cannot be "
                "checked against the namespace URIs pinned for them: nothing is read or written on this "
                "connection; tried again with the backoff. Should the server no longer serve it (this user's "
                "access to Server/NamespaceArray), restart the agent (its indexes are then taken as written)",
            )
        if not self._ns_pinned:
            self._ns_pinned = await self._pins_kept(kept)
        elif self._followed_unkept:
            await self._keep_followed()
        array = self._ns_array
        self._ns_seen.update(i for i, uri in self._ns_pinned.items() if i < len(array) and array[i] == uri)
        groups: dict[tuple[float, int], list[Node]] = {}
        rate_nodes: dict[ua.NodeId, tuple[float, Node]] = {}  # waveforms' rate nodes (sample_rate_from)
        self._resolved.clear()
        # judged afresh at each connect: a node added to the PLC since (a program download) is no longer named
        # failing on /status, where it stayed for good while its values came
        self._say_nodes_unsaid()  # of a connect that ended before its nodes were all judged
        self.node_errors.clear()
        silent = 0  # consecutive nodes without an answer: past a few, the session is gone, not the nodes
        for ns in self.settings.nodes:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    node = client.get_node(await self._resolve(client, ns.node_id))
                    tag = ns.tag or self._default_tag(ns.node_id, (await node.read_browse_name()).Name)
                silent = 0
            except TimeoutError:
                silent += 1
                if silent >= 3:
                    raise
                self._node_error(
                    ns.node_id,
                    f"the server gave no answer for this node within "
                    f"{self.settings.connect_timeout_s}s; the other nodes are subscribed",
                )
                continue
            except OpcUaNodeError as e:
                self._node_error(ns.node_id, str(e))
                continue
            except Exception as e:
                self._node_error(ns.node_id, e)
                continue
            if ns.node_id in self._too_big:  # said and counted once, when it closed a connection
                self.node_errors[ns.node_id] = (
                    f"node {ns.node_id!r} is not subscribed: its value alone reached {self._too_big[ns.node_id]} "
                    f"bytes, over max_message_bytes {self.settings.max_message_bytes}; it is read again now and "
                    "then and subscribed once it fits: raise max_message_bytes or leave the node out"
                    + self._given_up(ns.node_id)
                )
                continue
            prior = self._tags.get(node.nodeid)
            if prior is not None and (
                ns.index is None or all(t != prior for t, _ in self._picks.get(node.nodeid, ()))
            ):  # the same node under another id (nsu=... and ns=...): one tag would never get its values
                self._node_error(
                    ns.node_id,
                    f"it is the node tag {prior!r} reads, listed before under another node id; list a node "
                    "once, or once per row of a matrix, each with its index",
                )
                continue
            if ns.index is not None:
                index = (ns.index,) if isinstance(ns.index, int) else tuple(ns.index)
                self._picks.setdefault(node.nodeid, []).append((tag, index))
            if node.nodeid not in self._tags:  # another row of a matrix listed before: one monitored item
                self._tags[node.nodeid] = tag
                self._listed_as[node.nodeid] = ns.node_id
                groups.setdefault((ns.sampling_interval_ms, ns.queue_size), []).append(node)
            if ns.sample_rate_from:
                await self._stated_rate(client, ns, tag, node, rate_nodes)
        if self._tags:
            await self._read_dims(client)
        # one monitored item per rate node, none for one subscribed as a tag already: its notifications
        # state the rate of every waveform that names it (a second item would give each value twice)
        for nodeid, (sampling_ms, rate_node) in rate_nodes.items():
            if nodeid not in self._tags:
                groups.setdefault((sampling_ms, 1), []).append(rate_node)
        if groups and self._measure_wanted:
            await self._measure(client, groups)
        if groups:
            if self._structured:  # before the values come: the PLC's program (a layout) may have changed
                await self._load_types(client)
            async with asyncio.timeout(self.settings.connect_timeout_s * 2 + len(self._tags) * 0.1):
                await self._subscribe(client, groups)
        # every node judged: one that gets values now is counted and said again if it fails later
        self._nodes_said = {k: why for k, why in self._nodes_said.items() if k in self.node_errors}
        self._say_nodes_unsaid()
        if self._write_targets or self.settings.heartbeat:
            await self._check_targets(client)
            await self._watch_targets(client)

    def _keep_left(self, client: Client) -> None:
        """Keep the session of ``client``, whose connection ends without its close answered, to close it on the
        server at the next connect (``_close_left_session``), until the timeout the server granted it: past it
        the server has dropped it anyway. At most LEFT_SESSIONS_MAX, the one the server drops first given up."""
        token = _session_token(client)
        if token is None:
            return
        now = time.monotonic()
        granted = (client.session_timeout or 0) / 1000.0 or self.settings.session_timeout
        kept = [left for left in self._left_sessions if left[3] > now and left[0] != token]
        kept.append(
            (
                token,
                getattr(client, "_server_nonce", None),
                list(getattr(client, "_policy_ids", None) or ()),
                now + granted,
            )
        )
        kept.sort(key=lambda left: left[3])
        self._left_sessions = kept[-LEFT_SESSIONS_MAX:]

    async def _close_left_session(self, hello_s: float) -> None:
        """Close the sessions left on the server (``_close_left``), if any, oldest first; each kept for the next
        try when the server was not reached, until the session's own timeout. The server not reached for one
        (the link still down, a PLC that does not answer the Hello) is not tried for the rest this time."""
        while self._left_sessions:
            left = self._left_sessions.pop(0)
            if left[3] <= time.monotonic():
                continue  # the server has dropped it
            closed = False
            try:
                closed = await self._close_left(*left[:3], hello_s=hello_s)
            finally:
                # the server not reached (the link still down), or the close cut short (a stop): at the next try
                if not closed and time.monotonic() < left[3]:
                    self._left_sessions.insert(0, left)
            if not closed:
                return

    async def _close_left(
        self, token: ua.NodeId, nonce: bytes | None, policies: list, hello_s: float | None = None
    ) -> bool:
        """Close the session a connection closed here on a message over max_message_bytes, or reset on a close
        left unanswered (``_close_client``), left on the server (ActivateSession with its token on a channel of its own, then CloseSession deleting its subscriptions,
        OPC UA Part 4, 6.7): the server kept it until its timeout (``session_timeout_s``, 60 s), and a PLC that
        allows few sessions refused the next one that long (measured on asyncua's server allowing one session,
        a 10 s timeout: 11 s without values, 27 sessions refused; now 0.5 s and none). About 3 ms, and a
        connection without a session for that long; a server that ended the session itself (BadSessionIdInvalid)
        or refuses costs nothing more: the timeout ends the session then. False: the server was not reached (no
        connection, or no answer within ``connect_timeout_s``, or to the Hello within ``hello_s``)."""
        try:
            client = await _make_client(self.settings)
            # closed however the attempt ends: a PLC that accepts the connection and never answers its Hello
            # ends it at the timeout, a cancellation asyncua's own cleanup (``except Exception``) lets through,
            # and its connection was left open, one more at every such cut
            try:
                # _time_limit: an answer in the same turn of the loop as the limit (a loaded gateway) raised
                # CancelledWithResultError through ``except Exception`` below, and the session was forgotten
                # while the PLC kept it (its ActivateSession answered, its CloseSession never sent)
                async with _time_limit(hello_s or self.settings.connect_timeout_s):
                    await client.connect_socket()
                    await client.send_hello()
                async with _time_limit(self.settings.connect_timeout_s):
                    await client.open_secure_channel()
                    client.uaclient.session.restore_authentication_token(token)
                    # the session's last nonce (its signature in Sign modes is over it), and the user token
                    # policies its CreateSession answer listed (the identity is given as then)
                    client._server_nonce = nonce  # type: ignore[assignment]
                    client._policy_ids = policies
                    password = self.settings.password
                    await client.activate_session(
                        username=self.settings.username,
                        password=password.get_secret_value() if password is not None else None,
                        certificate=client.user_certificate,
                    )
                    await client.uaclient.close_session(True)
                    with contextlib.suppress(Exception):
                        await client.close_secure_channel()
            finally:
                client.disconnect_socket()
        except Exception as e:
            log.debug(
                "opcua source %s: the session left by the connection closed was not closed: %r", self.name, e
            )
            # answered with an error, its entry in _subs_left kept until its time: BadSessionIdInvalid comes from
            # a PLC that restarted, and from one that holds the session but takes no activation of it on another
            # channel (its subscription counted until that session times out)
            return not isinstance(e, (TimeoutError, OSError))
        self._subs_left.pop(_token_key(token), None)  # its subscriptions are gone with it (the others' stay)
        log.debug("opcua source %s: the session left by the connection closed is closed", self.name)
        return True

    async def _read_dims(self, client: Client) -> None:
        """The ArrayDimensions of the subscribed nodes, in one Read: a node whose attribute says it holds a
        matrix ([3, 1024]) while its server sends the value flat (without the Variant's own dimensions) is
        still read as a matrix, never as one waveform of its rows end to end. A server that cannot answer
        leaves only the values' own dimensions to go by."""
        ids = list(self._tags)
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                got = await client.uaclient.read_attributes(ids, ua.AttributeIds.ArrayDimensions)
        except (ua.UaError, TimeoutError) as e:
            log.info(
                "opcua source %s: ArrayDimensions not read (%r); values' own dimensions are used",
                self.name,
                e,
            )
            return
        for nodeid, dv in zip(ids, got, strict=False):
            d = dv.Value.Value if dv.Value is not None and _is_good(dv.StatusCode) else None
            if isinstance(d, list) and len(d) > 1 and all(type(x) is int and x > 0 for x in d):
                self._dims[nodeid] = tuple(d)

    def _default_tag(self, node_id: str, browse: str) -> str:
        """The tag of a node configured without one: its browse name, or its node id when another node of
        this source has that name (``_claim_tag``), said once per node (notice ``tag_taken``). Who holds a
        name is kept across connects, so a node missing at one connect does not hand its tag to another."""
        browse = valid_text(browse)  # as _claim_tag names the tag: U+FFFD for each byte that is no UTF-8
        tag = _claim_tag(node_id, browse, self._explicit_tags, self._tag_owners)
        if tag != browse:
            self.notices.note(
                "tag_taken",
                "opcua source %s: node %s has the browse name %r, which is already the tag of %s: its readings "
                "are tagged %r so that the two are never mixed; give it a tag of its own (nodes[].tag)",
                self.name,
                node_id,
                browse,
                "a configured node" if browse in self._explicit_tags else self._tag_owners[browse],
                tag,
            )
        return tag

    async def _stated_rate(self, client: Client, ns, tag: str, node: Node, rate_nodes: dict) -> None:
        """Read the rate the server states for a waveform node (its rate node, into ``rate_nodes``, is
        subscribed with it)."""
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                rate_node = await self._rates.setup(client, ns.sample_rate_from, tag, node, self._resolve)
        except (RateError, ua.UaError, OpcUaNodeError, TimeoutError) as e:
            msg = (
                f"node {ns.node_id!r}: sample_rate_from {ns.sample_rate_from!r} gives no rate ({e}); its "
                "readings carry none, so the pipeline uses window.sample_rate_hz (or the model's rate)"
            )
            self._node_failing(f"{ns.node_id} sample_rate_from", msg, "sample_rate")
            return
        if rate_node is not None:
            rate_nodes.setdefault(rate_node.nodeid, (ns.sampling_interval_ms, rate_node))

    def namespaces_followed(self) -> tuple[dict[int, str], frozenset[int]]:
        """What this source's ``ns=`` indexes mean (the URIs pinned, the indexes seen holding them), for a source
        of the same settings and write targets that replaces it within the process (``follow_namespaces``)."""
        return dict(self._ns_pinned), frozenset(self._ns_seen)

    def follow_namespaces(self, pinned: dict[int, str], seen: frozenset[int]) -> None:
        """Take on what the namespace indexes meant to a source this one replaces within the process (a config
        reload) with the same settings and write targets: the config still means what it meant there, so a
        reorder that source followed is followed here too. Made afresh, its first connect compared with the kept
        pins as a start does and refused every ``ns=`` node of the moved indexes until the config changed."""
        if pinned and not self._ns_pinned:
            self._ns_pinned, self._ns_seen = dict(pinned), set(seen)
            self._followed_unkept = True

    async def _keep_followed(self) -> None:
        """Keep the pins taken on (``follow_namespaces``) where ``namespace_pins`` keeps none for this source's
        endpoint: a trial config in between that pointed the source at the same PLC by another name pinned it
        afresh, in the new order, for that name (or, not naming the source, dropped its entry); the next start of
        this config then pinned afresh too and read the other namespace's node of a moved index, GOOD. Pins kept
        for this endpoint are left as they are, and so are pins forgotten by ``edge-agent namespaces --accept`` (a
        reload between the accept and the restart kept the old order again: the restart refused as before)."""
        self._followed_unkept = False
        store = self.namespace_pins
        if store is None:
            return
        pinned = self._ns_pinned

        def keep() -> None:
            if store.load(strict=True) is None and not store.forgotten():
                store.save(pinned)

        try:  # in a thread: the file's lock may be held by a command beside the agent (``_held``: up to 1 s)
            await asyncio.to_thread(keep)
        except OSError as e:
            log.warning(
                "opcua source %s: the namespaces this config means could not be kept (%s): a start after this "
                "process cannot tell a reorder; write node ids as nsu=<uri>;...",
                self.name,
                e,
            )

    async def _pins_decided(
        self, pins: NamespacePins, why_uri: str | None, unread: str | None
    ) -> tuple[dict[int, str] | None, str | None]:
        """``_pins_refusal`` for this connect (the namespaces ``pins`` kept, None: none; why the connect is
        refused); a connect is refused while they cannot be read now (too many open files, an I/O error): taken as
        none kept, the indexes went unchecked after a reorder."""
        try:  # a failure that will not pass (its access) is none kept: pinned afresh, as before
            # in a thread: a read that adopts or names an entry writes the file, under its lock (``_held``)
            return await asyncio.to_thread(
                _pins_refusal,
                pins,
                why_uri,
                self._ns_array,
                unread,
                self._ns_used(),
                bool(self._ns_pinned),
            )
        except OSError as e:
            raise _Refused(
                "namespaces",
                f"the namespaces kept for this server could not be read ({e}), so its ns= indexes cannot be "
                "checked against them: nothing is read or written on this connection; tried again with the backoff",
            ) from None

    def _ns_used(self) -> frozenset[int]:
        """The namespace indexes the config's ``ns=`` node ids name (its nodes, write targets, heartbeat)."""
        return _ns_used(self.settings, [t for t, _ in self._write_targets])

    async def _pins_kept(self, kept: dict[int, str] | None) -> dict[int, str]:
        """The namespace URIs by index that the config's ``ns=`` indexes mean: ``kept``, those ``namespace_pins``
        kept (an earlier start's: ``_pins_decided``), with the indexes this connect's array adds; this array's
        without a store, or at the first start (then kept). Empty while the array could not be read (pinned at a
        later connect)."""
        here = {i: uri for i, uri in enumerate(self._ns_array) if i and uri is not None}
        store = self.namespace_pins
        if store is None or not here:
            return here
        pins = {**here, **(kept or {})}
        if pins != kept:
            try:
                await asyncio.to_thread(store.save, pins)
            except OSError as e:
                log.warning(
                    "opcua source %s: the server's namespaces could not be kept (%s): a start after the PLC "
                    "registers them in another order cannot tell; write node ids as nsu=<uri>;...",
                    self.name,
                    e,
                )
        return pins

    async def _resolve(self, client: Client, node_id: str) -> str:
        """A configured node id as this connection names it: ``nsu=`` by the namespace array, and
        ``ns=<index>`` moved with its URI when the array was reordered since the first connect."""
        accept = self.namespace_pins.accept if self.namespace_pins is not None else ""
        moved = _repin(node_id, self._ns_pinned, self._ns_array, self._ns_seen, accept)
        if moved == node_id:
            return await _resolve_node_id(client, node_id)
        self.notices.note(
            "namespace_moved",
            "opcua source %s: node %s: the server's namespace array changed since the first connect (a "
            "PLC restart or program download): its namespace %s is now read as %s; write the node as "
            "nsu=<namespace uri>;... so that the index never matters",
            self.name,
            node_id,
            self._ns_pinned.get(int(_NS.match(node_id.strip()).group(1))),  # type: ignore[union-attr]
            moved,
        )
        return moved

    def _on_value(self, nodeid: ua.NodeId, tag: str, val: Any, dv: Any) -> None:
        """One node's new value (a notification, or a read after the structures' types were loaded) as
        readings: one, or one per member of a structure (a Siemens UDT, a Beckhoff STRUCT) or an array
        of them."""
        status = getattr(dv, "StatusCode", None)
        self._overflowing = False
        if status is not None and status.value & (_OVERFLOW | _SEMANTICS_CHANGED | _STRUCTURE_CHANGED):
            if status.value & _OVERFLOW == _OVERFLOW:
                self._overflowed(tag)
                self._overflowing = True  # this value's readings carry ``lost_before`` (``_emit``)
            if status.value & _STRUCTURE_CHANGED and self._layout_changed(nodeid, tag, val):
                return
            if status.value & _SEMANTICS_CHANGED and self._write_targets:
                self._target_semantics(nodeid)
            if status.value & _SEMANTICS_CHANGED and tag in self._rates.span_s:
                self._axis_changed(nodeid, tag)
            elif status.value & _SEMANTICS_CHANGED and tag not in self._axis_reads:
                self.notices.note(
                    "semantics_changed",
                    "opcua source %s: tag %s: the server flagged its metadata changed (SemanticsChanged: its "
                    "EngineeringUnits, EURange or EnumStrings, after a PLC download or a sensor's new setting); "
                    "its values are passed on as before, so a model or rule made for the former unit or range "
                    "may misjudge them: check the node (edge-agent browse) and what uses the tag",
                    self.name,
                    tag,
                    cause=tag,
                )
        if status is not None and code_of(status) in _NODE_GONE:
            self._node_gone(nodeid, tag, status)
        elif self._gone and nodeid in self._gone and (status is None or status.value < 0x40000000):
            self._back.add(nodeid)  # good again on the old item: it need not be made again
        vt = dv.Value.VariantType if dv.Value is not None else None
        if vt is not self._vtypes.get(tag) and vt is not None and vt is not _NULL:
            self._retyped(nodeid, tag, vt)
        null = "a null Variant"  # what a value of None is, as said when it is passed as BAD
        if isinstance(val, list):
            if not val:  # an empty array of numbers is an empty float64 array, as a full one is
                val = np.empty(0) if dv.Value is not None and dv.Value.VariantType in _NUMERIC else []
            elif (numbers := _numbers(val)) is not None:
                val = numbers  # a waveform: float64
                dims = dv.Value.Dimensions if dv.Value is not None else None
                # (NodeId hashing costs ~1 µs: looked up only when some node of the source is a matrix)
                if (dims and len(dims) > 1) or (
                    (self._picks or self._dims) and (nodeid in self._picks or nodeid in self._dims)
                ):
                    return self._matrix(nodeid, tag, val, dims, dv)
            elif isinstance(val[0], ua.ExtensionObject) or _is_structure(val[0]):
                return self._structure(nodeid, tag, val, dv)
            elif (items := _variant_items(val)) is not None:  # a Variant[] holding a structure
                return self._structure(nodeid, tag, items, dv, indexed=True)
            else:
                val = _plain(val)  # texts, bytes, true/false, times, big whole numbers stay a list
        elif type(val) is float:
            if dv.Value is not None and dv.Value.VariantType is _FLOAT:  # a REAL as the PLC shows it
                val = float32_shown(val)
        elif not isinstance(val, _PLAIN):
            if isinstance(val, ua.ExtensionObject) or _is_structure(val):
                return self._structure(nodeid, tag, val, dv)
            if _null_time(val):
                # a PLC's time never set is no time, as a source timestamp of it is taken as absent (``_epoch``)
                null = "a DateTime of 1601-01-01, OPC UA's null time: never set"
                val = None
            else:
                val = _plain(val)
        now = self._now()
        quality, reason = _quality(dv.StatusCode)
        self._emit(
            tag,
            val,
            self._timestamp(tag, dv, now),
            now,
            quality,
            self._rates.rate_for(tag, val),
            reason,
            null,
        )

    def _retyped(self, nodeid: ua.NodeId, tag: str, vt: ua.VariantType) -> None:
        """A source tag's value came in another Variant type than the one before (``vt``). Another family
        (a REAL in °C made an INT in tenths by a PLC download: Double -> Int16; a number made a text or a
        Boolean) is said as a WARNING naming the tag, the node and both types, once per spell: a tag that
        changes again within ``HELD_QUIET_S`` of its last change is counted (notice ``type_changed``), not
        said, as a write target's ``held_type_changes`` are. The value is passed on either way: the server
        sends what the node now holds, and dropping it would blind every rule on the tag. A change within a
        family (Int32 <-> Int64, Float <-> Double: a server or gateway widening on its own) keeps the value's
        meaning and scale, so it is kept quietly."""
        former = self._vtypes.get(tag)
        self._vtypes[tag] = vt
        if former is None or _FAMILY.get(former, former.name) == _FAMILY.get(vt, vt.name):
            return
        now = time.monotonic()
        last, unsaid = self._type_changes.get(tag, (-math.inf, 0))
        spell = now - last >= HELD_QUIET_S  # the first change after holding one type this long: said
        self._type_changes[tag] = (now, 0 if spell else unsaid + 1)
        msg = (
            f"opcua source {self.name}: tag {tag} (node {nodeid.to_string()}) changed type: its values now come "
            f"as {vt.name}, before as {former.name} (a PLC download retyping the node: a REAL in degrees made "
            "an INT in tenths); they are passed on as they come, so a rule or model made for the former type's "
            "unit or scaling may misjudge them: check the node (edge-agent browse) and what uses the tag"
            + (
                f" (after {unsaid} change(s) within {HELD_QUIET_S:.0f}s of each other, counted in notice "
                "type_changed, not said)"
                if spell and unsaid
                else f"; further changes within {HELD_QUIET_S:.0f}s are counted (notice type_changed), not said"
            )
        )
        # each tag's first message is kept for /status (the first MAX_CAUSES tags), with how many tags changed type:
        # the notice showed the first tag's alone, whatever the download had retyped
        self.notices.note("type_changed", "%s", msg, level=None, cause=tag, causes=len(self._type_changes))
        if spell:  # the first change of a spell, of each tag, is said
            log.warning("%s", msg)

    def _matrix(self, nodeid: ua.NodeId, tag: str, val: np.ndarray, dims: Any, dv: Any) -> None:
        """A numeric array with more than one dimension (a tri-axial sensor's [3, 1024], an image-like
        matrix), by the Variant's own dimensions or else the node's ArrayDimensions attribute: the rows the
        config picks (``nodes[].index``) as their tags' readings. Never passed on flattened (three axes end
        to end as one waveform): without an index, with one that does not fit, or with dimensions the value
        does not fill, the value is skipped, counted (``multi_dim``) and said once per burst, naming the
        node, its dimensions and the fix. A shape with one dimension over 1 ([1, 1024]) is a waveform."""
        own = bool(dims) and len(dims) > 1
        shape = tuple(dims) if own else self._dims.get(nodeid)
        if shape is not None and math.prod(shape) != val.size:
            if own:  # the value contradicts itself
                shown = "x".join(map(str, shape))
                return self._not_shaped(
                    nodeid, tag, f"holds {val.size} values, not the {shown} its dimensions say"
                )
            shape = None  # the node's attribute does not describe this value: taken as it comes
        if shape is not None and sum(n > 1 for n in shape) <= 1:
            shape = None  # [1, 1024]: one row, a waveform as it is
        picks = self._picks.get(nodeid)
        now = self._now()
        ts, (q, why) = self._timestamp(tag, dv, now), _quality(dv.StatusCode)
        if picks is None:
            if shape is None:
                val = val.ravel() if val.ndim > 1 else val  # [1, 1024] as it is: one row
                return self._emit(tag, val, ts, now, q, self._rates.rate_for(tag, val), why)
            shown = "x".join(map(str, shape))
            return self._not_shaped(
                nodeid,
                tag,
                f"holds a {shown} array (ArrayDimensions {list(shape)}), which would be read as one waveform "
                "of its rows end to end; pick a row with nodes[].index (list the node once per row, each with "
                "its index and tag)",
            )
        for ptag, index in picks:
            if shape is None:
                self._not_shaped(
                    nodeid,
                    ptag,
                    f"has index {list(index)} but its value has one dimension ({val.size} values)",
                )
            elif len(index) != len(shape) - 1 or any(i >= n for i, n in zip(index, shape, strict=False)):
                self._not_shaped(
                    nodeid,
                    ptag,
                    f"index {list(index)} does not pick a row of its {'x'.join(map(str, shape))} array; give "
                    f"{len(shape) - 1} index(es), each under its dimension",
                )
            else:
                row = val.reshape(shape)[index].copy()
                self._emit(ptag, row, ts, now, q, self._rates.rate_for(ptag, row), why)

    def _not_shaped(self, nodeid: ua.NodeId, tag: str, why: str) -> None:
        msg = f"node {nodeid.to_string()} (tag {tag}) {why}; its values are skipped"
        self.stats.error("multi_dim", msg)
        self._burst.log(f"md:{tag}", "opcua source %s: %s", self.name, msg)

    def _node_gone(self, nodeid: ua.NodeId, tag: str, status: ua.StatusCode) -> None:
        """The server says the node is gone (BadNodeIdUnknown: a TwinCAT or Codesys program download, a
        Kepware project reload took it away). A server need not link the monitored item to the node made
        again under the same id, so the tag stayed Bad (or silent) until the agent reconnected: the item
        is made again, after 0.5 s and then a pause doubling up to 30 s, until the server takes it (its
        first value comes then) or a good value shows the server linked the old one again."""
        if nodeid in self._gone or self._sub is None or nodeid not in self._items:
            return
        self.notices.note(
            "node_gone",
            "opcua source %s: node %s (tag %s) is gone from the server (%s: a PLC program download or a "
            "project reload); its monitored item is made again until the node is back",
            self.name,
            nodeid.to_string(),
            tag,
            code_name(status),
        )
        for node_id in dict.fromkeys(n for n, _ in self._write_targets):
            # by the NodeId, not its text: a GUID written in capitals, ``i=05``, spaces, named the node but not
            # as ``to_string`` does, and the type read before the download judged the next write
            if _names_node(self._resolved.get(node_id), nodeid):
                # a write target read as a tag (its own watch off, or no room for it): made again, it may take
                # less (a STRING[10] for a STRING[20]) or more: its type is read at the next write
                self._types.pop(node_id, None)  # its refusal memory with it (``_type_confirmed``)
        self._back.discard(nodeid)
        self._gone[nodeid] = asyncio.get_running_loop().create_task(self._subscribe_again(nodeid))

    async def _namespaces_moved(self, client: Client) -> bool:
        """Whether the server's namespace array, read now, moved an index this session resolved by (a download
        the session outlived registered the namespaces anew in another order: a node id resolved at connect,
        ns=2, names another namespace's node now). Then the session is ended (``_ns_changed``): a new one
        resolves every node by its URI. A namespace added at the end moves none; an array that cannot be read
        now (Bad, empty: a PLC mid-download serving its nodes first) tells nothing and counts as moved, as the
        connect refuses it: taken as unmoved, the node back under its old index was read, GOOD, and written."""
        if not self._ns_array:
            return False  # the session took its indexes as written
        now, unread = await _namespaces(client, self.settings.connect_timeout_s)
        if not unread and now[: len(self._ns_array)] == self._ns_array:
            return False
        self._ns_changed = True
        self._lost.set()
        return True

    async def _subscribe_again(self, nodeid: ua.NodeId) -> None:
        # the pause grows over the session, not per loss: a server that says a node it has is gone would
        # otherwise have its item made again twice a second for good
        pause = self._gone_pause.get(nodeid, 0.5)
        main, client = self._sub, self._client
        sub = self._item_sub.get(nodeid, main)  # its own subscription when its value is large (``_apart``)
        try:
            while sub is not None and client is not None and main is not None and main is self._sub:
                await asyncio.sleep(pause)
                pause = self._gone_pause[nodeid] = min(pause * 2, 30.0)
                handle, sampling_ms, queue_size = self._items[nodeid]
                if nodeid in self._back:
                    return  # the server linked the item to the node again: good values come
                if await self._namespaces_moved(client):
                    return  # made again by its old index, another namespace's node was read as this tag, GOOD
                try:
                    async with asyncio.timeout(self.settings.connect_timeout_s):
                        if handle is not None:
                            self._items[nodeid] = (None, sampling_ms, queue_size)
                            if handle in _held_elsewhere(sub, (nodeid,), (ua.AttributeIds.Value,)):
                                # a faulty answer gave this item another's id: deleted by it, that item went (a
                                # tag silent); its registration is forgotten, its values dropped, not deleted
                                _forget_item(sub, nodeid, handle)
                            else:
                                try:
                                    await sub.unsubscribe(handle)
                                except ua.UaStatusCodeError:
                                    pass  # the server dropped the item with its node
                        got = await sub.subscribe_data_change(
                            client.get_node(nodeid),
                            sampling_interval=ua.Double(sampling_ms),
                            queuesize=queue_size,
                        )
                except (ua.UaStatusCodeError, TimeoutError):
                    continue  # not back yet
                if isinstance(got, int):
                    self._items[nodeid] = (got, sampling_ms, queue_size)
                    log.info("opcua source %s: node %s is subscribed again", self.name, nodeid.to_string())
                    return
        except (ConnectionError, ua.UaError, OSError) as e:  # the session is going: the reconnect makes all
            log.info("opcua source %s: node %s not subscribed again: %r", self.name, nodeid.to_string(), e)
        finally:
            if self._gone.get(nodeid) is asyncio.current_task():
                del self._gone[nodeid]
                self._back.discard(nodeid)

    def _axis_changed(self, nodeid: ua.NodeId, tag: str) -> None:
        """The server flagged a change of the waveform's metadata (SemanticsChanged): its XAxisDefinition,
        and so its sample rate, may differ now (a sensor set to another rate at run time). The rate read at
        connect is dropped at once and the axis read again; readings until then carry no stated rate."""
        self._rates.span_s.pop(tag, None)
        client = self._client
        if client is None or tag in self._axis_reads:
            return
        self.notices.note(
            "semantics_changed",
            "opcua source %s: tag %s: the server flagged its metadata changed (SemanticsChanged); its "
            "XAxisDefinition (sample rate) is read again",
            self.name,
            tag,
        )

        async def read_again() -> None:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    await self._rates.setup(client, "x_axis", tag, client.get_node(nodeid), self._resolve)
            except (RateError, ua.UaError, TimeoutError, OSError) as e:
                msg = (
                    f"tag {tag}: its XAxisDefinition, read again after SemanticsChanged, gives no rate ({e})"
                )
                self.stats.error("sample_rate", msg)
                self._burst.log(f"rate:{tag}", "opcua source %s: %s", self.name, msg)
            finally:
                self._axis_reads.pop(tag, None)

        self._axis_reads[tag] = asyncio.get_running_loop().create_task(read_again())

    def _target_semantics(self, nodeid: ua.NodeId) -> None:
        """A value flagged SemanticsChanged of a node this source also writes: what its writes are judged by
        may have changed with its metadata (a PLC download gave a multi-state node other EnumStrings or
        EnumValues), and a value now outside its states would reach the PLC, or one now inside be refused, until
        the next connect. Its type and states are read again and the target judged again (``_recheck``,
        ``target_errors``), at most once per node per ``HELD_RECHECK_S`` (a server may flag every value so):
        a flag within it has the node read once more when it ends, so the last change is not missed; said once
        per node (notice ``target_semantics_changed``), counted at each read."""
        now, shown = time.monotonic(), nodeid.to_string()
        for node_id in dict.fromkeys(n for n, _ in self._write_targets):
            if self._resolved.get(node_id) != shown:
                continue
            since = now - self._semantics_at.get(node_id, -math.inf)
            if since < HELD_RECHECK_S:
                if node_id not in self._semantics_later:
                    self._semantics_later[node_id] = asyncio.get_running_loop().call_later(
                        HELD_RECHECK_S - since, self._semantics_due, node_id
                    )
                continue
            self._semantics_due(node_id)

    def _semantics_due(self, node_id: str) -> None:
        """Read the write target ``node_id``'s type again for a SemanticsChanged flag (``_target_semantics``)."""
        self._semantics_later.pop(node_id, None)
        if self._client is None:
            return
        # a check in flight may have read it before the flag: once more after
        if node_id in self._target_checks:
            self._semantics_later[node_id] = asyncio.get_running_loop().call_later(
                HELD_RECHECK_S, self._semantics_due, node_id
            )
            return
        if node_id not in self._types:
            return  # not read yet: read as it is now at the next write or check
        self._semantics_at[node_id] = time.monotonic()
        self._types.pop(node_id, None)
        self.notices.note(
            "target_semantics_changed",
            "opcua source %s: write target %s: the server flagged its metadata changed (SemanticsChanged: a PLC "
            "download may have changed its states, EnumStrings or EnumValues); its type and states are read "
            "again and its writes judged by them",
            self.name,
            node_id,
            cause=node_id,
        )
        self._recheck(node_id)

    def _overflowed(self, tag: str) -> None:
        """The server's queue for this node overflowed before this value: it dropped older ones (the
        Overflow bit of the value's status, OPC UA Part 4, 7.39). Counted per tag; said once per tag."""
        self.overflows[tag] = self.overflows.get(tag, 0) + 1
        first_tag = self.overflows[tag] == 1
        first = "queue_overflow" not in self.notices.counts
        msg = (
            f"opcua source {self.name}: tag {tag}: the server's queue for this node overflowed and dropped "
            "older values (the Overflow bit of the value that followed); raise the node's queue_size (and "
            "the server's limit), or lower publishing_interval_ms; counted in queue_overflow"
        )
        self.notices.note("queue_overflow", "%s", msg)  # logs the first one
        if first_tag and not first:
            log.warning("%s", msg)

    def _now(self) -> float:
        """The wall clock's time for a value received now. A step of this gateway's clock back (NTP, set by hand) by
        more than ``_CLOCK_STEP_S`` since the last value moves the tags' last times back with it and is said once:
        readings it stamps (the receive time, used while the PLC's clock is over max_clock_skew_s off the gateway's)
        are compared on its new time. Before, after a step back of an hour every reading was counted
        ``out_of_order`` ("source timestamp went backwards", blaming the PLC) for that hour. Cost: ~0.15 us a value."""
        now = time.time()
        off = now - _since_boot()
        prev, self._wall_offset = self._wall_offset, off
        if self._wall_first is None:
            self._wall_first = off
        if prev is not None and off - prev < -_CLOCK_STEP_S:
            for tag in self._last_ts:
                self._last_ts[tag] += off - prev
            # and the BADs a halt or a lost connection gave (dated on the old clock): each later reading of such a
            # tag the new clock dates before its BAD was stamped 1 ms after the one before, from the BAD on, for as
            # long as the step (its times an hour ahead of the source's other tags, their spacing lost)
            for tag, (at, stamped) in self._bad_at.items():
                self._bad_at[tag] = (at + off - prev, stamped)
            log.warning(
                "opcua source %s: this gateway's clock stepped back by %.0f s (NTP, or set by hand); its readings' "
                "times are compared on its new time",
                self.name,
                prev - off,
            )
        return now

    def _structure(self, nodeid: ua.NodeId, tag: str, val: Any, dv: Any, indexed: bool = False) -> None:
        """A structure's value (or an array of them) as a reading per member; ``indexed``: a Variant[]'s items,
        structures among other values, each by its index (``_indexed``)."""
        first = val[0] if isinstance(val, list) else val
        if indexed:  # an item not decoded holds the value back; else its first structure stands for it
            first = next((x for x in val if isinstance(x, ua.ExtensionObject)), None)
            if first is None:
                first = next(x for x in val if _is_structure(x))
        if isinstance(first, ua.ExtensionObject):
            return self._undecodable(nodeid, tag, first)
        if isinstance(val, list) and (misread := next((v for v in val if isinstance(v, _Misread)), None)):
            return self._undecodable(nodeid, tag, misread)
        if self._misread_nodes:
            self._misread_nodes.discard(nodeid)  # read by its layout: a later misfit reads the types again
        if self._relayout:  # decoded by a layout the server flagged changed: read again by the new one
            self._undecoded[nodeid] = (tag, ua.typeid_by_extension_objects.get(type(first), ua.NodeId()))
            return None
        members: list[tuple[str, Any]] = []
        if indexed:
            _indexed(tag, val, members)
        else:
            _members(tag, val, members)
        if len(members) >= _MAX_MEMBERS:
            self.notices.note(
                "structure_truncated",
                "opcua source %s: tag %s has %d members or more (an array of structures?); the first %d "
                "are read. Subscribe to the elements you need as their own nodes",
                self.name,
                tag,
                _MAX_MEMBERS,
                _MAX_MEMBERS,
            )
        now = self._now()
        ts, (quality, why) = self._timestamp(tag, dv, now), _quality(dv.StatusCode)
        null = "a null member, or a DateTime of 1601-01-01: OPC UA's null time, never set"
        for mtag, mval in members:
            self._emit(mtag, mval, ts, now, quality, None, why, null)

    def _emit(
        self,
        tag: str,
        val: Any,
        ts: float,
        now: float,
        quality: Quality,
        rate: float | None,
        reason: str | None = None,
        null: str = "a null Variant",
    ) -> None:
        if val is None and quality is not Quality.BAD:  # a null Variant (or structure member) said Good
            msg = f"tag {tag}: the server sent no value ({null}) with status {quality.name}; passed as BAD"
            self.stats.error("null_value", msg)
            self._burst.log(f"null:{tag}", "opcua source %s: %s", self.name, msg)
            quality, reason = Quality.BAD, reason or "null_value"
        # a list's item types, taken at C speed (2 ms for 100,000 big Int64s, whose plain form took 46), spare it the
        # walks below when it holds no number or no text
        kinds = set(map(type, val)) if type(val) is list else None
        non_finite = (
            (isinstance(val, float) and not math.isfinite(val))
            or (isinstance(val, np.ndarray) and val.dtype.kind == "f" and not np.isfinite(val).all())
            # a Variant[]'s items: NaN, or an array holding one
            or (kinds is not None and not kinds.isdisjoint(_MAY_BE_NON_FINITE) and _holds_non_finite(val))
        )
        if (type(val) is str and not val.isascii()) or (
            kinds is not None and (str in kinds or list in kinds)
        ):
            text = valid_text(val)  # the same object, unless it held text that is not valid Unicode
            if text is not val:
                self.stats.error("invalid_text", tag)
                self._burst.log(
                    f"text:{tag}",
                    "opcua source %s: tag %s holds text that is not valid UTF-8 (%s); passed on with U+FFFD in "
                    "place of each invalid byte",
                    self.name,
                    tag,
                    reprlib.repr(val),
                )
                val = text
        if non_finite:
            self.stats.error("non_finite", tag)
            self._burst.log(
                f"nf:{tag}",
                "opcua source %s: tag %s holds NaN/Inf (%s)",
                self.name,
                tag,
                "passed as BAD" if self.settings.non_finite is NonFinitePolicy.BAD else "skipped",
            )
            if self.settings.non_finite is NonFinitePolicy.SKIP:
                return
            quality, reason = Quality.BAD, reason or "non_finite"
        last = self._last_ts.get(tag)
        if last is not None and ts < last:
            self.stats.error("out_of_order", tag)
            self._burst.log(
                f"ooo:{tag}", "opcua source %s: tag %s source timestamp went backwards", self.name, tag
            )
        else:
            self._last_ts[tag] = ts
        if type(val) is np.ndarray:
            prev = self._last_wave.get(tag)
            if ts == last and prev is not None and prev[1] is quality and np.array_equal(prev[0], val):
                # the same waveform again (same source time, same samples): a subscription made again after
                # a reconnect starts with the node's current value, which this source passed on before the
                # cut; a pipeline would score those samples twice (or splice them into its next window)
                self.notices.note(
                    "repeated_waveform",
                    "opcua source %s: tag %s: the server sent a waveform it sent before again (the same source "
                    "timestamp and samples: the first value of a subscription made again after a reconnect); "
                    "not passed on twice",
                    self.name,
                    tag,
                    level=logging.INFO,
                )
                return
            self._last_wave[tag] = (val, quality)
        reading = Reading(self.name, tag, val, ts, now, quality, rate, reason)
        # the server dropped this node's values before this one: a window must not join them
        if self._overflowing:
            reading.lost_before = True
        if self._lost_marked:
            self._lost_marked.discard(tag)
        if self._bad_at and (after := self._bad_at.get(tag)) is not None:
            # the first readings after a BAD this source made (a halt): one the server dates before that BAD (its
            # value unchanged since before the halt) is stamped when it came, never earlier than the BAD, its
            # own time kept in ``source_ts``: a consumer ordering the tag's history by time sees BAD, then GOOD
            at, stamped = after
            if ts <= at:
                # the next it dates before the one so stamped (a notification's queued samples; a server whose
                # clock is behind the gateway's): 1 ms after it, not when they came, so the tag's own times take
                # over once its server's clock passes that (the arrival time each came at kept every value of a
                # server a second behind, or of a queue, re-stamped for good)
                reading.timestamp = at + _AFTER_BAD_S if stamped else max(now, at + _AFTER_BAD_S)
                reading.source_ts = ts
                self._bad_at[tag] = (reading.timestamp, True)
            else:
                del self._bad_at[tag]
        if self._value_changed(tag, val) and self._halt_reason == "server_clock_frozen":
            # halted for a clock standing still, and a value changes in this session whose clock has not
            # moved: the server is alive, its clock is broken; what was held goes on, and this after it
            self._clock_stuck(self._clock[0] if self._clock is not None else None)
            self._recovered()
        if self._halt_reason is not None:
            if self._halt_reason not in _STALLS or not self._publishing_again():
                self._hold(reading)
                return
            # a silent server's new subscription publishes data again (a publish after its first): what was
            # held goes on now, and this after it, not at the next check (a keep-alive check's time or two,
            # over which a busy source's readings past _HELD_MAX were dropped)
            self._recovered()
        self._channel.put_nowait(reading)

    def _undecodable(self, nodeid: ua.NodeId, tag: str, val: Any) -> None:
        """A structure arrived as raw bytes: before this session has read the types, ask for them (its
        members come once they are read); after, say which and skip it, never pass the bytes on. While
        the types could not be read (the server busy or failing, ``_structures`` tries again), the value is
        skipped and counted, and the node read again once they are."""
        if not self._types_loaded:
            self._undecoded[nodeid] = (tag, val.TypeId)
            if self._types_failed is not None:
                self._types_unread(tag)
            self._types_wanted.set()
            return
        if isinstance(val, _Misread):
            return self._misread(nodeid, tag, val)
        self.notices.note(
            "structure_undecoded",
            "opcua source %s: tag %s is a structure (DataType %s) that the server's type definitions do not "
            "describe, so its members cannot be read; its values are skipped. Subscribe to its members' "
            "own nodes instead (edge-agent browse lists them)",
            self.name,
            tag,
            val.TypeId.to_string(),
        )

    def _misread(self, nodeid: ua.NodeId, tag: str, val: _Misread) -> None:
        """A structure's bytes that do not fit the layout read for it (``_checked_structure``): a PLC download
        changed it and the server did not flag StructureChanged. Never passed on: the first such value since
        the node's last good one has the server's types read again and the node read by them, as after
        StructureChanged (at most once per ``RELAYOUT_S``); one that still does not fit is skipped and counted
        (notice ``structure_misread``, said once per tag)."""
        now = time.monotonic()
        if nodeid not in self._misread_nodes and now - self._relayout_at.get(nodeid, -math.inf) >= RELAYOUT_S:
            self._misread_nodes.add(nodeid)
            self.notices.note(
                "structure_changed",
                "opcua source %s: tag %s: its value does not fit the layout read for its structure (%s): a PLC "
                "download changed it, though the server did not flag StructureChanged; the server's type "
                "definitions are read again and the node read by them; the value is not passed on",
                self.name,
                tag,
                val.why,
                cause=tag,
            )
            self._read_layouts_again(nodeid, tag, val.TypeId, now)
            return
        self.notices.note(
            "structure_misread",
            "opcua source %s: tag %s: its value does not fit the layout the server's type definitions give for "
            "its structure (%s), read again for it; such values are skipped and counted, never passed on read "
            "by a wrong layout: check the node's DataType on the server (edge-agent browse)",
            self.name,
            tag,
            val.why,
            cause=tag,
        )

    def _read_layouts_again(self, nodeid: ua.NodeId, tag: str, typeid: ua.NodeId, now: float) -> None:
        """Have the server's types read again and ``nodeid`` read by them (``_structures``)."""
        self._relayout_at[nodeid] = now
        self._undecoded[nodeid] = (tag, typeid)
        self._types_loaded = False
        self._relayout = True
        self._types_wanted.set()

    def _layout_changed(self, nodeid: ua.NodeId, tag: str, val: Any) -> bool:
        """A structure's value flagged StructureChanged (a PLC download changed its layout while the session
        stayed up): asyncua decoded it by the layout read before, so its members would be the wrong bytes
        passed on GOOD. It is not passed on; the server's types are read again and the node read by its new
        layout (``_structures``). False for a value that is no structure (its Variant says its own type), and
        for one flagged within ``RELAYOUT_S`` of the node's last such read and decoded by the types it read
        (a server that flags every value: counted, notice ``structure_changed_again``), passed on."""
        first = val[0] if isinstance(val, list) and val else val
        if not (isinstance(first, ua.ExtensionObject) or _is_structure(first)):
            return False
        now = time.monotonic()
        asked = self._relayout_at.get(nodeid, -math.inf)
        if (
            now - asked < RELAYOUT_S
            and self._types_loaded
            and self._types_at >= asked
            # decoded by the types read since (or not by any: undescribed, or bytes that still do not fit,
            # skipped and counted as such)
            and (isinstance(first, ua.ExtensionObject) or type(first) in self._type_classes.values())
        ):
            self.notices.note(
                "structure_changed_again",
                "opcua source %s: tag %s: flagged StructureChanged again within %.0f s of the server's types "
                "being read for it (a server that flags every value so?); such values are decoded by the types "
                "just read, passed on and counted; the types are read again at most once per %.0f s",
                self.name,
                tag,
                RELAYOUT_S,
                RELAYOUT_S,
                cause=tag,
            )
            return False
        self.notices.note(
            "structure_changed",
            "opcua source %s: tag %s: the server flagged its structure changed (StructureChanged: a PLC "
            "download changed its layout); the server's type definitions are read again and the node read by "
            "its new layout; the value flagged so is not passed on (it was decoded by the former layout)",
            self.name,
            tag,
            cause=tag,
        )
        typeid = getattr(first, "TypeId", None) or ua.typeid_by_extension_objects.get(
            type(first), ua.NodeId()
        )
        self._read_layouts_again(nodeid, tag, typeid, now)
        return True

    def _types_unread(self, tag: str, n: int = 1) -> None:
        """``n`` values of structure tags skipped because the server's types could not be read."""
        self.notices.note(
            "structure_types_unread",
            "opcua source %s: the server's structure types could not be read (%s), so the values of "
            "structure tags (%s first) are skipped; read again with a growing pause (up to %d s) until they "
            "come, then those tags are read again",
            self.name,
            self._types_failed,
            tag,
            int(TYPES_RETRY_MAX_S),
            n=n,
        )

    async def _structures(self) -> None:
        """A PLC's structure (a UDT) arrives as raw bytes until the session has read its type definition
        from the server. Read them once per connection, when the first such value arrives (a server with
        many types takes a while), then read those nodes again, so that their members come now and not
        at their next change. A read that fails (the server late: a PLC busy at connect, or with more types
        than the bound allows) is tried again after a growing pause, ``TYPES_RETRY_S`` doubling up to
        ``TYPES_RETRY_MAX_S``, with a bound that doubles too (up to ``TYPES_BOUND_MAX_S``). Read again when a
        value comes flagged StructureChanged (``_layout_changed``): a PLC download within the session."""
        while True:
            retry = Backoff(initial_s=TYPES_RETRY_S, max_s=TYPES_RETRY_MAX_S)
            counted = False
            tries = 0
            while True:
                await self._types_wanted.wait()
                client = self._client
                if client is None:
                    return
                try:
                    await self._load_types(client, tries)
                except Exception as e:  # tried again as a failed read: it ended this worker without a word
                    self._types_failed = f"{type(e).__name__}: {e}"[:300]
                    self._types_loaded = False
                    self.stats.error("structure_types", repr(e))
                    self._burst.log(
                        "structure_types",
                        "opcua source %s: reading the server's structure types failed (read again after a "
                        "pause): %r",
                        self.name,
                        e,
                    )
                tries += 1
                if self._types_failed is None:
                    break
                if self._undecoded and not counted:  # the values queued before this first failure
                    counted = True
                    self._types_unread(next(iter(self._undecoded.values()))[0], len(self._undecoded))
                # could not be read (a busy PLC answering late, an error): not "undescribed" for the whole
                # session, as it was: those values are skipped and counted until a later read succeeds
                self._types_wanted.clear()
                await asyncio.sleep(retry.next_delay())
                self._types_wanted.set()
            self._types_wanted.clear()
            self._relayout = False
            waiting, self._undecoded = self._undecoded, {}
            for nodeid, (tag, _) in waiting.items():
                try:
                    async with asyncio.timeout(self.settings.connect_timeout_s):
                        dv = await client.get_node(nodeid).read_data_value()
                except Exception:
                    continue  # its next change comes through the subscription
                try:  # as a notification's: one bad value ended this worker, no structure decoded after it
                    if dv.StatusCode is not None and dv.StatusCode.value & _STRUCTURE_CHANGED:
                        # read by the definitions just read: the flag (a server may keep it on the value) is done
                        dv.StatusCode = ua.StatusCode(ua.UInt32(dv.StatusCode.value & ~_STRUCTURE_CHANGED))
                    self._on_value(nodeid, tag, dv.Value.Value if dv.Value is not None else None, dv)
                except Exception as e:
                    self.stats.error("notification", repr(e))
                    self._burst.log("notification", "opcua source %s: bad notification: %r", self.name, e)

    async def _load_types(self, client: Client, tries: int = 0) -> None:
        """Read the server's structure types (asyncua makes a class of each, which then decodes their
        values): OPC UA 1.04's DataTypeDefinition attributes first; a server that has none describes its
        types in a binary type dictionary instead (older PLC firmware). Read afresh on each connection,
        replacing what an earlier one read: the PLC's program, and so a layout, may have changed."""
        # asyncua keeps a class per type name, process-wide, and does not read a name it has again: forget
        # the ones this source read before, or a changed layout would be decoded by the old one
        for name, cls in self._type_classes.items():
            if getattr(ua, name, None) is cls:
                delattr(ua, name)
            # and from asyncua's tables keyed by the class itself (a new class is made at every load, under
            # the same node ids): kept there, every reconnect to a PLC with structures kept all its classes
            for table in _CLASS_KEYED:
                table.pop(cls, None)
        if self._type_classes:  # and asyncua's coders, cached for good per class: made again when used
            for cached in list(vars(ua_binary).values()):
                if callable(getattr(cached, "cache_clear", None)):
                    cached.cache_clear()
        self._type_classes.clear()
        loads: tuple[Callable[[], Any], ...] = (
            client.load_data_type_definitions,
            client.load_type_definitions,
        )
        failed: str | None = None
        # a server with many types may need longer than the first bound: each try after one gives it twice
        bound = min(
            self.settings.connect_timeout_s * 4 * 2**tries,
            max(TYPES_BOUND_MAX_S, self.settings.connect_timeout_s * 4),
        )
        for i, load in enumerate(loads):
            if i and all(t in ua.extension_objects_by_typeid for _, t in self._undecoded.values()):
                break
            try:
                async with asyncio.timeout(bound):
                    got = await load()
            except Exception as e:  # each structure still undecoded is then named
                log.info("opcua source %s: the server's structure types could not be read: %r", self.name, e)
                if not i:
                    failed = _types_failure(e, bound)
                continue
            classes: dict[str, Any] = got if isinstance(got, dict) else got[1]  # older: (generators, classes)
            self._type_classes.update((n, c) for n, c in classes.items() if getattr(ua, n, None) is c)
            if i and classes:  # the older way described them
                failed = None
        self._types_failed = failed
        self._types_loaded = failed is None
        self._structured = True
        if self._types_loaded:
            self._types_at = time.monotonic()
        _check_layouts(self._type_classes.values())

    def _timestamp(self, tag: str, dv: Any, now: float) -> float:
        """The reading's time, by ``timestamps``: the first of the source and server timestamps that is
        set, not null, and within ``max_clock_skew_s`` of this gateway's clock; else the receive time. A
        subscription's first value may have been set long ago: its old source time stands when the
        server's own timestamp (its clock) is within the bound."""
        first = tag not in self._changed
        if first:
            self._changed.add(tag)
        skew = self.settings.max_clock_skew_s
        server = _epoch(dv.ServerTimestamp)
        # an old source time on the first value is a value set long ago only if the server's clock is right
        old_ok = first and (server is None or abs(server - now) <= skew)
        for which in _ORDER[self.settings.timestamps]:
            t = _epoch(dv.SourceTimestamp) if which == "source" else server
            if t is None:
                continue
            if skew and (t - now > skew or (now - t > skew and not (old_ok and which == "source"))):
                msg = (
                    f"tag {tag}: its {which} timestamp is {t - now:+.0f} s off this gateway's clock (over "
                    f"max_clock_skew_s {skew:g}), so the next in line is used; {self._skew_hint(t - now, skew)}"
                )
                self.stats.error("clock_skew", msg)
                self._burst.log(f"skew:{tag}:{which}", "opcua source %s: %s", self.name, msg)
                continue
            return t
        return now

    def _skew_hint(self, off: float, skew: float) -> str:
        """What to set for a timestamp ``off`` s off this gateway's clock: the gateway's own, when a step of it
        since the first value accounts for ``off`` within ``skew`` (NTP stepping it back an hour, the PLC's right:
        the PLC's was named). Not a step that set it right (a boot in 1970, then NTP) before the PLC's went wrong."""
        stepped = (self._wall_offset or 0.0) - (self._wall_first or 0.0)
        if abs(stepped) > _CLOCK_STEP_S and abs(off + stepped) <= skew:
            return (
                f"this gateway's clock stepped {stepped:+.0f} s since the source's first value (NTP, or set by "
                "hand): it may be the one off, check its time first, then the PLC's; or timestamps: server | receive"
            )
        return "set the PLC's clock (NTP; or this gateway's, if it is the one off), or timestamps: server | receive"

    async def _measure(self, client: Client, groups: dict[tuple[float, int], list[Node]]) -> None:
        """After a Publish answer over max_message_bytes that no node's value alone was known to pass: each
        node's value is read on its own (one Read each, its answer's size taken from the wire), and the
        largest are given subscriptions of their own (``_apart``) until the others' values together come to at
        most half the limit: a server sends one subscription's notifications per Publish answer, so values
        that passed the limit together arrive apart. A node whose value alone is over the limit closes this
        connection too: it is named and left out (``_too_big``) at the next."""
        meter = getattr(client, "_message_size", None)
        if meter is None:
            return
        sizes: dict[ua.NodeId, int] = {}
        for nodes in groups.values():
            for node in nodes:
                self._measuring = self._listed_as.get(node.nodeid) or node.nodeid.to_string()
                async with asyncio.timeout(self.settings.connect_timeout_s * 2):
                    await client.uaclient.read_attributes([node.nodeid], ua.AttributeIds.Value)
                sizes[node.nodeid] = meter.done
        self._measuring = None
        self._measure_wanted = False
        self._apart.clear()
        left = sum(sizes.values())
        for nodeid, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
            if left <= self.settings.max_message_bytes // 2 or len(self._apart) >= _APART_MAX:
                break
            self._apart[nodeid] = size
            left -= size
        shown = ", ".join(f"{n.to_string()} ({s} bytes)" for n, s in self._apart.items())
        self._burst.log(
            "too_large:apart",
            "opcua source %s: the values of its %d nodes come to %d bytes (max_message_bytes %d): %s",
            self.name,
            len(sizes),
            sum(sizes.values()),
            self.settings.max_message_bytes,
            f"subscribed on their own: {shown}" if shown else "one subscription takes them",
        )

    def _left_out(self, node_id: str, size: int) -> str:
        """``node_id``'s value alone reached ``size`` bytes, over max_message_bytes: it is not subscribed until a
        read of it fits (``_refit``), so that it does not close every session; what to say, once per node on
        ``/status`` too (``silent_drops['value_too_large']``)."""
        self._too_big[node_id] = size
        msg = (
            f"node {node_id!r}: its value alone reached {size} bytes, over max_message_bytes "
            f"{self.settings.max_message_bytes}; it is not subscribed (the session and any other nodes stay) "
            "until a read of it fits: raise max_message_bytes or leave it out"
        )
        self.notices.note(
            "value_too_large", "opcua source %s: %s", self.name, msg, level=logging.DEBUG, cause=node_id
        )
        return msg

    async def _refit(self) -> None:
        """Now and then (a pause doubling from reconnect_max_s to 10 minutes) read each node left out for a
        value over max_message_bytes (``_too_big``) on a connection of its own, so that a value still too large
        closes that one, not the session's: once one fits, the session is closed and the next subscribes it. A
        server that refuses that connection (a PLC that allows few sessions) has the node read on this session
        instead (``_refit_here``): else the node stayed out for good."""
        while self._too_big and not self._refit_now:
            self._refit_pause = min(
                max(self._refit_pause * 2, self.settings.reconnect_max_s, REFIT_MIN_S), REFIT_MAX_S
            )
            await asyncio.sleep(self._refit_pause)
            for node_id in list(self._too_big):
                try:
                    client, oversize = await _one_off_client(self.settings, "opcua")
                except OpcUaError as e:
                    if self._refit_closes.get(node_id, 0) >= REFIT_HERE_MAX:
                        continue  # given up on the session (``_refit_closed``): a connection of its own only
                    fits = await self._refit_here(node_id, e)
                    if self._oversize:  # still too large: this session's connection is closed (``_run``)
                        return
                else:
                    try:
                        async with _time_limit(self.settings.connect_timeout_s * 2):
                            # by the pins, as it is subscribed: the raw index may name another namespace's
                            # node (absent: never read again; small: taken as fitting, a close at each refit)
                            node = client.get_node(await self._resolve(client, node_id))
                            await node.read_data_value()
                        fits = not oversize[0]
                    except Exception:
                        fits = False
                    finally:
                        # closed whatever the PLC answers (a time limit's cancellation skipped asyncua's socket
                        # close: one connection left open at each refit of a silent PLC, and at a stop)
                        await _close_one_off(client, 1.0)
                if fits:
                    del self._too_big[node_id]
                    self._refit_closes.pop(node_id, None)  # too large again later: read on the session anew
                    self.node_errors.pop(node_id, None)
                    self._refit_now = True
                    self._measure_wanted = True  # it may still be large: subscribed apart if it is
                    log.info(
                        "opcua source %s: node %s now fits max_message_bytes: subscribed", self.name, node_id
                    )
        if self._refit_now:
            self._refit_pause = 0.0
            self._lost.set()

    async def _refit_here(self, node_id: str, refused: OpcUaError) -> bool:
        """Whether the value of ``node_id`` (left out for its size) fits now, read on this session: a
        connection of its own was ``refused``. A value still too large closes this session's connection, as
        it did when first seen: the source reconnects without the node (``_measuring``: ``_run``) and reads it
        again after a longer pause."""
        client = self._client
        if client is None:
            return False
        log.info(
            "opcua source %s: node %s is read again on this session (a connection of its own: %s); if its value "
            "is still over max_message_bytes, that closes the session's connection and the source reconnects",
            self.name,
            node_id,
            refused,
        )
        self._measuring = node_id
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s * 2):
                node = client.get_node(await self._resolve(client, node_id))  # by the pins (``_refit``)
                await node.read_data_value()
        except Exception:
            if not self._oversize:  # another failure: not its size
                self._measuring = None
            return False
        self._measuring = None
        return not self._oversize

    def _refit_closed(self, node_id: str) -> None:
        """A read of ``node_id`` again on the session (``_refit_here``) closed it: its value is still too large.
        At REFIT_HERE_MAX such closes in a row, it is no longer read on the session (said once, WARNING): each
        close turns every other tag BAD and reconnects, once per pause (up to 10 minutes) for good. A PLC that
        drops the session on its own (``_run``) or a config reload (a new source) reads it there again."""
        n = self._refit_closes[node_id] = self._refit_closes.get(node_id, 0) + 1
        if n == REFIT_HERE_MAX:
            log.warning(
                "opcua source %s: node %s: %s",
                self.name,
                node_id,
                self._given_up(node_id).removeprefix("; "),
            )

    def _given_up(self, node_id: str) -> str:
        """What ``node_errors`` adds for a node no longer read on the session (``_refit_closed``), or nothing."""
        n = self._refit_closes.get(node_id, 0)
        if n < REFIT_HERE_MAX:
            return ""
        return (
            f"; its value was still too large at {n} reads on the source's session (the PLC refused a connection "
            "of its own), each closing the session (its tags BAD, a reconnect): it is no longer read there, only "
            "on a connection of its own when the PLC allows one, and on the session again once the PLC drops "
            "the session on its own (a restart) or the config is reloaded"
        )

    async def _subscribe(self, client: Client, groups: dict[tuple[float, int], list[Node]]) -> None:
        self._changed.clear()
        sub = await self._new_subscription(client)
        batches: list[tuple[Subscription, tuple[float, int], list[Node]]] = []
        for key, nodes in groups.items():
            rest = [n for n in nodes if n.nodeid not in self._apart]
            for node in nodes:
                if node.nodeid in self._apart:  # a large value in a subscription of its own (``_measure``)
                    try:
                        own = await self._new_subscription(client, main=False)
                    except ua.UaStatusCodeError as e:  # the server's limit on subscriptions: with the others
                        log.warning(
                            "opcua source %s: no subscription of its own for %s: %s", self.name, node, e
                        )
                        rest.append(node)
                        continue
                    self._extra_subs.append(own)
                    self._item_sub[node.nodeid] = own
                    batches.append((own, key, [node]))
            if rest:
                batches.append((sub, key, rest))
        full: list[tuple[str, str]] = []  # (node id, status) refused for want of room on the server
        for into, (sampling_ms, queue_size), nodes in batches:
            try:
                results = await into.subscribe_data_change(
                    nodes, sampling_interval=ua.Double(sampling_ms), queuesize=queue_size
                )
            except ua.UaStatusCodeError:
                # one node the server refuses must not take the others with it: subscribe one by one
                results = [await self._subscribe_one(into, node, sampling_ms, queue_size) for node in nodes]
            if len(results) != len(nodes):
                results = await self._subscribe_alone(into, nodes, results, sampling_ms, queue_size)
            for node, r in zip(nodes, results, strict=True):
                if isinstance(r, int):
                    self._items[node.nodeid] = (r, sampling_ms, queue_size)
                if isinstance(r, ua.StatusCode):
                    self._tags.pop(node.nodeid, None)
                    # named as the config lists it (nsu=...), as the nodes refused at the connect are
                    listed = self._listed_as.get(node.nodeid) or node.nodeid.to_string()
                    name = code_name(r)
                    if name in _SERVER_FULL:
                        full.append((listed, name))
                    else:
                        self._node_error(listed, name)
        if full:
            self._items_full = True
            self._server_full(full, sum(len(nodes) for nodes in groups.values()))

    async def _subscribe_alone(
        self, into: Subscription, nodes: list[Node], results: list, sampling_ms: float, queue_size: int
    ) -> list:
        """The monitored items of ``nodes`` made again one a request, after a faulty server answered their
        CreateMonitoredItems with another count of results (``results``): which item each result is cannot be told
        (asyncua pairs them in order: a node took another's item id, which a later delete of its item hit, and the
        source's connect failed at every try, "zip() argument 2 is shorter than argument 1"). The items it named, and
        those it left out, are forgotten, not deleted (``_forget_named``); a node answered alone with nothing gets
        BadUnexpectedError (named in ``node_errors``). Counted (notice ``read_results_missing``)."""
        left = _forget_named(into, results, [n.nodeid for n in nodes]) + len(
            _forget_unanswered(into, nodes) or ()
        )
        self._server_fault(
            f"the server answered a CreateMonitoredItems of {len(nodes)} item(s) with {len(results)} result(s) (a "
            f"server fault); each node subscribed again alone, {left} item(s) it named or left out left on the server",
            left=left,
        )
        return [await self._subscribe_one(into, node, sampling_ms, queue_size) for node in nodes]

    async def _subscribe_one(
        self, into: Subscription, node: Node, sampling_ms: float, queue_size: int
    ) -> int | ua.StatusCode:
        """The monitored item of ``node`` made alone (its item id, or the status refusing it), asked as a list of one:
        asked as the node alone, asyncua indexes the answer, and a faulty server answering it with nothing raised
        IndexError out of the connect (the one-by-one fallback after a batch refused with a status). A count other
        than one is a server fault: counted (notice ``read_results_missing``), any item it named left on the server, the
        node given BadUnexpectedError (named in ``node_errors``)."""
        try:
            got = await into.subscribe_data_change(
                [node], sampling_interval=ua.Double(sampling_ms), queuesize=queue_size
            )
        except ua.UaStatusCodeError as e:
            return ua.StatusCode(e.code)
        if len(got) == 1:
            return got[0]
        left = _forget_named(into, got, [node.nodeid])
        self._server_fault(
            f"the server answered a CreateMonitoredItems of {node.nodeid.to_string()} alone with {len(got)} result(s)"
            + (f", {left} item(s) it named left on the server" if left else ""),
            left=left,
        )
        return ua.StatusCode(ua.UInt32(ua.StatusCodes.BadUnexpectedError))

    def _server_full(self, full: list[tuple[str, str]], asked: int) -> None:
        """Nodes the server refused a monitored item because it holds no more (its limit on monitored
        items per subscription, session or server: an embedded PLC's may be 100): the nodes are fine, so
        each is named with the limit and the fix, and one line says it for all of them (a line per node
        told the reader to check a node id that was right, and a reconnect said them all again)."""
        status = full[0][1]
        why = (
            f"the server refused it a monitored item ({status}): it took {asked - len(full)} of the {asked} "
            "items this source asks for, which is its limit on monitored items (per subscription, session or "
            "server); raise that limit in the PLC's OPC UA settings, or put these nodes in a second opcua "
            "source (a session of its own)"
        )
        new = 0
        for node_id, _ in full:
            new += self._node_failing(node_id, f"node {node_id!r} is not subscribed: {why}", said=False)
        if not new:  # each said at an earlier connect: a standing condition
            return
        shown = ", ".join(n for n, _ in full[:5]) + (f" and {len(full) - 5} more" if len(full) > 5 else "")
        self._burst.log(
            "node:server_full",
            "opcua source %s: %d node(s) get no values (%s): %s",
            self.name,
            len(full),
            shown,
            why,
        )

    def _publishing_revised(self, asked_ms: float, got_ms: float) -> None:
        """A server that publishes much less often than asked (a PLC's minimum publishing interval, 200 or
        500 ms where 50 were asked) hands over one value per node per publish unless the node's queue holds
        more: a waveform node that changes between two publishes loses the arrays in between, a fast
        signal its changes, and the server says nothing (with a queue of one no Overflow bit is set). Said
        once (log, ``publishing_revised`` notice), again only when the server's answer changes."""
        if not (got_ms > asked_ms * 1.5 and got_ms - asked_ms >= 1.0):
            self._publishing_said = None
            return
        msg = (
            f"opcua source {self.name}: publishing_interval_ms {asked_ms:g} asked, the server publishes every "
            f"{got_ms:g} ms: a node that changes more often than that gives only its latest value(s) per "
            "publish (as many as its queue_size), and the server drops the others unreported; raise the "
            "queue_size of fast nodes to the changes they make in that time, or lower the server's minimum "
            "publishing interval"
        )
        if self._publishing_said == msg:
            return  # said already (a reconnect got the same answer)
        self._publishing_said = msg
        first = "publishing_revised" not in self.notices.counts
        self.notices.note("publishing_revised", "%s", msg)  # logs the first one
        if not first:
            log.warning("%s", msg)

    def _revision(self, nodeid: ua.NodeId, asked: ua.MonitoringParameters, got: Any) -> None:
        """One monitored item as the server created it: a queue smaller than asked, or a sampling interval
        well over the one asked, is said once per node (log, notice ``queue_revised`` /
        ``sampling_revised``, ``self.revised``): values the node takes between two samples, or past the
        queue between two publishes, never reach the agent, and the server says nothing when it drops them."""
        node_id = nodeid.to_string()
        tag = self._tags.get(nodeid)  # None for a waveform's rate node (sample_rate_from)
        shown = f"node {node_id}" + (f" (tag {tag})" if tag else "")
        said = []
        q_asked, q_got = int(asked.QueueSize or 0), int(got.RevisedQueueSize or 0)
        if q_asked > 1 and q_got < q_asked:
            said.append(
                (
                    "queue_revised",
                    f"opcua source {self.name}: {shown}: queue_size {q_asked} asked, the server keeps "
                    f"{q_got}: when the node changes more than {q_got} time(s) between two publishes "
                    f"(publishing_interval_ms), the older values are dropped by the server unreported; "
                    "raise the server's monitored-item queue limit, or lower publishing_interval_ms",
                )
            )
        s_asked, s_got = float(asked.SamplingInterval or 0.0), float(got.RevisedSamplingInterval or 0.0)
        if s_asked > 0 and s_got > s_asked * 1.5 and s_got - s_asked >= 1.0:
            said.append(
                (
                    "sampling_revised",
                    f"opcua source {self.name}: {shown}: sampling_interval_ms {s_asked:g} asked, the server "
                    f"samples every {s_got:g} ms: changes shorter than that are never seen; check the "
                    "server's (or the PLC's) fastest sampling rate, or read the values as an array",
                )
            )
        if not said:
            self.revised.pop(node_id, None)
            return
        msg = "; ".join(m for _, m in said)
        if self.revised.get(node_id) == msg:
            return  # said already (a reconnect got the same answer)
        self.revised[node_id] = msg
        for key, m in said:
            first = key not in self.notices.counts
            self.notices.note(key, "%s", m)  # logs the first one
            if not first:
                log.warning("%s", m)

    def _sub_counts(self, client: Client, interval_ms: float) -> tuple[int, int]:
        """The keep-alive and lifetime counts asked of a subscription publishing every ``interval_ms``.

        A keep-alive about every keepalive_check_s. The lifetime: the publishing intervals without a Publish
        request (a cut link) after which the server deletes the subscription. A session the server ends itself
        (its timeout) leaves its subscriptions until then (OPC UA Part 4; a UA .NET-based server keeps them for
        a transfer): 10,000 intervals were asked, 17 min at 100 ms, 2.8 h at 1 s, and a PLC allowing few
        subscriptions, its link cut a few times, refused the source's (or its HMI's) next one for that long.
        This source never takes a left one back: it lives as long as its session (the session timeout asked,
        or granted if shorter), and at least 3 keep-alives (Part 4's floor)."""
        keepalive = max(1, math.ceil(self._check_s(client) * 1000.0 / interval_ms))
        granted_s = (client.session_timeout or 0) / 1000.0 or self.settings.session_timeout
        life_s = min(self.settings.session_timeout, granted_s)
        return keepalive, max(math.ceil(life_s * 1000.0 / interval_ms), keepalive * 3)

    async def _new_subscription(
        self, client: Client, main: bool = True, made: list[Subscription] | None = None
    ) -> Subscription:
        # asyncua's create_subscription asks for a keep-alive every 0.75 session timeouts (45 min) and
        # waits for publish answers without a timeout: a server that stops publishing (stalled, or the
        # subscription dropped) went unnoticed while reads still worked. Ask for a keep-alive about
        # every keepalive_check_s and hold the server to what it revised (``_watch``).
        interval = self.settings.publishing_interval_ms
        keepalive, lifetime = self._sub_counts(client, interval)
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval,
            RequestedLifetimeCount=lifetime,
            RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=10000,
            PublishingEnabled=True,
            Priority=0,
        )
        session = client.uaclient.session
        _record_revisions(session, self._revision)
        sub = Subscription(session, params, _Handler(self))
        got = await sub.init()
        if made is not None:  # on the server from here: the caller deletes it if what follows fails
            made.append(sub)
        granted_ms = float(got.RevisedPublishingInterval or interval)
        life_n = int(got.RevisedLifetimeCount or 0)
        keepalive_n = int(got.RevisedMaxKeepAliveCount or keepalive)
        asked_ms = interval
        # Both counts are publishing intervals, worked out from the one asked: a server publishing slower
        # (asked 10 ms, granted 1,000) kept a 2 s session's left subscription 200 s (and a keep-alive
        # every 50 s, the silence watch 102 s), one publishing faster (asked 1,000, granted 250) gave a 4 s
        # session's a lifetime of 1.5 s, ended live by a loop held 3 s. Asked again of the interval granted
        # (ModifySubscription), and once more if its answer revised the interval again (bounded: a server
        # may answer so every time); a server that answers with what it created (asyncua's) keeps those
        # counts, and the watches below take them as granted
        for _ in range(2):
            if not (granted_ms > 0 and granted_ms != asked_ms):
                break
            asked_ms = granted_ms
            keepalive, lifetime = self._sub_counts(client, granted_ms)
            try:
                mod = await sub.update(
                    ua.ModifySubscriptionParameters(
                        SubscriptionId=sub.subscription_id,
                        RequestedPublishingInterval=granted_ms,
                        RequestedLifetimeCount=lifetime,
                        RequestedMaxKeepAliveCount=keepalive,
                        MaxNotificationsPerPublish=10000,
                        Priority=0,
                    )
                )
                granted_ms = float(mod.RevisedPublishingInterval or granted_ms)
                life_n = int(mod.RevisedLifetimeCount or life_n)
                keepalive_n = int(mod.RevisedMaxKeepAliveCount or keepalive_n)
            except ua.UaStatusCodeError as e:  # refused: the subscription stays as created, watched as such
                log.info("opcua source %s: subscription counts not asked again (%s)", self.name, e)
                break
            except TimeoutError:
                # not answered in time (dropped, or late): the subscription goes on as created, or with the
                # counts asked if the server applied them; the watches take the larger of each
                log.info("opcua source %s: subscription counts asked again, not answered in time", self.name)
                keepalive_n = max(keepalive_n, keepalive)
                if life_n > 0:
                    life_n = max(life_n, lifetime)
                break
        revised_s = granted_ms / 1000.0
        silence_s = 2 * revised_s * max(keepalive_n, 1) + self.settings.connect_timeout_s
        # as granted (a server may revise it up), and the keep-alives the Publish requests it holds still answer;
        # none said (0): the session's bound is taken (at a cut)
        if life_n > 0:
            self._sub_life_s = max(self._sub_life_s, revised_s * (life_n + 2 * max(keepalive_n, 1)))
        if not main:  # one of ``_apart``: watched for a stall beside the main one (``_stalled_sub``)
            self._apart_watch[sub] = (time.monotonic(), silence_s)
            return sub
        self._publishing_revised(interval, granted_ms)
        self._sub_silence_s = silence_s
        self._sub, self._sub_since = sub, time.monotonic()
        return sub

    async def _heartbeat(self) -> None:
        """The watchdog output: toggled (or counted up) every period while the session is up. A beat starts a period
        after the one before started, not a period after its Read and Write ended: slept a whole period after them,
        beats came a period and two round trips apart, and a PLC watchdog set near the period tripped on a healthy,
        slow PLC. A beat that takes longer than the period (a PLC answering slowly, a Read held up to
        ``connect_timeout_s``) is followed by the next one at once, and the next after that a period later: the
        beats missed meanwhile are not made up in a burst, so the PLC sees the gap its watchdog is there to see."""
        hb = self.settings.heartbeat
        assert hb is not None
        loop = asyncio.get_running_loop()
        n = 0
        said: set[str] = set()  # kinds of refusal logged since the last heartbeat written
        # why the heartbeat is held, as said: the session before's too (its task cancelled while held), else a hold
        # ending after a reconnect left /status saying the heartbeat held while the beats were written
        held = self._hb_held[1] if self._hb_held is not None else None
        while True:
            why = self.heartbeat_hold() if self.heartbeat_hold is not None else None
            if why is not None:
                if held is None:
                    log.warning(
                        "opcua source %s: heartbeat held (%s left unchanged, for the PLC's watchdog to fall back to "
                        "its safe state): %s",
                        self.name,
                        hb.node_id,
                        why,
                    )
                if why != held:
                    self._hb_held = (hb.node_id, why, time.time())
                held = why
                await asyncio.sleep(hb.period_ms / 1000.0)
                continue
            if held is not None:
                held, self._hb_held = None, None
                log.warning("opcua source %s: heartbeat written again (%s)", self.name, hb.node_id)
            began = loop.time()
            # a counter wraps at what the node's type holds (re-read if the PLC's program changed it)
            top = _counter_top(self._types.get(hb.node_id))
            value: Any = (n % 2 == 0) if hb.kind == "toggle" else n % (top + 1)
            try:
                uncertain = await self.write(hb.node_id, value, beat=True)
                self.heartbeats += 1
                said.clear()
                if uncertain and not self._heartbeat_uncertain_said:
                    # taken (Part 4: not wholly as asked): a heartbeat, but said once, as a refusal was
                    self._heartbeat_uncertain_said = True
                    log.warning("opcua source %s: heartbeat %s; said once", self.name, uncertain)
            except OpcUaError as e:
                self.stats.error("heartbeat", str(e))
                if e.retryable:  # the connection: once per burst, as any connection trouble
                    self._burst.log("heartbeat", "opcua source %s: heartbeat not written: %s", self.name, e)
                elif type(e).__name__ not in said:  # refused for good: said once, counted every period
                    said.add(type(e).__name__)
                    log.warning(
                        "opcua source %s: heartbeat not written: %s; said once: each further period it is "
                        "only counted (errors_by_reason['heartbeat']) until a heartbeat is written",
                        self.name,
                        e,
                    )
            # none of the adapter's errors (a fault of this code or asyncua's): the beats go on; it ended this task
            # for the session while the source read connected, the PLC's watchdog tripping
            except Exception as e:
                self.stats.error("heartbeat", f"{type(e).__name__}: {e}")
                if type(e).__name__ not in said:
                    said.add(type(e).__name__)
                    log.error(
                        "opcua source %s: heartbeat not written (unexpected %s: %s); the beats go on; said once: "
                        "each further period it is only counted (errors_by_reason['heartbeat'])",
                        self.name,
                        type(e).__name__,
                        e,
                        exc_info=True,
                    )
            n += 1
            await asyncio.sleep(max(0.0, began + hb.period_ms / 1000.0 - loop.time()))

    def write_misfit(self, node_id: str, value: Any, after: Any = None) -> str | None:
        """Why ``value`` cannot be written to ``node_id`` as the server described the node at the last
        connect or write (its DataType, value rank, enumeration, and the type and shape a BaseDataType node
        held then), None when it can or the node is not known yet. No call to the server on the way: cheap
        enough to ask before each write that depends on another. A BaseDataType node refused for the type or
        shape it held has that value read again in the background (``_reheld``), at most once per
        ``HELD_RECHECK_S``: nothing written to it would read it, and a PLC download that made it hold
        another type would go unseen until the next reconnect. ``after``: a value written before ``value``
        (an output's, before its reset); a BaseDataType node that holds nothing would hold its type and
        shape then, and ``value`` is judged by those (1 makes it hold an Int32, which refuses 0.5)."""
        nt = self._types.get(node_id)
        why = _misfit(nt, value, node_id)
        then = None if why is not None or nt is None or after is None else _holding(nt, after, node_id)
        if then is not None and (why := _misfit(then, value, node_id)) is not None:
            why += f"; it holds nothing now, and {reprlib.repr(after)} written first would make it hold that"
        if why is not None and nt is not None and (then is not None or _refused_by_held(nt, value, node_id)):
            self._reheld(node_id)
        return why

    async def ensure_type(self, node_id: str) -> None:
        """Read ``node_id``'s type now when none is known, so that ``write_misfit`` can judge a value before it
        goes out: the target's check at connect could not read the node (the PLC busy then, the node not
        readable for a while, retyped since), and a value judged by nothing was written, its reset refused
        next, the node keeping it for good. Read, the target is judged again in the background (its
        ``target_errors`` entry, said). So is a BaseDataType (or abstract numeric) node's whose value, read
        with its type, had a Bad status: what it holds is unknown, not nothing (``_NodeType.held_unread``).
        Raises ``OpcUaNodeError`` (no such node) or ``OpcUaTypeMismatch`` (a type the agent cannot encode
        for), as a write would; a node that cannot be read now raises a retryable error, so the value waits
        (an action's retries) until it can be judged. A multi-state node's own EnumStrings or EnumValues are read
        again (one Read, as its write does): a PLC download may have changed them since the last write, and a
        node not subscribed gets no SemanticsChanged flag to say so; judged by the former, a reset the download
        took away passed, the value was written and its reset refused, the node keeping the value."""
        known = self._types.get(node_id)
        if self._type_known(node_id) and known is not None and not _aged(known) and known.enum_prop is None:
            return
        node = await self._target_node(node_id, f"check of {node_id}")
        try:
            async with self._write_lock(node):  # a write's own read of the type is not overwritten
                known = self._types.get(node_id)
                if known is not None and _aged(known):  # a download may have changed it in place, unnoticed
                    known, _ = await self._type_again(node, node_id, known)
                if self._type_known(node_id) and known is not None:
                    async with asyncio.timeout(self.settings.connect_timeout_s):
                        changed = known.enum_prop is not None and await self._states_changed(
                            node, node_id, known
                        )
                        if changed:
                            await self._types.read(node, node_id, self._props_unread)
                    if changed:
                        self._recheck(node_id)
                    return
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    nt = await self._types.read(node, node_id, self._props_unread)
                if nt.vtype is ua.VariantType.Variant:
                    self._held_at[node_id] = time.monotonic()
                if nt.held_unread is not None:
                    raise OpcUaServerBusy(
                        f"opcua source {self.name}: node {node_id} is a {nt.shown} node whose value cannot be "
                        f"read ({nt.held_unread}), so the type it holds is unknown; what is written to it "
                        "waits until it can be read, so that the reset it needs is judged before the value "
                        "goes out"
                    )
        except OpcUaTypeMismatch as e:
            raise OpcUaTypeMismatch(f"opcua source {self.name}: {e}") from None
        except ua.UaStatusCodeError as e:
            code = code_name(e.code)
            if code == "BadNodeIdUnknown":
                raise self._no_such_node(node_id) from None
            raise OpcUaServerBusy(
                f"opcua source {self.name}: node {node_id}'s type cannot be read ({code}); what is written "
                "to it waits until it can, so that the reset it needs is judged before the value goes out"
            ) from None
        except ua.UaError as e:
            raise OpcUaError(
                f"opcua source {self.name}: node {node_id}'s type not read ({type(e).__name__}: {e})"
            ) from None
        except (TimeoutError, ConnectionError, OSError) as e:
            raise OpcUaNotConnected(
                f"opcua source {self.name}: node {node_id}'s type not read, connection lost or no answer "
                f"({e!r})"
            ) from None
        if node_id in self.target_errors:
            self._recheck(node_id)

    def _type_known(self, node_id: str) -> bool:
        """Whether ``node_id``'s type is known, with the type a BaseDataType (or abstract numeric) node holds."""
        nt = self._types.get(node_id)
        return nt is not None and nt.held_unread is None

    async def _type_again(self, node: Node, node_id: str, nt: _NodeType) -> tuple[_NodeType, bool]:
        """``node_id``'s type ``nt``, read ``_TYPE_HOLD_S`` ago or longer, read again (``_Types.read``), and
        False; when that read fails for a cause that passes or tells nothing of the type (no answer within
        connect_timeout_s or twice its last read, a Bad status other than the node gone, its properties not found
        out now), ``nt`` kept, to be read again after another hold, and True: it judged every write of the session
        before the hold, and taken as unknown, a server busy for a while, or out of Browse continuation points for
        a node of 10,000 references, had every write to it refused (a heartbeat's, the PLC's watchdog then
        tripping) for want of a read again. Dropped during that failed read (a download's gone notice), ``nt`` is
        not the node's type any more: ``OpcUaServerBusy``, the write retried."""
        token = self._types.token(node_id)
        # a read that took long before (a paged Browse of seconds) is given twice that: cut at connect_timeout_s, it
        # would never end, its requests sent for nothing at each hold
        bound = max(self.settings.connect_timeout_s, 2 * nt.read_s)
        try:
            async with asyncio.timeout(bound):
                return await self._types.read(node, node_id, self._props_unread), False
        except OpcUaTypeMismatch as e:
            if not e.props_unread:
                raise
            why = str(e)
        except ua.UaStatusCodeError as e:
            if code_of(e.code) in _NODE_GONE:
                raise
            why = code_name(e.code)
        except TimeoutError:
            why = f"no answer within {bound:g} s"
        kept = dataclasses.replace(nt, read_at=time.monotonic())
        if not self._types.keep(node_id, kept, token):
            # dropped while it was read (a download's gone notice, a SemanticsChanged flag: a download's server is
            # often busy or silent then): ``nt`` is no longer the node's type, and judged by it a 14-byte text went
            # to the node made again as a STRING[10]; the write waits until the type can be read
            raise OpcUaServerBusy(
                f"opcua source {self.name}: node {node_id} changed while its type was read again, and that read "
                f"failed ({why}); what is written to it waits until its type can be read"
            )
        self._burst.log(
            f"type_again:{node_id}",
            "opcua source %s: node %s's type not read again (%s): judged as read before, read again in %g s",
            self.name,
            node_id,
            why,
            _TYPE_HOLD_S,
            level=logging.INFO,
        )
        return kept, True

    def _type_again_later(self, node: Node, node_id: str, nt: _NodeType) -> None:
        """``_type_again`` for the heartbeat's node, in the background (one at a time): its write never waits for
        it, and never read again, a counter's node a download made a SINT on a server that converts what it is
        sent (no BadTypeMismatch) had every beat past 127 refused BadOutOfRange, the counter wrapping at the
        INT's top, for hours."""
        key = f"type_again:{node_id}"
        if key in self._target_checks:
            return

        async def again() -> None:
            try:
                await self._type_again(node, node_id, nt)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the node gone, the session lost: the next beat's write says it
                log.debug("opcua source %s: %s's type not read again: %r", self.name, node_id, e)
            finally:
                self._target_checks.pop(key, None)

        self._target_checks[key] = asyncio.get_running_loop().create_task(again())

    async def _target_node(self, node_id: str, what: str) -> Node:
        """The node ``node_id`` names on this session (``what``: the call, named when not connected):
        ``OpcUaNotConnected``, or ``OpcUaNodeError`` for a malformed node id (or a namespace URI the server
        lacks)."""
        client = self._require_client(what)
        try:
            return await _node(client, node_id, self._resolved, self._resolve)
        except OpcUaNodeError as e:
            raise OpcUaNodeError(f"opcua source {self.name}: {e}") from None
        except Exception as e:
            raise OpcUaNodeError(f"opcua source {self.name}: malformed node id {node_id!r} ({e})") from None

    def _no_such_node(self, node_id: str) -> OpcUaNodeError:
        """The error for a server that says ``node_id`` does not exist (BadNodeIdUnknown)."""
        return OpcUaNodeError(f"opcua source {self.name}: node {node_id!r} does not exist on the server")

    def _reheld(self, node_id: str) -> None:
        """Read again the value a BaseDataType write target holds, unless it was read (by a write, a check,
        or this) less than ``HELD_RECHECK_S`` ago; a type or shape other than the one kept replaces it and
        the target is judged again (``_recheck``: ``target_errors``, said). Asked while a read of it runs, it is
        read once more after that one, ``HELD_RECHECK_S`` after that one began: the running read may have been
        answered before the PLC retyped the node, and dropped, the ask left the type before the retype judging
        the outputs' values (an edge's reset refused by it, not written) until a later refusal asked again, which
        a line whose outputs had stopped never made."""
        client, key = self._client, f"held:{node_id}"
        if client is None or self.state is not ConnectionState.CONNECTED:
            return
        if key in self._target_checks:
            self._reheld_again.add(node_id)
            return
        if time.monotonic() - self._held_at.get(node_id, -math.inf) < HELD_RECHECK_S:
            return

        async def reread() -> None:
            try:
                while True:
                    began = self._held_at[node_id] = time.monotonic()
                    await self._held_again(client, node_id)
                    if node_id not in self._reheld_again or self._client is not client:
                        return
                    self._reheld_again.discard(node_id)
                    await asyncio.sleep(max(0.0, began + HELD_RECHECK_S - time.monotonic()))
                    if self._client is not client or self.state is not ConnectionState.CONNECTED:
                        return
            finally:
                self._target_checks.pop(key, None)
                self._reheld_again.discard(node_id)

        self._target_checks[key] = asyncio.get_running_loop().create_task(reread())

    async def _held_again(self, client: Client, node_id: str) -> None:
        """One read of ``_reheld``: what ``node_id`` holds now; a type or shape other than the one kept replaces it
        and the target is judged again."""
        try:
            node = await _node(client, node_id, self._resolved, self._resolve)
            async with self._write_lock(node):  # a write's own read of the node is not overwritten
                nt = self._types.get(node_id)
                if nt is None or not _held_judges(nt):
                    return
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    held = await _held(node, (nt.held, nt.held_shape))
                if nt.vtype is not ua.VariantType.Variant:
                    held = (
                        held[0],
                        None,
                    )  # an abstract numeric node: only its type is kept (``_node_type``)
                self._held_at[node_id] = time.monotonic()
                if self._types.get(node_id) is not nt or held == (nt.held, nt.held_shape):
                    return
                self._types[node_id] = dataclasses.replace(
                    nt, held=held[0], held_shape=held[1], held_unread=None
                )
                if _form(held) == _form((nt.held, nt.held_shape)):
                    return  # an array's lengths alone (a buffer that grows) judge nothing: kept quietly
            shown = "nothing" if held[0] is None else held[0].name + (f" {list(held[1])}" if held[1] else "")
            self._recheck(node_id, quiet=not self._held_said(node_id, shown))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the session lost meanwhile, a timeout: read again at a later refusal
            log.debug("opcua source %s: %s's held value not read again: %r", self.name, node_id, e)

    def _held_said(self, node_id: str, shown: str) -> bool:
        """A re-read (``_reheld``) found ``node_id`` holding another kind or shape (``shown``): said at INFO
        when it held the one before for ``HELD_QUIET_S`` or more (with the changes not said meanwhile), else
        counted (notice ``held_type_changes``) and said only at the first such change (False: not said, nor
        is the target's check that follows). A node that flaps (a PLC program retyping it, a server answering
        alternately) was said twice a second for as long as the outputs' results came."""
        now = time.monotonic()
        last, unsaid = self._held_changes.get(node_id, (-math.inf, 0))
        if now - last >= HELD_QUIET_S:
            self._held_changes[node_id] = (now, 0)
            log.info(
                "opcua source %s: write target %s now holds %s; judged again as it is now%s",
                self.name,
                node_id,
                shown,
                f" (after {unsaid} change(s) within {HELD_QUIET_S:.0f}s of each other, counted in notice "
                "held_type_changes)"
                if unsaid
                else "",
            )
            return True
        self._held_changes[node_id] = (now, unsaid + 1)
        msg = (
            f"opcua source {self.name}: write target {node_id} now holds {shown}, changed again within "
            f"{HELD_QUIET_S:.0f}s (a PLC program retyping it, or a server answering alternately); each change "
            "is still read and judged, but counted (notice held_type_changes), not said, until it holds one "
            f"type for {HELD_QUIET_S:.0f}s"
        )
        first = "held_type_changes" not in self.notices.counts
        self.notices.note("held_type_changes", "%s", msg, level=logging.INFO)  # logs the first one
        if unsaid == 0 and not first:  # the first change of a later spell (or another node's) is said too
            log.info("%s", msg)
        return False

    def _type_changed_at_write(self, node_id: str, was: _NodeType, now: _NodeType, code: int | None) -> None:
        """A write answered ``code`` (``_TYPE_ANSWERS``), or the Read of an unwatched target's attributes before it
        (None), found ``node_id`` of another type than the one read before (``was``): counted (notice
        ``write_type_changed``) and said at INFO; the value is judged by ``now``."""
        how = f"answered {code_name(code)}" if code is not None else "read before a write (not watched)"
        msg = (
            f"opcua source {self.name}: write target {node_id} {how}: its type changed since "
            f"it was read ({was.shown}, DataType {was.data_type} -> {now.shown}, DataType {now.data_type}: a PLC "
            "download); the value is judged by the type it has now, never sent again as converted for the old one"
        )
        self.notices.note("write_type_changed", "%s", msg, level=logging.INFO, cause=node_id)

    def _write_lock(self, node: Node) -> asyncio.Lock:
        """The lock a node's writes take, however its node id is written (ns=2;s=X, nsu=urn:plc;s=X): kept
        by its resolved NodeId while a write (or a re-read of what it holds) holds it."""
        key = node.nodeid.to_string()
        lock = self._write_locks.get(key)
        if lock is None:
            lock = self._write_locks[key] = asyncio.Lock()
        return lock

    def expect_writes(
        self,
        targets: list[tuple[str, Any]] | list[tuple[str, Any, Any]] | list[tuple[str, Any, Any, str | None]],
        where: str | None = None,
    ) -> None:
        """Nodes (and values) this source will be asked to write: checked after every connect, so that a
        missing, read-only or wrongly typed target is reported at start, not at the first defect. A target may
        carry a note, ``note(why, refusal)``: how a refusal of that value for the node's type is said (its
        check's and its writes'), by the one who knows where the value came from (a gateway variable), and the
        place that writes it (``actions.label.value``): a write saying that place (``write(..., at=)``) gets that
        place's note. Keyed by node and value, two actions writing one value to one node (one from a variable, one
        the config's own) had each other's refusal said with the variable. ``where``: the file that holds those
        places (the config's path), named before the place in a refusal at connect (``actions.label.value`` named
        no file)."""
        self._targets_where = where
        self._write_targets = [(t[0], t[1]) for t in targets]
        self._target_notes = [(t[2] if len(t) > 2 else None, t[3] if len(t) > 3 else None) for t in targets]
        self._write_notes = {t[3]: t[2] for t in targets if len(t) > 3 and t[2] is not None}  # type: ignore[misc]

    def add_target_listener(self, listener: Callable[[str, Any, str | None, bool, str | None], None]) -> None:
        """``listener(node_id, value, why, whole, at)`` at each verdict of a write target's check (at connect, and
        when the node changes): ``why`` None when the node takes the value; ``whole`` when the node itself fails
        (missing, read-only, not a variable), not the value; ``at`` the place that writes it (``expect_writes``),
        None when not told. Not told of a check that got no answer."""
        self._target_listeners.append(listener)

    @staticmethod
    def _noted(
        note: Callable[[str, OpcUaTypeMismatch], str] | None, err: OpcUaTypeMismatch, why: str | None = None
    ) -> str:
        """``why`` (default: the refusal's text) as the note given for the value written (``note``) says it, if any."""
        why = str(err) if why is None else why
        return why if note is None else note(why, err)

    async def _check_targets(self, client: Client, only: str | None = None, quiet: bool = False) -> None:
        """Judge the write targets (``only``: that node id's) as the server describes them now, into
        ``target_errors``, each said once per burst (``quiet``: counted only). A target judged again keeps
        its last verdict until the new one replaces it: dropped first, a locked node looked fine to a
        reader while the server took its time to answer. At a connect, a target found failing at the last one
        too, for the same reason, is a standing condition: neither counted nor said again (before, each of its
        values was counted at every connect, and said); a new reason is counted and said."""
        before = self._targets_said
        now: dict[str, set[str]] = {}  # the targets this check finds failing, each with why
        if only is None:
            self.target_errors.clear()
        found: str | None = None  # ``only``'s verdict (the first of its values' that fails)
        # each node's access as its first value's read found it, and the nodes a later value's read found otherwise
        seen: dict[str, bool] = {}
        turned: set[str] = set()
        hb = self.settings.heartbeat
        beat = [(hb.node_id, True if hb.kind == "toggle" else 1)] if hb else []
        for i, (node_id, value) in enumerate(self._write_targets + beat):
            if only is not None and node_id != only:
                continue
            note, at = self._target_notes[i] if i < len(self._target_notes) else (None, None)
            # one target can never fail the session (and so every tag): each is judged on its own
            locked = self._target_access.get(node_id) is False
            whole = True
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    why = await _check_target(
                        client,
                        node_id,
                        value,
                        self._types,
                        self._resolved,
                        self._resolve,
                        self._target_access,
                        unread=self._props_unread,
                    )
                if (nt := self._types.get(node_id)) is not None and nt.vtype is ua.VariantType.Variant:
                    self._held_at[node_id] = time.monotonic()  # read with its type (``write_misfit``)
                if why is None and hb and hb.kind == "counter" and node_id == hb.node_id:
                    top = _counter_top(self._types.get(node_id))  # the counter's highest value fits too
                    why = _misfit(self._types.get(node_id), top, node_id)
                    if why:
                        why += f"; a heartbeat counter counts to {top}: use an integer node, or kind: toggle"
                whole = False
                if why is not None:
                    err = _misfit_error(self._types.get(node_id), value, node_id)
                    whole = err is None or str(err) != why  # the node itself, not the value
                    if not whole and err is not None:
                        why = self._noted(note, err, why)
                if why is None or not whole or any(k in why for k in _NODE_FAILS):
                    for listen in self._target_listeners:  # a verdict, not a read that failed this time
                        listen(node_id, value, why, whole, at)
            except TimeoutError:
                why = f"node {node_id}: no answer within {self.settings.connect_timeout_s}s"
            except Exception as e:
                why = f"node {node_id}: cannot be checked ({type(e).__name__}: {e})"
            if locked and self._target_access.get(node_id) is True:  # seen here before the watch says it
                self.writable_again[node_id] = self.writable_again.get(node_id, 0) + 1
            access = self._target_access.get(node_id)
            if access is not None and seen.setdefault(node_id, access) != access:
                # the node locked or unlocked between two of its values' reads: the first's verdict is stale, and
                # the watch compares with the access read last, so it sees no change after
                turned.add(node_id)
            if why:
                if not whole and at is not None and note is None:
                    # the place that writes the value refused: "cannot write True" named no field, and for an
                    # output's value false it was the implied reset's (its opposite), a value the config nowhere
                    # holds (a note, a gateway variable's, names the place itself)
                    why = (
                        f"{at}: {why}"
                        if self._targets_where is None
                        else f"{self._targets_where}: {at}: {why}"
                    )
                # a node's first value refused is said (its value before its reset): the last one was kept, so
                # value: false to a String node was shown as "cannot write True", the reset no one wrote
                if only is None:
                    self.target_errors.setdefault(node_id, why)
                found = found or why
                # the same reason as at the last check, or a value of a target this check counted already
                standing = only is None and (why in before.get(node_id, ()) or node_id in now)
                now.setdefault(node_id, set()).add(why)
                if not standing:
                    self.stats.error("write_target", why)
                if not (quiet or standing):
                    self._burst.log(
                        f"target:{node_id}", "opcua source %s: writes will fail: %s", self.name, why
                    )
        if only is None:
            self._targets_said = now  # a check cut short by a lost session keeps the former ones
        elif found is None:
            self.target_errors.pop(only, None)
            self._targets_said.pop(only, None)
        else:
            self.target_errors[only] = found
            self._targets_said[only] = now[only]
        for node_id in turned:  # judged once more (after this check, when it is one of ``_recheck``'s)
            self._recheck(node_id, quiet=quiet)

    async def _watch_targets(self, client: Client) -> None:
        """Watch each write target's DataType, ArrayDimensions and UserAccessLevel with a monitored item
        (3 a node, in the subscription; sampled every second, notified only on a change): a PLC download
        that retypes a node (an INT made a REAL, an array resized) or a PLC put in a mode where the node
        may not be written makes its type be read again and the target judged again at once
        (``target_errors``), so that writes go as the node is now, not as it was at connect. A server
        that keeps the session through such a change but checks no type on a write (it stores what it
        gets) would otherwise get the old type until the next reconnect.

        Tags come first: the items are made after the tags' values, only when every tag got its item, and
        only when they fit under the monitored-item limits the server states (``_item_room``); a server
        that refuses one of them gets back the ones it took, and a subscription made for the watch alone
        (a write-only source) is deleted. Each case is said once (notice ``targets_unwatched``) and the
        former behaviour holds: a retype is caught by the server's type check at the write and at
        reconnect. ``watch_write_targets: false`` makes none (nor, on a write-only source, a subscription)."""
        if not self.settings.watch_write_targets:
            return
        nodes: dict[ua.NodeId, list[str]] = {}
        # not the heartbeat's node: its beats have its attributes Read before each of them (``write``), which a watch
        # would not spare (its notice comes a sampling and a publishing interval late, beats going meanwhile)
        for node_id in dict.fromkeys(n for n, _ in self._write_targets):
            # checked: its type read, or found read-only (its access read, its type not): a node locked at
            # connect is watched too, so that the PLC unlocking it is seen without a reconnect
            known = node_id in self._types or self._target_access.get(node_id) is False
            if known and node_id in self._resolved:
                nodeid = ua.NodeId.from_string(self._resolved[node_id])
                nodes.setdefault(nodeid, []).append(node_id)
        if not nodes:
            return
        wanted = len(nodes) * len(_WATCHED)
        if self._items_full:
            self._unwatched(
                f"the server refused some tags a monitored item for want of room, so the {wanted} items the "
                "watch needs are not asked for"
            )
            return
        room = await self._item_room(client)
        if room is not None and room[0] < wanted:
            self._unwatched(
                f"the server states {room[1]}, and the {len(self._items)} tag item(s) leave room for "
                f"{max(room[0], 0)} of the {wanted} items the watch needs (3 a write target), which are kept "
                "for tags"
            )
            return
        if self._sub is None and (full := await self._subscription_room(client)) is not None:
            self._room_wanted = True
            self._unwatched(
                f"the server states {full}: it has no room for the subscription the watch needs (this source "
                "only writes, so it holds none), and none is asked for; it is asked for once the server states "
                "room (read again at each keepalive_check_s)"
            )
            return
        self._target_nodes = nodes
        refused: set[str] = set()
        made = self._sub is None  # a write-only source: the subscription is the watch's alone
        handles: list[int] = []
        sub: Subscription | None = None
        new: list[Subscription] = []  # made on the server, also when _new_subscription fails after that
        # the attribute whose CreateMonitoredItems was answered with another count of results than items
        miscounted: ua.AttributeIds | None = None
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s * 2):
                sub = self._sub or await self._new_subscription(client, made=new)
                for attr in _WATCHED:
                    try:
                        got = await sub.subscribe_data_change(
                            [client.get_node(n) for n in nodes],
                            attr=attr,
                            queuesize=1,
                            sampling_interval=ua.Double(1000.0),
                        )
                    except ua.UaStatusCodeError as e:
                        refused.add(code_name(e.code))
                        break
                    for r in got:
                        if isinstance(r, ua.StatusCode):
                            refused.add(code_name(r))
                        else:
                            handles.append(r)
                    if len(got) != len(nodes):
                        # a faulty server's answer: which node each item watches cannot be told (asyncua pairs them
                        # in order), and a target left without one was counted watched, its retype never seen
                        refused.add(f"{len(got)} result(s) for {len(nodes)} item(s), a server fault")
                        miscounted = attr
                    if refused:
                        break
        except (ua.UaError, TimeoutError) as e:
            refused.add(type(e).__name__)
        except Exception:
            if sub is None and new:  # not left on the server for the session's life (the link may be gone)
                with contextlib.suppress(ua.UaError, TimeoutError, OSError):
                    async with asyncio.timeout(self.settings.connect_timeout_s):
                        await new[0].delete()
            raise
        if sub is None and new:  # _new_subscription failed after making it: given back below
            sub = new[0]
        if not refused:
            self.targets_watched = len(handles)
            return
        if made and "BadTooManySubscriptions" in refused and self._left_subs():
            # what fills the server may be this source's former session (cut): asked again at each check
            # until that session has timed out, not for good (a PLC that an HMI fills is not pressed)
            self._room_wanted = True
        # the ones the server took are given back: they would hold room a tag (of this source after a
        # reconnect, or of another session) needs, for a watch that is incomplete anyway
        self._target_nodes = {}
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                if sub is not None and made:
                    await sub.delete()
                    if self._sub is sub:
                        self._sub = None
                elif sub is not None and miscounted is not None:
                    # a faulty answer: which item an id it names is cannot be told (a tag's, another call's waiting
                    # for its answer), so none is deleted; asyncua's registrations of the watch's forgotten
                    watched = [client.get_node(n) for n in nodes]
                    self._left_on_server(
                        _forget_named(sub, handles, nodes, _WATCHED)
                        + len(_forget_unanswered(sub, watched, miscounted) or ())
                    )
                elif sub is not None and (left := await _delete_named(sub, handles, nodes, _WATCHED)):
                    # not deleted while an item of the subscription waited for its answer: counted, said
                    self.items_left_on_server += left
                    log.info(
                        "opcua source %s: %d monitored item(s) of the write targets' watch left on the PLC until the "
                        "subscription ends, not given back: another item waited for its answer, and a delete by "
                        "an id may take it",
                        self.name,
                        left,
                    )
        except (ua.UaError, TimeoutError) as e:
            log.info("opcua source %s: the write targets' monitored items not deleted: %r", self.name, e)
        self._unwatched(f"the server refused them ({', '.join(sorted(refused))})")

    async def _item_room(self, client: Client) -> tuple[int, str] | None:
        """How many more monitored items the server's stated limits leave this session, and the limit that
        bounds it (``MaxMonitoredItemsPerSubscription 200``); None when it states none (or cannot say). The
        tags' items count against both limits; MaxMonitoredItems counts every session's items, of which
        only this one's are known."""
        ids = {
            "MaxMonitoredItemsPerSubscription": ua.ObjectIds.Server_ServerCapabilities_MaxMonitoredItemsPerSubscription,
            "MaxMonitoredItems": ua.ObjectIds.Server_ServerCapabilities_MaxMonitoredItems,
        }
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                got = await client.uaclient.read_attributes(
                    [client.get_node(i).nodeid for i in ids.values()], ua.AttributeIds.Value
                )
        except (ua.UaError, TimeoutError):
            return None
        room: tuple[int, str] | None = None
        for name, dv in zip(ids, got, strict=False):
            v = dv.Value.Value if dv.Value is not None and _is_good(dv.StatusCode) else None
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:  # 0: no limit
                left = v - len(self._items)
                if room is None or left < room[0]:
                    room = (left, f"{name} {v}")
        return room

    async def _subscription_room(self, client: Client) -> str | None:
        """The limit that leaves the server no room for one more subscription (``MaxSubscriptions 1, and
        it holds 1``), read from its ServerCapabilities and ServerDiagnosticsSummary; None when there is
        room or it does not say (asyncua states neither: a refusal then says it)."""
        ids = (
            ua.ObjectIds.Server_ServerCapabilities_MaxSubscriptions,
            ua.ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSubscriptionCount,
        )
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                got = await client.uaclient.read_attributes(
                    [client.get_node(i).nodeid for i in ids], ua.AttributeIds.Value
                )
        except (ua.UaError, TimeoutError):
            return None
        most, held = (
            _positive(dv.Value.Value) if dv.Value is not None and _is_good(dv.StatusCode) else None
            for dv in got
        )
        if most is None or held is None:  # 0 held reads as None: room
            return None
        left = self._left_subs()
        if held - left < most:  # our former session's subscription is no other client's
            return None
        return (
            f"MaxSubscriptions {most}, and it holds {held} (ServerDiagnosticsSummary.CurrentSubscriptionCount)"
            + (f", {left} of them left by this source's former session until it times out" if left else "")
        )

    def _left_subs(self) -> int:
        """The subscriptions this source's former sessions left on the server that it still holds (``_subs_left``):
        those of a session closed since, or past its timeout, are gone."""
        now = time.monotonic()
        self._subs_left = {k: left for k, left in self._subs_left.items() if left[1] > now}
        return sum(n for n, _ in self._subs_left.values())

    async def _room_again(self, client: Client) -> None:
        """A write-only source's watch that found no room for its subscription, tried again at a check:
        made once the server states room (a session that held one timed out, an HMI closed), and said."""
        if await self._subscription_room(client) is not None:
            return
        self._room_wanted = False
        await self._watch_targets(client)
        if self.targets_watched:
            self.notices.note(
                "targets_watched_late",
                "opcua source %s: the server has room for the watch's subscription now; its write targets' "
                "DataType, ArrayDimensions and UserAccessLevel are watched (%d monitored items)",
                self.name,
                self.targets_watched,
                level=logging.INFO,
            )

    def _unwatched(self, why: str) -> None:
        self.notices.note(
            "targets_unwatched",
            "opcua source %s: its write targets' DataType, ArrayDimensions and UserAccessLevel are not "
            "watched: %s. A node retyped by a PLC download while the session stays up is seen by a Read of "
            "its DataType, ValueRank and ArrayDimensions before each write, a heartbeat's beat too "
            "(watch_write_targets: false stops asking)",
            self.name,
            why,
            level=logging.INFO,
        )

    def _target_changed(self, nodeid: ua.NodeId, attr: Any, val: Any) -> None:
        """A watched write target's DataType, ArrayDimensions or UserAccessLevel as the server states it now
        (the first notification: as at connect). When it differs from what the last check read, the node's
        type is forgotten and the target judged again (``_check_targets``)."""
        for node_id in self._target_nodes.get(nodeid, ()):
            nt = self._types.get(node_id)
            if attr == ua.AttributeIds.UserAccessLevel:
                if not isinstance(val, int):
                    continue
                # compared with what the last check read (a notification may come after a change)
                writable = bool(val & ua.AccessLevel.CurrentWrite.mask)
                if self._target_access.get(node_id, writable) == writable:
                    continue
                self._target_access[node_id] = writable
                if writable:
                    self.writable_again[node_id] = self.writable_again.get(node_id, 0) + 1
                what = "may be written again" if writable else "may no longer be written by this session"
                why = f"its UserAccessLevel changed (now {val}): it {what}"
            elif nt is None:
                continue  # the type is read at the next write or check anyway
            elif attr == ua.AttributeIds.DataType:
                if not isinstance(val, ua.NodeId) or val.to_string() == nt.data_type:
                    continue
                why = f"its DataType changed ({nt.data_type} -> {val.to_string()})"
            else:
                dims = tuple(val) if isinstance(val, list) else ()
                if dims == nt.dims:
                    continue
                why = f"its ArrayDimensions changed ({list(nt.dims)} -> {list(dims)})"
            self._types.pop(node_id, None)
            log.warning(
                "opcua source %s: write target %s: %s (a PLC download or mode change); it is checked again "
                "and written as it is now",
                self.name,
                node_id,
                why,
            )
            self._recheck(node_id)

    def _recheck(self, node_id: str, quiet: bool = False) -> None:
        """Judge the write target ``node_id`` again in the background (``_check_targets``); ``quiet``: a
        change counted, not said (``_held_said``): its outcome is not said either. Asked while a check of it
        runs, it is judged once more after that one: the running check may have read the node before the change
        (a PLC's unlock seen by the watch while an edge's check that read it locked was finishing left it
        "read-only" in ``target_errors`` for good, its level never written again)."""
        client = self._client
        if client is None:
            return
        if node_id in self._target_checks:
            self._recheck_again[node_id] = self._recheck_again.get(node_id, True) and quiet
            return

        async def check() -> None:
            said = not quiet
            try:
                await self._check_targets(client, only=node_id, quiet=quiet)
                # not against a session that ended meanwhile (its reads fail at once, said as a node unreadable):
                # the next connect judges every target
                while node_id in self._recheck_again and self._client is client:
                    again_quiet = self._recheck_again.pop(node_id)
                    said = said or not again_quiet
                    await self._check_targets(client, only=node_id, quiet=again_quiet)
                if node_id not in self.target_errors and said:
                    log.info("opcua source %s: write target %s fits its writes again", self.name, node_id)
            finally:
                self._target_checks.pop(node_id, None)
                self._recheck_again.pop(node_id, None)

        self._target_checks[node_id] = asyncio.get_running_loop().create_task(check())

    def _node_error(self, node_id: str, why: Any) -> None:
        why_s = why if isinstance(why, str) else f"{type(why).__name__}: {why}"
        self._node_failing(
            node_id, f"node {node_id!r} cannot be subscribed ({why_s}); check the node_id (browse the server)"
        )

    def _node_failing(self, key: str, msg: str, reason: str = "node", said: bool = True) -> bool:
        """A node that gets no values (``key``: its node id as the config lists it) is named in ``node_errors``
        with why. Counted (``stats.errors``, ``errors_by_reason[reason]``) and said only when it starts failing:
        at the first connect that finds it so, or again after it got values in between; a node failing at every
        connect for the same reason is one standing condition, shown on /status for as long as it lasts; a new
        reason (``msg``) is counted and said as a start. Said (``said``) in a WARNING
        line of its own for the first NODE_ERRORS_LOGGED of a connect, the others in one line with their count
        (``_say_nodes_unsaid``). Before, each failing node was counted and said at every connect: 5,000 wrong node
        ids gave 5,000 lines and 5,000 errors more at each reconnect. True if it started failing now."""
        self.node_errors[key] = msg
        if self._nodes_said.get(key) == msg:
            return False
        self._nodes_said[key] = msg
        self.stats.error(reason, msg)
        if said and self._nodes_logged < NODE_ERRORS_LOGGED:
            self._nodes_logged += 1
            self._burst.log(f"node:{key}", "opcua source %s: %s", self.name, msg)
        elif said:
            self._nodes_unsaid += 1
        return True

    def _say_nodes_unsaid(self) -> None:
        """One line for the nodes that started failing at this connect past the first NODE_ERRORS_LOGGED."""
        if self._nodes_unsaid:
            log.warning(
                "opcua source %s: %d more node(s) get no values (%d in all); each is named with why on /status "
                "(sources.%s.node_errors, edge-agent status)",
                self.name,
                self._nodes_unsaid,
                len(self.node_errors),
                self.name,
            )
        self._nodes_unsaid = self._nodes_logged = 0

    def _check_s(self, client: Client | None = None) -> float:
        """How often the session is checked (a read of the server state; a subscription's keep-alive):
        ``keepalive_check_s``, or a third of the session timeout the server granted when that is shorter than two
        checks. A PLC granting 1 s whatever was asked (an embedded server's fixed timeout) closed the session of
        an agent whose tags stood still for a second, since no request came within it: the source reconnected
        every 2.5 s, each time counted unreachable, its writes in the gap failed."""
        client = client if client is not None else self._client
        granted = (client.session_timeout or 0) / 1000.0 if client is not None else 0.0
        if 0 < granted < 2 * self.settings.keepalive_check_s:
            return max(granted / 3.0, 0.05)
        return self.settings.keepalive_check_s

    async def _watch(self) -> None:
        """Return when the connection is gone: probe the server state now and then."""
        assert self._client is not None
        every = self._check_s()
        status_nodes = [
            self._client.get_node(ua.ObjectIds.Server_ServerStatus_State).nodeid,
            self._client.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime).nodeid,
        ]
        await self._clock_sampling(status_nodes[1])
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that races
            # with the awaited result, and this loop would then never stop
            slept = time.monotonic()
            try:
                async with asyncio.timeout(every):
                    await self._lost.wait()
                return
            except TimeoutError:
                pass
            woke = time.monotonic()
            if woke - slept > every * 1.5 + 0.5:
                # this process was too busy to read the socket (a long type load, a loaded CPU): the
                # silence may be its own, so the server is given its full time again
                self._sub_since = woke
                self._clock, self._clock_moved_at = None, None
            stalled = self._stalled_sub()
            if stalled is not None:
                self._halted(stalled)
                raise stalled
            try:
                got = await self._read_state(self._client, status_nodes)
                if got and got[0].StatusCode is not None and not got[0].StatusCode.is_good():
                    try:
                        got[0].StatusCode.check()  # the state's own status: as a refused read was
                    except ua.UaStatusCodeError as e:
                        if code_name(e.code) in _SESSION_GONE:
                            raise
                        self._state_refused(e)  # the clock is still judged, the state is not
                self._judge_status(got)
                if self._halt_reason in _STALLS and self._publishing_again():
                    self._recovered()
                if self._halt_reason is not None:
                    self._halt_checks += 1  # still halted: on /status (``halted``), not said again
                else:  # a healthy session (a server still halted is tried again with a growing pause)
                    self._backoff.reset()
                if self._room_wanted:
                    await self._room_again(self._client)
            except asyncio.CancelledError:
                raise
            except _Halted as e:
                self._halted(e)
                raise
            except ua.UaStatusCodeError as e:
                if code_name(e.code) in _SESSION_GONE:
                    log.info("opcua source %s: keepalive failed: %r", self.name, e)
                    return
                self._state_refused(e)
                if self._halt_reason is None:  # it answered: a healthy session as far as it shows
                    self._backoff.reset()
            except TimeoutError:
                # the connection is open but the server answers nothing: not "unreachable"
                stalled = _Silent(
                    f"the server stopped answering: a read of its state got no answer within "
                    f"{self.settings.connect_timeout_s}s while the connection stayed open (a stalled "
                    "server); its tags' last values are stale: their readings are passed on BAD and the "
                    "source reconnects",
                    "server_not_answering",
                )
                self._halted(stalled)
                raise stalled from None
            except Exception as e:
                log.info("opcua source %s: keepalive failed: %r", self.name, e)
                return

    async def _read_state(self, client: Client, nodes: list[ua.NodeId]) -> list[ua.DataValue]:
        """The Values of ``nodes`` (the server's state, its clock), read with ``connect_timeout_s`` for an answer
        counted from the last answer to a request of this session sent before it: ``TimeoutError`` only when the
        server answered none of those within ``connect_timeout_s``. A server answering one request at a time (many
        PLCs' stacks) answers this read after those ahead of it: behind a write, a type's Browse and a tags' read
        taking a second each, it took longer than ``connect_timeout_s`` while the server answered each in time, and
        a slow PLC was taken for a stalled one and dropped, over and over. Only the requests ahead of the first
        read are waited for (a Publish sent later, answered by a server whose reads hang, does not hold it), and
        each wait needs one of them answered: at most one wait more than there were requests ahead. Each wait is for
        the one read sent: sent again at each, the read given up on stayed queued at such a server, answered for
        nothing, and the new one queued behind it. So the read is sent with asyncua's request timeout (and the
        request's TimeoutHint) set to that longest wait, not to ``connect_timeout_s``, which ended it at the first."""
        proto = getattr(client.uaclient, "protocol", None)
        pending = getattr(proto, "_callbackmap", None)
        # (another asyncua layout: no requests known, connect_timeout_s for the read alone, as before)
        ahead = set(pending) if isinstance(pending, dict) else set()
        read = asyncio.ensure_future(
            _read_values(client, nodes, self.settings.connect_timeout_s * (len(ahead) + 1))
            if ahead and callable(getattr(proto, "send_request", None))
            else client.uaclient.read_attributes(nodes, ua.AttributeIds.Value)
        )
        try:
            while True:
                try:
                    async with asyncio.timeout(self.settings.connect_timeout_s):
                        return await asyncio.shield(read)
                except TimeoutError:
                    if read.done():  # answered as this wait ended, or asyncua's own request timeout
                        return read.result()
                    answered = {i for i in ahead if pending is not None and i not in pending}
                    if not answered:
                        raise
                    ahead -= answered
        finally:
            read.cancel()  # given up on (or this check cancelled); done, nothing

    def _stalled_sub(self) -> _Silent | None:
        """A subscription of this session (the main one, or one of ``_apart``'s) that has sent nothing (no
        data, no keep-alive) for longer than the server promised, said; None while each publishes. A
        subscription of one large value that stalls left that node at its last value, unseen, while the
        others went on."""
        sub = self._sub
        if sub is None or not hasattr(sub, "last_publish_at"):  # an older asyncua keeps no such time
            return None
        now = time.monotonic()
        watched = [(sub, self._sub_since, self._sub_silence_s, "")]
        for own, (made, promised) in self._apart_watch.items():
            node = next((n for n, s in self._item_sub.items() if s is own), None)
            shown = self._listed_as.get(node, node.to_string()) if node is not None else "?"
            watched.append(
                (own, max(made, self._sub_since), promised, f" of node {shown!r} (its own, for its size)")
            )
        for each, since, promised, whose in watched:
            silent = now - max(each.last_publish_at or 0.0, since)
            if silent > promised:
                return _Silent(
                    f"the server's subscription{whose} sent nothing (no data, no keep-alive) for {silent:.1f}s, "
                    f"over the {promised:.1f}s it promised: the server stalled or dropped the subscription; "
                    "its tags' last values are stale: their readings are passed on BAD and the source reconnects"
                )
        return None

    def _state_refused(self, e: ua.UaStatusCodeError) -> None:
        # the server answered, so session and connection are up: a PLC whose user role may not read the
        # Server object (or a minimal server without it) made the source reconnect at every check, said as
        # 'cannot reach ...; is the server running?'
        self.notices.note(
            "server_state_refused",
            "opcua source %s: the server answers a read of its state (ServerStatus.State) with %s; "
            "its answer still shows the connection is up, and the subscription's keep-alives are "
            "watched as before",
            self.name,
            code_name(e.code),
            level=logging.INFO,
        )

    async def _clock_sampling(self, clock: ua.NodeId) -> None:
        """The clock node's MinimumSamplingInterval (Part 3, 5.6.2: how fast the server can sample it; a PLC
        that updates its ServerStatus every 10 s may say so): a lower bound of its update period."""
        assert self._client is not None
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                (dv,) = await self._client.uaclient.read_attributes(
                    [clock], ua.AttributeIds.MinimumSamplingInterval
                )
        except (ua.UaError, TimeoutError, ValueError):
            return
        ms = dv.Value.Value if dv.Value is not None and _is_good(dv.StatusCode) else None
        if isinstance(ms, int | float) and not isinstance(ms, bool) and math.isfinite(ms) and ms > 0:
            self._clock_sampling_s = min(ms / 1000.0, _CLOCK_SAMPLING_MAX_S)

    def _judge_status(self, got: list) -> None:
        """``_Halted`` when the server's answer (ServerStatus State, CurrentTime) says its values are not
        current: a state other than Running, or a clock whose update period is known (two changes seen in
        this session) standing still for ``_frozen_after_s``. A value it does not state (Bad, null) is not
        judged. After a halt, the server shown healthy by the check that halted it (Running; for a frozen
        clock, its clock seen moving in this session) ends it: the backoff is reset, held readings go on."""
        state, now = (
            dv.Value.Value if dv.Value is not None and _is_good(dv.StatusCode) else None for dv in got
        )
        if isinstance(state, int) and not isinstance(state, bool) and state != ua.ServerState.Running:
            try:
                shown = ua.ServerState(state).name
            except ValueError:
                shown = str(state)
            raise _Halted(
                "server_not_running",
                f"the server says its state (ServerStatus.State) is {shown}, not Running, while the session "
                "stays open: its values are not current; its tags' readings are passed on BAD and the source "
                "reconnects",
            )
        if isinstance(now, dt.datetime):
            self._judge_clock(now)
        if (
            self._halt_reason is not None
            and self._halt_reason not in _STALLS  # a silent server: its subscription seen publishing again
            and (
                self._halt_reason != "server_clock_frozen"
                or self._clock_moves
                or not isinstance(now, dt.datetime)
            )
        ):
            self._recovered()

    def _judge_clock(self, now: dt.datetime) -> None:
        if self._clock_broken:  # seen standing still while values changed: it tells nothing in this session
            return
        seen = time.monotonic()
        if self._clock is None or now != self._clock[0]:
            if self._clock is not None:  # moved on this session
                if self._clock_moved_at is not None:  # a whole interval between two changes seen
                    self._clock_gaps.append(seen - self._clock_moved_at)
                    self._clock_period_s = max(self._clock_gaps)
                self._clock_moved_at, self._clock_moves = seen, True
            self._clock = (now, seen)
            return
        still = seen - self._clock[1]
        if self._clock_period_s > 0 and still > self._frozen_after_s:
            # a value seen changing after the clock should have moved again (a period after its last change
            # was seen, and a publish later: a change made just before a freeze may arrive that late) is not
            # a frozen runtime's: the clock alone is stuck
            flowing = self._clock[1] + self._clock_period_s + self.settings.publishing_interval_ms / 1000.0
            if self._changed_at is not None and self._changed_at > flowing:
                self._clock_stuck(now)
                return
            raise _Halted(
                "server_clock_frozen",
                f"the server's clock (ServerStatus.CurrentTime) has stood at {now.isoformat()} for {still:.1f}s "
                f"(it moved every {self._clock_period_s:.1f}s or sooner before) while the session stays open "
                "and keeps alive: its runtime is frozen and its values stopped changing; its tags' readings "
                "are passed on BAD and the source reconnects",
            )

    def _value_changed(self, tag: str, val: Any) -> bool:
        """Whether ``val`` differs from the tag's last value in this session (its first is no change: a
        subscription starts with each node's current value, a halted server's stale one)."""
        if val is None:  # no value (a BAD status): nothing the server's runtime shows moving
            return False
        prev = self._session_values.get(tag, _UNSEEN)
        self._session_values[tag] = val
        if prev is _UNSEEN or _same_value(prev, val):
            return False
        self._changed_at = time.monotonic()
        return True

    def _clock_stuck(self, at: dt.datetime | None) -> None:
        """The server's clock stands still while its values change: a broken clock (a ServerStatus thread
        that died, a cached node), not a halted server. Said once (notice ``server_clock_stuck``, counted at
        each session it is seen in); the clock is not judged again in this session, the State still is."""
        self._clock_broken = True
        self.notices.note(
            "server_clock_stuck",
            "opcua source %s: the server's clock (ServerStatus.CurrentTime) stands still%s while its values "
            "keep changing: its clock is broken (a ServerStatus thread that died, a cached node), not its "
            "runtime; its values are passed on as the server states them, its clock is not judged for the "
            "rest of the session (its State still is). Fix the server's clock (or its ServerStatus update)",
            self.name,
            f" at {at.isoformat()}" if at is not None else "",
        )

    @property
    def _frozen_after_s(self) -> float:
        # three times the clock's update period as seen (and as its MinimumSamplingInterval states), and
        # never under three checks or 3 s: a coarse clock (a PLC that updates ServerStatus every 10 s) is
        # not a frozen one
        return max(
            3.0 * self.settings.keepalive_check_s,
            3.0,
            3.0 * self._clock_period_s,
            3.0 * self._clock_sampling_s,
        )

    def _publishing_again(self) -> bool:
        """Whether a silent server's new subscriptions (the main one and each of ``_apart``'s) are seen
        publishing: a publish answer after the one first seen, so not only the first values a new subscription
        starts with (a stalled runtime's stale ones). Asked as each value arrives (a data publish ends the halt
        at once) and at each check (a quiet server's keep-alives). A source without a subscription (it only
        writes) has only its state read to go by, which answered."""
        sub = self._sub
        if sub is None or not hasattr(sub, "last_publish_at"):
            return True
        return all([self._published_again(each) for each in (sub, *self._extra_subs)])

    def _published_again(self, sub: Subscription) -> bool:
        at = sub.last_publish_at
        if at is None or at < self._sub_since:
            return False
        first = self._stall_publish.setdefault(sub, at)
        return at != first

    @property
    def heartbeat_held(self) -> dict[str, Any] | None:
        """While the heartbeat (the PLC's watchdog output) is held (``heartbeat_hold``): its node, why, and since
        when (ISO 8601, UTC), for ``/status`` and ``edge-agent status``: the PLC in its safe state, an operator
        finds there what holds it. None while it is written."""
        if self._hb_held is None:
            return None
        node, why, since = self._hb_held
        return {
            "node": node,
            "reason": why,
            "since": dt.datetime.fromtimestamp(since, dt.UTC).isoformat(timespec="seconds"),
        }

    @property
    def halted(self) -> dict[str, Any] | None:
        """While the server is halted (its values not current: a state other than Running, a frozen clock,
        a stalled subscription, no answer) and until it shows it is healthy again: the reason, since when
        (epoch seconds and ISO 8601, UTC), for how long, and the checks (one every keepalive_check_s while
        connected) that found it still so, or halted again (then the source reconnects). A genuine freeze
        (clock and values never move again) is said once in the log; this keeps saying it, on ``/status``.
        None while it is not halted."""
        if self._halt_reason is None or self._halt_since is None:
            return None
        # how long from the monotonic clock; since when from the wall clock now, less that: a gateway without
        # a battery-backed clock that halted in 1970 and was set by NTP since says the halt's true start (a
        # step of the wall clock moves it once, not at every read)
        for_s = max(time.monotonic() - self._halt_mono, 0.0)
        self._halt_since = wall_since(self._halt_since, for_s, time.time())
        return {
            "reason": self._halt_reason,
            "since": dt.datetime.fromtimestamp(max(self._halt_since, 0.0), dt.UTC).isoformat(
                timespec="seconds"
            ),
            "since_t": round(self._halt_since, 3),
            "for_s": round(for_s, 1),
            "checks": self._halt_checks,
            "halts": self.halts,
        }

    def _halted(self, e: _Silent) -> None:
        """Each tag passed on so far gets a BAD reading without a value now, once a halt (``halts`` counts
        the times it is seen, a reconnect that finds it still so too):
        a consumer must not go on taking a frozen, stalled or silent server's last values as current. Until
        the server shows it healthy again, readings are held (``_hold``), those of the reconnect too: its
        first values are the halted server's stale ones. ``halted`` says it for as long as it lasts."""
        self.halts += 1
        new = self._halt_reason is None
        if new:
            self._halt_since, self._halt_mono, self._halt_checks = time.time(), time.monotonic(), 0
        if new or self._halt_reason in _STALLS:
            # a stall seen while halted for the server's state or clock does not end that halt by a publish
            self._halt_reason = e.halt
        self._unhold()
        # a BAD reading is each tag's last passed on now (a held waveform dropped never was): the reconnect's
        # first waveform, the same samples and source time as one seen before, is the tag GOOD again, not a
        # waveform sent twice (``_emit``)
        self._last_wave.clear()
        if not new:  # each tag's last reading passed on is its BAD one: nothing went on since (all held)
            self._halt_checks += 1  # a check (or a reconnect's stall) that found it still halted
            return
        self._lost_marked.clear()
        self._all_bad(e.halt)

    def _connection_lost(self) -> None:
        """A session is lost, or fails partway through connecting (after its first nodes' values may have gone
        out), without a halt or a stall seen first (the server closed or reset the
        connection: its restart or crash, a PLC rebooting, a firewall's reset): each tag passed on gets one BAD
        reading without a value (reason ``connection_lost``), as for a halt, since its last value is not current
        while the source reconnects; the reconnect's first values go on GOOD after it (stamped after the BAD
        where the server dates them before). A tag so marked with nothing of its own passed on since is not
        marked again at the next loss. Nothing is held: a reconnected server's values are current."""
        # the reconnect's first waveform, the samples and source time of one passed on before, is the tag GOOD
        # again (a recipe or limits array that never changes would stay BAD for good), stamped after the BAD with
        # its own time in source_ts: a signal pipeline knows it by that time and does not score it twice
        self._last_wave.clear()
        self._all_bad("connection_lost", skip=self._lost_marked)
        self._lost_marked.update(self._last_ts)

    def _all_bad(self, reason: str, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """A BAD reading without a value, for ``reason``, of each tag passed on so far but those in ``skip``."""
        now = time.time()
        for tag, last in list(self._last_ts.items()):
            if tag in skip:
                continue
            # never before the tag's last reading: its server's clock may run ahead of the gateway's (up to
            # max_clock_skew_s), and a BAD dated before the GOOD it follows was hidden behind it; nor before one
            # stamped after the last BAD
            prev = self._bad_at.get(tag)
            at = max(now, last + _AFTER_BAD_S, prev[0] + _AFTER_BAD_S if prev is not None else now)
            self._bad_at[tag] = (at, False)
            self._channel.put_nowait(Reading(self.name, tag, None, at, now, Quality.BAD, None, reason))

    def _hold(self, reading: Reading) -> None:
        """A reading while a halted server has not shown it healthy: kept, in order, to be passed on once it
        does (``_recovered``) or dropped at the next halt; over ``_HELD_MAX`` the oldest is pushed out, and
        dropped, counted, unless it is the last of its tag (``_held_out``): each tag keeps its latest value."""
        if len(self._held) >= _HELD_MAX:
            old = self._held.popleft()
            if n := self._held_n[old.tag] - 1:
                self._held_n[old.tag] = n
            else:
                del self._held_n[old.tag]
            if (gone := self._held_out.pop(old.tag, None)) is not None:
                self._held_dropped(gone)
            self._held_out[old.tag] = old  # last in the dict: the order they arrived in
        self._held.append(reading)
        self._held_n[reading.tag] = self._held_n.get(reading.tag, 0) + 1

    def _held_dropped(self, reading: Reading) -> None:
        self.stats.dropped += 1
        self.stats.dropped_by_key[reading.tag] = self.stats.dropped_by_key.get(reading.tag, 0) + 1

    def _unhold(self) -> None:
        self._held.clear()
        self._held_n.clear()
        self._held_out.clear()

    def _recovered(self) -> None:
        log.info(
            "opcua source %s: the server shows it is running again (%s ended)", self.name, self._halt_reason
        )
        self._halt_reason = self._halt_since = None
        self._backoff.reset()
        for reading in self._held_out.values():  # each older than every reading left in ``_held``
            if reading.tag in self._held_n:
                self._held_dropped(reading)
            else:
                self._channel.put_nowait(reading)
        while self._held:
            self._channel.put_nowait(self._held.popleft())
        self._unhold()

    # -- write and browse -----------------------------------------------------------------------
    def _require_client(self, what: str) -> Client:
        if self.state is not ConnectionState.CONNECTED or self._client is None:
            raise OpcUaNotConnected(
                f"opcua source {self.name}: not connected to {mask_credentials(self.settings.endpoint)} "
                f"(state {self.state.value}); {what} not done"
            )
        return self._client

    def _session_up(self) -> bool:
        """Whether the session is still up: the state connected and the client's socket open."""
        client = self._client
        if self.state is not ConnectionState.CONNECTED or client is None:
            return False
        protocol = getattr(client.uaclient, "protocol", None)
        return protocol is not None and not protocol.is_closed

    async def _answers_since(self, began: float) -> bool:
        """Whether the server has said anything on this connection since ``began`` (a keepalive's answer, a
        publish), or answers a read of its state now (within connect_timeout_s): a write left unanswered on a
        session that answers is the PLC's (busy, a device behind a gateway away); one on a connection that
        stays silent, its socket still open, is a link cut without a word (a NAT's or firewall's flow gone, a
        cable pulled beyond a switch), which was counted as a busy PLC until the keepalive noticed it."""
        client = self._client
        if client is None:
            return False
        heard = getattr(client, "_heard_at", None)
        if heard is None or heard >= began:  # (None: an asyncua whose reads are not seen; as before)
            return True
        try:
            await self._read_state(client, [client.get_node(ua.ObjectIds.Server_ServerStatus_State).nodeid])
        except asyncio.CancelledError:
            raise
        except Exception:  # no answer, or the connection gone: silent
            return False
        return True

    def _type_confirmed(self, node_id: str, nt: _NodeType, kind: str | None) -> bool:
        """Whether ``nt``, the type cached for ``node_id``, was read again for a refusal of ``kind`` ("agent": the
        agent's own, "range": BadOutOfRange, "mismatch": BadTypeMismatch; None: any) and found unchanged less than ``_CONFIRMED_HOLD_S`` ago, no change replacing it since. Not for
        as long as the node's watch is linked: the watch sees its DataType, ArrayDimensions and access, not its
        MaxStringLength, its MaxArrayLength or its enumeration's states, and a value a download made valid was
        refused for the session."""
        got = self._types_confirmed.get(node_id)
        return (
            got is not None
            and got[0] is nt
            and time.monotonic() - got[1] < _CONFIRMED_HOLD_S
            and (kind is None or kind in got[2])
        )

    def _confirm_type(self, node_id: str, nt: _NodeType, kind: str) -> None:
        """``nt`` read again for a refusal of ``kind`` and found unchanged: added to what that read confirms while the
        minute of the first lasts (``_type_confirmed``)."""
        got = self._types_confirmed.get(node_id)
        if got is not None and got[0] is nt and time.monotonic() - got[1] < _CONFIRMED_HOLD_S:
            self._types_confirmed[node_id] = (nt, got[1], got[2] | {kind})
        else:
            self._types_confirmed[node_id] = (nt, time.monotonic(), frozenset((kind,)))

    def _ns_moved(self, node_id: str) -> OpcUaNotConnected:
        """The error for a write not sent because the session saw its namespace array move (``_ns_changed``)."""
        return OpcUaNotConnected(
            f"opcua source {self.name}: the server's namespace array changed within the session (a program "
            f"download); the session is made again, its nodes resolved by their URIs; write to {node_id} not done"
        )

    async def write(
        self, node_id: str, value: Any, at: str | None = None, *, beat: bool = False
    ) -> str | None:
        """Write ``value`` as the node's own data type and shape (read once, cached; the type a
        BaseDataType node holds read at each write); never coerced loosely. The cached type is read again
        when it refuses the value, and when the server answers BadTypeMismatch (a PLC's online change may
        have retyped the node while the session stayed up): the write is then made once more with the type
        the node has now. Writes to one node are made one at a time, from the type decision to the server's
        answer (two first writes at once to a node that holds nothing would each read it so and send its own
        kind); writes to different nodes are not held up. None when the server answered Good; when it answered
        Uncertain (it took the write, but not wholly as asked), what it said, one line naming the node, the
        value and the status: not an error (the value is not sent again), for the caller to count and say.
        ``beat``: the heartbeat's write, never held by a read again of a type older than its hold (``_aged``): that
        read (a Browse the server answers in seconds, or not within connect_timeout_s) held the beat as long, once a
        hold, for the PLC's watchdog to trip; it is made in the background (``_type_again_later``), the beats after
        it judged and wrapped by what it reads."""
        sent = time.monotonic()  # the last request of this write sent (its own Write, once it goes out)
        client = self._client  # the session ``node`` is resolved on
        node = await self._target_node(node_id, f"write to {node_id}")
        # said gone by its watched attributes, or by its tag's item (a target not watched: no room, or the watch off)
        gone = node.nodeid in self._targets_gone or node.nodeid in self._gone
        # said served again before the check below: the check reads the array after that
        back = node.nodeid in self._targets_back
        # the array moved (seen by this write's check, another write's, or a node's made again): the session ends;
        # until it is closed, an index it resolved by may name another namespace's node, a target not said gone too
        if self._ns_changed or (gone and await self._namespaces_moved(self._require_client("write"))):
            # the node the download made again under its id may be another namespace's: not written
            raise self._ns_moved(node_id)
        if back and node.nodeid in self._targets_back:  # and no gone notice since
            # its watch, linked to the node again, says the next download that takes it away (a reorder does: the
            # id changes): the array is read once after each gone notice, not before every later write to it
            self._targets_gone.discard(node.nodeid)
            self._targets_back.discard(node.nodeid)
        name = ""
        # the server's answer to the Write while its type is read again for it (``_TYPE_ANSWERS``)
        answered = ""
        lock = self._write_lock(node)
        try:
            async with (
                lock
            ):  # one write to a node at a time: the first one's type decision holds for the next
                former: _NodeType | None = None  # the cached type a refused value had read again
                for again in (False, True):
                    nt = self._types.get(node_id)
                    cached = nt is not None
                    if nt is not None and _aged(nt):
                        # a download may have changed it in place, unnoticed (a target neither watched nor read
                        # as a tag, a MaxStringLength lowered): judged by it, a longer text was sent
                        if beat:  # not waited for (``write``): the next beat is judged by what it reads
                            self._type_again_later(node, node_id, nt)
                        else:
                            nt, cached = await self._type_again(node, node_id, nt)
                    was, checked = None, False
                    if (
                        nt is not None
                        and cached
                        and not again
                        and (beat or node.nodeid not in self._target_nodes)
                    ):
                        # a target not watched: a download that retyped it within the hold was seen only by the
                        # server's answer, and a lenient server converted what it was sent without one (an INT's -1
                        # stored as a USINT's 255): one Read of its DataType, ValueRank and ArrayDimensions a write
                        # (a refusal of this write after it does not Read them again). A heartbeat's beat too, watched
                        # or not: spared it, a counter's 2 to an INT a download made a BOOL was stored as true, beat
                        # after beat, until the type's minute ended, and a watch's notice comes a sampling and a
                        # publishing interval late (a 100 ms beat under a 2 s publishing interval: 14 beats stored as
                        # true); a toggle's beats are spared it within the hold, as any 0 or 1
                        asked = time.monotonic()
                        held_check = self._pre_checked.get(node_id)
                        if (
                            held_check is not None
                            and _same_under_any_retype(nt, value)
                            and held_check[0] is client
                            and asked - held_check[1] < _PRE_CHECK_HOLD_S
                        ):
                            # an earlier write's Read stands: no Read, and a refusal makes its own
                            seen = None
                        else:
                            self._pre_checked.pop(node_id, None)
                            seen = await _attributes_unchanged(node, nt, bad_is_change=False)
                            if seen is True:
                                self._pre_checked[node_id] = (client, asked)
                        # only a Read that found them unchanged spares a refusal its own Read (not known: not)
                        checked = seen is True
                        if seen is False:
                            self._types.pop(node_id, None)
                            was, nt, cached = nt, None, False
                    token = self._types.token(node_id)  # a replace below is stored only if not dropped since
                    if nt is None:
                        nt = await self._types.read(node, node_id, self._props_unread)
                        if was is not None and nt != was:
                            self._type_changed_at_write(node_id, was, nt, None)
                    elif (
                        cached
                        and _held_judges(nt)
                        and isinstance(held := await _read_held(node), tuple)
                        and (
                            (held := held if nt.vtype is ua.VariantType.Variant else (held[0], None))
                            != (nt.held, nt.held_shape)
                            or nt.held_unread is not None
                        )
                    ):
                        # a BaseDataType node holds whatever was last written to it, by anyone (a PLC download
                        # may have made it an LREAL, or an array, since): the type and shape it holds now, read
                        # at each write, not the cached; one whose value cannot be read now (a Bad status: no
                        # value, not a null one) is written as it held when last read. An abstract numeric node
                        # (Number, Integer, UInteger) too, judged by the type it holds: a download that made it hold
                        # a USINT, its DataType kept, had an INT's -1 stored as 255 by a converting gateway (no Read
                        # of its attributes sees that)
                        nt = dataclasses.replace(nt, held=held[0], held_shape=held[1], held_unread=None)
                        self._types.keep(node_id, nt, token)
                    if nt.vtype is ua.VariantType.Variant:
                        self._held_at[node_id] = time.monotonic()
                    elif (
                        cached and nt.enum_prop is not None and await self._states_changed(node, node_id, nt)
                    ):
                        nt = await self._types.read(node, node_id, self._props_unread)
                        token = self._types.token(node_id)
                        self._recheck(node_id)
                    if (
                        ua.VariantType.LocalizedText in (nt.vtype, nt.held)
                        and (locale := await _held_locale(node)) != nt.locale
                    ):
                        # text replaces the text the node shows, in the locale it holds now (an HMI may have
                        # written another since): read at each write, as a BaseDataType node's type is
                        nt = dataclasses.replace(nt, locale=locale)
                        self._types.keep(node_id, nt, token)
                    try:
                        payload = _payload(nt, value, node_id)
                    except OpcUaTypeMismatch:
                        self._pre_checked.pop(node_id, None)
                        # judged by a type read earlier: read it again first, unless what refused it is the
                        # type or shape a BaseDataType node holds, read just now (a heartbeat refused for
                        # good would cost a full read of the node's type each period), or a read again found
                        # this very type since and one Read finds its DataType, ValueRank and ArrayDimensions
                        # unchanged now (a download that made an INT a DINT within that minute had 40000 refused,
                        # naming the INT, until the minute ended)
                        if (
                            cached
                            and not again
                            and not _refused_by_held(nt, value, node_id)
                            and (
                                not self._type_confirmed(node_id, nt, "agent")
                                or (not checked and await _attributes_unchanged(node, nt) is not True)
                            )
                        ):
                            self._types.pop(node_id, None)
                            former = nt
                            continue
                        if again and nt == former:
                            self._confirm_type(node_id, nt, "agent")
                        raise
                    if self._ns_changed:
                        # seen since the check above, while this write waited for the node's lock or read its
                        # type: the node was resolved by the old index
                        raise self._ns_moved(node_id)
                    if self._client is not client:  # that session closed (its array moved, say) or made again
                        raise OpcUaNotConnected(
                            f"opcua source {self.name}: write to {node_id} not done: the session it was resolved "
                            "on ended while it waited"
                        )
                    try:
                        room = _request_room(self._client, self.settings.max_message_bytes)
                        sent = time.monotonic()
                        uncertain = await _write_value(node, payload, self._forms, node_id, room, value)
                        if uncertain is None:
                            return None
                        return (
                            f"opcua source {self.name}: write of {reprlib.repr(value)} to {node_id} taken by the "
                            f"server with status {_quality(uncertain)[1]}: it did not complete the write wholly as "
                            "asked (OPC UA Part 4: the operation did not fail entirely); check on the PLC that the "
                            "node holds the value; not written again"
                        )
                    except ua.UaStatusCodeError as e:
                        code = code_of(e.code)
                        if code in _TYPE_ANSWERS:  # the next write Reads the attributes again
                            self._pre_checked.pop(node_id, None)
                        if code not in _TYPE_ANSWERS or (
                            code == ua.StatusCodes.BadOutOfRange and (again or not cached)
                        ):
                            raise
                        mismatch = code == ua.StatusCodes.BadTypeMismatch
                        # a BadOutOfRange stands after any read found the type unchanged: the server refused the value;
                        # a BadTypeMismatch after one Read finds the node's attributes unchanged (a download that made
                        # an INT holding a REAL a REAL had its writes refused, naming the INT, until the minute ended)
                        if self._type_confirmed(node_id, nt, "mismatch" if mismatch else None) and (
                            not mismatch or checked or await _attributes_unchanged(node, nt) is True
                        ):
                            # read again for a refusal and found unchanged within _CONFIRMED_HOLD_S: a node refused
                            # for good (a Boolean holding an INT) cost a type read (a Read and a Browse) at each
                            # write, at each beat for a heartbeat's. A BadTypeMismatch only where the read was made
                            # for one: after a value out of range, it is the sign of a download that retyped the
                            # node within that minute (an INT made a REAL), its writes refused until it ended
                            if mismatch:
                                name = _mismatch_name(nt)
                            raise
                        # a download may have retyped the node since its type was read (within its hold, not
                        # watched): read it again once; the value is judged by what it is now, never sent again
                        # as it was converted for the old type (a converting gateway answered BadOutOfRange to an
                        # INT's 300 made a SINT, at each write until the hold ended)
                        self._types.pop(node_id, None)
                        answered = code_name(code)
                        now = await self._types.read(node, node_id, self._props_unread)
                        answered = ""
                        if not again and now != nt:
                            self._type_changed_at_write(node_id, nt, now, code)
                            continue
                        if now == nt and self._types.get(node_id) is now:
                            # the same type: refused for the value, not its type; not read again for a minute
                            self._confirm_type(node_id, now, "mismatch" if mismatch else "range")
                        if mismatch:
                            name = _mismatch_name(now)
                        raise
        except OpcUaTypeMismatch as e:
            note = self._write_notes.get(at) if at is not None else None
            err = OpcUaTypeMismatch(f"opcua source {self.name}: {self._noted(note, e)}")
            err.element = e.element
            raise err from None
        except OpcUaWriteRefused as e:  # too large to send (``_too_large_to_send``)
            raise OpcUaWriteRefused(f"opcua source {self.name}: {e}") from None
        except ua.UaStatusCodeError as e:
            name = name or (code_name(e.code) if hasattr(e, "code") else str(e))
            if "NodeIdUnknown" in name:
                raise self._no_such_node(node_id) from None
            if name.split(":")[0] in _BUSY:
                raise OpcUaServerBusy(
                    f"opcua source {self.name}: write of {reprlib.repr(value)} to {node_id} not taken now "
                    f"by the server ({name}: busy or briefly cut off); retried"
                ) from None
            hint = _REFUSED.get(name.split(":")[0])
            refused = OpcUaWriteRefused(
                f"opcua source {self.name}: write of {reprlib.repr(value)} to {node_id} refused by the "
                f"server ({name})" + (f": {hint}" if hint else "")
            )
            refused.type_refused = name.startswith("BadTypeMismatch")
            if name.split(":")[0] in _NODE_STATUSES:
                refused.field = "node_id"
            raise refused from None
        except ua.UaError as e:  # asyncua's own, without a status: still this adapter's error, named
            raise OpcUaError(
                f"opcua source {self.name}: write of {reprlib.repr(value)} to {node_id} failed "
                f"({type(e).__name__}: {e})"
            ) from None
        except TimeoutError as e:
            if self._session_up() and await self._answers_since(sent):
                # the session answers (keepalive reads, the state connected): the PLC, or a device behind a
                # gateway, does not take this write; not a lost connection (source_down would never say so)
                what = (
                    f"answered {answered}, and the node's type, read again to judge it (a download may have retyped "
                    "it), was not answered"
                    if answered
                    else "not answered"
                )
                raise OpcUaServerBusy(
                    f"opcua source {self.name}: write of {reprlib.repr(value)} to {node_id} {what} "
                    f"within {self.settings.connect_timeout_s:g} s while the session is up; retried"
                ) from None
            if self._session_up():  # the socket open, the server silent: a link cut without a word
                raise OpcUaNotConnected(
                    f"opcua source {self.name}: write to {node_id} not answered within "
                    f"{self.settings.connect_timeout_s:g} s, and the server said nothing else since it was sent "
                    "nor answered a read of its state: the connection is silent (the link to the PLC cut "
                    "without a word, or its OPC UA stack hung), not a busy PLC"
                ) from None
            raise OpcUaNotConnected(
                f"opcua source {self.name}: write to {node_id} failed, connection lost ({e!r})"
            ) from None
        except (ConnectionError, OSError) as e:
            raise OpcUaNotConnected(
                f"opcua source {self.name}: write to {node_id} failed, connection lost ({e!r})"
            ) from None
        return None  # (not reached: the second pass returns or raises)

    async def _states_changed(self, node: Node, node_id: str, nt: _NodeType) -> bool:
        """Whether a multi-state node's own EnumStrings or EnumValues (``nt.enum_prop``), read now (one Read
        before each write), name other states than those ``nt`` holds: a PLC download may have changed them
        while the session stayed up, and a node not subscribed as a tag gets no SemanticsChanged flag to say
        so. Said at INFO naming the node and both; False when the property cannot be read now (the write is
        judged by the states read before). An EnumStrings now holding no list (one text) raises the refusal
        ``_node_type`` gives, without reading the type again (3 Reads and a Browse at each refused write)."""
        if nt.enum_prop is None:
            return False
        try:
            v = await Node(node.session, ua.NodeId.from_string(nt.enum_prop)).read_value()
        except (ua.UaError, TypeError, ValueError):
            return False
        got = _states(nt.enum_own or "", v)
        if got is None and not _no_states(v):
            # now holding no list (one text): refused naming it (2 was written); its type is not read again
            # at each refused write (3 Reads and a Browse each), one Read tells when it holds a list again
            if nt.enum_own == "EnumStrings":
                e = _malformed("0:EnumStrings", v)
                raise _props_refused(node_id, str(e), e.until)
            return True  # an EnumValues: read again, an EnumStrings beside it may name the states
        if got is None or got == (nt.enum, nt.enum_names):
            return False
        log.info(
            "opcua source %s: write target %s: its %s changed (the values %s, now %s: a PLC download); its "
            "writes are judged by them",
            self.name,
            node_id,
            nt.enum_own,
            ", ".join(map(str, sorted(nt.enum or ()))),
            ", ".join(map(str, sorted(got[0] or ()))),
        )
        return True

    async def browse(self, folder_node_id: str | None = None, max_depth: int = 3) -> list[dict]:
        """Variables under a folder/object (default Objects): node_id, browse_name, data_type, array."""
        client = self._require_client("browse")
        return await _browse(client, folder_node_id, max_depth)


def _record_revisions(session: Any, on_item: Callable[[ua.NodeId, Any, Any], None]) -> None:
    """Hand each monitored item the session creates to ``on_item(node id, asked parameters, result)``.

    asyncua's ``Subscription`` reads only the item's id from the server's answer and drops the
    RevisedQueueSize and RevisedSamplingInterval in it, so a server granting a queue of 1 where 100 were
    asked goes unnoticed. The hook sits on this source's own session object (one per connect), around
    its ``create_monitored_items``, which the subscription calls for every item it creates, including
    the ones asyncua creates again on its own."""
    create = getattr(session, "create_monitored_items", None)
    if create is None or getattr(create, "_records_revisions", False):
        return

    async def create_monitored_items(params: ua.CreateMonitoredItemsParameters) -> list:
        results = await create(params)
        for item, result in zip(params.ItemsToCreate, results, strict=False):
            try:
                # a write target's type or access watched (``_watch_targets``) is not a value read
                if result.StatusCode.is_good() and item.ItemToMonitor.AttributeId == ua.AttributeIds.Value:
                    on_item(item.ItemToMonitor.NodeId, item.RequestedParameters, result)
            except Exception as e:  # a report never fails the subscription
                log.info("opcua: monitored item revision not read: %r", e)
        return results

    create_monitored_items._records_revisions = True  # type: ignore[attr-defined]
    session.create_monitored_items = create_monitored_items


def _names_node(resolved: str | None, nodeid: ua.NodeId) -> bool:
    """Whether ``resolved`` (a node id as this session resolved it, ``_resolved``) names ``nodeid``."""
    if resolved is None:
        return False
    try:
        return bool(ua.NodeId.from_string(resolved) == nodeid)
    except (ValueError, ua.UaError):
        return False


async def _node(client: Client, node_id: str, cache: dict[str, str], resolve=None) -> Node:
    resolved = cache.get(node_id)
    if resolved is None:
        resolved = cache[node_id] = await (resolve or _resolve_node_id)(client, node_id)
    return client.get_node(resolved)


async def _check_target(
    client: Client,
    node_id: str,
    value: Any,
    types: _Types,
    cache: dict[str, str],
    resolve=None,
    access: dict[str, bool] | None = None,
    timeouts: bool = False,
    unread: dict[str, tuple[float, str]] | None = None,
) -> str | None:
    """Why writing ``value`` to ``node_id`` would fail (None: it would not): node exists, is a
    Variable the session may write (into ``access``: whether it may), and its DataType takes the value
    (``unread``: as ``_node_type`` takes it).
    ``timeouts``: a read the server does not answer in time raises ``TimeoutError``, not a reason."""
    try:
        node = await _node(client, node_id, cache, resolve)
        cls = await node.read_node_class()
    except OpcUaNodeError as e:
        return str(e)
    except TimeoutError:
        if timeouts:
            raise
        return f"node {node_id}: malformed or unreadable (TimeoutError: ); check the node_id"
    except ua.UaStatusCodeError as e:
        if code_of(e.code) == ua.StatusCodes.BadNodeIdUnknown:
            return f"node {node_id} does not exist on the server; check the node_id (edge-agent browse)"
        return f"node {node_id}: {code_name(e.code)}"
    except Exception as e:
        return f"node {node_id}: malformed or unreadable ({type(e).__name__}: {e}); check the node_id"
    if cls != ua.NodeClass.Variable:
        return f"node {node_id} is a {cls.name}, not a Variable; only variables can be written"
    try:
        levels = await node.get_user_access_level()
    except Exception:
        try:
            levels = await node.get_access_level()
        except ua.UaStatusCodeError as e:
            return (
                f"node {node_id}: its access level cannot be read ({code_name(e.code)}), so the "
                "agent cannot tell whether it may write it; check the node (edge-agent browse)"
            )
    if access is not None:
        access[node_id] = ua.AccessLevel.CurrentWrite in levels
    if ua.AccessLevel.CurrentWrite not in levels:
        return f"node {node_id} is read-only for this session (access level {sorted(a.name for a in levels)})"
    try:
        nt = await types.read(node, node_id, unread)
    except OpcUaTypeMismatch as e:
        return str(e)
    except ua.UaStatusCodeError as e:
        return f"node {node_id}: its DataType cannot be read ({code_name(e.code)})"
    return _misfit(nt, value, node_id)


def _form(held: _Held) -> tuple[ua.VariantType | None, int | None]:
    """What of a held type and shape judges a value (``_fit_rank``, ``to_variant``): the type and the number
    of dimensions, not their lengths."""
    return held[0], None if held[1] is None else len(held[1])


def _holding(nt: _NodeType, value: Any, node_id: str) -> _NodeType | None:
    """A BaseDataType node that holds nothing as it would be once ``value`` is written to it: holding the
    type and shape ``value`` is written as (None: it holds something, or would refuse ``value``)."""
    if nt.vtype is not ua.VariantType.Variant or nt.held is not None or nt.held_shape is not None:
        return None
    if nt.held_unread is not None:  # not read: it may hold anything (``ensure_type`` reads it first)
        return None
    try:
        held = _held_of(_payload(nt, value, node_id))
    except OpcUaTypeMismatch:
        return None
    return dataclasses.replace(nt, held=held[0], held_shape=held[1])


def _refused_by_held(nt: _NodeType, value: Any, node_id: str) -> bool:
    """Whether a BaseDataType node refuses ``value`` for the type or shape it holds alone: it would take the
    value if it held nothing."""
    if not _held_judges(nt) or (nt.held is None and nt.held_shape is None):
        return False
    return _misfit(dataclasses.replace(nt, held=None, held_shape=None), value, node_id) is None


def _held_judges(nt: _NodeType) -> bool:
    """Whether what the node holds judges a write: a BaseDataType node's type and shape, an abstract numeric
    node's (Number, Integer, UInteger: 321f323) type."""
    return nt.vtype is ua.VariantType.Variant or isinstance(nt.vtype, AbstractType)


def _misfit(nt: _NodeType | None, value: Any, node_id: str) -> str | None:
    """Why ``value`` cannot be written to a node of type ``nt`` (None: it can)."""
    err = _misfit_error(nt, value, node_id)
    return None if err is None else str(err)


def _misfit_error(nt: _NodeType | None, value: Any, node_id: str) -> OpcUaTypeMismatch | None:
    """The refusal of ``value`` by a node of type ``nt`` (None: it takes it, or ``nt`` is not known)."""
    if nt is None:
        return None
    try:
        _payload(nt, value, node_id)
    except OpcUaTypeMismatch as e:
        return e
    return None


async def check_server(
    settings: OpcUaSettings,
    targets: list[tuple[str, Any]] | list[tuple[str, Any, Any]],
    pins: NamespacePins | None = None,
) -> tuple[list[str | None], list[str | None], list[str | None], dict[str, list[str] | str | None]]:
    """One-off connect for ``edge-agent validate --online``: why each subscribed node (in settings order)
    and each write target would fail (None where it is fine), the tag each node will produce (its
    ``tag`` or browse name; None when unreadable), and, per tag whose node holds a value now, the member
    tags it gives (``{tag}/{member}`` of a structure, decoded by the server's type definitions; [] for a
    plain value; None for a structure the definitions do not describe; a text saying why for one whose
    definitions could not be read: the server late or failing). Raises ``OpcUaError`` when unreachable.
    ``pins``: the namespaces the agent kept for the source: an ``ns=`` index whose URI changed is named, as the
    agent refuses it, not checked as the other namespace's node of that id."""
    client, _ = await _one_off_client(settings, "cannot check", stall_ends=True)
    cache: dict[str, str] = {}
    silent = False  # the server stopped answering: its close is not waited for long
    try:
        used = _ns_used(settings, [t[0] for t in targets])
        resolve = await _kept_resolve(client, pins, settings.connect_timeout_s, used)
        nodes: list[str | None] = []
        tags: list[str | None] = []
        held: dict[str, Node] = {}
        explicit = {n.tag for n in settings.nodes if n.tag}
        owners: dict[str, str] = {}  # as the source names them (``_claim_tag``)
        for ns in settings.nodes:
            try:
                node = await _node(client, ns.node_id, cache, resolve)
                browse = (await node.read_browse_name()).Name
                tag = ns.tag or _claim_tag(ns.node_id, browse, explicit, owners)
                nodes.append(None)
                tags.append(tag)
                held[tag] = node
            except OpcUaNodeError as e:
                nodes.append(str(e))
                tags.append(None)
            except TimeoutError:
                if not await _still_answers(client, settings):
                    silent = True
                    raise _stopped_answering(settings, ns.node_id) from None
                nodes.append(_unanswered(settings, ns.node_id))
                tags.append(None)
            except Exception as e:
                name = code_name(e.code) if isinstance(e, ua.UaStatusCodeError) else repr(e)
                nodes.append(
                    f"node {ns.node_id} cannot be read ({name}); check the node_id (edge-agent browse)"
                )
                tags.append(None)
        for i, ns in enumerate(settings.nodes):
            held_tag = tags[i]
            if nodes[i] is None and held_tag is not None and held_tag in held:
                nodes[i] = await _shape_misfit(held[held_tag], ns, settings.connect_timeout_s)
        writes: list[str | None] = []
        types = _Types()
        for nid, v, *note in targets:
            try:
                why = await _check_target(client, nid, v, types, cache, resolve, timeouts=True)
                err = _misfit_error(types.get(nid), v, nid) if why and note and note[0] else None
                writes.append(note[0](why, err) if err is not None and str(err) == why else why)
            except TimeoutError:
                if not await _still_answers(client, settings):
                    silent = True
                    raise _stopped_answering(settings, nid) from None
                writes.append(_unanswered(settings, nid))
        return nodes, writes, tags, await _member_tags(client, held, settings.connect_timeout_s)
    except OpcUaError:
        raise
    except Exception as e:  # the connection lost mid-check, a node the checks did not foresee: one line
        why = code_name(e.code) if isinstance(e, ua.UaStatusCodeError) else f"{type(e).__name__}: {e}"
        raise OpcUaError(f"cannot check {mask_credentials(settings.endpoint)}: {why}") from None
    finally:
        cto = settings.connect_timeout_s
        await _close_one_off(client, min(cto, SILENT_CLOSE_S) if silent else cto)


async def _still_answers(client: Client, settings: OpcUaSettings) -> bool:
    """Whether the server, after leaving a read unanswered, answers a read of its clock (ServerStatus.CurrentTime)
    within ``connect_timeout_s``: a server that leaves one node's read unanswered (a node behind a device that is
    away, a request its stack drops) and answers the others is not hung; the source connects and reads the
    others (it gives up only after 3 nodes in a row go unanswered)."""
    try:
        async with _time_limit(settings.connect_timeout_s):
            await client.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime).read_value()
    except TimeoutError:
        return False
    except Exception:
        return True  # an answer, if an error (a connection lost fails the next read, which says so)
    return True


def _unanswered(settings: OpcUaSettings, node_id: str) -> str:
    return (
        f"node {node_id}: no answer within {settings.connect_timeout_s}s to a read of this node, while the "
        "server answers others; check the node_id (edge-agent browse) and the device behind it"
    )


def _stopped_answering(settings: OpcUaSettings, node_id: str) -> OpcUaError:
    """The check's end when the server, connected, does not answer a read of ``node_id`` in time, nor then one
    of its clock (``_still_answers``): each further node would cost as much (``connect_timeout_s`` each: minutes
    for a few hundred nodes), and each was blamed for it ("cannot be read (TimeoutError()); check the node_id")."""
    return OpcUaError(
        f"cannot check {mask_credentials(settings.endpoint)}: the server stopped answering after the connection "
        f"was made (no answer within {settings.connect_timeout_s}s to a read of node {node_id}): busy or hung; "
        "check the server and run the check again"
    )


async def _shape_misfit(node: Node, ns: Any, timeout_s: float) -> str | None:
    """Why the source would skip this node's values for their shape (``OpcUaSource._matrix``): a matrix
    (by its value's dimensions, else its ArrayDimensions) read without ``index``, an index that does not
    pick a row of it, or an index on a node holding one dimension; None when it fits or cannot be told."""
    try:
        async with _time_limit(timeout_s):
            dv = await node.read_data_value(raise_on_bad_status=False)
            attr = await node.read_attribute(ua.AttributeIds.ArrayDimensions, raise_on_bad_status=False)
    except (ua.UaError, TimeoutError):
        return None
    v = dv.Value
    if v is None or not isinstance(v.Value, list) or not v.Value:
        return None
    d = v.Dimensions if v.Dimensions and len(v.Dimensions) > 1 else None
    if (
        d is None
        and attr.Value is not None
        and isinstance(attr.Value.Value, list)
        and len(attr.Value.Value) > 1
    ):
        flat = np.asarray(v.Value, dtype=object).size
        d = attr.Value.Value if math.prod(attr.Value.Value) == flat else None
    shape = tuple(d) if d and sum(n > 1 for n in d) > 1 else None
    shown = "x".join(map(str, shape)) if shape else ""
    if ns.index is None:
        if shape is None:
            return None
        return (
            f"node {ns.node_id} holds a {shown} array (ArrayDimensions {list(shape)}): its values would be "
            "skipped (multi_dim), never read as one waveform of its rows end to end; pick a row with index "
            "(list the node once per row, each with its index and tag)"
        )
    index = [ns.index] if isinstance(ns.index, int) else list(ns.index)
    if shape is None:
        return f"node {ns.node_id} has index {index} but its value has one dimension; remove index"
    if len(index) != len(shape) - 1 or any(i >= n for i, n in zip(index, shape, strict=False)):
        return (
            f"node {ns.node_id}: index {index} does not pick a row of its {shown} array; give "
            f"{len(shape) - 1} index(es), each under its dimension"
        )
    return None


async def _member_tags(
    client: Client, held: dict[str, Node], timeout_s: float
) -> dict[str, list[str] | str | None]:
    """What each node's value gives as tags now (see ``check_server``): a structure's members are read
    the way the source reads them, after the server's type definitions (this one-off process's classes)."""

    async def values() -> dict[str, Any]:
        out = {}
        for tag, node in held.items():
            try:
                async with _time_limit(timeout_s):
                    out[tag] = await node.read_value()
            except Exception:  # no value to judge by (unreadable now): the member tags are not checked
                pass
        return out

    def undecoded(v: Any) -> bool:
        if (items := _variant_items(v)) is not None:
            return any(isinstance(x, ua.ExtensionObject) for x in items)
        return isinstance(v[0] if isinstance(v, list) and v else v, ua.ExtensionObject)

    now = await values()
    failed: str | None = None
    if any(undecoded(v) for v in now.values()):
        loads: tuple[Callable[[], Any], ...] = (
            client.load_data_type_definitions,
            client.load_type_definitions,
        )
        for i, load in enumerate(loads):
            try:
                async with _time_limit(timeout_s * 4):
                    got = await load()
            except Exception as e:  # the other way, or each structure is named undecodable below
                if not i:
                    failed = _types_failure(e, timeout_s * 4)
                continue
            if i and (got if isinstance(got, dict) else got[1]):  # the older way described some
                failed = None
            now = await values()
            if not any(undecoded(v) for v in now.values()):
                break
    out: dict[str, list[str] | str | None] = {}
    for tag, v in now.items():
        first = v[0] if isinstance(v, list) and v else v
        items = _variant_items(v)  # a Variant[] holding a structure: its items by index
        members: list[tuple[str, Any]] = []
        if undecoded(v):
            out[tag] = failed  # None: the types, read, do not describe it; else why they could not be read
        elif items is not None:
            _indexed(tag, items, members)
            out[tag] = [t for t, _ in members]
        elif _is_structure(first):
            _members(tag, v, members)
            out[tag] = [t for t, _ in members]
        elif v is not None:
            out[tag] = []
    return out


async def _children(node: Node) -> list[Node]:
    """The targets of ``node``'s forward hierarchical references (asyncua's ``get_children``), every page read by
    ``paged``: a browse cancelled between pages (its caller's timeout, a stop) left the continuation point held on
    the agent's session, one of the few a PLC keeps per session, for the session's life. A result not Good is raised
    (asyncua's took it as no children). A server handing a continuation point for ever (pages listing nothing new)
    has it released after ``BROWSE_IDLE_PAGES`` such pages in a row, the children listed kept: BrowseNext requests
    ran back to back until the caller's time bound. The Browse is ``browse_of``'s, of the current view: asyncua's
    asked the view at now, which an OPC Foundation .NET server refused (BadViewIdUnknown), the browse failed whole."""
    session = node.session
    params = browse_of(
        node.nodeid, ua.BrowseDirection.Forward, ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences))
    )
    results = await paged(session, session.browse(params))
    refs: dict[ua.NodeId, None] = {}  # the targets, in the order listed
    idle = 0  # pages in a row listing nothing new
    while True:
        if len(results) != 1:  # a faulty server's answer: said as a status, the folder skipped
            raise ua.UaStatusCodeError(ua.StatusCodes.BadUnexpectedError)
        results[0].StatusCode.check()
        before = len(refs)
        refs.update(dict.fromkeys(r.NodeId for r in results[0].References))
        idle = 0 if len(refs) > before else idle + 1
        if idle >= BROWSE_IDLE_PAGES:
            log.info(
                "opcua: browse of %s: its continuation point released after %d pages in a row listing nothing new "
                "(a server handing one for ever); the %d children listed kept",
                node.nodeid.to_string(),
                idle,
                len(refs),
            )
            await release_points(session, results)
            return [Node(session, r) for r in refs]
        if not results[0].ContinuationPoint:
            return [Node(session, r) for r in refs]
        results = await next_page(session, results[0].ContinuationPoint)


async def _browse(
    client: Client, folder_node_id: str | None, max_depth: int, skipped: list[str] | None = None
) -> list[dict]:
    """Variables under a folder: node_id, path (browse names from the start folder), browse_name (the
    default tag), data_type, array, array_size (None: scalar or unknown), access ('r', 'w', 'rw').

    Each node is visited once, by the first path that reaches it: a server's address space may hold
    reference cycles (a folder organizing its parent, views, cross-links), which were walked again and
    again, listing a variable once per path, exponentially in ``max_depth``. A node whose class or
    browse name cannot be read is left out and named in ``skipped``, not the end of the browse."""
    root = client.nodes.objects if folder_node_id is None else await _node(client, folder_node_id, {})
    out: list[dict] = []
    seen: set[ua.NodeId] = {root.nodeid}

    async def walk(node: Node, depth: int, path: str) -> None:
        try:
            children = await _children(node)
        except ua.UaStatusCodeError as e:
            if node is root:
                raise
            if skipped is not None:
                skipped.append(f"{path or node.nodeid.to_string()}: cannot browse ({code_name(e.code)})")
            return
        for child in children:
            if child.nodeid.NamespaceIndex == 0:  # skip the standard Server object and types
                continue
            if child.nodeid in seen:
                continue
            seen.add(child.nodeid)
            try:
                cls = await child.read_node_class()
                name = (await child.read_browse_name()).Name
            except ua.UaStatusCodeError as e:
                if skipped is not None:
                    skipped.append(
                        f"{child.nodeid.to_string()} (under {path or 'the start node'}): {code_name(e.code)}"
                    )
                continue
            here = f"{path}/{name}" if path else name
            if cls == ua.NodeClass.Variable:
                try:
                    vtype = (await child.read_data_type_as_variant_type()).name
                except Exception:  # a structure or a type the client cannot map: still listed
                    vtype = "?"
                try:
                    rank = await child.read_value_rank()
                except ua.UaStatusCodeError:
                    rank = -1  # unknown: listed as a single value
                size = None
                if rank >= 0:
                    try:
                        dims = await child.read_array_dimensions()
                        size = dims[0] if dims and dims[0] else None
                        if size is None:
                            v = await child.read_value()
                            size = len(v) if isinstance(v, list | tuple) else None
                    except Exception:
                        size = None
                try:
                    levels = await child.get_user_access_level()
                except Exception:
                    levels = set()
                access = ("r" if ua.AccessLevel.CurrentRead in levels else "") + (
                    "w" if ua.AccessLevel.CurrentWrite in levels else ""
                )
                out.append(
                    {
                        "node_id": child.nodeid.to_string(),
                        "path": here,
                        "browse_name": name,
                        "data_type": vtype,
                        "array": rank >= 0,
                        "array_size": size,
                        "access": access or "-",
                    }
                )
            elif cls == ua.NodeClass.Object and depth < max_depth:
                await walk(child, depth + 1, here)

    await walk(root, 1, "")
    return out


async def browse_server(
    settings: OpcUaSettings,
    folder_node_id: str | None = None,
    max_depth: int = 3,
    skipped: list[str] | None = None,
) -> list[dict]:
    """One-off connect, browse and disconnect, for config authoring (no subscription); the nodes that
    could not be read are named in ``skipped``. Any failure is an ``OpcUaError``."""
    client, oversize = await _one_off_client(settings, "opcua", stall_ends=True)
    silent = False  # the server stopped answering: its close is not waited for long
    try:
        return await _browse(client, folder_node_id, max_depth, skipped)
    except OpcUaError:
        raise
    except Exception as e:
        if oversize[0]:  # a browse answer over the limit: say so, not the lost connection it left
            raise OpcUaError(
                f"opcua {mask_credentials(settings.endpoint)}: {_too_large(oversize[0], settings)}"
            ) from None
        if isinstance(e, TimeoutError):  # said as "browse of Objects failed (TimeoutError)"
            silent = True
            raise OpcUaError(
                f"opcua {mask_credentials(settings.endpoint)}: the server stopped answering (no answer within "
                f"{settings.connect_timeout_s}s to a browse of {folder_node_id or 'Objects'}): busy or hung; "
                "check the server and run this again"
            ) from None
        if isinstance(e, ua.UaStatusCodeError):
            why = code_name(e.code)
        else:
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise OpcUaError(
            f"opcua {mask_credentials(settings.endpoint)}: browse of {folder_node_id or 'Objects'} failed ({why})"
        ) from None
    finally:
        cto = settings.connect_timeout_s
        await _close_one_off(client, min(cto, SILENT_CLOSE_S) if silent else cto)
