# ruff: noqa: F811  (pytest fixtures imported from test_fleet_tenants are parameters here)
"""Tenant isolation on one fleet service (real gRPC server, mTLS, SQLite), against what an independent tester
found: a package name that is a path (``../beta/x``, ``.tenants/beta/x``) reaches no other tenant's registry and
tells nothing of it; an agent certificate whose CN spells another tenant's agent (``beta/gw-b``) is refused at
issue and at the service, and shares no quota counters with that agent; sample bytes reach the blob store only
for records stored now and within the tenant's quota; a tenant's agents together store at most its record bytes of
the day, also across a restart of the service (a real `cloud-trainer serve`), the rest waiting in their outboxes;
the generations a tenant sees (of a counter all share) are times, which do not count another tenant's changes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

import grpc
import pytest

from cloud_trainer import pki as pki_mod
from cloud_trainer.fleet.console import Console
from cloud_trainer.fleet.service import channel_credentials
from cloud_trainer.pki import ROLE_AGENT, identity, issue
from cloud_trainer.registry import Registry
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.integration.test_fleet_tenants import _code, admin, cloud, world  # noqa: F401  (fixtures)
from tests.support.fleet import ServerProcess
from tests.support.models import make_package
from tests.support.waits import until

PD = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def beta_twin(world):
    """Beta publishes a package named like acme's (part-inspection 1.0.0, signed with beta's key): a name and
    version both tenants have, with different bytes."""
    tmp, pki, _, _ = world
    key = pki / "tenants" / "beta" / "signing.key"
    b = tmp / "build-twin"
    pkg = make_package(b, version="1.0.0", key=key, out_dir=b / "bp", seed=4)
    return Registry(tmp / "registry").for_tenant("beta").publish(pkg, [], {}, None, None)


def _create(package: str, version: str, agents: list[str]):
    return pb.CreateDeploymentRequest(
        package=package, version=version, slot="vision", agents=agents, strategy="all_at_once"
    )


async def test_a_package_name_that_is_a_path_reaches_no_other_tenants_registry(cloud, world, beta_twin):
    srv, ch, entries, _ = cloud
    tmp = world[0]
    bob, alice = admin(ch, "acme", "bob"), admin(ch, "default", "alice")
    attempts = [  # (admin, agent, package, version): each names beta's registry, or nothing at all
        (bob, "gw-a", "../beta/beta-secret", "1.0.0"),
        (bob, "gw-a", "../beta/beta-secret", ""),
        (bob, "gw-a", "../beta/beta-secret", "9.9.9"),
        (bob, "gw-a", "../beta/no-such", "1.0.0"),
        (bob, "gw-a", "../nosuchtenant/x", ""),
        (bob, "gw-a", "../beta/part-inspection", "1.0.0"),
        (bob, "gw-a", str(tmp / "registry" / ".tenants" / "beta" / "beta-secret"), "1.0.0"),
        (alice, "gw1", ".tenants/beta/beta-secret", "1.0.0"),
        (alice, "gw1", ".tenants/beta/nothing", "1.0.0"),
        (alice, "gw1", "part-inspection/../.tenants/beta/beta-secret", "1.0.0"),
    ]
    for adm, agent, package, version in attempts:
        for call in (
            adm.CreateDeployment(_create(package, version, [agent]), timeout=20),
            adm.Rollback(
                pb.RollbackRequest(package=package, version=version, slot="vision", agents=[agent]),
                timeout=20,
            ),
        ):
            code, details = await _code(call)
            # the answer of a name that is not in the registry, whether beta has it or not
            # (a name is echoed to its first 80 characters: the absolute path's length varies by machine)
            want = f"{package[:80]} {version or '(latest)'} is not in the registry"
            assert (code, details) == (PD, want), (
                package,
                version,
            )
    # nothing was deployed from beta's entry (same name and version as acme's, other bytes)
    assert beta_twin["digest"] != entries["acme"]["digest"]
    assert srv.control.list(tenant="acme") == [] and srv.control.list() == []


async def test_a_package_whose_file_cannot_be_read_is_refused_without_a_server_path(cloud, world):
    srv, ch, _, _ = cloud
    tmp, pki, _, _ = world
    reg = Registry(tmp / "registry").for_tenant("acme")
    b = tmp / "build-gone"
    key = pki / "tenants" / "acme" / "signing.key"
    entry = reg.publish(
        make_package(b, name="gone-model", version="1.0.0", key=key, out_dir=b), [], {}, None, None
    )
    reg.package_path(entry).unlink()  # an operator's clean-up, a half-restored backup
    bob = admin(ch, "acme", "bob")
    for version in ("1.0.0", ""):
        code, details = await _code(
            bob.CreateDeployment(_create("gone-model", version, ["gw-a"]), timeout=20)
        )
        assert (code, details) == (PD, f"gone-model {version or '(latest)'} is not in the registry")
        assert str(tmp) not in details


def test_the_registry_answers_a_name_that_is_not_a_package_name_as_one_it_does_not_have(world, beta_twin):
    tmp = world[0]
    acme = Registry(tmp / "registry").for_tenant("acme")
    default = Registry(tmp / "registry")
    for reg, name in (
        (acme, "../beta/part-inspection"),
        (acme, "../beta/beta-secret"),
        (acme, str(tmp / "registry" / ".tenants" / "beta" / "beta-secret")),
        (default, ".tenants/beta/beta-secret"),
        (default, "part-inspection/../.tenants/beta/beta-secret"),
    ):
        assert reg.list(name) == [] and reg.latest(name) is None and reg.get(name, "1.0.0") is None, name
    assert acme.get("part-inspection", "1.0.0")["digest"] != beta_twin["digest"]


def test_an_agent_id_is_checked_when_its_certificate_is_issued(world, tmp_path, capsys):
    pki = world[1]
    for bad in ("beta/gw-b", "../gw1", "", ".hidden", "gw 1", "x" * 64):
        with pytest.raises(ValueError, match="agent id"):
            issue(pki, bad, ROLE_AGENT, tmp_path / "bad")
        assert pki_mod.main(["agent", "--dir", str(pki), "--id", bad]) == 2
        assert "--id: agent id" in capsys.readouterr().err
    assert not (tmp_path / "bad.pem").exists()
    # what the agent config accepts as agent.id is still accepted
    assert (
        identity(issue(pki, "Gw_1.line-3", ROLE_AGENT, tmp_path / "ok")[0].read_bytes()).tenant == "default"
    )


async def test_an_agent_certificate_naming_another_tenants_agent_shares_nothing_with_it(
    cloud, world, tmp_path, monkeypatch
):
    """A certificate issued before agent ids were checked, in the default tenant, with CN 'beta/gw-b': refused by
    the service, and beta's gw-b keeps its own stream quota."""
    srv, ch, _, port = cloud
    pki = world[1]
    with monkeypatch.context() as m:
        m.setattr(pki_mod, "check_agent_id", lambda a: a)
        c = issue(pki, "beta/gw-b", ROLE_AGENT, tmp_path / "attacker")[0].with_suffix("")
    assert identity(c.with_suffix(".pem").read_bytes()).tenant == ""  # refused, whatever tenant it claims

    def one_record(seq: int) -> pb.RecordBatch:
        return pb.RecordBatch(records=[pb.Record(seq=seq, kind="result", t=time.time(), payload=b"{}")])

    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key"))
    ) as chan:
        atk = rpc.FleetStub(chan)
        code, details = await _code(atk.Heartbeat(pb.HeartbeatRequest(), timeout=10))
        assert code == PD and "not a valid agent id" in details
        held = []
        for i in range(4):  # the per-agent limit is 4 concurrent streams
            q: asyncio.Queue = asyncio.Queue()

            async def gen(q=q):
                while (m := await q.get()) is not None:
                    yield m

            call = atk.PushRecords(gen(), timeout=30)
            await q.put(one_record(i + 1))
            code, details = await _code(call.read())
            assert code == PD and "not a valid agent id" in details
            held.append((call, q))
        victim = rpc.FleetStub(ch("beta", "gw-b"))
        acks = [a async for a in victim.PushRecords(iter([one_record(2)]), timeout=10)]
        assert acks[0].stored == 1
        for call, q in held:
            await q.put(None)
            call.cancel()
    assert all(k[1] != "beta/gw-b" for k in srv.quotas._streams)


async def test_a_very_long_id_or_selector_is_refused_like_one_that_does_not_exist_not_with_a_transport_error(
    cloud,
):
    """A deployment id or a target agent of 20,000 characters, or a label selector of 16.6 KB (another tenant's
    or nothing's): echoed whole in the refusal, it passed the 16 KiB of trailing metadata a gRPC client takes, and
    the admin read ``RESOURCE_EXHAUSTED: received metadata size exceeds hard limit`` instead of the refusal (shown
    against a real `cloud-trainer serve`). Now the answer is the refusal of a short one, the value cut short in it."""
    _, ch, _, _ = cloud
    bob = admin(ch, "acme", "bob")
    long = "y" * 20_000
    shown = repr("y" * 64)
    # as many labels as a selector may hold, each as long as it may be: 16.6 KB as a whole
    labels = {f"{i:02d}" + "k" * 254: "v" * 256 for i in range(32)}
    attempts = {
        bob.ControlDeployment(pb.ControlRequest(deployment_id=long, action="pause"), timeout=10): (
            f"no deployment {shown}"
        ),
        bob.CreateDeployment(_create("part-inspection", "1.0.0", [long]), timeout=10): (
            f"agent {shown} is not registered (an agent registers with its first heartbeat)"
        ),
        bob.Rollback(
            pb.RollbackRequest(package="part-inspection", version="1.0.0", slot="vision", agents=[long]),
            timeout=10,
        ): f"agent {shown} is not registered (an agent registers with its first heartbeat)",
        bob.CreateDeployment(
            pb.CreateDeploymentRequest(
                package="part-inspection",
                version="1.0.0",
                slot="vision",
                selector=labels,
                strategy="all_at_once",
            ),
            timeout=10,
        ): "no registered agent matches the selector {'",  # then 200 characters of it (in the map's order)
    }
    for call, want in attempts.items():
        code, details = await _code(call)
        if want.endswith("{'"):
            assert code == PD and details.startswith(want) and details.endswith("...}"), (code, details[:200])
            assert len(details) == len("no registered agent matches the selector ") + 200 + len("...}")
        else:
            assert (code, details) == (PD, want)


async def test_a_rollouts_free_texts_are_bounded_before_anything_is_stored(cloud):
    """A rollout's document keeps its strategy, slot, selector and steps, and every rollout tick reads every running
    one of every tenant under the lock all tenants' deployment calls wait for: a strategy of 12,000,000 characters
    was stored as sent (six such rollouts of one tenant: a 108-MB control database, 22% of a core in idle ticks,
    430 MB of the service's memory; a real `cloud-trainer serve`). Each is refused now, nothing stored, and the
    usual values still pass."""
    srv, ch, _, _ = cloud
    bob = admin(ch, "acme", "bob")
    big = "c" * 100_000

    def create(**kw):
        req = {"package": "part-inspection", "version": "1.0.0", "slot": "vision", "agents": ["gw-a"], **kw}
        return bob.CreateDeployment(pb.CreateDeploymentRequest(**req), timeout=10)

    refused = [
        (create(strategy=big), f"strategy {('c' * 40)!r}: canary or all_at_once"),
        (create(strategy="blue-green"), "strategy 'blue-green': canary or all_at_once"),
        (create(slot=big), f"slot {('c' * 64)!r}...: 100000 characters; a model slot's name is at most 128"),
        (create(agents=[], selector={"site": big}), "a label's name and pattern are at most 256 characters"),
        (create(agents=[], selector={f"k{i}": "*" for i in range(33)}), "selector: 33 labels; at most 32"),
        (create(steps=["0" * 1000 + "50%", "100%"]), "steps[0]"),
        (create(kind="config", config_yaml=b"sources: {}\n", strategy=big), "canary or all_at_once"),
        (
            bob.Rollback(
                pb.RollbackRequest(package="part-inspection", version="1.0.0", slot=big, agents=["gw-a"]),
                timeout=10,
            ),
            "128",
        ),
    ]
    for call, want in refused:
        code, details = await _code(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and want in details, (code, details[:200])
    assert srv.control.list(tenant="acme") == []
    for ok in (
        create(strategy="canary"),
        create(strategy="", slot="vision-2"),
        create(strategy="all_at_once"),
    ):
        assert (await _code(ok))[0] == grpc.StatusCode.OK


def _repeated_subject_cert(pki, out, attrs):
    """A certificate of the fleet CA whose subject is ``attrs`` (name -> values, in that order), as a CA of one's own
    that copies a request's subject and adds the platform's fields after it would issue."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_cert, ca_key = pki_mod._load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, v) for oid, v in attrs]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki_mod._write_key(out.with_suffix(".key"), key)
    return out


async def test_a_certificate_naming_two_tenants_or_two_roles_acts_as_no_one(cloud, world, tmp_path):
    """Signed by the fleet CA, a subject holding organizationIdentifier twice (beta, then acme) acted in beta, and
    one holding OU twice (admin, then agent) as beta's admin (shown against a real `cloud-trainer serve`: the first
    registered an agent in beta, the second listed beta's agents). Both are refused now, saying why, and nothing of
    them reaches a tenant."""
    from cryptography.x509.oid import NameOID as O

    srv, _, _, port = cloud
    pki = world[1]
    two_tenants = _repeated_subject_cert(
        pki,
        tmp_path / "two-tenants",
        [
            (O.ORGANIZATION_IDENTIFIER, "beta"),
            (O.ORGANIZATION_IDENTIFIER, "acme"),
            (O.ORGANIZATIONAL_UNIT_NAME, "agent"),
            (O.COMMON_NAME, "gw-twice"),
        ],
    )
    two_roles = _repeated_subject_cert(
        pki,
        tmp_path / "two-roles",
        [
            (O.ORGANIZATION_IDENTIFIER, "beta"),
            (O.ORGANIZATIONAL_UNIT_NAME, "admin"),
            (O.ORGANIZATIONAL_UNIT_NAME, "agent"),
            (O.COMMON_NAME, "gw-x"),
        ],
    )

    def creds(c):
        return channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key"))

    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds(two_tenants)) as ch:
        code, details = await _code(rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(), timeout=10))
    assert (code, details) == (
        PD,
        "certificate 'gw-twice': its subject holds organizationIdentifier more than once, so it names no single "
        "identity; the fleet refuses it: issue it again with one of each",
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds(two_roles)) as ch:
        code, details = await _code(rpc.AdminStub(ch).ListAgents(pb.ListAgentsRequest(), timeout=10))
    assert code == PD and "holds OU more than once" in details
    assert "gw-twice" not in {a["id"] for t in ("beta", "acme") for a in srv.store.agents(tenant=t)}


async def test_quota_counters_and_the_tenant_console_are_keyed_by_tenant_and_agent(cloud):
    import urllib.request

    srv, ch, _, _ = cloud
    for _ in range(4):
        srv.quotas.open_stream(("default", "beta/gw-b"))  # whatever an id spells: its own tenant's counters
    srv.quotas.take_sample(("default", "gw1"), 10)
    srv.quotas.take_sample(("beta", "gw1"), 20)
    srv.quotas.open_stream(("beta", "gw-b"))  # not refused: the default tenant's 4 streams are not beta's
    consoles = {t: Console(srv, tenant=t) for t in ("beta", "default")}
    for c in consoles.values():
        c.start()

    def get(t):
        with urllib.request.urlopen(f"http://127.0.0.1:{consoles[t].port}/api/quotas", timeout=5) as r:
            return json.loads(r.read())

    try:
        beta, default = await asyncio.to_thread(get, "beta"), await asyncio.to_thread(get, "default")
    finally:
        for c in consoles.values():
            c.stop()

    def open_streams(view: dict) -> dict:  # the fixture's agents pushed once: their closed streams show as 0
        return {a: n for a, n in view["streams"].items() if n}

    assert open_streams(beta) == {"gw-b": 1} and beta["sample_bytes_today"] == {"gw1": 20}
    assert open_streams(default) == {"beta/gw-b": 4} and default["sample_bytes_today"] == {"gw1": 10}
    assert beta["limits"]["concurrent_streams"] == 4


def _sample(seq: int, data: bytes, payload: bytes = b'{"model": "m"}') -> pb.RecordBatch:
    return pb.RecordBatch(
        records=[
            pb.Record(
                seq=seq,
                kind="sample",
                t=time.time(),
                payload=payload,
                sample=data,
                sample_sha256=hashlib.sha256(data).hexdigest(),
                sample_ext=".png",
            )
        ]
    )


def _blob_files(srv, tenant: str) -> list:
    root = srv.blobs.for_tenant(tenant).root / "sha256"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_sample_bytes_reach_the_blob_store_only_when_stored_and_within_the_tenant_quota(cloud):
    srv, ch, _, _ = cloud
    ops = admin(ch, "", "ops")
    await ops.CreateTenant(
        pb.CreateTenantRequest(tenant="acme", max_sample_bytes_per_day=100_000), timeout=10
    )
    gw = rpc.FleetStub(ch("acme", "gw-a"))
    # batches past the tenant's quota: refused, and not one byte written
    for i in range(3):
        code, details = await _code(
            gw.PushRecords(iter([_sample(100 + i, os.urandom(200_000))]), timeout=20).read()
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "nothing of it was stored" in details
    assert _blob_files(srv, "acme") == []
    # a sample within the quota is stored with its bytes; replays of its seq with other bytes write nothing
    small = os.urandom(50_000)
    assert [
        (a.stored, a.duplicates) async for a in gw.PushRecords(iter([_sample(2, small)]), timeout=20)
    ] == [(1, 0)]
    for _ in range(3):
        acks = [
            (a.stored, a.duplicates)
            async for a in gw.PushRecords(iter([_sample(2, os.urandom(60_000))]), timeout=20)
        ]
        assert acks == [(0, 1)]
    # a sample whose metadata is not a JSON object: INVALID_ARGUMENT naming it, no bytes written
    for payload in (b"not json", b"[1]", b'"text"'):
        code, details = await _code(
            gw.PushRecords(iter([_sample(500, os.urandom(10_000), payload)]), timeout=20).read()
        )
        assert (
            code == grpc.StatusCode.INVALID_ARGUMENT
            and "sample seq 500" in details
            and "JSON object" in details
        )
    files = _blob_files(srv, "acme")
    assert [p.name for p in files] == [hashlib.sha256(small).hexdigest()]
    usage = {u.tenant: u for u in (await ops.ListTenants(pb.ListTenantsRequest(), timeout=10)).tenants}
    assert usage["acme"].sample_bytes_today == 50_000 == sum(p.stat().st_size for p in files)
    assert srv.store.stats("gw-a", tenant="acme")["samples"] == 1
    # the stored sample's bytes are there to read
    assert srv.blobs.for_tenant("acme").get_bytes(hashlib.sha256(small).hexdigest()) == small
    assert json.loads(json.dumps(srv.store.samples(tenant="acme")))[0]["seq"] == 2


async def test_a_tenants_generations_do_not_count_another_tenants_changes(cloud):
    """The generation counter is every tenant's; acme's admin and agent see theirs (a command's ``generation``, the
    agent's ``HeartbeatReply.generation``). Each is the time of the change, so 20 commands beta sends between two
    of acme's move acme's numbers no more than the clock does: they counted 1 per change of beta's (measured:
    acme's generation went 15 -> 39 around beta's 23 commands)."""
    _, ch, _, _ = cloud
    bob, carol = admin(ch, "acme", "bob"), admin(ch, "beta", "carol")
    gw_a = rpc.FleetStub(ch("acme", "gw-a"))

    async def acme_change() -> tuple[int, int, int, int]:
        before = time.time_ns() // 1000
        cmd = await bob.SendCommand(
            pb.SendCommandRequest(agent="gw-a", kind="baseline_relearn", pipeline="line1"), timeout=10
        )
        reply = await gw_a.Heartbeat(pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10)
        return before, json.loads(cmd.json)["generation"], reply.generation, time.time_ns() // 1000

    seen = [await acme_change()]
    for n in (1, 20):
        for _ in range(n):
            await carol.SendCommand(
                pb.SendCommandRequest(agent="gw-b", kind="baseline_relearn", pipeline="line9"), timeout=10
            )
        seen.append(await acme_change())
    for before, gen, heartbeat_gen, after in seen:
        # the time of acme's own change (microseconds since the epoch), whatever beta did since the last
        assert before <= gen <= after and heartbeat_gen == gen, (before, gen, heartbeat_gen, after)


async def test_a_tenants_agents_together_store_at_most_its_record_bytes_of_the_day_across_a_restart(
    world, tmp_path
):
    """``max_record_bytes_per_day`` against a real `cloud-trainer serve`: acme's two agents, each within its own day
    budget (16 GiB), wrote past what the operator meant acme to store (measured before: 2 x 3 records of 300 KB
    with an agent budget of 1 MB, 1.8 MB for the tenant, and no quota to set). Now a batch that would pass acme's 1 MB
    is refused whole, beta's agent is stored as before, a replay counts nothing, the service killed and started again
    counts on from the store, and an agent's own uplink keeps the refused records in its outbox (saying why) until
    the operator raises the quota: then every one of them is stored."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox
    from edge_agent.uplink.client import Uplink
    from edge_agent.uplink.settings import CloudSettings

    _, pki, certs, _ = world
    server = ServerProcess(tmp_path / "cloud", pki).start()
    record = json.dumps({"pad": "x" * 300_000}).encode()  # 300,011 bytes

    def creds(tenant: str, name: str):
        c = certs[(tenant, name)]
        return channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key"))

    async def push(tenant: str, agent: str, seqs) -> list[str]:
        """One batch per seq of one 300-KB record: "stored", "duplicate" or the refusal's code and text, each."""
        out = []
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds(tenant, agent)) as ch:
            for seq in seqs:
                batch = pb.RecordBatch(
                    records=[pb.Record(seq=seq, kind="result", t=time.time(), epoch=1, payload=record)]
                )
                try:
                    ack = [a async for a in rpc.FleetStub(ch).PushRecords(iter([batch]), timeout=20)][0]
                    out.append("stored" if ack.stored else "duplicate")
                except grpc.aio.AioRpcError as exc:
                    out.append(f"{exc.code().name}: {exc.details()}")
        return out

    async def operator(call: str, request):
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds("", "ops")) as ch:
            return await getattr(rpc.AdminStub(ch), call)(request, timeout=20)

    async def acme() -> pb.TenantInfo:
        reply = await operator("ListTenants", pb.ListTenantsRequest())
        return next(t for t in reply.tenants if t.tenant == "acme")

    refusal = (
        "RESOURCE_EXHAUSTED: tenant acme: this batch (300011 bytes of records) would pass the tenant's quota of "
        "1000000 bytes of records per day (900033 used or reserved today); nothing of it was stored"
    )
    box = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "gw-a")
    box.open()
    up = None
    try:
        t = await operator(
            "CreateTenant", pb.CreateTenantRequest(tenant="acme", max_record_bytes_per_day=1_000_000)
        )
        assert (t.max_record_bytes_per_day, t.record_bytes_today) == (1_000_000, 0)
        assert await push("acme", "gw1", [1, 2]) == ["stored"] * 2
        stored = await push("acme", "gw-a", [1, 2])
        assert stored[0] == "stored" and stored[1].startswith(refusal), stored
        assert (
            await push("beta", "gw-b", [1, 2, 3, 4, 5]) == ["stored"] * 5
        )  # beta's agents: not acme's quota
        assert await push("acme", "gw1", [1, 2]) == ["duplicate"] * 2  # a replay counts nothing
        assert (await acme()).record_bytes_today == 900_033
        server.kill()  # the day's usage is the store's, not the process's
        server.start()
        assert (await acme()).record_bytes_today == 900_033
        refused = await push("acme", "gw1", [3])
        assert refused[0].startswith(refusal), refused
        # gw-a's own uplink: its 3 records wait in its outbox, the refusal in its status, until the quota is raised
        for i in range(3):
            box.append("result", {"i": i, "pad": "x" * 300_000})
        box.flush()
        c = certs[("acme", "gw-a")]
        up = Uplink(
            CloudSettings(
                endpoint=f"127.0.0.1:{server.port}",
                ca_file=str(pki / "ca.pem"),
                cert_file=str(c.with_suffix(".pem")),
                key_file=str(c.with_suffix(".key")),
                backoff_initial_s=0.1,
                backoff_max_s=0.5,
                heartbeat_s=0.5,
                max_delay_ms=20,
            ),
            box,
        )
        await up.start()
        await until(
            lambda: "bytes of records per day" in (up.status()["last_error"] or ""),
            what="gw-a's uplink refused for acme's record bytes",
        )
        assert box.stats()["depth"] == 3 and (await acme()).record_bytes_today == 900_033
        await operator("CreateTenant", pb.CreateTenantRequest(tenant="acme", max_record_bytes_per_day=0))
        await until(lambda: box.stats()["depth"] == 0, what="gw-a's outbox drained once the quota was raised")
        info = await acme()
        assert info.records == 6 and info.record_bytes_today > 900_033 + 3 * 300_000  # nothing lost
    finally:
        if up is not None:
            await up.stop()
        box.close()
        server.stop()


async def test_a_tenants_fleet_config_never_reads_the_platforms_environment_back(
    world, tmp_path, monkeypatch
):
    """A tenant's admin deploys a fleet config naming ``${VAR}``s of the service's own environment (a real `cloud-trainer
    serve`, started with the object store's and database's credentials in it, as docs/blob-stores.md says to). The
    cloud's check ran the agents' validator with the service's environment and substituted it: a number field
    naming ``${AWS_SECRET_ACCESS_KEY}`` was refused ``(found 'the secret')``, a source type naming ``${PGPASSWORD}``
    ``unknown source type 'the password'``, both to the tenant. Now the check substitutes no variable from any
    environment (only a ``:-default``): the refusals name the fields and nothing of the platform's."""
    _, pki, certs, _ = world
    platform = {
        "AWS_SECRET_ACCESS_KEY": "platform-s3-secret-wJalrXUtnFEMI",
        "PGPASSWORD": "platform-db-pw-4711",
    }
    for k, v in platform.items():
        monkeypatch.setenv(k, v)
    server = ServerProcess(tmp_path / "cloud", pki).start()

    def creds(name: str):
        c = certs[("acme", name)]
        return channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key"))

    async def deploy(yaml_text: str) -> tuple[grpc.StatusCode, str]:
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds("bob")) as ch:
            request = pb.CreateDeploymentRequest(
                kind="config", config_yaml=yaml_text.encode(), config_name="c", agents=["gw1"]
            )
            return await _code(rpc.AdminStub(ch).CreateDeployment(request, timeout=60))

    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds("gw1")) as ch:
            await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(), timeout=10)
        refusals = [
            await deploy("sources:\n  b: {type: mqtt, host: h, port: '${AWS_SECRET_ACCESS_KEY}'}\n"),
            await deploy("sources:\n  b: {type: '${PGPASSWORD}', host: h}\n"),
        ]
        for (code, details), field in zip(refusals, ("sources.b.port", "sources.b.type"), strict=True):
            assert code == grpc.StatusCode.INVALID_ARGUMENT and f"c: {field}" in details, details
            assert not any(v in details for v in platform.values()), details
        # a default is the cloud's to check: taken, and the config stored
        code, details = await deploy("sources:\n  b: {type: mqtt, host: h, port: '${MQTT_PORT:-1883}'}\n")
        assert code == grpc.StatusCode.OK, details
    finally:
        server.stop()


def test_the_admin_cli_says_its_certificate_expired_when_the_fleet_closes_the_connection_for_it(
    world, tmp_path
):
    """An expired admin certificate is refused in the TLS handshake (a real `cloud-trainer serve`), which tells the
    client only "Socket closed": `cloud-trainer agents` said `ListAgents failed: UNAVAILABLE: failed to connect to all
    addresses; ... Socket closed` and nothing of the certificate. Now it names the certificate, when it expired and
    how to issue a new one."""
    import datetime as dt
    import subprocess
    import sys

    from cryptography import x509

    from cloud_trainer.pki import ROLE_ADMIN
    from tests.support.fleet import ROOT

    _, pki, _, _ = world
    folder = pki / "tenants" / "acme" / "admins"
    issue(
        pki, "lapsed", ROLE_ADMIN, folder / "lapsed", tenant="acme", days=0
    )  # valid until the second it is made
    end = x509.load_pem_x509_certificate((folder / "lapsed.pem").read_bytes()).not_valid_after_utc
    server = ServerProcess(tmp_path / "cloud", pki).start()
    while dt.datetime.now(dt.UTC) <= end + dt.timedelta(
        seconds=1
    ):  # past its end by the handshake's clock too
        time.sleep(0.1)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "cloud_trainer.cli", "agents", "--endpoint", f"127.0.0.1:{server.port}"]
            + ["--pki", str(pki), "--tenant", "acme", "--admin", "lapsed"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert r.returncode != 0 and "UNAVAILABLE" in r.stderr, r.stderr
    assert f"the certificate {folder / 'lapsed.pem'} expired " in r.stderr, r.stderr
    assert (
        "issue a new one with `cloud-trainer pki admin" in r.stderr
        and "--name lapsed --tenant acme`" in r.stderr
    )
