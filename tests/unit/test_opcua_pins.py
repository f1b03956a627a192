"""The OPC UA namespace pins kept in the agent's data folder: per source and endpoint, bounded, and a damaged
file read as none kept (the sources pin afresh) rather than stopping the agent."""

from __future__ import annotations

import json
import time

from edge_agent.opcua_pins import MAX_PINNED, PINS_FILE, NamespacePinFile


def test_pins_are_kept_per_source_and_endpoint_and_unconfigured_sources_dropped(tmp_path) -> None:
    path = tmp_path / PINS_FILE
    both = frozenset({"a", "b"})
    NamespacePinFile(path, "a", "opc.tcp://plc-a:4840", both).save({2: "urn:a", 3: "urn:x"})
    NamespacePinFile(path, "b", "opc.tcp://plc-b:4840", both).save({2: "urn:b"})
    assert NamespacePinFile(path, "a", "opc.tcp://plc-a:4840", both).load() == {2: "urn:a", 3: "urn:x"}
    # pointed at another server: pinned afresh there, not refused by the other server's namespaces
    assert NamespacePinFile(path, "a", "opc.tcp://plc-c:4840", both).load() is None
    NamespacePinFile(path, "b", "opc.tcp://plc-b:4840", frozenset({"b"})).save({2: "urn:b", 3: "urn:y"})
    assert set(json.loads(path.read_text())["sources"]) == {"b"}  # source a left the config
    big = {i: f"urn:{i}" for i in range(1, MAX_PINNED + 50)}
    NamespacePinFile(path, "b", "opc.tcp://plc-b:4840", both).save(big)
    assert len(NamespacePinFile(path, "b", "opc.tcp://plc-b:4840", both).load() or {}) == MAX_PINNED


def test_a_damaged_pins_file_is_read_as_none_kept(tmp_path, caplog) -> None:
    path = tmp_path / PINS_FILE
    pins = NamespacePinFile(path, "a", "opc.tcp://plc-a:4840", frozenset({"a"}))
    for text in (
        "{not json",
        "[1, 2]",
        '{"sources": {"a": {"endpoint": "opc.tcp://plc-a:4840", "namespaces": 7}}}',
    ):
        path.write_text(text)
        assert pins.load() is None, text
    path.write_text(
        '{"sources": {"a": {"endpoint": "opc.tcp://plc-a:4840", "namespaces": {"x": "u", "2": 5, "3": "urn:a"}}}}'
    )
    assert pins.load() == {3: "urn:a"}
    pins.save({2: "urn:a"})  # written over whole
    assert pins.load() == {2: "urn:a"}
    assert any("is not read" in r.getMessage() for r in caplog.records)


def test_a_save_over_a_pins_file_not_read_keeps_the_other_sources_pins(tmp_path, monkeypatch) -> None:
    """The file not read at a source's first connect (an I/O error, too many open files: no disk fault can be
    made here, so the read is made to fail): its save wrote that source's entry alone, the other sources' pins
    gone, each unprotected at its next start. A file that can never be read (too large) is written over."""
    import errno

    import pytest

    from edge_agent import files, opcua_pins

    path = tmp_path / PINS_FILE
    both = frozenset({"a", "b"})
    NamespacePinFile(path, "b", "opc.tcp://plc-b:4840", both).save({2: "urn:b"})
    kept = path.read_bytes()

    def unread(p):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(opcua_pins, "read_json_state", unread)
    a = NamespacePinFile(path, "a", "opc.tcp://plc-a:4840", both)
    with pytest.raises(OSError):  # the source says it (a WARNING) and runs on its pins in memory
        a.save({2: "urn:a"})
    assert path.read_bytes() == kept
    monkeypatch.undo()
    path.write_bytes(b" " * (files.STATE_FILE_MAX_BYTES + 1))
    a.save({2: "urn:a"})
    assert a.load() == {2: "urn:a"}


def test_the_namespaces_cli_shows_the_kept_namespaces_and_accepts_a_new_order(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from devices.opcua.settings import OpcUaSettings
    from edge_agent import cli

    settings = OpcUaSettings(endpoint="opc.tcp://plc-a:4840", nodes=[{"node_id": "ns=2;s=Speed"}])
    monkeypatch.setattr(
        cli, "_load", lambda path: SimpleNamespace(sources={"plc": settings}, data_dir=tmp_path)
    )
    pins = NamespacePinFile(tmp_path / PINS_FILE, "plc", settings.endpoint, frozenset({"plc"}))
    pins.save({2: "urn:plc", 3: "urn:diag"})
    assert cli.main(["namespaces", "agent.yaml"]) == 0
    assert capsys.readouterr().out == "plc (opc.tcp://plc-a:4840): ns=2 urn:plc, ns=3 urn:diag\n"
    assert cli.main(["namespaces", "agent.yaml", "--accept", "plcc"]) == 1
    assert "no opcua source 'plcc'" in capsys.readouterr().err
    assert pins.load() == {2: "urn:plc", 3: "urn:diag"}
    assert cli.main(["namespaces", "agent.yaml", "--accept", "plc"]) == 0
    assert "restart the agent" in capsys.readouterr().out and pins.load() is None


def test_the_namespaces_cli_shows_a_servers_uris_escaped_and_keeps_no_endpoint_password(
    tmp_path, monkeypatch, capsys
):
    """The URIs are the server's: a line feed in one printed a forged line of its own (another index said
    to be urn:plc), an ANSI escape drove the terminal; an endpoint's password was kept in the file and shown."""
    from types import SimpleNamespace

    from devices.opcua.settings import OpcUaSettings
    from edge_agent import cli

    settings = OpcUaSettings(endpoint="opc.tcp://op:s3cret@plc-a:4840", nodes=[{"node_id": "ns=2;s=Speed"}])
    monkeypatch.setattr(
        cli, "_load", lambda path: SimpleNamespace(sources={"plc": settings}, data_dir=tmp_path)
    )
    pins = NamespacePinFile(tmp_path / PINS_FILE, "plc", settings.endpoint, frozenset({"plc"}))
    pins.save({2: "urn:evil\nplc (opc.tcp://plc-a:4840): ns=2 urn:plc\x1b[2J"})
    assert "s3cret" not in (tmp_path / PINS_FILE).read_text()
    assert cli.main(["namespaces", "agent.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out and "s3cret" not in out, out
    assert "urn:evil\\nplc" in out and "\\x1b[2J" in out, out
    (tmp_path / PINS_FILE).unlink()
    (tmp_path / PINS_FILE).mkdir()  # cannot be written over: said, no traceback
    assert cli.main(["namespaces", "agent.yaml", "--accept", "plc"]) == 1
    assert "cannot be written" in capsys.readouterr().err


def test_commands_beside_the_agent_read_the_kept_namespaces_as_it_does(tmp_path, monkeypatch, capsys) -> None:
    """``edge-agent namespaces`` and ``validate --online`` read the file lax: a read failing for a cause that passes
    (too many open files, an I/O error) showed "none kept" and had the raw ns= index checked, where the agent
    refuses and tries again. They try again a few times now, and then say the file could not be read."""
    import asyncio
    import errno
    from types import SimpleNamespace

    import pytest

    from devices.opcua.client import OpcUaError, _kept_resolve
    from devices.opcua.settings import OpcUaSettings
    from edge_agent import cli, opcua_pins

    settings = OpcUaSettings(endpoint="opc.tcp://plc-a:4840", nodes=[{"node_id": "ns=2;s=Speed"}])
    monkeypatch.setattr(
        cli, "_load", lambda path: SimpleNamespace(sources={"plc": settings}, data_dir=tmp_path)
    )
    opcua_pins.pin_file(tmp_path, "plc", {"plc": settings}).save({2: "urn:plc"})
    monkeypatch.setattr(opcua_pins, "CLI_PAUSE_S", 0.0)
    read, fails = opcua_pins.read_json_state, [2]

    def flaky(path):
        if fails[0]:
            fails[0] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return read(path)

    monkeypatch.setattr(opcua_pins, "read_json_state", flaky)
    assert cli.main(["namespaces", "agent.yaml"]) == 0  # the third read passes
    assert capsys.readouterr().out == "plc (opc.tcp://plc-a:4840): ns=2 urn:plc\n"
    fails[0] = 99
    assert cli.main(["namespaces", "agent.yaml"]) == 1  # was: "none kept", 0
    got = capsys.readouterr()
    assert "none kept" not in got.out and "could not be read (Too many open files)" in got.err, got
    cli_pins = opcua_pins.pin_file(tmp_path, "plc", {"plc": settings}, keep=False)

    async def served(
        *_,
    ):  # the server's namespace array, its ApplicationUri: read before the pins, as the agent does
        return ["http://opcfoundation.org/UA/", "urn:plc-a", "urn:plc"], None

    monkeypatch.setattr("devices.opcua.client._namespaces", served)
    monkeypatch.setattr("devices.opcua.client._server_uri", served)
    with pytest.raises(OpcUaError, match="namespaces kept for this server could not be read"):
        asyncio.run(_kept_resolve(None, cli_pins, 1.0))  # type: ignore[arg-type]  # was: the raw index checked


def test_pins_kept_with_the_servers_application_uri_are_its_own_under_another_endpoint(tmp_path) -> None:
    """A config naming the PLC by another endpoint (localhost for 127.0.0.1) pinned its namespaces afresh, in a
    reordered array's order: pins kept with the server's ApplicationUri are that server's. An older agent's entry
    (by its endpoint alone) is named by its server at the first load that knows it."""
    path, both = tmp_path / PINS_FILE, frozenset({"plc"})
    old = {"sources": {"plc": {"endpoint": "opc.tcp://127.0.0.1:4840", "namespaces": {"2": "urn:plc"}}}}
    path.write_text(json.dumps(old))
    other = NamespacePinFile(path, "plc", "opc.tcp://localhost:4840", both)
    other.server = "urn:plc-a:server"
    assert other.load() is None  # not named by its server yet: another endpoint's
    first = NamespacePinFile(path, "plc", "opc.tcp://127.0.0.1:4840", both)
    first.server = "urn:plc-a:server"
    assert first.load() == {2: "urn:plc"}
    assert json.loads(path.read_text())["sources"]["plc"]["server"] == "urn:plc-a:server"
    assert other.load() == {2: "urn:plc"}  # the same server by another name
    third = NamespacePinFile(path, "plc", "opc.tcp://localhost:4840", both)
    third.server = "urn:plc-b:server"
    assert third.load() is None  # another server: pinned afresh, as before
    cli_side = NamespacePinFile(path, "plc", "opc.tcp://localhost:4840", both, keep=False)
    assert cli_side.load() is None  # a command not connecting: by the endpoint


def test_an_accept_beside_the_agent_is_not_written_over_by_its_save(tmp_path) -> None:
    """``edge-agent namespaces --accept b`` written while the agent keeps source a's pins (its read of the file done,
    its write not yet): before, the agent wrote the file as it had read it and the accept was lost without a word
    (the restart refused as before it); now the accept waits for the agent's write and both are kept."""
    import threading

    path = tmp_path / PINS_FILE
    both = frozenset({"a", "b"})
    NamespacePinFile(path, "b", "opc.tcp://plc-b:4840", both).save({2: "urn:b"})
    agent = NamespacePinFile(path, "a", "opc.tcp://plc-a:4840", both)
    accept = threading.Thread(target=NamespacePinFile(path, "b", "opc.tcp://plc-b:4840", both).forget)
    read = agent._read

    def read_then_accept(saving: bool = False) -> dict:
        doc = read(saving)
        accept.start()
        accept.join(0.2)  # done by now, unless it waits for the agent's write
        return doc

    agent._read = read_then_accept  # type: ignore[method-assign]
    agent.save({2: "urn:a"})
    accept.join(5)
    kept = json.loads(path.read_text())["sources"]
    assert kept == {
        "a": {"endpoint": "opc.tcp://plc-a:4840", "namespaces": {"2": "urn:a"}},
        "b": {"endpoint": "opc.tcp://plc-b:4840", "accepted": True},
    }, kept


def test_a_source_without_pins_for_its_server_takes_another_sources_as_its_own_unless_it_accepted(
    tmp_path,
) -> None:
    """A source new to the config on a server another source pinned: by the array's order it pinned afresh, so after
    a reorder (followed by the other source) its ns= indexes named the other namespace's nodes; it takes the pins
    kept for its server, as its own (kept when that source leaves the config), but not after ``--accept``."""
    path = tmp_path / PINS_FILE
    plc = "opc.tcp://plc:4840"
    old = {2: "urn:plc", 3: "urn:diag"}
    NamespacePinFile(path, "a", plc, frozenset({"a", "b"})).save(old)
    beside = NamespacePinFile(path, "d", plc, frozenset({"a", "b", "d"}), keep=False)
    assert (
        beside.load() == old and "d" not in json.loads(path.read_text())["sources"]
    )  # compared, not written
    b = NamespacePinFile(path, "b", plc, frozenset({"a", "b"}))
    assert b.load() == old
    NamespacePinFile(path, "c", "opc.tcp://line:4840", frozenset({"b", "c"})).save({2: "urn:line"})  # a left
    assert b.load() == old
    b.forget()  # `edge-agent namespaces --accept b`: the next start pins the order it finds
    NamespacePinFile(path, "a", plc, frozenset({"a", "b"})).save(old)
    assert b.load() is None


def test_two_sources_saving_at_once_without_flock_keep_both_entries(tmp_path, monkeypatch) -> None:
    """The agent's sources save their pins from worker threads (their connects at once, after a config reload): on a
    file system without flock, each read the file, then wrote it with its own entry, and the one written first was
    dropped (that source pinned afresh at the next start, unprotected against a reorder). One at a time within the
    process, both are kept."""
    import threading

    from edge_agent import opcua_pins

    def no_flock(fd, op):
        raise OSError(38, "Function not implemented")

    read = opcua_pins.read_json_state

    def slow_read(path):
        doc = read(path)
        time.sleep(0.05)  # the other thread reads meanwhile, unless it waits
        return doc

    monkeypatch.setattr(opcua_pins.fcntl, "flock", no_flock)
    monkeypatch.setattr(opcua_pins, "read_json_state", slow_read)
    both = frozenset({"a", "b"})
    savers = [
        threading.Thread(
            target=NamespacePinFile(tmp_path / PINS_FILE, n, f"opc.tcp://plc-{n}", both).save, args=(p,)
        )
        for n, p in (("a", {2: "urn:a"}), ("b", {2: "urn:b"}))
    ]
    for t in savers:
        t.start()
    for t in savers:
        t.join(5)
    assert set(json.loads((tmp_path / PINS_FILE).read_text())["sources"]) == {"a", "b"}


def test_a_new_source_on_another_plc_of_the_same_application_uri_pins_its_own_order(tmp_path) -> None:
    """PLCs of one make often keep its default ApplicationUri (every S7-1500 named PLC_1, open62541's): a new source
    on another such PLC took the first one's entry by that URI, so its ns= indexes, written for its own PLC's order,
    were refused as moved by a download, the text pointing at the first PLC's namespace. Only an entry kept for its
    own endpoint is taken."""
    path = tmp_path / PINS_FILE
    both = frozenset({"a", "b"})
    a = NamespacePinFile(path, "a", "opc.tcp://line-1:4840", both)
    a.server = "urn:SIMATIC.S7-1500.OPC-UA.Application:PLC_1"
    a.save({2: "urn:plc", 3: "urn:diag"})
    b = NamespacePinFile(path, "b", "opc.tcp://line-2:4840", both)
    b.server = a.server
    assert b.load() is None  # pinned afresh at its connect, in its own PLC's order
    assert "b" not in json.loads(path.read_text())["sources"]


def test_a_server_whose_namespaces_another_endpoint_keeps_in_another_order_is_said_reordered(
    tmp_path,
) -> None:
    """A new source naming a pinned server by another endpoint (``localhost`` for ``127.0.0.1``) found no pins for
    it and pinned afresh, in a reordered array's order. Said (for the connect's refusal) only where the server's
    namespaces are that entry's in another order, an index the config uses moved, the ApplicationUris not
    telling two servers apart; not after ``--accept``."""
    path = tmp_path / PINS_FILE
    srcs = frozenset({"a", "b"})
    a = NamespacePinFile(path, "a", "opc.tcp://127.0.0.1:4840", srcs)
    a.server = "urn:plc-server"
    a.save({1: "urn:plc-server", 2: "urn:plc", 3: "urn:diag"})
    b = NamespacePinFile(path, "b", "opc.tcp://localhost:4840", srcs)
    now = ["http://opcfoundation.org/UA/", "urn:plc-server", "urn:diag", "urn:plc", "urn:new"]
    assert b.load() is None
    assert "'a' keeps for opc.tcp://127.0.0.1:4840" in (b.reordered_elsewhere(now, {2}) or "")
    b.server = a.server  # read, the same: still said (PLCs of one make may share it, a refusal says so)
    assert "urn:plc was at 2, now at 3" in (b.reordered_elsewhere(now, {2}) or "")
    assert b.reordered_elsewhere(now, {1}) is None  # no index the config uses moved
    assert (
        b.reordered_elsewhere(now[:3] + ["urn:other"], {2}) is None
    )  # not all of a's namespaces: another server
    b.server = "urn:another-server"
    assert b.reordered_elsewhere(now, {2}) is None
    b.server = None
    b.forget()
    assert b.reordered_elsewhere(now, {2}) is None
