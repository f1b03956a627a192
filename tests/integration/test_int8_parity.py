"""An INT8 model that is wrong on the gateway's CPU never serves.

A two-form package (INT8 + its FP32 reference, manifest schema 2) is checked on the agent's own CPU:
every engine × form runs the golden inputs; the INT8 form must stay within its parity bounds of the
FP32 outputs, else the slot serves FP32, raises ``int8_deviation`` naming the CPU features and the
deviation, and shows it on ``/status``. Real ONNX Runtime and OpenVINO sessions throughout.

"Another CPU" is made two ways: a package whose INT8 form was quantized so that it deviates on
every CPU but carries the bounds measured on a correct INT8 form (as a package built where INT8
matched, installed where it does not), and — the real thing — the slot's check run under QEMU
emulating a Haswell (AVX2, no VNNI), whose u8×s8 kernels sum pairs of products in saturating 16-bit
integers: a model with full 8-bit weights built here (VNNI) is off there, 7-bit weights are not.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train import onnx_tools
from edge_agent.models.config import ModelConfig
from edge_agent.models.select import PREFER_MARGIN, PREFER_MIN_SAVING_MS
from edge_agent.models.slot import ModelSlot, SlotError
from model_packager import GoldenError, build_package, load_trusted_keys, read_manifest
from model_packager.cpu import cpu_flags
from tests.support.models import golden_inputs, make_keypair, make_vision_onnx, vision_spec
from tests.support.once import built_once

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


def _quantize(fp32: Path, out: Path, calib: np.ndarray, *, full_8bit_weights: bool = False) -> Path:
    return onnx_tools.quantize(fp32, out, calib, "image", seven_bit_weights=not full_8bit_weights)


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """FP32 model, a correct INT8 form, and an INT8 form calibrated on inputs 50x too small (it
    clips every real input: off on any CPU); made once per run (``built_once``), read by every test."""
    return built_once(tmp_path_factory, "int8-parity-forms", _forms)


def _forms(d: Path) -> dict:
    fp32 = make_vision_onnx(d / "fp32.onnx", width=SIZE, height=SIZE, seed=3)
    calib = golden_inputs("vision", n=48, width=SIZE, height=SIZE, seed=1)["image"]
    good = _quantize(fp32, d / "good.int8.onnx", calib)
    clipped = _quantize(fp32, d / "clipped.int8.onnx", calib * 0.02)
    key, pub = make_keypair(d / "keys")
    return {
        "dir": d,
        "fp32": fp32,
        "good": good,
        "clipped": clipped,
        "key": key,
        "pub": pub,
        "inputs": golden_inputs("vision", n=16, width=SIZE, height=SIZE, seed=2),
    }


def _spec(version: str, **extra) -> dict:
    return {
        **vision_spec("part-inspection", version, width=SIZE, height=SIZE, threshold=0.5),
        "quantization": {"scheme": onnx_tools.SCHEME},
        **extra,
    }


@pytest.fixture(scope="module")
def packages(tmp_path_factory, forms):
    """The two-form packages, built once per run: each test opens them in a folder of its own."""
    return built_once(tmp_path_factory, "int8-parity-packages", lambda out: _two_form_packages(out, forms))


def _two_form_packages(out: Path, forms: dict) -> dict:
    good = build_package(
        forms["good"],
        _spec("1.0.0"),
        out,
        signing_key=forms["key"],
        golden_inputs=forms["inputs"],
        openvino=True,
        fp32_model=forms["fp32"],
    )
    bounds = read_manifest(good).parity
    # the bounds a correct INT8 form met where the package was built; this INT8 form breaks them here
    off = build_package(
        forms["clipped"],
        _spec("1.1.0", parity={"output_atol": bounds.output_atol, "min_agreement": bounds.min_agreement}),
        out,
        signing_key=forms["key"],
        golden_inputs=forms["inputs"],
        openvino=True,
        fp32_model=forms["fp32"],
        check_parity_here=False,
    )
    return {"good": good, "off": off}


def _slot(tmp_path, forms, pkg, events=None, **cfg) -> ModelSlot:
    # the key loaded here: the slot installs in this process, with no install child (a new interpreter, ~0.5 CPU s
    # a start); what is judged here is the check of the forms, not the install (test_model_slot's)
    return ModelSlot(
        "vision",
        ModelConfig(package=str(pkg), **cfg),
        tmp_path / "agent",
        load_trusted_keys([forms["pub"]]),
        on_event=(events.append if events is not None else None),
    )


def _started_status(slot: ModelSlot) -> dict:
    """Start the slot (install, check and time its package), read its status, stop it."""

    async def run():
        await slot.start()
        st = slot.status()
        await slot.stop()
        return st

    return asyncio.run(run())


def test_a_two_form_package_records_its_parity_bounds_and_the_build_cpu(packages, forms):
    m = read_manifest(packages["good"])
    assert m.schema_version == 2 and m.has_fp32 and m.parity is not None
    assert set(m.parity.output_atol) == {"logits", "heatmap"}
    assert all(m.parity.output_atol[k] >= m.parity.measured[k] for k in m.parity.measured)
    assert {(e.engine, e.form) for e in m.engines} == {
        ("onnxruntime", "fp32"),
        ("openvino", "fp32"),
        ("onnxruntime", "int8"),
        ("openvino", "int8"),
    }
    assert all(e.cpu_flags == list(cpu_flags()) for e in m.engines)


def test_the_build_refuses_an_int8_form_that_breaks_its_bounds_on_the_build_machine(
    forms, packages, tmp_path
):
    bounds = read_manifest(packages["good"]).parity
    with pytest.raises(GoldenError, match="INT8 form breaks its parity bounds") as exc:
        build_package(
            forms["clipped"],
            _spec("1.2.0", parity={"output_atol": bounds.output_atol}),
            tmp_path,
            signing_key=forms["key"],
            golden_inputs=forms["inputs"],
            fp32_model=forms["fp32"],
        )
    assert exc.value.code == "int8_parity"


def test_engine_auto_measures_every_engine_and_form_and_serves_the_first_unless_another_is_clearly_faster(
    tmp_path, forms, packages
):
    events: list[dict] = []
    st = _started_status(_slot(tmp_path, forms, packages["good"], events))
    sel = st["selection"]
    trials = {(t["engine"], t["form"]): t for t in sel["trials"]}
    assert set(trials) == {
        ("onnxruntime", "int8"),
        ("onnxruntime", "fp32"),
        ("openvino", "int8"),
        ("openvino", "fp32"),
    }
    assert all(t["ok"] and t["p50_ms"] > 0 for t in trials.values())
    fastest = min(trials.values(), key=lambda t: t["p50_ms"])
    first = trials[("onnxruntime", "int8")]  # the order tried: ONNX Runtime, then OpenVINO; INT8, then FP32
    clearly = (
        fastest["p50_ms"] < (1 - PREFER_MARGIN) * first["p50_ms"]
        and first["p50_ms"] - fastest["p50_ms"] >= PREFER_MIN_SAVING_MS
    )
    want = fastest if clearly else first
    assert (st["engine"], st["form"]) == (want["engine"], want["form"]), sel
    assert sel["cpu_flags"] == list(cpu_flags())
    assert not [e for e in events if e["kind"] == "int8_deviation"]


def test_an_int8_form_off_on_this_cpu_never_serves_fp32_serves_and_the_cpu_is_named(
    tmp_path, forms, packages
):
    events: list[dict] = []
    slot = _slot(tmp_path, forms, packages["off"], events)

    async def run():
        await slot.start()
        from devices.base import Frame

        img = np.full((SIZE, SIZE, 3), 128, np.uint8)
        res = slot.infer(Frame("cam", 0, 0.0, img))
        st = slot.status()
        await slot.stop()
        return res, st

    res, st = asyncio.run(run())
    assert st["form"] == "fp32" and res.interpretation.verdict in ("OK", "NG")
    assert "INT8 off on this CPU" in st["selection"]["summary"]
    dev = [e for e in events if e["kind"] == "int8_deviation"]
    assert {e["engine"] for e in dev} == {"onnxruntime", "openvino"}
    for e in dev:
        assert e["cpu_flags"] == list(cpu_flags()) and e["serving"].startswith("fp32 on ")
        assert "deviates from FP32" in e["reason"] and e["deviation"] > 0
    assert st["counters"]["int8_parity_failures"] == 2


def test_form_int8_refuses_a_package_whose_int8_form_is_off_and_the_old_model_keeps_serving(
    tmp_path, forms, packages
):
    slot = _slot(tmp_path, forms, packages["good"], form="int8")

    async def run():
        await slot.start()
        outcome = await slot.swap(packages["off"])
        st = slot.status()
        await slot.stop()
        return outcome, st

    outcome, st = asyncio.run(run())
    assert not outcome.ok and outcome.stage == "golden" and "deviates from FP32" in outcome.reason
    assert st["version"] == "1.0.0" and st["form"] == "int8"
    with pytest.raises(SlotError, match="deviates from FP32"):
        asyncio.run(_slot(tmp_path / "b", forms, packages["off"], form="int8").start())


def test_a_one_form_schema_1_package_still_installs(tmp_path, forms):
    pkg = build_package(
        forms["fp32"],
        {**_spec("0.9.0"), "schema_version": 1, "quantization": {"scheme": "none"}},
        tmp_path,
        signing_key=forms["key"],
        golden_inputs=forms["inputs"],
    )
    assert read_manifest(pkg).schema_version == 1
    st = _started_status(_slot(tmp_path, forms, pkg, engine="onnxruntime"))
    assert st["version"] == "0.9.0" and st["form"] == "fp32" and len(st["selection"]["trials"]) == 1


# ---- a real CPU without VNNI, emulated ------------------------------------------------------------------

_CHECK_UNDER_QEMU = """
import json, os, sys
from pathlib import Path
from edge_agent.models import select as select_module
from edge_agent.models.config import ModelConfig
from edge_agent.models.select import NothingPasses, select
from model_packager import load_trusted_keys, open_package
from model_packager.cpu import cpu_flags
# what is judged here is which forms load and pass on the emulated CPU, not its speed: each passing candidate is
# run as the agent runs it 3 times and timed once, not 5 times or more (30-200 ms a run emulated: ~1.5 s of a
# core of the ~22 each emulated process took)
select_module.MAX_TIMED_RUNS = 1
out = {"cpu_flags": list(cpu_flags())}
for name, pkg in json.loads(sys.argv[1]).items():
    opened = open_package(pkg, Path(sys.argv[2]) / name, load_trusted_keys([sys.argv[3]]))
    try:
        out[name] = select(opened, ModelConfig(package=pkg, engine="auto")).to_dict()
    except NothingPasses as exc:  # the package is refused on this CPU: why
        out[name] = {"refused": str(exc)}
if len(sys.argv) > 4:  # test_sizing_cpu.py's record of an item's time, made by the agent's code on this CPU
    from edge_agent import sizing
    sizing.record(Path(sys.argv[4]), "part-inspection-1.0.0", None, "int8 on onnxruntime", 18.0)
print(json.dumps(out), flush=True)
# the answer is out: leave without the interpreter's teardown, where the engines' worker threads
# under the emulator have hung past the test's timeout once (the JSON already complete on stdout)
os._exit(0)
"""


def _saturating_model(path: Path) -> Path:
    """A first convolution whose weights are all near the largest magnitude with one sign per
    channel: on x86 without VNNI, pairs of u8 x s8 products of bright pixels overflow 16 bits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = np.abs(rng.normal(1.0, 0.05, (8, 3, 3, 3))).astype(np.float32)
    w1[4:] *= -1
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (1, 8, 1, 1)).astype(np.float32), "wh"),
        numpy_helper.from_array(rng.normal(0, 1.0, (8, 6)).astype(np.float32), "wd"),
        numpy_helper.from_array(np.zeros(6, np.float32), "bd"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["fl"]),
        helper.make_node("Gemm", ["fl", "wd", "bd"], ["logits"]),
        helper.make_node("Conv", ["r1", "wh"], ["heatmap"]),
    ]
    half = SIZE // 2
    graph = helper.make_graph(
        nodes,
        "saturating",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 6]),
            helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["batch", 1, half, half]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def saturating(tmp_path_factory, forms) -> dict[str, str]:
    """The saturating model's two packages (``_packages``), built once per run: each emulated CPU's test opens
    them in its own folder and none changes them."""
    return _saturating(tmp_path_factory, forms)


def _saturating(tmp_path_factory, forms: dict) -> dict[str, str]:
    return built_once(
        tmp_path_factory,
        "int8-parity-saturating",
        lambda d: _packages(d, forms, ("weights_8bit", "weights_7bit")),
    )


def haswell_selections(tmp_path_factory) -> dict:
    """The agent's selection under QEMU emulating a Haswell (AVX2, no VNNI) of every package a test holds to that
    CPU: this module's saturating packages (by their names) and test_int8_only_packages' INT8-only ones
    (``int8_only.<name>``), all in one emulated process made once per run (the start of a process under the
    emulator, its imports and its engines' set-up, was half of each test's time). Each package is selected on
    its own, as the agent does (``_CHECK_UNDER_QEMU``); none is changed."""
    from tests.integration.test_int8_only_packages import HASWELL_VARIANTS, int8_only_packages

    forms = built_once(tmp_path_factory, "int8-parity-forms", _forms)
    saturating = _saturating(tmp_path_factory, forms)

    def select_all(d: Path) -> dict:
        own = int8_only_packages(d, forms["key"], HASWELL_VARIANTS)
        pkgs = {**saturating, **{f"int8_only.{name}": pkg for name, pkg in own.items()}}
        return _select_under_qemu("Haswell", pkgs, d, forms)

    return built_once(tmp_path_factory, "qemu-haswell", select_all)


def nehalem_run(tmp_path_factory) -> tuple[dict, Path]:
    """The agent's selection of this module's saturating packages under QEMU emulating a Nehalem (SSE4.2, no
    AVX), and a sizing record the agent's code wrote in the same emulated process (test_sizing_cpu.py's; the
    start of a process under the emulator and its imports were most of that test's time): (the selections, the
    record's folder), made once per run. Neither is changed by a test."""
    forms = built_once(tmp_path_factory, "int8-parity-forms", _forms)
    saturating = _saturating(tmp_path_factory, forms)

    def run(d: Path) -> tuple[dict, Path]:
        folder = d / "sizing" / "models" / "vision"
        return _select_under_qemu("Nehalem", saturating, d, forms, sizing_folder=folder), folder

    return built_once(tmp_path_factory, "qemu-nehalem", run)


def _packages(tmp_path: Path, forms, weights: tuple[str, ...]) -> dict[str, str]:
    """Packages of the saturating model, INT8 with full 8-bit or 7-bit weights, FP32 beside (OpenVINO too)."""
    fp32 = _saturating_model(tmp_path / "sat.fp32.onnx")
    calib = golden_inputs("vision", n=48, width=SIZE, height=SIZE, seed=1)["image"]
    pkgs = {}
    for name in weights:
        int8 = _quantize(fp32, tmp_path / f"{name}.onnx", calib, full_8bit_weights=name == "weights_8bit")
        pkgs[name] = str(
            build_package(
                int8,
                _spec("1.0.0"),
                tmp_path / name,
                signing_key=forms["key"],
                golden_inputs=forms["inputs"],
                openvino=True,
                fp32_model=fp32,
            )
        )
    return pkgs


def _select_under_qemu(
    cpu: str, pkgs: dict[str, str], tmp_path: Path, forms, sizing_folder: Path | None = None
) -> dict:
    """What the agent's engine selection chooses, per package, on the CPU model qemu emulates (and, given
    ``sizing_folder``, a sizing record made there)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            "qemu-x86_64",
            "-cpu",
            cpu,
            sys.executable,
            "-c",
            _CHECK_UNDER_QEMU,
            json.dumps(pkgs),
            str(tmp_path / "open"),
            str(forms["pub"]),
            *([str(sizing_folder)] if sizing_folder is not None else []),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_NO_QEMU = pytest.mark.skipif(
    shutil.which("qemu-x86_64") is None, reason="qemu-user is not installed (make setup installs it)"
)


@_NO_QEMU
@pytest.mark.skipif(
    "avx512_vnni" not in cpu_flags() and "avx_vnni" not in cpu_flags(),
    reason="the packages must be built on a CPU with VNNI for the emulated AVX2 CPU to differ",
)
@pytest.mark.timeout(600)
def test_on_an_avx2_cpu_without_vnni_8bit_weights_fall_back_to_fp32_and_7bit_weights_serve_int8(
    tmp_path_factory,
):
    out = haswell_selections(tmp_path_factory)
    assert "avx2" in out["cpu_flags"] and "avx512_vnni" not in out["cpu_flags"]
    full = {(t["engine"], t["form"]): t for t in out["weights_8bit"]["trials"]}
    assert (
        not full[("openvino", "int8")]["ok"] and "deviates from FP32" in full[("openvino", "int8")]["reason"]
    )
    assert (out["weights_8bit"]["engine"], out["weights_8bit"]["form"]) != ("openvino", "int8")
    assert "INT8 off on this CPU" in out["weights_8bit"]["summary"]
    assert all(t["ok"] for t in out["weights_7bit"]["trials"]), out["weights_7bit"]


@_NO_QEMU
@pytest.mark.timeout(600)
def test_on_an_sse42_only_cpu_both_engines_load_and_each_form_is_judged_on_it(tmp_path_factory, saturating):
    """The fanless gateways many lines buy (Celeron J1900, J4125, Atom E3900) have SSE4.2 and no AVX.
    Both engines must load there (an instruction the CPU lacks would kill the agent, not fail a trial),
    and INT8 is judged against FP32 on that CPU: its saturating 16-bit pairs (OpenVINO's SSSE3 kernels)
    make the 8-bit weights deviate more than the 7-bit ones, which match ONNX Runtime's exact path."""
    pkgs = saturating
    out, _ = nehalem_run(tmp_path_factory)  # the emulated process test_sizing_cpu.py's record is made in too
    assert out["cpu_flags"] == ["sse4_2"]
    for name in pkgs:
        assert out[name]["cpu"] == "sse4.2", out[name]  # what /status and the fleet console show
        trials = {(t["engine"], t["form"]): t for t in out[name]["trials"]}
        assert set(trials) == {(e, f) for e in ("onnxruntime", "openvino") for f in ("int8", "fp32")}
        assert all(t["loaded"] for t in trials.values()), out[name]
        chosen = trials[(out[name]["engine"], out[name]["form"])]
        assert chosen["ok"] and chosen["agreement"] in (None, 1.0), out[name]
        assert out[name]["cpu_flags"] == ["sse4_2"]
    seven = {(t["engine"], t["form"]): t["deviation"] for t in out["weights_7bit"]["trials"]}
    eight = {(t["engine"], t["form"]): t["deviation"] for t in out["weights_8bit"]["trials"]}
    assert seven[("openvino", "int8")] == pytest.approx(seven[("onnxruntime", "int8")], rel=0.05)
    assert eight[("openvino", "int8")] > 2 * seven[("openvino", "int8")]


async def test_the_fleet_learns_which_form_an_agent_serves_and_why_with_its_cpu(tmp_path, forms, packages):
    """The agent's int8_deviation event reaches the cloud through the outbox, and its heartbeat
    labels name its CPU and the form each slot serves (the fleet console shows the labels)."""
    from cloud_trainer.fleet.service import FleetServer
    from edge_agent.agent import Agent
    from edge_agent.config import parse_config
    from simulators.camera import write_folder
    from tests.support.fleet import make_pki
    from tests.support.peers import free_port

    pki = make_pki(tmp_path / "pki", agents=("gw1",))
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    frames = write_folder(tmp_path / "frames", 4, seed=0, defect_rate=0.3, size=64)
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "site": "plant", "line": "l1", "data_dir": str(tmp_path / "gw1")},
            "trusted_keys": [str(forms["pub"])],
            "http": {"enabled": False},
            "sources": {"cam": {"type": "camera", "url": str(frames), "fps": 10, "loop": True}},
            "models": {"vision": {"package": str(packages["off"])}},
            "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
            "cloud": {
                "endpoint": f"127.0.0.1:{port}",
                "ca_file": str(pki / "ca.pem"),
                "cert_file": str(pki / "agents" / "gw1.pem"),
                "key_file": str(pki / "agents" / "gw1.key"),
                "heartbeat_s": 0.3,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 0.5,
            },
        }
    )
    agent = Agent(cfg)
    await agent.start()
    try:

        def deviation_events():
            return [
                r["payload"]
                for r in srv.store.records("gw1", kind="event")
                if (r["payload"] or {}).get("kind") == "int8_deviation"
            ]

        for _ in range(300):
            agents = srv.store.agents()
            if deviation_events() and agents and "form.vision" in agents[0]["labels"]:
                break
            await asyncio.sleep(0.1)
        events = deviation_events()
        assert events and all(e["cpu_flags"] == list(cpu_flags()) for e in events)
        assert {e["engine"] for e in events} >= {"onnxruntime"} and all(
            e["serving"].startswith("fp32") for e in events
        )
        labels = srv.store.agents()[0]["labels"]
        assert (
            labels["form.vision"].startswith("fp32 on ") and "INT8 off on this CPU" in labels["form.vision"]
        )
        assert labels["cpu_flags"] == " ".join(cpu_flags()) and labels["cpu"]
    finally:
        await agent.stop()
        await srv.stop()
