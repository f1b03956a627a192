"""Sizing: does the inference a config asks for fit the gateway's cores? Estimated from times measured here.

At every load (start, install, swap) a slot records the median time its chosen engine and form took for one
item of the package's golden inputs on this CPU (``<data_dir>/models/<slot>/item_time.json``; the engine's
run alone, batch 1, as the selection timed it). A frame pipeline whose camera states ``fps`` then wants at
least ``fps`` x that time of one core: decoding, pre- and postprocessing and the agent's own work come on
top, so the estimate is a floor, never a guess upwards. ``demand`` sums it over the pipelines it can be
known for (a camera without ``fps`` runs at the camera's own rate, and a drop folder at its writer's, unknown
offline; signal pipelines' window rates depend on the source) and ``warning`` says it when that floor alone takes more than
``MAX_SHARE`` of the cores: the agent logs it at start, ``edge-agent validate`` prints it from the last
run's record. No record (a first start, another package than the one measured): nothing is said.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD = "item_time.json"
# inference alone past this share of the cores leaves too little for decoding the frames (a 640x480 JPEG:
# ~4 ms), preprocessing and the agent's loop (rules, PLC writes, heartbeats)
MAX_SHARE = 0.8


@dataclass(frozen=True)
class Part:
    pipeline: str
    slot: str
    fps: float
    item_ms: float
    measured: str  # what was measured: package, engine and form

    @property
    def cores(self) -> float:
        return self.fps * self.item_ms / 1000.0


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's ``--cpuset-cpus``, systemd's
    ``CPUAffinity=``, ``taskset``), not the machine's count, which ``os.cpu_count`` gives. (A CPU quota,
    ``--cpus``, is not seen: it caps time, not cores.)"""
    try:
        return len(os.sched_getaffinity(0)) or os.cpu_count() or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def cpu() -> str:
    """This machine's CPU as far as its speed goes: architecture, model, cores and the instruction sets the
    engines' kernels use (AVX-512, VNNI, AMX; ``model_packager.cpu``). A record measured on another (a data
    folder restored from a backup, a gateway image made on a bigger machine) says nothing of this one. The
    instruction sets are part of it because a virtual machine's model name is often generic ("Intel(R) Xeon(R)
    Processor" on a Sapphire Rapids with AMX as on a Haswell-class guest without VNNI), and the same model's
    INT8 item can take twice as long without VNNI."""
    import platform

    from model_packager.cpu import cpu_flags

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:  # no /proc (a container without it, another OS): what the platform says
        pass
    flags = " ".join(cpu_flags()) or "no flags read"
    return f"{platform.machine()} {model or platform.processor() or '?'} x{os.cpu_count() or 0} [{flags}]"


def record(folder: Path, package_id: str, package_file: str | None, what: str, ms: float) -> None:
    """Write a slot's measured time per item in its ``folder`` (best effort: sizing advice, not state the
    agent needs)."""
    body = {
        "package": package_id,
        "package_file": package_file,
        "chosen": what,
        "item_ms": round(ms, 3),
        "cpu": cpu(),
    }
    from edge_agent.files import atomic_write_json

    try:  # a full disk: its temporary file removed (it stayed in the slot folder, where no sweep looks)
        atomic_write_json(folder / RECORD, body)
    except OSError:
        pass


def recorded(folder: Path) -> dict[str, Any] | None:
    from edge_agent.files import read_json_state

    try:  # bounded: the data folder is anyone's with the gateway's shell (a named pipe, a deep nest)
        body = read_json_state(folder / RECORD)
    except (OSError, ValueError):
        return None
    ok = isinstance(body, dict) and isinstance(body.get("item_ms"), int | float) and body["item_ms"] > 0
    return body if ok else None


def demand(cfg: Any, item_ms: dict[str, tuple[float, str]]) -> list[Part]:
    """The frame pipelines whose demand is known: camera ``fps`` x the slot's measured ms per item."""
    parts = []
    for p in cfg.pipelines or ():
        if p is None or getattr(p, "window", None) is not None or p.model not in item_ms:
            continue
        src = (cfg.sources or {}).get(p.source)
        # a drop folder (watch) reads each file as it comes, at the camera software's rate: its fps says nothing
        camera = getattr(src, "type", None) == "camera" and not getattr(src, "watch", False)
        fps = getattr(src, "fps", None) if camera else None
        if fps:
            ms, what = item_ms[p.model]
            parts.append(Part(p.name, p.model, float(fps), ms, what))
    return parts


def warning(parts: list[Part], cores: int | None = None) -> str | None:
    cores = cores or usable_cores()
    need = sum(x.cores for x in parts)
    if need <= MAX_SHARE * cores:
        return None
    each = ", ".join(
        f"{x.pipeline} {x.fps:g} fps x {x.item_ms:.1f} ms ({x.measured})"
        for x in sorted(parts, key=lambda x: -x.cores)
    )
    return (
        f"the cameras' inference alone needs at least {need:.1f} of this gateway's {cores} cores ({each}; "
        "times measured on this CPU at the last load, decoding and preprocessing not counted): frames will be "
        "dropped (counted per pipeline: by its queue, or unjudged once older than its queue.max_age_ms) and "
        "results come late; lower the cameras' fps, use a smaller model, or move a camera to another gateway "
        "(docs/agent.md 'Sizing a gateway')"
    )


def check_config(cfg: Any) -> str | None:
    """``warning`` from the slots' records in the config's data folder (``edge-agent validate``): a slot whose
    record is of another local package file than the one configured, of another version than the one it will
    serve, or measured on another CPU, is left out (such a record warned of a load this gateway does not
    have, or kept quiet about one it has)."""
    item_ms: dict[str, tuple[float, str]] = {}
    here = cpu()
    for name, mc in (cfg.models or {}).items():
        folder = Path(cfg.data_dir) / "models" / name
        rec = recorded(folder)
        if rec is None or mc is None or rec.get("cpu") != here:
            continue
        if mc.package and rec.get("package_file") != str(cfg.path(mc.package)):
            continue  # measured for another package than the one this config names
        if _serves(cfg, mc, folder) not in (None, rec.get("package")):
            continue  # another version (a new file at the same path, a version the fleet sent since)
        item_ms[name] = (float(rec["item_ms"]), str(rec.get("chosen") or rec.get("package") or name))
    return warning(demand(cfg, item_ms)) if item_ms else None


def _serves(cfg: Any, mc: Any, folder: Path) -> str | None:
    """The package id (name-version) the slot will serve at its next start, where it can be read: its local
    file's manifest (unverified: a hint), or the store's current folder (``<name>-<version>-<digest>``)."""
    try:
        if mc.package:
            from model_packager.package import read_manifest

            return read_manifest(cfg.path(mc.package)).package_id
        from edge_agent.files import read_json_state

        # bounded: a named pipe there waited for ever (edge-agent validate with it), a deep nest raised
        current = read_json_state(folder / "state.json").get("current")
    except Exception:  # unreadable: nothing to compare with (the slot's load reports a bad package)
        return None
    return current.rsplit("-", 1)[0] if isinstance(current, str) and "-" in current else None


def threads_warning(cfg: Any, cores: int | None = None) -> str | None:
    """Exact, not estimated: the inference pool runs at most one item per core at once (``min(workers,
    cores)`` threads), each pipeline at most ``workers`` of them; a slot with ``threads: N`` runs each item on N
    threads, so the busiest moment can put more threads than cores to work (ONNX Runtime's pool threads also
    spin between operators)."""
    cores = cores or usable_cores()
    models = cfg.models or {}
    pipes = [p for p in cfg.pipelines or () if p is not None and models.get(p.model) is not None]
    pool = min(sum(p.workers for p in pipes), cores)
    per_item = sorted((models[p.model].threads for p in pipes for _ in range(p.workers)), reverse=True)
    busiest = sum(per_item[:pool])
    if busiest <= cores:
        return None
    many = sorted({p.model for p in pipes if models[p.model].threads > 1})
    return (
        f"models {', '.join(many)}: their threads (threads: "
        f"{'/'.join(str(models[m].threads) for m in many)}) with {pool} inferences at once (the pool runs one "
        f"per core) put up to {busiest} threads to work on this gateway's {cores} cores: they contend with each "
        "other and with the event loop; set threads: 1 (each inference then has a core), or give threads > 1 "
        "only to a model whose pipeline runs alone (docs/agent.md 'Sizing a gateway')"
    )
