"""The machine a benchmark ran on, for the ``Machine:`` line beside every result.

A result that holds on one CPU and not another is a defect, so every bench records this line in its
JSON (``"machine"``) and markdown (``Machine: ...``), or prints it first when it only prints.

Cheap to call inside a bench's own process: the library versions come from the installed packages'
metadata (nothing is imported for them); only ``model_packager.cpu`` is imported, which reads numpy's
CPU detection.
"""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from pathlib import Path

# label shown -> the distributions that may provide it (first one installed wins)
_VERSIONS = {
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
    "asyncua": ("asyncua",),
    "paho.mqtt": ("paho-mqtt",),
    "grpc": ("grpcio",),
    "cv2": ("opencv-python-headless", "opencv-python", "opencv-contrib-python"),
    "torch": ("torch",),
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _versions() -> list[str]:
    out = []
    for label, dists in _VERSIONS.items():
        for dist in dists:
            try:
                out.append(f"{label} {metadata.version(dist)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return out


@functools.cache
def machine() -> str:
    """One line: CPU model, the CPU flags that decide INT8/bf16 kernels, cores, memory, OS, versions."""
    from model_packager.cpu import cpu_flags

    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu_model()} (CPU flags: {' '.join(cpu_flags()) or 'not read'}), {os.cpu_count()} cores, "
        f"{mem_gib:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}; "
        + ", ".join(_versions())
    )


def machine_line() -> str:
    """``Machine: ...`` for a bench's markdown (and its first printed line)."""
    return f"Machine: {machine()}"
