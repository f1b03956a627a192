"""Conditions, queue policies and windowing: the agent's pure parts."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from devices.base import Quality, Reading
from edge_agent.conditions import ConditionError, compile_condition
from edge_agent.config import QueuePolicy, RuleSettings, WindowSettings
from edge_agent.pipelines import BoundedQueue, Windower
from edge_agent.types import Result


def result(**kw) -> Result:
    base = dict(
        pipeline="p",
        source="s",
        item_seq=1,
        captured_at=0.0,
        model="m",
        model_version="1.0.0",
        engine="onnxruntime",
        verdict="OK",
        score=0.1,
    )
    return Result(**{**base, **kw})


def test_conditions_match_structured_expressions():
    ng = compile_condition({"verdict": "NG"})
    assert ng(result(verdict="NG")) and not ng(result())
    hi = compile_condition({"score": {"gte": 0.8, "lt": 1.0}})
    assert hi(result(score=0.9)) and not hi(result(score=0.5)) and not hi(result(score=1.0))
    cls = compile_condition({"label": {"in": ["crack", "dent"]}})
    assert cls(result(label="crack")) and not cls(result(label="ok"))
    combo = compile_condition({"any": [{"verdict": "NG"}, {"margin": {"lt": 0.2}}]})
    assert combo(result(margin=0.1)) and combo(result(verdict="NG")) and not combo(result(margin=0.5))
    assert compile_condition({"not": {"verdict": "NG"}})(result())
    missing = compile_condition({"anomaly_score": {"gt": 0.5}})
    assert not missing(result())  # a vision result has no anomaly score: false, not an error


def test_a_missing_value_is_false_and_its_not_true_so_a_reject_gate_written_with_not_fails_safe():
    """A result without the field (a failed frame's score, an anomaly model's label) compares false, so ``not``
    of it matches: a reject gate written as "NG and not cosmetic" takes an anomaly model's NG, which has no
    label, and "not a low score" takes a frame it cannot judge rather than letting it pass."""
    not_low = compile_condition({"not": {"score": {"lt": 0.5}}})
    assert not_low(result(score=0.9)) and not not_low(result(score=0.2))
    assert not_low(result(score=None))
    not_cosmetic = compile_condition({"all": [{"verdict": "NG"}, {"not": {"label": "cosmetic"}}]})
    assert not_cosmetic(result(verdict="NG", label=None)) and not not_cosmetic(
        result(verdict="NG", label="cosmetic")
    )
    held = compile_condition({"all": [{"score": {"gte": 0}}, {"not": {"score": {"lt": 0.5}}}]})
    assert not held(result(score=None)) and held(result(score=0.9))
    # docs/actions.md's "holds a number" idiom covers negative scores too (a rule's temperature)
    low_held = compile_condition(
        {"all": [{"any": [{"score": {"gte": 0}}, {"score": {"lt": 0}}]}, {"not": {"score": {"gt": 0.5}}}]}
    )
    assert low_held(result(score=-0.3)) and low_held(result(score=0.2))
    assert not low_held(result(score=None)) and not low_held(result(score=0.9))
    # a numpy value compares as its number
    assert compile_condition({"score": 0.5})(result(score=np.float32(0.5)))


@pytest.mark.parametrize(
    "spec, msg",
    [
        ({"verdikt": "NG"}, "unknown field 'verdikt'; did you mean 'verdict'?"),
        ({"score": {"bigger": 1}}, "unknown operator 'bigger'"),
        ({"all": []}, "'all' takes a non-empty list"),
        ("verdict == 'NG'", "a condition is a mapping"),
        ({"label": {"in": "crack"}}, "'in' takes a list"),
    ],
)
def test_bad_conditions_are_refused(spec, msg):
    with pytest.raises(ConditionError, match=msg):
        compile_condition(spec)


async def test_queue_policies_count_drops():
    q = BoundedQueue(2, QueuePolicy.DROP_OLDEST)
    for i in range(5):
        await q.put(i)
    assert q.dropped == 3 and [(await q.get())[0] for _ in range(2)] == [3, 4]
    q = BoundedQueue(2, QueuePolicy.DROP_NEWEST)
    for i in range(5):
        await q.put(i)
    assert q.dropped == 3 and [(await q.get())[0] for _ in range(2)] == [0, 1]
    q = BoundedQueue(1, QueuePolicy.BLOCK)
    await q.put(0)
    blocked = asyncio.create_task(q.put(1))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    assert (await q.get())[0] == 0
    await asyncio.wait_for(blocked, 1)
    assert q.dropped == 0 and (await q.get())[0] == 1
    await q.close()
    with pytest.raises(EOFError):
        await q.get()


def reading(tag, value, t=0.0, quality=Quality.GOOD) -> Reading:
    return Reading("plc", tag, value, t, t, quality)


def test_windows_by_count_with_hop_from_array_and_scalar_tags():
    w = Windower("plc", WindowSettings(waveform="vib", scalars=["temp"], size_samples=8, hop_samples=4), 1024)
    assert w.add(reading("temp", 40.0)) is None
    out = []
    for i in range(5):  # arrays of 4 samples: windows of 8 every 4 new samples
        win = w.add(reading("vib", np.arange(i * 4, i * 4 + 4, dtype=float), t=float(i)))
        if win is not None:
            out.append(win)
    assert [list(x.waveform) for x in out] == [
        list(range(0, 8)),
        list(range(4, 12)),
        list(range(8, 16)),
        list(range(12, 20)),
    ]
    assert [x.seq for x in out] == [0, 1, 2, 3] and out[0].scalars == {"temp": 40.0}
    # a scalar stream works the same way, one sample per reading
    s = Windower("plc", WindowSettings(waveform="current", size_samples=8, hop_samples=8), 1024)
    wins = [s.add(reading("current", float(i))) for i in range(24)]
    assert [list(x.waveform) for x in wins if x is not None] == [
        list(map(float, range(0, 8))),
        list(map(float, range(8, 16))),
        list(map(float, range(16, 24))),
    ]


def test_bad_quality_and_non_finite_samples_are_counted_and_kept_out():
    w = Windower("plc", WindowSettings(waveform="vib", size_samples=4), 1024)
    assert w.add(reading("vib", np.ones(4), quality=Quality.BAD)) is None
    assert w.add(reading("vib", np.array([1.0, np.nan, 1.0, 1.0]))) is None
    assert w.bad == 2
    win = w.add(reading("vib", np.full(4, 2.0)))
    assert win is not None and list(win.waveform) == [2.0] * 4


def test_window_waits_for_every_scalar_the_model_needs():
    w = Windower("plc", WindowSettings(waveform="vib", scalars=["temp", "speed"], size_samples=4), 1024)
    assert w.add(reading("vib", np.ones(4))) is None
    w.add(reading("temp", 1.0))
    w.add(reading("speed", 2.0))
    assert w.add(reading("vib", np.ones(4))).scalars == {"temp": 1.0, "speed": 2.0}


def test_scalars_map_tags_to_the_model_inputs():
    w = Windower("plc", WindowSettings(waveform="vib", scalars={"temperature": "Temp"}, size_samples=4), 1024)
    w.add(reading("Temp", 21.5))
    assert w.add(reading("vib", np.ones(4))).scalars == {"temperature": 21.5}


def test_a_scalar_that_never_comes_is_said_once_and_counted(caplog):
    import logging

    from devices.base import Notices

    notes = Notices(logging.getLogger("test.windower"))
    w = Windower(
        "plc", WindowSettings(waveform="vib", scalars=["temp"], size_samples=4), 1024, notes, "health"
    )
    w.add(reading("Temp", 1.0))
    for _ in range(10):
        assert w.add(reading("vib", np.ones(4))) is None
    msgs = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
    assert len(msgs) == 1 and "['temp'] never received from source plc (it gives ['Temp', 'vib'])" in msgs[0]
    assert notes.counts["scalar_missing"] >= 7
    w.add(reading("temp", 2.0))
    assert w.add(reading("vib", np.ones(4))) is not None


def test_a_scalar_that_reads_only_bad_is_said_so_not_said_never_received(caplog):
    """A PLC's speed tag reading BAD from the start held the windows back with "scalar tag(s) ['speed'] never
    received from source plc (it gives ['speed', 'vib']); fix window.scalars": the tag is right and arrives,
    its value is not GOOD."""
    import logging

    from devices.base import Notices

    notes = Notices(logging.getLogger("test.windower"))
    w = Windower(
        "plc",
        WindowSettings(waveform="vib", scalars=["speed", "temp"], size_samples=4),
        1024,
        notes,
        "health",
    )
    for _ in range(10):
        w.add(reading("speed", 0.0, quality=Quality.BAD))
        assert w.add(reading("vib", np.ones(4))) is None
    msgs = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
    assert len(msgs) == 2 and not any("'speed'] never received" in m for m in msgs), msgs
    assert "scalar tag(s) ['speed'] of source plc read ['bad'], not GOOD; windows wait" in msgs[0]
    assert "['temp'] never received from source plc" in msgs[1]
    assert 7 <= notes.counts["scalar_missing"] <= 8  # one count per held-back window
    w.add(reading("speed", 1500.0))
    w.add(reading("temp", 40.0))
    assert w.add(reading("vib", np.ones(4))).scalars == {"speed": 1500.0, "temp": 40.0}


def test_a_scalar_that_goes_bad_is_not_fed_to_the_model_as_its_last_good_value():
    """A speed or load tag whose PLC link drops (BAD, a null value, Sparkplug is_null) kept its last good
    value in every window after it, for as long as it stayed BAD: the model judged the machine at a speed
    it no longer ran at. A model input's windows now wait for a good value; the baseline's own speed and
    temperature tags go without (it tracks the speed from the spectrum) once they have had a value."""
    import logging

    from devices.base import Notices

    notes = Notices(logging.getLogger("test.windower"))
    w = Windower(
        "plc",
        WindowSettings(waveform="vib", scalars=["load"], size_samples=4),
        1024,
        notes,
        "health",
        extra_inputs={"speed": "_shaft_speed"},
    )
    w.add(reading("load", 0.8))
    w.add(reading("speed", 1480.0))
    assert w.add(reading("vib", np.ones(4))).scalars == {"load": 0.8, "_shaft_speed": 1480.0}
    w.add(reading("speed", None, quality=Quality.BAD))
    assert w.add(reading("vib", np.ones(4))).scalars == {"load": 0.8}  # judged without the stale speed
    w.add(reading("load", None, quality=Quality.BAD))
    assert w.add(reading("vib", np.ones(4))) is None  # the model's input: wait for a good one
    assert notes.counts["scalar_not_good"] == 2
    w.add(reading("load", 0.5, quality=Quality.UNCERTAIN))
    assert w.add(reading("vib", np.ones(4))) is None
    w.add(reading("load", 0.6))
    w.add(reading("speed", 1490.0))
    assert w.add(reading("vib", np.ones(4))).scalars == {"load": 0.6, "_shaft_speed": 1490.0}


async def test_a_slow_plc_gets_the_latest_output_not_a_backlog():
    from edge_agent.actions import ActionRunner
    from edge_agent.config import parse_config

    class SlowPlc:  # the sources mapping is the runner's injected seam
        def __init__(self) -> None:
            self.writes: list = []

        async def write(self, node_id, value, at=None) -> None:
            await asyncio.sleep(0.05)
            self.writes.append(value)

    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {"plc": {"type": "opcua", "endpoint": "opc.tcp://x:4840"}},
            "actions": {
                "out": {
                    "type": "opcua_write",
                    "source": "plc",
                    "node_id": "ns=2;s=Out",
                    "reset_value": False,
                    "when": {"verdict": "NG"},
                }
            },
        }
    )
    plc = SlowPlc()
    runner = ActionRunner(cfg, {"plc": plc})
    for i in range(40):
        await runner.handle(["out"], result(verdict="NG" if i % 2 else "OK", item_seq=i), None)
        if i == 0:
            await asyncio.sleep(0.01)  # the first write is under way while 39 more results come
    await runner.flush()
    assert plc.writes[0] is False and plc.writes[-1] is True and len(plc.writes) == 2
    assert runner.stats["out"]["superseded"] == 38 and runner.stats["out"]["ok"] == 2


def test_a_forwarder_keeps_bounded_state_when_every_reading_has_a_new_tag(monkeypatch):
    """Forwarding every tag of a source whose device puts a counter in its topic: the deadband and rate
    state per tag starts afresh past MAX_TAGS instead of growing for months; every reading still goes."""
    from edge_agent import tags
    from edge_agent.config import ForwardSettings

    monkeypatch.setattr(tags, "MAX_TAGS", 10)
    sent: list = []
    f = tags.Forwarder(
        ForwardSettings(name="all", source="s", outbox=True, deadband=1.0),
        "t",
        None,
        lambda k, b: sent.append(b),
    )
    for i in range(35):
        f.offer(Reading("s", f"plant/m1/{i}/v", float(i), 0.0, 0.0))
    assert len(f._last) <= 10 and f.stats["tag_state_reset"] == 3 and len(sent) == 35


def test_a_change_of_quality_passes_the_forwards_rate_limit():
    """A Sparkplug node's death (its tags BAD with their last values) within min_interval_ms of the last
    forwarded reading was rate-limited, and the latest value is not kept for later: the consumer's last word on
    the tag stayed GOOD. A change of quality is now sent at once; the same quality is still limited."""
    from devices.base import Quality
    from edge_agent import tags
    from edge_agent.config import ForwardSettings

    sent: list = []
    f = tags.Forwarder(
        ForwardSettings(name="oven", source="s", outbox=True, min_interval_ms=60_000, deadband=0.5),
        "t",
        None,
        lambda k, b: sent.append(b),
    )
    for value, quality in [
        (85.0, Quality.GOOD),
        (85.0, Quality.BAD),
        (86.0, Quality.BAD),
        (85.0, Quality.GOOD),
    ]:
        f.offer(Reading("s", "oven.temp", value, 0.0, 0.0, quality))
    assert [(b["value"], b["quality"]) for b in sent] == [(85.0, "good"), (85.0, "bad"), (85.0, "good")]
    assert f.stats["rate_limited"] == 1


def test_a_condition_compares_a_field_with_its_own_type_or_is_refused_by_name():
    # a threshold given as text ("0.8": quoted YAML, or a ${VAR} substitution) is read as the number;
    # before, each result raised TypeError inside the predicate and the condition never matched
    env = compile_condition({"score": {"gte": "0.8"}})
    assert env(result(score=0.9)) and not env(result(score=0.5))
    assert compile_condition({"margin": {"in": ["0.5", 1]}})(result(margin=0.5))
    assert compile_condition({"score": " 0.25 "})(result(score=0.25))
    # a whole number as text is read whole (a rule's score is an Int64 counter past 2**53 as it came): as a
    # float64, "9007199254740993" was 2**53, and 2**53 + 1 was not at or under it
    exact = compile_condition({"score": {"gt": "9007199254740992", "lte": " 9007199254740993 "}})
    assert (
        exact(result(score=2**53 + 1))
        and not exact(result(score=2**53))
        and not exact(result(score=2**53 + 2))
    )
    # a whole number past float64's range, as a number or as text, or of more digits than Python writes (a YAML
    # hex literal's): refused by name, as a rule's threshold past it is (no reading past it gives a score), not
    # an OverflowError at load (before 759cfca) nor accepted (before, and a ValueError writing it as JSON at start)
    for huge in (10**400, "1" + "0" * 400, -(10**400), int("F" * 4000, 16)):
        with pytest.raises(
            ConditionError, match=r"^score: lt: a whole number past float64's range, which no score"
        ):
            compile_condition({"score": {"lt": huge}})
    assert compile_condition({"score": {"lt": 10**308}})(result(score=2**64))
    for spec, msg in [
        ({"score": {"gte": "high"}}, "score: gte: 'high' is not a number, and score is one"),
        ({"anomaly_score": {"gt": True}}, "anomaly_score: gt: True is not a number"),
        ({"score": {"ne": float("nan")}}, "score: ne: NaN equals nothing"),
        ({"label": 1}, "label: 1 is not text, and label is text (this would never match); quote it: '1'"),
        ({"model_version": {"in": [2, "3"]}}, "model_version: in: 2 is not text"),
    ]:
        with pytest.raises(ConditionError, match=re.escape(msg)):
            compile_condition(spec)


def test_a_conditions_number_written_as_text_past_float64s_range_is_refused_however_many_digits():
    """A ``${VAR}`` or a quoted YAML value of 5,000 digits (more than Python's int() converts, 4,300) or
    ``"1e400"`` was read by float() as an infinity and taken: ``{score: {gt: ...}}`` matched no score, ``lt``
    every one, unsaid, where the same number of 400 digits is refused by name. An infinity written as one
    stays a number (as YAML's .inf), and leading zeros do not make a number large."""
    for text in ("1" * 5000, " -" + "9" * 4301 + " ", "1" * 4301 + ".5", "1e400", "-1E400"):
        with pytest.raises(
            ConditionError, match=r"^score: gt: .*past float64's range, which no score reaches$"
        ):
            compile_condition({"score": {"gt": text}})
    assert compile_condition({"score": {"lt": "0" * 5000 + "7"}})(result(score=6))
    assert not compile_condition({"score": {"lt": "-" + "0" * 5000 + "7"}})(result(score=6))
    assert compile_condition({"score": {"lt": " inf "}})(result(score=1e308))
    assert compile_condition({"score": {"gt": "-Infinity"}})(result(score=-1e308))


@pytest.mark.timeout(30)
def test_a_conditions_or_thresholds_text_of_a_million_zeros_and_a_fraction_is_read_at_once():
    """The whole-number reading of f7e578d9 tried a text of zeros that was no whole number ("0" * N + ".5") at
    every split of its zeros: 20,000 of them took 10 s at config load (a rule's threshold too), a million hours
    (it grows with the square of their number).
    Such a text is its float (0.5), read at once; the whole numbers' reading is as it was."""
    text = "0" * 1_000_000 + ".5"
    assert compile_condition({"score": {"gt": text}})(result(score=0.6))
    assert not compile_condition({"score": {"gt": text}})(result(score=0.4))
    assert RuleSettings(name="r", source="s", tag="t", above=" -" + text).above == -0.5
    for whole, value in (("0", 0), ("007", 7), ("-0", 0), (" +000120 ", 120), ("0" * 5000 + "7", 7)):
        assert RuleSettings(name="r", source="s", tag="t", above=whole).above == value, whole
