"""Nothing the project runs calls outside the plant. Both engines ship usage telemetry that is on unless
told otherwise: ONNX Runtime (1.32, Linux included) posts to Microsoft's collector and keeps a device id
and an event store under ``~/.cache/Microsoft``; OpenVINO's conversion API (``openvino.tools.ovc``, which
the agent, the packager and the trainer use to convert an ONNX model) posts to Google Analytics and keeps
a client id under ``~/intel`` unless a consent file there says no. Each test runs the project's code in a
child process whose home is a fresh folder, and checks what the telemetry would have left there.

OpenVINO's telemetry package is also shadowed by one that only notes that it was imported (and then
refuses, so the conversion API falls back to its stub and nothing is sent even on the former code)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.models import make_vision_onnx

ROOT = Path(__file__).resolve().parents[2]


def _has(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def _run(tmp_path: Path, script: str, *args: str, pythonpath: list[Path] | None = None, **env_extra: str):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join(str(p) for p in [*(pythonpath or []), ROOT]))
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return home


ORT_SCRIPT = """import sys
import {entry}
import numpy as np
import onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
for _ in range(3):
    s.run(None, {{s.get_inputs()[0].name: np.zeros((1, 3, 64, 64), np.float32)}})
"""


@pytest.mark.parametrize("entry", ["edge_agent", "model_packager", "cloud_trainer"])
def test_onnx_runtime_keeps_no_usage_telemetry_in_a_process_of_ours(tmp_path, entry):
    model = make_vision_onnx(tmp_path / "m.onnx")
    home = _run(tmp_path, ORT_SCRIPT.format(entry=entry), str(model))
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert not any("Microsoft" in p or "onnxruntime" in p for p in left), left


SENTINEL = """import os
with open(os.environ["TELEMETRY_MARK"], "a") as f:
    f.write(f"{os.getpid()}\\n")
raise ImportError("telemetry sentinel: this test's stand-in for openvino_telemetry")
"""

OPEN_MODELS = """import sys
from model_packager import runtimes
runtimes.ov_read(sys.argv[1], isolated=True)  # converted in the helper process
runtimes.ov_read(sys.argv[1])  # converted in this one
"""


def test_converting_a_model_never_imports_openvino_usage_telemetry(tmp_path):
    if not _has("openvino"):  # asked here, not when the module is collected by every worker (a child Python)
        pytest.skip("openvino not installed")
    shadow = tmp_path / "shadow"
    (shadow / "openvino_telemetry").mkdir(parents=True)
    (shadow / "openvino_telemetry" / "__init__.py").write_text(SENTINEL)
    mark = tmp_path / "imported"
    model = make_vision_onnx(tmp_path / "m.onnx")
    home = _run(tmp_path, OPEN_MODELS, str(model), pythonpath=[shadow], TELEMETRY_MARK=str(mark))
    pids = mark.read_text().split() if mark.exists() else []
    assert pids == [], f"the telemetry package was imported by {len(pids)} process(es)"
    assert not (home / "intel").exists()


BENCH_RUNNERS = """import sys
from pathlib import Path
from types import SimpleNamespace
from bench.openvino_bf16_bench import _runners
_runners(SimpleNamespace(model_path=Path(sys.argv[1]), fp32_model_path=None, openvino_xml=None), 1)
"""


def test_the_openvino_bench_never_imports_openvino_usage_telemetry(tmp_path):
    """bench/openvino_bf16_bench.py imported openvino itself, before the project's code had turned its usage
    telemetry off: a user's run of the bench posted OpenVINO's usage data (on the import of its conversion API
    and at each conversion)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed")
    shadow = tmp_path / "shadow"
    (shadow / "openvino_telemetry").mkdir(parents=True)
    (shadow / "openvino_telemetry" / "__init__.py").write_text(SENTINEL)
    mark = tmp_path / "imported"
    model = make_vision_onnx(tmp_path / "m.onnx", width=32, height=32)
    _run(tmp_path, BENCH_RUNNERS, str(model), pythonpath=[shadow], TELEMETRY_MARK=str(mark))
    pids = mark.read_text().split() if mark.exists() else []
    assert pids == [], f"the telemetry package was imported by {len(pids)} process(es)"


def test_the_test_processes_never_import_openvino_usage_telemetry():
    """A test that reads OpenVINO itself (``import openvino``, not through model_packager.runtimes; as
    test_golden_verdicts does when it is collected, in every worker) imported OpenVINO's conversion API with its
    usage telemetry on: every conversion after it in that process forked a child that looked up
    www.google-analytics.com (the tests' processes call nothing outside 127.0.0.1). tests/conftest.py keeps it
    off in every test process."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed")
    import tests.integration.test_golden_verdicts  # noqa: F401  (imports openvino when it is imported)

    assert "openvino" in sys.modules
    assert sys.modules.get("openvino_telemetry") is None, sys.modules["openvino_telemetry"]
