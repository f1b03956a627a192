"""A deployment's pending file (``<data_dir>/deployments/<slot>.json``) found at a start is settled from the slot's
store: a ``failed`` entry for its folder is that deployment's outcome (rolled back, refused at load). A folder the
slot set aside at that start (a byte altered on disk) is no verdict on the package: the pending file is dropped and
the fleet's desired state installs the version again. An agent stopped between the fleet's answer to the healthy
report and the pending file's removal (a loaded machine) read the set-aside as the deployment's outcome: the
version was refused for good, its completed deployment reported failed, and the previous version served."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from edge_agent.models.manager import ModelManager
from edge_agent.models.store import ModelStore
from tests.unit.test_agent_commands import cfg

DIGEST = "ab" * 32
FOLDER = f"part-inspection-1.1.0-{DIGEST[:12]}"


@pytest.mark.parametrize("what", ["set aside at the start", "rolled back by its health check"])
async def test_a_pending_deployment_whose_folder_was_set_aside_is_installed_again_not_refused(tmp_path, what):
    store = ModelStore(tmp_path / "models" / "vision")
    (store.root / FOLDER).mkdir()
    if what == "set aside at the start":
        store.set_aside(FOLDER, f"package {FOLDER}: model.onnx digest mismatch: altered or corrupted")
    else:
        store.mark_failed(store.root / FOLDER, "health check failed: NG rate 0.9")
    slot = SimpleNamespace(  # the slot serves the configured 1.0.0 again
        store=store, status=lambda: {"digest": "cd" * 32}, last_outcome=None, state="active"
    )
    mgr = ModelManager({"vision": slot}, cfg(tmp_path / "agent"))
    mgr.pending_dir.mkdir(parents=True)
    pending = mgr.pending_dir / "vision.json"
    d = {"deployment_id": "dep-1", "slot": "vision", "version": "1.1.0", "digest": DIGEST}
    pending.write_text(json.dumps({**d, "package": "part-inspection", "failed_before": None}))

    await mgr._settle_pending()

    if what == "set aside at the start":
        # a copy to fetch again: the desired state installs it (was: refused for good, reported failed)
        assert mgr.refused == {}
        assert not pending.exists()
    else:  # the deployment's own verdict: refused for that deployment, reported failed (kept until the fleet hears)
        assert mgr.refused[DIGEST].startswith("health check failed: NG rate 0.9")
        assert mgr._refused_for[DIGEST] == "dep-1"
        assert pending.exists()
