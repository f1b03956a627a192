"""The store identity that decides whether two fleet services may share a port (portguard): one store spelt
two ways is one store, two stores are two, and a password never appears in what a refusal shows."""

from __future__ import annotations

import os
from pathlib import Path

from cloud_trainer.fleet.portguard import _redact, store_identity


def test_a_sqlite_store_is_its_real_path_however_the_data_folder_is_named(tmp_path, monkeypatch):
    (tmp_path / "cloud").mkdir()
    os.symlink(tmp_path / "cloud", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    key, shown = store_identity(None, tmp_path / "cloud")
    assert store_identity(None, tmp_path / "link")[0] == key == store_identity(None, Path("cloud"))[0]
    assert shown == str(tmp_path / "cloud" / "fleet.db")
    assert store_identity(None, tmp_path / "other")[0] != key


def test_a_postgresql_store_is_user_host_port_and_database_and_is_shown_without_its_password():
    key, shown = store_identity("postgresql://fleet:s3cret@DB.example:5432/fleet?sslmode=require", Path("."))
    assert key == store_identity("postgres://fleet@db.example/fleet", Path("."))[0]
    assert key != store_identity("postgresql://fleet@db.example/fleet2", Path("."))[0]
    assert "s3cret" not in shown and shown.startswith("postgresql://fleet@db.example")
    cmd = _redact("python -m cloud_trainer.cli serve --store postgresql://fleet:s3cret@db/fleet?password=x")
    assert "s3cret" not in cmd and "password=x" not in cmd


def test_listening_addresses_are_compared_as_addresses_not_as_text():
    # before, ::ffff:127.0.0.1 (an IPv6 listener taking 127.0.0.1's connections) and 127.0.0.1 were two addresses
    # to the port guard, so a serve of another store could listen beside one on the other spelling
    from cloud_trainer.fleet.portguard import overlaps

    for a, b in [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "localhost"),
        ("0:0:0:0:0:0:0:1", "[::1]"),
        ("::ffff:0.0.0.0", "127.0.0.2"),  # the IPv4 wildcard, IPv4-mapped: every IPv4 address
        ("localhost", "127.0.0.1"),
    ]:
        assert overlaps(a, b) and overlaps(b, a), (a, b)
    for a, b in [
        ("::ffff:127.0.0.2", "127.0.0.1"),
        ("127.0.0.2", "[::ffff:127.0.0.1]"),
        ("::1", "127.0.0.1"),
    ]:
        assert not overlaps(a, b) and not overlaps(b, a), (a, b)
