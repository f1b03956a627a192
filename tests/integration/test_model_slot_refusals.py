"""A swap that raises anything (not only ``PackageError``) is a refusal: the slot goes back to the state it
was in, the old model keeps serving on a real ONNX Runtime session, and the outcome names the stage and
reason in one printable line. Packages are verified in a child process (``edge_agent.models.install``): a
child that dies is such a refusal; every answer of the child is one printable line; a first start installs
every slot's package in one child started early, whose results the slots take."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from devices.base import Frame
from edge_agent.config import parse_config
from edge_agent.models import install
from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.slot import ModelSlot
from model_packager import load_trusted_keys
from tests.support.models import make_keypair, make_package
from tests.support.waits import until
from tests.unit.test_package_hostile import _sig


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")
    return {
        "v1": make_package(tmp, kind="vision", version="1.0.0", key=key, bias=6.0),
        "v2": make_package(tmp, kind="vision", version="1.1.0", key=key, seed=2, bias=6.0),
        "v3": make_package(tmp, kind="vision", version="1.2.0", key=key, seed=3, bias=6.0),
        "signal": make_package(tmp, kind="signal", key=key),
        "key": key,
        "pub": pub,
    }


def _regolden(pkg, out, key):
    """The same package, signed by the trusted key, whose golden inputs have the wrong shape for the model:
    the engine itself raises during the smoke test."""
    with tarfile.open(pkg) as tar:
        ents = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    buf = io.BytesIO()
    np.savez(buf, image=np.zeros((2, 5, 7), np.float32))
    ents["golden/inputs.npz"] = buf.getvalue()
    doc = yaml.safe_load(ents["manifest.yaml"])
    for f in doc["files"]:
        if f["path"] == "golden/inputs.npz":
            f["size"], f["sha256"] = len(buf.getvalue()), hashlib.sha256(buf.getvalue()).hexdigest()
    ents["manifest.yaml"] = yaml.safe_dump(doc, sort_keys=False).encode()
    ents["manifest.sig"] = _sig(ents["manifest.yaml"], key)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


async def test_an_engine_exception_in_the_smoke_test_is_a_refusal_and_the_old_model_serves(tmp_path, pkgs):
    cfg = ModelConfig(
        package=str(pkgs["v1"]), engine="onnxruntime", health=HealthConfig(window_s=1.0, min_items=5)
    )
    events = []
    s = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]], on_event=events.append)
    await s.start()
    bad = _regolden(pkgs["v2"], tmp_path / "part-inspection-1.1.0.edgepkg", pkgs["key"])
    outcome = await s.swap(bad)
    assert not outcome.ok and outcome.stage == "golden", outcome
    assert outcome.reason.isprintable()
    assert s.state == "active" and s.version == "1.0.0"
    assert events[-1]["kind"] == "swap_refused"
    img = np.zeros((64, 64, 3), np.uint8)
    assert s.infer(Frame("cam", 1, time.time(), img)).version == "1.0.0"
    ok = await s.swap(pkgs["v2"], watch=False)  # the slot is not wedged: a good package still swaps in
    assert ok.ok and s.version == "1.1.0"
    await s.stop()


async def test_an_unexpected_exception_while_verifying_is_a_refusal(tmp_path, pkgs, monkeypatch):
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime")
    s = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    await s.start()

    def boom(*a, **kw):
        raise RecursionError("maximum recursion depth exceeded\x1b[2K")

    monkeypatch.setattr(s, "_install", boom)  # (the install itself runs in a child: see below)
    outcome = await s.swap(pkgs["v2"])
    assert not outcome.ok and outcome.stage == "verify" and "RecursionError" in outcome.reason
    assert "\x1b" not in outcome.reason
    assert s.state == "active" and s.version == "1.0.0"
    await s.stop()


async def test_a_verifier_that_dies_is_a_refusal_and_the_old_model_keeps_serving(tmp_path, pkgs, monkeypatch):
    s = ModelSlot(
        "vision", ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime"), tmp_path / "data", [pkgs["pub"]]
    )
    await s.start()
    crash = tmp_path / "crash.sh"  # stands for a parser bug that kills its process (a C extension's segfault)
    crash.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crash.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crash))
    outcome = await s.swap(pkgs["v2"])
    monkeypatch.undo()
    assert not outcome.ok and outcome.stage == "verify", outcome
    assert "killed by signal 11" in outcome.reason and outcome.reason.isprintable()
    assert s.state == "active" and s.version == "1.0.0"
    assert s.infer(Frame("cam", 1, time.time(), np.zeros((64, 64, 3), np.uint8))).version == "1.0.0"
    assert not list((tmp_path / "data" / "models" / "vision").glob(".*.part"))
    assert (await s.swap(pkgs["v2"], watch=False)).ok and s.version == "1.1.0"  # the next child installs it
    await s.stop()


def test_the_child_answers_each_package_in_one_printable_line(tmp_path, pkgs, capsys, monkeypatch):
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key\n")
    assert (
        install.main(
            [
                "--key",
                str(bad_key),
                str(tmp_path / "a"),
                str(pkgs["v1"]),
                str(tmp_path / "b"),
                str(pkgs["signal"]),
            ]
        )
        == 1
    )
    replies = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["ok"], r["error_type"], r["code"]) for r in replies] == [
        (False, "SignatureError", "bad_key")
    ] * 2
    assert "bad.pub" in replies[0]["error"]

    from edge_agent.models.store import ModelStore

    def boom(*a, **kw):
        raise RecursionError("maximum recursion depth exceeded\x1b[2K")

    monkeypatch.setattr(ModelStore, "install", boom)
    assert install.main(["--key", str(pkgs["pub"]), str(tmp_path / "c"), str(pkgs["v1"])]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\\x1b" in out and "\x1b" not in out
    r = json.loads(out)
    assert (r["error_type"], r["code"]) == ("PackageError", "verifier_failed") and "RecursionError" in r[
        "error"
    ]


async def test_a_first_start_installs_every_package_in_one_early_child(tmp_path, pkgs, monkeypatch):
    cfg = parse_config(
        {
            "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(pkgs["pub"])],
            "http": {"enabled": False},
            "sources": {"s": {"type": "camera", "url": "frames/"}},
            "models": {
                "vision": {"package": str(pkgs["v1"]), "engine": "onnxruntime"},
                "health": {"package": str(pkgs["signal"]), "engine": "onnxruntime"},
            },
            "pipelines": [{"name": "p", "source": "s", "model": "vision"}],
        }
    )
    started = []
    job_init = install.InstallJob.__init__

    def counting(self, items, *a, **kw):
        started.append(len(items))
        job_init(self, items, *a, **kw)

    monkeypatch.setattr(install.InstallJob, "__init__", counting)
    stale = cfg.data_dir / "models" / "vision" / ".crashed-earlier.part"  # a kill -9 mid-extraction
    stale.mkdir(parents=True)
    assert install.prefetch(cfg, fork=False) is not None  # (the fork: below, and every `edge-agent run`)
    assert not stale.exists() and install.prefetching(cfg.data_dir / "models" / "vision")
    keys = [str(cfg.path(k)) for k in cfg.trusted_keys]  # as the agent hands them to its slots
    slots = [
        ModelSlot(n, mc.model_copy(update={"package": str(cfg.path(mc.package))}), cfg.data_dir, keys)
        for n, mc in cfg.models.items()
    ]
    for s in slots:
        await s.start()
    assert started == [2], "one child for both packages, none by the slots"
    assert not install.prefetching(
        cfg.data_dir / "models" / "vision"
    )  # (its .part folders: the slot's again)
    assert [s.version for s in slots] == ["1.0.0", "1.0.0"] and all(s.state == "active" for s in slots)
    for s in slots:
        await s.stop()
    assert install.prefetch(cfg) is None and started == [2]  # installed: a restart starts no child


_FORKS = """
import json, os, signal, sys
from pathlib import Path
from edge_agent.models import install
from model_packager import PackageError
a, b, c, v1, sig, v2, pub = map(Path, sys.argv[1:])
assert install._may_fork()
job = install.InstallJob([(a, v1), (b, sig)], [pub], fork=True)
print(json.dumps([isinstance(job._proc, install._Forked), job.reply(a, v1)["folder"], job.reply(b, sig)["folder"]]))
install.main = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # e.g. out of memory
job = install.InstallJob([(c, v2)], [pub], fork=True)
try:
    job.reply(c, v2)
except PackageError as e:
    print(json.dumps([e.code, str(e)]))
import grpc
grpc.insecure_channel("127.0.0.1:9").close()  # gRPC's own threads: forking this process is not safe any more
print(json.dumps(install._may_fork()))
"""


def test_a_forked_child_installs_and_one_that_dies_is_a_refusal(tmp_path, pkgs):
    # In a new interpreter: a fork of this one (a test process, that may hold an earlier test's gRPC threads) may
    # abort in the child (and the forked child is made only for a process without threads).
    stores = [tmp_path / n for n in "abc"]
    argv = [*stores, pkgs["v1"], pkgs["signal"], pkgs["v2"], pkgs["pub"]]
    out = subprocess.run(
        [sys.executable, "-c", _FORKS, *map(str, argv)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    forked, killed, may_fork_with_grpc = map(json.loads, out.stdout.splitlines())
    assert forked == [
        True,
        "part-inspection-1.0.0-" + _digest12(pkgs["v1"]),
        "machine-health-1.0.0-" + _digest12(pkgs["signal"]),
    ]
    assert killed[0] == "verifier_failed" and "killed by signal 9" in killed[1], killed
    assert not list(stores[2].glob("*"))
    assert (
        may_fork_with_grpc is False
    )  # a first start after gRPC started (never in `edge-agent run`): a new interpreter


def _digest12(pkg) -> str:
    return hashlib.sha256(pkg.read_bytes()).hexdigest()[:12]


_STARTS_AN_INSTALL = """
import sys, time
from pathlib import Path
from edge_agent.models.install import InstallJob
store, pkg, key = map(Path, sys.argv[1:4])
job = InstallJob([(store, pkg)], [key])  # a new interpreter, as for every swap
print(job._proc.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # ended, not yet reaped by its new parent
    except FileNotFoundError:
        return True


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:  # closed meanwhile
            pass
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_an_install_child_ends_with_the_agent_that_started_it(tmp_path, pkgs):
    """An agent killed mid-install (kill -9, the out-of-memory killer) left its child installing: it wrote into
    the slot's store after the restarted agent had started (a .part folder of up to the package's size, which
    only the next start removed, or a folder nothing named). The child is caught mid-install, hashing a package
    of 1 GiB (a sparse file: it takes no disk), and stopped there (SIGSTOP) so that it cannot end on its own;
    then the process that started it is killed."""
    held = tmp_path / "part-inspection-1.1.0.edgepkg"
    with open(held, "wb") as f:
        f.truncate(1 << 30)  # (within a package's bounds: hashed whole, then refused as no archive)
    agent = subprocess.Popen(
        [sys.executable, "-c", _STARTS_AN_INSTALL, str(tmp_path / "store"), str(held), str(pkgs["pub"])],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    child = int(agent.stdout.readline())
    try:
        await until(
            lambda: _has_open(child, held), every_s=0.005, what="the install child reading its package"
        )
        os.kill(child, signal.SIGSTOP)  # held mid-install for as long as the test needs
        assert _has_open(child, held), "the child ended its read before it was stopped"
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        await until(
            lambda: _gone(child), what="the install child ended with its agent"
        )  # formerly held for good
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
        agent.stdout.close()


@pytest.mark.parametrize("where", ["key-file", "in-key-folder"])
async def test_a_trusted_key_that_is_a_named_pipe_is_refused_naming_it_not_waited_on(tmp_path, pkgs, where):
    """A trusted key file that is a named pipe (a key folder's ``*.pub`` made one, or the key file replaced after
    the config was checked) held the install child in its read until the 600-s bound of every install: each
    swap waited ten minutes to be refused as 'took longer than 600 s'. It is refused at once, the pipe named."""
    if where == "key-file":
        pipe = tmp_path / "fleet.pub"
        keys = [pipe]
    else:
        folder = tmp_path / "keys"
        folder.mkdir()
        (folder / "fleet.pub").write_bytes(Path(pkgs["pub"]).read_bytes())
        pipe = folder / "held.pub"
        keys = [folder]
    os.mkfifo(pipe, 0o600)
    s = ModelSlot(
        "vision", ModelConfig(name="part-inspection", engine="onnxruntime"), tmp_path / "data", keys
    )
    try:
        async with asyncio.timeout(30):  # formerly 600 s: the child waited on the pipe for a writer
            outcome = await s.swap(pkgs["v2"])
    finally:
        await s.stop()
    assert not outcome.ok and outcome.stage == "verify", outcome
    assert f"trusted key {pipe}: " in outcome.reason and "a named pipe, not a regular file" in outcome.reason


async def _swap_from_v1(tmp_path, pkgs, pkg, caplog, before=None) -> tuple[Any, list]:
    """The outcome and events of a swap to ``pkg`` from 1.0.0 (``before``: called once 1.0.0 serves), the slot's
    warnings in ``caplog``."""
    events: list = []
    s = ModelSlot(
        "vision",
        ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime"),
        tmp_path / "data",
        [pkgs["pub"]],
        on_event=events.append,
    )
    await s.start()
    try:
        if before is not None:
            before()
        with caplog.at_level(logging.WARNING, logger="edge_agent.models.slot"):
            outcome = await s.swap(pkg)
    finally:
        await s.stop()
    return outcome, events


async def test_a_package_refused_before_its_version_is_known_is_named_in_the_log_and_event(
    tmp_path, pkgs, caplog
):
    """A package refused at verify (here signed by a key the agent does not trust) has no verified version: the
    log said 'swap to None refused at verify', and the swap_refused event named nothing refused. Both name the
    package file now, with why."""
    other, _ = make_keypair(tmp_path / "other-keys")
    untrusted = make_package(tmp_path / "untrusted", kind="vision", version="1.1.0", key=other, seed=2)
    outcome, events = await _swap_from_v1(tmp_path, pkgs, untrusted, caplog)
    assert not outcome.ok and outcome.stage == "verify" and outcome.to_version is None, outcome
    said = [r.getMessage() for r in caplog.records if "refused at verify" in r.getMessage()]
    assert len(said) == 1, said
    assert "None" not in said[0], said  # formerly "slot vision: swap to None refused at verify: ..."
    assert said[0].startswith(
        f"slot vision: package {untrusted.name} (version unknown: not verified) refused"
    ), said
    assert said[0].endswith(f"{outcome.reason}; 1.0.0 keeps serving"), said
    refused = [e for e in events if e["kind"] == "swap_refused"]
    assert len(refused) == 1 and refused[0]["package"] == str(untrusted), refused


@pytest.mark.parametrize("made", ["named-pipe", "link-to-dev-zero"])
async def test_a_package_that_is_a_named_pipe_or_a_device_is_refused_at_once_naming_it(tmp_path, pkgs, made):
    """The install child hashed the package with a plain read to its end before anything else: a package path made
    a named pipe waited for a writer, and one linked to /dev/zero was hashed without end, each install held until
    its 600-s bound ('took longer than 600 s'). It is refused at once, naming what it is."""
    pkg = tmp_path / "part-inspection-1.1.0.edgepkg"
    if made == "named-pipe":
        os.mkfifo(pkg, 0o600)
    else:
        pkg.symlink_to("/dev/zero")
    s = ModelSlot(
        "vision", ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime"), tmp_path / "data", [pkgs["pub"]]
    )
    await s.start()
    try:
        async with asyncio.timeout(30):  # formerly 600 s
            outcome = await s.swap(pkg)
    finally:
        await s.stop()
    what = "a named pipe" if made == "named-pipe" else "a device"
    assert not outcome.ok and outcome.stage == "verify" and outcome.to_version is None, outcome
    assert outcome.reason == f"package {pkg.name}: cannot read it ({what}, not a file)", outcome


async def test_a_package_refused_after_it_was_verified_is_named_by_its_version(
    tmp_path, pkgs, caplog, monkeypatch
):
    """An engine raising something unexpected while the verified package loads (its smoke test) is refused by the
    catch-all: that said 'package part-inspection-1.1.0.edgepkg (version unknown: not verified)', its event had
    no to_version, and the folder verified stayed installed unmarked (the newest a start on a lost state.json
    served). Its line and event name 1.1.0, and it is marked refused and removed as at the other stages."""

    def bad_alloc(*a, **kw):
        raise MemoryError("std::bad_alloc")

    def engines_fail() -> None:
        monkeypatch.setattr("edge_agent.models.slot.select", bad_alloc)

    outcome, events = await _swap_from_v1(tmp_path, pkgs, pkgs["v2"], caplog, before=engines_fail)
    monkeypatch.undo()
    assert not outcome.ok and outcome.stage == "golden" and outcome.to_version == "1.1.0", outcome
    said = [r.getMessage() for r in caplog.records if "refused at golden" in r.getMessage()]
    assert said == [
        "slot vision: swap to 1.1.0 refused at golden: unexpected MemoryError: std::bad_alloc; 1.0.0 keeps serving"
    ], said
    refused = [e for e in events if e["kind"] == "swap_refused"]
    assert len(refused) == 1 and refused[0]["to_version"] == "1.1.0", refused
    assert refused[0]["package"] == str(pkgs["v2"]), refused
    store = tmp_path / "data" / "models" / "vision"
    assert not list(store.glob("part-inspection-1.1.0-*")), sorted(p.name for p in store.iterdir())
    st = json.loads((store / "state.json").read_text())
    assert any(k.startswith("part-inspection-1.1.0-") for k in st.get("failed", {})), st


async def test_a_swap_refused_by_its_catch_all_removes_nothing_of_the_install_waiting_for_it(
    tmp_path, pkgs, monkeypatch
):
    """1.1.0's load raises something unexpected (refused by the swap's catch-all) while the next desired state,
    1.2.0, waits for the slot. The catch-all marked and pruned after the swap's lock was let go: 1.2.0's install
    went on meanwhile, and the prune removed its folder (verified and in place, named by no state yet) while it
    loaded: 1.2.0 served from a folder no longer on disk, or failed its load. The catch-all now runs under the
    lock: 1.2.0 installs after it, and serves from its folder."""
    from edge_agent.models import slot as slot_mod
    from protocols.events import EventKind

    events: list = []
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime")
    s = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]], on_event=events.append)
    await s.start()
    real, calls = slot_mod.select, []

    def first_fails(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("std::bad_alloc")
        return real(*a, **kw)

    monkeypatch.setattr(slot_mod, "select", first_fails)
    started = sum(e.kind is EventKind.SWAP_STARTED for e in events)
    marking = s.store.mark_failed

    def slow_disk(folder, reason):  # the mark takes its time: 1.2.0's install, if let in, is in place first
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            let_in = sum(e.kind is EventKind.SWAP_STARTED for e in events) - started >= 2
            if let_in and list(s.store.root.glob("part-inspection-1.2.0-*")):
                break
            if not let_in and time.monotonic() - t0 > 0.5:  # (1.2.0 waits for the lock)
                break
            time.sleep(0.02)
        marking(folder, reason)

    s.store.mark_failed = slow_disk
    try:
        first = asyncio.create_task(s.swap(pkgs["v2"], watch=False))
        await until(lambda: sum(e.kind is EventKind.SWAP_STARTED for e in events) > started, timeout_s=30)
        second = asyncio.create_task(s.swap(pkgs["v3"], watch=False))
        async with asyncio.timeout(60):
            refused, swapped = await asyncio.gather(first, second)
        assert not refused.ok and "MemoryError" in refused.reason, refused
        assert swapped.ok and s.version == "1.2.0", swapped
        current = s.store.current()
        assert current.startswith("part-inspection-1.2.0-") and (s.store.root / current).is_dir(), sorted(
            p.name for p in s.store.root.iterdir()
        )
        assert not list(s.store.root.glob("part-inspection-1.1.0-*"))
    finally:
        await s.stop()


async def test_a_refused_package_that_is_the_served_or_previous_folder_leaves_both_unmarked(tmp_path, pkgs):
    """The fleet's desired state naming one version while its registry sends another's file (here the version the
    slot serves, then the one before it): refused, and neither folder marked failed or rolled back. Marked, the
    model serving was passed over by a start on a lost state.json, which went back to the older version."""
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    keys = load_trusted_keys([pkgs["pub"]])  # verified in this process
    s = ModelSlot("vision", cfg, tmp_path / "data", keys)
    await s.start()
    assert (await s.swap(pkgs["v2"], watch=False)).ok
    for pkg in (pkgs["v2"], pkgs["v1"]):
        outcome = await s.swap(pkg, expect=("part-inspection", "1.2.0"))
        assert not outcome.ok and outcome.stage == "verify" and "1.2.0" in outcome.reason, outcome
    st = s.store.state()
    assert not st.get("failed"), st
    assert not s.store.rolled_back(st["current"]) and not s.store.rolled_back(st["previous"])
    assert s.version == "1.1.0"
    # what a start on a state.json a power cut emptied serves: the version serving now
    assert s.store.newest_installed() == st["current"]
    # state.json emptied (or unreadable) while the slot runs: its state is known all the same, and written again; a
    # refusal then (of the serving package's file, of a new one) marked the serving folder and pruned every folder
    for pkg in (pkgs["v2"], pkgs["v3"]):
        s.store.state_path.write_bytes(b"")
        assert not (await s.swap(pkg, expect=("part-inspection", "9.0.0"))).ok
        assert not s.store.rolled_back(st["current"]) and s.store.newest_installed() == st["current"]
    on_disk = json.loads(s.store.state_path.read_text())
    assert (on_disk["current"], on_disk["previous"]) == (st["current"], st["previous"]), on_disk
    # a state.json restored while the slot runs, naming a folder not installed here (another gateway's backup): taken
    # as it was, the next prune (a refusal's) removed every installed folder. Refused, the slot's own state written
    # again; and a restore naming only the older folder (taken as it is) no longer has the serving folder pruned
    installed = {st["current"], st["previous"]}
    for restore in ({"current": "part-inspection-2.0.0-0123456789ab"}, {"current": st["previous"]}):
        s.store.state_path.write_text(json.dumps(restore))
        assert not (await s.swap(pkgs["v3"], expect=("part-inspection", "9.0.0"))).ok
        assert installed <= {p.name for p in s.store.root.iterdir()}, restore
    assert s.version == "1.1.0" and s.store.newest_installed() == st["current"]
    await s.stop()
