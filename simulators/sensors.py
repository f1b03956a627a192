"""A simulated MQTT sensor fleet: JSON sensors and Sparkplug B edge nodes on one broker.

JSON sensor ``i`` publishes ``{"ts": <epoch s>, "temperature": .., "humidity": .., "pressure": ..,
"motor_current": ..}`` to ``plant/line{1|2}/sensor{i}`` (QoS 0). Sparkplug B edge node ``j``
(``edge{j}`` in group ``--group``, one device ``motor1``) publishes NBIRTH (bdSeq, Node
Control/Rebirth, ``uptime_s`` alias 1) and DBIRTH (``current_a`` alias 10 Double, ``speed_rpm``
alias 11 Float, ``running`` alias 12 Boolean), then DDATA by alias at the rate (NDATA every
10th tick), seq 0..255 wrapping; it sets NDEATH (with its bdSeq) as the MQTT will, answers
NCMD ``Node Control/Rebirth`` with fresh births, and with ``restart_every_s`` restarts itself
(NDEATH, new bdSeq, new births) to exercise deaths and births.

In-process API (threaded: paho network threads plus one publisher thread; ``start()`` and
``stop()`` block briefly)::

    fleet = SensorFleet("127.0.0.1", port, json_sensors=2, sparkplug_nodes=1, rate_hz=10, seed=0)
    fleet.start(); ...; fleet.stop()

Limits: values are random walks, not physics; QoS 0 only; no TLS.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from protocols import json_codec
from protocols import sparkplug as sp

_FIELDS = {
    "temperature": (21.0, 0.2),
    "humidity": (45.0, 0.5),
    "pressure": (1013.0, 0.3),
    "motor_current": (4.0, 0.1),
}
_DEVICE = "motor1"


def _client(cid: str) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=cid)


class _Node:
    def __init__(self, fleet: SensorFleet, index: int) -> None:
        self.fleet = fleet
        self.name = f"edge{index}"
        self.bd_seq = 0
        self.seq = 0
        self.rebirth = threading.Event()
        self.client: paho.Client | None = None
        self.vals = {"current_a": 4.0, "speed_rpm": 1450.0}
        self.started_at = time.time()

    def _next(self) -> int:
        s = self.seq
        self.seq = sp.next_seq(self.seq)
        return s

    def connect(self) -> None:
        f = self.fleet
        c = _client(f"sim-{f.group}-{self.name}-{self.bd_seq}")
        c.will_set(sp.topic(f.group, "NDEATH", self.name), sp.death_payload(self.bd_seq), qos=1)
        c.on_message = self._on_message
        c.connect(f.host, f.port, 30)
        c.subscribe(sp.topic(f.group, "NCMD", self.name), 1)
        c.loop_start()
        self.client = c
        self.births()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            p = sp.decode(msg.payload)
        except sp.CodecError:
            return
        if any(m.name == sp.REBIRTH_METRIC and m.value is True for m in p.metrics):
            self.rebirth.set()

    def births(self) -> None:
        f, now = self.fleet, int(time.time() * 1000)
        self.seq = 0
        D = sp.DataType
        nb = sp.Payload(
            now,
            self._next(),
            [
                sp.Metric(sp.BDSEQ_METRIC, None, D.INT64, self.bd_seq, now),
                sp.Metric(sp.REBIRTH_METRIC, None, D.BOOLEAN, False, now),
                sp.Metric("uptime_s", 1, D.DOUBLE, time.time() - self.started_at, now),
            ],
        )
        f.publish(sp.topic(f.group, "NBIRTH", self.name), sp.encode(nb), self.client)
        db = sp.Payload(
            now,
            self._next(),
            [
                sp.Metric("current_a", 10, D.DOUBLE, self.vals["current_a"], now),
                sp.Metric("speed_rpm", 11, D.FLOAT, self.vals["speed_rpm"], now),
                sp.Metric("running", 12, D.BOOLEAN, True, now),
            ],
        )
        f.publish(sp.topic(f.group, "DBIRTH", self.name, _DEVICE), sp.encode(db), self.client)

    def tick(self, n: int, rng: random.Random) -> None:
        f, now = self.fleet, int(time.time() * 1000)
        if self.rebirth.is_set():
            self.rebirth.clear()
            self.births()
        self.vals["current_a"] += rng.gauss(0, 0.05)
        self.vals["speed_rpm"] += rng.gauss(0, 2.0)
        D = sp.DataType
        dd = sp.Payload(
            now,
            self._next(),
            [
                sp.Metric(None, 10, D.DOUBLE, self.vals["current_a"], now),
                sp.Metric(None, 11, D.FLOAT, self.vals["speed_rpm"], now),
            ],
        )
        f.publish(sp.topic(f.group, "DDATA", self.name, _DEVICE), sp.encode(dd), self.client)
        if n % 10 == 0:
            nd = sp.Payload(
                now, self._next(), [sp.Metric(None, 1, D.DOUBLE, time.time() - self.started_at, now)]
            )
            f.publish(sp.topic(f.group, "NDATA", self.name), sp.encode(nd), self.client)

    def disconnect(self, *, death: bool = True) -> None:
        c, self.client = self.client, None
        if c is None:
            return
        if death:
            c.publish(
                sp.topic(self.fleet.group, "NDEATH", self.name), sp.death_payload(self.bd_seq), qos=1
            ).wait_for_publish(2)
        c.disconnect()
        c.loop_stop()

    def restart(self) -> None:
        self.disconnect()
        self.bd_seq = (self.bd_seq + 1) % 256
        self.connect()


class SensorFleet:
    def __init__(
        self,
        broker_host: str = "127.0.0.1",
        broker_port: int = 1883,
        json_sensors: int = 2,
        sparkplug_nodes: int = 1,
        rate_hz: float = 10.0,
        seed: int = 0,
        group: str = "plant",
        restart_every_s: float | None = None,
        verbose: bool = False,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be > 0")
        self.host, self.port, self.group = broker_host, broker_port, group
        self.json_sensors, self.rate_hz, self.restart_every_s = json_sensors, rate_hz, restart_every_s
        self.verbose = verbose
        self._rng = random.Random(seed)
        self.nodes = [_Node(self, j) for j in range(sparkplug_nodes)]
        self._json_client: paho.Client | None = None
        self._json_vals = [dict((k, v0) for k, (v0, _) in _FIELDS.items()) for _ in range(json_sensors)]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.published: dict[str, int] = {}

    def json_topic(self, i: int) -> str:
        return f"plant/line{i % 2 + 1}/sensor{i}"

    def publish(self, topic: str, payload: bytes, client: paho.Client | None = None) -> None:
        c = client or self._json_client
        if c is None:
            return
        c.publish(topic, payload, qos=0)
        kind = topic.split("/")[2] if topic.startswith(sp.NAMESPACE) else "json"
        with self._lock:
            self.published[kind] = self.published.get(kind, 0) + 1
        if self.verbose:
            print(f"{topic} ({len(payload)} bytes)", flush=True)

    def start(self) -> SensorFleet:
        if self.json_sensors:
            c = _client(f"sim-json-{self._rng.getrandbits(32):08x}")
            c.connect(self.host, self.port, 30)
            c.loop_start()
            self._json_client = c
        for node in self.nodes:
            node.connect()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sensor-fleet", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        period, n = 1.0 / self.rate_hz, 0
        next_t = time.monotonic()
        last_restart = time.monotonic()
        while not self._stop.is_set():
            n += 1
            now = time.time()
            for i, vals in enumerate(self._json_vals):
                for k, (_, sd) in _FIELDS.items():
                    vals[k] = round(vals[k] + self._rng.gauss(0, sd), 3)
                self.publish(self.json_topic(i), json_codec.encode({"ts": round(now, 3), **vals}))
            for node in self.nodes:
                if node.client is not None:
                    node.tick(n, self._rng)
            if self.restart_every_s and time.monotonic() - last_restart > self.restart_every_s and self.nodes:
                last_restart = time.monotonic()
                self._rng.choice(self.nodes).restart()
            next_t += period
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def restart_node(self, index: int = 0) -> None:
        """Deliberate restart of one edge node: NDEATH, new bdSeq, new births."""
        self.nodes[index].restart()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for node in self.nodes:
            node.disconnect()
        if self._json_client is not None:
            self._json_client.disconnect()
            self._json_client.loop_stop()
            self._json_client = None

    def __enter__(self) -> SensorFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="edge-sim sensors", description="MQTT sensor fleet (JSON and Sparkplug B)"
    )
    ap.add_argument("--broker-port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--json-sensors", type=int, default=2)
    ap.add_argument("--sparkplug-nodes", type=int, default=1)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--group", default="plant")
    ap.add_argument(
        "--restart-every-s", type=float, default=None, help="restart a random edge node this often"
    )
    ap.add_argument(
        "--duration-s", type=float, default=None, help="stop after this long (default: until Ctrl-C)"
    )
    ap.add_argument("--quiet", action="store_true", help="do not print every message")
    a = ap.parse_args(argv)
    fleet = SensorFleet(
        a.host,
        a.broker_port,
        a.json_sensors,
        a.sparkplug_nodes,
        a.rate_hz,
        a.seed,
        a.group,
        a.restart_every_s,
        verbose=not a.quiet,
    )
    try:
        fleet.start()
    except OSError as e:
        print(
            f"edge-sim sensors: cannot reach broker {a.host}:{a.broker_port}: {e}; start Mosquitto or fix --broker-port",
            file=sys.stderr,
        )
        return 1
    print(
        f"publishing to {a.host}:{a.broker_port}: {a.json_sensors} JSON sensors on plant/line*/sensor*, "
        f"{a.sparkplug_nodes} Sparkplug B nodes on {sp.NAMESPACE}/{a.group}/# at {a.rate_hz} Hz",
        flush=True,
    )
    try:
        if a.duration_s is None:
            while True:
                time.sleep(3600)
        else:
            time.sleep(a.duration_s)
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
        print(f"published: {fleet.published}", flush=True)
    return 0
