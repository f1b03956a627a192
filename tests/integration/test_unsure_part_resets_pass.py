"""A part the model looked at and returned UNSURE (a frame far outside its training inputs, a frozen camera, a sensor
fault) is not a passed part: the pipeline's pass signals write what an NG part leaves, as for a part no model judged.
Before, only actions naming UNSURE were handed it, so an ``on_change`` pass kept the last OK part's ``true`` and a
PLC reading the pass alone passed the UNSURE part; a pass on a low score was never even asked. A pass is left to an
action on UNSURE only where both write one node for certain: a node named by URI and one by index, one identifier in
two namespaces, are two (the pass was left to a divert on the other, and kept true). A window is no part: a
windowed (condition-monitoring) pipeline's UNSURE window (the machine stopped, a sensor fault) leaves its "healthy"
output as the last judged window left it, as docs/maintenance.md says; reset, it dropped at every stop of the
machine. A pass written false by an action on UNSURE (one window a press stroke) is written again by the next OK
one, and so is a part's pass written false by one on UNSURE: an OK part, then an UNSURE one, then an OK one dropped
in a watched folder. One real asyncua PLC, one agent with a real ONNX Runtime slot for each pipeline."""

from __future__ import annotations

import cv2
import numpy as np
from asyncua import ua

from bench._bearing_signals import Machine
from devices.base import ConnectionState
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from model_packager import build_package
from tests.support.models import (
    build_package_for_tests,
    golden_inputs,
    make_keypair,
    make_signal_onnx,
    make_vision_onnx,
    signal_spec,
    vision_spec,
)
from tests.support.plc import plc_server
from tests.support.waits import until


async def test_an_unsure_part_resets_the_pass_signals_and_an_unsure_window_leaves_the_healthy_output(
    tmp_path,
):
    key, pub = make_keypair(tmp_path / "keys")
    # every trusted part OK (its "ok" class held up); its training inputs: noise, so a dark frame is UNSURE
    model = make_vision_onnx(tmp_path / "m" / "model.onnx", seed=1, bias=8.0)
    seen = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(8)]
    pkg = build_package(
        model,
        vision_spec(),
        tmp_path / "out",
        signing_key=key,
        golden_inputs=golden_inputs("vision"),
        input_images=seen,
    )
    # a maintenance model whose threshold no window of the test machine reaches: its windows OK
    health = build_package_for_tests(
        make_signal_onnx(tmp_path / "s" / "model.onnx"),
        signal_spec(anomaly_threshold=1e6),
        tmp_path / "out-signal",
        key,
        golden_inputs("signal"),
        False,
    )
    frames = tmp_path / "frames"  # a drop folder: the parts in the order the test drops them
    frames.mkdir()
    true = ua.Variant(True, ua.VariantType.Boolean)  # what an OK part left under the agent before
    passes = {
        "pass": {"mode": "on_change", "when": {"verdict": "OK"}},
        "lamp": {"mode": "level", "reset_value": False, "when": {"verdict": "OK"}},
        # a pass on a score below NG's (1.0): the UNSURE part scores below it too; not asked of such a part
        "low": {"mode": "on_change", "when": {"score": {"lt": 0.9}}},
    }
    false = ua.Variant(False, ua.VariantType.Boolean)
    running = Machine(32, rpm=2400.0).window()
    nodes = {n: true for n in passes} | {
        "Reject": false,
        "Healthy": false,
        "NotJudged": false,
        "Stroke": false,
        "Part": false,
        "Narrow": true,
        "Vibration": ua.Variant(running.tolist(), ua.VariantType.Double),  # a running machine: judged OK
    }

    async def build(srv, idx, obj) -> dict:
        # "Gate" in the PLC's namespace and in another one (urn:other): two nodes of one identifier
        made = {
            n: await obj.add_variable(ua.NodeId(n, idx), n, v) for n, v in (nodes | {"Gate": true}).items()
        }
        other[0] = await srv.register_namespace("urn:other")
        made["OtherGate"] = await obj.add_variable(ua.NodeId("Gate", other[0]), "OtherGate", false)
        return made

    other = [0]
    async with plc_server(build) as p:
        cfg = parse_config(
            {
                "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
                "http": {"enabled": False},  # (its default port 8090 is one for every test process)
                "trusted_keys": [str(pub)],
                "sources": {
                    "plc": {
                        "type": "opcua",
                        "endpoint": f"opc.tcp://127.0.0.1:{p.port}/plc/",
                        "connect_timeout_s": 2,
                        "nodes": [{"node_id": p.node_id("Vibration")}],
                    },
                    "cam": {"type": "camera", "url": str(frames), "watch": True, "settle_ms": 50},
                },
                "models": {
                    "vision": {"package": str(pkg), "engine": "onnxruntime"},
                    "health": {"package": str(health), "engine": "onnxruntime"},
                },
                "actions": {
                    "reject": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("Reject"),
                        "when": {"verdict": "NG"},
                    },
                    **{
                        n: {"type": "opcua_write", "source": "plc", "node_id": p.node_id(n), **a}
                        for n, a in passes.items()
                    },
                    # a divert to manual check on UNSURE (urn:other's Gate), and a pass on the PLC's Gate spelt by URI:
                    # one identifier, two nodes; the pass was left to the divert as if it wrote its node, kept true
                    "divert": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": f"ns={other[0]};s=Gate",
                        "mode": "on_change",
                        "when": {"verdict": "UNSURE"},
                    },
                    "gate": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": "nsu=urn:plc;s=Gate",
                        "mode": "on_change",
                        "when": {"verdict": "OK"},
                    },
                    # the machine's "healthy" output (a lamp, a start interlock), and a lamp on a window not judged
                    "healthy": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("Healthy"),
                        "mode": "on_change",
                        "when": {"verdict": "OK"},
                    },
                    "not_judged": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("NotJudged"),
                        "mode": "on_change",
                        "when": {"verdict": "UNSURE"},
                    },
                    # a part's pass, written false for a part not judged (a level output on UNSURE, one node)
                    "part": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("Part"),
                        "mode": "on_change",
                        "when": {"verdict": "OK"},
                    },
                    "part_unsure": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("Part"),
                        "value": False,
                        "mode": "level",
                        "when": {"verdict": "UNSURE"},
                    },
                    # a pass beside a level false on UNSURE parts of a high score: the dark part is none of those,
                    # written nothing by it (the pass was left to it all the same, and kept the OK part's true)
                    "narrow": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("Narrow"),
                        "mode": "on_change",
                        "when": {"verdict": "OK"},
                    },
                    "narrow_unsure": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("Narrow"),
                        "value": False,
                        "mode": "level",
                        "when": {"verdict": "UNSURE", "score": {"gte": 0.95}},
                    },
                    # a pass per stroke, written false for a stroke not judged as docs/actions.md says
                    "stroke": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("Stroke"),
                        "mode": "on_change",
                        "when": {"verdict": "OK"},
                    },
                    "stroke_unsure": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("Stroke"),
                        "value": False,
                        "mode": "level",
                        "when": {"verdict": "UNSURE"},
                    },
                },
                "pipelines": [
                    {
                        "name": "inspect",
                        "source": "cam",
                        "model": "vision",
                        "actions": [
                            "reject",
                            *passes,
                            "divert",
                            "gate",
                            "part",
                            "part_unsure",
                            "narrow",
                            "narrow_unsure",
                        ],
                    },
                    {
                        "name": "pump",
                        "source": "plc",
                        "model": "health",
                        "window": {"waveform": "Vibration"},
                        "actions": ["healthy", "not_judged", "stroke", "stroke_unsure"],
                    },
                ],
            },
            "agent.yaml",
            str(tmp_path),
        )
        agent = Agent(cfg)
        await agent.start()
        try:
            pipe, pump = agent.pipelines
            # connected once the (empty) folder is listed: a file there then is left alone
            cam = agent.sources["cam"]
            await until(lambda: cam.state is ConnectionState.CONNECTED, what="the drop folder watched")
            cv2.imwrite(str(frames / "0.png"), seen[3])  # OK
            await until(lambda: pipe.stats.results >= 1, what="the OK part judged")
            await until(lambda: _all(p, ["Part"], True), what="the OK part passed")
            # dark: UNSURE, judged by the model
            cv2.imwrite(str(frames / "1.png"), np.full((64, 64, 3), 4, np.uint8))
            await until(lambda: pipe.stats.results >= 2, what="both parts judged")
            last = pipe.stats.last_result
            assert last.verdict == "UNSURE" and "model_error" not in last.outputs and last.score < 0.9, last
            # the OK part wrote each pass true; the UNSURE one after it tells the PLC it is not passed
            await until(
                lambda: _all(p, [*passes, "Gate", "Narrow"], False),
                what="each pass reset by the UNSURE part (it kept the OK part's true)",
            )
            await until(lambda: _all(p, ["OtherGate"], True), what="the UNSURE part diverted")
            await until(lambda: _all(p, ["Part"], False), what="the UNSURE part not passed")
            assert (await p.read())[
                "Reject"
            ] is False  # not an NG part either: the reject gate left as it was

            await until(
                lambda: _all(p, ["Healthy"], True), what="the running machine's window judged healthy"
            )
            assert pump.stats.last_result.verdict == "OK", pump.stats.last_result
            # the sensor reads nothing (a stopped machine without a speed tag reads as flat): UNSURE, not judged
            await p.nodes["Vibration"].write_value(ua.Variant([0.0] * len(running), ua.VariantType.Double))
            await until(lambda: _all(p, ["NotJudged"], True), what="the window not judged told to the PLC")
            await until(lambda: not agent.actions._pending, what="every write made")
            assert pump.stats.last_result.verdict == "UNSURE", pump.stats.last_result
            # the machine's healthy output stays as the last judged window left it (it dropped to false)
            assert (await p.read())["Healthy"] is True
            assert agent.actions.stats["healthy"]["ok"] == 1, agent.actions.stats["healthy"]
            assert (await p.read())["Stroke"] is False  # the stroke not judged: not passed
            # the machine runs again: its OK window passes the stroke again (the pass kept its last OK window's
            # level under the false written over it, and wrote nothing: the PLC read false for every OK stroke)
            await p.nodes["Vibration"].write_value(ua.Variant(running.tolist(), ua.VariantType.Double))
            await until(lambda: _all(p, ["Stroke"], True), what="the next OK stroke passed")
            assert (await p.read())["Healthy"] is True
            # the next OK part is passed again: its pass kept the first OK part's level under the false written over
            # it, and wrote nothing (the PLC read false for every OK part after one UNSURE, until an NG one)
            cv2.imwrite(str(frames / "2.png"), seen[5])
            await until(lambda: pipe.stats.results >= 3, what="the next part judged")
            assert pipe.stats.last_result.verdict == "OK", pipe.stats.last_result
            await until(
                lambda: _all(p, [*passes, "Gate", "Part", "Narrow"], True), what="the next OK part passed"
            )
        finally:
            await agent.stop()


async def _all(p, names, value: bool) -> bool:
    got = await p.read()
    return all(got[n] is value for n in names)
