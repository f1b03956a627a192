"""``<data_dir>/alarm-outputs.json`` (the outputs raised alarms hold, to clear those of an alarm a new config no
longer has) left empty or cut short between runs (a power cut, a file system repair): nothing is known to
clear, and that is said naming the file, so that someone checks the outputs an earlier run may have left on."""

from __future__ import annotations

import logging

import pytest

from edge_agent import actions
from edge_agent.config import parse_config


def _first_result(data, caplog) -> list[str]:
    cfg = parse_config({"agent": {"id": "a", "data_dir": str(data)}, "http": {"enabled": False}}, "t.yaml")
    runner = actions.ActionRunner(cfg, {}, state_dir=data)
    with caplog.at_level(logging.WARNING, logger="edge_agent.actions"):
        runner._clear_orphans()
    assert runner._raised_saved == []
    return [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("body", [b"", b'{"raised": [{"alarm": "a", "out'], ids=["empty", "cut_short"])
def test_an_alarm_outputs_file_left_empty_or_cut_short_is_said_naming_it(tmp_path, caplog, body):
    (tmp_path / actions.RAISED_FILE).write_bytes(body)
    said = _first_result(tmp_path, caplog)
    # formerly nothing: an output a removed alarm left raised stayed so without a word
    assert len(said) == 1 and str(tmp_path / actions.RAISED_FILE) in said[0] and "not cleared" in said[0], (
        said
    )


def test_no_alarm_outputs_file_yet_is_no_warning(tmp_path, caplog):
    assert _first_result(tmp_path, caplog) == []
