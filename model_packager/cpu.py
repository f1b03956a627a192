"""The CPU features that decide how INT8 (and bf16) arithmetic comes out on this machine.

INT8 kernels are chosen per CPU: x86 with AVX-512 VNNI or AVX-VNNI accumulates u8×s8 products in
32 bits; x86 with only AVX2 (or AVX-512 without VNNI) uses ``vpmaddubsw``, which adds pairs of
products in *saturating 16-bit* sums, so a model quantized with full 8-bit weights can clip there;
ARM uses its own dot-product instructions. Packages record the build machine's features and agents
report their own beside every INT8 parity result, so a deviation can be traced to its CPU.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# the features that change which INT8/bf16 kernels run (x86 names first, then ARM's)
RELEVANT = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
            "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve", "bf16")


@functools.cache
def cpu_flags() -> tuple[str, ...]:
    """This machine's relevant CPU features, in the order of ``RELEVANT`` (empty where unknown)."""
    found: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(value.split())
            break  # every core lists the same features
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
    return platform.machine() or "unknown"


def describe() -> str:
    flags = cpu_flags()
    return f"{platform.machine()} {int8_path(flags)} [{' '.join(flags) or 'no flags read'}]"
