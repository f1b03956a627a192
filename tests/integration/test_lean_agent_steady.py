"""An MQTT-only maintenance agent, started as a user starts it (``edge-agent run``), holds none of the
modules its config does not need once it gives results: no verifier (cryptography, tar), no camera, OPC
UA, OpenVINO, gRPC or outbox library, none of the helpers only other configs use."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.models import make_keypair, make_package
from tests.support.peers import free_port

ROOT = Path(__file__).resolve().parents[2]
NOT_NEEDED = (
    "cryptography",
    "tarfile",
    "model_packager.keys",
    "cv2",
    "asyncua",
    "openvino",
    "onnx",
    "grpc",
    "google.protobuf",
    "torch",
    "sqlite3",
    "edge_agent.outbox.store",
    "edge_agent.uplink.client",
    "numpy.ma",
)
# prints the modules on SIGUSR1 (nothing imported to do it), then runs the CLI as `edge-agent run` does
PROBE = (
    "import json, os, signal, sys\n"
    "signal.signal(signal.SIGUSR1, lambda *a: (print(json.dumps(sorted(sys.modules)), flush=True), os._exit(0)))\n"
    "from edge_agent.cli import main\nsys.exit(main(['run', sys.argv[1]]))\n"
)


def _publish(port: int, stop: threading.Event) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    rng = np.random.default_rng(0)
    while not stop.wait(0.1):
        c.publish("plant/line1/vib", json.dumps({"vibration": np.round(rng.normal(0, 1, 2048), 3).tolist()}))
    c.loop_stop()
    c.disconnect()


def test_an_mqtt_only_agent_imports_nothing_it_does_not_use(tmp_path, mosquitto):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="signal", key=key)
    http = free_port()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""agent: {{id: gw, data_dir: {tmp_path / "data"}}}
trusted_keys: [{pub}]
http: {{port: {http}}}
sources:
  broker:
    type: mqtt
    port: {mosquitto.port}
    subscriptions: [{{topic: plant/line1/vib, json_mapping: {{values: {{vibration: vibration}}, tag_prefix_topic: false}}}}]
models: {{health: {{package: {pkg}, engine: onnxruntime}}}}
pipelines: [{{name: health, source: broker, model: health, window: {{waveform: vibration, by: count}},
             actions: [publish]}}]
actions: {{publish: {{type: mqtt_publish, source: broker}}}}
""")
    stop = threading.Event()
    feed = threading.Thread(target=_publish, args=(mosquitto.port, stop), daemon=True)
    feed.start()
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        results = 0
        while not results and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                st = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/status", timeout=2).read())
            except OSError:
                continue
            results = sum(p["results"] for p in st["pipelines"])
        assert results, (
            f"no result: {proc.stderr.read()[-2000:] if proc.poll() is not None else 'still waiting'}"
        )
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    mods = set(json.loads(out.splitlines()[-1]))
    assert {
        "paho",
        "onnxruntime",
        "edge_agent.models.install",
    } <= mods  # it did run, through the child installer
    assert sorted(m for m in NOT_NEEDED if m in mods) == []
