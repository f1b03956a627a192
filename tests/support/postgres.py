"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` from /usr/lib/postgresql/*/bin into a temp folder,
on a free loopback port, started once per test session (``postgres_url`` fixture). As root, the server runs as
the ``postgres`` (or ``nobody``) user, since ``initdb`` refuses root. Skips, naming the fix, when the binaries are
missing (``apt-get install -y postgresql``, which ``make system-deps`` does)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.support.peers import free_port


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _as_user() -> tuple[list[str], str | None]:
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"], user
    pytest.skip("running as root and neither a 'postgres' nor a 'nobody' user exists for initdb")


class PgServer(str):
    """The base URL (without a database name) of the session's server, which ``restart()`` can restart (a
    fast shutdown that ends every connection, then a start on the same port and data)."""

    restart_cmd: list[str]

    def restart(self) -> None:
        subprocess.run(self.restart_cmd, check=True, capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def running_postgres(
    settings: str = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
):
    """A PostgreSQL server in a temp folder for as long as the ``with`` lasts (``PgServer``); also used by
    the benches. ``RuntimeError`` when it cannot start; ``FileNotFoundError`` without the binaries."""
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError(
            "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin: apt-get install -y "
            "postgresql (make system-deps)"
        )
    prefix, user = _as_user()
    root = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
    if user:
        shutil.chown(root, user)
    data, port = root / "data", free_port()

    def run(*cmd):
        return subprocess.run(
            [*prefix, *map(str, cmd)], check=True, capture_output=True, text=True, timeout=60
        )

    ctl = [
        bindir / "pg_ctl",
        "-D",
        data,
        "-w",
        "-t",
        "30",
        "-l",
        root / "log",
        "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 {settings}",
    ]
    try:
        run(
            bindir / "initdb",
            "-D",
            data,
            "-U",
            "fleet",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        run(*ctl, "start")
    except subprocess.CalledProcessError as exc:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr or exc.stdout} {log[-2000:]}") from exc
    server = PgServer(f"postgresql://fleet@127.0.0.1:{port}")
    server.restart_cmd = [*prefix, *map(str, ctl), "-m", "fast", "restart"]
    try:
        yield server
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The base URL without a database name (a ``PgServer``); one server per test session."""
    if postgres_bin() is None:
        pytest.skip(
            "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin: apt-get install -y postgresql "
            "(make system-deps)"
        )
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's server (so that tests never see each other's rows)."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_server}/{name}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
