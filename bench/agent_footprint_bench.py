"""The agent's footprint per config shape: peak RSS and launch → first result, of `edge-agent run` itself.

Each shape runs as its own ``python -m edge_agent.cli run CONFIG`` process against the simulators
(MJPEG camera, OPC UA machine, Mosquitto, an MQTT vibration publisher), with the test packages of
``tests.support.models``:

- ``quickstart``: ``configs/quickstart.yaml`` (one camera, one vision model), on each engine;
- ``line1``: ``configs/line1.yaml`` (camera + OPC UA + MQTT, vision + maintenance), on each engine;
- ``mqtt-maintenance``: an MQTT-only maintenance agent (JSON vibration windows → signal model → MQTT).

Measured honestly: peak RSS is the agent process's own ``VmHWM`` read from ``/proc/<pid>/status``
after ``--steady-s`` seconds of work (not ``ru_maxrss`` of a child, which Linux starts at the
parent's peak), and the agent runs under ``/usr/bin/time -v`` (when installed), whose maximum
resident set size is printed beside it; launch → first result runs from just before the process is
spawned to the wall time of the agent's ``first_result`` event, so it includes the interpreter,
imports and config (and, at a first start, verifying the packages). The bars (issue 18) are printed
beside each row.

``--baseline DIR`` runs the same shapes on another checkout of the project (e.g. ``git archive``
of main) in the same run, for a before/after table; the trees take turns run by run, so that both
see the same moments of a shared machine.

    .venv/bin/python -m bench.agent_footprint_bench [--steady-s 5] [--runs 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
BARS = {
    ("line1", "onnxruntime"): ("rss", 140),
    ("line1", "openvino"): ("rss", 170),
    ("mqtt-maintenance", "onnxruntime"): ("rss", 90),
    ("quickstart", "onnxruntime"): ("first", 1.0),
}

MQTT_MAINTENANCE = """\
# An MQTT-only maintenance agent: vibration windows as JSON arrays in, results out on the same broker.
agent: {{id: bench-mqtt, data_dir: "${{AGENT_DATA}}"}}
trusted_keys: [{pub}]
http: {{port: {http_port}}}
sources:
  broker:
    type: mqtt
    port: {mqtt_port}
    subscriptions:
      - topic: plant/line1/vib
        json_mapping: {{values: {{vibration: vibration}}, tag_prefix_topic: false}}
models:
  maintenance: {{package: {pkg}, engine: {engine}}}
pipelines:
  - name: health
    source: broker
    model: maintenance
    window: {{waveform: vibration, by: count}}
    actions: [publish]
actions:
  publish: {{type: mqtt_publish, source: broker}}
"""


def _vib_publisher(port: int, stop: threading.Event, hz: float = 5.0) -> threading.Thread:
    import numpy as np
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    def run() -> None:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-vib")
        c.connect("127.0.0.1", port)
        c.loop_start()
        rng = np.random.default_rng(0)
        while not stop.wait(1 / hz):
            wave = np.round(rng.normal(0, 1, 2048), 4).tolist()
            c.publish("plant/line1/vib", json.dumps({"ts": time.time(), "vibration": wave}), qos=0)
        c.loop_stop()
        c.disconnect()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


TIME = Path("/usr/bin/time") if Path("/usr/bin/time").is_file() else None  # GNU time, for its -v


def _agent_pid(proc: subprocess.Popen, timed: bool) -> int:
    """The agent's pid: ``proc`` itself, or the one child of ``/usr/bin/time``."""
    if not timed:
        return proc.pid
    for _ in range(1000):
        if proc.poll() is not None:
            raise RuntimeError(f"/usr/bin/time exited: {proc.stderr.read()[-500:]}")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:  # field 4, after the command name in parentheses: the parent's pid
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == proc.pid:
                    return int(stat.parent.name)
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.01)
    raise RuntimeError("/usr/bin/time started no agent")


def _time_v_max_rss_mb(path: Path) -> float | None:
    for line in path.read_text().splitlines() if path.is_file() else []:
        if "Maximum resident set size" in line:
            return int(line.rsplit(":", 1)[1]) / 1024
    return None


def run_agent(tree: Path, config: Path, env: dict, http_port: int, steady_s: float, data_dir: Path) -> dict:
    """One agent process: launch → first result (s), its own peak RSS (MB) after ``steady_s``, /status's figure,
    and ``/usr/bin/time -v``'s maximum resident set size of the agent process.
    ``data_dir`` is fresh for each run: every run is a first start (the package is verified and installed)."""
    env = {**os.environ, **env, "PYTHONPATH": str(tree), "AGENT_DATA": str(data_dir)}
    timing = data_dir.with_suffix(".time-v")
    timing.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "edge_agent.cli", "run", str(config)]
    t0 = time.time()
    proc = subprocess.Popen(
        ([str(TIME), "-v", "-o", str(timing)] if TIME else []) + cmd,
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = _agent_pid(proc, TIME is not None)
    first = None
    try:
        deadline = time.monotonic() + 60
        while first is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited: {proc.stderr.read()[-2000:]}")
            try:
                st = json.loads(
                    urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=2).read()
                )
            except OSError:
                time.sleep(0.02)
                continue
            first = next((e["t"] for e in st["events"] if e.get("kind") == "first_result"), None)
            if first is None and any(p["results"] for p in st["pipelines"]):
                first = time.time()  # the event scrolled past: an upper bound
            time.sleep(0.02)
        if first is None:
            raise RuntimeError("no result within 60 s")
        time.sleep(steady_s)
        peak_mb = _peak_kb(pid) / 1024
        st = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=5).read())
        results = sum(p["results"] for p in st["pipelines"])
        os.kill(pid, signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {
        "first_result_s": first - t0,
        "peak_rss_mb": peak_mb,
        "status_max_rss_mb": st["agent"]["max_rss_mb"],
        "time_v_max_rss_mb": _time_v_max_rss_mb(timing),
        "status_first_result_after_s": st["agent"].get("first_result_after_s"),
        "results": results,
    }


def shapes(tmp: Path, peers: dict) -> list[tuple[str, str, Path, dict, int]]:
    from tests.support.peers import free_port

    out = []
    for engine in ("onnxruntime", "openvino"):
        port = free_port()
        text = (
            (ROOT / "configs" / "quickstart.yaml")
            .read_text()
            .replace("    package: ${VISION_PACKAGE", f"    engine: {engine}\n    package: ${{VISION_PACKAGE")
        )
        cfg = tmp / f"quickstart-{engine}.yaml"
        text = text.replace("data_dir: ../var/agents/quickstart", "data_dir: ${AGENT_DATA}")
        cfg.write_text(text + f"http: {{port: {port}}}\n")
        out.append(("quickstart", engine, cfg, peers["env"], port))
    for engine in ("onnxruntime", "openvino"):
        port = free_port()
        cfg = tmp / f"line1-{engine}.yaml"
        cfg.write_text(
            (ROOT / "configs" / "line1.yaml").read_text().replace("engine: auto", f"engine: {engine}")
        )
        out.append(("line1", engine, cfg, {**peers["env"], "STATUS_PORT": str(port)}, port))
    port = free_port()
    cfg = tmp / "mqtt-maintenance.yaml"
    cfg.write_text(
        MQTT_MAINTENANCE.format(
            pub=peers["pub"],
            http_port=port,
            mqtt_port=peers["mqtt_port"],
            pkg=peers["signal"],
            engine="onnxruntime",
        )
    )
    out.append(("mqtt-maintenance", "onnxruntime", cfg, {}, port))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steady-s", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--baseline", type=Path, help="another checkout of the project to measure in the same run"
    )
    ap.add_argument("--only", help="comma-separated shapes (quickstart, line1, mqtt-maintenance)")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from simulators.camera import CameraServer
    from simulators.machine import MachineServer
    from tests.support.models import make_keypair, make_package
    from tests.support.peers import Mosquitto, free_port

    loads = [os.getloadavg()[0]]
    trees = [("this tree", ROOT)] + ([("baseline", a.baseline.resolve())] if a.baseline else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        key, pub = make_keypair(tmp / "keys")
        vision = make_package(tmp, kind="vision", key=key, openvino=True)
        sig = make_package(tmp, kind="signal", key=key, openvino=True)
        broker = Mosquitto(tmp / "mosquitto").start()
        camera = CameraServer(free_port(), fps=10).start()
        machine = MachineServer(free_port(), period_ms=200)
        loop = asyncio.new_event_loop()
        loop.run_until_complete(machine.start())
        machine_thread = threading.Thread(target=loop.run_forever, daemon=True)
        machine_thread.start()
        stop = threading.Event()
        _vib_publisher(broker.port, stop)
        peers = {
            "pub": pub,
            "signal": sig,
            "mqtt_port": broker.port,
            "env": {
                "VISION_PACKAGE": str(vision),
                "MAINTENANCE_PACKAGE": str(sig),
                "TRUSTED_KEY": str(pub),
                "OPCUA_ENDPOINT": machine.endpoint,
                "CAMERA_URL": camera.url,
                "MQTT_PORT": str(broker.port),
            },
        }
        only = set(a.only.split(",")) if a.only else None
        try:
            for shape, engine, cfg, env, port in shapes(tmp, peers):
                if only and shape not in only:
                    continue
                runs: dict[str, list[dict]] = {label: [] for label, _ in trees}
                for i in range(a.runs):  # the trees take turns: both see the same moments of the machine
                    for label, tree in trees:
                        runs[label].append(
                            run_agent(
                                tree,
                                cfg,
                                env,
                                port,
                                a.steady_s,
                                tmp / "data" / f"{shape}-{engine}-{label}-{i}",
                            )
                        )
                        loads.append(os.getloadavg()[0])
                for label, _ in trees:
                    rr = runs[label]
                    timed = [r["time_v_max_rss_mb"] for r in rr if r["time_v_max_rss_mb"] is not None]
                    row = {
                        "shape": shape,
                        "engine": engine,
                        "tree": label,
                        "runs": rr,
                        "first_result_s": statistics.median(r["first_result_s"] for r in rr),
                        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rr),
                        "status_max_rss_mb": statistics.median(r["status_max_rss_mb"] for r in rr),
                        "time_v_max_rss_mb": statistics.median(timed) if timed else None,
                    }
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
        finally:
            stop.set()
            asyncio.run_coroutine_threadsafe(machine.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            camera.stop()
            broker.stop()
    from bench._machine import machine, machine_line

    OUT.mkdir(exist_ok=True)
    (OUT / "agent_footprint_bench.json").write_text(
        json.dumps({"bench": "agent_footprint", "machine": machine(), "rows": rows}, indent=2)
    )
    md = [
        f"### Agent footprint per config shape: `edge-agent run` process, own VmHWM after {a.steady_s:.0f} s of "
        f"work, launch → first result (medians of {a.runs})",
        "",
        "| config | engine | tree | peak RSS MB (VmHWM) | /usr/bin/time -v max RSS MB | /status max_rss_mb | "
        "launch → first result s | bar |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        kind, bar = BARS.get((r["shape"], r["engine"]), (None, None))
        ok = (
            ""
            if kind is None
            else f"RSS ≤ {bar} MB: {'met' if r['peak_rss_mb'] <= bar else 'NOT met'}"
            if kind == "rss"
            else f"≤ {bar} s: {'met' if r['first_result_s'] <= bar else 'NOT met'}"
        )
        tv = f"{r['time_v_max_rss_mb']:.0f}" if r["time_v_max_rss_mb"] is not None else "-"
        md.append(
            f"| {r['shape']} | {r['engine']} | {r['tree']} | {r['peak_rss_mb']:.1f} | {tv} | "
            f"{r['status_max_rss_mb']:.0f} | {r['first_result_s']:.2f} | {ok} |"
        )
    md += [
        "",
        "Every run is a first start (fresh data folder: packages verified and installed). "
        "Test packages (tiny models) from `tests.support.models`; simulators on loopback on the same 2 "
        "cores. The first-result time includes the interpreter, imports and config (from the spawn); "
        f"it scales with the machine's load (1-min load average during this run: {min(loads):.1f} to "
        f"{max(loads):.1f} on {os.cpu_count()} cores), the peak RSS hardly does.",
        "",
        machine_line(),
    ]
    (OUT / "agent_footprint_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
