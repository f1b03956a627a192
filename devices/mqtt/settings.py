"""Settings of the MQTT source (``type: mqtt``). Validation only: this module never imports paho.

One broker connection per source; each subscription names a topic filter (wildcards allowed),
a QoS (0 or 1) and a codec: ``json`` (with an optional field mapping) or ``sparkplug_b``
(the adapter then acts as a Sparkplug B host application for the matching edge nodes).
"""

from __future__ import annotations

import enum
import math
import re
import sys
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from protocols.json_codec import PUBSUB_PLACEHOLDERS, state_key
from protocols.topics import shown_topic


class Protocol(enum.StrEnum):
    MQTT311 = "mqtt311"
    MQTT5 = "mqtt5"


# The codec table: codec -> (its options "module:Class", its decoder factory "module:function",
# called once per subscription as ``factory(source, subscription)`` and returning
# ``decode(topic, payload, received_at) -> [Reading]``). ``CodecKind`` is built from it, so an
# unknown codec is a config error; the adapter builds every subscription's decoder when it is
# constructed, so a codec without one fails there and never decodes as another.
CODEC_TYPES: dict[str, tuple[str, str]] = {
    "json": ("devices.mqtt.settings:JsonMappingSettings", "devices.mqtt.client:json_decoder"),
    "sparkplug_b": ("devices.mqtt.settings:SparkplugHostSettings", "devices.mqtt.client:sparkplug_decoder"),
}
# members come from the table, which mypy cannot read: members are named by value below, CodecKind("json")
CodecKind = enum.StrEnum("CodecKind", [(k.upper(), k) for k in CODEC_TYPES])  # type: ignore[misc]


class TimestampFormat(enum.StrEnum):
    EPOCH_S = "epoch_s"
    EPOCH_MS = "epoch_ms"
    EPOCH_US = "epoch_us"
    EPOCH_NS = "epoch_ns"
    ISO8601 = "iso8601"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordsSettings(_Model):
    """Tags as an array of records, as OPC/IoT gateways publish them (Kepware IoT Gateway's standard
    template is the default: ``{"timestamp": ms, "values": [{"id", "v", "q", "t"}]}``)."""

    array: str = Field("values", description="path of the array of records; empty: the payload is the array")
    name: str = Field("id", description="each record's tag name (a key, or a dotted path in the record)")
    value: str = Field(
        "v", description="each record's value (a key, or a dotted path: Azure OPC Publisher's Value.Value)"
    )
    timestamp: str | None = Field(
        "t", description="each record's time (timestamp_format); null: the message's"
    )
    quality: str | None = Field(
        "q",
        description="each record's quality: true/false, good/uncertain/bad (a prefix: 'BadNotConnected', "
        "Ignition's 'Bad_Stale'), a number read by quality_format, or an OPC UA StatusCode object ({'Code': "
        "2156527616, 'Symbol': 'BadNotConnected'}, node-opcua's {'value': 0}); absent or null: good",
    )
    quality_format: Literal["auto", "opcua", "opcda", "siemens"] = Field(
        "auto",
        description="the convention of a numeric quality: auto = 0-3 Siemens' qc (0 bad), else OPC DA's 16 "
        "bits (192+ good), a number past them refused naming opcua; opcua = a 32-bit OPC UA StatusCode (0 Good, "
        "0x40000000.. Uncertain, 0x80000000.. Bad; negative as a signed int: Ignition 8's QualityCode), for "
        "OPC UA gateways (Azure OPC Publisher, node-red-contrib-opcua, Ignition), "
        "where auto reads a Good 0 as bad; opcda = OPC DA's bits only (0-3 bad, not Siemens' qc); "
        "siemens = qc 0-3 only",
    )


class OpcuaPubsubSettings(_Model):
    """OPC UA PubSub JSON messages (Part 14) over MQTT: NetworkMessages, DataSetMessages alone or their bare
    Payload; each field of each DataSetMessage is a reading with its own time and quality."""

    tag: str = Field(
        "{field}",
        description="each field's tag: a template of {field} (the field's name in the Payload, once), {writer} "
        "(the DataSetWriterId, else DataSetWriterName) and {publisher} (the PublisherId), e.g. "
        "'{publisher}/{writer}/{field}' where one topic carries several writers' fields of one name; a message "
        "without the id the template names is counted as missing_field and skipped",
    )

    @field_validator("tag")
    @classmethod
    def _template(cls, v: str) -> str:
        if v.count("{field}") != 1:
            raise ValueError(f"tag {v!r} must name {{field}} once (the field's name in the Payload)")
        unknown = [x for x in re.findall(r"\{([^{}]*)\}", v) if x not in PUBSUB_PLACEHOLDERS]
        if unknown or v.replace("{field}", "").replace("{writer}", "").replace("{publisher}", "").count("{"):
            raise ValueError(
                f"tag {v!r}: unknown placeholder {('{' + unknown[0] + '}') if unknown else 'or a stray brace'}; "
                "the placeholders are {field}, {writer} and {publisher}"
            )
        return v


class JsonMappingSettings(_Model):
    """Which JSON fields are tags. Empty ``values``: every numeric top-level field is a tag;
    ``records``: the tags are an array of records (name, value, time, quality) instead."""

    records: RecordsSettings | None = Field(
        None,
        description="the message holds many tags as records (Kepware IoT Gateway, Siemens Industrial Edge)",
    )
    opcua_pubsub: OpcuaPubsubSettings | None = Field(
        None,
        description="the messages are OPC UA PubSub JSON (Part 14: Azure OPC Publisher, Siemens S7-1500, "
        "open62541, B&R): every field of every DataSetMessage's Payload is a reading (bare, a Variant or a "
        "DataValue), its time its SourceTimestamp, else the DataSetMessage's Timestamp, else the receive time, "
        "its quality its StatusCode (an OPC UA StatusCode), else the message's Status; ua-metadata messages "
        "are skipped; timestamp_field and timestamp_format are not used",
    )
    values: dict[str, str] = Field(
        default_factory=dict,
        description="field path (dotted; a whole number indexes an array: ENERGY.Voltage.0; a key holding dots "
        "is found as written) -> tag name",
    )
    timestamp_field: str | None = Field(
        "ts",
        description="the field (dotted path) holding the message's time, read by timestamp_format; absent from a "
        "message: the receive time (a topic's first such message holding a field named and valued like a time, "
        "'time' or Tasmota's 'Time', gives the time_field_unread notice naming it and this setting); null: always "
        "the receive time",
    )
    timestamp_format: TimestampFormat = Field(
        TimestampFormat.EPOCH_S,
        description="epoch_s | epoch_ms | epoch_us | epoch_ns (EdgeX's origin, Go's UnixNano) | iso8601; a "
        "number in another unit (this century's time in a smaller unit, within a day of the receive time, or "
        "seconds past the year 5000) is bad_timestamp, its message naming the format to set",
    )
    timezone: str = Field(
        "UTC",
        description="the zone of an ISO 8601 time that states none, as an IANA name (Europe/Berlin): "
        "Tasmota's Time and many Node-RED flows send the device's local time without an offset, read as "
        "UTC it is hours off",
    )
    numbers_from_text: bool = Field(
        False,
        description='true: a value that is a number written as text ("21.5", " 1e3 "; not "12,5", '
        "which may be a decimal or a thousands comma) is read as that number, as EdgeX Foundry's readings and "
        'devices that quote every value need, and a payload that is such a text alone ("21.5") as a bare number; '
        'false: text stays text (a part number "0012" keeps its zeros). A time under epoch_*, a waveform\'s rate '
        'and a record\'s quality written as text ("25600") are read as numbers either way',
    )
    states: dict[str, int | float] = Field(
        default_factory=dict,
        description="state text -> number ({'ON': 1, 'OFF': 0}), matched in any case with spaces around "
        'ignored: a text value that is a state (Zigbee2MQTT\'s and ESPHome\'s {"state": "ON"}, Shelly\'s '
        '"on", "open"/"closed") is read as its number, which rules, windows and models use; so is a payload '
        'that is the state alone (Tasmota\'s stat/<dev>/POWER "ON", not JSON; a JSON string), named by its '
        "topic, and a JSON true/false under the keys 'true'/'false'. Quote the keys: YAML reads ON, OFF, yes, "
        "no, true and false unquoted as true/false. Empty: text is never made a number, a JSON true/false of a "
        "mapped field stays a truth value, unmapped it is not read",
    )
    unknown_state: Literal["skip", "text"] = Field(
        "skip",
        description="with states, a mapped field's (values) or a record's text that is no state: skip = "
        "counted as unknown_state, naming the text, and skipped; text = read as text, as without states. "
        "Unmapped, text that is no state is not read (as without states), except under skip in a field that "
        'has held a state ({"state": "BLINK"} after "ON"): unknown_state; a payload that is text alone and '
        "no state is unknown_state either way",
    )
    tag_prefix_topic: bool = Field(
        True,
        description="tag = '{topic}/{tag}' so wildcard sensors stay apart; a name from the payload (a key, a "
        "record's name, a PubSub field) holding '/' is one level of it, '%' and '/' percent-encoded "
        "('a/b' -> '{topic}/a%2Fb'), so that no device names the tags of another device's deeper topic",
    )
    rate_field: str | None = Field(
        "auto",
        description="field holding a waveform's sample rate in Hz (checked by the "
        "pipeline; a number, or one written as text); auto: sample_rate_hz, rate_hz, sampling_rate_hz or fs_hz "
        "when present; "
        "null: ignore",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            if v not in ("UTC", "Etc/UTC", "Z"):  # as protocols.json_codec.zone reads it
                ZoneInfo(v)
        except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError; a malformed name a ValueError
            raise ValueError(
                f"timezone {v!r} is no time zone this machine knows: an IANA name such as Europe/Berlin or "
                "America/Chicago, or UTC (a missing tz database: install tzdata)"
            ) from None
        return v

    @field_validator("states", mode="before")
    @classmethod
    def _state_texts(cls, v: Any) -> Any:
        # before pydantic's own check: YAML has already made ON/OFF/yes/no true/false, and pydantic would
        # take "1" for a number and a bool for 1, none of which the user wrote as such
        if not isinstance(v, dict):
            return v
        seen: dict[str, str] = {}
        for key, num in v.items():
            if isinstance(key, bool):
                raise ValueError(
                    f"a key read as {str(key).lower()}: YAML reads ON, OFF, yes, no, true and false "
                    "without quotes as true/false, so the text is lost; quote each key: {'ON': 1, 'OFF': 0} "
                    "(and 'true': 1 for a JSON true)"
                )
            if not isinstance(key, str) or not key.strip() or len(key) > 64:
                raise ValueError(
                    f"key {str(key)[:80]!r} is no state's text (quoted, 1 to 64 characters: '1': 1, 'ON': 1)"
                )
            # a whole number past float64's range too (math.isfinite raised OverflowError on it: validate's
            # traceback, not a line naming the setting)
            if (
                isinstance(num, bool)
                or not isinstance(num, int | float)
                or not (
                    -sys.float_info.max <= num <= sys.float_info.max
                    if isinstance(num, int)
                    else math.isfinite(num)
                )
            ):
                # an int's digits not counted: one of more than 4,300 (a YAML hex literal's) raised ValueError
                shown = "a whole number past float64's range" if type(num) is int else repr(num)
                raise ValueError(
                    f"{key!r} -> {shown}: the value is the finite number the state is read as (1, 0, 2.5)"
                )
            k = state_key(key)
            if k in seen:
                raise ValueError(
                    f"{seen[k]!r} and {key!r} are one state (matched in any case, spaces ignored); keep one"
                )
            seen[k] = key
        return v

    @model_validator(mode="after")
    def _one_way(self) -> JsonMappingSettings:
        if self.records is not None and self.values:
            raise ValueError("records and values are two ways to find tags; give one of them")
        if self.opcua_pubsub is not None and (self.records is not None or self.values):
            raise ValueError(
                "opcua_pubsub reads every field of the PubSub messages' Payloads: give it without "
                + ("records" if self.records is not None else "values")
            )
        if self.unknown_state != "skip" and not self.states:
            raise ValueError("unknown_state says what a text that is no state becomes: it needs states")
        return self


class Subscription(_Model):
    topic: str = Field(min_length=1, description="topic filter; '+' and '#' allowed")
    qos: Literal[0, 1] = 0
    codec: CodecKind = CodecKind("json")
    json_mapping: JsonMappingSettings = Field(default_factory=JsonMappingSettings)
    retained: Literal["uncertain", "live", "skip"] = Field(
        "uncertain",
        description="a retained message (the broker's stored last value, sent on subscribing, of unknown "
        "age: a sensor that died yesterday still has one): uncertain = its readings have quality "
        "uncertain, shown and forwarded, but pipelines, models and rules wait for a live value; live = "
        "taken as a new reading (topics that hold state published on change); skip = not read",
    )
    retained_max_age_s: float = Field(
        60.0,
        ge=0,
        description="with retained: uncertain, a retained message whose own timestamp (timestamp_field, a "
        "record's or a Sparkplug metric's time) is at most this much older than its receive time, and not "
        "ahead of it by more than 1 s, counts as live: quality good. Without a timestamp of its own, or older, "
        "or further ahead (the device's clock is off: its age is unknown), uncertain. 0: never",
    )

    @field_validator("topic")
    @classmethod
    def _filter_ok(cls, v: str) -> str:
        if v.startswith("$share/"):
            group, _, rest = v[len("$share/") :].partition("/")
            if not group or not rest:
                raise ValueError(
                    f"topic filter {v!r}: a shared subscription is '$share/{{group}}/{{filter}}', with a group "
                    "and a topic filter, e.g. '$share/line1/sensors/#'"
                )
            if "+" in group or "#" in group:
                raise ValueError(
                    f"topic filter {v!r}: the shared subscription's group {group!r} holds '+' or '#'"
                )
        levels = _shared_filter(v).split("/")
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise ValueError(f"topic filter {v!r}: '#' must be a whole last level, e.g. 'plant/#'")
            if "+" in level and level != "+":
                raise ValueError(f"topic filter {v!r}: '+' must be a whole level, e.g. 'plant/+/temp'")
        return v

    @model_validator(mode="after")
    def _shared_not_sparkplug(self) -> Subscription:
        if self.codec == "sparkplug_b" and self.filter != self.topic:
            raise ValueError(
                f"topic {self.topic!r}: a shared subscription gives each message to one client of its group, "
                "and a Sparkplug host must see all of a node's births and data (their sequence numbers): "
                f"subscribe {self.filter!r}"
            )
        return self

    @property
    def filter(self) -> str:
        """The filter the messages are delivered under: ``topic`` without a shared subscription's
        ``$share/{group}/`` (MQTT 5; Mosquitto, EMQX and HiveMQ take it over MQTT 3.1.1 too) or EMQX's
        ``$queue/``. The broker sends the messages under their own topic names, which the prefix would not
        match."""
        return _shared_filter(self.topic)


def _shared_filter(topic: str) -> str:
    if topic.startswith("$share/"):
        return topic.split("/", 2)[2] if topic.count("/") >= 2 else ""
    if topic.startswith("$queue/"):
        return topic[len("$queue/") :]
    return topic


class TlsSettings(_Model):
    ca_file: str | None = Field(None, description="CA bundle that signed the broker certificate")
    cert_file: str | None = Field(None, description="client certificate (mutual TLS)")
    key_file: str | None = None
    insecure: bool = Field(False, description="skip broker hostname check; never in production")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: cert_file and key_file go together; give both or neither")
        return self


class WillSettings(_Model):
    topic: str
    payload: str = "offline"
    qos: Literal[0, 1] = 1
    retain: bool = True


class SparkplugHostSettings(_Model):
    tag_map: dict[str, str] = Field(
        default_factory=dict,
        description="'{edge_node}/{device}/{metric}' (or '{edge_node}/{metric}') -> tag name",
    )
    rebirth_on_unknown: bool = Field(
        True,
        description="send NCMD Node Control/Rebirth on unknown alias, data before birth (a DDATA before its "
        "device's DBIRTH too) or a seq gap (a lost message's change), and to every known node when this "
        "host's broker connection comes back (off: their data waits for a birth they send by themselves)",
    )
    rebirth_min_interval_s: float = Field(
        2.0,
        ge=0,
        description="at most one rebirth asked per node in this time (s); a request within it waits until it "
        "has passed (unless a birth of the node answers first), it is not dropped. 0: no per-node interval (each "
        "cause asks at once), still held to rebirth_max_per_s",
    )
    rebirth_max_per_s: float = Field(
        20.0,
        gt=0,
        description="at most this many rebirth requests a second from this source, all nodes together (a "
        "second's worth at once): when more nodes are stale at once (this host's reconnect, a broker restart, "
        "thousands of nodes), the rest wait, oldest first, and are asked as the rate allows",
    )
    rebirth_retry_s: float = Field(
        10.0,
        ge=0,
        description="a node asked a rebirth that sends no birth within this time (s) is asked again (its NCMD "
        "lost, the node busy or restarting), each time after twice as long as the last, up to "
        "rebirth_retry_max_s, until a birth of it is read (counted: notice rebirth_unanswered); still held to "
        "rebirth_min_interval_s and rebirth_max_per_s, never of a node whose NDEATH was read. 0: asked once only "
        "(again at its next message)",
    )
    rebirth_retry_max_s: float = Field(
        300.0,
        gt=0,
        description="the longest wait (s) between two rebirths asked of a node that does not answer "
        "(rebirth_retry_s doubling up to this); not below rebirth_retry_s. Also how long a streak of births whose "
        "first data alone was lost is remembered: a node whose data after each birth starts at 2 is asked at "
        "most twice in this time",
    )
    rebirth_give_up_s: float = Field(
        86_400.0,
        ge=0,
        description="a node asked its birth again and again that answers none and sends nothing for this long "
        "(s, from the first ask and from its last message) is asked nothing more: a node taken out of service "
        "without a death (switched off, removed) is not asked every rebirth_retry_max_s for ever (counted: notice "
        "rebirth_given_up, said once per node); its next message, whatever it is, asks again. A born node that "
        "sends nothing this long, with no death read, is asked its birth (one reporting by exception is quiet for "
        "days, its session valid): one that answers stays live; one that sends nothing within rebirth_retry_max_s "
        "of that ask (a cable cut, a broker that lost its will) is stale: its tags marked BAD as a death would "
        "(notice node_silent), commands refused, its data read again when it speaks. 0: never given up",
    )
    max_inflated_bytes_per_s: int = Field(
        16 * 1024 * 1024,
        ge=1,
        description="the bytes an edge node's compressed payloads (Tahu's SPBV1.0_COMPRESSED) may inflate to "
        "per second, each node (group/edge_node) its own budget, and all nodes of the source together at most 4 "
        "times this (a second's worth kept at most): inflating and decoding cost the agent's loop by the "
        "inflated byte, and 8 KB on the wire can inflate to 8 MiB. A payload is inflated while its node's "
        "budget and the source's total have some left and is charged to both; while either has none left, an "
        "NDATA or DDATA is counted as inflate_budget and skipped, not inflated. Births and deaths have budgets of "
        "their own, as large, never charged to data's: a birth past its node's is inflate_budget, skipped, and "
        "the node stale until a birth of it is read (a rebirth asked once the budget refilled); a death is "
        "always read (inflated to at most 64 KiB; past it, its bdSeq read from that much). One flooding node does "
        "not hold up the others; several at once can spend the data total; the births' total keeps one node's "
        "budget from nodes storming (refused within the last second, or that inflated over half their budget "
        "within about the last second: a storm's opening burst; judged at an NBIRTH for the DBIRTHs that follow "
        "it), so a calm node's births are read. Plain "
        "payloads are not counted: their size costs the node the same bandwidth",
    )
    host_id: str | None = Field(
        None,
        pattern=r"^[^/+#]+$",
        description="publish this host application's STATE (Sparkplug 3.0: spBv1.0/STATE/<host_id>, "
        "online while connected, offline as the connection's will): edge nodes told to wait for a primary "
        "host (Ignition Edge, MQTT Transmission) publish nothing until it is online",
    )
    state_version: Literal["3.0", "2.2"] = Field(
        "3.0",
        description="the STATE form edge nodes expect: '3.0' (spBv1.0/STATE/<host_id>, JSON with online and "
        "timestamp) or '2.2' (STATE/<host_id>, the text ONLINE / OFFLINE: Ignition and MQTT Transmission "
        "releases before Sparkplug 3.0)",
    )

    @model_validator(mode="after")
    def _retry(self) -> SparkplugHostSettings:
        if self.rebirth_retry_s > 0 and self.rebirth_retry_max_s < self.rebirth_retry_s:
            raise ValueError(
                f"rebirth_retry_max_s ({self.rebirth_retry_max_s:g}) is below rebirth_retry_s "
                f"({self.rebirth_retry_s:g}): the longest wait between two rebirths asked cannot be shorter "
                "than the first; raise rebirth_retry_max_s or lower rebirth_retry_s"
            )
        return self


class MqttSettings(_Model):
    produces: ClassVar[str] = "readings"  # tags, for signal pipelines, forwards and rules
    type: Literal["mqtt"] = "mqtt"
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    protocol: Protocol = Protocol.MQTT311
    client_id: str = Field("", description="empty: a random id is generated")
    persistent_session: bool = Field(
        False,
        description="keep subscriptions and queued QoS 1 messages at the broker while away; needs client_id; "
        "not with sparkplug.host_id nor a sparkplug_b subscription (a Sparkplug host application connects "
        "with a clean session)",
    )
    keepalive_s: int = Field(
        30,
        ge=5,
        le=65535,
        description="paho pings the broker after this long without traffic; a ping unanswered for half of it "
        "(nothing else received, nothing sent acknowledged) ends the connection: a path that died without a FIN "
        "or RST (a NAT or firewall that dropped the flow, a switch rebooting) is noticed within 1.5x keepalive_s, "
        "as the broker notices us",
    )
    tls: TlsSettings | None = None
    username: str | None = None
    password: SecretStr | None = None
    subscriptions: list[Subscription] = Field(default_factory=list)
    queue_max_items: int = Field(
        10_000,
        ge=1,
        description="bounded hand-over queue; when full, the oldest message of the topic holding the most "
        "is dropped (counted by topic)",
    )
    queue_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="the hand-over queue's bound on payload bytes, as queue_max_items on messages (the "
        "newest message is always kept): 10,000 large messages would otherwise be held at once; reached, "
        "the oldest message of the topic holding the most bytes is dropped (counted by topic)",
    )
    max_message_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="a larger message is counted as too_large and skipped undecoded (the queue holds "
        "queue_max_items messages: without a size bound a misbehaving device could fill the memory)",
    )
    handover_coalesce_ms: float = Field(
        1.0,
        ge=0,
        le=100,
        description="under load, batch hand-over to the loop this often (0: wake per message)",
    )
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    publish_max_queued: int = Field(
        10_000, ge=1, description="paho outgoing queue bound (see FIELD-NOTES pitfall)"
    )
    publish_timeout_s: float = Field(
        10.0, gt=0, description="how long publish() waits for room in a full queue"
    )
    publish_connection: Literal["shared", "separate"] = Field(
        "shared",
        description="shared: what the source publishes goes over the connection that carries its subscriptions; "
        "separate: over a second connection of its own (same broker, TLS and login, no subscriptions, no will, "
        "its own reconnect), so that a QoS 1 publish's PUBACK never waits behind a flood on a subscription "
        "(docs/mqtt.md, 'A flood')",
    )
    publish_client_id: str = Field(
        "", description="the separate publish connection's client id; empty: <client_id>-pub, or a random one"
    )
    will: WillSettings | None = None
    sparkplug: SparkplugHostSettings = Field(default_factory=SparkplugHostSettings)
    out_of_order: Literal["drop", "keep"] = Field(
        "drop", description="a reading older than its tag's last one"
    )
    non_finite: Literal["bad", "skip"] = Field(
        "bad",
        description="a NaN or infinite value (JSON NaN, Infinity, 1e999, a 400-digit integer; a Sparkplug Float "
        "or Double metric; an array holding one): bad = passed on as a BAD reading of its tag, as the OPC UA "
        "source does (a rule, window or model stops using the tag's last good value); skip = dropped, the "
        "tag keeps its last value. Counted as non_finite either way",
    )
    max_clock_skew_s: float = Field(
        300.0,
        ge=0,
        description="a reading stamped further than this ahead of the gateway's clock gets the receive time "
        "and is counted as clock_skew (kept, it would make the tag's later readings look out of order); "
        "older times are kept (a device sending its buffer after an outage), except a time before 2001 (JSON or "
        "Sparkplug): a device clock never set (counting from 1970 at power-on, a Sparkplug node's uptime), which "
        "gets the receive time too, counted "
        "as clock_skew (kept, its readings were dated 1970 and, after the device restarted, dropped as out of "
        "order); 0: neither checked",
    )

    @model_validator(mode="before")
    @classmethod
    def _host_alone(cls, data: Any) -> Any:
        # Before the field's own check, so that the refused value is never quoted back: a host given as a
        # URL usually carries the login (mqtts://user:pass@broker), and it would reach the error, the log
        # and /status through every failed connect. Checked on the model, whose input is not shown.
        host = data.get("host") if isinstance(data, dict) else None
        if isinstance(host, str) and ("://" in host or "@" in host or "/" in host):
            raise ValueError(
                "host: the broker's name or address alone (e.g. broker.plant.local or 10.0.0.5), not a URL "
                "or a login: the port goes in port, TLS in tls, the login in username and password "
                "(password: ${MQTT_PASSWORD} keeps it out of the file)"
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> MqttSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.persistent_session and not self.client_id:
            raise ValueError("persistent_session needs a fixed client_id; set client_id")
        if self.publish_client_id and self.publish_client_id == self.client_id:
            raise ValueError(
                "publish_client_id is the client_id: the broker would drop each connection as the other "
                "connects; give the publish connection another id, or leave it empty (<client_id>-pub)"
            )
        if self.password is not None and self.username is None:
            raise ValueError("password given without username; add username")
        if self.sparkplug.host_id is not None and self.will is not None:
            raise ValueError(
                "will and sparkplug.host_id both set the connection's will (the host's STATE is its "
                "offline message); remove will"
            )
        if self.sparkplug.host_id is not None and self.persistent_session:
            # Sparkplug 3.0 (Host Application Session Establishment): a host connects with Clean Session (MQTT 5:
            # Clean Start, Session Expiry 0). A persistent session has the broker replay, right after the CONNACK
            # and ahead of the host's STATE birth, the QoS 1 births, data and deaths queued while it was away:
            # handed on as live readings, out of order with the rebirths the host asks at its reconnect
            raise ValueError(
                "persistent_session: true with sparkplug.host_id: Sparkplug 3.0 has a primary host application "
                "connect with a clean session, as the broker would otherwise replay the births, data and deaths "
                "queued while it was away ahead of its STATE birth, passed on as live and out of order with the "
                "rebirths it asks; set persistent_session: false (a host learns current values from the rebirths "
                "it asks), or give JSON topics that need one a source of their own"
            )
        if self.persistent_session:
            # The same without host_id: a source that reads Sparkplug decodes births and deaths and asks rebirths, a
            # host application all the same (Sparkplug 3.0 asks a clean session of every one), and the same replay
            # was measured (Mosquitto: a node session that began and ended while the agent was away, passed on)
            read = [i for i, sub in enumerate(self.subscriptions) if sub.codec == "sparkplug_b"]
            if read:
                more = f" and {len(read) - 1} more" if len(read) > 1 else ""
                raise ValueError(
                    f"persistent_session: true with subscriptions[{read[0]}] (topic "
                    f"{shown_topic(self.subscriptions[read[0]].topic)}, codec: sparkplug_b){more}: a source that "
                    "reads Sparkplug is a host application, which Sparkplug 3.0 has connect with a clean session, "
                    "as the broker would otherwise replay at each start the births, data and deaths queued while "
                    "the agent was away, passed on as live readings and out of order with the rebirths it asks; set "
                    "persistent_session: false (a host learns current values from the rebirths it asks), or give "
                    "JSON topics that need one a source of their own"
                )
        return self

    def known_tags(self) -> tuple[set[str], bool] | None:
        """The tags this source will produce, known offline (from JSON field mappings), and False (none
        is a guess); None when they cannot be known (wildcard topics, every JSON field, Sparkplug)."""
        tags: set[str] = set()
        for sub in self.subscriptions:
            if sub.codec != "json" or not sub.json_mapping.values:
                return None
            if sub.json_mapping.tag_prefix_topic:
                if "+" in sub.filter or "#" in sub.filter:
                    return None
                tags.update(f"{sub.filter}/{t}" for t in sub.json_mapping.values.values())
            else:
                tags.update(sub.json_mapping.values.values())
        return tags, False

    @property
    def publish_id(self) -> str:
        """The client id of ``publish_connection: separate`` (empty: a random one)."""
        return self.publish_client_id or (f"{self.client_id}-pub" if self.client_id else "")

    def client_ids(self) -> dict[str, str]:
        """Field -> the fixed client id each of this source's connections connects with (random ones left out)."""
        ids = {"client_id": self.client_id}
        if self.publish_connection == "separate":
            ids["publish_client_id"] = self.publish_id
        return {field: cid for field, cid in ids.items() if cid}

    def _same_client_id(self, name: str, cfg: Any, report: Any) -> None:
        """An error where a connection of this source has the client id of an earlier mqtt source's on the same
        broker (a publish connection's default ``<client_id>-pub`` included): the broker would drop each as the
        other connects, for good. The ids are not shown: a gateway's variable may give them. Not in the cloud's
        check of a fleet config (``report.local_checks`` False): it reads no environment, so hosts and ids a
        gateway's variables give are all '' or their defaults there (two brokers ``${BROKER_A}``, ``${BROKER_B}``
        compared as one); the agent checks the config it is given, with its own values, and tells the fleet."""
        if not getattr(report, "local_checks", True):
            return
        mine = self.client_ids()
        for other_name, other in cfg.sources.items():
            if other_name == name:
                return
            if not isinstance(other, MqttSettings) or (other.host, other.port) != (self.host, self.port):
                continue
            theirs = other.client_ids()
            for field, cid in mine.items():
                clash = next((f for f, c in theirs.items() if c == cid), None)
                if clash is not None:
                    pub = "publish_client_id" in (field, clash)  # perhaps its default: say what that is
                    report.error(
                        f"sources.{name}.{field}",
                        f"the client id of sources.{other_name}.{clash}"
                        f"{' (a publish connection has <client_id>-pub unless it is set)' if pub else ''} on the "
                        "same broker: the broker drops each connection as the other connects, for good; give "
                        "each connection its own client id",
                    )

    def cross_check(self, name: str, cfg: Any, report: Any) -> None:
        """Checks against the rest of the agent's config (``edge-agent validate``), as warnings: a password
        sent to a broker on another host without TLS; a Sparkplug tag_map key that starts with the group
        its subscription names renames nothing (keys are '{edge_node}/{device}/{metric}'), as an edge
        node may be named like its group."""
        if (
            self.password is not None
            and self.tls is None
            and self.host not in ("127.0.0.1", "localhost", "::1")
        ):
            report.warning(
                f"sources.{name}.password",
                f"sent to {self.host} without tls: the password (and every message) crosses the network in "
                "clear text; add tls (ca_file) or keep the broker on this host",
            )
        if self.tls is not None and self.tls.insecure:
            report.warning(
                f"sources.{name}.tls.insecure",
                "true: the broker's certificate is not matched to its host name, so another machine can "
                "pose as the broker; for tests only",
            )
        for i, sub in enumerate(self.subscriptions):
            m = sub.json_mapping
            # only under a filter ending in '#' are both T and T/head topics of it: under tele/+/SENSOR no
            # topic has one level more than another, so no other device's tag can be named so
            if sub.codec != "json" or not m.tag_prefix_topic or not sub.filter.endswith("#"):
                continue
            names = set(m.values.values())
            for path, tag in m.values.items():
                # 'motor/speed' beside 'speed': on topic T, T/motor/speed, the tag 'speed' of a device on T/motor
                other = next(
                    (tag[k + 1 :] for k, c in enumerate(tag) if c == "/" and tag[k + 1 :] in names), None
                )
                if other is not None:
                    head = tag[: -len(other) - 1]
                    report.warning(
                        f"sources.{name}.subscriptions[{i}].json_mapping.values.{path}",
                        f"tag name {tag!r} ends with '/' and the tag name {other!r}: named after its topic under "
                        f"the wildcard filter {sub.filter!r} (tag_prefix_topic), on topic T it is T/{tag}, the "
                        f"tag {other!r} of a device on topic T/{head}, which a device publishing on T alone so "
                        f"sets; name it without '/' (e.g. {tag.replace('/', '_')!r})",
                    )
        self._same_client_id(name, cfg, report)
        if not self.sparkplug.tag_map:
            return
        groups = {
            sub.topic.split("/")[1]
            for sub in self.subscriptions
            if sub.codec == "sparkplug_b"
            and len(sub.topic.split("/")) > 1
            and sub.topic.split("/")[1] not in ("+", "#")
        }
        for key in self.sparkplug.tag_map:
            head, _, rest = key.partition("/")
            if head in groups and rest.count("/") >= 1:
                report.warning(
                    f"sources.{name}.sparkplug.tag_map.{key}",
                    f"starts with the Sparkplug group {head!r}, so it would match no metric; keys are "
                    f"'{{edge_node}}/{{device}}/{{metric}}': write {rest!r}",
                )
