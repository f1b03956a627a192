"""Every change of a model slot's ``state.json`` is one read-change-write under the store's lock. The slot's writers
(``set_current``, ``end_probation``, ``mark_failed``, ``mark_stopped``, ``set_aside``) read the state without it and
took it only to write: one that read before the model manager's ``forget_failed`` (a new deployment of a version the
health check rolled back, recorded as pending) and wrote after it put the earlier deployment's verdict back on disk,
and a restart inside the new deployment's swap reported that verdict as the new deployment's (``failed``, declined
for good)."""

from __future__ import annotations

import json
import threading

import pytest

from edge_agent.models.store import ModelStore

OLD, NEW = "part-inspection-1.0.0-000000000000", "part-inspection-1.2.0-111111111111"
AGAIN = "part-inspection-1.1.0-aaaaaaaaaaaa"  # rolled back by an earlier deployment, now deployed again
VERDICT = "health check failed: error rate 100.0% > 5.0%"

WRITERS = {
    "set_current": lambda s: s.set_current(s.root / OLD, None),
    "end_probation": lambda s: s.end_probation(s.root / NEW),
    "mark_failed": lambda s: s.mark_failed(s.root / "zz-9.9.9-222222222222", "refused at load"),
    "mark_stopped": lambda s: s.mark_stopped(),
    "set_aside": lambda s: s.set_aside("zz-9.9.9-222222222222", "refused at verify"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_new_deployments_drop_of_the_earlier_verdict_is_never_undone_by_a_writer_in_another_thread(
    tmp_path, writer
):
    """The slot's writer reads the state; the manager's ``forget_failed`` comes at that very moment, in its own
    thread (as ``_write_pending`` runs in ``asyncio.to_thread`` beside a health watch's ``end_probation``). On the
    former store it wrote at once and the writer's stale state put the verdict back; now it waits for the writer and
    drops the entry from what the writer wrote."""
    for n in (OLD, NEW):
        (tmp_path / n).mkdir()

    class Store(ModelStore):
        writer_thread: threading.Thread | None = None
        read = threading.Event()
        forgotten = threading.Event()

        def state(self) -> dict:
            st = super().state()
            if threading.current_thread() is Store.writer_thread and not Store.read.is_set():
                Store.read.set()  # the writer has read: the drop comes now
                Store.forgotten.wait(0.3)  # done at once on the former store; now it waits for this write
            return st

    store = Store(tmp_path)
    store._write_state_file(
        {
            "current": NEW,
            "previous": OLD,
            "probation": {"candidate": NEW, "since": 0, "unclean_ends": 0, "stopped": False},
            "failed": {AGAIN: VERDICT},
        }
    )

    def forget() -> None:
        Store.read.wait(5)
        store.forget_failed(AGAIN)
        Store.forgotten.set()

    other = threading.Thread(target=forget)
    Store.writer_thread = threading.Thread(target=WRITERS[writer], args=(store,))
    other.start()
    Store.writer_thread.start()
    Store.writer_thread.join(5)
    other.join(5)
    assert Store.read.is_set() and Store.forgotten.is_set()
    on_disk = json.loads(store.state_path.read_text())
    assert AGAIN not in (on_disk.get("failed") or {}), on_disk  # formerly the earlier verdict, back on disk
    assert store.state().get("failed", {}).get(AGAIN) is None
