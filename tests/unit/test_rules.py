"""A rule on a plain tag (``edge_agent.tags.Rule``) with both thresholds: it is released only by the band
of the side that tripped it, and a value past the other side keeps it active, tripped by that side."""

from __future__ import annotations

import time

import pytest
import yaml

from devices.base import Quality, Reading
from edge_agent.config import ConfigError, RuleSettings, parse_config
from edge_agent.tags import Rule


def _rule(**thresholds) -> tuple[Rule, list]:
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {"plc": {"type": "mqtt", "port": 1883, "subscriptions": [{"topic": "x/#"}]}},
            "actions": {"lamp": {"type": "log"}},
            "rules": [{"name": "r", "source": "plc", "tag": "t", "actions": ["lamp"], **thresholds}],
        }
    )
    seen: list = []

    async def act(names, result, item):
        seen.append(result.verdict)

    return Rule(cfg.rules[0], act), seen


async def _offer(rule: Rule, *values: float) -> list[tuple[float, str, str | None]]:
    out = []
    for v in values:
        await rule.offer(Reading("plc", "t", v, time.time(), time.time(), Quality.GOOD))
        out.append((v, "NG" if rule.active else "OK", rule.status().get("side")))
    return out


async def test_a_rule_raised_by_above_is_released_by_the_above_band_not_held_by_belows():
    rule, seen = _rule(above=20, below=10, hysteresis=2)
    # 11 is inside below's release band (under 12) but far under above's (18): the alarm clears
    out = await _offer(rule, 25, 19, 11, 11)
    assert [verdict for _, verdict, _ in out] == ["NG", "NG", "OK", "OK"]  # before: NG to the end
    assert out == [
        (25, "NG", "above"),
        (19, "NG", "above"),  # above's band holds it: 19 > 18
        (11, "OK", None),
        (11, "OK", None),
    ]
    assert seen == ["NG", "NG", "OK", "OK"] and rule.status()["side"] is None


async def test_a_rule_raised_by_below_is_released_by_the_below_band_and_can_switch_sides():
    rule, _ = _rule(above=20, below=10, hysteresis=2)
    out = await _offer(rule, 9, 11.5, 19, 5, 21, 19, 17.5)
    assert [verdict for _, verdict, _ in out] == ["NG", "NG", "OK", "NG", "NG", "NG", "OK"]  # before: 19 held
    assert out == [
        (9, "NG", "below"),
        (11.5, "NG", "below"),  # below's band holds it: 11.5 < 12
        (19, "OK", None),  # inside above's band (over 18), which did not trip it: released
        (5, "NG", "below"),
        (21, "NG", "above"),  # below released it, above trips it: active throughout
        (19, "NG", "above"),
        (17.5, "OK", None),
    ]


async def test_a_whole_number_past_2_53_is_held_and_released_by_the_band_exactly():
    """An Int64 counter against ``above: 2**53 + 10`` with ``hysteresis: 10``: 2**53 + 1 is inside the band and holds
    the rule, 2**53 releases it. Before, both were made float64 (2**53 + 1 was 2**53) and the release threshold
    too (2**53): the counter, still over it, cleared the rule."""
    rule, _ = _rule(above=2**53 + 10, hysteresis=10)
    assert await _offer(rule, 2**53 + 11, 2**53 + 1, 2**53) == [
        (2**53 + 11, "NG", "above"),
        (2**53 + 1, "NG", "above"),  # before: OK
        (2**53, "OK", None),
    ]
    assert rule.status()["value"] == 2**53


async def test_an_integer_past_float64s_range_is_ignored_not_raised():
    """``math.isfinite`` raised OverflowError on a Python int past 1.8e308 (no source here delivers one: MQTT JSON
    makes it an infinity, BAD); the rule counts it as a reading it cannot judge and judges the next."""
    rule, seen = _rule(above=20)
    assert await _offer(rule, 10**400, -(10**400), 25) == [
        (10**400, "OK", None),
        (-(10**400), "OK", None),
        (25, "NG", "above"),
    ]
    assert (rule.status()["ignored"], seen) == (2, ["NG"])


def test_a_threshold_past_float64s_range_is_refused_by_name():
    """A whole above/below past float64's range, also one of more digits than Python writes (a YAML hex literal,
    0x and 4,000 F): refused naming the side. Its message counted the digits with str(), which raised ValueError
    on the hex literal, so validate said only Python's 'Exceeds the limit (4300 digits) for integer string
    conversion'."""
    for side, huge in (("above", 10**400), ("below", -(10**400)), ("above", int("F" * 4000, 16))):
        with pytest.raises(
            ValueError, match=f"{side}: a whole number past float64's range, which no reading"
        ):
            RuleSettings(name="r", source="s", tag="t", **{side: huge})


def test_a_threshold_written_as_text_past_float64s_range_or_nan_is_refused_by_name():
    """A threshold quoted or from a ``${VAR}`` of more digits than Python's int() converts (4,300), ``"1e400"`` or
    thousands of digits with a fraction was read as an infinity and taken (a rule that never trips, or that every
    value trips), while the same number of 400 digits is refused; a NaN threshold (``.nan``, ``"nan"``) was taken,
    a rule that never trips. Each is refused naming the side; a whole number's text is read past its zeros."""
    for side, text in (
        ("above", "1" * 5000),
        ("below", " -" + "9" * 4301 + " "),
        ("above", "1" * 4301 + ".5"),
        ("below", "-1e400"),
    ):
        with pytest.raises(ValueError, match=f"{side}: .*past float64's range, which no reading reaches"):
            RuleSettings(name="r", source="s", tag="t", **{side: text})
    for nan in ("nan", float("nan")):
        with pytest.raises(ValueError, match="below: NaN is neither above nor below any value"):
            RuleSettings(name="r", source="s", tag="t", below=nan)
    rule = RuleSettings(name="r", source="s", tag="t", above=" 0" + "0" * 5000 + "7 ", below="-1e-300")
    assert (rule.above, rule.below) == (7, -1e-300)


def test_a_rules_scale_offset_or_hysteresis_that_is_not_finite_is_refused_naming_it():
    """``scale: .nan`` (or a ``${VAR}`` of "1e400", read as an infinity) made every value NaN or infinite: a rule
    that never tripped, every reading counted ignored; ``hysteresis: .inf`` a band that never let the rule clear.
    Each was taken unsaid; ``validate`` now names the setting."""
    for key, value in (("scale", ".nan"), ("scale", "'1e400'"), ("offset", "-.inf"), ("hysteresis", ".inf")):
        with pytest.raises(ConfigError, match=rf"rules\[0\]\.{key}.*finite number"):
            _rule(above=20, **{key: yaml.safe_load(value)})
    rule, _ = _rule(above=20, scale="2.5", offset=-1, hysteresis="0.5")
    assert (rule.s.scale, rule.s.offset, rule.s.hysteresis) == (2.5, -1.0, 0.5)


def test_bands_of_whole_thresholds_past_2_53_are_checked_exactly():
    """above 2**60 + 575, below 2**60, hysteresis 129: the bands (below 2**60 + 129, above from 2**60 + 446) do not
    overlap, and the rule is taken; with 2**60 + 258 for above they meet and it is refused. Checked in float64, both
    edges were 2**60 + 256 and the first was refused too."""
    top = 2**60
    rule, _ = _rule(above=top + 575, below=top, hysteresis=129)
    assert (rule.s.above, rule.s.below) == (top + 575, top)
    with pytest.raises(ConfigError, match="hysteresis: 129 is too wide"):
        _rule(above=top + 258, below=top, hysteresis=129)
