"""The common shape of every device adapter.

Data crossing from a device into the agent is a small typed object: ``Reading`` (one tag
value with source time and quality) or ``Frame`` (one camera image with a sequence number).
An adapter is started and stopped symmetrically, reports a ``ConnectionState``, reconnects by
itself with bounded exponential backoff (``Backoff``), counts what it received, dropped and
failed on (``DeviceStats``), and hands items to the consumer through a bounded ``Channel``
that may be fed from a foreign thread (paho's network thread, a capture thread).

Contract every adapter follows::

    src = SomeSource(name, settings)          # no I/O in __init__
    await src.start()                          # returns once the first connect was *attempted*;
                                               # an unreachable peer is retried in the background
    async for item in src.items():             # Reading or Frame, until stop()
        ...
    await src.stop(timeout_s=5.0)              # idempotent
    src.state, src.stats                       # ConnectionState, DeviceStats

Limits: ``Channel`` drops the oldest item when full (a gateway must keep the newest data);
every drop is counted in ``stats.dropped``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocols.redact import mask_credentials


class DeviceError(Exception):
    """Root of every error raised by ``devices``."""


class WrittenNumber:
    """A config's number kept with the text the config writes it in (``text``): the one shape of ``WholeFloat``,
    ``FractionFloat``, ``ShownFloat`` and ``ShownInt``, each of which is also the float or int YAML read. Built as
    ``Kind(number, text)`` (a ``WholeFloat`` also with its whole number); copies and pickles keep the text. Only
    ``written_number`` and the readers of a config's text (``number_as_written``, ``config_text``) ask for this
    class; the converters ask for the kinds, in their own order."""

    __slots__ = ()
    text: str

    def __new__(cls, value: Any, text: str) -> Any:
        self = super().__new__(cls, value)  # type: ignore[call-arg]  # the float or int the class also is
        self.text = text  # type: ignore[misc]  # each kind's own slot (ShownInt: its __dict__)
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self._number(), self.text)

    def _number(self) -> float | int:
        return float(self)  # type: ignore[arg-type]  # a float's kinds; ShownInt's is its int


class WholeFloat(WrittenNumber, float):
    """A float read from a config's text that shows a whole number the float is not: ``9.007199254740993e+15`` is
    9007199254740992.0 to YAML (a double holds whole numbers exactly only up to 2**53). ``whole`` is the number the
    text shows: an integer node or metric (Int64, UInt64) gets it; a Float or Double one gets the float, as the
    text rounds to it. ``text`` is what the config shows, and its repr: a Boolean or DateTime node's refusal
    names ``9.007199254740993e+15`` as written, not 9007199254740992.0, and a String node or metric gets that
    text (YAML's ``_`` dropped), the number written; its str stays the float's."""

    __slots__ = ("text", "whole")
    whole: int

    def __new__(cls, value: float, whole: int, text: str | None = None) -> WholeFloat:
        self = float.__new__(cls, value)
        self.whole = whole
        self.text = float.__repr__(self) if text is None else text
        return self

    def __getnewargs__(self) -> tuple[float, int, str]:  # type: ignore[override]  # copies and pickles keep both
        return (float(self), self.whole, self.text)

    def __repr__(self) -> str:
        return self.text

    __str__ = float.__repr__


class FractionFloat(WrittenNumber, float):
    """A float read from a config's text that shows a fraction the float is not: ``9007199254740992.5`` and
    ``1.0000000000000000001`` are the whole floats 9007199254740992.0 and 1.0 to YAML. ``text`` is what the
    config shows, and its repr: an integer node or metric refuses it as it refuses 2.5 (``is_integer`` is
    False: a fraction is never rounded); a Float or Double one gets the float, as the text rounds to it."""

    __slots__ = ("text",)

    def __new__(cls, value: float, text: str) -> FractionFloat:
        return super().__new__(cls, value, text)

    def is_integer(self) -> bool:
        return False

    def __repr__(self) -> str:
        return self.text


class ShownFloat(WrittenNumber, float):
    """A float read from a config's text that shows it in another form than its repr (``1.50``, ``1.0e+3``,
    ``9.007199254740992e+15``: 1.5, 1000.0, 9007199254740992.0 to YAML): ``text`` is what the config shows, and
    what a String node or metric gets (``number_as_written``), the number as the line engineer wrote it; every
    other reader gets the float (its repr and str are the float's)."""

    __slots__ = ("text",)

    def __new__(cls, value: float, text: str) -> ShownFloat:
        return super().__new__(cls, value, text)


class ShownInt(WrittenNumber, int):
    """An integer read from a config's text that shows it in another form than its digits (``0x7FFF``, ``+1``,
    ``1_000``: 32767, 1, 1000 to YAML): ``text`` is what the config shows, and what a String node or metric gets
    (``number_as_written``); every other reader gets the integer (its repr and str are the integer's). (An int
    subclass cannot have slots: ``text`` lives in its ``__dict__``.)"""

    def __new__(cls, value: int, text: str) -> ShownInt:
        return super().__new__(cls, value, text)

    def _number(self) -> int:
        return int(self)


def number_as_written(value: Any) -> str | None:
    """A config's number kept with its text (``WrittenNumber``: ``WholeFloat``, ``FractionFloat``, ``ShownFloat``,
    ``ShownInt``) as that text shows it, YAML's digit separators (``_``) dropped: what a String node or metric gets,
    the number the line engineer wrote (``9.007199254740992e+15``, not 9007199254740992.0; ``1.50``, not 1.5;
    ``0x7FFF``, not 32767); None for any other value."""
    if isinstance(value, WrittenNumber):
        return value.text.replace("_", "")
    return None


def config_text(value: Any, limit: int = 80) -> str | None:
    """How a refusal names a config's number kept with its text (``WrittenNumber``): the text as the config writes
    it (``4.9e-324``, ``0x8000``, ``2.50``), not the number YAML read it as (5e-324, 32768, 2.5); bounded to
    ``limit`` characters (a long literal is named by its two ends); None for any other value."""
    if not isinstance(value, WrittenNumber):
        return None
    text = value.text
    if len(text) > limit:
        text = f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 2) :]}"
    return text


def written_number(value: Any) -> tuple[Any, WholeFloat | FractionFloat | None, str | None, str | None]:
    """A value bound for a node or metric, as both converters (an OPC UA write's, a Sparkplug command's) take it:
    (the value, ``written``, ``as_written``, ``shown_text``). The value: a ``ShownFloat`` as its float and a
    ``ShownInt`` as its int (their text is for a String node or metric only: every other gets the number), any
    other value as it is. ``written``: the value when it is a ``WholeFloat`` or ``FractionFloat`` (a number its
    float is not: a Float or Double judges its text, ``1.0e-400`` is refused, not sent as 0.0), else None.
    ``as_written``: how a refusal names it (``config_text``: ``0x8000``, ``2.50``, not 32768, 2.5). ``shown_text``:
    what a String node or metric gets (``number_as_written``: ``9.007199254740993e+15``, not 9007199254740992.0)."""
    if not isinstance(value, WrittenNumber):
        return value, None, None, None
    written = value if isinstance(value, WholeFloat | FractionFloat) else None
    as_written, shown_text = config_text(value), number_as_written(value)
    if isinstance(value, ShownFloat):
        value = float(value)
    elif isinstance(value, ShownInt):
        value = int(value)
    return value, written, as_written, shown_text


def named_as_written(detail: str, value: Any) -> str:
    """``detail``, a refusal that begins with ``repr(value)`` (``sparkplug.datetime_ms``'s "1.5 is no time"),
    beginning instead with the config's text of ``value`` (``config_text``): "1.50 is no time"."""
    text = config_text(value)
    head = repr(value)
    if text is None or not detail.startswith(head):
        return detail
    return text + detail[len(head) :]


FLOAT32_MAX = 3.4028234663852886e38
# halfway from the largest REAL to 2**128: a double from here on rounds to infinity as a REAL, one below it to
# FLOAT32_MAX (3.4028235e38, the largest REAL as PLCs print it, is such a double a hair above FLOAT32_MAX)
FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


FLOAT32_TINY = (
    1.1754943508222875e-38  # the smallest normal 32-bit float: below it a REAL loses digits, then all
)


DOUBLE_TINY = (
    sys.float_info.min
)  # 2.2250738585072014e-308, the smallest normal double: below it, digits are lost


def float_for_plc(value: int | float, single: bool) -> float:
    """``value`` as a float for a PLC's REAL (``single``, 32-bit) or LREAL; ``ValueError`` with the fix
    for NaN, infinity and numbers the type cannot hold. A PLC's comparisons with NaN are all false, so a
    limit fed NaN would never trip: such a value is never sent.

    A whole number must arrive as itself, with or without a point (``16777217`` and ``16777217.0``, a count or a
    recipe number): a REAL holds every one only up to 2**24, an LREAL up to 2**53, and past them the nearest
    float is another number (16777217 arrived as 16777216, 123456790.0 as 123456792), so such a value is
    refused, naming the number it would have become. A whole number with a point at 2**53 or past it
    (``1.0e+20``, ``3.4028235e38``) is a magnitude, as a double holds it: its nearest REAL. A number with a
    fraction is written as the nearest value the type holds, as a PLC's own HMI stores what is typed into a
    REAL (2.7 is 2.7000000477, which the PLC shows as 2.7; 1234.5678 is 1234.5677490234375): a decimal fraction
    rarely has an exact binary value at all, and a REAL's ~7 digits are its precision, not another number.
    A non-zero number too small for a REAL (below about 1.2e-38), which would arrive as 0 or with its digits
    gone, is refused, and so is one a REAL would round to infinity (``FLOAT32_OVERFLOW``: 3.4028236e38 is
    refused). A NumPy float32 (a REAL already) arrives as itself. A config's number too small for a double
    (``FractionFloat``: ``1.0e-400``, ``1.0e-330``), which YAML reads as 0.0, is refused by both, as it would
    arrive as 0 (it was written as 0.0, counted ok), and so is a non-zero number an LREAL holds only as a subnormal
    (below about 2.2e-308, ``DOUBLE_TINY``), as a REAL's below 1.2e-38 is: ``1.0e-320`` arrived as
    9.99988867182683e-321, its digits lost (none past 4.9e-324), counted ok."""
    try:
        f = float(value)
    except OverflowError:
        raise ValueError("out of range of a 64-bit float") from None
    if f != f or f in (float("inf"), float("-inf")):
        raise ValueError("write a finite number; NaN and infinity are never sent to a PLC")
    if single and abs(f) >= FLOAT32_OVERFLOW:
        raise ValueError("out of range of a 32-bit Float (about +-3.4e38)")
    kind, top = ("a 32-bit Float (REAL)", 2**24) if single else ("a 64-bit Double (LREAL)", 2**53)
    # a fraction as written (a zero is none) that is 0 as a float, or a non-zero number below the type's smallest
    # normal number, where it holds ever fewer digits (a Double's 1.0e-320 is 9.99988867182683e-321)
    if (not f and isinstance(value, FractionFloat)) or (not single and f and abs(f) < DOUBLE_TINY):
        raise ValueError(
            f"too small for {kind} (below about {'1.2e-38' if single else '2.2e-308'}): it would arrive as "
            f"{f:.9g}{', its digits lost' if f else ''}; write 0"
        )
    integer = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if integer or (f.is_integer() and abs(f) < 2**53):
        arrives = float(np.float32(f)) if single else f
        if arrives != (int(value) if integer else f):  # a Python int compared with a float: exactly
            raise ValueError(
                f"{kind} holds whole numbers exactly only up to +-{top} (2**{top.bit_length() - 1}): "
                f"{int(value) if integer else repr(f)} would arrive as {arrives:.17g}; write to "
                + ("a Double (LREAL) or " if single else "")
                + "an integer node, or a number within that range"
            )
    elif single and f and abs(f) < FLOAT32_TINY:
        raise ValueError(
            f"too small for {kind} (below about 1.2e-38): it would arrive as "
            f"{float(np.float32(f)):.9g}; write 0, or to a Double (LREAL) node"
        )
    return f


# control characters text written to a PLC may hold: the layout of text; every other (C0, DEL, C1: NUL, ESC, ...)
# is refused (``text_problem``)
_TEXT_CONTROLS = frozenset("\t\n\r")


def text_problem(text: str) -> str | None:
    """Why ``text`` is never written to a PLC's String (a Sparkplug metric, an OPC UA node), or None: a lone
    surrogate (UTF-8 cannot encode it, a retry would fail again), or a control character other than tab, line
    feed and carriage return (a NUL ends a PLC's C string there, and ESC, BEL or backspace are no text a node
    shows: sent as it was, the node's String tag held what the operator never wrote). The check of
    ``sparkplug_host.command_value`` and of OPC UA writes, and at load of a text value the YAML fixes
    (``edge_agent.config``)."""
    if text.isprintable():  # the common case, at C speed: no control character, no surrogate
        return None
    try:
        text.encode()
    except UnicodeEncodeError:
        return "text that is not valid Unicode (a lone surrogate) cannot be sent"
    for i, c in enumerate(text):
        if (c < " " or "\x7f" <= c <= "\x9f") and c not in _TEXT_CONTROLS:
            return (
                f"text holding the control character {c!r} (at {i}) is never sent; tab, line feed and carriage "
                "return are the only ones written"
            )
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(v: Any) -> Any:
    """``v`` (a text, or a list holding texts, at any depth) as valid Unicode: each lone surrogate replaced by
    U+FFFD, as a browser or Python's ``errors="replace"`` reads bytes that are no UTF-8; ``v`` itself (the same
    object) when it holds none. A lone surrogate is what a source is handed for text that is not valid Unicode
    (an OPC UA String of invalid UTF-8 bytes, which asyncua decodes with ``surrogateescape``; JSON's
    ``"\\ud800"``): passed on as it is, it is written as a ``\\ud800`` escape that strict JSON parsers
    (serde_json, PostgreSQL jsonb) refuse with the whole message holding it, and UTF-8 cannot encode it.
    Sources call it where they read a value and count ``invalid_text``. The common text passes at C speed
    (ASCII: a flag; else ``isprintable``, which a surrogate fails)."""
    if type(v) is str:
        if v.isascii() or v.isprintable() or _SURROGATE.search(v) is None:
            return v
        return _SURROGATE.sub("\ufffd", v)
    if type(v) is list:
        out = None
        for i, x in enumerate(v):
            if type(x) is str or type(x) is list:
                y = valid_text(x)
                if y is not x:
                    if out is None:
                        out = list(v)
                    out[i] = y
        return v if out is None else out
    return v


class Quality(enum.Enum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


QUALITY_BY_NAME = {q.value: q for q in Quality}  # "good" -> Quality.GOOD: a dict lookup per reading


class ConnectionState(enum.Enum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"  # lost or refused; waiting before the next attempt


@dataclass(slots=True)
class Reading:
    """One value of one tag. ``value`` is a float, int, bool, str or a 1-D NumPy array (waveform).

    Treat as immutable. Not declared ``frozen``: a frozen dataclass's ``__init__`` costs 4x a plain
    one (0.9 vs 0.2 µs), paid for every tag of every message on the event loop (bench/mqtt_bench).
    """

    source: str  # adapter name from the config
    tag: str  # tag name after mapping (node alias, JSON field mapping, Sparkplug metric name)
    value: Any
    timestamp: float  # source time, epoch seconds (server/device clock when the protocol has one)
    received_at: float  # epoch seconds when the adapter got it
    quality: Quality = Quality.GOOD
    rate_hz: float | None = (
        None  # an array value's sample rate, when the source states it (node metadata, payload)
    )
    # why a reading is not GOOD (None when GOOD): the server's own word where it gave one (an OPC UA status
    # code's name: "BadSensorFailure", "UncertainLastUsableValue"), else the adapter's own reason key
    # ("server_not_running", "subscription_stalled", "null_value", "non_finite": snake_case, never a status name)
    reason: str | None = None
    # the source's own time of a reading whose ``timestamp`` was moved later: a value after a BAD reading the
    # adapter made is never stamped earlier than that BAD (a tag's history never goes back in time); None when
    # ``timestamp`` is the source's time
    source_ts: float | None = None
    # a value to use live (the tag's value, rules, pipelines) but not to store as a record for the cloud: its
    # device says it should not be historized (a Sparkplug metric flagged ``is_transient``)
    transient: bool = False
    # values of this tag were lost just before this one at the source (an OPC UA server's queue for the node
    # overflowed: the Overflow bit): a consumer joining successive values (a window) must not join across it
    lost_before: bool = False


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera image, BGR uint8 HxWx3, with a strictly increasing per-source ``seq``.

    ``unchanged_s``: how long a live camera's image had not changed at all when this frame came, once that
    is over the camera's ``frozen_after_s`` (a hung camera resending its last image); 0 otherwise. A
    pipeline calls such a frame UNSURE: the verdict would be on an old image, not on the part in view.

    ``camera_size``: the camera's image size (width, height) when the source resized it to another (a camera's
    ``width`` and ``height``), None when ``image`` is as the camera gave it. Resized to other proportions, the
    part is stretched: the UNSURE check takes the frame's shape from this size, not from the resized image."""

    source: str
    seq: int
    captured_at: float  # epoch seconds
    image: np.ndarray
    unchanged_s: float = 0.0
    camera_size: tuple[int, int] | None = None


MAX_KEYS_COUNTED = 100  # tags whose hand-over drops are counted apart (tag names come from outside)


@dataclass
class DeviceStats:
    """Standard counters every adapter keeps; exported as metrics by the agent."""

    received: int = 0
    dropped: int = 0
    errors: int = 0
    reconnects: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    # the hand-over's drops by tag (``Channel``; "": items without a tag), at most MAX_KEYS_COUNTED names
    dropped_by_key: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str, detail: str | None = None, n: int = 1) -> None:
        """Count an error, ``n`` times when one event stands for several (``n`` messages lost at once);
        ``last_error`` (shown on ``/status``, ``edge-agent status``, in metrics) is its text with the password
        of any URL in it masked: every source's errors pass here, and a library's text may quote the URL it was
        given with its login (``mqtts://user:pass@broker``)."""
        self.errors += n
        self.errors_by_reason[reason] = self.errors_by_reason.get(reason, 0) + n
        self.last_error = mask_credentials(f"{reason}: {detail}" if detail else reason)


# the wall clock less a condition's monotonic age differing from the wall time recorded at its start by more than
# this: the wall clock was stepped since (``wall_since``)
CLOCK_STEP_S = 2.0


def wall_since(since: float, for_s: float, now: float | None = None) -> float:
    """When a condition that has lasted ``for_s`` (by the monotonic clock) began, by the wall clock as it is now:
    ``since`` (the wall time recorded at its start) until the wall clock has been stepped by more than
    CLOCK_STEP_S, then now less ``for_s``. A gateway without a battery-backed clock, whose condition began in
    1970 and whose clock NTP has set since, says the true start; the caller keeps the value returned, so a step
    moves it once, not at every read. ``now``: the wall clock's time, read by the caller (``time.time()``)."""
    if now is None:
        now = time.time()
    return now - for_s if abs(now - for_s - since) > CLOCK_STEP_S else since


class BurstLogger:
    """Logs one line per (key) per burst instead of one per bad message: no log storm.

    The first occurrence is logged at once; repeats within ``window_s`` are counted and
    summarised on the next log line for that key. A URL's password in the line is masked.
    """

    def __init__(self, logger: logging.Logger, window_s: float = 30.0) -> None:
        self._log = logger
        self._window_s = window_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, key: str, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._window_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        n = self._suppressed.pop(key, 0)
        self._last[key] = now
        text = msg % args if args else msg
        if n:
            text += f" (and {n} more like it in the last {self._window_s:.0f}s)"
        self._log.log(level, "%s", mask_credentials(text))  # a URL's password never reaches the log


MAX_CAUSES = 8  # distinct causes of one notice key whose first messages are kept (``Notices.note``)


class Notices:
    """Silent drops made loud once: the first occurrence of each key is logged as one WARNING (the
    message carries the reason and the fix), every occurrence is counted, repeats are never logged.
    ``status()`` is what ``/status`` shows: ``{key: {"count": n, "message": first message}}``.

    A key with several causes that need different fixes (a Sparkplug node's Bytes metric and its
    PropertySet, both ``unsupported_metric``) is noted with ``cause``: the first message of each distinct
    cause is logged and kept (up to ``MAX_CAUSES`` per key, the rest counted under the key), and
    ``status()`` lists the later causes' messages under ``"more"``; the first one stays ``"message"``. A caller
    that knows how many distinct causes it has seen passes ``causes``: ``status()`` says it (``"causes"``), so
    that causes past the kept ones are at least counted. ``level`` None: nothing is logged (the caller says it)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self.counts: dict[str, int] = {}
        self.messages: dict[str, str] = {}
        self._causes: dict[str, dict[str, str]] = {}  # key -> cause -> that cause's first message
        self._cause_counts: dict[str, int] = {}  # key -> how many distinct causes its caller has seen

    def note(
        self,
        key: str,
        msg: str,
        *args: Any,
        n: int = 1,
        level: int | None = logging.WARNING,
        cause: str | None = None,
        causes: int | None = None,
    ) -> None:
        if key not in self.counts:
            self.counts[key] = 0
            self.messages[key] = mask_credentials(msg % args if args else msg)
            if level is not None:
                self._log.log(level, "%s", self.messages[key])
            if cause is not None:
                self._causes[key] = {cause: self.messages[key]}
        elif cause is not None:
            kept = self._causes.setdefault(key, {})
            if cause not in kept and len(kept) < MAX_CAUSES:
                kept[cause] = mask_credentials(msg % args if args else msg)
                if level is not None:
                    self._log.log(level, "%s", kept[cause])
        if causes is not None:
            self._cause_counts[key] = causes
        self.counts[key] += n

    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for k, c in list(self.counts.items()):
            out[k] = {"count": c, "message": self.messages[k]}
            more = [m for m in self._causes.get(k, {}).values() if m != self.messages[k]]
            if more:
                out[k]["more"] = more
            if k in self._cause_counts:
                out[k]["causes"] = self._cause_counts[k]
        return out


class Backoff:
    """Bounded exponential backoff with full jitter: 0.5 s, 1 s, 2 s ... capped at ``max_s``."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0, factor: float = 2.0) -> None:
        self.initial_s, self.max_s, self.factor = initial_s, max_s, factor
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        """Pauses taken since the last reset: 0 when the next one is the shortest (``initial_s``)."""
        return self._attempt

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        return random.uniform(base / 2, base)


class Channel:
    """Bounded hand-over from producers (any thread) to one asyncio consumer.

    ``put_threadsafe`` may be called from any thread; ``put_nowait`` from the loop thread.
    When full, the oldest item of the tag holding the most of the queue is dropped (an item without a
    ``tag``, a camera's frame, is of one key: the oldest of all), counted in ``stats.dropped`` and by tag
    in ``stats.dropped_by_key``: an OPC UA node that bursts 10,000 values after a reconnect (its
    server-side queue) loses its own oldest values, not the one value of another node that changed
    among them (a temperature crossing its alarm threshold, which the server does not send again
    until it changes again). Order is kept across tags.
    """

    def __init__(self, maxsize: int, stats: DeviceStats) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._items: deque[Any] = deque()
        self._dropped: set[int] = set()  # ids of items dropped from the middle of _items, not yet taken
        self._maxsize = maxsize
        self._stats = stats
        self._lock = threading.Lock()
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._live = 0
        self._by_key: dict[Any, deque[Any]] | None = None  # live items by key, once full (``_index``)
        self._heavy: Any = None
        self._heavy_n = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __len__(self) -> int:
        return self._live

    def _push(self, item: Any) -> None:
        with self._lock:
            if self._live >= self._maxsize:
                if self._by_key is None:  # first full since the queue was last empty: index it by key once
                    self._index()
                self._drop_heaviest()
            if self._by_key is not None:
                key = getattr(item, "tag", None)
                mine = self._by_key.get(key)
                if mine is None:
                    mine = self._by_key[key] = deque()
                mine.append(item)
                if len(mine) > self._heavy_n or self._heavy is None:
                    self._heavy, self._heavy_n = key, len(mine)
            self._items.append(item)
            self._live += 1
            self._stats.received += 1

    def _index(self) -> None:
        """The live items by key (kept only while the queue has been full and not yet emptied: the common
        path, a queue with room, keeps none of it). Dropped items stay in ``_items`` until taken, known by
        their id (unique while the queue holds them)."""
        by_key: dict[Any, deque[Any]] = {}
        dropped = self._dropped
        for it in self._items:
            if id(it) not in dropped:
                by_key.setdefault(getattr(it, "tag", None), deque()).append(it)
        self._by_key = by_key
        self._heavy, self._heavy_n = None, 0

    def _drop_heaviest(self) -> None:
        by_key = self._by_key
        assert by_key is not None  # indexed by _push
        key = self._heavy
        mine = by_key.get(key)
        if not mine:  # not known: the longest now (a scan of the keys queued)
            key, mine = max(by_key.items(), key=lambda kv: len(kv[1]))
            self._heavy = key
        item = mine.popleft()
        self._heavy_n = len(mine)
        if not mine:
            del by_key[key]
            self._heavy, self._heavy_n = None, 0
        self._live -= 1
        self._stats.dropped += 1
        if item is self._items[0]:  # the oldest of all: gone at once
            self._items.popleft()
        else:
            self._dropped.add(id(item))
            if len(self._dropped) > self._maxsize + 64:  # compacted now and then
                dropped = self._dropped
                self._items = deque(it for it in self._items if id(it) not in dropped)
                dropped.clear()
        by = self._stats.dropped_by_key
        name = "" if key is None else str(key)
        if name in by or len(by) < MAX_KEYS_COUNTED:
            by[name] = by.get(name, 0) + 1
        else:
            by["(other tags)"] = by.get("(other tags)", 0) + 1

    def _pop(self) -> tuple[bool, Any]:
        """The oldest live item (called under the lock): (True, item), or (False, None) when none."""
        items, dropped = self._items, self._dropped
        while items:
            item = items.popleft()
            if dropped and id(item) in dropped:
                dropped.discard(id(item))
                continue
            self._live -= 1
            by_key = self._by_key
            if by_key is not None:
                if not self._live:
                    self._by_key = None  # emptied: no index until it is full again
                else:
                    key = getattr(item, "tag", None)
                    mine = by_key[key]
                    mine.popleft()  # this item: the oldest of its key too
                    if not mine:
                        del by_key[key]
                        if self._heavy == key:
                            self._heavy, self._heavy_n = None, 0
                    elif self._heavy == key:
                        self._heavy_n = len(mine)
            return True, item
        return False, None

    def put_nowait(self, item: Any) -> None:
        self._push(item)
        self._event.set()

    def put_threadsafe(self, item: Any) -> None:
        self._push(item)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._event.set)
            except RuntimeError:  # loop closing: the item stays queued for a later get
                pass

    def close(self) -> None:
        self._closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._event.set)
            except RuntimeError:
                pass
        else:
            self._event.set()

    async def get(self) -> Any:
        """Next item; raises ``EOFError`` once closed and drained."""
        while True:
            with self._lock:
                got, item = self._pop()
                if got:
                    return item
                if self._closed:
                    raise EOFError
                self._event.clear()
            await self._event.wait()

    async def __aiter__(self):
        while True:
            try:
                yield await self.get()
            except EOFError:
                return
