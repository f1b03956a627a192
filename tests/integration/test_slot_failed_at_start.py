"""A slot whose configured package is refused (damaged, signed by a key not trusted here, a refused version) with
nothing installed in it yet: the agent did not start (``cannot start on ...``), every other slot and pipeline
down with it, at every restart of its unit, and a slot following the fleet never connected to be sent a fix. Now
the agent starts with that slot "failed" (its reason on /status and in `edge-agent status`, one WARNING, counted
``configured_package_refused``), every other slot and pipeline serving; the failed slot's pipeline judges nothing
(each item a result UNSURE naming ``no_model``, as an item its model fails on); a package installed into the slot
(as a fleet deployment installs it: ``ModelSlot.swap``) serves, and its pipeline judges again."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.request
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from devices.base import ConnectionState
from edge_agent.agent import Agent
from edge_agent.cli import _status
from edge_agent.config import parse_config
from tests.support.models import make_keypair, make_package
from tests.support.waits import until


async def test_an_agent_starts_with_a_slot_whose_package_is_refused_failed_and_serves_the_rest(
    tmp_path, caplog, capsys
):
    key, pub = make_keypair(tmp_path / "keys")
    good = make_package(tmp_path, kind="vision", version="1.0.0", key=key, heatmap=False)
    damaged = tmp_path / "damaged.edgepkg"
    damaged.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        cv2.imwrite(str(frames / f"{i}.png"), rng.integers(0, 256, (64, 64, 3), np.uint8))
    cam = {"type": "camera", "url": str(frames), "fps": 20, "loop": True}
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(pub)],
            "http": {"port": 0},
            "sources": {"cam_a": cam, "cam_b": cam},
            "models": {
                "vision": {"package": str(damaged), "engine": "onnxruntime"},
                "other": {"package": str(good), "engine": "onnxruntime"},
            },
            "pipelines": [
                {"name": "inspect", "source": "cam_a", "model": "vision"},
                {"name": "inspect_other", "source": "cam_b", "model": "other"},
            ],
        }
    )
    agent = Agent(cfg)
    try:
        with caplog.at_level(logging.WARNING):
            await (
                agent.start()
            )  # (raised SlotError "model slot 'vision': cannot start on .../damaged.edgepkg")
            failed, serving = agent.pipelines
            await until(lambda: failed.stats.results >= 2 and serving.stats.results >= 2, what="results")
        slot = agent.slots["vision"]
        said = [r.getMessage() for r in caplog.records if "nothing is installed in slot" in r.getMessage()]
        assert len(said) == 1 and str(damaged) in said[0] and "it is failed" in said[0], said
        # one WARNING names the refusal (the swap's own line and the pipeline's first no_model item said it too)
        named = [r.getMessage() for r in caplog.records if damaged.name in r.getMessage()]
        assert named == said, named
        assert agent.slots["other"].state == "active"
        assert serving.stats.model_failed == 0 and serving.stats.last_result.verdict in ("OK", "NG")
        # no verdict on the failed slot's items: UNSURE, the failure named, counted
        last = failed.stats.last_result
        assert last.verdict == "UNSURE" and last.score is None and last.outputs == {"model_error": "no_model"}
        assert failed.stats.model_failed == failed.stats.results and failed.stats.ng == 0
        assert str(damaged) in last.reason, last.reason

        with urllib.request.urlopen(f"http://127.0.0.1:{agent.http.port}/status", timeout=5) as r:
            models = {m["slot"]: m for m in json.loads(r.read())["models"]}
        st = models["vision"]
        assert st["state"] == "failed" and st["version"] is None, st
        assert st["counters"]["configured_package_refused"] == 1
        assert str(damaged) in st["failed"] and st["last_swap"]["ok"] is False, st
        assert agent._cloud_status()["slots"][0]["status"] == "failed"
        capsys.readouterr()
        assert _status(SimpleNamespace(url=f"http://127.0.0.1:{agent.http.port}", json=False)) == 0
        out = capsys.readouterr().out
        assert "vision       no model (failed): its configured package" in out and str(damaged) in out, out

        # a package that passes, installed into the slot (what a fleet deployment does), serves
        outcome = await slot.swap(good, watch=False)
        assert outcome.ok and slot.state == "active" and slot.status()["failed"] is None, outcome
        judged = failed.stats.results
        await until(lambda: failed.stats.results >= judged + 2, what="results after the install")
        assert failed.stats.last_result.verdict in ("OK", "NG")
    finally:
        await agent.stop()


@pytest.mark.parametrize("given", ["refused package", "name only"])
async def test_a_fleet_slot_failed_at_start_is_fixed_by_a_deployment(tmp_path, capsys, given):
    """A ``follow_fleet`` slot whose package is refused with nothing installed: the agent connects all the same, and
    a deployment from the fleet installs a package that serves (before, the agent never started, so never connected
    to be sent one: only an edit on the gateway brought it back). So does a new gateway's slot named by its fleet
    package alone (``name:``, as docs/gateway-install.md configures it), nothing installed yet: every start ended
    (``no package installed yet and no local 'package' configured``); it now starts failed, waiting for the fleet's
    deployment, which fills it."""
    import asyncio

    from cloud_trainer import admin_cli
    from cloud_trainer.registry import Registry
    from tests.support.fleet import cloud_settings, fleet_server, make_pki
    from tests.support.peers import free_port

    pki = make_pki(tmp_path / "pki", agents=("gw1",))
    key, pub = make_keypair(tmp_path / "keys")
    good = make_package(tmp_path, kind="vision", version="1.0.0", key=key, heatmap=False)
    Registry(tmp_path / "registry").publish(good, [], {}, None, None)
    rogue, _ = make_keypair(tmp_path / "rogue")  # signed by a key this gateway does not trust
    untrusted = make_package(tmp_path / "r", kind="vision", version="1.0.0", key=rogue, heatmap=False)
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.random.default_rng(3).integers(0, 256, (64, 64, 3), np.uint8))
    port = free_port()
    srv = fleet_server(tmp_path / "cloud", pki, port, registry=tmp_path / "registry")
    await srv.start()
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "site": "s", "line": "l", "data_dir": str(tmp_path / "gw1")},
            "trusted_keys": [str(pub)],
            "http": {"enabled": False},
            "sources": {"cam": {"type": "camera", "url": str(frames), "fps": 20, "loop": True}},
            "models": {
                "vision": {
                    **(
                        {"package": str(untrusted)}
                        if given == "refused package"
                        else {"name": "part-inspection"}
                    ),
                    "version_policy": "follow_fleet",
                    "engine": "onnxruntime",
                }
            },
            "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
            "cloud": cloud_settings(pki, port, heartbeat_s=0.3).model_dump(mode="json", exclude_unset=True),
        }
    )
    agent = Agent(cfg)
    try:
        await (
            agent.start()
        )  # (raised: "cannot start on ...: signed by key ..., which is not among the trusted keys")
        slot = agent.slots["vision"]
        why = (
            "not among the trusted keys"
            if given == "refused package"
            else "no package yet: waiting for the fleet's deployment (no package installed yet"
        )
        assert slot.state == "failed" and why in (slot.failed or ""), slot.failed
        pipe = agent.pipelines[0]
        await until(lambda: pipe.stats.results >= 1, what="a result from the failed slot's pipeline")
        last = pipe.stats.last_result
        assert last.verdict == "UNSURE" and last.outputs == {"model_error": "no_model"}, last
        await until(
            lambda: [s.get("status") for a in srv.store.agents() for s in a.get("slots", [])] == ["failed"],
            what="the failed slot reported to the fleet",
        )
        capsys.readouterr()
        admin = ["--endpoint", f"127.0.0.1:{port}", "--pki", str(pki), "--admin", "alice"]
        assert await asyncio.to_thread(admin_cli.main_agents, admin) == 0
        out = capsys.readouterr().out
        assert "vision=no model (failed; " in out and why in out, out
        dep = srv.control.create(
            {"package": "part-inspection", "version": "1.0.0", "slot": "vision", "agents": ["gw1"]}
        )
        await until(
            lambda: srv.control._get(dep["id"])["state"] == "completed", what="1.0.0 on gw1", timeout_s=60
        )
        assert slot.state == "active" and slot.version == "1.0.0" and slot.failed is None
        judged = pipe.stats.results - pipe.stats.model_failed
        await until(lambda: pipe.stats.results - pipe.stats.model_failed > judged, what="a judged result")
    finally:
        await agent.stop()
        await srv.stop()


async def test_a_windowed_pipeline_on_a_failed_slot_counts_its_readings_and_is_sized_once_a_model_serves(
    tmp_path,
):
    """A pipeline's windows are sized from its model: on a slot failed at the start, its readings are counted
    (``no_model``) and dropped, not windowed; once a package serves the slot, the pipeline is prepared and judged."""
    from concurrent.futures import ThreadPoolExecutor

    import pytest

    from devices.base import Quality, Reading
    from edge_agent.config import PipelineSettings, WindowSettings
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import FailedAtStart, ModelSlot
    from edge_agent.pipelines import Pipeline
    from tests.support.models import SIGNAL_RATE_HZ, SIGNAL_WINDOW

    key, pub = make_keypair(tmp_path / "keys")
    good = make_package(tmp_path, kind="signal", key=key)
    damaged = tmp_path / "damaged.edgepkg"
    damaged.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    slot = ModelSlot(
        "health", ModelConfig(package=str(damaged), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    with pytest.raises(FailedAtStart):
        await slot.start()
    results: list = []

    async def on_result(res, item):
        results.append(res)

    settings = PipelineSettings(
        name="pump",
        source="plc",
        model="health",
        window=WindowSettings(waveform="Vibration", sample_rate_hz=SIGNAL_RATE_HZ, scalars={}),
    )
    pipe = Pipeline(settings, slot, ThreadPoolExecutor(1), on_result, on_event=lambda e: None)
    slot.swap_checks[pipe.name] = (
        pipe.refusal
    )  # (the agent's start: not prepared, its checks kept for a swap)
    pipe.start()
    rng = np.random.default_rng(0)
    try:
        for i in range(3):
            await pipe.offer(
                Reading("plc", "Vibration", rng.normal(0, 1, SIGNAL_WINDOW), float(i), float(i), Quality.GOOD)
            )
        drops = pipe.status()["silent_drops"]["no_model"]
        assert drops["count"] == 3 and str(damaged) in drops["message"], drops
        assert pipe.windower is None and results == []

        assert (await slot.swap(good, watch=False)).ok
        for i in range(3, 6):
            await pipe.offer(
                Reading("plc", "Vibration", rng.normal(0, 1, SIGNAL_WINDOW), float(i), float(i), Quality.GOOD)
            )
        await until(lambda: len(results) >= 2, what="windows judged once a model serves")
        assert results[-1].verdict in ("OK", "NG") and pipe.windower is not None
    finally:
        await pipe.stop()
        await slot.stop()


async def test_a_package_whose_rate_a_windowed_pipeline_cannot_take_is_refused_into_its_failed_slot(tmp_path):
    """A pipeline not prepared (its slot failed at the start) checks a package swapped in against its tag's rate, as
    its start does: a package taking 10 kHz from a 5 kHz tag was installed, the slot read active and every reading
    was then dropped (model_unfit), for good; now the swap is refused in the pipeline's words and the slot stays
    failed, for a package that fits."""

    from edge_agent.config import PipelineSettings, WindowSettings
    from tests.support.models import SIGNAL_RATE_HZ

    settings = PipelineSettings(
        name="pump",
        source="plc",
        model="health",
        window=WindowSettings(waveform="Vibration", sample_rate_hz=SIGNAL_RATE_HZ / 2, scalars={}),
    )
    slot, good = await _failed_slot_with_its_pipeline(tmp_path, settings)
    try:
        out = await slot.swap(good, watch=False)
        assert not out.ok and "sampled at 5000 Hz but the model takes 10000 Hz" in (out.reason or ""), out
        assert slot.state == "failed" and slot.failed is not None and slot.version is None
    finally:
        await slot.stop()


@pytest.mark.parametrize(
    "gate",
    [
        "NG",
        "NG or UNSURE",
        "not OK",
        "NG through another session",
        "NG or UNSURE on a shared node",
        "NG or UNSURE on a node of two failed slots",
        "a pass alone",
    ],
)
async def test_a_plc_watchdog_fed_by_a_pipeline_on_a_failed_slot_stands_still_until_a_package_serves(
    tmp_path, capsys, monkeypatch, gate
):
    """The agent did not start with such a slot, and the OPC UA source's heartbeat (the PLC's watchdog output)
    stood still: the PLC fell back to its safe state. Started with the slot failed, it went on counting while every
    part the slot's pipeline saw went UNSURE and its reject output (gated on NG) was never updated. Now the heartbeat
    of a source the pipeline's actions write through is held while the slot has no model, written again once one
    serves, and /status and `edge-agent status` name the held node and why (it was one WARNING in the log). A
    reject gate on UNSURE too acts on each part meanwhile (each rejected): the PLC is told, and the heartbeat is
    not held for it. A gate that names no UNSURE (`ne: OK`; as no condition, a 'done' signal) is not handed UNSURE
    results, so it is never updated either: held (it was written, the line running with no part judged). A pass
    signal beside it (`verdict: OK`, on_change) is reset by each unjudged part, as by an NG part: it kept what the
    agent before left (true after an OK part), and with the line running a PLC reading it passed each part. The PLC
    is judged whole: a gate written through another source reaching it (another session, the PLC named by a host
    name that resolves to its address) holds the heartbeat as one through the heartbeat's source does (it ran on), and a reject node
    another pipeline also writes (its OK parts' false after each unjudged part's true) holds it too (it ran on, the
    PLC reading false for unjudged parts). A pass signal alone tells the PLC each unjudged part is not passed (its reset): the heartbeat runs.
    That other pipeline on a slot failed too rejects its parts as well: the heartbeat runs (it was held, the line
    stopped, every part rejected), and is held once a package serves that slot."""
    import asyncio

    from asyncua import ua

    from tests.support.plc import plc

    key, pub = make_keypair(tmp_path / "keys")
    good = make_package(tmp_path, kind="vision", version="1.0.0", key=key, heatmap=False)
    bad = tmp_path / "vision.edgepkg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "0.png"), np.zeros((64, 64, 3), np.uint8))
    life, reject = ua.Variant(0, ua.VariantType.Int32), ua.Variant(False, ua.VariantType.Boolean)
    when = {
        "NG": {"verdict": "NG"},
        "NG or UNSURE": {"verdict": {"in": ["NG", "UNSURE"]}},
        "not OK": {"verdict": {"ne": "OK"}},
        "NG through another session": {"verdict": "NG"},
        "NG or UNSURE on a shared node": {"verdict": {"in": ["NG", "UNSURE"]}},
        "NG or UNSURE on a node of two failed slots": {"verdict": {"in": ["NG", "UNSURE"]}},
        "a pass alone": {"verdict": "NG"},  # (not the pipeline's)
    }[gate]
    more: dict = {"sources": {}, "models": {}, "actions": {}, "pipelines": []}
    if gate == "NG through another session":  # (the outputs' source: the same PLC, no heartbeat)
        more["sources"] = {"plc2": {"type": "opcua", "endpoint": "", "connect_timeout_s": 2.0}}
        # the PLC's host name, as a site's DNS or hosts file gives it (a .invalid name no resolver answers)
        import socket

        resolve = socket.getaddrinfo
        monkeypatch.setattr(
            socket,
            "getaddrinfo",
            lambda host, *a, **k: resolve("127.0.0.1" if host == "plc-line3.invalid" else host, *a, **k),
        )
    elif gate == "NG or UNSURE on a shared node":  # another camera's pipeline, every part OK, writes it too
        ok = make_package(tmp_path / "ok", kind="vision", version="1.0.0", key=key, heatmap=False, bias=8.0)
        more["models"] = {"vision2": {"package": str(ok)}}
        # its node spelt by the namespace's URI: one node to the PLC (it was another to the hold, the heartbeat ran)
        more["actions"] = {
            "reject2": {
                "mode": "level",
                "reset_value": False,
                "when": when,
                "node_id": "nsu=urn:plc;s=Reject",
            }
        }
        more["pipelines"] = [{"name": "other", "source": "cam", "model": "vision2", "actions": ["reject2"]}]
    elif gate == "NG or UNSURE on a node of two failed slots":  # the same, its slot failed too
        more["models"] = {"vision2": {"package": str(bad)}}
        more["actions"] = {"reject2": {"mode": "level", "reset_value": False, "when": when}}
        more["pipelines"] = [{"name": "other", "source": "cam", "model": "vision2", "actions": ["reject2"]}]
    passed = ua.Variant(True, ua.VariantType.Boolean)  # as an OK part left it under the agent before
    async with plc({"Life": life, "Reject": reject, "Pass": passed}) as p:
        cfg = parse_config(
            {
                "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
                "http": {"port": 0},
                "trusted_keys": [str(pub)],
                "sources": {
                    "plc": {
                        "type": "opcua",
                        "endpoint": f"opc.tcp://127.0.0.1:{p.port}/plc/",
                        "connect_timeout_s": 2.0,
                        "heartbeat": {"node_id": p.node_id("Life"), "period_ms": 100, "kind": "counter"},
                    },
                    "cam": {"type": "camera", "url": str(tmp_path / "frames"), "fps": 5, "loop": True},
                    **{  # the same PLC named by its host name (another PLC to the hold: the heartbeat ran)
                        n: {**s, "endpoint": f"opc.tcp://plc-line3.invalid:{p.port}/plc/"}
                        for n, s in more["sources"].items()
                    },
                },
                "models": {"vision": {"package": str(bad)}, **more["models"]},
                "actions": {
                    "reject": {
                        "type": "opcua_write",
                        "source": "plc2" if more["sources"] else "plc",
                        "node_id": p.node_id("Reject"),
                        "when": when,
                    },
                    **{
                        n: {"type": "opcua_write", "source": "plc", "node_id": p.node_id("Reject"), **a}
                        for n, a in more["actions"].items()
                    },
                    "pass": {
                        "type": "opcua_write",
                        "source": "plc2" if more["sources"] else "plc",
                        "node_id": p.node_id("Pass"),
                        "mode": "on_change",
                        "when": {"verdict": "OK"},
                    },
                },
                "pipelines": [
                    {
                        "name": "inspect",
                        "source": "cam",
                        "model": "vision",
                        "actions": ["pass"] if gate == "a pass alone" else ["reject", "pass"],
                    },
                    *more["pipelines"],
                ],
            },
            "agent.yaml",
            str(tmp_path),
        )
        agent = Agent(cfg)
        await agent.start()
        try:
            src, pipe = agent.sources["plc"], agent.pipelines[0]
            await until(lambda: pipe.stats.errors["no_model"] >= 2, what="UNSURE results of the failed slot")
            if gate in ("NG or UNSURE", "a pass alone", "NG or UNSURE on a node of two failed slots"):
                await until(
                    lambda: src.heartbeats >= 2, what="the heartbeat written: the PLC is told each part"
                )
                assert "heartbeat_held" not in agent.status()["sources"]["plc"]
                if gate != "a pass alone":
                    await until(lambda: _read_reject(p), what="each part rejected")
                assert (await p.read())["Pass"] is False  # not passed: reset, as by an NG part
                if gate == "NG or UNSURE on a node of two failed slots":  # its OK parts' false may follow now
                    # from the moment its model is active: the swap writes the slot's state before it is no longer
                    # failed (the heartbeat ran meanwhile, the PLC reading its OK parts' false)
                    slot2, written = agent.slots["vision2"], threading.Event()
                    set_current = slot2.store.set_current
                    slot2.store.set_current = lambda *a, **k: written.wait(10) and set_current(*a, **k)
                    swap = asyncio.ensure_future(slot2.swap(good, watch=False))
                    try:
                        await until(lambda: slot2.version is not None, what="the other slot's model active")
                        assert [q.name for q in agent.heartbeat_holders("plc")] == ["inspect"]
                    finally:
                        written.set()
                    assert (await swap).ok
                    await until(
                        lambda: "heartbeat_held" in agent.status()["sources"]["plc"],
                        what="the heartbeat held once the other slot serves",
                    )
                return
            if gate == "NG through another session":  # known as this PLC once its name is resolved
                await until(
                    lambda: ("plc", ("localhost", p.port)) in agent._plc_seen.get("plc2", ()),
                    what="the host name resolved to the PLC's address",
                )
                await asyncio.sleep(0.3)  # (beats of 100 ms: one would have run)
            assert src.heartbeats == 0 and (await p.read())["Life"] == 0
            held = agent.status()["sources"]["plc"]["heartbeat_held"]
            assert held["node"] == p.node_id("Life") and "model slot 'vision' is failed" in held["reason"], (
                held
            )
            if gate == "NG or UNSURE on a shared node":  # (written true and false in turn)
                # the other pipeline's OK parts' false lands on the node spelt by URI: the PLC reads it
                await until(lambda: _read_reject(p), what="an unjudged part's true")
                await until(lambda: _read_false(p), what="the other pipeline's false through nsu=")
                return
            if gate != "NG":  # (its output never written: no UNSURE result is handed to it)
                assert not await _read_reject(p)
                return
            capsys.readouterr()
            assert (
                await asyncio.to_thread(
                    _status, SimpleNamespace(url=f"http://127.0.0.1:{agent.http.port}", json=False)
                )
                == 0
            )
            out = capsys.readouterr().out
            assert (
                f"heartbeat held: {p.node_id('Life')} unchanged since " in out and "pipeline inspect" in out
            ), out
            assert (await agent.slots["vision"].swap(good, watch=False)).ok
            await until(lambda: src.heartbeats >= 2, what="the heartbeat written again once a package serves")
            await asyncio.sleep(0.1)
            assert (await p.read())["Life"] > 0
            assert "heartbeat_held" not in agent.status()["sources"]["plc"]
        finally:
            await agent.stop()


async def _read_reject(p) -> bool:
    return (await p.read())["Reject"] is True


async def _read_false(p) -> bool:
    return (await p.read())["Reject"] is False


def _held_by_plc(tmp_path, pub, actions: dict, pipelines: list, sources: dict | None = None) -> list[str]:
    """The pipelines whose slot, failed, holds the heartbeat of source ``plc`` (``Agent._writing_through``) in
    ``_agent_of_plc``'s agent."""
    return [p.name for p in _agent_of_plc(tmp_path, pub, actions, pipelines, sources)._writing_through("plc")]


def _agent_of_plc(tmp_path, pub, actions: dict, pipelines: list, sources: dict | None = None) -> Agent:
    """An agent, not started, with source ``plc`` (a heartbeat), cameras ``cam`` and ``cam2``, slots ``vision`` and
    ``vision2`` (a package never read), and ``sources`` besides."""
    cfg = parse_config(
        {
            "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(pub)],
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": "opc.tcp://127.0.0.1:4840/plc/",
                    "heartbeat": {"node_id": "ns=2;s=Life", "period_ms": 100},
                },
                "cam": {"type": "camera", "url": str(tmp_path / "frames"), "fps": 5},
                "cam2": {"type": "camera", "url": str(tmp_path / "frames"), "fps": 5},
                **(sources or {}),
            },
            "models": {
                "vision": {"package": str(tmp_path / "vision.edgepkg")},
                "vision2": {"package": str(tmp_path / "vision.edgepkg")},
            },
            "actions": actions,
            "pipelines": pipelines,
        },
        "agent.yaml",
        str(tmp_path),
    )
    return Agent(cfg)


def test_the_watchdog_hold_leaves_out_a_pass_signal_an_unjudged_part_is_left_without_as_an_ng_part_is(
    tmp_path,
):
    """Which actions through an OPC UA source hold its heartbeat while the pipeline's slot has no model (the rule the
    test above runs against a real PLC, over more shapes). A pass signal (an action on OK parts, not on NG ones)
    leaves an unjudged part as it leaves an NG part, without it: beside a reject gate on NG and UNSURE it held the
    heartbeat, every part rejected and the line stopped by its watchdog all the same. Each gate that leaves an
    unjudged part as an OK part (NG alone, `ne: OK`, no `when`, a pass on UNSURE too) still holds it. A gate on NG
    and UNSURE that also rejects a defect label or a score band passes the other OK parts: it tells (it held the
    heartbeat, every part rejected); one on every score, every label or the slot's model acts on every part."""
    _, pub = make_keypair(tmp_path / "keys")
    (tmp_path / "vision.edgepkg").write_bytes(b"not read: the agent is not started")
    (tmp_path / "frames").mkdir()
    ng_or_unsure = {"verdict": {"in": ["NG", "UNSURE"]}}
    on_change_ok = {"mode": "on_change", "when": {"verdict": "OK"}}
    shapes = {  # the actions' conditions -> held
        "reject NG or UNSURE, pass OK": ([ng_or_unsure, {"verdict": "OK"}], False),
        "reject NG or UNSURE, pass not NG": ([ng_or_unsure, {"verdict": {"ne": "NG"}}], False),
        "reject NG or UNSURE": ([ng_or_unsure], False),
        "reject NG, pass OK": ([{"verdict": "NG"}, {"verdict": "OK"}], True),
        "pass OK": ([{"verdict": "OK"}], True),
        "reject not OK, pass OK": ([{"verdict": {"ne": "OK"}}, {"verdict": "OK"}], True),
        "reject NG or UNSURE, done": ([ng_or_unsure, None], True),
        "pass OK or UNSURE, reject NG": ([{"verdict": {"in": ["OK", "UNSURE"]}}, {"verdict": "NG"}], True),
        # a condition on what a judged part has and an unjudged one lacks acts on OK parts too: a done signal
        "UNSURE or any score": ([{"any": [{"verdict": "UNSURE"}, {"score": {"gte": 0}}]}], True),
        "reject NG or UNSURE unless a label": ([{"all": [ng_or_unsure, {"not": {"label": "ok"}}]}], False),
        # an alarm's mirror is set after 3 matching results: the first parts pass untold (raise_after: 1 tells)
        "alarm mirror": ([{"type": "alarm", "when": ng_or_unsure}], True),
        "alarm mirror at once": ([{"type": "alarm", "when": ng_or_unsure, "raise_after": 1}], False),
        "reject NG or UNSURE, alarm mirror": ([ng_or_unsure, {"type": "alarm", "when": ng_or_unsure}], False),
        # a gate that also rejects some OK parts (a defect label, a score band) leaves the others passed: it tells
        "reject NG or UNSURE or a defect label": (
            [{"any": [ng_or_unsure, {"label": {"in": ["scratch", "dent"]}}]}],
            False,
        ),
        "reject NG or UNSURE or a score band": ([{"any": [ng_or_unsure, {"score": {"gte": 0.4}}]}], False),
        "reject NG or UNSURE or a label not ok": ([{"any": [ng_or_unsure, {"not": {"label": "ok"}}]}], False),
        # one on every label or every score acts on every part; the model, its version and engine are the slot's,
        # alike for each part: a gate on them may act on every part
        "UNSURE or any label": (
            [{"any": [{"verdict": "UNSURE"}, {"label": "ok"}, {"not": {"label": "ok"}}]}],
            True,
        ),
        "UNSURE or either side of a score": (
            [{"any": [{"verdict": "UNSURE"}, {"score": {"lt": 0.5}}, {"score": {"gte": 0.5}}]}],
            True,
        ),
        "reject NG or UNSURE or its model": ([{"any": [ng_or_unsure, {"model": "part-inspection"}]}], True),
        "reject NG or UNSURE or its model's scores": (
            [{"any": [ng_or_unsure, {"all": [{"model": "part-inspection"}, {"score": {"gte": 0}}]}]}],
            True,
        ),
        # a pass on UNSURE too, written with a label or a score, passes an unjudged part as an OK part: it acts on
        # no NG part (of another label, the highest score), unlike a reject gate
        "pass the OK label or UNSURE": ([{"any": [{"verdict": "UNSURE"}, {"label": "ok"}]}], True),
        "pass a low score or UNSURE": ([{"any": [{"verdict": "UNSURE"}, {"score": {"lt": 0.5}}]}], True),
        "pass OK or UNSURE unless a defect label": (
            [{"all": [{"verdict": {"in": ["OK", "UNSURE"]}}, {"not": {"label": "scratch"}}]}],
            True,
        ),
        "reject UNSURE or a score band": ([{"any": [{"verdict": "UNSURE"}, {"score": {"gte": 0.4}}]}], False),
        # an OK part scores below its slot's threshold, whatever it is: under 0.9 is each OK part of most slots
        "reject NG or UNSURE or a score under 0.9": ([{"any": [ng_or_unsure, {"score": {"lt": 0.9}}]}], True),
        # a pass on the OK label (no UNSURE) is a gate on a defect label an unjudged part never updates to any rule
        "reject NG or UNSURE, pass the OK label": ([ng_or_unsure, {"label": "ok"}], True),
        # an NG part scores above its slot's threshold: a pass on a low score acts on none, a gate on a high one is
        # never updated by an unjudged part
        "reject NG or UNSURE, pass a low score": ([ng_or_unsure, {"score": {"lt": 0.5}}], False),
        "reject NG or UNSURE, a gate on a high score": ([ng_or_unsure, {"score": {"gte": 0.4}}], True),
        # two actions acting on an unjudged part write one node: the last one's value is what the PLC reads
        "reject NG or UNSURE and pass the OK label or UNSURE, one node": (
            [
                {"type": "opcua_write", "node_id": "ns=2;s=Part", "when": ng_or_unsure},
                {
                    "type": "opcua_write",
                    "node_id": "ns=2;s=Part",
                    "value": False,
                    "when": {"any": [{"verdict": "UNSURE"}, {"label": "ok"}]},
                },
            ],
            True,
        ),
        "result codes 2 on NG or UNSURE, 3 on UNSURE, one node": (
            [
                {"type": "opcua_write", "node_id": "ns=2;s=Code", "value": 2, "when": ng_or_unsure},
                {"type": "opcua_write", "node_id": "ns=2;s=Code", "value": 3, "when": {"verdict": "UNSURE"}},
            ],
            False,
        ),
        # a value an OK part leaves on the node (another action's on OK parts, a reset) is not the last one's to tell
        "result codes 1 on OK, 2 on NG or UNSURE, 1 on UNSURE, one node": (
            [
                {"type": "opcua_write", "node_id": "ns=2;s=Code", "value": 1, "when": {"verdict": "OK"}},
                {"type": "opcua_write", "node_id": "ns=2;s=Code", "value": 2, "when": ng_or_unsure},
                {"type": "opcua_write", "node_id": "ns=2;s=Code", "value": 1, "when": {"verdict": "UNSURE"}},
            ],
            True,
        ),
        "result codes 1 on OK, 2 on NG or UNSURE, 3 on UNSURE, one node": (
            [
                {"type": "opcua_write", "node_id": "ns=2;s=Code", "value": 1, "when": {"verdict": "OK"}},
                {"type": "opcua_write", "node_id": "ns=2;s=Code", "value": 2, "when": ng_or_unsure},
                {"type": "opcua_write", "node_id": "ns=2;s=Code", "value": 3, "when": {"verdict": "UNSURE"}},
            ],
            False,
        ),
        "reject NG or UNSURE and false on UNSURE, one node": (
            [
                {"type": "opcua_write", "node_id": "ns=2;s=Part", "mode": "on_change", "when": ng_or_unsure},
                {
                    "type": "opcua_write",
                    "node_id": "ns=2;s=Part",
                    "value": False,
                    "when": {"verdict": "UNSURE"},
                },
            ],
            True,
        ),
        "reject NG or UNSURE twice, one node": (
            [{"type": "opcua_write", "node_id": "ns=2;s=Part", "when": ng_or_unsure}] * 2,
            False,
        ),
        # neither a margin nor a remaining life tells an NG part, and a label but a defect's is the OK parts' too:
        # each passes an unjudged part as an OK part (of a wide margin, a long life, the OK label)
        "pass a wide margin or UNSURE": ([{"any": [{"verdict": "UNSURE"}, {"margin": {"gte": 0.5}}]}], True),
        "pass a long life or UNSURE": (
            [{"any": [{"verdict": "UNSURE"}, {"remaining_life": {"gt": 0}}]}],
            True,
        ),
        "pass a label but a defect's or UNSURE": (
            [{"any": [{"verdict": "UNSURE"}, {"not": {"label": "scratch"}}]}],
            True,
        ),
        # a pass signal writing its reset for an unjudged part (on_change, a level one's reset_value) tells the PLC
        # it is not passed, as an NG part leaves it; one writing nothing then (a level one) keeps an OK part's pass
        "pass OK, on_change": ([{"type": "opcua_write", "node_id": "ns=2;s=Pass", **on_change_ok}], False),
        "pass OK, level with reset_value": (
            [
                {
                    "type": "opcua_write",
                    "node_id": "ns=2;s=Pass",
                    "reset_value": False,
                    "when": {"verdict": "OK"},
                }
            ],
            False,
        ),
        "reject NG, pass OK on_change": (
            [{"verdict": "NG"}, {"type": "opcua_write", "node_id": "ns=2;s=Pass", **on_change_ok}],
            True,
        ),
        # the pass's reset written first, then the divert's code on its node: the PLC reads the code, one value
        "pass OK on_change, a divert on UNSURE on its node": (
            [
                {"type": "opcua_write", "node_id": "ns=2;s=Pass", **on_change_ok},
                {"type": "opcua_write", "node_id": "ns=2;s=Pass", "value": 3, "when": {"verdict": "UNSURE"}},
            ],
            False,
        ),
    }
    found = {}
    for shape, (whens, _) in shapes.items():
        actions = {
            f"a{i}": (
                {"source": "plc", **when}
                if when is not None and when.get("type") == "opcua_write"
                else {**when, "opcua_source": "plc", "node_id": f"ns=2;s=Alarm{i}"}
                if when is not None and "type" in when
                else {
                    "type": "opcua_write",
                    "source": "plc",
                    "node_id": f"ns=2;s=Out{i}",
                    **({"when": when} if when is not None else {}),
                }
            )
            for i, when in enumerate(whens)
        }
        found[shape] = bool(
            _held_by_plc(
                tmp_path,
                pub,
                actions,
                [{"name": "inspect", "source": "cam", "model": "vision", "actions": list(actions)}],
            )
        )
    assert found == {shape: held for shape, (_, held) in shapes.items()}


def test_the_watchdog_hold_judges_a_node_two_pipelines_write_by_what_the_other_leaves_there(tmp_path):
    """Two cameras on one station writing one reject node: the failed one's true for an unjudged part stands only
    where the other leaves nothing else there for its OK parts (a level gate without reset_value: runs); an on_change
    gate writes its reset false as its own parts turn OK, after the unjudged part's true (held), as a pass or a code
    on OK parts does. (The rule the real-PLC test above runs for one shape.) The other camera on the same failed slot
    judges no part either: only what it writes for its own unjudged parts follows (the same gate, on_change or with
    reset_value false, runs: each part rejected; it held the heartbeat, the PLC reading true for each part)."""
    _, pub = make_keypair(tmp_path / "keys")
    (tmp_path / "vision.edgepkg").write_bytes(b"not read: the agent is not started")
    (tmp_path / "frames").mkdir()
    ng_or_unsure = {"verdict": {"in": ["NG", "UNSURE"]}}
    reject = {"type": "opcua_write", "source": "plc", "node_id": "ns=2;s=Reject", "when": ng_or_unsure}
    shapes = {  # the other pipeline's action on the node (its slot: vision2, or inspect's own) -> held
        "the same level gate": ({}, False),
        "the same gate on_change": ({"mode": "on_change"}, True),
        "a level gate with reset_value false": ({"reset_value": False}, True),
        "false on OK parts": ({"value": False, "when": {"verdict": "OK"}}, True),
        "true on NG parts only": ({"when": {"verdict": "NG"}}, False),
        "the same gate on_change, one slot": ({"mode": "on_change", "model": "vision"}, False),
        "a level gate with reset_value false, one slot": ({"reset_value": False, "model": "vision"}, False),
        "false on UNSURE parts, one slot": (
            {"value": False, "when": {"verdict": "UNSURE"}, "model": "vision"},
            True,
        ),
    }
    found = {}
    for shape, (given, _) in shapes.items():
        theirs = {k: v for k, v in given.items() if k != "model"}
        pipelines = [
            {"name": "inspect", "source": "cam", "model": "vision", "actions": ["reject"]},
            {
                "name": "other",
                "source": "cam2",
                "model": given.get("model", "vision2"),
                "actions": ["theirs"],
            },
        ]
        found[shape] = "inspect" in _held_by_plc(
            tmp_path, pub, {"reject": reject, "theirs": {**reject, **theirs}}, pipelines
        )
    assert found == {shape: held for shape, (_, held) in shapes.items()}


def test_the_watchdog_hold_reads_a_node_spelt_two_ways_as_one_node(tmp_path):
    """The reject node another camera's pipeline writes false for its OK parts, spelt by its namespace's URI
    (``nsu=urn:plc;s=Reject``; the server's namespace array says which index, not known at the start), with spaces
    (``ns=2; s=Reject``) or through a second source of the PLC: the PLC reads that false after an unjudged part's
    true, as where both spell it alike, and the heartbeat is held. Judged as another node, the heartbeat ran. A node
    of another namespace index (``ns=3``) is another node."""
    _, pub = make_keypair(tmp_path / "keys")
    (tmp_path / "vision.edgepkg").write_bytes(b"not read: the agent is not started")
    (tmp_path / "frames").mkdir()
    reject = {
        "type": "opcua_write",
        "source": "plc",
        "node_id": "ns=2;s=Reject",
        "when": {"verdict": {"in": ["NG", "UNSURE"]}},
    }
    pipelines = [
        {"name": "inspect", "source": "cam", "model": "vision", "actions": ["reject"]},
        {"name": "other", "source": "cam2", "model": "vision2", "actions": ["theirs"]},
    ]
    plc2 = {"plc2": {"type": "opcua", "endpoint": "opc.tcp://localhost:4840/plc/"}}
    found = {
        (node, source): "inspect"
        in _held_by_plc(
            tmp_path,
            pub,
            {
                "reject": reject,
                "theirs": {
                    **reject,
                    "source": source,
                    "node_id": node,
                    "value": False,
                    "when": {"verdict": "OK"},
                },
            },
            pipelines,
            plc2,
        )
        for node in ("ns=2;s=Reject", "nsu=urn:plc;s=Reject", "ns=2; s=Reject", "ns=3;s=Reject")
        for source in ("plc", "plc2")
    }
    assert found == {
        (node, source): node != "ns=3;s=Reject"
        for node in ("ns=2;s=Reject", "nsu=urn:plc;s=Reject", "ns=2; s=Reject", "ns=3;s=Reject")
        for source in ("plc", "plc2")
    }


def test_an_opcua_endpoint_that_does_not_parse_leaves_the_watchdog_hold_judging_the_rest(tmp_path):
    """An OPC UA source's endpoint whose host does not parse (a bracket not closed, `[::1:4840`; not an address in
    brackets) passes the config's load: that source says it cannot connect and the agent serves the rest. Beside a
    source with a heartbeat, the hold's look for the sources on the heartbeat's PLC raised ValueError (Invalid IPv6
    URL) and the agent did not start. It is an endpoint of its own: the gate through the heartbeat's source still
    holds it."""
    _, pub = make_keypair(tmp_path / "keys")
    (tmp_path / "vision.edgepkg").write_bytes(b"not read: the agent is not started")
    (tmp_path / "frames").mkdir()
    held = {}
    for endpoint in ("opc.tcp://[::1:4840/plc/", "opc.tcp://[plc]:4840/"):
        held[endpoint] = _held_by_plc(
            tmp_path,
            pub,
            {
                "reject": {
                    "type": "opcua_write",
                    "source": "plc",
                    "node_id": "ns=2;s=Reject",
                    "when": {"verdict": "NG"},
                }
            },
            [{"name": "inspect", "source": "cam", "model": "vision", "actions": ["reject"]}],
            {"typo": {"type": "opcua", "endpoint": endpoint}},
        )
    assert held == {"opc.tcp://[::1:4840/plc/": ["inspect"], "opc.tcp://[plc]:4840/": ["inspect"]}


def test_a_gate_through_the_plcs_address_in_a_short_spelling_holds_its_heartbeat(tmp_path):
    """An IPv4 address the resolver reads in a short, octal, hex or whole-number spelling (``127.1``, ``0177.0.0.1``,
    ``0x7f.1``, ``2130706433``: asyncua connects to 127.0.0.1 for each) is the address, not a name: a reject gate on
    NG through a second source of the heartbeat's PLC so spelt, its slot with no model, was another PLC's to the hold,
    and the heartbeat ran while no part was judged. Another address (``10.1``) is still another PLC."""
    _, pub = make_keypair(tmp_path / "keys")
    (tmp_path / "vision.edgepkg").write_bytes(b"not read: the agent is not started")
    (tmp_path / "frames").mkdir()
    gate = {"type": "opcua_write", "source": "plc2", "node_id": "ns=2;s=Reject", "when": {"verdict": "NG"}}
    held = {
        host: _held_by_plc(
            tmp_path,
            pub,
            {"reject": gate},
            [{"name": "inspect", "source": "cam", "model": "vision", "actions": ["reject"]}],
            {"plc2": {"type": "opcua", "endpoint": f"opc.tcp://{host}:4840/plc/"}},
        )
        for host in ("127.1", "0177.0.0.1", "0x7f.1", "2130706433", "10.1")
    }
    assert held == {
        "127.1": ["inspect"],
        "0177.0.0.1": ["inspect"],
        "0x7f.1": ["inspect"],
        "2130706433": ["inspect"],
        "10.1": [],
    }


def test_a_gate_through_the_plcs_host_name_holds_its_heartbeat_once_resolved_there_and_until_resolved(
    tmp_path,
):
    """A reject gate on NG through a second source naming the heartbeat's PLC (127.0.0.1) by a host name, its slot
    with no model: taken as another PLC, the heartbeat ran while no part was judged. Now the name is the PLC it
    resolves to; until it resolves it may be this PLC (held); resolved elsewhere, or on another port, it is not. A
    server's ApplicationUri with its certificate, read through two sources, makes them one PLC too (a second address
    of one PLC); the ApplicationUri alone does not: every asyncua server gives ``urn:freeopcua:python:server``, and
    one line's failed slot held the heartbeat of each other line whose server gave it."""
    _, pub = make_keypair(tmp_path / "keys")
    (tmp_path / "vision.edgepkg").write_bytes(b"not read: the agent is not started")
    (tmp_path / "frames").mkdir()
    gate = {"type": "opcua_write", "source": "plc2", "node_id": "ns=2;s=Reject", "when": {"verdict": "NG"}}
    pipes = [{"name": "inspect", "source": "cam", "model": "vision", "actions": ["reject"]}]

    def held(
        endpoint: str, seen=(), uri=None, heartbeat_at=None, unresolved=False, up=False, certs=(), peer=None
    ) -> list[str]:
        sources = {"plc2": {"type": "opcua", "endpoint": endpoint}}
        if heartbeat_at:  # the heartbeat's source named so
            beat = {"node_id": "ns=2;s=Life", "period_ms": 100}
            sources["plc"] = {"type": "opcua", "endpoint": heartbeat_at, "heartbeat": beat}
        agent = _agent_of_plc(tmp_path, pub, {"reject": gate}, pipes, sources)
        if seen:
            agent._plc_seen["plc2" if not heartbeat_at else "plc"] = set(seen)
        if uri:
            for n in ("plc", "plc2"):
                agent.sources[n].namespace_pins.server = uri
        for n, cert in zip(
            ("plc", "plc2") if certs else (), certs, strict=True
        ):  # each server's, to its session
            agent.sources[n]._client = SimpleNamespace(security_policy=SimpleNamespace(peer_certificate=cert))
        if unresolved:  # the resolver's answer: no such name (now)
            agent._plc_unresolved = {"plc2"}
        if up:
            agent.sources["plc2"].state = ConnectionState.CONNECTED
        if peer:  # the address plc2's session reached
            transport = SimpleNamespace(get_extra_info=lambda what: peer if what == "peername" else None)
            agent.sources["plc2"]._client = SimpleNamespace(
                uaclient=SimpleNamespace(protocol=SimpleNamespace(transport=transport))
            )
        return [p.name for p in agent._writing_through("plc")]

    here, there = ("plc", ("localhost", 4840)), ("plc", ("10.0.0.9", 4840))
    assert held("opc.tcp://plc-line3.example:4840/") == ["inspect"]  # not resolved yet: may be this PLC
    # the resolver says it does not resolve (DNS down, an mDNS name): its session not up, it writes to no PLC, and
    # holding every PLC on its port stopped each healthy line for as long as the name did not resolve
    assert held("opc.tcp://plc-line3.example:4840/", unresolved=True) == []
    # (its session up: reached all the same)
    assert held("opc.tcp://plc-line3.example:4840/", unresolved=True, up=True) == ["inspect"]
    assert held("opc.tcp://plc-line3.example:4840/", [here]) == ["inspect"]
    # its session up, the address it reached known: that PLC, before the resolver's next round
    assert held("opc.tcp://plc-line3.example:4840/", up=True, peer=("127.0.0.1", 4840)) == ["inspect"]
    assert held("opc.tcp://plc-line3.example:4840/", up=True, peer=("10.0.0.9", 4840)) == []
    assert held("opc.tcp://plc-line3.example:4840/", [there]) == []
    assert held("opc.tcp://plc-line3.example:4841/") == []  # another port: another server
    assert held("opc.tcp://10.0.0.9:4840/") == []
    # one server, two addresses: one ApplicationUri and one certificate
    assert held("opc.tcp://10.0.0.9:4840/", uri="urn:plc-line3", certs=(b"A", b"A")) == ["inspect"]
    # two servers of one make, its default ApplicationUri: another line's PLC, its heartbeat not held
    assert held("opc.tcp://10.0.0.9:4840/", uri="urn:freeopcua:python:server") == []
    assert held("opc.tcp://10.0.0.9:4840/", uri="urn:freeopcua:python:server", certs=(b"A", b"B")) == []
    assert held("opc.tcp://10.0.0.9:4840/", uri="urn:freeopcua:python:server", certs=(b"", b"")) == []
    # named, its name not resolved by the agent but its session up: the ApplicationUri alone keeps it any PLC on its
    # port (held), not another's
    assert held("opc.tcp://plc-line3.example:4840/", uri="urn:x", unresolved=True, up=True) == ["inspect"]
    # the heartbeat's source by the name, the gate's by an address
    by_name = "opc.tcp://plc-line3.example:4840/"
    assert held("opc.tcp://10.0.0.9:4840/", heartbeat_at=by_name) == ["inspect"]
    assert held("opc.tcp://10.0.0.9:4840/", [there], heartbeat_at=by_name) == ["inspect"]
    assert held("opc.tcp://10.0.0.9:4840/", [here], heartbeat_at=by_name) == []


async def test_a_resolver_that_never_answers_holds_one_lookup_and_no_thread_the_agent_needs(monkeypatch):
    """The sources' host names were looked up in the loop's default executor, one more lookup each name and round
    while the resolver hung (an NSS module past its timeouts): its few threads, which the outbox's commit waits, the
    samples' encoding and the model manager need, were each held by a lookup in turn. One lookup runs at a time, in
    a thread of its own; while it hangs the names are taken as not resolving."""
    import socket
    import threading

    import edge_agent.agent as agent_mod

    release, calls = threading.Event(), []

    def hung(*a, **k):
        calls.append(a[0])
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "resolver hung")

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    monkeypatch.setattr(agent_mod, "RESOLVE_PLCS_S", 0.01)
    monkeypatch.setattr(agent_mod, "RESOLVE_PLCS_TIMEOUT_S", 0.05)
    agent = SimpleNamespace(
        _plc_unresolved=set(), _plc_seen={}, sources={}
    )  # (what the lookups tell the agent)
    named = {"a": ("plc-a.invalid", 4840), "b": ("plc-b.invalid", 4840)}
    task = asyncio.create_task(Agent._resolve_plcs(agent, named))  # type: ignore[arg-type]
    try:
        await until(lambda: agent._plc_unresolved == {"a", "b"}, what="both names taken as not resolving")
        for _ in range(3):  # rounds more, the lookup still hanging (each round 10 ms)
            await asyncio.sleep(0.1)
        assert calls == ["plc-a.invalid"], calls
    finally:
        task.cancel()
        release.set()


async def test_an_address_a_plcs_name_no_longer_leads_to_is_forgotten_once_no_session_is_at_it(monkeypatch):
    """A name's address was kept until restart: a PLC given another address (DHCP), its old one given to another
    line's PLC, tied that line's heartbeat to this one's failed slot for good. An address the name no longer leads
    to is forgotten once the source's session is not at it; the address its session reached is kept (a name leading
    to several, or moved since it connected)."""
    import socket

    import edge_agent.agent as agent_mod

    answer = ["10.0.0.7"]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(2, 1, 6, "", (answer[0], 4840))])
    monkeypatch.setattr(agent_mod, "RESOLVE_PLCS_S", 0.01)
    src = SimpleNamespace(state=ConnectionState.CONNECTED, peer_address=("10.0.0.7", 4840))
    agent = SimpleNamespace(_plc_unresolved=set(), _plc_seen={}, sources={"a": src})
    task = asyncio.create_task(Agent._resolve_plcs(agent, {"a": ("plc-a.example", 4840)}))  # type: ignore[arg-type]
    old, new = ("plc", ("10.0.0.7", 4840)), ("plc", ("10.0.0.8", 4840))
    try:
        await until(lambda: agent._plc_seen.get("a") == {old}, what="the name resolved")
        answer[0] = "10.0.0.8"  # moved; the session still at the old address
        await until(lambda: agent._plc_seen["a"] == {old, new}, what="the new address added")
        for _ in range(5):  # rounds more (each 10 ms): the old address kept while the session is there
            await asyncio.sleep(0.05)
        assert agent._plc_seen["a"] == {old, new}
        src.peer_address = ("10.0.0.8", 4840)  # reconnected at the new address
        await until(lambda: agent._plc_seen["a"] == {new}, what="the old address forgotten")
        src.state, src.peer_address = ConnectionState.BACKOFF, None
        answer[0] = "10.0.0.9"
        await until(lambda: agent._plc_seen["a"] == {("plc", ("10.0.0.9", 4840))}, what="no session: moved")
    finally:
        task.cancel()


@pytest.mark.parametrize("pipeline", ["camera", "windowed"])
async def test_a_package_of_the_other_kind_is_refused_into_a_pipelines_failed_slot(tmp_path, pipeline):
    """A pipeline's slot failed at the start (a fleet-fed slot with no package yet) took a model of the other kind
    as its first package: a signal model into a camera pipeline's slot, an image model into a windowed one's. The
    slot read active, every item failed the model (frames UNSURE bad_input; windows no result) and the PLC's
    heartbeat hold was lifted. Now the swap is refused in the pipeline's words and the slot stays failed, for a
    model of its kind."""

    from edge_agent.config import PipelineSettings, WindowSettings

    if pipeline == "camera":
        settings = PipelineSettings(name="inspect", source="cam", model="vision")
        kind, said = (
            "signal",
            "takes signal windows; this pipeline's items are camera frames: serve an image model",
        )
    else:
        window = WindowSettings(waveform="Vibration", scalars={})
        settings = PipelineSettings(name="pump", source="plc", model="health", window=window)
        kind, said = (
            "vision",
            "takes camera frames; this pipeline's items are signal windows: serve a signal model",
        )
    slot, package = await _failed_slot_with_its_pipeline(tmp_path, settings, kind)
    try:
        out = await slot.swap(package, watch=False)
        assert not out.ok and said in (out.reason or ""), out
        assert slot.state == "failed" and slot.failed is not None and slot.version is None
    finally:
        await slot.stop()


async def _failed_slot_with_its_pipeline(tmp_path, settings, kind: str = "signal"):
    """A slot named ``settings.model`` failed at the start (its package missing, nothing installed), the pipeline of
    ``settings`` on it with its checks kept for a swap, as the agent's start leaves them; and a package of ``kind``
    (``make_package``'s) signed by a trusted key: (slot, package)."""
    from concurrent.futures import ThreadPoolExecutor

    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import FailedAtStart, ModelSlot
    from edge_agent.pipelines import Pipeline

    key, pub = make_keypair(tmp_path / "keys")
    package = make_package(tmp_path, kind=kind, key=key, **({"heatmap": False} if kind == "vision" else {}))
    slot = ModelSlot(
        settings.model,
        ModelConfig(package=str(tmp_path / "missing.edgepkg"), engine="onnxruntime"),
        tmp_path / "d",
        [str(pub)],
    )
    with pytest.raises(FailedAtStart):
        await slot.start()
    pipe = Pipeline(settings, slot, ThreadPoolExecutor(1), lambda res, item: None, on_event=lambda e: None)
    slot.swap_checks[pipe.name] = (
        pipe.refusal
    )  # (the agent's start: not prepared, its checks kept for a swap)
    return slot, package
