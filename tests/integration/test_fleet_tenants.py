"""Tenants on one fleet service (real gRPC server, mTLS, SQLite): certificates carry the tenant; admins,
agents and downloads of one tenant never reach another's agents, packages, deployments or records; every
cross-tenant attempt is PERMISSION_DENIED with the very text a thing that does not exist gets, and counts
never include another tenant's rows; a package not signed by the tenant's key is refused; a platform
operator creates tenants and sees counts only; the default tenant (certificates without a tenant) works
as before."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import grpc
import pytest

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.fleet.store import SQLiteStore
from cloud_trainer.pki import ROLE_ADMIN, ROLE_AGENT, ROLE_OPERATOR, Identity, identity, init_tenant, issue
from cloud_trainer.registry import Registry
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import ROOT, make_pki
from tests.support.models import make_keypair, make_package
from tests.support.peers import free_port
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)

PD = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """PKI: default tenant (gw1, alice), acme (gw1, gw-a, bob), beta (gw-b, carol), operator ops; registries
    with each tenant's packages signed by its own key."""
    tmp = tmp_path_factory.mktemp("tenants")
    pki = make_pki(tmp / "pki", agents=("gw1",), admins=("alice",))
    certs = {("default", "gw1"): pki / "agents" / "gw1", ("default", "alice"): pki / "admins" / "alice"}
    keys = {}
    for tenant, agents, admin in (("acme", ("gw1", "gw-a"), "bob"), ("beta", ("gw-b",), "carol")):
        keys[tenant] = init_tenant(pki, tenant)[0].with_suffix(".key")
        base = pki / "tenants" / tenant
        for a in agents:
            certs[(tenant, a)] = issue(pki, a, ROLE_AGENT, base / "agents" / a, tenant=tenant)[0].with_suffix(
                ""
            )
        certs[(tenant, admin)] = issue(pki, admin, ROLE_ADMIN, base / "admins" / admin, tenant=tenant)[
            0
        ].with_suffix("")
    certs[("", "ops")] = issue(pki, "ops", ROLE_OPERATOR, pki / "operators" / "ops")[0].with_suffix("")
    default_key, _ = make_keypair(tmp / "default-keys")
    reg = Registry(tmp / "registry")
    b = tmp / "build"
    pkgs = {
        "default": make_package(b, version="1.0.0", key=default_key, out_dir=b / "d"),
        "acme": make_package(b, version="1.0.0", key=keys["acme"], out_dir=b / "a", seed=1),
        "beta": make_package(
            b, version="1.0.0", name="beta-secret", key=keys["beta"], out_dir=b / "b", seed=2
        ),
        # beta's key on a package named like acme's: copied into acme's registry, it must not deploy there
        "forged": make_package(b, version="1.5.0", key=keys["beta"], out_dir=b / "f", seed=3),
    }
    entries = {
        "default": reg.publish(pkgs["default"], [], {}, None, None),
        "acme": reg.for_tenant("acme").publish(pkgs["acme"], [], {}, None, None),
        "beta": reg.for_tenant("beta").publish(pkgs["beta"], [], {}, None, None),
        "forged": reg.for_tenant("acme").publish(pkgs["forged"], [], {}, None, None),
    }
    return tmp, pki, certs, entries


@pytest.fixture
async def cloud(world, tmp_path):
    tmp, pki, certs, entries = world
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=tmp / "registry",
    )
    await srv.start()
    chans = {}

    def ch(tenant: str, name: str):
        if (tenant, name) not in chans:
            c = certs[(tenant, name)]
            chans[(tenant, name)] = grpc.aio.secure_channel(
                f"127.0.0.1:{port}",
                channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key")),
            )
        return chans[(tenant, name)]

    # every agent registers (heartbeat) and pushes one record
    for tenant, agent in (("default", "gw1"), ("acme", "gw1"), ("acme", "gw-a"), ("beta", "gw-b")):
        await rpc.FleetStub(ch(tenant, agent)).Heartbeat(
            pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10
        )
        batch = pb.RecordBatch(records=[pb.Record(seq=1, kind="result", t=time.time(), payload=b"{}")])
        acks = [a async for a in rpc.FleetStub(ch(tenant, agent)).PushRecords(iter([batch]), timeout=10)]
        assert acks[0].stored == 1  # the same agent id in two tenants: two agents, no duplicate
    yield srv, ch, entries, port
    for c in chans.values():
        await c.close()
    await srv.stop()


async def _code(coro) -> tuple[grpc.StatusCode, str]:
    try:
        await coro
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def admin(ch, tenant, name):
    return rpc.AdminStub(ch(tenant, name))


def test_certificates_carry_the_tenant(world):
    _, _, certs, _ = world
    who = {k: identity(c.with_suffix(".pem").read_bytes()) for k, c in certs.items()}
    assert who[("default", "gw1")].tenant == "default"  # a certificate without a tenant attribute
    assert (who[("acme", "gw1")].name, who[("acme", "gw1")].tenant, who[("acme", "gw1")].role) == (
        "gw1",
        "acme",
        "agent",
    )
    assert who[("beta", "carol")].tenant == "beta" and who[("", "ops")] == Identity("ops", "operator", "")
    with pytest.raises(ValueError, match="tenant id"):
        issue(world[1], "x", ROLE_AGENT, world[0] / "x", tenant="Bad/Tenant")


async def test_admins_list_and_count_only_their_tenant(cloud):
    srv, ch, _, _ = cloud
    for (tenant, name), want in {
        ("acme", "bob"): ["gw-a", "gw1"],
        ("beta", "carol"): ["gw-b"],
        ("default", "alice"): ["gw1"],
    }.items():
        agents = (await admin(ch, tenant, name).ListAgents(pb.ListAgentsRequest(), timeout=10)).agents
        assert sorted(a.id for a in agents) == want
        assert all(a.records == 1 for a in agents)
        stats = await admin(ch, tenant, name).IngestStats(pb.IngestStatsRequest(), timeout=10)
        assert stats.records == len(want)  # totals never include another tenant's rows
    await admin(ch, "beta", "carol").CreateDeployment(
        pb.CreateDeploymentRequest(
            package="beta-secret", slot="vision", selector={"site": "*"}, strategy="all_at_once"
        ),
        timeout=10,
    )
    assert (
        await admin(ch, "acme", "bob").ListDeployments(pb.ListDeploymentsRequest(), timeout=10)
    ).deployments == []
    deps = (
        await admin(ch, "beta", "carol").ListDeployments(pb.ListDeploymentsRequest(), timeout=10)
    ).deployments
    assert [list(json.loads(d.json)["targets"]) for d in deps] == [["gw-b"]]
    assert srv.store.agents(tenant="beta")[0]["id"] == "gw-b" and len(srv.store.agents()) == 1


async def test_cross_tenant_admin_attempts_are_refused_like_things_that_do_not_exist(cloud):
    _, ch, entries, _ = cloud
    bob = admin(ch, "acme", "bob")
    carol = admin(ch, "beta", "carol")
    dep = json.loads(
        (
            await carol.CreateDeployment(
                pb.CreateDeploymentRequest(
                    package="beta-secret", slot="vision", agents=["gw-b"], strategy="all_at_once"
                ),
                timeout=10,
            )
        ).json
    )

    def same(a: tuple, b: tuple, theirs: str, missing: str) -> None:
        assert a[0] == b[0] == PD, (a, b)
        assert a[1].replace(theirs, "X") == b[1].replace(missing, "X"), (a, b)

    def create(package="part-inspection", agents=("gw-a",), version=""):
        return bob.CreateDeployment(
            pb.CreateDeploymentRequest(
                package=package, version=version, slot="vision", agents=list(agents), strategy="all_at_once"
            ),
            timeout=10,
        )

    # another tenant's package by name, by name and version: the answer of a package that does not exist
    same(
        await _code(create("beta-secret")),
        await _code(create("no-such-model")),
        "beta-secret",
        "no-such-model",
    )
    same(
        await _code(create("beta-secret", version="1.0.0")),
        await _code(create("nothing", version="1.0.0")),
        "beta-secret",
        "nothing",
    )
    # deploying to another tenant's agent (by id or by its labels), reading its stats or gaps
    same(await _code(create(agents=["gw-b"])), await _code(create(agents=["gw-zz"])), "gw-b", "gw-zz")
    await rpc.FleetStub(ch("beta", "gw-b")).Heartbeat(
        pb.HeartbeatRequest(labels={"site": "beta-plant"}), timeout=10
    )

    def by_label(site):
        return bob.CreateDeployment(
            pb.CreateDeploymentRequest(
                package="part-inspection", slot="vision", selector={"site": site}, strategy="all_at_once"
            ),
            timeout=10,
        )

    same(await _code(by_label("beta-plant")), await _code(by_label("nowhere")), "beta-plant", "nowhere")
    same(
        await _code(bob.IngestStats(pb.IngestStatsRequest(agent="gw-b"), timeout=10)),
        await _code(bob.IngestStats(pb.IngestStatsRequest(agent="gw-zz"), timeout=10)),
        "gw-b",
        "gw-zz",
    )
    # pausing, aborting or rolling back another tenant's deployment / package
    for action in ("pause", "abort"):
        same(
            await _code(
                bob.ControlDeployment(pb.ControlRequest(deployment_id=dep["id"], action=action), timeout=10)
            ),
            await _code(
                bob.ControlDeployment(
                    pb.ControlRequest(deployment_id="0123456789", action=action), timeout=10
                )
            ),
            dep["id"],
            "0123456789",
        )
    same(
        await _code(
            bob.Rollback(
                pb.RollbackRequest(package="beta-secret", version="1.0.0", slot="vision", agents=["gw-a"]),
                timeout=10,
            )
        ),
        await _code(
            bob.Rollback(
                pb.RollbackRequest(package="nope", version="1.0.0", slot="vision", agents=["gw-a"]),
                timeout=10,
            )
        ),
        "beta-secret",
        "nope",
    )
    # the default tenant's admin is a tenant like any other
    alice = admin(ch, "default", "alice")
    code, _ = await _code(
        alice.CreateDeployment(
            pb.CreateDeploymentRequest(
                package="beta-secret", slot="vision", agents=["gw1"], strategy="all_at_once"
            ),
            timeout=10,
        )
    )
    assert code == PD
    # carol's deployment is untouched and still running for gw-b only
    deps = [
        json.loads(d.json)
        for d in (await carol.ListDeployments(pb.ListDeploymentsRequest(), timeout=10)).deployments
    ]
    assert [(d["id"], d["state"], list(d["targets"])) for d in deps] == [(dep["id"], "running", ["gw-b"])]
    # operators and agents are not admins of any tenant
    for who in (("", "ops"), ("beta", "gw-b")):
        code, _ = await _code(admin(ch, *who).ListAgents(pb.ListAgentsRequest(), timeout=10))
        assert code == PD


async def test_agents_receive_and_download_only_their_tenant_packages(cloud):
    _, ch, entries, _ = cloud
    await admin(ch, "beta", "carol").CreateDeployment(
        pb.CreateDeploymentRequest(
            package="beta-secret", slot="vision", selector={"site": "*"}, strategy="all_at_once"
        ),
        timeout=10,
    )
    await admin(ch, "acme", "bob").CreateDeployment(
        pb.CreateDeploymentRequest(
            package="part-inspection", version="1.0.0", slot="vision", agents=["gw1"], strategy="all_at_once"
        ),
        timeout=10,
    )

    # an agent reporting on another tenant's deployment: refused as one that does not exist, nothing recorded
    beta_dep = json.loads(
        (await admin(ch, "beta", "carol").ListDeployments(pb.ListDeploymentsRequest(), timeout=10))
        .deployments[0]
        .json
    )

    def report(tenant, agent, dep_id):
        return rpc.FleetStub(ch(tenant, agent)).ReportDeployment(
            pb.DeploymentReport(
                deployment_id=dep_id, slot="vision", version="1.0.0", step="downloading", ok=True
            ),
            timeout=10,
        )

    theirs = await _code(report("acme", "gw-a", beta_dep["id"]))
    nothing = await _code(report("acme", "gw-a", "feedface00"))
    assert theirs[0] == nothing[0] == PD and theirs[1].replace(beta_dep["id"], "X") == nothing[1].replace(
        "feedface00", "X"
    )
    assert (await _code(report("beta", "gw-b", beta_dep["id"])))[0] == grpc.StatusCode.OK  # its own: accepted

    async def desired(tenant, agent):
        r = await rpc.FleetStub(ch(tenant, agent)).Heartbeat(
            pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10
        )
        return [(d.package, d.digest) for d in r.desired]

    assert await desired("beta", "gw-b") == [("beta-secret", entries["beta"]["digest"])]
    assert await desired("acme", "gw1") == [("part-inspection", entries["acme"]["digest"])]
    assert (
        await desired("acme", "gw-a") == [] and await desired("default", "gw1") == []
    )  # same id, other tenant

    async def download(tenant, agent, digest):
        out = b""
        async for c in rpc.FleetStub(ch(tenant, agent)).DownloadPackage(
            pb.DownloadRequest(digest=digest), timeout=10
        ):
            out += c.data
        return out

    assert len(await download("beta", "gw-b", entries["beta"]["digest"])) > 0
    missing = await _code(download("acme", "gw-a", "0" * 64))
    for tenant, agent, digest in (
        ("acme", "gw-a", entries["beta"]["digest"]),  # another tenant's package
        ("default", "gw1", entries["acme"]["digest"]),  # deployed to acme's gw1, not this
        ("acme", "gw1", entries["beta"]["digest"]),
        ("acme", "gw1", entries["default"]["digest"]),
    ):
        code, details = await _code(download(tenant, agent, digest))
        assert code == PD and details.replace(digest[:16], "X") == missing[1].replace("0" * 16, "X")


async def test_a_package_not_signed_by_the_tenant_key_is_refused(cloud):
    _, ch, entries, _ = cloud
    code, details = await _code(
        admin(ch, "acme", "bob").CreateDeployment(
            pb.CreateDeploymentRequest(
                package="part-inspection",
                version="1.5.0",
                slot="vision",
                agents=["gw-a"],
                strategy="all_at_once",
            ),
            timeout=10,
        )
    )
    assert code == PD and "not signed by this tenant's package key" in details


async def test_operator_creates_tenants_and_sees_counts_only(cloud, world):
    srv, ch, _, port = cloud
    ops = admin(ch, "", "ops")
    t = await ops.CreateTenant(
        pb.CreateTenantRequest(tenant="gamma", display_name="Gamma Castings"), timeout=10
    )
    assert (t.tenant, t.display_name, t.agents) == ("gamma", "Gamma Castings", 0)
    code, details = await _code(ops.CreateTenant(pb.CreateTenantRequest(tenant="Not Valid"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tenant id" in details
    usage = {u.tenant: u for u in (await ops.ListTenants(pb.ListTenantsRequest(), timeout=10)).tenants}
    assert set(usage) == {"default", "acme", "beta", "gamma"}
    assert (usage["acme"].agents, usage["acme"].records, usage["acme"].packages) == (2, 1 * 2, 2)
    assert (usage["beta"].agents, usage["default"].agents) == (1, 1)
    for tenant, name in (("acme", "bob"), ("default", "alice"), ("beta", "gw-b")):
        code, details = await _code(admin(ch, tenant, name).ListTenants(pb.ListTenantsRequest(), timeout=10))
        assert code == PD and "this method needs an operator certificate;" in details, details
        assert (
            await _code(admin(ch, tenant, name).CreateTenant(pb.CreateTenantRequest(tenant="x"), timeout=10))
        )[0] == PD
    code, _ = await _code(rpc.FleetStub(ch("", "ops")).Heartbeat(pb.HeartbeatRequest(), timeout=10))
    assert code == PD  # nor an agent
    # the CLIs: an admin's tables are its tenant's; the operator's is counts per tenant
    pki = world[1]

    def cli(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "cloud_trainer.cli",
                *args,
                "--endpoint",
                f"127.0.0.1:{port}",
                "--pki",
                str(pki),
                "--json",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    agents, tenants = await asyncio.gather(
        asyncio.to_thread(cli, "agents", "--tenant", "beta", "--admin", "carol"),
        asyncio.to_thread(cli, "tenants", "--operator", "ops"),
    )
    assert [a["id"] for a in json.loads(agents.stdout)["agents"]] == ["gw-b"], agents.stderr
    assert {t["tenant"]: int(t["agents"]) for t in json.loads(tenants.stdout)["tenants"]} == {
        "default": 1,
        "acme": 2,
        "beta": 1,
        "gamma": 0,
    }, tenants.stderr


async def test_operator_quotas_are_enforced_with_resource_exhausted_and_shown_in_usage(
    cloud, world, tmp_path
):
    srv, ch, _, port = cloud
    pki = world[1]
    ops = admin(ch, "", "ops")
    t = await ops.CreateTenant(
        pb.CreateTenantRequest(tenant="acme", max_agents=2, max_records_per_day=4), timeout=10
    )
    assert (t.max_agents, t.max_records_per_day, t.max_sample_bytes_per_day, t.agents, t.records_today) == (
        2,
        4,
        0,
        2,
        2,
    )
    assert t.package_bytes > 0  # acme's two published packages
    # a third agent of acme cannot join (neither stream nor heartbeat); its two agents keep working
    c = issue(pki, "gw-c", ROLE_AGENT, tmp_path / "gw-c", tenant="acme")[0].with_suffix("")
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key"))
    ) as gwc:
        code, details = await _code(rpc.FleetStub(gwc).Heartbeat(pb.HeartbeatRequest(), timeout=10))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details == (
            "tenant acme: 2 agents registered, the tenant's quota is 2; agent gw-c cannot join until "
            "the platform operator raises the quota"
        )
        code, _ = await _code(rpc.FleetStub(gwc).Connect(iter([pb.AgentMessage()]), timeout=10).read())
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        await rpc.FleetStub(ch("acme", "gw-a")).Heartbeat(pb.HeartbeatRequest(), timeout=10)
        # records: 2 of 4 used today; a batch of 3 is refused whole, a batch of 2 fits
        fleet = rpc.FleetStub(ch("acme", "gw-a"))

        def batch(*seqs):
            return pb.RecordBatch(
                records=[pb.Record(seq=s, kind="result", t=time.time(), payload=b"{}") for s in seqs]
            )

        code, details = await _code(fleet.PushRecords(iter([batch(2, 3, 4)]), timeout=10).read())
        assert (
            code == grpc.StatusCode.RESOURCE_EXHAUSTED
            and "quota of 4 records per day (2 used or reserved today)" in details
        )
        assert srv.store.stats("gw-a", tenant="acme")["records"] == 1  # nothing of the batch stored
        assert [a.stored async for a in fleet.PushRecords(iter([batch(2, 3)]), timeout=10)] == [2]
        usage = {u.tenant: u for u in (await ops.ListTenants(pb.ListTenantsRequest(), timeout=10)).tenants}
        assert (usage["acme"].records_today, usage["acme"].max_records_per_day, usage["acme"].agents) == (
            4,
            4,
            2,
        )
        assert (usage["beta"].records_today, usage["beta"].max_agents) == (
            1,
            0,
        )  # beta: no quota, its own count
        # the operator lifts the agent quota (0: no limit): gw-c joins
        await ops.CreateTenant(pb.CreateTenantRequest(tenant="acme", max_agents=0), timeout=10)
        await rpc.FleetStub(gwc).Heartbeat(pb.HeartbeatRequest(), timeout=10)
        assert srv.store.quotas()["acme"]["max_records_per_day"] == 4  # a field left out is unchanged


def test_a_store_from_before_tenants_moves_its_rows_to_the_default_tenant(tmp_path):
    db = sqlite3.connect(tmp_path / "fleet.db")
    db.executescript("""
CREATE TABLE records (tenant TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0,
  seq INTEGER NOT NULL, kind TEXT NOT NULL, t REAL NOT NULL, received REAL NOT NULL, payload TEXT NOT NULL,
  PRIMARY KEY (tenant, agent, epoch, seq)) WITHOUT ROWID;
CREATE TABLE agents (id TEXT PRIMARY KEY, labels TEXT NOT NULL DEFAULT '{}', last_seen REAL,
  slots TEXT NOT NULL DEFAULT '[]', health TEXT NOT NULL DEFAULT '{}', outbox_depth INTEGER DEFAULT 0,
  outbox TEXT NOT NULL DEFAULT '{}');
CREATE TABLE ingest (agent TEXT PRIMARY KEY, duplicates INTEGER NOT NULL DEFAULT 0, epoch INTEGER);
INSERT INTO records VALUES ('', 'gw1', 1, 1, 'result', 1.0, 1.0, '{}'), ('', 'gw1', 1, 3, 'result', 1.0, 1.0, '{}');
INSERT INTO agents (id, labels) VALUES ('gw1', '{"site": "p"}');
INSERT INTO ingest VALUES ('gw1', 2, 1);""")
    db.commit()
    db.close()
    st = SQLiteStore(tmp_path / "fleet.db")
    try:
        assert [a["id"] for a in st.agents()] == ["gw1"] and st.agents(tenant="acme") == []
        assert st.stats("gw1")["records"] == 2 and st.stats("gw1")["duplicates"] == 2
        assert [(g["first"], g["last"]) for g in st.gaps("gw1")] == [(2, 2)]
        assert st.ingest("gw1", [{"epoch": 1, "seq": 3, "kind": "result", "t": 1.0, "payload": "{}"}]) == (
            [3],
            0,
            1,
        )
        assert st.ingest(
            "gw1", [{"epoch": 1, "seq": 3, "kind": "result", "t": 1.0, "payload": "{}"}], tenant="acme"
        ) == ([3], 1, 0)
        assert st.usage() == {
            "default": {"agents": 1, "records": 2, "samples": 0},
            "acme": {"agents": 0, "records": 1, "samples": 0},
        }
        # a loss told at the first open (the count of its loss ranges, ingest.loss_rows, added after the table's
        # rebuild for tenants: before, the rebuild dropped it, and such a batch failed until the next start)
        drop = {"kind": "outbox_budget", "epoch": 1, "ranges": [[2, 2]]}
        st.ingest("gw1", [{"epoch": 1, "seq": 4, "kind": "event", "t": 1.0, "payload": json.dumps(drop)}])
        assert [(g["first"], g["cause"]) for g in st.gaps("gw1")] == [(2, "budget")]
    finally:
        st.close()


async def test_a_console_pinned_to_a_tenant_shows_that_tenant_only(cloud):
    import hashlib
    import urllib.request

    from cloud_trainer.fleet.console import Console

    srv, ch, _, _ = cloud
    png = b"\x89PNG fake sample of beta"
    batch = pb.RecordBatch(
        records=[
            pb.Record(
                seq=2,
                kind="sample",
                t=time.time(),
                payload=b'{"model": "m"}',
                sample=png,
                sample_sha256=hashlib.sha256(png).hexdigest(),
                sample_ext=".png",
            )
        ]
    )
    [_ async for _ in rpc.FleetStub(ch("beta", "gw-b")).PushRecords(iter([batch]), timeout=10)]
    digest = hashlib.sha256(png).hexdigest()
    consoles = {t: Console(srv, tenant=t) for t in ("acme", "beta")}
    for c in consoles.values():
        c.start()

    def get(t, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{consoles[t].port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    try:
        for path in ("/api/agents", "/api/agents?tenant=beta"):  # the URL cannot pick another tenant
            status, body = await asyncio.to_thread(get, "acme", path)
            assert status == 200 and sorted(a["id"] for a in json.loads(body)) == ["gw-a", "gw1"]
        assert (await asyncio.to_thread(get, "acme", f"/blob/{digest}?tenant=beta"))[0] == 404
        assert await asyncio.to_thread(get, "beta", f"/blob/{digest}") == (200, png)
        status, body = await asyncio.to_thread(get, "acme", "/api/models")
        assert {m["name"] for m in json.loads(body)} == {"part-inspection"} and len(json.loads(body)) == 2
        assert (await asyncio.to_thread(get, "acme", "/registry/.tenants/beta/beta-secret/index.json"))[
            0
        ] in (403, 404)
    finally:
        for c in consoles.values():
            c.stop()


async def test_a_refused_agent_reads_why_even_when_its_first_write_crosses_the_refusal(
    cloud, world, tmp_path
):
    """grpc's asyncio client turns a status that arrives while its first write is under way into INTERNAL
    (grpc#36066): the server waits for that write before refusing, so that the agent reads the quota."""
    _, ch, _, port = cloud
    pki = world[1]
    await admin(ch, "", "ops").CreateTenant(pb.CreateTenantRequest(tenant="acme", max_agents=2), timeout=10)
    c = issue(pki, "gw-c", ROLE_AGENT, tmp_path / "gw-c", tenant="acme")[0].with_suffix("")
    rng = random.Random(7)

    async def first(msg):  # the agent writes as soon as it has built its first report or batch
        await asyncio.sleep(rng.uniform(0, 0.004))
        yield msg

    seen: Counter = Counter()
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key"))
    ) as gwc:
        fleet = rpc.FleetStub(gwc)
        for _ in range(150):
            seen["Connect", *await _code(fleet.Connect(first(pb.AgentMessage()), timeout=10).read())] += 1
            seen[
                "PushRecords", *await _code(fleet.PushRecords(first(pb.RecordBatch()), timeout=10).read())
            ] += 1
    why = (
        "tenant acme: 2 agents registered, the tenant's quota is 2; agent gw-c cannot join until "
        "the platform operator raises the quota"
    )
    assert seen == {
        ("Connect", grpc.StatusCode.RESOURCE_EXHAUSTED, why): 150,
        ("PushRecords", grpc.StatusCode.RESOURCE_EXHAUSTED, why): 150,
    }


async def test_a_tenants_rollouts_in_progress_are_bounded_and_a_rollback_is_taken_past_the_limit_up_to_its_own(
    cloud, monkeypatch
):
    """beta starts rollouts of slots its agent does not have (never healthy: they stay running): the rollout tick
    reads and advances every running rollout of every tenant each second, under the lock every tenant's deployment
    calls wait for, and one tenant's 1,000 such rollouts made another's admin calls take 0.3-1 s instead of
    10-20 ms. Past ``MAX_ROLLOUTS_PER_TENANT`` (here 3) the next is ``RESOURCE_EXHAUSTED`` naming the limit, with
    nothing stored, a configuration rollout too; acme's rollouts and beta's rollbacks are taken, up to
    ``MAX_ROLLBACKS_PAST_LIMIT`` (here 2) more: rollbacks of slots its agent does not have were taken without end,
    and never ended; an aborted one makes room."""
    from cloud_trainer.fleet import control

    monkeypatch.setattr(control, "MAX_ROLLOUTS_PER_TENANT", 3)
    monkeypatch.setattr(control, "MAX_ROLLBACKS_PAST_LIMIT", 2)
    _, ch, _, _ = cloud
    carol, bob = admin(ch, "beta", "carol"), admin(ch, "acme", "bob")

    def rollout(package: str, slot: str, agent: str):
        return pb.CreateDeploymentRequest(
            package=package, version="1.0.0", slot=slot, agents=[agent], steps=["1", "100%"]
        )

    ids = [
        (await carol.CreateDeployment(rollout("beta-secret", f"s{i}", "gw-b"), timeout=10)).id
        for i in range(3)
    ]
    code, why = await _code(carol.CreateDeployment(rollout("beta-secret", "s3", "gw-b"), timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, why
    assert "tenant beta: 3 rollouts in progress" in why and "at once is 3" in why and "--abort" in why
    deps = (await carol.ListDeployments(pb.ListDeploymentsRequest(), timeout=10)).deployments
    assert sorted(d.id for d in deps) == sorted(ids)  # nothing of the refused one
    await bob.CreateDeployment(rollout("part-inspection", "vision", "gw1"), timeout=10)  # another tenant's
    code, why = await _code(
        carol.CreateDeployment(
            pb.CreateDeploymentRequest(kind="config", config_yaml=b"x: 1\n", agents=["gw-b"]), timeout=10
        )
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at once is 3" in why, (code, why)

    def rollback(slot: str):
        return carol.Rollback(
            pb.RollbackRequest(package="beta-secret", version="1.0.0", slot=slot, agents=["gw-b"]), timeout=10
        )

    assert (await rollback("s0")).id  # takes s0's agent over: s0's rollout is aborted, one in progress less
    more = [(await rollback("r1")).id, (await rollback("r2")).id]
    code, why = await _code(rollback("r3"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "(a rollback: 2 more)" in why, (code, why)
    deps = (await carol.ListDeployments(pb.ListDeploymentsRequest(), timeout=10)).deployments
    assert sum(d.state in ("running", "paused") for d in deps) == 5 and "r3" not in {d.slot for d in deps}
    for dep_id in (ids[1], ids[2], *more):
        await carol.ControlDeployment(pb.ControlRequest(deployment_id=dep_id, action="abort"), timeout=10)
    assert (await carol.CreateDeployment(rollout("beta-secret", "s3", "gw-b"), timeout=10)).id


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_an_agent_id_no_agent_can_have_is_answered_as_one_that_does_not_exist_on_every_store(
    world, tmp_path, request, store
):
    """acme's admin asking the stats or the commands of an agent id no certificate can carry (a NUL, a '/'): on
    PostgreSQL an id with NUL was a store failure, ``INTERNAL`` 'the service failed ... try again later' and an
    error logged as the service's own, where SQLite answered it as an agent that does not exist. Now every store
    answers it so, before any store read: ``PERMISSION_DENIED`` with the text of an id that does not exist, no
    command."""
    tmp, pki, certs, _ = world
    url = request.getfixturevalue("postgres_url") if store == "postgresql" else None
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", store=url
    )
    await srv.start()

    def channel(tenant: str, name: str):
        c = certs[(tenant, name)]
        return grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key")),
        )

    try:
        async with channel("beta", "gw-b") as ch:
            await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(), timeout=10)
        async with channel("acme", "bob") as ch:
            bob = rpc.AdminStub(ch)
            missing = await _code(bob.IngestStats(pb.IngestStatsRequest(agent="gw-zz"), timeout=10))
            assert missing == (PD, "agent 'gw-zz' is not registered")
            for agent in ("gw-b\x00", "gw-b\x00x", "beta/gw-b", "gw b"):
                code, text = await _code(bob.IngestStats(pb.IngestStatsRequest(agent=agent), timeout=10))
                assert (code, text) == (PD, f"agent {agent!r} is not registered"), (agent, code, text)
                reply = await bob.ListCommands(pb.ListCommandsRequest(agent=agent), timeout=10)
                assert list(reply.commands) == [], agent
    finally:
        await srv.stop()


async def test_an_agents_pending_commands_are_bounded_and_another_agents_are_not_counted(cloud, monkeypatch):
    """Every pending command of an agent is listed in its desired state: an admin's script sending them in a loop
    made each reply grow without end (past a gateway's 4 MB the agent got no desired state at all). Past
    ``MAX_PENDING`` (here 2) a command is ``RESOURCE_EXHAUSTED`` naming the limit, nothing stored; another agent's,
    of this tenant or another with the same id, are taken."""
    from cloud_trainer.fleet import commands

    monkeypatch.setattr(commands, "MAX_PENDING", 2)
    _, ch, _, _ = cloud
    bob, alice = admin(ch, "acme", "bob"), admin(ch, "default", "alice")

    def send(who, agent: str):
        return who.SendCommand(
            pb.SendCommandRequest(agent=agent, kind="baseline_relearn", pipeline="press"), timeout=10
        )

    for _ in range(2):
        await send(bob, "gw1")
    code, why = await _code(send(bob, "gw1"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at once is 2" in why, (code, why)
    listed = (await bob.ListCommands(pb.ListCommandsRequest(agent="gw1"), timeout=10)).commands
    assert len(listed) == 2  # nothing of the refused one
    reply = await rpc.FleetStub(ch("acme", "gw1")).Heartbeat(pb.HeartbeatRequest(), timeout=10)
    assert len(reply.commands) == 2
    await send(bob, "gw-a")  # another agent of the tenant
    await send(alice, "gw1")  # the same id in another tenant


async def test_a_new_rollout_never_takes_the_id_of_another_tenants_deployment(cloud, monkeypatch):
    """Deployment ids are drawn at random and are the deployments' key across tenants: one drawn again replaced the
    deployment holding it, another tenant's too (that tenant listed neither, its agents were given the new rollout).
    The same id drawn twice here: acme's rollout gets another, beta's stays beta's, its agent keeps its version."""
    import types
    import uuid

    from cloud_trainer.fleet import control

    _, ch, _, _ = cloud
    drawn = [uuid.UUID(int=1), uuid.UUID(int=1)]
    monkeypatch.setattr(
        control, "uuid", types.SimpleNamespace(uuid4=lambda: drawn.pop(0) if drawn else uuid.uuid4())
    )
    beta = await admin(ch, "beta", "carol").CreateDeployment(
        pb.CreateDeploymentRequest(
            package="beta-secret", slot="vision", agents=["gw-b"], strategy="all_at_once"
        ),
        timeout=10,
    )
    acme = await admin(ch, "acme", "bob").CreateDeployment(
        pb.CreateDeploymentRequest(
            package="part-inspection", version="1.0.0", slot="vision", agents=["gw1"], strategy="all_at_once"
        ),
        timeout=10,
    )
    assert acme.id != beta.id
    for tenant, name, dep in (("acme", "bob", acme), ("beta", "carol", beta)):
        listed = (
            await admin(ch, tenant, name).ListDeployments(pb.ListDeploymentsRequest(), timeout=10)
        ).deployments
        assert [(d.id, d.package) for d in listed] == [(dep.id, dep.package)]
    reply = await rpc.FleetStub(ch("beta", "gw-b")).Heartbeat(pb.HeartbeatRequest(), timeout=10)
    assert [(d.package, d.deployment_id) for d in reply.desired] == [("beta-secret", beta.id)]
