"""Sparkplug B payloads written field by field into the protobuf schema, as other vendors' nodes (Eclipse
Tahu's Python and Java libraries, Ignition) build them: not through ``protocols.sparkplug.encode``, so a test
can send what this project's encoder never would (a datatype left out, a value in the other field)."""

from __future__ import annotations

from typing import Any


def pb_metric(parent: Any, name=None, alias=None, datatype=None, **value) -> Any:
    """A metric added to ``parent`` (a ``Payload`` or a ``Template``), each given field set, no other."""
    m = parent.metrics.add()
    if name is not None:
        m.name = name
    if alias is not None:
        m.alias = alias
    if datatype is not None:
        m.datatype = datatype
    for k, v in value.items():
        setattr(m, k, v)
    return m
