"""The withdrawal state across restarts (``<data_dir>/deployments/withdrawals``): the versions the fleet said are
withdrawn (kept in memory only before: a restart before the fleet heard the failure confirmed the withdrawn version
healthy) beside the installs it could not be asked about. Bounded, written whole or not at all, and a torn file
(a power cut on a disk that reorders writes) is read from its copy."""

from __future__ import annotations

import json
from types import SimpleNamespace

from edge_agent.models import manager as manager_module
from edge_agent.models.manager import ModelManager

UNASKED = {"deployment_id": "depA", "slot": "vision", "version": "1.1.0", "digest": "a" * 64, "package": "p"}


def _manager(data):
    return ModelManager({}, SimpleNamespace(data_dir=data))


def test_a_withdrawal_is_read_back_by_the_next_start_even_from_a_torn_file(tmp_path):
    mgr = _manager(tmp_path)
    mgr._write_unasked("vision", {**UNASKED, "size": 10})
    mgr._withdraw("a" * 64, "withdrawn from the registry (ticket 5120)")
    assert _manager(tmp_path).withdrawn == {"a" * 64: "withdrawn from the registry (ticket 5120)"}
    path = tmp_path / "deployments" / "withdrawals"
    path.write_bytes(path.read_bytes()[:20])  # torn
    again = _manager(tmp_path)
    assert again.withdrawn == {"a" * 64: "withdrawn from the registry (ticket 5120)"}
    assert again._unasked()["vision"]["deployment_id"] == "depA"
    again._withdraw("a" * 64, None)
    again._write_unasked("vision", None)
    assert sorted(p.name for p in (tmp_path / "deployments").iterdir()) == []  # nothing left, no temporary


def test_the_withdrawals_kept_are_bounded_and_a_former_releases_file_is_folded_in(tmp_path, monkeypatch):
    monkeypatch.setattr(manager_module, "MAX_REFUSED", 5)
    deployments = tmp_path / "deployments"
    deployments.mkdir()
    (deployments / "withdrawal-unasked").write_text(json.dumps({"vision": {**UNASKED, "size": 10}}))
    mgr = _manager(tmp_path)
    assert set(mgr._unasked()) == {"vision"}
    for i in range(8):
        mgr._withdraw(f"{i:064x}", f"withdrawn {i}")
    kept = json.loads((deployments / "withdrawals").read_text())
    assert list(kept["withdrawn"]) == [f"{i:064x}" for i in range(3, 8)]  # the latest 5
    assert set(kept["unasked"]) == {"vision"}
    assert not (deployments / "withdrawal-unasked").exists()  # folded into the one file
    assert _manager(tmp_path).withdrawn == kept["withdrawn"]
