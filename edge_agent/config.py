"""The agent's one YAML file, validated completely before anything starts.

``load_config(path)`` returns a frozen ``AgentConfig`` or raises ``ConfigError`` holding *every*
problem found, each one line naming the file, the path inside it and what was expected::

    configs/line1.yaml: pipelines[1].model: unknown model slot 'vison'; did you mean 'vision'?
    configs/line1.yaml: sources.cam.fsp: unknown option 'fsp'; did you mean 'fps'?

Steps: YAML → ``${VAR}`` / ``${VAR:-default}`` substitution in strings (a missing variable is an
error naming it) → every value validated once, by the type ``AgentConfig`` declares for it (pydantic,
``extra="forbid"``): sources and actions through unions built once from their plugin tables
(``devices.SOURCE_TYPES``, ``ACTION_PLUGINS``; settings modules import no protocol library), engines
and codecs through the choices built from theirs. Entries are validated one by one, so one bad entry
hides neither the others' problems nor the cross-checks → cross-references (pipeline → source, model
slot, actions; action → a source of the right type), action conditions, files, then each plugin's own
``cross_check(name, cfg, report)`` (e.g. the MQTT source's Sparkplug tag_map, the save_sample action
in rules). Nothing is connected or loaded here.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import decimal
import difflib
import enum
import functools
import math
import os
import re
import stat
import string
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    PrivateAttr,
    SecretStr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from devices import SOURCE_TYPES, load_object
from devices.base import (
    FractionFloat,
    ShownFloat,
    ShownInt,
    WholeFloat,
    WrittenNumber,
    config_text,
    named_as_written,
    number_as_written,
)
from devices.opcua.settings import DATETIME_RANGE, node_id_checked
from devices.opcua.settings import guess_tag as _guess_tag  # noqa: F401  (its home moved; kept for imports)
from edge_agent.action_base import ActionSettings, RetrySettings  # noqa: F401  (RetrySettings: re-exported)
from edge_agent.conditions import ConditionError, compile_condition, shown_text, text_number
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.outbox.settings import OutboxSettings, SampleSelectionSettings
from edge_agent.uplink.settings import CloudSettings
from model_packager.text import printable, undecoded_bytes
from protocols.ids import AGENT_ID_PATTERN
from protocols.json_codec import offset_problem
from protocols.redact import mask_credentials
from protocols.topics import shown_topic


class ConfigError(ValueError):
    """Every line names the file and the field; a URL's password is masked in all of them (a field's value,
    a YAML error quoting its line, a ``${VAR}`` taken from the environment), and each is one printable line
    (``_one_line``)."""

    def __init__(self, errors: list[str]) -> None:
        errors = [_one_line(mask_credentials(e)) for e in errors]
        super().__init__("\n".join(errors))
        self.errors = errors


def _one_line(text: str) -> str:
    """``text`` with every character that is not printable shown as its escape (``\\x1b``, ``\\n``): a name
    in the file may hold one written as a YAML escape (``"cam\\x1b[2J"``, ``"a\\nb"``), and an error or warning
    naming it cleared the terminal it was printed on, or forged a line of its own in the agent's log."""
    return printable(text, len(text))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- MQTT topics the agent publishes to ---------------------------------------------------------------
# A topic is published as written (no {placeholders} are expanded). What a broker refuses is refused here,
# by the field's path: Mosquitto drops the whole connection (a malformed packet) for a topic holding NUL, a
# control character (U+0001-U+001F, U+007F-U+009F) or a Unicode noncharacter (U+FDD0-U+FDEF, U+xFFFE/F),
# and paho refuses '+' and '#' at every publish: at run time each was a failure per message, or a dropped
# connection while the action counted the message sent.
MQTT_TOPIC_MAX_BYTES = 65535
_TOPIC_BAD_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef]")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def _topic_char_problem(value: str) -> str | None:
    """What in ``value`` a broker refuses (a character or the length), or None."""
    m = _TOPIC_BAD_CHAR.search(value)
    i, ch = (
        (m.start(), m.group())
        if m
        else next(((i, c) for i, c in enumerate(value) if ord(c) & 0xFFFE == 0xFFFE), (-1, ""))
    )
    if ch:
        cp = ord(ch)
        what = (
            "NUL"
            if cp == 0
            else f"a surrogate (U+{cp:04X})"
            if 0xD800 <= cp <= 0xDFFF
            else f"a control character (U+{cp:04X})"
            if cp < 0xA0
            else f"a Unicode noncharacter (U+{cp:04X})"
        )
        return f"holds {what} at character {i + 1}; the broker drops the whole connection for it"
    n = len(value.encode("utf-8"))
    if n > MQTT_TOPIC_MAX_BYTES:
        return f"is {n} bytes in UTF-8; MQTT allows at most {MQTT_TOPIC_MAX_BYTES}"
    return None


def _publish_topic(value: str) -> str:
    """A topic the agent publishes to: non-empty, without wildcards, NUL or control characters, at most
    65535 UTF-8 bytes."""
    if not value:
        raise ValueError(
            "empty; name a topic such as 'plant/line1/results', or leave topic out for the default"
        )
    for wildcard in ("+", "#"):
        if wildcard in value:
            raise ValueError(
                f"holds {wildcard!r}, a wildcard: subscriptions use wildcards, a publish needs the topic "
                "in full (every publish would fail)"
            )
    problem = _topic_char_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _topic_level(value: str) -> str:
    """One level of a topic built by the agent (a Sparkplug group, edge node or device id; site, line)."""
    if "/" in value or "+" in value or "#" in value:
        raise ValueError("is one topic level: '/', '+' and '#' are not allowed in it")
    problem = _topic_char_problem(value)
    if problem:
        raise ValueError(problem)
    return value


PublishTopic = Annotated[str, AfterValidator(_publish_topic)]
TopicLevel = Annotated[str, AfterValidator(_topic_level)]


def _placeholder_warning(topic: str | None) -> str | None:
    m = _PLACEHOLDER.search(topic or "")
    if m is None:
        return None
    return (
        f"topic {topic!r} is published as written: {m.group()} is not expanded (topics take no "
        "placeholders; ${VAR} environment variables are substituted when the config is read)"
    )


class AgentSection(_Model):
    id: str = Field(pattern=f"^{AGENT_ID_PATTERN}$", description="unique agent id")
    site: TopicLevel = Field("site1", pattern=r"^[^/+#\s]+$")
    line: TopicLevel = Field("line1", pattern=r"^[^/+#\s]+$")
    data_dir: str = Field("var/agent", description="models, samples, state; relative to the config file")


class HttpSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(
        8090, ge=0, le=65535, description="status page, /status JSON and /metrics; 0 = any free port"
    )
    enabled: bool = True
    allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="host names the status page may be reached under, besides any IP address, localhost "
        "and this machine's name; a request naming another host is refused (421), so that a web page in a "
        "browser on the plant network cannot read the agent through DNS rebinding",
    )


class QueuePolicy(enum.StrEnum):
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    BLOCK = "block"


class QueueSettings(_Model):
    size: int = Field(8, ge=1, le=100_000)
    policy: QueuePolicy = QueuePolicy.DROP_OLDEST
    max_age_ms: float | Literal["auto"] | None = Field(
        "auto",
        description="an item older than this when a thread would take it for inference (now minus its capture "
        "time) is dropped unjudged and counted (stale): its part has moved on. auto: for a live camera, 2 "
        "frame intervals at the rate its frames come, at least 250 ms; no bound for signal windows, a drop "
        "folder, a file or folder replayed, or queue policy block. null: no bound",
    )

    @field_validator("max_age_ms", mode="before")
    @classmethod
    def _age(cls, v: Any) -> Any:
        if v is None or v == "auto":
            return v
        if isinstance(v, str):  # a ${VAR} substitution gives text: a number written as text is the number
            try:
                v = float(v.strip())
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, int | float) or not (v > 0 and v < float("inf")):
            raise ValueError(f"expected 'auto', a number of milliseconds > 0 or null (no bound), found {v!r}")
        return float(v)


class WindowSettings(_Model):
    waveform: str = Field(description="tag whose samples form the window (an array tag or a scalar stream)")
    scalars: list[str] | dict[str, str] = Field(
        default_factory=list,
        description="tags whose latest value rides with each window: a list of tags named "
        "like the model's scalar inputs, or a mapping {model input: tag}",
    )
    by: Literal["count", "time"] = "count"
    size_samples: int | None = Field(None, ge=2, description="default: the model's window_samples")
    hop_samples: int | None = Field(
        None, ge=1, description="count mode: new samples between windows (default: size)"
    )
    hop_s: float | None = Field(None, gt=0, description="time mode: seconds between windows")
    sample_rate_hz: float | None = Field(
        None,
        gt=0,
        description="the waveform tag's sample rate; resampled to the "
        "model's when the ratio is clean, refused otherwise (default: the model's)",
    )

    @property
    def scalar_inputs(self) -> dict[str, str]:
        """Tag -> the model's scalar input it feeds."""
        if isinstance(self.scalars, dict):
            return {tag: name for name, tag in self.scalars.items()}
        return {t: t for t in self.scalars}


class UnsureSettings(_Model):
    """Frames far outside the model's training inputs (``input_stats`` in its manifest) get verdict
    UNSURE with a reason: never OK or NG, no action fires. A package without statistics says UNSURE
    only for a frozen camera's frames (the camera's ``frozen_after_s``)."""

    enabled: bool = True
    tolerance: float = Field(
        1.0, gt=0, description="scales every margin around the training range; > 1: fewer"
    )
    window: int = Field(200, ge=5, le=100_000, description="frames over which the unsure share is watched")
    max_share: float = Field(0.2, gt=0, le=1, description="an input_drift event when the share reaches this")


class PipelineSettings(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    source: str
    model: str
    kind: Literal["frame", "signal"] | None = Field(
        None, description="default: frame for cameras, else signal"
    )
    window: WindowSettings | None = None
    queue: QueueSettings = QueueSettings()
    workers: int = Field(1, ge=1, le=16)
    actions: list[str] = Field(default_factory=list)
    baseline: BaselineSettings | None = Field(
        None,
        description="learn this asset's healthy baseline, then score "
        "against it (signal pipelines; docs/maintenance.md)",
    )
    unsure: UnsureSettings = UnsureSettings()


_Action = ActionSettings


class MqttPublishAction(_Action):
    source_fields: ClassVar[dict[str, str]] = {"source": "mqtt"}
    type: Literal["mqtt_publish"]
    source: str = Field(description="an mqtt source to publish through")
    topic: PublishTopic | None = Field(
        None, description="default: factory/<site>/<line>/<agent>/results/<pipeline>; published as written"
    )
    qos: Literal[0, 1] = 0
    retain: bool = False

    def cross_check(self, name: str, cfg: AgentConfig, report: Findings) -> None:
        if (w := _placeholder_warning(self.topic)) is not None:
            report.warning(f"actions.{name}.topic", w)
        if self.qos == 1 and (w := _subscribing_publisher_warning(cfg, self.source)) is not None:
            report.warning(f"actions.{name}.source", w)


def _subscribing_publisher_warning(cfg: AgentConfig, source: str | None) -> str | None:
    """A QoS 1 publish through an mqtt source that also subscribes is done when its PUBACK comes back, on the
    connection that carries what the source reads: a flood on a subscription puts the PUBACKs behind its backlog
    (results 11 s late during a 20 s flood, 32 s after it; docs/mqtt.md, "A flood")."""
    settings = cfg.sources.get(source) if source is not None else None
    subs = getattr(settings, "subscriptions", None) if getattr(settings, "type", None) == "mqtt" else None
    if not subs or getattr(settings, "publish_connection", "shared") == "separate":
        return None
    shown = ", ".join(shown_topic(s.topic) for s in subs[:3]) + (" ..." if len(subs) > 3 else "")
    return (
        f"QoS 1 through mqtt source {source!r}, which also subscribes ({shown}): each publish waits for its "
        "PUBACK on the connection that carries what the source reads, so a flood on a subscription holds "
        "these messages back for tens of seconds (docs/mqtt.md, 'A flood'); set publish_connection: separate "
        "on the source, or publish through an mqtt source of its own with no subscriptions"
    )


class WriteMode(enum.StrEnum):
    LEVEL = "level"  # every result writes: value while the condition holds, reset_value (if given) while not
    ON_CHANGE = "on_change"  # the same level, written only when it changes
    PULSE = "pulse"  # on each rising edge: value, then reset_value after pulse_ms


_SCALAR = bool | int | float | str
# what a write value may be besides text, numbers and booleans: a ByteString's bytes, stated in YAML as
# {base64: ...} or {hex: ...} (``_check_write_value``)
# a WholeFloat first: a whole number written with an exponent that YAML reads as another keeps the number its text
# shows, a FractionFloat that it is a fraction (``_keep_exact_writes``); as a float member of the union it would be made
# a plain float (and so a ShownFloat, whose text a String node gets)
_WRITTEN = (
    InstanceOf[WholeFloat]
    | InstanceOf[FractionFloat]
    | InstanceOf[ShownFloat]
    | InstanceOf[ShownInt]
    | _SCALAR
    | Annotated[bytes, Strict()]
)
_BYTE_ENCODINGS = ("base64", "hex")
# a text that is a whole ISO 8601 date and time (a reading's timestamp, a DateTime node's value): checked for
# its zone and range at load, whether YAML read it as a time (unquoted) or as text (quoted)
_ISO_TIME = re.compile(
    r"\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)?\s*"
)
_OCTAL_1_2 = re.compile(r"([-+]?)0[oO]([0-7]+)")  # YAML 1.2's octal: text to YAML 1.1, quoted or not
# a hexadecimal or binary number with an upper-case prefix (0X1F, 0B101): YAML 1.1 reads the prefix in lower
# case only (0x1F is 31), so these are text, quoted or not
_UPPER_PREFIX = re.compile(r"([-+]?)0([XB])([0-9a-fA-F_]+)")
_LOOKS_TYPED = re.compile(
    r"^\s*(true|false|yes|no|on|off|y|n|[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|nan|inf)\s*$", re.IGNORECASE
)


class _FromEnv(str):
    """A write value given wholly by one environment variable (``value: ${RECIPE}``), with the variable's name:
    a variable has no YAML type, so ``_from_env`` reads its number or truth value (``_substitute`` makes it)."""

    var: str
    default: bool  # the text is the default written in the config (``${VAR:-007}``, VAR unset), not VAR's

    expr: str  # as the config writes it: ${VAR}, ${VAR:-007}

    def __new__(cls, text: str, var: str, default: bool = False, expr: str = "") -> _FromEnv:
        obj = super().__new__(cls, text)
        obj.var = var
        obj.default = default
        obj.expr = expr or f"${{{var}}}"
        return obj


def _env_said(x: _FromEnv, shown: str) -> tuple[str, str]:
    """What gave ``x`` (``environment variable V holds '...'``, or the config's default when V is unset), and
    the fix's verb for the value ``shown`` (``set V=7``, or ``write the default as 7``)."""
    if x.default:
        return (
            f"the default {str(x)!r} of ${{{x.var}}} (the variable is not set)",
            f"write the default as {shown}",
        )
    return f"environment variable {x.var} holds {str(x)!r}", f"set {x.var}={shown}"


# the places whose value, given wholly by one ${VAR}, is read as the variable's number or truth value
_WRITE_VALUE_PLACE = re.compile(r"actions\..+\.(value|reset_value)(\[\d+\])?")
_ENV_INT = re.compile(r"[-+]?(0|[1-9]\d*)")
_ENV_FLOAT = re.compile(r"[-+]?((\d+\.\d*|\.\d+)([eE][-+]?\d+)?|\d+[eE][-+]?\d+)")


def _from_env(x: _FromEnv, what: str) -> Any:
    """The value an environment variable gives a write value: a number when it holds one in decimal as that
    number's own text (``12``, ``-3``, ``1.5``, ``12.0``: a String node then gets the text the variable holds;
    ``1.50``, ``1e3``, ``+5`` are refused, never re-formatted), true or false (any case) as a boolean, else its
    text (for a String node). A
    variable has no quotes to leave out: ``RECIPE=12`` was refused as quoted text, "write value: 12 without
    quotes", which no variable can follow. Another form of a number or truth value (``010``, ``yes``, ``ON``:
    YAML would read these otherwise than they show) is refused naming the variable and the fix; ``0x1F`` and
    ``0b101`` are text, as they were before variables were typed."""
    bare = x.strip()
    low = bare.lower()
    if low in ("true", "false"):
        return low == "true"
    if _ENV_INT.fullmatch(bare) or _ENV_FLOAT.fullmatch(bare):
        num: int | float = int(bare) if _ENV_INT.fullmatch(bare) else float(bare)
        if isinstance(num, int) and _no_node_holds(num) is not None:
            # a whole number no numeric node holds stays text, for a String node (a serial number), as quoted
            return str(x)
        if str(num) == x:
            return num
        # 1.50, 1e3, +5, -0, ' 12 ': a String node would get the number's text (1.5, 1000.0, 5, 0, 12), not
        # the variable's: refused, never changed without a word
        text = f"{what}: {{text: '{x.expr}'}}"
        if not math.isfinite(num):
            said, _ = _env_said(x, "")
            raise ValueError(
                f"{said}, which is no finite number (it reads as {num}, which is never written); give "
                f"{x.var} a finite decimal number, or for a String node state it as text: {text}"
            )
        said, fix = _env_said(x, str(num))
        raise ValueError(
            f"{said}, which is not the number's own text ({num}): a write value from a variable is a number only "
            "as written so, lest a String node get other text than the variable holds; "
            f"{fix} for the number, or for a String node state it as text: {text}"
        )
    meant: str | None = None
    if low in ("yes", "on", "y", "no", "off", "n"):
        meant = "true" if low in ("yes", "on", "y") else "false"
    elif re.fullmatch(r"[-+]?0\d+", bare):
        meant = str(int(bare, 10))
        if not set(bare) & {"8", "9"} and int(bare, 8) != int(bare, 10):
            meant += f" (or {int(bare, 8)}, if the octal {bare} is meant)"
    elif not _LOOKS_TYPED.match(bare):
        # text, for a String node: a code such as 0x1F or 0b101 too (as before variables were typed: a String
        # node got it as written; a numeric node refuses it at connect, naming the node)
        return str(x)  # text: a String node gets it as it is
    kind = "a boolean" if low in ("yes", "on", "y", "no", "off", "n") else "a number"
    said, fix = _env_said(x, meant or "")
    if meant is None:
        fix = f"give {x.var} a finite decimal number"
    raise ValueError(
        f"{said}, which is not read as {kind}: a write value from a variable "
        "is a number only in decimal without leading zeros (12, -3, 1.5, 1000.0) and a boolean only as true or "
        f"false; {fix} (text is only for String nodes: for a String node, state it as text: "
        f"{what}: {{text: '{x.expr}'}})"
    )


def _no_node_holds(x: Any) -> str | None:
    """Why no numeric node takes the integer ``x`` (None: one does, or ``x`` is no integer): it is outside
    the widest integer types, Int64 and UInt64, and no REAL or LREAL holds it exactly."""
    if not isinstance(x, int) or isinstance(x, bool) or -(2**63) <= x <= 2**64 - 1:
        return None
    try:
        near = float(x)
    except OverflowError:
        near = math.inf
    if near == x:
        return None  # 2**70: an LREAL holds it exactly
    return (
        f"{_number_named(x)} is held by no integer node (the widest, Int64 and UInt64, hold "
        f"-9223372036854775808..18446744073709551615) and by no REAL or LREAL exactly ("
        + (f"it would arrive as {near:.17g})" if math.isfinite(near) else "past a 64-bit float's range)")
    )


def _number_named(x: int) -> str:
    """How a refusal names a config's whole number: as written (``0x10000000000000000``, a ``ShownInt``'s text),
    else its digits; one too long to quote (more than 80 characters, a pasted key) by its two ends and how many
    digits it has: Python writes no decimal text past ``sys.get_int_max_str_digits`` (4300) digits, and said so in
    its own words ("Exceeds the limit (4300 digits) for integer string conversion") where the number was named."""
    text = x.text if isinstance(x, ShownInt) else _decimal_text(x)
    if text is not None and len(text) <= 80:
        return text
    if text is None:
        return f"too long a number ({_decimal_digits(x)} digits)"
    body = text.lstrip("+-").replace("_", "")
    kind = {"0x": " hex", "0b": " binary"}.get(body[:2], " octal" if body[:1] == "0" else "")
    digits = len(body) - (2 if kind in (" hex", " binary") else 1 if kind else 0)
    return f"too long a number ({config_text(x) or f'{text[:38]}...{text[-38:]}'}: {digits}{kind} digits)"


def _decimal_text(x: int) -> str | None:
    """``str(x)``; None past Python's limit of digits (``sys.get_int_max_str_digits``)."""
    try:
        return str(x)
    except ValueError:
        return None


def _decimal_digits(x: int) -> int:
    """How many decimal digits ``x`` has, without writing them (past Python's limit they cannot be)."""
    n = abs(x)
    d = max(1, int(n.bit_length() * 0.30102999566398120))  # log10(2): one short at most, never over
    while n >= 10**d:
        d += 1
    return d


def _stated_bytes(x: Any) -> bytes:
    """The bytes a mapping states for a ByteString node: ``{base64: 'AAEC'}`` or ``{hex: '00 01 02'}``
    (whitespace between the characters is taken: a folded YAML line)."""
    if not (len(x) == 1 and next(iter(x)) in _BYTE_ENCODINGS and isinstance(next(iter(x.values())), str)):
        raise ValueError(
            f"a mapping states a ByteString's bytes and their encoding, {{base64: 'AAECAw=='}} or "
            f"{{hex: '00010203'}}, or text for a String node, {{text: '010'}} (found {x!r}); a Boolean, number "
            "or text is written as it is"
        )
    kind, text = next(iter(x.items()))
    bare = "".join(text.split())
    try:
        return base64.b64decode(bare, validate=True) if kind == "base64" else bytes.fromhex(bare)
    except (binascii.Error, ValueError) as exc:
        example = "AAECAw==" if kind == "base64" else "00010203"
        # the text is not quoted (not even cut short, reprlib's start...end): it may come from the gateway's
        # environment (a device key), and an agent's check of a fleet config tells this error to the fleet
        digits = string.hexdigits if kind == "hex" else string.ascii_letters + string.digits + "+/="
        bad = next((i for i, c in enumerate(text) if c not in digits and not c.isspace()), None)
        why = f"its character {bad + 1} is not a {kind} digit" if bad is not None else str(exc)
        if bad is None and kind == "hex":
            why = f"an odd number of hex digits, {len(bare)}"
        raise ValueError(
            f"{{{kind}: ...}} ({len(text)} characters) is not {kind} text ({why}); write the bytes in {kind}, "
            f"e.g. {{{kind}: '{example}'}}"
        ) from None


def _stated_time(x: datetime.date | str, what: str) -> str:
    """An ISO 8601 time for a DateTime node (YAML's timestamp, or text that is one) as its ISO text (a
    DateTime node takes it, a String node gets the text); refused when it is a date alone, has no zone (a
    PLC in another time zone would take it as another instant) or lies outside an OPC UA DateTime's range."""
    if isinstance(x, str):
        shown = x.strip()
        try:
            x = datetime.datetime.fromisoformat(shown)
        except ValueError:
            raise ValueError(
                f"{shown!r} looks like an ISO 8601 time but is none (a month or hour out of range?); write {what} "
                "as e.g. 2026-11-30T12:00:00Z"
            ) from None
    elif not isinstance(x, datetime.datetime):
        raise ValueError(
            f"{x.isoformat()} was read by YAML as a date, which no node takes as such; for a DateTime node "
            f"write {what} as a time with its zone: {x.isoformat()}T00:00:00Z"
        )
    else:
        shown = _time_as_written(x)
    if x.tzinfo is None:
        raise ValueError(
            f"{shown} has no zone: a DateTime node (or a PLC in another time zone) would take it as another "
            f"instant; write {what} with Z (UTC) or an offset: {x.isoformat()}Z or {x.isoformat()}+01:00 (text "
            "for a String node too)"
        )
    if (odd := offset_problem(x)) is not None:  # +15:00, +05:30:15: refused at the write, as on MQTT
        raise ValueError(f"{shown}: {odd}; write {what} with Z (UTC) or the zone's offset, e.g. +01:00")
    lo, hi = DATETIME_RANGE
    try:
        utc = x.astimezone(datetime.UTC)
    except OverflowError:
        utc = None
    if utc is None or not lo <= utc <= hi:
        raise ValueError(
            f"{shown} is out of the range of an OPC UA DateTime, 1601-01-01..9999-12-31 (UTC): it would be "
            f"sent as the null time or the maximum; write {what} within it"
        )
    return shown


def _time_as_written(x: datetime.datetime) -> str:
    """A YAML time's text as the config writes it (``2026-11-30T12:00:00Z``, ``2026-11-30 12:00:00.5Z``) when the
    agent's ISO reading of that text (a DateTime node's, a Sparkplug DateTime metric's) gives this very time and
    offset, so that a String node gets the text the file shows; else its ISO text (a form YAML reads but ISO
    does not, ``2026-11-30T12:00:00 +01:00``). Before, every such time reached a String node as its ISO text
    (``2026-11-30T12:00:00+00:00`` for ``...Z``)."""
    text = getattr(x, "text", "").strip()
    try:
        back = datetime.datetime.fromisoformat(text)
    except ValueError:
        return x.isoformat()
    if back != x or back.utcoffset() != x.utcoffset() or back.tzinfo is None:
        return x.isoformat()
    return text


def _time_text_warnings(action: Any) -> list[tuple[str, str]]:
    """(field, warning) for each quoted text of ``value``/``reset_value`` that reads as a date and time but not
    as one a DateTime node takes (no zone, not a real time, out of range): kept as text (``_check_write_value``),
    said at load. None for a Sparkplug command whose datatype says String (text) or DateTime (checked)."""
    if getattr(action, "datatype", None) in ("String", "DateTime"):
        return []
    out = []
    for field in ("value", "reset_value"):
        v = getattr(action, field)
        for x in [] if v is None else v if isinstance(v, list) else [v]:
            if isinstance(x, str) and _ISO_TIME.fullmatch(x):
                try:
                    _stated_time(x, field)
                except ValueError as e:
                    out.append(
                        (
                            field,
                            f"{e}; a String node gets it as this text, a DateTime node refuses it at each write",
                        )
                    )
    return out


def _check_write_value(v: Any, what: str) -> Any:
    """A write value must carry its YAML type: ``"false"`` (a string) would reach a Boolean node as
    TRUE under any loose conversion, so a quoted boolean or number is refused here. So is a value no
    node can take (``.nan``, ``.inf``: never sent to a PLC, whatever its type). Returned with a
    ByteString's stated bytes (``{base64: ...}``, ``{hex: ...}``) decoded, text stated as such (``{text: '010'}``:
    for a String node, however it reads) as that text, and a YAML timestamp as its ISO text, once
    ``_stated_time`` found its zone and range (quoted text is kept as written)."""
    if isinstance(v, set | frozenset):
        # YAML's !!set: a list to the model (pydantic takes a set for a list), in the order of the text's hashes,
        # another at each start: ['L2', 'L3', 'L1'] for {L1, L2, L3} to a String array node
        raise ValueError(
            f"a set (!!set, {len(v)} members) has no order, so an array node would get its members in another "
            f"order at each start; write {what} as a list in the order the node holds them: [a, b, c]"
        )
    if isinstance(v, list) and any(isinstance(x, list) for x in v):
        # said as such: the item check below told of one row, "(found [1, 2])", which read as a wrong number
        raise ValueError(
            f"a matrix (a list of lists) is not supported as a write value; {what} is "
            "one value or a flat list of them (a node of one dimension): write a matrix node's rows through "
            "nodes of their own"
        )
    items = v if isinstance(v, list) else [v]
    out: list[Any] = []
    for i, x in enumerate(items):
        try:
            out.append(_check_one_value(x, f"{what}[{i}]" if isinstance(v, list) else what))
        except ValueError as e:
            if not isinstance(v, list):
                raise
            # the element is named, not the whole field (``_pydantic_errors`` reads the index into the place)
            raise ValueError(f"[{i}]: {e}") from None
    return out if isinstance(v, list) else out[0]


def _check_one_value(x: Any, what: str) -> Any:
    """One write value (or a list's element, ``what`` naming it: ``value[2]``) by ``_check_write_value``'s rules."""
    if isinstance(x, _FromEnv):
        x = _from_env(x, what)
    if isinstance(x, dict):
        # {text: '010'}: text for a String node that YAML or the check below would take for a number or a
        # truth value (a recipe code, an HMI's 'ON'); a node of another type refuses it at connect and write
        stated = x.get("text") if len(x) == 1 else None
        return stated if isinstance(stated, str) else _stated_bytes(x)
    if isinstance(x, datetime.date):
        return _stated_time(x, what)
    # quoted text that reads as a time is kept as written, whatever it holds: a String node takes it as
    # text ('2026-11-30 12:00', '0000-00-00 00:00:00' to clear an HMI field), and a DateTime node refuses a
    # time without a zone at each write, naming the node; what is not a zoned time is a warning at load
    # (``_time_text_warnings``), not an error: such text loaded before the DateTime checks came
    if x is None or not isinstance(x, bool | int | float | str | bytes):  # a list in a list, !!omap's pairs
        raise ValueError(
            f"{what} must be true/false, a number, text (or {{text: ...}}), a time with its zone, "
            f"{{base64: ...}} / {{hex: ...}} bytes or a list of those (found {x!r})"
        )
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(
            f"{config_text(x) or repr(x)} is never written: no node takes NaN or infinity (a PLC's comparisons with NaN are all "
            f"false, so a limit fed it never trips); write {what} as a finite number"
        )
    if isinstance(x, str) and (octal := _OCTAL_1_2.fullmatch(x.strip())):
        # YAML 1.2's octal (0o17, the 15 of a config written for another YAML tool) is text to YAML 1.1,
        # quoted or not: a numeric node refused it only at connect, and a String node got the text '0o17'
        meant = int(octal[1] + octal[2], 8)
        raise ValueError(
            f"{x!r} is text to YAML, not a number (YAML 1.1 reads an octal such as 0o17 as text, quoted or "
            f"not; YAML 1.2 reads it as {meant}): a Boolean or numeric node must never get a string, and a String "
            f"node would get the text {x.strip()!r}; write {what}: {meant} (for a String node, state it as text: "
            f"{what}: {{text: {x.strip()!r}}})"
        )
    if isinstance(x, str) and (upper := _UPPER_PREFIX.fullmatch(x.strip())):
        # 0X1F is text to YAML 1.1 where 0x1F is 31: a String node got the text '0X1F' and a numeric node
        # refused it only at connect, told to write it "without quotes" (it had none)
        lower = f"{upper[1]}0{upper[2].lower()}{upper[3]}"
        number: int | None = None  # None: not digits of that base (0B12), text as any other
        with contextlib.suppress(ValueError):
            number = int(upper[1] + upper[3].replace("_", ""), 16 if upper[2] == "X" else 2)
        if number is not None:
            raise ValueError(
                f"{x!r} is text to YAML, not a number (YAML 1.1 reads a prefix in lower case only, {lower}, "
                f"and {x.strip()} as text, quoted or not; it means {number}): a Boolean or numeric node must "
                f"never get a string, and a String node would get the text {x.strip()!r}; write {what}: "
                f"{number} (for a String node, state it as text: {what}: {{text: {x.strip()!r}}})"
            )
    if isinstance(x, str) and _LOOKS_TYPED.match(x):
        bare = x.strip().lower()
        if re.fullmatch(r"[-+]?\d+", bare) and _no_node_holds(int(bare)) is not None:
            return x  # a whole number no numeric node holds: text, for a String node (a serial number)
        words = {
            "true": "true",
            "yes": "true",
            "on": "true",
            "y": "true",
            "false": "false",
            "no": "false",
            "off": "false",
            "n": "false",
        }
        kind = "a boolean" if bare in words else "a number"
        shown = words.get(bare, x.strip())
        if bare in ("y", "n"):
            # YAML 1.1 names y and n as booleans, PyYAML reads them as text, quoted or not: "without quotes"
            # was said of a value that had none
            raise ValueError(
                f"{x!r} is text to YAML, not a boolean (YAML 1.1 reads y and n as text, quoted or not): a "
                f"Boolean or numeric node must never get a string; write {what}: {shown} (text is only for "
                f"String nodes: for a String node, state it as text: {what}: {{text: {x!r}}})"
            )
        if bare not in words:
            # the number as written, in decimal, in a form YAML 1.1 reads back as that number
            n = float(bare) if re.search(r"[.eEnN]", bare) else int(bare, 10)
            shown = yaml.safe_dump(n).split("\n")[0]
            if isinstance(n, float) and (exact := _exact_shown(x.strip(), n)) is not None:
                shown = exact  # '9.007199254740993e+15' is 9007199254740993, never the float's ...992.0
            if not isinstance(yaml.safe_load(x.strip()), int | float):
                # a form YAML 1.1 reads as text even unquoted (1e3: no point; 08: no octal): say the
                # form it reads as a number, not "without quotes" (it had none)
                raise ValueError(
                    f"{x!r} is text to YAML, not a number (YAML 1.1 reads a number such as 1e3 or 08 as "
                    "text, quoted or not): a Boolean or numeric node must never get a string; "
                    + (
                        f"write {what}: {shown}"
                        if math.isfinite(n)
                        else "no node takes NaN or infinity; write a finite number"
                        if "n" in bare
                        else "it is out of range of a 64-bit float; write a finite number"
                    )
                )
        raise ValueError(
            f"{x!r} is quoted text, not {kind}: a Boolean or numeric node must never get a "
            f"string; write {what}: {shown} without quotes "
            f"(text is only for String nodes: for a String node, state it as text: {what}: {{text: {x!r}}})"
        )
    return x


def _exact_shown(text: str, n: float) -> str | None:
    """The number a quoted ``text`` shows, unquoted, when its float ``n`` is another number: the text itself when
    the loader keeps that text's number unquoted (``'9.007199254740993e+15'``: a ``WholeFloat``, so an Int64 node
    gets 9007199254740993 and a Double node the float it rounds to; ``'9007199254740992.5'``: a ``FractionFloat``,
    refused by an integer node as 2.5 is), else the whole number's digits (``'9007199254740993.0'``, which YAML
    refuses with a point: an integer node's number), else its exact decimal digits. None when ``n`` is the
    number. The digits were hinted for an exponent's whole number too: right for an Int64 node, but a Double node
    refuses 9007199254740993 at every write (no double holds it), and past 2**64 (``'1.8446744073709551617e+19'``)
    no node holds the digits: refused at load."""
    try:
        written = decimal.Decimal(text.replace("_", ""))
    except decimal.InvalidOperation:
        return None
    if not written.is_finite() or not math.isfinite(n) or written == decimal.Decimal(n):
        return None
    if _exact_float(text) is not None:
        return text
    if written == written.to_integral_value():
        return str(int(written))
    return format(written, "f")


class OutputAction(_Action):
    """An output a PLC reads: a value while the condition holds, with level / on_change / pulse semantics."""

    value: _WRITTEN | list[_WRITTEN] = Field(
        True,
        description="written while the condition holds (YAML type kept; a ByteString's bytes as {base64: ...} "
        "or {hex: ...}, text that reads as a number or true/false as {text: '010'}, a DateTime as an ISO 8601 "
        "time with its zone, checked at load)",
    )
    mode: WriteMode = WriteMode.LEVEL
    reset_value: _WRITTEN | list[_WRITTEN] | None = Field(
        None,
        description="written when the condition stops holding (pulse: after pulse_ms); default for "
        "on_change and pulse with a boolean value: its opposite; level: none (nothing written)",
    )
    pulse_ms: int = Field(500, ge=10, le=3_600_000, description="pulse mode: how long value is held")

    @field_validator("value", "reset_value", mode="before")
    @classmethod
    def _typed(cls, v: Any, info) -> Any:
        return v if v is None and info.field_name == "reset_value" else _check_write_value(v, info.field_name)

    @model_validator(mode="after")
    def _some_node_holds(self) -> OutputAction:
        # after the fields: only an action whose target is known to be text (a Sparkplug String metric)
        # may carry a whole number no numeric node holds; an OPC UA node's type is known only online
        if getattr(self, "datatype", None) == "String":
            return self
        for field in ("value", "reset_value"):
            v = getattr(self, field)
            for i, x in enumerate(v) if isinstance(v, list) else [(None, v)]:
                if (why := _no_node_holds(x)) is not None:
                    at = (
                        field if i is None else f"{field}[{i}]"
                    )  # a list's element named, not the whole field
                    quoted = number_as_written(x) if isinstance(x, ShownInt) else _decimal_text(x)
                    raise ValueError(
                        f"{at}: {why}; if it is text for a String node (a serial number), quote it"
                        + (f": {at}: '{quoted}'" if quoted is not None and len(quoted) <= 80 else "")
                    )
        return self

    def cross_check(self, name: str, cfg: AgentConfig, report: Findings) -> None:
        for field, why in _time_text_warnings(self):
            report.warning(f"actions.{name}.{field}", why)

    @model_validator(mode="after")
    def _pulse_resets(self) -> OutputAction:
        if self.mode is WriteMode.PULSE and self.reset is None:
            raise ValueError(
                f"mode pulse with a non-boolean value ({self.value!r}) needs reset_value, "
                "the value written when the pulse ends"
            )
        return self

    @property
    def reset(self) -> Any:
        if self.reset_value is not None:
            return self.reset_value
        return (not self.value) if isinstance(self.value, bool) else None


class OpcUaWriteAction(OutputAction):
    source_fields: ClassVar[dict[str, str]] = {"source": "opcua"}
    type: Literal["opcua_write"]
    source: str = Field(description="an opcua source whose server receives the write")
    node_id: str = Field(min_length=3, description="e.g. 'ns=2;s=Line1.Reject' or 'nsu=urn:plc;i=1001'")

    _node_id_ok = field_validator("node_id")(node_id_checked)

    @model_validator(mode="after")
    def _text_a_plc_takes(self) -> OpcUaWriteAction:
        # text no node takes (a NUL, another control character, a lone surrogate): refused at every write
        from devices.base import text_problem

        for field in ("value", "reset_value"):
            v = getattr(self, field)
            for i, x in [] if v is None else enumerate(v) if isinstance(v, list) else [(None, v)]:
                if isinstance(x, str) and (why := text_problem(x)) is not None:
                    at = field if i is None else f"{field}[{i}]"
                    raise ValueError(f"{at}: node {self.node_id}: cannot write {x!r}: {why}")
        return self

    def cross_check(self, name: str, cfg: AgentConfig, report: Findings) -> None:
        super().cross_check(name, cfg, report)
        if (said := _passes_unjudged_said(name, self, cfg)) is not None:
            report.warning(f"actions.{name}.when", said)
        if (said := _heartbeat_node_said(self.source, self.node_id, cfg)) is not None:
            report.warning(f"actions.{name}.node_id", said)
        if (said := _implied_pass_said(name, self, cfg)) is not None:
            report.warning(f"actions.{name}.mode", said)

    # ``value: []`` loads without a word: written on purpose it clears a variable-length array node; a node that
    # cannot take it (a single value, a fixed-length array, a BaseDataType one holding a single value) is named
    # by the source's check at connect (``target_errors``, a ``write_failing`` event), by ``validate --online``,
    # and refused at each write. A warning at load said it at every start of a config that was right.

    def write_targets(self) -> list[tuple[str, str, str, Any]]:
        out = [(self.source, "value", self.node_id, self.value)]
        if self.reset is not None:
            out.append((self.source, "reset_value", self.node_id, self.reset))
        return out


def _heartbeat_node_said(source: str, node_id: str, cfg: AgentConfig) -> str | None:
    """Why an OPC UA output written to the node a heartbeat of its PLC writes (any source on its endpoint; the node
    however spelt: ``devices.opcua.settings.node_classes``) is wrong: the heartbeat toggles or counts it every
    period, so a PLC program reading it as this output reads a value no part gave, and its watchdog takes this
    output's writes as beats. None otherwise. A warning: such a config loaded before."""
    from devices.opcua.settings import node_classes, plc_of

    sources = cfg.sources or {}
    src = sources.get(source)
    if src is None or getattr(src, "type", None) != "opcua":
        return None
    plc = plc_of(src.endpoint)
    beats = {
        n: s.heartbeat.node_id
        for n, s in sources.items()
        if getattr(s, "type", None) == "opcua" and s.heartbeat is not None and plc_of(s.endpoint) == plc
    }
    if not beats:
        return None
    nodes = node_classes([node_id, *beats.values()])
    beat = next((n for n, b in sorted(beats.items()) if nodes[b] == nodes[node_id]), None)
    if beat is None:
        return None
    return (
        f"node {node_id} is the watchdog heartbeat of source {beat} on that PLC ({beats[beat]}), written every "
        "period_ms: a PLC program reading it as this output reads the heartbeat's values for its parts, and the "
        "PLC's watchdog takes this output's writes as beats; give the output a node of its own"
    )


def _implied_pass_said(name: str, action: OpcUaWriteAction, cfg: AgentConfig) -> str | None:
    """Why an output on UNSURE parts writing ``false`` in mode ``on_change`` or ``pulse``, no ``reset_value``, on the
    node of a pass signal (an output on OK parts and on no NG part: ``conditions.pass_signal``; on the same PLC, the
    node however spelt in one namespace) passes parts: its reset, implied, is ``true`` (a boolean value's opposite),
    written for every part it does not act on, an NG part too (``on_change``), or ``pulse_ms`` after the UNSURE part
    (``pulse``); the PLC read ``true`` on the pass node for them. None otherwise. A warning: such a config loaded
    before; an UNSURE part already resets the pipeline's pass signals, and ``mode: level`` writes ``false`` alone."""
    import json

    from devices.opcua.settings import node_key, plc_of
    from edge_agent.conditions import pass_signal

    if (
        action.value is not False
        or action.reset_value is not None
        or action.mode is WriteMode.LEVEL
        or "UNSURE" not in json.dumps(action.when or {})
    ):
        return None
    sources, actions = cfg.sources or {}, cfg.actions or {}

    def node_of(a: OpcUaWriteAction) -> tuple:
        src = sources.get(a.source)
        plc = plc_of(src.endpoint) if src is not None and src.type == "opcua" else ("source", a.source)
        return plc, node_key(a.node_id)

    mine = node_of(action)
    passes = sorted(
        n
        for p in cfg.pipelines or []
        for n in p.actions
        if n != name
        and isinstance(a := actions.get(n), OpcUaWriteAction)
        and a.when is not None
        and pass_signal(a.when, p.name, p.source) is not None
        and node_of(a) == mine
    )
    if not passes:
        return None
    when = (
        "for every part it does not act on, an NG part too"
        if action.mode is WriteMode.ON_CHANGE
        else f"{action.pulse_ms} ms after each part it acts on, an UNSURE part too"
    )
    return (
        f"writes false in mode {action.mode.value} and, no reset_value given, its opposite true as its reset {when}: "
        f"node {action.node_id} is pass signal {passes[0]}'s, so the PLC reads such a part passed. An UNSURE part "
        "already resets the pipeline's pass signals (false); to write false on UNSURE parts and nothing else, "
        "write mode: level"
    )


def _passes_unjudged_said(name: str, action: OpcUaWriteAction, cfg: AgentConfig) -> str | None:
    """Why an OPC UA output beside a heartbeat (a source of its PLC writing the watchdog) passes a part the model
    did not judge: its condition acts on OK parts, on no NG part, and also on UNSURE ones (``ne: NG``, ``not:
    {verdict: NG}``, ``in: [OK, UNSURE]``), so the PLC reads its value, a pass, for a part no model judged while the
    watchdog may be fed (a reject gate on NG and UNSURE beside it lets the heartbeat run). None otherwise."""
    from devices.opcua.settings import plc_of
    from edge_agent.conditions import passes_unjudged

    sources = cfg.sources or {}
    src = sources.get(action.source)
    if action.when is None or src is None or getattr(src, "type", None) != "opcua":
        return None
    plc = plc_of(src.endpoint)
    beats = sorted(
        n
        for n, s in sources.items()
        if getattr(s, "type", None) == "opcua" and s.heartbeat is not None and plc_of(s.endpoint) == plc
    )
    if not beats or not any(
        passes_unjudged(action.when, p.name, p.source) for p in cfg.pipelines or [] if name in p.actions
    ):
        return None
    return (
        "acts on OK parts and on UNSURE ones, among them a part no model judged (its slot with no model, the model "
        f"failed on it): the PLC reads on {action.node_id} this action's value, a pass, for such a part as for an OK "
        f"part, the watchdog heartbeat of source {beats[0]} on that PLC running where another action tells (a "
        "reject gate on NG and UNSURE); a PLC program reading this node alone passes a part nobody judged. To pass "
        "judged OK parts only, "
        "write when: {verdict: OK} (with mode on_change, or a reset_value, a part not judged writes its reset, as "
        "an NG part)"
    )


class SparkplugDatatype(enum.StrEnum):
    BOOLEAN = "Boolean"
    INT8 = "Int8"
    INT16 = "Int16"
    INT32 = "Int32"
    INT64 = "Int64"
    UINT8 = "UInt8"
    UINT16 = "UInt16"
    UINT32 = "UInt32"
    UINT64 = "UInt64"
    FLOAT = "Float"
    DOUBLE = "Double"
    STRING = "String"
    DATETIME = "DateTime"


def _sparkplug_values(action: SparkplugCommandAction) -> None:
    """With a ``datatype``, each value the YAML fixes must fit it, as the command itself converts it
    (``sparkplug_host.command_value``, the one check of a command's value): ``300`` for an ``Int8``/``UInt8``
    metric, ``-1`` for an unsigned one, ``1.5`` for an integer one, text for a Boolean one, ``1e39`` for a Float
    one is refused here, naming the field, not at every result. A ``DateTime`` metric takes a time: ISO 8601 text
    with its zone, or whole epoch milliseconds, from 1970 to the year 9999 (``sparkplug.datetime_ms``). Without
    a datatype the node's birth types the command, and its value is checked against it at send time; text that
    no datatype takes (a NUL or another control character but tab, line feed and carriage return; a lone
    surrogate) is refused here all the same."""
    from protocols import sparkplug as sp
    from protocols.json_codec import CodecError

    for field in ("value", "reset_value"):
        v = getattr(action, field)
        for x in [] if v is None else v if isinstance(v, list) else [v]:
            if action.datatype is None:
                if isinstance(x, str):  # text no datatype takes (a NUL, a lone surrogate): sent as none
                    from devices.base import text_problem

                    if (why := text_problem(x)) is not None:
                        raise ValueError(f"{field}: metric {action.target}: cannot send {x!r}: {why}")
                continue
            dt = sp.DataType[action.datatype.name]
            if dt is sp.DataType.DATETIME:
                try:
                    sp.datetime_ms(x)
                except CodecError as e:
                    # a config's 1.50 is named as written, not as 1.5
                    detail = named_as_written(e.detail, x)
                    raise ValueError(f"{field}: a DateTime metric takes a time; {detail}") from None
                continue
            from devices.mqtt.sparkplug_host import command_value

            try:
                command_value(dt, x, action.target)
            except ValueError as e:
                raise ValueError(f"{field}: {e}") from None


class SparkplugCommandAction(OutputAction):
    """Write-back to a Sparkplug B edge node: an NCMD (node metric) or DCMD (device metric)."""

    source_fields: ClassVar[dict[str, str]] = {"source": "mqtt"}
    type: Literal["sparkplug_command"]
    source: str = Field(description="an mqtt source acting as the Sparkplug host")
    group: TopicLevel = Field(min_length=1)
    edge_node: TopicLevel = Field(min_length=1)
    device: TopicLevel | None = Field(None, min_length=1, description="absent: an NCMD to the node itself")
    metric: str = Field(min_length=1, description="the metric name as the node's birth lists it")
    datatype: SparkplugDatatype | None = Field(
        None, description="default: the metric's type in the node's birth"
    )

    @model_validator(mode="after")
    def _sparkplug_kinds(self) -> SparkplugCommandAction:
        for field in ("value", "reset_value"):
            v = getattr(self, field)
            if isinstance(v, list):  # it would fail at every result, retried in vain
                raise ValueError(
                    f"{field}: a Sparkplug command carries one value (true/false, a number, text or a time), "
                    "not a list: Sparkplug array metrics are not written"
                )
            if isinstance(v, bytes):
                raise ValueError(
                    f"{field}: a Sparkplug command carries true/false, a number or text; bytes "
                    "({base64: ...}, {hex: ...}) are written to OPC UA ByteString nodes only"
                )
        _sparkplug_values(self)  # the other checks of the values: OutputAction's
        return self

    @property
    def target(self) -> str:
        return "/".join(x for x in (self.group, self.edge_node, self.device, self.metric) if x)


class AlarmAction(_Action):
    source_fields: ClassVar[dict[str, str]] = {"publish_to": "mqtt", "opcua_source": "opcua"}
    type: Literal["alarm"]
    raise_after: int = Field(3, ge=1, description="consecutive matching results to raise")
    clear_after: int = Field(5, ge=1, description="consecutive non-matching results to clear")
    publish_to: str | None = Field(None, description="an mqtt source: alarm events go to .../alarms/<name>")
    node_id: str | None = Field(None, description="an OPC UA node set true/false with the alarm")
    opcua_source: str | None = None

    def problems(self) -> list[tuple[str, str]]:
        if (self.node_id is None) != (self.opcua_source is None):
            return [("", "give both node_id and opcua_source to mirror the alarm on an OPC UA node")]
        return []

    def write_targets(self) -> list[tuple[str, str, str, Any]]:
        return (
            [(self.opcua_source, "node_id", self.node_id, True)] if self.node_id and self.opcua_source else []
        )

    def cross_check(self, name: str, cfg: AgentConfig, report: Findings) -> None:
        if self.node_id and self.opcua_source:
            if (said := _heartbeat_node_said(self.opcua_source, self.node_id, cfg)) is not None:
                report.warning(f"actions.{name}.node_id", said)
        if self.publish_to is None:
            return
        if (w := _subscribing_publisher_warning(cfg, self.publish_to)) is not None:
            report.warning(f"actions.{name}.publish_to", w)
        try:  # the alarm's name is the last level of its topic: .../alarms/<name>
            _topic_level(name)
        except ValueError as exc:
            report.error(
                f"actions.{name}", f"this alarm is published to .../alarms/{name}: its name {exc}; rename it"
            )


class SaveSampleAction(_Action):
    type: Literal["save_sample"]
    dir: str | None = Field(None, description="default: <data_dir>/samples")
    max_per_hour: int = Field(600, ge=1)
    max_samples: int = Field(
        10_000,
        ge=1,
        description="samples kept in dir (each an image or window and its .json); oldest removed",
    )
    max_bytes: int = Field(
        1024**3, ge=1024**2, description="bytes the samples in dir may take; the oldest are removed past it"
    )

    def cross_check(self, name: str, cfg: AgentConfig, report: Findings) -> None:
        for i, r in enumerate(cfg.rules):  # a rule's result has no model input to save
            for j, a in enumerate(r.actions if r is not None else ()):
                if a == name:
                    report.error(
                        f"rules[{i}].actions[{j}]", f"{a!r} saves model inputs; a rule has none, remove it"
                    )


# The action table: type -> (settings "module:Class", implementation "module:function"), imported
# lazily like devices.SOURCE_TYPES (edge_agent.action_base says what each must be). A new action is
# one module plus one row here: the config's union of actions is built from this table.
ACTION_PLUGINS: dict[str, tuple[str, str]] = {
    "mqtt_publish": ("edge_agent.config:MqttPublishAction", "edge_agent.actions:publish_result"),
    "opcua_write": ("edge_agent.config:OpcUaWriteAction", "edge_agent.actions:write_opcua"),
    "sparkplug_command": (
        "edge_agent.config:SparkplugCommandAction",
        "edge_agent.actions:send_sparkplug_command",
    ),
    "alarm": ("edge_agent.config:AlarmAction", "edge_agent.actions:signal_alarm"),
    "save_sample": ("edge_agent.config:SaveSampleAction", "edge_agent.actions:save_sample"),
    "log": ("edge_agent.log_action:LogAction", "edge_agent.log_action:act"),
}
# type key -> settings class; each action is validated against its own class, so that an option
# typo gets the did-you-mean of its own action type
ACTION_TYPES: dict[str, type[ActionSettings]] = {k: load_object(v[0]) for k, v in ACTION_PLUGINS.items()}
if TYPE_CHECKING:  # the union is built from the table at import time, which mypy cannot follow
    Action = ActionSettings
else:
    Action = Annotated[Union[tuple(ACTION_TYPES.values())], Field(discriminator="type")]  # noqa: UP007
# The same for sources, from devices.SOURCE_TYPES: type key -> settings class, and their union
SOURCE_SETTINGS: dict[str, type[BaseModel]] = {k: load_object(v[0]) for k, v in SOURCE_TYPES.items()}
if TYPE_CHECKING:  # each source's settings class (in devices/): read through its own attributes
    Source = Any
else:
    Source = Annotated[Union[tuple(SOURCE_SETTINGS.values())], Field(discriminator="type")]  # noqa: UP007
# the sections whose entries pick their settings class by `type`, with the noun their errors use
_TAGGED: dict[str, tuple[Mapping[str, type[BaseModel]], str]] = {
    "sources": (SOURCE_SETTINGS, "source type"),
    "actions": (ACTION_TYPES, "type"),
}


class ForwardSettings(_Model):
    """Readings forwarded as they are, without a model: to an MQTT broker and/or the cloud outbox."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    source: str
    tags: list[str] = Field(
        default_factory=list, description="empty: every scalar tag (arrays only when named)"
    )
    to: str | None = Field(None, description="an mqtt source to publish through")
    topic: PublishTopic | None = Field(
        None, description="default: factory/<site>/<line>/<agent>/tags/<name>; published as written"
    )
    qos: Literal[0, 1] = 0
    outbox: bool = Field(
        False, description="also queue each forwarded reading for the cloud (kind telemetry)"
    )
    deadband: float = Field(
        0.0,
        ge=0,
        description="a number is forwarded when it moved more than this (or its quality changed); 0: every reading",
    )
    min_interval_ms: int = Field(
        0,
        ge=0,
        description="at most one reading per tag this often (a change of quality passes); 0: no limit",
    )

    @model_validator(mode="after")
    def _somewhere(self) -> ForwardSettings:
        if self.to is None and not self.outbox:
            raise ValueError("forward needs a destination: to: <an mqtt source>, or outbox: true")
        return self


def band_edge(threshold: int | float, by: float) -> int | float:
    """A rule's threshold moved by a hysteresis band (``by``: +- hysteresis), a whole threshold by a whole band as an
    integer: as a float64, 2**53 + 1 - 0.0 was 2**53 (``RuleSettings`` checks its bands so, ``tags.Rule`` judges)."""
    if by == 0:
        return threshold
    if isinstance(threshold, int) and by.is_integer():
        return threshold + int(by)
    return threshold + by


def _g(x: int | float) -> str:
    """A threshold as written: a whole number with every digit (``:g`` wrote 2**53 + 1 as 9.0072e+15)."""
    return str(x) if isinstance(x, int) else f"{x:g}"


class RuleSettings(_Model):
    """A rule on one plain tag: scaled, compared with a threshold (with hysteresis), and acted on with
    the same actions as a model's result (verdict NG while the rule is active, score = scaled value)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    source: str
    tag: str
    # finite (allow_inf_nan): an infinity or NaN, or a text past float64's range ("1e400") read as an infinity, made
    # every value NaN or infinite (a rule that never trips) or a band that never clears, taken unsaid
    scale: float = Field(1.0, allow_inf_nan=False, description="value = reading * scale + offset")
    offset: float = Field(0.0, allow_inf_nan=False)
    # a whole number stays one (int before float): an Int64 counter's threshold past 2**53 is kept exact
    above: int | float | None = Field(None, description="active when value > above")
    below: int | float | None = Field(None, description="active when value < below")
    hysteresis: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="clears only past the threshold by this much"
    )
    actions: list[str] = Field(default_factory=list)

    @field_validator("above", "below", mode="before")
    @classmethod
    def _number(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, str):  # quoted, or a ${VAR} substitution: a number written as text is the number
            try:
                v = text_number(v)
            except OverflowError:
                # "1e400", or a whole number of more digits than int() converts (4,300) and a fraction: read as an
                # infinity, it was taken, a rule that never trips (below: every value trips it)
                raise ValueError(
                    f"{info.field_name}: {shown_text(v)} is past float64's range, which no reading reaches"
                ) from None
            except ValueError:
                pass  # not a number: said as such below
        if isinstance(v, float) and math.isnan(v):
            # no reading is above or below NaN: a rule that never trips, unsaid
            raise ValueError(
                f"{info.field_name}: NaN is neither above nor below any value: this rule would never trip"
            )
        return v

    @model_validator(mode="after")
    def _threshold(self) -> RuleSettings:
        if self.above is None and self.below is None:
            raise ValueError("a rule needs a threshold: above: <value> and/or below: <value>")
        for side, t in (("above", self.above), ("below", self.below)):
            if isinstance(t, int) and not -sys.float_info.max <= t <= sys.float_info.max:
                # said without its digits: counting them raised ValueError on an int of more than 4,300 (a YAML
                # hex literal's), whose message then was Python's own
                raise ValueError(f"{side}: a whole number past float64's range, which no reading reaches")
        if (
            self.above is not None
            and self.below is not None
            and band_edge(self.below, self.hysteresis) >= band_edge(self.above, -self.hysteresis)
        ):
            # the release bands would overlap: a value could hold the rule by one side's band while
            # tripping it by the other's, and above <= below would make it active whatever the value
            if self.above <= self.below:
                raise ValueError(
                    f"above: {_g(self.above)} must be greater than below: {_g(self.below)} (a value over "
                    "above or under below trips the rule: with above <= below every value does)"
                )
            raise ValueError(
                f"hysteresis: {self.hysteresis:g} is too wide for below: {_g(self.below)} and above: "
                f"{_g(self.above)} (below + hysteresis must stay under above - hysteresis, or the rule "
                "could never clear); use hysteresis under "
                f"{(self.above - self.below) / 2:g}, or thresholds further apart"
            )
        return self


class AgentConfig(_Model):
    agent: AgentSection
    trusted_keys: list[str] = Field(default_factory=list, description="public keys (.pub) or folders of them")
    sources: dict[str, Source] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    pipelines: list[PipelineSettings] = Field(default_factory=list)
    actions: dict[str, Action] = Field(default_factory=dict)
    forward: list[ForwardSettings] = Field(default_factory=list, description="tags forwarded without a model")
    rules: list[RuleSettings] = Field(default_factory=list, description="thresholds on plain tags -> actions")
    http: HttpSettings = HttpSettings()
    outbox: OutboxSettings | None = Field(None, description="durable outbox; on by default when cloud is set")
    upload: SampleSelectionSettings | None = Field(None, description="which inputs are uploaded as samples")
    cloud: CloudSettings | None = Field(
        None, description="the fleet service (uplink, heartbeats, model delivery)"
    )
    log_json: bool = False
    base_dir: str = Field(".", description="set by load_config: the config file's folder")
    _warnings: list[str] = PrivateAttr(default_factory=list)
    _env_values: dict[str, str] = PrivateAttr(default_factory=dict)
    # write values (``actions.<name>.value``, ``...reset_value[2]``) given wholly by a gateway variable, as the
    # variable gave them, and the config's file: a refusal at the PLC names them (``write_value_note``)
    _write_vars: dict[str, _FromEnv] = PrivateAttr(default_factory=dict)
    _where: str = PrivateAttr("<config>")

    @property
    def warnings(self) -> list[str]:
        """What validation could not be sure of (e.g. a tag against a browse name guessed offline)."""
        return self._warnings

    @property
    def env_values(self) -> dict[str, str]:
        """The gateway variables (``${VAR}``) this config took and their values (``env_taken``): what the agent's
        texts for the cloud never carry (``edge_agent.cloud_text``)."""
        return self._env_values

    @property
    def where(self) -> str:
        """The config's file as its errors name it (``<config>`` for one given as a mapping)."""
        return self._where

    def path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else Path(self.base_dir) / q

    @property
    def data_dir(self) -> Path:
        return self.path(self.agent.data_dir)

    def source_type(self, name: str) -> str | None:
        s = self.sources.get(name)
        return getattr(s, "type", None)


# ---- loading ------------------------------------------------------------------------------------

# ${VAR}, ${VAR:-default} (unset or empty), ${VAR-default} (unset only: an empty value kept on purpose)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-(.*?))?\}")


def _substitute(
    node: Any,
    loc: str,
    errors: list[str],
    env: Mapping[str, str] = os.environ,
    unset: dict[str, str] | None = None,
    taken: dict[str, str] | None = None,
) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string of ``node`` from ``env`` (the agent's environment; none at all
    for the cloud's check of a fleet config, which must never read the platform's own variables: see
    ``parse_config``); ``unset`` gets each place (``sources.b.port``) whose variable is not set, and its name;
    ``taken`` each place given a value from ``env``, and the variable's name."""
    if isinstance(node, dict):
        return {
            k: _substitute(v, f"{loc}.{k}" if loc else str(k), errors, env, unset, taken)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_substitute(v, f"{loc}[{i}]", errors, env, unset, taken) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        defaulted = False

        def repl(m: re.Match) -> str:
            nonlocal defaulted
            val = env.get(m.group(1))
            if m.group(3) is not None and (val is None or (m.group(2) and not val)):
                defaulted = True
                # ${VAR:-default} takes its default when VAR is unset or empty, as a shell (and Compose) reads it:
                # an agent.env line left blank (PLC_HOST=) gave an empty host instead, which validated
                # (opc.tcp://:4840, an MQTT host ''), or a refusal of its port (found '') naming no variable.
                # ${VAR-default} only when unset: MQTT_USER= for anonymous, PREFIX= for none (it was kept as
                # the literal text '${VAR-default}')
                val = m.group(3)
            elif taken is not None and val is not None:
                taken.setdefault(loc, m.group(1))
            if val is None:
                if unset is not None:
                    unset.setdefault(loc, m.group(1))
                errors.append(
                    f"{loc}: environment variable {m.group(1)} is not set "
                    f"(write ${{{m.group(1)}:-default}} to give a default)"
                )
                return ""
            if any(0xDC80 <= ord(c) <= 0xDCFF for c in val):
                # bytes that are not UTF-8 (an environment file saved in a code page: Latin-1's 0xFC for 'ü'),
                # which Python hands over as lone surrogates: most fields refused them without saying why ("unable
                # to parse raw data as a unicode string"), some took them (agent.data_dir: validated, then ONNX
                # Runtime could not load the model from it, "incompatible constructor arguments"; an MQTT username)
                # the value is not quoted: it may be a password (an agent's check of a fleet config tells this
                # error to the fleet); the variable and the first such byte's place say where to look
                at = next(i for i, c in enumerate(val) if 0xDC80 <= ord(c) <= 0xDCFF)
                errors.append(
                    f"{loc}: environment variable {m.group(1)} holds a byte that is not UTF-8 "
                    f"(0x{ord(val[at]) - 0xDC00:02x}, its character {at + 1} of {len(val)}); set it in UTF-8 (an "
                    "environment file saved in another code page?)"
                )
                return undecoded_bytes(
                    val
                )  # refused all the same: said once, not again by the field's own check
            return val

        before = len(errors)
        out = _ENV.sub(repl, node)
        whole = _ENV.fullmatch(node)
        if whole and type(out) is str and len(errors) == before and _WRITE_VALUE_PLACE.fullmatch(loc):
            # a write value wholly from a variable: ``_from_env`` types it
            return _FromEnv(out, whole.group(1), defaulted, node)
        return out
    return node


def env_taken(node: Any, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables ``${VAR}`` in ``node``'s strings that ``env`` sets: name -> its value (what a config takes
    from the gateway's environment)."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for v in node.values():
            found.update(env_taken(v, env))
    elif isinstance(node, list):
        for v in node:
            found.update(env_taken(v, env))
    elif isinstance(node, str) and "${" in node:
        for m in _ENV.finditer(node):
            if m.group(1) in env:
                found[m.group(1)] = env[m.group(1)]
    return found


def _value_forms(value: str) -> set[str]:
    """Every form a gateway variable's value can be printed in: as written, quoted (``repr``, JSON), escaped
    (``printable``), a byte that is not UTF-8 written ``\\xfc`` (``undecoded_bytes``, what ``_substitute`` gives
    such a field), those quoted again, and its UTF-8 bytes' repr."""
    import json

    forms = set()
    for base in {value, undecoded_bytes(value)}:
        for form in (base, repr(base)[1:-1], printable(base, len(base)), json.dumps(base)[1:-1]):
            forms.add(form)
            forms.add(repr(form)[1:-1])
    with contextlib.suppress(UnicodeEncodeError):  # its bytes' repr (b'M\\xc3\\xbcller'): a login's bytes
        forms.add(repr(value.encode("utf-8", "surrogateescape"))[2:-1])
    return {f for f in forms if f}


# where a value is cut short: printable's and one_line's mark, _short_repr's and shown_topic's ('...'... (N
# characters)), reprlib's and pydantic's middle cut ('start...end'): a value's start may stand just before the mark
# (the quote's closing ' or " before it skipped: repr quotes a value holding ' and no " with "), its end just after
# it
_CUT = re.compile(r"""['"]?(?:…|\.\.\.)""")
# the field path after a refusal's "WHERE: " (``sources.b.port``, ``pipelines[0].source``): written in the config,
# never a variable's value, so never rewritten (a value "line" made "pipe<$GW_SITE>s[0]")
_PATH = re.compile(r"[A-Za-z0-9_.\[\]\-]+: ")
FLEET_ERRORS = (
    5  # the errors of a refused fleet config told to the fleet (``hide_env``: the others are not kept)
)
HIDE_ANYWHERE = 8  # a value of at least so many characters is hidden wherever it occurs in a message


def env_hider(values: Mapping[str, str]) -> Callable[..., str]:
    """``hide(text, where=None)``: ``text`` with every value of ``values`` (name -> a gateway variable's value:
    ``env_taken``) shown as ``<$NAME>``, in the forms it is printed in (``_value_forms``): what a fleet config's
    refusal sends to the cloud names the field and the variable, never the value it took on this gateway (a token, a
    password in a field not named so). A value of ``HIDE_ANYWHERE`` characters or more wherever it occurs; a shorter
    one only where it stands alone (not inside a word or number), and one under 4 characters only quoted whole
    (``'1'``). A value of 4 characters or more is hidden around a cut's mark too (``_CUT``: ``…``, ``...``): the
    longest start of any value's form (4 characters or more, searched over the form's whole length: a cutter keeps
    200 characters of a value, longer once quoted when they hold escapes) just before it, the longest end just after
    it (a middle cut, ``'start...end'``). With ``where``, each error's field path after ``WHERE: `` (written
    in the config, not taken from the environment) is left as written but for a value of ``HIDE_ANYWHERE``
    characters or more. The patterns are built once here (a refusal hides several texts with the same values)."""
    forms: list[tuple[str, str, int]] = []
    for name, value in values.items():
        for form in _value_forms(value):
            forms.append((form, name, len(value)))
    forms.sort(key=lambda f: -len(f[0]))
    # a long value's forms are replaced as they are (str.replace: a regex of a 4 KB certificate's form took ~7 ms
    # to compile, 40 of them ~1.5 s); a short one's need the look-arounds
    patterns: list[tuple[re.Pattern[str] | str, str]] = []
    for form, name, size in forms:
        if size >= HIDE_ANYWHERE:
            patterns.append((form, f"<${name}>"))
            continue
        if size >= 4:
            pattern = rf"(?<![A-Za-z0-9_]){re.escape(form)}(?![A-Za-z0-9_])"
        else:
            pattern = rf"(?<=(?P<q>['\"])){re.escape(form)}(?=(?P=q))"
        # a name is letters, digits and _: no escapes
        patterns.append((re.compile(pattern), f"<${name}>"))
    cut = [(form, name) for form, name, size in forms if size >= 4 and len(form) > 4]

    def start_before(message: str, at: int) -> tuple[int, str]:
        """The longest start of a form (4+ characters, not the whole form) ending at ``at``: (its length, name)."""
        best = (0, "")
        for form, name in cut:
            head, lo = form[:4], max(0, at - (len(form) - 1))
            s = message.find(head, lo, at)
            while s != -1 and at - s > best[0]:
                if form.startswith(message[s:at]):
                    best = (at - s, name)
                    break
                s = message.find(head, s + 1, at)
        return best

    def end_after(message: str, at: int) -> tuple[int, str]:
        """The longest end of a form (4+ characters, not the whole form) starting at ``at``: (its length, name)."""
        best = (0, "")
        for form, name in cut:
            tail, hi = form[-4:], min(len(message), at + len(form) - 1)
            e = message.rfind(tail, at, hi)
            while e != -1 and e + 4 - at > best[0]:
                if form.endswith(message[at : e + 4]):
                    best = (e + 4 - at, name)
                    break
                e = message.rfind(tail, at, e + 3)
        return best

    def hide_part(message: str, long_only: bool = False) -> str:
        for pattern, shown in patterns:
            if isinstance(pattern, str):
                message = message.replace(pattern, shown)
            elif not long_only:
                message = pattern.sub(shown, message)
        for mark in reversed(list(_CUT.finditer(message))):
            at, after = mark.start(), mark.end()
            k, name = start_before(message, at)
            if k:
                message = f"{message[: at - k]}<${name}>{message[at:]}"
                after += len(name) + 3 - k
            k, name = end_after(message, after)
            if k:
                message = f"{message[:after]}<${name}>{message[after + k :]}"
        return message

    def hide(text: str, where: str | None = None) -> str:
        if not patterns:
            return text
        if not where:
            return hide_part(text)
        head = f"{where}: "
        out = []
        for i, part in enumerate(text.split(head)):
            if i == 0:
                out.append(hide_part(part))
                continue
            path = _PATH.match(part)
            keep = path.end() if path else 0
            out.append(hide_part(part[:keep], long_only=True) + hide_part(part[keep:]))
        return head.join(out)

    return hide


def hide_env_values(text: str, values: Mapping[str, str], where: str | None = None) -> str:
    """``text`` with every value of ``values`` hidden (``env_hider``, which see)."""
    return env_hider(values)(text, where)


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """Field names of the model found at ``loc`` below ``model`` (for did-you-mean)."""
    t = model
    for part in loc:
        t = _unwrap(t, part)
        if t is None:
            return []
    t = _unwrap(t, None)
    return list(t.model_fields) if isinstance(t, type) and issubclass(t, BaseModel) else []


def _unwrap(t: Any, part: Any) -> Any:
    origin = typing.get_origin(t)
    if origin is Annotated:
        return _unwrap(typing.get_args(t)[0], part)
    if origin in (Union, types.UnionType):
        for a in typing.get_args(t):
            if a is type(None):
                continue
            r = _unwrap(a, part)
            if r is not None:
                return r
        return None
    if part is None:
        return t
    if isinstance(t, type) and issubclass(t, BaseModel):
        if isinstance(part, str) and part in t.model_fields:
            return t.model_fields[part].annotation
        # discriminated union members appear in loc by their tag: skip it
        return t if isinstance(part, str) else None
    if origin in (list, tuple) and isinstance(part, int):
        return typing.get_args(t)[0]
    if origin is dict:
        return typing.get_args(t)[1]
    return None


# a refusal of a list's element: "[3]: why" (``_check_write_value``)
_ELEMENT = re.compile(r"\[(\d+)\]: ")


def _pydantic_errors(
    exc: ValidationError, model: Any, prefix: tuple, where: str, hidden: frozenset[str] = frozenset()
) -> list[str]:
    """``hidden``: places whose value is never shown (found ...): those given a gateway variable's value, in a
    fleet config's refusal that goes to the cloud."""
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            key = loc[-1]
            known = _fields_at(model, tuple(err["loc"])[:-1])
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else (f"; expected one of {sorted(known)}" if known else "")
            )
            out.append(f"{where}: {_fmt_loc(loc)}: unknown option {key!r}{hint}")
        elif err["type"] == "missing":
            out.append(f"{where}: {_fmt_loc(loc)}: required option is missing")
        elif err["type"] == "invalid_key" or (err["type"] == "string_type" and loc[-1:] == ("[key]",)):
            # a key YAML read as a boolean, null or number, inside settings (``on: 1``) or a mapping of them
            # (``values: {16: t}``): pydantic puts the key in the path, a bool as 1 (``pipelines[0][1]``)
            at = loc[:-2] if loc[-1] == "[key]" else loc[:-1]
            out.append(f"{where}: {_fmt_loc(at)}: {_key_not_text(err['input'])}")
        elif err["type"] == "union_tag_invalid":
            tag, expected = err["ctx"]["tag"], [t.strip(" '") for t in err["ctx"]["expected_tags"].split(",")]
            out.append(
                f"{where}: {_fmt_loc(loc)}.{err['ctx']['discriminator'].strip(chr(39))}: unknown type "
                f"{tag!r}{_did_you_mean(str(tag), expected)}"
            )
        else:
            msg = err["msg"].removeprefix("Value error, ")
            found = err.get("input")
            if (element := _ELEMENT.match(msg)) is not None and isinstance(found, list):
                # a list's element refused (``_check_write_value``): the place names it, not the whole field
                loc, msg = (*loc, int(element[1])), msg[element.end() :]
                found = found[int(element[1])] if int(element[1]) < len(found) else None
            shown = (
                ""
                if isinstance(found, dict | list)
                or found is None
                or _repr(found) in msg
                or _is_secret(model, tuple(err["loc"]))
                or any(_fmt_loc(loc) == h or _fmt_loc(loc).startswith((f"{h}.", f"{h}[")) for h in hidden)
                else f" (found {_short_repr(found)})"
            )
            out.append(f"{where}: {_fmt_loc(loc)}: {msg}{shown}{_yaml_read_it(err['type'], found)}")
    return out


def _yaml_read_it(kind: str, found: Any) -> str:
    """For text a YAML 1.1 reader took for something else (``model: on``, ``tag: no``, ``unit: ~``, ``source:
    0x10``): why, and the way out; else ""."""
    if kind != "string_type":
        return ""
    if isinstance(found, bool):
        return "; YAML reads on, off, yes and no (and true, false) unquoted as a boolean: quote the text"
    if found is None:
        return "; YAML read null (~, null or nothing written): write the text, quoted if it is ~ or null"
    if isinstance(found, int | float):  # `source: 0x10` (a source quoted where it is defined) is found as 16
        return (
            "; YAML reads an unquoted number as a number, in any form it takes (0x10 as 16, 1_000 as 1000, "
            "010 as 8): quote the text as written"
        )
    return ""


_SECRET_NAME = re.compile(r"password|passphrase|secret|token|api_?key", re.IGNORECASE)


def _is_secret(model: Any, loc: tuple) -> bool:
    """A field whose value is never shown, not even when it is wrong: a ``SecretStr`` or one named like
    a password."""
    if any(isinstance(p, str) and _SECRET_NAME.search(p) for p in loc):
        return True
    t = model
    for part in loc:
        t = _unwrap(t, part)
        if t is None:
            return False
    return _unwrap(t, None) is SecretStr


def _repr(value: Any) -> str:
    """``repr(value)``; for an integer of more digits than Python writes in decimal (``sys.get_int_max_str_digits``:
    a hex literal of 4000 digits where text was expected, a pasted key) its size, where repr raised ValueError (a
    traceback from the message refusing it, naming neither file nor field)."""
    try:
        return repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"a whole number of {value.bit_length()} bits"
        raise


def _short_repr(value: Any) -> str:
    """``repr(value)``, cut to one readable line for a long value (a 5,000-character topic)."""
    r = _repr(value)
    if len(r) <= 120:
        return r
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(r)} characters shown"
    return f"{r[:60]}... ({size})"


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return (
        f"; did you mean {close[0]!r}?"
        if close
        else (f"; defined: {sorted(known)}" if known else "; none defined")
    )


class Findings:
    """What validation found: errors and warnings, each one line naming the file and the path in it.
    Plugins' ``cross_check(name, cfg, report)`` hooks report through ``error(path, message)`` and
    ``warning(path, message)``."""

    def __init__(self, where: str, local_checks: bool = True) -> None:
        self.where = where
        # False: the cloud's check of a fleet config, which must read no file of the service's disk (hooks
        # reading the agent's own files skip those checks then)
        self.local_checks = local_checks
        # places whose value is never shown (``parse_config``'s hide_env)
        self.hidden: frozenset[str] = frozenset()
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{self.where}: {path}: {message}")

    def warning(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.where}: {path}: {message}")


@functools.cache
def _adapter(typ: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(typ)


def _validate(loc: tuple, typ: Any, value: Any, report: Findings) -> Any:
    """``value`` validated by ``typ``; None (and its errors reported) when it is not valid."""
    try:
        return _adapter(typ).validate_python(value)
    except ValidationError as exc:
        report.errors.extend(_pydantic_errors(exc, typ, loc, report.where, report.hidden))
        return None


def _validate_entry(key: str, name: Any, typ: Any, raw: Any, report: Findings) -> Any:
    """One entry of a mapping section; a tagged one (sources, actions) against its own settings class,
    so that an option typo gets the did-you-mean of its own type."""
    if key in _TAGGED:
        table, noun = _TAGGED[key]
        if not isinstance(raw, dict) or "type" not in raw:
            report.error(f"{key}.{name}.type", f"required; one of {sorted(table)}")
            return None
        if raw["type"] not in table:
            report.error(
                f"{key}.{name}.type",
                f"unknown {noun} {raw['type']!r}{_did_you_mean(str(raw['type']), table)}",
            )
            return None
        typ = table[raw["type"]]
    return _validate((key, name), typ, raw, report)


def _read_as(value: Any) -> str:
    """What YAML 1.1 read a plain key as, when not as text: ``the boolean true (YAML reads on, off, yes and no
    so)``, ``null (...)``, ``the number 16``."""
    return (
        f"the boolean {str(value).lower()} (YAML reads on, off, yes and no so)"
        if isinstance(value, bool)
        else "null (YAML reads ~, null and nothing so)"
        if value is None
        else f"the number {value!r}"
        if isinstance(value, int | float)
        else f"{type(value).__name__} {value!r}"
    )


# the longest model slot name: the fleet's rollouts refuse a longer slot (``SLOT_CHARS`` of cloud_trainer's control)
MODEL_SLOT_CHARS = 128


def slot_folder_refusal(name: str, names: Mapping[str, Any]) -> str | None:
    """Why a model slot's name cannot name its folder (``data_dir/models/<name>``), or None. A name of an empty,
    ``.`` or ``..`` part (``..``, ``vision/..``, ``/var/lib/factory-edge``, ``vision/``) put the slot's store on
    another folder (the data folder, ``models``, another slot's), and one inside another slot's (``vision/x``
    beside ``vision``) in it: a store's clean-up removes every folder its state does not name, and took the other
    slots' installed packages (the outbox, from the data folder)."""
    parts = name.split("/")
    if "\x00" in name or any(p in ("", ".", "..") for p in parts):
        return (
            "a model slot's name names its folder under data_dir/models: no empty, '.' or '..' part (a leading, "
            "trailing or doubled '/'): this one's folder would be another's (the data folder, or another slot's), "
            "whose folders the slot's clean-up removes"
        )
    inside = [o for o in names if o != name and name.startswith(o + "/")]
    if inside:
        return (
            f"a model slot's name names its folder under data_dir/models: this one's is inside slot {inside[0]!r}'s, "
            "whose clean-up removes it: rename one"
        )
    return None


def slot_name_as_written(name: str) -> str | None:
    """The slot name a harmless spelling of it means (``vision/``, ``./vision``: the folder is
    ``data_dir/models/vision`` either way), or None: the name as it is, or one no spelling mends (``..``, an
    absolute path, an empty or ``.`` part inside it: ``slot_folder_refusal`` refuses those)."""
    normal = name
    while normal.startswith("./"):
        normal = normal[2:]
    normal = normal[:-1] if normal.endswith("/") else normal
    if normal == name or not normal or slot_folder_refusal(normal, {}) is not None:
        return None
    return normal


def _slot_names_mended(data: dict, report: Findings) -> dict:
    """``data`` with the harmless spellings of slot names (``slot_name_as_written``) read as the name they mean, in
    ``models`` and in each pipeline's ``model``, each said in a warning naming the field. Refused since such names
    could alias another slot's folder, ``vision/`` and ``./vision`` stopped a gateway written so from starting at
    its upgrade, the store (``data_dir/models/vision``) the same; another slot of that name is an error (one folder)."""
    models = data.get("models")
    if not isinstance(models, dict):
        return data
    renamed: dict[str, str] = {}
    mended: dict[Any, Any] = {}
    for n, m in models.items():
        normal = slot_name_as_written(n) if isinstance(n, str) else None
        if normal is None:
            mended[n] = m
            continue
        if normal in models or normal in mended:
            report.error(
                f"models.{n}",
                f"names the folder of slot {normal!r} (data_dir/models/{normal}): two slots cannot share one; "
                "remove or rename one",
            )
            continue
        report.warning(
            f"models.{n}",
            f"read as slot {normal!r}: its folder is data_dir/models/{normal} either way; write it {normal!r}",
        )
        renamed[n], mended[normal] = normal, m
    out = data if not renamed and len(mended) == len(models) else {**data, "models": mended}
    given = data.get("pipelines")
    pipes: list = given if isinstance(given, list) else []
    for i, pl in enumerate(pipes):
        ref = pl.get("model") if isinstance(pl, dict) else None
        normal = slot_name_as_written(ref) if isinstance(ref, str) and ref not in mended else None
        if normal is not None and normal in mended:
            report.warning(f"pipelines[{i}].model", f"read as slot {normal!r}; write it {normal!r}")
            if out.get("pipelines") is pipes:
                out = {**out, "pipelines": list(pipes)}
            out["pipelines"][i] = {**pl, "model": normal}
    return out


def _name_not_text(name: Any) -> str:
    """Why a source, slot or action name is refused: YAML 1.1 reads a plain ``on``, ``off``, ``yes``, ``no``,
    ``~`` or ``1`` as a boolean, null or number, not as the name written (and a reference to it elsewhere could
    never match, or crashed validation when it was null)."""
    return f"a name must be text; YAML read this one as {_read_as(name)}: quote it, or choose another name"


def _key_not_text(key: Any) -> str:
    """Why a key of settings (or of the top level) that is not text is refused: every option's name is text,
    and such a key was said by a path the file nowhere holds (``pipelines[0][1]`` for ``on:``, ``True: unknown
    option True``)."""
    return f"a key must be text; YAML read one here as {_read_as(key)}: quote it, or correct it"


def _validate_section(
    key: str, ann: Any, raw: Any, report: Findings, written: dict[Any, str] | None = None
) -> tuple[Any, set]:
    """A top-level section by its declared type: a mapping or a list of models entry by entry (a list
    keeps None where an entry failed, so that the others keep their index), anything else whole.
    Returns the value and the names a mapping defines (bad entries included: a reference to one is
    not also "unknown"). ``written``: its names YAML read as a boolean or null, as the file writes them."""
    written = written or {}
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is dict:
        if not isinstance(raw or {}, dict):
            report.error(key, "expected a mapping of name -> settings")
            return {}, set()
        names = {n: r for n, r in (raw or {}).items() if isinstance(n, str)}
        for n in (raw or {}).keys() - names.keys():
            # a boolean or null name said as written (``sources.yes``, not ``sources.True``): ``read_yaml``
            shown = written.get(n) if n is None or isinstance(n, bool) else None
            report.error(f"{key}.{n if shown is None else shown}", _name_not_text(n))
        if key == "models":
            for n in names:
                if len(n) > MODEL_SLOT_CHARS:
                    report.error(
                        f"models.{n[:64]}...",
                        f"a model slot's name of {len(n)} characters; at most {MODEL_SLOT_CHARS} (the fleet "
                        "refuses a rollout to a longer one and keeps the first 128 of it in a deployment report)",
                    )
                elif (why := slot_folder_refusal(n, names)) is not None:
                    report.error(f"models.{n}", why)
        entries = {n: _validate_entry(key, n, args[1], r, report) for n, r in names.items()}
        return {n: v for n, v in entries.items() if v is not None}, set(names)
    if origin is list and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        if not isinstance(raw or [], list):
            report.error(key, "expected a list")
            return [], set()
        return [_validate((key, i), args[0], r, report) for i, r in enumerate(raw or [])], set()
    return _validate((key,), ann, raw, report), set()


def _taken_hint(error: str, where: str, taken: dict[str, str]) -> str:
    """``error`` of the agent's check of a fleet config, saying which variable its field took (its value is not
    shown: ``hide_env_values``)."""
    for loc, name in taken.items():
        if error.startswith((f"{where}: {loc}:", f"{where}: {loc}.", f"{where}: {loc}[")):
            return f"{error} (it takes ${{{name}}} from this gateway's environment; its value is not sent to the fleet)"
    return error


def _unset_hint(error: str, where: str, unset: dict[str, str]) -> str:
    """``error`` of the cloud's check, with a hint when its field took a variable that has no default: the cloud
    reads no environment, so ``port: ${MQTT_PORT}`` was refused ``(found '')`` without a word of why."""
    for loc, name in unset.items():
        if error.startswith(f"{where}: {loc}:"):
            return (
                f"{error} (it takes ${{{name}}}, a gateway's variable the cloud's check does not read: give it a "
                f"default, ${{{name}:-...}}, that the field accepts)"
            )
    return error


def parse_config(
    data: Any,
    where: str = "<config>",
    base_dir: str = ".",
    local_checks: bool = True,
    hide_env: bool = False,
) -> AgentConfig:
    """``local_checks=False``: what only the agent's own machine can tell is not checked (files exist, the
    environment variables are set): the cloud's check of a fleet configuration (``edge_agent.fleet_config``).
    Then ``${VAR}`` takes its ``:-default`` or nothing, never this process's environment: the cloud's check runs in
    the fleet service's environment (its object store's and database's credentials), and a tenant's config naming
    ``${AWS_SECRET_ACCESS_KEY}`` in a number field read it back in the refusal (``found '...'``).
    ``hide_env``: the agent's check of a fleet config, whose refusal goes to the cloud: an error names the field and
    the variable, never the value the gateway's environment gave (``hide_env_values``, and no ``found``); only the
    first ``FLEET_ERRORS`` errors are raised (what the fleet is told)."""
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{where}: expected a mapping at the top level (agent:, sources:, models:, pipelines: ...)"]
        )
    report = Findings(where, local_checks)
    sub_errors: list[str] = []
    # names YAML read as a boolean or null, as written (``read_yaml``); the substitution makes plain dicts
    written = {k: getattr(v, "written", None) for k, v in data.items() if isinstance(v, _NamesAsWritten)}
    unset: dict[str, str] = {}  # the cloud's check: places taking a gateway's variable with no default
    taken: dict[str, str] = {}  # places given a value of this gateway's environment, and the variable
    found = env_taken(data) if local_checks else {}
    values = found if hide_env else {}
    data = _substitute(data, "", sub_errors, os.environ if local_checks else {}, unset, taken)
    if hide_env:
        report.hidden = frozenset(taken)
    if local_checks:
        report.errors += [f"{where}: {e}" for e in sub_errors]
    data = _slot_names_mended(data, report)
    sections = {k: f.annotation for k, f in AgentConfig.model_fields.items() if k != "base_dir"}
    for key in data:
        if not isinstance(key, str):
            report.error("the top level", _key_not_text(key))
        elif key not in sections:
            report.error(key, f"unknown option {key!r}{_did_you_mean(str(key), sections)}")
    if "agent" not in data:
        report.error("agent", "required section is missing (agent: {id: ..., site: ..., line: ...})")
    # each value validated once, by the type AgentConfig declares for it; the config is then assembled
    # from those values (model_construct: nothing is validated twice)
    parts: dict[str, Any] = {"base_dir": base_dir}
    named: dict[str, set] = {"sources": set(), "models": set(), "actions": set()}
    for key, ann in sections.items():
        if key in data:
            parts[key], names = _validate_section(key, ann, data[key], report, written.get(key))
            named[key] = names
    if parts.get("agent") is None:
        parts["agent"] = AgentSection.model_construct(id="?")
    cfg = AgentConfig.model_construct(**{k: v for k, v in parts.items() if v is not None})
    for name, settings in (
        cfg.sources or {}
    ).items():  # a source's files are the config folder's, as the rest
        if isinstance(settings, BaseModel):
            cfg.sources[name] = _anchor_files(settings, base_dir)
    _cross_check(cfg, named, report, local_checks)
    if report.errors:
        if not local_checks and unset:
            report.errors = [_unset_hint(e, where, unset) for e in report.errors]
        if values:
            # only the errors told to the fleet (``FLEET_ERRORS``), hidden with one hider: each hiding of a text
            # costs every form's pattern and the look around each cut (200 variables, certificates: ~1 s a refusal)
            hide = env_hider(values)
            report.errors = [_taken_hint(hide(e, where), where, taken) for e in report.errors[:FLEET_ERRORS]]
        raise ConfigError(report.errors)
    cfg.warnings.extend(_one_line(mask_credentials(w)) for w in report.warnings)
    cfg._env_values = found
    cfg._where = where
    cfg._write_vars = _write_vars(data.get("actions"))
    return cfg


def _write_vars(actions: Any) -> dict[str, _FromEnv]:
    """The write values given wholly by a gateway variable, by place (``actions.recipe.value``, ``...value[1]``)."""
    out: dict[str, _FromEnv] = {}
    for name, a in actions.items() if isinstance(actions, dict) else ():
        for field in ("value", "reset_value"):
            v = a.get(field) if isinstance(a, dict) else None
            for i, x in enumerate(v) if isinstance(v, list) else [(None, v)]:
                if isinstance(x, _FromEnv):
                    out[f"actions.{name}.{field}" + ("" if i is None else f"[{i}]")] = x
    return out


def write_value_note(cfg: AgentConfig, place: str) -> Callable[[str, Any], str] | None:
    """For a write value at ``place`` (``actions.recipe.value``) that a gateway variable gives, wholly or in a list's
    element: ``note(why, refusal)``, the node's refusal of it (an ``OpcUaTypeMismatch``: its ``fix``, ``text_node``,
    ``element``) said with the variable, the field and the config file, and a fix a variable can follow. A String
    node given RECIPE=true was told "write text", and a numeric node given RECIPE=0x1F "write a number without
    quotes", naming no variable: a variable has no quotes, and its text is in the gateway's environment, not
    in the config. None when no variable gives it."""
    derived = False
    if place.endswith(".reset_value") and place not in cfg._write_vars:
        # no reset_value given: an on_change or pulse output resets to the opposite of its boolean value, which
        # the variable gives
        # the action's name, which may hold a dot (line1.label)
        name = place.removeprefix("actions.").rsplit(".", 1)[0]
        derived = getattr(cfg.actions.get(name), "reset_value", 0) is None
        if derived:  # a literal reset_value is the config's own: not the variable behind value
            place = place.removesuffix("reset_value") + "value"
    if not any(p == place or (p.startswith(f"{place}[") and not derived) for p in cfg._write_vars):
        return None
    return functools.partial(_env_refusal, cfg._write_vars, place, cfg._where, derived)


def _env_refusal(
    given: dict[str, _FromEnv], place: str, where: str, derived: bool, why: str, refusal: Any
) -> str:
    element = getattr(refusal, "element", ())
    at = place + (f"[{element[0]}]" if element else "")
    x = given.get(at)
    if x is None:  # the element refused is not the variable's
        return why
    fix = getattr(refusal, "fix", None)
    head = why[: -len(fix)].rstrip(": ") if fix and why.endswith(fix) else why
    if (shown := re.search(r"cannot write (.+) \((\w+)\)$", head)) is not None:
        # the type, not the value: this text is also an event's reason the fleet is told, where the variable's value
        # is hidden as it is written ('true'), but not as Python shows it ('True', or a short number such as 12)
        head = f"{head[: shown.start()]}cannot write the {shown[2]}"
    field = at.rsplit(".", 1)[-1]
    said = (
        f"the default {str(x)!r} of {x.expr} (the variable is not set)"
        if x.default
        else f"environment variable {x.var}, which holds {str(x)!r}"
    )
    typed = _from_env(x, field)
    if getattr(refusal, "text_node", False) and isinstance(typed, bool):
        # the fix names no form of the variable's value: this text is an event's reason the fleet is told, where
        # the value is hidden, and a value of the gateway's environment never leaves it (the log's head says it)
        fix = (
            "a variable holding a truth word (true, false) gives a boolean; for a String node state "
            f"it as text in the config: {field}: {{text: '{x.expr}'}}"
        )
    elif fix is not None and "without quotes" in fix and isinstance(typed, str):
        number = False  # a code a number reads in (0x1F, 0b101): its decimal form would tell the value
        with contextlib.suppress(ValueError):
            number = int(str(x).strip().replace("_", ""), 0) is not None
        fix = (
            "a variable gives a number only in decimal (a hexadecimal or binary code is text, for a String node); "
            + ("write the default" if x.default else f"set {x.var}")
            + " to the number in decimal digits"
            if number
            else f"a variable gives a number only in decimal (12, -3, 1.5) and a boolean only as true or false; "
            f"{'write the default as' if x.default else f'give {x.var}'} one of those"
        )
    which = (
        f"the reset (its opposite) of {at} in {where}, which takes it"
        if derived
        else f"which {at} in {where} takes"
    )
    return f"{head}, {which} from {said}" + (f": {fix}" if fix else "")


def _manifests(cfg: AgentConfig) -> dict[str, Any]:
    """Slot -> the manifest of its local package (unverified: read only for hints), None when unknown."""
    out: dict[str, Any] = {}
    for name, m in cfg.models.items():
        out[name] = None
        if m.package and cfg.path(m.package).is_file():
            try:
                from model_packager.package import read_manifest

                out[name] = read_manifest(cfg.path(m.package))
            except Exception:  # a bad package is reported when the slot loads it, with its own message
                pass
    return out


def _labels_for(cfg: AgentConfig, action: str, manifests: dict[str, Any]) -> set[str] | None:
    """Every class label the models behind ``action`` can give; None when one of them is not known."""
    labels: set[str] = set()
    for p in cfg.pipelines:
        if p is None or action not in p.actions:
            continue
        man = manifests.get(p.model)
        if man is None:
            return None
        for o in man.outputs:
            labels.update(o.labels or ())
    return labels or None


def source_tags(src: Any) -> tuple[set[str], bool] | None:
    """Tags a source will produce, known before start, and whether some are guesses (the source
    settings' own ``known_tags()``: OPC UA browse names read from string NodeIds, MQTT JSON mappings).
    None when they cannot be known offline (wildcard topics, every JSON field, Sparkplug metric names)."""
    known = getattr(src, "known_tags", None)
    return known() if known is not None else None


def kind_refusal(pipeline: str, windowed: bool, manifest: Any) -> str | None:
    """Why the model of ``manifest`` cannot serve ``pipeline`` for its kind (None: it can): an image model takes
    camera frames, a signal model windows. The config's check of a configured package and ``Pipeline.refusal`` (a
    package swapped in, a fleet-fed slot's first one) say it in these words."""
    kind = manifest.preprocessing.kind
    if (kind == "image") != windowed:
        return None
    items, want = ("signal windows", "a signal") if windowed else ("camera frames", "an image")
    takes = "camera frames" if kind == "image" else f"{kind} windows"
    return (
        f"pipeline {pipeline}: model {manifest.name} {manifest.version} takes {takes}; this pipeline's items are "
        f"{items}: serve {want} model"
    )


def _produces(cfg: AgentConfig, name: str) -> str | None:
    """ "frames" or "readings": what a source gives its pipelines (its settings class says); None when
    the source is unknown or invalid (already reported)."""
    return getattr(cfg.sources.get(name), "produces", None)


def _check_window_tags(
    cfg: AgentConfig, loc: str, p: PipelineSettings, manifest: Any, warnings: list[str]
) -> list[str]:
    """The model's scalar inputs are carried by the window, and the window's tags are produced by the source."""
    errors = []
    w = p.window
    assert w is not None  # called for windowed pipelines only
    inputs = w.scalar_inputs  # tag -> model input
    pre = getattr(manifest, "preprocessing", None)
    if pre is not None and getattr(pre, "kind", None) == "signal":
        carried = set(inputs.values())
        speed = pre.condition.speed_scalar if getattr(pre, "condition", None) is not None else None
        for s in [*pre.scalars, *([speed] if speed and speed not in pre.scalars else [])]:
            if s in carried:
                continue
            close = {c.lower(): c for c in carried}.get(s.lower()) or next(
                iter(difflib.get_close_matches(s, list(carried), n=1, cutoff=0.6)), None
            )
            fix = (
                f"map the tag to it: scalars: {{{s}: {close}}}"
                if close
                else f"add it: scalars: {{{s}: <the source's tag for it>}}"
            )
            errors.append(
                f"{loc}.window.scalars: model {manifest.name} needs scalar input {s!r}, which the window "
                f"does not carry (it carries {sorted(carried)}); every window would be refused; {fix}"
            )
        if w.sample_rate_hz is not None:
            from model_packager.condition import RateError, resample_plan

            try:
                resample_plan(w.sample_rate_hz, pre.sample_rate_hz, f"tag {w.waveform!r}")
            except RateError as exc:
                errors.append(f"{loc}.window.sample_rate_hz: {exc} (model {manifest.name})")
        if w.size_samples is not None and w.size_samples != pre.window_samples:
            errors.append(
                f"{loc}.window.size_samples: {w.size_samples}, but model {manifest.name} takes windows of "
                f"{pre.window_samples} samples; every window would be refused; remove size_samples"
            )
        cond = getattr(pre, "condition", None)
        if cond is not None and p.baseline is not None and p.baseline.units != cond.units:
            # the model computes its condition features from the raw samples in the unit it was built on
            warnings.append(
                f"{loc}.baseline.units: {p.baseline.units}, but model {manifest.name} was built on a signal in "
                f"{cond.units} (its condition features are computed as from {cond.units}): its levels and "
                f"velocity are off what it was trained on; give the sensor's unit here, and serve a model "
                f"built on that unit (build maintenance takes it from the imported headers)"
            )
    known = source_tags(cfg.sources.get(p.source))
    if known is None:
        return errors
    wanted = [("window.waveform", w.waveform)] + [
        (f"window.scalars.{name}" if isinstance(w.scalars, dict) else f"window.scalars[{i}]", tag)
        for i, (tag, name) in enumerate(inputs.items())
    ]
    members = getattr(cfg.sources.get(p.source), "member_tags", False)
    for field, tag in wanted:
        _tag_check(f"{loc}.{field}", p.source, tag, known, errors, warnings, members)
    return errors


def _tag_check(
    loc: str,
    source: str,
    tag: str,
    known: tuple[set[str], bool],
    errors: list[str],
    warnings: list[str],
    members: bool = False,
) -> None:
    """A tag the source does not produce: an error when the source's tags are certain (explicit `tag:`,
    MQTT mappings), or when it differs only in case from a browse name guessed from a NodeId (the
    usual slip; `tag:` on the node settles it either way); a warning otherwise, since a guessed
    browse name may not be the server's. ``members``: the source names a structure's members
    ``{tag}/{member}`` (OPC UA), which only the server knows: any such tag of a known one passes."""
    tags, guessed = known
    if tag in tags or (members and any(tag.startswith(t + "/") for t in tags)):
        return
    by_case = {t.lower(): t for t in tags}.get(tag.lower())
    close = by_case or next(iter(difflib.get_close_matches(tag, list(tags), n=1, cutoff=0.6)), None)
    hint = f"did you mean {close!r}?" if close else f"it gives {sorted(tags)}"
    how = (
        (
            " (OPC UA: a node's tag is its `tag:` or, by default, its browse name, here guessed from the NodeId; "
            "set `tag:` on the node to name it, or check with `edge-agent validate --online`)"
        )
        if guessed
        else ""
    )
    msg = f"{loc}: source {source!r} produces no tag {tag!r}; {hint}{how}"
    (warnings if guessed and not by_case else errors).append(msg)


def _check_tag_source(
    cfg: AgentConfig, named: dict[str, set], loc: str, ref: str, report: Findings, want: str | None = None
) -> None:
    """``ref`` names a source that gives tags (and of type ``want`` when given)."""
    if ref not in named["sources"]:
        report.error(loc, f"unknown source {ref!r}{_did_you_mean(ref, named['sources'])}")
    elif ref in cfg.sources and want and cfg.source_type(ref) != want:
        report.error(loc, f"{ref!r} is a {cfg.source_type(ref)} source; this needs a {want} source")
    elif _produces(cfg, ref) == "frames":
        report.error(loc, f"{ref!r} is a {cfg.source_type(ref)}; tags come from opcua or mqtt sources")


def _check_forward(cfg: AgentConfig, named: dict[str, set], seen: set[str], report: Findings) -> None:
    for i, f in enumerate(cfg.forward):
        if f is None:
            continue
        if f.name in seen:
            report.error(f"forward[{i}].name", f"{f.name!r} is used twice")
        seen.add(f.name)
        _check_tag_source(cfg, named, f"forward[{i}].source", f.source, report)
        if f.to is not None:
            _check_tag_source(cfg, named, f"forward[{i}].to", f.to, report, "mqtt")
        if (w := _placeholder_warning(f.topic)) is not None:
            report.warning(f"forward[{i}].topic", w)
        if f.outbox and cfg.outbox is None and cfg.cloud is None:
            report.error(
                f"forward[{i}].outbox",
                "there is no outbox; add an outbox: section (or cloud:), or set outbox: false",
            )


def _check_rules(
    cfg: AgentConfig, named: dict[str, set], seen: set[str], pipelines: set[str], report: Findings
) -> None:
    for i, r in enumerate(cfg.rules):
        if r is None:
            continue
        if r.name in seen or r.name in pipelines:
            report.error(f"rules[{i}].name", f"{r.name!r} is already the name of a pipeline, rule or forward")
        seen.add(r.name)
        _check_tag_source(cfg, named, f"rules[{i}].source", r.source, report)
        _check_action_refs(f"rules[{i}]", r.actions, named, report)
        known = source_tags(cfg.sources.get(r.source))
        if known is not None:
            _tag_check(
                f"{report.where}: rules[{i}].tag",
                r.source,
                r.tag,
                known,
                report.errors,
                report.warnings,
                getattr(cfg.sources.get(r.source), "member_tags", False),
            )


def _check_blocking_queues(cfg: AgentConfig, report: Findings) -> None:
    """A ``block`` queue that is full holds up its source's reading: every other reader of that source
    (pipelines, rules, forwards) waits for the slow model with it (docs/agent.md)."""
    for i, p in enumerate(cfg.pipelines):
        if p is None or p.queue.policy is not QueuePolicy.BLOCK:
            continue
        others = [
            f"pipeline {q.name!r}"
            for q in cfg.pipelines
            if q is not None and q is not p and q.source == p.source
        ]
        others += [f"rule {r.name!r}" for r in cfg.rules if r is not None and r.source == p.source]
        others += [f"forward {f.name!r}" for f in cfg.forward if f is not None and f.source == p.source]
        if others:
            report.warning(
                f"pipelines[{i}].queue.policy",
                f"'block' holds up source {p.source!r} whenever this pipeline's queue is full, and "
                f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''} on the same source wait with it (a "
                "rule's trip to the PLC waits for this model); give this pipeline a source of its own or use "
                "drop_oldest",
            )


def _check_action_refs(loc: str, actions: list[str], named: dict[str, set], report: Findings) -> None:
    for j, a in enumerate(actions):
        if a not in named["actions"]:
            report.error(f"{loc}.actions[{j}]", f"unknown action {a!r}{_did_you_mean(a, named['actions'])}")


FRAME_WINDOW_WHY = "a frame pipeline judges each camera frame alone: remove its window"


def _check_pipeline(
    cfg: AgentConfig,
    i: int,
    p: PipelineSettings,
    named: dict[str, set],
    manifests: dict[str, Any],
    report: Findings,
) -> None:
    loc = f"pipelines[{i}]"
    if p.source not in named["sources"]:
        report.error(
            f"{loc}.source", f"unknown source {p.source!r}{_did_you_mean(p.source, named['sources'])}"
        )
    if p.model not in named["models"]:
        report.error(
            f"{loc}.model", f"unknown model slot {p.model!r}{_did_you_mean(p.model, named['models'])}"
        )
    produces = _produces(cfg, p.source)  # None: a missing or invalid source, already reported
    kind = p.kind or ("frame" if produces == "frames" else "signal")
    if kind == "frame" and produces == "readings":
        report.error(
            f"{loc}.kind",
            f"a frame pipeline needs a camera source; {p.source!r} is {cfg.source_type(p.source)}",
        )
    if kind == "signal" and produces == "frames":
        report.error(
            f"{loc}.kind",
            f"a signal pipeline needs an opcua or mqtt source; {p.source!r} is a {cfg.source_type(p.source)}",
        )
    if kind == "signal" and produces is not None and p.window is None:
        report.error(f"{loc}.window", "a signal pipeline needs a window (waveform tag, size, hop)")
    if kind == "frame" and p.window is not None:
        # a warning, not an error: such a config ran (that pipeline judged nothing, everything else served) and, an
        # error, stopped a gateway at its upgrade and dropped a fleet config held as last good; the pipeline drops
        # its frames, counted, and says why on its status (pipelines.Pipeline.window_ignored)
        report.warning(f"{loc}.window", FRAME_WINDOW_WHY)
    if p.baseline is not None and kind != "signal":
        report.error(
            f"{loc}.baseline", f"a baseline learns from vibration windows; {p.name!r} is a frame pipeline"
        )
    if p.window is not None and p.window.by == "time" and p.window.hop_s is None:
        report.error(f"{loc}.window.hop_s", "required when by is 'time'")
    man = manifests.get(p.model)
    # a configured package of the other kind: the start refused it (a windowed pipeline's) in the pipeline's words,
    # naming neither the file nor the field, or served it, every frame UNSURE bad_input (a camera pipeline's);
    # validate passed both
    if man is not None and (kind == "frame") == (p.window is None):  # (else its window is reported)
        if (why := kind_refusal(p.name, p.window is not None, man)) is not None:
            report.error(f"{loc}.model", f"{why} (models.{p.model}.package)")
    if kind == "signal" and p.baseline is None and man is not None and man.task == "equipment_maintenance":
        # the agent says so at start too; here before the gateway runs it (docs/maintenance.md)
        report.warning(
            f"{loc}.baseline",
            f"maintenance model {man.name} would judge this asset without a baseline: its NG comes from a "
            "threshold set on the machines it was trained on, and on a machine it was not trained on healthy "
            "windows read NG (0-152 alarms a day on generated healthy machines); unless it was trained on "
            "this asset, add 'baseline:' to commission it (docs/maintenance.md)",
        )
    if p.window is not None and produces == "readings":
        report.errors += _check_window_tags(
            cfg, f"{report.where}: {loc}", p, manifests.get(p.model), report.warnings
        )
    _check_action_refs(loc, p.actions, named, report)


def _check_actions(
    cfg: AgentConfig, named: dict[str, set], manifests: dict[str, Any], report: Findings
) -> None:
    for name, a in cfg.actions.items():
        loc = f"actions.{name}"
        for field, typ in a.source_fields.items():  # each action type names its own source fields
            ref = getattr(a, field)
            if ref is None:
                continue
            if ref not in named["sources"]:
                report.error(
                    f"{loc}.{field}", f"unknown source {ref!r}{_did_you_mean(ref, named['sources'])}"
                )
            elif ref in cfg.sources and cfg.source_type(ref) != typ:
                report.error(
                    f"{loc}.{field}", f"{ref!r} is a {cfg.source_type(ref)} source; this needs a {typ} source"
                )
        for field, msg in a.problems():
            report.error(f"{loc}{'.' + field if field else ''}", msg)
        if a.when is not None:
            try:
                compile_condition(a.when, _labels_for(cfg, name, manifests))
            except ConditionError as exc:
                report.error(f"{loc}.when", str(exc))


def _pem_itself(value: str) -> bool:
    """A file option given the file's contents (a certificate or private key) instead of its path."""
    return "-----BEGIN" in value or "\n" in value


def _file_options(settings: BaseModel, prefix: str = ""):
    """(dotted option, value) of each ``*_file`` option set in a source's settings, nested ones (``tls``) too."""
    for name in type(settings).model_fields:
        v = getattr(settings, name, None)
        if isinstance(v, BaseModel):
            yield from _file_options(v, f"{prefix}{name}.")
        elif name.endswith("_file") and isinstance(v, str) and v:
            yield f"{prefix}{name}", v


def _anchor_files(settings: BaseModel, base_dir: str) -> BaseModel:
    """The settings with each relative ``*_file`` option made relative to the config's folder, like
    ``data_dir`` and model packages: a source's TLS or OPC UA certificate paths were taken relative to the
    process's working directory, which a service manager sets to ``/`` (the file was then not found at run
    time although ``validate`` run beside the file saw nothing wrong)."""
    update: dict[str, Any] = {}
    for name in type(settings).model_fields:
        v = getattr(settings, name, None)
        if isinstance(v, BaseModel):
            anchored = _anchor_files(v, base_dir)
            if anchored is not v:
                update[name] = anchored
        elif name.endswith("_file") and isinstance(v, str) and v and not _pem_itself(v):
            if not Path(v).is_absolute() and base_dir != ".":
                update[name] = str(Path(base_dir) / v)
    return settings.model_copy(update=update) if update else settings


# the systemd unit's StateDirectory= (deploy/systemd/edge-agent.service) and the install guide's data_dir:
# systemd makes it at the unit's start, owned by its User=, so before the first start it does not exist and
# /var/lib does not let that user make it (which validate, checked by that user, refused)
UNIT_STATE_DIRECTORY = Path("/var/lib/factory-edge")


def _data_dir_unwritable(folder: Path) -> str | None:
    """Why this process's user cannot create or write ``folder`` (None: it can). A data folder left at its
    default beside a config in /etc, or owned by the installer, used to pass validate and fail at start with
    a traceback. A data folder that exists on a read-only file system is not judged here: that is a disk
    fault, which the outbox reports at start in one line of its own; one that cannot be created there is
    (systemd's ProtectSystem=strict makes everything read-only but the unit's StateDirectory)."""
    folder = there = Path(os.path.abspath(folder))  # shown without the config's '..'
    while not there.exists() and there.parent != there:
        there = there.parent
    state = UNIT_STATE_DIRECTORY
    if there == state.parent and (folder == state or state in folder.parents):
        return None  # the unit's StateDirectory, not made yet: systemd makes it for the agent's user
    if not there.is_dir():
        return f"{folder} cannot be created: {there} is not a folder"
    if os.access(there, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(there).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return (
            None if there == folder else f"{folder} cannot be created: {there} is on a read-only file system"
        )
    import pwd

    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"uid {os.geteuid()}"
    if there == folder:
        return f"{folder} is not writable by user {user}, who runs the agent"
    return f"{folder} cannot be created: {there} is not writable by user {user}, who runs the agent"


def _not_a_file(path: Path, folder_too: bool = False) -> str | None:
    """What ``path`` is when it exists and is not a regular file (nor a folder, with ``folder_too``): a named
    pipe the agent would wait on for good at its start (a key, a certificate, a package), a device it would
    read without end. None when it is a file, or does not exist (said elsewhere)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or (folder_too and stat.S_ISDIR(mode)):
        return None
    return next((what for test, what in _NOT_A_FILE if test(mode)), "a named pipe")


def _check_files(cfg: AgentConfig, report: Findings) -> None:
    """Files the config names that do not exist on this machine (or that anyone on it may change)."""
    from model_packager.perms import writable_by_anyone

    for name, m in cfg.models.items():
        if m.package and not cfg.path(m.package).exists():
            report.error(f"models.{name}.package", f"file {m.package} does not exist")
        elif m.package and (what := _not_a_file(cfg.path(m.package))) is not None:
            report.error(f"models.{name}.package", f"{m.package} is {what}, not a file; give the file's path")
        elif m.package and (loose := writable_by_anyone(cfg.path(m.package))) is not None:
            report.warning(
                f"models.{name}.package",
                f"{cfg.path(m.package)} can be replaced by every user of this machine ({loose} is writable by "
                "all): anyone could put another signed version of the model (an older one) in its place, which "
                f"a pinned slot installs at its next start; `chmod o-w {loose}`",
            )
    if cfg.cloud is not None:
        for f in ("ca_file", "cert_file", "key_file"):
            if _pem_itself(getattr(cfg.cloud, f)):  # e.g. ${CLOUD_KEY} holding the key, not its file
                report.error(
                    f"cloud.{f}",
                    "holds a PEM certificate or key itself (not shown), not a file's path: write it to a file "
                    "readable only by the agent and give that file's path",
                )
            elif (what := _not_a_file(cfg.path(getattr(cfg.cloud, f)))) is not None:
                report.error(
                    f"cloud.{f}", f"{getattr(cfg.cloud, f)} is {what}, not a file; give the file's path"
                )
            elif not cfg.path(getattr(cfg.cloud, f)).exists():
                report.error(
                    f"cloud.{f}",
                    f"{getattr(cfg.cloud, f)} does not exist (create certificates with `cloud-trainer pki`)",
                )
    for i, k in enumerate(cfg.trusted_keys):
        if not cfg.path(k).exists():
            report.error(f"trusted_keys[{i}]", f"{k} does not exist")
            continue
        given = cfg.path(k)
        for one in [given, *(sorted(given.glob("*.pub")) if given.is_dir() else [])]:
            if (what := _not_a_file(one, folder_too=one is given)) is not None:
                report.error(f"trusted_keys[{i}]", f"{one} is {what}, not a key file; give the file's path")
                break
            if (loose := writable_by_anyone(one)) is not None:  # load_trusted_keys refuses it too
                report.error(
                    f"trusted_keys[{i}]",
                    f"{one} can be changed by every user of this machine ({loose} is writable by all), so anyone "
                    f"could add or swap a key and have any package accepted; `chmod o-w {loose}`",
                )
                break
            if one.is_file():
                _check_key_end(report, f"trusted_keys[{i}]", one)
    if (why := _data_dir_unwritable(cfg.data_dir)) is not None:
        report.error(
            "agent.data_dir",
            f"{why}; set agent.data_dir to a folder this user can write (under the systemd unit: "
            "/var/lib/factory-edge, its StateDirectory)",
        )
    elif (loose := writable_by_anyone(cfg.data_dir)) is not None:
        report.warning(
            "agent.data_dir",
            f"{cfg.data_dir} can be changed by every user of this machine ({loose} is writable by all): anyone "
            f"could put another signed version of a model (an older one) in place of the installed one or "
            f"edit its records before they are sent; `chmod o-w {loose}`",
        )
    for name, settings in (cfg.sources or {}).items():  # TLS and OPC UA certificates and keys
        if not isinstance(settings, BaseModel):
            continue
        for option, value in _file_options(settings):
            if _pem_itself(value):  # a key pasted (or given through ${VAR}) instead of its file's path
                report.error(
                    f"sources.{name}.{option}",
                    "holds a PEM certificate or key itself (not shown), not a file's path: write it to a file "
                    "readable only by the agent and give that file's path",
                )
            elif not cfg.path(value).exists():
                report.error(f"sources.{name}.{option}", f"{value} does not exist")
            elif (what := _not_a_file(cfg.path(value))) is not None:
                report.error(
                    f"sources.{name}.{option}", f"{value} is {what}, not a file; give the file's path"
                )


def _cross_check(
    cfg: AgentConfig, named: dict[str, set], report: Findings, local_checks: bool = True
) -> None:
    """The generic checks across sections, then each plugin's own ``cross_check(name, cfg, report)``
    (a source's or an action's settings class: what only that plugin knows)."""
    # the cloud's check of a tenant's fleet config (local_checks False) reads no file: a package path there named a
    # file on the fleet service's own disk (another tenant's registry), and its labels came back in the refusal
    manifests = _manifests(cfg) if local_checks else {}
    pipelines: set[str] = set()
    for i, p in enumerate(cfg.pipelines):
        if p is None:
            continue
        if p.name in pipelines:
            report.error(f"pipelines[{i}].name", f"pipeline name {p.name!r} is used twice")
        pipelines.add(p.name)
        _check_pipeline(cfg, i, p, named, manifests, report)
    seen: set[str] = set()  # forward and rule names
    _check_forward(cfg, named, seen, report)
    _check_rules(cfg, named, seen, pipelines, report)
    _check_blocking_queues(cfg, report)
    _check_actions(cfg, named, manifests, report)
    if local_checks:
        _check_files(cfg, report)
    if cfg.models and not cfg.trusted_keys:
        report.error("trusted_keys", "at least one public key is needed to verify model packages")
    for plugins in (cfg.sources, cfg.actions):
        for name, settings in plugins.items():
            hook = getattr(settings, "cross_check", None)
            if hook is not None:
                hook(name, cfg, report)


def load_config(path: str | Path) -> AgentConfig:
    path = Path(path)
    return parse_config(read_config_file(path), str(path), str(path.parent.resolve()))


# A config file is read whole before it is parsed: without a bound, a 1 GB file (a log or a disk image
# given by mistake, a line without end) was read into memory and parsed on a gateway of 1-2 GB. Hand-written
# site configs are ~100 KiB, but one generated from a plant's tag list is not: 30,000 OPC UA nodes with a tag
# each are 4.4 MB (validated in ~8 s, ~180 MB). 16 MiB holds ~100,000 such nodes (about as many YAML nodes as
# CONFIG_YAML_MAX_NODES allows), more than one 2-core gateway serves. A fleet config is at most 256 KiB
# (``fleet_config.MAX_BYTES``).
CONFIG_MAX_BYTES = 16 * 1024 * 1024

_NOT_A_FILE = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_config_bytes(path: Path, max_bytes: int = CONFIG_MAX_BYTES) -> bytes:
    """The bytes of the config file at ``path``, at most ``max_bytes`` of them; ``ConfigError`` naming the file
    when it cannot be read, is larger, or is not a file (a folder, a device, a socket). A named pipe is read
    (``edge-agent validate <(envsubst < line3.yaml)``), never waited on: it is opened without blocking, so
    one that nothing writes to reads as empty instead of hanging the command for good."""
    from model_packager.package import read_upto

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror or exc})"]) from exc
    too_large = (
        f"{path}: larger than {max_bytes} bytes, the most a config file may hold; is it the config file?"
    )
    if max_bytes == CONFIG_MAX_BYTES:  # an agent's own config (a fleet config's bound is the fleet service's)
        too_large += " If it is, give its sources to more than one agent, each with its own config"
    try:
        st = os.fstat(fd)
        for test, what in _NOT_A_FILE:
            if test(st.st_mode):
                raise ConfigError([f"{path}: is {what}, not a config file; give the path of the YAML file"])
        if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
            raise ConfigError([too_large])
        os.set_blocking(fd, True)  # a pipe with a writer is read to its end; one without reads as empty
        data = read_upto(fd, max_bytes)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror or exc})"]) from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ConfigError([too_large])
    if not data and stat.S_ISFIFO(st.st_mode):
        raise ConfigError([f"{path}: a named pipe that nothing wrote to; give the path of the config file"])
    return data


def read_config_file(path: Path) -> Any:
    """The YAML document of the config file at ``path``; ``ConfigError`` naming the file when it cannot be
    read (``read_config_bytes``), is not UTF-8 (with the byte offset, line and column) or is not valid YAML."""
    data = read_config_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bom = " (a UTF-16 byte order mark)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        # its line and column too: a byte offset alone had to be looked for with a hex dump (an engineer's "°C"
        # saved in Windows-1252 is 0xb0, somewhere in a file generated from a plant's tag list)
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1  # in characters, as an editor shows it (not bytes)
        column = len(data[start : exc.start].decode("utf-8", "replace")) + 1
        raise ConfigError(
            [
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}{bom}, line {line}, column {column}: "
                f"0x{data[exc.start]:02x}); save the file as UTF-8 (Windows-1252 and Latin-1 write ° as 0xb0)"
            ]
        ) from None
    return read_yaml(text, str(path))


CONFIG_YAML_MAX_DEPTH = 64
CONFIG_YAML_MAX_ALIASES = 10_000
CONFIG_YAML_MAX_NODES = 1_000_000  # once aliases are expanded: ~100x the largest site config we know


# plain scalars that YAML 1.1 (PyYAML) reads as numbers a reader does not expect: 010 is the octal 8, 1:30
# the base-60 90 (YAML 1.2 reads the first as 10 and the second as text): a setpoint, recipe number or port
# written so would be used, and written to a PLC, as another number without a word
_MISREAD = (
    (re.compile(r"[-+]?0[0-7_]+"), "the octal number"),
    (re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?"), "the base-60 number"),
)


# a plain time YAML reads (its timestamp form) with a fraction of a second past the microsecond, which YAML
# drops (group 1: the digits past the sixth): written to a PLC as another time than the file shows
_FINER_TIME = re.compile(
    r"\d{4}-\d\d?-\d\d?(?:[Tt]|[ \t]+)\d\d?:\d\d:\d\d\.\d{6}(\d+)(?:[ \t]*(?:Z|[-+]\d\d?(?::\d\d)?))?"
)


_TIME_TAG = "tag:yaml.org,2002:timestamp"


def _finer_time(ev: Any, path: str, out: list[str], tag: str) -> None:
    """A time YAML reads from ``ev`` with digits past the microsecond, which it drops without a word: the
    agent writes the time as the file shows it or not at all (Python's times, and asyncua's, hold
    microseconds; an OPC UA DateTime's 100 ns ticks cannot be reached from YAML)."""
    if (finer := _FINER_TIME.fullmatch(ev.value.strip())) and finer[1].strip("0"):
        at = f" (line {ev.start_mark.line + 1})" if ev.start_mark is not None else ""
        out.append(
            f"{path or 'the document'}: {tag}{ev.value}{at} is read by YAML to the microsecond, not as it "
            "shows: the digits past the sixth after the point are dropped; write at most 6 of them"
        )


def _yaml_misreads(text: str) -> list[str]:
    """``path: why`` for each plain scalar value that YAML 1.1 reads as another number than the one it shows
    (``_MISREAD``, ``_float_misread``), found on the parser's events (call it on a document known to parse)."""
    out: list[str] = []
    stack: list[
        dict
    ] = []  # the open collections: {"map": bool, "path": str, "keys": tuple, "key?": bool, "at": key or index}
    for ev in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(ev, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            stack.pop()
            continue
        if not isinstance(ev, yaml.NodeEvent):
            continue
        top = stack[-1] if stack else None
        path = ""
        if top is not None and top["map"]:
            if top["key?"]:  # a key: names the value that follows
                top["key?"], top["at"] = False, ev.value if isinstance(ev, yaml.ScalarEvent) else "?"
                if isinstance(ev, yaml.ScalarEvent) and (why := _key_misread(ev)):
                    out.append(f"{top['path']}.{ev.value}: {why}" if top["path"] else f"{ev.value}: {why}")
                if isinstance(ev, yaml.CollectionStartEvent):
                    stack.append(
                        {
                            "map": isinstance(ev, yaml.MappingStartEvent),
                            "path": "?",
                            "keys": (None,),
                            "key?": True,
                            "at": -1,
                        }
                    )
                continue
            top["key?"] = True
            path = f"{top['path']}.{top['at']}" if top["path"] else str(top["at"])
        elif top is not None:
            top["at"] += 1
            path = f"{top['path']}[{top['at']}]"
        keys = () if top is None else (*top["keys"], top["at"])
        if isinstance(ev, yaml.CollectionStartEvent):
            stack.append(
                {
                    "map": isinstance(ev, yaml.MappingStartEvent),
                    "path": path,
                    "keys": keys,
                    "key?": True,
                    "at": -1,
                }
            )
        elif isinstance(ev, yaml.ScalarEvent) and ev.tag == _TIME_TAG:
            # ``!!timestamp 12:00:00.1234567Z`` (quoted or not) is read as a time too, just as rounded
            _finer_time(ev, path, out, "!!timestamp ")
        elif isinstance(ev, yaml.ScalarEvent) and (
            ev.tag in _NUMBER_TAGS or (not ev.style and ev.tag is None)
        ):
            # ``!!float 1:30.5``, ``!!int 010`` (quoted or not): the tag does not change how YAML 1.1 reads the
            # digits (90.5, 8), as it did not change how it reads ``!!float 9007199254740993.0``
            tag = "" if ev.tag is None else f"!!{ev.tag.rsplit(':', 1)[1]} "
            if not tag:
                _finer_time(ev, path, out, "")
            for pattern, shown in _MISREAD:
                if pattern.fullmatch(ev.value):
                    try:
                        n = yaml.safe_load(f"{tag}{ev.value}")
                    except Exception:  # the load reported it
                        break
                    if not isinstance(n, int | float):
                        break  # 00:10:20 is text to YAML too
                    at = f" (line {ev.start_mark.line + 1})" if ev.start_mark is not None else ""
                    try:  # (ValueError: more digits than Python reads or writes in decimal, an octal of 6000)
                        same = shown.endswith("octal number") and n == int(ev.value.replace("_", ""), 10)
                        f"{n}"
                    except ValueError:
                        out.append(
                            f"{path or 'the document'}: {tag}{ev.value[:20]}... ({len(ev.value)} characters){at}: "
                            "a number of more digits than can be read or shown; quote it if it is text"
                        )
                        break
                    if same:
                        break  # 00, 07: the same number read either way
                    out.append(
                        f"{path or 'the document'}: {tag}{ev.value}{at} is read by YAML "
                        f"as {shown} {n}, not as it shows; write {n} if that is meant, or quote it "
                        f"{'without the tag ' if tag else ''}if it is text (YAML 1.1 reads a leading 0 as octal "
                        f"and 1:30 as base 60{', whatever the tag' if tag else ''})"
                    )
                    break
            else:
                if ev.tag != _NUMBER_TAGS[0]:
                    _float_misreads(ev, path, out, tagged=bool(tag))
    return out


_FLOAT_TAG = "tag:yaml.org,2002:float"
_INT_TAG = "tag:yaml.org,2002:int"


def _float_misreads(ev: Any, path: str, out: list[str], *, tagged: bool = False) -> None:
    """``_yaml_misreads`` for a scalar YAML reads as a float (``tagged``: by an explicit ``!!float``): refused in
    ``out`` (``_float_misread``)."""
    if (why := _float_misread(ev.value, tagged=tagged)) is not None:
        at = f" (line {ev.start_mark.line + 1})" if ev.start_mark is not None else ""
        out.append(f"{path or 'the document'}: {ev.value}{at} {why}")


def _exact_float(text: str, *, tagged: bool = False) -> float | None:
    """A plain float scalar as its text shows it, where YAML reads it as a number it does not show: a whole
    number written with an exponent that is another whole number as a float (``9.007199254740993e+15``:
    9007199254740992.0, a double holds whole numbers exactly only up to 2**53) as a ``WholeFloat`` keeping the
    number shown, whatever its range (``-9.223372036854775809e+18`` is -2**63 as a float: an Int64 node refuses
    the number shown); a fraction whose float is whole (``9007199254740992.5``, ``1.0000000000000000001``) as a
    ``FractionFloat``. None for any other scalar (``1.0e+16`` and ``3.0`` are read exactly, ``2.5`` is its
    float, ``9007199254740993.0`` is refused at load by ``_float_misread``). ``tagged``: the text follows an
    explicit ``!!float``. ``_exact_loader`` constructs such a float."""
    if (got := _whole_float_read(text, tagged)) is None:
        return None
    n, written = got
    if written != written.to_integral_value():
        return FractionFloat(n, text)
    if decimal.Decimal(n) == written or "e" not in text.lower():
        return None
    return WholeFloat(n, int(written), text)


def _yaml_float(text: str, tagged: bool) -> float | None:
    """The float YAML reads a plain scalar as (``tagged``: any scalar after an explicit ``!!float``, whose text
    may be an integer's, ``!!float 9007199254740993``); None when it reads no float, and for base 60 (1:30.5),
    .inf and .nan (judged elsewhere). Read as PyYAML's float constructor reads it (its underscores dropped), not
    by loading the text again: that cost a YAML load per float of a config (a 24,000-float config took 89 s)."""
    if ":" in text:
        return None
    if not tagged and _RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) != _FLOAT_TAG:
        return None
    try:
        return float(text.replace("_", ""))  # .inf, .nan: ValueError (Python writes them otherwise)
    except ValueError:
        return None


def _inexact_whole(text: str, *, tagged: bool = False) -> tuple[float, int] | None:
    """(the float, the whole number) of a plain scalar YAML reads as a float whose text shows a whole number that
    float is not (``9007199254740993.0``, ``9.007199254740993e+15``; ``tagged``: after an explicit ``!!float``,
    ``!!float 9007199254740993`` too); None for any other scalar."""
    if (got := _whole_float_read(text, tagged)) is None:
        return None
    n, written = got
    if written != written.to_integral_value() or decimal.Decimal(n) == written:
        return None
    return n, int(written)


def _whole_float_read(text: str, tagged: bool) -> tuple[float, decimal.Decimal] | None:
    """(the float YAML reads a plain scalar as, the number its text shows) when that float is finite and whole (a
    float that is no whole number shows no whole number, and its text is that float's); None for any other
    scalar. The one reading of a float's text that ``_exact_float`` and ``_inexact_whole`` judge: each read it
    again, the text parsed twice, twice per float of a config's write values."""
    if (n := _yaml_float(text, tagged)) is None or not math.isfinite(n) or not n.is_integer():
        return None
    try:
        written = decimal.Decimal(text.replace("_", ""))
    except Exception:  # judged elsewhere
        return None
    return (n, written) if written.is_finite() else None


def _exact_loader(made: list[float]) -> Any:
    """A config's YAML loader (``model_packager.safe_yaml.load_document``'s) whose float constructor reads each
    float node's text and builds the number it shows where YAML's float is another (``_exact_float``:
    ``WholeFloat``, ``FractionFloat``), appending each to ``made``; every other float is YAML's. Built on the
    nodes, so a value shared by an alias (``value: *big``), a merge key (``<<: *out``) or written with ``!!float``
    is that number wherever it is taken: PyYAML constructs a node once. ``_keep_exact_writes`` then keeps such
    numbers only where a value is written."""
    loader_class = _exact_loader_class()
    return lambda text: loader_class(text, made)


@functools.cache
def _exact_loader_class() -> Any:
    """``_exact_loader``'s class, built at the first load (``model_packager.safe_yaml`` imported then)."""
    from model_packager.safe_yaml import safe_loader

    base = safe_loader()
    as_yaml_reads = base.yaml_constructors[_FLOAT_TAG]  # errors at the value's line

    class Loader(base):  # type: ignore[misc,valid-type]
        def __init__(self, stream: str, made: list[float]) -> None:
            super().__init__(stream)
            self.made = made

        def construct_shown_float(self, node: yaml.ScalarNode) -> Any:
            n = as_yaml_reads(self, node)
            if not isinstance(n, float):
                return n
            if (
                not n.is_integer()
            ):  # 2.5, .nan: the text shows that float, 2.50 its text too (``_shown_form``)
                return self.shown_form(n, node.value)
            tagged = node.style is not None or (  # !!float "9007199254740993", !!float 9007199254740993
                _RESOLVER.resolve(yaml.ScalarNode, node.value, (True, False)) != _FLOAT_TAG
            )
            shown = _exact_float(node.value, tagged=tagged)
            if shown is None:
                return self.shown_form(n, node.value)
            self.made.append(shown)
            return shown

        def shown_form(self, n: float, text: str) -> float:
            if (shown := _shown_form(n, text)) is None:
                return n
            self.made.append(shown)
            return shown

    as_yaml_reads_int = base.yaml_constructors[_INT_TAG]

    def construct_shown_int(self: Any, node: yaml.ScalarNode) -> Any:
        n = as_yaml_reads_int(self, node)
        # 0x7FFF, +1, 1_000: a String node gets it as written
        if type(n) is int and not _is_decimal_text(n, node.value):
            shown = ShownInt(n, node.value)
            self.made.append(shown)
            return shown
        return n

    as_yaml_reads_time = base.yaml_constructors[_TIME_TAG]

    def construct_shown_time(self: Any, node: yaml.ScalarNode) -> Any:
        t = as_yaml_reads_time(self, node)
        # 2026-11-30T12:00:00Z: a String node gets it as written (``_stated_time``), not as its isoformat
        if type(t) is datetime.datetime:
            shown = _ShownTime.combine(t.date(), t.timetz())
            shown.text = node.value
            return shown
        return t

    Loader.add_constructor(_FLOAT_TAG, Loader.construct_shown_float)
    Loader.add_constructor(_INT_TAG, construct_shown_int)
    Loader.add_constructor(_TIME_TAG, construct_shown_time)
    return Loader


_TIME_TAG = "tag:yaml.org,2002:timestamp"


class _ShownTime(datetime.datetime):
    """A time YAML read from a config's plain text (``2026-11-30T12:00:00Z``), with that ``text``: what a String
    node or metric gets when it reads back as this very time (``_stated_time``); every other reader gets the
    time."""

    text: str

    def __repr__(self) -> str:  # named in errors as YAML's time: datetime.datetime(2026, 11, 30, 12, 0)
        return repr(datetime.datetime.combine(self.date(), self.timetz()))


def _is_decimal_text(n: int, text: str) -> bool:
    """Whether ``text`` is how Python writes ``n``; False without converting when ``n`` has more digits than
    Python turns into a decimal text (``sys.get_int_max_str_digits``: a hex literal of 4000 digits), as such a
    text cannot be the decimal one YAML read (that int() refuses)."""
    try:
        return text == str(n)
    except ValueError:
        return False


def _shown_form(n: float, text: str) -> ShownFloat | None:
    """A finite float YAML read from a decimal ``text`` that shows it in another form than its repr (``1.50``,
    ``1.0e+3``, ``9.007199254740992e+15``) as a ``ShownFloat``, so that a String node or metric gets the number
    as written (it got '1.5', '1000.0', '9007199254740992.0'); None when the text is the repr (YAML's ``_``
    dropped), for base 60 (``1:30.5``), and for a text that is not this float's own. NaN and infinity (``.inf``,
    ``-.Inf``, ``.nan``, ``1.0e+400``) are kept with their text too, so that their refusal at load names them as
    written (no node is ever written one)."""
    plain = text.replace("_", "")
    if ":" in plain:
        return None
    if not math.isfinite(n):
        return ShownFloat(n, text)
    if plain == float.__repr__(n):
        return None
    try:
        if float(plain) != n:
            return None
    except ValueError:
        return None
    return ShownFloat(n, text)


_WRITE_FIELDS = ("value", "reset_value")


def _keep_exact_writes(doc: Any) -> Any:
    """``doc`` with each number ``_exact_loader`` kept as its text shows (``WholeFloat``, ``FractionFloat``) made
    YAML's float again, except in an action's write value (``actions.<name>.value``, ``reset_value``, or an
    element of either): ``value: 9.007199254740993e+15`` for an Int64 node reached the PLC as 9007199254740992,
    counted ok, nothing said; an integer node or metric now gets 9007199254740993 (a ``WholeFloat``), and
    ``9007199254740992.5`` is refused by it as 2.5 is (a ``FractionFloat``); a String node gets the text of every
    number written in another form than Python prints it (a ``ShownFloat``, ``ShownInt``: ``1.50``, ``0x7FFF``).
    Every other reader (a Float or Double node) gets the float, as before: the node's type is known only online, so such a value
    is kept exact rather than refused at load. Elsewhere (a threshold, a rule's limit) the float, as before. A
    mapping or list is copied where it changes, never changed in place: an alias may share it with a write
    value."""
    memo: dict[int, Any] = {}

    def plain(x: Any) -> Any:
        if isinstance(x, ShownInt):
            return int(x)
        if isinstance(x, WholeFloat | FractionFloat | ShownFloat):
            return float(x)
        if not isinstance(x, dict | list):
            return x
        if id(x) in memo:
            return memo[id(x)]
        out: Any = x
        if isinstance(x, dict):
            for k, v in x.items():
                if (p := plain(v)) is not v:
                    out = dict(x) if out is x else out
                    out[k] = p
        else:
            for i, v in enumerate(x):
                if (p := plain(v)) is not v:
                    out = list(x) if out is x else out
                    out[i] = p
        memo[id(x)] = out
        return out

    def written(v: Any) -> Any:
        if isinstance(v, list):
            return [x if isinstance(x, WrittenNumber) else plain(x) for x in v]
        return v if isinstance(v, WrittenNumber) else plain(v)

    if not isinstance(doc, dict) or not isinstance(doc.get("actions"), dict):
        return plain(doc)
    out = {k: plain(v) for k, v in doc.items() if k != "actions"}
    out["actions"] = {
        name: {k: written(v) if k in _WRITE_FIELDS else plain(v) for k, v in action.items()}
        if isinstance(action, dict)
        else plain(action)
        for name, action in doc["actions"].items()
    }
    return {k: out[k] for k in doc}  # the file's order


def _float_misread(text: str, *, tagged: bool = False) -> str | None:
    """Why a plain scalar YAML reads as a float, written as a whole number with every digit
    (``9007199254740993.0``, ``18446744073709551615.0``), is refused: the float YAML makes of it is another
    whole number (a double holds them exactly only up to 2**53), which an Int64 or UInt64 node would get
    without a word. None for any other scalar, and for a fraction (``0.1`` is never exact, and is no integer
    meant)."""
    if "e" in text.lower():
        return None  # 1.0e+30 states a magnitude, not every digit (a threshold): read as the float meant
    if (got := _inexact_whole(text, tagged=tagged)) is None:
        return None
    n, meant = got
    return (
        f"is read by YAML as the float {n!r} ({int(n)}), not the whole number {meant} it shows: a float holds "
        f"whole numbers exactly only up to 2**53 (9007199254740992); write {meant} without the "
        f"{'!!float tag, ' if tagged else ''}point and exponent (an integer, as an Int64 or UInt64 node takes "
        "it), or quote it if it is text"
    )


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_RESOLVER = yaml.resolver.Resolver()  # the tag YAML gives a plain scalar; resolving reads the class's tables


def _key_misread(ev: Any) -> str | None:
    """Why a plain mapping key that YAML reads as a number other than it shows (``0x10:`` the int 16,
    ``1_000:`` 1000, ``0b11:`` 3, ``010:`` 8) is refused, or None. Every key of a config is text (a name or an
    option); such a key was reported by the number, ``sources.16``, which the file nowhere holds."""
    if ev.style or ev.tag is not None:
        return None
    if _RESOLVER.resolve(yaml.ScalarNode, ev.value, (True, False)) not in _NUMBER_TAGS:
        return None
    try:
        n = yaml.safe_load(ev.value)
    except Exception:  # a number too long to convert: the load reports it
        return None
    if not isinstance(n, int | float) or str(n) == ev.value:
        return None
    at = f" (line {ev.start_mark.line + 1})" if ev.start_mark is not None else ""
    return (
        f"the key {ev.value}{at} is read by YAML as the number {n}, not as it shows; quote it "
        f"('{ev.value}') to keep it as written"
    )


def read_yaml(text: str, where: str) -> Any:
    """The YAML document of a config (``ConfigError`` naming the line and column where it is not YAML).

    Bounded like a package's manifest, with a config's room: a few hundred bytes of nested aliases can
    stand for billions of values that validation would then walk (minutes of CPU on a gateway, for a
    config that may come from the fleet service). A key given twice in one mapping is refused with both
    lines: YAML would keep the last silently (a second ``agent:``, a model slot written twice). Whatever
    else the loader raises (PyYAML's constructors raise ``ValueError`` for a date such as ``2024-13-45``,
    ``AttributeError`` for ``!!timestamp x``, ``ValueError`` for an integer of more than 4300 digits) is
    a ``ConfigError`` naming the file, never a traceback."""
    from model_packager.safe_yaml import DuplicateKeyError, check_limits, load_document

    try:
        problem = check_limits(
            text,
            max_depth=CONFIG_YAML_MAX_DEPTH,
            max_aliases=CONFIG_YAML_MAX_ALIASES,
            max_nodes=CONFIG_YAML_MAX_NODES,
        )
    except Exception:  # the load below reports what is wrong, with its line
        problem = None
    if problem is not None:
        why = (
            ""
            if problem.endswith("(a value that holds itself)") or "defined twice" in problem
            else " (anchors and aliases may not multiply a config beyond that)"
        )
        raise ConfigError([f"{where}: YAML {problem}; refused{why}"])
    try:  # libyaml's loader where PyYAML has it (~10x the pure-Python one: part of every start)
        made: list[float] = []  # the numbers kept as their text shows (``_exact_loader``)
        doc = load_document(text, _exact_loader(made))
    except DuplicateKeyError as exc:
        raise ConfigError([f"{where}: {line}" for line in exc.lines()]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: its line, not a 2nd line
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise ConfigError(
            [
                f"{where}: not valid YAML at line {line}, column {column}: the character "
                f"#x{exc.character:04x} is not allowed in YAML (a control character or a non-character); remove it"
            ]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or exc)
        if mark is not None and text[mark.index : mark.index + 1] == "\t":
            # PyYAML says "found character that cannot start any token", not which character
            problem = f"{problem}: a tab; YAML indents with spaces only, replace the tabs with spaces"
        raise ConfigError([f"{where}: not valid YAML{at}: {problem}"]) from exc
    except Exception as exc:  # PyYAML's constructors raise more than YAMLError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError([f"{where}: not valid YAML: {first}"]) from None
    misread = _yaml_misreads(text)
    if misread:
        raise ConfigError([f"{where}: {line}" for line in misread])
    if made:
        doc = _keep_exact_writes(doc)
    return _names_as_written(doc, text)


class _NamesAsWritten(dict):
    """A top-level mapping of names (``sources``, ``models``, ``actions``) holding a name YAML 1.1 read as a
    boolean or null (``yes:``, ``on:``, ``~:``), with each such name as the file writes it (``written``), so
    that its error names it so (``sources.yes``), not as what YAML read (``sources.True``, a path the file
    nowhere holds). Made by ``read_yaml`` only for such a mapping; a dict in every other way."""

    written: dict[Any, str]


_BOOL_NULL_TAGS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:null")
_BOOLEANS: dict[str, bool] = yaml.constructor.SafeConstructor.bool_values  # yes, on, true... (YAML 1.1)


def _names_as_written(doc: Any, text: str) -> Any:
    """``doc``, each top-level mapping of it that holds a key YAML read as a boolean or null made a
    ``_NamesAsWritten`` that keeps those keys as written (found on the composed nodes of ``text``, parsed
    again only then: such a config is refused anyway)."""
    if not isinstance(doc, dict):
        return doc
    odd = {
        k
        for k, v in doc.items()
        if isinstance(k, str) and isinstance(v, dict) and any(n is None or isinstance(n, bool) for n in v)
    }
    if not odd:
        return doc
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception:  # it loaded above; should it not compose, the names are said as YAML read them
        return doc
    if not isinstance(root, yaml.MappingNode):
        return doc
    for key, value in root.value:
        if not (
            isinstance(key, yaml.ScalarNode) and key.value in odd and isinstance(value, yaml.MappingNode)
        ):
            continue
        section = _NamesAsWritten(doc[key.value])
        section.written = {}
        for name, _ in value.value:
            if not (isinstance(name, yaml.ScalarNode) and name.tag in _BOOL_NULL_TAGS and name.value):
                continue  # text, a number (said as written), or nothing written: said as YAML read it
            if name.tag.endswith("null"):
                section.written.setdefault(None, name.value)
            elif name.value.lower() in _BOOLEANS:
                section.written.setdefault(_BOOLEANS[name.value.lower()], name.value)
        doc[key.value] = section
    return doc


def _check_key_end(report, where: str, key_file: Path) -> None:
    """A key file's ``not-after:`` line: an error when it is not a date; a warning once it has passed (packages
    the key signed are no longer installed; those installed before serve on)."""
    import datetime as dt
    import time

    from model_packager.errors import SignatureError
    from model_packager.key_dates import key_not_after

    try:
        ends = key_not_after(key_file)
    except SignatureError as exc:
        report.error(where, str(exc))
        return
    if ends is not None and ends <= time.time():
        when = dt.datetime.fromtimestamp(ends, dt.UTC).isoformat(timespec="seconds")
        report.warning(
            where,
            f"{key_file}: its trust ended at {when} (not-after): packages it signed are no longer installed "
            "(those installed before serve on); have them signed with a current key",
        )
