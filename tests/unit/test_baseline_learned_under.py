"""A saved baseline records what it was learned under (``learned_under``: the state tag and the state's
range, the speed's source, the speed bands); a config edited since never judges the machine by a baseline
learned under other settings: it says so in one line (a ``baseline_discarded`` event) and learns anew,
reusing a baseline only where its settings are unchanged."""

from __future__ import annotations

import json

import pytest

from bench._bearing_signals import Machine
from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.settings import BaselineSettings, ProcessState
from edge_agent.maintenance.states import STATE_INPUT, StateBaselines
from protocols.events import EventKind
from tests.unit.test_baseline_states import Clock

RPM = 1800.0
FS, N = 10000.0, 2048


def _settings(**kw) -> BaselineSettings:
    return BaselineSettings(**{"windows": 30, "speed_tag": "Speed", "iso_alarm_zone": "off", **kw})


def _states(loaded_min: float = 0.5, **kw) -> BaselineSettings:
    kw.setdefault("windows", 50)  # 25 of each state (20 at least for a state's baseline)
    return _settings(
        state_tag="Load",
        states=[ProcessState(name="empty", max=0.5), ProcessState(name="loaded", min=loaded_min)],
        **kw,
    )


def _feed(b, m: Machine, clock: Clock, n: int, load: float | None = None) -> None:
    for _ in range(n):
        clock.t += 10.0
        b.process(m.window(), {"_shaft_speed": RPM} | ({} if load is None else {STATE_INPUT: load}))


def _discarded(events: list) -> list[str]:
    return [e.data["reason"] for e in events if e.kind == EventKind.BASELINE_DISCARDED]


def test_adding_a_state_tag_says_the_former_baseline_is_not_used_and_removing_it_never_reloads_it(tmp_path):
    clock, m = Clock(), Machine(61, fs=FS, n=N, rpm=RPM)
    path = tmp_path / "baseline" / "spindle.json"
    one = Baseline(_settings(), FS, N, path=path, pipeline="spindle", clock=clock)
    _feed(one, m, clock, 30)
    assert one.state == "ready" and path.is_file()

    events: list = []  # state_tag given: the one baseline is no seed for the states, and that is said
    per = StateBaselines(_states(), FS, N, path=path, pipeline="spindle", clock=clock, on_event=events.append)
    said = _discarded(events)
    assert len(said) == 1 and "spindle.json was learned without state_tag" in said[0], said
    assert per.commissioning and not path.exists()
    _feed(per, m, clock, 50, 0.0)
    assert per.state == "ready"

    events.clear()  # state_tag removed months later: the one baseline learns anew, said
    again = Baseline(_settings(), FS, N, path=path, pipeline="spindle", clock=clock, on_event=events.append)
    assert again.state == "learning", "a baseline from before the state_tag was loaded again"
    assert any("learned under a state_tag the config no longer gives" in r for r in _discarded(events))

    events.clear()  # and state_tag given again: every state commissioned anew, not last year's reloaded
    back = StateBaselines(
        _states(), FS, N, path=path, pipeline="spindle", clock=clock, on_event=events.append
    )
    assert back.commissioning and back.by_state == {}
    _feed(back, m, clock, 1, 0.0)
    assert back.by_state["empty"].state == "learning"


def test_a_baseline_an_older_agent_left_beside_baselines_per_state_is_not_reloaded(tmp_path):
    """An agent before this change left ``<pipeline>.json`` (no record of what it was learned under)
    beside the per-state baselines it learned once state_tag was given; removing state_tag reloaded it."""
    clock, m = Clock(), Machine(62, fs=FS, n=N, rpm=RPM)
    path = tmp_path / "baseline" / "spindle.json"
    one = Baseline(_settings(), FS, N, path=path, pipeline="spindle", clock=clock)
    _feed(one, m, clock, 30)
    d = json.loads(path.read_text())
    d.pop("learned_under", None)
    path.write_text(json.dumps(d))
    (tmp_path / "baseline" / "spindle.states.json").write_text(
        json.dumps({"state_tag": "Load", "commissioning": False, "states": []})
    )
    events: list = []
    again = Baseline(_settings(), FS, N, path=path, pipeline="spindle", clock=clock, on_event=events.append)
    assert again.state == "learning"
    assert any("learned before baseline.state_tag was given" in r for r in _discarded(events)), events


def test_a_baseline_saved_under_other_speed_bands_is_refused_in_one_line_and_learned_anew(tmp_path):
    clock, m = Clock(), Machine(63, fs=FS, n=N, rpm=RPM)
    path = tmp_path / "baseline" / "fan.json"
    _feed(Baseline(_settings(), FS, N, path=path, pipeline="fan", clock=clock), m, clock, 30)
    events: list = []
    b = Baseline(
        _settings(speed_band_pct=5.0), FS, N, path=path, pipeline="fan", clock=clock, on_event=events.append
    )
    assert b.state == "learning"
    said = _discarded(events)
    assert len(said) == 1 and "speed_band_pct 10.0 then, 5.0 now" in said[0], said
    # unchanged settings: loaded as before
    assert Baseline(_settings(speed_band_pct=5.0), FS, N, path=path, pipeline="fan").state == "learning"
    same = tmp_path / "baseline" / "pump.json"
    _feed(Baseline(_settings(), FS, N, path=same, pipeline="pump", clock=clock), m, clock, 30)
    assert Baseline(_settings(), FS, N, path=same, pipeline="pump", clock=clock).state == "ready"


def _commissioned(path, seed: int, clock: Clock) -> None:
    """Both states commissioned (25 windows each) and saved under ``path``."""
    m = Machine(seed, fs=FS, n=N, rpm=RPM)
    b = StateBaselines(_states(), FS, N, path=path, pipeline=path.stem, clock=clock)
    _feed(b, m, clock, 25, 0.0)
    _feed(b, m, clock, 25, 1.0)
    assert b.state == "ready" and sorted(b.by_state) == ["empty", "loaded"]


def test_another_state_tag_commissions_every_state_anew(tmp_path):
    clock, path = Clock(), tmp_path / "baseline" / "mixer.json"
    _commissioned(path, 64, clock)
    events: list = []
    other = _states().model_copy(update={"state_tag": "Program"})
    again = StateBaselines(other, FS, N, path=path, pipeline="mixer", clock=clock, on_event=events.append)
    assert again.commissioning and again.by_state == {}
    said = _discarded(events)
    assert len(said) == 1 and "state_tag 'Load'" in said[0] and "'Program'" in said[0], said


def test_a_state_whose_range_changed_is_relearned_and_the_others_kept(tmp_path):
    clock, path = Clock(), tmp_path / "baseline" / "press.json"
    _commissioned(path, 65, clock)
    events: list = []
    again = StateBaselines(
        _states(loaded_min=0.8), FS, N, path=path, pipeline="press", clock=clock, on_event=events.append
    )
    st = again.status()["process_states"]
    assert st["empty"]["state"] == "ready", st
    assert st["loaded"]["state"] == "learning", "a state learned on other values was judged by it"
    said = [e for e in events if e.kind == EventKind.BASELINE_DISCARDED]
    assert len(said) == 1 and said[0].data["process_state"] == "loaded"
    assert "state_range [0.5, None] then, [0.8, None] now" in said[0].data["reason"]


def test_a_baseline_an_older_agent_relearned_after_state_tag_was_removed_is_kept_on_upgrade(tmp_path):
    """Under a release before ``learned_under``: one baseline, then state_tag (its states commissioned), then
    state_tag removed and the one baseline relearned, under the config of now. The upgrade discarded that
    good baseline as "learned before baseline.state_tag was given": it began learning after the states."""
    clock, m = Clock(), Machine(66, fs=FS, n=N, rpm=RPM)
    path = tmp_path / "baseline" / "spindle.json"
    path.parent.mkdir()
    (tmp_path / "baseline" / "spindle.states.json").write_text(  # as that release wrote it
        json.dumps(
            {
                "state_tag": "Load",
                "commissioning": False,
                "started_at": clock.t,
                "learned_at": clock.t + 500.0,
                "windows": 50,
                "learning": {},
                "not_judged": {},
                "states": [],
            }
        )
    )
    clock.t += 86400.0  # state_tag removed, relearned the day after
    relearned = Baseline(_settings(), FS, N, path=None, pipeline="spindle", clock=clock)
    _feed(relearned, m, clock, 30)
    d = relearned.to_dict()
    d.pop("learned_under")
    path.write_text(json.dumps(d))
    events: list = []
    b = Baseline(_settings(), FS, N, path=path, pipeline="spindle", clock=clock, on_event=events.append)
    assert b.state == "ready", _discarded(events)
    assert not any("learned before baseline.state_tag" in r for r in _discarded(events))


@pytest.mark.parametrize("record", [5, "speed_band_pct", ["speed"]])
def test_a_damaged_learned_under_record_is_not_used_and_no_crash(tmp_path, record):
    """Valid JSON, but ``learned_under`` not a mapping (a damaged file): refused in one line, learned anew;
    it raised TypeError out of the baseline's start."""
    clock, m = Clock(), Machine(67, fs=FS, n=N, rpm=RPM)
    path = tmp_path / "baseline" / "fan.json"
    _feed(Baseline(_settings(), FS, N, path=path, pipeline="fan", clock=clock), m, clock, 30)
    d = json.loads(path.read_text())
    d["learned_under"] = record
    path.write_text(json.dumps(d))
    events: list = []
    b = Baseline(_settings(), FS, N, path=path, pipeline="fan", clock=clock, on_event=events.append)
    assert b.state == "learning"
    assert any("learned_under unreadable" in r for r in _discarded(events)), events


@pytest.mark.parametrize("text", ["[]", "null", "5", '{"state_tag": "Load", "states": 5}'])
def test_a_damaged_index_of_baselines_per_state_is_unreadable_and_no_crash(tmp_path, text):
    """Valid JSON of another shape in ``<pipeline>.states.json`` (or ``<pipeline>.json``): said unreadable,
    every state commissioned anew; it raised AttributeError or TypeError out of the baseline's start."""
    clock = Clock()
    path = tmp_path / "baseline" / "mixer.json"
    path.parent.mkdir()
    (tmp_path / "baseline" / "mixer.states.json").write_text(text)
    events: list = []
    b = StateBaselines(_states(), FS, N, path=path, pipeline="mixer", clock=clock, on_event=events.append)
    assert b.commissioning and b.by_state == {}
    assert any("unreadable file" in r for r in _discarded(events)), events
    single = tmp_path / "one" / "baseline" / "mixer.json"  # the one baseline's file, damaged alike
    single.parent.mkdir(parents=True)
    single.write_text(text)
    events.clear()
    one = Baseline(_settings(), FS, N, path=single, pipeline="mixer", clock=clock, on_event=events.append)
    assert one.state == "learning"
    assert any("unreadable baseline file" in r for r in _discarded(events)), events


def _as_before_the_record(folder) -> None:
    """The data folder as a release before ``learned_under`` left it."""
    for f in folder.glob("*.json*"):
        d = json.loads(f.read_text())
        d.pop("learned_under", None)
        d.pop("state_ranges", None)
        f.write_text(json.dumps(d))


def test_a_baseline_from_before_the_record_loads_after_the_upgrade_and_a_later_edit_is_then_told(tmp_path):
    """Every baseline commissioned before the upgrade (no ``learned_under``) loaded as before, and kept
    loading through any later edit: speed_band_pct, a state's range. Now loaded once as learned under the
    settings of the upgrade, and stamped so: an edit after it is refused in one line."""
    clock, m = Clock(), Machine(68, fs=FS, n=N, rpm=RPM)
    path = tmp_path / "baseline" / "fan.json"
    _feed(Baseline(_settings(), FS, N, path=path, pipeline="fan", clock=clock), m, clock, 30)
    _as_before_the_record(path.parent)
    assert Baseline(_settings(), FS, N, path=path, pipeline="fan", clock=clock).state == "ready"  # upgrade
    assert Baseline(_settings(), FS, N, path=path, pipeline="fan", clock=clock).state == "ready"
    events: list = []
    edited = _settings(speed_band_pct=5.0)
    b = Baseline(edited, FS, N, path=path, pipeline="fan", clock=clock, on_event=events.append)
    assert b.state == "learning", "a baseline from before the upgrade judged through an edit"
    assert any("speed_band_pct 10.0 then, 5.0 now" in r for r in _discarded(events)), events

    per = tmp_path / "baseline" / "press.json"
    _commissioned(per, 69, clock)
    _as_before_the_record(per.parent)
    again = StateBaselines(_states(), FS, N, path=per, pipeline="press", clock=clock)  # the upgrade
    assert {k: v["state"] for k, v in again.status()["process_states"].items()} == {
        "empty": "ready",
        "loaded": "ready",
    }
    edited_states = StateBaselines(_states(loaded_min=0.8), FS, N, path=per, pipeline="press", clock=clock)
    st = edited_states.status()["process_states"]
    assert st["empty"]["state"] == "ready" and st["loaded"]["state"] == "learning", st


def test_states_put_in_another_order_relearn_only_where_the_first_that_holds_changed(tmp_path):
    """The first state that holds wins. A catch-all ``running`` listed after ``heavy`` learned on the values
    below 0.8; put first, it took heavy's windows too and judged them by statistics that never saw them,
    unsaid. Now both are relearned; states that do not overlap keep their baselines in any order."""
    clock, m = Clock(), Machine(70, fs=FS, n=N, rpm=RPM)
    heavy, running = ProcessState(name="heavy", min=0.8), ProcessState(name="running")
    path = tmp_path / "baseline" / "saw.json"
    b = StateBaselines(
        _settings(windows=50, state_tag="Load", states=[heavy, running]),
        FS,
        N,
        path=path,
        pipeline="saw",
        clock=clock,
    )
    _feed(b, m, clock, 25, 0.0)
    _feed(b, m, clock, 25, 1.0)
    assert b.state == "ready" and sorted(b.by_state) == ["heavy", "running"]
    events: list = []
    swapped = _settings(windows=50, state_tag="Load", states=[running, heavy])
    again = StateBaselines(swapped, FS, N, path=path, pipeline="saw", clock=clock, on_event=events.append)
    st = again.status()["process_states"]
    assert st["running"]["state"] == "learning" and st["heavy"]["state"] == "learning", st
    assert any("state_taken_first_by" in r for r in _discarded(events)), events

    kept = tmp_path / "baseline" / "press.json"  # empty and loaded do not overlap: any order
    _commissioned(kept, 71, clock)
    flipped = _states().model_copy(update={"states": list(reversed(_states().states or []))})
    st = StateBaselines(flipped, FS, N, path=kept, pipeline="press", clock=clock).status()["process_states"]
    assert st["empty"]["state"] == "ready" and st["loaded"]["state"] == "ready", st
