"""The agent's one YAML file, validated completely before anything starts.

``load_config(path)`` returns a frozen ``AgentConfig`` or raises ``ConfigError`` holding *every*
problem found, each one line naming the file, the path inside it and what was expected::

    configs/line1.yaml: pipelines[1].model: unknown model slot 'vison'; did you mean 'vision'?
    configs/line1.yaml: sources.cam.fsp: unknown option 'fsp'; did you mean 'fps'?

Steps: YAML → ``${VAR}`` / ``${VAR:-default}`` substitution in strings (a missing variable is an
error naming it) → the agent's own sections (pydantic, ``extra="forbid"``) → each source with
its adapter's settings model, picked by ``type`` from ``devices.SOURCE_TYPES`` (settings modules
import no protocol library) → cross-references (pipeline → source, model slot, actions; action →
a source of the right type) and action conditions. Nothing is connected or loaded here.
"""

from __future__ import annotations

import difflib
import enum
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from devices import SOURCE_TYPES, load_object
from edge_agent.action_base import ActionSettings, RetrySettings  # noqa: F401  (RetrySettings: re-exported)
from edge_agent.conditions import ConditionError, compile_condition
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.outbox.settings import OutboxSettings, SampleSelectionSettings
from edge_agent.uplink.settings import CloudSettings


class ConfigError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSection(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", description="unique agent id")
    site: str = Field("site1", pattern=r"^[^/+#\s]+$")
    line: str = Field("line1", pattern=r"^[^/+#\s]+$")
    data_dir: str = Field("var/agent", description="models, samples, state; relative to the config file")


class HttpSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535, description="status page, /status JSON and /metrics; 0 = any free port")
    enabled: bool = True


class QueuePolicy(enum.StrEnum):
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    BLOCK = "block"


class QueueSettings(_Model):
    size: int = Field(8, ge=1, le=100_000)
    policy: QueuePolicy = QueuePolicy.DROP_OLDEST


class WindowSettings(_Model):
    waveform: str = Field(description="tag whose samples form the window (an array tag or a scalar stream)")
    scalars: list[str] | dict[str, str] = Field(
        default_factory=list, description="tags whose latest value rides with each window: a list of tags named "
                                          "like the model's scalar inputs, or a mapping {model input: tag}")
    by: Literal["count", "time"] = "count"
    size_samples: int | None = Field(None, ge=2, description="default: the model's window_samples")
    hop_samples: int | None = Field(None, ge=1, description="count mode: new samples between windows (default: size)")
    hop_s: float | None = Field(None, gt=0, description="time mode: seconds between windows")
    sample_rate_hz: float | None = Field(None, gt=0, description="the waveform tag's sample rate; resampled to the "
                                         "model's when the ratio is clean, refused otherwise (default: the model's)")

    @property
    def scalar_inputs(self) -> dict[str, str]:
        """Tag -> the model's scalar input it feeds."""
        if isinstance(self.scalars, dict):
            return {tag: name for name, tag in self.scalars.items()}
        return {t: t for t in self.scalars}


class UnsureSettings(_Model):
    """Frames far outside the model's training inputs (``input_stats`` in its manifest) get verdict
    UNSURE with a reason: never OK or NG, no action fires. A package without statistics never says
    UNSURE."""

    enabled: bool = True
    tolerance: float = Field(1.0, gt=0, description="scales every margin around the training range; > 1: fewer")
    window: int = Field(200, ge=5, le=100_000, description="frames over which the unsure share is watched")
    max_share: float = Field(0.2, gt=0, le=1, description="an input_drift event when the share reaches this")


class PipelineSettings(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    source: str
    model: str
    kind: Literal["frame", "signal"] | None = Field(None, description="default: frame for cameras, else signal")
    window: WindowSettings | None = None
    queue: QueueSettings = QueueSettings()
    workers: int = Field(1, ge=1, le=16)
    actions: list[str] = Field(default_factory=list)
    baseline: BaselineSettings | None = Field(None, description="learn this asset's healthy baseline, then score "
                                              "against it (signal pipelines; docs/maintenance.md)")
    unsure: UnsureSettings = UnsureSettings()


_Action = ActionSettings


class MqttPublishAction(_Action):
    source_fields: ClassVar[dict[str, str]] = {"source": "mqtt"}
    type: Literal["mqtt_publish"]
    source: str = Field(description="an mqtt source to publish through")
    topic: str | None = Field(None, description="default: factory/<site>/<line>/<agent>/results/<pipeline>")
    qos: Literal[0, 1] = 0
    retain: bool = False


class WriteMode(enum.StrEnum):
    LEVEL = "level"  # every result writes: value while the condition holds, reset_value (if given) while not
    ON_CHANGE = "on_change"  # the same level, written only when it changes
    PULSE = "pulse"  # on each rising edge: value, then reset_value after pulse_ms


_SCALAR = bool | int | float | str
_LOOKS_TYPED = re.compile(r"^\s*(true|false|yes|no|on|off|y|n|[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|nan|inf)\s*$",
                          re.IGNORECASE)


def _check_write_value(v: Any, what: str) -> Any:
    """A write value must carry its YAML type: ``"false"`` (a string) would reach a Boolean node as
    TRUE under any loose conversion, so a quoted boolean or number is refused here."""
    items = v if isinstance(v, list) else [v]
    for x in items:
        if x is None or isinstance(x, dict | list):
            raise ValueError(f"{what} must be true/false, a number, text or a list of those (found {x!r})")
        if isinstance(x, str) and _LOOKS_TYPED.match(x):
            bare = x.strip().lower()
            words = {"true": "true", "yes": "true", "on": "true", "y": "true",
                     "false": "false", "no": "false", "off": "false", "n": "false"}
            kind = "a boolean" if bare in words else "a number"
            raise ValueError(f"{x!r} is quoted text, not {kind}: a Boolean or numeric node must never get a "
                             f"string; write {what}: {words.get(bare, x.strip())} without quotes "
                             "(text is only for String nodes)")
    return v


class OutputAction(_Action):
    """An output a PLC reads: a value while the condition holds, with level / on_change / pulse semantics."""

    value: _SCALAR | list[_SCALAR] = Field(True, description="written while the condition holds (YAML type kept)")
    mode: WriteMode = WriteMode.LEVEL
    reset_value: _SCALAR | list[_SCALAR] | None = Field(
        None, description="written when the condition stops holding (pulse: after pulse_ms); default for "
                          "on_change and pulse with a boolean value: its opposite; level: none (nothing written)")
    pulse_ms: int = Field(500, ge=10, le=3_600_000, description="pulse mode: how long value is held")

    @field_validator("value", "reset_value", mode="before")
    @classmethod
    def _typed(cls, v: Any, info) -> Any:
        return v if v is None and info.field_name == "reset_value" else _check_write_value(v, info.field_name)

    @model_validator(mode="after")
    def _pulse_resets(self) -> OutputAction:
        if self.mode is WriteMode.PULSE and self.reset is None:
            raise ValueError(f"mode pulse with a non-boolean value ({self.value!r}) needs reset_value, "
                             "the value written when the pulse ends")
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

    def write_targets(self) -> list[tuple[str, str, str, Any]]:
        out = [(self.source, "value", self.node_id, self.value)]
        if self.reset is not None:
            out.append((self.source, "reset_value", self.node_id, self.reset))
        return out


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


class SparkplugCommandAction(OutputAction):
    """Write-back to a Sparkplug B edge node: an NCMD (node metric) or DCMD (device metric)."""

    source_fields: ClassVar[dict[str, str]] = {"source": "mqtt"}
    type: Literal["sparkplug_command"]
    source: str = Field(description="an mqtt source acting as the Sparkplug host")
    group: str = Field(pattern=r"^[^/+#]+$")
    edge_node: str = Field(pattern=r"^[^/+#]+$")
    device: str | None = Field(None, pattern=r"^[^/+#]+$", description="absent: an NCMD to the node itself")
    metric: str = Field(min_length=1, description="the metric name as the node's birth lists it")
    datatype: SparkplugDatatype | None = Field(None, description="default: the metric's type in the node's birth")

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
        return [(self.opcua_source, "node_id", self.node_id, True)] if self.node_id and self.opcua_source else []


class SaveSampleAction(_Action):
    type: Literal["save_sample"]
    dir: str | None = Field(None, description="default: <data_dir>/samples")
    max_per_hour: int = Field(600, ge=1)


# The action table: type -> (settings "module:Class", implementation "module:function"), imported
# lazily like devices.SOURCE_TYPES (edge_agent.action_base says what each must be). A new action is
# one module plus one row here: the config's union of actions is built from this table.
ACTION_PLUGINS: dict[str, tuple[str, str]] = {
    "mqtt_publish": ("edge_agent.config:MqttPublishAction", "edge_agent.actions:publish_result"),
    "opcua_write": ("edge_agent.config:OpcUaWriteAction", "edge_agent.actions:write_opcua"),
    "sparkplug_command": ("edge_agent.config:SparkplugCommandAction", "edge_agent.actions:send_sparkplug_command"),
    "alarm": ("edge_agent.config:AlarmAction", "edge_agent.actions:signal_alarm"),
    "save_sample": ("edge_agent.config:SaveSampleAction", "edge_agent.actions:save_sample"),
    "log": ("edge_agent.log_action:LogAction", "edge_agent.log_action:act"),
}
# type key -> settings class; each action is validated against its own class, so that an option
# typo gets the did-you-mean of its own action type
ACTION_TYPES: dict[str, type[ActionSettings]] = {k: load_object(v[0]) for k, v in ACTION_PLUGINS.items()}
Action = Annotated[Union[tuple(ACTION_TYPES.values())], Field(discriminator="type")]  # noqa: UP007


class ForwardSettings(_Model):
    """Readings forwarded as they are, without a model: to an MQTT broker and/or the cloud outbox."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    source: str
    tags: list[str] = Field(default_factory=list, description="empty: every scalar tag (arrays only when named)")
    to: str | None = Field(None, description="an mqtt source to publish through")
    topic: str | None = Field(None, description="default: factory/<site>/<line>/<agent>/tags/<name>")
    qos: Literal[0, 1] = 0
    outbox: bool = Field(False, description="also queue each forwarded reading for the cloud (kind telemetry)")
    deadband: float = Field(0.0, ge=0, description="a number is forwarded when it moved more than this; "
                                                   "0: every reading")
    min_interval_ms: int = Field(0, ge=0, description="at most one reading per tag this often; 0: no limit")

    @model_validator(mode="after")
    def _somewhere(self) -> ForwardSettings:
        if self.to is None and not self.outbox:
            raise ValueError("forward needs a destination: to: <an mqtt source>, or outbox: true")
        return self


class RuleSettings(_Model):
    """A rule on one plain tag: scaled, compared with a threshold (with hysteresis), and acted on with
    the same actions as a model's result (verdict NG while the rule is active, score = scaled value)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    source: str
    tag: str
    scale: float = Field(1.0, description="value = reading * scale + offset")
    offset: float = 0.0
    above: float | None = Field(None, description="active when value > above")
    below: float | None = Field(None, description="active when value < below")
    hysteresis: float = Field(0.0, ge=0, description="clears only past the threshold by this much")
    actions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _threshold(self) -> RuleSettings:
        if self.above is None and self.below is None:
            raise ValueError("a rule needs a threshold: above: <value> and/or below: <value>")
        return self


class AgentConfig(_Model):
    agent: AgentSection
    trusted_keys: list[str] = Field(default_factory=list, description="public keys (.pub) or folders of them")
    sources: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    pipelines: list[PipelineSettings] = Field(default_factory=list)
    actions: dict[str, Action] = Field(default_factory=dict)
    forward: list[ForwardSettings] = Field(default_factory=list, description="tags forwarded without a model")
    rules: list[RuleSettings] = Field(default_factory=list, description="thresholds on plain tags -> actions")
    http: HttpSettings = HttpSettings()
    outbox: OutboxSettings | None = Field(None, description="durable outbox; on by default when cloud is set")
    upload: SampleSelectionSettings | None = Field(None, description="which inputs are uploaded as samples")
    cloud: CloudSettings | None = Field(None, description="the fleet service (uplink, heartbeats, model delivery)")
    log_json: bool = False
    base_dir: str = Field(".", description="set by load_config: the config file's folder")
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What validation could not be sure of (e.g. a tag against a browse name guessed offline)."""
        return self._warnings

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

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _substitute(node: Any, loc: str, errors: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, f"{loc}.{k}" if loc else str(k), errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, f"{loc}[{i}]", errors) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        def repl(m: re.Match) -> str:
            val = os.environ.get(m.group(1), m.group(2))
            if val is None:
                errors.append(f"{loc}: environment variable {m.group(1)} is not set "
                              f"(write ${{{m.group(1)}:-default}} to give a default)")
                return ""
            return val
        return _ENV.sub(repl, node)
    return node


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


def _pydantic_errors(exc: ValidationError, model: Any, prefix: tuple, where: str) -> list[str]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            key = loc[-1]
            known = _fields_at(model, tuple(err["loc"])[:-1])
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; expected one of {sorted(known)}" if known else "")
            out.append(f"{where}: {_fmt_loc(loc)}: unknown option {key!r}{hint}")
        elif err["type"] == "missing":
            out.append(f"{where}: {_fmt_loc(loc)}: required option is missing")
        elif err["type"] == "union_tag_invalid":
            tag, expected = err["ctx"]["tag"], [t.strip(" '") for t in err["ctx"]["expected_tags"].split(",")]
            out.append(f"{where}: {_fmt_loc(loc)}.{err['ctx']['discriminator'].strip(chr(39))}: unknown type "
                       f"{tag!r}{_did_you_mean(str(tag), expected)}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            found = err.get("input")
            shown = "" if isinstance(found, dict | list) or found is None or repr(found) in msg else f" (found {found!r})"
            out.append(f"{where}: {_fmt_loc(loc)}: {msg}{shown}")
    return out


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else (f"; defined: {sorted(known)}" if known else "; none defined")


def parse_config(data: Any, where: str = "<config>", base_dir: str = ".", local_checks: bool = True) -> AgentConfig:
    """``local_checks=False``: what only the agent's own machine can tell is not checked (files exist, the
    environment variables are set): the cloud's check of a fleet configuration (``edge_agent.fleet_config``)."""
    errors: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError([f"{where}: expected a mapping at the top level (agent:, sources:, models:, pipelines: ...)"])
    sub_errors: list[str] = []
    data = _substitute(data, "", sub_errors)
    if local_checks:
        errors += [f"{where}: {e}" for e in sub_errors]
    raw_sources = data.get("sources") or {}
    sources: dict[str, Any] = {}
    if not isinstance(raw_sources, dict):
        errors.append(f"{where}: sources: expected a mapping of source name -> settings")
        raw_sources = {}
    for name, raw in raw_sources.items():
        if not isinstance(raw, dict) or "type" not in raw:
            errors.append(f"{where}: sources.{name}.type: required; one of {sorted(SOURCE_TYPES)}")
            continue
        typ = raw["type"]
        if typ not in SOURCE_TYPES:
            errors.append(f"{where}: sources.{name}.type: unknown source type {typ!r}{_did_you_mean(str(typ), SOURCE_TYPES)}")
            continue
        cls = load_object(SOURCE_TYPES[typ][0])
        try:
            sources[name] = cls.model_validate(raw)
        except ValidationError as exc:
            errors += _pydantic_errors(exc, cls, ("sources", name), where)
    # Each section and each entry is validated on its own, so that one bad entry does not hide
    # the problems of the others, and cross-references are checked over everything named.
    from pydantic import TypeAdapter

    known = set(AgentConfig.model_fields) - {"base_dir"}
    for key in data:
        if key not in known:
            errors.append(f"{where}: {key}: unknown option {key!r}{_did_you_mean(str(key), known)}")
    parts: dict[str, Any] = {"base_dir": base_dir, "sources": sources}

    def one(loc: tuple, adapter_type: Any, value: Any) -> Any:
        try:
            return TypeAdapter(adapter_type).validate_python(value)
        except ValidationError as exc:
            errors.extend(_pydantic_errors(exc, adapter_type, loc, where))
            return None

    if "agent" not in data:
        errors.append(f"{where}: agent: required section is missing (agent: {{id: ..., site: ..., line: ...}})")
    else:
        parts["agent"] = one(("agent",), AgentSection, data["agent"])
    for key, typ in (("trusted_keys", list[str]), ("http", HttpSettings), ("log_json", bool),
                     ("outbox", OutboxSettings), ("upload", SampleSelectionSettings), ("cloud", CloudSettings)):
        if key in data:
            v = one((key,), typ, data[key])
            if v is not None:
                parts[key] = v
    def typed(key: str, typ: Any, r: Any) -> Any:
        if key == "actions" and isinstance(r, dict) and isinstance(r.get("type"), str) and r["type"] in ACTION_TYPES:
            return ACTION_TYPES[r["type"]]
        return typ

    for key, typ in (("models", ModelConfig), ("actions", Action)):
        raw = data.get(key) or {}
        if not isinstance(raw, dict):
            errors.append(f"{where}: {key}: expected a mapping of name -> settings")
            raw = {}
        parts[key] = {n: v for n, v in ((n, one((key, n), typed(key, typ, r), r)) for n, r in raw.items())
                      if v is not None}
        parts[f"_{key}_names"] = set(raw)
    raw_p = data.get("pipelines") or []
    if not isinstance(raw_p, list):
        errors.append(f"{where}: pipelines: expected a list of pipelines")
        raw_p = []
    parts["pipelines"] = [one(("pipelines", i), PipelineSettings, r) for i, r in enumerate(raw_p)]
    for key, typ in (("forward", ForwardSettings), ("rules", RuleSettings)):
        raw_l = data.get(key) or []
        if not isinstance(raw_l, list):
            errors.append(f"{where}: {key}: expected a list")
            raw_l = []
        parts[key] = [v for v in (one((key, i), typ, r) for i, r in enumerate(raw_l)) if v is not None]
    names = {"sources": set(raw_sources), "models": parts.pop("_models_names"),
             "actions": parts.pop("_actions_names")}
    if parts.get("agent") is None:
        parts["agent"] = AgentSection.model_construct(id="?")
    cfg = AgentConfig.model_construct(**{k: v for k, v in parts.items()})
    warnings: list[str] = []
    errors += _cross_check(cfg, where, names, warnings, local_checks)
    if errors:
        raise ConfigError(errors)
    out = AgentConfig.model_validate({**cfg.model_dump(exclude={"sources"}), "sources": {}}).model_copy(
        update={"sources": sources})
    out.warnings.extend(warnings)
    return out


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


def _guess_tag(node_id: str) -> str | None:
    """The browse name an OPC UA node most likely has: the last part of a string identifier
    (``ns=2;s=Line1.Press.Temp`` -> ``Temp``); None for numeric, GUID and opaque identifiers."""
    m = re.search(r";s=(.+)$", node_id) or (re.match(r"^s=(.+)$", node_id))
    if not m:
        return None
    last = re.split(r"[./\]:|]", m.group(1).replace('"', ""))[-1]
    return last or None


def source_tags(src: Any) -> tuple[set[str], bool] | None:
    """Tags a source will produce, known before start, and whether some are guesses (OPC UA browse
    names read from string NodeIds). None when they cannot be known offline (wildcard topics, every
    JSON field, Sparkplug metric names)."""
    typ = getattr(src, "type", None)
    if typ == "opcua":
        tags, guessed = set(), False
        for n in src.nodes:
            t = n.tag or _guess_tag(n.node_id)
            if t is None:
                return None
            guessed |= n.tag is None
            tags.add(t)
        return tags, guessed
    if typ == "mqtt":
        tags = set()
        for sub in src.subscriptions:
            if sub.codec != "json" or not sub.json_mapping.values:
                return None
            if sub.json_mapping.tag_prefix_topic:
                if "+" in sub.topic or "#" in sub.topic:
                    return None
                tags.update(f"{sub.topic}/{t}" for t in sub.json_mapping.values.values())
            else:
                tags.update(sub.json_mapping.values.values())
        return tags, False
    return None


def _check_window_tags(cfg: AgentConfig, loc: str, p: PipelineSettings, manifest: Any,
                       warnings: list[str]) -> list[str]:
    """The model's scalar inputs are carried by the window, and the window's tags are produced by the source."""
    errors = []
    w = p.window
    inputs = w.scalar_inputs  # tag -> model input
    pre = getattr(manifest, "preprocessing", None)
    if pre is not None and getattr(pre, "kind", None) == "signal":
        carried = set(inputs.values())
        for s in pre.scalars:
            if s in carried:
                continue
            close = {c.lower(): c for c in carried}.get(s.lower()) or next(
                iter(difflib.get_close_matches(s, list(carried), n=1, cutoff=0.6)), None)
            fix = (f"map the tag to it: scalars: {{{s}: {close}}}" if close else
                   f"add it: scalars: {{{s}: <the source's tag for it>}}")
            errors.append(f"{loc}.window.scalars: model {manifest.name} needs scalar input {s!r}, which the window "
                          f"does not carry (it carries {sorted(carried)}); every window would be refused; {fix}")
        if w.sample_rate_hz is not None:
            from model_packager.condition import RateError, resample_plan

            try:
                resample_plan(w.sample_rate_hz, pre.sample_rate_hz, f"tag {w.waveform!r}")
            except RateError as exc:
                errors.append(f"{loc}.window.sample_rate_hz: {exc} (model {manifest.name})")
        if w.size_samples is not None and w.size_samples != pre.window_samples:
            errors.append(f"{loc}.window.size_samples: {w.size_samples}, but model {manifest.name} takes windows of "
                          f"{pre.window_samples} samples; every window would be refused; remove size_samples")
    known = source_tags(cfg.sources.get(p.source))
    if known is None:
        return errors
    wanted = [("window.waveform", w.waveform)] + [
        (f"window.scalars.{name}" if isinstance(w.scalars, dict) else f"window.scalars[{i}]", tag)
        for i, (tag, name) in enumerate(inputs.items())]
    for field, tag in wanted:
        _tag_check(f"{loc}.{field}", p.source, tag, known, errors, warnings)
    return errors


def _tag_check(loc: str, source: str, tag: str, known: tuple[set[str], bool], errors: list[str],
               warnings: list[str]) -> None:
    """A tag the source does not produce: an error when the source's tags are certain (explicit `tag:`,
    MQTT mappings), or when it differs only in case from a browse name guessed from a NodeId (the
    usual slip; `tag:` on the node settles it either way); a warning otherwise, since a guessed
    browse name may not be the server's."""
    tags, guessed = known
    if tag in tags:
        return
    by_case = {t.lower(): t for t in tags}.get(tag.lower())
    close = by_case or next(iter(difflib.get_close_matches(tag, list(tags), n=1, cutoff=0.6)), None)
    hint = f"did you mean {close!r}?" if close else f"it gives {sorted(tags)}"
    how = (" (OPC UA: a node's tag is its `tag:` or, by default, its browse name, here guessed from the NodeId; "
           "set `tag:` on the node to name it, or check with `edge-agent validate --online`)") if guessed else ""
    msg = f"{loc}: source {source!r} produces no tag {tag!r}; {hint}{how}"
    (warnings if guessed and not by_case else errors).append(msg)


def _check_tag_map(where: str, name: str, src: Any, warnings: list[str]) -> None:
    """A Sparkplug tag_map key that starts with the group its subscription names renames nothing
    (keys are '{edge_node}/{device}/{metric}'): a warning, as an edge node may be named like its group."""
    if getattr(src, "type", None) != "mqtt" or not src.sparkplug.tag_map:
        return
    groups = {sub.topic.split("/")[1] for sub in src.subscriptions
              if sub.codec == "sparkplug_b" and len(sub.topic.split("/")) > 1
              and sub.topic.split("/")[1] not in ("+", "#")}
    for key in src.sparkplug.tag_map:
        head, _, rest = key.partition("/")
        if head in groups and rest.count("/") >= 1:
            warnings.append(f"{where}: sources.{name}.sparkplug.tag_map.{key}: starts with the Sparkplug group "
                            f"{head!r}, so it would match no metric; keys are '{{edge_node}}/{{device}}/{{metric}}': "
                            f"write {rest!r}")


def _check_forward_and_rules(cfg: AgentConfig, where: str, named: dict[str, set], pipelines: set[str],
                             warnings: list[str]) -> list[str]:
    errors = []

    def source(loc: str, ref: str, want: str | None = None) -> None:
        if ref not in named["sources"]:
            errors.append(f"{loc}: unknown source {ref!r}{_did_you_mean(ref, named['sources'])}")
        elif ref in cfg.sources and want and cfg.source_type(ref) != want:
            errors.append(f"{loc}: {ref!r} is a {cfg.source_type(ref)} source; this needs a {want} source")
        elif ref in cfg.sources and cfg.source_type(ref) == "camera":
            errors.append(f"{loc}: {ref!r} is a camera; tags come from opcua or mqtt sources")

    seen: set[str] = set()
    for i, f in enumerate(cfg.forward):
        loc = f"{where}: forward[{i}]"
        if f.name in seen:
            errors.append(f"{loc}.name: {f.name!r} is used twice")
        seen.add(f.name)
        source(f"{loc}.source", f.source)
        if f.to is not None:
            source(f"{loc}.to", f.to, "mqtt")
        if f.outbox and cfg.outbox is None and cfg.cloud is None:
            errors.append(f"{loc}.outbox: there is no outbox; add an outbox: section (or cloud:), or set outbox: false")
    for i, r in enumerate(cfg.rules):
        loc = f"{where}: rules[{i}]"
        if r.name in seen or r.name in pipelines:
            errors.append(f"{loc}.name: {r.name!r} is already the name of a pipeline, rule or forward")
        seen.add(r.name)
        source(f"{loc}.source", r.source)
        for j, a in enumerate(r.actions):
            if a not in named["actions"]:
                errors.append(f"{loc}.actions[{j}]: unknown action {a!r}{_did_you_mean(a, named['actions'])}")
            elif a in cfg.actions and cfg.actions[a].type == "save_sample":
                errors.append(f"{loc}.actions[{j}]: {a!r} saves model inputs; a rule has none, remove it")
        known = source_tags(cfg.sources.get(r.source))
        if known is not None:
            _tag_check(f"{loc}.tag", r.source, r.tag, known, errors, warnings)
    return errors


def _cross_check(cfg: AgentConfig, where: str, named: dict[str, set], warnings: list[str],
                 local_checks: bool = True) -> list[str]:
    errors = []
    manifests = _manifests(cfg)
    names = set()
    for i, p in enumerate(cfg.pipelines):
        if p is None:
            continue
        loc = f"{where}: pipelines[{i}]"
        if p.name in names:
            errors.append(f"{loc}.name: pipeline name {p.name!r} is used twice")
        names.add(p.name)
        stype = cfg.source_type(p.source)
        if p.source not in named["sources"]:
            errors.append(f"{loc}.source: unknown source {p.source!r}{_did_you_mean(p.source, named['sources'])}")
        if p.model not in named["models"]:
            errors.append(f"{loc}.model: unknown model slot {p.model!r}{_did_you_mean(p.model, named['models'])}")
        kind = p.kind or ("frame" if stype == "camera" else "signal")
        if stype is not None:  # (a missing or invalid source is already reported)
            if kind == "frame" and stype != "camera":
                errors.append(f"{loc}.kind: a frame pipeline needs a camera source; {p.source!r} is {stype}")
            if stype == "camera" and kind == "signal":
                errors.append(f"{loc}.kind: a signal pipeline needs an opcua or mqtt source; {p.source!r} is a camera")
            if kind == "signal" and p.window is None:
                errors.append(f"{loc}.window: a signal pipeline needs a window (waveform tag, size, hop)")
        if p.baseline is not None and kind != "signal":
            errors.append(f"{loc}.baseline: a baseline learns from vibration windows; {p.name!r} is a frame pipeline")
        if p.window is not None and p.window.by == "time" and p.window.hop_s is None:
            errors.append(f"{loc}.window.hop_s: required when by is 'time'")
        if p.window is not None and stype is not None and stype != "camera":
            errors += _check_window_tags(cfg, loc, p, manifests.get(p.model), warnings)
        for j, a in enumerate(p.actions):
            if a not in named["actions"]:
                errors.append(f"{loc}.actions[{j}]: unknown action {a!r}{_did_you_mean(a, named['actions'])}")
    errors += _check_forward_and_rules(cfg, where, named, names, warnings)
    for sname, src in cfg.sources.items():
        _check_tag_map(where, sname, src, warnings)
    for name, a in cfg.actions.items():
        loc = f"{where}: actions.{name}"
        for field, typ in a.source_fields.items():  # each action type names its own source fields
            ref = getattr(a, field)
            if ref is None:
                continue
            if ref not in named["sources"]:
                errors.append(f"{loc}.{field}: unknown source {ref!r}{_did_you_mean(ref, named['sources'])}")
            elif ref in cfg.sources and cfg.source_type(ref) != typ:
                errors.append(f"{loc}.{field}: {ref!r} is a {cfg.source_type(ref)} source; this needs a {typ} source")
        errors += [f"{loc}{'.' + field if field else ''}: {msg}" for field, msg in a.problems()]
        if a.when is not None:
            try:
                compile_condition(a.when, _labels_for(cfg, name, manifests))
            except ConditionError as exc:
                errors.append(f"{loc}.when: {exc}")
    if local_checks:
        errors += _file_errors(cfg, where)
    if cfg.models and not cfg.trusted_keys:
        errors.append(f"{where}: trusted_keys: at least one public key is needed to verify model packages")
    return errors


def _file_errors(cfg: AgentConfig, where: str) -> list[str]:
    """Files the config names that do not exist on this machine."""
    errors = []
    for name, m in cfg.models.items():
        if m.package and not cfg.path(m.package).exists():
            errors.append(f"{where}: models.{name}.package: file {m.package} does not exist")
    if cfg.cloud is not None:
        for f in ("ca_file", "cert_file", "key_file"):
            if not cfg.path(getattr(cfg.cloud, f)).exists():
                errors.append(f"{where}: cloud.{f}: {getattr(cfg.cloud, f)} does not exist "
                              "(create certificates with `cloud-trainer pki`)")
    for i, k in enumerate(cfg.trusted_keys):
        if not cfg.path(k).exists():
            errors.append(f"{where}: trusted_keys[{i}]: {k} does not exist")
    return errors


def load_config(path: str | Path) -> AgentConfig:

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from exc
    return parse_config(read_yaml(text, str(path)), str(path), str(path.parent.resolve()))


def read_yaml(text: str, where: str) -> Any:
    """The YAML document of a config (``ConfigError`` naming the line and column where it is not YAML)."""
    try:  # libyaml's loader where PyYAML has it (~10x the pure-Python one: part of every start)
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{where}: not valid YAML{at}: {getattr(exc, 'problem', exc)}"]) from exc

