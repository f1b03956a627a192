"""Benches open a model on OpenVINO the way the agent does (``model_packager.runtimes.ov_compile`` / ``ov_read``),
so that what they time and compare is what the agent runs. ``Core.compile_model`` (or ``read_model``) of an ONNX
file by path reads it with OpenVINO's ONNX frontend, which can round an INT8 graph otherwise than the
``convert_model`` a package's IR is made with and the agent converts a package's ONNX with (heat-map outputs 0.39
apart on one model), and on an AMX Xeon at bf16 refused to compile a QDQ vision model the agent serves there."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_no_bench_opens_a_model_file_on_openvino_by_its_path():
    by_path = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
                continue
            first = node.args[0]
            if node.func.attr == "read_model" or (
                node.func.attr == "compile_model"
                and (
                    isinstance(first, ast.Constant | ast.JoinedStr)
                    or (isinstance(first, ast.Call) and ast.unparse(first.func) in ("str", "os.fspath"))
                )
            ):
                by_path.append(
                    f"{path.name}:{node.lineno}: {ast.unparse(node.func)}({ast.unparse(first)}, ...)"
                )
    assert not by_path, f"opened by path, not with model_packager.runtimes.ov_compile: {by_path}"
