"""Sparkplug B host-application logic: births, data, deaths, sequence checks, rebirth requests.

Keeps, per edge node (group, edge_node), the bdSeq and alias table of its last NBIRTH (aliases
are unique across the node and its devices, as the specification requires), the datatypes and Template
members its last births declared (an NBIRTH forgets those of the node and its devices, a DBIRTH those of
its device: a command is typed by the current birth only) and the last seq
(0..255, wrapping; a gap is counted as ``seq_gap``, the data is still used, and a rebirth is asked: the
lost message's change would otherwise stand unseen; see ``_check_seq``). NDATA/DDATA
metrics are resolved by alias (one of the node's for an NDATA, of its device for a DDATA: another's alias is
unknown) or name; an unknown alias, or data before any birth (a DDATA before its
device's DBIRTH too), is counted
(``unknown_alias``; ``data_before_birth``, which is normal after the host starts and so counted apart,
not as an error), skipped, and answered by an NCMD
``Node Control/Rebirth`` = true (an alias the birth answering it does not declare either asks no more until the
node's data is read whole by its aliases: ``_Node.alias_born``). Every rebirth wanted (these, a seq gap, a skipped or retained birth, this
host's reconnect) is queued per node, oldest first, and asked by ``tick`` (at each request, and every
``TICK_S`` by the adapter's one periodic task: a stale node that sends nothing more is asked too) when due: at
most once per ``rebirth_min_interval_s`` per node (a later request waits, it is not dropped; a birth read
meanwhile answers it), not while the node's births budget is spent, not of a node dead (NDEATH; until this
host's reconnect, after which it is asked as every node not born) or whose births no subscription takes, and at
most ``rebirth_max_per_s`` for the whole source. A node asked that sends no birth is asked again after
``rebirth_retry_s``, then after twice as long each time up to ``rebirth_retry_max_s`` (``_ask_unanswered``;
counted as ``rebirths_repeated`` and the ``rebirth_unanswered`` notice), until a birth of it is read, or until
``rebirth_give_up_s`` have passed since the first of these asks and since its last message: a node taken out
of service without a death (switched off, removed) is then asked nothing more (counted as
``rebirths_given_up`` and the ``rebirth_given_up`` notice, said once per node), until it sends anything again.
The table of nodes holds at most ``MAX_NODES`` (names come from the outside world: made-up ones, or a gateway
whose edge node id changes at every restart); when it is full, a new node takes the place of the least recently
heard that holds nothing worth keeping: never born, given up on while not born, or never born and its birth
skipped by the inflate budget (a flood of compressed births under made-up names), else dead ``DEAD_KEEP_S``
(``_room``: counted as ``nodes_forgotten`` and its notice; its rebirth requests waiting are dropped). Past those,
a new node's NBIRTH takes the place of a born one (``born_nodes_forgotten``): one whose later birth was skipped
and that never spoke, then one that sent births only since its
birth (valid NBIRTHs under made-up names, a client on the plant's shared broker), least recently heard first, then
a silent one, then one that sent no data for ``TALKING_KEEP_S``; a never-born name's data, only of a silent one or
one quiet ``TALKING_KEEP_S``. A node that sends data is so kept whatever the flood of births; when no place is
found the new one is skipped (``too_many_nodes``), and a name whose data was so refused is asked its birth all the
same, within ``rebirth_max_per_s``. A born node that sends nothing for ``rebirth_give_up_s`` with no death read is
asked its birth (one reporting by exception is quiet for days, its session valid); if it sends nothing within
``rebirth_retry_max_s`` of that ask (a cable cut, a broker that lost its will) it goes silent (``_silence``, run by
``tick``): its tags that had a value are passed on BAD as a death would make them (``take_stale``), counted
(``node_silent``), commands refused, asked nothing, until it sends anything, which is read and asks its birth. The other state kept per name coming from the outside world is bounded too: groups whose
births no subscription takes (``_unreachable``, ``MAX_UNREACHED_GROUPS``, least recently seen forgotten, one
notice key whatever the group), the nodes' inflate budgets (``MAX_NODES``, least recently used forgotten), a
node's devices born (``MAX_NODE_DEVICES``) and its metrics, aliases and last values (``MAX_NODE_METRICS``), and the
metrics all nodes hold together (``MAX_TOTAL_METRICS``, a Template's members each, its definitions' too: a birth
past it makes room as a new node does in a full table, nodes not born that hold metrics forgotten first, then
births-only ones; else it is refused, ``too_many_total_metrics``, ``_metric_room``), and the device names they hold
together (``MAX_TOTAL_DEVICES``: a node's own dead ones forgotten, then other nodes dead ``DEAD_KEEP_S`` or gone
silent, else a new device's birth refused, ``too_many_total_devices``, ``_no_device_room``, and the births-only nodes
holding names, quiet ``rebirth_retry_max_s``, asked their birth, to go silent if they do not answer,
``_probe_holders``; no node that speaks or answers the birth asked of it is forgotten for it).
When this host's connection to the broker is lost (``connection_lost``, called by the adapter after every message
that connection brought), every live node's tags that had a value are passed on BAD (reason ``connection_lost``):
what the nodes publish meanwhile, a death too, is unseen.
When this host's own connection to the broker comes back (``session_lost``, called by the adapter before
it decodes anything the new connection brought), every node it knows is treated as not born: what was
published while it was away (a death, a birth with a new alias map or new datatypes) was missed, so its
data is skipped (``data_before_birth``) and commands are refused until its next NBIRTH, which an NCMD
``Node Control/Rebirth`` asks of each node at once (unless ``rebirth_on_unknown`` is off).
NDEATH (with the birth's bdSeq; the same death again, its will after the node's own NDEATH, is ignored;
one without a bdSeq, 0 bytes, while the birth had one is ``missing_field``, not a death)
and DDEATH emit, for every tag of the node or device that had a value, a ``Reading`` with the last value
and ``Quality.BAD``, stamped with the receive time (NDEATH) or the DDEATH's own time; a later birth brings
GOOD values back. A metric flagged ``is_null`` (no value now) does the same for its tag (a null Template
instance, for its members' tags). A NaN or infinite Float/Double metric, or a float array holding one (an open
thermocouple, a dropped sample), is counted as ``non_finite`` and passed on as a BAD reading of its tag
(``non_finite="skip"``: no reading; the tag keeps its last value); a DataSet column's NaN is an empty cell.
Tags are named ``{edge_node}/{device}/{metric}`` (``{edge_node}/{metric}`` for node metrics) unless
``tag_map`` renames them; the group is not in the name, so a node name used by a live node of another
group is a clash, whose messages are skipped (``node_name_clash`` notice). ``bdSeq`` and
``Node Control/*`` metrics are not tags.
A Template instance (an Ignition UDT, say) gives one tag per member, ``{metric}/{member}`` (nested
templates: ``{metric}/{member}/{member}``), each read by its own datatype, or by the birth's or the
NBIRTH's definition's when a data message leaves it out; definitions give no tag, and a data message
carrying only the members that changed updates only those. A metric's "Quality" property (Ignition's
nodes send one when a tag is not good) gives the reading's quality (``sparkplug.quality_of``).
A value flagged ``is_historical`` (sent late by the node's store-and-forward after an outage) is not a
current value: it gives no reading (an alarm or a PLC write now would act on an old state) and does not
become the tag's last value; it is counted as the ``historical`` notice.
A timestamp of 0 (a node without a clock) is taken as none: a metric's falls back to its payload's, and
that to the receive time; so is one that is this century's epoch seconds sent as milliseconds (it would be
January 1970, and within a day of the receive time), counted as ``bad_timestamp`` (once per timestamp). Any other
time before 2001 (a node whose clock was never set stamps its uptime) is passed on as it is, and the adapter gives
it the receive time (``MqttSource._order``: ``clock_skew``). A Float metric (32 bits) is read as the
shortest decimal that is the same Float (0.3, not 0.30000001192092896: ``protocols.float32``). A DateTime
metric (epoch milliseconds) is read as ISO 8601 text, as the OPC UA source gives a time
(``sparkplug.datetime_text``; outside the years 1..9999: ``wrong_type``); one a node puts in another field is
read by the same rules (``sparkplug.datetime_read``: text a time with its zone, a date alone ``bad_timestamp``).
A Sparkplug 3.0 array of numbers or truth values (Int32Array, FloatArray, BooleanArray, ...; little-endian
bytes, typed by the metric's datatype or its birth's) gives a reading whose value is a 1-D NumPy array, as a
waveform pipeline takes it; bytes that do not fit the type are ``wrong_type``.
A payload Eclipse Tahu's nodes compress (uuid ``SPBV1.0_COMPRESSED``, DEFLATE or GZIP ``body``) is read as
the payload it holds, inflated to at most ``max_inflated_bytes`` (the source's ``max_message_bytes``: past
it, ``too_large``; a node's few kilobytes can inflate to gigabytes); one that does not inflate is
``bad_compression``. Inflating and decoding cost the loop by the inflated byte, so each edge node (group, name)
inflates at most ``max_inflated_bytes_per_s``, and the source's nodes together ``sp.INFLATE_TOTAL_NODES`` times
that (``sp.InflateBudget``, a node's drawing on the source's total): while its node's budget or the total is
spent, a compressed NDATA or DDATA is ``inflate_budget``, skipped, not inflated, and the node is asked for
nothing (the seq gap it leaves is neither counted nor answered by a rebirth, which would bring more to inflate;
the values it carried are missed until they change again). One node flooding spends its own budget and its
share of the total, and the source's other nodes are read on; several flooding at once can spend the total,
which then holds every node's compressed data. Births and deaths draw on budgets of their own, as large (per
node, and the total), never on data's: a node in a rebirth storm must not starve the other nodes' data. The
births' total keeps one node's budget in reserve from nodes refused within the last ``sp.STORMING_S`` (storming),
or that inflated over half their second's worth within about the last second (busy: a storm's opening burst,
before any is refused; a node's NBIRTH and the DBIRTHs that follow it are judged at the NBIRTH,
``InflateBudget.births_begin``): however many storm, a calm node's births are read (``sp.InflateBudget``). A
compressed birth past its node's births budget is ``inflate_budget``, not inflated, and its node (device)
stale: its tags BAD once, not born until a birth of it is read, a rebirth asked once that budget has some
left, whether it sends anything more or not (none is asked while it is spent: the answer would be skipped too). A compressed
death is inflated (skipped, a dead node's tags would stay GOOD until its next birth) while its node's own budget
has some left, the total's aside, to at most ``DEATH_MAX_INFLATED``; past either (``too_large``,
``inflate_budget``), its bdSeq is read from a bounded prefix (``sp.bd_seq_within``: ``DEATH_MAX_INFLATED``, or
``DEATH_PEEK_BYTES`` past the budget), so a stale will is ignored however large; an NDEATH whose bdSeq is not
within it is refused (not a death) while its node's birth had one: a node flooding compressed deaths spends its
own share of the total only, not the other nodes' births.
A DataSet metric (a table: Ignition's Dataset tags) gives a reading per column, ``{metric}/{column}``, whose
value is the column's rows as a 1-D NumPy array (typed by the column's datatype; an empty cell of a Float or
Double column is NaN); a column with a cell of another type, or an empty cell where no NaN can stand, is
``wrong_type``; a null DataSet makes its columns' last values BAD.
A StringArray metric is read as the JSON text of its strings (``["ABC", "hello"]``, ``sparkplug.string_array_text``).
Limits: Bytes and File metrics and DataSet text columns give no reading (said once, counted as the
``unsupported_metric`` notice), nor do PropertySet metrics (Tahu's JavaScript nodes send one without a value: the
same notice, its own message kept beside the first, ``Notices`` keeps one per cause). A metric of a datatype
Sparkplug B does not define (0, Unknown, stated; 99), in its message or by its birth, cannot be interpreted: its
value is skipped, counted as the ``undefined_datatype`` notice, said once per node and metric (``_say_undefined``).
A metric flagged ``is_transient`` (not to be historized) gives readings marked ``transient``: live values, which
the agent's forwards keep out of the outbox. STATE, NCMD and DCMD are ignored.
Not thread-safe: call ``handle`` from one thread (the adapter uses its asyncio loop).
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devices.base import (
    QUALITY_BY_NAME,
    FractionFloat,
    Quality,
    Reading,
    WholeFloat,
    float_for_plc,
    named_as_written,
    text_problem,
    written_number,
)
from devices.mqtt.settings import SparkplugHostSettings
from protocols import sparkplug as sp
from protocols.float32 import float32_shown
from protocols.json_codec import CodecError
from protocols.topics import shown_topic

Publish = Callable[[str, bytes], None]
OnError = Callable[[str, str], None]


def _monotonic() -> float:
    """The clock the inflate budgets are kept on: this module's ``time`` read at each call, as the host's other
    rates and waits read it, so one stand-in for it (a test holding the clock) holds them all."""
    return time.monotonic()


@dataclass(slots=True)
class Decoded:
    """A Sparkplug payload decoded in a worker thread (``decode_apart``): its ``payload`` (None: compressed, decoded
    by the host on its inflate budget) or the ``error`` that refused it, raised where its decoding would have."""

    payload: sp.Payload | None
    error: Exception | None


def decode_apart(data: bytes) -> Decoded:
    """A large payload's decoding, made to run in a worker thread: it touches no state of the host (a compressed
    one is left to ``SparkplugHost.handle``). Decoded on the loop, 100,000 metrics held it 1.8-2.7 s."""
    try:
        return Decoded(sp.decode_uncompressed(data), None)
    except Exception as e:  # raised by handle, as its own decoding's would be
        return Decoded(None, e)


@dataclass
class _Node:
    bd_seq: _BdSeq | None = None
    seq: int | None = None
    alive: bool = False
    births_read: int = 0  # its last NBIRTH read, stamped (``SparkplugHost.births_read``)
    aliases: dict[int, tuple[str | None, str]] = field(default_factory=dict)  # alias -> (device, metric)
    clashes: set[int] = field(default_factory=set)  # aliases its births gave to two metrics: data skipped
    last: dict[tuple[str | None, str], tuple[Any, float]] = field(
        default_factory=dict
    )  # (device, metric) -> value, ts
    # ``last``'s keys per device, each with its place in ``last`` (keys are never removed from it), and sorted:
    # a DDEATH marks its device's tags BAD, and a null Template or DataSet its members' (``{metric}/...``), at
    # the cost of what they mark, not of the node's every last value (10,000 devices each sending a DDEATH
    # scanned the node's last values 10,000 times)
    last_keys: dict[str | None, dict[str, int]] = field(default_factory=dict)
    last_sorted: dict[str | None, list[str]] = field(default_factory=dict)
    types: dict[tuple[str | None, str], int] = field(
        default_factory=dict
    )  # (device, metric) -> datatype from births
    last_rebirth: float = -math.inf
    templates: dict[str, dict[str, int]] = field(
        default_factory=dict
    )  # NBIRTH's Template definitions: name -> member path -> datatype
    members: dict[tuple[str | None, str], tuple[tuple[tuple[str, str | None], ...], str]] = field(
        default_factory=dict
    )  # (device, "Motor1/Speed") -> ((("Motor1", "Motor"),), "Speed"): the templates it sits in, from the top
    devices: set[str] = field(default_factory=set)  # devices born (DBIRTH) and not dead since
    # tag paths two points of its births name (a plain metric ``M1/Speed`` and Template instance ``M1``'s member
    # ``Speed``; the node's metric ``d1/level`` and device ``d1``'s ``level``) -> (the two, the device whose
    # DBIRTH named it: its next one judges it again): neither is read into the tag nor commanded (``_learn``)
    ambiguous: dict[tuple[str | None, str], tuple[str, str | None]] = field(default_factory=dict)
    # per device, the metric names its last DBIRTH put in types and members, and the aliases it gave: its next
    # DBIRTH forgets them at the cost of its own, not of the node's every metric (a node's rebirth of 10,000
    # devices read each DBIRTH over all the node's metrics: 34 s of CPU)
    owned: dict[str, tuple[set[str], set[int]]] = field(default_factory=dict)
    missed: bool = False  # this host's connection was lost while it lived: its births since were missed
    dead_bd: _BdSeq | None = None  # bdSeq of the death taken last: the same death again (its will) is ignored
    run: int = 0  # data messages in sequence since its birth or last gap: a gap after one asks a rebirth
    # born by a retained birth only (the broker's copy, of unknown age), no live message since: commands wait
    unproven: bool = False
    unproven_devices: set[str] = field(default_factory=set)  # the same for devices (a retained DBIRTH)
    # a rebirth was asked for a gap and no birth since was followed by data in sequence: a birth answering it whose
    # own first data is a gap again (a node whose data after a birth never follows it) asks no more
    gap_asked: bool = False
    # the next data message is its birth's first: in sequence, it clears ``gap_asked``
    birth_first: bool = False
    # its last birth's first data was in sequence: its data in sequence after a gap clears ``gap_asked`` too, so
    # a birth answering that gap whose own first data is lost is asked again (a node whose births are followed
    # in sequence is not the broken kind); a birth whose first data is a gap unsets it
    birth_followed: bool = False
    # a birth of it was followed by data in sequence, ever: a node whose births follow, not the broken kind whose
    # data after each birth goes on from before it (``gap_births``)
    ever_followed: bool = False
    # its births in a row whose first data was a gap (a birth's first data in sequence resets it, and so does
    # rebirth_retry_max_s passed since ``lost_first_at``): while it is under 2, a node that ever followed its
    # births whose birth's first data alone is lost (one message: its seq the birth's + 2, wrapped as the gap test
    # wraps) is asked again, so a lossy link's loss right after two births in a row is asked both times; a node
    # whose data after a birth goes on from before it (another seq) is not, nor past 2 births in a row within
    # that time (a node whose data after each birth starts at 2 is asked at most twice per rebirth_retry_max_s)
    gap_births: int = 0
    # when (monotonic) it was last asked a rebirth for a birth's first data alone lost: the count above decays
    # from here, so one unlucky streak does not leave every later restart's lost first data unasked for ever
    lost_first_at: float = -math.inf
    # after an NBIRTH whose seq is not 0, its next message may also be seq 1 (its data counting from 1 after
    # such a birth, as after Sparkplug's NBIRTH at 0, ``_birth_seq``): in sequence as well as the birth's seq + 1
    # (0 after 255); None otherwise, and after a birth of a node known to go on from its births' seq
    # (``goes_on``): its next is the birth's seq + 1 (0 after 255), a 1 then a gap
    birth_restart: int | None = None
    # the seq of its last NBIRTH when not 0, until the message after it: what that message shows of the node
    # (``goes_on``) is learnt there
    birth_at: int | None = None
    # how its messages follow an NBIRTH whose seq is not 0, learnt from such births: True, they go on from the
    # birth's seq (7 -> 8, 255 -> 0); False, they count from 1 (7 -> 1); None, not shown yet. Only a 1 after a
    # birth at 255 is both (a node that counts from 1, or one that wraps whose 0 was lost): a gap only of a node
    # known to go on, in sequence otherwise (as the 1 after Sparkplug's NBIRTH at 0; each such birth of a node
    # counting from 1 was a seq_gap, a rebirth asked), and so is a 2 after a birth at 1. Of a node known to
    # count from 1, only its 1 follows a birth (the birth's seq + 1, or the birth's seq again, is its 1 lost)
    goes_on: bool | None = None
    # the other kind than ``goes_on`` shown by the message after its last NBIRTH whose seq is not 0 (a 1 after a
    # birth at 7 of a node known to go on, an 8 of one known to count from 1): that message is a gap of the known
    # kind (a rebirth asked), and learnt only when the message after the next such birth shows the same again
    # (``_after_birth``); None when its last such birth showed its known kind, or nothing
    kind_doubt: bool | None = None
    # a rebirth was asked while ``goes_on`` was None for a 1 after a birth at the top of a counter (255), which is
    # data counting from 1 or a node going on whose 0 was lost: asked once, the birth answering it carries every
    # current value (and a birth at another seq shows the node's kind)
    kind_asked: bool = False
    # a compressed message of it was skipped by the inflate budget: the next seq gap is this host's
    # doing, not counted and not answered by a rebirth (one would bring more to inflate)
    budget_skipped: bool = False
    # its last NBIRTH was skipped by its births' inflate budget (a rebirth storm): not born until a birth of
    # it is read, which is asked once its budget has refilled (``_before_birth``)
    birth_skipped: bool = False
    # a rebirth is wanted and not asked yet (queued in ``SparkplugHost._asking``): None for the node, a device's
    # name for that device only (its DBIRTH skipped, or data before it); a birth that answers it clears it
    want: set[str | None] = field(default_factory=set)
    # what was asked (``want`` when asked) and not answered yet by a birth: asked again when ``retry_at`` has
    # come (``SparkplugHost._unanswered``), after ``retry_s``, which doubles at every ask up to its cap
    asked: set[str | None] = field(default_factory=set)
    retry_s: float = 0.0
    retry_at: float = math.inf
    # when the asking began that no birth has answered yet (monotonic), and when the node's last message was
    # read: asked for rebirth_give_up_s after the later of both without an answer, it is given up on
    # (``SparkplugHost._ask_unanswered``) until it sends anything again
    asked_since: float = math.inf
    heard: float = -math.inf
    # what it was asked when given up on: asked again at its next live message (a born node's data does not
    # ask by itself: a seq gap's rebirth, given up on, would otherwise never be asked again)
    given_up: set[str | None] = field(default_factory=set)
    born: bool = False  # a birth of it was read once: dead, kept DEAD_KEEP_S (``SparkplugHost._file``)
    # a device birth of it gave a device metric the alias a metric of the node or of another device holds (against
    # Sparkplug): its next births may too, so a command after its NBIRTH waits for its devices' births
    # (``devices_unborn``)
    shares_aliases: bool = False
    # the devices born (a live DBIRTH read) since its last NBIRTH (of a node that shares aliases: since its last
    # restart, through the NBIRTHs answering a rebirth or after this host's reconnect), each True, False once dead
    # (DDEATH) since; and,
    # of a node that shares aliases, those its last birth's devices (and those of the birth before not born since:
    # two NBIRTHs before its DBIRTHs, a rebirth or this host's reconnect after their wait) that no DBIRTH of since
    # its NBIRTH (read live) has named yet, and those of its devices said dead since: its metrics commanded by name
    # alone while one is missing, and those True (not dead) waited for until ``expected_until`` (monotonic). A dead
    # one may come back (at the node's restart: a node shutting down says each device dead first), so it is not
    # forgotten, only not waited for. ``_FORGOTTEN`` stands for those forgotten past MAX_NODE_DEVICES
    named: dict[str, bool] = field(default_factory=dict)
    # of a node not known to share aliases: ``named`` as its last live NBIRTH found it (its session before's devices),
    # awaited as a sharing node's would be if a device birth of this session shows it shares (``_learn``): a command
    # went by the alias a device of the session before, late, then gave a device metric
    named_before: dict[str, bool] = field(default_factory=dict)
    expected: dict[str, bool] = field(default_factory=dict)
    expected_until: float = -math.inf
    clash_asked: bool = False  # a rebirth was asked for an alias its births gave to two metrics (``_learn``)
    # a rebirth was asked for data by an alias its births gave to a metric of another (the node's, or another
    # device's): a node that sends so by its program would bring the same map at every rebirth (``_readings``)
    scope_asked: bool = False
    # a rebirth was asked for data by a name its births did not declare, whose integer could not be read without
    # a datatype (``_readings``): once per node, as ``scope_asked``: a node whose program sends such a metric
    # would otherwise be reborn whole at every rebirth_min_interval_s
    undeclared_asked: bool = False
    seq_said: bool = False  # a seq of it past 255 was said (``SparkplugHost._seq_range``): later ones counted
    # a message of it without a seq was said (``SparkplugHost._check_seq``): later ones counted
    seq_none_said: bool = False
    # a message of it since its last NBIRTH held a seq other than 0: a later one holding none is its 0, left out by
    # an encoder that writes no field at its default (``SparkplugHost._check_seq``)
    seq_shown: bool = False
    # the kinds of message of it (NDATA, DDATA, DBIRTH, DDEATH) that held a seq other than 0 since its last death: it
    # numbers them, so one of that kind holding none after a seq other than 0 since its birth, or after a counter's
    # top, is its 0 (``SparkplugHost._check_seq``); a node that numbers some kinds alone (its births, not its data;
    # its NDATA, not its DDATA) is not taken so for the others: its seq-less ones no gap, no rebirth asked
    seq_kinds: frozenset[sp.MessageType] = frozenset()
    # the payload timestamp of its last data message whose seq was checked (None after any other message): data at
    # the same seq with another timestamp is no redelivery but 256 messages on, 255 lost (``_check_seq``)
    data_ts: int | None = None
    # an NBIRTH of it whose seq was not 0 was said (``SparkplugHost._birth_seq``): later ones counted
    birth_seq_said: bool = False
    # a rebirth was asked for data by an alias its births did not give (``_readings``), and no data message of it
    # was read whole by its aliases since; ``alias_born``: a birth of it was read after that ask. Data by an alias
    # such a birth does not declare either asks no more: a node whose NDATA use aliases its NBIRTH never declares
    # was reborn whole at every rebirth_min_interval_s for ever, each birth as unhelpful as the last
    alias_asked: bool = False
    alias_born: bool = False
    # its data showed a birth of it missed (a seq gap, an alias its births did not give: which, said) and a rebirth
    # was asked for it: commands wait for a birth (``birth_owed``) until one is read or its death; not cleared by its
    # later data (in sequence, or by aliases its births gave: a node that restarted and re-aliased sends such data
    # too). With rebirth_on_unknown off, set though nothing is asked: commands are refused until a birth is read
    # (``birth_unsure``); "" when nothing showed one missed
    birth_missed: str = ""
    # a birth of it declared metrics past MAX_NODE_METRICS, whose types were not kept (``_learn``): data without a
    # datatype by a name not in ``types`` may be one of them, so such an integer is read as the wire's number, as
    # before the skip of undeclared ones (``_readings``); forgotten at its next NBIRTH
    types_cut: bool = False
    # a birth of it declared a Template instance or a DataSet (``types``): a data metric stating another datatype is
    # judged by the birth's there (``_readings``); forgotten at its next NBIRTH
    tables: bool = False
    # a live data message (NDATA, DDATA) of it was read since its birth, or its birth answered a rebirth asked: a
    # node that only sends births (a flood of made-up names) is forgotten before those that speak when the table
    # is full (``SparkplugHost._room``)
    talked: bool = False
    # the session its last live NBIRTH ended had a device born or ``talked``: a restart of a node, whose devices'
    # births are awaited before it is forgotten for another's birth (``SparkplugHost._births_only``). Births alone
    # (NDEATH and NBIRTH again and again within REBORN_DEVICES_WAIT_S, never its DBIRTHs) kept a made-up name so
    proven: bool = False
    # born, and nothing heard of it for rebirth_give_up_s, no death read (a cable cut, a broker that lost its
    # will): its tags were marked BAD as a death would (``SparkplugHost._silence``), until it sends anything
    silent: bool = False
    # live when this host's connection was lost: its tags were marked BAD (``connection_lost``), and nothing of it
    # has been read since (any message clears it); the reconnect's ``session_lost`` marks them no second time
    lost: bool = False
    # born, live, and nothing heard of it for rebirth_give_up_s: a node reporting by exception whose values hold
    # still says nothing for days, its session valid (Sparkplug 3.0, Data Publish). When it was asked its birth to
    # learn whether it lives (monotonic; ``SparkplugHost._silence``), and when that ask was sent (``tick``):
    # silent only if nothing of it is heard within rebirth_retry_max_s of the send. Any live message clears both
    probed: float = math.inf
    probe_sent: float = math.inf
    # metrics it holds (the most of its types, Template members, aliases and last values, and its Template
    # definitions' members), as last counted in the source's total (``SparkplugHost._held``, ``MAX_TOTAL_METRICS``)
    held: int = 0
    # device names it holds (``devices``, ``named``, ``named_before``, ``expected`` together), as last counted in the
    # source's total (``SparkplugHost._names``, ``MAX_TOTAL_DEVICES``)
    names_held: int = 0
    defined: int = 0  # members of its NBIRTH's Template definitions (``templates``), counted in ``held``
    # (device, metric) its births flagged ``is_transient`` (not to be historized): its data is so too, flagged or
    # not (Sparkplug 3.0 data carry what changed); kept and forgotten with ``types``
    transient: set[tuple[str | None, str]] = field(default_factory=set)


def _definition_types(t: sp.Template, prefix: str = "", depth: int = 0) -> dict[str, int]:
    """A Template definition's members (nested ones by path) and their datatypes."""
    out: dict[str, int] = {}
    for m in t.metrics:
        if not m.name:
            continue
        path = f"{prefix}{m.name}"
        if isinstance(m.value, sp.Template) and depth < sp.MAX_TEMPLATE_DEPTH:
            out.update(_definition_types(m.value, path + "/", depth + 1))
        elif m.datatype or m.unknown_type:
            out[path] = _stated(m)
    return out


# a birth's datatype 0 stated, Unknown (Sparkplug 3.0: a placeholder of no type), as ``_Node.types`` keeps it: 0 there
# is a metric declared without a datatype, read by its value's field as before
_UNKNOWN = -1


def _stated(m: sp.Metric) -> int:
    """The datatype ``m`` states, ``_UNKNOWN`` for an explicit 0; 0 when it states none."""
    return _UNKNOWN if m.unknown_type else m.datatype


def _undefined(dt: int) -> bool:
    """A datatype (stated, or kept from a birth: ``_UNKNOWN``) that Sparkplug B does not define."""
    return bool(dt) and dt not in sp.DEFINED_DATATYPES


def _members(t: sp.Template, depth: int = 0) -> int:
    """A Template's members, nested ones counted as their own members (at most ``MAX_TEMPLATE_DEPTH`` deep)."""
    n = 0
    for m in t.metrics:
        if isinstance(m.value, sp.Template) and depth < sp.MAX_TEMPLATE_DEPTH:
            n += _members(m.value, depth + 1)
        else:
            n += 1
    return n


def _declared(payload: sp.Payload, *, definitions: bool) -> int:
    """The metrics a birth declares, as its node will hold them: each metric, and each member of its Template
    instances and (``definitions``: an NBIRTH) of its Template definitions. Judged by its top-level metrics, a
    birth of two whose Template expands to 99,000 members passed ``MAX_TOTAL_METRICS`` with one place left."""
    n = len(payload.metrics)
    for m in payload.metrics:
        v = m.value
        if isinstance(v, sp.Template) and not m.is_null and (definitions or not v.is_definition):
            n += _members(v)
    return n


def _said_or(quality: int | str | bool | None, reason: str) -> str:
    """Why a metric the host makes BAD (sent with no value, ``is_null``: ``null_value``; NaN: ``non_finite``)
    is so: its Quality property's name when that is not good (Ignition's ``Bad_NotConnected``: why it is gone),
    as the OPC UA source keeps a status's name for such a value; else ``reason``."""
    if quality is None:
        return reason
    return sp.quality_reason(quality)[1] or reason


def _leaves(
    flat: str,
    name: str,
    m: sp.Metric,
    ts_ms: int | None,
    chain: tuple[tuple[str, str | None], ...] = (),
):
    """``(tag path, leaf metric, its timestamp, templates it sits in)`` for a metric: itself, or a Template
    instance's members, nested ones flattened. A member without a timestamp takes its instance's."""
    v = m.value
    ts_ms = (
        m.timestamp_ms or ts_ms
    )  # 0 is no time (a node without a clock): its instance's, else the payload's
    if not isinstance(v, sp.Template):
        yield flat, m, ts_ms, chain
        return
    if v.is_definition or m.is_null:
        return
    chain = (*chain, (name, v.ref))
    for x in v.metrics:
        if x.name:
            yield from _leaves(f"{flat}/{x.name}", x.name, x, ts_ms, chain)


# a timestamp in this range is a node's epoch seconds (2001-2286) sent as milliseconds (the MQTT JSON rule too)
SECONDS_AS_MS = (1_000_000_000, 10_000_000_000)
# ... when it is this near the receive time (a gateway whose own clock is set): else it is an uptime (below)
SECONDS_NEAR_S = 86_400
_FLOAT = sp.DataType.FLOAT  # 32 bits: read as the node shows it (``float32_shown``)
_INT64, _UINT64 = sp.DataType.INT64, sp.DataType.UINT64  # 64 bits: written in long_value (a uint64)
_DATETIME = sp.DataType.DATETIME  # epoch milliseconds: read as a time (``sparkplug.datetime_text``)
_UNREAD = (sp.DataType.DATASET, sp.DataType.FILE)  # decoded without a value (``sparkplug._get_value``)
_PROPERTY_TYPES = {20: "PropertySet", 21: "PropertySetList"}  # (``sp.DataType`` has no member for them)
# Sparkplug 3.0's arrays, whose value is bytes_value's (``sp.array_value``; ``sp.DataType`` has no member for them)
_ARRAY_TYPES = {
    22: "Int8Array",
    23: "Int16Array",
    24: "Int32Array",
    25: "Int64Array",
    26: "UInt8Array",
    27: "UInt16Array",
    28: "UInt32Array",
    29: "UInt64Array",
    30: "FloatArray",
    31: "DoubleArray",
    32: "BooleanArray",
    33: "StringArray",
    34: "DateTimeArray",
}
# a scalar datatype -> the Python type of the value its field decodes to, and that field (Sparkplug 3.0,
# "Datatype Details": Int8 to UInt32 a uint32, Int64 and UInt64 a uint64, Float a float, Double a double,
# Boolean a bool, String, Text and UUID a string). The two integer fields stand for each other, and so do the
# two floating ones: Tahu's libraries write UInt32 in one or the other, and the number is the same (but an Int64 or
# UInt64 at 2**31 or above in int_value, 32 bits, is no one number: refused, ``Metric.int_value_high``)
_FIELD_OF: dict[int, tuple[type, str]] = {
    **{
        dt: (int, "not in int_value or long_value as Sparkplug writes it")
        for dt in range(sp.DataType.INT8, sp.DataType.UINT64 + 1)
    },
    sp.DataType.FLOAT: (float, "not in float_value or double_value as Sparkplug writes it"),
    sp.DataType.DOUBLE: (float, "not in double_value or float_value as Sparkplug writes it"),
    sp.DataType.BOOLEAN: (bool, "not in boolean_value as Sparkplug writes it"),
    sp.DataType.STRING: (str, "not in string_value as Sparkplug writes it"),
    sp.DataType.TEXT: (str, "not in string_value as Sparkplug writes it"),
    sp.DataType.UUID: (str, "not in string_value as Sparkplug writes it"),
    # a number, truth value or text by the alias of a Template or DataSet metric: no member or column of it (it was
    # read into the Template's or DataSet's own name as a tag, GOOD, beside its members' tags)
    sp.DataType.TEMPLATE: (sp.Template, "not in template_value as Sparkplug writes it"),
    sp.DataType.DATASET: (sp.DataSet, "not in dataset_value as Sparkplug writes it"),
    # an array, Bytes or File: a number, truth value or text in one's metric was read GOOD, a scalar where a waveform
    # pipeline takes an array, or a reading where none is given (Bytes, File)
    **{
        dt: (bytes, "not in bytes_value as Sparkplug writes it")
        for dt in (sp.DataType.BYTES, sp.DataType.FILE, *_ARRAY_TYPES)
    },
    # PropertySet and PropertySetList (``_no_field``): Sparkplug gives them to a metric's property values, a metric
    # has no field for them; a number or text in one's metric was read GOOD, typed as nothing the birth declared
    **{
        dt: (
            type(None),
            "while a metric has no field for it (Sparkplug gives that datatype to property values only)",
        )
        for dt in _PROPERTY_TYPES
    },
}
_FIELD_NAME = {
    int: "an integer field",
    float: "a floating-point field",
    bool: "boolean_value",
    str: "string_value",
    # an Int32's or Double's value in bytes_value (an encoder packing a number's bytes): said to be a Bytes metric
    bytes: "bytes_value",
}
_DDATA = sp.MessageType.DDATA


def _shown(*parts: str | None) -> str:
    """A metric's path (``device/metric``) as a log line quotes it: escaped and cut (``shown_topic``). A metric
    name holding an ANSI escape or a line feed, written raw, coloured the terminal and forged a line of the log."""
    return shown_topic("/".join(x for x in parts if x))


_TABLES = {sp.DataType.TEMPLATE, sp.DataType.DATASET}  # metrics whose tags are {metric}/{part}
# the last seq of a counter that wraps to 0 (``_check_seq``): Sparkplug's 255, and an encoder's 16-, 32- or 64-bit,
# unsigned or signed (a PLC's Int16 register, a Java or C# int reset to 0 at MAX_VALUE)
_SEQ_TOPS = frozenset((255, 2**15 - 1, 2**16 - 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1))


# the bits of a bdSeq declared under each integer type; a 64-bit one under any other (none, Double)
_BD_BITS: dict[int, int] = {
    sp.DataType.INT8: 8,
    sp.DataType.UINT8: 8,
    sp.DataType.INT16: 16,
    sp.DataType.UINT16: 16,
    sp.DataType.INT32: 32,
    sp.DataType.UINT32: 32,
}


@dataclass(frozen=True, slots=True, eq=False)
class _BdSeq:
    """An NBIRTH's or NDEATH's bdSeq as declared: its value and the bits of its datatype. Two are the same bdSeq
    when they agree in the bits both declare: a birth's Int32 -1 and a death's UInt32 4294967295 (the same
    int_value on the wire), an Int64 -1 and an Int32 -1 or a UInt64 2**64-1, a Double -1.0 and an Int64 -1.
    Compared as read, such a death did not match its birth and was ignored, the dead node's tags left GOOD. Two
    that differ only above the narrower type's bits (an Int8 5 and a UInt16 261) match too: no Sparkplug node
    sends either (a bdSeq runs 0-255), and a stale will taken as the death is said and asked a rebirth of, where
    a real death ignored is a fault hidden."""

    value: Any
    bits: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _BdSeq):
            return NotImplemented
        if type(self.value) is int and type(other.value) is int:
            mask = (1 << min(self.bits, other.bits)) - 1
            return self.value & mask == other.value & mask
        return bool(self.value == other.value)

    def __str__(self) -> str:
        return str(self.value)


def _bd_seq(payload: sp.Payload) -> _BdSeq | None:
    """The bdSeq metric of an NBIRTH or NDEATH (None without one), as ``_BdSeq`` compares it: an integral float
    taken as its integer."""
    m = next((m for m in payload.metrics if m.name == sp.BDSEQ_METRIC), None)
    if m is None or m.value is None:
        return None
    value = m.value
    if type(value) is float and value.is_integer():
        value = int(value)
    return _BdSeq(value, _BD_BITS.get(m.datatype, 64))


def _next_seqs(last: int, restart: int | None = None) -> tuple[int, ...]:
    """The seqs in sequence after ``last``: the last plus one, or 0 after the top of a counter (Sparkplug's wrap
    255 -> 0, a wider counter's), and ``restart`` (1 after an NBIRTH whose seq is not 0, ``_birth_seq``)."""
    nexts = (last + 1, 0) if last in _SEQ_TOPS else (last + 1,)
    return nexts if restart is None else (*nexts, restart)


_DATA = (sp.MessageType.NDATA, sp.MessageType.DDATA)  # the messages whose seq in order shows a sane node
# births and deaths: inflated on a budget of their own, apart from data's (``handle``)
_BIRTHS = (sp.MessageType.NBIRTH, sp.MessageType.DBIRTH)
_DEATHS = (sp.MessageType.NDEATH, sp.MessageType.DDEATH)
# a compressed death inflates to at most this (it holds a bdSeq, a few dozen bytes): a death is always read,
# so its cost must be bounded by itself; past it, it is a death all the same, its payload unread
DEATH_MAX_INFLATED = 64 * 1024
# ... and one that comes while its node's births budget is spent: only this much of it is inflated, to read
# its bdSeq (a few dozen bytes, its first metric): a node flooding compressed deaths costs little each
DEATH_PEEK_BYTES = 1024
MAX_NODES = 10_000  # edge nodes one host keeps (a birth's aliases and last values each)
# a born, live node that sent data within this (s) is never forgotten for a new name (``SparkplugHost._room``)
TALKING_KEEP_S = 3_600.0
# a node dead (NDEATH) this long (s) without a message since may be forgotten when a new node needs room in the
# table; sooner only nodes that hold nothing worth keeping are (never born, or given up on: ``SparkplugHost._room``)
DEAD_KEEP_S = 3_600.0
# devices of one node whose birth a rebirth is wanted for (``_Node.want``); past it the node's own rebirth is
# wanted, which its every device's birth answers: device names come from the outside world
MAX_WANTED_DEVICES = 1_000
MAX_NODE_METRICS = 100_000  # metrics of one node (its devices' included) whose last value and type are kept
# ... and aliases its births gave (a device's DBIRTH again with new aliases adds to them), with those that clashed
# devices of one node born at once (DBIRTH, a retained one's too): device names come from the node, and a DBIRTH
# with no metrics costs nothing in MAX_NODE_METRICS; the birth of one past it is skipped (too_many_node_devices)
MAX_NODE_DEVICES = 10_000
# in ``_Node.named``/``expected``: devices forgotten there past MAX_NODE_DEVICES (devices born and dead under ever new
# names), any of which may come back: the node's metrics go by name alone as for a dead one. No device is so named:
# '+' cannot be in a topic a client publishes to
_FORGOTTEN = "+"
# metrics held by all of one source's nodes together (``_Node.held``; ~660 bytes each): MAX_NODES nodes of
# MAX_NODE_METRICS each were 10^9, and valid NBIRTHs of 99,000 metrics under made-up names took a gateway out of
# memory in minutes. A birth past it makes room as the table does (``SparkplugHost._metric_room``), else is refused
MAX_TOTAL_METRICS = 500_000
# device names held by all of one source's nodes together (``_Node.names_held``: each place a name is kept counted, a
# live device's twice; ~80 bytes each, 31 MiB at the bound, bench/sparkplug_device_names_bench.py): MAX_NODES nodes of
# MAX_NODE_DEVICES devices born and dead (DDEATH) under ever new names, with no metrics (not in MAX_TOTAL_METRICS),
# were 10^8 names (about 15 GiB). At it a node's own dead names are forgotten, then other nodes dead DEAD_KEEP_S or
# gone silent (``_free_names``), then the birth of a device new to its node is skipped (notice too_many_total_devices)
# and its data skipped, no rebirth asked (the answer would be skipped again), until a node's birth, death or
# forgetting frees names. No node is forgotten for device room by its quiet alone: a real node reporting by exception
# was forgotten for a births-only flood's new names
MAX_TOTAL_DEVICES = 400_000
# groups said to be out of the subscriptions' reach (``SparkplugHost._unreachable``): group names come from the
# outside world (a publisher on a shared broker sending spBv1.0/<any group>/NDATA/x while only NDATA is
# subscribed); past it the least recently seen is forgotten (said again if its data comes again)
MAX_UNREACHED_GROUPS = 1_000
# rebirth requests waiting (``SparkplugHost.tick``) looked at per call: the loop's cost stays bounded however
# many nodes are stale at once; those not due yet (interval, births budget) go to the back of the queue
ASK_SCAN_MAX = 256
# how often the adapter calls ``SparkplugHost.tick`` (s): waiting requests go out within this of being due
TICK_S = 0.25
# how long after an NBIRTH of a node known to give a device metric a node metric's alias its last birth's devices
# are waited for (``devices_unborn``): a Sparkplug node sends its DBIRTHs right after its NBIRTH; one not come by
# then is taken as gone, and the node's own metrics are commanded by name alone until it is born again
REBORN_DEVICES_WAIT_S = 5.0
# a large message's (decoded in a worker thread) metrics read at a time on the loop, its births' learnt too
# (``SparkplugHost.handle``): 99,999 of them held it 0.7-3.5 s; 1,024 take 5-30 ms
STEP_METRICS = 1_024


_EVERY = object()  # ``SparkplugHost._bad``: every device's last values and the node's


def _under(node: _Node, device: str | None, prefix: str) -> list[str]:
    """The device's keys in ``node.last`` that begin with ``prefix``, in their order there: found by bisection
    in the sorted keys, at the cost of those it gives."""
    keys = node.last_sorted.get(device, [])
    found = []
    i = bisect.bisect_left(keys, prefix)  # walked from there, not sliced: a slice copies the rest of the keys
    while i < len(keys) and keys[i].startswith(prefix):
        found.append(keys[i])
        i += 1
    order = node.last_keys[device] if found else {}
    return sorted(found, key=order.__getitem__)


def _no_field(datatype: int) -> bool:
    """PropertySet and PropertySetList (20, 21: a metric has no value field for them). A datatype Sparkplug B
    does not define is ``undefined_datatype`` (``SparkplugHost._readings``)."""
    return datatype in _PROPERTY_TYPES


INT32_MAX = 2**31 - 1  # an integer up to it reads alike as any Sparkplug integer type (``_readings``)
_INT_RANGE = {
    sp.DataType.INT8: (-(2**7), 2**7 - 1),
    sp.DataType.INT16: (-(2**15), 2**15 - 1),
    sp.DataType.INT32: (-(2**31), 2**31 - 1),
    sp.DataType.INT64: (-(2**63), 2**63 - 1),
    sp.DataType.UINT8: (0, 2**8 - 1),
    sp.DataType.UINT16: (0, 2**16 - 1),
    sp.DataType.UINT32: (0, 2**32 - 1),
    sp.DataType.UINT64: (0, 2**64 - 1),
}
# the datatypes a command writes (``command_value``): a birth's other types (Unknown, UUID, Bytes, arrays, ...)
# are written only as the action's ``datatype`` says
COMMAND_TYPES = frozenset(
    {*_INT_RANGE, sp.DataType.BOOLEAN, sp.DataType.FLOAT, sp.DataType.DOUBLE, sp.DataType.STRING}
    | {sp.DataType.TEXT, sp.DataType.DATETIME}
)


def datatype_name(dt: sp.DataType) -> str:
    """Sparkplug's spelling of a datatype, as births and the action's ``datatype`` write it: ``UInt8``,
    ``DateTime``."""
    return dt.name.title().replace("Uint", "UInt").replace("Datetime", "DateTime")


def command_value(dt: sp.DataType, value: Any, where: str) -> Any:
    """``value`` converted strictly to the Sparkplug datatype ``dt`` for a command to the metric ``where``;
    ``ValueError`` naming the metric, its type, the value and the fix when it does not fit: a string never
    becomes a boolean or a number (``"false"`` is never TRUE), an integer is within its type's range and a
    fraction is never rounded, a Float/Double is finite and arrives as itself (``float_for_plc``), text is
    valid UTF-8 and never NaN or infinity. NumPy scalars count as their Python values. The one check of a
    command's value: at send time (``MqttSource.command``, against the birth's datatype) and at load (a value
    the YAML fixes, against the action's ``datatype``). A config's whole number written with an exponent that a
    float does not hold (``WholeFloat``: 9.007199254740993e+15) is sent to an integer metric as the number its
    text shows, to any other as the float."""
    config_value = value
    # a config's number kept with its text: a refusal names it as written (9.007199254740993e+15, 0x8000, 2.50),
    # a String metric gets that text, every other metric the number (``written_number``)
    value, written, as_written, shown_text = written_number(value)
    if isinstance(value, WholeFloat):
        if dt in _INT_RANGE:  # the whole number its text shows, named as written (-9.223372036854775809e+18)
            value = value.whole
        else:
            value = float(value)
    elif isinstance(value, FractionFloat) and dt not in _INT_RANGE and dt is not sp.DataType.BOOLEAN:
        # 9007199254740992.5: a fraction to an integer or Boolean metric (refused as 1.5 is:
        # 1.0000000000000000001 was sent true), the float to others
        value = float(value)
    if isinstance(value, np.generic):
        value = value.item()

    def bad(fix: str) -> ValueError:
        return ValueError(
            f"metric {where} is {datatype_name(dt)}; cannot send "
            f"{as_written if as_written is not None and type(value) in (int, float) else repr(value)} "
            f"({'float' if isinstance(value, FractionFloat) else type(value).__name__}): {fix}"
        )

    if dt is sp.DataType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and not isinstance(value, FractionFloat) and value in (0, 1):
            return bool(value)
        raise bad("write true or false without quotes")
    if dt in _INT_RANGE:
        if isinstance(value, str) or (isinstance(value, float) and not value.is_integer()):
            raise bad("write a whole number without quotes; a fraction is never rounded or cut")
        if not isinstance(value, int | float):
            raise bad("write a whole number")
        lo, hi = _INT_RANGE[dt]
        if not lo <= int(value) <= hi:
            raise bad(f"out of range {lo}..{hi}")
        return int(value)
    if dt in (sp.DataType.FLOAT, sp.DataType.DOUBLE):
        if isinstance(value, bool):  # no quotes to remove: the words of an OPC UA Float node's refusal
            raise bad("write a number; true and false are a Boolean metric's values")
        if not isinstance(value, int | float):
            raise bad("write a number without quotes" if isinstance(value, str) else "write a number")
        try:
            # a config's number as its text shows it: 1.0e-400 is 0.0 to YAML, which the metric would get
            return float_for_plc(value if written is None else written, single=dt is sp.DataType.FLOAT)
        except ValueError as e:
            raise bad(str(e)) from None
    if dt in (sp.DataType.STRING, sp.DataType.TEXT):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad("write text")
        if isinstance(value, float) and not math.isfinite(value):
            raise bad("NaN and infinity are never sent as text; write text or a finite number")
        text = str(value) if shown_text is None else shown_text
        if (why := text_problem(text)) is not None:
            raise bad(why)
        return text
    if dt is sp.DataType.DATETIME:  # ISO 8601 text with its zone (as readings give it) or epoch ms
        try:
            # a config's 9.007199254740993e+15 is named as written (its repr), not as 9007199254740992.0
            return sp.datetime_ms(value if written is None else written)
        except CodecError as e:
            raise bad(named_as_written(e.detail, config_value)) from None
    raise bad("only Boolean, integer, Float, Double, String and DateTime metrics can be written")


class SparkplugHost:
    def __init__(
        self,
        source: str,
        settings: SparkplugHostSettings,
        publish: Publish,
        on_error: OnError,
        *,
        max_inflated_bytes: int = sp.MAX_INFLATED_BYTES,
        non_finite: str = "bad",
        births_reach: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._source = source
        # a NaN or infinite Float/Double metric (or a float array holding one): "bad" = a BAD reading of
        # its tag, "skip" = none (the tag keeps its last value); counted as non_finite either way
        self._skip_non_finite = non_finite == "skip"
        # a compressed payload (Tahu's) inflates to at most this: the bound on a message's size
        self._max_inflated = max_inflated_bytes
        # ... and a node inflates at most settings.max_inflated_bytes_per_s, all nodes together a few times
        # that (the loop's cost stays bounded however many nodes flood; ``_budget``)
        self._inflate_total = sp.InflateBudget(
            settings.max_inflated_bytes_per_s * sp.INFLATE_TOTAL_NODES,
            whose="this source's edge nodes' compressed payloads together",
            setting=f"{sp.INFLATE_TOTAL_NODES} x max_inflated_bytes_per_s",
            clock=_monotonic,
        )
        # per node (group, edge_node), least recently used first (``_budget``); OrderedDicts: a plain dict's front
        # popped at every message from a new name keeps the holes, which next(iter()) walks over
        self._inflate_budgets: OrderedDict[tuple[str, str], sp.InflateBudget] = OrderedDict()
        # births and deaths have budgets of their own, the same per node and in total: a node in a rebirth
        # storm spends its births' budget and their total, never the budget other nodes' data is read on
        # the last node's worth of it is kept from nodes storming births (refused within the last second): a
        # calm node's birth is read however many nodes storm, while the total bounds them all
        self._births_total = sp.InflateBudget(
            settings.max_inflated_bytes_per_s * sp.INFLATE_TOTAL_NODES,
            reserve=settings.max_inflated_bytes_per_s,
            whose="this source's edge nodes' compressed births and deaths together",
            setting=f"{sp.INFLATE_TOTAL_NODES} x max_inflated_bytes_per_s",
            clock=_monotonic,
        )
        self._births_budgets: OrderedDict[tuple[str, str], sp.InflateBudget] = OrderedDict()
        self.births_skipped = 0  # compressed births past their node's births budget: the node stale
        self._settings = settings
        self._publish = publish
        self._on_error = on_error
        self._nodes: dict[tuple[str, str], _Node] = {}
        # the nodes a new one may take the place of when the table is full (``_room``), least recently heard first:
        # spare ones hold nothing worth keeping (never born: a made-up name, or one that changes at every restart
        # of its gateway; or given up on), dead ones are forgotten DEAD_KEEP_S after their last message. Born,
        # live nodes are in neither: made-up names never push them out. OrderedDicts: a dict whose front is popped
        # at every message keeps the holes until it grows again, and next(iter()) walks over them: a cost a message
        # that grew with the table
        self._spare: OrderedDict[tuple[str, str], None] = OrderedDict()
        # born once, then its last birth skipped by the inflate budget and no data or answer since: a flood's
        # made-up name (a valid birth, then compressed ones skipped) or a real node reporting by exception that
        # happened to be born in a storm. Forgotten as a born node that sent births only is, never for a
        # never-born name's data unless not heard for TALKING_KEEP_S: taken as spare, such a flood pushed the
        # real node out, and it was asked no birth until it spoke again (``_room``)
        self._skipped_born: OrderedDict[tuple[str, str], None] = OrderedDict()
        # ... of those (spare, or born and skipped), the ones holding metrics (a birth read before it was given up on, or before its later birth
        # was skipped): the first to make room under MAX_TOTAL_METRICS (``_metric_room``), least recently heard first
        self._spare_held: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._dead: OrderedDict[tuple[str, str], None] = OrderedDict()
        # born, live nodes, least recently heard first: those that sent births only since their birth (``mute``: a
        # flood of valid NBIRTHs under made-up names), those that sent data (``talking``), and those gone silent
        # (``_silence``). When the table is full they make room after the spare and long dead ones, in that order
        # (mute, silent, talking not heard for TALKING_KEEP_S): a real node's data flows whatever the flood of
        # births. The first two are looked at from the front for nodes gone silent (``_silence``)
        self._mute: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._talking: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._silent: OrderedDict[tuple[str, str], None] = OrderedDict()
        # those of ``_mute``, ``_dead`` and ``_silent`` that held device names when filed, in their order: the ones
        # asked their birth (``_probe_holders``) or forgotten (``_free_names``) at MAX_TOTAL_DEVICES, not hidden
        # behind the nodes of those lines that hold no device name
        self._mute_named: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._dead_named: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._silent_named: OrderedDict[tuple[str, str], None] = OrderedDict()
        # born, live nodes quiet rebirth_give_up_s and asked their birth to learn whether they live, first asked
        # first (``_silence``): an answer files them back among those that speak
        self._probed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.nodes_forgotten = 0  # nodes forgotten to make room for new ones (notice nodes_forgotten)
        self._held = 0  # metrics the nodes hold together (``_Node.held``): at most MAX_TOTAL_METRICS
        # device names the nodes hold together (``_Node.names_held``): about MAX_TOTAL_DEVICES at most
        self._names = 0
        # device births refused for want of room under MAX_TOTAL_DEVICES (notice too_many_total_devices), and the
        # data of such devices skipped
        self.devices_refused = 0
        self._names_scan_at = -math.inf  # no node to forget for device names until then (``_free_names``)
        # births refused for want of room under MAX_TOTAL_METRICS (notice too_many_total_metrics)
        self.births_refused = 0
        self.born_forgotten = 0  # ... of which born and live (notice born_nodes_forgotten)
        # born nodes that went silent without a death, their tags marked BAD (notice node_silent)
        self.nodes_silent = 0
        # commands sent by name alone past their node's devices' wait, a device of its session before never born
        # again (notice devices_not_reborn, ``_never_reborn``)
        self.commands_by_name = 0
        # the BAD readings of nodes gone silent (``_silence``, run by ``tick``), for the adapter to pass on
        # (``take_stale``)
        self._stale: list[Reading] = []
        self._touched: tuple[str, str] | None = None  # the node of the message being handled (``handle``)
        self._stepped = False  # the message's metrics read a step at a time (``handle`` given ``decoded``)
        # nodes whose large birth (or a device's) is being learnt a step at a time (``_birth_steps``), each with
        # the event set when it ends: a command to them waits for it (``learnt``); the steps learnt by all so far
        self._learning: dict[tuple[str, str], asyncio.Event] = {}
        self.steps_learnt = 0
        # edge node name -> the node (group, name) whose tags bear it (``_clash``)
        self._named: dict[str, tuple[str, str]] = {}
        self.rebirths_requested = 0
        # rebirths asked again of a node that did not answer the last one (``rebirth_retry_s``): on /status as
        # the notice rebirth_unanswered
        self.rebirths_repeated = 0
        # nodes that answered no rebirth asked within rebirth_give_up_s, nor sent anything: asked nothing more
        # until they send something (notice rebirth_given_up)
        self.rebirths_given_up = 0
        # (when, key): nodes asked a rebirth, to ask again at that time unless a birth answered (``tick``)
        self._unanswered: list[tuple[float, tuple[str, str]]] = []
        # (group, edge_node) -> None: the nodes a rebirth is wanted of, oldest first (``_rebirth``, ``tick``), but
        # those that lived at this host's reconnect first (``ask_missed``)
        self._asking: OrderedDict[tuple[str, str], None] = OrderedDict()
        # the source's requests, a token bucket of rebirth_max_per_s (a second's worth, at least one): thousands
        # of nodes stale at once (this host's reconnect, a broker restart) must not flood the broker
        self._ask_tokens = max(1.0, settings.rebirth_max_per_s)
        self._ask_at = time.monotonic()
        # True if this source's subscriptions take the node's NBIRTH (group, edge_node): else a rebirth would
        # bring births it never reads (``_rebirth``); None: all of them
        self._births_reach = births_reach
        # groups said to be out of the subscriptions' reach, least recently seen first (``_unreachable``): at most
        # MAX_UNREACHED_GROUPS
        self._unreached: OrderedDict[str, None] = OrderedDict()
        self.unreached_forgotten = 0  # groups forgotten to make room (notice unreached_groups_forgotten)
        self.births = 0
        # NBIRTHs read by this host: a node's last one's number is its ``births_read``, never taken again
        self._births_stamp = 0
        self.deaths = 0
        # messages whose seq was past 255 (notice seq_out_of_range, ``_seq_range``)
        self.seq_out_of_range = 0
        # NBIRTHs whose seq was not 0 (notice birth_seq_not_zero, ``_birth_seq``)
        self.birth_seq_not_zero = 0
        self.data_before_birth = (
            0  # normal after a host restart: counted, answered by a rebirth, not an error
        )
        self.historical = 0  # values a node sent late, flagged is_historical: counted, not used
        self.on_notice: Callable[..., None] | None = None  # (key, message): a silent drop, said once
        self._birth_listeners: list[Callable[[str, str, str | None], None]] = []
        # set by the adapter while it hands over a retained message (the broker's stored copy): a retained
        # birth teaches aliases and datatypes but is no sign that its node lives (``_retained_birth``)
        self.retained = False
        self._tag_map_checked: set[str] = set()

    def add_birth_listener(self, fn: Callable[[str, str, str | None], None]) -> None:
        """Call ``fn(group, edge_node, device)`` after each NBIRTH (device None) and DBIRTH is learnt, from
        the thread that calls ``handle`` (e.g. to send again a command a dead node could not take)."""
        self._birth_listeners.append(fn)

    def _born(self, group: str, edge_node: str, device: str | None) -> None:
        for fn in self._birth_listeners:
            try:
                fn(group, edge_node, device)
            except Exception as exc:  # a listener's bug must not stop the host reading births
                self._on_error("birth_listener", f"{group}/{edge_node}: {type(exc).__name__}: {exc}")

    def birth_owed(self, group: str, edge_node: str, device: str | None) -> str:
        """A rebirth this host wants or asked of the node (of ``device``) for data that showed a birth of it
        missed (a seq gap, an alias its births did not give) is not answered by a birth yet, and its births gave
        aliases: the aliases held may be those of a birth the node replaced, a command waits for the answer
        (``MqttSource.command``): "asked". A rebirth asked for another cause (a clash of its births, its life
        unsure) is about the birth held, not one missed. Given up on (``_give_up``: silent rebirth_give_up_s),
        still owed, its aliases no surer (a command went with them): "given_up", as nothing asked is awaited
        (a command is refused at once, not after a wait no answer can end). "": none owed."""
        n = self._nodes.get((group, edge_node))
        if n is None or not n.aliases or not n.birth_missed:
            return ""
        for why, owed in (("asked", n.want | n.asked), ("given_up", n.given_up)):
            if None in owed or (device is not None and device in owed):
                return why
        return ""

    def birth_unsure(self, group: str, edge_node: str) -> str:
        """With rebirth_on_unknown off: what in the node's data since its last birth read showed a birth of it
        missed (a seq gap, an alias its births did not give), its births having given aliases; "" if nothing
        did, or rebirths are on (``birth_owed`` holds commands then). No rebirth is asked, so none is owed: the
        aliases held may be those of a birth the node replaced, and a command is refused (``MqttSource.command``)
        until a birth of the node is read, sent by itself (a restart) or asked by another host."""
        n = self._nodes.get((group, edge_node))
        if n is None or not n.aliases or self._settings.rebirth_on_unknown:
            return ""
        return n.birth_missed

    def learning(self, group: str, edge_node: str) -> bool:
        """A large birth of the node (or of one of its devices) is being learnt a step at a time: its datatypes
        are not all known yet, so a command to it waits (``MqttSource.command``)."""
        return (group, edge_node) in self._learning

    def births_read(self, group: str, edge_node: str) -> int:
        """A stamp of the node's last NBIRTH read, never given twice by this host (0: none, or the node forgotten):
        a command that waited sees by a change of it a birth of the node read meanwhile, though no look of it found
        that birth unread; also when the node was forgotten and born again in between (a per-node count began at
        0 again, and read what it read before)."""
        n = self._nodes.get((group, edge_node))
        return n.births_read if n is not None else 0

    def devices_unborn(self, group: str, edge_node: str) -> list[str]:
        """Of a node whose device births have given a device metric the alias a metric of the node or of another
        device holds (against Sparkplug, whose aliases are unique across a node and its devices), the devices born
        under its birth before the last whose DBIRTH since that birth is not read, within REBORN_DEVICES_WAIT_S of
        it: one may give a device metric the alias the new births gave another metric, so a command waits
        (``MqttSource.command``). Sorted; [] for a node that never did so, after that time (``alias`` then leaves
        out every alias of the node while one is missing), when all are reborn or dead (DDEATH), or the node is not
        alive."""
        n = self._nodes.get((group, edge_node))
        if n is None or not n.expected or not n.alive or time.monotonic() >= n.expected_until:
            return []
        return sorted(d for d, live in n.expected.items() if live)

    def shares_aliases(self, group: str, edge_node: str) -> bool:
        """A device birth of the node gave a device metric another metric's alias (the node's or another
        device's), against Sparkplug: a command to any of its devices may be sent by an alias a device birth not
        read yet gives another metric (``MqttSource.command`` waits for those come before it)."""
        n = self._nodes.get((group, edge_node))
        return n is not None and n.shares_aliases

    def learnt(self, group: str, edge_node: str) -> asyncio.Event | None:
        """The event set once the large birth of the node being learnt (``learning``) is learnt; None: none is."""
        return self._learning.get((group, edge_node))

    def node_alive(self, group: str, edge_node: str) -> bool:
        """The node is born and has shown it lives: a birth of its own, or a live message after a retained
        birth (which may be the broker's copy of a node long dead); and it has not gone silent (``_silence``)."""
        n = self._nodes.get((group, edge_node))
        return bool(n and n.alive and not n.unproven and not n.silent)

    def device_alive(self, group: str, edge_node: str, device: str) -> bool:
        """The device has sent its DBIRTH since its node's last birth, and no DDEATH since (and, after a
        retained DBIRTH, a live message)."""
        n = self._nodes.get((group, edge_node))
        return bool(
            n
            and n.alive
            and not n.unproven
            and not n.silent
            and device in n.devices
            and device not in n.unproven_devices
        )

    def _retained_birth(self, t: sp.SparkplugTopic, node: _Node) -> None:
        """A retained NBIRTH or DBIRTH (Sparkplug requires births unretained; nodes set to retain them exist):
        the broker hands it to every new subscriber, long after its node died without a death this host saw.
        Its aliases and datatypes are learnt and its data read, but commands to the node (device) wait for a
        live message from it, and a rebirth is asked: a command to a dead node would be counted sent and
        lost."""
        if t.message_type is sp.MessageType.NBIRTH:
            node.unproven = True
            if node.expected_until == math.inf:
                # devices awaited when it died (or this host's connection was lost): the wait runs from this birth
                # (it held every command for ever: the rebirth it asks may not come, with rebirths off)
                node.expected_until = time.monotonic() + REBORN_DEVICES_WAIT_S
        elif t.device and len(node.unproven_devices) < MAX_NODE_DEVICES:
            # bounded: a retained DBIRTH past MAX_NODE_DEVICES devices is skipped (``_too_many_devices``), and an
            # NBIRTH forgets them with its devices
            node.unproven_devices.add(t.device)
        if self.on_notice is not None:
            self.on_notice(
                "retained_birth",
                f"sparkplug: {t.message_type.value} of {t.group}/{t.edge_node}"
                f"{'/' + t.device if t.device else ''} came retained (the broker's copy, of unknown age: "
                "Sparkplug births are never retained): its aliases are learnt, but commands to it wait for a "
                "live message from it (a rebirth is asked); set the node not to retain its births",
            )
        self._rebirth(t.group, t.edge_node, node, t.device)

    def connection_lost(self) -> list[Reading]:
        """This host's connection to the broker dropped: what its nodes publish meanwhile (a death, new values) is
        not seen, so the values held are no longer known to be current. Sparkplug 3.0 (Host Session Establishment:
        all metric data of the edge nodes known MUST be updated to STALE when the host loses its connection): the
        tags of every live node that had a value get a BAD reading, reason ``connection_lost`` (the OPC UA
        source's), stamped with the wall time (or the tag's last time, if later: a node's clock ahead), returned
        for the adapter to pass on. The adapter calls it where the drop came in its queue, after every message the
        lost connection brought (read before, such a message made the tags GOOD again at old values, for good if
        the node died meanwhile). A birth read after the reconnect (``session_lost`` asks each node's) brings GOOD
        values. A device that died (DDEATH) keeps its BAD of ``device_death``: only the node's own tags and its
        live devices' get one."""
        wall = time.time()
        out: list[Reading] = []
        for (_, edge_node), node in self._nodes.items():
            if node.alive and not node.silent:  # a dead, silent or stale node's tags are BAD already
                node.lost = True
                out += self._lost(edge_node, node, wall)
        return out

    def _lost(self, edge_node: str, node: _Node, wall: float) -> list[Reading]:
        """``connection_lost``'s BAD readings of a node's own tags and its live devices'."""
        devices = node.devices
        return [
            Reading(
                self._source,
                self._tag(edge_node, dev, name),
                v,
                ts if ts > wall else wall,
                wall,
                Quality.BAD,
                None,
                "connection_lost",
            )
            for (dev, name), (v, ts) in node.last.items()
            if dev is None or dev in devices
        ]

    def session_lost(self, *, ask: bool = True) -> None:
        """This host's connection to the broker was lost and is back: whatever the nodes published
        meanwhile was missed (a node may have died and been born again with a new alias map, a PLC program
        change say), so the births held are stale. Every node is taken as not born, its data skipped and
        commands refused until its next NBIRTH, which is asked of each at once. Call it after the new
        connection's subscriptions were asked for (the node's answer must reach them) and before any of
        its messages is handled. ``ask=False`` leaves the asking to ``ask_missed``: a primary host's STATE
        birth must be the first message of its new connection (Sparkplug 3.0, tck-id-operational-behavior-
        primary-application-state-with-multiple-servers-state), and goes out on the subscriptions' SUBACK.
        A node that lived and whose tags the drop did not mark BAD (``connection_lost``: a message of it read
        since) gets them marked now, BAD until its birth, as its data is skipped until then (``take_stale``)."""
        wall = time.time()
        for (_, edge_node), node in self._nodes.items():
            # a request published just before the drop may be lost with it: the interval counts on this
            # connection only
            node.last_rebirth = -math.inf
            node.asked.clear()  # asked again (``ask_missed``), its back-off from the start
            if node.alive:
                if not node.lost and not node.silent:
                    self._stale += self._lost(edge_node, node, wall)
                node.alive, node.missed, node.lost = False, True, False
                node.devices.clear()
                self._names_sync(node)
                if node.expected and time.monotonic() < node.expected_until:
                    # its awaited devices' births may come while unseen: awaited after its next birth, as at a death
                    node.expected_until = math.inf
        if ask:
            self.ask_missed()

    def ask_missed(self) -> None:
        """Ask a rebirth of every node not born since this host's connection came back, at the source's rate:
        those that lived, stale ones (a request asked before the drop may be lost with it) and dead ones (one
        may have come back while this host was away: its NBIRTH was missed, and a node reporting by exception
        may send nothing more until a value changes). Those that lived at the drop are asked first: their data,
        read until then, is skipped until their birth, and made-up names never born (a flood, ``_room``) waiting
        in the queue before them held them back (10,000 at 20 a second: eight minutes)."""
        lived = []
        for key, node in self._nodes.items():
            if not node.alive and self._rebirth(*key, node, tick=False) and node.missed:
                lived.append(key)
        for key in reversed(lived):  # to the front, oldest first
            self._asking.move_to_end(key, last=False)
        self.tick()

    def _budget(self, key: tuple[str, str], *, births: bool = False) -> sp.InflateBudget:
        """The inflate budget of the edge node ``key`` (group, name), drawing on the source's total: its data's,
        or (``births``) its births' and deaths'. Kept for at most ``MAX_NODES`` nodes (names come from the
        outside world): past that the least recently used is forgotten, which gives that node a full budget
        again, still held to the total. Least recently used, not oldest: a node flooding compressed payloads
        keeps its spent budget however many made-up names come (forgotten the oldest, its budget was refilled
        by every ``MAX_NODES`` new names). Constant cost a message."""
        budgets = self._births_budgets if births else self._inflate_budgets
        budget = budgets.get(key)
        if budget is not None:
            budgets.move_to_end(key)
        else:
            while len(budgets) >= MAX_NODES:
                budgets.popitem(last=False)
            budget = budgets[key] = sp.InflateBudget(
                self._settings.max_inflated_bytes_per_s,
                total=self._births_total if births else self._inflate_total,
                whose=f"edge node {key[0]}/{key[1]}'s compressed {'births and deaths' if births else 'payloads'}",
                clock=_monotonic,
            )
        return budget

    def _tag(self, node: str, device: str | None, metric: str) -> str:
        name = f"{node}/{device}/{metric}" if device else f"{node}/{metric}"
        return self._settings.tag_map.get(name, name)

    def _rebirth(
        self, group: str, edge_node: str, node: _Node, device: str | None = None, *, tick: bool = True
    ) -> bool:
        """Want an NCMD Rebirth of the node (``device``: for that device only, a birth of it answers): queued,
        oldest first, and asked by ``tick`` at once if due: at most once per ``rebirth_min_interval_s`` per
        node, not while its births budget is spent, within the source's ``rebirth_max_per_s``. True if
        wanted (asked now or later); False if rebirths are off or the subscriptions do not take its births."""
        if not self._settings.rebirth_on_unknown:
            return False
        if self._births_reach is not None and not self._births_reach(group, edge_node):
            # its births would come on a topic this source does not subscribe: asking would bring nothing
            self._unreachable(group, edge_node)
            return False
        want = node.want
        if None not in want:  # the node's own rebirth wanted answers every device's too
            if device is not None and len(want) >= MAX_WANTED_DEVICES:
                # bounded: while no rebirth can be asked (its births budget spent), data of ever new devices
                # added a name a message
                want.clear()
                device = None
            want.add(device)
        self._asking.setdefault((group, edge_node), None)
        if tick:
            self.tick()
        return True

    def _missed(self, t: sp.SparkplugTopic, node: _Node, why: str) -> bool:
        """The node's data showed a birth of it missed (``why``: a seq gap, an alias its births did not give): its
        rebirth wanted (``_rebirth``, True if so), and commands held for a birth of it (``birth_owed``; with
        rebirth_on_unknown off, refused until one is read: ``birth_unsure``)."""
        asked = self._rebirth(t.group, t.edge_node, node)
        if asked or not self._settings.rebirth_on_unknown:
            node.birth_missed = node.birth_missed or why
        return asked

    def _unreachable(self, group: str, edge_node: str) -> None:
        """Say, once per group, that the group's births are on no topic this source subscribes (notice
        ``births_unsubscribed``, one key whatever the group: its message kept for the first ``MAX_CAUSES``
        groups, every group counted). Group names come from the outside world: the groups said are kept, least
        recently seen first, at most ``MAX_UNREACHED_GROUPS``; past it the least recently seen is forgotten
        (counted, said once: notice ``unreached_groups_forgotten``), and said again if its data comes again.
        Before, each made-up group's name was kept for good, and a notice key of its own with it."""
        unreached = self._unreached
        if group in unreached:
            unreached.move_to_end(group)
            return
        if self.on_notice is None:
            return
        if len(unreached) >= MAX_UNREACHED_GROUPS:
            old, _ = unreached.popitem(last=False)
            self.unreached_forgotten += 1
            self.on_notice(
                "unreached_groups_forgotten",
                f"sparkplug: data of over {MAX_UNREACHED_GROUPS} groups whose births no subscription takes (the "
                f"latest {group!r}): group {old!r}, least recently seen, forgotten, and said again if its data "
                "comes again; a publisher sends data under ever new group names: narrow the subscription to this "
                "line's groups",
            )
        unreached[group] = None
        self.on_notice(
            "births_unsubscribed",
            f"sparkplug: {group}/{edge_node}: no rebirth asked, its NBIRTH (spBv1.0/{group}/NBIRTH/"
            f"{edge_node}) is on no topic this source subscribes, so its data waits for births it never "
            f"reads: subscribe spBv1.0/{group}/#",
            cause=group,
        )

    def tick(self, now: float | None = None) -> int:
        """Ask the waiting rebirths that are due, oldest first, as far as the source's ``rebirth_max_per_s``
        allows; called at each request and by the adapter every ``TICK_S`` (a stale node that sends nothing
        more is asked all the same). Looks at most ``ASK_SCAN_MAX`` waiting nodes: one not due yet (asked less
        than ``rebirth_min_interval_s`` ago, or its births budget spent: the answer would be skipped) goes to
        the back; one answered (born since), dead (NDEATH) or forgotten leaves the queue. Returns the number
        asked."""
        now = time.monotonic() if now is None else now
        if self._unanswered and self._unanswered[0][0] <= now:
            self._ask_unanswered(now)
        self._silence(now)
        if not self._asking:
            return 0
        self._refill(now)
        asked = 0
        interval = self._settings.rebirth_min_interval_s
        for _ in range(min(len(self._asking), ASK_SCAN_MAX)):
            if self._ask_tokens < 1:
                break
            key = next(iter(self._asking))
            del self._asking[key]
            node = self._nodes.get(key)
            if node is None or not node.want:  # answered, dead, or forgotten
                continue
            if now - node.last_rebirth < interval or self._budget(key, births=True).spent() is not None:
                self._asking[key] = None  # not due yet: to the back
                continue
            # unanswered by the time its back-off has passed, it is asked again (``_ask_unanswered``); the
            # back-off doubles at every ask without an answer between, up to its cap
            retry = self._settings.rebirth_retry_s
            if retry > 0:
                retry = min(node.retry_s * 2, self._settings.rebirth_retry_max_s) if node.asked else retry
                node.retry_s, node.retry_at = retry, now + retry
                heapq.heappush(self._unanswered, (node.retry_at, key))
            if not node.asked:  # the first ask no birth has answered yet: rebirth_give_up_s counts from it
                node.asked_since = now
            # asked whether it lives: rebirth_retry_max_s counts from here (``_silence``)
            if node.probed < math.inf:
                node.probe_sent = min(node.probe_sent, now)
            node.asked |= node.want
            node.want.clear()
            node.last_rebirth = now
            self._ask_tokens -= 1
            self.rebirths_requested += 1
            asked += 1
            self._publish(*sp.rebirth_request(*key))
        return asked

    def _ask_unanswered(self, now: float) -> None:
        """Nodes asked a rebirth whose back-off has passed without a birth answering: wanted again (asked as
        any request, held to the interval, the births budget and the source's rate), counted. A node that
        does not answer (its NCMD lost, a node busy, one whose answer was skipped) is so asked again and
        again, ever less often, never given up on: it stays stale until it answers. At most ``ASK_SCAN_MAX``
        looked at per call."""
        for _ in range(ASK_SCAN_MAX):
            if not self._unanswered or self._unanswered[0][0] > now:
                return
            at, key = heapq.heappop(self._unanswered)
            node = self._nodes.get(key)
            if node is None or not node.asked or node.retry_at != at:  # answered, dead, or asked since
                continue
            node.retry_at = math.inf
            give_up = self._settings.rebirth_give_up_s
            if give_up > 0 and now - max(node.asked_since, node.heard) >= give_up:
                self._give_up(key, node, now)
                continue
            node.want |= node.asked
            self._asking.setdefault(key, None)
            self.rebirths_repeated += 1
            if self.on_notice is not None:
                # a born node asked for a seq gap or an unknown alias is read meanwhile, and one asked for its
                # devices' births only has those devices' data skipped
                if not node.alive:
                    cause, meanwhile = "not_born", "its data is skipped until a birth of it is read"
                elif None in node.asked:
                    cause, meanwhile = (
                        "born",
                        "it is born, its data is read meanwhile (what a lost message or an alias not in its "
                        "birth carried is missed until a birth of it is read)",
                    )
                else:
                    devices = ", ".join(sorted(d for d in node.asked if d is not None)[:3])
                    cause, meanwhile = (
                        "devices",
                        f"the data of its device(s) {devices} is skipped until their birth",
                    )
                self.on_notice(
                    "rebirth_unanswered",
                    f"sparkplug: {key[0]}/{key[1]} did not answer the rebirth asked {node.retry_s:g} s ago "
                    "(no birth of it read since): asked again, each time after twice as long, up to "
                    f"rebirth_retry_max_s; {meanwhile}",
                    cause=cause,
                )

    def _give_up(self, key: tuple[str, str], node: _Node, now: float) -> None:
        """A node asked its birth again and again for ``rebirth_give_up_s`` that neither answered nor sent
        anything meanwhile: taken out of service without a death (switched off, removed from the line), it would
        be asked every ``rebirth_retry_max_s`` for ever. It is asked nothing more, counted, and said once per
        node; it stays stale (its data skipped, commands refused), and its next message, whatever it is, asks
        again, the back-off from the start: a node not born at its data (``_before_birth``), a born one (asked
        for a seq gap, or a device's birth) what it was asked when given up (``_Node.given_up``, ``handle``)."""
        waited = now - max(node.asked_since, node.heard)
        node.given_up = set(node.asked)
        node.asked.clear()
        node.asked_since = math.inf
        self._file(key, node)  # spare: forgotten first when a new node needs room (``_room``)
        self.rebirths_given_up += 1
        if self.on_notice is not None:
            self.on_notice(
                "rebirth_given_up",
                f"sparkplug: {key[0]}/{key[1]} answered no rebirth asked and sent nothing for {waited:.0f} s "
                "(rebirth_give_up_s): asked nothing more, as a node taken out of service without a death; it "
                "is asked again as soon as it sends anything",
                cause=f"{key[0]}/{key[1]}",
            )

    def _clash(self, t: sp.SparkplugTopic, owner: tuple[str, str]) -> bool:
        """True when the edge node's name is taken by a live node of another group: tags are named without
        the group, so two groups' nodes of one name (each line's "PLC1") would mix their values in one tag,
        GOOD. The other group's messages are skipped, said once, until that node dies (NDEATH), after which
        the first of them to be born takes the name."""
        other = self._nodes.get(owner)
        if other is None or not (other.alive or other.missed or other.birth_skipped):
            return False
        if self.on_notice is not None:
            self.on_notice(
                "node_name_clash",
                f"sparkplug: edge node {t.edge_node!r} is in group {owner[0]!r} and in group {t.group!r}; "
                f"tags are named without the group ({t.edge_node}/...), so their values would mix: the "
                f"messages of group {t.group!r} are skipped while the node of group {owner[0]!r} lives; give "
                "each group its own source (subscription spBv1.0/<group>/#)",
            )
        else:
            self._on_error("node_name_clash", f"{t.group}/{t.edge_node}: name taken by group {owner[0]}")
        return True

    def _before_birth(self, t: sp.SparkplugTopic, node: _Node, what: str) -> list[Reading]:
        """Data of a node or device that is not born: counted, skipped, and a rebirth asked."""
        self.data_before_birth += 1
        if self.on_notice is not None:
            self.on_notice(
                "data_before_birth",
                f"sparkplug: {t.message_type.value} from {what}; rebirth requested, data skipped until then",
            )
        else:
            self._on_error("data_before_birth", f"{t.message_type.value} from {what}")
        # asked once the node's births budget has some left (``tick``): its answer, asked sooner, would be
        # skipped too; a DDATA before its device's DBIRTH wants that device's birth only
        self._rebirth(t.group, t.edge_node, node, t.device if node.alive else None)
        return []

    def _birth_skipped(self, t: sp.SparkplugTopic, e: CodecError, received_at: float) -> list[Reading]:
        """A compressed birth its node's births budget (or their total) had nothing left for: counted as
        ``inflate_budget``, not inflated. What the node (device) declared is no longer known to be current, so it
        is stale: its tags that had a value BAD (once), it not born (its data skipped as ``data_before_birth``,
        commands refused) until a birth of it is read; a rebirth is asked at its next message once its births'
        budget has refilled (``tick``), whether it sends anything more or not."""
        self.births_skipped += 1
        key = (t.group, t.edge_node)
        node = self._nodes.get(key)
        if node is None and self._named.get(t.edge_node, key) == key and self._room(t):
            # its first birth seen was skipped: known, so that it is asked its birth
            node = self._nodes[key] = _Node()
        if node is not None:
            node.heard, self._touched = time.monotonic(), key
        self._on_error(
            "inflate_budget",
            f"{t.group}/{t.edge_node}{'/' + t.device if t.device else ''}: {t.message_type.value} {e.detail}; "
            "stale until a birth of it is read (a rebirth storm: a rebirth is asked once its budget refills)",
        )
        if node is None:
            return []
        if t.message_type is sp.MessageType.NBIRTH:
            out = []
            if node.alive:  # once: the storm's later births find it stale already
                out = self._bad(t.edge_node, node, _EVERY, received_at, received_at, "birth_unread")
            node.alive, node.birth_skipped = False, True
            # spoken is what it sends after this: data (``_handle``), not a birth read as the answer to a rebirth
            # asked of it, which a flood of births under one made-up name gives (the node then held its place)
            node.talked = False
            node.devices.clear()
            self._names_sync(node)
            self._rebirth(t.group, t.edge_node, node)
            return out
        if node.alive and not node.missed:  # a DBIRTH before its NBIRTH asks at its data (``_before_birth``)
            self._rebirth(t.group, t.edge_node, node, t.device)
        if t.device in node.devices:  # DBIRTH: the device is not born until a birth of it is read
            node.devices.discard(t.device)
            self._names_sync(node)
            return self._bad(t.edge_node, node, t.device, received_at, received_at, "birth_unread")
        return []

    def handle(
        self, topic: str, data: bytes, received_at: float, decoded: Decoded | None = None
    ) -> list[Reading] | Iterator[list[Reading]]:
        """Readings from one Sparkplug message; raises ``CodecError`` for a bad topic or payload. ``decoded``: its
        payload decoded already, in a worker thread (``decode_apart``): then a birth's or data's metrics are read
        ``STEP_METRICS`` at a time, handed back as an iterator of their readings, each step's in order (the caller
        serves other work between two; the message's other messages wait for it). Its node's metrics learnt
        and read at once, 99,999 of them held the loop 0.7-3.5 s. A step raises as ``handle`` would."""
        t = sp.parse_topic(topic)
        self._touched = None
        self._stepped = decoded is not None
        got: list[Reading] | Iterator[list[Reading]] = []
        try:
            got = self._handle(t, data, received_at, decoded)
            return got if isinstance(got, list) else self._then_filed(got, self._touched)
        finally:
            self._stepped = False
            self._filed(self._touched)

    def _then_filed(
        self, steps: Iterator[list[Reading]], key: tuple[str, str] | None
    ) -> Iterator[list[Reading]]:
        """``steps``, its node filed again once they are done (or dropped mid-way: a source stopped)."""
        try:
            yield from steps
        finally:
            self._filed(key)

    def _filed(self, key: tuple[str, str] | None) -> None:
        """The node of the message handled (``_touched``), its held count and its place (``_room``) brought up
        to date."""
        if key is not None and (node := self._nodes.get(key)) is not None:
            held = node.defined + max(
                len(node.types), len(node.members), len(node.last), len(node.aliases) + len(node.clashes)
            )
            self._held += held - node.held
            node.held = held
            self._file(key, node)

    def _birth_steps(
        self,
        t: sp.SparkplugTopic,
        node: _Node,
        device: str | None,
        payload: sp.Payload,
        received_at: float,
        then: Callable[[], None],
    ) -> Iterator[list[Reading]]:
        """A large birth (``handle`` given ``decoded``): learnt, ``then`` (its node or device born), read, each
        ``STEP_METRICS`` metrics at a time."""
        key = (t.group, t.edge_node)
        done = self._learning[key] = asyncio.Event()
        try:
            for _ in self._learn_steps(t, node, device, payload, STEP_METRICS):
                self.steps_learnt += 1
                yield []
        finally:
            if self._learning.get(key) is done:
                del self._learning[key]
            done.set()
        then()
        if clashed := self._clashed(t.edge_node, node, device, received_at):
            yield clashed
        yield from self._reading_steps(
            t, node, device, payload, received_at, by_birth=True, step=STEP_METRICS
        )

    def _file(self, key: tuple[str, str], node: _Node) -> None:
        """The node (just heard, or given up on) at the back of the line it now stands in for ``_room``:
        spare (never born, given up on while not born, or its birth skipped and never spoke), born once and then
        so skipped (``_skipped_born``), dead, or neither (born and live, or its birth skipped after it spoke: a
        real node in a storm)."""
        self._unfile(key)
        live = node.alive or node.missed or node.birth_skipped
        # a born, live node given up on (a seq gap's or a device's rebirth unanswered: NCMDs the broker's ACL
        # drops, say) is only quiet, reporting by exception: its data is read, and it is kept. Taken as spare,
        # made-up names pushed it out and its data was skipped from then on as before its birth. A node whose birth
        # was skipped (a storm) and that never spoke (no data since its birth, no rebirth answered: a flood of
        # compressed births under made-up names) holds nothing worth keeping either: kept as a live node in a
        # storm, 10,000 such births (386 bytes each) held the table until given up on (a day), real nodes refused
        skipped_mute = node.birth_skipped and not node.alive and not node.talked
        if (node.given_up and not node.alive) or not (live or node.born) or skipped_mute:
            # born once, it is forgotten as a born node that sent births only is: a real node born by its own
            # NBIRTH, quiet, then caught in a storm, was pushed out by a flood of never-born names' data
            (self._skipped_born if skipped_mute and node.born and not node.given_up else self._spare)[key] = (
                None
            )
            if node.held:
                self._spare_held[key] = None
        elif not live:
            self._dead[key] = None
            if node.names_held:
                self._dead_named[key] = None
        elif node.alive:
            line = self._silent if node.silent else self._probed if node.probed < math.inf else None
            line = line if line is not None else self._talking if node.talked else self._mute
            line[key] = None
            if node.names_held and line is self._mute:
                self._mute_named[key] = None
            elif node.names_held and line is self._silent:
                self._silent_named[key] = None

    def _unfile(self, key: tuple[str, str]) -> None:
        for line in (
            self._spare,
            self._skipped_born,
            self._spare_held,
            self._dead,
            self._mute,
            self._mute_named,
            self._dead_named,
            self._silent_named,
            self._talking,
            self._silent,
            self._probed,
        ):
            line.pop(key, None)

    def _front(self, line: OrderedDict[tuple[str, str], None]) -> tuple[str, str] | None:
        """The front of a line of born, live nodes, those no longer in it (not alive since: this host's reconnect
        takes every node as not born without filing it) filed where they now stand, a bounded number per call."""
        for _ in range(ASK_SCAN_MAX):
            key = next(iter(line), None)
            if key is None:
                return None
            node = self._nodes[key]
            if node.alive:
                return key
            self._file(key, node)
        return None

    def _silence(self, now: float) -> None:
        """Born, live nodes heard nothing of for ``rebirth_give_up_s`` (none when 0), no death read. Quiet is no
        sign of a node gone: one reporting by exception whose values hold still sends nothing for days while its
        session is valid (Sparkplug 3.0, Data Publish: data is sent only when it changes; a node gone is told by
        its death, the broker's will), and such a node taken as gone had its tags BAD and its commands refused on
        a healthy plant. So each is first asked its birth (an NCMD ``Node Control/Rebirth``, which every edge node
        must answer; held to the source's rate), filed as asked (``_probed``); an answer, or anything it sends,
        files it back among those that speak. Only one that sends nothing within ``rebirth_retry_max_s`` of that
        ask (asked again meanwhile after ``rebirth_retry_s``; a cable cut, a broker that lost its will) is marked
        stale as a death would (its tags that had a value BAD, passed on by ``take_stale``), counted and said once
        per node (notice ``node_silent``), and given up on: asked nothing, kept (filed as silent: forgotten for a
        new name before the nodes that speak, ``_room``), its data read as before when it speaks again, which asks
        its birth (``handle``). With ``rebirth_on_unknown`` off no node can be asked, and none is taken as gone
        for its quiet. At most ``ASK_SCAN_MAX`` nodes looked at per line and call."""
        give_up = self._settings.rebirth_give_up_s
        if give_up <= 0 or not self._settings.rebirth_on_unknown:
            return
        for line in (self._mute, self._talking):
            for _ in range(ASK_SCAN_MAX):
                key = self._front(line)
                if key is None:
                    break
                node = self._nodes[key]
                if now - node.heard < give_up:
                    break
                node.probed = now
                if not self._rebirth(key[0], key[1], node, tick=False):  # its births out of reach: no answer
                    node.probe_sent = now
                self._file(key, node)  # to the back of the asked
        answer_s = self._settings.rebirth_retry_max_s
        for _ in range(ASK_SCAN_MAX):
            key = self._front(self._probed)
            if key is None:
                break
            node = self._nodes[key]
            if now - node.probe_sent < answer_s:  # not asked yet (held to the rate), or its answer may come
                break
            node.silent = True
            node.given_up |= node.asked | {None}  # its next message asks its birth (``handle``)
            node.asked.clear()
            node.want.clear()
            node.asked_since = math.inf
            self._file(key, node)
            self.nodes_silent += 1
            wall = time.time()
            marked = self._bad(key[1], node, _EVERY, wall, wall, "node_silent")
            self._stale.extend(marked)
            if self.on_notice is not None:
                self.on_notice(
                    "node_silent",
                    f"sparkplug: {key[0]}/{key[1]} sent nothing for {now - node.heard:.0f} s "
                    f"(rebirth_give_up_s), answered no rebirth asked in {now - node.probe_sent:.0f} s "
                    "(rebirth_retry_max_s), and no death of it was read (a cable cut, a broker that lost its "
                    f"will): its {len(marked)} tags marked BAD as a death would, asked nothing more; its data "
                    "is read again, and its birth asked, as soon as it sends anything",
                    cause=f"{key[0]}/{key[1]}",
                )
            else:
                self._on_error("node_silent", f"{key[0]}/{key[1]}: silent for {now - node.heard:.0f} s")

    def stale_waiting(self) -> bool:
        """BAD readings of nodes gone silent wait to be taken (``take_stale``)."""
        return bool(self._stale)

    def take_stale(self) -> list[Reading]:
        """The BAD readings of the nodes gone silent (``tick``), or of those a reconnect found live and not marked
        at the drop (``session_lost``), since the last call, to pass on as a death's."""
        out, self._stale = self._stale, []
        return out

    def _room(self, t: sp.SparkplugTopic) -> bool:
        """Room in the table for the node of ``t``, which is not in it. At ``MAX_NODES``, the least recently heard
        spare node (never born: a made-up name, a gateway whose edge node id changes at every restart; or given up
        on) is forgotten, else the least recently heard dead one if dead ``DEAD_KEEP_S``; counted, said once
        (notice ``nodes_forgotten``). Before, such names filled the table for good and real nodes were refused
        until the agent restarted. Past those, a born node (notice ``born_nodes_forgotten``): for a new node's
        NBIRTH, one born once whose last birth was skipped and that never spoke (``_skipped_born``), then one that
        sent births only since its birth (valid NBIRTHs under made-up names filled the table with born nodes, and
        real nodes born later were refused), else a silent one (``_silence``), else one that sent nothing for
        ``TALKING_KEEP_S``; for a never-born name's data, only a silent one or one that sent nothing for
        ``TALKING_KEEP_S`` (one born once whose birth was skipped too: taken as spare, a flood of such data pushed a
        quiet real node caught in a storm out, and it was asked no birth until it spoke). When there is none, the
        new one is refused (notice ``too_many_nodes``), and asked its birth within the source's rate if it sent data
        (``_ask_refused``). Bounded cost a message (``_front``), however many names flood."""
        if len(self._nodes) < MAX_NODES:
            return True
        now = time.monotonic()
        key = next(iter(self._spare), None)
        if key is None and self._dead:
            oldest = next(iter(self._dead))
            if now - self._nodes[oldest].heard >= DEAD_KEEP_S:
                key = oldest
        born = key is None
        if born and t.message_type is sp.MessageType.NBIRTH:
            # a new node's birth takes the place of a born one: one that sent births only (a flood of valid
            # NBIRTHs under made-up names), least recently heard first; then a silent one (``_silence``); then
            # one that spoke, if not heard for TALKING_KEEP_S. A real node's birth takes the place of a made-up
            # one, and its data keeps it however many follow
            key = next(iter(self._skipped_born), None) or self._quiet_born(now)
        elif born:
            # a never-born name's data (worth less than a born node: it is skipped) takes the place of a born
            # node only if that was not heard for TALKING_KEEP_S
            skipped = next(iter(self._skipped_born), None)
            if skipped is not None and now - self._nodes[skipped].heard < TALKING_KEEP_S:
                skipped = None
            key = (
                self._front(self._silent)
                or self._idle(self._probed, now)
                or skipped
                or self._idle(self._mute, now)
                or self._idle(self._talking, now)
            )
        if key is None:
            if self.on_notice is not None:
                self.on_notice(
                    "too_many_nodes",
                    f"sparkplug: over {MAX_NODES} edge nodes seen, every one kept born and sending data within "
                    f"{TALKING_KEEP_S:g} s, or dead less than {DEAD_KEEP_S:g} s: messages of new ones "
                    f"({t.group}/{t.edge_node}) are skipped; narrow the subscription to this line's group",
                )
            self._ask_refused(t)
            return False
        if born:
            self.born_forgotten += 1
            if self.on_notice is not None:
                self.on_notice(
                    "born_nodes_forgotten",
                    f"sparkplug: {MAX_NODES} edge nodes known, every one born or dead within {DEAD_KEEP_S:g} s: "
                    f"{key[0]}/{key[1]}, born, forgotten to make room for the {t.message_type.value} of {t.group}/{t.edge_node}. Born nodes that sent births only "
                    "(a client publishing valid NBIRTHs under made-up names on a shared broker), then silent ones, "
                    f"then those that sent no data for {TALKING_KEEP_S:g} s make room, least recently heard first; "
                    "one forgotten that sends data again is asked its birth. Narrow the broker's ACL on spBv1.0/",
                )
        self._forget(key)
        self.nodes_forgotten += 1
        if self.on_notice is not None:
            self.on_notice(
                "nodes_forgotten",
                f"sparkplug: {MAX_NODES} edge nodes known: {key[0]}/{key[1]} forgotten to make room for "
                f"{t.group}/{t.edge_node}. Nodes never born (data from made-up names, or from a gateway whose edge "
                f"node id changes at every restart), given up on, or dead {DEAD_KEEP_S:g} s are forgotten, least "
                "recently heard first; born ones only for a new node's birth (notice born_nodes_forgotten). One "
                "forgotten that sends again is asked its birth",
            )
        return True

    def _metric_room(self, t: sp.SparkplugTopic, key: tuple[str, str], more: int) -> bool:
        """Room under ``MAX_TOTAL_METRICS`` for a birth that adds ``more`` metrics to those the source's nodes
        hold. Past it, other nodes are forgotten: first one not born that holds metrics (given up on, or its birth
        skipped and it never spoke: ``_spare_held``), then born ones as for a new node's birth in a full table
        (``_room``): one dead ``DEAD_KEEP_S``, then one that sent births only since its birth (valid NBIRTHs of 99,000 metrics under
        made-up names: 20 took 1.3 GB), then a silent one, then one that sent no data for ``TALKING_KEEP_S``,
        least recently heard first; counted and said as there. A node that sends data is so kept. When none is
        left the birth is refused: its node (device) not born, its data skipped and a rebirth asked as before a
        birth; counted (``births_refused``), said once (notice ``too_many_total_metrics``)."""
        if self._held + more <= MAX_TOTAL_METRICS or self._make_room(t, key, more):
            return True
        self.births_refused += 1
        what = f"{t.group}/{t.edge_node}{'/' + t.device if t.device else ''}"
        if self.on_notice is not None:
            self.on_notice(
                "too_many_total_metrics",
                f"sparkplug: the {t.message_type.value} of {what} ({more} metrics more) is refused: "
                f"the source's nodes hold {self._held} metrics, at most {MAX_TOTAL_METRICS} "
                "(MAX_TOTAL_METRICS), and every node holding some sent data within "
                f"{TALKING_KEEP_S:g} s or died less than {DEAD_KEEP_S:g} s ago; it is not born, its data "
                "skipped and its birth asked as before a birth. Narrow the subscription to this line's "
                "group, or the broker's ACL on spBv1.0/",
                cause="birth",
            )
        else:
            self._on_error("too_many_total_metrics", f"{what}: over {MAX_TOTAL_METRICS} metrics")
        return False

    def _make_room(self, t: sp.SparkplugTopic, key: tuple[str, str], more: int) -> bool:
        """Other nodes than ``key``'s forgotten while ``more`` metrics do not fit under ``MAX_TOTAL_METRICS`` (the
        order of ``_metric_room``), each counted and said; whether room was made. Bounded cost a call (``_front``)."""
        now = time.monotonic()
        self._unfile(key)  # never its own place: it is filed again after the message (``handle``)
        while self._held + more > MAX_TOTAL_METRICS:
            other = self._forgettable(now)
            if other is None:
                return False
            unborn = other in self._spare_held
            self._forget(other)
            self.nodes_forgotten += 1
            if unborn:
                if self.on_notice is not None:
                    self.on_notice(
                        "nodes_forgotten",
                        f"sparkplug: the source's nodes hold over {MAX_TOTAL_METRICS} metrics (MAX_TOTAL_METRICS): "
                        f"{other[0]}/{other[1]}, not born (given up on, or its birth skipped and it never spoke), "
                        f"forgotten with the metrics of its last birth read to make room for the "
                        f"{t.message_type.value} of {t.group}/{t.edge_node}; then nodes dead {DEAD_KEEP_S:g} s, then "
                        "born ones that sent births only make room. One forgotten that sends again is asked its birth",
                    )
                continue
            self.born_forgotten += 1
            if self.on_notice is not None:
                message = (
                    f"sparkplug: the source's nodes hold over {MAX_TOTAL_METRICS} metrics (MAX_TOTAL_METRICS): "
                    f"{other[0]}/{other[1]}, born, forgotten to make room for the {t.message_type.value} of "
                    f"{t.group}/{t.edge_node}. Nodes dead {DEAD_KEEP_S:g} s, then those that sent births only, "
                    f"then silent ones, then those that sent no data for {TALKING_KEEP_S:g} s make room, least "
                    "recently heard first; one forgotten that sends data again is asked its birth"
                )
                self.on_notice("born_nodes_forgotten", message)
                self.on_notice("nodes_forgotten", message)
        return True

    def _forgettable(self, now: float) -> tuple[str, str] | None:
        """The node ``_make_room`` forgets next for metrics."""
        # a node not born that holds metrics (given up on, or a birth skipped and never spoke: valid NBIRTHs under
        # made-up names each followed by a compressed one skipped) first: only dead and born nodes made room, and
        # five such names of 99,990 metrics held the total for good, a real node's birth refused
        dead = next(iter(self._dead), None)
        if dead is not None and now - self._nodes[dead].heard < DEAD_KEEP_S:
            dead = None
        return next(iter(self._spare_held), None) or dead or self._quiet_born(now)

    def _quiet_born(self, now: float) -> tuple[str, str] | None:
        """The born node forgotten next for a new node's birth (``_room``) or for metrics (``_forgettable``): one
        that sent births only (``_births_only``: not a node restarting, its DBIRTHs to come), else a silent one,
        else one that sent no data for ``TALKING_KEEP_S``."""
        return (
            self._births_only(now)
            or self._front(self._silent)
            or self._idle(self._probed, now)
            or self._idle(self._talking, now)
        )

    def _births_only(self, now: float) -> tuple[str, str] | None:
        """The node that sent births only since its birth (``_mute``) forgotten next (``_make_room``, ``_room``):
        least recently heard first, but not one heard within ``REBORN_DEVICES_WAIT_S`` that awaits devices of its
        session before (``named_before``, ``expected``), that session having shown a node (``_Node.proven``: a device
        born, data read): a node restarting, its DBIRTHs to come. Forgotten for another node's birth
        between its NBIRTH and its DBIRTHs, those were read as before its birth and its birth asked again. A flood's
        births declaring no device are not so kept (a wait on every births-only node refused a real node's birth
        while all the flood's were younger than it). At most ``ASK_SCAN_MAX`` looked at."""
        if self._front(self._mute) is None:
            return None
        for key in itertools.islice(self._mute, ASK_SCAN_MAX):
            node = self._nodes[key]
            if node.alive and (
                now - node.heard >= REBORN_DEVICES_WAIT_S
                or not (node.named_before or node.expected)
                or not node.proven
            ):
                return key
        return None

    def _idle(self, line: OrderedDict[tuple[str, str], None], now: float) -> tuple[str, str] | None:
        """The front of a line of born nodes if it was not heard for ``TALKING_KEEP_S``."""
        key = self._front(line)
        return key if key is not None and now - self._nodes[key].heard >= TALKING_KEEP_S else None

    def _ask_refused(self, t: sp.SparkplugTopic) -> None:
        """Data of a node the full table refused: its birth is asked all the same, within the source's
        ``rebirth_max_per_s`` (no per-node interval: it has no place to keep one). A real node whose data came
        first (this host started after its birth) while valid births under made-up names fill the table is so
        born, and its birth takes the place of one of theirs (``_room``); asked nothing, it stayed unread."""
        if t.message_type not in _DATA or not self._settings.rebirth_on_unknown:
            return
        if self._births_reach is not None and not self._births_reach(t.group, t.edge_node):
            return
        if self._take_token(time.monotonic()):
            self.rebirths_requested += 1
            self._publish(*sp.rebirth_request(t.group, t.edge_node))

    def _refill(self, now: float) -> None:
        rate = self._settings.rebirth_max_per_s
        self._ask_tokens = min(max(1.0, rate), self._ask_tokens + (now - self._ask_at) * rate)
        self._ask_at = now

    def _take_token(self, now: float) -> bool:
        """One of the source's rebirth requests (``rebirth_max_per_s``, a token bucket), if one is left."""
        self._refill(now)
        if self._ask_tokens < 1:
            return False
        self._ask_tokens -= 1
        return True

    def _forget(self, key: tuple[str, str]) -> None:
        """The node out of the table, the rebirth queue and the name it held (``_named``); its entries in
        ``_unanswered`` are stale (their time is no node's ``retry_at``) and leave as they come due."""
        node = self._nodes.pop(key)
        self._held -= node.held
        self._names -= node.names_held
        self._unfile(key)
        self._asking.pop(key, None)
        if self._named.get(key[1]) == key:
            del self._named[key[1]]

    def _handle(
        self, t: sp.SparkplugTopic, data: bytes, received_at: float, decoded: Decoded | None = None
    ) -> list[Reading] | Iterator[list[Reading]]:
        if t.message_type in (sp.MessageType.STATE, sp.MessageType.NCMD, sp.MessageType.DCMD):
            return []
        death = t.message_type in _DEATHS
        budget = self._budget((t.group, t.edge_node), births=t.message_type in _BIRTHS or death)
        if t.message_type is sp.MessageType.NBIRTH:  # its DBIRTHs follow: judged busy or not here
            budget.births_begin()
        try:
            # births and deaths are inflated on their node's births budget and its total, never on the budget
            # data is read on: a node in a rebirth storm must not starve the other nodes' data. A death is
            # inflated while its own node's budget has some left, even when the total is spent (skipped, a dead
            # node's tags would stay GOOD until its next birth), bounded by DEATH_MAX_INFLATED; past its node's
            # budget it is a death all the same, not inflated: inflated whatever that budget, one node flooding
            # compressed deaths drove the total into debt and every other node's birth was skipped. A birth
            # while its budget is spent is skipped and its node stale (``_birth_skipped``), so a storm's cost is
            # bounded, and the node's next birth, once the budget refilled, is read
            if decoded is not None and decoded.error is not None:
                raise decoded.error
            if decoded is not None and decoded.payload is not None:
                payload = decoded.payload
            else:  # (a compressed one is inflated here, on its budget)
                payload = sp.decode(
                    data,
                    max_inflated=min(self._max_inflated, DEATH_MAX_INFLATED) if death else self._max_inflated,
                    inflate_budget=budget,
                    must_inflate=death and budget.left() > 0,
                )
        except CodecError as e:
            if e.reason == "inflate_budget" and t.message_type in _BIRTHS:
                return self._birth_skipped(t, e, received_at)
            if not (death and e.reason in ("too_large", "inflate_budget")):
                if e.reason == "inflate_budget" and (skipped := self._nodes.get((t.group, t.edge_node))):
                    skipped.budget_skipped = True
                raise
            # a death whose payload inflates past the bound, or that came past its node's budget, is not
            # inflated whole: its bdSeq is read from a bounded prefix (the metrics come before the body), so a
            # stale will from an older session, however large, does not kill the current one (Sparkplug 3.0:
            # an NDEATH carries the bdSeq of its birth). Taken without its bdSeq, one killed the node's live
            # session. A DDEATH carries none: a death all the same
            payload = sp.Payload(timestamp_ms=None, seq=None, metrics=[])
            known = self._nodes.get((t.group, t.edge_node))
            if t.message_type is sp.MessageType.NDEATH:
                # past its size bound: charged as its first inflating was; past its budget: 1 KiB, not charged
                # (a flood of them must not spend the total the other nodes' births draw on)
                peek, charged = (
                    (DEATH_MAX_INFLATED, budget) if e.reason == "too_large" else (DEATH_PEEK_BYTES, None)
                )
                bd, found = sp.bd_seq_within(data, peek, charged)
                if found:
                    payload.metrics.append(sp.Metric(sp.BDSEQ_METRIC, None, sp.DataType.INT64, bd))
                elif known is not None and known.bd_seq is not None:
                    # its birth's bdSeq cannot be checked: refused, as an NDEATH without one is malformed
                    self._on_error(
                        e.reason,
                        f"{t.group}/{t.edge_node}: NDEATH {e.detail}; no bdSeq within its first {peek} bytes "
                        "inflated, so it cannot be matched to the current birth's: not taken as a death",
                    )
                    return []
            self._on_error(
                e.reason,
                f"{t.group}/{t.edge_node}: {t.message_type.value} {e.detail}; "
                + (
                    f"its bdSeq read from its first {peek} bytes"
                    if payload.metrics
                    else "a death all the same"
                ),
            )
        if not data and t.message_type in (
            sp.MessageType.NBIRTH,
            sp.MessageType.DBIRTH,
            sp.MessageType.DDEATH,
            sp.MessageType.NDATA,
            sp.MessageType.DDATA,
        ):
            # 0 bytes: a retained birth deleted by a client of the broker (MQTT Explorer's "delete", a script
            # clearing retained messages), which the broker passes on live; no seq, no bdSeq, no metric. Taken,
            # it was a birth declaring nothing (the node's aliases forgotten, its data unread until a rebirth) or
            # a device's death; a data message (a node retaining its data) was read as nothing, unsaid, and taken
            # as a sign of its node alive
            self._on_error(
                "missing_field",
                f"{t.group}/{t.edge_node}{'/' + t.device if t.device else ''}: {t.message_type.value} of 0 bytes "
                "(a retained message deleted?): no seq, no metric; not taken",
            )
            return []
        key = (t.group, t.edge_node)
        owner = self._named.get(t.edge_node)
        if owner is not None and owner != key and self._clash(t, owner):
            return []
        node = self._nodes.get(key)
        if node is None:
            if not self._room(t):  # bounded: node names come from the outside world
                return []
            node = self._nodes[key] = _Node()
        node.heard = time.monotonic()  # it lives: a node given up on (``_give_up``) is asked again
        node.lost = False  # its tags may be GOOD again: a reconnect marks them (``session_lost``)
        self._touched = key  # filed for ``_room`` after the message (``handle``)
        mt = t.message_type
        if self.retained:
            if mt in (sp.MessageType.NBIRTH, sp.MessageType.DBIRTH):
                self._retained_birth(t, node)
        else:  # a live message: the node lives (and the device, for its own)
            node.unproven = False
            node.silent = False
            node.probed = node.probe_sent = math.inf  # it lives: quiet, not gone (``_silence``)
            if t.device:
                node.unproven_devices.discard(t.device)
            again, node.given_up = node.given_up, set()
            if again and node.alive and mt not in (sp.MessageType.NBIRTH, sp.MessageType.NDEATH):
                # given up on while born (a seq gap's rebirth, or a device's, unanswered), it is back: what it
                # was asked is asked again, the back-off from the start; a node not born asks at its data
                # (``_before_birth``), a birth answers, a death asks nothing
                if mt is sp.MessageType.DBIRTH:
                    again.discard(t.device)  # its answer
                for device in again:
                    self._rebirth(t.group, t.edge_node, node, device)
        if mt is sp.MessageType.NBIRTH:
            if not self._metric_room(t, key, _declared(payload, definitions=True) - node.held):
                # its last birth's tables would misread its data: it is not born until a birth of it is read
                if node.alive:
                    node.alive, node.devices = False, set()
                    self._names_sync(node)
                    marked = self._bad(t.edge_node, node, _EVERY, received_at, received_at, "birth_unread")
                else:
                    marked = []
                node.aliases, node.clashes, node.types, node.members, node.owned = {}, set(), {}, {}, {}
                node.ambiguous = {}
                node.last, node.last_keys, node.last_sorted, node.templates = {}, {}, {}, {}
                node.transient = set()
                node.types_cut = node.tables = False
                node.defined = 0
                return marked
            self._named[t.edge_node] = key
            node.born = True
            self._births_stamp += 1
            node.births_read = self._births_stamp
            # a rebirth answered, or asked after this host's reconnect; or one whose NBIRTH before was skipped (a
            # storm, ``_birth_skipped``) not after a death: taken as a restart, it forgot a device of a node that
            # shares aliases away since the session before (by name alone), its late birth taking the alias a
            # command had carried
            reborn = node.alive or node.missed or (node.birth_skipped and node.dead_bd is None)
            node.alive, node.aliases, node.clashes = True, {}, set()
            # an NBIRTH's seq is 0 (Sparkplug 3.0): one holding none is that 0, left out by an encoder that writes no
            # field at its default (proto3 code, as ``_check_seq``). Taken as no seq, the first data after every such
            # birth was checked against nothing: its seq 1 lost, the value it carried stood unseen, nothing asked.
            # A node sending no seq at all is unchanged: its data holding none is said so (``message_without_seq``)
            node.seq = self._seq_range(t, node, 0 if payload.seq is None else payload.seq)
            node.seq_shown, node.data_ts = False, None
            if payload.seq:  # (None: no seq, said apart; 0: as Sparkplug has it)
                self._birth_seq(t, node, payload.seq)
            node.missed, node.dead_bd, node.budget_skipped, node.birth_skipped = False, None, False, False
            # a birth answering a rebirth this host asked of the node (asked whether it lives, after this host's
            # reconnect, for a seq gap) shows a node that listens on its NCMD: kept as one that speaks, not among
            # the births-only a flood of made-up names fills the table with (``_room``). Filed so, a quiet node
            # that answered was the first pushed out by such a flood, its commands refused
            if not self.retained:
                # the session this birth ends showed a node: a device born, data read, a rebirth answered. A restart
                # ending one that did not (NDEATH and NBIRTH again and again, never its DBIRTHs) is no node awaiting
                # its devices (``_births_only``)
                node.proven = node.talked or bool(node.named)
            node.talked = not self.retained and None in node.asked
            # its birth answers a rebirth wanted of it (its devices re-DBIRTH after it); a retained one (of
            # unknown age) does not: it wants one itself
            if not self.retained:
                node.want.clear()
                node.asked.clear()
                node.birth_missed = ""
            # counts as in sequence, unless it answers a rebirth asked for a gap not cleared since: a node whose
            # seq is broken is asked once, not after every birth (``_check_seq``)
            # (a node whose births follow is asked again while fewer than 2 births in a row lost their first data)
            node.run = 0 if node.gap_asked else 1
            # after a birth whose seq is not 0 of a node known to go on from its births' seq, only that seq + 1
            # (or the wrap, 0) follows it: a 1 there is data lost (``goes_on``)
            node.birth_first = True
            node.birth_restart = 1 if payload.seq and node.goes_on is not True else None
            node.birth_at = payload.seq or None
            node.alias_born = node.alias_asked
            if not self.retained or node.shares_aliases:
                # of a node known to give a device metric a node metric's alias, the device births following
                # this birth may do so again: an NCMD waits for them, as far as its last birth's devices tell, and
                # those of the birth before not born since while still awaited (two NBIRTHs before its DBIRTHs);
                # after a retained NBIRTH too (the broker's copy, read after this host's reconnect): a live DBIRTH
                # proving it, the command went at once by the alias a device birth to come gave another metric
                now = time.monotonic()
                expected: dict[str, bool] = {}
                if node.shares_aliases:
                    # past their wait they are not awaited, but a rebirth (one asked, this host's reconnect) tells
                    # nothing of them: by name alone still; a restart after their wait forgets them
                    if now < node.expected_until:
                        expected = node.expected
                    elif reborn:
                        expected = dict.fromkeys(node.expected, False)
                    expected = {**expected, **node.named}
                    if len(expected) > MAX_NODE_DEVICES:  # a storm of births of ever new devices
                        self._devices_forgotten(t)
                        expected = {**node.named, _FORGOTTEN: False}
                node.expected = expected
                if not (reborn and node.shares_aliases):
                    # a restart: a device born in the session it ends is awaited after it; one not born in it is
                    # forgotten. A rebirth (one asked, this host's reconnect) keeps them: emptied there, a device
                    # born before a rebirth and late after it was forgotten at the next restart
                    if node.shares_aliases:
                        node.named_before = {}
                    else:
                        # its session before's, kept as a sharing node's ``expected`` is (above): within the last
                        # NBIRTH's wait as they were (two NBIRTHs before its DBIRTHs: a rebirth, or a restart in a
                        # crash loop, which forgot them), past it by name alone after a rebirth, forgotten after a
                        # restart; those born since over them. A reference move when there is nothing to merge
                        if now < node.expected_until:
                            before = node.named_before
                        elif reborn:
                            before = dict.fromkeys(node.named_before, False)
                        else:
                            before = {}
                        if before and node.named:
                            before = {**before, **node.named}
                            if len(before) > MAX_NODE_DEVICES:  # (as a sharing node's, above: said)
                                self._devices_forgotten(t)
                                before = {**node.named, _FORGOTTEN: False}
                        node.named_before = before or node.named
                    node.named = {}
                node.expected_until = now + REBORN_DEVICES_WAIT_S
            node.bd_seq = _bd_seq(payload)
            if node.bd_seq is None and self.on_notice is not None:
                # Sparkplug (2.2 and 3.0) has every NBIRTH carry a bdSeq, its NDEATH the same: without one, an older
                # connection's will coming after this birth cannot be told from its death (``_handle`` NDEATH), and
                # was taken as it unsaid. Each counted, said once per node
                self.on_notice(
                    "birth_without_bdseq",
                    f"sparkplug: {t.group}/{t.edge_node}: its NBIRTH holds no bdSeq metric (Sparkplug requires one, "
                    "its NDEATH carrying the same): an older connection's will coming after this birth cannot be told "
                    "from its death, so any NDEATH of it is taken as its death; set the node's Sparkplug library to "
                    "send bdSeq",
                    cause=f"{t.group}/{t.edge_node}",
                )
            # a birth replaces what the last one declared: a metric retyped or gone, or a Template
            # member now a plain metric, must not keep the old datatype for a command. Its devices too:
            # they re-DBIRTH after a node's NBIRTH, as the specification requires
            node.templates, node.types, node.members, node.devices, node.owned = {}, {}, {}, set(), {}
            self._names_sync(node)
            node.ambiguous = {}
            node.transient = set()
            node.types_cut = node.tables = False
            node.unproven_devices = set()
            node.defined = 0
            for m in payload.metrics:
                if m.name and isinstance(m.value, sp.Template) and m.value.is_definition:
                    types = _definition_types(m.value)
                    node.templates[m.name] = types
                    node.defined += len(
                        types
                    )  # in the total (``MAX_TOTAL_METRICS``): uncounted, 30 took 379 MB
                    if m.name.startswith("_types_/"):  # Ignition names its UDT definitions so
                        node.templates.setdefault(m.name[len("_types_/") :], types)
            self.births += 1
            self._check_tag_map(t, None, payload)
            if self._stepped:
                group, name = t.group, t.edge_node
                return self._birth_steps(
                    t, node, None, payload, received_at, lambda: self._born(group, name, None)
                )
            self._learn(t, node, None, payload)
            self._born(t.group, t.edge_node, None)
            # a clash this birth shows within the node (a rebirth adding Template M1 beside the metric M1/Speed)
            # makes the value read before BAD, as the stepped path and a device's birth do
            return self._clashed(t.edge_node, node, None, received_at) + self._readings(
                t, node, None, payload, received_at, by_birth=True
            )
        if mt is sp.MessageType.NDEATH:
            died = _bd_seq(payload)
            if died is not None and node.bd_seq is not None and died != node.bd_seq:
                return []  # a stale will from an older session: the node has already re-born
            if died is None and node.bd_seq is not None:
                # its birth had a bdSeq and this death has none (0 bytes: a tool "clearing" the topic, any client
                # of a shared broker): it cannot be matched to the current birth, and Sparkplug 3.0 has every
                # NDEATH carry its birth's bdSeq; taken, it killed the live session (tags BAD, commands refused)
                self._on_error(
                    "missing_field",
                    f"{t.group}/{t.edge_node}: NDEATH without a bdSeq metric ({len(data)} bytes), while its "
                    f"NBIRTH's bdSeq is {node.bd_seq}: cannot be matched to the current birth, not taken as a death",
                )
                return []
            if died is not None and died == node.dead_bd and not node.alive:
                # the will of a node that sent its NDEATH itself before disconnecting: the same death again,
                # which Sparkplug 3.0 (Operational Behavior, Edge Node Session Termination) says a host MUST
                # ignore
                return []
            node.alive, node.missed, node.dead_bd, node.birth_skipped = False, False, died, False
            # the kinds of message it numbered are its session's program's: a node replaced under its name (another
            # maker's numbering its births alone) had each of its data taken as 0, a seq_gap at every one
            node.seq_kinds = frozenset()
            node.devices.clear()
            self._names_sync(node)
            if node.expected and time.monotonic() < node.expected_until:
                # dead before its awaited devices' births came: they are awaited after its next birth, whenever
                node.expected_until = math.inf
            # a dead node is asked nothing (``tick`` drops it): its next message, if any, asks, as does this host's
            # reconnect (``ask_missed``)
            node.want.clear()
            node.asked.clear()
            self.deaths += 1
            return self._bad(t.edge_node, node, _EVERY, received_at, received_at, "node_death")
        if not node.alive:
            if mt in _DATA and not self.retained and node.birth_skipped:
                node.talked = True  # a real node in a storm: its data goes on, it keeps its place (``_file``)
            why = (
                "this host's broker connection came back: its births meanwhile were missed"
                if node.missed
                else "its last NBIRTH was skipped by the inflate budget, a rebirth storm"
                if node.birth_skipped
                else "normal after this host starts"
            )
            return self._before_birth(t, node, f"{t.group}/{t.edge_node} before its NBIRTH ({why})")
        self._check_seq(
            t, node, self._seq_range(t, node, payload.seq), data=mt in _DATA, ts=payload.timestamp_ms
        )
        if mt in _DATA and not self.retained:
            node.talked = True  # a node that speaks: kept before those that sent births only (``_room``)
        if mt is _DDATA and t.device not in node.devices and self._no_device_room(t, node):
            # its DBIRTH was skipped here (too_many_node_devices, too_many_total_devices), not lost: a rebirth would
            # bring it past the bound again, the node reborn whole (every device's birth) at each
            # rebirth_min_interval_s for ever
            self.data_before_birth += 1
            return []
        if mt is _DDATA and t.device not in node.devices:
            # a device not born in this session (its DBIRTH lost, or after its DDEATH): its metrics were never
            # declared, so a value without a datatype would be misread (-5 as 4294967291) and one by name
            # taken GOOD from a device its node said is gone; Sparkplug 3.0 (Topics, DBIRTH: a device's
            # metrics are GOOD from its DBIRTH; Host Application Receive Data: a rebirth may be asked for it)
            return self._before_birth(
                t,
                node,
                f"{t.group}/{t.edge_node}/{t.device} before its DBIRTH (lost, skipped by the inflate budget, "
                "or after its DDEATH)",
            )
        if mt is sp.MessageType.DBIRTH:
            if t.device and t.device not in node.devices and self._no_device_room(t, node):
                return []
            kept = len(node.owned.get(t.device or "", ((), ()))[0])
            if not self._metric_room(t, key, _declared(payload, definitions=False) - kept):
                if t.device in node.devices:  # its last birth's types would misread its data: not born
                    node.devices.discard(t.device or "")
                    self._names_sync(node)  # (one place less: counted still, one name too many at the bound)
                    return self._bad(t.edge_node, node, t.device, received_at, received_at, "birth_unread")
                return []
            self.births += 1
            # the device's last birth, forgotten (see NBIRTH); its aliases too: kept, a device born again and
            # again with new aliases grew them without bound
            names, aliases = node.owned.pop(t.device or "", ((), ()))
            for name in names:
                node.types.pop((t.device, name), None)
                node.transient.discard((t.device, name))
                node.members.pop((t.device, name), None)
            for a in aliases:
                if (had := node.aliases.get(a)) is not None and had[0] == t.device:
                    del node.aliases[a]
            if node.ambiguous:
                for k in [k for k, (_, by) in node.ambiguous.items() if by == t.device]:
                    del node.ambiguous[k]
            self._check_tag_map(t, t.device, payload)
            retained = self.retained

            def born() -> None:
                if t.device:
                    node.devices.add(t.device)
                    if not retained:
                        node.want.discard(t.device)
                        node.asked.discard(t.device)
                        if t.device not in node.named and len(node.named) >= MAX_NODE_DEVICES:
                            self._forget_named(t, node)
                        node.named[t.device] = True
                        node.expected.pop(t.device, None)
                        node.named_before.pop(t.device, None)  # (named now: one place, not two, ``_names``)
                    self._names_sync(node)
                self._born(t.group, t.edge_node, t.device)

            if self._stepped:
                return self._birth_steps(t, node, t.device, payload, received_at, born)
            self._learn(t, node, t.device, payload)
            born()
            return self._clashed(t.edge_node, node, t.device, received_at) + self._readings(
                t, node, t.device, payload, received_at, by_birth=True
            )
        if mt is sp.MessageType.DDEATH:
            self.deaths += 1
            gone = t.device or ""
            node.devices.discard(gone)
            # gone: not waited for (now, nor at its node's next birth), but its birth, if it comes back (while its
            # node lives, or at its restart), may give a device metric another metric's alias: the node's metrics go
            # by name alone until then (``alias``), or until the birth after the node's next
            if gone in node.named:
                node.named[gone] = False
            if gone in node.expected or (node.shares_aliases and gone in node.named):
                node.expected[gone] = False
            self._names_sync(node)
            # stale as of the DDEATH's own timestamp (Sparkplug 3.0, Device Session Termination: tck-id-
            # operational-behavior-edge-node-termination-host-action-ddeath-devices-tags-stale): the node's
            # clock, as its DBIRTH's will be; an NDEATH, often the broker's will, takes the receive time
            ts = self._time(t, payload.timestamp_ms, received_at, received_at)
            return self._bad(t.edge_node, node, t.device, ts, received_at, "device_death")
        if self._stepped:
            return self._reading_steps(
                t, node, t.device, payload, received_at, by_birth=False, step=STEP_METRICS
            )
        return self._readings(t, node, t.device, payload, received_at, by_birth=False)

    def _learn(self, t: sp.SparkplugTopic, node: _Node, device: str | None, payload: sp.Payload) -> None:
        """A birth's aliases and datatypes; a Template instance's members typed by themselves, else by
        their definition (Sparkplug lets an instance leave out what the definition says). An alias must
        be unique across the node and its devices: one given to two metrics is a clash (``alias_collision``, a
        rebirth asked once per node). Given twice by one birth, neither metric keeps it; given by a device's birth
        to a metric while the node's or another device's holds it, the holder keeps it and this birth's metric is
        refused it (read by name only). Data by it is never credited to the wrong metric: an alias is looked up
        for the node or device whose message carries it (``_readings``)."""
        for _ in self._learn_steps(t, node, device, payload, math.inf):
            pass

    def _learn_steps(
        self, t: sp.SparkplugTopic, node: _Node, device: str | None, payload: sp.Payload, step: float
    ) -> Iterator[None]:
        """``_learn``, pausing (yielding) before each ``step`` metrics past the first."""
        pause = step
        mine: set[int] = set()
        refused: set[int] = set()  # aliases of this birth's refused second declarations of a name
        clashed = False
        # what the device's birth puts in the node's tables, forgotten at its next birth (``_Node.owned``); the
        # node's own are forgotten whole at its NBIRTH
        names, aliases = node.owned.setdefault(device, (set(), set())) if device else (set(), set())
        declared: dict[str, tuple[int, int | None]] = {}  # this birth's names: (datatype, alias) of the first
        # this birth's tag paths -> the Template instance (or DataSet) naming it, and which it is; None: a metric
        points: dict[str, tuple[str, str] | None] = {}
        for i, m in enumerate(payload.metrics):
            if i == pause:
                pause += step
                yield
            if m.refused is not None:
                # a name not read (not UTF-8, too long: counted in ``_readings``): data by its alias is skipped as
                # a clash's, no rebirth asked (it would bring the same birth); unknown, it asked one at each
                if (
                    m.alias is not None
                    and m.alias not in node.aliases
                    and len(node.aliases) + len(node.clashes) < MAX_NODE_METRICS
                ):
                    node.clashes.add(m.alias)
                continue
            if not m.name:
                continue
            if m.name in declared:
                # Sparkplug 3.0 names a metric once in a birth: the first declaration is kept (its type, its
                # alias), this one refused, its value unread (``_readings``) and its alias's data skipped as a
                # clash's is (no rebirth asked: it would bring the same birth). Kept both, the tag took both
                # declarations' values in turn, a number and a text, typed by the last one
                dt, alias = declared[m.name]
                if m.alias is not None and m.alias != alias:
                    refused.add(m.alias)
                    held = node.aliases.get(m.alias)
                    if m.alias in mine and held is not None and held[0] == device:
                        # given by this birth to another of its metrics too: which one its data means is unknown,
                        # neither keeps it (that metric took the refused declaration's values)
                        node.aliases.pop(m.alias)
                        aliases.discard(m.alias)
                        node.clashes.add(m.alias)
                    elif held is None and len(node.aliases) + len(node.clashes) < MAX_NODE_METRICS:
                        node.clashes.add(m.alias)
                self._on_error(
                    "duplicate_metric",
                    f"{t.group}/{t.edge_node}{'/' + device if device else ''}: its {t.message_type} declares "
                    f"{shown_topic(m.name)} twice (datatypes {dt} and {m.datatype}, aliases {alias} and "
                    f"{m.alias}): the first is kept, the second refused (its value and data by its alias unread)",
                )
                continue
            declared[m.name] = (m.datatype, m.alias)
            if len(node.types) >= MAX_NODE_METRICS and (device, m.name) not in node.types:
                self._too_many(t)  # births of ever new devices must not grow the memory
                node.types_cut = True
                break
            node.types[(device, m.name)] = dt = _stated(m)
            if dt in _TABLES:
                node.tables = True
            if isinstance(m.value, sp.DataSet):  # its tags are its columns'
                for col in m.value.columns:
                    self._point(node, device, f"{m.name}/{col}", points, (m.name, "DataSet"))
            elif not isinstance(m.value, sp.Template):
                self._point(node, device, m.name, points)
            if m.is_transient:
                node.transient.add((device, m.name))
            names.add(m.name)
            if (
                m.alias is not None
                and m.alias not in node.aliases
                and len(node.aliases) + len(node.clashes) >= MAX_NODE_METRICS
            ):
                # a device's DBIRTH again and again, each time with new aliases: its names are forgotten (above,
                # ``_handle``), its aliases were kept; data by this one is unknown_alias
                self._too_many(t)
            elif m.alias is not None:
                had = node.aliases.get(m.alias)
                if had is None and m.alias in refused:
                    # given by this birth to a second declaration of a name, refused above, too: which metric its
                    # data means is unknown, neither keeps it (this one took the refused declaration's values)
                    self._on_error(
                        "alias_collision",
                        f"{t.group}/{t.edge_node}: alias {m.alias} is given to both a refused second declaration "
                        f"of a name and {_shown(device, m.name)}; neither is read by it until a birth gives each "
                        "metric its own alias",
                    )
                elif had is not None and had != (device, m.name) and (m.alias in mine or had[0] != device):
                    clashed = True
                    # a device's and the node's, or another live device's: known to share from now (a dead
                    # device's alias given anew, a gateway handing on those freed, tells nothing of the node's; nor
                    # does a retained DBIRTH, the broker's copy of unknown age: a removed device's left there)
                    if (
                        had[0] != device
                        and (had[0] is None or had[0] in node.devices)
                        and not node.shares_aliases
                        and device not in node.unproven_devices
                        and had[0] not in node.unproven_devices
                    ):
                        node.shares_aliases = True
                        # its devices said dead since its birth may give such an alias when born again: its metrics
                        # by name alone until then (``alias``), as for a device said dead once it is known to share
                        node.expected.update((d, False) for d, live in node.named.items() if not live)
                        # and its session before's not born since: awaited (within the wait its NBIRTH began) as
                        # if it had been known to share at that birth. Else the first clash, read in a DBIRTH
                        # while another device was late, had the command go by the alias that late birth gave too
                        node.expected.update(
                            (d, live)
                            for d, live in node.named_before.items()
                            if d not in node.named and d != device and d not in node.expected
                        )
                        node.named_before = {}
                        self._names_sync(node)
                    node.clashes.add(m.alias)
                    if m.alias in mine:
                        # one birth gives it to two of its metrics: which one its data means is unknown,
                        # neither keeps it
                        node.aliases.pop(m.alias)
                        aliases.discard(m.alias)
                        kept = "neither is read by it"
                    else:
                        # the node's metric's, or another device's: that metric keeps it (its data names it
                        # rightly), this birth's metric is refused it (read by name only). Taken from both,
                        # the node's own metric went unread until its next NBIRTH, however its device's birth
                        # mended the clash
                        kept = f"{_shown(*had)} keeps it, this birth's metric is refused it"
                    self._on_error(
                        "alias_collision",
                        f"{t.group}/{t.edge_node}: alias {m.alias} is given to both "
                        f"{_shown(*had)} and {_shown(device, m.name)}; "
                        f"{kept} until a birth gives each metric its own alias (a rebirth is asked once)",
                    )
                else:
                    node.aliases[m.alias] = (device, m.name)
                    aliases.add(m.alias)
                mine.add(m.alias)
            if not isinstance(m.value, sp.Template) or m.value.is_definition:
                continue
            defined = node.templates.get(m.value.ref or "", {})
            for flat, leaf, _, chain in _leaves(m.name, m.name, m, None):
                dt = _stated(leaf) or defined.get(flat[len(m.name) + 1 :], 0)
                if dt:
                    node.types[(device, flat)] = dt
                if m.is_transient or leaf.is_transient:
                    node.transient.add((device, flat))
                node.members[(device, flat)] = (chain, leaf.name or "")
                names.add(flat)
                self._point(node, device, flat, points, (m.name, "Template"))
        # a device of no metrics keeps no entry: ever new names, each born and dead, would grow them
        if device and not names and not aliases:
            node.owned.pop(device, None)
        if clashed and not node.clash_asked:
            # once per node: a birth answering it that clashes again (an alias map fixed in the node's
            # program) would ask again at every rebirth_min_interval_s for ever
            node.clash_asked = True
            self._rebirth(t.group, t.edge_node, node)

    def _point(
        self,
        node: _Node,
        device: str | None,
        path: str,
        points: dict[str, tuple[str, str] | None],
        instance: tuple[str, str] | None = None,
    ) -> None:
        """A birth's metric (or Template member, or DataSet column: of ``instance``, (its name, ``"Template"`` or
        ``"DataSet"``)) whose tag path is ``path``: one that another point
        names too, in this birth (a metric ``M1/Speed`` beside Template ``M1``'s member ``Speed``) or as the node's
        metric a device's is named like (``d1/level`` and device ``d1``'s ``level``), is ambiguous: both points are
        left unread (``tag_name_clash``, counted at each of their values) and a command to it is refused, until a birth
        names them apart. Kept, the tag took both points' values in turn, each data typed by the other's birth, and
        a command to the metric went to the member."""

        def what(dev: str | None, name: str, inst: tuple[str, str] | None) -> str:
            at = f" of device {shown_topic(dev)}" if dev else ""
            if inst:
                part = "member" if inst[1] == "Template" else "column"
                return (
                    f"{part} {shown_topic(name[len(inst[0]) + 1 :])} of {inst[1]} {shown_topic(inst[0])}{at}"
                )
            return f"metric {shown_topic(name)}{at}"

        if path in points:
            other = what(device, path, points[path])
            keys: list[tuple[str | None, str]] = [(device, path)]
        elif device and (None, f"{device}/{path}") in node.types:
            other = f"the node's metric {shown_topic(f'{device}/{path}')}"
            keys = [(device, path), (None, f"{device}/{path}")]
        else:
            points[path] = instance
            return
        for k in keys:  # said, and counted, at each value skipped (``_readings``)
            node.ambiguous.setdefault(k, (f"{other} and {what(device, path, instance)}", device))

    def _clashed(self, edge_node: str, node: _Node, device: str | None, received_at: float) -> list[Reading]:
        """BAD readings (``tag_name_clash``) of the tags this birth (``device``'s; None: the node's) found two
        points naming (``_point``) that hold a value read before: the node's metric ``d1/level`` read until device
        ``d1``'s birth showed the clash. Left GOOD, the tag stood at that value for as long as the clash did, its
        new values skipped, and a rule or window on it read it as current."""
        if not node.ambiguous:
            return []
        # stamped never before the value it replaces (a node's clock ahead of this one's)
        return [
            Reading(
                self._source,
                self._tag(edge_node, *k),
                node.last[k][0],
                max(received_at, node.last[k][1]),
                received_at,
                Quality.BAD,
                None,
                "tag_name_clash",
                None,
                k in node.transient,
            )
            for k, (_, by) in node.ambiguous.items()
            if by == device and k in node.last
        ]

    def ambiguity(self, group: str, edge_node: str, device: str | None, metric: str) -> str | None:
        """The two points a metric's name stands for in its node's births (``_point``), or None."""
        n = self._nodes.get((group, edge_node))
        had = n.ambiguous.get((device, metric)) if n and n.ambiguous else None
        return had[0] if had else None

    def _too_many(self, t: sp.SparkplugTopic) -> None:
        if self.on_notice is not None:
            self.on_notice(
                "too_many_node_metrics",
                f"sparkplug: {t.group}/{t.edge_node}: over {MAX_NODE_METRICS} metric names (its devices' "
                "included): the values and types of new ones are not kept, so a death marks them BAD no more "
                "and a command to them takes the value's own type",
            )

    def _too_many_total(self, t: sp.SparkplugTopic, device: str | None, metric: str) -> None:
        what = _shown(t.group, t.edge_node, device, metric)
        if self.on_notice is not None:
            self.on_notice(
                "too_many_total_metrics",
                f"sparkplug: the source's nodes hold {MAX_TOTAL_METRICS} metrics (MAX_TOTAL_METRICS): the last value "
                f"of {what}, a name its birth did not declare, is read but not kept, so a death marks it BAD no "
                "more",
                cause="data",
            )
        else:
            self._on_error("too_many_total_metrics", f"{what}: over {MAX_TOTAL_METRICS} metrics")

    def _names_sync(self, node: _Node) -> None:
        """The node's device names (``_Node.names_held``) counted again into the source's total (``_names``), after a
        change of its devices: four ``len``s. Called where names come (a DBIRTH) and go (a birth, a death); the total
        is always the sum of what each node last counted, which ``_forget`` takes off."""
        n = len(node.devices) + len(node.named) + len(node.named_before) + len(node.expected)
        self._names += n - node.names_held
        node.names_held = n

    def _forget_named(self, t: sp.SparkplugTopic, node: _Node) -> None:
        """The node's devices born since its last birth (``named``) forgotten but the live (in ``devices``), one of
        which may come back (``_FORGOTTEN`` stands for them): devices born and dead (DDEATH) again and again under
        ever new names, or born before a rebirth and not since. Said (``_devices_forgotten``) when one neither
        awaited nor by name alone already is lost."""
        live = {d: True for d, alive in node.named.items() if alive and d in node.devices}
        if len(live) < len(node.named) - (_FORGOTTEN in node.named):
            # (one awaited, or by name alone, since the node's last birth is not lost yet)
            if any(d not in live and d not in node.expected and d != _FORGOTTEN for d in node.named):
                self._devices_forgotten(t)
            node.named = {**live, _FORGOTTEN: False}

    def _no_device_room(self, t: sp.SparkplugTopic, node: _Node) -> bool:
        """No room for the device of ``t``, not born in its node now: ``MAX_NODE_DEVICES`` of the node's are born
        (``_too_many_devices``), or the source's nodes hold ``MAX_TOTAL_DEVICES`` device names and this one is new
        to its node (one it knows, dead or awaited, adds no name) and neither its node's dead names nor other nodes
        dead or gone silent (``_free_names``) make room; said once, counted."""
        if len(node.devices) >= MAX_NODE_DEVICES:
            self._too_many_devices(t, node)
            return True
        if (
            self._names < MAX_TOTAL_DEVICES
            or t.device in node.named
            or t.device in node.named_before
            or t.device in node.expected
        ):
            # (one of its session before, ``named_before`` or ``expected``, coming back after its node's restart:
            # no new name; born, it leaves there, ``born``. Taken as new, a real node restarting at the bound had
            # its own devices refused past the first half)
            return False
        # its own dead ones first (a node whose devices come and go under new names); none when it names no more
        # than its live ones (no scan: a flood of refused births at the bound pays none)
        if not self.retained and len(node.named) > len(node.devices) + 1:
            self._forget_named(t, node)
            self._names_sync(node)
            if self._names < MAX_TOTAL_DEVICES:
                return False
        # then a node gone silent (``_silence``: quiet rebirth_give_up_s and no answer to the birth then asked), or
        # one dead DEAD_KEEP_S: a births-only burst's made-up nodes held their names for good. Never one chosen by
        # quiet alone (births only, no data for an hour): a real node reporting by exception looks so, and answers
        # the birth asked. Else its data asks no birth: once names are freed (a birth, a death, a node forgotten for
        # the table, the metrics or this), it is no longer at the bound and asks it as before a birth
        if not self.retained and self._free_names(t):
            return False
        self.devices_refused += 1
        if self.on_notice is not None:
            self.on_notice(
                "too_many_total_devices",
                f"sparkplug: the source's nodes hold {self._names} device name entries (a live device's two), at "
                f"most {MAX_TOTAL_DEVICES} (MAX_TOTAL_DEVICES): the DBIRTH of a device new to its node ({t.group}/{t.edge_node}/{t.device}) is "
                "skipped, its data skipped as before its birth (no rebirth asked: it would be skipped again), until "
                "a node's birth, death or forgetting frees names; nodes whose devices come and go under ever new "
                "names (DBIRTH, DDEATH) keep them until their next birth. Only nodes dead "
                f"{DEAD_KEEP_S:g} s or gone silent are forgotten for it, never one that speaks: nodes that sent "
                "births only and nothing for rebirth_retry_max_s are asked their birth, and those not answering "
                "within rebirth_retry_max_s go silent. Narrow the subscription to this line's group, or the "
                "broker's ACL on spBv1.0/",
            )
        else:
            self._on_error("too_many_total_devices", f"{t.group}/{t.edge_node}/{t.device}")
        return True

    def _free_names(self, t: sp.SparkplugTopic) -> bool:
        """Other nodes than ``t``'s that hold device names forgotten while the source's are at ``MAX_TOTAL_DEVICES``:
        one dead ``DEAD_KEEP_S``, then one gone silent (``_silence``), least recently heard first, at most
        ``ASK_SCAN_MAX`` looked at per line (a refused birth's cost stays bounded) of those holding names
        (``_dead_named``, ``_silent_named``: looking at all dead or silent nodes, that many holding none ahead hid
        those holding names for good); counted and said as for the
        metrics (``_make_room``); whether room was made. A node that answers the birth asked of it when quiet is
        never silent, so never so forgotten; one forgotten that sends again is asked its birth."""
        now = time.monotonic()
        if now < self._names_scan_at:  # none found within TICK_S: a flood of refused births pays no scan each
            return False
        own = (t.group, t.edge_node)
        while self._names >= MAX_TOTAL_DEVICES:
            self._front(self._silent)  # (those no longer silent filed where they now stand)
            other = next(
                (
                    key
                    for line, keep in ((self._dead_named, DEAD_KEEP_S), (self._silent_named, 0.0))
                    for key in itertools.islice(line, ASK_SCAN_MAX)
                    if key != own
                    and self._nodes[key].names_held
                    and now - self._nodes[key].heard >= keep
                    and (line is self._dead_named or self._nodes[key].silent)
                ),
                None,
            )
            if other is None:
                self._probe_holders(now, own)
                # (nodes go silent at a ``tick``, and age dead, no sooner than this)
                self._names_scan_at = now + TICK_S
                return False
            silent = self._nodes[other].silent
            self._forget(other)
            self.nodes_forgotten += 1
            self.born_forgotten += silent
            if self.on_notice is not None:
                message = (
                    f"sparkplug: the source's nodes hold {MAX_TOTAL_DEVICES} device name entries (MAX_TOTAL_DEVICES): "
                    f"{other[0]}/{other[1]}, {'silent (no answer to the birth asked when quiet)' if silent else 'dead'}"
                    f", forgotten with its device names to make room for the {t.message_type.value} of "
                    f"{t.group}/{t.edge_node}/{t.device}. Nodes dead {DEAD_KEEP_S:g} s, then silent ones, make room, "
                    "least recently heard first, never one that speaks or answers; one forgotten that sends again is "
                    "asked its birth"
                )
                if silent:
                    self.on_notice("born_nodes_forgotten", message)
                self.on_notice("nodes_forgotten", message)
        return True

    def _probe_holders(self, now: float, own: tuple[str, str]) -> None:
        """At ``MAX_TOTAL_DEVICES`` with no node to forget (``_free_names``): the nodes holding device names that sent
        births only since their birth and nothing for ``rebirth_retry_max_s`` are asked their birth now, as
        ``_silence`` asks a node quiet ``rebirth_give_up_s``: one that answers speaks (kept, never asked so again);
        one that does not within ``rebirth_retry_max_s`` goes silent, and its names make room. A births-only burst's
        made-up names (NBIRTHs and DBIRTHs, then nothing) so held the room for ``rebirth_give_up_s`` (a day).
        At most ``ASK_SCAN_MAX`` asked per call; held to the source's rate (``tick``); none with
        ``rebirth_give_up_s`` 0 or ``rebirth_on_unknown`` off (no node goes silent then). The nodes holding no names
        are not looked at (``_mute_named``): looking at the first ``ASK_SCAN_MAX`` of all births-only nodes, that many
        declaring no device ahead of a burst (made-up NBIRTHs sent first, a site's quiet device-less nodes) hid it
        for good."""
        if self._settings.rebirth_give_up_s <= 0 or not self._settings.rebirth_on_unknown:
            return
        quiet = self._settings.rebirth_retry_max_s
        asked: list[tuple[str, str]] = []
        gone: list[tuple[str, str]] = []
        for key in itertools.islice(self._mute_named, ASK_SCAN_MAX):
            n = self._nodes[key]
            if not (n.alive and n.names_held):  # names freed, or not alive since (this host's reconnect)
                gone.append(key)
            elif key != own and n.probed == math.inf and now - n.heard >= quiet:
                asked.append(key)
        for key in gone:
            if self._nodes[key].alive:
                del self._mute_named[key]  # (its place in ``_mute`` kept: least recently heard first)
            else:
                self._file(key, self._nodes[key])  # filed where it now stands, as ``_front`` does
        for key in asked:
            node = self._nodes[key]
            node.probed = now
            if not self._rebirth(key[0], key[1], node, tick=False):  # its births out of reach: no answer
                node.probe_sent = now
            self._file(key, node)  # to the back of the asked (``_silence``)

    def _too_many_devices(self, t: sp.SparkplugTopic, node: _Node) -> None:
        """A DBIRTH of a new device when ``MAX_NODE_DEVICES`` of the node's are born: skipped, said once (notice
        ``too_many_node_devices``). Before, a node's births of ever new device names (with no metrics, so
        ``MAX_NODE_METRICS`` did not hold them) grew the memory without bound. Its data, while the node is at the
        bound, is skipped and asks no rebirth (the answer would be skipped again: the node reborn whole at each
        ``rebirth_min_interval_s``)."""
        if self.on_notice is not None:
            self.on_notice(
                "too_many_node_devices",
                f"sparkplug: {t.group}/{t.edge_node}: over {MAX_NODE_DEVICES} devices born: the DBIRTH of a new one "
                f"({t.device}) is skipped, its data skipped as before its birth (no rebirth asked: it would be skipped "
                "again), until a death (NDEATH, DDEATH) makes room",
            )
        else:
            self._on_error("too_many_node_devices", f"{t.group}/{t.edge_node}/{t.device}")

    def _devices_forgotten(self, t: sp.SparkplugTopic) -> None:
        """Over MAX_NODE_DEVICES devices of a node known (born, said dead, or awaited since its last birth): those
        not live are forgotten (``_FORGOTTEN`` stands for them: its metrics go by name alone until the birth after
        its next, as for a dead device); counted (``too_many_node_devices``)."""
        self._on_error(
            "too_many_node_devices",
            f"{t.group}/{t.edge_node}: over {MAX_NODE_DEVICES} devices born or said dead since its last birth (or "
            f"the source's nodes hold {MAX_TOTAL_DEVICES} device names, MAX_TOTAL_DEVICES): those not live are "
            "forgotten; its metrics are commanded by name alone until the birth after its next",
        )

    def datatype(self, group: str, edge_node: str, device: str | None, metric: str) -> int | None:
        """The metric's datatype as the node's (or device's) last birth declared it."""
        n = self._nodes.get((group, edge_node))
        dt = n.types.get((device, metric)) if n else None
        return 0 if dt == _UNKNOWN else dt  # Unknown stated: 0, as the node sent it

    def alias(self, group: str, edge_node: str, device: str | None, metric: str) -> int | None:
        """The alias the node's (or device's) births gave ``metric`` (a Template instance's own name, not a
        member's), for a command to carry (Sparkplug 3.0 commands an aliased metric by its alias); None when they
        gave it none, or gave its alias to two metrics. A scan of the device's aliases (the node's, for its own
        metrics): commands are few. Of a node known to give a device metric another metric's alias (the node's or
        another device's) while a device of its birth before has not been born again (``devices_unborn``'s time
        over), or is said dead: None, the command by name alone, as when the clash is read (that device's birth,
        unread, may give the alias too)."""
        n = self._nodes.get((group, edge_node))
        if n is None:
            return None
        if n.expected:
            if time.monotonic() >= n.expected_until:
                self._never_reborn(group, edge_node, n)
            return None
        want = (device, metric)
        pool = n.owned.get(device, ((), ()))[1] if device else n.aliases
        return next((a for a in pool if n.aliases.get(a) == want and a not in n.clashes), None)

    def _never_reborn(self, group: str, edge_node: str, n: _Node) -> None:
        """A command of a node known to share aliases goes by name alone (``alias``) past its devices' wait: those
        of its last session awaited (True in ``expected``) and never born again within REBORN_DEVICES_WAIT_S of its
        NBIRTH (a device removed, renamed, or unplugged while its node restarted) keep every command of the node by
        name alone, which an integrator saw nowhere. Counted per command (notice ``devices_not_reborn``, each node
        said once, the causes kept bounded by ``Notices``); a device said dead (False) is by design, not counted.
        At most the first 3 awaited are named (a scan of the node's awaited: commands are few)."""
        late = [d for d, live in n.expected.items() if live and d != _FORGOTTEN]
        if not late:
            return
        self.commands_by_name += 1
        where = f"{group}/{edge_node}"
        if self.on_notice is None:
            self._on_error("devices_not_reborn", f"{where}: {', '.join(late[:3])}")
            return
        more = f" and {len(late) - 3} more" if len(late) > 3 else ""
        self.on_notice(
            "devices_not_reborn",
            f"sparkplug: {where}: its devices' births give a device metric another metric's alias (against "
            f"Sparkplug), and devices of its session before ({', '.join(late[:3])}{more}) were not born again within "
            f"{REBORN_DEVICES_WAIT_S:g} s of its NBIRTH: its commands go by name alone (no alias) until each is born "
            "again (DBIRTH) or said dead (DDEATH), or the node restarts; a device removed for good: restart the node "
            "(after a rebirth its commands go by name alone still)",
            cause=where,
        )

    def template_member(
        self, group: str, edge_node: str, device: str | None, metric: str
    ) -> tuple[tuple[tuple[str, str | None], ...], str] | None:
        """For a Template instance's member (``Motor1/Speed``): the templates it sits in, from the top, as
        ``(metric name, definition)``, and its own name; a command to it is sent inside them."""
        n = self._nodes.get((group, edge_node))
        return n.members.get((device, metric)) if n else None

    def _check_tag_map(self, t: sp.SparkplugTopic, device: str | None, payload: sp.Payload) -> None:
        """A tag_map key that names no metric renames nothing, silently; the common slip is to start
        it with the Sparkplug group. Said once per key, when a birth shows what the node offers."""
        if not self._settings.tag_map or self.on_notice is None:
            return
        names = {
            f"{t.edge_node}/{device}/{tag}" if device else f"{t.edge_node}/{tag}"
            for m in payload.metrics
            if m.name
            for flat, leaf, _, _ in _leaves(m.name, m.name, m, None)
            # a DataSet's tags are its columns'
            for tag in (
                [f"{flat}/{c}" for c in leaf.value.columns] if isinstance(leaf.value, sp.DataSet) else [flat]
            )
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

    def _seq_range(self, t: sp.SparkplugTopic, node: _Node, seq: int | None) -> int | None:
        """A message's seq, as it came: Sparkplug's runs 0..255 and wraps (tck-id-payloads-sequence-num-
        incrementing); one past 255 (a node counting on, an encoder writing its own 64-bit counter) is counted as
        the ``seq_out_of_range`` notice, said once per node, and its sequence is checked on the whole number
        (``_check_seq``): a node that counts on is in sequence (its 256 follows its 255), and a message lost is a
        gap, however many were lost. Before, its 256 was a gap after its 255 and every later message one more
        (``seq_gap`` each message, a rebirth asked at every wrap of its low byte), unsaid why; checked modulo 256,
        the loss of 255 messages (300, then 556) was a repeat and of 256 (300, then 557) no gap at all."""
        if seq is None or seq <= 255:
            return seq
        self.seq_out_of_range += 1
        self._node_notice(
            "seq_out_of_range",
            t,
            node.seq_said,
            lambda: (
                f"sparkplug: {_shown(t.group, t.edge_node)}: seq {seq} in its {t.message_type.value} is outside 0-255 "
                "(a Sparkplug seq runs 0 to 255, then 0 again): its sequence is checked on the whole number, so a "
                "node that counts on past 255 is in sequence and a lost message still shows as a gap; each such "
                "message counted; set the edge node to wrap its seq at 255"
            ),
        )
        node.seq_said = True
        return seq

    def _node_notice(self, key: str, t: sp.SparkplugTopic, said: bool, detail: Callable[[], str]) -> None:
        """The notice ``key`` of ``t``'s node, its line built (``detail``) and said once per node: ``said``, it is
        counted, its line not formatted and escaped again (a node breaking a rule for good does at every message)."""
        cause = f"{t.group}/{t.edge_node}"
        if said and self.on_notice is not None:
            self.on_notice(key, "", cause=cause)
        elif self.on_notice is None:
            self._on_error(key, detail())
        else:
            self.on_notice(key, detail(), cause=cause)

    def _birth_seq(self, t: sp.SparkplugTopic, node: _Node, seq: int) -> None:
        """An NBIRTH whose seq is not 0: Sparkplug 3.0 has an NBIRTH carry seq 0 (tck-id-payloads-nbirth-seq), its
        data counting on from 1. Taken as it came, the start of the node's sequence (its data following it in
        sequence is in sequence, as before, and so is its next message at seq 1, as the notice tells the node:
        a gap before, a rebirth asked, answered by another such birth): refused, the node's tags were unread until a birth it never sends;
        answered by a rebirth, the node sends another such birth, a storm. Counted as the notice
        ``birth_seq_not_zero``, said once per node (each later one counted, its line not built again): before,
        nothing told the engineer that the node breaks the rule."""
        self.birth_seq_not_zero += 1
        self._node_notice(
            "birth_seq_not_zero",
            t,
            node.birth_seq_said,
            lambda: (
                f"sparkplug: {_shown(t.group, t.edge_node)}: its NBIRTH carries seq {seq}, not 0 as Sparkplug 3.0 "
                "has every NBIRTH carry (its data then 1, 2, ...): taken as the start of its sequence, its next "
                f"message in sequence at {seq + 1}{', at 0' if seq in _SEQ_TOPS else ''} or at 1 (no rebirth asked: it "
                "would answer with another such "
                "birth); each such birth counted; set the edge node to start its seq at 0 at every NBIRTH"
            ),
        )
        node.birth_seq_said = True

    def _check_seq(
        self, t: sp.SparkplugTopic, node: _Node, seq: int | None, *, data: bool, ts: int | None = None
    ) -> None:
        """A gap in a node's seq is a lost message (Sparkplug data is QoS 0: a broker drops it for a slow
        subscriber): data is sent only on change, so the value it carried would stand here as current until
        the metric changes again. A rebirth is asked (its births carry every current value): at once, as
        Sparkplug 3.0 allows with a Reorder Timeout of zero (tck-id-operational-behavior-host-reordering-
        rebirth; one broker keeps one node's messages in order), rate-limited per node, and only after a
        data message in sequence since its birth or the last gap, so a node whose data seq is broken (goes
        on from before its birth, never wraps) is not asked again after every birth that answers it: a birth
        whose first data is in sequence clears that, and so does data in sequence after the gap when the node's
        last birth was followed in sequence, not when its first data was a gap too (a node whose data starts at 2
        after each birth was asked a rebirth every rebirth_min_interval_s for ever, its data in sequence after the
        gap clearing it; cleared by a birth's first data alone, a node whose data is lost after the gap and again
        right after the birth answering it was not asked again, the value lost then unseen). A node that ever
        followed its births is asked again when a birth's first data alone is lost (its seq the birth's + 2,
        wrapped as the gap test wraps: 254 -> 0), for up to 2 births in a row within rebirth_retry_max_s (the count
        forgotten once that has passed since the last such ask): the first data lost after two births in a row was
        asked the first time only, its value unseen; after three, no later restart's lost first data was asked
        again, however long its data had run in sequence since. A repeated seq (a redelivery) lost nothing, unless
        both are data whose payload timestamps (``ts``) differ: not the same message again, but 256 on, 255 lost
        (a redelivery is the same payload; a node whose seq never moves has no data in sequence to ask a rebirth
        after). The data is still used."""
        if seq is None and t.message_type in node.seq_kinds and (node.seq in _SEQ_TOPS or node.seq_shown):
            # the 0 after a counter's top, left out by an encoder that writes no field at its default (proto3 code
            # from Sparkplug's .proto without ``optional``: eclipse-tahu/tahu#274): taken as that 0. Said, and the
            # next message's 1 a gap after 255, the node was told to send seq and reborn whole every 256 messages.
            # So too a data message's after any seq of a node that sent some since its birth: its 0 after messages
            # lost (5, then the 0 with 6..255 lost) was said to hold no seq, the node told to send seq, and the gap
            # seen a message later; after its 0 (1..255 lost) not at all. And a DBIRTH's or DDEATH's of a node whose
            # messages of that kind carried a seq before (one with none was said to hold no seq, the gap seen a message
            # later, or not at all); a node that numbers its data alone keeps its seq-less DBIRTHs said so, one
            # that numbers its DBIRTHs alone its DDEATHs, and one that numbers its births alone its data (each data
            # message after a DBIRTH's seq 1 was taken as 0, a seq_gap at every one). NDATA and DDATA apart, at a
            # counter's top too: a node numbering its NDATA and not its DDATA had each DDATA taken as 0, a gap at
            # every message, and a rebirth asked at every rebirth_min_interval_s of a node that answers them
            seq = 0
        elif seq:
            node.seq_shown = True
            if t.message_type not in node.seq_kinds:
                node.seq_kinds |= {t.message_type}
        last_ts, node.data_ts = node.data_ts, ts if data and seq is not None else None
        if seq is None:
            # Sparkplug numbers every message but an NDEATH: without one a message lost cannot be seen (nor a
            # rebirth asked for it); read, and said, once per node (a node whose library sends none at every one)
            self._node_notice(
                "message_without_seq",
                t,
                node.seq_none_said,
                lambda: (
                    f"sparkplug: {_shown(t.group, t.edge_node)}: its {t.message_type.value} holds no seq (Sparkplug "
                    "numbers every message but NDEATH, 0 to 255): read, but a message of it lost (QoS 0 data a broker "
                    "drops for a slow subscriber) cannot be seen, nor a rebirth asked for it; each such message "
                    "counted; set the node's Sparkplug library to send seq"
                ),
            )
            node.seq_none_said = True
            return
        if node.budget_skipped:  # this host skipped its messages (inflate budget): no gap of the node's
            node.budget_skipped, node.seq = False, seq
            return
        last = node.seq
        restart, node.birth_restart = node.birth_restart, None
        born_at, node.birth_at = node.birth_at, None
        unsure = False  # a 1 after a birth at 255 (a 2 after one at 1) of a node whose kind is not known
        nexts = _next_seqs(last, restart) if last is not None else ()
        # the message after an NBIRTH whose seq is not 0: what follows it is set by the node's kind (``_after_birth``),
        # and its data at the birth's seq is no repeat (a birth is no data message it could be sent again of)
        after_birth = False
        if born_at is not None and last == born_at:
            after_birth = True
            nexts, unsure = self._after_birth(node, born_at, seq)
        first = data and node.birth_first
        if data:
            node.birth_first = False
        # the next seq is the last plus one, or 0 after the top of a counter: Sparkplug's wrap (255 -> 0), and an
        # 8-, 16-, 32- or 64-bit counter's past 255, unsigned or signed (65535 -> 0, 32767 -> 0, 2**64-1 -> 0). Compared whole: a node counting on
        # past 255 that lost 255 or 256 messages (300 -> 556, 300 -> 557) was a repeat or in sequence modulo 256,
        # and a 0 after any seq whose low byte is 255 (511 -> 0, 767 -> 0: the node reset, what it sent lost) was
        # in sequence
        # (after an NBIRTH whose seq is not 0, seq 1 too: its data counting from 1)
        if last is not None and seq not in nexts:
            self._on_error("seq_gap", f"{t.group}/{t.edge_node}: seq {seq} after {last}")
            # a repeat (seq unchanged) lost nothing; data at the seq of the NBIRTH before it is no repeat (a node
            # counting from 1 whose 1..seq-1 were lost: born at 7, its 7 was taken as a repeat, nothing asked)
            if seq != last or (after_birth and data) or (data and ts and last_ts and ts != last_ts):
                lost_first = False  # the birth's first data alone lost, by a node whose births follow
                if first:
                    node.birth_followed = False
                    now = time.monotonic()
                    # the streak is old: it decays with time, never with data in sequence (``gap_births``)
                    if now - node.lost_first_at >= self._settings.rebirth_retry_max_s:
                        node.gap_births = 0
                    lost_first = (
                        node.ever_followed
                        and node.gap_births < 2
                        and any(seq in _next_seqs(lost) for lost in nexts)
                    )
                    node.gap_births += 1
                    if lost_first:
                        node.lost_first_at = now
                if node.run or lost_first:
                    asked = self._missed(t, node, f"a seq gap, {seq} after {last}")
                    node.gap_asked = asked or node.gap_asked
                node.run = 0
        elif data:
            node.run += 1
            if first:  # a birth followed by data in sequence: a later gap after it asks a rebirth again
                node.birth_followed = node.ever_followed = True
                node.gap_births = 0
            if node.birth_followed:  # and so does data in sequence after a gap, the birth answering it
                node.gap_asked = False
        node.seq = seq
        if unsure:
            self._unsure_birth(t, node, born_at, seq)

    @staticmethod
    def _after_birth(node: _Node, born_at: int, seq: int) -> tuple[tuple[int, ...], bool]:
        """(the seqs in sequence, a rebirth to ask as ``birth_seq_unsure``) for ``seq``, the message after an NBIRTH
        at ``born_at`` (not 0), by the node's kind (``goes_on``), which this message may show:

        =========================  ===========================  =================================================
        kind                       in sequence after a birth b  shown by
        =========================  ===========================  =================================================
        goes on from its births'   b + 1 (0 after 255)          b + 1 (or 0) after a birth b >= 2
        counts from 1              1                            1 after a birth b >= 2 that tops no counter
        not known yet              either                       (a 1 after 255 and a 2 after 1 show nothing: both
                                                                kinds at once, one rebirth asked, ``unsure``)
        =========================  ===========================  =================================================

        A kind is learnt from a message that is in sequence for it. A node of known kind whose message shows the
        other is judged by its known kind (a gap, a rebirth asked: a 1 after a birth at 7 of a node going on is 8..0
        lost), and relearnt only when the message after its next such birth shows the other kind again
        (``kind_doubt``): learnt at once, a node counting from 1 whose 1..7 were lost (born at 7, its 8 read) was
        taken to go on, and its next birth at 1 whose 1 was lost (its 2 read) went unseen."""
        shown = (
            True
            if born_at >= 2 and seq in _next_seqs(born_at)
            else False
            if born_at >= 2 and seq == 1 and born_at not in _SEQ_TOPS
            else None
        )
        if shown is not None:
            if node.goes_on is None or shown is node.goes_on or node.kind_doubt is shown:
                node.goes_on, node.kind_doubt = shown, None
            else:
                node.kind_doubt = shown
        kind = node.goes_on
        nexts = _next_seqs(born_at) if kind else (1,) if kind is False else _next_seqs(born_at, 1)
        both = (seq == 1 and born_at in _SEQ_TOPS) or (seq == 2 and born_at == 1)
        return nexts, both and kind is None and not node.kind_asked

    def _unsure_birth(self, t: sp.SparkplugTopic, node: _Node, born_at: int | None, seq: int) -> None:
        """A 1 after an NBIRTH at the top of a counter (255) of a node that has not shown its kind (``goes_on``):
        its data counting from 1 (in sequence), or its seq going on from its births' and its 0 lost; or a 2 after
        an NBIRTH at 1: its seq going on (in sequence), or its data counting from 1 and its 1 lost. Taken as in
        sequence, a lost value went unseen until the metric changed again; a gap, each birth of a node of the
        other kind was a false alarm. Neither: one rebirth asked (its birth carries every current value, and a
        birth at another seq shows the node's kind), once per node while its kind is unknown, not counted as a
        seq_gap; the notice ``birth_seq_unsure`` said once."""
        node.kind_asked = True
        if not self._rebirth(t.group, t.edge_node, node):
            return
        self._node_notice(
            "birth_seq_unsure",
            t,
            False,
            lambda: (
                f"sparkplug: {_shown(t.group, t.edge_node)}: seq {seq} after its NBIRTH at {born_at}: "
                + (
                    "its data counting from 1, or its seq going on from its births' with its 0 lost"
                    if seq == 1
                    else "its seq going on from its births', or its data counting from 1 with its 1 lost"
                )
                + "; no birth of it has shown which yet: "
                "taken as in sequence, one rebirth asked (its birth carries every current value); set the edge "
                "node to start its seq at 0 at every NBIRTH"
            ),
        )

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
        parts = list(
            self._reading_steps(t, node, device, payload, received_at, by_birth=by_birth, step=math.inf)
        )
        return parts[0] if len(parts) == 1 else [r for part in parts for r in part]

    def _reading_steps(
        self,
        t: sp.SparkplugTopic,
        node: _Node,
        device: str | None,
        payload: sp.Payload,
        received_at: float,
        *,
        by_birth: bool,
        step: float,
    ) -> Iterator[list[Reading]]:
        """The readings of a message's metrics, those of each ``step`` metrics yielded in turn (the last with what
        is said of the whole message)."""
        pause = step
        out: list[Reading] = []
        unknown = False
        by_alias = alias_missing = False  # a metric read by its alias; one whose alias no birth gave
        historical = 0
        repeated = ""  # the first array metric sent again with the same time and samples (a rebirth)
        unsupported = ""  # the first metric of a type the host does not read (Bytes, File, DataSet text)
        no_value = ""  # the first PropertySet: no value
        # metrics of a datatype Sparkplug B does not define, stated or by their birth: (device, tag path, datatype,
        # whether the birth's)
        undefined: list[tuple[str | None, str, int, bool]] = []

        # a timestamp of 0 (nodes without a clock send it, Sparkplug makes it required) is no time: taken as
        # 1970, it would put every reading of the tag at one instant and its waveforms in no window
        default_ts = self._time(t, payload.timestamp_ms, received_at, received_at)
        declared: set[str] = set()  # a birth's names: a second declaration of one is refused (``_learn``)
        for i, m in enumerate(payload.metrics):
            if i == pause:
                pause += step
                yield out
                out = []
            name = m.name
            dev = device
            if by_birth and name:
                if name in declared:
                    continue
                declared.add(name)
            if m.refused is not None:  # its name not read: skipped, the message's other metrics read
                self._on_error(
                    m.refused[0],
                    f"{t.group}/{t.edge_node}{'/' + device if device else ''}: {m.refused[1]}"
                    f"{f' (alias {m.alias})' if m.alias is not None else ''} in its {t.message_type}: skipped "
                    "(its other metrics are read)",
                )
                continue
            if not name and (by_birth or m.alias is None):
                # a birth's metric without a name (Sparkplug gives each one: a node's bug), or data by neither
                # name nor alias: no tag to read it into. Counted, not asked again: taken for data by an alias
                # no birth gave, it asked a rebirth, which brought the same birth, every rebirth_min_interval_s
                self._on_error(
                    "unnamed_metric",
                    f"{t.group}/{t.edge_node}{'/' + device if device else ''}: a metric "
                    f"{'named ' + repr(name) if name is not None else 'without a name'}"
                    f"{f' (alias {m.alias})' if m.alias is not None else ''} in its {t.message_type}: skipped "
                    "(its other metrics are read)",
                )
                continue
            if not name:
                entry = node.aliases.get(m.alias) if m.alias is not None else None
                elsewhere = None
                if entry is not None and entry[0] != device:
                    # another's alias (the node's metric in a DDATA, a device's in an NDATA or another
                    # device's): never read into that metric's tag, whoever the birth that clashed gave it to
                    elsewhere, entry = entry, None
                if entry is None and m.alias in node.clashes:  # the rebirth asked once at the clash
                    self._on_error(
                        "alias_collision",
                        f"{t.group}/{t.edge_node}{'/' + device if device else ''}: data by alias {m.alias}, "
                        "which its births gave to two metrics (or to a second metric of one name, or to a metric "
                        "whose name was not read): skipped",
                    )
                    continue
                if entry is None and elsewhere is not None:
                    # its births gave it to that other metric: a rebirth brings the same map. Asked once per
                    # node (the map was stale here), not at every such message: a node whose program sends a
                    # device's metric in its NDATA was reborn whole every rebirth_min_interval_s for ever
                    if not node.scope_asked:
                        node.scope_asked = unknown = True
                    self._on_error(
                        "unknown_alias",
                        f"{t.group}/{t.edge_node}{'/' + device if device else ''}: alias {m.alias} is "
                        f"{_shown(*elsewhere)}'s, a metric of "
                        f"{'device ' + elsewhere[0] if elsewhere[0] else 'the node'}, not of this message's "
                        f"{'device' if device else 'node'}: skipped",
                    )
                    continue
                if entry is None:
                    alias_missing = True
                    if node.alias_born:
                        self._on_error(
                            "unknown_alias",
                            f"{t.group}/{t.edge_node}: alias {m.alias} not in its birth, nor in the birth read after "
                            "the rebirth asked for an alias: skipped, not asked again until its data is read whole "
                            "by its aliases",
                        )
                        continue
                    unknown = node.alias_asked = True
                    self._on_error(
                        "unknown_alias", f"{t.group}/{t.edge_node}: alias {m.alias} not in its birth"
                    )
                    continue
                dev, name = entry
                by_alias = True
            if name == sp.BDSEQ_METRIC or name.startswith("Node Control/"):
                continue
            top = (_stated(m) if by_birth else m.datatype) or node.types.get((dev, name), 0)
            if _undefined(top):  # 99, or 0 (Unknown) stated: no value of it can be interpreted
                undefined.append((dev, name, top, not _stated(m)))
                continue
            if m.is_null and not m.is_historical and {m.datatype, node.types.get((dev, name))} & _TABLES:
                # a Template instance (an Ignition UDT) or a DataSet with no value now: its members' (columns')
                # last values go BAD
                ts, prefix = self._time(t, m.timestamp_ms, default_ts, received_at), name + "/"
                why = _said_or(m.quality, "null_value")
                out.extend(
                    Reading(
                        self._source,
                        self._tag(t.edge_node, dev, k),
                        node.last[(dev, k)][0],
                        ts,
                        received_at,
                        Quality.BAD,
                        None,
                        why,
                        None,
                        m.is_transient or (dev, name) in node.transient,
                    )
                    for k in _under(node, dev, prefix)
                )
                continue
            for flat, leaf, ts_ms, _ in _leaves(name, name, m, None):
                if node.ambiguous and (clash := node.ambiguous.get((dev, flat))) is not None:
                    # two points of one tag (``_point``): which one this value is of, the tag cannot say
                    self._on_error(
                        "tag_name_clash",
                        f"{t.group}/{t.edge_node}: {_shown(t.edge_node, dev, flat)} names two points ({clash[0]}): "
                        "its value is skipped until a birth names them apart",
                    )
                    continue
                v = leaf.value
                # not to be historized (Sparkplug 3.0): read live, kept out of the outbox (``Reading.transient``)
                transient = m.is_transient or leaf.is_transient or (dev, name) in node.transient
                if leaf is not m and _undefined(
                    typed := (_stated(leaf) if by_birth else leaf.datatype) or node.types.get((dev, flat), 0)
                ):
                    undefined.append((dev, flat, typed, not _stated(leaf)))  # a Template member's
                    continue
                if isinstance(v, bytes) and not leaf.is_null:  # an array (by its birth's type), Bytes or File
                    packed, kind = v, leaf.datatype or node.types.get((dev, flat), 0)
                    try:
                        v = sp.array_value(v, kind)
                    except CodecError as e:
                        self._on_error(
                            e.reason, f"{t.group}/{t.edge_node}/{dev or ''}: metric {flat!r}: {e.detail}"
                        )
                        continue
                    if v is None and ((field := _FIELD_OF.get(kind)) is None or field[0] is bytes):
                        unsupported = unsupported or flat  # Bytes, File: no reading to make
                        continue
                    if v is None:  # an Int32's or Double's bytes: wrong_type below, not a Bytes metric's
                        v = packed
                elif v is None and leaf.datatype in _UNREAD:  # DataSet, File without a value (an extension)
                    unsupported = unsupported or flat
                    continue
                elif (
                    v is None
                    and not leaf.is_null
                    and _no_field(leaf.datatype or node.types.get((dev, flat), 0))
                ):
                    # a PropertySet (Tahu's JavaScript nodes send one with no value: Sparkplug's metric has no
                    # field for it): nothing to read, said so
                    no_value = no_value or flat
                    continue
                if m.is_historical or leaf.is_historical:
                    historical += 1
                    continue
                if leaf.is_null:  # no value now (Ignition: a tag whose PLC item is gone, often quality Bad)
                    was = node.last.get((dev, flat))
                    if was is not None:  # its last value is not current: BAD, as a death makes it
                        ts = self._time(t, ts_ms, default_ts, received_at)
                        tag = self._tag(t.edge_node, dev, flat)
                        why = _said_or(leaf.quality, "null_value")
                        out.append(
                            Reading(
                                self._source,
                                tag,
                                was[0],
                                ts,
                                received_at,
                                Quality.BAD,
                                None,
                                why,
                                None,
                                transient,
                            )
                        )
                    continue
                if v is None or isinstance(v, sp.Template):
                    continue
                values: list[tuple[str, Any]] = [(flat, v)]
                nf = False
                dt = leaf.datatype
                if (
                    dt
                    and node.tables
                    and dt not in _TABLES
                    and (born := node.types.get((dev, flat))) in _TABLES
                ):
                    # a plain datatype stated by a Template instance's or DataSet's name or alias: judged by the
                    # birth's (it was read into a tag of the instance's own name, GOOD)
                    dt = born
                if (
                    (field_of := _FIELD_OF.get(typed := dt or node.types.get((dev, flat), 0))) is not None
                    and type(v) is not field_of[0]
                    and type(v) in _FIELD_NAME
                    # (an array's bytes_value is read above: a StringArray's is JSON text by now)
                    and not (field_of[0] is bytes and isinstance(leaf.value, bytes))
                ):
                    # a value in another field than its datatype's (a Float carrying int_value, an Int32 a
                    # double): Sparkplug gives each datatype one field, and a Float's 4294967291 may be -5.0 cast
                    # to an integer as much as the number; Eclipse Tahu reads the datatype's field only (null or
                    # 0 here). It was passed on GOOD as it came, another type than its birth's (an int for a
                    # Float, 1 for a Boolean). Skipped, counted; no rebirth asked: it would bring the same
                    typed_as = (
                        _PROPERTY_TYPES.get(typed)
                        or _ARRAY_TYPES.get(typed)
                        or datatype_name(sp.DataType(typed))
                    )
                    came = (
                        shown_topic(v)
                        if type(v) is str
                        else f"of {len(v)} bytes"
                        if type(v) is bytes
                        else repr(v)
                    )
                    how = (
                        "stated in its " + t.message_type.value
                        if dt and dt == leaf.datatype
                        else "by its birth"
                    )
                    self._on_error(
                        "wrong_type",
                        f"{t.group}/{t.edge_node}/{dev or ''}: metric {shown_topic(flat)} is a {typed_as} ({how}) "
                        f"but its value {came} came in {_FIELD_NAME[type(v)]}, {field_of[1]}; skipped (the edge node "
                        "must write each value in its datatype's field)",
                    )
                    continue
                if leaf.int_value_high and (
                    (wide := leaf.datatype or node.types.get((dev, flat), 0)) == _INT64 or wide == _UINT64
                ):
                    # an Int64 or UInt64 in int_value (32 bits) at 2**31 or above: -5 written by a 32-bit encoder
                    # (4294967291) as much as the number, read as the number GOOD. Below 2**31 the number is the
                    # same either way (read); above, skipped and counted as a Float carrying an integer is
                    self._on_error(
                        "wrong_type",
                        f"{t.group}/{t.edge_node}/{dev or ''}: metric {shown_topic(flat)} is "
                        f"{'an' if wide == _INT64 else 'a'} {datatype_name(sp.DataType(wide))} "
                        f"({'stated in its ' + t.message_type.value if leaf.datatype else 'by its birth'}) but its "
                        f"value {v!r} came in int_value (32 bits), not in long_value as Sparkplug writes it: "
                        f"{sp.cut_to_32(v, wide == _INT64)}, no one value; skipped (the edge node must write a "
                        "64-bit integer in long_value)",
                    )
                    continue
                if isinstance(v, sp.DataSet):  # a table: each column's rows as a 1-D array, {metric}/{column}
                    values = []
                    for col, arr, why in sp.dataset_arrays(v):
                        if (
                            node.ambiguous
                            and (clash := node.ambiguous.get((dev, f"{flat}/{col}"))) is not None
                        ):
                            self._on_error(
                                "tag_name_clash",
                                f"{t.group}/{t.edge_node}: {_shown(t.edge_node, dev, f'{flat}/{col}')} names two "
                                f"points ({clash[0]}): its value is skipped until a birth names them apart",
                            )
                        elif arr is not None:
                            values.append((f"{flat}/{col}", arr))
                        elif why == "unsupported":  # text: no reading to make
                            unsupported = unsupported or f"{flat}/{col}"
                        else:
                            self._on_error(
                                "wrong_type",
                                f"{t.group}/{t.edge_node}/{dev or ''}: DataSet {flat!r}"
                                f"{f' column {col!r}' if col else ''}: {why.removeprefix('wrong_type: ')}",
                            )
                elif (
                    type(v) is not np.ndarray and (leaf.datatype or node.types.get((dev, flat))) == _DATETIME
                ):
                    # milliseconds since 1970: a time (a part's production time, a last service), given as the
                    # OPC UA source gives one, ISO 8601 text; as a number, a rule or the cloud took it for a count.
                    # A node writing it in another field (text, a double) is read by the same rules: its
                    # '2026-12-04' or 1e30 went on as a GOOD DateTime reading
                    try:
                        values = [(flat, sp.datetime_read(v))]
                    except CodecError as e:
                        self._on_error(
                            e.reason, f"{t.group}/{t.edge_node}/{dev or ''}: metric {flat!r}: {e.detail}"
                        )
                        continue
                elif (
                    type(v) is int
                    and by_birth
                    and v > INT32_MAX
                    and not (leaf.datatype or node.types.get((dev, flat)))  # a member typed by its definition
                    and not node.types_cut  # else perhaps declared, its type not kept: read as the wire's number
                ):
                    # a birth's metric without a datatype (Sparkplug 3.0 has a birth give each metric's: a node's
                    # bug): 4294967291 is -5 as an Int32 as much as a UInt32, as in data without one (below); it was
                    # passed on GOOD as the wire's number. Skipped, no rebirth asked: it would bring the same birth
                    self._on_error(
                        "wrong_type",
                        f"{t.group}/{t.edge_node}/{dev or ''}: metric {shown_topic(flat)} has no datatype in its "
                        f"{t.message_type.value} (Sparkplug 3.0: a birth gives each metric's datatype): {v} may be "
                        "a negative Int32 or Int64, an unsigned one or a DateTime; skipped",
                    )
                    continue
                elif (
                    type(v) is int
                    and not by_birth
                    and v > INT32_MAX
                    and not (leaf.datatype or node.types.get((dev, flat)))
                    and not node.types_cut  # else perhaps declared, its type not kept: read as the wire's number
                ):
                    # a name no birth of it declared (Sparkplug 3.0: a birth declares every metric the session
                    # will publish), and no datatype in the data (which should leave it out): 4294967291 is -5 as
                    # an Int32, or a UInt32, and a long a DateTime or a count; passed on as the wire's unsigned
                    # number, GOOD, it was another value. Skipped, and a rebirth asked once per node, whose birth
                    # declares it; an integer every such type reads alike (under 2**31) is read
                    self._on_error(
                        "wrong_type",
                        f"{t.group}/{t.edge_node}/{dev or ''}: metric {shown_topic(flat)} has no datatype, in its "
                        f"{t.message_type.value} nor in a birth (Sparkplug 3.0: a birth declares every metric of "
                        f"the session, with its datatype): {v} may be a negative Int32 or Int64, an unsigned one "
                        "or a DateTime; skipped (a rebirth is asked once, whose birth declares it)",
                    )
                    if not node.undeclared_asked:
                        node.undeclared_asked = unknown = True
                    continue
                elif type(v) is int and (dt := leaf.datatype or node.types.get((dev, flat))):
                    if not leaf.datatype:  # no datatype in a data message: the birth's says how to read it
                        v = sp.as_declared(v, dt)
                    if not sp.fits(v, dt):
                        # 70000 for an Int16 (a PLC tag widened, its birth not sent again): cut to the type's
                        # bits it was another number (4464), passed on GOOD as the node's
                        self._on_error(
                            "wrong_type",
                            f"{t.group}/{t.edge_node}/{dev or ''}: metric {flat!r}: {v} is out of the range of "
                            f"its datatype, {datatype_name(sp.DataType(dt))}; skipped (a node whose value outgrew "
                            "the type must send its birth again with the wider one)",
                        )
                        continue
                    values = [(flat, v)]
                elif (isinstance(v, float) and not math.isfinite(v)) or (
                    type(v) is np.ndarray and v.dtype.kind == "f" and not np.isfinite(v).all()
                ):
                    # a sensor's fault (an open thermocouple a node sends as NaN, a waveform with a dropped
                    # sample): a BAD reading, as the OPC UA source passes one; a DataSet's NaN is an empty cell
                    shown = "an array holding NaN or Inf" if type(v) is np.ndarray else v
                    self._on_error(
                        "non_finite",
                        f"{t.group}/{t.edge_node}/{dev or ''}: metric {flat!r} is {shown}; "
                        + ("skipped" if self._skip_non_finite else "passed on as BAD"),
                    )
                    if self._skip_non_finite:
                        continue
                    nf = True
                elif type(v) is float and (leaf.datatype or node.types.get((dev, flat))) == _FLOAT:
                    values = [(flat, float32_shown(v))]  # 0.3 as the node shows it, not 0.30000001192092896
                ts = self._time(t, ts_ms, default_ts, received_at)
                if nf:  # why as the node said it where its quality is not good, as the OPC UA source keeps it
                    q, q_reason = Quality.BAD, _said_or(leaf.quality, "non_finite")
                elif leaf.quality is None:  # the common metric: no Quality property, GOOD, nothing more to do
                    q, q_reason = Quality.GOOD, None
                else:
                    level, q_reason = sp.quality_reason(leaf.quality)
                    q = QUALITY_BY_NAME[level]
                for key, v in values:
                    if type(v) is np.ndarray:
                        was = node.last.get((dev, key))
                        if (
                            was is not None
                            and was[1] == ts
                            and type(was[0]) is np.ndarray
                            and np.array_equal(was[0], v, equal_nan=True)  # a NaN sample is the same sample
                        ):
                            # the waveform passed on before, again (a birth answering a rebirth, asked at every
                            # reconnect and seq gap, carries each metric's last value with its own time): a
                            # pipeline would score the same samples twice or splice them into its next window
                            repeated = repeated or key
                            continue
                    if (dev, key) in node.last:
                        node.last[(dev, key)] = (v, ts)
                    elif len(node.last) >= MAX_NODE_METRICS:
                        # names come from the node: data by ever new names must not grow the memory
                        self._too_many(t)
                    elif (
                        len(node.last) >= node.held
                        and self._held - node.held + len(node.last) >= MAX_TOTAL_METRICS
                    ):
                        # ... nor data by new names of a node born with few metrics, past the source's total: its
                        # value is read, not kept (births make room, ``_metric_room``; data is a node's own)
                        self._too_many_total(t, dev, key)
                    else:
                        node.last[(dev, key)] = (v, ts)
                        node.last_keys.setdefault(dev, {})[key] = len(node.last)
                        bisect.insort(node.last_sorted.setdefault(dev, []), key)
                    out.append(
                        Reading(
                            self._source,
                            self._tag(t.edge_node, dev, key),
                            v,
                            ts,
                            received_at,
                            q,
                            None,
                            q_reason,
                            None,
                            transient,
                        )
                    )
        if historical:
            self.historical += historical
            msg = (
                f"sparkplug: {t.group}/{t.edge_node}: values flagged historical (sent late by the node's "
                "store-and-forward) are not used: live inference and actions take current values only"
            )
            if self.on_notice is not None:
                self.on_notice("historical", msg, historical)
        if repeated and self.on_notice is not None:
            self.on_notice(
                "repeated_waveform",
                f"sparkplug: {t.group}/{t.edge_node}: array metric {repeated!r} came again with the time and "
                "values passed on before (a birth answering a rebirth carries each metric's last value); not "
                "passed on twice",
            )
        if unsupported and self.on_notice is not None:
            self.on_notice(
                "unsupported_metric",
                f"sparkplug: {t.group}/{t.edge_node}: metric {unsupported!r} is a Bytes or File metric or a "
                "DataSet's text column, which gives no reading (numbers, truth values, text, arrays of numbers or "
                "truth values, StringArrays (as JSON text), Template members and DataSet columns of numbers or "
                "truth values do)",
                cause="unread_type",
            )
        if no_value and self.on_notice is not None:
            self.on_notice(
                "unsupported_metric",
                f"sparkplug: {t.group}/{t.edge_node}: metric {no_value!r} is a PropertySet (PropertySetList), "
                "and carries no value a reading can be made of",
                cause="no_value",
            )
        if undefined:
            self._say_undefined(t, undefined)
        if by_alias and not alias_missing:  # its aliases are known again: an unknown one later asks a rebirth
            node.alias_asked = node.alias_born = False
        if unknown:
            self._missed(t, node, "an alias its births did not give")
        yield out

    def _say_undefined(
        self, t: sp.SparkplugTopic, undefined: list[tuple[str | None, str, int, bool]]
    ) -> None:
        """Values of metrics whose datatype Sparkplug B does not define (99; 0, Unknown, stated), by their own
        or their birth's: skipped, the message's other metrics read. Each is counted (notice
        ``undefined_datatype``), said once per node and metric (its cause). Read by their value's field, they
        were passed on GOOD, unsaid, whatever the node meant. No rebirth asked: it would bring the same birth."""
        if self.on_notice is None:
            for dev, flat, dt, _ in undefined:
                self._on_error(
                    "undefined_datatype", f"{t.group}/{t.edge_node}: {_shown(dev, flat)}: datatype {dt}"
                )
            return
        for dev, flat, dt, by_birth in undefined:
            shown = "0 (Unknown)" if dt == _UNKNOWN else str(dt)
            where = "declared so by its birth" if by_birth else f"stated in its {t.message_type.value}"
            self.on_notice(
                "undefined_datatype",
                f"sparkplug: {t.group}/{t.edge_node}: metric {_shown(dev, flat)} is of datatype {shown} ({where}), "
                "which Sparkplug B does not define (1 to 34 are: Int8 to DateTimeArray), so its value cannot be "
                "interpreted: skipped, each time (counted), the message's other metrics read; set the metric's "
                "datatype in the edge node",
                cause=_shown(t.group, t.edge_node, dev, flat),
            )

    def _time(self, t: sp.SparkplugTopic, ts_ms: int | None, fallback: float, received_at: float) -> float:
        """A Sparkplug timestamp (milliseconds) in seconds; ``fallback`` for none: 0 (a node without a clock)
        and this century's epoch seconds sent as milliseconds (read so, January 1970: every reading after
        the tag's first would be dropped as out of order), which is counted as ``bad_timestamp``. Such a
        number is taken for seconds only near the receive time (``SECONDS_NEAR_S``): the same range holds
        the uptime (12 to 115 days) that a node whose clock was never set stamps, which is left to read as
        1970, and the adapter's clock check gives it the receive time (``MqttSource._order``)."""
        if not ts_ms:
            return fallback
        if SECONDS_AS_MS[0] <= ts_ms < SECONDS_AS_MS[1] and (
            received_at < SECONDS_AS_MS[0] or abs(ts_ms - received_at) <= SECONDS_NEAR_S
        ):
            self._on_error(
                "bad_timestamp",
                f"{t.group}/{t.edge_node}: timestamp {ts_ms} in {t.message_type.value} is epoch seconds, not the "
                "milliseconds Sparkplug requires (read so, it is January 1970); the receive time is used: fix "
                "the edge node's timestamps",
            )
            return fallback
        return ts_ms / 1000.0

    def _bad(
        self,
        edge_node: str,
        node: _Node,
        device: str | None | object,
        ts: float,
        received_at: float,
        reason: str,
    ) -> list[Reading]:
        """BAD readings of the last values of a device (``None``: the node's own metrics), or of every one
        (``_EVERY``), in their order in ``node.last``; a device's at the cost of its own (``_Node.last_keys``).
        ``reason``: why (``node_death``, ``device_death``, ``node_silent``, ``birth_unread``, ``connection_lost``)."""
        if device is _EVERY:
            return [
                Reading(
                    self._source,
                    self._tag(edge_node, dev, name),
                    v,
                    ts,
                    received_at,
                    Quality.BAD,
                    None,
                    reason,
                    None,
                    (dev, name) in node.transient,
                )
                for (dev, name), (v, _) in node.last.items()
            ]
        assert device is None or isinstance(device, str)
        return [
            Reading(
                self._source,
                self._tag(edge_node, device, k),
                node.last[(device, k)][0],
                ts,
                received_at,
                Quality.BAD,
                None,
                reason,
                None,
                (device, k) in node.transient,
            )
            for k in node.last_keys.get(device, ())
        ]
