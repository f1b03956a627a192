"""Bounded YAML: the safe loader with limits on size, nesting depth, aliases and expanded nodes.

``yaml.safe_load`` constructs only plain types, but it is not bounded: PyYAML's composer recurses
once per nesting level (a 20,000-deep document raises ``RecursionError``), aliases let a few
hundred bytes stand for a billion nodes that a validator then walks, and constructing an implicit
timestamp can raise ``ValueError`` (or ``AttributeError`` for ``!!timestamp x``). ``load_bounded``
checks the limits first, on the parser's events (depth, aliases, and the nodes each alias stands
for), and only then composes and constructs the document: with libyaml's C loader
(``yaml.CSafeLoader``, ~10x faster than the pure-Python one) where PyYAML was built with it, else
with the pure-Python safe loader, whose composer also counts. Every failure becomes
``ManifestError`` with one line naming ``where``.
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


_CLoader = getattr(yaml, "CSafeLoader", None)


def _check_events(
    loader, max_depth: int = MAX_DEPTH, max_aliases: int = MAX_ALIASES, max_nodes: int = MAX_NODES
) -> None:
    """The limits, on the parser's events: nothing is composed (no recursion, no alias expanded)."""
    depth = nodes = aliases = 0
    open_nodes: list[tuple[int, str | None]] = []  # (nodes before it, its anchor) of each open collection
    weight: dict[str, int] = {}  # anchor -> nodes it stands for
    while loader.check_event():
        ev = loader.get_event()
        if isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > max_aliases:
                raise _Limit(f"more than {max_aliases} aliases")
            nodes += weight.get(ev.anchor or "", 1)  # an alias always names its anchor
        elif isinstance(ev, yaml.ScalarEvent | yaml.CollectionStartEvent):
            if depth + 1 > max_depth:
                raise _Limit(f"nested deeper than {max_depth} levels")
            nodes += 1
            if isinstance(ev, yaml.CollectionStartEvent):
                depth += 1
                open_nodes.append((nodes - 1, ev.anchor))
            elif ev.anchor is not None:
                weight[ev.anchor] = 1
        elif isinstance(ev, yaml.CollectionEndEvent):
            depth -= 1
            before, anchor = open_nodes.pop()
            if anchor is not None:
                weight[anchor] = nodes - before
        else:
            continue
        if nodes > max_nodes:
            raise _Limit(f"more than {max_nodes} nodes" + (" once aliases are expanded" if aliases else ""))


def check_limits(text: str, *, max_depth: int, max_aliases: int, max_nodes: int) -> str | None:
    """Which limit ``text`` passes (nesting depth, aliases, nodes once aliases are expanded), as a phrase
    such as ``"more than 200000 nodes once aliases are expanded"``; None when within them. Only the
    parser's events are read (nothing is composed or expanded). Not valid YAML also gives None: the
    caller's own load reports that, with its line and column."""
    loader = (_CLoader or yaml.SafeLoader)(text)
    try:
        _check_events(loader, max_depth, max_aliases, max_nodes)
    except _Limit as exc:
        return str(exc)
    except yaml.YAMLError as exc:
        if "flow level" in str(exc) or "max depth" in str(exc):  # libyaml's own nesting cap
            return f"nested deeper than {max_depth} levels"
        return None
    finally:
        loader.dispose()
    return None


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
        raise ManifestError(
            f"{where}: YAML of {len(data)} bytes exceeds the {max_bytes} byte limit; refused",
            code="yaml_too_large",
        )
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                f"{where}: YAML is not UTF-8 ({exc.reason} at byte {exc.start})", code="bad_yaml"
            ) from None
    loader = None
    try:
        if _CLoader is None:
            loader = _BoundedLoader(data)  # the reader already checks characters here
            return loader.get_single_data()
        loader = _CLoader(data)
        _check_events(loader)
        loader.dispose()
        loader = _CLoader(data)
        return loader.get_single_data()
    except _Limit as exc:
        raise ManifestError(f"{where}: YAML {exc}; refused", code="yaml_limits") from None
    except yaml.YAMLError as exc:
        if _CLoader is not None and ("flow level" in str(exc) or "max depth" in str(exc)):
            # libyaml's scanner reads a run of opening brackets ahead and stops at its own nesting cap
            raise ManifestError(
                f"{where}: YAML nested deeper than {MAX_DEPTH} levels; refused", code="yaml_limits"
            ) from None
        first = printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ManifestError(f"{where}: not valid YAML ({first})", code="bad_yaml") from None
    except (
        Exception
    ) as exc:  # PyYAML's constructors raise more than YAMLError (ValueError, AttributeError, ...)
        first = printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ManifestError(f"{where}: not valid YAML ({first})", code="bad_yaml") from None
    finally:
        if loader is not None:
            loader.dispose()
