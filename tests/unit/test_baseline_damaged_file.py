"""A commissioned baseline whose file a power cut or a file system repair left empty or cut short: the
commissioned copy kept beside it (``<pipeline>.json.format2``) serves on, said naming both files, rather than
the machine being learned anew as it is now (possibly already worn)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from bench._bearing_signals import Machine
from edge_agent.maintenance.baseline import FEATURES, Baseline, kept_path, read_baseline
from tests.unit.test_maintenance_baseline import settings_for

NF = len(FEATURES)


@pytest.fixture(scope="module")
def commissioned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baseline")
    m = Machine(11, rpm=1750.0)
    b = Baseline(settings_for(m, windows=30), m.fs, m.n, path=folder / "pump.json", pipeline="pump")
    while b.state != "ready":
        b.process(m.window())
    assert kept_path(b.path).is_file()
    return m, folder, b.threshold


@pytest.mark.parametrize("damage", ["empty", "cut_short"])
def test_an_emptied_or_cut_short_baseline_file_is_restored_from_its_kept_commissioned_copy(
    tmp_path, commissioned, damage, caplog
):
    m, folder, threshold = commissioned
    shutil.copytree(folder, tmp_path / "baseline")
    path = tmp_path / "baseline" / "pump.json"
    data = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    events: list = []
    with caplog.at_level(logging.WARNING, logger="edge_agent.maintenance.baseline"):
        b = Baseline(
            settings_for(m, windows=30), m.fs, m.n, path=path, pipeline="pump", on_event=events.append
        )
    # formerly: 'unreadable baseline file ...; learning anew' with the commissioned copy beside it
    assert b.state == "ready" and b.threshold == threshold
    assert [e["kind"] for e in events] == ["baseline_loaded"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and str(path) in said[0] and str(kept_path(path)) in said[0], said
    assert read_baseline(path)["state"] == "ready"  # written back whole


def test_a_kept_copy_learned_under_other_settings_is_not_restored_over_a_damaged_file(tmp_path, commissioned):
    m, folder, _ = commissioned
    shutil.copytree(folder, tmp_path / "baseline")
    path = tmp_path / "baseline" / "pump.json"
    path.write_bytes(b"")
    b = Baseline(settings_for(m, windows=30, speed_band_pct=20.0), m.fs, m.n, path=path, pipeline="pump")
    assert b.state == "learning"


@pytest.mark.parametrize(
    "field, value",
    [
        ("floor_octaves", 5),
        ("temps", "x"),
        ("threshold", "high"),
        ("threshold", float("nan")),  # read, no window judged: a fault read OK
        ("threshold", 0.0),
        ("threshold", "-1"),
        ("bands", {"5": {"median": [0.0] * 3, "scale": [1.0] * 3, "n": 40}}),  # ValueError every window
        ("bands", {"5": {"median": "abc"}}),
        # a NaN median or spread scored NaN (a fault read OK, without a word), a spread of 0 every window NG
        ("bands", {"5": {"median": [float("nan")] * NF, "scale": [1.0] * NF, "n": 40}}),
        ("bands", {"5": {"median": [0.0] * NF, "scale": [0.0] * NF, "n": 40}}),
        ("speed_spans_hz", [[float("nan"), float("nan")]]),  # every window beyond them: judged by none
        ("speed_levels", {"slope": [0.0] * NF, "level": [0.0] * NF, "spread": [float("nan")] * NF}),
        ("state", 3),
    ],
)
def test_a_field_of_the_wrong_type_sets_the_file_aside_as_an_unreadable_one(
    tmp_path, commissioned, field, value, caplog
):
    """A hand edit or another writer: formerly TypeError (or KeyError) out of Baseline(), the pipeline's start."""
    m, folder, threshold = commissioned
    shutil.copytree(folder, tmp_path / "baseline")
    path = tmp_path / "baseline" / "pump.json"
    path.write_text(json.dumps({**read_baseline(path), field: value}))
    with caplog.at_level(logging.WARNING, logger="edge_agent.maintenance.baseline"):
        b = Baseline(settings_for(m, windows=30), m.fs, m.n, path=path, pipeline="pump")
    assert b.state == "ready" and b.threshold == threshold  # the kept commissioned copy serves on
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"field '{field}'" in said and str(kept_path(path)) in said, said
    b.process(m.window())  # and judges
    # the kept copy damaged as well: learned anew, said in a baseline_discarded event
    kept_path(path).write_text(json.dumps({**read_baseline(kept_path(path)), field: value}))
    path.write_text(json.dumps({**read_baseline(path), field: value}))
    events: list = []
    b = Baseline(settings_for(m, windows=30), m.fs, m.n, path=path, pipeline="pump", on_event=events.append)
    assert b.state == "learning"
    assert [e["kind"] for e in events] == ["baseline_discarded"]
    assert f"field '{field}'" in events[0]["reason"], events[0]
