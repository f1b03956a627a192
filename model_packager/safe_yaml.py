"""Bounded YAML: the safe loader with limits on size, nesting depth, aliases and expanded nodes.

``yaml.safe_load`` constructs only plain types, but it is not bounded: PyYAML's composer recurses
once per nesting level (a 20,000-deep document raises ``RecursionError``), aliases let a few
hundred bytes stand for a billion nodes that a validator then walks, and constructing an implicit
timestamp can raise ``ValueError`` (or ``AttributeError`` for ``!!timestamp x``). ``load_bounded`` runs the pure-Python safe loader with a
depth counter in the composer, counts aliases and the nodes they stand for, and turns every
failure into ``ManifestError`` with one line naming ``where``.
"""

from __future__ import annotations

import yaml

from model_packager.errors import ManifestError
from model_packager.text import printable

MAX_YAML_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_ALIASES = 64
MAX_NODES = 50_000  # after alias expansion


class _Limit(yaml.YAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0
        self._weight: dict[int, int] = {}  # id(node) -> nodes it stands for, for aliases

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Limit(f"more than {MAX_ALIASES} aliases")
            anchor = self.peek_event().anchor
            node = self.anchors.get(anchor)
            self._nodes += self._weight.get(id(node), 1)
            if self._nodes > MAX_NODES:
                raise _Limit(f"more than {MAX_NODES} nodes once aliases are expanded")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limit(f"nested deeper than {MAX_DEPTH} levels")
        before = self._nodes
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Limit(f"more than {MAX_NODES} nodes")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._weight[id(node)] = self._nodes - before
        return node


def load_bounded(data: bytes | str, where: str, *, max_bytes: int = MAX_YAML_BYTES):
    """Parse one YAML document from untrusted bytes within the limits above."""
    where = printable(where)
    if len(data) > max_bytes:
        raise ManifestError(f"{where}: YAML of {len(data)} bytes exceeds the {max_bytes} byte limit; refused",
                            code="yaml_too_large")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{where}: YAML is not UTF-8 ({exc.reason} at byte {exc.start})",
                                code="bad_yaml") from None
    loader = None
    try:
        loader = _BoundedLoader(data)  # the reader already checks characters here
        return loader.get_single_data()
    except _Limit as exc:
        raise ManifestError(f"{where}: YAML {exc}; refused", code="yaml_limits") from None
    except Exception as exc:  # PyYAML's constructors raise more than YAMLError (ValueError, AttributeError, ...)
        first = printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ManifestError(f"{where}: not valid YAML ({first})", code="bad_yaml") from None
    finally:
        if loader is not None:
            loader.dispose()
