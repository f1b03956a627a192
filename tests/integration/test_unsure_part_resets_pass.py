"""A part the model looked at and returned UNSURE (a frame far outside its training inputs, a frozen camera, a sensor
fault) is not a passed part: the pipeline's pass signals write what an NG part leaves, as for a part no model judged.
Before, only actions naming UNSURE were handed it, so an ``on_change`` pass kept the last OK part's ``true`` and a
PLC reading the pass alone passed the UNSURE part; a pass on a low score was never even asked. A real asyncua PLC
and a real ONNX Runtime slot."""

from __future__ import annotations

import cv2
import numpy as np
from asyncua import ua

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from model_packager import build_package
from tests.support.models import golden_inputs, make_keypair, make_vision_onnx, vision_spec
from tests.support.plc import plc
from tests.support.waits import until


async def test_an_unsure_part_resets_the_pass_signals_a_plc_reads(tmp_path):
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
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), seen[3])  # OK
    cv2.imwrite(str(frames / "1.png"), np.full((64, 64, 3), 4, np.uint8))  # dark: UNSURE, judged by the model
    true = ua.Variant(True, ua.VariantType.Boolean)  # what an OK part left under the agent before
    passes = {
        "pass": {"mode": "on_change", "when": {"verdict": "OK"}},
        "lamp": {"mode": "level", "reset_value": False, "when": {"verdict": "OK"}},
        # a pass on a score below NG's (1.0): the UNSURE part scores below it too; not asked of such a part
        "low": {"mode": "on_change", "when": {"score": {"lt": 0.9}}},
    }
    async with plc({n: true for n in passes} | {"Reject": ua.Variant(False, ua.VariantType.Boolean)}) as p:
        cfg = parse_config(
            {
                "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
                "trusted_keys": [str(pub)],
                "sources": {
                    "plc": {
                        "type": "opcua",
                        "endpoint": f"opc.tcp://127.0.0.1:{p.port}/plc/",
                        "connect_timeout_s": 2,
                    },
                    "cam": {"type": "camera", "url": str(frames), "fps": 5},
                },
                "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
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
                },
                "pipelines": [
                    {"name": "inspect", "source": "cam", "model": "vision", "actions": ["reject", *passes]}
                ],
            },
            "agent.yaml",
            str(tmp_path),
        )
        agent = Agent(cfg)
        await agent.start()
        try:
            pipe = agent.pipelines[0]
            await until(lambda: pipe.stats.results >= 2, what="both parts judged")
            last = pipe.stats.last_result
            assert last.verdict == "UNSURE" and "model_error" not in last.outputs and last.score < 0.9, last
            # the OK part wrote each pass true; the UNSURE one after it tells the PLC it is not passed
            await until(
                lambda: _all_false(p, passes),
                what="each pass reset by the UNSURE part (it kept the OK part's true)",
            )
            assert (await p.read())[
                "Reject"
            ] is False  # not an NG part either: the reject gate left as it was
        finally:
            await agent.stop()


async def _all_false(p, names) -> bool:
    got = await p.read()
    return all(got[n] is False for n in names)
