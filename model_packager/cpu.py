"""The CPU features that decide how INT8 (and bf16, f16) arithmetic comes out on this machine.

INT8 kernels are chosen per CPU: x86 with AVX-512 VNNI or AVX-VNNI accumulates u8×s8 products in
32 bits; x86 with only AVX2 (or AVX-512 without VNNI) uses ``vpmaddubsw``, which adds pairs of
products in *saturating 16-bit* sums, so a model quantized with full 8-bit weights can clip there;
ARM uses its own dot-product instructions. Packages record the build machine's features and agents
report their own beside every INT8 parity result, so a deviation can be traced to its CPU.
"""

from __future__ import annotations

import functools
import importlib
import platform
from pathlib import Path

# the features that change which INT8/bf16/f16 kernels run (x86 names first, then ARM's): AMX's tiles and AVX-512
# FP16 (Sapphire Rapids and later) are other kernels of ONNX Runtime's and OpenVINO's than VNNI's, and another
# reduced precision OpenVINO may run float layers at (f16, as ARM's asimdhp)
RELEVANT = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "sve",
    "bf16",
)


# numpy's runtime CPUID detection -> our names; it sees the CPU the process runs on (under an emulator
# or a VM that masks features, /proc/cpuinfo may still describe the host)
_NUMPY_NAMES = {
    "SSE42": "sse4_2",
    "AVX": "avx",
    "AVX2": "avx2",
    "FMA3": "fma",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX512VL": "avx512vl",
    "AVX512VNNI": "avx512_vnni",
    "AVX512BF16": "avx512_bf16",
    "AVX512FP16": "avx512_fp16",
    "ASIMD": "asimd",
    "ASIMDDP": "asimddp",
    "SVE": "sve",
}


def _proc_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())  # every core lists the same features
    return set()


def _numpy_flags() -> dict[str, bool] | None:
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy < 2
        try:
            feats = importlib.import_module(module).__cpu_features__
            break
        except (
            ImportError,
            AttributeError,
        ):  # what `from module import __cpu_features__` raises as ImportError
            continue
    else:
        return None
    return {ours: bool(feats.get(theirs)) for theirs, ours in _NUMPY_NAMES.items() if theirs in feats}


@functools.cache
def cpu_flags() -> tuple[str, ...]:
    """This machine's relevant CPU features, in the order of ``RELEVANT`` (empty where unknown).

    The features numpy detects with CPUID at run time win; /proc/cpuinfo adds the ones numpy does
    not check (AVX-VNNI, AMX, i8mm) only where it agrees with numpy on the rest, i.e. where it
    describes the CPU this process actually runs on."""
    proc = _proc_flags()
    seen = _numpy_flags()
    if seen is None:
        found = proc
    else:
        found = {k for k, v in seen.items() if v}
        if all((k in proc) == v for k, v in seen.items() if k in ("avx2", "avx512f", "avx512_vnni", "asimd")):
            found |= proc - set(seen)
    return tuple(f for f in RELEVANT if f in found)


def int8_path(flags: tuple[str, ...] | list[str] | None = None) -> str:
    """A one-word description of the INT8 arithmetic these features give."""
    f = set(cpu_flags() if flags is None else flags)
    if "amx_int8" in f:
        return "amx"
    if "avx512_vnni" in f or "avx_vnni" in f:
        return "vnni"
    if "asimddp" in f or "i8mm" in f:
        return "arm-dotprod"
    if "avx2" in f:
        return "avx2-16bit-pairs"  # the saturating path
    if "asimd" in f:
        return "arm-neon"
    if "sse4_2" in f:  # the fanless gateways' Celerons and Atoms: no AVX (OpenVINO's SSSE3 kernels saturate)
        return "sse4.2"
    return platform.machine() or "unknown"


def describe() -> str:
    flags = cpu_flags()
    return f"{platform.machine()} {int8_path(flags)} [{' '.join(flags) or 'no flags read'}]"
