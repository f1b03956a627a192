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
