"""Conditions on a result, written as YAML structure (never evaluated as code).

    when: {verdict: NG}                          # equality
    when: {score: {gte: 0.8}}                    # eq ne gt gte lt lte in
    when: {label: {in: [scratch, crack]}}
    when: {all: [{verdict: NG}, {pipeline: inspect}]}   # also any: [...], not: {...}

Fields: verdict, score, label, anomaly_score, remaining_life, margin, model, model_version,
pipeline, source, engine, age_ms (the item's age at the verdict: ``{age_ms: {lte: 300}}`` keeps a reject
gate from acting on a part that has moved on). ``compile_condition`` checks the structure once (at config time) and
returns a predicate over ``edge_agent.types.Result``; a comparison with a missing value (e.g.
``anomaly_score`` of a vision result, the score of a frame that failed) is false, so its ``not`` is true: a reject
gate written with ``not`` takes what it cannot judge (fails safe). A field is compared with its own type: a number field
(score, anomaly_score, remaining_life, margin, age_ms) with a number (text such as ``"0.8"``, from quotes or a
``${VAR}``, is read as the number; other text, true/false and NaN are refused), the other fields with
text (``label: 1`` is refused: quote it).

Values are checked too, since a condition that can never match fails silently: a verdict is one of
``OK``, ``NG``, ``UNSURE`` (exact case: ``ng`` is refused with a did-you-mean), and a label, when the
labels of the models behind the action are known (``labels=``), must be one of them.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

FIELDS = (
    "verdict",
    "score",
    "label",
    "anomaly_score",
    "remaining_life",
    "margin",
    "model",
    "model_version",
    "pipeline",
    "source",
    "engine",
    "age_ms",
)
# the fields a model's judgement gives a result (beside its verdict): a part judged OK has them, and a result made up
# to stand for one (``may_match``) does not
MODEL_FIELDS = frozenset(FIELDS) - {"verdict", "pipeline", "source", "age_ms"}
# those of them a slot's model gives each part it judges alike (its package's): the rest (score, label, ...) vary
# from part to part
SLOT_FIELDS = frozenset({"model", "model_version", "engine"})
# the values a made-up OK part (``may_match_each``) holds in each number a model gives a part: an OK part scores
# below its slot's threshold, whatever that is, so its least score (0.0) stands for every one of a slot of a low
# threshold (``{score: {lt: 0.9}}`` acts on each OK part of a classifier of threshold 0.5); a margin or a remaining
# life varies from part to part
_PART_NUMBERS = {
    "score": (0.0,),
    "anomaly_score": (0.0,),
    "margin": (0.0, 0.5, 1.0),
    "remaining_life": (0.0, 0.5, 1.0),
}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "in": lambda a, b: a in b,
}


VERDICTS = ("OK", "NG", "UNSURE")
# a whole number's text: its sign and digits past leading zeros (int() converts at most 4,300 digits). Its digits
# start at a non-zero one (or are one 0): with ``0*([0-9]+)`` a text of zeros that was no whole number ("0" * N +
# ".5") was tried at every split of its zeros, 10 s at config load for 20,000 of them
_WHOLE = re.compile(r"\s*([+-]?)0*([1-9][0-9]*|0)\s*")
# digits of a whole number past float64's range (1.8e308) at least: 310
_PAST_FLOAT = 310
# an infinity written as such ("inf", "-Infinity"): taken, as YAML's .inf is (Infinity is a number)
_INF_TEXT = re.compile(r"\s*[+-]?inf(?:inity)?\s*", re.IGNORECASE)
NUMERIC = ("score", "anomaly_score", "remaining_life", "margin", "age_ms")  # the rest are text


def text_number(text: str) -> int | float:
    """A number written as text (spaces around allowed): a whole number as its int, every digit kept past leading
    zeros (one of over 309 digits, past float64's range, as ``10**310``, however many it has: int() converts at
    most 4,300 and float() read more as an infinity), else its float. ``ValueError``: no number;
    ``OverflowError``: a finite number past float64's range (``"1e400"``), which float() read as an infinity.
    An infinity written as one (``"inf"``, ``"-Infinity"``) is that infinity, as YAML's ``.inf``."""
    if (whole := _WHOLE.fullmatch(text)) is not None:
        digits = whole[2]
        return 10**_PAST_FLOAT if len(digits) > _PAST_FLOAT else int(whole[1] + digits)
    v = float(text.strip())
    if math.isinf(v) and not _INF_TEXT.fullmatch(text):
        raise OverflowError(text)
    return v


def shown_text(text: str) -> str:
    """A setting's text in an error: its first 40 characters, quoted."""
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


def _operand(key: str, op: str, v: Any) -> Any:
    """``v`` as the field's own type. A number field compared with text (``"0.8"``, as a quoted YAML
    value or a ``${VAR}`` substitution gives it) raised TypeError at each result and never matched, nor
    did a NaN; a text field compared with a number never matched either. A number written as text is
    read as the number; what cannot match is refused by name."""
    where = f"{key}: {op}" if op else key
    if key in NUMERIC:
        if isinstance(v, str):
            try:
                # a whole number as its int (as a YAML number is): a float64 made "9007199254740993" 2**53, so
                # a rule's Int64 counter of 2**53 + 1 was not {gt: "9007199254740992"}. One of more digits than
                # int() converts (4,300) is past float64's range, as one of 310 is: refused below (float() read
                # it as an infinity, taken)
                v = text_number(v)
            except OverflowError:
                # a number written finite that float64 cannot hold ("1e400", 5,000 digits and a fraction): read
                # as an infinity it was taken, a threshold no score reaches (or every one does)
                raise ConditionError(
                    f"{where}: {shown_text(v)} is past float64's range, which no {key} reaches"
                ) from None
            except ValueError:
                raise ConditionError(
                    f"{where}: {v!r} is not a number, and {key} is one (this would never match)"
                ) from None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConditionError(f"{where}: {v!r} is not a number, and {key} is one (this would never match)")
        # an int is never NaN (math.isnan raised OverflowError on one past 1e308)
        if isinstance(v, float) and math.isnan(v):
            raise ConditionError(
                f"{where}: NaN equals nothing and orders with nothing: this would never match"
            )
        if isinstance(v, int) and not -sys.float_info.max <= v <= sys.float_info.max:
            # no reading past it gives a score (a rule counts it ignored), as a rule's threshold past it is
            # refused; said without its digits (one of more than 4,300, a YAML hex literal's, raised ValueError
            # there, and at agent start where the action's condition is written as JSON)
            raise ConditionError(f"{where}: a whole number past float64's range, which no {key} reaches")
        return v
    if not isinstance(v, str):
        raise ConditionError(
            f"{where}: {v!r} is not text, and {key} is text (this would never match); quote it: '{v}'"
        )
    return v


class ConditionError(ValueError):
    pass


def _check_value(key: str, val: Any, labels: set[str] | None) -> None:
    known: tuple[str, ...] | None = (
        VERDICTS if key == "verdict" else (tuple(sorted(labels)) if key == "label" and labels else None)
    )
    if known is None:
        return
    for v in val if isinstance(val, list) else [val]:
        if v in known:
            continue
        what = "verdict" if key == "verdict" else "label"
        by_case = {k.lower(): k for k in known}
        close = by_case.get(str(v).lower()) or next(
            iter(difflib.get_close_matches(str(v), known, n=1, cutoff=0.6)), None
        )
        hint = f"; did you mean {close!r}?" if close else ""
        where = "verdicts are" if key == "verdict" else "the model's labels are"
        raise ConditionError(
            f"{key}: unknown {what} {v!r}{hint} ({where} {', '.join(known)}; "
            "the comparison is case-sensitive, so this would never match)"
        )


def _hint(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {list(known)}"


def compile_condition(spec: Any, labels: set[str] | None = None) -> Callable[[Any], bool]:
    if spec is None:
        return lambda r: True
    if not isinstance(spec, dict) or not spec:
        raise ConditionError(f"a condition is a mapping such as {{verdict: NG}}, got {spec!r}")
    preds = [_compile_item(k, v, labels) for k, v in spec.items()]
    if len(preds) == 1:
        return preds[0]
    return lambda r: all(p(r) for p in preds)


def _compile_item(key: str, val: Any, labels: set[str] | None = None) -> Callable[[Any], bool]:
    if key in ("all", "any"):
        if not isinstance(val, list) or not val:
            raise ConditionError(f"'{key}' takes a non-empty list of conditions")
        subs = [compile_condition(v, labels) for v in val]
        return (lambda r: all(p(r) for p in subs)) if key == "all" else (lambda r: any(p(r) for p in subs))
    if key == "not":
        sub = compile_condition(val, labels)
        return lambda r: not sub(r)
    if key not in FIELDS:
        raise ConditionError(f"unknown field {key!r}{_hint(key, FIELDS)}")
    if isinstance(val, dict):
        checks = []
        for op, arg in val.items():
            if op not in _OPS:
                raise ConditionError(f"{key}: unknown operator {op!r}{_hint(op, _OPS)}")
            if op == "in" and not isinstance(arg, list):
                raise ConditionError(f"{key}: 'in' takes a list")
            arg = [_operand(key, op, x) for x in arg] if op == "in" else _operand(key, op, arg)
            if op in ("eq", "ne", "in"):
                _check_value(key, arg, labels)
            checks.append((_OPS[op], arg))

        def pred(r, key=key, checks=checks) -> bool:
            v = getattr(r, _attr(key), None)
            if v is None:
                return False
            try:
                return all(f(v, arg) for f, arg in checks)
            except TypeError:
                return False

        return pred
    val = _operand(key, "", val)
    _check_value(key, val, labels)

    def equals(r, key: str = key, val: Any = val) -> bool:
        return bool(getattr(r, _attr(key), None) == val)  # (a numpy value compares as its number)

    return equals


def may_match(spec: Any, r: Any, unknown: frozenset[str], tests: dict | None = None) -> bool:
    """Whether the (valid) condition ``spec`` can be true of a result like ``r`` whose fields ``unknown`` may hold
    any value (a part judged OK has a score, a label and a model that a result made up to stand for it lacks): an
    item on one of them is neither true nor false, and ``all``, ``any`` and ``not`` combine it so (three-valued).
    ``tests``: its items compiled, kept for the next call on the same ``spec``."""
    return _maybe(spec, r, unknown, {} if tests is None else tests) is not False


def pass_signal(spec: Any, pipeline: str, source: str) -> bool | None:
    """Whether an output of ``spec`` on pipeline ``pipeline`` (of ``source``) is a pass signal: None where it is
    none (it acts on no OK part, or on an NG part of the highest score), else whether it also acts on a part the
    model did not judge (UNSURE, no score, ``model_error``: ``passes_unjudged``)."""
    from edge_agent.types import made_up_parts

    unjudged, judged_ok, _, ng_high = made_up_parts(pipeline, source)
    if not may_match(spec, judged_ok, MODEL_FIELDS) or may_match(
        spec, ng_high, MODEL_FIELDS - {"score", "anomaly_score"}
    ):
        return None
    return bool(compile_condition(spec)(unjudged))


def passes_unjudged(spec: Any, pipeline: str, source: str) -> bool:
    """Whether an output of ``spec`` acts on a part the model did not judge (UNSURE, no score, ``model_error``), may
    act on an OK part and acts on no NG part (of the highest score): a pass signal that passes such a part too
    (``ne: NG``, ``not: {verdict: NG}``, ``in: [OK, UNSURE]``)."""
    return pass_signal(spec, pipeline, source) is True


def may_match_each(spec: Any, r: Any) -> bool:
    """Whether the (valid) condition ``spec`` can be true of every part a model judges like ``r`` (a dataclass result
    made up to stand for them, without the score, label, ... a model gives): true of each of a few made-up parts,
    every combination of each number it reads (``_PART_NUMBERS``: score and anomaly_score 0.0, remaining_life and
    margin 0.0, 0.5 and 1.0) and of a label (each it names, and one it does not; of the labels its label items tell
    apart alike, one), what the slot gives each part alike (``SLOT_FIELDS``: the model, its version and engine)
    read three-valued (``may_match``). ``{score: {gte: 0}}`` and ``{score: {lt: 0.9}}`` are true of each part,
    ``{model: part-inspection}`` may be; ``{score: {gte: 0.4}}`` and ``{label: scratch}`` are not (a part of score
    0.0, one of another label). The item's age (``age_ms``) is ``r``'s own."""
    import dataclasses

    named = sorted(labels_named(spec))
    tests = [compile_condition({key: val}) for key, val in _leaves(spec) if key == "label"]
    # the labels its label items tell apart, one of each (a gate on 1,000 labels in one list: 2, not 1,001)
    labels: dict[tuple[bool, ...], str] = {}
    for label in [*named, _unnamed_label(named)]:
        part = dataclasses.replace(r, label=label)
        labels.setdefault(tuple(t(part) for t in tests), label)
    compiled: dict = {}
    return all(
        may_match(spec, dataclasses.replace(r, **part, label=label), SLOT_FIELDS, compiled)
        for part in _part_numbers(numbers_named(spec) - {"age_ms"})
        for label in labels.values()
    )


def may_match_ng(spec: Any, r: Any) -> bool:
    """Whether the (valid) condition ``spec`` is a reject gate of the parts a model judges like ``r`` (a dataclass
    result made up to stand for them, verdict NG): it can be true of an NG part of a label it does not name and a
    score (and ``anomaly_score``) above any threshold (``inf``), of each margin and remaining life (``_PART_NUMBERS``:
    neither tells an NG part), the rest a model gives read three-valued (``may_match``), and its verdict alone acts
    on every NG part or it can leave out an OK part of that label and score 0.0. A reject gate acts on it (``{any:
    [{verdict: UNSURE}, {score: {gte: 0.4}}]}``, ``{any: [{verdict: NG}, {label: {ne: ok}}]}``); a pass on the OK
    label, a low score, a wide margin or a label but a defect's does not (``{any: [{verdict: UNSURE}, {label:
    ok}]}``, ``{score: {lt: 0.5}}``, ``{margin: {gte: 0.5}}``, ``{label: {ne: scratch}}``: an OK part of another
    label passes as that NG part)."""
    import dataclasses

    ng = dataclasses.replace(
        r, label=_unnamed_label(labels_named(spec)), score=math.inf, anomaly_score=math.inf
    )
    ok = dataclasses.replace(ng, verdict="OK", score=0.0, anomaly_score=0.0)
    read = sorted(numbers_named(spec) & {"margin", "remaining_life"})
    unknown = MODEL_FIELDS - {"label", "score", "anomaly_score", *read}
    parts = _part_numbers(read)
    tests: dict = {}
    return all(
        _maybe(spec, dataclasses.replace(ng, **part), unknown, tests) is not False for part in parts
    ) and (
        _maybe(spec, r, MODEL_FIELDS, tests) is True
        or any(_maybe(spec, dataclasses.replace(ok, **part), unknown, tests) is not True for part in parts)
    )


def _part_numbers(keys: Iterable[str]) -> list[dict[str, float]]:
    """Each combination of the ``_PART_NUMBERS`` values of ``keys`` (a made-up part's numbers; one empty part for
    none)."""
    import itertools

    return [dict(c) for c in itertools.product(*[[(k, v) for v in _PART_NUMBERS[k]] for k in sorted(keys)])]


def _unnamed_label(named: Any) -> str:
    """A label none of ``named`` is."""
    return max(named, default="") + "_"


def _maybe(spec: Any, r: Any, unknown: frozenset[str], tests: dict) -> bool | None:
    if not isinstance(spec, dict):
        return True  # (no condition)
    said = []
    for key, val in spec.items():
        if key in ("all", "any"):
            subs = [_maybe(v, r, unknown, tests) for v in val]
            said.append(_all3(subs) if key == "all" else _any3(subs))
        elif key == "not":
            sub = _maybe(val, r, unknown, tests)
            said.append(None if sub is None else not sub)
        elif key in unknown:
            said.append(None)
        else:
            if (test := tests.get((key, id(val)))) is None:
                test = tests[key, id(val)] = compile_condition({key: val})
            said.append(test(r))
    return _all3(said)


def _all3(values: list[bool | None]) -> bool | None:
    return False if False in values else None if None in values else True


def _any3(values: list[bool | None]) -> bool | None:
    return True if True in values else None if None in values else False


def _leaves(spec: Any) -> Iterator[tuple[str, Any]]:
    """Each ``field: test`` item of a (valid) condition, through its ``all``, ``any`` and ``not``."""
    if not isinstance(spec, dict):
        return
    for key, val in spec.items():
        if key in ("all", "any") and isinstance(val, list):
            for sub in val:
                yield from _leaves(sub)
        elif key == "not":
            yield from _leaves(val)
        else:
            yield key, val


def numbers_named(spec: Any) -> set[str]:
    """The number fields (``NUMERIC``) a (valid) condition reads: a result holding NaN in one of them
    cannot be judged by it (NaN is neither above nor below anything, and ``not`` would turn "not above"
    into a match)."""
    return {key for key, _ in _leaves(spec) if key in NUMERIC}


def labels_named(spec: Any) -> set[str]:
    """The labels a (valid) condition compares ``label`` with: to tell, when a pipeline's model changes
    (a hot swap), which of them the new model no longer gives."""
    out: set[str] = set()
    for key, val in _leaves(spec):
        if key != "label":
            continue
        if isinstance(val, dict):
            for op, arg in val.items():
                if op in ("eq", "ne", "in"):
                    out.update(a for a in (arg if isinstance(arg, list) else [arg]) if isinstance(a, str))
        elif isinstance(val, str):
            out.add(val)
    return out


def _attr(field: str) -> str:
    return "item_seq" if field == "seq" else field
