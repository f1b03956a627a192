"""ModelSlot on real ONNX Runtime and OpenVINO sessions: parity, hot swap under load with every item
processed exactly once, refusal of bad packages, health-gated rollback, restart on the last good package,
and a kill -9 in the middle of a swap."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from devices.base import Frame
from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.slot import InferenceError, ModelSlot, SlotError
from edge_agent.types import Window
from model_packager import load_trusted_keys, open_package
from model_packager.golden import load_npz
from model_packager.preprocess import interpret
from tests.support.models import SIGNAL_WINDOW, make_keypair, make_package
from tests.support.peers import child_pids
from tests.support.waits import until


def frame(seq: int, seed: int = 0) -> Frame:
    img = np.random.default_rng(seed + seq).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return Frame("cam", seq, time.time(), img)


def window(seq: int) -> Window:
    x = np.sin(np.arange(SIGNAL_WINDOW) * 0.05 * (1 + seq % 3)) + np.random.default_rng(seq).normal(
        0, 0.1, SIGNAL_WINDOW
    )
    return Window("machine", seq, time.time(), time.time(), x)


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")
    return {
        "v1": make_package(tmp, kind="vision", version="1.0.0", key=key, seed=1, bias=6.0, openvino=True),
        "v2": make_package(tmp, kind="vision", version="1.1.0", key=key, seed=2, bias=6.0),
        "nan": make_package(tmp, kind="vision", version="1.2.0", key=key, nan=True),
        "allng": make_package(tmp, kind="vision", version="1.3.0", key=key, seed=1, bias=-20.0),
        "sig": make_package(tmp, kind="signal", version="1.0.0", key=key),
        "pub": pub,
        "tmp": tmp,
    }


def slot(
    tmp_path,
    pkgs,
    engine="onnxruntime",
    package="v1",
    openvino_cache_dir: str | None = None,
    in_process: bool = False,
    **health,
) -> ModelSlot:
    """``in_process``: the key loaded, so that each install runs in this process (``store.install``), for the
    tests whose subject is not the install (engines, the switch, health windows); else in a ``python -m
    edge_agent.models.install`` child, as an agent's (~0.55 CPU s a start or swap)."""
    cfg = ModelConfig(
        package=str(pkgs[package]),
        engine=engine,
        openvino_cache_dir=openvino_cache_dir,
        health=HealthConfig(**{"window_s": 1.0, "min_items": 20, **health}),
    )
    keys = load_trusted_keys([pkgs["pub"]]) if in_process else [pkgs["pub"]]
    return ModelSlot("vision", cfg, tmp_path / "data", keys)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
async def test_golden_verdicts_agree_on_both_engines(tmp_path, pkgs, engine):
    """(On OpenVINO with ``openvino_cache_dir``: see ``_the_cache_of_a_version_no_longer_installed_is_removed``.)"""
    cache = str(tmp_path / "ov-cache") if engine == "openvino" else None
    s = slot(tmp_path, pkgs, engine=engine, openvino_cache_dir=cache, in_process=True)
    await s.start()
    assert s.engine_name == engine
    opened = open_package(pkgs["v1"], tmp_path / "ref", load_trusted_keys([pkgs["pub"]]))
    inputs, expected = load_npz(opened.golden_inputs), load_npz(opened.golden_expected)
    a = s._active
    for i in range(inputs["image"].shape[0]):
        got = a.engine.run({"image": inputs["image"][i : i + 1]})
        want = {k: v[i : i + 1] for k, v in expected.items()}
        assert interpret(opened.manifest, got).verdict == interpret(opened.manifest, want).verdict
        np.testing.assert_allclose(
            got["logits"], want["logits"], atol=opened.manifest.golden.atol, rtol=opened.manifest.golden.rtol
        )
    inf = await asyncio.to_thread(s.infer, frame(0))
    assert (
        inf.interpretation.verdict in ("OK", "NG") and inf.engine == engine and inf.heatmap.shape == (32, 32)
    )
    await s.stop()
    if engine == "openvino":
        await _the_cache_of_a_version_no_longer_installed_is_removed(tmp_path, pkgs, a.opened.root.name)


async def _the_cache_of_a_version_no_longer_installed_is_removed(tmp_path, pkgs, v1_folder: str) -> None:
    """OpenVINO's compiled-model cache (``openvino_cache_dir``) kept a blob of every version ever served, in one
    folder, never removed: months of rollouts filled a small gateway's disk. Each installed version's cache is
    now a folder of its own, removed with the version."""
    cache = tmp_path / "ov-cache"
    assert list((cache / "vision" / v1_folder).glob("*.blob")), sorted(p.name for p in cache.rglob("*"))
    (cache / "4242.blob").write_bytes(b"a cache file of the former layout")
    cfg = ModelConfig(package=str(pkgs["v2"]), engine="onnxruntime", openvino_cache_dir=str(cache))
    # (keys loaded here: the install runs in this process, no child)
    s = ModelSlot("vision", cfg, tmp_path / "data", load_trusted_keys([pkgs["pub"]]))
    await s.start()  # the config pins 1.1.0 now: installed without a health window, 1.0.0 removed
    try:
        assert s.version == "1.1.0"
        assert not (tmp_path / "data" / "models" / "vision" / v1_folder).exists()
        assert not (cache / "vision" / v1_folder).exists()  # was kept for good
        assert not (cache / "4242.blob").exists()
    finally:
        await s.stop()


async def test_signal_package_infers_windows_and_rejects_wrong_length(tmp_path, pkgs):
    cfg = ModelConfig(package=str(pkgs["sig"]), engine="onnxruntime")
    # the key loaded: installed in this process (the subject is the signal engine's windows, not the install)
    s = ModelSlot("health", cfg, tmp_path / "data", load_trusted_keys([pkgs["pub"]]))
    await s.start()
    inf = s.infer(window(1))
    assert inf.interpretation.anomaly_score is not None and inf.interpretation.remaining_life is not None
    with pytest.raises(InferenceError, match="the model expects 2048"):
        s.infer(Window("machine", 2, 0, 0, np.zeros(100)))
    with pytest.raises(InferenceError, match="takes signal windows"):
        s.infer(frame(0))
    await s.stop()


async def test_swap_under_load_processes_every_item_exactly_once(tmp_path, pkgs):
    s = slot(tmp_path, pkgs, in_process=True)
    await s.start()
    done: list[tuple[int, str]] = []
    served = [0, 0]  # items each feeder has had answered
    stop = threading.Event()

    def feeder(start: int):
        seq = start
        while not stop.is_set():
            inf = s.infer(frame(seq))
            done.append((seq, inf.version))
            served[start] += 1
            seq += 2

    async def both_feeders_serve(items: int = 40) -> None:
        # items on the version in place before each swap and after the last one, from both threads (a fixed
        # 0.3 s before: ~600 items each on an idle machine, every one of them CPU beside the other workers)
        marks = list(served)
        await until(
            lambda: all(n >= m + items for n, m in zip(served, marks, strict=True)),
            timeout_s=60,
            what=f"{items} more items from each feeder",
            every_s=0.01,
        )

    threads = [threading.Thread(target=feeder, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    outcomes = []
    for target in ("v2", "v1", "v2"):
        await both_feeders_serve()
        outcomes.append(await s.swap(pkgs[target], watch=False))
    await both_feeders_serve()
    stop.set()
    for t in threads:
        t.join()
    assert all(o.ok for o in outcomes), outcomes
    seqs = sorted(q for q, _ in done)
    per_thread = [sorted(q for q in seqs if q % 2 == i) for i in range(2)]
    for i, qs in enumerate(per_thread):
        assert qs == list(range(i, qs[-1] + 1, 2)), "an item was lost or processed twice"
    versions = [v for _, v in sorted(done)]
    assert {"1.0.0", "1.1.0"} <= set(versions)
    assert s.counters["errors"] == 0
    await s.stop()


async def test_bad_signature_is_refused_and_the_old_model_keeps_serving(tmp_path, pkgs):
    s = slot(tmp_path, pkgs)
    await s.start()
    other_key, _ = make_keypair(tmp_path / "other")
    rogue = make_package(tmp_path / "rogue", kind="vision", version="9.0.0", key=other_key)
    out = await s.swap(rogue)
    assert not out.ok and out.stage == "verify" and "not among the trusted keys" in out.reason
    assert s.version == "1.0.0" and s.infer(frame(1)).version == "1.0.0"
    await s.stop()


async def test_nan_model_passes_golden_but_is_rolled_back_by_health(tmp_path, pkgs):
    s = slot(tmp_path, pkgs, in_process=True)
    events = []
    s.on_event = events.append
    await s.start()
    for i in range(30):
        s.infer(frame(i))
    out = await s.swap(pkgs["nan"])
    assert out.ok and s.version == "1.2.0"
    errors = 0
    for i in range(40):
        try:
            s.infer(frame(i))
        except InferenceError as exc:
            assert exc.reason == "nonfinite_output"
            errors += 1
        await asyncio.sleep(0.01)
    for _ in range(300):
        if s.version == "1.0.0":
            break
        await asyncio.sleep(0.1)
    assert s.version == "1.0.0"
    assert errors > 0
    assert s.last_outcome.stage == "rolled_back" and "NaN/Inf" in s.last_outcome.reason
    assert any(e["kind"] == "rolled_back" for e in events)
    assert s.store.current().startswith("part-inspection-1.0.0")
    await s.stop()


async def test_verdict_rate_shift_rolls_back(tmp_path, pkgs):
    s = slot(tmp_path, pkgs, max_verdict_rate_shift=0.3, in_process=True)
    await s.start()
    for i in range(40):
        s.infer(frame(i))
    base_ng = s._active.health.ng / s._active.health.n
    assert base_ng < 0.7
    assert (await s.swap(pkgs["allng"])).ok
    for i in range(40):
        assert s.infer(frame(i)).interpretation.verdict == "NG"
    for _ in range(300):
        if s.version == "1.0.0":
            break
        await asyncio.sleep(0.1)
    assert s.version == "1.0.0" and "NG rate moved" in s.last_outcome.reason
    await s.stop()


async def test_restart_runs_the_last_package_that_passed(tmp_path, pkgs):
    s = slot(tmp_path, pkgs)
    await s.start()
    assert (await s.swap(pkgs["v2"], watch=False)).ok
    await s.stop()
    # same config (which names v1), but fleet-followed: the store's current wins
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    s2 = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    await s2.start()
    assert s2.version == "1.1.0"
    await s2.stop()


async def test_no_package_at_all_is_a_clear_error(tmp_path, pkgs):
    s = ModelSlot("vision", ModelConfig(name="part-inspection"), tmp_path / "data", [pkgs["pub"]])
    with pytest.raises(SlotError, match="no package installed yet"):
        await s.start()


async def test_a_fleet_fed_slot_with_no_package_yet_says_why_whatever_its_name(tmp_path, pkgs):
    """A slot following the fleet with no package yet starts failed, waiting for the fleet's deployment; its reason
    was cut at the first ': ', which garbled it for a slot named with one ("b': no package yet: ...")."""
    from edge_agent.models.config import VersionPolicy
    from edge_agent.models.slot import FailedAtStart

    config = ModelConfig(name="part-inspection", version_policy=VersionPolicy.FOLLOW_FLEET)
    s = ModelSlot("a: b", config, tmp_path / "data", [pkgs["pub"]], fleet=True)
    with pytest.raises(FailedAtStart):
        await s.start()
    assert s.failed is not None and s.failed.startswith("no package yet: waiting for the fleet's"), s.failed
    assert s.waiting_for_fleet


async def test_a_waiting_slot_whose_first_package_is_refused_says_refused_and_why(tmp_path, pkgs):
    """A fleet-fed slot waiting for its first package, sent one that it refuses (here a version its config refuses):
    its reason said "waiting for the fleet's deployment" as if nothing had come (the refusal under ``last_swap``
    alone, and ``edge-agent status`` printed the former). It says the package was refused, at which stage and why;
    the slot still waits for the fleet's next deployment."""
    from edge_agent.models.config import VersionPolicy
    from edge_agent.models.slot import FailedAtStart

    config = ModelConfig(
        name="part-inspection", version_policy=VersionPolicy.FOLLOW_FLEET, refused_versions=["1.0.0"]
    )
    s = ModelSlot("vision", config, tmp_path / "data", load_trusted_keys([pkgs["pub"]]), fleet=True)
    with pytest.raises(FailedAtStart):
        await s.start()
    out = await s.swap(pkgs["v1"])
    assert not out.ok and s.waiting_for_fleet and s.state == "failed", out
    assert s.failed is not None, s.failed
    assert s.failed.startswith(
        "no package yet: the package sent to it (version 1.0.0) was refused at verify: "
    ), s.failed
    assert (
        "models.vision.refused_versions" in s.failed and "waiting for the fleet's next deployment" in s.failed
    )
    assert s.status()["failed"] == s.failed


KILL_SCRIPT = """
import asyncio, os, sys
from pathlib import Path
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
import edge_agent.models.store as store

data, v1, v2, pub = map(Path, sys.argv[1:5])
orig = store.ModelStore.set_current
async def main():
    s = ModelSlot("vision", ModelConfig(package=str(v1), engine="onnxruntime"), data, [pub])
    await s.start()
    def hang(self, folder, previous, **kw):   # extraction of v2 is done; die before it becomes current
        print("READY", flush=True)
        import time; time.sleep(60)
    store.ModelStore.set_current = hang
    await s.swap(v2)
asyncio.run(main())
"""


async def test_kill_9_mid_swap_never_makes_the_new_package_current(tmp_path, pkgs):
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(data), str(pkgs["v1"]), str(pkgs["v2"]), str(pkgs["pub"])],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line.strip() == "READY"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])
    await s.start()
    assert s.version == "1.0.0"
    assert s.infer(frame(0)).version == "1.0.0"
    await s.stop()


async def test_an_orderly_restart_inside_the_health_window_resumes_the_candidate_for_a_new_window(
    tmp_path, pkgs
):
    """A SIGTERM (a systemd restart for an OS update) inside the health window used to roll the candidate
    back at the next start: a good model lost to a reboot. The candidate now serves again and a whole new
    window decides, against the previous model's figures at the swap (kept on disk with the probation); one
    that fails it is rolled back to the previous model, loaded again for that."""
    s = slot(tmp_path, pkgs, window_s=60.0, min_items=10_000)  # the window cannot end during the test
    await s.start()
    for i in range(25):  # the serving model's NG rate: 0
        assert s.infer(frame(i)).interpretation.verdict == "OK"
    assert (await s.swap(pkgs["allng"])).ok and s.version == "1.3.0"
    assert s.store.state()["probation"]["candidate"].startswith("part-inspection-1.3.0")
    await s.stop()  # orderly, inside the window
    cfg = ModelConfig(
        package=str(pkgs["v1"]),
        engine="onnxruntime",
        version_policy="follow_fleet",
        health=HealthConfig(window_s=1.0, min_items=20),
    )
    events = []
    s2 = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]], on_event=events.append)
    await s2.start()
    assert s2.version == "1.3.0" and s2.state == "watching"  # was 1.0.0: rolled back by the restart
    assert s2.last_outcome.ok and "restarted inside the health window" in s2.last_outcome.reason
    assert events == []
    for i in range(25):  # the resumed window judges it: NG on every item, against 0 before the swap
        assert s2.infer(frame(i)).interpretation.verdict == "NG"
    for _ in range(600):  # the event closes the rollback (its state written)
        if events:
            break
        await asyncio.sleep(0.05)
    assert s2.version == "1.0.0" and s2.infer(frame(0)).version == "1.0.0"
    assert s2.last_outcome.stage == "rolled_back" and "NG rate moved" in s2.last_outcome.reason
    assert [e["kind"] for e in events] == ["rolled_back"]
    st = s2.store.state()
    assert st["probation"] is None and any(k.startswith("part-inspection-1.3.0") for k in st["failed"])
    await s2.stop()
    s3 = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]], on_event=events.append)
    await s3.start()  # reported once: a further restart has nothing more to say
    assert s3.version == "1.0.0" and s3.last_outcome is None and len(events) == 1
    await s3.stop()


async def test_a_candidate_that_passed_its_window_is_kept_across_a_restart(tmp_path, pkgs):
    s = slot(tmp_path, pkgs, window_s=0.3, min_items=5)
    await s.start()
    assert (await s.swap(pkgs["v2"])).ok
    for i in range(10):
        s.infer(frame(i))
        await asyncio.sleep(0.05)
    for _ in range(300):
        if s.state == "active":
            break
        await asyncio.sleep(0.1)
    assert s.state == "active" and s.store.state()["probation"] is None
    await s.stop()
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    s2 = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    await s2.start()
    assert s2.version == "1.1.0" and s2.last_outcome is None
    await s2.stop()


KILL_IN_WINDOW_SCRIPT = """
import asyncio, sys, time
from pathlib import Path
from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.slot import ModelSlot

data, v1, bad, pub = map(Path, sys.argv[1:5])
async def main():
    cfg = ModelConfig(package=str(v1), engine="onnxruntime", health=HealthConfig(window_s=120, min_items=100000))
    s = ModelSlot("vision", cfg, data, [pub])
    await s.start()
    assert (await s.swap(bad)).ok
    print("WATCHING", flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""


async def test_a_second_kill_9_inside_the_health_window_restores_the_previous_model(tmp_path, pkgs):
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILL_IN_WINDOW_SCRIPT,
            str(data),
            str(pkgs["v1"]),
            str(pkgs["nan"]),
            str(pkgs["pub"]),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line.strip() == "WATCHING"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cfg = ModelConfig(
        package=str(pkgs["v1"]),
        engine="onnxruntime",
        version_policy="follow_fleet",
        health=HealthConfig(window_s=120, min_items=100000),
    )
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])
    await s.start()  # one end without an orderly stop (a power cut): resumed, a new window decides
    assert s.version == "1.2.0" and s.state == "watching"
    assert s.store.state()["probation"]["unclean_ends"] == 1
    s._watch.cancel()  # ends again without stop(): what a second kill -9 leaves on disk
    events = []
    s2 = ModelSlot("vision", cfg, data, [pkgs["pub"]], on_event=events.append)
    await s2.start()  # a crash loop, which the candidate may cause: the previous model is restored
    assert s2.version == "1.0.0" and s2.last_outcome.stage == "rolled_back"
    assert "without an orderly stop 2 times" in s2.last_outcome.reason
    assert [e["kind"] for e in events] == ["rolled_back"]
    await s2.stop()


def test_a_slower_model_is_rolled_back_only_when_it_is_slower_by_a_margin_that_matters():
    """The demo's canary of a good model was rolled back for 'p50 inference latency 1.47 ms is 3.1x the
    previous 0.47 ms': another agent verifying its own model on the same 2 cores. A ratio of sub-ms
    numbers is noise; a model 3x slower by more than min_latency_increase_ms is not."""
    import collections
    from types import SimpleNamespace

    from edge_agent.models.slot import _Health

    def active(ms: float, n: int = 30):
        return SimpleNamespace(health=_Health(n=n, latencies=collections.deque([ms] * n)))

    s = SimpleNamespace(config=ModelConfig(package="x.fepkg"))
    verdict = ModelSlot.health_verdict
    assert verdict(s, active(1.47), active(0.47)) is None
    assert "is 4.0x the previous 5.00 ms" in verdict(s, active(20.0), active(5.0))
    strict = SimpleNamespace(
        config=ModelConfig(package="x.fepkg", health=HealthConfig(min_latency_increase_ms=0))
    )
    assert "3.1x" in verdict(strict, active(1.47), active(0.47))


async def test_stopping_mid_swap_stops_the_verifier_and_the_old_model_stays(tmp_path, pkgs):
    """A stop (SIGTERM) while the package's verifier child still works (here one stuck reading its input,
    as on a hung disk): the child is stopped with the slot, not left running for up to ten minutes (a
    process exit would wait for it), and the next start runs the model that had passed."""
    s = slot(tmp_path, pkgs)
    await s.start()
    before = child_pids()
    stuck = tmp_path / "stuck-1.1.0.edgepkg"
    os.mkfifo(stuck)  # the verifier blocks opening it until a writer comes
    swap = asyncio.create_task(s.swap(stuck))
    verifier: set[int] = set()
    try:
        deadline = time.monotonic() + 10
        while not (child_pids() - before) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        verifier = child_pids() - before
        assert verifier, "no verifier child started"
        await asyncio.sleep(0.2)
        await s.stop()
        deadline = time.monotonic() + 2
        while child_pids() & verifier and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not child_pids() & verifier, "the verifier outlived the slot's stop"
        async with asyncio.timeout(2):  # the swap's thread ends with its child: a refusal, nothing served
            outcome = await swap
        assert not outcome.ok
    finally:
        for pid in child_pids() & verifier:  # (former code) never leave the stuck child behind
            os.kill(pid, signal.SIGKILL)
        await asyncio.wait({swap}, timeout=5)
    s2 = slot(tmp_path, pkgs)
    await s2.start()
    assert s2.version == "1.0.0"
    await s2.stop()


async def test_replaced_and_rolled_back_packages_do_not_stay_on_disk(tmp_path, pkgs):
    """Months of deployments: a package replaced after its candidate's health window, and a candidate
    rolled back, are removed from the slot's store; only what it runs (and may return to) stays."""
    s = slot(tmp_path, pkgs, window_s=0.2, min_items=1)
    await s.start()
    store = tmp_path / "data" / "models" / "vision"

    async def through_window(pkg: str) -> None:
        assert (await s.swap(pkgs[pkg])).ok
        for i in range(200):
            with contextlib.suppress(InferenceError):
                await asyncio.to_thread(s.infer, frame(i))
            if s.state == "active":
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{pkg}: the health window did not end")

    def folders() -> list[str]:
        return sorted(p.name.rsplit("-", 1)[0] for p in store.iterdir() if p.is_dir() and p.name[0] != ".")

    await through_window("v2")  # kept: 1.0.0 is no longer needed
    assert folders() == ["part-inspection-1.1.0"]
    await through_window("nan")  # rolled back by its health check
    assert s.version == "1.1.0" and folders() == ["part-inspection-1.1.0"]
    await s.stop()


async def test_whoever_sees_a_rollback_switch_reads_its_outcome_not_the_one_before(
    tmp_path, pkgs, monkeypatch
):
    """The model manager reports a rollback when it sees the slot's version change, with the slot's last
    outcome as the reason. The rollback switched the model first and set its outcome only after writing
    state.json and pruning folders: a manager looking in between read the swap's "active" outcome, and after
    a restart took the rollback for an interrupted swap and dropped its report to the fleet."""
    s = slot(tmp_path, pkgs, window_s=60.0, min_items=10_000, in_process=True)
    await s.start()
    assert (await s.swap(pkgs["v2"])).ok and s.version == "1.1.0"
    gate = threading.Event()
    write = s.store.set_current

    def slow_disk(*a, **kw):  # state.json on a slow SD card, stalled until the test has looked
        gate.wait(600)  # released in finally; far past the poll: a switch made only after the write fails
        return write(*a, **kw)

    monkeypatch.setattr(s.store, "set_current", slow_disk)
    rolling = asyncio.ensure_future(s.rollback("health check failed: test", kind="health"))
    for _ in range(3000):
        if s.version == "1.0.0":
            break
        await asyncio.sleep(0.01)
    try:
        assert s.version == "1.0.0"
        assert s.last_outcome.stage == "rolled_back" and s.last_outcome.reason == "health check failed: test"
    finally:
        gate.set()
        await rolling
    await s.stop()


async def test_a_health_verdict_that_waits_for_a_swap_never_rolls_back_the_model_that_swap_made_active(
    tmp_path, pkgs
):
    """The health check's verdict on candidate 1.1.0 falls due while the next swap (1.3.0) holds the slot's lock:
    its rollback waited, then rolled back whatever was active, 1.3.0, with 1.1.0's reason, and made 1.1.0 current
    with no health window (the model that failed served on, unwatched; 1.3.0 recorded failed). The rollback is now
    on the candidate it judged: replaced meanwhile, it does nothing, and 1.3.0 serves under its own window."""
    # through the install child: its ~0.5 s holds the lock across a health tick (in process the swap can end before one)
    s = slot(tmp_path, pkgs, window_s=60.0, min_items=10_000)
    await s.start()
    assert (await s.swap(pkgs["v2"])).ok and s.state == "watching"
    y = s._active
    real = s.health_verdict
    judged: list[str] = []

    def verdict(new, old):
        if new is y and s._swap_lock.locked():  # due only while the next swap holds the lock
            judged.append(new.manifest.version)
            return "error rate 60.0% > 5.0%"
        return real(new, old)

    s.health_verdict = verdict  # type: ignore[method-assign]
    out = await s.swap(pkgs["allng"])
    assert out.ok and judged == ["1.1.0"]
    await asyncio.sleep(0.5)  # the waiting rollback has run by now (it is next on the lock)
    assert not s._swap_lock.locked()
    assert s.version == "1.3.0" and s.state == "watching"  # formerly 1.1.0, active, unwatched
    assert s.last_outcome is out and s.counters["rollbacks"] == 0
    st = s.store.state()
    assert (
        st["current"].startswith("part-inspection-1.3.0-") and st["probation"]["candidate"] == st["current"]
    )
    assert not any(k.startswith("part-inspection-1.3.0-") for k in st.get("failed") or {})
    await s.stop()


def _signed_again(pkgs, pkg: str, out: Path, golden: dict | None = None, files: dict | None = None) -> Path:
    """``pkgs[pkg]`` signed again by its key with its manifest's golden section updated by ``golden`` and the
    files in ``files`` (path -> bytes) put in place of its own, their sizes and digests in the manifest."""
    import hashlib

    import yaml

    from tests.unit.test_package_hostile import _manifest, _sig, _with

    doc = yaml.safe_load(_manifest(pkgs[pkg]))
    doc["golden"].update(golden or {})
    files = files or {}
    for f in doc["files"]:
        if f["path"] in files:
            f["size"], f["sha256"] = len(files[f["path"]]), hashlib.sha256(files[f["path"]]).hexdigest()
    new = yaml.safe_dump(doc, sort_keys=False).encode()
    signed = _with(pkgs[pkg], out, manifest=new, sig=_sig(new, pkgs["tmp"] / "keys" / "signing.key"))
    if not files:
        return signed
    import io
    import tarfile

    with tarfile.open(signed) as tar:
        ents = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for m, data in ents:
            data = files.get(m.name, data)
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return out


async def test_a_package_whose_golden_check_cannot_fail_is_refused_at_load_the_old_one_serving(
    tmp_path, pkgs
):
    """A build, and since last round a registry's publish, refuse golden tolerances that pass any output (rtol 1 or
    more, atol past 1000); readers take them, so such a package that an older registry published verified and was
    served, its golden check unable to fail. The agent refuses it at its load, saying why; the old model serves."""
    s = slot(tmp_path, pkgs, in_process=True)
    await s.start()
    wide = _signed_again(pkgs, "v2", tmp_path / "wide-1.1.0.edgepkg", golden={"rtol": 1e308})
    out = await s.swap(wide)
    assert not out.ok and out.stage == "golden", out
    assert "manifest golden.rtol is 1e+308: must be below 1 where a package is built" in out.reason
    assert "not served" in out.reason
    assert s.version == "1.0.0" and s.infer(frame(1)).version == "1.0.0"
    await s.stop()


async def test_a_package_installed_before_its_golden_tolerances_were_refused_is_served_at_a_start_said(
    tmp_path, pkgs, caplog
):
    """Such a package installed on a gateway before the agent refused it at its load was set aside at the agent's
    next start, its slot failed where nothing else was installed (the line it judged stopped at an upgrade). A start
    serves it as installed, with a WARNING naming the field at each load, counted; so does the way back to it from
    the version that replaced it (a fleet's halt: refused, the agent stayed on the halted version, going back for
    good); a swap to another such package stays refused."""
    import logging

    from edge_agent.models.store import ModelStore

    wide = _signed_again(pkgs, "v2", tmp_path / "wide-1.1.0.edgepkg", golden={"rtol": 1e308})
    trusted = load_trusted_keys([pkgs["pub"]])
    store = ModelStore(tmp_path / "data" / "models" / "vision")
    folder = store.install(wide, trusted).root
    store.set_current(folder, None)
    s = ModelSlot("vision", ModelConfig(package=str(wide), engine="onnxruntime"), tmp_path / "data", trusted)
    caplog.set_level(logging.WARNING, "edge_agent.models.slot")
    await s.start()
    try:
        assert s.version == "1.1.0" and s.infer(frame(1)).version == "1.1.0" and folder.is_dir()
        said = [r.getMessage() for r in caplog.records if "served as installed" in r.getMessage()]
        assert len(said) == 1 and "manifest golden.rtol is 1e+308: must be below 1" in said[0], said
        assert "a new install of it, or a swap to it but the way back to it" in said[0], said
        assert s.counters["golden_tolerance_unchecked"] == 1 and not s.counters["installed_rejected"]
        assert (await s.swap(pkgs["v1"], watch=False)).ok and s.version == "1.0.0"
        # its folder gone (a fleet's halt comes after the new version's window passed: the previous one pruned)
        store.set_current(s._require().opened.root, None)
        store.prune()
        assert not folder.exists()
        await s.stop()  # and the agent restarted since: the way back is known from its state.json
        cfg = ModelConfig(package=str(wide), engine="onnxruntime", version_policy="follow_fleet")
        s = ModelSlot("vision", cfg, tmp_path / "data", trusted)
        await s.start()
        assert s.version == "1.0.0"
        back = await s.swap(wide, watch=False)  # the way back to the package it served: served, said again
        assert back.ok and s.infer(frame(1)).version == "1.1.0", back
        assert s.counters["golden_tolerance_unchecked"] == 1 and "failed" not in store.state()
        other = _signed_again(pkgs, "v1", tmp_path / "wide-1.0.0.edgepkg", golden={"rtol": 2.0})
        refused = await s.swap(other, watch=False)  # not the package it served: refused at its load
        assert not refused.ok and "golden.rtol is 2" in refused.reason and s.version == "1.1.0", refused
    finally:
        await s.stop()


async def test_with_engine_auto_a_package_whose_openvino_ir_does_not_load_is_served_on_onnx_runtime_said(
    tmp_path, pkgs, caplog
):
    """With ``engine: auto`` a package whose OpenVINO IR this OpenVINO cannot read (its weights file cut short) was
    served on ONNX Runtime, which passes its golden check, and nothing said the IR was broken. It still serves
    (the model checked on this CPU), with a WARNING naming the IR at each load, counted (``engines_not_loaded``),
    and the selection's summary saying it."""
    import logging

    from model_packager.package import OV_BIN

    bin_cut = _signed_again(pkgs, "v1", tmp_path / "bin-cut-1.0.0.edgepkg", files={OV_BIN: b"\0" * 16})
    s = ModelSlot(
        "vision",
        ModelConfig(package=str(bin_cut), engine="auto"),
        tmp_path / "data",
        load_trusted_keys([pkgs["pub"]]),
    )
    caplog.set_level(logging.WARNING, "edge_agent.models.slot")
    await s.start()
    try:
        assert s.engine_name == "onnxruntime" and s.infer(frame(1)).version == "1.0.0"
        said = [r.getMessage() for r in caplog.records if "did not load" in r.getMessage()]
        assert len(said) == 1, said
        assert "openvino: the package's OpenVINO IR (openvino/model.xml) did not load" in said[0], said
        assert "Incorrect weights in bin file" in said[0] and said[0].endswith(" on onnxruntime"), said
        assert s.counters["engines_not_loaded"] == 1
        assert "not loaded here: openvino: the package's OpenVINO IR" in s.status()["selection"]["summary"]
    finally:
        await s.stop()
