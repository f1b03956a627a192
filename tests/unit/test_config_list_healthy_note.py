"""`cloud-trainer config list` / `deployments`: what a config's healthy report says beside it is shown."""

from __future__ import annotations

import argparse

from cloud_trainer.admin_cli import _print_deployments
from cloud_trainer.fleet.deployment import Deployment


def test_a_configs_healthy_report_saying_a_plcs_heartbeat_is_held_is_shown_by_its_agent(capsys):
    """A config adding a fleet-fed slot with a pipeline writing through a PLC is applied and healthy while that
    PLC's heartbeat is held (its line in its safe state until the package serves); the agent's report says so, and
    the table showed the rollout healthy, the words only in --json. A model's healthy target keeps the reason of an
    earlier step (a download retried): not shown as what its healthy report says."""
    held = (
        "heartbeat of source plc held until the fleet's package serves: no model yet for the pipelines writing "
        "through it (p2); the PLC's watchdog falls back to its safe state meanwhile"
    )
    config = Deployment(
        id="c1",
        kind="config",
        created=0.0,
        package="line1",
        version="d" * 64,
        digest="d" * 64,
        steps=["100%"],
        state="completed",
        targets={"gw1": {"status": "healthy", "reason": held}, "gw2": {"status": "healthy"}},
    )
    model = Deployment(
        id="m1",
        created=0.0,
        package="part-inspection",
        version="1.0.0",
        digest="e" * 64,
        slot="vision",
        targets={"gw3": {"status": "healthy", "reason": "download_retry: connection reset"}},
    )
    _print_deployments(argparse.Namespace(json=False), [config, model])
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("c1 ") and "gw1" in x]
    assert held in line, out
    assert "gw2" not in out and "download_retry" not in out, out
