"""The demo's MQTT observer (the results and alarms its narration and summary count) keeps hearing them after its
connection to the broker was lost and made again (in --short the broker pauses while the cloud trains)."""

from __future__ import annotations

import json
import time

import paho.mqtt.publish as publish

from simulators.demo import Demo
from simulators.launcher import Narrator, start_mosquitto


def _heard(demo: Demo, n: int, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        with demo._lock:
            if len(demo.results) >= n:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_the_observer_hears_results_again_after_the_broker_came_back(tmp_path):
    demo = Demo(tmp_path, Narrator(), fast=True, short=True)
    try:
        port = demo.ports["mqtt"] = start_mosquitto(demo.sup, demo.n)
        demo.observe_mqtt()
        topic = "factory/plant1/line1/gw-line1/results/inspect"
        deadline = time.monotonic() + 30
        while not _heard(demo, 1, 0.5) and time.monotonic() < deadline:  # until its subscription holds
            publish.single(
                topic, json.dumps({"verdict": "OK", "n": 1}), qos=1, port=port, hostname="127.0.0.1"
            )
        assert _heard(demo, 1, 0)
        broker = next(p for p in demo.sup.procs if p.name == "mosquitto")
        broker.stop()
        broker.start()  # the same port and configuration; the observer reconnects on its own
        deadline = time.monotonic() + 30
        while not demo._mqtt.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert demo._mqtt.is_connected()

        def ng_heard() -> bool:
            with demo._lock:
                return any(r["verdict"] == "NG" and r["_agent"] == "gw-line1" for r in demo.results)

        deadline = time.monotonic() + 30
        while not ng_heard() and time.monotonic() < deadline:  # (the resubscription may follow the reconnect)
            try:  # the observer may not have seen the broker go yet: the broker may still be starting
                publish.single(
                    topic, json.dumps({"verdict": "NG", "n": 2}), qos=1, port=port, hostname="127.0.0.1"
                )
            except ConnectionRefusedError:
                pass
            time.sleep(0.2)
        assert ng_heard()  # formerly nothing after the reconnect: its subscription was gone with the session
    finally:
        if demo._mqtt is not None:
            demo._mqtt.loop_stop()
        demo.sup.close()
