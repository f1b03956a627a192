"""Nothing the project runs calls outside the plant: OpenVINO's conversion API (``openvino.tools.ovc``,
which the agent, the packager and the trainer use to convert an ONNX model) sends usage telemetry to
Google Analytics unless the user's home holds a consent file saying no (the ``openvino_telemetry``
package installed with the wheel is opt-out). The model-opening code keeps it from being imported, in
its own process and in the conversion helper it starts.

The real telemetry package is shadowed by one that only notes that it was imported (and then refuses,
so the conversion API falls back to its stub and nothing is sent even on the former code)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.models import make_vision_onnx

pytestmark = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import openvino"], capture_output=True).returncode != 0,
    reason="openvino not installed",
)

ROOT = Path(__file__).resolve().parents[2]

SENTINEL = """import os
with open(os.environ["TELEMETRY_MARK"], "a") as f:
    f.write(f"{os.getpid()}\\n")
raise ImportError("telemetry sentinel: this test's stand-in for openvino_telemetry")
"""

OPEN_MODELS = """import sys
from model_packager import runtimes
runtimes.ov_read(sys.argv[1], isolated=True)  # converted in the helper process
runtimes.ov_read(sys.argv[1])  # converted in this one
print("converted")
"""


def test_converting_a_model_never_imports_openvino_usage_telemetry(tmp_path):
    shadow = tmp_path / "shadow"
    (shadow / "openvino_telemetry").mkdir(parents=True)
    (shadow / "openvino_telemetry" / "__init__.py").write_text(SENTINEL)
    mark = tmp_path / "imported"
    model = make_vision_onnx(tmp_path / "m.onnx")
    env = dict(os.environ)
    env.pop("CI", None)  # the telemetry stays quiet in CI by itself: this is a gateway, not a CI job
    env["PYTHONPATH"] = os.pathsep.join([str(shadow), str(ROOT)])
    env["TELEMETRY_MARK"] = str(mark)
    out = subprocess.run(
        [sys.executable, "-c", OPEN_MODELS, str(model)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "converted" in out.stdout
    pids = mark.read_text().split() if mark.exists() else []
    assert pids == [], f"the telemetry package was imported by {len(pids)} process(es)"
