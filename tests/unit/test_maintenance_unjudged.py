"""The share of a running machine's windows its baseline does not judge (``monitor.UnjudgedWatch``): a
run-up of seconds among judged windows is no episode; windows hunting for minutes are, said once with the
share and the reason, and ended once the machine is judged again; its memory holds slices of time, not
windows."""

from __future__ import annotations

from edge_agent.maintenance import monitor
from edge_agent.maintenance.monitor import UnjudgedWatch

DT = 0.2048  # windows of 2048 samples at 10 kHz, back to back


def test_a_run_up_is_no_episode_a_drive_hunting_for_minutes_is_said_once_and_ended():
    w = UnjudgedWatch("fan")
    said = []
    t = 0.0
    for i in range(int(20 * 60 / DT)):  # 20 minutes judged, but for a 10-s run-up at the start of each 5
        t = i * DT
        kind = "speed_changing" if t % 300 < 10 else None
        if (e := w.add(t, kind)) is not None:
            said.append(e)
    assert said == [] and w.status()["active"] is False
    assert w.status()["share"] < 0.1 and w.status()["span_s"] >= 590
    assert len(w.slices) <= monitor.UNJUDGED_BUCKETS + 1  # ~2,900 windows in the span, 61 slices kept
    for i in range(1, int(6 * 60 / DT)):  # the drive hunts: every window for 6 minutes
        if (e := w.add(t + i * DT, "speed_changing")) is not None:
            said.append(e)
    t += 6 * 60
    assert [e["active"] for e in said] == [True], said
    assert said[0]["share"] >= 0.5 and set(said[0]["reasons"]) == {"speed_changing"}
    assert "not judged by the baseline" in said[0]["message"] and "hunting" in said[0]["message"]
    for i in range(1, int(10 * 60 / DT)):  # judged again
        if (e := w.add(t + i * DT, None)) is not None:
            said.append(e)
    assert [e["active"] for e in said] == [True, False] and said[1]["share"] < 0.25
    assert w.status()["active"] is False
