"""A model slot's ``state.json`` (which package is current, previous, under probation) lies in the agent's data
folder, a disk anyone with the gateway's shell can edit, and ``ModelStore.state`` read it whole at every step of
a start or a swap: a named pipe there waited for ever (the slot's start with it), a file of gigabytes or a link
to ``/dev/zero`` filled the agent's memory, and a deep nesting raised RecursionError out of the slot's start.
It is read bounded now, as the installed manifest is: such a file counts as no state, as a new slot's, said once
in a warning naming the file and why."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading

import pytest

from edge_agent.models.store import STATE_MAX_BYTES, ModelStore

LOGGER = "edge_agent.models.store"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_a_state_larger_than_the_store_writes_is_no_state_said_once_naming_the_file(tmp_path, caplog):
    store = ModelStore(tmp_path / "store")
    body = json.dumps({"current": "vision-1.0.0-0123456789ab", "previous": None})
    store.state_path.write_text(body + " " * (STATE_MAX_BYTES + 1 - len(body)))  # valid JSON, too large
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.state() == {}
        assert store.current() is None
        assert store.state() == {}
    said = _warnings(caplog)
    assert said == [
        f"model store: {store.state_path}: larger than {STATE_MAX_BYTES} bytes, the most it may hold; read as "
        "no state (a start serves the newest package installed in the slot, else starts as a new slot starts; "
        "the next change of state writes a new state.json)"
    ]
    # the next change of state replaces it, and a state within the bound is read as written
    store.mark_failed(tmp_path / "vision-0.9.0-0123456789ab", "refused")
    assert store.state()["failed"] == {"vision-0.9.0-0123456789ab": "refused"}


def test_a_state_nested_past_the_parsers_depth_is_no_state_not_a_recursion_error(tmp_path, caplog):
    store = ModelStore(tmp_path / "store")
    store.state_path.write_text("[" * 200_000)  # 200 KB, within the bound
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.state() == {}
    (said,) = _warnings(caplog)
    assert said.startswith(f"model store: {store.state_path}: not JSON (")


@pytest.mark.parametrize("body", ["[1, 2]", '"vision-1.0.0"', "\xff{}"])
def test_a_state_that_is_no_json_object_is_no_state_said_with_the_file(tmp_path, caplog, body):
    store = ModelStore(tmp_path / "store")
    store.state_path.write_bytes(body.encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.state() == {}
    (said,) = _warnings(caplog)
    assert said.startswith(f"model store: {store.state_path}: not ")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX file kind")
def test_a_state_that_is_a_named_pipe_is_no_state_not_waited_for(tmp_path, caplog):
    store = ModelStore(tmp_path / "store")
    os.mkfifo(store.state_path)
    got: list = []
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        t = threading.Thread(target=lambda: got.append(store.state()), daemon=True)
        t.start()
        t.join(60)  # a bound for a hang, not a time measured: the read takes microseconds
        hung = t.is_alive()
        if hung:  # the former code: blocked opening the pipe; a writer that opens and closes it frees it
            with open(store.state_path, "wb"):
                pass
            t.join()
    assert not hung, "state() waited on the named pipe"
    assert got == [{}]
    assert _warnings(caplog) == [
        f"model store: {store.state_path}: a named pipe, not a file; read as no state (a start serves the newest "
        "package installed in the slot, else starts as a new slot starts; the next change of state writes a new "
        "state.json)"
    ]


def test_a_retried_write_never_puts_its_stale_state_over_one_written_meanwhile(tmp_path):
    """``write_pending`` (the slot's retry, in a worker thread) read the state a refused write left in memory
    before it took the write lock: a swap's write in another thread between the two (``set_current``) was then
    overwritten by the stale state, and state.json named the wrong current. The other write now waits for the
    retry, and the newer state is the one on disk."""
    stale = {"current": "vision-1.0.0-0123456789ab", "previous": None, "probation": None}
    newer = {
        "current": "vision-1.1.0-0123456789ab",
        "previous": "vision-1.0.0-0123456789ab",
        "probation": None,
    }

    class Store(ModelStore):
        armed = False

        @property  # type: ignore[override]
        def unwritten(self):
            held = self.__dict__.get("_u")
            if Store.armed:  # the retry's read of it: the swap's write comes at that very moment
                Store.armed = False
                started = threading.Event()

                def swap_writes() -> None:
                    started.set()
                    self._write_state(newer)

                other = threading.Thread(target=swap_writes)
                other.start()
                started.wait()
                other.join(2.0)  # done at once on the former code; now it waits for the retry's lock
                self.__dict__["other"] = other
            return held

        @unwritten.setter
        def unwritten(self, value):
            self.__dict__["_u"] = value

    store = Store(tmp_path / "store")
    store.unwritten = stale  # a write of it the disk refused
    Store.armed = True
    store.write_pending()
    store.__dict__["other"].join()
    # formerly the stale 1.0.0 written over the swap's 1.1.0
    assert json.loads(store.state_path.read_text())["current"] == newer["current"]
    assert store.unwritten is None


def test_a_state_restored_while_it_read_empty_is_taken_not_written_over(tmp_path, caplog):
    """A state.json that stops reading while the slot runs is answered from the state last read and written again
    (``_lost``); but one written over it before that write (a restore or an edit, by hand: emptied, then written,
    the slot reading between) was undone within 5 s by the state remembered, the restore lost. Read again first: a
    file that reads then is taken as it is; one still empty is written again as before."""
    store = ModelStore(tmp_path / "store")
    for v in ("1.1.0", "1.2.0"):
        (store.root / f"vision-{v}-0123456789ab").mkdir()
    store.state_path.write_text(json.dumps({"current": "vision-1.1.0-0123456789ab", "previous": None}))
    assert store.current() == "vision-1.1.0-0123456789ab"
    store.state_path.write_text("")  # the slot reads it between the cut and the write
    assert store.current() == "vision-1.1.0-0123456789ab"
    restored = {"current": "vision-1.2.0-0123456789ab", "previous": "vision-1.1.0-0123456789ab"}
    store.state_path.write_text(json.dumps(restored))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.write_pending()  # (the slot's retry)
    assert json.loads(store.state_path.read_text()) == restored  # formerly the 1.1.0 state written over it
    assert store.state() == restored and store.unwritten is None
    assert _warnings(caplog)[-1] == f"model store: {store.state_path} reads again; taken as it is"
    store.state_path.write_text("")  # still empty at the retry: the state remembered written again
    assert store.current() == restored["current"]
    assert store.write_pending()
    assert json.loads(store.state_path.read_text()) == restored


def test_a_package_served_unchecked_at_a_start_on_no_state_is_noted_with_the_starts_state(tmp_path):
    """A start on a state.json that holds no state (a power cut emptied it) serves the newest package installed,
    then writes the state naming it. A package served with golden tolerances this agent refuses is noted
    (``served_unchecked``) at its load, before that write: written alone, it made a state naming no current, and a
    kill between the two made the next start a new slot's (the configured, older package installed again, the newest
    pruned). It is held and written with the start's state."""
    store = ModelStore(tmp_path / "store")
    (store.root / "vision-1.1.0-0123456789ab").mkdir()
    store.state_path.write_text("")  # emptied by a power cut
    assert store.start_folder() == (None, True)  # (no package reads here: nothing to serve)
    digest = "ab" * 32
    store.note_served_unchecked(digest)
    assert store.state_path.read_text() == ""  # formerly {"served_unchecked": [...]}, naming no current
    # a start after a kill here: still on the newest installed
    assert ModelStore(store.root, clean=False).start_folder()[1]
    assert store.served_unchecked() == [digest]
    store.set_current(store.root / "vision-1.1.0-0123456789ab", None)  # the start's own write
    on_disk = json.loads(store.state_path.read_text())
    assert on_disk["current"] == "vision-1.1.0-0123456789ab" and on_disk["served_unchecked"] == [digest]
    assert ModelStore(store.root, clean=False).served_unchecked() == [digest]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"current": ["vision-1.0.0-0123456789ab"]}, "'current' holds a list, not a folder name"),
        (
            {"current": "vision-1.0.0-0123456789ab", "previous": {}},
            "'previous' holds a dict, not a folder name",
        ),
        (
            {"current": "vision-1.0.0-0123456789ab", "probation": "x"},
            "'probation' holds a str, not an object",
        ),
        ({"probation": {"candidate": 7}}, "'probation.candidate' holds a int, not a folder name"),
    ],
)
def test_a_state_naming_its_folders_with_no_folder_name_is_no_state_said_with_the_key(
    tmp_path, caplog, body, said
):
    """A state.json edited by hand whose current, previous or probation is a list, a number or an object raised
    TypeError (unhashable) out of the slot's start and a swap's prune, naming no file. It is no state now, said with
    the file and the key, and a prune removes nothing by it."""
    store = ModelStore(tmp_path / "store")
    (store.root / "vision-1.0.0-0123456789ab").mkdir()
    store.state_path.write_text(json.dumps(body))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.state() == {}
        assert store.prune() == []
    assert _warnings(caplog)[0].startswith(f"model store: {store.state_path}: {said}; read as no state")


def test_a_state_restored_after_the_disk_refused_the_state_remembered_is_taken_not_written_over(
    tmp_path, caplog
):
    """The state remembered for a state.json that stopped reading is no decision of the slot's: a retry the disk
    refused (full, read-only) left it to be written as one, and a restore written before the disk had room again was
    undone by it. It is read again first at each retry, and the refusal is said (it was not: the state was already
    held in memory)."""
    store = ModelStore(tmp_path / "store")
    for v in ("1.1.0", "1.2.0"):
        (store.root / f"vision-{v}-0123456789ab").mkdir()
    store.state_path.write_text(json.dumps({"current": "vision-1.1.0-0123456789ab", "previous": None}))
    assert store.current() == "vision-1.1.0-0123456789ab"
    store.state_path.write_text("")
    assert store.current() == "vision-1.1.0-0123456789ab"
    write = store._write_state_file

    def full(state: dict) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    store._write_state_file = full  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not store.write_pending()
        assert not store.write_pending()  # (said once)
    assert [w for w in _warnings(caplog) if w.startswith("model store: cannot write")] == [
        f"model store: cannot write {store.state_path} ([Errno 28] No space left on device); the slot goes on as it "
        "decided and writes it once the disk takes it (a restart before then starts from what the file holds)"
    ]
    restored = {"current": "vision-1.2.0-0123456789ab", "previous": "vision-1.1.0-0123456789ab"}
    store.state_path.write_text(json.dumps(restored))
    store._write_state_file = write  # type: ignore[method-assign]
    assert store.write_pending()
    assert json.loads(store.state_path.read_text()) == restored  # formerly the 1.1.0 state written over it
    assert store.state() == restored and store.unwritten is None


def test_a_state_naming_a_folder_not_installed_is_refused_and_a_prune_keeps_every_folder(tmp_path, caplog):
    """A state.json restored (or edited) to name a folder that is not installed here (another gateway's backup, one
    pruned since the copy) was taken as it was: the next prune (a refused package's, a health window's end) kept
    only what it names and removed every installed folder, the one serving and the one to go back to included. It
    is refused, said naming the key, the folder and the slot's folder: while the slot runs it goes on with its own
    state and writes it again; at a start it is no state (the newest installed serves)."""
    store = ModelStore(tmp_path / "store")
    names = [f"vision-{v}-0123456789ab" for v in ("1.0.0", "1.1.0")]
    for n in names:
        (store.root / n).mkdir()
    store.set_current(store.root / names[1], store.root / names[0])
    restore = {"current": "vision-2.0.0-fedcba987654", "previous": names[1]}
    store.state_path.write_text(json.dumps(restore))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.current() == names[1]  # the slot's own state, from memory
        assert store.prune() == []  # formerly both folders removed
    assert sorted(p.name for p in store.root.iterdir() if p.is_dir() and p.name[0] != ".") == names
    assert _warnings(caplog)[0] == (
        f"model store: {store.state_path}: 'current' names 'vision-2.0.0-fedcba987654', which is not installed in "
        f"{store.root}; the slot goes on with its state as this agent last read or wrote it, and writes it again"
    )
    assert store.write_pending()  # (the slot's retry) the state it serves by, written again
    assert json.loads(store.state_path.read_text())["current"] == names[1]
    # at a start: the names not installed dropped, the rest kept; no current: the newest installed serves (nothing
    # pruned before the start writes its state)
    store.state_path.write_text(json.dumps({**restore, "previous": "../elsewhere", "failed": {"x": "why"}}))
    fresh = ModelStore(store.root, clean=False)
    assert fresh.state() == {"current": None, "previous": None, "failed": {"x": "why"}}
    assert fresh.state_unread is not None
    assert fresh.prune() == []
    assert sorted(p.name for p in store.root.iterdir() if p.is_dir() and p.name[0] != ".") == names


def test_a_prune_keeps_the_folders_the_slot_serves_whatever_the_state_names(tmp_path):
    """A state taken as written (a restore naming installed folders, not the one serving) kept only what it names:
    the slot's prune removed the folder of the model it serves. The folders the slot holds are kept."""
    store = ModelStore(tmp_path / "store")
    names = [f"vision-{v}-0123456789ab" for v in ("1.0.0", "1.1.0", "1.2.0")]
    for n in names:
        (store.root / n).mkdir()
    store.state_path.write_text(json.dumps({"current": names[0], "previous": None}))
    assert store.prune(serving=[names[2]]) == [names[1]]
    kept = sorted(p.name for p in store.root.iterdir() if p.is_dir() and p.name[0] != ".")
    assert kept == [names[0], names[2]]


def test_a_change_made_while_the_state_did_not_read_and_the_disk_refused_it_never_undoes_a_restore(
    tmp_path, caplog
):
    """state.json stopped reading while the slot ran, and a change the slot made then (a refused package marked
    failed, on the state it remembered) was refused by the disk too: it was answered from memory, the file not read
    again, and written over a restore made meanwhile once the disk took it. The file is read again first: a restore
    is taken as it is, said; the file back as the change found it (an I/O error that passed) has the change written."""
    store = ModelStore(tmp_path / "store")
    names = [f"vision-{v}-0123456789ab" for v in ("1.0.0", "1.1.0", "1.2.0")]
    for n in names:
        (store.root / n).mkdir()
    before = json.dumps({"current": names[1], "previous": None})
    write = store._write_state_file

    def full(state: dict) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    for restore in ({"current": names[2], "previous": names[1]}, None):
        store.state_path.write_text(before)
        assert store.current() == names[1]
        store.state_path.write_text("")
        store._write_state_file = full  # type: ignore[method-assign]
        store.mark_failed(store.root / names[0], "refused")  # the slot's change, refused by the disk
        assert store.state()["failed"] == {names[0]: "refused"}  # (the slot's state meanwhile)
        store.state_path.write_text(json.dumps(restore) if restore else before)
        store._write_state_file = write  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert store.write_pending()
        on_disk = json.loads(store.state_path.read_text())
        if restore:  # formerly the 1.1.0 state and its failed entry written over it
            # the change's verdict kept with the restore (formerly dropped: a restart served the refused version again)
            taken = {**restore, "failed": {names[0]: "refused"}}
            assert on_disk == taken and store.state() == taken
            assert _warnings(caplog)[-1].startswith(
                f"model store: {store.state_path} reads again, written since"
            )
        else:
            assert on_disk["current"] == names[1] and on_disk["failed"] == {names[0]: "refused"}
