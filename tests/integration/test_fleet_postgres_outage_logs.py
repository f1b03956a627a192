"""PostgreSQL unreachable under a running fleet service (the database refusing connections, every connection of
the service cut, as when it restarts or its host reboots): the rollouts' tick (every second) and the streams'
poll of desired-state changes (4 times a second) fail at each run. Each is logged with its traceback once per
reason, not at each run, and says when it succeeds again, without a restart of the service."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

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


async def test_a_store_failure_tells_the_agent_and_the_admin_its_kind_and_id_never_the_sql_or_the_database(
    tmp_path,
    postgres_server,  # noqa: F811
    postgres_url,  # noqa: F811
    caplog,
):
    """A failure of the PostgreSQL store reached the tenant's agent and admin in its own words: the SQL and the table
    in the heartbeat's and the batch's UNAVAILABLE ("relation "records" does not exist / LINE 1: INSERT INTO
    records (tenant, ..."), and in grpc's UNKNOWN of an admin call ("Unexpected <class 'psycopg.errors...'>"). They
    are told the kind of failure and an error id; the service's log has the whole text under that id. The failure is
    real: the agents' table renamed under the running service."""
    import grpc

    from cloud_trainer.fleet.service import channel_credentials
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=("ada",))
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", store=postgres_url
    )
    await srv.start()

    def channel(folder: str, name: str):
        return grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki / "ca.pem", pki / folder / f"{name}.pem", pki / folder / f"{name}.key"),
        )

    agent, admin = channel("agents", "gw1"), channel("admins", "ada")

    async def push() -> None:
        record = pb.Record(seq=1, kind="result", t=1.0, payload=b"{}")
        async for _ in rpc.FleetStub(agent).PushRecords(iter([pb.RecordBatch(records=[record])]), timeout=10):
            pass

    def moved(away: bool) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for table in ("agents", "records"):
                a, b = (table, f"{table}_away") if away else (f"{table}_away", table)
                conn.execute(f"ALTER TABLE {a} RENAME TO {b}")

    try:
        await rpc.FleetStub(agent).Heartbeat(pb.HeartbeatRequest(), timeout=10)
        await asyncio.to_thread(moved, True)
        told = {}
        with caplog.at_level(logging.ERROR, logger="cloud_trainer.fleet"):
            for what, call in (
                ("heartbeat", rpc.FleetStub(agent).Heartbeat(pb.HeartbeatRequest(), timeout=10)),
                ("batch", push()),
                ("admin", rpc.AdminStub(admin).ListAgents(pb.ListAgentsRequest(), timeout=10)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                told[what] = (err.value.code(), err.value.details())
        for what, (code, details) in told.items():
            # was: the SQL, the table, the exception's class (admin: UNKNOWN, "Unexpected <class ...")
            for word in ("relation", "INSERT", "SELECT", "agents", "records", "psycopg", "LINE", "127.0.0.1"):
                assert word not in details, (what, details)
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL), (what, code, details)
            assert "an internal error of the service; error id " in details, (what, details)
            eid = details.split("error id ")[1][:10]
            # the service's log has the whole text under that id
            said = [r for r in caplog.records if f"error id {eid}" in r.getMessage()]
            assert said and said[0].exc_info and "does not exist" in str(said[0].exc_info[1]), (what, eid)
        assert (
            "could not write this batch" in told["batch"][1]
            and "nothing of it was stored" in told["batch"][1]
        )
    finally:
        await asyncio.to_thread(moved, False)
        await agent.close()
        await admin.close()
        await srv.stop()


async def test_the_last_flush_at_stop_waits_briefly_for_a_connection_when_postgresql_refuses_them(
    postgres_server,  # noqa: F811
    postgres_url,  # noqa: F811
    monkeypatch,
    caplog,
):
    """A stop with PostgreSQL down and state reports pending: the last flush (the batch, then two reports alone)
    waited the pool's 30 s for a connection each call, 61 s measured, past a service manager's stop timeout. The
    stop's calls wait STOP_STORE_WAIT_S; the pool's own timeout is put back after (a store passed in is reused)."""
    import time

    from cloud_trainer.fleet import stream as fleet_stream
    from cloud_trainer.fleet.store_pg import PostgresStore

    monkeypatch.setattr(fleet_stream, "STOP_STORE_WAIT_S", 0.2)
    store = PostgresStore(postgres_url, max_size=2)
    hub = fleet_stream.StreamHub(store, None, flush_s=60)
    await hub.start()
    for agent in ("gw-a", "gw-b"):
        await hub.report(("acme", agent), ({"v": "1"}, [], {}, 0, {}, time.time()), 0)
    await asyncio.to_thread(_refuse_connections, postgres_server, postgres_url, True)
    try:
        with caplog.at_level(logging.WARNING, logger="cloud_trainer.fleet"):
            await asyncio.wait_for(hub.stop(), 30)  # (was: 90 s, three waits of 30 s)
        said = [r.getMessage() for r in caplog.records if "the last flush at stop failed" in r.getMessage()]
        assert said and "after 0.20 sec" in said[0], said  # the stop's wait, not the pool's 30 s
        assert store.pool.timeout == 30.0
    finally:
        await asyncio.to_thread(_refuse_connections, postgres_server, postgres_url, False)
        store.close()
