"""Bounded YAML: the safe loader with limits on size, nesting depth, aliases and expanded nodes.

``yaml.safe_load`` constructs only plain types, but it is not bounded: PyYAML's composer recurses
once per nesting level (a 20,000-deep document raises ``RecursionError``), aliases let a few
hundred bytes stand for a billion nodes that a validator then walks, and constructing an implicit
timestamp can raise ``ValueError`` (or ``AttributeError`` for ``!!timestamp x``). ``load_bounded``
checks the limits first, on the parser's events (depth, aliases, and the nodes each alias stands
for), and only then composes and constructs the document: with libyaml's C loader
(``yaml.CSafeLoader``, ~10x faster than the pure-Python one) where PyYAML was built with it, else
with the pure-Python safe loader, whose composer also counts. A mapping that gives a key twice is
refused (``DuplicateKeyError``, naming the path and the lines): PyYAML would keep the last silently, so a
second ``agent:`` or a repeated model slot would replace the first without a word; so is a merge key
given twice in one mapping, and a key a mapping takes from those it merges (``<<: [*a, *b]``) whose value
PyYAML built otherwise than the YAML merge spec has it (the mapping's own, else the first merged mapping's
that gives it, recursively): PyYAML 6.0 dedups merged pairs by the identity of the key's string, so it
takes the last merged mapping's value for most keys, the first for one-character ones (one interned
string), and through a merge of a merge may take the value the middle mapping overrides. Mappings that
agree (``yes`` and ``true``, equal lists) are read as written. ``load_document`` loads a document with that
check and no limits (the agent's config, which checks its own limits with ``check_limits``). An alias
inside the very node its anchor names (``a: &a [*a]``), an anchor defined twice, and an alias chain whose
value nests deeper than the depth limit once expanded (each anchor nesting the one before a few levels
deeper) are refused with the limits: PyYAML builds a value that holds itself, or one hundreds of levels
deep, and every walk over it (a config's validation, a manifest's checks) recursed until
``RecursionError``, a traceback instead of an error naming the file.
In ``load_bounded`` every failure becomes ``ManifestError`` with one line naming ``where``.
"""

from __future__ import annotations

import decimal
from typing import Any

import yaml

from model_packager.errors import ManifestError
from model_packager.text import printable

MAX_YAML_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_ALIASES = 64
MAX_NODES = 50_000  # after alias expansion


class _Limit(yaml.YAMLError):
    pass


# what a YAML problem most likely is, where its words do not say (libyaml's, for a "\ud800" escape: JSON writes
# a character beyond U+FFFF as two such halves, and a lone one is what Python's surrogateescape or a bug made)
_HINTS = {
    "found invalid Unicode character escape code": (
        " (a \\uD800-\\uDFFF escape is half of a UTF-16 pair, no character: write the character itself, or "
        "\\U0001F600 for one beyond U+FFFF)"
    ),
}


_SCALARS = {  # the safe constructors that raise more than YAMLError on a bad value: tag -> what it reads
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date or time",
}


def _at_its_line(construct, kind: str):
    """``construct`` raising ``ConstructorError`` at the value's line and column instead of the bare
    ``ValueError`` (``2024-13-45``, an integer of more than 4300 digits), ``AttributeError``
    (``!!timestamp x``) or ``KeyError`` (``!!bool x``) that PyYAML's constructor raises."""

    def constructed(loader, node):
        try:
            return construct(loader, node)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            value = node.value if isinstance(node.value, str) else ""
            shown = repr(value) if len(value) <= 40 else f"{value[:20]!r}... ({len(value)} characters)"
            # ValueError says why (month must be in 1..12); KeyError and AttributeError say nothing useful
            why = f" ({str(exc).split(';')[0]})" if isinstance(exc, ValueError) else ""
            if isinstance(exc, ValueError) and str(exc).startswith("Exceeds the limit"):
                # Python's own words name its setting (sys.set_int_max_str_digits), not the file's value
                digits = sum(c.isdigit() for c in value)
                why = f" (too long a number: {digits} digits, more than any integer a config takes)"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown} as {kind}{why}; quote it if it is text", node.start_mark
            ) from None

    return constructed


def _with_scalar_lines(base: type) -> Any:
    cls: Any = type(f"_Unique{base.__name__}", (base,), {})
    for tag, kind in _SCALARS.items():
        cls.add_constructor(tag, _at_its_line(yaml.SafeLoader.yaml_constructors[tag], kind))
    return cls


_CLoader = _with_scalar_lines(yaml.CSafeLoader) if hasattr(yaml, "CSafeLoader") else None
_PyLoader = _with_scalar_lines(yaml.SafeLoader)


def _check_events(
    loader, max_depth: int = MAX_DEPTH, max_aliases: int = MAX_ALIASES, max_nodes: int = MAX_NODES
) -> None:
    """The limits, on the parser's events: nothing is composed (no recursion, no alias expanded). The depth
    counts what an alias stands for: a chain of anchors, each nesting the one before a few levels deeper,
    builds a value hundreds of levels deep that no written line shows (and every walk over it recursed
    until ``RecursionError``)."""
    depth = nodes = aliases = 0
    # each open collection: [nodes before it, its anchor, the height of its highest child, its kind ("map",
    # "seq", or "merge" for a list of mappings merged), nodes in it so far, whether its last key is "<<",
    # whether it is merged into its parent]
    open_nodes: list[list] = []
    weight: dict[str, int] = {}  # anchor -> nodes it stands for
    height: dict[str, int] = {}  # anchor -> levels it spans (a scalar 1)
    defined: dict[str, tuple[int, int]] = {}  # anchor -> its line and column (in this document)

    def spans(levels: int) -> None:
        if open_nodes and levels > open_nodes[-1][2]:
            open_nodes[-1][2] = levels

    def merged_here(ev) -> tuple[bool, bool]:
        """Whether the node ``ev`` opens is merged into the mapping it lies in (the value of ``<<``, or an item
        of the list that is): PyYAML flattens it into that mapping, so its own level is none there. Then
        whether it is a list item (that list is no level of the built value either)."""
        if not open_nodes:
            return False, False
        top = open_nodes[-1]
        if top[3] == "merge":
            return True, True
        if top[3] != "map":
            return False, False
        top[4] += 1
        if top[4] % 2:  # a key
            top[5] = isinstance(ev, yaml.ScalarEvent) and _is_merge_key(ev)
            return False, False
        return top[5], False

    while loader.check_event():
        ev = loader.get_event()
        if isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > max_aliases:
                raise _Limit(f"more than {max_aliases} aliases")
            if any(n[1] == ev.anchor for n in open_nodes):
                raise _Limit(_holds_itself(ev.anchor, ev.start_mark))
            merged, in_list = merged_here(ev)
            levels = height.get(ev.anchor or "", 1) - merged
            if depth - in_list + levels > max_depth:
                raise _Limit(_too_deep_expanded(max_depth, ev))
            spans(levels)
            nodes += weight.get(ev.anchor or "", 1)  # an alias always names its anchor
        elif isinstance(ev, yaml.ScalarEvent | yaml.CollectionStartEvent):
            if depth + 1 > max_depth:
                raise _Limit(f"nested deeper than {max_depth} levels")
            if ev.anchor is not None:
                if ev.anchor in defined:
                    raise _Limit(
                        f"anchor &{printable(ev.anchor)} defined twice "
                        f"({_positions([defined[ev.anchor], _at(ev)])}); give each its own name"
                    )
                defined[ev.anchor] = _at(ev)
            merged, in_list = merged_here(ev)
            nodes += 1
            if isinstance(ev, yaml.CollectionStartEvent):
                depth += 1
                if isinstance(ev, yaml.MappingStartEvent):
                    kind = "map"
                else:
                    kind = "merge" if merged and not in_list else "seq"
                open_nodes.append([nodes - 1, ev.anchor, 0, kind, 0, False, merged])
            else:
                spans(1)
                if ev.anchor is not None:
                    weight[ev.anchor] = height[ev.anchor] = 1
        elif isinstance(ev, yaml.CollectionEndEvent):
            depth -= 1
            before, anchor, highest, kind, _, _, merged = open_nodes.pop()
            # a merged mapping's keys, a merged list's mappings' keys, are the parent's: no level of their own
            spans(highest if merged else 1 + highest)
            if anchor is not None:
                weight[anchor] = nodes - before
                height[anchor] = (2 if kind == "merge" else 1) + highest
        else:
            if isinstance(ev, yaml.DocumentStartEvent):
                defined.clear()  # each document its own anchors
            continue
        if nodes > max_nodes:
            raise _Limit(f"more than {max_nodes} nodes" + (" once aliases are expanded" if aliases else ""))


def _is_merge_key(ev) -> bool:
    """Whether a scalar event is a merge key: ``<<`` written plain (the resolver's), or tagged ``!!merge``."""
    if ev.tag is not None:
        return bool(ev.tag == _MERGE)
    return bool(ev.implicit[0] and ev.value == "<<")


def _too_deep_expanded(max_depth: int, alias) -> str:
    """An alias chain with no cycle, each anchor nesting the one before a few levels deeper: the value is
    hundreds of levels deep though no line is, and every walk over it recursed until ``RecursionError``."""
    line, column = _at(alias)
    return (
        f"nested deeper than {max_depth} levels once aliases are expanded "
        f"(alias *{printable(str(alias.anchor))} at line {line}, column {column})"
    )


def _holds_itself(anchor: str | None, mark) -> str:
    """The limit a recursive alias passes: PyYAML builds a list or mapping that holds itself, which every
    walk over the document (validation, the manifest's checks) follows until ``RecursionError``."""
    name = printable(str(anchor))
    return (
        f"alias *{name} at line {mark.line + 1}, column {mark.column + 1} lies inside the &{name} it names "
        "(a value that holds itself)"
    )


def where_and_why(exc: BaseException) -> str | None:
    """``at line 3, column 8: found invalid Unicode character escape code (a \\uD800-\\uDFFF escape ...)``: where a
    YAML error is and what it is, with a hint where its words do not say (``_HINTS``); None for an error
    without a place. PyYAML's message opens with its context (``while parsing a quoted scalar``) instead."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return None
    return f"at line {mark.line + 1}, column {mark.column + 1}: {printable(problem)}{_HINTS.get(problem, '')}"


def check_limits(text: str, *, max_depth: int, max_aliases: int, max_nodes: int) -> str | None:
    """Which limit ``text`` passes (nesting depth, aliases, nodes once aliases are expanded), as a phrase
    such as ``"more than 200000 nodes once aliases are expanded"``; None when within them. Only the
    parser's events are read (nothing is composed or expanded). Not valid YAML also gives None: the
    caller's own load reports that, with its line and column."""
    loader = (_CLoader or _PyLoader)(text)
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


_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """Mappings that give a key more than once: ``duplicates`` lists ``(path, [(line, column), ...])``,
    1-based, each path as a config error names it (``models.vision``, ``pipelines[0].name``); ``merged``
    the keys a mapping takes from those it merges (``<<: [*a, *b]``) whose value PyYAML built otherwise than
    the YAML merge spec has it, with where the spec's value is and where the one PyYAML took is."""

    def __init__(
        self,
        duplicates: list[tuple[str, list[tuple[int, int]]]],
        merged: list[tuple[str, list[tuple[int, int]]]] | None = None,
    ) -> None:
        self.duplicates = duplicates
        self.merged = merged or []
        super().__init__("; ".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per repeated key: ``models.vision: key given twice (lines 12 and 30); keep one``; the first
        ``MAX_LINES`` and a line counting the others."""
        lines = self._all_lines()
        if len(lines) > self.MAX_LINES:
            lines = lines[: self.MAX_LINES] + [f"and {len(lines) - self.MAX_LINES} more"]
        return lines

    MAX_LINES = 20

    def _all_lines(self) -> list[str]:
        return [
            f"{path}: key given {_times(len(at))} ({_positions(at)}); keep one"
            for path, at in self.duplicates
        ] + [
            f"{path}: given differently in the mappings it merges ({_spec_and_took(at)}): YAML readers differ "
            "on which one wins; give it in this mapping itself"
            for path, at in self.merged
        ]


def _spec_and_took(at: list[tuple[int, int]]) -> str:
    """``merge spec: line 4; PyYAML took line 5``: where the value the YAML merge spec gives is, then the one
    PyYAML built (columns where both are on one line; ``another`` where it was not searched)."""
    spec = at[0]
    if len(at) < 2:
        return f"merge spec: line {spec[0]}; PyYAML took another"
    took = at[1]
    if took[0] == spec[0]:
        return f"merge spec: line {spec[0]}, column {spec[1]}; PyYAML took column {took[1]}"
    return f"merge spec: line {spec[0]}; PyYAML took line {took[0]}"


def _times(n: int) -> str:
    return "twice" if n == 2 else f"{n} times"


def _positions(at: list[tuple[int, int]]) -> str:
    if len(at) == 1:
        return f"line {at[0][0]} and another"
    lines = {line for line, _ in at}
    if len(lines) == len(at):
        return "lines " + _listed([str(line) for line, _ in at])
    if len(lines) == 1:  # a flow mapping on one line: the columns tell them apart
        return f"line {at[0][0]}, columns " + _listed([str(col) for _, col in at])
    return "at line:column " + _listed([f"{line}:{col}" for line, col in at])


def _listed(items: list[str]) -> str:
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _key_path(path: str, key: Any) -> str:
    name = str(key) if str(key).isprintable() else repr(key)  # a control character never reaches a terminal
    return f"{path}.{name}" if path else name


_Offered = dict[Any, tuple[Any, tuple[int, int]]]  # key -> (its value's node, where the key is)


def _at(node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _merged_nodes(value_node) -> list[Any]:
    """The mappings one merge key merges: ``<<: *a`` one, ``<<: [*a, *b]`` each (others: PyYAML refuses)."""
    if isinstance(value_node, yaml.SequenceNode):
        return [n for n in value_node.value if isinstance(n, yaml.MappingNode)]
    return [value_node] if isinstance(value_node, yaml.MappingNode) else []


def _offered(loader, node, memo: dict[int, _Offered]) -> _Offered:
    """The keys a mapping gives once its merge keys are applied: its own, then those it merges."""
    if id(node) in memo:
        return memo[id(node)]
    out: _Offered = {}
    memo[id(node)] = out  # a mapping reached again while it is read (it holds itself) offers nothing
    merged = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            merged.extend(_merged_nodes(value_node))
        elif isinstance(key_node, yaml.ScalarNode):
            try:
                out.setdefault(loader.construct_object(key_node), (value_node, _at(key_node)))
            except TypeError:
                continue
    for m in merged:
        for key, given in _offered(loader, m, memo).items():
            out.setdefault(key, given)
    return out


def _exact_number(text: str) -> object:
    """The exact number a float's text shows (``Decimal``), the text itself when it shows none."""
    try:
        return decimal.Decimal(text.strip().replace("_", ""))
    except decimal.InvalidOperation:
        return text


def _kind(x: Any) -> type:
    """The type of a built value, a loader's number kept with its text (an int or float subclass) as its number's."""
    if isinstance(x, bool):
        return bool
    return int if isinstance(x, int) else float if isinstance(x, float) else type(x)


def _built_alike(a, b) -> bool:
    """Whether two built values are the same value of the same type (``yes`` and ``true`` are, ``1`` and
    ``true`` are not), lists and mappings item by item."""
    if a is b:
        return True
    if _kind(a) is not _kind(b):
        return False
    if isinstance(a, float):
        # a float kept with the text it was read from (a loader's exact number: 1.8014398509481985e+16 and
        # 1.8014398509481986e+16 are one double) is alike only with a text of the same exact number
        # (1.8014398509481985e+16 and 18014398509481.985e+3 are one number, written two ways); a float kept
        # without one, by its shortest text (1.50 kept as written and 1.5 are one number)
        text_a, text_b = getattr(a, "text", None), getattr(b, "text", None)
        if text_a != text_b:
            return _exact_number(text_a or float.__repr__(a)) == _exact_number(text_b or float.__repr__(b))
        return a == b or (a != a and b != b)  # .nan written twice
    if isinstance(a, list):
        return len(a) == len(b) and all(_built_alike(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_built_alike(v, b[k]) for k, v in a.items())
    return bool(a == b)


def _source(built: Any, key: Any, node, objects: dict, seen: set[int]) -> tuple[int, int] | None:
    """Where the value PyYAML built for ``key`` is given: the first place in ``node``'s merge tree that gives
    ``key`` a value built as ``built`` (the very object, else an alike one)."""
    for alike in (False, True):
        seen.clear()
        todo = [node]
        while todo:
            m = todo.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            below = []
            for key_node, value_node in m.value:
                if key_node.tag == _MERGE:
                    below.extend(_merged_nodes(value_node))
                elif (
                    key_node in objects and _hashable_equal(objects[key_node], key) and value_node in objects
                ):
                    value = objects[value_node]
                    if value is built or (alike and _built_alike(value, built)):
                        return _at(key_node)
            todo.extend(reversed(below))
    return None


def _hashable_equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and hash(a) == hash(b)
    except TypeError:
        return False


def _merged_built_apart(
    mappings: list[tuple[Any, str]],
    objects: dict,
    memo: dict[int, _Offered],
    duplicated: set[tuple[int, int]] | None = None,
) -> list:
    """``(path, [where the merge spec's value is, where the built one is])`` for each key a mapping takes from
    the mappings it merges (``<<: [*a, *b]``, recursively) whose value PyYAML built otherwise than the YAML
    merge spec has it: the mapping's own, else the FIRST merged mapping's that gives it. PyYAML 6 takes the
    last merged mapping's value, except for keys it happens to hold as one string object (one-character
    keys), where it takes the first; through a merge of a merge it may take a value the middle mapping
    overrides. Where both agree (equal lists written twice, ``yes`` and ``true``) the file is read as it is.
    Each clash is told once, at the first mapping (in document order) that takes it, however many mappings
    merge that one; a key at one of the ``duplicated`` places (a key given twice, told as such) is not. Where
    PyYAML's value is given is searched for only the first ``DuplicateKeyError.MAX_LINES`` clashes, the ones
    shown: each search walks the mapping's merge tree, and doing it for every clash cost O(clashes x mapping)
    (a 252-KB fleet config of 12,500 clashes held the agent's event loop 34.6 s)."""
    duplicated = duplicated or set()
    told: set[tuple[int, Any]] = set()
    apart: list[tuple[str, list[tuple[int, int]]]] = []
    seen: set[int] = set()
    for node, path in mappings:
        data = objects.get(node)
        if not isinstance(data, dict):
            continue
        for key, (value_node, at) in memo.get(id(node), {}).items():
            if (
                (id(value_node), key) in told
                or value_node not in objects
                or key not in data
                or at in duplicated
            ):
                continue
            spec, built = objects[value_node], data[key]
            if _built_alike(spec, built):
                # alike as numbers, but a String node gets the spelling: the one the merge spec gives
                if spec is not built and getattr(spec, "text", None) != getattr(built, "text", None):
                    data[key] = spec
                continue
            told.add((id(value_node), key))
            where = (
                _source(built, key, node, objects, seen) if len(apart) < DuplicateKeyError.MAX_LINES else None
            )
            apart.append((_key_path(path, key), [at] + ([where] if where and where != at else [])))
    return apart


def _duplicate_keys(loader, root) -> tuple[list, list[tuple[Any, str]]]:
    """Every key given more than once in one mapping of the composed document ``root``, in the order of
    its second occurrence, and the mappings that merge others (``<<: *base``), in document order, with
    their paths. Keys compare as the constructed values compare (``1`` and ``0x1``, ``yes`` and ``true`` are
    one key, as the dict would have it); an explicit key after a merge key overrides the merged one by
    design and is not a repeat. The merge key given twice in one mapping is a repeat too (PyYAML merged
    both, the second's values winning, without a word). Each node is walked once, however many aliases
    name it: where it is first written, so a clash in an anchored preset is told there."""
    found: list[tuple[str, list[tuple[int, int]]]] = []
    merging: list[tuple[Any, str]] = []
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children: list[tuple[Any, str]] = []
        if isinstance(node, yaml.MappingNode):
            at: dict[Any, list[tuple[int, int]]] = {}
            merge_keys: list[tuple[int, int]] = []
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    children.append((value_node, path))
                    merge_keys.append(_at(key_node))
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    children.append((value_node, path))  # an unhashable key: the constructor refuses it
                    continue
                key = loader.construct_object(key_node)  # kept by the constructor: built once
                try:
                    positions = at.setdefault(key, [])
                except TypeError:
                    continue
                positions.append((key_node.start_mark.line + 1, key_node.start_mark.column + 1))
                children.append((value_node, _key_path(path, key)))
            for key, positions in at.items():
                if len(positions) > 1:
                    found.append((_key_path(path, key), positions))
            if len(merge_keys) > 1:
                found.append((_key_path(path, "<<"), merge_keys))
            if merge_keys:
                merging.append((node, path))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        stack.extend(reversed(children))  # popped in document order
    found.sort(key=lambda d: d[1][1])
    return found, merging


def _single_unique(loader) -> Any:
    """``loader.get_single_data()``, refusing a key given twice in one mapping, and a merged key whose value
    PyYAML built otherwise than the YAML merge spec has it (``DuplicateKeyError``)."""
    node = loader.get_single_node()
    if node is None:
        return None
    duplicates, merging = _duplicate_keys(loader, node)
    if duplicates and not merging:
        raise DuplicateKeyError(duplicates)
    if not merging:
        return loader.construct_document(node)
    memo: dict[int, _Offered] = {}
    for m, _ in merging:  # the merge spec's keys, before the constructor flattens the merges in place
        _offered(loader, m, memo)
    objects = loader.constructed_objects  # construct_document replaces it with a new dict when done
    try:
        data = loader.construct_document(node)
    except Exception:
        if duplicates:
            raise DuplicateKeyError(duplicates) from None
        raise
    duplicated = {place for _, places in duplicates for place in places}
    apart = _merged_built_apart(merging, objects, memo, duplicated)
    if duplicates or apart:
        raise DuplicateKeyError(duplicates, apart)
    return data


def safe_loader() -> Any:
    """The loader class ``load_document`` uses (libyaml's safe loader where PyYAML has it, each scalar's bad
    value refused at its line): subclass it to construct a tag otherwise, and give the subclass to
    ``load_document``."""
    return _CLoader or _PyLoader


def load_document(text: str, loader_class: Any = None) -> Any:
    """One YAML document with the safe loader (libyaml's where PyYAML has it; ``loader_class``, a subclass of
    ``safe_loader()``, where given), a key given twice in one mapping refused (``DuplicateKeyError``). No
    limits: check them first with ``check_limits``. PyYAML's constructors raise more than ``yaml.YAMLError``
    (``ValueError`` for ``2024-13-45``, ...): callers catch ``Exception``."""
    loader = (loader_class or _CLoader or _PyLoader)(text)
    try:
        return _single_unique(loader)
    finally:
        loader.dispose()


class _BoundedLoader(_PyLoader):  # type: ignore[misc,valid-type]
    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0
        self._weight: dict[int, int] = {}  # id(node) -> nodes it stands for, for aliases
        self._height: dict[int, int] = {}  # id(node) -> levels it spans (a scalar 1), for aliases
        self._open: list[str | None] = []  # the anchor of each node being composed
        self._highest: list[int] = [0]  # the height of the highest child of each node being composed
        # whether each node being composed is a list that ``<<`` merges (``<<: [*a, *b]``)
        self._merge_list: list[bool] = [False]

    def compose_node(self, parent, index):
        # a node merged into the mapping it lies in (the value of ``<<``, or an item of the list that is): PyYAML
        # flattens it into that mapping, so its own level is none there, nor that list's
        in_list = self._merge_list[-1]
        merged = in_list or (isinstance(index, yaml.Node) and index.tag == _MERGE)
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Limit(f"more than {MAX_ALIASES} aliases")
            ev = self.peek_event()
            if ev.anchor in self._open:
                raise _Limit(_holds_itself(ev.anchor, ev.start_mark))
            node = self.anchors.get(ev.anchor)
            levels = self._height.get(id(node), 1) - merged
            if self._depth - in_list + levels > MAX_DEPTH:
                raise _Limit(_too_deep_expanded(MAX_DEPTH, ev))
            self._highest[-1] = max(self._highest[-1], levels)
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
        ev = self.peek_event()
        self._open.append(ev.anchor)
        self._highest.append(0)
        merge_list = merged and not in_list and isinstance(ev, yaml.SequenceStartEvent)
        self._merge_list.append(merge_list)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.pop()
            self._merge_list.pop()
            highest = self._highest.pop()
        self._weight[id(node)] = self._nodes - before
        self._height[id(node)] = (2 if merge_list else 1) + highest
        self._highest[-1] = max(self._highest[-1], highest if merged else 1 + highest)
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
            return _single_unique(loader)
        loader = _CLoader(data)
        _check_events(loader)
        loader.dispose()
        loader = _CLoader(data)
        return _single_unique(loader)
    except _Limit as exc:
        raise ManifestError(f"{where}: YAML {exc}; refused", code="yaml_limits") from None
    except DuplicateKeyError as exc:
        raise ManifestError(f"{where}: {printable(exc.lines()[0])}", code="bad_yaml") from None
    except yaml.YAMLError as exc:
        if _CLoader is not None and ("flow level" in str(exc) or "max depth" in str(exc)):
            # libyaml's scanner reads a run of opening brackets ahead and stops at its own nesting cap
            raise ManifestError(
                f"{where}: YAML nested deeper than {MAX_DEPTH} levels; refused", code="yaml_limits"
            ) from None
        if (at := where_and_why(exc)) is not None:
            # the problem and where it is: the first line of the message is its context ("while parsing a quoted
            # scalar"), which named neither (a "\ud800" escape in a manifest's description said only that)
            raise ManifestError(f"{where}: not valid YAML {at}", code="bad_yaml") from None
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
