"""The agent's MQTT topic scheme: what an edge agent publishes, and where.

    {root}/{site}/{line}/{agent}/{kind}[/{pipeline}]

``kind`` is one of ``results`` (inference results, JSON), ``events`` (agent events),
``alarms`` (alarms raised by actions), ``tags`` (readings forwarded without a model, per forward
rule) and ``status`` (retained "online"/"offline"; the
agent sets an MQTT last will of "offline" on it). The default root is ``factory``.
Every segment must be non-empty and free of ``+``, ``#``, ``/`` and NUL so that a topic
can never be mistaken for a wildcard filter. Limits: pure string functions, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_ROOT = "factory"
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"


class TopicError(ValueError):
    """A topic or a topic segment that does not follow the scheme."""


class Kind(enum.StrEnum):
    RESULTS = "results"
    EVENTS = "events"
    ALARMS = "alarms"
    STATUS = "status"
    TAGS = "tags"


_FORBIDDEN = ("+", "#", "/", "\x00")


def validate_segment(name: str, value: str) -> str:
    """Return ``value`` if it is a legal topic segment, else raise ``TopicError`` naming ``name``."""
    if not isinstance(value, str) or not value:
        raise TopicError(f"topic segment {name!r} is empty; give it a name such as 'line1'")
    bad = [c for c in _FORBIDDEN if c in value]
    if bad:
        raise TopicError(
            f"topic segment {name}={value!r} contains {bad[0]!r}; "
            "'+', '#', '/' and NUL are not allowed in names"
        )
    return value


@dataclass(frozen=True, slots=True)
class AgentTopic:
    site: str
    line: str
    agent: str
    kind: Kind
    pipeline: str | None = None
    root: str = DEFAULT_ROOT

    def __str__(self) -> str:
        return build_topic(self.site, self.line, self.agent, self.kind, self.pipeline, root=self.root)


def build_topic(
    site: str,
    line: str,
    agent: str,
    kind: Kind | str,
    pipeline: str | None = None,
    *,
    root: str = DEFAULT_ROOT,
) -> str:
    """Build ``{root}/{site}/{line}/{agent}/{kind}[/{pipeline}]``, validating every segment."""
    try:
        kind = Kind(kind)
    except ValueError:
        raise TopicError(
            f"topic kind {kind!r} is unknown; expected one of {[k.value for k in Kind]}"
        ) from None
    parts = [
        validate_segment("root", root),
        validate_segment("site", site),
        validate_segment("line", line),
        validate_segment("agent", agent),
        kind.value,
    ]
    if pipeline is not None:
        parts.append(validate_segment("pipeline", pipeline))
    return "/".join(parts)


def parse_topic(topic: str, *, root: str = DEFAULT_ROOT) -> AgentTopic:
    """Parse a topic built by ``build_topic``; raise ``TopicError`` on anything else."""
    parts = topic.split("/")
    if len(parts) not in (5, 6):
        raise TopicError(
            f"topic {topic!r} has {len(parts)} levels; expected {root}/site/line/agent/kind[/pipeline]"
        )
    if parts[0] != root:
        raise TopicError(f"topic {topic!r} does not start with root {root!r}")
    names = ("root", "site", "line", "agent", "kind", "pipeline")
    for name, value in zip(names, parts, strict=False):
        validate_segment(name, value)
    try:
        kind = Kind(parts[4])
    except ValueError:
        raise TopicError(
            f"topic {topic!r}: kind {parts[4]!r} is unknown; expected one of {[k.value for k in Kind]}"
        ) from None
    return AgentTopic(parts[1], parts[2], parts[3], kind, parts[5] if len(parts) == 6 else None, root)


def agent_filter(
    site: str = "+", line: str = "+", agent: str = "+", kind: Kind | str = "+", *, root: str = DEFAULT_ROOT
) -> str:
    """A subscription filter over agent topics; ``+`` matches any value, pipelines included via ``#``."""
    k = kind.value if isinstance(kind, Kind) else kind
    return f"{root}/{site}/{line}/{agent}/{k}/#"


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest including the parent level)."""
    f, t = filter_.split("/"), topic.split("/")
    for i, seg in enumerate(f):
        if seg == "#":
            return True
        if i >= len(t):
            return False
        if seg != "+" and seg != t[i]:
            return False
    return len(f) == len(t)


SHOWN_CHARS = 200  # characters of a topic from the wire (or a tag named after one) that a message quotes


def shown_topic(topic: str) -> str:
    """A topic from the wire, or a tag named after one, as a log line or error quotes it: its first
    ``SHOWN_CHARS`` characters and its length when longer. MQTT allows topics of 65,535 bytes; quoted whole,
    each log line, ``last_error`` and notice held 60 KB of one."""
    if len(topic) <= SHOWN_CHARS:
        return repr(topic)
    return f"{topic[:SHOWN_CHARS]!r}... ({len(topic)} characters)"
