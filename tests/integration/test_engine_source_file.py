"""An engine names the package file it opened (``Engine.source``), so that a bench opening the model apart (to time
the bare inference beside the agent's) opens the same file: worked out again from the engine's form, an FP32-only
package's (no FP32 form beside model.onnx, the engine's form "fp32") raised ``EngineError: package ... carries no
FP32 form`` on either engine, although the engine served it."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.engines import create_engine
from edge_agent.models.config import ModelConfig
from model_packager import build_package
from model_packager.keys import load_trusted_keys
from model_packager.package import open_package
from model_packager.runtimes import ort_session, ov_compile
from tests.support.models import golden_inputs, make_keypair, make_vision_onnx, vision_spec

S = 32


@pytest.fixture(scope="module")
def fp32_only(tmp_path_factory):  # a package of one form, FP32, with no IR
    tmp_path = tmp_path_factory.mktemp("fp32-only")
    key, pub = make_keypair(tmp_path / "keys")
    fp32 = make_vision_onnx(tmp_path / "fp32.onnx", width=S, height=S, seed=3)
    inputs = golden_inputs("vision", n=2, width=S, height=S, seed=2)
    spec = vision_spec("p", "1.0.0", width=S, height=S, threshold=0.5)
    pkg = build_package(fp32, spec, tmp_path / "pkgs", signing_key=key, golden_inputs=inputs)
    return pkg, open_package(pkg, tmp_path / "open", load_trusted_keys([pub])), inputs


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_bench_opening_the_engines_file_apart_runs_what_an_fp32_only_package_serves(fp32_only, engine):
    pytest.importorskip(engine)
    pkg, opened, inputs = fp32_only
    cfg = ModelConfig(package=str(pkg), engine=engine, openvino_f32=True)
    served = create_engine(engine, opened, cfg, None)
    assert served.form == "fp32"
    x = {"image": inputs["image"][:1]}
    want = served.run(x)["logits"]
    if engine == "onnxruntime":  # as bench/inference_224_bench.py opens it
        got = ort_session(served.source, threads=1, single_stream=True).run(["logits"], x)[0]
    else:
        got = next(
            iter(
                ov_compile(served.source, {"INFERENCE_PRECISION_HINT": "f32"})
                .create_infer_request()
                .infer(x)
                .values()
            )
        )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
