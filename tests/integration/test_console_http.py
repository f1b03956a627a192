"""The fleet console over real HTTP (a FleetServer with tenants' registries, the console on 127.0.0.1): its
JSON stays strict with NaN metrics and NaN in an agent's health report, and a registry URL reaches only the
package files of the console's tenant, however it is spelled, without naming a server path."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from cloud_trainer.fleet.console import Console
from cloud_trainer.fleet.service import FleetServer
from cloud_trainer.registry import Registry
from tests.support.fleet import make_pki
from tests.support.models import make_keypair, make_package
from tests.support.peers import free_port

NAN = float("nan")


@pytest.fixture
async def fleet(tmp_path):
    """Registries: default (part-inspection 1.4.0+build.7 with a NaN metric), acme (part-inspection 1.0.0),
    beta (beta-secret 1.0.0); one default-tenant agent whose health report holds a NaN."""
    pki = make_pki(tmp_path / "pki", agents=("gw1",))
    key, _ = make_keypair(tmp_path / "keys")
    reg = Registry(tmp_path / "registry")
    rep = tmp_path / "report.json"
    rep.write_text(
        json.dumps(  # Python's json writes the bare NaN the trainer's report holds (one class in the test split)
            {
                "metrics": {"int8": {"ng_recall": 0.99, "map_hit_rate": NAN}},
                "gate": {"passed": True, "reasons": []},
            }
        )
    )
    b = tmp_path / "build"
    reg.publish(
        make_package(b, version="1.4.0+build.7", key=key, out_dir=b / "d"),
        [rep],
        {"image_auroc": NAN},
        None,
        None,
    )
    reg.for_tenant("acme").publish(
        make_package(b, version="1.0.0", key=key, out_dir=b / "a", seed=1), [], {}, None, None
    )
    reg.for_tenant("beta").publish(
        make_package(b, version="1.0.0", name="beta-secret", key=key, out_dir=b / "b", seed=2),
        [],
        {},
        None,
        None,
    )
    srv = FleetServer(
        tmp_path / "cloud",
        free_port(),
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=tmp_path / "registry",
    )
    srv.store.heartbeat("gw1", {"site": "plant"}, [], {"cpu_temp_c": NAN, "load": float("inf")}, 0)
    await srv.start()
    consoles: dict[str | None, Console] = {t: Console(srv, tenant=t) for t in (None, "default", "acme")}
    for c in consoles.values():
        c.start()
    try:
        yield consoles, tmp_path
    finally:
        for c in consoles.values():
            c.stop()
        await srv.stop()


def _get(console: Console, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{console.port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _strict(body: bytes):
    """What a browser's JSON.parse accepts: no bare NaN / Infinity."""

    def refuse(c):
        raise ValueError(f"{c} is not JSON")

    return json.loads(body, parse_constant=refuse)


async def test_console_json_stays_strict_with_nan_metrics_and_a_nan_in_an_agents_health(fleet):
    """Before: /api/models and /api/agents wrote bare NaN (json.dumps), which JSON.parse refuses: the whole
    console stopped updating ("update failed") because of one report metric or one agent's health field."""
    consoles, _ = fleet
    for path in ("/api/agents", "/api/models", "/api/deployments", "/api/quotas", "/api/samples"):
        status, body = await asyncio.to_thread(_get, consoles["default"], path)
        assert status == 200, (path, body[:200])
        _strict(body)
    agents = _strict((await asyncio.to_thread(_get, consoles["default"], "/api/agents"))[1])
    assert agents[0]["health"] == {"cpu_temp_c": None, "load": None}
    [model] = _strict((await asyncio.to_thread(_get, consoles["default"], "/api/models"))[1])
    assert model["metrics"] == {"image_auroc": None}
    assert model["report"]["metrics"]["int8"] == {"ng_recall": 0.99, "map_hit_rate": None}


async def test_registry_urls_reach_only_package_files_of_the_consoles_tenant(fleet):
    """Before: a folder URL was a 500 naming the server's absolute path; the page's own image URLs for a version
    with build metadata ('+', encoded by encodeURIComponent) were 404; a ?tenant= of the operator's console
    that no tenant can have made folders under the registry (or a 500 naming its path when too long)."""
    consoles, tmp = fleet
    acme, default, ops = consoles["acme"], consoles["default"], consoles[None]

    status, body = await asyncio.to_thread(
        _get, default, "/registry/part-inspection/1.4.0%2Bbuild.7/report.json"
    )
    assert status == 200 and json.loads(body)["gate"]["passed"] is True  # the file as published
    status, body = await asyncio.to_thread(_get, acme, "/registry/part-inspection/index.json")
    assert status == 200 and [e["version"] for e in json.loads(body)] == ["1.0.0"]

    refused = [
        (acme, "/registry/part-inspection/1.0.0"),  # a folder
        (acme, "/registry/part-inspection"),
        (acme, "/registry/"),
        (acme, "/registry/../beta/beta-secret/index.json"),
        (acme, "/registry/%2e%2e/beta/beta-secret/index.json"),
        (acme, "/registry/..%2fbeta%2fbeta-secret%2findex.json"),
        (acme, "/registry/part-inspection/..%2f..%2f..%2fbeta%2fbeta-secret%2findex.json"),
        (acme, "/registry//etc/passwd"),
        (acme, "/registry/part-inspection/%00/index.json"),
        (acme, "/registry/part-inspection/%ff%fe"),
        (default, "/registry/.tenants/beta/beta-secret/index.json"),
        (default, "/registry/%2etenants/beta/beta-secret/index.json"),
        (default, "/registry/.TENANTS/beta/beta-secret/index.json"),  # a case-insensitive disk (macOS)
        (default, "/registry/part-inspection/.1.4.0.part/report.json"),  # a publish under way
        (ops, "/api/models?tenant=.tenants"),
        (ops, "/api/models?tenant=" + "x" * 300),
        (ops, "/api/models?tenant=%3Cimg%20src%3Dx%3E"),
        (ops, "/registry/beta-secret/index.json?tenant=beta%2f..%2f..%2fbeta"),
    ]
    for console, path in refused:
        status, body = await asyncio.to_thread(_get, console, path)
        assert status in (403, 404), (path, status, body[:300])
        assert str(tmp) not in body.decode(errors="replace"), (path, body)
        assert b"beta-secret" not in body or b"not found" in body, (path, body)
    # the operator's console picks a real tenant by URL, and only within the tenant-id rule
    status, body = await asyncio.to_thread(_get, ops, "/registry/beta-secret/index.json?tenant=beta")
    assert status == 200 and json.loads(body)[0]["name"] == "beta-secret"
    assert sorted(p.name for p in (tmp / "registry" / ".tenants").iterdir()) == ["acme", "beta"]


def _get_as(console: Console, path: str, host: str) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{console.port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_the_console_answers_only_under_its_own_host_names(fleet):
    """DNS rebinding: a page of any web site open in the operator's browser pointed its own name at 127.0.0.1 and
    read every tenant's agents and samples from the console (``?tenant=``) from its own origin: the console
    answered under any Host. Now only an IP address, localhost, this machine's name or an allowed name."""
    consoles, _ = fleet
    ops = consoles[None]
    for host in ("rebind.attacker.example", "rebind.attacker.example:8088", "fleet.example."):
        status, body = await asyncio.to_thread(_get_as, ops, "/api/agents?tenant=default", host)
        assert status == 421 and b"gw1" not in body, host
    for host in (f"127.0.0.1:{ops.port}", "localhost", f"[::1]:{ops.port}"):
        status, body = await asyncio.to_thread(_get_as, ops, "/api/agents?tenant=default", host)
        assert status == 200 and b"gw1" in body, host
    behind_proxy = Console(ops.srv, tenant="default", allowed_hosts=["fleet.example"])
    behind_proxy.start()
    try:
        status, body = await asyncio.to_thread(_get_as, behind_proxy, "/api/agents", "Fleet.Example:443")
        assert status == 200 and b"gw1" in body
    finally:
        behind_proxy.stop()


async def test_a_package_index_that_cannot_be_read_is_left_out_of_the_tenants_models_naming_no_path(fleet):
    """Before: one package's index edited by hand into something else than a list made the tenant's whole
    /api/models a 404 whose text was the index's absolute path on the server (``.../.tenants/acme/...``)."""
    consoles, tmp = fleet
    broken = tmp / "registry" / ".tenants" / "acme" / "broken-pkg" / "index.json"
    broken.parent.mkdir()
    broken.write_text('{"not": "a list of versions"}')
    status, body = await asyncio.to_thread(_get, consoles["acme"], "/api/models")
    assert status == 200 and str(tmp) not in body.decode(errors="replace"), body[:300]
    assert [(m["name"], m["version"]) for m in json.loads(body)] == [("part-inspection", "1.0.0")]
    # an entry without a version, one naming a folder above, a report cut short: each was a 404 or a listing of
    # the registry's own folders; the version whose report cannot be read is shown without it
    broken.write_text(
        json.dumps(
            [
                {"name": "broken-pkg"},
                {"name": "broken-pkg", "version": "../../.."},
                {"name": "broken-pkg", "version": "2.0.0"},  # a file where its folder should be
            ]
        )
    )
    (broken.parent / "2.0.0").write_text("")
    (tmp / "registry" / ".tenants" / "acme" / "part-inspection" / "1.0.0" / "report.json").write_text(
        '{"cut": '
    )
    status, body = await asyncio.to_thread(
        _get, consoles["acme"], "/api/models?edited"
    )  # (not the shared answer)
    assert status == 200 and b".tenants" not in body, body[:300]
    assert [(m["name"], m["version"], m["report"]) for m in json.loads(body)] == [
        ("broken-pkg", "2.0.0", None),  # was: the whole answer a 404
        ("part-inspection", "1.0.0", None),
    ]
    assert json.loads(body)[0]["files"] == [] and "report.json" in json.loads(body)[1]["files"]


async def test_a_withdrawn_version_and_the_agents_kept_on_it_are_marked_with_the_reason(fleet):
    """A withdrawal stops downloads only: the gateways that run the version keep it. The console showed nothing of
    it (agents and a halted rollout's kept targets green): /api/agents marks each slot running a withdrawn version,
    /api/deployments a model rollout of one, both with the withdrawal's reason (the page shows them amber/red)."""
    consoles, tmp = fleet
    srv = consoles["default"].srv
    entry = srv.registry.get("part-inspection", "1.4.0+build.7")
    slot = {
        "slot": "vision",
        "package": "part-inspection",
        "version": entry["version"],
        "digest": entry["digest"],
    }
    srv.store.heartbeat("gw1", {"site": "plant"}, [{**slot, "status": "active"}], {}, 0)
    dep = srv.control.create(
        {"package": "part-inspection", "version": entry["version"], "slot": "vision", "agents": ["gw1"]}
    )
    srv.registry.withdraw("part-inspection", entry["version"], "false rejects at night")
    _, body = await asyncio.to_thread(_get, consoles["default"], "/api/agents?after")
    assert [s.get("withdrawn") for s in json.loads(body)[0]["slots"]] == [
        "false rejects at night"
    ]  # was: [None]
    _, body = await asyncio.to_thread(_get, consoles["default"], "/api/deployments?after")
    [d] = json.loads(body)
    assert (d["id"], d.get("withdrawn")) == (dep["id"], "false rejects at night")
    [m] = json.loads((await asyncio.to_thread(_get, consoles["default"], "/api/models?after"))[1])
    assert (m["status"], m["withdrawn_reason"]) == ("withdrawn", "false rejects at night")
    # the package's index is read again only once it changed (one cache with the rollout tick's): it was read at
    # every poll of /api/agents and /api/deployments (an index of 20,000 versions: ~70 ms each)
    from cloud_trainer.registry import Registry

    reads, real_list = [], Registry.list
    Registry.list = lambda reg, name: reads.append(name) or real_list(reg, name)  # type: ignore[method-assign]
    try:
        for n in range(2):  # (a new URL each: answers are shared by URL for ANSWER_MIN_AGE_S)
            for path in (f"/api/agents?poll{n}", f"/api/deployments?poll{n}"):
                await asyncio.to_thread(_get, consoles["default"], path)
        assert reads == []  # was: ['part-inspection', ...] at every answer
        acme = srv.registry.for_tenant("acme").get("part-inspection", "1.0.0")
        mine = {"slot": "vision", "package": "part-inspection", "version": "1.0.0", "digest": acme["digest"]}
        srv.store.heartbeat("gw2", {"site": "plant"}, [{**mine, "status": "active"}], {}, 0, tenant="acme")
        await asyncio.to_thread(_get, consoles["acme"], "/api/agents?before")
        srv.registry.for_tenant("acme").withdraw("part-inspection", "1.0.0", "drifts")
        _, body = await asyncio.to_thread(_get, consoles["acme"], "/api/agents?withdrawn")
        marks = {a["id"]: [s.get("withdrawn") for s in a["slots"]] for a in json.loads(body)}
        assert marks["gw2"] == ["drifts"]  # the changed index read again
    finally:
        Registry.list = real_list  # type: ignore[method-assign]
    # another tenant's console: its agent running a version of the same name and string is not marked (its
    # registry's, not the default tenant's)
    srv.store.heartbeat("gw1", {"site": "plant"}, [{**slot, "status": "active"}], {}, 0, tenant="acme")
    _, body = await asyncio.to_thread(_get, consoles["acme"], "/api/agents?after")
    assert [s.get("withdrawn") for s in json.loads(body)[0]["slots"]] == [None]
    _, body = await asyncio.to_thread(_get, consoles["acme"], "/api/deployments?after")
    assert json.loads(body) == []
