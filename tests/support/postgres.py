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


def upgrade_beside_an_open_write(
    url: str, tmp_path: Path, version: int, write: str, building: str, read: str | None = None
) -> tuple[list[int], object]:
    """An older replica's database (migrated up to ``version`` - 1) with one of its writes under way (``write``, its
    one parameter 'first', its transaction open), the upgrade to the newest migrations started in a thread and waited
    for until it waits on a lock in a statement naming ``building``; then another write (parameter 'later', with a
    ``lock_timeout`` of 500 ms: ``LockNotAvailable`` if it waits behind the migration) and ``read`` are made. Returns
    (the versions the upgrade applied, ``read``'s first value)."""
    import threading
    import time

    import psycopg

    from cloud_trainer.fleet.store_pg import MIGRATIONS, migrate, migration_files

    older = tmp_path / f"older_{version}"
    older.mkdir()
    for v, path in migration_files():
        if v < version:
            shutil.copy(path, older / path.name)
    done: list = []
    got = None
    with (
        psycopg.connect(url, autocommit=True) as admin,
        psycopg.connect(url) as writing,
        psycopg.connect(url) as later,
    ):
        migrate(admin, older)
        writing.execute(write, ("first",))

        def upgrading() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                done.append(migrate(conn, MIGRATIONS))

        upgrade = threading.Thread(target=upgrading)
        upgrade.start()
        try:
            for _ in range(600):  # until the upgrade waits for that write (or ended: its exception is shown)
                waiting = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND wait_event_type = 'Lock' "
                    "AND pid <> pg_backend_pid()",
                    (f"%{building}%",),
                ).fetchone()[0]
                if waiting or not upgrade.is_alive():
                    break
                time.sleep(0.05)
            assert waiting, f"the migration never reached {building}"
            later.execute("SET lock_timeout = '500ms'")
            later.execute(write, ("later",))
            if read is not None:
                got = later.execute(read).fetchone()[0]
            later.commit()
        finally:
            writing.commit()
            upgrade.join(60)
    assert done, "the upgrade did not finish"
    return done[0], got
