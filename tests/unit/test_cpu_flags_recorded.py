"""The CPU features a package records for its build machine, an agent reports beside every INT8 parity result, and
every bench writes beside its numbers (``model_packager.cpu.cpu_flags``) name each feature this CPU has that picks
another INT8, bf16 or f16 kernel: AMX's tiles and AVX-512 FP16 (Sapphire Rapids and later) as well as VNNI.
Before, a build or a bench on such a CPU recorded neither AVX-512 FP16 nor AMX-FP16, so two machines that run
other kernels read as the same CPU."""

from __future__ import annotations

import pytest

from model_packager.cpu import _proc_flags, cpu_flags

# the x86 features that choose ONNX Runtime's and OpenVINO's (oneDNN's) INT8 and reduced-precision kernels
KERNEL_FEATURES = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
)


def test_every_kernel_choosing_feature_of_this_cpu_is_recorded():
    have = _proc_flags()
    recorded = set(cpu_flags())
    if "avx512f" in have and "avx512f" not in recorded:
        pytest.skip(
            "/proc/cpuinfo describes another CPU than numpy sees (an emulator): numpy's features are recorded"
        )
    missing = [f for f in KERNEL_FEATURES if f in have and f not in recorded]
    assert not missing, f"this CPU has {missing}, the recorded flags {sorted(recorded)} do not say so"


def test_every_bench_writes_the_whole_flag_list_read_by_the_shared_helper():
    # the overload, MQTT and saturation benches cut the list at 80 or 120 characters in their markdown, so the
    # features at its end (AVX-512 FP16, AMX) were missing from bench/RESULTS.md for the very CPUs they tell
    # apart; and a bench reading /proc/cpuinfo's flags itself records other names than packages and agents do
    import ast
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench"
    cut, own = [], []
    for path in sorted(bench.glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source, str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Slice)
                and "flags" in ast.unparse(node.value)
            ):
                cut.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.strip().lower()
                if (text.startswith("flags") and "/proc/cpuinfo" in source) or text == "__cpu_features__":
                    own.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not cut, f"CPU flags cut short (record model_packager.cpu.cpu_flags() whole): {cut}"
    assert not own, f"CPU flags read by the bench itself (use model_packager.cpu.cpu_flags()): {own}"
