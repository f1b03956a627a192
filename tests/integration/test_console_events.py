# ruff: noqa: F811  (pytest fixtures imported from other modules are parameters here)
"""The console's events (``/api/events`` and the page's Events section) on a real fleet service (gRPC, mTLS),
on SQLite and on PostgreSQL: agents of two tenants push events through ``PushRecords`` as an agent's outbox does;
each tenant's console lists its own events only (whatever ``?tenant=`` or ``agent=`` it asks), newest first, in
pages of a bounded size, filtered by agent, kind and time; an active event not ended since is ``ongoing``; an
event's text is JSON text and the page draws it as text. Before, the console had no events at all: a
``source_halted`` or ``source_down`` reached the store and nobody saw it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import pytest

from cloud_trainer.fleet.console import PAGE, Console
from cloud_trainer.fleet.service import FleetServer, channel_credentials
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.integration.test_fleet_tenants import world  # noqa: F401  (fixture)
from tests.support.peers import free_port
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)

T0 = 1_790_000_000.0
PAGE_MAX = 200  # the largest page /api/events gives (EVENTS_PAGE_MAX)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _event(seq: int, kind: str, t: float, record: str = "event", **payload) -> pb.Record:
    body = {"kind": kind, "t": t, **payload}
    return pb.Record(seq=seq, kind=record, t=t, payload=json.dumps(body).encode())


@pytest.fixture(params=["sqlite", "postgresql"])
async def cloud(request, world, tmp_path):
    """A fleet service on the store of the parameter; acme's gw1 and gw-a and beta's gw-b push their events over
    gRPC + mTLS; consoles for acme, beta and the operator's (``?tenant=``)."""
    tmp, pki, certs, _ = world
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", store=url
    )
    await srv.start()
    chans = []

    async def push(tenant: str, agent: str, records: list[pb.Record]) -> None:
        c = certs[(tenant, agent)]
        ch = grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key")),
        )
        chans.append(ch)
        stub = rpc.FleetStub(ch)
        await stub.Heartbeat(pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10)
        batch = pb.RecordBatch(records=records)
        acks = [a async for a in stub.PushRecords(iter([batch]), timeout=10)]
        assert sum(a.stored for a in acks) == len(records)

    # acme gw1: a camera down then up again, a PLC halted (still), results between them; 120 drift events
    await push(
        "acme",
        "gw1",
        [
            _event(1, "source_down", T0 + 1, source="cam1", active=True, state="down", message="cam1 lost"),
            pb.Record(seq=2, kind="result", t=T0 + 2, payload=b'{"verdict": "OK"}'),
            _event(3, "source_down", T0 + 3, source="cam1", active=False, down_s=2.0, message="cam1 back"),
            _event(4, "source_halted", T0 + 4, source="plc1", active=True, reason="server_clock_frozen"),
            _event(5, "alarm", T0 + 5, record="alarm", alarm="temp", active=True, pipeline="p1"),
            *[_event(100 + i, "input_drift", T0 + 10 + i, pipeline="p1", share=0.5) for i in range(120)],
        ],
    )
    # acme gw-a: a source down with hostile text in every field an agent fills
    await push(
        "acme",
        "gw-a",
        [_event(1, "source_down", T0 + 6, source=HOSTILE, active=True, state=HOSTILE, message=HOSTILE)],
    )
    # beta gw-b: beta's own events, one of them named like acme's agent's
    await push(
        "beta",
        "gw-b",
        [_event(1, "source_down", T0 + 7, source="beta-secret-cam", active=True, message="beta only")],
    )
    consoles: dict = {t: Console(srv, tenant=t) for t in ("acme", "beta")}
    consoles[None] = Console(srv)
    for c in consoles.values():
        c.start()
    try:
        yield {**consoles, "push": push}
    finally:
        for c in consoles.values():
            c.stop()
        for ch in chans:
            await ch.close()
        await srv.stop()


def _get(c: Console, path: str) -> tuple[int, dict | str, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{c.port}{path}", timeout=10) as r:
            body = r.read()
            return r.status, json.loads(body), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def _page(c: Console, path: str) -> tuple[int, dict | str, dict]:
    """``_get``, asked again (at most 10 times, as its ``Retry-After`` says) while the console answers 503 busy:
    its answers are computed one at a time with a rest after each, and on a loaded machine the next page's turn
    may come after the request's wait."""
    for _ in range(10):
        code, page, headers = _get(c, path)
        if code != 503:
            break
        time.sleep(float(headers.get("Retry-After", 1)))
    return code, page, headers


def _all(c: Console, path: str) -> list[dict]:
    """Every page of ``path`` (following ``next``)."""
    out, sep = [], "&" if "?" in path else "?"
    code, page, _ = _page(c, path)
    assert code == 200, page
    out += page["events"]
    while page["next"]:
        code, page, _ = _page(c, f"{path}{sep}before={urllib.request.quote(page['next'])}")
        assert code == 200, page
        out += page["events"]
    return out


async def test_events_of_one_tenant_are_never_listed_to_another(cloud):
    acme, beta, ops = cloud["acme"], cloud["beta"], cloud[None]
    mine = _all(acme, "/api/events?limit=200")
    assert {(e["agent"]) for e in mine} == {"gw1", "gw-a"}
    assert len(mine) == 4 + 120 + 1  # events and alarms, never the result
    assert "beta" not in json.dumps(mine)
    # beta's console: its own event only, whatever the URL asks for (a tenant, another tenant's agent)
    for path in ("/api/events", "/api/events?tenant=acme", "/api/events?agent=gw1", "/api/events?agent=gw-a"):
        code, page, _ = _get(beta, path)
        assert code == 200
        assert [e["agent"] for e in page["events"]] in (["gw-b"], [])
        assert "gw1" not in json.dumps(page) and "cam1" not in json.dumps(page)
    # acme's console asked for beta's agent or tenant: acme's events only, none of beta's
    for path in ("/api/events?agent=gw-b", "/api/events?tenant=beta&agent=gw-b"):
        assert _get(acme, path)[1]["events"] == []
    # the operator's console picks the tenant by ?tenant=, one at a time
    assert [e["payload"]["message"] for e in _get(ops, "/api/events?tenant=beta")[1]["events"]] == [
        "beta only"
    ]
    assert _get(ops, "/api/events")[1]["events"] == []  # the default tenant has none


async def test_events_are_newest_first_in_bounded_pages_filtered_by_agent_kind_and_time(cloud):
    acme = cloud["acme"]
    code, first, _ = _get(acme, "/api/events")
    assert code == 200 and len(first["events"]) == 50 and first["next"]  # the default page
    assert [e["t"] for e in first["events"]] == sorted((e["t"] for e in first["events"]), reverse=True)
    pages = _all(acme, "/api/events?limit=7")
    assert len(pages) == 125 and len({(e["agent"], e["seq"]) for e in pages}) == 125  # none twice, none lost
    assert [e["t"] for e in pages] == sorted((e["t"] for e in pages), reverse=True)
    # the page size is bounded: above the largest, a clear 400 naming the parameter
    code, text, _ = _get(acme, f"/api/events?limit={PAGE_MAX + 1}")
    assert code == 400 and "limit" in text
    for bad in ("since=yesterday", "since=nan", "limit=0", "limit=-1", "before=garbage"):
        code, text, _ = _get(acme, f"/api/events?{bad}")
        assert code == 400 and bad.split("=")[0] in text, (bad, code, text)
    # filters: by agent, by event kind (alarms too), since a time, and together
    assert {e["agent"] for e in _all(acme, "/api/events?agent=gw-a")} == {"gw-a"}
    downs = _all(acme, "/api/events?kind=source_down")
    assert [(e["agent"], e["seq"]) for e in downs] == [("gw-a", 1), ("gw1", 3), ("gw1", 1)]
    assert [e["kind"] for e in _all(acme, "/api/events?kind=alarm")] == ["alarm"]
    recent = _all(acme, f"/api/events?since={T0 + 10 + 115}")
    assert [e["seq"] for e in recent] == [219, 218, 217, 216, 215]
    both = _all(acme, f"/api/events?agent=gw1&kind=source_down&since={T0 + 2}&limit=1")
    assert [e["seq"] for e in both] == [3]
    assert _all(acme, "/api/events?kind=no_such_kind") == []


async def test_active_events_not_ended_since_are_ongoing(cloud):
    got = {(e["agent"], e["seq"]): e for e in _all(cloud["acme"], "/api/events?limit=200")}
    assert got[("gw1", 1)]["active"] is True and got[("gw1", 1)]["ongoing"] is False  # cam1 came back (seq 3)
    assert got[("gw1", 3)]["ongoing"] is False  # the end itself
    assert got[("gw1", 4)]["ongoing"] is True  # the PLC is still halted
    assert got[("gw1", 5)]["ongoing"] is True and got[("gw1", 5)]["record"] == "alarm"
    assert got[("gw-a", 1)]["ongoing"] is True
    assert not any(e["ongoing"] for e in got.values() if e["kind"] == "input_drift")


async def test_an_active_event_behind_more_events_than_are_looked_up_still_counts_as_ongoing(cloud):
    """A PLC halted, then 2,100 drift events of the same gateway: the look for its end stops at its bound (2,000
    event rows) before reaching it, and a halt it cannot tell ended is shown as ongoing, never hidden."""
    drift = [_event(3 + i, "input_drift", T0 + 201 + i / 1000, pipeline="p1", share=0.5) for i in range(2100)]
    await cloud["push"](
        "acme", "gw-a", [_event(2, "source_halted", T0 + 200, source="plc9", active=True), *drift]
    )
    # the listing too reads at most 2,000 event rows per request: the halt is on a later page (next)
    code, first, _ = _get(cloud["acme"], "/api/events?agent=gw-a&kind=source_halted")
    assert code == 200 and first["events"] == [] and first["next"]
    got = _all(cloud["acme"], "/api/events?agent=gw-a&kind=source_halted")
    assert [(e["seq"], e["active"], e["ongoing"]) for e in got] == [(2, True, True)]


async def test_an_event_text_with_a_script_is_shown_as_text(cloud):
    acme = cloud["acme"]
    code, page, headers = _get(acme, "/api/events?agent=gw-a")
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    evt = page["events"][0]
    assert evt["payload"]["message"] == HOSTILE and evt["payload"]["source"] == HOSTILE  # as sent, as data
    # the page draws each event with its own code (evRow, esc): run them in Node on this very answer
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found (apt-get install -y nodejs): the page's code cannot be run")
    html = _get_page(acme)
    assert html == PAGE.read_text()
    start = html.index("const esc = ")
    esc = html[start : html.index("\n", start)]
    start = html.index("function evRow(e){")
    ev_row = html[start : html.index("\nasync function events", start)]
    script = f"{esc}\n{ev_row}\nconst page = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
    script += "process.stdout.write(page.events.map(evRow).join(''));\n"
    out = subprocess.run(
        [node, "-e", script], input=json.dumps(page), capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "<script" not in out and "<img" not in out and "onerror=alert(1)>" not in out
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in out
    assert 'class="on"' in out  # ongoing: highlighted


def _get_page(c: Console) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{c.port}/", timeout=10) as r:
        return r.read().decode()


async def test_events_are_read_through_the_event_index_not_every_record(cloud, request):
    """The events read on a tenant with many results: the query plan is a search of the events' index."""
    srv = cloud["acme"].srv
    store = srv.store
    sql = (
        "SELECT t, agent, epoch, seq, kind, payload FROM records WHERE tenant = ? AND kind IN ('event', 'alarm') "
        "AND agent = ? AND (t, agent, epoch, seq) < (?, ?, ?, ?) "
        "ORDER BY t DESC, agent DESC, epoch DESC, seq DESC LIMIT ?"
    )
    args = ["acme", "gw1", T0 + 50, "gw1", 0, 150, 10]
    if "sqlite" in request.node.callspec.id:
        plan = " ".join(str(r) for r in store._rows("EXPLAIN QUERY PLAN " + sql, args))
        assert "records_agent_events" in plan and "TEMP B-TREE" not in plan, plan
        plan = " ".join(
            str(r)
            for r in store._rows(
                "EXPLAIN QUERY PLAN " + sql.replace("AND agent = ? ", ""), args[:1] + args[2:]
            )
        )
        assert "records_events" in plan and "TEMP B-TREE" not in plan, plan
    else:
        with store.pool.connection() as conn:
            conn.execute(
                "SET enable_seqscan = off"
            )  # a table this small is scanned otherwise: ask for its index
            plan = " ".join(r[0] for r in conn.execute("EXPLAIN " + store.q(sql), args).fetchall())
        assert "records_agent_events" in plan and "Sort" not in plan, plan


async def test_oversized_event_payloads_cost_an_answer_a_few_mb_not_all_of_them(cloud):
    """An agent's events as long as a batch allows (here 80 of 100,000 characters, 8 MB): each is listed with the
    first 64 K of its text (``truncated``) and a page ends early once 4 M characters of payloads are read (its
    ``next`` goes on): paging still lists every one, once, and no answer carries them all. Before, a page read
    and answered every payload whole (8 MB here; a lookup of an agent's kind up to 2,000 of them)."""
    big = [
        _event(10 + i, "dump", T0 + 300 + i, active=False, message="x" * 100_000, note=f"n{i}")
        for i in range(80)
    ]
    await cloud["push"]("acme", "gw-a", big)
    acme = cloud["acme"]
    code, first, _ = _get(acme, "/api/events?agent=gw-a&limit=200")
    assert code == 200 and first["next"], "a page of 8 MB of payloads ends early, with next"
    body = urllib.request.urlopen(
        f"http://127.0.0.1:{acme.port}/api/events?agent=gw-a&limit=200", timeout=10
    ).read()
    assert len(body) < 6_000_000, len(body)
    seen = _all(acme, "/api/events?agent=gw-a&limit=200")
    assert [e["seq"] for e in seen] == [*range(89, 9, -1), 1]  # every one, once, newest first
    cut = [e for e in seen if e["seq"] >= 10]
    assert all(e["truncated"] and isinstance(e["payload"], str) for e in cut)
    assert all(len(e["payload"]) == 64 * 1024 and e["payload"].startswith('{"kind": "dump"') for e in cut)
    assert [e["truncated"] for e in seen if e["seq"] == 1] == [False]  # a small event is whole, as before
    assert seen[-1]["payload"]["message"] == HOSTILE


async def test_a_forged_cursor_naming_an_agent_with_nul_is_a_clear_400(cloud):
    """A ``before`` whose agent part holds a NUL: a 400 naming ``before`` on both stores (PostgreSQL's text
    holds no NUL: before, the query failed there, a 500 counted as the console's error)."""
    code, text, _ = _get(cloud["acme"], f"/api/events?before={T0 + 5!r},1,1,gw1%00x")
    assert code == 400 and "before" in text, (code, text)


async def test_a_sample_filter_with_nul_is_a_clear_400_on_every_store(cloud):
    """``/api/samples?reason=%00`` (or ``model``, ``label_state``): PostgreSQL's text holds no NUL, and the store's
    failure was a 500 counted as the console's error there (SQLite: 200, no sample). Now a 400 naming the filter
    on both stores, before any store read; a filter without NUL reads as before."""
    for name in ("model", "reason", "label_state"):
        code, text, _ = _get(cloud["acme"], f"/api/samples?{name}=ng%00x")
        assert code == 400 and f"{name} holds NUL" in text, (name, code, text)
    code, body, _ = _get(cloud["acme"], "/api/samples?reason=ng")
    assert code == 200 and body == [], (code, body)


async def test_each_write_target_of_one_plc_is_its_own_write_failing_episode(cloud):
    """Two write targets on one PLC source refuse their writes; one is fixed and its episode ends: the other,
    still refused, stays ongoing (before, the subject was the source only and the end of one hid the other)."""
    await cloud["push"](
        "acme",
        "gw1",
        [
            _event(
                300,
                "write_failing",
                T0 + 300,
                action="gate",
                source="plc1",
                node_id="ns=2;s=Gate",
                active=True,
                reason="BadUserAccessDenied",
                failed=1,
                failing_s=None,
            ),
            _event(
                301,
                "write_failing",
                T0 + 301,
                action="count",
                source="plc1",
                node_id="ns=2;s=Count",
                active=True,
                reason="70000 out of Int16",
                failed=1,
                failing_s=None,
            ),
            _event(
                302,
                "write_failing",
                T0 + 302,
                action="gate",
                source="plc1",
                node_id="ns=2;s=Gate",
                active=False,
                reason="BadUserAccessDenied",
                failed=9,
                failing_s=2.0,
            ),
        ],
    )
    got = {e["seq"]: e for e in _all(cloud["acme"], "/api/events?kind=write_failing")}
    assert [(s, got[s]["payload"]["action"], got[s]["ongoing"]) for s in (302, 301, 300)] == [
        (302, "gate", False),
        (301, "count", True),  # still refused by the PLC
        (300, "gate", False),  # ended by 302
    ]


async def test_a_sensor_faults_two_episodes_and_each_unrecorded_rollback_folder_end_on_their_own(cloud):
    """A pipeline's sensor check (flatline) and its stale waveform are two sensor_fault episodes side by side, and
    rollback_unrecorded is one episode per package folder of a slot: the end of one showed the other ended too
    (the subject was the pipeline, the slot, only), a still-flat sensor hidden once the DAQ's stall ended."""
    await cloud["push"](
        "acme",
        "gw1",
        [
            _event(
                310, "sensor_fault", T0 + 310, pipeline="pump", fault="flatline", active=True, message="flat"
            ),
            _event(
                311, "sensor_fault", T0 + 311, pipeline="pump", fault="stale", active=True, message="stalled"
            ),
            _event(
                312, "sensor_fault", T0 + 312, pipeline="pump", fault="stale", active=False, message="fresh"
            ),
            _event(320, "rollback_unrecorded", T0 + 320, slot="vision", package="pi-1.1.0-aaaa", active=True),
            _event(321, "rollback_unrecorded", T0 + 321, slot="vision", package="pi-1.2.0-bbbb", active=True),
            _event(
                322, "rollback_unrecorded", T0 + 322, slot="vision", package="pi-1.1.0-aaaa", active=False
            ),
        ],
    )
    got = {e["seq"]: e for e in _all(cloud["acme"], "/api/events?kind=sensor_fault")}
    assert [(s, got[s]["payload"]["fault"], got[s]["ongoing"]) for s in (312, 311, 310)] == [
        (312, "stale", False),
        (311, "stale", False),  # ended by 312
        (310, "flatline", True),  # the sensor still flat
    ]
    got = {e["seq"]: e for e in _all(cloud["acme"], "/api/events?kind=rollback_unrecorded")}
    assert [(s, got[s]["payload"]["package"], got[s]["ongoing"]) for s in (322, 321, 320)] == [
        (322, "pi-1.1.0-aaaa", False),
        (321, "pi-1.2.0-bbbb", True),  # its mark still not written
        (320, "pi-1.1.0-aaaa", False),  # ended by 322
    ]
