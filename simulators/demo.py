"""`edge-sim demo`: the whole loop on this machine, narrated, ending with a summary table.

Every part runs as its own process through the project's command lines, all on 127.0.0.1:
Mosquitto (installed with apt-get when missing), two OPC UA machines and two conveyor cameras
(one line each), the MQTT sensor fleet, the fleet service, and two edge agents. The story:

 1. the cloud creates its PKI and signing key, generates simulator datasets and trains version 1
    of both models (vision inspection, machine health), INT8, gated, signed, published;
 1b. line 2 has a second product (cast flanges) with no defect image at all: a good-only anomaly
    model is built from its good images (``cloud-trainer build anomaly``) and runs beside the rest;
 2. the factory starts; two agents start on v1 and inspect parts, write NG parts to the PLC's
    reject gate, watch the machines (line 1's bearing is degrading: the alarm must come before
    the failure);
 3. the cloud link is cut and restored: the agents keep deciding, their outboxes drain, nothing
    is lost or duplicated;
 4. the cloud retrains the vision model on what the agents uploaded (labelled from the camera's
    ground truth) plus the original data; the candidate must pass the gate against v1;
 5. canary rollout: one agent, then both, hot swap with no frame lost;
 6. a deliberately bad candidate (published past its gate, as a drill) is caught by the canary's
    health check, rolled back, the rollout halted; the other agent never runs it;
 7. summary table; exit 0 (``--keep-running`` leaves everything up for the status pages).

This module is the one place allowed to drive every component (DESIGN.md); it does so through
their CLIs and public endpoints, and reads the fleet database only for the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
import urllib.request
from pathlib import Path

from simulators.launcher import (
    Narrator,
    Proc,
    Supervisor,
    ensure_running,
    service_port,
    start_mosquitto,
    table,
    wait_listening,
)

# the agents' config ships inside this package, so that an installed `edge-sim demo` finds it (no checkout)
AGENT_CONFIG = Path(__file__).with_name("demo-agent.yaml")
BIN = Path(sys.executable).parent
# How long a started process may take to listen while it is still running (an exit is reported at once).
# Start-up is imports and set-up, 1-3 s of a core here (asyncua's address space, gRPC, ONNX Runtime); on a loaded
# machine at low priority a machine simulator took over 30 s of wall to listen (2026-12-06, load 17-20).
START_S = 180


def exe(name: str) -> str:
    p = BIN / name
    return str(p) if p.exists() else name


class Demo:
    def __init__(self, work: Path, narrator: Narrator, fast: bool, short: bool = False) -> None:
        # absolute: the agents' config reads the paths it is given relative to its own folder (in the package)
        self.work = work = work.absolute()
        self.n = narrator
        self.sup = Supervisor(work)
        self.fast = fast
        # short: tiny datasets and runs, relaxed gate floors, short waits; for CI, not a quality claim
        self.short = short
        self.relaxed = ["--floor", "ng_recall=0.3", "--floor", "ng_precision=0.3"] if short else []
        self.relaxed_m = ["--floor", "anomaly_auroc=0.5", "--floor", "fault_accuracy=0.3"] if short else []
        # --short: its agents run ONNX Runtime alone (ENGINE), so its vision packages carry no OpenVINO IR
        self.no_ir = ["--no-openvino"] if short else []
        # the builds' threads: --short runs where other work shares the cores (CI), and a second thread there cost
        # CPU without shortening a build (side by side at load ~15: vision v1 8.7 CPU s against 7.9 at one thread,
        # 35 s of wall either way; maintenance 5.8 against 5.5)
        self.threads = "1" if short else "2"
        # how often a condition the story waits for is checked: --short's fleet runs (and costs) as long as it waits
        self.poll_s = 0.5 if short else 1.0
        self.pki = work / "pki"
        self.key = work / "keys" / "fleet.key"
        self.registry = work / "registry"
        self.cloud_data = work / "cloud"
        self.lines = ["line1", "line2"]
        self.agents = {line: f"gw-{line}" for line in self.lines}
        self.ports: dict[str, int] = {}
        self.results: list[dict] = []
        self.alarms: list[dict] = []
        self._mqtt = None
        self.truth_cache: dict[str, list] = {}
        self.summary: dict = {}

    # ---- helpers ---------------------------------------------------------------------------
    def run(self, name: str, *argv: str, timeout_s: float = 2400) -> str:
        # a bound for a command that hangs, not a budget: the full demo's vision v1 build (20 epochs) reached only
        # epoch 16 in 900 s on the 2-core machine at load ~30, where it takes ~4 min on a quiet one
        return self.sup.run(name, [*argv], timeout_s=timeout_s)

    def status(self, line: str) -> dict:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.ports['status-' + line]}/status", timeout=5
        ) as r:
            return json.loads(r.read())

    def wait(self, pred, timeout_s: float, what: str, every_s: float | None = None):
        every_s = self.poll_s if every_s is None else every_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                v = pred()
                if v:
                    return v
            except OSError:
                pass
            time.sleep(every_s)
        raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")

    def admin(self, *args: str) -> str:
        return self.run(
            "admin",
            exe("cloud-trainer"),
            *args,
            "--endpoint",
            f"127.0.0.1:{self.ports['cloud']}",
            "--pki",
            str(self.pki),
            "--admin",
            "admin",
        )

    def cloud_counts(self) -> dict[str, int]:
        con = sqlite3.connect(f"file:{self.cloud_data / 'fleet.db'}?mode=ro", uri=True)
        try:
            return dict(con.execute("SELECT agent, COUNT(*) FROM records GROUP BY agent").fetchall())
        finally:
            con.close()

    def deployment(self, dep_id: str) -> dict:
        con = sqlite3.connect(f"file:{self.cloud_data / 'control.db'}?mode=ro", uri=True)
        try:
            return json.loads(
                con.execute("SELECT doc FROM deployments WHERE id = ?", (dep_id,)).fetchone()[0]
            )
        finally:
            con.close()

    @contextlib.contextmanager
    def fleet_paused(self):
        """--short: every running process of the factory and the fleet (broker, machines, cameras, sensors, fleet
        service, agents) is paused (SIGSTOP) while the cloud trains, and goes on where it was (SIGCONT) after. Nothing
        needs a new frame meanwhile, and each second they run costs CPU (images made, judged, uploaded): the short
        run's largest cost, spent mostly while it waited for the retrain. The full demo keeps its line running."""
        if not self.short:
            yield
            return
        procs = [p for p in self.sup.procs if p.running]

        def send(p, sig: int) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.popen.pid, sig)

        for p in reversed(procs):  # the agents first: none sees its sources or broker stall
            send(p, signal.SIGSTOP)
        try:
            yield
        finally:  # whatever happened: a stopped process would not even take the clean-up's SIGTERM
            for p in procs:
                send(p, signal.SIGCONT)

    # ---- MQTT observer ---------------------------------------------------------------------
    def observe_mqtt(self) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        lock = threading.Lock()
        self._lock = lock

        def on_message(client, userdata, msg):
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            with lock:
                if "/results/" in msg.topic:
                    body["_agent"] = msg.topic.split("/")[3]
                    self.results.append(body)
                elif "/alarms/" in msg.topic:
                    self.alarms.append({**body, "topic": msg.topic, "seen": time.time()})

        # subscribed at each connect: a reconnect (the broker restarted, or paused with --short's fleet) starts
        # a clean session, without the former subscription
        def on_connect(client, userdata, flags, reason, properties):
            client.subscribe("factory/#", 1)

        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="demo-observer")
        c.on_message = on_message
        c.on_connect = on_connect
        c.connect("127.0.0.1", self.ports["mqtt"])
        c.loop_start()
        self._mqtt = c

    # ---- the story -------------------------------------------------------------------------
    def step_cloud_v1(self) -> None:
        self.n.step("Cloud: fleet PKI and signing key; simulator datasets; train version 1 of both models")
        self.run("pki", exe("cloud-trainer"), "pki", "init", "--dir", str(self.pki))
        self.run("pki", exe("cloud-trainer"), "pki", "server", "--dir", str(self.pki))
        for a in self.agents.values():
            self.run("pki", exe("cloud-trainer"), "pki", "agent", "--dir", str(self.pki), "--id", a)
        self.run("pki", exe("cloud-trainer"), "pki", "admin", "--dir", str(self.pki), "--name", "admin")
        self.run("keygen", exe("model-packager"), "keygen", str(self.key.with_suffix("")))
        self.n.say(
            f"CA, server, 2 agent and 1 admin certificates in {self.pki}; package signing key {self.key}"
        )
        # --short: 200 parts and 2 epochs (then the trainer's 4 on the INT8 grid): version 1 is a weak model there
        # either way (the relaxed floors), and every part and epoch is CPU time of the CI run
        count = "200" if self.short else "2000" if self.fast else "4000"
        self.run(
            "dataset",
            exe("edge-sim"),
            "dataset",
            "parts",
            "--out",
            str(self.work / "data/parts"),
            "--count",
            count,
            "--seed",
            "0",
        )
        runs, per_run = ("10", "20") if self.short else ("20", "50")
        self.run(
            "dataset",
            exe("edge-sim"),
            "dataset",
            "vibration",
            "--out",
            str(self.work / "data/vibration"),
            "--runs",
            runs,
            "--windows-per-run",
            per_run,
            "--seed",
            "0",
        )
        self.n.say(
            f"datasets: {count} part images (6 classes, masks), {int(runs) * int(per_run)} vibration windows "
            "(5 fault types)"
        )
        v_epochs = "2" if self.short else "20" if self.fast else "30"
        for fam, extra in (
            ("maintenance", self.relaxed_m),
            ("vision", ["--epochs", v_epochs, *self.relaxed, *self.no_ir]),
        ):
            t = time.monotonic()
            self.n.say(f"training {fam} v1 (PyTorch on CPU → ONNX → INT8 QDQ → gate → signed package)...")
            out = self.run(
                f"train-{fam}",
                exe("cloud-trainer"),
                "build",
                fam,
                "--dataset",
                str(self.work / "data" / ("parts" if fam == "vision" else "vibration")),
                "--registry",
                str(self.registry),
                "--key",
                str(self.key),
                "--work",
                str(self.work / "builds" / fam),
                "--threads",
                self.threads,
                *extra,
            )
            pub = json.loads(out.strip().splitlines()[-1])
            rep = json.loads((self.work / "builds" / fam / "report.json").read_text())
            form = rep.get("served", "int8")
            m = rep["metrics"][form]
            if form != "int8":
                self.n.say(f"  served form FP32: {rep['served_why']}")
            if fam == "vision":
                self.n.say(
                    f"  part-inspection {pub['published']}: NG recall {m['ng_recall']:.3f} at precision "
                    f"{m['ng_precision']:.3f}, accuracy {m['accuracy']:.3f} ({form.upper()}, held-out), "
                    f"{time.monotonic() - t:.0f}s"
                )
            else:
                self.n.say(
                    f"  machine-health {pub['published']}: anomaly AUROC {m['anomaly_auroc']:.3f}, fault "
                    f"accuracy {m['fault_accuracy']:.3f}, remaining-life MAE {m['rul_mae_s']:.0f}s vs naive "
                    f"{m['rul_mae_naive_s']:.0f}s, {time.monotonic() - t:.0f}s"
                )
            self.summary[f"{fam}_v1"] = pub["published"]
        self.step_product2_model()

    def step_product2_model(self) -> None:
        """Line 2's second product, a cast flange: no defect image at all, so a good-only anomaly model."""
        t = time.monotonic()
        good = "40" if self.short else "150"
        data = self.work / "data" / "cast"
        self.run(
            "dataset",
            exe("edge-sim"),
            "dataset",
            "mvtec",
            "--out",
            str(data),
            "--train",
            good,
            "--test-good",
            "0",
            "--test-ng",
            "0",
            "--surface",
            "cast",
            "--seed",
            "7",
            "--jpeg-quality",
            "90",
        )  # as line 2's camera streams them (it rejected 8 % of good flanges
        # when trained on uncompressed images: JPEG's blocks read as texture; docs/trainer.md)
        out = self.run(
            "train-anomaly",
            exe("cloud-trainer"),
            "build",
            "anomaly",
            "--dataset",
            str(data),
            "--registry",
            str(self.registry),
            "--key",
            str(self.key),
            "--work",
            str(self.work / "builds" / "anomaly"),
            "--name",
            "cast-anomaly",
            "--threads",
            self.threads,
            "--no-openvino",
        )
        pub = json.loads(out.strip().splitlines()[-1])
        self.anomaly_package = pub["package"]
        self.n.say(
            f"  cast-anomaly {pub['published']}: line 2's new product, {good} good images and no defect "
            f"image; threshold {pub['threshold']:.3g} at 1 % false rejects ({pub['form'].upper()}), "
            f"{time.monotonic() - t:.0f}s"
        )
        self.summary["anomaly_v1"] = pub["published"]

    def cast_summary(self) -> str:
        st = {p["pipeline"]: p for p in self.status("line2")["pipelines"]}.get("inspect_cast")
        if not st:
            return "line 2, second product: no pipeline"
        with self._lock:
            results = [r for r in self.results if r.get("pipeline") == "inspect_cast"]
        tp = fp = fn = 0
        for r in results:
            lab = nearest_label(getattr(self, "cast_truth", []), r["captured_at"])
            if lab is not None:
                tp += r["verdict"] == "NG" and lab != "ok"
                fp += r["verdict"] == "NG" and lab == "ok"
                fn += r["verdict"] != "NG" and lab != "ok"
        return (
            f"line 2, second product (cast flanges; anomaly model {self.summary.get('anomaly_v1')} trained on good "
            f"images only): {st['results']} inspected, {st['ng']} NG, {st['unsure']} UNSURE; vs camera truth: "
            f"true NG {tp + fn}, hits {tp}, false {fp}"
        )

    def line2_config(self) -> Path:
        """The demo agent's config plus line 2's second camera and its anomaly pipeline."""
        import yaml

        cfg = yaml.safe_load(AGENT_CONFIG.read_text())
        cfg["sources"]["cast_cam"] = {"type": "camera", "url": "${CAMERA2_URL}", "fps": 5}
        cfg["models"]["cast"] = {
            "package": self.anomaly_package,
            "version_policy": "pinned",
            "engine": "${ENGINE:-auto}",
        }
        cfg["pipelines"].append(
            {
                "name": "inspect_cast",
                "source": "cast_cam",
                "model": "cast",
                "actions": ["publish", "reject_part"],
            }
        )
        path = self.work / "line2-agent.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def new_port(self) -> int:
        """A free loopback port for a listener of the demo that cannot bind port 0 and say which it got (the agents'
        status pages; the fleet service, which must come back on the same port after the link cut): outside the
        kernel's ephemeral range, so that no connection or port-0 bind of another process is handed it while its
        program is still starting, and none of the demo's own. Whether the program itself then listens on it is
        checked (``wait_listening``)."""
        while (port := service_port()) in self.ports.values():
            pass
        return port

    def cloud_ports(self) -> tuple[int, int]:
        """The fleet service's and its console's ports, chosen once and kept across the link cut's restart:
        outside the kernel's ephemeral range, so that nothing binding port 0 or connecting (the agents retrying
        the cloud, a test run beside the demo) is handed them while the service is down."""
        if "cloud" not in self.ports:
            self.ports["cloud"] = self.new_port()
            self.ports["console"] = self.new_port()
        return self.ports["cloud"], self.ports["console"]

    def start_cloud(self) -> None:
        """The fleet service on its two ports; ready once it wrote its port file (it binds them itself: another
        program answering on one of them is not taken for it)."""
        self.cloud_ports()
        port_file = self.port_file("cloud")
        p = self.sup.start(
            "cloud",
            [
                exe("cloud-trainer"),
                "serve",
                "--data",
                str(self.cloud_data),
                "--port",
                str(self.ports["cloud"]),
                "--pki",
                str(self.pki),
                "--registry",
                str(self.registry),
                "--console-port",
                str(self.ports["console"]),
                "--port-file",
                str(port_file),
            ],
        )
        wait_listening([(port_file, p, "cloud-trainer serve")], START_S)
        self.cloud_proc = p

    def port_file(self, name: str) -> Path:
        """Where a listener started by the demo says which port it got (a restart's file afresh)."""
        path = self.work / "ports" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.unlink(missing_ok=True)
        return path

    def step_factory_and_agents(self) -> None:
        self.n.step(
            "Factory and cloud up: Mosquitto, 2 OPC UA machines, 2 conveyor cameras, MQTT sensors, "
            "fleet service"
        )
        self.ports["mqtt"] = start_mosquitto(self.sup, self.n)
        scen = self.work / "line1-scenario.yaml"
        scen.write_text(
            "phases:\n  - {fault: healthy, duration_s: 60}\n"
            "  - {fault: bearing_outer, duration_s: 900, degrade: true}\n"
        )
        healthy = self.work / "line2-scenario.yaml"
        healthy.write_text("phases:\n  - {fault: healthy, duration_s: 100000}\n")
        # --short: the cameras at 2 fps (the full demo's 5): the image pipelines (JPEG encoding, the agents'
        # decoding, inference, uploads) were most of the running fleet's CPU, and CI asserts no rate
        fps = "2" if self.short else "5"
        self.time_scale = 20 if self.short else 6
        # every simulator starts at once; then each is waited for (its start-up is mostly imports); each binds
        # port 0 and writes the port it got to its port file: no port is chosen before its bind
        starting: list[tuple[Path, Proc, str]] = []
        # each port file is taken (and a former run's deleted) once, before its start: taken again after the
        # start, a file the simulator had already written would be deleted and never seen
        for i, line in enumerate(self.lines):
            machine_file = self.port_file(f"opcua-{line}")
            argv = [
                exe("edge-sim"),
                "machine",
                "--port",
                "0",
                "--port-file",
                str(machine_file),
                "--name",
                "Machine1",
                "--seed",
                str(i),
                "--time-scale",
                str(self.time_scale),
            ]
            if self.short:  # a vibration window every 1 s, not 0.2 (the same machine time in the same wall
                # time, each window 20 s of it): each agent's health pipeline was as busy as its camera's
                argv += ["--period-ms", "1000"]
            argv += ["--scenario", str(scen if line == "line1" else healthy)]
            p = self.sup.start(f"machine-{line}", argv)
            starting.append((machine_file, p, f"machine {line}"))
            cam_file = self.port_file(f"cam-{line}")
            p = self.sup.start(
                f"camera-{line}",
                [
                    exe("edge-sim"),
                    "camera",
                    "--port",
                    "0",
                    "--port-file",
                    str(cam_file),
                    "--fps",
                    fps,
                    "--seed",
                    str(100 + i),
                    "--defect-rate",
                    "0.2",
                ],
            )
            starting.append((cam_file, p, f"camera {line}"))
        cam2_file = self.port_file("cam2-line2")
        p = self.sup.start(
            "camera-line2-cast",
            [
                exe("edge-sim"),
                "camera",
                "--port",
                "0",
                "--port-file",
                str(cam2_file),
                "--fps",
                fps,
                "--seed",
                "300",
                "--defect-rate",
                "0.2",
                "--surface",
                "cast",
            ],
        )
        starting.append((cam2_file, p, "camera 2 of line2"))
        # all watched at once: the first exit is named whatever is ahead of it
        got = wait_listening(starting, START_S)
        for (where, _, _), port in zip(starting, got, strict=True):
            self.ports[where.stem] = port
        sims = [(port, p, what) for port, (_, p, what) in zip(got, starting, strict=True)]
        ensure_running(sims)
        self.sup.start(
            "sensors",
            [
                exe("edge-sim"),
                "sensors",
                "--broker-port",
                str(self.ports["mqtt"]),
                "--quiet",
                "--json-sensors",
                "2",
                "--sparkplug-nodes",
                "1",
                "--rate-hz",
                "2",
            ],
        )
        self.start_cloud()
        self.n.say(
            f"MQTT 127.0.0.1:{self.ports['mqtt']}; machines on OPC UA {self.ports['opcua-line1']}, "
            f"{self.ports['opcua-line2']} (line 1: healthy 60 s, then an outer-race bearing fault degrading to "
            f"failure over 900 s of machine time, run {self.time_scale}x fast); cameras {fps} fps; fleet service "
            f"{self.ports['cloud']}, console http://127.0.0.1:{self.ports['console']}/"
        )
        self.observe_mqtt()

        self.n.step(
            "Two edge agents start on version 1 (one per line), models verified; each checks INT8 against FP32 "
            "on its own CPU and serves the first form and engine that passes unless another is clearly faster"
        )
        agents: list[tuple[int, Proc, str]] = []
        for line, agent in self.agents.items():
            self.ports["status-" + line] = self.new_port()
            reg = json.loads((self.registry / "part-inspection" / "index.json").read_text())[0]
            mreg = json.loads((self.registry / "machine-health" / "index.json").read_text())[0]
            env = {
                "AGENT_ID": agent,
                "SITE": "plant1",
                "LINE": line,
                "AGENT_DATA": str(self.work / "agents" / agent),
                "TRUSTED_KEY": str(self.key.with_suffix(".pub")),
                "STATUS_PORT": str(self.ports["status-" + line]),
                "CLOUD_ENDPOINT": f"127.0.0.1:{self.ports['cloud']}",
                "PKI": str(self.pki),
                "OPCUA_ENDPOINT": f"opc.tcp://127.0.0.1:{self.ports['opcua-' + line]}/factory/",
                "MQTT_PORT": str(self.ports["mqtt"]),
                "CAMERA_URL": f"http://127.0.0.1:{self.ports['cam-' + line]}/stream.mjpg",
                "CAMERA2_URL": f"http://127.0.0.1:{self.ports['cam2-line2']}/stream.mjpg",
                "HEALTH_WINDOW_S": "4" if self.short else "15",
                # --short: a swap's health verdict after 10 inferences (5 s at 2 fps; 25 took 12.5 s a canary
                # step, the whole fleet running meanwhile)
                "HEALTH_MIN_ITEMS": "10" if self.short else "25",
                # --short: a weak version 1 judges most parts NG and every NG is uploaded (PNG-encoded, sent, stored),
                # though the retrain labels only the first 100 of them
                "UPLOAD_MAX_PER_HOUR": "120" if self.short else "5000",
                "VISION_PACKAGE": str(self.registry / "part-inspection" / reg["version"] / reg["package"]),
                "MAINTENANCE_PACKAGE": str(
                    self.registry / "machine-health" / mreg["version"] / mreg["package"]
                ),
            }
            if self.short:  # INT8 against FP32 on ONNX Runtime alone: each start and swap loaded and timed
                # OpenVINO's two candidates as well (its import and compilation, 28 ms an item under load)
                env["ENGINE"] = "onnxruntime"
            config = self.line2_config() if line == "line2" else AGENT_CONFIG
            p = self.sup.start(f"agent-{line}", [exe("edge-agent"), "run", str(config)], env=env)
            agents.append((self.ports["status-" + line], p, f"agent {agent}"))
        wait_listening(agents, START_S)  # each agent itself listening on its port, not another program on it
        ensure_running(sims + agents)
        for line in self.lines:
            st = self.wait(
                lambda line=line: (
                    (s := self.status(line)) and all(p["results"] for p in s["pipelines"]) and s
                ),
                90,
                f"first results on {line}",
            )
            self.n.say(
                f"{self.agents[line]}: first results after {st['agent']['first_result_after_s']}s; status page "
                f"http://127.0.0.1:{self.ports['status-' + line]}/"
            )
            for m in st["models"]:  # which form (INT8 or FP32) serves on this CPU, on which engine, and why
                sel = m.get("selection") or {}
                self.n.say(
                    f"  {m['package']}-{m['version']}: {sel.get('summary') or m['engine']}; CPU "
                    f"{sel.get('cpu', '?')}"
                )
        ensure_running(sims + agents)

    def step_results(self, seconds: float) -> None:
        self.n.step(
            f"Results flow for {seconds:.0f}s: inspection verdicts, reject gate writes, machine health"
        )
        time.sleep(seconds)
        for line in self.lines:
            st = self.status(line)
            p = {x["pipeline"]: x for x in st["pipelines"]}
            rej = st["actions"].get("reject_part", {}).get("ok", 0)
            self.n.say(
                f"{self.agents[line]}: {p['inspect']['results']} parts inspected ({p['inspect']['ng']} NG, "
                f"{rej} reject writes on the PLC, p50 {p['inspect']['latency_ms']['p50']:.1f} ms); "
                f"{p['health']['results']} vibration windows ({p['health']['ng']} anomalous)"
            )
            if "inspect_cast" in p:
                c = p["inspect_cast"]
                self.n.say(
                    f"{self.agents[line]}: {c['results']} cast flanges (second product, anomaly model from good "
                    f"images only): {c['ng']} NG, {c['unsure']} UNSURE, p50 {c['latency_ms']['p50']:.1f} ms"
                )
                self.summary["cast"] = {k: c[k] for k in ("results", "ng", "unsure")}

    def step_alarm(self, timeout_s: float) -> None:
        self.n.step(
            "Line 1's bearing degrades: the maintenance model must raise the alarm before the failure"
        )
        t0 = time.time()

        def raised():
            with self._lock:
                return next((a for a in self.alarms if a.get("active") and "gw-line1" in a["topic"]), None)

        try:
            a = self.wait(raised, timeout_s, "the bearing alarm on line 1")
            self.summary["alarm"] = True
            ttf, health = machine_truth(self.ports["opcua-line1"])
            self.summary["alarm_truth"] = (ttf, health)
            self.n.say(
                f"ALARM raised on gw-line1 after {time.time() - t0:.0f}s of watching: anomaly score "
                f"{a.get('anomaly_score'):.3f}, predicted remaining life {a.get('remaining_life') or 0:.0f}s; "
                f"truth from the machine: health {health:.2f}, failure in {ttf:.0f}s of machine time; "
                "the PLC's Alarm node was set"
            )
            self.summary["alarm_rl"] = a.get("remaining_life")
        except RuntimeError:
            self.summary["alarm"] = False
            self.n.say("no alarm within the watch window (reported in the summary)")
        line2 = [a for a in self.alarms if a.get("active") and "gw-line2" in a["topic"]]
        self.summary["false_alarms_line2"] = len(line2)

    def step_link_cut(self, down_s: float) -> None:
        self.n.step(f"Cloud link cut for {down_s:.0f}s (fleet service stopped), then restored")
        before = self.cloud_counts()
        self.cloud_proc.stop()
        self.sup.procs.remove(self.cloud_proc)
        time.sleep(down_s)
        depth = {line: self.status(line)["outbox"]["depth"] for line in self.lines}
        self.n.say(f"while down: agents kept deciding; outbox depth {depth}")
        marks = {line: self.status(line)["outbox"]["last_seq"] for line in self.lines}
        epochs = {line: self.status(line)["outbox"].get("epoch", 0) for line in self.lines}
        self.start_cloud()

        def drained():  # everything queued while the link was down is delivered (new results keep coming)
            sts = {line: self.status(line) for line in self.lines}
            return (
                all(
                    s["outbox"]["depth"] == 0
                    or (s["outbox"]["oldest_seq"] is not None and s["outbox"]["oldest_seq"] > marks[line])
                    for line, s in sts.items()
                )
                and sts
            )

        try:
            sts = self.wait(drained, 120, "the outboxes to drain")
        except RuntimeError as exc:  # say what each agent's uplink was doing
            ups = {line: (self.status(line) or {}).get("uplink") for line in self.lines}
            raise RuntimeError(f"{exc}; uplinks: {json.dumps(ups, default=str)}") from None
        after = self.cloud_counts()
        con = sqlite3.connect(f"file:{self.cloud_data / 'fleet.db'}?mode=ro", uri=True)
        gaps = {}  # of the records an agent had numbered when the link came back, how many the cloud lacks
        for line, agent in self.agents.items():
            have = con.execute(
                "SELECT COUNT(*) FROM records WHERE agent = ? AND epoch = ? AND seq <= ?",
                (agent, epochs[line], marks[line]),
            ).fetchone()[0]
            gaps[agent] = marks[line] - have
        dups = con.execute("SELECT COALESCE(SUM(duplicates), 0) FROM ingest").fetchone()[0]
        con.close()
        self.n.say(
            f"restored: outboxes drained; cloud records {before} -> {after}; missing sequence numbers "
            f"{gaps}; replays deduplicated {dups}"
        )
        self.summary["link"] = {
            "gaps": gaps,
            "records": after,
            "agent_last_seq": {self.agents[x]: s["outbox"]["last_seq"] for x, s in sts.items()},
        }

    def step_retrain(self) -> str | None:
        self.n.step(
            "Cloud retrains the vision model on uploaded samples (labelled from the camera ground truth), "
            "fine-tuning version 1"
        )
        con = sqlite3.connect(f"file:{self.cloud_data / 'fleet.db'}?mode=ro", uri=True)
        rows = con.execute(
            "SELECT s.sha256, s.agent, r.payload FROM samples s JOIN records r ON r.agent = s.agent "
            "AND r.seq = s.seq WHERE s.model = 'part-inspection' AND s.ext = '.png'"
        ).fetchall()
        con.close()
        truth = {
            line: json.loads(
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.ports['cam-' + line]}/truth", timeout=5
                ).read()
            )
            for line in self.lines
        }
        merged = self.work / "data" / "parts-v2"
        labels_file = self.work / "data" / "upload-labels.jsonl"
        matched = 0
        # --short: an inspector labels the first 100 matched (the agents upload every NG of a weak version 1, up to
        # 120 each there, and fine-tuning on each of them was most of the short run's time)
        cap = 100 if self.short else None
        with open(labels_file, "w") as labels:  # ground truth for each upload, as an inspector would give it
            for sha, agent, payload in rows:
                body = json.loads(payload)
                label = nearest_label(truth.get(agent.removeprefix("gw-"), []), body["captured_at"])
                if label is not None:
                    if cap is None or matched < cap:
                        labels.write(json.dumps({"sha256": sha, "label": label}) + "\n")
                    matched += 1
        out = self.run(
            "dataset-v2",
            exe("cloud-trainer"),
            "dataset",
            "--cloud-data",
            str(self.cloud_data),
            "--model",
            "part-inspection",
            "--base",
            str(self.work / "data" / "parts"),
            "--labels",
            str(labels_file),
            "--out",
            str(merged),
        )
        added = json.loads(out.strip().splitlines()[-1])["exported"]
        self.n.say(
            f"{len(rows)} images uploaded by the agents, {matched} matched to ground truth; "
            f"`cloud-trainer dataset` added {added} to the original ones"
            + (f" (--short: the first {cap} labelled)" if cap is not None and matched > cap else "")
        )
        if self.short:
            self.n.say(
                "(--short: the line, its agents and the fleet service pause while the cloud trains, and go on after)"
            )
        try:
            with self.fleet_paused():
                out = self.run(
                    "train-vision-v2",
                    exe("cloud-trainer"),
                    "build",
                    "vision",
                    "--dataset",
                    str(merged),
                    "--registry",
                    str(self.registry),
                    "--key",
                    str(self.key),
                    "--work",
                    str(self.work / "builds" / "vision-v2"),
                    "--threads",
                    self.threads,
                    "--epochs",  # --short: one epoch (then the trainer's own 4 with weights on the INT8 grid)
                    "1" if self.short else "10" if self.fast else "15",
                    "--seed",
                    "1",
                    "--init-from",
                    str(self.work / "builds" / "vision"),
                    "--tolerance",
                    "0.5" if self.short else "0.02",
                    *self.relaxed,
                    *self.no_ir,
                )
        except RuntimeError as exc:
            self.n.say(f"candidate rejected by the gate: {str(exc).splitlines()[-1]}")
            self.summary["vision_v2"] = "rejected"
            return None
        v = json.loads(out.strip().splitlines()[-1])["published"]
        rep = json.loads((self.work / "builds" / "vision-v2" / "report.json").read_text())
        inc = rep["incumbent"]["metrics"] if rep.get("incumbent") else {}
        form = rep.get("served", "int8")
        m = rep["metrics"][form]
        if form != "int8":
            self.n.say(f"served form FP32: {rep['served_why']}")
        self.n.say(
            f"candidate {v} passed the gate ({form.upper()}): NG recall {m['ng_recall']:.3f} (v1 on the same test set "
            f"{inc.get('ng_recall', float('nan')):.3f}), F1 {m['f1_macro']:.3f} (v1 "
            f"{inc.get('f1_macro', float('nan')):.3f}); published"
        )
        self.summary["vision_v2"] = v
        return v

    def deploy(self, version: str, steps: list[str], wait_s: float) -> str:
        out = self.admin(
            "deploy",
            "part-inspection",
            "--version",
            version,
            "--slot",
            "vision",
            "--selector",
            "site=plant1",
            "--strategy",
            "canary",
            "--steps",
            *steps,
            "--wait",
            str(wait_s),
        )
        return out.strip().splitlines()[-1].split()[1].rstrip(":")

    def follow(self, dep: str, what: str) -> dict:
        """Narrate each agent's step changes until the deployment completes or halts."""
        seen = set()

        def progress():
            d = self.deployment(dep)
            for a, t in sorted(d["targets"].items()):
                if (a, t["status"]) not in seen:
                    seen.add((a, t["status"]))
                    self.n.say(f"  {a}: {t['status']}" + (f" ({t['reason']})" if t.get("reason") else ""))
            return d["state"] in ("completed", "halted") and d

        return self.wait(progress, 240, what)

    def step_canary(self, version: str) -> None:
        self.n.step(
            f"Canary rollout of part-inspection {version}: one agent, then both (health gate between)"
        )
        seq_before = {line: self.status(line)["pipelines"][0]["items"] for line in self.lines}
        dep = self.deploy(version, ["1", "100%"], 2 if self.short else 5)
        d = self.follow(dep, "the canary rollout")
        self.n.say(f"rollout {dep}: {d['state']}" + (f" — {d['reason']}" if d.get("reason") else ""))
        drops = {}
        for line in self.lines:
            st = self.status(line)
            p = st["pipelines"][0]
            drops[self.agents[line]] = p["dropped_queue"]
            vm = next(m for m in st["models"] if m["slot"] == "vision")
            v = vm["version"]
            self.n.say(
                f"{self.agents[line]} runs part-inspection {v} ({vm.get('form')} on {vm['engine']}); "
                "items since rollout start "
                f"{p['items'] - seq_before[line]}, queue drops during the whole run {p['dropped_queue']}"
            )
        self.summary["canary"] = d["state"]

    def step_bad_candidate(self) -> None:
        self.n.step(
            "A deliberately bad candidate (classifier scrambled so that it rejects every part, as a collapsed "
            "INT8 model would; published past its gate as a drill)"
        )
        if self.short:  # a few epochs on 200 images: version 1 already rejects most parts, so the drill
            # could not stand out; building it, its rollout and rollback are the full demo's (a forced publish
            # past the gate: test_trainer's; a halted rollout: test_fleet_control's)
            self.n.say("(--short: version 1 is too weak for the drill to stand out; not built)")
            self.summary["bad"] = "not built (--short)"
            return
        try:
            out = self.run(
                "train-vision-bad",
                exe("cloud-trainer"),
                "build",
                "vision",
                "--dataset",
                str(self.work / "data" / "parts"),
                "--registry",
                str(self.registry),
                "--key",
                str(self.key),
                "--work",
                str(self.work / "builds" / "vision-bad"),
                "--threads",
                self.threads,
                "--epochs",
                "2",
                "--degrade",
                "--force",
            )
        except RuntimeError as exc:
            self.n.say(f"could not build the drill candidate: {exc}")
            return
        v = json.loads(out.strip().splitlines()[-1])["published"]
        rep = json.loads((self.work / "builds" / "vision-bad" / "report.json").read_text())
        self.n.say(f"{v}: gate said {'; '.join(rep['gate']['reasons'])[:150]}... — forced into the registry")
        dep = self.deploy(v, ["1", "100%"], 5)
        d = self.follow(dep, "the bad rollout to be decided")
        self.n.say(f"rollout {dep}: {d['state']} — {d.get('reason', '')}")
        time.sleep(3)
        for line in self.lines:
            v_now = next(m["version"] for m in self.status(line)["models"] if m["slot"] == "vision")
            self.n.say(f"{self.agents[line]} runs part-inspection {v_now}")
        self.summary["bad"] = d["state"]
        if d["state"] != "halted":  # the health gate is what this step demonstrates: not stopping it fails
            raise RuntimeError(
                f"the deliberately bad candidate {v} was not stopped by the agents' health "
                f"check (rollout {d['state']})"
            )

    def final_summary(self) -> str:
        # stop the line (cameras and machines) so that the agents' counts settle, then let them drain
        truth_final = {
            line: json.loads(
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.ports['cam-' + line]}/truth", timeout=5
                ).read()
            )
            for line in self.lines
        }
        self.cast_truth = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{self.ports['cam2-line2']}/truth", timeout=5).read()
        )
        for p in list(self.sup.procs):
            if p.name.startswith(("camera-", "machine-")):
                p.stop()
        last: dict = {}

        def settled():
            now = {
                x: (self.status(x)["outbox"]["depth"], self.status(x)["outbox"]["last_seq"])
                for x in self.lines
            }
            ok = all(d == 0 for d, _ in now.values()) and now == last
            last.clear()
            last.update(now)
            return ok

        try:
            self.wait(settled, 60, "the outboxes to drain", every_s=1 if self.short else 2)
        except RuntimeError:
            pass
        cloud_now = self.cloud_counts()
        truth = truth_final
        rows = []
        with self._lock:
            results = list(self.results)
        for line, agent in self.agents.items():
            st = self.status(line)
            p = {x["pipeline"]: x for x in st["pipelines"]}
            tp = fp = fn = tn = 0
            for r in st_results(results, agent):
                lab = nearest_label(truth[line], r["captured_at"])
                if lab is None:
                    continue
                ng, true_ng = r["verdict"] == "NG", lab != "ok"
                tp += ng and true_ng
                fp += ng and not true_ng
                fn += (not ng) and true_ng
                tn += (not ng) and not true_ng
            models = ", ".join(f"{m['slot']} {m['version']}" for m in st["models"])
            alarm = "no"
            if any(a.get("active") and agent in a["topic"] for a in self.alarms):
                alarm = "yes"
                if line == "line1" and self.summary.get("alarm_truth"):
                    ttf, health = self.summary["alarm_truth"]
                    alarm = f"yes, {ttf:.0f}s before failure" if ttf >= 0 else "yes, after failure"
                elif line != "line1":
                    alarm = "yes (false: healthy machine)"
            elif line == "line1":
                alarm = "MISSED"
            rows.append(
                (
                    agent,
                    p["inspect"]["results"],
                    f"{tp + fp} (true NG {tp + fn}, hits {tp}, false {fp})",
                    p["health"]["results"],
                    alarm,
                    f"{st['outbox']['last_seq']} / {cloud_now.get(agent, 0)}",
                    models,
                )
            )
        return table(
            rows,
            (
                "agent",
                "parts",
                "NG found (vs camera truth)",
                "windows",
                "bearing alarm",
                "records sent / in cloud",
                "versions",
            ),
        )


def st_results(results: list[dict], agent: str) -> list[dict]:
    return [r for r in results if r.get("pipeline") == "inspect" and r.get("_agent") == agent]


def machine_truth(port: int) -> tuple[float, float]:
    """(time to failure in machine seconds, health index) from the machine's ground-truth nodes."""
    import asyncio

    from asyncua import Client

    async def read():
        async with Client(f"opc.tcp://127.0.0.1:{port}/factory/") as c:
            ttf = await c.get_node("ns=2;s=Machine1.Truth.TimeToFailure").read_value()
            health = await c.get_node("ns=2;s=Machine1.Truth.HealthIndex").read_value()
            return float(ttf), float(health)

    try:
        return asyncio.run(read())
    except Exception:
        return float("nan"), float("nan")


def nearest_label(truth: list[dict], t: float, tol_s: float = 0.12) -> str | None:
    best, lab = tol_s, None
    for row in truth:
        d = abs(row["t"] - t)
        if d < best:
            best, lab = d, row["label"]
    return lab


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-sim demo", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--work",
        type=Path,
        default=Path("var/demo"),
        help="working folder (default: var/demo in the current folder)",
    )
    ap.add_argument(
        "--keep-running", action="store_true", help="leave everything up at the end (Ctrl-C stops)"
    )
    ap.add_argument("--full", action="store_true", help="bigger datasets and more epochs (slower)")
    ap.add_argument(
        "--short", action="store_true", help="tiny datasets, relaxed gate floors, short waits (CI)"
    )
    a = ap.parse_args(argv)
    import signal

    # SIGTERM (CI timeouts, `kill`) must still run the clean-up below that stops every process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n = Narrator()
    if a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    demo = Demo(a.work, n, fast=not a.full, short=a.short)
    t0 = time.monotonic()
    try:
        demo.step_cloud_v1()
        demo.step_factory_and_agents()
        # --short: every second of these the whole fleet runs (the short run's largest cost); 2 s of results
        # and a 3-s cut still show each (the cut's queueing, the replay and its gap count are checked)
        demo.step_results(2 if a.short else 20)
        demo.step_alarm(8 if a.short else 150)
        demo.step_link_cut(3 if a.short else 15)
        v2 = demo.step_retrain()
        if v2:
            demo.step_canary(v2)
        demo.step_bad_candidate()
        n.step(f"Summary (whole loop in {time.monotonic() - t0:.0f}s)")
        print(demo.final_summary(), flush=True)
        print(demo.cast_summary(), flush=True)
        if a.keep_running:
            n.say(
                "everything keeps running; Ctrl-C stops it. Status pages: "
                + ", ".join(f"http://127.0.0.1:{demo.ports['status-' + x]}/" for x in demo.lines)
                + f"; fleet console http://127.0.0.1:{demo.ports['console']}/"
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0
    except Exception as exc:
        n.say(f"DEMO FAILED: {exc}")
        n.say(f"logs of every process are in {a.work / 'logs'}")
        return 1
    finally:
        if demo._mqtt is not None:
            demo._mqtt.loop_stop()
        demo.sup.close()
