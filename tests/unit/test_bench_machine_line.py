"""Every bench records the machine it ran on (``bench/_machine.py``): its CPU model, the CPU flags that decide
which INT8/bf16 kernels run, cores and versions, in its JSON (``"machine"``) and markdown (``Machine: ...``),
or printed first when it only prints. A result that holds on one CPU and not another is a defect, and a
bench run alone (``python -m bench.<name>``) is otherwise read without the line ``python -m bench`` puts
at the top of RESULTS.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"

# benches that may record the machine otherwise, each with why; each must still record the CPU flags
EXEMPT = {
    # changed by the vision work in progress; they record model_packager.cpu.cpu_flags() in their JSON and
    # markdown themselves: move them to bench._machine when that work lands
    "vision_own_images_bench.py": "records cpu_flags() itself (vision work in progress)",
    "vision_seeds_bench.py": "records cpu_flags() itself (vision work in progress)",
}


def _calls_machine_helper(tree: ast.AST) -> bool:
    names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "bench._machine"
        for alias in node.names
        if alias.name in ("machine", "machine_line")
    }
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
        for node in ast.walk(tree)
    )


def test_every_bench_records_the_machine_it_ran_on():
    benches = sorted(BENCH.glob("*_bench.py"))
    assert len(benches) > 40  # the glob found the benches
    missing = [
        p.name
        for p in benches
        if p.name not in EXEMPT and not _calls_machine_helper(ast.parse(p.read_text(), str(p)))
    ]
    assert not missing, (
        "these benches record no machine line: call bench._machine.machine() into the JSON and "
        f"machine_line() into the markdown (or print it first), or exempt them here with a reason: {missing}"
    )


def test_the_exempt_benches_exist_and_still_record_the_cpu_flags():
    for name in EXEMPT:
        text = (BENCH / name).read_text()
        assert "cpu_flags()" in text, name
        assert not _calls_machine_helper(ast.parse(text)), (
            f"{name} calls bench._machine now: drop its exemption"
        )


def test_the_machine_line_names_the_cpu_flags_and_imports_no_runtime():
    """Cheap inside a bench's own process: no ONNX Runtime, OpenVINO, torch or OpenCV imported for it
    (a footprint or start-up bench would measure them)."""
    code = (
        "import sys; from bench._machine import machine_line; print(machine_line()); "
        "print(sorted(m for m in ('torch', 'openvino', 'onnxruntime', 'cv2', 'grpc', 'asyncua') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    from model_packager.cpu import cpu_flags

    assert out[0].startswith("Machine: ")
    assert f"(CPU flags: {' '.join(cpu_flags()) or 'not read'})" in out[0]
    assert " cores, " in out[0] and "numpy " in out[0]
    assert out[1] == "[]"
