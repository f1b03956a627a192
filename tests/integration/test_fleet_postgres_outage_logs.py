"""PostgreSQL unreachable under a running fleet service (the database refusing connections, every connection of
the service cut, as when it restarts or its host reboots): the rollouts' tick (every second) and the streams'
poll of desired-state changes (4 times a second) fail at each run. Each is logged with its traceback once per
reason, not at each run, and says when it succeeds again, without a restart of the service."""

from __future__ import annotations

import asyncio
import logging

import psycopg

from cloud_trainer.fleet.service import FleetServer
from tests.support.fleet import make_pki
from tests.support.peers import free_port
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)
from tests.support.waits import until


def _refuse_connections(server: str, url: str, refuse: bool) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'false' if refuse else 'true'}")
        if refuse:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid()",
                (name,),
            )


async def test_postgres_unreachable_logs_the_tick_and_the_poll_once_per_reason_not_at_every_run(
    tmp_path,
    postgres_server,  # noqa: F811
    postgres_url,  # noqa: F811
    caplog,
):
    pki = make_pki(tmp_path / "pki", agents=())
    srv = FleetServer(
        tmp_path / "cloud",
        free_port(),
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        store=postgres_url,
    )
    await srv.start()
    failed = {"tick": 0, "poll": 0}

    def counted(what, call):
        def run(*args, **kw):
            try:
                return call(*args, **kw)
            except Exception:
                failed[what] += 1
                raise

        return run

    srv.control.tick = counted("tick", srv.control.tick)
    srv.control.changes_since = counted("poll", srv.control.changes_since)
    try:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="cloud_trainer.fleet"):
            await asyncio.to_thread(_refuse_connections, postgres_server, postgres_url, True)
            # several reconnect attempts of the control's connection, each refused, and failed runs between them
            await until(
                lambda: failed["tick"] >= 5 and failed["poll"] >= 16, what="the tick and poll failing"
            )
            for logger in ("cloud_trainer.fleet.service", "cloud_trainer.fleet.stream"):
                mine = [r for r in caplog.records if r.name == logger and r.levelno >= logging.ERROR]
                traced = [r for r in mine if r.exc_info]
                # once per reason (the connection refused; the pause before the next attempt; a connection cut
                # under a transaction), not once per run: each run logged a traceback
                assert 1 <= len(traced) <= 3 and len(mine) <= 4, (
                    logger,
                    failed,
                    [r.getMessage() for r in mine],
                )
            await asyncio.to_thread(_refuse_connections, postgres_server, postgres_url, False)
            for logger in ("cloud_trainer.fleet.service", "cloud_trainer.fleet.stream"):
                await until(
                    lambda logger=logger: any(
                        r.name == logger and "succeeds again" in r.getMessage() for r in caplog.records
                    ),
                    what=f"{logger} saying it succeeds again",
                )
    finally:
        await asyncio.to_thread(_refuse_connections, postgres_server, postgres_url, False)
        await srv.stop()
